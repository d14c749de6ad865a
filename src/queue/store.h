/*
 * store: the SQLite queue (ARCHITECTURE "The queue", CONTRACT §3, §5).
 *
 * Owns the queue database file, its ownership lock (`<path>.lock`, flock'd,
 * holding the owner's PID), one writer connection and one read connection.
 * Inside src/queue/ it is built of three parts: queue/spool (the DATA
 * spool of a message being received, with its backpressure contract),
 * queue/lane (the generic one-job-at-a-time pool lanes, which know no SQL)
 * and queue/store_db (schema, migrations, statements: the only includer of
 * sqlite3.h).  Users need only this header.
 *
 * Threading: every SQLite statement except those of store_open() and
 * store_close() runs on libuv's thread pool (uv_queue_work).  There are two
 * lanes, each with at most one job in flight:
 *
 *   - the writer lane (commit, update, delete, set_held).  While a batch
 *     runs, new writer requests gather; the next batch runs them all in ONE
 *     transaction (group commit, synchronous=FULL: durable when COMMIT
 *     returns).  Each request runs inside its own SAVEPOINT, so a request
 *     that fails on its own (unknown id) does not fail its neighbours; a
 *     failed COMMIT fails the whole batch and never touches earlier data,
 *     and the connection is rolled back whenever it is left inside a
 *     transaction, so the next batch commits as usual.
 *   - the reader lane (load, list, show, body reads) on the read connection
 *     (WAL: readers see the last committed state and never block the writer).
 *
 * Results are delivered on the loop thread, in the after-work callback.
 * The store never knows SMTP syntax and never calls into loop/, dns/ or the
 * wiring modules.
 *
 * Callbacks: every function taking a callback that returns 0 runs that
 * callback exactly once (for streaming calls: until one call with done=1),
 * always from the loop, never from inside the starting call; if it returns
 * an error the callback never runs.
 *
 * Functions taking a queue id return -EINVAL (callback not run) unless it
 * is [A-Za-z0-9]{1,STORE_ID_LEN}: treat it as "no such message".
 *
 * Errors are negative errno values: -ENOSPC when the disk or database is
 * full (inbound replies 452 4.3.1), -EIO for any other database failure
 * (451 4.3.0), -ENOENT for an unknown id, -ECANCELED for a cancelled
 * request, -EBUSY from store_open when another process owns the queue.
 */
#ifndef MAILHOP_QUEUE_STORE_H
#define MAILHOP_QUEUE_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "proto/qfilter.h"
#include "queue/spool.h"

#define STORE_MUSTCHECK __attribute__((warn_unused_result))

/* Queue ids: 9 base62 digits of microseconds since the epoch (fixed width,
 * so ids sort by time) + 5 random base62 digits.  [0-9A-Za-z]{14}. */
#define STORE_ID_LEN 14
#define STORE_ID_SIZE (STORE_ID_LEN + 1)

/* In-memory part of a DATA spool; beyond it bytes go to a temp file. */
#define STORE_SPOOL_MEM SPOOL_MEM

/* store_list() / store_load() batch size (messages per callback). */
#define STORE_BATCH 256

struct store;
struct store_spool; /* queue/spool.h */
struct store_job;

enum store_rcpt_state {
  STORE_RCPT_QUEUED = 0,
  STORE_RCPT_DEFERRED = 1,
  STORE_RCPT_DELIVERED = 2,
  STORE_RCPT_BOUNCED = 3,
};
const char *store_rcpt_state_name(enum store_rcpt_state s);

/* Message flags (struct store_msg.flags). */
#define STORE_F_SMTPUTF8 0x1
#define STORE_F_BODY8BIT 0x2

/* DSN values are stored as given; the store does not interpret them. */
struct store_rcpt {
  /* envelope, given to store_commit */
  char *address; /* without angle brackets */
  char *orcpt;   /* RFC 3461 ORCPT as received, or NULL */
  int notify;    /* caller's bit mask of NOTIFY values (0: not given) */
  char *domain;  /* destination key (recipient domain, lower case) */
  /* state, filled by load/list/show (ignored by commit: new recipients are
   * STORE_RCPT_QUEUED with attempts 0, next_attempt_at 0) */
  int idx; /* position in the message, 0-based; commit numbers them */
  enum store_rcpt_state state;
  int attempts;
  int64_t next_attempt_at; /* unix seconds; 0 = now */
  char *last_error;        /* or NULL */
};

