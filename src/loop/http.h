/*
 * http: small HTTP/1.1 servers on the loop, for metrics and health
 * (CONTRACT §7).  The HTTP protocol itself (RFC 9110, RFC 9112: parsing,
 * keep-alive, HEAD, error answers) is GNU libmicrohttpd's: one
 * MHD daemon per listening address, run without any thread of its own
 * (MHD_USE_EPOLL, no internal thread).  Its epoll descriptor is watched
 * with a uv_poll_t and MHD_run() is called when it is readable; a
 * uv_timer_t armed from MHD_get_timeout() drives its timeouts and any work
 * it left ready.  So every byte is read and written on the loop thread,
 * without ever blocking it.
 *
 * Bounds (per listening address): at most HTTP_MAX_CONNECTIONS connections
 * (beyond that MHD leaves new ones in the kernel backlog), of which at most
 * HTTP_MAX_PER_IP from one client address (more are closed at once: one
 * client that holds idle or trickling connections cannot take the slots
 * of the health probes and the scraper, which come from other addresses),
 * a request line
 * plus headers of at most HTTP_MAX_REQUEST bytes (MHD answers 414/431 and
 * closes), HTTP_IDLE_TIMEOUT_S seconds without progress closes a
 * connection; keep-alive is allowed for GET and HEAD.  Request bodies are
 * never read: another method gets the handler's answer at once and the
 * connection closes; a GET or HEAD with a body is closed unanswered.
 *
 * This module knows nothing of mail: the owner's handler maps a method and
 * a path to a response.  It must never: parse HTTP itself, block, or call
 * the handler off the loop thread.
 */
#ifndef MAILHOP_LOOP_HTTP_H
#define MAILHOP_LOOP_HTTP_H

#include <stddef.h>
#include <sys/socket.h>
#include <uv.h>

#define HTTP_MAX_CONNECTIONS 64
#define HTTP_MAX_REQUEST (16 * 1024) /* bytes: request line + headers */
#define HTTP_MAX_PER_IP 8
#define HTTP_IDLE_TIMEOUT_S 10

/* A response, filled by the handler. */
struct http_response {
  int status;               /* 200, 404, ... */
  const char *content_type; /* static string, or NULL for none */
  const char *allow;        /* Allow header (405), static, or NULL */
  char *body;               /* malloc'd; http frees it.  NULL: empty */
  size_t len;               /* bytes of body */
};

/*
 * Called on the loop thread for each request, once its headers are in.
 * method and path ("/metrics", the query string stripped) are valid during
 * the call only.  The handler fills *res (status 0 counts as 500).
 */
typedef void (*http_handler_cb)(const char *method, const char *path,
                                struct http_response *res, void *data);

struct http_server;

/*
 * Binds and listens on each of the n addresses (AF_INET or AF_INET6 with
 * the port set; IPv6 sockets are v6-only) and starts serving on loop.
 * handler and data are borrowed until http_stop().  Returns 0 and *out, or
 * a negative errno (-EADDRINUSE, -EACCES, -ENOMEM, ...) with a one-line
 * message naming the address in err; nothing is left open then.
 */
int http_start(uv_loop_t *loop, const struct sockaddr_storage *addrs, int n,
               http_handler_cb handler, void *data, struct http_server **out,
               char *err, size_t errlen) __attribute__((warn_unused_result));

/*
 * The address the i-th listener is bound to (the port the kernel chose when
 * the configured one was 0), owned by h; NULL when i is out of range.
 */
const struct sockaddr *http_addr(const struct http_server *h, int i);

/*
 * Closes the listeners and every connection (requests in flight are cut),
 * and frees the server from the handles' close callbacks: run the loop
 * afterwards.  The handler is not called after this returns.  NULL is
 * ignored.
 */
void http_stop(struct http_server *h);

#endif
