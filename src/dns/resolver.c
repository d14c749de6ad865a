/*
 * resolver: DNS lookups over the resolver's own libuv sockets (see
 * resolver.h for the contract).
 *
 * Owns: the lookups (struct resolver_query) until their callbacks return;
 * the transport queries (struct dq, one per (name, type) being asked,
 * shared by every lookup waiting for it); each attempt's sockets and timer
 * (struct attempt, freed by the close callback of its last handle); the
 * cache; one idle handle that starts new lookups and runs the callbacks.
 *
 * Must never block, never call a user callback from inside an internal
 * step (results wait on the done list and are delivered from on_idle, so
 * internal lists are never changed under our feet), and never trust a
 * datagram that does not match source, ID and question.
 */
#include "dns/resolver.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <idn2.h>

#include "dns/dns_answer.h"
#include "log.h"

#define DEFAULT_TIMEOUT_MS 5000
#define DEFAULT_ATTEMPTS 2
#define DEFAULT_INFLIGHT 128
#define DEFAULT_CACHE 4096
#define TCP_MAX 65535

/* ---- lists ------------------------------------------------------------ */

struct dq;
struct resolver_query;

/* One (name, type) question a lookup is waiting for. */
struct sub {
  struct resolver_query *q;
  int host; /* -1: the MX question; else index in q->hosts */
  char name[DNS_NAME_MAX + 2];
  uint16_t type;
  int hops;      /* CNAME links followed across queries */
  int insecure;  /* some CNAME link on the way lacked AD */
  struct dq *dq; /* the transport query we wait on, or NULL */
  struct sub *wprev, *wnext;
};

enum q_state { Q_STARTING, Q_ACTIVE, Q_DONE };
enum q_kind { Q_MX, Q_HOST, Q_TLSA, Q_TXT };
#define SUB_MX (-1)   /* sub->host of the MX question */
#define SUB_TLSA (-2) /* sub->host of the TLSA question */
#define SUB_TXT (-3)  /* sub->host of the TXT question */

struct resolver_query {
  struct resolver *r;
  struct resolver_query *prev, *next; /* in r->starting / active / done */
  enum q_state state;
  enum q_kind kind;
  char domain[DNS_NAME_MAX + 2]; /* as given, for messages */
  char ascii[DNS_NAME_MAX + 2];  /* A-label form */
  uint16_t port;
  resolver_cb cb;
  resolver_tlsa_cb tcb;   /* Q_TLSA */
  struct dns_rrset *tlsa; /* Q_TLSA: the answer, owned */
  int mx_secure;
  void *data;
  int pending; /* subs outstanding */
  int n_subs;
  struct sub subs[1 + 2 * MX_MAX_HOSTS];
  int n_hosts;
  struct mx_host hosts[MX_MAX_HOSTS];
  struct mx_result res;
  resolver_txt_cb xcb;      /* Q_TXT: the callback (cb unused) */
  struct resolver_txt *txt; /* Q_TXT: the outcome, owned */
};

struct qlist {
  struct resolver_query *head, *tail;
};

struct attempt;

/* A transport query: one question on the wire, shared by its waiters. */
struct dq {
  struct resolver *r;
  struct dq *prev, *next; /* in r->inflight or r->waiting */
  int inflight;
  char name[DNS_NAME_MAX + 2];
  uint16_t type;
  uint16_t id;
  uint8_t wire[DNS_QUERY_MAX];
  size_t wire_len;
  int tries;
  char last_err[256];
  struct attempt *att;
  struct sub *waiters;
};

struct dqlist {
  struct dq *head, *tail;
  int n;
};

/* One attempt at one server: UDP, then maybe TCP; freed on last close. */
struct attempt {
  struct dq *dq; /* NULL once abandoned */
  struct resolver *r;
  struct sockaddr_storage server;
  int handles; /* open handles */
  int udp_open, tcp_open;
  uv_timer_t timer;
  uv_udp_t udp;
  uv_udp_send_t send;
  uv_tcp_t tcp;
  uv_connect_t conn;
  uv_write_t wr;
  uint8_t wbuf[DNS_QUERY_MAX + 2];
  uint8_t *tin; /* TCP input, TCP_MAX + 2 bytes */
  size_t tin_len;
};

struct cache_entry {
  struct cache_entry *lprev, *lnext; /* LRU, most recent first */
  struct cache_entry *hnext;         /* hash chain */
  unsigned hash;
  char name[DNS_NAME_MAX + 2];
  uint16_t type;
  uint64_t expires; /* loop time, ms */
  enum dns_rcode status;
  int secure;
  char cname[DNS_NAME_MAX + 2];
  int n;
  unsigned char *rr; /* n records of rr_size(type) octets each */
};

struct resolver {
  uv_loop_t *loop;
  uv_idle_t idle;
  int idle_on;
  int closing;
  int in_cb;
  int free_requested;
  struct sockaddr_storage servers[RESOLVER_MAX_SERVERS];
  int n_servers;
  uint64_t timeout_ms;
  int attempts;
  int max_inflight;
  int max_addrs;
  struct sockaddr_storage self[RESOLVER_MAX_SELF];
  int n_self;
  struct qlist starting, active, done;
  struct dqlist inflight, waiting;
  /* cache */
  int cache_max, cache_n;
  unsigned nbuckets;
  struct cache_entry **buckets;
  struct cache_entry *lru_head, *lru_tail;
  /* random pool */
  uint8_t rpool[64];
  size_t rpos;
  uint8_t rbuf[65536]; /* UDP receive buffer, used within one callback */
  uint64_t *counts;    /* metrics: RESOLVER_COUNT_N entries, or NULL */
};

static void q_list_remove(struct qlist *l, struct resolver_query *q) {
  if (q->prev)
    q->prev->next = q->next;
  else
    l->head = q->next;
  if (q->next)
    q->next->prev = q->prev;
  else
    l->tail = q->prev;
  q->prev = q->next = NULL;
}

static void q_list_push(struct qlist *l, struct resolver_query *q) {
  q->next = NULL;
  q->prev = l->tail;
  if (l->tail)
    l->tail->next = q;
  else
    l->head = q;
  l->tail = q;
}

static struct qlist *q_list_of(struct resolver_query *q) {
  switch (q->state) {
  case Q_STARTING:
    return &q->r->starting;
  case Q_ACTIVE:
    return &q->r->active;
  case Q_DONE:
    return &q->r->done;
  }
  abort();
}

