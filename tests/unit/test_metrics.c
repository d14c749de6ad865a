/*
 * test_metrics: the Prometheus text rendering (relay/metrics), the shared
 * snapshot (relay/stats) over a real scheduler, and the delivery-time
 * histogram.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "check.h"
#include "queue/sched.h"
#include "relay/metrics.h"
#include "relay/stats.h"

/* The value of the sample line that starts with `series ` (exact series,
 * labels included), or -1 when absent. */
static double sample(const char *text, const char *series) {
  size_t n = strlen(series);
  for (const char *p = text; p && *p;) {
    if (strncmp(p, series, n) == 0 && p[n] == ' ')
      return strtod(p + n + 1, NULL);
    p = strchr(p, '\n');
    if (p)
      p++;
  }
  return -1;
}

static int count_lines_starting(const char *text, const char *prefix) {
  int n = 0;
  size_t len = strlen(prefix);
  for (const char *p = text; p && *p;) {
    if (strncmp(p, prefix, len) == 0)
      n++;
    p = strchr(p, '\n');
    if (p)
      p++;
  }
  return n;
}

static const char *const families[] = {
    "mailhop_build_info",
    "mailhop_up_seconds",
    "mailhop_accepting",
    "mailhop_paused",
    "mailhop_smtp_sessions",
    "mailhop_outbound_connections",
    "mailhop_queue_messages",
    "mailhop_queue_recipients",
    "mailhop_queue_held_messages",
    "mailhop_queue_oldest_message_age_seconds",
    "mailhop_received_messages_total",
    "mailhop_rejected_total",
    "mailhop_recipients_total",
    "mailhop_delivery_duration_seconds",
    "mailhop_tls_handshakes_total",
    "mailhop_dns_queries_total",
    "mailhop_dkim_signed_total",
    "mailhop_destinations_backed_off",
};

static void test_every_family_has_help_and_type(void) {
  struct stats_snapshot sn = {0};
  size_t len = 0;
  char *t = metrics_render(&sn, NULL, &len);
  CHECK(t != NULL);
  if (!t)
    return;
  CHECK_INT(strlen(t), len);
  CHECK(len > 0 && t[len - 1] == '\n');
  int nfam = (int)(sizeof families / sizeof families[0]);
  for (int i = 0; i < nfam; i++) {
    char help[128], type[128];
    snprintf(help, sizeof help, "# HELP %s ", families[i]);
    snprintf(type, sizeof type, "# TYPE %s ", families[i]);
    CHECK_INT(count_lines_starting(t, help), 1);
    CHECK_INT(count_lines_starting(t, type), 1);
  }
  CHECK_INT(count_lines_starting(t, "# HELP "), nfam);
  CHECK_INT(count_lines_starting(t, "# TYPE "), nfam);
  /* Every sample belongs to a declared family (histogram suffixes too). */
  for (const char *p = t; *p;) {
    const char *eol = strchr(p, '\n');
    if (p[0] != '#') {
      int ok = 0;
      for (int i = 0; i < nfam && !ok; i++) {
        size_t n = strlen(families[i]);
        if (strncmp(p, families[i], n) == 0 &&
            (p[n] == ' ' || p[n] == '{' || p[n] == '_'))
          ok = 1;
      }
      if (!ok)
        fprintf(stderr, "undeclared sample: %.*s\n", (int)(eol - p), p);
      CHECK(ok);
    }
    p = eol + 1;
  }
  CHECK(strstr(t, "# TYPE mailhop_delivery_duration_seconds histogram\n"));
  CHECK(strstr(t, "# TYPE mailhop_received_messages_total counter\n"));
  CHECK(strstr(t, "# TYPE mailhop_queue_messages gauge\n"));
  CHECK(sample(t, "mailhop_build_info{version=\"" MAILHOP_VERSION "\"}") == 1);
  free(t);
}

