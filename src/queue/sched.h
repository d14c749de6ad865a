/*
 * sched: the in-memory delivery scheduler (ARCHITECTURE "The scheduler",
 * CONTRACT §4 backoff, §5 admin operations).
 *
 * Holds every non-final recipient of the queue in memory, grouped into
 * entries of (due time, message, destination): the recipients of one
 * message that share a destination key and a due time form one entry.
 * Entries wait in a min-heap per destination; destinations that may send
 * wait in one min-heap keyed by the time they may next send; ONE uv_timer_t
 * is armed for the earliest of them.  When it fires, due entries are handed
 * to the owner's dispatch callback as jobs, within the limits:
 *
 *   - at most max_outbound jobs in flight in total;
 *   - at most max_per_destination jobs in flight per destination, and only
 *     ONE (a probe) while the destination is failing (see below);
 *   - never for a destination that is backed off, while paused, after
 *     sched_stop(), or for a held message.
 *
 * Work blocked by a limit is not polled: the timer is re-armed when a job
 * finishes, a backoff ends or an admin operation changes something.
 * Across destinations the earliest due entry goes first; within a
 * destination entries go in due-time order.  At most SCHED_DISPATCH_BATCH jobs
 * are dispatched per timer callback, so a large due queue never stalls the
 * loop.
 *
 * Destination backoff: sched_job_done(..., dest_ok=0) (connection, greeting,
 * TLS/AUTH to a relayhost or DNS temporary failure of the destination as a
 * whole) counts a consecutive failure and blocks the destination until
 * now + backoff_ms(dest, fails).  When the block ends a single probe job is
 * sent; a job that reports dest_ok=1 clears the failures and, if the
 * destination was failing, brings all its waiting entries forward to now
 * (then paced by the limits).  So 20,000 messages to a dead relayhost give
 * one connection per backoff period, not a storm.
 *
 * Deadlines (CONTRACT §4 queue_lifetime, §2 delay_warning_time): when the
 * options set lifetime_ms or warn_ms, every message that has waiting
 * recipients is also keyed on its next deadline (received_at + lifetime_ms;
 * received_at + warn_ms while its warning is neither sent, see warned_bit,
 * nor handed out) in a heap of its own, which the same timer serves.  When
 * a deadline comes, whatever the backoff, suspension or rate limit of the
 * message's destinations and even while paused, the waiting recipients of
 * the message are handed to dispatch as ONE deadline job (job->deadline =
 * 1, all its destinations together): no delivery attempt is made for it;
 * the owner expires or warns (or leaves them) and ends it with
 * sched_job_done(), where FINAL drops a recipient and anything else leaves
 * it waiting with its due time and attempts unchanged (dest_ok is
 * ignored).  Meanwhile those recipients wait in no destination heap.  At
 * most SCHED_DEADLINE_INFLIGHT deadline jobs are in flight (they do not
 * count against max_outbound or any destination's limits or rates); a
 * message whose deadline job left it past a deadline is looked at again
 * SCHED_DEADLINE_AGAIN_MS later at the earliest.
 *
 * Times are unix milliseconds (int64_t) of ONE clock, the scheduler's:
 * the one given in the options (tests inject theirs), by default the
 * loop's uv_now() (monotonic) plus the wall-clock offset taken at
 * sched_new(), so it is wall time that never jumps when NTP steps the
 * system clock.  Every time the owner hands in (next_attempt_at, retry_at)
 * must be computed from sched_now(), never from the system's wall clock,
 * or a clock step would shift every retry.  The store keeps seconds of
 * this clock: the caller converts.
 *
 * The scheduler never touches SQLite, DNS, sockets or the log: it owns its
 * memory and its one timer handle; the owner wires it to the store (load at
 * start, results of attempts, admin operations).
 *
 * Callbacks are never called from inside a sched_* call: dispatch runs only
 * from the timer.  A dispatch callback may call any sched_* function except
 * sched_free() (including sched_job_done() on the job it was just given).
 *
 * Errors: negative errno values (-EINVAL, -EEXIST, -ENOENT, -ENOMEM).
 */
#ifndef MAILHOP_QUEUE_SCHED_H
#define MAILHOP_QUEUE_SCHED_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define SCHED_MUSTCHECK __attribute__((warn_unused_result))

/* Message ids: [A-Za-z0-9]{1,SCHED_ID_MAX}. */
#define SCHED_ID_MAX 32
#define SCHED_ID_SIZE (SCHED_ID_MAX + 1)

/* Destination keys: 1..SCHED_DEST_MAX bytes (a domain, lower case, or a
 * name such as "relayhost"; the caller chooses, the scheduler only
 * compares them byte for byte). */
