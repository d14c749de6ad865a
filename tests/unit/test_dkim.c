/*
 * test_dkim: the pure DKIM parts (proto/dkim) — relaxed canonicalization
 * with RFC 6376 §3.4.5's example, the From: domain, the signed header set
 * with From oversigned, chunking invariance, long lines canonicalized as
 * the encoder sends them, and the DKIM-Signature field's shape.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "proto/dkim.h"
#include "proto/encode.h"

struct sinkbuf {
  char *p;
  size_t len, cap;
};

static void sink(void *ctx, const char *p, size_t n) {
  struct sinkbuf *s = ctx;
  if (s->len + n + 1 > s->cap) {
    s->cap = (s->len + n + 1) * 2;
    s->p = realloc(s->p, s->cap);
  }
  memcpy(s->p + s->len, p, n);
  s->len += n;
  s->p[s->len] = '\0';
}

static char *body_canon(const char *in, size_t n) {
  struct sinkbuf s = {calloc(1, 1), 0, 1};
  struct dkim_body b;
  dkim_body_init(&b, sink, &s);
  dkim_body_feed(&b, in, n);
  dkim_body_finish(&b);
  CHECK_INT(b.out_total, s.len);
  return s.p;
}

static void test_rfc_example(void) {
  /* RFC 6376 §3.4.5 */
  char out[256];
  long n = dkim_hcanon("A: X\r\n", 6, out, sizeof out, 1);
  out[n > 0 ? n : 0] = '\0';
  CHECK_STR(out, "a:X\r\n");
  const char *b = "B : Y\t\r\n\tZ  \r\n";
  n = dkim_hcanon(b, strlen(b), out, sizeof out, 1);
  out[n > 0 ? n : 0] = '\0';
  CHECK_STR(out, "b:Y Z\r\n");
  const char *body = " C \r\nD \t E\r\n\r\n\r\n";
  char *c = body_canon(body, strlen(body));
  CHECK_STR(c, " C\r\nD E\r\n");
  free(c);
}

static void test_body_cases(void) {
  static const struct {
    const char *in, *want;
  } cases[] = {
      {"", ""},
      {"\r\n", ""},
      {"\r\n\r\n\r\n", ""},
      {"abc", "abc\r\n"},                    /* no final CRLF */
      {"abc  \t", "abc\r\n"},                /* trailing WSP */
      {"a\r\n\r\nb\r\n", "a\r\n\r\nb\r\n"},  /* inner empty line kept */
      {"a\r\n  \t \r\nb", "a\r\n\r\nb\r\n"}, /* all-WSP line is empty */
      {"\t x", " x\r\n"},                    /* leading WSP run -> SP */
      {"a\nb\n", "a\r\nb\r\n"},              /* bare LF ends a line */
      {"x\ry\r\n", "x\ry\r\n"},              /* lone CR is content */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *c = body_canon(cases[i].in, strlen(cases[i].in));
    CHECK_STR(c, cases[i].want);
    free(c);
  }
}

static void test_hcanon(void) {
  char out[64];
  CHECK_INT(dkim_hcanon("no colon here", 13, out, sizeof out, 1), -1);
  CHECK_INT(dkim_hcanon("Subject: 0123456789", 19, out, 8, 1), -1);
  long n = dkim_hcanon("SUBJECT:   ", 11, out, sizeof out, 0);
  CHECK_INT(n, 8);
  out[n] = '\0';
  CHECK_STR(out, "subject:");
  /* in place */
  char buf[64] = "To :\t a  b \r\n c\r\n";
  n = dkim_hcanon(buf, strlen(buf), buf, sizeof buf, 1);
  buf[n] = '\0';
  CHECK_STR(buf, "to:a b c\r\n");
}

