/*
 * inbound: listeners and sessions.  A session is one loop/conn driving one
 * proto/smtp_server machine; DATA streams into a store spool and the
 * finished message is committed to the store (group commit).  The client
 * gets its 250 only from the commit's callback, when the batch is durable.
 *
 * A session is a machine that never acts on input while an asynchronous
 * step it depends on is in flight: a spool write to disk, the commit, the
 * AUTH hash check, the TLS handshake, or replies the connection cannot take
 * yet (write queue above its high-water mark).  Each step is a named wait
 * (enum session_wait, one setter: inb_wait); while it lasts, input stays in the
 * conn's bounded buffer (reading paused) and events the machine has already
 * parsed stay queued in the machine.  The step's completion clears the wait and
 * session_resume() takes up the queued events, then the buffered input.
 * Events are taken one at a time, so an end of data parsed in the same read
 * as the chunk that sent the spool to disk waits for that write (issue 12).
 *
 * The message itself (its envelope for the store, the added header fields,
 * DKIM signing and the commit) is inbound/commit.c; both share the
 * structures of inbound/internal.h.
 *
 * A session ends through session_end() only.  Its memory goes once four
 * things are over: the conn (on_close), a commit in flight (its callback),
 * a spool write in flight (its callback) and a completion held by the test
 * hook (its release).
 */
#include "relay/inbound.h"
#include "relay/inbound/internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "relay/auth.h"
#include "relay/dkim.h"
#include "relay/diskspace.h"
#include "relay/proxy_accept.h"
#include "config.h"
#include "log.h"
#include "loop/conn.h"
#include "loop/listener.h"
#include "loop/tls.h"
#include "proto/message.h"
#include "proto/smtp_server.h"
#include "queue/store.h"
#include "relay/stats.h"

static const char *const wait_names[] = {
    [WAIT_NONE] = "none",     [WAIT_SPOOL] = "spool", [WAIT_COMMIT] = "commit",
    [WAIT_DKIM] = "dkim",     [WAIT_AUTH] = "auth",   [WAIT_TLS] = "tls",
    [WAIT_OUTPUT] = "output",
};

static const struct conn_cbs session_cbs;

static uint64_t now_ms(struct inbound *in) {
  return uv_now(in->loop);
}

void inb_log(struct session *s, enum log_level lvl, const char *event,
             const char *key, const char *val) {
  struct log_line l;
  log_begin(&l, lvl, event);
  log_str(&l, "session", s->id);
  log_str(&l, "client", s->peer);
  if (key)
    log_str(&l, key, val);
  log_end(&l);
}

/* The `rejected` event (CONTRACT §6), one shape for every cause: the
 * session and client, the reply's code (a number; left out when nothing
 * was said, as for a connection closed unanswered) and a reason. */
static void log_rejected(struct session *s, int code, const char *reason,
                         const char *addr) {
  struct log_line l;
  log_begin(&l, LOG_INFO, "rejected");
  log_str(&l, "session", s->id);
  log_str(&l, "client", s->peer);
  if (code > 0)
    log_int(&l, "code", code);
  if (addr)
    log_str(&l, "addr", addr);
  log_str(&l, "reason", reason);
  log_end(&l);
}

void inb_envelope_clear(struct session *s) {
  free(s->sender);
  s->sender = NULL;
  for (int i = 0; i < s->n_rcpts; i++) {
    free(s->rcpts[i].addr);
    free(s->rcpts[i].domain);
    free(s->rcpts[i].orcpt);
  }
  s->n_rcpts = 0;
}

static void inbound_maybe_freed(struct inbound *in);

/* Frees the session once nothing refers to it any more. */
void inb_maybe_free(struct session *s) {
  if (s->conn || s->commit || s->spool_writing || s->held || s->dkim_req)
    return;
  struct inbound *in = s->in;
  if (s->spool)
    store_spool_free(s->spool);
  inb_envelope_clear(s);
  free(s->auth_user);
  free(s->signed_prefix);
  free(s->rcpts);
  smtp_server_free(s->srv);
  if (s->prev)
    s->prev->next = s->next;
  else
    in->sessions = s->next;
  if (s->next)
    s->next->prev = s->prev;
  in->n_sessions--;
  in->stats->sessions = in->n_sessions;
  free(s);
  if (in->peak >= TRIM_PEAK_MIN && in->n_sessions <= in->peak / 4) {
    /* A flood has passed: glibc keeps freed small chunks in its heap, so
     * give the free pages back (issue 12 item 6). */
    while (in->n_pool > 0)
      smtp_server_bufs_free(in->pool[--in->n_pool]);
    malloc_trim(0);
    in->peak = in->n_sessions;
  }
  inbound_maybe_freed(in);
}

