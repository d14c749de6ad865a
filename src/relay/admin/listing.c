/*
 * admin/listing: what the admin commands write back.  The reply helpers
 * (one line of JSON per reply, peer text made valid UTF-8, RFC 3339
 * times), the MESSAGE object of CONTRACT §5, store errors as replies, and
 * the streamed `queue` listing: `{"messages":[` at once, each store_list()
 * batch as it arrives, then `]}` (or `],"error":"..."}`).
 */
#include "relay/admin/internal.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loop/admin_socket.h"
#include "proto/text.h"
#include "queue/sched.h"
#include "queue/store.h"

void admin_time_rfc3339(long long t, char out[21]) {
  time_t tt = (time_t)t;
  struct tm tm;
  if (!gmtime_r(&tt, &tm) || strftime(out, 21, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
    strcpy(out, "1970-01-01T00:00:00Z");
}

/* ---- JSON helpers ------------------------------------------------------ */

/* A JSON string of peer bytes, invalid UTF-8 replaced by U+FFFD. */
json_t *adm_jstr_safe(const char *s, size_t n) {
  size_t cap = n * 3 + 1;
  char *buf = malloc(cap);
  if (!buf)
    return NULL;
  size_t len = text_utf8_sanitize(buf, cap, s, n);
  json_t *j = json_stringn(buf, len);
  free(buf);
  return j;
}

json_t *adm_jstr_or_null(const char *s) {
  return s ? adm_jstr_safe(s, strlen(s)) : json_null();
}

json_t *adm_jtime(int64_t t) {
  char buf[21];
  admin_time_rfc3339(t, buf);
  return json_string(buf);
}

/* Writes j as one line (compact, "\n" appended) and frees it.  A NULL j
 * (allocation failed somewhere while building) becomes an error reply. */
void adm_reply_json(struct admin_client *c, json_t *j) {
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

void adm_reply_error(struct admin_client *c, const char *msg, const char *arg) {
  json_t *j = json_object();
  if (!j) {
    adm_reply_json(c, NULL);
    return;
  }
  size_t n = strlen(msg) + (arg ? strlen(arg) + 2 : 0) + 1;
  char *text = malloc(n);
  if (!text) {
    json_decref(j);
    adm_reply_json(c, NULL);
    return;
  }
  snprintf(text, n, arg ? "%s: %s" : "%s", msg, arg);
  json_object_set_new(j, "error", adm_jstr_safe(text, strlen(text)));
  free(text);
  adm_reply_json(c, j);
}

void adm_reply_ok(struct admin_client *c) {
  json_t *j = json_pack("{s:b}", "ok", 1);
  adm_reply_json(c, j);
}

static const char *rcpt_state(const struct admin *a, const char *id,
                              const struct store_rcpt *r) {
  if ((r->state == STORE_RCPT_QUEUED || r->state == STORE_RCPT_DEFERRED) && a &&
      !a->stopped && sched_rcpt_delivering(a->sched, id, r->idx))
    return "delivering";
  return store_rcpt_state_name(r->state);
}

/* The MESSAGE object of CONTRACT §5; NULL on ENOMEM. */
json_t *adm_message_json(const struct admin *a, const struct store_msg *m) {
  json_t *o = json_object();
  json_t *rs = json_array();
  if (!o || !rs) {
    json_decref(o);
    json_decref(rs);
    return NULL;
  }
  int bad = 0;
  bad |= json_object_set_new(o, "id", adm_jstr_safe(m->id, strlen(m->id)));
  bad |= json_object_set_new(o, "sender", adm_jstr_or_null(m->sender));
  bad |= json_object_set_new(o, "size", json_integer(m->size));
  bad |= json_object_set_new(o, "received_at", adm_jtime(m->received_at));
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
    bad |= json_object_set_new(ro, "address", adm_jstr_or_null(r->address));
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
                               next == 0 ? json_null() : adm_jtime(next));
    bad |=
        json_object_set_new(ro, "last_error", adm_jstr_or_null(r->last_error));
    bad |= json_array_append_new(rs, ro);
  }
  bad |= json_object_set_new(o, "recipients", rs);
  if (bad) {
    json_decref(o);
    return NULL;
  }
  return o;
}

void adm_store_error(struct admin_client *c, const char *what, int status,
                     const char *id) {
  if (status == -ENOENT) {
    adm_reply_error(c, "no such message", id);
    return;
  }
  char msg[128];
  snprintf(msg, sizeof msg, "%s failed (%s)", what, strerror(-status));
  adm_reply_error(c, msg, id);
}

/* ---- the streamed `queue` listing -------------------------------------- */

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
      json_t *o = adm_message_json(r->a, &msgs[i]);
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
  adm_req_finish(r);
}

void adm_cmd_queue(struct admin *a, struct admin_client *c, char **argv,
                   int argc) {
  if (argc > 0) {
    adm_bulk_start(a, c, BULK_LIST, argv, argc);
    return;
  }
  struct admin_req *r = adm_req_new(a, c, NULL);
  if (!r) {
    adm_reply_error(c, "out of memory", NULL);
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
