/*
 * Loop-level tests of conn and tls over real loopback TCP and real TLS
 * (certificates made at test time with the openssl command).  Each case
 * counts callbacks, lets every handle close and requires uv_loop_close()
 * to succeed, so a leaked handle fails the test.
 */
#include "loop/conn.h"
#include "loop/listener.h"
#include "loop/tls.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

static char dir[64];
static char cert[128], key[128], other_cert[128], other_key[128];

static int make_certs(void) {
  if (!check_tmpdir(dir, sizeof dir, "mh-conn"))
    return -1;
  snprintf(cert, sizeof cert, "%s/cert.pem", dir);
  snprintf(key, sizeof key, "%s/key.pem", dir);
  snprintf(other_cert, sizeof other_cert, "%s/other.pem", dir);
  snprintf(other_key, sizeof other_key, "%s/otherkey.pem", dir);
  char cmd[1024];
  const char *fmt =
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
      "-nodes -days 2 -subj /CN=%s -addext subjectAltName=DNS:%s "
      "-keyout %s -out %s >/dev/null 2>&1";
  snprintf(cmd, sizeof cmd, fmt, "localhost", "localhost", key, cert);
  if (system(cmd) != 0)
    return -1;
  snprintf(cmd, sizeof cmd, fmt, "other", "other", other_key, other_cert);
  if (system(cmd) != 0)
    return -1;
  return 0;
}

static void remove_certs(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "cannot remove %s\n", dir);
}

/* ---- a scriptable peer -------------------------------------------------- */

enum role {
  R_ECHO,      /* server: echo everything */
  R_COLLECT,   /* client: collect until `expect` bytes, then close */
  R_STARTTLS,  /* server: STARTTLS line -> 220, discard, TLS */
  R_HOLD,      /* consume nothing */
  R_SINK_SLOW, /* collect, pausing every 1 MiB */
  R_SOURCE,    /* write `expect` pattern bytes with backpressure */
  R_CLOSE_IN_READ,
};

struct peer {
  enum role role;
  struct conn *c;
  SSL_CTX *tls_ctx; /* start TLS at once (implicit) */
  const char *tls_name;
  int tls_server;
  const char *hello; /* written on connect / after TLS */
  size_t expect;
  char got[64 * 1024];
  size_t got_len, got_total;
  int pattern_bad;
  size_t sent;
  size_t max_wq;
  int full_seen;
  int connected, tls_done, tls_ok, verified, closed, timeouts, drains;
  char tls_err[200], version[32];
  enum conn_end end;
  int status;
  uv_timer_t *resume_timer;
  size_t next_pause;
};

static uv_loop_t *loop;
static SSL_CTX *srv_ctx, *cli_verify_ctx, *cli_other_ctx, *cli_opp_ctx;

static void peer_write(struct peer *p, const char *s) {
  int r = conn_write(p->c, s, strlen(s));
  if (r < 0)
    fprintf(stderr, "  write \"%.20s\": %s\n", s, uv_strerror(r));
  CHECK(r >= 0);
}

static void source_pump(struct peer *p) {
  static char chunk[64 * 1024];
  while (p->sent < p->expect) {
    size_t n = p->expect - p->sent;
    if (n > sizeof chunk)
      n = sizeof chunk;
    for (size_t i = 0; i < n; i++)
      chunk[i] = (char)((p->sent + i) % 251);
    int r = conn_write(p->c, chunk, n);
    if (r < 0)
      fprintf(stderr, "  source write at %zu: %s\n", p->sent, uv_strerror(r));
    CHECK(r >= 0);
    if (r < 0)
      return;
    p->sent += n;
    if (conn_write_queued(p->c) > p->max_wq)
      p->max_wq = conn_write_queued(p->c);
    if (r == CONN_WRITE_FULL) {
      p->full_seen++;
      return; /* wait for on_drain */
    }
  }
  conn_close_flush(p->c, CONN_END_LOCAL, 5000);
}

static void on_resume_timer(uv_timer_t *t) {
  struct peer *p = t->data;
  if (p->c && !p->closed)
    conn_read_resume(p->c);
}

