/*
 * sched/core: the scheduler's clock, its message table, the one timer and
 * the dispatch of due entries as jobs, its life cycle, and the queue's
 * two ways in (sched_add, sched_job_done).  See queue/sched.h for the
 * contract and sched/internal.h for the state and its invariants.
 */
#include "queue/sched/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

const char *sched_outcome_name(enum sched_outcome o) {
  switch (o) {
  case SCHED_FINAL:
    return "final";
  case SCHED_RETRY:
    return "retry";
  }
  return "?";
}

void sch_oom(void) {
  /* Like OpenSMTPD's xmalloc: a scheduler that silently forgets recipients
   * is worse than a restart, which reloads them from the store. */
  fputs("sched: out of memory\n", stderr);
  abort();
}

/* ---- clock ------------------------------------------------------------ */

int64_t sch_now_ms(const struct sched *s) {
  if (s->o.now_ms)
    return s->o.now_ms(s->o.data);
  return (int64_t)uv_now(s->loop) + s->clock_offset;
}

int64_t sched_now(const struct sched *s) {
  return sch_now_ms(s);
}

/* ---- messages --------------------------------------------------------- */

struct smsg *sch_msg_get(const struct sched *s, const char *id) {
  return (struct smsg *)htab_get(&s->msgs, id);
}

