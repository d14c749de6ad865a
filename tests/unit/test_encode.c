/* test_encode: dot-stuffing, normalization, folding, chunked feeding. */
#include "proto/encode.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* Encodes in[0..n) in chunks of `step`; returns a malloc'd string. */
static char *enc(const char *in, size_t n, size_t step, size_t *outlen) {
  struct encoder e;
  size_t cap = encode_bound(n) + ENCODE_FINISH_MAX, o = 0;
  char *out = malloc(cap + 1);
  encode_init(&e);
  for (size_t off = 0; off < n; off += step) {
    size_t k = n - off < step ? n - off : step;
    o += encode_feed(&e, in + off, k, out + o, cap - o);
  }
  o += encode_finish(&e, out + o, cap - o);
  out[o] = '\0';
  *outlen = o;
  return out;
}

static const struct {
  const char *name, *in, *out;
} cases[] = {
    {"empty", "", ".\r\n"},
    {"simple", "A: b\r\n\r\nhello\r\n", "A: b\r\n\r\nhello\r\n.\r\n"},
    {"no_final_crlf", "A: b\r\n\r\nhello", "A: b\r\n\r\nhello\r\n.\r\n"},
    {"dot_line", "A: b\r\n\r\n.\r\n", "A: b\r\n\r\n..\r\n.\r\n"},
    {"dot_start", "A: b\r\n\r\n.x\r\n..y\r\n",
     "A: b\r\n\r\n..x\r\n...y\r\n.\r\n"},
    {"dot_mid", "A: b\r\n\r\nx.\r\n", "A: b\r\n\r\nx.\r\n.\r\n"},
    {"bare_lf", "A: b\n\nx\ny\n", "A: b\r\n\r\nx\r\ny\r\n.\r\n"},
    {"bare_cr", "A: b\r\n\r\nx\ry\r", "A: b\r\n\r\nx\r\ny\r\n.\r\n"},
    /* A smuggling attempt: LF.LF / CR.CR must not stay a terminator. */
    {"smuggle_lf", "A: b\r\n\r\nx\n.\nMAIL FROM:<a>\r\n",
     "A: b\r\n\r\nx\r\n..\r\nMAIL FROM:<a>\r\n.\r\n"},
    {"smuggle_cr", "A: b\r\n\r\nx\r.\rRSET\r\n",
     "A: b\r\n\r\nx\r\n..\r\nRSET\r\n.\r\n"},
    {"headers_only", "A: b\r\nC: d\r\n", "A: b\r\nC: d\r\n.\r\n"},
};

static void test_table(void) {
  static const size_t steps[] = {1, 2, 3, 7, 1000};
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
      size_t n;
      char *o = enc(cases[i].in, strlen(cases[i].in), steps[s], &n);
      if (strcmp(o, cases[i].out) != 0)
        fprintf(stderr, "case %s step %zu\n", cases[i].name, steps[s]);
      CHECK_STR(o, cases[i].out);
      free(o);
    }
  }
}

/* Every line of the output is at most 998 octets plus a stuffing dot. */
static int lines_ok(const char *o, size_t n) {
  size_t start = 0;
  for (size_t i = 0; i + 1 < n; i++) {
    if (o[i] == '\r' && o[i + 1] == '\n') {
      size_t len = i - start;
      if (len > ENCODE_LINE_MAX + (o[start] == '.' ? 1 : 0))
        return 0;
      start = i + 2;
      i++;
    } else if (o[i] == '\r' || o[i] == '\n') {
      return 0; /* no bare CR or LF */
    }
  }
  return 1;
}

/* Undo: remove stuffing dots and the terminator. */
static size_t unstuff(const char *o, size_t n, char *out) {
  size_t k = 0;
  int bol = 1;
  n -= 3; /* ".\r\n" */
  for (size_t i = 0; i < n; i++) {
    if (bol && o[i] == '.')
      i++;
    out[k++] = o[i];
    bol = o[i] == '\n';
  }
  out[k] = '\0';
  return k;
}

