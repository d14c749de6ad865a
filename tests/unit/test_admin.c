/*
 * test_admin: the admin commands end to end on a real loop, a real store
 * in a temp dir and a real scheduler (its dispatch keeps the jobs, so
 * their recipients show as "delivering").  A client thread talks to the
 * socket with blocking code and checks the JSON replies with jansson; it
 * also runs the CLI (admin_cli_main) against the same socket.
 */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "relay/admin.h"
#include "cmd/admin_cli.h"
#include "check.h"
#include "cli.h"
#include "config.h"
#include "queue/sched.h"
#include "queue/store.h"
#include "relay/stats.h"

#define N_BULK 600 /* more than two store_list batches */

static uv_loop_t loop;
static struct store *st;
static struct sched *sc;
static struct admin *adm;
static struct stats stats;
static char dir[64], dbpath[128], sock_path[128];
static char id1[STORE_ID_SIZE], id2[STORE_ID_SIZE], id3[STORE_ID_SIZE];
static int64_t next2; /* unix seconds of id2's deferred recipient */
static uv_async_t done_async;
static uv_async_t loading_async; /* the client asks the loop to set loading */
static sem_t loading_sem;
static int loading_on;
static struct sched_job *jobs[64];
static int njobs;
static int pending;

/* ---- setup (loop thread) ---------------------------------------------- */

static void on_done(struct store *s, int status, void *data) {
  (void)s;
  (void)data;
  CHECK_INT(status, 0);
  pending--;
}

static void commit(char id[STORE_ID_SIZE], const char *sender, int nrcpts,
                   const char *body) {
  static char *addrs[] = {"bob@b.example", "carol@c.example"};
  static char *doms[] = {"b.example", "c.example"};
  struct store_rcpt r[2];
  memset(r, 0, sizeof r);
  for (int i = 0; i < nrcpts; i++) {
    r[i].address = addrs[i];
    r[i].domain = doms[i];
  }
  struct store_msg m;
  memset(&m, 0, sizeof m);
  m.sender = (char *)sender;
  m.received_at = 1700000000;
  m.rcpts = r;
  m.nrcpts = (size_t)nrcpts;
  m.prefix = "Received: from x by y; now\r\n";
  m.prefix_len = strlen(m.prefix);
  struct store_spool *sp = store_spool_new(st);
  CHECK_INT(store_spool_append(sp, body, strlen(body), NULL, NULL), 0);
  CHECK_INT(store_commit(st, &m, sp, on_done, NULL, NULL), 0);
  pending++;
  if (id)
    memcpy(id, m.id, STORE_ID_SIZE);
}

static void on_dispatch(struct sched *s, struct sched_job *job, void *data) {
  (void)s;
  (void)data;
  /* Keep it in flight: its recipients are "delivering" until the end. */
  if (njobs < (int)(sizeof jobs / sizeof jobs[0]))
    jobs[njobs++] = job;
  else
    sched_job_done(s, job, NULL, 0, 1);
}

static void sched_add_msg(const char *id, int nrcpts, int attempts0,
                          int64_t next0_ms) {
  struct sched_rcpt r[2] = {
      {.idx = 0,
       .dest = "b.example",
       .attempts = attempts0,
       .next_attempt_at = next0_ms},
      {.idx = 1, .dest = "c.example"},
  };
  struct sched_msg m = {.id = id,
                        .received_at = 1700000000,
                        .size = 100,
                        .rcpts = r,
                        .nrcpts = (size_t)nrcpts};
  CHECK_INT(sched_add(sc, &m), 0);
}

/* ---- client side (own thread) ----------------------------------------- */

static int cl_connect(const char *path) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    close(fd);
    return -1;
  }
  struct timeval tv = {.tv_sec = 20};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

/* Sends one line, reads one reply line and parses it (NULL on failure;
 * the raw line is kept in last_raw). */
static char *last_raw;
static json_t *read_reply(int fd);
static json_t *cmd(int fd, const char *line) {
  send(fd, line, strlen(line), MSG_NOSIGNAL);
  send(fd, "\n", 1, MSG_NOSIGNAL);
  return read_reply(fd);
}

