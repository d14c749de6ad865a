/*
 * conn: libuv glue for one TCP connection, TLS included (see conn.h).
 *
 * Owns: the uv_tcp_t, a uv_timer_t (connect timeout, handshake timeout,
 * the owner's deadline, the flush linger), a uv_idle_t used to deliver
 * retained input on the next loop turn, the input buffer, the write
 * requests in flight and the SSL with its two memory BIOs.
 * Never: parses what it carries, frees memory outside a close callback,
 * or calls the owner back from inside a call the owner made (every
 * callback comes from a libuv callback).
 */
#include "loop/conn.h"

#include <arpa/inet.h>
#include <assert.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "loop/tls.h"

struct conn {
  /* private: the three handles; their close callbacks free the conn */
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_idle_t kick;
  uv_connect_t connect_req;
  int pending_closes;

  const struct conn_cbs *cbs;
  void *data;

  unsigned closing : 1;     /* conn_close ran: no callback but on_close */
  unsigned silent : 1;      /* never handed to an owner: no on_close */
  unsigned connecting : 1;  /* outbound connect in flight */
  unsigned connected : 1;   /* the socket is usable */
  unsigned reading : 1;     /* uv_read_start is in effect */
  unsigned paused : 1;      /* the owner paused input */
  unsigned wq_full : 1;     /* write queue above the high-water mark */
  unsigned delivering : 1;  /* process_input is on the stack */
  unsigned undelivered : 1; /* input the owner has not been offered */
  unsigned discard : 1;     /* conn_discard_input during on_read */
  unsigned flush_pending : 1;
  unsigned hs_done : 1;
  unsigned tls_failed : 1;
  unsigned tls_server : 1;
  enum conn_end end, flush_end;
  int end_status;

  size_t wq_bytes; /* bytes handed to uv_write, not yet completed */

  SSL *ssl; /* owns rbio and wbio */
  BIO *rbio, *wbio;
  unsigned tls_gen; /* bumped by conn_start_tls */
  struct conn_tls_info tls;
  char tls_err[192];

  struct sockaddr_storage peer, local;
  char peer_str[INET6_ADDRSTRLEN];

  size_t in_len;
  /* CONN_IN_MAX bytes, taken when input arrives and given back as soon as
   * the owner has consumed all of it: an idle connection holds no input
   * buffer (memory per idle session, issue 12 item 6). */
  char *in;
};

/* Ciphertext goes from the socket straight into the read BIO (which
 * copies it), so every TLS conn reads through this one buffer: libuv
 * calls alloc, read and the read callback in turn on the loop thread. */
static char tls_rbuf[CONN_READ_CHUNK];

/* Takes the input buffer if the conn has none.  0 or UV_ENOMEM. */
static int in_take(struct conn *c) {
  if (c->in)
    return 0;
  c->in = malloc(CONN_IN_MAX);
  return c->in ? 0 : UV_ENOMEM;
}

/* Gives the input buffer back once nothing is left in it. */
static void in_release(struct conn *c) {
  if (c->in && c->in_len == 0 && !c->delivering) {
    free(c->in);
    c->in = NULL;
  }
}

struct wreq {
  uv_write_t req;
  struct conn *c;
  size_t len;
  char data[];
};

static const char *const end_names[] = {
    [CONN_END_LOCAL] = "local",       [CONN_END_TIMEOUT] = "timeout",
    [CONN_END_EOF] = "eof",           [CONN_END_IO] = "io",
    [CONN_END_TLS] = "tls",           [CONN_END_CONNECT] = "connect",
    [CONN_END_OVERFLOW] = "overflow", [CONN_END_SHUTDOWN] = "shutdown",
};

const char *conn_end_name(enum conn_end end) {
  if ((unsigned)end < sizeof end_names / sizeof end_names[0] && end_names[end])
    return end_names[end];
  return "?";
}

static void close_internal(struct conn *c, enum conn_end end, int status);
static void process_input(struct conn *c);
static void update_reading(struct conn *c);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* ---- addresses ------------------------------------------------------- */

