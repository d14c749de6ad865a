/*
 * dns_answer: building DNS queries and checking and parsing answers.
 *
 * Pure apart from ldns's own allocations: no libuv, no sockets, no clock,
 * no logging.  The resolver hands every datagram or TCP message it receives
 * to dns_answer_parse(), which decides whether the bytes answer the question
 * that was asked (ID, QR bit, question name/type/class) and, if they do,
 * reduces them to a struct dns_rrset: the records of the asked type found by
 * following the CNAME chain inside the packet, or a classified negative
 * answer with its RFC 2308 negative TTL.  Hostile input (bad compression
 * pointers, truncated records, wrong rdata sizes, huge counts, records for
 * other owners) is rejected or ignored here, never trusted; this is the
 * function tests/fuzz/fuzz_dns_answer.c drives.
 */
#ifndef MAILHOP_DNS_ANSWER_H
#define MAILHOP_DNS_ANSWER_H

#include <stddef.h>
#include <stdint.h>

#define DNS_NAME_MAX 253      /* presentation form, no trailing dot */
#define DNS_MAX_RR 32         /* records of one type kept from one answer */
#define DNS_CNAME_MAX 8       /* CNAME links followed, in a packet and across */
#define DNS_TTL_MAX 86400     /* positive answers cached at most one day */
#define DNS_NEG_TTL_MAX 10800 /* negative answers at most 3 h (RFC 2308 §5) */
#define DNS_QUERY_MAX 512     /* a query always fits in this */
/* A TXT record's strings joined, at most (in dns_rr.rdata); longer ones are
 * dropped (MTA-STS, TLS-RPT records are short). */
#define DNS_TXT_MAX 511

#define DNS_TYPE_A 1
#define DNS_TYPE_CNAME 5
#define DNS_TYPE_MX 15
#define DNS_TYPE_TXT 16
#define DNS_TYPE_AAAA 28
#define DNS_TYPE_TLSA 52
/* TLSA rdata kept; a longer record is kept with rdlen 0 (unusable, RFC 7671
 * §4). */
#define DNS_RDATA_MAX 1024

/* The outcome of one (name, type) lookup. */
enum dns_rcode {
  DNS_R_OK,       /* n > 0 records of the asked type */
  DNS_R_NODATA,   /* the name exists, no records of that type */
  DNS_R_NXDOMAIN, /* the name (or the end of its CNAME chain) does not exist */
  DNS_R_CNAME,    /* the chain ends at `cname`, not answered here: ask it */
  DNS_R_TEMPFAIL, /* SERVFAIL, REFUSED, other rcodes, timeout, network */
};

const char *dns_rcode_name(enum dns_rcode r);

struct dns_rr {
  uint16_t type;
  uint16_t pref; /* MX preference */
  uint32_t ttl;
  uint8_t addr[16];             /* A: 4 bytes, AAAA: 16 bytes */
  char name[DNS_NAME_MAX + 2];  /* MX exchange, lower case, no final dot;
                                   "." for the null MX (RFC 7505) */
  uint16_t rdlen;               /* TLSA: octets in rdata (0: too long);
                                   TXT: length of the text in rdata */
  uint8_t rdata[DNS_RDATA_MAX]; /* TLSA: the raw RDATA (RFC 6698 §2.1);
                                   TXT: the character-strings joined, NUL-
                                   terminated (records holding a NUL byte
                                   or over DNS_TXT_MAX are dropped) */
};

struct dns_rrset {
  enum dns_rcode status;
  uint32_t ttl; /* smallest TTL of the records used, or the negative TTL */
  char cname[DNS_NAME_MAX + 2]; /* last name of the CNAME chain, or "" */
  char reason[256];             /* for DNS_R_TEMPFAIL: "SERVFAIL" etc. */
  int secure; /* the answer had the AD bit (RFC 4035 §3.2.3): DNSSEC-secure
                 as far as the (trusted, validating) resolver says; only
                 for DNS_R_OK, NODATA, NXDOMAIN and CNAME */
  int n;
  struct dns_rr rr[DNS_MAX_RR];
};

/* What dns_answer_parse() made of a message. */
enum dns_check {
  DNS_CHECK_OK,        /* an answer to our question: out is filled */
  DNS_CHECK_TRUNCATED, /* an answer to our question with TC set: use TCP */
  DNS_CHECK_IGNORE,    /* not an answer to our question (wrong ID, not a
                          response, other question, malformed): drop it and
                          keep waiting */
};

/*
 * Builds a recursive (RD) query for name/type, class IN, with the given ID
 * and an EDNS0 OPT record advertising a 1232-byte UDP payload, the DO bit
 * set (RFC 3225) and the AD bit set (RFC 6840 §5.7), so that a validating
 * resolver reports the DNSSEC status of its answer in AD.  name is an
 * ASCII (A-label) domain name.  Writes at most cap bytes to buf and sets
 * *len.  Returns 0, or -EINVAL for a name ldns cannot encode, -ENOSPC when
 * cap is too small, -ENOMEM.
 */
int dns_query_build(uint16_t id, const char *name, uint16_t type, uint8_t *buf,
                    size_t cap, size_t *len)
    __attribute__((warn_unused_result));

/*
 * Checks that pkt[0..len) answers the query (id, name, type) and parses it
 * into out (which is always initialised).  The question name is compared
 * case-insensitively.  Records are taken only from the answer section and
 * only for the owner names of the CNAME chain starting at name; the
 * negative TTL comes from the SOA in the authority section (min of its TTL
 * and MINIMUM field), 0 (do not cache) without one.
 */
enum dns_check dns_answer_parse(const uint8_t *pkt, size_t len, uint16_t id,
                                const char *name, uint16_t type,
                                struct dns_rrset *out);

/*
 * Copies a domain name to out (cap bytes) in lower case without its final
 * dot.  Returns 0, or -EINVAL when it is empty, too long or not a valid
 * host name (letters, digits, '-', '_' and dots; labels of 1..63 octets).
 * "." itself is not a host name.
 */
int dns_name_normalize(const char *in, char *out, size_t cap);

#endif