#define SCHED_DEST_MAX 255

/* Jobs dispatched per timer callback at most. */
#define SCHED_DISPATCH_BATCH 256

/* Deadline jobs in flight at most, and the least wait before a message
 * that stayed past its deadline gets another (ms). */
#define SCHED_DEADLINE_INFLIGHT 64
#define SCHED_DEADLINE_AGAIN_MS 60000

struct sched;

/* ---- input ------------------------------------------------------------ */

struct sched_rcpt {
  int idx;                 /* recipient's position in the message (store) */
  const char *dest;        /* destination key (copied) */
  int attempts;            /* attempts so far */
  int64_t next_attempt_at; /* unix ms; 0 (or any past time) = now */
};

/* received_at for a message whose arrival the queue keeps in whole unix
 * seconds: the end of that second, so that its deadlines (received_at +
 * lifetime_ms, + warn_ms) never come before their time (CONTRACT §4
 * "past queue_lifetime"), at most 999 ms after it. */
static inline int64_t sched_arrival_ms(int64_t unix_s) {
  return unix_s * 1000 + 999;
}

struct sched_msg {
  const char *id;      /* copied */
  int64_t received_at; /* unix ms (sched_arrival_ms) */
  int64_t size;
  int held;
  unsigned notices; /* notice bits already sent (sched_add_notices) */
  const struct sched_rcpt *rcpts; /* non-final recipients only; copied */
  size_t nrcpts;
};

/* ---- jobs ------------------------------------------------------------- */

struct sched_job_rcpt {
  int idx;
  int attempts; /* attempts before this one */
};

/* Handed to dispatch; owned by the caller until it passes it to
 * sched_job_done() (exactly once).  All fields read-only. */
struct sched_job {
  char id[SCHED_ID_SIZE];
  const char *dest; /* valid until sched_job_done() */
  int64_t received_at;
  int64_t size;
  const struct sched_job_rcpt *rcpts; /* sorted by idx */
  size_t nrcpts;
  /* Set when sched_remove() deleted the message while the job was in
   * flight: the caller may abort the delivery; its results are ignored. */
  int removed;
  /* 1: a deadline job (see the top of this file): every waiting recipient
   * of the message, whatever its destination (dest is then the key of one
   * of them); make no delivery attempt, only expire or warn. */
  int deadline;
};

enum sched_outcome {
  SCHED_FINAL = 0, /* delivered or bounced: the recipient is dropped */
  SCHED_RETRY = 1, /* deferred: due again at retry_at */
};
const char *sched_outcome_name(enum sched_outcome o);

struct sched_result {
  int idx;
  enum sched_outcome outcome;
  int attempts;     /* RETRY: the attempt count now stored for it */
  int64_t retry_at; /* RETRY: unix ms (from the retry policy) */
};

/* ---- options ---------------------------------------------------------- */

typedef void (*sched_dispatch_cb)(struct sched *s, struct sched_job *job,
                                  void *data);
typedef int64_t (*sched_now_fn)(void *data);
/* Backoff of a failing destination after its fails-th consecutive failure
 * (fails >= 1), in ms. */
typedef int64_t (*sched_backoff_fn)(const char *dest, unsigned fails,
                                    void *data);
typedef void (*sched_close_cb)(void *data);

struct sched_opts {
  unsigned max_outbound;        /* >= 1 */
  unsigned max_per_destination; /* >= 1 */
  sched_dispatch_cb dispatch;   /* required */
  void *data;                   /* passed to dispatch, now_ms, backoff_ms */
  sched_now_fn now_ms;          /* NULL: uv_now() + wall offset at start */
  /* NULL: 60 s doubling per failure, at most 1 h. */
  sched_backoff_fn backoff_ms;
  /* Rate limits (CONTRACT §2 destination_rate, outbound_rate): at most
   * N jobs started in any window of window_ms (a sliding window), per
   * destination and over all destinations; n = 0: no limit.  N at most
   * SCHED_RATE_MAX, window_ms > 0 when n > 0. */
  unsigned dest_rate_n;
  int64_t dest_rate_ms;
  unsigned global_rate_n;
  int64_t global_rate_ms;
  /* Deadlines (see the top of this file), ms after received_at; 0: none.
   * warned_bit: the notice bit (sched_add_notices, sched_msg.notices)
   * that says the warning was sent; required when warn_ms > 0. */
  int64_t lifetime_ms;
  int64_t warn_ms;
  unsigned warned_bit;
};

/* The largest N of a rate limit: the scheduler keeps up to N start times
 * (8 bytes each) per limited destination while they are in the window. */
