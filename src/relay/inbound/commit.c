/*
 * inbound/commit.c: the message a session received (see internal.h).  At
 * end of data it gets its added header fields in front (Received, and
 * Date and Message-ID when missing; CONTRACT §3), is signed on the pool
 * when dkim_sign is set (CONTRACT §3a), and is committed to the store; the
 * client's 250 comes from the commit's callback, once durable.
 */
#include "relay/inbound/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loop/conn.h"
#include "proto/message.h"
#include "relay/dkim.h"
#include "relay/stats.h"

/* The envelope's recipients as the store and the scheduler take them;
 * the strings stay owned by the session.  NULL when out of memory. */
static struct store_rcpt *envelope_rcpts(const struct session *s) {
  struct store_rcpt *rc = calloc((size_t)s->n_rcpts, sizeof *rc);
  if (!rc)
    return NULL;
  for (int i = 0; i < s->n_rcpts; i++) {
    rc[i].address = s->rcpts[i].addr;
    rc[i].orcpt = s->rcpts[i].orcpt;
    rc[i].notify = (int)s->rcpts[i].notify;
    rc[i].domain = s->rcpts[i].domain;
    rc[i].idx = i;
    rc[i].state = STORE_RCPT_QUEUED;
  }
  return rc;
}

/* Hands the durable message's envelope to the owner (the scheduler). */
static void announce(struct session *s) {
  struct inbound *in = s->in;
  if (!in->on_queued || s->n_rcpts == 0)
    return;
  struct store_rcpt *rc = envelope_rcpts(s);
  if (rc) {
    struct store_msg msg = {
        .sender = s->sender ? s->sender : "",
        .size = (int64_t)s->data_bytes,
        .received_at = s->received_at,
        .rcpts = rc,
        .nrcpts = (size_t)s->n_rcpts,
    };
    memcpy(msg.id, s->queue_id, sizeof msg.id);
    in->on_queued(&msg, in->data);
  } else {
    log_msg(LOG_ERROR, "scheduler",
            "out of memory: message %s waits for the next restart",
            s->queue_id);
  }
  free(rc);
}

/* The reply to a commit that failed, by its cause. */
const char *inb_commit_error_reply(int status) {
  return status == -ENOSPC ? "452 4.3.1 Insufficient system storage"
                           : "451 4.3.0 Error: queue write failed";
}

static void on_committed(struct store *st, int status, void *data) {
  (void)st;
  struct session *s = data;
  struct inbound *in = s->in;
  s->commit = NULL;
  if (status == 0) {
    /* The message is durable, whether or not the client is still here. */
    in->stats->received++;
    struct log_line l;
    log_begin(&l, LOG_INFO, "accepted");
    log_str(&l, "session", s->id);
    log_str(&l, "id", s->queue_id);
    log_str(&l, "from", s->sender ? s->sender : "");
    log_int(&l, "rcpts", s->n_rcpts);
    log_int(&l, "size", (long long)s->data_bytes);
    log_str(&l, "client", s->peer);
    if (s->dkim_domains[0]) {
      log_str(&l, "dkim", s->dkim_domains);
      in->stats->dkim_signed++;
    }
    log_end(&l);
    announce(s);
  } else if (status != -ECANCELED) {
    inb_log_error(s, "commit", "commit", status);
  }
  if (s->ended) {
    inb_maybe_free(s);
    return;
  }
  s->step_status = status;
  inb_step_arrived(s);
}

static void dkim_then_commit(struct session *s, const char *prefix, size_t len);

/* Builds the prefix (Received, and Date/Message-ID when missing) and hands
 * the message to the store, through the DKIM signer when configured. */

void inb_commit_message(struct session *s, const struct smtp_event *ev) {
  struct inbound *in = s->in;
  store_new_id(in->store, s->queue_id);
  time_t now = time(NULL);
  struct tm lt;
  localtime_r(&now, &lt);
  int tz = (int)(lt.tm_gmtoff / 60);
  const struct conn_tls_info *tls = s->conn ? conn_tls(s->conn) : NULL;
  char tls_desc[160] = "";
  if (tls && tls->ok)
    snprintf(tls_desc, sizeof tls_desc, "version=%s cipher=%s",
             tls->version ? tls->version : "?",
             tls->cipher ? tls->cipher : "?");
  struct message_received r = {
      .helo = smtp_server_helo_name(s->srv),
      .ip = s->peer,
      .hostname = in->cfg->hostname,
      .id = s->queue_id,
      .rcpt = s->n_rcpts == 1 ? s->rcpts[0].addr : NULL,
      .esmtp = smtp_server_esmtp(s->srv),
      .tls = smtp_server_tls(s->srv),
      .auth = smtp_server_auth_user(s->srv) != NULL,
      .tls_desc = tls_desc[0] ? tls_desc : NULL,
      .when = now,
      .tz_minutes = tz,
      .redacted = in->cfg->received_header_redacted,
  };
  char prefix[4096];
  int len = message_received_header(prefix, sizeof prefix, &r);
  if (len < 0)
    len = 0;
  if (!ev->end.has_date) {
    int n =
        message_date_header(prefix + len, sizeof prefix - (size_t)len, now, tz);
    if (n > 0)
      len += n;
  }
  if (!ev->end.has_message_id) {
    int n = message_id_header(prefix + len, sizeof prefix - (size_t)len,
                              s->queue_id, in->cfg->hostname);
    if (n > 0)
      len += n;
  }
  /* Every field above goes in front of the data's header section; a
   * message without one gets the empty line that keeps its first line in
   * the body (CONTRACT §3). */
  if (ev->end.needs_separator && (size_t)len + 2 < sizeof prefix) {
    memcpy(prefix + len, "\r\n", 2);
    len += 2;
  }

  s->received_at = (int64_t)now;
  /* A fleet peer's hand-off (XARRIVAL, offered to relay clients only):
   * the message keeps its first arrival for expiry, delay notices and
   * DSNs; this hop's Received: above keeps its own time. */
  if (s->mail.has_arrival && s->mail.arrival < s->received_at)
    s->received_at = s->mail.arrival;
  s->body_8bit = ev->end.eight_bit;
  s->body_size = ev->end.size;
  s->dkim_domains[0] = '\0';
  if (in->dkim)
    dkim_then_commit(s, prefix, (size_t)len);
  else
    inb_commit_prefixed(s, prefix, (size_t)len);
}

