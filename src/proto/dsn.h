/*
 * dsn: RFC 3464 delivery status notifications (bounces) and the RFC 3461
 * rules for whether to send one.
 *
 * dsn_build() returns the whole bounce message (header + multipart/report
 * body) as one malloc'd buffer, in CRLF form and unstuffed, ready to be
 * queued from "<>" to the original sender and later sent through encode.c
 * like any message (which also folds any line over 998 octets).  Its size
 * is bounded by DSN_QUOTE_MAX plus a small amount per recipient.
 *
 * Pure: no clock (times are passed in), no I/O, no logging; the only
 * allocation is the result.
 */
#ifndef MAILHOP_PROTO_DSN_H
#define MAILHOP_PROTO_DSN_H

#include <stddef.h>
#include <stdint.h>

/* NOTIFY= (RFC 3461 §4.1) as a bit set; 0 means "not given". */
enum dsn_notify {
  DSN_NOTIFY_NEVER = 1,
  DSN_NOTIFY_SUCCESS = 2,
  DSN_NOTIFY_FAILURE = 4,
  DSN_NOTIFY_DELAY = 8,
};

/* RET= (RFC 3461 §4.3); unset means headers only. */
enum dsn_ret {
  DSN_RET_UNSET = 0,
  DSN_RET_HDRS = 1,
  DSN_RET_FULL = 2,
};

/* The most of the original a bounce quotes, in bytes (Postfix's
 * bounce_size_limit).  A RET=FULL message over it is returned as its
 * header only (RFC 3461 §4.3 allows that when the whole message cannot be
 * returned); a header section over it is cut at the last line end within
 * it.  So a bounce is bounded whatever the size of the message. */
#define DSN_QUOTE_MAX 50000

/* One failed (or, with delayed set, delayed) recipient.  Strings are
 * borrowed for the call. */
struct dsn_rcpt {
  const char *addr;       /* Final-Recipient, the address we tried */
  const char *orcpt;      /* ORCPT= value as received (xtext), or NULL */
  const char *status;     /* "5.1.1"; "4.4.7" for expiry; delayed: 4.x.x */
  const char *remote_mta; /* host that answered, or NULL */
  const char *diag;       /* that host's reply ("550 5.1.1 ..."), or NULL */
  int64_t last_attempt;   /* seconds since the epoch, 0 when none */
  /* 1: "Action: delayed" (RFC 3464 §2.3.3), the recipient is still being
   * tried; its Status is forced into class 4 ("4.0.0" when status is not
   * a 4.x.x code). */
  int delayed;
  int64_t will_retry_until; /* delayed: seconds since the epoch, 0: none
                               (Will-Retry-Until, RFC 3464 §2.3.9) */
  /* 1: "Action: relayed" (RFC 3464 §2.3.3, RFC 3461 §4.2.2): delivered to
   * a next hop that does not offer DSN, the sender having asked for
   * NOTIFY=SUCCESS; its Status is class 2 ("2.0.0" when status is not). */
  int relayed;
};

/* The bounce to build.  Strings are borrowed for the call. */
struct dsn_report {
  const char *hostname; /* this relay: Reporting-MTA, From, Message-ID */
  const char *sender;   /* the original envelope sender (the To:) */
  const char *envid;    /* ENVID= value as received (xtext), or NULL */
  int ret;              /* enum dsn_ret */
  int64_t arrival;      /* seconds since the epoch: Arrival-Date */
  int64_t now;          /* seconds since the epoch: Date */
  const char *id;       /* unique token (queue id): boundary, Message-ID */
  const char *msg;      /* the original message, CRLF, unstuffed */
  size_t msg_len;
  const struct dsn_rcpt *rcpts;
  size_t nrcpt;
  /* The operator's copy (bounce_notice_recipient, CONTRACT §2): when not
   * NULL, the report goes To: this address instead of the sender, its
   * Subject starts "Postmaster Copy: ", its human part names the sender
   * it was sent to, and it quotes the original's header only whatever
   * ret says (an operator never gets a message body). */
  const char *copy_to;
};

/*
 * Builds the bounce, or the delay warning when every recipient is
 * delayed (Subject "Delayed Mail (still being retried)", the original's
 * header quoted whatever RET says: RFC 3461 §4.3 returns content for
 * failures), or the success notice when every recipient was relayed
 * (Subject "Successful Mail Delivery Report", the header only).  A report may
 * mix failed and delayed recipients (RFC 3464 §2: one per-recipient block each,
 * with its own Action).  With r->copy_to set, the operator's copy of that
 * report (see copy_to). Returns a malloc'd buffer the caller frees, its length
 * in *len; NULL when out of memory.  r->msg is taken by its length (it may hold
 * NUL bytes); at most DSN_QUOTE_MAX bytes of it are quoted: with RET=FULL the
 * whole message when it fits, else its header.  Control characters in the
 * fields are replaced by '?', so no field can inject a header.  Non-ASCII in
 * our own text fields (addresses) is replaced by '?' too; the quoted original
 * header or message is copied as is (with Content-Transfer-Encoding: 8bit on
 * its part when it is 8-bit).
 */
__attribute__((warn_unused_result)) char *dsn_build(const struct dsn_report *r,
                                                    size_t *len);

/*
 * 1 when a failure of a recipient with these NOTIFY flags, of a message
 * with this envelope sender, must produce a bounce: never for the null
 * sender (NULL or ""), never with NOTIFY=NEVER, never when NOTIFY was given
 * without FAILURE.
 */
int dsn_should_bounce(const char *sender, unsigned notify);

/*
 * 1 when a recipient with these NOTIFY flags, of a message with this
 * envelope sender, gets a delay warning (RFC 3461 §4.1): never for the
 * null sender (NULL or ""), never with NOTIFY=NEVER, never when NOTIFY
 * was given without DELAY; without NOTIFY the relay may send one (we do,
 * when delay_warning_time is set).
 */
int dsn_should_delay(const char *sender, unsigned notify);

/*
 * 1 when a recipient with these NOTIFY flags, of a message with this
 * envelope sender, delivered to a next hop that does not offer DSN, gets
 * a "relayed" notice (RFC 3461 §4.2.2): only when NOTIFY asked for
 * SUCCESS (it is never the default), never for the null sender.
 */
int dsn_should_notify_success(const char *sender, unsigned notify);

/*
 * Formats t (seconds since the epoch) as an RFC 5322 date in UTC,
 * "Tue, 01 Jul 2025 12:00:00 +0000", locale-independent.  out has room
 * for 40.
 */
void dsn_date(int64_t t, char out[40]);

#endif
