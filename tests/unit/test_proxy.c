/*
 * test_proxy: the PROXY protocol v1/v2 parser (HAProxy's
 * proxy-protocol.txt): accepted headers with their addresses, LOCAL and
 * UNKNOWN, every refusal, the header fed whole and byte by byte, and the
 * bytes after the header left to the caller.
 */
#include "check.h"

#include "proto/proxy.h"

/* Feeds the whole buffer in pieces of step bytes; returns the status and
 * the header length in *hdr (bytes used in total). */
static enum proxy_status run(const void *buf, size_t len, size_t step,
                             size_t *hdr, struct proxy_result *r) {
  struct proxy_parser p;
  proxy_init(&p);
  const uint8_t *d = buf;
  size_t off = 0;
  *hdr = 0;
  while (off < len) {
    size_t n = len - off < step ? len - off : step;
    size_t used = 0;
    enum proxy_status st = proxy_parse(&p, d + off, n, &used, r);
    if (st == PROXY_BAD)
      return st;
    CHECK(used <= n);
    off += used;
    *hdr = off;
    if (st == PROXY_DONE)
      return st;
    CHECK_INT(used, n);
  }
  return PROXY_AGAIN;
}

/* Same status whether fed at once or byte by byte. */
static enum proxy_status both(const void *buf, size_t len, size_t *hdr,
                              struct proxy_result *r) {
  size_t h1, h2;
  struct proxy_result r2;
  enum proxy_status a = run(buf, len, len ? len : 1, &h1, r);
  enum proxy_status b = run(buf, len, 1, &h2, &r2);
  CHECK_INT(a, b);
  if (a == PROXY_DONE) {
    CHECK_INT(h1, h2);
    CHECK(memcmp(r, &r2, sizeof r2) == 0);
  }
  *hdr = h1;
  return a;
}

static enum proxy_status s(const char *text, size_t *hdr,
                           struct proxy_result *r) {
  return both(text, strlen(text), hdr, r);
}

