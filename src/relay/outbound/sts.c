/*
 * outbound/sts: MTA-STS policy discovery and cache (see sts.h).
 */
#include "relay/outbound/sts.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "dns/resolver.h"
#include "log.h"
#include "loop/https_client.h"
#include "queue/store.h"

struct sts_dom {
  struct sts_dom *prev, *next; /* most recently used first */
  struct sts *s;
  char domain[256];
  /* the cached policy (have) */
  int have;
  char id[STS_ID_MAX + 1];
  int64_t fetched_at, expires_at; /* unix s */
  struct sts_policy *pol;
  char *text;
  /* a refetch of the cached policy's own id, past half its life, while
   * the cached one goes on answering (RFC 8461 §10.2: refresh before
   * expiry); the next such try not before refresh_at (unix s) */
  int refreshing;
  int64_t refresh_at;
  /* discovery in flight */
  struct resolver_query *q;
  struct https_fetch *fetch;
  int queued_fetch; /* waiting for a fetch slot */
  char want_id[STS_ID_MAX + 1];
  struct sts_wait *waiters;
  /* the outcome being delivered */
  const char *failure;
  char why[256];
  int ready; /* finish from the timer (no lookup could start) */
};

struct sts {
  uv_loop_t *loop;
  const struct config *cfg;
  struct store *st;
  struct resolver *res;
  struct sts_dom *head, *tail;
  int ndoms;
  int fetching; /* fetches in flight */
  int freeing;
  uv_timer_t kick;
  int kick_open;
};

static int64_t now_s(void) {
  return (int64_t)time(NULL);
}

static void on_stored(struct store *st, int status, void *data) {
  (void)st;
  (void)data;
  if (status < 0 && status != -ECANCELED)
    log_msg(LOG_WARN, "mta-sts", "cannot keep a policy in the queue: %s",
            strerror(-status));
}

static void dom_unlink(struct sts *s, struct sts_dom *d) {
  if (d->prev)
    d->prev->next = d->next;
  else
    s->head = d->next;
  if (d->next)
    d->next->prev = d->prev;
  else
    s->tail = d->prev;
  d->prev = d->next = NULL;
  s->ndoms--;
}

static void dom_front(struct sts *s, struct sts_dom *d) {
  d->next = s->head;
  d->prev = NULL;
  if (s->head)
    s->head->prev = d;
  s->head = d;
  if (!s->tail)
    s->tail = d;
  s->ndoms++;
}

static void dom_drop_policy(struct sts_dom *d) {
  free(d->pol);
  free(d->text);
  d->pol = NULL;
  d->text = NULL;
  d->have = 0;
}

static void dom_free(struct sts_dom *d) {
  dom_drop_policy(d);
  free(d);
}

static int dom_busy(const struct sts_dom *d) {
  return d->q || d->fetch || d->queued_fetch || d->waiters || d->ready;
}

static struct sts_dom *dom_find(struct sts *s, const char *domain, int create) {
  for (struct sts_dom *d = s->head; d; d = d->next)
    if (strcmp(d->domain, domain) == 0) {
      dom_unlink(s, d);
      dom_front(s, d);
      return d;
    }
  if (!create)
    return NULL;
  /* Bounded: the least recently used idle entry makes room (its policy
   * stays in the queue database, but is no longer consulted before a
   * refetch; rare: STS_DOMAINS_MAX domains). */
  if (s->ndoms >= STS_DOMAINS_MAX) {
    struct sts_dom *v = s->tail;
    while (v && dom_busy(v))
      v = v->prev;
    if (!v)
      return NULL;
    dom_unlink(s, v);
    dom_free(v);
  }
  struct sts_dom *d = calloc(1, sizeof *d);
  if (!d)
    return NULL;
  d->s = s;
  snprintf(d->domain, sizeof d->domain, "%s", domain);
  dom_front(s, d);
  return d;
}

/* Installs a policy (text already parsed into pol, taken over). */
static void dom_set_policy(struct sts_dom *d, const char *id,
                           struct sts_policy *pol, char *text,
                           int64_t fetched_at) {
  dom_drop_policy(d);
  d->have = 1;
  d->pol = pol;
  d->text = text;
  snprintf(d->id, sizeof d->id, "%s", id);
  d->fetched_at = fetched_at;
  d->expires_at = fetched_at + (int64_t)pol->max_age;
}

static int dom_valid(const struct sts_dom *d) {
  return d->have && d->expires_at > now_s();
}

