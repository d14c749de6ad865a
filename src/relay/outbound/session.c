/*
 * outbound/session: connect, the SMTP client machine, the body stream, TLS
 * and the try-next ladder (see session.h).
 */
#include "relay/outbound/session.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "loop/conn.h"
#include "loop/tls.h"
#include "proto/encode.h"
#include "proto/smtp_client.h"
#include "proto/text.h"
#include "queue/sched.h"
#include "queue/store.h"
#include "relay/outbound/cache.h"
#include "relay/outbound/dane.h"
#include "relay/outbound/dispatch.h"
#include "relay/outbound/outcome.h"
#include "relay/outbound/record.h"
#include "relay/outbound/trust.h"
#include "relay/stats.h"

static const struct conn_cbs delivery_cbs;

/* Replies are stored on one line: "550 5.1.1 text / more text". */
static void reply_text(const struct reply *rp, char *out, size_t cap) {
  size_t o = (size_t)snprintf(out, cap, "%d ", rp->code);
  for (size_t i = 0; i < rp->text_len && o + 4 < cap; i++) {
    char ch = rp->text[i];
    if (ch == '\n') {
      out[o++] = ' ';
      out[o++] = '/';
      out[o++] = ' ';
    } else {
      out[o++] = (unsigned char)ch < 0x20 ? '?' : ch;
    }
  }
  out[o < cap ? o : cap - 1] = '\0';
}

/* Whether TLS is running on the connection. */
static int tls_up(struct conn *c) {
  const struct conn_tls_info *ti = conn_tls(c);
  return ti && ti->ok;
}

static int cand_is_relay_tls(const struct delivery *d) {
  return d->relayhost && !d->plaintext && d->rt->tls == ROUTE_TLS_IMPLICIT;
}

/* The name to verify: the relayhost as configured (by its route), or the
 * MX host. */
static const char *verify_name(const struct delivery *d) {
  if (d->relayhost)
    return d->rt->hosts[d->cand_relay[d->cand]].host;
  return d->cands[d->cand].host;
}

static int tls_verified_policy(const struct delivery *d) {
  const struct config *cfg = d->ob->cfg;
  if (d->relayhost)
    return d->rt->tls == ROUTE_TLS_STARTTLS || d->rt->tls == ROUTE_TLS_IMPLICIT;
  return cfg->outbound_tls == CONFIG_OUTBOUND_TLS_REQUIRED || d->dane ||
         trust_tls_required(d);
}

static int flush_out(struct delivery *d) {
  size_t n;
  const char *out = smtp_client_output(d->cli, &n);
  if (n == 0)
    return 0;
  int rc = conn_write(d->conn, out, n);
  smtp_client_output_done(d->cli, n);
  if (rc < 0) {
    snprintf(d->last_err, sizeof d->last_err, "write to %s failed: %s",
             d->remote, uv_strerror(rc));
    conn_close(d->conn, CONN_END_IO);
    return -1;
  }
  return 0;
}

static void arm_timer(struct delivery *d) {
  if (d->conn && d->cli)
    conn_set_timeout(d->conn, (unsigned)smtp_client_timeout_ms(d->cli));
}

