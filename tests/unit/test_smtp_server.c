/*
 * Unit tests of proto/smtp_server: replies, pipelining, DATA framing
 * (smuggling payloads, size limit), AUTH, STARTTLS and the error limit.
 */
#include "proto/smtp_server.h"

#include "check.h"

#include <stdlib.h>

/* A harness that plays the caller: it feeds input, takes events, answers
 * them and collects the output and an event log. */
struct run {
  char out[65536];
  size_t out_len;
  char log[65536];
  size_t log_len;
  char data[65536];
  size_t data_len;
  int commit_ok;       /* answer to DATA_END */
  int tls_on_starttls; /* answer STARTTLS by tls_started */
  size_t starttls_consumed;
  int closed;
};

/* fmt has either one %s (a) or one %lld (n). */
static void logf_(struct run *r, const char *fmt, const char *a, long long n) {
  char tmp[512];
  int k = strstr(fmt, "%s") ? snprintf(tmp, sizeof(tmp), fmt, a ? a : "")
                            : snprintf(tmp, sizeof(tmp), fmt, n);
  if (k > 0 && r->log_len + (size_t)k < sizeof(r->log)) {
    memcpy(r->log + r->log_len, tmp, (size_t)k);
    r->log_len += (size_t)k;
    r->log[r->log_len] = '\0';
  }
}

static void take_output(struct smtp_server *s, struct run *r) {
  size_t n;
  const char *o = smtp_server_output(s, &n);
  if (r->out_len + n < sizeof(r->out)) {
    memcpy(r->out + r->out_len, o, n);
    r->out_len += n;
    r->out[r->out_len] = '\0';
  }
  smtp_server_output_consumed(s, n);
}

/* Returns 1 when the rest of the input must be discarded (STARTTLS). */
static int handle(struct smtp_server *s, struct run *r,
                  const struct smtp_event *ev) {
  switch (ev->type) {
  case SMTP_SRV_EV_HELO:
    logf_(r, "HELO %s\n", ev->helo.name, 0);
    break;
  case SMTP_SRV_EV_MAIL:
    logf_(r, "MAIL <%s>\n", ev->mail.sender, 0);
    break;
  case SMTP_SRV_EV_RCPT:
    logf_(r, "RCPT <%s>\n", ev->rcpt.addr, 0);
    break;
  case SMTP_SRV_EV_DATA_START:
    logf_(r, "START\n", NULL, 0);
    r->data_len = 0;
    break;
  case SMTP_SRV_EV_DATA_CHUNK:
    if (r->data_len + ev->chunk.len < sizeof(r->data)) {
      memcpy(r->data + r->data_len, ev->chunk.ptr, ev->chunk.len);
      r->data_len += ev->chunk.len;
      r->data[r->data_len] = '\0';
    }
    break;
  case SMTP_SRV_EV_DATA_END:
    logf_(r, "END %lld\n", NULL, (long long)ev->end.size);
    CHECK_INT(ev->end.size, r->data_len);
    if (r->commit_ok)
      smtp_server_commit_done(s, 1, "QID1");
    else
      smtp_server_commit_done(s, 0, "452 4.3.1 Insufficient system storage");
    break;
  case SMTP_SRV_EV_DATA_ABORT:
    logf_(r, "ABORT %lld\n", NULL, ev->abort.code);
    break;
  case SMTP_SRV_EV_STARTTLS:
    logf_(r, "STARTTLS\n", NULL, 0);
    take_output(s, r);
    if (r->tls_on_starttls)
      smtp_server_tls_started(s, "TLSv1.3");
    return 1;
  case SMTP_SRV_EV_AUTH:
    logf_(r, "AUTH %s", ev->auth.user, 0);
    logf_(r, ":%s\n", ev->auth.pass, 0);
    smtp_server_auth_done(s, strcmp(ev->auth.pass, "secret") == 0, NULL);
    break;
  case SMTP_SRV_EV_REJECT:
    logf_(r, "REJECT %lld", NULL, ev->reject.code);
    logf_(r, " <%s>\n", ev->reject.addr, 0);
    break;
  default:
    CHECK(0);
  }
  return 0;
}

/* Feeds in[0..len) in pieces of `step` octets (0: all at once). */
static void drive(struct smtp_server *s, struct run *r, const char *in,
                  size_t len, size_t step) {
  size_t avail = step ? (step < len ? step : len) : len;
  size_t off = 0;
  int guard = 0;
  while (off < len && guard++ < 1000000) {
    size_t n = smtp_server_feed(s, in + off, avail - off);
    CHECK(n <= avail - off);
    off += n;
    struct smtp_event ev;
    int discard = 0;
    while (smtp_server_event(s, &ev))
      discard |= handle(s, r, &ev);
    if (discard) {
      r->starttls_consumed = off;
      return;
    }
    if (smtp_server_close_wanted(s)) {
      r->closed = 1;
      break;
    }
    if (off == avail) {
      take_output(s, r);
      if (avail == len)
        break;
      avail = step ? (avail + step < len ? avail + step : len) : len;
    } else if (smtp_server_blocked(s)) {
      take_output(s, r); /* output high-water mark */
    }
  }
  take_output(s, r);
  if (smtp_server_close_wanted(s))
    r->closed = 1;
}

