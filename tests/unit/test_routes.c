/* test_routes: the routes_file parser and matcher (proto/routes.h,
 * CONTRACT §4a): the contract's example, precedence, defaults per route,
 * the §2 rules per route, and FILE:LINE errors. */
#include "proto/routes.h"

#include "check.h"

static int parse(const char *text, struct routes *rs, char *err) {
  return routes_parse("r.txt", text, strlen(text), rs, err, 512);
}

static void test_contract_example(void) {
  const char *t =
      "# routes\n"
      "\n"
      "recipient:@partner.example   relayhost=[192.0.2.10]:25 "
      "relayhost_tls=none\n"
      "sender:alerts@ops.example    relayhost=mx\n"
      "sender:@billing.example      relayhost=[smtp.provider.example]:587 "
      "relayhost_user=billing@billing.example "
      "relayhost_password_file=/run/secrets/billing\n";
  struct routes rs;
  char err[512] = "";
  CHECK_INT(parse(t, &rs, err), 0);
  CHECK_STR(err, "");
  CHECK_INT(rs.n, 3);
  CHECK_INT(rs.r[0].kind, ROUTE_RECIPIENT_DOMAIN);
  CHECK_STR(rs.r[0].match, "partner.example");
  CHECK_INT(rs.r[0].line, 3);
  CHECK_INT(rs.r[0].n_hosts, 1);
  CHECK_STR(rs.r[0].hosts[0].host, "192.0.2.10");
  CHECK_INT(rs.r[0].hosts[0].port, 25);
  CHECK_INT(rs.r[0].hosts[0].mx_lookup, 0);
  CHECK_INT(rs.r[0].tls, ROUTE_TLS_NONE);
  CHECK_STR(rs.r[0].key, "[192.0.2.10]:25");
  CHECK_INT(rs.r[1].kind, ROUTE_SENDER_ADDRESS);
  CHECK_INT(rs.r[1].n_hosts, 0);
  CHECK_STR(rs.r[1].key, "");
  CHECK_INT(rs.r[2].kind, ROUTE_SENDER_DOMAIN);
  CHECK_STR(rs.r[2].user, "billing@billing.example");
  CHECK_STR(rs.r[2].password_file, "/run/secrets/billing");
  /* left out: built-in defaults */
  CHECK_INT(rs.r[2].tls, ROUTE_TLS_STARTTLS);
  CHECK_INT(rs.r[2].auth, ROUTE_AUTH_AUTO);
  CHECK_INT(rs.r[2].auth_plaintext, 0);
  CHECK_INT(rs.r[2].rate_n, 0);
  CHECK_STR(rs.r[2].key, "[smtp.provider.example]:587");

  /* matching */
  CHECK(routes_match(&rs, "a@x.example", "partner.example") == &rs.r[0]);
  CHECK(routes_match(&rs, "alerts@ops.example", "partner.example") ==
        &rs.r[0]); /* recipient route wins */
  CHECK(routes_match(&rs, "alerts@ops.example", "y.example") == &rs.r[1]);
  CHECK(routes_match(&rs, "ALERTS@Ops.Example", "y.example") == &rs.r[1]);
  CHECK(routes_match(&rs, "other@ops.example", "y.example") == NULL);
  CHECK(routes_match(&rs, "a@billing.example", "y.example") == &rs.r[2]);
  CHECK(routes_match(&rs, "a@BILLING.example", "PARTNER.example") == &rs.r[0]);
  CHECK(routes_match(&rs, "", "y.example") == NULL);
  CHECK(routes_match(&rs, "a@sub.billing.example", "y.example") == NULL);
  routes_free(&rs);
}

static void test_precedence(void) {
  const char *t = "sender:@d.example relayhost=[one.example]:25\n"
                  "sender:a@d.example relayhost=[two.example]:25\n"
                  "sender:a@d.example relayhost=[three.example]:25\n"
                  "sender:@d.example relayhost=[four.example]:25\n"
                  "recipient:@r.example relayhost=[five.example]:25\n"
                  "recipient:@R.example relayhost=[six.example]:25\n";
  struct routes rs;
  char err[512];
  CHECK_INT(parse(t, &rs, err), 0);
  /* exact address over domain, though the domain line comes first */
  CHECK(routes_match(&rs, "a@d.example", "x.example") == &rs.r[1]);
  /* first line among equals */
  CHECK(routes_match(&rs, "b@d.example", "x.example") == &rs.r[0]);
  CHECK(routes_match(&rs, "a@d.example", "r.example") == &rs.r[4]);
  CHECK(routes_match(&rs, "a@d.example", "R.EXAMPLE") == &rs.r[4]);
  routes_free(&rs);
}

