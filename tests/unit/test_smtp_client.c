/* test_smtp_client: the outbound SMTP machine driven by scripted replies. */
#include "proto/smtp_client.h"

#include <errno.h>

#include "check.h"

static char evlog[16384];
static size_t feed_step = 4096;

static void log_event(struct smtp_client *c, const struct smtp_cli_event *ev) {
  char line[1024], j[600] = "";
  (void)c;
  if (ev->reply)
    reply_join(ev->reply, j, sizeof(j));
  switch (ev->type) {
  case SMTP_CLI_EV_RCPT:
    snprintf(line, sizeof(line), "rcpt %zu %s %s%s\n", ev->rcpt,
             smtp_cli_outcome_name(ev->outcome), j,
             ev->local ? " (local)" : "");
    break;
  case SMTP_CLI_EV_FAILED:
    snprintf(line, sizeof(line), "failed %s %s%s\n",
             smtp_cli_fail_name(ev->fail), j, ev->local ? " (local)" : "");
    break;
  case SMTP_CLI_EV_TLS_WANTED:
    snprintf(line, sizeof(line), "tls_wanted %zu\n", ev->leftover);
    break;
  default:
    snprintf(line, sizeof(line), "%s\n", smtp_cli_event_name(ev->type));
  }
  strncat(evlog, line, sizeof(evlog) - strlen(evlog) - 1);
}

/* Feeds server text in chunks of feed_step, logging every event. */
static void srv(struct smtp_client *c, const char *s) {
  size_t len = strlen(s), off = 0;
  struct smtp_cli_event ev;
  for (;;) {
    size_t n = len - off < feed_step ? len - off : feed_step, used;
    int r = smtp_client_feed(c, s + off, n, &used, &ev);
    CHECK(used <= n);
    off += used;
    if (r)
      log_event(c, &ev);
    else if (off >= len)
      break;
  }
}

/* Takes the pending output as a string. */
static const char *out(struct smtp_client *c) {
  static char buf[16384];
  size_t n;
  const char *o = smtp_client_output(c, &n);
  if (n >= sizeof(buf))
    n = sizeof(buf) - 1;
  memcpy(buf, o, n);
  buf[n] = '\0';
  smtp_client_output_done(c, n);
  return buf;
}

static const char *events(void) {
  static char copy[sizeof(evlog)];
  memcpy(copy, evlog, sizeof(evlog));
  evlog[0] = '\0';
  return copy;
}

static struct smtp_client *open_session(const struct smtp_cli_params *p,
                                        const char *ehlo_reply) {
  struct smtp_client *c = smtp_client_new(p);
  CHECK(c != NULL);
  evlog[0] = '\0';
  CHECK_INT(smtp_client_stage(c), SMTP_CLI_STAGE_GREETING);
  CHECK_INT(smtp_client_timeout_ms(c), 300000);
  srv(c, "220 mx.example ESMTP\r\n");
  CHECK_STR(out(c), "EHLO relay.test\r\n");
  if (ehlo_reply)
    srv(c, ehlo_reply);
  return c;
}

static const struct smtp_cli_params plain = {.helo = "relay.test"};

#define EHLO_FULL                                                              \
  "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250-8BITMIME\r\n"     \
  "250-SMTPUTF8\r\n250-DSN\r\n250 ENHANCEDSTATUSCODES\r\n"
#define EHLO_BASIC "250-mx.example\r\n250 SIZE\r\n"

static const struct smtp_cli_rcpt r3[] = {
    {"a@y", 0, NULL}, {"b@y", 0, NULL}, {"c@y", 0, NULL}};