#define SCHED_RATE_MAX 100000

/* ---- life cycle ------------------------------------------------------- */

/* Creates a scheduler on `loop` (the timer handle is initialized here).
 * Returns NULL on ENOMEM or invalid options. */
struct sched *sched_new(uv_loop_t *loop, const struct sched_opts *o);

/* Stops dispatching for good (shutdown).  Jobs in flight still finish with
 * sched_job_done(); admin operations and counters keep working. */
void sched_stop(struct sched *s);

/* Closes the timer and frees everything, including jobs still in flight
 * (their pointers become invalid: call it after the last
 * sched_job_done(), or never use those jobs again).  cb(data) runs exactly
 * once from the handle's close callback, after the memory is released; cb
 * may be NULL.  Not from inside a dispatch callback. */
void sched_free(struct sched *s, sched_close_cb cb, void *data);

/* ---- queue ------------------------------------------------------------ */

/* Adds a message and its non-final recipients (everything is copied).
 * -EINVAL: bad id, no recipients, bad destination key; -EEXIST: the id is
 * already scheduled; -ENOMEM.  On error nothing is added. */
int sched_add(struct sched *s, const struct sched_msg *m) SCHED_MUSTCHECK;

/* Ends a job given to dispatch and frees it (a deadline job: see the top
 * of this file).  Each result is applied to
 * the job's recipient with that idx: FINAL drops it (the message leaves
 * the scheduler with its last recipient), RETRY re-schedules it at
 * retry_at with `attempts`.  A recipient of the job without a result is
 * re-queued due now with its attempts unchanged (e.g. a delivery cut off
 * at shutdown); results for other idx values are ignored.
 * dest_ok: 1 when the destination answered (an SMTP conversation took
 * place): clears its backoff and, if it was failing, brings its waiting
 * entries forward to now; 0 when the destination as a whole failed:
 * backs it off (see the top of this file).
 * Returns 0, or SCHED_JOB_REMOVED when the message was removed while the
 * job was in flight (results ignored; dest_ok still counts). */
#define SCHED_JOB_REMOVED 1
int sched_job_done(struct sched *s, struct sched_job *job,
                   const struct sched_result *results, size_t n, int dest_ok);

/* The scheduler's clock: unix ms (see the top of this file).  Owners
 * compute retry times from it. */
int64_t sched_now(const struct sched *s);

/* Re-reads the clock and re-arms the timer (after the injected clock
 * jumped, in tests). */
void sched_kick(struct sched *s);

/* ---- rate limits ------------------------------------------------------ */

/*
 * Rate limits are sliding windows: a job for a destination starts only if
 * fewer than N jobs for it started in the last window_ms (and likewise for
 * all destinations together).  Entries over a limit simply wait, their
 * attempts unchanged; the timer is armed for the moment the window
 * allows the next start (no polling).  Start times are kept in a ring per
 * destination that grows only while its starts fall inside the window
 * (at most N entries); an idle destination is forgotten once its last
 * start has left the window.
 */

/* Sets the rate of one destination key (a route's own `rate`), overriding
 * dest_rate_n/dest_rate_ms of the options; n = 0 removes the override
 * (the default applies again).  The setting is kept (bounded by the
 * number of distinct keys set) whether or not the destination has mail.
 * Starts already recorded count against the new limit.
 * 0, -EINVAL (bad key, n > SCHED_RATE_MAX, window_ms <= 0 with n > 0) or
 * -ENOMEM. */
int sched_set_dest_rate(struct sched *s, const char *dest, unsigned n,
                        int64_t window_ms) SCHED_MUSTCHECK;

/* ---- admin ------------------------------------------------------------ */

/* Makes the waiting recipients of message `id` (NULL: of every message)
 * due now and lifts the backoff of their destinations (a failing
 * destination still gets one probe first).  Those of a named message go
 * before every other entry of their destinations (so its probe is this
 * message; several named go in the order named) until dispatched.  Held
 * messages are skipped. Returns the number of messages made due (waiting, not
 * held), or -ENOENT for an unknown id. */
int sched_flush(struct sched *s, const char *id);
/* (With id NULL the count is of the messages the flush changed, CONTRACT
 * §1: with a waiting recipient due later than now or behind its
 * destination's backoff; never-tried mail held back only by pause or a
 * limit is made due, and not counted.) */

/* One message of a bulk flush by filter (CONTRACT §1): like
 * sched_flush(id) but without a place ahead in line, and it returns 1
 * only when it changed the message (as counted above), else 0 (held,
 * due anyway); -ENOENT for an unknown id. */
int sched_flush_match(struct sched *s, const char *id);

