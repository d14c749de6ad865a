/*
 * smtp_client: the outbound SMTP session as a pure state machine (sans-I/O),
 * modelled on OpenSMTPD's smtp_client.c: one switch of actions on entering
 * a state (smtp_client_enter), one switch choosing the next state from each
 * reply (smtp_client_response), and two exits: abort (drop the connection)
 * and quit (polite QUIT, then drop).
 *
 * The caller (src/outbound) does all I/O:
 *  - it feeds the bytes the server sent with smtp_client_feed(), which
 *    returns at most one event per call; call it again (with the rest of
 *    the input, or none) until it returns 0 and has consumed everything;
 *  - it sends what smtp_client_output() holds, then calls
 *    smtp_client_output_done();
 *  - on SMTP_CLI_EV_READY it starts a transaction (smtp_client_start_tx)
 *    or ends the session (smtp_client_quit);
 *  - on SMTP_CLI_EV_BODY it sends the message through encode.c: the
 *    encoded bytes *including* the "CRLF.CRLF" terminator that
 *    encode_finish() appends, then calls smtp_client_body_done().  The
 *    machine never holds the body and never adds the terminator itself;
 *  - on SMTP_CLI_EV_TLS_WANTED it refuses to go on if ev.leftover > 0
 *    (the machine already turned that case into SMTP_CLI_EV_FAILED; see
 *    below), runs the TLS handshake, feeds nothing in plaintext any more,
 *    then calls smtp_client_tls_done();
 *  - it runs the timer smtp_client_timeout_ms() names for the current
 *    stage and aborts the session when it fires;
 *  - on SMTP_CLI_EV_FAILED and SMTP_CLI_EV_CLOSED it flushes any output
 *    (a QUIT) best-effort and closes the connection.
 *
 * Outcomes.  Each recipient of a transaction gets exactly one
 * SMTP_CLI_EV_RCPT event (delivered / tempfail / permfail / next_tx),
 * unless the session fails first (SMTP_CLI_EV_FAILED): the recipients
 * without an event then failed temporarily with the session (try the next
 * host, or defer).  Rejections by RCPT are reported as their reply
 * arrives; accepted recipients are reported after the final DATA reply.
 *
 * Pure: no libuv, sockets, clock or logging.  It allocates only its own
 * struct and its output buffer, which holds at most one pipelined group
 * (MAIL + max_rcpt RCPTs + DATA).
 */
#ifndef MAILHOP_PROTO_SMTP_CLIENT_H
#define MAILHOP_PROTO_SMTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "proto/dsn.h"
#include "proto/reply.h"

struct smtp_client;

enum smtp_cli_tls {
  SMTP_CLI_TLS_NONE = 0,      /* never STARTTLS */
  SMTP_CLI_TLS_OPPORTUNISTIC, /* STARTTLS when offered, else plaintext */
  SMTP_CLI_TLS_REQUIRED,      /* STARTTLS or fail (SMTP_CLI_FAIL_TLS) */
};

/* SASL mechanism for AUTH (config relayhost_auth, CONTRACT §2/§4a). */
enum smtp_cli_auth {
  SMTP_CLI_AUTH_AUTO = 0, /* PLAIN when offered, else LOGIN */
  SMTP_CLI_AUTH_PLAIN,    /* RFC 4616, as the initial response */
  SMTP_CLI_AUTH_LOGIN,    /* draft-murchison-sasl-login */
  SMTP_CLI_AUTH_XOAUTH2,  /* Google/Microsoft SASL XOAUTH2: auth_pass is
                             the OAuth2 access token */
};

/* Session parameters; strings are borrowed until smtp_client_free(). */
struct smtp_cli_params {
  const char *helo; /* our name for EHLO/HELO */
  enum smtp_cli_tls tls;
  int in_tls;            /* the connection is already TLS (port 465) */
  const char *auth_user; /* NULL: no AUTH; at most 1024 octets */
  const char *auth_pass; /* the password, or with XOAUTH2 the access token;
                            at most 1024 octets (a token 8192) */
  enum smtp_cli_auth auth_mech;
  /* The caller's decision that credentials may be sent on the connection
   * as it is now (verified TLS, or relayhost_auth_plaintext).  Updated by
   * smtp_client_tls_done(). */
  int auth_allowed;
  size_t max_rcpt; /* max_rcpt_per_transaction; 0 means 100 */
  /* This relay's own `hostname` (CONTRACT §4): a server whose greeting or
   * EHLO reply names it (the first word of the 220 text, or of the EHLO
   * reply's first line, compared case-insensitively, a trailing dot
   * ignored) is this relay reached through a port forward or NAT, and the
   * session ends with SMTP_CLI_FAIL_LOOP.  NULL or "": no check. */
  const char *self_name;
};

