/*
 * smtp_client: the outbound SMTP session machine.  See smtp_client.h for
 * the contract with the caller.  Owns its struct and output buffer; never
 * does I/O, reads a clock or logs: it returns events.
 *
 * Shape (OpenSMTPD smtp_client.c): smtp_client_enter() is the one setter
 * of the state and performs the action of entering it (write a command or
 * raise an event); smtp_client_response() chooses the next state from the
 * reply that just completed.  Exits: fail_abort() (drop the connection)
 * and fail_quit() (write QUIT, then drop).
 */
#include "proto/smtp_client.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/text.h"

/* Lengths we accept from the configuration (our own EHLO name, creds). */
#define HELO_MAX 255
#define CRED_MAX 1024
/* An OAuth2 access token (Microsoft's are about 2-3 KB); with the user,
 * its base64 stays under the 12288-octet AUTH line servers accept
 * (RFC 4954 §4). */
#define TOKEN_MAX 8192
/* Output room for any single non-transaction command (AUTH PLAIN is the
 * longest: base64 of two creds). */
#define OUT_BASE 4096
/* Per command upper bound besides the variable strings. */
#define CMD_OVERHEAD 128

enum state {
  ST_GREETING,
  ST_EHLO,
  ST_HELO,
  ST_STARTTLS,
  ST_TLS_WAIT,
  ST_AUTH_PLAIN,
  ST_AUTH_LOGIN,
  ST_AUTH_LOGIN_USER,
  ST_AUTH_LOGIN_PASS,
  ST_AUTH_XOAUTH2,
  ST_AUTH_XOAUTH2_ERR,
  ST_READY,
  ST_MAIL,
  ST_RCPT,
  ST_DATA,
  ST_BODY,
  ST_DATA_END,
  ST_RSET,
  ST_QUIT,
  ST_DONE,
};

static const char *const strstate[] = {
    [ST_GREETING] = "greeting",
    [ST_EHLO] = "ehlo",
    [ST_HELO] = "helo",
    [ST_STARTTLS] = "starttls",
    [ST_TLS_WAIT] = "tls_wait",
    [ST_AUTH_PLAIN] = "auth_plain",
    [ST_AUTH_LOGIN] = "auth_login",
    [ST_AUTH_LOGIN_USER] = "auth_login_user",
    [ST_AUTH_LOGIN_PASS] = "auth_login_pass",
    [ST_AUTH_XOAUTH2] = "auth_xoauth2",
    [ST_AUTH_XOAUTH2_ERR] = "auth_xoauth2_err",
    [ST_READY] = "ready",
    [ST_MAIL] = "mail",
    [ST_RCPT] = "rcpt",
    [ST_DATA] = "data",
    [ST_BODY] = "body",
    [ST_DATA_END] = "data_end",
    [ST_RSET] = "rset",
    [ST_QUIT] = "quit",
    [ST_DONE] = "done",
};

/* Per-recipient state in a transaction; REPORTED is or'ed in. */
enum {
  R_PENDING = 0,
  R_ACCEPTED = 0x10,
  R_REPORTED = 0x80,
};

struct smtp_client {
  struct smtp_cli_params p;
  enum state state;
  int in_tls;
  struct smtp_cli_caps caps;

  struct reply_parser rp;
  struct reply local;      /* made-up replies for local decisions */
  const struct reply *cur; /* reply that decides the current events */
  int cur_local;

  char *out;
  size_t out_len, out_cap;
  int oom; /* an output could not be stored */

  /* Event waiting to be returned (besides recipient outcomes). */
  enum smtp_cli_event_type pending;
  enum smtp_cli_fail fail;
  size_t leftover;

  /* The transaction. */
  int in_tx;
  struct smtp_cli_tx tx;
  unsigned char *rst; /* per recipient: R_* or an smtp_cli_outcome */
  size_t nsend;       /* recipients tried here: min(nrcpt, max_rcpt) */
  size_t rcpt_i;      /* next RCPT whose reply we expect */
  size_t naccepted;
  int pipelined;
  int mail_ok;
  int tx_open;      /* the server holds MAIL state: RSET before reuse */
  int discard_data; /* 354 with no recipient: "." sent, ignore the end */
};

static void smtp_client_enter(struct smtp_client *c, enum state s);

/* --- output ----------------------------------------------------------- */

static int out_reserve(struct smtp_client *c, size_t n) {
  if (c->out_len + n <= c->out_cap)
    return 0;
  size_t cap = c->out_cap ? c->out_cap : OUT_BASE;
  while (cap < c->out_len + n)
    cap *= 2;
  char *p = realloc(c->out, cap);
  if (!p)
    return -ENOMEM;
  c->out = p;
  c->out_cap = cap;
  return 0;
}

/*
 * Appends a command.  Room is normally reserved beforehand (new,
 * start_tx); if it is not and growing fails, the session is marked out of
 * memory and ends at the next smtp_client_feed().
 */
