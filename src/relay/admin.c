/*
 * admin: the admin commands.  Owns the admin socket server and one request
 * record per command waiting on the store; borrows the store, the
 * scheduler and the stats.  It never touches SQLite itself (the store's
 * pool jobs do) and never blocks the loop: a `queue` listing is written as
 * the store's batches arrive.
 */
#include "relay/admin.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <uv.h>

#include "log.h"
#include "loop/admin_socket.h"
#include "proto/text.h"
#include "queue/sched.h"
#include "queue/store.h"
#include "relay/stats.h"

#ifndef MAILHOP_VERSION
#define MAILHOP_VERSION "unknown"
#endif

/* Ids on the admin socket: [A-Za-z0-9]{1,ADMIN_ID_MAX}. */
#define ADMIN_ID_MAX SCHED_ID_MAX
#define ADMIN_ARGS_MAX 3

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
};

void admin_time_rfc3339(long long t, char out[21]) {
  time_t tt = (time_t)t;
  struct tm tm;
  if (!gmtime_r(&tt, &tm) || strftime(out, 21, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
    strcpy(out, "1970-01-01T00:00:00Z");
}

/* ---- JSON helpers ------------------------------------------------------ */

/* A JSON string of peer bytes, invalid UTF-8 replaced by U+FFFD. */
static json_t *jstr_safe(const char *s, size_t n) {
  size_t cap = n * 3 + 1;
  char *buf = malloc(cap);
  if (!buf)
    return NULL;
  size_t len = text_utf8_sanitize(buf, cap, s, n);
  json_t *j = json_stringn(buf, len);
  free(buf);
  return j;
}

static json_t *jstr_or_null(const char *s) {
  return s ? jstr_safe(s, strlen(s)) : json_null();
}

static json_t *jtime(int64_t t) {
  char buf[21];
  admin_time_rfc3339(t, buf);
  return json_string(buf);
}

/* Writes j as one line (compact, "\n" appended) and frees it.  A NULL j
 * (allocation failed somewhere while building) becomes an error reply. */
static void reply_json(struct admin_client *c, json_t *j) {
  char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
  json_decref(j);
  if (!s) {
    static const char oom[] = "{\"error\":\"out of memory\"}\n";
    admin_socket_write(c, oom, sizeof oom - 1);
    return;
  }
  admin_socket_write(c, s, strlen(s));
  admin_socket_write(c, "\n", 1);
  free(s);
}

static void reply_error(struct admin_client *c, const char *msg,
                        const char *arg) {
  json_t *j = json_object();
  if (!j) {
    reply_json(c, NULL);
    return;
  }
  size_t n = strlen(msg) + (arg ? strlen(arg) + 2 : 0) + 1;
  char *text = malloc(n);
  if (!text) {
    json_decref(j);
    reply_json(c, NULL);
    return;
  }
  snprintf(text, n, arg ? "%s: %s" : "%s", msg, arg);
  json_object_set_new(j, "error", jstr_safe(text, strlen(text)));
  free(text);
  reply_json(c, j);
}

static void reply_ok(struct admin_client *c) {
  json_t *j = json_pack("{s:b}", "ok", 1);
  reply_json(c, j);
}

static const char *rcpt_state(const struct admin *a, const char *id,
                              const struct store_rcpt *r) {
  if ((r->state == STORE_RCPT_QUEUED || r->state == STORE_RCPT_DEFERRED) && a &&
      !a->stopped && sched_rcpt_delivering(a->sched, id, r->idx))
    return "delivering";
  return store_rcpt_state_name(r->state);
}

/* The MESSAGE object of CONTRACT §5; NULL on ENOMEM. */
static json_t *message_json(const struct admin *a, const struct store_msg *m) {
  json_t *o = json_object();
  json_t *rs = json_array();
  if (!o || !rs) {
    json_decref(o);
    json_decref(rs);
    return NULL;
  }
  int bad = 0;
  bad |= json_object_set_new(o, "id", jstr_safe(m->id, strlen(m->id)));
  bad |= json_object_set_new(o, "sender", jstr_or_null(m->sender));
  bad |= json_object_set_new(o, "size", json_integer(m->size));
  bad |= json_object_set_new(o, "received_at", jtime(m->received_at));
  bad |= json_object_set_new(o, "held", json_boolean(m->held));
  for (size_t i = 0; i < m->nrcpts; i++) {
    const struct store_rcpt *r = &m->rcpts[i];
    json_t *ro = json_object();
    if (!ro) {
      bad = 1;
      break;
    }
    int final =
        r->state == STORE_RCPT_DELIVERED || r->state == STORE_RCPT_BOUNCED;
    bad |= json_object_set_new(ro, "address", jstr_or_null(r->address));
    bad |=
        json_object_set_new(ro, "state", json_string(rcpt_state(a, m->id, r)));
    bad |= json_object_set_new(ro, "attempts", json_integer(r->attempts));
    /* 0 means "due now" in the store; final recipients have no next. */
    bad |= json_object_set_new(ro, "next_attempt_at",
                               final || r->next_attempt_at == 0
                                   ? json_null()
                                   : jtime(r->next_attempt_at));
    bad |= json_object_set_new(ro, "last_error", jstr_or_null(r->last_error));
    bad |= json_array_append_new(rs, ro);
  }
  bad |= json_object_set_new(o, "recipients", rs);
  if (bad) {
    json_decref(o);
    return NULL;
  }
  return o;
}

/* ---- requests waiting on the store ------------------------------------- */

static struct admin_req *req_new(struct admin *a, struct admin_client *c,
                                 const char *id) {
  struct admin_req *r = calloc(1, sizeof *r);
  if (!r)
    return NULL;
  r->a = a;
  r->c = c;
  if (id)
    snprintf(r->id, sizeof r->id, "%s", id);
  r->next = a->reqs;
  if (a->reqs)
    a->reqs->prev = r;
  a->reqs = r;
  return r;
}

static void admin_maybe_free(struct admin *a) {
  if (a->stopped && !a->reqs)
    free(a);
}

/* Unlinks and frees the request and ends its reply. */
static void req_end(struct admin_req *r) {
  struct admin *a = r->a;
  if (r->prev)
    r->prev->next = r->next;
  else
    a->reqs = r->next;
  if (r->next)
    r->next->prev = r->prev;
  admin_socket_end(r->c);
  free(r);
}

/* Ends the request: the reply is complete. */
static void req_finish(struct admin_req *r) {
  struct admin *a = r->a;
  req_end(r);
  admin_maybe_free(a);
}

static void store_error(struct admin_client *c, const char *what, int status,
                        const char *id) {
  if (status == -ENOENT) {
    reply_error(c, "no such message", id);
    return;
  }
  char msg[128];
  snprintf(msg, sizeof msg, "%s failed (%s)", what, strerror(-status));
  reply_error(c, msg, id);
}

/* ---- commands ---------------------------------------------------------- */

struct admin_cmd {
  const char *verb;
  int min_args, max_args;
  int needs_id; /* every argument is a queue id */
  void (*run)(struct admin *a, struct admin_client *c, char **argv, int argc);
};

/* Writes the status line (does not end the reply): the same snapshot as
 * GET /metrics (relay/stats.h), so they agree; while the queue loads it
 * includes what the load has still to hand over (stats_set_loading). */
static void reply_status(struct admin *a, struct admin_client *c) {
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
  reply_json(c, j);
}

static void cmd_status(struct admin *a, struct admin_client *c, char **argv,
                       int argc) {
  (void)argv;
  (void)argc;
  if (a->loading && !a->counted) {
    /* Right after start the count of the queue is not known yet (it is a
     * moment away on the read lane): wait for it rather than answer with
     * figures that are wrong. */
    struct admin_req *r = req_new(a, c, NULL);
    if (r) {
      r->wait_status = 1;
      return;
    }
  }
  reply_status(a, c);
  admin_socket_end(c);
}

static void on_list(struct store *st, int status, const struct store_msg *msgs,
                    size_t n, int done, void *data) {
  struct admin_req *r = data;
  (void)st;
  if (!r->cancelled && !admin_socket_alive(r->c)) {
    /* The client left: stop reading the queue for nobody. */
    r->cancelled = 1;
    if (!done)
      store_cancel(r->job);
  }
  if (!r->cancelled) {
    for (size_t i = 0; i < n; i++) {
      json_t *o = message_json(r->a, &msgs[i]);
      char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
      json_decref(o);
      if (!s) {
        r->err = -ENOMEM;
        r->cancelled = 1;
        if (!done)
          store_cancel(r->job);
        break;
      }
      int w = 0;
      if (r->count++ > 0)
        w = admin_socket_write(r->c, ",", 1);
      if (w == 0)
        w = admin_socket_write(r->c, s, strlen(s));
      free(s);
      if (w < 0) {
        r->cancelled = 1;
        if (!done)
          store_cancel(r->job);
        break;
      }
    }
    if (!r->cancelled)
      admin_socket_flush(r->c);
  }
  if (!done)
    return;
  r->job = NULL;
  if (r->err)
    status = r->err;
  if (status < 0 && status != -ECANCELED) {
    /* Close the array and say what went wrong: the line stays JSON. */
    char msg[96];
    snprintf(msg, sizeof msg, "queue listing failed (%s)", strerror(-status));
    json_t *e = json_string(msg);
    char *s = e ? json_dumps(e, JSON_ENCODE_ANY) : NULL;
    json_decref(e);
    admin_socket_write(r->c, "],\"error\":", 10);
    if (s)
      admin_socket_write(r->c, s, strlen(s));
    else
      admin_socket_write(r->c, "\"\"", 2);
    free(s);
    admin_socket_write(r->c, "}\n", 2);
  } else {
    admin_socket_write(r->c, "]}\n", 3);
  }
  req_finish(r);
}

static void cmd_queue(struct admin *a, struct admin_client *c, char **argv,
                      int argc) {
  (void)argv;
  (void)argc;
  struct admin_req *r = req_new(a, c, NULL);
  if (!r) {
    reply_error(c, "out of memory", NULL);
    admin_socket_end(c);
    return;
  }
  static const char head[] = "{\"messages\":[";
  admin_socket_write(c, head, sizeof head - 1);
  int rc = store_list(a->st, on_list, r, &r->job);
  if (rc < 0) {
    /* Nothing streamed: finish the (empty) line with the error. */
    r->job = NULL;
    on_list(a->st, rc, NULL, 0, 1, r);
  }
}

static void on_show(struct store *st, int status, const struct store_msg *msg,
                    void *data) {
  struct admin_req *r = data;
  (void)st;
  if (status < 0) {
    store_error(r->c, "show", status, r->id);
    req_finish(r);
    return;
  }
  json_t *o = message_json(r->a, msg);
  if (o) {
    json_t *h = jstr_or_null(msg->headers);
    if (!h || json_object_set_new(o, "headers", h) < 0) {
      json_decref(o);
      o = NULL;
    }
  }
  json_t *j = o ? json_pack("{s:o}", "message", o) : NULL;
  reply_json(r->c, j);
  req_finish(r);
}

/* Starts a store request for a command; on a refusal answers at once. */
static struct admin_req *start_req(struct admin *a, struct admin_client *c,
                                   const char *id) {
  struct admin_req *r = req_new(a, c, id);
  if (!r) {
    reply_error(c, "out of memory", NULL);
    admin_socket_end(c);
  }
  return r;
}

static void refused(struct admin_req *r, const char *what, int rc) {
  store_error(r->c, what, rc, r->id);
  req_finish(r);
}

static void cmd_show(struct admin *a, struct admin_client *c, char **argv,
                     int argc) {
  (void)argc;
  struct admin_req *r = start_req(a, c, argv[0]);
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
    store_error(r->c, "delete", status, r->id);
  else
    reply_ok(r->c);
  req_finish(r);
}

/* While the queue loads, a message the load has not reached yet is not in
 * the scheduler, and the batch that holds it may already have been read:
 * changing it in the store now could be undone when that batch arrives.
 * Such a command is refused (answered at once); returns 1 then. */
static int refuse_while_loading(struct admin *a, struct admin_client *c,
                                const char *id) {
  if (!a->loading || !id || sched_has_message(a->sched, id))
    return 0;
  reply_error(c, "the queue is still loading, try again", id);
  admin_socket_end(c);
  return 1;
}

static void cmd_delete(struct admin *a, struct admin_client *c, char **argv,
                       int argc) {
  (void)argc;
  if (refuse_while_loading(a, c, argv[0]))
    return;
  struct admin_req *r = start_req(a, c, argv[0]);
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
    store_error(r->c, r->held ? "hold" : "release", status, r->id);
  } else {
    if (!r->held && !a->stopped)
      sched_hold(a->sched, r->id, 0);
    reply_ok(r->c);
  }
  req_finish(r);
}

static void set_held(struct admin *a, struct admin_client *c, const char *id,
                     int held) {
  if (refuse_while_loading(a, c, id))
    return;
  struct admin_req *r = start_req(a, c, id);
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

static void cmd_hold(struct admin *a, struct admin_client *c, char **argv,
                     int argc) {
  (void)argc;
  set_held(a, c, argv[0], 1);
}

static void cmd_release(struct admin *a, struct admin_client *c, char **argv,
                        int argc) {
  (void)argc;
  set_held(a, c, argv[0], 0);
}

static void cmd_flush(struct admin *a, struct admin_client *c, char **argv,
                      int argc) {
  if (refuse_while_loading(a, c, argc ? argv[0] : NULL))
    return;
  int n = sched_flush(a->sched, argc ? argv[0] : NULL);
  if (n < 0) {
    reply_error(c, "no such message", argc ? argv[0] : NULL);
  } else {
    json_t *j = json_pack("{s:b, s:i}", "ok", 1, "flushed", n);
    reply_json(c, j);
  }
  admin_socket_end(c);
}

static void cmd_pause(struct admin *a, struct admin_client *c, char **argv,
                      int argc) {
  (void)argv;
  (void)argc;
  sched_pause(a->sched, 1);
  log_msg(LOG_INFO, "admin_pause", "outbound delivery paused");
  reply_ok(c);
  admin_socket_end(c);
}

static void cmd_resume(struct admin *a, struct admin_client *c, char **argv,
                       int argc) {
  (void)argv;
  (void)argc;
  sched_pause(a->sched, 0);
  log_msg(LOG_INFO, "admin_resume", "outbound delivery resumed");
  reply_ok(c);
  admin_socket_end(c);
}

static const struct admin_cmd commands[] = {
    {"status", 0, 0, 0, cmd_status},   {"queue", 0, 0, 0, cmd_queue},
    {"show", 1, 1, 1, cmd_show},       {"flush", 0, 1, 1, cmd_flush},
    {"delete", 1, 1, 1, cmd_delete},   {"hold", 1, 1, 1, cmd_hold},
    {"release", 1, 1, 1, cmd_release}, {"pause", 0, 0, 0, cmd_pause},
    {"resume", 0, 0, 0, cmd_resume},
};

static int id_valid(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > ADMIN_ID_MAX)
    return 0;
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
          (ch >= '0' && ch <= '9')))
      return 0;
  }
  return 1;
}