static void dq_list_remove(struct dqlist *l, struct dq *d) {
  if (d->prev)
    d->prev->next = d->next;
  else
    l->head = d->next;
  if (d->next)
    d->next->prev = d->prev;
  else
    l->tail = d->prev;
  d->prev = d->next = NULL;
  l->n--;
}

static void dq_list_push(struct dqlist *l, struct dq *d) {
  d->next = NULL;
  d->prev = l->tail;
  if (l->tail)
    l->tail->next = d;
  else
    l->head = d;
  l->tail = d;
  l->n++;
}

/* ---- randomness ------------------------------------------------------- */

static void rnd_bytes(struct resolver *r, void *out, size_t n) {
  uint8_t *o = out;
  while (n > 0) {
    if (r->rpos >= sizeof r->rpool) {
      size_t got = 0;
      while (got < sizeof r->rpool) {
        ssize_t k = getrandom(r->rpool + got, sizeof r->rpool - got, 0);
        if (k < 0) {
          if (errno == EINTR)
            continue;
          abort(); /* no kernel randomness: unsafe to go on */
        }
        got += (size_t)k;
      }
      r->rpos = 0;
    }
    *o++ = r->rpool[r->rpos++];
    n--;
  }
}

static uint32_t rnd32(void *ctx) {
  uint32_t v;
  rnd_bytes(ctx, &v, sizeof v);
  return v;
}

/* ---- cache ------------------------------------------------------------ */

/* Octets of a struct dns_rr the cache keeps: the raw RDATA only for TLSA
 * (the rest never uses it; this keeps an entry small). */
static size_t rr_size(uint16_t type) {
  return type == DNS_TYPE_TLSA ? sizeof(struct dns_rr)
                               : offsetof(struct dns_rr, rdata);
}

static unsigned cache_hash(const char *name, uint16_t type) {
  unsigned h = 2166136261u;
  for (const char *p = name; *p; p++)
    h = (h ^ (unsigned char)*p) * 16777619u;
  return (h ^ type) * 16777619u;
}

static void lru_unlink(struct resolver *r, struct cache_entry *e) {
  if (e->lprev)
    e->lprev->lnext = e->lnext;
  else
    r->lru_head = e->lnext;
  if (e->lnext)
    e->lnext->lprev = e->lprev;
  else
    r->lru_tail = e->lprev;
  e->lprev = e->lnext = NULL;
}

static void lru_front(struct resolver *r, struct cache_entry *e) {
  e->lprev = NULL;
  e->lnext = r->lru_head;
  if (r->lru_head)
    r->lru_head->lprev = e;
  r->lru_head = e;
  if (!r->lru_tail)
    r->lru_tail = e;
}

static void cache_drop(struct resolver *r, struct cache_entry *e) {
  struct cache_entry **pp = &r->buckets[e->hash & (r->nbuckets - 1)];
  while (*pp != e)
    pp = &(*pp)->hnext;
  *pp = e->hnext;
  lru_unlink(r, e);
  free(e->rr);
  free(e);
  r->cache_n--;
}

static struct cache_entry *cache_find(struct resolver *r, const char *name,
                                      uint16_t type) {
  if (!r->buckets)
    return NULL;
  unsigned h = cache_hash(name, type);
  for (struct cache_entry *e = r->buckets[h & (r->nbuckets - 1)]; e;
       e = e->hnext) {
    if (e->hash == h && e->type == type && strcmp(e->name, name) == 0) {
      if (e->expires <= uv_now(r->loop)) {
        cache_drop(r, e);
        return NULL;
      }
      lru_unlink(r, e);
      lru_front(r, e);
      return e;
    }
  }
  return NULL;
}

static void cache_put(struct resolver *r, const char *name, uint16_t type,
                      const struct dns_rrset *rs) {
  if (!r->buckets || rs->status == DNS_R_TEMPFAIL || rs->ttl == 0)
    return;
  struct cache_entry *old = cache_find(r, name, type);
  if (old)
    cache_drop(r, old);
  while (r->cache_n >= r->cache_max && r->lru_tail)
    cache_drop(r, r->lru_tail);
  struct cache_entry *e = calloc(1, sizeof *e);
  if (!e)
    return;
  if (rs->n > 0) {
    size_t sz = rr_size(type);
    e->rr = malloc(sz * (size_t)rs->n);
    if (!e->rr) {
      free(e);
      return;
    }
    for (int i = 0; i < rs->n; i++)
      memcpy(e->rr + sz * (size_t)i, &rs->rr[i], sz);
  }
  e->n = rs->n;
  snprintf(e->name, sizeof e->name, "%s", name);
  snprintf(e->cname, sizeof e->cname, "%s", rs->cname);
  e->type = type;
  e->status = rs->status;
  e->secure = rs->secure;
  e->expires = uv_now(r->loop) + (uint64_t)rs->ttl * 1000;
  e->hash = cache_hash(name, type);
  struct cache_entry **b = &r->buckets[e->hash & (r->nbuckets - 1)];
  e->hnext = *b;
  *b = e;
  lru_front(r, e);
  r->cache_n++;
}

/* ---- lookups: forward declarations ------------------------------------- */

static void sub_start(struct sub *s);
static void sub_on_rrset(struct sub *s, const struct dns_rrset *rs);
static void dq_pump(struct resolver *r);
static void kick(struct resolver *r);

/* ---- attempts (sockets) ----------------------------------------------- */

static void on_att_close(uv_handle_t *h) {
  struct attempt *a = h->data;
  if (--a->handles == 0) {
    free(a->tin);
    free(a);
  }
}

/* Detaches the attempt from its query and closes its handles. */
static void att_abandon(struct attempt *a) {
  if (!a)
    return;
  if (a->dq)
    a->dq->att = NULL;
  a->dq = NULL;
  if (!uv_is_closing((uv_handle_t *)&a->timer))
    uv_close((uv_handle_t *)&a->timer, on_att_close);
  if (a->udp_open && !uv_is_closing((uv_handle_t *)&a->udp))
    uv_close((uv_handle_t *)&a->udp, on_att_close);
  if (a->tcp_open && !uv_is_closing((uv_handle_t *)&a->tcp))
    uv_close((uv_handle_t *)&a->tcp, on_att_close);
}

static void dq_finish(struct dq *d, const struct dns_rrset *rs);
static void dq_attempt(struct dq *d);

