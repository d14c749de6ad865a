/*
 * relay/oauth2: token cache and fetch (see oauth2.h).
 *
 * Why libcurl on a pool thread: it is the well-kept HTTP/TLS client Debian
 * ships, its easy interface in one thread is the simplest correct use, and
 * at most one fetch is in flight, so it holds at most one pool thread for
 * at most OAUTH2_FETCH_TIMEOUT_MS (docs/DESIGN.md).
 */
#include "relay/oauth2.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "proto/oauth2.h"

#ifdef MAILHOP_HAVE_CURL
#include <curl/curl.h>

struct fetch {
  uv_work_t w;
  struct oauth2 *o;
  /* in: copies, so the thread touches nothing of the loop's */
  char *url;
  char *form; /* secrets: wiped */
  char ca[4096];
  long connect_ms;
  atomic_int stop;
  /* out */
  char *body; /* OAUTH2_ANSWER_MAX + 1 bytes */
  size_t blen;
  int too_big;
  int rc;
  char why[512];
  struct oauth2_token tok;
};

struct oauth2 {
  uv_loop_t *loop;
  const struct config *cfg;
  char url_shown[256]; /* the URL without its query, for log lines */
  /* the cached token, fresh while uv_now < valid_until */
  char token[OAUTH2_TOKEN_MAX + 1];
  uint64_t valid_until;
  struct fetch *inflight;
  struct oauth2_wait *waiters;    /* for the fetch in flight */
  struct oauth2_wait *delivering; /* being called back now */
  int freeing;
};

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  struct fetch *f = ud;
  size_t k = size * n;
  if (k > OAUTH2_ANSWER_MAX - f->blen) {
    f->too_big = 1;
    return 0; /* ends the transfer */
  }
  memcpy(f->body + f->blen, p, k);
  f->blen += k;
  return k;
}

static int on_progress(void *ud, curl_off_t a, curl_off_t b, curl_off_t c,
                       curl_off_t d) {
  (void)a, (void)b, (void)c, (void)d;
  struct fetch *f = ud;
  return atomic_load(&f->stop) ? 1 : 0;
}

/* Pool thread: one POST, then the answer parsed (pure). */
static void fetch_work(uv_work_t *w) {
  struct fetch *f = w->data;
  f->rc = -1;
  CURL *h = curl_easy_init();
  if (!h) {
    snprintf(f->why, sizeof f->why, "cannot start an HTTP client");
    return;
  }
  char cerr[CURL_ERROR_SIZE] = "";
  struct curl_slist *hdr = curl_slist_append(NULL, "Accept: application/json");
  curl_easy_setopt(h, CURLOPT_URL, f->url);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(h, CURLOPT_PROXY, ""); /* never the environment's */
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
  curl_easy_setopt(h, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
  if (f->ca[0])
    curl_easy_setopt(h, CURLOPT_CAINFO, f->ca);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, f->connect_ms);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)OAUTH2_FETCH_TIMEOUT_MS);
  curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)OAUTH2_ANSWER_MAX);
  curl_easy_setopt(h, CURLOPT_USERAGENT, "mailhop/" MAILHOP_VERSION);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
  curl_easy_setopt(h, CURLOPT_POSTFIELDS, f->form);
  curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(f->form));
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, f);
  curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
  curl_easy_setopt(h, CURLOPT_XFERINFODATA, f);
  curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
  CURLcode cc = curl_easy_perform(h);
  long status = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(h);
  curl_slist_free_all(hdr);
  if (f->too_big || cc == CURLE_FILESIZE_EXCEEDED) {
    snprintf(f->why, sizeof f->why, "HTTP %ld: answer larger than %d bytes",
             status, OAUTH2_ANSWER_MAX);
  } else if (cc != CURLE_OK) {
    snprintf(f->why, sizeof f->why, "%s",
             cerr[0] ? cerr : curl_easy_strerror(cc));
  } else {
    f->rc = oauth2_parse_token((int)status, f->body, f->blen, &f->tok, f->why,
                               sizeof f->why);
  }
  explicit_bzero(f->body, f->blen);
}

