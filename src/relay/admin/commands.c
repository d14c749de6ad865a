/*
 * admin/commands: the simple commands, answered from memory or by one
 * store request: status, show ID, delete|hold|release|flush ID, flush,
 * pause and resume.  Their filtered forms go to admin/bulk.c.  The
 * scheduler and the store are kept in step: a change the store refuses is
 * undone in the scheduler.
 */
#include "relay/admin/internal.h"

#include <jansson.h>
#include <stdint.h>
#include <time.h>

#include "log.h"
#include "loop/admin_socket.h"
#include "queue/sched.h"
#include "queue/store.h"
#include "relay/stats.h"

#ifndef MAILHOP_VERSION
#define MAILHOP_VERSION "unknown"
#endif

/* Writes the status line (does not end the reply): the same snapshot as
 * GET /metrics (relay/stats.h), so they agree; while the queue loads it
 * includes what the load has still to hand over (stats_set_loading). */
void adm_reply_status(struct admin *a, struct admin_client *c) {
  struct stats_snapshot sn;
  stats_snapshot(a->stats, a->sched, a->started_at, (int64_t)time(NULL), &sn);
  json_t *j = json_pack(
      "{s:s, s:I, s:i, s:i, s:b, s:b, s:{s:I, s:I, s:I, s:I, s:I}, "
      "s:{s:I, s:I, s:I, s:I}}",
      "version", MAILHOP_VERSION, "uptime_s", (json_int_t)sn.uptime_s,
      "sessions", sn.sessions, "outbound", sn.outbound, "paused", sn.paused,
      "accepting", sn.accepting, "queue", "messages",
      (json_int_t)sn.queue_messages, "recipients",
      (json_int_t)sn.queue_recipients, "deferred",
      (json_int_t)sn.queue_deferred, "held", (json_int_t)sn.queue_held,
      "oldest_age_s", (json_int_t)sn.oldest_age_s, "counters", "received",
      (json_int_t)sn.received, "delivered", (json_int_t)sn.delivered,
      "deferred", (json_int_t)sn.deferred, "bounced", (json_int_t)sn.bounced);
  /* Only while it is true: the key set of CONTRACT §5 stays as it is. */
  if (j && a->loading)
    json_object_set_new(j, "loading", json_true());
  if (j && json_object_set_new(j, "suspended", adm_suspended_json(a)) < 0) {
    json_decref(j);
    j = NULL;
  }
  adm_reply_json(c, j);
}

void adm_cmd_status(struct admin *a, struct admin_client *c, char **argv,
                    int argc) {
  (void)argv;
  (void)argc;
  if (a->loading && !a->counted) {
    /* Right after start the count of the queue is not known yet (it is a
     * moment away on the read lane): wait for it rather than answer with
     * figures that are wrong. */
    struct admin_req *r = adm_req_new(a, c, NULL);
    if (r) {
      r->wait_status = 1;
      return;
    }
  }
  adm_reply_status(a, c);
  admin_socket_end(c);
}

static void on_show(struct store *st, int status, const struct store_msg *msg,
                    void *data) {
  struct admin_req *r = data;
  (void)st;
  if (status < 0) {
    adm_store_error(r->c, "show", status, r->id);
    adm_req_finish(r);
    return;
  }
  json_t *o = adm_message_json(r->a, msg);
  if (o) {
    json_t *h = adm_jstr_or_null(msg->headers);
    if (!h || json_object_set_new(o, "headers", h) < 0) {
      json_decref(o);
      o = NULL;
    }
  }
  json_t *j = o ? json_pack("{s:o}", "message", o) : NULL;
  adm_reply_json(r->c, j);
  adm_req_finish(r);
}

static void refused(struct admin_req *r, const char *what, int rc) {
  adm_store_error(r->c, what, rc, r->id);
  adm_req_finish(r);
}

void adm_cmd_show(struct admin *a, struct admin_client *c, char **argv,
                  int argc) {
  (void)argc;
  struct admin_req *r = adm_start_req(a, c, argv[0]);
  if (!r)
    return;
  int rc = store_show(a->st, r->id, on_show, r);
  if (rc < 0)
    refused(r, "show", rc);
}

static void on_deleted(struct store *st, int status, void *data) {
  struct admin_req *r = data;
  struct admin *a = r->a;
  (void)st;
  if (status == 0 && !a->stopped) {
    /* The store confirmed: now the scheduler forgets it.  An attempt in
     * flight is told (job->removed) and its outcome is dropped. */
    sched_remove(a->sched, r->id);
  } else if (status < 0 && !a->stopped && !r->held) {
    /* Still in the store (disk full, database error): undo the hold so
     * the scheduler goes on exactly as before the command. */
    sched_hold(a->sched, r->id, 0);
  }
  if (status < 0)
    adm_store_error(r->c, "delete", status, r->id);
  else
    adm_reply_ok(r->c);
  adm_req_finish(r);
}

