/*
 * lane: one-at-a-time pool work with batching.  See lane.h.
 *
 * Owns: the pending and cancelled lists and the uv_work_t of the work in
 * flight.  Never: knows what a job does, frees a job (the owner does, from
 * `after` or `cancelled`), or cancels pool work.
 */
#include "queue/lane.h"

#include <assert.h>

static void lane_kick(struct lane *l);

void lane_init(struct lane *l, uv_loop_t *loop, int batching,
               const struct lane_ops *ops, void *data) {
  *l = (struct lane){
      .loop = loop, .ops = ops, .data = data, .batching = batching};
  l->req.data = l;
}

static void append(struct lane *l, struct lane_job *j) {
  j->state = LANE_PENDING;
  j->next = NULL;
  if (l->tail)
    l->tail->next = j;
  else
    l->head = j;
  l->tail = j;
}

void lane_push(struct lane *l, struct lane_job *j) {
  j->cancel = 0;
  append(l, j);
  if (!l->busy)
    lane_kick(l);
}

void lane_requeue(struct lane *l, struct lane_job *j) {
  assert(l->busy); /* from `after`: the kick at its end starts it */
  append(l, j);
}

void lane_cancel(struct lane *l, struct lane_job *j) {
  if (j->state != LANE_PENDING) {
    j->cancel = 1;
    return;
  }
  struct lane_job **pp = &l->head, *prev = NULL;
  while (*pp && *pp != j) {
    prev = *pp;
    pp = &(*pp)->next;
  }
  assert(*pp == j);
  *pp = j->next;
  if (l->tail == j)
    l->tail = prev;
  assert(l->busy); /* the invariant: its after-work delivers this */
  j->state = LANE_CANCELLED;
  j->next = l->cancelled;
  l->cancelled = j;
}

size_t lane_pending(const struct lane *l) {
  size_t n = 0;
  for (const struct lane_job *j = l->head; j; j = j->next)
    n++;
  return n;
}

int lane_idle(const struct lane *l) {
  return !l->busy && !l->head;
}

static void on_work(uv_work_t *req) {
  struct lane *l = req->data;
  l->ops->work(l, l->running);
}

static void on_after(uv_work_t *req, int status) {
  struct lane *l = req->data;
  assert(status == 0); /* a lane never uv_cancel()s its work */
  (void)status;
  struct lane_job *list = l->running;
  l->running = NULL;
  /* l->busy stays set while the owner's callbacks run: a lane_cancel()
   * from one of them finds the lane busy and leaves its job for the
   * cancelled list below. */
  l->ops->after(l, list);
  while (l->cancelled) {
    struct lane_job *j = l->cancelled;
    l->cancelled = j->next;
    j->next = NULL;
    l->ops->cancelled(l, j);
  }
  l->busy = 0;
  lane_kick(l);
  if (l->ops->idle)
    l->ops->idle(l);
}

static void lane_kick(struct lane *l) {
  if (l->busy || !l->head)
    return;
  l->running = l->head;
  if (l->batching) {
    l->head = l->tail = NULL; /* the whole pending list is the batch */
  } else {
    l->head = l->head->next;
    if (!l->head)
      l->tail = NULL;
    l->running->next = NULL;
  }
  for (struct lane_job *j = l->running; j; j = j->next)
    j->state = LANE_RUNNING;
  l->busy = 1;
  int r = uv_queue_work(l->loop, &l->req, on_work, on_after);
  assert(r == 0); /* fails only on invalid arguments */
  (void)r;
}
