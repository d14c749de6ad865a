/*
 * fuzz_encode: the outbound body encoder (proto/encode.h) on arbitrary
 * bytes.  The first input byte seeds the chunk sizes; the rest is the
 * stored message.  Invariants:
 *  - fed in chunks of random sizes, the output is byte for byte the one
 *    of a single feed, and has_8bit agrees with encode_has_8bit();
 *  - each feed stays within encode_bound(), finish within
 *    ENCODE_FINISH_MAX;
 *  - the output is CRLF lines only (no bare CR or LF), ends with ".\r\n"
 *    after a CRLF (or is just ".\r\n"), no line is exactly "." before the
 *    terminator, and no line is longer than ENCODE_LINE_MAX once its
 *    stuffing dot is removed;
 *  - unstuffed, the output matches the normalized input (bare CR / bare
 *    LF made CRLF, a last line ended): body lines are the input body lines
 *    cut every ENCODE_LINE_MAX octets; unfolded header lines are the
 *    unfolded input header lines, give or take the SP inserted when a
 *    header line without whitespace had to be split, and identical when
 *    no input header line is over ENCODE_LINE_MAX; body lines are the
 *    input body lines broken Postfix's way ("CRLF SP", the SP counting
 *    toward the 998);
 *  - encode_init_fold's output (no stuffing, no terminator), encoded for
 *    DATA, is byte for byte the DATA encoding of the input, with no break
 *    added (intake folding before DKIM signing is stable);
 *  - encode_folds() is 0 exactly when no input line is over
 *    ENCODE_LINE_MAX, counts at least every body break, and does not
 *    depend on the chunking.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/encode.h"

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

static void need(struct buf *b, size_t n) {
  if (b->len + n <= b->cap)
    return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + n)
    cap *= 2;
  b->p = realloc(b->p, cap);
  CHECK(b->p != NULL);
  b->cap = cap;
}

static void add(struct buf *b, const char *s, size_t n) {
  need(b, n);
  if (n)
    memcpy(b->p + b->len, s, n);
  b->len += n;
}

/* Encodes in[0..n) fed in chunks (chunk sizes from seed; 0 = at once);
 * with fold_only as encode_init_fold does (intake, before signing). */
static void encode_any(const char *in, size_t n, unsigned seed, int fold_only,
                       struct buf *o, int *has8, size_t *folds) {
  struct encoder e;
  if (fold_only)
    encode_init_fold(&e);
  else
    encode_init(&e);
  uint32_t x = seed * 2654435761u + 1;
  size_t off = 0;
  while (off < n) {
    size_t c = n - off;
    if (seed) {
      x ^= x << 13, x ^= x >> 17, x ^= x << 5;
      size_t want = (x & 0x100) ? (x & 7) + 1 : (x % 1200) + 1;
      if (want < c)
        c = want;
    }
    size_t bound = encode_bound(c);
    need(o, bound);
    size_t w = encode_feed(&e, in + off, c, o->p + o->len, bound);
    CHECK(w <= bound);
    o->len += w;
    off += c;
  }
  need(o, ENCODE_FINISH_MAX);
  size_t w = encode_finish(&e, o->p + o->len, ENCODE_FINISH_MAX);
  CHECK(w <= ENCODE_FINISH_MAX);
  o->len += w;
  *has8 = e.has_8bit;
  *folds = encode_folds(&e);
}

static void encode_all(const char *in, size_t n, unsigned seed, struct buf *o,
                       int *has8, size_t *folds) {
  encode_any(in, n, seed, 0, o, has8, folds);
}

/* A line as a slice. */
struct line {
  const char *s;
  size_t n;
};

struct lines {
  struct line *v;
  size_t n, cap;
};

static void push(struct lines *l, const char *s, size_t n) {
  if (l->n == l->cap) {
    l->cap = l->cap ? 2 * l->cap : 64;
    l->v = realloc(l->v, l->cap * sizeof(*l->v));
    CHECK(l->v != NULL);
  }
  l->v[l->n].s = s;
  l->v[l->n].n = n;
  l->n++;
}

/* The input's lines as the encoder defines them: CRLF, bare CR and bare
 * LF each end a line; a last line without an end still counts. */
static void input_lines(const char *in, size_t n, struct lines *l) {
  size_t start = 0, i = 0;
  while (i < n) {
    if (in[i] == '\r' || in[i] == '\n') {
      push(l, in + start, i - start);
      if (in[i] == '\r' && i + 1 < n && in[i + 1] == '\n')
        i++;
      start = ++i;
    } else {
      i++;
    }
  }
  if (start < n)
    push(l, in + start, n - start);
}

/* Unfolds lines [a, b) into out: a line starting with SP/HT continues the
 * previous one (its CRLF removed, RFC 5322 §2.2.3); each unfolded line
 * ends in '\n' in out. */
static void unfold(const struct lines *l, size_t a, size_t b, struct buf *o) {
  for (size_t i = a; i < b; i++) {
    const struct line *x = &l->v[i];
    int cont = x->n > 0 && (x->s[0] == ' ' || x->s[0] == '\t');
    if (cont && o->len > 0)
      o->len--; /* drop the previous '\n' */
    add(o, x->s, x->n);
    add(o, "\n", 1);
  }
}

/* 1 when want can be made from got by deleting some SP octets. */
static int equal_but_sp(const struct buf *got, const struct buf *want) {
  size_t i = 0, j = 0;
  while (i < got->len) {
    if (j < want->len && got->p[i] == want->p[j]) {
      i++, j++;
    } else if (got->p[i] == ' ') {
      i++;
    } else {
      return 0;
    }
  }
  return j == want->len;
}

