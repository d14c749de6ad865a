/*
 * sched: the in-memory delivery scheduler.  See sched.h for the contract.
 *
 * Owns: the message table (id -> message, with its non-final recipients and
 * its waiting entries), the destination table (key -> destination, with
 * its heap of waiting entries, jobs in flight and backoff state), the
 * global heap of destinations that may send, the jobs in flight and one
 * uv_timer_t.  Never touches SQLite, DNS, sockets or the log.
 *
 * Invariants:
 *   - an entry is in its destination's heap iff its message is not held
 *     and it is not lent to a deadline job (e->dl);
 *   - a message is in the deadline heap iff it has a deadline, a heaped
 *     entry and no deadline job in flight; its key is its next deadline
 *     (no earlier than dl_again);
 *   - a destination is in the global heap iff it has heaped entries and
 *     fewer jobs in flight than its limit; its key is then
 *     max(earliest entry due, blocked_until, time its rate window allows
 *     the next start);
 *   - a destination without entries or jobs in flight that is kept (its
 *     backoff or its rate window still running) is on the linger list,
 *     which the timer and sched_job_done() sweep a few at a time;
 *   - a destination's heap capacity is at least its entry count (parked
 *     entries included), so pushing never allocates; the global heap's
 *     capacity is at least the number of destinations.
 */
#include "queue/sched.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#define NONE UINT32_MAX

enum rcpt_state {
  R_WAITING = 0, /* in one of the message's entries */
  R_INFLIGHT = 1,
  R_FINAL = 2,
};

struct hnode {
  struct hnode *next;
  const char *key;
  uint32_t hash;
};

struct htab {
  struct hnode **b;
  size_t nb; /* power of two */
  size_t n;
};

struct srcpt {
  int32_t idx;
  int32_t attempts;
  uint8_t state;
};

struct sdest;
struct smsg;

/* A sliding-window rate: the start times of the last `count` jobs, oldest
 * at ring[head].  cap grows (up to n) only while the oldest kept start is
 * still inside the window, so it never exceeds the starts of one window. */
struct srate {
  uint32_t n; /* 0: no limit */
  int64_t win;
  int64_t *ring;
  uint32_t cap, head, count;
};

/* A rate set for one destination key (sched_set_dest_rate). */
struct srate_over {
  struct hnode h;
  uint32_t n;
  int64_t win;
  char key[];
};

struct sentry {
  int64_t due;
  uint64_t seq; /* FIFO among equal due times */
  struct smsg *msg;
  struct sdest *dest;
  struct sentry *mprev, *mnext; /* the message's entries */
  uint32_t hidx;                /* in dest->heap, or NONE when parked */
  uint8_t dl;                   /* lent to the message's deadline job */
  uint8_t urgent;               /* named by sched_flush(id): goes first */
  uint32_t n;
  uint32_t pos[]; /* ascending positions in msg->rcpts */
};

struct smsg {
  struct hnode h;
  char id[SCHED_ID_SIZE];
  int64_t received_at;
  int64_t size;
  struct sentry *entries;
  struct srcpt *rcpts; /* sorted by idx */
  uint32_t nrcpts;
  uint32_t live; /* non-final recipients */
  uint32_t jobs; /* jobs in flight */
  uint8_t held;
  uint8_t removed;
  uint8_t notices;  /* sched_add_notices */
  uint8_t warn_out; /* the warning deadline was handed out */
  uint8_t dljob;    /* a deadline job is in flight */
  uint32_t didx;    /* in s->dheap, or NONE */
  int64_t dkey;     /* its key there */
  int64_t dl_again; /* no deadline job before this (unix ms) */
};

struct sdest {
  struct hnode h;
  struct sentry **heap;
  uint32_t hn, hcap;
  uint32_t nentries; /* heaped + parked */
  uint32_t inflight;
  uint32_t fails;
  uint32_t gidx;
  int64_t blocked_until;
  int64_t suspended_until; /* sched_suspend(): copied from s->susp */
  int64_t gkey;
  uint64_t gseq;
  struct srate rate;
  struct sdest *lprev, *lnext; /* linger list */
  uint8_t lingering;
  char key[];
};

/* A destination suspension (sched_suspend), kept whether or not the
 * destination has mail. */
struct ssusp {
  struct hnode h;
  int64_t until;
  char key[];
};

struct sjob {
  struct sched_job pub;
  int deadline;
  struct smsg *msg;
  struct sdest *dest;
  struct sjob *prev, *next;
  uint32_t *pos;
  struct sched_job_rcpt rcpts[];
};

struct sched {
  uv_loop_t *loop;
  uv_timer_t timer;
  struct sched_opts o;
  int64_t clock_offset;
  struct htab msgs;
  struct htab dests;
  struct htab susp; /* key -> struct ssusp; lazily made (b NULL until then) */
  struct htab rate_over; /* key -> struct srate_over */
  struct srate grate;    /* outbound_rate */
  struct sdest *linger;  /* idle destinations kept for backoff or rate */
  struct sdest *lcursor; /* where linger_sweep goes on, NULL: the head */
  struct sdest **gheap;
  uint32_t gn, gcap;
  struct smsg **dheap; /* messages by next deadline; cap >= messages */
  uint32_t dn, dcap;
  uint32_t dl_inflight; /* deadline jobs in flight */
  struct sjob *jobs;
  uint64_t seq;
  int64_t armed_at; /* due time the timer is armed for, or -1 */
  int paused, stopped, closing;
  sched_close_cb close_cb;
  void *close_data;
  struct sched_stats st;
};

const char *sched_outcome_name(enum sched_outcome o) {
  switch (o) {
  case SCHED_FINAL:
    return "final";
  case SCHED_RETRY:
    return "retry";
  }
  return "?";
}

static void oom(void) {
  /* Like OpenSMTPD's xmalloc: a scheduler that silently forgets recipients
   * is worse than a restart, which reloads them from the store. */
  fputs("sched: out of memory\n", stderr);
  abort();
}

/* ---- hash table ------------------------------------------------------- */

