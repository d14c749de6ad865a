/*
 * outbound/dane: SMTP DANE (RFC 7672) for delivery by MX with
 * `outbound_tls = dane | dane-only` (CONTRACT §4b).
 *
 * Before each MX candidate is connected, dane_before_connect() decides
 * the host's policy: when the MX answer and the host's address answers
 * were DNSSEC-secure (the AD bit of the trusted resolver), it looks up
 * `_PORT._tcp.HOST` TLSA (dns/resolver.h, cached with the TTL) -- for a
 * HOST that is an alias, at the CNAME expansion first and at HOST when
 * none are there (RFC 7672 §2.2.2); secure usable records (proto/tlsa.h)
 * make the connection DANE: STARTTLS required, the certificate matched by
 * OpenSSL's own DANE code (SSL_dane_enable, SSL_dane_tlsa_add, checked
 * with SSL_get0_dane_authority), the name where the records were found
 * (and HOST) as reference identifiers for DANE-TA.  No usable records, or an
 * insecure lookup: opportunistic (or, with dane-only, the host is skipped and
 * the mail deferred).  A failing TLSA lookup for a secure host skips that host
 * (deferred, 4.7.5).
 *
 * Owns: the outbound's DANE client context (ob->ctx_dane) and each
 * delivery's copy of its current host's TLSA answer (d->tlsa).
 */
#ifndef MAILHOP_RELAY_OUTBOUND_DANE_H
#define MAILHOP_RELAY_OUTBOUND_DANE_H

#include <stddef.h>

#include <openssl/ssl.h>

struct conn;
struct delivery;
struct outbound;

/* Start-up (outbound_new): with outbound_tls = dane/dane-only, creates
 * ob->ctx_dane (a client context with SSL_CTX_dane_enable, peer
 * verification on, TLS 1.2 at least) and warns when a resolver is not on
 * loopback (CONTRACT §4b).  Returns 0, or -1 with a one-line reason in
 * err. */
int dane_init(struct outbound *ob, char *err, size_t errlen);

/* Frees ob->ctx_dane (NULL-safe). */
void dane_free(struct outbound *ob);

/* Called by the session for the current candidate d->cand, before it
 * connects.  Sets d->dane (1: this connection is DANE-authenticated).
 * Returns 0 when the caller should connect now; 1 when DANE took over:
 * the TLSA lookup is in flight (it calls session_connect or session_next
 * later), or the host was skipped (session_next was called). */
int dane_before_connect(struct delivery *d);

/* After conn_start_tls on a DANE connection: enables DANE on its SSL with
 * the TLSA base domain (SNI and DANE-TA name check; the MX host name is
 * accepted too when that is its CNAME expansion) and adds
 * the usable TLSA records.  Returns the number of records OpenSSL took
 * (> 0), or -1 with err set (nothing usable, out of memory). */
int dane_setup_ssl(struct delivery *d, SSL *ssl, char *err, size_t errlen);

/* "dane" when the connection's peer was authenticated by a TLSA record
 * (SSL_get0_dane_authority >= 0), "none" otherwise (plaintext too); for
 * the `tls_policy=` of the delivered log line (CONTRACT §4b). */
const char *dane_conn_policy(const struct conn *c);

#endif