/* held=1: no dispatch of the message, not even by flush (a job already in
 * flight finishes); held=0: due again at its stored times.  0 or -ENOENT. */
int sched_hold(struct sched *s, const char *id, int held);

/* Forgets the message.  A job in flight for it gets job->removed = 1 and
 * sched_job_done() then returns SCHED_JOB_REMOVED.  0 or -ENOENT. */
int sched_remove(struct sched *s, const char *id);

/* Pauses (1) or resumes (0) all dispatching; jobs in flight finish. */
void sched_pause(struct sched *s, int paused);
int sched_paused(const struct sched *s);

/* 1 if the message is scheduled (not removed), else 0. */
int sched_has_message(const struct sched *s, const char *id);
/* 1 if the message is held, 0 if not, -ENOENT if unknown. */
int sched_held(const struct sched *s, const char *id);

/* Per-message notice bits the owner keeps in memory (the scheduler does
 * not interpret them; outbound uses them for "delay warning sent", so two
 * jobs of one message in flight at once send one).  sched_notices returns
 * the bits (0 for an unknown id); sched_add_notices ORs bits in (0 or
 * -ENOENT). */
unsigned sched_notices(const struct sched *s, const char *id);
int sched_add_notices(struct sched *s, const char *id, unsigned bits);

/* 1 while a job holding recipient idx of message id is in flight (admin
 * state "delivering"), else 0. */
int sched_rcpt_delivering(const struct sched *s, const char *id, int idx);

/* When recipient idx of message id is next tried, as the scheduler sees
 * it now (its clock, ms): its own retry time, or later when its
 * destination is backed off, suspended or at its rate limit.  -1 when the
 * scheduler does not hold it (final, in flight, held, not loaded yet). */
int64_t sched_rcpt_next(const struct sched *s, const char *id, int idx);

/* ---- destination suspension (CONTRACT §1 suspend, §5) ----------------- */

/*
 * A suspended destination gets no new job until the suspension ends or is
 * lifted: its entries wait with their attempts unchanged (nothing is
 * deferred or counted), sched_flush() does not override it, jobs already
 * in flight finish.  The suspension is kept by key whether or not the
 * destination has mail (mail that arrives later waits too); at most
 * SCHED_SUSPEND_MAX at a time.  The timer wakes the destination's mail
 * when the time is over.  Persisting it is the owner's business.
 */
#define SCHED_SUSPEND_MAX 10000

/* Suspends dest (a destination key, as sched_add gets them) until `until`
 * (unix ms of the scheduler's clock, after now); suspending again replaces
 * the time.  0, -EINVAL (bad key, until not in the future), -ENOSPC (too
 * many suspensions), -ENOMEM. */
int sched_suspend(struct sched *s, const char *dest, int64_t until);

/* Lifts the suspension: dest's mail is due again at its own times.
 * 0, or -ENOENT when dest was not suspended (or its time was over). */
int sched_unsuspend(struct sched *s, const char *dest);

/* Whether suspensions hold mail back (hold 1, the default) or not (0: a
 * drain handing the queue to a fleet peer, which is not a delivery to the
 * suspended destination).  The suspensions themselves are kept (listed,
 * ending at their time) and hold mail back again once hold is 1. */
void sched_suspensions_hold(struct sched *s, int hold);

/* The end of dest's suspension (unix ms), or 0 when it is not suspended. */
int64_t sched_suspended_until(const struct sched *s, const char *dest);

struct sched_suspension {
  const char *dest; /* valid until the next sched_* call */
  int64_t until;    /* unix ms */
};
/* Fills out[0..max) with the suspensions in force (any order, those over
 * forgotten) and returns how many there are (may exceed max). */
size_t sched_suspensions(struct sched *s, struct sched_suspension *out,
                         size_t max);

struct sched_stats {
  size_t messages;     /* scheduled messages */
  size_t recipients;   /* their non-final recipients (in flight included) */
  size_t deferred;     /* of those, with attempts > 0 */
  size_t held;         /* held messages */
  size_t outbound;     /* jobs in flight */
  size_t destinations; /* destinations known (waiting, busy or failing) */
};
void sched_get_stats(const struct sched *s, struct sched_stats *out);

/* Figures that need a walk over the tables (O(messages + destinations),
 * memory only; for status and metrics, not for hot paths). */
struct sched_scan {
  int64_t oldest_received_at; /* unix ms of the oldest message; 0: none */
  size_t backed_off;          /* destinations failing (backed off or
                                 waiting for their probe's answer) */
};
void sched_scan_stats(const struct sched *s, struct sched_scan *out);

#endif
