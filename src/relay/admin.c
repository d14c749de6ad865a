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
#include "config.h"
#include "proto/qfilter.h"
#include "proto/routes.h"
#include "proto/text.h"
#include "queue/sched.h"
#include "queue/store.h"
#include "relay/stats.h"

#ifndef MAILHOP_VERSION
#define MAILHOP_VERSION "unknown"
#endif

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
    /* 0 means "due now" in the store; final recipients have no next.
     * The scheduler knows better when the destination holds it back
     * (backoff, suspension, rate limit): "now" would be wrong then. */
    int64_t next = final ? 0 : r->next_attempt_at;
    if (!final && a && !a->stopped) {
      int64_t t = sched_rcpt_next(a->sched, m->id, r->idx);
      int64_t secs = (t + 999) / 1000; /* never before the real time */
      if (t > sched_now(a->sched) && secs > next)
        next = secs;
    }
    bad |= json_object_set_new(ro, "next_attempt_at",
                               next == 0 ? json_null() : jtime(next));
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

static void free_targets(struct admin_target *t, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(t[i].hosts);
  free(t);
}

static void admin_maybe_free(struct admin *a) {
  if (a->stopped && !a->reqs) {
    free_targets(a->tgt, a->ntgt);
    free(a->susp);
    free(a);
  }
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
  free(r->bulk);
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

static int is_single_id(char **argv, int argc);

struct admin_cmd {
  const char *verb;
  int min_args, max_args;
  int needs_id; /* every argument is a queue id */
  void (*run)(struct admin *a, struct admin_client *c, char **argv, int argc);
  const char *usage; /* the arguments, for "usage: VERB ..." */
};

/* `"suspended": [{"destination", "until"}]` of status (CONTRACT §5): the
 * names as the operator gave them (canonical), in name order; NULL on
 * ENOMEM. */
static int susp_cmp(const void *x, const void *y) {
  return strcmp((*(const struct admin_susp *const *)x)->name,
                (*(const struct admin_susp *const *)y)->name);
}

static json_t *suspended_json(struct admin *a) {
  json_t *arr = json_array();
  if (!arr || a->stopped || a->nsusp == 0)
    return arr;
  const struct admin_susp **ss = calloc(a->nsusp, sizeof *ss);
  if (!ss) {
    json_decref(arr);
    return NULL;
  }
  int64_t now = sched_now(a->sched);
  size_t n = 0;
  for (size_t i = 0; i < a->nsusp; i++)
    if (a->susp[i].until > now)
      ss[n++] = &a->susp[i];
  if (n > 1)
    qsort(ss, n, sizeof *ss, susp_cmp);
  int bad = 0;
  for (size_t i = 0; i < n && !bad; i++) {
    const char *d = ss[i]->name;
    json_t *o = json_pack("{s:o, s:o}", "destination", jstr_safe(d, strlen(d)),
                          "until", jtime((ss[i]->until + 999) / 1000));
    bad = !o || json_array_append_new(arr, o) < 0;
  }
  free(ss);
  if (bad) {
    json_decref(arr);
    return NULL;
  }
  return arr;
}

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
  if (j && json_object_set_new(j, "suspended", suspended_json(a)) < 0) {
    json_decref(j);
    j = NULL;
  }
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

static void bulk_start(struct admin *a, struct admin_client *c,
                       enum bulk_kind kind, char **argv, int argc);

static void cmd_queue(struct admin *a, struct admin_client *c, char **argv,
                      int argc) {
  if (argc > 0) {
    bulk_start(a, c, BULK_LIST, argv, argc);
    return;
  }
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

/* The single-id form: refuses an id that cannot be one (1 when it did). */
static int bad_id(struct admin_client *c, const char *id);

static void cmd_delete(struct admin *a, struct admin_client *c, char **argv,
                       int argc) {
  if (!is_single_id(argv, argc)) {
    bulk_start(a, c, BULK_DELETE, argv, argc);
    return;
  }
  if (bad_id(c, argv[0]))
    return;
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
  if (!is_single_id(argv, argc))
    bulk_start(a, c, BULK_HOLD, argv, argc);
  else if (!bad_id(c, argv[0]))
    set_held(a, c, argv[0], 1);
}

static void cmd_release(struct admin *a, struct admin_client *c, char **argv,
                        int argc) {
  if (!is_single_id(argv, argc))
    bulk_start(a, c, BULK_RELEASE, argv, argc);
  else if (!bad_id(c, argv[0]))
    set_held(a, c, argv[0], 0);
}

static void cmd_flush(struct admin *a, struct admin_client *c, char **argv,
                      int argc) {
  if (argc > 0 && !is_single_id(argv, argc)) {
    bulk_start(a, c, BULK_FLUSH, argv, argc);
    return;
  }
  if (argc > 0 && bad_id(c, argv[0]))
    return;
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

/* ---- drain (CONTRACT §1, §5) -------------------------------------------- */

/* 1 when s is all digits (a TIMEOUT_S word), at most 9 of them. */
static int all_digits(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 9)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (s[i] < '0' || s[i] > '9')
      return 0;
  return 1;
}

static void cmd_drain(struct admin *a, struct admin_client *c, char **argv,
                      int argc) {
  int cancel = argc == 1 && strcasecmp(argv[0], "cancel") == 0;
  struct route_host to;
  int have_to = 0;
  int64_t timeout_s = 0;
  for (int i = 0; i < argc && !cancel; i++) {
    if (all_digits(argv[i]) && i == argc - 1) {
      timeout_s = strtoll(argv[i], NULL, 10);
    } else if (i == 0 && routes_parse_peer(argv[i], &to) == 0) {
      have_to = 1;
    } else {
      reply_error(c, "usage: drain [[HOST]:PORT] [TIMEOUT_S] | drain cancel",
                  NULL);
      admin_socket_end(c);
      return;
    }
  }
  char err[256] = "";
  if (!a->drain) {
    reply_error(c, "drain is not available", NULL);
  } else if (a->drain(a->drain_data, cancel, have_to ? &to : NULL, timeout_s,
                      err, sizeof err) < 0) {
    reply_error(c, err[0] ? err : "drain failed", NULL);
  } else {
    reply_ok(c);
  }
  admin_socket_end(c);
}

/* `tlsrpt` (CONTRACT §5): the running TLS-RPT counts. */
static void cmd_tlsrpt(struct admin *a, struct admin_client *c, char **argv,
                       int argc) {
  (void)argv;
  (void)argc;
  char *s = a->tlsrpt ? a->tlsrpt(a->tlsrpt_arg) : NULL;
  if (!s) {
    reply_error(c, a->tlsrpt ? "out of memory" : "TLS-RPT is not running",
                NULL);
  } else {
    admin_socket_write(c, s, strlen(s));
    admin_socket_write(c, "\n", 1);
    free(s);
  }
  admin_socket_end(c);
}

void admin_set_tlsrpt(struct admin *a, char *(*json)(void *arg), void *arg) {
  a->tlsrpt = json;
  a->tlsrpt_arg = arg;
}

/* ---- filtered commands (CONTRACT §1 FILTER, §5) ------------------------- */

/* 1 when the arguments are one message id (not a filter word). */
static int is_single_id(char **argv, int argc) {
  return argc == 1 && !strchr(argv[0], '=') && strcmp(argv[0], "all") != 0;
}

static void bulk_next(struct admin_req *r);

static const char *bulk_verb(enum bulk_kind k) {
  static const char *const v[] = {"queue", "delete", "hold", "release",
                                  "flush"};
  return v[k];
}

/* Ends a filtered action with its count. */
static void bulk_reply(struct admin_req *r) {
  json_t *j =
      json_pack("{s:b, s:I}", "ok", 1, "count", (json_int_t)r->bulk->count);
  reply_json(r->c, j);
  struct log_line l;
  log_begin(&l, LOG_INFO, "admin_bulk");
  log_str(&l, "command", bulk_verb(r->bulk->kind));
  log_int(&l, "count", r->bulk->count);
  log_end(&l);
  req_finish(r);
}

/* The store said no to a page: undo what the scheduler did for it, say how
 * far it got. */
static void bulk_fail(struct admin_req *r, int status) {
  struct admin_bulk *b = r->bulk;
  if (!r->a->stopped && (b->kind == BULK_DELETE || b->kind == BULK_HOLD))
    for (size_t i = 0; i < b->nids; i++)
      if (!b->was_held[i])
        sched_hold(r->a->sched, b->ids[i], 0);
  char msg[160];
  snprintf(msg, sizeof msg, "%s failed (%s) after %lld message%s",
           bulk_verb(b->kind), strerror(-status), b->count,
           b->count == 1 ? "" : "s");
  reply_error(r->c, msg, NULL);
  req_finish(r);
}

static void on_bulk_done(struct store *st, int status, const int *changed,
                         size_t n, void *data) {
  struct admin_req *r = data;
  struct admin_bulk *b = r->bulk;
  struct admin *a = r->a;
  (void)st;
  if (status < 0) {
    bulk_fail(r, status);
    return;
  }
  for (size_t i = 0; i < n && i < b->nids; i++) {
    b->count += changed[i] != 0;
    if (a->stopped)
      continue;
    if (b->kind == BULK_DELETE && changed[i])
      sched_remove(a->sched, b->ids[i]); /* the store confirmed */
    else if (b->kind == BULK_RELEASE && changed[i])
      sched_hold(a->sched, b->ids[i], 0);
    else if (!changed[i] && !b->was_held[i] &&
             (b->kind == BULK_DELETE || b->kind == BULK_HOLD))
      sched_hold(a->sched, b->ids[i], 0); /* gone meanwhile: undo */
  }
  b->nids = 0;
  if (b->last_page || a->stopped)
    bulk_reply(r);
  else
    bulk_next(r);
}

/* Writes one page of a filtered listing; 0, or -1 when the client left or
 * memory ran out (the listing stops). */
static int bulk_write_page(struct admin_req *r, const struct store_msg *msgs,
                           size_t n) {
  if (!admin_socket_alive(r->c))
    return -1;
  for (size_t i = 0; i < n; i++) {
    json_t *o = message_json(r->a, &msgs[i]);
    char *js = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!js) {
      r->err = -ENOMEM;
      return -1;
    }
    int w = 0;
    if (r->bulk->count++ > 0)
      w = admin_socket_write(r->c, ",", 1);
    if (w == 0)
      w = admin_socket_write(r->c, js, strlen(js));
    free(js);
    if (w < 0)
      return -1;
  }
  admin_socket_flush(r->c);
  return 0;
}

static void bulk_list_end(struct admin_req *r, int status) {
  if (r->err)
    status = r->err;
  if (status < 0) {
    char msg[96];
    snprintf(msg, sizeof msg, "queue listing failed (%s)", strerror(-status));
    json_t *e = json_string(msg);
    char *js = e ? json_dumps(e, JSON_ENCODE_ANY) : NULL;
    json_decref(e);
    admin_socket_write(r->c, "],\"error\":", 10);
    admin_socket_write(r->c, js ? js : "\"\"", js ? strlen(js) : 2);
    free(js);
    admin_socket_write(r->c, "}\n", 2);
  } else {
    admin_socket_write(r->c, "]}\n", 3);
  }
  req_finish(r);
}

static void on_select(struct store *st, int status,
                      const struct store_msg *msgs, size_t n, const char *next,
                      int done, void *data) {
  struct admin_req *r = data;
  struct admin_bulk *b = r->bulk;
  struct admin *a = r->a;
  (void)st;
  if (b->kind == BULK_LIST) {
    if (status < 0 || a->stopped) {
      bulk_list_end(r, status < 0 ? status : -ECANCELED);
      return;
    }
    if (bulk_write_page(r, msgs, n) < 0) {
      bulk_list_end(r, r->err ? r->err : 0);
      return;
    }
    if (done) {
      bulk_list_end(r, 0);
      return;
    }
    snprintf(b->after, sizeof b->after, "%s", next);
    bulk_next(r);
    return;
  }
  if (status < 0) {
    bulk_fail(r, status);
    return;
  }
  if (a->stopped) {
    bulk_reply(r);
    return;
  }
  snprintf(b->after, sizeof b->after, "%s", next);
  b->last_page = done;
  b->nids = 0;
  for (size_t i = 0; i < n && i < STORE_BULK_MAX; i++) {
    memcpy(b->ids[b->nids], msgs[i].id, STORE_ID_SIZE);
    b->was_held[b->nids] = sched_held(a->sched, msgs[i].id) == 1;
    b->nids++;
  }
  if (b->kind == BULK_FLUSH) {
    /* Memory only: a held or suspended message is not made due. */
    for (size_t i = 0; i < b->nids; i++)
      b->count += sched_flush_match(a->sched, b->ids[i]) > 0;
    b->nids = 0;
    if (done)
      bulk_reply(r);
    else
      bulk_next(r);
    return;
  }
  if (b->nids == 0) {
    if (done)
      bulk_reply(r);
    else
      bulk_next(r);
    return;
  }
  /* No attempt starts for a message being deleted or held from now on;
   * release waits for the store. */
  if (b->kind == BULK_DELETE || b->kind == BULK_HOLD)
    for (size_t i = 0; i < b->nids; i++)
      if (!b->was_held[i])
        sched_hold(a->sched, b->ids[i], 1);
  const char *ids[STORE_BULK_MAX];
  for (size_t i = 0; i < b->nids; i++)
    ids[i] = b->ids[i];
  enum store_bulk_action act = b->kind == BULK_DELETE ? STORE_BULK_DELETE
                               : b->kind == BULK_HOLD ? STORE_BULK_HOLD
                                                      : STORE_BULK_RELEASE;
  int rc = store_bulk(a->st, act, ids, b->nids, on_bulk_done, r);
  if (rc < 0)
    bulk_fail(r, rc);
}

/* Asks the store for the next page (reader lane: between two pages every
 * other request gets its turn). */
static void bulk_next(struct admin_req *r) {
  struct admin_bulk *b = r->bulk;
  int rc = store_select(r->a->st, &b->f, b->now, b->after, on_select, r);
  if (rc < 0) {
    if (b->kind == BULK_LIST)
      bulk_list_end(r, rc);
    else
      bulk_fail(r, rc);
  }
}

/* Starts a filtered command: parses the words (all ANDed), refuses a bulk
 * action without a filter or `all`. */
static void bulk_start(struct admin *a, struct admin_client *c,
                       enum bulk_kind kind, char **argv, int argc) {
  struct qfilter f;
  char err[160];
  if (qfilter_parse(&f, (const char *const *)argv, (size_t)argc, err,
                    sizeof err) < 0) {
    reply_error(c, err, NULL);
    admin_socket_end(c);
    return;
  }
  if (kind != BULK_LIST && !qfilter_has_criteria(&f) && !f.all) {
    reply_error(c, "a bulk action needs a filter or all", NULL);
    admin_socket_end(c);
    return;
  }
  if (kind != BULK_LIST && a->loading) {
    reply_error(c, "the queue is still loading, try again", NULL);
    admin_socket_end(c);
    return;
  }
  struct admin_req *r = start_req(a, c, NULL);
  if (!r)
    return;
  r->bulk = calloc(1, sizeof *r->bulk);
  if (!r->bulk) {
    reply_error(c, "out of memory", NULL);
    req_finish(r);
    return;
  }
  r->bulk->kind = kind;
  r->bulk->f = f;
  r->bulk->now = (int64_t)time(NULL);
  if (kind == BULK_LIST) {
    static const char head[] = "{\"messages\":[";
    admin_socket_write(c, head, sizeof head - 1);
  }
  bulk_next(r);
}

/* ---- suspend / unsuspend (CONTRACT §1, §5) ------------------------------ */

/*
 * What a destination name covers (CONTRACT §1 suspend: a recipient domain,
 * or a relayhost as written in the configuration).  A name is canonical
 * (routes_dest_canon: lower case) and covers these scheduler keys:
 *   - the name itself when it can be a recipient domain;
 *   - the key of every relayhost target it designates: the global
 *     relayhost (key "relayhost") and each routes_file route with a
 *     relayhost (its key, "#LINE" variants included), when the name is
 *     that key or designates its list (routes_dest_covers: an entry
 *     "[h]:p"/"h:p", its host without the port "[h]"/"h" meaning every
 *     port the list gives it, or the whole list).
 * A name that covers no key is not a destination.
 */
static int target_covers(const struct admin_target *t, const char *name) {
  return !strcmp(t->key, name) || routes_dest_covers(name, t->hosts, t->n);
}

/* Calls each(a, key, arg) for every key name covers (a key may come more
 * than once: routes that share it); returns how many calls. */
static size_t name_keys(struct admin *a, const char *name,
                        void (*each)(struct admin *, const char *, void *),
                        void *arg) {
  size_t n = 0;
  if (routes_dest_is_domain(name)) {
    if (each)
      each(a, name, arg);
    n++;
  }
  for (size_t i = 0; i < a->ntgt; i++)
    if (target_covers(&a->tgt[i], name)) {
      if (each)
        each(a, a->tgt[i].key, arg);
      n++;
    }
  return n;
}

/* 1 when name covers key. */
static int name_covers_key(const struct admin *a, const char *name,
                           const char *key) {
  if (!strcmp(name, key) && routes_dest_is_domain(name))
    return 1;
  for (size_t i = 0; i < a->ntgt; i++)
    if (!strcmp(a->tgt[i].key, key) && target_covers(&a->tgt[i], name))
      return 1;
  return 0;
}

static struct admin_susp *susp_find(struct admin *a, const char *name) {
  int64_t now = sched_now(a->sched);
  for (size_t i = 0; i < a->nsusp; i++)
    if (a->susp[i].until > now && !strcmp(a->susp[i].name, name))
      return &a->susp[i];
  return NULL;
}

/* Sets name's suspension to until (0: none), reusing a slot that is over;
 * 0, -ENOSPC, -ENOMEM. */
static int susp_set(struct admin *a, const char *name, int64_t until) {
  int64_t now = sched_now(a->sched);
  struct admin_susp *free_slot = NULL;
  for (size_t i = 0; i < a->nsusp; i++) {
    struct admin_susp *e = &a->susp[i];
    if (e->until > now && !strcmp(e->name, name)) {
      e->until = until;
      return 0;
    }
    if (e->until <= now && !free_slot)
      free_slot = e;
  }
  if (until <= now)
    return 0;
  if (!free_slot) {
    if (a->nsusp >= ADMIN_SUSP_MAX)
      return -ENOSPC;
    if (a->nsusp == a->capsusp) {
      size_t cap = a->capsusp ? a->capsusp * 2 : 8;
      struct admin_susp *ns = realloc(a->susp, cap * sizeof *ns);
      if (!ns)
        return -ENOMEM;
      a->susp = ns;
      a->capsusp = cap;
    }
    free_slot = &a->susp[a->nsusp++];
  }
  snprintf(free_slot->name, sizeof free_slot->name, "%s", name);
  free_slot->until = until;
  return 0;
}

/* Gives the scheduler key's suspension the latest end among the names
 * that cover it (none: lifted).  Records the first error in *arg. */
static void key_apply(struct admin *a, const char *key, void *arg) {
  int64_t now = sched_now(a->sched), until = 0;
  for (size_t i = 0; i < a->nsusp; i++)
    if (a->susp[i].until > now && a->susp[i].until > until &&
        name_covers_key(a, a->susp[i].name, key))
      until = a->susp[i].until;
  int rc = 0;
  if (until > 0)
    rc = sched_suspend(a->sched, key, until);
  else if (sched_suspended_until(a->sched, key) > 0)
    sched_unsuspend(a->sched, key);
  int *err = arg;
  if (rc < 0 && err && *err == 0)
    *err = rc;
}

/* Brings every key name covers in line with the suspensions; 0 or the
 * first scheduler error. */
static int name_apply(struct admin *a, const char *name) {
  int err = 0;
  name_keys(a, name, key_apply, &err);
  return err;
}

/* Puts name back as it was before a command (prev_until 0: none). */
static void susp_undo(struct admin *a, const char *name, int64_t prev_until) {
  susp_set(a, name, prev_until > sched_now(a->sched) ? prev_until : 0);
  name_apply(a, name);
}

/* The canonical name of a destination argument, with the reason in why
 * when it is none (-1). */
static int dest_name(struct admin *a, const char *arg, char *name, size_t n,
                     const char **why) {
  if (routes_dest_canon(arg, name, n) < 0) {
    *why = "bad destination (empty, too long, or a blank or control "
           "character)";
    return -1;
  }
  if (name_keys(a, name, NULL, NULL) == 0) {
    *why = "bad destination (not a configured relayhost or route, nor a "
           "domain name)";
    return -1;
  }
  return 0;
}

static void on_suspend_stored(struct store *st, int status, void *data) {
  struct admin_req *r = data;
  struct admin *a = r->a;
  (void)st;
  if (status < 0) {
    /* Not durable: put the scheduler back as it was. */
    if (!a->stopped)
      susp_undo(a, r->dest, r->prev_until);
    char msg[96];
    snprintf(msg, sizeof msg, "suspend failed (%s)", strerror(-status));
    reply_error(r->c, msg, r->dest);
  } else {
    reply_ok(r->c);
  }
  req_finish(r);
}

static void cmd_suspend(struct admin *a, struct admin_client *c, char **argv,
                        int argc) {
  char name[SCHED_DEST_MAX + 1];
  const char *why;
  int64_t secs = ADMIN_SUSPEND_DEFAULT_S;
  if (dest_name(a, argv[0], name, sizeof name, &why) < 0) {
    reply_error(c, why, argv[0]);
    admin_socket_end(c);
    return;
  }
  if (argc > 1 && qfilter_duration(argv[1], &secs) < 0) {
    reply_error(c, "bad duration (seconds)", argv[1]);
    admin_socket_end(c);
    return;
  }
  struct admin_req *r = start_req(a, c, NULL);
  if (!r)
    return;
  snprintf(r->dest, sizeof r->dest, "%s", name);
  const struct admin_susp *old = susp_find(a, name);
  r->prev_until = old ? old->until : 0;
  int64_t until = sched_now(a->sched) + secs * 1000;
  /* In memory at once (no new attempt from now on), then durable. */
  int rc = susp_set(a, name, until);
  if (rc == 0)
    rc = name_apply(a, name);
  if (rc == 0)
    rc = store_suspend(a->st, name, (until + 999) / 1000, on_suspend_stored, r);
  if (rc < 0) {
    susp_undo(a, name, r->prev_until);
    reply_error(
        c, rc == -ENOSPC ? "too many suspended destinations" : "suspend failed",
        argv[0]);
    req_finish(r);
    return;
  }
  struct log_line l;
  log_begin(&l, LOG_INFO, "admin_suspend");
  log_str(&l, "destination", name);
  log_int(&l, "seconds", secs);
  log_end(&l);
}

static void on_unsuspend_stored(struct store *st, int status, void *data) {
  struct admin_req *r = data;
  struct admin *a = r->a;
  (void)st;
  if (status < 0) {
    char msg[96];
    snprintf(msg, sizeof msg, "unsuspend failed (%s)", strerror(-status));
    reply_error(r->c, msg, r->dest);
  } else {
    if (!a->stopped)
      susp_undo(a, r->dest, 0);
    reply_ok(r->c);
  }
  req_finish(r);
}

static void cmd_unsuspend(struct admin *a, struct admin_client *c, char **argv,
                          int argc) {
  (void)argc;
  char name[SCHED_DEST_MAX + 1];
  if (routes_dest_canon(argv[0], name, sizeof name) < 0 ||
      !susp_find(a, name)) {
    reply_error(c, "not suspended", argv[0]);
    admin_socket_end(c);
    return;
  }
  struct admin_req *r = start_req(a, c, NULL);
  if (!r)
    return;
  snprintf(r->dest, sizeof r->dest, "%s", name);
  int rc = store_suspend(a->st, name, 0, on_unsuspend_stored, r);
  if (rc < 0) {
    reply_error(c, "unsuspend failed", argv[0]);
    req_finish(r);
    return;
  }
  struct log_line l;
  log_begin(&l, LOG_INFO, "admin_unsuspend");
  log_str(&l, "destination", name);
  log_end(&l);
}

#define NF (ADMIN_ARGS_MAX - 1) /* filter words at most (5 make sense) */
static const struct admin_cmd commands[] = {
    {"status", 0, 0, 0, cmd_status, ""},
    {"queue", 0, NF, 0, cmd_queue, " [FILTER...]"},
    {"show", 1, 1, 1, cmd_show, " ID"},
    {"flush", 0, NF, 0, cmd_flush, " [ID | FILTER...]"},
    {"delete", 1, NF, 0, cmd_delete, " ID | FILTER..."},
    {"hold", 1, NF, 0, cmd_hold, " ID | FILTER..."},
    {"release", 1, NF, 0, cmd_release, " ID | FILTER..."},
    {"pause", 0, 0, 0, cmd_pause, ""},
    {"resume", 0, 0, 0, cmd_resume, ""},
    {"suspend", 1, 2, 0, cmd_suspend, " DESTINATION [SECONDS]"},
    {"unsuspend", 1, 1, 0, cmd_unsuspend, " DESTINATION"},
    {"drain", 0, 2, 0, cmd_drain, " [[HOST]:PORT] [TIMEOUT_S] | cancel"},
    {"tlsrpt", 0, 0, 0, cmd_tlsrpt, ""},
};

static int id_valid(const char *s);

static int bad_id(struct admin_client *c, const char *id) {
  if (id_valid(id))
    return 0;
  reply_error(c, "invalid message id", id);
  admin_socket_end(c);
  return 1;
}

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
    snprintf(msg, sizeof msg, "usage: %s%s", cmd->verb, cmd->usage);
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
    log_str(&l, cmd->needs_id ? "id" : "arg", argv[1]);
  log_end(&l);
  cmd->run(a, c, argv + 1, nargs);
}

