/*
 * encode: streaming dot-stuffing, line-ending normalization and folding
 * of the outbound message.  See encode.h for the rules.
 */
#include "proto/encode.h"

#include "proto/text.h"

#include <assert.h>
#include <string.h>

struct out {
  char *p;
  size_t len, cap;
};

static void put(struct out *o, const char *s, size_t n) {
  assert(o->len + n <= o->cap);
  memcpy(o->p + o->len, s, n);
  o->len += n;
}

void encode_init(struct encoder *e) {
  memset(e, 0, sizeof(*e));
  e->in_header = 1;
}

void encode_init_fold(struct encoder *e) {
  encode_init(e);
  e->fold_only = 1;
}

size_t encode_bound(size_t n) {
  /* Worst case per input octet is two ("\r." gives CRLF ".."), plus one
   * held header line flushed with its fold. */
  return 2 * n + ENCODE_FINISH_MAX;
}

static int is_wsp(char c) {
  return c == ' ' || c == '\t';
}

/* Emits a complete output line body (without CRLF), dot-stuffed. */
static void put_line(const struct encoder *e, struct out *o, const char *s,
                     size_t n) {
  if (n > 0 && s[0] == '.' && !e->fold_only)
    put(o, ".", 1);
  put(o, s, n);
  put(o, "\r\n", 2);
}

/* The held header line is full and more follows: fold it (RFC 5322 §2.2.3). */
static void header_fold(struct encoder *e, struct out *o) {
  size_t cut = 0;
  for (size_t i = e->hlen; i-- > 1;) {
    if (is_wsp(e->hbuf[i])) {
      cut = i;
      break;
    }
  }
  e->folds++;
  if (cut > 0) {
    put_line(e, o, e->hbuf, cut);
    /* The rest starts with the whitespace: a valid continuation line. */
    memmove(e->hbuf, e->hbuf + cut, e->hlen - cut);
    e->hlen -= cut;
  } else {
    put_line(e, o, e->hbuf, e->hlen);
    e->hbuf[0] = ' ';
    e->hlen = 1;
  }
}

static void line_end(struct encoder *e, struct out *o) {
  if (e->in_header) {
    if (e->hlen == 0)
      e->in_header = 0; /* the empty line ends the header section */
    put_line(e, o, e->hbuf, e->hlen);
    e->hlen = 0;
  } else {
    put(o, "\r\n", 2);
    e->col = 0;
  }
}

static void octet(struct encoder *e, struct out *o, char c) {
  if (e->in_header) {
    if (e->hlen == ENCODE_LINE_MAX)
      header_fold(e, o);
    e->hbuf[e->hlen++] = c;
    return;
  }
  if (e->col == ENCODE_LINE_MAX) {
    /* Postfix's smtp_line_length_limit break: CRLF SP, the SP counted in
     * the next line.  A line starting with SP needs no stuffing dot. */
    put(o, "\r\n ", 3);
    e->col = 1;
    e->folds++;
  }
  if (e->col == 0 && c == '.' && !e->fold_only)
    put(o, ".", 1);
  put(o, &c, 1);
  e->col++;
}

/* A body run of n octets with no CR or LF: what octet() does one at a
 * time (the 998 break, the stuffing dot at a line start), in blocks. */
static void body_run(struct encoder *e, struct out *o, const char *s,
                     size_t n) {
  if (!e->has_8bit)
    e->has_8bit = text_has_8bit(s, n);
  while (n > 0) {
    if (e->col == ENCODE_LINE_MAX) {
      put(o, "\r\n ", 3);
      e->col = 1;
      e->folds++;
    }
    if (e->col == 0 && s[0] == '.' && !e->fold_only)
      put(o, ".", 1);
    size_t m = ENCODE_LINE_MAX - e->col;
    if (m > n)
      m = n;
    put(o, s, m);
    e->col += m;
    s += m;
    n -= m;
  }
}

size_t encode_feed(struct encoder *e, const char *in, size_t n, char *out,
                   size_t cap) {
  struct out o = {out, 0, cap};
  assert(cap >= encode_bound(n));
  for (size_t i = 0; i < n; i++) {
    if (!e->in_header && !e->pending_cr) {
      /* The body's plain octets in blocks; CR and LF one at a time. */
      size_t k = text_plain_run(in + i, n - i);
      if (k > 0) {
        body_run(e, &o, in + i, k);
        i += k - 1;
        continue;
      }
    }
    char c = in[i];
    if ((unsigned char)c >= 0x80)
      e->has_8bit = 1;
    if (e->pending_cr) {
      e->pending_cr = 0;
      line_end(e, &o); /* CRLF, or a bare CR made into one */
      if (c == '\n')
        continue;
    }
    if (c == '\r')
      e->pending_cr = 1;
    else if (c == '\n')
      line_end(e, &o); /* bare LF */
    else
      octet(e, &o, c);
  }
  return o.len;
}

size_t encode_finish(struct encoder *e, char *out, size_t cap) {
  struct out o = {out, 0, cap};
  assert(cap >= ENCODE_FINISH_MAX);
  if (e->pending_cr) {
    e->pending_cr = 0;
    line_end(e, &o);
  }
  if (e->in_header ? e->hlen > 0 : e->col > 0)
    line_end(e, &o);
  if (!e->fold_only)
    put(&o, ".\r\n", 3);
  return o.len;
}

size_t encode_folds(const struct encoder *e) {
  return e->folds;
}

int encode_has_8bit(const char *buf, size_t n) {
  return text_has_8bit(buf, n);
}
