/*
 * outbound/record: outcome, bounce, store update, scheduler result (see
 * record.h).
 */
#include "relay/outbound/record.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "config.h"
#include "log.h"
#include "proto/dsn.h"
#include "queue/sched.h"
#include "queue/store.h"
#include "relay/outbound.h"
#include "relay/outbound/dispatch.h"
#include "relay/outbound/outcome.h"
#include "relay/dkim.h"
#include "relay/stats.h"

/* What a finishing delivery holds until its outcome is recorded. */
struct record {
  struct delivery *d;
  struct outcome_rcpt *in;
  struct outcome_note *notes;
  struct store_outcome *oc;
  struct sched_result *res;
  struct dsn_rcpt *dsn;
  struct outcome_out out;
  int64_t now_ms;
  char *full; /* RET=FULL: the message for the bounce */
  size_t full_len;
  struct store_msg bounce;
  struct store_rcpt bounce_rcpt;
  char *bounce_body;
  char bounce_domain[256];
  /* The operator's copy of the bounce (bounce_notice_recipient): stored
   * once the outcomes are, then scheduled with the bounce. */
  struct store_msg copy;
  struct store_rcpt copy_rcpt;
  char *copy_body;
  char copy_domain[256];
  int copy_stored; /* committed: record_done schedules it */
  int sign_step;   /* record_sign: 1 bounce, 2 copy signed or skipped */
  /* A failed store write is tried again (issue 12 item 5): the delivery
   * is known, so the message must not be sent again. */
  uv_timer_t timer; /* initialised on the first failure */
  int timer_init;
  int waiting;         /* the timer is armed */
  int tries;           /* failed writes so far */
  uint64_t backoff_ms; /* the next wait */
};

/* The wait before the first retry of a failed store write and the most
 * between two (ms); doubling in between. */
#define RECORD_RETRY_FIRST_MS 1000
#define RECORD_RETRY_MAX_MS 30000

static void record_store(struct record *rec);
static void record_sign(struct record *rec);
static void on_copy_stored(struct store *st, int status, void *data);
static void on_bounce_signed(struct dkim_req *req, int status,
                             const struct dkim_signed *res, void *data);

static const char *domain_of(const char *addr) {
  const char *at = strrchr(addr, '@');
  return at ? at + 1 : "";
}

/* The lower-case domain of addr into out (a destination key). */
static void domain_key(char *out, size_t n, const char *addr) {
  snprintf(out, n, "%s", domain_of(addr));
  for (char *p = out; *p; p++)
    if (*p >= 'A' && *p <= 'Z')
      *p = (char)(*p + 32);
}

static void on_timer_closed(uv_handle_t *h);

static void record_free(struct record *rec) {
  if (!rec)
    return;
  if (rec->timer_init) {
    /* The memory goes in the close callback. */
    rec->timer_init = 0;
    uv_close((uv_handle_t *)&rec->timer, on_timer_closed);
    return;
  }
  free(rec->in);
  free(rec->notes);
  free(rec->oc);
  free(rec->res);
  free(rec->dsn);
  free(rec->full);
  free(rec->bounce_body);
  free(rec->copy_body);
  free(rec);
}

/* Seconds since the message arrived (its arrival is whole seconds, and a
 * notice of our own is stamped by the scheduler's clock): never negative. */
static double delay_s(const struct delivery *d) {
  double t = (double)dispatch_wall_ms() / 1000.0 - (double)d->received_at;
  return t > 0 ? t : 0;
}

static void log_outcome(struct delivery *d, const struct drcpt *r,
                        const struct outcome_note *note, const char *event,
                        int64_t next_at) {
  struct log_line l;
  log_begin(&l, LOG_INFO, event);
  log_str(&l, "id", d->id);
  char rcpt[400];
  snprintf(rcpt, sizeof rcpt, "<%s>", r->addr ? r->addr : "");
  log_str(&l, "rcpt", rcpt);
  if (r->remote[0])
    log_str(&l, "relay", r->remote);
  log_str(&l, "dsn", note->status);
  log_int(&l, "attempts", note->attempts);
  log_double(&l, "delay", delay_s(d));
  if (next_at) {
    char ts[32];
    time_t t = (time_t)next_at;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    log_str(&l, "next_attempt", ts);
  }
  if (note->event == OUTCOME_EV_DELIVERED) {
    /* CONTRACT §4b: the TLS version ("none" in plaintext: the field is
     * always there) and the policy that authenticated the server. */
    log_str(&l, "tls", r->tls[0] ? r->tls : "none");
    log_str(&l, "tls_policy", r->tls_policy[0] ? r->tls_policy : "none");
  }
  if (note->event != OUTCOME_EV_DELIVERED)
    log_str(&l, "reason", note->err);
  log_end(&l);
}