static void test_fold_header(void) {
  /* A 3000-octet header with spaces: folded at whitespace; unfolding
   * (removing CRLF before WSP) gives the original back. */
  char in[4000];
  size_t k = 0;
  k += (size_t)sprintf(in, "Subject:");
  while (k < 3000)
    k += (size_t)sprintf(in + k, " word%zu", k);
  k += (size_t)sprintf(in + k, "\r\n\r\nbody\r\n");
  size_t n1, n7;
  char *o1 = enc(in, k, 1, &n1), *o7 = enc(in, k, 7, &n7);
  CHECK_INT(n1, n7);
  CHECK(memcmp(o1, o7, n1) == 0);
  CHECK(lines_ok(o1, n1));
  char *u = malloc(n1 + 1), *w = malloc(n1 + 1);
  size_t un = unstuff(o1, n1, u), wn = 0;
  for (size_t i = 0; i < un; i++) {
    if (u[i] == '\r' && i + 2 < un && u[i + 1] == '\n' && u[i + 2] == ' ') {
      i++;
      continue;
    }
    w[wn++] = u[i];
  }
  CHECK_INT(wn, k);
  CHECK(memcmp(w, in, k) == 0);
  free(o1), free(o7), free(u), free(w);
}

static void test_fold_header_no_space(void) {
  char in[2100];
  memcpy(in, "X:", 2);
  memset(in + 2, 'a', 2000);
  memcpy(in + 2002, "\r\n\r\n", 4);
  size_t n;
  char *o = enc(in, 2006, 5, &n);
  CHECK(lines_ok(o, n));
  /* Hard split, continuation starts with one inserted SP. */
  CHECK(memcmp(o + 998, "\r\n ", 3) == 0);
  free(o);
}

static void test_fold_body(void) {
  /* A body line of 2500 octets starting with '.', with a '.' landing at
   * the first break: broken as Postfix does, "CRLF SP" with the SP counted
   * in the 998 (998 + " "997 + " "505); the first line is stuffed, the
   * continuation starting with SP is not. */
  char in[2600];
  size_t h = (size_t)sprintf(in, "A: b\r\n\r\n");
  memset(in + h, 'z', 2500);
  in[h] = '.';
  in[h + 998] = '.';
  memcpy(in + h + 2500, "\r\n", 2);
  size_t total = h + 2502;
  char want[2700];
  size_t w = 0;
  memcpy(want, in, h), w = h;
  want[w++] = '.';
  memcpy(want + w, in + h, 998), w += 998;
  memcpy(want + w, "\r\n ", 3), w += 3;
  memcpy(want + w, in + h + 998, 997), w += 997;
  memcpy(want + w, "\r\n ", 3), w += 3;
  memcpy(want + w, in + h + 1995, 505), w += 505;
  memcpy(want + w, "\r\n.\r\n", 5), w += 5;
  static const size_t steps[] = {1, 3, 997, 998, 999, 4096};
  for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
    size_t n;
    char *o = enc(in, total, steps[s], &n);
    CHECK_INT(n, w);
    CHECK(n == w && memcmp(o, want, w) == 0);
    CHECK(lines_ok(o, n));
    free(o);
  }
}