struct store_msg {
  char id[STORE_ID_SIZE]; /* empty at commit: the store makes one */
  char *sender;           /* "" for the null sender */
  int64_t size;           /* bytes of prefix + body, set by the store */
  int64_t received_at;    /* unix seconds */
  int held;
  int ret;     /* RFC 3461 RET: caller's value (0 = not given) */
  char *envid; /* or NULL */
  unsigned flags;
  struct store_rcpt *rcpts;
  size_t nrcpts;
  /* commit input only: bytes stored before the spooled body (the Received
   * header and any added headers); may be NULL/0. */
  const char *prefix;
  size_t prefix_len;
  /* show output only: the header section (up to the blank line, at most
   * 64 KiB), NUL-terminated, or NULL. */
  char *headers;
  /* show, load and list output only: STORE_NOTICE_* bits of notices
   * already sent. */
  unsigned notices;
};

/* Notices sent about a message (struct store_msg.notices), remembered so
 * that a restart does not send them again. */
#define STORE_NOTICE_DELAY 0x1 /* the RFC 3464 delay warning (issue 19) */

/* What store_load() will hand over (store_count()). */
struct store_counts {
  uint64_t messages;   /* with at least one non-final recipient */
  uint64_t recipients; /* non-final recipients */
  uint64_t deferred;   /* of those, tried at least once (attempts > 0) */
  uint64_t held;       /* held messages among `messages` */
};

struct store_stats {
  uint64_t transactions; /* writer transactions committed */
  uint64_t commits;      /* messages committed */
  uint64_t failed;       /* writer requests that failed */
  size_t pending;        /* writer requests waiting for the next batch */
  /* the fresh-message cache (queue/fresh.h): reads answered from memory
   * (hits) or sent to the database (misses), and what it holds now */
  uint64_t fresh_hits, fresh_misses;
  size_t fresh_entries, fresh_bytes;
  /* bytes the spools hold beyond SPOOL_MEM each (queue/spool.h budget) */
  size_t spool_mem;
};

/* Callback types.  `st` is the store; `data` what the caller passed. */
typedef void (*store_done_cb)(struct store *st, int status, void *data);
typedef void (*store_close_cb)(void *data); /* the store is gone */
/* store_spool_cb: see queue/spool.h. */
/* Streaming: called with batches of up to STORE_BATCH messages; the last
 * call has done != 0 (n may be 0).  status < 0 ends the stream (done=1).
 * msgs is valid only during the call. */
typedef void (*store_msgs_cb)(struct store *st, int status,
                              const struct store_msg *msgs, size_t n, int done,
                              void *data);
/* msg valid only during the call; NULL when status < 0. */
typedef void (*store_show_cb)(struct store *st, int status,
                              const struct store_msg *msg, void *data);
/* counts valid only during the call; NULL when status < 0. */
typedef void (*store_count_cb)(struct store *st, int status,
                               const struct store_counts *counts, void *data);
/* Bytes read into the caller's buffer; n < asked only at the end of the
 * body; total is the body's full size. */
typedef void (*store_read_cb)(struct store *st, int status, size_t n,
                              int64_t total, void *data);

/* ---- life cycle ------------------------------------------------------- */

/* Opens (creating or migrating) the queue at `path` and takes its lock.
 * Blocks (start-up only, before the loop runs).  On error fills err with a
 * one-line message and returns -EBUSY (owned by another process: the
 * message names its PID), or another negative errno. */
int store_open(uv_loop_t *loop, const char *path, struct store **out, char *err,
               size_t errlen) STORE_MUSTCHECK;

/* Stops accepting requests (they return -ESHUTDOWN), lets queued and
 * running work finish (their callbacks run), closes both connections
 * (blocking, a checkpoint may run), releases the lock, frees the store and
 * then calls cb (may be NULL).  Called once. */
void store_close(struct store *st, store_close_cb cb, void *data);

/* Writes a fresh queue id (STORE_ID_SIZE bytes with the NUL): strictly
 * after every id made before it by this store, and after every id that was
 * in the queue at store_open() even if the clock went back since. */
void store_new_id(struct store *st, char out[STORE_ID_SIZE]);

void store_get_stats(const struct store *st, struct store_stats *out);

/* ---- DATA spool ------------------------------------------------------- */

/* The spool is queue/spool.h's object, whose header states its
 * backpressure contract; these calls are its interface for the store's
 * users, unchanged from before the split. */

