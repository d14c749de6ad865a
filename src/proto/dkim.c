/*
 * dkim: relaxed canonicalization, the signed header set, the From: domain
 * and the DKIM-Signature field (RFC 6376, RFC 8463).  See dkim.h.
 */
#include "proto/dkim.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

const char *const dkim_signed_names[] = {
    "from",       "to",           "cc",           "subject",
    "date",       "message-id",   "reply-to",     "in-reply-to",
    "references", "mime-version", "content-type", "content-transfer-encoding",
    "sender",
};
const size_t dkim_n_signed_names =
    sizeof dkim_signed_names / sizeof dkim_signed_names[0];

static int is_wsp(char c) {
  return c == ' ' || c == '\t';
}

static char lc(char c) {
  return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
}

/* ---- body (RFC 6376 §3.4.4) ------------------------------------------ */

void dkim_body_init(struct dkim_body *b, dkim_sink_fn sink, void *ctx) {
  memset(b, 0, offsetof(struct dkim_body, buf));
  b->sink = sink;
  b->ctx = ctx;
}

static void body_flush(struct dkim_body *b) {
  if (b->blen) {
    b->sink(b->ctx, b->buf, b->blen);
    b->blen = 0;
  }
}

static void body_put(struct dkim_body *b, const char *p, size_t n) {
  b->out_total += n;
  while (n > 0) {
    size_t room = sizeof b->buf - b->blen;
    size_t k = n < room ? n : room;
    memcpy(b->buf + b->blen, p, k);
    b->blen += k;
    p += k;
    n -= k;
    if (b->blen == sizeof b->buf)
      body_flush(b);
  }
}

/* A content octet: held empty lines and a held WSP run come first. */
static void body_content(struct dkim_body *b, char c) {
  if (!b->has) {
    for (; b->empty > 0; b->empty--)
      body_put(b, "\r\n", 2);
    b->has = 1;
  }
  if (b->wsp) {
    body_put(b, " ", 1);
    b->wsp = 0;
  }
  body_put(b, &c, 1);
}

static void body_eol(struct dkim_body *b) {
  /* WSP before the line end is dropped; an empty (or all-WSP) line is
   * held back, since empty lines at the end of the body are ignored. */
  if (b->has)
    body_put(b, "\r\n", 2);
  else
    b->empty++;
  b->has = 0;
  b->wsp = 0;
}

/* Octets that are content as they are: not CR, LF, SP or HTAB. */
static size_t content_run(const char *p, size_t n) {
  size_t k = 0;
  while (k < n && p[k] != '\r' && p[k] != '\n' && p[k] != ' ' && p[k] != '\t')
    k++;
  return k;
}

void dkim_body_feed(struct dkim_body *b, const char *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (!b->cr) {
      /* A run of content: the first octet as body_content() takes it (held
       * empty lines and WSP first), the rest copied as a block. */
      size_t k = content_run(p + i, n - i);
      if (k > 1) {
        body_content(b, p[i]);
        body_put(b, p + i + 1, k - 1);
        i += k - 1;
        continue;
      }
    }
    char c = p[i];
    if (b->cr) {
      b->cr = 0;
      if (c == '\n') {
        body_eol(b);
        continue;
      }
      body_content(b, '\r');
    }
    if (c == '\r')
      b->cr = 1;
    else if (c == '\n')
      body_eol(b);
    else if (is_wsp(c))
      b->wsp = 1;
    else
      body_content(b, c);
  }
}

void dkim_body_finish(struct dkim_body *b) {
  if (b->cr) {
    b->cr = 0;
    body_content(b, '\r');
  }
  /* A non-empty last line without CRLF gets one; trailing empty lines
   * and an empty body give nothing. */
  if (b->has)
    body_eol(b);
  body_flush(b);
}

/* ---- one header field (RFC 6376 §3.4.2) ------------------------------- */

