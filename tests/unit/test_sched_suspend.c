/*
 * Unit tests of destination suspension (sched_suspend) on a real libuv loop
 * with an injected clock that moves only when the test moves it (issue 13: no
 * test depends on the machine's speed).  "Time passes" is advance(): the clock
 * jumps, the scheduler is kicked, and the loop runs until nothing more is
 * dispatched; every assertion is about order and counts, never about real time.
 * Every case closes the scheduler and requires uv_loop_close() to succeed.
 */
#include "queue/sched.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"

#define MAXJOBS 64

struct t {
  uv_loop_t loop;
  struct sched *s;
  int64_t off; /* the injected clock: unix ms, moved only by the test */
  int64_t backoff;
  struct sched_job *jobs[MAXJOBS]; /* in flight, in dispatch order */
  int njobs;
  int dispatched;
  char log[4096];
  /* auto mode: complete every job inside dispatch */
  int auto_done;
  int auto_ok;
  int64_t auto_retry; /* <0: FINAL; else retry after this many ms */
  size_t max_outbound_seen;
  int closed;
};

static int64_t tclock(void *data) {
  struct t *t = data;
  return t->off;
}

static int64_t tbackoff(const char *dest, unsigned fails, void *data) {
  (void)dest;
  (void)fails;
  return ((struct t *)data)->backoff;
}

static struct t *current;
static void done_all(struct sched *s, struct sched_job *job, int ok,
                     int64_t retry_in);

static void on_dispatch(struct sched *s, struct sched_job *job, void *data) {
  struct t *t = data;
  t->dispatched++;
  struct sched_stats st;
  sched_get_stats(s, &st);
  if (st.outbound > t->max_outbound_seen)
    t->max_outbound_seen = st.outbound;
  if (t->auto_done) {
    done_all(s, job, t->auto_ok, t->auto_retry);
    return;
  }
  size_t l = strlen(t->log);
  l += snprintf(t->log + l, sizeof t->log - l, "%s@%s:", job->id, job->dest);
  for (size_t i = 0; i < job->nrcpts; i++)
    l += snprintf(t->log + l, sizeof t->log - l, "%s%d", i ? "," : "",
                  job->rcpts[i].idx);
  snprintf(t->log + l, sizeof t->log - l, " ");
  if (t->njobs < MAXJOBS)
    t->jobs[t->njobs++] = job;
}

/* Runs the loop until the scheduler has nothing more to dispatch at the
 * current (injected) time: the timer it arms for due work has a delay of
 * 0 and fires on the next turn, so a few turns without a new dispatch
 * mean it is done.  Real time plays no part. */
static void settle(struct t *t) {
  int stable = 0, last = t->dispatched;
  for (int i = 0; i < 1000000 && stable < 4; i++) {
    uv_run(&t->loop, UV_RUN_NOWAIT);
    stable = t->dispatched == last ? stable + 1 : 0;
    last = t->dispatched;
  }
}

/* Time passes: the injected clock moves ms forward, then everything due by
 * then is dispatched. */
static void spin(struct t *t, int64_t ms) {
  t->off += ms;
  sched_kick(t->s);
  settle(t);
}

static void setup(struct t *t, unsigned max_out, unsigned max_dest) {
  memset(t, 0, sizeof *t);
  uv_loop_init(&t->loop);
  t->off = 1800000000000; /* unix ms, 2027 */
  t->backoff = 10000;
  t->auto_retry = -1;
  struct sched_opts o = {
      .max_outbound = max_out,
      .max_per_destination = max_dest,
      .dispatch = on_dispatch,
      .data = t,
      .now_ms = tclock,
      .backoff_ms = tbackoff,
  };
  t->s = sched_new(&t->loop, &o);
  CHECK(t->s != NULL);
}

static void on_closed(void *data) {
  ((struct t *)data)->closed++;
}

static void teardown(struct t *t) {
  sched_free(t->s, on_closed, t);
  uv_run(&t->loop, UV_RUN_DEFAULT);
  CHECK_INT(t->closed, 1);
  CHECK_INT(uv_loop_close(&t->loop), 0);
}

static int64_t now(struct t *t) {
  return tclock(t);
}

/* Adds a message whose recipients 0..n-1 go to dests[i], all due at due. */
static int add(struct t *t, const char *id, int held, int64_t due, int n,
               const char *const *dests) {
  struct sched_rcpt r[16];
  for (int i = 0; i < n; i++) {
    r[i].idx = i;
    r[i].dest = dests[i];
    r[i].attempts = 0;
    r[i].next_attempt_at = due;
  }
  struct sched_msg m = {.id = id,
                        .received_at = 1,
                        .size = 100,
                        .held = held,
                        .rcpts = r,
                        .nrcpts = (size_t)n};
  return sched_add(t->s, &m);
}

static int add1(struct t *t, const char *id, const char *dest, int64_t due) {
  const char *d[] = {dest};
  return add(t, id, 0, due, 1, d);
}

