#include "proto/text.h"

#include <stdint.h>
#include <string.h>
#include <strings.h>

size_t text_utf8_len(const unsigned char *s, size_t n) {
  if (n == 0)
    return 0;
  if (s[0] < 0x80)
    return 1;
  size_t len;
  unsigned min, cp;
  if ((s[0] & 0xe0) == 0xc0) {
    len = 2, min = 0x80, cp = s[0] & 0x1f;
  } else if ((s[0] & 0xf0) == 0xe0) {
    len = 3, min = 0x800, cp = s[0] & 0x0f;
  } else if ((s[0] & 0xf8) == 0xf0) {
    len = 4, min = 0x10000, cp = s[0] & 0x07;
  } else {
    return 0;
  }
  if (n < len)
    return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xc0) != 0x80)
      return 0;
    cp = (cp << 6) | (s[i] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return len;
}

size_t text_utf8_sanitize(char *out, size_t cap, const char *in, size_t n) {
  static const char rep[] = "\xef\xbf\xbd";
  const unsigned char *s = (const unsigned char *)in;
  size_t o = 0;
  if (cap == 0)
    return 0;
  for (size_t i = 0; i < n;) {
    size_t k = text_utf8_len(s + i, n - i);
    const char *src = k ? in + i : rep;
    size_t len = k ? k : 3;
    if (o + len + 1 > cap)
      break;
    memcpy(out + o, src, len);
    o += len;
    i += k ? k : 1;
  }
  out[o] = '\0';
  return o;
}

int text_casecmp(const char *a, const char *b, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
    if (x >= 'A' && x <= 'Z')
      x += 32;
    if (y >= 'A' && y <= 'Z')
      y += 32;
    if (x != y)
      return x < y ? -1 : 1;
  }
  return 0;
}

size_t text_plain_run(const char *s, size_t n) {
  const char *lf = memchr(s, '\n', n);
  size_t k = lf ? (size_t)(lf - s) : n;
  const char *cr = memchr(s, '\r', k);
  return cr ? (size_t)(cr - s) : k;
}

int text_has_8bit(const char *s, size_t n) {
  /* Eight octets at a time (memcpy: no alignment assumed). */
  uint64_t acc = 0;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, s + i, 8);
    acc |= w;
  }
  for (; i < n; i++)
    acc |= (unsigned char)s[i];
  return (acc & 0x8080808080808080ull) != 0;
}

int text_hexval(int c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

int text_parse_bool(const char *s, int *out) {
  static const char *const yes[] = {"yes", "true", "on", "1"};
  static const char *const no[] = {"no", "false", "off", "0"};
  for (size_t i = 0; i < 4; i++) {
    if (strcasecmp(s, yes[i]) == 0)
      return *out = 1, 0;
    if (strcasecmp(s, no[i]) == 0)
      return *out = 0, 0;
  }
  return -1;
}
