/* test_dsn: bounce decision and RFC 3464 bounces parsed back. */
#include "proto/dsn.h"

#include <stdlib.h>

#include "check.h"

static void test_should_bounce(void) {
  static const struct {
    const char *sender;
    unsigned notify;
    int want;
  } t[] = {
      {"a@b", 0, 1},
      {"a@b", DSN_NOTIFY_FAILURE, 1},
      {"a@b", DSN_NOTIFY_FAILURE | DSN_NOTIFY_DELAY, 1},
      {"a@b", DSN_NOTIFY_NEVER, 0},
      {"a@b", DSN_NOTIFY_SUCCESS, 0},
      {"a@b", DSN_NOTIFY_DELAY, 0},
      {"", 0, 0},
      {NULL, 0, 0},
  };
  for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
    CHECK_INT(dsn_should_bounce(t[i].sender, t[i].notify), t[i].want);
}

static void test_should_delay(void) {
  static const struct {
    const char *sender;
    unsigned notify;
    int want;
  } t[] = {
      {"a@b", 0, 1},
      {"a@b", DSN_NOTIFY_DELAY, 1},
      {"a@b", DSN_NOTIFY_FAILURE | DSN_NOTIFY_DELAY, 1},
      {"a@b", DSN_NOTIFY_FAILURE, 0},
      {"a@b", DSN_NOTIFY_SUCCESS, 0},
      {"a@b", DSN_NOTIFY_NEVER, 0},
      {"", 0, 0},
      {"", DSN_NOTIFY_DELAY, 0},
      {NULL, 0, 0},
  };
  for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
    CHECK_INT(dsn_should_delay(t[i].sender, t[i].notify), t[i].want);
  /* Success notices only when asked for: never by default. */
  CHECK_INT(dsn_should_notify_success("a@b", DSN_NOTIFY_SUCCESS), 1);
  CHECK_INT(
      dsn_should_notify_success("a@b", DSN_NOTIFY_SUCCESS | DSN_NOTIFY_FAILURE),
      1);
  CHECK_INT(dsn_should_notify_success("a@b", 0), 0);
  CHECK_INT(dsn_should_notify_success("a@b", DSN_NOTIFY_FAILURE), 0);
  CHECK_INT(
      dsn_should_notify_success("a@b", DSN_NOTIFY_SUCCESS | DSN_NOTIFY_NEVER),
      0);
  CHECK_INT(dsn_should_notify_success("", DSN_NOTIFY_SUCCESS), 0);
  CHECK_INT(dsn_should_notify_success(NULL, DSN_NOTIFY_SUCCESS), 0);
}

static void test_date(void) {
  char d[40];
  dsn_date(0, d);
  CHECK_STR(d, "Thu, 01 Jan 1970 00:00:00 +0000");
  dsn_date(1751371200, d);
  CHECK_STR(d, "Tue, 01 Jul 2025 12:00:00 +0000");
}

/* A minimal MIME reader for the checks: the value of header `name` in
 * the header block [h, h+n), copied into out. */
static const char *field(const char *h, size_t n, const char *name, char *out,
                         size_t cap) {
  size_t k = strlen(name);
  for (size_t i = 0; i + k < n; i++) {
    if ((i == 0 || h[i - 1] == '\n') && strncmp(h + i, name, k) == 0 &&
        h[i + k] == ':') {
      size_t j = i + k + 1, o = 0;
      while (j < n && h[j] == ' ')
        j++;
      while (j < n && h[j] != '\r' && o + 1 < cap)
        out[o++] = h[j++];
      out[o] = '\0';
      return out;
    }
  }
  return NULL;
}

struct part {
  const char *hdr, *body;
  size_t hlen, blen;
};

/* Splits msg's body at the boundary into at most 8 parts. */
static int split(const char *msg, const char *boundary, struct part *p) {
  char delim[160];
  snprintf(delim, sizeof(delim), "\r\n--%s", boundary);
  size_t dl = strlen(delim);
  int np = 0;
  const char *s = strstr(msg, delim);
  while (s && np < 8) {
    s += dl;
    if (strncmp(s, "--", 2) == 0)
      return np; /* close delimiter */
    s += 2;      /* CRLF */
    const char *e = strstr(s, delim);
    if (!e)
      return -1;
    const char *sep = strstr(s, "\r\n\r\n");
    if (!sep || sep > e)
      return -1;
    p[np].hdr = s;
    p[np].hlen = (size_t)(sep - s) + 2;
    p[np].body = sep + 4;
    p[np].blen = (size_t)(e - (sep + 4));
    np++;
    s = e;
  }
  return -1;
}

