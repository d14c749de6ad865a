/*
 * test_http: loop/http over real loopback TCP.  The loop runs on the main
 * thread; a client thread speaks HTTP/1.1 over plain blocking sockets.
 * Checks: the handler runs on the loop thread with method and path (query
 * stripped), keep-alive, status and headers pass through, 405's Allow,
 * an over-long request head refused, an address in use named in the
 * error, and that http_stop() leaves no handle behind (uv_loop_close()
 * succeeds).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "check.h"
#include "loop/http.h"

static pthread_t loop_thread;
static int calls, off_thread, saw_query;
static char last_path[256], last_method[16];

static void handler(const char *method, const char *path,
                    struct http_response *res, void *data) {
  (void)data;
  calls++;
  if (!pthread_equal(pthread_self(), loop_thread))
    off_thread++;
  snprintf(last_path, sizeof last_path, "%s", path);
  if (strchr(path, '?'))
    saw_query++;
  snprintf(last_method, sizeof last_method, "%s", method);
  if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
    res->status = 405;
    res->allow = "GET, HEAD";
    return;
  }
  if (strcmp(path, "/hello") == 0) {
    res->status = 200;
    res->content_type = "text/plain";
    res->body = strdup("hello\n");
    res->len = 6;
    return;
  }
  res->status = 404;
}

static uint16_t port;

static int connect_to(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  struct timeval tv = {.tv_sec = 10};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Reads one response (headers + Content-Length body) into out; returns
 * its length, 0 on EOF before any byte, -1 on error. */
static int read_response(int fd, char *out, size_t cap) {
  size_t n = 0;
  for (;;) {
    out[n] = '\0';
    char *end = strstr(out, "\r\n\r\n");
    if (end) {
      const char *cl = strstr(out, "Content-Length: ");
      size_t body = cl ? strtoul(cl + 16, NULL, 10) : 0;
      size_t want = (size_t)(end + 4 - out) + body;
      if (n >= want)
        return (int)n;
    }
    if (n + 1 >= cap)
      return -1;
    ssize_t r = recv(fd, out + n, cap - 1 - n, 0);
    if (r <= 0)
      return n ? (int)n : (r == 0 ? 0 : -1);
    n += (size_t)r;
  }
}

struct results {
  int ok_keepalive, ok_404, ok_405, ok_query, ok_big, ok_head;
  uv_async_t *done;
};

static void *client(void *arg) {
  struct results *r = arg;
  char buf[65536];
  int fd = connect_to();
  if (fd >= 0) {
    /* Two requests on one connection. */
    const char req[] = "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n";
    int good = 0;
    for (int i = 0; i < 2; i++) {
      send(fd, req, sizeof req - 1, MSG_NOSIGNAL);
      int n = read_response(fd, buf, sizeof buf);
      if (n > 0 && strncmp(buf, "HTTP/1.1 200 ", 13) == 0 &&
          strstr(buf, "Content-Type: text/plain\r\n") &&
          strstr(buf, "\r\n\r\nhello\n"))
        good++;
    }
    r->ok_keepalive = good == 2;
    const char q[] = "GET /hello?x=1&y=2 HTTP/1.1\r\nHost: t\r\n\r\n";
    send(fd, q, sizeof q - 1, MSG_NOSIGNAL);
    r->ok_query = read_response(fd, buf, sizeof buf) > 0 &&
                  strncmp(buf, "HTTP/1.1 200 ", 13) == 0;
    const char nf[] = "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n";
    send(fd, nf, sizeof nf - 1, MSG_NOSIGNAL);
    r->ok_404 = read_response(fd, buf, sizeof buf) > 0 &&
                strncmp(buf, "HTTP/1.1 404 ", 13) == 0;
    const char hd[] = "HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n";
    send(fd, hd, sizeof hd - 1, MSG_NOSIGNAL);
    int n = (int)recv(fd, buf, sizeof buf - 1, 0);
    if (n > 0) {
      buf[n] = '\0';
      r->ok_head = strncmp(buf, "HTTP/1.1 200 ", 13) == 0 &&
                   strstr(buf, "\r\n\r\n")[4] == '\0';
    }
    close(fd);
  }
  fd = connect_to();
  if (fd >= 0) {
    const char post[] = "POST /hello HTTP/1.1\r\nHost: t\r\n"
                        "Content-Length: 5\r\n\r\nabcde";
    send(fd, post, sizeof post - 1, MSG_NOSIGNAL);
    r->ok_405 = read_response(fd, buf, sizeof buf) > 0 &&
                strncmp(buf, "HTTP/1.1 405 ", 13) == 0 &&
                strstr(buf, "Allow: GET, HEAD\r\n") != NULL;
    close(fd);
  }
  fd = connect_to();
  if (fd >= 0) {
    /* A request head over HTTP_MAX_REQUEST: refused, never handled. */
    size_t len = HTTP_MAX_REQUEST * 4;
    char *big = malloc(len);
    memset(big, 'a', len);
    memcpy(big, "GET /", 5);
    send(fd, big, len, MSG_NOSIGNAL);
    free(big);
    int n = read_response(fd, buf, sizeof buf);
    r->ok_big = n == 0 || (n > 0 && (strncmp(buf, "HTTP/1.1 414 ", 13) == 0 ||
                                     strncmp(buf, "HTTP/1.1 431 ", 13) == 0));
    close(fd);
  }
  uv_async_send(r->done);
  return NULL;
}

static struct http_server *server;

static void on_done(uv_async_t *a) {
  http_stop(server);
  server = NULL;
  uv_close((uv_handle_t *)a, NULL);
}

static void test_serve(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  loop_thread = pthread_self();
  /* Port 0: the kernel picks one and http_addr() tells it (a port found
   * free and released first could be taken by another test's connect). */
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  struct sockaddr_in *a = (struct sockaddr_in *)&ss;
  a->sin_family = AF_INET;
  a->sin_port = 0;
  a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  char err[256] = "";
  CHECK_INT(http_start(&loop, &ss, 1, handler, NULL, &server, err, sizeof err),
            0);
  const struct sockaddr_in *bound =
      (const struct sockaddr_in *)http_addr(server, 0);
  CHECK(bound != NULL && bound->sin_family == AF_INET);
  port = ntohs(bound->sin_port);
  CHECK(port != 0);
  CHECK(http_addr(server, 1) == NULL);
  a->sin_port = htons(port);

  /* The same address again: in use, named in the message. */
  struct http_server *second = NULL;
  int rc = http_start(&loop, &ss, 1, handler, NULL, &second, err, sizeof err);
  CHECK_INT(rc, -EADDRINUSE);
  CHECK(second == NULL);
  char want[64];
  snprintf(want, sizeof want, "metrics_listen 127.0.0.1:%u", port);
  CHECK_CONTAINS(err, want);

  uv_async_t done;
  uv_async_init(&loop, &done, on_done);
  struct results r = {.done = &done};
  pthread_t t;
  pthread_create(&t, NULL, client, &r);
  uv_run(&loop, UV_RUN_DEFAULT);
  pthread_join(t, NULL);

  CHECK(r.ok_keepalive);
  CHECK(r.ok_query);
  CHECK(r.ok_404);
  CHECK(r.ok_head);
  CHECK(r.ok_405);
  CHECK(r.ok_big);
  CHECK_INT(off_thread, 0);
  CHECK_INT(saw_query, 0);
  CHECK(calls >= 6);
  CHECK_STR(last_method, "POST");
  CHECK_INT(uv_loop_close(&loop), 0);
}

int main(void) {
  test_serve();
  return check_result("test_http");
}
