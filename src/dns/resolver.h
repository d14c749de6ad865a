/*
 * resolver: asynchronous DNS on the libuv loop, for delivery.
 *
 * Queries are built and parsed with ldns (dns_answer.h) and sent over the
 * resolver's own libuv sockets: a fresh UDP socket on a kernel-chosen
 * (random) source port per attempt, a random 16-bit ID per query, and an
 * answer is accepted only when its source address and port, ID and question
 * match; anything else is ignored and the attempt keeps waiting.  A
 * truncated answer (TC) is asked again over TCP.  Each attempt has a
 * timeout; attempts go round the servers.  At most max_inflight queries
 * hold sockets; the rest wait in FIFO order.  Answers are cached by
 * (name, type) for their TTL, negative answers for their RFC 2308 TTL, in
 * a bounded LRU.  CNAME chains are followed up to DNS_CNAME_MAX links.
 *
 * On top of that, two lookups for the delivery engine, both giving an
 * ordered list of candidates or a classified error (struct mx_result):
 * resolver_lookup_mx() for a recipient domain or a `host:port` relayhost,
 * resolver_lookup_host() for a `[host]:port` relayhost.
 *
 * Callbacks: when a lookup function returns non-NULL, its callback runs
 * exactly once: from the loop (never from inside the lookup call), or from
 * inside resolver_cancel()/resolver_free() with status DNS_CANCELED.
 */
#ifndef MAILHOP_DNS_RESOLVER_H
#define MAILHOP_DNS_RESOLVER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "dns/dns_answer.h"
#include "dns/mx.h"

struct resolver;
struct resolver_query;

#define RESOLVER_MAX_SERVERS 8
#define RESOLVER_MAX_SELF 64

struct resolver_opts {
  /* Name servers, port set; n_servers 0: read resolv_conf. */
  const struct sockaddr_storage *servers;
  int n_servers;
  const char *resolv_conf; /* NULL: "/etc/resolv.conf" */
  uint64_t timeout_ms;     /* per attempt; 0: resolv.conf's or 5000 */
  int attempts;            /* rounds over the servers; 0: resolv.conf's or 2 */
  int max_inflight;        /* queries holding sockets; 0: 128 */
  int cache_size;          /* entries; 0: 4096; negative: no cache */
  int max_addrs;           /* candidates per lookup; 0: MX_MAX_CANDIDATES */
  /* This relay's listening addresses (port set), for the loop check.  A
   * wildcard address stands for every local interface address. */
  const struct sockaddr_storage *self;
  int n_self;
};

/*
 * Creates a resolver on loop.  Copies everything it needs from o.  Returns
 * NULL with *err set (-ENOMEM, or -ENOENT when no name server is known).
 */
struct resolver *resolver_new(uv_loop_t *loop, const struct resolver_opts *o,
                              int *err) __attribute__((warn_unused_result));

/* Query attempts counted by result, for metrics: an answer, NXDOMAIN, an
 * error rcode (SERVFAIL, REFUSED, ...), no answer in time. */
enum resolver_count {
  RESOLVER_COUNT_OK = 0,
  RESOLVER_COUNT_NXDOMAIN,
  RESOLVER_COUNT_SERVFAIL,
  RESOLVER_COUNT_TIMEOUT,
  RESOLVER_COUNT_N
};

/* From now on, every query attempt sent to a server adds 1 to
 * counts[its enum resolver_count] (cache hits are not counted).  counts
 * holds RESOLVER_COUNT_N entries, borrowed until resolver_free(); NULL
 * stops counting. */
void resolver_set_counters(struct resolver *r, uint64_t *counts);

/*
 * Ends the resolver: every pending lookup's callback runs (before this
 * returns, or at the end of the current callback when called from one)
 * with DNS_CANCELED, then sockets and timers are closed; the memory is
 * released from the close callbacks, so run the loop afterwards.
 */
void resolver_free(struct resolver *r);

/*
 * The result handed to a lookup callback.  res is valid only during the
 * call.  q must not be used after the callback returns (it is freed).
 */
typedef void (*resolver_cb)(struct resolver_query *q,
                            const struct mx_result *res, void *data);

/*
 * Delivery candidates for a domain by MX (CONTRACT §4): MX hosts by
 * preference, equal ones shuffled, each host's AAAA then A addresses, at
 * most max_addrs in all, all with `port`; no MX records: the domain's own
 * addresses (implicit MX).  domain may be UTF-8 (converted to A-labels)
 * and may be an IP literal in brackets ("[192.0.2.1]", "[IPv6:::1]"),
 * which resolves to itself without a query.  Errors: PERMFAIL 5.1.2
 * (NXDOMAIN, or an invalid name), 5.1.10 (null MX), 5.4.4 (no MX host has
 * an address), 5.4.6 (loop, res->loop set); TEMPFAIL 4.4.3 (SERVFAIL,
 * REFUSED, timeout).  Returns NULL only when out of memory (no callback).
 */
