/*
 * stats: see stats.h.  The snapshot is the one place where `status` and
 * `/metrics` get their numbers, so the two cannot disagree.
 */
#include "relay/stats.h"

#include <string.h>

#include "dns/resolver.h"
#include "queue/sched.h"
#include "queue/store.h"

/* The resolver counts into stats->dns directly. */
_Static_assert((int)STATS_DNS_N == (int)RESOLVER_COUNT_N &&
                   (int)STATS_DNS_OK == (int)RESOLVER_COUNT_OK &&
                   (int)STATS_DNS_NXDOMAIN == (int)RESOLVER_COUNT_NXDOMAIN &&
                   (int)STATS_DNS_SERVFAIL == (int)RESOLVER_COUNT_SERVFAIL &&
                   (int)STATS_DNS_TIMEOUT == (int)RESOLVER_COUNT_TIMEOUT,
               "enum stats_dns and enum resolver_count must match");

const double stats_duration_bounds[STATS_DURATION_BUCKETS] = {
    0.1,  0.5,      1,         5,     15,        60,        300,       900,
    3600, 4 * 3600, 12 * 3600, 86400, 2 * 86400, 3 * 86400, 5 * 86400,
};

static const char *const reject_names[STATS_REJECT_N] = {
    [STATS_REJECT_RELAY] = "relay",   [STATS_REJECT_SENDER] = "sender",
    [STATS_REJECT_SIZE] = "size",     [STATS_REJECT_AUTH] = "auth",
    [STATS_REJECT_SYNTAX] = "syntax", [STATS_REJECT_LOOP] = "loop",
    [STATS_REJECT_OTHER] = "other",
};

static const char *const dns_names[STATS_DNS_N] = {
    [STATS_DNS_OK] = "ok",
    [STATS_DNS_NXDOMAIN] = "nxdomain",
    [STATS_DNS_SERVFAIL] = "servfail",
    [STATS_DNS_TIMEOUT] = "timeout",
};

const char *stats_reject_name(enum stats_reject r) {
  return (unsigned)r < STATS_REJECT_N ? reject_names[r] : "?";
}

const char *stats_dns_name(enum stats_dns r) {
  return (unsigned)r < STATS_DNS_N ? dns_names[r] : "?";
}

static int starts(const char *p, size_t len, const char *prefix) {
  size_t n = strlen(prefix);
  return len >= n && memcmp(p, prefix, n) == 0;
}

enum stats_reject stats_reply_reason(const char *line, size_t len) {
  if (len < 3)
    return STATS_REJECT_OTHER;
  int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
  /* The enhanced code follows "DDD " (RFC 2034), up to a space. */
  const char *e = len > 4 ? line + 4 : "";
  size_t elen = 0;
  while (4 + elen < len && e[elen] != ' ' && e[elen] != '\r')
    elen++;
  char ec[16] = "";
  if (elen > 0 && elen < sizeof ec && (e[0] == '4' || e[0] == '5') &&
      e[1] == '.') {
    memcpy(ec, e, elen);
    ec[elen] = '\0';
  }
  if (ec[0]) {
    /* The subject and detail after the class: "5.5.2" -> ".5.2". */
    const char *sd = ec + 1;
    if (strcmp(sd, ".5.3") == 0) /* too many recipients: a limit */
      return STATS_REJECT_OTHER;
    if (starts(sd, strlen(sd), ".5.") || strcmp(sd, ".1.3") == 0 ||
        strcmp(sd, ".1.7") == 0)
      return STATS_REJECT_SYNTAX;
    if (strcmp(sd, ".3.4") == 0)
      return STATS_REJECT_SIZE;
    if (strcmp(sd, ".4.6") == 0)
      return STATS_REJECT_LOOP;
    if (strcmp(sd, ".7.1") == 0)
      return code == 553   ? STATS_REJECT_SENDER
             : code == 554 ? STATS_REJECT_RELAY
                           : STATS_REJECT_OTHER;
    if (strcmp(sd, ".7.0") == 0 || strcmp(sd, ".7.8") == 0 ||
        strcmp(sd, ".7.11") == 0)
      return STATS_REJECT_AUTH;
    return STATS_REJECT_OTHER;
  }
  if ((code >= 500 && code <= 504) || code == 555)
    return STATS_REJECT_SYNTAX;
  return STATS_REJECT_OTHER;
}

void stats_count_replies(struct stats *s, const char *out, size_t n) {
  if (!s)
    return;
  size_t i = 0;
  while (i < n) {
    const char *nl = memchr(out + i, '\n', n - i);
    size_t len = nl ? (size_t)(nl - (out + i)) : n - i;
    const char *l = out + i;
    /* A final line ("DDD " or "DDD" alone) of a 4xx/5xx reply. */
    if (len >= 3 && (l[0] == '4' || l[0] == '5') && l[1] >= '0' &&
        l[1] <= '9' && l[2] >= '0' && l[2] <= '9' &&
        (len == 3 || l[3] == ' ' || l[3] == '\r') &&
        !(l[0] == '4' && l[1] == '2' && l[2] == '1'))
      s->rejected[stats_reply_reason(l, len)]++;
    i += len + 1;
  }
}

void stats_observe_delivery(struct stats *s, double seconds) {
  if (!(seconds > 0))
    seconds = 0;
  size_t i = 0;
  while (i < STATS_DURATION_BUCKETS && seconds > stats_duration_bounds[i])
    i++;
  s->duration_bucket[i]++;
  s->duration_count++;
  s->duration_sum += seconds;
}

void stats_snapshot(const struct stats *s, const struct sched *sched,
                    int64_t started_at, int64_t now_s,
                    struct stats_snapshot *out) {
  static const struct stats zero;
  if (!s)
    s = &zero;
  if (s->started_at)
    started_at = s->started_at;
  *out = (struct stats_snapshot){0};
  out->uptime_s = now_s > started_at ? now_s - started_at : 0;
  out->sessions = s->sessions;
  out->outbound = s->outbound;
  out->accepting = s->listening && !s->draining && !s->shutting_down;
  out->ready = out->accepting && !s->disk_low;
  out->loading = s->loading;
  out->received = s->received;
  out->delivered = s->delivered;
  out->deferred = s->deferred;
  out->bounced = s->bounced;
  out->expired = s->expired;
  if (!sched)
    return;
  struct sched_stats ss;
  sched_get_stats(sched, &ss);
  struct sched_scan sc;
  sched_scan_stats(sched, &sc);
  out->paused = sched_paused(sched);
  out->queue_messages = ss.messages;
  out->queue_recipients = ss.recipients;
  out->queue_deferred = ss.deferred;
  out->queue_held = ss.held;
  if (s && s->loading) {
    out->queue_messages += s->unloaded_messages;
    out->queue_recipients += s->unloaded_recipients;
    out->queue_deferred += s->unloaded_deferred;
    out->queue_held += s->unloaded_held;
  }
  out->destinations_backed_off = sc.backed_off;
  if (ss.messages && sc.oldest_received_at > 0) {
    int64_t age = now_s - sc.oldest_received_at / 1000;
    out->oldest_age_s = age > 0 ? age : 0;
  }
}

void stats_set_loading(struct stats *s, int loading,
                       const struct store_counts *unloaded) {
  s->loading = loading ? 1 : 0;
  const struct store_counts zero = {0};
  const struct store_counts *u = loading && unloaded ? unloaded : &zero;
  s->unloaded_messages = u->messages;
  s->unloaded_recipients = u->recipients;
  s->unloaded_deferred = u->deferred;
  s->unloaded_held = u->held;
}
