/*
 * admin_socket: the admin Unix socket's transport.  Owns the listening
 * pipe, the socket file and one uv_pipe_t per client; splits input into
 * bounded lines, hands them to the owner one at a time and writes the
 * replies in order.  It never parses a command and never knows JSON.
 */
#include "loop/admin_socket.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

/* Input room: the longest accepted line plus "\r\n". */
#define IN_CAP (ADMIN_SOCKET_LINE_MAX + 2)

struct wchunk {
  uv_write_t req;
  struct admin_client *c;
  size_t len;
  char data[ADMIN_SOCKET_CHUNK];
};

struct admin_client {
  uv_pipe_t pipe;           /* private; pipe.data points back here */
  struct admin_socket *srv; /* NULL once the handle is closed */
  struct admin_client *prev, *next;
  char in[IN_CAP];
  size_t in_len;
  int skipping;    /* dropping the rest of an overlong line */
  int busy;        /* a line was dispatched; its reply has not ended */
  int dispatching; /* drive() is on the stack */
  int reading;
  int eof;              /* the peer will send nothing more (or we refused it) */
  int rejected;         /* accepted beyond the client limit */
  int slot;             /* holds one of the ADMIN_SOCKET_MAX_CLIENTS slots */
  int closing;          /* uv_close() called */
  int closed;           /* close callback ran */
  int writes;           /* uv_write requests in flight */
  size_t queued;        /* their bytes */
  struct wchunk *cur;   /* output being gathered */
  uint64_t last_active; /* uv_now of the last read or write */
  uint64_t line_seq;    /* order of its last line (or of its accept) */
};

struct admin_socket {
  uv_loop_t *loop;
  uv_pipe_t listener;
  char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
  admin_socket_line_cb cb;
  void *data;
  char *reject_line;
  struct admin_client *clients;
  int nclients; /* accepted, not rejected */
  int nrejected;
  int closing;
  int listener_closed;
  uv_timer_t sweep; /* closes idle clients */
  uint64_t idle_ms;
  int sweep_closed;
  uint64_t seq; /* counts accepts and lines: orders clients by activity */
};

static void drive(struct admin_client *c);

static void server_maybe_free(struct admin_socket *s) {
  if (s->closing && s->listener_closed && s->sweep_closed && !s->clients) {
    free(s->reject_line);
    free(s);
  }
}

static void on_client_close(uv_handle_t *h) {
  struct admin_client *c = h->data;
  struct admin_socket *s = c->srv;
  c->closed = 1;
  if (c->prev)
    c->prev->next = c->next;
  else
    s->clients = c->next;
  if (c->next)
    c->next->prev = c->prev;
  if (c->rejected)
    s->nrejected--;
  else if (c->slot)
    s->nclients--;
  c->srv = NULL;
  free(c->cur);
  c->cur = NULL;
  server_maybe_free(s);
  /* An owner still working on a reply frees it in admin_socket_end(). */
  if (!c->busy)
    free(c);
}

static void client_close(struct admin_client *c) {
  if (c->closing)
    return;
  c->closing = 1;
  if (c->reading)
    uv_read_stop((uv_stream_t *)&c->pipe);
  c->reading = 0;
  uv_close((uv_handle_t *)&c->pipe, on_client_close);
}

static void on_write(uv_write_t *req, int status) {
  struct wchunk *w = req->data;
  struct admin_client *c = w->c;
  c->writes--;
  c->last_active = uv_now(req->handle->loop);
  c->queued -= w->len;
  free(w);
  if (status < 0 && !c->closing) {
    struct log_line l;
    log_begin(&l, LOG_INFO, "admin_write_failed");
    log_str(&l, "error", uv_strerror(status));
    log_end(&l);
    client_close(c);
    return;
  }
  drive(c);
}

static int flush_cur(struct admin_client *c) {
  struct wchunk *w = c->cur;
  if (c->closing)
    return UV_EPIPE;
  if (!w || w->len == 0)
    return 0;
  c->cur = NULL;
  w->c = c;
  w->req.data = w;
  uv_buf_t b = uv_buf_init(w->data, (unsigned)w->len);
  int r = uv_write(&w->req, (uv_stream_t *)&c->pipe, &b, 1, on_write);
  if (r < 0) {
    free(w);
    client_close(c);
    return r;
  }
  c->writes++;
  c->queued += w->len;
  return 0;
}

size_t admin_socket_pending(const struct admin_client *c) {
  return c->queued + (c->cur ? c->cur->len : 0);
}