static json_t *read_reply(int fd) {
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  for (;;) {
    char ch;
    if (recv(fd, &ch, 1, 0) != 1) {
      free(buf);
      return NULL;
    }
    if (ch == '\n')
      break;
    if (len + 1 >= cap)
      buf = realloc(buf, cap *= 2);
    buf[len++] = ch;
  }
  buf[len] = '\0';
  free(last_raw);
  last_raw = buf;
  json_error_t e;
  json_t *j = json_loads(buf, 0, &e);
  if (!j)
    fprintf(stderr, "bad JSON (%s): %s\n", e.text, buf);
  return j;
}

static long long jint(json_t *o, const char *path1, const char *path2) {
  json_t *v = json_object_get(o, path1);
  if (path2)
    v = json_object_get(v, path2);
  CHECK(json_is_integer(v));
  return (long long)json_integer_value(v);
}

static const char *jstr(json_t *o, const char *key) {
  return json_string_value(json_object_get(o, key));
}

static void check_ok(json_t *j) {
  CHECK(j && json_is_true(json_object_get(j, "ok")));
  if (!j || !json_is_true(json_object_get(j, "ok")))
    fprintf(stderr, "  reply: %s\n", last_raw ? last_raw : "(none)");
  json_decref(j);
}

static void check_error(json_t *j, const char *want) {
  CHECK(j != NULL);
  CHECK_STR(jstr(j, "error"), want);
  CHECK_INT(json_object_size(j), 1);
  json_decref(j);
}

static json_t *find_msg(json_t *list, const char *id) {
  size_t i;
  json_t *m;
  json_array_foreach(json_object_get(list, "messages"), i, m) {
    if (!strcmp(jstr(m, "id"), id))
      return m;
  }
  return NULL;
}

static const char *rcpt_state(json_t *list, const char *id, int idx) {
  json_t *m = find_msg(list, id);
  return jstr(json_array_get(json_object_get(m, "recipients"), (size_t)idx),
              "state");
}

static void test_status(int fd) {
  json_t *j = cmd(fd, "status");
  CHECK(j != NULL);
  CHECK_STR(jstr(j, "version"), MAILHOP_VERSION);
  CHECK(jint(j, "uptime_s", NULL) >= 100);
  CHECK_INT(jint(j, "sessions", NULL), 2);
  CHECK_INT(jint(j, "outbound", NULL), 1);
  CHECK(json_is_true(json_object_get(j, "paused")));
  CHECK_INT(jint(j, "queue", "messages"), 3);
  CHECK_INT(jint(j, "queue", "recipients"), 4);
  CHECK_INT(jint(j, "queue", "deferred"), 1);
  CHECK_INT(jint(j, "queue", "held"), 0);
  CHECK_INT(jint(j, "counters", "received"), 7);
  CHECK_INT(jint(j, "counters", "delivered"), 5);
  CHECK_INT(jint(j, "counters", "deferred"), 3);
  CHECK_INT(jint(j, "counters", "bounced"), 1);
  json_decref(j);
}

