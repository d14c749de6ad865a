/*
 * outbound/dispatch: the scheduler's jobs become deliveries; the envelope,
 * the resolution of the destination and the engine's life cycle (see
 * dispatch.h and relay/outbound.h).
 */
#include "relay/outbound/dispatch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "dns/resolver.h"
#include "log.h"
#include "loop/conn.h"
#include "loop/https_client.h"
#include "loop/tls.h"
#include "proto/rate.h"
#include "proto/smtp_client.h"
#include "proto/smtp_parse.h"
#include "queue/retry.h"
#include "queue/sched.h"
#include "queue/store.h"
#include "relay/outbound.h"
#include "relay/dkim.h"
#include "relay/outbound/cache.h"
#include "relay/outbound/dane.h"
#include "relay/outbound/record.h"
#include "relay/outbound/session.h"
#include "relay/outbound/sts.h"
#include "relay/outbound/trust.h"
#include "relay/tlsrpt.h"
#include "relay/resolver_setup.h"
#include "relay/routes.h"
#include "relay/stats.h"

static char *xstrdup(const char *s) {
  return s ? strdup(s) : NULL;
}

int64_t dispatch_wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t dispatch_sched_ms(const struct outbound *ob) {
  return ob->sched ? sched_now(ob->sched) : dispatch_wall_ms();
}

/* The route of a recipient: a line of the routes file, or the global
 * settings (the relayhost, or MX delivery). */
static const struct route *route_of(const struct outbound *ob,
                                    const char *sender, const char *domain) {
  const struct route *rt =
      routes_match(ob->routes ? &ob->routes->rs : NULL, sender, domain);
  if (rt)
    return rt;
  return ob->global.n_hosts > 0 ? &ob->global : &ob->mx;
}

const char *outbound_dest_for(const struct outbound *ob, const char *sender,
                              const char *domain) {
  const struct route *rt = route_of(ob, sender, domain);
  return rt->n_hosts > 0 ? rt->key : domain;
}

const char *outbound_dest(const struct outbound *ob, const char *domain) {
  return outbound_dest_for(ob, "", domain);
}

int64_t outbound_backoff(const char *dest, unsigned fails, void *data) {
  (void)dest;
  const struct outbound *ob = data;
  return (int64_t)retry_delay(ob->cfg->retry_schedule_ms,
                              ob->cfg->n_retry_schedule, (int)fails);
}

int outbound_active(const struct outbound *ob) {
  return ob->active;
}

void outbound_set_sched(struct outbound *ob, struct sched *sched) {
  ob->sched = sched;
}

void dispatch_decide(struct delivery *d, size_t i, enum outcome_state st,
                     const char *err, const char *status) {
  struct drcpt *r = &d->r[i];
  r->state = st;
  snprintf(r->err, sizeof r->err, "%s", err ? err : "");
  snprintf(r->status, sizeof r->status, "%s", status ? status : "");
  snprintf(r->remote, sizeof r->remote, "%s", d->remote);
  const struct conn_tls_info *ti = d->conn ? conn_tls(d->conn) : NULL;
  snprintf(r->tls, sizeof r->tls, "%s",
           ti && ti->ok && ti->version ? ti->version : "");
  /* DANE wins where it authenticated the peer; else MTA-STS's (§4b). */
  const char *pol = dane_conn_policy(d->conn);
  if (strcmp(pol, "dane") != 0)
    pol = trust_policy_name(d);
  snprintf(r->tls_policy, sizeof r->tls_policy, "%s", pol);
}

void dispatch_decide_pending(struct delivery *d, enum outcome_state st,
                             const char *err, const char *status) {
  for (size_t i = 0; i < d->n; i++)
    if (d->r[i].state == OUTCOME_PENDING || d->r[i].state == OUTCOME_NEXT_TX)
      dispatch_decide(d, i, st, err, status);
}

size_t dispatch_count_pending(const struct delivery *d) {
  size_t k = 0;
  for (size_t i = 0; i < d->n; i++)
    k += d->r[i].state == OUTCOME_PENDING || d->r[i].state == OUTCOME_NEXT_TX;
  return k;
}

/* ---- resolution --------------------------------------------------------- */