static size_t p_read(struct conn *c, const char *data, size_t len) {
  struct peer *p = conn_data(c);
  switch (p->role) {
  case R_ECHO: {
    int r = conn_write(c, data, len);
    CHECK(r >= 0);
    return len;
  }
  case R_HOLD:
    return 0;
  case R_CLOSE_IN_READ:
    conn_close(c, CONN_END_LOCAL);
    CHECK_INT(conn_write(c, "x", 1), UV_EPIPE);
    conn_close(c, CONN_END_EOF); /* idempotent: the first end wins */
    return 0;
  case R_STARTTLS: {
    const char *eol = memchr(data, '\n', len);
    if (!eol)
      return 0;
    size_t n = (size_t)(eol - data) + 1;
    if (!p->tls_done && n == 10 && memcmp(data, "STARTTLS\r\n", 10) == 0) {
      peer_write(p, "220 go ahead\r\n");
      conn_discard_input(c);
      CHECK_INT(conn_start_tls(c, srv_ctx, 1, NULL), 0);
      return n;
    }
    break; /* collect the rest */
  }
  case R_SINK_SLOW:
    for (size_t i = 0; i < len; i++)
      if ((unsigned char)data[i] != (p->got_total + i) % 251)
        p->pattern_bad++;
    p->got_total += len;
    if (p->got_total >= p->next_pause) {
      p->next_pause += 1024 * 1024;
      conn_read_pause(c);
      uv_timer_start(p->resume_timer, on_resume_timer, 20, 0);
    }
    if (p->got_total >= p->expect)
      conn_close(c, CONN_END_LOCAL);
    return len;
  default:
    break;
  }
  size_t room = sizeof p->got - 1 - p->got_len;
  size_t n = len < room ? len : room;
  memcpy(p->got + p->got_len, data, n);
  p->got_len += n;
  p->got[p->got_len] = 0;
  p->got_total += len;
  if (p->role == R_COLLECT && p->expect && p->got_total >= p->expect)
    conn_close(c, CONN_END_LOCAL);
  return len;
}

static void p_send_hello(struct peer *p) {
  if (p->role == R_SOURCE)
    source_pump(p);
  else if (p->hello)
    peer_write(p, p->hello);
}

static void p_connected(struct conn *c) {
  struct peer *p = conn_data(c);
  p->connected++;
  if (p->tls_ctx) {
    CHECK_INT(conn_start_tls(c, p->tls_ctx, p->tls_server, p->tls_name), 0);
    /* Writing before the handshake is refused, not queued in clear. */
    CHECK_INT(conn_write(c, "x", 1), UV_EBUSY);
    return;
  }
  p_send_hello(p);
}

static void p_tls_done(struct conn *c, const struct conn_tls_info *info) {
  struct peer *p = conn_data(c);
  p->tls_done++;
  p->tls_ok = info->ok;
  p->verified = info->verified;
  snprintf(p->tls_err, sizeof p->tls_err, "%s", info->error ? info->error : "");
  snprintf(p->version, sizeof p->version, "%s",
           info->version ? info->version : "");
  if (info->ok)
    p_send_hello(p);
}

static void p_drain(struct conn *c) {
  struct peer *p = conn_data(c);
  p->drains++;
  if (p->role == R_SOURCE)
    source_pump(p);
}

static void p_timeout(struct conn *c) {
  struct peer *p = conn_data(c);
  p->timeouts++;
  conn_close(c, CONN_END_TIMEOUT);
}

static void p_close(struct conn *c, enum conn_end end, int status) {
  struct peer *p = conn_data(c);
  p->closed++;
  p->end = end;
  p->status = status;
  p->c = NULL;
  if (p->resume_timer)
    uv_close((uv_handle_t *)p->resume_timer, NULL);
}

static const struct conn_cbs peer_cbs = {
    .on_connected = p_connected,
    .on_read = p_read,
    .on_tls_done = p_tls_done,
    .on_drain = p_drain,
    .on_close = p_close,
};
/* Same, but a deadline ends the conn through on_timeout. */
static const struct conn_cbs peer_cbs_timeout = {
    .on_connected = p_connected,
    .on_read = p_read,
    .on_tls_done = p_tls_done,
    .on_drain = p_drain,
    .on_timeout = p_timeout,
    .on_close = p_close,
};