static void fmt_server(const struct sockaddr_storage *ss, char *out,
                       size_t cap) {
  char ip[INET6_ADDRSTRLEN] = "?";
  unsigned port = 0;
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *s4 = (const void *)ss;
    inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
    port = ntohs(s4->sin_port);
    snprintf(out, cap, "%s:%u", ip, port);
  } else {
    const struct sockaddr_in6 *s6 = (const void *)ss;
    inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
    port = ntohs(s6->sin6_port);
    snprintf(out, cap, "[%s]:%u", ip, port);
  }
}

/* The attempt failed: note why, then try the next server or give up. */
static void att_fail(struct attempt *a, const char *why) {
  struct dq *d = a->dq;
  if (!d)
    return;
  char srv[80];
  fmt_server(&a->server, srv, sizeof srv);
  snprintf(d->last_err, sizeof d->last_err, "%.100s from %s", why, srv);
  att_abandon(a);
  dq_attempt(d);
}

/* Handles a message that passed no checks yet. 1: attempt ended. */
static int att_answer(struct attempt *a, const uint8_t *pkt, size_t len,
                      int over_tcp);

static void on_att_timeout(uv_timer_t *t) {
  struct attempt *a = t->data;
  if (a->r->counts) /* metrics */
    a->r->counts[RESOLVER_COUNT_TIMEOUT]++;
  att_fail(a, "timeout");
}

static int same_addr(const struct sockaddr_storage *a,
                     const struct sockaddr *b) {
  if (!b || a->ss_family != b->sa_family)
    return 0;
  if (a->ss_family == AF_INET) {
    const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
    return x->sin_port == y->sin_port &&
           x->sin_addr.s_addr == y->sin_addr.s_addr;
  }
  const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
  return x->sin6_port == y->sin6_port &&
         memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
}

static void on_udp_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  struct attempt *a = h->data;
  (void)size;
  buf->base = (char *)a->r->rbuf;
  buf->len = sizeof a->r->rbuf;
}

static void on_udp_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf,
                        const struct sockaddr *addr, unsigned flags) {
  struct attempt *a = h->data;
  (void)flags;
  if (!a->dq)
    return;
  if (nread < 0) {
    /* ICMP port unreachable on the connected socket, and such. */
    att_fail(a, uv_strerror((int)nread));
    return;
  }
  if (nread == 0 || !same_addr(&a->server, addr))
    return; /* nothing, or not from the server we asked: ignore */
  att_answer(a, (const uint8_t *)buf->base, (size_t)nread, 0);
}

static void on_udp_send(uv_udp_send_t *req, int status) {
  struct attempt *a = req->data;
  if (status < 0 && status != UV_ECANCELED && a->dq)
    att_fail(a, uv_strerror(status));
}

static void on_tcp_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  struct attempt *a = h->data;
  (void)size;
  buf->base = (char *)a->tin + a->tin_len;
  buf->len = TCP_MAX + 2 - a->tin_len;
}

static void on_tcp_read(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf) {
  struct attempt *a = h->data;
  (void)buf;
  if (!a->dq)
    return;
  if (nread < 0) {
    att_fail(a, nread == UV_EOF ? "connection closed (TCP)"
                                : uv_strerror((int)nread));
    return;
  }
  a->tin_len += (size_t)nread;
  if (a->tin_len < 2)
    return;
  size_t want = (size_t)a->tin[0] << 8 | a->tin[1];
  if (a->tin_len < 2 + want) {
    if (a->tin_len >= TCP_MAX + 2)
      att_fail(a, "oversized TCP answer");
    return;
  }
  if (!att_answer(a, a->tin + 2, want, 1))
    att_fail(a, "unexpected answer over TCP");
}

static void on_tcp_write(uv_write_t *req, int status) {
  struct attempt *a = req->data;
  if (status < 0 && status != UV_ECANCELED && a->dq)
    att_fail(a, uv_strerror(status));
}

static void on_tcp_connect(uv_connect_t *req, int status) {
  struct attempt *a = req->data;
  if (!a->dq)
    return;
  if (status < 0) {
    att_fail(a, uv_strerror(status));
    return;
  }
  struct dq *d = a->dq;
  a->wbuf[0] = (uint8_t)(d->wire_len >> 8);
  a->wbuf[1] = (uint8_t)d->wire_len;
  memcpy(a->wbuf + 2, d->wire, d->wire_len);
  uv_buf_t b = uv_buf_init((char *)a->wbuf, (unsigned)(d->wire_len + 2));
  a->wr.data = a;
  int rc = uv_write(&a->wr, (uv_stream_t *)&a->tcp, &b, 1, on_tcp_write);
  if (rc == 0)
    rc = uv_read_start((uv_stream_t *)&a->tcp, on_tcp_alloc, on_tcp_read);
  if (rc < 0)
    att_fail(a, uv_strerror(rc));
}

/* Truncated over UDP: the same question over TCP to the same server, with a
 * fresh timeout (RFC 7766 §5). */
static void att_to_tcp(struct attempt *a) {
  if (a->udp_open && !uv_is_closing((uv_handle_t *)&a->udp))
    uv_close((uv_handle_t *)&a->udp, on_att_close);
  a->tin = malloc(TCP_MAX + 2);
  if (!a->tin) {
    att_fail(a, "out of memory");
    return;
  }
  int rc = uv_tcp_init(a->r->loop, &a->tcp);
  if (rc < 0) {
    att_fail(a, uv_strerror(rc));
    return;
  }
  a->tcp.data = a;
  a->tcp_open = 1;
  a->handles++;
  a->conn.data = a;
  rc = uv_tcp_connect(&a->conn, &a->tcp, (const struct sockaddr *)&a->server,
                      on_tcp_connect);
  if (rc == 0)
    rc = uv_timer_start(&a->timer, on_att_timeout, a->r->timeout_ms, 0);
  if (rc < 0)
    att_fail(a, uv_strerror(rc));
}

