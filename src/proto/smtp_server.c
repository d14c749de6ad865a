/*
 * smtp_server: the inbound SMTP session machine.  See smtp_server.h for
 * the contract.  Pure: no I/O, clock, logging; allocates only in
 * smtp_server_new.
 */
#include "proto/smtp_server.h"

#include "proto/message.h"
#include "proto/text.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_ERRORS 20
#define REPLY_MAX 1024 /* one reply line, CRLF included */
#define MAX_EVENTS 3

/* Where the DATA scanner stands; see feed_data. */
enum data_state {
  D_BOL,        /* beginning of a line */
  D_BOL_DOT,    /* a '.' at the beginning of a line (already dropped) */
  D_BOL_DOT_CR, /* ".\r" at the beginning of a line after a real CRLF */
  D_MID,        /* inside a line */
  D_MID_CR,     /* a CR inside a line: is it a CRLF? */
};

struct smtp_server {
  enum smtp_server_state st;

  /* Options, copied. */
  char hostname[256];
  uint64_t max_size;
  int max_rcpt;
  int max_errors;
  int starttls_avail;
  int auth_avail;
  int auth_require_tls;
  int relay_allowed;
  char **domains;
  int n_domains;

  /* Session facts. */
  int tls;
  int helo; /* 0 none, 1 HELO, 2 EHLO */
  char helo_name[SMTP_SERVER_HELO_MAX + 1];
  int authenticated;
  int errors;

  /* Transaction. */
  int in_mail;
  int mail_utf8;
  int nrcpt;
  int over_logged;    /* the max_recipients refusal was reported */
  uint64_t mail_size; /* SIZE= of the MAIL command, 0 if none */

  /* Bytes the queue can still take (smtp_server_set_room). */
  uint64_t room;

  /* Command line assembly (the buffer is at the end). */
  size_t line_len;
  int line_over; /* discarding an over-long line up to its LF */
  int cmd_crlf;  /* the last command line ended with CRLF */

  /* AUTH exchange. */
  enum smtp_server_auth_mech mech;
  int login_step; /* LOGIN: 0 wants user, 1 wants password */

  /* DATA. */
  enum data_state dstate;
  int dreal;    /* the last line ending was a real CRLF */
  int oversize; /* over max_size: discarding to end of data */
  uint64_t dsize;
  struct message_scan scan;
  size_t chunk_len;
  int chunk_out; /* a DATA_CHUNK event points into chunk */

  /* Events, a small FIFO. */
  struct smtp_event ev[MAX_EVENTS];
  int ev_head, ev_count;

  /* Replies (in b->out). */
  size_t out_len;
  int flush;
  int greet; /* the 220 greeting is still to be written */

  /* The working buffers: attached while data is in flight (see
   * smtp_server_detach), NULL while the session idles. */
  struct smtp_server_bufs *b;

  /* Last and not zeroed at allocation: written only after AUTH.  A name
   * longer than this is checked in full but recorded cut (it is only for
   * the caller's records); the bound keeps an idle session small. */
  char auth_user[SMTP_SERVER_AUTH_USER_MAX + 1];
};

/* What a session needs only while data is in flight: the command line,
 * the DATA chunk, the replies not yet taken, the AUTH exchange and the
 * parsed paths of the command being handled.  Not zeroed at allocation
 * (each part is used up to its length field). */
struct smtp_server_bufs {
  struct smtp_path sender;
  struct smtp_mail_params mp;
  struct smtp_path rcpt;
  struct smtp_rcpt_params rp;
  char auth_pass[SMTP_SERVER_AUTH_FIELD_MAX + 1];
  char auth_cid[SMTP_SERVER_AUTH_FIELD_MAX + 1];
  char line[SMTP_AUTH_LINE_MAX];
  char chunk[SMTP_SERVER_CHUNK_MAX];
  char out[SMTP_SERVER_OUT_MAX];
};

static const char *const state_names[] = {
    [SMTP_SRV_ST_CMD] = "cmd",
    [SMTP_SRV_ST_DATA] = "data",
    [SMTP_SRV_ST_AUTH_LINE] = "auth_line",
    [SMTP_SRV_ST_WAIT_COMMIT] = "wait_commit",
    [SMTP_SRV_ST_WAIT_AUTH] = "wait_auth",
    [SMTP_SRV_ST_WAIT_TLS] = "wait_tls",
    [SMTP_SRV_ST_CLOSED] = "closed",
};

const char *smtp_server_state_name(enum smtp_server_state st) {
  if ((unsigned)st < sizeof(state_names) / sizeof(state_names[0]))
    return state_names[st];
  return "?";
}

static const char *const event_names[] = {
    [SMTP_SRV_EV_NONE] = "none",
    [SMTP_SRV_EV_HELO] = "helo",
    [SMTP_SRV_EV_MAIL] = "mail",
    [SMTP_SRV_EV_RCPT] = "rcpt",
    [SMTP_SRV_EV_DATA_START] = "data_start",
    [SMTP_SRV_EV_DATA_CHUNK] = "data_chunk",
    [SMTP_SRV_EV_DATA_END] = "data_end",
    [SMTP_SRV_EV_DATA_ABORT] = "data_abort",
    [SMTP_SRV_EV_STARTTLS] = "starttls",
    [SMTP_SRV_EV_AUTH] = "auth",
    [SMTP_SRV_EV_REJECT] = "reject",
};

const char *smtp_server_event_name(enum smtp_server_event_type t) {
  if ((unsigned)t < sizeof(event_names) / sizeof(event_names[0]))
    return event_names[t];
  return "?";
}

/* The one state setter.  proto/ never logs; a caller wanting a trace of
 * "old -> new" compares smtp_server_state() around its calls. */
static void set_state(struct smtp_server *s, enum smtp_server_state st) {
  s->st = st;
}