static void test_from_domain(void) {
  static const struct {
    const char *v, *want; /* want NULL: -1 */
  } cases[] = {
      {"user@Example.COM", "example.com"},
      {" Joe User <joe@sub.example.org>", "sub.example.org"},
      {"\"Doe, John\" <john@example.net>", "example.net"},
      {"\"a@evil.example\" <x@good.example>", "good.example"},
      {"x@good.example (comment, with @evil.example)", "good.example"},
      {"(c) <@route.example:u@real.example>", "real.example"},
      {"a@one.example, b@two.example", NULL},
      {"group: a@b.example;", NULL},
      {"undisclosed-recipients:;", NULL},
      {"no address", NULL},
      {"@example.com", NULL},
      {"user@", NULL},
      {"user@[192.0.2.1]", NULL},
      {"user@exa..mple", NULL},
      {"<a@b.example> <c@d.example>", NULL},
      {"\"unterminated <a@b.example>", NULL},
      {"a@b.example,", "b.example"}, /* empty list item (obs) */
      {"Name <a@b.example", NULL},
      /* Quoted or commented text inside the domain (found by fuzz_dkim:
       * the check ran on the cleaned copy, the copy-out on the raw). */
      {"a@\"B C\"", NULL},
      {"a@b\"x\".example", NULL},
      {"a@\"b.example\"", NULL},
      {"<a@b(c)d.example>", NULL},
      {"a@(lead)b.example", "b.example"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char out[256];
    int rc = dkim_from_domain(cases[i].v, strlen(cases[i].v), out, sizeof out);
    if (cases[i].want) {
      CHECK_INT(rc, 0);
      if (rc == 0)
        CHECK_STR(out, cases[i].want);
    } else {
      if (rc == 0)
        fprintf(stderr, "unexpected domain %s for %s\n", out, cases[i].v);
      CHECK_INT(rc, -1);
    }
  }
}

struct run {
  struct dkim_msg *m;
  struct sinkbuf body;
  struct sinkbuf hdrs;
};

static void run_msg(struct run *r, const char *msg, size_t n, size_t chunk) {
  r->m = malloc(sizeof *r->m);
  r->body = (struct sinkbuf){calloc(1, 1), 0, 1};
  r->hdrs = (struct sinkbuf){calloc(1, 1), 0, 1};
  dkim_msg_init(r->m, sink, &r->body);
  for (size_t off = 0; off < n; off += chunk)
    dkim_msg_feed(r->m, msg + off, n - off < chunk ? n - off : chunk);
  dkim_msg_finish(r->m);
  dkim_msg_hash_headers(r->m, sink, &r->hdrs);
}

static void run_free(struct run *r) {
  free(r->m);
  free(r->body.p);
  free(r->hdrs.p);
}

static void test_message(void) {
  const char *msg = "Received: from x\r\n"
                    "From: A <a@Sign.Example>\r\n"
                    "to: b@c.example\r\n"
                    "SUBJECT:  hello\r\n   world\r\n"
                    "X-Other: not signed\r\n"
                    "To: second@c.example\r\n"
                    "\r\n"
                    ".leading dot\r\n"
                    "body  line \r\n\r\n\r\n";
  size_t chunks[] = {1, 3, 7, 4096};
  char *first_body = NULL, *first_hdrs = NULL;
  for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
    struct run r;
    run_msg(&r, msg, strlen(msg), chunks[c]);
    CHECK_INT(r.m->err, DKIM_MSG_OK);
    CHECK_INT(r.m->from_count, 1);
    CHECK_INT(dkim_msg_headers_done(r.m), 1);
    char dom[256];
    CHECK_INT(dkim_msg_from_domain(r.m, dom, sizeof dom), 0);
    CHECK_STR(dom, "sign.example");
    char h[512];
    CHECK(dkim_msg_h_list(r.m, h, sizeof h) > 0);
    CHECK_STR(h, "from:from:to:to:subject");
    /* To: bottom-up (RFC 6376 §5.4.2) */
    CHECK_STR(r.hdrs.p, "from:A <a@Sign.Example>\r\n"
                        "to:second@c.example\r\n"
                        "to:b@c.example\r\n"
                        "subject:hello world\r\n");
    /* the body as received: stuffing undone, trailing empty lines gone */
    CHECK_STR(r.body.p, ".leading dot\r\nbody line\r\n");
    if (!first_body) {
      first_body = strdup(r.body.p);
      first_hdrs = strdup(r.hdrs.p);
    } else {
      CHECK_STR(r.body.p, first_body);
      CHECK_STR(r.hdrs.p, first_hdrs);
    }
    run_free(&r);
  }
  free(first_body);
  free(first_hdrs);
}

/* The body of a message with lines over 998 octets is canonicalized as
 * the encoder sends it: the same as canonicalizing the encoder's output. */
static void test_long_lines(void) {
  size_t n = 5000;
  char *msg = malloc(n + 64);
  int len = sprintf(msg, "From: a@b.example\r\n\r\n");
  for (size_t i = 0; i < n - 100; i++)
    msg[len++] = (char)('a' + i % 26);
  memcpy(msg + len, "\r\n", 2);
  len += 2;
  struct run r;
  run_msg(&r, msg, (size_t)len, 333);
  /* reference: encode, unstuff (no dots here), split at the blank line */
  struct encoder e;
  encode_init(&e);
  char *enc = malloc(encode_bound((size_t)len) + ENCODE_FINISH_MAX);
  size_t en = encode_feed(&e, msg, (size_t)len, enc, encode_bound((size_t)len));
  en += encode_finish(&e, enc + en, ENCODE_FINISH_MAX);
  en -= 3;
  const char *sep = strstr(enc, "\r\n\r\n");
  CHECK(sep != NULL);
  if (sep) {
    const char *body = sep + 4;
    char *want = body_canon(body, en - (size_t)(body - enc));
    CHECK_STR(r.body.p, want);
    CHECK(strlen(want) > n - 100); /* folded, so longer */
    free(want);
  }
  free(enc);
  free(msg);
  run_free(&r);
}