static const char orig[] = "From: alice@example.org\r\n"
                           "To: bob@example.net\r\n"
                           "Subject: hi\r\n"
                           "\r\n"
                           "secret body\r\n";

static void test_build(int ret) {
  struct dsn_rcpt rc[2] = {
      {"bob@example.net", "rfc822;bob+2Bx@example.net", "5.1.1",
       "mx.example.net", "550 5.1.1 no such user", 1751371200, 0, 0, 0},
      {"carol@example.net", NULL, "4.4.7", NULL, NULL, 0, 0, 0, 0},
  };
  struct dsn_report r = {
      .hostname = "relay.example.com",
      .sender = "alice@example.org",
      .envid = "QQ+2B1",
      .ret = ret,
      .arrival = 1751360000,
      .now = 1751371300,
      .id = "abc123",
      .msg = orig,
      .msg_len = sizeof(orig) - 1,
      .rcpts = rc,
      .nrcpt = 2,
  };
  size_t len;
  char *m = dsn_build(&r, &len), v[512];
  CHECK(m != NULL);
  if (!m)
    return;
  CHECK_INT(strlen(m), len);
  const char *end = strstr(m, "\r\n\r\n");
  size_t hl = (size_t)(end - m) + 2;
  CHECK_STR(field(m, hl, "From", v, sizeof(v)),
            "Mail Delivery System <MAILER-DAEMON@relay.example.com>");
  CHECK_STR(field(m, hl, "To", v, sizeof(v)), "<alice@example.org>");
  CHECK_STR(field(m, hl, "Subject", v, sizeof(v)),
            "Undelivered Mail Returned to Sender");
  CHECK_STR(field(m, hl, "Auto-Submitted", v, sizeof(v)), "auto-replied");
  CHECK_STR(field(m, hl, "MIME-Version", v, sizeof(v)), "1.0");
  CHECK_STR(field(m, hl, "Date", v, sizeof(v)),
            "Tue, 01 Jul 2025 12:01:40 +0000");
  CHECK_CONTAINS(field(m, hl, "Content-Type", v, sizeof(v)),
                 "multipart/report; report-type=delivery-status;");
  const char *b = strstr(m, "boundary=\"");
  CHECK(b != NULL);
  char boundary[128];
  sscanf(b + 10, "%127[^\"]", boundary);

  struct part p[8];
  int np = split(m, boundary, p);
  CHECK_INT(np, 3);
  if (np != 3) {
    free(m);
    return;
  }
  CHECK_STR(field(p[0].hdr, p[0].hlen, "Content-Type", v, sizeof(v)),
            "text/plain; charset=us-ascii");
  CHECK_CONTAINS(p[0].body, "<bob@example.net>: host mx.example.net said: "
                            "550 5.1.1 no such user");

  CHECK_STR(field(p[1].hdr, p[1].hlen, "Content-Type", v, sizeof(v)),
            "message/delivery-status");
  /* The per-message block, then one block per recipient. */
  const char *ds = p[1].body;
  const char *b1 = strstr(ds, "\r\n\r\n");
  size_t l0 = (size_t)(b1 - ds) + 2;
  CHECK_STR(field(ds, l0, "Reporting-MTA", v, sizeof(v)),
            "dns; relay.example.com");
  CHECK_STR(field(ds, l0, "Original-Envelope-Id", v, sizeof(v)), "QQ+1");
  CHECK_STR(field(ds, l0, "Arrival-Date", v, sizeof(v)),
            "Tue, 01 Jul 2025 08:53:20 +0000");
  const char *r1 = b1 + 4, *b2 = strstr(r1, "\r\n\r\n");
  size_t l1 = (size_t)(b2 - r1) + 2;
  CHECK_STR(field(r1, l1, "Final-Recipient", v, sizeof(v)),
            "rfc822; bob@example.net");
  CHECK_STR(field(r1, l1, "Original-Recipient", v, sizeof(v)),
            "rfc822;bob+x@example.net");
  CHECK_STR(field(r1, l1, "Action", v, sizeof(v)), "failed");
  CHECK_STR(field(r1, l1, "Status", v, sizeof(v)), "5.1.1");
  CHECK_STR(field(r1, l1, "Remote-MTA", v, sizeof(v)), "dns; mx.example.net");
  CHECK_STR(field(r1, l1, "Diagnostic-Code", v, sizeof(v)),
            "smtp; 550 5.1.1 no such user");
  CHECK_STR(field(r1, l1, "Last-Attempt-Date", v, sizeof(v)),
            "Tue, 01 Jul 2025 12:00:00 +0000");
  const char *r2 = b2 + 4;
  size_t l2 = p[1].blen - (size_t)(r2 - ds);
  CHECK_STR(field(r2, l2, "Final-Recipient", v, sizeof(v)),
            "rfc822; carol@example.net");
  CHECK_STR(field(r2, l2, "Action", v, sizeof(v)), "failed");
  CHECK_STR(field(r2, l2, "Status", v, sizeof(v)), "4.4.7");
  CHECK(field(r2, l2, "Remote-MTA", v, sizeof(v)) == NULL);
  CHECK(field(r2, l2, "Diagnostic-Code", v, sizeof(v)) == NULL);
  CHECK(field(r2, l2, "Original-Recipient", v, sizeof(v)) == NULL);

  if (ret == DSN_RET_FULL) {
    CHECK_STR(field(p[2].hdr, p[2].hlen, "Content-Type", v, sizeof(v)),
              "message/rfc822");
    CHECK(p[2].blen >= sizeof(orig) - 1);
    CHECK(memcmp(p[2].body, orig, sizeof(orig) - 1) == 0);
  } else {
    CHECK_STR(field(p[2].hdr, p[2].hlen, "Content-Type", v, sizeof(v)),
              "text/rfc822-headers");
    CHECK(memcmp(p[2].body, orig, strstr(orig, "\r\n\r\n") - orig + 4) == 0);
    CHECK(strstr(m, "secret body") == NULL);
  }
  free(m);
}

