/*
 * Unit tests of proto/message: the header scanner (fed whole and byte by
 * byte), Received/Date/Message-ID builders and folding.
 */
#include "proto/message.h"
#include "proto/text.h"

#include "check.h"

#include <string.h>

static const struct scan_case {
  const char *name, *msg;
  int received, date, msgid, eight, in_headers;
} scan_cases[] = {
    {"basic",
     "Received: a\r\nreceived: b\r\n c\r\nDate: x\r\nMessage-Id: <y>\r\n\r\n"
     "Received: body\r\n",
     2, 1, 1, 0, 0},
    {"body_only", "\r\nDate: x\r\n", 0, 0, 0, 0, 0},
    {"continuation_not_header", "Subject: x\r\n Date: y\r\n\r\n", 0, 0, 0, 0,
     0},
    {"non_header_line_ends", "Subject: x\r\nnot a header\r\nDate: y\r\n", 0, 0,
     0, 0, 0},
    {"name_with_space", "Date : x\r\n", 0, 0, 0, 0, 0},
    {"prefix_name", "Dates: x\r\nMessage-IDx: y\r\n", 0, 0, 0, 0, 1},
    {"eight_bit_body", "A: b\r\n\r\n\xc3\xa9\r\n", 0, 0, 0, 1, 0},
    {"long_name",
     "X-Very-Long-Header-Name-That-Exceeds-The-Buffer-Size: 1\r\nDate: x\r\n",
     0, 1, 0, 0, 1},
    {"no_final_newline", "Date: x", 0, 1, 0, 0, 1},
};

static void check_scan(const struct scan_case *c,
                       const struct message_scan *m) {
  if (m->received_count != c->received || m->has_date != c->date ||
      m->has_message_id != c->msgid || m->eight_bit != c->eight ||
      m->in_headers != c->in_headers)
    fprintf(stderr, "scan case %s\n", c->name);
  CHECK_INT(m->received_count, c->received);
  CHECK_INT(m->has_date, c->date);
  CHECK_INT(m->has_message_id, c->msgid);
  CHECK_INT(m->eight_bit, c->eight);
  CHECK_INT(m->in_headers, c->in_headers);
  CHECK_INT(m->size, strlen(c->msg));
}

static void test_scan(void) {
  for (size_t i = 0; i < sizeof(scan_cases) / sizeof(scan_cases[0]); i++) {
    const struct scan_case *c = &scan_cases[i];
    struct message_scan m;
    message_scan_init(&m);
    message_scan_feed(&m, c->msg, strlen(c->msg));
    check_scan(c, &m);
    message_scan_init(&m);
    for (size_t j = 0; c->msg[j]; j++)
      message_scan_feed(&m, c->msg + j, 1);
    check_scan(c, &m);
  }
}

/* Where the header section ends (issue 12 item 3): the offset of the line
 * that ends it, whether that line is the empty line, and whether fields
 * added in front need an empty line after them. */
static const struct end_case {
  const char *name, *msg;
  long end; /* -1: not ended within the data */
  int separator, need_sep;
} end_cases[] = {
    {"headers_then_body", "Subject: x\r\nDate: y\r\n\r\nbody\r\n", 21, 1, 0},
    {"no_headers", "hello world\r\nsecond line\r\n", 0, 0, 1},
    {"empty_first_line", "\r\nbody\r\n", 0, 1, 0},
    {"empty_data", "", -1, 0, 0},
    {"header_then_non_header", "Subject: x\r\nnot a header\r\n", 12, 0, 0},
    {"continuation_first", " folded?\r\nSubject: x\r\n\r\n", 0, 0, 1},
    {"continuation_kept", "Subject: x\r\n y\r\n\r\nb\r\n", 16, 1, 0},
    {"colon_first", ":x\r\n", 0, 0, 1},
    {"mbox_from", "From a@b Mon Jan 1\r\nSubject: x\r\n\r\n", 0, 0, 1},
    {"dot_line", ".\r\n", 0, 0, 1},
    {"headers_only", "Subject: x\r\n", -1, 0, 0},
    {"eight_bit_name",
     "Subj\xc3\xa9"
     "ct: x\r\n",
     0, 0, 1},
};

