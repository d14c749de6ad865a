/*
 * test_outbound: the outbound wiring on a real loop, with a real store in
 * a temp dir, the real scheduler and a scripted SMTP peer on loopback
 * (issue 14).  Every case ends with every handle closed and
 * uv_loop_close() succeeding.
 *
 *   1. a cached connection closed by the peer: the next message resolves
 *      and connects afresh and is delivered;
 *   2. `queue delete` during a delivery: the refusal that follows bounces
 *      nothing and writes nothing;
 *   3. the store cannot write the outcome of a delivery made (the file
 *      size limit stands in for a full disk): the message is not sent
 *      again, not even on flush, and the outcome is written once writes
 *      work again;
 *   4. a delivery ended during a body read (shutdown): the recipient stays
 *      queued, untouched.
 */
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "check.h"
#include "config.h"
#include "queue/sched.h"
#include "queue/store.h"
#include "relay/outbound.h"
#include "relay/stats.h"

static uv_loop_t loop;
static struct store *st;
static struct sched *sc;
static struct outbound *ob;
static struct stats stats;
static struct config cfg;
static char dir[256], dbpath[300];
static int pending;

/* ---- the scripted peer --------------------------------------------------- */

enum peer_mode {
  PEER_ACCEPT,       /* accepts everything */
  PEER_DROP_2ND_TX,  /* closes at the second MAIL of a connection */
  PEER_HOLD_RCPT,    /* holds the RCPT reply until peer_release() */
  PEER_ABORT_IN_BODY /* calls outbound_abort_all() at the first body line */
};

struct pconn {
  uv_tcp_t h;
  char in[4096];
  size_t len;
  int in_data;
  int mails;
  int held;
  int closing;
};

static struct {
  uv_tcp_t srv;
  int port;
  enum peer_mode mode;
  int conns, closed, msgs, body_lines;
  struct pconn *held; /* the connection waiting for peer_release() */
} peer;

static void on_pconn_closed(uv_handle_t *h) {
  peer.closed++;
  free(h->data);
}

static void pconn_close(struct pconn *pc) {
  if (pc->closing)
    return;
  pc->closing = 1;
  uv_close((uv_handle_t *)&pc->h, on_pconn_closed);
}

static void on_written(uv_write_t *w, int status) {
  (void)status;
  free(w);
}

static void say(struct pconn *pc, const char *text) {
  if (pc->closing)
    return;
  size_t n = strlen(text);
  uv_write_t *w = malloc(sizeof *w + n);
  CHECK(w != NULL);
  if (!w)
    return;
  memcpy(w + 1, text, n);
  uv_buf_t b = uv_buf_init((char *)(w + 1), (unsigned)n);
  if (uv_write(w, (uv_stream_t *)&pc->h, &b, 1, on_written) < 0)
    free(w);
}

/* Handles one line; returns 0 to stop reading for now (held, closed). */
static int pconn_line(struct pconn *pc, const char *line) {
  if (pc->in_data) {
    if (strcmp(line, ".") == 0) {
      pc->in_data = 0;
      peer.msgs++;
      say(pc, "250 2.0.0 Ok: queued\r\n");
      return 1;
    }
    if (peer.body_lines++ == 0 && peer.mode == PEER_ABORT_IN_BODY)
      outbound_abort_all(ob); /* shutdown while the body streams */
    return 1;
  }
  if (strncasecmp(line, "EHLO", 4) == 0) {
    say(pc, "250-peer.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n");
  } else if (strncasecmp(line, "MAIL", 4) == 0) {
    if (peer.mode == PEER_DROP_2ND_TX && pc->mails++ >= 1) {
      pconn_close(pc); /* gone while the relay kept it */
      return 0;
    }
    say(pc, "250 2.1.0 Ok\r\n");
  } else if (strncasecmp(line, "RCPT", 4) == 0) {
    if (peer.mode == PEER_HOLD_RCPT && !peer.held && !pc->held) {
      pc->held = 1;
      peer.held = pc;
      return 0;
    }
    say(pc, "250 2.1.5 Ok\r\n");
  } else if (strncasecmp(line, "DATA", 4) == 0) {
    if (pc->held) {
      pc->held = 0; /* its recipient was refused: this DATA fails */
      say(pc, "554 5.5.1 No valid recipients\r\n");
    } else {
      pc->in_data = 1;
      say(pc, "354 go ahead\r\n");
    }
  } else if (strncasecmp(line, "QUIT", 4) == 0) {
    say(pc, "221 2.0.0 Bye\r\n");
    pconn_close(pc);
    return 0;
  } else {
    say(pc, "250 2.0.0 Ok\r\n"); /* RSET, NOOP */
  }
  return 1;
}