static void test_v1_accepted(void) {
  struct proxy_result r;
  size_t h;
  const char *l = "PROXY TCP4 192.0.2.10 198.51.100.1 56324 25\r\nEHLO x\r\n";
  CHECK_INT(s(l, &h, &r), PROXY_DONE);
  CHECK_INT(h, strlen(l) - 8); /* "EHLO x\r\n" is left to the session */
  CHECK_INT(r.version, 1);
  CHECK_INT(r.local, 0);
  CHECK_INT(r.src.family, 4);
  CHECK(memcmp(r.src.ip, "\xc0\x00\x02\x0a", 4) == 0);
  CHECK(memcmp(r.dst.ip, "\xc6\x33\x64\x01", 4) == 0);
  CHECK_INT(r.src.port, 56324);
  CHECK_INT(r.dst.port, 25);

  CHECK_INT(s("PROXY TCP6 2001:db8::1 ::1 65535 0\r\n", &h, &r), PROXY_DONE);
  CHECK_INT(r.src.family, 6);
  CHECK(memcmp(r.src.ip, "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01", 16) ==
        0);
  CHECK(memcmp(r.dst.ip, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x01", 16) == 0);
  CHECK_INT(r.src.port, 65535);
  CHECK_INT(r.dst.port, 0);

  CHECK_INT(s("PROXY UNKNOWN\r\n", &h, &r), PROXY_DONE);
  CHECK_INT(r.local, 1);
  CHECK_INT(r.src.family, 0);
  CHECK_INT(h, 15);
  CHECK_INT(s("PROXY UNKNOWN ffff:f...f:ffff 1.2.3.4 1 2\r\nX", &h, &r),
            PROXY_DONE);
  CHECK_INT(r.local, 1);

  /* the longest line (spec: 107 bytes with CRLF, the UNKNOWN form) */
  const char *max = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
  CHECK_INT(strlen(max), PROXY_V1_MAX);
  CHECK_INT(s(max, &h, &r), PROXY_DONE);
  CHECK_INT(h, PROXY_V1_MAX);
  CHECK_INT(r.local, 1);
  const char *v6max = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                      "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
  CHECK_INT(s(v6max, &h, &r), PROXY_DONE);
  CHECK_INT(r.local, 0);
  CHECK(memcmp(r.dst.ip,
               "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
               "\xff\xff\xff\xff",
               16) == 0);
}

static void test_v1_refused(void) {
  struct proxy_result r;
  size_t h;
  const char *bad[] = {
      "EHLO client.example\r\n",                  /* no header at all */
      "PROXX TCP4 1.2.3.4 5.6.7.8 1 2\r\n",       /* wrong word */
      "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",       /* case matters */
      "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",       /* protocol */
      "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",       /* protocol */
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",         /* LF without CR */
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX\n",      /* CR without LF */
      "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",         /* a port missing */
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",     /* a token too many */
      "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",      /* two spaces */
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",      /* trailing space */
      "PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",     /* octet */
      "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",         /* three octets */
      "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",      /* leading zero */
      "PROXY TCP4 ::1 5.6.7.8 1 2\r\n",           /* v6 in TCP4 */
      "PROXY TCP6 1.2.3.4 ::1 1 2\r\n",           /* v4 in TCP6 */
      "PROXY TCP6 1::2::3 ::1 1 2\r\n",           /* two '::' */
      "PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", /* nine groups */
      "PROXY TCP6 12345::1 ::1 1 2\r\n",          /* five hex digits */
      "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",   /* port range */
      "PROXY TCP4 1.2.3.4 5.6.7.8 025 2\r\n",     /* leading zero */
      "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",      /* sign */
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2x\r\n",      /* junk in port */
      "PROXY\r\n",                                /* nothing */
      "PROXY UNKNOWNX\r\n",                       /* not UNKNOWN */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    enum proxy_status st = s(bad[i], &h, &r);
    if (st != PROXY_BAD)
      fprintf(stderr, "accepted: %s", bad[i]);
    CHECK_INT(st, PROXY_BAD);
  }
  /* 108 bytes without a CRLF: refused at the 108th byte, not later */
  char longl[200];
  memset(longl, 'A', sizeof longl);
  memcpy(longl, "PROXY UNKNOWN ", 14);
  CHECK_INT(both(longl, 107, &h, &r), PROXY_BAD);
  CHECK_INT(both(longl, 106, &h, &r), PROXY_AGAIN);
  CHECK_INT(both(longl, sizeof longl, &h, &r), PROXY_BAD);
  /* a partial prefix is not yet an error, a wrong one at once is */
  CHECK_INT(s("PROX", &h, &r), PROXY_AGAIN);
  CHECK_INT(s("PROXY TCP4 1.2", &h, &r), PROXY_AGAIN);
  CHECK_INT(s("PRO Y", &h, &r), PROXY_BAD);
}

static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* Builds a v2 header: sig, ver_cmd, fam, len, body (blen bytes). */
static size_t v2(uint8_t *out, uint8_t vc, uint8_t fam, const void *body,
                 size_t blen) {
  memcpy(out, sig, 12);
  out[12] = vc;
  out[13] = fam;
  out[14] = (uint8_t)(blen >> 8);
  out[15] = (uint8_t)blen;
  memcpy(out + 16, body, blen);
  return 16 + blen;
}

static void test_v2_accepted(void) {
  uint8_t b[600];
  struct proxy_result r;
  size_t h;
  const uint8_t in4[12] = {192, 0, 2, 10, 198, 51, 100, 1, 0xdc, 0x04, 0, 25};
  size_t n = v2(b, 0x21, 0x11, in4, sizeof in4);
  memcpy(b + n, "EHLO x\r\n", 8);
  CHECK_INT(both(b, n + 8, &h, &r), PROXY_DONE);
  CHECK_INT(h, 28);
  CHECK_INT(r.version, 2);
  CHECK_INT(r.local, 0);
  CHECK_INT(r.src.family, 4);
  CHECK(memcmp(r.src.ip, in4, 4) == 0);
  CHECK(memcmp(r.dst.ip, in4 + 4, 4) == 0);
  CHECK_INT(r.src.port, 56324);
  CHECK_INT(r.dst.port, 25);

  uint8_t in6[36 + 40];
  for (int i = 0; i < 32; i++)
    in6[i] = (uint8_t)i;
  in6[32] = 0x12;
  in6[33] = 0x34;
  in6[34] = 0;
  in6[35] = 25;
  /* TLVs after the addresses (PP2_TYPE_ALPN, a NOOP, an unknown type with
   * a bogus inner length): skipped as opaque bytes */
  const uint8_t tlv[40] = {0x01, 0x00, 0x04, 'h',  '2',  'x', 'y',
                           0x04, 0x00, 0x00, 0xEE, 0xFF, 0xFF};
  memcpy(in6 + 36, tlv, sizeof tlv);
  n = v2(b, 0x21, 0x21, in6, sizeof in6);
  CHECK_INT(both(b, n, &h, &r), PROXY_DONE);
  CHECK_INT(h, 16 + 76);
  CHECK_INT(r.src.family, 6);
  CHECK(memcmp(r.src.ip, in6, 16) == 0);
  CHECK(memcmp(r.dst.ip, in6 + 16, 16) == 0);
  CHECK_INT(r.src.port, 0x1234);

  /* LOCAL: no address, whatever the family byte and block say */
  n = v2(b, 0x20, 0x00, "", 0);
  CHECK_INT(both(b, n, &h, &r), PROXY_DONE);
  CHECK_INT(r.local, 1);
  CHECK_INT(r.src.family, 0);
  CHECK_INT(h, 16);
  n = v2(b, 0x20, 0x11, in4, sizeof in4);
  CHECK_INT(both(b, n, &h, &r), PROXY_DONE);
  CHECK_INT(r.local, 1);
  CHECK_INT(h, 28);

  /* a large TLV block (beyond what the parser keeps) is skipped whole */
  static uint8_t big[16 + 12 + 5000];
  uint8_t body[12 + 5000];
  memset(body, 0xAB, sizeof body);
  memcpy(body, in4, 12);
  n = v2(big, 0x21, 0x11, body, sizeof body);
  CHECK_INT(both(big, n, &h, &r), PROXY_DONE);
  CHECK_INT(h, n);
  CHECK(memcmp(r.src.ip, in4, 4) == 0);
  CHECK_INT(both(big, n - 1, &h, &r), PROXY_AGAIN);
}

static void test_v2_refused(void) {
  uint8_t b[200];
  struct proxy_result r;
  size_t h;
  const uint8_t in4[12] = {192, 0, 2, 10, 198, 51, 100, 1, 0, 1, 0, 25};
  uint8_t in6[36] = {0};
  size_t n;
  /* signature: each byte wrong in turn */
  for (int i = 0; i < 12; i++) {
    n = v2(b, 0x21, 0x11, in4, sizeof in4);
    b[i] ^= 0x40;
    CHECK_INT(both(b, n, &h, &r), PROXY_BAD);
  }
  n = v2(b, 0x11, 0x11, in4, sizeof in4); /* version 1 in a v2 header */
  CHECK_INT(both(b, n, &h, &r), PROXY_BAD);
  n = v2(b, 0x31, 0x11, in4, sizeof in4); /* version 3 */
  CHECK_INT(both(b, n, &h, &r), PROXY_BAD);
  n = v2(b, 0x22, 0x11, in4, sizeof in4); /* command 2 */
  CHECK_INT(both(b, n, &h, &r), PROXY_BAD);
  n = v2(b, 0x21, 0x12, in4, sizeof in4); /* UDP over IPv4 */
  CHECK_INT(both(b, n, &h, &r), PROXY_BAD);
  n = v2(b, 0x21, 0x22, in6, sizeof in6); /* UDP over IPv6 */
  CHECK_INT(both(b, n, &h, &r), PROXY_BAD);
  n = v2(b, 0x21, 0x31, in6, sizeof in6); /* AF_UNIX */
  CHECK_INT(both(b, n, &h, &r), PROXY_BAD);
  n = v2(b, 0x21, 0x00, "", 0); /* PROXY with UNSPEC */
  CHECK_INT(both(b, n, &h, &r), PROXY_BAD);
  n = v2(b, 0x21, 0x11, in4, 11); /* too short for IPv4 */
  CHECK_INT(both(b, n, &h, &r), PROXY_BAD);
  n = v2(b, 0x21, 0x21, in6, 35); /* too short for IPv6 */
  CHECK_INT(both(b, n, &h, &r), PROXY_BAD);
  /* refused as soon as the fixed part is in, not after the body */
  n = v2(b, 0x21, 0x21, in6, 35);
  CHECK_INT(both(b, 16, &h, &r), PROXY_BAD);
  /* truncated: not yet an error */
  n = v2(b, 0x21, 0x11, in4, sizeof in4);
  CHECK_INT(both(b, n - 1, &h, &r), PROXY_AGAIN);
  CHECK_INT(both(b, 5, &h, &r), PROXY_AGAIN);
  /* any other first byte */
  CHECK_INT(both("\x16\x03\x01", 3, &h, &r), PROXY_BAD); /* a ClientHello */
  CHECK_INT(both("\r\n\r\nX", 5, &h, &r), PROXY_BAD);
}

static void test_ip(void) {
  uint8_t a[16];
  CHECK_INT(proxy_parse_ipv4("0.0.0.0", 7, a), 0);
  CHECK_INT(proxy_parse_ipv4("255.255.255.255", 15, a), 0);
  CHECK_INT(proxy_parse_ipv4("1.2.3.4.", 8, a), -1);
  CHECK_INT(proxy_parse_ipv4("1..3.4", 6, a), -1);
  CHECK_INT(proxy_parse_ipv4("", 0, a), -1);
  CHECK_INT(proxy_parse_ipv4("1.2.3.1000", 10, a), -1);
  CHECK_INT(proxy_parse_ipv6("::", 2, a), 0);
  CHECK_INT(proxy_parse_ipv6("::ffff:192.0.2.1", 16, a), 0);
  CHECK(memcmp(a, "\0\0\0\0\0\0\0\0\0\0\xff\xff\xc0\x00\x02\x01", 16) == 0);
  CHECK_INT(proxy_parse_ipv6("1:2:3:4:5:6:7:8", 15, a), 0);
  CHECK(memcmp(a, "\0\1\0\2\0\3\0\4\0\5\0\6\0\7\0\x08", 16) == 0);
  CHECK_INT(proxy_parse_ipv6("1::", 3, a), 0);
  CHECK(memcmp(a, "\0\1\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16) == 0);
  CHECK_INT(proxy_parse_ipv6("1:2:3:4:5:6:7::", 15, a), 0);
  CHECK_INT(proxy_parse_ipv6("1:2:3:4:5:6:7:8::", 17, a), -1);
  CHECK_INT(proxy_parse_ipv6("::1:2:3:4:5:6:7:8", 17, a), -1);
  CHECK_INT(proxy_parse_ipv6(":1::", 4, a), -1);
  CHECK_INT(proxy_parse_ipv6("1:", 2, a), -1);
  CHECK_INT(proxy_parse_ipv6("1:2:3:4:5:6:7", 13, a), -1);
  CHECK_INT(proxy_parse_ipv6(":::", 3, a), -1);
  CHECK_INT(proxy_parse_ipv6("g::", 3, a), -1);
  CHECK_INT(proxy_parse_ipv6("1:2:3:4:5:6:7:1.2.3.4", 21, a), -1);
  CHECK_INT(proxy_parse_ipv6("1:2:3:4:5:6:1.2.3.4", 19, a), 0);
}

int main(void) {
  test_v1_accepted();
  test_v1_refused();
  test_v2_accepted();
  test_v2_refused();
  test_ip();
  return check_result("test_proxy");
}