/* The one end of a session: cancels what is in flight, closes the conn. */
static void session_end(struct session *s, int flush) {
  if (s->ended)
    return;
  s->ended = 1;
  if (s->commit)
    store_cancel(s->commit);
  if (s->dkim_req)
    dkim_cancel(s->dkim_req); /* its callback runs later */
  if (s->auth_req)
    auth_cancel(s->auth_req); /* its callback runs now */
  if (s->spool && !s->spool_writing) {
    store_spool_free(s->spool);
    s->spool = NULL;
  }
  if (s->conn) {
    if (flush)
      conn_close_flush(s->conn, CONN_END_LOCAL, 2000);
    else
      conn_close(s->conn, CONN_END_LOCAL);
  }
}

/* metrics: /readyz is 503 while the queue's file system is under
 * queue_minfree (stats->disk_low has this one writer). */
static void on_disk_update(struct diskspace *ds, void *data) {
  struct inbound *in = data;
  int low = in->cfg->queue_minfree > 0 &&
            diskspace_room(ds, in->cfg->queue_minfree) == 0;
  if (low != in->stats->disk_low) {
    /* Once per change, not per refused client (those are event=rejected
     * lines with reason=queue_minfree). */
    if (low)
      log_msg(LOG_WARN, "diskspace",
              "the queue's file system has %llu MiB free, under "
              "queue_minfree (%llu MiB): new mail is refused with 452 4.3.1",
              (unsigned long long)(diskspace_free(ds) >> 20),
              (unsigned long long)(in->cfg->queue_minfree >> 20));
    else
      log_msg(LOG_INFO, "diskspace",
              "free space is above queue_minfree again: accepting mail");
  }
  in->stats->disk_low = low;
}

/* Gives the machine its working buffers before it is fed or answered.
 * Returns -1 when out of memory (the caller ends the session). */
static int session_attach(struct session *s) {
  struct inbound *in = s->in;
  /* What the queue can still take, as last measured (never a disk wait);
   * queue_minfree = 0 turns the reserve off. */
  if (in->disk && in->cfg->queue_minfree > 0)
    smtp_server_set_room(s->srv,
                         diskspace_room(in->disk, in->cfg->queue_minfree));
  if (smtp_server_attached(s->srv))
    return 0;
  struct smtp_server_bufs *b =
      in->n_pool > 0 ? in->pool[--in->n_pool] : smtp_server_bufs_new();
  if (!b)
    return -1;
  smtp_server_attach(s->srv, b);
  return 0;
}

/* Takes the working buffers back when the session idles (nothing in
 * flight): an idle session holds a few hundred bytes, not ~47 KB. */
static void session_detach(struct session *s) {
  struct smtp_server_bufs *b = smtp_server_detach(s->srv);
  if (!b)
    return;
  struct inbound *in = s->in;
  if (in->n_pool < BUFS_POOL_MAX)
    in->pool[in->n_pool++] = b;
  else
    smtp_server_bufs_free(b);
}

/* The one setter of the wait.  Every wait but the TLS handshake pauses
 * reading (the handshake needs the socket; the conn delivers no plaintext
 * before it ends, and on_read refuses input while any wait lasts). */
void inb_wait(struct session *s, enum session_wait w) {
  if (s->in->dbg.on_trace) {
    char what[48];
    snprintf(what, sizeof what, "wait %s -> %s", wait_names[s->wait],
             wait_names[w]);
    s->in->dbg.on_trace(s->id, what, s->in->dbg.data);
  }
  s->wait = w;
  if (w != WAIT_NONE && w != WAIT_TLS && s->conn && !s->ended)
    conn_read_pause(s->conn);
}

/* Writes every reply the machine has ready; ends the session if it is
 * over.  Returns -1 when the session is ending. */
static int session_flush(struct session *s) {
  size_t n;
  const char *out = smtp_server_output(s->srv, &n);
  stats_count_replies(s->in->stats, out, n); /* metrics: refusals by reason */
  if (n > 0 && s->conn && !s->ended) {
    int rc = conn_write(s->conn, out, n);
    if (rc < 0) {
      smtp_server_output_consumed(s->srv, n);
      session_end(s, 0);
      return -1;
    }
    /* A client that pipelines faster than it reads its replies: act on
     * nothing more until the connection has written what it holds. */
    if (rc == CONN_WRITE_FULL && s->wait == WAIT_NONE)
      inb_wait(s, WAIT_OUTPUT);
  }
  smtp_server_output_consumed(s->srv, n);
  if (smtp_server_close_wanted(s->srv)) {
    session_end(s, 1);
    return -1;
  }
  return s->ended ? -1 : 0;
}

static void arm_command_timer(struct session *s) {
  if (s->conn && !s->ended)
    conn_set_timeout(s->conn, (unsigned)s->in->cfg->smtp_timeout_ms);
}

/* ---- steps: waiting, completions, resuming ------------------------- */

static int handle_event(struct session *s, const struct smtp_event *ev);
static void step_act(struct session *s);

/* Takes the events the machine has already parsed, one at a time, as
 * long as nothing is awaited.  Returns how many it took, or -1 when the
 * session ended. */