__attribute__((format(printf, 2, 3))) static void
out_fmt(struct smtp_client *c, const char *fmt, ...) {
  va_list ap, ap2;
  va_start(ap, fmt);
  va_copy(ap2, ap);
  int n = vsnprintf(c->out + c->out_len, c->out_cap - c->out_len, fmt, ap);
  va_end(ap);
  if (n >= 0 && (size_t)n >= c->out_cap - c->out_len) {
    if (out_reserve(c, (size_t)n + 1) == 0)
      n = vsnprintf(c->out + c->out_len, c->out_cap - c->out_len, fmt, ap2);
    else
      n = -1;
  }
  va_end(ap2);
  if (n < 0) {
    c->oom = 1;
    return;
  }
  c->out_len += (size_t)n;
}

static void out_str(struct smtp_client *c, const char *s) {
  out_fmt(c, "%s", s);
}

static const char b64chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Appends base64 of in[0..n) (RFC 4648). */
static void out_b64(struct smtp_client *c, const unsigned char *in, size_t n) {
  char q[5];
  q[4] = '\0';
  for (size_t i = 0; i < n; i += 3) {
    unsigned v = (unsigned)in[i] << 16;
    if (i + 1 < n)
      v |= (unsigned)in[i + 1] << 8;
    if (i + 2 < n)
      v |= in[i + 2];
    q[0] = b64chars[(v >> 18) & 63];
    q[1] = b64chars[(v >> 12) & 63];
    q[2] = i + 1 < n ? b64chars[(v >> 6) & 63] : '=';
    q[3] = i + 2 < n ? b64chars[v & 63] : '=';
    out_str(c, q);
  }
}

/* --- events and exits ------------------------------------------------- */

static void set_local(struct smtp_client *c, int code, const char *esc,
                      const char *text) {
  reply_set(&c->local, code, esc, text);
  c->cur = &c->local;
  c->cur_local = 1;
}

/* Abort: drop the connection without another word. */
static void fail_abort(struct smtp_client *c, enum smtp_cli_fail f) {
  c->out_len = 0;
  c->fail = f;
  c->pending = SMTP_CLI_EV_FAILED;
  smtp_client_enter(c, ST_DONE);
}

/* Quit: say QUIT (its answer is not awaited), then drop. */
static void fail_quit(struct smtp_client *c, enum smtp_cli_fail f) {
  out_str(c, "QUIT\r\n");
  c->fail = f;
  c->pending = SMTP_CLI_EV_FAILED;
  smtp_client_enter(c, ST_DONE);
}

/* Gives every recipient still without a result the outcome o. */
static void rcpt_all(struct smtp_client *c, unsigned from_mask,
                     enum smtp_cli_outcome o) {
  for (size_t i = 0; i < c->nsend; i++)
    if (c->rst[i] == from_mask)
      c->rst[i] = (unsigned char)o;
}

static enum smtp_cli_outcome outcome_of(int code) {
  return code / 100 == 5 ? SMTP_CLI_PERMFAIL : SMTP_CLI_TEMPFAIL;
}

/* Pops the next event, recipient outcomes first. */
static int take_event(struct smtp_client *c, struct smtp_cli_event *ev) {
  if (c->in_tx) {
    for (size_t i = 0; i < c->tx.nrcpt; i++) {
      unsigned s = c->rst[i];
      if (s & R_REPORTED || s < SMTP_CLI_DELIVERED || s > SMTP_CLI_NEXT_TX)
        continue;
      c->rst[i] |= R_REPORTED;
      ev->type = SMTP_CLI_EV_RCPT;
      ev->rcpt = i;
      ev->outcome = (enum smtp_cli_outcome)s;
      ev->reply = c->cur;
      ev->local = c->cur_local;
      return 1;
    }
  }
  if (c->pending == SMTP_CLI_EV_NONE)
    return 0;
  ev->type = c->pending;
  c->pending = SMTP_CLI_EV_NONE;
  if (ev->type == SMTP_CLI_EV_FAILED) {
    ev->fail = c->fail;
    ev->reply = c->cur;
    ev->local = c->cur_local;
  }
  if (ev->type == SMTP_CLI_EV_TLS_WANTED || ev->type == SMTP_CLI_EV_FAILED)
    ev->leftover = c->leftover;
  /* The transaction's events are all out: forget it. */
  if (ev->type == SMTP_CLI_EV_READY || ev->type == SMTP_CLI_EV_FAILED) {
    if (ev->type == SMTP_CLI_EV_READY) {
      free(c->rst);
      c->rst = NULL;
      c->in_tx = 0;
    }
  }
  return 1;
}

/* --- EHLO ------------------------------------------------------------- */

static void parse_auth(struct smtp_cli_caps *k, const char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    while (i < n && (s[i] == ' ' || s[i] == '='))
      i++;
    size_t j = i;
    while (j < n && s[j] != ' ')
      j++;
    if (j - i == 5 && text_casecmp(s + i, "PLAIN", 5) == 0)
      k->auth_plain = 1;
    if (j - i == 5 && text_casecmp(s + i, "LOGIN", 5) == 0)
      k->auth_login = 1;
    if (j - i == 7 && text_casecmp(s + i, "XOAUTH2", 7) == 0)
      k->auth_xoauth2 = 1;
    i = j;
  }
}

static int kw(const char *s, size_t n, const char *k) {
  size_t kl = strlen(k);
  return n >= kl && text_casecmp(s, k, kl) == 0 &&
         (n == kl || s[kl] == ' ' || s[kl] == '=');
}

