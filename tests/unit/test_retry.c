/* test_retry: retry schedule, expiry, destination backoff. */
#include "queue/retry.h"

#include "check.h"

static const uint64_t sched[] = {60000, 300000, 1800000};

static void test_delay(void) {
  static const struct {
    int attempts;
    uint64_t delay;
  } t[] = {{-1, 0},      {0, 0},       {1, 60000},     {2, 300000},
           {3, 1800000}, {4, 1800000}, {1000, 1800000}};
  for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
    CHECK_INT(retry_delay(sched, 3, t[i].attempts), t[i].delay);
}

static void test_next(void) {
  int64_t next = 0;
  const uint64_t life = 5ull * 24 * 3600 * 1000;
  /* Ordinary: now + delay. */
  CHECK_INT(retry_next(sched, 3, 1, 1000, life, 2000, &next), RETRY_LATER);
  CHECK_INT(next, 62000);
  CHECK_INT(retry_next(sched, 3, 7, 1000, life, 2000, &next), RETRY_LATER);
  CHECK_INT(next, 1802000);
  /* Clamped to the expiry time. */
  CHECK_INT(retry_next(sched, 3, 3, 0, 100000, 50000, &next), RETRY_LATER);
  CHECK_INT(next, 100000);
  /* Expired at exactly received_at + lifetime. */
  CHECK_INT(retry_next(sched, 3, 3, 0, 100000, 100000, &next), RETRY_EXPIRED);
  CHECK_INT(retry_next(sched, 3, 3, 0, 100000, 99999, &next), RETRY_LATER);
  CHECK_INT(retry_expired(0, 100000, 100000), 1);
  CHECK_INT(retry_expired(0, 100000, 99999), 0);
  /* Saturation, no overflow. */
  CHECK_INT(retry_expired(INT64_MAX - 5, 100, INT64_MAX - 1), 0);
  CHECK_INT(retry_next(sched, 3, 1, 0, UINT64_MAX, INT64_MAX - 10, &next),
            RETRY_LATER);
  CHECK_INT(next, INT64_MAX);
}

static void test_dest(void) {
  CHECK_INT(retry_dest_next(sched, 3, 0, 5000), 5000);
  CHECK_INT(retry_dest_next(sched, 3, 1, 5000), 65000);
  CHECK_INT(retry_dest_next(sched, 3, 9, 5000), 1805000);
}

int main(void) {
  test_delay();
  test_next();
  test_dest();
  return check_result("test_retry");
}