static void on_resolved(struct resolver_query *q, const struct mx_result *res,
                        void *data) {
  (void)q;
  struct delivery *d = data;
  d->q = NULL;
  if (res->status == DNS_CANCELED) {
    /* Shutdown: not an attempt; the recipients stay as they are. */
    record_finish(d);
    return;
  }
  if (res->status == DNS_OK) {
    d->mx_secure = res->mx_secure;
    for (int i = 0; i < res->n && d->ncands < OB_MAX_CANDS; i++) {
      d->cand_relay[d->ncands] = d->relay_idx;
      d->cands[d->ncands++] = res->c[i];
    }
  } else if (d->relayhost) {
    /* A broken relayhost never bounces the queue: defer. */
    snprintf(d->last_err, sizeof d->last_err, "relayhost %s: %s",
             d->rt->hosts[d->relay_idx].host, res->reason);
  } else {
    snprintf(d->last_err, sizeof d->last_err, "%s", res->reason);
    if (res->status == DNS_PERMFAIL) {
      d->remote[0] = '\0';
      dispatch_decide_pending(d, OUTCOME_PERMFAIL, res->reason, res->dsn);
      d->dest_ok = 1;
    } else {
      dispatch_decide_pending(d, OUTCOME_TEMPFAIL, res->reason, res->dsn);
    }
    record_finish(d);
    return;
  }
  if (d->relayhost && ++d->relay_idx < d->rt->n_hosts) {
    dispatch_resolve(d);
    return;
  }
  if (d->ncands == 0) {
    dispatch_decide_pending(d, OUTCOME_TEMPFAIL, d->last_err, "4.4.3");
    record_finish(d);
    return;
  }
  /* MTA-STS (and, on the DANE side, DANE) before the first connection. */
  trust_after_resolve(d);
}

void dispatch_resolve(struct delivery *d) {
  struct outbound *ob = d->ob;
  if (d->relayhost) {
    const struct route_host *rh = &d->rt->hosts[d->relay_idx];
    d->q =
        rh->mx_lookup
            ? resolver_lookup_mx(ob->res, rh->host, rh->port, on_resolved, d)
            : resolver_lookup_host(ob->res, rh->host, rh->port, on_resolved, d);
  } else {
    d->q = resolver_lookup_mx(ob->res, d->job->dest, ob->cfg->smtp_port,
                              on_resolved, d);
  }
  if (!d->q) {
    dispatch_decide_pending(d, OUTCOME_TEMPFAIL, "out of memory", "4.3.0");
    record_finish(d);
  }
}

/* ---- envelope ----------------------------------------------------------- */

static char *xtext(const char *s) {
  if (!s)
    return NULL;
  size_t cap = strlen(s) * 3 + 1;
  char *out = malloc(cap);
  if (out && smtp_xtext_encode(out, cap, s, strlen(s)) < 0) {
    free(out);
    return NULL;
  }
  return out;
}

