/*
 * resolver: DNS lookups over the resolver's own libuv sockets (see
 * resolver.h for the contract).  This file is the resolver object: its
 * options and defaults, setup and teardown, and the relay's own addresses
 * for the loop check; the parts are listed in resolver_internal.h.
 *
 * Owns: the resolver and its idle handle (which starts new lookups and
 * runs the callbacks, resolver_lookup.c); freed from the idle handle's
 * close callback.  resolver_free() cancels every lookup, ends every
 * transport query and empties the cache.
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
#include <stdlib.h>
#include <string.h>

#include "dns/resolver_internal.h"

#define DEFAULT_TIMEOUT_MS 5000
#define DEFAULT_ATTEMPTS 2
#define DEFAULT_INFLIGHT 128
#define DEFAULT_CACHE 4096

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
    rsv_dq_free(r->inflight.head);
  while (r->waiting.head)
    rsv_dq_free(r->waiting.head);
  while (r->lru_head)
    rsv_cache_drop(r, r->lru_head);
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
    r->n_servers = rsv_read_resolv_conf(o->resolv_conf ? o->resolv_conf
                                                       : "/etc/resolv.conf",
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