/* ---- server side -------------------------------------------------------- */

struct server {
  struct listener *l;
  struct peer *peer; /* the one accepted connection */
  const struct conn_cbs *cbs;
  unsigned timeout_ms;
  int accepted;
};

static void on_accept(struct listener *l, struct conn *c, void *data) {
  struct server *s = data;
  s->accepted++;
  struct peer *p = s->peer;
  p->c = c;
  conn_set_owner(c, s->cbs ? s->cbs : &peer_cbs, p);
  if (s->timeout_ms)
    conn_set_timeout(c, s->timeout_ms);
  if (p->tls_ctx)
    CHECK_INT(conn_start_tls(c, p->tls_ctx, 1, NULL), 0);
  else
    p_send_hello(p);
  /* One connection per test. */
  listener_close(l);
  s->l = NULL;
}

static void server_open(struct server *s, struct peer *p) {
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", 0, &a);
  char err[256];
  s->peer = p;
  int r = listener_open(loop, (struct sockaddr *)&a, 0, on_accept, s, &s->l,
                        err, sizeof err);
  CHECK_INT(r, 0);
  if (r)
    fprintf(stderr, "%s\n", err);
}

static void client_connect(struct server *s, struct peer *p) {
  int r = conn_connect(loop, listener_addr(s->l), 2000, &peer_cbs, p, &p->c);
  CHECK_INT(r, 0);
}

static void run_and_close(void) {
  uv_run(loop, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(loop), 0);
}

static void loop_new(void) {
  static uv_loop_t l;
  loop = &l;
  CHECK_INT(uv_loop_init(loop), 0);
}

/* ---- cases --------------------------------------------------------------- */

static void test_unmap(void) {
  struct sockaddr_storage ss;
  struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
  memset(&ss, 0, sizeof ss);
  uv_ip6_addr("::ffff:192.0.2.7", 2525, s6);
  CHECK_INT(conn_addr_unmap(&ss), 1);
  CHECK_INT(ss.ss_family, AF_INET);
  char buf[64];
  CHECK_STR(conn_addr_format((struct sockaddr *)&ss, 1, buf, sizeof buf),
            "192.0.2.7:2525");
  CHECK_STR(conn_addr_format((struct sockaddr *)&ss, 0, buf, sizeof buf),
            "192.0.2.7");

  memset(&ss, 0, sizeof ss);
  uv_ip6_addr("2001:db8::1", 25, s6);
  CHECK_INT(conn_addr_unmap(&ss), 0);
  CHECK_INT(ss.ss_family, AF_INET6);
  CHECK_STR(conn_addr_format((struct sockaddr *)&ss, 1, buf, sizeof buf),
            "[2001:db8::1]:25");

  /* ::192.0.2.7 (v4-compatible, deprecated) is not v4-mapped. */
  memset(&ss, 0, sizeof ss);
  uv_ip6_addr("::c000:207", 25, s6);
  CHECK_INT(conn_addr_unmap(&ss), 0);

  memset(&ss, 0, sizeof ss);
  uv_ip4_addr("127.0.0.1", 25, (struct sockaddr_in *)&ss);
  CHECK_INT(conn_addr_unmap(&ss), 0);
  CHECK_STR(conn_end_name(CONN_END_OVERFLOW), "overflow");
}

