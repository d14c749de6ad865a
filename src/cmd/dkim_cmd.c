/*
 * dkim_cmd: key generation for DKIM signing.  See dkim_cmd.h.
 */
#include "cmd/dkim_cmd.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proto/dkim.h"

#define RSA_DEFAULT_BITS 2048
#define RSA_MIN_BITS 1024
#define RSA_MAX_BITS 8192
/* RFC 1035 §3.3.14: one character-string holds at most 255 octets. */
#define TXT_STRING_MAX 255

static const char usage[] =
    "usage: mailhop dkim keygen DOMAIN SELECTOR [--type rsa|ed25519] "
    "[--bits N] [--out FILE]\n"
    "\n"
    "Writes a new DKIM signing key (PEM, mode 0600; never over an existing\n"
    "file) and prints its DNS TXT record.\n"
    "\n"
    "options:\n"
    "  --type rsa|ed25519   key type (default rsa)\n"
    "  --bits N             RSA key size (default 2048, 1024 to 8192)\n"
    "  --out FILE           where to write it (default DOMAIN.SELECTOR.key)\n";

static int name_ok(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > DKIM_DOMAIN_MAX || s[0] == '.' || s[0] == '-')
    return 0;
  return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                   "0123456789-._") == n;
}

static void ssl_error(const char *what) {
  char buf[256];
  ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
  fprintf(stderr, "mailhop: %s: %s\n", what, buf);
}

/* The p= value: base64 of the SubjectPublicKeyInfo (RSA, RFC 6376
 * §3.6.1) or of the raw 32-octet key (Ed25519, RFC 8463 §4).  Malloc'd. */
static char *public_b64(EVP_PKEY *pk, int ed25519) {
  unsigned char *der = NULL;
  size_t n = 0;
  if (ed25519) {
    n = 32;
    der = malloc(n);
    if (!der || EVP_PKEY_get_raw_public_key(pk, der, &n) != 1) {
      free(der);
      return NULL;
    }
  } else {
    int len = i2d_PUBKEY(pk, &der);
    if (len <= 0)
      return NULL;
    n = (size_t)len;
  }
  size_t cap = (n + 2) / 3 * 4 + 1;
  char *out = malloc(cap);
  if (out && dkim_base64(der, n, out, cap) < 0) {
    free(out);
    out = NULL;
  }
  if (ed25519)
    free(der);
  else
    OPENSSL_free(der);
  return out;
}

/* Writes the key to path, which must not exist.  Returns 0, 1 (exists)
 * or 2 (failed; nothing left behind). */
static int write_key(EVP_PKEY *pk, const char *path) {
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    fprintf(stderr, "mailhop: %s: %s%s\n", path, strerror(errno),
            errno == EEXIST ? " (not overwritten)" : "");
    return errno == EEXIST ? 1 : 2;
  }
  int ok = fchmod(fd, 0600) == 0;
  BIO *bio = ok ? BIO_new_fd(fd, BIO_NOCLOSE) : NULL;
  ok = bio && PEM_write_bio_PrivateKey(bio, pk, NULL, NULL, 0, NULL, NULL) &&
       BIO_flush(bio) == 1;
  BIO_free(bio);
  ok = ok && fsync(fd) == 0;
  ok = close(fd) == 0 && ok;
  if (!ok) {
    fprintf(stderr, "mailhop: %s: writing the key failed\n", path);
    unlink(path);
    return 2;
  }
  return 0;
}