/* Hands the outcome to every waiter. */
static void dom_finish(struct sts_dom *d) {
  struct sts_verdict v;
  memset(&v, 0, sizeof v);
  /* A failed refresh is no failure of the deliveries that asked meanwhile:
   * the cached policy answers them (it was logged by dom_fail). */
  int quiet = d->refreshing && dom_valid(d);
  if (dom_valid(d) && d->pol->mode != STS_MODE_NONE) {
    v.mode = d->pol->mode;
    v.pol = d->pol;
    v.policy_text = d->text;
    v.id = d->id;
  }
  v.failure = quiet ? NULL : d->failure;
  snprintf(v.why, sizeof v.why, "%s", quiet ? "" : d->why);
  d->failure = NULL;
  d->why[0] = '\0';
  d->ready = 0;
  if (!d->q && !d->fetch && !d->queued_fetch)
    d->refreshing = 0;
  /* The list is detached first: a callback may ask again (a new lookup). */
  struct sts_wait *w = d->waiters;
  d->waiters = NULL;
  while (w) {
    struct sts_wait *next = w->next;
    w->next = NULL;
    w->dom = NULL;
    w->cb(w->arg, &v);
    w = next;
  }
}

static void dom_fail(struct sts_dom *d, const char *failure, const char *fmt,
                     const char *detail) {
  d->failure = failure;
  snprintf(d->why, sizeof d->why, fmt, d->domain, detail);
  log_msg(LOG_WARN, "mta-sts", "%s%s", d->why,
          dom_valid(d) ? " (the cached policy stays in use)" : "");
}

static void fetch_start(struct sts_dom *d);
static void on_kick(uv_timer_t *t);

/* Starts fetches waiting for a slot. */
static void fetch_pump(struct sts *s) {
  while (!s->freeing && s->fetching < STS_FETCH_MAX) {
    struct sts_dom *d = s->tail;
    while (d && !d->queued_fetch)
      d = d->prev;
    if (!d)
      return;
    d->queued_fetch = 0;
    fetch_start(d);
  }
}

static void on_fetched(void *arg, const struct https_result *r) {
  struct sts_dom *d = arg;
  struct sts *s = d->s;
  d->fetch = NULL;
  s->fetching--;
  if (s->freeing) {
    dom_free(d);
    if (s->fetching == 0 && !s->kick_open)
      free(s);
    return;
  }
  char why[300];
  if (r->rc < 0) {
    /* A certificate that does not verify is its own result type. */
    int webpki = r->why &&
                 (strstr(r->why, "certificate") || strstr(r->why, "SSL peer") ||
                  strstr(r->why, "SSL certificate"));
    dom_fail(d, webpki ? "sts-webpki-invalid" : "sts-policy-fetch-error",
             "policy fetch for %s failed: %s", r->why ? r->why : "?");
  } else if (r->status != 200) {
    snprintf(why, sizeof why, "HTTP status %ld%s", r->status,
             r->status >= 300 && r->status < 400 ? " (redirects are not "
                                                   "followed)"
                                                 : "");
    dom_fail(d, "sts-policy-fetch-error", "policy fetch for %s failed: %s",
             why);
  } else if (!sts_media_type_ok(r->content_type)) {
    snprintf(why, sizeof why, "served as %.100s, not text/plain",
             r->content_type ? r->content_type : "(no Content-Type)");
    for (char *c = why; *c; c++) /* the header is the peer's bytes */
      if (*c < 0x20 || *c > 0x7e)
        *c = '?';
    dom_fail(d, "sts-policy-invalid", "policy of %s is invalid: %s", why);
  } else {
    struct sts_policy *pol = malloc(sizeof *pol);
    char *text = malloc(r->len + 1);
    char perr[128];
    if (!pol || !text) {
      free(pol);
      free(text);
      dom_fail(d, "sts-policy-fetch-error", "policy of %s: %s",
               "out of memory");
    } else if (sts_policy_parse(r->body, r->len, pol, perr, sizeof perr) < 0 ||
               memchr(r->body, '\0', r->len)) {
      free(pol);
      free(text);
      dom_fail(d, "sts-policy-invalid", "policy of %s is invalid: %s", perr);
    } else {
      memcpy(text, r->body, r->len);
      text[r->len] = '\0';
      dom_set_policy(d, d->want_id, pol, text, now_s());
      log_msg(LOG_INFO, "mta-sts",
              "policy of %s: id %s, mode %s, %d mx patterns, max_age %u s",
              d->domain, d->id, sts_mode_name(pol->mode), pol->n_mx,
              (unsigned)pol->max_age);
      if (store_sts_put(s->st, d->domain, d->id, d->fetched_at, d->expires_at,
                        d->text, on_stored, NULL) < 0)
        log_msg(LOG_WARN, "mta-sts", "cannot keep the policy of %s", d->domain);
    }
  }
  dom_finish(d);
  fetch_pump(s);
}

