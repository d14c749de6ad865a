/*
 * test_dkim_sign: relay/dkim on a real loop with a real store spool and
 * real keys made here — the callback runs exactly once (signed, unsigned,
 * cancelled), the body comes back, key checks at load, and the loop closes
 * cleanly (no handle or request left).  Whether the signatures verify is
 * checked by independent verifiers in tests/integration/test_dkim.py.
 */
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "config.h"
#include "queue/store.h"
#include "relay/dkim.h"

static char dir[256];

static void write_key(const char *path, const char *type, size_t bits) {
  EVP_PKEY *pk = bits ? EVP_PKEY_Q_keygen(NULL, NULL, type, bits)
                      : EVP_PKEY_Q_keygen(NULL, NULL, type);
  CHECK(pk != NULL);
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  CHECK(PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL) == 1);
  fclose(f);
  EVP_PKEY_free(pk);
}

struct result {
  int calls;
  int status;
  char domains[128];
  char *prefix;
  size_t prefix_len;
  struct store_spool *body;
  const char *note;
};

static void on_signed(struct dkim_req *req, int status,
                      const struct dkim_signed *res, void *data) {
  (void)req;
  struct result *r = data;
  r->calls++;
  r->status = status;
  r->body = res->body;
  r->note = res->note;
  if (status == 0) {
    snprintf(r->domains, sizeof r->domains, "%s", res->domains);
    r->prefix = malloc(res->prefix_len + 1);
    memcpy(r->prefix, res->prefix, res->prefix_len);
    r->prefix[res->prefix_len] = '\0';
    r->prefix_len = res->prefix_len;
  }
}

static struct store_spool *spool_with(struct store *st, const char *text) {
  struct store_spool *sp = store_spool_new(st);
  CHECK(sp != NULL);
  /* Small: stays in memory, no write callback. */
  CHECK_INT(store_spool_append(sp, text, strlen(text), NULL, NULL), 0);
  return sp;
}

static const char prefix[] = "Received: from x by y; Mon, 2 Jan 2026 "
                             "15:04:05 +0000\r\n";