int conn_addr_unmap(struct sockaddr_storage *ss) {
  if (ss->ss_family != AF_INET6)
    return 0;
  const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
  if (!IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
    return 0;
  struct sockaddr_in s4;
  memset(&s4, 0, sizeof s4);
  s4.sin_family = AF_INET;
  s4.sin_port = s6->sin6_port;
  memcpy(&s4.sin_addr, &s6->sin6_addr.s6_addr[12], 4);
  memset(ss, 0, sizeof *ss);
  memcpy(ss, &s4, sizeof s4);
  return 1;
}

const char *conn_addr_format(const struct sockaddr *sa, int with_port,
                             char *buf, size_t len) {
  char ip[INET6_ADDRSTRLEN];
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
    if (with_port)
      snprintf(buf, len, "%s:%u", ip, ntohs(s4->sin_port));
    else
      snprintf(buf, len, "%s", ip);
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
    inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
    if (with_port)
      snprintf(buf, len, "[%s]:%u", ip, ntohs(s6->sin6_port));
    else
      snprintf(buf, len, "%s", ip);
  } else {
    snprintf(buf, len, "?");
  }
  return buf;
}

static void fill_addresses(struct conn *c) {
  int n = sizeof c->peer;
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&c->peer, &n) != 0)
    memset(&c->peer, 0, sizeof c->peer);
  n = sizeof c->local;
  if (uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&c->local, &n) != 0)
    memset(&c->local, 0, sizeof c->local);
  conn_addr_unmap(&c->peer);
  conn_addr_unmap(&c->local);
  conn_addr_format((const struct sockaddr *)&c->peer, 0, c->peer_str,
                   sizeof c->peer_str);
}

const struct sockaddr *conn_peer(const struct conn *c) {
  return (const struct sockaddr *)&c->peer;
}

const struct sockaddr *conn_local(const struct conn *c) {
  return (const struct sockaddr *)&c->local;
}

const char *conn_peer_str(const struct conn *c) {
  return c->peer_str;
}

int conn_set_peer(struct conn *c, const struct sockaddr *sa) {
  size_t n;
  if (sa->sa_family == AF_INET)
    n = sizeof(struct sockaddr_in);
  else if (sa->sa_family == AF_INET6)
    n = sizeof(struct sockaddr_in6);
  else
    return UV_EINVAL;
  memset(&c->peer, 0, sizeof c->peer);
  memcpy(&c->peer, sa, n);
  conn_addr_unmap(&c->peer);
  conn_addr_format((const struct sockaddr *)&c->peer, 0, c->peer_str,
                   sizeof c->peer_str);
  return 0;
}

int conn_fileno(const struct conn *c) {
  uv_os_fd_t fd;
  if (uv_fileno((const uv_handle_t *)&c->tcp, &fd) < 0)
    return -1;
  return fd;
}

/* ---- creation ---------------------------------------------------------- */

static void on_timer(uv_timer_t *t);
static void on_kick(uv_idle_t *h);

static struct conn *conn_new(uv_loop_t *loop) {
  struct conn *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  /* uv_tcp_init, uv_timer_init and uv_idle_init cannot fail on Unix with
   * these arguments; the asserts document that the close count relies on
   * all three being initialized. */
  int r = uv_tcp_init(loop, &c->tcp);
  assert(r == 0);
  r = uv_timer_init(loop, &c->timer);
  assert(r == 0);
  r = uv_idle_init(loop, &c->kick);
  assert(r == 0);
  (void)r;
  c->tcp.data = c->timer.data = c->kick.data = c;
  return c;
}