static void test_no_from_and_two_froms(void) {
  struct run r;
  const char *m1 = "Subject: x\r\n\r\nbody\r\n";
  run_msg(&r, m1, strlen(m1), 100);
  char dom[256];
  CHECK_INT(dkim_msg_from_domain(r.m, dom, sizeof dom), -1);
  run_free(&r);
  const char *m2 = "From: a@b.example\r\nFrom: c@b.example\r\n\r\nbody\r\n";
  run_msg(&r, m2, strlen(m2), 100);
  CHECK_INT(r.m->from_count, 2);
  CHECK_INT(dkim_msg_from_domain(r.m, dom, sizeof dom), -1);
  run_free(&r);
  /* no empty line at all: headers only, empty body */
  const char *m3 = "From: a@b.example";
  run_msg(&r, m3, strlen(m3), 100);
  CHECK_INT(dkim_msg_from_domain(r.m, dom, sizeof dom), 0);
  CHECK_STR(r.body.p, "");
  CHECK_STR(r.hdrs.p, "from:a@b.example\r\n");
  CHECK_INT(dkim_msg_headers_done(r.m), 0); /* no empty line */
  run_free(&r);
}

/* Header lines verifiers refuse (dkimpy: "Unexpected characters in RFC822
 * header"): the message is not signed. */
static void test_bad_header_lines(void) {
  static const char *const bad[] = {
      "From: a@b.example\r\nhello world\r\n\r\nbody\r\n",
      "Subject : x\r\nFrom: a@b.example\r\n\r\nbody\r\n",
      " cont\r\nFrom: a@b.example\r\n\r\nbody\r\n",
      "Bad Name: x\r\nFrom: a@b.example\r\n\r\nbody\r\n",
      ": x\r\nFrom: a@b.example\r\n\r\nbody\r\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    struct run r;
    run_msg(&r, bad[i], strlen(bad[i]), 5);
    CHECK_INT(r.m->err, DKIM_MSG_BAD_HEADER);
    char dom[256];
    CHECK_INT(dkim_msg_from_domain(r.m, dom, sizeof dom), -1);
    run_free(&r);
  }
}

static void test_header_overflow(void) {
  size_t n = DKIM_HDR_MAX + 4096;
  char *msg = malloc(n + 64);
  size_t len = (size_t)sprintf(msg, "From: a@b.example\r\nSubject: ");
  while (len < n)
    msg[len++] = 'x';
  memcpy(msg + len, "\r\n\r\nbody\r\n", 10);
  len += 10;
  struct run r;
  run_msg(&r, msg, len, 4096);
  CHECK_INT(r.m->err, DKIM_MSG_HDR_FULL);
  char dom[256];
  CHECK_INT(dkim_msg_from_domain(r.m, dom, sizeof dom), -1);
  run_free(&r);
  free(msg);
}

static void test_sig(void) {
  struct dkim_sig s = {
      .algo = "ed25519-sha256",
      .domain = "sign.example",
      .selector = "sel",
      .timestamp = 1700000000,
      .h_list = "from:from:to:to:subject:date:message-id:reply-to:"
                "in-reply-to:references:mime-version:content-type",
      .bh = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
  };
  char out[2048];
  long n = dkim_sig_begin(&s, out, sizeof out);
  CHECK(n > 0);
  CHECK_CONTAINS(out, "DKIM-Signature: v=1; a=ed25519-sha256; "
                      "c=relaxed/relaxed; d=sign.example;");
  CHECK(n >= 2 && memcmp(out + n - 2, "b=", 2) == 0);
  char canon[2048];
  long cn = dkim_hcanon(out, (size_t)n, canon, sizeof canon, 0);
  CHECK(cn > 0);
  canon[cn] = '\0';
  CHECK_CONTAINS(canon, "dkim-signature:v=1; a=ed25519-sha256; "
                        "c=relaxed/relaxed; d=sign.example; s=sel; "
                        "t=1700000000; h=from:from:to:to:subject:");
  CHECK_CONTAINS(canon,
                 "; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=");
  char b64[400];
  memset(b64, 'A', 342);
  memcpy(b64 + 342, "==", 3);
  n = dkim_sig_finish(out, (size_t)n, sizeof out, b64);
  CHECK(n > 0);
  /* every line under 78 octets, CRLF-terminated, continuations indented */
  const char *p = out;
  while (*p) {
    const char *e = strstr(p, "\r\n");
    CHECK(e != NULL);
    if (!e)
      break;
    CHECK(e - p <= 77);
    p = e + 2;
    if (*p)
      CHECK(*p == '\t');
  }
  /* bad values are refused */
  s.selector = "a;b";
  CHECK_INT(dkim_sig_begin(&s, out, sizeof out), -1);
  s.selector = "sel";
  CHECK_INT(dkim_sig_begin(&s, out, 40), -1);
}

