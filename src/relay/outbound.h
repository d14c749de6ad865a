/*
 * outbound: the delivering half.  The scheduler dispatches a job (one
 * message, one destination, some recipients); outbound reads the envelope
 * from the store, resolves the destination (MX, or the relayhost list),
 * connects to the candidates in order, drives a proto/smtp_client machine
 * over a loop/conn, streams the body from the store through the encoder,
 * and reports every recipient's outcome back: to the store (delivered /
 * deferred / bounced, with the RFC 3464 bounce in the same transaction)
 * and then to the scheduler.
 *
 * This is the API of the folder src/relay/outbound/ for serve.c: dispatch
 * (jobs, envelope, resolution, life cycle), session (connect, SMTP, TLS,
 * body, the try-next ladder), cache (idle connections, one connection
 * budget), outcome (pure: each recipient's fate) and record (bounce, store
 * update, scheduler result).
 */
#ifndef MAILHOP_OUTBOUND_H
#define MAILHOP_OUTBOUND_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct config;
struct store;
struct sched;
struct sched_job;
struct stats;
struct outbound;

/* Creates the delivery engine (its resolver and TLS contexts).  Returns
 * NULL with a one-line reason in err. */
struct outbound *outbound_new(uv_loop_t *loop, const struct config *cfg,
                              struct store *st, struct stats *stats, char *err,
                              size_t errlen);

/* Must be set before the first dispatch. */
void outbound_set_sched(struct outbound *ob, struct sched *sched);

/* The scheduler's dispatch callback (data is the outbound). */
void outbound_dispatch(struct sched *s, struct sched_job *job, void *data);

/* The scheduler's backoff for a failing destination: the fails-th step of
 * retry_schedule, the last one repeating (data is the outbound). */
int64_t outbound_backoff(const char *dest, unsigned fails, void *data);

/* The destination key of a recipient (CONTRACT §4, §4a): the route's
 * target when a line of the routes file matches (its relayhost list as
 * written, or the domain for relayhost=mx), else "relayhost" with a global
 * relayhost, else the recipient domain.  sender is the envelope sender
 * ("" for <>).  The string is valid until the next outbound_set_routes;
 * the scheduler copies it. */
const char *outbound_dest_for(const struct outbound *ob, const char *sender,
                              const char *domain);

/* outbound_dest_for with the null sender (bounces). */
const char *outbound_dest(const struct outbound *ob, const char *domain);

/* Installs the routes (relay/routes.h; the outbound takes over the
 * reference).  Later calls replace the table: deliveries in flight keep
 * the old one, kept connections are closed. */
struct relay_routes;
void outbound_set_routes(struct outbound *ob, struct relay_routes *rt);

/* The routes in force (parsed, proto/routes.h), NULL when none; valid
 * until the next outbound_set_routes / outbound_reload. */
struct routes;
const struct routes *outbound_routes(const struct outbound *ob);

/*
 * `drain --to [HOST]:PORT` (CONTRACT §1): with host set, every delivery
 * that starts from now on goes to that SMTP peer instead of its own route
 * (its addresses, no MX; opportunistic STARTTLS; no AUTH); recipients keep
 * their destination keys in the scheduler.  The peer's 250 is the delivery
 * (the local copy goes only then); its refusal of the relay defers, as for
 * any relayhost.  host NULL ends it (`drain --cancel`).  Kept connections
 * are closed both ways.  host is copied.  0, or -EINVAL (empty or too
 * long host).
 */
int outbound_set_drain_to(struct outbound *ob, const char *host, uint16_t port);

/* SIGHUP: reloads the routes file (a bad file is logged and the old routes
 * stay) and the trust anchors (tls_ca_file or the system store) for new
 * connections; connections in flight keep theirs.  Logs the outcome. */
void outbound_reload(struct outbound *ob);

/* Closes the connections kept for reuse and keeps no new ones (shutdown). */
void outbound_close_idle(struct outbound *ob);

/* Deliveries in flight plus cached connections. */
int outbound_active(const struct outbound *ob);

/* Ends every delivery now (shutdown timeout): their recipients are left
 * as they are in the store, so they are retried after the restart. */
void outbound_abort_all(struct outbound *ob);

/* The TLS-RPT counter (relay/tlsrpt.h), owned by the engine; for the
 * admin socket's `tlsrpt`. */
struct tlsrpt;
struct tlsrpt *outbound_tlsrpt(struct outbound *ob);

/* Frees the engine once no delivery is left; closes the resolver. */
void outbound_free(struct outbound *ob);

#endif