static void fetch_free(struct fetch *f) {
  if (f->form)
    explicit_bzero(f->form, strlen(f->form));
  free(f->form);
  free(f->url);
  free(f->body);
  explicit_bzero(&f->tok, sizeof f->tok);
  free(f);
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

static void fetch_done(uv_work_t *w, int status) {
  struct fetch *f = w->data;
  struct oauth2 *o = f->o;
  o->inflight = NULL;
  if (o->freeing) {
    fetch_free(f);
    free(o);
    return;
  }
  if (status == UV_ECANCELED) {
    f->rc = -1;
    snprintf(f->why, sizeof f->why, "canceled");
  }
  if (f->rc == 0) {
    uint64_t now = uv_now(o->loop);
    uint64_t life = f->tok.expires_in * 1000;
    /* Kept until shortly before it expires: a minute, or half the life of
     * a short-lived token. */
    uint64_t margin = life / 2 < 60000 ? life / 2 : 60000;
    memcpy(o->token, f->tok.access_token, sizeof o->token);
    o->valid_until = now + life - margin;
    log_msg(LOG_INFO, "oauth2",
            "access token fetched from %s, expires in %llus", o->url_shown,
            (unsigned long long)f->tok.expires_in);
    call_waiters(o, 0, f->tok.access_token, NULL);
  } else {
    char why[640];
    snprintf(why, sizeof why, "relayhost_oauth2_token_url %s: %s", o->url_shown,
             f->why);
    log_msg(LOG_WARN, "oauth2",
            "token fetch failed (%s); mail to the relayhost is deferred", why);
    call_waiters(o, -1, NULL, why);
  }
  fetch_free(f);
  /* Waiters that came during the callbacks with no fresh token. */
  if (o->waiters && !o->inflight)
    start_fetch(o);
}

static void start_fetch(struct oauth2 *o) {
  const struct config *cfg = o->cfg;
  struct fetch *f = calloc(1, sizeof *f);
  char why[512] = "out of memory";
  if (f) {
    f->o = o;
    f->w.data = f;
    f->url = strdup(cfg->relayhost_oauth2_token_url);
    f->body = malloc(OAUTH2_ANSWER_MAX + 1);
    snprintf(f->ca, sizeof f->ca, "%s", cfg->tls_ca_file);
    f->connect_ms = (long)cfg->connect_timeout_ms;
    struct oauth2_grant g = {
        .client_id = cfg->relayhost_oauth2_client_id,
        .client_secret = cfg->relayhost_oauth2_client_secret,
        .refresh_token = cfg->relayhost_oauth2_refresh_token,
        .scope = cfg->relayhost_oauth2_scope,
    };
    size_t need = oauth2_form(&g, NULL, 0) + 1;
    f->form = malloc(need);
    if (f->form)
      oauth2_form(&g, f->form, need);
    if (f->url && f->body && f->form &&
        uv_queue_work(o->loop, &f->w, fetch_work, fetch_done) == 0) {
      o->inflight = f;
      return;
    }
    snprintf(why, sizeof why, "cannot start a token fetch");
    fetch_free(f);
  }
  char msg[640];
  snprintf(msg, sizeof msg, "relayhost_oauth2_token_url %s: %s", o->url_shown,
           why);
  log_msg(LOG_WARN, "oauth2", "token fetch failed (%s)", msg);
  call_waiters(o, -1, NULL, msg);
}

int oauth2_supported(void) {
  return 1;
}

struct oauth2 *oauth2_new(uv_loop_t *loop, const struct config *cfg, char *err,
                          size_t errlen) {
  if (errlen)
    err[0] = '\0';
  if (!cfg->relayhost_oauth2_token_url[0])
    return NULL;
  static int inited;
  if (!inited) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
      snprintf(err, errlen,
               "relayhost_oauth2_token_url: cannot start "
               "libcurl");
      return NULL;
    }
    inited = 1;
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
          "the relayhost refused the access token; a new one is fetched "
          "for the next connection");
}

void oauth2_abort_waiters(struct oauth2 *o) {
  if (!o)
    return;
  if (o->inflight)
    atomic_store(&o->inflight->stop, 1);
  call_waiters(o, -2, NULL, "shutting down");
}

void oauth2_free(struct oauth2 *o) {
  if (!o)
    return;
  explicit_bzero(o->token, sizeof o->token);
  if (o->inflight) {
    /* The thread still runs: fetch_done frees both. */
    atomic_store(&o->inflight->stop, 1);
    o->freeing = 1;
    return;
  }
  free(o);
}

#else /* !MAILHOP_HAVE_CURL */

struct oauth2 {
  int unused;
};

int oauth2_supported(void) {
  return 0;
}

struct oauth2 *oauth2_new(uv_loop_t *loop, const struct config *cfg, char *err,
                          size_t errlen) {
  (void)loop;
  if (errlen)
    err[0] = '\0';
  if (cfg->relayhost_oauth2_token_url[0])
    snprintf(err, errlen,
             "relayhost_oauth2_token_url: this mailhop was built without "
             "libcurl (the static image); use the slim image, or a token "
             "file kept fresh by another program (relayhost_password_file)");
  return NULL;
}

void oauth2_get(struct oauth2 *o, struct oauth2_wait *w, oauth2_cb cb,
                void *arg) {
  (void)o, (void)w;
  cb(arg, -1, NULL, "built without OAuth2 token fetching");
}

void oauth2_cancel(struct oauth2 *o, struct oauth2_wait *w) {
  (void)o, (void)w;
}

void oauth2_refused(struct oauth2 *o, const char *token) {
  (void)o, (void)token;
}

void oauth2_abort_waiters(struct oauth2 *o) {
  (void)o;
}

void oauth2_free(struct oauth2 *o) {
  free(o);
}

#endif