/* RFC 5321 §4.1.1.1: lines after the first are "keyword [params]". */
static void parse_ehlo(struct smtp_cli_caps *k, const struct reply *r) {
  const char *t = r->text, *end = r->text + r->text_len;
  const char *nl = memchr(t, '\n', r->text_len);
  memset(k, 0, sizeof(*k));
  k->esmtp = 1;
  while (nl && nl < end) {
    const char *line = nl + 1;
    nl = memchr(line, '\n', (size_t)(end - line));
    size_t n = (size_t)((nl ? nl : end) - line);
    if (kw(line, n, "PIPELINING"))
      k->pipelining = 1;
    else if (kw(line, n, "8BITMIME"))
      k->eightbitmime = 1;
    else if (kw(line, n, "SMTPUTF8"))
      k->smtputf8 = 1;
    else if (kw(line, n, "DSN"))
      k->dsn = 1;
    else if (kw(line, n, "XARRIVAL"))
      k->xarrival = 1;
    else if (kw(line, n, "STARTTLS"))
      k->starttls = 1;
    else if (kw(line, n, "AUTH"))
      parse_auth(k, line + 4, n - 4);
    else if (kw(line, n, "SIZE")) {
      uint64_t v = 0;
      k->size = 1;
      for (size_t i = 5; i < n && line[i] >= '0' && line[i] <= '9'; i++) {
        if (v > (UINT64_MAX - 9) / 10) {
          v = 0; /* absurd: treat as no limit */
          break;
        }
        v = v * 10 + (uint64_t)(line[i] - '0');
      }
      k->size_max = v;
    }
  }
}

/*
 * 1 when the reply's first line begins with our own name (CONTRACT §4:
 * the greeting's "220 NAME ..." or EHLO's "250-NAME ...").  Postfix does
 * the same in smtp_helo() ("mail for X loops back to myself"): an address
 * check cannot see a port forward or a NAT back to this relay.  A leading
 * enhanced status code (not expected there, but seen) is skipped.
 */
static int names_self(const struct smtp_client *c, const struct reply *r) {
  const char *self = c->p.self_name;
  if (!self || !*self)
    return 0;
  size_t sl = strlen(self);
  if (sl > 1 && self[sl - 1] == '.')
    sl--;
  const char *t = r->text;
  const char *nl = memchr(t, '\n', r->text_len);
  size_t n = nl ? (size_t)(nl - t) : r->text_len;
  size_t el = strlen(r->esc);
  if (el > 0 && n > el && memcmp(t, r->esc, el) == 0 && t[el] == ' ') {
    t += el + 1;
    n -= el + 1;
  }
  while (n > 0 && (*t == ' ' || *t == '\t'))
    t++, n--;
  size_t w = 0;
  while (w < n && t[w] != ' ' && t[w] != '\t' && t[w] != '\r')
    w++;
  if (w > 1 && t[w - 1] == '.')
    w--;
  return w == sl && text_casecmp(t, self, sl) == 0;
}

/* The server is this relay: end politely with the loop outcome. */
static void fail_loop(struct smtp_client *c) {
  char msg[HELO_MAX + 80];
  snprintf(msg, sizeof(msg),
           "mail loops back to myself: the server greets as %s, this "
           "relay's own name",
           c->p.self_name);
  set_local(c, 554, "5.4.6", msg);
  fail_quit(c, SMTP_CLI_FAIL_LOOP);
}

/* AUTH cannot be done as configured: a local 504, fail with AUTH. */
static void auth_unavailable(struct smtp_client *c, const char *why) {
  set_local(c, 504, "5.7.4", why);
  fail_quit(c, SMTP_CLI_FAIL_AUTH);
}

static int has_ctl(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s < 0x20 || *s == 0x7f)
      return 1;
  return 0;
}

/* After EHLO/HELO: STARTTLS, AUTH or ready (RFC 3207, RFC 4954). */
static void after_auth_check(struct smtp_client *c) {
  if (!c->p.auth_user) {
    smtp_client_enter(c, ST_READY);
  } else if (!c->p.auth_allowed) {
    set_local(c, 530, "5.7.0",
              "credentials not sent: connection not secure enough");
    fail_quit(c, SMTP_CLI_FAIL_AUTH);
  } else {
    const struct smtp_cli_caps *k = &c->caps;
    switch (c->p.auth_mech) {
    case SMTP_CLI_AUTH_AUTO:
      if (k->auth_plain)
        smtp_client_enter(c, ST_AUTH_PLAIN);
      else if (k->auth_login)
        smtp_client_enter(c, ST_AUTH_LOGIN);
      else
        auth_unavailable(c, "server offers no AUTH PLAIN or LOGIN");
      break;
    case SMTP_CLI_AUTH_PLAIN:
      if (k->auth_plain)
        smtp_client_enter(c, ST_AUTH_PLAIN);
      else
        auth_unavailable(c, "server does not offer AUTH PLAIN");
      break;
    case SMTP_CLI_AUTH_LOGIN:
      if (k->auth_login)
        smtp_client_enter(c, ST_AUTH_LOGIN);
      else
        auth_unavailable(c, "server does not offer AUTH LOGIN");
      break;
    case SMTP_CLI_AUTH_XOAUTH2:
      if (!k->auth_xoauth2)
        auth_unavailable(c, "server does not offer AUTH XOAUTH2");
      else if (has_ctl(c->p.auth_user) || has_ctl(c->p.auth_pass))
        /* \x01 separates the fields: a user or token holding it (or any
         * control octet) would add fields of its own. */
        auth_unavailable(c, "user or token has control characters");
      else
        smtp_client_enter(c, ST_AUTH_XOAUTH2);
      break;
    }
  }
}