/* Processes the complete lines buffered. */
static void pconn_process(struct pconn *pc) {
  for (;;) {
    char *nl = memchr(pc->in, '\n', pc->len);
    if (!nl)
      return;
    size_t n = (size_t)(nl - pc->in) + 1;
    char line[4096];
    size_t ll = n - 1;
    if (ll > 0 && pc->in[ll - 1] == '\r')
      ll--;
    memcpy(line, pc->in, ll);
    line[ll] = '\0';
    memmove(pc->in, pc->in + n, pc->len - n);
    pc->len -= n;
    if (!pconn_line(pc, line)) {
      if (!pc->closing)
        uv_read_stop((uv_stream_t *)&pc->h);
      return;
    }
  }
}

static void on_palloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  (void)hint;
  struct pconn *pc = h->data;
  *b = uv_buf_init(pc->in + pc->len, (unsigned)(sizeof pc->in - pc->len));
}

static void on_pread(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  (void)b;
  struct pconn *pc = s->data;
  if (n < 0) {
    pconn_close(pc);
    return;
  }
  pc->len += (size_t)n;
  if (pc->len == sizeof pc->in && !memchr(pc->in, '\n', pc->len))
    pc->len = 0; /* a body line longer than we keep: not ours to check */
  pconn_process(pc);
}

static void on_pconnect(uv_stream_t *srv, int status) {
  CHECK_INT(status, 0);
  struct pconn *pc = calloc(1, sizeof *pc);
  CHECK(pc != NULL);
  if (!pc)
    return;
  uv_tcp_init(&loop, &pc->h);
  pc->h.data = pc;
  if (uv_accept(srv, (uv_stream_t *)&pc->h) < 0) {
    pconn_close(pc);
    return;
  }
  peer.conns++;
  say(pc, "220 peer.test ESMTP\r\n");
  uv_read_start((uv_stream_t *)&pc->h, on_palloc, on_pread);
}

/* The held RCPT gets its (refusing) reply; the rest of the group goes on. */
static void peer_release(void) {
  struct pconn *pc = peer.held;
  peer.held = NULL;
  if (!pc || pc->closing)
    return;
  say(pc, "550 5.1.1 <nobody@b.example>: user unknown\r\n");
  uv_read_start((uv_stream_t *)&pc->h, on_palloc, on_pread);
  pconn_process(pc);
}

static void peer_start(void) {
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", 0, &a);
  CHECK_INT(uv_tcp_init(&loop, &peer.srv), 0);
  CHECK_INT(uv_tcp_bind(&peer.srv, (const struct sockaddr *)&a, 0), 0);
  CHECK_INT(uv_listen((uv_stream_t *)&peer.srv, 16, on_pconnect), 0);
  struct sockaddr_in got;
  int len = sizeof got;
  uv_tcp_getsockname(&peer.srv, (struct sockaddr *)&got, &len);
  peer.port = ntohs(got.sin_port);
}

/* ---- helpers --------------------------------------------------------------
 */

static void on_done(struct store *s, int status, void *data) {
  (void)s;
  (void)data;
  CHECK_INT(status, 0);
  pending--;
}

/* Commits a message (body as the prefix: no spool) and schedules it. */
static void queue_msg(char id[STORE_ID_SIZE], const char *rcpt,
                      const char *body, size_t body_len) {
  struct store_rcpt r = {.address = (char *)rcpt, .domain = "b.example"};
  struct store_msg m;
  memset(&m, 0, sizeof m);
  m.sender = "sender@a.example";
  m.received_at = (int64_t)time(NULL);
  m.rcpts = &r;
  m.nrcpts = 1;
  m.prefix = body;
  m.prefix_len = body_len;
  CHECK_INT(store_commit(st, &m, NULL, on_done, NULL, NULL), 0);
  pending++;
  while (pending)
    uv_run(&loop, UV_RUN_ONCE);
  memcpy(id, m.id, STORE_ID_SIZE);
  struct sched_rcpt sr = {.idx = 0, .dest = outbound_dest(ob, "b.example")};
  struct sched_msg sm = {.id = m.id,
                         .received_at = m.received_at,
                         .size = (int64_t)body_len,
                         .rcpts = &sr,
                         .nrcpts = 1};
  CHECK_INT(sched_add(sc, &sm), 0);
}

static int (*cond)(void);
static uint64_t run_start;
static int run_timed_out;
static void on_tick(uv_timer_t *t) {
  if (cond())
    uv_stop(t->loop);
  else if (uv_now(t->loop) - run_start > 20000) {
    run_timed_out = 1;
    uv_stop(t->loop);
  }
}

/* Runs the loop until c() holds; 0 when it did not within 20 s (a bound
 * against hanging, not a timing check). */
