/*
 * dns/idna: internationalized domain names (RFC 5890, IDNA2008 with the
 * UTS #46 mapping, through libidn2): a domain with UTF-8 labels to the
 * A-label form looked up in the DNS, and back.  Pure (no I/O); owns
 * nothing.
 */
#ifndef MAILHOP_DNS_IDNA_H
#define MAILHOP_DNS_IDNA_H

#include <stddef.h>

/*
 * Converts a UTF-8 domain (with or without a final dot) to its lower-case
 * A-label form without the final dot.  Returns 0 or -EINVAL.
 */
int idna_to_ascii(const char *in, char *out, size_t cap);

/*
 * The other way: an ASCII domain whose labels may be A-labels ("xn--...")
 * to UTF-8 (U-labels), lower case, without the final dot.  Returns 0, or
 * -EINVAL (not a valid A-label form, or longer than cap).
 */
int idna_to_utf8(const char *in, char *out, size_t cap);

#endif