int conn_adopt(uv_loop_t *loop, int fd, struct conn **out) {
  struct conn *c = conn_new(loop);
  if (!c) {
    close(fd);
    return UV_ENOMEM;
  }
  int r = uv_tcp_open(&c->tcp, fd);
  if (r < 0) {
    close(fd);
    c->silent = 1;
    close_internal(c, CONN_END_IO, r);
    return r;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  c->connected = 1;
  fill_addresses(c);
  *out = c;
  return 0;
}

static void on_connect(uv_connect_t *req, int status) {
  struct conn *c = req->data;
  c->connecting = 0;
  if (c->closing)
    return; /* UV_ECANCELED from uv_close, or a timeout already reported */
  uv_timer_stop(&c->timer);
  if (status < 0) {
    close_internal(c, CONN_END_CONNECT, status);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  c->connected = 1;
  fill_addresses(c);
  if (c->cbs->on_connected)
    c->cbs->on_connected(c);
  if (!c->closing)
    update_reading(c);
}

int conn_connect(uv_loop_t *loop, const struct sockaddr *addr,
                 unsigned timeout_ms, const struct conn_cbs *cbs, void *data,
                 struct conn **out) {
  struct conn *c = conn_new(loop);
  if (!c)
    return UV_ENOMEM;
  c->cbs = cbs;
  c->data = data;
  c->connect_req.data = c;
  int r = uv_tcp_connect(&c->connect_req, &c->tcp, addr, on_connect);
  if (r < 0) {
    c->silent = 1;
    close_internal(c, CONN_END_CONNECT, r);
    return r;
  }
  c->connecting = 1;
  if (timeout_ms)
    uv_timer_start(&c->timer, on_timer, timeout_ms, 0);
  *out = c;
  return 0;
}

void conn_set_owner(struct conn *c, const struct conn_cbs *cbs, void *data) {
  c->cbs = cbs;
  c->data = data;
  update_reading(c);
}

void *conn_data(const struct conn *c) {
  return c->data;
}
void conn_set_data(struct conn *c, void *data) {
  c->data = data;
}

/* ---- writing ------------------------------------------------------------ */

static void on_write(uv_write_t *req, int status) {
  struct wreq *w = (struct wreq *)req;
  struct conn *c = w->c;
  c->wq_bytes -= w->len;
  free(w);
  if (c->closing)
    return; /* UV_ECANCELED after uv_close; nobody to tell */
  if (status < 0) {
    close_internal(c, CONN_END_IO, status);
    return;
  }
  if (c->wq_full && c->wq_bytes <= CONN_WQ_LOW) {
    c->wq_full = 0;
    update_reading(c);
  }
  if (c->wq_bytes == 0) {
    if (c->flush_pending) {
      close_internal(c, c->flush_end, 0);
      return;
    }
    /* Handshake records draining are not the owner's business: it cannot
     * write before on_tls_done anyway. */
    if (c->cbs && c->cbs->on_drain && !(c->ssl && !c->hs_done))
      c->cbs->on_drain(c);
  }
}

/* Queues the last len bytes of w->data (w malloc'd with room for them;
 * taken in every case) as one write request. */
static int queue_wreq(struct conn *c, struct wreq *w, size_t off, size_t len) {
  w->c = c;
  w->len = len;
  if (off)
    memmove(w->data, w->data + off, len);
  uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
  int r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
  if (r < 0) {
    free(w);
    return r;
  }
  c->wq_bytes += len;
  return 0;
}

/* Bytes of buf written to the socket at once when nothing is queued
 * (uv_try_write: no request, no completion callback on the next turn, and
 * none of the epoll_ctl calls libuv makes around a write request — issue
 * 21), or 0 when the socket would block; a UV_E* code on a socket error. */
static int try_send(struct conn *c, const char *buf, size_t len) {
  if (c->wq_bytes > 0 || len == 0)
    return 0;
  uv_buf_t b = uv_buf_init((char *)buf, (unsigned)len);
  int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
  return n == UV_EAGAIN ? 0 : n;
}

/* Sends bytes as they are (plaintext or ciphertext): what the socket
 * takes now, and a copy of the rest queued. */
static int send_raw(struct conn *c, const void *buf, size_t len) {
  int n = try_send(c, buf, len);
  if (n < 0 || (size_t)n == len)
    return n < 0 ? n : 0;
  size_t rest = len - (size_t)n;
  struct wreq *w = malloc(sizeof *w + rest);
  if (!w)
    return UV_ENOMEM;
  memcpy(w->data, (const char *)buf + n, rest);
  return queue_wreq(c, w, 0, rest);
}

/* Moves whatever the TLS engine produced from the write BIO to the
 * socket. */
static int flush_wbio(struct conn *c) {
  size_t len = BIO_ctrl_pending(c->wbio);
  if (len == 0)
    return 0;
  struct wreq *w = malloc(sizeof *w + len);
  if (!w)
    return UV_ENOMEM;
  int got = BIO_read(c->wbio, w->data, (int)len);
  assert(got == (int)len);
  (void)got;
  int n = try_send(c, w->data, len);
  if (n < 0 || (size_t)n == len) {
    free(w);
    return n < 0 ? n : 0;
  }
  return queue_wreq(c, w, (size_t)n, len - (size_t)n);
}

int conn_write(struct conn *c, const void *buf, size_t len) {
  if (c->closing || c->flush_pending)
    return UV_EPIPE;
  if (c->ssl && c->tls_failed)
    return UV_EPROTO;
  if (c->ssl && !c->hs_done)
    return UV_EBUSY;
  if (len > CONN_WQ_MAX || c->wq_bytes + len > CONN_WQ_MAX)
    return UV_ENOBUFS;
  if (len == 0)
    return c->wq_full ? CONN_WRITE_FULL : 0;
  int r;
  if (c->ssl) {
    ERR_clear_error();
    /* The memory BIO never blocks, so SSL_write takes all or fails. */
    if (SSL_write(c->ssl, buf, (int)len) != (int)len) {
      c->tls_failed = 1;
      close_internal(c, CONN_END_TLS, 0);
      return UV_EPROTO;
    }
    r = flush_wbio(c);
  } else {
    r = send_raw(c, buf, len);
  }
  if (r < 0) {
    close_internal(c, CONN_END_IO, r);
    return r;
  }
  if (c->wq_bytes >= CONN_WQ_HIGH) {
    c->wq_full = 1;
    update_reading(c);
    return CONN_WRITE_FULL;
  }
  return 0;
}

size_t conn_write_queued(const struct conn *c) {
  return c->wq_bytes;
}

/* ---- reading ------------------------------------------------------------ */

static void update_reading(struct conn *c) {
  int want = !c->closing && !c->flush_pending && c->connected && c->cbs &&
             !c->paused && !c->wq_full;
  /* Bound what sits unread: plaintext by the input buffer, ciphertext by
   * two socket reads in the read BIO. */
  if (want && c->ssl)
    want = BIO_ctrl_pending(c->rbio) < 2 * CONN_READ_CHUNK;
  else if (want)
    want = c->in_len < CONN_IN_MAX;
  if (want && !c->reading) {
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
      c->reading = 1;
  } else if (!want && c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  }
}

/* Test hook (conn_debug_read_size): caps each socket read. */
static size_t (*debug_read_size)(void *data);
static void *debug_read_data;

void conn_debug_read_size(size_t (*next)(void *data), void *data) {
  debug_read_size = next;
  debug_read_data = data;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  struct conn *c = h->data;
  (void)suggested;
  if (c->ssl)
    *buf = uv_buf_init(tls_rbuf, CONN_READ_CHUNK);
  else if (in_take(c) == 0)
    *buf = uv_buf_init(c->in + c->in_len, (unsigned)(CONN_IN_MAX - c->in_len));
  else
    *buf = uv_buf_init(NULL, 0); /* on_read gets UV_ENOBUFS */
  if (debug_read_size) {
    size_t cap = debug_read_size(debug_read_data);
    if (cap > 0 && cap < buf->len)
      buf->len = cap;
  }
}

static void tls_fail(struct conn *c, const char *why, int status);

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  struct conn *c = s->data;
  (void)buf;
  if (c->closing || nread == 0)
    return;
  if (nread == UV_ENOBUFS) {
    if (!c->ssl && !c->in) {
      close_internal(c, CONN_END_IO, UV_ENOMEM); /* no input buffer */
      return;
    }
    update_reading(c);
    return;
  }
  if (nread < 0) {
    if (c->ssl && !c->hs_done && !c->tls_failed)
      tls_fail(c, "connection closed during the TLS handshake",
               nread == UV_EOF ? 0 : (int)nread);
    else if (nread == UV_EOF)
      close_internal(c, CONN_END_EOF, 0);
    else
      close_internal(c, CONN_END_IO, (int)nread);
    return;
  }
  if (c->ssl) {
    BIO_write(c->rbio, tls_rbuf, (int)nread);
  } else {
    c->in_len += (size_t)nread;
    c->undelivered = 1;
  }
  process_input(c);
}

void conn_read_pause(struct conn *c) {
  c->paused = 1;
  update_reading(c);
}

static void on_kick(uv_idle_t *h) {
  struct conn *c = h->data;
  uv_idle_stop(&c->kick);
  process_input(c);
}

static void kick(struct conn *c) {
  if (!c->closing)
    uv_idle_start(&c->kick, on_kick);
}

void conn_read_resume(struct conn *c) {
  if (c->closing)
    return;
  c->paused = 0;
  if (c->in_len > 0)
    c->undelivered = 1;
  kick(c);
  update_reading(c);
}

void conn_discard_input(struct conn *c) {
  c->in_len = 0;
  c->undelivered = 0;
  if (c->delivering)
    c->discard = 1;
  in_release(c);
}

size_t conn_input_pending(const struct conn *c) {
  return c->in_len;
}

/* ---- TLS engine --------------------------------------------------------- */

static void tls_fill_info(struct conn *c) {
  c->tls.version = SSL_get_version(c->ssl);
  c->tls.cipher = SSL_get_cipher_name(c->ssl);
  if (!c->tls_server) {
    c->tls.verify_result = SSL_get_verify_result(c->ssl);
    c->tls.verified = SSL_get0_peer_certificate(c->ssl) != NULL &&
                      c->tls.verify_result == X509_V_OK;
  }
}

/* Reports a failed handshake once, then ends the conn. */
static void tls_fail(struct conn *c, const char *why, int status) {
  c->tls_failed = 1;
  snprintf(c->tls_err, sizeof c->tls_err, "%s", why);
  c->tls.ok = 0;
  c->tls.error = c->tls_err;
  if (c->cbs && c->cbs->on_tls_done)
    c->cbs->on_tls_done(c, &c->tls);
  close_internal(c, CONN_END_TLS, status);
}

/* One handshake step.  Returns 1 when done (on_tls_done ran), 0 when it
 * needs more input, -1 when the conn is closing. */
static int tls_handshake(struct conn *c) {
  ERR_clear_error();
  int r = SSL_do_handshake(c->ssl);
  int err = r == 1 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, r);
  /* Send what the step produced, alerts included. */
  int fr = flush_wbio(c);
  if (fr < 0) {
    close_internal(c, CONN_END_IO, fr);
    return -1;
  }
  if (r == 1) {
    c->hs_done = 1;
    c->tls.ok = 1;
    c->tls.error = NULL;
    tls_fill_info(c);
    if (c->cbs && c->cbs->on_tls_done)
      c->cbs->on_tls_done(c, &c->tls);
    return c->closing ? -1 : 1;
  }
  if (err == SSL_ERROR_WANT_READ)
    return 0;

  char why[160];
  /* client hook (issue 12 item 7): the real cause, not the certificate
   * check unless that is what failed (loop/tls.h). */
  c->tls.verify_result = tls_handshake_error(c->ssl, err, why, sizeof why);
  tls_fail(c, why, 0);
  return -1;
}