/* Undefined behaviour is a finding, not a warning. */
const char *__ubsan_default_options(void);
const char *__ubsan_default_options(void) {
  return "halt_on_error=1:print_stacktrace=1";
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  unsigned seed = data[0];
  const char *in = (const char *)data + 1;
  size_t n = size - 1;

  struct buf a = {0}, b = {0};
  int a8, b8;
  size_t a_folds, b_folds;
  encode_all(in, n, 0, &a, &a8, &a_folds);
  encode_all(in, n, seed | 1, &b, &b8, &b_folds);
  CHECK(a.len == b.len && memcmp(a.p, b.p, a.len) == 0);
  CHECK(a8 == b8);
  CHECK(a8 == encode_has_8bit(in, n));

  /* Shape: CRLF lines, terminator last. */
  const char *o = a.p;
  size_t olen = a.len;
  CHECK(olen >= 3 && memcmp(o + olen - 3, ".\r\n", 3) == 0);
  CHECK(olen == 3 || (olen >= 5 && memcmp(o + olen - 5, "\r\n", 2) == 0));
  struct lines out = {0};
  size_t start = 0;
  for (size_t i = 0; i < olen; i++) {
    if (o[i] == '\r') {
      CHECK(i + 1 < olen && o[i + 1] == '\n');
      push(&out, o + start, i - start);
      start = i + 2;
      i++;
    } else {
      CHECK(o[i] != '\n');
    }
  }
  CHECK(start == olen);
  CHECK(out.n >= 1 && out.v[out.n - 1].n == 1 && out.v[out.n - 1].s[0] == '.');
  out.n--; /* the terminator */
  /* Unstuff; check stuffing and lengths. */
  for (size_t i = 0; i < out.n; i++) {
    struct line *x = &out.v[i];
    if (x->n > 0 && x->s[0] == '.') {
      CHECK(x->n >= 2 && x->s[1] == '.');
      x->s++, x->n--;
    }
    CHECK(x->n <= ENCODE_LINE_MAX);
  }
  /* (Dot-stuffing: every raw line starting with '.' was checked above
   * to start with "..", so no line ends the data early.) */

  /* Against the normalized input. */
  struct lines inl = {0};
  input_lines(in, n, &inl);
  size_t in_hdr_end = inl.n, out_hdr_end = out.n;
  for (size_t i = 0; i < inl.n; i++)
    if (inl.v[i].n == 0) {
      in_hdr_end = i;
      break;
    }
  for (size_t i = 0; i < out.n; i++)
    if (out.v[i].n == 0) {
      out_hdr_end = i;
      break;
    }
  CHECK((in_hdr_end == inl.n) == (out_hdr_end == out.n));

  /* Header section (the empty line itself included below). */
  struct buf uin = {0}, uout = {0};
  unfold(&inl, 0, in_hdr_end, &uin);
  unfold(&out, 0, out_hdr_end, &uout);
  int long_hdr = 0;
  for (size_t i = 0; i < in_hdr_end; i++)
    if (inl.v[i].n > ENCODE_LINE_MAX)
      long_hdr = 1;
  if (!long_hdr) {
    CHECK(in_hdr_end == out_hdr_end);
    CHECK(uin.len == uout.len &&
          (uin.len == 0 || memcmp(uin.p, uout.p, uin.len) == 0));
  } else {
    CHECK(equal_but_sp(&uout, &uin));
  }

  /* Body: each input line broken as Postfix does: the first
   * ENCODE_LINE_MAX octets, then lines of " " + up to ENCODE_LINE_MAX - 1
   * octets (the SP counts toward the limit); one break counted per
   * continuation line. */
  size_t body_folds = 0;
  if (in_hdr_end < inl.n) {
    size_t j = out_hdr_end + 1;
    for (size_t i = in_hdr_end + 1; i < inl.n; i++) {
      const struct line *x = &inl.v[i];
      size_t k = 0;
      int first = 1;
      do {
        size_t room = first ? ENCODE_LINE_MAX : ENCODE_LINE_MAX - 1;
        size_t c = x->n - k > room ? room : x->n - k;
        size_t sp = first ? 0 : 1;
        CHECK(j < out.n);
        CHECK(out.v[j].n == c + sp);
        CHECK(sp == 0 || out.v[j].s[0] == ' ');
        CHECK(memcmp(out.v[j].s + sp, x->s + k, c) == 0);
        body_folds += sp;
        j++;
        k += c;
        first = 0;
      } while (k < x->n);
    }
    CHECK(j == out.n);
  }
  /* Folds are counted: none when every input line fits. */
  int long_line = 0;
  for (size_t i = 0; i < inl.n; i++)
    if (inl.v[i].n > ENCODE_LINE_MAX)
      long_line = 1;
  CHECK((a_folds == 0) == !long_line);
  CHECK(a_folds >= body_folds && a_folds == b_folds);

  /* Intake folding (encode_init_fold) then DATA encoding gives the very
   * bytes of DATA encoding alone, with no further break: what a DKIM
   * signature was computed over is what goes out. */
  struct buf f = {0}, g = {0};
  int f8, g8;
  size_t f_folds, g_folds;
  encode_any(in, n, seed, 1, &f, &f8, &f_folds);
  CHECK(f_folds == a_folds && f8 == a8);
  CHECK(f.len == 0 || (f.len >= 2 && memcmp(f.p + f.len - 2, "\r\n", 2) == 0));
  encode_any(f.p ? f.p : "", f.len, seed ^ 0x55, 0, &g, &g8, &g_folds);
  CHECK(g_folds == 0);
  CHECK(g.len == a.len && memcmp(g.p, a.p, a.len) == 0);
  free(f.p);
  free(g.p);

  free(a.p);
  free(b.p);
  free(out.v);
  free(inl.v);
  free(uin.p);
  free(uout.p);
  return 0;
}
