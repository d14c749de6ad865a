/*
 * store: the queue's public face.  See store.h for the contract.
 *
 * Owns: the lock file descriptor, the database (queue/store_db: schema,
 * statements, the SQL run on the pool), the two lanes of pool jobs
 * (queue/lane: writer batching, reader one at a time), and the queue ids.
 * Never: runs a statement on the loop thread after store_open() returned,
 * touches loop state from a pool thread, or knows SMTP syntax.  The DATA
 * spool is queue/spool's object; the store_spool_* calls here are its
 * interface for the store's users.  Freshly committed messages are kept in
 * queue/fresh, and store_show() and store_body_read() of them are answered
 * from there on the next loop turn (an idle handle), without a pool job.
 */
#include "queue/store.h"

#include "log.h"
#include "queue/fresh.h"
#include "queue/lane.h"
#include "queue/store_db.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/time.h>
#include <unistd.h>

#ifndef container_of
#define container_of(ptr, type, member)                                        \
  ((type *)((char *)(ptr)-offsetof(type, member)))
#endif

struct store_job {
  struct lane_job lj; /* first */
  struct store *st;
  void *data;
  int fresh;                    /* answered from the cache: not in a lane */
  struct store_job *ready_next; /* the ready list (fresh answers) */
  /* a commit that will enter the cache (req.keep): in store.keeping until
   * it finishes; fresh_ok is cleared (loop thread) when a writer request
   * names its id meanwhile, so what it committed is not cached stale */
  struct hnode keep_node;
  int keeping, fresh_ok;
  union {
    store_done_cb done;
    store_msgs_cb msgs;
    store_show_cb show;
    store_read_cb read;
    store_count_cb count;
    store_select_cb select;
    store_bulk_cb bulk;
  } cb;
  struct store_req req;
};

struct store {
  uv_loop_t *loop;
  char *path;
  char *dir;
  unsigned spool_flags;             /* test hook: SPOOL_NO_TMPFILE */
  struct spool_budget spool_budget; /* shared by this store's spools */
  char *enospc_file;                /* test hook: store_debug_enospc_file */
  int lockfd;
  struct store_db *db;
  struct lane wl, rl;
  /* Fresh-message cache, and the answers from it waiting for the next loop
   * turn (callbacks never run inside the starting call). */
  struct fresh fresh;
  struct htab keeping; /* id -> commit job in flight with req.keep */
  struct store_job *ready_head, *ready_tail;
  uv_idle_t ready_idle;
  int w_committed; /* the writer batch's transaction committed */
  struct store_stats stats;
  uint64_t last_us;
  uint64_t rng;
  /* The smallest id this process may make: every message present at open
   * sorts below it, every one made later at or above it (store_load). */
  char first_new[STORE_ID_SIZE];
  /* store_suspensions_at_open(): read at open, sorted by dest */
  struct store_suspension *susp;
  size_t nsusp;
  /* store_trust_at_open() */
  struct store_sts_row *sts;
  size_t nsts;
  struct store_rpt_row *rpt;
  size_t nrpt;
  int64_t rpt_start;
  int closing;
  uv_work_t close_req;
  store_close_cb close_cb;
  void *close_data;
};

static struct store_job *job_of(struct lane_job *lj) {
  return container_of(lj, struct store_job, lj);
}

const char *store_rcpt_state_name(enum store_rcpt_state s) {
  switch (s) {
  case STORE_RCPT_QUEUED:
    return "queued";
  case STORE_RCPT_DEFERRED:
    return "deferred";
  case STORE_RCPT_DELIVERED:
    return "delivered";
  case STORE_RCPT_BOUNCED:
    return "bounced";
  }
  return "unknown";
}

/* ---- helpers ---------------------------------------------------------- */

static char *xstrdup(const char *s) {
  return s ? strdup(s) : NULL;
}

/* Deep copy of the envelope; the prefix is copied by the caller. */
static int msg_copy(struct store_msg *d, const struct store_msg *s) {
  memset(d, 0, sizeof *d);
  memcpy(d->id, s->id, sizeof d->id);
  d->sender = strdup(s->sender ? s->sender : "");
  d->size = s->size;
  d->received_at = s->received_at;
  d->held = s->held;
  d->ret = s->ret;
  d->envid = xstrdup(s->envid);
  d->flags = s->flags;
  if (!d->sender || (s->envid && !d->envid))
    goto fail;
  if (s->nrcpts) {
    d->rcpts = calloc(s->nrcpts, sizeof *d->rcpts);
    if (!d->rcpts)
      goto fail;
    d->nrcpts = s->nrcpts;
    for (size_t i = 0; i < s->nrcpts; i++) {
      const struct store_rcpt *a = &s->rcpts[i];
      struct store_rcpt *b = &d->rcpts[i];
      *b = *a;
      b->address = strdup(a->address ? a->address : "");
      b->orcpt = xstrdup(a->orcpt);
      b->domain = strdup(a->domain ? a->domain : "");
      b->last_error = NULL;
      if (!b->address || !b->domain || (a->orcpt && !b->orcpt))
        goto fail;
    }
  }
  return 0;
fail:
  store_msg_clear(d);
  return -ENOMEM;
}