static uint32_t hash_str(const char *s) {
  uint32_t h = 2166136261u;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 16777619u;
  return h;
}

static int htab_init(struct htab *t, size_t nb) {
  t->b = calloc(nb, sizeof *t->b);
  t->nb = nb;
  t->n = 0;
  return t->b ? 0 : -ENOMEM;
}

static struct hnode *htab_get(const struct htab *t, const char *key) {
  uint32_t h = hash_str(key);
  for (struct hnode *n = t->b[h & (t->nb - 1)]; n; n = n->next)
    if (n->hash == h && strcmp(n->key, key) == 0)
      return n;
  return NULL;
}

static void htab_grow(struct htab *t) {
  size_t nb = t->nb * 2;
  struct hnode **b = calloc(nb, sizeof *b);
  if (!b)
    return; /* longer chains, still correct */
  for (size_t i = 0; i < t->nb; i++) {
    struct hnode *n = t->b[i], *next;
    for (; n; n = next) {
      next = n->next;
      n->next = b[n->hash & (nb - 1)];
      b[n->hash & (nb - 1)] = n;
    }
  }
  free(t->b);
  t->b = b;
  t->nb = nb;
}

static void htab_put(struct htab *t, struct hnode *n) {
  if (t->n >= t->nb)
    htab_grow(t);
  n->hash = hash_str(n->key);
  struct hnode **p = &t->b[n->hash & (t->nb - 1)];
  n->next = *p;
  *p = n;
  t->n++;
}

static void htab_del(struct htab *t, struct hnode *n) {
  struct hnode **p = &t->b[n->hash & (t->nb - 1)];
  while (*p != n)
    p = &(*p)->next;
  *p = n->next;
  t->n--;
}

/* ---- clock ------------------------------------------------------------ */

static int64_t now_ms(const struct sched *s) {
  if (s->o.now_ms)
    return s->o.now_ms(s->o.data);
  return (int64_t)uv_now(s->loop) + s->clock_offset;
}

int64_t sched_now(const struct sched *s) {
  return now_ms(s);
}

static int64_t default_backoff(unsigned fails) {
  int64_t d = 60000;
  for (unsigned i = 1; i < fails && d < 3600000; i++)
    d *= 2;
  return d < 3600000 ? d : 3600000;
}

/* ---- rate windows ----------------------------------------------------- */

/* The earliest time a new start is allowed, INT64_MIN when now. */
static int64_t rate_next(const struct srate *r) {
  if (r->n == 0 || r->count < r->n)
    return INT64_MIN;
  return r->ring[r->head] + r->win;
}

/* 1 when no recorded start is inside the window any more at now. */
static int rate_idle(const struct srate *r, int64_t now) {
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
      oom();
  }
  for (uint32_t i = 0; i < keep; i++)
    ring[i] = r->ring[(r->head + r->count - keep + i) % r->cap];
  free(r->ring);
  r->ring = ring;
  r->cap = cap;
  r->head = 0;
  r->count = keep;
}