/* Logs and counts each recipient's outcome. */
static void report(struct record *rec) {
  struct delivery *d = rec->d;
  struct stats *stats = d->ob->stats;
  for (size_t i = 0; i < d->n; i++) {
    const struct outcome_note *note = &rec->notes[i];
    switch (note->event) {
    case OUTCOME_EV_NONE:
      break;
    case OUTCOME_EV_DELIVERED:
      stats->delivered++;
      stats_observe_delivery(stats, delay_s(d));
      log_outcome(d, &d->r[i], note, "delivered", 0);
      break;
    case OUTCOME_EV_DEFERRED:
      stats->deferred++;
      log_outcome(d, &d->r[i], note, "deferred", note->next_at_s);
      break;
    case OUTCOME_EV_EXPIRED:
      stats->expired++;
      log_outcome(d, &d->r[i], note, "expired", 0);
      stats->bounced++; /* an expired recipient bounces */
      log_outcome(d, &d->r[i], note, "bounced", 0);
      break;
    case OUTCOME_EV_BOUNCED:
      stats->bounced++;
      log_outcome(d, &d->r[i], note, "bounced", 0);
      break;
    }
  }
}

static void on_timer_closed(uv_handle_t *h) {
  struct record *rec = h->data;
  record_free(rec);
}

static void on_retry_timer(uv_timer_t *t) {
  struct record *rec = t->data;
  rec->waiting = 0;
  record_store(rec);
}

/* Hands the job back to the scheduler and frees the delivery. */
static void record_done(struct record *rec, int status) {
  struct delivery *d = rec->d;
  struct outbound *ob = d->ob;
  if (status < 0) {
    /* Nothing was recorded and we give up (shutdown, or the store refused
     * the request itself): the recipients stay as they were and are tried
     * again (at least once delivery). */
    log_msg(LOG_WARN, "queue", "outcomes of %s not recorded: %s", d->id,
            strerror(-status));
    int64_t retry = dispatch_sched_ms(ob) + 60000;
    for (size_t i = 0; i < rec->out.nsched; i++) {
      rec->res[i].outcome = SCHED_RETRY;
      rec->res[i].attempts = d->r[i].attempts;
      rec->res[i].retry_at = retry;
    }
  } else if (rec->bounce_body && ob->sched) {
    struct sched_rcpt sr = {.idx = 0,
                            .dest = outbound_dest(ob, rec->bounce_domain)};
    struct sched_msg sm = {.id = rec->bounce.id,
                           .received_at =
                               sched_arrival_ms(rec->bounce.received_at),
                           .size = rec->bounce.size,
                           .rcpts = &sr,
                           .nrcpts = 1};
    if (sched_add(ob->sched, &sm) < 0)
      log_msg(LOG_WARN, "queue", "bounce %s waits for the next restart",
              rec->bounce.id);
    if (rec->copy_stored) {
      struct sched_rcpt cr = {.idx = 0,
                              .dest = outbound_dest(ob, rec->copy_domain)};
      struct sched_msg cm = {.id = rec->copy.id,
                             .received_at =
                                 sched_arrival_ms(rec->copy.received_at),
                             .size = rec->copy.size,
                             .rcpts = &cr,
                             .nrcpts = 1};
      if (sched_add(ob->sched, &cm) < 0)
        log_msg(LOG_WARN, "queue", "bounce copy %s waits for the next restart",
                rec->copy.id);
    }
  }
  if (ob->sched)
    sched_job_done(ob->sched, d->job, rec->res, rec->out.nsched, d->dest_ok);
  d->rec = NULL;
  rec->d = NULL;
  record_free(rec);
  dispatch_free(d);
}

