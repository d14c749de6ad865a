/*
 * http: libmicrohttpd driven by libuv (see http.h).
 *
 * Each listening address gets one MHD daemon in "external polling" mode
 * with epoll: MHD keeps its own epoll descriptor holding the listening
 * socket and every connection; we watch that one descriptor with a
 * uv_poll_t (level-triggered: readable while MHD has events waiting) and
 * call MHD_run(), which never blocks.  After every run a uv_timer_t is
 * re-armed from MHD_get_timeout(): 0 when MHD left work ready (it handles
 * a bounded amount per run), the nearest connection timeout otherwise.
 *
 * We bind the listening sockets ourselves (so that the error names the
 * address and keeps its errno) and hand them to MHD, which owns them from
 * then on and closes them in MHD_stop_daemon().
 */
#include "loop/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Clients waiting to be accepted, per address (the kernel's backlog; MHD
 * stops accepting at HTTP_MAX_CONNECTIONS and leaves the rest there). */
#define HTTP_BACKLOG 128

struct http_daemon {
  struct http_server *h;
  struct MHD_Daemon *mhd;
  uv_poll_t poll;
  uv_timer_t timer;
  int handles;                  /* open uv handles of this daemon */
  struct sockaddr_storage addr; /* bound address (the real port if 0) */
};

struct http_server {
  http_handler_cb handler;
  void *data;
  int stopping;
  int n;
  int open_daemons; /* daemons whose handles are not all closed */
  struct http_daemon d[];
};

static void addr_text(const struct sockaddr_storage *sa, char *out,
                      size_t len) {
  char ip[INET6_ADDRSTRLEN] = "?";
  unsigned port = 0;
  if (sa->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
    inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
    port = ntohs(a->sin6_port);
    snprintf(out, len, "[%s]:%u", ip, port);
  } else {
    const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
    port = ntohs(a->sin_port);
    snprintf(out, len, "%s:%u", ip, port);
  }
}

/* A non-blocking listening socket, or -errno. */
static int bind_listen(const struct sockaddr_storage *sa) {
  int fd = socket(sa->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
      (sa->ss_family == AF_INET6 &&
       setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0))
    goto fail;
  socklen_t sl = sa->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                           : sizeof(struct sockaddr_in);
  if (bind(fd, (const struct sockaddr *)sa, sl) < 0 ||
      listen(fd, HTTP_BACKLOG) < 0)
    goto fail;
  return fd;
fail:;
  int e = errno;
  close(fd);
  return -e;
}

/* ---- requests ----------------------------------------------------------- */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_len, void **con_cls) {
  (void)version;
  (void)upload;
  struct http_daemon *d = cls;
  struct http_server *h = d->h;
  if (h->stopping)
    return MHD_NO; /* MHD closes the connection */
  /* GET and HEAD are answered once the whole request is in, so that the
   * connection can be kept alive (MHD closes it after a response queued
   * earlier).  Any other method is answered at once: its body is never
   * read, and MHD closes the connection after the answer.  A GET or HEAD
   * that comes with a body is closed without an answer (MHD 0.9.75 cannot
   * queue one while a body is arriving, and we do not read it). */
  int bodiless = strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
                 strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
  if (*con_cls == NULL && bodiless) {
    *con_cls = d; /* seen; answer on the call that ends the request */
    return MHD_YES;
  }
  if (*upload_len)
    return MHD_NO;
  struct http_response res = {0};
  h->handler(method, url, &res, h->data);
  if (res.status < 100 || res.status > 599)
    res.status = 500;
  struct MHD_Response *r =
      res.body ? MHD_create_response_from_buffer_with_free_callback(
                     res.len, res.body, free)
               : MHD_create_response_from_buffer(0, (void *)"",
                                                 MHD_RESPMEM_PERSISTENT);
  if (!r) {
    free(res.body);
    return MHD_NO;
  }
  if (res.content_type)
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, res.content_type);
  if (res.allow)
    MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, res.allow);
  enum MHD_Result rc = MHD_queue_response(conn, (unsigned)res.status, r);
  MHD_destroy_response(r);
  return rc;
}

/* ---- driving MHD from the loop ------------------------------------------ */

static void on_timer(uv_timer_t *t);