static void test_values(void) {
  struct stats s;
  memset(&s, 0, sizeof s);
  s.rejected[STATS_REJECT_RELAY] = 3;
  s.rejected[STATS_REJECT_OTHER] = 1;
  s.tls_ok[STATS_INBOUND] = 5;
  s.tls_failed[STATS_OUTBOUND] = 2;
  s.dns[STATS_DNS_NXDOMAIN] = 7;
  s.dns[STATS_DNS_TIMEOUT] = 4;
  s.dkim_signed = 9;
  struct stats_snapshot sn = {
      .uptime_s = 42,
      .sessions = 2,
      .outbound = 1,
      .paused = 1,
      .accepting = 1,
      .queue_messages = 6,
      .queue_recipients = 10,
      .queue_deferred = 4,
      .queue_held = 1,
      .oldest_age_s = 3600,
      .destinations_backed_off = 2,
      .received = 11,
      .delivered = 12,
      .deferred = 13,
      .bounced = 14,
      .expired = 5,
  };
  size_t len;
  char *t = metrics_render(&sn, &s, &len);
  CHECK(t != NULL);
  if (!t)
    return;
  CHECK(sample(t, "mailhop_up_seconds") == 42);
  CHECK(sample(t, "mailhop_accepting") == 1);
  CHECK(sample(t, "mailhop_paused") == 1);
  CHECK(sample(t, "mailhop_smtp_sessions") == 2);
  CHECK(sample(t, "mailhop_outbound_connections") == 1);
  CHECK(sample(t, "mailhop_queue_messages") == 6);
  CHECK(sample(t, "mailhop_queue_recipients{state=\"queued\"}") == 6);
  CHECK(sample(t, "mailhop_queue_recipients{state=\"deferred\"}") == 4);
  CHECK(sample(t, "mailhop_queue_held_messages") == 1);
  CHECK(sample(t, "mailhop_queue_oldest_message_age_seconds") == 3600);
  CHECK(sample(t, "mailhop_received_messages_total") == 11);
  CHECK(sample(t, "mailhop_recipients_total{result=\"delivered\"}") == 12);
  CHECK(sample(t, "mailhop_recipients_total{result=\"deferred\"}") == 13);
  CHECK(sample(t, "mailhop_recipients_total{result=\"bounced\"}") == 14);
  CHECK(sample(t, "mailhop_recipients_total{result=\"expired\"}") == 5);
  CHECK(sample(t, "mailhop_rejected_total{reason=\"relay\"}") == 3);
  CHECK(sample(t, "mailhop_rejected_total{reason=\"other\"}") == 1);
  const char *reasons[] = {"relay",  "sender", "size", "auth",
                           "syntax", "loop",   "other"};
  for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++) {
    char series[128];
    snprintf(series, sizeof series, "mailhop_rejected_total{reason=\"%s\"}",
             reasons[i]);
    CHECK(sample(t, series) >= 0);
  }
  CHECK_INT(count_lines_starting(t, "mailhop_rejected_total{"), 7);
  CHECK(sample(t, "mailhop_tls_handshakes_total{direction=\"inbound\","
                  "result=\"ok\"}") == 5);
  CHECK(sample(t, "mailhop_tls_handshakes_total{direction=\"outbound\","
                  "result=\"failed\"}") == 2);
  CHECK(sample(t, "mailhop_tls_handshakes_total{direction=\"outbound\","
                  "result=\"ok\"}") == 0);
  CHECK_INT(count_lines_starting(t, "mailhop_tls_handshakes_total{"), 4);
  CHECK(sample(t, "mailhop_dns_queries_total{result=\"nxdomain\"}") == 7);
  CHECK(sample(t, "mailhop_dns_queries_total{result=\"timeout\"}") == 4);
  CHECK(sample(t, "mailhop_dns_queries_total{result=\"ok\"}") == 0);
  CHECK(sample(t, "mailhop_dns_queries_total{result=\"servfail\"}") == 0);
  CHECK(sample(t, "mailhop_dkim_signed_total") == 9);
  CHECK(sample(t, "mailhop_destinations_backed_off") == 2);
  free(t);
}

