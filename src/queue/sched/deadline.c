/*
 * sched/deadline: per-message deadlines (queue_lifetime expiry and the
 * delay_warning_time warning, CONTRACT §4, §2): the heap of messages by
 * next deadline, the deadline job that lends a message's waiting
 * recipients to the owner, and its completion.
 */
#include "queue/sched/internal.h"

#include <stdlib.h>
#include <string.h>

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

void sch_dh_remove(struct sched *s, struct smsg *m) {
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
void sch_msg_dupdate(struct sched *s, struct smsg *m) {
  int64_t key = msg_deadline(s, m);
  int waiting = 0;
  for (const struct sentry *e = m->entries; e && !waiting; e = e->mnext)
    waiting = e->hidx != NONE;
  if (key == INT64_MAX || m->held || m->removed || m->dljob || !waiting) {
    sch_dh_remove(s, m);
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

/* ---- deadline jobs ---------------------------------------------------- */

/* Lends every waiting recipient of m (all destinations) to one deadline
 * job and hands it to dispatch: no attempt, no destination limit or rate
 * counted; the entries stay, parked, until sched_job_done(). */
void sch_dispatch_deadline(struct sched *s, struct smsg *m, int64_t now) {
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
    sch_oom();
  j->pos = (uint32_t *)(j->rcpts + n);
  char *kcopy = (char *)(j->pos + n);
  memcpy(kcopy, key, klen);
  uint32_t k = 0;
  for (struct sentry *e = m->entries; e; e = e->mnext) {
    if (e->hidx == NONE)
      continue;
    memcpy(j->pos + k, e->pos, e->n * sizeof e->pos[0]);
    k += e->n;
    sch_eh_remove(e->dest, e);
    e->dl = 1;
    sch_dest_update(s, e->dest);
  }
  qsort(j->pos, n, sizeof j->pos[0], sch_pos_cmp);
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
  sch_job_link(s, j);
  m->jobs++;
  m->dljob = 1;
  if (msg_warn_at(s, m) <= now)
    m->warn_out = 1; /* this job carries the warning: once */
  s->dl_inflight++;
  sch_msg_dupdate(s, m);
  s->o.dispatch(s, &j->pub, s->o.data);
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
        sch_entry_free(e);
        sch_dest_update(s, d);
        sch_dest_maybe_free(s, d, now);
      }
      return;
    }
  }
}

/* sched_job_done for a deadline job: FINAL results drop their recipient,
 * the others wait again as they were. */
int sch_deadline_done(struct sched *s, struct sjob *j,
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
      sch_msg_free(m);
  } else {
    for (size_t q = 0; q < n; q++) {
      if (results[q].outcome != SCHED_FINAL)
        continue;
      struct srcpt *rc = sch_rcpt_find(m, results[q].idx);
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
        sch_eh_push(e->dest, e);
      sch_dest_update(s, e->dest);
    }
    /* Left past a deadline (the owner could not act): not again at
     * once. */
    m->dl_again = msg_deadline(s, m) <= now ? now + SCHED_DEADLINE_AGAIN_MS : 0;
    sch_msg_settle(s, m);
  }
  free(j);
  sch_linger_sweep(s, now);
  sch_resched(s);
  return ret;
}
