/* test_sts_policy: MTA-STS TXT records, policy files and mx: matching
 * (RFC 8461), TLS-RPT rua (RFC 8460): proto/sts_policy.h, CONTRACT §4b. */
#include "proto/sts_policy.h"

#include <stdlib.h>

#include "check.h"

static void test_txt(void) {
  char id[STS_ID_MAX + 1];
  CHECK_INT(sts_txt_parse("v=STSv1; id=20160831085700Z;", id), 1);
  CHECK_STR(id, "20160831085700Z");
  CHECK_INT(sts_txt_parse("v=STSv1;id=abc", id), 1);
  CHECK_STR(id, "abc");
  CHECK_INT(sts_txt_parse("v=STSv1 ; id=a1 ; ext=x.y ;", id), 1);
  CHECK_INT(sts_txt_parse("v=spf1 -all", id), 0);
  CHECK_INT(sts_txt_parse("v=STSv10; id=1", id), 0);
  CHECK_INT(sts_txt_parse("v=STSv1;", id), -1);
  CHECK_INT(sts_txt_parse("v=STSv1; id=a-b", id), -1);
  CHECK_INT(sts_txt_parse("v=STSv1; id=", id), -1);
  CHECK_INT(sts_txt_parse("v=STSv1; id=123456789012345678901234567890123", id),
            -1);
  CHECK_INT(sts_txt_parse("v=STSv1; id=1; id=2", id), -1);
  CHECK_INT(sts_txt_parse("v=STSv1; junk", id), -1);
  const char *one[] = {"v=spf1 -all", "v=STSv1; id=x1"};
  CHECK_INT(sts_txt_pick(one, 2, id), 1);
  CHECK_STR(id, "x1");
  const char *two[] = {"v=STSv1; id=x1", "v=STSv1; id=x2"};
  CHECK_INT(sts_txt_pick(two, 2, id), 0);
  const char *bad[] = {"v=STSv1; id=!"};
  CHECK_INT(sts_txt_pick(bad, 1, id), 0);
  CHECK_INT(sts_txt_pick(NULL, 0, id), 0);
}

static int parse(const char *s, struct sts_policy *p, char *why) {
  return sts_policy_parse(s, strlen(s), p, why, 128);
}

static void test_policy(void) {
  struct sts_policy p;
  char why[128];
  CHECK_INT(parse("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n"
                  "mx: *.Example.NET.\r\nmax_age: 604800\r\n",
                  &p, why),
            0);
  CHECK_INT(p.mode, STS_MODE_ENFORCE);
  CHECK_INT(p.max_age, 604800);
  CHECK_INT(p.n_mx, 2);
  CHECK_STR(p.mx[1], "*.example.net");
  CHECK_INT(sts_mx_match(&p, "mail.example.com"), 1);
  CHECK_INT(sts_mx_match(&p, "MAIL.example.com."), 1);
  CHECK_INT(sts_mx_match(&p, "mx1.example.net"), 1);
  CHECK_INT(sts_mx_match(&p, "a.b.example.net"), 0);
  CHECK_INT(sts_mx_match(&p, "example.net"), 0);
  CHECK_INT(sts_mx_match(&p, "evil.com"), 0);
  CHECK_INT(sts_mx_match(&p, "mail.example.com.evil"), 0);
  /* LF only, extra keys, trailing spaces, huge max_age cut */
  CHECK_INT(parse("version: STSv1\nmode: testing  \nmx: a.b\nfoo: bar\n"
                  "max_age: 9999999999",
                  &p, why),
            0);
  CHECK_INT(p.mode, STS_MODE_TESTING);
  CHECK_INT(p.max_age, STS_MAX_AGE_MAX);
  CHECK_INT(parse("version: STSv1\nmode: none\nmax_age: 1\n", &p, why), 0);
  CHECK_INT(p.mode, STS_MODE_NONE);
  /* failures */
  CHECK_INT(parse("mode: enforce\nmx: a.b\nmax_age: 1\n", &p, why), -1);
  CHECK_STR(why, "no version");
  CHECK_INT(
      parse("version: STSv2\nmode: enforce\nmx: a.b\nmax_age: 1\n", &p, why),
      -1);
  CHECK_INT(parse("version: STSv1\nmode: enforce\nmax_age: 1\n", &p, why), -1);
  CHECK_STR(why, "no mx");
  CHECK_INT(parse("version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n", &p, why),
            -1);
  CHECK_INT(
      parse("version: STSv1\nmode: enforce\nmx: a\nmax_age: -1\n", &p, why),
      -1);
  CHECK_INT(
      parse("version: STSv1\nmode: enforce\nmx: a b\nmax_age: 1\n", &p, why),
      -1);
  CHECK_INT(parse("<html>redirect</html>", &p, why), -1);
  CHECK_INT(p.n_mx, 0);
  char *big = malloc(STS_POLICY_MAX + 1);
  memset(big, '\n', STS_POLICY_MAX + 1);
  CHECK_INT(sts_policy_parse(big, STS_POLICY_MAX + 1, &p, why, sizeof why), -1);
  CHECK_CONTAINS(why, "64 KiB");
  free(big);
  /* only len bytes are read */
  const char *s = "version: STSv1\nmode: none\nmax_age: 5\nmode: xx";
  CHECK_INT(sts_policy_parse(s, strlen(s) - 9, &p, why, sizeof why), 0);
}

