/*
 * fuzz_smtp_client: the outbound session machine (proto/smtp_client.h)
 * driven by fuzzed server bytes, fed in chunks split at fuzzed points.
 *
 * Input: byte 0 session parameters (TLS policy, implicit TLS, credentials,
 * max_rcpt), byte 1 transaction flags (8-bit, SMTPUTF8, 2 or 3 recipients,
 * RET, ENVID, NOTIFY/ORCPT, fuzzed last address), byte 2 chunk seed, byte
 * 3 message size; with the fuzzed-address flag the next byte gives a
 * length and that many bytes are the last recipient's address; the rest
 * is what the server sends.
 *
 * The driver plays the caller of smtp_client.h: on READY it starts a
 * transaction (twice), then quits; BODY is answered with body_done,
 * TLS_WANTED with tls_done; the output is taken whole after every call.
 *
 * Invariants:
 *  - consumed <= len; when feed returns 0 it consumed everything;
 *  - a bounded number of feed calls (no event loop without progress);
 *  - every recipient gets at most one RCPT event, and exactly one by the
 *    READY that ends its transaction (or by CLOSED); events of a
 *    transaction only while one is open; index within nrcpt;
 *  - after FAILED or CLOSED no further event, feeding consumes and does
 *    nothing, start_tx is refused, the output grows by QUIT at most;
 *  - a loop (the server names self_name) ends the session before any
 *    transaction, with a local 554 5.4.6;
 *  - AUTH uses the configured mechanism (byte 3's low bits): XOAUTH2's
 *    initial response is exactly the expected bytes, and its one empty
 *    line only follows it; TOKEN failures only with XOAUTH2;
 *  - TLS_WANTED only with leftover 0 (otherwise FAILED), and not when
 *    already in TLS;
 *  - start_tx refuses (-EINVAL) exactly the addresses with control
 *    characters, '<' or '>';
 *  - the output is only whole CRLF-terminated command lines with no CR,
 *    LF or NUL inside, each a known command; a MAIL or RCPT line carries
 *    exactly the tx's sender / one of its recipients between '<' and '>',
 *    followed only by known parameters, so no address reaches the wire
 *    outside its own command; each recipient's RCPT goes out at most once
 *    per transaction.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/dsn.h"
#include "proto/smtp_client.h"

#define CHECK(x)                                                               \
  do {                                                                         \
    if (!(x)) {                                                                \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__,     \
              #x);                                                             \
      abort();                                                                 \
    }                                                                          \
  } while (0)

#define NRCPT_MAX 3
#define ADDR_MAX 32

struct drv {
  struct smtp_client *c;
  struct smtp_cli_tx tx;
  struct smtp_cli_rcpt rcpts[NRCPT_MAX];
  char fuzz_addr[ADDR_MAX + 1];
  int fuzz_addr_bad; /* it has a character start_tx must refuse */
  int use_fuzz_addr;
  unsigned txflags;
  uint64_t size;
  int in_tx, ntx, done;
  int rcpt_events[NRCPT_MAX];
  int rcpt_cmds[NRCPT_MAX];
  int tls_auth_allowed;
  size_t out_after_done;
  enum smtp_cli_auth mech;
  int xo_sent, xo_empty;
};

/* base64("user=user@client.test\x01auth=Bearer secret pass\x01\x01") */
#define XO_IR "dXNlcj11c2VyQGNsaWVudC50ZXN0AWF1dGg9QmVhcmVyIHNlY3JldCBwYXNzAQE="

static int starts(const char *s, size_t n, const char *p) {
  size_t l = strlen(p);
  return n >= l && memcmp(s, p, l) == 0;
}

static int is_b64(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
          (ch >= '0' && ch <= '9') || ch == '+' || ch == '/' || ch == '='))
      return 0;
  }
  return 1;
}

/* s[0..n) is " KEY=value" parameters with values from the allowed set. */
static int params_ok(const char *s, size_t n) {
  static const char *const ok[] = {
      " SIZE=",    " BODY=8BITMIME", " SMTPUTF8", " RET=FULL",
      " RET=HDRS", " ENVID=",        " NOTIFY=",  " ORCPT=",
  };
  size_t i = 0;
  while (i < n) {
    size_t k;
    for (k = 0; k < sizeof(ok) / sizeof(ok[0]); k++)
      if (starts(s + i, n - i, ok[k]))
        break;
    if (k == sizeof(ok) / sizeof(ok[0]))
      return 0;
    i += strlen(ok[k]);
    /* the value runs to the next SP; it may not hold '<', '>' or SP */
    while (i < n && s[i] != ' ') {
      if (s[i] == '<' || s[i] == '>')
        return 0;
      i++;
    }
  }
  return 1;
}