static void test_pipelined_mixed(size_t step) {
  feed_step = step;
  struct smtp_client *c = open_session(&plain, EHLO_FULL);
  CHECK_STR(events(), "ready\n");
  const struct smtp_cli_caps *k = smtp_client_caps(c);
  CHECK(k->pipelining && k->size && k->size_max == 10000 && k->eightbitmime &&
        k->dsn && k->smtputf8 && !k->starttls);
  struct smtp_cli_tx tx = {
      .sender = "s@x", .size = 100, .rcpts = r3, .nrcpt = 3};
  CHECK_INT(smtp_client_start_tx(c, &tx), 0);
  CHECK_STR(out(c), "MAIL FROM:<s@x> SIZE=100\r\n"
                    "RCPT TO:<a@y>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\n"
                    "DATA\r\n");
  CHECK_INT(smtp_client_stage(c), SMTP_CLI_STAGE_MAIL);
  srv(c, "250 2.1.0 ok\r\n250 2.1.5 ok\r\n550-5.1.1 no such\r\n"
         "550 5.1.1 user\r\n451 4.3.0 later\r\n354 go\r\n");
  CHECK_STR(events(), "rcpt 1 permfail 550 5.1.1 no such user\n"
                      "rcpt 2 tempfail 451 4.3.0 later\n"
                      "body\n");
  CHECK_INT(smtp_client_stage(c), SMTP_CLI_STAGE_DATA_BLOCK);
  CHECK_INT(smtp_client_timeout_ms(c), 180000);
  smtp_client_body_done(c);
  CHECK_STR(out(c), ""); /* the terminator is the caller's (encode.c) */
  CHECK_INT(smtp_client_stage(c), SMTP_CLI_STAGE_DATA_TERM);
  CHECK_INT(smtp_client_timeout_ms(c), 600000);
  srv(c, "250 2.0.0 queued as X\r\n");
  CHECK_STR(events(), "rcpt 0 delivered 250 2.0.0 queued as X\nready\n");
  /* Connection reuse: a second message, no RSET needed. */
  struct smtp_cli_tx tx2 = {.sender = "", .size = 5, .rcpts = r3, .nrcpt = 1};
  CHECK_INT(smtp_client_start_tx(c, &tx2), 0);
  CHECK_STR(out(c), "MAIL FROM:<> SIZE=5\r\nRCPT TO:<a@y>\r\nDATA\r\n");
  srv(c, "250 ok\r\n250 ok\r\n354 go\r\n");
  smtp_client_body_done(c);
  srv(c, "554 5.7.1 rejected\r\n");
  CHECK_STR(events(), "body\nrcpt 0 permfail 554 5.7.1 rejected\nready\n");
  smtp_client_quit(c);
  CHECK_STR(out(c), "QUIT\r\n");
  srv(c, "221 bye\r\n");
  CHECK_STR(events(), "closed\n");
  smtp_client_free(c);
  feed_step = 4096;
}

static void test_ehlo_helo_fallback(void) {
  struct smtp_client *c = open_session(&plain, "500 5.5.1 what\r\n");
  CHECK_STR(out(c), "HELO relay.test\r\n");
  srv(c, "250 hello\r\n");
  CHECK_STR(events(), "ready\n");
  CHECK_INT(smtp_client_caps(c)->esmtp, 0);
  /* Non-pipelined, no extensions: no parameters at all. */
  struct smtp_cli_rcpt r = {"a@y", DSN_NOTIFY_FAILURE, "rfc822;a@y"};
  struct smtp_cli_tx tx = {.sender = "s@x",
                           .size = 10,
                           .ret = DSN_RET_FULL,
                           .envid = "E1",
                           .rcpts = &r,
                           .nrcpt = 1};
  CHECK_INT(smtp_client_start_tx(c, &tx), 0);
  CHECK_STR(out(c), "MAIL FROM:<s@x>\r\n");
  srv(c, "250 ok\r\n");
  CHECK_STR(out(c), "RCPT TO:<a@y>\r\n");
  CHECK_INT(smtp_client_stage(c), SMTP_CLI_STAGE_RCPT);
  srv(c, "250 ok\r\n");
  CHECK_STR(out(c), "DATA\r\n");
  CHECK_INT(smtp_client_timeout_ms(c), 120000);
  srv(c, "354 go\r\n");
  smtp_client_body_done(c);
  srv(c, "250 ok\r\n");
  CHECK_STR(events(), "body\nrcpt 0 delivered 250 ok\nready\n");
  /* 8-bit to a server without 8BITMIME: bounce 5.6.3, nothing sent. */
  tx.body_8bit = 1;
  CHECK_INT(smtp_client_start_tx(c, &tx), 0);
  srv(c, "");
  CHECK_STR(out(c), "");
  CHECK_STR(events(), "rcpt 0 permfail 554 5.6.3 8-bit message and the next "
                      "hop does not offer 8BITMIME (local)\nready\n");
  smtp_client_free(c);
}

static void test_helo_refused(void) {
  struct smtp_client *c = open_session(&plain, "502 no\r\n");
  CHECK_STR(out(c), "HELO relay.test\r\n");
  srv(c, "550 go away\r\n");
  CHECK_STR(events(), "failed greeting 550 go away\n");
  CHECK_STR(out(c), "QUIT\r\n");
  smtp_client_free(c);
}