long dkim_hcanon(const char *in, size_t n, char *out, size_t cap,
                 int with_crlf) {
  /* Written so that in == out works: every octet written stands for an
   * input octet at or after its position (the final CRLF aside, which the
   * cap check covers). */
  size_t colon = 0;
  while (colon < n && in[colon] != ':')
    colon++;
  if (colon == n)
    return -1;
  size_t name_end = colon;
  while (name_end > 0 && (is_wsp(in[name_end - 1]) ||
                          in[name_end - 1] == '\r' || in[name_end - 1] == '\n'))
    name_end--;
  size_t w = 0;
  for (size_t i = 0; i < name_end; i++) {
    if (w >= cap)
      return -1;
    out[w++] = lc(in[i]);
  }
  if (w >= cap)
    return -1;
  out[w++] = ':';
  int wsp = 0, begun = 0;
  for (size_t i = colon + 1; i < n; i++) {
    char c = in[i];
    if (c == '\r' || c == '\n')
      continue; /* unfolding */
    if (is_wsp(c)) {
      wsp = 1;
      continue;
    }
    if (wsp && begun) {
      if (w >= cap)
        return -1;
      out[w++] = ' ';
    }
    wsp = 0;
    begun = 1;
    if (w >= cap)
      return -1;
    out[w++] = c;
  }
  if (with_crlf) {
    if (w + 2 > cap)
      return -1;
    out[w++] = '\r';
    out[w++] = '\n';
  }
  return (long)w;
}

/* ---- From: domain (RFC 5322 §3.4) ------------------------------------- */

#define FROM_MAX 4096

static int valid_domain_char(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
         c >= 0x80;
}

int dkim_from_domain(const char *value, size_t n, char *out, size_t cap) {
  char cl[FROM_MAX];
  if (n >= FROM_MAX || cap == 0)
    return -1;
  /* A length-preserving copy where quoted strings become 'q' and comments
   * spaces, so the specials left are structure. */
  int depth = 0, quoted = 0;
  for (size_t i = 0; i < n; i++) {
    char c = value[i];
    if (quoted) {
      cl[i] = 'q';
      if (c == '\\' && i + 1 < n)
        cl[++i] = 'q';
      else if (c == '"')
        quoted = 0;
    } else if (depth > 0) {
      cl[i] = ' ';
      if (c == '\\' && i + 1 < n)
        cl[++i] = ' ';
      else if (c == '(')
        depth++;
      else if (c == ')')
        depth--;
    } else if (c == '"') {
      cl[i] = 'q';
      quoted = 1;
    } else if (c == '(') {
      cl[i] = ' ';
      depth = 1;
    } else if (c == '\r' || c == '\n' || c == '\t') {
      cl[i] = ' ';
    } else {
      cl[i] = c;
    }
  }
  if (quoted || depth)
    return -1;
  /* Exactly one non-blank mailbox between top-level commas; ':' or ';'
   * outside angle brackets is a group: not signed. */
  size_t seg_start = 0, seg_end = 0;
  int segments = 0, angle = 0;
  size_t start = 0;
  for (size_t i = 0; i <= n; i++) {
    char c = i < n ? cl[i] : ',';
    if (c == '<')
      angle++;
    else if (c == '>')
      angle--;
    else if (!angle && (c == ':' || c == ';'))
      return -1;
    else if (!angle && c == ',') {
      int blank = 1;
      for (size_t j = start; j < i; j++)
        if (cl[j] != ' ')
          blank = 0;
      if (!blank) {
        segments++;
        seg_start = start;
        seg_end = i;
      }
      start = i + 1;
    }
    if (angle < 0 || angle > 1)
      return -1;
  }
  if (segments != 1)
    return -1;
  size_t a = seg_start, b = seg_end;
  const char *lt = memchr(cl + a, '<', b - a);
  if (lt) {
    const char *gt = memchr(lt, '>', (size_t)(cl + b - lt));
    if (!gt)
      return -1;
    for (const char *p = gt + 1; p < cl + b; p++)
      if (*p != ' ')
        return -1; /* text after the angle address */
    a = (size_t)(lt - cl) + 1;
    b = (size_t)(gt - cl);
    /* obs-route "@a,@b:user@domain": the address follows the last ':' */
    for (size_t j = b; j > a; j--)
      if (cl[j - 1] == ':') {
        a = j;
        break;
      }
  }
  size_t at = b;
  for (size_t j = b; j > a; j--)
    if (cl[j - 1] == '@') {
      at = j - 1;
      break;
    }
  if (at == b || at == a)
    return -1;
  size_t d0 = at + 1, d1 = b;
  while (d0 < d1 && cl[d0] == ' ')
    d0++;
  while (d1 > d0 && cl[d1 - 1] == ' ')
    d1--;
  if (d1 == d0 || d1 - d0 >= cap || d1 - d0 > DKIM_DOMAIN_MAX)
    return -1;
  if (cl[d0] == '.' || cl[d1 - 1] == '.')
    return -1;
  for (size_t j = d0; j < d1; j++) {
    /* Checked on the raw octet too: a quoted string or comment inside the
     * domain reads as 'q' or ' ' in cl, but would be copied from value. */
    if (cl[j] != value[j] || !valid_domain_char((unsigned char)cl[j]))
      return -1;
    if (cl[j] == '.' && cl[j + 1] == '.')
      return -1;
    out[j - d0] = lc(value[j]);
  }
  out[d1 - d0] = '\0';
  /* The local part must be there and contain no space outside quotes. */
  size_t l0 = a;
  while (l0 < at && cl[l0] == ' ')
    l0++;
  if (l0 == at)
    return -1;
  for (size_t j = l0; j < at; j++)
    if (cl[j] == ' ' || cl[j] == '<' || cl[j] == '>')
      return -1;
  return 0;
}