static void test_queue_list(int fd) {
  json_t *j = cmd(fd, "queue");
  CHECK(j != NULL);
  CHECK_INT(json_object_size(j), 1);
  json_t *msgs = json_object_get(j, "messages");
  CHECK_INT(json_array_size(msgs), 3 + N_BULK);
  /* In id order. */
  size_t i;
  json_t *m;
  const char *prev = "";
  json_array_foreach(msgs, i, m) {
    CHECK(strcmp(prev, jstr(m, "id")) < 0);
    prev = jstr(m, "id");
  }
  json_t *m2 = find_msg(j, id2);
  CHECK(m2 != NULL);
  if (m2) {
    CHECK_STR(jstr(m2, "sender"), "alice@a.example");
    CHECK_STR(jstr(m2, "received_at"), "2023-11-14T22:13:20Z");
    CHECK(json_is_false(json_object_get(m2, "held")));
    CHECK(jint(m2, "size", NULL) > 0);
    json_t *rs = json_object_get(m2, "recipients");
    CHECK_INT(json_array_size(rs), 2);
    json_t *r0 = json_array_get(rs, 0), *r1 = json_array_get(rs, 1);
    CHECK_STR(jstr(r0, "address"), "bob@b.example");
    CHECK_STR(jstr(r0, "state"), "deferred");
    CHECK_INT(jint(r0, "attempts", NULL), 2);
    char want[21];
    admin_time_rfc3339(next2, want);
    CHECK_STR(jstr(r0, "next_attempt_at"), want);
    /* The invalid byte of the remote's reply became U+FFFD. */
    CHECK_STR(jstr(r0, "last_error"), "451 4.7.1 try later \xef\xbf\xbd");
    CHECK_STR(jstr(r1, "state"), "queued");
    CHECK_INT(jint(r1, "attempts", NULL), 0);
    CHECK(json_is_null(json_object_get(r1, "next_attempt_at")));
    CHECK(json_is_null(json_object_get(r1, "last_error")));
  }
  /* The null sender is "". */
  json_t *m3 = find_msg(j, id3);
  CHECK(m3 && jstr(m3, "sender") && !strcmp(jstr(m3, "sender"), ""));
  json_decref(j);
}

static void test_show(int fd) {
  json_t *j = cmd(fd, "show %s");
  check_error(j, "invalid message id: %s");
  char line[64];
  snprintf(line, sizeof line, "show %s", id1);
  j = cmd(fd, line);
  json_t *m = json_object_get(j, "message");
  CHECK(json_is_object(m));
  CHECK_STR(jstr(m, "id"), id1);
  CHECK_INT(json_array_size(json_object_get(m, "recipients")), 1);
  CHECK_STR(jstr(m, "headers"),
            "Received: from x by y; now\r\nSubject: caf\xef\xbf\xbd\r\n");
  /* The CLI's human form of the same reply. */
  char *out = NULL;
  size_t outlen = 0;
  FILE *f = open_memstream(&out, &outlen);
  CHECK_INT(admin_cli_print(f, "show", j, 1700000060), 0);
  fclose(f);
  CHECK_CONTAINS(out, id1);
  CHECK_CONTAINS(out, "bob@b.example  queued  attempts: 0  next: now");
  CHECK_CONTAINS(out, "Subject: caf");
  CHECK(strstr(out, "\r") == NULL); /* control bytes shown escaped */
  free(out);
  json_decref(j);
  check_error(cmd(fd, "show ZZZZZZZZ"), "no such message: ZZZZZZZZ");
  check_error(cmd(fd, "show"), "usage: show ID");
  check_error(cmd(fd, "show a b"), "usage: show ID");
}

/* Lists the queue until recipient 0 of id shows "delivering": the
 * scheduler dispatches on a later loop turn than the command that made it
 * due.  Each look is one question, in order; no timed assertion. */
static json_t *await_delivering(int fd, const char *id) {
  json_t *j = NULL;
  for (int i = 0; i < 2000; i++) {
    json_decref(j);
    j = cmd(fd, "queue");
    const char *st = j ? rcpt_state(j, id, 0) : NULL;
    if (st && strcmp(st, "delivering") == 0)
      break;
    usleep(1000);
  }
  return j;
}