static void test_greeting(void) {
  static const struct {
    const char *greet, *ev;
  } t[] = {
      {"554 5.3.2 no service\r\n", "failed greeting 554 5.3.2 no service\n"},
      {"421 busy\r\n", "failed greeting 421 busy\n"},
      {"450-a\r\n450 b\r\n", "failed greeting 450 a b\n"},
      {"250 what\r\n", "failed protocol 250 what\n"},
      {"HTTP/1.1 400\r\n",
       "failed protocol 451 4.5.0 malformed reply from server: syntax "
       "(local)\n"},
  };
  for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
    struct smtp_client *c = smtp_client_new(&plain);
    evlog[0] = '\0';
    srv(c, t[i].greet);
    CHECK_STR(events(), t[i].ev);
    /* 4xx/5xx greeting: polite QUIT; garbage: just drop. */
    CHECK_STR(out(c), strstr(t[i].ev, "greeting") ? "QUIT\r\n" : "");
    CHECK_INT(smtp_client_stage(c), SMTP_CLI_STAGE_DONE);
    srv(c, "250 more\r\n"); /* ignored */
    CHECK_STR(events(), "");
    smtp_client_free(c);
  }
}

static void test_rcpt_452_continuation(void) {
  struct smtp_client *c = open_session(&plain, EHLO_BASIC);
  events();
  struct smtp_cli_tx tx = {.sender = "s@x", .rcpts = r3, .nrcpt = 3};
  CHECK_INT(smtp_client_start_tx(c, &tx), 0);
  CHECK_STR(out(c), "MAIL FROM:<s@x> SIZE=0\r\n");
  srv(c, "250 ok\r\n");
  CHECK_STR(out(c), "RCPT TO:<a@y>\r\n");
  srv(c, "250 ok\r\n");
  CHECK_STR(out(c), "RCPT TO:<b@y>\r\n");
  srv(c, "452 4.5.3 too many recipients\r\n");
  CHECK_STR(out(c), "RCPT TO:<c@y>\r\n");
  srv(c, "452 4.5.3 too many recipients\r\n");
  CHECK_STR(out(c), "DATA\r\n");
  CHECK_STR(events(), "rcpt 1 next_tx 452 4.5.3 too many recipients\n"
                      "rcpt 2 next_tx 452 4.5.3 too many recipients\n");
  srv(c, "354 go\r\n");
  smtp_client_body_done(c);
  srv(c, "250 ok\r\n");
  CHECK_STR(events(), "body\nrcpt 0 delivered 250 ok\nready\n");
  /* 452 to the first recipient is a plain deferral; nobody accepted:
   * RSET, no DATA. */
  CHECK_INT(smtp_client_start_tx(c, &tx), 0);
  out(c);
  srv(c, "250 ok\r\n");
  out(c);
  srv(c, "452 4.3.1 full\r\n");
  out(c);
  srv(c, "550 no\r\n");
  out(c);
  srv(c, "550 no\r\n");
  CHECK_STR(out(c), "RSET\r\n");
  srv(c, "250 reset\r\n");
  CHECK_STR(events(), "rcpt 0 tempfail 452 4.3.1 full\n"
                      "rcpt 1 permfail 550 no\nrcpt 2 permfail 550 no\n"
                      "ready\n");
  smtp_client_free(c);
}

static void test_max_rcpt(void) {
  struct smtp_cli_params p = plain;
  p.max_rcpt = 2;
  struct smtp_client *c = open_session(&p, EHLO_FULL);
  events();
  struct smtp_cli_tx tx = {.sender = "s@x", .rcpts = r3, .nrcpt = 3};
  CHECK_INT(smtp_client_start_tx(c, &tx), 0);
  CHECK_STR(out(c), "MAIL FROM:<s@x> SIZE=0\r\nRCPT TO:<a@y>\r\n"
                    "RCPT TO:<b@y>\r\nDATA\r\n");
  srv(c, "250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n");
  CHECK_STR(events(), "rcpt 2 next_tx 452 4.5.3 over the recipient limit "
                      "per transaction (local)\nbody\n");
  smtp_client_free(c);
}

static void test_pipelined_all_rejected(void) {
  struct smtp_client *c = open_session(&plain, EHLO_FULL);
  events();
  struct smtp_cli_tx tx = {.sender = "s@x", .rcpts = r3, .nrcpt = 2};
  CHECK_INT(smtp_client_start_tx(c, &tx), 0);
  out(c);
  srv(c, "250 ok\r\n550 a\r\n550 b\r\n554 5.5.1 no valid recipients\r\n");
  CHECK_STR(out(c), "RSET\r\n");
  srv(c, "250 ok\r\n");
  CHECK_STR(events(), "rcpt 0 permfail 550 a\nrcpt 1 permfail 550 b\nready\n");
  /* A server that says 354 anyway gets an empty message. */
  CHECK_INT(smtp_client_start_tx(c, &tx), 0);
  out(c);
  srv(c, "250 ok\r\n550 a\r\n550 b\r\n354 go\r\n");
  CHECK_STR(out(c), ".\r\n");
  srv(c, "250 empty\r\n");
  CHECK_STR(events(), "rcpt 0 permfail 550 a\nrcpt 1 permfail 550 b\nready\n");
  /* MAIL refused in a pipelined group: the 503s that follow are eaten. */
  CHECK_INT(smtp_client_start_tx(c, &tx), 0);
  out(c);
  srv(c, "451 4.3.0 try later\r\n503 no\r\n503 no\r\n503 no\r\n");
  CHECK_STR(out(c), "");
  CHECK_STR(events(), "rcpt 0 tempfail 451 4.3.0 try later\n"
                      "rcpt 1 tempfail 451 4.3.0 try later\nready\n");
  smtp_client_free(c);
}