static int id_valid(const char *id) {
  size_t n = 0;
  if (!id)
    return 0;
  for (; id[n]; n++) {
    char c = id[n];
    if (n >= STORE_ID_LEN ||
        !((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') ||
          (c >= 'a' && c <= 'z')))
      return 0;
  }
  return n > 0;
}

static const char b62[] =
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

static uint64_t now_us(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
}

#define ID_TIME_DIGITS 9
#define ID_TIME_LIMIT 13537086546263552ull /* 62^9 */

static int b62_val(char c) {
  const char *p = c ? strchr(b62, c) : NULL;
  return p ? (int)(p - b62) : -1;
}

/* The time digits of the largest id at open, as microseconds (a shorter
 * id is read as if padded with '0', which sorts at or after it): new ids
 * must start later.  Returns 0 when the id is not of that form. */
static int id_time(const char *id, uint64_t *us) {
  uint64_t v = 0;
  size_t n = strlen(id);
  for (size_t i = 0; i < ID_TIME_DIGITS; i++) {
    int d = i < n ? b62_val(id[i]) : 0;
    if (d < 0)
      return 0;
    v = v * 62 + (uint64_t)d;
  }
  *us = v;
  return 1;
}

static void encode_time(uint64_t us, char *out) {
  for (int i = ID_TIME_DIGITS - 1; i >= 0; i--) {
    out[i] = b62[us % 62];
    us /= 62;
  }
}

/* Sets the id floor from the queue's largest id (store_open). */
static void id_floor(struct store *st, const char *max_id) {
  uint64_t us = now_us(), top;
  if (max_id[0] && id_time(max_id, &top) && top + 1 > us)
    us = top + 1; /* the clock went back since that id was made */
  if (us >= ID_TIME_LIMIT) {
    st->first_new[0] = '\0'; /* cannot happen before the year 2399 */
    return;
  }
  st->last_us = us - 1;
  encode_time(us, st->first_new);
  memset(st->first_new + ID_TIME_DIGITS, '0', STORE_ID_LEN - ID_TIME_DIGITS);
  st->first_new[STORE_ID_LEN] = '\0';
}

void store_new_id(struct store *st, char out[STORE_ID_SIZE]) {
  uint64_t us = now_us();
  /* Strictly increasing within the process, so ids never repeat here; the
   * random tail covers restarts with a clock that went back. */
  if (us <= st->last_us)
    us = st->last_us + 1;
  st->last_us = us;
  for (int i = 8; i >= 0; i--) {
    out[i] = b62[us % 62];
    us /= 62;
  }
  /* xorshift64: only uniqueness matters, not secrecy. */
  uint64_t x = st->rng;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  st->rng = x;
  for (int i = 9; i < STORE_ID_LEN; i++) {
    out[i] = b62[x % 62];
    x /= 62;
  }
  out[STORE_ID_LEN] = '\0';
}

void store_get_stats(const struct store *st, struct store_stats *out) {
  *out = st->stats;
  out->pending = lane_pending(&st->wl);
  out->fresh_hits = st->fresh.hits;
  out->fresh_misses = st->fresh.misses;
  out->fresh_entries = st->fresh.entries;
  out->fresh_bytes = st->fresh.used;
  out->spool_mem = st->spool_budget.used;
}

/* ---- jobs ------------------------------------------------------------- */

static struct store_job *job_new(struct store *st, enum store_op op,
                                 void *data) {
  struct store_job *job = calloc(1, sizeof *job);
  if (!job)
    return NULL;
  job->st = st;
  job->req.op = op;
  job->data = data;
  return job;
}

static void job_free(struct store_job *job) {
  store_req_clear(&job->req);
  free(job);
}

static int op_writes(enum store_op op) {
  return op <= STORE_OP_TRUST;
}

static struct lane *job_lane(struct store *st, struct store_job *job) {
  return op_writes(job->req.op) ? &st->wl : &st->rl;
}

static void job_push(struct store *st, struct store_job *job) {
  lane_push(job_lane(st, job), &job->lj);
}

void store_cancel(struct store_job *job) {
  /* An answer from the cache is complete already: like a running job, it
   * reports its real result. */
  if (!job->fresh)
    lane_cancel(job_lane(job->st, job), &job->lj);
}

/* Runs the job's callback with its final result and frees it (loop). */
static void job_finish(struct store_job *job, int status) {
  struct store *st = job->st;
  if (job->keeping) {
    htab_del(&st->keeping, &job->keep_node);
    job->keeping = 0;
  }
  if (job->req.op == STORE_OP_COMMIT && job->req.keep) {
    /* The reservation becomes an entry once the message is durable, unless
     * a writer request named it meanwhile (fresh_ok cleared). */
    job->req.keep = 0;
    if (status == 0 && job->req.kept && job->fresh_ok) {
      (void)fresh_put(&st->fresh, &job->req.msg, job->req.kept,
                      job->req.kept_hlen, uv_now(st->loop));
      job->req.kept = NULL;
      job->req.has_msg = 0;
    } else {
      fresh_unreserve(&st->fresh, (size_t)job->req.msg.size);
    }
  }
  switch (job->req.op) {
  case STORE_OP_COMMIT:
  case STORE_OP_UPDATE:
  case STORE_OP_DELETE:
  case STORE_OP_HELD:
  case STORE_OP_SUSPEND:
  case STORE_OP_TRUST:
    job->cb.done(st, status, job->data);
    break;
  case STORE_OP_BULK:
    job->cb.bulk(st, status, status == 0 ? job->req.changed : NULL,
                 status == 0 ? job->req.nids : 0, job->data);
    break;
  case STORE_OP_SELECT:
    if (status == 0)
      job->cb.select(st, 0, job->req.batch, job->req.nbatch, job->req.last_id,
                     job->req.done, job->data);
    else
      job->cb.select(st, status, NULL, 0, job->req.last_id, 1, job->data);
    break;
  case STORE_OP_LOAD:
  case STORE_OP_LIST:
    job->cb.msgs(st, status, NULL, 0, 1, job->data);
    break;
  case STORE_OP_SHOW:
    job->cb.show(st, status, status == 0 ? &job->req.msg : NULL, job->data);
    break;
  case STORE_OP_READ:
    job->cb.read(st, status, status == 0 ? job->req.got : 0, job->req.total,
                 job->data);
    break;
  case STORE_OP_COUNT:
    job->cb.count(st, status, status == 0 ? &job->req.counts : NULL, job->data);
    break;
  }
  job_free(job);
}

static void warn_job(struct store_job *job) {
  int status = job->req.status;
  if (status == 0 || status == -ENOENT || status == -ECANCELED)
    return;
  log_msg(LOG_WARN, "store", "%s failed: %s (%s)", store_op_name(job->req.op),
          strerror(-status), job->req.errmsg[0] ? job->req.errmsg : "-");
}

/* ---- lanes ------------------------------------------------------------ */

static void maybe_finish_close(struct store *st);

/* Pool thread: the batch's requests form one chain for store_db. */
static void on_writer_work(struct lane *l, struct lane_job *first) {
  struct store *st = l->data;
  for (struct lane_job *j = first; j; j = j->next)
    job_of(j)->req.next = j->next ? &job_of(j->next)->req : NULL;
  /* Read by the after-work callback, which runs after this returns. */
  st->w_committed = store_db_write(st->db, &job_of(first)->req);
}

static void on_reader_work(struct lane *l, struct lane_job *first) {
  struct store *st = l->data;
  store_db_read(st->db, &job_of(first)->req);
}

static void on_writer_after(struct lane *l, struct lane_job *list) {
  struct store *st = l->data;
  st->stats.transactions += st->w_committed;
  st->w_committed = 0;
  while (list) {
    struct store_job *j = job_of(list);
    list = list->next;
    j->lj.next = NULL;
    warn_job(j);
    if (j->req.op == STORE_OP_COMMIT)
      st->stats.commits += j->req.status == 0;
    st->stats.failed += j->req.status != 0;
    job_finish(j, j->req.status);
  }
}

static void on_reader_after(struct lane *l, struct lane_job *lj) {
  struct store *st = l->data;
  struct store_job *j = job_of(lj);
  struct store_req *q = &j->req;
  warn_job(j);
  int stream = q->op == STORE_OP_LOAD || q->op == STORE_OP_LIST;
  if (stream && q->status == 0 && !q->done && !lj->cancel) {
    j->cb.msgs(st, 0, q->batch, q->nbatch, 0, j->data);
    for (size_t i = 0; i < q->nbatch; i++)
      store_msg_clear(&q->batch[i]);
    free(q->batch);
    q->batch = NULL;
    q->nbatch = 0;
    if (lj->cancel)
      job_finish(j, -ECANCELED);
    else
      lane_requeue(l, lj); /* others get their turn between batches */
  } else if (stream) {
    if (lj->cancel)
      q->status = -ECANCELED;
    if (q->status == 0)
      j->cb.msgs(st, 0, q->batch, q->nbatch, 1, j->data);
    else
      j->cb.msgs(st, q->status, NULL, 0, 1, j->data);
    job_free(j);
  } else {
    job_finish(j, q->status);
  }
}

static void on_job_cancelled(struct lane *l, struct lane_job *lj) {
  (void)l;
  job_finish(job_of(lj), -ECANCELED);
}

static void on_lane_idle(struct lane *l) {
  maybe_finish_close(l->data);
}

static const struct lane_ops writer_ops = {
    .work = on_writer_work,
    .after = on_writer_after,
    .cancelled = on_job_cancelled,
    .idle = on_lane_idle,
};

static const struct lane_ops reader_ops = {
    .work = on_reader_work,
    .after = on_reader_after,
    .cancelled = on_job_cancelled,
    .idle = on_lane_idle,
};

/* ---- answers from the fresh-message cache ----------------------------- */

static void on_ready(uv_idle_t *h) {
  struct store *st = h->data;
  /* Answers pushed by these callbacks wait for the next turn. */
  struct store_job *j = st->ready_head;
  st->ready_head = st->ready_tail = NULL;
  while (j) {
    struct store_job *next = j->ready_next;
    job_finish(j, j->req.status);
    j = next;
  }
  if (!st->ready_head)
    uv_idle_stop(&st->ready_idle);
  maybe_finish_close(st);
}

/* Queues a job answered from the cache (req.status and results set). */
static void ready_push(struct store *st, struct store_job *job) {
  job->fresh = 1;
  job->ready_next = NULL;
  if (st->ready_tail)
    st->ready_tail->ready_next = job;
  else
    st->ready_head = job;
  st->ready_tail = job;
  uv_idle_start(&st->ready_idle, on_ready);
}

/* Fills a show job's result from a cache entry: 0 or -ENOMEM (then the
 * job goes to the database as usual). */
static int fresh_show(struct store_job *job, const struct fresh_entry *e) {
  struct store_msg *m = &job->req.msg;
  if (msg_copy(m, &e->msg) < 0)
    return -ENOMEM;
  job->req.has_msg = 1;
  m->notices = e->msg.notices;
  m->headers = strndup(e->bytes, e->hlen);
  if (!m->headers) {
    store_msg_clear(m);
    job->req.has_msg = 0;
    return -ENOMEM;
  }
  return 0;
}

/* A writer request names id: its cache entry goes, and a commit of it
 * still in flight will not enter the cache (an admin hold, delete or bulk
 * action can name a message whose commit is durable but not yet
 * reported). */
static void fresh_forget(struct store *st, const char *id) {
  fresh_drop(&st->fresh, id);
  struct hnode *n = st->keeping.n ? htab_get(&st->keeping, id) : NULL;
  if (n)
    container_of(n, struct store_job, keep_node)->fresh_ok = 0;
}

/* ---- public requests -------------------------------------------------- */

static int check_open(struct store *st) {
  return st->closing ? -ESHUTDOWN : 0;
}

int store_commit(struct store *st, struct store_msg *msg,
                 struct store_spool *body, store_done_cb cb, void *data,
                 struct store_job **jobp) {
  int r = check_open(st);
  if (r == 0 && body && spool_busy(body))
    r = -EBUSY;
  if (r == 0 && body && spool_error(body))
    r = spool_error(body);
  if (r == 0 && msg->id[0] && !id_valid(msg->id))
    r = -EINVAL;
  struct store_job *job = r == 0 ? job_new(st, STORE_OP_COMMIT, data) : NULL;
  if (r == 0 && !job)
    r = -ENOMEM;
  if (r < 0) {
    if (body)
      spool_free(body);
    return r;
  }
  job->req.spool = body;
  if (!msg->id[0])
    store_new_id(st, msg->id);
  msg->size = (int64_t)msg->prefix_len + (body ? spool_size(body) : 0);
  if (msg_copy(&job->req.msg, msg) < 0 ||
      (msg->prefix_len && !(job->req.prefix = malloc(msg->prefix_len)))) {
    job_free(job);
    return -ENOMEM;
  }
  job->req.has_msg = 1;
  if (msg->prefix_len)
    memcpy(job->req.prefix, msg->prefix, msg->prefix_len);
  job->req.msg.prefix_len = msg->prefix_len;
  job->req.keep =
      fresh_reserve(&st->fresh, (size_t)msg->size, uv_now(st->loop));
  if (job->req.keep) {
    job->fresh_ok = 1;
    job->keep_node.key = job->req.msg.id;
    htab_put(&st->keeping, &job->keep_node);
    job->keeping = 1;
  }
  job->cb.done = cb;
  if (jobp)
    *jobp = job;
  job_push(st, job);
  return 0;
}

int store_update(struct store *st, const struct store_outcome *outcomes,
                 size_t n, struct store_msg *bounce, store_done_cb cb,
                 void *data, struct store_job **jobp) {
  int r = check_open(st);
  if (r < 0)
    return r;
  if (bounce && bounce->id[0] && !id_valid(bounce->id))
    return -EINVAL;
  struct store_job *job = job_new(st, STORE_OP_UPDATE, data);
  if (!job)
    return -ENOMEM;
  if (n && !(job->req.outs = calloc(n, sizeof *job->req.outs)))
    goto nomem;
  for (size_t i = 0; i < n; i++) {
    fresh_forget(st, outcomes[i].id);
    job->req.outs[i] = outcomes[i];
    job->req.outs[i].id = strdup(outcomes[i].id);
    job->req.outs[i].last_error = xstrdup(outcomes[i].last_error);
    job->req.nouts = i + 1;
    if (!job->req.outs[i].id ||
        (outcomes[i].last_error && !job->req.outs[i].last_error))
      goto nomem;
  }
  if (bounce) {
    if (!bounce->id[0])
      store_new_id(st, bounce->id);
    bounce->size = (int64_t)bounce->prefix_len;
    if (msg_copy(&job->req.msg, bounce) < 0)
      goto nomem;
    job->req.has_msg = 1;
    if (bounce->prefix_len) {
      if (!(job->req.prefix = malloc(bounce->prefix_len)))
        goto nomem;
      memcpy(job->req.prefix, bounce->prefix, bounce->prefix_len);
    }
    job->req.msg.prefix_len = bounce->prefix_len;
  }
  job->cb.done = cb;
  if (jobp)
    *jobp = job;
  job_push(st, job);
  return 0;
nomem:
  job_free(job);
  return -ENOMEM;
}

static int simple_writer(struct store *st, enum store_op kind, const char *id,
                         int held, store_done_cb cb, void *data) {
  int r = check_open(st);
  if (r < 0)
    return r;
  if (!id_valid(id))
    return -EINVAL;
  struct store_job *job = job_new(st, kind, data);
  if (!job)
    return -ENOMEM;
  snprintf(job->req.id, sizeof job->req.id, "%s", id);
  fresh_forget(st, id);
  job->req.held = held;
  job->cb.done = cb;
  job_push(st, job);
  return 0;
}

int store_delete(struct store *st, const char *id, store_done_cb cb,
                 void *data) {
  return simple_writer(st, STORE_OP_DELETE, id, 0, cb, data);
}

int store_set_held(struct store *st, const char *id, int held, store_done_cb cb,
                   void *data) {
  return simple_writer(st, STORE_OP_HELD, id, held ? 1 : 0, cb, data);
}

static int stream(struct store *st, enum store_op kind, store_msgs_cb cb,
                  void *data, struct store_job **jobp) {
  int r = check_open(st);
  if (r < 0)
    return r;
  struct store_job *job = job_new(st, kind, data);
  if (!job)
    return -ENOMEM;
  if (kind == STORE_OP_LOAD)
    memcpy(job->req.ceiling, st->first_new, sizeof job->req.ceiling);
  job->cb.msgs = cb;
  if (jobp)
    *jobp = job;
  job_push(st, job);
  return 0;
}

int store_load(struct store *st, store_msgs_cb cb, void *data,
               struct store_job **jobp) {
  return stream(st, STORE_OP_LOAD, cb, data, jobp);
}

int store_count(struct store *st, store_count_cb cb, void *data) {
  int r = check_open(st);
  if (r < 0)
    return r;
  struct store_job *job = job_new(st, STORE_OP_COUNT, data);
  if (!job)
    return -ENOMEM;
  memcpy(job->req.ceiling, st->first_new, sizeof job->req.ceiling);
  job->cb.count = cb;
  job_push(st, job);
  return 0;
}

int store_list(struct store *st, store_msgs_cb cb, void *data,
               struct store_job **jobp) {
  return stream(st, STORE_OP_LIST, cb, data, jobp);
}

int store_show(struct store *st, const char *id, store_show_cb cb, void *data) {
  int r = check_open(st);
  if (r < 0)
    return r;
  if (!id_valid(id))
    return -EINVAL;
  struct store_job *job = job_new(st, STORE_OP_SHOW, data);
  if (!job)
    return -ENOMEM;
  snprintf(job->req.id, sizeof job->req.id, "%s", id);
  job->cb.show = cb;
  const struct fresh_entry *e = fresh_get(&st->fresh, id);
  if (e && fresh_show(job, e) == 0)
    ready_push(st, job);
  else
    job_push(st, job);
  return 0;
}

int store_body_read(struct store *st, const char *id, int64_t offset, void *buf,
                    size_t len, store_read_cb cb, void *data,
                    struct store_job **jobp) {
  int r = check_open(st);
  if (r < 0)
    return r;
  if (!id_valid(id) || offset < 0 || len > INT_MAX)
    return -EINVAL;
  struct store_job *job = job_new(st, STORE_OP_READ, data);
  if (!job)
    return -ENOMEM;
  snprintf(job->req.id, sizeof job->req.id, "%s", id);
  job->req.offset = offset;
  job->req.buf = buf;
  job->req.len = len;
  job->cb.read = cb;
  if (jobp)
    *jobp = job;
  const struct fresh_entry *e = fresh_get(&st->fresh, id);
  if (e) {
    /* buf is valid now; the callback reports it on the next turn. */
    int64_t total = e->msg.size;
    size_t n = 0;
    if (offset < total) {
      n = total - offset < (int64_t)len ? (size_t)(total - offset) : len;
      memcpy(buf, e->bytes + offset, n);
    }
    job->req.got = n;
    job->req.total = total;
    ready_push(st, job);
  } else {
    job_push(st, job);
  }
  return 0;
}

int store_select(struct store *st, const struct qfilter *f, int64_t now,
                 const char *after, store_select_cb cb, void *data) {
  int r = check_open(st);
  if (r < 0)
    return r;
  if (!f || !after || (after[0] && !id_valid(after)))
    return -EINVAL;
  struct store_job *job = job_new(st, STORE_OP_SELECT, data);
  if (!job)
    return -ENOMEM;
  job->req.filter = *f;
  job->req.now = now;
  snprintf(job->req.last_id, sizeof job->req.last_id, "%s", after);
  job->cb.select = cb;
  job_push(st, job);
  return 0;
}

int store_bulk(struct store *st, enum store_bulk_action action,
               const char *const *ids, size_t n, store_bulk_cb cb, void *data) {
  int r = check_open(st);
  if (r < 0)
    return r;
  if (n == 0 || n > STORE_BULK_MAX ||
      (action != STORE_BULK_DELETE && action != STORE_BULK_HOLD &&
       action != STORE_BULK_RELEASE))
    return -EINVAL;
  for (size_t i = 0; i < n; i++)
    if (!id_valid(ids[i]))
      return -EINVAL;
  struct store_job *job = job_new(st, STORE_OP_BULK, data);
  if (!job)
    return -ENOMEM;
  job->req.ids = calloc(n, sizeof *job->req.ids);
  job->req.changed = calloc(n, sizeof *job->req.changed);
  if (!job->req.ids || !job->req.changed) {
    job_free(job);
    return -ENOMEM;
  }
  for (size_t i = 0; i < n; i++) {
    snprintf(job->req.ids[i], STORE_ID_SIZE, "%s", ids[i]);
    fresh_forget(st, ids[i]);
  }
  job->req.nids = n;
  job->req.action = action;
  job->cb.bulk = cb;
  job_push(st, job);
  return 0;
}

int store_suspend(struct store *st, const char *dest, int64_t until,
                  store_done_cb cb, void *data) {
  int r = check_open(st);
  if (r < 0)
    return r;
  if (!dest || !*dest || strlen(dest) >= sizeof st->susp->dest || until < 0)
    return -EINVAL;
  struct store_job *job = job_new(st, STORE_OP_SUSPEND, data);
  if (!job)
    return -ENOMEM;
  snprintf(job->req.dest, sizeof job->req.dest, "%s", dest);
  job->req.until = until;
  job->cb.done = cb;
  job_push(st, job);
  return 0;
}

size_t store_suspensions_at_open(const struct store *st,
                                 const struct store_suspension **out) {
  *out = st->susp;
  return st->nsusp;
}

static struct store_job *trust_job(struct store *st, enum store_trust_kind k,
                                   const char *domain, store_done_cb cb,
                                   void *data) {
  if (check_open(st) < 0 || !cb)
    return NULL;
  if (domain && (!*domain || strlen(domain) >= sizeof st->susp->dest))
    return NULL;
  struct store_job *job = job_new(st, STORE_OP_TRUST, data);
  if (!job)
    return NULL;
  job->req.trust = k;
  if (domain)
    snprintf(job->req.dest, sizeof job->req.dest, "%s", domain);
  job->cb.done = cb;
  return job;
}

int store_sts_put(struct store *st, const char *domain, const char *id,
                  int64_t fetched_at, int64_t expires_at, const char *policy,
                  store_done_cb cb, void *data) {
  if (!domain || (policy && (!id || strlen(id) >= STORE_STS_ID_SIZE ||
                             strlen(policy) > 65536)))
    return -EINVAL;
  struct store_job *job = trust_job(
      st, policy ? STORE_TRUST_STS_PUT : STORE_TRUST_STS_DEL, domain, cb, data);
  if (!job)
    return check_open(st) < 0 ? check_open(st) : -EINVAL;
  if (policy) {
    job->req.policy = strdup(policy);
    if (!job->req.policy) {
      job_free(job);
      return -ENOMEM;
    }
    snprintf(job->req.sts_id, sizeof job->req.sts_id, "%s", id);
    job->req.fetched_at = fetched_at;
    job->req.expires_at = expires_at;
  }
  job_push(st, job);
  return 0;
}

int store_tlsrpt_add(struct store *st, const char *domain, const char *policy,
                     const char *result, int64_t delta, store_done_cb cb,
                     void *data) {
  if (!domain || !policy || !result || strlen(policy) >= 16 ||
      strlen(result) >= 48)
    return -EINVAL;
  struct store_job *job = trust_job(st, STORE_TRUST_RPT_ADD, domain, cb, data);
  if (!job)
    return check_open(st) < 0 ? check_open(st) : -EINVAL;
  snprintf(job->req.rpt_policy, sizeof job->req.rpt_policy, "%s", policy);
  snprintf(job->req.rpt_result, sizeof job->req.rpt_result, "%s", result);
  job->req.delta = delta;
  job_push(st, job);
  return 0;
}

int store_tlsrpt_reset(struct store *st, int64_t period_start, store_done_cb cb,
                       void *data) {
  struct store_job *job = trust_job(st, STORE_TRUST_RPT_RESET, NULL, cb, data);
  if (!job)
    return check_open(st) < 0 ? check_open(st) : -EINVAL;
  job->req.period_start = period_start;
  job_push(st, job);
  return 0;
}

void store_trust_at_open(const struct store *st,
                         const struct store_sts_row **sts, size_t *nsts,
                         const struct store_rpt_row **rpt, size_t *nrpt,
                         int64_t *period_start) {
  *sts = st->sts;
  *nsts = st->nsts;
  *rpt = st->rpt;
  *nrpt = st->nrpt;
  *period_start = st->rpt_start;
}

/* ---- spool ------------------------------------------------------------ */

struct store_spool *store_spool_new(struct store *st) {
  struct store_spool *sp =
      spool_new(st->loop, st->dir, st->spool_flags, &st->spool_budget);
  if (sp && st->enospc_file)
    spool_debug_enospc_file(sp, st->enospc_file);
  return sp;
}

int store_spool_append(struct store_spool *sp, const void *buf, size_t len,
                       store_spool_cb cb, void *data) {
  return spool_append(sp, buf, len, cb, data);
}

int64_t store_spool_size(const struct store_spool *sp) {
  return spool_size(sp);
}

long store_spool_pread(struct store_spool *sp, int64_t off, void *buf,
                       size_t len) {
  int e = spool_error(sp);
  if (e)
    return e < 0 ? e : -EIO;
  int64_t size = spool_size(sp);
  if (off < 0 || off >= size)
    return 0;
  if ((int64_t)len > size - off)
    len = (size_t)(size - off);
  char err[128];
  int rc = spool_pread(sp, off, buf, len, err, sizeof err);
  return rc < 0 ? rc : (long)len;
}

void store_spool_free(struct store_spool *sp) {
  spool_free(sp);
}

/* ---- open and close --------------------------------------------------- */

static int open_lock(const char *path, int *fdp, char *err, size_t errlen) {
  size_t n = strlen(path) + 6;
  char *lpath = malloc(n);
  if (!lpath)
    return -ENOMEM;
  snprintf(lpath, n, "%s.lock", path);
  int fd = open(lpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    int e = errno;
    snprintf(err, errlen, "cannot open queue lock %s: %s", lpath, strerror(e));
    free(lpath);
    return -e;
  }
  if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
    int e = errno;
    if (e == EWOULDBLOCK) {
      char buf[32] = {0};
      ssize_t r = pread(fd, buf, sizeof buf - 1, 0);
      long pid = r > 0 ? strtol(buf, NULL, 10) : 0;
      if (pid > 0)
        snprintf(err, errlen, "queue %s is in use by process %ld", path, pid);
      else
        snprintf(err, errlen, "queue %s is in use by another process", path);
      e = EBUSY;
    } else {
      snprintf(err, errlen, "cannot lock %s: %s", lpath, strerror(e));
    }
    close(fd);
    free(lpath);
    return -e;
  }
  free(lpath);
  char buf[32];
  int len = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
  if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)len, 0) != len) {
    int e = errno ? errno : EIO;
    snprintf(err, errlen, "cannot write queue lock for %s: %s", path,
             strerror(e));
    close(fd);
    return -e;
  }
  *fdp = fd;
  return 0;
}