static void on_show(struct store *st, int status, const struct store_msg *m,
                    void *data) {
  (void)st;
  struct delivery *d = data;
  if (status < 0) {
    /* Gone (deleted meanwhile): the scheduler forgets it.  Unreadable:
     * nothing changes in the store; try again a minute later. */
    struct outbound *ob = d->ob;
    struct sched_result *res = calloc(d->n, sizeof *res);
    if (res) {
      for (size_t i = 0; i < d->n; i++) {
        res[i].idx = d->r[i].idx;
        res[i].attempts = d->r[i].attempts;
        res[i].outcome = status == -ENOENT ? SCHED_FINAL : SCHED_RETRY;
        res[i].retry_at = dispatch_sched_ms(ob) + 60000;
      }
    }
    if (status != -ENOENT)
      log_msg(LOG_WARN, "queue", "cannot read message %s: %s", d->id,
              strerror(-status));
    if (ob->sched)
      sched_job_done(ob->sched, d->job, res, res ? d->n : 0, 1);
    free(res);
    dispatch_free(d);
    return;
  }
  d->sender = xstrdup(m->sender);
  d->envid_x = xtext(m->envid);
  d->ret = m->ret;
  d->flags = m->flags;
  d->received_at = m->received_at;
  d->size = m->size;
  d->headers = xstrdup(m->headers);
  d->notices = m->notices; /* rates: delay warning sent (issue 19) */
  for (size_t j = 0; j < d->n; j++) {
    for (size_t i = 0; i < m->nrcpts; i++) {
      const struct store_rcpt *sr = &m->rcpts[i];
      if (sr->idx != d->r[j].idx)
        continue;
      d->r[j].addr = xstrdup(sr->address);
      d->r[j].notify = (unsigned)sr->notify;
      if (sr->orcpt) {
        const char *semi = strchr(sr->orcpt, ';');
        char *x = semi ? xtext(semi + 1) : NULL;
        if (x) {
          size_t len = (size_t)(semi - sr->orcpt) + strlen(x) + 2;
          d->r[j].orcpt = malloc(len);
          if (d->r[j].orcpt)
            snprintf(d->r[j].orcpt, len, "%.*s;%s", (int)(semi - sr->orcpt),
                     sr->orcpt, x);
          free(x);
        }
      }
    }
    if (!d->r[j].addr) /* already final in the store */
      dispatch_decide(d, j, OUTCOME_FINAL, NULL, NULL);
  }
  if (d->job->deadline) {
    /* A deadline (queue_lifetime, delay_warning_time) came while the
     * recipients wait: no attempt; they expire, warn or stay as stored. */
    for (size_t j = 0; j < d->n; j++) {
      if (d->r[j].state != OUTCOME_PENDING)
        continue;
      for (size_t i = 0; i < m->nrcpts; i++) {
        const struct store_rcpt *sr = &m->rcpts[i];
        if (sr->idx != d->r[j].idx)
          continue;
        d->r[j].state = OUTCOME_WAITING;
        d->r[j].attempts = sr->attempts;
        d->r[j].next_at_s = sr->next_attempt_at;
        snprintf(d->r[j].err, sizeof d->r[j].err, "%s",
                 sr->last_error ? sr->last_error : "");
      }
    }
    record_finish(d);
    return;
  }
  if (!d->sender || dispatch_count_pending(d) == 0) {
    record_finish(d);
    return;
  }
  /* The route, chosen afresh from the current routes: the recipients of
   * one job share their destination key, so the first open one speaks
   * for all (after a reload that moved them, they go together by the
   * route of the first until they are scheduled again). */
  const char *domain = "";
  for (size_t j = 0; j < d->n; j++) {
    const char *at = d->r[j].addr ? strrchr(d->r[j].addr, '@') : NULL;
    if (at) {
      domain = at + 1;
      break;
    }
  }
  d->routes = relay_routes_ref(d->ob->routes);
  /* `drain --to`: the peer instead of the message's own route; the job
   * keeps its destination key (the scheduler's grouping and limits). */
  d->rt = d->ob->drain_to ? &d->ob->drain : route_of(d->ob, d->sender, domain);
  d->relayhost = d->rt->n_hosts > 0;
  /* MTA-STS first (outbound/trust.h): it decides which kept connection
   * may be reused; it goes on with dispatch_connect. */
  trust_begin(d);
}

void dispatch_connect(struct delivery *d) {
  struct conn *conn;
  struct smtp_client *cli;
  char remote[OB_REMOTE_MAX];
  if (cache_take(d->ob, d->job->dest, trust_stamp(d), &conn, &cli, remote,
                 sizeof remote)) {
    session_reuse(d, conn, cli, remote);
    return;
  }
  dispatch_credentials(d);
}

/* ---- credentials -------------------------------------------------------- */

/* Pool thread: the password (or token) file, read again for every
 * delivery so that an outside refresher may replace it (CONTRACT §4a). */
static void secret_work(uv_work_t *w) {
  struct delivery *d = w->data;
  d->secret_rc =
      relay_read_secret(d->rt->password_file, d->password, sizeof d->password,
                        d->secret_why, sizeof d->secret_why);
}

static void secret_done(uv_work_t *w, int status) {
  struct delivery *d = w->data;
  struct outbound *ob = d->ob;
  d->secret_work.data = NULL;
  if (status == UV_ECANCELED || ob->stopping || ob->freeing) {
    record_finish(d); /* shutdown: the recipients stay as they are */
    return;
  }
  if (d->secret_rc < 0) {
    /* A relayhost problem: defer, never bounce (CONTRACT §4). */
    snprintf(d->last_err, sizeof d->last_err, "relayhost_password_file: %s",
             d->secret_why);
    dispatch_decide_pending(d, OUTCOME_TEMPFAIL, d->last_err, "4.7.0");
    record_finish(d);
    return;
  }
  dispatch_resolve(d);
}