/* Decrypts into the input buffer.  Returns the bytes added, or -1 when the
 * conn is closing (peer close_notify or a record error). */
static int tls_fill(struct conn *c) {
  int added = 0;
  if (BIO_ctrl_pending(c->rbio) == 0 && SSL_pending(c->ssl) == 0)
    return 0; /* nothing to decrypt: no buffer needed */
  if (in_take(c) < 0) {
    close_internal(c, CONN_END_IO, UV_ENOMEM);
    return -1;
  }
  while (c->in_len < CONN_IN_MAX) {
    ERR_clear_error();
    int r = SSL_read(c->ssl, c->in + c->in_len, (int)(CONN_IN_MAX - c->in_len));
    if (r > 0) {
      c->in_len += (size_t)r;
      added += r;
      continue;
    }
    int err = SSL_get_error(c->ssl, r);
    if (err == SSL_ERROR_WANT_READ)
      break;
    if (err == SSL_ERROR_ZERO_RETURN) {
      close_internal(c, CONN_END_EOF, 0);
      return -1;
    }
    char why[160];
    snprintf(c->tls_err, sizeof c->tls_err, "%s",
             tls_last_error(why, sizeof why));
    c->tls_failed = 1;
    flush_wbio(c); /* the alert, best effort */
    close_internal(c, CONN_END_TLS, 0);
    return -1;
  }
  /* SSL_read may have produced records (key update, tickets). */
  int fr = flush_wbio(c);
  if (fr < 0) {
    close_internal(c, CONN_END_IO, fr);
    return -1;
  }
  return added;
}