static int session_take_events(struct session *s) {
  struct smtp_event ev;
  int n = 0;
  while (s->wait == WAIT_NONE && !s->ended && smtp_server_event(s->srv, &ev)) {
    n++;
    if (s->in->dbg.on_trace)
      s->in->dbg.on_trace(s->id, smtp_server_event_name(ev.type),
                          s->in->dbg.data);
    handle_event(s, &ev);
  }
  return s->ended ? -1 : n;
}

/* After a step completed: the events left in the machine, the replies,
 * then the input the conn kept (from the next loop turn). */
static void session_resume(struct session *s) {
  if (s->ended)
    return;
  if (session_take_events(s) < 0)
    return;
  if (session_flush(s) < 0)
    return;
  if (s->wait != WAIT_NONE)
    return;
  if (smtp_server_state(s->srv) == SMTP_SRV_ST_CMD)
    arm_command_timer(s);
  session_detach(s);
  conn_read_resume(s->conn);
}

/* A step's outcome is in the session: act on it now, or hand it to the
 * test hook, which releases it when its script says. */
void inb_step_arrived(struct session *s) {
  struct inbound *in = s->in;
  if (in->dbg.on_step) {
    s->held = 1;
    in->dbg.on_step(s, s->id, wait_names[s->wait], in->dbg.data);
    return;
  }
  step_act(s);
}

void inbound_debug_release(void *step) {
  struct session *s = step;
  s->held = 0;
  if (s->ended) {
    inb_maybe_free(s);
    return;
  }
  step_act(s);
}

void inb_log_error(struct session *s, const char *event, const char *what,
                   int status) {
  struct log_line l;
  log_begin(&l, LOG_WARN, event);
  log_str(&l, "session", s->id);
  log_str(&l, "client", s->peer);
  if (s->queue_id[0])
    log_str(&l, "id", s->queue_id);
  log_str(&l, "from", s->sender ? s->sender : "");
  log_int(&l, "rcpts", s->n_rcpts);
  log_str(&l, "step", what);
  log_str(&l, "error", strerror(-status));
  log_end(&l);
}

/* ---- DATA: spool and commit ---------------------------------------- */

static void on_spool_written(struct store_spool *sp, int status, void *data) {
  (void)sp;
  struct session *s = data;
  s->spool_writing = 0;
  if (s->ended) {
    if (s->spool) {
      store_spool_free(s->spool);
      s->spool = NULL;
    }
    inb_maybe_free(s);
    return;
  }
  s->step_status = status;
  inb_step_arrived(s);
}

static const char *domain_of(const char *addr) {
  const char *at = strrchr(addr, '@');
  return at ? at + 1 : "";
}

static void lower(char *p) {
  for (; *p; p++)
    if (*p >= 'A' && *p <= 'Z')
      *p = (char)(*p + 32);
}

static int add_rcpt(struct session *s, const struct smtp_event *ev) {
  if (s->n_rcpts == s->cap_rcpts) {
    int cap = s->cap_rcpts ? s->cap_rcpts * 2 : 4;
    struct rcpt *r = realloc(s->rcpts, (size_t)cap * sizeof *r);
    if (!r)
      return -1;
    s->rcpts = r;
    s->cap_rcpts = cap;
  }
  struct rcpt *r = &s->rcpts[s->n_rcpts];
  r->addr = strdup(ev->rcpt.addr);
  r->domain = r->addr ? strdup(domain_of(r->addr)) : NULL;
  if (r->domain)
    lower(r->domain);
  r->notify = ev->rcpt.params->notify;
  r->orcpt = NULL;
  if (ev->rcpt.params->has_orcpt) {
    size_t n = strlen(ev->rcpt.params->orcpt_type) +
               strlen(ev->rcpt.params->orcpt_addr) + 2;
    r->orcpt = malloc(n);
    if (r->orcpt)
      snprintf(r->orcpt, n, "%s;%s", ev->rcpt.params->orcpt_type,
               ev->rcpt.params->orcpt_addr);
  }
  if (!r->addr || !r->domain) {
    free(r->addr);
    free(r->domain);
    free(r->orcpt);
    return -1;
  }
  s->n_rcpts++;
  return 0;
}

static void on_auth(struct auth_req *req, enum auth_status st, const char *user,
                    void *data) {
  (void)req;
  struct session *s = data;
  s->auth_req = NULL;
  if (st == AUTH_CANCELED || s->ended)
    return;
  free(s->auth_user);
  s->auth_user = user ? strdup(user) : NULL;
  s->auth_status = st;
  inb_step_arrived(s);
}