static int keygen(const char *domain, const char *selector, const char *type,
                  long bits, const char *out) {
  int ed25519 = strcmp(type, "ed25519") == 0;
  if (!ed25519 && strcmp(type, "rsa") != 0) {
    fprintf(stderr, "mailhop: --type must be rsa or ed25519\n");
    return 1;
  }
  if (ed25519 && bits) {
    fprintf(stderr, "mailhop: --bits applies to rsa keys only\n");
    return 1;
  }
  if (!ed25519 && !bits)
    bits = RSA_DEFAULT_BITS;
  if (!ed25519 && (bits < RSA_MIN_BITS || bits > RSA_MAX_BITS)) {
    fprintf(stderr, "mailhop: --bits must be between %d and %d\n", RSA_MIN_BITS,
            RSA_MAX_BITS);
    return 1;
  }
  if (!ed25519 && bits < 2048)
    fprintf(stderr, "mailhop: warning: RSA keys under 2048 bits are weak; "
                    "receivers may ignore the signature\n");
  char path[4096];
  if (!out) {
    snprintf(path, sizeof path, "%s.%s.key", domain, selector);
    out = path;
  }
  /* Refuse early, before the (slow) generation. */
  if (access(out, F_OK) == 0) {
    fprintf(stderr, "mailhop: %s exists (not overwritten)\n", out);
    return 1;
  }
  EVP_PKEY *pk = ed25519 ? EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")
                         : EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits);
  if (!pk) {
    ssl_error("key generation");
    return 2;
  }
  char *p = public_b64(pk, ed25519);
  if (!p) {
    ssl_error("public key");
    EVP_PKEY_free(pk);
    return 2;
  }
  int rc = write_key(pk, out);
  EVP_PKEY_free(pk);
  if (rc != 0) {
    free(p);
    return rc;
  }
  size_t tn = strlen(p) + 64;
  char *txt = malloc(tn);
  if (!txt) {
    free(p);
    return 2;
  }
  snprintf(txt, tn, "v=DKIM1; k=%s; p=%s", ed25519 ? "ed25519" : "rsa", p);
  free(p);
  size_t dl = strlen(domain);
  printf("%s._domainkey.%.*s. IN TXT", selector,
         (int)(domain[dl - 1] == '.' ? dl - 1 : dl), domain);
  for (size_t off = 0, n = strlen(txt); off < n; off += TXT_STRING_MAX) {
    size_t k = n - off < TXT_STRING_MAX ? n - off : TXT_STRING_MAX;
    printf(" \"%.*s\"", (int)k, txt + off);
  }
  printf("\n");
  free(txt);
  fprintf(stderr, "mailhop: key written to %s\n", out);
  return fflush(stdout) == 0 ? 0 : 2;
}

int dkim_cmd_main(int argc, char **argv) {
  const char *words[4];
  int nw = 0;
  const char *type = "rsa", *out = NULL;
  long bits = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      fputs(usage, stdout);
      return 0;
    }
    if (strcmp(a, "--type") == 0 || strcmp(a, "--bits") == 0 ||
        strcmp(a, "--out") == 0) {
      if (i + 1 >= argc) {
        fprintf(stderr, "mailhop: %s needs an argument\n", a);
        return 1;
      }
      const char *v = argv[++i];
      if (a[2] == 't') {
        type = v;
      } else if (a[2] == 'o') {
        out = v;
      } else {
        char *end;
        errno = 0;
        bits = strtol(v, &end, 10);
        if (errno || *end || end == v || bits <= 0) {
          fprintf(stderr, "mailhop: --bits: '%s' is not a number\n", v);
          return 1;
        }
      }
      continue;
    }
    if (a[0] == '-' && a[1]) {
      fprintf(stderr, "mailhop: unknown option '%s'\n%s", a, usage);
      return 1;
    }
    if (nw == 4) {
      fputs(usage, stderr);
      return 1;
    }
    words[nw++] = a;
  }
  if (nw != 3 || strcmp(words[0], "keygen") != 0) {
    fputs(usage, stderr);
    return 1;
  }
  if (!name_ok(words[1]) || !name_ok(words[2])) {
    fprintf(stderr, "mailhop: DOMAIN and SELECTOR must be DNS names in ASCII "
                    "(A-labels)\n");
    return 1;
  }
  return keygen(words[1], words[2], type, bits, out);
}