/* Hands the message (prefix + spooled body) to the store; the session
 * then waits for the commit.  On a refusal the client is answered with a
 * temporary error at once. */
void inb_commit_prefixed(struct session *s, const char *prefix, size_t len) {
  struct inbound *in = s->in;
  struct store_rcpt *rc = envelope_rcpts(s);
  if (!rc) {
    smtp_server_commit_done(s->srv, 0, "451 4.3.0 Error: out of memory");
    inb_envelope_clear(s);
    return;
  }
  struct store_msg msg = {
      .sender = s->sender ? s->sender : "",
      .received_at = s->received_at,
      .ret = (int)s->mail.ret,
      .envid = s->mail.has_envid ? s->mail.envid : NULL,
      .flags = (s->mail.smtputf8 ? STORE_F_SMTPUTF8 : 0) |
               (s->body_8bit ? STORE_F_BODY8BIT : 0),
      .rcpts = rc,
      .nrcpts = (size_t)s->n_rcpts,
      .prefix = prefix,
      .prefix_len = len,
  };
  memcpy(msg.id, s->queue_id, sizeof msg.id);
  s->data_bytes = s->body_size + (uint64_t)len;
  struct store_spool *body = s->spool;
  s->spool = NULL;
  int rcode = store_commit(in->store, &msg, body, on_committed, s, &s->commit);
  free(rc);
  if (rcode < 0) {
    /* Refused before it started: the spool's own earlier failure (its
     * cause, e.g. ENOSPC) or the store shutting down. */
    s->commit = NULL;
    inb_log_error(s, "commit", "commit", rcode);
    smtp_server_commit_done(s->srv, 0, inb_commit_error_reply(rcode));
    inb_envelope_clear(s);
    return;
  }
  inb_wait(s, WAIT_COMMIT);
  conn_set_timeout(s->conn, 0);
}

/* ---- DKIM: the step between end of data and commit (CONTRACT §3a) ----
 * The spool goes to the signing job on the thread pool and comes back in
 * on_signed with the new prefix (DKIM-Signature fields first); only then
 * is the message committed, so the stored message carries the signature.
 * The session waits (WAIT_DKIM) meanwhile, as for the commit. */

static void on_signed(struct dkim_req *req, int status,
                      const struct dkim_signed *res, void *data) {
  (void)req;
  struct session *s = data;
  s->dkim_req = NULL;
  s->spool = res->body;
  if (s->ended) {
    inb_maybe_free(s);
    return;
  }
  if (res->note)
    inb_log(s, LOG_WARN, "dkim", "error", res->note);
  if (status == 0) {
    /* res is valid only now; the test hook may hold the step longer */
    s->signed_prefix = malloc(res->prefix_len ? res->prefix_len : 1);
    if (s->signed_prefix) {
      memcpy(s->signed_prefix, res->prefix, res->prefix_len);
      s->signed_prefix_len = res->prefix_len;
      snprintf(s->dkim_domains, sizeof s->dkim_domains, "%s", res->domains);
    } else {
      status = -ENOMEM;
    }
  }
  s->step_status = status;
  inb_step_arrived(s);
}

static void dkim_then_commit(struct session *s, const char *prefix,
                             size_t len) {
  struct store_spool *body = s->spool;
  s->spool = NULL;
  if (dkim_sign(s->in->dkim, prefix, len, body, 0, on_signed, s, &s->dkim_req) <
      0) {
    s->dkim_req = NULL;
    s->spool = body;
    smtp_server_commit_done(s->srv, 0, "451 4.3.0 Error: out of memory");
    inb_envelope_clear(s);
    return;
  }
  inb_wait(s, WAIT_DKIM);
  conn_set_timeout(s->conn, 0);
}
