/*
 * store_db: schema, migrations, prepared statements and the pool-thread
 * work of the queue.  See store_db.h; the tables read once at open are
 * store_db_load.c's.
 *
 * Never: runs on the loop thread after store_db_open() returned, touches
 * libuv, or knows SMTP syntax.
 */
#include "queue/store_db.h"
#include "queue/store_db_internal.h"

#include <assert.h>
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SCHEMA_VERSION 3
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
  W_BULK_HELD,
  W_SUSPEND_SET,
  W_SUSPEND_DEL,
  W_SET_NOTICES,
  W_STS_PUT,
  W_STS_DEL,
  W_RPT_ADD,
  W_RPT_CLEAR,
  W_RPT_START,
  /* reader */
  R_MSGS_AFTER,
  R_MSGS_BETWEEN,
  R_COUNT,
  R_MSG_BY_ID,
  R_RCPTS_ALL,
  R_RCPTS_PENDING,
  R_BODY_INFO,
  R_SELECT_SCAN,
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
    /* bulk: a message already so is not changed (CONTRACT §1 counts) */
    [W_BULK_HELD] = "UPDATE messages SET held = ?2 WHERE id = ?1"
                    " AND held != ?2",
    [W_SET_NOTICES] = "UPDATE messages SET notices = notices | ?2"
                      " WHERE id = ?1",
    [R_MSGS_AFTER] = "SELECT id, sender, size, received_at, held, ret, envid,"
                     " flags, notices FROM messages WHERE id > ?1"
                     " ORDER BY id LIMIT ?2",
    [R_MSGS_BETWEEN] = "SELECT id, sender, size, received_at, held, ret,"
                       " envid, flags, notices FROM messages WHERE id > ?1"
                       " AND id < ?3 ORDER BY id LIMIT ?2",
    /* What store_load will hand over: messages below the ceiling with a
     * non-final recipient, and those recipients. */
    [R_COUNT] = "SELECT count(DISTINCT m.id),"
                " count(DISTINCT CASE WHEN m.held THEN m.id END), count(*),"
                " coalesce(sum(r.attempts > 0), 0)"
                " FROM messages m JOIN recipients r ON r.message_id = m.id"
                " WHERE r.state < 2 AND m.id < ?1",
    [R_MSG_BY_ID] = "SELECT id, sender, size, received_at, held, ret, envid,"
                    " flags, headers, notices FROM messages WHERE id = ?1",
    [R_RCPTS_ALL] = "SELECT idx, address, orcpt, notify, domain, state,"
                    " attempts, next_attempt_at, last_error FROM recipients"
                    " WHERE message_id = ?1 ORDER BY idx",
    [R_RCPTS_PENDING] = "SELECT idx, address, orcpt, notify, domain, state,"
                        " attempts, next_attempt_at, last_error FROM"
                        " recipients WHERE message_id = ?1 AND state < 2"
                        " ORDER BY idx",
    [R_BODY_INFO] = "SELECT rowid, size FROM messages WHERE id = ?1",
    [W_SUSPEND_SET] = "INSERT OR REPLACE INTO suspensions(dest, until)"
                      " VALUES(?1, ?2)",
    [W_SUSPEND_DEL] = "DELETE FROM suspensions WHERE dest = ?1",
    [W_STS_PUT] = "INSERT OR REPLACE INTO sts_policies(domain, id,"
                  " fetched_at, expires_at, policy) VALUES(?1, ?2, ?3, ?4, ?5)",
    [W_STS_DEL] = "DELETE FROM sts_policies WHERE domain = ?1",
    [W_RPT_ADD] = "INSERT INTO tlsrpt_counts(domain, policy, result, count)"
                  " VALUES(?1, ?2, ?3, ?4) ON CONFLICT(domain, policy, result)"
                  " DO UPDATE SET count = count + ?4",
    [W_RPT_CLEAR] = "DELETE FROM tlsrpt_counts",
    [W_RPT_START] = "INSERT OR REPLACE INTO tlsrpt_period(k, start)"
                    " VALUES(0, ?1)",
    [R_SELECT_SCAN] = "SELECT id, sender, size, received_at, held, ret, envid,"
                      " flags FROM messages WHERE id > ?1 ORDER BY id"
                      " LIMIT ?2",
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

/* Version 2: destination suspensions (CONTRACT §1 suspend).  A version 1
 * queue gains the table and keeps everything else as it is. */
