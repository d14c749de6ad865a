/*
 * test_lane: the generic pool lanes on a real loop and libuv's real thread
 * pool, with jobs that know no SQL: what ran together (batches), in what
 * order, cancel of a pending job, a job that puts itself back, and the
 * idle callback.  Order and counts only, never time.  Every case requires
 * uv_loop_close() to succeed.
 */
#include "queue/lane.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "check.h"

struct tjob {
  struct lane_job lj; /* first */
  int id;
  int batch;     /* set on the pool: which work item ran it */
  int rounds;    /* requeue itself this many times */
  int cancelled; /* finished by `cancelled` */
  int finished;
  int saw_cancel; /* lj.cancel seen in `after` */
};

static struct {
  int works, afters, idles;
  char order[256];              /* ids as they finish, "c" for cancelled */
  struct tjob *cancel_in_after; /* cancel this one from `after` */
} t;

static void on_work(struct lane *l, struct lane_job *first) {
  (void)l;
  t.works++; /* one work item at a time per lane: no race */
  for (struct lane_job *j = first; j; j = j->next)
    ((struct tjob *)j)->batch = t.works;
}

static void note(const char *s) {
  size_t n = strlen(t.order);
  snprintf(t.order + n, sizeof t.order - n, "%s", s);
}

static void on_after(struct lane *l, struct lane_job *first) {
  t.afters++;
  if (t.cancel_in_after) {
    lane_cancel(l, &t.cancel_in_after->lj);
    t.cancel_in_after = NULL;
  }
  for (struct lane_job *j = first, *next; j; j = next) {
    next = j->next;
    struct tjob *tj = (struct tjob *)j;
    tj->saw_cancel |= j->cancel;
    if (tj->rounds > 0 && !j->cancel) {
      tj->rounds--;
      lane_requeue(l, j);
      continue;
    }
    tj->finished++;
    char buf[16];
    snprintf(buf, sizeof buf, "%d", tj->id);
    note(buf);
  }
}

static void on_cancelled(struct lane *l, struct lane_job *j) {
  (void)l;
  struct tjob *tj = (struct tjob *)j;
  tj->cancelled++;
  tj->finished++;
  note("c");
}

static void on_idle(struct lane *l) {
  (void)l;
  t.idles++;
}

static const struct lane_ops ops = {.work = on_work,
                                    .after = on_after,
                                    .cancelled = on_cancelled,
                                    .idle = on_idle};

/* Batching: the first push starts at once; everything pushed while it
 * runs forms ONE next batch (group commit). */
static void test_batching(void) {
  memset(&t, 0, sizeof t);
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct lane l;
  lane_init(&l, &loop, 1, &ops, NULL);
  struct tjob j[5];
  memset(j, 0, sizeof j);
  for (int i = 0; i < 5; i++) {
    j[i].id = i;
    lane_push(&l, &j[i].lj);
  }
  CHECK_INT(lane_pending(&l), 4);
  CHECK_INT(lane_idle(&l), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(t.works, 2);
  CHECK_INT(j[0].batch, 1);
  for (int i = 1; i < 5; i++)
    CHECK_INT(j[i].batch, 2);
  CHECK_STR(t.order, "01234");
  CHECK_INT(t.idles, 2);
  CHECK_INT(lane_idle(&l), 1);
  CHECK_INT(uv_loop_close(&loop), 0);
}

/* Single: one job per work item, FIFO; a job that requeues itself lets
 * the others go between its rounds; a pending job cancelled runs
 * `cancelled` later, never inside lane_cancel(). */
static void test_single_requeue_cancel(void) {
  memset(&t, 0, sizeof t);
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct lane l;
  lane_init(&l, &loop, 0, &ops, NULL);
  struct tjob j[4];
  memset(j, 0, sizeof j);
  for (int i = 0; i < 4; i++)
    j[i].id = i;
  j[0].rounds = 2; /* a stream of three batches */
  for (int i = 0; i < 4; i++)
    lane_push(&l, &j[i].lj);
  lane_cancel(&l, &j[2].lj); /* pending */
  CHECK_INT(j[2].finished, 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  /* 0 runs, requeues behind 1 and 3; c is delivered after the first
   * work item's after-work. */
  CHECK_STR(t.order, "c130");
  CHECK_INT(j[2].cancelled, 1);
  CHECK_INT(j[0].finished, 1);
  CHECK_INT(t.works, 5); /* 0, 1, 3, 0, 0 */
  CHECK_INT(uv_loop_close(&loop), 0);
}

/* A job cancelled while it runs completes normally with the flag set; a
 * job cancelled from inside `after` (an owner's end function) while it is
 * pending is finished from the same after-work callback. */
static void test_cancel_running(void) {
  memset(&t, 0, sizeof t);
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct lane l;
  lane_init(&l, &loop, 0, &ops, NULL);
  struct tjob a = {.id = 1, .rounds = 5}, b = {.id = 2};
  lane_push(&l, &a.lj);
  lane_push(&l, &b.lj);
  lane_cancel(&l, &a.lj); /* running now */
  t.cancel_in_after = &b;
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(a.saw_cancel, 1);
  CHECK_INT(a.finished, 1); /* no requeue once cancelled */
  CHECK_INT(b.cancelled, 1);
  CHECK_STR(t.order, "1c");
  CHECK_INT(t.works, 1);
  CHECK_INT(uv_loop_close(&loop), 0);
}

int main(void) {
  test_batching();
  test_single_requeue_cancel();
  test_cancel_running();
  return check_result("test_lane");
}