static void start_session(struct delivery *d) {
  const struct config *cfg = d->ob->cfg;
  struct smtp_cli_params p = {
      .helo = cfg->hostname,
      .max_rcpt = (size_t)cfg->max_rcpt_per_transaction,
      .self_name = cfg->hostname, /* a greeting naming us is a loop (§4) */
  };
  if (d->relayhost) {
    /* Every setting from the delivery's route: a line of the routes file
     * (its own keys or their built-in defaults) or the global ones. */
    const struct route *rt = d->rt;
    switch (rt->tls) {
    case ROUTE_TLS_STARTTLS:
      p.tls = SMTP_CLI_TLS_REQUIRED;
      break;
    case ROUTE_TLS_IMPLICIT:
      p.tls = SMTP_CLI_TLS_NONE;
      p.in_tls = 1;
      break;
    case ROUTE_TLS_OPPORTUNISTIC:
      p.tls = SMTP_CLI_TLS_OPPORTUNISTIC;
      break;
    case ROUTE_TLS_NONE:
      p.tls = SMTP_CLI_TLS_NONE;
      break;
    }
    if (rt->user[0]) {
      p.auth_user = rt->user;
      p.auth_pass = d->password;
      _Static_assert((int)ROUTE_AUTH_PLAIN == SMTP_CLI_AUTH_PLAIN &&
                         (int)ROUTE_AUTH_LOGIN == SMTP_CLI_AUTH_LOGIN &&
                         (int)ROUTE_AUTH_XOAUTH2 == SMTP_CLI_AUTH_XOAUTH2,
                     "relayhost_auth values");
      p.auth_mech = (enum smtp_cli_auth)rt->auth;
      const struct conn_tls_info *ti = conn_tls(d->conn);
      p.auth_allowed = rt->auth_plaintext || (ti && ti->ok && ti->verified);
    }
  } else {
    p.tls = cfg->outbound_tls == CONFIG_OUTBOUND_TLS_REQUIRED
                ? SMTP_CLI_TLS_REQUIRED
            : cfg->outbound_tls == CONFIG_OUTBOUND_TLS_NONE
                ? SMTP_CLI_TLS_NONE
                : SMTP_CLI_TLS_OPPORTUNISTIC;
    if (trust_tls_required(d)) /* MTA-STS enforce (CONTRACT §4b) */
      p.tls = SMTP_CLI_TLS_REQUIRED;
  }
  if (d->dane) /* RFC 7672 §2.2: TLS required, never plaintext */
    p.tls = SMTP_CLI_TLS_REQUIRED;
  else if (d->plaintext)
    p.tls = SMTP_CLI_TLS_NONE;
  d->cli = smtp_client_new(&p);
  if (!d->cli) {
    snprintf(d->last_err, sizeof d->last_err, "out of memory");
    conn_close(d->conn, CONN_END_LOCAL);
    return;
  }
  arm_timer(d);
}

static void on_connected(struct conn *c) {
  struct delivery *d = conn_data(c);
  if (cand_is_relay_tls(d)) {
    SSL_CTX *ctx = d->ob->ctx_verify;
    if (conn_start_tls(c, ctx, 0, verify_name(d)) < 0) {
      snprintf(d->last_err, sizeof d->last_err, "%s: cannot start TLS",
               d->remote);
      conn_close(c, CONN_END_TLS);
      return;
    }
    conn_set_timeout(c, (unsigned)d->ob->cfg->connect_timeout_ms);
    return;
  }
  start_session(d);
}

/* Starts a transaction with the recipients still to send. */

/* RFC 6531 §3.2: SMTPUTF8 goes with a transaction only when it needs it:
 * a non-ASCII address in it, or 8-bit octets in the message (its header
 * may be UTF-8).  A message its client flagged but that is all ASCII goes
 * without, also to a next hop that does not offer SMTPUTF8 (CONTRACT §3:
 * a bounce only where conversion is not possible). */
static int tx_needs_smtputf8(const struct delivery *d) {
  if (!(d->flags & STORE_F_SMTPUTF8))
    return 0;
  if ((d->flags & STORE_F_BODY8BIT) ||
      text_has_8bit(d->sender, strlen(d->sender)))
    return 1;
  for (size_t i = 0; i < d->ntx; i++)
    if (d->txr[i].addr && text_has_8bit(d->txr[i].addr, strlen(d->txr[i].addr)))
      return 1;
  return 0;
}

static void start_tx(struct delivery *d) {
  d->ntx = 0;
  d->body_sent = 0;
  for (size_t i = 0; i < d->n; i++) {
    if (d->r[i].state != OUTCOME_PENDING && d->r[i].state != OUTCOME_NEXT_TX)
      continue;
    d->r[i].state = OUTCOME_PENDING;
    d->txr[d->ntx] = (struct smtp_cli_rcpt){
        .addr = d->r[i].addr, .notify = d->r[i].notify, .orcpt = d->r[i].orcpt};
    d->txmap[d->ntx++] = i;
  }
  if (d->ntx == 0) {
    smtp_client_quit(d->cli);
    return;
  }
  struct smtp_cli_tx tx = {
      .sender = d->sender,
      .size = (uint64_t)d->size,
      .ret = d->ret,
      .envid = d->envid_x,
      /* drain --to: the peer keeps the original arrival time */
      .arrival = d->rt == &d->ob->drain ? d->received_at : 0,
      .body_8bit = (d->flags & STORE_F_BODY8BIT) != 0,
      .smtputf8 = tx_needs_smtputf8(d),
      .rcpts = d->txr,
      .nrcpt = d->ntx,
  };
  if (smtp_client_start_tx(d->cli, &tx) < 0) {
    /* An address we cannot put on the wire: refuse it for good. */
    dispatch_decide_pending(d, OUTCOME_PERMFAIL, "invalid address or parameter",
                            "5.1.3");
    smtp_client_quit(d->cli);
  }
}

