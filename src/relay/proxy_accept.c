/*
 * proxy_accept: read a PROXY protocol header off a new connection before
 * its SMTP session starts.  See proxy_accept.h.
 *
 * One waiting connection has a uv_poll_t on the conn's socket (the conn
 * itself is not reading: it has no owner yet) and a uv_timer_t for the
 * 10 s bound.  Its memory goes when both handles have closed.
 */
#include "relay/proxy_accept.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "config.h"
#include "log.h"
#include "loop/conn.h"
#include "proto/proxy.h"

struct waiting {
  struct proxy_accept *pa;
  struct waiting *prev, *next;
  struct conn *c; /* NULL once handed on or closed */
  int tls;
  int handles; /* open handles (poll, timer) */
  uv_poll_t poll;
  uv_timer_t timer;
  struct proxy_parser parser;
};

struct proxy_accept {
  uv_loop_t *loop;
  const struct config *cfg;
  int max_pending;
  proxy_accept_cb cb;
  void *data;
  struct waiting *list;
  int n_pending;
  int n_handles; /* handles of every waiting, open or closing */
  int freeing;
};

static void maybe_free(struct proxy_accept *pa) {
  if (pa->freeing && pa->n_handles == 0 && pa->n_pending == 0)
    free(pa);
}

static void on_handle_closed(uv_handle_t *h) {
  struct waiting *w = h->data;
  struct proxy_accept *pa = w->pa;
  pa->n_handles--;
  if (--w->handles == 0)
    free(w);
  maybe_free(pa);
}

/* Takes w off the list and closes its handles; w->c is the caller's. */
static void waiting_end(struct waiting *w) {
  struct proxy_accept *pa = w->pa;
  if (w->prev)
    w->prev->next = w->next;
  else
    pa->list = w->next;
  if (w->next)
    w->next->prev = w->prev;
  pa->n_pending--;
  /* The poll stops watching the descriptor now (uv_close is immediate
   * for that); only the memory waits for the callbacks. */
  uv_close((uv_handle_t *)&w->poll, on_handle_closed);
  uv_close((uv_handle_t *)&w->timer, on_handle_closed);
  w->c = NULL;
}

static void reject(struct waiting *w, const char *reason) {
  struct conn *c = w->c;
  struct log_line l;
  log_begin(&l, LOG_INFO, "rejected");
  log_str(&l, "client", conn_peer_str(c));
  log_str(&l, "reason", reason);
  log_end(&l);
  waiting_end(w);
  conn_close(c, CONN_END_LOCAL); /* unowned: no callback, no reply */
}

static void to_sockaddr(const struct proxy_addr *a,
                        struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof *ss);
  if (a->family == 4) {
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    s4->sin_family = AF_INET;
    memcpy(&s4->sin_addr, a->ip, 4);
    s4->sin_port = htons(a->port);
  } else {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    s6->sin6_family = AF_INET6;
    memcpy(&s6->sin6_addr, a->ip, 16);
    s6->sin6_port = htons(a->port);
  }
}