/* One recipient of a transaction; borrowed until the transaction ends. */
struct smtp_cli_rcpt {
  const char *addr;  /* without angle brackets */
  unsigned notify;   /* enum dsn_notify bits, 0 when not given */
  const char *orcpt; /* ORCPT= value as received (xtext), or NULL */
};

/* One message; borrowed until the transaction ends (READY or FAILED). */
struct smtp_cli_tx {
  const char *sender; /* "" for the null sender */
  uint64_t size;      /* octets of the message as stored */
  int ret;            /* enum dsn_ret */
  const char *envid;  /* ENVID= value as received (xtext), or NULL */
  int64_t arrival;    /* unix seconds for XARRIVAL= when offered; 0: none */
  int body_8bit;      /* message has 8-bit octets (encode_has_8bit) */
  int smtputf8;       /* the message needs SMTPUTF8 */
  const struct smtp_cli_rcpt *rcpts;
  size_t nrcpt;
};

enum smtp_cli_event_type {
  SMTP_CLI_EV_NONE = 0,
  SMTP_CLI_EV_READY,      /* idle: start_tx or quit */
  SMTP_CLI_EV_TLS_WANTED, /* server said 220 to STARTTLS */
  SMTP_CLI_EV_BODY,       /* send the encoded body, then body_done */
  SMTP_CLI_EV_RCPT,       /* outcome of one recipient */
  SMTP_CLI_EV_FAILED,     /* session failed; close after flushing */
  SMTP_CLI_EV_CLOSED,     /* QUIT answered; close */
};

enum smtp_cli_outcome {
  SMTP_CLI_DELIVERED = 1,
  SMTP_CLI_TEMPFAIL, /* defer */
  SMTP_CLI_PERMFAIL, /* bounce */
  SMTP_CLI_NEXT_TX,  /* not tried here (452 or over max_rcpt): send it in a
                        further transaction, no deferral */
};

enum smtp_cli_fail {
  SMTP_CLI_FAIL_NONE = 0,
  SMTP_CLI_FAIL_GREETING, /* greeting not 220, or EHLO and HELO refused:
                             try the next host */
  SMTP_CLI_FAIL_TLS,      /* TLS required but not offered or refused, or
                             response injection after STARTTLS */
  SMTP_CLI_FAIL_AUTH,     /* credentials set but AUTH not possible, not
                             allowed now, or refused */
  SMTP_CLI_FAIL_PROTOCOL, /* malformed or unexpected reply */
  SMTP_CLI_FAIL_SERVICE,  /* 421: the server is closing the session */
  SMTP_CLI_FAIL_TOKEN,    /* XOAUTH2: the server refused the access token
                             (535, directly or after its 334 error
                             challenge, which was answered with an empty
                             line as the mechanism wants).  The reply is
                             the server's final one.  Defer, refresh the
                             token, try again: a relayhost problem, never
                             a bounce (CONTRACT §4a). */
  SMTP_CLI_FAIL_LOOP,     /* the server is this relay (its greeting or EHLO
                             reply names self_name): a mail loop.  The
                             made-up reply is "554 5.4.6 ..."; the
                             recipients bounce at once (CONTRACT §4), no
                             other host is tried.  QUIT was written. */
};

/* Returned by smtp_client_feed(); pointers valid until the next call. */
struct smtp_cli_event {
  enum smtp_cli_event_type type;
  size_t rcpt;                   /* RCPT: index in the tx's rcpts */
  enum smtp_cli_outcome outcome; /* RCPT */
  enum smtp_cli_fail fail;       /* FAILED */
  /* RCPT and FAILED: the reply that decided it.  For decisions made here
   * (SIZE, 8BITMIME, SMTPUTF8, malformed reply, TLS/AUTH policy) it is a
   * made-up reply and `local` is 1: the text is ours, not the server's. */
  const struct reply *reply;
  int local;
  size_t leftover; /* TLS_WANTED/FAILED after STARTTLS: octets the server
                      sent after its 220 in the same input (must be 0) */
};