static void on_line(struct admin_client *c, const char *line, size_t len,
                    int status, void *data) {
  struct admin *a = data;
  if (status < 0) {
    reply_error(c, "command line too long", NULL);
    admin_socket_end(c);
    return;
  }
  char buf[ADMIN_SOCKET_LINE_MAX + 1];
  memcpy(buf, line, len + 1);
  char *argv[ADMIN_ARGS_MAX + 1];
  int argc = 0;
  char *save = NULL;
  for (char *w = strtok_r(buf, " \t", &save); w;
       w = strtok_r(NULL, " \t", &save)) {
    if (argc == ADMIN_ARGS_MAX + 1) {
      argc++;
      break;
    }
    argv[argc++] = w;
  }
  if (argc == 0) {
    reply_error(c, "empty command", NULL);
    admin_socket_end(c);
    return;
  }
  const struct admin_cmd *cmd = NULL;
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (strcasecmp(argv[0], commands[i].verb) == 0)
      cmd = &commands[i];
  if (!cmd) {
    reply_error(c, "unknown command", argv[0]);
    admin_socket_end(c);
    return;
  }
  int nargs = argc - 1;
  if (nargs < cmd->min_args || nargs > cmd->max_args) {
    char msg[64];
    snprintf(msg, sizeof msg, "usage: %s%s", cmd->verb,
             cmd->max_args == 0   ? ""
             : cmd->min_args == 0 ? " [ID]"
                                  : " ID");
    reply_error(c, msg, NULL);
    admin_socket_end(c);
    return;
  }
  if (cmd->needs_id && nargs > 0 && !id_valid(argv[1])) {
    reply_error(c, "invalid message id", argv[1]);
    admin_socket_end(c);
    return;
  }
  struct log_line l;
  log_begin(&l, LOG_DEBUG, "admin_command");
  log_str(&l, "command", cmd->verb);
  if (nargs > 0)
    log_str(&l, "id", argv[1]);
  log_end(&l);
  cmd->run(a, c, argv + 1, nargs);
}