static void body_next(struct delivery *d);

static void on_body(struct store *st, int status, size_t n, int64_t total,
                    void *data) {
  (void)st;
  (void)total;
  struct delivery *d = data;
  d->read_job = NULL;
  if (!d->conn || conn_closing(d->conn)) {
    if (!d->conn)
      session_next(d);
    return;
  }
  if (status < 0) {
    snprintf(d->last_err, sizeof d->last_err, "queue read failed: %s",
             strerror(-status));
    conn_close(d->conn, CONN_END_LOCAL);
    return;
  }
  size_t w =
      encode_feed(&d->enc, d->rbuf, n, d->ebuf, encode_bound(OB_BODY_CHUNK));
  int full = 0;
  if (n < OB_BODY_CHUNK) {
    w += encode_finish(&d->enc, d->ebuf + w, ENCODE_FINISH_MAX);
    /* Lines over 998 octets were broken (issue 12 item 7): say so once
     * per message. */
    if (encode_folds(&d->enc) > 0 && !d->folds_logged) {
      d->folds_logged = 1;
      struct log_line l;
      log_begin(&l, LOG_INFO, "folded");
      log_str(&l, "id", d->id);
      log_str(&l, "relay", d->remote);
      log_int(&l, "breaks", (long long)encode_folds(&d->enc));
      log_end(&l);
    }
  }
  if (w) {
    int rc = conn_write(d->conn, d->ebuf, w);
    if (rc < 0) {
      snprintf(d->last_err, sizeof d->last_err, "write to %s failed",
               d->remote);
      conn_close(d->conn, CONN_END_IO);
      return;
    }
    full = rc == CONN_WRITE_FULL;
  }
  d->body_off += (int64_t)n;
  arm_timer(d);
  if (n < OB_BODY_CHUNK) {
    smtp_client_body_done(d->cli);
    flush_out(d);
    arm_timer(d);
    return;
  }
  if (full)
    d->waiting_drain = 1;
  else
    body_next(d);
}

static void body_next(struct delivery *d) {
  int rc = store_body_read(d->ob->store, d->id, d->body_off, d->rbuf,
                           OB_BODY_CHUNK, on_body, d, &d->read_job);
  if (rc < 0) {
    d->read_job = NULL;
    snprintf(d->last_err, sizeof d->last_err, "queue read failed: %s",
             strerror(-rc));
    conn_close(d->conn, CONN_END_LOCAL);
  }
}

static void on_drain(struct conn *c) {
  struct delivery *d = conn_data(c);
  if (d->waiting_drain) {
    d->waiting_drain = 0;
    body_next(d);
  }
}