static int run_until(int (*c)(void)) {
  uv_timer_t t;
  uv_timer_init(&loop, &t);
  cond = c;
  run_timed_out = 0;
  uv_update_time(&loop);
  run_start = uv_now(&loop);
  uv_timer_start(&t, on_tick, 5, 5);
  while (!c() && !run_timed_out)
    uv_run(&loop, UV_RUN_DEFAULT);
  int ok = c();
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&loop, UV_RUN_NOWAIT);
  return ok;
}

static long sql_count(const char *q) {
  sqlite3 *db;
  long n = -1;
  if (sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db, q, -1, &s, NULL) == SQLITE_OK) {
      if (sqlite3_step(s) == SQLITE_ROW)
        n = sqlite3_column_int64(s, 0);
      sqlite3_finalize(s);
    }
  }
  sqlite3_close(db);
  return n;
}

static int idle_now(void) {
  struct sched_stats ss;
  sched_get_stats(sc, &ss);
  return ss.messages == 0 && outbound_active(ob) == 0;
}
static int two_delivered(void) {
  return peer.msgs == 2 && idle_now();
}
static int rcpt_held(void) {
  return peer.held != NULL;
}
static int body_started(void) {
  return peer.body_lines > 0;
}
static int none_active(void) {
  return outbound_active(ob) == 0;
}

/* ---- cases ----------------------------------------------------------------
 */

static void test_cached_connection_closed_by_peer(void) {
  static const char body[] = "Subject: one\r\n\r\nhello\r\n";
  char id1[STORE_ID_SIZE], id2[STORE_ID_SIZE];
  peer.mode = PEER_DROP_2ND_TX;
  queue_msg(id1, "a@b.example", body, sizeof body - 1);
  CHECK(run_until(idle_now));
  CHECK_INT(peer.msgs, 1);
  CHECK_INT(peer.conns, 1);
  /* The connection is cached; the next message takes it, and the peer
   * hangs up at its MAIL. */
  queue_msg(id2, "b@b.example", body, sizeof body - 1);
  CHECK(run_until(two_delivered));
  CHECK_INT(peer.msgs, 2);
  CHECK_INT(peer.conns, 2);
  CHECK_INT(stats.delivered, 2);
  CHECK_INT(stats.deferred, 0);
  CHECK_INT(sql_count("select count(*) from messages"), 0);
}

static void test_delete_during_delivery(void) {
  static const char body[] = "Subject: del\r\n\r\nhello\r\n";
  char id[STORE_ID_SIZE];
  peer.mode = PEER_HOLD_RCPT;
  queue_msg(id, "nobody@b.example", body, sizeof body - 1);
  CHECK(run_until(rcpt_held));
  /* As the admin `delete` does: the store, then the scheduler. */
  CHECK_INT(store_delete(st, id, on_done, NULL), 0);
  pending++;
  while (pending)
    uv_run(&loop, UV_RUN_ONCE);
  CHECK_INT(sched_remove(sc, id), 0);
  peer_release(); /* now the 550 */
  CHECK(run_until(idle_now));
  CHECK_INT(stats.bounced, 0);
  CHECK_INT(sql_count("select count(*) from messages"), 0);
}

static void test_abort_during_body_read(void) {
  /* Several body chunks (64 KiB each), so a read is in flight when the
   * peer sees the first line. */
  size_t n = 300 * 1024;
  char *body = malloc(n);
  CHECK(body != NULL);
  if (!body)
    return;
  static const char hdr[] = "Subject: big\r\n\r\n";
  memcpy(body, hdr, sizeof hdr - 1);
  for (size_t i = sizeof hdr - 1; i < n; i++)
    body[i] = i % 80 == 78 ? '\r' : i % 80 == 79 ? '\n' : 'x';
  char id[STORE_ID_SIZE];
  int msgs_before = peer.msgs;
  peer.mode = PEER_ABORT_IN_BODY;
  peer.body_lines = 0;
  queue_msg(id, "big@b.example", body, n);
  free(body);
  CHECK(run_until(body_started));
  CHECK(run_until(none_active));
  CHECK(peer.body_lines > 0);
  CHECK_INT(peer.msgs, msgs_before);
  /* Untouched: still queued, no attempt counted, nothing bounced. */
  CHECK_INT(sql_count("select count(*) from recipients where state = 0 "
                      "and attempts = 0"),
            1);
  CHECK_INT(stats.bounced, 0);
}

static void on_run_for(uv_timer_t *t) {
  uv_stop(t->loop);
}

/* Lets the loop run for ms (to see that something does NOT happen). */
static void run_for(uint64_t ms) {
  uv_timer_t t;
  uv_timer_init(&loop, &t);
  uv_timer_start(&t, on_run_for, ms, 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&loop, UV_RUN_NOWAIT);
}

