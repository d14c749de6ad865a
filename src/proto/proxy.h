/*
 * proxy: the PROXY protocol header a TCP load balancer puts in front of a
 * connection (HAProxy's proxy-protocol.txt, versions 1 and 2), as a pure
 * incremental parser.  It knows no sockets: addresses come out as bytes.
 *
 * The parser never takes a byte past the end of the header, so what
 * follows it (an SMTP command, a TLS ClientHello) stays with the caller.
 *
 *   v1: "PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n" or "PROXY UNKNOWN...\r\n",
 *       at most PROXY_V1_MAX bytes with the CRLF (spec section 2.1).
 *   v2: the 12-byte signature, version/command, family/transport, a
 *       16-bit length and that many bytes of addresses and TLVs (2.2).
 *       TLVs are skipped without being buffered.
 *
 * Accepted: v1 TCP4/TCP6 and v2 PROXY over TCP/IPv4 or TCP/IPv6 carry the
 * client's address; v2 LOCAL and v1 UNKNOWN carry none (health checks: the
 * connection keeps its own address).  Refused: any other signature,
 * version, command, family (UNIX, UNSPEC with PROXY) or transport (DGRAM),
 * a v1 line over 107 bytes or not ending in CRLF, an address or port that
 * is not in canonical decimal/hex form, a v2 length too short for its
 * addresses.
 */
#ifndef MAILHOP_PROTO_PROXY_H
#define MAILHOP_PROTO_PROXY_H

#include <stddef.h>
#include <stdint.h>

/* The longest v1 line, CRLF included (spec 2.1). */
#define PROXY_V1_MAX 107
/* The fixed part of a v2 header: signature, ver/cmd, family, length. */
#define PROXY_V2_FIXED 16
/* v2 address block bytes the parser keeps (the AF_UNIX size, the
 * largest); bytes beyond the addresses (TLVs) are counted, not kept. */
#define PROXY_V2_ADDR_MAX 216

enum proxy_status {
  PROXY_AGAIN = 0, /* every byte given was header; feed more */
  PROXY_DONE = 1,  /* the header is complete; see *used and the result */
  PROXY_BAD = -1,  /* not a valid PROXY header: close the connection */
};

/* One endpoint: family 4 or 6 (0: none), address in network order. */
struct proxy_addr {
  int family;
  uint8_t ip[16]; /* 4 bytes used for family 4 */
  uint16_t port;  /* host order */
};

struct proxy_result {
  int version; /* 1 or 2 */
  int local;   /* 1: v2 LOCAL or v1 UNKNOWN: keep the connection's own
                  addresses; src and dst are then family 0 */
  struct proxy_addr src, dst;
};

/* Parser state; zero it (or proxy_init) before the first byte. */
struct proxy_parser {
  int version;  /* 0 until the first bytes decide, then 1 or 2 */
  size_t seen;  /* header bytes taken so far */
  size_t total; /* v2: whole header length once known, else 0 */
  uint8_t buf[PROXY_V2_FIXED + PROXY_V2_ADDR_MAX]; /* kept header bytes */
  size_t kept;
};

void proxy_init(struct proxy_parser *p);

/*
 * Feeds len bytes (the next bytes of the connection).  Sets *used to the
 * bytes of data that belong to the header: all of them for PROXY_AGAIN, at
 * most len for PROXY_DONE (the rest is the session's), unspecified for
 * PROXY_BAD.  On PROXY_DONE *out is filled.  After DONE or BAD the parser
 * must be re-initialised before reuse.  Errors are final: once BAD,
 * further input cannot make the header valid.
 */
enum proxy_status proxy_parse(struct proxy_parser *p, const uint8_t *data,
                              size_t len, size_t *used,
                              struct proxy_result *out);

/*
 * Parses an IPv4 dotted quad ("192.0.2.1": four decimal octets, no
 * leading zeros) into 4 bytes, or an IPv6 address (RFC 4291 section 2.2,
 * "::" compression and a trailing dotted quad allowed) into 16 bytes.
 * s is n bytes, not NUL-terminated.  Returns 0, or -1 when malformed.
 */
int proxy_parse_ipv4(const char *s, size_t n, uint8_t out[4]);
int proxy_parse_ipv6(const char *s, size_t n, uint8_t out[16]);

#endif
