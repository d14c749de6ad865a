/*
 * dkim (relay): signing keys and signing jobs on the thread pool.  See
 * dkim.h; the canonicalization is proto/dkim, the signature OpenSSL.
 */
#include "relay/dkim.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "config.h"
#include "log.h"
#include "proto/dkim.h"
#include "queue/store.h"

/* Bytes read from the spool per step on the pool. */
#define READ_CHUNK (64 * 1024)
/* Room for one DKIM-Signature field (RSA up to 8192 bits). */
#define SIG_FIELD_MAX 4096

struct key {
  char domain[256];
  char selector[64];
  EVP_PKEY *pk;
  int ed25519; /* else RSA */
};

/* An immutable key set, shared by the signer and its jobs (refs counted
 * on the loop thread only). */
struct keyset {
  int refs;
  int n;
  struct key k[CONFIG_MAX_LIST];
  /* SHA-256 fetched once (OpenSSL 3 fetches EVP_sha256() again, under a
   * lock, on every init: measurable per message, issue 21) */
  EVP_MD *sha256;
};

struct dkim {
  uv_loop_t *loop;
  const struct config *cfg;
  struct keyset *keys;
  int warn; /* log weak keys */
};

struct dkim_req {
  uv_work_t work;
  struct keyset *keys;
  char *prefix;
  size_t prefix_len;
  struct store_spool *body;
  unsigned flags;
  dkim_sign_cb cb;
  void *data;
  int canceled;
  /* results, written on the pool */
  int status;
  char *out; /* signature fields + prefix */
  size_t out_len;
  char domains[600];
  const char *note;
};

static void keyset_unref(struct keyset *ks) {
  if (!ks || --ks->refs > 0)
    return;
  for (int i = 0; i < ks->n; i++)
    EVP_PKEY_free(ks->k[i].pk);
  EVP_MD_free(ks->sha256);
  free(ks);
}

/* Reads and checks one key file; NULL with err set. */
static EVP_PKEY *load_key(const struct config_dkim *c, int *ed25519, int *bits,
                          char *err, size_t errlen) {
  FILE *f = fopen(c->keyfile, "r");
  if (!f) {
    snprintf(err, errlen, "dkim_sign: %s: %s", c->keyfile, strerror(errno));
    return NULL;
  }
  /* PEM_read_PrivateKey takes PKCS#8 and the traditional RSA form. */
  EVP_PKEY *pk = PEM_read_PrivateKey(f, NULL, NULL, NULL);
  fclose(f);
  if (!pk) {
    unsigned long e = ERR_get_error();
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    snprintf(err, errlen, "dkim_sign: %s: not a PEM private key (%s)",
             c->keyfile, buf);
    return NULL;
  }
  int id = EVP_PKEY_get_base_id(pk);
  *bits = EVP_PKEY_get_bits(pk);
  if (id == EVP_PKEY_ED25519) {
    *ed25519 = 1;
    return pk;
  }
  if (id != EVP_PKEY_RSA) {
    snprintf(err, errlen, "dkim_sign: %s: not an RSA or Ed25519 key",
             c->keyfile);
    EVP_PKEY_free(pk);
    return NULL;
  }
  *ed25519 = 0;
  if (*bits < DKIM_RSA_MIN_BITS) {
    snprintf(err, errlen,
             "dkim_sign: %s: RSA key of %d bits (at least %d are needed)",
             c->keyfile, *bits, DKIM_RSA_MIN_BITS);
    EVP_PKEY_free(pk);
    return NULL;
  }
  return pk;
}