static void test_mail_and_data_refused(void) {
  struct smtp_client *c = open_session(&plain, EHLO_BASIC);
  events();
  struct smtp_cli_tx tx = {.sender = "s@x", .rcpts = r3, .nrcpt = 2};
  CHECK_INT(smtp_client_start_tx(c, &tx), 0);
  out(c);
  srv(c, "553 5.1.8 bad sender\r\n");
  CHECK_STR(out(c), "");
  CHECK_STR(events(), "rcpt 0 permfail 553 5.1.8 bad sender\n"
                      "rcpt 1 permfail 553 5.1.8 bad sender\nready\n");
  CHECK_INT(smtp_client_start_tx(c, &tx), 0);
  out(c);
  srv(c, "250 ok\r\n");
  srv(c, "250 ok\r\n");
  srv(c, "550 no\r\n");
  CHECK_STR(out(c), "RCPT TO:<a@y>\r\nRCPT TO:<b@y>\r\nDATA\r\n");
  srv(c, "451 4.3.0 not now\r\n");
  CHECK_STR(out(c), "RSET\r\n");
  srv(c, "250 ok\r\n");
  CHECK_STR(events(), "rcpt 1 permfail 550 no\n"
                      "rcpt 0 tempfail 451 4.3.0 not now\nready\n");
  smtp_client_free(c);
}

static void test_starttls(void) {
  struct smtp_cli_params p = plain;
  p.tls = SMTP_CLI_TLS_OPPORTUNISTIC;
  const char *ehlo = "250-mx\r\n250-STARTTLS\r\n250 PIPELINING\r\n";
  /* Injected bytes after the 220: the session ends. */
  struct smtp_client *c = open_session(&p, ehlo);
  CHECK_STR(out(c), "STARTTLS\r\n");
  srv(c, "220 go ahead\r\n250-injected\r\n");
  const char *e = events();
  CHECK_CONTAINS(e, "failed tls 554 5.7.0 server sent data after its "
                    "STARTTLS reply");
  CHECK_STR(out(c), "");
  smtp_client_free(c);

  /* Clean: TLS_WANTED, then EHLO again and extensions forgotten. */
  c = open_session(&p, ehlo);
  out(c);
  srv(c, "220 go ahead\r\n");
  CHECK_STR(events(), "tls_wanted 0\n");
  CHECK_INT(smtp_client_stage(c), SMTP_CLI_STAGE_IDLE);
  smtp_client_tls_done(c, 1);
  CHECK(smtp_client_in_tls(c));
  CHECK_INT(smtp_client_caps(c)->pipelining, 0);
  CHECK_STR(out(c), "EHLO relay.test\r\n");
  srv(c, "250-mx\r\n250 8BITMIME\r\n");
  CHECK_STR(events(), "ready\n");
  CHECK_INT(smtp_client_caps(c)->pipelining, 0);
  CHECK_INT(smtp_client_caps(c)->eightbitmime, 1);
  smtp_client_free(c);

  /* Opportunistic and STARTTLS refused: go on in plaintext. */
  c = open_session(&p, ehlo);
  out(c);
  srv(c, "454 4.7.0 no tls now\r\n");
  CHECK_STR(events(), "ready\n");
  smtp_client_free(c);

  /* Required and refused / not offered: fail with QUIT. */
  p.tls = SMTP_CLI_TLS_REQUIRED;
  c = open_session(&p, ehlo);
  out(c);
  srv(c, "454 4.7.0 no tls now\r\n");
  CHECK_STR(events(), "failed tls 454 4.7.0 no tls now\n");
  CHECK_STR(out(c), "QUIT\r\n");
  smtp_client_free(c);
  c = open_session(&p, EHLO_BASIC);
  CHECK_STR(events(), "failed tls 530 5.7.10 TLS required but STARTTLS not "
                      "offered (local)\n");
  CHECK_STR(out(c), "QUIT\r\n");
  smtp_client_free(c);

  /* Already in TLS (smtps): no STARTTLS even when offered. */
  p.in_tls = 1;
  c = open_session(&p, ehlo);
  CHECK_STR(events(), "ready\n");
  smtp_client_free(c);
}

