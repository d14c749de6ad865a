/*
 * outbound/session: one delivery's connections.  Connects to the resolved
 * candidates in order, drives a proto/smtp_client machine over a
 * loop/conn (STARTTLS or implicit TLS, AUTH to the relayhost), streams the
 * body from the store through the encoder, and decides each recipient from
 * the replies (dispatch_decide).
 *
 * The try-next ladder: every connection ends in one close callback, which
 * alone decides what comes next -- the next candidate (connect failure, a
 * host failing before any recipient was decided), a plaintext retry of the
 * same host (opportunistic TLS whose handshake failed, RFC 7435), or the
 * outcome (record_finish) -- so there is one path whatever went wrong.
 *
 * The session owns d->conn and d->cli while they are set; it hands them
 * to the cache (cache_park) when a delivery is over and the connection is
 * still good.
 */
#ifndef MAILHOP_RELAY_OUTBOUND_SESSION_H
#define MAILHOP_RELAY_OUTBOUND_SESSION_H

#include <stddef.h>

struct conn;
struct delivery;
struct outbound;
struct smtp_client;

/* Moves the delivery on after its connection ended (or before the first
 * one: d->cand == -1): the next candidate or a plaintext retry, or, when
 * nothing is left to try, the outcome (record_finish).  May call
 * dispatch_resolve again when a reused connection failed at once. */
void session_next(struct delivery *d);

/* Sends the delivery's message over a connection taken from the cache
 * (cache_take): the session takes ownership of conn and cli; remote is
 * the host's "name[addr]:port". */
void session_reuse(struct delivery *d, struct conn *conn,
                   struct smtp_client *cli, const char *remote);

/* Connects to the current candidate d->cand (or waits for room in the
 * connection budget); for dane.c after its TLSA lookup. */
void session_connect(struct delivery *d);

/* A connection closed: deliveries waiting for a slot of the connection
 * budget (cache_make_room) try again. */
void session_wake(struct outbound *ob);

/* Shutdown: deliveries waiting for a slot end now (their recipients stay
 * as they are in the store). */
void session_abort_waiting(struct outbound *ob);

#endif
