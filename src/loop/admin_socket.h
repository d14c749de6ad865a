/*
 * admin_socket: the admin Unix stream socket's transport (CONTRACT §5).
 *
 * Owns the listening uv_pipe_t, the socket file and the admin clients'
 * pipes.  It moves lines in and bytes out and knows nothing of mail or
 * JSON: each command line goes to the owner's callback, which answers with
 * admin_socket_write() (any number of times, a reply may be streamed) and
 * then admin_socket_end() exactly once.  Lines of one client are handed
 * over one at a time, in order: the next line is dispatched only after the
 * previous reply has ended, so replies never interleave.
 *
 * Bounds: a line is at most ADMIN_SOCKET_LINE_MAX bytes (longer ones are
 * reported to the callback with UV_E2BIG and skipped up to the next
 * newline), at most ADMIN_SOCKET_MAX_CLIENTS clients at once (when all
 * slots are taken, a new client takes the slot of the idle client — no
 * reply in flight, nothing buffered — that sent its last line, or
 * connected, the longest ago, which is closed; only when every client is
 * busy is the new one told `reject_line` and closed), a client idle for
 * ADMIN_SOCKET_IDLE_MS is closed, and a client's unsent output
 * is capped at ADMIN_SOCKET_OUT_MAX bytes (beyond it the client is dropped:
 * it does not read its replies).  While unsent output is above
 * ADMIN_SOCKET_OUT_HIGH the client's next line waits.
 *
 * Everything here runs on the loop thread.
 */
#ifndef MAILHOP_LOOP_ADMIN_SOCKET_H
#define MAILHOP_LOOP_ADMIN_SOCKET_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define ADMIN_SOCKET_LINE_MAX 1024
#define ADMIN_SOCKET_MAX_CLIENTS 16
/* A client with nothing in flight for this long is closed, so silent
 * connections cannot lock out `mailhop status` (issue 12: it was 5 min);
 * checked every third of it. */
#define ADMIN_SOCKET_IDLE_MS (10 * 1000)
#define ADMIN_SOCKET_CHUNK (64 * 1024)
#define ADMIN_SOCKET_OUT_HIGH (1024 * 1024)
#define ADMIN_SOCKET_OUT_MAX (256 * 1024 * 1024)

struct admin_socket;
struct admin_client;

/*
 * One command line: `line` (without its "\n" or "\r\n", NUL-terminated,
 * valid only during the call) and status 0; or line NULL, len 0 and status
 * UV_E2BIG for a line longer than ADMIN_SOCKET_LINE_MAX.  The owner must
 * call admin_socket_end(c) exactly once for every call, from inside the
 * callback or later (after asynchronous work); `c` stays valid until then
 * even if the peer goes away (see admin_socket_alive()).
 */
typedef void (*admin_socket_line_cb)(struct admin_client *c, const char *line,
                                     size_t len, int status, void *data);

/*
 * Creates the socket at `path` and starts listening.  Start-up only: it
 * sets the process umask to 0177 around bind(2) so the file is mode 0600
 * from its first instant, and probes an existing socket file with a
 * blocking connect(2): a socket nobody listens on (left by a crash) is
 * unlinked and replaced; a live one is an error ("admin socket PATH is in
 * use"), as is a path that exists and is not a socket.  `reject_line` (may
 * be NULL; copied) is written to a client refused for the client limit.
 * Returns 0 and *out, or a negative UV_E* code with a one-line message in
 * err; on error nothing is left behind.
 */
int admin_socket_open(uv_loop_t *loop, const char *path,
                      admin_socket_line_cb cb, void *data,
                      const char *reject_line, struct admin_socket **out,
                      char *err, size_t errlen)
    __attribute__((warn_unused_result));

/*
 * Stops listening, unlinks the socket file, closes every client (unsent
 * output is dropped) and frees the server once its handles are closed.
 * Clients whose reply has not ended stay allocated until the owner calls
 * admin_socket_end() for them (writes then fail with UV_EPIPE).  The line
 * callback is never called again.
 */
void admin_socket_close(struct admin_socket *s);

/* Number of clients connected now. */
int admin_socket_clients(const struct admin_socket *s);

/* Changes the idle limit (default ADMIN_SOCKET_IDLE_MS); for tests. */
void admin_socket_set_idle_timeout(struct admin_socket *s, uint64_t ms);

/*
 * Appends len bytes (copied) to the current reply.  Bytes are gathered in
 * chunks of ADMIN_SOCKET_CHUNK and written when a chunk fills, on
 * admin_socket_flush() and on admin_socket_end().  Returns 0; UV_EPIPE when
 * the client is gone (the bytes are dropped; the owner should stop working
 * on the reply and end it); UV_ENOBUFS when the client's unsent output
 * passed ADMIN_SOCKET_OUT_MAX (the client is then being closed).
 */
int admin_socket_write(struct admin_client *c, const void *buf, size_t len);

/* Starts writing what has been gathered so far (a streamed reply calls it
 * after each batch).  Returns 0 or UV_EPIPE. */
int admin_socket_flush(struct admin_client *c);

/* Bytes written to the client but not yet taken by the kernel, plus the
 * bytes still gathered: a streaming owner may slow down above
 * ADMIN_SOCKET_OUT_HIGH. */
size_t admin_socket_pending(const struct admin_client *c);

/*
 * Ends the reply to the current line: flushes it and lets the client's
 * next line be dispatched (on this call's return if it comes from outside
 * the callback, or once the callback returns).  After the last end of a
 * client that is gone, `c` is freed: do not touch it after this call.
 */
void admin_socket_end(struct admin_client *c);

/* 1 while the peer is connected and the server open, 0 once it is gone
 * (replies are then dropped). */
int admin_socket_alive(const struct admin_client *c);

#endif
