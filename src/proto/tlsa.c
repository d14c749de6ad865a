/*
 * tlsa: TLSA RDATA parsing and SMTP usability (see tlsa.h).  Pure.
 */
#include "proto/tlsa.h"

#include <stdio.h>
#include <string.h>

enum tlsa_check tlsa_parse(const uint8_t *rdata, size_t len,
                           struct tlsa_rec *out) {
  memset(out, 0, sizeof *out);
  if (!rdata || len < 4)
    return TLSA_MALFORMED; /* RFC 6698 §2.1: 3 octets and some data */
  out->usage = rdata[0];
  out->selector = rdata[1];
  out->mtype = rdata[2];
  out->data = rdata + 3;
  out->len = len - 3;
  if (out->mtype == TLSA_MATCH_SHA256 && out->len != 32)
    return TLSA_MALFORMED;
  if (out->mtype == TLSA_MATCH_SHA512 && out->len != 64)
    return TLSA_MALFORMED;
  /* RFC 7672 §3.1.3: PKIX-TA(0) and PKIX-EE(1) are not for SMTP. */
  if (out->usage != TLSA_USAGE_DANE_TA && out->usage != TLSA_USAGE_DANE_EE)
    return TLSA_UNUSABLE;
  if (out->selector > TLSA_SELECTOR_SPKI || out->mtype > TLSA_MATCH_SHA512)
    return TLSA_UNUSABLE;
  return TLSA_USABLE;
}

char *tlsa_format(const struct tlsa_rec *r, char *out, size_t cap) {
  static const char hex[] = "0123456789abcdef";
  if (cap == 0)
    return out;
  int n = snprintf(out, cap, "%u %u %u ", r->usage, r->selector, r->mtype);
  size_t o = n < 0 ? 0 : (size_t)n;
  for (size_t i = 0; i < r->len && i < 16 && o + 3 < cap; i++) {
    out[o++] = hex[r->data[i] >> 4];
    out[o++] = hex[r->data[i] & 15];
  }
  if (r->len > 16 && o + 4 < cap) {
    memcpy(out + o, "...", 3);
    o += 3;
  }
  out[o < cap ? o : cap - 1] = '\0';
  return out;
}

const char *tlsa_check_name(enum tlsa_check c) {
  switch (c) {
  case TLSA_USABLE:
    return "usable";
  case TLSA_UNUSABLE:
    return "unusable";
  case TLSA_MALFORMED:
    return "malformed";
  }
  return "?";
}