/* Completes a job from inside dispatch (auto mode): every recipient FINAL
 * (retry_in < 0) or RETRY after retry_in ms with attempts + 1. */
static void done_all(struct sched *s, struct sched_job *job, int ok,
                     int64_t retry_in) {
  struct sched_result r[64];
  size_t n = job->nrcpts < 64 ? job->nrcpts : 64;
  for (size_t i = 0; i < n; i++) {
    r[i].idx = job->rcpts[i].idx;
    r[i].outcome = retry_in < 0 ? SCHED_FINAL : SCHED_RETRY;
    r[i].attempts = job->rcpts[i].attempts + 1;
    r[i].retry_at = tclock(current) + (retry_in < 0 ? 0 : retry_in);
  }
  (void)sched_job_done(s, job, r, n, ok);
}

/* Finishes the i-th recorded job and forgets it. */
static int finish(struct t *t, int i, int ok, int64_t retry_in) {
  struct sched_job *job = t->jobs[i];
  struct sched_result r[16];
  for (size_t k = 0; k < job->nrcpts; k++) {
    r[k].idx = job->rcpts[k].idx;
    r[k].outcome = retry_in < 0 ? SCHED_FINAL : SCHED_RETRY;
    r[k].attempts = job->rcpts[k].attempts + 1;
    r[k].retry_at = now(t) + (retry_in < 0 ? 0 : retry_in);
  }
  memmove(t->jobs + i, t->jobs + i + 1, (t->njobs - i - 1) * sizeof *t->jobs);
  t->njobs--;
  return sched_job_done(t->s, job, r, job->nrcpts, ok);
}

static struct sched_stats stats(struct t *t) {
  struct sched_stats st;
  sched_get_stats(t->s, &st);
  return st;
}

/* ---- cases ------------------------------------------------------------ */

/* ---- suspension cases --------------------------------------------------- */

/* Suspended mail waits while other destinations go; flush does not
 * override it; no attempt is made; it goes when the time passes. */
static void test_suspend_waits_and_expires(void) {
  struct t t;
  setup(&t, 10, 10);
  current = &t;
  int64_t until = now(&t) + 3600000;
  CHECK_INT(sched_suspend(t.s, "s.example", until), 0);
  CHECK_INT(sched_suspended_until(t.s, "s.example"), until);
  CHECK_INT(sched_suspended_until(t.s, "o.example"), 0);
  /* a destination with no mail yet: mail that arrives waits */
  CHECK_INT(add1(&t, "S1", "s.example", 0), 0);
  CHECK_INT(add1(&t, "O1", "o.example", 0), 0);
  spin(&t, 5);
  CHECK_STR(t.log, "O1@o.example:0 ");
  CHECK_INT(finish(&t, 0, 1, -1), 0);
  /* flush (all, and the one message) does not override it */
  CHECK_INT(sched_flush(t.s, NULL), 0); /* S1 due anyway: not counted */
  CHECK_INT(sched_flush(t.s, "S1"), 1);
  spin(&t, 1000);
  CHECK_STR(t.log, "O1@o.example:0 ");
  /* nothing was attempted: the recipient is not deferred */
  CHECK_INT(stats(&t).deferred, 0);
  /* one ms before the end: still waiting; at the end: it goes */
  spin(&t, until - now(&t) - 1);
  CHECK_STR(t.log, "O1@o.example:0 ");
  spin(&t, 1);
  CHECK_STR(t.log, "O1@o.example:0 S1@s.example:0 ");
  CHECK_INT(sched_suspended_until(t.s, "s.example"), 0);
  CHECK_INT(t.njobs, 1);
  CHECK_INT(t.jobs[0]->rcpts[0].attempts, 0);
  CHECK_INT(finish(&t, 0, 1, -1), 0);
  /* expired: unsuspend says it was not suspended */
  CHECK_INT(sched_unsuspend(t.s, "s.example"), -ENOENT);
  teardown(&t);
}

/* A suspension made while mail waits takes it out at once; unsuspend
 * brings it back at its own due times; a job in flight finishes. */
static void test_suspend_existing_and_unsuspend(void) {
  struct t t;
  setup(&t, 10, 1);
  current = &t;
  CHECK_INT(add1(&t, "A1", "a.example", 0), 0);
  CHECK_INT(add1(&t, "A2", "a.example", 0), 0);
  CHECK_INT(add1(&t, "A3", "a.example", now(&t) + 60000), 0);
  spin(&t, 5);
  CHECK_STR(t.log, "A1@a.example:0 "); /* max_per_destination 1 */
  CHECK_INT(sched_suspend(t.s, "a.example", now(&t) + 7200000), 0);
  /* the job in flight finishes; nothing new starts */
  CHECK_INT(finish(&t, 0, 1, -1), 0);
  spin(&t, 120000);
  CHECK_STR(t.log, "A1@a.example:0 ");
  CHECK_INT(stats(&t).messages, 2);
  /* suspending again replaces the time (here: later) */
  CHECK_INT(sched_suspend(t.s, "a.example", now(&t) + 9000000), 0);
  CHECK_INT(sched_suspended_until(t.s, "a.example"), now(&t) + 9000000);
  CHECK_INT(sched_unsuspend(t.s, "a.example"), 0);
  CHECK_INT(sched_unsuspend(t.s, "a.example"), -ENOENT);
  spin(&t, 1);
  CHECK_STR(t.log, "A1@a.example:0 A2@a.example:0 ");
  CHECK_INT(finish(&t, 0, 1, -1), 0);
  spin(&t, 1);
  CHECK_STR(t.log, "A1@a.example:0 A2@a.example:0 A3@a.example:0 ");
  CHECK_INT(finish(&t, 0, 1, -1), 0);
  teardown(&t);
}

