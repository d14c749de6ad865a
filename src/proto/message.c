/*
 * message: header scanner and the header fields mailhop adds.  See
 * message.h.  Pure: no clock, no allocation, no I/O.
 */
#include "proto/message.h"

#include "proto/text.h"

#include <stdio.h>
#include <string.h>

void message_scan_init(struct message_scan *m) {
  memset(m, 0, sizeof(*m));
  m->in_headers = 1;
  m->bol = 1;
}

static void header_name_done(struct message_scan *m) {
  static const struct {
    const char *name;
    int which;
  } known[] = {{"received", 0}, {"date", 1}, {"message-id", 2}};
  for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
    size_t l = strlen(known[i].name);
    if (l != m->name_len || text_casecmp(m->name, known[i].name, l) != 0)
      continue;
    if (known[i].which == 0)
      m->received_count++;
    else if (known[i].which == 1)
      m->has_date = 1;
    else
      m->has_message_id = 1;
  }
}

void message_scan_feed(struct message_scan *m, const char *buf, size_t len) {
  m->size += len;
  for (size_t i = 0; i < len; i++) {
    if (!m->in_headers) {
      /* The body: only 8-bit octets matter, looked for in one block. */
      if (!m->eight_bit)
        m->eight_bit = text_has_8bit(buf + i, len - i);
      break;
    }
    unsigned char c = (unsigned char)buf[i];
    if (c >= 0x80)
      m->eight_bit = 1;
    if (m->bol) {
      m->bol = 0;
      m->line_start = m->size - len + i;
      if (c == '\r' || c == '\n') {
        /* The empty line: end of the header section. */
        m->in_headers = 0;
        m->header_end = m->line_start;
        m->separator = 1;
        continue;
      }
      if ((c == ' ' || c == '\t') && m->line_start > 0) {
        m->name_state = 1; /* continuation of the previous field */
        continue;
      }
      m->name_state = 0;
      m->name_len = 0;
    }
    if (c == '\n') {
      if (m->name_state == 0)
        m->name_state = 2; /* a line without a colon */
      if (m->name_state == 2) {
        /* Neither a field nor a continuation: this line is the body's
         * first (RFC 5322 §2.1: no header section, or no separator). */
        m->in_headers = 0;
        m->header_end = m->line_start;
        continue;
      }
      m->bol = 1;
      continue;
    }
    if (m->name_state != 0)
      continue;
    if (c == ':') {
      if (m->name_len == 0) {
        m->name_state = 2;
      } else {
        m->name_state = 1;
        if (m->name_len <= MESSAGE_NAME_MAX)
          header_name_done(m);
      }
    } else if (c == '\r') {
      /* CR belongs to the line end; the LF decides. */
    } else if (c > 32 && c < 127) {
      /* RFC 5322 §3.6.8 ftext; remember only a bounded prefix. */
      if (m->name_len < MESSAGE_NAME_MAX)
        m->name[m->name_len] = (char)c;
      m->name_len++;
    } else {
      m->name_state = 2;
    }
  }
}

size_t message_header_end(const char *buf, size_t len, int *separator) {
  struct message_scan m;
  message_scan_init(&m);
  message_scan_feed(&m, buf, len);
  if (separator)
    *separator = !m.in_headers && m.separator;
  return m.in_headers ? len : (size_t)m.header_end;
}

int message_added_headers_need_separator(const struct message_scan *m) {
  return m->size > 0 && !m->in_headers && m->header_end == 0 && !m->separator;
}