static void on_tls_done(struct conn *c, const struct conn_tls_info *info) {
  struct delivery *d = conn_data(c);
  struct log_line l;
  log_begin(&l, info->ok ? LOG_INFO : LOG_WARN, "tls");
  log_str(&l, "id", d->id);
  log_str(&l, "direction", "outbound");
  log_str(&l, "relay", d->remote);
  d->ob->stats->tls_ok[STATS_OUTBOUND] += info->ok;
  d->ob->stats->tls_failed[STATS_OUTBOUND] += !info->ok;
  if (info->ok) {
    log_str(&l, "version", info->version);
    log_str(&l, "cipher", info->cipher);
    log_int(&l, "verified", info->verified);
  } else {
    log_str(&l, "error", info->error);
  }
  log_end(&l);
  trust_tls_outcome(d, info, 0);
  if (!info->ok) {
    snprintf(d->last_err, sizeof d->last_err,
             "%sTLS handshake with %s failed: %s", d->dane ? "DANE: " : "",
             d->remote, info->error ? info->error : "?");
    if (d->dane) /* a mismatch or a failed handshake: 4.7.5 (§4b) */
      snprintf(d->last_status, sizeof d->last_status, "4.7.5");
    /* RFC 7435: opportunistic TLS falls back to plaintext on a new
     * connection rather than giving up. */
    if (!tls_verified_policy(d) && !d->plaintext)
      d->next = NEXT_PLAINTEXT;
    return;
  }
  if (d->dane && strcmp(dane_conn_policy(c), "dane") != 0) {
    snprintf(d->last_err, sizeof d->last_err,
             "DANE: certificate of %s matches no TLSA record (X509 error "
             "%ld)",
             d->remote, info->verify_result);
    snprintf(d->last_status, sizeof d->last_status, "4.7.5");
    conn_close(c, CONN_END_TLS);
    return;
  }
  if (!d->dane && tls_verified_policy(d) && !info->verified) {
    snprintf(d->last_err, sizeof d->last_err,
             "TLS certificate of %s not verified for %s (X509 error %ld)",
             d->remote, verify_name(d), info->verify_result);
    conn_close(c, CONN_END_TLS);
    return;
  }
  int auth_ok = (d->relayhost && d->rt->auth_plaintext) || info->verified;
  if (!d->cli) {
    start_session(d); /* implicit TLS: now the greeting */
    return;
  }
  smtp_client_tls_done(d->cli, auth_ok);
  flush_out(d);
  arm_timer(d);
}

static int drive(struct delivery *d, struct conn *c, const char *data,
                 size_t len, size_t *offp);

void session_reuse(struct delivery *d, struct conn *conn,
                   struct smtp_client *cli, const char *remote) {
  d->conn = conn;
  d->cli = cli;
  d->reused = 1;
  d->tls_counted = 1; /* its TLS session was counted when it was made */
  d->next = NEXT_HOST;
  d->conn_decided = 0;
  snprintf(d->remote, sizeof d->remote, "%s", remote);
  conn_set_owner(d->conn, &delivery_cbs, d);
  start_tx(d);
  size_t off = 0;
  if (drive(d, d->conn, NULL, 0, &off))
    return;
  if (flush_out(d) == 0)
    arm_timer(d);
}

/* Returns 1 when the delivery let go of its connection (parked): the
 * caller must not touch the connection or the delivery any more. */