static void test_injection_and_boundary(void) {
  /* The message contains our first boundary choice; CRLF in fields is
   * neutralised. */
  static const char msg[] = "Subject: x\r\n\r\n--=_mailhop_id_0_=\r\n";
  struct dsn_rcpt rc = {"a@b\r\nBcc: evil@x",
                        NULL,
                        "5.0.0",
                        NULL,
                        "550 bad\r\nX-Evil: 1",
                        0,
                        0,
                        0,
                        0};
  struct dsn_report r = {.hostname = "h",
                         .sender = "s@x\r\nBcc: e@x",
                         .id = "id",
                         .msg = msg,
                         .msg_len = sizeof(msg) - 1,
                         .ret = DSN_RET_FULL,
                         .rcpts = &rc,
                         .nrcpt = 1};
  size_t len;
  char *m = dsn_build(&r, &len);
  CHECK(m != NULL);
  if (!m)
    return;
  CHECK(strstr(m, "\r\nBcc:") == NULL);
  CHECK(strstr(m, "\r\nX-Evil:") == NULL);
  CHECK(strstr(m, "boundary=\"=_mailhop_id_1_=\"") != NULL);
  free(m);
}

/* The quoted original is bounded by DSN_QUOTE_MAX and taken by length. */
static void test_quote_bounds(void) {
  struct dsn_rcpt rc = {
      "a@b.example", NULL, "5.1.1", NULL, "550 no", 0, 0, 0, 0};
  struct dsn_report r = {.hostname = "h",
                         .sender = "s@x.example",
                         .id = "id",
                         .ret = DSN_RET_FULL,
                         .rcpts = &rc,
                         .nrcpt = 1};
  size_t len;
  /* A NUL in the body: everything after it is returned too. */
  static const char nul[] = "Subject: n\r\n\r\nbefore\0after\r\n";
  r.msg = nul;
  r.msg_len = sizeof nul - 1;
  char *m = dsn_build(&r, &len);
  CHECK(m != NULL);
  if (m) {
    CHECK(memmem(m, len, "before\0after\r\n", 14) != NULL);
    CHECK(strstr(m, "message/rfc822") != NULL);
    free(m);
  }
  /* Exactly the cap: still the whole message. */
  size_t big = DSN_QUOTE_MAX + 1000;
  char *msg = malloc(big);
  CHECK(msg != NULL);
  if (!msg)
    return;
  static const char hdr[] = "Subject: big\r\nX-Mark: 7\r\n\r\n";
  memcpy(msg, hdr, sizeof hdr - 1);
  for (size_t i = sizeof hdr - 1; i < big; i++)
    msg[i] = (i % 78 == 77) ? '\n' : (i % 78 == 76) ? '\r' : 'b';
  r.msg = msg;
  r.msg_len = DSN_QUOTE_MAX;
  m = dsn_build(&r, &len);
  CHECK(m && strstr(m, "message/rfc822") != NULL);
  free(m);
  /* One byte over: the header only (RFC 3461 §4.3). */
  r.msg_len = DSN_QUOTE_MAX + 1;
  m = dsn_build(&r, &len);
  CHECK(m != NULL);
  if (m) {
    CHECK(strstr(m, "text/rfc822-headers") != NULL);
    CHECK(strstr(m, "message/rfc822") == NULL);
    CHECK(strstr(m, "X-Mark: 7") != NULL);
    CHECK(strstr(m, "bbbb") == NULL);
    CHECK(len < 4000);
    free(m);
  }
  /* A header section over the cap (no empty line at all): cut at a line
   * end within the cap. */
  for (size_t i = 0; i < big; i++)
    msg[i] = (i % 78 == 77) ? '\n' : (i % 78 == 76) ? '\r' : 'h';
  r.msg_len = big;
  r.ret = DSN_RET_HDRS;
  m = dsn_build(&r, &len);
  CHECK(m != NULL);
  if (m) {
    CHECK(len < DSN_QUOTE_MAX + 4000);
    CHECK(len > DSN_QUOTE_MAX - 100);
    CHECK(strstr(m, "hh\r\n\r\n--=_mailhop") != NULL);
    free(m);
  }
  free(msg);
}

