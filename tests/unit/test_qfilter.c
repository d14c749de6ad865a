/*
 * test_qfilter: the queue filter words (CONTRACT §5) and their matching,
 * pure functions: every word, every error, and the AND of criteria.
 */
#include "proto/qfilter.h"

#include <string.h>

#include "check.h"

static int parse(struct qfilter *f, const char *line, char *err, size_t n) {
  static char buf[2048];
  const char *w[16];
  size_t nw = 0;
  snprintf(buf, sizeof buf, "%s", line);
  for (char *save = NULL, *t = strtok_r(buf, " ", &save); t && nw < 16;
       t = strtok_r(NULL, " ", &save))
    w[nw++] = t;
  return qfilter_parse(f, w, nw, err, n);
}

static void test_parse_words(void) {
  struct qfilter f;
  char err[160];
  CHECK_INT(parse(&f, "", err, sizeof err), 0);
  CHECK_INT(qfilter_has_criteria(&f), 0);
  CHECK_INT(f.all, 0);
  CHECK_INT(f.older_than, -1);
  CHECK_INT(parse(&f, "all", err, sizeof err), 0);
  CHECK_INT(f.all, 1);
  CHECK_INT(qfilter_has_criteria(&f), 0);
  CHECK_INT(parse(&f,
                  "domain=Example.TEST sender=Alice@A.Example state=deferred "
                  "older_than=3600",
                  err, sizeof err),
            0);
  CHECK_STR(f.domain, "example.test");
  CHECK_STR(f.sender, "alice@a.example");
  CHECK_INT(f.state, QFILTER_DEFERRED);
  CHECK_INT(f.older_than, 3600);
  CHECK_INT(qfilter_has_criteria(&f), 1);
  CHECK_INT(qfilter_needs_rcpts(&f), 1);
  CHECK_INT(parse(&f, "sender=@Shop.Example", err, sizeof err), 0);
  CHECK_STR(f.sender, "@shop.example");
  CHECK_INT(qfilter_needs_rcpts(&f), 0);
  CHECK_INT(parse(&f, "state=held", err, sizeof err), 0);
  CHECK_INT(f.state, QFILTER_HELD);
  CHECK_INT(qfilter_needs_rcpts(&f), 0);
  CHECK_INT(parse(&f, "state=queued older_than=0", err, sizeof err), 0);
  CHECK_INT(f.state, QFILTER_QUEUED);
  CHECK_INT(f.older_than, 0);
  /* "@domain" accepted for domain= too (people type it) */
  CHECK_INT(parse(&f, "domain=@b.example", err, sizeof err), 0);
  CHECK_STR(f.domain, "b.example");
}

