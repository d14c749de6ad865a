/*
 * fuzz_dns_answer: drives dns_answer_parse() with arbitrary bytes as the
 * answer to fixed questions (the ID is taken from the input so that the
 * fuzzer gets past the first check), and checks its invariants.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dns/dns_answer.h"
#include "dns/mx.h"

static uint32_t zero_rnd(void *ctx) {
  (void)ctx;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const char *names[] = {"a.test", "mx1.a.test"};
  static const uint16_t types[] = {DNS_TYPE_MX, DNS_TYPE_A, DNS_TYPE_AAAA,
                                   DNS_TYPE_TXT};
  if (size < 2)
    return 0;
  uint16_t id = (uint16_t)(data[0] << 8 | data[1]);
  static struct dns_rrset rs;
  for (size_t n = 0; n < 2; n++)
    for (size_t t = 0; t < 4; t++) {
      enum dns_check c =
          dns_answer_parse(data, size, id, names[n], types[t], &rs);
      assert(c == DNS_CHECK_OK || c == DNS_CHECK_TRUNCATED ||
             c == DNS_CHECK_IGNORE);
      assert(rs.n >= 0 && rs.n <= DNS_MAX_RR);
      assert(memchr(rs.cname, 0, sizeof rs.cname));
      assert(memchr(rs.reason, 0, sizeof rs.reason));
      if (c != DNS_CHECK_OK)
        continue;
      assert(rs.status != DNS_R_OK || rs.n > 0);
      assert(rs.ttl <= DNS_TTL_MAX);
      for (int i = 0; i < rs.n; i++) {
        assert(rs.rr[i].type == types[t]);
        assert(memchr(rs.rr[i].name, 0, sizeof rs.rr[i].name));
        /* TXT: the strings joined in rdata, terminated */
        if (types[t] == DNS_TYPE_TXT)
          assert(rs.rr[i].rdlen <= DNS_TXT_MAX &&
                 rs.rr[i].rdata[rs.rr[i].rdlen] == 0);
      }
      /* The MX rules must take whatever the parser lets through. */
      if (types[t] == DNS_TYPE_MX && rs.status == DNS_R_OK) {
        static struct mx_host hosts[MX_MAX_HOSTS];
        static struct mx_result r;
        int nh = mx_order("a.test", rs.rr, rs.n, zero_rnd, NULL, hosts, &r);
        assert(nh >= 0 && nh <= MX_MAX_HOSTS && nh <= rs.n);
        for (int i = 1; i < nh; i++)
          assert(hosts[i - 1].pref <= hosts[i].pref);
      }
    }
  return 0;
}