static void check_line(struct drv *d, const char *s, size_t n) {
  if (starts(s, n, "MAIL FROM:<")) {
    CHECK(d->in_tx);
    size_t l = strlen(d->tx.sender);
    CHECK(n >= 11 + l + 1 && memcmp(s + 11, d->tx.sender, l) == 0 &&
          s[11 + l] == '>');
    CHECK(params_ok(s + 12 + l, n - 12 - l));
    return;
  }
  if (starts(s, n, "RCPT TO:<")) {
    CHECK(d->in_tx);
    for (size_t i = 0; i < d->tx.nrcpt; i++) {
      const char *a = d->tx.rcpts[i].addr;
      size_t l = strlen(a);
      if (n >= 9 + l + 1 && memcmp(s + 9, a, l) == 0 && s[9 + l] == '>' &&
          params_ok(s + 10 + l, n - 10 - l)) {
        d->rcpt_cmds[i]++;
        CHECK(d->rcpt_cmds[i] == 1);
        return;
      }
    }
    CHECK(!"RCPT line without a recipient of the transaction");
  }
  if (starts(s, n, "EHLO ") || starts(s, n, "HELO ")) {
    CHECK(n == 5 + strlen("client.test") &&
          memcmp(s + 5, "client.test", n - 5) == 0);
    return;
  }
  if (starts(s, n, "AUTH PLAIN ")) {
    CHECK(d->mech == SMTP_CLI_AUTH_AUTO || d->mech == SMTP_CLI_AUTH_PLAIN);
    CHECK(is_b64(s + 11, n - 11));
    return;
  }
  if (starts(s, n, "AUTH XOAUTH2 ")) {
    /* Exactly the initial response for the session's user and token. */
    CHECK(d->mech == SMTP_CLI_AUTH_XOAUTH2);
    CHECK(n - 13 == strlen(XO_IR) && memcmp(s + 13, XO_IR, n - 13) == 0);
    d->xo_sent++;
    return;
  }
  if (n == 0) {
    /* Only as the answer to XOAUTH2's error challenge, once. */
    CHECK(d->xo_sent == 1 && ++d->xo_empty == 1);
    return;
  }
  if ((n == 8 && starts(s, n, "STARTTLS")) ||
      (n == 10 && starts(s, n, "AUTH LOGIN") &&
       (d->mech == SMTP_CLI_AUTH_AUTO || d->mech == SMTP_CLI_AUTH_LOGIN)) ||
      (n == 4 && (starts(s, n, "DATA") || starts(s, n, "RSET") ||
                  starts(s, n, "QUIT"))) ||
      (n == 1 && s[0] == '.'))
    return;
  /* AUTH LOGIN user / password lines */
  CHECK(n > 0 && is_b64(s, n));
}

/* Validates the pending output and takes all of it. */
static void take_output(struct drv *d) {
  size_t n;
  const char *o = smtp_client_output(d->c, &n);
  if (d->done) {
    d->out_after_done += n;
    CHECK(d->out_after_done <= 6);
  }
  size_t i = 0;
  while (i < n) {
    const char *e = memchr(o + i, '\n', n - i);
    CHECK(e != NULL && e > o + i && e[-1] == '\r');
    size_t len = (size_t)(e - 1 - (o + i));
    CHECK(memchr(o + i, '\r', len) == NULL);
    CHECK(memchr(o + i, '\0', len) == NULL);
    check_line(d, o + i, len);
    i = (size_t)(e - o) + 1;
  }
  smtp_client_output_done(d->c, n);
}

static int bad_addr(const char *s) {
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch < 0x20 || ch == 0x7f || ch == '<' || ch == '>')
      return 1;
  }
  return 0;
}