static struct smtp_server_opts base_opts(void) {
  struct smtp_server_opts o = {
      .hostname = "mx.example.org",
      .max_message_size = 1000,
      .max_recipients = 3,
      .max_errors = 20,
      .relay_allowed = 1,
  };
  return o;
}

static struct run *run_opts(const struct smtp_server_opts *o, const char *in,
                            size_t len, size_t step) {
  struct run *r = calloc(1, sizeof(*r));
  r->commit_ok = 1;
  r->tls_on_starttls = 1;
  struct smtp_server *s = smtp_server_new(o);
  CHECK(s != NULL);
  take_output(s, r);
  drive(s, r, in, len, step);
  smtp_server_free(s);
  return r;
}

static struct run *run_str(const char *in) {
  struct smtp_server_opts o = base_opts();
  return run_opts(&o, in, strlen(in), 0);
}

/* Output without the greeting line. */
static const char *replies(struct run *r) {
  const char *p = strstr(r->out, "\r\n");
  return p ? p + 2 : r->out;
}

#define EHLO "EHLO client.example\r\n"
#define ENV "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\n"
#define ENV_REPLIES                                                            \
  "250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE "                          \
  "1000\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n"             \
  "250-XARRIVAL\r\n250 SMTPUTF8\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"

/* XARRIVAL (the fleet's hand-off, smtp_parse.h): offered to relay
 * clients only, refused from the others even when sent unasked. */
static void test_xarrival(void) {
  struct smtp_server_opts o = base_opts();
  const char *in = "EHLO c\r\nMAIL FROM:<a@b.example> XARRIVAL=1700000000\r\n";
  struct run *r = run_opts(&o, in, strlen(in), 0);
  CHECK_CONTAINS(r->out, "250-XARRIVAL\r\n");
  CHECK_CONTAINS(r->out, "250 2.1.0 Ok\r\n");
  free(r);
  o.relay_allowed = 0;
  r = run_opts(&o, in, strlen(in), 0);
  CHECK(!strstr(r->out, "XARRIVAL\r\n"));
  CHECK_CONTAINS(r->out, "555 5.5.4 Error: XARRIVAL not offered\r\n");
  CHECK(!strstr(r->out, "2.1.0"));
  free(r);
}

static void test_greeting_and_ehlo(void) {
  struct run *r = run_str(EHLO "QUIT\r\n");
  CHECK_STR(r->out, "220 mx.example.org ESMTP mailhop\r\n"
                    "250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 1000\r\n"
                    "250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n"
                    "250-XARRIVAL\r\n250 SMTPUTF8\r\n221 2.0.0 Bye\r\n");
  CHECK(r->closed);
  CHECK_STR(r->log, "HELO client.example\n");
  free(r);

  /* STARTTLS and AUTH advertised according to the options. */
  struct smtp_server_opts o = base_opts();
  o.starttls_available = 1;
  o.auth_available = 1;
  o.auth_require_tls = 1;
  r = run_opts(&o, EHLO, strlen(EHLO), 0);
  CHECK_CONTAINS(r->out, "250-STARTTLS\r\n");
  CHECK(!strstr(r->out, "AUTH"));
  free(r);
  o.auth_require_tls = 0;
  r = run_opts(&o, EHLO, strlen(EHLO), 0);
  CHECK_CONTAINS(r->out, "250-AUTH PLAIN LOGIN\r\n");
  free(r);
  o.tls_active = 1;
  o.auth_require_tls = 1;
  r = run_opts(&o, EHLO, strlen(EHLO), 0);
  CHECK(!strstr(r->out, "STARTTLS"));
  CHECK_CONTAINS(r->out, "250-AUTH PLAIN LOGIN\r\n");
  free(r);

  r = run_str("HELO c\r\n");
  CHECK_STR(replies(r), "250 mx.example.org\r\n");
  free(r);
}

/* One command (after EHLO, or MAIL when mail is set) and its reply. */
struct reply_case {
  const char *name;
  const char *in;
  const char *want; /* the last reply line(s) */
};

