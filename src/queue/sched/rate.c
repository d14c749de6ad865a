/*
 * sched/rate: sliding-window rates (destination_rate, outbound_rate and
 * the per-destination overrides of sched_set_dest_rate): the ring of
 * recent starts and the earliest time the next start is allowed.
 */
#include "queue/sched/internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- rate windows ----------------------------------------------------- */

/* The earliest time a new start is allowed, INT64_MIN when now. */
int64_t sch_rate_next(const struct srate *r) {
  if (r->n == 0 || r->count < r->n)
    return INT64_MIN;
  return r->ring[r->head] + r->win;
}

/* 1 when no recorded start is inside the window any more at now. */
int sch_rate_idle(const struct srate *r, int64_t now) {
  if (r->count == 0)
    return 1;
  return r->ring[(r->head + r->count - 1) % r->cap] + r->win <= now;
}

/* Rebuilds the ring with room for cap starts, keeping the newest ones. */
static void rate_resize(struct srate *r, uint32_t cap) {
  uint32_t keep = r->count < cap ? r->count : cap;
  int64_t *ring = NULL;
  if (cap) {
    ring = malloc(cap * sizeof *ring);
    if (!ring)
      sch_oom();
  }
  for (uint32_t i = 0; i < keep; i++)
    ring[i] = r->ring[(r->head + r->count - keep + i) % r->cap];
  free(r->ring);
  r->ring = ring;
  r->cap = cap;
  r->head = 0;
  r->count = keep;
}

void sch_rate_record(struct srate *r, int64_t t) {
  if (r->n == 0)
    return;
  if (r->count == r->cap) {
    if (r->count > 0 && (r->cap >= r->n || r->ring[r->head] + r->win <= t)) {
      /* The oldest start no longer matters: reuse its slot. */
      r->ring[r->head] = t;
      r->head = (r->head + 1) % r->cap;
      return;
    }
    uint32_t cap = r->cap ? r->cap * 2 : 4;
    rate_resize(r, cap < r->n ? cap : r->n);
  }
  r->ring[(r->head + r->count) % r->cap] = t;
  r->count++;
}

/* Sets a new limit; starts recorded so far count against it. */
static void rate_set(struct srate *r, uint32_t n, int64_t win) {
  r->n = n;
  r->win = win;
  if (n == 0)
    rate_resize(r, 0);
  else if (r->cap > n)
    rate_resize(r, n);
}

/* ---- rate limits ------------------------------------------------------ */

int sched_set_dest_rate(struct sched *s, const char *dest, unsigned n,
                        int64_t window_ms) {
  if (!dest || !*dest || strlen(dest) > SCHED_DEST_MAX || n > SCHED_RATE_MAX ||
      (n && window_ms <= 0))
    return -EINVAL;
  struct srate_over *ov = (struct srate_over *)htab_get(&s->rate_over, dest);
  if (n == 0 && ov) {
    htab_del(&s->rate_over, &ov->h);
    free(ov);
  } else if (n) {
    if (!ov) {
      size_t len = strlen(dest);
      ov = calloc(1, sizeof *ov + len + 1);
      if (!ov)
        return -ENOMEM;
      memcpy(ov->key, dest, len + 1);
      ov->h.key = ov->key;
      htab_put(&s->rate_over, &ov->h);
    }
    ov->n = n;
    ov->win = window_ms;
  }
  struct sdest *d = (struct sdest *)htab_get(&s->dests, dest);
  if (d) {
    rate_set(&d->rate, n ? n : s->o.dest_rate_n,
             n ? window_ms : s->o.dest_rate_ms);
    sch_dest_update(s, d);
    sch_resched(s);
  }
  return 0;
}