/* ---- the message: encoder, unstuffing, header fields, body ------------ */

enum { H_NONE, H_NAME, H_VALUE };

static int name_index(const char *name, size_t n) {
  for (size_t i = 0; i < dkim_n_signed_names; i++)
    if (strlen(dkim_signed_names[i]) == n &&
        memcmp(dkim_signed_names[i], name, n) == 0)
      return (int)i;
  return -1;
}

void dkim_msg_init(struct dkim_msg *m, dkim_sink_fn sink, void *ctx) {
  m->err = DKIM_MSG_OK;
  m->from_count = 0;
  m->nfields = 0;
  m->hlen = 0;
  encode_init(&m->enc);
  m->bol = 1;
  m->in_header = 1;
  m->hstate = H_NONE;
  m->line_start = 1;
  m->keep = 0;
  m->cr = 0;
  m->name_len = 0;
  m->field_off = 0;
  dkim_body_init(&m->body, sink, ctx);
}

/* RFC 5322 §3.6.8 ftext: printable ASCII but ':' (and SP). */
static int ftext(char c) {
  return c >= 33 && c <= 126 && c != ':';
}

static void bad_header(struct dkim_msg *m) {
  if (m->err == DKIM_MSG_OK)
    m->err = DKIM_MSG_BAD_HEADER;
}

static void hdr_put(struct dkim_msg *m, const char *p, size_t n) {
  if (!m->keep)
    return;
  if (m->hlen + n > sizeof m->hdr) {
    m->err = DKIM_MSG_HDR_FULL;
    m->keep = 0;
    m->hlen = m->field_off;
    return;
  }
  memcpy(m->hdr + m->hlen, p, n);
  m->hlen += n;
}

static void field_end(struct dkim_msg *m) {
  if (m->hstate == H_VALUE && m->keep) {
    long len =
        dkim_hcanon(m->hdr + m->field_off, m->hlen - m->field_off,
                    m->hdr + m->field_off, sizeof m->hdr - m->field_off, 1);
    if (len < 0 || m->nfields == DKIM_HDR_FIELDS) {
      m->err = DKIM_MSG_HDR_FULL;
      m->hlen = m->field_off;
    } else {
      struct dkim_field *f = &m->fields[m->nfields++];
      f->name_idx = name_index(m->name, m->name_len);
      f->off = (uint32_t)m->field_off;
      f->len = (uint32_t)len;
      m->hlen = m->field_off + (size_t)len;
    }
  }
  m->keep = 0;
  m->hstate = H_NONE;
}

static void name_done(struct dkim_msg *m) {
  size_t n = m->name_len;
  if (n == 0)
    bad_header(m);
  for (size_t i = 0; i < n; i++)
    m->name[i] = lc(m->name[i]);
  int idx = n < sizeof m->name ? name_index(m->name, n) : -1;
  if (idx == 0)
    m->from_count++;
  m->hstate = H_VALUE;
  m->keep = idx >= 0 && m->err == DKIM_MSG_OK;
  m->field_off = m->hlen;
  hdr_put(m, m->name, n);
  hdr_put(m, ":", 1);
}

static void hdr_octet(struct dkim_msg *m, char c) {
  if (m->line_start) {
    m->line_start = 0;
    if (is_wsp(c) && m->hstate == H_VALUE) {
      hdr_put(m, &c, 1); /* a continuation line */
      return;
    }
    if (is_wsp(c))
      bad_header(m); /* a continuation of nothing */
    field_end(m);
    m->hstate = H_NAME;
    m->name_len = 0;
  }
  switch (m->hstate) {
  case H_NAME:
    if (c == ':') {
      name_done(m);
      return;
    }
    if (!ftext(c))
      bad_header(m); /* also the obsolete WSP before the colon */
    if (m->name_len < sizeof m->name)
      m->name[m->name_len++] = c; /* too long: matches no signed name */
    return;
  case H_VALUE:
    hdr_put(m, &c, 1);
    return;
  default:
    return;
  }
}

