/*
 * test_admin_socket: the admin socket transport on a real loop.  A client
 * thread speaks blocking Unix-socket code to the server on the main loop;
 * the line callback echoes lines ("R:<line>"), answers some later from a
 * timer, streams a large reply, or never answers (to test closing).
 */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include "check.h"
#include "loop/admin_socket.h"

#define BIG_REPLY (5 * 1024 * 1024)

static uv_loop_t loop;
static struct admin_socket *srv;
static char sock_path[108];
static char tmpdir[64];
static uv_async_t done_async;
static uv_timer_t late_timer;
static struct admin_client *late_client; /* waiting for the timer */
static char late_line[64];
static struct admin_client *hung_client; /* never answered before close */
static uv_timer_t hung_timer;
static int lines_seen;
static struct admin_client *parked[ADMIN_SOCKET_MAX_CLIENTS]; /* "park" */
static int nparked;
static uv_async_t unpark_async;
static sem_t all_parked;       /* posted when every slot is parked */
static uv_async_t count_async; /* the client asks how many are connected */
static sem_t counted;
static int nclients_seen;
static sem_t hang_seen; /* the server has the "hang" line */

/* ---- server side (loop thread) ---------------------------------------- */

static void on_late(uv_timer_t *t) {
  (void)t;
  char buf[96];
  int n = snprintf(buf, sizeof buf, "R:%s (late)\n", late_line);
  CHECK_INT(admin_socket_write(late_client, buf, (size_t)n), 0);
  struct admin_client *c = late_client;
  late_client = NULL;
  admin_socket_end(c);
}

static void on_line(struct admin_client *c, const char *line, size_t len,
                    int status, void *data) {
  (void)data;
  lines_seen++;
  if (status == UV_E2BIG) {
    CHECK(line == NULL);
    admin_socket_write(c, "E2BIG\n", 6);
    admin_socket_end(c);
    return;
  }
  CHECK_INT(status, 0);
  CHECK_INT(strlen(line), len);
  if (strcmp(line, "async") == 0) {
    CHECK(late_client == NULL);
    late_client = c;
    snprintf(late_line, sizeof late_line, "%s", line);
    uv_timer_start(&late_timer, on_late, 20, 0);
    return;
  }
  if (strcmp(line, "hang") == 0) {
    hung_client = c;
    sem_post(&hang_seen);
    return;
  }
  if (strcmp(line, "park") == 0) { /* busy until unpark_async */
    CHECK(nparked < ADMIN_SOCKET_MAX_CLIENTS);
    if (nparked < ADMIN_SOCKET_MAX_CLIENTS)
      parked[nparked++] = c;
    if (nparked == ADMIN_SOCKET_MAX_CLIENTS)
      sem_post(&all_parked);
    return;
  }
  if (strcmp(line, "big") == 0) {
    /* Streamed in odd-sized pieces, flushed along the way. */
    char piece[7777];
    memset(piece, 'x', sizeof piece);
    size_t left = BIG_REPLY;
    while (left > 0) {
      size_t n = left < sizeof piece ? left : sizeof piece;
      CHECK_INT(admin_socket_write(c, piece, n), 0);
      left -= n;
      if (left % 3 == 0)
        admin_socket_flush(c);
    }
    admin_socket_write(c, "\n", 1);
    admin_socket_end(c);
    return;
  }
  char buf[ADMIN_SOCKET_LINE_MAX + 8];
  int n = snprintf(buf, sizeof buf, "R:%s\n", line);
  CHECK_INT(admin_socket_write(c, buf, (size_t)n), 0);
  admin_socket_end(c);
}

static void on_count(uv_async_t *a) {
  (void)a;
  nclients_seen = admin_socket_clients(srv);
  sem_post(&counted);
}

static void on_unpark(uv_async_t *a) {
  (void)a;
  for (int i = 0; i < nparked; i++) {
    admin_socket_write(parked[i], "R:park\n", 7);
    admin_socket_end(parked[i]);
  }
  nparked = 0;
}

static void on_hung_timer(uv_timer_t *t) {
  (void)t;
  /* The server and the client's handle are closed by now: the write is
   * refused and end frees the client. */
  CHECK(hung_client != NULL);
  if (!hung_client)
    return;
  CHECK_INT(admin_socket_alive(hung_client), 0);
  CHECK_INT(admin_socket_write(hung_client, "x", 1), UV_EPIPE);
  admin_socket_end(hung_client);
  hung_client = NULL;
}

