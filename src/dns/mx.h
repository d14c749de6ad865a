/*
 * mx: MX selection rules (CONTRACT §4), pure.
 *
 * No I/O, no clock, no global random state: the resolver feeds in the MX
 * records it got and, later, each host's addresses; this module orders the
 * hosts (preference, equal preferences shuffled with a caller-given random
 * source), recognises the null MX (RFC 7505), applies Postfix's rules for
 * hosts without addresses, for MX records naming an IP literal and for
 * this relay's own addresses (mail loop), and caps the addresses tried per
 * attempt (Postfix's smtp_mx_address_limit, 5).
 */
#ifndef MAILHOP_DNS_MX_H
#define MAILHOP_DNS_MX_H

#include <stdint.h>
#include <sys/socket.h>

#include "dns/dns_answer.h"

#define MX_MAX_HOSTS 16     /* MX hosts considered per domain */
#define MX_HOST_MAX_ADDR 8  /* addresses kept per host */
#define MX_MAX_CANDIDATES 5 /* addresses tried per attempt (Postfix) */

/* Outcome classes of a lookup, for the delivery engine. */
enum dns_status {
  DNS_OK,       /* candidates available */
  DNS_PERMFAIL, /* bounce: NXDOMAIN 5.1.2, null MX 5.1.10, loop 5.4.6 ... */
  DNS_TEMPFAIL, /* defer: SERVFAIL, REFUSED, timeout 4.4.3 */
  DNS_CANCELED, /* the lookup was cancelled; nothing else is valid */
};

const char *dns_status_name(enum dns_status s);

/* A random source: returns a uniformly distributed 32-bit value. */
typedef uint32_t (*mx_random_fn)(void *ctx);

struct mx_addr {
  int family; /* AF_INET or AF_INET6 */
  uint8_t a[16];
};

/* One MX host while it is being resolved (resolver-internal, and tests). */
struct mx_host {
  char name[DNS_NAME_MAX + 2];
  uint16_t pref;
  enum dns_rcode addr_status; /* DNS_R_OK when n_addr > 0 */
  char err[400];              /* why it has no address */
  int secure; /* every address answer had AD (DNSSEC, RFC 7672 §2.2.2);
                 0 for an IP literal */
  char expanded[DNS_NAME_MAX + 2]; /* secure: the name a CNAME chain from
                                      `name` ended at (the preferred TLSA
                                      base domain, RFC 7672 §2.2.2); ""
                                      when name is not an alias */
  int n_addr;
  struct mx_addr addr[MX_HOST_MAX_ADDR];
};

/* One place to connect to, in the order they are to be tried. */
struct mx_candidate {
  char host[DNS_NAME_MAX + 2];  /* MX host name (or the domain, implicit MX) */
  struct sockaddr_storage addr; /* AF_INET/AF_INET6, port set */
  uint16_t pref;
  int secure; /* the host's address records were DNSSEC-secure (AD) */
  char expanded[DNS_NAME_MAX + 2]; /* secure: mx_host.expanded, else "" */
};

struct mx_result {
  enum dns_status status;
  char dsn[8];      /* RFC 3463 code for the bounce/log: "5.1.2", "4.4.3" */
  char reason[256]; /* human text for the bounce or the log */
  int loop;         /* PERMFAIL because the best MX is this relay (5.4.6) */
  int implicit;     /* no MX records: the domain's own addresses (RFC 5321
                       §5.1 implicit MX) */
  int mx_secure;    /* the MX answer (or, implicit MX, its NODATA) was
                       DNSSEC-secure (AD bit); 0 for a host lookup
                       (RFC 7672 §2.2.1, CONTRACT §4b) */
  int n;
  struct mx_candidate c[MX_MAX_CANDIDATES];
};

/* Sets status, dsn and reason ("%s" formatted) of r; n = 0. */
void mx_result_fail(struct mx_result *r, enum dns_status st, const char *dsn,
                    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/*
 * Turns the MX records of domain (rrs[0..n), from a DNS_R_OK answer) into
 * hosts[] ordered for delivery: lowest preference first, each group of
 * equal preferences shuffled with rnd(ctx) (Fisher-Yates), duplicates
 * removed, at most MX_MAX_HOSTS kept.  Hosts names that are not valid host
 * names are dropped.  Returns the number of hosts (> 0), or 0 with r set
 * to the failure: null MX (RFC 7505: "." as the only exchange, 5.1.10) or
 * no usable host name (5.4.4).  An exchange "." among other MX records is
 * ignored.
 */
int mx_order(const char *domain, const struct dns_rr *rrs, int n,
             mx_random_fn rnd, void *ctx, struct mx_host *hosts,
             struct mx_result *r);

/*
 * If name is an IP literal ("192.0.2.1", "::1", or in brackets), fills *a
 * and returns 1; else 0.  Postfix accepts an MX exchange that is a bare
 * IP address (and warns); so do we.
 */
int mx_parse_ip(const char *name, struct mx_addr *a);

/*
 * Builds the candidates from ordered hosts[0..n) whose addresses are
 * filled: each host's IPv6 then IPv4 addresses, port `port`, at most
 * max_addrs (MX_MAX_CANDIDATES when 0 or larger).
 *
 * Mail loop (as Postfix): the first host having an address in self[]
 * (this relay's listening addresses: family, address and port compared)
 * and every host of the same or a worse preference are dropped; if that
 * leaves nothing, the result is PERMFAIL 5.4.6 with loop = 1.
 * No address at all: TEMPFAIL 4.4.3 if some host's lookup failed
 * temporarily, else PERMFAIL 5.4.4 (Postfix: "Host or domain name not
 * found").  domain is for the messages only.
 */
void mx_build(const char *domain, const struct mx_host *hosts, int n,
              uint16_t port, const struct sockaddr_storage *self, int n_self,
              int max_addrs, struct mx_result *r);

/* "host[addr]:port" for logs and `mailhop resolve`. */
void mx_candidate_format(const struct mx_candidate *c, char *out, size_t cap);

#endif
