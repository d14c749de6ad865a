/*
 * stats: the relay's live counters and gauges, owned by serve, written by
 * the wiring modules (inbound, outbound, serve, and the free-space monitor
 * and drain when they exist) and read by the admin socket's `status` and by
 * `GET /metrics` (CONTRACT §5, §7).  Plain fields on the loop thread; no
 * locking needed.  Nothing here touches SQLite: a scrape or a `status`
 * reads memory only.
 *
 * The one source of truth for what `status` and `/metrics` report is
 * stats_snapshot(): both fill a struct stats_snapshot from it, so they
 * agree at any moment.
 */
#ifndef MAILHOP_STATS_H
#define MAILHOP_STATS_H

#include <stddef.h>
#include <stdint.h>

struct sched;

/* Why an inbound command or message was refused (mailhop_rejected_total's
 * `reason` label; a small fixed set). */
enum stats_reject {
  STATS_REJECT_RELAY = 0, /* relay access denied (554 5.7.1) */
  STATS_REJECT_SENDER,    /* sender domain not allowed (553 5.7.1) */
  STATS_REJECT_SIZE,      /* message over max_message_size (552 5.3.4) */
  STATS_REJECT_AUTH,      /* bad credentials (535 5.7.8) */
  STATS_REJECT_SYNTAX,    /* command syntax or sequence (5.5.x, 5.1.3, 5.1.7) */
  STATS_REJECT_LOOP,      /* too many Received: headers (554 5.4.6) */
  STATS_REJECT_OTHER,     /* any other 4xx/5xx but 421; max_sessions */
  STATS_REJECT_N
};
/* "relay", "sender", ... (the label value); "?" when out of range. */
const char *stats_reject_name(enum stats_reject r);

/* Outcome of one DNS query attempt (mailhop_dns_queries_total's `result`).
 * The indices match enum resolver_count in dns/resolver.h. */
enum stats_dns {
  STATS_DNS_OK = 0,   /* an answer (records, no data, or a CNAME) */
  STATS_DNS_NXDOMAIN, /* the name does not exist */
  STATS_DNS_SERVFAIL, /* SERVFAIL, REFUSED or another error rcode */
  STATS_DNS_TIMEOUT,  /* no answer within dns_timeout */
  STATS_DNS_N
};
const char *stats_dns_name(enum stats_dns r);

enum stats_dir { STATS_INBOUND = 0, STATS_OUTBOUND = 1 };

/* Upper bounds (seconds) of mailhop_delivery_duration_seconds's buckets:
 * 100 ms to 5 days; a final +Inf bucket is implied. */
#define STATS_DURATION_BUCKETS 15
extern const double stats_duration_bounds[STATS_DURATION_BUCKETS];

struct stats {
  int64_t started_at; /* unix seconds */
  int sessions;       /* inbound sessions open now */
  int outbound;       /* outbound connections open now */
  uint64_t received;  /* messages accepted (250 after DATA) */
  uint64_t delivered; /* recipients delivered */
  uint64_t deferred;  /* recipient attempts deferred */
  uint64_t bounced;   /* recipients bounced (expiry included) */
  uint64_t expired;   /* of those, bounced for queue_lifetime (4.4.7) */

  uint64_t rejected[STATS_REJECT_N]; /* inbound refusals by reason */
  uint64_t tls_ok[2];                /* handshakes by enum stats_dir */
  uint64_t tls_failed[2];
  uint64_t dns[STATS_DNS_N]; /* query attempts by result (the resolver
                                counts into this array) */
  uint64_t dkim_signed;      /* messages signed (one per message) */

  /* Delivery time of delivered recipients, from acceptance (seconds):
   * counts per bucket, not cumulative; [STATS_DURATION_BUCKETS] is +Inf. */
  uint64_t duration_bucket[STATS_DURATION_BUCKETS + 1];
  uint64_t duration_count;
  double duration_sum;

  /* Readiness inputs (/readyz, status "accepting").  Each has one writer,
   * named here; all start at 0. */
  int listening;     /* serve: the SMTP listeners are open */
  int shutting_down; /* serve: SIGTERM/SIGINT received */
  int draining;      /* drain: `mailhop drain` in progress */
  int disk_low;      /* free-space monitor: queue file system under
                        queue_minfree (MAIL FROM gets 452 4.3.1) */

  /* The start-up queue load (serve, through admin_set_loading): while it
   * runs the scheduler holds only what it has reached, and `unloaded`
   * is what is still to come (from one count at start, minus each
   * batch), so the queue figures are right from the first moment. */
  int loading;
  uint64_t unloaded_messages, unloaded_recipients, unloaded_deferred,
      unloaded_held;
};

/*
 * Counts the refusals among the reply bytes the SMTP server sends (whole
 * reply lines, as smtp_server_output() gives them; our own text, never
 * the peer's; RFC 5321 §4.2): every final reply line with a 4xx or 5xx
 * code other than 421 (closing) adds one to
 * s->rejected[stats_reply_reason(line)].  s may be NULL.
 */
void stats_count_replies(struct stats *s, const char *out, size_t n);

/* The reason of one refusal reply line ("553 5.7.1 ..."), by its enhanced
 * status code (RFC 3463) and code: X.5.x (but X.5.3, too many recipients),
 * X.1.3, X.1.7 and bare 500-504/555 syntax; 5.3.4 size; 5.4.6 loop; 553 5.7.1
 * sender; 554 5.7.1 relay; 5.7.0, 5.7.8, 5.7.11 auth; anything else other.
 * Pure. */
enum stats_reject stats_reply_reason(const char *line, size_t len);

/* Records one delivered recipient that waited `seconds` since acceptance
 * (negative values count as 0). */
void stats_observe_delivery(struct stats *s, double seconds);

struct store_counts;

/*
 * Records how far the start-up queue load is: loading (0/1) and what it
 * has still to hand over (NULL: nothing), which the snapshot adds to the
 * scheduler's figures.  One writer: serve.
 */
void stats_set_loading(struct stats *s, int loading,
                       const struct store_counts *unloaded);

/* What `status` and `/metrics` show, taken at one moment. */
struct stats_snapshot {
  int64_t uptime_s;
  int sessions;
  int outbound;
  int paused;
  int accepting; /* listening and neither draining nor shutting down */
  int ready;     /* accepting and the queue writable (disk not low) */
  int loading;   /* the start-up queue load is under way */
  uint64_t queue_messages;
  uint64_t queue_recipients; /* non-final, in flight included */
  uint64_t queue_deferred;   /* of those, attempted at least once */
  uint64_t queue_held;       /* held messages */
  int64_t oldest_age_s;      /* of the oldest queued message; 0 when empty */
  uint64_t destinations_backed_off;
  uint64_t received, delivered, deferred, bounced, expired;
};

/*
 * Fills *out from s (NULL: counters read as 0, uptime from `started_at`)
 * and the scheduler (NULL: queue figures 0, not paused) at unix time
 * now_s.  Reads memory only; O(queued messages + destinations) for the
 * oldest age and the backed-off count (the scheduler walks its tables).
 */
void stats_snapshot(const struct stats *s, const struct sched *sched,
                    int64_t started_at, int64_t now_s,
                    struct stats_snapshot *out);

#endif
