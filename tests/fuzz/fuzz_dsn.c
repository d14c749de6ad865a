/*
 * fuzz_dsn: the bounce builder on arbitrary input.  The input is split
 * into a sender, a diagnostic (a peer's reply text) and the original
 * message (any bytes, NULs included).  Invariants: a bounce is built; its
 * size is bounded by DSN_QUOTE_MAX plus a fixed amount whatever the
 * message size; its top header holds only our own fields (nothing from
 * the input can inject one); RET=FULL returns the whole message exactly
 * when it fits under the cap and the recipient failed (not for a delay
 * warning or a success notice).
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/dsn.h"

static const char *take(const uint8_t **p, size_t *n, char *buf, size_t cap) {
  size_t k = *n ? (size_t)(**p) % cap : 0;
  if (*n)
    (*p)++, (*n)--;
  if (k > *n)
    k = *n;
  memcpy(buf, *p, k);
  buf[k] = '\0';
  *p += k;
  *n -= k;
  return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char sender[256], diag[256], status[16];
  const uint8_t *p = data;
  size_t n = size;
  int ret = n ? (p[0] & 1 ? DSN_RET_FULL : DSN_RET_HDRS) : DSN_RET_HDRS;
  take(&p, &n, sender, sizeof sender);
  take(&p, &n, diag, sizeof diag);
  take(&p, &n, status, sizeof status);
  /* The rest is the message; repeated to cross the cap now and then. */
  size_t reps = size && data[size - 1] == 'R' ? 40 : 1;
  size_t mlen = n * reps;
  char *msg = malloc(mlen + 1);
  if (!msg)
    return 0;
  for (size_t i = 0; i < reps; i++)
    memcpy(msg + i * n, p, n);
  struct dsn_rcpt rc = {.addr = diag,
                        .status = status,
                        .diag = diag,
                        .remote_mta = sender,
                        .last_attempt = 1,
                        /* the three kinds: failed, delayed, relayed */
                        .delayed = size > 1 && data[size - 2] == 'D',
                        .relayed = size > 1 && data[size - 2] == 'S'};
  struct dsn_report r = {.hostname = "relay.test",
                         .sender = sender,
                         .envid = diag,
                         .ret = ret,
                         .arrival = 1,
                         .now = 2,
                         .id = "Q1",
                         .msg = msg,
                         .msg_len = mlen,
                         .rcpts = &rc,
                         .nrcpt = 1};
  size_t len = 0;
  char *b = dsn_build(&r, &len);
  assert(b != NULL);
  assert(len <= DSN_QUOTE_MAX + 8192);
  /* The top header: only our fields and their continuations. */
  static const char *const ours[] = {
      "From: ",         "To: ",           "Subject: ",
      "Date: ",         "Message-ID: ",   "Auto-Submitted: ",
      "MIME-Version: ", "Content-Type: ", "\t"};
  size_t i = 0;
  while (i < len) {
    if (i + 1 < len && b[i] == '\r' && b[i + 1] == '\n')
      break; /* the empty line */
    int ok = 0;
    for (size_t k = 0; k < sizeof ours / sizeof ours[0]; k++)
      ok |= len - i >= strlen(ours[k]) &&
            memcmp(b + i, ours[k], strlen(ours[k])) == 0;
    assert(ok);
    const char *nl = memchr(b + i, '\n', len - i);
    assert(nl);
    i = (size_t)(nl - b) + 1;
  }
  /* The third part's type, found by its boundary (which the message
   * cannot contain). */
  const char *bd = memmem(b, len, "\tboundary=\"", 11);
  assert(bd);
  bd += 11;
  const char *be = memchr(bd, '"', len - (size_t)(bd - b));
  assert(be && be - bd < 100);
  char needle[160];
  int nl = snprintf(needle, sizeof needle, "--%.*s\r\nContent-Type: %s",
                    (int)(be - bd), bd, "message/rfc822");
  int full = memmem(b, len, needle, (size_t)nl) != NULL;
  /* Content is returned for a failure only (RFC 3461 §4.3): a delay
   * warning or a success notice quotes the header whatever RET says. */
  assert(full == (ret == DSN_RET_FULL && mlen <= DSN_QUOTE_MAX && !rc.delayed &&
                  !rc.relayed));
  free(b);
  free(msg);
  return 0;
}
