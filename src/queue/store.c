/*
 * store: the SQLite queue.  See store.h for the contract.
 *
 * Owns: the lock file descriptor, the writer and reader connections with
 * their prepared statements, the two lanes of pool jobs, the spools.
 * Never: runs a statement on the loop thread after store_open() returned,
 * touches loop state from a pool thread, or knows SMTP syntax.
 *
 * Lane invariant: a lane has pending jobs only while a job of it is in
 * flight (an enqueue on an idle lane starts it at once), so a job cancelled
 * while pending is always completed by that in-flight job's after-work
 * callback, on a later loop turn.
 */
#include "queue/store.h"

#include "log.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <sqlite3.h>
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

#define SCHEMA_VERSION 1
#define HEADERS_MAX (64 * 1024)
#define COPY_CHUNK (64 * 1024)

enum stmt_id {
  /* writer */
  W_INS_MSG,
  W_INS_RCPT,
  W_UPD_RCPT,
  W_DEL_MSG_IF_FINAL,
  W_DEL_RCPTS,
  W_DEL_MSG,
  W_SET_HELD,
  /* reader */
  R_MSGS_AFTER,
  R_MSG_BY_ID,
  R_RCPTS_ALL,
  R_RCPTS_PENDING,
  R_BODY_INFO,
  STMT_COUNT
};

static const char *const stmt_sql[STMT_COUNT] = {
    [W_INS_MSG] = "INSERT INTO messages(id, sender, size, received_at, held,"
                  " ret, envid, flags, headers, body)"
                  " VALUES(?1, ?2, ?3, ?4, 0, ?5, ?6, ?7, ?8, zeroblob(?3))",
    [W_INS_RCPT] = "INSERT INTO recipients(message_id, idx, address, orcpt,"
                   " notify, domain, state, attempts, next_attempt_at)"
                   " VALUES(?1, ?2, ?3, ?4, ?5, ?6, 0, 0, 0)",
    [W_UPD_RCPT] = "UPDATE recipients SET state = ?3, attempts = ?4,"
                   " next_attempt_at = ?5, last_error = ?6"
                   " WHERE message_id = ?1 AND idx = ?2",
    [W_DEL_MSG_IF_FINAL] =
        "DELETE FROM messages WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM"
        " recipients WHERE message_id = ?1 AND state < 2)",
    [W_DEL_RCPTS] = "DELETE FROM recipients WHERE message_id = ?1",
    [W_DEL_MSG] = "DELETE FROM messages WHERE id = ?1",
    [W_SET_HELD] = "UPDATE messages SET held = ?2 WHERE id = ?1",
    [R_MSGS_AFTER] = "SELECT id, sender, size, received_at, held, ret, envid,"
                     " flags FROM messages WHERE id > ?1 ORDER BY id LIMIT ?2",
    [R_MSG_BY_ID] = "SELECT id, sender, size, received_at, held, ret, envid,"
                    " flags, headers FROM messages WHERE id = ?1",
    [R_RCPTS_ALL] = "SELECT idx, address, orcpt, notify, domain, state,"
                    " attempts, next_attempt_at, last_error FROM recipients"
                    " WHERE message_id = ?1 ORDER BY idx",
    [R_RCPTS_PENDING] = "SELECT idx, address, orcpt, notify, domain, state,"
                        " attempts, next_attempt_at, last_error FROM"
                        " recipients WHERE message_id = ?1 AND state < 2"
                        " ORDER BY idx",
    [R_BODY_INFO] = "SELECT rowid, size FROM messages WHERE id = ?1",
};

static const char schema_v1[] =
    "CREATE TABLE messages("
    " id TEXT PRIMARY KEY,"
    " sender TEXT NOT NULL,"
    " size INTEGER NOT NULL,"
    " received_at INTEGER NOT NULL,"
    " held INTEGER NOT NULL DEFAULT 0,"
    " ret INTEGER NOT NULL DEFAULT 0,"
    " envid TEXT,"
    " flags INTEGER NOT NULL DEFAULT 0,"
    " headers TEXT,"
    /* Last, so that reading the envelope never walks the overflow pages. */
    " body BLOB NOT NULL);"
    "CREATE TABLE recipients("
    " message_id TEXT NOT NULL,"
    " idx INTEGER NOT NULL,"
    " address TEXT NOT NULL,"
    " orcpt TEXT,"
    " notify INTEGER NOT NULL DEFAULT 0,"
    " domain TEXT NOT NULL,"
    " state INTEGER NOT NULL DEFAULT 0,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " next_attempt_at INTEGER NOT NULL DEFAULT 0,"
    " last_error TEXT,"
    " PRIMARY KEY(message_id, idx)) WITHOUT ROWID;";

enum job_kind {
  JOB_COMMIT,
  JOB_UPDATE,
  JOB_DELETE,
  JOB_HELD,
  JOB_LOAD,
  JOB_LIST,
  JOB_SHOW,
  JOB_READ,
};

enum job_state { JOB_PENDING, JOB_RUNNING, JOB_CANCELLED };

struct store_job {
  struct store_job *next;
  struct store *st;
  enum job_kind kind;
  enum job_state state;
  int cancel; /* cancel requested while running */
  int status;
  void *data;
  union {
    store_done_cb done;
    store_msgs_cb msgs;
    store_show_cb show;
    store_read_cb read;
  } cb;
  char errmsg[160]; /* SQLite's message for the warn line */

  /* commit, update's bounce, show's result */
  struct store_msg msg;
  int has_msg;
  char *prefix; /* owned copy of msg.prefix */
  struct store_spool *spool;
  /* update */
  struct store_outcome *outs;
  size_t nouts;
  /* delete, held, show, read */
  char id[STORE_ID_SIZE];
  int held;
  /* streams */
  char last_id[STORE_ID_SIZE];
  struct store_msg *batch;
  size_t nbatch;
  int done;
  /* read */
  int64_t offset;
  void *buf;
  size_t len, got;
  int64_t total;
};

struct lane {
  struct store_job *head, *tail; /* pending */
  struct store_job *running;     /* list of jobs in the in-flight work */
  struct store_job *cancelled;   /* completed with -ECANCELED after it */
  int busy;
  int writer;
  int committed; /* writer: the batch's transaction committed */
  uv_work_t req;
};

