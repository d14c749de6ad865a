/*
 * admin/bulk: the filtered commands, `queue FILTER...` and
 * `delete|hold|release|flush FILTER...` (CONTRACT §1 FILTER, §5).  They
 * page through store_select(): at most STORE_BATCH matches per reader-lane
 * job, each page acted on (scheduler at once, store_bulk() as one writer
 * request) before the next is asked for, so SMTP sessions and deliveries
 * go on between two pages.
 */
#include "relay/admin/internal.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "loop/admin_socket.h"
#include "proto/qfilter.h"
#include "queue/sched.h"
#include "queue/store.h"

/* ---- filtered commands (CONTRACT §1 FILTER, §5) ------------------------ */

/* 1 when the arguments are one message id (not a filter word). */
int adm_is_single_id(char **argv, int argc) {
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
  adm_reply_json(r->c, j);
  struct log_line l;
  log_begin(&l, LOG_INFO, "admin_bulk");
  log_str(&l, "command", bulk_verb(r->bulk->kind));
  log_int(&l, "count", r->bulk->count);
  log_end(&l);
  adm_req_finish(r);
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
  adm_reply_error(r->c, msg, NULL);
  adm_req_finish(r);
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
    json_t *o = adm_message_json(r->a, &msgs[i]);
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
  adm_req_finish(r);
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
void adm_bulk_start(struct admin *a, struct admin_client *c,
                    enum bulk_kind kind, char **argv, int argc) {
  struct qfilter f;
  char err[160];
  if (qfilter_parse(&f, (const char *const *)argv, (size_t)argc, err,
                    sizeof err) < 0) {
    adm_reply_error(c, err, NULL);
    admin_socket_end(c);
    return;
  }
  if (kind != BULK_LIST && !qfilter_has_criteria(&f) && !f.all) {
    adm_reply_error(c, "a bulk action needs a filter or all", NULL);
    admin_socket_end(c);
    return;
  }
  if (kind != BULK_LIST && a->loading) {
    adm_reply_error(c, "the queue is still loading, try again", NULL);
    admin_socket_end(c);
    return;
  }
  struct admin_req *r = adm_start_req(a, c, NULL);
  if (!r)
    return;
  r->bulk = calloc(1, sizeof *r->bulk);
  if (!r->bulk) {
    adm_reply_error(c, "out of memory", NULL);
    adm_req_finish(r);
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
