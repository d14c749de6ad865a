/*
 * test_resolver: loop-level tests of dns/resolver.c against an in-process
 * fake DNS server (UDP and TCP on 127.0.0.1, answers built with ldns) on
 * the same loop: cache and TTL expiry, negative caching, cancellation,
 * resolver_free with lookups pending, the bound on queries in flight,
 * TC -> TCP, query sharing, resolv.conf parsing.  Every test ends with
 * uv_loop_close() == 0.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ldns/ldns.h>
#include <uv.h>

#include "check.h"
#include "dns/idna.h"
#include "dns/resolver.h"

/* ---- fake server ------------------------------------------------------ */

struct zone_rr {
  const char *name; /* owner, lower case, no dot */
  int type;         /* LDNS_RR_TYPE_*, 0: the name is NXDOMAIN */
  const char *rr;   /* zone line */
};

enum fake_mode { FAKE_ANSWER, FAKE_DROP, FAKE_TRUNCATE };

struct fake {
  uv_udp_t udp;
  uv_tcp_t tcp;
  struct sockaddr_storage addr;
  const struct zone_rr *zone;
  enum fake_mode mode;
  int udp_queries, tcp_queries;
  char last_name[256];
};

static struct fake F;
static uint8_t fbuf[65536];

static void f_alloc(uv_handle_t *h, size_t s, uv_buf_t *b) {
  (void)h;
  (void)s;
  b->base = (char *)fbuf;
  b->len = sizeof fbuf;
}

/* Builds the reply to a query; returns a malloc'd wire buffer or NULL. */
static uint8_t *f_reply(const uint8_t *q, size_t n, int tcp, size_t *len) {
  ldns_pkt *in = NULL;
  if (ldns_wire2pkt(&in, q, n) != LDNS_STATUS_OK)
    return NULL;
  ldns_rr *qrr = ldns_rr_list_rr(ldns_pkt_question(in), 0);
  char *qname = ldns_rdf2str(ldns_rr_owner(qrr));
  qname[strlen(qname) - 1] = '\0';
  snprintf(F.last_name, sizeof F.last_name, "%s", qname);
  ldns_rr_type qtype = ldns_rr_get_type(qrr);
  ldns_pkt *out = ldns_pkt_query_new(ldns_rdf_clone(ldns_rr_owner(qrr)), qtype,
                                     LDNS_RR_CLASS_IN, LDNS_RD);
  ldns_pkt_set_id(out, ldns_pkt_id(in));
  ldns_pkt_set_qr(out, 1);
  /* A validating resolver's view: names under sec.test are signed (AD). */
  size_t ql = strlen(qname);
  if (ql >= 8 && strcmp(qname + ql - 8, "sec.test") == 0)
    ldns_pkt_set_ad(out, 1);
  if (F.mode == FAKE_TRUNCATE && !tcp) {
    ldns_pkt_set_tc(out, 1);
  } else {
    int known = 0, found = 0;
    for (const struct zone_rr *z = F.zone; z->name; z++) {
      if (strcmp(z->name, qname) != 0)
        continue;
      known = z->type != 0;
      /* A CNAME answers every type, alone: the resolver asks its target
       * in a query of its own. */
      if (z->type == (int)qtype ||
          (z->type == LDNS_RR_TYPE_CNAME && qtype != LDNS_RR_TYPE_CNAME)) {
        ldns_rr *rr = NULL;
        if (ldns_rr_new_frm_str(&rr, z->rr, 0, NULL, NULL) == LDNS_STATUS_OK) {
          ldns_pkt_push_rr(out, LDNS_SECTION_ANSWER, rr);
          found = 1;
        }
      }
    }
    if (!found) {
      ldns_rr *soa = NULL;
      if (ldns_rr_new_frm_str(&soa,
                              "test. 60 IN SOA ns.test. h.test. 1 60 60 60 60",
                              0, NULL, NULL) == LDNS_STATUS_OK)
        ldns_pkt_push_rr(out, LDNS_SECTION_AUTHORITY, soa);
      if (!known)
        ldns_pkt_set_rcode(out, LDNS_RCODE_NXDOMAIN);
    }
  }
  uint8_t *wire = NULL;
  if (ldns_pkt2wire(&wire, out, len) != LDNS_STATUS_OK)
    wire = NULL;
  ldns_pkt_free(out);
  ldns_pkt_free(in);
  free(qname);
  return wire;
}