struct store {
  uv_loop_t *loop;
  char *path;
  char *dir;
  int no_tmpfile; /* test hook: always use the mkstemp fallback */
  int lockfd;
  sqlite3 *w, *r;
  sqlite3_stmt *stmt[STMT_COUNT];
  struct lane wl, rl;
  struct store_stats stats;
  uint64_t last_us;
  uint64_t rng;
  long max_pages; /* test hook, 0 = unset */
  int closing;
  uv_work_t close_req;
  store_close_cb close_cb;
  void *close_data;
};

struct store_spool {
  struct store *st;
  char *mem;
  size_t used, cap, woff;
  uv_file fd;
  int64_t file_len;
  int64_t total;
  int err;
  int pending;
  int freed;
  uv_fs_t req;
  uv_buf_t wbuf;
  char *tmppath;
  store_spool_cb cb;
  void *data;
};

static void lane_kick(struct store *st, struct lane *l);
static void maybe_finish_close(struct store *st);

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

static const char *job_kind_name(enum job_kind k) {
  static const char *const names[] = {"commit", "update", "delete", "held",
                                      "load",   "list",   "show",   "read"};
  return names[k];
}

/* ---- helpers ---------------------------------------------------------- */

static char *xstrdup(const char *s) {
  return s ? strdup(s) : NULL;
}