static void on_tls_done(struct conn *c, const struct conn_tls_info *info) {
  struct session *s = conn_data(c);
  struct log_line l;
  log_begin(&l, info->ok ? LOG_INFO : LOG_WARN, "tls");
  log_str(&l, "session", s->id);
  log_str(&l, "client", s->peer);
  log_str(&l, "direction", "inbound");
  s->in->stats->tls_ok[STATS_INBOUND] += info->ok;      /* metrics */
  s->in->stats->tls_failed[STATS_INBOUND] += !info->ok; /* metrics */
  if (info->ok) {
    log_str(&l, "version", info->version);
    log_str(&l, "cipher", info->cipher);
  } else {
    log_str(&l, "error", info->error);
  }
  log_end(&l);
  if (!info->ok || s->ended)
    return; /* the conn is closing: on_close follows */
  inb_step_arrived(s);
}

static void on_drain(struct conn *c) {
  struct session *s = conn_data(c);
  if (s->ended || s->wait != WAIT_OUTPUT || s->held)
    return;
  inb_step_arrived(s);
}

/* Acts on the outcome of the step the session waited for, then resumes. */
static void step_act(struct session *s) {
  enum session_wait w = s->wait;
  inb_wait(s, WAIT_NONE);
  if (session_attach(s) < 0) {
    session_end(s, 0);
    return;
  }
  switch (w) {
  case WAIT_SPOOL:
    /* A failed spool (disk full): the machine still reads to the end of
     * data; the commit then refuses with the spool's cause. */
    if (s->step_status < 0)
      inb_log_error(s, "spool", "spool write", s->step_status);
    break;
  case WAIT_DKIM:
    if (s->step_status == 0) {
      inb_commit_prefixed(s, s->signed_prefix, s->signed_prefix_len);
    } else {
      inb_log_error(s, "dkim", "signing", s->step_status);
      smtp_server_commit_done(s->srv, 0,
                              s->step_status == -ENOSPC
                                  ? "452 4.3.1 Insufficient system storage"
                                  : "451 4.3.0 Error: signing failed");
      inb_envelope_clear(s);
    }
    free(s->signed_prefix);
    s->signed_prefix = NULL;
    break;
  case WAIT_COMMIT:
    if (s->step_status == 0)
      smtp_server_commit_done(s->srv, 1, s->queue_id);
    else
      smtp_server_commit_done(s->srv, 0,
                              inb_commit_error_reply(s->step_status));
    inb_envelope_clear(s);
    /* Draining: the client has its reply; it sends the next message
     * elsewhere (421 after the 250, CONTRACT §1 drain). */
    if (s->in->draining)
      smtp_server_close(s->srv, SMTP_SRV_CLOSE_SHUTDOWN);
    break;
  case WAIT_AUTH: {
    enum auth_status st = s->auth_status;
    const char *user = s->auth_user ? s->auth_user : "";
    struct log_line l;
    log_begin(&l, LOG_INFO, "auth");
    log_str(&l, "session", s->id);
    log_str(&l, "client", s->peer);
    log_str(&l, "user", user);
    log_str(&l, "result", auth_status_name(st));
    log_end(&l);
    smtp_server_auth_done(s->srv,
                          st == AUTH_OK         ? 1
                          : st == AUTH_TEMPFAIL ? -1
                                                : 0,
                          user);
    free(s->auth_user);
    s->auth_user = NULL;
    break;
  }
  case WAIT_TLS:
    if (s->implicit_tls) {
      s->implicit_tls = 0;
    } else {
      const struct conn_tls_info *info = conn_tls(s->conn);
      char desc[160];
      snprintf(desc, sizeof desc, "%s %s",
               info && info->version ? info->version : "",
               info && info->cipher ? info->cipher : "");
      smtp_server_tls_started(s->srv, desc);
    }
    break;
  case WAIT_OUTPUT:
  case WAIT_NONE:
    break;
  }
  session_resume(s);
}