static void f_on_send(uv_udp_send_t *req, int status) {
  (void)status;
  free(req->data);
  free(req);
}

static void f_on_udp(uv_udp_t *h, ssize_t n, const uv_buf_t *b,
                     const struct sockaddr *peer, unsigned flags) {
  (void)flags;
  if (n <= 0 || !peer)
    return;
  F.udp_queries++;
  if (F.mode == FAKE_DROP)
    return;
  size_t len = 0;
  uint8_t *wire = f_reply((const uint8_t *)b->base, (size_t)n, 0, &len);
  if (!wire)
    return;
  uv_udp_send_t *req = malloc(sizeof *req);
  req->data = wire;
  uv_buf_t out = uv_buf_init((char *)wire, (unsigned)len);
  if (uv_udp_send(req, h, &out, 1, peer, f_on_send) != 0) {
    free(wire);
    free(req);
  }
}

struct f_conn {
  uv_tcp_t h;
  uint8_t in[4096];
  size_t n;
  uv_write_t wr;
  uint8_t *out;
};

static void f_conn_close(uv_handle_t *h) {
  struct f_conn *c = (struct f_conn *)h;
  free(c->out);
  free(c);
}

static void f_tcp_alloc(uv_handle_t *h, size_t s, uv_buf_t *b) {
  struct f_conn *c = (struct f_conn *)h;
  (void)s;
  b->base = (char *)c->in + c->n;
  b->len = sizeof c->in - c->n;
}

static void f_on_write(uv_write_t *w, int status) {
  (void)w;
  (void)status;
}

static void f_tcp_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  struct f_conn *c = (struct f_conn *)s;
  (void)b;
  if (n < 0) {
    uv_close((uv_handle_t *)s, f_conn_close);
    return;
  }
  c->n += (size_t)n;
  if (c->n < 2 || c->n < 2 + (size_t)(c->in[0] << 8 | c->in[1]) || c->out)
    return;
  F.tcp_queries++;
  size_t len = 0;
  uint8_t *wire = f_reply(c->in + 2, c->n - 2, 1, &len);
  if (!wire)
    return;
  c->out = malloc(len + 2);
  c->out[0] = (uint8_t)(len >> 8);
  c->out[1] = (uint8_t)len;
  memcpy(c->out + 2, wire, len);
  free(wire);
  uv_buf_t out = uv_buf_init((char *)c->out, (unsigned)len + 2);
  uv_write(&c->wr, s, &out, 1, f_on_write);
}

static void f_on_conn(uv_stream_t *srv, int status) {
  if (status < 0)
    return;
  struct f_conn *c = calloc(1, sizeof *c);
  uv_tcp_init(srv->loop, &c->h);
  if (uv_accept(srv, (uv_stream_t *)&c->h) == 0)
    uv_read_start((uv_stream_t *)&c->h, f_tcp_alloc, f_tcp_read);
  else
    uv_close((uv_handle_t *)&c->h, f_conn_close);
}

/* A TCP and a UDP socket on one free loopback port.  The kernel picks the
 * TCP port; when another process holds that port for UDP, try again (tests
 * run in parallel with others that bind ports too). */