static void msg_clear(struct store_msg *m) {
  free(m->sender);
  free(m->envid);
  free(m->headers);
  for (size_t i = 0; i < m->nrcpts; i++) {
    free(m->rcpts[i].address);
    free(m->rcpts[i].orcpt);
    free(m->rcpts[i].domain);
    free(m->rcpts[i].last_error);
  }
  free(m->rcpts);
  memset(m, 0, sizeof *m);
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
  msg_clear(d);
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

void store_new_id(struct store *st, char out[STORE_ID_SIZE]) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  uint64_t us = (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
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
  size_t n = 0;
  for (const struct store_job *j = st->wl.head; j; j = j->next)
    n++;
  out->pending = n;
}

/* Maps an SQLite failure to the store's errno values (pool thread). */
static int map_err(struct store_job *job, sqlite3 *db, int rc) {
  snprintf(job->errmsg, sizeof job->errmsg, "%s", sqlite3_errmsg(db));
  int prim = rc & 0xff;
  if (prim == SQLITE_FULL)
    return -ENOSPC;
  if (prim == SQLITE_IOERR && sqlite3_system_errno(db) == ENOSPC)
    return -ENOSPC;
  return -EIO;
}

/* ---- lanes ------------------------------------------------------------ */

static struct store_job *job_new(struct store *st, enum job_kind kind,
                                 void *data) {
  struct store_job *job = calloc(1, sizeof *job);
  if (!job)
    return NULL;
  job->st = st;
  job->kind = kind;
  job->data = data;
  return job;
}

static void job_free(struct store_job *job) {
  if (job->has_msg)
    msg_clear(&job->msg);
  free(job->prefix);
  if (job->spool)
    store_spool_free(job->spool);
  for (size_t i = 0; i < job->nouts; i++) {
    free((char *)job->outs[i].id);
    free((char *)job->outs[i].last_error);
  }
  free(job->outs);
  for (size_t i = 0; i < job->nbatch; i++)
    msg_clear(&job->batch[i]);
  free(job->batch);
  free(job);
}

static struct lane *job_lane(struct store *st, struct store_job *job) {
  return job->kind <= JOB_HELD ? &st->wl : &st->rl;
}

static void lane_push(struct store *st, struct store_job *job) {
  struct lane *l = job_lane(st, job);
  job->state = JOB_PENDING;
  job->next = NULL;
  if (l->tail)
    l->tail->next = job;
  else
    l->head = job;
  l->tail = job;
  if (!l->busy)
    lane_kick(st, l);
}

void store_cancel(struct store_job *job) {
  struct store *st = job->st;
  struct lane *l = job_lane(st, job);
  if (job->state != JOB_PENDING) {
    job->cancel = 1;
    return;
  }
  /* Unlink from the pending list. */
  struct store_job **pp = &l->head, *prev = NULL;
  while (*pp && *pp != job) {
    prev = *pp;
    pp = &(*pp)->next;
  }
  assert(*pp == job);
  *pp = job->next;
  if (l->tail == job)
    l->tail = prev;
  assert(l->busy); /* the lane invariant: its after-work delivers this */
  job->state = JOB_CANCELLED;
  job->next = l->cancelled;
  l->cancelled = job;
}

/* Runs the job's callback with its final result and frees it (loop). */
static void job_finish(struct store_job *job, int status) {
  struct store *st = job->st;
  switch (job->kind) {
  case JOB_COMMIT:
  case JOB_UPDATE:
  case JOB_DELETE:
  case JOB_HELD:
    job->cb.done(st, status, job->data);
    break;
  case JOB_LOAD:
  case JOB_LIST:
    job->cb.msgs(st, status, NULL, 0, 1, job->data);
    break;
  case JOB_SHOW:
    job->cb.show(st, status, status == 0 ? &job->msg : NULL, job->data);
    break;
  case JOB_READ:
    job->cb.read(st, status, status == 0 ? job->got : 0, job->total, job->data);
    break;
  }
  job_free(job);
}

/* ---- pool work: writer ------------------------------------------------ */

static int exec(struct store_job *job, sqlite3 *db, const char *sql) {
  int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
  return rc == SQLITE_OK ? 0 : map_err(job, db, rc);
}

static int step_done(struct store_job *job, sqlite3_stmt *s) {
  int rc = sqlite3_step(s);
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  if (rc == SQLITE_DONE || rc == SQLITE_ROW)
    return 0;
  return map_err(job, sqlite3_db_handle(s), rc);
}

/* Reads message bytes [off, off+len): the prefix, then the spool's file
 * part, then its memory tail (pool thread). */
static int msg_pread(struct store_job *job, int64_t off, char *buf,
                     size_t len) {
  size_t plen = job->msg.prefix_len;
  struct store_spool *sp = job->spool;
  while (len > 0) {
    if ((uint64_t)off < plen) {
      size_t n = plen - (size_t)off < len ? plen - (size_t)off : len;
      memcpy(buf, job->prefix + off, n);
      buf += n, off += n, len -= n;
      continue;
    }
    int64_t soff = off - (int64_t)plen;
    if (sp && soff < sp->file_len) {
      size_t n = len;
      if ((int64_t)n > sp->file_len - soff)
        n = (size_t)(sp->file_len - soff);
      ssize_t r = pread(sp->fd, buf, n, soff);
      if (r < 0) {
        snprintf(job->errmsg, sizeof job->errmsg, "spool read: %s",
                 strerror(errno));
        return -errno;
      }
      if (r == 0) {
        snprintf(job->errmsg, sizeof job->errmsg, "spool file truncated");
        return -EIO;
      }
      buf += r, off += r, len -= (size_t)r;
      continue;
    }
    soff -= sp ? sp->file_len : 0;
    assert(sp && soff + (int64_t)len <= (int64_t)sp->used);
    memcpy(buf, sp->mem + soff, len);
    return 0;
  }
  return 0;
}

static int insert_msg(struct store *st, struct store_job *job) {
  struct store_msg *m = &job->msg;
  int64_t size = m->size;
  char *buf = malloc(COPY_CHUNK);
  if (!buf)
    return -ENOMEM;

  /* The header section, for `show` and bounces: up to the empty line. */
  size_t hn = size < HEADERS_MAX ? (size_t)size : HEADERS_MAX;
  int r = msg_pread(job, 0, buf, hn);
  if (r < 0)
    goto out;
  size_t hlen = hn;
  for (size_t i = 0; i + 1 < hn; i++) {
    if (buf[i] == '\n' && buf[i + 1] == '\n') {
      hlen = i + 1;
      break;
    }
    if (i + 3 < hn && !memcmp(buf + i, "\r\n\r\n", 4)) {
      hlen = i + 2;
      break;
    }
  }

  sqlite3_stmt *s = st->stmt[W_INS_MSG];
  sqlite3_bind_text(s, 1, m->id, -1, SQLITE_STATIC);
  sqlite3_bind_text(s, 2, m->sender, -1, SQLITE_STATIC);
  sqlite3_bind_int64(s, 3, size);
  sqlite3_bind_int64(s, 4, m->received_at);
  sqlite3_bind_int(s, 5, m->ret);
  if (m->envid)
    sqlite3_bind_text(s, 6, m->envid, -1, SQLITE_STATIC);
  sqlite3_bind_int(s, 7, (int)m->flags);
  sqlite3_bind_text(s, 8, buf, (int)hlen, SQLITE_STATIC);
  r = step_done(job, s);
  if (r < 0)
    goto out;

  /* Copy the body into the zeroblob in chunks: memory stays bounded. */
  if (size > 0) {
    sqlite3_blob *blob;
    int rc = sqlite3_blob_open(st->w, "main", "messages", "body",
                               sqlite3_last_insert_rowid(st->w), 1, &blob);
    if (rc != SQLITE_OK) {
      r = map_err(job, st->w, rc);
      goto out;
    }
    for (int64_t off = 0; off < size; off += COPY_CHUNK) {
      size_t n = size - off < COPY_CHUNK ? (size_t)(size - off) : COPY_CHUNK;
      r = msg_pread(job, off, buf, n);
      if (r < 0)
        break;
      rc = sqlite3_blob_write(blob, buf, (int)n, (int)off);
      if (rc != SQLITE_OK) {
        r = map_err(job, st->w, rc);
        break;
      }
    }
    rc = sqlite3_blob_close(blob);
    if (r == 0 && rc != SQLITE_OK)
      r = map_err(job, st->w, rc);
    if (r < 0)
      goto out;
  }

  s = st->stmt[W_INS_RCPT];
  for (size_t i = 0; i < m->nrcpts && r == 0; i++) {
    struct store_rcpt *rc = &m->rcpts[i];
    sqlite3_bind_text(s, 1, m->id, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 2, (int)i);
    sqlite3_bind_text(s, 3, rc->address, -1, SQLITE_STATIC);
    if (rc->orcpt)
      sqlite3_bind_text(s, 4, rc->orcpt, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 5, rc->notify);
    sqlite3_bind_text(s, 6, rc->domain, -1, SQLITE_STATIC);
    r = step_done(job, s);
  }
out:
  free(buf);
  return r;
}

static int run_update(struct store *st, struct store_job *job) {
  int r = 0;
  for (size_t i = 0; i < job->nouts && r == 0; i++) {
    const struct store_outcome *o = &job->outs[i];
    sqlite3_stmt *s = st->stmt[W_UPD_RCPT];
    sqlite3_bind_text(s, 1, o->id, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 2, o->idx);
    sqlite3_bind_int(s, 3, (int)o->state);
    sqlite3_bind_int(s, 4, o->attempts);
    sqlite3_bind_int64(s, 5, o->next_attempt_at);
    if (o->last_error)
      sqlite3_bind_text(s, 6, o->last_error, -1, SQLITE_STATIC);
    /* A message deleted by the admin meanwhile matches no row: fine. */
    r = step_done(job, s);
  }
  for (size_t i = 0; i < job->nouts && r == 0; i++) {
    sqlite3_stmt *s = st->stmt[W_DEL_MSG_IF_FINAL];
    sqlite3_bind_text(s, 1, job->outs[i].id, -1, SQLITE_STATIC);
    r = step_done(job, s);
    if (r == 0 && sqlite3_changes(st->w) > 0) {
      s = st->stmt[W_DEL_RCPTS];
      sqlite3_bind_text(s, 1, job->outs[i].id, -1, SQLITE_STATIC);
      r = step_done(job, s);
    }
  }
  if (r == 0 && job->has_msg)
    r = insert_msg(st, job);
  return r;
}

static int run_delete(struct store *st, struct store_job *job) {
  sqlite3_stmt *s = st->stmt[W_DEL_MSG];
  sqlite3_bind_text(s, 1, job->id, -1, SQLITE_STATIC);
  int r = step_done(job, s);
  if (r < 0)
    return r;
  if (sqlite3_changes(st->w) == 0)
    return -ENOENT;
  s = st->stmt[W_DEL_RCPTS];
  sqlite3_bind_text(s, 1, job->id, -1, SQLITE_STATIC);
  return step_done(job, s);
}

static int run_held(struct store *st, struct store_job *job) {
  sqlite3_stmt *s = st->stmt[W_SET_HELD];
  sqlite3_bind_text(s, 1, job->id, -1, SQLITE_STATIC);
  sqlite3_bind_int(s, 2, job->held);
  int r = step_done(job, s);
  if (r == 0 && sqlite3_changes(st->w) == 0)
    r = -ENOENT;
  return r;
}

static int run_writer_job(struct store *st, struct store_job *job) {
  switch (job->kind) {
  case JOB_COMMIT:
    return insert_msg(st, job);
  case JOB_UPDATE:
    return run_update(st, job);
  case JOB_DELETE:
    return run_delete(st, job);
  case JOB_HELD:
    return run_held(st, job);
  default:
    abort();
  }
}

/* One batch, one transaction; each job in its own savepoint. */
static void on_writer_work(uv_work_t *req) {
  struct lane *l = req->data;
  struct store *st = container_of(l, struct store, wl);
  struct store_job *first = l->running;
  int r = exec(first, st->w, "BEGIN IMMEDIATE");
  int ok = 0, batch_err = r;
  struct store_job *errj = first;
  for (struct store_job *j = first; j && !batch_err; j = j->next) {
    r = exec(j, st->w, "SAVEPOINT job");
    if (r == 0)
      r = run_writer_job(st, j);
    if (r == 0) {
      r = exec(j, st->w, "RELEASE job");
      ok += r == 0;
    } else if (sqlite3_get_autocommit(st->w)) {
      /* SQLite rolled the whole transaction back (FULL, IOERR ...). */
      batch_err = r;
      errj = j;
    } else {
      struct store_job tmp;
      exec(&tmp, st->w, "ROLLBACK TO job; RELEASE job");
    }
    j->status = r;
  }
  if (!batch_err && ok > 0) {
    batch_err = exec(first, st->w, "COMMIT");
    l->committed = batch_err == 0;
  } else if (!sqlite3_get_autocommit(st->w)) {
    struct store_job tmp;
    exec(&tmp, st->w, "ROLLBACK");
  }
  if (batch_err) {
    l->committed = 0;
    for (struct store_job *j = first; j; j = j->next) {
      if (j->status == 0) {
        j->status = batch_err;
        if (j != errj)
          memcpy(j->errmsg, errj->errmsg, sizeof j->errmsg);
      }
    }
  }
}

/* ---- pool work: reader ------------------------------------------------ */

static char *col_text(sqlite3_stmt *s, int i) {
  const unsigned char *t = sqlite3_column_text(s, i);
  return t ? strdup((const char *)t) : NULL;
}

/* Fills m from a row of R_MSGS_AFTER / R_MSG_BY_ID. */
static int read_envelope(sqlite3_stmt *s, struct store_msg *m) {
  memset(m, 0, sizeof *m);
  snprintf(m->id, sizeof m->id, "%s", (const char *)sqlite3_column_text(s, 0));
  m->sender = col_text(s, 1);
  m->size = sqlite3_column_int64(s, 2);
  m->received_at = sqlite3_column_int64(s, 3);
  m->held = sqlite3_column_int(s, 4);
  m->ret = sqlite3_column_int(s, 5);
  m->envid = col_text(s, 6);
  m->flags = (unsigned)sqlite3_column_int(s, 7);
  return m->sender ? 0 : -ENOMEM;
}

static int read_rcpts(struct store_job *job, sqlite3_stmt *s,
                      struct store_msg *m) {
  size_t cap = 0;
  int rc;
  sqlite3_bind_text(s, 1, m->id, -1, SQLITE_STATIC);
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    if (m->nrcpts == cap) {
      size_t ncap = cap ? cap * 2 : 4;
      struct store_rcpt *n = realloc(m->rcpts, ncap * sizeof *n);
      if (!n) {
        sqlite3_reset(s);
        return -ENOMEM;
      }
      m->rcpts = n;
      cap = ncap;
    }
    struct store_rcpt *r = &m->rcpts[m->nrcpts++];
    memset(r, 0, sizeof *r);
    r->idx = sqlite3_column_int(s, 0);
    r->address = col_text(s, 1);
    r->orcpt = col_text(s, 2);
    r->notify = sqlite3_column_int(s, 3);
    r->domain = col_text(s, 4);
    r->state = (enum store_rcpt_state)sqlite3_column_int(s, 5);
    r->attempts = sqlite3_column_int(s, 6);
    r->next_attempt_at = sqlite3_column_int64(s, 7);
    r->last_error = col_text(s, 8);
  }
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  return rc == SQLITE_DONE ? 0 : map_err(job, sqlite3_db_handle(s), rc);
}