static int att_answer(struct attempt *a, const uint8_t *pkt, size_t len,
                      int over_tcp) {
  struct dq *d = a->dq;
  struct dns_rrset *rs = malloc(sizeof *rs);
  if (!rs) {
    att_fail(a, "out of memory");
    return 1;
  }
  enum dns_check c = dns_answer_parse(pkt, len, d->id, d->name, d->type, rs);
  if (c == DNS_CHECK_OK && a->r->counts) /* metrics */
    a->r->counts[rs->status == DNS_R_NXDOMAIN   ? RESOLVER_COUNT_NXDOMAIN
                 : rs->status == DNS_R_TEMPFAIL ? RESOLVER_COUNT_SERVFAIL
                                                : RESOLVER_COUNT_OK]++;
  int ended = 1;
  if (c == DNS_CHECK_IGNORE) {
    ended = 0; /* spoofed, stale or garbage: keep waiting */
  } else if (c == DNS_CHECK_TRUNCATED) {
    if (over_tcp)
      ended = 0;
    else
      att_to_tcp(a);
  } else if (rs->status == DNS_R_TEMPFAIL) {
    att_fail(a, rs->reason);
  } else {
    att_abandon(a);
    dq_finish(d, rs);
  }
  free(rs);
  return ended;
}

/* Starts the next attempt of d, or ends d with a temporary failure. */
static void dq_attempt(struct dq *d) {
  struct resolver *r = d->r;
  int total = r->n_servers * r->attempts;
  while (d->tries < total) {
    struct attempt *a = calloc(1, sizeof *a);
    if (!a) {
      snprintf(d->last_err, sizeof d->last_err, "out of memory");
      break;
    }
    a->r = r;
    a->dq = d;
    a->server = r->servers[d->tries % r->n_servers];
    d->tries++;
    d->att = a;
    /* A fresh ID for each attempt: a late answer to an earlier attempt
     * cannot be mistaken for this one's. */
    uint16_t id;
    rnd_bytes(r, &id, sizeof id);
    d->id = id;
    d->wire[0] = (uint8_t)(id >> 8);
    d->wire[1] = (uint8_t)id;

    uv_timer_init(r->loop, &a->timer);
    a->timer.data = a;
    a->handles++;
    int rc = uv_udp_init(r->loop, &a->udp);
    if (rc == 0) {
      a->udp.data = a;
      a->udp_open = 1;
      a->handles++;
      /* Port 0: the kernel picks a random ephemeral source port. */
      struct sockaddr_storage any;
      memset(&any, 0, sizeof any);
      any.ss_family = a->server.ss_family;
      rc = uv_udp_bind(&a->udp, (const struct sockaddr *)&any, 0);
    }
    if (rc == 0)
      rc = uv_udp_connect(&a->udp, (const struct sockaddr *)&a->server);
    if (rc == 0)
      rc = uv_udp_recv_start(&a->udp, on_udp_alloc, on_udp_recv);
    if (rc == 0) {
      uv_buf_t b = uv_buf_init((char *)d->wire, (unsigned)d->wire_len);
      a->send.data = a;
      rc = uv_udp_send(&a->send, &a->udp, &b, 1, NULL, on_udp_send);
    }
    if (rc == 0)
      rc = uv_timer_start(&a->timer, on_att_timeout, r->timeout_ms, 0);
    if (rc == 0)
      return;
    char srv[80];
    fmt_server(&a->server, srv, sizeof srv);
    snprintf(d->last_err, sizeof d->last_err, "%s (%s)", uv_strerror(rc), srv);
    att_abandon(a);
  }
  struct dns_rrset *rs = calloc(1, sizeof *rs);
  if (!rs)
    abort(); /* cannot even report the failure */
  rs->status = DNS_R_TEMPFAIL;
  snprintf(rs->reason, sizeof rs->reason, "%s",
           d->last_err[0] ? d->last_err : "no answer");
  dq_finish(d, rs);
  free(rs);
}

static struct dq *dq_find(struct dqlist *l, const char *name, uint16_t type) {
  for (struct dq *d = l->head; d; d = d->next)
    if (d->type == type && strcmp(d->name, name) == 0)
      return d;
  return NULL;
}

static void dq_start(struct dq *d) {
  struct resolver *r = d->r;
  dq_list_push(&r->inflight, d);
  d->inflight = 1;
  dq_attempt(d);
}

/* Starts waiting queries while there is room. */
static void dq_pump(struct resolver *r) {
  while (!r->closing && r->waiting.head && r->inflight.n < r->max_inflight) {
    struct dq *d = r->waiting.head;
    dq_list_remove(&r->waiting, d);
    dq_start(d);
  }
}

static void dq_free(struct dq *d) {
  struct resolver *r = d->r;
  att_abandon(d->att);
  dq_list_remove(d->inflight ? &r->inflight : &r->waiting, d);
  free(d);
}

/* The answer for d: cache it, hand it to every waiter, free d. */
static void dq_finish(struct dq *d, const struct dns_rrset *rs) {
  struct resolver *r = d->r;
  cache_put(r, d->name, d->type, rs);
  struct sub *w = d->waiters;
  d->waiters = NULL;
  dq_free(d);
  /* Internal steps only (no user code runs here), so the detached list
   * stays valid while we walk it. */
  while (w) {
    struct sub *next = w->wnext;
    w->dq = NULL;
    w->wprev = w->wnext = NULL;
    sub_on_rrset(w, rs);
    w = next;
  }
  dq_pump(r);
}

static void sub_wait(struct sub *s, struct dq *d) {
  s->dq = d;
  s->wprev = NULL;
  s->wnext = d->waiters;
  if (d->waiters)
    d->waiters->wprev = s;
  d->waiters = s;
}

static void sub_unwait(struct sub *s) {
  struct dq *d = s->dq;
  if (!d)
    return;
  if (s->wprev)
    s->wprev->wnext = s->wnext;
  else
    d->waiters = s->wnext;
  if (s->wnext)
    s->wnext->wprev = s->wprev;
  s->dq = NULL;
  s->wprev = s->wnext = NULL;
  if (!d->waiters) {
    /* Nobody wants the answer any more. */
    struct resolver *r = d->r;
    dq_free(d);
    dq_pump(r);
  }
}