static void on_updated(struct store *st, int status, void *data) {
  (void)st;
  struct record *rec = data;
  struct delivery *d = rec->d;
  struct outbound *ob = d->ob;
  if (status < 0 && status != -ECANCELED && !ob->freeing) {
    /* The write failed (disk full, I/O error) after the world acted: the
     * delivery was made, the refusal heard.  Keep the outcome here and
     * write it again later; the job stays in flight, so the scheduler does
     * not send the message again meanwhile. */
    if (!rec->timer_init) {
      if (uv_timer_init(ob->loop, &rec->timer) < 0) {
        record_done(rec, status);
        return;
      }
      rec->timer.data = rec;
      rec->timer_init = 1;
      rec->backoff_ms = RECORD_RETRY_FIRST_MS;
    }
    rec->tries++;
    log_msg(LOG_WARN, "queue",
            "cannot record outcomes of %s: %s (try %d; again in %llu ms)",
            d->id, strerror(-status), rec->tries,
            (unsigned long long)rec->backoff_ms);
    rec->waiting = 1;
    uv_timer_start(&rec->timer, on_retry_timer, rec->backoff_ms, 0);
    rec->backoff_ms *= 2;
    if (rec->backoff_ms > RECORD_RETRY_MAX_MS)
      rec->backoff_ms = RECORD_RETRY_MAX_MS;
    return;
  }
  if (status == 0 && rec->tries)
    log_msg(LOG_INFO, "queue", "outcomes of %s recorded after %d failed tries",
            d->id, rec->tries);
  if (status == 0 && rec->copy_body && !ob->freeing) {
    /* The bounce is durable; its operator's copy follows (a crash in
     * between loses the copy, never the bounce). */
    int rc =
        store_commit(ob->store, &rec->copy, NULL, on_copy_stored, rec, NULL);
    if (rc == 0)
      return;
    log_msg(LOG_WARN, "queue", "bounce copy for %s not queued: %s", d->id,
            strerror(-rc));
  }
  record_done(rec, status);
}

static void on_copy_stored(struct store *st, int status, void *data) {
  (void)st;
  struct record *rec = data;
  if (status == 0)
    rec->copy_stored = 1;
  else if (status != -ECANCELED)
    log_msg(LOG_WARN, "queue", "bounce copy for %s not queued: %s", rec->d->id,
            strerror(-status));
  record_done(rec, 0); /* the outcomes and the bounce are recorded */
}

void record_abort(struct delivery *d) {
  struct record *rec = d->rec;
  if (!rec || !rec->waiting)
    return; /* not waiting, or its write is running: its callback ends it */
  rec->waiting = 0;
  uv_timer_stop(&rec->timer);
  record_done(rec, -ECANCELED);
}

