/*
 * test_mx: the pure DNS parts: MX ordering and candidate selection
 * (dns/mx.c) and answer checking (dns/dns_answer.c), table-driven.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>

#include <ldns/ldns.h>

#include "check.h"
#include "dns/dns_answer.h"
#include "dns/mx.h"

/* A scripted random source: returns seq[i++ % n]. */
struct script {
  const uint32_t *seq;
  int n, i;
};
static uint32_t scripted(void *ctx) {
  struct script *s = ctx;
  return s->seq[s->i++ % s->n];
}

static struct dns_rr mxrr(uint16_t pref, const char *name) {
  struct dns_rr r;
  memset(&r, 0, sizeof r);
  r.type = DNS_TYPE_MX;
  r.pref = pref;
  snprintf(r.name, sizeof r.name, "%s", name);
  return r;
}

static void test_order_by_preference(void) {
  struct dns_rr rr[] = {mxrr(30, "c.test"), mxrr(10, "A.test."),
                        mxrr(20, "b.test")};
  struct mx_host h[MX_MAX_HOSTS];
  struct mx_result r;
  uint32_t zero = 0;
  struct script s = {&zero, 1, 0};
  CHECK_INT(mx_order("x.test", rr, 3, scripted, &s, h, &r), 3);
  CHECK_STR(h[0].name, "a.test");
  CHECK_STR(h[1].name, "b.test");
  CHECK_STR(h[2].name, "c.test");
}

static void test_equal_preferences_shuffled(void) {
  struct dns_rr rr[] = {mxrr(10, "a.test"), mxrr(10, "b.test"),
                        mxrr(5, "first.test")};
  struct mx_host h[MX_MAX_HOSTS];
  struct mx_result r;
  int seen_ab = 0, seen_ba = 0;
  for (uint32_t v = 0; v < 4; v++) {
    struct script s = {&v, 1, 0};
    CHECK_INT(mx_order("x.test", rr, 3, scripted, &s, h, &r), 3);
    CHECK_STR(h[0].name, "first.test");
    if (strcmp(h[1].name, "a.test") == 0)
      seen_ab++;
    else
      seen_ba++;
  }
  CHECK(seen_ab > 0);
  CHECK(seen_ba > 0);
}

static void test_null_mx(void) {
  struct dns_rr rr[] = {mxrr(0, ".")};
  struct mx_host h[MX_MAX_HOSTS];
  struct mx_result r;
  uint32_t zero = 0;
  struct script s = {&zero, 1, 0};
  CHECK_INT(mx_order("n.test", rr, 1, scripted, &s, h, &r), 0);
  CHECK_INT(r.status, DNS_PERMFAIL);
  CHECK_STR(r.dsn, "5.1.10");
  CHECK_CONTAINS(r.reason, "null MX");
  /* "." among real MX records is ignored. */
  struct dns_rr mixed[] = {mxrr(0, "."), mxrr(10, "mx.test")};
  CHECK_INT(mx_order("n.test", mixed, 2, scripted, &s, h, &r), 1);
  CHECK_STR(h[0].name, "mx.test");
}

static void test_bad_and_duplicate_names(void) {
  struct dns_rr rr[] = {mxrr(10, "bad name.test"), mxrr(20, "mx.test"),
                        mxrr(5, "MX.test"), mxrr(7, "192.0.2.1")};
  struct mx_host h[MX_MAX_HOSTS];
  struct mx_result r;
  uint32_t zero = 0;
  struct script s = {&zero, 1, 0};
  CHECK_INT(mx_order("d.test", rr, 4, scripted, &s, h, &r), 2);
  CHECK_STR(h[0].name, "mx.test");
  CHECK_INT(h[0].pref, 5);
  CHECK_STR(h[1].name, "192.0.2.1");
  struct dns_rr only_bad[] = {mxrr(10, "bad\\032name")};
  CHECK_INT(mx_order("d.test", only_bad, 1, scripted, &s, h, &r), 0);
  CHECK_STR(r.dsn, "5.4.4");
}