int dispatch_token_arrived(struct delivery *d, int rc, const char *token,
                           const char *why) {
  struct outbound *ob = d->ob;
  if (rc == -2 || ob->stopping || ob->freeing) {
    record_finish(d); /* shutdown: the recipients stay as they are */
    return -1;
  }
  if (rc < 0) {
    /* A relayhost problem: defer, never bounce (CONTRACT §4). */
    snprintf(d->last_err, sizeof d->last_err, "%s", why);
    dispatch_decide_pending(d, OUTCOME_TEMPFAIL, d->last_err, "4.7.0");
    record_finish(d);
    return -1;
  }
  snprintf(d->password, sizeof d->password, "%s", token);
  return 0;
}

/* The OAuth2 access token for the global relayhost (CONTRACT §4a). */
static void on_token(void *arg, int rc, const char *token, const char *why) {
  struct delivery *d = arg;
  if (dispatch_token_arrived(d, rc, token, why) < 0)
    return;
  d->oauth2_token = 1;
  dispatch_resolve(d);
}

void dispatch_credentials(struct delivery *d) {
  const struct route *rt = d->rt;
  if (!d->relayhost || !rt->user[0]) {
    dispatch_resolve(d);
    return;
  }
  if (rt == &d->ob->global && d->ob->oauth2) {
    oauth2_get(d->ob->oauth2, &d->token_wait, on_token, d);
    return;
  }
  if (!rt->password_file[0]) {
    /* The global relayhost_password (set inline, or from a MAILHOP_*_FILE
     * variable at start-up). */
    snprintf(d->password, sizeof d->password, "%s",
             d->ob->cfg->relayhost_password);
    dispatch_resolve(d);
    return;
  }
  d->secret_work.data = d;
  if (uv_queue_work(d->ob->loop, &d->secret_work, secret_work, secret_done) <
      0) {
    d->secret_work.data = NULL;
    dispatch_decide_pending(d, OUTCOME_TEMPFAIL, "cannot read the password",
                            "4.3.0");
    record_finish(d);
  }
}

void outbound_dispatch(struct sched *s, struct sched_job *job, void *data) {
  (void)s;
  struct outbound *ob = data;
  struct delivery *d = calloc(1, sizeof *d);
  if (d) {
    d->r = calloc(job->nrcpts, sizeof *d->r);
    d->txr = calloc(job->nrcpts, sizeof *d->txr);
    d->txmap = calloc(job->nrcpts, sizeof *d->txmap);
    d->rbuf = malloc(OB_BODY_CHUNK);
    d->ebuf = malloc(encode_bound(OB_BODY_CHUNK) + ENCODE_FINISH_MAX);
  }
  if (!d || !d->r || !d->txr || !d->txmap || !d->rbuf || !d->ebuf) {
    if (d) {
      free(d->r);
      free(d->txr);
      free(d->txmap);
      free(d->rbuf);
      free(d->ebuf);
      free(d);
    }
    sched_job_done(s, job, NULL, 0, 1); /* due again now-ish */
    return;
  }
  d->ob = ob;
  d->job = job;
  d->n = job->nrcpts;
  d->relayhost = ob->cfg->n_relayhost > 0;
  d->started_ms = (int64_t)uv_now(ob->loop);
  snprintf(d->id, sizeof d->id, "%s", job->id);
  for (size_t i = 0; i < d->n; i++) {
    d->r[i].idx = job->rcpts[i].idx;
    d->r[i].attempts = job->rcpts[i].attempts;
  }
  d->lnext = ob->list;
  if (ob->list)
    ob->list->lprev = d;
  ob->list = d;
  ob->active++;
  /* status: deliveries in flight, whether resolving, connecting or sending */
  ob->stats->outbound = ob->active;
  if (store_show(ob->store, d->id, on_show, d) < 0)
    record_finish(d);
}

