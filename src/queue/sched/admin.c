/*
 * sched/admin: the admin operations and queries on the scheduler
 * (CONTRACT §5): flush, hold, remove, pause, notices, the per-recipient
 * view for the queue listing, and the counters.
 */
#include "queue/sched/internal.h"

#include <errno.h>
#include <stdint.h>

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
    sch_eh_up(e->dest, e->hidx);
    sch_eh_down(e->dest, e->hidx);
    e->dest->blocked_until = 0;
    sch_dest_update(s, e->dest);
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
  int64_t now = sch_now_ms(s);
  int count = 0;
  if (id) {
    struct smsg *m = sch_msg_get(s, id);
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
        sch_dest_bring_forward(s, d, now);
      }
  }
  sched_kick(s);
  return count;
}

int sched_flush_match(struct sched *s, const char *id) {
  int64_t now = sch_now_ms(s);
  struct smsg *m = id ? sch_msg_get(s, id) : NULL;
  if (!m)
    return -ENOENT;
  if (m->held || !flush_changes(m, now))
    return 0;
  for (struct sentry *e = m->entries; e; e = e->mnext) {
    if (e->hidx == NONE)
      continue;
    if (e->due > now) {
      e->due = now;
      sch_eh_up(e->dest, e->hidx);
    }
    e->dest->blocked_until = 0;
    sch_dest_update(s, e->dest);
  }
  sched_kick(s);
  return 1;
}

int sched_hold(struct sched *s, const char *id, int held) {
  struct smsg *m = sch_msg_get(s, id);
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
      sch_eh_remove(e->dest, e);
    else if (!held && e->hidx == NONE && !e->dl)
      sch_eh_push(e->dest, e);
    sch_dest_update(s, e->dest);
  }
  sch_msg_dupdate(s, m);
  sch_resched(s);
  return 0;
}

int sched_remove(struct sched *s, const char *id) {
  struct smsg *m = sch_msg_get(s, id);
  if (!m)
    return -ENOENT;
  int64_t now = sch_now_ms(s);
  sch_dh_remove(s, m);
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
    sch_entry_free(m->entries);
    sch_dest_update(s, d);
    sch_dest_maybe_free(s, d, now);
  }
  if (m->jobs) {
    m->removed = 1;
    for (struct sjob *j = s->jobs; j; j = j->next)
      if (j->msg == m)
        j->pub.removed = 1;
  } else {
    sch_msg_free(m);
  }
  sch_resched(s);
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
  return id && sch_msg_get(s, id) != NULL;
}

int sched_held(const struct sched *s, const char *id) {
  struct smsg *m = id ? sch_msg_get(s, id) : NULL;
  return m ? m->held : -ENOENT;
}

unsigned sched_notices(const struct sched *s, const char *id) {
  struct smsg *m = id ? sch_msg_get(s, id) : NULL;
  return m ? m->notices : 0;
}

int sched_add_notices(struct sched *s, const char *id, unsigned bits) {
  struct smsg *m = id ? sch_msg_get(s, id) : NULL;
  if (!m)
    return -ENOENT;
  m->notices |= (uint8_t)bits;
  sch_msg_dupdate(s, m);
  sch_resched(s);
  return 0;
}

int sched_rcpt_delivering(const struct sched *s, const char *id, int idx) {
  struct smsg *m = id ? sch_msg_get(s, id) : NULL;
  struct srcpt *r = m ? sch_rcpt_find(m, idx) : NULL;
  return r && r->state == R_INFLIGHT;
}

int64_t sched_rcpt_next(const struct sched *s, const char *id, int idx) {
  struct smsg *m = id ? sch_msg_get(s, id) : NULL;
  struct srcpt *r = m ? sch_rcpt_find(m, idx) : NULL;
  if (!r || m->held)
    return -1;
  uint32_t p = (uint32_t)(r - m->rcpts);
  for (const struct sentry *e = m->entries; e; e = e->mnext)
    for (uint32_t i = 0; i < e->n; i++) {
      if (e->pos[i] != p)
        continue;
      /* The entry's own due time, then what holds its destination back:
       * backoff, a suspension, its rate window (as sch_dest_update keys it). */
      int64_t t = e->due;
      const struct sdest *d = e->dest;
      if (d) {
        if (d->fails && d->blocked_until > t)
          t = d->blocked_until;
        if (!s->susp_off && d->suspended_until > t)
          t = d->suspended_until;
        int64_t rn = sch_rate_next(&d->rate);
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
