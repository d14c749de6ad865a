/*
 * relay/oauth2: token cache and fetch (see oauth2.h).  The HTTPS request
 * is loop/https_client's (libcurl on the pool); the grant and the answer
 * are proto/oauth2's; this file is the cache and the waiters.
 */
#include "relay/oauth2.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "loop/https_client.h"
#include "proto/oauth2.h"

struct oauth2 {
  uv_loop_t *loop;
  const struct config *cfg;
  char url_shown[256]; /* the URL without its query, for log lines */
  /* the cached token, fresh while uv_now < valid_until */
  char token[OAUTH2_TOKEN_MAX + 1];
  uint64_t valid_until;
  struct https_fetch *inflight;
  struct oauth2_wait *waiters;    /* for the fetch in flight */
  struct oauth2_wait *delivering; /* being called back now */
  int freeing;
};

int oauth2_supported(void) {
  return https_client_supported();
}

static void call_waiters(struct oauth2 *o, int rc, const char *token,
                         const char *why) {
  /* Waiters that come during the callbacks wait for a new fetch: the
   * list being called back is apart from o->waiters.  (A call nested in a
   * callback, when a new fetch cannot start, takes the rest of the outer
   * list along.) */
  struct oauth2_wait *list = o->waiters, **pp = &list;
  o->waiters = NULL;
  while (*pp)
    pp = &(*pp)->next;
  *pp = o->delivering;
  o->delivering = list;
  struct oauth2_wait *w;
  while ((w = o->delivering)) {
    o->delivering = w->next;
    w->queued = 0;
    w->next = NULL;
    w->cb(w->arg, rc, token, why);
  }
}

static void start_fetch(struct oauth2 *o);

static void fetch_done(void *arg, const struct https_result *res) {
  struct oauth2 *o = arg;
  o->inflight = NULL;
  if (o->freeing) {
    free(o);
    return;
  }
  static struct oauth2_token tok; /* the loop thread's; wiped after use */
  char why[512] = "";
  int rc = -1;
  if (res->rc == 0)
    rc = oauth2_parse_token((int)res->status, res->body, res->len, &tok, why,
                            sizeof why);
  else
    snprintf(why, sizeof why, "%s", res->why);
  if (rc == 0) {
    uint64_t now = uv_now(o->loop);
    uint64_t life = tok.expires_in * 1000;
    /* Kept until shortly before it expires: a minute, or half the life of
     * a short-lived token. */
    uint64_t margin = life / 2 < 60000 ? life / 2 : 60000;
    memcpy(o->token, tok.access_token, sizeof o->token);
    o->valid_until = now + life - margin;
    explicit_bzero(&tok, sizeof tok);
    log_msg(LOG_INFO, "oauth2",
            "access token fetched from %s, expires in %llus", o->url_shown,
            (unsigned long long)(life / 1000));
    /* The callbacks get the cache's copy: a waiter that refuses it
     * (oauth2_refused) empties the cache, so each gets its own copy
     * first. */
    char *copy = strdup(o->token);
    if (!copy) {
      call_waiters(o, -1, NULL, "out of memory");
    } else {
      call_waiters(o, 0, copy, NULL);
      explicit_bzero(copy, strlen(copy));
      free(copy);
    }
  } else {
    char msg[640];
    snprintf(msg, sizeof msg, "relayhost_oauth2_token_url %s: %s", o->url_shown,
             why);
    log_msg(LOG_WARN, "oauth2",
            "token fetch failed (%s); mail to the relayhost is deferred", msg);
    call_waiters(o, -1, NULL, msg);
  }
  /* Waiters that came during the callbacks with no fresh token. */
  if (o->waiters && !o->inflight)
    start_fetch(o);
}