static void test_echo(int tls) {
  loop_new();
  struct server s = {0};
  struct peer sp = {.role = R_ECHO}, cp = {.role = R_COLLECT};
  const char *msg = "EHLO client.example\r\nNOOP\r\n";
  cp.hello = msg;
  cp.expect = strlen(msg);
  if (tls) {
    sp.tls_ctx = srv_ctx;
    cp.tls_ctx = cli_verify_ctx;
    cp.tls_name = "localhost";
  }
  server_open(&s, &sp);
  client_connect(&s, &cp);
  run_and_close();
  CHECK_INT(s.accepted, 1);
  CHECK_INT(cp.connected, 1);
  CHECK_STR(cp.got, msg);
  CHECK_INT(cp.closed, 1);
  CHECK_INT(cp.end, CONN_END_LOCAL);
  CHECK_INT(sp.closed, 1);
  CHECK_INT(sp.end, CONN_END_EOF);
  if (tls) {
    CHECK_INT(cp.tls_done, 1);
    CHECK_INT(cp.tls_ok, 1);
    CHECK_INT(cp.verified, 1);
    CHECK_STR(cp.version, "TLSv1.3");
    CHECK_INT(sp.tls_done, 1);
    CHECK_INT(sp.tls_ok, 1);
  }
}

/* STARTTLS: the plaintext pipelined after the command never reaches the
 * owner after the handshake (RFC 3207 §5). */
static void test_starttls_discard(void) {
  loop_new();
  struct server s = {0};
  struct peer sp = {.role = R_STARTTLS};
  struct peer cp = {.role = R_COLLECT};
  server_open(&s, &sp);
  cp.hello = "STARTTLS\r\nMAIL FROM:<injected@evil>\r\n";
  client_connect(&s, &cp);
  /* Plaintext until the 220 arrives; then the client starts TLS from
   * outside any callback (the server did it from inside on_read). */
  while (cp.closed == 0 && !strstr(cp.got, "220 go ahead\r\n"))
    uv_run(loop, UV_RUN_ONCE);
  CHECK_INT(conn_input_pending(cp.c), 0);
  cp.got_len = 0;
  cp.got[0] = 0;
  cp.hello = "EHLO again\r\n";
  CHECK_INT(conn_start_tls(cp.c, cli_verify_ctx, 0, "localhost"), 0);
  /* The server collects what follows the handshake: only the EHLO sent
   * over TLS, never the MAIL FROM pipelined in plaintext. */
  while (!sp.tls_done || strlen(sp.got) < strlen("EHLO again\r\n"))
    if (uv_run(loop, UV_RUN_ONCE) == 0)
      break;
  CHECK_STR(sp.got, "EHLO again\r\n");
  CHECK_INT(sp.tls_ok, 1);
  CHECK_INT(cp.tls_ok, 1);
  conn_close(cp.c, CONN_END_LOCAL);
  run_and_close();
  CHECK_INT(sp.closed, 1);
  CHECK_INT(cp.closed, 1);
}

/* Client side of STARTTLS: bytes after the 220 are visible as retained
 * input; pause/resume re-delivers retained bytes. */
static size_t inj_read(struct conn *c, const char *data, size_t len) {
  struct peer *p = conn_data(c);
  p->got_total++; /* deliveries */
  if (p->got_total == 1) {
    const char *eol = memchr(data, '\n', len);
    if (!eol)
      return 0;
    conn_read_pause(c);
    return (size_t)(eol - data) + 1;
  }
  memcpy(p->got, data, len);
  p->got_len = len;
  conn_close(c, CONN_END_LOCAL);
  return len;
}
static const struct conn_cbs inj_cbs = {.on_read = inj_read,
                                        .on_close = p_close};

static void test_retained_input(void) {
  loop_new();
  struct server s = {0};
  struct peer sp = {.role = R_HOLD, .hello = "220 go ahead\r\nEVIL\r\n"};
  struct peer cp = {.role = R_COLLECT};
  server_open(&s, &sp);
  CHECK_INT(conn_connect(loop, listener_addr(s.l), 2000, &inj_cbs, &cp, &cp.c),
            0);
  while (cp.got_total < 1 && uv_run(loop, UV_RUN_ONCE))
    ;
  /* Paused right after the 220: the injected bytes are detectable. */
  CHECK_INT(cp.got_total, 1);
  CHECK_INT(conn_input_pending(cp.c), 6);
  conn_read_resume(cp.c);
  CHECK_INT(cp.got_total, 1); /* never re-delivered from inside resume */
  run_and_close();
  CHECK_INT(cp.got_total, 2);
  CHECK_INT(cp.got_len, 6);
  CHECK(memcmp(cp.got, "EVIL\r\n", 6) == 0);
  CHECK_INT(sp.closed, 1);
}