static void test_hold_flush_pause(int fd) {
  char line[64];
  snprintf(line, sizeof line, "hold %s", id3);
  check_ok(cmd(fd, line));
  json_t *j = cmd(fd, "status");
  CHECK_INT(jint(j, "queue", "held"), 1);
  json_decref(j);
  j = cmd(fd, "queue");
  CHECK(json_is_true(json_object_get(find_msg(j, id3), "held")));
  json_decref(j);

  /* A held message is not flushed. */
  snprintf(line, sizeof line, "flush %s", id3);
  j = cmd(fd, line);
  CHECK(json_is_true(json_object_get(j, "ok")));
  CHECK_INT(jint(j, "flushed", NULL), 0);
  json_decref(j);
  /* Counted: what changed (CONTRACT §1): id2, deferred to later; not
   * id1, never tried and due already (paused), nor the held id3. */
  j = cmd(fd, "flush");
  CHECK_INT(jint(j, "flushed", NULL), 1);
  json_decref(j);
  check_error(cmd(fd, "flush NOSUCH"), "no such message: NOSUCH");

  /* Resume: the flushed messages go out (and stay in flight: the test's
   * dispatch keeps them), the held one does not. */
  check_ok(cmd(fd, "resume"));
  j = cmd(fd, "status");
  CHECK(json_is_false(json_object_get(j, "paused")));
  json_decref(j);
  j = await_delivering(fd, id2);
  CHECK_STR(rcpt_state(j, id1, 0), "delivering");
  CHECK_STR(rcpt_state(j, id2, 0), "delivering");
  CHECK_STR(rcpt_state(j, id3, 0), "queued");
  json_decref(j);

  check_ok(cmd(fd, "pause"));
  j = cmd(fd, "status");
  CHECK(json_is_true(json_object_get(j, "paused")));
  json_decref(j);
  check_ok(cmd(fd, "resume"));

  /* Release: it is due again and goes out. */
  snprintf(line, sizeof line, "release %s", id3);
  check_ok(cmd(fd, line));
  j = await_delivering(fd, id3);
  CHECK(json_is_false(json_object_get(find_msg(j, id3), "held")));
  CHECK_STR(rcpt_state(j, id3, 0), "delivering");
  json_decref(j);
  check_error(cmd(fd, "hold NOSUCH"), "no such message: NOSUCH");
  check_error(cmd(fd, "release NOSUCH"), "no such message: NOSUCH");
}

/* Issue 12 item 5: a delete the store refuses (disk full) leaves the
 * message where it was, in the store AND in the scheduler. */
static void test_delete_disk_full(int fd) {
  char line[64], flag[160], want[96];
  snprintf(flag, sizeof flag, "%s/disk-full", dir);
  FILE *f = fopen(flag, "w");
  CHECK(f != NULL);
  if (f)
    fclose(f);
  snprintf(line, sizeof line, "delete %s", id2);
  snprintf(want, sizeof want, "delete failed (%s): %s", strerror(ENOSPC), id2);
  check_error(cmd(fd, line), want);
  json_t *j = cmd(fd, "status");
  CHECK_INT(jint(j, "queue", "messages"), 3);
  CHECK_INT(jint(j, "queue", "held"), 0);
  json_decref(j);
  j = cmd(fd, "queue");
  CHECK(find_msg(j, id2) != NULL);
  json_decref(j);
  /* hold fails the same way and is undone. */
  snprintf(line, sizeof line, "hold %s", id1);
  snprintf(want, sizeof want, "hold failed (%s): %s", strerror(ENOSPC), id1);
  check_error(cmd(fd, line), want);
  j = cmd(fd, "status");
  CHECK_INT(jint(j, "queue", "held"), 0);
  json_decref(j);
  CHECK_INT(unlink(flag), 0);
}

/* Issue 12 item 7: while the queue loads, status says so and counts what
 * the load has still to hand over; changes to messages it has not reached
 * are refused. */
static void test_loading(int fd) {
  /* Right after start the count is not known: status waits for it. */
  loading_on = 2;
  uv_async_send(&loading_async);
  sem_wait(&loading_sem);
  send(fd, "status\n", 7, MSG_NOSIGNAL);
  loading_on = 1; /* the count arrives only now */
  uv_async_send(&loading_async);
  sem_wait(&loading_sem);
  json_t *j = read_reply(fd);
  CHECK(json_is_true(json_object_get(j, "loading")));
  CHECK_INT(jint(j, "queue", "messages"), 3 + 2);
  json_decref(j);
  j = cmd(fd, "status");
  CHECK(json_is_true(json_object_get(j, "loading")));
  CHECK_INT(jint(j, "queue", "messages"), 3 + 2);
  CHECK_INT(jint(j, "queue", "recipients"), 4 + 3);
  CHECK_INT(jint(j, "queue", "deferred"), 1 + 1);
  CHECK_INT(jint(j, "queue", "held"), 0 + 1);
  json_decref(j);
  check_error(cmd(fd, "hold NOSUCH"),
              "the queue is still loading, try again: NOSUCH");
  check_error(cmd(fd, "delete NOSUCH"),
              "the queue is still loading, try again: NOSUCH");
  check_error(cmd(fd, "flush NOSUCH"),
              "the queue is still loading, try again: NOSUCH");
  loading_on = 0;
  uv_async_send(&loading_async);
  sem_wait(&loading_sem);
  j = cmd(fd, "status");
  CHECK(json_object_get(j, "loading") == NULL);
  CHECK_INT(jint(j, "queue", "messages"), 3);
  json_decref(j);
  check_error(cmd(fd, "hold NOSUCH"), "no such message: NOSUCH");
}

