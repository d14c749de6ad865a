/*
 * metrics: see metrics.h.
 */
#include "relay/metrics.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "log.h"
#include "relay/stats.h"
#ifdef MAILHOP_HAVE_HTTP
#include "loop/http.h"
#endif

#define CONTENT_TYPE_METRICS "text/plain; version=0.0.4; charset=utf-8"
#define CONTENT_TYPE_TEXT "text/plain; charset=utf-8"

struct metrics {
  const struct stats *stats;
  const struct sched *sched;
  int64_t started_at;
  struct http_server *http;
};

/* ---- rendering (pure) -------------------------------------------------- */

struct buf {
  char *p;
  size_t len, cap;
  int oom;
};

__attribute__((format(printf, 2, 3))) static void put(struct buf *b,
                                                      const char *fmt, ...) {
  if (b->oom)
    return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      b->oom = 1;
      return;
    }
    if ((size_t)n < b->cap - b->len) {
      b->len += (size_t)n;
      return;
    }
    size_t cap = b->cap * 2 + (size_t)n;
    char *p = realloc(b->p, cap);
    if (!p) {
      b->oom = 1;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
}

static void family(struct buf *b, const char *name, const char *type,
                   const char *help) {
  put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void one(struct buf *b, const char *name, const char *type,
                const char *help, unsigned long long v) {
  family(b, name, type, help);
  put(b, "%s %llu\n", name, v);
}

/* A label value from our own fixed strings, escaped as the text format
 * wants (backslash, double quote, newline) all the same. */
static void label_value(struct buf *b, const char *v) {
  for (; *v; v++) {
    if (*v == '\\' || *v == '"')
      put(b, "\\%c", *v);
    else if (*v == '\n')
      put(b, "\\n");
    else
      put(b, "%c", *v);
  }
}

char *metrics_render(const struct stats_snapshot *sn, const struct stats *s,
                     size_t *len) {
  static const struct stats zero;
  if (!s)
    s = &zero;
  struct buf b = {.cap = 8192};
  b.p = malloc(b.cap);
  if (!b.p)
    return NULL;
  b.p[0] = '\0';

  family(&b, "mailhop_build_info", "gauge",
         "Build information: the version label; the value is always 1.");
  put(&b, "mailhop_build_info{version=\"");
  label_value(&b, MAILHOP_VERSION);
  put(&b, "\"} 1\n");
  one(&b, "mailhop_up_seconds", "gauge", "Seconds since the relay started.",
      (unsigned long long)sn->uptime_s);
  one(&b, "mailhop_accepting", "gauge",
      "1 while the SMTP listeners accept mail (not draining, not shutting "
      "down), else 0.",
      (unsigned long long)sn->accepting);
  one(&b, "mailhop_paused", "gauge",
      "1 while all outbound delivery is paused (mailhop pause), else 0.",
      (unsigned long long)sn->paused);
  one(&b, "mailhop_smtp_sessions", "gauge", "Inbound SMTP sessions open now.",
      (unsigned long long)sn->sessions);
  one(&b, "mailhop_outbound_connections", "gauge",
      "Outbound SMTP connections open now.", (unsigned long long)sn->outbound);
  one(&b, "mailhop_queue_messages", "gauge",
      "Messages in the queue with recipients still to deliver.",
      (unsigned long long)sn->queue_messages);
  family(&b, "mailhop_queue_recipients", "gauge",
         "Recipients in the queue still to deliver: queued (never tried) "
         "or deferred (tried at least once).");
  put(&b, "mailhop_queue_recipients{state=\"queued\"} %llu\n",
      (unsigned long long)(sn->queue_recipients - sn->queue_deferred));
  put(&b, "mailhop_queue_recipients{state=\"deferred\"} %llu\n",
      (unsigned long long)sn->queue_deferred);
  one(&b, "mailhop_queue_held_messages", "gauge",
      "Messages on hold (not delivered until released).",
      (unsigned long long)sn->queue_held);
  one(&b, "mailhop_queue_oldest_message_age_seconds", "gauge",
      "Age of the oldest message in the queue; 0 when the queue is empty.",
      (unsigned long long)sn->oldest_age_s);
  one(&b, "mailhop_received_messages_total", "counter",
      "Messages accepted (250 after DATA, durably queued).",
      (unsigned long long)sn->received);

  family(&b, "mailhop_rejected_total", "counter",
         "Inbound refusals by reason.");
  for (int r = 0; r < STATS_REJECT_N; r++)
    put(&b, "mailhop_rejected_total{reason=\"%s\"} %llu\n",
        stats_reject_name((enum stats_reject)r),
        (unsigned long long)s->rejected[r]);

  family(&b, "mailhop_recipients_total", "counter",
         "Delivery outcomes per recipient: delivered, deferred (per "
         "attempt), bounced (expired included, as in status), expired "
         "(bounced after queue_lifetime).");
  put(&b, "mailhop_recipients_total{result=\"delivered\"} %llu\n",
      (unsigned long long)sn->delivered);
  put(&b, "mailhop_recipients_total{result=\"deferred\"} %llu\n",
      (unsigned long long)sn->deferred);
  put(&b, "mailhop_recipients_total{result=\"bounced\"} %llu\n",
      (unsigned long long)sn->bounced);
  put(&b, "mailhop_recipients_total{result=\"expired\"} %llu\n",
      (unsigned long long)sn->expired);

  family(&b, "mailhop_delivery_duration_seconds", "histogram",
         "Time from acceptance to delivery, per delivered recipient.");
  unsigned long long cum = 0;
  for (int i = 0; i < STATS_DURATION_BUCKETS; i++) {
    cum += s->duration_bucket[i];
    put(&b, "mailhop_delivery_duration_seconds_bucket{le=\"%g\"} %llu\n",
        stats_duration_bounds[i], cum);
  }
  cum += s->duration_bucket[STATS_DURATION_BUCKETS];
  put(&b, "mailhop_delivery_duration_seconds_bucket{le=\"+Inf\"} %llu\n", cum);
  put(&b, "mailhop_delivery_duration_seconds_sum %.17g\n", s->duration_sum);
  put(&b, "mailhop_delivery_duration_seconds_count %llu\n",
      (unsigned long long)s->duration_count);

  family(&b, "mailhop_tls_handshakes_total", "counter",
         "TLS handshakes by direction and result.");
  static const char *const dir[2] = {"inbound", "outbound"};
  for (int d = 0; d < 2; d++) {
    put(&b,
        "mailhop_tls_handshakes_total{direction=\"%s\",result=\"ok\"} "
        "%llu\n",
        dir[d], (unsigned long long)s->tls_ok[d]);
    put(&b,
        "mailhop_tls_handshakes_total{direction=\"%s\",result=\"failed\"} "
        "%llu\n",
        dir[d], (unsigned long long)s->tls_failed[d]);
  }

  family(&b, "mailhop_dns_queries_total", "counter",
         "DNS query attempts sent by the resolver, by result.");
  for (int r = 0; r < STATS_DNS_N; r++)
    put(&b, "mailhop_dns_queries_total{result=\"%s\"} %llu\n",
        stats_dns_name((enum stats_dns)r), (unsigned long long)s->dns[r]);

  one(&b, "mailhop_dkim_signed_total", "counter",
      "Messages signed with DKIM (once per message, any number of keys).",
      (unsigned long long)s->dkim_signed);
  one(&b, "mailhop_destinations_backed_off", "gauge",
      "Destinations backed off after failures (waiting or probing).",
      (unsigned long long)sn->destinations_backed_off);

  if (b.oom) {
    free(b.p);
    return NULL;
  }
  *len = b.len;
  return b.p;
}

#ifdef MAILHOP_HAVE_HTTP
/* ---- requests ------------------------------------------------------------ */

static void text(struct http_response *res, int status, const char *msg) {
  res->status = status;
  res->content_type = CONTENT_TYPE_TEXT;
  res->body = strdup(msg);
  res->len = res->body ? strlen(res->body) : 0;
}

static const char *not_ready_reason(const struct stats *s) {
  if (s->shutting_down)
    return "not ready: shutting down\n";
  if (s->draining)
    return "not ready: draining\n";
  if (!s->listening)
    return "not ready: listeners closed\n";
  if (s->disk_low)
    return "not ready: queue disk under queue_minfree\n";
  return "not ready\n";
}

static void on_request(const char *method, const char *path,
                       struct http_response *res, void *data) {
  struct metrics *m = data;
  int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
  int known = strcmp(path, "/metrics") == 0 || strcmp(path, "/healthz") == 0 ||
              strcmp(path, "/readyz") == 0;
  if (!known) {
    text(res, 404, "not found\n");
    return;
  }
  if (!get) {
    text(res, 405, "method not allowed\n");
    res->allow = "GET, HEAD";
    return;
  }
  if (strcmp(path, "/healthz") == 0) {
    text(res, 200, "ok\n");
    return;
  }
  struct stats_snapshot sn;
  stats_snapshot(m->stats, m->sched, m->started_at, (int64_t)time(NULL), &sn);
  if (strcmp(path, "/readyz") == 0) {
    static const struct stats zero;
    if (sn.ready)
      text(res, 200, "ready\n");
    else
      text(res, 503, not_ready_reason(m->stats ? m->stats : &zero));
    return;
  }
  res->status = 200;
  res->content_type = CONTENT_TYPE_METRICS;
  res->body = metrics_render(&sn, m->stats, &res->len);
  if (!res->body)
    text(res, 500, "out of memory\n");
}

/* ---- life cycle -----------------------------------------------------------
 */

int metrics_start(uv_loop_t *loop, const struct config *cfg,
                  const struct stats *stats, const struct sched *sched,
                  struct metrics **out, char *err, size_t errlen) {
  *out = NULL;
  if (cfg->n_metrics_listen == 0)
    return 0;
  struct metrics *m = calloc(1, sizeof *m);
  if (!m) {
    snprintf(err, errlen, "metrics_listen: out of memory");
    return -ENOMEM;
  }
  m->stats = stats;
  m->sched = sched;
  m->started_at = (int64_t)time(NULL);
  struct sockaddr_storage addrs[CONFIG_MAX_LIST];
  for (int i = 0; i < cfg->n_metrics_listen; i++)
    addrs[i] = cfg->metrics_listen[i].sa;
  int rc = http_start(loop, addrs, cfg->n_metrics_listen, on_request, m,
                      &m->http, err, errlen);
  if (rc < 0) {
    free(m);
    return rc;
  }
  for (int i = 0; i < cfg->n_metrics_listen; i++) {
    struct log_line l;
    /* Not "listening": that event says the SMTP listeners are open. */
    log_begin(&l, LOG_INFO, "metrics_listening");
    log_str(&l, "addr", cfg->metrics_listen[i].text);
    log_end(&l);
  }
  *out = m;
  return 0;
}

void metrics_stop(struct metrics *m) {
  if (!m)
    return;
  http_stop(m->http);
  free(m);
}

#else /* !MAILHOP_HAVE_HTTP */

int metrics_start(uv_loop_t *loop, const struct config *cfg,
                  const struct stats *stats, const struct sched *sched,
                  struct metrics **out, char *err, size_t errlen) {
  (void)loop;
  (void)stats;
  (void)sched;
  *out = NULL;
  if (cfg->n_metrics_listen == 0)
    return 0;
  snprintf(err, errlen,
           "metrics_listen: this mailhop was built without HTTP support "
           "(meson -Dmetrics=disabled, as the static image is)");
  return -ENOTSUP;
}

void metrics_stop(struct metrics *m) {
  (void)m;
}

#endif