static void test_parse_errors(void) {
  struct qfilter f;
  char err[160];
  static const struct {
    const char *line, *msg;
  } bad[] = {
      {"frob", "unknown filter: frob"},
      {"colour=red", "unknown filter: colour=red"},
      {"domain=", "bad domain: domain="},
      {"domain=a@b", "bad domain: domain=a@b"},
      {"domain=a.example domain=b.example",
       "filter given twice: domain=b.example"},
      {"sender=", "bad sender (ADDR, @DOMAIN or <>): sender="},
      {"sender=@", "bad sender (ADDR, @DOMAIN or <>): sender=@"},
      {"sender=alice", "bad sender (ADDR, @DOMAIN or <>): sender=alice"},
      {"sender=a@b@c", "bad sender (ADDR, @DOMAIN or <>): sender=a@b@c"},
      {"state=bounced", "bad state (queued, deferred or held): state=bounced"},
      {"state=held state=held", "filter given twice: state=held"},
      {"older_than=1h", "bad older_than (seconds): older_than=1h"},
      {"older_than=-5", "bad older_than (seconds): older_than=-5"},
      {"older_than=99999999999999999999",
       "bad older_than (seconds): older_than=99999999999999999999"},
      {"older_than=", "bad older_than (seconds): older_than="},
      {"all all", "filter given twice: all"},
      {"ALL", "unknown filter: ALL"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err[0] = '\0';
    CHECK_INT(parse(&f, bad[i].line, err, sizeof err), -1);
    CHECK_STR(err, bad[i].msg);
  }
  /* control bytes never pass into a filter */
  const char *w[] = {"domain=a\x01.example"};
  CHECK_INT(qfilter_parse(&f, w, 1, err, sizeof err), -1);
  /* an oversized value */
  static char big[600];
  memcpy(big, "domain=", 7);
  memset(big + 7, 'a', 300);
  const char *w2[] = {big};
  CHECK_INT(qfilter_parse(&f, w2, 1, err, sizeof err), -1);
  /* errlen 0: no write */
  CHECK_INT(qfilter_parse(&f, w2, 1, NULL, 0), -1);
}

static void test_match(void) {
  struct qfilter f;
  char err[160];
  int64_t now = 1800000000;
  const char *doms[] = {"a.example", "B.example"};
  int st_q[] = {0, 0}, st_d[] = {0, 1};
  /* no criterion: everything */
  CHECK_INT(parse(&f, "all", err, sizeof err), 0);
  CHECK_INT(qfilter_msg_match(&f, "", 0, now, now), 1);
  CHECK_INT(qfilter_rcpts_match(&f, doms, st_q, 2), 1);
  /* sender, exact and by domain, case-insensitive; <> matches neither */
  CHECK_INT(parse(&f, "sender=Alice@Shop.example", err, sizeof err), 0);
  CHECK_INT(qfilter_msg_match(&f, "alice@shop.EXAMPLE", 0, now, now), 1);
  CHECK_INT(qfilter_msg_match(&f, "alice2@shop.example", 0, now, now), 0);
  CHECK_INT(qfilter_msg_match(&f, "", 0, now, now), 0);
  CHECK_INT(parse(&f, "sender=@shop.example", err, sizeof err), 0);
  CHECK_INT(qfilter_msg_match(&f, "bob@SHOP.example", 0, now, now), 1);
  CHECK_INT(qfilter_msg_match(&f, "bob@eshop.example", 0, now, now), 0);
  CHECK_INT(qfilter_msg_match(&f, "bob@sub.shop.example", 0, now, now), 0);
  CHECK_INT(qfilter_msg_match(&f, "", 0, now, now), 0);
  CHECK_INT(qfilter_msg_match(&f, NULL, 0, now, now), 0);
  /* <>: the null sender (bounces) and nothing else */
  CHECK_INT(parse(&f, "sender=<>", err, sizeof err), 0);
  CHECK_STR(f.sender, "<>");
  CHECK_INT(qfilter_has_criteria(&f), 1);
  CHECK_INT(qfilter_msg_match(&f, "", 0, now, now), 1);
  CHECK_INT(qfilter_msg_match(&f, NULL, 0, now, now), 1);
  CHECK_INT(qfilter_msg_match(&f, "bob@shop.example", 0, now, now), 0);
  CHECK_INT(qfilter_msg_match(&f, "<>", 0, now, now), 0);
  CHECK_INT(parse(&f, "sender=<> sender=<>", err, sizeof err), -1);
  CHECK_INT(parse(&f, "sender=<x>", err, sizeof err), -1);
  /* age: at least older_than seconds */
  CHECK_INT(parse(&f, "older_than=60", err, sizeof err), 0);
  CHECK_INT(qfilter_msg_match(&f, "x@y", 0, now - 60, now), 1);
  CHECK_INT(qfilter_msg_match(&f, "x@y", 0, now - 59, now), 0);
  /* state */
  CHECK_INT(parse(&f, "state=held", err, sizeof err), 0);
  CHECK_INT(qfilter_msg_match(&f, "x@y", 1, now, now), 1);
  CHECK_INT(qfilter_msg_match(&f, "x@y", 0, now, now), 0);
  CHECK_INT(parse(&f, "state=deferred", err, sizeof err), 0);
  CHECK_INT(qfilter_msg_match(&f, "x@y", 1, now, now), 0); /* held: no */
  CHECK_INT(qfilter_msg_match(&f, "x@y", 0, now, now), 1);
  CHECK_INT(qfilter_rcpts_match(&f, doms, st_q, 2), 0);
  CHECK_INT(qfilter_rcpts_match(&f, doms, st_d, 2), 1);
  CHECK_INT(parse(&f, "state=queued", err, sizeof err), 0);
  CHECK_INT(qfilter_rcpts_match(&f, doms, st_q, 2), 1);
  CHECK_INT(qfilter_rcpts_match(&f, doms + 1, st_d + 1, 1), 0);
  /* domain: any recipient, case-insensitive; ANDed with the state */
  CHECK_INT(parse(&f, "domain=b.example", err, sizeof err), 0);
  CHECK_INT(qfilter_rcpts_match(&f, doms, st_q, 2), 1);
  CHECK_INT(qfilter_rcpts_match(&f, doms, st_q, 1), 0);
  CHECK_INT(qfilter_rcpts_match(&f, doms, st_q, 0), 0);
  CHECK_INT(parse(&f, "domain=b.example state=deferred", err, sizeof err), 0);
  CHECK_INT(qfilter_rcpts_match(&f, doms, st_d, 2), 1);
  CHECK_INT(qfilter_rcpts_match(&f, doms, st_q, 2), 0);
  /* every criterion ANDed at message level */
  CHECK_INT(
      parse(&f, "sender=@s.example older_than=10 state=held", err, sizeof err),
      0);
  CHECK_INT(qfilter_msg_match(&f, "a@s.example", 1, now - 10, now), 1);
  CHECK_INT(qfilter_msg_match(&f, "a@s.example", 0, now - 10, now), 0);
  CHECK_INT(qfilter_msg_match(&f, "a@s.example", 1, now - 9, now), 0);
  CHECK_INT(qfilter_msg_match(&f, "a@t.example", 1, now - 10, now), 0);
}

static void test_duration(void) {
  int64_t s = 0;
  CHECK_INT(qfilter_duration("90", &s), 0);
  CHECK_INT(s, 90);
  CHECK_INT(qfilter_duration("90s", &s), 0);
  CHECK_INT(s, 90);
  CHECK_INT(qfilter_duration("30m", &s), 0);
  CHECK_INT(s, 1800);
  CHECK_INT(qfilter_duration("2h", &s), 0);
  CHECK_INT(s, 7200);
  CHECK_INT(qfilter_duration("7d", &s), 0);
  CHECK_INT(s, 604800);
  CHECK_INT(qfilter_duration("1w", &s), 0);
  CHECK_INT(s, 604800);
  static const char *const bad[] = {
      "",         "0",    "0h",  "h",   "1x",
      "-1h",      "1.5h", " 1h", "1h ", "99999999999999999999",
      "20000000d"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    CHECK_INT(qfilter_duration(bad[i], &s), -1);
}

int main(void) {
  test_parse_words();
  test_parse_errors();
  test_match();
  test_duration();
  return check_result("test_qfilter");
}
