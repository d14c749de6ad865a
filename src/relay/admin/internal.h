/*
 * admin/internal.h: what the admin module's files share, and nothing else
 * includes (relay/admin.h is the module's interface).
 *   dispatch.c  life cycle, the command table and line splitting, the
 *               requests waiting on the store
 *   listing.c   JSON replies, the MESSAGE object, the streamed `queue`
 *   commands.c  status, show, delete|hold|release|flush ID, flush, pause,
 *               resume
 *   bulk.c      the filtered commands, page by page through the store
 *   suspend.c   suspend / unsuspend: names, the keys they cover, kept in
 *               the queue database
 *   hooks.c     drain and tlsrpt, answered by the owner's callbacks
 * The module owns the admin socket server and one request record per
 * command waiting on the store; it borrows the store, the scheduler and
 * the stats.  It never touches SQLite itself (the store's pool jobs do)
 * and never blocks the loop: all of it runs on the loop thread, and a
 * `queue` listing is written as the store's batches arrive.
 */
#ifndef MAILHOP_RELAY_ADMIN_INTERNAL_H
#define MAILHOP_RELAY_ADMIN_INTERNAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "proto/qfilter.h"
#include "queue/sched.h"
#include "queue/store.h"
#include "relay/admin.h"

struct admin_client;
struct admin_socket;
struct route_host;

/* Ids on the admin socket: [A-Za-z0-9]{1,ADMIN_ID_MAX}. */
#define ADMIN_ID_MAX SCHED_ID_MAX
/* The verb's words at most: five filter words and room to say "too many". */
#define ADMIN_ARGS_MAX 8
/* Operator suspensions at most (each covers one or more scheduler keys). */
#define ADMIN_SUSP_MAX SCHED_SUSPEND_MAX
/* The default of `suspend DESTINATION` without SECONDS (CONTRACT §1). */
#define ADMIN_SUSPEND_DEFAULT_S 3600

/* A relayhost target (admin_set_destinations): a destination key and the
 * relayhost list it delivers to. */
struct admin_target {
  char key[SCHED_DEST_MAX + 1];
  struct route_host *hosts; /* owned */
  int n;
};

/* A suspension as the operator named it (canonical: routes_dest_canon). */
struct admin_susp {
  char name[SCHED_DEST_MAX + 1];
  int64_t until; /* unix ms of the scheduler's clock; <= now: over */
};

struct admin {
  uv_loop_t *loop;
  struct admin_socket *sock;
  struct store *st;
  struct sched *sched;
  const struct stats *stats;
  int64_t started_at;
  int stopped;
  int loading;                 /* the queue load is under way */
  int counted;                 /* pending is known */
  struct store_counts pending; /* what it has still to hand over */
  struct admin_req *reqs;      /* requests waiting on the store */
  struct admin_target *tgt;    /* owned; the relayhost targets */
  size_t ntgt;
  struct admin_susp *susp; /* owned; the operator's suspensions */
  size_t nsusp, capsusp;
  admin_drain_cb drain; /* serve's part of `drain`; NULL: refused */
  void *drain_data;
  char *(*tlsrpt)(void *arg); /* `tlsrpt` (CONTRACT §5); NULL: not set */
  void *tlsrpt_arg;
};

/* What a filtered command does with each page of matches. */
enum bulk_kind {
  BULK_LIST,
  BULK_DELETE,
  BULK_HOLD,
  BULK_RELEASE,
  BULK_FLUSH,
};

/* A filtered command: pages through store_select(), acting on each page
 * (at most STORE_BATCH messages: bounded work per loop turn) before it
 * asks for the next. */
struct admin_bulk {
  enum bulk_kind kind;
  struct qfilter f;
  int64_t now; /* unix seconds, fixed at the command */
  char after[STORE_ID_SIZE];
  int last_page;
  long long count;
  size_t nids;
  char ids[STORE_BULK_MAX][STORE_ID_SIZE];
  unsigned char was_held[STORE_BULK_MAX];
};

/* One command waiting on the store.  Owns nothing but its id copy; the
 * client stays valid until admin_socket_end(). */
