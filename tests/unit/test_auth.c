/*
 * test_auth: the users file parser (pure, table-driven) and password checks
 * on a real libuv loop with real crypt hashes made here ($y$, $6$, $2b$).
 *
 * `test_auth --measure` instead reports how late a 10 ms timer fires while
 * 20 yescrypt checks are queued (the loop must not block); not a test.
 */
#include <crypt.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "relay/auth.h"
#include "unit/check.h"

static char hash_y[CRYPT_OUTPUT_SIZE], hash_6[CRYPT_OUTPUT_SIZE],
    hash_2b[CRYPT_OUTPUT_SIZE], hash_md5[CRYPT_OUTPUT_SIZE];

static void make_hash(const char *prefix, const char *pw, char *out) {
  char salt[CRYPT_GENSALT_OUTPUT_SIZE];
  struct crypt_data cd;
  memset(&cd, 0, sizeof cd);
  out[0] = '\0';
  if (!crypt_gensalt_rn(prefix, 0, NULL, 0, salt, sizeof salt))
    return;
  const char *h = crypt_rn(pw, salt, &cd, sizeof cd);
  if (h)
    snprintf(out, CRYPT_OUTPUT_SIZE, "%s", h);
}

/* ---- parser ------------------------------------------------------------ */

static int parse(const char *text, struct auth_table **t, char *err,
                 size_t errlen) {
  err[0] = '\0';
  return auth_parse_users(text, strlen(text), "users", t, err, errlen);
}

static void test_parse_good(void) {
  char text[4096], err[256];
  snprintf(text, sizeof text,
           "# users\r\n"
           "\r\n"
           "   \t\n"
           "  # indented comment\n"
           "alice:%s\r\n"
           "bob:%s   \n"
           "carol:%s\n"
           "dave@example.org:%s",
           hash_y, hash_6, hash_2b, hash_y);
  struct auth_table *t = NULL;
  CHECK_INT(parse(text, &t, err, sizeof err), 0);
  CHECK_STR(err, "");
  CHECK_INT(auth_table_count(t), 4);
  CHECK_STR(auth_table_hash(t, "alice"), hash_y);
  CHECK_STR(auth_table_hash(t, "bob"), hash_6);
  CHECK_STR(auth_table_hash(t, "carol"), hash_2b);
  CHECK_STR(auth_table_hash(t, "dave@example.org"), hash_y);
  CHECK(auth_table_hash(t, "Alice") == NULL); /* case-sensitive */
  CHECK(auth_table_hash(t, "eve") == NULL);
  CHECK(auth_table_hash(t, "") == NULL);
  /* $y$ is the most used method: its first hash is the dummy. */
  CHECK_STR(auth_table_dummy(t), hash_y);
  auth_table_free(t);

  /* Not NUL-terminated: only len bytes count. */
  snprintf(text, sizeof text, "bob:%sGARBAGE", hash_6);
  t = NULL;
  CHECK_INT(
      auth_parse_users(text, 4 + strlen(hash_6), "u", &t, err, sizeof err), 0);
  CHECK_STR(auth_table_hash(t, "bob"), hash_6);
  CHECK_STR(auth_table_dummy(t), hash_6);
  auth_table_free(t);

  /* Empty and comment-only files: no users, built-in yescrypt dummy. */
  const char *empties[] = {"", "\n", "# nobody\n\n"};
  for (size_t i = 0; i < sizeof empties / sizeof empties[0]; i++) {
    t = NULL;
    CHECK_INT(parse(empties[i], &t, err, sizeof err), 0);
    CHECK_INT(auth_table_count(t), 0);
    CHECK(strncmp(auth_table_dummy(t), "$y$", 3) == 0);
    CHECK(auth_table_hash(t, "alice") == NULL);
    auth_table_free(t);
  }

  /* Many users: the index grows with the file. */
  size_t cap = 1000 * (20 + strlen(hash_6));
  char *big = malloc(cap), *p = big;
  for (int i = 0; i < 1000; i++)
    p += snprintf(p, cap - (size_t)(p - big), "user%d:%s\n", i, hash_6);
  t = NULL;
  CHECK_INT(
      auth_parse_users(big, (size_t)(p - big), "big", &t, err, sizeof err), 0);
  CHECK_INT(auth_table_count(t), 1000);
  CHECK_STR(auth_table_hash(t, "user999"), hash_6);
  CHECK(auth_table_hash(t, "user1000") == NULL);
  auth_table_free(t);
  free(big);
}