/* The delay warning: Action: delayed, a class-4 Status, Will-Retry-Until,
 * the header only even with RET=FULL; mixed with a failure it is a
 * bounce with one block of each. */
static void test_delayed(void) {
  struct dsn_rcpt rc[2] = {
      {"bob@example.net", NULL, "4.2.0", "mx.example.net[192.0.2.7]:25",
       "452 4.2.0 mailbox busy", 1751371200, 1, 1751792000, 0},
      {"dan@example.net", NULL, "5.1.1", "[192.0.2.8]:2525", NULL, 0, 1,
       1751792000, 0},
  };
  struct dsn_report r = {
      .hostname = "relay.example.com",
      .sender = "alice@example.org",
      .ret = DSN_RET_FULL,
      .arrival = 1751360000,
      .now = 1751371300,
      .id = "abc124",
      .msg = orig,
      .msg_len = sizeof(orig) - 1,
      .rcpts = rc,
      .nrcpt = 2,
  };
  size_t len;
  char *m = dsn_build(&r, &len), v[512];
  CHECK(m != NULL);
  if (!m)
    return;
  size_t hl = (size_t)(strstr(m, "\r\n\r\n") - m) + 2;
  CHECK_STR(field(m, hl, "Subject", v, sizeof(v)),
            "Delayed Mail (still being retried)");
  CHECK_CONTAINS(m, "you do not need to send the message again");
  char boundary[128];
  sscanf(strstr(m, "boundary=\"") + 10, "%127[^\"]", boundary);
  struct part p[8];
  CHECK_INT(split(m, boundary, p), 3);
  const char *ds = p[1].body;
  const char *r1 = strstr(ds, "\r\n\r\n") + 4, *b2 = strstr(r1, "\r\n\r\n");
  size_t l1 = (size_t)(b2 - r1) + 2;
  CHECK_STR(field(r1, l1, "Action", v, sizeof(v)), "delayed");
  CHECK_STR(field(r1, l1, "Status", v, sizeof(v)), "4.2.0");
  /* RFC 3464 §2.3.5: the MTA's name, not our log's "host[address]:port";
   * an address alone keeps its brackets. */
  CHECK_STR(field(r1, l1, "Remote-MTA", v, sizeof(v)), "dns; mx.example.net");
  CHECK_STR(field(r1, l1, "Will-Retry-Until", v, sizeof(v)),
            "Sun, 06 Jul 2025 08:53:20 +0000");
  const char *r2 = b2 + 4;
  size_t l2 = p[1].blen - (size_t)(r2 - ds);
  CHECK_STR(field(r2, l2, "Remote-MTA", v, sizeof(v)), "dns; [192.0.2.8]");
  CHECK_STR(field(r2, l2, "Action", v, sizeof(v)), "delayed");
  CHECK_STR(field(r2, l2, "Status", v, sizeof(v)), "4.0.0"); /* class 4 */
  /* Headers only, whatever RET says. */
  CHECK_STR(field(p[2].hdr, p[2].hlen, "Content-Type", v, sizeof(v)),
            "text/rfc822-headers");
  CHECK_STR(field(p[2].hdr, p[2].hlen, "Content-Description", v, sizeof(v)),
            "Delayed message");
  CHECK(strstr(m, "secret body") == NULL);
  free(m);

  /* Mixed: a bounce carrying one failed and one delayed block. */
  rc[1].delayed = 0;
  m = dsn_build(&r, &len);
  CHECK(m != NULL);
  if (!m)
    return;
  hl = (size_t)(strstr(m, "\r\n\r\n") - m) + 2;
  CHECK_STR(field(m, hl, "Subject", v, sizeof(v)),
            "Undelivered Mail Returned to Sender");
  CHECK_CONTAINS(m, "Action: delayed\r\n");
  CHECK_CONTAINS(m, "Action: failed\r\nStatus: 5.1.1\r\n");
  CHECK_CONTAINS(m, "secret body"); /* RET=FULL for the failure */
  free(m);
}