static struct mx_host host(const char *name, uint16_t pref, const char *a1,
                           const char *a2) {
  struct mx_host h;
  memset(&h, 0, sizeof h);
  snprintf(h.name, sizeof h.name, "%s", name);
  h.pref = pref;
  const char *as[] = {a1, a2};
  for (int i = 0; i < 2; i++) {
    if (!as[i])
      continue;
    CHECK(mx_parse_ip(as[i], &h.addr[h.n_addr]));
    h.n_addr++;
  }
  h.addr_status = h.n_addr ? DNS_R_OK : DNS_R_NXDOMAIN;
  return h;
}

static struct sockaddr_storage sa(const char *ip, uint16_t port) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  if (strchr(ip, ':')) {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(port);
    inet_pton(AF_INET6, ip, &s6->sin6_addr);
  } else {
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    s4->sin_family = AF_INET;
    s4->sin_port = htons(port);
    inet_pton(AF_INET, ip, &s4->sin_addr);
  }
  return ss;
}

static void test_build_aaaa_then_a_and_cap(void) {
  struct mx_host h[4] = {
      host("mx1.test", 10, "192.0.2.1", "2001:db8::1"),
      host("mx2.test", 20, "192.0.2.2", "192.0.2.3"),
      host("mx3.test", 30, "192.0.2.4", "192.0.2.5"),
      host("mx4.test", 40, "192.0.2.6", NULL),
  };
  struct mx_result r;
  mx_build("x.test", h, 4, 25, NULL, 0, 0, &r);
  CHECK_INT(r.status, DNS_OK);
  CHECK_INT(r.n, MX_MAX_CANDIDATES);
  char buf[300];
  mx_candidate_format(&r.c[0], buf, sizeof buf);
  CHECK_STR(buf, "mx1.test[2001:db8::1]:25");
  mx_candidate_format(&r.c[1], buf, sizeof buf);
  CHECK_STR(buf, "mx1.test[192.0.2.1]:25");
  mx_candidate_format(&r.c[4], buf, sizeof buf);
  CHECK_STR(buf, "mx3.test[192.0.2.4]:25");
  mx_build("x.test", h, 4, 25, NULL, 0, 2, &r);
  CHECK_INT(r.n, 2);
  /* A host's CNAME expansion (the TLSA base domain, RFC 7672 §2.2.2)
   * reaches its candidates only when its addresses were secure. */
  snprintf(h[0].expanded, sizeof h[0].expanded, "%s", "target.test");
  h[0].secure = 1;
  snprintf(h[1].expanded, sizeof h[1].expanded, "%s", "other.test");
  h[1].secure = 0;
  mx_build("x.test", h, 4, 25, NULL, 0, 0, &r);
  CHECK_STR(r.c[0].expanded, "target.test");
  CHECK_STR(r.c[1].expanded, "target.test");
  CHECK_INT(r.c[1].secure, 1);
  CHECK_STR(r.c[2].expanded, "");
  CHECK_STR(r.c[4].expanded, "");
}

static void test_build_loop(void) {
  struct mx_host h[3] = {
      host("me.test", 10, "127.0.0.1", NULL),
      host("peer.test", 10, "127.0.0.2", NULL),
      host("backup.test", 20, "127.0.0.3", NULL),
  };
  struct sockaddr_storage self[] = {sa("127.0.0.1", 2525)};
  struct mx_result r;
  mx_build("l.test", h, 3, 2525, self, 1, 0, &r);
  CHECK_INT(r.status, DNS_PERMFAIL);
  CHECK_INT(r.loop, 1);
  CHECK_STR(r.dsn, "5.4.6");
  /* Same address, other port: not us. */
  mx_build("l.test", h, 3, 25, self, 1, 0, &r);
  CHECK_INT(r.status, DNS_OK);
  CHECK_INT(r.n, 3);
  /* We are the backup: only the better hosts stay. */
  struct mx_host h2[3] = {
      host("best.test", 5, "127.0.0.2", NULL),
      host("me.test", 10, "127.0.0.1", NULL),
      host("worse.test", 20, "127.0.0.3", NULL),
  };
  mx_build("l.test", h2, 3, 2525, self, 1, 0, &r);
  CHECK_INT(r.status, DNS_OK);
  CHECK_INT(r.n, 1);
  CHECK_STR(r.c[0].host, "best.test");
}

