/*
 * outbound/outcome: what happens to each recipient of a delivery once the
 * attempt is over (CONTRACT §4): delivered, deferred along retry_schedule,
 * expired past queue_lifetime (4.4.7), bounced, or left as it was (not
 * tried).  One pure function turns the recipients, the retry policy and
 * the time into the three things the caller then applies: the store
 * outcomes (one transaction), the scheduler results and the recipients of
 * the RFC 3464 bounce.
 *
 * Pure: no clock (now is passed in), no I/O, no logging, no allocation.
 * It includes queue/store.h and queue/sched.h for their plain structs only.
 */
#ifndef MAILHOP_RELAY_OUTBOUND_OUTCOME_H
#define MAILHOP_RELAY_OUTBOUND_OUTCOME_H

#include <stddef.h>
#include <stdint.h>

#include "proto/dsn.h"
#include "queue/sched.h"
#include "queue/store.h"

#define OUTCOME_ERR_MAX 512

/* A recipient's state at the end of an attempt. */
enum outcome_state {
  OUTCOME_PENDING = 0, /* not tried (shutdown, removed, cut off) */
  OUTCOME_DELIVERED,   /* the server took it */
  OUTCOME_TEMPFAIL,    /* defer, or expire */
  OUTCOME_PERMFAIL,    /* bounce */
  OUTCOME_NEXT_TX,     /* waits for a further transaction (452) */
  OUTCOME_FINAL,       /* already final in the store (not in the envelope) */
  OUTCOME_WAITING,     /* not tried: a deadline job (sched.h), no attempt */
};
const char *outcome_state_name(enum outcome_state s);

/* What the caller logs and counts for a recipient. */
enum outcome_event {
  OUTCOME_EV_NONE = 0,  /* unchanged, nothing to say */
  OUTCOME_EV_DELIVERED, /* "delivered" */
  OUTCOME_EV_DEFERRED,  /* "deferred" with next_at */
  OUTCOME_EV_BOUNCED,   /* "bounced" */
  OUTCOME_EV_EXPIRED,   /* "expired", then "bounced" */
};
const char *outcome_event_name(enum outcome_event e);

/* One recipient as the attempt left it.  Strings are borrowed. */
struct outcome_rcpt {
  int idx;          /* position in the message (store, scheduler) */
  int attempts;     /* attempts before this one */
  const char *addr; /* NULL when unknown (already final) */
  const char *orcpt;
  unsigned notify; /* enum dsn_notify bits */
  enum outcome_state state;
  const char *err;    /* the reply or local reason, "" when none */
  const char *status; /* enhanced status code, "" when none */
  const char *remote; /* host that answered, "" when none */
  /* DELIVERED to a next hop that does not offer DSN, so NOTIFY was not
   * passed on: a NOTIFY=SUCCESS is ours to answer ("relayed") */
  int relayed_no_dsn;
  /* WAITING: as stored (unix s; its state is queued when attempts is 0,
   * else deferred), kept when it neither expires nor changes */
  int64_t next_at_s;
};

/* The message.  Strings are borrowed. */
struct outcome_msg {
  const char *id;
  const char *sender;  /* "" null sender; NULL when the envelope is unknown */
  int64_t received_at; /* unix s */
  int removed;         /* deleted from the queue while in flight */
  unsigned notices;    /* STORE_NOTICE_* already sent (store, scheduler) */
};

/* The retry policy (from the configuration). */
struct outcome_policy {
  const uint64_t *retry_schedule_ms;
  int n_retry_schedule; /* > 0 */
  uint64_t queue_lifetime_ms;
  uint64_t delay_warning_ms; /* delay_warning_time; 0: no delay warnings */
};

/* Per recipient: what to log and count. */
struct outcome_note {
  enum outcome_event event;
  int attempts;       /* counting this one */
  int64_t next_at_s;  /* DEFERRED: unix s of the next attempt */
  const char *status; /* the status logged (dsn=) */
  const char *err;    /* the reason logged */
  char expired_err[OUTCOME_ERR_MAX + 96]; /* EXPIRED: err points here */
  char status_buf[16];                    /* WAITING: status may point here */
};

/* Caller-provided arrays, each with room for n (the recipients); the
 * function sets the counts.  store[].last_error and dsn[] point into the
 * inputs and notes: keep those alive while using the outputs. */
struct outcome_out {
  struct store_outcome *store;
  size_t nstore;
  struct sched_result *sched;
  size_t nsched;
  struct dsn_rcpt *dsn;
  size_t ndsn;
  struct outcome_note *notes; /* notes[i] is r[i]'s */
  /* Set when dsn[] holds delayed recipients: the message's one delay
   * warning goes out now (the first deferred store outcome carries
   * STORE_NOTICE_DELAY in set_notices, so it is remembered). */
  int delay_warned;
};

/*
 * Decides every recipient of one attempt at now_ms (unix ms):
 *  - PENDING, NEXT_TX: unchanged in the store, due again now;
 *  - DELIVERED: final;
 *  - TEMPFAIL: deferred along retry_schedule (attempts + 1), or, past
 *    queue_lifetime, bounced with 4.4.7 and the last error;
 *  - PERMFAIL: bounced;
 *  - FINAL: final in the scheduler, nothing written;
 *  - WAITING (a deadline job: no attempt was made, none is counted): past
 *    queue_lifetime bounced with 4.4.7 and its stored last error, attempts
 *    unchanged; else left as it is (the scheduler keeps its due time), its
 *    store row rewritten unchanged only to carry the delay warning's
 *    notice bit; its status is the class-4 form of the enhanced code of
 *    its stored error when that is an SMTP reply ("451 4.7.1 ..."), else
 *    4.0.0.
 * A message removed while in flight (m->removed) gets no store outcome and
 * no bounce whatever its recipients' states; only DELIVERED is reported.
 * A bounced recipient joins dsn[] when dsn_should_bounce() (RFC 3461 §4.1)
 * says so for m->sender.
 * Delay warnings (delay_warning_time, RFC 3464 "Action: delayed"): when
 * p->delay_warning_ms is set, the message has not had its warning yet
 * (no STORE_NOTICE_DELAY in m->notices) and it arrived at least that long
 * before now, every recipient deferred by this attempt (or left WAITING)
 * for which
 * dsn_should_delay() holds joins dsn[] as delayed, with Will-Retry-Until
 * at arrival + queue_lifetime.  Once per message: the caller then records
 * the notice (set_notices) and tells the scheduler.
 */
void outcome_decide(const struct outcome_msg *m, const struct outcome_rcpt *r,
                    size_t n, const struct outcome_policy *p, int64_t now_ms,
                    struct outcome_out *out);

/*
 * 1 when a reply to MAIL or RCPT from a relayhost refuses this relay rather
 * than the message (CONTRACT §4, issue 12): 530, or a 5xx reply with the
 * enhanced code 5.7.0, 5.7.1, 5.7.8, 5.7.9, 5.7.11, 5.7.14 or 5.7.57
 * (RFC 3463, RFC 4954 §6, RFC 7504-era registry).  Such a refusal is a
 * configuration problem: the recipient is deferred, never bounced.
 * esc: the reply's enhanced code ("" or NULL when none).
 */
int outcome_relay_refusal(int code, const char *esc);

/*
 * The status to record when a reply defers: its enhanced code in class 4
 * ("5.7.8" gives "4.7.8", "4.4.2" stays), or dflt when the reply has none
 * (esc "" or NULL).  out has room for cap bytes (16 is enough).
 */
void outcome_defer_status(const char *esc, const char *dflt, char *out,
                          size_t cap);

#endif
