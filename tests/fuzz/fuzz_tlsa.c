/*
 * fuzz_tlsa: TLSA RDATA (proto/tlsa.h tlsa_parse, tlsa_format) on arbitrary
 * bytes, and the same bytes as a DNS answer to a TLSA question
 * (dns_answer_parse with DNS_TYPE_TLSA).  Invariants:
 *  - tlsa_parse never reads outside the input; a usable record has usage
 *    2 or 3, selector 0 or 1, matching type 0..2, non-empty data of 32
 *    octets for SHA-256 and 64 for SHA-512, inside the input;
 *  - tlsa_format always NUL-terminates within its buffer;
 *  - an answer's TLSA records have rdlen <= DNS_RDATA_MAX.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dns/dns_answer.h"
#include "proto/tlsa.h"

#define CHECK(x)                                                               \
  do {                                                                         \
    if (!(x)) {                                                                \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__,     \
              #x);                                                             \
      abort();                                                                 \
    }                                                                          \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* A copy of exactly size bytes, so ASan sees any overread. */
  uint8_t *buf = malloc(size ? size : 1);
  if (!buf)
    return 0;
  memcpy(buf, data, size);
  struct tlsa_rec r;
  enum tlsa_check c = tlsa_parse(buf, size, &r);
  if (c == TLSA_USABLE) {
    CHECK(r.usage == 2 || r.usage == 3);
    CHECK(r.selector <= 1 && r.mtype <= 2);
    CHECK(r.len > 0 && r.data == buf + 3 && r.len == size - 3);
    CHECK(r.mtype != 1 || r.len == 32);
    CHECK(r.mtype != 2 || r.len == 64);
  }
  if (c != TLSA_MALFORMED) {
    char out[48];
    memset(out, 'x', sizeof out);
    tlsa_format(&r, out, sizeof out);
    CHECK(memchr(out, '\0', sizeof out) != NULL);
  }
  struct dns_rrset *rs = malloc(sizeof *rs);
  if (rs) {
    uint16_t id = size >= 2 ? (uint16_t)(buf[0] << 8 | buf[1]) : 0;
    if (dns_answer_parse(buf, size, id, "_25._tcp.mx.example", DNS_TYPE_TLSA,
                         rs) == DNS_CHECK_OK &&
        rs->status == DNS_R_OK) {
      for (int i = 0; i < rs->n; i++) {
        CHECK(rs->rr[i].rdlen <= DNS_RDATA_MAX);
        tlsa_parse(rs->rr[i].rdata, rs->rr[i].rdlen, &r);
      }
    }
    free(rs);
  }
  free(buf);
  return 0;
}
