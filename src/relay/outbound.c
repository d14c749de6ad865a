/*
 * outbound: one `struct delivery` per scheduler job.  Its life:
 *
 *   dispatch -> store_show (envelope) -> resolve (MX or relayhost list)
 *   -> for each candidate: connect -> smtp_client session (STARTTLS, AUTH,
 *      transactions, body streamed from the store) -> close
 *   -> outcomes: store_update (+ bounce in the same transaction)
 *   -> sched_job_done -> freed.
 *
 * Every connection ends in on_close, which alone decides what comes next
 * (the next candidate, a plaintext retry, or the outcome), so there is one
 * path whatever went wrong.
 */
#include "relay/outbound.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "dns/resolver.h"
#include "log.h"
#include "loop/conn.h"
#include "loop/tls.h"
#include "proto/dsn.h"
#include "proto/encode.h"
#include "proto/smtp_client.h"
#include "proto/smtp_parse.h"
#include "queue/retry.h"
#include "queue/sched.h"
#include "queue/store.h"
#include "relay/dkim.h"
#include "relay/resolver_setup.h"
#include "relay/stats.h"

#define BODY_CHUNK (64 * 1024)
/* How long a connection waits for the next message to its destination
 * (Postfix's smtp_connection_cache_time_limit is 2 s). */
#define IDLE_MS 2000
#define MAX_CANDS 16
#define ERR_MAX 512

enum rstate { R_PENDING, R_DELIVERED, R_TEMPFAIL, R_PERMFAIL, R_NEXT_TX };

struct drcpt {
  int idx;
  int attempts;
  char *addr;
  char *orcpt; /* "type;xtext" for the wire and the DSN */
  unsigned notify;
  enum rstate state;
  char err[ERR_MAX];
  char status[16];
  char remote[300];
};

enum next_action { NEXT_HOST, NEXT_PLAINTEXT, NEXT_DONE };

struct delivery {
  struct outbound *ob;
  struct delivery *lprev, *lnext;
  struct sched_job *job;
  char id[STORE_ID_SIZE];
  char *sender;
  char *envid_x; /* xtext */
  int ret;
  unsigned flags;
  int64_t received_at;
  int64_t size;
  char *headers;
  struct drcpt *r;
  size_t n;
  int64_t started_ms;
  /* resolution */
  struct resolver_query *q;
  int relayhost;
  int relay_idx;
  struct mx_candidate cands[MAX_CANDS];
  int cand_relay[MAX_CANDS];
  int ncands, cand;
  char last_err[ERR_MAX];
  /* the connection in progress */
  struct conn *conn;
  struct smtp_client *cli;
  char remote[300];
  int plaintext;    /* retrying without TLS after a failed handshake */
  int reused;       /* the connection came from the idle cache */
  int conversed;    /* some server answered SMTP (destination is alive) */
  int conn_decided; /* recipients decided on this connection */
  enum next_action next;
  struct smtp_cli_rcpt *txr;
  size_t *txmap;
  size_t ntx;
  /* body */
  struct encoder enc;
  int64_t body_off;
  char *rbuf, *ebuf;
  struct store_job *read_job;
  int waiting_drain;
  /* outcome */
  char *full; /* RET=FULL: the whole message for the bounce */
  int finishing;
  int dest_ok;
};

/* A connection kept open after its delivery, for the next message to the
 * same destination.  Owned by the outbound; ends through on_idle_close. */
struct idle {
  struct outbound *ob;
  struct idle *prev, *next;
  char dest[SCHED_DEST_MAX + 1];
  struct conn *conn;
  struct smtp_client *cli;
  char remote[300];
};

struct outbound {
  uv_loop_t *loop;
  const struct config *cfg;
  struct store *store;
  struct sched *sched;
  struct stats *stats;
  struct resolver *res;
  SSL_CTX *ctx_verify, *ctx_any;
  struct dkim *dkim; /* signs bounces; NULL without dkim_sign */
  struct delivery *list;
  int active;
  int conns;
  int freeing;
  int stopping; /* no new idle connections */
  struct idle *idle;
  int n_idle;
};

static const struct conn_cbs delivery_cbs;
static void try_next(struct delivery *d);
static void finish(struct delivery *d);
static void resolve_next(struct delivery *d);
static void delivery_free(struct delivery *d);

/* ---- helpers ------------------------------------------------------------ */

static const char *domain_of(const char *addr) {
  const char *at = strrchr(addr, '@');
  return at ? at + 1 : "";
}

static char *xstrdup(const char *s) {
  return s ? strdup(s) : NULL;
}

/* The scheduler's clock: unix time in ms. */
static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *outbound_dest(const struct outbound *ob, const char *domain) {
  return ob->cfg->n_relayhost > 0 ? "relayhost" : domain;
}

int64_t outbound_backoff(const char *dest, unsigned fails, void *data) {
  (void)dest;
  const struct outbound *ob = data;
  return (int64_t)retry_delay(ob->cfg->retry_schedule_ms,
                              ob->cfg->n_retry_schedule, (int)fails);
}

int outbound_active(const struct outbound *ob) {
  return ob->active;
}

void outbound_set_sched(struct outbound *ob, struct sched *sched) {
  ob->sched = sched;
}

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

