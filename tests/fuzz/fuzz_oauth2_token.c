/*
 * fuzz_oauth2_token: the token endpoint's answer (proto/oauth2.h
 * oauth2_parse_token) on arbitrary bytes; the first byte picks the HTTP
 * status.  Invariants:
 *  - it returns 0 or -1;
 *  - on 0 the token is 1..OAUTH2_TOKEN_MAX printable ASCII bytes without
 *    space, the status was 200, and expires_in is at most 1e9 s;
 *  - on -1 the token is empty and the reason is a terminated string of
 *    printable ASCII (it goes to a log line).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/oauth2.h"

#define CHECK(x)                                                               \
  do {                                                                         \
    if (!(x)) {                                                                \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__,     \
              #x);                                                             \
      abort();                                                                 \
    }                                                                          \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const int statuses[] = {200, 200, 200, 400, 401, 500};
  if (size == 0)
    return 0;
  int status = statuses[data[0] % 6];
  static struct oauth2_token tok;
  char why[512];
  int rc = oauth2_parse_token(status, (const char *)data + 1, size - 1, &tok,
                              why, sizeof why);
  CHECK(rc == 0 || rc == -1);
  if (rc == 0) {
    size_t n = strlen(tok.access_token);
    CHECK(status == 200);
    CHECK(n >= 1 && n <= OAUTH2_TOKEN_MAX);
    for (size_t i = 0; i < n; i++)
      CHECK(tok.access_token[i] > 0x20 && tok.access_token[i] < 0x7f);
    CHECK(tok.expires_in <= 1000000000u);
  } else {
    CHECK(tok.access_token[0] == '\0');
    CHECK(memchr(why, '\0', sizeof why) != NULL);
    for (const char *p = why; *p; p++)
      CHECK(*p >= 0x20 && *p < 0x7f);
  }
  return 0;
}