/* Handles one event; an event that starts an async step sets the wait. */
static int handle_event(struct session *s, const struct smtp_event *ev) {
  struct inbound *in = s->in;
  switch (ev->type) {
  case SMTP_SRV_EV_HELO:
    inb_envelope_clear(s);
    return 0;
  case SMTP_SRV_EV_MAIL:
    inb_envelope_clear(s);
    s->sender = strdup(ev->mail.sender);
    s->mail = *ev->mail.params;
    s->queue_id[0] = '\0';
    if (!s->sender) {
      session_end(s, 0);
      return 1;
    }
    return 0;
  case SMTP_SRV_EV_RCPT:
    if (add_rcpt(s, ev) < 0) {
      session_end(s, 0);
      return 1;
    }
    return 0;
  case SMTP_SRV_EV_DATA_START:
    if (s->spool)
      store_spool_free(s->spool);
    s->spool = store_spool_new(in->store);
    s->data_start_ms = now_ms(in);
    s->data_bytes = 0;
    s->data_rx = 0;
    conn_set_timeout(s->conn, DATA_CHECK_MS);
    if (!s->spool) {
      session_end(s, 0);
      return 1;
    }
    return 0;
  case SMTP_SRV_EV_DATA_CHUNK:
    s->data_bytes += ev->chunk.len;
    if (s->spool) {
      int rc = store_spool_append(s->spool, ev->chunk.ptr, ev->chunk.len,
                                  on_spool_written, s);
      if (rc == STORE_SPOOL_PAUSE) {
        s->spool_writing = 1;
        inb_wait(s, WAIT_SPOOL);
        return 1;
      }
      /* rc < 0: the spool failed earlier; the commit reports its cause.
       * (-EBUSY cannot happen: nothing is taken while a write is
       * pending.) */
    }
    return 0;
  case SMTP_SRV_EV_DATA_END:
    inb_commit_message(s, ev);
    return 1;
  case SMTP_SRV_EV_DATA_ABORT:
    if (s->spool) {
      store_spool_free(s->spool);
      s->spool = NULL;
    }
    inb_envelope_clear(s);
    if (ev->abort.code)
      log_rejected(s, ev->abort.code,
                   ev->abort.reason ? ev->abort.reason : "message refused",
                   NULL);
    arm_command_timer(s);
    return 0;
  case SMTP_SRV_EV_STARTTLS:
    /* Write the 220 in plaintext, then start TLS; conn_start_tls drops
     * every byte the client sent after the command (RFC 3207 §4.2). */
    if (session_flush(s) < 0)
      return 1;
    conn_discard_input(s->conn);
    if (!in->tls_ctx || conn_start_tls(s->conn, in->tls_ctx, 1, NULL) < 0) {
      session_end(s, 0);
      return 1;
    }
    /* The handshake needs the socket even if a full write queue paused
     * reading just now. */
    s->wait = WAIT_NONE;
    inb_wait(s, WAIT_TLS);
    conn_read_resume(s->conn);
    return 1;
  case SMTP_SRV_EV_AUTH:
    /* The hash check runs on the thread pool; the session waits for it. */
    if (!in->auth || auth_check(in->auth, ev->auth.user, ev->auth.pass, on_auth,
                                s, &s->auth_req) < 0) {
      s->auth_req = NULL;
      /* Too many checks waiting: try again later (454), not a failure. */
      smtp_server_auth_done(s->srv, -1, NULL);
      inb_log(s, LOG_INFO, "auth", "result", "unavailable");
      return 0;
    }
    inb_wait(s, WAIT_AUTH);
    conn_set_timeout(s->conn, 0);
    return 1;
  case SMTP_SRV_EV_REJECT:
    log_rejected(s, ev->reject.code, ev->reject.reason, ev->reject.addr);
    return 0;
  case SMTP_SRV_EV_NONE:
    return 0;
  }
  return 0;
}

/* ---- conn callbacks -------------------------------------------------- */

static size_t on_read(struct conn *c, const char *data, size_t len) {
  struct session *s = conn_data(c);
  if (s->ended)
    return len;
  if (s->wait != WAIT_NONE) {
    /* Nothing is acted on while a step is in flight: keep the input. */
    conn_read_pause(c);
    return 0;
  }
  if (session_attach(s) < 0) {
    session_end(s, 0);
    return len;
  }
  size_t off = 0;
  int progressed = 0;
  for (;;) {
    /* Events first: the machine may hold some from the last feed. */
    if (session_take_events(s) < 0)
      return len;
    if (s->wait != WAIT_NONE || smtp_server_close_wanted(s->srv))
      break;
    if (smtp_server_state(s->srv) == SMTP_SRV_ST_WAIT_TLS)
      return len; /* everything after STARTTLS is discarded */
    if (off == len)
      break;
    int in_data = smtp_server_state(s->srv) == SMTP_SRV_ST_DATA;
    size_t n = smtp_server_feed(s->srv, data + off, len - off);
    off += n;
    if (in_data)
      s->data_rx += n;
    if (n > 0) {
      progressed = 1;
      continue;
    }
    /* Nothing consumed: either an event is ready (a full DATA chunk) ... */
    int taken = session_take_events(s);
    if (taken < 0)
      return len;
    if (taken > 0) {
      progressed = 1;
      continue;
    }
    /* ... or the reply buffer is full (a client pipelining many
     * commands).  Hand the replies to the connection and go on, or the
     * rest of this input would wait for more input that a pipelining
     * client never sends. */
    size_t out;
    smtp_server_output(s->srv, &out);
    if (out == 0)
      break; /* cannot happen: feed stops only for events or output */
    progressed = 1;
    if (session_flush(s) < 0)
      return len;
  }
  size_t pending;
  smtp_server_output(s->srv, &pending);
  if (pending)
    progressed = 1;
  if (session_flush(s) < 0)
    return len;
  if (progressed && s->wait == WAIT_NONE &&
      smtp_server_state(s->srv) == SMTP_SRV_ST_CMD)
    arm_command_timer(s);
  if (off == len)
    session_detach(s);
  return off;
}