static int handle_event(struct delivery *d, const struct smtp_cli_event *ev,
                        size_t pending_after) {
  char text[OB_ERR_MAX];
  switch (ev->type) {
  case SMTP_CLI_EV_READY:
    d->conversed = 1;
    if (!d->reused && !d->plaintext && !tls_up(d->conn) &&
        d->ob->cfg->outbound_tls != CONFIG_OUTBOUND_TLS_NONE)
      trust_tls_outcome(d, NULL, 1); /* no STARTTLS offered (TLS-RPT) */
    if (dispatch_count_pending(d) == 0 && cache_park(d)) {
      record_finish(d);
      return 1;
    }
    start_tx(d);
    break;
  case SMTP_CLI_EV_TLS_WANTED: {
    if (ev->leftover > 0 || pending_after > 0) {
      snprintf(d->last_err, sizeof d->last_err,
               "%s sent data after its STARTTLS reply (response injection)",
               d->remote);
      conn_close(d->conn, CONN_END_LOCAL);
      return 0;
    }
    SSL_CTX *ctx = d->dane                  ? d->ob->ctx_dane
                   : tls_verified_policy(d) ? d->ob->ctx_verify
                                            : d->ob->ctx_any;
    /* DANE names the peer itself (SSL_dane_enable: SNI, DANE-TA). */
    if (conn_start_tls(d->conn, ctx, 0, d->dane ? NULL : verify_name(d)) < 0) {
      snprintf(d->last_err, sizeof d->last_err, "%s: cannot start TLS",
               d->remote);
      conn_close(d->conn, CONN_END_TLS);
    } else if (d->dane && dane_setup_ssl(d, conn_ssl(d->conn), d->last_err,
                                         sizeof d->last_err) < 0) {
      snprintf(d->last_status, sizeof d->last_status, "4.7.5");
      conn_close(d->conn, CONN_END_TLS);
    }
    break;
  }
  case SMTP_CLI_EV_BODY:
    d->body_sent = 1;
    encode_init(&d->enc);
    d->body_off = 0;
    body_next(d);
    break;
  case SMTP_CLI_EV_RCPT: {
    size_t i = d->txmap[ev->rcpt];
    reply_text(ev->reply, text, sizeof text);
    const char *esc = ev->reply->esc[0] ? ev->reply->esc : NULL;
    d->conn_decided++;
    /* A relayhost's refusal of this relay, to MAIL or RCPT (before the
     * body: a refusal of the DATA is about the message). */
    int refused = ev->outcome == SMTP_CLI_PERMFAIL && d->relayhost &&
                  !ev->local && !d->body_sent &&
                  outcome_relay_refusal(ev->reply->code, esc);
    if (ev->outcome != SMTP_CLI_NEXT_TX && !refused)
      d->relay_took = 1;
    switch (ev->outcome) {
    case SMTP_CLI_DELIVERED:
      dispatch_decide(d, i, OUTCOME_DELIVERED, text, esc ? esc : "2.0.0");
      d->r[i].relayed_no_dsn = !smtp_client_caps(d->cli)->dsn;
      break;
    case SMTP_CLI_TEMPFAIL:
      dispatch_decide(d, i, OUTCOME_TEMPFAIL, text, esc ? esc : "4.0.0");
      break;
    case SMTP_CLI_PERMFAIL:
      if (refused) {
        /* The relayhost refuses this relay (AUTH wanted, relaying
         * denied), not the message: a configuration problem, which
         * defers like every relayhost problem (CONTRACT §4).  When it
         * refused every recipient it is a failing destination (backed
         * off as a whole, record_finish). */
        char st[16];
        outcome_defer_status(esc, "4.7.0", st, sizeof st);
        dispatch_decide(d, i, OUTCOME_TEMPFAIL, text, st);
        d->relay_refused = 1;
        break;
      }
      dispatch_decide(d, i, OUTCOME_PERMFAIL, text, esc ? esc : "5.0.0");
      break;
    case SMTP_CLI_NEXT_TX:
      d->r[i].state = OUTCOME_NEXT_TX;
      d->conn_decided--;
      break;
    }
    break;
  }
  case SMTP_CLI_EV_FAILED: {
    reply_text(ev->reply, text, sizeof text);
    snprintf(d->last_err, sizeof d->last_err, "%s%s said: %s",
             ev->local ? "local policy for " : "", d->remote, text);
    /* The deferral carries the reply's own code in class 4 (a 535 to
     * AUTH is 4.7.8, not the generic 4.4.1). */
    if (!ev->local && ev->reply->code >= 400)
      outcome_defer_status(ev->reply->esc, "", d->last_status,
                           sizeof d->last_status);
    if (ev->local && d->dane) { /* e.g. no STARTTLS offered (§4b) */
      snprintf(d->last_err, sizeof d->last_err, "DANE: local policy for %s: %s",
               d->remote, text);
      snprintf(d->last_status, sizeof d->last_status, "4.7.5");
    }
    /* The relayhost refused a fetched OAuth2 token: fetch a new one for
     * the next connection (CONTRACT §4a). */
    if (ev->fail == SMTP_CLI_FAIL_TOKEN && d->oauth2_token) {
      oauth2_refused(d->ob->oauth2, d->password);
      /* Once per delivery, the same host again with a new token (a
       * revoked cached token should not cost a retry interval). */
      d->token_retry = !d->token_retried;
    }
    if (ev->fail == SMTP_CLI_FAIL_TLS && !tls_up(d->conn))
      trust_tls_outcome(d, NULL, 1); /* STARTTLS required, not there */
    if (ev->fail == SMTP_CLI_FAIL_GREETING)
      d->conversed = 0;
    else
      d->conversed = 1;
    /* The server is this relay (a port forward back to us): the
     * recipients bounce 5.4.6 at once; through a relayhost it is a
     * configuration problem and defers (CONTRACT §4). */
    if (ev->fail == SMTP_CLI_FAIL_LOOP) {
      if (d->relayhost)
        dispatch_decide_pending(d, OUTCOME_TEMPFAIL, text, "4.4.6");
      else
        dispatch_decide_pending(d, OUTCOME_PERMFAIL, text, "5.4.6");
    }
    /* A host that fails before any recipient was decided is skipped for
     * the next one; so is a relayhost in a failover list. */
    d->next = d->conn_decided == 0 ? NEXT_HOST : NEXT_DONE;
    flush_out(d);
    conn_close_flush(d->conn, CONN_END_LOCAL, 1000);
    break;
  }
  case SMTP_CLI_EV_CLOSED:
    d->next = NEXT_DONE;
    conn_close(d->conn, CONN_END_LOCAL);
    break;
  case SMTP_CLI_EV_NONE:
    break;
  }
  return 0;
}

