/* test_tlsa: TLSA RDATA parsing and SMTP usability (proto/tlsa.h, RFC 6698
 * §2.1, RFC 7672 §3.1, RFC 7671 §4). */
#include "proto/tlsa.h"

#include "check.h"

static enum tlsa_check parse(uint8_t u, uint8_t s, uint8_t m, size_t dlen,
                             struct tlsa_rec *r) {
  uint8_t rd[200];
  rd[0] = u;
  rd[1] = s;
  rd[2] = m;
  for (size_t i = 0; i < dlen; i++)
    rd[3 + i] = (uint8_t)i;
  static uint8_t keep[200];
  memcpy(keep, rd, 3 + dlen);
  return tlsa_parse(keep, 3 + dlen, r);
}

static void test_usable(void) {
  struct tlsa_rec r;
  CHECK_INT(parse(3, 1, 1, 32, &r), TLSA_USABLE);
  CHECK_INT(r.usage, 3);
  CHECK_INT(r.selector, 1);
  CHECK_INT(r.mtype, 1);
  CHECK_INT((int)r.len, 32);
  CHECK_INT(r.data[5], 5);
  CHECK_INT(parse(2, 0, 2, 64, &r), TLSA_USABLE);
  CHECK_INT(parse(3, 0, 0, 150, &r), TLSA_USABLE);
  CHECK_INT(parse(2, 1, 0, 1, &r), TLSA_USABLE);
}

static void test_unusable(void) {
  struct tlsa_rec r;
  /* PKIX usages are not for SMTP (RFC 7672 §3.1.3). */
  CHECK_INT(parse(0, 1, 1, 32, &r), TLSA_UNUSABLE);
  CHECK_INT(parse(1, 1, 1, 32, &r), TLSA_UNUSABLE);
  CHECK_INT(parse(4, 1, 1, 32, &r), TLSA_UNUSABLE);
  CHECK_INT(parse(255, 1, 1, 32, &r), TLSA_UNUSABLE);
  CHECK_INT(parse(3, 2, 1, 32, &r), TLSA_UNUSABLE);
  CHECK_INT(parse(3, 1, 3, 32, &r), TLSA_UNUSABLE);
  CHECK_INT(parse(3, 1, 255, 5, &r), TLSA_UNUSABLE);
}

static void test_malformed(void) {
  struct tlsa_rec r;
  CHECK_INT(tlsa_parse(NULL, 0, &r), TLSA_MALFORMED);
  const uint8_t three[] = {3, 1, 1};
  CHECK_INT(tlsa_parse(three, 3, &r), TLSA_MALFORMED);
  CHECK_INT(parse(3, 1, 1, 31, &r), TLSA_MALFORMED);
  CHECK_INT(parse(3, 1, 1, 33, &r), TLSA_MALFORMED);
  CHECK_INT(parse(3, 1, 2, 32, &r), TLSA_MALFORMED);
  CHECK_STR(tlsa_check_name(TLSA_MALFORMED), "malformed");
}

static void test_format(void) {
  struct tlsa_rec r;
  char buf[80];
  parse(3, 1, 1, 32, &r);
  CHECK_STR(tlsa_format(&r, buf, sizeof buf),
            "3 1 1 000102030405060708090a0b0c0d0e0f...");
  parse(2, 0, 0, 2, &r);
  CHECK_STR(tlsa_format(&r, buf, sizeof buf), "2 0 0 0001");
  CHECK_STR(tlsa_format(&r, buf, 4), "2 0");
}

int main(void) {
  test_usable();
  test_unusable();
  test_malformed();
  test_format();
  return check_result("test_tlsa");
}
