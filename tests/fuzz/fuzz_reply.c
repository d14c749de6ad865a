/*
 * fuzz_reply: the SMTP reply parser on arbitrary bytes, fed whole and
 * split at a point chosen by the input.  Invariants: consumed <= len, the
 * same result either way, and a finished reply is well formed.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "proto/reply.h"

static int run(const char *d, size_t n, size_t split, struct reply_parser *p,
               size_t *used) {
  size_t c1 = 0, c2 = 0;
  reply_parser_init(p);
  int rc = reply_parse(p, d, split, &c1);
  assert(c1 <= split);
  if (rc == REPLY_AGAIN && split < n) {
    rc = reply_parse(p, d + split, n - split, &c2);
    assert(c2 <= n - split);
  }
  *used = c1 + c2;
  return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static struct reply_parser a, b;
  if (size == 0)
    return 0;
  size_t split = data[0] % size;
  const char *d = (const char *)data + 1;
  size_t n = size - 1;
  if (split > n)
    split = n;
  size_t ua, ub;
  int ra = run(d, n, n, &a, &ua);
  int rb = run(d, n, split, &b, &ub);
  assert(ra == rb);
  if (ra == REPLY_DONE) {
    assert(ua == ub);
    assert(a.r.code >= 200 && a.r.code <= 559);
    assert(a.r.code == b.r.code && a.r.text_len == b.r.text_len);
    assert(memcmp(a.r.text, b.r.text, a.r.text_len) == 0);
    assert(strcmp(a.r.esc, b.r.esc) == 0);
    assert(a.r.text_len < REPLY_TEXT_MAX && a.r.text[a.r.text_len] == '\0');
    char j[512], s[16];
    size_t jl = reply_join(&a.r, j, sizeof(j));
    assert(jl < sizeof(j) && strlen(j) == jl);
    reply_status(&a.r, s);
    assert(s[0] == '2' || s[0] == '4' || s[0] == '5');
  }
  return 0;
}
