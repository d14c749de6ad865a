/*
 * listener: one listening TCP socket on the loop.
 *
 * Owns the socket, a uv_poll_t watching it and a uv_timer_t that pauses
 * accepting when the process runs out of file descriptors.  Every accepted
 * socket becomes a conn (conn_adopt) handed to the owner's callback, which
 * decides: conn_set_owner() to serve it, or write a refusal (e.g. 421 when
 * over max_sessions) and conn_close_flush().  Knows nothing about SMTP.
 *
 * Accepting is done here rather than by uv_listen/uv_accept so that
 * EMFILE/ENFILE can be handled by waiting: libuv answers EMFILE with its
 * reserve-fd trick (accept and drop every pending connection), and when
 * the reserve fd is gone it calls back with the error in a loop that does
 * not stop.  Here, a descriptor shortage stops the poll for
 * LISTENER_PAUSE_MS and leaves the pending connections in the kernel's
 * backlog: no busy loop, no dropped clients while fds come back.
 */
#ifndef MAILHOP_LOOP_LISTENER_H
#define MAILHOP_LOOP_LISTENER_H

#include <stddef.h>
#include <sys/socket.h>

#include <uv.h>

#include "loop/conn.h"

#define LISTENER_BACKLOG 511
#define LISTENER_PAUSE_MS 250
/* Accepts per readiness event, so one busy listener cannot starve the
 * loop. */
#define LISTENER_BATCH 64

struct listener;

/* A new connection; c is not yet owned (see conn_set_owner).  The callee
 * may call listener_close(l). */
typedef void (*listener_accept_cb)(struct listener *l, struct conn *c,
                                   void *data);

/*
 * Binds addr (IPv6 sockets v6-only, SO_REUSEADDR) and starts accepting.
 * tls is only remembered for the owner (listener_tls).  Returns 0 and the
 * listener in *out, or a negative errno-style UV_E* code with a one-line
 * error in err, e.g. "cannot listen on 127.0.0.1:25: address already in
 * use"; then nothing is left open.
 */
int listener_open(uv_loop_t *loop, const struct sockaddr *addr, int tls,
                  listener_accept_cb cb, void *data, struct listener **out,
                  char *err, size_t errlen) __attribute__((warn_unused_result));

/* Stops accepting and closes the socket; memory is freed from the close
 * callbacks.  Connections already accepted are not touched.  No callback
 * runs after this. */
void listener_close(struct listener *l);

int listener_tls(const struct listener *l);
void *listener_data(const struct listener *l);
/* The bound address (the real port when bound to port 0). */
const struct sockaddr *listener_addr(const struct listener *l);
/* "127.0.0.1:2525", "[::1]:2525". */
const char *listener_name(const struct listener *l);
/* How many times accepting was paused for lack of descriptors. */
unsigned long listener_pauses(const struct listener *l);

#endif