/* Asks s's question: from the cache, an existing query, or a new one. */
static void sub_start(struct sub *s) {
  struct resolver *r = s->q->r;
  struct cache_entry *e = cache_find(r, s->name, s->type);
  if (e) {
    struct dns_rrset *rs = calloc(1, sizeof *rs);
    if (!rs)
      abort();
    rs->status = e->status;
    rs->secure = e->secure;
    rs->ttl = 1;
    snprintf(rs->cname, sizeof rs->cname, "%s", e->cname);
    rs->n = e->n;
    if (e->n > 0)
      for (int i = 0; i < e->n; i++)
        memcpy(&rs->rr[i], e->rr + rr_size(e->type) * (size_t)i,
               rr_size(e->type));
    sub_on_rrset(s, rs);
    free(rs);
    return;
  }
  struct dq *d = dq_find(&r->inflight, s->name, s->type);
  if (!d)
    d = dq_find(&r->waiting, s->name, s->type);
  if (d) {
    sub_wait(s, d);
    return;
  }
  d = calloc(1, sizeof *d);
  struct dns_rrset fail = {.status = DNS_R_TEMPFAIL};
  if (!d) {
    snprintf(fail.reason, sizeof fail.reason, "out of memory");
    sub_on_rrset(s, &fail);
    return;
  }
  d->r = r;
  snprintf(d->name, sizeof d->name, "%s", s->name);
  d->type = s->type;
  if (dns_query_build(0, d->name, d->type, d->wire, sizeof d->wire,
                      &d->wire_len) != 0) {
    free(d);
    snprintf(fail.reason, sizeof fail.reason, "cannot encode %.100s", s->name);
    sub_on_rrset(s, &fail);
    return;
  }
  sub_wait(s, d);
  dq_list_push(&r->waiting, d);
  dq_pump(r);
}

/* ---- lookups ---------------------------------------------------------- */

static void q_complete(struct resolver_query *q) {
  struct resolver *r = q->r;
  q_list_remove(&r->active, q);
  q->state = Q_DONE;
  q_list_push(&r->done, q);
  kick(r);
}

static void q_build(struct resolver_query *q) {
  mx_build(q->domain, q->hosts, q->n_hosts, q->port, q->r->self, q->r->n_self,
           q->r->max_addrs, &q->res);
  q->res.mx_secure = q->kind == Q_MX && q->mx_secure;
  q_complete(q);
}

static void q_add_sub(struct resolver_query *q, int host, const char *name,
                      uint16_t type) {
  struct sub *s = &q->subs[q->n_subs++];
  memset(s, 0, sizeof *s);
  s->q = q;
  s->host = host;
  s->type = type;
  snprintf(s->name, sizeof s->name, "%s", name);
  q->pending++;
}

/* Starts the address lookups of every host that is not an IP literal. */
static void q_resolve_hosts(struct resolver_query *q) {
  int first = q->n_subs;
  for (int h = 0; h < q->n_hosts; h++) {
    struct mx_addr ip;
    if (mx_parse_ip(q->hosts[h].name, &ip)) {
      q->hosts[h].addr[0] = ip;
      q->hosts[h].n_addr = 1;
      q->hosts[h].addr_status = DNS_R_OK;
      continue;
    }
    q->hosts[h].addr_status = DNS_R_NXDOMAIN;
    q->hosts[h].secure = 1; /* until an answer without AD */
    q_add_sub(q, h, q->hosts[h].name, DNS_TYPE_AAAA);
    q_add_sub(q, h, q->hosts[h].name, DNS_TYPE_A);
  }
  if (q->pending == 0) {
    q_build(q);
    return;
  }
  /* Count first, start after: a cached answer completes a sub at once. */
  int last = q->n_subs;
  for (int i = first; i < last; i++)
    if (q->state == Q_ACTIVE)
      sub_start(&q->subs[i]);
}

static void q_on_mx(struct resolver_query *q, const struct dns_rrset *rs,
                    int secure) {
  q->mx_secure = secure;
  switch (rs->status) {
  case DNS_R_OK:
    q->n_hosts =
        mx_order(q->domain, rs->rr, rs->n, rnd32, q->r, q->hosts, &q->res);
    if (q->n_hosts == 0) {
      q_complete(q);
      return;
    }
    q_resolve_hosts(q);
    return;
  case DNS_R_NODATA:
    /* RFC 5321 §5.1: no MX, the domain itself is the host (implicit MX). */
    q->res.implicit = 1;
    q->n_hosts = 1;
    memset(&q->hosts[0], 0, sizeof q->hosts[0]);
    snprintf(q->hosts[0].name, sizeof q->hosts[0].name, "%s", q->ascii);
    q_resolve_hosts(q);
    return;
  case DNS_R_NXDOMAIN:
    mx_result_fail(&q->res, DNS_PERMFAIL, "5.1.2",
                   "Host or domain name not found. Name service error for "
                   "name=%s type=MX: Host not found",
                   q->ascii);
    q_complete(q);
    return;
  case DNS_R_CNAME: /* handled in sub_on_rrset */
  case DNS_R_TEMPFAIL:
    break;
  }
  mx_result_fail(&q->res, DNS_TEMPFAIL, "4.4.3",
                 "Name service error for name=%s type=MX: %s", q->ascii,
                 rs->reason[0] ? rs->reason : "temporary failure");
  q_complete(q);
}

static void q_on_addr(struct resolver_query *q, struct sub *s,
                      const struct dns_rrset *rs, int secure) {
  struct mx_host *h = &q->hosts[s->host];
  /* RFC 7672 §2.2.2: the addresses we use (and the denial of the other
   * family) must all be secure; a failed family gives no address. */
  if (rs->status != DNS_R_TEMPFAIL && !secure)
    h->secure = 0;
  const char *tname = s->type == DNS_TYPE_A ? "A" : "AAAA";
  char tmp[sizeof h->err];
  if (rs->status == DNS_R_OK) {
    int fam = s->type == DNS_TYPE_A ? AF_INET : AF_INET6;
    int len = s->type == DNS_TYPE_A ? 4 : 16;
    int added = 0;
    for (int i = 0; i < rs->n && added < MX_HOST_MAX_ADDR / 2 &&
                    h->n_addr < MX_HOST_MAX_ADDR;
         i++) {
      if (rs->rr[i].type != s->type)
        continue;
      struct mx_addr *a = &h->addr[h->n_addr++];
      memset(a, 0, sizeof *a);
      a->family = fam;
      memcpy(a->a, rs->rr[i].addr, (size_t)len);
      added++;
    }
    h->addr_status = DNS_R_OK;
  } else if (h->n_addr == 0) {
    /* The worst failure wins: a temporary one means "try later". */
    if (rs->status == DNS_R_TEMPFAIL) {
      h->addr_status = DNS_R_TEMPFAIL;
      snprintf(tmp, sizeof tmp, "%s type=%s: %.120s", s->name, tname,
               rs->reason);
      memcpy(h->err, tmp, sizeof h->err);
    } else if (h->addr_status != DNS_R_TEMPFAIL) {
      h->addr_status = rs->status;
      snprintf(tmp, sizeof tmp, "%s type=%s: %s", s->name, tname,
               rs->status == DNS_R_NXDOMAIN ? "Host not found"
                                            : "No address associated");
      memcpy(h->err, tmp, sizeof h->err);
    }
  }
  if (--q->pending == 0)
    q_build(q);
}