static void after_hello(struct smtp_client *c) {
  if (!c->in_tls && c->p.tls != SMTP_CLI_TLS_NONE && c->caps.starttls) {
    smtp_client_enter(c, ST_STARTTLS);
  } else if (!c->in_tls && c->p.tls == SMTP_CLI_TLS_REQUIRED) {
    set_local(c, 530, "5.7.10", "TLS required but STARTTLS not offered");
    fail_quit(c, SMTP_CLI_FAIL_TLS);
  } else {
    after_auth_check(c);
  }
}

/* --- transaction commands ------------------------------------------- */

static void notify_str(char *out, size_t cap, unsigned n) {
  out[0] = '\0';
  if (n & DSN_NOTIFY_NEVER) {
    snprintf(out, cap, "NEVER");
    return;
  }
  static const struct {
    unsigned bit;
    const char *name;
  } names[] = {{DSN_NOTIFY_SUCCESS, "SUCCESS"},
               {DSN_NOTIFY_FAILURE, "FAILURE"},
               {DSN_NOTIFY_DELAY, "DELAY"}};
  for (size_t i = 0; i < 3; i++) {
    if (!(n & names[i].bit))
      continue;
    size_t l = strlen(out);
    snprintf(out + l, cap - l, "%s%s", l ? "," : "", names[i].name);
  }
}

static void write_mail(struct smtp_client *c) {
  const struct smtp_cli_tx *t = &c->tx;
  out_fmt(c, "MAIL FROM:<%s>", t->sender);
  if (c->caps.size)
    out_fmt(c, " SIZE=%llu", (unsigned long long)t->size);
  if (t->body_8bit && c->caps.eightbitmime)
    out_str(c, " BODY=8BITMIME");
  if (t->smtputf8 && c->caps.smtputf8)
    out_str(c, " SMTPUTF8");
  /* RFC 3461: DSN parameters only to a server that offers DSN. */
  if (c->caps.dsn && t->ret == DSN_RET_FULL)
    out_str(c, " RET=FULL");
  if (c->caps.dsn && t->ret == DSN_RET_HDRS)
    out_str(c, " RET=HDRS");
  if (c->caps.dsn && t->envid && *t->envid)
    out_fmt(c, " ENVID=%s", t->envid);
  if (c->caps.xarrival && t->arrival > 0 && t->arrival <= 100000000000LL)
    out_fmt(c, " XARRIVAL=%lld", (long long)t->arrival);
  out_str(c, "\r\n");
}

static void write_rcpt(struct smtp_client *c, size_t i) {
  const struct smtp_cli_rcpt *r = &c->tx.rcpts[i];
  char notify[64];
  out_fmt(c, "RCPT TO:<%s>", r->addr);
  if (c->caps.dsn && r->notify) {
    notify_str(notify, sizeof(notify), r->notify);
    out_fmt(c, " NOTIFY=%s", notify);
  }
  if (c->caps.dsn && r->orcpt && *r->orcpt)
    out_fmt(c, " ORCPT=%s", r->orcpt);
  out_str(c, "\r\n");
}

/* The transaction is over on our side: RSET when the server holds state. */
static void tx_end(struct smtp_client *c) {
  if (c->tx_open)
    smtp_client_enter(c, ST_RSET);
  else
    smtp_client_enter(c, ST_READY);
}

/* --- the two switches ----------------------------------------------- */

