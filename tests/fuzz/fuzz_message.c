/*
 * fuzz_message: the streaming header scanner (proto/message.h
 * message_scan_*) on arbitrary bytes.  The first input byte seeds the
 * chunk sizes; the rest is the message.  Invariants:
 *  - fed in chunks of random sizes (empty chunks included), every public
 *    result equals the one of a single feed;
 *  - size is the octets fed, eight_bit is "some octet >= 0x80";
 *  - once the header section has ended it stays ended (checked after each
 *    chunk), and the counts only grow;
 *  - received_count is at most the number of lines;
 *  - for inputs whose only CRs come right before an LF, the results match
 *    a line-by-line reference of the documented rule: the header section
 *    ends at the first empty line or at the first complete line that is
 *    neither a continuation (starts with SP/HT, after a first line) nor
 *    "name:" with a
 *    non-empty name of printable ASCII other than SP and ':'.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/message.h"
#include "proto/text.h"

#define CHECK(x)                                                               \
  do {                                                                         \
    if (!(x)) {                                                                \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__,     \
              #x);                                                             \
      abort();                                                                 \
    }                                                                          \
  } while (0)

static void same(const struct message_scan *a, const struct message_scan *b) {
  CHECK(a->size == b->size);
  CHECK(a->received_count == b->received_count);
  CHECK(a->has_date == b->has_date);
  CHECK(a->has_message_id == b->has_message_id);
  CHECK(a->eight_bit == b->eight_bit);
  CHECK(a->in_headers == b->in_headers);
  CHECK(a->header_end == b->header_end);
  CHECK(a->separator == b->separator);
}

struct ref {
  int received, date, msgid, in_headers, separator;
  size_t header_end;
};

static int name_is(const char *s, size_t n, const char *k) {
  return strlen(k) == n && text_casecmp(s, k, n) == 0;
}

/* Line-by-line reference; in has no CR except before LF. */
static void reference(const char *in, size_t n, struct ref *r) {
  memset(r, 0, sizeof(*r));
  r->in_headers = 1;
  size_t pos = 0;
  while (pos < n && r->in_headers) {
    size_t start = pos;
    const char *nl = memchr(in + pos, '\n', n - pos);
    int complete = nl != NULL;
    size_t len = complete ? (size_t)(nl - (in + pos)) : n - pos;
    const char *s = in + pos;
    pos += len + (complete ? 1 : 0);
    if (len > 0 && s[len - 1] == '\r')
      len--;
    if (len == 0) {
      /* An empty line ends the section as soon as its first octet is
       * seen; a last line with nothing in it was never started. */
      if (complete || (s < in + n && *s == '\r')) {
        r->in_headers = 0;
        r->header_end = start;
        r->separator = 1;
      }
      break;
    }
    /* A continuation needs a field before it. */
    if ((s[0] == ' ' || s[0] == '\t') && start > 0)
      continue;
    size_t i = 0;
    while (i < len && s[i] != ':' && (unsigned char)s[i] > 32 &&
           (unsigned char)s[i] < 127)
      i++;
    if (i < len && s[i] == ':' && i > 0) {
      if (name_is(s, i, "received"))
        r->received++;
      else if (name_is(s, i, "date"))
        r->date = 1;
      else if (name_is(s, i, "message-id"))
        r->msgid = 1;
    } else if (complete) {
      r->in_headers = 0;
      r->header_end = start;
    }
  }
}

/* Undefined behaviour is a finding, not a warning. */
const char *__ubsan_default_options(void);
const char *__ubsan_default_options(void) {
  return "halt_on_error=1:print_stacktrace=1";
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  uint32_t x = data[0] * 2654435761u + 7;
  const char *in = (const char *)data + 1;
  size_t n = size - 1;

  struct message_scan a, b;
  message_scan_init(&a);
  message_scan_feed(&a, in, n);

  message_scan_init(&b);
  size_t off = 0;
  struct message_scan prev = b;
  while (off < n) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    size_t c = (x & 0x80) ? x % 4 : x % 64;
    if (c > n - off)
      c = n - off;
    message_scan_feed(&b, in + off, c);
    off += c;
    CHECK(b.size == off);
    CHECK(prev.in_headers || !b.in_headers);
    CHECK(b.received_count >= prev.received_count);
    CHECK(b.has_date >= prev.has_date);
    CHECK(b.has_message_id >= prev.has_message_id);
    prev = b;
  }
  same(&a, &b);

  CHECK(a.size == n);
  int any8 = 0;
  size_t lines = 1;
  int bare_cr = 0;
  for (size_t i = 0; i < n; i++) {
    if ((unsigned char)in[i] >= 0x80)
      any8 = 1;
    if (in[i] == '\n')
      lines++;
    if (in[i] == '\r' && (i + 1 >= n || in[i + 1] != '\n'))
      bare_cr = 1;
  }
  CHECK(a.eight_bit == any8);
  CHECK(a.received_count >= 0 && (size_t)a.received_count <= lines);

  if (!bare_cr) {
    struct ref r;
    reference(in, n, &r);
    CHECK(a.received_count == r.received);
    CHECK(a.has_date == r.date);
    CHECK(a.has_message_id == r.msgid);
    CHECK(a.in_headers == r.in_headers);
    if (!r.in_headers) {
      CHECK(a.header_end == r.header_end);
      CHECK(a.separator == r.separator);
    }
  }
  int sep = -1;
  size_t end = message_header_end(in, n, &sep);
  CHECK(end == (a.in_headers ? n : a.header_end));
  CHECK(sep == (!a.in_headers && a.separator));
  CHECK(message_added_headers_need_separator(&a) ==
        (n > 0 && !a.in_headers && a.header_end == 0 && !a.separator));
  return 0;
}