/* The TXT answer (resolver_lookup_txt). */
static void q_on_txt(struct resolver_query *q, const struct dns_rrset *rs) {
  struct resolver_txt *t = q->txt;
  switch (rs->status) {
  case DNS_R_OK:
    t->status = DNS_OK;
    for (int i = 0; i < rs->n && t->n < RESOLVER_TXT_MAX; i++)
      if (rs->rr[i].type == DNS_TYPE_TXT)
        memcpy(t->txt[t->n++], rs->rr[i].rdata, sizeof t->txt[0]);
    break;
  case DNS_R_NXDOMAIN:
    t->nxdomain = 1;
    /* fall through */
  case DNS_R_NODATA:
    t->status = DNS_OK;
    break;
  case DNS_R_CNAME:
  case DNS_R_TEMPFAIL:
    t->status = DNS_TEMPFAIL;
    snprintf(t->reason, sizeof t->reason,
             "Name service error for name=%s type=TXT: %s", q->ascii,
             rs->reason[0] ? rs->reason : "temporary failure");
    break;
  }
  q_complete(q);
}

/* The TLSA answer: kept for the callback (RFC 7672 §2.2.3). */
static void q_on_tlsa(struct resolver_query *q, const struct dns_rrset *rs,
                      int secure) {
  q->tlsa = malloc(sizeof *q->tlsa);
  if (q->tlsa) {
    memcpy(q->tlsa, rs, sizeof *rs);
    q->tlsa->secure = secure;
  }
  q_complete(q);
}

static void sub_on_rrset(struct sub *s, const struct dns_rrset *rs) {
  struct resolver_query *q = s->q;
  if (q->state != Q_ACTIVE)
    return;
  if (rs->status == DNS_R_CNAME) {
    if (++s->hops > DNS_CNAME_MAX) {
      struct dns_rrset fail = {.status = DNS_R_TEMPFAIL};
      snprintf(fail.reason, sizeof fail.reason, "CNAME chain too long");
      sub_on_rrset(s, &fail);
      return;
    }
    if (!rs->secure)
      s->insecure = 1;
    if (dns_name_normalize(rs->cname, s->name, sizeof s->name) != 0) {
      struct dns_rrset fail = {.status = DNS_R_TEMPFAIL};
      snprintf(fail.reason, sizeof fail.reason, "bad CNAME target");
      sub_on_rrset(s, &fail);
      return;
    }
    sub_start(s);
    return;
  }
  if (rs->status != DNS_R_TEMPFAIL && !rs->secure)
    s->insecure = 1;
  int secure = !s->insecure && rs->status != DNS_R_TEMPFAIL;
  if (s->host == SUB_TXT) {
    q->pending--;
    q_on_txt(q, rs);
    return;
  }
  if (s->host == SUB_TLSA) {
    q->pending--;
    q_on_tlsa(q, rs, secure);
  } else if (s->host < 0) {
    q->pending--;
    q_on_mx(q, rs, secure);
  } else {
    q_on_addr(q, s, rs, secure);
  }
}

/* Begins a lookup that was queued by resolver_lookup_*(). */
static void q_begin(struct resolver_query *q) {
  struct resolver *r = q->r;
  q_list_remove(&r->starting, q);
  q->state = Q_ACTIVE;
  q_list_push(&r->active, q);

  if (q->kind == Q_TXT) {
    if (resolver_domain_to_ascii(q->domain, q->ascii, sizeof q->ascii) != 0) {
      q->txt->status = DNS_OK; /* no such name: no records */
      q->txt->nxdomain = 1;
      q_complete(q);
      return;
    }
    q_add_sub(q, SUB_TXT, q->ascii, DNS_TYPE_TXT);
    sub_start(&q->subs[0]);
    return;
  }
  /* An IP literal is its own address: no query at all. */
  struct mx_addr ip;
  size_t dl = strlen(q->domain);
  int bracketed = dl > 1 && q->domain[0] == '[' && q->domain[dl - 1] == ']';
  if (q->kind != Q_TLSA && (bracketed || q->kind == Q_HOST) &&
      mx_parse_ip(q->domain, &ip)) {
    q->n_hosts = 1;
    memset(&q->hosts[0], 0, sizeof q->hosts[0]);
    snprintf(q->hosts[0].name, sizeof q->hosts[0].name, "%s", q->domain);
    q->hosts[0].addr[0] = ip;
    q->hosts[0].n_addr = 1;
    q->hosts[0].addr_status = DNS_R_OK;
    q_build(q);
    return;
  }
  const char *name = q->domain;
  char inner[DNS_NAME_MAX + 2];
  if (bracketed) {
    /* "[host]" given to the MX lookup: strip the brackets, no MX. */
    snprintf(inner, sizeof inner, "%.*s", (int)(dl - 2), q->domain + 1);
    name = inner;
    q->kind = Q_HOST;
  }
  if (resolver_domain_to_ascii(name, q->ascii, sizeof q->ascii) != 0) {
    mx_result_fail(&q->res, DNS_PERMFAIL, "5.1.2", "Invalid domain name: %s",
                   q->domain);
    if (q->kind == Q_TLSA && (q->tlsa = calloc(1, sizeof *q->tlsa)))
      snprintf(q->tlsa->reason, sizeof q->tlsa->reason,
               "invalid TLSA name %.200s", q->domain);
    q_complete(q);
    return;
  }
  if (q->kind == Q_TLSA) {
    q_add_sub(q, SUB_TLSA, q->ascii, DNS_TYPE_TLSA);
    sub_start(&q->subs[0]);
    return;
  }
  if (q->kind == Q_HOST) {
    q->n_hosts = 1;
    memset(&q->hosts[0], 0, sizeof q->hosts[0]);
    snprintf(q->hosts[0].name, sizeof q->hosts[0].name, "%s", q->ascii);
    q_resolve_hosts(q);
    return;
  }
  q_add_sub(q, SUB_MX, q->ascii, DNS_TYPE_MX);
  sub_start(&q->subs[0]);
}

