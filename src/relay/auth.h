/*
 * auth: SMTP AUTH credential checking for inbound sessions (CONTRACT §2
 * auth_users_file, §3).
 *
 * Owns the users table loaded from auth_users_file (`user:hash` lines,
 * crypt(3) hashes) and the password checks in flight.  A check runs
 * crypt_rn() on libuv's thread pool, never on the loop thread: at most
 * max_running checks are on the pool at once, further ones wait in a
 * bounded FIFO, and when that is full auth_check() fails at once with
 * UV_EBUSY (the caller answers with a temporary error).  An unknown user
 * is checked against a dummy hash of the same kind as the table's users,
 * so the time taken does not tell whether a user exists.  The comparison
 * is constant-time.  A failed check's callback is delayed (fail_delay_ms,
 * 1 s by default) to slow down guessing; a successful one is answered as
 * soon as the hash is done.
 *
 * It never logs passwords; copies of them are wiped (explicit_bzero) as
 * soon as the hash is computed and again when the request is freed.
 *
 * Callbacks: when auth_check() returns 0, its callback runs exactly once:
 * from the loop (never from inside auth_check), or from inside
 * auth_cancel()/auth_free() with AUTH_CANCELED.  When auth_check() returns
 * an error, the callback never runs.
 */
#ifndef MAILHOP_AUTH_H
#define MAILHOP_AUTH_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct auth;
struct auth_req;
struct auth_table;

/* A user name longer than this never matches; a longer password fails
 * (after the delay) without being hashed. */
#define AUTH_USER_MAX 255
#define AUTH_PASS_MAX 1024
/* The users file is read whole; a larger one is refused. */
#define AUTH_FILE_MAX (16 * 1024 * 1024)

enum auth_status {
  AUTH_OK,       /* the password matches the user's hash */
  AUTH_FAILED,   /* unknown user or wrong password (535 5.7.8) */
  AUTH_TEMPFAIL, /* the check could not run (out of memory, crypt error) */
  AUTH_CANCELED, /* auth_cancel() or auth_free() */
};

const char *auth_status_name(enum auth_status st);

/* ---- the users table (pure) ------------------------------------------ */

/*
 * Parses a users file held in text[0..len) (need not be NUL-terminated):
 * one `user:hash` per line (LF or CRLF), lines that are empty, blank or
 * start with `#` (after optional blanks) ignored.  The user is everything
 * before the first colon (non-empty, at most AUTH_USER_MAX bytes, no
 * control characters, case-sensitive); the hash is the rest of the line
 * without trailing blanks, and must be one that libxcrypt's
 * crypt_checksalt() calls OK (so `$y$`, `$gy$`, `$7$`, `$6$`, `$2b$`;
 * legacy methods such as DES, MD5 and, in this libxcrypt, `$5$` are
 * refused), with a checksum of the method's length where it is known.
 * A user may appear once.
 *
 * On success returns 0 and stores a new table in *out (free with
 * auth_table_free).  On error returns -EINVAL (a bad line) or -ENOMEM,
 * leaves *out alone and writes "NAME:LINE: message" (or "NAME: message")
 * into err.  No I/O, no logging, no globals.
 */
int auth_parse_users(const char *text, size_t len, const char *name,
                     struct auth_table **out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

void auth_table_free(struct auth_table *t);
size_t auth_table_count(const struct auth_table *t);
/* The stored hash of user, or NULL (valid until the table is freed). */
const char *auth_table_hash(const struct auth_table *t, const char *user);
/* The hash an unknown user is checked against: the first hash of the
 * method most used in the table, or a built-in yescrypt hash when the
 * table is empty.  Unknown users never succeed, whatever the password. */
const char *auth_table_dummy(const struct auth_table *t);

/* ---- the checker (loop thread only) ---------------------------------- */

struct auth_limits {
  int max_running;        /* hashes on the thread pool at once; 0: 2 */
  int max_waiting;        /* checks queued behind them; 0: 64 */
  uint64_t fail_delay_ms; /* delay before a failure is answered; 0: 1000 */
};

/*
 * Loads the users file at path (read synchronously: a start-up step) and
 * returns a checker on loop with the default limits.  path is copied.
 * Returns NULL with err set to "PATH:LINE: message", "cannot read PATH:
 * reason", "PATH: too large" or "out of memory".
 */
struct auth *auth_new(uv_loop_t *loop, const char *path, char *err,
                      size_t errlen) __attribute__((warn_unused_result));

/*
 * Ends the checker: every pending check's callback runs now, before this
 * returns, with AUTH_CANCELED; then the requests' handles are closed and
 * the memory is released from the close callbacks (and, for hashes still
 * running on the pool, when they finish), so run the loop afterwards.
 */
void auth_free(struct auth *a);

/* Changes the limits (0 fields keep the defaults).  Checks already
 * waiting or running are not affected until the next one starts. */
void auth_set_limits(struct auth *a, const struct auth_limits *l);

/*
 * Reads the users file again (SIGHUP).  On success swaps in the new table
 * and returns 0; checks that have not started yet use it.  On error keeps
 * the old table, returns -EINVAL, -ENOMEM or -errno from reading, with err
 * set as for auth_new().  Reads the file on the calling thread.
 */
int auth_reload(struct auth *a, char *err, size_t errlen)
    __attribute__((warn_unused_result));

size_t auth_user_count(const struct auth *a);

/*
 * The answer to a check.  user is the name given to auth_check (a copy,
 * valid only during the call).  req must not be used after the callback
 * starts (it is freed).
 */
typedef void (*auth_cb)(struct auth_req *req, enum auth_status st,
                        const char *user, void *data);

/*
 * Checks pass for user.  Both strings are copied (the password copy is
 * wiped once hashed and again on free), so the caller may wipe its own at
 * once.  On 0, *reqp (if reqp is not NULL) is the request, valid until the
 * callback starts, for auth_cancel().  Errors (the callback never runs):
 * UV_EBUSY when max_waiting checks are already queued (answer with a
 * temporary error), UV_ENOMEM, UV_EINVAL (NULL argument), UV_ECANCELED
 * when the checker is being freed, or what uv_queue_work() returned.
 */
int auth_check(struct auth *a, const char *user, const char *pass, auth_cb cb,
               void *data, struct auth_req **reqp)
    __attribute__((warn_unused_result));

/*
 * The session that asked went away: the callback runs now, before this
 * returns, with AUTH_CANCELED, and req is gone.  A hash already running on
 * the pool finishes there (its result is thrown away).  Must not be called
 * once the callback has started.
 */
void auth_cancel(struct auth_req *req);

/* Counters, for logs and tests. */
struct auth_stats {
  uint64_t checks;      /* accepted by auth_check */
  uint64_t crypt_calls; /* crypt_rn() calls made on the pool */
  uint64_t ok, failed, tempfail, canceled, busy;
  int running;        /* hashes submitted to the pool now */
  int waiting;        /* checks in the FIFO now */
  int max_in_crypt;   /* most crypt_rn() calls seen running at once */
  int max_running_hw; /* most checks submitted at once */
};

void auth_get_stats(const struct auth *a, struct auth_stats *out);

#endif