int admin_socket_alive(const struct admin_client *c) {
  return !c->closing;
}

int admin_socket_write(struct admin_client *c, const void *buf, size_t len) {
  const char *p = buf;
  if (c->closing)
    return UV_EPIPE;
  if (admin_socket_pending(c) + len > ADMIN_SOCKET_OUT_MAX) {
    struct log_line l;
    log_begin(&l, LOG_WARN, "admin_client_dropped");
    log_str(&l, "reason", "unread output over limit");
    log_int(&l, "pending", (long long)admin_socket_pending(c));
    log_end(&l);
    client_close(c);
    return UV_ENOBUFS;
  }
  while (len > 0) {
    if (!c->cur) {
      c->cur = malloc(sizeof *c->cur);
      if (!c->cur) {
        client_close(c);
        return UV_ENOMEM;
      }
      c->cur->len = 0;
    }
    size_t room = sizeof c->cur->data - c->cur->len;
    size_t n = len < room ? len : room;
    memcpy(c->cur->data + c->cur->len, p, n);
    c->cur->len += n;
    p += n;
    len -= n;
    if (c->cur->len == sizeof c->cur->data) {
      int r = flush_cur(c);
      if (r < 0)
        return r;
    }
  }
  return 0;
}

int admin_socket_flush(struct admin_client *c) {
  return flush_cur(c);
}

static void dispatch(struct admin_client *c, const char *line, size_t len,
                     int status) {
  c->busy = 1;
  c->line_seq = ++c->srv->seq;
  c->srv->cb(c, line, len, status, c->srv->data);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  struct admin_client *c = h->data;
  (void)hint;
  /* Reading only runs while the buffer holds no complete line and has
   * room (drive() consumes a full one), so this is never empty; if it
   * were, libuv reports UV_ENOBUFS and the client is closed. */
  buf->base = c->in + c->in_len;
  buf->len = IN_CAP - c->in_len;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  struct admin_client *c = st->data;
  (void)buf;
  c->last_active = uv_now(st->loop);
  if (nread == UV_EOF) {
    /* A half-close (`echo status | socat ...`): answer what came, then
     * close once the replies are out. */
    c->eof = 1;
    c->reading = 0;
    uv_read_stop(st);
    drive(c);
    return;
  }
  if (nread < 0) {
    client_close(c);
    return;
  }
  c->in_len += (size_t)nread;
  drive(c);
}

/*
 * Hands complete lines to the owner while no reply is pending and the
 * client reads its output, then decides whether to read more or close.
 * Re-entrant calls (admin_socket_end() from inside the callback) return at
 * once; the loop here carries on.
 */
static void drive(struct admin_client *c) {
  if (c->dispatching || c->closing)
    return;
  c->dispatching = 1;
  while (!c->closing && !c->busy && !c->rejected &&
         admin_socket_pending(c) < ADMIN_SOCKET_OUT_HIGH) {
    char *nl = memchr(c->in, '\n', c->in_len);
    if (c->skipping) {
      if (!nl) {
        c->in_len = 0;
        break;
      }
      size_t used = (size_t)(nl - c->in) + 1;
      memmove(c->in, c->in + used, c->in_len - used);
      c->in_len -= used;
      c->skipping = 0;
      continue;
    }
    if (nl) {
      size_t used = (size_t)(nl - c->in) + 1;
      size_t len = (size_t)(nl - c->in);
      if (len > 0 && c->in[len - 1] == '\r')
        len--;
      char line[IN_CAP];
      memcpy(line, c->in, len);
      line[len] = '\0';
      memmove(c->in, c->in + used, c->in_len - used);
      c->in_len -= used;
      if (len > ADMIN_SOCKET_LINE_MAX)
        dispatch(c, NULL, 0, UV_E2BIG);
      else
        dispatch(c, line, len, 0);
      continue;
    }
    if (c->in_len == IN_CAP) {
      /* No newline in a full buffer: the line is too long.  Report it
       * once and drop bytes up to its end. */
      c->in_len = 0;
      c->skipping = 1;
      dispatch(c, NULL, 0, UV_E2BIG);
      continue;
    }
    if (c->eof && c->in_len > 0) {
      /* The last line came without its newline. */
      char line[IN_CAP];
      size_t len = c->in_len;
      if (c->in[len - 1] == '\r')
        len--;
      memcpy(line, c->in, len);
      line[len] = '\0';
      c->in_len = 0;
      dispatch(c, line, len, 0);
      continue;
    }
    break;
  }
  c->dispatching = 0;
  if (c->closing)
    return;
  if (c->eof || c->rejected) {
    if (!c->busy && c->in_len == 0 && c->writes == 0 &&
        (!c->cur || c->cur->len == 0))
      client_close(c);
    return;
  }
  int want = !c->busy && admin_socket_pending(c) < ADMIN_SOCKET_OUT_HIGH;
  if (want && !c->reading) {
    if (uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read) < 0) {
      client_close(c);
      return;
    }
    c->reading = 1;
  } else if (!want && c->reading) {
    uv_read_stop((uv_stream_t *)&c->pipe);
    c->reading = 0;
  }
}