static const struct reply_case reply_cases[] = {
    {"helo_no_arg", "HELO\r\n", "501 Syntax: HELO hostname\r\n"},
    {"ehlo_no_arg", "EHLO\r\n", "501 Syntax: EHLO hostname\r\n"},
    {"unknown", "BLAH\r\n", "500 5.5.2 Error: command not recognized\r\n"},
    {"empty_line", "\r\n", "500 5.5.2 Error: command not recognized\r\n"},
    {"mail_before_helo", "MAIL FROM:<a@b>\r\n",
     "503 5.5.1 Error: send HELO/EHLO first\r\n"},
    {"rcpt_before_mail", EHLO "RCPT TO:<a@b>\r\n",
     "503 5.5.1 Error: need MAIL command\r\n"},
    {"data_before_mail", EHLO "DATA\r\n",
     "503 5.5.1 Error: need MAIL command\r\n"},
    {"data_before_rcpt", EHLO "MAIL FROM:<>\r\nDATA\r\n",
     "503 5.5.1 Error: need RCPT command\r\n"},
    {"nested_mail", EHLO "MAIL FROM:<>\r\nMAIL FROM:<>\r\n",
     "503 5.5.1 Error: nested MAIL command\r\n"},
    {"mail_syntax", EHLO "MAIL TO:<a@b>\r\n",
     "501 5.5.4 Syntax: MAIL FROM:<address>\r\n"},
    {"mail_bad_addr", EHLO "MAIL FROM:<a b@c>\r\n",
     "501 5.1.7 Bad sender address syntax\r\n"},
    {"mail_no_brackets", EHLO "MAIL FROM:a@b\r\n",
     "501 5.5.4 Syntax: MAIL FROM:<address>\r\n"},
    {"mail_ctrl", EHLO "MAIL FROM:<a\x01@b>\r\n",
     "501 5.1.7 Bad sender address syntax\r\n"},
    {"mail_unknown_param", EHLO "MAIL FROM:<a@b> FOO=bar\r\n",
     "555 5.5.4 Unsupported option\r\n"},
    {"mail_bad_body", EHLO "MAIL FROM:<a@b> BODY=BINARYMIME\r\n",
     "501 5.5.4 Bad parameter value\r\n"},
    {"mail_size_over", EHLO "MAIL FROM:<a@b> SIZE=1001\r\n",
     "552 5.3.4 Message size exceeds fixed limit\r\n"},
    {"mail_size_ok", EHLO "MAIL FROM:<a@b> SIZE=1000\r\n", "250 2.1.0 Ok\r\n"},
    {"mail_size_huge", EHLO "MAIL FROM:<a@b> SIZE=99999999999999999999999\r\n",
     "552 5.3.4 Message size exceeds fixed limit\r\n"},
    {"mail_utf8_undeclared", EHLO "MAIL FROM:<j\xc3\xb6@b>\r\n",
     "553 5.6.7 Must declare SMTPUTF8 to send unicode address\r\n"},
    {"mail_utf8_declared", EHLO "MAIL FROM:<j\xc3\xb6@b> SMTPUTF8\r\n",
     "250 2.1.0 Ok\r\n"},
    {"mail_bad_utf8", EHLO "MAIL FROM:<j\xc3@b> SMTPUTF8\r\n",
     "501 5.1.7 Bad sender address syntax\r\n"},
    {"mail_dsn", EHLO "MAIL FROM:<a@b> RET=HDRS ENVID=QQ+2B1 BODY=8BITMIME\r\n",
     "250 2.1.0 Ok\r\n"},
    {"mail_space_after_colon", EHLO "mail from: <a@b>\r\n", "250 2.1.0 Ok\r\n"},
    {"rcpt_null", EHLO "MAIL FROM:<>\r\nRCPT TO:<>\r\n",
     "501 5.1.3 Bad recipient address syntax\r\n"},
    {"rcpt_no_domain", EHLO "MAIL FROM:<>\r\nRCPT TO:<postmaster>\r\n",
     "501 5.1.3 Bad recipient address syntax\r\n"},
    {"rcpt_notify_never_mix",
     EHLO "MAIL FROM:<>\r\nRCPT TO:<a@b> NOTIFY=NEVER,DELAY\r\n",
     "501 5.5.4 NOTIFY=NEVER cannot be combined\r\n"},
    {"rcpt_unknown_param", EHLO "MAIL FROM:<>\r\nRCPT TO:<a@b> X=1\r\n",
     "555 5.5.4 Unsupported option\r\n"},
    {"rcpt_utf8_undeclared", EHLO "MAIL FROM:<>\r\nRCPT TO:<\xc3\xa9@b>\r\n",
     "553 5.6.7 Must declare SMTPUTF8 to send unicode address\r\n"},
    {"rcpt_dsn",
     EHLO "MAIL FROM:<>\r\nRCPT TO:<a@b> NOTIFY=SUCCESS,FAILURE "
          "ORCPT=rfc822;a+40b\r\n",
     "250 2.1.5 Ok\r\n"},
    {"rcpt_source_route", EHLO "MAIL FROM:<>\r\nRCPT TO:<@r1,@r2:a@b>\r\n",
     "250 2.1.5 Ok\r\n"},
    {"too_many_rcpts",
     EHLO "MAIL FROM:<>\r\nRCPT TO:<a@b>\r\nRCPT TO:<c@b>\r\nRCPT "
          "TO:<d@b>\r\nRCPT TO:<e@b>\r\n",
     "452 4.5.3 Error: too many recipients\r\n"},
    {"rset", EHLO "MAIL FROM:<>\r\nRSET\r\nRCPT TO:<a@b>\r\n",
     "250 2.0.0 Ok\r\n503 5.5.1 Error: need MAIL command\r\n"},
    {"rset_arg", "RSET x\r\n", "501 5.5.4 Syntax: RSET\r\n"},
    {"noop", "NOOP\r\n", "250 2.0.0 Ok\r\n"},
    {"vrfy", "VRFY bob\r\n",
     "252 2.5.0 Cannot VRFY user, but will accept message and attempt "
     "delivery\r\n"},
    {"vrfy_no_arg", "VRFY\r\n", "501 5.5.4 Syntax: VRFY address\r\n"},
    {"expn", "EXPN list\r\n",
     "502 5.5.1 Error: EXPN is not offered by this relay\r\n"},
    {"help", "HELP\r\n",
     "214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY "
     "HELP\r\n"},
    {"quit", "QUIT\r\n", "221 2.0.0 Bye\r\n"},
    {"starttls_unavailable", "STARTTLS\r\n",
     "502 5.5.1 Error: STARTTLS is not offered\r\n"},
    {"auth_unavailable", EHLO "AUTH PLAIN\r\n",
     "503 5.5.1 Error: authentication not enabled\r\n"},
    {"data_arg", EHLO "MAIL FROM:<>\r\nRCPT TO:<a@b>\r\nDATA x\r\n",
     "501 5.5.4 Syntax: DATA\r\n"},
    {"bare_lf_command", "NOOP\n", "250 2.0.0 Ok\r\n"},
    {"lowercase", "noop\r\n", "250 2.0.0 Ok\r\n"},
};

