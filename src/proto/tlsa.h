/*
 * tlsa: TLSA record RDATA (RFC 6698 §2.1) and its usability for SMTP DANE
 * (RFC 7672 §3.1, RFC 7671), pure.
 *
 * No I/O, no allocation, no OpenSSL: the bytes come from a DNS answer
 * (untrusted) and this module only says what they are and whether SMTP may
 * use them.  The matching itself is OpenSSL's (relay/outbound/dane.c).
 * tests/fuzz/fuzz_tlsa.c drives tlsa_parse().
 */
#ifndef MAILHOP_PROTO_TLSA_H
#define MAILHOP_PROTO_TLSA_H

#include <stddef.h>
#include <stdint.h>

/* Certificate usages, selectors and matching types (RFC 7218 acronyms). */
#define TLSA_USAGE_PKIX_TA 0
#define TLSA_USAGE_PKIX_EE 1
#define TLSA_USAGE_DANE_TA 2
#define TLSA_USAGE_DANE_EE 3
#define TLSA_SELECTOR_CERT 0
#define TLSA_SELECTOR_SPKI 1
#define TLSA_MATCH_FULL 0
#define TLSA_MATCH_SHA256 1
#define TLSA_MATCH_SHA512 2

/* What tlsa_parse() made of one RDATA. */
enum tlsa_check {
  TLSA_USABLE,    /* usage 2 or 3, selector 0 or 1, matching 0/1/2, and
                     data of the length the matching type implies */
  TLSA_UNUSABLE,  /* well-formed, but SMTP does not use it: usage 0/1
                     (RFC 7672 §3.1.3), unknown selector or matching type
                     (RFC 7671 §4) */
  TLSA_MALFORMED, /* shorter than 4 octets, or a digest of the wrong
                     length: unusable as well (RFC 7671 §4) */
};

struct tlsa_rec {
  uint8_t usage, selector, mtype;
  const uint8_t *data; /* points into the caller's rdata */
  size_t len;
};

/*
 * Splits rdata[0..len) into *out (always filled as far as the bytes go;
 * out->data borrows rdata) and classifies it.  A full (matching type 0)
 * record is usable when it is not empty; whether its DER parses is left
 * to OpenSSL, which rejects it (then also unusable).
 */
enum tlsa_check tlsa_parse(const uint8_t *rdata, size_t len,
                           struct tlsa_rec *out);

/* "usage selector mtype hexprefix..." for logs: the record in
 * presentation form (RFC 6698 §2.2), data cut to 32 hex digits and "...".
 * Writes at most cap octets, NUL-terminated.  Returns out. */
char *tlsa_format(const struct tlsa_rec *r, char *out, size_t cap);

/* Name of a check result: "usable", "unusable", "malformed". */
const char *tlsa_check_name(enum tlsa_check c);

#endif
