/* rate: see rate.h. */
#include "proto/rate.h"

#include <stdio.h>
#include <string.h>

static int is_blank(char c) {
  return c == ' ' || c == '\t';
}

/* Decimal digits only, no overflow. */
static int parse_u64(const char *s, size_t n, uint64_t *out) {
  if (n == 0)
    return -1;
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    unsigned d = (unsigned)(s[i] - '0');
    if (v > (UINT64_MAX - d) / 10)
      return -1;
    v = v * 10 + d;
  }
  *out = v;
  return 0;
}

int duration_parse_ms(const char *s, size_t n, uint64_t *ms) {
  uint64_t mult = 1000;
  if (n > 2 && s[n - 2] == 'm' && s[n - 1] == 's') {
    mult = 1;
    n -= 2;
  } else if (n > 1) {
    switch (s[n - 1]) {
    case 's':
      mult = 1000, n--;
      break;
    case 'm':
      mult = 60 * 1000, n--;
      break;
    case 'h':
      mult = 3600 * 1000, n--;
      break;
    case 'd':
      mult = 86400 * 1000, n--;
      break;
    }
  }
  uint64_t v;
  if (parse_u64(s, n, &v) < 0 || v > UINT64_MAX / mult / 4)
    return -1;
  *ms = v * mult;
  return 0;
}

int rate_parse(const char *s, uint64_t *n, uint64_t *window_ms, char *err,
               size_t errlen) {
  const char *slash = strchr(s, '/');
  const char *a = s, *ae = slash, *b = slash ? slash + 1 : NULL, *be = NULL;
  if (slash) {
    be = b + strlen(b);
    while (a < ae && is_blank(*a))
      a++;
    while (ae > a && is_blank(ae[-1]))
      ae--;
    while (b < be && is_blank(*b))
      b++;
    while (be > b && is_blank(be[-1]))
      be--;
  }
  if (!slash || a == ae || b == be) {
    snprintf(err, errlen, "'%s' is not N/DURATION (e.g. 30/1m)", s);
    return -1;
  }
  if (parse_u64(a, (size_t)(ae - a), n) < 0 || *n == 0 || *n > RATE_MAX_N) {
    snprintf(err, errlen, "'%s': N must be a number from 1 to %d", s,
             RATE_MAX_N);
    return -1;
  }
  if (duration_parse_ms(b, (size_t)(be - b), window_ms) < 0) {
    snprintf(err, errlen, "'%s': '%.*s' is not a duration (e.g. 1m)", s,
             (int)(be - b), b);
    return -1;
  }
  if (*window_ms == 0 || *window_ms > RATE_MAX_WINDOW_MS) {
    snprintf(err, errlen,
             "'%s': the window must be greater than 0 and at most 7d", s);
    return -1;
  }
  return 0;
}