/* ---- life cycle -------------------------------------------------------- */

static void on_susp_tidied(struct store *st, int status, void *data) {
  (void)st;
  (void)status;
  (void)data;
}

/* Suspensions kept in the queue database (CONTRACT §1: they survive a
 * restart) go back into the scheduler before the queue loads; those whose
 * time is over are dropped from the database.  A name that covers a
 * relayhost takes effect when admin_set_destinations() says what it is. */
static void restore_suspensions(struct admin *a) {
  const struct store_suspension *ss;
  size_t n = store_suspensions_at_open(a->st, &ss);
  int64_t now = sched_now(a->sched);
  for (size_t i = 0; i < n; i++) {
    int64_t until = ss[i].until * 1000;
    char name[SCHED_DEST_MAX + 1];
    int rc =
        until > now && routes_dest_canon(ss[i].dest, name, sizeof name) == 0
            ? susp_set(a, name, until)
            : -1;
    if (rc == 0)
      rc = name_apply(a, name);
    if (rc == 0) {
      struct log_line l;
      log_begin(&l, LOG_INFO, "suspended");
      log_str(&l, "destination", name);
      log_int(&l, "remaining_s", (until - now) / 1000);
      log_end(&l);
    } else if (store_suspend(a->st, ss[i].dest, 0, on_susp_tidied, NULL) < 0) {
      log_msg(LOG_WARN, "admin", "cannot drop an old suspension");
    }
  }
}

