/*
 * spool: one message's DATA while it is being received (ARCHITECTURE "The
 * queue": memory per session is bounded whatever the message size).
 *
 * The first SPOOL_MEM bytes stay in memory.  A message may stay in memory
 * up to SPOOL_MEM_MAX bytes while the spools of the store together hold
 * at most SPOOL_BUDGET bytes beyond their first SPOOL_MEM (struct
 * spool_budget): most messages then never touch a temp file (issue 21:
 * its open, writes, read-back and pool hand-offs cost more than the
 * message).  Otherwise the spool writes what it holds to an unlinked temp
 * file in the queue's directory (O_TMPFILE, or mkstemp + unlink where the
 * file system lacks it) with uv_fs_*, never blocking the loop, and goes on
 * in SPOOL_MEM pieces.  The store copies a finished spool into the
 * database on its writer lane (spool_pread on the pool thread).
 *
 * The type keeps its older name, struct store_spool, so that the store's
 * store_spool_* calls (store.h) stay the interface of its users.
 *
 * Backpressure contract (the one rule a user must follow):
 *   - spool_append() copies the bytes it takes (the caller's buffer is
 *     free again when it returns) and returns
 *       0            taken; keep feeding, cb will NOT run;
 *       SPOOL_PAUSE  taken, but the spool is now writing to disk: stop
 *                    reading from the peer until cb(sp, status, data) runs
 *                    (exactly once, from the loop, never inside the call);
 *                    status < 0 (e.g. -ENOSPC) means the spool failed:
 *                    answer 452/451 and free it;
 *       < 0          nothing taken: -EBUSY while a write is pending (the
 *                    caller broke the contract), -ENOMEM, or the spool's
 *                    earlier error; cb never runs.
 *   - While a write is pending (after SPOOL_PAUSE, until cb) the spool
 *     cannot be committed: store_commit() refuses it with -EBUSY.
 *   - Memory per spool stays below SPOOL_MEM + one appended chunk, plus
 *     what it holds of the shared budget (at most SPOOL_MEM_MAX in all).
 *
 * Errors are negative errno values as libuv gives them (-ENOSPC, -EIO,
 * -ENOMEM, -ECANCELED for a spool freed with a write pending).
 */
#ifndef MAILHOP_QUEUE_SPOOL_H
#define MAILHOP_QUEUE_SPOOL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* In-memory part of every spool, bytes. */
#define SPOOL_MEM (64 * 1024)
/* Bytes a spool may hold in memory in all, drawing on the budget. */
#define SPOOL_MEM_MAX (1024 * 1024)
/* Bytes beyond SPOOL_MEM that the spools of one budget hold together. */
#define SPOOL_BUDGET (16u * 1024 * 1024)

/* Shared by the spools of one store (loop thread only). */
struct spool_budget {
  size_t used;  /* bytes of capacity beyond SPOOL_MEM, all spools */
  size_t limit; /* SPOOL_BUDGET; 0: no spool grows (tests) */
};

#define SPOOL_PAUSE 1

/* spool_new() flags. */
#define SPOOL_NO_TMPFILE 0x1 /* always the mkstemp fallback (tests) */

struct store_spool;

typedef void (*store_spool_cb)(struct store_spool *sp, int status, void *data);

/* A new, empty spool whose file (if it needs one) goes into `dir`, drawing
 * on `budget` (may be NULL: never grows).  dir and budget are borrowed:
 * they must outlive the spool.  Returns NULL on ENOMEM. */
struct store_spool *spool_new(uv_loop_t *loop, const char *dir, unsigned flags,
                              struct spool_budget *budget);

/* Test hook (store_debug_enospc_file in store.h): while a file exists at
 * path (borrowed: it must outlive the spool), every disk write completes
 * with -ENOSPC. */
void spool_debug_enospc_file(struct store_spool *sp, const char *path);

/* Appends len bytes; see the contract above. */
int spool_append(struct store_spool *sp, const void *buf, size_t len,
                 store_spool_cb cb, void *data)
    __attribute__((warn_unused_result));

/* Bytes appended so far. */
int64_t spool_size(const struct store_spool *sp);

/* 1 while a disk write is pending (between SPOOL_PAUSE and its cb). */
int spool_busy(const struct store_spool *sp);

/* The spool's sticky error (negative errno), or 0. */
int spool_error(const struct store_spool *sp);

/* Pool thread, on a spool with no write pending (the store's commit):
 * copies bytes [off, off+len) of the spool into buf.  0, or a negative
 * errno with a one-line reason in err. */
int spool_pread(const struct store_spool *sp, int64_t off, char *buf,
                size_t len, char *err, size_t errlen);

/* Frees the spool (NULL is ignored).  Safe while a disk write is pending:
 * the callback then still runs, with -ECANCELED, and the memory goes after
 * it.  The temp file is closed on the thread pool (closing an unlinked file
 * frees its blocks). */
void spool_free(struct store_spool *sp);

#endif
