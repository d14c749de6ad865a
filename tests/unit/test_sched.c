/*
 * Unit tests of the scheduler on a real libuv loop with an injected clock
 * that moves only when the test moves it (issue 13: no test depends on the
 * machine's speed).  "Time passes" is advance(): the clock jumps, the
 * scheduler is kicked, and the loop runs until nothing more is dispatched;
 * every assertion is about order and counts, never about real time.
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
  int64_t starts[1024]; /* injected time of each dispatch */
  char start_dest[1024][16];
  int nstarts;
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
  if (t->nstarts < 1024) {
    snprintf(t->start_dest[t->nstarts], sizeof t->start_dest[0], "%s",
             job->dest);
    t->starts[t->nstarts++] = t->off;
  }
  struct sched_stats st;
  sched_get_stats(s, &st);
  if (st.outbound > t->max_outbound_seen)
    t->max_outbound_seen = st.outbound;
  if (t->auto_done) {
    done_all(s, job, t->auto_ok, t->auto_retry);
    return;
  }
  size_t l = strlen(t->log);
  l += snprintf(t->log + l, sizeof t->log - l,
                "%s%s@%s:", job->deadline ? "!" : "", job->id, job->dest);
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

/* Rate limits of the next setup() (0: none). */
static unsigned rate_dn, rate_gn;
static int64_t rate_dms, rate_gms;
/* Deadlines of the next setup() (0: none). */
static int64_t dl_life, dl_warn;

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
      .dest_rate_n = rate_dn,
      .dest_rate_ms = rate_dms,
      .global_rate_n = rate_gn,
      .global_rate_ms = rate_gms,
      .lifetime_ms = dl_life,
      .warn_ms = dl_warn,
      .warned_bit = 0x1,
  };
  dl_life = dl_warn = 0;
  rate_dn = rate_gn = 0;
  rate_dms = rate_gms = 0;
  t->s = sched_new(&t->loop, &o);
  CHECK(t->s != NULL);
}

static void on_closed(void *data) {
  ((struct t *)data)->closed++;
}

