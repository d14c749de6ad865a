/*
 * sched/dest: destination state.  The heap of each destination's waiting
 * entries, the global heap of destinations that may send (keyed by
 * backoff, suspension, rate window and per-destination limit), the
 * destination table and its linger list, backoff after a job, and the
 * entries themselves (made and freed here, with their heap capacity).
 */
#include "queue/sched/internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- destination heap of entries -------------------------------------- */

static int entry_before(const struct sentry *a, const struct sentry *b) {
  if (a->urgent != b->urgent)
    return a->urgent;
  return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void eh_set(struct sdest *d, uint32_t i, struct sentry *e) {
  d->heap[i] = e;
  e->hidx = i;
}

void sch_eh_up(struct sdest *d, uint32_t i) {
  struct sentry *e = d->heap[i];
  while (i > 0) {
    uint32_t p = (i - 1) / 2;
    if (!entry_before(e, d->heap[p]))
      break;
    eh_set(d, i, d->heap[p]);
    i = p;
  }
  eh_set(d, i, e);
}

void sch_eh_down(struct sdest *d, uint32_t i) {
  struct sentry *e = d->heap[i];
  for (;;) {
    uint32_t c = 2 * i + 1;
    if (c >= d->hn)
      break;
    if (c + 1 < d->hn && entry_before(d->heap[c + 1], d->heap[c]))
      c++;
    if (!entry_before(d->heap[c], e))
      break;
    eh_set(d, i, d->heap[c]);
    i = c;
  }
  eh_set(d, i, e);
}

void sch_eh_push(struct sdest *d, struct sentry *e) {
  if (d->hn >= d->hcap)
    abort(); /* capacity is reserved when the entry is made */
  d->heap[d->hn] = e;
  sch_eh_up(d, d->hn++);
}

void sch_eh_remove(struct sdest *d, struct sentry *e) {
  uint32_t i = e->hidx;
  e->hidx = NONE;
  d->hn--;
  if (i == d->hn)
    return;
  eh_set(d, i, d->heap[d->hn]);
  sch_eh_up(d, i);
  sch_eh_down(d, d->heap[i]->hidx);
}

static int dest_reserve(struct sdest *d, uint32_t want) {
  if (want <= d->hcap)
    return 0;
  uint32_t cap = d->hcap ? d->hcap : 4;
  while (cap < want)
    cap *= 2;
  struct sentry **h = realloc(d->heap, cap * sizeof *h);
  if (!h)
    return -ENOMEM;
  d->heap = h;
  d->hcap = cap;
  return 0;
}

/* ---- global heap of destinations -------------------------------------- */

static int dest_before(const struct sdest *a, const struct sdest *b) {
  return a->gkey < b->gkey || (a->gkey == b->gkey && a->gseq < b->gseq);
}

static void gh_set(struct sched *s, uint32_t i, struct sdest *d) {
  s->gheap[i] = d;
  d->gidx = i;
}

static void gh_up(struct sched *s, uint32_t i) {
  struct sdest *d = s->gheap[i];
  while (i > 0) {
    uint32_t p = (i - 1) / 2;
    if (!dest_before(d, s->gheap[p]))
      break;
    gh_set(s, i, s->gheap[p]);
    i = p;
  }
  gh_set(s, i, d);
}

static void gh_down(struct sched *s, uint32_t i) {
  struct sdest *d = s->gheap[i];
  for (;;) {
    uint32_t c = 2 * i + 1;
    if (c >= s->gn)
      break;
    if (c + 1 < s->gn && dest_before(s->gheap[c + 1], s->gheap[c]))
      c++;
    if (!dest_before(s->gheap[c], d))
      break;
    gh_set(s, i, s->gheap[c]);
    i = c;
  }
  gh_set(s, i, d);
}

static void gh_remove(struct sched *s, struct sdest *d) {
  uint32_t i = d->gidx;
  d->gidx = NONE;
  s->gn--;
  if (i == s->gn)
    return;
  gh_set(s, i, s->gheap[s->gn]);
  gh_up(s, i);
  gh_down(s, s->gheap[i]->gidx);
}

static uint32_t dest_limit(const struct sched *s, const struct sdest *d) {
  /* A failing destination gets one probe at a time. */
  return d->fails ? 1 : s->o.max_per_destination;
}

/* Puts d into, moves it within or takes it out of the global heap after
 * its entries, jobs or backoff changed. */
void sch_dest_update(struct sched *s, struct sdest *d) {
  if (d->hn == 0 || d->inflight >= dest_limit(s, d)) {
    if (d->gidx != NONE)
      gh_remove(s, d);
    return;
  }
  struct sentry *top = d->heap[0];
  d->gkey = top->due > d->blocked_until ? top->due : d->blocked_until;
  if (!s->susp_off && d->suspended_until > d->gkey)
    d->gkey = d->suspended_until;
  int64_t rn = sch_rate_next(&d->rate);
  if (rn > d->gkey)
    d->gkey = rn;
  d->gseq = top->seq;
  if (d->gidx == NONE) {
    if (s->gn >= s->gcap)
      abort(); /* capacity is reserved when the destination is made */
    s->gheap[s->gn] = d;
    gh_up(s, s->gn++);
  } else {
    gh_up(s, d->gidx);
    gh_down(s, d->gidx);
  }
}

static void linger_del(struct sched *s, struct sdest *d) {
  if (!d->lingering)
    return;
  if (s->lcursor == d)
    s->lcursor = d->lnext;
  if (d->lprev)
    d->lprev->lnext = d->lnext;
  else
    s->linger = d->lnext;
  if (d->lnext)
    d->lnext->lprev = d->lprev;
  d->lprev = d->lnext = NULL;
  d->lingering = 0;
}

struct sdest *sch_dest_get(struct sched *s, const char *key) {
  struct hnode *n = htab_get(&s->dests, key);
  if (n) {
    linger_del(s, (struct sdest *)n);
    return (struct sdest *)n;
  }
  if (s->dests.n + 1 > s->gcap) {
    uint32_t cap = s->gcap ? s->gcap * 2 : 64;
    struct sdest **g = realloc(s->gheap, cap * sizeof *g);
    if (!g)
      return NULL;
    s->gheap = g;
    s->gcap = cap;
  }
  size_t len = strlen(key);
  struct sdest *d = calloc(1, sizeof *d + len + 1);
  if (!d)
    return NULL;
  memcpy(d->key, key, len + 1);
  d->h.key = d->key;
  d->gidx = NONE;
  struct ssusp *su = s->susp.b ? (struct ssusp *)htab_get(&s->susp, key) : NULL;
  d->suspended_until = su ? su->until : 0;
  struct srate_over *ov = (struct srate_over *)htab_get(&s->rate_over, key);
  d->rate.n = ov ? ov->n : s->o.dest_rate_n;
  d->rate.win = ov ? ov->win : s->o.dest_rate_ms;
  htab_put(&s->dests, &d->h);
  s->st.destinations++;
  return d;
}

/* Frees an idle destination; its backoff and its rate window are kept
 * while they last (on the linger list, swept by sch_linger_sweep). */
void sch_dest_maybe_free(struct sched *s, struct sdest *d, int64_t now) {
  if (d->nentries || d->inflight)
    return;
  if ((d->fails && d->blocked_until > now) || !sch_rate_idle(&d->rate, now)) {
    if (!d->lingering) {
      d->lingering = 1;
      d->lprev = NULL;
      d->lnext = s->linger;
      if (s->linger)
        s->linger->lprev = d;
      s->linger = d;
    }
    return;
  }
  linger_del(s, d);
  htab_del(&s->dests, &d->h);
  s->st.destinations--;
  free(d->rate.ring);
  free(d->heap);
  free(d);
}

/* Looks at a few lingering destinations and frees those whose backoff and
 * rate window are over, going round the list.  Bounded work per call, so
 * the list shrinks while the scheduler runs. */
#define LINGER_SWEEP 16
void sch_linger_sweep(struct sched *s, int64_t now) {
  for (int i = 0; i < LINGER_SWEEP && s->linger; i++) {
    struct sdest *d = s->lcursor ? s->lcursor : s->linger;
    s->lcursor = d->lnext;
    sch_dest_maybe_free(s, d, now);
  }
}

/* Moves every waiting entry of d that is due later than now to now. */
void sch_dest_bring_forward(struct sched *s, struct sdest *d, int64_t now) {
  for (uint32_t i = 0; i < d->hn; i++)
    if (d->heap[i]->due > now)
      d->heap[i]->due = now;
  /* Clamping can tie due times out of seq order: rebuild the heap. */
  for (uint32_t i = d->hn / 2; i-- > 0;)
    sch_eh_down(d, i);
  sch_dest_update(s, d);
}

/* ---- backoff ---------------------------------------------------------- */

static int64_t default_backoff(unsigned fails) {
  int64_t d = 60000;
  for (unsigned i = 1; i < fails && d < 3600000; i++)
    d *= 2;
  return d < 3600000 ? d : 3600000;
}

/* Counts a finished job's destination outcome (sched_job_done, CONTRACT
 * §4 backoff): success clears the failures and, if d was failing, brings
 * its waiting entries forward; a failure blocks d for the next backoff
 * step. */
void sch_dest_job_done(struct sched *s, struct sdest *d, int dest_ok,
                       int64_t now) {
  if (dest_ok) {
    int was_failing = d->fails > 0;
    d->fails = 0;
    d->blocked_until = 0;
    if (was_failing)
      sch_dest_bring_forward(s, d, now);
  } else {
    d->fails++;
    int64_t delay = s->o.backoff_ms
                        ? s->o.backoff_ms(d->key, d->fails, s->o.data)
                        : default_backoff(d->fails);
    d->blocked_until = now + (delay > 0 ? delay : 0);
  }
}

/* ---- entries ---------------------------------------------------------- */

struct sentry *sch_entry_new(struct sched *s, struct smsg *m, struct sdest *d,
                             int64_t due, uint32_t n) {
  if (dest_reserve(d, d->nentries + 1) < 0)
    return NULL;
  struct sentry *e = malloc(sizeof *e + n * sizeof e->pos[0]);
  if (!e)
    return NULL;
  e->due = due;
  e->seq = s->seq++;
  e->msg = m;
  e->dest = d;
  e->hidx = NONE;
  e->dl = 0;
  e->urgent = 0;
  e->n = n;
  e->mprev = NULL;
  e->mnext = m->entries;
  if (m->entries)
    m->entries->mprev = e;
  m->entries = e;
  d->nentries++;
  return e;
}

/* Unlinks and frees e (taking it out of its heap); the caller updates and
 * may free the destination. */
void sch_entry_free(struct sentry *e) {
  struct sdest *d = e->dest;
  struct smsg *m = e->msg;
  if (e->hidx != NONE)
    sch_eh_remove(d, e);
  if (e->mprev)
    e->mprev->mnext = e->mnext;
  else
    m->entries = e->mnext;
  if (e->mnext)
    e->mnext->mprev = e->mprev;
  d->nentries--;
  free(e);
}
