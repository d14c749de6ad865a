/*
 * libFuzzer target for proto/smtp_parse.  The first byte picks the
 * parser.  Invariants: no crash, results NUL-terminated within their
 * buffers, a parsed path has no control characters, xtext round-trips.
 */
#include "proto/smtp_parse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void check_addr(const struct smtp_path *p) {
  if (strlen(p->addr) != p->len || p->len > SMTP_ADDR_MAX)
    abort();
  for (size_t i = 0; i < p->len; i++)
    if ((unsigned char)p->addr[i] < 32 || p->addr[i] == 127)
      abort();
  if (p->is_null && p->len != 0)
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  unsigned mode = data[0] % 6;
  const char *in = (const char *)data + 1;
  size_t n = size - 1;
  struct smtp_path p;
  switch (mode) {
  case 0: {
    const char *args;
    size_t an;
    smtp_parse_verb(in, n, &args, &an);
    if (args < in || args + an > in + n)
      abort();
    break;
  }
  case 1: {
    size_t end = 0;
    if (smtp_parse_path(in, n, SMTP_PATH_ALLOW_NULL, &p, &end) ==
        SMTP_PARSE_OK) {
      if (end > n)
        abort();
      check_addr(&p);
    }
    break;
  }
  case 2: {
    struct smtp_mail_params mp;
    if (smtp_parse_mail(in, n, &p, &mp) == SMTP_PARSE_OK) {
      check_addr(&p);
      if (mp.has_envid && strlen(mp.envid) > SMTP_ENVID_MAX)
        abort();
    }
    break;
  }
  case 3: {
    struct smtp_rcpt_params rp;
    if (smtp_parse_rcpt(in, n, SMTP_PATH_NEED_DOMAIN, &p, &rp) ==
        SMTP_PARSE_OK) {
      check_addr(&p);
      if (p.is_null || p.at >= p.len)
        abort();
      if ((rp.notify & DSN_NOTIFY_NEVER) && rp.notify != DSN_NOTIFY_NEVER)
        abort();
    }
    break;
  }
  case 4: {
    char out[600], enc[2000], back[600];
    int k = smtp_xtext_decode(out, sizeof(out), in, n);
    if (k >= 0) {
      if ((size_t)k >= sizeof(out) || out[k] != '\0')
        abort();
      int e = smtp_xtext_encode(enc, sizeof(enc), out, (size_t)k);
      if (e < 0)
        abort();
      int b = smtp_xtext_decode(back, sizeof(back), enc, (size_t)e);
      if (b != k || memcmp(back, out, (size_t)k) != 0)
        abort();
    }
    break;
  }
  case 5: {
    unsigned char out[1024];
    int k = smtp_base64_decode(out, sizeof(out), in, n);
    if (k > (int)sizeof(out) || (k >= 0 && (size_t)k > n))
      abort();
    break;
  }
  }
  return 0;
}