static int run_stream(struct store *st, struct store_job *job) {
  sqlite3_stmt *s = st->stmt[R_MSGS_AFTER];
  sqlite3_stmt *rs =
      st->stmt[job->kind == JOB_LOAD ? R_RCPTS_PENDING : R_RCPTS_ALL];
  job->batch = calloc(STORE_BATCH, sizeof *job->batch);
  if (!job->batch)
    return -ENOMEM;
  /* One read transaction per batch: a consistent snapshot, and none held
   * across batches (it would stop checkpoints). */
  int r = exec(job, st->r, "BEGIN");
  if (r < 0)
    return r;
  sqlite3_bind_text(s, 1, job->last_id, -1, SQLITE_STATIC);
  sqlite3_bind_int(s, 2, STORE_BATCH);
  int rc, rows = 0;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    rows++;
    struct store_msg *m = &job->batch[job->nbatch];
    r = read_envelope(s, m);
    if (r == 0)
      r = read_rcpts(job, rs, m);
    snprintf(job->last_id, sizeof job->last_id, "%s", m->id);
    job->nbatch++;
    if (r < 0)
      break;
    if (job->kind == JOB_LOAD && m->nrcpts == 0)
      msg_clear(&job->batch[--job->nbatch]);
  }
  if (r == 0 && rc != SQLITE_ROW && rc != SQLITE_DONE)
    r = map_err(job, st->r, rc);
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  struct store_job tmp;
  exec(&tmp, st->r, "COMMIT");
  job->done = rows < STORE_BATCH;
  return r;
}

