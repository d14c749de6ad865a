/*
 * test_tls: the client contexts and tls_handshake_error() over real TLS
 * handshakes between two SSL objects joined by memory BIOs (the engine's
 * own arrangement, without sockets), with certificates made at test time by
 * the openssl command.  Issue 12 item 7: a failed opportunistic handshake
 * must be reported with its real cause, not as the (unenforced)
 * certificate check; a server the trust anchors vouch for is verified even
 * when verification is not enforced.
 */
#include "loop/tls.h"

#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "check.h"

static char dir[64];
static char cert[128], key[128], ca_cert[128], ca_key[128], leaf[128],
    leaf_key[128];

static int sh(const char *cmd) {
  char full[2048];
  snprintf(full, sizeof full, "%s >/dev/null 2>&1", cmd);
  return system(full);
}

/* A self-signed "localhost" certificate, and a CA with a leaf
 * "mx.example" (the trusted-anchor case). */
static int make_certs(void) {
  if (!check_tmpdir(dir, sizeof dir, "mh-tls"))
    return -1;
  snprintf(cert, sizeof cert, "%s/self.pem", dir);
  snprintf(key, sizeof key, "%s/self.key", dir);
  snprintf(ca_cert, sizeof ca_cert, "%s/ca.pem", dir);
  snprintf(ca_key, sizeof ca_key, "%s/ca.key", dir);
  snprintf(leaf, sizeof leaf, "%s/leaf.pem", dir);
  snprintf(leaf_key, sizeof leaf_key, "%s/leaf.key", dir);
  char cmd[1536];
  const char *ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  snprintf(cmd, sizeof cmd,
           "openssl req -x509 %s -days 2 -subj /CN=localhost -addext "
           "subjectAltName=DNS:localhost -keyout %s -out %s",
           ec, key, cert);
  if (sh(cmd) != 0)
    return -1;
  snprintf(cmd, sizeof cmd,
           "openssl req -x509 %s -days 2 -subj /CN=test-ca -addext "
           "basicConstraints=critical,CA:TRUE -addext "
           "keyUsage=critical,keyCertSign -keyout %s -out %s",
           ec, ca_key, ca_cert);
  if (sh(cmd) != 0)
    return -1;
  snprintf(cmd, sizeof cmd,
           "cd %s && openssl req %s -subj /CN=mx.example -keyout leaf.key "
           "-out leaf.csr && printf 'subjectAltName=DNS:mx.example\\n' > "
           "leaf.ext && openssl x509 -req -in leaf.csr -CA ca.pem -CAkey "
           "ca.key -CAcreateserial -days 2 -extfile leaf.ext -out leaf.pem",
           dir, ec);
  return sh(cmd) == 0 ? 0 : -1;
}

static void remove_certs(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "cannot remove %s\n", dir);
}

struct hs {
  int ok;        /* the client finished its handshake */
  int failed;    /* the client's handshake failed */
  long vr;       /* tls_handshake_error's result, or the verify result */
  char why[200]; /* tls_handshake_error's text */
};

static void move(BIO *from, BIO *to) {
  char buf[4096];
  int n;
  while ((n = BIO_read(from, buf, sizeof buf)) > 0)
    CHECK(BIO_write(to, buf, n) == n);
}

/*
 * Runs a handshake between a client from cctx (verifying `name`, at most
 * TLS version cli_max when non-zero) and a server from sctx, or a server
 * that only sends `garbage` when sctx is NULL.
 */