struct bad_case {
  const char *name;
  const char *text; /* %1$s: a good $6$ hash */
  const char *want; /* the whole error */
};

static void test_parse_bad(void) {
  char bcrypt_cut[CRYPT_OUTPUT_SIZE];
  snprintf(bcrypt_cut, sizeof bcrypt_cut, "%.*s", 29, hash_2b);
  char longuser[AUTH_USER_MAX + 2];
  memset(longuser, 'u', sizeof longuser - 1);
  longuser[sizeof longuser - 1] = '\0';
  char md5line[512], cutline[512], longline[1024];
  snprintf(md5line, sizeof md5line, "# x\nold:%s\n", hash_md5);
  snprintf(cutline, sizeof cutline, "\n\n\ncarol:%s\n", bcrypt_cut);
  snprintf(longline, sizeof longline, "%s:%%1$s\n", longuser);

  const struct bad_case cases[] = {
      {"no_colon", "# c\nalice:%1$s\nbob\n", "users:3: expected user:hash"},
      {"empty_user", ":%1$s\n", "users:1: empty user name"},
      {"empty_hash", "\n\nalice:\n", "users:3: empty password hash"},
      {"plain_password", "alice:secret\n",
       "users:1: unsupported or invalid password hash"},
      {"locked_star", "alice:*\n",
       "users:1: unsupported or invalid password hash"},
      {"unknown_method", "alice:$9$abc$def\n",
       "users:1: unsupported or invalid password hash"},
      {"salt_only_6", "alice:$6$saltsaltsaltsalt\n",
       "users:1: password hash is truncated or only a salt"},
      {"truncated_6", "a:%1$.60s\n",
       "users:1: password hash is truncated or only a salt"},
      {"bad_char_in_checksum", "a:%1$.105s!\n",
       "users:1: unsupported or invalid password hash"},
      {"extra_field", "alice:%1$s:1000:1000\n",
       "users:1: unsupported or invalid password hash"},
      {"legacy_md5", md5line,
       "users:2: legacy password hash method (use $y$ or $6$)"},
      {"legacy_des", "alice:abJnggxhB/yWI\n",
       "users:1: legacy password hash method (use $y$ or $6$)"},
      {"bcrypt_salt_only", cutline,
       "users:4: password hash is truncated or only a salt"},
      {"duplicate_user", "alice:%1$s\nbob:%1$s\n\nalice:%1$s\n",
       "users:4: duplicate user \"alice\""},
      {"control_char_user", "al\tice:%1$s\n",
       "users:1: control character in user name"},
      {"user_too_long", longline, "users:1: user name too long"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char text[2048], err[256];
    snprintf(text, sizeof text, cases[i].text, hash_6);
    struct auth_table *t = (struct auth_table *)&err; /* must stay put */
    int rc = parse(text, &t, err, sizeof err);
    if (rc != -EINVAL || strcmp(err, cases[i].want) != 0)
      fprintf(stderr, "case %s\n", cases[i].name);
    CHECK_INT(rc, -EINVAL);
    CHECK_STR(err, cases[i].want);
    CHECK(t == (struct auth_table *)&err);
  }

  /* A NUL byte inside a line. */
  char err[256];
  static const char nul[] = "# ok\nal\0ice:x\n";
  struct auth_table *t = NULL;
  CHECK_INT(auth_parse_users(nul, sizeof nul - 1, "users", &t, err, sizeof err),
            -EINVAL);
  CHECK_STR(err, "users:2: NUL byte in line");
  CHECK(t == NULL);
}

/* ---- checks on a loop ------------------------------------------------- */

struct answer {
  int n;
  enum auth_status st;
  char user[64];
  uint64_t at_ms;
  int order;
};

static uv_loop_t *g_loop;
static int g_order;

static void on_answer(struct auth_req *req, enum auth_status st,
                      const char *user, void *data) {
  (void)req;
  struct answer *a = data;
  a->n++;
  a->st = st;
  snprintf(a->user, sizeof a->user, "%s", user ? user : "(null)");
  a->at_ms = uv_now(g_loop);
  a->order = ++g_order;
}

static char dir[256];
static char path[64];

static void write_file(const char *text) {
  char tmp[80];
  snprintf(tmp, sizeof tmp, "%s.new", path);
  FILE *f = fopen(tmp, "w");
  CHECK(f != NULL);
  if (!f)
    return;
  fputs(text, f);
  fclose(f);
  CHECK_INT(rename(tmp, path), 0);
}

static void write_users(void) {
  char text[2048];
  snprintf(text, sizeof text,
           "# test users\n"
           "alice:%s\n"
           "bob:%s\n"
           "carol:%s\n"
           "yvonne:%s\n",
           hash_y, hash_6, hash_2b, hash_y);
  write_file(text);
}

static struct auth *new_auth(uint64_t delay_ms, int running, int waiting) {
  char err[256] = "";
  struct auth *a = auth_new(g_loop, path, err, sizeof err);
  CHECK(a != NULL);
  CHECK_STR(err, "");
  struct auth_limits l = {running, waiting, delay_ms};
  if (a)
    auth_set_limits(a, &l);
  return a;
}

static void stats(struct auth *a, struct auth_stats *s) {
  auth_get_stats(a, s);
}

static void test_new_errors(void) {
  char err[256];
  char missing[80];
  snprintf(missing, sizeof missing, "%s/missing", dir);
  CHECK(auth_new(g_loop, missing, err, sizeof err) == NULL);
  char want[160];
  snprintf(want, sizeof want, "cannot read %s: No such file or directory",
           missing);
  CHECK_STR(err, want);

  write_file("alice:$6$x\n");
  CHECK(auth_new(g_loop, path, err, sizeof err) == NULL);
  snprintf(want, sizeof want, "%s:1: password hash is truncated or only a salt",
           path);
  CHECK_STR(err, want);

  CHECK(auth_new(g_loop, dir, err, sizeof err) == NULL); /* a directory */
  CHECK_CONTAINS(err, "cannot read");
}

/* Long enough that "a success is answered before it" is a generous bound
 * even for a slow hash under ASan on a loaded machine (issue 13). */
#define FAIL_DELAY_MS 3000

static void test_ok_and_failures(void) {
  write_users();
  struct auth *a = new_auth(FAIL_DELAY_MS, 2, 8);
  if (!a)
    return;
  CHECK_INT(auth_user_count(a), 4);
  struct auth_stats s0, s1;
  struct answer ok_y = {0}, ok_6 = {0}, ok_2b = {0}, wrong = {0}, unknown = {0},
                unknown_right_pw = {0}, empty = {0};
  uv_update_time(g_loop);
  uint64_t t0 = uv_now(g_loop);
  struct auth_req *req = NULL;
  char pass[] = "s3cret yescrypt";
  CHECK_INT(auth_check(a, "alice", pass, on_answer, &ok_y, &req), 0);
  CHECK(req != NULL);
  /* The copy is the checker's: the caller may wipe its own at once. */
  explicit_bzero(pass, sizeof pass);
  CHECK_INT(auth_check(a, "bob", "hunter2", on_answer, &ok_6, NULL), 0);
  CHECK_INT(auth_check(a, "carol", "bcrypt pw", on_answer, &ok_2b, NULL), 0);
  CHECK_INT(auth_check(a, "bob", "hunter3", on_answer, &wrong, NULL), 0);
  CHECK_INT(auth_check(a, "mallory", "hunter2", on_answer, &unknown, NULL), 0);
  /* Alice's password with an unknown name never passes, even though the
   * dummy may be alice's own hash. */
  CHECK_INT(auth_check(a, "alicia", "s3cret yescrypt", on_answer,
                       &unknown_right_pw, NULL),
            0);
  CHECK_INT(auth_check(a, "alice", "", on_answer, &empty, NULL), 0);
  /* Never from inside auth_check. */
  CHECK_INT(ok_y.n + ok_6.n + ok_2b.n + wrong.n + unknown.n, 0);
  stats(a, &s0);
  CHECK_INT(s0.running, 2);
  CHECK_INT(s0.waiting, 5);
  uv_run(g_loop, UV_RUN_DEFAULT);

  CHECK_INT(ok_y.n, 1);
  CHECK_INT(ok_y.st, AUTH_OK);
  CHECK_STR(ok_y.user, "alice");
  /* Success is not delayed: answered before every failure, which waits
   * out its delay. */
  CHECK(ok_y.order < wrong.order && ok_y.order < unknown.order &&
        ok_y.order < unknown_right_pw.order);
  CHECK_INT(ok_6.n, 1);
  CHECK_INT(ok_6.st, AUTH_OK);
  CHECK_STR(ok_6.user, "bob");
  CHECK_INT(ok_2b.n, 1);
  CHECK_INT(ok_2b.st, AUTH_OK);
  CHECK_INT(wrong.n, 1);
  CHECK_INT(wrong.st, AUTH_FAILED);
  CHECK(wrong.at_ms - t0 >= FAIL_DELAY_MS); /* only after the delay */
  CHECK_INT(unknown.n, 1);
  CHECK_INT(unknown.st, AUTH_FAILED);
  CHECK_STR(unknown.user, "mallory");
  CHECK(unknown.at_ms - t0 >= FAIL_DELAY_MS);
  CHECK_INT(unknown_right_pw.n, 1);
  CHECK_INT(unknown_right_pw.st, AUTH_FAILED);
  CHECK_INT(empty.n, 1);
  CHECK_INT(empty.st, AUTH_FAILED);
  stats(a, &s1);
  /* Every check hashed, the unknown users' included (the dummy path). */
  CHECK_INT(s1.crypt_calls, 7);
  CHECK_INT(s1.ok, 3);
  CHECK_INT(s1.failed, 4);
  CHECK(s1.max_in_crypt <= 2);
  CHECK_INT(s1.max_running_hw, 2);

  /* A password over AUTH_PASS_MAX fails after the delay, unhashed. */
  char *huge = malloc(AUTH_PASS_MAX + 2);
  memset(huge, 'p', AUTH_PASS_MAX + 1);
  huge[AUTH_PASS_MAX + 1] = '\0';
  struct answer too_long = {0};
  uv_update_time(g_loop);
  t0 = uv_now(g_loop);
  CHECK_INT(auth_check(a, "alice", huge, on_answer, &too_long, NULL), 0);
  free(huge);
  uv_run(g_loop, UV_RUN_DEFAULT);
  CHECK_INT(too_long.n, 1);
  CHECK_INT(too_long.st, AUTH_FAILED);
  CHECK(too_long.at_ms - t0 >= FAIL_DELAY_MS);
  stats(a, &s0);
  CHECK_INT(s0.crypt_calls, 7);

  CHECK_INT(auth_check(NULL, "a", "b", on_answer, &too_long, NULL), UV_EINVAL);
  CHECK_INT(auth_check(a, NULL, "b", on_answer, &too_long, NULL), UV_EINVAL);
  auth_free(a);
  uv_run(g_loop, UV_RUN_DEFAULT);
}

/*
 * An unknown user costs what a known one does: the dummy is a real hash of
 * the same method, so crypt runs.  (Times are printed, not asserted.)
 */
static void test_unknown_user_timing(void) {
  char text[512];
  snprintf(text, sizeof text, "alice:%s\n", hash_y);
  write_file(text);
  struct auth *a = new_auth(1, 1, 8);
  if (!a)
    return;
  struct auth_stats s;
  uint64_t known_ns = 0, unknown_ns = 0;
  for (int i = 0; i < 6; i++) {
    struct answer ans = {0};
    int unknown_turn = i % 2;
    uint64_t t = uv_hrtime();
    CHECK_INT(auth_check(a, unknown_turn ? "nobody" : "alice", "wrong",
                         on_answer, &ans, NULL),
              0);
    uv_run(g_loop, UV_RUN_DEFAULT);
    CHECK_INT(ans.n, 1);
    CHECK_INT(ans.st, AUTH_FAILED);
    *(unknown_turn ? &unknown_ns : &known_ns) += uv_hrtime() - t;
  }
  stats(a, &s);
  CHECK_INT(s.crypt_calls, 6);
  fprintf(stderr,
          "timing: known user %.1f ms, unknown user %.1f ms (mean of 3, "
          "1 ms delay)\n",
          known_ns / 3e6, unknown_ns / 3e6);
  auth_free(a);
  uv_run(g_loop, UV_RUN_DEFAULT);
}

static void test_cap_and_fifo(void) {
  write_users();
  /* Cap 2: many yescrypt checks, never more than two in crypt at once. */
  struct auth *a = new_auth(50, 2, 16);
  if (!a)
    return;
  struct answer ans[12] = {{0}};
  for (int i = 0; i < 12; i++)
    CHECK_INT(auth_check(a, i % 2 ? "alice" : "yvonne", "x", on_answer, &ans[i],
                         NULL),
              0);
  uv_run(g_loop, UV_RUN_DEFAULT);
  struct auth_stats s;
  stats(a, &s);
  for (int i = 0; i < 12; i++)
    CHECK_INT(ans[i].n, 1);
  CHECK_INT(s.max_in_crypt, 2);
  CHECK_INT(s.max_running_hw, 2);
  CHECK_INT(s.crypt_calls, 12);
  auth_free(a);
  uv_run(g_loop, UV_RUN_DEFAULT);

  /* Cap 1: successes come back in the order they were asked (FIFO). */
  a = new_auth(50, 1, 16);
  if (!a)
    return;
  struct answer fifo[5] = {{0}};
  g_order = 0;
  for (int i = 0; i < 5; i++)
    CHECK_INT(auth_check(a, "bob", "hunter2", on_answer, &fifo[i], NULL), 0);
  uv_run(g_loop, UV_RUN_DEFAULT);
  for (int i = 0; i < 5; i++) {
    CHECK_INT(fifo[i].st, AUTH_OK);
    CHECK_INT(fifo[i].order, i + 1);
  }
  stats(a, &s);
  CHECK_INT(s.max_in_crypt, 1);

  /* Bounded queue: 1 running + 2 waiting, the next is refused at once. */
  struct auth_limits l = {1, 2, 50};
  auth_set_limits(a, &l);
  struct answer q[4] = {{0}};
  for (int i = 0; i < 3; i++)
    CHECK_INT(auth_check(a, "bob", "hunter2", on_answer, &q[i], NULL), 0);
  CHECK_INT(auth_check(a, "bob", "hunter2", on_answer, &q[3], NULL), UV_EBUSY);
  stats(a, &s);
  CHECK_INT(s.busy, 1);
  uv_run(g_loop, UV_RUN_DEFAULT);
  for (int i = 0; i < 3; i++)
    CHECK_INT(q[i].n, 1);
  CHECK_INT(q[3].n, 0); /* an error: its callback never runs */
  auth_free(a);
  uv_run(g_loop, UV_RUN_DEFAULT);
}

static struct auth_req *g_cancel_in_cb;
static void on_answer_cancel_other(struct auth_req *req, enum auth_status st,
                                   const char *user, void *data) {
  on_answer(req, st, user, data);
  if (g_cancel_in_cb) {
    struct auth_req *other = g_cancel_in_cb;
    g_cancel_in_cb = NULL;
    auth_cancel(other);
  }
}

static void test_cancel(void) {
  write_users();
  struct auth *a = new_auth(200, 1, 8);
  if (!a)
    return;
  struct answer running = {0}, waiting = {0}, later = {0}, delaying = {0};
  struct auth_req *r_run, *r_wait, *r_later, *r_delay;
  CHECK_INT(
      auth_check(a, "alice", "s3cret yescrypt", on_answer, &running, &r_run),
      0);
  CHECK_INT(auth_check(a, "bob", "hunter2", on_answer, &waiting, &r_wait), 0);
  CHECK_INT(auth_check(a, "bob", "hunter2", on_answer, &later, &r_later), 0);

  /* A waiting check: answered inside auth_cancel, never hashed. */
  auth_cancel(r_wait);
  CHECK_INT(waiting.n, 1);
  CHECK_INT(waiting.st, AUTH_CANCELED);
  CHECK_STR(waiting.user, "bob");
  /* The running one: answered now; its hash finishes on the pool and the
   * result is thrown away. */
  auth_cancel(r_run);
  CHECK_INT(running.n, 1);
  CHECK_INT(running.st, AUTH_CANCELED);
  uv_run(g_loop, UV_RUN_DEFAULT);
  CHECK_INT(running.n, 1); /* exactly once */
  CHECK_INT(waiting.n, 1);
  CHECK_INT(later.n, 1);
  CHECK_INT(later.st, AUTH_OK);
  (void)r_later;

  /* A failure in its delay: canceled before the timer fires. */
  CHECK_INT(auth_check(a, "bob", "nope", on_answer, &delaying, &r_delay), 0);
  struct auth_stats s;
  for (int i = 0; i < 1000; i++) {
    stats(a, &s);
    if (s.running == 0)
      break;
    uv_run(g_loop, UV_RUN_ONCE);
  }
  CHECK_INT(delaying.n, 0);
  auth_cancel(r_delay);
  CHECK_INT(delaying.n, 1);
  CHECK_INT(delaying.st, AUTH_CANCELED);
  uv_run(g_loop, UV_RUN_DEFAULT);
  CHECK_INT(delaying.n, 1);

  /* A callback that cancels another request. */
  struct answer first = {0}, second = {0};
  struct auth_req *r2;
  CHECK_INT(
      auth_check(a, "bob", "hunter2", on_answer_cancel_other, &first, NULL), 0);
  CHECK_INT(auth_check(a, "bob", "hunter2", on_answer, &second, &r2), 0);
  g_cancel_in_cb = r2;
  uv_run(g_loop, UV_RUN_DEFAULT);
  CHECK_INT(first.n, 1);
  CHECK_INT(first.st, AUTH_OK);
  CHECK_INT(second.n, 1);
  CHECK_INT(second.st, AUTH_CANCELED);
  auth_free(a);
  uv_run(g_loop, UV_RUN_DEFAULT);
}

static struct auth *g_free_in_cb;
static void on_answer_free(struct auth_req *req, enum auth_status st,
                           const char *user, void *data) {
  on_answer(req, st, user, data);
  if (g_free_in_cb) {
    struct auth *a = g_free_in_cb;
    g_free_in_cb = NULL;
    auth_free(a);
  }
}

static void test_free_pending(void) {
  write_users();
  struct auth *a = new_auth(200, 2, 8);
  if (!a)
    return;
  struct answer ans[5] = {{0}};
  for (int i = 0; i < 5; i++)
    CHECK_INT(auth_check(a, "alice", i == 4 ? "wrong" : "s3cret yescrypt",
                         on_answer, &ans[i], NULL),
              0);
  auth_free(a); /* two on the pool, three waiting */
  for (int i = 0; i < 5; i++) {
    CHECK_INT(ans[i].n, 1);
    CHECK_INT(ans[i].st, AUTH_CANCELED);
  }
  uv_run(g_loop, UV_RUN_DEFAULT); /* the pool's work drains, memory goes */
  for (int i = 0; i < 5; i++)
    CHECK_INT(ans[i].n, 1);

  /* auth_free from inside a callback, with others pending. */
  a = new_auth(200, 1, 8);
  if (!a)
    return;
  struct answer b[3] = {{0}};
  CHECK_INT(auth_check(a, "bob", "hunter2", on_answer_free, &b[0], NULL), 0);
  CHECK_INT(auth_check(a, "bob", "hunter2", on_answer, &b[1], NULL), 0);
  CHECK_INT(auth_check(a, "bob", "nope", on_answer, &b[2], NULL), 0);
  g_free_in_cb = a;
  uv_run(g_loop, UV_RUN_DEFAULT);
  CHECK_INT(b[0].n, 1);
  CHECK_INT(b[0].st, AUTH_OK);
  CHECK_INT(b[1].n, 1);
  CHECK_INT(b[1].st, AUTH_CANCELED);
  CHECK_INT(b[2].n, 1);
  CHECK_INT(b[2].st, AUTH_CANCELED);

  /* Freed with nothing pending: at once. */
  a = new_auth(0, 0, 0);
  auth_free(a);
}

static void test_reload(void) {
  write_users();
  struct auth *a = new_auth(10, 2, 8);
  if (!a)
    return;
  char err[256], want[160];

  /* A bad file: the old table stays. */
  write_file("# v2\nalice:plain-text\n");
  CHECK_INT(auth_reload(a, err, sizeof err), -EINVAL);
  snprintf(want, sizeof want, "%s:2: unsupported or invalid password hash",
           path);
  CHECK_STR(err, want);
  CHECK_INT(auth_user_count(a), 4);
  struct answer old = {0};
  CHECK_INT(auth_check(a, "bob", "hunter2", on_answer, &old, NULL), 0);
  uv_run(g_loop, UV_RUN_DEFAULT);
  CHECK_INT(old.st, AUTH_OK);

  /* A missing file: the same. */
  char moved[80];
  snprintf(moved, sizeof moved, "%s.moved", path);
  CHECK_INT(rename(path, moved), 0);
  CHECK_INT(auth_reload(a, err, sizeof err), -ENOENT);
  CHECK_CONTAINS(err, "cannot read");
  CHECK_INT(auth_user_count(a), 4);
  CHECK_INT(rename(moved, path), 0);

  /* A good file replaces it, also under checks waiting to start. */
  char text[512];
  snprintf(text, sizeof text, "dave:%s\n", hash_6);
  struct answer before[3] = {{0}};
  struct auth_limits l = {1, 8, 10};
  auth_set_limits(a, &l);
  CHECK_INT(auth_check(a, "bob", "hunter2", on_answer, &before[0], NULL), 0);
  CHECK_INT(auth_check(a, "bob", "hunter2", on_answer, &before[1], NULL), 0);
  CHECK_INT(auth_check(a, "dave", "hunter2", on_answer, &before[2], NULL), 0);
  write_file(text);
  CHECK_INT(auth_reload(a, err, sizeof err), 0);
  CHECK_INT(auth_user_count(a), 1);
  uv_run(g_loop, UV_RUN_DEFAULT);
  CHECK_INT(before[0].st, AUTH_OK);     /* already running: old table */
  CHECK_INT(before[1].st, AUTH_FAILED); /* started after: bob is gone */
  CHECK_INT(before[2].st, AUTH_OK);     /* dave is new */
  auth_free(a);
  uv_run(g_loop, UV_RUN_DEFAULT);
}

/* ---- measurement ------------------------------------------------------ */

struct ticker {
  uv_timer_t t;
  uint64_t last_ns, max_late_ns, ticks, late_2ms;
  struct auth *a;
  int done;
};

static int g_measure_left;

static void on_measure_answer(struct auth_req *req, enum auth_status st,
                              const char *user, void *data) {
  (void)req, (void)st, (void)user, (void)data;
  g_measure_left--;
}

static void on_tick(uv_timer_t *t) {
  struct ticker *k = t->data;
  uint64_t now = uv_hrtime();
  if (k->last_ns) {
    uint64_t gap = now - k->last_ns;
    if (gap > 10000000 && gap - 10000000 > k->max_late_ns)
      k->max_late_ns = gap - 10000000;
    if (gap > 12000000)
      k->late_2ms++;
  }
  k->last_ns = now;
  k->ticks++;
  if (g_measure_left == 0) {
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, NULL);
  }
}