static void store_free(struct store *st) {
  if (st->db)
    store_db_close(st->db);
  if (st->lockfd >= 0)
    close(st->lockfd);
  free(st->path);
  free(st->dir);
  free(st->enospc_file);
  free(st->susp);
  for (size_t i = 0; i < st->nsts; i++)
    free(st->sts[i].policy);
  free(st->sts);
  free(st->rpt);
  fresh_fini(&st->fresh);
  htab_fini(&st->keeping);
  free(st);
}

int store_open(uv_loop_t *loop, const char *path, struct store **out, char *err,
               size_t errlen) {
  struct store *st = calloc(1, sizeof *st);
  if (!st) {
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
  }
  st->loop = loop;
  st->lockfd = -1;
  st->spool_budget.limit = SPOOL_BUDGET;
  if (fresh_init(&st->fresh) < 0 || htab_init(&st->keeping, 64) < 0) {
    fresh_fini(&st->fresh);
    htab_fini(&st->keeping);
    free(st);
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
  }
  lane_init(&st->wl, loop, 1, &writer_ops, st);
  lane_init(&st->rl, loop, 0, &reader_ops, st);
  st->path = strdup(path);
  const char *slash = strrchr(path, '/');
  st->dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path))
                  : strdup(".");
  if (!st->path || !st->dir) {
    store_free(st);
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
  }
  if (getrandom(&st->rng, sizeof st->rng, 0) != sizeof st->rng || !st->rng)
    st->rng = 0x9e3779b97f4a7c15u ^ (uint64_t)getpid();

  int r = open_lock(path, &st->lockfd, err, errlen);
  if (r == 0)
    r = store_db_open(path, &st->db, err, errlen);
  char max_id[STORE_ID_SIZE] = "";
  if (r == 0 && store_db_max_id(st->db, max_id) < 0) {
    snprintf(err, errlen, "queue %s: cannot read the largest id", path);
    r = -EIO;
  }
  if (r == 0)
    id_floor(st, max_id);
  if (r == 0 && store_db_suspensions(st->db, &st->susp, &st->nsusp) < 0) {
    snprintf(err, errlen, "queue %s: cannot read the suspensions", path);
    r = -EIO;
  }
  if (r == 0 && store_db_trust(st->db, &st->sts, &st->nsts, &st->rpt, &st->nrpt,
                               &st->rpt_start) < 0) {
    snprintf(err, errlen, "queue %s: cannot read the MTA-STS/TLS-RPT tables",
             path);
    r = -EIO;
  }
  if (r < 0) {
    store_free(st);
    return r;
  }
  uv_idle_init(loop, &st->ready_idle);
  st->ready_idle.data = st;
  *out = st;
  return 0;
}

