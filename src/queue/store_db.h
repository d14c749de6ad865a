/*
 * store_db: the queue's SQL — schema, migrations, prepared statements, and
 * the functions that run them on the pool (internal to src/queue/; the
 * store's users see only store.h).
 *
 * Owns: the writer and reader connections and their statements.  Knows
 * nothing of libuv, lanes or callbacks: store.c calls store_db_write() from
 * its writer lane and store_db_read() from its reader lane, each on one
 * pool thread at a time per connection (the connections are opened
 * NOMUTEX).  It is the only includer of sqlite3.h.
 *
 * Errors are negative errno values: -ENOSPC (SQLITE_FULL, or an I/O error
 * whose system errno is ENOSPC), -ENOENT (no such message), -ENOMEM, -EIO
 * (anything else); each request keeps SQLite's message in errmsg.
 */
#ifndef MAILHOP_QUEUE_STORE_DB_H
#define MAILHOP_QUEUE_STORE_DB_H

#include "queue/spool.h"
#include "queue/store.h"

#include <stddef.h>
#include <stdint.h>

enum store_op {
  /* writer */
  STORE_OP_COMMIT,
  STORE_OP_UPDATE,
  STORE_OP_DELETE,
  STORE_OP_HELD,
  STORE_OP_BULK,
  STORE_OP_SUSPEND,
  STORE_OP_TRUST, /* the last writer op */
  /* reader */
  STORE_OP_LOAD,
  STORE_OP_LIST,
  STORE_OP_SHOW,
  STORE_OP_READ,
  STORE_OP_COUNT,
  STORE_OP_SELECT,
};
const char *store_op_name(enum store_op op);

/* One request's inputs and outputs, filled by store.c on the loop thread,
 * used on the pool thread, read back on the loop thread. */
struct store_req {
  struct store_req *next; /* writer: the rest of the batch */
  enum store_op op;
  int status;       /* out: 0 or a negative errno */
  char errmsg[160]; /* out: SQLite's message for the warn line */
  /* commit, update's bounce, show's result */
  struct store_msg msg;
  int has_msg;
  char *prefix; /* msg.prefix_len bytes, owned */
  struct store_spool *spool;
  /* commit: keep is set by store.c when the fresh-message cache reserved
   * room; store_db then leaves the message's bytes in kept (owned,
   * msg.size bytes; NULL if that malloc failed) and the header section's
   * length in kept_hlen */
  int keep;
  char *kept;
  size_t kept_hlen;
  /* update */
  struct store_outcome *outs;
  size_t nouts;
  /* delete, held, show, read */
  char id[STORE_ID_SIZE];
  int held;
  /* streams (load, list): resume after last_id; load and count stop
   * below ceiling ("" = no bound, for list only) */
  char last_id[STORE_ID_SIZE];
  char ceiling[STORE_ID_SIZE];
  struct store_msg *batch;
  size_t nbatch;
  int done;
  /* read */
  int64_t offset;
  void *buf;
  size_t len, got;
  int64_t total;
  /* count */
  struct store_counts counts;
  /* select (last_id: resume after it; out: the last id examined) */
  struct qfilter filter;
  int64_t now;
  /* bulk */
  enum store_bulk_action action;
  char (*ids)[STORE_ID_SIZE];
  int *changed;
  size_t nids;
  /* suspend (dest, until); trust: dest is the policy domain */
  char dest[256];
  int64_t until;
  /* trust (MTA-STS policy cache, TLS-RPT counts) */
  enum store_trust_kind trust;
  char sts_id[STORE_STS_ID_SIZE];
  int64_t fetched_at, expires_at, period_start, delta;
  char *policy; /* owned; NULL: delete the cached policy */
  char rpt_policy[16];
  char rpt_result[48];
};

struct store_db;

/* Opens (creating or migrating) the database at path: writer connection in
 * WAL mode with synchronous=FULL, reader connection query-only, every
 * statement prepared.  Blocking (start-up).  On error fills err and returns
 * a negative errno (-EACCES, -ENOSPC, -EPROTO for a newer schema, -EIO). */
int store_db_open(const char *path, struct store_db **out, char *err,
                  size_t errlen) __attribute__((warn_unused_result));

/* Blocking (on the pool: the last close checkpoints the WAL).  Frees db. */
void store_db_close(struct store_db *db);

/* Writer lane, pool thread: runs first, first->next, ... in ONE
 * transaction, each request in its own SAVEPOINT (a request that fails on
 * its own does not fail the others; a failed COMMIT fails them all and
 * leaves the connection in autocommit).  Sets every request's status.
 * Returns 1 when the transaction committed. */
int store_db_write(struct store_db *db, struct store_req *first);

/* Reader lane, pool thread: runs one read request. */
void store_db_read(struct store_db *db, struct store_req *req);

/* Frees what a request owns (not the request). */
void store_req_clear(struct store_req *req);
void store_msg_clear(struct store_msg *m);

/* The largest message id in the queue ("" when it is empty).  Blocking
 * (start-up).  0 or -EIO. */
int store_db_max_id(struct store_db *db, char out[STORE_ID_SIZE]);

/* The suspensions table, read at open (blocking, start-up): *out is a
 * malloc'd array sorted by dest (NULL when empty), *n its length.
 * 0 or -EIO / -ENOMEM. */
int store_db_suspensions(struct store_db *db, struct store_suspension **out,
                         size_t *n);

/* The MTA-STS policies, TLS-RPT counts and period start, read at open
 * (blocking, start-up): malloc'd arrays (NULL when empty) the caller
 * frees (with each sts row's policy).  0 or -EIO / -ENOMEM. */
int store_db_trust(struct store_db *db, struct store_sts_row **sts,
                   size_t *nsts, struct store_rpt_row **rpt, size_t *nrpt,
                   int64_t *period_start);

/* Test hooks (store.h documents them). */
int store_db_max_pages(struct store_db *db, long pages);
void store_db_fail_commits(struct store_db *db, int n);
int store_db_enospc_file(struct store_db *db, const char *path);

#endif
