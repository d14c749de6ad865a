/*
 * Unit tests of proto/smtp_parse: verbs, paths, MAIL/RCPT parameters,
 * xtext and base64, with malformed cases.
 */
#include "proto/smtp_parse.h"

#include "check.h"

static void test_verbs(void) {
  const char *args;
  size_t n;
  CHECK_INT(smtp_parse_verb("ehlo  foo  ", 11, &args, &n), SMTP_VERB_EHLO);
  CHECK_INT(n, 3);
  CHECK(memcmp(args, "foo", 3) == 0);
  CHECK_INT(smtp_parse_verb("StartTLS", 8, &args, &n), SMTP_VERB_STARTTLS);
  CHECK_INT(n, 0);
  CHECK_INT(smtp_parse_verb("", 0, &args, &n), SMTP_VERB_UNKNOWN);
  CHECK_INT(smtp_parse_verb("MAILX", 5, &args, &n), SMTP_VERB_UNKNOWN);
  CHECK_INT(smtp_parse_verb("MAI", 3, &args, &n), SMTP_VERB_UNKNOWN);
  CHECK_STR(smtp_verb_name(SMTP_VERB_RCPT), "RCPT");
}

static const struct path_case {
  const char *name, *in;
  unsigned flags;
  int want;
  const char *addr;
  int utf8;
} path_cases[] = {
    {"simple", "<a@b.c>", 0, SMTP_PARSE_OK, "a@b.c", 0},
    {"null_ok", "<>", SMTP_PATH_ALLOW_NULL, SMTP_PARSE_OK, "", 0},
    {"null_refused", "<>", 0, SMTP_PARSE_ENULL, NULL, 0},
    {"route", "<@x.y,@z:a@b>", 0, SMTP_PARSE_OK, "a@b", 0},
    {"bad_route", "<@x.y;a@b>", 0, SMTP_PARSE_EADDR, NULL, 0},
    {"quoted", "<\"a b\\\"c\"@d>", 0, SMTP_PARSE_OK, "\"a b\\\"c\"@d", 0},
    {"quoted_unterminated", "<\"ab@d>", 0, SMTP_PARSE_EADDR, NULL, 0},
    {"literal", "<a@[192.0.2.1]>", 0, SMTP_PARSE_OK, "a@[192.0.2.1]", 0},
    {"literal_v6", "<a@[IPv6:::1]>", 0, SMTP_PARSE_OK, "a@[IPv6:::1]", 0},
    {"empty_literal", "<a@[]>", 0, SMTP_PARSE_EADDR, NULL, 0},
    {"no_brackets", "a@b", 0, SMTP_PARSE_ESYNTAX, NULL, 0},
    {"unterminated", "<a@b", 0, SMTP_PARSE_EADDR, NULL, 0},
    {"space", "<a b@c>", 0, SMTP_PARSE_EADDR, NULL, 0},
    {"ctrl_local", "<a\tb@c>", 0, SMTP_PARSE_EADDR, NULL, 0},
    {"ctrl_domain", "<ab@c\x7f>", 0, SMTP_PARSE_EADDR, NULL, 0},
    {"ctrl_quoted", "<\"a\rb\"@c>", 0, SMTP_PARSE_EADDR, NULL, 0},
    {"double_dot", "<a..b@c>", 0, SMTP_PARSE_EADDR, NULL, 0},
    {"lead_dot", "<.a@c>", 0, SMTP_PARSE_EADDR, NULL, 0},
    {"domain_trailing_dot", "<a@c.>", 0, SMTP_PARSE_EADDR, NULL, 0},
    {"domain_empty", "<a@>", 0, SMTP_PARSE_EADDR, NULL, 0},
    {"no_domain_ok", "<postmaster>", 0, SMTP_PARSE_OK, "postmaster", 0},
    {"no_domain_refused", "<postmaster>", SMTP_PATH_NEED_DOMAIN,
     SMTP_PARSE_ENODOMAIN, NULL, 0},
    {"utf8", "<j\xc3\xb6@\xc3\xa9x.de>", 0, SMTP_PARSE_OK,
     "j\xc3\xb6@\xc3\xa9x.de", 1},
    {"bad_utf8", "<j\xc3@x>", 0, SMTP_PARSE_EADDR, NULL, 0},
    {"overlong_utf8", "<\xc0\xaf@x>", 0, SMTP_PARSE_EADDR, NULL, 0},
    {"two_at", "<a@b@c>", 0, SMTP_PARSE_EADDR, NULL, 0},
};

