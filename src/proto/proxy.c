/*
 * proxy: the PROXY protocol v1/v2 header parser (HAProxy's
 * proxy-protocol.txt).  See proxy.h.
 */
#include "proto/proxy.h"
#include "proto/text.h"

#include <string.h>

static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const char v1_prefix[] = "PROXY ";

void proxy_init(struct proxy_parser *p) {
  memset(p, 0, sizeof *p);
}

int proxy_parse_ipv4(const char *s, size_t n, uint8_t out[4]) {
  size_t i = 0;
  for (int part = 0; part < 4; part++) {
    if (part > 0) {
      if (i >= n || s[i] != '.')
        return -1;
      i++;
    }
    size_t start = i;
    unsigned v = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9' && i - start < 3) {
      v = v * 10 + (unsigned)(s[i] - '0');
      i++;
    }
    size_t digits = i - start;
    if (digits == 0 || v > 255 || (digits > 1 && s[start] == '0'))
      return -1;
    out[part] = (uint8_t)v;
  }
  return i == n ? 0 : -1;
}

int proxy_parse_ipv6(const char *s, size_t n, uint8_t out[16]) {
  uint8_t w[16];
  int words = 0; /* 16-bit groups written to w */
  int gap = -1;  /* group index of "::", or -1 */
  size_t i = 0;
  if (n >= 2 && s[0] == ':' && s[1] == ':') {
    gap = 0;
    i = 2;
    if (i == n) {
      memset(out, 0, 16);
      return 0;
    }
  } else if (n >= 1 && s[0] == ':') {
    return -1;
  }
  for (;;) {
    /* One group: 1-4 hex digits, or a dotted quad as the last 32 bits. */
    size_t start = i;
    unsigned v = 0;
    while (i < n && text_hexval(s[i]) >= 0 && i - start < 4) {
      v = v * 16 + (unsigned)text_hexval(s[i]);
      i++;
    }
    if (i < n && s[i] == '.') {
      /* trailing IPv4: the whole rest of the string */
      if (words > 6)
        return -1;
      if (proxy_parse_ipv4(s + start, n - start, w + 2 * words) < 0)
        return -1;
      words += 2;
      i = n;
      break;
    }
    if (i == start || words >= 8)
      return -1;
    w[2 * words] = (uint8_t)(v >> 8);
    w[2 * words + 1] = (uint8_t)v;
    words++;
    if (i == n)
      break;
    if (s[i] != ':')
      return -1;
    i++;
    if (i < n && s[i] == ':') {
      if (gap >= 0)
        return -1;
      gap = words;
      i++;
      if (i == n)
        break;
    } else if (i == n) {
      return -1; /* trailing single ':' */
    }
  }
  if (gap < 0) {
    if (words != 8)
      return -1;
    memcpy(out, w, 16);
    return 0;
  }
  if (words > 7)
    return -1; /* "::" must stand for at least one group */
  int tail = words - gap;
  memset(out, 0, 16);
  memcpy(out, w, (size_t)(2 * gap));
  memcpy(out + 16 - 2 * tail, w + 2 * gap, (size_t)(2 * tail));
  return 0;
}

/* A decimal port: 1-5 digits, no leading zero unless "0", at most 65535. */
static int parse_port(const char *s, size_t n, uint16_t *out) {
  if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
    return -1;
  unsigned v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    v = v * 10 + (unsigned)(s[i] - '0');
  }
  if (v > 65535)
    return -1;
  *out = (uint16_t)v;
  return 0;
}

/* The v1 line without its CRLF: "PROXY TCP4 a b p q" or "PROXY UNKNOWN...". */
static enum proxy_status parse_v1_line(const char *s, size_t n,
                                       struct proxy_result *out) {
  const char *tok[7];
  size_t len[7];
  int nt = 0;
  memset(out, 0, sizeof *out);
  out->version = 1;
  /* "PROXY UNKNOWN" and anything after it up to the CRLF (spec 2.1). */
  if (n >= 13 && memcmp(s, "PROXY UNKNOWN", 13) == 0 &&
      (n == 13 || s[13] == ' ')) {
    out->local = 1;
    return PROXY_DONE;
  }
  size_t i = 0;
  while (i <= n) {
    size_t start = i;
    while (i < n && s[i] != ' ')
      i++;
    if (nt == 7)
      return PROXY_BAD;
    tok[nt] = s + start;
    len[nt] = i - start;
    if (len[nt] == 0)
      return PROXY_BAD; /* two spaces, or a leading/trailing space */
    nt++;
    i++;
  }
  if (nt != 6 || len[0] != 5 || memcmp(tok[0], "PROXY", 5) != 0 || len[1] != 4)
    return PROXY_BAD;
  int fam;
  if (memcmp(tok[1], "TCP4", 4) == 0)
    fam = 4;
  else if (memcmp(tok[1], "TCP6", 4) == 0)
    fam = 6;
  else
    return PROXY_BAD;
  struct proxy_addr *a[2] = {&out->src, &out->dst};
  for (int k = 0; k < 2; k++) {
    a[k]->family = fam;
    int rc = fam == 4 ? proxy_parse_ipv4(tok[2 + k], len[2 + k], a[k]->ip)
                      : proxy_parse_ipv6(tok[2 + k], len[2 + k], a[k]->ip);
    if (rc < 0 || parse_port(tok[4 + k], len[4 + k], &a[k]->port) < 0)
      return PROXY_BAD;
  }
  return PROXY_DONE;
}

