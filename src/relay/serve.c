/*
 * serve: `mailhop serve`.  Opens the queue, starts the parts (inbound,
 * scheduler, outbound, admin socket), runs the loop, and shuts down
 * cleanly on SIGTERM/SIGINT: stop accepting, let sessions and deliveries
 * in flight finish for up to shutdown_timeout, then close everything and
 * exit 0.  This is the one place where the parts are wired together.
 */
#include "relay/serve.h"

#include <errno.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "relay/admin.h"
#include "config.h"
#include "relay/inbound.h"
#include "log.h"
#include "relay/metrics.h"
#include "relay/oauth2.h"
#include "relay/outbound.h"
#include "relay/preflight.h"
#include "proto/routes.h"
#include "relay/routes.h"
#include "queue/sched.h"
#include "queue/store.h"
#include "relay/stats.h"
#include "relay/tlsrpt.h"

struct serve {
  uv_loop_t *loop;
  const struct config *cfg;
  struct stats stats;
  struct store *store;
  struct inbound *inbound;
  struct outbound *outbound;
  struct sched *sched;
  struct admin *admin;
  struct metrics *metrics; /* NULL without metrics_listen */
  struct store_job *load_job;
  /* While the queue loads: what the load has still to hand over (the
   * store's count at start minus every batch scheduled since), so that
   * `status` gives right counts from the first second (issue 12). */
  int loading;
  struct store_counts unloaded;
  int counted; /* unloaded holds the count made at start */
  uv_signal_t sig_term, sig_int, sig_hup;
  uv_timer_t shutdown_timer;
  uv_timer_t drain_timer;   /* polls the drain while stopping */
  uv_timer_t handoff_timer; /* `mailhop drain`'s timeout, for the log */
  int stopping;
  int exit_code;
};

/* Raises the open-file soft limit to the hard limit; warns when the
 * configured session and connection limits cannot fit. */
static void raise_nofile(const struct config *cfg) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
    return;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
      getrlimit(RLIMIT_NOFILE, &rl);
  }
  /* Each session and outbound connection holds a socket; each spool that
   * overflows to disk a file; plus DNS sockets and the queue's files. */
  unsigned long long need = (unsigned long long)cfg->max_sessions * 2 +
                            (unsigned long long)cfg->max_outbound + 256;
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
    struct log_line l;
    log_begin(&l, LOG_WARN, "limits");
    log_int(&l, "nofile", (long long)rl.rlim_cur);
    log_int(&l, "needed", (long long)need);
    log_str(&l, "msg",
            "open-file limit too low for max_sessions and max_outbound; "
            "raise it (ulimit -n) or lower the limits");
    log_end(&l);
  }
}

static int drop_privileges(const struct config *cfg) {
  if (!cfg->has_user || geteuid() != 0)
    return 0;
  /* The queue belongs to the user we run as, so that a later start as
   * that user (or a restart after this one) can open it. */
  static const char *const suffix[] = {"", "-wal", "-shm", ".lock"};
  for (size_t i = 0; i < sizeof suffix / sizeof suffix[0]; i++) {
    char path[4200];
    snprintf(path, sizeof path, "%s%s", cfg->queue_path, suffix[i]);
    if (chown(path, cfg->uid, cfg->gid) < 0 && errno != ENOENT) {
      log_msg(LOG_ERROR, "startup", "cannot give %s to user %u:%u: %s", path,
              cfg->uid, cfg->gid, strerror(errno));
      return -1;
    }
  }
  if (setgroups(0, NULL) < 0 || setgid(cfg->gid) < 0 || setuid(cfg->uid) < 0) {
    log_msg(LOG_ERROR, "startup", "cannot switch to user %u:%u: %s", cfg->uid,
            cfg->gid, strerror(errno));
    return -1;
  }
  /* DATA spools are created in the queue's directory: check now rather
   * than failing every large message later. */
  char dir[sizeof cfg->queue_path];
  config_queue_dir(cfg, dir, sizeof dir);
  if (access(dir, W_OK | X_OK) < 0) {
    log_msg(LOG_ERROR, "startup",
            "queue directory %s is not writable by user %u:%u: %s", dir,
            cfg->uid, cfg->gid, strerror(errno));
    return -1;
  }
  return 0;
}

