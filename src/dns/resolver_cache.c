/*
 * resolver_cache: the resolver's answer cache (see resolver_internal.h).
 *
 * Answers are kept by (name, type) for their TTL, negative answers for
 * their RFC 2308 TTL, in a hash table with a bounded LRU list
 * (r->cache_max entries; r->buckets NULL: no cache).  Owns its entries and
 * their record arrays; resolver_free() drops them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dns/resolver_internal.h"

/* Octets of a struct dns_rr the cache keeps: the raw RDATA only for TLSA
 * (the rest never uses it; this keeps an entry small). */
size_t rsv_rr_size(uint16_t type) {
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

void rsv_cache_drop(struct resolver *r, struct cache_entry *e) {
  struct cache_entry **pp = &r->buckets[e->hash & (r->nbuckets - 1)];
  while (*pp != e)
    pp = &(*pp)->hnext;
  *pp = e->hnext;
  lru_unlink(r, e);
  free(e->rr);
  free(e);
  r->cache_n--;
}

struct cache_entry *rsv_cache_find(struct resolver *r, const char *name,
                                   uint16_t type) {
  if (!r->buckets)
    return NULL;
  unsigned h = cache_hash(name, type);
  for (struct cache_entry *e = r->buckets[h & (r->nbuckets - 1)]; e;
       e = e->hnext) {
    if (e->hash == h && e->type == type && strcmp(e->name, name) == 0) {
      if (e->expires <= uv_now(r->loop)) {
        rsv_cache_drop(r, e);
        return NULL;
      }
      lru_unlink(r, e);
      lru_front(r, e);
      return e;
    }
  }
  return NULL;
}

void rsv_cache_put(struct resolver *r, const char *name, uint16_t type,
                   const struct dns_rrset *rs) {
  if (!r->buckets || rs->status == DNS_R_TEMPFAIL || rs->ttl == 0)
    return;
  struct cache_entry *old = rsv_cache_find(r, name, type);
  if (old)
    rsv_cache_drop(r, old);
  while (r->cache_n >= r->cache_max && r->lru_tail)
    rsv_cache_drop(r, r->lru_tail);
  struct cache_entry *e = calloc(1, sizeof *e);
  if (!e)
    return;
  if (rs->n > 0) {
    size_t sz = rsv_rr_size(type);
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