/* RFC 8461 §3.2: the policy is served as text/plain; parameters ignored. */
static void test_media_type(void) {
  CHECK_INT(sts_media_type_ok("text/plain"), 1);
  CHECK_INT(sts_media_type_ok("Text/Plain; charset=utf-8"), 1);
  CHECK_INT(sts_media_type_ok(" text/plain ;charset=\"us-ascii\""), 1);
  CHECK_INT(sts_media_type_ok("text/plain\t"), 1);
  CHECK_INT(sts_media_type_ok(NULL), 0);
  CHECK_INT(sts_media_type_ok(""), 0);
  CHECK_INT(sts_media_type_ok("text/html"), 0);
  CHECK_INT(sts_media_type_ok("text/plainx"), 0);
  CHECK_INT(sts_media_type_ok("text/plain-ish; charset=utf-8"), 0);
  CHECK_INT(sts_media_type_ok("application/octet-stream"), 0);
  CHECK_INT(sts_media_type_ok("text/"), 0);
}

static void test_rua(void) {
  char rua[TLSRPT_MAX_RUA][TLSRPT_RUA_LEN];
  const char *a[] = {
      "v=TLSRPTv1; rua=mailto:tls@example.com,"
      "https://r.example/x, mailto:o%2Bps@example.net?subject=x"};
  CHECK_INT(tlsrpt_txt_rua(a, 1, rua), 2);
  CHECK_STR(rua[0], "tls@example.com");
  CHECK_STR(rua[1], "o+ps@example.net");
  const char *two[] = {"v=TLSRPTv1; rua=mailto:a@b",
                       "v=TLSRPTv1;rua=mailto:c@d"};
  CHECK_INT(tlsrpt_txt_rua(two, 2, rua), 0);
  const char *bad[] = {"v=TLSRPTv1; rua=mailto:a b@c,mailto:@x,mailto:x@"};
  CHECK_INT(tlsrpt_txt_rua(bad, 1, rua), 0);
  const char *none[] = {"v=spf1"};
  CHECK_INT(tlsrpt_txt_rua(none, 1, rua), 0);
  const char *pct[] = {"v=TLSRPTv1;rua=mailto:a%4"};
  CHECK_INT(tlsrpt_txt_rua(pct, 1, rua), 0);
}

int main(void) {
  test_txt();
  test_policy();
  test_media_type();
  test_rua();
  return check_result("test_sts_policy");
}