static int is_ip_literal(const char *s) {
  unsigned char tmp[sizeof(struct in6_addr)];
  return inet_pton(AF_INET, s, tmp) == 1 || inet_pton(AF_INET6, s, tmp) == 1;
}

int conn_start_tls(struct conn *c, SSL_CTX *ctx, int server, const char *name) {
  if (c->closing || c->flush_pending)
    return UV_EPIPE;
  if (c->ssl)
    return UV_EALREADY;
  SSL *ssl = SSL_new(ctx);
  BIO *rbio = BIO_new(BIO_s_mem());
  BIO *wbio = BIO_new(BIO_s_mem());
  if (!ssl || !rbio || !wbio) {
    SSL_free(ssl);
    BIO_free(rbio);
    BIO_free(wbio);
    ERR_clear_error();
    return UV_ENOMEM;
  }
  /* An empty read BIO means "wait for the socket", not end of stream. */
  BIO_set_mem_eof_return(rbio, -1);
  BIO_set_mem_eof_return(wbio, -1);
  SSL_set_bio(ssl, rbio, wbio);
  if (server) {
    SSL_set_accept_state(ssl);
  } else {
    SSL_set_connect_state(ssl);
    if (name && *name) {
      int ok;
      if (is_ip_literal(name)) {
        ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name);
      } else {
        SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        ok = SSL_set_tlsext_host_name(ssl, name) == 1 &&
             SSL_set1_host(ssl, name) == 1;
      }
      if (!ok) {
        SSL_free(ssl);
        ERR_clear_error();
        return UV_EPROTO;
      }
    }
  }
  c->ssl = ssl;
  c->rbio = rbio;
  c->wbio = wbio;
  c->tls_server = server != 0;
  c->tls_gen++;
  /* RFC 3207 §4.2 / §5: plaintext read before the handshake is not part
   * of the protected session; drop it. */
  c->in_len = 0;
  c->undelivered = 0;
  /* The handshake starts from the next loop turn (a client sends its
   * hello then), never from inside the caller. */
  kick(c);
  update_reading(c);
  return 0;
}