static void on_loading(uv_async_t *h) {
  (void)h;
  struct store_counts pend = {
      .messages = 2, .recipients = 3, .deferred = 1, .held = 1};
  /* As serve does: the stats first, admin then answers from them. */
  stats_set_loading(&stats, loading_on != 0, loading_on == 2 ? NULL : &pend);
  admin_set_loading(adm, loading_on != 0, loading_on == 2 ? NULL : &pend);
  sem_post(&loading_sem);
}

static void test_delete(int fd) {
  char line[64];
  snprintf(line, sizeof line, "delete %s", id2);
  check_ok(cmd(fd, line));
  json_t *j = cmd(fd, "queue");
  CHECK_INT(json_array_size(json_object_get(j, "messages")), 2 + N_BULK);
  CHECK(find_msg(j, id2) == NULL);
  json_decref(j);
  j = cmd(fd, "status");
  CHECK_INT(jint(j, "queue", "messages"), 2);
  json_decref(j);
  /* Gone: a second delete is an error. */
  char want[64];
  snprintf(want, sizeof want, "no such message: %s", id2);
  check_error(cmd(fd, line), want);
}

/* Issue 19: FILTER words, bulk actions and suspensions over the socket
 * (the integration tests cover them end to end). */
static void test_filters_and_suspend(int fd) {
  json_t *j = cmd(fd, "queue domain=nowhere.example");
  CHECK(json_is_array(json_object_get(j, "messages")));
  CHECK_INT(json_array_size(json_object_get(j, "messages")), 0);
  json_decref(j);
  j = cmd(fd, "queue all");
  size_t all = json_array_size(json_object_get(j, "messages"));
  CHECK(all > 0);
  json_decref(j);
  /* The scheduler knows fewer (the test put N_BULK into the store only). */
  j = cmd(fd, "status");
  long long scheduled = jint(j, "queue", "messages");
  CHECK(scheduled > 0 && scheduled <= (long long)all);
  CHECK_INT(json_array_size(json_object_get(j, "suspended")), 0);
  json_decref(j);
  check_error(cmd(fd, "delete"), "usage: delete ID | FILTER...");
  check_error(cmd(fd, "hold domain="), "bad domain: domain=");
  check_error(cmd(fd, "release state=x"),
              "bad state (queued, deferred or held): state=x");
  check_error(cmd(fd, "flush older_than=1 older_than=2"),
              "filter given twice: older_than=2");
  /* Nothing is that old: a bulk action that touches nothing. */
  j = cmd(fd, "hold older_than=999999999");
  CHECK(json_is_true(json_object_get(j, "ok")));
  CHECK_INT(jint(j, "count", NULL), 0);
  json_decref(j);
  j = cmd(fd, "status");
  CHECK_INT(jint(j, "queue", "held"), 0);
  json_decref(j);
  /* hold all, release all: counted, and the scheduler follows. */
  j = cmd(fd, "hold all");
  CHECK_INT(jint(j, "count", NULL), (long long)all);
  json_decref(j);
  j = cmd(fd, "status");
  CHECK_INT(jint(j, "queue", "held"), scheduled);
  json_decref(j);
  j = cmd(fd, "release state=held");
  CHECK_INT(jint(j, "count", NULL), (long long)all);
  json_decref(j);
  j = cmd(fd, "status");
  CHECK_INT(jint(j, "queue", "held"), 0);
  json_decref(j);

  check_ok(cmd(fd, "suspend B.example 60"));
  j = cmd(fd, "status");
  json_t *su = json_object_get(j, "suspended");
  CHECK_INT(json_array_size(su), 1);
  CHECK_STR(
      json_string_value(json_object_get(json_array_get(su, 0), "destination")),
      "b.example");
  json_decref(j);
  check_error(cmd(fd, "suspend b.example soon"),
              "bad duration (seconds): soon");
  check_error(cmd(fd, "suspend"), "usage: suspend DESTINATION [SECONDS]");
  check_ok(cmd(fd, "unsuspend b.example"));
  check_error(cmd(fd, "unsuspend b.example"), "not suspended: b.example");
  /* An internationalized domain in either form covers both keys (mail is
   * keyed by the domain as its recipients wrote it). */
  check_ok(cmd(fd, "suspend xn--bcher-kva.example 60"));
  CHECK(sched_suspended_until(sc, "xn--bcher-kva.example") > 0);
  CHECK(sched_suspended_until(sc, "b\xc3\xbc"
                                  "cher.example") > 0);
  check_ok(cmd(fd, "unsuspend xn--bcher-kva.example"));
  CHECK_INT(sched_suspended_until(sc, "b\xc3\xbc"
                                      "cher.example"),
            0);
  check_ok(cmd(fd, "suspend b\xc3\xbc"
                   "cher.example 60"));
  CHECK(sched_suspended_until(sc, "xn--bcher-kva.example") > 0);
  check_ok(cmd(fd, "unsuspend b\xc3\xbc"
                   "cher.example"));
  CHECK_INT(sched_suspended_until(sc, "xn--bcher-kva.example"), 0);
  j = cmd(fd, "status");
  CHECK_INT(json_array_size(json_object_get(j, "suspended")), 0);
  json_decref(j);
}