/* A new spool whose temp file goes into the queue's directory (it must
 * not outlive the store).  Returns NULL on ENOMEM. */
struct store_spool *store_spool_new(struct store *st);

/* spool_append(): 0 taken; STORE_SPOOL_PAUSE taken, stop reading until
 * cb runs once; < 0 nothing taken, cb never runs (queue/spool.h). */
#define STORE_SPOOL_PAUSE SPOOL_PAUSE
int store_spool_append(struct store_spool *sp, const void *buf, size_t len,
                       store_spool_cb cb, void *data) STORE_MUSTCHECK;

/* Bytes appended so far. */
int64_t store_spool_size(const struct store_spool *sp);

/* Reads up to len bytes of the spool from offset off into buf (for the
 * DKIM signer, relay/dkim).  BLOCKING (pread): call it from a thread-pool
 * job that was handed the spool while no write is pending and nothing
 * appends to or frees it.  Returns the bytes read (0 at the end) or a
 * negative errno (-EIO for a truncated spool file). */
long store_spool_pread(struct store_spool *sp, int64_t off, void *buf,
                       size_t len) STORE_MUSTCHECK;

/* spool_free(): safe while a write is pending (cb then runs with
 * -ECANCELED).  NULL is ignored. */
void store_spool_free(struct store_spool *sp);

/* ---- writer lane ------------------------------------------------------ */

/* Commits one message: the envelope (deep-copied; msg may be freed on
 * return), the prefix bytes, then the spooled body (ownership of `body`
 * passes to the store in every case, even on error; may be NULL).  body
 * must not have a write pending.  Sets msg->id when empty.  cb(st, status,
 * data) runs once the message's batch is durable (0), or failed (-ENOSPC,
 * -EIO), or was cancelled before it was written (-ECANCELED).  If jobp is
 * not NULL it receives a handle for store_cancel(), valid until cb runs. */
int store_commit(struct store *st, struct store_msg *msg,
                 struct store_spool *body, store_done_cb cb, void *data,
                 struct store_job **jobp) STORE_MUSTCHECK;

/* Outcome of one recipient's attempt.  DELIVERED and BOUNCED are final;
 * DEFERRED stores attempts, next_attempt_at and last_error. */
struct store_outcome {
  const char *id;
  int idx;
  enum store_rcpt_state state;
  int attempts;
  int64_t next_attempt_at;
  const char *last_error; /* or NULL */
  unsigned set_notices;   /* STORE_NOTICE_* bits added to the message */
};

/* Applies n outcomes in one transaction (an outcome's set_notices bits are
 * added to its message's notices); deletes every touched message
 * whose recipients are then all final; inserts `bounce` (with its prefix
 * bytes as the whole body; may be NULL) in the same transaction.  All
 * inputs are copied.  cb: 0, -ENOSPC/-EIO (nothing applied), -ECANCELED. */
int store_update(struct store *st, const struct store_outcome *outcomes,
                 size_t n, struct store_msg *bounce, store_done_cb cb,
                 void *data, struct store_job **jobp) STORE_MUSTCHECK;

/* Removes a message and its recipients (no bounce).  cb: 0 or -ENOENT. */
int store_delete(struct store *st, const char *id, store_done_cb cb,
                 void *data) STORE_MUSTCHECK;

/* Sets or clears the held flag.  cb: 0 or -ENOENT. */
int store_set_held(struct store *st, const char *id, int held, store_done_cb cb,
                   void *data) STORE_MUSTCHECK;

/* ---- reader lane ------------------------------------------------------ */

/* Streams every message with at least one non-final recipient, with only
 * those recipients (for the scheduler at start), in id order.  Held
 * messages are included (msg->held set); the scheduler skips them.
 *
 * Only messages that were in the queue when store_open() returned are
 * streamed: every id the store makes afterwards (store_new_id, commits,
 * bounces) sorts after all of them, and the load stops below the first.
 * Whoever commits a message in this process schedules it itself, so a load
 * that runs while inbound and delivery are live never hands over a message
 * that was committed — and maybe already delivered — meanwhile. */
int store_load(struct store *st, store_msgs_cb cb, void *data,
               struct store_job **jobp) STORE_MUSTCHECK;

/* Counts, in one query on the reader lane, what store_load() will hand
 * over (the messages present at store_open(); see there).  Issued before
 * store_load() it runs first (the reader lane is FIFO), so the figures
 * minus what each load batch delivered are what is still to come: right
 * counts for `status` while the load runs.  cb: 0 or -EIO. */