static const char schema_v2[] = "CREATE TABLE suspensions("
                                " dest TEXT PRIMARY KEY,"
                                " until INTEGER NOT NULL) WITHOUT ROWID;";

/* Version 3: outbound trust (CONTRACT §4b): the MTA-STS policy cache and
 * the TLS-RPT counts of the running period.  An older queue gains the
 * tables and keeps everything else. */
static const char schema_v3[] =
    "CREATE TABLE sts_policies("
    " domain TEXT PRIMARY KEY,"
    " id TEXT NOT NULL,"
    " fetched_at INTEGER NOT NULL,"
    " expires_at INTEGER NOT NULL,"
    " policy BLOB NOT NULL);"
    "CREATE TABLE tlsrpt_counts("
    " domain TEXT NOT NULL,"
    " policy TEXT NOT NULL,"
    " result TEXT NOT NULL,"
    " count INTEGER NOT NULL,"
    " PRIMARY KEY(domain, policy, result)) WITHOUT ROWID;"
    "CREATE TABLE tlsrpt_period("
    " k INTEGER PRIMARY KEY CHECK (k = 0),"
    " start INTEGER NOT NULL);";

struct store_db {
  const char *path; /* for error messages during open only */
  /* Test hooks, set on the loop while the writer lane is idle. */
  int fail_commits;  /* the next n COMMITs fail, the transaction left open */
  char *enospc_file; /* while this file exists, writes fail with ENOSPC */
  sqlite3 *w, *r;
  sqlite3_stmt *stmt[STMT_COUNT];
};

const char *store_op_name(enum store_op op) {
  static const char *const names[] = {
      "commit", "update", "delete", "held", "bulk",  "suspend", "trust",
      "load",   "list",   "show",   "read", "count", "select"};
  return names[op];
}