static struct keyset *keyset_load(const struct config *cfg, int warn, char *err,
                                  size_t errlen) {
  struct keyset *ks = calloc(1, sizeof *ks);
  if (!ks) {
    snprintf(err, errlen, "dkim_sign: out of memory");
    return NULL;
  }
  ks->refs = 1;
  ks->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
  if (!ks->sha256) {
    snprintf(err, errlen, "dkim_sign: OpenSSL has no SHA-256");
    free(ks);
    return NULL;
  }
  for (int i = 0; i < cfg->n_dkim_sign; i++) {
    const struct config_dkim *c = &cfg->dkim_sign[i];
    struct key *k = &ks->k[ks->n];
    int bits = 0;
    k->pk = load_key(c, &k->ed25519, &bits, err, errlen);
    if (!k->pk) {
      keyset_unref(ks);
      return NULL;
    }
    ks->n++;
    snprintf(k->domain, sizeof k->domain, "%s", c->domain);
    snprintf(k->selector, sizeof k->selector, "%s", c->selector);
    if (warn && !k->ed25519 && bits < DKIM_RSA_WARN_BITS)
      log_msg(LOG_WARN, "config",
              "dkim_sign: %s: RSA key of %d bits; receivers expect %d or more",
              c->keyfile, bits, DKIM_RSA_WARN_BITS);
  }
  return ks;
}

struct dkim *dkim_new(uv_loop_t *loop, const struct config *cfg, int warn,
                      char *err, size_t errlen) {
  struct dkim *d = calloc(1, sizeof *d);
  if (!d) {
    snprintf(err, errlen, "dkim_sign: out of memory");
    return NULL;
  }
  d->loop = loop;
  d->cfg = cfg;
  d->warn = warn;
  d->keys = keyset_load(cfg, warn, err, errlen);
  if (!d->keys) {
    free(d);
    return NULL;
  }
  return d;
}

int dkim_reload(struct dkim *d, char *err, size_t errlen) {
  struct keyset *ks = keyset_load(d->cfg, d->warn, err, errlen);
  if (!ks)
    return -1;
  keyset_unref(d->keys);
  d->keys = ks;
  return 0;
}

void dkim_free(struct dkim *d) {
  if (!d)
    return;
  keyset_unref(d->keys);
  free(d);
}

int dkim_has_domain(const struct dkim *d, const char *domain) {
  for (int i = 0; i < d->keys->n; i++)
    if (strcasecmp(d->keys->k[i].domain, domain) == 0)
      return 1;
  return 0;
}

/* ---- the job (pool thread) --------------------------------------------- */

/* The signing domain for From: domain `from`: a key's domain equal to it,
 * or with DKIM_SIGN_PARENT the longest key domain it ends in after a dot.
 * NULL when no key applies. */
static const char *signing_domain(const struct keyset *ks, const char *from,
                                  unsigned flags) {
  const char *best = NULL;
  size_t fl = strlen(from);
  for (int i = 0; i < ks->n; i++) {
    const char *kd = ks->k[i].domain;
    size_t kl = strlen(kd);
    int match = strcmp(kd, from) == 0;
    if (!match && (flags & DKIM_SIGN_PARENT) && fl > kl + 1 &&
        from[fl - kl - 1] == '.' && strcmp(from + fl - kl, kd) == 0)
      match = 1;
    if (match && (!best || kl > strlen(best)))
      best = kd;
  }
  return best;
}

static void sink_digest(void *ctx, const char *p, size_t n) {
  EVP_DigestUpdate(ctx, p, n);
}

struct gbuf {
  char *p;
  size_t len, cap;
  int err;
};

static void sink_buf(void *ctx, const char *p, size_t n) {
  struct gbuf *b = ctx;
  if (b->err)
    return;
  if (b->len + n > b->cap) {
    size_t cap = (b->len + n) * 2;
    char *q = realloc(b->p, cap);
    if (!q) {
      b->err = 1;
      return;
    }
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->len, p, n);
  b->len += n;
}

/* Signs data with key k; writes base64 into b64.  0 or -1. */
static int sign_data(const struct keyset *ks, const struct key *k,
                     const char *data, size_t n, char *b64, size_t cap) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned dlen = 0;
  const unsigned char *in = (const unsigned char *)data;
  size_t inlen = n;
  if (k->ed25519) {
    /* RFC 8463 §3: Ed25519 (PureEdDSA) signs the SHA-256 hash of the
     * header data, not the data itself. */
    if (!EVP_Digest(data, n, digest, &dlen, ks->sha256, NULL))
      return -1;
    in = digest;
    inlen = dlen;
  }
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  unsigned char sig[1024];
  size_t siglen = sizeof sig;
  int ok = ctx &&
           EVP_DigestSignInit(ctx, NULL, k->ed25519 ? NULL : ks->sha256, NULL,
                              k->pk) == 1 &&
           EVP_DigestSign(ctx, NULL, &siglen, in, inlen) == 1 &&
           siglen <= sizeof sig &&
           EVP_DigestSign(ctx, sig, &siglen, in, inlen) == 1;
  EVP_MD_CTX_free(ctx);
  if (!ok) {
    ERR_clear_error();
    return -1;
  }
  return dkim_base64(sig, siglen, b64, cap) < 0 ? -1 : 0;
}