/* Builds the bounce (when a recipient needs one) and records it all. */
static void record_write(struct record *rec) {
  struct delivery *d = rec->d;
  struct outbound *ob = d->ob;
  const struct config *cfg = ob->cfg;
  int64_t now = rec->now_ms / 1000;
  if (d->job->removed) {
    /* Deleted while the message was read for the bounce: no bounce, and
     * nothing to write about a message that is gone. */
    rec->out.ndsn = 0;
    rec->out.nstore = 0;
  }
  if (rec->out.ndsn) {
    char bid[STORE_ID_SIZE];
    store_new_id(ob->store, bid);
    const char *orig = rec->full ? rec->full : d->headers ? d->headers : "";
    size_t orig_len = rec->full ? rec->full_len : strlen(orig);
    struct dsn_report rep = {
        .hostname = cfg->hostname,
        .sender = d->sender,
        .envid = d->envid_x,
        .ret = rec->full ? DSN_RET_FULL : DSN_RET_HDRS,
        .arrival = d->received_at,
        .now = now,
        .id = bid,
        .msg = orig,
        .msg_len = orig_len,
        .rcpts = rec->dsn,
        .nrcpt = rec->out.ndsn,
    };
    size_t blen = 0;
    rec->bounce_body = dsn_build(&rep, &blen);
    if (rec->bounce_body) {
      domain_key(rec->bounce_domain, sizeof rec->bounce_domain, d->sender);
      rec->bounce_rcpt = (struct store_rcpt){.address = d->sender,
                                             .domain = rec->bounce_domain};
      rec->bounce = (struct store_msg){
          .sender = "",
          .received_at = now,
          .rcpts = &rec->bounce_rcpt,
          .nrcpts = 1,
          .prefix = rec->bounce_body,
          .prefix_len = blen,
      };
      memcpy(rec->bounce.id, bid, sizeof bid);
    }
    /* CONTRACT §2 bounce_notice_recipient: the operator gets a copy of
     * every bounce (a report with a failed recipient; a delay warning
     * alone is no bounce), the original's header only.  A bounce of a
     * bounce never exists (<> is never bounced), so neither does its
     * copy. */
    size_t nfailed = 0;
    for (size_t i = 0; i < rec->out.ndsn; i++)
      nfailed += !rec->dsn[i].delayed && !rec->dsn[i].relayed;
    if (rec->bounce_body && nfailed && cfg->bounce_notice_recipient[0]) {
      char cid[STORE_ID_SIZE];
      store_new_id(ob->store, cid);
      rep.copy_to = cfg->bounce_notice_recipient;
      rep.id = cid;
      rep.ret = DSN_RET_HDRS;
      rep.msg = d->headers ? d->headers : "";
      rep.msg_len = strlen(rep.msg);
      size_t clen = 0;
      rec->copy_body = dsn_build(&rep, &clen);
      if (rec->copy_body) {
        domain_key(rec->copy_domain, sizeof rec->copy_domain,
                   cfg->bounce_notice_recipient);
        rec->copy_rcpt =
            (struct store_rcpt){.address = (char *)cfg->bounce_notice_recipient,
                                .domain = rec->copy_domain};
        rec->copy = (struct store_msg){
            .sender = "",
            .received_at = now,
            .rcpts = &rec->copy_rcpt,
            .nrcpts = 1,
            .prefix = rec->copy_body,
            .prefix_len = clen,
        };
        memcpy(rec->copy.id, cid, sizeof cid);
      } else {
        log_msg(LOG_WARN, "queue", "bounce copy for %s not built: %s", d->id,
                strerror(ENOMEM));
      }
    }
  }
  record_sign(rec);
}

/* CONTRACT §3a: a bounce (and its operator's copy) is signed on the
 * thread pool before it is stored, when a key signs for hostname's
 * domain; one after the other, then record_store. */
static void record_sign(struct record *rec) {
  struct outbound *ob = rec->d->ob;
  while (rec->sign_step < 2) {
    int copy = rec->sign_step++;
    const char *body = copy ? rec->copy_body : rec->bounce_body;
    size_t len = copy ? rec->copy.prefix_len : rec->bounce.prefix_len;
    if (body && ob->dkim &&
        dkim_sign(ob->dkim, body, len, NULL, DKIM_SIGN_PARENT, on_bounce_signed,
                  rec, NULL) == 0)
      return;
  }
  record_store(rec);
}

/* Writes the outcomes (and the bounce) in one transaction. */
static void record_store(struct record *rec) {
  struct outbound *ob = rec->d->ob;
  if (rec->out.nstore == 0 && !rec->bounce_body) {
    record_done(rec, 0); /* nothing to write */
    return;
  }
  int rc = store_update(ob->store, rec->oc, rec->out.nstore,
                        rec->bounce_body ? &rec->bounce : NULL, on_updated, rec,
                        NULL);
  if (rc < 0)
    record_done(rec, rc);
}

/* The bounce (or its copy: sign_step 2) with its DKIM-Signature
 * field(s) on top, or as it was when no key applies or signing failed (an
 * unsigned bounce beats none). */
static void on_bounce_signed(struct dkim_req *req, int status,
                             const struct dkim_signed *res, void *data) {
  (void)req;
  struct record *rec = data;
  int copy = rec->sign_step == 2;
  char **bodyp = copy ? &rec->copy_body : &rec->bounce_body;
  struct store_msg *m = copy ? &rec->copy : &rec->bounce;
  if (status == 0 && res->domains[0]) {
    char *body = malloc(res->prefix_len + 1);
    if (body) {
      memcpy(body, res->prefix, res->prefix_len);
      body[res->prefix_len] = '\0';
      free(*bodyp);
      *bodyp = body;
      m->prefix = body;
      m->prefix_len = res->prefix_len;
    }
  } else if (status < 0) {
    log_msg(LOG_WARN, "dkim", "bounce %s not signed: %s", m->id,
            strerror(-status));
  }
  record_sign(rec);
}