/* ---- life cycle -------------------------------------------------------- */

struct admin *admin_start(uv_loop_t *loop, const char *path, struct store *st,
                          struct sched *sched, const struct stats *stats,
                          char *err, size_t errlen) {
  struct admin *a = calloc(1, sizeof *a);
  if (!a) {
    snprintf(err, errlen, "admin socket %s: out of memory", path);
    return NULL;
  }
  a->loop = loop;
  a->st = st;
  a->sched = sched;
  a->stats = stats;
  a->started_at = (int64_t)time(NULL);
  json_t *rj = json_pack("{s:s}", "error", "too many admin clients");
  char *reject = rj ? json_dumps(rj, JSON_COMPACT) : NULL;
  json_decref(rj);
  char line[128] = "";
  if (reject)
    snprintf(line, sizeof line, "%s\n", reject);
  free(reject);
  int rc = admin_socket_open(loop, path, on_line, a, line[0] ? line : NULL,
                             &a->sock, err, errlen);
  if (rc < 0) {
    free(a);
    return NULL;
  }
  struct log_line l;
  log_begin(&l, LOG_INFO, "admin_listening");
  log_str(&l, "path", path);
  log_end(&l);
  return a;
}

void admin_set_loading(struct admin *a, int loading,
                       const struct store_counts *pending) {
  a->loading = loading ? 1 : 0;
  a->counted = !loading || pending;
  if (loading && pending)
    a->pending = *pending;
  else
    memset(&a->pending, 0, sizeof a->pending);
  if (!a->counted || a->stopped)
    return;
  /* Answer the status requests that waited for the count. */
  struct admin_req *r = a->reqs, *next;
  for (; r; r = next) {
    next = r->next;
    if (r->wait_status) {
      reply_status(a, r->c);
      req_finish(r);
    }
  }
}

void admin_stop(struct admin *a) {
  a->stopped = 1;
  admin_socket_close(a->sock);
  a->sock = NULL;
  struct admin_req *next;
  for (struct admin_req *r = a->reqs; r; r = next) {
    next = r->next;
    if (r->job && !r->cancelled) {
      r->cancelled = 1;
      store_cancel(r->job);
    }
  }
  /* Status requests waiting for the count end unanswered (the socket is
   * closed). */
  for (struct admin_req *r = a->reqs; r; r = next) {
    next = r->next;
    if (r->wait_status)
      req_end(r);
  }
  admin_maybe_free(a);
}