/* A slow reader: the writer's queue never passes CONN_WQ_MAX and every
 * byte arrives in order. */
static void test_backpressure(int tls) {
  loop_new();
  struct server s = {0};
  uv_timer_t resume;
  uv_timer_init(loop, &resume);
  size_t total = 8 * 1024 * 1024;
  struct peer sp = {.role = R_SOURCE, .expect = total};
  struct peer cp = {.role = R_SINK_SLOW,
                    .expect = total,
                    .resume_timer = &resume,
                    .next_pause = 1024 * 1024};
  resume.data = &cp;
  if (tls) {
    sp.tls_ctx = srv_ctx;
    cp.tls_ctx = cli_verify_ctx;
    cp.tls_name = "localhost";
  }
  server_open(&s, &sp);
  client_connect(&s, &cp);
  run_and_close();
  CHECK_INT(cp.got_total, total);
  CHECK_INT(cp.pattern_bad, 0);
  CHECK_INT(sp.sent, total);
  CHECK(sp.full_seen > 0);
  CHECK(sp.max_wq <= CONN_WQ_MAX);
  CHECK(sp.drains > 0);
  CHECK_INT(sp.closed, 1);
  CHECK_INT(cp.closed, 1);
}

static void test_timeout(void) {
  loop_new();
  /* No on_timeout: the conn ends itself with CONN_END_TIMEOUT. */
  struct server s = {.timeout_ms = 50};
  struct peer sp = {.role = R_HOLD}, cp = {.role = R_COLLECT};
  server_open(&s, &sp);
  client_connect(&s, &cp);
  uint64_t t0 = uv_hrtime();
  run_and_close();
  CHECK_INT(sp.closed, 1);
  CHECK_INT(sp.end, CONN_END_TIMEOUT);
  CHECK_INT(cp.end, CONN_END_EOF);
  CHECK((uv_hrtime() - t0) / 1000000 >= 40);

  loop_new();
  struct server s2 = {.timeout_ms = 30, .cbs = &peer_cbs_timeout};
  struct peer sp2 = {.role = R_HOLD}, cp2 = {.role = R_COLLECT};
  server_open(&s2, &sp2);
  client_connect(&s2, &cp2);
  run_and_close();
  CHECK_INT(sp2.timeouts, 1);
  CHECK_INT(sp2.end, CONN_END_TIMEOUT);
}

static void test_close_in_callbacks(void) {
  loop_new();
  struct server s = {0};
  struct peer sp = {.role = R_CLOSE_IN_READ}, cp = {.role = R_COLLECT};
  cp.hello = "QUIT\r\n";
  server_open(&s, &sp);
  client_connect(&s, &cp);
  run_and_close();
  CHECK_INT(sp.closed, 1);
  CHECK_INT(sp.end, CONN_END_LOCAL);
  CHECK_INT(cp.closed, 1);
  CHECK_INT(cp.end, CONN_END_EOF);

  /* Close right after connect_start, before the connect completes: only
   * on_close runs. */
  loop_new();
  struct server s2 = {0};
  struct peer sp2 = {.role = R_HOLD}, cp2 = {.role = R_COLLECT};
  server_open(&s2, &sp2);
  client_connect(&s2, &cp2);
  conn_close(cp2.c, CONN_END_LOCAL);
  listener_close(s2.l);
  run_and_close();
  CHECK_INT(cp2.connected, 0);
  CHECK_INT(cp2.closed, 1);
  CHECK_INT(cp2.end, CONN_END_LOCAL);
}

