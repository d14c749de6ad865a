/*
 * loop/https_client: one HTTPS request (GET or POST) whose outcome comes
 * back on the loop thread: the OAuth2 token fetch (CONTRACT §4a) now, the
 * MTA-STS policy fetch (§4b) next.  Knows no mail.
 *
 * libcurl's easy interface runs the request on a thread of the libuv pool
 * (docs/DESIGN.md says why): https only, TLS 1.2 or later, certificate and
 * host name verified (ca_file, or the system store), no redirects, no proxy
 * from the environment, bounded connect time, total time and body size.
 *
 * Built only with libcurl (meson -Doauth2, MAILHOP_HAVE_CURL); without it
 * https_client_supported() is 0 and https_fetch_start always fails.
 */
#ifndef MAILHOP_LOOP_HTTPS_CLIENT_H
#define MAILHOP_LOOP_HTTPS_CLIENT_H

#include <stddef.h>
#include <uv.h>

struct https_req {
  const char *url;          /* https://HOST[:PORT]/PATH; copied */
  const char *post_body;    /* NULL: GET; else POSTed (copied, and wiped
                               after: it may hold secrets) */
  const char *content_type; /* of the POST body; NULL: form-urlencoded */
  const char *accept;       /* Accept header; NULL: none */
  const char *ca_file;      /* NULL or "": the system store; copied */
  unsigned connect_timeout_ms;
  unsigned timeout_ms; /* the whole request */
  size_t max_body;     /* bytes; a longer answer is an error */
  const char *resolve; /* NULL, or "HOST:PORT:ADDR" (libcurl's
                          CURLOPT_RESOLVE, ADDR an IP literal, IPv6 in
                          brackets): the URL's host is reached at ADDR,
                          looked up beforehand by the caller's own
                          resolver; the certificate is still checked for
                          HOST.  Copied. */
};

struct https_result {
  int rc;           /* 0: an answer (any status); -1: no answer (why); -2:
                       aborted by https_fetch_abort */
  long status;      /* HTTP status when rc is 0 */
  const char *body; /* rc 0: len bytes (not NUL-terminated), valid during
                       the callback only, wiped after it */
  size_t len;
  const char *content_type; /* rc 0: the Content-Type header as sent
                               (parameters included, cut to 127 bytes),
                               NULL when there was none; valid during the
                               callback only */
  const char *why;          /* rc < 0: the reason (no URL query, no body) */
};

/* Called once on the loop thread; the fetch is freed after it returns. */
typedef void (*https_cb)(void *arg, const struct https_result *res);

struct https_fetch;

/* 1 when mailhop was built with libcurl, else 0. */
int https_client_supported(void);

/*
 * Starts the request.  Call https_client_init() once first, at start-up
 * before other threads run.  Returns the fetch (its callback will come),
 * or NULL (out of memory, no libcurl; no callback).
 */
struct https_fetch *https_fetch_start(uv_loop_t *loop,
                                      const struct https_req *req, https_cb cb,
                                      void *arg);

/* Tells the request to stop; its callback comes with rc -2 (or with the
 * outcome when it had already finished).  Safe until the callback. */
void https_fetch_abort(struct https_fetch *f);

/* Sets up libcurl (curl_global_init).  Returns 0, or -1 when it cannot
 * (or mailhop was built without it). */
int https_client_init(void);

#endif