/* Clears secrets (AUTH lines and passwords); explicit_bzero runs at
 * memset speed and is never optimized away. */
static void wipe(void *p, size_t n) {
  explicit_bzero(p, n);
}

/* ---- output ------------------------------------------------------------ */

static void vreply(struct smtp_server *s, const char *fmt, va_list ap) {
  char tmp[REPLY_MAX];
  int n = vsnprintf(tmp, sizeof(tmp) - 2, fmt, ap);
  if (n < 0)
    return;
  if ((size_t)n > sizeof(tmp) - 3)
    n = (int)(sizeof(tmp) - 3); /* truncated; still a whole line */
  tmp[n++] = '\r';
  tmp[n++] = '\n';
  /* The high-water mark leaves room for any one command's replies, so
   * this cannot fail; if it ever did, losing a reply would desynchronize
   * the client, so the session ends instead. */
  if (!s->b || s->out_len + (size_t)n > sizeof(s->b->out)) {
    set_state(s, SMTP_SRV_ST_CLOSED);
    return;
  }
  memcpy(s->b->out + s->out_len, tmp, (size_t)n);
  s->out_len += (size_t)n;
}

__attribute__((format(printf, 2, 3))) static void reply(struct smtp_server *s,
                                                        const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vreply(s, fmt, ap);
  va_end(ap);
}

/* A refusal that counts toward max_errors. */
__attribute__((format(printf, 2, 3))) static void
error_reply(struct smtp_server *s, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vreply(s, fmt, ap);
  va_end(ap);
  if (++s->errors > s->max_errors && s->st != SMTP_SRV_ST_CLOSED) {
    reply(s, "421 4.7.0 %s Error: too many errors", s->hostname);
    s->flush = 1;
    set_state(s, SMTP_SRV_ST_CLOSED);
  }
}

static struct smtp_event *push_event(struct smtp_server *s,
                                     enum smtp_server_event_type t) {
  /* At most MAX_EVENTS can be pending: feed stops at the first event, and
   * only end of data (chunk + end) or close (abort) add a second one. */
  if (s->ev_count >= MAX_EVENTS)
    abort(); /* our invariant, not peer input */
  struct smtp_event *ev = &s->ev[(s->ev_head + s->ev_count) % MAX_EVENTS];
  memset(ev, 0, sizeof(*ev));
  ev->type = t;
  s->ev_count++;
  return ev;
}

/* Tells the caller about a policy refusal, for its log.  Unless the error
 * limit just closed the session (its 421 is the news then). */
static void policy_reject(struct smtp_server *s, int code, const char *addr,
                          const char *reason) {
  if (s->st == SMTP_SRV_ST_CLOSED || s->ev_count >= MAX_EVENTS)
    return;
  struct smtp_event *ev = push_event(s, SMTP_SRV_EV_REJECT);
  ev->reject.code = code;
  ev->reject.addr = addr;
  ev->reject.reason = reason;
}

/* ---- life cycle ------------------------------------------------------- */

static void greet(struct smtp_server *s);

struct smtp_server_bufs *smtp_server_bufs_new(void) {
  return malloc(sizeof(struct smtp_server_bufs));
}

void smtp_server_bufs_free(struct smtp_server_bufs *b) {
  if (!b)
    return;
  wipe(b->auth_pass, sizeof(b->auth_pass));
  wipe(b->auth_cid, sizeof(b->auth_cid));
  free(b);
}

size_t smtp_server_bufs_size(void) {
  return sizeof(struct smtp_server_bufs);
}

struct smtp_server *smtp_server_new(const struct smtp_server_opts *o) {
  struct smtp_server *s = malloc(sizeof(*s));
  if (s)
    memset(s, 0, offsetof(struct smtp_server, auth_user));
  if (!s)
    return NULL;
  s->auth_user[0] = '\0';
  s->b = smtp_server_bufs_new();
  if (!s->b) {
    free(s);
    return NULL;
  }
  snprintf(s->hostname, sizeof(s->hostname), "%s",
           o->hostname && *o->hostname ? o->hostname : "localhost");
  s->max_size = o->max_message_size;
  s->max_rcpt = o->max_recipients;
  s->max_errors = o->max_errors > 0 ? o->max_errors : DEFAULT_MAX_ERRORS;
  s->tls = o->tls_active;
  s->starttls_avail = o->starttls_available && !o->tls_active;
  s->auth_avail = o->auth_available;
  s->auth_require_tls = o->auth_require_tls;
  s->relay_allowed = o->relay_allowed;
  s->room = UINT64_MAX;
  if (o->n_allowed_sender_domains > 0) {
    s->domains = calloc((size_t)o->n_allowed_sender_domains, sizeof(char *));
    if (!s->domains) {
      smtp_server_bufs_free(s->b);
      free(s);
      return NULL;
    }
    s->n_domains = o->n_allowed_sender_domains;
    for (int i = 0; i < s->n_domains; i++) {
      s->domains[i] = strdup(o->allowed_sender_domains[i]);
      if (!s->domains[i]) {
        smtp_server_free(s);
        return NULL;
      }
    }
  }
  set_state(s, SMTP_SRV_ST_CMD);
  greet(s);
  return s;
}

/* The 220 greeting, written once, as soon as there is an out buffer. */
static void greet(struct smtp_server *s) {
  if (!s->b) {
    s->greet = 1;
    return;
  }
  s->greet = 0;
  reply(s, "220 %s ESMTP mailhop", s->hostname);
  s->flush = 1;
}

void smtp_server_attach(struct smtp_server *s, struct smtp_server_bufs *b) {
  if (s->b || !b)
    return;
  s->b = b;
  if (s->greet)
    greet(s);
}