static void accepted(struct waiting *w, const struct proxy_result *r) {
  struct proxy_accept *pa = w->pa;
  struct conn *c = w->c;
  int tls = w->tls;
  char balancer[64];
  snprintf(balancer, sizeof balancer, "%s", conn_peer_str(c));
  if (!r->local) {
    struct sockaddr_storage ss;
    to_sockaddr(&r->src, &ss);
    if (conn_set_peer(c, (const struct sockaddr *)&ss) < 0) {
      reject(w, "proxy header: bad address");
      return;
    }
  }
  if (log_enabled(LOG_DEBUG)) {
    struct log_line l;
    log_begin(&l, LOG_DEBUG, "proxy");
    log_str(&l, "client", conn_peer_str(c));
    log_str(&l, "balancer", balancer);
    log_int(&l, "version", r->version);
    log_str(&l, "command", r->local ? "local" : "proxy");
    log_end(&l);
  }
  waiting_end(w);
  pa->cb(c, tls, pa->data);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  struct waiting *w = h->data;
  (void)events;
  if (!w->c)
    return;
  if (status < 0) {
    reject(w, "proxy header: socket error");
    return;
  }
  int fd = conn_fileno(w->c);
  uint8_t buf[PROXY_ACCEPT_PEEK];
  ssize_t n;
  do
    n = recv(fd, buf, sizeof buf, MSG_PEEK);
  while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
    return;
  if (n < 0) {
    reject(w, "proxy header: socket error");
    return;
  }
  if (n == 0) {
    reject(w, "proxy header: closed before the header");
    return;
  }
  size_t used = 0;
  struct proxy_result r;
  enum proxy_status st = proxy_parse(&w->parser, buf, (size_t)n, &used, &r);
  if (st == PROXY_BAD) {
    reject(w, "proxy header: malformed or missing");
    return;
  }
  /* Take exactly the header's bytes; the rest stays for the session. */
  ssize_t got;
  do
    got = recv(fd, buf, used, 0);
  while (got < 0 && errno == EINTR);
  if (got != (ssize_t)used) {
    reject(w, "proxy header: socket error");
    return;
  }
  if (st == PROXY_DONE)
    accepted(w, &r);
}

static void on_timer(uv_timer_t *t) {
  struct waiting *w = t->data;
  if (w->c)
    reject(w, "proxy header: timeout");
}

struct proxy_accept *proxy_accept_new(uv_loop_t *loop, const struct config *cfg,
                                      int max_pending, proxy_accept_cb cb,
                                      void *data) {
  struct proxy_accept *pa = calloc(1, sizeof *pa);
  if (!pa)
    return NULL;
  pa->loop = loop;
  pa->cfg = cfg;
  pa->max_pending = max_pending > 0 ? max_pending : 1;
  pa->cb = cb;
  pa->data = data;
  return pa;
}

void proxy_accept_conn(struct proxy_accept *pa, struct conn *c, int tls) {
  const struct config *cfg = pa->cfg;
  const char *why = NULL;
  if (pa->freeing)
    why = "shutting down";
  else if (!config_cidr_match(cfg->proxy_networks, cfg->n_proxy_networks,
                              conn_peer(c)))
    why = "not in proxy_networks";
  else if (pa->n_pending >= pa->max_pending)
    why = "too many connections waiting for a proxy header";
  struct waiting *w = why ? NULL : calloc(1, sizeof *w);
  if (!w) {
    struct log_line l;
    log_begin(&l, LOG_INFO, "rejected");
    log_str(&l, "client", conn_peer_str(c));
    log_str(&l, "reason", why ? why : "out of memory");
    log_end(&l);
    conn_close(c, CONN_END_LOCAL);
    return;
  }
  w->pa = pa;
  w->c = c;
  w->tls = tls;
  proxy_init(&w->parser);
  int fd = conn_fileno(c);
  if (fd < 0 || uv_poll_init(pa->loop, &w->poll, fd) < 0) {
    free(w);
    conn_close(c, CONN_END_LOCAL);
    return;
  }
  uv_timer_init(pa->loop, &w->timer);
  w->poll.data = w->timer.data = w;
  w->handles = 2;
  pa->n_handles += 2;
  w->next = pa->list;
  if (pa->list)
    pa->list->prev = w;
  pa->list = w;
  pa->n_pending++;
  uv_timer_start(&w->timer, on_timer, PROXY_ACCEPT_TIMEOUT_MS, 0);
  if (uv_poll_start(&w->poll, UV_READABLE, on_poll) < 0)
    reject(w, "proxy header: socket error");
}

int proxy_accept_pending(const struct proxy_accept *pa) {
  return pa->n_pending;
}

void proxy_accept_free(struct proxy_accept *pa) {
  pa->freeing = 1;
  while (pa->list) {
    struct waiting *w = pa->list;
    struct conn *c = w->c;
    waiting_end(w);
    conn_close(c, CONN_END_SHUTDOWN);
  }
  maybe_free(pa);
}