static void bind_pair(int *tcp_fd, int *udp_fd, struct sockaddr_in *addr) {
  for (int attempt = 0; attempt < 50; attempt++) {
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int t = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (t >= 0 && u >= 0 && bind(t, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(t, (struct sockaddr *)&a, &len) == 0 &&
        bind(u, (struct sockaddr *)&a, sizeof a) == 0 && listen(t, 16) == 0) {
      *tcp_fd = t;
      *udp_fd = u;
      *addr = a;
      return;
    }
    if (t >= 0)
      close(t);
    if (u >= 0)
      close(u);
  }
  CHECK(!"no free port pair for the fake DNS server");
  *tcp_fd = *udp_fd = -1;
}

static void fake_start(uv_loop_t *loop, const struct zone_rr *zone) {
  memset(&F, 0, sizeof F);
  F.zone = zone;
  int tcp_fd, udp_fd;
  struct sockaddr_in a = {0};
  bind_pair(&tcp_fd, &udp_fd, &a);
  memcpy(&F.addr, &a, sizeof a);
  CHECK_INT(uv_udp_init(loop, &F.udp), 0);
  CHECK_INT(uv_udp_open(&F.udp, udp_fd), 0);
  CHECK_INT(uv_udp_recv_start(&F.udp, f_alloc, f_on_udp), 0);
  CHECK_INT(uv_tcp_init(loop, &F.tcp), 0);
  CHECK_INT(uv_tcp_open(&F.tcp, tcp_fd), 0);
  CHECK_INT(uv_listen((uv_stream_t *)&F.tcp, 16, f_on_conn), 0);
}

static void fake_stop(void) {
  uv_close((uv_handle_t *)&F.udp, NULL);
  uv_close((uv_handle_t *)&F.tcp, NULL);
}

static void walk_close(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL); /* only the fake's TCP connections remain */
}

/* ---- harness ---------------------------------------------------------- */

struct outcome {
  int calls;
  struct mx_result res;
};

static void on_result(struct resolver_query *q, const struct mx_result *res,
                      void *data) {
  struct outcome *o = data;
  (void)q;
  o->calls++;
  o->res = *res;
}

static struct resolver *new_resolver(uv_loop_t *loop, int max_inflight,
                                     uint64_t timeout_ms) {
  struct resolver_opts o = {.servers = &F.addr,
                            .n_servers = 1,
                            .timeout_ms = timeout_ms,
                            .attempts = 1,
                            .max_inflight = max_inflight};
  int err = 0;
  struct resolver *r = resolver_new(loop, &o, &err);
  CHECK(r != NULL);
  return r;
}

static void run_until(uv_loop_t *loop, const int *done, int want) {
  while (*done < want && uv_run(loop, UV_RUN_ONCE))
    ;
}

static void finish(uv_loop_t *loop, struct resolver *r) {
  resolver_free(r);
  fake_stop();
  uv_run(loop, UV_RUN_NOWAIT);
  uv_walk(loop, walk_close, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(loop), 0);
}

static const struct zone_rr ZONE[] = {
    {"a.test", LDNS_RR_TYPE_MX, "a.test. 1 IN MX 10 mx1.a.test."},
    {"mx1.a.test", LDNS_RR_TYPE_A, "mx1.a.test. 1 IN A 127.0.0.2"},
    {"long.test", LDNS_RR_TYPE_MX, "long.test. 300 IN MX 10 mx1.a.test."},
    {NULL, 0, NULL},
};

/* ---- tests ------------------------------------------------------------- */

static void test_lookup_cache_and_ttl_expiry(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  fake_start(&loop, ZONE);
  struct resolver *r = new_resolver(&loop, 0, 2000);
  struct outcome o1 = {0}, o2 = {0}, o3 = {0};

  CHECK(resolver_lookup_mx(r, "a.test", 25, on_result, &o1) != NULL);
  CHECK_INT(o1.calls, 0); /* never from inside the call */
  run_until(&loop, &o1.calls, 1);
  CHECK_INT(o1.res.status, DNS_OK);
  CHECK_INT(o1.res.n, 1);
  CHECK_STR(o1.res.c[0].host, "mx1.a.test");
  int sent = F.udp_queries;
  CHECK_INT(sent, 3); /* MX, AAAA, A */

  /* Within the TTL: from the cache, no query. */
  CHECK(resolver_lookup_mx(r, "A.Test.", 25, on_result, &o2) != NULL);
  run_until(&loop, &o2.calls, 1);
  CHECK_INT(o2.res.status, DNS_OK);
  CHECK_INT(F.udp_queries, sent);

  /* After the 1 s TTL (and the 60 s negative one for AAAA still alive). */
  uv_sleep(1100);
  uv_update_time(&loop);
  CHECK(resolver_lookup_mx(r, "a.test", 25, on_result, &o3) != NULL);
  run_until(&loop, &o3.calls, 1);
  CHECK_INT(o3.res.status, DNS_OK);
  CHECK_INT(F.udp_queries, sent + 2); /* MX and A again, not AAAA */
  CHECK_INT(o1.calls + o2.calls + o3.calls, 3);
  finish(&loop, r);
}

