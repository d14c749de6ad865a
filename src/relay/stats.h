/*
 * stats: the relay's live counters, owned by serve and read by the admin
 * socket's `status`.  Plain fields on the loop thread; no locking needed.
 */
#ifndef MAILHOP_STATS_H
#define MAILHOP_STATS_H

#include <stdint.h>

struct stats {
  int64_t started_at; /* unix seconds */
  int sessions;       /* inbound sessions open now */
  int outbound;       /* outbound connections open now */
  uint64_t received;  /* messages accepted (250 after DATA) */
  uint64_t delivered; /* recipients delivered */
  uint64_t deferred;  /* recipient attempts deferred */
  uint64_t bounced;   /* recipients bounced (expiry included) */
  /* messages accepted with a DKIM signature (relay/dkim) */
  uint64_t dkim_signed;
};

#endif