struct smtp_server_bufs *smtp_server_detach(struct smtp_server *s) {
  /* Needed while a line is partly read, replies or events wait, data or
   * an AUTH exchange is under way, or an answer is awaited. */
  if (!s->b || s->line_len || s->line_over || s->out_len || s->ev_count ||
      (s->st != SMTP_SRV_ST_CMD && s->st != SMTP_SRV_ST_CLOSED))
    return NULL;
  struct smtp_server_bufs *b = s->b;
  s->b = NULL;
  wipe(b->auth_pass, sizeof(b->auth_pass));
  return b;
}

int smtp_server_attached(const struct smtp_server *s) {
  return s->b != NULL;
}

void smtp_server_free(struct smtp_server *s) {
  if (!s)
    return;
  for (int i = 0; i < s->n_domains; i++)
    free(s->domains[i]);
  free(s->domains);
  if (s->b) {
    wipe(s->b->line, sizeof(s->b->line));
    smtp_server_bufs_free(s->b);
  }
  free(s);
}

static void txn_reset(struct smtp_server *s) {
  s->in_mail = 0;
  s->mail_utf8 = 0;
  s->nrcpt = 0;
  s->over_logged = 0;
}

/* ---- commands ------------------------------------------------------------ */

static int printable_ascii(const char *a, size_t n) {
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)a[i] < 32 || (unsigned char)a[i] > 126)
      return 0;
  return 1;
}

static void do_helo_ehlo(struct smtp_server *s, const char *a, size_t n,
                         int esmtp) {
  const char *verb = esmtp ? "EHLO" : "HELO";
  /* RFC 2034: no enhanced code in replies to HELO/EHLO. */
  if (n == 0 || !printable_ascii(a, n)) {
    error_reply(s, "501 Syntax: %s hostname", verb);
    return;
  }
  txn_reset(s);
  s->helo = esmtp ? 2 : 1;
  if (n > SMTP_SERVER_HELO_MAX)
    n = SMTP_SERVER_HELO_MAX;
  memcpy(s->helo_name, a, n);
  s->helo_name[n] = '\0';
  if (!esmtp) {
    reply(s, "250 %s", s->hostname);
  } else {
    reply(s, "250-%s", s->hostname);
    reply(s, "250-PIPELINING");
    if (s->max_size)
      reply(s, "250-SIZE %llu", (unsigned long long)s->max_size);
    else
      reply(s, "250-SIZE");
    if (s->starttls_avail && !s->tls)
      reply(s, "250-STARTTLS");
    if (s->auth_avail && (s->tls || !s->auth_require_tls))
      reply(s, "250-AUTH PLAIN LOGIN");
    reply(s, "250-ENHANCEDSTATUSCODES");
    reply(s, "250-8BITMIME");
    reply(s, "250-DSN");
    /* The fleet's hand-off (drain --to): only to clients that may relay. */
    if (s->relay_allowed)
      reply(s, "250-XARRIVAL");
    reply(s, "250 SMTPUTF8");
  }
  struct smtp_event *ev = push_event(s, SMTP_SRV_EV_HELO);
  ev->helo.name = s->helo_name;
  ev->helo.esmtp = esmtp;
}

static void cmd_helo(struct smtp_server *s, const char *a, size_t n) {
  do_helo_ehlo(s, a, n, 0);
}

static void cmd_ehlo(struct smtp_server *s, const char *a, size_t n) {
  do_helo_ehlo(s, a, n, 1);
}

static int sender_domain_allowed(const struct smtp_server *s,
                                 const struct smtp_path *p) {
  if (s->n_domains == 0 || p->is_null)
    return 1;
  if (p->at >= p->len)
    return 0;
  const char *d = p->addr + p->at + 1;
  size_t dl = p->len - p->at - 1;
  for (int i = 0; i < s->n_domains; i++)
    if (strlen(s->domains[i]) == dl && text_casecmp(d, s->domains[i], dl) == 0)
      return 1;
  return 0;
}

/* The reply to a MAIL or RCPT argument the parser refused; bad_addr is
 * the reply for an address inside its brackets that is malformed. */
static void path_error(struct smtp_server *s, int r, const char *bad_addr,
                       const char *syntax) {
  switch (r) {
  case SMTP_PARSE_EADDR:
  case SMTP_PARSE_ENODOMAIN:
  case SMTP_PARSE_ENULL:
    error_reply(s, "%s", bad_addr);
    break;
  case SMTP_PARSE_EPARAM:
    error_reply(s, "555 5.5.4 Unsupported option");
    break;
  case SMTP_PARSE_ENOTIFY:
    error_reply(s, "501 5.5.4 NOTIFY=NEVER cannot be combined");
    break;
  case SMTP_PARSE_EVALUE:
    error_reply(s, "501 5.5.4 Bad parameter value");
    break;
  default:
    error_reply(s, "%s", syntax);
    break;
  }
}