static void test_negative_cache(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  fake_start(&loop, ZONE);
  struct resolver *r = new_resolver(&loop, 0, 2000);
  struct outcome o1 = {0}, o2 = {0};
  resolver_lookup_mx(r, "nx.test", 25, on_result, &o1);
  run_until(&loop, &o1.calls, 1);
  CHECK_INT(o1.res.status, DNS_PERMFAIL);
  CHECK_STR(o1.res.dsn, "5.1.2");
  resolver_lookup_mx(r, "nx.test", 25, on_result, &o2);
  run_until(&loop, &o2.calls, 1);
  CHECK_INT(o2.res.status, DNS_PERMFAIL);
  CHECK_INT(F.udp_queries, 1);
  finish(&loop, r);
}

static void test_cancel_and_free(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  fake_start(&loop, ZONE);
  F.mode = FAKE_DROP;
  struct resolver *r = new_resolver(&loop, 0, 5000);
  struct outcome o1 = {0}, o2 = {0}, o3 = {0};
  struct resolver_query *q1 =
      resolver_lookup_mx(r, "a.test", 25, on_result, &o1);
  /* Cancelled before it started. */
  struct resolver_query *q3 =
      resolver_lookup_mx(r, "x.test", 25, on_result, &o3);
  resolver_cancel(q3);
  CHECK_INT(o3.calls, 1);
  CHECK_INT(o3.res.status, DNS_CANCELED);
  resolver_lookup_mx(r, "long.test", 25, on_result, &o2);
  while (F.udp_queries < 2 && uv_run(&loop, UV_RUN_ONCE))
    ;
  CHECK_INT(F.udp_queries, 2);
  /* Cancelled while its query is on the wire. */
  resolver_cancel(q1);
  CHECK_INT(o1.calls, 1);
  CHECK_INT(o1.res.status, DNS_CANCELED);
  CHECK_INT(o2.calls, 0);
  /* resolver_free cancels the rest. */
  resolver_free(r);
  CHECK_INT(o2.calls, 1);
  CHECK_INT(o2.res.status, DNS_CANCELED);
  fake_stop();
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(o1.calls + o2.calls + o3.calls, 3);
  CHECK_INT(uv_loop_close(&loop), 0);
}

static void test_timeout(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  fake_start(&loop, ZONE);
  F.mode = FAKE_DROP;
  struct resolver *r = new_resolver(&loop, 0, 100);
  struct outcome o = {0};
  resolver_lookup_mx(r, "a.test", 25, on_result, &o);
  run_until(&loop, &o.calls, 1);
  CHECK_INT(o.res.status, DNS_TEMPFAIL);
  CHECK_STR(o.res.dsn, "4.4.3");
  CHECK_CONTAINS(o.res.reason, "timeout");
  finish(&loop, r);
}

static void test_inflight_bound_and_sharing(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  fake_start(&loop, ZONE);
  struct resolver *r = new_resolver(&loop, 2, 2000);
  enum { N = 40 };
  static struct outcome o[N];
  memset(o, 0, sizeof o);
  int done = 0;
  char name[64];
  for (int i = 0; i < N; i++) {
    /* Half the names repeat: a shared query answers several lookups. */
    snprintf(name, sizeof name, "n%d.test", i % (N / 2));
    CHECK(resolver_lookup_mx(r, name, 25, on_result, &o[i]) != NULL);
  }
  while (uv_run(&loop, UV_RUN_ONCE)) {
    done = 0;
    for (int i = 0; i < N; i++)
      done += o[i].calls;
    if (done == N)
      break;
  }
  CHECK_INT(done, N);
  CHECK_INT(F.udp_queries, N / 2);
  for (int i = 0; i < N; i++)
    CHECK_STR(o[i].res.dsn, "5.1.2");
  finish(&loop, r);
}