static void test_auth(void) {
  struct smtp_cli_params p = plain;
  p.auth_user = "user";
  p.auth_pass = "pass";
  p.auth_allowed = 1;
  struct smtp_client *c =
      open_session(&p, "250-mx\r\n250 AUTH LOGIN PLAIN\r\n");
  CHECK_STR(out(c), "AUTH PLAIN AHVzZXIAcGFzcw==\r\n");
  srv(c, "235 2.7.0 ok\r\n");
  CHECK_STR(events(), "ready\n");
  smtp_client_free(c);

  c = open_session(&p, "250-mx\r\n250 AUTH=LOGIN\r\n");
  CHECK_STR(out(c), "AUTH LOGIN\r\n");
  srv(c, "334 VXNlcm5hbWU6\r\n");
  CHECK_STR(out(c), "dXNlcg==\r\n");
  srv(c, "334 UGFzc3dvcmQ6\r\n");
  CHECK_STR(out(c), "cGFzcw==\r\n");
  srv(c, "235 ok\r\n");
  CHECK_STR(events(), "ready\n");
  smtp_client_free(c);

  c = open_session(&p, "250-mx\r\n250 AUTH PLAIN\r\n");
  out(c);
  srv(c, "535 5.7.8 bad credentials\r\n");
  CHECK_STR(events(), "failed auth 535 5.7.8 bad credentials\n");
  CHECK_STR(out(c), "QUIT\r\n");
  smtp_client_free(c);

  c = open_session(&p, EHLO_BASIC);
  CHECK_CONTAINS(events(), "failed auth 504 5.7.4");
  smtp_client_free(c);

  p.auth_allowed = 0;
  c = open_session(&p, "250-mx\r\n250 AUTH PLAIN\r\n");
  CHECK_CONTAINS(events(), "failed auth 530 5.7.0 credentials not sent");
  CHECK_STR(out(c), "QUIT\r\n");
  smtp_client_free(c);
}

static void test_dsn_params(void) {
  struct smtp_cli_rcpt r[2] = {
      {"a@y", DSN_NOTIFY_FAILURE | DSN_NOTIFY_DELAY, "rfc822;a@y"},
      {"b@y", DSN_NOTIFY_NEVER, NULL}};
  struct smtp_cli_tx tx = {.sender = "s@x",
                           .size = 7,
                           .ret = DSN_RET_HDRS,
                           .envid = "QQ+2B1",
                           .rcpts = r,
                           .nrcpt = 2};
  struct smtp_client *c = open_session(&plain, EHLO_FULL);
  events();
  CHECK_INT(smtp_client_start_tx(c, &tx), 0);
  CHECK_STR(out(c), "MAIL FROM:<s@x> SIZE=7 RET=HDRS ENVID=QQ+2B1\r\n"
                    "RCPT TO:<a@y> NOTIFY=FAILURE,DELAY ORCPT=rfc822;a@y\r\n"
                    "RCPT TO:<b@y> NOTIFY=NEVER\r\nDATA\r\n");
  smtp_client_free(c);
  /* 8-bit and SMTPUTF8 parameters when offered. */
  tx.body_8bit = 1;
  tx.smtputf8 = 1;
  tx.ret = DSN_RET_FULL;
  c = open_session(&plain, EHLO_FULL);
  events();
  CHECK_INT(smtp_client_start_tx(c, &tx), 0);
  CHECK_CONTAINS(out(c), "MAIL FROM:<s@x> SIZE=7 BODY=8BITMIME SMTPUTF8 "
                         "RET=FULL ENVID=QQ+2B1\r\n");
  smtp_client_free(c);
  /* XARRIVAL (drain --to a fleet peer) only when offered. */
  tx.body_8bit = tx.smtputf8 = 0;
  tx.arrival = 1700000000;
  c = open_session(&plain, "250-mx\r\n250-DSN\r\n250 XARRIVAL\r\n");
  events();
  CHECK_INT(smtp_client_start_tx(c, &tx), 0);
  CHECK_CONTAINS(out(c), "MAIL FROM:<s@x> RET=FULL ENVID=QQ+2B1 "
                         "XARRIVAL=1700000000\r\n");
  smtp_client_free(c);
  /* Not offered: none of them. */
  c = open_session(&plain, "250-mx\r\n250 PIPELINING\r\n");
  events();
  tx.body_8bit = tx.smtputf8 = 0;
  CHECK_INT(smtp_client_start_tx(c, &tx), 0);
  CHECK_STR(out(c), "MAIL FROM:<s@x>\r\nRCPT TO:<a@y>\r\nRCPT TO:<b@y>\r\n"
                    "DATA\r\n");
  smtp_client_free(c);
}

