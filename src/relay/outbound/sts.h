/*
 * outbound/sts: MTA-STS policy discovery for delivery by MX (RFC 8461,
 * CONTRACT §4b).  Per recipient domain: the `_mta-sts.DOMAIN` TXT record
 * (through the delivery resolver), then, when its id is new or the cached
 * policy expired, the policy file from
 * https://mta-sts.DOMAIN:https_port/.well-known/mta-sts.txt over
 * loop/https_client (libcurl on the pool: verified for mta-sts.DOMAIN
 * against tls_ca_file or the system store, no redirects, 64 KiB, bounded
 * time; the host's address from the same resolver).  Policies are cached
 * in memory and in the queue database (store_sts_put) until their
 * max_age; a cached policy is used when a refetch fails, and one past
 * half its max_age is refreshed in the background when next used (RFC
 * 8461 §10.2), its deliveries answered from the cache meanwhile.
 *
 * Never blocks: the lookups and fetches are asynchronous; only the
 * deliveries to the domain being looked up wait (one lookup per domain
 * at a time, every delivery to it waiting on that one).  At most
 * STS_FETCH_MAX fetches hold pool threads at once; at most STS_DOMAINS_MAX
 * domains are kept in memory (the least recently used one without
 * waiters goes).
 *
 * Owns: the domain entries, their lookups and fetches.
 */
#ifndef MAILHOP_RELAY_OUTBOUND_STS_H
#define MAILHOP_RELAY_OUTBOUND_STS_H

#include <uv.h>

#include "proto/sts_policy.h"

#define STS_FETCH_MAX 2
#define STS_DOMAINS_MAX 1024
#define STS_FETCH_CONNECT_MS 10000
#define STS_FETCH_TOTAL_MS 30000
/* A cached policy past half its max_age is fetched again when next used
 * (its waiters answered from the cache meanwhile); a failed refresh is
 * tried again after max_age / 4, at most this many seconds later. */
#define STS_REFRESH_RETRY_S 3600

struct config;
struct store;
struct resolver;
struct sts;
struct sts_dom;

/* What applies to a domain now.  Valid during the callback only. */
struct sts_verdict {
  int canceled;                 /* sts_free: nothing else is set */
  enum sts_mode mode;           /* STS_MODE_NONE: no policy applies */
  const struct sts_policy *pol; /* mode != NONE: the policy */
  const char *policy_text;      /* mode != NONE: the file as fetched */
  const char *id;               /* mode != NONE: the policy's TXT id */
  const char *failure;          /* an RFC 8460 result type when discovery
                                   failed (sts-policy-fetch-error,
                                   sts-policy-invalid, sts-webpki-invalid),
                                   else NULL; a cached policy may still
                                   apply */
  char why[256];                /* with failure: one line for the log */
};

typedef void (*sts_cb)(void *arg, const struct sts_verdict *v);

/* A waiter, embedded in its owner (the delivery). */
struct sts_wait {
  struct sts_wait *next;
  struct sts_dom *dom; /* non-NULL while waiting */
  sts_cb cb;
  void *arg;
};

/* Creates the policy cache, loaded from what the store read at open
 * (expired policies are dropped from it).  res and st are borrowed and
 * must outlive it.  Returns NULL when out of memory. */
struct sts *sts_new(uv_loop_t *loop, const struct config *cfg, struct store *st,
                    struct resolver *res);

/* Ends it: every waiter is called back with canceled (before this
 * returns), lookups are cancelled and fetches aborted; the memory goes
 * when the last fetch has come back.  Call before freeing the resolver. */
void sts_free(struct sts *s);

/* Asks what applies to domain (ASCII, lower case): returns 0 and
 * cb(arg, verdict) runs once, later, from the loop (never inside this
 * call), unless sts_cancel comes first; w must stay valid until then.
 * Returns -1 (no callback) when closing or when every entry is busy
 * (STS_DOMAINS_MAX discoveries in flight): go on without a policy. */
int sts_get(struct sts *s, const char *domain, struct sts_wait *w, sts_cb cb,
            void *arg);

/* Stops waiting (no callback); harmless when w is not waiting. */
void sts_cancel(struct sts *s, struct sts_wait *w);

#endif
