/* test_reply: the SMTP reply parser, whole and split, good and malformed. */
#include "proto/reply.h"

#include "check.h"

static const struct {
  const char *name, *in;
  int rc;
  int code;
  const char *esc, *text, *joined;
  int nlines;
} cases[] = {
    {"single", "250 ok\r\n", REPLY_DONE, 250, "", "ok", "250 ok", 1},
    {"bare_code", "250\r\n", REPLY_DONE, 250, "", "", "250", 1},
    {"esc", "550 5.1.1 no such user\r\n", REPLY_DONE, 550, "5.1.1",
     "5.1.1 no such user", "550 5.1.1 no such user", 1},
    {"esc_class_mismatch", "550 4.1.1 odd\r\n", REPLY_DONE, 550, "",
     "4.1.1 odd", "550 4.1.1 odd", 1},
    {"esc_3digits", "452 4.5.300 x\r\n", REPLY_DONE, 452, "4.5.300",
     "4.5.300 x", "452 4.5.300 x", 1},
    {"esc_4digits_not", "452 4.5.3000 x\r\n", REPLY_DONE, 452, "", "4.5.3000 x",
     "452 4.5.3000 x", 1},
    {"multi", "250-mx.example\r\n250-PIPELINING\r\n250 SIZE 100\r\n",
     REPLY_DONE, 250, "", "mx.example\nPIPELINING\nSIZE 100",
     "250 mx.example PIPELINING SIZE 100", 3},
    {"multi_esc_joined", "550-5.7.1 first\r\n550 5.7.1 second\r\n", REPLY_DONE,
     550, "5.7.1", "5.7.1 first\n5.7.1 second", "550 5.7.1 first second", 2},
    {"bare_lf", "220 hi\n", REPLY_DONE, 220, "", "hi", "220 hi", 1},
    {"ctl_in_text", "250 a\tb\r\n", REPLY_DONE, 250, "", "a\tb", "250 a?b", 1},
    {"partial", "250-a\r\n250 b", REPLY_AGAIN, 0, NULL, NULL, NULL, 0},
    {"mismatch", "250-a\r\n251 b\r\n", REPLY_EMISMATCH, 0, NULL, NULL, NULL, 0},
    {"letters", "abc hello\r\n", REPLY_ESYNTAX, 0, NULL, NULL, NULL, 0},
    {"code_1xx", "150 x\r\n", REPLY_ESYNTAX, 0, NULL, NULL, NULL, 0},
    {"code_600", "600 x\r\n", REPLY_ESYNTAX, 0, NULL, NULL, NULL, 0},
    {"code_260", "260 x\r\n", REPLY_ESYNTAX, 0, NULL, NULL, NULL, 0},
    {"short_code", "25 x\r\n", REPLY_ESYNTAX, 0, NULL, NULL, NULL, 0},
    {"bad_sep", "250_x\r\n", REPLY_ESYNTAX, 0, NULL, NULL, NULL, 0},
    {"bare_cr", "250 x\ry\r\n", REPLY_ESYNTAX, 0, NULL, NULL, NULL, 0},
    {"empty_line", "\r\n", REPLY_ESYNTAX, 0, NULL, NULL, NULL, 0},
};

/* Feeds in chunks of `step` octets; returns the final result. */
static int feed(struct reply_parser *p, const char *in, size_t len, size_t step,
                size_t *used) {
  size_t off = 0;
  int rc = REPLY_AGAIN;
  while (off < len && rc == REPLY_AGAIN) {
    size_t n = len - off < step ? len - off : step, c;
    rc = reply_parse(p, in + off, n, &c);
    CHECK(c <= n);
    off += c;
  }
  *used = off;
  return rc;
}

static void test_table(void) {
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    for (size_t step = 1; step <= 64; step *= 4) {
      struct reply_parser p;
      size_t used;
      reply_parser_init(&p);
      int rc = feed(&p, cases[i].in, strlen(cases[i].in), step, &used);
      if (rc != cases[i].rc)
        fprintf(stderr, "case %s step %zu\n", cases[i].name, step);
      CHECK_INT(rc, cases[i].rc);
      if (rc != REPLY_DONE || cases[i].rc != REPLY_DONE)
        continue;
      char j[256];
      CHECK_INT(used, strlen(cases[i].in));
      CHECK_INT(p.r.code, cases[i].code);
      CHECK_STR(p.r.esc, cases[i].esc);
      CHECK_STR(p.r.text, cases[i].text);
      CHECK_INT(p.r.nlines, cases[i].nlines);
      reply_join(&p.r, j, sizeof(j));
      CHECK_STR(j, cases[i].joined);
    }
  }
}