static void test_build_no_address(void) {
  struct mx_host h[2] = {host("gone.test", 10, NULL, NULL),
                         host("gone2.test", 20, NULL, NULL)};
  struct mx_result r;
  mx_build("n.test", h, 2, 25, NULL, 0, 0, &r);
  CHECK_INT(r.status, DNS_PERMFAIL);
  CHECK_STR(r.dsn, "5.4.4");
  h[1].addr_status = DNS_R_TEMPFAIL;
  mx_build("n.test", h, 2, 25, NULL, 0, 0, &r);
  CHECK_INT(r.status, DNS_TEMPFAIL);
  CHECK_STR(r.dsn, "4.4.3");
}

static void test_parse_ip(void) {
  struct mx_addr a;
  CHECK(mx_parse_ip("[127.0.0.1]", &a) && a.family == AF_INET);
  CHECK(mx_parse_ip("[IPv6:::1]", &a) && a.family == AF_INET6);
  CHECK(mx_parse_ip("::1", &a) && a.family == AF_INET6);
  CHECK(!mx_parse_ip("mx.test", &a));
  CHECK(!mx_parse_ip("[]", &a));
  CHECK(!mx_parse_ip("", &a));
}

static void test_name_normalize(void) {
  char out[DNS_NAME_MAX + 2];
  CHECK_INT(dns_name_normalize("Mx.Example.TEST.", out, sizeof out), 0);
  CHECK_STR(out, "mx.example.test");
  CHECK(dns_name_normalize(".", out, sizeof out) < 0);
  CHECK(dns_name_normalize("a..b", out, sizeof out) < 0);
  CHECK(dns_name_normalize("a b", out, sizeof out) < 0);
  char long_label[80];
  memset(long_label, 'a', 64);
  long_label[64] = '\0';
  CHECK(dns_name_normalize(long_label, out, sizeof out) < 0);
}

/* ---- dns_answer ------------------------------------------------------- */

/* Builds a response with ldns: answer and authority given as zone lines. */
static size_t make_answer(uint8_t *buf, size_t cap, uint16_t id,
                          const char *qname, ldns_rr_type qtype, int rcode,
                          int tc, const char **ans, const char **auth) {
  ldns_pkt *p = ldns_pkt_query_new(ldns_dname_new_frm_str(qname), qtype,
                                   LDNS_RR_CLASS_IN, LDNS_RD);
  ldns_pkt_set_id(p, id);
  ldns_pkt_set_qr(p, 1);
  ldns_pkt_set_tc(p, tc);
  ldns_pkt_set_rcode(p, (uint8_t)rcode);
  for (int i = 0; ans && ans[i]; i++) {
    ldns_rr *rr = NULL;
    CHECK_INT(ldns_rr_new_frm_str(&rr, ans[i], 0, NULL, NULL), LDNS_STATUS_OK);
    ldns_pkt_push_rr(p, LDNS_SECTION_ANSWER, rr);
  }
  for (int i = 0; auth && auth[i]; i++) {
    ldns_rr *rr = NULL;
    CHECK_INT(ldns_rr_new_frm_str(&rr, auth[i], 0, NULL, NULL), LDNS_STATUS_OK);
    ldns_pkt_push_rr(p, LDNS_SECTION_AUTHORITY, rr);
  }
  uint8_t *wire = NULL;
  size_t n = 0;
  CHECK_INT(ldns_pkt2wire(&wire, p, &n), LDNS_STATUS_OK);
  ldns_pkt_free(p);
  if (n > cap)
    n = cap;
  memcpy(buf, wire, n);
  free(wire);
  return n;
}