/* Closes every cached connection (shutdown). */
void outbound_close_idle(struct outbound *ob) {
  ob->stopping = 1;
  /* Deliveries still resolving end now; their recipients stay as they are
   * in the queue (on_resolved, DNS_CANCELED). */
  struct delivery *next;
  for (struct delivery *d = ob->list; d; d = next) {
    next = d->lnext;
    if (d->q) {
      struct resolver_query *q = d->q;
      d->q = NULL;
      resolver_cancel(q);
    } else {
      trust_abort(d); /* waiting for its MTA-STS verdict */
    }
  }
  cache_close_all(ob);
}

void dispatch_free(struct delivery *d) {
  struct outbound *ob = d->ob;
  if (d->lprev)
    d->lprev->lnext = d->lnext;
  else
    ob->list = d->lnext;
  if (d->lnext)
    d->lnext->lprev = d->lprev;
  ob->active--;
  ob->stats->outbound = ob->active;
  for (size_t i = 0; i < d->n; i++) {
    free(d->r[i].addr);
    free(d->r[i].orcpt);
  }
  free(d->r);
  free(d->txr);
  free(d->txmap);
  free(d->rbuf);
  free(d->ebuf);
  free(d->sender);
  free(d->envid_x);
  free(d->headers);
  free(d->sts_pol);
  free(d->tlsa);
  oauth2_cancel(d->ob->oauth2, &d->token_wait);
  explicit_bzero(d->password, sizeof d->password);
  relay_routes_unref(d->routes);
  free(d);
}

/* ---- life cycle --------------------------------------------------------- */

struct outbound *outbound_new(uv_loop_t *loop, const struct config *cfg,
                              struct store *st, struct stats *stats, char *err,
                              size_t errlen) {
  struct outbound *ob = calloc(1, sizeof *ob);
  if (!ob) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  ob->loop = loop;
  ob->cfg = cfg;
  ob->store = st;
  ob->stats = stats;
  /* The global settings as a route (unmatched mail, CONTRACT §4a). */
  _Static_assert(ROUTES_MAX_HOSTS >= CONFIG_MAX_LIST, "relayhost list");
  _Static_assert(
      (int)CONFIG_RELAYHOST_TLS_NONE == (int)ROUTE_TLS_NONE &&
          (int)CONFIG_RELAYHOST_TLS_IMPLICIT == (int)ROUTE_TLS_IMPLICIT &&
          (int)CONFIG_RELAYHOST_TLS_OPPORTUNISTIC ==
              (int)ROUTE_TLS_OPPORTUNISTIC &&
          (int)CONFIG_RELAYHOST_AUTH_XOAUTH2 == (int)ROUTE_AUTH_XOAUTH2 &&
          (int)CONFIG_RELAYHOST_AUTH_LOGIN == (int)ROUTE_AUTH_LOGIN,
      "route and config enums");
  struct route *g = &ob->global;
  for (int i = 0; i < cfg->n_relayhost; i++) {
    snprintf(g->hosts[i].host, sizeof g->hosts[i].host, "%s",
             cfg->relayhost[i].host);
    g->hosts[i].port = cfg->relayhost[i].port;
    g->hosts[i].mx_lookup = cfg->relayhost[i].mx_lookup;
  }
  g->n_hosts = cfg->n_relayhost;
  snprintf(g->user, sizeof g->user, "%s", cfg->relayhost_user);
  snprintf(g->password_file, sizeof g->password_file, "%s",
           cfg->relayhost_password_file);
  g->tls = (enum route_tls)cfg->relayhost_tls;
  g->auth = (enum route_auth)cfg->relayhost_auth;
  g->auth_plaintext = cfg->relayhost_auth_plaintext;
  snprintf(g->key, sizeof g->key, "relayhost");
  ob->mx.n_hosts = 0;
  int rerr = 0;
  ob->res = resolver_from_config(loop, cfg, &rerr);
  if (!ob->res) {
    snprintf(err, errlen, "cannot start the DNS resolver: %s",
             rerr == -ENOENT ? "no name server (set dns_servers)"
                             : strerror(-rerr));
    free(ob);
    return NULL;
  }
  resolver_set_counters(ob->res, stats->dns);
  ob->ctx_verify =
      tls_client_ctx_new(cfg->tls_ca_file[0] ? cfg->tls_ca_file : NULL,
                         TLS_VERIFY_REQUIRE, err, errlen);
  /* Opportunistic TLS verifies against the same trust anchors (recorded
   * as verified=, never enforced; issue 12 item 7). */
  ob->ctx_any =
      ob->ctx_verify
          ? tls_client_ctx_new(cfg->tls_ca_file[0] ? cfg->tls_ca_file : NULL,
                               TLS_VERIFY_NONE, err, errlen)
          : NULL;
  if (ob->ctx_verify && ob->ctx_any && dane_init(ob, err, errlen) < 0) {
    SSL_CTX_free(ob->ctx_any);
    ob->ctx_any = NULL;
  }
  if (!ob->ctx_verify || !ob->ctx_any) {
    if (ob->ctx_verify)
      SSL_CTX_free(ob->ctx_verify);
    resolver_free(ob->res);
    free(ob);
    return NULL;
  }
  /* mailhop as its own OAuth2 client (serve checked that the build has
   * it). */
  if (cfg->relayhost_oauth2_token_url[0]) {
    ob->oauth2 = oauth2_new(loop, cfg, err, errlen);
    if (!ob->oauth2) {
      SSL_CTX_free(ob->ctx_verify);
      SSL_CTX_free(ob->ctx_any);
      dane_free(ob);
      resolver_free(ob->res);
      free(ob);
      return NULL;
    }
  }
  /* MTA-STS (CONTRACT §4b): policies fetched over libcurl; a build
   * without it cannot honour them (said once, at start-up). */
  if (cfg->mta_sts) {
    if (https_client_supported() && https_client_init() == 0)
      ob->sts = sts_new(loop, cfg, st, ob->res);
    else
      log_msg(LOG_WARN, "startup",
              "mta_sts: this mailhop was built without libcurl; MTA-STS "
              "policies are not honoured");
  }
  ob->tlsrpt = tlsrpt_new(loop, cfg, st, ob->res, trust_submit_report, ob);
  /* Bounce signing: the keys again, quietly.  A bad key is inbound's
   * start-up error to report (a configuration error, exit 1). */
  if (cfg->n_dkim_sign > 0) {
    char derr[512];
    ob->dkim = dkim_new(loop, cfg, 0, derr, sizeof derr);
  }
  return ob;
}

