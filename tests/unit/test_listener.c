/*
 * listener under descriptor exhaustion: in a child process with a low
 * RLIMIT_NOFILE, connections beyond the limit wait in the backlog while
 * accepting pauses (no busy loop: the poll callback runs a bounded number
 * of times), and are accepted once descriptors come back.
 */
#include "loop/conn.h"
#include "loop/listener.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

#define CLIENTS 24

struct state {
  struct listener *l;
  struct conn *held[CLIENTS];
  int accepted;
  int closed;
  uv_timer_t release;
  uv_timer_t stop;
  int released;
  unsigned long pauses;
};

static void on_close(struct conn *c, enum conn_end end, int status) {
  struct state *s = conn_data(c);
  (void)end;
  (void)status;
  s->closed++;
}

static size_t on_read(struct conn *c, const char *data, size_t len) {
  (void)c;
  (void)data;
  return len;
}

static const struct conn_cbs cbs = {.on_read = on_read, .on_close = on_close};

static void on_accept(struct listener *l, struct conn *c, void *data) {
  struct state *s = data;
  (void)l;
  conn_set_owner(c, &cbs, s);
  if (s->released)
    conn_close(c, CONN_END_LOCAL); /* descriptors are back: keep them */
  else if (s->accepted < CLIENTS)
    s->held[s->accepted] = c;
  s->accepted++;
}

/* After a while out of descriptors, give them back; from then on each
 * new connection is closed at once, so the whole backlog drains. */
static void on_release(uv_timer_t *t) {
  struct state *s = t->data;
  s->released = s->accepted ? s->accepted : -1;
  s->pauses = listener_pauses(s->l);
  for (int i = 0; i < s->accepted && i < CLIENTS; i++)
    conn_close(s->held[i], CONN_END_LOCAL);
  memset(s->held, 0, sizeof s->held);
  s->accepted = 0;
}

static void on_stop(uv_timer_t *t) {
  struct state *s = t->data;
  listener_close(s->l);
  uv_close((uv_handle_t *)&s->release, NULL);
  uv_close((uv_handle_t *)&s->stop, NULL);
}

static int count_open_fds(void) {
  int n = 0;
  for (int fd = 0; fd < 1024; fd++)
    if (fcntl(fd, F_GETFD) != -1)
      n++;
  return n;
}

/* The child: serve with few descriptors; the exit code says what
 * happened (0 ok, else a failure number). */
static int child(int port_pipe) {
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0)
    return 10;
  struct state s;
  memset(&s, 0, sizeof s);
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", 0, &a);
  char err[256];
  if (listener_open(&loop, (struct sockaddr *)&a, 0, on_accept, &s, &s.l, err,
                    sizeof err) != 0)
    return 11;
  uv_timer_init(&loop, &s.release);
  uv_timer_init(&loop, &s.stop);
  s.release.data = s.stop.data = &s;

  /* Room for 8 accepted sockets (9 once the pipe is closed), no more. */
  int base = count_open_fds();
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = (rlim_t)base + 8;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
    return 12;

  unsigned short port =
      ntohs(((const struct sockaddr_in *)listener_addr(s.l))->sin_port);
  if (write(port_pipe, &port, sizeof port) != sizeof port)
    return 13;
  close(port_pipe);

  uv_timer_start(&s.release, on_release, 1200, 0);
  uv_timer_start(&s.stop, on_stop, 2500, 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  int first = s.released;
  int second = s.accepted;
  if (uv_loop_close(&loop) != 0)
    return 14;
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
               (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
  fprintf(stderr,
          "  child: first %d accepted, then %d, closed %d, %lu pauses, "
          "cpu %.3f s\n",
          first, second, s.closed, s.pauses, cpu);
  /* Out of descriptors for ~1.2 s: a few timed pauses, not a spin. */
  if (s.pauses < 1 || s.pauses > 1200 / LISTENER_PAUSE_MS + 2)
    return 18;
  if (cpu > 0.5)
    return 19;
  /* Before the release: only what the limit allows. */
  if (first < 1 || first > 9)
    return 15;
  /* After it: every remaining client, from the backlog. */
  if (first + second != CLIENTS)
    return 16;
  if (s.closed != CLIENTS)
    return 17;
  return 0;
}

int main(void) {
  alarm(30);
  int pfd[2];
  CHECK_INT(pipe(pfd), 0);
  pid_t pid = fork();
  if (pid == 0) {
    close(pfd[0]);
    _exit(child(pfd[1]));
  }
  close(pfd[1]);
  unsigned short port = 0;
  CHECK_INT(read(pfd[0], &port, sizeof port), sizeof port);
  close(pfd[0]);

  int fds[CLIENTS];
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", port, &a);
  for (int i = 0; i < CLIENTS; i++) {
    fds[i] = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fds[i] >= 0);
    /* The kernel completes the handshake from the backlog. */
    CHECK_INT(connect(fds[i], (struct sockaddr *)&a, sizeof a), 0);
  }
  int status = 0;
  CHECK_INT(waitpid(pid, &status, 0), pid);
  CHECK(WIFEXITED(status));
  CHECK_INT(WEXITSTATUS(status), 0);
  for (int i = 0; i < CLIENTS; i++)
    close(fds[i]);
  return check_result("test_listener");
}