static void test_paths(void) {
  for (size_t i = 0; i < sizeof(path_cases) / sizeof(path_cases[0]); i++) {
    const struct path_case *c = &path_cases[i];
    struct smtp_path p;
    size_t end = 0;
    int r = smtp_parse_path(c->in, strlen(c->in), c->flags, &p, &end);
    if (r != c->want)
      fprintf(stderr, "path case %s\n", c->name);
    CHECK_INT(r, c->want);
    if (r == SMTP_PARSE_OK) {
      CHECK_STR(p.addr, c->addr);
      CHECK_INT(end, strlen(c->in));
      CHECK_INT(p.has_utf8, c->utf8);
    }
  }
  /* Length limits. */
  char buf[1000];
  memset(buf, 'a', sizeof(buf));
  buf[0] = '<';
  buf[300] = '@';
  memcpy(buf + 301, "b>", 3);
  struct smtp_path p;
  size_t end;
  CHECK_INT(smtp_parse_path(buf, strlen(buf), 0, &p, &end), SMTP_PARSE_OK);
  memset(buf, 'a', sizeof(buf));
  buf[0] = '<';
  buf[2] = '@';
  memcpy(buf + 3 + 256, ">", 2); /* 256-octet domain */
  CHECK_INT(smtp_parse_path(buf, strlen(buf), 0, &p, &end), SMTP_PARSE_EADDR);
  memset(buf, 'a', sizeof(buf));
  buf[0] = '<';
  buf[400] = '@';
  memcpy(buf + 401, "b>", 3); /* whole address too long */
  CHECK_INT(smtp_parse_path(buf, strlen(buf), 0, &p, &end), SMTP_PARSE_EADDR);
}

static const struct mail_case {
  const char *in;
  int want;
} mail_cases[] = {
    {"FROM:<a@b>", SMTP_PARSE_OK},
    {"from:<>", SMTP_PARSE_OK},
    {"FROM: <a@b>", SMTP_PARSE_OK},
    {"FROM:<a@b>x", SMTP_PARSE_EADDR},
    {"FROM <a@b>", SMTP_PARSE_ESYNTAX},
    {"TO:<a@b>", SMTP_PARSE_ESYNTAX},
    {"FROM:<a@b> SIZE=12 BODY=8bitmime SMTPUTF8 RET=hdrs ENVID=x+2By",
     SMTP_PARSE_OK},
    {"FROM:<a@b> SIZE=", SMTP_PARSE_ESYNTAX},
    {"FROM:<a@b> SIZE=1x", SMTP_PARSE_EVALUE},
    {"FROM:<a@b> SIZE=1 SIZE=2", SMTP_PARSE_EVALUE},
    {"FROM:<a@b> SIZE", SMTP_PARSE_EVALUE},
    {"FROM:<a@b> BODY=7BIT", SMTP_PARSE_OK},
    {"FROM:<a@b> BODY=BINARYMIME", SMTP_PARSE_EVALUE},
    {"FROM:<a@b> SMTPUTF8=yes", SMTP_PARSE_EVALUE},
    {"FROM:<a@b> RET=ALL", SMTP_PARSE_EVALUE},
    {"FROM:<a@b> ENVID=a+2", SMTP_PARSE_EVALUE},
    {"FROM:<a@b> ENVID=a+0A", SMTP_PARSE_EVALUE},
    {"FROM:<a@b> AUTH=<>", SMTP_PARSE_OK},
    {"FROM:<a@b> AUTH=bob+40x", SMTP_PARSE_OK},
    {"FROM:<a@b> XFOO", SMTP_PARSE_EPARAM},
    {"FROM:<a@b> XARRIVAL=1700000000", SMTP_PARSE_OK},
    {"FROM:<a@b> xarrival=1", SMTP_PARSE_OK},
    {"FROM:<a@b> XARRIVAL=0", SMTP_PARSE_EVALUE},
    {"FROM:<a@b> XARRIVAL=", SMTP_PARSE_ESYNTAX},
    {"FROM:<a@b> XARRIVAL", SMTP_PARSE_EVALUE},
    {"FROM:<a@b> XARRIVAL=-5", SMTP_PARSE_EVALUE},
    {"FROM:<a@b> XARRIVAL=12x", SMTP_PARSE_EVALUE},
    {"FROM:<a@b> XARRIVAL=100000000001", SMTP_PARSE_EVALUE},
    {"FROM:<a@b> XARRIVAL=999999999999999999999", SMTP_PARSE_EVALUE},
    {"FROM:<a@b> XARRIVAL=1 XARRIVAL=2", SMTP_PARSE_EVALUE},
    {"FROM:<a@b> =x", SMTP_PARSE_ESYNTAX},
    {"FROM:<a@b> -X=1", SMTP_PARSE_ESYNTAX},
    {"FROM:<a@b> X=a=b", SMTP_PARSE_ESYNTAX},
};