struct resolver_query *resolver_lookup_mx(struct resolver *r,
                                          const char *domain, uint16_t port,
                                          resolver_cb cb, void *data);

/*
 * The same for a host whose addresses are wanted directly (a `[host]`
 * relayhost): AAAA and A only, no MX, preference 0.  An IP literal (with
 * or without brackets) resolves to itself.
 */
struct resolver_query *resolver_lookup_host(struct resolver *r,
                                            const char *host, uint16_t port,
                                            resolver_cb cb, void *data);

#define RESOLVER_TXT_MAX 8 /* TXT records handed back per lookup */

/* The outcome of a TXT lookup.  status: DNS_OK (n records, n may be 0:
 * the name has no TXT records, or does not exist: nxdomain set),
 * DNS_TEMPFAIL (SERVFAIL, timeout, ...: reason), DNS_CANCELED. */
struct resolver_txt {
  enum dns_status status;
  int nxdomain;
  char reason[256];
  int n;
  char txt[RESOLVER_TXT_MAX][DNS_TXT_MAX + 1]; /* each record's strings
                                                  joined (dns_answer.h) */
};

typedef void (*resolver_txt_cb)(struct resolver_query *q,
                                const struct resolver_txt *res, void *data);

/*
 * The TXT records of name (ASCII or UTF-8, converted to A-labels), for
 * MTA-STS (RFC 8461 §3.1) and TLS-RPT (RFC 8460 §3): cached and bounded
 * like every query, CNAMEs followed.  res is valid during the callback
 * only; records over DNS_TXT_MAX or holding a NUL byte are left out, and
 * at most RESOLVER_TXT_MAX are given.  The callback runs exactly once (as
 * for the other lookups; resolver_cancel() works the same).  Returns NULL
 * only when out of memory or the resolver is closing (no callback).
 */
struct resolver_query *resolver_lookup_txt(struct resolver *r, const char *name,
                                           resolver_txt_cb cb, void *data);

/*
 * The TLSA result: rs is the answer for _PORT._tcp.HOST (RFC 7672 §2.2.3),
 * valid only during the call: status DNS_R_OK with rs->n records (type
 * DNS_TYPE_TLSA, raw rdata; parse with proto/tlsa.h), DNS_R_NODATA or
 * DNS_R_NXDOMAIN (no records), DNS_R_TEMPFAIL (SERVFAIL -- a bogus
 * signature at a validating resolver --, timeout, an invalid name) with
 * rs->reason; rs->secure says whether every answer on the way (CNAMEs
 * included) carried the AD bit.  canceled: the lookup was cancelled
 * (rs is a TEMPFAIL then).  q must not be used after the callback.
 */
typedef void (*resolver_tlsa_cb)(struct resolver_query *q,
                                 const struct dns_rrset *rs, int canceled,
                                 void *data);

/*
 * Looks up the TLSA records of _port._tcp.host (host in A-label form, no
 * brackets), through the cache and the query bounds as every lookup.
 * CNAMEs are followed.  Returns NULL only when out of memory (no
 * callback); else cb runs exactly once, from the loop or from
 * resolver_cancel()/resolver_free().  CONTRACT §4b.
 */
struct resolver_query *resolver_lookup_tlsa(struct resolver *r,
                                            const char *host, uint16_t port,
                                            resolver_tlsa_cb cb, void *data);

/* 1 when every name server in use is on a loopback address (127/8, ::1):
 * the only place a validating resolver's AD bit can be trusted without
 * further protection of the path (CONTRACT §4b start-up warning). */
int resolver_servers_loopback(const struct resolver *r);

/*
 * Cancels a lookup whose callback has not run yet: the callback runs now,
 * before this returns, with DNS_CANCELED; afterwards q is gone.
 */
void resolver_cancel(struct resolver_query *q);

/*
 * Parses resolv.conf text: "nameserver IP" lines (port 53, at most max),
 * "options timeout:N attempts:N".  timeout_ms and attempts are left alone
 * when not given.  Returns the number of servers.  (Pure; for tests.)
 */
int resolver_parse_resolv_conf(const char *text, struct sockaddr_storage *out,
                               int max, uint64_t *timeout_ms, int *attempts);

#endif