static void on_handle_closed(uv_handle_t *h) {
  (void)h;
}

static void close_handles(struct serve *sv) {
  uv_close((uv_handle_t *)&sv->sig_term, on_handle_closed);
  uv_close((uv_handle_t *)&sv->sig_int, on_handle_closed);
  uv_close((uv_handle_t *)&sv->sig_hup, on_handle_closed);
  uv_close((uv_handle_t *)&sv->shutdown_timer, on_handle_closed);
  uv_close((uv_handle_t *)&sv->drain_timer, on_handle_closed);
  uv_close((uv_handle_t *)&sv->handoff_timer, on_handle_closed);
}

static void on_store_closed(void *data) {
  struct serve *sv = data;
  sv->store = NULL;
  close_handles(sv);
}

static void on_sched_freed(void *data) {
  struct serve *sv = data;
  sv->sched = NULL;
  outbound_free(sv->outbound);
  sv->outbound = NULL;
  store_close(sv->store, on_store_closed, sv);
}

static void close_rest(struct serve *sv);

static void on_inbound_freed(void *data) {
  struct serve *sv = data;
  sv->inbound = NULL;
  /* The last session may end in a close callback, after which the loop
   * could block in poll with nothing left to wake the drain check. */
  close_rest(sv);
}

/*
 * Shutdown runs in stages, checked after every loop turn:
 *   1  draining: no new sessions or deliveries; wait for those in flight
 *      (or shutdown_timeout);
 *   2  closing: end what is left (its recipients stay queued in the store
 *      and are retried after the restart); wait for the last outcome;
 *   3  the scheduler, the resolver and then the queue close.
 */
static void close_rest(struct serve *sv) {
  if (sv->stopping != 2 || sv->inbound || outbound_active(sv->outbound) ||
      sv->load_job)
    return;
  sv->stopping = 3;
  uv_timer_stop(&sv->drain_timer);
  sched_free(sv->sched, on_sched_freed, sv);
}

static void finish(struct serve *sv) {
  if (sv->stopping >= 2)
    return;
  sv->stopping = 2;
  uv_timer_stop(&sv->shutdown_timer);
  struct log_line l;
  log_begin(&l, LOG_INFO, "shutdown");
  log_str(&l, "state", "closing");
  log_int(&l, "sessions", sv->stats.sessions);
  log_int(&l, "outbound", outbound_active(sv->outbound));
  log_end(&l);
  if (sv->admin) {
    admin_stop(sv->admin);
    sv->admin = NULL;
  }
  metrics_stop(sv->metrics); /* before the scheduler it reads goes */
  sv->metrics = NULL;
  if (sv->load_job)
    store_cancel(sv->load_job);
  outbound_abort_all(sv->outbound);
  inbound_free(sv->inbound, on_inbound_freed, sv);
  close_rest(sv);
}

static void on_shutdown_timeout(uv_timer_t *t) {
  finish(t->data);
}

/* A short repeating timer rather than a check handle: the last session or
 * delivery may end in a close callback, after which nothing else would
 * wake the loop before shutdown_timeout. */
static void on_drain_check(uv_timer_t *c) {
  struct serve *sv = c->data;
  if (sv->stopping == 1 && inbound_sessions(sv->inbound) == 0 &&
      outbound_active(sv->outbound) == 0)
    finish(sv);
  else if (sv->stopping == 2)
    close_rest(sv);
}

static void begin_shutdown(struct serve *sv, const char *why) {
  if (sv->stopping)
    return;
  sv->stopping = 1;
  struct log_line l;
  log_begin(&l, LOG_INFO, "shutdown");
  log_str(&l, "signal", why);
  log_int(&l, "sessions", inbound_sessions(sv->inbound));
  log_int(&l, "outbound", outbound_active(sv->outbound));
  log_int(&l, "timeout_ms", (long long)sv->cfg->shutdown_timeout_ms);
  log_end(&l);
  inbound_stop_accepting(sv->inbound);
  uv_timer_stop(&sv->handoff_timer);
  sv->stats.listening = 0;
  sv->stats.shutting_down = 1; /* /readyz 503 from now on */
  sched_stop(sv->sched);
  outbound_close_idle(sv->outbound);
  uv_timer_start(&sv->shutdown_timer, on_shutdown_timeout,
                 sv->cfg->shutdown_timeout_ms, 0);
  uv_timer_start(&sv->drain_timer, on_drain_check, 20, 20);
}