/* "Write the 421, then close": the bytes arrive before the EOF. */
static void test_close_flush(void) {
  loop_new();
  struct server s = {0};
  struct peer sp = {.role = R_HOLD}, cp = {.role = R_COLLECT};
  server_open(&s, &sp);
  client_connect(&s, &cp);
  while (!sp.c && uv_run(loop, UV_RUN_ONCE))
    ;
  static char big[200 * 1024];
  memset(big, 'x', sizeof big);
  memcpy(big, "421 4.3.2 busy\r\n", 16);
  CHECK(conn_write(sp.c, big, sizeof big) >= 0);
  conn_close_flush(sp.c, CONN_END_LOCAL, 2000);
  CHECK_INT(conn_write(sp.c, "x", 1), UV_EPIPE);
  run_and_close();
  CHECK_INT(cp.got_total, sizeof big);
  CHECK(strncmp(cp.got, "421 4.3.2", 9) == 0);
  CHECK_INT(cp.end, CONN_END_EOF);
  CHECK_INT(sp.end, CONN_END_LOCAL);
}

static void test_overflow(void) {
  loop_new();
  struct server s = {0};
  struct peer sp = {.role = R_HOLD}, cp = {.role = R_COLLECT};
  static char line[CONN_IN_MAX + 100];
  memset(line, 'a', sizeof line - 1);
  cp.hello = line;
  server_open(&s, &sp);
  client_connect(&s, &cp);
  run_and_close();
  CHECK_INT(sp.end, CONN_END_OVERFLOW);
  CHECK_INT(cp.closed, 1);
}

static void test_tls_failures(void) {
  /* Client TLS against a plaintext server. */
  loop_new();
  struct server s = {0};
  struct peer sp = {.role = R_HOLD, .hello = "220 plain smtp here\r\n"};
  struct peer cp = {
      .role = R_COLLECT, .tls_ctx = cli_verify_ctx, .tls_name = "localhost"};
  server_open(&s, &sp);
  client_connect(&s, &cp);
  run_and_close();
  CHECK_INT(cp.tls_done, 1);
  CHECK_INT(cp.tls_ok, 0);
  CHECK(cp.tls_err[0] != 0);
  CHECK_INT(cp.end, CONN_END_TLS);
  CHECK_INT(sp.closed, 1);

  /* Plaintext client against an implicit-TLS server. */
  loop_new();
  struct server s2 = {0};
  struct peer sp2 = {.role = R_HOLD, .tls_ctx = srv_ctx};
  struct peer cp2 = {.role = R_COLLECT, .hello = "EHLO x\r\n"};
  server_open(&s2, &sp2);
  client_connect(&s2, &cp2);
  run_and_close();
  CHECK_INT(sp2.tls_done, 1);
  CHECK_INT(sp2.tls_ok, 0);
  CHECK_INT(sp2.end, CONN_END_TLS);
  fprintf(stderr, "  server handshake error: %s\n", sp2.tls_err);

  /* Handshake timeout: the client connects and says nothing. */
  loop_new();
  struct server s3 = {.timeout_ms = 50};
  struct peer sp3 = {.role = R_HOLD, .tls_ctx = srv_ctx};
  struct peer cp3 = {.role = R_COLLECT};
  server_open(&s3, &sp3);
  client_connect(&s3, &cp3);
  run_and_close();
  CHECK_INT(sp3.tls_ok, 0);
  CHECK_CONTAINS(sp3.tls_err, "timed out");
  CHECK_INT(sp3.status, UV_ETIMEDOUT);
}

static void verify_case(SSL_CTX *cli, const char *name, int want_ok,
                        int want_verified, const char *want_err) {
  loop_new();
  struct server s = {0};
  struct peer sp = {.role = R_HOLD, .tls_ctx = srv_ctx};
  struct peer cp = {.role = R_COLLECT, .tls_ctx = cli, .tls_name = name};
  server_open(&s, &sp);
  client_connect(&s, &cp);
  /* When the handshake succeeds nothing else happens: end it. */
  while (!cp.tls_done && uv_run(loop, UV_RUN_ONCE))
    ;
  if (cp.c)
    conn_close(cp.c, CONN_END_LOCAL);
  run_and_close();
  CHECK_INT(cp.tls_done, 1);
  CHECK_INT(cp.tls_ok, want_ok);
  CHECK_INT(cp.verified, want_verified);
  if (want_err)
    CHECK_CONTAINS(cp.tls_err, want_err);
  CHECK_INT(sp.closed, 1);
}