static void on_timeout(struct conn *c) {
  struct session *s = conn_data(c);
  struct inbound *in = s->in;
  if (s->ended)
    return;
  if (s->wait == WAIT_SPOOL) {
    /* Our disk is slow, not the client: the machine may already be past
     * the end of data (queued behind this write), so neither the rate
     * check nor the command timeout applies; look again later. */
    conn_set_timeout(c, DATA_CHECK_MS);
    return;
  }
  if (smtp_server_state(s->srv) == SMTP_SRV_ST_DATA) {
    /* DATA: the client must keep up min_data_rate once the first
     * smtp_timeout has passed (a slow but honest upload goes on). */
    uint64_t elapsed = now_ms(in) - s->data_start_ms;
    if (elapsed < in->cfg->smtp_timeout_ms ||
        s->data_rx * 1000 >= in->cfg->min_data_rate * elapsed) {
      conn_set_timeout(c, DATA_CHECK_MS);
      return;
    }
    log_rejected(s, 421, "data rate too low", NULL);
  } else {
    log_rejected(s, 421, "timeout", NULL);
  }
  if (session_attach(s) < 0) {
    session_end(s, 0);
    return;
  }
  smtp_server_close(s->srv, SMTP_SRV_CLOSE_TIMEOUT);
  /* The session ends: events still queued (even an end of data the
   * client had no reply to) are dropped, never acted on; session_end
   * frees the spool. */
  struct smtp_event ev;
  while (smtp_server_event(s->srv, &ev))
    ;
  session_flush(s);
  session_end(s, 1);
}

static void on_close(struct conn *c, enum conn_end end, int status) {
  struct session *s = conn_data(c);
  (void)end;
  (void)status;
  s->conn = NULL;
  s->ended = 1;
  if (s->commit)
    store_cancel(s->commit);
  if (s->dkim_req)
    dkim_cancel(s->dkim_req);
  inb_maybe_free(s);
}

static const struct conn_cbs session_cbs = {
    .on_read = on_read,
    .on_tls_done = on_tls_done,
    .on_drain = on_drain,
    .on_timeout = on_timeout,
    .on_close = on_close,
};

/* ---- accepting -------------------------------------------------------- */

/* A connection becomes a session: from on_accept, or with proxy_networks
 * from proxy_accept once the PROXY header is read (conn_peer(c) is then
 * the carried client and the bytes after the header are c's first input).
 * c is unowned. */
static void session_start(struct conn *c, int implicit_tls, void *data) {
  struct inbound *in = data;
  struct session *s = calloc(1, sizeof *s);
  if (!s) {
    conn_close(c, CONN_END_LOCAL);
    return;
  }
  s->in = in;
  s->conn = c;
  snprintf(s->id, sizeof s->id, "S%llx",
           (unsigned long long)++in->next_session);
  snprintf(s->peer, sizeof s->peer, "%s", conn_peer_str(c));
  s->next = in->sessions;
  if (in->sessions)
    in->sessions->prev = s;
  in->sessions = s;
  in->n_sessions++;
  in->stats->sessions = in->n_sessions;
  if (in->n_sessions > in->peak)
    in->peak = in->n_sessions;
  conn_set_owner(c, &session_cbs, s);

  const struct config *cfg = in->cfg;
  if (in->n_sessions > cfg->max_sessions || in->freeing) {
    static const char busy[] = "421 4.3.2 Too many sessions, try later\r\n";
    if (conn_write(c, busy, sizeof busy - 1) < 0) {
      session_end(s, 0);
      return;
    }
    log_rejected(s, 421, "max_sessions", NULL);
    in->stats->rejected[STATS_REJECT_OTHER]++; /* metrics */
    session_end(s, 1);
    return;
  }
  const char *domains[CONFIG_MAX_LIST];
  for (int i = 0; i < cfg->n_allowed_sender_domains; i++)
    domains[i] = cfg->allowed_sender_domains[i];
  struct smtp_server_opts o = {
      .hostname = cfg->hostname,
      .max_message_size = cfg->max_message_size,
      .max_recipients = cfg->max_recipients,
      .max_errors = 20,
      .starttls_available = in->tls_ctx != NULL && !implicit_tls,
      .auth_available = cfg->auth_users_file[0] != '\0',
      .auth_require_tls = cfg->auth_require_tls,
      .relay_allowed = config_cidr_match(cfg->relay_networks,
                                         cfg->n_relay_networks, conn_peer(c)),
      .allowed_sender_domains = domains,
      .n_allowed_sender_domains = cfg->n_allowed_sender_domains,
      .tls_active = implicit_tls,
  };
  s->srv = smtp_server_new(&o);
  if (!s->srv) {
    session_end(s, 0);
    return;
  }
  if (implicit_tls) {
    s->implicit_tls = 1;
    inb_wait(s, WAIT_TLS);
    if (conn_start_tls(c, in->tls_ctx, 1, NULL) < 0)
      session_end(s, 0);
    conn_set_timeout(c, (unsigned)cfg->smtp_timeout_ms);
    return;
  }
  if (session_flush(s) == 0) {
    arm_command_timer(s);
    session_detach(s);
  }
}