static int ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && strcmp(s + a - b, suffix) == 0;
}

static void test_reply_table(void) {
  for (size_t i = 0; i < sizeof(reply_cases) / sizeof(reply_cases[0]); i++) {
    const struct reply_case *c = &reply_cases[i];
    struct run *r = run_str(c->in);
    if (!ends_with(r->out, c->want)) {
      check_failures++;
      fprintf(stderr, "case %s: output\n%s\ndoes not end with\n%s\n", c->name,
              r->out, c->want);
    }
    check_count++;
    free(r);
  }
}

static void test_relay_and_sender_domains(void) {
  struct smtp_server_opts o = base_opts();
  o.relay_allowed = 0;
  const char *in = ENV;
  struct run *r = run_opts(&o, in, strlen(in), 0);
  CHECK(ends_with(r->out, "554 5.7.1 <x@y.example>: Relay access denied\r\n"));
  CHECK(!strstr(r->log, "RCPT"));
  free(r);

  const char *doms[] = {"Example.COM", "other.org"};
  o = base_opts();
  o.allowed_sender_domains = doms;
  o.n_allowed_sender_domains = 2;
  in = EHLO "MAIL FROM:<a@sub.example.com>\r\nMAIL FROM:<a@EXAMPLE.com>\r\n"
            "RSET\r\nMAIL FROM:<>\r\nRSET\r\nMAIL FROM:<postmaster>\r\n";
  r = run_opts(&o, in, strlen(in), 0);
  CHECK_CONTAINS(r->out, "553 5.7.1 <a@sub.example.com>: Sender address "
                         "rejected: not allowed\r\n250 2.1.0 Ok\r\n250 2.0.0 "
                         "Ok\r\n250 2.1.0 Ok\r\n250 2.0.0 Ok\r\n553 5.7.1");
  free(r);
}

static void test_pipelining_and_bytewise(void) {
  const char *in = ENV "RCPT TO:<z@y.example>\r\nDATA\r\nSubject: "
                       "hi\r\n\r\nbody\r\n..dot\r\n.\r\nNOOP\r\nQUIT\r\n";
  struct smtp_server_opts o = base_opts();
  struct run *all = run_opts(&o, in, strlen(in), 0);
  CHECK_STR(replies(all), ENV_REPLIES "250 2.1.5 Ok\r\n354 End data with "
                                      "<CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: "
                                      "queued as QID1\r\n250 2.0.0 Ok\r\n221 "
                                      "2.0.0 Bye\r\n");
  CHECK_STR(all->log, "HELO c\nMAIL <a@b.example>\nRCPT <x@y.example>\nRCPT "
                      "<z@y.example>\nSTART\nEND 27\n");
  CHECK_STR(all->data, "Subject: hi\r\n\r\nbody\r\n.dot\r\n");
  for (size_t step = 1; step < 8; step++) {
    struct run *r = run_opts(&o, in, strlen(in), step);
    CHECK_STR(r->out, all->out);
    CHECK_STR(r->log, all->log);
    CHECK_STR(r->data, all->data);
    free(r);
  }
  free(all);
}

static void test_want_flush(void) {
  struct smtp_server_opts o = base_opts();
  struct smtp_server *s = smtp_server_new(&o);
  size_t n;
  smtp_server_output(s, &n);
  smtp_server_output_consumed(s, n);
  const char *in = "EHLO c\r\n";
  CHECK_INT(smtp_server_feed(s, in, strlen(in)), strlen(in));
  CHECK(smtp_server_want_flush(s)); /* EHLO ends a group */
  struct smtp_event ev;
  while (smtp_server_event(s, &ev))
    ;
  smtp_server_output(s, &n);
  smtp_server_output_consumed(s, n);
  in = "MAIL FROM:<a@b>\r\n";
  CHECK_INT(smtp_server_feed(s, in, strlen(in)), strlen(in));
  CHECK(!smtp_server_want_flush(s)); /* MAIL may be followed by more */
  smtp_server_free(s);
}

/* Every smuggling payload: an attempt to end DATA and start a second
 * message with something other than CRLF.CRLF.  Each must stay inside
 * the one message (normalized), and the hidden commands never run. */
static const char *const smuggle[] = {
    "\n.\n",     "\n.\r\n",   "\r.\r\n",       "\r\n.\r",   "\r\n.\n",
    "\r.\n",     "\n.\r",     "\r.\r",         "\r\n.\r\r", "\r\n..\r\n",
    "\r\n.\n\r", "\r\n \r\n", "\r\n.\x00\r\n",
};