/* Calls q's callback with its result (or the cancellation). */
static void deliver(struct resolver_query *q, int canceled) {
  if (q->kind == Q_TXT) {
    if (canceled) {
      memset(q->txt, 0, sizeof *q->txt);
      q->txt->status = DNS_CANCELED;
      snprintf(q->txt->reason, sizeof q->txt->reason, "lookup canceled");
    }
    q->xcb(q, q->txt, q->data);
    return;
  }
  if (q->kind != Q_TLSA) {
    q->cb(q, &q->res, q->data);
    return;
  }
  static const struct dns_rrset oom = {.status = DNS_R_TEMPFAIL,
                                       .reason = "out of memory"};
  static const struct dns_rrset cancel = {.status = DNS_R_TEMPFAIL,
                                          .reason = "lookup canceled"};
  q->tcb(q, canceled ? &cancel : q->tlsa ? q->tlsa : &oom, canceled, q->data);
}

/* Runs queued starts and finished callbacks, one at a time, from the loop. */
static void on_idle(uv_idle_t *h) {
  struct resolver *r = h->data;
  while (!r->free_requested && (r->starting.head || r->done.head)) {
    if (r->starting.head) {
      q_begin(r->starting.head);
      continue;
    }
    struct resolver_query *q = r->done.head;
    q_list_remove(&r->done, q);
    r->in_cb++;
    deliver(q, 0);
    r->in_cb--;
    free(q->tlsa);
    free(q->txt);
    free(q);
  }
  if (r->free_requested) {
    resolver_free(r);
    return;
  }
  uv_idle_stop(&r->idle);
  r->idle_on = 0;
}

static void kick(struct resolver *r) {
  if (!r->idle_on && !r->closing) {
    uv_idle_start(&r->idle, on_idle);
    r->idle_on = 1;
  }
}

static struct resolver_query *q_new(struct resolver *r, enum q_kind kind,
                                    const char *domain, uint16_t port,
                                    resolver_cb cb, void *data) {
  if (r->closing || r->free_requested)
    return NULL;
  struct resolver_query *q = calloc(1, sizeof *q);
  if (!q)
    return NULL;
  q->r = r;
  q->kind = kind;
  q->port = port;
  q->cb = cb;
  q->data = data;
  snprintf(q->domain, sizeof q->domain, "%s", domain);
  if (strlen(domain) >= sizeof q->domain)
    q->domain[0] = '\0'; /* too long: fails as an invalid name */
  q->state = Q_STARTING;
  q_list_push(&r->starting, q);
  kick(r);
  return q;
}

struct resolver_query *resolver_lookup_mx(struct resolver *r,
                                          const char *domain, uint16_t port,
                                          resolver_cb cb, void *data) {
  return q_new(r, Q_MX, domain, port, cb, data);
}

struct resolver_query *resolver_lookup_host(struct resolver *r,
                                            const char *host, uint16_t port,
                                            resolver_cb cb, void *data) {
  return q_new(r, Q_HOST, host, port, cb, data);
}

struct resolver_query *resolver_lookup_txt(struct resolver *r, const char *name,
                                           resolver_txt_cb cb, void *data) {
  struct resolver_txt *t = calloc(1, sizeof *t);
  if (!t)
    return NULL;
  struct resolver_query *q = q_new(r, Q_TXT, name, 0, NULL, data);
  if (!q) {
    free(t);
    return NULL;
  }
  q->xcb = cb;
  q->txt = t;
  return q;
}

struct resolver_query *resolver_lookup_tlsa(struct resolver *r,
                                            const char *host, uint16_t port,
                                            resolver_tlsa_cb cb, void *data) {
  char name[DNS_NAME_MAX + 2];
  int n = snprintf(name, sizeof name, "_%u._tcp.%s", (unsigned)port, host);
  if (n < 0 || (size_t)n >= sizeof name)
    name[0] = '\0'; /* fails as an invalid name */
  struct resolver_query *q = q_new(r, Q_TLSA, name, port, NULL, data);
  if (q)
    q->tcb = cb;
  return q;
}

int resolver_servers_loopback(const struct resolver *r) {
  for (int i = 0; i < r->n_servers; i++) {
    const struct sockaddr_storage *ss = &r->servers[i];
    if (ss->ss_family == AF_INET) {
      const struct sockaddr_in *s4 = (const void *)ss;
      if ((ntohl(s4->sin_addr.s_addr) >> 24) != 127)
        return 0;
    } else {
      const struct sockaddr_in6 *s6 = (const void *)ss;
      if (!IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr))
        return 0;
    }
  }
  return 1;
}

/* Drops every question q waits on and takes it off its list. */
static void q_detach(struct resolver_query *q) {
  for (int i = 0; i < q->n_subs; i++)
    sub_unwait(&q->subs[i]);
  q_list_remove(q_list_of(q), q);
}

void resolver_cancel(struct resolver_query *q) {
  struct resolver *r = q->r;
  q_detach(q);
  r->in_cb++;
  if (q->kind == Q_TLSA || q->kind == Q_TXT) {
    deliver(q, 1);
  } else {
    struct mx_result res;
    memset(&res, 0, sizeof res);
    mx_result_fail(&res, DNS_CANCELED, "4.3.0", "lookup canceled");
    q->cb(q, &res, q->data);
  }
  r->in_cb--;
  free(q->tlsa);
  free(q->txt);
  free(q);
}

/* ---- setup and teardown ------------------------------------------------ */

static void on_resolver_close(uv_handle_t *h) {
  free(h->data);
}

void resolver_set_counters(struct resolver *r, uint64_t *counts) {
  r->counts = counts;
}

void resolver_free(struct resolver *r) {
  if (r->closing)
    return;
  if (r->in_cb) {
    r->free_requested = 1;
    return;
  }
  r->free_requested = 1; /* no new lookups from the callbacks below */
  struct qlist *lists[] = {&r->starting, &r->active, &r->done};
  for (int i = 0; i < 3; i++)
    while (lists[i]->head)
      resolver_cancel(lists[i]->head);
  r->closing = 1;
  while (r->inflight.head)
    dq_free(r->inflight.head);
  while (r->waiting.head)
    dq_free(r->waiting.head);
  while (r->lru_head)
    cache_drop(r, r->lru_head);
  free(r->buckets);
  r->buckets = NULL;
  uv_close((uv_handle_t *)&r->idle, on_resolver_close);
}

