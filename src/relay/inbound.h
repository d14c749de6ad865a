/*
 * inbound: the receiving half.  Opens the listeners and drives one pure
 * proto/smtp_server machine per connection over a loop/conn, streaming DATA
 * into a store spool and committing finished messages to the store (group
 * commit).  Each committed message is announced through on_queued so the
 * scheduler can pick it up; inbound knows nothing of delivery.
 */
#ifndef MAILHOP_INBOUND_H
#define MAILHOP_INBOUND_H

#include <stddef.h>
#include <uv.h>

struct config;
struct store;
struct store_msg;
struct stats;
struct inbound;

/* A message is durable in the queue (the client has its 250). */
typedef void (*inbound_queued_cb)(const struct store_msg *msg, void *data);

/*
 * Binds every listener of cfg and starts accepting.  Returns NULL with a
 * one-line reason in err when a listener cannot be opened (*bad_config 0)
 * or the TLS certificate or the users file cannot be loaded (*bad_config
 * 1: a configuration error).  cfg, st and stats must outlive it.
 */
struct inbound *inbound_start(uv_loop_t *loop, const struct config *cfg,
                              struct store *st, struct stats *stats,
                              inbound_queued_cb on_queued, void *data,
                              int *bad_config, char *err, size_t errlen);

/* Stops accepting new connections (shutdown); sessions go on. */
void inbound_stop_accepting(struct inbound *in);

/* `drain` (CONTRACT §1): with on=1, sessions between transactions get
 * "421 4.3.2 Service shutting down" now and the others right after the
 * reply to their message, so clients take their next message to another
 * instance instead of adding to a queue being emptied.  on=0 (or
 * inbound_resume_accepting) ends it. */
void inbound_drain_sessions(struct inbound *in, int on);

/* Opens the listeners again after inbound_stop_accepting (`drain
 * --cancel`, CONTRACT §1): the addresses first bound, so a `:0` listener
 * keeps its port.  0 (also when they are open already), or -1 with a
 * one-line reason in err (none is left open then). */
int inbound_resume_accepting(struct inbound *in, char *err, size_t errlen);

/* Sessions open now. */
int inbound_sessions(const struct inbound *in);

/* The bound address of listener i (in configuration order: listen, then
 * listen_tls), the real port when configured as port 0; NULL past the
 * end or after inbound_stop_accepting. */
const struct sockaddr *inbound_listener_addr(const struct inbound *in, int i);

/*
 * Test hooks for the deterministic interleaving harness
 * (tests/unit/test_inbound_harness.c); all NULL in production.
 *
 * on_step: every completion of an asynchronous step a session waits for
 *   (kind "spool", "commit", "auth", "tls" or "output") is handed to the
 *   hook instead of being acted on; the session keeps waiting (reading
 *   paused, parsed events queued) until the test calls
 *   inbound_debug_release(step) — from any later loop callback, in any
 *   order across sessions.  Every held step must be released (the session
 *   is freed only then).  The store, spool and hash work itself is real
 *   and has finished; only its effect on the session is held back.
 * on_trace: each event the session acts on (smtp_server_event_name) and
 *   each change of its wait ("wait none -> spool"), in order.
 * session is the session's log id ("S1", "S2", ... in accept order).
 */
struct inbound_debug {
  void (*on_step)(void *step, const char *session, const char *kind,
                  void *data);
  void (*on_trace)(const char *session, const char *what, void *data);
  void *data;
};
/* Sets (copies) or clears (NULL) the hooks; before any session starts. */
void inbound_debug_set(struct inbound *in, const struct inbound_debug *dbg);
/* Acts on a held completion now (see on_step). */
void inbound_debug_release(void *step);

/* The free-space watch of the queue's file system (relay/diskspace.h),
 * for readiness and tests; NULL when it could not start (out of memory:
 * then no reserve is enforced).  Owned by inbound. */
struct diskspace *inbound_diskspace(struct inbound *in);

/* SIGHUP: reload the certificate and the AUTH users file; sessions in
 * flight keep what they have.  Logs the outcome. */
void inbound_reload(struct inbound *in);

/* Ends every session now (shutdown timeout) and frees everything once the
 * last handle is closed; then calls cb. */
void inbound_free(struct inbound *in, void (*cb)(void *data), void *data);

#endif