/* encode_folds: 0 for a message that fits, the number of breaks else. */
static void test_folds_counted(void) {
  struct encoder e;
  static char in[5000], out[12000];
  size_t h = (size_t)sprintf(in, "A: b\r\n\r\n");
  memset(in + h, 'x', 998);
  memcpy(in + h + 998, "\r\n", 2);
  encode_init(&e);
  size_t o = encode_feed(&e, in, h + 1000, out, sizeof(out));
  o += encode_finish(&e, out + o, sizeof(out) - o);
  CHECK_INT(encode_folds(&e), 0);
  /* 999 octets: one break, the last octet alone after the SP. */
  memset(in + h, 'x', 999);
  memcpy(in + h + 999, "\r\n", 2);
  encode_init(&e);
  o = encode_feed(&e, in, h + 1001, out, sizeof(out));
  o += encode_finish(&e, out + o, sizeof(out) - o);
  CHECK_INT(encode_folds(&e), 1);
  CHECK(memcmp(out + h + 998, "\r\n x\r\n.\r\n", 9) == 0);
  /* 1995 octets = 998 + 997: exactly two lines; 1996: three. */
  memset(in + h, 'x', 1996);
  memcpy(in + h + 1995, "\r\n", 2);
  encode_init(&e);
  o = encode_feed(&e, in, h + 1997, out, sizeof(out));
  o += encode_finish(&e, out + o, sizeof(out) - o);
  CHECK_INT(encode_folds(&e), 1);
  CHECK_INT(o, h + 1995 + 3 + 2 + 3);
  memset(in + h, 'x', 1996);
  memcpy(in + h + 1996, "\r\n", 2);
  encode_init(&e);
  o = encode_feed(&e, in, h + 1998, out, sizeof(out));
  (void)encode_finish(&e, out + o, sizeof(out) - o);
  CHECK_INT(encode_folds(&e), 2);
  /* A header fold counts too. */
  size_t k = (size_t)sprintf(in, "X:");
  memset(in + k, 'a', 1200);
  memcpy(in + k + 1200, "\r\n\r\nbody\r\n", 10);
  encode_init(&e);
  o = encode_feed(&e, in, k + 1210, out, sizeof(out));
  (void)encode_finish(&e, out + o, sizeof(out) - o);
  CHECK_INT(encode_folds(&e), 1);
}

static void test_exact_998_not_split(void) {
  char in[1100];
  size_t h = (size_t)sprintf(in, "A: b\r\n\r\n");
  memset(in + h, 'q', 998);
  memcpy(in + h + 998, "\r\n", 2);
  size_t n;
  char *o = enc(in, h + 1000, 13, &n);
  CHECK_INT(n, h + 1000 + 3);
  free(o);
}

static void test_8bit(void) {
  struct encoder e;
  char out[2048];
  CHECK_INT(encode_has_8bit("plain", 5), 0);
  CHECK_INT(encode_has_8bit("caf\xc3\xa9", 5), 1);
  encode_init(&e);
  (void)encode_feed(&e, "A: \xc3\xa9\r\n", 7, out, sizeof(out));
  CHECK_INT(e.has_8bit, 1);
}

/* Intake folding for DKIM: same breaks, no stuffing, no terminator; the
 * DATA encoding of its output equals the DATA encoding of the input. */
static void test_fold_only(void) {
  static char in[3200], f[8000], g[16000], a[16000];
  size_t h = (size_t)sprintf(in, "A: b\r\n\r\n.dot\r\n");
  memset(in + h, 'x', 1500);
  h += 1500;
  in[h++] = '\n'; /* a bare LF, normalized */
  memcpy(in + h, "last", 4);
  h += 4;
  struct encoder e;
  encode_init_fold(&e);
  size_t fl = encode_feed(&e, in, h, f, sizeof f);
  fl += encode_finish(&e, f + fl, sizeof f - fl);
  CHECK_INT(encode_folds(&e), 1);
  f[fl] = '\0';
  char want[3300];
  size_t w = (size_t)sprintf(want, "A: b\r\n\r\n.dot\r\n");
  memset(want + w, 'x', 998);
  w += 998;
  memcpy(want + w, "\r\n ", 3), w += 3;
  memset(want + w, 'x', 502);
  w += 502;
  memcpy(want + w, "\r\nlast\r\n", 8), w += 8;
  want[w] = '\0';
  CHECK_INT(fl, w);
  CHECK_STR(f, want);
  encode_init(&e);
  size_t gl = encode_feed(&e, f, fl, g, sizeof g);
  gl += encode_finish(&e, g + gl, sizeof g - gl);
  CHECK_INT(encode_folds(&e), 0);
  encode_init(&e);
  size_t al = encode_feed(&e, in, h, a, sizeof a);
  al += encode_finish(&e, a + al, sizeof a - al);
  CHECK_INT(gl, al);
  CHECK(gl == al && memcmp(g, a, al) == 0);
  CHECK(memcmp(a + 8, "..dot\r\n", 7) == 0);
}