static void test_truncated_goes_tcp(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  fake_start(&loop, ZONE);
  F.mode = FAKE_TRUNCATE;
  struct resolver *r = new_resolver(&loop, 0, 2000);
  struct outcome o = {0};
  resolver_lookup_host(r, "mx1.a.test", 587, on_result, &o);
  run_until(&loop, &o.calls, 1);
  CHECK_INT(o.res.status, DNS_OK);
  CHECK_INT(o.res.n, 1);
  CHECK_INT(F.tcp_queries, 2); /* AAAA and A */
  finish(&loop, r);
}

static void test_resolv_conf(void) {
  struct sockaddr_storage s[4];
  uint64_t t = 0;
  int a = 0;
  int n = resolver_parse_resolv_conf("# x\nnameserver 127.0.0.53\n"
                                     "nameserver ::1\nnameserver bogus\n"
                                     "options ndots:1 timeout:3 attempts:4\n",
                                     s, 4, &t, &a);
  CHECK_INT(n, 2);
  CHECK_INT(s[0].ss_family, AF_INET);
  CHECK_INT(ntohs(((struct sockaddr_in *)&s[0])->sin_port), 53);
  CHECK_INT(s[1].ss_family, AF_INET6);
  CHECK_INT(t, 3000);
  CHECK_INT(a, 4);
}

static void test_idn(void) {
  char out[300];
  CHECK_INT(idna_to_ascii("Bücher.Test.", out, sizeof out), 0);
  CHECK_STR(out, "xn--bcher-kva.test");
  CHECK_INT(idna_to_ascii("MX.a.test", out, sizeof out), 0);
  CHECK_STR(out, "mx.a.test");
  CHECK(idna_to_ascii("a..test", out, sizeof out) < 0);
  CHECK(idna_to_ascii("\xff\xfe.test", out, sizeof out) < 0);
  CHECK_INT(idna_to_utf8("XN--bcher-kva.Test.", out, sizeof out), 0);
  CHECK_STR(out, "b\xc3\xbc"
                 "cher.test");
  CHECK_INT(idna_to_utf8("plain.test", out, sizeof out), 0);
  CHECK_STR(out, "plain.test");
  CHECK(idna_to_utf8("xn--.test", out, sizeof out) < 0);
  CHECK(idna_to_utf8("xn--a.test", out, sizeof out) < 0); /* U+0080 */
  CHECK(idna_to_utf8("xn--bcher-kva.test", out, 5) < 0);
}

/* TXT lookups (MTA-STS, TLS-RPT): strings joined, several records, an
 * underscore name, NODATA and NXDOMAIN as "no records", cancel. */
struct txt_outcome {
  int calls;
  struct resolver_txt res;
};

static void on_txt(struct resolver_query *q, const struct resolver_txt *res,
                   void *data) {
  (void)q;
  struct txt_outcome *o = data;
  o->calls++;
  o->res = *res;
}

static const struct zone_rr TXT_ZONE[] = {
    {"_mta-sts.a.test", LDNS_RR_TYPE_TXT,
     "_mta-sts.a.test. 60 IN TXT \"v=STSv1; \" \"id=20240101;\""},
    {"_mta-sts.a.test", LDNS_RR_TYPE_TXT,
     "_mta-sts.a.test. 60 IN TXT \"v=spf1 -all\""},
    {"a.test", LDNS_RR_TYPE_MX, "a.test. 60 IN MX 10 mx1.a.test."},
    {NULL, 0, NULL},
};