static int run_show(struct store *st, struct store_job *job) {
  sqlite3_stmt *s = st->stmt[R_MSG_BY_ID];
  int r = exec(job, st->r, "BEGIN");
  if (r < 0)
    return r;
  sqlite3_bind_text(s, 1, job->id, -1, SQLITE_STATIC);
  int rc = sqlite3_step(s);
  if (rc == SQLITE_ROW) {
    job->has_msg = 1;
    r = read_envelope(s, &job->msg);
    if (r == 0 && sqlite3_column_type(s, 8) != SQLITE_NULL) {
      job->msg.headers = col_text(s, 8);
      if (!job->msg.headers)
        r = -ENOMEM;
    }
  } else {
    r = rc == SQLITE_DONE ? -ENOENT : map_err(job, st->r, rc);
  }
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  if (r == 0)
    r = read_rcpts(job, st->stmt[R_RCPTS_ALL], &job->msg);
  struct store_job tmp;
  exec(&tmp, st->r, "COMMIT");
  return r;
}

static int run_read(struct store *st, struct store_job *job) {
  sqlite3_stmt *s = st->stmt[R_BODY_INFO];
  int r = exec(job, st->r, "BEGIN");
  if (r < 0)
    return r;
  sqlite3_bind_text(s, 1, job->id, -1, SQLITE_STATIC);
  int rc = sqlite3_step(s);
  int64_t rowid = 0;
  if (rc == SQLITE_ROW) {
    rowid = sqlite3_column_int64(s, 0);
    job->total = sqlite3_column_int64(s, 1);
  } else {
    r = rc == SQLITE_DONE ? -ENOENT : map_err(job, st->r, rc);
  }
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  if (r == 0 && job->offset < job->total && job->len > 0) {
    int64_t n = job->total - job->offset;
    if (n > (int64_t)job->len)
      n = (int64_t)job->len;
    sqlite3_blob *blob;
    rc = sqlite3_blob_open(st->r, "main", "messages", "body", rowid, 0, &blob);
    if (rc == SQLITE_OK) {
      rc = sqlite3_blob_read(blob, job->buf, (int)n, (int)job->offset);
      sqlite3_blob_close(blob);
    }
    if (rc == SQLITE_OK)
      job->got = (size_t)n;
    else
      r = map_err(job, st->r, rc);
  }
  struct store_job tmp;
  exec(&tmp, st->r, "COMMIT");
  return r;
}

static void on_reader_work(uv_work_t *req) {
  struct lane *l = req->data;
  struct store *st = container_of(l, struct store, rl);
  struct store_job *job = l->running;
  switch (job->kind) {
  case JOB_LOAD:
  case JOB_LIST:
    job->status = run_stream(st, job);
    break;
  case JOB_SHOW:
    job->status = run_show(st, job);
    break;
  case JOB_READ:
    job->status = run_read(st, job);
    break;
  default:
    abort();
  }
}

/* ---- after work (loop thread) ----------------------------------------- */

static void warn_job(struct store_job *job) {
  if (job->status == 0 || job->status == -ENOENT || job->status == -ECANCELED)
    return;
  log_msg(LOG_WARN, "store", "%s failed: %s (%s)", job_kind_name(job->kind),
          strerror(-job->status), job->errmsg[0] ? job->errmsg : "-");
}

static void deliver_cancelled(struct lane *l) {
  while (l->cancelled) {
    struct store_job *j = l->cancelled;
    l->cancelled = j->next;
    job_finish(j, -ECANCELED);
  }
}

static void on_lane_after(uv_work_t *req, int status) {
  struct lane *l = req->data;
  struct store *st = l->writer ? container_of(l, struct store, wl)
                               : container_of(l, struct store, rl);
  assert(status == 0); /* the store never uv_cancel()s its work */
  (void)status;
  struct store_job *list = l->running;
  l->running = NULL;
  /* l->busy stays set while callbacks run: a store_cancel() from one of
   * them finds the lane busy and leaves its job for deliver_cancelled. */
  if (l->writer && l->committed) {
    st->stats.transactions++;
    l->committed = 0;
  }
  while (list) {
    struct store_job *j = list;
    list = j->next;
    j->next = NULL;
    warn_job(j);
    if (l->writer) {
      if (j->kind == JOB_COMMIT)
        st->stats.commits += j->status == 0;
      st->stats.failed += j->status != 0;
      job_finish(j, j->status);
    } else if ((j->kind == JOB_LOAD || j->kind == JOB_LIST) && j->status == 0 &&
               !j->done && !j->cancel) {
      j->cb.msgs(st, 0, j->batch, j->nbatch, 0, j->data);
      for (size_t i = 0; i < j->nbatch; i++)
        msg_clear(&j->batch[i]);
      free(j->batch);
      j->batch = NULL;
      j->nbatch = 0;
      if (j->cancel) {
        job_finish(j, -ECANCELED);
      } else {
        /* Back to the tail: other readers get their turn between batches. */
        j->state = JOB_PENDING;
        if (l->tail)
          l->tail->next = j;
        else
          l->head = j;
        l->tail = j;
      }
    } else if (j->kind == JOB_LOAD || j->kind == JOB_LIST) {
      if (j->cancel)
        j->status = -ECANCELED;
      if (j->status == 0)
        j->cb.msgs(st, 0, j->batch, j->nbatch, 1, j->data);
      else
        j->cb.msgs(st, j->status, NULL, 0, 1, j->data);
      job_free(j);
    } else {
      job_finish(j, j->status);
    }
  }
  deliver_cancelled(l);
  l->busy = 0;
  lane_kick(st, l);
  maybe_finish_close(st);
}

static void lane_kick(struct store *st, struct lane *l) {
  if (l->busy || !l->head)
    return;
  if (l->writer) {
    l->running = l->head; /* the whole pending list is the next batch */
    l->head = l->tail = NULL;
  } else {
    l->running = l->head;
    l->head = l->head->next;
    if (!l->head)
      l->tail = NULL;
    l->running->next = NULL;
  }
  for (struct store_job *j = l->running; j; j = j->next)
    j->state = JOB_RUNNING;
  l->busy = 1;
  l->req.data = l;
  int r =
      uv_queue_work(st->loop, &l->req,
                    l->writer ? on_writer_work : on_reader_work, on_lane_after);
  assert(r == 0); /* fails only on invalid arguments */
  (void)r;
}

/* ---- public requests -------------------------------------------------- */

static int check_open(struct store *st) {
  return st->closing ? -ESHUTDOWN : 0;
}