static void cmd_mail(struct smtp_server *s, const char *a, size_t n) {
  if (!s->helo) {
    error_reply(s, "503 5.5.1 Error: send HELO/EHLO first");
    return;
  }
  if (s->in_mail) {
    error_reply(s, "503 5.5.1 Error: nested MAIL command");
    return;
  }
  int r = smtp_parse_mail(a, n, &s->b->sender, &s->b->mp);
  if (r != SMTP_PARSE_OK) {
    path_error(s, r, "501 5.1.7 Bad sender address syntax",
               "501 5.5.4 Syntax: MAIL FROM:<address>");
    return;
  }
  if (s->b->mp.has_arrival && !s->relay_allowed) {
    error_reply(s, "555 5.5.4 Error: XARRIVAL not offered");
    return;
  }
  if (s->max_size && s->b->mp.has_size && s->b->mp.size > s->max_size) {
    error_reply(s, "552 5.3.4 Message size exceeds fixed limit");
    policy_reject(s, 552, s->b->sender.addr,
                  "declared SIZE over max_message_size");
    return;
  }
  /* RFC 1870 §6.1 / CONTRACT queue_minfree: refuse before the disk is
   * full, so that what is queued can still be delivered and recorded. */
  if (s->room == 0 || (s->b->mp.has_size && s->b->mp.size > s->room)) {
    reply(s, "452 4.3.1 Insufficient system storage");
    policy_reject(s, 452, s->b->sender.addr,
                  s->room == 0 ? "queue_minfree"
                               : "queue_minfree (declared SIZE)");
    return;
  }
  if (s->b->sender.has_utf8 && !s->b->mp.smtputf8) {
    error_reply(s, "553 5.6.7 Must declare SMTPUTF8 to send unicode address");
    return;
  }
  if (!sender_domain_allowed(s, &s->b->sender)) {
    error_reply(s, "553 5.7.1 <%s>: Sender address rejected: not allowed",
                s->b->sender.addr);
    policy_reject(s, 553, s->b->sender.addr, "sender domain not allowed");
    return;
  }
  s->in_mail = 1;
  s->mail_size = s->b->mp.has_size ? s->b->mp.size : 0;
  s->mail_utf8 = s->b->mp.smtputf8;
  s->nrcpt = 0;
  reply(s, "250 2.1.0 Ok");
  struct smtp_event *ev = push_event(s, SMTP_SRV_EV_MAIL);
  ev->mail.sender = s->b->sender.addr;
  ev->mail.params = &s->b->mp;
}

static void cmd_rcpt(struct smtp_server *s, const char *a, size_t n) {
  if (!s->in_mail) {
    error_reply(s, "503 5.5.1 Error: need MAIL command");
    return;
  }
  int r = smtp_parse_rcpt(a, n, SMTP_PATH_NEED_DOMAIN, &s->b->rcpt, &s->b->rp);
  if (r != SMTP_PARSE_OK) {
    path_error(s, r, "501 5.1.3 Bad recipient address syntax",
               "501 5.5.4 Syntax: RCPT TO:<address>");
    return;
  }
  if (s->b->rcpt.has_utf8 && !s->mail_utf8) {
    error_reply(s, "553 5.6.7 Must declare SMTPUTF8 to send unicode address");
    return;
  }
  if (s->max_rcpt > 0 && s->nrcpt >= s->max_rcpt) {
    /* Not an error toward max_errors: a well-behaved client sending a
     * long list gets this once per extra recipient (RFC 5321 §4.5.3.1.10).
     */
    reply(s, "452 4.5.3 Error: too many recipients");
    /* Once per transaction: the client may go on listing recipients
     * (this is no error toward max_errors), the log need not. */
    if (!s->over_logged)
      policy_reject(s, 452, s->b->rcpt.addr, "max_recipients");
    s->over_logged = 1;
    return;
  }
  if (!s->relay_allowed && !s->authenticated) {
    error_reply(s, "554 5.7.1 <%s>: Relay access denied", s->b->rcpt.addr);
    policy_reject(s, 554, s->b->rcpt.addr, "relay access denied");
    return;
  }
  s->nrcpt++;
  reply(s, "250 2.1.5 Ok");
  struct smtp_event *ev = push_event(s, SMTP_SRV_EV_RCPT);
  ev->rcpt.addr = s->b->rcpt.addr;
  ev->rcpt.params = &s->b->rp;
}

static void cmd_data(struct smtp_server *s, const char *a, size_t n) {
  (void)a;
  if (n) {
    error_reply(s, "501 5.5.4 Syntax: DATA");
    return;
  }
  if (!s->in_mail) {
    error_reply(s, "503 5.5.1 Error: need MAIL command");
    return;
  }
  if (s->nrcpt == 0) {
    error_reply(s, "503 5.5.1 Error: need RCPT command");
    return;
  }
  /* Before 354: room for the message twice over (the spool file, then
   * its copy in the database), by its declared size or else the limit. */
  uint64_t need = s->mail_size ? s->mail_size : s->max_size;
  if (s->room != UINT64_MAX && (s->room == 0 || (need && need > s->room / 2))) {
    txn_reset(s);
    reply(s, "452 4.3.1 Insufficient system storage");
    policy_reject(s, 452, "", "queue_minfree (no room for the message)");
    return;
  }
  reply(s, "354 End data with <CR><LF>.<CR><LF>");
  set_state(s, SMTP_SRV_ST_DATA);
  /* RFC 5321 §4.1.1.4: the CRLF that ends DATA is the first CRLF of
   * CRLF.CRLF for an empty message. */
  s->dstate = D_BOL;
  s->dreal = s->cmd_crlf;
  s->oversize = 0;
  s->dsize = 0;
  s->chunk_len = 0;
  s->chunk_out = 0;
  message_scan_init(&s->scan);
  push_event(s, SMTP_SRV_EV_DATA_START);
}

static void cmd_rset(struct smtp_server *s, const char *a, size_t n) {
  (void)a;
  if (n) {
    error_reply(s, "501 5.5.4 Syntax: RSET");
    return;
  }
  txn_reset(s);
  reply(s, "250 2.0.0 Ok");
}

static void cmd_noop(struct smtp_server *s, const char *a, size_t n) {
  (void)a, (void)n; /* RFC 5321 §4.1.1.9: a parameter is ignored */
  reply(s, "250 2.0.0 Ok");
}

static void cmd_quit(struct smtp_server *s, const char *a, size_t n) {
  (void)a, (void)n;
  reply(s, "221 2.0.0 Bye");
  set_state(s, SMTP_SRV_ST_CLOSED);
}

static void cmd_vrfy(struct smtp_server *s, const char *a, size_t n) {
  (void)a;
  if (n == 0) {
    error_reply(s, "501 5.5.4 Syntax: VRFY address");
    return;
  }
  reply(s, "252 2.5.0 Cannot VRFY user, but will accept message and "
           "attempt delivery");
}

