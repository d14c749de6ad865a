/*
 * outbound/record: the end of a delivery.  Applies outcome_decide() to the
 * recipients, logs and counts each, builds the RFC 3464 bounce
 * (proto/dsn), records it all in the store in one transaction (the bounce
 * with the recipients it reports), then hands the results to the
 * scheduler and frees the delivery.
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

#endif