static void test_mail(void) {
  for (size_t i = 0; i < sizeof(mail_cases) / sizeof(mail_cases[0]); i++) {
    struct smtp_path p;
    struct smtp_mail_params mp;
    int r =
        smtp_parse_mail(mail_cases[i].in, strlen(mail_cases[i].in), &p, &mp);
    if (r != mail_cases[i].want)
      fprintf(stderr, "mail case \"%s\": %s\n", mail_cases[i].in,
              smtp_parse_result_name(r));
    CHECK_INT(r, mail_cases[i].want);
  }
  struct smtp_path p;
  struct smtp_mail_params mp;
  const char *in = "FROM:<a@b> SIZE=12 BODY=8bitmime SMTPUTF8 RET=hdrs "
                   "ENVID=x+2By";
  CHECK_INT(smtp_parse_mail(in, strlen(in), &p, &mp), SMTP_PARSE_OK);
  CHECK_INT(mp.has_size, 1);
  CHECK_INT(mp.size, 12);
  CHECK_INT(mp.body, SMTP_BODY_8BITMIME);
  CHECK_INT(mp.smtputf8, 1);
  CHECK_INT(mp.ret, DSN_RET_HDRS);
  CHECK_STR(mp.envid, "x+y");
  CHECK_INT(mp.has_arrival, 0);
  in = "FROM:<a@b> XARRIVAL=1700000000";
  CHECK_INT(smtp_parse_mail(in, strlen(in), &p, &mp), SMTP_PARSE_OK);
  CHECK_INT(mp.has_arrival, 1);
  CHECK(mp.arrival == 1700000000);
  in = "FROM:<> SIZE=999999999999999999999999";
  CHECK_INT(smtp_parse_mail(in, strlen(in), &p, &mp), SMTP_PARSE_OK);
  CHECK(mp.size == UINT64_MAX);
  CHECK_INT(p.is_null, 1);
}

static const struct rcpt_case {
  const char *in;
  int want;
  unsigned notify;
} rcpt_cases[] = {
    {"TO:<a@b>", SMTP_PARSE_OK, 0},
    {"TO:<>", SMTP_PARSE_ENULL, 0},
    {"TO:<postmaster>", SMTP_PARSE_ENODOMAIN, 0},
    {"TO:<a@b> NOTIFY=NEVER", SMTP_PARSE_OK, DSN_NOTIFY_NEVER},
    {"TO:<a@b> NOTIFY=success,Failure,DELAY", SMTP_PARSE_OK,
     DSN_NOTIFY_SUCCESS | DSN_NOTIFY_FAILURE | DSN_NOTIFY_DELAY},
    {"TO:<a@b> NOTIFY=NEVER,SUCCESS", SMTP_PARSE_ENOTIFY, 0},
    {"TO:<a@b> NOTIFY=FAILURE,NEVER", SMTP_PARSE_ENOTIFY, 0},
    {"TO:<a@b> NOTIFY=SUCCESS,SUCCESS", SMTP_PARSE_EVALUE, 0},
    {"TO:<a@b> NOTIFY=SUCCESS,", SMTP_PARSE_EVALUE, 0},
    {"TO:<a@b> NOTIFY=SOMETIMES", SMTP_PARSE_EVALUE, 0},
    {"TO:<a@b> NOTIFY=DELAY NOTIFY=DELAY", SMTP_PARSE_EVALUE, 0},
    {"TO:<a@b> ORCPT=rfc822;a@b", SMTP_PARSE_OK, 0},
    {"TO:<a@b> ORCPT=rfc822", SMTP_PARSE_EVALUE, 0},
    {"TO:<a@b> ORCPT=;a@b", SMTP_PARSE_EVALUE, 0},
    {"TO:<a@b> ORCPT=rfc822;", SMTP_PARSE_EVALUE, 0},
    {"TO:<a@b> ORCPT=rfc822;a+ZZ", SMTP_PARSE_EVALUE, 0},
    {"TO:<a@b> SIZE=1", SMTP_PARSE_EPARAM, 0},
};

