/*
 * lane: a queue of jobs run on libuv's thread pool with at most one pool
 * work item in flight (ARCHITECTURE "never": the loop never waits on the
 * disk).  The store runs two of them (writer and reader); the lane knows
 * nothing of SQL or of what a job does.
 *
 * A lane is either
 *   - batching: every job pending when the lane starts runs in ONE work
 *     item (the writer's group commit: while a batch runs, new jobs gather
 *     into the next one), or
 *   - single: one job per work item, in FIFO order (the reader lane; a
 *     streaming job puts itself back at the tail with lane_requeue() so
 *     that other jobs get their turn between its batches).
 *
 * The owner embeds a struct lane_job in each job and gives the lane three
 * functions:
 *   work(lane, first)   pool thread: runs the list first, first->next, ...
 *                       (one job for a single lane).  Must not touch loop
 *                       state.
 *   after(lane, first)  loop thread: the list is done; the owner finishes
 *                       each job (runs its callback, frees it) or hands it
 *                       back with lane_requeue().
 *   cancelled(lane, j)  loop thread: a job dropped by lane_cancel() while
 *                       it was pending; the owner finishes it with its
 *                       "cancelled" result.  Runs after `after`, from the
 *                       same after-work callback: never inside
 *                       lane_cancel().
 *   idle(lane)          optional, loop thread: runs at the end of every
 *                       after-work callback (the store closes when both
 *                       lanes are idle).
 *
 * Invariant: a lane has pending jobs only while a work item of it is in
 * flight (a push on an idle lane starts it at once), so a job cancelled
 * while pending is always completed by that work item's after-work
 * callback, on a later loop turn.
 *
 * Lanes never fail: uv_queue_work() fails only on invalid arguments
 * (asserted).  All functions except `work` run on the loop thread.
 */
#ifndef MAILHOP_QUEUE_LANE_H
#define MAILHOP_QUEUE_LANE_H

#include <stddef.h>
#include <uv.h>

enum lane_job_state { LANE_PENDING, LANE_RUNNING, LANE_CANCELLED };

/* Embedded in the owner's job.  Fields are the lane's (read-only for the
 * owner), except `cancel` which the owner may read in `after`. */
struct lane_job {
  struct lane_job *next;
  enum lane_job_state state;
  int cancel; /* lane_cancel() was called while it was running */
};

struct lane;
typedef void (*lane_work_fn)(struct lane *l, struct lane_job *first);
typedef void (*lane_after_fn)(struct lane *l, struct lane_job *first);
typedef void (*lane_job_fn)(struct lane *l, struct lane_job *j);
typedef void (*lane_idle_fn)(struct lane *l);

struct lane_ops {
  lane_work_fn work;
  lane_after_fn after;
  lane_job_fn cancelled;
  lane_idle_fn idle; /* or NULL */
};

/* Embedded by the owner; all fields private. */
struct lane {
  uv_loop_t *loop;
  const struct lane_ops *ops;
  void *data; /* the owner's, free to read */
  int batching;
  int busy;
  struct lane_job *head, *tail; /* pending */
  struct lane_job *running;     /* the list of the work item in flight */
  struct lane_job *cancelled;   /* finished after it with `cancelled` */
  uv_work_t req;
};

/* Initializes l (no allocation, nothing to free).  ops and data are
 * borrowed for the lane's life. */
void lane_init(struct lane *l, uv_loop_t *loop, int batching,
               const struct lane_ops *ops, void *data);

/* Appends j (pending) and starts the lane if it is idle. */
void lane_push(struct lane *l, struct lane_job *j);

/* From `after` only: puts j back at the tail, pending; it runs again once
 * the current after-work callback has finished. */
void lane_requeue(struct lane *l, struct lane_job *j);

/* A pending job is dropped: `cancelled` runs for it later (never inside
 * this call).  A running job gets j->cancel = 1 and completes normally;
 * the owner looks at the flag in `after`. */
void lane_cancel(struct lane *l, struct lane_job *j);

/* Jobs waiting for the next work item. */
size_t lane_pending(const struct lane *l);

/* 1 when nothing is running or pending. */
int lane_idle(const struct lane *l);

#endif
