/*
 * sched/internal.h: the scheduler's state and what its files share, and
 * nothing else includes (queue/sched.h is the module's interface).
 *   core.c      clock, message table, the one timer and dispatch, life
 *               cycle, sched_add and sched_job_done
 *   dest.c      destination state: entry heaps, the global heap, limits,
 *               backoff, the destination table and its linger list, entries
 *   rate.c      sliding-window rates and sched_set_dest_rate
 *   deadline.c  per-message deadlines: the deadline heap and deadline jobs
 *   suspend.c   destination suspensions
 *   admin.c     admin operations and queries, counters
 * All of it runs on the loop thread.
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
#ifndef MAILHOP_QUEUE_SCHED_INTERNAL_H
#define MAILHOP_QUEUE_SCHED_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "queue/htab.h"
#include "queue/sched.h"

#define NONE UINT32_MAX

enum rcpt_state {
  R_WAITING = 0, /* in one of the message's entries */
  R_INFLIGHT = 1,
  R_FINAL = 2,
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
  int susp_off;     /* sched_suspensions_hold(s, 0): they hold nothing back */
  struct htab rate_over; /* key -> struct srate_over */
  struct srate grate;    /* outbound_rate */
  struct sdest *linger;  /* idle destinations kept for backoff or rate */
  struct sdest *lcursor; /* where sch_linger_sweep goes on, NULL: the head */
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

/* ---- core.c ----------------------------------------------------------- */

/* Aborts: the scheduler does not go on with lost recipients. */
void sch_oom(void);
/* The scheduler's clock (sched_now), unix ms. */
int64_t sch_now_ms(const struct sched *s);
/* The message with this id, or NULL. */
struct smsg *sch_msg_get(const struct sched *s, const char *id);
/* Frees m and its recipients (not its entries). */
void sch_msg_free(struct smsg *m);
/* After a job on m ended: m leaves the scheduler once it has no live
 * recipient and no job in flight, else its deadline key is refreshed. */
void sch_msg_settle(struct sched *s, struct smsg *m);
/* m's recipient with index idx, or NULL. */
struct srcpt *sch_rcpt_find(const struct smsg *m, int idx);
/* Arms the timer for the earliest of what may be dispatched next. */
void sch_resched(struct sched *s);
/* Puts j at the head of the list of jobs in flight (s->jobs). */
void sch_job_link(struct sched *s, struct sjob *j);
/* qsort order of uint32_t recipient positions. */
int sch_pos_cmp(const void *a, const void *b);

/* ---- dest.c ----------------------------------------------------------- */

/* d's heap of entries: restore order at i, push (capacity reserved),
 * remove. */
void sch_eh_up(struct sdest *d, uint32_t i);
void sch_eh_down(struct sdest *d, uint32_t i);
void sch_eh_push(struct sdest *d, struct sentry *e);
void sch_eh_remove(struct sdest *d, struct sentry *e);
/* Puts d into, moves it within or takes it out of the global heap. */
void sch_dest_update(struct sched *s, struct sdest *d);
/* The destination with this key, made if new (NULL: out of memory). */
struct sdest *sch_dest_get(struct sched *s, const char *key);
/* Frees d if idle, or keeps it on the linger list while it must. */
void sch_dest_maybe_free(struct sched *s, struct sdest *d, int64_t now);
/* Frees a few lingering destinations whose time is over. */
void sch_linger_sweep(struct sched *s, int64_t now);
/* Moves every waiting entry of d that is due later than now to now. */
void sch_dest_bring_forward(struct sched *s, struct sdest *d, int64_t now);
/* Backoff after a job: dest_ok clears it, a failure extends it. */
void sch_dest_job_done(struct sched *s, struct sdest *d, int dest_ok,
                       int64_t now);
/* A new entry of n recipient positions of m for d (not heaped); NULL when
 * out of memory. */
struct sentry *sch_entry_new(struct sched *s, struct smsg *m, struct sdest *d,
                             int64_t due, uint32_t n);
/* Unlinks and frees e; the caller updates and may free its destination. */
void sch_entry_free(struct sentry *e);

/* ---- rate.c ----------------------------------------------------------- */

/* The earliest time a new start is allowed, INT64_MIN when now. */
int64_t sch_rate_next(const struct srate *r);
/* 1 when no recorded start is inside the window any more at now. */
int sch_rate_idle(const struct srate *r, int64_t now);
/* Records a start at t. */
void sch_rate_record(struct srate *r, int64_t t);

/* ---- deadline.c ------------------------------------------------------- */

/* Takes m out of the deadline heap, if it is there. */
void sch_dh_remove(struct sched *s, struct smsg *m);
/* Puts m into, moves it within or takes it out of the deadline heap. */
void sch_msg_dupdate(struct sched *s, struct smsg *m);
/* Hands m's waiting recipients to dispatch as one deadline job. */
void sch_dispatch_deadline(struct sched *s, struct smsg *m, int64_t now);
/* sched_job_done for a deadline job (j already off the job list). */
int sch_deadline_done(struct sched *s, struct sjob *j,
                      const struct sched_result *results, size_t n,
                      int64_t now);

/* ---- suspend.c -------------------------------------------------------- */

/* Frees the suspension table (on close). */
void sch_susp_free_all(struct sched *s);

#endif