static enum proxy_status feed_v1(struct proxy_parser *p, const uint8_t *data,
                                 size_t len, size_t *used,
                                 struct proxy_result *out) {
  for (size_t i = 0; i < len; i++) {
    uint8_t c = data[i];
    if (p->seen < sizeof v1_prefix - 1 && c != (uint8_t)v1_prefix[p->seen])
      return PROXY_BAD;
    if (p->seen >= PROXY_V1_MAX)
      return PROXY_BAD;
    p->buf[p->kept++] = c;
    p->seen++;
    if (c == '\n') {
      *used = i + 1;
      if (p->kept < 2 || p->buf[p->kept - 2] != '\r')
        return PROXY_BAD;
      return parse_v1_line((const char *)p->buf, p->kept - 2, out);
    }
    if (p->kept >= 2 && p->buf[p->kept - 2] == '\r')
      return PROXY_BAD; /* a CR not followed by LF */
  }
  *used = len;
  return p->seen >= PROXY_V1_MAX ? PROXY_BAD : PROXY_AGAIN;
}

/* The fixed part is complete: check it and set total. */
static enum proxy_status v2_fixed(struct proxy_parser *p) {
  uint8_t vc = p->buf[12], fam = p->buf[13];
  size_t alen = ((size_t)p->buf[14] << 8) | p->buf[15];
  if ((vc >> 4) != 2)
    return PROXY_BAD;
  int cmd = vc & 0x0F;
  if (cmd == 1) {
    if (fam == 0x11 && alen < 12)
      return PROXY_BAD;
    if (fam == 0x21 && alen < 36)
      return PROXY_BAD;
    if (fam != 0x11 && fam != 0x21)
      return PROXY_BAD; /* UNSPEC, UNIX, DGRAM: no TCP client to carry */
  } else if (cmd != 0) {
    return PROXY_BAD;
  }
  p->total = PROXY_V2_FIXED + alen;
  return PROXY_AGAIN;
}

static void v2_result(const struct proxy_parser *p, struct proxy_result *out) {
  memset(out, 0, sizeof *out);
  out->version = 2;
  const uint8_t *b = p->buf + PROXY_V2_FIXED;
  if ((p->buf[12] & 0x0F) == 0) {
    out->local = 1;
    return;
  }
  if (p->buf[13] == 0x11) {
    out->src.family = out->dst.family = 4;
    memcpy(out->src.ip, b, 4);
    memcpy(out->dst.ip, b + 4, 4);
    out->src.port = (uint16_t)(b[8] << 8 | b[9]);
    out->dst.port = (uint16_t)(b[10] << 8 | b[11]);
  } else {
    out->src.family = out->dst.family = 6;
    memcpy(out->src.ip, b, 16);
    memcpy(out->dst.ip, b + 16, 16);
    out->src.port = (uint16_t)(b[32] << 8 | b[33]);
    out->dst.port = (uint16_t)(b[34] << 8 | b[35]);
  }
}

static enum proxy_status feed_v2(struct proxy_parser *p, const uint8_t *data,
                                 size_t len, size_t *used,
                                 struct proxy_result *out) {
  size_t i = 0;
  while (i < len) {
    if (p->seen < PROXY_V2_FIXED) {
      uint8_t c = data[i++];
      if (p->seen < sizeof v2_sig && c != v2_sig[p->seen])
        return PROXY_BAD;
      p->buf[p->kept++] = c;
      p->seen++;
      if (p->seen == PROXY_V2_FIXED && v2_fixed(p) == PROXY_BAD)
        return PROXY_BAD;
    } else {
      size_t want = p->total - p->seen;
      size_t n = len - i < want ? len - i : want;
      /* keep what fits in buf (the address block); count the rest */
      size_t room = sizeof p->buf - p->kept;
      size_t keep = n < room ? n : room;
      memcpy(p->buf + p->kept, data + i, keep);
      p->kept += keep;
      p->seen += n;
      i += n;
    }
    if (p->seen >= PROXY_V2_FIXED && p->seen == p->total) {
      *used = i;
      v2_result(p, out);
      return PROXY_DONE;
    }
  }
  *used = len;
  return PROXY_AGAIN;
}

enum proxy_status proxy_parse(struct proxy_parser *p, const uint8_t *data,
                              size_t len, size_t *used,
                              struct proxy_result *out) {
  *used = 0;
  if (len == 0)
    return PROXY_AGAIN;
  if (p->version == 0) {
    if (data[0] == 'P')
      p->version = 1;
    else if (data[0] == v2_sig[0])
      p->version = 2;
    else
      return PROXY_BAD;
  }
  return p->version == 1 ? feed_v1(p, data, len, used, out)
                         : feed_v2(p, data, len, used, out);
}