static void start_tx(struct drv *d) {
  static const char *const addrs[NRCPT_MAX] = {
      "rcpt-one@a.test", "rcpt-two@b.test", "rcpt-three@c.test"};
  unsigned f = d->txflags;
  memset(d->rcpts, 0, sizeof(d->rcpts));
  size_t nr = (f & 4) ? 3 : 2;
  for (size_t i = 0; i < nr; i++) {
    d->rcpts[i].addr = addrs[i];
    if (f & 0x40) {
      d->rcpts[i].notify = i == 0   ? DSN_NOTIFY_NEVER
                           : i == 1 ? DSN_NOTIFY_SUCCESS | DSN_NOTIFY_FAILURE
                                    : DSN_NOTIFY_DELAY;
      d->rcpts[i].orcpt = "rfc822;orig+2Bx@a.test";
    }
  }
  if (d->use_fuzz_addr && d->ntx == 0)
    d->rcpts[nr - 1].addr = d->fuzz_addr;
  struct smtp_cli_tx tx = {
      .sender = (d->ntx & 1) ? "" : "sender@s.test",
      .size = d->size,
      .ret = (f >> 3) & 3,
      .envid = (f & 0x20) ? "ENV-42" : NULL,
      .body_8bit = !!(f & 1),
      .smtputf8 = !!(f & 2),
      .rcpts = d->rcpts,
      .nrcpt = nr,
  };
  d->tx = tx;
  d->ntx++;
  int rc = smtp_client_start_tx(d->c, &d->tx);
  if (d->rcpts[nr - 1].addr == d->fuzz_addr) {
    CHECK(rc == (d->fuzz_addr_bad ? -EINVAL : 0));
    if (rc == -EINVAL) {
      d->rcpts[nr - 1].addr = addrs[nr - 1];
      rc = smtp_client_start_tx(d->c, &d->tx);
    }
  }
  CHECK(rc == 0);
  d->in_tx = 1;
  memset(d->rcpt_events, 0, sizeof(d->rcpt_events));
  memset(d->rcpt_cmds, 0, sizeof(d->rcpt_cmds));
  /* A second start is refused while this one runs. */
  CHECK(smtp_client_start_tx(d->c, &d->tx) == -EBUSY);
}

static void all_reported(struct drv *d) {
  for (size_t i = 0; i < d->tx.nrcpt; i++)
    CHECK(d->rcpt_events[i] == 1);
}

static void on_event(struct drv *d, const struct smtp_cli_event *ev) {
  CHECK(!d->done);
  switch (ev->type) {
  case SMTP_CLI_EV_READY:
    CHECK(smtp_client_stage(d->c) == SMTP_CLI_STAGE_IDLE);
    if (d->in_tx) {
      all_reported(d);
      d->in_tx = 0;
    }
    if (d->ntx < 2)
      start_tx(d);
    else
      smtp_client_quit(d->c);
    break;
  case SMTP_CLI_EV_RCPT:
    CHECK(d->in_tx);
    CHECK(ev->rcpt < d->tx.nrcpt);
    CHECK(++d->rcpt_events[ev->rcpt] == 1);
    CHECK(ev->outcome >= SMTP_CLI_DELIVERED && ev->outcome <= SMTP_CLI_NEXT_TX);
    CHECK(ev->reply != NULL);
    CHECK(ev->reply->code >= 200 && ev->reply->code <= 599);
    if (ev->outcome == SMTP_CLI_DELIVERED)
      CHECK(ev->reply->code / 100 == 2 && !ev->local);
    break;
  case SMTP_CLI_EV_BODY:
    CHECK(d->in_tx);
    smtp_client_body_done(d->c);
    break;
  case SMTP_CLI_EV_TLS_WANTED:
    CHECK(ev->leftover == 0);
    CHECK(!smtp_client_in_tls(d->c));
    smtp_client_tls_done(d->c, d->tls_auth_allowed);
    CHECK(smtp_client_in_tls(d->c));
    break;
  case SMTP_CLI_EV_FAILED:
    CHECK(ev->fail >= SMTP_CLI_FAIL_GREETING && ev->fail <= SMTP_CLI_FAIL_LOOP);
    CHECK(ev->reply != NULL);
    /* A loop is decided here, before any transaction, with 554 5.4.6. */
    if (ev->fail == SMTP_CLI_FAIL_TOKEN)
      CHECK(d->mech == SMTP_CLI_AUTH_XOAUTH2 && d->xo_sent == 1 && !ev->local &&
            ev->reply->code / 100 == 5);
    if (ev->fail == SMTP_CLI_FAIL_LOOP)
      CHECK(ev->local && ev->reply->code == 554 &&
            strcmp(ev->reply->esc, "5.4.6") == 0 && d->ntx == 0);
    CHECK(smtp_client_stage(d->c) == SMTP_CLI_STAGE_DONE);
    d->done = 1;
    break;
  case SMTP_CLI_EV_CLOSED:
    CHECK(!d->in_tx);
    CHECK(smtp_client_stage(d->c) == SMTP_CLI_STAGE_DONE);
    d->done = 1;
    break;
  default:
    CHECK(!"unknown event");
  }
}

