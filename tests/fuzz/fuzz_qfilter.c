/*
 * fuzz_qfilter: the queue FILTER words (proto/qfilter, CONTRACT §1/§5) on
 * arbitrary bytes split into words as the admin socket splits a line.
 * Invariants: a parsed filter's strings are NUL-terminated, lower case and
 * within their bounds; parsing the same words twice gives the same filter;
 * matching never reads past what it is given; durations stay in range.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/qfilter.h"

#define MAXW 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 4096)
    return 0;
  char *buf = malloc(size + 1);
  if (!buf)
    return 0;
  memcpy(buf, data, size);
  buf[size] = '\0';
  const char *w[MAXW];
  size_t n = 0;
  for (char *save = NULL, *t = strtok_r(buf, " \t\n", &save); t && n < MAXW;
       t = strtok_r(NULL, " \t\n", &save))
    w[n++] = t;

  struct qfilter a, b;
  char err[160];
  int ra = qfilter_parse(&a, w, n, err, sizeof err);
  int rb = qfilter_parse(&b, w, n, NULL, 0);
  assert(ra == rb);
  if (ra == 0) {
    assert(memchr(a.domain, '\0', sizeof a.domain));
    assert(memchr(a.sender, '\0', sizeof a.sender));
    for (const char *p = a.domain; *p; p++)
      assert(!(*p >= 'A' && *p <= 'Z') && *p != '@');
    assert(a.older_than >= -1);
    assert(!memcmp(&a, &b, sizeof a));
    const char *doms[2] = {n ? w[0] : "", n > 1 ? w[1] : "x.example"};
    int states[2] = {0, 1};
    (void)qfilter_msg_match(&a, n ? w[n - 1] : NULL, (int)(size & 1),
                            (int64_t)size, 1800000000);
    (void)qfilter_rcpts_match(&a, doms, states, 2);
    (void)qfilter_has_criteria(&a);
    (void)qfilter_needs_rcpts(&a);
  } else {
    assert(memchr(err, '\0', sizeof err));
  }
  for (size_t i = 0; i < n; i++) {
    int64_t s = -1;
    if (qfilter_duration(w[i], &s) == 0)
      assert(s >= 1 && s <= ((int64_t)1 << 40));
  }
  free(buf);
  return 0;
}