static void test_histogram(void) {
  struct stats s;
  memset(&s, 0, sizeof s);
  /* le is inclusive: 0.1 goes in the first bucket, 0.1001 in the next. */
  stats_observe_delivery(&s, 0.05);
  stats_observe_delivery(&s, 0.1);
  stats_observe_delivery(&s, 0.1001);
  stats_observe_delivery(&s, -3); /* clock step: counts as 0 */
  stats_observe_delivery(&s, 3600);
  stats_observe_delivery(&s, 5 * 86400);
  stats_observe_delivery(&s, 6 * 86400); /* over 5 days: +Inf only */
  CHECK_INT(s.duration_count, 7);
  struct stats_snapshot sn = {0};
  size_t len;
  char *t = metrics_render(&sn, &s, &len);
  CHECK(t != NULL);
  if (!t)
    return;
  CHECK(sample(t, "mailhop_delivery_duration_seconds_bucket{le=\"0.1\"}") == 3);
  CHECK(sample(t, "mailhop_delivery_duration_seconds_bucket{le=\"0.5\"}") == 4);
  CHECK(sample(t, "mailhop_delivery_duration_seconds_bucket{le=\"900\"}") == 4);
  CHECK(sample(t, "mailhop_delivery_duration_seconds_bucket{le=\"3600\"}") ==
        5);
  CHECK(sample(t, "mailhop_delivery_duration_seconds_bucket{le=\"432000\"}") ==
        6);
  CHECK(sample(t, "mailhop_delivery_duration_seconds_bucket{le=\"+Inf\"}") ==
        7);
  CHECK(sample(t, "mailhop_delivery_duration_seconds_count") == 7);
  double sum = sample(t, "mailhop_delivery_duration_seconds_sum");
  double want = 0.05 + 0.1 + 0.1001 + 3600 + 5 * 86400 + 6 * 86400;
  CHECK(sum > want - 1e-6 && sum < want + 1e-6);
  /* Buckets ascend from 100 ms to 5 days and counts never decrease. */
  CHECK(stats_duration_bounds[0] == 0.1);
  CHECK(stats_duration_bounds[STATS_DURATION_BUCKETS - 1] == 5 * 86400);
  double prev_bound = 0, prev_count = 0;
  for (int i = 0; i < STATS_DURATION_BUCKETS; i++) {
    CHECK(stats_duration_bounds[i] > prev_bound);
    prev_bound = stats_duration_bounds[i];
    char series[128];
    snprintf(series, sizeof series,
             "mailhop_delivery_duration_seconds_bucket{le=\"%g\"}",
             stats_duration_bounds[i]);
    double c = sample(t, series);
    CHECK(c >= prev_count);
    prev_count = c;
  }
  CHECK_INT(count_lines_starting(t, "mailhop_delivery_duration_seconds_bucket"),
            STATS_DURATION_BUCKETS + 1);
  free(t);
}

/* The snapshot that status and /metrics share, over a real scheduler. */
static int64_t fake_now = 1000000000000; /* unix ms */
static int64_t clock_fn(void *data) {
  (void)data;
  return fake_now;
}
static int dispatched;
static void on_dispatch(struct sched *s, struct sched_job *job, void *data) {
  (void)data;
  dispatched++;
  /* The destination failed as a whole: it is backed off. */
  sched_job_done(s, job, NULL, 0, 0);
}