static void test_txt(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  fake_start(&loop, TXT_ZONE);
  struct resolver *r = new_resolver(&loop, 0, 2000);
  struct txt_outcome o1 = {0}, o2 = {0}, o3 = {0}, o4 = {0};
  CHECK(resolver_lookup_txt(r, "_mta-sts.a.test", on_txt, &o1) != NULL);
  CHECK_INT(o1.calls, 0);
  run_until(&loop, &o1.calls, 1);
  CHECK_INT(o1.res.status, DNS_OK);
  CHECK_INT(o1.res.n, 2);
  int sts = 0, spf = 0;
  for (int i = 0; i < o1.res.n; i++) {
    sts += strcmp(o1.res.txt[i], "v=STSv1; id=20240101;") == 0;
    spf += strcmp(o1.res.txt[i], "v=spf1 -all") == 0;
  }
  CHECK_INT(sts, 1);
  CHECK_INT(spf, 1);
  /* The name exists without TXT (NODATA), or not at all: no records. */
  CHECK(resolver_lookup_txt(r, "a.test", on_txt, &o2) != NULL);
  CHECK(resolver_lookup_txt(r, "_smtp._tls.nx.test", on_txt, &o3) != NULL);
  run_until(&loop, &o3.calls, 1);
  run_until(&loop, &o2.calls, 1);
  CHECK_INT(o2.res.status, DNS_OK);
  CHECK_INT(o2.res.n, 0);
  CHECK_INT(o2.res.nxdomain, 0);
  CHECK_INT(o3.res.status, DNS_OK);
  CHECK_INT(o3.res.n, 0);
  CHECK_INT(o3.res.nxdomain, 1);
  /* Cancel: the callback at once, with DNS_CANCELED. */
  struct resolver_query *q = resolver_lookup_txt(r, "b.test", on_txt, &o4);
  CHECK(q != NULL);
  resolver_cancel(q);
  CHECK_INT(o4.calls, 1);
  CHECK_INT(o4.res.status, DNS_CANCELED);
  finish(&loop, r);
}

static const struct zone_rr SECZONE[] = {
    {"d.sec.test", LDNS_RR_TYPE_MX, "d.sec.test. 60 IN MX 10 mx.sec.test."},
    {"mx.sec.test", LDNS_RR_TYPE_A, "mx.sec.test. 60 IN A 127.0.0.2"},
    {"m.sec.test", LDNS_RR_TYPE_MX, "m.sec.test. 60 IN MX 10 mx.plain.test."},
    {"mx.plain.test", LDNS_RR_TYPE_A, "mx.plain.test. 60 IN A 127.0.0.3"},
    /* MX hosts that are aliases: into a signed zone, and out of it */
    {"c.sec.test", LDNS_RR_TYPE_MX, "c.sec.test. 60 IN MX 10 alias.sec.test."},
    {"alias.sec.test", LDNS_RR_TYPE_CNAME,
     "alias.sec.test. 60 IN CNAME tgt.sec.test."},
    {"tgt.sec.test", LDNS_RR_TYPE_A, "tgt.sec.test. 60 IN A 127.0.0.4"},
    {"o.sec.test", LDNS_RR_TYPE_MX, "o.sec.test. 60 IN MX 10 out.sec.test."},
    {"out.sec.test", LDNS_RR_TYPE_CNAME,
     "out.sec.test. 60 IN CNAME mx.plain.test."},
    {"_25._tcp.mx.sec.test", LDNS_RR_TYPE_TLSA,
     "_25._tcp.mx.sec.test. 60 IN TLSA 3 1 1 "
     "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20"},
    {NULL, 0, NULL},
};

struct tlsa_outcome {
  int calls, canceled, status, secure, n, rdlen;
  char reason[64];
};

static void on_tlsa(struct resolver_query *q, const struct dns_rrset *rs,
                    int canceled, void *data) {
  (void)q;
  struct tlsa_outcome *o = data;
  o->calls++;
  o->canceled = canceled;
  o->status = rs->status;
  o->secure = rs->secure;
  o->n = rs->n;
  o->rdlen = rs->n ? rs->rr[0].rdlen : 0;
  snprintf(o->reason, sizeof o->reason, "%s", rs->reason);
}

/* DNSSEC status (the AD bit) through MX, address and TLSA lookups and the
 * cache (CONTRACT §4b). */