static unsigned connections(struct http_daemon *d) {
  const union MHD_DaemonInfo *i =
      MHD_get_daemon_info(d->mhd, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
  return i ? i->num_connections : 0;
}

/* Runs MHD once and arms the timer for what it asks next. */
static void drive(struct http_daemon *d) {
  if (d->h->stopping)
    return;
  unsigned before = connections(d);
  MHD_run(d->mhd);
  MHD_UNSIGNED_LONG_LONG ms = 0;
  /* MHD takes its listening socket out of epoll while at the connection
   * limit and puts it back only at the start of a run: when connections
   * closed in this run, run again at once, or clients waiting in the
   * backlog would wait for an unrelated event (MHD_get_timeout does not
   * say so). */
  if (connections(d) < before)
    uv_timer_start(&d->timer, on_timer, 0, 0);
  else if (MHD_get_timeout(d->mhd, &ms) == MHD_YES)
    uv_timer_start(&d->timer, on_timer, (uint64_t)ms, 0);
  else
    uv_timer_stop(&d->timer);
}

static void on_timer(uv_timer_t *t) {
  drive(t->data);
}

static void on_poll(uv_poll_t *p, int status, int events) {
  (void)status; /* an error on the epoll fd itself: MHD_run reports it */
  (void)events;
  drive(p->data);
}

/* ---- life cycle -------------------------------------------------------- */

static void on_daemon_closed(uv_handle_t *hd) {
  struct http_daemon *d = hd->data;
  if (--d->handles > 0)
    return;
  /* The poll handle no longer watches MHD's epoll descriptor: it may close
   * now, with the listening socket and the connections. */
  if (d->mhd)
    MHD_stop_daemon(d->mhd);
  d->mhd = NULL;
  struct http_server *h = d->h;
  if (--h->open_daemons == 0)
    free(h);
}

static void daemon_close(struct http_daemon *d) {
  if (d->handles == 0) {
    if (d->mhd)
      MHD_stop_daemon(d->mhd);
    d->mhd = NULL;
    return;
  }
  uv_close((uv_handle_t *)&d->poll, on_daemon_closed);
  uv_close((uv_handle_t *)&d->timer, on_daemon_closed);
}

void http_stop(struct http_server *h) {
  if (!h || h->stopping)
    return;
  h->stopping = 1;
  int closing = 0;
  for (int i = 0; i < h->n; i++)
    if (h->d[i].handles)
      closing++;
  h->open_daemons = closing;
  for (int i = 0; i < h->n; i++)
    daemon_close(&h->d[i]);
  if (closing == 0)
    free(h);
}

static int daemon_open(uv_loop_t *loop, struct http_daemon *d,
                       const struct sockaddr_storage *sa, char *err,
                       size_t errlen) {
  char where[80];
  addr_text(sa, where, sizeof where);
  int fd = bind_listen(sa);
  if (fd < 0) {
    snprintf(err, errlen, "metrics_listen %s: %s", where, strerror(-fd));
    return fd;
  }
  socklen_t sl = sizeof d->addr;
  if (getsockname(fd, (struct sockaddr *)&d->addr, &sl) < 0)
    d->addr = *sa;
  /* No MHD thread: MHD_USE_EPOLL without MHD_USE_INTERNAL_POLLING_THREAD.
   * MHD_USE_IPv6 tells it the socket's family (it sets nothing on it). */
  unsigned flags = MHD_USE_EPOLL;
  if (sa->ss_family == AF_INET6)
    flags |= MHD_USE_IPv6;
  d->mhd = MHD_start_daemon(
      flags, 0, NULL, NULL, on_request, d, MHD_OPTION_LISTEN_SOCKET, fd,
      MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_MAX_CONNECTIONS,
      MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)HTTP_MAX_PER_IP,
      MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_MAX_REQUEST,
      MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_IDLE_TIMEOUT_S,
      MHD_OPTION_END);
  if (!d->mhd) {
    close(fd);
    snprintf(err, errlen, "metrics_listen %s: cannot start the HTTP server",
             where);
    return -ENOMEM;
  }
  const union MHD_DaemonInfo *info =
      MHD_get_daemon_info(d->mhd, MHD_DAEMON_INFO_EPOLL_FD);
  int rc = info ? uv_poll_init(loop, &d->poll, info->epoll_fd) : UV_EINVAL;
  if (rc < 0) {
    MHD_stop_daemon(d->mhd);
    d->mhd = NULL;
    snprintf(err, errlen, "metrics_listen %s: %s", where, uv_strerror(rc));
    return rc;
  }
  uv_timer_init(loop, &d->timer);
  d->poll.data = d->timer.data = d;
  d->handles = 2;
  rc = uv_poll_start(&d->poll, UV_READABLE, on_poll);
  if (rc < 0) {
    snprintf(err, errlen, "metrics_listen %s: %s", where, uv_strerror(rc));
    return rc;
  }
  return 0;
}

const struct sockaddr *http_addr(const struct http_server *h, int i) {
  if (!h || i < 0 || i >= h->n)
    return NULL;
  return (const struct sockaddr *)&h->d[i].addr;
}

int http_start(uv_loop_t *loop, const struct sockaddr_storage *addrs, int n,
               http_handler_cb handler, void *data, struct http_server **out,
               char *err, size_t errlen) {
  *out = NULL;
  if (n <= 0 || !handler) {
    snprintf(err, errlen, "metrics_listen: no address");
    return -EINVAL;
  }
  struct http_server *h = calloc(1, sizeof *h + (size_t)n * sizeof h->d[0]);
  if (!h) {
    snprintf(err, errlen, "metrics_listen: out of memory");
    return -ENOMEM;
  }
  h->handler = handler;
  h->data = data;
  h->n = n;
  for (int i = 0; i < n; i++) {
    h->d[i].h = h;
    int rc = daemon_open(loop, &h->d[i], &addrs[i], err, errlen);
    if (rc < 0) {
      http_stop(h);
      return rc;
    }
  }
  *out = h;
  return 0;
}