int store_commit(struct store *st, struct store_msg *msg,
                 struct store_spool *body, store_done_cb cb, void *data,
                 struct store_job **jobp) {
  int r = check_open(st);
  if (r == 0 && body && body->pending)
    r = -EBUSY;
  if (r == 0 && body && body->err)
    r = body->err;
  if (r == 0 && msg->id[0] && !id_valid(msg->id))
    r = -EINVAL;
  struct store_job *job = r == 0 ? job_new(st, JOB_COMMIT, data) : NULL;
  if (r == 0 && !job)
    r = -ENOMEM;
  if (r < 0) {
    if (body)
      store_spool_free(body);
    return r;
  }
  job->spool = body;
  if (!msg->id[0])
    store_new_id(st, msg->id);
  msg->size = (int64_t)msg->prefix_len + (body ? body->total : 0);
  if (msg_copy(&job->msg, msg) < 0 ||
      (msg->prefix_len && !(job->prefix = malloc(msg->prefix_len)))) {
    job_free(job);
    return -ENOMEM;
  }
  job->has_msg = 1;
  if (msg->prefix_len)
    memcpy(job->prefix, msg->prefix, msg->prefix_len);
  job->msg.prefix_len = msg->prefix_len;
  job->cb.done = cb;
  if (jobp)
    *jobp = job;
  lane_push(st, job);
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
  struct store_job *job = job_new(st, JOB_UPDATE, data);
  if (!job)
    return -ENOMEM;
  if (n && !(job->outs = calloc(n, sizeof *job->outs)))
    goto nomem;
  for (size_t i = 0; i < n; i++) {
    job->outs[i] = outcomes[i];
    job->outs[i].id = strdup(outcomes[i].id);
    job->outs[i].last_error = xstrdup(outcomes[i].last_error);
    job->nouts = i + 1;
    if (!job->outs[i].id ||
        (outcomes[i].last_error && !job->outs[i].last_error))
      goto nomem;
  }
  if (bounce) {
    if (!bounce->id[0])
      store_new_id(st, bounce->id);
    bounce->size = (int64_t)bounce->prefix_len;
    if (msg_copy(&job->msg, bounce) < 0)
      goto nomem;
    job->has_msg = 1;
    if (bounce->prefix_len) {
      if (!(job->prefix = malloc(bounce->prefix_len)))
        goto nomem;
      memcpy(job->prefix, bounce->prefix, bounce->prefix_len);
    }
    job->msg.prefix_len = bounce->prefix_len;
  }
  job->cb.done = cb;
  if (jobp)
    *jobp = job;
  lane_push(st, job);
  return 0;
nomem:
  job_free(job);
  return -ENOMEM;
}

static int simple_writer(struct store *st, enum job_kind kind, const char *id,
                         int held, store_done_cb cb, void *data) {
  int r = check_open(st);
  if (r < 0)
    return r;
  if (!id_valid(id))
    return -EINVAL;
  struct store_job *job = job_new(st, kind, data);
  if (!job)
    return -ENOMEM;
  snprintf(job->id, sizeof job->id, "%s", id);
  job->held = held;
  job->cb.done = cb;
  lane_push(st, job);
  return 0;
}

int store_delete(struct store *st, const char *id, store_done_cb cb,
                 void *data) {
  return simple_writer(st, JOB_DELETE, id, 0, cb, data);
}

int store_set_held(struct store *st, const char *id, int held, store_done_cb cb,
                   void *data) {
  return simple_writer(st, JOB_HELD, id, held ? 1 : 0, cb, data);
}

static int stream(struct store *st, enum job_kind kind, store_msgs_cb cb,
                  void *data, struct store_job **jobp) {
  int r = check_open(st);
  if (r < 0)
    return r;
  struct store_job *job = job_new(st, kind, data);
  if (!job)
    return -ENOMEM;
  job->cb.msgs = cb;
  if (jobp)
    *jobp = job;
  lane_push(st, job);
  return 0;
}

int store_load(struct store *st, store_msgs_cb cb, void *data,
               struct store_job **jobp) {
  return stream(st, JOB_LOAD, cb, data, jobp);
}

int store_list(struct store *st, store_msgs_cb cb, void *data,
               struct store_job **jobp) {
  return stream(st, JOB_LIST, cb, data, jobp);
}

int store_show(struct store *st, const char *id, store_show_cb cb, void *data) {
  int r = check_open(st);
  if (r < 0)
    return r;
  if (!id_valid(id))
    return -EINVAL;
  struct store_job *job = job_new(st, JOB_SHOW, data);
  if (!job)
    return -ENOMEM;
  snprintf(job->id, sizeof job->id, "%s", id);
  job->cb.show = cb;
  lane_push(st, job);
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
  struct store_job *job = job_new(st, JOB_READ, data);
  if (!job)
    return -ENOMEM;
  snprintf(job->id, sizeof job->id, "%s", id);
  job->offset = offset;
  job->buf = buf;
  job->len = len;
  job->cb.read = cb;
  if (jobp)
    *jobp = job;
  lane_push(st, job);
  return 0;
}

/* ---- spool ------------------------------------------------------------ */

static void spool_destroy(struct store_spool *sp);
static void spool_write(struct store_spool *sp);

struct store_spool *store_spool_new(struct store *st) {
  struct store_spool *sp = calloc(1, sizeof *sp);
  if (!sp)
    return NULL;
  sp->st = st;
  sp->fd = -1;
  return sp;
}

int64_t store_spool_size(const struct store_spool *sp) {
  return sp->total;
}

static void spool_done(struct store_spool *sp, int status) {
  store_spool_cb cb = sp->cb;
  void *data = sp->data;
  sp->pending = 0;
  sp->cb = NULL;
  if (status < 0 && !sp->err)
    sp->err = status;
  if (status < 0)
    log_msg(LOG_WARN, "store", "spool write failed: %s", uv_strerror(status));
  if (sp->freed) {
    cb(sp, -ECANCELED, data);
    spool_destroy(sp);
    return;
  }
  cb(sp, status, data);
}

static void on_spool_written(uv_fs_t *req) {
  struct store_spool *sp = req->data;
  ssize_t r = req->result;
  uv_fs_req_cleanup(req);
  if (r < 0 || sp->freed) {
    spool_done(sp, r < 0 ? (int)r : 0);
    return;
  }
  if (r == 0) {
    spool_done(sp, -EIO);
    return;
  }
  sp->file_len += r;
  sp->woff += (size_t)r;
  if (sp->woff < sp->used) {
    spool_write(sp); /* short write: the rest */
    return;
  }
  sp->used = sp->woff = 0;
  spool_done(sp, 0);
}