static void test_settings(void) {
  const char *t =
      "recipient:@a.example relayhost=a.example:2525,[b.example] "
      "relayhost_auth=xoauth2 relayhost_tls=implicit rate=30/1m "
      "relayhost_user=u relayhost_password_file=/p # comment\n"
      "recipient:@b.example relayhost=a.example:2525,[b.example]:25 "
      "relayhost_auth=xoauth2 relayhost_tls=implicit rate=30/60s "
      "relayhost_user=u relayhost_password_file=/p\n"
      "recipient:@c.example relayhost=a.example:2525,[b.example]:25 "
      "relayhost_tls=opportunistic relayhost_auth_plaintext=yes "
      "relayhost_user=v relayhost_password_file=/q\n"
      "\trecipient:@d.example\trelayhost=MX\trate=5/2h\n"
      "recipient:@f.example relayhost=mx rate=3/300ms\n"
      "recipient:@e.example\n";
  struct routes rs;
  char err[512] = "";
  CHECK_INT(parse(t, &rs, err), 0);
  CHECK_STR(err, "");
  CHECK_INT(rs.n, 6);
  CHECK_INT(rs.r[0].n_hosts, 2);
  CHECK_INT(rs.r[0].hosts[0].mx_lookup, 1);
  CHECK_INT(rs.r[0].hosts[0].port, 2525);
  CHECK_INT(rs.r[0].hosts[1].port, 25);
  CHECK_INT(rs.r[0].auth, ROUTE_AUTH_XOAUTH2);
  CHECK_INT(rs.r[0].tls, ROUTE_TLS_IMPLICIT);
  CHECK_INT(rs.r[0].rate_n, 30);
  CHECK_INT(rs.r[0].rate_window_ms, 60000);
  CHECK_STR(rs.r[0].key, "a.example:2525,[b.example]:25");
  /* the same target with the same settings: one destination */
  CHECK_STR(rs.r[1].key, "a.example:2525,[b.example]:25");
  /* the same target with other credentials: a destination of its own */
  CHECK_STR(rs.r[2].key, "a.example:2525,[b.example]:25#3");
  CHECK_INT(rs.r[2].auth_plaintext, 1);
  CHECK_INT(rs.r[3].n_hosts, 0);
  CHECK_INT(rs.r[3].rate_window_ms, 7200000);
  CHECK_INT(rs.r[4].rate_n, 3); /* milliseconds, as destination_rate */
  CHECK_INT(rs.r[4].rate_window_ms, 300);
  CHECK_INT(rs.r[5].n_hosts, 0); /* no relayhost: the default, MX */
  routes_free(&rs);
}