/* n checks with at most cap hashing at once (n 0: the timer alone, for
 * 1.5 s, as a baseline). */
static void on_stop(uv_timer_t *t) {
  *(int *)t->data = 0;
}

static int measure(int n, int cap) {
  write_users();
  struct auth *a = new_auth(1000, cap, 32);
  if (!a)
    return 1;
  struct ticker k = {0};
  uv_timer_init(g_loop, &k.t);
  k.t.data = &k;
  uint64_t t0 = uv_hrtime();
  g_measure_left = n;
  uv_timer_t stop;
  uv_timer_init(g_loop, &stop);
  if (n == 0) {
    g_measure_left = 1;
    stop.data = &g_measure_left;
    uv_timer_start(&stop, on_stop, 1500, 0);
  }
  for (int i = 0; i < n; i++)
    if (auth_check(a, i % 2 ? "alice" : "nobody",
                   i % 4 ? "s3cret yescrypt" : "x", on_measure_answer, NULL,
                   NULL) != 0)
      return 1;
  uv_timer_start(&k.t, on_tick, 10, 10);
  uv_run(g_loop, UV_RUN_DEFAULT);
  uv_close((uv_handle_t *)&stop, NULL);
  struct auth_stats s;
  auth_get_stats(a, &s);
  printf("%d yescrypt checks (cap %d, max in crypt %d, %d crypt calls, %llu "
         "ok, %llu failed with 1 s delay) took %.0f ms; 10 ms timer: %llu "
         "ticks, %llu over 2 ms late, max lateness %.2f ms\n",
         n, cap, s.max_in_crypt, (int)s.crypt_calls, (unsigned long long)s.ok,
         (unsigned long long)s.failed, (uv_hrtime() - t0) / 1e6,
         (unsigned long long)k.ticks, (unsigned long long)k.late_2ms,
         k.max_late_ns / 1e6);
  auth_free(a);
  uv_run(g_loop, UV_RUN_DEFAULT);
  return 0;
}