static void start_fetch(struct oauth2 *o) {
  const struct config *cfg = o->cfg;
  struct oauth2_grant g = {
      .client_id = cfg->relayhost_oauth2_client_id,
      .client_secret = cfg->relayhost_oauth2_client_secret,
      .refresh_token = cfg->relayhost_oauth2_refresh_token,
      .scope = cfg->relayhost_oauth2_scope,
  };
  size_t need = oauth2_form(&g, NULL, 0) + 1;
  char *form = malloc(need);
  if (form) {
    oauth2_form(&g, form, need);
    struct https_req req = {
        .url = cfg->relayhost_oauth2_token_url,
        .post_body = form,
        .content_type = "application/x-www-form-urlencoded",
        .accept = "application/json",
        .ca_file = cfg->tls_ca_file,
        .connect_timeout_ms = (unsigned)cfg->connect_timeout_ms,
        .timeout_ms = OAUTH2_FETCH_TIMEOUT_MS,
        .max_body = OAUTH2_ANSWER_MAX,
    };
    o->inflight = https_fetch_start(o->loop, &req, fetch_done, o);
    explicit_bzero(form, need);
    free(form);
    if (o->inflight)
      return;
  }
  char msg[640];
  snprintf(msg, sizeof msg,
           "relayhost_oauth2_token_url %s: cannot start a token fetch",
           o->url_shown);
  log_msg(LOG_WARN, "oauth2", "token fetch failed (%s)", msg);
  call_waiters(o, -1, NULL, msg);
}

struct oauth2 *oauth2_new(uv_loop_t *loop, const struct config *cfg, char *err,
                          size_t errlen) {
  if (errlen)
    err[0] = '\0';
  if (!cfg->relayhost_oauth2_token_url[0])
    return NULL;
  if (https_client_init() < 0) {
    snprintf(err, errlen, "relayhost_oauth2_token_url: no HTTPS client (%s)",
             https_client_supported() ? "libcurl did not start"
                                      : "built without libcurl");
    return NULL;
  }
  struct oauth2 *o = calloc(1, sizeof *o);
  if (!o) {
    snprintf(err, errlen, "relayhost_oauth2_token_url: out of memory");
    return NULL;
  }
  o->loop = loop;
  o->cfg = cfg;
  const char *u = cfg->relayhost_oauth2_token_url;
  size_t n = strcspn(u, "?#");
  snprintf(o->url_shown, sizeof o->url_shown, "%.*s", (int)n, u);
  return o;
}

void oauth2_get(struct oauth2 *o, struct oauth2_wait *w, oauth2_cb cb,
                void *arg) {
  w->cb = cb;
  w->arg = arg;
  w->next = NULL;
  w->queued = 0;
  if (o->token[0] && uv_now(o->loop) < o->valid_until) {
    cb(arg, 0, o->token, NULL);
    return;
  }
  /* Appended: the first to wait is the first served. */
  struct oauth2_wait **pp = &o->waiters;
  while (*pp)
    pp = &(*pp)->next;
  *pp = w;
  w->queued = 1;
  if (!o->inflight)
    start_fetch(o);
}

static int unlink_from(struct oauth2_wait **pp, struct oauth2_wait *w) {
  for (; *pp; pp = &(*pp)->next)
    if (*pp == w) {
      *pp = w->next;
      return 1;
    }
  return 0;
}

void oauth2_cancel(struct oauth2 *o, struct oauth2_wait *w) {
  if (!o || !w->queued)
    return;
  if (!unlink_from(&o->waiters, w))
    unlink_from(&o->delivering, w);
  w->queued = 0;
  w->next = NULL;
}

void oauth2_refused(struct oauth2 *o, const char *token) {
  if (!o || !token || strcmp(o->token, token) != 0)
    return;
  explicit_bzero(o->token, sizeof o->token);
  o->valid_until = 0;
  log_msg(LOG_INFO, "oauth2",
          "the relayhost refused the access token; a new one is fetched");
}

void oauth2_abort_waiters(struct oauth2 *o) {
  if (!o)
    return;
  if (o->inflight)
    https_fetch_abort(o->inflight);
  call_waiters(o, -2, NULL, "shutting down");
}

void oauth2_free(struct oauth2 *o) {
  if (!o)
    return;
  explicit_bzero(o->token, sizeof o->token);
  if (o->inflight) {
    /* The request still runs: fetch_done frees o. */
    https_fetch_abort(o->inflight);
    o->freeing = 1;
    return;
  }
  free(o);
}
