/*
 * resolver_internal.h: what the resolver's files share, and nothing else
 * includes (dns/resolver.h is the module's interface).
 *   resolver.c            the resolver object: options, setup, teardown,
 *                         the relay's own addresses (loop check)
 *   resolver_lookup.c     lookup composition: MX -> host addresses, host,
 *                         TXT, TLSA; CNAME chains; callbacks; cancel
 *   resolver_transport.c  questions on the wire: shared queries, the
 *                         in-flight bound, attempts over UDP then TCP,
 *                         timeouts, server rotation, random IDs
 *   resolver_cache.c      the answer cache: (name, type), TTL, bounded LRU
 *   resolv_conf.c         resolv.conf: name servers and options
 * All of it runs on the loop thread.
 */
#ifndef MAILHOP_DNS_RESOLVER_INTERNAL_H
#define MAILHOP_DNS_RESOLVER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "dns/dns_answer.h"
#include "dns/mx.h"
#include "dns/resolver.h"

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

/* The transport's queries (struct dq, resolver_transport.c), in FIFO order. */
struct dqlist {
  struct dq *head, *tail;
  int n;
};

/* One attempt at one server: UDP, then maybe TCP; freed on last close. */
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
  unsigned char *rr; /* n records of rsv_rr_size(type) octets each */
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

/* ---- resolver_cache.c --------------------------------------------------- */

/* Octets of a struct dns_rr the cache keeps for type. */
size_t rsv_rr_size(uint16_t type);

/* The live entry for (name, type), made most recently used, or NULL (none,
 * no cache, or expired: an expired entry is dropped).  Owned by the cache:
 * valid until the next cache call. */
struct cache_entry *rsv_cache_find(struct resolver *r, const char *name,
                                   uint16_t type);

/* Keeps a copy of rs for (name, type) for rs->ttl seconds, evicting the
 * least recently used entries to stay within r->cache_max.  Temporary
 * failures, TTL 0 and allocation failures are not cached. */
void rsv_cache_put(struct resolver *r, const char *name, uint16_t type,
                   const struct dns_rrset *rs);

/* Unlinks and frees e. */
void rsv_cache_drop(struct resolver *r, struct cache_entry *e);

/* ---- resolver_transport.c ----------------------------------------------- */

/* 32 random bits from the resolver's pool (ctx: the struct resolver), for
 * mx_order()'s shuffle of equal preferences.  Aborts without kernel
 * randomness. */
uint32_t rsv_rnd32(void *ctx);

/* Asks s's question: from the cache, an existing query, or a new one.  The
 * answer comes to rsv_sub_on_rrset(), perhaps before this returns. */
void rsv_sub_start(struct sub *s);

/* s no longer waits for its query; a query nobody waits for is dropped. */
void rsv_sub_unwait(struct sub *s);

/* Ends a query: closes its attempt, takes it off its list, frees it (its
 * waiters are not told). */
void rsv_dq_free(struct dq *d);

/* ---- resolver_lookup.c -------------------------------------------------- */

/* The answer (or failure) for s's question: follows a CNAME, else hands
 * it to s's lookup.  rs is borrowed for the call.  Never runs user code. */
void rsv_sub_on_rrset(struct sub *s, const struct dns_rrset *rs);

/* ---- resolv_conf.c ------------------------------------------------------ */

/* Reads the name servers (into r->servers) and options of the resolv.conf
 * at path.  Returns the number of servers; 0 when the file cannot be read. */
int rsv_read_resolv_conf(const char *path, struct resolver *r,
                         uint64_t *timeout_ms, int *attempts);

#endif
