/*
 * relay/oauth2: mailhop as its own OAuth2 client for XOAUTH2 at the
 * relayhost (CONTRACT §4a).  Access tokens come from
 * relayhost_oauth2_token_url by the client-credentials grant, or by the
 * refresh-token grant when a refresh token is set; each is kept until
 * shortly before its expires_in and dropped after the relayhost refused it.
 *
 * The HTTPS POST is loop/https_client's (libcurl on a thread of the libuv
 * pool; one fetch in flight at a time, however many deliveries wait;
 * bounded time and answer size; certificate and host name verified against
 * tls_ca_file or the system store; no redirects, no proxy).  Everything
 * here runs on the loop thread.  Tokens and secrets never reach a log line.
 *
 * Built only with libcurl (meson -Doauth2, MAILHOP_HAVE_CURL); without it
 * oauth2_supported() is 0 and serve refuses a set
 * relayhost_oauth2_token_url at start-up.
 */
#ifndef MAILHOP_RELAY_OAUTH2_H
#define MAILHOP_RELAY_OAUTH2_H

#include <stddef.h>
#include <uv.h>

#include "config.h"

#define OAUTH2_FETCH_TIMEOUT_MS 30000 /* a whole fetch, connect included */

struct oauth2;

/* 1 when mailhop was built with libcurl (token fetching), else 0. */
int oauth2_supported(void);

/*
 * Called on the loop thread with rc 0 and the token (valid during the
 * call only: copy it), or rc -1 and why (the reason, no secret in it), or
 * rc -2 when oauth2_abort_waiters ended the wait (shutdown).
 */
typedef void (*oauth2_cb)(void *arg, int rc, const char *token,
                          const char *why);

/* A wait for a token, embedded in the waiter (no allocation). */
struct oauth2_wait {
  struct oauth2_wait *next;
  oauth2_cb cb;
  void *arg;
  int queued;
};

/*
 * The client for cfg (relayhost_oauth2_*; cfg must outlive it).  Returns
 * NULL with a reason in err when cfg has no token URL (err empty) or when
 * mailhop was built without libcurl.  Call at start-up, before other
 * threads run (curl_global_init).
 */
struct oauth2 *oauth2_new(uv_loop_t *loop, const struct config *cfg, char *err,
                          size_t errlen);

/*
 * Gets a token for w: at once (w->cb called before this returns) when a
 * cached one is still fresh, else after the fetch in flight or a new one.
 * w must stay valid until its callback or oauth2_cancel.
 */
void oauth2_get(struct oauth2 *o, struct oauth2_wait *w, oauth2_cb cb,
                void *arg);

/* Takes w out of the waiters (its callback is not called).  A w not
 * waiting is fine. */
void oauth2_cancel(struct oauth2 *o, struct oauth2_wait *w);

/* The relayhost refused token (535 or the error challenge): the cached
 * token is dropped when it is that one, so the next get fetches anew. */
void oauth2_refused(struct oauth2 *o, const char *token);

/* Shutdown: every waiter's callback is called with rc -2; the fetch in
 * flight is told to stop. */
void oauth2_abort_waiters(struct oauth2 *o);

/* Frees o (a fetch in flight finishes on its thread first, its result
 * dropped).  NULL is fine. */
void oauth2_free(struct oauth2 *o);

#endif