static void test_bad_input(int fd) {
  check_error(cmd(fd, "frobnicate now"), "unknown command: frobnicate");
  check_error(cmd(fd, ""), "empty command");
  check_error(cmd(fd, "caf\xe9"), "unknown command: caf\xef\xbf\xbd");
  char *big = malloc(3000);
  memset(big, 'q', 2999);
  big[2999] = '\0';
  check_error(cmd(fd, big), "command line too long");
  free(big);
  /* Still usable afterwards, and case does not matter. */
  json_t *j = cmd(fd, "STATUS");
  CHECK(json_is_object(json_object_get(j, "queue")));
  json_decref(j);
}

static void test_cli(void) {
  struct config *cfg = calloc(1, sizeof *cfg);
  snprintf(cfg->admin_socket, sizeof cfg->admin_socket, "%s", sock_path);
  struct cli c;
  memset(&c, 0, sizeof c);
  c.words[0] = "status";
  c.n_words = 1;
  CHECK_INT(admin_cli_main(cfg, &c), 0);
  c.json = 1;
  CHECK_INT(admin_cli_main(cfg, &c), 0);
  c.words[0] = "queue";
  c.words[1] = "show";
  c.words[2] = "NOSUCH";
  c.n_words = 3;
  CHECK_INT(admin_cli_main(cfg, &c), 1); /* {"error"} reply */
  c.words[1] = "frob";
  CHECK_INT(admin_cli_main(cfg, &c), 1); /* usage */
  c.words[1] = "show";
  c.words[2] = "a b";
  CHECK_INT(admin_cli_main(cfg, &c), 1); /* an id cannot split the line */
  c.words[0] = "status";
  c.n_words = 1;
  c.socket = "/nonexistent/mailhop.sock";
  CHECK_INT(admin_cli_main(cfg, &c), 2); /* daemon not running */
  free(cfg);
}