/* Hands a message's open recipients to the scheduler. */
static void schedule(struct serve *sv, const struct store_msg *m) {
  struct sched_rcpt rc[64];
  struct sched_rcpt *r = m->nrcpts <= 64 ? rc : calloc(m->nrcpts, sizeof *r);
  if (!r)
    return;
  size_t n = 0;
  for (size_t i = 0; i < m->nrcpts; i++) {
    const struct store_rcpt *sr = &m->rcpts[i];
    if (sr->state == STORE_RCPT_DELIVERED || sr->state == STORE_RCPT_BOUNCED)
      continue;
    r[n++] = (struct sched_rcpt){
        .idx = sr->idx,
        .dest = outbound_dest_for(sv->outbound, m->sender ? m->sender : "",
                                  sr->domain ? sr->domain : ""),
        .attempts = sr->attempts,
        .next_attempt_at = sr->next_attempt_at * 1000,
    };
  }
  struct sched_msg sm = {.id = m->id,
                         .received_at = sched_arrival_ms(m->received_at),
                         .size = m->size,
                         .held = m->held,
                         .notices = m->notices, /* delay warning sent */
                         .rcpts = r,
                         .nrcpts = n};
  /* store_load() hands over only what was queued before this process
   * opened the queue, and everything committed since is scheduled by
   * on_queued() or by outbound (bounces), so nothing comes twice: a
   * message delivered while the load runs cannot be scheduled again.
   * -EEXIST would mean a bug; it is logged like any failure. */
  int added = n ? sched_add(sv->sched, &sm) : 0;
  if (added < 0)
    log_msg(LOG_WARN, "scheduler", "cannot schedule %s: %s", m->id,
            strerror(-added));
  if (r != rc)
    free(r);
}

static uint64_t sub_sat(uint64_t a, uint64_t b) {
  return a > b ? a - b : 0;
}

/* Tells admin (its refusals, "loading") and the stats (status and
 * /metrics) how far the start-up load is. */
static void publish_loading(struct serve *sv) {
  /* Until the count is known, status waits for it (NULL). */
  const struct store_counts *u = sv->counted ? &sv->unloaded : NULL;
  /* The stats first: admin answers the status requests that waited for
   * the count from them. */
  stats_set_loading(&sv->stats, sv->loading, u);
  if (sv->admin)
    admin_set_loading(sv->admin, sv->loading, u);
}

static void on_counted(struct store *st, int status,
                       const struct store_counts *c, void *data) {
  (void)st;
  struct serve *sv = data;
  /* The count runs before the load's first batch (one FIFO reader lane).
   * Without it, status answers with what the scheduler has. */
  if (status < 0)
    log_msg(LOG_WARN, "queue", "cannot count the queue: %s", strerror(-status));
  else
    sv->unloaded = *c;
  sv->counted = 1;
  if (sv->loading)
    publish_loading(sv);
}

static void on_loaded(struct store *st, int status,
                      const struct store_msg *msgs, size_t n, int done,
                      void *data) {
  (void)st;
  struct serve *sv = data;
  for (size_t i = 0; i < n; i++) {
    const struct store_msg *m = &msgs[i];
    schedule(sv, m);
    uint64_t deferred = 0;
    for (size_t k = 0; k < m->nrcpts; k++)
      deferred += m->rcpts[k].attempts > 0;
    sv->unloaded.messages = sub_sat(sv->unloaded.messages, 1);
    sv->unloaded.recipients = sub_sat(sv->unloaded.recipients, m->nrcpts);
    sv->unloaded.deferred = sub_sat(sv->unloaded.deferred, deferred);
    if (m->held)
      sv->unloaded.held = sub_sat(sv->unloaded.held, 1);
  }
  if (done) {
    sv->load_job = NULL;
    sv->loading = 0;
    /* A drain started while the queue loaded flushed only what was
     * loaded then: the rest is due now too. */
    if (sv->stats.draining)
      sched_flush(sv->sched, NULL);
    memset(&sv->unloaded, 0, sizeof sv->unloaded);
    if (status < 0 && status != -ECANCELED)
      log_msg(LOG_ERROR, "queue", "cannot load the queue: %s",
              strerror(-status));
  }
  publish_loading(sv);
}