/* 1 when the finished header section names no From: domain we sign for:
 * the rest of the message need not be read. */
static int will_not_sign(const struct dkim_req *r, const struct dkim_msg *m) {
  char from[256];
  if (m->err != DKIM_MSG_OK)
    return 1; /* malformed or oversized header section: never signed */
  if (!dkim_msg_headers_done(m))
    return 0;
  return dkim_msg_from_domain(m, from, sizeof from) < 0 ||
         !signing_domain(r->keys, from, r->flags);
}

/* Reads the prefix and the body through the canonicalizer; stops early
 * (returning 1) for a message that will not be signed. */
static int read_message(struct dkim_req *r, struct dkim_msg *m) {
  dkim_msg_feed(m, r->prefix, r->prefix_len);
  if (will_not_sign(r, m))
    return 1;
  if (!r->body)
    return 0;
  char *buf = malloc(READ_CHUNK);
  if (!buf)
    return -ENOMEM;
  int64_t off = 0;
  for (;;) {
    long n = store_spool_pread(r->body, off, buf, READ_CHUNK);
    if (n < 0) {
      free(buf);
      return (int)n;
    }
    if (n == 0)
      break;
    dkim_msg_feed(m, buf, (size_t)n);
    off += n;
    if (will_not_sign(r, m)) {
      free(buf);
      return 1;
    }
  }
  free(buf);
  return 0;
}

static void on_work(uv_work_t *w) {
  struct dkim_req *r = w->data;
  struct dkim_msg *m = malloc(sizeof *m);
  EVP_MD_CTX *bctx = EVP_MD_CTX_new();
  struct gbuf out = {0};
  struct gbuf hdata = {0};
  r->status = -ENOMEM;
  if (!m || !bctx || !EVP_DigestInit_ex(bctx, r->keys->sha256, NULL))
    goto done;
  dkim_msg_init(m, sink_digest, bctx);
  int rc = read_message(r, m);
  if (rc < 0) {
    r->status = rc; /* the spool's own error, e.g. -ENOSPC */
    goto done;
  }
  if (rc == 1) {
    /* Not signed.  A spool that failed still reports its error, so the
     * client gets 452 as without signing. */
    char probe;
    long e = r->body ? store_spool_pread(r->body, 0, &probe, 1) : 0;
    r->status = e < 0 ? (int)e : 0;
    if (e >= 0 && m->err == DKIM_MSG_HDR_FULL)
      r->note = "signed header fields too large: not signed";
    else if (e >= 0 && m->err == DKIM_MSG_BAD_HEADER)
      r->note = "malformed header section: not signed";
    goto done;
  }
  dkim_msg_finish(m);
  unsigned char bh[EVP_MAX_MD_SIZE];
  unsigned bhlen = 0;
  if (!EVP_DigestFinal_ex(bctx, bh, &bhlen)) {
    r->status = -EIO;
    goto done;
  }
  char from[256];
  r->status = 0;
  if (dkim_msg_from_domain(m, from, sizeof from) < 0) {
    if (m->err == DKIM_MSG_HDR_FULL)
      r->note = "signed header fields too large: not signed";
    else if (m->err == DKIM_MSG_BAD_HEADER)
      r->note = "malformed header section: not signed";
    goto done; /* relayed unsigned */
  }
  const char *domain = signing_domain(r->keys, from, r->flags);
  if (!domain)
    goto done;
  char bh64[64], hlist[2048];
  if (dkim_base64(bh, bhlen, bh64, sizeof bh64) < 0 ||
      dkim_msg_h_list(m, hlist, sizeof hlist) < 0) {
    r->note = "too many signed header fields: not signed";
    goto done;
  }
  dkim_msg_hash_headers(m, sink_buf, &hdata);
  size_t hbase = hdata.len;
  long long now = (long long)time(NULL);
  for (int i = 0; i < r->keys->n; i++) {
    const struct key *k = &r->keys->k[i];
    if (strcmp(k->domain, domain) != 0)
      continue;
    char field[SIG_FIELD_MAX], canon[SIG_FIELD_MAX], b64[1400];
    struct dkim_sig s = {
        .algo = k->ed25519 ? "ed25519-sha256" : "rsa-sha256",
        .domain = k->domain,
        .selector = k->selector,
        .timestamp = now,
        .h_list = hlist,
        .bh = bh64,
    };
    long fl = dkim_sig_begin(&s, field, sizeof field);
    long cl =
        fl < 0 ? -1 : dkim_hcanon(field, (size_t)fl, canon, sizeof canon, 0);
    if (cl < 0) {
      r->status = -EIO;
      goto done;
    }
    /* RFC 6376 §3.7: the signed fields, then this field with b= empty. */
    hdata.len = hbase;
    sink_buf(&hdata, canon, (size_t)cl);
    if (hdata.err ||
        sign_data(r->keys, k, hdata.p, hdata.len, b64, sizeof b64) < 0) {
      r->status = -EIO;
      goto done;
    }
    fl = dkim_sig_finish(field, (size_t)fl, sizeof field, b64);
    if (fl < 0) {
      r->status = -EIO;
      goto done;
    }
    sink_buf(&out, field, (size_t)fl);
    size_t dl = strlen(r->domains);
    if (!strstr(r->domains, domain) &&
        dl + strlen(domain) + 2 < sizeof r->domains)
      snprintf(r->domains + dl, sizeof r->domains - dl, "%s%s", dl ? "," : "",
               domain);
  }
  if (out.len) {
    sink_buf(&out, r->prefix, r->prefix_len);
    if (out.err) {
      r->status = -ENOMEM;
      goto done;
    }
    r->out = out.p;
    r->out_len = out.len;
    out.p = NULL;
  }
done:
  free(out.p);
  free(hdata.p);
  EVP_MD_CTX_free(bctx);
  free(m);
}