static void test_verify(void) {
  verify_case(cli_verify_ctx, "localhost", 1, 1, NULL);
  verify_case(cli_verify_ctx, "wrong.example", 0, 0, "hostname mismatch");
  verify_case(cli_other_ctx, "localhost", 0, 0, "certificate verify failed");
  /* Opportunistic: any certificate is accepted but reported unverified. */
  verify_case(cli_opp_ctx, "wrong.example", 1, 0, NULL);
}

static void test_connect_refused(void) {
  loop_new();
  /* Find a free port, then connect to it closed. */
  struct server s = {0};
  struct peer sp = {.role = R_HOLD};
  server_open(&s, &sp);
  struct sockaddr_storage addr;
  memcpy(&addr, listener_addr(s.l), sizeof(struct sockaddr_in));
  listener_close(s.l);
  uv_run(loop, UV_RUN_DEFAULT);
  struct peer cp = {.role = R_COLLECT};
  CHECK_INT(
      conn_connect(loop, (struct sockaddr *)&addr, 1000, &peer_cbs, &cp, &cp.c),
      0);
  run_and_close();
  CHECK_INT(cp.connected, 0);
  CHECK_INT(cp.closed, 1);
  CHECK_INT(cp.end, CONN_END_CONNECT);
  CHECK_INT(cp.status, UV_ECONNREFUSED);
}

/* A listener whose accept queue is full drops SYNs, so connects hang:
 * the connect timeout ends them with UV_ETIMEDOUT. */
static void on_connected_close(struct conn *c) {
  struct peer *p = conn_data(c);
  p->connected++;
  conn_close(c, CONN_END_LOCAL);
}
static const struct conn_cbs close_on_connect_cbs = {
    .on_connected = on_connected_close, .on_close = p_close};

