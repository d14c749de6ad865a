/*
 * resolver_transport: the resolver's questions on the wire (see
 * resolver.h for the contract, resolver_internal.h for the parts).
 *
 * Owns: the transport queries (struct dq, one per (name, type) being
 * asked, shared by every lookup question (struct sub) waiting for it),
 * at most r->max_inflight of them holding sockets, the rest waiting in
 * FIFO order; each attempt's sockets and timer (struct attempt, freed by
 * the close callback of its last handle); the random pool (query IDs, and
 * rsv_rnd32() for the MX shuffle).
 *
 * An attempt is a fresh UDP socket on a kernel-chosen source port with a
 * fresh random ID, to the next server in turn (r->attempts rounds over the
 * servers); a truncated answer is asked again over TCP to the same server.
 * Never trusts a datagram that does not match source, ID and question
 * (dns_answer_parse); never calls user code: answers go to the lookups
 * through rsv_sub_on_rrset(), which only queues results.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "dns/resolver_internal.h"

#define TCP_MAX 65535

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

static void dq_pump(struct resolver *r);

/* ---- lists ------------------------------------------------------------ */

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

uint32_t rsv_rnd32(void *ctx) {
  uint32_t v;
  rnd_bytes(ctx, &v, sizeof v);
  return v;
}

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

/* ---- queries and their waiters ----------------------------------------- */

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

void rsv_dq_free(struct dq *d) {
  struct resolver *r = d->r;
  att_abandon(d->att);
  dq_list_remove(d->inflight ? &r->inflight : &r->waiting, d);
  free(d);
}

/* The answer for d: cache it, hand it to every waiter, free d. */
static void dq_finish(struct dq *d, const struct dns_rrset *rs) {
  struct resolver *r = d->r;
  rsv_cache_put(r, d->name, d->type, rs);
  struct sub *w = d->waiters;
  d->waiters = NULL;
  rsv_dq_free(d);
  /* Internal steps only (no user code runs here), so the detached list
   * stays valid while we walk it. */
  while (w) {
    struct sub *next = w->wnext;
    w->dq = NULL;
    w->wprev = w->wnext = NULL;
    rsv_sub_on_rrset(w, rs);
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

void rsv_sub_unwait(struct sub *s) {
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
    rsv_dq_free(d);
    dq_pump(r);
  }
}

/* Asks s's question: from the cache, an existing query, or a new one. */
void rsv_sub_start(struct sub *s) {
  struct resolver *r = s->q->r;
  struct cache_entry *e = rsv_cache_find(r, s->name, s->type);
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
        memcpy(&rs->rr[i], e->rr + rsv_rr_size(e->type) * (size_t)i,
               rsv_rr_size(e->type));
    rsv_sub_on_rrset(s, rs);
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
    rsv_sub_on_rrset(s, &fail);
    return;
  }
  d->r = r;
  snprintf(d->name, sizeof d->name, "%s", s->name);
  d->type = s->type;
  if (dns_query_build(0, d->name, d->type, d->wire, sizeof d->wire,
                      &d->wire_len) != 0) {
    free(d);
    snprintf(fail.reason, sizeof fail.reason, "cannot encode %.100s", s->name);
    rsv_sub_on_rrset(s, &fail);
    return;
  }
  sub_wait(s, d);
  dq_list_push(&r->waiting, d);
  dq_pump(r);
}