static void add_self(struct resolver *r, const struct sockaddr_storage *ss) {
  if (r->n_self < RESOLVER_MAX_SELF)
    r->self[r->n_self++] = *ss;
}

/* A wildcard listener stands for every local address of its family. */
static void expand_self(struct resolver *r, const struct sockaddr_storage *ss) {
  int wild = 0;
  uint16_t port = 0;
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *s4 = (const void *)ss;
    wild = s4->sin_addr.s_addr == htonl(INADDR_ANY);
    port = s4->sin_port;
  } else if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *s6 = (const void *)ss;
    wild = IN6_IS_ADDR_UNSPECIFIED(&s6->sin6_addr);
    port = s6->sin6_port;
  } else {
    return;
  }
  if (!wild) {
    add_self(r, ss);
    return;
  }
  struct ifaddrs *ifa = NULL;
  if (getifaddrs(&ifa) != 0)
    return;
  for (struct ifaddrs *i = ifa; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != ss->ss_family)
      continue;
    struct sockaddr_storage x;
    memset(&x, 0, sizeof x);
    if (ss->ss_family == AF_INET) {
      memcpy(&x, i->ifa_addr, sizeof(struct sockaddr_in));
      ((struct sockaddr_in *)&x)->sin_port = port;
    } else {
      memcpy(&x, i->ifa_addr, sizeof(struct sockaddr_in6));
      ((struct sockaddr_in6 *)&x)->sin6_port = port;
    }
    add_self(r, &x);
  }
  freeifaddrs(ifa);
}

int resolver_parse_resolv_conf(const char *text, struct sockaddr_storage *out,
                               int max, uint64_t *timeout_ms, int *attempts) {
  int n = 0;
  const char *p = text;
  while (*p) {
    const char *eol = strchr(p, '\n');
    size_t len = eol ? (size_t)(eol - p) : strlen(p);
    char line[512];
    if (len >= sizeof line)
      len = sizeof line - 1;
    memcpy(line, p, len);
    line[len] = '\0';
    p = eol ? eol + 1 : p + strlen(p);
    char *save = NULL;
    char *w = strtok_r(line, " \t\r", &save);
    if (!w || w[0] == '#' || w[0] == ';')
      continue;
    if (strcmp(w, "nameserver") == 0) {
      char *ip = strtok_r(NULL, " \t\r", &save);
      if (!ip || n >= max)
        continue;
      struct sockaddr_storage ss;
      memset(&ss, 0, sizeof ss);
      struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
      struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
      if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons(53);
      } else if (inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(53);
      } else {
        continue; /* scoped or malformed: skip, as glibc would */
      }
      out[n++] = ss;
    } else if (strcmp(w, "options") == 0) {
      for (char *o; (o = strtok_r(NULL, " \t\r", &save));) {
        if (strncmp(o, "timeout:", 8) == 0) {
          long v = strtol(o + 8, NULL, 10);
          if (v >= 1 && v <= 30)
            *timeout_ms = (uint64_t)v * 1000;
        } else if (strncmp(o, "attempts:", 9) == 0) {
          long v = strtol(o + 9, NULL, 10);
          if (v >= 1 && v <= 5)
            *attempts = (int)v;
        }
      }
    }
  }
  return n;
}

int resolver_domain_to_ascii(const char *in, char *out, size_t cap) {
  int ascii = 1;
  for (const char *p = in; *p; p++)
    if ((unsigned char)*p >= 0x80)
      ascii = 0;
  if (ascii)
    return dns_name_normalize(in, out, cap);
  char *a = NULL;
  /* IDNA2008 with UTS #46 mapping (lower-casing, NFC), non-transitional as
   * browsers and Postfix's smtputf8 do. */
  if (idn2_to_ascii_8z(in, &a, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL) !=
      IDN2_OK)
    return -EINVAL;
  int rc = dns_name_normalize(a, out, cap);
  idn2_free(a);
  return rc;
}

static int read_resolv_conf(const char *path, struct resolver *r,
                            uint64_t *timeout_ms, int *attempts) {
  FILE *f = fopen(path, "r");
  if (!f)
    return 0;
  char text[8192];
  size_t n = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  text[n] = '\0';
  return resolver_parse_resolv_conf(text, r->servers, RESOLVER_MAX_SERVERS,
                                    timeout_ms, attempts);
}

struct resolver *resolver_new(uv_loop_t *loop, const struct resolver_opts *o,
                              int *err) {
  struct resolver *r = calloc(1, sizeof *r);
  if (!r) {
    *err = -ENOMEM;
    return NULL;
  }
  r->loop = loop;
  r->rpos = sizeof r->rpool;
  uint64_t timeout_ms = DEFAULT_TIMEOUT_MS;
  int attempts = DEFAULT_ATTEMPTS;
  if (o->n_servers > 0) {
    for (int i = 0; i < o->n_servers && i < RESOLVER_MAX_SERVERS; i++)
      r->servers[r->n_servers++] = o->servers[i];
  } else {
    r->n_servers =
        read_resolv_conf(o->resolv_conf ? o->resolv_conf : "/etc/resolv.conf",
                         r, &timeout_ms, &attempts);
  }
  if (r->n_servers == 0) {
    free(r);
    *err = -ENOENT;
    return NULL;
  }
  r->timeout_ms = o->timeout_ms ? o->timeout_ms : timeout_ms;
  r->attempts = o->attempts > 0 ? o->attempts : attempts;
  r->max_inflight = o->max_inflight > 0 ? o->max_inflight : DEFAULT_INFLIGHT;
  r->max_addrs = o->max_addrs;
  r->cache_max = o->cache_size == 0 ? DEFAULT_CACHE : o->cache_size;
  if (r->cache_max > 0) {
    r->nbuckets = 16;
    while (r->nbuckets < (unsigned)r->cache_max)
      r->nbuckets <<= 1;
    r->buckets = calloc(r->nbuckets, sizeof *r->buckets);
    if (!r->buckets) {
      free(r);
      *err = -ENOMEM;
      return NULL;
    }
  }
  for (int i = 0; i < o->n_self; i++)
    expand_self(r, &o->self[i]);
  uv_idle_init(loop, &r->idle);
  r->idle.data = r;
  return r;
}