int message_date(char *buf, size_t cap, time_t when, int tz_minutes) {
  static const char *const wday[] = {"Sun", "Mon", "Tue", "Wed",
                                     "Thu", "Fri", "Sat"};
  static const char *const mon[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  struct tm tm;
  time_t local = when + (time_t)tz_minutes * 60;
  if (!gmtime_r(&local, &tm))
    return -1;
  int off = tz_minutes < 0 ? -tz_minutes : tz_minutes;
  int n = snprintf(buf, cap, "%s, %d %s %d %02d:%02d:%02d %c%02d%02d",
                   wday[tm.tm_wday], tm.tm_mday, mon[tm.tm_mon],
                   tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec,
                   tz_minutes < 0 ? '-' : '+', off / 60, off % 60);
  if (n < 0 || (size_t)n >= cap)
    return -1;
  return n;
}

int message_date_header(char *buf, size_t cap, time_t when, int tz_minutes) {
  if (cap < 7)
    return -1;
  memcpy(buf, "Date: ", 6);
  int n = message_date(buf + 6, cap - 6, when, tz_minutes);
  if (n < 0 || (size_t)n + 6 + 3 > cap)
    return -1;
  memcpy(buf + 6 + n, "\r\n", 3);
  return n + 8;
}

int message_id_header(char *buf, size_t cap, const char *id, const char *host) {
  int n = snprintf(buf, cap, "Message-ID: <%s@%s>\r\n", id, host);
  if (n < 0 || (size_t)n >= cap)
    return -1;
  return n;
}

/* A writer that folds at token boundaries. */
struct fold {
  char *buf;
  size_t cap, len, col;
  int err;
};

static void fold_raw(struct fold *f, const char *s, size_t n) {
  if (f->err || f->len + n + 1 > f->cap) {
    f->err = 1;
    return;
  }
  memcpy(f->buf + f->len, s, n);
  f->len += n;
  f->buf[f->len] = '\0';
}

/* Appends one token, preceded by a space or by a fold when the token would
 * cross column 78. */
static void fold_token(struct fold *f, const char *s, size_t n) {
  if (f->col > 0 && f->col + 1 + n > 78) {
    fold_raw(f, "\r\n\t", 3);
    f->col = 8;
  } else if (f->col > 0) {
    fold_raw(f, " ", 1);
    f->col++;
  }
  fold_raw(f, s, n);
  f->col += n;
}

/* Copies untrusted text into a comment-safe form. */
static void sanitize(char *out, size_t cap, const char *in) {
  size_t o = 0;
  for (; in && *in && o + 1 < cap; in++) {
    unsigned char c = (unsigned char)*in;
    out[o++] = (c > 32 && c < 127 && c != '(' && c != ')' && c != '\\')
                   ? (char)c
                   : '?';
  }
  out[o] = '\0';
}

int message_received_header(char *buf, size_t cap,
                            const struct message_received *r) {
  struct fold f = {.buf = buf, .cap = cap};
  char helo[256], rdns[256], tok[600], date[64];
  if (cap == 0)
    return -1;
  buf[0] = '\0';
  sanitize(helo, sizeof(helo), r->helo && *r->helo ? r->helo : "unknown");
  sanitize(rdns, sizeof(rdns), r->rdns && *r->rdns ? r->rdns : "unknown");
  int v6 = r->ip && strchr(r->ip, ':') != NULL;

  fold_token(&f, "Received:", 9);
  fold_token(&f, "from", 4);
  fold_token(&f, helo, strlen(helo));
  if (!r->redacted) {
    snprintf(tok, sizeof(tok), "(%s [%s%s])", rdns, v6 ? "IPv6:" : "",
             r->ip ? r->ip : "unknown");
    fold_token(&f, tok, strlen(tok));
  }
  /* Postfix layout: "by" always starts a continuation line. */
  fold_raw(&f, "\r\n\tby", 5);
  f.col = 10;
  fold_token(&f, r->hostname, strlen(r->hostname));
  fold_token(&f, "(mailhop)", 9);
  if (r->tls_desc && *r->tls_desc) {
    /* Each word of the descriptor is its own token, so folding works;
     * the first opens the comment and the last closes it. */
    const char *p = r->tls_desc;
    int first = 1;
    for (;;) {
      while (*p == ' ')
        p++;
      if (!*p)
        break;
      const char *q = p;
      while (*q && *q != ' ')
        q++;
      const char *rest = q;
      while (*rest == ' ')
        rest++;
      char raw[200], word[204];
      size_t wl =
          (size_t)(q - p) < sizeof(raw) ? (size_t)(q - p) : sizeof(raw) - 1;
      memcpy(raw, p, wl);
      raw[wl] = '\0';
      sanitize(word + 1, sizeof(word) - 2, raw);
      size_t l = strlen(word + 1) + 1;
      word[0] = '(';
      if (!*rest)
        word[l++] = ')';
      word[l] = '\0';
      fold_token(&f, first ? word : word + 1, first ? l : l - 1);
      first = 0;
      p = q;
    }
  }
  const char *with = !r->esmtp           ? "SMTP"
                     : r->tls && r->auth ? "ESMTPSA"
                     : r->tls            ? "ESMTPS"
                     : r->auth           ? "ESMTPA"
                                         : "ESMTP";
  fold_token(&f, "with", 4);
  fold_token(&f, with, strlen(with));
  fold_token(&f, "id", 2);
  snprintf(tok, sizeof(tok), "%s%s", r->id ? r->id : "unknown",
           r->rcpt ? "" : ";");
  fold_token(&f, tok, strlen(tok));
  if (r->rcpt) {
    fold_token(&f, "for", 3);
    char rc[400];
    size_t l = strlen(r->rcpt);
    if (l > sizeof(rc) - 4)
      l = sizeof(rc) - 4;
    rc[0] = '<';
    for (size_t i = 0; i < l; i++) {
      unsigned char c = (unsigned char)r->rcpt[i];
      rc[i + 1] = (c >= 32 && c != 127) ? (char)c : '?';
    }
    rc[l + 1] = '>';
    rc[l + 2] = ';';
    rc[l + 3] = '\0';
    fold_token(&f, rc, l + 3);
  }
  if (message_date(date, sizeof(date), r->when, r->tz_minutes) < 0)
    return -1;
  /* Keep the date-time on one line: fold before it if it does not fit. */
  fold_token(&f, date, strlen(date));
  fold_raw(&f, "\r\n", 2);
  return f.err ? -1 : (int)f.len;
}