static const char *SOA =
    "test. 600 IN SOA ns.test. host.test. 1 3600 600 86400 120";

static void test_answer_mx(void) {
  uint8_t b[4096];
  struct dns_rrset rs;
  const char *ans[] = {"A.test. 300 IN MX 20 mx2.a.test.",
                       "a.test. 100 IN MX 10 MX1.a.test.",
                       "other.test. 1 IN MX 1 evil.test.", NULL};
  size_t n =
      make_answer(b, sizeof b, 7, "a.TEST.", LDNS_RR_TYPE_MX, 0, 0, ans, NULL);
  CHECK_INT(dns_answer_parse(b, n, 7, "a.test", DNS_TYPE_MX, &rs),
            DNS_CHECK_OK);
  CHECK_INT(rs.status, DNS_R_OK);
  CHECK_INT(rs.n, 2);
  CHECK_INT(rs.ttl, 100);
  CHECK_STR(rs.rr[1].name, "mx1.a.test");
  CHECK_INT(rs.rr[1].pref, 10);
}

static void test_answer_mismatch_ignored(void) {
  uint8_t b[4096];
  struct dns_rrset rs;
  const char *ans[] = {"a.test. 300 IN A 127.0.0.1", NULL};
  size_t n =
      make_answer(b, sizeof b, 7, "a.test.", LDNS_RR_TYPE_A, 0, 0, ans, NULL);
  CHECK_INT(dns_answer_parse(b, n, 8, "a.test", DNS_TYPE_A, &rs),
            DNS_CHECK_IGNORE); /* wrong ID */
  CHECK_INT(dns_answer_parse(b, n, 7, "b.test", DNS_TYPE_A, &rs),
            DNS_CHECK_IGNORE); /* other name */
  CHECK_INT(dns_answer_parse(b, n, 7, "a.test", DNS_TYPE_AAAA, &rs),
            DNS_CHECK_IGNORE); /* other type */
  CHECK_INT(dns_answer_parse(b, n - 3, 7, "a.test", DNS_TYPE_A, &rs),
            DNS_CHECK_IGNORE); /* truncated record */
  CHECK_INT(dns_answer_parse(b, 5, 7, "a.test", DNS_TYPE_A, &rs),
            DNS_CHECK_IGNORE); /* short header */
  b[2] &= 0x7f;                /* a query, not a response */
  CHECK_INT(dns_answer_parse(b, n, 7, "a.test", DNS_TYPE_A, &rs),
            DNS_CHECK_IGNORE);
  /* A compression pointer pointing at itself. */
  uint8_t loop[] = {0, 7, 0x81, 0x80, 0,  1, 0, 0, 0,
                    0, 0, 0,    0xc0, 12, 0, 1, 0, 1};
  CHECK_INT(dns_answer_parse(loop, sizeof loop, 7, "a.test", DNS_TYPE_A, &rs),
            DNS_CHECK_IGNORE);
}