static void rate_record(struct srate *r, int64_t t) {
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

static void eh_up(struct sdest *d, uint32_t i) {
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

static void eh_down(struct sdest *d, uint32_t i) {
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

static void eh_push(struct sdest *d, struct sentry *e) {
  if (d->hn >= d->hcap)
    abort(); /* capacity is reserved when the entry is made */
  d->heap[d->hn] = e;
  eh_up(d, d->hn++);
}

static void eh_remove(struct sdest *d, struct sentry *e) {
  uint32_t i = e->hidx;
  e->hidx = NONE;
  d->hn--;
  if (i == d->hn)
    return;
  eh_set(d, i, d->heap[d->hn]);
  eh_up(d, i);
  eh_down(d, d->heap[i]->hidx);
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
static void dest_update(struct sched *s, struct sdest *d) {
  if (d->hn == 0 || d->inflight >= dest_limit(s, d)) {
    if (d->gidx != NONE)
      gh_remove(s, d);
    return;
  }
  struct sentry *top = d->heap[0];
  d->gkey = top->due > d->blocked_until ? top->due : d->blocked_until;
  if (d->suspended_until > d->gkey)
    d->gkey = d->suspended_until;
  int64_t rn = rate_next(&d->rate);
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

static struct sdest *dest_get(struct sched *s, const char *key) {
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
 * while they last (on the linger list, swept by linger_sweep). */
static void dest_maybe_free(struct sched *s, struct sdest *d, int64_t now) {
  if (d->nentries || d->inflight)
    return;
  if ((d->fails && d->blocked_until > now) || !rate_idle(&d->rate, now)) {
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
static void linger_sweep(struct sched *s, int64_t now) {
  for (int i = 0; i < LINGER_SWEEP && s->linger; i++) {
    struct sdest *d = s->lcursor ? s->lcursor : s->linger;
    s->lcursor = d->lnext;
    dest_maybe_free(s, d, now);
  }
}

/* Moves every waiting entry of d that is due later than now to now. */
static void dest_bring_forward(struct sched *s, struct sdest *d, int64_t now) {
  for (uint32_t i = 0; i < d->hn; i++)
    if (d->heap[i]->due > now)
      d->heap[i]->due = now;
  /* Clamping can tie due times out of seq order: rebuild the heap. */
  for (uint32_t i = d->hn / 2; i-- > 0;)
    eh_down(d, i);
  dest_update(s, d);
}

/* ---- deadline heap of messages ---------------------------------------- */

static int msg_dbefore(const struct smsg *a, const struct smsg *b) {
  return a->dkey < b->dkey || (a->dkey == b->dkey && strcmp(a->id, b->id) < 0);
}

static void dh_set(struct sched *s, uint32_t i, struct smsg *m) {
  s->dheap[i] = m;
  m->didx = i;
}

static void dh_up(struct sched *s, uint32_t i) {
  struct smsg *m = s->dheap[i];
  while (i > 0) {
    uint32_t p = (i - 1) / 2;
    if (!msg_dbefore(m, s->dheap[p]))
      break;
    dh_set(s, i, s->dheap[p]);
    i = p;
  }
  dh_set(s, i, m);
}

static void dh_down(struct sched *s, uint32_t i) {
  struct smsg *m = s->dheap[i];
  for (;;) {
    uint32_t c = 2 * i + 1;
    if (c >= s->dn)
      break;
    if (c + 1 < s->dn && msg_dbefore(s->dheap[c + 1], s->dheap[c]))
      c++;
    if (!msg_dbefore(s->dheap[c], m))
      break;
    dh_set(s, i, s->dheap[c]);
    i = c;
  }
  dh_set(s, i, m);
}

static void dh_remove(struct sched *s, struct smsg *m) {
  if (m->didx == NONE)
    return;
  uint32_t i = m->didx;
  m->didx = NONE;
  s->dn--;
  if (i == s->dn)
    return;
  dh_set(s, i, s->dheap[s->dn]);
  dh_up(s, i);
  dh_down(s, s->dheap[i]->didx);
}

/* The warning deadline of m, or INT64_MAX when none is left. */
static int64_t msg_warn_at(const struct sched *s, const struct smsg *m) {
  if (s->o.warn_ms <= 0 || m->warn_out || (m->notices & s->o.warned_bit))
    return INT64_MAX;
  return m->received_at + s->o.warn_ms;
}

/* m's next deadline (dl_again aside), or INT64_MAX when none is left. */
static int64_t msg_deadline(const struct sched *s, const struct smsg *m) {
  int64_t key = msg_warn_at(s, m);
  if (s->o.lifetime_ms > 0 && m->received_at + s->o.lifetime_ms < key)
    key = m->received_at + s->o.lifetime_ms;
  return key;
}

/* Puts m into, moves it within or takes it out of the deadline heap after
 * its entries, hold, notices or deadline job changed. */
static void msg_dupdate(struct sched *s, struct smsg *m) {
  int64_t key = msg_deadline(s, m);
  int waiting = 0;
  for (const struct sentry *e = m->entries; e && !waiting; e = e->mnext)
    waiting = e->hidx != NONE;
  if (key == INT64_MAX || m->held || m->removed || m->dljob || !waiting) {
    dh_remove(s, m);
    return;
  }
  m->dkey = key > m->dl_again ? key : m->dl_again;
  if (m->didx == NONE) {
    if (s->dn >= s->dcap)
      abort(); /* capacity is reserved when the message is added */
    s->dheap[s->dn] = m;
    dh_up(s, s->dn++);
  } else {
    dh_up(s, m->didx);
    dh_down(s, m->didx);
  }
}

/* ---- entries ---------------------------------------------------------- */

static struct sentry *entry_new(struct sched *s, struct smsg *m,
                                struct sdest *d, int64_t due, uint32_t n) {
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
static void entry_free(struct sentry *e) {
  struct sdest *d = e->dest;
  struct smsg *m = e->msg;
  if (e->hidx != NONE)
    eh_remove(d, e);
  if (e->mprev)
    e->mprev->mnext = e->mnext;
  else
    m->entries = e->mnext;
  if (e->mnext)
    e->mnext->mprev = e->mprev;
  d->nentries--;
  free(e);
}

/* ---- messages --------------------------------------------------------- */

static struct smsg *msg_get(const struct sched *s, const char *id) {
  return (struct smsg *)htab_get(&s->msgs, id);
}

static void msg_free(struct smsg *m) {
  free(m->rcpts);
  free(m);
}

static int valid_id(const char *id) {
  size_t n = 0;
  if (!id)
    return 0;
  for (; id[n]; n++) {
    char c = id[n];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9')))
      return 0;
    if (n >= SCHED_ID_MAX)
      return 0;
  }
  return n > 0;
}

static struct srcpt *rcpt_find(const struct smsg *m, int idx) {
  uint32_t lo = 0, hi = m->nrcpts;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (m->rcpts[mid].idx < idx)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < m->nrcpts && m->rcpts[lo].idx == idx ? &m->rcpts[lo] : NULL;
}

/* ---- timer and dispatch ----------------------------------------------- */

static void on_timer(uv_timer_t *t);

static void resched(struct sched *s) {
  if (s->closing)
    return;
  int64_t key = INT64_MAX;
  if (!s->stopped && !s->paused && s->gn > 0 &&
      s->st.outbound < s->o.max_outbound) {
    key = s->gheap[0]->gkey;
    /* Over outbound_rate: wake when the window lets the next one start. */
    int64_t rn = rate_next(&s->grate);
    if (rn > key)
      key = rn;
  }
  /* Deadlines come whatever the gates (paused too), not after stop. */
  if (!s->stopped && s->dn > 0 && s->dl_inflight < SCHED_DEADLINE_INFLIGHT &&
      s->dheap[0]->dkey < key)
    key = s->dheap[0]->dkey;
  if (key == INT64_MAX) {
    uv_timer_stop(&s->timer);
    s->armed_at = -1;
    return;
  }
  if (s->armed_at == key && uv_is_active((uv_handle_t *)&s->timer))
    return;
  int64_t now = now_ms(s);
  uv_timer_start(&s->timer, on_timer, key > now ? (uint64_t)(key - now) : 0, 0);
  s->armed_at = key;
}

void sched_kick(struct sched *s) {
  s->armed_at = -1;
  resched(s);
}

static int pos_cmp(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

/* Takes the top entry of d (and any other due entry of the same message
 * for d) into a new job and hands it to dispatch. */
static void dispatch_top(struct sched *s, struct sdest *d, int64_t now) {
  struct sentry *top = d->heap[0];
  struct smsg *m = top->msg;
  uint32_t n = 0;
  for (struct sentry *e = m->entries; e; e = e->mnext)
    if (e->dest == d && e->hidx != NONE && (e == top || e->due <= now))
      n += e->n;
  struct sjob *j =
      malloc(sizeof *j + n * (sizeof j->rcpts[0] + sizeof j->pos[0]));
  if (!j)
    oom();
  j->pos = (uint32_t *)(j->rcpts + n);
  uint32_t k = 0;
  for (struct sentry *e = m->entries, *next; e; e = next) {
    next = e->mnext;
    if (e->dest == d && e->hidx != NONE && (e == top || e->due <= now)) {
      memcpy(j->pos + k, e->pos, e->n * sizeof e->pos[0]);
      k += e->n;
      entry_free(e);
    }
  }
  qsort(j->pos, n, sizeof j->pos[0], pos_cmp);
  for (uint32_t i = 0; i < n; i++) {
    struct srcpt *r = &m->rcpts[j->pos[i]];
    r->state = R_INFLIGHT;
    j->rcpts[i].idx = r->idx;
    j->rcpts[i].attempts = r->attempts;
  }
  memcpy(j->pub.id, m->id, sizeof m->id);
  j->pub.dest = d->key;
  j->pub.received_at = m->received_at;
  j->pub.size = m->size;
  j->pub.rcpts = j->rcpts;
  j->pub.nrcpts = n;
  j->pub.removed = 0;
  j->msg = m;
  j->dest = d;
  j->prev = NULL;
  j->next = s->jobs;
  if (s->jobs)
    s->jobs->prev = j;
  s->jobs = j;
  m->jobs++;
  d->inflight++;
  s->st.outbound++;
  j->deadline = 0;
  j->pub.deadline = 0;
  rate_record(&d->rate, now);
  rate_record(&s->grate, now);
  dest_update(s, d);
  msg_dupdate(s, m);
  s->o.dispatch(s, &j->pub, s->o.data);
}

/* Lends every waiting recipient of m (all destinations) to one deadline
 * job and hands it to dispatch: no attempt, no destination limit or rate
 * counted; the entries stay, parked, until sched_job_done(). */
static void dispatch_deadline(struct sched *s, struct smsg *m, int64_t now) {
  uint32_t n = 0;
  const char *key = NULL;
  for (struct sentry *e = m->entries; e; e = e->mnext)
    if (e->hidx != NONE) {
      n += e->n;
      key = e->dest->key;
    }
  size_t klen = strlen(key) + 1;
  struct sjob *j =
      malloc(sizeof *j + n * (sizeof j->rcpts[0] + sizeof j->pos[0]) + klen);
  if (!j)
    oom();
  j->pos = (uint32_t *)(j->rcpts + n);
  char *kcopy = (char *)(j->pos + n);
  memcpy(kcopy, key, klen);
  uint32_t k = 0;
  for (struct sentry *e = m->entries; e; e = e->mnext) {
    if (e->hidx == NONE)
      continue;
    memcpy(j->pos + k, e->pos, e->n * sizeof e->pos[0]);
    k += e->n;
    eh_remove(e->dest, e);
    e->dl = 1;
    dest_update(s, e->dest);
  }
  qsort(j->pos, n, sizeof j->pos[0], pos_cmp);
  for (uint32_t i = 0; i < n; i++) {
    const struct srcpt *r = &m->rcpts[j->pos[i]];
    j->rcpts[i].idx = r->idx;
    j->rcpts[i].attempts = r->attempts;
  }
  memcpy(j->pub.id, m->id, sizeof m->id);
  j->pub.dest = kcopy;
  j->pub.received_at = m->received_at;
  j->pub.size = m->size;
  j->pub.rcpts = j->rcpts;
  j->pub.nrcpts = n;
  j->pub.removed = 0;
  j->pub.deadline = 1;
  j->deadline = 1;
  j->msg = m;
  j->dest = NULL;
  j->prev = NULL;
  j->next = s->jobs;
  if (s->jobs)
    s->jobs->prev = j;
  s->jobs = j;
  m->jobs++;
  m->dljob = 1;
  if (msg_warn_at(s, m) <= now)
    m->warn_out = 1; /* this job carries the warning: once */
  s->dl_inflight++;
  msg_dupdate(s, m);
  s->o.dispatch(s, &j->pub, s->o.data);
}

static void on_timer(uv_timer_t *t) {
  struct sched *s = t->data;
  s->armed_at = -1;
  int64_t now = now_ms(s);
  for (int i = 0; i < SCHED_DISPATCH_BATCH; i++) {
    if (s->stopped || s->dn == 0 || s->dl_inflight >= SCHED_DEADLINE_INFLIGHT ||
        s->dheap[0]->dkey > now)
      break;
    dispatch_deadline(s, s->dheap[0], now);
  }
  for (int i = 0; i < SCHED_DISPATCH_BATCH; i++) {
    if (s->stopped || s->paused || s->gn == 0 ||
        s->st.outbound >= s->o.max_outbound || s->gheap[0]->gkey > now ||
        rate_next(&s->grate) > now)
      break;
    dispatch_top(s, s->gheap[0], now);
  }
  linger_sweep(s, now);
  resched(s);
}

/* ---- life cycle ------------------------------------------------------- */

struct sched *sched_new(uv_loop_t *loop, const struct sched_opts *o) {
  if (!o || !o->dispatch || o->max_outbound < 1 || o->max_per_destination < 1)
    return NULL;
  if (o->dest_rate_n > SCHED_RATE_MAX || o->global_rate_n > SCHED_RATE_MAX ||
      (o->dest_rate_n && o->dest_rate_ms <= 0) ||
      (o->global_rate_n && o->global_rate_ms <= 0))
    return NULL;
  struct sched *s = calloc(1, sizeof *s);
  if (!s)
    return NULL;
  s->loop = loop;
  s->o = *o;
  s->armed_at = -1;
  if (htab_init(&s->msgs, 1024) < 0 || htab_init(&s->dests, 64) < 0 ||
      htab_init(&s->rate_over, 16) < 0) {
    free(s->msgs.b);
    free(s->dests.b);
    free(s);
    return NULL;
  }
  s->grate.n = o->global_rate_n;
  s->grate.win = o->global_rate_ms;
  struct timeval tv;
  gettimeofday(&tv, NULL);
  s->clock_offset =
      (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000 - (int64_t)uv_now(loop);
  uv_timer_init(loop, &s->timer);
  s->timer.data = s;
  return s;
}

void sched_stop(struct sched *s) {
  s->stopped = 1;
  resched(s);
}

static void susp_free_all(struct sched *s);

static void on_close(uv_handle_t *h) {
  struct sched *s = h->data;
  sched_close_cb cb = s->close_cb;
  void *data = s->close_data;
  susp_free_all(s);
  for (struct sjob *j = s->jobs, *next; j; j = next) {
    next = j->next;
    if (j->msg->removed && --j->msg->jobs == 0)
      msg_free(j->msg);
    free(j);
  }
  for (size_t i = 0; i < s->msgs.nb; i++)
    for (struct hnode *n = s->msgs.b[i], *next; n; n = next) {
      struct smsg *m = (struct smsg *)n;
      next = n->next;
      for (struct sentry *e = m->entries, *en; e; e = en) {
        en = e->mnext;
        free(e);
      }
      msg_free(m);
    }
  for (size_t i = 0; i < s->dests.nb; i++)
    for (struct hnode *n = s->dests.b[i], *next; n; n = next) {
      struct sdest *d = (struct sdest *)n;
      next = n->next;
      free(d->rate.ring);
      free(d->heap);
      free(d);
    }
  for (size_t i = 0; i < s->rate_over.nb; i++)
    for (struct hnode *n = s->rate_over.b[i], *next; n; n = next) {
      next = n->next;
      free(n);
    }
  free(s->grate.ring);
  free(s->msgs.b);
  free(s->dests.b);
  free(s->rate_over.b);
  free(s->gheap);
  free(s->dheap);
  free(s);
  if (cb)
    cb(data);
}

void sched_free(struct sched *s, sched_close_cb cb, void *data) {
  s->closing = 1;
  s->close_cb = cb;
  s->close_data = data;
  uv_close((uv_handle_t *)&s->timer, on_close);
}

/* ---- queue ------------------------------------------------------------ */

struct add_tmp {
  const char *dest;
  int64_t due;
  int idx;
  int attempts;
  uint32_t pos;
};

static int tmp_by_idx(const void *a, const void *b) {
  const struct add_tmp *x = a, *y = b;
  return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static int tmp_by_group(const void *a, const void *b) {
  const struct add_tmp *x = a, *y = b;
  int c = strcmp(x->dest, y->dest);
  if (c)
    return c;
  if (x->due != y->due)
    return x->due < y->due ? -1 : 1;
  return x->idx < y->idx ? -1 : x->idx > y->idx;
}

int sched_add(struct sched *s, const struct sched_msg *m) {
  if (!valid_id(m->id) || m->nrcpts == 0 || m->nrcpts >= NONE)
    return -EINVAL;
  for (size_t i = 0; i < m->nrcpts; i++) {
    const char *d = m->rcpts[i].dest;
    if (!d || !*d || strlen(d) > SCHED_DEST_MAX)
      return -EINVAL;
  }
  if (msg_get(s, m->id))
    return -EEXIST;
  if (s->st.messages + 1 > s->dcap) {
    uint32_t cap = s->dcap ? s->dcap * 2 : 1024;
    struct smsg **dh = realloc(s->dheap, cap * sizeof *dh);
    if (!dh)
      return -ENOMEM;
    s->dheap = dh;
    s->dcap = cap;
  }
  uint32_t n = (uint32_t)m->nrcpts;
  struct add_tmp *tmp = malloc(n * sizeof *tmp);
  struct smsg *msg = calloc(1, sizeof *msg);
  struct srcpt *rc = malloc(n * sizeof *rc);
  if (!tmp || !msg || !rc) {
    free(tmp);
    free(msg);
    free(rc);
    return -ENOMEM;
  }
  for (uint32_t i = 0; i < n; i++) {
    const struct sched_rcpt *r = &m->rcpts[i];
    tmp[i].dest = r->dest;
    tmp[i].due = r->next_attempt_at > 0 ? r->next_attempt_at : 0;
    tmp[i].idx = r->idx;
    tmp[i].attempts = r->attempts;
  }
  qsort(tmp, n, sizeof *tmp, tmp_by_idx);
  for (uint32_t i = 0; i < n; i++) {
    if (i > 0 && tmp[i].idx == tmp[i - 1].idx) {
      free(tmp);
      free(msg);
      free(rc);
      return -EINVAL;
    }
    tmp[i].pos = i;
    rc[i].idx = tmp[i].idx;
    rc[i].attempts = tmp[i].attempts;
    rc[i].state = R_WAITING;
  }
  strcpy(msg->id, m->id);
  msg->h.key = msg->id;
  msg->received_at = m->received_at;
  msg->size = m->size;
  msg->held = m->held ? 1 : 0;
  msg->notices = (uint8_t)m->notices;
  msg->didx = NONE;
  msg->rcpts = rc;
  msg->nrcpts = n;
  msg->live = n;

  /* One entry per (destination, due time); dispatch merges the entries of
   * a message for one destination that are due together. */
  qsort(tmp, n, sizeof *tmp, tmp_by_group);
  int64_t now = now_ms(s);
  for (uint32_t i = 0; i < n;) {
    uint32_t k = i + 1;
    while (k < n && strcmp(tmp[k].dest, tmp[i].dest) == 0 &&
           tmp[k].due == tmp[i].due)
      k++;
    struct sdest *d = dest_get(s, tmp[i].dest);
    struct sentry *e = d ? entry_new(s, msg, d, tmp[i].due, k - i) : NULL;
    if (!e) {
      /* d first: while earlier entries of this message still use it, it
       * stays, and the loop below frees it with its last entry. */
      if (d)
        dest_maybe_free(s, d, now);
      while (msg->entries) {
        struct sdest *ed = msg->entries->dest;
        entry_free(msg->entries);
        dest_maybe_free(s, ed, now);
      }
      free(tmp);
      msg_free(msg);
      return -ENOMEM;
    }
    for (uint32_t j = i; j < k; j++)
      e->pos[j - i] = tmp[j].pos;
    i = k;
  }
  free(tmp);

  htab_put(&s->msgs, &msg->h);
  s->st.messages++;
  s->st.recipients += n;
  for (uint32_t i = 0; i < n; i++)
    if (rc[i].attempts > 0)
      s->st.deferred++;
  if (msg->held) {
    s->st.held++;
    return 0;
  }
  for (struct sentry *e = msg->entries; e; e = e->mnext) {
    eh_push(e->dest, e);
    dest_update(s, e->dest);
  }
  msg_dupdate(s, msg);
  resched(s);
  return 0;
}

struct retry_tmp {
  int64_t due;
  uint32_t pos;
};

static int retry_cmp(const void *a, const void *b) {
  const struct retry_tmp *x = a, *y = b;
  if (x->due != y->due)
    return x->due < y->due ? -1 : 1;
  return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* Takes recipient position p out of m's entry lent to the deadline job
 * (it became final); frees the entry when it is empty. */
static void lent_drop(struct sched *s, struct smsg *m, uint32_t p,
                      int64_t now) {
  for (struct sentry *e = m->entries; e; e = e->mnext) {
    if (!e->dl)
      continue;
    for (uint32_t i = 0; i < e->n; i++) {
      if (e->pos[i] != p)
        continue;
      memmove(e->pos + i, e->pos + i + 1, (e->n - i - 1) * sizeof e->pos[0]);
      if (--e->n == 0) {
        struct sdest *d = e->dest;
        entry_free(e);
        dest_update(s, d);
        dest_maybe_free(s, d, now);
      }
      return;
    }
  }
}

/* sched_job_done for a deadline job: FINAL results drop their recipient,
 * the others wait again as they were. */
static int deadline_done(struct sched *s, struct sjob *j,
                         const struct sched_result *results, size_t n,
                         int64_t now) {
  struct smsg *m = j->msg;
  int ret = 0;
  m->jobs--;
  m->dljob = 0;
  s->dl_inflight--;
  if (m->removed) {
    ret = SCHED_JOB_REMOVED;
    if (m->jobs == 0)
      msg_free(m);
  } else {
    for (size_t q = 0; q < n; q++) {
      if (results[q].outcome != SCHED_FINAL)
        continue;
      struct srcpt *rc = rcpt_find(m, results[q].idx);
      if (!rc || rc->state != R_WAITING)
        continue;
      uint32_t p = (uint32_t)(rc - m->rcpts);
      int lent = 0;
      for (uint32_t i = 0; i < j->pub.nrcpts && !lent; i++)
        lent = j->pos[i] == p;
      if (!lent)
        continue;
      if (rc->attempts > 0)
        s->st.deferred--;
      rc->state = R_FINAL;
      m->live--;
      s->st.recipients--;
      lent_drop(s, m, p, now);
    }
    for (struct sentry *e = m->entries; e; e = e->mnext) {
      if (!e->dl)
        continue;
      e->dl = 0;
      if (!m->held)
        eh_push(e->dest, e);
      dest_update(s, e->dest);
    }
    /* Left past a deadline (the owner could not act): not again at
     * once. */
    m->dl_again = msg_deadline(s, m) <= now ? now + SCHED_DEADLINE_AGAIN_MS : 0;
    if (m->live == 0 && m->jobs == 0) {
      dh_remove(s, m);
      htab_del(&s->msgs, &m->h);
      s->st.messages--;
      if (m->held)
        s->st.held--;
      msg_free(m);
    } else {
      msg_dupdate(s, m);
    }
  }
  free(j);
  linger_sweep(s, now);
  resched(s);
  return ret;
}

int sched_job_done(struct sched *s, struct sched_job *job,
                   const struct sched_result *results, size_t n, int dest_ok) {
  struct sjob *j = (struct sjob *)job;
  struct smsg *m = j->msg;
  struct sdest *d = j->dest;
  int64_t now = now_ms(s);
  int ret = 0;

  if (j->deadline) {
    if (j->prev)
      j->prev->next = j->next;
    else
      s->jobs = j->next;
    if (j->next)
      j->next->prev = j->prev;
    return deadline_done(s, j, results, n, now);
  }

  if (j->prev)
    j->prev->next = j->next;
  else
    s->jobs = j->next;
  if (j->next)
    j->next->prev = j->prev;
  s->st.outbound--;
  d->inflight--;
  m->jobs--;

  if (dest_ok) {
    int was_failing = d->fails > 0;
    d->fails = 0;
    d->blocked_until = 0;
    if (was_failing)
      dest_bring_forward(s, d, now);
  } else {
    d->fails++;
    int64_t delay = s->o.backoff_ms
                        ? s->o.backoff_ms(d->key, d->fails, s->o.data)
                        : default_backoff(d->fails);
    d->blocked_until = now + (delay > 0 ? delay : 0);
  }

  if (m->removed) {
    ret = SCHED_JOB_REMOVED;
    if (m->jobs == 0)
      msg_free(m);
  } else {
    uint32_t nr = (uint32_t)j->pub.nrcpts, nretry = 0;
    struct retry_tmp *rt = nr ? malloc(nr * sizeof *rt) : NULL;
    if (nr && !rt)
      oom();
    for (uint32_t i = 0; i < nr; i++) {
      struct srcpt *rc = &m->rcpts[j->pos[i]];
      const struct sched_result *res = NULL;
      /* Results usually come in job order: try the same position first. */
      if (i < n && results[i].idx == rc->idx)
        res = &results[i];
      for (size_t q = 0; !res && q < n; q++)
        if (results[q].idx == rc->idx)
          res = &results[q];
      if (rc->attempts > 0)
        s->st.deferred--;
      if (res && res->outcome == SCHED_FINAL) {
        rc->state = R_FINAL;
        m->live--;
        s->st.recipients--;
        continue;
      }
      if (res)
        rc->attempts = res->attempts;
      if (rc->attempts > 0)
        s->st.deferred++;
      rc->state = R_WAITING;
      rt[nretry].due = res ? res->retry_at : now;
      rt[nretry].pos = j->pos[i];
      nretry++;
    }
    qsort(rt, nretry, sizeof *rt, retry_cmp);
    for (uint32_t i = 0; i < nretry;) {
      uint32_t k = i + 1;
      while (k < nretry && rt[k].due == rt[i].due)
        k++;
      struct sentry *e = entry_new(s, m, d, rt[i].due, k - i);
      if (!e)
        oom();
      for (uint32_t q = i; q < k; q++)
        e->pos[q - i] = rt[q].pos;
      if (!m->held)
        eh_push(d, e);
      i = k;
    }
    free(rt);
    if (m->live == 0 && m->jobs == 0) {
      dh_remove(s, m);
      htab_del(&s->msgs, &m->h);
      s->st.messages--;
      if (m->held)
        s->st.held--;
      msg_free(m);
    } else {
      msg_dupdate(s, m);
    }
  }
  free(j);
  dest_update(s, d);
  dest_maybe_free(s, d, now);
  linger_sweep(s, now);
  resched(s);
  return ret;
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
    dest_update(s, d);
    resched(s);
  }
  return 0;
}

/* ---- admin ------------------------------------------------------------ */

/* Makes m's waiting entries due now, ahead of every other entry of their
 * destinations (the one probe of a failing destination is this message;
 * several named go in the order named), and lifts their destinations'
 * backoff.  Returns 1 if m had a waiting entry. */
static int flush_msg(struct sched *s, struct smsg *m, int64_t now) {
  int any = 0;
  for (struct sentry *e = m->entries; e; e = e->mnext) {
    if (e->hidx == NONE)
      continue;
    any = 1;
    e->urgent = 1;
    e->due = now;
    e->seq = s->seq++;
    eh_up(e->dest, e->hidx);
    eh_down(e->dest, e->hidx);
    e->dest->blocked_until = 0;
    dest_update(s, e->dest);
  }
  return any;
}

/* 1 when a flush changes m: one of its waiting entries is due later than
 * now or waits for its destination's backoff. */
static int flush_changes(const struct smsg *m, int64_t now) {
  for (const struct sentry *e = m->entries; e; e = e->mnext)
    if (e->hidx != NONE && (e->due > now || e->dest->blocked_until > now))
      return 1;
  return 0;
}

int sched_flush(struct sched *s, const char *id) {
  int64_t now = now_ms(s);
  int count = 0;
  if (id) {
    struct smsg *m = msg_get(s, id);
    if (!m)
      return -ENOENT;
    count = m->held ? 0 : flush_msg(s, m, now);
  } else {
    /* Counted before: what the flush changes (CONTRACT §1). */
    for (size_t i = 0; i < s->msgs.nb; i++)
      for (struct hnode *h = s->msgs.b[i]; h; h = h->next) {
        struct smsg *m = (struct smsg *)h;
        if (!m->held && flush_changes(m, now))
          count++;
      }
    for (size_t i = 0; i < s->dests.nb; i++)
      for (struct hnode *h = s->dests.b[i]; h; h = h->next) {
        struct sdest *d = (struct sdest *)h;
        d->blocked_until = 0;
        dest_bring_forward(s, d, now);
      }
  }
  sched_kick(s);
  return count;
}

int sched_flush_match(struct sched *s, const char *id) {
  int64_t now = now_ms(s);
  struct smsg *m = id ? msg_get(s, id) : NULL;
  if (!m)
    return -ENOENT;
  if (m->held || !flush_changes(m, now))
    return 0;
  for (struct sentry *e = m->entries; e; e = e->mnext) {
    if (e->hidx == NONE)
      continue;
    if (e->due > now) {
      e->due = now;
      eh_up(e->dest, e->hidx);
    }
    e->dest->blocked_until = 0;
    dest_update(s, e->dest);
  }
  sched_kick(s);
  return 1;
}

int sched_hold(struct sched *s, const char *id, int held) {
  struct smsg *m = msg_get(s, id);
  if (!m)
    return -ENOENT;
  held = held ? 1 : 0;
  if (m->held == held)
    return 0;
  m->held = (uint8_t)held;
  if (held)
    s->st.held++;
  else
    s->st.held--;
  for (struct sentry *e = m->entries; e; e = e->mnext) {
    if (held && e->hidx != NONE)
      eh_remove(e->dest, e);
    else if (!held && e->hidx == NONE && !e->dl)
      eh_push(e->dest, e);
    dest_update(s, e->dest);
  }
  msg_dupdate(s, m);
  resched(s);
  return 0;
}

int sched_remove(struct sched *s, const char *id) {
  struct smsg *m = msg_get(s, id);
  if (!m)
    return -ENOENT;
  int64_t now = now_ms(s);
  dh_remove(s, m);
  htab_del(&s->msgs, &m->h);
  s->st.messages--;
  s->st.recipients -= m->live;
  for (uint32_t i = 0; i < m->nrcpts; i++)
    if (m->rcpts[i].state != R_FINAL && m->rcpts[i].attempts > 0)
      s->st.deferred--;
  if (m->held)
    s->st.held--;
  while (m->entries) {
    struct sdest *d = m->entries->dest;
    entry_free(m->entries);
    dest_update(s, d);
    dest_maybe_free(s, d, now);
  }
  if (m->jobs) {
    m->removed = 1;
    for (struct sjob *j = s->jobs; j; j = j->next)
      if (j->msg == m)
        j->pub.removed = 1;
  } else {
    msg_free(m);
  }
  resched(s);
  return 0;
}

void sched_pause(struct sched *s, int paused) {
  s->paused = paused ? 1 : 0;
  sched_kick(s);
}

int sched_paused(const struct sched *s) {
  return s->paused;
}

int sched_has_message(const struct sched *s, const char *id) {
  return id && msg_get(s, id) != NULL;
}

int sched_held(const struct sched *s, const char *id) {
  struct smsg *m = id ? msg_get(s, id) : NULL;
  return m ? m->held : -ENOENT;
}

unsigned sched_notices(const struct sched *s, const char *id) {
  struct smsg *m = id ? msg_get(s, id) : NULL;
  return m ? m->notices : 0;
}

int sched_add_notices(struct sched *s, const char *id, unsigned bits) {
  struct smsg *m = id ? msg_get(s, id) : NULL;
  if (!m)
    return -ENOENT;
  m->notices |= (uint8_t)bits;
  msg_dupdate(s, m);
  resched(s);
  return 0;
}

int sched_rcpt_delivering(const struct sched *s, const char *id, int idx) {
  struct smsg *m = id ? msg_get(s, id) : NULL;
  struct srcpt *r = m ? rcpt_find(m, idx) : NULL;
  return r && r->state == R_INFLIGHT;
}

int64_t sched_rcpt_next(const struct sched *s, const char *id, int idx) {
  struct smsg *m = id ? msg_get(s, id) : NULL;
  struct srcpt *r = m ? rcpt_find(m, idx) : NULL;
  if (!r || m->held)
    return -1;
  uint32_t p = (uint32_t)(r - m->rcpts);
  for (const struct sentry *e = m->entries; e; e = e->mnext)
    for (uint32_t i = 0; i < e->n; i++) {
      if (e->pos[i] != p)
        continue;
      /* The entry's own due time, then what holds its destination back:
       * backoff, a suspension, its rate window (as dest_update keys it). */
      int64_t t = e->due;
      const struct sdest *d = e->dest;
      if (d) {
        if (d->fails && d->blocked_until > t)
          t = d->blocked_until;
        if (d->suspended_until > t)
          t = d->suspended_until;
        int64_t rn = rate_next(&d->rate);
        if (rn > t)
          t = rn;
      }
      return t;
    }
  return -1;
}

void sched_get_stats(const struct sched *s, struct sched_stats *out) {
  *out = s->st;
}

void sched_scan_stats(const struct sched *s, struct sched_scan *out) {
  int64_t oldest = INT64_MAX;
  out->backed_off = 0;
  for (size_t i = 0; i < s->msgs.nb; i++)
    for (const struct hnode *n = s->msgs.b[i]; n; n = n->next) {
      const struct smsg *m = (const struct smsg *)n;
      if (m->received_at < oldest)
        oldest = m->received_at;
    }
  out->oldest_received_at = oldest == INT64_MAX ? 0 : oldest;
  for (size_t i = 0; i < s->dests.nb; i++)
    for (const struct hnode *n = s->dests.b[i]; n; n = n->next)
      if (((const struct sdest *)n)->fails > 0)
        out->backed_off++;
}

/* ---- destination suspension ------------------------------------------- */

static void susp_free_all(struct sched *s) {
  for (size_t i = 0; s->susp.b && i < s->susp.nb; i++)
    for (struct hnode *n = s->susp.b[i], *next; n; n = next) {
      next = n->next;
      free(n);
    }
  free(s->susp.b);
  s->susp.b = NULL;
}

/* Forgets suspensions whose time is over (admin calls only: O(n)). */
static void susp_prune(struct sched *s, int64_t now) {
  for (size_t i = 0; s->susp.b && i < s->susp.nb; i++)
    for (struct hnode *n = s->susp.b[i], *next; n; n = next) {
      next = n->next;
      if (((struct ssusp *)n)->until <= now) {
        htab_del(&s->susp, n);
        free(n);
      }
    }
}

/* Applies a changed suspension to the destination, if it is known. */
static void susp_apply(struct sched *s, const char *dest, int64_t until) {
  struct sdest *d = (struct sdest *)htab_get(&s->dests, dest);
  if (!d)
    return;
  d->suspended_until = until;
  dest_update(s, d);
  sched_kick(s);
}

int sched_suspend(struct sched *s, const char *dest, int64_t until) {
  int64_t now = now_ms(s);
  if (!dest || !*dest || strlen(dest) > SCHED_DEST_MAX || until <= now)
    return -EINVAL;
  if (!s->susp.b && htab_init(&s->susp, 16) < 0)
    return -ENOMEM;
  susp_prune(s, now);
  struct ssusp *su = (struct ssusp *)htab_get(&s->susp, dest);
  if (!su) {
    if (s->susp.n >= SCHED_SUSPEND_MAX)
      return -ENOSPC;
    size_t len = strlen(dest);
    su = calloc(1, sizeof *su + len + 1);
    if (!su)
      return -ENOMEM;
    memcpy(su->key, dest, len + 1);
    su->h.key = su->key;
    htab_put(&s->susp, &su->h);
  }
  su->until = until;
  susp_apply(s, dest, until);
  return 0;
}

int sched_unsuspend(struct sched *s, const char *dest) {
  int64_t now = now_ms(s);
  if (!dest || !s->susp.b)
    return -ENOENT;
  struct ssusp *su = (struct ssusp *)htab_get(&s->susp, dest);
  int active = su && su->until > now;
  if (su) {
    htab_del(&s->susp, &su->h);
    free(su);
  }
  susp_apply(s, dest, 0);
  return active ? 0 : -ENOENT;
}

int64_t sched_suspended_until(const struct sched *s, const char *dest) {
  if (!dest || !s->susp.b)
    return 0;
  const struct ssusp *su = (const struct ssusp *)htab_get(&s->susp, dest);
  return su && su->until > now_ms(s) ? su->until : 0;
}

size_t sched_suspensions(struct sched *s, struct sched_suspension *out,
                         size_t max) {
  int64_t now = now_ms(s);
  susp_prune(s, now);
  size_t k = 0;
  for (size_t i = 0; s->susp.b && i < s->susp.nb; i++)
    for (const struct hnode *n = s->susp.b[i]; n; n = n->next) {
      const struct ssusp *su = (const struct ssusp *)n;
      if (k < max) {
        out[k].dest = su->key;
        out[k].until = su->until;
      }
      k++;
    }
  return k;
}
