/*
 * admin/dispatch: the admin module's life cycle and its dispatcher.
 * Opens and closes the admin socket, splits each command line into words
 * and hands them to the command's function (the table below), keeps the
 * requests waiting on the store (the memory goes with the last of them
 * after admin_stop), and answers the `status` requests that waited for
 * the queue count (admin_set_loading).
 */
#include "relay/admin/internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <uv.h>

#include "log.h"
#include "loop/admin_socket.h"
#include "queue/store.h"

/* ---- requests waiting on the store ------------------------------------- */

struct admin_req *adm_req_new(struct admin *a, struct admin_client *c,
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
  if (a->stopped && !a->reqs) {
    adm_free_targets(a->tgt, a->ntgt);
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
void adm_req_finish(struct admin_req *r) {
  struct admin *a = r->a;
  req_end(r);
  admin_maybe_free(a);
}

/* Starts a store request for a command; on a refusal answers at once. */
struct admin_req *adm_start_req(struct admin *a, struct admin_client *c,
                                const char *id) {
  struct admin_req *r = adm_req_new(a, c, id);
  if (!r) {
    adm_reply_error(c, "out of memory", NULL);
    admin_socket_end(c);
  }
  return r;
}

/* ---- the dispatcher ---------------------------------------------------- */

struct admin_cmd {
  const char *verb;
  int min_args, max_args;
  int needs_id; /* every argument is a queue id */
  void (*run)(struct admin *a, struct admin_client *c, char **argv, int argc);
  const char *usage; /* the arguments, for "usage: VERB ..." */
};

#define NF (ADMIN_ARGS_MAX - 1) /* filter words at most (5 make sense) */
static const struct admin_cmd commands[] = {
    {"status", 0, 0, 0, adm_cmd_status, ""},
    {"queue", 0, NF, 0, adm_cmd_queue, " [FILTER...]"},
    {"show", 1, 1, 1, adm_cmd_show, " ID"},
    {"flush", 0, NF, 0, adm_cmd_flush, " [ID | FILTER...]"},
    {"delete", 1, NF, 0, adm_cmd_delete, " ID | FILTER..."},
    {"hold", 1, NF, 0, adm_cmd_hold, " ID | FILTER..."},
    {"release", 1, NF, 0, adm_cmd_release, " ID | FILTER..."},
    {"pause", 0, 0, 0, adm_cmd_pause, ""},
    {"resume", 0, 0, 0, adm_cmd_resume, ""},
    {"suspend", 1, 2, 0, adm_cmd_suspend, " DESTINATION [SECONDS]"},
    {"unsuspend", 1, 1, 0, adm_cmd_unsuspend, " DESTINATION"},
    {"drain", 0, 2, 0, adm_cmd_drain, " [[HOST]:PORT] [TIMEOUT_S] | cancel"},
    {"tlsrpt", 0, 0, 0, adm_cmd_tlsrpt, ""},
};

static int id_valid(const char *s);

int adm_bad_id(struct admin_client *c, const char *id) {
  if (id_valid(id))
    return 0;
  adm_reply_error(c, "invalid message id", id);
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
    adm_reply_error(c, "command line too long", NULL);
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
    adm_reply_error(c, "empty command", NULL);
    admin_socket_end(c);
    return;
  }
  const struct admin_cmd *cmd = NULL;
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (strcasecmp(argv[0], commands[i].verb) == 0)
      cmd = &commands[i];
  if (!cmd) {
    adm_reply_error(c, "unknown command", argv[0]);
    admin_socket_end(c);
    return;
  }
  int nargs = argc - 1;
  if (nargs < cmd->min_args || nargs > cmd->max_args) {
    char msg[64];
    snprintf(msg, sizeof msg, "usage: %s%s", cmd->verb, cmd->usage);
    adm_reply_error(c, msg, NULL);
    admin_socket_end(c);
    return;
  }
  if (cmd->needs_id && nargs > 0 && !id_valid(argv[1])) {
    adm_reply_error(c, "invalid message id", argv[1]);
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
  adm_restore_suspensions(a);
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
      adm_reply_status(a, r->c);
      adm_req_finish(r);
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