static void test_answer_rcodes(void) {
  uint8_t b[4096];
  struct dns_rrset rs;
  const char *auth[] = {SOA, NULL};
  size_t n = make_answer(b, sizeof b, 1, "nx.test.", LDNS_RR_TYPE_MX,
                         LDNS_RCODE_NXDOMAIN, 0, NULL, auth);
  CHECK_INT(dns_answer_parse(b, n, 1, "nx.test", DNS_TYPE_MX, &rs),
            DNS_CHECK_OK);
  CHECK_INT(rs.status, DNS_R_NXDOMAIN);
  CHECK_INT(rs.ttl, 120); /* min(SOA TTL 600, MINIMUM 120) */
  n = make_answer(b, sizeof b, 1, "nd.test.", LDNS_RR_TYPE_MX, 0, 0, NULL,
                  auth);
  CHECK_INT(dns_answer_parse(b, n, 1, "nd.test", DNS_TYPE_MX, &rs),
            DNS_CHECK_OK);
  CHECK_INT(rs.status, DNS_R_NODATA);
  n = make_answer(b, sizeof b, 1, "sf.test.", LDNS_RR_TYPE_MX,
                  LDNS_RCODE_SERVFAIL, 0, NULL, NULL);
  CHECK_INT(dns_answer_parse(b, n, 1, "sf.test", DNS_TYPE_MX, &rs),
            DNS_CHECK_OK);
  CHECK_INT(rs.status, DNS_R_TEMPFAIL);
  CHECK_STR(rs.reason, "SERVFAIL");
  n = make_answer(b, sizeof b, 1, "rf.test.", LDNS_RR_TYPE_MX,
                  LDNS_RCODE_REFUSED, 0, NULL, NULL);
  CHECK_INT(dns_answer_parse(b, n, 1, "rf.test", DNS_TYPE_MX, &rs),
            DNS_CHECK_OK);
  CHECK_STR(rs.reason, "REFUSED");
  n = make_answer(b, sizeof b, 1, "tc.test.", LDNS_RR_TYPE_MX, 0, 1, NULL,
                  NULL);
  CHECK_INT(dns_answer_parse(b, n, 1, "tc.test", DNS_TYPE_MX, &rs),
            DNS_CHECK_TRUNCATED);
}

static void test_answer_cname(void) {
  uint8_t b[4096];
  struct dns_rrset rs;
  const char *chain[] = {"a.test. 50 IN CNAME b.test.",
                         "b.test. 300 IN CNAME c.test.",
                         "c.test. 300 IN A 192.0.2.9", NULL};
  size_t n =
      make_answer(b, sizeof b, 3, "a.test.", LDNS_RR_TYPE_A, 0, 0, chain, NULL);
  CHECK_INT(dns_answer_parse(b, n, 3, "a.test", DNS_TYPE_A, &rs), DNS_CHECK_OK);
  CHECK_INT(rs.status, DNS_R_OK);
  CHECK_INT(rs.n, 1);
  CHECK_INT(rs.ttl, 50);
  CHECK_INT(rs.rr[0].addr[3], 9);
  /* A chain the server did not follow: ask for its end. */
  const char *part[] = {"a.test. 50 IN CNAME b.test.", NULL};
  n = make_answer(b, sizeof b, 3, "a.test.", LDNS_RR_TYPE_A, 0, 0, part, NULL);
  CHECK_INT(dns_answer_parse(b, n, 3, "a.test", DNS_TYPE_A, &rs), DNS_CHECK_OK);
  CHECK_INT(rs.status, DNS_R_CNAME);
  CHECK_STR(rs.cname, "b.test");
  /* A CNAME loop inside one packet is bounded. */
  const char *loop[] = {"a.test. 50 IN CNAME b.test.",
                        "b.test. 50 IN CNAME a.test.", NULL};
  n = make_answer(b, sizeof b, 3, "a.test.", LDNS_RR_TYPE_A, 0, 0, loop, NULL);
  CHECK_INT(dns_answer_parse(b, n, 3, "a.test", DNS_TYPE_A, &rs), DNS_CHECK_OK);
  CHECK_INT(rs.status, DNS_R_TEMPFAIL);
}

