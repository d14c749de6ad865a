/*
 * test_store: the SQLite queue on a real file in a temp dir, driven by a
 * real libuv loop.  Every test closes the store and requires
 * uv_loop_close() to succeed.
 */
#include "check.h"
#include "queue/fresh.h"
#include "queue/spool.h"
#include "queue/store.h"

#include <dirent.h>
#include <sqlite3.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[256];
static char dbpath[300];

static struct store *open_store(uv_loop_t *loop) {
  struct store *st = NULL;
  char err[256] = "";
  int r = store_open(loop, dbpath, &st, err, sizeof err);
  CHECK_INT(r, 0);
  if (r)
    fprintf(stderr, "store_open: %s\n", err);
  return st;
}

static int closed;
static void on_closed(void *data) {
  (void)data;
  closed++;
}

static void close_store(uv_loop_t *loop, struct store *st) {
  closed = 0;
  store_close(st, on_closed, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  CHECK_INT(closed, 1);
}

/* A message with n recipients and a small prefix. */
struct tmsg {
  struct store_msg m;
  struct store_rcpt r[4];
};

static void make_msg(struct tmsg *t, int nrcpts) {
  memset(t, 0, sizeof *t);
  t->m.sender = "alice@a.example";
  t->m.received_at = 1700000000;
  t->m.envid = "env-1";
  t->m.ret = 2;
  t->m.flags = STORE_F_BODY8BIT;
  static char *addrs[] = {"bob@b.example", "carol@c.example", "dan@b.example",
                          "eve@e.example"};
  static char *doms[] = {"b.example", "c.example", "b.example", "e.example"};
  for (int i = 0; i < nrcpts; i++) {
    t->r[i].address = addrs[i];
    t->r[i].domain = doms[i];
    t->r[i].notify = 3;
    t->r[i].orcpt = i == 0 ? "rfc822;bob@b.example" : NULL;
  }
  t->m.rcpts = t->r;
  t->m.nrcpts = (size_t)nrcpts;
  t->m.prefix = "Received: from x by y; now\r\n";
  t->m.prefix_len = strlen(t->m.prefix);
}

static int done_count, done_status[20000];
static void on_done(struct store *st, int status, void *data) {
  (void)st;
  (void)data;
  done_status[done_count++] = status;
}

/* Commits a message with a small in-memory body; returns its id. */
static void commit_small(struct store *st, int nrcpts, char id[STORE_ID_SIZE],
                         const char *body) {
  struct tmsg t;
  make_msg(&t, nrcpts);
  struct store_spool *sp = store_spool_new(st);
  CHECK(sp != NULL);
  CHECK_INT(store_spool_append(sp, body, strlen(body), NULL, NULL), 0);
  CHECK_INT(store_commit(st, &t.m, sp, on_done, NULL, NULL), 0);
  CHECK_INT(strlen(t.m.id), STORE_ID_LEN);
  if (id)
    memcpy(id, t.m.id, STORE_ID_SIZE);
}

/* ---- show ------------------------------------------------------------- */

static struct {
  int calls, status, held, nrcpts;
  char sender[64], headers[256], id[STORE_ID_SIZE];
  int64_t size;
  unsigned notices;
  enum store_rcpt_state states[4];
  int attempts[4];
  int64_t next[4];
  char last_error[64];
} shown;

static void on_show(struct store *st, int status, const struct store_msg *m,
                    void *data) {
  (void)st;
  (void)data;
  memset(&shown, 0, sizeof shown);
  shown.calls = 1;
  shown.status = status;
  if (!m)
    return;
  shown.held = m->held;
  shown.nrcpts = (int)m->nrcpts;
  shown.size = m->size;
  shown.notices = m->notices;
  snprintf(shown.id, sizeof shown.id, "%s", m->id);
  snprintf(shown.sender, sizeof shown.sender, "%s", m->sender);
  snprintf(shown.headers, sizeof shown.headers, "%s",
           m->headers ? m->headers : "");
  for (size_t i = 0; i < m->nrcpts && i < 4; i++) {
    shown.states[i] = m->rcpts[i].state;
    shown.attempts[i] = m->rcpts[i].attempts;
    shown.next[i] = m->rcpts[i].next_attempt_at;
    if (m->rcpts[i].last_error)
      snprintf(shown.last_error, sizeof shown.last_error, "%s",
               m->rcpts[i].last_error);
  }
}

static void show(uv_loop_t *loop, struct store *st, const char *id) {
  CHECK_INT(store_show(st, id, on_show, NULL), 0);
  uv_run(loop, UV_RUN_DEFAULT);
  CHECK_INT(shown.calls, 1);
}

/* ---- tests ------------------------------------------------------------ */

static void test_open_lock(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct store *st = open_store(&loop);
  struct store *st2 = NULL;
  char err[256] = "";
  int r = store_open(&loop, dbpath, &st2, err, sizeof err);
  CHECK_INT(r, -EBUSY);
  CHECK(st2 == NULL);
  char want[64];
  snprintf(want, sizeof want, "in use by process %ld", (long)getpid());
  CHECK_CONTAINS(err, want);
  CHECK_CONTAINS(err, dbpath);
  close_store(&loop, st);
  /* Released on close: a new owner may open it. */
  st = open_store(&loop);
  close_store(&loop, st);
  CHECK_INT(uv_loop_close(&loop), 0);
}

static void test_open_error(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct store *st = NULL;
  char err[256] = "", path[400];
  snprintf(path, sizeof path, "%s/no-such-dir/q.db", dir);
  int r = store_open(&loop, path, &st, err, sizeof err);
  CHECK_INT(r, -ENOENT);
  CHECK_CONTAINS(err, "no-such-dir");
  /* A read-only directory (meaningless for root, who ignores modes). */
  if (geteuid() != 0) {
    char ro[400];
    snprintf(ro, sizeof ro, "%s/ro", dir);
    mkdir(ro, 0555);
    snprintf(path, sizeof path, "%s/q.db", ro);
    r = store_open(&loop, path, &st, err, sizeof err);
    CHECK_INT(r, -EACCES);
  }
  CHECK_INT(uv_loop_close(&loop), 0);
}

static void test_commit_one_and_group(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct store *st = open_store(&loop);
  struct store_stats s0, s1;
  store_get_stats(st, &s0);

  done_count = 0;
  char id[STORE_ID_SIZE];
  commit_small(st, 2, id, "Subject: hi\r\n\r\nbody\r\n");
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(done_count, 1);
  CHECK_INT(done_status[0], 0);
  store_get_stats(st, &s1);
  CHECK_INT(s1.transactions - s0.transactions, 1);

  show(&loop, st, id);
  CHECK_INT(shown.status, 0);
  CHECK_STR(shown.sender, "alice@a.example");
  CHECK_INT(shown.nrcpts, 2);
  CHECK_INT(shown.size, 28 + 21);
  CHECK_STR(shown.headers, "Received: from x by y; now\r\nSubject: hi\r\n");

  /* 100 commits started in one loop turn: the first runs alone, the rest
   * gather into the next batch. */
  done_count = 0;
  store_get_stats(st, &s0);
  for (int i = 0; i < 100; i++)
    commit_small(st, 1, NULL, "x\r\n");
  store_get_stats(st, &s1);
  CHECK_INT(s1.pending, 99);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(done_count, 100);
  int bad = 0;
  for (int i = 0; i < 100; i++)
    bad += done_status[i] != 0;
  CHECK_INT(bad, 0);
  store_get_stats(st, &s1);
  CHECK_INT(s1.commits - s0.commits, 100);
  CHECK_INT(s1.transactions - s0.transactions, 2);
  close_store(&loop, st);
  CHECK_INT(uv_loop_close(&loop), 0);
}

/* ---- big body through the spool --------------------------------------- */

#define BIG (5 * 1024 * 1024 + 12345)
static char *big;
static struct {
  struct store *st;
  struct store_spool *sp;
  size_t off;
  int pauses;
  int spool_cbs;
} feed;

static void feed_more(void);
static void on_spool(struct store_spool *sp, int status, void *data) {
  (void)sp;
  (void)data;
  CHECK_INT(status, 0);
  feed.spool_cbs++;
  feed_more();
}

/* The session's side of the backpressure contract: feed until PAUSE. */
static void feed_more(void) {
  while (feed.off < BIG) {
    size_t n = BIG - feed.off < 16384 ? BIG - feed.off : 16384;
    int r = store_spool_append(feed.sp, big + feed.off, n, on_spool, NULL);
    CHECK(r >= 0);
    if (r < 0)
      return;
    feed.off += n;
    if (r == STORE_SPOOL_PAUSE) {
      feed.pauses++;
      return;
    }
  }
}

static struct {
  char *buf;
  int64_t off, total;
  int calls, status;
  char id[STORE_ID_SIZE];
  struct store *st;
} rd;

static void on_read(struct store *st, int status, size_t n, int64_t total,
                    void *data) {
  (void)data;
  rd.calls++;
  rd.status = status;
  rd.total = total;
  if (status < 0)
    return;
  rd.off += (int64_t)n;
  if (n == 1 << 20)
    CHECK_INT(store_body_read(st, rd.id, rd.off, rd.buf + rd.off, 1 << 20,
                              on_read, NULL, NULL),
              0);
}

static int cancelled_spool_cbs, cancelled_spool_status;
static void on_spool_cancelled(struct store_spool *sp, int status, void *data) {
  (void)sp;
  (void)data;
  cancelled_spool_cbs++;
  cancelled_spool_status = status;
}

/* No temp file is left behind in the queue's directory. */
static void check_no_stray_spool(void) {
  DIR *d = opendir(dir);
  CHECK(d != NULL);
  struct dirent *e;
  while (d && (e = readdir(d)) != NULL)
    CHECK(strncmp(e->d_name, ".mailhop-spool-", 15) != 0);
  if (d)
    closedir(d);
}

/* A 5 MB body through the spool; no_tmpfile takes the fallback that file
 * systems without O_TMPFILE get (a named temp file, unlinked at once). */
static void test_big_body(int no_tmpfile) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct store *st = open_store(&loop);
  if (no_tmpfile)
    store_debug_no_tmpfile(st);
  big = malloc(BIG);
  uint32_t x = 12345;
  for (size_t i = 0; i < BIG; i++) {
    x = x * 1103515245u + 12345u;
    big[i] = (char)(x >> 16);
  }
  memcpy(big, "Subject: big\r\n\r\n", 16);
  memset(&feed, 0, sizeof feed);
  feed.st = st;
  feed.sp = store_spool_new(st);
  feed_more();
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(feed.off, BIG);
  CHECK(feed.pauses > 50);
  CHECK_INT(feed.spool_cbs, feed.pauses);
  CHECK_INT(store_spool_size(feed.sp), BIG);
  check_no_stray_spool();

  struct tmsg t;
  make_msg(&t, 1);
  done_count = 0;
  CHECK_INT(store_commit(st, &t.m, feed.sp, on_done, NULL, NULL), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(done_count, 1);
  CHECK_INT(done_status[0], 0);

  /* Read it back in 1 MiB chunks, as delivery would. */
  size_t plen = t.m.prefix_len;
  memset(&rd, 0, sizeof rd);
  rd.buf = malloc(BIG + plen + (1 << 20));
  memcpy(rd.id, t.m.id, sizeof rd.id);
  CHECK_INT(store_body_read(st, rd.id, 0, rd.buf, 1 << 20, on_read, NULL, NULL),
            0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(rd.status, 0);
  CHECK_INT(rd.total, BIG + plen);
  CHECK_INT(rd.off, BIG + plen);
  CHECK(memcmp(rd.buf, t.m.prefix, plen) == 0);
  CHECK(memcmp(rd.buf + plen, big, BIG) == 0);

  show(&loop, st, t.m.id);
  CHECK_STR(shown.headers, "Received: from x by y; now\r\nSubject: big\r\n");

  /* Unknown id. */
  free(rd.buf);
  memset(&rd, 0, sizeof rd);
  char buf[16];
  CHECK_INT(
      store_body_read(st, "nosuchid", 0, buf, sizeof buf, on_read, NULL, NULL),
      0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(rd.calls, 1);
  CHECK_INT(rd.status, -ENOENT);

  /* A spool freed in the middle of a disk write: callback once, -ECANCELED.
   * (No budget: it goes to disk past SPOOL_MEM.) */
  store_debug_spool_budget(st, 0);
  struct store_spool *sp = store_spool_new(st);
  cancelled_spool_cbs = 0;
  int r = 0;
  for (int i = 0; i < 10 && r == 0; i++)
    r = store_spool_append(sp, big, 16384, on_spool_cancelled, NULL);
  CHECK_INT(r, STORE_SPOOL_PAUSE);
  store_spool_free(sp);
  CHECK_INT(cancelled_spool_cbs, 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(cancelled_spool_cbs, 1);
  CHECK_INT(cancelled_spool_status, -ECANCELED);

  free(big);
  store_debug_spool_budget(st, SPOOL_BUDGET);
  close_store(&loop, st);
  CHECK_INT(uv_loop_close(&loop), 0);
}

/* ---- load after reopen, update, bounce --------------------------------- */

static struct {
  int calls, finals, status, msgs, rcpts;
  char first_id[STORE_ID_SIZE];
  struct store_job *job;
  int cancel_after;
  unsigned notices[8]; /* of the first messages, in order */
} ld;

static void on_msgs(struct store *st, int status, const struct store_msg *m,
                    size_t n, int done, void *data) {
  (void)st;
  (void)data;
  ld.calls++;
  ld.status = status;
  CHECK(ld.finals == 0); /* nothing after the final call */
  if (done)
    ld.finals++;
  for (size_t i = 0; i < n; i++) {
    if (ld.msgs == 0)
      memcpy(ld.first_id, m[i].id, STORE_ID_SIZE);
    if (ld.msgs < 8)
      ld.notices[ld.msgs] = m[i].notices;
    ld.msgs++;
    ld.rcpts += (int)m[i].nrcpts;
  }
  if (!done && ld.cancel_after && ld.calls == ld.cancel_after)
    store_cancel(ld.job);
}

static void test_load_update_bounce(void) {
  char p2[400];
  snprintf(p2, sizeof p2, "%s/q2.db", dir);
  char saved[300];
  memcpy(saved, dbpath, sizeof saved);
  snprintf(dbpath, sizeof dbpath, "%s", p2);

  uv_loop_t loop;
  uv_loop_init(&loop);
  struct store *st = open_store(&loop);
  char a[STORE_ID_SIZE], b[STORE_ID_SIZE];
  done_count = 0;
  commit_small(st, 3, a, "Subject: a\r\n\r\nA\r\n");
  commit_small(st, 1, b, "Subject: b\r\n\r\nB\r\n");
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(done_count, 2);
  CHECK(strcmp(a, b) < 0); /* time-ordered ids */
  close_store(&loop, st);

  /* Reopen: everything is still there. */
  st = open_store(&loop);
  memset(&ld, 0, sizeof ld);
  CHECK_INT(store_load(st, on_msgs, NULL, NULL), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(ld.finals, 1);
  CHECK_INT(ld.status, 0);
  CHECK_INT(ld.msgs, 2);
  CHECK_INT(ld.rcpts, 4);
  CHECK_STR(ld.first_id, a);

  /* a: rcpt 0 delivered, rcpt 1 deferred, rcpt 2 bounced, with a bounce. */
  struct store_outcome o[3] = {
      {.id = a, .idx = 0, .state = STORE_RCPT_DELIVERED, .attempts = 1},
      {.id = a,
       .idx = 1,
       .state = STORE_RCPT_DEFERRED,
       .attempts = 1,
       .next_attempt_at = 1700000300,
       .last_error = "451 4.7.1 try later"},
      {.id = a,
       .idx = 2,
       .state = STORE_RCPT_BOUNCED,
       .attempts = 1,
       .last_error = "550 5.1.1 no such user"},
  };
  struct store_rcpt brc = {.address = "alice@a.example", .domain = "a.example"};
  struct store_msg bounce = {.sender = "",
                             .received_at = 1700000100,
                             .rcpts = &brc,
                             .nrcpts = 1,
                             .prefix =
                                 "From: MAILER-DAEMON@y\r\n\r\nsorry\r\n"};
  bounce.prefix_len = strlen(bounce.prefix);
  struct store_stats s0, s1;
  store_get_stats(st, &s0);
  done_count = 0;
  CHECK_INT(store_update(st, o, 3, &bounce, on_done, NULL, NULL), 0);
  CHECK_INT(strlen(bounce.id), STORE_ID_LEN);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(done_count, 1);
  CHECK_INT(done_status[0], 0);
  store_get_stats(st, &s1);
  CHECK_INT(s1.transactions - s0.transactions, 1); /* one transaction */

  show(&loop, st, a);
  CHECK_INT(shown.status, 0);
  CHECK_INT(shown.states[0], STORE_RCPT_DELIVERED);
  CHECK_INT(shown.states[1], STORE_RCPT_DEFERRED);
  CHECK_INT(shown.states[2], STORE_RCPT_BOUNCED);
  CHECK_INT(shown.attempts[1], 1);
  CHECK_INT(shown.next[1], 1700000300);
  show(&loop, st, bounce.id);
  CHECK_INT(shown.status, 0);
  CHECK_STR(shown.sender, "");
  CHECK_STR(shown.headers, "From: MAILER-DAEMON@y\r\n");

  /* The last pending recipient delivered: the message leaves the queue. */
  struct store_outcome o2 = {
      .id = a, .idx = 1, .state = STORE_RCPT_DELIVERED, .attempts = 2};
  done_count = 0;
  CHECK_INT(store_update(st, &o2, 1, NULL, on_done, NULL, NULL), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(done_status[0], 0);
  show(&loop, st, a);
  CHECK_INT(shown.status, -ENOENT);

  /* Load now: only b.  The bounce was made by this process after the
   * open, so its maker schedules it: the load never hands it over. */
  memset(&ld, 0, sizeof ld);
  CHECK_INT(store_load(st, on_msgs, NULL, NULL), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(ld.msgs, 1);
  CHECK_INT(ld.rcpts, 1);
  CHECK_STR(ld.first_id, b);
  /* After a restart: b and the bounce. */
  close_store(&loop, st);
  st = open_store(&loop);
  memset(&ld, 0, sizeof ld);
  CHECK_INT(store_load(st, on_msgs, NULL, NULL), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(ld.msgs, 2);
  CHECK_INT(ld.rcpts, 2);

  /* Held flag, delete. */
  done_count = 0;
  CHECK_INT(store_set_held(st, b, 1, on_done, NULL), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(done_status[0], 0);
  show(&loop, st, b);
  CHECK_INT(shown.held, 1);
  done_count = 0;
  CHECK_INT(store_set_held(st, b, 0, on_done, NULL), 0);
  CHECK_INT(store_delete(st, b, on_done, NULL), 0);
  CHECK_INT(store_delete(st, b, on_done, NULL), 0);
  CHECK_INT(store_set_held(st, "nosuchid", 1, on_done, NULL), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(done_count, 4);
  CHECK_INT(done_status[0], 0);
  CHECK_INT(done_status[1], 0);
  CHECK_INT(done_status[2], -ENOENT);
  CHECK_INT(done_status[3], -ENOENT);
  show(&loop, st, b);
  CHECK_INT(shown.status, -ENOENT);
  CHECK_INT(store_delete(st, "bad id!", on_done, NULL), -EINVAL);

  close_store(&loop, st);
  CHECK_INT(uv_loop_close(&loop), 0);
  memcpy(dbpath, saved, sizeof saved);
}

/* ---- notices: kept, and added to a queue file made before them -------- */

/* Notice bits set by store_update are ORed in, survive a reopen, and a
 * queue file whose messages table lacks the column (made by a mailhop
 * before issue 19) gets it at open with 0 for every message, its messages
 * intact. */
static void test_notices(void) {
  char p3[400];
  snprintf(p3, sizeof p3, "%s/q3.db", dir);
  char saved[300];
  memcpy(saved, dbpath, sizeof saved);
  snprintf(dbpath, sizeof dbpath, "%s", p3);

  uv_loop_t loop;
  uv_loop_init(&loop);
  struct store *st = open_store(&loop);
  char a[STORE_ID_SIZE], b[STORE_ID_SIZE];
  done_count = 0;
  commit_small(st, 2, a, "Subject: a\r\n\r\nA\r\n");
  commit_small(st, 1, b, "Subject: b\r\n\r\nB\r\n");
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(done_count, 2);
  show(&loop, st, a);
  CHECK_INT(shown.notices, 0);
  struct store_outcome o[2] = {
      {.id = a,
       .idx = 0,
       .state = STORE_RCPT_DEFERRED,
       .attempts = 1,
       .next_attempt_at = 1700000300,
       .set_notices = STORE_NOTICE_DELAY},
      {.id = a,
       .idx = 1,
       .state = STORE_RCPT_DEFERRED,
       .attempts = 1,
       .next_attempt_at = 1700000300},
  };
  done_count = 0;
  CHECK_INT(store_update(st, o, 2, NULL, on_done, NULL, NULL), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(done_status[0], 0);
  /* A later outcome without the bit keeps it. */
  o[0].set_notices = 0;
  o[0].attempts = 2;
  done_count = 0;
  CHECK_INT(store_update(st, o, 1, NULL, on_done, NULL, NULL), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(done_status[0], 0);
  close_store(&loop, st);

  st = open_store(&loop);
  show(&loop, st, a);
  CHECK_INT(shown.status, 0);
  CHECK_INT(shown.notices, STORE_NOTICE_DELAY);
  CHECK_INT(shown.attempts[0], 2);
  show(&loop, st, b);
  CHECK_INT(shown.notices, 0);
  /* The load hands them to the scheduler too (deadlines, sched.h). */
  memset(&ld, 0, sizeof ld);
  CHECK_INT(store_load(st, on_msgs, NULL, NULL), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(ld.msgs, 2);
  CHECK_INT(ld.notices[0], STORE_NOTICE_DELAY); /* a sorts first */
  CHECK_INT(ld.notices[1], 0);
  close_store(&loop, st);

  /* The file as an older mailhop left it: no notices column. */
  sqlite3 *db = NULL;
  CHECK_INT(sqlite3_open(p3, &db), SQLITE_OK);
  CHECK_INT(sqlite3_exec(db, "ALTER TABLE messages DROP COLUMN notices", NULL,
                         NULL, NULL),
            SQLITE_OK);
  sqlite3_close(db);
  st = open_store(&loop);
  show(&loop, st, a);
  CHECK_INT(shown.status, 0);
  CHECK_INT(shown.notices, 0);
  CHECK_INT(shown.nrcpts, 2);
  CHECK_INT(shown.attempts[0], 2);
  memset(&ld, 0, sizeof ld);
  CHECK_INT(store_load(st, on_msgs, NULL, NULL), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(ld.status, 0);
  CHECK_INT(ld.msgs, 2);
  close_store(&loop, st);
  /* Opened again: the column is there once, nothing to add. */
  st = open_store(&loop);
  CHECK(st != NULL);
  close_store(&loop, st);

  CHECK_INT(uv_loop_close(&loop), 0);
  memcpy(dbpath, saved, sizeof saved);
}

/* ---- the load sees only what was there at open ------------------------- */

static struct store_counts counted;
static int count_calls, count_status;
static void on_count(struct store *st, int status, const struct store_counts *c,
                     void *data) {
  (void)st;
  (void)data;
  count_calls++;
  count_status = status;
  if (c)
    counted = *c;
}

/* Start-up with delivery live (issue 14): a message committed (and maybe
 * delivered) while the load runs must never come out of the load as well;
 * store_count() says beforehand exactly what the load will hand over. */
static void test_load_ceiling(void) {
  char saved[300];
  memcpy(saved, dbpath, sizeof saved);
  snprintf(dbpath, sizeof dbpath, "%s/q8.db", dir);
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct store *st = open_store(&loop);
  char old1[STORE_ID_SIZE], old2[STORE_ID_SIZE], fresh[STORE_ID_SIZE];
  done_count = 0;
  commit_small(st, 2, old1, "Subject: 1\r\n\r\n1\r\n");
  commit_small(st, 1, old2, "Subject: 2\r\n\r\n2\r\n");
  uv_run(&loop, UV_RUN_DEFAULT);
  struct store_outcome o = {.id = old1,
                            .idx = 1,
                            .state = STORE_RCPT_DEFERRED,
                            .attempts = 3,
                            .next_attempt_at = 1700000300};
  CHECK_INT(store_update(st, &o, 1, NULL, on_done, NULL, NULL), 0);
  CHECK_INT(store_set_held(st, old2, 1, on_done, NULL), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(done_count, 4);
  close_store(&loop, st);

  st = open_store(&loop);
  /* Committed after the open, before the load reaches it (here: before it
   * starts, so that the old behaviour fails every time). */
  done_count = 0;
  commit_small(st, 1, fresh, "Subject: new\r\n\r\nnew\r\n");
  CHECK(strcmp(fresh, old2) > 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(done_status[0], 0);
  count_calls = 0;
  CHECK_INT(store_count(st, on_count, NULL), 0);
  memset(&ld, 0, sizeof ld);
  CHECK_INT(store_load(st, on_msgs, NULL, NULL), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(ld.status, 0);
  CHECK_INT(ld.msgs, 2); /* old1 and old2, never fresh */
  CHECK_INT(ld.rcpts, 3);
  CHECK_INT(count_calls, 1);
  CHECK_INT(count_status, 0);
  CHECK_INT((int)counted.messages, 2);
  CHECK_INT((int)counted.recipients, 3);
  CHECK_INT((int)counted.deferred, 1);
  CHECK_INT((int)counted.held, 1);
  close_store(&loop, st);

  /* Ids made after a reopen sort after every id already there, even when
   * the clock went back: here the largest id is from 2039. */
  st = open_store(&loop);
  struct tmsg t;
  make_msg(&t, 1);
  snprintf(t.m.id, sizeof t.m.id, "%s", "A00000000abcde");
  struct store_spool *sp = store_spool_new(st);
  CHECK_INT(store_commit(st, &t.m, sp, on_done, NULL, NULL), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  close_store(&loop, st);
  st = open_store(&loop);
  char id[STORE_ID_SIZE];
  store_new_id(st, id);
  CHECK(strcmp(id, "A00000000abcde") > 0);
  memset(&ld, 0, sizeof ld);
  CHECK_INT(store_load(st, on_msgs, NULL, NULL), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(ld.msgs, 4); /* old1, old2, fresh and the future one */
  close_store(&loop, st);
  CHECK_INT(uv_loop_close(&loop), 0);
  memcpy(dbpath, saved, sizeof saved);
}

/* ---- cancel ----------------------------------------------------------- */

static void test_cancel(void) {
  char saved[300];
  memcpy(saved, dbpath, sizeof saved);
  snprintf(dbpath, sizeof dbpath, "%s/q3.db", dir);
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct store *st = open_store(&loop);

  struct tmsg t1, t2;
  make_msg(&t1, 1);
  make_msg(&t2, 1);
  struct store_job *j1, *j2;
  done_count = 0;
  CHECK_INT(store_commit(st, &t1.m, NULL, on_done, NULL, &j1), 0);
  CHECK_INT(store_commit(st, &t2.m, NULL, on_done, NULL, &j2), 0);
  store_cancel(j2);         /* pending: dropped */
  store_cancel(j1);         /* running: completes */
  CHECK_INT(done_count, 0); /* never from inside store_cancel */
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(done_count, 2);
  CHECK_INT(done_status[0], 0);
  CHECK_INT(done_status[1], -ECANCELED);
  show(&loop, st, t1.m.id);
  CHECK_INT(shown.status, 0);
  show(&loop, st, t2.m.id);
  CHECK_INT(shown.status, -ENOENT);

  close_store(&loop, st);
  CHECK_INT(uv_loop_close(&loop), 0);
  memcpy(dbpath, saved, sizeof saved);
}

/* ---- 10,000 messages listed in batches --------------------------------- */

static void test_list_10k(void) {
  char saved[300];
  memcpy(saved, dbpath, sizeof saved);
  snprintf(dbpath, sizeof dbpath, "%s/q4.db", dir);
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct store *st = open_store(&loop);
  done_count = 0;
  for (int i = 0; i < 10000; i++)
    commit_small(st, 2, NULL, "Subject: n\r\n\r\nn\r\n");
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(done_count, 10000);
  struct store_stats s;
  store_get_stats(st, &s);
  CHECK(s.transactions < 10);

  memset(&ld, 0, sizeof ld);
  CHECK_INT(store_list(st, on_msgs, NULL, &ld.job), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(ld.status, 0);
  CHECK_INT(ld.finals, 1);
  CHECK_INT(ld.msgs, 10000);
  CHECK_INT(ld.rcpts, 20000);
  CHECK(ld.calls >= 10000 / STORE_BATCH);

  /* Cancelled after the third batch: one final -ECANCELED call. */
  memset(&ld, 0, sizeof ld);
  ld.cancel_after = 3;
  CHECK_INT(store_list(st, on_msgs, NULL, &ld.job), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(ld.calls, 4);
  CHECK_INT(ld.finals, 1);
  CHECK_INT(ld.status, -ECANCELED);
  CHECK_INT(ld.msgs, 3 * STORE_BATCH);

  close_store(&loop, st);
  CHECK_INT(uv_loop_close(&loop), 0);
  memcpy(dbpath, saved, sizeof saved);
}

/* ---- database full ---------------------------------------------------- */

static void test_full(void) {
  char saved[300];
  memcpy(saved, dbpath, sizeof saved);
  snprintf(dbpath, sizeof dbpath, "%s/q5.db", dir);
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct store *st = open_store(&loop);
  char a[STORE_ID_SIZE];
  done_count = 0;
  commit_small(st, 1, a, "Subject: keep\r\n\r\nkeep\r\n");
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(done_status[0], 0);

  /* Cap the file where it is: the next big message cannot fit. */
  CHECK_INT(store_debug_max_pages(st, 8), 0);
  struct tmsg t;
  make_msg(&t, 1);
  struct store_spool *sp = store_spool_new(st);
  char *blob = calloc(1, 60000);
  memset(blob, 'z', 60000);
  CHECK_INT(store_spool_append(sp, blob, 60000, NULL, NULL), 0);
  free(blob);
  done_count = 0;
  CHECK_INT(store_commit(st, &t.m, sp, on_done, NULL, NULL), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(done_count, 1);
  CHECK_INT(done_status[0], -ENOSPC);
  show(&loop, st, t.m.id);
  CHECK_INT(shown.status, -ENOENT);
  show(&loop, st, a); /* the earlier message is unharmed */
  CHECK_INT(shown.status, 0);
  struct store_stats s;
  store_get_stats(st, &s);
  CHECK_INT(s.failed, 1);
  close_store(&loop, st);

  st = open_store(&loop);
  show(&loop, st, a);
  CHECK_INT(shown.status, 0);
  close_store(&loop, st);
  CHECK_INT(uv_loop_close(&loop), 0);
  memcpy(dbpath, saved, sizeof saved);
}

/* ---- a failed COMMIT --------------------------------------------------- */

/* A COMMIT that fails (SQLITE_BUSY, an I/O error) can leave the writer
 * connection inside its transaction; the next batch must still commit. */
static void test_commit_fails_once(void) {
  char saved[300];
  memcpy(saved, dbpath, sizeof saved);
  snprintf(dbpath, sizeof dbpath, "%s/q6.db", dir);
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct store *st = open_store(&loop);
  char a[STORE_ID_SIZE], b[STORE_ID_SIZE];
  store_debug_fail_commits(st, 1);
  done_count = 0;
  commit_small(st, 1, a, "Subject: lost\r\n\r\nlost\r\n");
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(done_count, 1);
  CHECK_INT(done_status[0], -EIO);
  commit_small(st, 1, b, "Subject: next\r\n\r\nnext\r\n");
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(done_count, 2);
  CHECK_INT(done_status[1], 0);
  CHECK_INT(store_delete(st, b, on_done, NULL), 0); /* and the one after */
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(done_count, 3);
  CHECK_INT(done_status[2], 0);
  commit_small(st, 1, b, "Subject: kept\r\n\r\nkept\r\n");
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(done_status[3], 0);
  close_store(&loop, st);

  /* Durable: after a reopen the failed one is absent, the last one there. */
  st = open_store(&loop);
  show(&loop, st, a);
  CHECK_INT(shown.status, -ENOENT);
  show(&loop, st, b);
  CHECK_INT(shown.status, 0);
  close_store(&loop, st);
  CHECK_INT(uv_loop_close(&loop), 0);
  memcpy(dbpath, saved, sizeof saved);
}

/* ---- the ENOSPC hook -------------------------------------------------- */

static int enospc_spool_calls, enospc_spool_status;
static void on_enospc_spool(struct store_spool *sp, int status, void *data) {
  (void)sp;
  (void)data;
  enospc_spool_calls++;
  enospc_spool_status = status;
}

static void test_enospc_hook(void) {
  char saved[300], flag[300];
  memcpy(saved, dbpath, sizeof saved);
  snprintf(dbpath, sizeof dbpath, "%s/q7.db", dir);
  snprintf(flag, sizeof flag, "%s/disk-full", dir);
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct store *st = open_store(&loop);
  CHECK_INT(store_debug_enospc_file(st, flag), 0);
  char a[STORE_ID_SIZE], b[STORE_ID_SIZE];
  done_count = 0;
  commit_small(st, 1, a, "Subject: before\r\n\r\nbefore\r\n");
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(done_status[0], 0);

  FILE *f = fopen(flag, "w"); /* the disk is full */
  CHECK(f != NULL);
  if (f)
    fclose(f);
  commit_small(st, 1, b, "Subject: refused\r\n\r\nrefused\r\n");
  CHECK_INT(store_delete(st, a, on_done, NULL), 0);
  CHECK_INT(store_set_held(st, a, 1, on_done, NULL), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(done_count, 4);
  CHECK_INT(done_status[1], -ENOSPC);
  CHECK_INT(done_status[2], -ENOSPC);
  CHECK_INT(done_status[3], -ENOSPC);
  show(&loop, st, a); /* still there, not held */
  CHECK_INT(shown.status, 0);
  CHECK_INT(shown.held, 0);
  show(&loop, st, b);
  CHECK_INT(shown.status, -ENOENT);
  /* A spool that goes to disk fails too. */
  store_debug_spool_budget(st, 0);
  struct store_spool *sp = store_spool_new(st);
  char *big = calloc(1, STORE_SPOOL_MEM);
  memset(big, 'x', STORE_SPOOL_MEM);
  enospc_spool_calls = 0;
  CHECK_INT(store_spool_append(sp, big, STORE_SPOOL_MEM, on_enospc_spool, NULL),
            STORE_SPOOL_PAUSE);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(enospc_spool_calls, 1);
  CHECK_INT(enospc_spool_status, -ENOSPC);
  store_spool_free(sp);

  CHECK_INT(unlink(flag), 0); /* space again */
  sp = store_spool_new(st);
  enospc_spool_calls = 0;
  CHECK_INT(store_spool_append(sp, big, STORE_SPOOL_MEM, on_enospc_spool, NULL),
            STORE_SPOOL_PAUSE);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(enospc_spool_calls, 1);
  CHECK_INT(enospc_spool_status, 0);
  store_spool_free(sp);
  free(big);
  CHECK_INT(store_delete(st, a, on_done, NULL), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(done_count, 5);
  CHECK_INT(done_status[4], 0);
  close_store(&loop, st);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(&loop), 0);
  memcpy(dbpath, saved, sizeof saved);
}

static void test_ids(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct store *st = open_store(&loop);
  char prev[STORE_ID_SIZE] = "", id[STORE_ID_SIZE];
  int ordered = 1, alnum = 1;
  for (int i = 0; i < 10000; i++) {
    store_new_id(st, id);
    ordered &= strcmp(prev, id) < 0;
    for (int k = 0; k < STORE_ID_LEN; k++)
      alnum &= !!strchr(
          "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
          id[k]);
    memcpy(prev, id, sizeof id);
  }
  CHECK(ordered);
  CHECK(alnum);
  close_store(&loop, st);
  CHECK_INT(uv_loop_close(&loop), 0);
}

/* ---- the fresh-message cache (queue/fresh.h) --------------------------- */

/* Everything show returns, as one string, so that the cache's answer and
 * the database's can be compared field by field. */
static char shown_all[4096];
static int shown_all_status;
static void on_show_all(struct store *st, int status, const struct store_msg *m,
                        void *data) {
  (void)st;
  (void)data;
  shown_all_status = status;
  shown_all[0] = '\0';
  if (!m)
    return;
  size_t k = (size_t)snprintf(
      shown_all, sizeof shown_all, "%s|%s|%lld|%lld|%d|%d|%s|%u|%u|%zu|%s",
      m->id, m->sender, (long long)m->size, (long long)m->received_at, m->held,
      m->ret, m->envid ? m->envid : "(null)", m->flags, m->notices, m->nrcpts,
      m->headers ? m->headers : "(null)");
  for (size_t i = 0; i < m->nrcpts && k < sizeof shown_all; i++) {
    const struct store_rcpt *r = &m->rcpts[i];
    k += (size_t)snprintf(
        shown_all + k, sizeof shown_all - k, "|%d %s %s %d %s %d %d %lld %s",
        r->idx, r->address, r->orcpt ? r->orcpt : "(null)", r->notify,
        r->domain, (int)r->state, r->attempts, (long long)r->next_attempt_at,
        r->last_error ? r->last_error : "(null)");
  }
}

static void show_all(uv_loop_t *loop, struct store *st, const char *id) {
  shown_all_status = 1;
  CHECK_INT(store_show(st, id, on_show_all, NULL), 0);
  CHECK_INT(shown_all_status, 1); /* never from inside the call */
  uv_run(loop, UV_RUN_DEFAULT);
}

/* Reads a whole body in chunks of pseudo-random sizes 1..maxchunk. */
static struct {
  char *buf;
  int64_t off, total;
  int status, calls;
  unsigned seed, maxchunk;
  char id[STORE_ID_SIZE];
} chunked;

static void on_chunk(struct store *st, int status, size_t n, int64_t total,
                     void *data) {
  (void)data;
  chunked.calls++;
  chunked.status = status;
  chunked.total = total;
  if (status < 0)
    return;
  size_t asked = (size_t)(uintptr_t)data;
  chunked.off += (int64_t)n;
  if (n < asked)
    return;
  chunked.seed = chunked.seed * 1103515245u + 12345u;
  size_t next = 1 + (chunked.seed >> 8) % chunked.maxchunk;
  CHECK_INT(store_body_read(st, chunked.id, chunked.off,
                            chunked.buf + chunked.off, next, on_chunk,
                            (void *)(uintptr_t)next, NULL),
            0);
}

static void read_chunked(uv_loop_t *loop, struct store *st, const char *id,
                         char *buf, unsigned seed, unsigned maxchunk) {
  memset(&chunked, 0, sizeof chunked);
  chunked.buf = buf;
  chunked.seed = seed;
  chunked.maxchunk = maxchunk;
  memcpy(chunked.id, id, STORE_ID_SIZE);
  CHECK_INT(
      store_body_read(st, id, 0, buf, 1, on_chunk, (void *)(uintptr_t)1, NULL),
      0);
  uv_run(loop, UV_RUN_DEFAULT);
  CHECK_INT(chunked.status, 0);
  CHECK_INT(chunked.off, chunked.total);
}

#define FRESH_BIG (200 * 1024) /* beyond the spool's memory: a temp file */

/* A message read back right after its commit comes from the cache, and
 * the cache answers exactly what the database answers after a restart
 * (every field of show, every byte of the body, in chunks of any size);
 * a writer request naming the message drops it, so the next show sees the
 * database's new state. */
static void test_fresh(void) {
  char saved[300];
  memcpy(saved, dbpath, sizeof saved);
  snprintf(dbpath, sizeof dbpath, "%s/qf.db", dir);
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct store *st = open_store(&loop);

  char ida[STORE_ID_SIZE], idb[STORE_ID_SIZE], idc[STORE_ID_SIZE];
  done_count = 0;
  commit_small(st, 3, ida, "Subject: fresh\r\nX-A: 1\r\n\r\nhello\r\n");
  /* B: 200 KiB through the spool's temp file (no budget), no empty line */
  char *bigb = malloc(FRESH_BIG);
  for (size_t i = 0; i < FRESH_BIG; i++)
    bigb[i] = (char)('a' + i % 23);
  memcpy(bigb, "Subject: b\r\n", 12);
  {
    struct tmsg t;
    make_msg(&t, 1);
    store_debug_spool_budget(st, 0); /* B goes through its temp file */
    struct store_spool *sp = store_spool_new(st);
    cancelled_spool_cbs = 0;
    size_t off = 0;
    while (off < FRESH_BIG) {
      size_t n = FRESH_BIG - off < 16384 ? FRESH_BIG - off : 16384;
      int r = store_spool_append(sp, bigb + off, n, on_spool_cancelled, NULL);
      CHECK(r >= 0);
      off += n;
      if (r == STORE_SPOOL_PAUSE)
        uv_run(&loop, UV_RUN_DEFAULT); /* the write's callback */
    }
    CHECK(cancelled_spool_cbs > 0);
    CHECK_INT(cancelled_spool_status, 0);
    store_debug_spool_budget(st, SPOOL_BUDGET);
    CHECK_INT(store_commit(st, &t.m, sp, on_done, NULL, NULL), 0);
    memcpy(idb, t.m.id, STORE_ID_SIZE);
  }
  commit_small(st, 1, idc, "Subject: c\r\n\r\nbody\r\n");
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(done_count, 3);
  CHECK_INT(done_status[0] | done_status[1] | done_status[2], 0);

  struct store_stats s0, s1;
  store_get_stats(st, &s0);
  CHECK_INT(s0.fresh_entries, 3);

  char fresh_a[4096], fresh_b[4096];
  show_all(&loop, st, ida);
  CHECK_INT(shown_all_status, 0);
  snprintf(fresh_a, sizeof fresh_a, "%s", shown_all);
  show_all(&loop, st, idb);
  snprintf(fresh_b, sizeof fresh_b, "%s", shown_all);
  size_t plen = strlen("Received: from x by y; now\r\n");
  char *ba = calloc(1, 4096), *bb = calloc(1, FRESH_BIG + 4096);
  read_chunked(&loop, st, ida, ba, 7, 5);
  CHECK_INT(chunked.total, (int64_t)plen + 33);
  read_chunked(&loop, st, idb, bb, 9, 70000);
  CHECK_INT(chunked.total, (int64_t)(plen + FRESH_BIG));
  CHECK(memcmp(bb + plen, bigb, FRESH_BIG) == 0);
  store_get_stats(st, &s1);
  /* every one of those reads came from memory: none reached the database */
  CHECK_INT(s1.fresh_misses, s0.fresh_misses);
  CHECK(s1.fresh_hits >= s0.fresh_hits + 4);

  /* A read from the cache cancelled at once still reports its result,
   * once, and never from inside store_cancel. */
  char small[8];
  struct store_job *job = NULL;
  memset(&rd, 0, sizeof rd);
  CHECK_INT(
      store_body_read(st, ida, 0, small, sizeof small, on_read, NULL, &job), 0);
  store_cancel(job);
  CHECK_INT(rd.calls, 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(rd.calls, 1);
  CHECK_INT(rd.status, 0);
  CHECK(memcmp(small, "Received", 8) == 0);

  /* A deferral of C's recipient: the next show is the database's. */
  struct store_outcome oc = {.id = idc,
                             .idx = 0,
                             .state = STORE_RCPT_DEFERRED,
                             .attempts = 1,
                             .next_attempt_at = 1700000300,
                             .last_error = "451 try later"};
  done_count = 0;
  CHECK_INT(store_update(st, &oc, 1, NULL, on_done, NULL, NULL), 0);
  store_get_stats(st, &s0);
  CHECK_INT(s0.fresh_entries, 2);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(done_status[0], 0);
  show(&loop, st, idc);
  CHECK_INT(shown.states[0], STORE_RCPT_DEFERRED);
  CHECK_INT(shown.attempts[0], 1);
  CHECK_STR(shown.last_error, "451 try later");
  /* held: dropped too */
  CHECK_INT(store_set_held(st, ida, 1, on_done, NULL), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  show(&loop, st, ida);
  CHECK_INT(shown.held, 1);
  CHECK_INT(store_set_held(st, ida, 0, on_done, NULL), 0);
  uv_run(&loop, UV_RUN_DEFAULT);

  /* A writer request that names a message while its commit is still in
   * flight (an admin hold or delete by id, a bulk action whose selection
   * saw the row before the commit was reported): the commit must not then
   * put the message in the cache as committed (found by review). */
  {
    char idh[STORE_ID_SIZE], idd[STORE_ID_SIZE];
    store_get_stats(st, &s0);
    done_count = 0;
    commit_small(st, 1, idh, "Subject: h\r\n\r\nheld\r\n");
    CHECK_INT(store_set_held(st, idh, 1, on_done, NULL), 0);
    commit_small(st, 1, idd, "Subject: d\r\n\r\ndeleted\r\n");
    CHECK_INT(store_delete(st, idd, on_done, NULL), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_INT(done_count, 4);
    store_get_stats(st, &s1);
    CHECK_INT(s1.fresh_entries, s0.fresh_entries);
    show(&loop, st, idh);
    CHECK_INT(shown.status, 0);
    CHECK_INT(shown.held, 1);
    show(&loop, st, idd);
    CHECK_INT(shown.status, -ENOENT);
    memset(&rd, 0, sizeof rd);
    char tmp[16];
    CHECK_INT(store_body_read(st, idd, 0, tmp, sizeof tmp, on_read, NULL, NULL),
              0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_INT(rd.status, -ENOENT);
    CHECK_INT(store_set_held(st, idh, 0, on_done, NULL), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
  }

  /* After a restart the cache is empty: the database answers the same. */
  close_store(&loop, st);
  st = open_store(&loop);
  store_get_stats(st, &s0);
  CHECK_INT(s0.fresh_entries, 0);
  show_all(&loop, st, ida);
  CHECK_STR(shown_all, fresh_a);
  show_all(&loop, st, idb);
  CHECK_STR(shown_all, fresh_b);
  char *da = calloc(1, 4096), *db = calloc(1, FRESH_BIG + 4096);
  read_chunked(&loop, st, ida, da, 3, 11);
  CHECK(memcmp(ba, da, 4096) == 0);
  read_chunked(&loop, st, idb, db, 5, 70000);
  CHECK(memcmp(bb, db, FRESH_BIG + 4096) == 0);
  store_get_stats(st, &s1);
  CHECK(s1.fresh_misses > s0.fresh_misses);
  CHECK_INT(s1.fresh_hits, s0.fresh_hits);

  free(ba);
  free(bb);
  free(da);
  free(db);
  free(bigb);
  close_store(&loop, st);
  CHECK_INT(uv_loop_close(&loop), 0);
  memcpy(dbpath, saved, sizeof saved);
}

/* The cache's bounds, on its own: the byte budget counts reservations,
 * a message over FRESH_MSG_MAX is never kept, and room is made only by
 * evicting entries older than FRESH_AGE_MS. */
static void test_fresh_bounds(void) {
  struct fresh f;
  CHECK_INT(fresh_init(&f), 0);
  CHECK_INT(fresh_reserve(&f, FRESH_MSG_MAX + 1, 0), 0);
  CHECK_INT(fresh_reserve(&f, 0, 0), 0);
  size_t per = FRESH_MSG_MAX, n = FRESH_BUDGET / per;
  for (size_t i = 0; i < n; i++) {
    CHECK_INT(fresh_reserve(&f, per, 1000), 1);
    struct store_msg m = {.size = (int64_t)per};
    snprintf(m.id, sizeof m.id, "id%zu", i);
    m.sender = strdup("a@b.example");
    CHECK_INT(fresh_put(&f, &m, calloc(1, per), 0, 1000 + i), 0);
  }
  CHECK_INT(f.used, n * per);
  CHECK_INT(f.reserved, 0);
  /* full, and nothing old enough to evict */
  CHECK_INT(fresh_reserve(&f, 1, 1000 + FRESH_AGE_MS - 1), 0);
  /* id0 is now old enough: it alone goes */
  CHECK_INT(fresh_reserve(&f, per, 1000 + FRESH_AGE_MS), 1);
  CHECK(fresh_get(&f, "id0") == NULL);
  CHECK(fresh_get(&f, "id1") != NULL);
  CHECK_INT(f.entries, n - 1);
  fresh_unreserve(&f, per);
  fresh_drop(&f, "id1");
  fresh_drop(&f, "nosuch");
  CHECK(fresh_get(&f, "id1") == NULL);
  CHECK_INT(f.entries, n - 2);
  CHECK_INT(f.used, (n - 2) * per);
  fresh_fini(&f);
}

/* Spools grow in memory past SPOOL_MEM while the store's budget lasts:
 * one that does not fit goes to disk as before, a grown one that passes
 * SPOOL_MEM_MAX writes all it holds to its file and gives the budget
 * back, and a freed one gives it back too.  What each stored is what was
 * appended. */
static void append_all(uv_loop_t *loop, struct store_spool *sp, const char *p,
                       size_t n, int *pauses) {
  for (size_t off = 0; off < n;) {
    size_t k = n - off < 16384 ? n - off : 16384;
    int r = store_spool_append(sp, p + off, k, on_spool_cancelled, NULL);
    CHECK(r >= 0);
    if (r < 0)
      return;
    off += k;
    if (r == STORE_SPOOL_PAUSE) {
      (*pauses)++;
      uv_run(loop, UV_RUN_DEFAULT);
      CHECK_INT(cancelled_spool_status, 0);
    }
  }
}

static void test_spool_budget(void) {
  char saved[300];
  memcpy(saved, dbpath, sizeof saved);
  snprintf(dbpath, sizeof dbpath, "%s/qb.db", dir);
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct store *st = open_store(&loop);
  /* room for exactly one spool grown to SPOOL_MEM_MAX */
  store_debug_spool_budget(st, SPOOL_MEM_MAX - SPOOL_MEM);
  size_t n = 3 * SPOOL_MEM_MAX;
  char *data = malloc(n);
  for (size_t i = 0; i < n; i++)
    data[i] = (char)('A' + i % 26);
  struct store_stats ss;

  struct store_spool *a = store_spool_new(st), *b = store_spool_new(st);
  int pa = 0, pb = 0;
  append_all(&loop, a, data, SPOOL_MEM_MAX - 100, &pa);
  CHECK_INT(pa, 0); /* all in memory */
  store_get_stats(st, &ss);
  CHECK_INT(ss.spool_mem, SPOOL_MEM_MAX - SPOOL_MEM);
  append_all(&loop, b, data, 200000, &pb);
  CHECK(pb >= 1); /* no budget left: to disk past SPOOL_MEM */
  /* a passes SPOOL_MEM_MAX: one write of all it holds, budget back */
  append_all(&loop, a, data + SPOOL_MEM_MAX - 100, 100 + 2 * SPOOL_MEM, &pa);
  CHECK(pa >= 1);
  store_get_stats(st, &ss);
  CHECK_INT(ss.spool_mem, 0);
  CHECK_INT(store_spool_size(a), SPOOL_MEM_MAX + 2 * SPOOL_MEM);
  /* a third grows again into the budget a gave back; freed, it returns */
  struct store_spool *c = store_spool_new(st);
  int pc = 0;
  append_all(&loop, c, data, 300000, &pc);
  CHECK_INT(pc, 0);
  store_get_stats(st, &ss);
  CHECK(ss.spool_mem > 0);
  store_spool_free(c);
  store_get_stats(st, &ss);
  CHECK_INT(ss.spool_mem, 0);

  /* what a and b stored is what was appended */
  struct tmsg ta, tb;
  make_msg(&ta, 1);
  make_msg(&tb, 1);
  done_count = 0;
  CHECK_INT(store_commit(st, &ta.m, a, on_done, NULL, NULL), 0);
  CHECK_INT(store_commit(st, &tb.m, b, on_done, NULL, NULL), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(done_count, 2);
  CHECK_INT(done_status[0] | done_status[1], 0);
  close_store(&loop, st); /* read back from the database, not the cache */
  st = open_store(&loop);
  size_t plen = ta.m.prefix_len;
  char *back = malloc(n + plen);
  read_chunked(&loop, st, ta.m.id, back, 1, 70000);
  CHECK_INT(chunked.total, (int64_t)(plen + SPOOL_MEM_MAX + 2 * SPOOL_MEM));
  CHECK(memcmp(back + plen, data, SPOOL_MEM_MAX + 2 * SPOOL_MEM) == 0);
  read_chunked(&loop, st, tb.m.id, back, 2, 70000);
  CHECK_INT(chunked.total, (int64_t)(plen + 200000));
  CHECK(memcmp(back + plen, data, 200000) == 0);
  free(back);
  free(data);
  close_store(&loop, st);
  CHECK_INT(uv_loop_close(&loop), 0);
  memcpy(dbpath, saved, sizeof saved);
}

int main(void) {
  if (!check_tmpdir(dir, sizeof dir, "test_store")) {
    perror("mkdtemp");
    return 1;
  }
  snprintf(dbpath, sizeof dbpath, "%s/q.db", dir);
  test_open_lock();
  test_open_error();
  test_ids();
  test_commit_one_and_group();
  test_big_body(0);
  test_load_update_bounce();
  test_notices();
  test_cancel();
  test_list_10k();
  test_full();
  test_commit_fails_once();
  test_enospc_hook();
  test_load_ceiling();
  test_fresh();
  test_fresh_bounds();
  test_spool_budget();
  test_big_body(1); /* last: it adds a message the tests above don't expect */
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "cannot remove %s\n", dir);
  return check_result("test_store");
}