/* Feeds server bytes to the client machine and acts on its events.
 * Returns 1 when the caller must stop: the connection is closing, TLS is
 * starting, or the delivery let go of the connection. */
static int drive(struct delivery *d, struct conn *c, const char *data,
                 size_t len, size_t *offp) {
  size_t off = *offp;
  for (;;) {
    size_t used = 0;
    struct smtp_cli_event ev;
    int r =
        smtp_client_feed(d->cli, data ? data + off : "", len - off, &used, &ev);
    off += used;
    *offp = off;
    if (!r)
      return 0;
    if (handle_event(d, &ev, len - off))
      return 1;
    if (conn_closing(c) || ev.type == SMTP_CLI_EV_TLS_WANTED)
      return 1;
  }
}

static size_t on_read(struct conn *c, const char *data, size_t len) {
  struct delivery *d = conn_data(c);
  if (!d->cli)
    return len;
  size_t off = 0;
  if (drive(d, c, data, len, &off))
    return len;
  if (flush_out(d) == 0)
    arm_timer(d);
  return off;
}

static void on_timeout(struct conn *c) {
  struct delivery *d = conn_data(c);
  snprintf(d->last_err, sizeof d->last_err, "timeout talking to %s (stage %s)",
           d->remote, d->cli ? smtp_client_state_name(d->cli) : "connect");
  conn_close(c, CONN_END_TIMEOUT);
}

static void on_close(struct conn *c, enum conn_end end, int status) {
  struct delivery *d = conn_data(c);
  struct outbound *ob = d->ob;
  ob->conns--;
  d->conn = NULL;
  /* d->next was set by what ended the session (FAILED, CLOSED, a TLS
   * failure); a connection that just broke moves on to the next host. */
  if (end == CONN_END_CONNECT)
    snprintf(d->last_err, sizeof d->last_err, "connect to %s failed: %s",
             d->remote, status ? uv_strerror(status) : "timeout");
  else if ((end == CONN_END_EOF || end == CONN_END_IO) && !d->last_err[0])
    snprintf(d->last_err, sizeof d->last_err, "%s closed the connection",
             d->remote);
  smtp_client_free(d->cli);
  d->cli = NULL;
  if (d->read_job) {
    /* The body read still holds our buffers: wait for its callback. */
    store_cancel(d->read_job);
    session_wake(ob);
    return;
  }
  session_next(d);
  session_wake(ob); /* d may be gone; ob is not */
}

static const struct conn_cbs delivery_cbs = {
    .on_connected = on_connected,
    .on_read = on_read,
    .on_tls_done = on_tls_done,
    .on_drain = on_drain,
    .on_timeout = on_timeout,
    .on_close = on_close,
};

/* A new OAuth2 token after the relayhost refused one: the same candidate
 * again, or the deferral (CONTRACT §4a). */
static void on_retry_token(void *arg, int rc, const char *token,
                           const char *why) {
  struct delivery *d = arg;
  if (dispatch_token_arrived(d, rc, token, why) < 0)
    return;
  d->cand--; /* NEXT_HOST steps back onto it */
  d->next = NEXT_HOST;
  session_next(d);
}

