/*
 * qfilter: queue filter words and matching (see qfilter.h).  Pure: no I/O,
 * no allocation.
 */
#include "proto/qfilter.h"

#include <stdio.h>
#include <string.h>

#define QF_MAX_SECONDS (INT64_C(1) << 40)

void qfilter_init(struct qfilter *f) {
  memset(f, 0, sizeof *f);
  f->state = QFILTER_ANY;
  f->older_than = -1;
}

static void seterr(char *err, size_t errlen, const char *msg, const char *w) {
  if (errlen)
    snprintf(err, errlen, "%s: %.80s", msg, w);
}

static int lower_copy(char *dst, size_t cap, const char *src) {
  size_t n = strlen(src);
  if (n == 0 || n >= cap)
    return -1;
  for (size_t i = 0; i <= n; i++) {
    unsigned char c = (unsigned char)src[i];
    if (c != 0 && (c < 0x21 || c == 0x7f))
      return -1; /* no spaces or controls in an address or domain */
    dst[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
  }
  return 0;
}

static int parse_uint(const char *s, int64_t *out) {
  int64_t v = 0;
  if (!*s)
    return -1;
  for (; *s; s++) {
    if (*s < '0' || *s > '9')
      return -1;
    v = v * 10 + (*s - '0');
    if (v > QF_MAX_SECONDS)
      return -1;
  }
  *out = v;
  return 0;
}

int qfilter_duration(const char *s, int64_t *seconds) {
  char num[24];
  size_t n = strlen(s);
  if (n == 0 || n >= sizeof num)
    return -1;
  int64_t mult = 1;
  char last = s[n - 1];
  if (last < '0' || last > '9') {
    switch (last) {
    case 's':
      mult = 1;
      break;
    case 'm':
      mult = 60;
      break;
    case 'h':
      mult = 3600;
      break;
    case 'd':
      mult = 86400;
      break;
    case 'w':
      mult = 7 * 86400;
      break;
    default:
      return -1;
    }
    n--;
  }
  memcpy(num, s, n);
  num[n] = '\0';
  int64_t v;
  if (parse_uint(num, &v) < 0 || v == 0 || v > QF_MAX_SECONDS / mult)
    return -1;
  *seconds = v * mult;
  return 0;
}

int qfilter_parse(struct qfilter *f, const char *const *words, size_t n,
                  char *err, size_t errlen) {
  qfilter_init(f);
  int seen_state = 0;
  for (size_t i = 0; i < n; i++) {
    const char *w = words[i];
    const char *eq = strchr(w, '=');
    if (!eq) {
      if (strcmp(w, "all") != 0) {
        seterr(err, errlen, "unknown filter", w);
        return -1;
      }
      if (f->all) {
        seterr(err, errlen, "filter given twice", w);
        return -1;
      }
      f->all = 1;
      continue;
    }
    size_t klen = (size_t)(eq - w);
    const char *v = eq + 1;
    if (klen == 6 && !memcmp(w, "domain", 6)) {
      if (f->domain[0]) {
        seterr(err, errlen, "filter given twice", w);
        return -1;
      }
      if (*v == '@')
        v++;
      if (lower_copy(f->domain, sizeof f->domain, v) < 0 ||
          strchr(f->domain, '@')) {
        seterr(err, errlen, "bad domain", w);
        return -1;
      }
    } else if (klen == 6 && !memcmp(w, "sender", 6)) {
      if (f->sender[0]) {
        seterr(err, errlen, "filter given twice", w);
        return -1;
      }
      if (!strcmp(v, "<>")) { /* the null sender (bounces) */
        memcpy(f->sender, "<>", 3);
        continue;
      }
      /* ADDR (local@domain) or @DOMAIN: exactly one '@', not last */
      const char *at = strchr(v, '@');
      if (lower_copy(f->sender, sizeof f->sender, v) < 0 || !at ||
          strchr(at + 1, '@') || !at[1]) {
        f->sender[0] = '\0';
        seterr(err, errlen, "bad sender (ADDR, @DOMAIN or <>)", w);
        return -1;
      }
    } else if (klen == 5 && !memcmp(w, "state", 5)) {
      if (seen_state) {
        seterr(err, errlen, "filter given twice", w);
        return -1;
      }
      seen_state = 1;
      if (!strcmp(v, "queued"))
        f->state = QFILTER_QUEUED;
      else if (!strcmp(v, "deferred"))
        f->state = QFILTER_DEFERRED;
      else if (!strcmp(v, "held"))
        f->state = QFILTER_HELD;
      else {
        seterr(err, errlen, "bad state (queued, deferred or held)", w);
        return -1;
      }
    } else if (klen == 10 && !memcmp(w, "older_than", 10)) {
      if (f->older_than >= 0) {
        seterr(err, errlen, "filter given twice", w);
        return -1;
      }
      if (parse_uint(v, &f->older_than) < 0) {
        f->older_than = -1;
        seterr(err, errlen, "bad older_than (seconds)", w);
        return -1;
      }
    } else {
      seterr(err, errlen, "unknown filter", w);
      return -1;
    }
  }
  return 0;
}

int qfilter_has_criteria(const struct qfilter *f) {
  return f->domain[0] || f->sender[0] || f->state != QFILTER_ANY ||
         f->older_than >= 0;
}

int qfilter_needs_rcpts(const struct qfilter *f) {
  return f->domain[0] || f->state == QFILTER_QUEUED ||
         f->state == QFILTER_DEFERRED;
}

/* ASCII case-insensitive equality of two NUL-terminated strings. */
static int ieq(const char *a, const char *b) {
  for (;; a++, b++) {
    unsigned char x = (unsigned char)*a, y = (unsigned char)*b;
    if (x >= 'A' && x <= 'Z')
      x += 32;
    if (y >= 'A' && y <= 'Z')
      y += 32;
    if (x != y)
      return 0;
    if (!x)
      return 1;
  }
}

int qfilter_msg_match(const struct qfilter *f, const char *sender, int held,
                      int64_t received_at, int64_t now) {
  if (!sender)
    sender = "";
  if (!strcmp(f->sender, "<>")) {
    if (sender[0])
      return 0;
  } else if (f->sender[0] == '@') {
    const char *at = strrchr(sender, '@');
    if (!at || !ieq(at, f->sender))
      return 0;
  } else if (f->sender[0] && !ieq(sender, f->sender)) {
    return 0;
  }
  if (f->state == QFILTER_HELD && !held)
    return 0;
  if ((f->state == QFILTER_QUEUED || f->state == QFILTER_DEFERRED) && held)
    return 0;
  if (f->older_than >= 0 && received_at > now - f->older_than)
    return 0;
  return 1;
}

int qfilter_rcpts_match(const struct qfilter *f, const char *const *domains,
                        const int *states, size_t n) {
  int dom = !f->domain[0], st = 1;
  if (f->state == QFILTER_QUEUED || f->state == QFILTER_DEFERRED)
    st = 0;
  for (size_t i = 0; i < n; i++) {
    if (!dom && domains[i] && ieq(domains[i], f->domain))
      dom = 1;
    if (!st && states[i] == (f->state == QFILTER_QUEUED ? 0 : 1))
      st = 1;
  }
  return dom && st;
}
