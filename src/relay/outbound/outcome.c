/*
 * outbound/outcome: the fate of each recipient after an attempt, as a pure
 * function (see outcome.h).
 */
#include "relay/outbound/outcome.h"

#include <stdio.h>
#include <string.h>

#include "queue/retry.h"

const char *outcome_state_name(enum outcome_state s) {
  switch (s) {
  case OUTCOME_PENDING:
    return "pending";
  case OUTCOME_DELIVERED:
    return "delivered";
  case OUTCOME_TEMPFAIL:
    return "tempfail";
  case OUTCOME_PERMFAIL:
    return "permfail";
  case OUTCOME_NEXT_TX:
    return "next_tx";
  case OUTCOME_FINAL:
    return "final";
  case OUTCOME_WAITING:
    return "waiting";
  }
  return "?";
}

const char *outcome_event_name(enum outcome_event e) {
  switch (e) {
  case OUTCOME_EV_NONE:
    return "none";
  case OUTCOME_EV_DELIVERED:
    return "delivered";
  case OUTCOME_EV_DEFERRED:
    return "deferred";
  case OUTCOME_EV_BOUNCED:
    return "bounced";
  case OUTCOME_EV_EXPIRED:
    return "expired";
  }
  return "?";
}

static const char *nz(const char *s) {
  return s && s[0] ? s : NULL;
}

/* Appends rc's block to the report: its address and ORCPT, the status and
 * reason noted, where it was tried; last_attempt 0 when there was no
 * attempt now.  The caller sets the block's kind (delayed, relayed). */
static struct dsn_rcpt *add_dsn(struct outcome_out *out,
                                const struct outcome_rcpt *rc,
                                const struct outcome_note *note,
                                int64_t last_attempt) {
  struct dsn_rcpt *d = &out->dsn[out->ndsn++];
  *d = (struct dsn_rcpt){
      .addr = rc->addr,
      .orcpt = rc->orcpt,
      .status = note->status,
      .remote_mta = nz(rc->remote),
      .diag = nz(note->err),
      .last_attempt = last_attempt,
  };
  return d;
}

/* The enhanced code of a stored reply ("451 4.7.1 try later") in class 4
 * into out, or 4.0.0 when err is no such reply (RFC 3463 §2). */
static void waiting_status(const char *err, char *out, size_t cap) {
  char esc[16] = "";
  if (err && err[0] >= '2' && err[0] <= '5' && err[1] >= '0' && err[1] <= '9' &&
      err[2] >= '0' && err[2] <= '9' && (err[3] == ' ' || err[3] == '-')) {
    const char *p = err + 4;
    size_t n = 0;
    int dots = 0;
    while (n < sizeof esc - 1 &&
           ((p[n] >= '0' && p[n] <= '9') || (p[n] == '.' && n > 0))) {
      dots += p[n] == '.';
      esc[n] = p[n];
      n++;
    }
    esc[n] = '\0';
    if (dots != 2 || esc[n - 1] == '.' || (esc[0] != '4' && esc[0] != '5') ||
        esc[1] != '.')
      esc[0] = '\0';
  }
  outcome_defer_status(esc, "4.0.0", out, cap);
}

