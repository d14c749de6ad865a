/*
 * outbound/record: the end of a delivery.  Applies outcome_decide() to the
 * recipients, logs and counts each, builds the RFC 3464 bounce
 * (proto/dsn), records it all in the store in one transaction (the bounce
 * with the recipients it reports), then hands the results to the
 * scheduler and frees the delivery.
 *
 * A store write that fails (disk full, I/O error) is never answered by
 * sending the message again: the outcome stays in memory and the write is
 * tried again with a backoff (1 s doubling to 30 s) until it succeeds,
 * while the scheduler's job stays in flight (issue 12 item 5).
 */
#ifndef MAILHOP_RELAY_OUTBOUND_RECORD_H
#define MAILHOP_RELAY_OUTBOUND_RECORD_H

struct delivery;
struct outbound;

/* Ends the delivery: every recipient must be decided or left pending.
 * Runs once per delivery (later calls do nothing); the delivery is freed
 * when its outcome is recorded (asynchronously: the store write, and the
 * message read for a RET=FULL bounce, run on the thread pool). */
void record_finish(struct delivery *d);

/* Shutdown (outbound_abort_all): a delivery whose outcome waits to be
 * written again after a failed store write ends now; its job goes back to
 * the scheduler unrecorded (the recipients are retried after a restart,
 * at least once delivery).  A write in progress ends by its callback. */
void record_abort(struct delivery *d);

#endif