/* The operator's copy: To: the operator, a marked Subject, the sender
 * named, the same report, and never the body even with RET=FULL. */
static void test_copy(void) {
  struct dsn_rcpt rc[1] = {
      {"bob@example.net", NULL, "5.1.1", "mx.example.net",
       "550 5.1.1 no such user", 1751371200, 0, 0, 0},
  };
  struct dsn_report r = {
      .hostname = "relay.example.com",
      .sender = "alice@example.org",
      .ret = DSN_RET_FULL,
      .arrival = 1751360000,
      .now = 1751371300,
      .id = "abc125",
      .msg = orig,
      .msg_len = sizeof(orig) - 1,
      .rcpts = rc,
      .nrcpt = 1,
      .copy_to = "postmaster@ops.example",
  };
  size_t len;
  char *m = dsn_build(&r, &len), v[512];
  CHECK(m != NULL);
  if (!m)
    return;
  size_t hl = (size_t)(strstr(m, "\r\n\r\n") - m) + 2;
  CHECK_STR(field(m, hl, "To", v, sizeof(v)), "<postmaster@ops.example>");
  CHECK_STR(field(m, hl, "Subject", v, sizeof(v)),
            "Postmaster Copy: Undelivered Mail Returned to Sender");
  CHECK_STR(field(m, hl, "From", v, sizeof(v)),
            "Mail Delivery System <MAILER-DAEMON@relay.example.com>");
  CHECK_CONTAINS(m, "copy of a notice sent to <alice@example.org>");
  CHECK_CONTAINS(m, "Action: failed\r\nStatus: 5.1.1\r\n");
  CHECK_CONTAINS(m, "Content-Type: text/rfc822-headers\r\n");
  CHECK_CONTAINS(m, "Subject: hi\r\n");
  CHECK(strstr(m, "secret body") == NULL);
  free(m);
}

int main(void) {
  test_quote_bounds();
  test_should_bounce();
  test_should_delay();
  test_delayed();
  test_copy();
  test_date();
  test_build(DSN_RET_UNSET);
  test_build(DSN_RET_FULL);
  test_injection_and_boundary();
  return check_result("test_dsn");
}