/* RET=FULL bounces quote the whole message: read it first. */
static void on_full_read(struct store *st, int status, size_t n, int64_t total,
                         void *data) {
  (void)st;
  (void)total;
  struct record *rec = data;
  if (status < 0) {
    free(rec->full);
    rec->full = NULL;
  } else {
    rec->full_len = n;
  }
  record_write(rec);
}

void record_finish(struct delivery *d) {
  if (d->finishing)
    return;
  d->finishing = 1;
  /* A relayhost that refused this relay for every recipient it decided is
   * a failing destination (backed off as a whole, no connection storm from
   * a queue of messages), even though it answered. */
  if (d->conversed && (!d->relay_refused || d->relay_took))
    d->dest_ok = 1;
  struct outbound *ob = d->ob;
  const struct config *cfg = ob->cfg;
  struct record *rec = calloc(1, sizeof *rec);
  if (rec) {
    rec->d = d;
    rec->in = calloc(d->n, sizeof *rec->in);
    rec->notes = calloc(d->n, sizeof *rec->notes);
    rec->oc = calloc(d->n, sizeof *rec->oc);
    rec->res = calloc(d->n, sizeof *rec->res);
    rec->dsn = calloc(d->n, sizeof *rec->dsn);
  }
  if (!rec || !rec->in || !rec->notes || !rec->oc || !rec->res || !rec->dsn) {
    record_free(rec);
    if (ob->sched)
      sched_job_done(ob->sched, d->job, NULL, 0, d->dest_ok);
    dispatch_free(d);
    return;
  }
  d->rec = rec;
  for (size_t i = 0; i < d->n; i++) {
    const struct drcpt *r = &d->r[i];
    rec->in[i] = (struct outcome_rcpt){
        .idx = r->idx,
        .attempts = r->attempts,
        .addr = r->addr,
        .orcpt = r->orcpt,
        .notify = r->notify,
        .state = r->state,
        .err = r->err,
        .status = r->status,
        .remote = r->remote,
        .relayed_no_dsn = r->relayed_no_dsn,
        .next_at_s = r->next_at_s,
    };
  }
  struct outcome_msg m = {
      .id = d->id,
      .sender = d->sender,
      .received_at = d->received_at,
      .removed = d->job->removed,
      /* Sent before this process (store) or by another job of the message
       * in flight at the same time (scheduler). */
      .notices = d->notices | (ob->sched ? sched_notices(ob->sched, d->id) : 0),
  };
  struct outcome_policy pol = {
      .retry_schedule_ms = cfg->retry_schedule_ms,
      .n_retry_schedule = cfg->n_retry_schedule,
      .queue_lifetime_ms = cfg->queue_lifetime_ms,
      .delay_warning_ms = cfg->delay_warning_time_ms,
  };
  rec->out = (struct outcome_out){.store = rec->oc,
                                  .sched = rec->res,
                                  .dsn = rec->dsn,
                                  .notes = rec->notes};
  rec->now_ms = dispatch_sched_ms(ob);
  outcome_decide(&m, rec->in, d->n, &pol, rec->now_ms, &rec->out);
  report(rec);
  size_t nfailed = 0, ndelayed = 0;
  for (size_t i = 0; i < rec->out.ndsn; i++) {
    nfailed += !rec->dsn[i].delayed && !rec->dsn[i].relayed;
    ndelayed += rec->dsn[i].delayed && !rec->dsn[i].relayed;
  }
  if (rec->out.delay_warned) {
    /* Once per message: no other job of it warns from now on. */
    if (ob->sched)
      (void)sched_add_notices(ob->sched, d->id, STORE_NOTICE_DELAY);
    struct log_line l;
    log_begin(&l, LOG_INFO, "delay_warning");
    log_str(&l, "id", d->id);
    log_int(&l, "recipients", (long long)ndelayed);
    log_end(&l);
  }
  /* RET=FULL quotes the message only when it fits in DSN_QUOTE_MAX (else
   * the header, RFC 3461 §4.3): one bounded buffer, read by its stored
   * length. */
  if (nfailed && d->ret == DSN_RET_FULL && d->size > 0 &&
      d->size <= DSN_QUOTE_MAX) {
    rec->full = malloc((size_t)d->size);
    if (rec->full &&
        store_body_read(ob->store, d->id, 0, rec->full, (size_t)d->size,
                        on_full_read, rec, NULL) == 0)
      return;
    free(rec->full);
    rec->full = NULL;
  }
  record_write(rec);
}