/* Stages with their own RFC 5321 §4.5.3.2 timeout. */
enum smtp_cli_stage {
  SMTP_CLI_STAGE_GREETING,   /* 5 min */
  SMTP_CLI_STAGE_COMMAND,    /* EHLO, STARTTLS, AUTH, RSET, QUIT: 5 min */
  SMTP_CLI_STAGE_MAIL,       /* 5 min */
  SMTP_CLI_STAGE_RCPT,       /* 5 min */
  SMTP_CLI_STAGE_DATA_INIT,  /* 2 min */
  SMTP_CLI_STAGE_DATA_BLOCK, /* 3 min per block sent */
  SMTP_CLI_STAGE_DATA_TERM,  /* 10 min */
  SMTP_CLI_STAGE_IDLE,       /* waiting for the caller: no server timeout */
  SMTP_CLI_STAGE_DONE,
};

/* Server extensions seen in the last EHLO answer (read-only). */
struct smtp_cli_caps {
  int esmtp; /* EHLO (not HELO) was accepted */
  int pipelining, eightbitmime, smtputf8, dsn, starttls;
  int xarrival;      /* mailhop's XARRIVAL (smtp_parse.h) */
  int size;          /* SIZE was advertised */
  uint64_t size_max; /* its limit; 0 = none given */
  int auth_plain, auth_login, auth_xoauth2;
};

/*
 * Creates a session waiting for the greeting.  p is copied (its strings
 * are borrowed).  Returns NULL when out of memory.
 */
__attribute__((warn_unused_result)) struct smtp_client *
smtp_client_new(const struct smtp_cli_params *p);

void smtp_client_free(struct smtp_client *c);

/*
 * Feeds server bytes.  Sets *consumed (<= len).  Returns 1 with *ev set
 * when an event happened (call again with buf + *consumed), 0 when all of
 * buf was consumed and nothing more can happen until more input or a call
 * from the caller.  Bytes fed after FAILED or CLOSED are ignored.
 */
int smtp_client_feed(struct smtp_client *c, const char *buf, size_t len,
                     size_t *consumed, struct smtp_cli_event *ev);

/* The pending output; *len 0 when none.  Valid until the next call. */
const char *smtp_client_output(const struct smtp_client *c, size_t *len);
/* n octets of the output were sent. */
void smtp_client_output_done(struct smtp_client *c, size_t n);

/*
 * Starts a transaction; only in READY (returns -EBUSY otherwise).
 * Returns -EINVAL when an address or parameter has CR, LF, other control
 * characters, '<' or '>' (command injection), or nrcpt is 0.  On 0, the
 * events of this transaction follow from smtp_client_feed() (call it with
 * len 0: the SIZE/8BITMIME/SMTPUTF8 checks may decide at once).
 */
__attribute__((warn_unused_result)) int
smtp_client_start_tx(struct smtp_client *c, const struct smtp_cli_tx *tx);

/* Ends the session politely from READY: QUIT, then SMTP_CLI_EV_CLOSED. */
void smtp_client_quit(struct smtp_client *c);

/*
 * The TLS handshake after TLS_WANTED succeeded; auth_allowed as in
 * smtp_cli_params.  Forgets the server's extensions and sends EHLO again
 * (RFC 3207 §4.2).  On handshake failure the caller just closes.
 */
void smtp_client_tls_done(struct smtp_client *c, int auth_allowed);

/* The encoded body and its terminator were handed to the connection. */
void smtp_client_body_done(struct smtp_client *c);

enum smtp_cli_stage smtp_client_stage(const struct smtp_client *c);
/* RFC 5321 §4.5.3.2 timeout of the current stage in ms; 0 = none. */
uint64_t smtp_client_timeout_ms(const struct smtp_client *c);
const struct smtp_cli_caps *smtp_client_caps(const struct smtp_client *c);
/* 1 when the connection is (now) TLS. */
int smtp_client_in_tls(const struct smtp_client *c);

/* Names for logs. */
const char *smtp_client_state_name(const struct smtp_client *c);
const char *smtp_cli_event_name(enum smtp_cli_event_type t);
const char *smtp_cli_outcome_name(enum smtp_cli_outcome o);
const char *smtp_cli_fail_name(enum smtp_cli_fail f);

#endif