static void decide(struct delivery *d, size_t i, enum rstate st,
                   const char *err, const char *status) {
  struct drcpt *r = &d->r[i];
  r->state = st;
  snprintf(r->err, sizeof r->err, "%s", err ? err : "");
  snprintf(r->status, sizeof r->status, "%s", status ? status : "");
  snprintf(r->remote, sizeof r->remote, "%s", d->remote);
}

/* Every recipient still open gets this outcome. */
static void decide_pending(struct delivery *d, enum rstate st, const char *err,
                           const char *status) {
  for (size_t i = 0; i < d->n; i++)
    if (d->r[i].state == R_PENDING || d->r[i].state == R_NEXT_TX)
      decide(d, i, st, err, status);
}

static size_t count_pending(const struct delivery *d) {
  size_t k = 0;
  for (size_t i = 0; i < d->n; i++)
    k += d->r[i].state == R_PENDING || d->r[i].state == R_NEXT_TX;
  return k;
}

/* ---- connection --------------------------------------------------------- */

static int cand_is_relay_tls(const struct delivery *d) {
  const struct config *cfg = d->ob->cfg;
  return d->relayhost && !d->plaintext &&
         cfg->relayhost_tls == CONFIG_RELAYHOST_TLS_IMPLICIT;
}

/* The name to verify: the relayhost as configured, or the MX host. */
static const char *verify_name(const struct delivery *d) {
  const struct config *cfg = d->ob->cfg;
  if (d->relayhost)
    return cfg->relayhost[d->cand_relay[d->cand]].host;
  return d->cands[d->cand].host;
}

static int tls_verified_policy(const struct delivery *d) {
  const struct config *cfg = d->ob->cfg;
  if (d->relayhost)
    return cfg->relayhost_tls == CONFIG_RELAYHOST_TLS_STARTTLS ||
           cfg->relayhost_tls == CONFIG_RELAYHOST_TLS_IMPLICIT;
  return cfg->outbound_tls == CONFIG_OUTBOUND_TLS_REQUIRED;
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
  };
  if (d->relayhost) {
    switch (cfg->relayhost_tls) {
    case CONFIG_RELAYHOST_TLS_STARTTLS:
      p.tls = SMTP_CLI_TLS_REQUIRED;
      break;
    case CONFIG_RELAYHOST_TLS_IMPLICIT:
      p.tls = SMTP_CLI_TLS_NONE;
      p.in_tls = 1;
      break;
    case CONFIG_RELAYHOST_TLS_OPPORTUNISTIC:
      p.tls = SMTP_CLI_TLS_OPPORTUNISTIC;
      break;
    case CONFIG_RELAYHOST_TLS_NONE:
      p.tls = SMTP_CLI_TLS_NONE;
      break;
    }
    if (cfg->relayhost_user[0]) {
      p.auth_user = cfg->relayhost_user;
      p.auth_pass = cfg->relayhost_password;
      const struct conn_tls_info *ti = conn_tls(d->conn);
      p.auth_allowed =
          cfg->relayhost_auth_plaintext || (ti && ti->ok && ti->verified);
    }
  } else {
    p.tls = cfg->outbound_tls == CONFIG_OUTBOUND_TLS_REQUIRED
                ? SMTP_CLI_TLS_REQUIRED
            : cfg->outbound_tls == CONFIG_OUTBOUND_TLS_NONE
                ? SMTP_CLI_TLS_NONE
                : SMTP_CLI_TLS_OPPORTUNISTIC;
  }
  if (d->plaintext)
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
static void start_tx(struct delivery *d) {
  d->ntx = 0;
  for (size_t i = 0; i < d->n; i++) {
    if (d->r[i].state != R_PENDING && d->r[i].state != R_NEXT_TX)
      continue;
    d->r[i].state = R_PENDING;
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
      .body_8bit = (d->flags & STORE_F_BODY8BIT) != 0,
      .smtputf8 = (d->flags & STORE_F_SMTPUTF8) != 0,
      .rcpts = d->txr,
      .nrcpt = d->ntx,
  };
  if (smtp_client_start_tx(d->cli, &tx) < 0) {
    /* An address we cannot put on the wire: refuse it for good. */
    decide_pending(d, R_PERMFAIL, "invalid address or parameter", "5.1.3");
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
      try_next(d);
    return;
  }
  if (status < 0) {
    snprintf(d->last_err, sizeof d->last_err, "queue read failed: %s",
             strerror(-status));
    conn_close(d->conn, CONN_END_LOCAL);
    return;
  }
  size_t w =
      encode_feed(&d->enc, d->rbuf, n, d->ebuf, encode_bound(BODY_CHUNK));
  int full = 0;
  if (n < BODY_CHUNK)
    w += encode_finish(&d->enc, d->ebuf + w, ENCODE_FINISH_MAX);
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
  if (n < BODY_CHUNK) {
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
                           BODY_CHUNK, on_body, d, &d->read_job);
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
  if (info->ok) {
    log_str(&l, "version", info->version);
    log_str(&l, "cipher", info->cipher);
    log_int(&l, "verified", info->verified);
  } else {
    log_str(&l, "error", info->error);
  }
  log_end(&l);
  if (!info->ok) {
    snprintf(d->last_err, sizeof d->last_err,
             "TLS handshake with %s failed: %s", d->remote,
             info->error ? info->error : "?");
    /* RFC 7435: opportunistic TLS falls back to plaintext on a new
     * connection rather than giving up. */
    if (!tls_verified_policy(d) && !d->plaintext)
      d->next = NEXT_PLAINTEXT;
    return;
  }
  if (tls_verified_policy(d) && !info->verified) {
    snprintf(d->last_err, sizeof d->last_err,
             "TLS certificate of %s not verified for %s (X509 error %ld)",
             d->remote, verify_name(d), info->verify_result);
    conn_close(c, CONN_END_TLS);
    return;
  }
  const struct config *cfg = d->ob->cfg;
  int auth_ok = cfg->relayhost_auth_plaintext || info->verified;
  if (!d->cli) {
    start_session(d); /* implicit TLS: now the greeting */
    return;
  }
  smtp_client_tls_done(d->cli, auth_ok);
  flush_out(d);
  arm_timer(d);
}

