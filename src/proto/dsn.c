/*
 * dsn: builds RFC 3464 bounces into a growable buffer.  See dsn.h.
 */
#include "proto/dsn.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proto/encode.h"
#include "proto/text.h"

/* Diagnostic-Code text beyond this is cut (RFC 5322 line limit). */
#define DSN_DIAG_MAX 900
/* Any other single field we print. */
#define DSN_FIELD_MAX 512

struct buf {
  char *p;
  size_t len, cap;
  int err;
};

static void buf_put(struct buf *b, const char *s, size_t n) {
  if (b->err)
    return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n + 1)
      cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      b->err = 1;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *s) {
  buf_put(b, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void
buf_fmt(struct buf *b, const char *fmt, ...) {
  char tmp[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
  va_end(ap);
  if (n < 0)
    return;
  buf_put(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* Copies s into out as printable ASCII (anything else becomes '?'). */
static const char *clean(char *out, size_t cap, const char *s, size_t max) {
  size_t o = 0;
  for (; s && *s && o + 1 < cap && o < max; s++) {
    unsigned char c = (unsigned char)*s;
    out[o++] = (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
  }
  out[o] = '\0';
  return out;
}

/* RFC 3461 §4: decodes xtext ("+2B" is '+'), then cleans. */
static const char *xtext_clean(char *out, size_t cap, const char *s) {
  char tmp[DSN_FIELD_MAX];
  size_t o = 0;
  for (; *s && o + 1 < sizeof(tmp); s++) {
    int hi, lo;
    if (s[0] == '+' && (hi = text_hexval(s[1])) >= 0 &&
        (lo = text_hexval(s[2])) >= 0) {
      tmp[o++] = (char)(hi * 16 + lo);
      s += 2;
    } else {
      tmp[o++] = *s;
    }
  }
  tmp[o] = '\0';
  return clean(out, cap, tmp, cap);
}

void dsn_date(int64_t t, char out[40]) {
  static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed",
                                  "Thu", "Fri", "Sat"};
  static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  struct tm tm;
  time_t tt = (time_t)t;
  if (!gmtime_r(&tt, &tm)) {
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = 70, tm.tm_mday = 1, tm.tm_wday = 4;
  }
  snprintf(out, 40, "%s, %02d %s %04d %02d:%02d:%02d +0000",
           days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12],
           tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

int dsn_should_bounce(const char *sender, unsigned notify) {
  if (!sender || !*sender)
    return 0;
  if (notify & DSN_NOTIFY_NEVER)
    return 0;
  if (notify != 0 && !(notify & DSN_NOTIFY_FAILURE))
    return 0;
  return 1;
}

int dsn_should_delay(const char *sender, unsigned notify) {
  if (!sender || !*sender)
    return 0;
  if (notify & DSN_NOTIFY_NEVER)
    return 0;
  if (notify != 0 && !(notify & DSN_NOTIFY_DELAY))
    return 0;
  return 1;
}

int dsn_should_notify_success(const char *sender, unsigned notify) {
  return sender && *sender && (notify & DSN_NOTIFY_SUCCESS) &&
         !(notify & DSN_NOTIFY_NEVER);
}

/* The Status of a delayed recipient: its code when in class 4, else
 * 4.0.0 (a delay is transient by definition, RFC 3464 §2.3.4). */
static const char *delay_status(const char *st) {
  if (st && st[0] == '4' && st[1] == '.')
    return st;
  return "4.0.0";
}

/* Length of the header section of msg including its empty line. */
static size_t header_len(const char *msg, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (msg[i] != '\n')
      continue;
    if (i + 1 < n && msg[i + 1] == '\n')
      return i + 2;
    if (i + 2 < n && msg[i + 1] == '\r' && msg[i + 2] == '\n')
      return i + 3;
  }
  return n;
}

static int has_str(const char *hay, size_t n, const char *needle) {
  size_t k = strlen(needle);
  for (size_t i = 0; i + k <= n; i++)
    if (hay[i] == needle[0] && memcmp(hay + i, needle, k) == 0)
      return 1;
  return 0;
}

char *dsn_build(const struct dsn_report *r, size_t *len) {
  struct buf b = {0};
  char boundary[128], date[40], f1[DSN_FIELD_MAX], f2[DSN_FIELD_MAX];
  const char *host = clean(f1, sizeof(f1), r->hostname, 255);
  int expired = 0;
  size_t ndelayed = 0, nrelayed = 0;
  for (size_t i = 0; i < r->nrcpt; i++) {
    nrelayed += r->rcpts[i].relayed != 0;
    ndelayed += !r->rcpts[i].relayed && r->rcpts[i].delayed;
  }
  size_t nfailed = r->nrcpt - ndelayed - nrelayed;
  /* No failure: a notice that returns no content (RFC 3461 §4.3). */
  int warning = r->nrcpt > 0 && nfailed == 0;

  /* The boundary must not occur in what we quote (RFC 2046 §5.1.1). */
  char id[64];
  clean(id, sizeof(id), r->id ? r->id : "x", sizeof(id));
  for (unsigned k = 0;; k++) {
    snprintf(boundary, sizeof(boundary), "=_mailhop_%s_%u_=", id, k);
    if (!has_str(r->msg, r->msg_len, boundary))
      break;
  }

  /* Top-level header. */
  dsn_date(r->now, date);
  buf_fmt(&b, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", host);
  buf_fmt(&b, "To: <%s>\r\n",
          clean(f2, sizeof(f2), r->copy_to ? r->copy_to : r->sender, 320));
  buf_fmt(&b, "Subject: %s%s\r\n", r->copy_to ? "Postmaster Copy: " : "",
          nfailed    ? "Undelivered Mail Returned to Sender"
          : ndelayed ? "Delayed Mail (still being retried)"
                     : "Successful Mail Delivery Report");
  buf_fmt(&b, "Date: %s\r\n", date);
  buf_fmt(&b, "Message-ID: <%s.dsn@%s>\r\n", id, host);
  buf_str(&b, "Auto-Submitted: auto-replied\r\n");
  buf_str(&b, "MIME-Version: 1.0\r\n");
  buf_fmt(&b,
          "Content-Type: multipart/report; report-type=delivery-status;\r\n"
          "\tboundary=\"%s\"\r\n",
          boundary);
  buf_str(&b, "\r\nThis is a MIME-encapsulated message.\r\n\r\n");

  /* Part 1: for humans. */
  for (size_t i = 0; i < r->nrcpt; i++)
    if (!r->rcpts[i].delayed && !r->rcpts[i].relayed && r->rcpts[i].status &&
        strcmp(r->rcpts[i].status, "4.4.7") == 0)
      expired = 1;
  buf_fmt(&b, "--%s\r\n", boundary);
  buf_str(&b, "Content-Type: text/plain; charset=us-ascii\r\n"
              "Content-Description: Notification\r\n\r\n");
  buf_fmt(&b, "This is the mail system at host %s.\r\n\r\n", host);
  if (r->copy_to)
    buf_fmt(&b,
            "This is the postmaster's copy of a notice sent to <%s>, with "
            "the\r\nheader of the message only.\r\n\r\n",
            clean(f2, sizeof(f2), r->sender, 320));
  if (nfailed)
    buf_str(&b, "Your message could not be delivered to one or more "
                "recipients.\r\n");
  if (expired)
    buf_str(&b, "Some of them could not be reached before the message "
                "expired in the queue.\r\n");
  if (ndelayed)
    buf_str(&b, "Delivery to some recipients has been delayed; the mail "
                "system is still\r\ntrying, and you do not need to send "
                "the message again.\r\n");
  if (nrelayed)
    buf_str(&b, "Your message was delivered to the next mail system for "
                "some recipients,\r\nas you asked to be told; that system "
                "does not send delivery\r\nnotifications, so there will be "
                "no further notice for them.\r\n");
  buf_str(&b, "The details are below and in the attached report.\r\n\r\n");
  for (size_t i = 0; i < r->nrcpt; i++) {
    const struct dsn_rcpt *d = &r->rcpts[i];
    buf_fmt(&b, "<%s>: ", clean(f2, sizeof(f2), d->addr, 320));
    if (d->relayed)
      buf_str(&b, "(relayed) ");
    else if (d->delayed)
      buf_str(&b, "(delayed) ");
    if (d->diag)
      buf_fmt(&b, "host %s said: %s\r\n",
              d->remote_mta ? clean(f1, sizeof(f1), d->remote_mta, 255)
                            : "(unknown)",
              clean(f2, sizeof(f2), d->diag, DSN_DIAG_MAX));
    else
      buf_fmt(&b, "status %s\r\n",
              clean(f2, sizeof(f2), d->status ? d->status : "5.0.0", 16));
  }
  buf_str(&b, "\r\n");

  /* Part 2: message/delivery-status (RFC 3464 §2.2, §2.3). */
  host = clean(f1, sizeof(f1), r->hostname, 255);
  buf_fmt(&b, "--%s\r\n", boundary);
  buf_str(&b, "Content-Type: message/delivery-status\r\n"
              "Content-Description: Delivery report\r\n\r\n");
  buf_fmt(&b, "Reporting-MTA: dns; %s\r\n", host);
  if (r->envid && *r->envid)
    buf_fmt(&b, "Original-Envelope-Id: %s\r\n",
            xtext_clean(f2, sizeof(f2), r->envid));
  dsn_date(r->arrival, date);
  buf_fmt(&b, "Arrival-Date: %s\r\n", date);
  for (size_t i = 0; i < r->nrcpt; i++) {
    const struct dsn_rcpt *d = &r->rcpts[i];
    buf_str(&b, "\r\n");
    buf_fmt(&b, "Final-Recipient: rfc822; %s\r\n",
            clean(f2, sizeof(f2), d->addr, 320));
    if (d->orcpt && *d->orcpt)
      buf_fmt(&b, "Original-Recipient: %s\r\n",
              xtext_clean(f2, sizeof(f2), d->orcpt));
    buf_str(&b, d->relayed   ? "Action: relayed\r\n"
                : d->delayed ? "Action: delayed\r\n"
                             : "Action: failed\r\n");
    buf_fmt(&b, "Status: %s\r\n",
            clean(f2, sizeof(f2),
                  d->relayed
                      ? (d->status && d->status[0] == '2' ? d->status : "2.0.0")
                  : d->delayed ? delay_status(d->status)
                  : d->status  ? d->status
                               : "5.0.0",
                  16));
    if (d->remote_mta && *d->remote_mta) {
      /* RFC 3464 §2.3.5: the MTA's name, without the "[address]:port"
       * of our logs (an address alone stays in its brackets). */
      const char *rm = d->remote_mta, *br = strchr(rm, '[');
      size_t n = strlen(rm);
      if (br && br > rm) {
        n = (size_t)(br - rm);
      } else if (br) {
        const char *cl = strchr(rm, ']');
        if (cl)
          n = (size_t)(cl - rm) + 1;
      }
      char name[256];
      snprintf(name, sizeof name, "%.*s", (int)(n < 255 ? n : 255), rm);
      buf_fmt(&b, "Remote-MTA: dns; %s\r\n", clean(f2, sizeof(f2), name, 255));
    }
    if (d->diag && *d->diag)
      buf_fmt(&b, "Diagnostic-Code: smtp; %s\r\n",
              clean(f2, sizeof(f2), d->diag, DSN_DIAG_MAX));
    if (d->last_attempt) {
      dsn_date(d->last_attempt, date);
      buf_fmt(&b, "Last-Attempt-Date: %s\r\n", date);
    }
    if (d->delayed && !d->relayed && d->will_retry_until) {
      dsn_date(d->will_retry_until, date);
      buf_fmt(&b, "Will-Retry-Until: %s\r\n", date);
    }
  }
  buf_str(&b, "\r\n");

  /* Part 3: the original header, or all of it with RET=FULL when it fits
   * in DSN_QUOTE_MAX (RFC 3461 §4.3: headers only when the whole message
   * cannot be returned). */
  int full = !warning && !r->copy_to && r->ret == DSN_RET_FULL &&
             r->msg_len <= DSN_QUOTE_MAX;
  size_t qlen = full ? r->msg_len : header_len(r->msg, r->msg_len);
  if (qlen > DSN_QUOTE_MAX) {
    /* A header section over the cap: cut after its last whole line. */
    size_t cut = DSN_QUOTE_MAX;
    while (cut > 0 && r->msg[cut - 1] != '\n')
      cut--;
    qlen = cut;
  }
  buf_fmt(&b, "--%s\r\n", boundary);
  buf_fmt(&b, "Content-Type: %s\r\n",
          full ? "message/rfc822" : "text/rfc822-headers");
  if (encode_has_8bit(r->msg, qlen))
    buf_str(&b, "Content-Transfer-Encoding: 8bit\r\n");
  buf_str(&b, nfailed    ? "Content-Description: Undelivered message\r\n\r\n"
              : ndelayed ? "Content-Description: Delayed message\r\n\r\n"
                         : "Content-Description: Relayed message\r\n\r\n");
  buf_put(&b, r->msg, qlen);
  if (qlen > 0 && r->msg[qlen - 1] != '\n')
    buf_str(&b, "\r\n");
  buf_fmt(&b, "\r\n--%s--\r\n", boundary);

  if (b.err) {
    free(b.p);
    return NULL;
  }
  *len = b.len;
  return b.p;
}