static void test_query_build(void) {
  uint8_t b[DNS_QUERY_MAX];
  size_t n = 0;
  CHECK_INT(dns_query_build(0x1234, "mx.a.test", DNS_TYPE_MX, b, sizeof b, &n),
            0);
  CHECK(n > 12);
  CHECK_INT(b[0], 0x12);
  CHECK_INT(b[1], 0x34);
  CHECK_INT(b[2] & 0x01, 1);    /* RD */
  CHECK_INT(b[3] & 0x20, 0x20); /* AD: report DNSSEC status (RFC 6840) */
  /* The OPT record closes the query: its TTL field's DO bit (RFC 3225). */
  CHECK_INT(b[n - 11], 0); /* root owner */
  CHECK_INT(b[n - 10], 0); /* type 41 */
  CHECK_INT(b[n - 9], 41);
  CHECK_INT(b[n - 4] & 0x80, 0x80); /* DO */
  CHECK(dns_query_build(1, "a.test", DNS_TYPE_A, b, 10, &n) < 0);
}

/* The AD bit of an answer (DNSSEC status, CONTRACT §4b) and TLSA RDATA. */
static void test_answer_ad_and_tlsa(void) {
  uint8_t b[4096];
  struct dns_rrset rs;
  const char *ans[] = {"a.test. 300 IN A 127.0.0.1", NULL};
  size_t n =
      make_answer(b, sizeof b, 7, "a.test.", LDNS_RR_TYPE_A, 0, 0, ans, NULL);
  CHECK_INT(dns_answer_parse(b, n, 7, "a.test", DNS_TYPE_A, &rs), DNS_CHECK_OK);
  CHECK_INT(rs.secure, 0);
  b[3] |= 0x20; /* AD */
  CHECK_INT(dns_answer_parse(b, n, 7, "a.test", DNS_TYPE_A, &rs), DNS_CHECK_OK);
  CHECK_INT(rs.secure, 1);
  /* SERVFAIL is never secure, whatever the bit says. */
  n = make_answer(b, sizeof b, 1, "sf.test.", LDNS_RR_TYPE_TLSA,
                  LDNS_RCODE_SERVFAIL, 0, NULL, NULL);
  b[3] |= 0x20;
  CHECK_INT(dns_answer_parse(b, n, 1, "sf.test", DNS_TYPE_TLSA, &rs),
            DNS_CHECK_OK);
  CHECK_INT(rs.status, DNS_R_TEMPFAIL);
  CHECK_INT(rs.secure, 0);
  const char *tlsa[] = {
      "_25._tcp.mx.test. 300 IN TLSA 3 1 1 "
      "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20",
      "_25._tcp.mx.test. 300 IN TLSA 2 0 0 3082", NULL};
  n = make_answer(b, sizeof b, 9, "_25._tcp.mx.test.", LDNS_RR_TYPE_TLSA, 0, 0,
                  tlsa, NULL);
  CHECK_INT(dns_answer_parse(b, n, 9, "_25._tcp.mx.test", DNS_TYPE_TLSA, &rs),
            DNS_CHECK_OK);
  CHECK_INT(rs.status, DNS_R_OK);
  CHECK_INT(rs.n, 2);
  CHECK_INT(rs.rr[0].rdlen, 35);
  CHECK_INT(rs.rr[0].rdata[0], 3);
  CHECK_INT(rs.rr[0].rdata[1], 1);
  CHECK_INT(rs.rr[0].rdata[2], 1);
  CHECK_INT(rs.rr[0].rdata[3], 1);
  CHECK_INT(rs.rr[0].rdata[34], 0x20);
  CHECK_INT(rs.rr[1].rdlen, 5);
  CHECK_INT(rs.rr[1].rdata[3], 0x30);
}

int main(void) {
  test_order_by_preference();
  test_equal_preferences_shuffled();
  test_null_mx();
  test_bad_and_duplicate_names();
  test_build_aaaa_then_a_and_cap();
  test_build_loop();
  test_build_no_address();
  test_parse_ip();
  test_name_normalize();
  test_answer_mx();
  test_answer_mismatch_ignored();
  test_answer_rcodes();
  test_answer_cname();
  test_query_build();
  test_answer_ad_and_tlsa();
  return check_result("test_mx");
}