static void test_errors(void) {
  static const struct {
    const char *text, *msg;
  } bad[] = {
      {"recipient:partner.example relayhost=mx\n",
       "r.txt:1: 'recipient:partner.example': a recipient route is "
       "recipient:@DOMAIN"},
      {"# c\nfrom:@x.example relayhost=mx\n", "r.txt:2: "},
      {"sender:@x.example relayhost=mx\nsender:@y.example bogus=1\n",
       "r.txt:2: 'bogus': not a route setting"},
      {"sender:@x.example relayhost\n", "r.txt:1: 'relayhost': expected"},
      {"sender:@x.example relayhost=mx relayhost=mx\n",
       "r.txt:1: relayhost: given twice"},
      {"sender:@x.example relayhost=[h.example]:25 relayhost_password=s\n",
       "r.txt:1: relayhost_password: not allowed"},
      {"sender:@x.example relayhost=[h.example]:25 relayhost_user=u\n",
       "r.txt:1: relayhost_password_file: required"},
      {"sender:@x.example relayhost=[h.example]:25 "
       "relayhost_password_file=/p\n",
       "r.txt:1: relayhost_user: required"},
      {"sender:@x.example relayhost=mx relayhost_user=u "
       "relayhost_password_file=/p\n",
       "r.txt:1: relayhost_user: credentials need a relayhost"},
      {"sender:@x.example relayhost=[h.example]:25 relayhost_tls=none "
       "relayhost_user=u relayhost_password_file=/p\n",
       "r.txt:1: relayhost_tls: credentials would be sent without verified"},
      {"sender:@x.example relayhost=[h.example]:25 "
       "relayhost_tls=opportunistic relayhost_user=u "
       "relayhost_password_file=/p\n",
       "r.txt:1: relayhost_tls: credentials would be sent"},
      {"sender:@x.example relayhost=[h.example]:0\n", "r.txt:1: relayhost:"},
      {"sender:@x.example relayhost=[h.example\n", "missing ']'"},
      {"sender:@x.example relayhost_tls=bogus\n", "r.txt:1: relayhost_tls:"},
      {"sender:@x.example relayhost=[h.example]:25 relayhost_auth=cram\n",
       "r.txt:1: relayhost_auth:"},
      {"sender:@x.example rate=30\n", "r.txt:1: rate:"},
      {"sender:@x.example rate=0/1m\n", "r.txt:1: rate:"},
      {"sender:@x.example rate=5/1w\n", "r.txt:1: rate:"},
      /* one grammar and the same bounds as destination_rate (proto/rate):
       * the scheduler would refuse more than 100000 starts per window */
      {"sender:@x.example relayhost=[h.example]:25 rate=200000/1m\n",
       "r.txt:1: rate: '200000/1m': N must be a number from 1 to 100000"},
      {"sender:@x.example relayhost=[h.example]:25 rate=5/8d\n", "at most 7d"},
      {"sender:@x.example relayhost=mx rate=10/1m\n",
       "r.txt:1: rate: a sender route by MX"},
      {"sender:@x.example relayhost_tls=none\n",
       "r.txt:1: relayhost_tls, relayhost_auth"},
      {"sender:x.example relayhost=mx\n", "r.txt:1: 'sender:x.example'"},
      {"sender:@ relayhost=mx\n", "r.txt:1:"},
      {"recipient:@a b\n", "r.txt:1: 'b': expected key=value"},
      {"sender:@x.example relayhost_auth_plaintext=maybe\n", "r.txt:1:"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    struct routes rs;
    char err[512] = "";
    int rc = parse(bad[i].text, &rs, err);
    CHECK_INT(rc, -1);
    CHECK_CONTAINS(err, bad[i].msg);
    CHECK(rs.n == 0 && rs.r == NULL);
  }
  /* A NUL byte and an overlong line. */
  struct routes rs;
  char err[512];
  CHECK_INT(routes_parse("r.txt", "sender:@x\0y relayhost=mx\n", 25, &rs, err,
                         sizeof err),
            -1);
  CHECK_CONTAINS(err, "r.txt:1: NUL");
  char *big = malloc(ROUTES_LINE_MAX + 10);
  memset(big, 'a', ROUTES_LINE_MAX + 9);
  big[ROUTES_LINE_MAX + 9] = '\0';
  CHECK_INT(routes_parse("r.txt", big, strlen(big), &rs, err, sizeof err), -1);
  CHECK_CONTAINS(err, "r.txt:1: line longer");
  free(big);
}

/* What an operator's name covers (suspend, CONTRACT §1): canonical keys
 * (host names in lower case, "#LINE" for the same list with other
 * settings), routes_dest_canon/_covers/_is_domain. */
static void test_dest_names(void) {
  const char *t = "recipient:@a.test relayhost=[MX.A.TEST]:587\n"
                  "recipient:@b.test relayhost=[mx.a.test]:587 "
                  "relayhost_tls=none\n"
                  "recipient:@c.test relayhost=[Mx.A.Test]:587 "
                  "relayhost_tls=none\n"
                  "recipient:@d.test relayhost=Smart.Test:2525,[192.0.2.1]\n";
  struct routes rs;
  char err[512] = "";
  CHECK_INT(parse(t, &rs, err), 0);
  CHECK_STR(rs.r[0].key, "[mx.a.test]:587");
  CHECK_STR(rs.r[0].hosts[0].host, "MX.A.TEST"); /* connects as written */
  CHECK_STR(rs.r[1].key, "[mx.a.test]:587#2");
  CHECK_STR(rs.r[2].key, "[mx.a.test]:587#2"); /* same as line 2's */
  CHECK_STR(rs.r[3].key, "smart.test:2525,[192.0.2.1]:25");

  char c[300];
  CHECK_INT(routes_dest_canon("[MX.a.Test]:587", c, sizeof c), 0);
  CHECK_STR(c, "[mx.a.test]:587");
  CHECK_INT(routes_dest_canon("", c, sizeof c), -1);
  CHECK_INT(routes_dest_canon("a b", c, sizeof c), -1);
  CHECK_INT(routes_dest_canon("a\tb", c, sizeof c), -1);
  CHECK_INT(routes_dest_canon("abcdef", c, 4), -1);

  const struct route_host *h0 = rs.r[0].hosts, *h3 = rs.r[3].hosts;
  CHECK_INT(routes_dest_covers("[mx.a.test]:587", h0, 1), 1);
  CHECK_INT(routes_dest_covers("[mx.a.test]", h0, 1), 1); /* any port */
  CHECK_INT(routes_dest_covers("[mx.a.test]:25", h0, 1), 0);
  CHECK_INT(routes_dest_covers("mx.a.test:587", h0, 1), 0); /* MX lookup */
  CHECK_INT(routes_dest_covers("mx.a.test", h0, 1), 0);
  CHECK_INT(routes_dest_covers("[mx.a.test]:587#2", h0, 1), 0);
  CHECK_INT(routes_dest_covers("smart.test:2525", h3, 2), 1);
  CHECK_INT(routes_dest_covers("smart.test", h3, 2), 1);
  CHECK_INT(routes_dest_covers("[smart.test]", h3, 2), 0);
  CHECK_INT(routes_dest_covers("[192.0.2.1]:25", h3, 2), 1);
  CHECK_INT(routes_dest_covers("[192.0.2.1]", h3, 2), 1);
  CHECK_INT(routes_dest_covers("smart.test:2525,[192.0.2.1]:25", h3, 2), 1);
  CHECK_INT(routes_dest_covers("smart.test:2525,[192.0.2.1]", h3, 2), 1);
  CHECK_INT(routes_dest_covers("[192.0.2.1]:25,smart.test:2525", h3, 2), 0);
  CHECK_INT(routes_dest_covers("", h3, 2), 0);
  CHECK_INT(routes_dest_covers("smart.test:2525", h3, 0), 0);

  CHECK_INT(routes_dest_is_domain("example.com"), 1);
  CHECK_INT(routes_dest_is_domain("xn--bcher-kva.example"), 1);
  CHECK_INT(routes_dest_is_domain("b\xc3\xbc"
                                  "cher.example"),
            1);
  CHECK_INT(routes_dest_is_domain("localhost"), 1);
  CHECK_INT(routes_dest_is_domain("[192.0.2.1]"), 1);
  CHECK_INT(routes_dest_is_domain("[ipv6:2001:db8::1]"), 1);
  CHECK_INT(routes_dest_is_domain("[192.0.2.1]:25"), 0);
  CHECK_INT(routes_dest_is_domain("[x.test]"), 0);
  CHECK_INT(routes_dest_is_domain("-x.test"), 0);
  CHECK_INT(routes_dest_is_domain("x-.test"), 0);
  CHECK_INT(routes_dest_is_domain("x..test"), 0);
  CHECK_INT(routes_dest_is_domain(".x.test"), 0);
  CHECK_INT(routes_dest_is_domain("x.test."), 0);
  CHECK_INT(routes_dest_is_domain("x.test:25"), 0);
  CHECK_INT(routes_dest_is_domain("a@x.test"), 0);
  CHECK_INT(routes_dest_is_domain("X.test"), 0); /* canonical: lower case */
  CHECK_INT(routes_dest_is_domain(""), 0);
  char big[300];
  memset(big, 'a', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  CHECK_INT(routes_dest_is_domain(big), 0);
  routes_free(&rs);
}

static void test_peer(void) {
  struct route_host h;
  CHECK_INT(routes_parse_peer("peer.example:2525", &h), 0);
  CHECK_STR(h.host, "peer.example");
  CHECK_INT(h.port, 2525);
  CHECK_INT(h.mx_lookup, 0);
  CHECK_INT(routes_parse_peer(":25", &h), 0);
  CHECK_STR(h.host, "127.0.0.1");
  CHECK_INT(h.port, 25);
  CHECK_INT(routes_parse_peer("[::1]:587", &h), 0);
  CHECK_STR(h.host, "::1");
  CHECK_INT(h.port, 587);
  CHECK_INT(routes_parse_peer("10.0.0.7:25", &h), 0);
  CHECK_STR(h.host, "10.0.0.7");
  static const char *const bad[] = {
      "",           "peer",     "peer:",  "peer:0",
      "peer:65536", "peer:25x", "::1:25", "[::1]",
      "[::1]25",    "[]:25",    "a b:25", "peer:-1",
      "x@y:25",     "[a]b]:25", ":",      "peer:99999999999999999999"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (routes_parse_peer(bad[i], &h) != -1)
      fprintf(stderr, "accepted: '%s'\n", bad[i]);
    CHECK_INT(routes_parse_peer(bad[i], &h), -1);
  }
}

int main(void) {
  test_peer();
  test_contract_example();
  test_precedence();
  test_settings();
  test_errors();
  test_dest_names();
  return check_result("test_routes");
}