void admin_set_drain(struct admin *a, admin_drain_cb cb, void *data) {
  a->drain = cb;
  a->drain_data = data;
}

/* Adds a target (hosts copied); 0 or -ENOMEM. */
static int target_add(struct admin_target **tgt, size_t *n, size_t *cap,
                      const char *key, const struct route_host *hosts, int nh) {
  if (*n == *cap) {
    size_t c = *cap ? *cap * 2 : 8;
    struct admin_target *nt = realloc(*tgt, c * sizeof *nt);
    if (!nt)
      return -ENOMEM;
    *tgt = nt;
    *cap = c;
  }
  struct admin_target *t = &(*tgt)[*n];
  t->hosts = malloc((size_t)nh * sizeof *t->hosts);
  if (!t->hosts)
    return -ENOMEM;
  memcpy(t->hosts, hosts, (size_t)nh * sizeof *t->hosts);
  t->n = nh;
  snprintf(t->key, sizeof t->key, "%s", key);
  (*n)++;
  return 0;
}

static void key_reapply(struct admin *a, const char *key, void *arg) {
  (void)arg;
  key_apply(a, key, NULL);
}

void admin_set_destinations(struct admin *a, const struct config *cfg,
                            const struct routes *rs) {
  struct admin_target *tgt = NULL;
  size_t n = 0, cap = 0;
  int bad = 0;
  if (cfg && cfg->n_relayhost > 0) {
    struct route_host h[CONFIG_MAX_LIST];
    int nh = 0;
    for (int i = 0; i < cfg->n_relayhost && nh < CONFIG_MAX_LIST; i++, nh++) {
      snprintf(h[nh].host, sizeof h[nh].host, "%s", cfg->relayhost[i].host);
      h[nh].port = cfg->relayhost[i].port;
      h[nh].mx_lookup = cfg->relayhost[i].mx_lookup;
    }
    bad |= target_add(&tgt, &n, &cap, "relayhost", h, nh) < 0;
  }
  for (size_t i = 0; rs && i < rs->n && !bad; i++)
    if (rs->r[i].n_hosts > 0)
      bad |= target_add(&tgt, &n, &cap, rs->r[i].key, rs->r[i].hosts,
                        rs->r[i].n_hosts) < 0;
  if (bad) {
    free_targets(tgt, n);
    log_msg(LOG_WARN, "admin",
            "out of memory: suspend keeps the old relayhost names");
    return;
  }
  struct admin_target *old = a->tgt;
  size_t nold = a->ntgt;
  a->tgt = tgt;
  a->ntgt = n;
  /* Keys the old targets had and the new ones cover: in line with the
   * suspensions under the new names (never lifted in between). */
  int64_t now = sched_now(a->sched);
  int any = 0;
  for (size_t i = 0; i < a->nsusp; i++)
    any |= a->susp[i].until > now;
  if (any) {
    for (size_t i = 0; i < nold; i++)
      key_apply(a, old[i].key, NULL);
    for (size_t i = 0; i < a->nsusp; i++)
      if (a->susp[i].until > now)
        name_keys(a, a->susp[i].name, key_reapply, NULL);
  }
  free_targets(old, nold);
}

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
  restore_suspensions(a);
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