int conn_tls_active(const struct conn *c) {
  return c->ssl && c->hs_done && !c->tls_failed;
}

SSL *conn_ssl(const struct conn *c) {
  return c->ssl;
}

const struct conn_tls_info *conn_tls(const struct conn *c) {
  return c->ssl && (c->hs_done || c->tls_failed) ? &c->tls : NULL;
}

/* ---- delivery ----------------------------------------------------------- */

/*
 * Runs the TLS handshake, decrypts and offers input to the owner until
 * nothing moves.  Every owner callback may pause, close, start TLS or
 * discard; each is re-checked after the call.
 */
static void process_input(struct conn *c) {
  if (c->delivering)
    return;
  c->delivering = 1;
  for (;;) {
    if (c->closing || c->flush_pending || !c->cbs)
      break;
    if (c->ssl && !c->hs_done) {
      if (tls_handshake(c) <= 0)
        break;
      continue;
    }
    if (c->paused || !c->cbs->on_read)
      break;
    if (c->ssl) {
      int added = tls_fill(c);
      if (added < 0)
        break;
      if (added > 0)
        c->undelivered = 1;
    }
    if (!c->undelivered || c->in_len == 0) {
      c->undelivered = 0;
      break;
    }
    c->undelivered = 0;
    c->discard = 0;
    unsigned gen = c->tls_gen;
    size_t n = c->cbs->on_read(c, c->in, c->in_len);
    if (c->closing)
      break;
    if (c->discard || gen != c->tls_gen) {
      c->in_len = 0;
      c->discard = 0;
      continue;
    }
    assert(n <= c->in_len);
    if (n > c->in_len)
      n = c->in_len;
    if (n > 0) {
      memmove(c->in, c->in + n, c->in_len - n);
      c->in_len -= n;
    } else if (!c->paused && c->in_len == CONN_IN_MAX) {
      close_internal(c, CONN_END_OVERFLOW, 0);
      break;
    }
  }
  c->delivering = 0;
  if (!c->closing) {
    in_release(c);
    update_reading(c);
  }
}

