/*
 * tls: SSL_CTX factories for the relay's TLS, server and client side.
 *
 * Owns nothing but the contexts it returns.  The TLS engine that drives an
 * SSL over a connection lives in conn.c; this module only builds and swaps
 * configurations.  It never touches a socket and never logs.
 *
 * Contexts are reference counted by OpenSSL: every SSL made from a context
 * holds a reference, so a context swapped out by tls_ctx_swap() (SIGHUP
 * reload) lives on until its last session ends.  Holders: the owner's slot
 * (one reference) and each live SSL (one each).
 */
#ifndef MAILHOP_LOOP_TLS_H
#define MAILHOP_LOOP_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

#define TLS_MUSTCHECK __attribute__((warn_unused_result))

/*
 * A server context: TLS 1.2 minimum, no renegotiation, no compression,
 * server cipher preference, the certificate chain from cert_file (leaf
 * first, as SSL_CTX_use_certificate_chain_file wants) and the private key
 * from key_file, which must match the leaf.  Returns a context holding one
 * reference for the caller, or NULL with a one-line reason in err (naming
 * the file), e.g. "tls_key_file /x/key.pem does not match tls_cert_file
 * /x/cert.pem".
 */
SSL_CTX *tls_server_ctx_new(const char *cert_file, const char *key_file,
                            char *err, size_t errlen) TLS_MUSTCHECK;

enum tls_verify {
  TLS_VERIFY_NONE,    /* opportunistic (RFC 7435): any version, any cert */
  TLS_VERIFY_REQUIRE, /* chain to a trust anchor and the host name match */
};

/*
 * A client context.  ca_file is a PEM bundle of trust anchors, or NULL for
 * the system store.  With TLS_VERIFY_REQUIRE the handshake fails unless the
 * peer's chain verifies and matches the name given to conn_start_tls();
 * with TLS_VERIFY_NONE it never fails on the certificate, accepts TLS 1.0
 * and up at security level 0, and the verification outcome (the chain
 * against the same ca_file or system store, and the name) is still
 * computed and reported (conn_tls_info.verified), for the logs: give the
 * opportunistic context the same ca_file as the enforcing one, or servers
 * the anchors vouch for are reported unverified.  Returns
 * NULL with a one-line reason in err.
 */
SSL_CTX *tls_client_ctx_new(const char *ca_file, enum tls_verify verify,
                            char *err, size_t errlen) TLS_MUSTCHECK;

/*
 * SIGHUP reload: build a new server context from the files and, on
 * success, put it in *slot and drop the slot's reference to the old one
 * (sessions that already use the old context keep it alive).  On failure
 * *slot is left untouched and err says why.  Returns 0 or -1.
 */
int tls_server_reload(SSL_CTX **slot, const char *cert_file,
                      const char *key_file, char *err,
                      size_t errlen) TLS_MUSTCHECK;

/* Puts fresh (whose reference the slot takes over) in *slot and releases
 * the slot's reference to the previous context, if any. */
void tls_ctx_swap(SSL_CTX **slot, SSL_CTX *fresh);

/* Formats the oldest queued OpenSSL error (and clears the queue); for
 * error texts.  Returns out. */
const char *tls_last_error(char *out, size_t len);

/*
 * Says why the handshake on ssl failed, truthfully, for logs: call it
 * right after SSL_do_handshake() failed with ssl_err (SSL_get_error()).
 * The text names the certificate check ("certificate verify failed: <the
 * X509 reason>") only when the certificate check is what ended the
 * handshake (OpenSSL's SSL_R_CERTIFICATE_VERIFY_FAILED, i.e. verification
 * was enforced); otherwise it is the real cause: the alert the peer sent
 * ("tlsv1 alert protocol version", "sslv3 alert handshake failure"), or
 * our own reason ("wrong version number", "no protocols available", ...).
 * An unverifiable certificate under TLS_VERIFY_NONE is recorded, not
 * blamed.  Writes at most len octets (NUL-terminated) into out, clears
 * OpenSSL's error queue, and returns the peer-certificate verification
 * result (an X509_V_* code; X509_V_OK on the server side or before a
 * certificate arrived).
 */
long tls_handshake_error(const SSL *ssl, int ssl_err, char *out, size_t len);

#endif