void store_msg_clear(struct store_msg *m) {
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

void store_req_clear(struct store_req *req) {
  if (req->has_msg)
    store_msg_clear(&req->msg);
  req->has_msg = 0;
  free(req->prefix);
  req->prefix = NULL;
  free(req->kept);
  req->kept = NULL;
  free(req->policy);
  req->policy = NULL;
  spool_free(req->spool);
  req->spool = NULL;
  for (size_t i = 0; i < req->nouts; i++) {
    free((char *)req->outs[i].id);
    free((char *)req->outs[i].last_error);
  }
  free(req->outs);
  req->outs = NULL;
  req->nouts = 0;
  for (size_t i = 0; i < req->nbatch; i++)
    store_msg_clear(&req->batch[i]);
  free(req->batch);
  req->batch = NULL;
  req->nbatch = 0;
  free(req->ids);
  req->ids = NULL;
  free(req->changed);
  req->changed = NULL;
  req->nids = 0;
}

/* Maps an SQLite failure to the store's errno values (pool thread). */
static int map_err(struct store_req *job, sqlite3 *db, int rc) {
  snprintf(job->errmsg, sizeof job->errmsg, "%s", sqlite3_errmsg(db));
  int prim = rc & 0xff;
  if (prim == SQLITE_FULL)
    return -ENOSPC;
  if (prim == SQLITE_IOERR && sqlite3_system_errno(db) == ENOSPC)
    return -ENOSPC;
  return -EIO;
}

static int exec(struct store_req *job, sqlite3 *db, const char *sql) {
  int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
  return rc == SQLITE_OK ? 0 : map_err(job, db, rc);
}

static int step_done(struct store_req *job, sqlite3_stmt *s) {
  int rc = sqlite3_step(s);
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  if (rc == SQLITE_DONE || rc == SQLITE_ROW)
    return 0;
  return map_err(job, sqlite3_db_handle(s), rc);
}

/* Reads message bytes [off, off+len): the prefix, then the spool
 * (pool thread). */
static int msg_pread(struct store_req *job, int64_t off, char *buf,
                     size_t len) {
  size_t plen = job->msg.prefix_len;
  if ((uint64_t)off < plen) {
    size_t n = plen - (size_t)off < len ? plen - (size_t)off : len;
    memcpy(buf, job->prefix + off, n);
    buf += n, off += n, len -= n;
  }
  if (len == 0)
    return 0;
  assert(job->spool);
  return spool_pread(job->spool, off - (int64_t)plen, buf, len, job->errmsg,
                     sizeof job->errmsg);
}

static int insert_msg(struct store_db *st, struct store_req *job) {
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

  job->kept_hlen = hlen;
  /* The fresh-message cache's copy (store.c reserved room for it): the
   * chunks are read straight into it and written to the blob from there,
   * so keeping them costs no extra copy. */
  if (job->keep && size > 0)
    job->kept = malloc((size_t)size);

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
      char *chunk = job->kept ? job->kept + off : buf;
      r = msg_pread(job, off, chunk, n);
      if (r < 0)
        break;
      rc = sqlite3_blob_write(blob, chunk, (int)n, (int)off);
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

static int run_update(struct store_db *st, struct store_req *job) {
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
    if (!job->outs[i].set_notices)
      continue;
    sqlite3_stmt *s = st->stmt[W_SET_NOTICES];
    sqlite3_bind_text(s, 1, job->outs[i].id, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 2, (int)job->outs[i].set_notices);
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

static int run_delete(struct store_db *st, struct store_req *job) {
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

static int run_held(struct store_db *st, struct store_req *job) {
  sqlite3_stmt *s = st->stmt[W_SET_HELD];
  sqlite3_bind_text(s, 1, job->id, -1, SQLITE_STATIC);
  sqlite3_bind_int(s, 2, job->held);
  int r = step_done(job, s);
  if (r == 0 && sqlite3_changes(st->w) == 0)
    r = -ENOENT;
  return r;
}

/* One bulk request: every id in this savepoint (all or nothing). */
static int run_bulk(struct store_db *st, struct store_req *job) {
  int r = 0;
  for (size_t i = 0; i < job->nids && r == 0; i++) {
    sqlite3_stmt *s;
    if (job->action == STORE_BULK_DELETE) {
      s = st->stmt[W_DEL_MSG];
      sqlite3_bind_text(s, 1, job->ids[i], -1, SQLITE_STATIC);
    } else {
      s = st->stmt[W_BULK_HELD];
      sqlite3_bind_text(s, 1, job->ids[i], -1, SQLITE_STATIC);
      sqlite3_bind_int(s, 2, job->action == STORE_BULK_HOLD);
    }
    r = step_done(job, s);
    job->changed[i] = r == 0 && sqlite3_changes(st->w) > 0;
    if (r == 0 && job->changed[i] && job->action == STORE_BULK_DELETE) {
      s = st->stmt[W_DEL_RCPTS];
      sqlite3_bind_text(s, 1, job->ids[i], -1, SQLITE_STATIC);
      r = step_done(job, s);
    }
  }
  return r;
}

static int run_suspend(struct store_db *st, struct store_req *job) {
  sqlite3_stmt *s = st->stmt[job->until > 0 ? W_SUSPEND_SET : W_SUSPEND_DEL];
  sqlite3_bind_text(s, 1, job->dest, -1, SQLITE_STATIC);
  if (job->until > 0)
    sqlite3_bind_int64(s, 2, job->until);
  return step_done(job, s);
}

static int run_trust(struct store_db *st, struct store_req *job) {
  sqlite3_stmt *s;
  int r;
  switch (job->trust) {
  case STORE_TRUST_STS_PUT:
    s = st->stmt[W_STS_PUT];
    sqlite3_bind_text(s, 1, job->dest, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, job->sts_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, job->fetched_at);
    sqlite3_bind_int64(s, 4, job->expires_at);
    sqlite3_bind_blob(s, 5, job->policy, (int)strlen(job->policy),
                      SQLITE_STATIC);
    return step_done(job, s);
  case STORE_TRUST_STS_DEL:
    s = st->stmt[W_STS_DEL];
    sqlite3_bind_text(s, 1, job->dest, -1, SQLITE_STATIC);
    return step_done(job, s);
  case STORE_TRUST_RPT_ADD:
    s = st->stmt[W_RPT_ADD];
    sqlite3_bind_text(s, 1, job->dest, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, job->rpt_policy, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, job->rpt_result, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, job->delta);
    return step_done(job, s);
  case STORE_TRUST_RPT_RESET:
    r = step_done(job, st->stmt[W_RPT_CLEAR]);
    if (r < 0)
      return r;
    s = st->stmt[W_RPT_START];
    sqlite3_bind_int64(s, 1, job->period_start);
    return step_done(job, s);
  }
  abort();
}

static int run_writer_job(struct store_db *st, struct store_req *job) {
  switch (job->op) {
  case STORE_OP_COMMIT:
    return insert_msg(st, job);
  case STORE_OP_UPDATE:
    return run_update(st, job);
  case STORE_OP_DELETE:
    return run_delete(st, job);
  case STORE_OP_HELD:
    return run_held(st, job);
  case STORE_OP_BULK:
    return run_bulk(st, job);
  case STORE_OP_SUSPEND:
    return run_suspend(st, job);
  case STORE_OP_TRUST:
    return run_trust(st, job);
  default:
    abort();
  }
}

/* One batch, one transaction; each job in its own savepoint. */
int store_db_write(struct store_db *st, struct store_req *first) {
  int committed = 0;
  int r = exec(first, st->w, "BEGIN IMMEDIATE");
  int ok = 0, batch_err = r;
  struct store_req *errj = first;
  for (struct store_req *j = first; j && !batch_err; j = j->next) {
    r = exec(j, st->w, "SAVEPOINT job");
    if (r == 0 && st->enospc_file && access(st->enospc_file, F_OK) == 0) {
      snprintf(j->errmsg, sizeof j->errmsg, "test hook: disk full");
      r = -ENOSPC;
    } else if (r == 0) {
      r = run_writer_job(st, j);
    }
    if (r == 0) {
      r = exec(j, st->w, "RELEASE job");
      ok += r == 0;
    } else if (sqlite3_get_autocommit(st->w)) {
      /* SQLite rolled the whole transaction back (FULL, IOERR ...). */
      batch_err = r;
      errj = j;
    } else {
      struct store_req tmp;
      exec(&tmp, st->w, "ROLLBACK TO job; RELEASE job");
    }
    j->status = r;
  }
  if (!batch_err && ok > 0 && st->fail_commits > 0) {
    /* As a COMMIT that fails with SQLITE_BUSY or an I/O error does, this
     * leaves the connection inside the transaction. */
    st->fail_commits--;
    snprintf(first->errmsg, sizeof first->errmsg, "test hook: COMMIT failed");
    batch_err = -EIO;
  } else if (!batch_err && ok > 0) {
    batch_err = exec(first, st->w, "COMMIT");
    committed = batch_err == 0;
  }
  /* Whatever failed — a request, BEGIN, or COMMIT itself (SQLITE_BUSY and
   * some I/O errors leave the transaction open) — the connection must be
   * back in autocommit, or every later batch fails at BEGIN. */
  if (!sqlite3_get_autocommit(st->w)) {
    struct store_req tmp;
    exec(&tmp, st->w, "ROLLBACK");
  }
  if (batch_err) {
    committed = 0;
    for (struct store_req *j = first; j; j = j->next) {
      if (j->status == 0) {
        j->status = batch_err;
        if (j != errj)
          memcpy(j->errmsg, errj->errmsg, sizeof j->errmsg);
      }
    }
  }
  return committed;
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

static int read_rcpts(struct store_req *job, sqlite3_stmt *s,
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

static int run_stream(struct store_db *st, struct store_req *job) {
  int bounded = job->ceiling[0] != '\0';
  sqlite3_stmt *s = st->stmt[bounded ? R_MSGS_BETWEEN : R_MSGS_AFTER];
  sqlite3_stmt *rs =
      st->stmt[job->op == STORE_OP_LOAD ? R_RCPTS_PENDING : R_RCPTS_ALL];
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
  if (bounded)
    sqlite3_bind_text(s, 3, job->ceiling, -1, SQLITE_STATIC);
  int rc, rows = 0;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    rows++;
    struct store_msg *m = &job->batch[job->nbatch];
    r = read_envelope(s, m);
    if (r == 0) {
      m->notices = (unsigned)sqlite3_column_int(s, 8);
      r = read_rcpts(job, rs, m);
    }
    snprintf(job->last_id, sizeof job->last_id, "%s", m->id);
    job->nbatch++;
    if (r < 0)
      break;
    if (job->op == STORE_OP_LOAD && m->nrcpts == 0)
      store_msg_clear(&job->batch[--job->nbatch]);
  }
  if (r == 0 && rc != SQLITE_ROW && rc != SQLITE_DONE)
    r = map_err(job, st->r, rc);
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  struct store_req tmp;
  exec(&tmp, st->r, "COMMIT");
  job->done = rows < STORE_BATCH;
  return r;
}

static int run_show(struct store_db *st, struct store_req *job) {
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
    if (r == 0)
      job->msg.notices = (unsigned)sqlite3_column_int(s, 9);
  } else {
    r = rc == SQLITE_DONE ? -ENOENT : map_err(job, st->r, rc);
  }
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  if (r == 0)
    r = read_rcpts(job, st->stmt[R_RCPTS_ALL], &job->msg);
  struct store_req tmp;
  exec(&tmp, st->r, "COMMIT");
  return r;
}

static int run_read(struct store_db *st, struct store_req *job) {
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
  struct store_req tmp;
  exec(&tmp, st->r, "COMMIT");
  return r;
}

static int run_count(struct store_db *st, struct store_req *job) {
  sqlite3_stmt *s = st->stmt[R_COUNT];
  sqlite3_bind_text(s, 1, job->ceiling, -1, SQLITE_STATIC);
  int rc = sqlite3_step(s);
  int r = 0;
  if (rc == SQLITE_ROW) {
    job->counts.messages = (uint64_t)sqlite3_column_int64(s, 0);
    job->counts.held = (uint64_t)sqlite3_column_int64(s, 1);
    job->counts.recipients = (uint64_t)sqlite3_column_int64(s, 2);
    job->counts.deferred = (uint64_t)sqlite3_column_int64(s, 3);
  } else {
    r = map_err(job, st->r, rc);
  }
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  return r;
}

/* One page of a selection: examines up to STORE_SCAN messages after
 * last_id in one read transaction, keeps up to STORE_BATCH matches with
 * all their recipients.  last_id ends as the last id examined. */
static int run_select(struct store_db *st, struct store_req *job) {
  sqlite3_stmt *s = st->stmt[R_SELECT_SCAN];
  sqlite3_stmt *rs = st->stmt[R_RCPTS_ALL];
  job->batch = calloc(STORE_BATCH, sizeof *job->batch);
  if (!job->batch)
    return -ENOMEM;
  int r = exec(job, st->r, "BEGIN");
  if (r < 0)
    return r;
  sqlite3_bind_text(s, 1, job->last_id, -1, SQLITE_STATIC);
  sqlite3_bind_int(s, 2, STORE_SCAN);
  int rc = SQLITE_DONE, rows = 0, full = 0;
  const struct qfilter *f = &job->filter;
  int need_rcpts = qfilter_needs_rcpts(f);
  while (!full && (rc = sqlite3_step(s)) == SQLITE_ROW) {
    rows++;
    struct store_msg *m = &job->batch[job->nbatch];
    r = read_envelope(s, m);
    if (r < 0)
      break;
    snprintf(job->last_id, sizeof job->last_id, "%s", m->id);
    if (!qfilter_msg_match(f, m->sender, m->held, m->received_at, job->now)) {
      store_msg_clear(m);
      continue;
    }
    r = read_rcpts(job, rs, m);
    if (r < 0) {
      store_msg_clear(m);
      break;
    }
    if (need_rcpts) {
      /* Over the non-final recipients. */
      const char **doms = malloc((m->nrcpts + 1) * sizeof *doms);
      int *states = malloc((m->nrcpts + 1) * sizeof *states);
      size_t k = 0;
      int match = 0;
      if (!doms || !states) {
        r = -ENOMEM;
      } else {
        for (size_t i = 0; i < m->nrcpts; i++) {
          if (m->rcpts[i].state > STORE_RCPT_DEFERRED)
            continue;
          doms[k] = m->rcpts[i].domain;
          states[k++] = m->rcpts[i].state == STORE_RCPT_DEFERRED;
        }
        match = qfilter_rcpts_match(f, doms, states, k);
      }
      free(doms);
      free(states);
      if (!match || r < 0) {
        store_msg_clear(m);
        if (r < 0)
          break;
        continue;
      }
    }
    job->nbatch++;
    full = job->nbatch == STORE_BATCH;
  }
  if (r == 0 && !full && rc != SQLITE_DONE)
    r = map_err(job, st->r, rc);
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  struct store_req tmp;
  exec(&tmp, st->r, "COMMIT");
  job->done = !full && rows < STORE_SCAN;
  return r;
}

void store_db_read(struct store_db *st, struct store_req *job) {
  switch (job->op) {
  case STORE_OP_COUNT:
    job->status = run_count(st, job);
    break;
  case STORE_OP_LOAD:
  case STORE_OP_LIST:
    job->status = run_stream(st, job);
    break;
  case STORE_OP_SHOW:
    job->status = run_show(st, job);
    break;
  case STORE_OP_READ:
    job->status = run_read(st, job);
    break;
  case STORE_OP_SELECT:
    job->status = run_select(st, job);
    break;
  default:
    abort();
  }
}

/* ---- open and close --------------------------------------------------- */

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

int sdb_int(sqlite3 *db, const char *sql, long long *out) {
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

static int migrate(struct store_db *st, char *err, size_t errlen) {
  int r = db_exec(st->w, "BEGIN IMMEDIATE", st->path, err, errlen);
  if (r < 0)
    return r;
  long long v = 0;
  int rc = sdb_int(st->w, "PRAGMA user_version", &v);
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
  if (r == 0 && v < 2) {
    r = db_exec(st->w, schema_v2, st->path, err, errlen);
    if (r == 0)
      r = db_exec(st->w, "PRAGMA user_version = 2", st->path, err, errlen);
  }
  if (r == 0 && v < 3) {
    r = db_exec(st->w, schema_v3, st->path, err, errlen);
    if (r == 0)
      r = db_exec(st->w, "PRAGMA user_version = 3", st->path, err, errlen);
  }
  /* Later versions: `if (v < 4) { ...; user_version = 4 }`. */
  /* messages.notices (delay warning sent, issue 19): added where missing
   * whatever the version, so that it does not take a version number from
   * the other schema changes of the same release. */
  if (r == 0) {
    long long has = 0;
    rc = sdb_int(st->w,
                 "SELECT count(*) FROM pragma_table_info('messages')"
                 " WHERE name = 'notices'",
                 &has);
    if (rc != SQLITE_OK)
      r = db_fail(st->w, rc, "reading the schema", st->path, err, errlen);
    else if (!has)
      r = db_exec(st->w,
                  "ALTER TABLE messages ADD COLUMN notices INTEGER NOT NULL"
                  " DEFAULT 0",
                  st->path, err, errlen);
  }
  if (r == 0)
    return db_exec(st->w, "COMMIT", st->path, err, errlen);
  sqlite3_exec(st->w, "ROLLBACK", NULL, NULL, NULL);
  return r;
}

static void db_free(struct store_db *st) {
  for (int i = 0; i < STMT_COUNT; i++)
    sqlite3_finalize(st->stmt[i]);
  sqlite3_close(st->r);
  sqlite3_close(st->w);
  free(st->enospc_file);
  free(st);
}

int store_db_open(const char *path, struct store_db **out, char *err,
                  size_t errlen) {
  struct store_db *st = calloc(1, sizeof *st);
  if (!st) {
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
  }
  st->path = path;
  int r = db_open(path, 0, &st->w, err, errlen);
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
   * 250 after DATA means durable.  The WAL is checkpointed every ~40 MB
   * (10,000 pages) and truncated back to 64 MB after a checkpoint that
   * left it larger: a checkpoint copies each page once, in its last
   * version, and a relay's pages are mostly freed by a delivery and reused
   * by the next message, so a long window copies far less than the bytes
   * written (issue 21: 100 KiB relay 1.15 -> 1.03 ms CPU per message).
   * secure_delete=FAST: Debian builds SQLite with secure delete ON, which
   * zeroes every page a delivered message frees — a second WAL write (and
   * checkpoint copy) of its whole body; FAST still zeroes what is on pages
   * written anyway, and a freed page is overwritten when reused (as a
   * deleted queue file's blocks are, Postfix's case).  temp_store=MEMORY:
   * the savepoint journal of each request of a batch stays in memory
   * instead of a temp file opened per transaction (issue 21). */
  if (r == 0)
    r = db_exec(st->w,
                "PRAGMA synchronous=FULL;"
                "PRAGMA wal_autocheckpoint=10000;"
                "PRAGMA journal_size_limit=67108864;"
                "PRAGMA secure_delete=FAST;"
                "PRAGMA temp_store=MEMORY;"
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
    db_free(st);
    return r;
  }
  st->path = NULL;
  *out = st;
  return 0;
}

void store_db_close(struct store_db *st) {
  db_free(st);
}

sqlite3 *sdb_writer(struct store_db *st) {
  return st->w;
}

void store_db_fail_commits(struct store_db *st, int n) {
  st->fail_commits = n;
}

int store_db_enospc_file(struct store_db *st, const char *path) {
  char *p = path ? strdup(path) : NULL;
  if (path && !p)
    return -ENOMEM;
  free(st->enospc_file);
  st->enospc_file = p;
  return 0;
}

int store_db_max_pages(struct store_db *st, long pages) {
  char sql[64];
  long long got = 0;
  snprintf(sql, sizeof sql, "PRAGMA max_page_count=%ld", pages);
  return sdb_int(st->w, sql, &got) == SQLITE_OK ? 0 : -EIO;
}