/* ---- timer -------------------------------------------------------------- */

static void on_timer(uv_timer_t *t) {
  struct conn *c = t->data;
  if (c->closing)
    return;
  if (c->connecting)
    close_internal(c, CONN_END_CONNECT, UV_ETIMEDOUT);
  else if (c->flush_pending)
    close_internal(c, CONN_END_TIMEOUT, UV_ETIMEDOUT);
  else if (c->ssl && !c->hs_done && !c->tls_failed)
    tls_fail(c, "TLS handshake timed out", UV_ETIMEDOUT);
  else if (c->cbs && c->cbs->on_timeout)
    c->cbs->on_timeout(c);
  else
    close_internal(c, CONN_END_TIMEOUT, 0);
}

void conn_set_timeout(struct conn *c, unsigned ms) {
  if (c->closing || c->flush_pending)
    return;
  if (ms == 0)
    uv_timer_stop(&c->timer);
  else
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

/* ---- the one end -------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h) {
  struct conn *c = h->data;
  if (--c->pending_closes > 0)
    return;
  /* All write requests have completed (libuv cancels them before the
   * stream's close callback), so nothing refers to c any more. */
  if (!c->silent && c->cbs && c->cbs->on_close)
    c->cbs->on_close(c, c->end, c->end_status);
  SSL_free(c->ssl); /* frees both BIOs */
  free(c->in);
  free(c);
}

static void close_internal(struct conn *c, enum conn_end end, int status) {
  if (c->closing)
    return;
  c->closing = 1;
  c->flush_pending = 0;
  c->end = end;
  c->end_status = status;
  uv_timer_stop(&c->timer);
  uv_idle_stop(&c->kick);
  if (c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  }
  /* Best-effort close_notify: only if it can go out now, behind nothing. */
  if (c->ssl && c->hs_done && !c->tls_failed && end != CONN_END_IO &&
      c->wq_bytes == 0) {
    ERR_clear_error();
    SSL_shutdown(c->ssl);
    ERR_clear_error();
    char buf[256];
    int n = BIO_read(c->wbio, buf, sizeof buf);
    if (n > 0) {
      uv_buf_t b = uv_buf_init(buf, (unsigned)n);
      uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    }
  }
  c->pending_closes = 3;
  uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
  uv_close((uv_handle_t *)&c->timer, on_handle_closed);
  uv_close((uv_handle_t *)&c->kick, on_handle_closed);
}

void conn_close(struct conn *c, enum conn_end end) {
  close_internal(c, end, 0);
}

void conn_close_flush(struct conn *c, enum conn_end end, unsigned linger_ms) {
  if (c->closing || c->flush_pending)
    return;
  if (c->wq_bytes == 0) {
    close_internal(c, end, 0);
    return;
  }
  c->flush_pending = 1;
  c->flush_end = end;
  update_reading(c);
  uv_idle_stop(&c->kick);
  uv_timer_start(&c->timer, on_timer, linger_ms ? linger_ms : 1, 0);
}

int conn_closing(const struct conn *c) {
  return c->closing || c->flush_pending;
}