static void test_connect_timeout(void) {
  loop_new();
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", 0, &a);
  socklen_t al = sizeof a;
  CHECK_INT(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  CHECK_INT(listen(fd, 0), 0);
  CHECK_INT(getsockname(fd, (struct sockaddr *)&a, &al), 0);
  enum { N = 4 };
  struct peer cp[N];
  memset(cp, 0, sizeof cp);
  for (int i = 0; i < N; i++)
    CHECK_INT(conn_connect(loop, (struct sockaddr *)&a, 300,
                           &close_on_connect_cbs, &cp[i], &cp[i].c),
              0);
  uint64_t t0 = uv_hrtime();
  run_and_close();
  int timed_out = 0;
  for (int i = 0; i < N; i++) {
    CHECK_INT(cp[i].closed, 1);
    if (cp[i].end == CONN_END_CONNECT && cp[i].status == UV_ETIMEDOUT)
      timed_out++;
    else
      CHECK_INT(cp[i].connected, 1);
  }
  CHECK(timed_out >= 1);
  fprintf(stderr, "  connect timeout: %d of %d timed out after %llu ms\n",
          timed_out, N, (unsigned long long)((uv_hrtime() - t0) / 1000000));
  /* Far below the kernel's own connect timeout (minutes), far above what
   * a loaded machine needs for 300 ms (issue 13: generous bounds only). */
  CHECK((uv_hrtime() - t0) / 1000000 < 20000);
  close(fd);
}

static void test_listener_errors(void) {
  loop_new();
  struct server s = {0};
  struct peer sp = {.role = R_HOLD};
  server_open(&s, &sp);
  struct listener *l2 = NULL;
  char err[256] = "";
  int r = listener_open(loop, listener_addr(s.l), 0, on_accept, &s, &l2, err,
                        sizeof err);
  CHECK_INT(r, UV_EADDRINUSE);
  char want[128];
  snprintf(want, sizeof want, "cannot listen on %s: address already in use",
           listener_name(s.l));
  CHECK_STR(err, want);
  listener_close(s.l);

  /* IPv6 listeners are v6-only: the same port stays free for IPv4. */
  struct sockaddr_in6 a6;
  uv_ip6_addr("::", 0, &a6);
  struct listener *l6 = NULL;
  r = listener_open(loop, (struct sockaddr *)&a6, 1, on_accept, &s, &l6, err,
                    sizeof err);
  if (r == 0) {
    CHECK_INT(listener_tls(l6), 1);
    struct sockaddr_in a4;
    uv_ip4_addr(
        "0.0.0.0",
        ntohs(((const struct sockaddr_in6 *)listener_addr(l6))->sin6_port),
        &a4);
    struct listener *l4 = NULL;
    r = listener_open(loop, (struct sockaddr *)&a4, 0, on_accept, &s, &l4, err,
                      sizeof err);
    CHECK_INT(r, 0);
    if (r == 0)
      listener_close(l4);
    listener_close(l6);
  } else {
    fprintf(stderr, "  no IPv6 here, skipped the v6-only case: %s\n", err);
  }
  run_and_close();
}

static void test_tls_ctx(void) {
  char err[512];
  SSL_CTX *ctx = tls_server_ctx_new(cert, other_key, err, sizeof err);
  CHECK(ctx == NULL);
  CHECK_CONTAINS(err, "does not match tls_cert_file");
  ctx = tls_server_ctx_new("/nonexistent/cert.pem", key, err, sizeof err);
  CHECK(ctx == NULL);
  CHECK_CONTAINS(err, "cannot load tls_cert_file /nonexistent/cert.pem");
  ctx = tls_client_ctx_new("/nonexistent/ca.pem", TLS_VERIFY_REQUIRE, err,
                           sizeof err);
  CHECK(ctx == NULL);
  CHECK_CONTAINS(err, "tls_ca_file");

  /* Reload: a failure keeps the old context, a success swaps it. */
  SSL_CTX *slot = tls_server_ctx_new(cert, key, err, sizeof err);
  CHECK(slot != NULL);
  SSL_CTX *before = slot;
  SSL *live = SSL_new(slot); /* a session using the old context */
  CHECK_INT(tls_server_reload(&slot, cert, other_key, err, sizeof err), -1);
  CHECK(slot == before);
  CHECK_INT(tls_server_reload(&slot, other_cert, other_key, err, sizeof err),
            0);
  CHECK(slot != before);
  CHECK(SSL_get_SSL_CTX(live) == before); /* still alive, still its own */
  SSL_free(live);                         /* drops the last reference */
  SSL_CTX_free(slot);
}

int main(void) {
  alarm(60);
  /* As `mailhop serve` does (relay/serve.c): a write to a peer that is
   * gone is an EPIPE for the conn, not the end of the process. */
  signal(SIGPIPE, SIG_IGN);
  if (make_certs() != 0) {
    fprintf(stderr, "cannot make test certificates with openssl(1)\n");
    return 1;
  }
  char err[512];
  srv_ctx = tls_server_ctx_new(cert, key, err, sizeof err);
  CHECK(srv_ctx != NULL);
  cli_verify_ctx =
      tls_client_ctx_new(cert, TLS_VERIFY_REQUIRE, err, sizeof err);
  CHECK(cli_verify_ctx != NULL);
  cli_other_ctx =
      tls_client_ctx_new(other_cert, TLS_VERIFY_REQUIRE, err, sizeof err);
  CHECK(cli_other_ctx != NULL);
  cli_opp_ctx = tls_client_ctx_new(cert, TLS_VERIFY_NONE, err, sizeof err);
  CHECK(cli_opp_ctx != NULL);
  if (!srv_ctx || !cli_verify_ctx || !cli_other_ctx || !cli_opp_ctx) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }

  test_unmap();
  test_echo(0);
  test_echo(1);
  test_starttls_discard();
  test_retained_input();
  test_backpressure(0);
  test_backpressure(1);
  test_timeout();
  test_close_in_callbacks();
  test_close_flush();
  test_overflow();
  test_tls_failures();
  test_verify();
  test_connect_refused();
  test_connect_timeout();
  test_listener_errors();
  test_tls_ctx();

  SSL_CTX_free(srv_ctx);
  SSL_CTX_free(cli_verify_ctx);
  SSL_CTX_free(cli_other_ctx);
  SSL_CTX_free(cli_opp_ctx);
  remove_certs();
  return check_result("test_conn");
}