static void fetch_with_addr(struct sts_dom *d, const struct mx_result *res) {
  struct sts *s = d->s;
  char url[400], pin[400], ip[INET6_ADDRSTRLEN];
  const char *host = NULL;
  char hostbuf[300];
  snprintf(hostbuf, sizeof hostbuf, "mta-sts.%s", d->domain);
  host = hostbuf;
  snprintf(url, sizeof url, "https://%s:%u/.well-known/mta-sts.txt", host,
           (unsigned)s->cfg->https_port);
  const struct sockaddr_storage *ss = &res->c[0].addr;
  if (ss->ss_family == AF_INET6)
    inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, ip,
              sizeof ip);
  else
    inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, ip,
              sizeof ip);
  snprintf(pin, sizeof pin,
           ss->ss_family == AF_INET6 ? "%s:%u:[%s]" : "%s:%u:%s", host,
           (unsigned)s->cfg->https_port, ip);
  struct https_req req = {
      .url = url,
      .ca_file = s->cfg->tls_ca_file,
      .connect_timeout_ms = STS_FETCH_CONNECT_MS,
      .timeout_ms = STS_FETCH_TOTAL_MS,
      .max_body = STS_POLICY_MAX,
      .resolve = pin,
  };
  d->fetch = https_fetch_start(s->loop, &req, on_fetched, d);
  if (!d->fetch) {
    s->fetching--;
    dom_fail(d, "sts-policy-fetch-error", "policy fetch for %s failed: %s",
             https_client_supported() ? "cannot start"
                                      : "built without libcurl");
    dom_finish(d);
    fetch_pump(s);
  }
}

static void on_host(struct resolver_query *q, const struct mx_result *res,
                    void *data) {
  (void)q;
  struct sts_dom *d = data;
  d->q = NULL;
  if (res->status == DNS_CANCELED) {
    d->s->fetching--;
    return; /* sts_free: the waiters were told */
  }
  if (res->status != DNS_OK || res->n == 0) {
    d->s->fetching--;
    dom_fail(d, "sts-policy-fetch-error", "policy host of %s: %s", res->reason);
    dom_finish(d);
    fetch_pump(d->s);
    return;
  }
  fetch_with_addr(d, res);
}

/* The fetch: mta-sts.DOMAIN's address first (holds a fetch slot). */
static void fetch_start(struct sts_dom *d) {
  struct sts *s = d->s;
  if (s->fetching >= STS_FETCH_MAX) {
    d->queued_fetch = 1;
    return;
  }
  s->fetching++;
  char host[300];
  snprintf(host, sizeof host, "mta-sts.%s", d->domain);
  d->q = resolver_lookup_host(s->res, host, s->cfg->https_port, on_host, d);
  if (!d->q) {
    s->fetching--;
    dom_fail(d, "sts-policy-fetch-error", "policy host of %s: %s",
             "out of memory");
    d->ready = 1;
    uv_timer_start(&s->kick, on_kick, 0, 0);
  }
}

static void on_txt(struct resolver_query *q, const struct resolver_txt *res,
                   void *data) {
  (void)q;
  struct sts_dom *d = data;
  d->q = NULL;
  if (res->status == DNS_CANCELED)
    return;
  if (res->status != DNS_OK) {
    /* RFC 8461 §5.1: a cached policy goes on being used. */
    dom_fail(d, NULL, "_mta-sts TXT of %s: %s", res->reason);
    dom_finish(d);
    return;
  }
  const char *txts[RESOLVER_TXT_MAX];
  for (int i = 0; i < res->n; i++)
    txts[i] = res->txt[i];
  char id[STS_ID_MAX + 1];
  if (!sts_txt_pick(txts, res->n, id)) {
    /* No (valid) record: no policy, unless one is cached (RFC 8461
     * §3.3). */
    dom_finish(d);
    return;
  }
  if (dom_valid(d) && strcmp(d->id, id) == 0) {
    int64_t now = now_s(), age = now - d->fetched_at;
    int due = age >= (int64_t)d->pol->max_age / 2 && now >= d->refresh_at;
    if (due) {
      /* Answered from the cache now; the refetch runs behind (a failure
       * leaves the cached policy in place; retried after a while). */
      int64_t retry = (int64_t)d->pol->max_age / 4;
      d->refresh_at =
          now + (retry < STS_REFRESH_RETRY_S ? retry : STS_REFRESH_RETRY_S);
      snprintf(d->want_id, sizeof d->want_id, "%s", id);
      log_msg(LOG_INFO, "mta-sts",
              "refreshing the policy of %s (fetched %lld s ago, expires in "
              "%lld s)",
              d->domain, (long long)age, (long long)(d->expires_at - now));
    }
    /* The refetch starts before the waiters are answered, so that one
     * asking again from its callback is answered from the cache instead
     * of starting a lookup beside it. */
    if (due) {
      d->refreshing = 1;
      fetch_start(d);
    }
    dom_finish(d);
    return;
  }
  snprintf(d->want_id, sizeof d->want_id, "%s", id);
  fetch_start(d);
}