static void test_cli_print(void) {
  json_error_t e;
  json_t *j = json_loads(
      "{\"messages\":[{\"id\":\"abc\",\"sender\":\"\",\"size\":42,"
      "\"received_at\":\"2023-11-14T22:13:20Z\",\"held\":true,\"recipients\":"
      "[{\"address\":\"x@y\",\"state\":\"deferred\",\"attempts\":3,"
      "\"next_attempt_at\":\"2023-11-14T23:13:20Z\",\"last_error\":\"451 "
      "busy\\u001b[31m\"}]}]}",
      0, &e);
  CHECK(j != NULL);
  char *out = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&out, &len);
  CHECK_INT(admin_cli_print(f, "queue", j, 1700000000 + 120), 0);
  fclose(f);
  CHECK_CONTAINS(out, "abc");
  CHECK_CONTAINS(out, "2m00s");
  CHECK_CONTAINS(out, "<>");
  CHECK_CONTAINS(out, "[held]");
  CHECK_CONTAINS(out, "x@y  deferred  attempts: 3  next: "
                      "2023-11-14T23:13:20Z (in 58m00s)");
  CHECK_CONTAINS(out, "last error: 451 busy\\x1b[31m");
  CHECK_CONTAINS(out, "-- 1 message, 1 recipient, 42 bytes");
  free(out);
  json_decref(j);
  j = json_loads("{\"messages\":[]}", 0, &e);
  f = open_memstream(&out, &len);
  admin_cli_print(f, "queue", j, 0);
  fclose(f);
  CHECK_STR(out, "Mail queue is empty\n");
  free(out);
  json_decref(j);
  /* Bulk replies print the count; status lists suspensions. */
  j = json_loads("{\"ok\":true,\"count\":3}", 0, &e);
  f = open_memstream(&out, &len);
  CHECK_INT(admin_cli_print(f, "hold", j, 0), 0);
  fclose(f);
  CHECK_STR(out, "held 3 messages\n");
  free(out);
  json_decref(j);
  j = json_loads("{\"version\":\"x\",\"uptime_s\":1,\"queue\":{},"
                 "\"accepting\":false,"
                 "\"counters\":{},\"suspended\":[{\"destination\":"
                 "\"b.example\",\"until\":\"2023-11-14T23:13:20Z\"}]}",
                 0, &e);
  f = open_memstream(&out, &len);
  CHECK_INT(admin_cli_print(f, "status", j, 1700000000), 0);
  fclose(f);
  CHECK_CONTAINS(
      out, "suspended:   b.example until 2023-11-14T23:13:20Z (in 1h00m)");
  CHECK_CONTAINS(out, "accepting:   NO (draining or shutting down)");
  free(out);
  json_decref(j);
}

static void *client_main(void *arg) {
  (void)arg;
  int fd = cl_connect(sock_path);
  CHECK(fd >= 0);
  /* All of it over one connection: several commands per connection. */
  test_status(fd);
  test_loading(fd);
  test_queue_list(fd);
  test_show(fd);
  test_bad_input(fd);
  test_hold_flush_pause(fd);
  test_delete_disk_full(fd);
  test_delete(fd);
  test_filters_and_suspend(fd);
  close(fd);
  test_cli();
  test_cli_print();
  /* socat-style: several commands in one write, then half-close. */
  fd = cl_connect(sock_path);
  const char *many = "pause\nresume\nstatus\n";
  send(fd, many, strlen(many), 0);
  shutdown(fd, SHUT_WR);
  char buf[8192];
  size_t got = 0;
  ssize_t n;
  while ((n = recv(fd, buf + got, sizeof buf - 1 - got, 0)) > 0)
    got += (size_t)n;
  buf[got] = '\0';
  int lines = 0;
  for (size_t i = 0; i < got; i++)
    lines += buf[i] == '\n';
  CHECK_INT(lines, 3);
  CHECK(strncmp(buf, "{\"ok\":true}\n{\"ok\":true}\n{\"version\"", 33) == 0);
  close(fd);
  free(last_raw);
  uv_async_send(&done_async);
  return NULL;
}

/* ---- teardown (loop thread) ------------------------------------------- */

static int closed;
static void on_store_closed(void *data) {
  (void)data;
  closed++;
}

static void on_sched_freed(void *data) {
  (void)data;
  closed++;
}

