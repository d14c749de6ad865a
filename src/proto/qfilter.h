/*
 * qfilter: the queue filters of CONTRACT §1 and §5 (`mailhop queue
 * [FILTER]...`, `delete|hold|release|flush FILTER...` and the admin
 * socket's filter words), parsed and matched by pure functions.
 *
 * Filter words (admin socket, one word each, all ANDed):
 *   domain=D             a non-final recipient's domain is D (case-insensitive)
 *   sender=ADDR          the envelope sender is ADDR (case-insensitive)
 *   sender=@DOMAIN       the envelope sender's domain is DOMAIN
 *   sender=<>            the null sender (bounces, DSNs)
 *   state=queued         not held, a recipient never tried yet (state queued)
 *   state=deferred       not held, a recipient tried and deferred
 *   state=held           held
 *   older_than=SECONDS   received at least SECONDS ago
 *   all                  every message (what a bulk action needs when no
 *                        other filter is given)
 *
 * Owns nothing: a struct qfilter is a value (fixed-size, copyable).
 */
#ifndef MAILHOP_PROTO_QFILTER_H
#define MAILHOP_PROTO_QFILTER_H

#include <stddef.h>
#include <stdint.h>

#define QFILTER_DOMAIN_MAX 255
#define QFILTER_ADDR_MAX 512 /* RFC 5321 §4.5.3.1.3 path, with room */

enum qfilter_state {
  QFILTER_ANY = 0,
  QFILTER_QUEUED,
  QFILTER_DEFERRED,
  QFILTER_HELD,
};

struct qfilter {
  char domain[QFILTER_DOMAIN_MAX + 1]; /* lower case; "" = any */
  char sender[QFILTER_ADDR_MAX + 1];   /* lower case; "@dom" = by domain;
                                          "<>" = the null sender; "" = any */
  enum qfilter_state state;
  int64_t older_than; /* seconds; -1 = any */
  int all;            /* the word `all` was given */
};

/* Sets f to "no criterion". */
void qfilter_init(struct qfilter *f);

/*
 * Parses n filter words (see the top of this file) into f.  A word given
 * twice, an unknown word, an empty or oversized value, a state other than
 * the three, or older_than that is not a number of seconds
 * (0..2^40) is an error: returns -1 with a one-line message in err
 * (errlen bytes, may be 0); else 0.  Pure.
 */
int qfilter_parse(struct qfilter *f, const char *const *words, size_t n,
                  char *err, size_t errlen);

/* 1 when f has a criterion (the word `all` does not count), else 0. */
int qfilter_has_criteria(const struct qfilter *f);

/*
 * Message-level match (sender, held, age): 1 when the message may match
 * (the recipient criteria, domain and state queued/deferred, are checked
 * with qfilter_rcpts_match()), 0 when it cannot.  sender "" is the null
 * sender; times are unix seconds.
 */
int qfilter_msg_match(const struct qfilter *f, const char *sender, int held,
                      int64_t received_at, int64_t now);

/*
 * Recipient-level match over a message's non-final recipients: domains[i]
 * (lower case) and states[i] (0 queued, 1 deferred, as the store keeps
 * them).  1 when some recipient has the domain (if given) and, for state
 * queued/deferred, some recipient has that state (held messages are
 * excluded by qfilter_msg_match()).
 */
int qfilter_rcpts_match(const struct qfilter *f, const char *const *domains,
                        const int *states, size_t n);

/* 1 when the filter needs the recipients (domain, queued or deferred). */
int qfilter_needs_rcpts(const struct qfilter *f);

/*
 * Parses a duration "N" (seconds) or "N" followed by s, m, h, d or w
 * (e.g. 90s, 30m, 2h, 7d) into seconds, 1..2^40.  0 or -1.  Pure.
 */
int qfilter_duration(const char *s, int64_t *seconds);

#endif