static void test_smuggling(void) {
  for (size_t i = 0; i < sizeof(smuggle) / sizeof(smuggle[0]); i++) {
    char in[1024];
    size_t k = 0;
    const char *pre = ENV "DATA\r\nSubject: a\r\n\r\nfirst";
    memcpy(in + k, pre, strlen(pre));
    k += strlen(pre);
    size_t pl = strlen(smuggle[i]);
    if (i == sizeof(smuggle) / sizeof(smuggle[0]) - 1)
      pl = 6; /* includes the NUL */
    memcpy(in + k, smuggle[i], pl);
    k += pl;
    const char *post = "MAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\n"
                       "smuggled\r\n.\r\n";
    memcpy(in + k, post, strlen(post));
    k += strlen(post);
    struct smtp_server_opts o = base_opts();
    struct run *r = run_opts(&o, in, k, 0);
    /* Exactly one message, one queued reply, no evil MAIL event. */
    if (!ends_with(r->out, "354 End data with <CR><LF>.<CR><LF>\r\n"
                           "250 2.0.0 Ok: queued as QID1\r\n") ||
        strstr(r->log, "evil")) {
      check_failures++;
      fprintf(stderr, "smuggle case %zu: out=\n%s\nlog=\n%s\n", i, r->out,
              r->log);
    }
    check_count++;
    CHECK(memmem(r->data, r->data_len, "\r\nMAIL FROM:<evil@x>\r\n", 22));
    /* Every line ending in the stored data is CRLF. */
    for (size_t j = 0; j < r->data_len; j++) {
      if (r->data[j] == '\n')
        CHECK(j > 0 && r->data[j - 1] == '\r');
      if (r->data[j] == '\r')
        CHECK(j + 1 < r->data_len && r->data[j + 1] == '\n');
    }
    /* Byte by byte gives the same. */
    struct run *b = run_opts(&o, in, k, 1);
    CHECK_STR(b->out, r->out);
    CHECK_INT(b->data_len, r->data_len);
    CHECK(memcmp(b->data, r->data, r->data_len) == 0);
    free(b);
    free(r);
  }
}

static void test_data_framing(void) {
  /* Empty message: the DATA CRLF is the first CRLF of CRLF.CRLF. */
  struct run *r = run_str(ENV "DATA\r\n.\r\n");
  CHECK(ends_with(r->out, "250 2.0.0 Ok: queued as QID1\r\n"));
  CHECK_INT(r->data_len, 0);
  free(r);
  /* Bare LF normalized, dot-unstuffing. */
  r = run_str(ENV "DATA\r\na\nb\rc\r\n..\r\n.x\r\n.\r\n");
  CHECK_STR(r->data, "a\r\nb\r\nc\r\n.\r\nx\r\n");
  free(r);
  /* A data line without CRLF before the final dot: not the end. */
  r = run_str(ENV "DATA\r\nabc.\r\n.\r\n");
  CHECK_STR(r->data, "abc.\r\n");
  free(r);
  /* A DATA command ended by a bare LF does not provide the first CRLF. */
  r = run_str(ENV "DATA\n.\r\nx\r\n.\r\n");
  CHECK_STR(r->data, "\r\nx\r\n");
  free(r);
  /* Commit failure passes the caller's reply. */
  struct smtp_server_opts o = base_opts();
  struct run *rr = calloc(1, sizeof(*rr));
  rr->commit_ok = 0;
  struct smtp_server *s = smtp_server_new(&o);
  const char *in = ENV "DATA\r\nx\r\n.\r\nRSET\r\n";
  drive(s, rr, in, strlen(in), 0);
  CHECK(ends_with(rr->out, "452 4.3.1 Insufficient system storage\r\n250 "
                           "2.0.0 Ok\r\n"));
  smtp_server_free(s);
  free(rr);
  /* Big message: several chunks, all data arrives. */
  struct smtp_server_opts big = base_opts();
  big.max_message_size = 0;
  char *m = malloc(200000);
  size_t k = 0;
  memcpy(m, ENV "DATA\r\n", strlen(ENV "DATA\r\n"));
  k = strlen(ENV "DATA\r\n");
  for (int i = 0; i < 600; i++) {
    memcpy(m + k, "0123456789012345678901234567890123456789\r\n", 42);
    k += 42;
  }
  memcpy(m + k, ".\r\n", 3);
  k += 3;
  r = run_opts(&big, m, k, 0);
  CHECK(ends_with(r->out, "250 2.0.0 Ok: queued as QID1\r\n"));
  CHECK_INT(r->data_len, 600 * 42);
  free(r);
  free(m);
}

static void test_oversize(void) {
  /* Over 1000 octets, with commands hidden after the limit: none runs. */
  char in[8192];
  size_t k = 0;
  const char *pre = ENV "DATA\r\n";
  memcpy(in, pre, strlen(pre));
  k = strlen(pre);
  for (int i = 0; i < 30; i++) {
    memcpy(in + k, "0123456789012345678901234567890123456789\r\n", 42);
    k += 42;
  }
  const char *tail = "\r\nRSET\r\nMAIL FROM:<x@y>\r\nQUIT\r\n.\r\nNOOP\r\n";
  memcpy(in + k, tail, strlen(tail));
  k += strlen(tail);
  struct smtp_server_opts o = base_opts();
  for (size_t step = 0; step < 3; step++) {
    struct run *r = run_opts(&o, in, k, step);
    CHECK(ends_with(r->out, "354 End data with <CR><LF>.<CR><LF>\r\n"
                            "552 5.3.4 Error: message file too big\r\n"
                            "250 2.0.0 Ok\r\n"));
    CHECK(!strstr(r->log, "<x@y>"));
    CHECK(!strstr(r->log, "END"));
    CHECK_CONTAINS(r->log, "ABORT 552\n");
    CHECK(!r->closed);
    free(r);
  }
}