static void on_all_done(uv_async_t *a) {
  (void)a;
  admin_stop(adm);
  struct stat sb;
  CHECK(stat(sock_path, &sb) < 0 && errno == ENOENT);
  for (int i = 0; i < njobs; i++)
    sched_job_done(sc, jobs[i], NULL, 0, 1);
  njobs = 0;
  sched_free(sc, on_sched_freed, NULL);
  store_close(st, on_store_closed, NULL);
  uv_close((uv_handle_t *)&done_async, NULL);
  uv_close((uv_handle_t *)&loading_async, NULL);
}

int main(void) {
  /* As in the daemon: a peer that hangs up is an EPIPE, not a signal. */
  signal(SIGPIPE, SIG_IGN);
  if (!check_tmpdir(dir, sizeof dir, "mh-admin"))
    return 1;
  snprintf(dbpath, sizeof dbpath, "%s/queue.db", dir);
  snprintf(sock_path, sizeof sock_path, "%s/admin.sock", dir);
  CHECK_INT(uv_loop_init(&loop), 0);
  char err[256] = "";
  CHECK_INT(store_open(&loop, dbpath, &st, err, sizeof err), 0);
  char flag[160];
  snprintf(flag, sizeof flag, "%s/disk-full", dir);
  CHECK_INT(store_debug_enospc_file(st, flag), 0);

  commit(id1, "alice@a.example", 1, "Subject: caf\xe9\r\n\r\nhello\r\n");
  commit(id2, "alice@a.example", 2, "Subject: two\r\n\r\nhi\r\n");
  commit(id3, "", 1, "Subject: bounce\r\n\r\nx\r\n");
  for (int i = 0; i < N_BULK; i++)
    commit(NULL, "bulk@a.example", 1, "Subject: bulk\r\n\r\nx\r\n");
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(pending, 0);

  next2 = (int64_t)time(NULL) + 600;
  struct store_outcome oc = {.id = id2,
                             .idx = 0,
                             .state = STORE_RCPT_DEFERRED,
                             .attempts = 2,
                             .next_attempt_at = next2,
                             .last_error = "451 4.7.1 try later \xff"};
  CHECK_INT(store_update(st, &oc, 1, NULL, on_done, NULL, NULL), 0);
  pending++;
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(pending, 0);

  struct sched_opts so = {
      .max_outbound = 16, .max_per_destination = 16, .dispatch = on_dispatch};
  sc = sched_new(&loop, &so);
  CHECK(sc != NULL);
  sched_pause(sc, 1);
  sched_add_msg(id1, 1, 0, 0);
  sched_add_msg(id2, 2, 2, next2 * 1000);
  sched_add_msg(id3, 1, 0, 0);

  stats.started_at = (int64_t)time(NULL) - 100;
  stats.sessions = 2;
  stats.outbound = 1;
  stats.received = 7;
  stats.delivered = 5;
  stats.deferred = 3;
  stats.bounced = 1;
  adm = admin_start(&loop, sock_path, st, sc, &stats, err, sizeof err);
  CHECK(adm != NULL);
  if (!adm) {
    fprintf(stderr, "admin_start: %s\n", err);
    return 1;
  }
  struct stat sb;
  CHECK_INT(stat(sock_path, &sb), 0);
  CHECK_INT(sb.st_mode & 0777, 0600);
  /* A second instance on the same path is refused. */
  struct admin *again =
      admin_start(&loop, sock_path, st, sc, &stats, err, sizeof err);
  CHECK(again == NULL);
  CHECK_CONTAINS(err, "is in use");

  uv_async_init(&loop, &done_async, on_all_done);
  uv_async_init(&loop, &loading_async, on_loading);
  sem_init(&loading_sem, 0, 0);
  pthread_t th;
  pthread_create(&th, NULL, client_main, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  pthread_join(th, NULL);
  CHECK_INT(closed, 2);
  CHECK_INT(uv_loop_close(&loop), 0);
  char cmdline[160];
  snprintf(cmdline, sizeof cmdline, "rm -rf %s", dir);
  CHECK_INT(system(cmdline), 0);
  return check_result("test_admin");
}
