/*
 * outbound/cache: connections kept open after a delivery for the next
 * message to the same destination (as Postfix's connection cache, 2 s).
 *
 * An idle connection is owned by the cache (struct idle, on the outbound's
 * idle list) until a delivery takes it or it closes; it closes when the
 * server speaks (a 421), after the idle time (polite QUIT), or at
 * shutdown.  Every path ends in the cache's close callback, which
 * unlinks and frees it.
 */
#ifndef MAILHOP_RELAY_OUTBOUND_CACHE_H
#define MAILHOP_RELAY_OUTBOUND_CACHE_H

#include <stddef.h>

struct conn;
struct delivery;
struct outbound;
struct smtp_client;

/* How long a connection waits for the next message to its destination, in
 * ms (Postfix's smtp_connection_cache_time_limit is 2 s). */
#define CACHE_IDLE_MS 2000

/* Keeps the delivery's connection (idle, between transactions) for the
 * next message to its destination, within the limits.  Returns 1 when it
 * took the connection (d->conn and d->cli are then NULL), else 0. */
int cache_park(struct delivery *d);

/* Takes a connection to dest from the cache: returns 1 and hands over the
 * connection, its client machine and its "host[addr]:port" (copied into
 * remote, remote_cap bytes); the caller must set the connection's owner at
 * once.  Returns 0 when none is cached.  stamp (outbound/trust.h
 * trust_stamp: "" or "sts:ID") must equal the stamp the connection was
 * parked with when it is not "": a connection made before an MTA-STS
 * policy (or under another one) is not reused for enforced mail. */
int cache_take(struct outbound *ob, const char *dest, const char *stamp,
               struct conn **conn, struct smtp_client **cli, char *remote,
               size_t remote_cap);

/* One budget for open connections, cached ones included (CONTRACT §2:
 * max_outbound connections in total, max_per_destination per
 * destination).  Returns 1 when a new connection to dest fits now.  When
 * it does not, it starts closing a cached connection to make room (one to
 * dest when dest is at its limit, else the least recently used one) and
 * returns 0: the caller waits for session_wake(), which runs after every
 * close. */
int cache_make_room(struct outbound *ob, const char *dest);

/* Closes every cached connection (QUIT, then close) and keeps no new ones
 * (shutdown).  Their close callbacks run later. */
void cache_close_all(struct outbound *ob);

#endif