static void smtp_client_enter(struct smtp_client *c, enum state s) {
  c->state = s;
  switch (s) {
  case ST_GREETING:
    break;
  case ST_EHLO:
    memset(&c->caps, 0, sizeof(c->caps));
    out_fmt(c, "EHLO %s\r\n", c->p.helo);
    break;
  case ST_HELO:
    out_fmt(c, "HELO %s\r\n", c->p.helo);
    break;
  case ST_STARTTLS:
    out_str(c, "STARTTLS\r\n");
    break;
  case ST_TLS_WAIT:
    c->pending = SMTP_CLI_EV_TLS_WANTED;
    break;
  case ST_AUTH_PLAIN: {
    /* RFC 4616: authzid NUL authcid NUL passwd, as initial response. */
    unsigned char tmp[2 * CRED_MAX + 2];
    size_t u = strlen(c->p.auth_user), w = strlen(c->p.auth_pass);
    tmp[0] = '\0';
    memcpy(tmp + 1, c->p.auth_user, u);
    tmp[1 + u] = '\0';
    memcpy(tmp + 2 + u, c->p.auth_pass, w);
    out_str(c, "AUTH PLAIN ");
    out_b64(c, tmp, u + w + 2);
    out_str(c, "\r\n");
    memset(tmp, 0, sizeof(tmp));
    break;
  }
  case ST_AUTH_LOGIN:
    out_str(c, "AUTH LOGIN\r\n");
    break;
  case ST_AUTH_LOGIN_USER:
    out_b64(c, (const unsigned char *)c->p.auth_user, strlen(c->p.auth_user));
    out_str(c, "\r\n");
    break;
  case ST_AUTH_LOGIN_PASS:
    out_b64(c, (const unsigned char *)c->p.auth_pass, strlen(c->p.auth_pass));
    out_str(c, "\r\n");
    break;
  case ST_AUTH_XOAUTH2: {
    /* "user=" U ^A "auth=Bearer " T ^A ^A, base64, as the initial
     * response (Google's and Microsoft's XOAUTH2 SASL profile). */
    size_t u = strlen(c->p.auth_user), t = strlen(c->p.auth_pass);
    size_t n = 5 + u + 1 + 12 + t + 2;
    unsigned char *tmp = malloc(n);
    if (!tmp || out_reserve(c, 16 + (n + 2) / 3 * 4) < 0) {
      free(tmp);
      c->oom = 1;
      break;
    }
    memcpy(tmp, "user=", 5);
    memcpy(tmp + 5, c->p.auth_user, u);
    memcpy(tmp + 5 + u, "\001auth=Bearer ", 13);
    memcpy(tmp + 18 + u, c->p.auth_pass, t);
    memcpy(tmp + 18 + u + t, "\001\001", 2);
    out_str(c, "AUTH XOAUTH2 ");
    out_b64(c, tmp, n);
    out_str(c, "\r\n");
    memset(tmp, 0, n);
    free(tmp);
    break;
  }
  case ST_AUTH_XOAUTH2_ERR:
    /* The 334 carried the error (base64 JSON); the mechanism ends with an
     * empty response, and the server then says 535. */
    out_str(c, "\r\n");
    break;
  case ST_READY:
    c->tx_open = 0;
    c->pending = SMTP_CLI_EV_READY;
    break;
  case ST_MAIL:
    write_mail(c);
    /* RFC 2920: MAIL, the RCPTs and DATA go as one group; the replies
     * are matched in order. */
    if (c->pipelined) {
      for (size_t i = 0; i < c->nsend; i++)
        write_rcpt(c, i);
      out_str(c, "DATA\r\n");
    }
    break;
  case ST_RCPT:
    if (!c->pipelined)
      write_rcpt(c, c->rcpt_i);
    break;
  case ST_DATA:
    if (!c->pipelined)
      out_str(c, "DATA\r\n");
    break;
  case ST_BODY:
    c->pending = SMTP_CLI_EV_BODY;
    break;
  case ST_DATA_END:
    break;
  case ST_RSET:
    out_str(c, "RSET\r\n");
    break;
  case ST_QUIT:
    out_str(c, "QUIT\r\n");
    break;
  case ST_DONE:
    break;
  }
}

static void rcpt_reply(struct smtp_client *c, int code) {
  size_t i = c->rcpt_i;
  if (!c->mail_ok)
    return; /* already failed with MAIL; this is the 503 that follows */
  if (code / 100 == 2) {
    c->rst[i] = R_ACCEPTED;
    c->naccepted++;
  } else if (code == 452 && c->naccepted > 0) {
    /* RFC 5321 §4.5.3.1.10: too many recipients; the rest go in a
     * further transaction, not deferred. */
    c->rst[i] = SMTP_CLI_NEXT_TX;
  } else {
    c->rst[i] = (unsigned char)outcome_of(code);
  }
}