int main(int argc, char **argv) {
  make_hash("$y$", "s3cret yescrypt", hash_y);
  make_hash("$6$", "hunter2", hash_6);
  make_hash("$2b$", "bcrypt pw", hash_2b);
  make_hash("$1$", "md5", hash_md5);
  CHECK(strncmp(hash_y, "$y$", 3) == 0);
  CHECK(strncmp(hash_6, "$6$", 3) == 0);
  CHECK(strncmp(hash_2b, "$2b$", 4) == 0);
  CHECK(strncmp(hash_md5, "$1$", 3) == 0);

  uv_loop_t loop;
  CHECK_INT(uv_loop_init(&loop), 0);
  g_loop = &loop;
  CHECK(check_tmpdir(dir, sizeof dir, "test_auth") != NULL);
  snprintf(path, sizeof path, "%s/users", dir);

  int rc;
  if (argc > 1 && strcmp(argv[1], "--measure") == 0) {
    int n = argc > 2 ? atoi(argv[2]) : 20, cap = argc > 3 ? atoi(argv[3]) : 2;
    rc = measure(n, cap);
  } else {
    test_parse_good();
    test_parse_bad();
    test_new_errors();
    test_ok_and_failures();
    test_unknown_user_timing();
    test_cap_and_fifo();
    test_cancel();
    test_free_pending();
    test_reload();
    rc = 0;
  }
  CHECK_INT(uv_loop_close(&loop), 0);
  unlink(path);
  rmdir(dir);
  if (rc)
    return rc;
  return check_result("test_auth");
}