void outcome_decide(const struct outcome_msg *m, const struct outcome_rcpt *r,
                    size_t n, const struct outcome_policy *p, int64_t now_ms,
                    struct outcome_out *out) {
  int64_t now = now_ms / 1000;
  /* Will-Retry-Until of a delay warning (RFC 3464 §2.3.9) */
  int64_t retry_until = m->received_at + (int64_t)(p->queue_lifetime_ms / 1000);
  out->nstore = out->nsched = out->ndsn = 0;
  out->delay_warned = 0;
  /* RFC 3464 delay warning: due once the message is this old, once. */
  int warn =
      p->delay_warning_ms && !(m->notices & STORE_NOTICE_DELAY) && m->sender &&
      !m->removed &&
      now_ms - sched_arrival_ms(m->received_at) >= (int64_t)p->delay_warning_ms;
  for (size_t i = 0; i < n; i++) {
    const struct outcome_rcpt *rc = &r[i];
    struct outcome_note *note = &out->notes[i];
    memset(note, 0, sizeof *note);
    note->attempts = rc->attempts + 1;
    note->status = rc->status ? rc->status : "";
    note->err = rc->err ? rc->err : "";
    struct sched_result *sr = &out->sched[out->nsched++];
    *sr = (struct sched_result){.idx = rc->idx};
    struct store_outcome o = {
        .id = m->id,
        .idx = rc->idx,
        .attempts = rc->attempts + 1,
        .last_error = nz(rc->err),
    };
    enum outcome_state st = rc->state;
    if (m->removed) {
      /* Deleted from the queue while in flight (CONTRACT §1 "no bounce"):
       * nothing is written, nothing bounces; only a delivery that took
       * place is still reported. */
      sr->outcome = SCHED_FINAL;
      if (st == OUTCOME_DELIVERED)
        note->event = OUTCOME_EV_DELIVERED;
      continue;
    }
    if (st == OUTCOME_FINAL) {
      /* The store has it final already: nothing to write or say. */
      sr->outcome = SCHED_FINAL;
      continue;
    }
    if (st == OUTCOME_PENDING || st == OUTCOME_NEXT_TX) {
      /* Not tried (removed, shutdown): unchanged, due again. */
      sr->outcome = SCHED_RETRY;
      sr->attempts = rc->attempts;
      sr->retry_at = now_ms;
      o.state = rc->attempts ? STORE_RCPT_DEFERRED : STORE_RCPT_QUEUED;
      o.attempts = rc->attempts;
      o.next_attempt_at = now;
      out->store[out->nstore++] = o;
      continue;
    }
    if (st == OUTCOME_WAITING &&
        !(p->queue_lifetime_ms && now_ms - sched_arrival_ms(m->received_at) >=
                                      (int64_t)p->queue_lifetime_ms)) {
      /* A deadline before its lifetime: no attempt, nothing changes but
       * the delay warning, when it is due. */
      sr->outcome = SCHED_RETRY;
      sr->attempts = rc->attempts;
      sr->retry_at = rc->next_at_s * 1000;
      note->attempts = rc->attempts;
      if (!note->status[0]) {
        waiting_status(rc->err, note->status_buf, sizeof note->status_buf);
        note->status = note->status_buf;
      }
      if (warn && dsn_should_delay(m->sender, rc->notify)) {
        o.state = rc->attempts ? STORE_RCPT_DEFERRED : STORE_RCPT_QUEUED;
        o.attempts = rc->attempts;
        o.next_attempt_at = rc->next_at_s;
        if (!out->delay_warned) {
          o.set_notices = STORE_NOTICE_DELAY;
          out->store[out->nstore++] = o;
        }
        out->delay_warned = 1;
        struct dsn_rcpt *d = add_dsn(out, rc, note, 0);
        d->remote_mta = NULL; /* no attempt now: no host answered */
        d->delayed = 1;
        d->will_retry_until = retry_until;
      }
      continue;
    }
    if (st == OUTCOME_TEMPFAIL || st == OUTCOME_WAITING) {
      if (st == OUTCOME_WAITING) {
        /* Past its lifetime with no attempt: expires as it is. */
        note->attempts = rc->attempts;
        o.attempts = rc->attempts;
      }
      int64_t next_at;
      if (st == OUTCOME_TEMPFAIL &&
          retry_next(p->retry_schedule_ms, p->n_retry_schedule,
                     rc->attempts + 1, sched_arrival_ms(m->received_at),
                     p->queue_lifetime_ms, now_ms, &next_at) != RETRY_EXPIRED) {
        o.state = STORE_RCPT_DEFERRED;
        /* Whole seconds, rounded up: a time read back from the store (a
         * deadline job, a restart) is never before next_at, so the last
         * retry, placed at the expiry, never comes a moment early and
         * makes one attempt too many. */
        o.next_attempt_at = (next_at + 999) / 1000;
        sr->outcome = SCHED_RETRY;
        sr->attempts = rc->attempts + 1;
        sr->retry_at = next_at;
        note->event = OUTCOME_EV_DEFERRED;
        note->next_at_s = o.next_attempt_at;
        if (warn && dsn_should_delay(m->sender, rc->notify)) {
          if (!out->delay_warned)
            o.set_notices = STORE_NOTICE_DELAY;
          out->delay_warned = 1;
          struct dsn_rcpt *d = add_dsn(out, rc, note, now);
          d->delayed = 1;
          d->will_retry_until = retry_until;
        }
        out->store[out->nstore++] = o;
        continue;
      }
      snprintf(note->expired_err, sizeof note->expired_err,
               "message expired after %llus in the queue%s%s",
               (unsigned long long)(p->queue_lifetime_ms / 1000),
               note->err[0] ? "; last error: " : "", note->err);
      note->err = note->expired_err;
      note->status = "4.4.7";
      o.last_error = note->expired_err;
      st = OUTCOME_PERMFAIL;
      note->event = OUTCOME_EV_EXPIRED;
    }
    sr->outcome = SCHED_FINAL;
    if (st == OUTCOME_DELIVERED) {
      o.state = STORE_RCPT_DELIVERED;
      note->event = OUTCOME_EV_DELIVERED;
      out->store[out->nstore++] = o;
      /* RFC 3461 §4.2.2: relayed to a system without DSN, the sender who
       * asked NOTIFY=SUCCESS hears it from us (never for <>). */
      if (rc->relayed_no_dsn &&
          dsn_should_notify_success(m->sender, rc->notify))
        add_dsn(out, rc, note, now)->relayed = 1;
      continue;
    }
    o.state = STORE_RCPT_BOUNCED;
    if (note->event != OUTCOME_EV_EXPIRED)
      note->event = OUTCOME_EV_BOUNCED;
    out->store[out->nstore++] = o;
    if (m->sender && dsn_should_bounce(m->sender, rc->notify)) {
      /* no attempt now for a deadline job's recipient */
      struct dsn_rcpt *d =
          add_dsn(out, rc, note, rc->state == OUTCOME_WAITING ? 0 : now);
      if (!note->status[0])
        d->status = "5.0.0";
    }
  }
}

int outcome_relay_refusal(int code, const char *esc) {
  static const char *const refusals[] = {"5.7.0",  "5.7.1",  "5.7.8", "5.7.9",
                                         "5.7.11", "5.7.14", "5.7.57"};
  if (code == 530)
    return 1;
  if (code / 100 != 5 || !esc)
    return 0;
  for (size_t i = 0; i < sizeof refusals / sizeof refusals[0]; i++)
    if (strcmp(esc, refusals[i]) == 0)
      return 1;
  return 0;
}

void outcome_defer_status(const char *esc, const char *dflt, char *out,
                          size_t cap) {
  if (esc && (esc[0] == '4' || esc[0] == '5') && esc[1] == '.')
    snprintf(out, cap, "4%s", esc + 1);
  else
    snprintf(out, cap, "%s", dflt);
}