static void cmd_expn(struct smtp_server *s, const char *a, size_t n) {
  (void)a, (void)n;
  /* A relay has no lists to expand (RFC 5321 §3.5.2 allows refusing). */
  error_reply(s, "502 5.5.1 Error: EXPN is not offered by this relay");
}

static void cmd_help(struct smtp_server *s, const char *a, size_t n) {
  (void)a, (void)n;
  reply(s,
        "214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT "
        "VRFY HELP%s%s",
        s->starttls_avail && !s->tls ? " STARTTLS" : "",
        s->auth_avail ? " AUTH" : "");
}

static void cmd_starttls(struct smtp_server *s, const char *a, size_t n) {
  (void)a;
  if (s->tls) {
    error_reply(s, "554 5.5.1 Error: TLS already active");
    return;
  }
  if (!s->starttls_avail) {
    error_reply(s, "502 5.5.1 Error: STARTTLS is not offered");
    return;
  }
  if (n) {
    error_reply(s, "501 5.5.4 Syntax: STARTTLS");
    return;
  }
  reply(s, "220 2.0.0 Ready to start TLS");
  set_state(s, SMTP_SRV_ST_WAIT_TLS);
  push_event(s, SMTP_SRV_EV_STARTTLS);
}

/* Finishes a successful decode: hand the credentials to the caller. */
static void auth_ask(struct smtp_server *s) {
  set_state(s, SMTP_SRV_ST_WAIT_AUTH);
  struct smtp_event *ev = push_event(s, SMTP_SRV_EV_AUTH);
  ev->auth.mech = s->mech;
  ev->auth.user = s->b->auth_cid;
  ev->auth.pass = s->b->auth_pass;
}

/* Copies a decoded field (no NUL allowed inside) into dst.  0 or -1. */
static int auth_field(char *dst, const unsigned char *src, size_t n) {
  if (n > SMTP_SERVER_AUTH_FIELD_MAX || memchr(src, '\0', n))
    return -1;
  memcpy(dst, src, n);
  dst[n] = '\0';
  return 0;
}

/* Handles one client response (initial or continuation), base64 text. */
static void auth_response(struct smtp_server *s, const char *b64, size_t n) {
  unsigned char *dec = (unsigned char *)s->b->chunk; /* scratch, no DATA now */
  int dl = smtp_base64_decode(dec, sizeof(s->b->chunk), b64, n);
  if (dl < 0) {
    set_state(s, SMTP_SRV_ST_CMD);
    error_reply(s, "501 5.5.2 Error: invalid base64 data");
    return;
  }
  if (s->mech == SMTP_SRV_AUTH_PLAIN) {
    /* RFC 4616: [authzid] NUL authcid NUL passwd */
    unsigned char *z1 = memchr(dec, '\0', (size_t)dl);
    unsigned char *z2 =
        z1 ? memchr(z1 + 1, '\0', (size_t)(dec + dl - (z1 + 1))) : NULL;
    if (!z1 || !z2 ||
        auth_field(s->b->auth_cid, z1 + 1, (size_t)(z2 - z1 - 1)) ||
        auth_field(s->b->auth_pass, z2 + 1, (size_t)(dec + dl - (z2 + 1)))) {
      wipe(dec, (size_t)dl);
      set_state(s, SMTP_SRV_ST_CMD);
      error_reply(s, "501 5.5.2 Error: invalid authentication data");
      return;
    }
    size_t zl = (size_t)(z1 - dec);
    /* Acting for another identity is not supported. */
    int proxy = zl && (zl != strlen(s->b->auth_cid) ||
                       memcmp(dec, s->b->auth_cid, zl) != 0);
    wipe(dec, (size_t)dl);
    if (proxy || !s->b->auth_cid[0]) {
      wipe(s->b->auth_pass, sizeof(s->b->auth_pass));
      set_state(s, SMTP_SRV_ST_CMD);
      error_reply(s, "535 5.7.8 Error: authentication failed");
      return;
    }
    auth_ask(s);
    return;
  }
  /* LOGIN */
  char *dst = s->login_step == 0 ? s->b->auth_cid : s->b->auth_pass;
  int bad = auth_field(dst, dec, (size_t)dl);
  wipe(dec, (size_t)dl);
  if (bad) {
    wipe(s->b->auth_pass, sizeof(s->b->auth_pass));
    set_state(s, SMTP_SRV_ST_CMD);
    error_reply(s, "501 5.5.2 Error: invalid authentication data");
    return;
  }
  if (s->login_step == 0) {
    s->login_step = 1;
    set_state(s, SMTP_SRV_ST_AUTH_LINE);
    reply(s, "334 UGFzc3dvcmQ6"); /* "Password:" */
    return;
  }
  auth_ask(s);
}