static void test_mail_loop(void) {
  char in[8192];
  size_t k = 0;
  const char *pre = ENV "DATA\r\n";
  memcpy(in, pre, strlen(pre));
  k = strlen(pre);
  for (int i = 0; i < 51; i++) {
    memcpy(in + k, "Received: x\r\n", 13);
    k += 13;
  }
  memcpy(in + k, "\r\nb\r\n.\r\n", 8);
  k += 8;
  struct smtp_server_opts o = base_opts();
  o.max_message_size = 0;
  struct run *r = run_opts(&o, in, k, 0);
  CHECK(ends_with(r->out, "554 5.4.6 Error: too many hops\r\n"));
  CHECK_CONTAINS(r->log, "ABORT 554\n");
  free(r);
  /* 50 is fine. */
  k = strlen(pre) + 50 * 13;
  memcpy(in + k, "\r\nb\r\n.\r\n", 8);
  k += 8;
  r = run_opts(&o, in, k, 0);
  CHECK(ends_with(r->out, "250 2.0.0 Ok: queued as QID1\r\n"));
  free(r);
}

static void test_header_facts(void) {
  struct smtp_server_opts o = base_opts();
  struct smtp_server *s = smtp_server_new(&o);
  const char *in = ENV "DATA\r\nReceived: a\r\nDATE: now\r\nmessage-id: "
                       "<x>\r\n\r\nReceived: not a header\xc3\xa9\r\n.\r\n";
  size_t off = 0;
  int got_end = 0;
  while (off < strlen(in)) {
    off += smtp_server_feed(s, in + off, strlen(in) - off);
    struct smtp_event ev;
    while (smtp_server_event(s, &ev)) {
      if (ev.type == SMTP_SRV_EV_DATA_END) {
        got_end = 1;
        CHECK_INT(ev.end.received_count, 1);
        CHECK(ev.end.has_date);
        CHECK(ev.end.has_message_id);
        CHECK(ev.end.eight_bit);
        smtp_server_commit_done(s, 1, "Q");
      }
    }
  }
  CHECK(got_end);
  smtp_server_free(s);
}

static void test_long_lines(void) {
  char in[20000];
  /* 511 octets + CRLF = 513 > 512: refused. */
  memset(in, 'x', sizeof(in));
  memcpy(in, "NOOP ", 5);
  memcpy(in + 511, "\r\nNOOP\r\n", 9);
  struct run *r = run_str(in);
  CHECK_STR(replies(r), "500 5.5.2 Error: line too long\r\n250 2.0.0 Ok\r\n");
  free(r);
  /* 510 + CRLF = 512: fine. */
  memcpy(in + 510, "\r\nNOOP\r\n", 9);
  r = run_str(in);
  CHECK_STR(replies(r), "250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n");
  free(r);
  /* Longer than any buffer: the rest is discarded to its LF. */
  memset(in, 'x', sizeof(in));
  memcpy(in, "MAIL FROM:<", 11);
  memcpy(in + 15000, "\r\nNOOP\r\n", 9);
  for (size_t step = 0; step < 2; step++) {
    struct smtp_server_opts o = base_opts();
    r = run_opts(&o, in, strlen(in), step ? 4096 : 0);
    CHECK_STR(replies(r), "500 5.5.2 Error: line too long\r\n250 2.0.0 Ok\r\n");
    free(r);
  }
  /* MAIL may be longer than 512 with parameters. */
  char mail[1500];
  snprintf(mail, sizeof(mail), EHLO "MAIL FROM:<a@b> ENVID=%0600d\r\n", 0);
  r = run_str(mail);
  CHECK(ends_with(r->out, "501 5.5.4 Bad parameter value\r\n")); /* >100 */
  free(r);
  char ok[1500];
  snprintf(ok, sizeof(ok),
           EHLO "MAIL FROM:<a@b>\r\nRCPT TO:<c@d> ORCPT=rfc822;%0480d@x\r\n",
           0);
  r = run_str(ok);
  CHECK(ends_with(r->out, "250 2.1.5 Ok\r\n"));
  free(r);
}

static void test_error_limit(void) {
  char in[4096] = "";
  for (int i = 0; i < 25; i++)
    strcat(in, "BOGUS\r\n");
  struct run *r = run_str(in);
  /* 21 errors: the 21st is followed by 421, and nothing after. */
  int n500 = 0;
  for (const char *p = r->out; (p = strstr(p, "500 5.5.2")); p++)
    n500++;
  CHECK_INT(n500, 21);
  CHECK(ends_with(r->out, "500 5.5.2 Error: command not recognized\r\n"
                          "421 4.7.0 mx.example.org Error: too many "
                          "errors\r\n"));
  CHECK(r->closed);
  free(r);
}