static void test_header_end(void) {
  for (size_t i = 0; i < sizeof end_cases / sizeof end_cases[0]; i++) {
    const struct end_case *c = &end_cases[i];
    size_t n = strlen(c->msg);
    int sep = -1;
    size_t end = message_header_end(c->msg, n, &sep);
    size_t want = c->end < 0 ? n : (size_t)c->end;
    if (end != want || sep != c->separator)
      fprintf(stderr, "case %s\n", c->name);
    CHECK_INT(end, want);
    CHECK_INT(sep, c->separator);
    /* The scanner, fed byte by byte, agrees and decides the separator. */
    struct message_scan m;
    message_scan_init(&m);
    for (size_t j = 0; j < n; j++)
      message_scan_feed(&m, c->msg + j, 1);
    CHECK_INT(m.in_headers, c->end < 0);
    if (c->end >= 0)
      CHECK_INT(m.header_end, c->end);
    if (message_added_headers_need_separator(&m) != c->need_sep)
      fprintf(stderr, "case %s\n", c->name);
    CHECK_INT(message_added_headers_need_separator(&m), c->need_sep);
  }
}

static void test_date(void) {
  char buf[64];
  /* 2006-01-02 15:04:05 UTC is 1136214245. */
  CHECK_INT(message_date(buf, sizeof(buf), 1136214245, 0), 30);
  CHECK_STR(buf, "Mon, 2 Jan 2006 15:04:05 +0000");
  message_date(buf, sizeof(buf), 1136214245, -7 * 60);
  CHECK_STR(buf, "Mon, 2 Jan 2006 08:04:05 -0700");
  message_date(buf, sizeof(buf), 1136214245, 330);
  CHECK_STR(buf, "Mon, 2 Jan 2006 20:34:05 +0530");
  CHECK(message_date_header(buf, sizeof(buf), 1136214245, 0) > 0);
  CHECK_STR(buf, "Date: Mon, 2 Jan 2006 15:04:05 +0000\r\n");
  CHECK_INT(message_date(buf, 10, 1136214245, 0), -1);
  CHECK(message_id_header(buf, sizeof(buf), "ABC", "mx.example") > 0);
  CHECK_STR(buf, "Message-ID: <ABC@mx.example>\r\n");
  CHECK_INT(message_id_header(buf, 10, "ABC", "mx.example"), -1);
}

/* Every line of a header field is at most 78 octets (text) and every line
 * after the first starts with white space. */
static void check_folded(const char *h) {
  const char *line = h;
  int first = 1;
  for (;;) {
    const char *e = strstr(line, "\r\n");
    CHECK(e != NULL);
    if (!e)
      return;
    CHECK((size_t)(e - line) <= 78);
    if (!first)
      CHECK(line[0] == '\t' || line[0] == ' ');
    first = 0;
    line = e + 2;
    if (!*line)
      return;
  }
}

