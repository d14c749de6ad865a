/*
 * fuzz_proxy: the PROXY protocol v1/v2 parser on arbitrary bytes, fed
 * whole, split at a point chosen by the input, and byte by byte.
 * Invariants: the same status and header length every way; the header
 * length never passes the input, and never passes 107 bytes for v1; a
 * v1 header ends in CRLF; a finished header carries a family 4 or 6
 * source unless it is LOCAL/UNKNOWN.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "proto/proxy.h"

static enum proxy_status run(const uint8_t *d, size_t n, size_t step,
                             size_t *hdr, struct proxy_result *r) {
  static struct proxy_parser p;
  proxy_init(&p);
  size_t off = 0;
  *hdr = 0;
  while (off < n) {
    size_t k = n - off < step ? n - off : step;
    size_t used = 0;
    enum proxy_status st = proxy_parse(&p, d + off, k, &used, r);
    if (st == PROXY_BAD)
      return st;
    assert(used <= k);
    off += used;
    *hdr = off;
    if (st == PROXY_DONE)
      return st;
    assert(used == k);
  }
  return PROXY_AGAIN;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  size_t split = data[0];
  const uint8_t *d = data + 1;
  size_t n = size - 1;
  if (split == 0)
    split = 1;
  size_t h1, h2, h3;
  struct proxy_result r1, r2, r3;
  enum proxy_status a = run(d, n, n ? n : 1, &h1, &r1);
  enum proxy_status b = run(d, n, split, &h2, &r2);
  enum proxy_status c = run(d, n, 1, &h3, &r3);
  assert(a == b && b == c);
  if (a == PROXY_DONE) {
    assert(h1 == h2 && h2 == h3 && h1 <= n);
    assert(memcmp(&r1, &r2, sizeof r1) == 0);
    assert(memcmp(&r1, &r3, sizeof r1) == 0);
    assert(r1.version == 1 || r1.version == 2);
    if (r1.version == 1) {
      assert(h1 <= PROXY_V1_MAX && h1 >= 2);
      assert(d[h1 - 2] == '\r' && d[h1 - 1] == '\n');
    } else {
      assert(h1 >= PROXY_V2_FIXED);
      assert(h1 == PROXY_V2_FIXED + ((size_t)d[14] << 8 | d[15]));
    }
    if (r1.local)
      assert(r1.src.family == 0);
    else
      assert((r1.src.family == 4 || r1.src.family == 6) &&
             r1.dst.family == r1.src.family);
  }
  return 0;
}