static void test_snapshot(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct sched_opts o = {.max_outbound = 10,
                         .max_per_destination = 10,
                         .dispatch = on_dispatch,
                         .now_ms = clock_fn};
  struct sched *sc = sched_new(&loop, &o);
  CHECK(sc != NULL);
  sched_pause(sc, 1);
  struct sched_rcpt r[2] = {
      {.idx = 0, .dest = "a.example", .attempts = 0},
      {.idx = 1, .dest = "b.example", .attempts = 2},
  };
  struct sched_msg m1 = {.id = "A1",
                         .received_at = 1000 * 1000,
                         .size = 10,
                         .rcpts = r,
                         .nrcpts = 2};
  struct sched_msg m2 = {.id = "B2",
                         .received_at = 1500 * 1000,
                         .size = 10,
                         .held = 1,
                         .rcpts = r,
                         .nrcpts = 1};
  CHECK_INT(sched_add(sc, &m2), 0);
  CHECK_INT(sched_add(sc, &m1), 0);

  struct stats st;
  memset(&st, 0, sizeof st);
  st.started_at = 900;
  st.sessions = 3;
  st.received = 2;
  st.listening = 1;
  struct stats_snapshot sn;
  stats_snapshot(&st, sc, 0, 2000, &sn);
  CHECK_INT(sn.uptime_s, 1100);
  CHECK_INT(sn.sessions, 3);
  CHECK_INT(sn.paused, 1);
  CHECK_INT(sn.queue_messages, 2);
  CHECK_INT(sn.queue_recipients, 3);
  CHECK_INT(sn.queue_deferred, 1);
  CHECK_INT(sn.queue_held, 1);
  CHECK_INT(sn.oldest_age_s, 1000); /* A1, received at 1000 s */
  CHECK_INT(sn.received, 2);
  CHECK_INT(sn.accepting, 1);
  CHECK_INT(sn.ready, 1);
  CHECK_INT(sn.destinations_backed_off, 0);

  CHECK_INT(sched_remove(sc, "A1"), 0);
  stats_snapshot(&st, sc, 0, 2000, &sn);
  CHECK_INT(sn.queue_messages, 1);
  CHECK_INT(sn.oldest_age_s, 500); /* now B2 */
  CHECK_INT(sched_remove(sc, "B2"), 0);
  stats_snapshot(&st, sc, 0, 2000, &sn);
  CHECK_INT(sn.queue_messages, 0);
  CHECK_INT(sn.oldest_age_s, 0);

  /* Readiness: each input alone turns it off; disk_low keeps accepting. */
  st.disk_low = 1;
  stats_snapshot(&st, sc, 0, 2000, &sn);
  CHECK_INT(sn.accepting, 1);
  CHECK_INT(sn.ready, 0);
  st.disk_low = 0;
  st.draining = 1;
  stats_snapshot(&st, sc, 0, 2000, &sn);
  CHECK_INT(sn.accepting, 0);
  CHECK_INT(sn.ready, 0);
  st.draining = 0;
  st.shutting_down = 1;
  stats_snapshot(&st, sc, 0, 2000, &sn);
  CHECK_INT(sn.ready, 0);
  st.shutting_down = 0;
  st.listening = 0;
  stats_snapshot(&st, sc, 0, 2000, &sn);
  CHECK_INT(sn.ready, 0);

  /* A destination that fails is counted as backed off. */
  struct sched_msg m3 = {.id = "C3",
                         .received_at = 1900 * 1000,
                         .size = 10,
                         .rcpts = r,
                         .nrcpts = 1};
  CHECK_INT(sched_add(sc, &m3), 0);
  sched_pause(sc, 0);
  for (int i = 0; i < 100 && !dispatched; i++)
    uv_run(&loop, UV_RUN_NOWAIT);
  CHECK_INT(dispatched, 1);
  stats_snapshot(&st, sc, 0, 2000, &sn);
  CHECK_INT(sn.destinations_backed_off, 1);
  CHECK_INT(sn.queue_messages, 1);
  CHECK_INT(sn.oldest_age_s, 100);

  /* No stats, no scheduler: zeros, uptime from the caller's start. */
  stats_snapshot(NULL, NULL, 1990, 2000, &sn);
  CHECK_INT(sn.uptime_s, 10);
  CHECK_INT(sn.queue_messages, 0);
  CHECK_INT(sn.accepting, 0);

  sched_free(sc, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(&loop), 0);
}

/* Every refusal the SMTP server sends, by reason (table from
 * proto/smtp_server.c's replies). */