static void test_starttls(void) {
  struct smtp_server_opts o = base_opts();
  o.starttls_available = 1;
  const char *first = EHLO "MAIL FROM:<a@b>\r\nSTARTTLS\r\n";
  const char *in = EHLO "MAIL FROM:<a@b>\r\nSTARTTLS\r\nMAIL FROM:<inj@x>\r\n";
  struct run *r = run_opts(&o, in, strlen(in), 0);
  /* feed stopped right after the STARTTLS line: the caller can discard. */
  CHECK_INT(r->starttls_consumed, strlen(first));
  CHECK(ends_with(r->out, "250 2.1.0 Ok\r\n220 2.0.0 Ready to start TLS\r\n"));
  free(r);

  /* After the handshake: HELO and MAIL state forgotten; no STARTTLS in
   * EHLO; STARTTLS again is refused. */
  struct smtp_server *s = smtp_server_new(&o);
  struct run *rr = calloc(1, sizeof(*rr));
  rr->commit_ok = rr->tls_on_starttls = 1;
  drive(s, rr, first, strlen(first), 0);
  CHECK_INT(smtp_server_tls(s), 1);
  CHECK(smtp_server_helo_name(s) == NULL);
  rr->out_len = 0;
  const char *after = "MAIL FROM:<a@b>\r\nEHLO c\r\nRCPT TO:<x@y>\r\n"
                      "MAIL FROM:<a@b>\r\nSTARTTLS\r\n";
  drive(s, rr, after, strlen(after), 0);
  CHECK(!strstr(rr->out, "STARTTLS\r\n"));
  CHECK_CONTAINS(rr->out, "503 5.5.1 Error: send HELO/EHLO first\r\n");
  CHECK_CONTAINS(rr->out, "250 SMTPUTF8\r\n503 5.5.1 Error: need MAIL "
                          "command\r\n250 2.1.0 Ok\r\n554 5.5.1 Error: TLS "
                          "already active\r\n");
  smtp_server_free(s);
  free(rr);
}

static void test_auth(void) {
  struct smtp_server_opts o = base_opts();
  o.auth_available = 1;
  o.auth_require_tls = 1;
  o.relay_allowed = 0;
  /* Require TLS, not in TLS: 538. */
  const char *in = EHLO "AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n";
  struct run *r = run_opts(&o, in, strlen(in), 0);
  CHECK(ends_with(r->out, "538 5.7.11 Encryption required for requested "
                          "authentication mechanism\r\n"));
  free(r);

  o.tls_active = 1;
  struct {
    const char *in, *want, *log;
  } cases[] = {
      /* PLAIN with initial response ("\0bob\0secret"). */
      {EHLO "AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n",
       "235 2.7.0 Authentication successful\r\n", "AUTH bob:secret\n"},
      /* PLAIN without: 334 then the response. */
      {EHLO "AUTH PLAIN\r\nAGJvYgBzZWNyZXQ=\r\n",
       "334 \r\n235 2.7.0 Authentication successful\r\n", "AUTH bob:secret\n"},
      /* Wrong password: 535. */
      {EHLO "AUTH PLAIN AGJvYgB3cm9uZw==\r\n",
       "535 5.7.8 Error: authentication failed\r\n", "AUTH bob:wrong\n"},
      /* authzid equal to authcid is fine. */
      {EHLO "AUTH PLAIN Ym9iAGJvYgBzZWNyZXQ=\r\n",
       "235 2.7.0 Authentication successful\r\n", "AUTH bob:secret\n"},
      /* another authzid: refused without asking. */
      {EHLO "AUTH PLAIN YWxpY2UAYm9iAHNlY3JldA==\r\n",
       "535 5.7.8 Error: authentication failed\r\n", ""},
      /* "=" is an empty initial response: malformed for PLAIN. */
      {EHLO "AUTH PLAIN =\r\n",
       "501 5.5.2 Error: invalid authentication data\r\n", ""},
      /* Cancel. */
      {EHLO "AUTH PLAIN\r\n*\r\n",
       "334 \r\n501 5.7.0 Authentication "
       "aborted\r\n",
       ""},
      {EHLO "AUTH PLAIN !!!!\r\n", "501 5.5.2 Error: invalid base64 data\r\n",
       ""},
      {EHLO "AUTH CRAM-MD5\r\n",
       "504 5.5.4 Unsupported authentication mechanism\r\n", ""},
      /* LOGIN exchange. */
      {EHLO "AUTH LOGIN\r\nYm9i\r\nc2VjcmV0\r\n",
       "334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 2.7.0 Authentication "
       "successful\r\n",
       "AUTH bob:secret\n"},
      {EHLO "AUTH LOGIN Ym9i\r\nc2VjcmV0\r\n",
       "334 UGFzc3dvcmQ6\r\n235 2.7.0 Authentication successful\r\n",
       "AUTH bob:secret\n"},
      {EHLO "AUTH LOGIN\r\n*\r\n",
       "334 VXNlcm5hbWU6\r\n501 5.7.0 Authentication aborted\r\n", ""},
      /* Authenticated: relay allowed; AUTH again refused. */
      {EHLO "AUTH PLAIN AGJvYgBzZWNyZXQ=\r\nMAIL FROM:<a@b>\r\nRCPT "
            "TO:<x@y>\r\nAUTH PLAIN\r\n",
       "250 2.1.5 Ok\r\n503 5.5.1 Error: already authenticated\r\n",
       "AUTH bob:secret\n"},
      /* Not authenticated: relay denied. */
      {EHLO "MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\n",
       "554 5.7.1 <x@y>: Relay access denied\r\n", ""},
      /* AUTH needs EHLO. */
      {"HELO c\r\nAUTH PLAIN\r\n", "503 5.5.1 Error: send EHLO first\r\n", ""},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    for (size_t step = 0; step < 2; step++) {
      r = run_opts(&o, cases[i].in, strlen(cases[i].in), step);
      if (!ends_with(r->out, cases[i].want)) {
        check_failures++;
        fprintf(stderr, "auth case %zu: out=\n%s\n", i, r->out);
      }
      check_count++;
      const char *a = strstr(r->log, "AUTH");
      const char *e = a ? strchr(a, '\n') : NULL;
      char line[256] = "";
      if (a && e)
        snprintf(line, sizeof(line), "%.*s", (int)(e - a + 1), a);
      CHECK_STR(line, cases[i].log);
      free(r);
    }
  }
}