static void smtp_client_response(struct smtp_client *c, size_t leftover) {
  const struct reply *r = c->cur;
  int code = r->code, cls = code / 100;

  /* RFC 5321 §3.8: 421 may come at any time; the server is going away. */
  if (code == 421 && c->state != ST_QUIT && c->state != ST_GREETING) {
    fail_abort(c, SMTP_CLI_FAIL_SERVICE);
    return;
  }

  switch (c->state) {
  case ST_GREETING:
    if (code == 220 && names_self(c, r))
      fail_loop(c);
    else if (code == 220)
      smtp_client_enter(c, ST_EHLO);
    else if (cls == 4 || cls == 5)
      fail_quit(c, SMTP_CLI_FAIL_GREETING);
    else
      fail_abort(c, SMTP_CLI_FAIL_PROTOCOL);
    break;

  case ST_EHLO:
    if (cls == 2 && names_self(c, r)) {
      fail_loop(c);
    } else if (cls == 2) {
      parse_ehlo(&c->caps, r);
      after_hello(c);
    } else if (cls == 5) {
      smtp_client_enter(c, ST_HELO); /* RFC 5321 §3.2 fallback */
    } else if (cls == 4) {
      fail_quit(c, SMTP_CLI_FAIL_GREETING);
    } else {
      fail_abort(c, SMTP_CLI_FAIL_PROTOCOL);
    }
    break;

  case ST_HELO:
    if (cls == 2) {
      memset(&c->caps, 0, sizeof(c->caps));
      after_hello(c);
    } else if (cls == 4 || cls == 5) {
      fail_quit(c, SMTP_CLI_FAIL_GREETING);
    } else {
      fail_abort(c, SMTP_CLI_FAIL_PROTOCOL);
    }
    break;

  case ST_STARTTLS:
    if (code == 220) {
      /* CVE-2021-38371: anything after the 220 was injected in plaintext
       * and would be read as if it came over TLS. */
      c->leftover = leftover;
      if (leftover > 0) {
        set_local(c, 554, "5.7.0",
                  "server sent data after its STARTTLS reply "
                  "(response injection)");
        fail_abort(c, SMTP_CLI_FAIL_TLS);
      } else {
        smtp_client_enter(c, ST_TLS_WAIT);
      }
    } else if (cls == 2 || cls == 3) {
      fail_abort(c, SMTP_CLI_FAIL_PROTOCOL);
    } else if (c->p.tls == SMTP_CLI_TLS_REQUIRED) {
      fail_quit(c, SMTP_CLI_FAIL_TLS);
    } else {
      after_auth_check(c); /* opportunistic: go on in plaintext */
    }
    break;

  case ST_TLS_WAIT:
    set_local(c, 554, "5.7.0", "plaintext data after STARTTLS");
    fail_abort(c, SMTP_CLI_FAIL_TLS);
    break;

  case ST_AUTH_PLAIN:
  case ST_AUTH_LOGIN_PASS:
    if (code == 235)
      smtp_client_enter(c, ST_READY);
    else if (cls == 4 || cls == 5 || code == 334)
      fail_quit(c, SMTP_CLI_FAIL_AUTH);
    else
      fail_abort(c, SMTP_CLI_FAIL_PROTOCOL);
    break;

  case ST_AUTH_XOAUTH2:
    if (code == 235)
      smtp_client_enter(c, ST_READY);
    else if (code == 334)
      smtp_client_enter(c, ST_AUTH_XOAUTH2_ERR);
    else if (code == 535)
      fail_quit(c, SMTP_CLI_FAIL_TOKEN);
    else if (cls == 4 || cls == 5)
      fail_quit(c, SMTP_CLI_FAIL_AUTH);
    else
      fail_abort(c, SMTP_CLI_FAIL_PROTOCOL);
    break;

  case ST_AUTH_XOAUTH2_ERR:
    /* After the error challenge only a refusal is expected: a 5xx means
     * the token was not accepted, a 4xx is a temporary AUTH failure. */
    if (cls == 5)
      fail_quit(c, SMTP_CLI_FAIL_TOKEN);
    else if (cls == 4)
      fail_quit(c, SMTP_CLI_FAIL_AUTH);
    else
      fail_abort(c, SMTP_CLI_FAIL_PROTOCOL);
    break;

  case ST_AUTH_LOGIN:
  case ST_AUTH_LOGIN_USER:
    if (code == 334)
      smtp_client_enter(c, c->state == ST_AUTH_LOGIN ? ST_AUTH_LOGIN_USER
                                                     : ST_AUTH_LOGIN_PASS);
    else if (cls == 4 || cls == 5)
      fail_quit(c, SMTP_CLI_FAIL_AUTH);
    else
      fail_abort(c, SMTP_CLI_FAIL_PROTOCOL);
    break;

  case ST_MAIL:
    if (cls == 2) {
      c->mail_ok = 1;
      c->tx_open = 1;
      smtp_client_enter(c, ST_RCPT);
    } else if (cls == 4 || cls == 5) {
      rcpt_all(c, R_PENDING, outcome_of(code));
      if (c->pipelined)
        c->state = ST_RCPT; /* still owed the RCPT and DATA replies */
      else
        tx_end(c);
    } else {
      fail_abort(c, SMTP_CLI_FAIL_PROTOCOL);
    }
    break;

  case ST_RCPT:
    if (cls != 2 && cls != 4 && cls != 5) {
      fail_abort(c, SMTP_CLI_FAIL_PROTOCOL);
      break;
    }
    rcpt_reply(c, code);
    if (++c->rcpt_i < c->nsend)
      smtp_client_enter(c, ST_RCPT);
    else if (c->pipelined)
      c->state = ST_DATA; /* DATA was sent with the group */
    else if (c->naccepted > 0)
      smtp_client_enter(c, ST_DATA);
    else
      tx_end(c); /* nobody accepted: no DATA */
    break;

  case ST_DATA:
    if (code == 354 && c->naccepted == 0) {
      /* RFC 2920 §3.1: pipelined DATA accepted with no recipient: send
       * an empty message and ignore the outcome. */
      out_str(c, ".\r\n");
      c->discard_data = 1;
      smtp_client_enter(c, ST_DATA_END);
    } else if (code == 354) {
      smtp_client_enter(c, ST_BODY);
    } else if (cls == 4 || cls == 5) {
      rcpt_all(c, R_ACCEPTED, outcome_of(code));
      tx_end(c);
    } else {
      fail_abort(c, SMTP_CLI_FAIL_PROTOCOL);
    }
    break;

  case ST_DATA_END:
    if (cls != 2 && cls != 4 && cls != 5) {
      fail_abort(c, SMTP_CLI_FAIL_PROTOCOL);
      break;
    }
    if (!c->discard_data)
      rcpt_all(c, R_ACCEPTED, cls == 2 ? SMTP_CLI_DELIVERED : outcome_of(code));
    c->tx_open = 0; /* the final reply ends the transaction either way */
    smtp_client_enter(c, ST_READY);
    break;

  case ST_RSET:
    if (cls == 2)
      smtp_client_enter(c, ST_READY);
    else
      fail_quit(c, SMTP_CLI_FAIL_PROTOCOL);
    break;

  case ST_QUIT:
    c->pending = SMTP_CLI_EV_CLOSED;
    smtp_client_enter(c, ST_DONE);
    break;

  case ST_READY:
  case ST_BODY:
    /* A reply nobody asked for. */
    fail_abort(c, SMTP_CLI_FAIL_PROTOCOL);
    break;

  case ST_DONE:
    break;
  }
}