static void on_kick(uv_timer_t *t) {
  struct sts *s = t->data;
  for (;;) {
    struct sts_dom *d = s->head;
    while (d && !d->ready)
      d = d->next;
    if (!d)
      return;
    dom_finish(d);
  }
}

int sts_get(struct sts *s, const char *domain, struct sts_wait *w, sts_cb cb,
            void *arg) {
  w->cb = cb;
  w->arg = arg;
  w->next = NULL;
  w->dom = NULL;
  struct sts_dom *d = s->freeing ? NULL : dom_find(s, domain, 1);
  if (!d)
    return -1;
  w->dom = d;
  w->next = d->waiters;
  d->waiters = w;
  if (d->refreshing && dom_valid(d) && !d->ready) {
    d->ready = 1; /* the cached policy, from the timer: a refresh in flight
                     holds no delivery */
    uv_timer_start(&s->kick, on_kick, 0, 0);
    return 0;
  }
  if (d->q || d->fetch || d->queued_fetch || d->ready)
    return 0; /* joins the discovery in flight */
  char name[300];
  snprintf(name, sizeof name, "_mta-sts.%s", domain);
  d->q = resolver_lookup_txt(s->res, name, on_txt, d);
  if (!d->q) {
    d->ready = 1; /* the cached policy, if any, from the timer */
    uv_timer_start(&s->kick, on_kick, 0, 0);
  }
  return 0;
}

void sts_cancel(struct sts *s, struct sts_wait *w) {
  (void)s;
  struct sts_dom *d = w->dom;
  if (!d)
    return;
  for (struct sts_wait **pp = &d->waiters; *pp; pp = &(*pp)->next)
    if (*pp == w) {
      *pp = w->next;
      break;
    }
  w->dom = NULL;
  w->next = NULL;
}

struct sts *sts_new(uv_loop_t *loop, const struct config *cfg, struct store *st,
                    struct resolver *res) {
  struct sts *s = calloc(1, sizeof *s);
  if (!s)
    return NULL;
  s->loop = loop;
  s->cfg = cfg;
  s->st = st;
  s->res = res;
  uv_timer_init(loop, &s->kick);
  s->kick.data = s;
  s->kick_open = 1;
  const struct store_sts_row *rows;
  const struct store_rpt_row *rpt;
  size_t n, nrpt;
  int64_t start;
  store_trust_at_open(st, &rows, &n, &rpt, &nrpt, &start);
  int64_t now = now_s();
  for (size_t i = 0; i < n; i++) {
    struct sts_policy *pol = malloc(sizeof *pol);
    char why[128];
    int ok = pol && rows[i].expires_at > now &&
             sts_policy_parse(rows[i].policy, strlen(rows[i].policy), pol, why,
                              sizeof why) == 0;
    struct sts_dom *d = ok && s->ndoms < STS_DOMAINS_MAX
                            ? dom_find(s, rows[i].domain, 1)
                            : NULL;
    char *text = d ? strdup(rows[i].policy) : NULL;
    if (!d || !text) {
      free(pol);
      free(text);
      if (store_sts_put(st, rows[i].domain, NULL, 0, 0, NULL, on_stored, NULL) <
          0)
        break;
      continue;
    }
    dom_set_policy(d, rows[i].id, pol, text, rows[i].fetched_at);
    d->expires_at = rows[i].expires_at;
  }
  return s;
}

static void on_kick_close(uv_handle_t *h) {
  struct sts *s = h->data;
  s->kick_open = 0;
  if (s->fetching == 0)
    free(s);
}

void sts_free(struct sts *s) {
  if (!s)
    return;
  s->freeing = 1;
  /* The waiters first, then the lookups and fetches. */
  struct sts_verdict v;
  memset(&v, 0, sizeof v);
  v.canceled = 1;
  struct sts_dom *d = s->head;
  while (d) {
    struct sts_dom *next = d->next;
    struct sts_wait *w = d->waiters;
    d->waiters = NULL;
    while (w) {
      struct sts_wait *wn = w->next;
      w->next = NULL;
      w->dom = NULL;
      w->cb(w->arg, &v);
      w = wn;
    }
    if (d->q) {
      struct resolver_query *q = d->q;
      d->q = NULL;
      resolver_cancel(q); /* on_txt / on_host: canceled, nothing more */
    }
    dom_unlink(s, d);
    if (d->fetch)
      https_fetch_abort(d->fetch); /* freed in on_fetched */
    else
      dom_free(d);
    d = next;
  }
  uv_timer_stop(&s->kick);
  uv_close((uv_handle_t *)&s->kick, on_kick_close);
}