/* The destination key a route's own `rate` limits: its relayhost list's
 * key, or for an MX route for a recipient domain that domain.  A sender
 * route by MX has no one destination (its mail goes to every recipient
 * domain), so its rate cannot apply: NULL. */
static const char *route_rate_key(const struct route *r) {
  if (r->n_hosts > 0)
    return r->key;
  return r->kind == ROUTE_RECIPIENT_DOMAIN ? r->match : NULL;
}

_Static_assert(SCHED_RATE_MAX == RATE_MAX_N,
               "a rate the routes file accepts, the scheduler takes");

/* Hands the routes' own rates to the scheduler (CONTRACT §4a `rate`):
 * the old table's overrides are lifted first, so a route whose rate was
 * removed on reload falls back to destination_rate. */
static void apply_route_rates(struct outbound *ob, struct relay_routes *old,
                              struct relay_routes *rt) {
  for (size_t i = 0; old && i < old->rs.n; i++) {
    const char *key = route_rate_key(&old->rs.r[i]);
    if (key && old->rs.r[i].rate_n > 0 &&
        sched_set_dest_rate(ob->sched, key, 0, 0) < 0)
      log_msg(LOG_WARN, "routes", "cannot lift the rate of %s", key);
  }
  for (size_t i = 0; rt && i < rt->rs.n; i++) {
    const struct route *r = &rt->rs.r[i];
    if (r->rate_n == 0)
      continue;
    const char *key = route_rate_key(r);
    if (!key) {
      log_msg(LOG_WARN, "routes",
              "line %d: a sender route by MX has no one destination; its "
              "rate is not applied (use destination_rate)",
              r->line);
      continue;
    }
    if (sched_set_dest_rate(ob->sched, key, (unsigned)r->rate_n,
                            (int64_t)r->rate_window_ms) < 0)
      log_msg(LOG_WARN, "routes", "line %d: cannot set the rate of %s", r->line,
              key);
  }
}