static void test_refusals(void) {
  struct smtp_client *c =
      open_session(&plain, "250-mx\r\n250-SIZE 1000\r\n250 8BITMIME\r\n");
  events();
  struct smtp_cli_tx tx = {
      .sender = "s@x", .size = 1001, .rcpts = r3, .nrcpt = 2};
  CHECK_INT(smtp_client_start_tx(c, &tx), 0);
  srv(c, "");
  CHECK_STR(out(c), "");
  CHECK_STR(events(),
            "rcpt 0 permfail 552 5.3.4 message size 1001 exceeds the next "
            "hop's limit of 1000 (local)\n"
            "rcpt 1 permfail 552 5.3.4 message size 1001 exceeds the next "
            "hop's limit of 1000 (local)\nready\n");
  tx.size = 1000;
  tx.smtputf8 = 1;
  CHECK_INT(smtp_client_start_tx(c, &tx), 0);
  srv(c, "");
  CHECK_STR(out(c), "");
  CHECK_CONTAINS(events(), "rcpt 1 permfail 553 5.6.7 message needs SMTPUTF8");
  /* Injection attempts and misuse. */
  struct smtp_cli_rcpt bad = {"a@y>\r\nRSET", 0, NULL};
  struct smtp_cli_tx tb = {.sender = "s@x", .rcpts = &bad, .nrcpt = 1};
  CHECK_INT(smtp_client_start_tx(c, &tb), -EINVAL);
  tb.rcpts = r3;
  tb.envid = "a b";
  CHECK_INT(smtp_client_start_tx(c, &tb), -EINVAL);
  tb.envid = NULL;
  tb.nrcpt = 0;
  CHECK_INT(smtp_client_start_tx(c, &tb), -EINVAL);
  tb.nrcpt = 1;
  CHECK_INT(smtp_client_start_tx(c, &tb), 0);
  CHECK_INT(smtp_client_start_tx(c, &tb), -EBUSY);
  smtp_client_free(c);
}

static void test_session_errors(void) {
  struct smtp_client *c = open_session(&plain, EHLO_FULL);
  events();
  struct smtp_cli_tx tx = {.sender = "s@x", .rcpts = r3, .nrcpt = 3};
  CHECK_INT(smtp_client_start_tx(c, &tx), 0);
  out(c);
  srv(c, "250 ok\r\n550 no\r\n421 4.4.2 closing\r\n");
  CHECK_STR(events(), "rcpt 0 permfail 550 no\n"
                      "failed service 421 4.4.2 closing\n");
  smtp_client_free(c);

  c = open_session(&plain, EHLO_FULL);
  events();
  CHECK_INT(smtp_client_start_tx(c, &tx), 0);
  out(c);
  srv(c, "250-ok\r\n251 mismatch\r\n");
  CHECK_STR(events(), "failed protocol 451 4.5.0 malformed reply from server: "
                      "code_mismatch (local)\n");
  smtp_client_free(c);

  /* An unsolicited reply while idle. */
  c = open_session(&plain, EHLO_FULL);
  events();
  srv(c, "250 surprise\r\n");
  CHECK_STR(events(), "failed protocol 250 surprise\n");
  smtp_client_free(c);
}

/* CONTRACT §4: a server naming this relay's hostname is this relay. */
static void test_loop_by_name(void) {
  struct smtp_cli_params p = plain;
  p.self_name = "Relay.Test";
  static const char *const greetings[] = {
      "220 relay.test ESMTP mailhop\r\n",
      "220 RELAY.TEST\r\n",
      "220 relay.test.\r\n",
      "220-relay.test ESMTP\r\n220 more\r\n",
  };
  for (size_t i = 0; i < sizeof(greetings) / sizeof(greetings[0]); i++) {
    struct smtp_client *c = smtp_client_new(&p);
    CHECK(c != NULL);
    evlog[0] = '\0';
    srv(c, greetings[i]);
    CHECK_STR(events(), "failed loop 554 5.4.6 mail loops back to myself: "
                        "the server greets as Relay.Test, this relay's own "
                        "name (local)\n");
    CHECK_STR(out(c), "QUIT\r\n"); /* no EHLO */
    CHECK_INT(smtp_client_stage(c), SMTP_CLI_STAGE_DONE);
    /* Nothing after the end. */
    srv(c, "250 ok\r\n");
    CHECK_STR(events(), "");
    smtp_client_free(c);
  }
  /* The greeting hides the name, the EHLO reply's first line says it. */
  struct smtp_client *c = smtp_client_new(&p);
  CHECK(c != NULL);
  evlog[0] = '\0';
  srv(c, "220 gateway.example ESMTP\r\n");
  CHECK_STR(out(c), "EHLO relay.test\r\n");
  srv(c, "250-relay.test Hello\r\n250 PIPELINING\r\n");
  CHECK_CONTAINS(events(), "failed loop 554 5.4.6");
  CHECK_STR(out(c), "QUIT\r\n");
  smtp_client_free(c);
  /* Not our name: a longer name, a name in another word, another line. */
  static const char *const others[][2] = {
      {"220 relay.test.example ESMTP\r\n", "250 mx\r\n"},
      {"220 mx.example ESMTP relay.test\r\n", "250 mx.example relay.test\r\n"},
      {"220 xrelay.test\r\n", "250-mx\r\n250 relay.test\r\n"},
  };
  for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
    c = smtp_client_new(&p);
    CHECK(c != NULL);
    evlog[0] = '\0';
    srv(c, others[i][0]);
    CHECK_STR(out(c), "EHLO relay.test\r\n");
    srv(c, others[i][1]);
    CHECK_STR(events(), "ready\n");
    smtp_client_free(c);
  }
  /* Without self_name no check: the name is just a name. */
  c = smtp_client_new(&plain);
  CHECK(c != NULL);
  evlog[0] = '\0';
  srv(c, "220 relay.test ESMTP\r\n");
  CHECK_STR(out(c), "EHLO relay.test\r\n");
  smtp_client_free(c);
  CHECK_STR(smtp_cli_fail_name(SMTP_CLI_FAIL_LOOP), "loop");
}

