/*
 * proto/sts_policy: the pure parts of MTA-STS (RFC 8461) and TLS-RPT
 * (RFC 8460) discovery, CONTRACT §4b: the `_mta-sts` TXT record, the
 * policy file fetched over HTTPS, `mx:` pattern matching, and the
 * `_smtp._tls` TXT record's `rua` mailto: addresses.  No I/O, no clock,
 * no allocation; every input is untrusted (tests/fuzz/fuzz_sts_policy.c).
 */
#ifndef MAILHOP_PROTO_STS_POLICY_H
#define MAILHOP_PROTO_STS_POLICY_H

#include <stddef.h>
#include <stdint.h>

#define STS_POLICY_MAX (64 * 1024) /* bytes of a policy file (§4b) */
#define STS_MAX_MX 32              /* mx: lines kept */
#define STS_MX_LEN 256             /* a pattern, NUL included */
#define STS_ID_MAX 32              /* RFC 8461 §3.1: 1*32(ALPHA / DIGIT) */
#define STS_MAX_AGE_MAX 31557600u  /* RFC 8461 §3.2: about a year, s */
#define TLSRPT_MAX_RUA 4           /* mailto: addresses kept */
#define TLSRPT_RUA_LEN 256         /* an address, NUL included */

enum sts_mode { STS_MODE_NONE = 0, STS_MODE_TESTING, STS_MODE_ENFORCE };

const char *sts_mode_name(enum sts_mode m);

struct sts_policy {
  enum sts_mode mode;
  uint32_t max_age; /* s, at most STS_MAX_AGE_MAX */
  int n_mx;
  char mx[STS_MAX_MX][STS_MX_LEN]; /* lower case, no final dot; may begin
                                      with "*." */
};

/*
 * Parses a `_mta-sts.DOMAIN` TXT record (RFC 8461 §3.1):
 * "v=STSv1; id=ID;" with optional spaces, more `key=value` fields
 * ignored.  Returns 1 with the id copied to id (STS_ID_MAX + 1 bytes) when
 * txt is a valid STSv1 record, 0 when it is not an STS record at all (does
 * not begin with "v=STSv1"), -1 when it begins so but is malformed.
 */
int sts_txt_parse(const char *txt, char *id);

/*
 * Picks the record among n TXT strings: exactly one STSv1 record must be
 * there (RFC 8461 §3.1: else no policy).  Returns 1 with id set, or 0.
 */
int sts_txt_pick(const char *const *txts, int n, char *id);

/*
 * Parses a policy file (RFC 8461 §3.2): body[0..len) (not NUL-terminated,
 * at most STS_POLICY_MAX bytes), "key: value" lines ended by CRLF or LF;
 * `version: STSv1`, `mode`, `max_age` required, `mx` required (1..n)
 * unless the mode is none; unknown keys ignored; max_age over a year is
 * cut to STS_MAX_AGE_MAX; mx patterns over STS_MAX_MX are ignored.
 * Returns 0 with *out filled, or -1 with a printable reason in why (cap
 * bytes, always terminated when cap > 0) and *out zeroed.
 */
int sts_policy_parse(const char *body, size_t len, struct sts_policy *out,
                     char *why, size_t cap);

/*
 * Whether an HTTP Content-Type header value (NUL-terminated, NULL when
 * the answer had none) names the media type text/plain, which RFC 8461
 * §3.2 requires of a policy ("senders SHOULD validate" it: a web server
 * that lets users host files could otherwise serve a policy by accident).
 * Type and subtype are matched without regard to case, surrounding white
 * space and parameters (charset=...) are ignored.  Returns 1 or 0.
 */
int sts_media_type_ok(const char *content_type);

/*
 * Whether host (an MX host name, any case, a final dot allowed) matches
 * one of the policy's mx patterns (RFC 8461 §4.1): equal, or "*.REST"
 * matching exactly one more leftmost label.  Returns 1 or 0.
 */
int sts_mx_match(const struct sts_policy *p, const char *host);

/*
 * Parses the `_smtp._tls.DOMAIN` TXT strings (RFC 8460 §3): exactly one
 * must begin with "v=TLSRPTv1"; its `rua` lists URIs separated by commas;
 * the mailto: ones (without `?` parameters; %XX decoded; a plain
 * local@domain of printable ASCII, no spaces or brackets) are copied to
 * rua.  Returns how many (0..TLSRPT_MAX_RUA), 0 also for no record.
 */
int tlsrpt_txt_rua(const char *const *txts, int n,
                   char rua[TLSRPT_MAX_RUA][TLSRPT_RUA_LEN]);

#endif
