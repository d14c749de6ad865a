/*
 * rate: durations and N/DURATION rates as the configuration, the routes
 * file and the queue filters write them (CONTRACT §2 durations,
 * destination_rate, routes' `rate`).  One grammar for all of them, so a
 * value that one place accepts is never refused (or read differently) by
 * another.  Pure: no allocation, no I/O.
 */
#ifndef MAILHOP_PROTO_RATE_H
#define MAILHOP_PROTO_RATE_H

#include <stddef.h>
#include <stdint.h>

/* The largest N of a rate (the scheduler keeps up to N start times per
 * destination) and the longest window, ms. */
#define RATE_MAX_N 100000
#define RATE_MAX_WINDOW_MS (7ULL * 86400 * 1000)

/*
 * Parses a duration of len bytes: "300ms", "90s", "5m", "2h", "5d"; a
 * bare number means seconds.  *ms gets milliseconds.  Returns 0, or -1
 * (not a duration, or too large to hold).
 */
int duration_parse_ms(const char *s, size_t len, uint64_t *ms);

/*
 * Parses a rate "N/DURATION" ("30/1m", "3/10s", "5/300ms"), blanks allowed
 * around N and DURATION: N from 1 to RATE_MAX_N, the window greater than 0
 * and at most RATE_MAX_WINDOW_MS.  Returns 0 with *n and *window_ms set,
 * or -1 with the reason in err (errlen bytes; it quotes the value, e.g.
 * "'30' is not N/DURATION (e.g. 30/1m)"; the caller adds the key).
 */
int rate_parse(const char *s, uint64_t *n, uint64_t *window_ms, char *err,
               size_t errlen);

#endif