static void on_done(uv_async_t *a) {
  (void)a;
  admin_socket_close(srv);
  srv = NULL;
  struct stat sb;
  CHECK(stat(sock_path, &sb) < 0 && errno == ENOENT);
  uv_close((uv_handle_t *)&done_async, NULL);
  uv_close((uv_handle_t *)&unpark_async, NULL);
  uv_close((uv_handle_t *)&count_async, NULL);
  uv_close((uv_handle_t *)&late_timer, NULL);
  uv_timer_start(&hung_timer, on_hung_timer, 50, 0);
  uv_unref((uv_handle_t *)&hung_timer);
}

/* ---- client side (its own thread, blocking) --------------------------- */

static int cl_connect(void) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  strcpy(sa.sun_path, sock_path);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    close(fd);
    return -1;
  }
  struct timeval tv = {.tv_sec = 10};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

static void cl_send(int fd, const char *s) {
  size_t len = strlen(s);
  while (len > 0) {
    ssize_t n = send(fd, s, len, MSG_NOSIGNAL);
    if (n <= 0)
      return;
    s += n;
    len -= (size_t)n;
  }
}

/* One line into buf (without "\n"); returns its length, -1 on EOF. */
static long cl_line(int fd, char *buf, size_t cap) {
  size_t len = 0;
  for (;;) {
    char ch;
    ssize_t n = recv(fd, &ch, 1, 0);
    if (n <= 0)
      return -1;
    if (ch == '\n')
      break;
    if (len + 1 < cap)
      buf[len] = ch;
    len++;
  }
  buf[len < cap ? len : cap - 1] = '\0';
  return (long)len;
}

static void test_pipelined_in_order(void) {
  int fd = cl_connect();
  CHECK(fd >= 0);
  char buf[2048];
  /* Three commands in one write, the middle one answered later: the
   * replies still come in order. */
  cl_send(fd, "a\nasync\nb\r\n");
  cl_line(fd, buf, sizeof buf);
  CHECK_STR(buf, "R:a");
  cl_line(fd, buf, sizeof buf);
  CHECK_STR(buf, "R:async (late)");
  cl_line(fd, buf, sizeof buf);
  CHECK_STR(buf, "R:b");
  /* Several commands over one connection, one at a time. */
  for (int i = 0; i < 5; i++) {
    char cmd[32], want[32];
    snprintf(cmd, sizeof cmd, "cmd%d\n", i);
    snprintf(want, sizeof want, "R:cmd%d", i);
    cl_send(fd, cmd);
    cl_line(fd, buf, sizeof buf);
    CHECK_STR(buf, want);
  }
  close(fd);
}

static void test_line_too_long(void) {
  int fd = cl_connect();
  char buf[2048];
  char *longline = malloc(5000);
  memset(longline, 'y', 4998);
  longline[4998] = '\n';
  longline[4999] = '\0';
  cl_send(fd, longline);
  cl_send(fd, "after\n");
  cl_line(fd, buf, sizeof buf);
  CHECK_STR(buf, "E2BIG");
  cl_line(fd, buf, sizeof buf);
  CHECK_STR(buf, "R:after");
  /* Exactly the limit passes; one more byte does not. */
  memset(longline, 'z', ADMIN_SOCKET_LINE_MAX);
  strcpy(longline + ADMIN_SOCKET_LINE_MAX, "\n");
  cl_send(fd, longline);
  CHECK_INT(cl_line(fd, buf, sizeof buf), ADMIN_SOCKET_LINE_MAX + 2);
  memset(longline, 'z', ADMIN_SOCKET_LINE_MAX + 1);
  strcpy(longline + ADMIN_SOCKET_LINE_MAX + 1, "\n");
  cl_send(fd, longline);
  cl_line(fd, buf, sizeof buf);
  CHECK_STR(buf, "E2BIG");
  free(longline);
  close(fd);
}

static void test_half_close(void) {
  /* `echo status | socat - UNIX-CONNECT:...`: the last line may lack its
   * newline; the reply still comes, then the server closes. */
  int fd = cl_connect();
  char buf[256];
  cl_send(fd, "one\nlast");
  shutdown(fd, SHUT_WR);
  cl_line(fd, buf, sizeof buf);
  CHECK_STR(buf, "R:one");
  cl_line(fd, buf, sizeof buf);
  CHECK_STR(buf, "R:last");
  CHECK_INT(cl_line(fd, buf, sizeof buf), -1);
  close(fd);
}

