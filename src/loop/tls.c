/*
 * tls: SSL_CTX factories (see tls.h).  Pure OpenSSL configuration; no
 * sockets, no logging, no global state beyond OpenSSL's own.
 */
#include "loop/tls.h"

#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509.h>

const char *tls_last_error(char *out, size_t len) {
  unsigned long e = ERR_get_error();
  if (e == 0) {
    snprintf(out, len, "unknown TLS error");
  } else {
    const char *reason = ERR_reason_error_string(e);
    if (reason)
      snprintf(out, len, "%s", reason);
    else
      ERR_error_string_n(e, out, len);
  }
  ERR_clear_error();
  return out;
}

long tls_handshake_error(const SSL *ssl, int ssl_err, char *out, size_t len) {
  long vr = SSL_is_server(ssl) ? X509_V_OK : SSL_get_verify_result(ssl);
  /* The oldest error is the cause; later ones are consequences. */
  unsigned long first = 0, verify_failed = 0, e;
  while ((e = ERR_get_error()) != 0) {
    if (!first)
      first = e;
    if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
        ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED)
      verify_failed = e;
  }
  if (verify_failed) {
    snprintf(out, len, "certificate verify failed: %s",
             X509_verify_cert_error_string(vr));
  } else if (first) {
    const char *reason = ERR_reason_error_string(first);
    if (reason)
      snprintf(out, len, "%s", reason);
    else
      ERR_error_string_n(first, out, len);
  } else if (ssl_err == SSL_ERROR_SYSCALL || ssl_err == SSL_ERROR_ZERO_RETURN) {
    snprintf(out, len, "the peer ended the connection during the handshake");
  } else {
    snprintf(out, len, "TLS handshake failed (SSL error %d)", ssl_err);
  }
  ERR_clear_error();
  return vr;
}

SSL_CTX *tls_server_ctx_new(const char *cert_file, const char *key_file,
                            char *err, size_t errlen) {
  char why[160];
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) {
    snprintf(err, errlen, "cannot create TLS context: %s",
             tls_last_error(why, sizeof why));
    return NULL;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
  /* The write path hands SSL_write whole buffers and the memory BIO never
   * blocks, but say so explicitly rather than rely on it. */
  SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  static const unsigned char sid[] = "mailhop";
  SSL_CTX_set_session_id_context(ctx, sid, sizeof sid - 1);

  if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
    snprintf(err, errlen, "cannot load tls_cert_file %s: %s", cert_file,
             tls_last_error(why, sizeof why));
    goto fail;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
    /* OpenSSL checks the pair while loading the key. */
    if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
      ERR_clear_error();
      snprintf(err, errlen, "tls_key_file %s does not match tls_cert_file %s",
               key_file, cert_file);
      goto fail;
    }
    snprintf(err, errlen, "cannot load tls_key_file %s: %s", key_file,
             tls_last_error(why, sizeof why));
    goto fail;
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    ERR_clear_error();
    snprintf(err, errlen, "tls_key_file %s does not match tls_cert_file %s",
             key_file, cert_file);
    goto fail;
  }
  return ctx;
fail:
  SSL_CTX_free(ctx);
  return NULL;
}

SSL_CTX *tls_client_ctx_new(const char *ca_file, enum tls_verify verify,
                            char *err, size_t errlen) {
  char why[160];
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) {
    snprintf(err, errlen, "cannot create TLS context: %s",
             tls_last_error(why, sizeof why));
    return NULL;
  }
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);

  int ok = ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                   : SSL_CTX_set_default_verify_paths(ctx);
  if (ok != 1) {
    if (ca_file) {
      snprintf(err, errlen, "cannot load tls_ca_file %s: %s", ca_file,
               tls_last_error(why, sizeof why));
      goto fail;
    }
    /* A missing system store only matters when verifying; opportunistic
     * TLS goes on without it (everything then reports unverified). */
    if (verify == TLS_VERIFY_REQUIRE) {
      snprintf(err, errlen, "cannot load the system CA store: %s",
               tls_last_error(why, sizeof why));
      goto fail;
    }
    ERR_clear_error();
  }

  if (verify == TLS_VERIFY_REQUIRE) {
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  } else {
    /* RFC 7435: any encryption beats none, so old versions and weak keys
     * are accepted rather than falling back to plaintext. */
    SSL_CTX_set_min_proto_version(ctx, TLS1_VERSION);
    SSL_CTX_set_security_level(ctx, 0);
    if (SSL_CTX_set_cipher_list(ctx, "ALL:@SECLEVEL=0") != 1)
      ERR_clear_error();
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  }
  return ctx;
fail:
  SSL_CTX_free(ctx);
  return NULL;
}

void tls_ctx_swap(SSL_CTX **slot, SSL_CTX *fresh) {
  SSL_CTX *old = *slot;
  *slot = fresh;
  SSL_CTX_free(old); /* NULL-safe; live SSLs hold their own reference */
}

int tls_server_reload(SSL_CTX **slot, const char *cert_file,
                      const char *key_file, char *err, size_t errlen) {
  SSL_CTX *fresh = tls_server_ctx_new(cert_file, key_file, err, errlen);
  if (!fresh)
    return -1;
  tls_ctx_swap(slot, fresh);
  return 0;
}