static void test_rcpt(void) {
  for (size_t i = 0; i < sizeof(rcpt_cases) / sizeof(rcpt_cases[0]); i++) {
    struct smtp_path p;
    struct smtp_rcpt_params rp;
    int r = smtp_parse_rcpt(rcpt_cases[i].in, strlen(rcpt_cases[i].in),
                            SMTP_PATH_NEED_DOMAIN, &p, &rp);
    if (r != rcpt_cases[i].want)
      fprintf(stderr, "rcpt case \"%s\": %s\n", rcpt_cases[i].in,
              smtp_parse_result_name(r));
    CHECK_INT(r, rcpt_cases[i].want);
    if (r == SMTP_PARSE_OK)
      CHECK_INT(rp.notify, rcpt_cases[i].notify);
  }
  struct smtp_path p;
  struct smtp_rcpt_params rp;
  const char *in = "TO:<x@y> ORCPT=rfc822;Bob+2Bx+40example.org";
  CHECK_INT(smtp_parse_rcpt(in, strlen(in), 0, &p, &rp), SMTP_PARSE_OK);
  CHECK_STR(rp.orcpt_type, "rfc822");
  CHECK_STR(rp.orcpt_addr, "Bob+x@example.org");
}

static void test_xtext(void) {
  char out[64];
  CHECK_INT(smtp_xtext_decode(out, sizeof(out), "a+2Bb+3D", 8), 4);
  CHECK_STR(out, "a+b=");
  CHECK_INT(smtp_xtext_decode(out, sizeof(out), "a=b", 3), -1);
  CHECK_INT(smtp_xtext_decode(out, sizeof(out), "a b", 3), -1);
  CHECK_INT(smtp_xtext_decode(out, sizeof(out), "+2", 2), -1);
  CHECK_INT(smtp_xtext_decode(out, sizeof(out), "+G0", 3), -1);
  CHECK_INT(smtp_xtext_decode(out, sizeof(out), "+00", 3), -1);
  CHECK_INT(smtp_xtext_decode(out, 3, "abc", 3), -1);
  CHECK_INT(smtp_xtext_decode(out, 4, "abc", 3), 3);
  CHECK_INT(smtp_xtext_encode(out, sizeof(out), "a+b= c", 6), 12);
  CHECK_STR(out, "a+2Bb+3D+20c");
  char back[64];
  CHECK_INT(smtp_xtext_decode(back, sizeof(back), out, strlen(out)), 6);
  CHECK_STR(back, "a+b= c");
  CHECK_INT(smtp_xtext_encode(out, 4, "a+", 2), -1);
}

static void test_base64(void) {
  unsigned char out[64];
  CHECK_INT(smtp_base64_decode(out, sizeof(out), "AGJvYgBzZWNyZXQ=", 16), 11);
  CHECK(memcmp(out, "\0bob\0secret", 11) == 0);
  CHECK_INT(smtp_base64_decode(out, sizeof(out), "Ym9i", 4), 3);
  CHECK_INT(smtp_base64_decode(out, sizeof(out), "Ym9", 3), 2); /* unpadded */
  CHECK_INT(smtp_base64_decode(out, sizeof(out), "", 0), 0);
  CHECK_INT(smtp_base64_decode(out, sizeof(out), "Y", 1), -1);
  CHECK_INT(smtp_base64_decode(out, sizeof(out), "Ym9=i", 5), -1);
  CHECK_INT(smtp_base64_decode(out, sizeof(out), "Ym 9i", 5), -1);
  CHECK_INT(smtp_base64_decode(out, sizeof(out), "Ym9=", 4), 2);
  CHECK_INT(smtp_base64_decode(out, sizeof(out), "Ym===", 5), -1);
  CHECK_INT(smtp_base64_decode(out, 2, "Ym9i", 4), -1);
}

int main(void) {
  test_verbs();
  test_paths();
  test_mail();
  test_rcpt();
  test_xtext();
  test_base64();
  return check_result("test_smtp_parse");
}