static void test_big_reply(void) {
  int fd = cl_connect();
  cl_send(fd, "big\nsmall\n");
  /* Read slowly at first so the server sees backpressure. */
  usleep(200 * 1000);
  size_t got = 0;
  char buf[65536];
  int done = 0;
  while (!done) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0)
      break;
    for (ssize_t i = 0; i < n; i++) {
      if (buf[i] == '\n') {
        done = 1;
        break;
      }
      if (buf[i] != 'x')
        CHECK(buf[i] == 'x');
      got++;
    }
  }
  CHECK_INT(got, BIG_REPLY);
  /* The bytes after the newline belong to the next reply; read it whole
   * with a fresh line read (recv above stopped at most mid-way). */
  close(fd);
}

/* Waits until the server has no client: those of earlier tests are gone
 * (the server may notice their hang-up a little later; each look is one
 * question to the loop, not a wait for a time). */
static void wait_no_clients(void) {
  for (int i = 0; i < 10000; i++) {
    uv_async_send(&count_async);
    sem_wait(&counted);
    if (nclients_seen == 0)
      break;
    usleep(1000);
  }
  CHECK_INT(nclients_seen, 0);
}

/* All slots taken by clients that said their piece and wait: a new client
 * takes the slot of the one idle the longest (issue 12: sixteen silent
 * clients locked out `mailhop status`).  Only when every client has a
 * reply in flight is a new one refused. */
static void test_client_limit(void) {
  int fds[ADMIN_SOCKET_MAX_CLIENTS];
  char buf[256];
  wait_no_clients();
  for (int i = 0; i < ADMIN_SOCKET_MAX_CLIENTS; i++) {
    fds[i] = cl_connect();
    cl_send(fds[i], "hi\n");
    cl_line(fds[i], buf, sizeof buf);
    CHECK_STR(buf, "R:hi");
  }
  /* fds[1] speaks again: fds[0] is now the one idle the longest. */
  cl_send(fds[1], "again\n");
  cl_line(fds[1], buf, sizeof buf);
  CHECK_STR(buf, "R:again");
  int extra = cl_connect();
  CHECK(extra >= 0);
  cl_send(extra, "status\n");
  cl_line(extra, buf, sizeof buf);
  CHECK_STR(buf, "R:status");
  CHECK_INT(recv(fds[0], buf, 1, 0), 0); /* closed for it (EOF) */
  close(fds[0]);
  fds[0] = extra;
  for (int i = 1; i < ADMIN_SOCKET_MAX_CLIENTS; i++) { /* the rest unharmed */
    cl_send(fds[i], "still\n");
    cl_line(fds[i], buf, sizeof buf);
    CHECK_STR(buf, "R:still");
  }

  /* Every client waits for a reply: nobody to evict, the new one is told
   * and closed. */
  for (int i = 0; i < ADMIN_SOCKET_MAX_CLIENTS; i++)
    cl_send(fds[i], "park\n");
  sem_wait(&all_parked); /* the server has read every "park" */
  int probe = cl_connect();
  CHECK(probe >= 0);
  cl_line(probe, buf, sizeof buf);
  CHECK_STR(buf, "busy");
  CHECK_INT(cl_line(probe, buf, sizeof buf), -1);
  close(probe);
  uv_async_send(&unpark_async);
  for (int i = 0; i < ADMIN_SOCKET_MAX_CLIENTS; i++) {
    cl_line(fds[i], buf, sizeof buf);
    CHECK_STR(buf, "R:park");
  }
  for (int i = 0; i < ADMIN_SOCKET_MAX_CLIENTS; i++)
    close(fds[i]);
}

static int hung_fd = -1;

/* A client that sends nothing is closed once the idle limit (3 s in this
 * test) has passed; a client that keeps talking is not. */