/* --- public ---------------------------------------------------------- */

struct smtp_client *smtp_client_new(const struct smtp_cli_params *p) {
  if (!p->helo || !*p->helo || strlen(p->helo) > HELO_MAX)
    return NULL;
  if (p->self_name && strlen(p->self_name) > HELO_MAX)
    return NULL;
  size_t pass_max =
      p->auth_mech == SMTP_CLI_AUTH_XOAUTH2 ? TOKEN_MAX : CRED_MAX;
  if (p->auth_user && (!p->auth_pass || strlen(p->auth_user) > CRED_MAX ||
                       strlen(p->auth_pass) > pass_max))
    return NULL;
  if ((unsigned)p->auth_mech > SMTP_CLI_AUTH_XOAUTH2)
    return NULL;
  struct smtp_client *c = calloc(1, sizeof(*c));
  if (!c)
    return NULL;
  c->p = *p;
  if (c->p.max_rcpt == 0)
    c->p.max_rcpt = 100;
  c->in_tls = p->in_tls;
  reply_parser_init(&c->rp);
  if (out_reserve(c, OUT_BASE) < 0) {
    free(c);
    return NULL;
  }
  c->cur = &c->rp.r;
  smtp_client_enter(c, ST_GREETING);
  return c;
}

void smtp_client_free(struct smtp_client *c) {
  if (!c)
    return;
  if (c->out)
    memset(c->out, 0, c->out_cap); /* may hold AUTH secrets */
  free(c->out);
  free(c->rst);
  free(c);
}

int smtp_client_feed(struct smtp_client *c, const char *buf, size_t len,
                     size_t *consumed, struct smtp_cli_event *ev) {
  size_t off = 0;
  memset(ev, 0, sizeof(*ev));
  for (;;) {
    if (take_event(c, ev)) {
      *consumed = off;
      return 1;
    }
    if (c->oom && c->state != ST_DONE) {
      set_local(c, 451, "4.3.0", "out of memory");
      fail_abort(c, SMTP_CLI_FAIL_PROTOCOL);
      continue;
    }
    if (c->state == ST_DONE || off == len) {
      *consumed = len;
      return 0;
    }
    size_t n;
    int rc = reply_parse(&c->rp, buf + off, len - off, &n);
    off += n;
    if (rc == REPLY_AGAIN)
      continue;
    if (rc < 0) {
      char msg[64];
      snprintf(msg, sizeof(msg), "malformed reply from server: %s",
               reply_result_name(rc));
      set_local(c, 451, "4.5.0", msg);
      fail_abort(c, SMTP_CLI_FAIL_PROTOCOL);
      continue;
    }
    c->cur = &c->rp.r;
    c->cur_local = 0;
    smtp_client_response(c, len - off);
  }
}

const char *smtp_client_output(const struct smtp_client *c, size_t *len) {
  *len = c->out_len;
  return c->out;
}

void smtp_client_output_done(struct smtp_client *c, size_t n) {
  assert(n <= c->out_len);
  memmove(c->out, c->out + n, c->out_len - n);
  c->out_len -= n;
  memset(c->out + c->out_len, 0, n); /* do not keep AUTH secrets */
}

static int bad_str(const char *s, int is_addr) {
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch < 0x20 || ch == 0x7f || ch == '<' || ch == '>')
      return 1;
    if (!is_addr && ch == ' ')
      return 1;
  }
  return 0;
}

