/*
 * loop/https_client: libcurl's easy interface on the pool (see
 * https_client.h).
 */
#include "loop/https_client.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef MAILHOP_HAVE_CURL
#include <curl/curl.h>

struct https_fetch {
  uv_work_t w;
  https_cb cb;
  void *arg;
  /* in: copies, so the thread touches nothing of the loop's */
  char *url;
  char *post; /* wiped */
  char *ctype;
  char *accept;
  char *ca;
  char *resolve;
  long connect_ms, total_ms;
  size_t max_body;
  atomic_int stop;
  /* out */
  char *body; /* max_body bytes */
  size_t blen;
  int too_big;
  int rc;
  long status;
  char rtype[128]; /* the answer's Content-Type (cut to 127 bytes), "" when
                      none */
  char why[512];
};

int https_client_supported(void) {
  return 1;
}

int https_client_init(void) {
  static int done;
  if (!done && curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
    return -1;
  done = 1;
  return 0;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  struct https_fetch *f = ud;
  size_t k = size * n;
  if (k > f->max_body - f->blen) {
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
  struct https_fetch *f = ud;
  return atomic_load(&f->stop) ? 1 : 0;
}

/* Pool thread: the request. */
static void fetch_work(uv_work_t *w) {
  struct https_fetch *f = w->data;
  f->rc = -1;
  if (atomic_load(&f->stop)) {
    f->rc = -2;
    return;
  }
  CURL *h = curl_easy_init();
  if (!h) {
    snprintf(f->why, sizeof f->why, "cannot start an HTTP client");
    return;
  }
  char cerr[CURL_ERROR_SIZE] = "";
  struct curl_slist *hdr = NULL;
  char line[300];
  if (f->accept) {
    snprintf(line, sizeof line, "Accept: %s", f->accept);
    hdr = curl_slist_append(hdr, line);
  }
  if (f->post && f->ctype) {
    snprintf(line, sizeof line, "Content-Type: %s", f->ctype);
    hdr = curl_slist_append(hdr, line);
  }
  struct curl_slist *pin = NULL;
  if (f->resolve) {
    pin = curl_slist_append(NULL, f->resolve);
    curl_easy_setopt(h, CURLOPT_RESOLVE, pin);
  }
  curl_easy_setopt(h, CURLOPT_URL, f->url);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(h, CURLOPT_PROXY, ""); /* never the environment's */
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
  curl_easy_setopt(h, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
  if (f->ca)
    curl_easy_setopt(h, CURLOPT_CAINFO, f->ca);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, f->connect_ms);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, f->total_ms);
  curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)f->max_body);
  curl_easy_setopt(h, CURLOPT_USERAGENT, "mailhop/" MAILHOP_VERSION);
  if (hdr)
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
  if (f->post) {
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, f->post);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(f->post));
  }
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, f);
  curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
  curl_easy_setopt(h, CURLOPT_XFERINFODATA, f);
  curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
  CURLcode cc = curl_easy_perform(h);
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &f->status);
  const char *rtype = NULL;
  if (curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &rtype) == CURLE_OK && rtype)
    snprintf(f->rtype, sizeof f->rtype, "%s", rtype); /* cut if longer */
  curl_easy_cleanup(h);
  curl_slist_free_all(hdr);
  curl_slist_free_all(pin);
  if (atomic_load(&f->stop)) {
    f->rc = -2;
    snprintf(f->why, sizeof f->why, "aborted");
  } else if (f->too_big || cc == CURLE_FILESIZE_EXCEEDED) {
    snprintf(f->why, sizeof f->why, "HTTP %ld: answer larger than %zu bytes",
             f->status, f->max_body);
  } else if (cc != CURLE_OK) {
    snprintf(f->why, sizeof f->why, "%s",
             cerr[0] ? cerr : curl_easy_strerror(cc));
  } else {
    f->rc = 0;
  }
}

static void fetch_free(struct https_fetch *f) {
  if (f->post)
    explicit_bzero(f->post, strlen(f->post));
  if (f->body)
    explicit_bzero(f->body, f->blen);
  free(f->post);
  free(f->body);
  free(f->url);
  free(f->ctype);
  free(f->accept);
  free(f->ca);
  free(f->resolve);
  free(f);
}

static void fetch_done(uv_work_t *w, int status) {
  struct https_fetch *f = w->data;
  struct https_result res = {.rc = f->rc, .status = f->status};
  if (status == UV_ECANCELED)
    res.rc = -2;
  if (res.rc == 0) {
    res.body = f->body;
    res.len = f->blen;
    res.content_type = f->rtype[0] ? f->rtype : NULL;
  } else {
    res.why = f->why[0] ? f->why : "aborted";
  }
  f->cb(f->arg, &res);
  fetch_free(f);
}

static char *dup_or_null(const char *s, int *bad) {
  if (!s || !s[0])
    return NULL;
  char *d = strdup(s);
  if (!d)
    *bad = 1;
  return d;
}

struct https_fetch *https_fetch_start(uv_loop_t *loop,
                                      const struct https_req *req, https_cb cb,
                                      void *arg) {
  struct https_fetch *f = calloc(1, sizeof *f);
  if (!f)
    return NULL;
  int bad = 0;
  f->w.data = f;
  f->cb = cb;
  f->arg = arg;
  f->url = dup_or_null(req->url, &bad);
  f->post = req->post_body ? strdup(req->post_body) : NULL;
  if (req->post_body && !f->post)
    bad = 1;
  f->ctype =
      dup_or_null(req->content_type ? req->content_type
                                    : "application/x-www-form-urlencoded",
                  &bad);
  f->accept = dup_or_null(req->accept, &bad);
  f->ca = dup_or_null(req->ca_file, &bad);
  f->resolve = dup_or_null(req->resolve, &bad);
  f->connect_ms = (long)req->connect_timeout_ms;
  f->total_ms = (long)req->timeout_ms;
  f->max_body = req->max_body;
  f->body = malloc(f->max_body ? f->max_body : 1);
  if (bad || !f->url || !f->body ||
      uv_queue_work(loop, &f->w, fetch_work, fetch_done) != 0) {
    fetch_free(f);
    return NULL;
  }
  return f;
}

void https_fetch_abort(struct https_fetch *f) {
  if (f)
    atomic_store(&f->stop, 1);
}

#else /* !MAILHOP_HAVE_CURL */

int https_client_supported(void) {
  return 0;
}

int https_client_init(void) {
  return -1;
}

struct https_fetch *https_fetch_start(uv_loop_t *loop,
                                      const struct https_req *req, https_cb cb,
                                      void *arg) {
  (void)loop, (void)req, (void)cb, (void)arg;
  return NULL;
}

void https_fetch_abort(struct https_fetch *f) {
  (void)f;
}

#endif