static void on_accept(struct listener *l, struct conn *c, void *data) {
  struct inbound *in = data;
  if (in->proxy)
    proxy_accept_conn(in->proxy, c, listener_tls(l));
  else
    session_start(c, listener_tls(l), in);
}

struct inbound *inbound_start(uv_loop_t *loop, const struct config *cfg,
                              struct store *st, struct stats *stats,
                              inbound_queued_cb on_queued, void *data,
                              int *bad_config, char *err, size_t errlen) {
  struct inbound *in = calloc(1, sizeof *in);
  if (!in) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  in->loop = loop;
  in->cfg = cfg;
  in->store = st;
  in->stats = stats;
  in->on_queued = on_queued;
  in->data = data;
  *bad_config = 1;
  if (cfg->auth_users_file[0]) {
    in->auth = auth_new(loop, cfg->auth_users_file, err, errlen);
    if (!in->auth) {
      free(in);
      return NULL;
    }
  }
  if (cfg->tls_cert_file[0]) {
    in->tls_ctx =
        tls_server_ctx_new(cfg->tls_cert_file, cfg->tls_key_file, err, errlen);
    if (!in->tls_ctx) {
      if (in->auth)
        auth_free(in->auth);
      free(in);
      return NULL;
    }
  }
  if (cfg->n_dkim_sign > 0) {
    in->dkim = dkim_new(loop, cfg, 1, err, errlen);
    if (!in->dkim) {
      if (in->tls_ctx)
        SSL_CTX_free(in->tls_ctx);
      if (in->auth)
        auth_free(in->auth);
      free(in);
      return NULL;
    }
  }
  if (cfg->n_proxy_networks > 0) {
    in->proxy =
        proxy_accept_new(loop, cfg, cfg->max_sessions, session_start, in);
    if (!in->proxy) {
      snprintf(err, errlen, "out of memory");
      if (in->tls_ctx)
        SSL_CTX_free(in->tls_ctx);
      if (in->auth)
        auth_free(in->auth);
      dkim_free(in->dkim);
      free(in);
      return NULL;
    }
  }
  *bad_config = 0;
  {
    /* The queue's directory: its file system is where mail is spooled
     * and committed. */
    char dir[sizeof cfg->queue_path];
    config_queue_dir(cfg, dir, sizeof dir);
    in->disk = diskspace_start(loop, dir, 0);
    if (in->disk)
      diskspace_on_update(in->disk, on_disk_update, in);
  }
  for (int i = 0; i < cfg->n_listen + cfg->n_listen_tls; i++) {
    int tls = i >= cfg->n_listen;
    const struct config_addr *a =
        tls ? &cfg->listen_tls[i - cfg->n_listen] : &cfg->listen[i];
    struct listener *l = NULL;
    if (listener_open(loop, (const struct sockaddr *)&a->sa, tls, on_accept, in,
                      &l, err, errlen) < 0) {
      for (int j = 0; j < in->n_listeners; j++)
        listener_close(in->listeners[j]);
      if (in->proxy)
        proxy_accept_free(in->proxy);
      if (in->tls_ctx)
        SSL_CTX_free(in->tls_ctx);
      if (in->auth)
        auth_free(in->auth);
      dkim_free(in->dkim);
      diskspace_stop(in->disk);
      free(in);
      return NULL;
    }
    const struct sockaddr *ba = listener_addr(l);
    if (ba) {
      memcpy(&in->bound[in->n_bound], ba,
             ba->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                       : sizeof(struct sockaddr_in));
      in->bound_tls[in->n_bound++] = tls;
    }
    in->listeners[in->n_listeners++] = l;
    struct log_line ll;
    log_begin(&ll, LOG_INFO, "listening");
    log_str(&ll, "addr", a->text);
    log_str(&ll, "tls", tls ? "implicit" : in->tls_ctx ? "starttls" : "none");
    log_end(&ll);
  }
  return in;
}

void inbound_stop_accepting(struct inbound *in) {
  for (int j = 0; j < in->n_listeners; j++)
    listener_close(in->listeners[j]);
  in->n_listeners = 0;
}

void inbound_drain_sessions(struct inbound *in, int on) {
  in->draining = on;
  if (!on)
    return;
  struct session *next;
  for (struct session *s = in->sessions; s; s = next) {
    next = s->next;
    /* Between transactions and waiting for nothing: 421 now.  The others
     * get it after their message's reply (step_act, WAIT_COMMIT). */
    if (s->ended || !s->srv || s->wait != WAIT_NONE || s->sender ||
        smtp_server_state(s->srv) != SMTP_SRV_ST_CMD)
      continue;
    if (session_attach(s) < 0) {
      session_end(s, 0);
      continue;
    }
    smtp_server_close(s->srv, SMTP_SRV_CLOSE_SHUTDOWN);
    struct smtp_event ev;
    while (smtp_server_event(s->srv, &ev))
      ;
    if (session_flush(s) == 0)
      session_detach(s);
  }
}