static void test_two_replies_in_one_buffer(void) {
  struct reply_parser p;
  size_t c;
  const char *in = "250 first\r\n550 5.1.1 second\r\n";
  reply_parser_init(&p);
  CHECK_INT(reply_parse(&p, in, strlen(in), &c), REPLY_DONE);
  CHECK_INT(c, 11);
  CHECK_STR(p.r.text, "first");
  size_t c2;
  CHECK_INT(reply_parse(&p, in + c, strlen(in) - c, &c2), REPLY_DONE);
  CHECK_INT(c + c2, strlen(in));
  CHECK_INT(p.r.code, 550);
  CHECK_STR(p.r.esc, "5.1.1");
  CHECK_STR(p.r.text, "5.1.1 second");
}

static void test_line_too_long(void) {
  char buf[REPLY_LINE_MAX + 16];
  struct reply_parser p;
  size_t c;
  memset(buf, 'x', sizeof(buf));
  memcpy(buf, "250 ", 4);
  reply_parser_init(&p);
  CHECK_INT(reply_parse(&p, buf, sizeof(buf), &c), REPLY_ETOOLONG);
  CHECK(c <= sizeof(buf));
  /* Sticky. */
  CHECK_INT(reply_parse(&p, "250 ok\r\n", 8, &c), REPLY_ETOOLONG);
  CHECK_INT(c, 0);
}

static void test_line_at_limit(void) {
  /* REPLY_LINE_MAX octets including CRLF is fine. */
  char buf[REPLY_LINE_MAX];
  struct reply_parser p;
  size_t c;
  memset(buf, 'x', sizeof(buf));
  memcpy(buf, "250 ", 4);
  memcpy(buf + sizeof(buf) - 2, "\r\n", 2);
  reply_parser_init(&p);
  CHECK_INT(reply_parse(&p, buf, sizeof(buf), &c), REPLY_DONE);
  CHECK_INT(c, sizeof(buf));
}

static void test_too_many_lines(void) {
  struct reply_parser p;
  size_t c;
  int rc = REPLY_AGAIN;
  reply_parser_init(&p);
  for (int i = 0; i < REPLY_LINES_MAX + 1 && rc == REPLY_AGAIN; i++)
    rc = reply_parse(&p, "250-x\r\n", 7, &c);
  CHECK_INT(rc, REPLY_ETOOMANY);
}

static void test_text_truncated(void) {
  /* Many long lines: text is capped, the reply still completes. */
  struct reply_parser p;
  char line[600];
  size_t c;
  int rc = REPLY_AGAIN;
  memset(line, 'y', sizeof(line));
  memcpy(line, "250-", 4);
  memcpy(line + sizeof(line) - 2, "\r\n", 2);
  reply_parser_init(&p);
  for (int i = 0; i < 20; i++)
    rc = reply_parse(&p, line, sizeof(line), &c);
  CHECK_INT(rc, REPLY_AGAIN);
  CHECK_INT(reply_parse(&p, "250 end\r\n", 9, &c), REPLY_DONE);
  CHECK(p.r.truncated);
  CHECK(p.r.text_len < REPLY_TEXT_MAX);
  CHECK_INT(p.r.nlines, 21);
}

static void test_status_and_set(void) {
  struct reply r;
  char s[16];
  reply_set(&r, 552, "5.3.4", "too big");
  reply_status(&r, s);
  CHECK_STR(s, "5.3.4");
  CHECK_STR(r.text, "5.3.4 too big");
  reply_set(&r, 451, NULL, "later");
  reply_status(&r, s);
  CHECK_STR(s, "4.0.0");
  char j[64];
  reply_join(&r, j, sizeof(j));
  CHECK_STR(j, "451 later");
  /* Truncating join always terminates. */
  reply_join(&r, j, 5);
  CHECK_STR(j, "451 ");
}

int main(void) {
  test_table();
  test_two_replies_in_one_buffer();
  test_line_too_long();
  test_line_at_limit();
  test_too_many_lines();
  test_text_truncated();
  test_status_and_set();
  return check_result("test_reply");
}
