/*
 * test_diskspace: the free-space reserve (issue 12 item 5).
 *  - relay/diskspace on a real loop: the figure comes from uv_fs_statfs
 *    on the thread pool and agrees with statvfs(3); the test hook fakes
 *    it; stopping frees everything (uv_loop_close succeeds).
 *  - proto/smtp_server with a room: MAIL refused with 452 4.3.1 at 0 and
 *    when SIZE= exceeds it; DATA refused unless the room holds twice the
 *    declared size (else twice max_message_size); unknown room: no limit.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <uv.h>

#include "check.h"
#include "proto/smtp_server.h"
#include "relay/diskspace.h"

static void on_tick(uv_timer_t *t) {
  struct diskspace *ds = t->data;
  if (diskspace_answers(ds) > 0)
    uv_timer_stop(t);
}

static void test_watch(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  char dir[] = "/tmp/mailhop-diskspace-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  struct diskspace *ds = diskspace_start(&loop, dir, 50);
  CHECK(ds != NULL);
  /* Not known until the pool answers: no limit meanwhile. */
  CHECK(diskspace_free(ds) == DISKSPACE_UNKNOWN || diskspace_answers(ds) > 0);
  uv_timer_t t;
  uv_timer_init(&loop, &t);
  t.data = ds;
  uv_timer_start(&t, on_tick, 10, 10);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(diskspace_answers(ds) > 0);
  struct statvfs sv;
  CHECK_INT(statvfs(dir, &sv), 0);
  uint64_t want = (uint64_t)sv.f_bavail * sv.f_frsize;
  uint64_t got = diskspace_free(ds);
  CHECK(got != DISKSPACE_UNKNOWN);
  /* Other writers on the machine move it a little between the calls. */
  uint64_t diff = got > want ? got - want : want - got;
  CHECK(diff < 256ull * 1024 * 1024);
  CHECK(diskspace_room(ds, got + 1) == 0);
  CHECK(diskspace_room(ds, 0) == got);
  diskspace_debug_fake(ds, 5000);
  CHECK(diskspace_free(ds) == 5000);
  CHECK(diskspace_room(ds, 1000) == 4000);
  CHECK(diskspace_room(ds, 6000) == 0);
  diskspace_debug_fake(ds, DISKSPACE_UNKNOWN);
  CHECK(diskspace_free(ds) != 5000);
  diskspace_stop(ds);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(&loop), 0);
  rmdir(dir);

  /* A directory that does not exist: unknown, not zero (no false 452). */
  uv_loop_init(&loop);
  ds = diskspace_start(&loop, "/nonexistent/mailhop/queue", 50);
  uv_timer_init(&loop, &t);
  t.data = ds;
  uv_timer_start(&t, on_tick, 10, 10);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(diskspace_free(ds) == DISKSPACE_UNKNOWN);
  CHECK(diskspace_room(ds, 100) == UINT64_MAX);
  diskspace_stop(ds);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(&loop), 0);
}

/* Feeds lines and returns the last reply line's code. */
static int say(struct smtp_server *s, const char *line) {
  smtp_server_feed(s, line, strlen(line));
  struct smtp_event ev;
  while (smtp_server_event(s, &ev))
    ;
  size_t n;
  const char *out = smtp_server_output(s, &n);
  int code = 0;
  for (size_t i = 0; i + 3 < n; i++)
    if (i == 0 || out[i - 1] == '\n')
      code = atoi(out + i);
  smtp_server_output_consumed(s, n);
  return code;
}

static struct smtp_server *session(uint64_t room) {
  struct smtp_server_opts o = {
      .hostname = "mx.example",
      .max_message_size = 1000000,
      .relay_allowed = 1,
  };
  struct smtp_server *s = smtp_server_new(&o);
  say(s, "EHLO c.example\r\n");
  smtp_server_set_room(s, room);
  return s;
}

static void test_room(void) {
  struct smtp_server *s = session(0);
  CHECK_INT(say(s, "MAIL FROM:<a@a.example>\r\n"), 452);
  size_t n;
  smtp_server_output(s, &n);
  CHECK_INT(say(s, "RCPT TO:<b@b.example>\r\n"), 503);
  smtp_server_free(s);

  /* SIZE= over the room. */
  s = session(10000);
  CHECK_INT(say(s, "MAIL FROM:<a@a.example> SIZE=10001\r\n"), 452);
  CHECK_INT(say(s, "MAIL FROM:<a@a.example> SIZE=4000\r\n"), 250);
  CHECK_INT(say(s, "RCPT TO:<b@b.example>\r\n"), 250);
  /* Twice 4000 fits in 10000: 354. */
  CHECK_INT(say(s, "DATA\r\n"), 354);
  smtp_server_free(s);

  s = session(10000);
  CHECK_INT(say(s, "MAIL FROM:<a@a.example> SIZE=6000\r\n"), 250);
  CHECK_INT(say(s, "RCPT TO:<b@b.example>\r\n"), 250);
  /* Twice 6000 does not: 452 before 354, the transaction is reset. */
  CHECK_INT(say(s, "DATA\r\n"), 452);
  CHECK_INT(say(s, "RCPT TO:<b@b.example>\r\n"), 503);
  smtp_server_free(s);

  /* No SIZE=: twice max_message_size (2,000,000) must fit. */
  s = session(1999999);
  CHECK_INT(say(s, "MAIL FROM:<a@a.example>\r\n"), 250);
  CHECK_INT(say(s, "RCPT TO:<b@b.example>\r\n"), 250);
  CHECK_INT(say(s, "DATA\r\n"), 452);
  smtp_server_set_room(s, 2000000);
  CHECK_INT(say(s, "MAIL FROM:<a@a.example>\r\n"), 250);
  CHECK_INT(say(s, "RCPT TO:<b@b.example>\r\n"), 250);
  CHECK_INT(say(s, "DATA\r\n"), 354);
  smtp_server_free(s);

  /* Unknown room: no limit. */
  s = session(UINT64_MAX);
  CHECK_INT(say(s, "MAIL FROM:<a@a.example> SIZE=999999\r\n"), 250);
  CHECK_INT(say(s, "RCPT TO:<b@b.example>\r\n"), 250);
  CHECK_INT(say(s, "DATA\r\n"), 354);
  smtp_server_free(s);
}

int main(void) {
  test_watch();
  test_room();
  return check_result("test_diskspace");
}