static void test_secure_and_tlsa(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  fake_start(&loop, SECZONE);
  struct resolver *r = new_resolver(&loop, 0, 2000);
  struct outcome o1 = {0}, o2 = {0}, o5 = {0};
  resolver_lookup_mx(r, "d.sec.test", 25, on_result, &o1);
  run_until(&loop, &o1.calls, 1);
  CHECK_INT(o1.res.status, DNS_OK);
  CHECK_INT(o1.res.mx_secure, 1);
  CHECK_INT(o1.res.c[0].secure, 1);
  /* A secure MX pointing at a host in an unsigned zone. */
  resolver_lookup_mx(r, "m.sec.test", 25, on_result, &o2);
  run_until(&loop, &o2.calls, 1);
  CHECK_INT(o2.res.mx_secure, 1);
  CHECK_INT(o2.res.c[0].secure, 0);
  /* An MX host that is a secure alias: its expansion is the TLSA base
   * domain (RFC 7672 §2.2.2); out of the signed zone, not secure, none. */
  struct outcome o6 = {0}, o7 = {0};
  resolver_lookup_mx(r, "c.sec.test", 25, on_result, &o6);
  resolver_lookup_mx(r, "o.sec.test", 25, on_result, &o7);
  run_until(&loop, &o6.calls, 1);
  run_until(&loop, &o7.calls, 1);
  CHECK_INT(o6.res.status, DNS_OK);
  CHECK_STR(o6.res.c[0].host, "alias.sec.test");
  CHECK_INT(o6.res.c[0].secure, 1);
  CHECK_STR(o6.res.c[0].expanded, "tgt.sec.test");
  CHECK_INT(o7.res.status, DNS_OK);
  CHECK_INT(o7.res.c[0].secure, 0);
  CHECK_STR(o7.res.c[0].expanded, "");
  /* The second time from the cache: still secure. */
  resolver_lookup_mx(r, "d.sec.test", 25, on_result, &o5);
  run_until(&loop, &o5.calls, 1);
  CHECK_INT(o5.res.mx_secure, 1);
  CHECK_INT(o5.res.c[0].secure, 1);

  struct tlsa_outcome t1 = {0}, t2 = {0}, t3 = {0}, t4 = {0};
  CHECK(resolver_lookup_tlsa(r, "mx.sec.test", 25, on_tlsa, &t1) != NULL);
  CHECK_INT(t1.calls, 0);
  run_until(&loop, &t1.calls, 1);
  CHECK_STR(F.last_name, "_25._tcp.mx.sec.test");
  CHECK_INT(t1.status, DNS_R_OK);
  CHECK_INT(t1.secure, 1);
  CHECK_INT(t1.n, 1);
  CHECK_INT(t1.rdlen, 35);
  int sent = F.udp_queries;
  resolver_lookup_tlsa(r, "mx.sec.test", 25, on_tlsa, &t2);
  run_until(&loop, &t2.calls, 1);
  CHECK_INT(F.udp_queries, sent); /* cached */
  CHECK_INT(t2.secure, 1);
  CHECK_INT(t2.rdlen, 35);
  /* No TLSA, insecure: NXDOMAIN without AD. */
  resolver_lookup_tlsa(r, "mx.plain.test", 25, on_tlsa, &t3);
  run_until(&loop, &t3.calls, 1);
  CHECK_INT(t3.status, DNS_R_NXDOMAIN);
  CHECK_INT(t3.secure, 0);
  /* Cancelled: the callback says so, at once. */
  struct resolver_query *q =
      resolver_lookup_tlsa(r, "mx2.sec.test", 25, on_tlsa, &t4);
  resolver_cancel(q);
  CHECK_INT(t4.calls, 1);
  CHECK_INT(t4.canceled, 1);
  CHECK_INT(t4.status, DNS_R_TEMPFAIL);
  finish(&loop, r);
}

int main(void) {
  test_txt();
  test_lookup_cache_and_ttl_expiry();
  test_negative_cache();
  test_cancel_and_free();
  test_timeout();
  test_inflight_bound_and_sharing();
  test_truncated_goes_tcp();
  test_resolv_conf();
  test_idn();
  test_secure_and_tlsa();
  return check_result("test_resolver");
}