static void handshake(SSL_CTX *cctx, SSL_CTX *sctx, const char *name,
                      int cli_max, const char *garbage, struct hs *h) {
  memset(h, 0, sizeof *h);
  SSL *c = SSL_new(cctx);
  SSL *s = sctx ? SSL_new(sctx) : NULL;
  BIO *crb = BIO_new(BIO_s_mem()), *cwb = BIO_new(BIO_s_mem());
  BIO *srb = BIO_new(BIO_s_mem()), *swb = BIO_new(BIO_s_mem());
  BIO_set_mem_eof_return(crb, -1);
  BIO_set_mem_eof_return(srb, -1);
  SSL_set_bio(c, crb, cwb);
  SSL_set_connect_state(c);
  if (cli_max)
    SSL_set_max_proto_version(c, cli_max);
  if (name) {
    SSL_set_hostflags(c, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    CHECK(SSL_set_tlsext_host_name(c, name) == 1);
    CHECK(SSL_set1_host(c, name) == 1);
  }
  if (s) {
    SSL_set_bio(s, srb, swb);
    SSL_set_accept_state(s);
  } else {
    BIO_free(srb);
    BIO_free(swb);
  }
  int srv_done = 0;
  for (int i = 0; i < 50 && !h->ok && !h->failed; i++) {
    ERR_clear_error();
    int r = SSL_do_handshake(c);
    if (r == 1) {
      h->ok = 1;
      h->vr = SSL_get_verify_result(c);
    } else {
      int e = SSL_get_error(c, r);
      if (e != SSL_ERROR_WANT_READ) {
        h->failed = 1;
        h->vr = tls_handshake_error(c, e, h->why, sizeof h->why);
        /* It leaves nothing behind for the next reader. */
        CHECK(ERR_peek_error() == 0);
      }
    }
    if (!s) {
      (void)BIO_reset(cwb);
      if (garbage && i == 0)
        BIO_write(crb, garbage, (int)strlen(garbage));
      continue;
    }
    move(cwb, srb);
    if (!srv_done) {
      /* The server's own errors must not pollute the client's report. */
      int rs = SSL_do_handshake(s);
      if (rs == 1 || SSL_get_error(s, rs) != SSL_ERROR_WANT_READ)
        srv_done = 1;
      ERR_clear_error();
    }
    move(swb, crb);
  }
  SSL_free(c);
  SSL_free(s);
}

static SSL_CTX *server(const char *crt, const char *k) {
  char err[256];
  SSL_CTX *ctx = tls_server_ctx_new(crt, k, err, sizeof err);
  CHECK(ctx != NULL);
  return ctx;
}

static SSL_CTX *client(const char *ca, enum tls_verify v) {
  char err[256];
  SSL_CTX *ctx = tls_client_ctx_new(ca, v, err, sizeof err);
  CHECK(ctx != NULL);
  return ctx;
}

/* The case of the field report: an opportunistic client, a certificate it
 * cannot verify, and a server that ends the handshake for another reason
 * (it wants a client certificate).  The report names the alert. */
static void test_alert_is_reported_not_the_certificate(void) {
  SSL_CTX *srv = server(cert, key);
  SSL_CTX_set_max_proto_version(srv, TLS1_2_VERSION);
  SSL_CTX_set_verify(srv, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                     NULL);
  SSL_CTX *opp = client(NULL, TLS_VERIFY_NONE);
  struct hs h;
  handshake(opp, srv, "localhost", 0, NULL, &h);
  CHECK_INT(h.failed, 1);
  CHECK_CONTAINS(h.why, "alert handshake failure");
  CHECK(strstr(h.why, "certificate verify failed") == NULL);
  /* The unverifiable certificate is still recorded. */
  CHECK(h.vr != X509_V_OK);
  SSL_CTX_free(opp);
  SSL_CTX_free(srv);
}

static void test_protocol_version_alert(void) {
  SSL_CTX *srv = server(cert, key); /* TLS 1.2 minimum */
  SSL_CTX *opp = client(NULL, TLS_VERIFY_NONE);
  struct hs h;
  handshake(opp, srv, "localhost", TLS1_1_VERSION, NULL, &h);
  CHECK_INT(h.failed, 1);
  CHECK_CONTAINS(h.why, "protocol version");
  CHECK(strstr(h.why, "certificate") == NULL);
  SSL_CTX_free(opp);
  SSL_CTX_free(srv);
}

static void test_not_tls_at_all(void) {
  SSL_CTX *opp = client(NULL, TLS_VERIFY_NONE);
  struct hs h;
  handshake(opp, NULL, "localhost", 0,
            "220 this is not TLS at all, it is plain SMTP\r\n", &h);
  CHECK_INT(h.failed, 1);
  CHECK(h.why[0] != '\0');
  CHECK(strstr(h.why, "certificate") == NULL);
  CHECK_INT(h.vr, X509_V_OK); /* no certificate came */
  SSL_CTX_free(opp);
}

/* When verification is enforced and is what failed, say so, with the
 * X509 reason. */
static void test_enforced_verification_failure(void) {
  SSL_CTX *srv = server(cert, key);
  SSL_CTX *req = client(ca_cert, TLS_VERIFY_REQUIRE);
  struct hs h;
  handshake(req, srv, "localhost", 0, NULL, &h);
  CHECK_INT(h.failed, 1);
  CHECK_CONTAINS(h.why, "certificate verify failed: ");
  CHECK(h.vr != X509_V_OK);
  /* Trusted chain, wrong name. */
  SSL_CTX *srv2 = server(leaf, leaf_key);
  handshake(req, srv2, "other.example", 0, NULL, &h);
  CHECK_INT(h.failed, 1);
  CHECK_STR(h.why, "certificate verify failed: hostname mismatch");
  CHECK_INT(h.vr, X509_V_ERR_HOSTNAME_MISMATCH);
  handshake(req, srv2, "mx.example", 0, NULL, &h);
  CHECK_INT(h.ok, 1);
  SSL_CTX_free(srv2);
  SSL_CTX_free(req);
  SSL_CTX_free(srv);
}

/* Opportunistic with the trust anchors: verified when they vouch for the
 * server and the name matches; never a failure when they do not. */
static void test_opportunistic_verifies_against_ca_file(void) {
  SSL_CTX *srv = server(leaf, leaf_key);
  SSL_CTX *opp = client(ca_cert, TLS_VERIFY_NONE);
  struct hs h;
  handshake(opp, srv, "mx.example", 0, NULL, &h);
  CHECK_INT(h.ok, 1);
  CHECK_INT(h.vr, X509_V_OK);
  handshake(opp, srv, "wrong.example", 0, NULL, &h);
  CHECK_INT(h.ok, 1);
  CHECK_INT(h.vr, X509_V_ERR_HOSTNAME_MISMATCH);
  /* Without the anchors (system store): completes, not verified. */
  SSL_CTX *bare = client(NULL, TLS_VERIFY_NONE);
  handshake(bare, srv, "mx.example", 0, NULL, &h);
  CHECK_INT(h.ok, 1);
  CHECK(h.vr != X509_V_OK);
  SSL_CTX_free(bare);
  SSL_CTX_free(opp);
  SSL_CTX_free(srv);
}

int main(void) {
  if (make_certs() != 0) {
    fprintf(stderr, "test_tls: cannot make certificates with openssl\n");
    remove_certs();
    return 1;
  }
  test_alert_is_reported_not_the_certificate();
  test_protocol_version_alert();
  test_not_tls_at_all();
  test_enforced_verification_failure();
  test_opportunistic_verifies_against_ca_file();
  remove_certs();
  return check_result("test_tls");
}