/* While the queue loads, a message the load has not reached yet is not in
 * the scheduler, and the batch that holds it may already have been read:
 * changing it in the store now could be undone when that batch arrives.
 * Such a command is refused (answered at once); returns 1 then. */
static int refuse_while_loading(struct admin *a, struct admin_client *c,
                                const char *id) {
  if (!a->loading || !id || sched_has_message(a->sched, id))
    return 0;
  adm_reply_error(c, "the queue is still loading, try again", id);
  admin_socket_end(c);
  return 1;
}

void adm_cmd_delete(struct admin *a, struct admin_client *c, char **argv,
                    int argc) {
  if (!adm_is_single_id(argv, argc)) {
    adm_bulk_start(a, c, BULK_DELETE, argv, argc);
    return;
  }
  if (adm_bad_id(c, argv[0]))
    return;
  if (refuse_while_loading(a, c, argv[0]))
    return;
  struct admin_req *r = adm_start_req(a, c, argv[0]);
  if (!r)
    return;
  /* The scheduler changes only once the store has confirmed (issue 12:
   * a failed delete used to leave a message in the store that the
   * scheduler had forgotten).  Meanwhile it is held there, so no attempt
   * starts after the command; r->held remembers whether it already was. */
  r->held = sched_held(a->sched, r->id) == 1;
  if (!r->held)
    sched_hold(a->sched, r->id, 1);
  int rc = store_delete(a->st, r->id, on_deleted, r);
  if (rc < 0) {
    if (!r->held)
      sched_hold(a->sched, r->id, 0);
    refused(r, "delete", rc);
  }
}

static void on_held(struct store *st, int status, void *data) {
  struct admin_req *r = data;
  struct admin *a = r->a;
  (void)st;
  if (status < 0) {
    if (r->held && !a->stopped)
      sched_hold(a->sched, r->id, 0); /* undo: the store still says no */
    adm_store_error(r->c, r->held ? "hold" : "release", status, r->id);
  } else {
    if (!r->held && !a->stopped)
      sched_hold(a->sched, r->id, 0);
    adm_reply_ok(r->c);
  }
  adm_req_finish(r);
}

static void set_held(struct admin *a, struct admin_client *c, const char *id,
                     int held) {
  if (refuse_while_loading(a, c, id))
    return;
  struct admin_req *r = adm_start_req(a, c, id);
  if (!r)
    return;
  r->held = held;
  /* Hold takes effect in memory at once (no dispatch from now on); release
   * waits until the flag is durable. */
  if (held)
    sched_hold(a->sched, r->id, 1);
  int rc = store_set_held(a->st, r->id, held, on_held, r);
  if (rc < 0) {
    if (held)
      sched_hold(a->sched, r->id, 0);
    refused(r, held ? "hold" : "release", rc);
  }
}

void adm_cmd_hold(struct admin *a, struct admin_client *c, char **argv,
                  int argc) {
  if (!adm_is_single_id(argv, argc))
    adm_bulk_start(a, c, BULK_HOLD, argv, argc);
  else if (!adm_bad_id(c, argv[0]))
    set_held(a, c, argv[0], 1);
}

void adm_cmd_release(struct admin *a, struct admin_client *c, char **argv,
                     int argc) {
  if (!adm_is_single_id(argv, argc))
    adm_bulk_start(a, c, BULK_RELEASE, argv, argc);
  else if (!adm_bad_id(c, argv[0]))
    set_held(a, c, argv[0], 0);
}

void adm_cmd_flush(struct admin *a, struct admin_client *c, char **argv,
                   int argc) {
  if (argc > 0 && !adm_is_single_id(argv, argc)) {
    adm_bulk_start(a, c, BULK_FLUSH, argv, argc);
    return;
  }
  if (argc > 0 && adm_bad_id(c, argv[0]))
    return;
  if (refuse_while_loading(a, c, argc ? argv[0] : NULL))
    return;
  int n = sched_flush(a->sched, argc ? argv[0] : NULL);
  if (n < 0) {
    adm_reply_error(c, "no such message", argc ? argv[0] : NULL);
  } else {
    json_t *j = json_pack("{s:b, s:i}", "ok", 1, "flushed", n);
    adm_reply_json(c, j);
  }
  admin_socket_end(c);
}

void adm_cmd_pause(struct admin *a, struct admin_client *c, char **argv,
                   int argc) {
  (void)argv;
  (void)argc;
  sched_pause(a->sched, 1);
  log_msg(LOG_INFO, "admin_pause", "outbound delivery paused");
  adm_reply_ok(c);
  admin_socket_end(c);
}

void adm_cmd_resume(struct admin *a, struct admin_client *c, char **argv,
                    int argc) {
  (void)argv;
  (void)argc;
  sched_pause(a->sched, 0);
  log_msg(LOG_INFO, "admin_resume", "outbound delivery resumed");
  adm_reply_ok(c);
  admin_socket_end(c);
}