/* ---- the block encoder against a model that goes octet by octet ------ */

/* The body rules of encode.h one octet at a time, as encode_feed did
 * before it copied plain runs in blocks (issue 21): the model the block
 * version must match byte for byte, for any input and any chunking.  The
 * header section is handled by the encoder itself in both (it is still
 * octet by octet there), so the model takes over after the empty line. */
struct model {
  int pending_cr, has_8bit;
  size_t col, folds;
};

static void model_put(char *out, size_t *o, const char *s, size_t n) {
  memcpy(out + *o, s, n);
  *o += n;
}

static void model_body(struct model *m, const char *in, size_t n, char *out,
                       size_t *o) {
  for (size_t i = 0; i < n; i++) {
    char c = in[i];
    if ((unsigned char)c >= 0x80)
      m->has_8bit = 1;
    if (m->pending_cr) {
      m->pending_cr = 0;
      model_put(out, o, "\r\n", 2);
      m->col = 0;
      if (c == '\n')
        continue;
    }
    if (c == '\r') {
      m->pending_cr = 1;
    } else if (c == '\n') {
      model_put(out, o, "\r\n", 2);
      m->col = 0;
    } else {
      if (m->col == ENCODE_LINE_MAX) {
        model_put(out, o, "\r\n ", 3);
        m->col = 1;
        m->folds++;
      }
      if (m->col == 0 && c == '.')
        model_put(out, o, ".", 1);
      model_put(out, o, &c, 1);
      m->col++;
    }
  }
}

static void test_blocks_match_model(void) {
  static const char alphabet[] = {'.', '\r', '\n', 'a', ' ', '\t', (char)0xe9};
  size_t cap = 8 * 4096 + 64;
  char *in = malloc(4096), *a = malloc(cap), *b = malloc(cap);
  uint32_t x = 77;
  for (int round = 0; round < 3000; round++) {
    /* a body after an empty header section: "\r\n" first */
    size_t n = 2 + (size_t)(round % 7 == 0 ? 2000 + round % 1500 : round % 300);
    in[0] = '\r', in[1] = '\n';
    for (size_t i = 2; i < n; i++) {
      x = x * 1103515245u + 12345u;
      unsigned r = (x >> 16) % 64;
      /* mostly plain octets, so that lines reach the 998 break */
      in[i] = r < 7 ? alphabet[r] : (char)('b' + r % 20);
      if (round % 5 == 0 && (x >> 8) % 3 == 0)
        in[i] = '.';
    }
    struct encoder e;
    encode_init(&e);
    size_t al = 0;
    for (size_t off = 0; off < n;) {
      x = x * 1103515245u + 12345u;
      size_t k = 1 + (x >> 16) % 1200;
      if (k > n - off)
        k = n - off;
      al += encode_feed(&e, in + off, k, a + al, cap - al);
      off += k;
    }
    struct model m = {0};
    size_t bl = 0;
    model_put(b, &bl, "\r\n", 2);
    model_body(&m, in + 2, n - 2, b, &bl);
    /* compare before the finish: the state must agree too */
    CHECK_INT(al, bl);
    CHECK(al == bl && memcmp(a, b, al) == 0);
    CHECK_INT(e.has_8bit, m.has_8bit);
    CHECK_INT(e.col, m.col);
    CHECK_INT(e.pending_cr, m.pending_cr);
    CHECK_INT(encode_folds(&e), m.folds);
  }
  free(in);
  free(a);
  free(b);
}

int main(void) {
  test_table();
  test_fold_header();
  test_fold_header_no_space();
  test_fold_body();
  test_exact_998_not_split();
  test_folds_counted();
  test_fold_only();
  test_8bit();
  test_blocks_match_model();
  return check_result("test_encode");
}