/* Undefined behaviour is a finding, not a warning. */
const char *__ubsan_default_options(void);
const char *__ubsan_default_options(void) {
  return "halt_on_error=1:print_stacktrace=1";
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 4)
    return 0;
  unsigned sess = data[0];
  struct drv d;
  memset(&d, 0, sizeof(d));
  d.txflags = data[1];
  uint32_t x = data[2] * 2654435761u + 3;
  d.size = (uint64_t)data[3] * 1000;
  d.mech = (enum smtp_cli_auth)(data[3] & 3); /* AUTH mechanism */
  data += 4, size -= 4;
  if (d.txflags & 0x80) {
    if (size < 1)
      return 0;
    size_t l = data[0] % (ADDR_MAX + 1);
    data++, size--;
    if (l > size)
      l = size;
    memcpy(d.fuzz_addr, data, l);
    d.fuzz_addr[l] = '\0'; /* a NUL inside just ends it early */
    d.fuzz_addr_bad = bad_addr(d.fuzz_addr);
    /* the same text as a fixed address would make the RCPT lines ambiguous */
    d.use_fuzz_addr = strstr(d.fuzz_addr, "rcpt-") == NULL;
    data += l, size -= l;
  }
  static const enum smtp_cli_tls tls[] = {
      SMTP_CLI_TLS_NONE, SMTP_CLI_TLS_OPPORTUNISTIC, SMTP_CLI_TLS_REQUIRED,
      SMTP_CLI_TLS_OPPORTUNISTIC};
  struct smtp_cli_params p = {
      .helo = "client.test",
      .tls = tls[sess & 3],
      .in_tls = !!(sess & 4),
      .auth_user = (sess & 8) ? "user@client.test" : NULL,
      .auth_pass = (sess & 8) ? "secret pass" : NULL,
      .auth_allowed = !!(sess & 16),
      .max_rcpt = (sess >> 5) & 3,
      .self_name = "self.test",
      .auth_mech = d.mech,
  };
  d.tls_auth_allowed = !!(sess & 0x80);
  d.c = smtp_client_new(&p);
  CHECK(d.c != NULL);
  CHECK(smtp_client_in_tls(d.c) == p.in_tls);
  take_output(&d);

  const char *in = (const char *)data;
  size_t off = 0, calls = 0;
  for (;;) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    size_t c = (x & 1) ? size - off : (x >> 1) % 24;
    if (c > size - off)
      c = size - off;
    size_t lim = off + c;
    for (;;) {
      struct smtp_cli_event ev;
      size_t used = (size_t)-1;
      CHECK(++calls < 100000);
      int r = smtp_client_feed(d.c, in + off, lim - off, &used, &ev);
      CHECK(r == 0 || r == 1);
      CHECK(used <= lim - off);
      off += used;
      take_output(&d);
      if (r == 0) {
        CHECK(off == lim);
        break;
      }
      CHECK(ev.type != SMTP_CLI_EV_NONE);
      on_event(&d, &ev);
      take_output(&d);
    }
    if (off == size)
      break;
  }

  if (d.done) {
    struct smtp_cli_event ev;
    size_t used;
    CHECK(smtp_client_feed(d.c, "250 ok\r\n", 8, &used, &ev) == 0);
    CHECK(used == 8);
    CHECK(smtp_client_start_tx(d.c, &d.tx) == -EBUSY);
    smtp_client_quit(d.c);
    smtp_client_body_done(d.c);
    smtp_client_tls_done(d.c, 1);
    CHECK(smtp_client_feed(d.c, NULL, 0, &used, &ev) == 0);
    take_output(&d);
    CHECK(smtp_client_timeout_ms(d.c) == 0);
  }
  smtp_client_free(d.c);
  return 0;
}