void admin_socket_end(struct admin_client *c) {
  assert(c->busy);
  c->busy = 0;
  if (c->closed) {
    free(c);
    return;
  }
  if (c->closing)
    return;
  if (flush_cur(c) < 0)
    return;
  if (!c->dispatching)
    drive(c);
}

/* 1 when c waits for a line and owes nothing: no reply being written, no
 * output in flight, no partial line buffered. */
static int client_idle(const struct admin_client *c) {
  return !c->busy && !c->closing && !c->rejected && c->writes == 0 &&
         c->in_len == 0 && !c->cur;
}

/* All slots taken: the idle client whose last line (or accept) is the
 * oldest makes room for `newc` (a health check must get through however
 * many clients connect and say nothing, issue 12).  Its slot is freed
 * now; the handle closes on its own. */
static void evict_idle(struct admin_socket *s, struct admin_client *newc) {
  struct admin_client *old = NULL;
  for (struct admin_client *c = s->clients; c; c = c->next)
    if (c != newc && client_idle(c) && (!old || c->line_seq < old->line_seq))
      old = c;
  if (!old)
    return;
  struct log_line l;
  log_begin(&l, LOG_INFO, "admin_client_evicted");
  log_str(&l, "reason", "client limit, oldest idle client");
  log_end(&l);
  client_close(old);
  old->slot = 0; /* its slot is free from now, not from its close */
  s->nclients--;
}

static void on_connection(uv_stream_t *server, int status) {
  struct admin_socket *s = server->data;
  if (status < 0) {
    struct log_line l;
    log_begin(&l, LOG_WARN, "admin_accept_failed");
    log_str(&l, "error", uv_strerror(status));
    log_end(&l);
    return;
  }
  struct admin_client *c = calloc(1, sizeof *c);
  if (!c) {
    log_msg(LOG_ERROR, "admin_accept_failed", "out of memory");
    return;
  }
  uv_pipe_init(s->loop, &c->pipe, 0);
  c->pipe.data = c;
  c->srv = s;
  c->last_active = uv_now(s->loop);
  c->next = s->clients;
  if (s->clients)
    s->clients->prev = c;
  s->clients = c;
  c->line_seq = ++s->seq;
  int r = uv_accept(server, (uv_stream_t *)&c->pipe);
  if (s->nclients >= ADMIN_SOCKET_MAX_CLIENTS && r == 0)
    evict_idle(s, c);
  if (s->nclients >= ADMIN_SOCKET_MAX_CLIENTS) {
    c->rejected = 1;
    s->nrejected++;
    if (r < 0 || s->nrejected > ADMIN_SOCKET_MAX_CLIENTS) {
      client_close(c);
      return;
    }
    if (s->reject_line &&
        admin_socket_write(c, s->reject_line, strlen(s->reject_line)) < 0)
      return;
    if (flush_cur(c) < 0)
      return;
    drive(c);
    return;
  }
  s->nclients++;
  c->slot = 1;
  if (r < 0) {
    client_close(c);
    return;
  }
  drive(c);
}

/* Probes an existing file at path: 0 when nothing is there (any more). */
static int clear_stale(const char *path, char *err, size_t errlen) {
  struct stat sb;
  if (lstat(path, &sb) < 0) {
    if (errno == ENOENT)
      return 0;
    int e = errno;
    snprintf(err, errlen, "admin socket %s: %s", path, strerror(e));
    return -e;
  }
  if (!S_ISSOCK(sb.st_mode)) {
    snprintf(err, errlen, "admin socket %s exists and is not a socket", path);
    return UV_EEXIST;
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    int e = errno;
    snprintf(err, errlen, "admin socket %s: %s", path, strerror(e));
    return -e;
  }
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  memcpy(sa.sun_path, path, strlen(path) + 1);
  int r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
  int e = errno;
  close(fd);
  if (r == 0) {
    snprintf(err, errlen, "admin socket %s is in use", path);
    return UV_EADDRINUSE;
  }
  if (e != ECONNREFUSED) {
    snprintf(err, errlen, "admin socket %s: %s", path, strerror(e));
    return -e;
  }
  /* Nobody listens: a crashed instance left it behind. */
  if (unlink(path) < 0 && errno != ENOENT) {
    e = errno;
    snprintf(err, errlen, "cannot remove stale admin socket %s: %s", path,
             strerror(e));
    return -e;
  }
  struct log_line l;
  log_begin(&l, LOG_INFO, "admin_stale_socket_removed");
  log_str(&l, "path", path);
  log_end(&l);
  return 0;
}

