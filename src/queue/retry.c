/*
 * retry: pure retry and backoff arithmetic.  See retry.h.
 */
#include "queue/retry.h"

#include <assert.h>
#include <stddef.h>

static int64_t add_sat(int64_t t, uint64_t d) {
  if (d > (uint64_t)INT64_MAX || t > INT64_MAX - (int64_t)d)
    return INT64_MAX;
  return t + (int64_t)d;
}

uint64_t retry_delay(const uint64_t *schedule_ms, int n, int attempts) {
  assert(schedule_ms != NULL && n > 0);
  if (attempts <= 0)
    return 0;
  return schedule_ms[attempts > n ? n - 1 : attempts - 1];
}

int retry_expired(int64_t received_at, uint64_t lifetime_ms, int64_t now) {
  return now >= add_sat(received_at, lifetime_ms);
}

int retry_next(const uint64_t *schedule_ms, int n, int attempts,
               int64_t received_at, uint64_t lifetime_ms, int64_t now,
               int64_t *next_at) {
  int64_t expiry = add_sat(received_at, lifetime_ms);
  if (now >= expiry)
    return RETRY_EXPIRED;
  int64_t t = add_sat(now, retry_delay(schedule_ms, n, attempts));
  *next_at = t < expiry ? t : expiry;
  return RETRY_LATER;
}

int64_t retry_dest_next(const uint64_t *schedule_ms, int n, int failures,
                        int64_t now) {
  return add_sat(now, retry_delay(schedule_ms, n, failures));
}