static int msgs_want;
static int peer_has_it(void) {
  return peer.msgs >= msgs_want;
}

static off_t file_size(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 ? sb.st_size : 0;
}

static void test_outcome_write_fails(void) {
  static const char body[] = "Subject: full\r\n\r\nhello\r\n";
  char id[STORE_ID_SIZE], wal[320];
  snprintf(wal, sizeof wal, "%s-wal", dbpath);
  peer.mode = PEER_ACCEPT;
  int before = peer.msgs;
  uint64_t delivered = stats.delivered;
  queue_msg(id, "full@b.example", body, sizeof body - 1);
  /* From now on no queue file may grow: the outcome write fails (EFBIG,
   * as ENOSPC would). */
  off_t cap =
      file_size(wal) > file_size(dbpath) ? file_size(wal) : file_size(dbpath);
  struct rlimit old, lim;
  getrlimit(RLIMIT_FSIZE, &old);
  lim = old;
  lim.rlim_cur = (rlim_t)cap;
  CHECK_INT(setrlimit(RLIMIT_FSIZE, &lim), 0);
  msgs_want = before + 1;
  CHECK(run_until(peer_has_it));
  CHECK_INT(stats.delivered, delivered + 1);
  run_for(1500);
  struct sched_stats ss;
  sched_get_stats(sc, &ss);
  CHECK_INT(ss.outbound, 1); /* still in flight: its outcome is pending */
  CHECK(sched_flush(sc, NULL) >= 0);
  run_for(1500);
  CHECK_INT(peer.msgs, before + 1); /* never sent again */
  CHECK_INT(sql_count("select count(*) from messages"), 1);
  /* Space is back: the outcome is written by itself. */
  CHECK_INT(setrlimit(RLIMIT_FSIZE, &old), 0);
  CHECK(run_until(idle_now));
  CHECK_INT(peer.msgs, before + 1);
  CHECK_INT(sql_count("select count(*) from messages"), 0);
  CHECK_INT(stats.delivered, delivered + 1);
}

/* ---- set-up and teardown ------------------------------------------------- */

static int closed_store, freed_sched;
static void on_store_closed(void *data) {
  (void)data;
  closed_store = 1;
}
static void on_sched_freed(void *data) {
  (void)data;
  freed_sched = 1;
  outbound_free(ob);
  store_close(st, on_store_closed, NULL);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  signal(SIGXFSZ, SIG_IGN); /* a write over RLIMIT_FSIZE fails (EFBIG) */
  if (!check_tmpdir(dir, sizeof dir, "mh-outbound"))
    return 1;
  snprintf(dbpath, sizeof dbpath, "%s/queue.db", dir);
  CHECK_INT(uv_loop_init(&loop), 0);
  char err[CONFIG_ERR_MAX] = "";
  CHECK_INT(store_open(&loop, dbpath, &st, err, sizeof err), 0);
  peer_start();
  config_defaults(&cfg);
  char text[512];
  int tl = snprintf(text, sizeof text,
                    "hostname = relay.test\n"
                    "relayhost = [127.0.0.1]:%d\n"
                    "relayhost_tls = none\n"
                    "dns_servers = 127.0.0.1:9\n"
                    "retry_schedule = 1h\n",
                    peer.port);
  CHECK_INT(config_parse_text(&cfg, "test", text, (size_t)tl, err), 0);
  ob = outbound_new(&loop, &cfg, st, &stats, err, sizeof err);
  CHECK(ob != NULL);
  if (!ob) {
    fprintf(stderr, "outbound_new: %s\n", err);
    return check_result("test_outbound");
  }
  struct sched_opts so = {.max_outbound = (unsigned)cfg.max_outbound,
                          .max_per_destination =
                              (unsigned)cfg.max_per_destination,
                          .dispatch = outbound_dispatch,
                          .backoff_ms = outbound_backoff,
                          .data = ob};
  sc = sched_new(&loop, &so);
  CHECK(sc != NULL);
  outbound_set_sched(ob, sc);

  test_cached_connection_closed_by_peer();
  test_delete_during_delivery();
  test_outcome_write_fails();
  test_abort_during_body_read(); /* last: it ends the outbound */

  sched_stop(sc);
  outbound_close_idle(ob);
  CHECK(run_until(none_active));
  sched_free(sc, on_sched_freed, NULL);
  uv_close((uv_handle_t *)&peer.srv, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(freed_sched, 1);
  CHECK_INT(closed_store, 1);
  CHECK_INT(peer.closed, peer.conns);
  CHECK_INT(uv_loop_close(&loop), 0);
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "cannot remove %s\n", dir);
  return check_result("test_outbound");
}