static void on_close_work(uv_work_t *req) {
  struct store *st = container_of(req, struct store, close_req);
  /* The last close checkpoints the WAL (fsync): on the pool, like all
   * other disk waits after start-up. */
  store_db_close(st->db);
  st->db = NULL;
}

static void on_close_after(uv_work_t *req, int status) {
  struct store *st = container_of(req, struct store, close_req);
  (void)status;
  store_close_cb cb = st->close_cb;
  void *data = st->close_data;
  store_free(st);
  if (cb)
    cb(data);
}

static void on_ready_closed(uv_handle_t *h) {
  struct store *st = h->data;
  int r =
      uv_queue_work(st->loop, &st->close_req, on_close_work, on_close_after);
  assert(r == 0);
  (void)r;
}

static void maybe_finish_close(struct store *st) {
  if (st->closing != 1 || !lane_idle(&st->wl) || !lane_idle(&st->rl) ||
      st->ready_head)
    return;
  st->closing = 2;
  uv_close((uv_handle_t *)&st->ready_idle, on_ready_closed);
}

void store_close(struct store *st, store_close_cb cb, void *data) {
  assert(!st->closing);
  st->closing = 1;
  st->close_cb = cb;
  st->close_data = data;
  maybe_finish_close(st);
}

void store_debug_no_tmpfile(struct store *st) {
  st->spool_flags |= SPOOL_NO_TMPFILE;
}

void store_debug_spool_budget(struct store *st, size_t bytes) {
  st->spool_budget.limit = bytes;
}

int store_debug_max_pages(struct store *st, long pages) {
  assert(lane_idle(&st->wl));
  return store_db_max_pages(st->db, pages);
}

void store_debug_fail_commits(struct store *st, int n) {
  assert(lane_idle(&st->wl));
  store_db_fail_commits(st->db, n);
}

int store_debug_enospc_file(struct store *st, const char *path) {
  assert(lane_idle(&st->wl));
  /* Spools borrow the path: it is set once and lives as long as the store. */
  if (st->enospc_file || !path)
    return -EALREADY;
  char *p = strdup(path);
  if (!p)
    return -ENOMEM;
  int r = store_db_enospc_file(st->db, path);
  if (r < 0) {
    free(p);
    return r;
  }
  st->enospc_file = p;
  return 0;
}