static void hdr_eol(struct dkim_msg *m) {
  if (m->line_start) {
    /* The empty line: the header section ends, the body follows. */
    field_end(m);
    m->in_header = 0;
    return;
  }
  if (m->hstate == H_NAME) {
    m->hstate = H_NONE; /* a line without a colon is not a field */
    bad_header(m);
  }
  hdr_put(m, "\r\n", 2);
  m->line_start = 1;
}

/* One octet of the message as the next hop receives it. */
static void wire(struct dkim_msg *m, const char *p, size_t n) {
  size_t i = 0;
  while (i < n && m->in_header) {
    char c = p[i++];
    if (m->cr) {
      m->cr = 0;
      if (c == '\n') {
        hdr_eol(m);
        continue;
      }
      hdr_octet(m, '\r');
    }
    if (c == '\r')
      m->cr = 1;
    else if (c == '\n')
      hdr_eol(m);
    else
      hdr_octet(m, c);
  }
  if (i < n)
    dkim_body_feed(&m->body, p + i, n - i);
}

/* Undoes the encoder's dot-stuffing (RFC 5321 §4.5.2): the receiver drops
 * the first '.' of every line that starts with one. */
static void unstuff(struct dkim_msg *m, const char *p, size_t n) {
  size_t start = 0, i = 0;
  /* At each line start (bol), then to the next LF with memchr. */
  while (i < n) {
    if (m->bol && p[i] == '.') {
      wire(m, p + start, i - start);
      start = i + 1;
    }
    const char *lf = memchr(p + i, '\n', n - i);
    m->bol = lf != NULL;
    if (!lf)
      break;
    i = (size_t)(lf - p) + 1;
  }
  wire(m, p + start, n - start);
}

void dkim_msg_feed(struct dkim_msg *m, const char *p, size_t n) {
  while (n > 0) {
    size_t k = n < DKIM_STEP ? n : DKIM_STEP;
    size_t out = encode_feed(&m->enc, p, k, m->encbuf, sizeof m->encbuf);
    unstuff(m, m->encbuf, out);
    p += k;
    n -= k;
  }
}

void dkim_msg_finish(struct dkim_msg *m) {
  size_t out = encode_finish(&m->enc, m->encbuf, sizeof m->encbuf);
  /* The end-of-data line ".\r\n" is the transport's, not the message's. */
  assert(out >= 3 && memcmp(m->encbuf + out - 3, ".\r\n", 3) == 0);
  unstuff(m, m->encbuf, out - 3);
  if (m->in_header) {
    if (m->cr) {
      m->cr = 0;
      hdr_octet(m, '\r');
    }
    field_end(m);
  }
  dkim_body_finish(&m->body);
}

int dkim_msg_headers_done(const struct dkim_msg *m) {
  return !m->in_header;
}

int dkim_msg_from_domain(const struct dkim_msg *m, char *out, size_t cap) {
  if (m->from_count != 1 || m->err != DKIM_MSG_OK)
    return -1;
  for (size_t i = 0; i < m->nfields; i++) {
    const struct dkim_field *f = &m->fields[i];
    if (f->name_idx != 0)
      continue;
    /* canonical "from:value\r\n" */
    return dkim_from_domain(m->hdr + f->off + 5, f->len - 7, out, cap);
  }
  return -1;
}

static size_t count_name(const struct dkim_msg *m, size_t idx) {
  size_t c = 0;
  for (size_t i = 0; i < m->nfields; i++)
    if (m->fields[i].name_idx == (int)idx)
      c++;
  return c;
}

long dkim_msg_h_list(const struct dkim_msg *m, char *out, size_t cap) {
  size_t w = 0;
  for (size_t i = 0; i < dkim_n_signed_names; i++) {
    size_t c = count_name(m, i) + (i == 0);
    size_t nl = strlen(dkim_signed_names[i]);
    for (size_t k = 0; k < c; k++) {
      if (w + nl + 2 > cap)
        return -1;
      if (w)
        out[w++] = ':';
      memcpy(out + w, dkim_signed_names[i], nl);
      w += nl;
    }
  }
  if (w >= cap)
    return -1;
  out[w] = '\0';
  return (long)w;
}

void dkim_msg_hash_headers(const struct dkim_msg *m, dkim_sink_fn sink,
                           void *ctx) {
  /* Same order as dkim_msg_h_list; each name's occurrences bottom-up. */
  for (size_t i = 0; i < dkim_n_signed_names; i++)
    for (size_t k = m->nfields; k-- > 0;)
      if (m->fields[k].name_idx == (int)i)
        sink(ctx, m->hdr + m->fields[k].off, m->fields[k].len);
}