void outbound_set_routes(struct outbound *ob, struct relay_routes *rt) {
  struct relay_routes *old = ob->routes;
  ob->routes = rt;
  apply_route_rates(ob, old, rt);
  if (old) {
    /* Kept connections were opened (and authenticated) under the old
     * routes: close them; deliveries in flight keep their reference. */
    int stopping = ob->stopping;
    cache_close_all(ob);
    ob->stopping = stopping;
  }
  relay_routes_unref(old);
}

const struct routes *outbound_routes(const struct outbound *ob) {
  return ob->routes ? &ob->routes->rs : NULL;
}

int outbound_set_drain_to(struct outbound *ob, const char *host,
                          uint16_t port) {
  if (host && (!*host || strlen(host) >= sizeof ob->drain.hosts[0].host))
    return -EINVAL;
  if (host) {
    struct route *r = &ob->drain;
    memset(r, 0, sizeof *r);
    snprintf(r->hosts[0].host, sizeof r->hosts[0].host, "%s", host);
    r->hosts[0].port = port;
    r->hosts[0].mx_lookup = 0; /* the peer's own addresses, no MX */
    r->n_hosts = 1;
    r->tls = ROUTE_TLS_OPPORTUNISTIC; /* no AUTH: no user */
    snprintf(r->key, sizeof r->key, "drain");
  }
  ob->drain_to = host != NULL;
  /* Kept connections lead to the old targets (kept by destination key):
   * close them both ways. */
  int stopping = ob->stopping;
  cache_close_all(ob);
  ob->stopping = stopping;
  return 0;
}

void outbound_reload(struct outbound *ob) {
  char err[512];
  const struct config *cfg = ob->cfg;
  if (cfg->routes_file[0]) {
    struct relay_routes *rt;
    if (relay_routes_load(cfg->routes_file, &rt, err, sizeof err) < 0) {
      log_msg(LOG_WARN, "reload", "keeping the old routes: %s", err);
    } else {
      log_msg(LOG_INFO, "reload", "routes reloaded: %zu routes", rt->rs.n);
      outbound_set_routes(ob, rt);
    }
  }
  if (ob->dkim && dkim_reload(ob->dkim, err, sizeof err) < 0)
    log_msg(LOG_WARN, "reload", "bounces keep the old DKIM keys: %s", err);
  SSL_CTX *fresh =
      tls_client_ctx_new(cfg->tls_ca_file[0] ? cfg->tls_ca_file : NULL,
                         TLS_VERIFY_REQUIRE, err, sizeof err);
  if (!fresh) {
    log_msg(LOG_WARN, "reload", "keeping the old trust anchors: %s", err);
    return;
  }
  SSL_CTX *fresh_any =
      tls_client_ctx_new(cfg->tls_ca_file[0] ? cfg->tls_ca_file : NULL,
                         TLS_VERIFY_NONE, err, sizeof err);
  if (!fresh_any) {
    SSL_CTX_free(fresh);
    log_msg(LOG_WARN, "reload", "keeping the old trust anchors: %s", err);
    return;
  }
  /* Live SSLs hold their own reference to the old context. */
  tls_ctx_swap(&ob->ctx_any, fresh_any);
  tls_ctx_swap(&ob->ctx_verify, fresh);
  log_msg(LOG_INFO, "reload", "trust anchors reloaded");
}

void outbound_abort_all(struct outbound *ob) {
  outbound_close_idle(ob);
  ob->freeing = 1;
  session_abort_waiting(ob);
  oauth2_abort_waiters(ob->oauth2);
  struct delivery *next;
  /* outbound_close_idle ended the lookups; end the connections. */
  for (struct delivery *d = ob->list; d; d = next) {
    next = d->lnext;
    if (d->conn)
      conn_close(d->conn, CONN_END_SHUTDOWN);
    else if (d->rec)
      record_abort(d); /* may free d */
  }
}

struct tlsrpt *outbound_tlsrpt(struct outbound *ob) {
  return ob->tlsrpt;
}

void outbound_free(struct outbound *ob) {
  oauth2_free(ob->oauth2);
  sts_free(ob->sts);
  tlsrpt_free(ob->tlsrpt);
  relay_routes_unref(ob->routes);
  resolver_free(ob->res);
  SSL_CTX_free(ob->ctx_verify);
  SSL_CTX_free(ob->ctx_any);
  dane_free(ob);
  dkim_free(ob->dkim);
  free(ob);
}