static void cmd_auth(struct smtp_server *s, const char *a, size_t n) {
  if (!s->auth_avail) {
    error_reply(s, "503 5.5.1 Error: authentication not enabled");
    return;
  }
  if (s->auth_require_tls && !s->tls) {
    error_reply(s, "538 5.7.11 Encryption required for requested "
                   "authentication mechanism");
    return;
  }
  if (s->helo != 2) {
    error_reply(s, "503 5.5.1 Error: send EHLO first");
    return;
  }
  if (s->authenticated) {
    error_reply(s, "503 5.5.1 Error: already authenticated");
    return;
  }
  if (s->in_mail) {
    error_reply(s, "503 5.5.1 Error: MAIL transaction in progress");
    return;
  }
  size_t w = 0;
  while (w < n && a[w] != ' ')
    w++;
  const char *ir = a + w;
  size_t irn = n - w;
  while (irn && *ir == ' ')
    ir++, irn--;
  for (size_t i = 0; i < irn; i++)
    if (ir[i] == ' ') {
      error_reply(s, "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
      return;
    }
  if (w == 5 && text_casecmp(a, "PLAIN", 5) == 0) {
    s->mech = SMTP_SRV_AUTH_PLAIN;
  } else if (w == 5 && text_casecmp(a, "LOGIN", 5) == 0) {
    s->mech = SMTP_SRV_AUTH_LOGIN;
  } else if (w == 0) {
    error_reply(s, "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
    return;
  } else {
    error_reply(s, "504 5.5.4 Unsupported authentication mechanism");
    return;
  }
  s->login_step = 0;
  s->b->auth_cid[0] = '\0';
  s->b->auth_pass[0] = '\0';
  if (irn == 0) {
    set_state(s, SMTP_SRV_ST_AUTH_LINE);
    if (s->mech == SMTP_SRV_AUTH_PLAIN)
      reply(s, "334 ");
    else
      reply(s, "334 VXNlcm5hbWU6"); /* "Username:" */
    return;
  }
  /* RFC 4954 §4: "=" is an empty initial response. */
  if (irn == 1 && ir[0] == '=')
    irn = 0;
  auth_response(s, ir, irn);
}

static void auth_line(struct smtp_server *s, const char *l, size_t n) {
  if (n == 1 && l[0] == '*') {
    wipe(s->b->auth_pass, sizeof(s->b->auth_pass));
    set_state(s, SMTP_SRV_ST_CMD);
    error_reply(s, "501 5.7.0 Authentication aborted");
    return;
  }
  auth_response(s, l, n);
}

#define CMD_ENDS_GROUP 1u

static const struct command {
  enum smtp_verb verb;
  void (*fn)(struct smtp_server *s, const char *args, size_t n);
  size_t line_max; /* octets including CRLF */
  unsigned flags;
} commands[] = {
    {SMTP_VERB_HELO, cmd_helo, SMTP_CMD_LINE_MAX, CMD_ENDS_GROUP},
    {SMTP_VERB_EHLO, cmd_ehlo, SMTP_CMD_LINE_MAX, CMD_ENDS_GROUP},
    {SMTP_VERB_MAIL, cmd_mail, SMTP_MAILRCPT_LINE_MAX, 0},
    {SMTP_VERB_RCPT, cmd_rcpt, SMTP_MAILRCPT_LINE_MAX, 0},
    {SMTP_VERB_DATA, cmd_data, SMTP_CMD_LINE_MAX, CMD_ENDS_GROUP},
    {SMTP_VERB_RSET, cmd_rset, SMTP_CMD_LINE_MAX, 0},
    {SMTP_VERB_NOOP, cmd_noop, SMTP_CMD_LINE_MAX, CMD_ENDS_GROUP},
    {SMTP_VERB_QUIT, cmd_quit, SMTP_CMD_LINE_MAX, CMD_ENDS_GROUP},
    {SMTP_VERB_VRFY, cmd_vrfy, SMTP_CMD_LINE_MAX, CMD_ENDS_GROUP},
    {SMTP_VERB_EXPN, cmd_expn, SMTP_CMD_LINE_MAX, CMD_ENDS_GROUP},
    {SMTP_VERB_HELP, cmd_help, SMTP_CMD_LINE_MAX, CMD_ENDS_GROUP},
    {SMTP_VERB_STARTTLS, cmd_starttls, SMTP_CMD_LINE_MAX, CMD_ENDS_GROUP},
    {SMTP_VERB_AUTH, cmd_auth, SMTP_AUTH_LINE_MAX, CMD_ENDS_GROUP},
};

/* One complete line (LF and CR stripped by the caller). */
static void process_line(struct smtp_server *s, const char *l, size_t n) {
  if (s->st == SMTP_SRV_ST_AUTH_LINE) {
    s->flush = 1;
    auth_line(s, l, n);
    return;
  }
  const char *args;
  size_t an;
  enum smtp_verb v = smtp_parse_verb(l, n, &args, &an);
  const struct command *c = NULL;
  for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
    if (commands[i].verb == v)
      c = &commands[i];
  if (!c) {
    error_reply(s, "500 5.5.2 Error: command not recognized");
    return;
  }
  if (n + 2 > c->line_max) {
    error_reply(s, "500 5.5.2 Error: line too long");
    return;
  }
  if (c->flags & CMD_ENDS_GROUP)
    s->flush = 1;
  c->fn(s, args, an);
}

/* Reads command bytes up to and including one LF.  Returns bytes used. */
static size_t feed_line(struct smtp_server *s, const char *buf, size_t len) {
  const char *nl = memchr(buf, '\n', len);
  size_t take = nl ? (size_t)(nl - buf) + 1 : len;
  if (!s->line_over) {
    if (s->line_len + take > sizeof(s->b->line)) {
      s->line_over = 1;
      s->line_len = 0;
    } else {
      memcpy(s->b->line + s->line_len, buf, take);
      s->line_len += take;
    }
  }
  if (!nl)
    return take;
  if (s->line_over) {
    s->line_over = 0;
    if (s->st == SMTP_SRV_ST_AUTH_LINE) {
      wipe(s->b->auth_pass, sizeof(s->b->auth_pass));
      set_state(s, SMTP_SRV_ST_CMD);
    }
    error_reply(s, "500 5.5.2 Error: line too long");
    return take;
  }
  size_t n = s->line_len - 1; /* drop LF */
  s->cmd_crlf = n > 0 && s->b->line[n - 1] == '\r';
  if (s->cmd_crlf)
    n--;
  s->line_len = 0;
  process_line(s, s->b->line, n);
  wipe(s->b->line, n); /* may hold AUTH data */
  return take;
}

/* ---- DATA ---------------------------------------------------------------- */

static void data_put(struct smtp_server *s, const char *p, size_t n) {
  if (s->oversize)
    return;
  s->dsize += n;
  if (s->max_size && s->dsize > s->max_size) {
    /* Stop emitting; what was emitted is dropped on DATA_ABORT. */
    s->oversize = 1;
    s->chunk_len = 0;
    return;
  }
  memcpy(s->b->chunk + s->chunk_len, p, n);
  s->chunk_len += n;
}

static void emit_chunk(struct smtp_server *s) {
  message_scan_feed(&s->scan, s->b->chunk, s->chunk_len);
  struct smtp_event *ev = push_event(s, SMTP_SRV_EV_DATA_CHUNK);
  ev->chunk.ptr = s->b->chunk;
  ev->chunk.len = s->chunk_len;
  s->chunk_out = 1;
}

static void data_finish(struct smtp_server *s) {
  s->flush = 1;
  if (s->oversize) {
    txn_reset(s);
    set_state(s, SMTP_SRV_ST_CMD);
    reply(s, "552 5.3.4 Error: message file too big");
    struct smtp_event *ev = push_event(s, SMTP_SRV_EV_DATA_ABORT);
    ev->abort.code = 552;
    ev->abort.reason = "message too big";
    return;
  }
  message_scan_feed(&s->scan, s->b->chunk, s->chunk_len);
  if (s->scan.received_count > SMTP_SERVER_MAX_RECEIVED) {
    txn_reset(s);
    set_state(s, SMTP_SRV_ST_CMD);
    reply(s, "554 5.4.6 Error: too many hops");
    struct smtp_event *ev = push_event(s, SMTP_SRV_EV_DATA_ABORT);
    ev->abort.code = 554;
    ev->abort.reason = "too many hops";
    return;
  }
  if (s->chunk_len) {
    struct smtp_event *ev = push_event(s, SMTP_SRV_EV_DATA_CHUNK);
    ev->chunk.ptr = s->b->chunk;
    ev->chunk.len = s->chunk_len;
    s->chunk_out = 1;
  }
  set_state(s, SMTP_SRV_ST_WAIT_COMMIT);
  struct smtp_event *ev = push_event(s, SMTP_SRV_EV_DATA_END);
  ev->end.size = s->dsize;
  ev->end.received_count = s->scan.received_count;
  ev->end.has_date = s->scan.has_date;
  ev->end.has_message_id = s->scan.has_message_id;
  ev->end.eight_bit = s->scan.eight_bit;
  ev->end.needs_separator = message_added_headers_need_separator(&s->scan);
}

/*
 * The DATA scanner.  End of data is a "." line that both starts after a
 * real CRLF and ends with a real CRLF; every other line ending (bare LF,
 * bare CR) is emitted as CRLF and can never end the data.  A leading dot
 * is dropped on every line (unstuffing).
 */
static size_t feed_data(struct smtp_server *s, const char *buf, size_t len) {
  size_t i = 0;
  while (i < len) {
    /* One octet emits at most 3 (CRLF + itself). */
    if (!s->oversize && sizeof(s->b->chunk) - s->chunk_len < 4) {
      emit_chunk(s);
      return i;
    }
    if (s->dstate == D_MID) {
      /* Mid-line, the octets up to the next CR or LF are data as they
       * are: one block instead of one octet at a time, within the chunk's
       * room (kept as above) and up to max_size exactly, so the block
       * does what the octets would. */
      size_t k = text_plain_run(buf + i, len - i);
      if (!s->oversize) {
        size_t room = sizeof(s->b->chunk) - s->chunk_len - 3;
        if (k > room)
          k = room;
        if (s->max_size && s->dsize + k > s->max_size)
          k = s->max_size > s->dsize ? (size_t)(s->max_size - s->dsize) : 0;
      }
      if (k > 0) {
        data_put(s, buf + i, k);
        i += k;
        continue;
      }
    }
    char c = buf[i++];
  again:
    switch (s->dstate) {
    case D_BOL:
      if (c == '.') {
        s->dstate = D_BOL_DOT;
      } else if (c == '\r') {
        s->dstate = D_MID_CR;
      } else if (c == '\n') {
        data_put(s, "\r\n", 2); /* bare LF */
        s->dreal = 0;
      } else {
        data_put(s, &c, 1);
        s->dstate = D_MID;
      }
      break;
    case D_BOL_DOT:
      if (c == '\r') {
        s->dstate = s->dreal ? D_BOL_DOT_CR : D_MID_CR;
      } else if (c == '\n') {
        data_put(s, "\r\n", 2);
        s->dreal = 0;
        s->dstate = D_BOL;
      } else {
        data_put(s, &c, 1);
        s->dstate = D_MID;
      }
      break;
    case D_BOL_DOT_CR:
      if (c == '\n') {
        data_finish(s);
        return i;
      }
      data_put(s, "\r\n", 2); /* ".\r" then not LF: a bare CR */
      s->dreal = 0;
      s->dstate = D_BOL;
      goto again;
    case D_MID:
      if (c == '\r') {
        s->dstate = D_MID_CR;
      } else if (c == '\n') {
        data_put(s, "\r\n", 2);
        s->dreal = 0;
        s->dstate = D_BOL;
      } else {
        data_put(s, &c, 1);
      }
      break;
    case D_MID_CR:
      data_put(s, "\r\n", 2);
      s->dstate = D_BOL;
      if (c == '\n') {
        s->dreal = 1;
        break;
      }
      s->dreal = 0; /* bare CR */
      goto again;
    }
  }
  return i;
}

/* ---- the public interface ------------------------------------------------ */

int smtp_server_blocked(const struct smtp_server *s) {
  if (s->ev_count > 0)
    return 1;
  switch (s->st) {
  case SMTP_SRV_ST_CMD:
  case SMTP_SRV_ST_AUTH_LINE:
    return s->out_len > SMTP_SERVER_OUT_HIGH;
  case SMTP_SRV_ST_DATA:
    return 0;
  default:
    return 1;
  }
}

size_t smtp_server_feed(struct smtp_server *s, const char *buf, size_t len) {
  if (!s->b)
    return 0; /* the caller attaches the buffers before feeding */
  if (s->ev_count == 0 && s->chunk_out) {
    s->chunk_out = 0;
    s->chunk_len = 0;
  }
  size_t i = 0;
  while (i < len && !smtp_server_blocked(s)) {
    if (s->st == SMTP_SRV_ST_DATA)
      i += feed_data(s, buf + i, len - i);
    else
      i += feed_line(s, buf + i, len - i);
  }
  return i;
}

int smtp_server_event(struct smtp_server *s, struct smtp_event *ev) {
  if (s->ev_count == 0)
    return 0;
  *ev = s->ev[s->ev_head];
  s->ev_head = (s->ev_head + 1) % MAX_EVENTS;
  s->ev_count--;
  return 1;
}

const char *smtp_server_output(struct smtp_server *s, size_t *len) {
  *len = s->b ? s->out_len : 0;
  return s->b ? s->b->out : "";
}

void smtp_server_output_consumed(struct smtp_server *s, size_t n) {
  if (n > s->out_len)
    n = s->out_len;
  if (n == 0)
    return;
  memmove(s->b->out, s->b->out + n, s->out_len - n);
  s->out_len -= n;
  if (s->out_len == 0)
    s->flush = 0;
}

int smtp_server_want_flush(const struct smtp_server *s) {
  if (s->out_len == 0)
    return 0;
  return s->flush || s->st == SMTP_SRV_ST_WAIT_COMMIT ||
         s->st == SMTP_SRV_ST_WAIT_AUTH || s->st == SMTP_SRV_ST_WAIT_TLS ||
         s->st == SMTP_SRV_ST_CLOSED || s->out_len > SMTP_SERVER_OUT_HIGH;
}

int smtp_server_close_wanted(const struct smtp_server *s) {
  return s->st == SMTP_SRV_ST_CLOSED;
}

enum smtp_server_state smtp_server_state(const struct smtp_server *s) {
  return s->st;
}

void smtp_server_commit_done(struct smtp_server *s, int ok,
                             const char *queue_id_or_reply) {
  if (s->st != SMTP_SRV_ST_WAIT_COMMIT)
    return;
  txn_reset(s);
  set_state(s, SMTP_SRV_ST_CMD);
  s->flush = 1;
  const char *t = queue_id_or_reply;
  if (ok) {
    reply(s, "250 2.0.0 Ok: queued as %.200s", t ? t : "");
  } else if (t && (t[0] == '4' || t[0] == '5') && t[1] >= '0' && t[1] <= '9' &&
             t[2] >= '0' && t[2] <= '9' && (t[3] == ' ' || t[3] == '\0') &&
             printable_ascii(t, strlen(t))) {
    reply(s, "%.500s", t);
  } else {
    reply(s, "451 4.3.0 Error: queue write failed");
  }
}

void smtp_server_set_room(struct smtp_server *s, uint64_t room) {
  s->room = room;
}

void smtp_server_auth_done(struct smtp_server *s, int ok, const char *user) {
  if (s->st != SMTP_SRV_ST_WAIT_AUTH)
    return;
  wipe(s->b->auth_pass, sizeof(s->b->auth_pass));
  set_state(s, SMTP_SRV_ST_CMD);
  s->flush = 1;
  if (ok > 0) {
    s->authenticated = 1;
    snprintf(s->auth_user, sizeof(s->auth_user), "%s",
             user ? user : s->b->auth_cid);
    reply(s, "235 2.7.0 Authentication successful");
  } else if (ok < 0) {
    /* RFC 4954 §6: the check itself could not be done now. */
    reply(s, "454 4.7.0 Temporary authentication failure");
  } else {
    error_reply(s, "535 5.7.8 Error: authentication failed");
  }
}

void smtp_server_tls_started(struct smtp_server *s, const char *tls_desc) {
  (void)tls_desc; /* the caller keeps it for the Received header */
  if (s->st != SMTP_SRV_ST_WAIT_TLS)
    return;
  s->tls = 1;
  s->starttls_avail = 0;
  s->helo = 0;
  s->helo_name[0] = '\0';
  s->authenticated = 0;
  s->auth_user[0] = '\0';
  s->line_len = 0;
  s->line_over = 0;
  txn_reset(s);
  set_state(s, SMTP_SRV_ST_CMD);
}

void smtp_server_close(struct smtp_server *s, enum smtp_server_close_reason r) {
  if (s->st == SMTP_SRV_ST_CLOSED)
    return;
  if (s->st == SMTP_SRV_ST_DATA && s->ev_count < MAX_EVENTS)
    push_event(s, SMTP_SRV_EV_DATA_ABORT)->abort.code = 0;
  if (r == SMTP_SRV_CLOSE_TIMEOUT)
    reply(s, "421 4.4.2 %s Error: timeout exceeded", s->hostname);
  else
    reply(s, "421 4.3.2 %s Service shutting down", s->hostname);
  s->flush = 1;
  set_state(s, SMTP_SRV_ST_CLOSED);
}

const char *smtp_server_helo_name(const struct smtp_server *s) {
  return s->helo ? s->helo_name : NULL;
}

int smtp_server_esmtp(const struct smtp_server *s) {
  return s->helo == 2;
}

int smtp_server_tls(const struct smtp_server *s) {
  return s->tls;
}

const char *smtp_server_auth_user(const struct smtp_server *s) {
  return s->authenticated ? s->auth_user : NULL;
}

int smtp_server_errors(const struct smtp_server *s) {
  return s->errors;
}