/* SASL XOAUTH2 (issue 15), with Google's documented example bytes. */
#define XO_IR                                                                  \
  "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRj"   \
  "Mk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
#define XO_ERR                                                                 \
  "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJodHRwczovL21h"   \
  "aWwuZ29vZ2xlLmNvbS8ifQ=="

static void test_xoauth2(void) {
  struct smtp_cli_params p = plain;
  p.auth_user = "someuser@example.com";
  p.auth_pass = "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg";
  p.auth_allowed = 1;
  p.auth_mech = SMTP_CLI_AUTH_XOAUTH2;
  const char *ehlo = "250-mx\r\n250-AUTH LOGIN PLAIN XOAUTH2 OAUTHBEARER\r\n"
                     "250 PIPELINING\r\n";
  /* Accepted: the initial response, exact bytes, then ready. */
  struct smtp_client *c = open_session(&p, ehlo);
  CHECK(smtp_client_caps(c)->auth_xoauth2);
  CHECK_STR(out(c), "AUTH XOAUTH2 " XO_IR "\r\n");
  CHECK_STR(smtp_client_state_name(c), "auth_xoauth2");
  srv(c, "235 2.7.0 Accepted\r\n");
  CHECK_STR(events(), "ready\n");
  smtp_client_free(c);

  /* Refused with the error challenge: an empty line, then the 535 is the
   * outcome, as a token failure (defer and refresh). */
  c = open_session(&p, ehlo);
  out(c);
  srv(c, "334 " XO_ERR "\r\n");
  CHECK_STR(events(), "");
  CHECK_STR(out(c), "\r\n");
  CHECK_STR(smtp_client_state_name(c), "auth_xoauth2_err");
  srv(c, "535-5.7.8 Username and Password not accepted.\r\n"
         "535 5.7.8 https://support.google.com/mail/?p=BadCredentials\r\n");
  CHECK_STR(events(), "failed token 535 5.7.8 Username and Password not "
                      "accepted. https://support.google.com/mail/"
                      "?p=BadCredentials\n");
  CHECK_STR(out(c), "QUIT\r\n");
  CHECK_INT(smtp_client_stage(c), SMTP_CLI_STAGE_DONE);
  smtp_client_free(c);

  /* Microsoft answers 535 at once. */
  c = open_session(&p, ehlo);
  out(c);
  srv(c, "535 5.7.3 Authentication unsuccessful\r\n");
  CHECK_STR(events(), "failed token 535 5.7.3 Authentication unsuccessful\n");
  smtp_client_free(c);

  /* A temporary refusal is an AUTH failure, not a bad token; so is a 4xx
   * after the error challenge. */
  c = open_session(&p, ehlo);
  out(c);
  srv(c, "454 4.7.0 Temporary authentication failure\r\n");
  CHECK_STR(events(), "failed auth 454 4.7.0 Temporary authentication "
                      "failure\n");
  smtp_client_free(c);
  c = open_session(&p, ehlo);
  out(c);
  srv(c, "334 " XO_ERR "\r\n");
  CHECK_STR(out(c), "\r\n");
  srv(c, "454 4.7.0 try later\r\n");
  CHECK_STR(events(), "failed auth 454 4.7.0 try later\n");
  smtp_client_free(c);
  /* Anything but a refusal after the challenge is a protocol error. */
  c = open_session(&p, ehlo);
  out(c);
  srv(c, "334 " XO_ERR "\r\n");
  out(c);
  srv(c, "235 ok\r\n");
  CHECK_STR(events(), "failed protocol 235 ok\n");
  CHECK_STR(out(c), "");
  smtp_client_free(c);

  /* Not offered: no guessing, a local refusal. */
  c = open_session(&p, "250-mx\r\n250 AUTH PLAIN LOGIN\r\n");
  CHECK_STR(events(), "failed auth 504 5.7.4 server does not offer AUTH "
                      "XOAUTH2 (local)\n");
  CHECK_STR(out(c), "QUIT\r\n");
  smtp_client_free(c);

  /* \x01 in the user or token would add fields: refused before sending. */
  p.auth_pass = "tok\001auth=Bearer other";
  c = open_session(&p, ehlo);
  CHECK_CONTAINS(events(), "failed auth 504 5.7.4 user or token has control");
  CHECK_STR(out(c), "QUIT\r\n");
  smtp_client_free(c);

  /* Tokens are long: 8192 octets pass, more do not; a password (other
   * mechanisms) stays limited to 1024. */
  static char tok[8194];
  memset(tok, 'T', 8192);
  tok[8192] = '\0';
  p.auth_pass = tok;
  c = open_session(&p, ehlo);
  const char *o = out(c);
  /* base64 of 5 + 20 + 13 + 8192 + 2 = 8232 octets is 10976 characters. */
  CHECK_INT(strlen(o), 13 + 10976 + 2);
  CHECK(strncmp(o, "AUTH XOAUTH2 dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJl",
                57) == 0);
  smtp_client_free(c);
  tok[8192] = 'T';
  CHECK(smtp_client_new(&p) == NULL);
  tok[1025] = '\0';
  p.auth_mech = SMTP_CLI_AUTH_PLAIN;
  CHECK(smtp_client_new(&p) == NULL);
}

