/*
 * test_store_select: the store's queue-control queries on a real SQLite
 * file and a real loop: store_select() with every filter and its paging
 * (bounded matches and bounded scans), store_bulk() (delete, hold,
 * release; an id already gone; a full disk changes nothing),
 * store_suspend() kept across a reopen, and the migration of a version 1
 * queue.
 */
#include "check.h"
#include "queue/store.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N_FILL 5000 /* more than STORE_SCAN and many STORE_BATCH pages */

static char dir[256], dbpath[300];
static uv_loop_t loop;

static struct store *open_store(void) {
  struct store *st = NULL;
  char err[256] = "";
  int r = store_open(&loop, dbpath, &st, err, sizeof err);
  CHECK_INT(r, 0);
  if (r)
    fprintf(stderr, "store_open: %s\n", err);
  return st;
}

static void close_store(struct store *st) {
  store_close(st, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
}

static int pending, failed;
static void on_done(struct store *st, int status, void *data) {
  (void)st;
  (void)data;
  pending--;
  failed += status != 0;
}

static void commit(struct store *st, const char *sender, const char *rcpt,
                   const char *rcpt2, int64_t received_at,
                   char id[STORE_ID_SIZE]) {
  struct store_rcpt r[2];
  memset(r, 0, sizeof r);
  const char *rs[] = {rcpt, rcpt2};
  size_t n = 0;
  for (int i = 0; i < 2 && rs[i]; i++, n++) {
    r[i].address = (char *)rs[i];
    r[i].domain = strchr(rs[i], '@') + 1;
  }
  struct store_msg m;
  memset(&m, 0, sizeof m);
  m.sender = (char *)sender;
  m.received_at = received_at;
  m.rcpts = r;
  m.nrcpts = n;
  m.prefix = "Subject: t\r\n\r\nbody\r\n";
  m.prefix_len = strlen(m.prefix);
  CHECK_INT(store_commit(st, &m, NULL, on_done, NULL, NULL), 0);
  pending++;
  if (id)
    memcpy(id, m.id, STORE_ID_SIZE);
}

static void drain(void) {
  while (pending > 0)
    uv_run(&loop, UV_RUN_ONCE);
  CHECK_INT(failed, 0);
}

/* ---- select ----------------------------------------------------------- */

static struct {
  int status, done, calls;
  size_t n, maxpage, pages;
  char next[STORE_ID_SIZE];
  char first[8][STORE_ID_SIZE]; /* the first matches, in order */
  size_t rcpts_first;           /* recipients of the first match */
} sel;

static void on_page(struct store *st, int status, const struct store_msg *msgs,
                    size_t n, const char *next, int done, void *data) {
  (void)st;
  (void)data;
  sel.calls++;
  sel.status = status;
  sel.done = done;
  snprintf(sel.next, sizeof sel.next, "%s", next ? next : "");
  if (status < 0)
    return;
  sel.pages++;
  if (n > sel.maxpage)
    sel.maxpage = n;
  for (size_t i = 0; i < n; i++) {
    if (sel.n < 8)
      memcpy(sel.first[sel.n], msgs[i].id, STORE_ID_SIZE);
    if (sel.n == 0)
      sel.rcpts_first = msgs[i].nrcpts;
    sel.n++;
  }
}

/* Pages through every match of the filter words; returns how many. */
static size_t select_all(struct store *st, const char *line, int64_t now) {
  char buf[512];
  const char *w[8];
  size_t nw = 0;
  snprintf(buf, sizeof buf, "%s", line);
  for (char *save = NULL, *t = strtok_r(buf, " ", &save); t && nw < 8;
       t = strtok_r(NULL, " ", &save))
    w[nw++] = t;
  struct qfilter f;
  char err[160];
  CHECK_INT(qfilter_parse(&f, w, nw, err, sizeof err), 0);
  memset(&sel, 0, sizeof sel);
  char after[STORE_ID_SIZE] = "";
  for (;;) {
    int calls = sel.calls;
    CHECK_INT(store_select(st, &f, now, after, on_page, NULL), 0);
    while (sel.calls == calls)
      uv_run(&loop, UV_RUN_ONCE);
    CHECK_INT(sel.status, 0);
    if (sel.status < 0 || sel.done)
      break;
    /* the caller drives: the next page starts after the last examined */
    CHECK(strcmp(sel.next, after) > 0);
    memcpy(after, sel.next, sizeof after);
  }
  CHECK(sel.maxpage <= STORE_BATCH);
  return sel.n;
}

static char m_alice[STORE_ID_SIZE], m_shop[STORE_ID_SIZE],
    m_null[STORE_ID_SIZE], m_last[STORE_ID_SIZE];

static void set_held(struct store *st, const char *id, int held) {
  CHECK_INT(store_set_held(st, id, held, on_done, NULL), 0);
  pending++;
  drain();
}

static void test_select(struct store *st) {
  commit(st, "alice@a.example", "bob@b.example", NULL, 1000, m_alice);
  commit(st, "Bob@Shop.Example", "carol@c.example", NULL, 2000, m_shop);
  commit(st, "", "dan@B.example", "erin@c.example", 3000, m_null);
  drain();
  for (int i = 0; i < N_FILL; i++)
    commit(st, "fill@f.example", "x@f.example", NULL, 4000, NULL);
  commit(st, "last@shop.example", "y@l.example", NULL, 4000, m_last);
  drain();
  set_held(st, m_shop, 1);
  /* m_null's first recipient deferred */
  struct store_outcome o = {.id = m_null,
                            .idx = 0,
                            .state = STORE_RCPT_DEFERRED,
                            .attempts = 1,
                            .next_attempt_at = 9999,
                            .last_error = "451 later"};
  CHECK_INT(store_update(st, &o, 1, NULL, on_done, NULL, NULL), 0);
  pending++;
  drain();

  int64_t now = 5000;
  CHECK_INT(select_all(st, "", now), N_FILL + 4);
  CHECK_INT(select_all(st, "all", now), N_FILL + 4);
  /* domain: any pending recipient, case-insensitive */
  CHECK_INT(select_all(st, "domain=b.example", now), 2);
  CHECK_STR(sel.first[0], m_alice);
  CHECK_STR(sel.first[1], m_null);
  CHECK_INT(select_all(st, "domain=c.example", now), 2);
  CHECK_STR(sel.first[0], m_shop);
  CHECK_INT(select_all(st, "domain=nowhere.example", now), 0);
  /* the listing has every recipient of a match */
  CHECK_INT(select_all(st, "domain=c.example state=deferred", now), 1);
  CHECK_STR(sel.first[0], m_null);
  CHECK_INT(sel.rcpts_first, 2);
  /* sender, exact and by domain: over more than STORE_SCAN messages the
   * two matches come in more than one page (bounded scans) */
  CHECK_INT(select_all(st, "sender=@shop.example", now), 2);
  CHECK_STR(sel.first[0], m_shop);
  CHECK_STR(sel.first[1], m_last);
  CHECK(sel.pages >= 2);
  CHECK_INT(select_all(st, "sender=alice@A.example", now), 1);
  /* state */
  CHECK_INT(select_all(st, "state=held", now), 1);
  CHECK_STR(sel.first[0], m_shop);
  CHECK_INT(select_all(st, "state=deferred", now), 1);
  CHECK_STR(sel.first[0], m_null);
  /* queued: never tried (m_null's second recipient counts), not held */
  CHECK_INT(select_all(st, "state=queued", now), N_FILL + 3);
  /* age */
  CHECK_INT(select_all(st, "older_than=3000", now), 2);
  CHECK_INT(select_all(st, "older_than=3001", now), 1);
  CHECK_INT(select_all(st, "older_than=0", now), N_FILL + 4);
  /* many matches: full pages of STORE_BATCH */
  CHECK_INT(select_all(st, "domain=f.example", now), N_FILL);
  CHECK_INT(sel.maxpage, STORE_BATCH);
  CHECK(sel.pages >= N_FILL / STORE_BATCH);
  /* ANDed */
  CHECK_INT(select_all(st, "domain=f.example sender=@shop.example", now), 0);
  CHECK_INT(select_all(st, "sender=@shop.example state=held older_than=1", now),
            1);
  /* a bad `after` is refused without a callback */
  struct qfilter f;
  qfilter_init(&f);
  CHECK_INT(store_select(st, &f, now, "bad id!", on_page, NULL), -EINVAL);
}

/* ---- bulk ------------------------------------------------------------- */

static struct {
  int calls, status;
  int changed[STORE_BULK_MAX];
  size_t n;
} bulk;

static void on_bulk(struct store *st, int status, const int *changed, size_t n,
                    void *data) {
  (void)st;
  (void)data;
  bulk.calls++;
  bulk.status = status;
  bulk.n = n;
  CHECK(status < 0 ? changed == NULL : changed != NULL);
  for (size_t i = 0; changed && i < n && i < STORE_BULK_MAX; i++)
    bulk.changed[i] = changed[i];
}

static int run_bulk(struct store *st, enum store_bulk_action a,
                    const char *const *ids, size_t n) {
  memset(&bulk, 0, sizeof bulk);
  int rc = store_bulk(st, a, ids, n, on_bulk, NULL);
  if (rc < 0)
    return rc;
  while (bulk.calls == 0)
    uv_run(&loop, UV_RUN_ONCE);
  return bulk.status;
}

static void test_bulk(struct store *st) {
  const char *gone = "0000000000zzzz"; /* valid, never in the queue */
  const char *ids[] = {m_alice, gone, m_null};
  CHECK_INT(run_bulk(st, STORE_BULK_HOLD, ids, 3), 0);
  CHECK_INT(bulk.n, 3);
  CHECK_INT(bulk.changed[0], 1);
  CHECK_INT(bulk.changed[1], 0);
  CHECK_INT(bulk.changed[2], 1);
  CHECK_INT(select_all(st, "state=held", 5000), 3);
  /* held already: not changed (CONTRACT §1 counts what changed) */
  CHECK_INT(run_bulk(st, STORE_BULK_HOLD, ids, 3), 0);
  CHECK_INT(bulk.changed[0], 0);
  CHECK_INT(bulk.changed[1], 0);
  CHECK_INT(bulk.changed[2], 0);
  CHECK_INT(run_bulk(st, STORE_BULK_RELEASE, ids, 3), 0);
  CHECK_INT(bulk.changed[0], 1);
  CHECK_INT(bulk.changed[2], 1);
  CHECK_INT(select_all(st, "state=held", 5000), 1);
  CHECK_INT(run_bulk(st, STORE_BULK_RELEASE, ids, 3), 0);
  CHECK_INT(bulk.changed[0], 0);
  CHECK_INT(bulk.changed[2], 0);
  /* a full disk: the whole request fails, nothing changes */
  char full[400];
  snprintf(full, sizeof full, "%s/full", dir);
  FILE *fp = fopen(full, "w");
  CHECK(fp != NULL);
  if (fp)
    fclose(fp);
  CHECK_INT(run_bulk(st, STORE_BULK_DELETE, ids, 3), -ENOSPC);
  unlink(full);
  CHECK_INT(select_all(st, "domain=b.example", 5000), 2);
  /* delete: gone from the queue, the missing id skipped */
  CHECK_INT(run_bulk(st, STORE_BULK_DELETE, ids, 3), 0);
  CHECK_INT(bulk.changed[0], 1);
  CHECK_INT(bulk.changed[1], 0);
  CHECK_INT(bulk.changed[2], 1);
  CHECK_INT(select_all(st, "domain=b.example", 5000), 0);
  CHECK_INT(select_all(st, "", 5000), N_FILL + 2);
  /* refused without a callback */
  CHECK_INT(store_bulk(st, STORE_BULK_DELETE, ids, 0, on_bulk, NULL), -EINVAL);
  CHECK_INT(
      store_bulk(st, STORE_BULK_DELETE, ids, STORE_BULK_MAX + 1, on_bulk, NULL),
      -EINVAL);
  const char *bad[] = {"not an id"};
  CHECK_INT(store_bulk(st, STORE_BULK_HOLD, bad, 1, on_bulk, NULL), -EINVAL);
  CHECK_INT(store_bulk(st, (enum store_bulk_action)7, ids, 1, on_bulk, NULL),
            -EINVAL);
}

/* ---- suspensions -------------------------------------------------------- */

static void suspend(struct store *st, const char *dest, int64_t until) {
  CHECK_INT(store_suspend(st, dest, until, on_done, NULL), 0);
  pending++;
  drain();
}

static void test_suspensions(void) {
  struct store *st = open_store();
  const struct store_suspension *ss;
  CHECK_INT(store_suspensions_at_open(st, &ss), 0);
  suspend(st, "b.example", 1900000000);
  suspend(st, "[relay.example]:587", 1900000100);
  suspend(st, "b.example", 1900000200); /* replaced */
  suspend(st, "gone.example", 1900000300);
  suspend(st, "gone.example", 0);  /* removed */
  suspend(st, "never.example", 0); /* removing nothing is fine */
  CHECK_INT(store_suspend(st, "", 5, on_done, NULL), -EINVAL);
  CHECK_INT(store_suspend(st, "x", -1, on_done, NULL), -EINVAL);
  close_store(st);
  st = open_store();
  CHECK_INT(store_suspensions_at_open(st, &ss), 2);
  CHECK_STR(ss[0].dest, "[relay.example]:587");
  CHECK_INT(ss[0].until, 1900000100);
  CHECK_STR(ss[1].dest, "b.example");
  CHECK_INT(ss[1].until, 1900000200);
  suspend(st, "b.example", 0);
  suspend(st, "[relay.example]:587", 0);
  close_store(st);
}

/* The MTA-STS policy cache and TLS-RPT counts (CONTRACT §4b) survive a
 * close and open; a reset drops the counts and keeps the period start. */
static void test_trust(void) {
  struct store *st = open_store();
  CHECK_INT(store_sts_put(st, "a.example", "id1", 100, 200,
                          "version: STSv1\nmode: enforce\n", on_done, NULL),
            0);
  CHECK_INT(
      store_sts_put(st, "a.example", "id2", 150, 250, "v2", on_done, NULL), 0);
  CHECK_INT(store_sts_put(st, "b.example", "x", 1, 2, "b", on_done, NULL), 0);
  CHECK_INT(store_sts_put(st, "b.example", NULL, 0, 0, NULL, on_done, NULL), 0);
  CHECK_INT(store_sts_put(st, "", "x", 1, 2, "b", on_done, NULL), -EINVAL);
  CHECK_INT(store_tlsrpt_reset(st, 1000, on_done, NULL), 0);
  CHECK_INT(store_tlsrpt_add(st, "a.example", "sts", "", 2, on_done, NULL), 0);
  CHECK_INT(store_tlsrpt_add(st, "a.example", "sts", "", 3, on_done, NULL), 0);
  CHECK_INT(store_tlsrpt_add(st, "a.example", "sts", "validation-failure", 1,
                             on_done, NULL),
            0);
  pending += 7;
  drain();
  close_store(st);
  st = open_store();
  const struct store_sts_row *sts;
  const struct store_rpt_row *rpt;
  size_t nsts, nrpt;
  int64_t start;
  store_trust_at_open(st, &sts, &nsts, &rpt, &nrpt, &start);
  CHECK_INT(nsts, 1);
  if (nsts == 1) {
    CHECK_STR(sts[0].domain, "a.example");
    CHECK_STR(sts[0].id, "id2");
    CHECK_INT(sts[0].expires_at, 250);
    CHECK_STR(sts[0].policy, "v2");
  }
  CHECK_INT(start, 1000);
  CHECK_INT(nrpt, 2);
  int64_t ok = 0, bad = 0;
  for (size_t i = 0; i < nrpt; i++) {
    if (!rpt[i].result[0])
      ok += rpt[i].count;
    else
      bad += rpt[i].count;
  }
  CHECK_INT(ok, 5);
  CHECK_INT(bad, 1);
  CHECK_INT(store_tlsrpt_reset(st, 2000, on_done, NULL), 0);
  pending++;
  drain();
  close_store(st);
  st = open_store();
  store_trust_at_open(st, &sts, &nsts, &rpt, &nrpt, &start);
  CHECK_INT(nrpt, 0);
  CHECK_INT(start, 2000);
  close_store(st);
}

/* A queue made by the version that had no suspensions table opens,
 * migrates and keeps its mail. */
static void test_migrate_v1(void) {
  char path[400];
  snprintf(path, sizeof path, "%s/v1.db", dir);
  sqlite3 *db;
  CHECK_INT(sqlite3_open(path, &db), SQLITE_OK);
  const char *v1 =
      "CREATE TABLE messages(id TEXT PRIMARY KEY, sender TEXT NOT NULL,"
      " size INTEGER NOT NULL, received_at INTEGER NOT NULL,"
      " held INTEGER NOT NULL DEFAULT 0, ret INTEGER NOT NULL DEFAULT 0,"
      " envid TEXT, flags INTEGER NOT NULL DEFAULT 0, headers TEXT,"
      " body BLOB NOT NULL);"
      "CREATE TABLE recipients(message_id TEXT NOT NULL, idx INTEGER NOT NULL,"
      " address TEXT NOT NULL, orcpt TEXT, notify INTEGER NOT NULL DEFAULT 0,"
      " domain TEXT NOT NULL, state INTEGER NOT NULL DEFAULT 0,"
      " attempts INTEGER NOT NULL DEFAULT 0,"
      " next_attempt_at INTEGER NOT NULL DEFAULT 0, last_error TEXT,"
      " PRIMARY KEY(message_id, idx)) WITHOUT ROWID;"
      "INSERT INTO messages VALUES('0000000001abcd', 'a@v1.example', 3, 10,"
      " 0, 0, NULL, 0, 'x', x'414243');"
      "INSERT INTO recipients VALUES('0000000001abcd', 0, 'b@v1.example',"
      " NULL, 0, 'v1.example', 0, 0, 0, NULL);"
      "PRAGMA user_version = 1;";
  CHECK_INT(sqlite3_exec(db, v1, NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(db);
  char saved[300];
  memcpy(saved, dbpath, sizeof saved);
  snprintf(dbpath, sizeof dbpath, "%s", path);
  struct store *st = open_store();
  if (st) {
    CHECK_INT(select_all(st, "domain=v1.example", 100), 1);
    suspend(st, "v1.example", 1900000000);
    close_store(st);
  }
  CHECK_INT(sqlite3_open(path, &db), SQLITE_OK);
  sqlite3_stmt *s;
  CHECK_INT(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL),
            SQLITE_OK);
  CHECK_INT(sqlite3_step(s), SQLITE_ROW);
  CHECK_INT(sqlite3_column_int(s, 0), 3);
  sqlite3_finalize(s);
  sqlite3_close(db);
  memcpy(dbpath, saved, sizeof saved);
}

int main(void) {
  if (!check_tmpdir(dir, sizeof dir, "test_store_select")) {
    perror("mkdtemp");
    return 1;
  }
  snprintf(dbpath, sizeof dbpath, "%s/q.db", dir);
  uv_loop_init(&loop);
  struct store *st = open_store();
  if (!st)
    return check_result("test_store_select");
  char full[400];
  snprintf(full, sizeof full, "%s/full", dir);
  CHECK_INT(store_debug_enospc_file(st, full), 0);
  test_select(st);
  test_bulk(st);
  close_store(st);
  test_suspensions();
  test_trust();
  test_migrate_v1();
  CHECK_INT(uv_loop_close(&loop), 0);
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "cannot remove %s\n", dir);
  return check_result("test_store_select");
}
