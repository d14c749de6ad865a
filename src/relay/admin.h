/*
 * admin: the admin socket's commands (CONTRACT §5), wiring the admin
 * socket (loop/admin_socket) to the store and the scheduler.
 *
 * Commands, one per line, each answered with one line of JSON built with
 * jansson: status, queue, show ID, flush [ID], delete ID, hold ID,
 * release ID, pause, resume, the filtered forms `queue FILTER...` and
 * `delete|hold|release|flush FILTER...`, `suspend DESTINATION [SECONDS]`
 * and `unsuspend DESTINATION`, `drain [TO] [TIMEOUT_S]` and `drain cancel`
 * (admin_set_drain); anything else gets {"error": "..."}.
 *
 *   - Filtered commands (FILTER words of proto/qfilter, ANDed; a bulk
 *     action needs one or `all`) page through store_select(): one page of
 *     at most STORE_BATCH matches per reader-lane job, each page acted on
 *     (scheduler at once, store_bulk() as one writer request) before the
 *     next is asked for, so a bulk delete of 100,000 messages is many small
 *     steps between which SMTP sessions and deliveries go on.  Bulk replies
 *     {"ok": true, "count": N}; a failure stops it with an error saying how
 *     many were done.  Bulk actions are refused while the queue loads.
 *   - `suspend` takes effect in the scheduler at once and is kept in the
 *     queue database (store_suspend); if that fails it is undone.
 *     Suspensions kept there are restored at admin_start().  `status`
 *     gains "suspended": [{"destination", "until"}].
 *
 *   - `queue` streams: `{"messages":[` is written at once, then every
 *     message as store_list() batches arrive (the reads run on the thread
 *     pool), then `]}`.  A listing that fails midway ends with
 *     `],"error":"..."}` so the line stays valid JSON.
 *   - `delete ID` holds the message in the scheduler (no attempt starts
 *     after the command), deletes it from the store (no bounce), and only
 *     when the store confirms removes it from the scheduler; when the store
 *     fails (disk full) the hold is undone and nothing has changed.
 *   - `hold ID` holds it in the scheduler at once and stores the flag (the
 *     scheduler hold is undone if the store fails); `release ID` stores the
 *     flag, then releases it in the scheduler.
 *   - `flush [ID]`, `pause`, `resume`, `status` answer from memory
 *     (`status` adds what the queue load has still to hand over, and
 *     "loading", see admin_set_loading()).
 *
 * Text that came from peers (addresses, headers, last errors) is made valid
 * UTF-8 before it goes into JSON.  Times are RFC 3339 UTC strings.
 */
#ifndef MAILHOP_ADMIN_H
#define MAILHOP_ADMIN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct admin;
struct store;
struct sched;
struct stats;
struct store_counts;

/*
 * Opens the admin socket at `path` on `loop` (see admin_socket_open(): mode
 * 0600, a stale socket replaced, a live one refused).  st, sched and stats
 * are borrowed and must outlive admin_stop(); stats may be NULL (counters
 * read as 0).  Start-up only (before the loop runs).  Returns NULL with a
 * one-line message in err (e.g. "admin socket PATH is in use").
 */
struct admin *admin_start(uv_loop_t *loop, const char *path, struct store *st,
                          struct sched *sched, const struct stats *stats,
                          char *err, size_t errlen)
    __attribute__((warn_unused_result));

/*
 * Closes the socket and every admin client, unlinks the path and cancels
 * running listings.  Store requests already issued still complete (their
 * callbacks touch neither the scheduler nor the clients' sockets), so call
 * it before store_close(); the memory goes with the last of them.  The
 * scheduler is not used after this call.
 */
void admin_stop(struct admin *a);

/*
 * While the queue load runs (loading=1), `status` says "loading": true
 * and adds `pending` (what the load has still to hand over: the count made
 * at start minus what it has handed over so far; copied) to the
 * scheduler's figures, so the counts are right from the first second;
 * delete, hold, release and flush of a message the load has not reached
 * yet are refused ("the queue is still loading, try again"): its batch may
 * already have been read, and the change could be lost.  loading=0 ends
 * it (the key is then left out, as CONTRACT §5 lists none).  With
 * loading=1 and pending NULL the counts are not known yet (right after
 * start): a `status` then waits for the call that gives them.
 */
void admin_set_loading(struct admin *a, int loading,
                       const struct store_counts *pending);

/*
 * Destinations (CONTRACT §1 suspend): `suspend DESTINATION` takes a
 * recipient domain or a relayhost as written in the configuration, kept
 * (and shown by `status`) in its canonical form, ASCII lower case.  A name
 * covers every scheduler key it designates: the domain itself, and the key
 * of each relayhost target whose list it names (proto/routes.h
 * routes_dest_covers: "[h]:p" or "h:p", "[h]" or "h" for that host on any
 * port, or the whole list) or whose key it is ("relayhost", a route's
 * "[h]:p#LINE").  So one name holds the global relayhost and every route
 * to the same relayhost, whatever their settings or the case they are
 * written in.  A name that covers nothing is refused with the reason.
 *
 * admin_set_destinations tells the targets: the global relayhost of cfg
 * (key "relayhost") and the relayhost routes of rs (NULL: none); both are
 * copied.  Call it after admin_start, before the queue loads, and again
 * after the routes are reloaded (SIGHUP): suspensions then cover the new
 * keys, without lifting a key that stays covered.
 */
struct config;
struct routes;
void admin_set_destinations(struct admin *a, const struct config *cfg,
                            const struct routes *rs);

/*
 * `drain [[HOST]:PORT] [TIMEOUT_S]` and `drain cancel` (CONTRACT §1, §5):
 * admin parses the words (proto/routes routes_parse_peer) and hands them
 * to the owner's callback, which stops accepting and points delivery at
 * `to` (NULL: each message's own route), or with cancel=1 undoes it.
 * timeout_s is the CLI's wait (0: none given), for the owner's log.  The
 * callback returns 0 ({"ok": true} at once), or -1 with a one-line reason
 * in err (the reply's "error").  Without a callback, drain is refused.
 */
struct route_host;
typedef int (*admin_drain_cb)(void *data, int cancel,
                              const struct route_host *to, int64_t timeout_s,
                              char *err, size_t errlen);
void admin_set_drain(struct admin *a, admin_drain_cb cb, void *data);
/* What `tlsrpt` answers (CONTRACT §5): json(arg) gives one line of JSON,
 * malloc'd (relay/tlsrpt.h tlsrpt_json), NULL when out of memory; arg is
 * borrowed until admin_stop().  Without it `tlsrpt` is an error reply. */
void admin_set_tlsrpt(struct admin *a, char *(*json)(void *arg), void *arg);

/* Formats unix seconds as RFC 3339 UTC ("2026-11-28T17:00:00Z"); out must
 * hold 21 bytes.  Exposed for the CLI and tests. */
void admin_time_rfc3339(long long t, char out[21]);

#endif