int store_count(struct store *st, store_count_cb cb,
                void *data) STORE_MUSTCHECK;

/* Streams every message with all its recipients (admin `queue`), in id
 * order, one batch per pool job so the loop never stalls. */
int store_list(struct store *st, store_msgs_cb cb, void *data,
               struct store_job **jobp) STORE_MUSTCHECK;

/* One message with all recipients and msg->headers set; -ENOENT. */
int store_show(struct store *st, const char *id, store_show_cb cb,
               void *data) STORE_MUSTCHECK;

/* Reads up to len bytes of a message's stored body (prefix included) at
 * offset into buf, which must stay valid until cb runs.  Delivery streams
 * a body by calling it again with offset += n until n < len. */
int store_body_read(struct store *st, const char *id, int64_t offset, void *buf,
                    size_t len, store_read_cb cb, void *data,
                    struct store_job **jobp) STORE_MUSTCHECK;

/* ---- queue control (CONTRACT §1 FILTER, bulk actions, suspend) --------- */

/* store_select(): messages examined per call at most (one bounded pool
 * job); matches per call at most STORE_BATCH. */
#define STORE_SCAN 1024
/* store_bulk(): ids per request at most. */
#define STORE_BULK_MAX STORE_BATCH

/* One page of a selection: up to STORE_BATCH matching messages with all
 * their recipients (msgs valid only during the call), in id order.  next
 * is the id of the last message examined: call store_select() again with
 * after = next for the following page, unless done (the whole queue after
 * `after` was examined).  status < 0: nothing (msgs NULL, done 1). */
typedef void (*store_select_cb)(struct store *st, int status,
                                const struct store_msg *msgs, size_t n,
                                const char *next, int done, void *data);

/* Reads one page of the messages that match f (proto/qfilter: sender,
 * held, age at `now` unix seconds, recipient domain and state over the
 * non-final recipients), starting after the id `after` ("" = from the
 * start).  Each call is one reader-lane job that examines at most
 * STORE_SCAN messages, so a selection over a large queue never holds the
 * lane (or a read transaction) for long: the caller pages.  -EINVAL (bad
 * `after`, callback not run). */
int store_select(struct store *st, const struct qfilter *f, int64_t now,
                 const char *after, store_select_cb cb,
                 void *data) STORE_MUSTCHECK;

enum store_bulk_action {
  STORE_BULK_DELETE = 0, /* remove, no bounce */
  STORE_BULK_HOLD = 1,
  STORE_BULK_RELEASE = 2,
};

/* changed[i] is 1 when ids[i] was changed, 0 when it was not in the queue
 * or was so already (held, released) (valid only during the call; NULL
 * when status < 0). */
typedef void (*store_bulk_cb)(struct store *st, int status, const int *changed,
                              size_t n, void *data);

/* Applies one action to n ids (1..STORE_BULK_MAX, copied) as ONE writer
 * request: all of it or, on -ENOSPC/-EIO, nothing.  An id that is gone is
 * skipped (changed 0).  -EINVAL (bad id, n, or action; callback not
 * run). */
int store_bulk(struct store *st, enum store_bulk_action action,
               const char *const *ids, size_t n, store_bulk_cb cb,
               void *data) STORE_MUSTCHECK;

/* Keeps (until > 0, unix seconds; replacing an earlier time) or removes
 * (until 0; removing nothing is fine) the suspension of a destination
 * (1..255 bytes, copied) in the queue database, so it survives a restart.
 * cb: 0, -ENOSPC, -EIO.  -EINVAL (bad dest or until < 0). */
int store_suspend(struct store *st, const char *dest, int64_t until,
                  store_done_cb cb, void *data) STORE_MUSTCHECK;

struct store_suspension {
  char dest[256];
  int64_t until; /* unix seconds */
};

/* The suspensions that were in the database when store_open() returned
 * (read there, sorted by dest; the store does not drop those over: the
 * caller does).  *out valid until store_close(); returns their number. */
size_t store_suspensions_at_open(const struct store *st,
                                 const struct store_suspension **out);

/* ---- outbound trust (CONTRACT §4b): MTA-STS policies, TLS-RPT counts -- */

#define STORE_STS_ID_SIZE 33 /* RFC 8461 §3.1 id: 1..32 characters */

