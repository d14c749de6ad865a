/*
 * fuzz_dkim: the DKIM canonicalizer (proto/dkim.h) on arbitrary stored
 * messages.  The first input byte seeds the chunk sizes; the rest is the
 * message.  Invariants:
 *  - fed in chunks of random sizes, the canonical body, the signed header
 *    hash input, the h= list and the From: domain equal those of a single
 *    feed;
 *  - the canonical body has only CRLF line ends, no WSP before a CRLF, no
 *    WSP run longer than one SP (no HTAB at all), ends in CRLF unless
 *    empty, and does not end in an empty line;
 *  - every kept header field is "name:value\r\n" with a lower-case signed
 *    name, no other CR or LF, no HTAB, no double SP, no SP at either end
 *    of the value; the h= list names From once more than it occurs;
 *  - a From: domain, when found, is non-empty, lower-case and has no
 *    whitespace;
 *  - dkim_hcanon of the input's first line agrees with itself in place.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/dkim.h"

#define CHECK(x)                                                               \
  do {                                                                         \
    if (!(x)) {                                                                \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__,     \
              #x);                                                             \
      abort();                                                                 \
    }                                                                          \
  } while (0)

struct buf {
  char *p;
  size_t len, cap;
};

static void sink(void *ctx, const char *p, size_t n) {
  struct buf *b = ctx;
  if (b->len + n > b->cap) {
    b->cap = (b->len + n) * 2 + 64;
    b->p = realloc(b->p, b->cap);
    CHECK(b->p != NULL);
  }
  memcpy(b->p + b->len, p, n);
  b->len += n;
}

struct result {
  struct buf body, hdrs;
  char h[8192];
  long hlen;
  char dom[256];
  int dom_rc;
  int from_count;
};

static struct dkim_msg *msg;

static void run(const uint8_t *data, size_t size, unsigned seed,
                struct result *r) {
  memset(r, 0, sizeof *r);
  dkim_msg_init(msg, sink, &r->body);
  size_t off = 0;
  while (off < size) {
    size_t k = size - off;
    if (seed) {
      seed = seed * 1103515245u + 12345u;
      k = (seed >> 16) % 97;
      if (k > size - off)
        k = size - off;
    }
    dkim_msg_feed(msg, (const char *)data + off, k);
    off += k;
  }
  dkim_msg_finish(msg);
  dkim_msg_hash_headers(msg, sink, &r->hdrs);
  r->hlen = dkim_msg_h_list(msg, r->h, sizeof r->h);
  r->dom_rc = dkim_msg_from_domain(msg, r->dom, sizeof r->dom);
  r->from_count = msg->from_count;
}

static void check_body(const struct buf *b) {
  for (size_t i = 0; i < b->len; i++) {
    char c = b->p[i];
    CHECK(c != '\t');
    if (c == '\n')
      CHECK(i > 0 && b->p[i - 1] == '\r');
    if (c == '\r' && i + 1 < b->len && b->p[i + 1] == '\n')
      CHECK(i == 0 || b->p[i - 1] != ' ');
    if (c == ' ')
      CHECK(i + 1 < b->len && b->p[i + 1] != ' ');
  }
  if (b->len) {
    CHECK(b->len >= 2 && b->p[b->len - 2] == '\r' && b->p[b->len - 1] == '\n');
    CHECK(b->len < 4 || memcmp(b->p + b->len - 4, "\r\n\r\n", 4) != 0);
  }
}

static void check_fields(void) {
  for (size_t i = 0; i < msg->nfields; i++) {
    const struct dkim_field *f = &msg->fields[i];
    CHECK(f->name_idx >= 0 && (size_t)f->name_idx < dkim_n_signed_names);
    const char *p = msg->hdr + f->off;
    const char *name = dkim_signed_names[f->name_idx];
    size_t nl = strlen(name);
    CHECK(f->len >= nl + 3);
    CHECK(memcmp(p, name, nl) == 0 && p[nl] == ':');
    CHECK(p[f->len - 2] == '\r' && p[f->len - 1] == '\n');
    size_t v0 = nl + 1, v1 = f->len - 2;
    if (v1 > v0)
      CHECK(p[v0] != ' ' && p[v1 - 1] != ' ');
    for (size_t j = v0; j < v1; j++) {
      CHECK(p[j] != '\r' && p[j] != '\n' && p[j] != '\t');
      if (p[j] == ' ')
        CHECK(p[j + 1] != ' ');
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  if (!msg) {
    msg = malloc(sizeof *msg);
    CHECK(msg != NULL);
  }
  unsigned seed = data[0] | 1u;
  data++, size--;
  static struct result a, b;
  run(data, size, 0, &a);
  check_body(&a.body);
  check_fields();
  if (a.hlen > 0 && msg->err == DKIM_MSG_OK) {
    /* From is named once more than it occurs. */
    size_t froms = 0;
    for (const char *p = a.h; (p = strstr(p, "from")) != NULL; p += 4)
      if ((p == a.h || p[-1] == ':') && (p[4] == ':' || p[4] == '\0'))
        froms++;
    CHECK(froms == (size_t)a.from_count + 1);
  }
  if (a.dom_rc == 0) {
    CHECK(a.dom[0] != '\0');
    for (const char *p = a.dom; *p; p++)
      CHECK(!(*p >= 'A' && *p <= 'Z') && *p != ' ' && *p != '\t');
  }
  run(data, size, seed, &b);
  CHECK(a.body.len == b.body.len &&
        memcmp(a.body.p, b.body.p, a.body.len) == 0);
  CHECK(a.hdrs.len == b.hdrs.len &&
        memcmp(a.hdrs.p, b.hdrs.p, a.hdrs.len) == 0);
  CHECK(a.hlen == b.hlen && (a.hlen < 0 || strcmp(a.h, b.h) == 0));
  CHECK(a.dom_rc == b.dom_rc && (a.dom_rc < 0 || strcmp(a.dom, b.dom) == 0));
  free(a.body.p);
  free(a.hdrs.p);
  free(b.body.p);
  free(b.hdrs.p);

  /* One field canonicalized into a copy and in place gives the same. */
  size_t n = size < 2048 ? size : 2048;
  char in[2048], out[2100];
  memcpy(in, data, n);
  long x = dkim_hcanon(in, n, out, sizeof out, 1);
  long y = dkim_hcanon(in, n, in, sizeof in, 1);
  if (x >= 0 && y >= 0)
    CHECK(x == y && memcmp(in, out, (size_t)x) == 0);
  return 0;
}