int inbound_resume_accepting(struct inbound *in, char *err, size_t errlen) {
  in->draining = 0;
  if (in->n_listeners > 0 || in->freeing)
    return 0;
  for (int i = 0; i < in->n_bound; i++) {
    struct listener *l = NULL;
    if (listener_open(in->loop, (const struct sockaddr *)&in->bound[i],
                      in->bound_tls[i], on_accept, in, &l, err, errlen) < 0) {
      inbound_stop_accepting(in);
      return -1;
    }
    in->listeners[in->n_listeners++] = l;
    const struct sockaddr *sa = (const struct sockaddr *)&in->bound[i];
    char ip[INET6_ADDRSTRLEN] = "?", text[INET6_ADDRSTRLEN + 16];
    uv_ip_name(sa, ip, sizeof ip);
    int port = ntohs(sa->sa_family == AF_INET6
                         ? ((const struct sockaddr_in6 *)sa)->sin6_port
                         : ((const struct sockaddr_in *)sa)->sin_port);
    snprintf(text, sizeof text, sa->sa_family == AF_INET6 ? "[%s]:%d" : "%s:%d",
             ip, port);
    struct log_line ll;
    log_begin(&ll, LOG_INFO, "listening");
    log_str(&ll, "addr", text);
    log_str(&ll, "tls",
            in->bound_tls[i] ? "implicit"
            : in->tls_ctx    ? "starttls"
                             : "none");
    log_end(&ll);
  }
  return 0;
}

int inbound_sessions(const struct inbound *in) {
  return in->n_sessions;
}

const struct sockaddr *inbound_listener_addr(const struct inbound *in, int i) {
  if (i < 0 || i >= in->n_listeners)
    return NULL;
  return listener_addr(in->listeners[i]);
}

struct diskspace *inbound_diskspace(struct inbound *in) {
  return in->disk;
}

void inbound_debug_set(struct inbound *in, const struct inbound_debug *dbg) {
  if (dbg)
    in->dbg = *dbg;
  else
    memset(&in->dbg, 0, sizeof in->dbg);
}

void inbound_reload(struct inbound *in) {
  const struct config *cfg = in->cfg;
  if (in->auth) {
    char aerr[512];
    if (auth_reload(in->auth, aerr, sizeof aerr) < 0)
      log_msg(LOG_WARN, "reload", "keeping the old users: %s", aerr);
    else
      log_msg(LOG_INFO, "reload", "users file reloaded (%zu users)",
              auth_user_count(in->auth));
  }
  if (in->dkim) {
    char derr[512];
    if (dkim_reload(in->dkim, derr, sizeof derr) < 0)
      log_msg(LOG_WARN, "reload", "keeping the old DKIM keys: %s", derr);
    else
      log_msg(LOG_INFO, "reload", "DKIM keys reloaded");
  }
  if (!cfg->tls_cert_file[0]) {
    log_msg(LOG_INFO, "reload", "no TLS certificate to reload");
    return;
  }
  char err[512];
  if (tls_server_reload(&in->tls_ctx, cfg->tls_cert_file, cfg->tls_key_file,
                        err, sizeof err) < 0) {
    log_msg(LOG_WARN, "reload", "keeping the old certificate: %s", err);
    return;
  }
  log_msg(LOG_INFO, "reload", "certificate reloaded");
}

static void inbound_maybe_freed(struct inbound *in) {
  if (!in->freeing || in->n_sessions > 0)
    return;
  void (*cb)(void *) = in->freed_cb;
  void *data = in->freed_data;
  in->freed_cb = NULL;
  if (!cb)
    return;
  if (in->tls_ctx)
    SSL_CTX_free(in->tls_ctx);
  if (in->auth)
    auth_free(in->auth);
  dkim_free(in->dkim);
  while (in->n_pool > 0)
    smtp_server_bufs_free(in->pool[--in->n_pool]);
  diskspace_stop(in->disk);
  free(in);
  cb(data);
}

void inbound_free(struct inbound *in, void (*cb)(void *data), void *data) {
  inbound_stop_accepting(in);
  if (in->proxy) {
    proxy_accept_free(in->proxy); /* connections still without a header */
    in->proxy = NULL;
  }
  in->freeing = 1;
  in->freed_cb = cb;
  in->freed_data = data;
  for (struct session *s = in->sessions; s; s = s->next) {
    if (!s->ended && s->srv && session_attach(s) == 0) {
      smtp_server_close(s->srv, SMTP_SRV_CLOSE_SHUTDOWN);
      struct smtp_event ev;
      while (smtp_server_event(s->srv, &ev))
        ;
      session_flush(s);
    }
    session_end(s, 0);
  }
  if (in->n_sessions == 0)
    inbound_maybe_freed(in);
}