static void test_reply_reasons(void) {
  static const struct {
    const char *line;
    enum stats_reject want;
  } cases[] = {
      {"500 5.5.2 Error: command not recognized", STATS_REJECT_SYNTAX},
      {"500 5.5.2 Error: line too long", STATS_REJECT_SYNTAX},
      {"501 5.1.7 Bad sender address syntax", STATS_REJECT_SYNTAX},
      {"501 5.1.3 Bad recipient address syntax", STATS_REJECT_SYNTAX},
      {"503 5.5.1 Error: need MAIL command", STATS_REJECT_SYNTAX},
      {"555 5.5.4 Unsupported option", STATS_REJECT_SYNTAX},
      {"501 Syntax: EHLO hostname", STATS_REJECT_SYNTAX},
      {"502 5.5.1 Error: EXPN is not offered by this relay",
       STATS_REJECT_SYNTAX},
      {"552 5.3.4 Message size exceeds fixed limit", STATS_REJECT_SIZE},
      {"552 5.3.4 Error: message file too big", STATS_REJECT_SIZE},
      {"554 5.4.6 Error: too many hops", STATS_REJECT_LOOP},
      {"553 5.7.1 <a@b.example>: Sender address rejected: not allowed",
       STATS_REJECT_SENDER},
      {"554 5.7.1 <x@y.example>: Relay access denied", STATS_REJECT_RELAY},
      {"535 5.7.8 Error: authentication failed", STATS_REJECT_AUTH},
      {"538 5.7.11 Encryption required for requested authentication mechanism",
       STATS_REJECT_AUTH},
      {"501 5.7.0 Authentication aborted", STATS_REJECT_AUTH},
      {"452 4.5.3 Error: too many recipients", STATS_REJECT_OTHER},
      {"451 4.3.0 Error: queue write failed", STATS_REJECT_OTHER},
      {"452 4.3.1 Insufficient system storage", STATS_REJECT_OTHER},
      {"553 5.6.7 Must declare SMTPUTF8 to send unicode address",
       STATS_REJECT_OTHER},
      {"454 4.7.0 Temporary authentication failure", STATS_REJECT_AUTH},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    enum stats_reject got =
        stats_reply_reason(cases[i].line, strlen(cases[i].line));
    if (got != cases[i].want)
      fprintf(stderr, "case %s: got %s want %s\n", cases[i].line,
              stats_reject_name(got), stats_reject_name(cases[i].want));
    CHECK_INT(got, cases[i].want);
  }

  /* A pipelined batch: successes, a multi-line EHLO, a 421 close and
   * refusals; only the refusals count, each once. */
  struct stats st;
  memset(&st, 0, sizeof st);
  const char out[] = "220 mailhop.test ESMTP\r\n"
                     "250-mailhop.test\r\n250-PIPELINING\r\n250 SIZE 1000\r\n"
                     "250 2.1.0 Ok\r\n"
                     "554 5.7.1 <x@y.example>: Relay access denied\r\n"
                     "554 5.7.1 <z@y.example>: Relay access denied\r\n"
                     "503 5.5.1 Error: need RCPT command\r\n"
                     "354 End data with <CR><LF>.<CR><LF>\r\n"
                     "552 5.3.4 Error: message file too big\r\n"
                     "421 4.4.2 mailhop.test Error: timeout exceeded\r\n";
  stats_count_replies(&st, out, sizeof out - 1);
  CHECK_INT(st.rejected[STATS_REJECT_RELAY], 2);
  CHECK_INT(st.rejected[STATS_REJECT_SYNTAX], 1);
  CHECK_INT(st.rejected[STATS_REJECT_SIZE], 1);
  uint64_t total = 0;
  for (int i = 0; i < STATS_REJECT_N; i++)
    total += st.rejected[i];
  CHECK_INT(total, 4);
  /* Fed in two pieces at a line boundary: the same counts. */
  memset(&st, 0, sizeof st);
  size_t cut = (size_t)(strstr(out, "503") - out);
  stats_count_replies(&st, out, cut);
  stats_count_replies(&st, out + cut, sizeof out - 1 - cut);
  CHECK_INT(st.rejected[STATS_REJECT_RELAY], 2);
  CHECK_INT(st.rejected[STATS_REJECT_SYNTAX], 1);
  stats_count_replies(NULL, out, sizeof out - 1); /* no stats: no crash */
  stats_count_replies(&st, "", 0);
  stats_count_replies(&st, "5", 1);
  CHECK_INT(st.rejected[STATS_REJECT_OTHER], 0);
}

int main(void) {
  test_reply_reasons();
  test_every_family_has_help_and_type();
  test_values();
  test_histogram();
  test_snapshot();
  return check_result("test_metrics");
}
