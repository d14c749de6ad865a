/*
 * inbound_harness: see inbound_harness.h.  Everything is real but the
 * timing: the read sizes and the moment each async completion takes
 * effect are the plan's.
 */
#include "inbound_harness.h"

#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sqlite3.h>
#include <uv.h>

#include "config.h"
#include "log.h"
#include "loop/conn.h"
#include "queue/store.h"
#include "relay/inbound.h"
#include "relay/stats.h"

#define MAX_CLIENTS 8
#define MAX_HELD 64
#define MAX_SESSIONS 16
/* A run that has not finished after this long hangs (a session waiting
 * for something that never comes): a failure, not a timing assertion. */
#define HANG_MS (300 * 1000)

struct buf {
  char *p;
  size_t len, cap;
};

static void buf_add(struct buf *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (b->len + n + 1 > cap)
      cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
      abort();
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void buf_printf(struct buf *b, const char *fmt, ...) {
  char tmp[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n > 0)
    buf_add(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

struct client {
  struct run *run;
  int fd;
  uv_poll_t poll;
  size_t off; /* conversation bytes written */
  struct buf in;
  int eof;
  /* plan->starttls: 0 plaintext EHLO + STARTTLS, 1 handshake, 2 TLS */
  int phase;
  size_t pre_off;
  SSL *ssl;
  int hs_want_write;
};

static const char tls_pre[] = "EHLO client.example\r\nSTARTTLS\r\n";

struct held {
  void *step;
  int delay;
};

struct run {
  uv_loop_t loop;
  const struct harness_plan *plan;
  const char *conv;
  size_t len;
  struct config cfg;
  struct stats stats;
  struct store *st;
  struct inbound *in;
  struct client cl[MAX_CLIENTS];
  int n_cl, open_cl;
  struct held held[MAX_HELD];
  int n_held, total_held;
  uv_idle_t idle;
  uv_timer_t slow; /* plan->delay_ms: releases held steps */
  uv_timer_t hang;
  int hung, finished;
  int shutdown_now; /* plan->shutdown_at was held: free inbound */
  int shut_down;    /* ... and it has been */
  int closed;       /* the harness's handles are closing */
  SSL_CTX *cctx;    /* the clients' TLS context (no verification) */
  uint64_t rng;
  size_t read_i;
  int reads;
  struct buf trace[MAX_SESSIONS];
};

static uint64_t next_rand(struct run *r) {
  /* xorshift64*: a fixed sequence per seed. */
  r->rng ^= r->rng >> 12;
  r->rng ^= r->rng << 25;
  r->rng ^= r->rng >> 27;
  return r->rng * 2685821657736338717ULL;
}

/* ---- hooks -------------------------------------------------------------- */

static size_t next_read(void *data) {
  struct run *r = data;
  r->reads++;
  if (r->plan->n_reads == 0)
    return 0;
  return r->plan->reads[r->read_i++ % r->plan->n_reads];
}

static int session_index(const char *id) {
  unsigned long n = strtoul(id + 1, NULL, 16);
  return n >= 1 && n <= MAX_SESSIONS ? (int)n - 1 : 0;
}

static void on_idle(uv_idle_t *h);

static void on_trace(const char *session, const char *what, void *data) {
  struct run *r = data;
  struct buf *b = &r->trace[session_index(session)];
  buf_printf(b, "%s %s\n", session, what);
  /* plan->shutdown_at: a step of that kind has just started; the relay
   * shuts down on the next loop turn, before the step's own completion
   * can arrive (idle callbacks run before libuv polls for it). */
  if (r->plan->shutdown_at && !r->shut_down && !r->shutdown_now &&
      strncmp(what, "wait none -> ", 13) == 0 &&
      strcmp(what + 13, r->plan->shutdown_at) == 0) {
    r->shutdown_now = 1;
    uv_idle_start(&r->idle, on_idle);
  }
}

static void on_slow(uv_timer_t *t);

static void on_step(void *step, const char *session, const char *kind,
                    void *data) {
  struct run *r = data;
  (void)session;
  (void)kind;
  if (r->n_held == MAX_HELD)
    abort(); /* one step per session at a time: cannot happen */
  int max = r->plan->max_delay > 0 ? r->plan->max_delay : 0;
  r->held[r->n_held].step = step;
  r->held[r->n_held].delay = (int)(next_rand(r) % (uint64_t)(max + 1));
  r->n_held++;
  r->total_held++;
  if (r->plan->delay_ms) {
    if (!uv_is_active((uv_handle_t *)&r->slow))
      uv_timer_start(&r->slow, on_slow, r->plan->delay_ms, 0);
    return;
  }
  uv_idle_start(&r->idle, on_idle);
}

static void maybe_finish(struct run *r);

/* One loop turn: age the held completions and release one of those whose
 * delay is over, chosen by the seed (so completions of different
 * sessions take effect in the plan's order, not the pool's). */
static void shutdown_relay(struct run *r);

static void on_idle(uv_idle_t *h) {
  struct run *r = h->data;
  if (r->shutdown_now && !r->shut_down)
    shutdown_relay(r);
  int ready[MAX_HELD], n = 0;
  for (int i = 0; i < r->n_held; i++) {
    if (r->held[i].delay > 0)
      r->held[i].delay--;
    else
      ready[n++] = i;
  }
  if (n > 0) {
    int k = ready[next_rand(r) % (uint64_t)n];
    void *step = r->held[k].step;
    r->held[k] = r->held[--r->n_held];
    inbound_debug_release(step);
  }
  if (r->n_held == 0)
    uv_idle_stop(&r->idle);
  maybe_finish(r);
}

/* A slow step: one held completion (seeded choice) takes effect after
 * delay_ms, meanwhile the session must wait and its timers must not blame
 * the client. */
static void on_slow(uv_timer_t *t) {
  struct run *r = t->data;
  if (r->n_held > 0) {
    int k = (int)(next_rand(r) % (uint64_t)r->n_held);
    void *step = r->held[k].step;
    r->held[k] = r->held[--r->n_held];
    inbound_debug_release(step);
  }
  if (r->n_held > 0)
    uv_timer_start(&r->slow, on_slow, r->plan->delay_ms, 0);
  maybe_finish(r);
}

/* ---- clients ------------------------------------------------------------ */

static void client_eof(struct client *c) {
  struct run *r = c->run;
  c->eof = 1;
  uv_poll_stop(&c->poll);
  r->open_cl--;
  maybe_finish(r);
}

static void client_write(struct client *c) {
  struct run *r = c->run;
  while (c->off < r->len) {
    ssize_t n = send(c->fd, r->conv + c->off, r->len - c->off, MSG_NOSIGNAL);
    if (n > 0) {
      c->off += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    break; /* EAGAIN, or the server closed */
  }
}

/* Plaintext replies until EOF or EAGAIN.  Returns -1 at EOF. */
static int client_read_plain(struct client *c) {
  for (;;) {
    char tmp[16384];
    ssize_t n = recv(c->fd, tmp, sizeof tmp, 0);
    if (n > 0) {
      buf_add(&c->in, tmp, (size_t)n);
      /* Before TLS, stop at the 220 to STARTTLS: what follows is TLS. */
      if (c->phase == 0 && c->in.p && strstr(c->in.p, "220 2.0.0"))
        return 0;
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
      return -1;
    return 0;
  }
}

/* One step of a STARTTLS client.  Returns -1 when it is over. */
static int client_tls(struct client *c) {
  struct run *r = c->run;
  if (c->phase == 0) {
    while (c->pre_off < sizeof tls_pre - 1) {
      ssize_t n = send(c->fd, tls_pre + c->pre_off,
                       sizeof tls_pre - 1 - c->pre_off, MSG_NOSIGNAL);
      if (n <= 0)
        break;
      c->pre_off += (size_t)n;
    }
    if (client_read_plain(c) < 0)
      return -1;
    if (!c->in.p || !strstr(c->in.p, "220 2.0.0"))
      return 0;
    c->ssl = SSL_new(r->cctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1)
      return -1;
    SSL_set_connect_state(c->ssl);
    c->phase = 1;
  }
  if (c->phase == 1) {
    ERR_clear_error();
    int rc = SSL_do_handshake(c->ssl);
    if (rc != 1) {
      int e = SSL_get_error(c->ssl, rc);
      c->hs_want_write = e == SSL_ERROR_WANT_WRITE;
      return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
    }
    c->phase = 2;
  }
  while (c->off < r->len) {
    size_t want = r->len - c->off < 16384 ? r->len - c->off : 16384;
    ERR_clear_error();
    int n = SSL_write(c->ssl, r->conv + c->off, (int)want);
    if (n <= 0)
      break;
    c->off += (size_t)n;
  }
  for (;;) {
    char tmp[16384];
    ERR_clear_error();
    int n = SSL_read(c->ssl, tmp, sizeof tmp);
    if (n > 0) {
      buf_add(&c->in, tmp, (size_t)n);
      continue;
    }
    int e = SSL_get_error(c->ssl, n);
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
  }
}

static void on_client(uv_poll_t *p, int status, int events) {
  struct client *c = p->data;
  struct run *r = c->run;
  if (status < 0)
    events = UV_READABLE;
  if (r->plan->starttls) {
    if (client_tls(c) < 0) {
      client_eof(c);
      return;
    }
  } else {
    if (events & UV_WRITABLE)
      client_write(c);
    if ((events & UV_READABLE) && client_read_plain(c) < 0) {
      client_eof(c);
      return;
    }
  }
  int w = r->plan->starttls ? (c->phase == 0   ? c->pre_off < sizeof tls_pre - 1
                               : c->phase == 1 ? c->hs_want_write
                                               : c->off < r->len)
                            : c->off < r->len;
  uv_poll_start(&c->poll, UV_READABLE | (w ? UV_WRITABLE : 0), on_client);
}

static int client_open(struct run *r, struct client *c,
                       const struct sockaddr *addr) {
  c->run = r;
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  if (c->fd < 0)
    return -1;
  /* Room for the whole conversation in the kernel (as root), so reads
   * are cut by the plan rather than by the writer's pace. */
  int big = 8 * 1024 * 1024;
  (void)setsockopt(c->fd, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big);
  if (connect(c->fd, addr, sizeof(struct sockaddr_in)) < 0)
    return -1;
  fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
  if (!r->plan->starttls)
    client_write(c);
  if (uv_poll_init_socket(&r->loop, &c->poll, c->fd) < 0)
    return -1;
  c->poll.data = c;
  uv_poll_start(&c->poll,
                UV_READABLE |
                    (r->plan->starttls || c->off < r->len ? UV_WRITABLE : 0),
                on_client);
  r->open_cl++;
  return 0;
}

/* ---- ending ------------------------------------------------------------- */

static void on_store_closed(void *data) {
  struct run *r = data;
  r->finished = 1;
}

static void on_inbound_freed(void *data) {
  struct run *r = data;
  store_close(r->st, on_store_closed, r);
}

static void close_handles(struct run *r) {
  for (int i = 0; i < r->n_cl; i++)
    if (!uv_is_closing((uv_handle_t *)&r->cl[i].poll))
      uv_close((uv_handle_t *)&r->cl[i].poll, NULL);
  uv_close((uv_handle_t *)&r->idle, NULL);
  uv_close((uv_handle_t *)&r->slow, NULL);
  uv_close((uv_handle_t *)&r->hang, NULL);
}

static void maybe_finish(struct run *r) {
  if (r->open_cl > 0 || r->n_held > 0 || r->closed)
    return;
  r->closed = 1;
  uv_timer_stop(&r->hang);
  close_handles(r);
  if (r->in) {
    struct inbound *in = r->in;
    r->in = NULL;
    inbound_free(in, on_inbound_freed, r);
  }
}

/* plan->shutdown_at: the relay stops while a step is held.  Its sessions
 * end (closing the clients' connections) with the step in flight; the
 * held steps are released afterwards as usual. */
static void shutdown_relay(struct run *r) {
  r->shut_down = 1;
  if (!r->in)
    return;
  struct inbound *in = r->in;
  r->in = NULL;
  inbound_free(in, on_inbound_freed, r);
}

static void on_hang(uv_timer_t *t) {
  struct run *r = t->data;
  fprintf(stderr, "harness: the run hangs (%d clients open, %d held)\n",
          r->open_cl, r->n_held);
  r->hung = 1;
  /* Release what is held and drop the clients so the run can end. */
  while (r->n_held > 0) {
    void *step = r->held[--r->n_held].step;
    inbound_debug_release(step);
  }
  for (int i = 0; i < r->n_cl; i++)
    if (!r->cl[i].eof) {
      r->cl[i].eof = 1;
      uv_poll_stop(&r->cl[i].poll);
      shutdown(r->cl[i].fd, SHUT_RDWR);
      r->open_cl--;
    }
  maybe_finish(r);
}

/* ---- results ------------------------------------------------------------ */

/* "queued as <14 id characters>" -> "queued as ID". */
static char *mask_ids(const char *s, size_t n) {
  struct buf b = {0};
  static const char key[] = "queued as ";
  size_t i = 0;
  while (i < n) {
    if (n - i >= sizeof key - 1 + STORE_ID_LEN &&
        memcmp(s + i, key, sizeof key - 1) == 0) {
      buf_add(&b, "queued as ID", 12);
      i += sizeof key - 1 + STORE_ID_LEN;
      continue;
    }
    buf_add(&b, s + i, 1);
    i++;
  }
  if (!b.p)
    buf_add(&b, "", 0);
  return b.p;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The stored messages as sorted text: envelope, then the body after the
 * Received header (which holds a date and the queue id). */
static char *read_store(const char *db) {
  sqlite3 *h = NULL;
  if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
    sqlite3_close(h);
    return NULL;
  }
  sqlite3_stmt *q = NULL;
  const char *sql =
      "SELECT m.sender, m.size, m.flags, m.ret, m.body, (SELECT "
      "group_concat(address || '/' || ifnull(orcpt, '') || '/' || notify, "
      "',') FROM (SELECT * FROM recipients r WHERE r.message_id = m.id "
      "ORDER BY idx)) FROM messages m";
  if (sqlite3_prepare_v2(h, sql, -1, &q, NULL) != SQLITE_OK) {
    fprintf(stderr, "harness: %s\n", sqlite3_errmsg(h));
    sqlite3_close(h);
    return NULL;
  }
  char **rows = NULL;
  size_t n = 0;
  while (sqlite3_step(q) == SQLITE_ROW) {
    const char *body = sqlite3_column_blob(q, 4);
    size_t blen = (size_t)sqlite3_column_bytes(q, 4);
    /* Skip the fields that hold a date, the queue id or a signature over
     * them: DKIM-Signature (counted) and Received, each up to the first
     * CRLF not followed by folding white space. */
    size_t skip = 0;
    int sigs = 0;
    for (;;) {
      int is_sig =
          blen - skip > 15 && memcmp(body + skip, "DKIM-Signature:", 15) == 0;
      int is_rcvd = blen - skip > 9 && memcmp(body + skip, "Received:", 9) == 0;
      if (!is_sig && !is_rcvd)
        break;
      sigs += is_sig;
      size_t end = skip;
      for (size_t i = skip; i + 2 < blen; i++)
        if (body[i] == '\r' && body[i + 1] == '\n' && body[i + 2] != ' ' &&
            body[i + 2] != '\t') {
          end = i + 2;
          break;
        }
      if (end == skip)
        break;
      skip = end;
    }
    struct buf b = {0};
    const char *rc = (const char *)sqlite3_column_text(q, 5);
    buf_printf(&b,
               "from=<%s> rcpts=%s dkim=%d flags=%d ret=%d size-body=%lld\n",
               sqlite3_column_text(q, 0), rc ? rc : "", sigs,
               sqlite3_column_int(q, 2), sqlite3_column_int(q, 3),
               (long long)(sqlite3_column_int64(q, 1) - (sqlite3_int64)skip));
    buf_add(&b, body + skip, blen - skip);
    buf_add(&b, "\n----\n", 6);
    char **nr = realloc(rows, (n + 1) * sizeof *nr);
    if (!nr)
      abort();
    rows = nr;
    rows[n++] = b.p;
  }
  sqlite3_finalize(q);
  sqlite3_close(h);
  if (n > 0)
    qsort(rows, n, sizeof *rows, cmp_str);
  struct buf out = {0};
  buf_printf(&out, "%zu messages\n", n);
  for (size_t i = 0; i < n; i++) {
    buf_add(&out, rows[i], strlen(rows[i]));
    free(rows[i]);
  }
  free(rows);
  return out.p;
}

/* A self-signed P-256 certificate and its key, as PEM files in dir. */
static int make_cert(const char *dir) {
  EVP_PKEY *key = EVP_EC_gen("P-256");
  X509 *x = X509_new();
  int ok = key && x;
  if (ok) {
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
                               (const unsigned char *)"mailhop.test", -1, -1,
                               0);
    X509_set_issuer_name(x, n);
    ok = X509_set_pubkey(x, key) == 1 && X509_sign(x, key, EVP_sha256()) > 0;
  }
  char path[512];
  FILE *f;
  snprintf(path, sizeof path, "%s/key.pem", dir);
  if (ok && (f = fopen(path, "w"))) {
    ok = PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1;
    fclose(f);
  } else {
    ok = 0;
  }
  snprintf(path, sizeof path, "%s/cert.pem", dir);
  if (ok && (f = fopen(path, "w"))) {
    ok = PEM_write_X509(f, x) == 1;
    fclose(f);
  } else {
    ok = 0;
  }
  X509_free(x);
  EVP_PKEY_free(key);
  return ok ? 0 : -1;
}

/* An Ed25519 DKIM key as a PKCS#8 PEM file in dir. */
static int make_dkim_key(const char *dir) {
  EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
  char path[512];
  snprintf(path, sizeof path, "%s/dkim.pem", dir);
  FILE *f = key ? fopen(path, "w") : NULL;
  int ok = f && PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1;
  if (f)
    fclose(f);
  EVP_PKEY_free(key);
  return ok ? 0 : -1;
}

static void rm_rf(const char *dir) {
  static const char *const files[] = {"q.db",      "q.db-wal", "q.db-shm",
                                      "q.db.lock", "users",    "cert.pem",
                                      "key.pem",   "dkim.pem"};
  char p[512];
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    snprintf(p, sizeof p, "%s/%s", dir, files[i]);
    unlink(p);
  }
  rmdir(dir);
}

/* ---- the run ------------------------------------------------------------ */

int harness_run(const char *conv, size_t len, const struct harness_plan *plan,
                struct harness_result *out) {
  memset(out, 0, sizeof *out);
  if (plan->sessions < 1 || plan->sessions > MAX_CLIENTS)
    return -1;
  log_setup(LOG_FMT_LOGFMT, LOG_ERROR);
  /* TLS clients write with SSL_write (no MSG_NOSIGNAL): a relay that
   * closes first must not kill the run. */
  signal(SIGPIPE, SIG_IGN);
  struct run *r = calloc(1, sizeof *r);
  if (!r)
    return -1;
  r->plan = plan;
  r->conv = conv;
  r->len = len;
  r->rng = plan->seed * 0x9E3779B97F4A7C15ULL + 1;
  char dir[] = "/tmp/mailhop-harness-XXXXXX";
  if (!mkdtemp(dir)) {
    free(r);
    return -1;
  }
  int rc = -1;
  char path[512], text[2048], err[CONFIG_ERR_MAX];
  snprintf(path, sizeof path, "%s/users", dir);
  FILE *f = fopen(path, "w");
  const char *hash = crypt("pw", "$6$rounds=1000$harnesssalt$");
  if (!f || !hash) {
    if (f)
      fclose(f);
    goto out_dir;
  }
  fprintf(f, "alice:%s\n", hash);
  fclose(f);
  config_defaults(&r->cfg);
  int tl = snprintf(text, sizeof text,
                    "listen = 127.0.0.1:2525\n"
                    "hostname = mailhop.test\n"
                    "queue_path = %s/q.db\n"
                    "auth_users_file = %s/users\n"
                    "auth_require_tls = no\n"
                    "max_message_size = 4m\n"
                    "smtp_timeout = 5m\n",
                    dir, dir);
  if (plan->starttls) {
    if (make_cert(dir) < 0)
      goto out_dir;
    tl += snprintf(text + tl, sizeof text - (size_t)tl,
                   "tls_cert_file = %s/cert.pem\n"
                   "tls_key_file = %s/key.pem\n",
                   dir, dir);
    r->cctx = SSL_CTX_new(TLS_client_method());
    if (!r->cctx)
      goto out_dir;
    SSL_CTX_set_verify(r->cctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_mode(r->cctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                  SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  }
  if (plan->dkim) {
    if (make_dkim_key(dir) < 0)
      goto out_dir;
    tl += snprintf(text + tl, sizeof text - (size_t)tl,
                   "dkim_sign = a.example:s1:%s/dkim.pem\n", dir);
  }
  if (config_parse_text(&r->cfg, "harness", text, (size_t)tl, err) < 0) {
    fprintf(stderr, "harness: %s\n", err);
    goto out_dir;
  }
  /* Port 0 (the configuration wants a real one): the kernel picks. */
  ((struct sockaddr_in *)&r->cfg.listen[0].sa)->sin_port = 0;
  if (uv_loop_init(&r->loop) < 0)
    goto out_dir;
  snprintf(path, sizeof path, "%s/q.db", dir);
  if (store_open(&r->loop, path, &r->st, err, sizeof err) < 0) {
    fprintf(stderr, "harness: %s\n", err);
    goto out_loop;
  }
  store_debug_spool_budget(r->st, plan->spool_budget);
  int bad = 0;
  r->in = inbound_start(&r->loop, &r->cfg, r->st, &r->stats, NULL, NULL, &bad,
                        err, sizeof err);
  if (!r->in) {
    fprintf(stderr, "harness: %s\n", err);
    store_close(r->st, NULL, NULL);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    goto out_loop;
  }
  struct inbound_debug dbg = {
      .on_step = plan->hold ? on_step : NULL,
      .on_trace = on_trace,
      .data = r,
  };
  inbound_debug_set(r->in, &dbg);
  conn_debug_read_size(next_read, r);
  uv_idle_init(&r->loop, &r->idle);
  r->idle.data = r;
  uv_timer_init(&r->loop, &r->slow);
  r->slow.data = r;
  uv_timer_init(&r->loop, &r->hang);
  r->hang.data = r;
  uv_timer_start(&r->hang, on_hang, HANG_MS, 0);
  const struct sockaddr *la = inbound_listener_addr(r->in, 0);
  for (int i = 0; i < plan->sessions; i++) {
    if (client_open(r, &r->cl[i], la) < 0) {
      fprintf(stderr, "harness: cannot connect: %s\n", strerror(errno));
      r->hung = 1;
      break;
    }
    r->n_cl++;
  }
  if (r->hung)
    on_hang(&r->hang);
  uv_run(&r->loop, UV_RUN_DEFAULT);
  conn_debug_read_size(NULL, NULL);
  for (int i = 0; i < r->n_cl; i++) {
    SSL_free(r->cl[i].ssl);
    close(r->cl[i].fd);
  }

  struct buf rep = {0}, tr = {0};
  out->shut_down = r->shut_down;
  for (int i = 0; i < r->n_cl; i++) {
    buf_printf(&rep, "C%d:\n", i);
    char *m = mask_ids(r->cl[i].in.p ? r->cl[i].in.p : "", r->cl[i].in.len);
    buf_add(&rep, m, strlen(m));
    free(m);
    free(r->cl[i].in.p);
  }
  for (int i = 0; i < MAX_SESSIONS; i++) {
    if (r->trace[i].p)
      buf_add(&tr, r->trace[i].p, r->trace[i].len);
    free(r->trace[i].p);
  }
  out->replies = rep.p ? rep.p : strdup("");
  out->trace = tr.p ? tr.p : strdup("");
  out->stored = read_store(path);
  out->held = r->total_held;
  out->reads = r->reads;
  rc = r->finished && !r->hung && out->stored ? 0 : -1;
out_loop:
  if (uv_loop_close(&r->loop) != 0) {
    fprintf(stderr, "harness: handles left open on the loop\n");
    rc = -1;
  }
out_dir:
  rm_rf(dir);
  SSL_CTX_free(r->cctx);
  free(r);
  return rc;
}

void harness_result_free(struct harness_result *r) {
  free(r->replies);
  free(r->trace);
  free(r->stored);
  memset(r, 0, sizeof *r);
}

/* ---- the conversation --------------------------------------------------- */

/* A message whose unstuffed body is exactly size bytes: headers (Date and
 * Message-ID included, so nothing is added), then lines of 78 octets, some
 * starting with a dot (stuffed on the wire), ending with CRLF. */
static void add_message(struct buf *w, size_t size, int k) {
  struct buf m = {0};
  buf_printf(&m,
             "From: a@a.example\r\nTo: b@b.example\r\nSubject: harness %d\r\n"
             "Date: Sun, 29 Nov 2026 12:00:00 +0000\r\n"
             "Message-ID: <harness.%d@a.example>\r\n\r\n",
             k, k);
  for (int i = 0; m.len < size; i++) {
    char line[96];
    int n = snprintf(line, sizeof line, "%c%05d-%d %s\r\n",
                     i % 41 == 3 ? '.' : 'L', i, k,
                     "0123456789abcdefghijklmnopqrstuvwxyz"
                     "ABCDEFGHIJKLMNOPQRSTUVWXYZ-_.=+");
    buf_add(&m, line, (size_t)n);
  }
  /* Cut to size, still ending with CRLF. */
  m.len = size;
  m.p[size - 2] = '\r';
  m.p[size - 1] = '\n';
  if (m.p[size - 3] == '\r')
    m.p[size - 3] = 'x';
  /* Dot-stuff for the wire. */
  int bol = 1;
  for (size_t i = 0; i < m.len; i++) {
    if (bol && m.p[i] == '.')
      buf_add(w, ".", 1);
    buf_add(w, m.p + i, 1);
    bol = m.p[i] == '\n';
  }
  buf_add(w, ".\r\n", 3);
  free(m.p);
}

char *harness_conversation(const size_t *sizes, size_t n, size_t *len) {
  struct buf w = {0};
  /* "\0alice\0pw" */
  buf_printf(&w, "EHLO client.example\r\nAUTH PLAIN AGFsaWNlAHB3\r\n");
  for (size_t i = 0; i < n; i++) {
    if (i % 2 == 0) {
      buf_printf(&w,
                 "MAIL FROM:<s%zu@a.example> SIZE=%zu RET=HDRS ENVID=e%zu\r\n"
                 "RCPT TO:<b%zu@b.example>\r\n"
                 "RCPT TO:<c%zu@c.example> NOTIFY=SUCCESS,FAILURE "
                 "ORCPT=rfc822;c%zu@c.example\r\n"
                 "DATA\r\n",
                 i, sizes[i], i, i, i, i);
    } else {
      buf_printf(&w,
                 "MAIL FROM:<>\r\nRCPT TO:<d%zu@d.example>\r\n"
                 "RCPT TO:<bad address>\r\nDATA\r\n",
                 i);
    }
    add_message(&w, sizes[i], (int)i);
    if (i % 3 == 1)
      buf_printf(&w, "RSET\r\nNOOP\r\n");
  }
  buf_printf(&w, "QUIT\r\n");
  *len = w.len;
  return w.p;
}
