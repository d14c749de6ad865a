/*
 * listener: a listening socket, accept(2) driven by a uv_poll_t (see
 * listener.h for why not uv_listen).  Owns the socket, the poll handle and
 * the pause timer; frees itself from their close callbacks.
 */
#include "loop/listener.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

struct listener {
  /* private */
  uv_poll_t poll;
  uv_timer_t pause_timer;
  int pending_closes;
  int closing;
  int fd;
  int tls;
  listener_accept_cb cb;
  void *data;
  struct sockaddr_storage addr;
  char name[INET6_ADDRSTRLEN + 10];
  unsigned long pauses;
  uint64_t last_warn_ms;
  unsigned long warn_suppressed;
};

static void on_poll(uv_poll_t *h, int status, int events);

static void on_resume(uv_timer_t *t) {
  struct listener *l = t->data;
  if (!l->closing)
    uv_poll_start(&l->poll, UV_READABLE, on_poll);
}

/* Out of descriptors (or memory): stop watching the socket for a while
 * instead of retrying at once; the backlog keeps the clients waiting. */
static void pause_accepting(struct listener *l, int err) {
  uv_poll_stop(&l->poll);
  uv_timer_start(&l->pause_timer, on_resume, LISTENER_PAUSE_MS, 0);
  l->pauses++;
  uint64_t now = uv_now(l->poll.loop);
  if (l->last_warn_ms == 0 || now - l->last_warn_ms >= 10000) {
    struct log_line line;
    log_begin(&line, LOG_WARN, "accept");
    log_str(&line, "listener", l->name);
    log_str(&line, "error", uv_strerror(err));
    log_int(&line, "pause_ms", LISTENER_PAUSE_MS);
    if (l->warn_suppressed)
      log_int(&line, "suppressed", (long long)l->warn_suppressed);
    log_end(&line);
    l->last_warn_ms = now;
    l->warn_suppressed = 0;
  } else {
    l->warn_suppressed++;
  }
}

static void on_poll(uv_poll_t *h, int status, int events) {
  struct listener *l = h->data;
  (void)events;
  if (status < 0) {
    pause_accepting(l, status);
    return;
  }
  for (int i = 0; i < LISTENER_BATCH && !l->closing; i++) {
    int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      int e = errno;
      if (e == EAGAIN || e == EWOULDBLOCK)
        return;
      /* A connection that died in the backlog, or (Linux) a network error
       * pending on it: that client is gone, the next one may be fine. */
      if (e == EINTR || e == ECONNABORTED || e == EPROTO || e == ENETDOWN ||
          e == ENOPROTOOPT || e == EHOSTDOWN || e == ENONET ||
          e == EHOSTUNREACH || e == EOPNOTSUPP || e == ENETUNREACH ||
          e == EPERM)
        continue;
      /* EMFILE, ENFILE, ENOBUFS, ENOMEM and anything unexpected: wait. */
      pause_accepting(l, -e);
      return;
    }
    struct conn *c;
    int r = conn_adopt(l->poll.loop, fd, &c);
    if (r < 0) {
      pause_accepting(l, r);
      return;
    }
    l->cb(l, c, l->data);
  }
}

static void format_addr_error(char *err, size_t errlen,
                              const struct sockaddr *addr, int e) {
  char name[INET6_ADDRSTRLEN + 10];
  conn_addr_format(addr, 1, name, sizeof name);
  snprintf(err, errlen, "cannot listen on %s: %s", name, uv_strerror(-e));
}

int listener_open(uv_loop_t *loop, const struct sockaddr *addr, int tls,
                  listener_accept_cb cb, void *data, struct listener **out,
                  char *err, size_t errlen) {
  socklen_t alen;
  if (addr->sa_family == AF_INET) {
    alen = sizeof(struct sockaddr_in);
  } else if (addr->sa_family == AF_INET6) {
    alen = sizeof(struct sockaddr_in6);
  } else {
    snprintf(err, errlen, "cannot listen: address family not supported");
    return UV_EAFNOSUPPORT;
  }
  int fd =
      socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    int e = errno;
    format_addr_error(err, errlen, addr, e);
    return -e;
  }
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      (addr->sa_family == AF_INET6 &&
       setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0) ||
      bind(fd, addr, alen) != 0 || listen(fd, LISTENER_BACKLOG) != 0) {
    int e = errno;
    close(fd);
    format_addr_error(err, errlen, addr, e);
    return -e;
  }

  struct listener *l = calloc(1, sizeof *l);
  if (!l) {
    close(fd);
    snprintf(err, errlen, "cannot listen: out of memory");
    return UV_ENOMEM;
  }
  l->fd = fd;
  l->tls = tls;
  l->cb = cb;
  l->data = data;
  socklen_t sl = sizeof l->addr;
  if (getsockname(fd, (struct sockaddr *)&l->addr, &sl) != 0)
    memcpy(&l->addr, addr, alen);
  conn_addr_format((const struct sockaddr *)&l->addr, 1, l->name,
                   sizeof l->name);

  int r = uv_poll_init_socket(loop, &l->poll, fd);
  if (r < 0) {
    close(fd);
    free(l);
    format_addr_error(err, errlen, addr, -r);
    return r;
  }
  uv_timer_init(loop, &l->pause_timer);
  l->poll.data = l->pause_timer.data = l;
  r = uv_poll_start(&l->poll, UV_READABLE, on_poll);
  if (r < 0) {
    format_addr_error(err, errlen, addr, -r);
    listener_close(l);
    return r;
  }
  *out = l;
  return 0;
}

static void on_closed(uv_handle_t *h) {
  struct listener *l = h->data;
  if (--l->pending_closes > 0)
    return;
  close(l->fd);
  free(l);
}

void listener_close(struct listener *l) {
  if (l->closing)
    return;
  l->closing = 1;
  l->pending_closes = 2;
  uv_close((uv_handle_t *)&l->poll, on_closed);
  uv_close((uv_handle_t *)&l->pause_timer, on_closed);
}

int listener_tls(const struct listener *l) {
  return l->tls;
}
void *listener_data(const struct listener *l) {
  return l->data;
}
const struct sockaddr *listener_addr(const struct listener *l) {
  return (const struct sockaddr *)&l->addr;
}
const char *listener_name(const struct listener *l) {
  return l->name;
}
unsigned long listener_pauses(const struct listener *l) {
  return l->pauses;
}