/* Picks the next way to try, or ends with the outcome. */
void session_next(struct delivery *d) {
  struct outbound *ob = d->ob;
  if (dispatch_count_pending(d) == 0 || ob->freeing || d->job->removed) {
    if (dispatch_count_pending(d) && d->last_err[0])
      dispatch_decide_pending(d, OUTCOME_TEMPFAIL, d->last_err,
                              d->last_status[0] ? d->last_status : "4.4.1");
    record_finish(d);
    return;
  }
  if (d->token_retry && d->cand >= 0) {
    d->token_retry = 0;
    d->token_retried = 1;
    oauth2_get(ob->oauth2, &d->token_wait, on_retry_token, d);
    return;
  }
  if (d->reused) {
    /* A cached connection that failed before deciding anything (the
     * server closed it meanwhile): resolve and connect afresh. */
    d->reused = 0;
    if (d->conn_decided == 0 && d->ncands == 0) {
      d->last_err[0] = '\0';
      d->last_status[0] = '\0';
      dispatch_resolve(d);
      return;
    }
  }
  if (d->next == NEXT_PLAINTEXT) {
    d->plaintext = 1;
  } else if (d->next == NEXT_HOST || d->cand < 0) {
    d->cand++;
    d->plaintext = 0;
  } else {
    /* NEXT_DONE with recipients still open: the session broke after some
     * were decided; the rest wait for the next attempt. */
    dispatch_decide_pending(d, OUTCOME_TEMPFAIL,
                            d->last_err[0] ? d->last_err
                                           : "delivery interrupted",
                            d->last_status[0] ? d->last_status : "4.4.2");
    record_finish(d);
    return;
  }
  if (d->cand >= d->ncands) {
    dispatch_decide_pending(d, OUTCOME_TEMPFAIL,
                            d->last_err[0] ? d->last_err : "no host reachable",
                            d->last_status[0] ? d->last_status : "4.4.1");
    record_finish(d);
    return;
  }
  d->next = NEXT_HOST;
  d->conn_decided = 0;
  d->tls_counted = 0;
  d->last_status[0] = '\0'; /* the code of this connection's failure */
  mx_candidate_format(&d->cands[d->cand], d->remote, sizeof d->remote);
  if (dane_before_connect(d)) /* the TLSA lookup, or the host skipped */
    return;
  session_connect(d);
}

/* Connects to the current candidate when the connection budget has room;
 * otherwise waits (cache_make_room closes a cached connection, and its
 * close wakes us). */
void session_connect(struct delivery *d) {
  struct outbound *ob = d->ob;
  /* MTA-STS enforce: a host outside the policy is skipped, unless DANE
   * (decided just before) authenticates it: DANE wins (§4b). */
  if (!d->waiting_slot && trust_skip_host(d)) {
    session_next(d);
    return;
  }
  if (!cache_make_room(ob, d->job->dest)) {
    d->waiting_slot = 1;
    return;
  }
  d->waiting_slot = 0;
  int rc = conn_connect(
      ob->loop, (const struct sockaddr *)&d->cands[d->cand].addr,
      (unsigned)ob->cfg->connect_timeout_ms, &delivery_cbs, d, &d->conn);
  if (rc < 0) {
    d->conn = NULL;
    snprintf(d->last_err, sizeof d->last_err, "connect to %s failed: %s",
             d->remote, uv_strerror(rc));
    session_next(d);
    return;
  }
  ob->conns++;
}

void session_wake(struct outbound *ob) {
  /* A woken delivery may connect, fail at once and finish (freed), so the
   * list is scanned afresh after each one. */
  for (;;) {
    struct delivery *d = ob->list;
    while (d && !d->waiting_slot)
      d = d->lnext;
    if (!d)
      return;
    if (ob->freeing) {
      d->waiting_slot = 0;
      session_next(d); /* finishes: the recipients stay as they are */
      continue;
    }
    if (!cache_make_room(ob, d->job->dest))
      return; /* the next close wakes us again */
    session_connect(d);
  }
}

void session_abort_waiting(struct outbound *ob) {
  for (;;) {
    struct delivery *d = ob->list;
    while (d && !d->waiting_slot)
      d = d->lnext;
    if (!d)
      return;
    d->waiting_slot = 0;
    session_next(d); /* ob->freeing: finishes */
  }
}