static void on_closed_count(void *data) {
  (*(int *)data)++;
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

static void test_add_validation(void) {
  struct t t;
  setup(&t, 4, 2);
  current = &t;
  const char *d[] = {"a.example", "a.example"};
  CHECK_INT(add1(&t, "bad-id", "a.example", 0), -EINVAL);
  CHECK_INT(add1(&t, "", "a.example", 0), -EINVAL);
  CHECK_INT(add1(&t, "A123456789012345678901234567890123", "a.example", 0),
            -EINVAL);
  CHECK_INT(add1(&t, "X1", "", 0), -EINVAL);
  CHECK_INT(add(&t, "X1", 0, 0, 0, d), -EINVAL);
  struct sched_rcpt dup[2] = {{0, "a.example", 0, 0}, {0, "b.example", 0, 0}};
  struct sched_msg m = {.id = "X1", .rcpts = dup, .nrcpts = 2};
  CHECK_INT(sched_add(t.s, &m), -EINVAL);
  CHECK_INT(add(&t, "X1", 1, 0, 2, d), 0);
  CHECK_INT(add1(&t, "X1", "a.example", 0), -EEXIST);
  CHECK_INT(sched_has_message(t.s, "X1"), 1);
  CHECK_INT(sched_has_message(t.s, "X2"), 0);
  CHECK_INT(stats(&t).messages, 1);
  CHECK_INT(stats(&t).recipients, 2);
  CHECK_INT(stats(&t).held, 1);
  CHECK_INT(sched_flush(t.s, "nope"), -ENOENT);
  CHECK_INT(sched_hold(t.s, "nope", 1), -ENOENT);
  CHECK_INT(sched_remove(t.s, "nope"), -ENOENT);
  teardown(&t);
}

static void test_order_by_due(void) {
  struct t t;
  setup(&t, 10, 10);
  current = &t;
  int64_t t0 = now(&t);
  CHECK_INT(add1(&t, "A", "a.example", t0 + 60), 0);
  CHECK_INT(add1(&t, "B", "b.example", t0 + 20), 0);
  CHECK_INT(add1(&t, "C", "c.example", t0 + 40), 0);
  CHECK_INT(add1(&t, "D", "d.example", 0), 0);
  spin(&t, 5);
  CHECK_STR(t.log, "D@d.example:0 ");
  spin(&t, 100);
  CHECK_STR(t.log, "D@d.example:0 B@b.example:0 C@c.example:0 A@a.example:0 ");
  CHECK_INT(stats(&t).outbound, 4);
  CHECK_INT(sched_rcpt_delivering(t.s, "B", 0), 1);
  while (t.njobs)
    CHECK_INT(finish(&t, 0, 1, -1), 0);
  CHECK_INT(sched_rcpt_delivering(t.s, "B", 0), 0);
  struct sched_stats st = stats(&t);
  CHECK_INT(st.messages, 0);
  CHECK_INT(st.recipients, 0);
  CHECK_INT(st.outbound, 0);
  CHECK_INT(st.destinations, 0);
  teardown(&t);
}

static void test_limits(void) {
  struct t t;
  setup(&t, 2, 1);
  current = &t;
  CHECK_INT(add1(&t, "A1", "a", 0), 0);
  CHECK_INT(add1(&t, "A2", "a", 0), 0);
  CHECK_INT(add1(&t, "B1", "b", 0), 0);
  CHECK_INT(add1(&t, "C1", "c", 0), 0);
  spin(&t, 20);
  /* A2 waits for a's slot; C1 for a global slot. */
  CHECK_STR(t.log, "A1@a:0 B1@b:0 ");
  CHECK_INT(stats(&t).outbound, 2);
  CHECK_INT(finish(&t, 0, 1, -1), 0); /* A1 */
  spin(&t, 10);
  CHECK_STR(t.log, "A1@a:0 B1@b:0 A2@a:0 ");
  CHECK_INT(finish(&t, 0, 1, -1), 0); /* B1 */
  spin(&t, 10);
  CHECK_STR(t.log, "A1@a:0 B1@b:0 A2@a:0 C1@c:0 ");
  while (t.njobs)
    CHECK_INT(finish(&t, 0, 1, -1), 0);
  CHECK_INT(t.max_outbound_seen, 2);
  teardown(&t);
}

static void test_grouping(void) {
  struct t t;
  setup(&t, 10, 10);
  current = &t;
  const char *d[] = {"x.example", "y.example", "x.example", "x.example"};
  struct sched_rcpt r[4];
  for (int i = 0; i < 4; i++) {
    r[i].idx = 3 - i; /* given out of order */
    r[i].dest = d[i];
    r[i].attempts = 0;
    r[i].next_attempt_at = 0;
  }
  r[3].next_attempt_at = now(&t) + 100000; /* idx 0: later */
  struct sched_msg m = {.id = "G", .rcpts = r, .nrcpts = 4};
  CHECK_INT(sched_add(t.s, &m), 0);
  spin(&t, 10);
  CHECK_STR(t.log, "G@x.example:1,3 G@y.example:2 ");
  CHECK_INT(finish(&t, 0, 1, -1), 0);
  CHECK_INT(finish(&t, 0, 1, 5000), 0); /* idx 2 deferred */
  CHECK_INT(stats(&t).deferred, 1);
  /* Flush: idx 0 (x) and idx 2 (y) are due now. */
  t.log[0] = 0;
  CHECK_INT(sched_flush(t.s, "G"), 1);
  spin(&t, 10);
  CHECK_CONTAINS(t.log, "G@x.example:0 ");
  CHECK_CONTAINS(t.log, "G@y.example:2 ");
  while (t.njobs)
    CHECK_INT(finish(&t, 0, 1, -1), 0);
  CHECK_INT(stats(&t).messages, 0);

  /* Entries of one message for one destination due together merge. */
  struct sched_rcpt r2[3] = {{0, "x.example", 1, now(&t) + 20},
                             {1, "x.example", 2, now(&t) + 30},
                             {2, "x.example", 0, now(&t) + 90000}};
  struct sched_msg m2 = {.id = "H", .rcpts = r2, .nrcpts = 3};
  CHECK_INT(sched_add(t.s, &m2), 0);
  CHECK_INT(stats(&t).deferred, 2);
  t.log[0] = 0;
  sched_pause(t.s, 1);
  spin(&t, 60);
  CHECK_STR(t.log, "");
  sched_pause(t.s, 0);
  spin(&t, 10);
  CHECK_STR(t.log, "H@x.example:0,1 ");
  CHECK_INT(t.jobs[0]->rcpts[0].attempts, 1);
  CHECK_INT(t.jobs[0]->rcpts[1].attempts, 2);
  CHECK_INT(finish(&t, 0, 1, -1), 0);
  CHECK_INT(stats(&t).recipients, 1);
  CHECK_INT(stats(&t).deferred, 0);
  teardown(&t);
}

static void test_retry(void) {
  struct t t;
  setup(&t, 10, 10);
  current = &t;
  CHECK_INT(add1(&t, "R", "r.example", 0), 0);
  spin(&t, 5);
  CHECK_INT(t.njobs, 1);
  CHECK_INT(t.jobs[0]->rcpts[0].attempts, 0);
  CHECK_INT(finish(&t, 0, 1, 30), 0);
  CHECK_INT(stats(&t).deferred, 1);
  CHECK_INT(stats(&t).recipients, 1);
  spin(&t, 10);
  CHECK_INT(t.njobs, 0);
  spin(&t, 60);
  CHECK_INT(t.njobs, 1);
  CHECK_INT(t.jobs[0]->rcpts[0].attempts, 1);
  CHECK_INT(finish(&t, 0, 1, -1), 0);
  CHECK_INT(stats(&t).messages, 0);
  CHECK_INT(stats(&t).deferred, 0);
  teardown(&t);
}

static void test_backoff(void) {
  struct t t;
  setup(&t, 20, 5);
  current = &t;
  t.backoff = 10000;
  char id[16];
  for (int i = 0; i < 5; i++) {
    snprintf(id, sizeof id, "D%d", i);
    CHECK_INT(add1(&t, id, "dead", 0), 0);
  }
  CHECK_INT(add1(&t, "K0", "ok", 0), 0);
  spin(&t, 10);
  CHECK_INT(t.njobs, 6);
  /* Find and fail the dead jobs: D0 retries now (it will be the probe),
   * the others in an hour. */
  for (int i = t.njobs - 1; i >= 0; i--) {
    if (strcmp(t.jobs[i]->dest, "dead") != 0)
      continue;
    int d0 = strcmp(t.jobs[i]->id, "D0") == 0;
    CHECK_INT(finish(&t, i, 0, d0 ? 0 : 3600000), 0);
  }
  CHECK_INT(stats(&t).deferred, 5);
  t.log[0] = 0;
  spin(&t, 30);
  CHECK_STR(t.log, "");               /* dead is backed off */
  CHECK_INT(finish(&t, 0, 1, -1), 0); /* K0 */
  CHECK_INT(add1(&t, "K1", "ok", 0), 0);
  spin(&t, 10);
  CHECK_STR(t.log, "K1@ok:0 "); /* others proceed */
  CHECK_INT(finish(&t, 0, 1, -1), 0);
  /* The backoff passes: exactly one probe. */
  t.off += 10000;
  sched_kick(t.s);
  t.log[0] = 0;
  spin(&t, 20);
  CHECK_STR(t.log, "D0@dead:0 ");
  /* A probe that fails again backs off again. */
  CHECK_INT(finish(&t, 0, 0, 0), 0);
  spin(&t, 20);
  CHECK_STR(t.log, "D0@dead:0 ");
  t.off += 10000;
  sched_kick(t.s);
  spin(&t, 20);
  CHECK_STR(t.log, "D0@dead:0 D0@dead:0 ");
  CHECK_INT(t.jobs[0]->rcpts[0].attempts, 2);
  /* Success: the hour-deferred entries come forward, 5 per destination. */
  CHECK_INT(finish(&t, 0, 1, -1), 0);
  spin(&t, 20);
  CHECK_INT(t.njobs, 4);
  CHECK_CONTAINS(t.log, "D1@dead:0 ");
  CHECK_CONTAINS(t.log, "D4@dead:0 ");
  while (t.njobs)
    CHECK_INT(finish(&t, 0, 1, -1), 0);
  CHECK_INT(stats(&t).messages, 0);
  teardown(&t);
}

static void test_flush_lifts_backoff(void) {
  struct t t;
  setup(&t, 20, 5);
  current = &t;
  CHECK_INT(add1(&t, "F1", "dead", 0), 0);
  CHECK_INT(add1(&t, "F2", "dead", 0), 0);
  spin(&t, 5);
  CHECK_INT(t.njobs, 2);
  CHECK_INT(finish(&t, 0, 0, 3600000), 0);
  CHECK_INT(finish(&t, 0, 0, 3600000), 0);
  t.log[0] = 0;
  CHECK_INT(sched_flush(t.s, NULL), 2);
  spin(&t, 10);
  /* Backoff lifted, but the failing destination gets one probe. */
  CHECK_INT(t.njobs, 1);
  CHECK_INT(finish(&t, 0, 1, -1), 0);
  spin(&t, 10);
  CHECK_INT(t.njobs, 1);
  CHECK_INT(finish(&t, 0, 1, -1), 0);
  CHECK_INT(stats(&t).messages, 0);
  teardown(&t);
}

/* `queue flush ID` on a backed-off destination: the named message is the
 * one retried now (its destination's one probe), not another message of
 * the destination that was due earlier. */
static void test_flush_id_first(void) {
  struct t t;
  setup(&t, 20, 5);
  current = &t;
  t.backoff = 3600000;
  CHECK_INT(add1(&t, "E1", "dead", 0), 0);
  CHECK_INT(add1(&t, "E2", "dead", 0), 0);
  CHECK_INT(add1(&t, "E3", "dead", 0), 0);
  spin(&t, 5);
  CHECK_INT(t.njobs, 3);
  /* E1 and E2 are due again soon, E3 in an hour; the destination is
   * backed off for an hour. */
  for (int i = t.njobs - 1; i >= 0; i--) {
    int e3 = strcmp(t.jobs[i]->id, "E3") == 0;
    CHECK_INT(finish(&t, i, 0, e3 ? 3600000 : 1000), 0);
  }
  t.log[0] = 0;
  spin(&t, 2000);
  CHECK_STR(t.log, "");
  CHECK_INT(sched_flush(t.s, "E3"), 1);
  spin(&t, 0);
  CHECK_STR(t.log, "E3@dead:0 ");
  CHECK_INT(t.jobs[0]->rcpts[0].attempts, 1);
  /* It fails again: backed off again, nobody else goes meanwhile. */
  CHECK_INT(finish(&t, 0, 0, 3600000), 0);
  spin(&t, 10);
  CHECK_STR(t.log, "E3@dead:0 ");
  /* Two named: the first named is the probe; its failure backs the
   * destination off again, the second waits (still first in line). */
  CHECK_INT(sched_flush(t.s, "E2"), 1);
  CHECK_INT(sched_flush(t.s, "E3"), 1);
  spin(&t, 0);
  CHECK_STR(t.log, "E3@dead:0 E2@dead:0 ");
  CHECK_INT(finish(&t, 0, 0, 1000), 0);
  spin(&t, 10);
  CHECK_STR(t.log, "E3@dead:0 E2@dead:0 ");
  CHECK_INT(sched_flush(t.s, "E3"), 1);
  spin(&t, 0);
  CHECK_STR(t.log, "E3@dead:0 E2@dead:0 E3@dead:0 ");
  CHECK_INT(finish(&t, 0, 1, -1), 0); /* delivered: the rest follow */
  spin(&t, 0);
  CHECK_INT(t.njobs, 2);
  while (t.njobs)
    CHECK_INT(finish(&t, 0, 1, -1), 0);
  CHECK_INT(stats(&t).messages, 0);
  teardown(&t);
}

/* Counts of flush (CONTRACT §1: what changed): a message counts when
 * one of its waiting recipients was due later or waited for its
 * destination's backoff; never-tried mail held back by pause, a held
 * message, do not.  sched_flush_match is the one-message form for bulk
 * pages (no place in line taken). */
static void test_flush_counts(void) {
  struct t t;
  setup(&t, 20, 5);
  current = &t;
  t.backoff = 3600000;
  CHECK_INT(add1(&t, "B1", "dead", 0), 0);
  spin(&t, 0);
  CHECK_INT(finish(&t, 0, 0, 0), 0); /* due now, behind a backoff */
  sched_pause(t.s, 1);
  CHECK_INT(add1(&t, "N1", "n.example", 0), 0);
  CHECK_INT(add1(&t, "N2", "n.example", 0), 0);
  CHECK_INT(add1(&t, "L1", "l.example", now(&t) + 3600000), 0);
  CHECK_INT(add1(&t, "L2", "l.example", now(&t) + 3600000), 0);
  const char *d[] = {"l.example"};
  CHECK_INT(add(&t, "H1", 1, now(&t) + 3600000, 1, d), 0);
  CHECK_INT(sched_flush_match(t.s, "N1"), 0);
  CHECK_INT(sched_flush_match(t.s, "L2"), 1);
  CHECK_INT(sched_flush_match(t.s, "L2"), 0); /* due now already */
  CHECK_INT(sched_flush_match(t.s, "H1"), 0);
  CHECK_INT(sched_flush_match(t.s, "nope"), -ENOENT);
  CHECK_INT(sched_flush(t.s, NULL), 2); /* B1, L1 */
  CHECK_INT(sched_flush(t.s, NULL), 0);
  sched_pause(t.s, 0);
  spin(&t, 0);
  CHECK_INT(t.njobs, 5);
  while (t.njobs)
    CHECK_INT(finish(&t, 0, 1, -1), 0);
  CHECK_INT(sched_hold(t.s, "H1", 0), 0);
  CHECK_INT(sched_remove(t.s, "H1"), 0);
  teardown(&t);
}

static void test_hold(void) {
  struct t t;
  setup(&t, 10, 10);
  current = &t;
  const char *d[] = {"h.example"};
  CHECK_INT(add(&t, "H1", 1, 0, 1, d), 0);
  CHECK_INT(sched_held(t.s, "H1"), 1);
  CHECK_INT(sched_flush(t.s, "H1"), 0);
  CHECK_INT(sched_flush(t.s, NULL), 0);
  spin(&t, 20);
  CHECK_STR(t.log, "");
  CHECK_INT(sched_hold(t.s, "H1", 0), 0);
  CHECK_INT(stats(&t).held, 0);
  spin(&t, 10);
  CHECK_STR(t.log, "H1@h.example:0 ");
  /* Held while in flight: the job finishes, its retry stays parked. */
  CHECK_INT(sched_hold(t.s, "H1", 1), 0);
  CHECK_INT(finish(&t, 0, 1, 0), 0);
  spin(&t, 20);
  CHECK_STR(t.log, "H1@h.example:0 ");
  /* Release: due at its stored time (later), not at once. */
  int64_t t0 = now(&t);
  CHECK_INT(add1(&t, "H2", "h.example", t0 + 100000), 0);
  CHECK_INT(sched_hold(t.s, "H2", 1), 0);
  CHECK_INT(sched_hold(t.s, "H2", 0), 0);
  CHECK_INT(sched_hold(t.s, "H1", 0), 0);
  spin(&t, 20);
  CHECK_STR(t.log, "H1@h.example:0 H1@h.example:0 ");
  CHECK_INT(finish(&t, 0, 1, -1), 0);
  CHECK_INT(sched_flush(t.s, "H2"), 1);
  spin(&t, 10);
  CHECK_STR(t.log, "H1@h.example:0 H1@h.example:0 H2@h.example:0 ");
  CHECK_INT(finish(&t, 0, 1, -1), 0);
  teardown(&t);
}

/* Notice bits (delay warning sent): kept per message, ORed in, 0 and
 * -ENOENT for an unknown id, gone with the message. */
static void test_notices(void) {
  struct t t;
  setup(&t, 10, 10);
  current = &t;
  CHECK_INT(add1(&t, "N1", "n.example", now(&t) + 100000), 0);
  CHECK_INT(sched_notices(t.s, "N1"), 0);
  CHECK_INT(sched_add_notices(t.s, "N1", 0x1), 0);
  CHECK_INT(sched_add_notices(t.s, "N1", 0x2), 0);
  CHECK_INT(sched_add_notices(t.s, "N1", 0x1), 0);
  CHECK_INT(sched_notices(t.s, "N1"), 0x3);
  CHECK_INT(sched_notices(t.s, "nope"), 0);
  CHECK_INT(sched_notices(t.s, NULL), 0);
  CHECK_INT(sched_add_notices(t.s, "nope", 0x1), -ENOENT);
  CHECK_INT(sched_remove(t.s, "N1"), 0);
  CHECK_INT(sched_notices(t.s, "N1"), 0);
  teardown(&t);
}

static void test_remove(void) {
  struct t t;
  setup(&t, 10, 10);
  current = &t;
  const char *d[] = {"a.example", "b.example"};
  CHECK_INT(add(&t, "M1", 0, 0, 2, d), 0);
  CHECK_INT(add1(&t, "M2", "a.example", now(&t) + 50), 0);
  spin(&t, 10);
  CHECK_INT(t.njobs, 2);
  CHECK_INT(sched_remove(t.s, "M1"), 0);
  CHECK_INT(t.jobs[0]->removed, 1);
  CHECK_INT(t.jobs[1]->removed, 1);
  CHECK_INT(sched_has_message(t.s, "M1"), 0);
  CHECK_INT(sched_rcpt_delivering(t.s, "M1", 0), 0);
  CHECK_INT(stats(&t).messages, 1);
  CHECK_INT(stats(&t).recipients, 1);
  CHECK_INT(finish(&t, 0, 1, 0), SCHED_JOB_REMOVED);
  CHECK_INT(sched_remove(t.s, "M2"), 0); /* waiting: never dispatched */
  spin(&t, 80);
  CHECK_INT(t.njobs, 1);
  CHECK_INT(finish(&t, 0, 1, -1), SCHED_JOB_REMOVED);
  struct sched_stats st = stats(&t);
  CHECK_INT(st.messages, 0);
  CHECK_INT(st.recipients, 0);
  CHECK_INT(st.outbound, 0);
  /* A removed message still in flight is freed by sched_free too. */
  CHECK_INT(add1(&t, "M3", "a.example", 0), 0);
  spin(&t, 10);
  CHECK_INT(sched_remove(t.s, "M3"), 0);
  teardown(&t);
}

static void test_pause_stop(void) {
  struct t t;
  setup(&t, 10, 10);
  current = &t;
  sched_pause(t.s, 1);
  CHECK_INT(sched_paused(t.s), 1);
  CHECK_INT(add1(&t, "P", "p", 0), 0);
  spin(&t, 20);
  CHECK_INT(t.dispatched, 0);
  sched_pause(t.s, 0);
  CHECK_INT(sched_paused(t.s), 0);
  spin(&t, 10);
  CHECK_INT(t.dispatched, 1);
  sched_stop(t.s);
  CHECK_INT(finish(&t, 0, 1, 0), 0);
  spin(&t, 20);
  CHECK_INT(t.dispatched, 1);
  CHECK_INT(stats(&t).recipients, 1);
  teardown(&t);
}

/* dest_ok=0 answered inside dispatch: one probe per backoff period. */
static void test_no_storm(void) {
  struct t t;
  setup(&t, 100, 10);
  current = &t;
  t.backoff = 50;
  t.auto_done = 1;
  t.auto_ok = 0;
  t.auto_retry = 0;
  char id[16];
  for (int i = 0; i < 20000; i++) {
    snprintf(id, sizeof id, "S%d", i);
    CHECK_INT(add1(&t, id, "relayhost", 0), 0);
  }
  settle(&t);
  CHECK_INT(t.dispatched, 1); /* the first attempt fails: backed off */
  spin(&t, 49);
  CHECK_INT(t.dispatched, 1); /* still inside the backoff */
  spin(&t, 1);
  CHECK_INT(t.dispatched, 2); /* one probe when it ends */
  for (int i = 0; i < 4; i++)
    spin(&t, 50);
  CHECK_INT(t.dispatched, 6); /* and one per period after that */
  CHECK_INT(stats(&t).messages, 20000);
  teardown(&t);
}

/* One clock: sched_now() is the injected clock, and the default clock is
 * wall time (unix ms) taken from the loop's monotonic clock. */
static void test_clock(void) {
  struct t t;
  setup(&t, 1, 1);
  current = &t;
  CHECK(sched_now(t.s) == t.off);
  spin(&t, 12345);
  CHECK(sched_now(t.s) == 1800000000000 + 12345);
  teardown(&t);

  uv_loop_t loop;
  uv_loop_init(&loop);
  struct sched_opts o = {
      .max_outbound = 1, .max_per_destination = 1, .dispatch = on_dispatch};
  struct sched *s = sched_new(&loop, &o);
  CHECK(s != NULL);
  int64_t wall = (int64_t)time(NULL) * 1000;
  int64_t d = sched_now(s) - wall;
  CHECK(d > -60000 && d < 60000); /* a generous bound: the same epoch */
  int closed = 0;
  sched_free(s, on_closed_count, &closed);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(closed, 1);
  CHECK_INT(uv_loop_close(&loop), 0);
}

/* 100,000 recipients in, drained through the limits. */
static void test_scale(void) {
  struct t t;
  setup(&t, 100, 10);
  current = &t;
  t.auto_done = 1;
  t.auto_ok = 1;
  char id[16], dest[16];
  for (int i = 0; i < 100000; i++) {
    snprintf(id, sizeof id, "Z%d", i);
    snprintf(dest, sizeof dest, "d%d", i % 1000);
    CHECK_INT(add1(&t, id, dest, 0), 0);
  }
  CHECK_INT(stats(&t).recipients, 100000);
  CHECK_INT(stats(&t).destinations, 1000);
  CHECK_INT(sched_flush(t.s, NULL), 0); /* all due already: none changed */
  uv_run(&t.loop, UV_RUN_DEFAULT);      /* returns when nothing is left */
  CHECK_INT(t.dispatched, 100000);
  CHECK_INT(stats(&t).messages, 0);
  CHECK_INT(stats(&t).destinations, 0);
  CHECK(t.max_outbound_seen <= 100);
  teardown(&t);
}

/* ---- rate limits ------------------------------------------------------ */

/* The most starts (for dest, or for all when dest is NULL) that fall in
 * any window [x, x + win) of the recorded starts. */
static int max_in_window(const struct t *t, const char *dest, int64_t win) {
  int best = 0;
  for (int i = 0; i < t->nstarts; i++) {
    if (dest && strcmp(t->start_dest[i], dest) != 0)
      continue;
    int n = 0;
    for (int k = 0; k < t->nstarts; k++)
      if ((!dest || strcmp(t->start_dest[k], dest) == 0) &&
          t->starts[k] >= t->starts[i] && t->starts[k] < t->starts[i] + win)
        n++;
    if (n > best)
      best = n;
  }
  return best;
}

/* destination_rate 3/1000ms: 3 start at once, the rest wait with their
 * attempts unchanged until the window allows, per destination. */
static void test_dest_rate(void) {
  struct t t;
  rate_dn = 3;
  rate_dms = 1000;
  setup(&t, 100, 10);
  current = &t;
  t.auto_done = 1;
  t.auto_ok = 1;
  char id[16];
  for (int i = 0; i < 10; i++) {
    snprintf(id, sizeof id, "A%d", i);
    CHECK_INT(add1(&t, id, "a.example", 0), 0);
  }
  for (int i = 0; i < 2; i++) {
    snprintf(id, sizeof id, "B%d", i);
    CHECK_INT(add1(&t, id, "b.example", 0), 0);
  }
  spin(&t, 0);
  CHECK_INT(t.dispatched, 5); /* 3 to a, 2 to b: b has its own window */
  CHECK_INT(stats(&t).messages, 7);
  CHECK_INT(stats(&t).deferred, 0); /* waiting is not an attempt */
  spin(&t, 999);
  CHECK_INT(t.dispatched, 5);
  spin(&t, 1);
  CHECK_INT(t.dispatched, 8);
  spin(&t, 1000);
  CHECK_INT(t.dispatched, 11);
  spin(&t, 1000);
  CHECK_INT(t.dispatched, 12);
  CHECK_INT(stats(&t).messages, 0);
  CHECK_INT(max_in_window(&t, "a.example", 1000), 3);
  /* The destinations are kept while their windows run, then forgotten. */
  CHECK(stats(&t).destinations >= 1);
  spin(&t, 1000);
  CHECK_INT(add1(&t, "C0", "c.example", 0), 0);
  spin(&t, 0);
  CHECK_INT(stats(&t).destinations, 1); /* c.example's window runs */
  teardown(&t);
}

/* A sliding window, not a bucket: starts at t0 and t0+500 leave room at
 * t0+1000 only for what left the window. */
static void test_rate_sliding(void) {
  struct t t;
  rate_dn = 3;
  rate_dms = 1000;
  setup(&t, 100, 10);
  current = &t;
  t.auto_done = 1;
  t.auto_ok = 1;
  CHECK_INT(add1(&t, "A0", "a", 0), 0);
  spin(&t, 0);
  CHECK_INT(t.dispatched, 1);
  spin(&t, 500);
  char id[16];
  for (int i = 1; i < 8; i++) {
    snprintf(id, sizeof id, "A%d", i);
    CHECK_INT(add1(&t, id, "a", 0), 0);
  }
  spin(&t, 0);
  CHECK_INT(t.dispatched, 3); /* A1, A2: 3 in [t0, t0+1000) */
  spin(&t, 499);
  CHECK_INT(t.dispatched, 3);
  spin(&t, 1); /* t0+1000: A0 left the window, only one may start */
  CHECK_INT(t.dispatched, 4);
  spin(&t, 499);
  CHECK_INT(t.dispatched, 4);
  spin(&t, 1); /* t0+1500: A1 and A2 left it */
  CHECK_INT(t.dispatched, 6);
  spin(&t, 10000);
  CHECK_INT(t.dispatched, 8);
  CHECK_INT(max_in_window(&t, "a", 1000), 3);
  teardown(&t);
}

/* outbound_rate 2/100ms over all destinations; retries count as starts
 * too, and a flush does not override the limit. */
static void test_global_rate(void) {
  struct t t;
  rate_gn = 2;
  rate_gms = 100;
  setup(&t, 100, 10);
  current = &t;
  t.auto_done = 1;
  t.auto_ok = 1;
  char id[16], dest[16];
  for (int i = 0; i < 9; i++) {
    snprintf(id, sizeof id, "G%d", i);
    snprintf(dest, sizeof dest, "d%d", i);
    CHECK_INT(add1(&t, id, dest, 0), 0);
  }
  spin(&t, 0);
  CHECK_INT(t.dispatched, 2);
  CHECK_INT(sched_flush(t.s, NULL), 0); /* due, held back by the rate */
  settle(&t);
  CHECK_INT(t.dispatched, 2);
  spin(&t, 50);
  CHECK_INT(t.dispatched, 2);
  spin(&t, 50);
  CHECK_INT(t.dispatched, 4);
  for (int i = 0; i < 3; i++)
    spin(&t, 100);
  CHECK_INT(t.dispatched, 9);
  CHECK_INT(max_in_window(&t, NULL, 100), 2);
  teardown(&t);
}

/* A route's own rate (sched_set_dest_rate) overrides the default for its
 * key only, also for a destination that already has mail waiting. */
static void test_dest_rate_override(void) {
  struct t t;
  setup(&t, 100, 10);
  current = &t;
  t.auto_done = 1;
  t.auto_ok = 1;
  CHECK_INT(sched_set_dest_rate(t.s, "", 1, 10), -EINVAL);
  CHECK_INT(sched_set_dest_rate(t.s, "x", SCHED_RATE_MAX + 1, 10), -EINVAL);
  CHECK_INT(sched_set_dest_rate(t.s, "x", 1, 0), -EINVAL);
  CHECK_INT(sched_set_dest_rate(t.s, "slow", 1, 1000), 0);
  char id[16];
  for (int i = 0; i < 4; i++) {
    snprintf(id, sizeof id, "S%d", i);
    CHECK_INT(add1(&t, id, "slow", 0), 0);
    snprintf(id, sizeof id, "F%d", i);
    CHECK_INT(add1(&t, id, "fast", 0), 0);
  }
  spin(&t, 0);
  CHECK_INT(t.dispatched, 5); /* 4 fast, 1 slow */
  /* Tightened while mail waits: the start already made counts. */
  t.auto_done = 0;
  CHECK_INT(add1(&t, "H0", "held.example", 0), 0);
  CHECK_INT(add1(&t, "H1", "held.example", 0), 0);
  CHECK_INT(sched_set_dest_rate(t.s, "held.example", 1, 1000), 0);
  spin(&t, 0);
  CHECK_INT(t.dispatched, 6);
  CHECK_INT(finish(&t, 0, 1, -1), 0);
  t.auto_done = 1;
  spin(&t, 999);
  CHECK_INT(t.dispatched, 6);
  spin(&t, 1);
  CHECK_INT(t.dispatched, 8); /* slow's next and held.example's second */
  /* Removing the override: the default (none) applies again. */
  CHECK_INT(sched_set_dest_rate(t.s, "slow", 0, 0), 0);
  settle(&t);
  CHECK_INT(t.dispatched, 10);
  CHECK_INT(stats(&t).messages, 0);
  teardown(&t);
}

static void test_rate_validation(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct sched_opts o = {.max_outbound = 1,
                         .max_per_destination = 1,
                         .dispatch = on_dispatch,
                         .dest_rate_n = SCHED_RATE_MAX + 1,
                         .dest_rate_ms = 1000};
  CHECK(sched_new(&loop, &o) == NULL);
  o.dest_rate_n = 1;
  o.dest_rate_ms = 0;
  CHECK(sched_new(&loop, &o) == NULL);
  o.dest_rate_n = 0;
  o.global_rate_n = 5;
  CHECK(sched_new(&loop, &o) == NULL);
  CHECK_INT(uv_loop_close(&loop), 0);
}

/* A large N keeps only the starts of one window: 20,000 starts under a
 * 100000/1h limit, then none held back by a 5/1s limit per destination
 * over 2,000 destinations. */
static void test_rate_scale(void) {
  struct t t;
  rate_dn = 5;
  rate_dms = 1000;
  rate_gn = SCHED_RATE_MAX;
  rate_gms = 3600000;
  setup(&t, 100, 10);
  current = &t;
  t.auto_done = 1;
  t.auto_ok = 1;
  char id[16], dest[16];
  for (int i = 0; i < 20000; i++) {
    snprintf(id, sizeof id, "R%d", i);
    snprintf(dest, sizeof dest, "d%d", i % 2000);
    CHECK_INT(add1(&t, id, dest, 0), 0);
  }
  spin(&t, 0);
  CHECK_INT(t.dispatched, 10000); /* 5 per destination */
  spin(&t, 1000);
  CHECK_INT(t.dispatched, 20000);
  CHECK_INT(stats(&t).messages, 0);
  teardown(&t);
}

/* Adds a message received at `received` with one recipient per dest. */
static int add_at(struct t *t, const char *id, int64_t received, int n,
                  const char *const *dests, int64_t due) {
  struct sched_rcpt r[16];
  for (int i = 0; i < n; i++)
    r[i] = (struct sched_rcpt){
        .idx = i, .dest = dests[i], .attempts = 0, .next_attempt_at = due};
  struct sched_msg m = {.id = id,
                        .received_at = received,
                        .size = 100,
                        .rcpts = r,
                        .nrcpts = (size_t)n};
  return sched_add(t->s, &m);
}

/* Ends recorded job i: every recipient FINAL (final) or left (a deadline
 * job's RETRY with attempts unchanged). */
static int finish_deadline(struct t *t, int i, int final) {
  struct sched_job *job = t->jobs[i];
  CHECK_INT(job->deadline, 1);
  struct sched_result r[16];
  for (size_t k = 0; k < job->nrcpts; k++)
    r[k] = (struct sched_result){.idx = job->rcpts[k].idx,
                                 .outcome = final ? SCHED_FINAL : SCHED_RETRY,
                                 .attempts = job->rcpts[k].attempts,
                                 .retry_at = now(t)};
  memmove(t->jobs + i, t->jobs + i + 1, (t->njobs - i - 1) * sizeof *t->jobs);
  t->njobs--;
  return sched_job_done(t->s, job, r, job->nrcpts, 0);
}

/* Deadlines (queue_lifetime, delay_warning_time) come at their time for
 * mail queued behind a backed-off, suspended or rate-limited destination:
 * one deadline job per message, no attempt counted, no probe used. */
static void test_deadlines(void) {
  struct t t;
  dl_life = 15000;
  dl_warn = 6000;
  setup(&t, 20, 5);
  current = &t;
  t.backoff = 5000;
  int64_t t0 = now(&t);
  char id[16];
  const char *dead[] = {"dead"};
  for (int i = 0; i < 6; i++) {
    snprintf(id, sizeof id, "D%d", i);
    CHECK_INT(add_at(&t, id, t0, 1, dead, 0), 0);
  }
  spin(&t, 0);
  CHECK_INT(t.njobs, 5); /* max_per_destination */
  /* All fail: the destination backs off; the sixth waits. */
  while (t.njobs)
    CHECK_INT(finish(&t, 0, 0, 5000), 0);
  t.log[0] = 0;
  spin(&t, 5000); /* t0+5s: the single probe */
  CHECK_INT(t.njobs, 1);
  CHECK_INT(t.jobs[0]->deadline, 0);
  CHECK_INT(finish(&t, 0, 0, 5000), 0);
  t.log[0] = 0;
  spin(&t, 999);
  CHECK_STR(t.log, "");
  /* t0+6s: every message gets its warning deadline, none an attempt. */
  spin(&t, 1);
  CHECK_INT(t.njobs, 6);
  for (int i = 0; i < 6; i++) {
    CHECK_INT(t.jobs[i]->deadline, 1);
    CHECK_INT(t.jobs[i]->nrcpts, 1);
  }
  CHECK_INT(stats(&t).outbound, 0); /* no delivery slot taken */
  size_t deferred = stats(&t).deferred;
  while (t.njobs)
    CHECK_INT(finish_deadline(&t, 0, 0), 0);
  CHECK_INT(stats(&t).deferred, deferred); /* nothing counted */
  CHECK_INT(stats(&t).recipients, 6);
  /* The warning is handed out once: the probes go on, no deadline job
   * until the lifetime. */
  for (int k = 0; k < 8; k++) {
    t.log[0] = 0;
    spin(&t, 1000);
    CHECK(strchr(t.log, '!') == NULL);
    for (int i = t.njobs - 1; i >= 0; i--)
      CHECK_INT(finish(&t, i, 0, 5000), 0);
  }
  /* t0+14s -> t0+15s: all six expire at once, whatever the backoff. */
  t.log[0] = 0;
  spin(&t, 1000);
  int deadlines = 0;
  for (int i = 0; i < t.njobs; i++)
    deadlines += t.jobs[i]->deadline;
  CHECK_INT(deadlines, 6);
  for (int i = t.njobs - 1; i >= 0; i--)
    if (t.jobs[i]->deadline)
      CHECK_INT(finish_deadline(&t, i, 1), 0);
  while (t.njobs)
    CHECK_INT(finish(&t, 0, 0, 5000), 0);
  CHECK_INT(stats(&t).messages, 0);
  CHECK_INT(stats(&t).recipients, 0);
  teardown(&t);

  /* A suspended destination, a held message, a sent warning, a message
   * spread over two destinations, a removal while the job is out. */
  dl_life = 15000;
  dl_warn = 6000;
  setup(&t, 20, 5);
  current = &t;
  t0 = now(&t);
  CHECK_INT(sched_suspend(t.s, "susp", t0 + 3600000), 0);
  const char *two[] = {"susp", "other"};
  CHECK_INT(add_at(&t, "S1", t0, 2, two, t0 + 3600000), 0);
  const char *one[] = {"susp"};
  CHECK_INT(add_at(&t, "H1", t0, 1, one, 0), 0);
  CHECK_INT(sched_hold(t.s, "H1", 1), 0);
  CHECK_INT(add_at(&t, "W1", t0, 1, one, 0), 0);
  CHECK_INT(sched_add_notices(t.s, "W1", 0x1), 0); /* warned already */
  CHECK_INT(add_at(&t, "R1", t0, 1, one, 0), 0);
  t.log[0] = 0;
  spin(&t, 6000);
  /* S1: one job with both recipients; R1; not W1 (warned), not H1. */
  CHECK_INT(t.njobs, 2);
  CHECK(strstr(t.log, "!S1@") != NULL);
  CHECK(strstr(t.log, "!R1@susp:0 ") != NULL);
  int si = strcmp(t.jobs[0]->id, "S1") == 0 ? 0 : 1;
  CHECK_INT(t.jobs[si]->nrcpts, 2);
  CHECK_INT(sched_remove(t.s, "R1"), 0);
  CHECK_INT(finish_deadline(&t, 1 - si, 0), SCHED_JOB_REMOVED);
  /* Release while S1's job is out changes nothing of its recipients. */
  CHECK_INT(finish_deadline(&t, 0, 0), 0);
  CHECK_INT(stats(&t).recipients, 4);
  t.log[0] = 0;
  spin(&t, 9000); /* t0+15s: S1 and W1 expire; H1 is held */
  CHECK_INT(t.njobs, 2);
  CHECK(strstr(t.log, "!H1") == NULL);
  while (t.njobs)
    CHECK_INT(finish_deadline(&t, 0, 1), 0);
  CHECK_INT(stats(&t).messages, 1);
  /* Released past its time: its deadline comes at once. */
  t.log[0] = 0;
  CHECK_INT(sched_hold(t.s, "H1", 0), 0);
  spin(&t, 0);
  CHECK_STR(t.log, "!H1@susp:0 ");
  /* A deadline job that leaves it waiting: looked at again no sooner than
   * SCHED_DEADLINE_AGAIN_MS later, never in a loop. */
  CHECK_INT(finish_deadline(&t, 0, 0), 0);
  t.log[0] = 0;
  spin(&t, SCHED_DEADLINE_AGAIN_MS - 1);
  CHECK_STR(t.log, "");
  spin(&t, 1);
  CHECK_STR(t.log, "!H1@susp:0 ");
  CHECK_INT(finish_deadline(&t, 0, 1), 0);
  CHECK_INT(stats(&t).messages, 0);
  teardown(&t);
}

int main(void) {
  test_add_validation();
  test_order_by_due();
  test_limits();
  test_grouping();
  test_retry();
  test_backoff();
  test_flush_lifts_backoff();
  test_flush_id_first();
  test_flush_counts();
  test_hold();
  test_remove();
  test_notices();
  test_pause_stop();
  test_no_storm();
  test_clock();
  test_scale();
  test_dest_rate();
  test_rate_sliding();
  test_global_rate();
  test_dest_rate_override();
  test_rate_validation();
  test_rate_scale();
  test_deadlines();
  return check_result("test_sched");
}