struct admin_req {
  struct admin *a;
  struct admin_client *c;
  struct admin_req *prev, *next;
  struct store_job *job; /* a running listing, for store_cancel() */
  int cancelled;
  size_t count;    /* messages written so far (queue) */
  int err;         /* first error of a listing we stopped ourselves */
  int held;        /* hold / release */
  int wait_status; /* a status waiting for the queue count */
  char id[ADMIN_ID_MAX + 1];
  struct admin_bulk *bulk; /* a filtered command, owned */
  /* suspend / unsuspend */
  char dest[SCHED_DEST_MAX + 1];
  int64_t prev_until; /* the suspension before the command (ms), 0: none */
};

/* A command's function: argv are the words after the verb (argc of them,
 * within the table's bounds); it answers and ends the client, at once or
 * when the store's callback comes. */
typedef void adm_cmd_fn(struct admin *a, struct admin_client *c, char **argv,
                        int argc);

/* ---- dispatch.c -------------------------------------------------------- */

/* A request record linked into a->reqs (id copied when not NULL); NULL on
 * ENOMEM. */
struct admin_req *adm_req_new(struct admin *a, struct admin_client *c,
                              const char *id);
/* Ends the request: the reply is complete (unlinks, frees, and frees the
 * admin after admin_stop when it was the last). */
void adm_req_finish(struct admin_req *r);
/* Starts a store request for a command; on a refusal answers at once. */
struct admin_req *adm_start_req(struct admin *a, struct admin_client *c,
                                const char *id);
/* The single-id form: refuses an id that cannot be one (1 when it did). */
int adm_bad_id(struct admin_client *c, const char *id);

/* ---- listing.c --------------------------------------------------------- */

/* A JSON string of peer bytes, invalid UTF-8 replaced by U+FFFD; NULL on
 * ENOMEM. */
json_t *adm_jstr_safe(const char *s, size_t n);
/* adm_jstr_safe of a C string, or JSON null for NULL. */
json_t *adm_jstr_or_null(const char *s);
/* Unix seconds as an RFC 3339 UTC JSON string. */
json_t *adm_jtime(int64_t t);
/* Writes j as one line and frees it (NULL: an "out of memory" reply). */
void adm_reply_json(struct admin_client *c, json_t *j);
/* {"error": "MSG: ARG"} (arg may be NULL), made valid UTF-8. */
void adm_reply_error(struct admin_client *c, const char *msg, const char *arg);
/* {"ok": true} */
void adm_reply_ok(struct admin_client *c);
/* The MESSAGE object of CONTRACT §5; NULL on ENOMEM. */
json_t *adm_message_json(const struct admin *a, const struct store_msg *m);
/* A store failure as the reply ("no such message" for -ENOENT). */
void adm_store_error(struct admin_client *c, const char *what, int status,
                     const char *id);
adm_cmd_fn adm_cmd_queue;

/* ---- commands.c -------------------------------------------------------- */

/* Writes the status line (does not end the reply). */
void adm_reply_status(struct admin *a, struct admin_client *c);
adm_cmd_fn adm_cmd_status, adm_cmd_show, adm_cmd_delete, adm_cmd_hold,
    adm_cmd_release, adm_cmd_flush, adm_cmd_pause, adm_cmd_resume;

/* ---- bulk.c ------------------------------------------------------------ */

/* 1 when the arguments are one message id (not a filter word). */
int adm_is_single_id(char **argv, int argc);
/* Starts a filtered command (answers and ends the client itself). */
void adm_bulk_start(struct admin *a, struct admin_client *c,
                    enum bulk_kind kind, char **argv, int argc);

/* ---- suspend.c --------------------------------------------------------- */

/* The "suspended" array of status; NULL on ENOMEM. */
json_t *adm_suspended_json(struct admin *a);
/* Puts the suspensions kept in the queue database back (admin_start). */
void adm_restore_suspensions(struct admin *a);
/* Frees n targets and the array. */
void adm_free_targets(struct admin_target *t, size_t n);
adm_cmd_fn adm_cmd_suspend, adm_cmd_unsuspend;

/* ---- hooks.c ----------------------------------------------------------- */

adm_cmd_fn adm_cmd_drain, adm_cmd_tlsrpt;

#endif