static void test_received(void) {
  char buf[1024];
  struct message_received r = {
      .helo = "client.example",
      .rdns = "host.client.example",
      .ip = "192.0.2.7",
      .hostname = "mx.example.org",
      .id = "01ABCDEF",
      .rcpt = "bob@example.net",
      .esmtp = 1,
      .when = 1136214245,
  };
  int n = message_received_header(buf, sizeof(buf), &r);
  CHECK(n > 0);
  CHECK_STR(buf, "Received: from client.example (host.client.example "
                 "[192.0.2.7])\r\n\tby mx.example.org (mailhop) with ESMTP "
                 "id 01ABCDEF for\r\n\t<bob@example.net>; Mon, 2 Jan 2006 "
                 "15:04:05 +0000\r\n");
  check_folded(buf);

  /* received_header = redacted: neither the address nor the host name;
   * the HELO name, "by", the protocol, id, recipient and date stay */
  r.redacted = 1;
  CHECK(message_received_header(buf, sizeof(buf), &r) > 0);
  CHECK_STR(buf, "Received: from client.example\r\n\tby mx.example.org "
                 "(mailhop) with ESMTP id 01ABCDEF for\r\n\t"
                 "<bob@example.net>; Mon, 2 Jan 2006 15:04:05 +0000\r\n");
  CHECK(!strstr(buf, "192.0.2.7") && !strstr(buf, "host.client.example"));
  check_folded(buf);
  r.redacted = 0;

  r.rdns = NULL;
  r.ip = "2001:db8::1";
  r.rcpt = NULL;
  r.tls = 1;
  r.auth = 1;
  r.helo = "evil) (x\r\nInjected: 1";
  r.tls_desc = "version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384";
  n = message_received_header(buf, sizeof(buf), &r);
  CHECK(n > 0);
  CHECK_CONTAINS(buf,
                 "from evil???x??Injected:?1 (unknown [IPv6:2001:db8::1])");
  CHECK_CONTAINS(buf, "(mailhop) (version=TLSv1.3");
  CHECK_CONTAINS(buf, "cipher=TLS_AES_256_GCM_SHA384) with ESMTPSA");
  CHECK_CONTAINS(buf, "with ESMTPSA id 01ABCDEF;");
  CHECK(!strstr(buf, "for <"));
  check_folded(buf);

  r.tls_desc = NULL;
  r.auth = 0;
  CHECK(message_received_header(buf, sizeof(buf), &r) > 0);
  CHECK_CONTAINS(buf, "with ESMTPS id");
  r.tls = 0;
  r.esmtp = 0;
  r.helo = NULL;
  CHECK(message_received_header(buf, sizeof(buf), &r) > 0);
  CHECK_CONTAINS(buf, "from unknown (unknown");
  CHECK_CONTAINS(buf, "with SMTP id");

  /* Too small a buffer: -1, never an overflow. */
  for (size_t cap = 0; cap < 60; cap++)
    CHECK_INT(message_received_header(buf, cap, &r), -1);
}

/* The block helpers of the line scanners (proto/text.h): every length
 * and every position, so the word-at-a-time part and the tail both count. */
static void test_text_blocks(void) {
  char buf[48];
  for (size_t n = 0; n <= 40; n++) {
    memset(buf, 'a', sizeof buf);
    CHECK_INT(text_has_8bit(buf, n), 0);
    CHECK_INT(text_plain_run(buf, n), n);
    for (size_t at = 0; at < n; at++) {
      memset(buf, 'a', sizeof buf);
      buf[at] = (char)0x80;
      CHECK_INT(text_has_8bit(buf, n), 1);
      buf[at] = (char)0xff;
      buf[n] = (char)0xff; /* past the end: not looked at */
      CHECK_INT(text_has_8bit(buf, at), 0);
      buf[at] = '\r';
      CHECK_INT(text_plain_run(buf, n), at);
      buf[at] = '\n';
      CHECK_INT(text_plain_run(buf, n), at);
      if (at + 1 < n) {
        buf[at + 1] = '\r'; /* LF first, then CR */
        CHECK_INT(text_plain_run(buf, n), at);
      }
    }
  }
  /* text_hexval, the one hex digit reader of proto: every octet. */
  for (int c = -128; c < 256; c++) {
    int want = c >= '0' && c <= '9'   ? c - '0'
               : c >= 'a' && c <= 'f' ? c - 'a' + 10
               : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                      : -1;
    CHECK_INT(text_hexval(c), want);
  }
}

int main(void) {
  test_text_blocks();
  test_scan();
  test_header_end();
  test_date();
  test_received();
  return check_result("test_message");
}