/* ---- the DKIM-Signature field (RFC 6376 §3.5) ------------------------- */

#define SIG_LINE 76

struct wbuf {
  char *p;
  size_t len, cap;
  size_t col; /* octets on the current line */
  int err;
};

static void wb_raw(struct wbuf *b, const char *s, size_t n) {
  if (b->err || b->len + n >= b->cap) {
    b->err = 1;
    return;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->col += n;
}

static void wb_fold(struct wbuf *b) {
  wb_raw(b, "\r\n\t", 3);
  b->col = 1;
}

/* Appends one "tag=value;" unit, on a new line when it does not fit. */
static void wb_tag(struct wbuf *b, const char *tag, const char *val) {
  size_t n = strlen(tag) + 1 + strlen(val) + 1;
  if (b->col + 1 + n > SIG_LINE)
    wb_fold(b);
  else
    wb_raw(b, " ", 1);
  wb_raw(b, tag, strlen(tag));
  wb_raw(b, "=", 1);
  wb_raw(b, val, strlen(val));
  wb_raw(b, ";", 1);
}

static int tag_value_ok(const char *v) {
  if (!v || !*v)
    return 0;
  for (; *v; v++)
    if ((unsigned char)*v <= ' ' || *v == ';' || *v == 0x7f)
      return 0;
  return 1;
}

long dkim_sig_begin(const struct dkim_sig *s, char *out, size_t cap) {
  if (!tag_value_ok(s->algo) || !tag_value_ok(s->domain) ||
      !tag_value_ok(s->selector) || !tag_value_ok(s->h_list) ||
      !tag_value_ok(s->bh) || s->timestamp < 0)
    return -1;
  struct wbuf b = {out, 0, cap, 0, 0};
  char t[32];
  snprintf(t, sizeof t, "%lld", s->timestamp);
  wb_raw(&b, "DKIM-Signature: v=1;", 20);
  wb_tag(&b, "a", s->algo);
  wb_tag(&b, "c", "relaxed/relaxed");
  wb_tag(&b, "d", s->domain);
  wb_tag(&b, "s", s->selector);
  wb_tag(&b, "t", t);
  /* h= may be long: folded after a colon (FWS is allowed there). */
  wb_fold(&b);
  wb_raw(&b, "h=", 2);
  const char *h = s->h_list;
  while (*h) {
    const char *colon = strchr(h, ':');
    size_t n = colon ? (size_t)(colon - h) + 1 : strlen(h);
    if (b.col + n + 1 > SIG_LINE)
      wb_fold(&b);
    wb_raw(&b, h, n);
    h += n;
  }
  wb_raw(&b, ";", 1);
  wb_fold(&b);
  wb_raw(&b, "bh=", 3);
  wb_raw(&b, s->bh, strlen(s->bh));
  wb_raw(&b, ";", 1);
  wb_fold(&b);
  wb_raw(&b, "b=", 2);
  if (b.err)
    return -1;
  out[b.len] = '\0';
  return (long)b.len;
}

long dkim_sig_finish(char *out, size_t len, size_t cap, const char *b64) {
  /* The line holding "b=" is "\tb=" so far: 3 octets. */
  struct wbuf b = {out, len, cap, 3, 0};
  size_t n = strlen(b64);
  while (n > 0) {
    if (b.col >= SIG_LINE)
      wb_fold(&b);
    size_t k = SIG_LINE - b.col;
    if (k > n)
      k = n;
    wb_raw(&b, b64, k);
    b64 += k;
    n -= k;
  }
  wb_raw(&b, "\r\n", 2);
  if (b.err)
    return -1;
  out[b.len] = '\0';
  return (long)b.len;
}

long dkim_base64(const unsigned char *in, size_t n, char *out, size_t cap) {
  static const char tab[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t need = (n + 2) / 3 * 4;
  if (cap < need + 1)
    return -1;
  size_t w = 0;
  for (size_t i = 0; i < n; i += 3) {
    unsigned v = (unsigned)in[i] << 16;
    if (i + 1 < n)
      v |= (unsigned)in[i + 1] << 8;
    if (i + 2 < n)
      v |= in[i + 2];
    out[w++] = tab[(v >> 18) & 63];
    out[w++] = tab[(v >> 12) & 63];
    out[w++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
    out[w++] = i + 2 < n ? tab[v & 63] : '=';
  }
  out[w] = '\0';
  return (long)w;
}