/* ---- connection cache ---------------------------------------------------- */

static size_t on_idle_read(struct conn *c, const char *data, size_t len) {
  (void)data;
  /* A server speaking while idle is closing on us (421): drop it. */
  conn_close(c, CONN_END_LOCAL);
  return len;
}

static void on_idle_timeout(struct conn *c) {
  struct idle *ic = conn_data(c);
  smtp_client_quit(ic->cli);
  size_t n;
  const char *out = smtp_client_output(ic->cli, &n);
  if (n && conn_write(c, out, n) >= 0)
    smtp_client_output_done(ic->cli, n);
  conn_close_flush(c, CONN_END_LOCAL, 1000);
}

static void on_idle_close(struct conn *c, enum conn_end end, int status) {
  (void)end;
  (void)status;
  struct idle *ic = conn_data(c);
  struct outbound *ob = ic->ob;
  if (ic->prev)
    ic->prev->next = ic->next;
  else if (ob->idle == ic)
    ob->idle = ic->next;
  if (ic->next)
    ic->next->prev = ic->prev;
  ob->n_idle--;
  ob->conns--;
  smtp_client_free(ic->cli);
  free(ic);
}

static const struct conn_cbs idle_cbs = {
    .on_read = on_idle_read,
    .on_timeout = on_idle_timeout,
    .on_close = on_idle_close,
};

/* Keeps the delivery's connection for the next message to its
 * destination, within the limits.  Returns 1 if it took the connection. */
static int park(struct delivery *d) {
  struct outbound *ob = d->ob;
  if (ob->stopping || ob->freeing || !d->conn || conn_closing(d->conn) ||
      ob->n_idle >= ob->cfg->max_outbound)
    return 0;
  int same = 0;
  for (struct idle *i = ob->idle; i; i = i->next)
    same += strcmp(i->dest, d->job->dest) == 0;
  if (same >= ob->cfg->max_per_destination)
    return 0;
  struct idle *ic = calloc(1, sizeof *ic);
  if (!ic)
    return 0;
  ic->ob = ob;
  snprintf(ic->dest, sizeof ic->dest, "%s", d->job->dest);
  snprintf(ic->remote, sizeof ic->remote, "%s", d->remote);
  ic->conn = d->conn;
  ic->cli = d->cli;
  ic->next = ob->idle;
  if (ob->idle)
    ob->idle->prev = ic;
  ob->idle = ic;
  ob->n_idle++;
  d->conn = NULL;
  d->cli = NULL;
  conn_set_owner(ic->conn, &idle_cbs, ic);
  conn_set_timeout(ic->conn, IDLE_MS);
  return 1;
}

/* Takes a cached connection to dest, or NULL. */
static struct idle *take_idle(struct outbound *ob, const char *dest) {
  for (struct idle *ic = ob->idle; ic; ic = ic->next) {
    if (strcmp(ic->dest, dest) != 0 || conn_closing(ic->conn))
      continue;
    if (ic->prev)
      ic->prev->next = ic->next;
    else
      ob->idle = ic->next;
    if (ic->next)
      ic->next->prev = ic->prev;
    ob->n_idle--;
    return ic;
  }
  return NULL;
}

static int drive(struct delivery *d, struct conn *c, const char *data,
                 size_t len, size_t *offp);

/* Sends the delivery's message over a cached connection. */
static void reuse(struct delivery *d, struct idle *ic) {
  d->conn = ic->conn;
  d->cli = ic->cli;
  d->reused = 1;
  d->next = NEXT_HOST;
  d->conn_decided = 0;
  snprintf(d->remote, sizeof d->remote, "%s", ic->remote);
  free(ic);
  conn_set_owner(d->conn, &delivery_cbs, d);
  start_tx(d);
  size_t off = 0;
  if (drive(d, d->conn, NULL, 0, &off))
    return;
  if (flush_out(d) == 0)
    arm_timer(d);
}

/* Closes every cached connection (shutdown). */
void outbound_close_idle(struct outbound *ob) {
  ob->stopping = 1;
  /* Deliveries still resolving end now; their recipients stay as they are
   * in the queue (on_resolved, DNS_CANCELED). */
  struct delivery *next;
  for (struct delivery *d = ob->list; d; d = next) {
    next = d->lnext;
    if (d->q) {
      struct resolver_query *q = d->q;
      d->q = NULL;
      resolver_cancel(q);
    }
  }
  for (struct idle *ic = ob->idle; ic; ic = ic->next)
    if (!conn_closing(ic->conn))
      on_idle_timeout(ic->conn);
}