static void test_base64(void) {
  char out[16];
  CHECK_INT(dkim_base64((const unsigned char *)"", 0, out, sizeof out), 0);
  CHECK_STR(out, "");
  dkim_base64((const unsigned char *)"f", 1, out, sizeof out);
  CHECK_STR(out, "Zg==");
  dkim_base64((const unsigned char *)"fo", 2, out, sizeof out);
  CHECK_STR(out, "Zm8=");
  dkim_base64((const unsigned char *)"foobar", 6, out, sizeof out);
  CHECK_STR(out, "Zm9vYmFy");
  CHECK_INT(dkim_base64((const unsigned char *)"foobar", 6, out, 8), -1);
}

/* The relaxed body rules of RFC 6376 §3.4.4 written the plain way (split
 * into lines, collapse and strip WSP, drop trailing empty lines): the
 * streaming canonicalizer, which copies runs of content in blocks, must
 * give the same for any input fed in any chunks. */
static char *body_model(const char *in, size_t n) {
  char *out = malloc(2 * n + 3), *line = malloc(n + 1);
  size_t o = 0, empties = 0, ll = 0;
  for (size_t i = 0; i <= n; i++) {
    int eol = i < n && (in[i] == '\n' ||
                        (in[i] == '\r' && i + 1 < n && in[i + 1] == '\n'));
    if (i < n && !eol) {
      line[ll++] = in[i];
      continue;
    }
    /* a line ends (or the input does): canonicalize it */
    size_t k = 0;
    int wsp = 0;
    char *c = malloc(ll + 1);
    for (size_t j = 0; j < ll; j++) {
      if (line[j] == ' ' || line[j] == '\t') {
        wsp = 1;
      } else {
        if (wsp)
          c[k++] = ' ';
        wsp = 0;
        c[k++] = line[j];
      }
    }
    if (k == 0) {
      if (i < n)
        empties++; /* held: trailing empty lines are dropped */
    } else {
      for (; empties > 0; empties--, o += 2)
        memcpy(out + o, "\r\n", 2);
      memcpy(out + o, c, k);
      o += k;
      memcpy(out + o, "\r\n", 2);
      o += 2;
    }
    free(c);
    ll = 0;
    if (i < n && in[i] == '\r')
      i++; /* CRLF: skip the LF too */
  }
  out[o] = '\0';
  free(line);
  return out;
}

static void test_body_blocks(void) {
  static const char alphabet[] = {'a', 'b', ' ', '\t', '\r', '\n', '.'};
  char in[400];
  uint32_t x = 4242;
  for (int round = 0; round < 4000; round++) {
    size_t n = (size_t)(round % 397);
    for (size_t i = 0; i < n; i++) {
      x = x * 1103515245u + 12345u;
      unsigned r = (x >> 16) % 16;
      in[i] = r < 7 ? alphabet[r] : (char)('c' + r);
    }
    char *want = body_model(in, n);
    struct sinkbuf sb = {calloc(1, 1), 0, 1};
    struct dkim_body b;
    dkim_body_init(&b, sink, &sb);
    for (size_t off = 0; off < n;) {
      x = x * 1103515245u + 12345u;
      size_t k = 1 + (x >> 16) % 40;
      if (k > n - off)
        k = n - off;
      dkim_body_feed(&b, in + off, k);
      off += k;
    }
    dkim_body_finish(&b);
    CHECK_STR(sb.p, want);
    free(sb.p);
    free(want);
  }
}

int main(void) {
  test_rfc_example();
  test_body_cases();
  test_body_blocks();
  test_hcanon();
  test_from_domain();
  test_message();
  test_long_lines();
  test_no_from_and_two_froms();
  test_bad_header_lines();
  test_header_overflow();
  test_sig();
  test_base64();
  return check_result("test_dkim");
}