int main(void) {
  CHECK(check_tmpdir(dir, sizeof dir, "test_dkim_sign") != NULL);
  uv_loop_t loop;
  uv_loop_init(&loop);
  char path[512], err[512];
  snprintf(path, sizeof path, "%s/q.db", dir);
  struct store *st = NULL;
  CHECK_INT(store_open(&loop, path, &st, err, sizeof err), 0);

  struct config *cfg = calloc(1, sizeof *cfg);
  config_defaults(cfg);
  char ed[512], rsa[512], small[512], bad[512];
  snprintf(ed, sizeof ed, "%s/ed.key", dir);
  snprintf(rsa, sizeof rsa, "%s/rsa.key", dir);
  snprintf(small, sizeof small, "%s/small.key", dir);
  snprintf(bad, sizeof bad, "%s/bad.key", dir);
  write_key(ed, "ED25519", 0);
  write_key(rsa, "RSA", 1024);
  write_key(small, "RSA", 768);
  FILE *f = fopen(bad, "w");
  fputs("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n", f);
  fclose(f);

  /* Key checks. */
  cfg->n_dkim_sign = 1;
  snprintf(cfg->dkim_sign[0].domain, 256, "sign.example");
  snprintf(cfg->dkim_sign[0].selector, 64, "s");
  snprintf(cfg->dkim_sign[0].keyfile, 1024, "%s", small);
  CHECK(dkim_new(&loop, cfg, 0, err, sizeof err) == NULL);
  CHECK_CONTAINS(err, "768 bits");
  snprintf(cfg->dkim_sign[0].keyfile, 1024, "%s", bad);
  CHECK(dkim_new(&loop, cfg, 0, err, sizeof err) == NULL);
  CHECK_CONTAINS(err, "not a PEM private key");
  snprintf(cfg->dkim_sign[0].keyfile, 1024, "%s/none.key", dir);
  CHECK(dkim_new(&loop, cfg, 0, err, sizeof err) == NULL);
  CHECK_CONTAINS(err, "No such file");

  /* Two keys for one domain. */
  cfg->n_dkim_sign = 2;
  snprintf(cfg->dkim_sign[0].keyfile, 1024, "%s", rsa);
  snprintf(cfg->dkim_sign[1].domain, 256, "sign.example");
  snprintf(cfg->dkim_sign[1].selector, 64, "e");
  snprintf(cfg->dkim_sign[1].keyfile, 1024, "%s", ed);
  struct dkim *d = dkim_new(&loop, cfg, 0, err, sizeof err);
  CHECK(d != NULL);
  if (!d)
    return check_result("test_dkim_sign");
  CHECK(dkim_has_domain(d, "SIGN.example"));
  CHECK(!dkim_has_domain(d, "other.example"));

  /* Signed twice; the body comes back. */
  struct result a = {0};
  struct store_spool *sp =
      spool_with(st, "From: A <a@Sign.Example>\r\nSubject: s\r\n\r\nbody\r\n");
  CHECK_INT(dkim_sign(d, prefix, strlen(prefix), sp, 0, on_signed, &a, NULL),
            0);
  CHECK_INT(a.calls, 0); /* never from inside dkim_sign */
  while (a.calls == 0)
    uv_run(&loop, UV_RUN_ONCE);
  CHECK_INT(a.calls, 1);
  CHECK_INT(a.status, 0);
  CHECK_STR(a.domains, "sign.example");
  CHECK(a.body == sp);
  CHECK(a.prefix &&
        strncmp(a.prefix, "DKIM-Signature: v=1; a=rsa-sha256;", 34) == 0);
  CHECK(a.prefix && strstr(a.prefix, "\r\nDKIM-Signature: v=1; "
                                     "a=ed25519-sha256;") != NULL);
  CHECK(a.prefix_len > strlen(prefix) &&
        memcmp(a.prefix + a.prefix_len - strlen(prefix), prefix,
               strlen(prefix)) == 0);
  free(a.prefix);

  /* Another domain, and a parent-domain From without the flag: unsigned,
   * prefix unchanged; with DKIM_SIGN_PARENT the parent's keys sign. */
  const char *froms[] = {"From: x@other.example\r\n\r\nb\r\n",
                         "From: x@mx1.sign.example\r\n\r\nb\r\n",
                         "From: x@mx1.sign.example\r\n\r\nb\r\n"};
  for (int i = 0; i < 3; i++) {
    struct result b = {0};
    struct store_spool *sp2 = spool_with(st, froms[i]);
    CHECK_INT(dkim_sign(d, prefix, strlen(prefix), sp2,
                        i == 2 ? DKIM_SIGN_PARENT : 0, on_signed, &b, NULL),
              0);
    while (b.calls == 0)
      uv_run(&loop, UV_RUN_ONCE);
    CHECK_INT(b.status, 0);
    if (i < 2) {
      CHECK_STR(b.domains, "");
      CHECK(b.prefix_len == strlen(prefix));
    } else {
      CHECK_STR(b.domains, "sign.example");
    }
    free(b.prefix);
    store_spool_free(b.body);
  }

  /* A cancelled request: the callback runs once, later, -ECANCELED, with
   * the body.  The signer freed meanwhile: the job keeps its keys. */
  struct result c[4] = {{0}};
  struct dkim_req *req[4];
  for (int i = 0; i < 4; i++)
    CHECK_INT(dkim_sign(d, prefix, strlen(prefix), NULL, 0, on_signed, &c[i],
                        &req[i]),
              0);
  for (int i = 0; i < 4; i++)
    dkim_cancel(req[i]);
  dkim_free(d);
  for (int i = 0; i < 4; i++)
    CHECK_INT(c[i].calls, 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  for (int i = 0; i < 4; i++) {
    CHECK_INT(c[i].calls, 1);
    CHECK_INT(c[i].status, -ECANCELED);
  }

  store_spool_free(sp);
  store_close(st, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(&loop), 0);
  free(cfg);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  CHECK_INT(system(cmd), 0);
  return check_result("test_dkim_sign");
}