static void test_idle_client_closed(void) {
  int idle = cl_connect();
  int busy = cl_connect();
  CHECK(idle >= 0 && busy >= 0);
  char buf[256];
  for (int i = 0; i < 9; i++) { /* 4.5 s of traffic on `busy` */
    usleep(500 * 1000);
    cl_send(busy, "ping\n");
    CHECK(cl_line(busy, buf, sizeof buf) > 0);
  }
  /* EOF (0), not a receive timeout (-1): the server closed it. */
  struct timeval tv = {.tv_sec = 2};
  setsockopt(idle, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  CHECK_INT(recv(idle, buf, 1, 0), 0);
  close(idle);
  close(busy);
}

static void *client_main(void *arg) {
  (void)arg;
  test_idle_client_closed();
  test_pipelined_in_order();
  test_line_too_long();
  test_half_close();
  test_big_reply();
  test_client_limit();
  /* Leave one client waiting for a reply that never comes: closing the
   * server must not leak it or wait for it. */
  wait_no_clients();
  hung_fd = cl_connect();
  cl_send(hung_fd, "hang\n");
  sem_wait(&hang_seen);
  uv_async_send(&done_async);
  return NULL;
}

/* ---- open: mode, stale and live sockets ------------------------------- */

static void test_open_errors(void) {
  char err[256];
  struct admin_socket *s2 = NULL;
  /* A live socket is refused. */
  CHECK_INT(admin_socket_open(&loop, sock_path, on_line, NULL, NULL, &s2, err,
                              sizeof err),
            UV_EADDRINUSE);
  CHECK_CONTAINS(err, "is in use");

  /* A file that is not a socket is refused, and left alone. */
  char plain[128];
  snprintf(plain, sizeof plain, "%s/plain", tmpdir);
  FILE *f = fopen(plain, "w");
  fclose(f);
  CHECK(admin_socket_open(&loop, plain, on_line, NULL, NULL, &s2, err,
                          sizeof err) < 0);
  CHECK_CONTAINS(err, "not a socket");
  CHECK(access(plain, F_OK) == 0);
  unlink(plain);

  /* A socket file nobody listens on (a crash) is replaced. */
  char stale[128];
  snprintf(stale, sizeof stale, "%s/stale.sock", tmpdir);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  strcpy(sa.sun_path, stale);
  CHECK_INT(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  close(fd);
  CHECK(access(stale, F_OK) == 0);
  CHECK_INT(admin_socket_open(&loop, stale, on_line, NULL, NULL, &s2, err,
                              sizeof err),
            0);
  struct stat sb;
  CHECK_INT(stat(stale, &sb), 0);
  CHECK_INT(sb.st_mode & 0777, 0600);
  admin_socket_close(s2);

  /* Too long for sun_path. */
  char longp[200];
  memset(longp, 'a', sizeof longp - 1);
  longp[0] = '/';
  longp[sizeof longp - 1] = '\0';
  CHECK_INT(admin_socket_open(&loop, longp, on_line, NULL, NULL, &s2, err,
                              sizeof err),
            UV_ENAMETOOLONG);
}

int main(void) {
  /* As in the daemon: a peer that hangs up is an EPIPE, not a signal. */
  signal(SIGPIPE, SIG_IGN);
  if (!check_tmpdir(tmpdir, sizeof tmpdir, "mh-admsock"))
    return 1;
  snprintf(sock_path, sizeof sock_path, "%s/admin.sock", tmpdir);
  CHECK_INT(uv_loop_init(&loop), 0);
  char err[256] = "";
  int rc = admin_socket_open(&loop, sock_path, on_line, NULL, "busy\n", &srv,
                             err, sizeof err);
  CHECK_INT(rc, 0);
  if (rc < 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  struct stat sb;
  CHECK_INT(stat(sock_path, &sb), 0);
  CHECK(S_ISSOCK(sb.st_mode));
  CHECK_INT(sb.st_mode & 0777, 0600);
  admin_socket_set_idle_timeout(srv, 3000);

  test_open_errors();

  uv_async_init(&loop, &done_async, on_done);
  uv_async_init(&loop, &unpark_async, on_unpark);
  uv_async_init(&loop, &count_async, on_count);
  sem_init(&counted, 0, 0);
  sem_init(&hang_seen, 0, 0);
  sem_init(&all_parked, 0, 0);
  uv_timer_init(&loop, &late_timer);
  uv_timer_init(&loop, &hung_timer);
  pthread_t th;
  pthread_create(&th, NULL, client_main, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  pthread_join(th, NULL);
  /* The hung client's timer was unref'd; run it. */
  if (hung_client) {
    uv_ref((uv_handle_t *)&hung_timer);
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  CHECK(hung_client == NULL);
  uv_close((uv_handle_t *)&hung_timer, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(&loop), 0);
  if (hung_fd >= 0)
    close(hung_fd);
  CHECK(lines_seen > 20);
  rmdir(tmpdir);
  return check_result("test_admin_socket");
}
