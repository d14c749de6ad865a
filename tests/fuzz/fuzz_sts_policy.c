/*
 * fuzz_sts_policy: the MTA-STS policy file, TXT records and TLS-RPT rua
 * (proto/sts_policy.h) on arbitrary bytes.  Invariants:
 *  - sts_policy_parse returns 0 or -1; on 0 the mode is known, max_age at
 *    most a year, 0..STS_MAX_MX patterns of valid host-name characters,
 *    at least one unless the mode is none; on -1 the policy is zeroed and
 *    the reason printable;
 *  - sts_txt_parse gives 1 only with an id of 1..32 letters and digits;
 *  - every rua address is printable, has one '@';
 *  - sts_media_type_ok accepts only "text/plain" (any case) after
 *    optional blanks, followed by blanks and the end or a ';'.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proto/sts_policy.h"

#define CHECK(x)                                                               \
  do {                                                                         \
    if (!(x)) {                                                                \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__,     \
              #x);                                                             \
      abort();                                                                 \
    }                                                                          \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static struct sts_policy p;
  char why[128];
  int rc = sts_policy_parse((const char *)data, size, &p, why, sizeof why);
  CHECK(rc == 0 || rc == -1);
  if (rc == 0) {
    CHECK(p.mode <= STS_MODE_ENFORCE);
    CHECK(p.max_age <= STS_MAX_AGE_MAX);
    CHECK(p.n_mx >= 0 && p.n_mx <= STS_MAX_MX);
    CHECK(p.mode == STS_MODE_NONE || p.n_mx > 0);
    for (int i = 0; i < p.n_mx; i++) {
      size_t n = strlen(p.mx[i]);
      CHECK(n > 0 && n < STS_MX_LEN);
      for (size_t k = 0; k < n; k++)
        CHECK(p.mx[i][k] > 0x20 && p.mx[i][k] < 0x7f);
      (void)sts_mx_match(&p, p.mx[i]);
    }
  } else {
    CHECK(p.n_mx == 0 && p.mode == STS_MODE_NONE);
    CHECK(memchr(why, '\0', sizeof why) != NULL);
    for (const char *q = why; *q; q++)
      CHECK(*q >= 0x20 && *q < 0x7f);
  }
  /* the same bytes as TXT strings (NUL-terminated, at most 511) */
  char txt[512];
  size_t n = size < sizeof txt - 1 ? size : sizeof txt - 1;
  memcpy(txt, data, n);
  txt[n] = '\0';
  char id[STS_ID_MAX + 1];
  if (sts_txt_parse(txt, id) == 1) {
    size_t l = strlen(id);
    CHECK(l >= 1 && l <= STS_ID_MAX);
  }
  if (sts_media_type_ok(txt)) {
    const char *q = txt + strspn(txt, " \t");
    CHECK(strncasecmp(q, "text/plain", 10) == 0);
    q += 10;
    q += strspn(q, " \t");
    CHECK(*q == '\0' || *q == ';');
  }
  const char *t[1] = {txt};
  char rua[TLSRPT_MAX_RUA][TLSRPT_RUA_LEN];
  int nr = tlsrpt_txt_rua(t, 1, rua);
  CHECK(nr >= 0 && nr <= TLSRPT_MAX_RUA);
  for (int i = 0; i < nr; i++) {
    CHECK(strchr(rua[i], '@') && strchr(rua[i], '@') == strrchr(rua[i], '@'));
    for (const char *q = rua[i]; *q; q++)
      CHECK(*q > 0x20 && *q < 0x7f);
  }
  return 0;
}