static void on_after_work(uv_work_t *w, int status) {
  struct dkim_req *r = w->data;
  struct dkim_signed res = {.body = r->body, .domains = ""};
  int st = r->status;
  if (status == UV_ECANCELED || r->canceled) {
    st = -ECANCELED;
  } else if (st == 0) {
    if (r->out) {
      res.prefix = r->out;
      res.prefix_len = r->out_len;
      res.domains = r->domains;
    } else {
      res.prefix = r->prefix;
      res.prefix_len = r->prefix_len;
    }
    res.note = r->note;
  }
  r->cb(r, st, &res, r->data);
  keyset_unref(r->keys);
  free(r->out);
  free(r->prefix);
  free(r);
}

int dkim_sign(struct dkim *d, const char *prefix, size_t prefix_len,
              struct store_spool *body, unsigned flags, dkim_sign_cb cb,
              void *data, struct dkim_req **reqp) {
  struct dkim_req *r = calloc(1, sizeof *r);
  if (!r)
    return -ENOMEM;
  r->prefix = malloc(prefix_len ? prefix_len : 1);
  if (!r->prefix) {
    free(r);
    return -ENOMEM;
  }
  memcpy(r->prefix, prefix, prefix_len);
  r->prefix_len = prefix_len;
  r->body = body;
  r->flags = flags;
  r->cb = cb;
  r->data = data;
  r->keys = d->keys;
  r->work.data = r;
  int rc = uv_queue_work(d->loop, &r->work, on_work, on_after_work);
  if (rc < 0) {
    free(r->prefix);
    free(r);
    return rc;
  }
  d->keys->refs++;
  if (reqp)
    *reqp = r;
  return 0;
}

void dkim_cancel(struct dkim_req *req) {
  req->canceled = 1;
  /* Withdraws the job if it has not started; its after-work callback then
   * runs with UV_ECANCELED on the next loop turn. */
  uv_cancel((uv_req_t *)&req->work);
}