static void on_sweep(uv_timer_t *t) {
  struct admin_socket *s = t->data;
  uint64_t now = uv_now(t->loop);
  /* client_close only starts the close: the list stays as it is. */
  for (struct admin_client *c = s->clients; c; c = c->next)
    if (!c->busy && !c->closing && c->writes == 0 &&
        now - c->last_active >= s->idle_ms)
      client_close(c);
}

static void on_sweep_close(uv_handle_t *h) {
  struct admin_socket *s = h->data;
  s->sweep_closed = 1;
  server_maybe_free(s);
}

static void on_listener_close(uv_handle_t *h) {
  struct admin_socket *s = h->data;
  s->listener_closed = 1;
  server_maybe_free(s);
}

int admin_socket_open(uv_loop_t *loop, const char *path,
                      admin_socket_line_cb cb, void *data,
                      const char *reject_line, struct admin_socket **out,
                      char *err, size_t errlen) {
  struct admin_socket *s;
  if (strlen(path) >= sizeof s->path) {
    snprintf(err, errlen, "admin socket path too long (max %zu bytes): %s",
             sizeof s->path - 1, path);
    return UV_ENAMETOOLONG;
  }
  if (path[0] == '\0') {
    snprintf(err, errlen, "admin socket path is empty");
    return UV_EINVAL;
  }
  int r = clear_stale(path, err, errlen);
  if (r < 0)
    return r;
  s = calloc(1, sizeof *s);
  if (!s || (reject_line && !(s->reject_line = strdup(reject_line)))) {
    free(s);
    snprintf(err, errlen, "admin socket %s: out of memory", path);
    return UV_ENOMEM;
  }
  s->loop = loop;
  s->cb = cb;
  s->data = data;
  memcpy(s->path, path, strlen(path) + 1);
  uv_pipe_init(loop, &s->listener, 0);
  s->listener.data = s;
  /* Mode 0600 from the first instant: bind(2) creates the file through
   * the umask.  Start-up only, before any other thread creates files. */
  mode_t old = umask(0177);
  r = uv_pipe_bind(&s->listener, path);
  umask(old);
  if (r == 0) {
    r = uv_listen((uv_stream_t *)&s->listener, ADMIN_SOCKET_MAX_CLIENTS,
                  on_connection);
    if (r < 0)
      unlink(path);
  }
  if (r < 0) {
    snprintf(err, errlen, "cannot listen on admin socket %s: %s", path,
             uv_strerror(r));
    s->closing = 1;
    s->sweep_closed = 1; /* never started */
    uv_close((uv_handle_t *)&s->listener, on_listener_close);
    return r;
  }
  uv_timer_init(s->loop, &s->sweep);
  s->sweep.data = s;
  s->idle_ms = ADMIN_SOCKET_IDLE_MS;
  uv_timer_start(&s->sweep, on_sweep, ADMIN_SOCKET_IDLE_MS / 3 + 1,
                 ADMIN_SOCKET_IDLE_MS / 3 + 1);
  uv_unref((uv_handle_t *)&s->sweep); /* never keeps the loop alive alone */
  *out = s;
  return 0;
}

void admin_socket_set_idle_timeout(struct admin_socket *s, uint64_t ms) {
  s->idle_ms = ms;
  uint64_t every = ms / 3 < 10000 ? ms / 3 + 1 : 10000;
  uv_timer_start(&s->sweep, on_sweep, every, every);
}

int admin_socket_clients(const struct admin_socket *s) {
  return s->nclients;
}

void admin_socket_close(struct admin_socket *s) {
  assert(!s->closing);
  s->closing = 1;
  unlink(s->path);
  uv_close((uv_handle_t *)&s->listener, on_listener_close);
  uv_close((uv_handle_t *)&s->sweep, on_sweep_close);
  for (struct admin_client *c = s->clients; c; c = c->next)
    client_close(c);
}