/* Returns 1 when the delivery let go of its connection (parked): the
 * caller must not touch the connection or the delivery any more. */
static int handle_event(struct delivery *d, const struct smtp_cli_event *ev,
                        size_t pending_after) {
  char text[ERR_MAX];
  switch (ev->type) {
  case SMTP_CLI_EV_READY:
    d->conversed = 1;
    if (count_pending(d) == 0 && park(d)) {
      finish(d);
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
    SSL_CTX *ctx = tls_verified_policy(d) ? d->ob->ctx_verify : d->ob->ctx_any;
    if (conn_start_tls(d->conn, ctx, 0, verify_name(d)) < 0) {
      snprintf(d->last_err, sizeof d->last_err, "%s: cannot start TLS",
               d->remote);
      conn_close(d->conn, CONN_END_TLS);
    }
    break;
  }
  case SMTP_CLI_EV_BODY:
    encode_init(&d->enc);
    d->body_off = 0;
    body_next(d);
    break;
  case SMTP_CLI_EV_RCPT: {
    size_t i = d->txmap[ev->rcpt];
    reply_text(ev->reply, text, sizeof text);
    const char *esc = ev->reply->esc[0] ? ev->reply->esc : NULL;
    d->conn_decided++;
    switch (ev->outcome) {
    case SMTP_CLI_DELIVERED:
      decide(d, i, R_DELIVERED, text, esc ? esc : "2.0.0");
      break;
    case SMTP_CLI_TEMPFAIL:
      decide(d, i, R_TEMPFAIL, text, esc ? esc : "4.0.0");
      break;
    case SMTP_CLI_PERMFAIL:
      decide(d, i, R_PERMFAIL, text, esc ? esc : "5.0.0");
      break;
    case SMTP_CLI_NEXT_TX:
      d->r[i].state = R_NEXT_TX;
      d->conn_decided--;
      break;
    }
    break;
  }
  case SMTP_CLI_EV_FAILED: {
    reply_text(ev->reply, text, sizeof text);
    snprintf(d->last_err, sizeof d->last_err, "%s%s said: %s",
             ev->local ? "local policy for " : "", d->remote, text);
    if (ev->fail == SMTP_CLI_FAIL_GREETING)
      d->conversed = 0;
    else
      d->conversed = 1;
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
    return;
  }
  try_next(d);
}

static const struct conn_cbs delivery_cbs = {
    .on_connected = on_connected,
    .on_read = on_read,
    .on_tls_done = on_tls_done,
    .on_drain = on_drain,
    .on_timeout = on_timeout,
    .on_close = on_close,
};

/* Picks the next way to try, or ends with the outcome. */
static void try_next(struct delivery *d) {
  struct outbound *ob = d->ob;
  if (count_pending(d) == 0 || ob->freeing || d->job->removed) {
    if (count_pending(d) && d->last_err[0])
      decide_pending(d, R_TEMPFAIL, d->last_err, "4.4.1");
    finish(d);
    return;
  }
  if (d->reused) {
    /* A cached connection that failed before deciding anything (the
     * server closed it meanwhile): resolve and connect afresh. */
    d->reused = 0;
    if (d->conn_decided == 0 && d->ncands == 0) {
      d->last_err[0] = '\0';
      resolve_next(d);
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
    decide_pending(d, R_TEMPFAIL,
                   d->last_err[0] ? d->last_err : "delivery interrupted",
                   "4.4.2");
    finish(d);
    return;
  }
  if (d->cand >= d->ncands) {
    decide_pending(d, R_TEMPFAIL,
                   d->last_err[0] ? d->last_err : "no host reachable", "4.4.1");
    finish(d);
    return;
  }
  d->next = NEXT_HOST;
  d->conn_decided = 0;
  mx_candidate_format(&d->cands[d->cand], d->remote, sizeof d->remote);
  int rc = conn_connect(
      ob->loop, (const struct sockaddr *)&d->cands[d->cand].addr,
      (unsigned)ob->cfg->connect_timeout_ms, &delivery_cbs, d, &d->conn);
  if (rc < 0) {
    d->conn = NULL;
    snprintf(d->last_err, sizeof d->last_err, "connect to %s failed: %s",
             d->remote, uv_strerror(rc));
    try_next(d);
    return;
  }
  ob->conns++;
}

/* ---- resolution --------------------------------------------------------- */

static void resolve_next(struct delivery *d);

static void on_resolved(struct resolver_query *q, const struct mx_result *res,
                        void *data) {
  (void)q;
  struct delivery *d = data;
  d->q = NULL;
  if (res->status == DNS_CANCELED) {
    /* Shutdown: not an attempt; the recipients stay as they are. */
    finish(d);
    return;
  }
  if (res->status == DNS_OK) {
    for (int i = 0; i < res->n && d->ncands < MAX_CANDS; i++) {
      d->cand_relay[d->ncands] = d->relay_idx;
      d->cands[d->ncands++] = res->c[i];
    }
  } else if (d->relayhost) {
    /* A broken relayhost never bounces the queue: defer. */
    snprintf(d->last_err, sizeof d->last_err, "relayhost %s: %s",
             d->ob->cfg->relayhost[d->relay_idx].host, res->reason);
  } else {
    snprintf(d->last_err, sizeof d->last_err, "%s", res->reason);
    if (res->status == DNS_PERMFAIL) {
      d->remote[0] = '\0';
      decide_pending(d, R_PERMFAIL, res->reason, res->dsn);
      d->dest_ok = 1;
    } else {
      decide_pending(d, R_TEMPFAIL, res->reason, res->dsn);
    }
    finish(d);
    return;
  }
  if (d->relayhost && ++d->relay_idx < d->ob->cfg->n_relayhost) {
    resolve_next(d);
    return;
  }
  if (d->ncands == 0) {
    decide_pending(d, R_TEMPFAIL, d->last_err, "4.4.3");
    finish(d);
    return;
  }
  d->cand = -1;
  d->next = NEXT_HOST;
  try_next(d);
}

static void resolve_next(struct delivery *d) {
  struct outbound *ob = d->ob;
  if (d->relayhost) {
    const struct config_relayhost *rh = &ob->cfg->relayhost[d->relay_idx];
    d->q =
        rh->mx_lookup
            ? resolver_lookup_mx(ob->res, rh->host, rh->port, on_resolved, d)
            : resolver_lookup_host(ob->res, rh->host, rh->port, on_resolved, d);
  } else {
    d->q = resolver_lookup_mx(ob->res, d->job->dest, ob->cfg->smtp_port,
                              on_resolved, d);
  }
  if (!d->q) {
    decide_pending(d, R_TEMPFAIL, "out of memory", "4.3.0");
    finish(d);
  }
}

/* ---- envelope ----------------------------------------------------------- */

static char *xtext(const char *s) {
  if (!s)
    return NULL;
  size_t cap = strlen(s) * 3 + 1;
  char *out = malloc(cap);
  if (out && smtp_xtext_encode(out, cap, s, strlen(s)) < 0) {
    free(out);
    return NULL;
  }
  return out;
}

static void on_show(struct store *st, int status, const struct store_msg *m,
                    void *data) {
  (void)st;
  struct delivery *d = data;
  if (status < 0) {
    /* Gone (deleted meanwhile): the scheduler forgets it.  Unreadable:
     * nothing changes in the store; try again a minute later. */
    struct outbound *ob = d->ob;
    struct sched_result *res = calloc(d->n, sizeof *res);
    if (res) {
      for (size_t i = 0; i < d->n; i++) {
        res[i].idx = d->r[i].idx;
        res[i].attempts = d->r[i].attempts;
        res[i].outcome = status == -ENOENT ? SCHED_FINAL : SCHED_RETRY;
        res[i].retry_at = wall_ms() + 60000;
      }
    }
    if (status != -ENOENT)
      log_msg(LOG_WARN, "queue", "cannot read message %s: %s", d->id,
              strerror(-status));
    if (ob->sched)
      sched_job_done(ob->sched, d->job, res, res ? d->n : 0, 1);
    free(res);
    delivery_free(d);
    return;
  }
  d->sender = xstrdup(m->sender);
  d->envid_x = xtext(m->envid);
  d->ret = m->ret;
  d->flags = m->flags;
  d->received_at = m->received_at;
  d->size = m->size;
  d->headers = xstrdup(m->headers);
  for (size_t j = 0; j < d->n; j++) {
    for (size_t i = 0; i < m->nrcpts; i++) {
      const struct store_rcpt *sr = &m->rcpts[i];
      if (sr->idx != d->r[j].idx)
        continue;
      d->r[j].addr = xstrdup(sr->address);
      d->r[j].notify = (unsigned)sr->notify;
      if (sr->orcpt) {
        const char *semi = strchr(sr->orcpt, ';');
        char *x = semi ? xtext(semi + 1) : NULL;
        if (x) {
          size_t len = (size_t)(semi - sr->orcpt) + strlen(x) + 2;
          d->r[j].orcpt = malloc(len);
          if (d->r[j].orcpt)
            snprintf(d->r[j].orcpt, len, "%.*s;%s", (int)(semi - sr->orcpt),
                     sr->orcpt, x);
          free(x);
        }
      }
    }
    if (!d->r[j].addr) /* already final in the store */
      decide(d, j, R_DELIVERED, "already final", "2.0.0");
  }
  if (!d->sender || count_pending(d) == 0) {
    finish(d);
    return;
  }
  struct idle *ic = take_idle(d->ob, d->job->dest);
  if (ic) {
    reuse(d, ic);
    return;
  }
  resolve_next(d);
}

void outbound_dispatch(struct sched *s, struct sched_job *job, void *data) {
  (void)s;
  struct outbound *ob = data;
  struct delivery *d = calloc(1, sizeof *d);
  if (d) {
    d->r = calloc(job->nrcpts, sizeof *d->r);
    d->txr = calloc(job->nrcpts, sizeof *d->txr);
    d->txmap = calloc(job->nrcpts, sizeof *d->txmap);
    d->rbuf = malloc(BODY_CHUNK);
    d->ebuf = malloc(encode_bound(BODY_CHUNK) + ENCODE_FINISH_MAX);
  }
  if (!d || !d->r || !d->txr || !d->txmap || !d->rbuf || !d->ebuf) {
    if (d) {
      free(d->r);
      free(d->txr);
      free(d->txmap);
      free(d->rbuf);
      free(d->ebuf);
      free(d);
    }
    sched_job_done(s, job, NULL, 0, 1); /* due again now-ish */
    return;
  }
  d->ob = ob;
  d->job = job;
  d->n = job->nrcpts;
  d->relayhost = ob->cfg->n_relayhost > 0;
  d->started_ms = (int64_t)uv_now(ob->loop);
  snprintf(d->id, sizeof d->id, "%s", job->id);
  for (size_t i = 0; i < d->n; i++) {
    d->r[i].idx = job->rcpts[i].idx;
    d->r[i].attempts = job->rcpts[i].attempts;
  }
  d->lnext = ob->list;
  if (ob->list)
    ob->list->lprev = d;
  ob->list = d;
  ob->active++;
  /* status: deliveries in flight, whether resolving, connecting or sending */
  ob->stats->outbound = ob->active;
  if (store_show(ob->store, d->id, on_show, d) < 0)
    finish(d);
}

/* ---- outcome ------------------------------------------------------------ */

struct finish_ctx {
  struct delivery *d;
  struct store_outcome *oc;
  struct sched_result *res;
  size_t n;
  struct store_msg bounce;
  struct store_rcpt bounce_rcpt;
  char *bounce_body;
  char bounce_domain[256];
};

static void delivery_free(struct delivery *d) {
  struct outbound *ob = d->ob;
  if (d->lprev)
    d->lprev->lnext = d->lnext;
  else
    ob->list = d->lnext;
  if (d->lnext)
    d->lnext->lprev = d->lprev;
  ob->active--;
  ob->stats->outbound = ob->active;
  for (size_t i = 0; i < d->n; i++) {
    free(d->r[i].addr);
    free(d->r[i].orcpt);
  }
  free(d->r);
  free(d->txr);
  free(d->txmap);
  free(d->rbuf);
  free(d->ebuf);
  free(d->sender);
  free(d->envid_x);
  free(d->headers);
  free(d->full);
  free(d);
}

static void log_outcome(struct delivery *d, const struct drcpt *r,
                        const char *event, int attempts, int64_t next_at) {
  struct log_line l;
  log_begin(&l, LOG_INFO, event);
  log_str(&l, "id", d->id);
  char rcpt[400];
  snprintf(rcpt, sizeof rcpt, "<%s>", r->addr ? r->addr : "");
  log_str(&l, "rcpt", rcpt);
  if (r->remote[0])
    log_str(&l, "relay", r->remote);
  log_str(&l, "dsn", r->status);
  log_int(&l, "attempts", attempts);
  log_double(&l, "delay", (double)wall_ms() / 1000.0 - (double)d->received_at);
  if (next_at) {
    char ts[32];
    time_t t = (time_t)next_at;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    log_str(&l, "next_attempt", ts);
  }
  if (r->state != R_DELIVERED)
    log_str(&l, "reason", r->err);
  log_end(&l);
}

static void on_updated(struct store *st, int status, void *data) {
  (void)st;
  struct finish_ctx *fc = data;
  struct delivery *d = fc->d;
  struct outbound *ob = d->ob;
  if (status < 0) {
    /* Nothing was recorded: the recipients stay as they were and are
     * tried again (at least once delivery). */
    log_msg(LOG_WARN, "queue", "cannot record outcomes of %s: %s", d->id,
            strerror(-status));
    int64_t retry = wall_ms() + 60000;
    for (size_t i = 0; i < fc->n; i++) {
      fc->res[i].outcome = SCHED_RETRY;
      fc->res[i].attempts = d->r[i].attempts;
      fc->res[i].retry_at = retry;
    }
  } else if (fc->bounce_body && ob->sched) {
    struct sched_rcpt sr = {.idx = 0,
                            .dest = outbound_dest(ob, fc->bounce_domain)};
    struct sched_msg sm = {.id = fc->bounce.id,
                           .received_at = fc->bounce.received_at,
                           .size = fc->bounce.size,
                           .rcpts = &sr,
                           .nrcpts = 1};
    if (sched_add(ob->sched, &sm) < 0)
      log_msg(LOG_WARN, "queue", "bounce %s waits for the next restart",
              fc->bounce.id);
  }
  if (ob->sched)
    sched_job_done(ob->sched, d->job, fc->res, fc->n, d->dest_ok);
  free(fc->oc);
  free(fc->res);
  free(fc->bounce_body);
  free(fc);
  delivery_free(d);
}

/* Records the outcomes and the bounce in one store transaction. */
static void record_store(struct finish_ctx *fc) {
  struct outbound *ob = fc->d->ob;
  if (store_update(ob->store, fc->oc, fc->n,
                   fc->bounce_body ? &fc->bounce : NULL, on_updated, fc,
                   NULL) < 0)
    on_updated(ob->store, -EIO, fc);
}

/* The bounce with its DKIM-Signature field(s) on top, or as it was when
 * no key applies or signing failed (an unsigned bounce beats none). */
static void on_bounce_signed(struct dkim_req *req, int status,
                             const struct dkim_signed *res, void *data) {
  (void)req;
  struct finish_ctx *fc = data;
  if (status == 0 && res->domains[0]) {
    char *body = malloc(res->prefix_len + 1);
    if (body) {
      memcpy(body, res->prefix, res->prefix_len);
      body[res->prefix_len] = '\0';
      free(fc->bounce_body);
      fc->bounce_body = body;
      fc->bounce.prefix = body;
      fc->bounce.prefix_len = res->prefix_len;
    }
  } else if (status < 0) {
    log_msg(LOG_WARN, "dkim", "bounce %s not signed: %s", fc->bounce.id,
            strerror(-status));
  }
  record_store(fc);
}

/* Computes each recipient's fate, builds the bounce, records it all. */
static void record(struct delivery *d) {
  struct outbound *ob = d->ob;
  const struct config *cfg = ob->cfg;
  struct finish_ctx *fc = calloc(1, sizeof *fc);
  if (fc) {
    fc->oc = calloc(d->n, sizeof *fc->oc);
    fc->res = calloc(d->n, sizeof *fc->res);
  }
  if (!fc || !fc->oc || !fc->res) {
    if (fc) {
      free(fc->oc);
      free(fc->res);
      free(fc);
    }
    if (ob->sched)
      sched_job_done(ob->sched, d->job, NULL, 0, d->dest_ok);
    delivery_free(d);
    return;
  }
  fc->d = d;
  fc->n = d->n;
  int64_t now_ms = wall_ms();
  int64_t now = now_ms / 1000;
  struct dsn_rcpt *failed = calloc(d->n, sizeof *failed);
  size_t nfailed = 0;
  for (size_t i = 0; i < d->n; i++) {
    struct drcpt *r = &d->r[i];
    struct store_outcome *o = &fc->oc[i];
    struct sched_result *sr = &fc->res[i];
    o->id = d->id;
    o->idx = r->idx;
    sr->idx = r->idx;
    int attempts = r->attempts + 1;
    o->attempts = attempts;
    o->last_error = r->err[0] ? r->err : NULL;
    if (r->state == R_PENDING || r->state == R_NEXT_TX) {
      /* Not tried (removed, shutdown): unchanged, due again. */
      sr->outcome = SCHED_RETRY;
      sr->attempts = r->attempts;
      sr->retry_at = wall_ms();
      o->state = r->attempts ? STORE_RCPT_DEFERRED : STORE_RCPT_QUEUED;
      o->attempts = r->attempts;
      o->next_attempt_at = now;
      continue;
    }
    if (r->state == R_TEMPFAIL) {
      int64_t next_at;
      if (retry_next(cfg->retry_schedule_ms, cfg->n_retry_schedule, attempts,
                     d->received_at * 1000, cfg->queue_lifetime_ms, now_ms,
                     &next_at) == RETRY_EXPIRED) {
        char why[ERR_MAX + 64];
        snprintf(why, sizeof why,
                 "message expired after %llus in the queue; "
                 "last error: %s",
                 (unsigned long long)(cfg->queue_lifetime_ms / 1000), r->err);
        snprintf(r->err, sizeof r->err, "%s", why);
        snprintf(r->status, sizeof r->status, "4.4.7");
        r->state = R_PERMFAIL;
        o->last_error = r->err;
        log_outcome(d, r, "expired", attempts, 0);
      } else {
        o->state = STORE_RCPT_DEFERRED;
        o->next_attempt_at = next_at / 1000;
        sr->outcome = SCHED_RETRY;
        sr->attempts = attempts;
        sr->retry_at = next_at;
        ob->stats->deferred++;
        log_outcome(d, r, "deferred", attempts, next_at / 1000);
        continue;
      }
    }
    sr->outcome = SCHED_FINAL;
    if (r->state == R_DELIVERED) {
      o->state = STORE_RCPT_DELIVERED;
      ob->stats->delivered++;
      if (strcmp(r->err, "already final") != 0)
        log_outcome(d, r, "delivered", attempts, 0);
      continue;
    }
    o->state = STORE_RCPT_BOUNCED;
    ob->stats->bounced++;
    log_outcome(d, r, "bounced", attempts, 0);
    if (failed && d->sender && dsn_should_bounce(d->sender, r->notify)) {
      char *remote = r->remote;
      failed[nfailed++] = (struct dsn_rcpt){
          .addr = r->addr,
          .orcpt = r->orcpt,
          .status = r->status[0] ? r->status : "5.0.0",
          .remote_mta = remote[0] ? remote : NULL,
          .diag = r->err[0] ? r->err : NULL,
          .last_attempt = now,
      };
    }
  }
  if (nfailed) {
    char bid[STORE_ID_SIZE];
    store_new_id(ob->store, bid);
    const char *orig = d->full ? d->full : d->headers ? d->headers : "";
    struct dsn_report rep = {
        .hostname = cfg->hostname,
        .sender = d->sender,
        .envid = d->envid_x,
        .ret = d->full ? DSN_RET_FULL : DSN_RET_HDRS,
        .arrival = d->received_at,
        .now = now,
        .id = bid,
        .msg = orig,
        .msg_len = strlen(orig),
        .rcpts = failed,
        .nrcpt = nfailed,
    };
    size_t blen = 0;
    fc->bounce_body = dsn_build(&rep, &blen);
    if (fc->bounce_body) {
      snprintf(fc->bounce_domain, sizeof fc->bounce_domain, "%s",
               domain_of(d->sender));
      for (char *p = fc->bounce_domain; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
          *p = (char)(*p + 32);
      fc->bounce_rcpt = (struct store_rcpt){.address = d->sender,
                                            .domain = fc->bounce_domain};
      fc->bounce = (struct store_msg){
          .sender = "",
          .received_at = now,
          .rcpts = &fc->bounce_rcpt,
          .nrcpts = 1,
          .prefix = fc->bounce_body,
          .prefix_len = blen,
      };
      memcpy(fc->bounce.id, bid, sizeof bid);
    }
  }
  free(failed);
  /* CONTRACT §3a: a bounce is signed (on the thread pool) before it is
   * stored, when a key signs for hostname's domain. */
  if (fc->bounce_body && ob->dkim &&
      dkim_sign(ob->dkim, fc->bounce_body, fc->bounce.prefix_len, NULL,
                DKIM_SIGN_PARENT, on_bounce_signed, fc, NULL) == 0)
    return;
  record_store(fc);
}

/* RET=FULL bounces quote the whole message: read it first. */
static void on_full_read(struct store *st, int status, size_t n, int64_t total,
                         void *data) {
  (void)st;
  (void)total;
  struct delivery *d = data;
  if (status < 0) {
    free(d->full);
    d->full = NULL;
  } else {
    d->full[n] = '\0';
  }
  record(d);
}

static int needs_bounce(const struct delivery *d) {
  for (size_t i = 0; i < d->n; i++)
    if (d->r[i].state == R_PERMFAIL &&
        dsn_should_bounce(d->sender, d->r[i].notify))
      return 1;
  return 0;
}

static void finish(struct delivery *d) {
  if (d->finishing)
    return;
  d->finishing = 1;
  if (d->conversed)
    d->dest_ok = 1;
  if (d->sender && d->ret == DSN_RET_FULL && d->size > 0 &&
      (uint64_t)d->size <= d->ob->cfg->max_message_size + 65536 &&
      needs_bounce(d)) {
    d->full = malloc((size_t)d->size + 1);
    if (d->full && store_body_read(d->ob->store, d->id, 0, d->full,
                                   (size_t)d->size, on_full_read, d, NULL) == 0)
      return;
    free(d->full);
    d->full = NULL;
  }
  record(d);
}

/* ---- life cycle --------------------------------------------------------- */

struct outbound *outbound_new(uv_loop_t *loop, const struct config *cfg,
                              struct store *st, struct stats *stats, char *err,
                              size_t errlen) {
  struct outbound *ob = calloc(1, sizeof *ob);
  if (!ob) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  ob->loop = loop;
  ob->cfg = cfg;
  ob->store = st;
  ob->stats = stats;
  int rerr = 0;
  ob->res = resolver_from_config(loop, cfg, &rerr);
  if (!ob->res) {
    snprintf(err, errlen, "cannot start the DNS resolver: %s",
             rerr == -ENOENT ? "no name server (set dns_servers)"
                             : strerror(-rerr));
    free(ob);
    return NULL;
  }
  ob->ctx_verify =
      tls_client_ctx_new(cfg->tls_ca_file[0] ? cfg->tls_ca_file : NULL,
                         TLS_VERIFY_REQUIRE, err, errlen);
  ob->ctx_any = ob->ctx_verify
                    ? tls_client_ctx_new(NULL, TLS_VERIFY_NONE, err, errlen)
                    : NULL;
  if (!ob->ctx_verify || !ob->ctx_any) {
    if (ob->ctx_verify)
      SSL_CTX_free(ob->ctx_verify);
    resolver_free(ob->res);
    free(ob);
    return NULL;
  }
  /* Bounce signing: the keys again, quietly.  A bad key is inbound's
   * start-up error to report (a configuration error, exit 1). */
  if (cfg->n_dkim_sign > 0) {
    char derr[512];
    ob->dkim = dkim_new(loop, cfg, 0, derr, sizeof derr);
  }
  return ob;
}

void outbound_reload(struct outbound *ob) {
  char err[512];
  const struct config *cfg = ob->cfg;
  if (ob->dkim && dkim_reload(ob->dkim, err, sizeof err) < 0)
    log_msg(LOG_WARN, "reload", "bounces keep the old DKIM keys: %s", err);
  SSL_CTX *fresh =
      tls_client_ctx_new(cfg->tls_ca_file[0] ? cfg->tls_ca_file : NULL,
                         TLS_VERIFY_REQUIRE, err, sizeof err);
  if (!fresh) {
    log_msg(LOG_WARN, "reload", "keeping the old trust anchors: %s", err);
    return;
  }
  /* Live SSLs hold their own reference to the old context. */
  tls_ctx_swap(&ob->ctx_verify, fresh);
  log_msg(LOG_INFO, "reload", "trust anchors reloaded");
}

void outbound_abort_all(struct outbound *ob) {
  outbound_close_idle(ob);
  ob->freeing = 1;
  struct delivery *next;
  /* outbound_close_idle ended the lookups; end the connections. */
  for (struct delivery *d = ob->list; d; d = next) {
    next = d->lnext;
    if (d->conn)
      conn_close(d->conn, CONN_END_SHUTDOWN);
  }
}

void outbound_free(struct outbound *ob) {
  resolver_free(ob->res);
  SSL_CTX_free(ob->ctx_verify);
  SSL_CTX_free(ob->ctx_any);
  dkim_free(ob->dkim);
  free(ob);
}