enum store_trust_kind {
  STORE_TRUST_STS_PUT,   /* keep dest's policy (replacing the old one) */
  STORE_TRUST_STS_DEL,   /* forget dest's policy */
  STORE_TRUST_RPT_ADD,   /* count[dest, policy, result] += delta */
  STORE_TRUST_RPT_RESET, /* drop every count; the period starts anew */
};

/* A cached MTA-STS policy (the file's text as fetched, reparsed on use). */
struct store_sts_row {
  char domain[256];
  char id[STORE_STS_ID_SIZE];
  int64_t fetched_at, expires_at; /* unix s */
  char *policy;                   /* NUL-terminated */
};

/* A TLS-RPT count: successful sessions have result "". */
struct store_rpt_row {
  char domain[256];
  char policy[16]; /* "sts", "tlsa", "no-policy-found" */
  char result[48]; /* an RFC 8460 result type, or "" */
  int64_t count;
};

/* Keeps (policy non-NULL, copied; at most 64 KiB) or forgets (NULL) the
 * MTA-STS policy of domain (1..255 bytes) with its TXT id and times (unix
 * s).  One writer request; cb: 0, -ENOSPC, -EIO.  -EINVAL (bad
 * arguments; callback not run). */
int store_sts_put(struct store *st, const char *domain, const char *id,
                  int64_t fetched_at, int64_t expires_at, const char *policy,
                  store_done_cb cb, void *data) STORE_MUSTCHECK;

/* Adds delta to a TLS-RPT count (creating it).  One writer request, in
 * order with the others (a reset queued before it comes first).  -EINVAL
 * as above. */
int store_tlsrpt_add(struct store *st, const char *domain, const char *policy,
                     const char *result, int64_t delta, store_done_cb cb,
                     void *data) STORE_MUSTCHECK;

/* Drops every TLS-RPT count and keeps period_start (unix s). */
int store_tlsrpt_reset(struct store *st, int64_t period_start, store_done_cb cb,
                       void *data) STORE_MUSTCHECK;

/* What store_open() read of the trust tables: valid until store_close()
 * (the policies' text included).  period_start 0: none kept yet. */
void store_trust_at_open(const struct store *st,
                         const struct store_sts_row **sts, size_t *nsts,
                         const struct store_rpt_row **rpt, size_t *nrpt,
                         int64_t *period_start);

/* ---- cancel ----------------------------------------------------------- */

/* For an owner's end function.  A request still waiting for its lane is
 * dropped: its callback runs later (never inside this call) with
 * -ECANCELED, and nothing of it is written.  A request already running
 * completes: its callback reports the real result (for a commit, 0 means
 * the message IS in the queue).  A stream stops at the next batch boundary
 * with a final call (done=1, -ECANCELED).  Either way the callback runs
 * exactly once more (streams: one final call), so the owner waits for it. */
void store_cancel(struct store_job *job);

/* Test hook: caps the database at `pages` pages on the writer connection
 * so that writes fail with SQLITE_FULL (-ENOSPC).  Blocking; tests only. */
int store_debug_max_pages(struct store *st, long pages);

/* Test hook: the next n writer transactions fail at COMMIT (-EIO) the way
 * SQLITE_BUSY or an I/O error there fails it: the connection is left inside
 * the transaction, and the store must roll it back before the next batch.
 * Call while no writer request is in flight. */
void store_debug_fail_commits(struct store *st, int n);

/* Test hook for a full disk without root: while a file exists at `path`
 * (checked on every request, so a test creates and removes it to fill and
 * free the "disk"), every writer request (commit, update, delete, held)
 * fails with -ENOSPC (its savepoint rolled back, its neighbours in the
 * batch unharmed) and every spool write to disk fails with -ENOSPC, as
 * they would on a full file system.  path is copied.  Call once, right
 * after store_open() (before any spool); `mailhop serve` does when the
 * environment variable MAILHOP_DEBUG_ENOSPC_FILE is set (tests only).
 * 0, -ENOMEM, or -EALREADY (already set, or path NULL). */
int store_debug_enospc_file(struct store *st, const char *path);

/* Test hook: spools use the named-temp-file fallback (mkstemp + unlink)
 * that file systems without O_TMPFILE get. */
void store_debug_no_tmpfile(struct store *st);

/* Test hook: the spools' shared budget (SPOOL_BUDGET) becomes `bytes`; 0
 * sends every spool to its temp file past SPOOL_MEM, as before issue 21.
 * Call while no spool holds any of it. */
void store_debug_spool_budget(struct store *st, size_t bytes);

#endif
