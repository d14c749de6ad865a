/*
 * retry: the pure retry policy of the queue (CONTRACT §4).  Given the
 * configured retry_schedule, how often a recipient was tried, when its
 * message arrived and queue_lifetime, it says when to try next or that the
 * message has expired (bounce with 4.4.7).  It also backs off a whole
 * destination that keeps failing.
 *
 * Pure: no clock (the caller passes now), no allocation, no I/O.  All
 * times are milliseconds since the Unix epoch (int64_t); durations are
 * milliseconds (uint64_t).  Arithmetic saturates instead of overflowing.
 */
#ifndef MAILHOP_QUEUE_RETRY_H
#define MAILHOP_QUEUE_RETRY_H

#include <stdint.h>

enum retry_result {
  RETRY_LATER = 0,   /* *next_at is set */
  RETRY_EXPIRED = 1, /* past queue_lifetime: bounce with 4.4.7 */
};

/*
 * The delay after the attempts-th failed attempt: schedule[attempts - 1],
 * the last entry repeating; attempts <= 0 gives 0 (due now).  n must be
 * > 0 (asserted: the config validates retry_schedule).
 */
uint64_t retry_delay(const uint64_t *schedule_ms, int n, int attempts);

/* 1 when now >= received_at + lifetime_ms (the message has expired). */
int retry_expired(int64_t received_at, uint64_t lifetime_ms, int64_t now);

/*
 * After the attempts-th failed attempt at now: RETRY_EXPIRED when the
 * message has expired, otherwise RETRY_LATER with *next_at = now +
 * retry_delay(), but never later than the expiry time, so that a message
 * is bounced when its lifetime ends rather than one long delay after.
 * The scheduler checks retry_expired() before each attempt.
 */
__attribute__((warn_unused_result)) int
retry_next(const uint64_t *schedule_ms, int n, int attempts,
           int64_t received_at, uint64_t lifetime_ms, int64_t now,
           int64_t *next_at);

/*
 * Destination backoff: a destination (MX domain or relayhost) with
 * `failures` consecutive failed connections/sessions is not tried again
 * before the returned time; failures == 0 gives now.  Uses the same
 * schedule: the failures-th delay, the last repeating.  A success resets
 * the count to 0 and the caller brings the destination's mail forward.
 */
int64_t retry_dest_next(const uint64_t *schedule_ms, int n, int failures,
                        int64_t now);

#endif