/* sched_suspensions_hold(0) (a drain to a peer): suspended mail goes,
 * the suspension stays listed; hold(1) holds new mail back again, and the
 * time sched_rcpt_next gives agrees with the dispatch. */
static void test_suspensions_not_held(void) {
  struct t t;
  setup(&t, 10, 10);
  current = &t;
  int64_t until = now(&t) + 3600000;
  CHECK_INT(sched_suspend(t.s, "s.example", until), 0);
  CHECK_INT(add1(&t, "S1", "s.example", 0), 0);
  spin(&t, 5);
  CHECK_STR(t.log, "");
  CHECK_INT(sched_rcpt_next(t.s, "S1", 0), until);
  sched_suspensions_hold(t.s, 0);
  CHECK(sched_rcpt_next(t.s, "S1", 0) < until);
  sched_suspensions_hold(t.s, 0); /* twice: no change */
  spin(&t, 1);
  CHECK_STR(t.log, "S1@s.example:0 ");
  CHECK_INT(finish(&t, 0, 1, -1), 0);
  CHECK_INT(sched_suspended_until(t.s, "s.example"), until);
  sched_suspensions_hold(t.s, 1);
  CHECK_INT(add1(&t, "S2", "s.example", 0), 0);
  spin(&t, 1000);
  CHECK_STR(t.log, "S1@s.example:0 ");
  /* with mail waiting: lifting and restoring moves it at once */
  sched_suspensions_hold(t.s, 0);
  spin(&t, 1);
  CHECK_STR(t.log, "S1@s.example:0 S2@s.example:0 ");
  CHECK_INT(finish(&t, 0, 1, -1), 0);
  sched_suspensions_hold(t.s, 1);
  teardown(&t);
}

/* A failing destination that is suspended: flush lifts the backoff but
 * not the suspension; the suspension outlives the destination's entries
 * (freed when idle) and applies to mail that arrives later. */
static void test_suspend_survives_idle_destination(void) {
  struct t t;
  setup(&t, 10, 10);
  current = &t;
  CHECK_INT(add1(&t, "B1", "b.example", 0), 0);
  spin(&t, 5);
  CHECK_INT(finish(&t, 0, 1, -1), 0); /* delivered: b.example idle */
  CHECK_INT(stats(&t).destinations, 0);
  CHECK_INT(sched_suspend(t.s, "b.example", now(&t) + 50000), 0);
  CHECK_INT(add1(&t, "B2", "b.example", 0), 0);
  spin(&t, 10000);
  CHECK_STR(t.log, "B1@b.example:0 ");
  CHECK_INT(sched_flush(t.s, "B2"), 1);
  spin(&t, 10000);
  CHECK_STR(t.log, "B1@b.example:0 ");
  spin(&t, 30000);
  CHECK_STR(t.log, "B1@b.example:0 B2@b.example:0 ");
  CHECK_INT(finish(&t, 0, 1, -1), 0);
  teardown(&t);
}

static void test_suspend_validation(void) {
  struct t t;
  setup(&t, 10, 10);
  current = &t;
  CHECK_INT(sched_suspend(t.s, "", now(&t) + 1000), -EINVAL);
  CHECK_INT(sched_suspend(t.s, "x.example", now(&t)), -EINVAL);
  char big[SCHED_DEST_MAX + 2];
  memset(big, 'a', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  CHECK_INT(sched_suspend(t.s, big, now(&t) + 1000), -EINVAL);
  CHECK_INT(sched_unsuspend(t.s, "x.example"), -ENOENT);
  /* many suspensions, all freed by teardown (ASan checks) */
  char key[32];
  for (int i = 0; i < 100; i++) {
    snprintf(key, sizeof key, "d%d.example", i);
    CHECK_INT(sched_suspend(t.s, key, now(&t) + 1000 + i), 0);
  }
  CHECK_INT(sched_suspended_until(t.s, "d99.example"), now(&t) + 1099);
  teardown(&t);
}

int main(void) {
  test_suspend_waits_and_expires();
  test_suspend_existing_and_unsuspend();
  test_suspend_survives_idle_destination();
  test_suspensions_not_held();
  test_suspend_validation();
  return check_result("test_sched_suspend");
}