static void spool_write(struct store_spool *sp) {
  sp->wbuf = uv_buf_init(sp->mem + sp->woff, (unsigned)(sp->used - sp->woff));
  sp->req.data = sp;
  int r = uv_fs_write(sp->st->loop, &sp->req, sp->fd, &sp->wbuf, 1,
                      sp->file_len, on_spool_written);
  /* uv_fs_write fails synchronously only on bad arguments. */
  assert(r == 0);
  (void)r;
}

static void on_spool_unlinked(uv_fs_t *req) {
  struct store_spool *sp = req->data;
  uv_fs_req_cleanup(req);
  free(sp->tmppath);
  sp->tmppath = NULL;
  /* A failed unlink leaves a stray file but the spool still works. */
  if (sp->freed) {
    spool_done(sp, 0);
    return;
  }
  spool_write(sp);
}

static void on_spool_mkstemp(uv_fs_t *req) {
  struct store_spool *sp = req->data;
  ssize_t r = req->result;
  char *path = r >= 0 ? strdup(req->path) : NULL;
  uv_fs_req_cleanup(req);
  free(sp->tmppath);
  sp->tmppath = path;
  if (r < 0) {
    spool_done(sp, (int)r);
    return;
  }
  sp->fd = (uv_file)r;
  if (!path ||
      uv_fs_unlink(sp->st->loop, &sp->req, path, on_spool_unlinked) < 0)
    spool_done(sp, -ENOMEM);
}

/* Without O_TMPFILE (old kernel, some file systems): a named temp file in
 * the queue's directory, unlinked at once. */
static void spool_mkstemp(struct store_spool *sp) {
  static const char prefix[] = "/.mailhop-spool-";
  enum { RANDOM_SUFFIX = 6 }; /* mkstemp(3) replaces six trailing 'X's */
  size_t dl = strlen(sp->st->dir);
  char *tmpl = malloc(dl + sizeof prefix + RANDOM_SUFFIX);
  if (!tmpl) {
    spool_done(sp, -ENOMEM);
    return;
  }
  memcpy(tmpl, sp->st->dir, dl);
  memcpy(tmpl + dl, prefix, sizeof prefix - 1);
  memset(tmpl + dl + sizeof prefix - 1, 'X', RANDOM_SUFFIX);
  tmpl[dl + sizeof prefix - 1 + RANDOM_SUFFIX] = '\0';
  int e = uv_fs_mkstemp(sp->st->loop, &sp->req, tmpl, on_spool_mkstemp);
  free(tmpl); /* libuv copied it */
  if (e < 0)
    spool_done(sp, e);
}

static void on_spool_open(uv_fs_t *req) {
  struct store_spool *sp = req->data;
  ssize_t r = req->result;
  uv_fs_req_cleanup(req);
  if (r >= 0) {
    sp->fd = (uv_file)r;
    if (sp->freed)
      spool_done(sp, 0);
    else
      spool_write(sp);
    return;
  }
  if (sp->freed) {
    spool_done(sp, (int)r);
    return;
  }
  spool_mkstemp(sp);
}

int store_spool_append(struct store_spool *sp, const void *buf, size_t len,
                       store_spool_cb cb, void *data) {
  if (sp->err)
    return sp->err;
  if (sp->pending)
    return -EBUSY;
  if (sp->used + len > sp->cap) {
    size_t ncap = sp->used + len;
    if (ncap < STORE_SPOOL_MEM)
      ncap = STORE_SPOOL_MEM;
    char *m = realloc(sp->mem, ncap);
    if (!m)
      return -ENOMEM;
    sp->mem = m;
    sp->cap = ncap;
  }
  if (len)
    memcpy(sp->mem + sp->used, buf, len);
  sp->used += len;
  sp->total += (int64_t)len;
  if (sp->used < STORE_SPOOL_MEM)
    return 0;
  sp->pending = 1;
  sp->cb = cb;
  sp->data = data;
  sp->req.data = sp;
  if (sp->fd >= 0) {
    spool_write(sp);
  } else if (sp->st->no_tmpfile) {
    spool_mkstemp(sp);
  } else {
    int r = uv_fs_open(sp->st->loop, &sp->req, sp->st->dir,
                       O_TMPFILE | O_RDWR | O_CLOEXEC, 0600, on_spool_open);
    if (r < 0) {
      sp->pending = 0;
      sp->cb = NULL;
      sp->err = r;
      return r;
    }
  }
  return STORE_SPOOL_PAUSE;
}

long store_spool_pread(struct store_spool *sp, int64_t off, void *buf,
                       size_t len) {
  if (sp->err)
    return sp->err < 0 ? sp->err : -EIO;
  if (off < sp->file_len) {
    size_t n = len;
    if ((int64_t)n > sp->file_len - off)
      n = (size_t)(sp->file_len - off);
    ssize_t r = pread(sp->fd, buf, n, off);
    if (r < 0)
      return -errno;
    return r == 0 ? -EIO : (long)r;
  }
  int64_t moff = off - sp->file_len;
  if (moff >= (int64_t)sp->used)
    return 0;
  size_t n = sp->used - (size_t)moff < len ? sp->used - (size_t)moff : len;
  memcpy(buf, sp->mem + moff, n);
  return (long)n;
}

static void on_spool_closed(uv_fs_t *req) {
  struct store_spool *sp = req->data;
  uv_fs_req_cleanup(req);
  free(sp->mem);
  free(sp->tmppath);
  free(sp);
}

static void spool_destroy(struct store_spool *sp) {
  if (sp->fd >= 0) {
    /* Closing an unlinked file frees its blocks: not on the loop thread. */
    sp->req.data = sp;
    if (uv_fs_close(sp->st->loop, &sp->req, sp->fd, on_spool_closed) == 0)
      return;
  }
  free(sp->mem);
  free(sp->tmppath);
  free(sp);
}