int smtp_client_start_tx(struct smtp_client *c, const struct smtp_cli_tx *tx) {
  if (c->state != ST_READY || c->in_tx)
    return -EBUSY;
  if (!tx->sender || tx->nrcpt == 0 || bad_str(tx->sender, 1) ||
      (tx->envid && bad_str(tx->envid, 0)))
    return -EINVAL;
  size_t need = 2 * CMD_OVERHEAD + strlen(tx->sender) +
                (tx->envid ? strlen(tx->envid) : 0);
  size_t nsend = tx->nrcpt < c->p.max_rcpt ? tx->nrcpt : c->p.max_rcpt;
  for (size_t i = 0; i < tx->nrcpt; i++) {
    const struct smtp_cli_rcpt *r = &tx->rcpts[i];
    if (!r->addr || bad_str(r->addr, 1) || (r->orcpt && bad_str(r->orcpt, 0)))
      return -EINVAL;
    if (i < nsend)
      need +=
          CMD_OVERHEAD + strlen(r->addr) + (r->orcpt ? strlen(r->orcpt) : 0);
  }
  unsigned char *rst = calloc(tx->nrcpt, 1);
  if (!rst || out_reserve(c, need) < 0) {
    free(rst);
    return -ENOMEM;
  }
  /* A pending READY belongs to the previous transaction's end. */
  c->pending = SMTP_CLI_EV_NONE;
  c->in_tx = 1;
  c->tx = *tx;
  c->rst = rst;
  c->nsend = nsend;
  c->rcpt_i = 0;
  c->naccepted = 0;
  c->mail_ok = 0;
  c->tx_open = 0;
  c->discard_data = 0;
  c->pipelined = c->caps.pipelining;

  /* Refusals we can decide before saying anything. */
  char msg[160];
  if (c->caps.size && c->caps.size_max > 0 && tx->size > c->caps.size_max) {
    snprintf(msg, sizeof(msg),
             "message size %llu exceeds the next hop's limit of %llu",
             (unsigned long long)tx->size,
             (unsigned long long)c->caps.size_max);
    set_local(c, 552, "5.3.4", msg);
  } else if (tx->body_8bit && !c->caps.eightbitmime) {
    /* No 8-bit to 7-bit conversion (yet): bounce, CONTRACT §3. */
    set_local(c, 554, "5.6.3",
              "8-bit message and the next hop does not offer 8BITMIME");
  } else if (tx->smtputf8 && !c->caps.smtputf8) {
    set_local(c, 553, "5.6.7",
              "message needs SMTPUTF8 and the next hop does not offer it");
  } else {
    /* Reported before the first reply is parsed, with this text. */
    if (nsend < tx->nrcpt)
      set_local(c, 452, "4.5.3", "over the recipient limit per transaction");
    for (size_t i = nsend; i < tx->nrcpt; i++)
      c->rst[i] = SMTP_CLI_NEXT_TX;
    smtp_client_enter(c, ST_MAIL);
    return 0;
  }
  for (size_t i = 0; i < tx->nrcpt; i++)
    c->rst[i] = SMTP_CLI_PERMFAIL;
  smtp_client_enter(c, ST_READY);
  return 0;
}

void smtp_client_quit(struct smtp_client *c) {
  if (c->state != ST_READY || c->in_tx)
    return;
  c->pending = SMTP_CLI_EV_NONE;
  smtp_client_enter(c, ST_QUIT);
}

void smtp_client_tls_done(struct smtp_client *c, int auth_allowed) {
  if (c->state != ST_TLS_WAIT)
    return;
  c->in_tls = 1;
  c->p.auth_allowed = auth_allowed;
  /* RFC 3207 §4.2: forget what the server said before TLS. */
  reply_parser_init(&c->rp);
  c->cur = &c->rp.r;
  smtp_client_enter(c, ST_EHLO);
}

void smtp_client_body_done(struct smtp_client *c) {
  if (c->state == ST_BODY)
    smtp_client_enter(c, ST_DATA_END);
}

enum smtp_cli_stage smtp_client_stage(const struct smtp_client *c) {
  switch (c->state) {
  case ST_GREETING:
    return SMTP_CLI_STAGE_GREETING;
  case ST_MAIL:
    return SMTP_CLI_STAGE_MAIL;
  case ST_RCPT:
    return SMTP_CLI_STAGE_RCPT;
  case ST_DATA:
    return SMTP_CLI_STAGE_DATA_INIT;
  case ST_BODY:
    return SMTP_CLI_STAGE_DATA_BLOCK;
  case ST_DATA_END:
    return SMTP_CLI_STAGE_DATA_TERM;
  case ST_READY:
  case ST_TLS_WAIT:
    return SMTP_CLI_STAGE_IDLE;
  case ST_DONE:
    return SMTP_CLI_STAGE_DONE;
  default:
    return SMTP_CLI_STAGE_COMMAND;
  }
}

uint64_t smtp_client_timeout_ms(const struct smtp_client *c) {
  switch (smtp_client_stage(c)) {
  case SMTP_CLI_STAGE_DATA_INIT:
    return 2 * 60 * 1000;
  case SMTP_CLI_STAGE_DATA_BLOCK:
    return 3 * 60 * 1000;
  case SMTP_CLI_STAGE_DATA_TERM:
    return 10 * 60 * 1000;
  case SMTP_CLI_STAGE_IDLE:
  case SMTP_CLI_STAGE_DONE:
    return 0;
  default:
    return 5 * 60 * 1000;
  }
}

const struct smtp_cli_caps *smtp_client_caps(const struct smtp_client *c) {
  return &c->caps;
}

int smtp_client_in_tls(const struct smtp_client *c) {
  return c->in_tls;
}

const char *smtp_client_state_name(const struct smtp_client *c) {
  return strstate[c->state];
}

const char *smtp_cli_event_name(enum smtp_cli_event_type t) {
  static const char *const names[] = {"none", "ready",  "tls_wanted", "body",
                                      "rcpt", "failed", "closed"};
  return (unsigned)t < sizeof(names) / sizeof(names[0]) ? names[t] : "?";
}

const char *smtp_cli_outcome_name(enum smtp_cli_outcome o) {
  switch (o) {
  case SMTP_CLI_DELIVERED:
    return "delivered";
  case SMTP_CLI_TEMPFAIL:
    return "tempfail";
  case SMTP_CLI_PERMFAIL:
    return "permfail";
  case SMTP_CLI_NEXT_TX:
    return "next_tx";
  }
  return "?";
}

const char *smtp_cli_fail_name(enum smtp_cli_fail f) {
  static const char *const names[] = {"none",     "greeting", "tls",   "auth",
                                      "protocol", "service",  "token", "loop"};
  return (unsigned)f < sizeof(names) / sizeof(names[0]) ? names[f] : "?";
}