static void on_signal(uv_signal_t *s, int signum) {
  struct serve *sv = s->data;
  if (signum == SIGHUP) {
    inbound_reload(sv->inbound);
    outbound_reload(sv->outbound);
    /* Suspensions cover the keys of the routes now in force. */
    admin_set_destinations(sv->admin, sv->cfg, outbound_routes(sv->outbound));
    return;
  }
  begin_shutdown(sv, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* ---- drain (CONTRACT §1 `mailhop drain`) -------------------------------- */

/* The CLI's timeout passed: say what is left (the daemon goes on
 * draining, not accepting, until `drain --cancel` or SIGTERM). */
static void on_handoff_timeout(uv_timer_t *t) {
  struct serve *sv = t->data;
  struct stats_snapshot sn;
  stats_snapshot(&sv->stats, sv->sched, sv->stats.started_at,
                 (int64_t)time(NULL), &sn);
  struct log_line l;
  log_begin(&l, LOG_WARN, "drain");
  log_str(&l, "state", "timeout");
  log_int(&l, "remaining", (long long)(sn.queue_messages - sn.queue_held));
  log_end(&l);
}

/* admin's `drain` (admin_drain_cb): stop accepting and hand the queue on,
 * or undo it. */
static int serve_drain(void *data, int cancel, const struct route_host *to,
                       int64_t timeout_s, char *err, size_t errlen) {
  struct serve *sv = data;
  if (sv->stopping) {
    snprintf(err, errlen, "shutting down");
    return -1;
  }
  struct log_line l;
  if (cancel) {
    uv_timer_stop(&sv->handoff_timer);
    outbound_set_drain_to(sv->outbound, NULL, 0);
    sched_suspensions_hold(sv->sched, 1);
    if (inbound_resume_accepting(sv->inbound, err, errlen) < 0) {
      /* Not accepting after all: readiness stays false. */
      log_msg(LOG_ERROR, "drain", "cannot reopen the listeners: %s", err);
      return -1;
    }
    sv->stats.draining = 0;
    log_begin(&l, LOG_INFO, "drain");
    log_str(&l, "state", "cancelled");
    log_end(&l);
    return 0;
  }
  if (outbound_set_drain_to(sv->outbound, to ? to->host : NULL,
                            to ? to->port : 0) < 0) {
    snprintf(err, errlen, "bad peer");
    return -1;
  }
  inbound_stop_accepting(sv->inbound);
  inbound_drain_sessions(sv->inbound, 1);
  sv->stats.draining = 1; /* /readyz 503, status "accepting": false */
  /* Every message not held is due now.  Held ones wait, as for flush;
   * so do suspended destinations' when the drain delivers by their own
   * routes, but not when it hands the queue to a peer: that is not a
   * delivery to the suspended destination, and a node being emptied
   * should not keep mail back for a suspension of its own (the operator
   * suspends it on the peer too, if it should wait there). */
  sched_suspensions_hold(sv->sched, to == NULL);
  int flushed = sched_flush(sv->sched, NULL);
  log_begin(&l, LOG_INFO, "drain");
  log_str(&l, "state", "started");
  if (to) {
    char peer[300];
    snprintf(peer, sizeof peer, strchr(to->host, ':') ? "[%s]:%u" : "%s:%u",
             to->host, (unsigned)to->port);
    log_str(&l, "to", peer);
  }
  log_int(&l, "flushed", flushed < 0 ? 0 : flushed);
  if (timeout_s > 0)
    log_int(&l, "timeout_s", (long long)timeout_s);
  log_end(&l);
  uv_timer_stop(&sv->handoff_timer);
  if (timeout_s > 0)
    uv_timer_start(&sv->handoff_timer, on_handoff_timeout,
                   (uint64_t)timeout_s * 1000, 0);
  return 0;
}

static void on_queued(const struct store_msg *msg, void *data) {
  struct serve *sv = data;
  if (sv->sched)
    schedule(sv, msg);
}

int serve_main(const struct config *cfg) {
  struct serve sv;
  memset(&sv, 0, sizeof sv);
  sv.cfg = cfg;
  sv.loop = uv_default_loop();
  sv.stats.started_at = (int64_t)time(NULL);
  signal(SIGPIPE, SIG_IGN);
  raise_nofile(cfg);
  /* The pool runs the queue's two lanes, DATA spool writes and up to two
   * password hashes at once: libuv's default of 4 threads would let slow
   * hashes delay commits.  Must be set before the pool first starts. */
  setenv("UV_THREADPOOL_SIZE", "8", 0);

  char err[1024];
  /* So are the files it names (certificate, trust anchors, users, DKIM
   * keys): read once here, so that each mistake is exit 1, as check
   * says it (before, a bad tls_ca_file was only found by the outbound
   * side, exit 2). */
  if (preflight_files(cfg, 0, err, sizeof err) < 0) {
    log_msg(LOG_ERROR, "startup", "%s", err);
    return 1;
  }
  /* The routes are configuration: a bad file is exit 1 (CONTRACT §4a). */
  struct relay_routes *routes;
  if (relay_routes_load(cfg->routes_file, &routes, err, sizeof err) < 0) {
    log_msg(LOG_ERROR, "startup", "%s", err);
    return 1;
  }
  if (routes->rs.n)
    log_msg(LOG_INFO, "startup", "%zu routes from %s", routes->rs.n,
            cfg->routes_file);
  if (cfg->relayhost_oauth2_token_url[0] && !oauth2_supported()) {
    log_msg(LOG_ERROR, "startup",
            "relayhost_oauth2_token_url: this mailhop was built without "
            "libcurl (meson -Doauth2=disabled, as the static image is); use "
            "the slim image, or a token file kept fresh by another program "
            "(relayhost_password_file)");
    relay_routes_unref(routes);
    return 1;
  }
  int rc = store_open(sv.loop, cfg->queue_path, &sv.store, err, sizeof err);
  if (rc < 0) {
    log_msg(LOG_ERROR, "startup", "%s", err);
    relay_routes_unref(routes);
    return 2;
  }
  /* Tests only: a full disk without root (store.h). */
  const char *enospc = getenv("MAILHOP_DEBUG_ENOSPC_FILE");
  if (enospc && *enospc && store_debug_enospc_file(sv.store, enospc) == 0)
    log_msg(LOG_WARN, "startup", "test hook: store writes fail while %s exists",
            enospc);
  sv.outbound =
      outbound_new(sv.loop, cfg, sv.store, &sv.stats, err, sizeof err);
  if (!sv.outbound) {
    log_msg(LOG_ERROR, "startup", "%s", err);
    relay_routes_unref(routes);
    store_close(sv.store, NULL, NULL);
    uv_run(sv.loop, UV_RUN_DEFAULT);
    return 2;
  }
  struct sched_opts so = {
      .max_outbound = (unsigned)cfg->max_outbound,
      .max_per_destination = (unsigned)cfg->max_per_destination,
      .dispatch = outbound_dispatch,
      .backoff_ms = outbound_backoff,
      .data = sv.outbound,
      /* rates: destination_rate, outbound_rate (CONTRACT §2) */
      .dest_rate_n = cfg->destination_rate.n,
      .dest_rate_ms = (int64_t)cfg->destination_rate.window_ms,
      .global_rate_n = cfg->outbound_rate.n,
      .global_rate_ms = (int64_t)cfg->outbound_rate.window_ms,
      /* deadlines: queue_lifetime, delay_warning_time (CONTRACT §4, §2)
       * come at their time whatever the destination's gates */
      .lifetime_ms = (int64_t)cfg->queue_lifetime_ms,
      .warn_ms = (int64_t)cfg->delay_warning_time_ms,
      .warned_bit = STORE_NOTICE_DELAY,
  };
  sv.sched = sched_new(sv.loop, &so);
  if (!sv.sched) {
    log_msg(LOG_ERROR, "startup", "cannot create the scheduler");
    return 2;
  }
  outbound_set_sched(sv.outbound, sv.sched);
  outbound_set_routes(sv.outbound, routes); /* after: routes' rates */
  sv.admin = admin_start(sv.loop, cfg->admin_socket, sv.store, sv.sched,
                         &sv.stats, err, sizeof err);
  if (!sv.admin) {
    log_msg(LOG_ERROR, "startup", "%s", err);
    return 2;
  }
  /* Before the queue loads: a suspended relayhost covers its routes. */
  admin_set_destinations(sv.admin, cfg, outbound_routes(sv.outbound));
  admin_set_tlsrpt(sv.admin, tlsrpt_json_arg, outbound_tlsrpt(sv.outbound));
  /* Before the SMTP listeners: /readyz says 503 until they are open. */
  rc = metrics_start(sv.loop, cfg, &sv.stats, sv.sched, &sv.metrics, err,
                     sizeof err);
  if (rc < 0) {
    /* A build without HTTP cannot honour the key: bad configuration. */
    log_msg(LOG_ERROR, "startup", "%s", err);
    admin_stop(sv.admin);
    return rc == -ENOTSUP ? 1 : 2;
  }
  /* The load runs while inbound and delivery are live: the store hands
   * over only what was queued before it was opened (store_load), and the
   * count first gives `status` right figures while it runs. */
  sv.loading = 1;
  publish_loading(&sv);
  if (store_count(sv.store, on_counted, &sv) < 0 ||
      store_load(sv.store, on_loaded, &sv, &sv.load_job) < 0) {
    log_msg(LOG_ERROR, "startup", "cannot load the queue");
    return 2;
  }
  int bad_config = 0;
  sv.inbound = inbound_start(sv.loop, cfg, sv.store, &sv.stats, on_queued, &sv,
                             &bad_config, err, sizeof err);
  if (!sv.inbound) {
    /* A bad certificate or users file is bad configuration (exit 1); a
     * listener that cannot bind is a runtime failure (exit 2). */
    log_msg(LOG_ERROR, "startup", "%s", err);
    admin_stop(sv.admin);
    return bad_config ? 1 : 2;
  }
  sv.stats.listening = 1;
  if (drop_privileges(cfg) < 0) {
    sv.exit_code = 2;
    sv.stopping = 1;
  }

  uv_signal_init(sv.loop, &sv.sig_term);
  uv_signal_init(sv.loop, &sv.sig_int);
  uv_signal_init(sv.loop, &sv.sig_hup);
  uv_timer_init(sv.loop, &sv.shutdown_timer);
  uv_timer_init(sv.loop, &sv.drain_timer);
  uv_timer_init(sv.loop, &sv.handoff_timer);
  sv.handoff_timer.data = &sv;
  admin_set_drain(sv.admin, serve_drain, &sv);
  sv.sig_term.data = sv.sig_int.data = sv.sig_hup.data = &sv;
  sv.shutdown_timer.data = sv.drain_timer.data = &sv;
  uv_signal_start(&sv.sig_term, on_signal, SIGTERM);
  uv_signal_start(&sv.sig_int, on_signal, SIGINT);
  uv_signal_start(&sv.sig_hup, on_signal, SIGHUP);
  if (sv.stopping) {
    sv.stopping = 0;
    begin_shutdown(&sv, "startup-failure");
  }

  uv_run(sv.loop, UV_RUN_DEFAULT);
  int close_rc = uv_loop_close(sv.loop);
  if (close_rc != 0)
    log_msg(LOG_WARN, "shutdown", "loop closed with handles open: %s",
            uv_strerror(close_rc));
  log_msg(LOG_INFO, "shutdown", "done");
  return sv.exit_code;
}