static void test_error_limit_auth(void) {
  /* Bad credentials count as errors. */
  struct smtp_server_opts o = base_opts();
  o.auth_available = 1;
  o.tls_active = 1;
  o.max_errors = 2;
  const char *in = EHLO "AUTH PLAIN AGJvYgB4\r\nAUTH PLAIN AGJvYgB4\r\n"
                        "AUTH PLAIN AGJvYgB4\r\nNOOP\r\n";
  struct run *r = run_opts(&o, in, strlen(in), 0);
  CHECK(ends_with(r->out, "535 5.7.8 Error: authentication failed\r\n421 "
                          "4.7.0 mx.example.org Error: too many errors\r\n"));
  CHECK(r->closed);
  free(r);
}

static void test_dsn_events(void) {
  struct smtp_server_opts o = base_opts();
  struct smtp_server *s = smtp_server_new(&o);
  const char *in = "EHLO c\r\nMAIL FROM:<a@b> RET=FULL ENVID=id+2B1 "
                   "BODY=8BITMIME SIZE=10\r\nRCPT TO:<x@y> "
                   "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@b\r\n";
  size_t off = 0;
  int seen = 0;
  while (off < strlen(in)) {
    off += smtp_server_feed(s, in + off, strlen(in) - off);
    struct smtp_event ev;
    while (smtp_server_event(s, &ev)) {
      if (ev.type == SMTP_SRV_EV_MAIL) {
        seen |= 1;
        CHECK_STR(ev.mail.sender, "a@b");
        CHECK_INT(ev.mail.params->ret, DSN_RET_FULL);
        CHECK_STR(ev.mail.params->envid, "id+1");
        CHECK_INT(ev.mail.params->body, SMTP_BODY_8BITMIME);
        CHECK_INT(ev.mail.params->size, 10);
      } else if (ev.type == SMTP_SRV_EV_RCPT) {
        seen |= 2;
        CHECK_INT(ev.rcpt.params->notify,
                  DSN_NOTIFY_SUCCESS | DSN_NOTIFY_FAILURE);
        CHECK_STR(ev.rcpt.params->orcpt_type, "rfc822");
        CHECK_STR(ev.rcpt.params->orcpt_addr, "a@b");
      }
    }
  }
  CHECK_INT(seen, 3);
  smtp_server_free(s);
}

static void test_close(void) {
  struct smtp_server_opts o = base_opts();
  struct smtp_server *s = smtp_server_new(&o);
  const char *in = ENV "DATA\r\npartial";
  size_t off = 0;
  while (off < strlen(in)) {
    off += smtp_server_feed(s, in + off, strlen(in) - off);
    struct smtp_event ev;
    while (smtp_server_event(s, &ev))
      ;
  }
  smtp_server_close(s, SMTP_SRV_CLOSE_TIMEOUT);
  struct smtp_event ev;
  CHECK(smtp_server_event(s, &ev));
  CHECK_INT(ev.type, SMTP_SRV_EV_DATA_ABORT);
  size_t n;
  const char *out = smtp_server_output(s, &n);
  CHECK(n > 0 && strstr(out, "421 4.4.2 mx.example.org Error: timeout "
                             "exceeded\r\n") != NULL);
  CHECK(smtp_server_close_wanted(s));
  CHECK_INT(smtp_server_feed(s, "NOOP\r\n", 6), 0);
  smtp_server_free(s);
}

static void test_output_high_water(void) {
  /* A client that pipelines thousands of commands without reading: feed
   * stops at the high-water mark instead of growing the output. */
  struct smtp_server_opts o = base_opts();
  o.max_errors = 100000;
  struct smtp_server *s = smtp_server_new(&o);
  static char in[6 * 5000];
  for (int i = 0; i < 5000; i++)
    memcpy(in + i * 6, "NOOP\r\n", 6);
  size_t n = smtp_server_feed(s, in, sizeof(in));
  CHECK(n < sizeof(in));
  CHECK(smtp_server_blocked(s));
  CHECK(smtp_server_want_flush(s));
  size_t olen;
  smtp_server_output(s, &olen);
  CHECK(olen <= SMTP_SERVER_OUT_MAX);
  smtp_server_free(s);
}

int main(void) {
  test_xarrival();
  test_greeting_and_ehlo();
  test_reply_table();
  test_relay_and_sender_domains();
  test_pipelining_and_bytewise();
  test_want_flush();
  test_smuggling();
  test_data_framing();
  test_oversize();
  test_mail_loop();
  test_header_facts();
  test_long_lines();
  test_error_limit();
  test_starttls();
  test_auth();
  test_error_limit_auth();
  test_dsn_events();
  test_close();
  test_output_high_water();
  return check_result("test_smtp_server");
}
