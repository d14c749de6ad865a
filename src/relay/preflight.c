/*
 * relay/preflight: the configuration's files checked at start-up (see
 * preflight.h).
 */
#include "relay/preflight.h"

#include <stdio.h>
#include <uv.h>

#include "config.h"
#include "loop/tls.h"
#include "relay/auth.h"
#include "relay/dkim.h"

/* The users file, parsed by the checker serve makes (on a loop of its
 * own, closed again at once). */
static int users_ok(const char *path, char *err, size_t errlen) {
  uv_loop_t loop;
  if (uv_loop_init(&loop) < 0) {
    snprintf(err, errlen, "auth_users_file %s: cannot check it", path);
    return -1;
  }
  struct auth *a = auth_new(&loop, path, err, errlen);
  if (a)
    auth_free(a);
  uv_run(&loop, UV_RUN_DEFAULT);
  (void)uv_loop_close(&loop);
  return a ? 0 : -1;
}

int preflight_files(const struct config *cfg, int warn, char *err,
                    size_t errlen) {
  if (cfg->tls_cert_file[0]) {
    SSL_CTX *ctx =
        tls_server_ctx_new(cfg->tls_cert_file, cfg->tls_key_file, err, errlen);
    if (!ctx)
      return -1;
    SSL_CTX_free(ctx);
  }
  if (cfg->tls_ca_file[0]) {
    SSL_CTX *ctx =
        tls_client_ctx_new(cfg->tls_ca_file, TLS_VERIFY_REQUIRE, err, errlen);
    if (!ctx)
      return -1;
    SSL_CTX_free(ctx);
  }
  if (cfg->auth_users_file[0] && users_ok(cfg->auth_users_file, err, errlen))
    return -1;
  if (cfg->n_dkim_sign > 0) {
    struct dkim *d = dkim_new(NULL, cfg, warn, err, errlen);
    if (!d)
      return -1;
    dkim_free(d);
  }
  return 0;
}