/* relayhost_auth = auto | plain | login: the mechanism chosen from EHLO. */
static void test_auth_mech_choice(void) {
  struct smtp_cli_params p = plain;
  p.auth_user = "user";
  p.auth_pass = "pass";
  p.auth_allowed = 1;
  static const struct {
    enum smtp_cli_auth mech;
    const char *ehlo, *want;
  } cases[] = {
      {SMTP_CLI_AUTH_AUTO, "250-mx\r\n250 AUTH LOGIN PLAIN XOAUTH2\r\n",
       "AUTH PLAIN AHVzZXIAcGFzcw==\r\n"},
      {SMTP_CLI_AUTH_AUTO, "250-mx\r\n250 AUTH LOGIN XOAUTH2\r\n",
       "AUTH LOGIN\r\n"},
      {SMTP_CLI_AUTH_AUTO, "250-mx\r\n250 AUTH XOAUTH2\r\n", "QUIT\r\n"},
      {SMTP_CLI_AUTH_LOGIN, "250-mx\r\n250 AUTH PLAIN LOGIN\r\n",
       "AUTH LOGIN\r\n"},
      {SMTP_CLI_AUTH_LOGIN, "250-mx\r\n250 AUTH PLAIN\r\n", "QUIT\r\n"},
      {SMTP_CLI_AUTH_PLAIN, "250-mx\r\n250 AUTH LOGIN PLAIN\r\n",
       "AUTH PLAIN AHVzZXIAcGFzcw==\r\n"},
      {SMTP_CLI_AUTH_PLAIN, "250-mx\r\n250 AUTH LOGIN\r\n", "QUIT\r\n"},
      {SMTP_CLI_AUTH_XOAUTH2, "250-mx\r\n250 AUTH=XOAUTH2\r\n",
       "AUTH XOAUTH2 dXNlcj11c2VyAWF1dGg9QmVhcmVyIHBhc3MBAQ==\r\n"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    p.auth_mech = cases[i].mech;
    struct smtp_client *c = open_session(&p, cases[i].ehlo);
    CHECK_STR(out(c), cases[i].want);
    if (strcmp(cases[i].want, "QUIT\r\n") == 0)
      CHECK_CONTAINS(events(), "failed auth 504 5.7.4");
    smtp_client_free(c);
  }
  CHECK_STR(smtp_cli_fail_name(SMTP_CLI_FAIL_TOKEN), "token");
}

int main(void) {
  test_pipelined_mixed(4096);
  test_pipelined_mixed(1); /* replies split at every octet */
  test_pipelined_mixed(5);
  test_ehlo_helo_fallback();
  test_helo_refused();
  test_greeting();
  test_rcpt_452_continuation();
  test_max_rcpt();
  test_pipelined_all_rejected();
  test_mail_and_data_refused();
  test_starttls();
  test_auth();
  test_dsn_params();
  test_refusals();
  test_session_errors();
  test_loop_by_name();
  test_xoauth2();
  test_auth_mech_choice();
  return check_result("test_smtp_client");
}