void sch_msg_free(struct smsg *m) {
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

struct srcpt *sch_rcpt_find(const struct smsg *m, int idx) {
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

void sch_msg_settle(struct sched *s, struct smsg *m) {
  if (m->live == 0 && m->jobs == 0) {
    sch_dh_remove(s, m);
    htab_del(&s->msgs, &m->h);
    s->st.messages--;
    if (m->held)
      s->st.held--;
    sch_msg_free(m);
  } else {
    sch_msg_dupdate(s, m);
  }
}

/* ---- timer and dispatch ----------------------------------------------- */

static void on_timer(uv_timer_t *t);

void sch_job_link(struct sched *s, struct sjob *j) {
  j->prev = NULL;
  j->next = s->jobs;
  if (s->jobs)
    s->jobs->prev = j;
  s->jobs = j;
}

void sch_resched(struct sched *s) {
  if (s->closing)
    return;
  int64_t key = INT64_MAX;
  if (!s->stopped && !s->paused && s->gn > 0 &&
      s->st.outbound < s->o.max_outbound) {
    key = s->gheap[0]->gkey;
    /* Over outbound_rate: wake when the window lets the next one start. */
    int64_t rn = sch_rate_next(&s->grate);
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
  int64_t now = sch_now_ms(s);
  uv_timer_start(&s->timer, on_timer, key > now ? (uint64_t)(key - now) : 0, 0);
  s->armed_at = key;
}

void sched_kick(struct sched *s) {
  s->armed_at = -1;
  sch_resched(s);
}

int sch_pos_cmp(const void *a, const void *b) {
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
    sch_oom();
  j->pos = (uint32_t *)(j->rcpts + n);
  uint32_t k = 0;
  for (struct sentry *e = m->entries, *next; e; e = next) {
    next = e->mnext;
    if (e->dest == d && e->hidx != NONE && (e == top || e->due <= now)) {
      memcpy(j->pos + k, e->pos, e->n * sizeof e->pos[0]);
      k += e->n;
      sch_entry_free(e);
    }
  }
  qsort(j->pos, n, sizeof j->pos[0], sch_pos_cmp);
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
  sch_job_link(s, j);
  m->jobs++;
  d->inflight++;
  s->st.outbound++;
  j->deadline = 0;
  j->pub.deadline = 0;
  sch_rate_record(&d->rate, now);
  sch_rate_record(&s->grate, now);
  sch_dest_update(s, d);
  sch_msg_dupdate(s, m);
  s->o.dispatch(s, &j->pub, s->o.data);
}

static void on_timer(uv_timer_t *t) {
  struct sched *s = t->data;
  s->armed_at = -1;
  int64_t now = sch_now_ms(s);
  for (int i = 0; i < SCHED_DISPATCH_BATCH; i++) {
    if (s->stopped || s->dn == 0 || s->dl_inflight >= SCHED_DEADLINE_INFLIGHT ||
        s->dheap[0]->dkey > now)
      break;
    sch_dispatch_deadline(s, s->dheap[0], now);
  }
  for (int i = 0; i < SCHED_DISPATCH_BATCH; i++) {
    if (s->stopped || s->paused || s->gn == 0 ||
        s->st.outbound >= s->o.max_outbound || s->gheap[0]->gkey > now ||
        sch_rate_next(&s->grate) > now)
      break;
    dispatch_top(s, s->gheap[0], now);
  }
  sch_linger_sweep(s, now);
  sch_resched(s);
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
  /* uv_now is the time of the loop's last turn, which may be a while
   * back (the queue was opened meanwhile): the offset would put the
   * scheduler's clock ahead of the wall clock by that much. */
  uv_update_time(loop);
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
  sch_resched(s);
}

static void on_close(uv_handle_t *h) {
  struct sched *s = h->data;
  sched_close_cb cb = s->close_cb;
  void *data = s->close_data;
  sch_susp_free_all(s);
  for (struct sjob *j = s->jobs, *next; j; j = next) {
    next = j->next;
    if (j->msg->removed && --j->msg->jobs == 0)
      sch_msg_free(j->msg);
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
      sch_msg_free(m);
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
  if (sch_msg_get(s, m->id))
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
  int64_t now = sch_now_ms(s);
  for (uint32_t i = 0; i < n;) {
    uint32_t k = i + 1;
    while (k < n && strcmp(tmp[k].dest, tmp[i].dest) == 0 &&
           tmp[k].due == tmp[i].due)
      k++;
    struct sdest *d = sch_dest_get(s, tmp[i].dest);
    struct sentry *e = d ? sch_entry_new(s, msg, d, tmp[i].due, k - i) : NULL;
    if (!e) {
      /* d first: while earlier entries of this message still use it, it
       * stays, and the loop below frees it with its last entry. */
      if (d)
        sch_dest_maybe_free(s, d, now);
      while (msg->entries) {
        struct sdest *ed = msg->entries->dest;
        sch_entry_free(msg->entries);
        sch_dest_maybe_free(s, ed, now);
      }
      free(tmp);
      sch_msg_free(msg);
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
    sch_eh_push(e->dest, e);
    sch_dest_update(s, e->dest);
  }
  sch_msg_dupdate(s, msg);
  sch_resched(s);
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

int sched_job_done(struct sched *s, struct sched_job *job,
                   const struct sched_result *results, size_t n, int dest_ok) {
  struct sjob *j = (struct sjob *)job;
  struct smsg *m = j->msg;
  struct sdest *d = j->dest;
  int64_t now = sch_now_ms(s);
  int ret = 0;

  if (j->prev)
    j->prev->next = j->next;
  else
    s->jobs = j->next;
  if (j->next)
    j->next->prev = j->prev;
  if (j->deadline)
    return sch_deadline_done(s, j, results, n, now);

  s->st.outbound--;
  d->inflight--;
  m->jobs--;

  sch_dest_job_done(s, d, dest_ok, now);

  if (m->removed) {
    ret = SCHED_JOB_REMOVED;
    if (m->jobs == 0)
      sch_msg_free(m);
  } else {
    uint32_t nr = (uint32_t)j->pub.nrcpts, nretry = 0;
    struct retry_tmp *rt = nr ? malloc(nr * sizeof *rt) : NULL;
    if (nr && !rt)
      sch_oom();
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
      struct sentry *e = sch_entry_new(s, m, d, rt[i].due, k - i);
      if (!e)
        sch_oom();
      for (uint32_t q = i; q < k; q++)
        e->pos[q - i] = rt[q].pos;
      if (!m->held)
        sch_eh_push(d, e);
      i = k;
    }
    free(rt);
    sch_msg_settle(s, m);
  }
  free(j);
  sch_dest_update(s, d);
  sch_dest_maybe_free(s, d, now);
  sch_linger_sweep(s, now);
  sch_resched(s);
  return ret;
}