void store_spool_free(struct store_spool *sp) {
  if (!sp)
    return;
  if (sp->pending) {
    sp->freed = 1; /* spool_done finishes it */
    return;
  }
  spool_destroy(sp);
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

static int db_fail(sqlite3 *db, int rc, const char *what, const char *path,
                   char *err, size_t errlen) {
  snprintf(err, errlen, "queue %s: %s: %s", path, what,
           db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  int prim = rc & 0xff;
  if (prim == SQLITE_FULL)
    return -ENOSPC;
  if (prim == SQLITE_CANTOPEN || prim == SQLITE_READONLY ||
      prim == SQLITE_PERM || prim == SQLITE_AUTH)
    return -EACCES;
  return -EIO;
}

static int db_open(const char *path, int readonly, sqlite3 **out, char *err,
                   size_t errlen) {
  sqlite3 *db = NULL;
  /* NOMUTEX: each connection is used by one thread at a time (its lane). */
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX |
              (readonly ? 0 : SQLITE_OPEN_CREATE);
  int rc = sqlite3_open_v2(path, &db, flags, NULL);
  if (rc != SQLITE_OK) {
    int r = db_fail(db, rc, "cannot open", path, err, errlen);
    sqlite3_close(db);
    return r;
  }
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, 5000);
  *out = db;
  return 0;
}

static int db_exec(sqlite3 *db, const char *sql, const char *path, char *err,
                   size_t errlen) {
  int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
  return rc == SQLITE_OK ? 0 : db_fail(db, rc, sql, path, err, errlen);
}

static int db_int(sqlite3 *db, const char *sql, long long *out) {
  sqlite3_stmt *s;
  int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
  if (rc != SQLITE_OK)
    return rc;
  rc = sqlite3_step(s);
  if (rc == SQLITE_ROW) {
    *out = sqlite3_column_int64(s, 0);
    rc = SQLITE_OK;
  }
  sqlite3_finalize(s);
  return rc;
}

static int migrate(struct store *st, char *err, size_t errlen) {
  int r = db_exec(st->w, "BEGIN IMMEDIATE", st->path, err, errlen);
  if (r < 0)
    return r;
  long long v = 0;
  int rc = db_int(st->w, "PRAGMA user_version", &v);
  if (rc != SQLITE_OK) {
    r = db_fail(st->w, rc, "reading schema version", st->path, err, errlen);
  } else if (v > SCHEMA_VERSION) {
    snprintf(err, errlen,
             "queue %s has schema version %lld, newer than this mailhop "
             "(%d)",
             st->path, v, SCHEMA_VERSION);
    r = -EPROTO;
  } else if (v == 0) {
    r = db_exec(st->w, schema_v1, st->path, err, errlen);
    if (r == 0)
      r = db_exec(st->w, "PRAGMA user_version = 1", st->path, err, errlen);
  }
  /* Later versions: `if (v < 2) { ALTER ...; user_version = 2 }`. */
  if (r == 0)
    return db_exec(st->w, "COMMIT", st->path, err, errlen);
  sqlite3_exec(st->w, "ROLLBACK", NULL, NULL, NULL);
  return r;
}

static void store_free(struct store *st) {
  for (int i = 0; i < STMT_COUNT; i++)
    sqlite3_finalize(st->stmt[i]);
  sqlite3_close(st->r);
  sqlite3_close(st->w);
  if (st->lockfd >= 0)
    close(st->lockfd);
  free(st->path);
  free(st->dir);
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
  st->wl.writer = 1;
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
    r = db_open(path, 0, &st->w, err, errlen);
  if (r == 0) {
    char *mode = NULL;
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->w, "PRAGMA journal_mode=WAL", -1, &s, NULL) ==
        SQLITE_OK) {
      if (sqlite3_step(s) == SQLITE_ROW)
        mode = col_text(s, 0);
      sqlite3_finalize(s);
    }
    if (!mode || strcmp(mode, "wal") != 0) {
      snprintf(err, errlen, "queue %s: cannot enable WAL mode: %s", path,
               sqlite3_errmsg(st->w));
      r = -EIO;
    }
    free(mode);
  }
  /* synchronous=FULL: COMMIT returns only after the WAL is fsync'd, so the
   * 250 after DATA means durable.  The WAL is checkpointed every ~4 MB and
   * truncated back to 64 MB after a checkpoint that left it larger. */
  if (r == 0)
    r = db_exec(st->w,
                "PRAGMA synchronous=FULL;"
                "PRAGMA wal_autocheckpoint=1000;"
                "PRAGMA journal_size_limit=67108864;"
                "PRAGMA foreign_keys=OFF;",
                path, err, errlen);
  if (r == 0)
    r = migrate(st, err, errlen);
  if (r == 0)
    r = db_open(path, 1, &st->r, err, errlen);
  if (r == 0)
    r = db_exec(st->r, "PRAGMA query_only=1", path, err, errlen);
  for (int i = 0; r == 0 && i < STMT_COUNT; i++) {
    sqlite3 *db = i < R_MSGS_AFTER ? st->w : st->r;
    int rc = sqlite3_prepare_v3(db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                &st->stmt[i], NULL);
    if (rc != SQLITE_OK)
      r = db_fail(db, rc, "preparing statements", path, err, errlen);
  }
  if (r < 0) {
    store_free(st);
    return r;
  }
  *out = st;
  return 0;
}

static void on_close_work(uv_work_t *req) {
  struct store *st = container_of(req, struct store, close_req);
  /* The last close checkpoints the WAL (fsync): on the pool, like all
   * other disk waits after start-up. */
  for (int i = 0; i < STMT_COUNT; i++) {
    sqlite3_finalize(st->stmt[i]);
    st->stmt[i] = NULL;
  }
  sqlite3_close(st->r);
  sqlite3_close(st->w);
  st->r = st->w = NULL;
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

static void maybe_finish_close(struct store *st) {
  if (st->closing != 1 || st->wl.busy || st->rl.busy || st->wl.head ||
      st->rl.head)
    return;
  st->closing = 2;
  int r =
      uv_queue_work(st->loop, &st->close_req, on_close_work, on_close_after);
  assert(r == 0);
  (void)r;
}

void store_close(struct store *st, store_close_cb cb, void *data) {
  assert(!st->closing);
  st->closing = 1;
  st->close_cb = cb;
  st->close_data = data;
  maybe_finish_close(st);
}

void store_debug_no_tmpfile(struct store *st) {
  st->no_tmpfile = 1;
}

int store_debug_max_pages(struct store *st, long pages) {
  char sql[64];
  long long got = 0;
  snprintf(sql, sizeof sql, "PRAGMA max_page_count=%ld", pages);
  assert(!st->wl.busy);
  return db_int(st->w, sql, &got) == SQLITE_OK ? 0 : -EIO;
}
