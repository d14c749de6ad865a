/*
 * relay/tlsrpt: TLS-RPT counts and reports (see tlsrpt.h).
 *
 * The period: its start is kept in the queue database; it ends at start +
 * tls_rpt_interval (a timer; a period that ended while mailhop was down
 * ends at start-up).  At its end the counts are taken (and dropped, in
 * memory and in the database, so counting goes on into the next period
 * at once), and for each domain counted the `_smtp._tls` TXT record is
 * looked up; a domain with mailto: rua gets its report, built and gzip'd
 * on the pool, queued through the outbound's submit function.
 */
#include "relay/tlsrpt.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <zlib.h>

#include "config.h"
#include "dns/resolver.h"
#include "log.h"
#include "proto/dkim.h"
#include "proto/sts_policy.h"
#include "queue/store.h"

struct rtype {
  char type[48];
  int64_t n;
  char mx[256]; /* the receiving MX of the last failure, or "" */
};

struct rpol {
  int64_t ok;
  int ntypes;
  struct rtype t[TLSRPT_TYPES_MAX];
};

struct rdom {
  char domain[256];
  struct rpol p[TLSRPT_POLICY_N];
  char *sts_text; /* the MTA-STS policy in force, for policy-string;
                     malloc'd, or NULL (not kept across restarts) */
};

/* One report in the making: the counts of a domain taken at the period's
 * end, then its rua, then the gzip on the pool. */
struct rjob {
  struct tlsrpt *t;
  struct rjob *next;
  struct rdom dom;
  int64_t start, end;
  struct resolver_query *q;
  uv_work_t work;
  int working;
  char rua[TLSRPT_MAX_RUA][TLSRPT_RUA_LEN];
  int nrua;
  char *json;        /* in: the report */
  unsigned char *gz; /* out: gzip'd */
  size_t gzlen;
};

struct tlsrpt {
  uv_loop_t *loop;
  const struct config *cfg;
  struct store *st;
  struct resolver *res;
  tlsrpt_submit_fn submit;
  void *submit_arg;
  struct rdom *doms;
  size_t ndoms;
  int64_t start; /* unix s */
  int warned;    /* the bounds were hit this period */
  uv_timer_t timer;
  int timer_open;
  struct rjob *jobs;
  int freeing;
};

const char *tlsrpt_policy_name(enum tlsrpt_policy p) {
  switch (p) {
  case TLSRPT_POLICY_STS:
    return "sts";
  case TLSRPT_POLICY_TLSA:
    return "tlsa";
  default:
    return "no-policy-found";
  }
}

static int policy_from_name(const char *s) {
  for (int i = 0; i < TLSRPT_POLICY_N; i++)
    if (strcmp(s, tlsrpt_policy_name((enum tlsrpt_policy)i)) == 0)
      return i;
  return -1;
}

static void on_written(struct store *st, int status, void *data) {
  (void)st;
  (void)data;
  if (status < 0 && status != -ECANCELED)
    log_msg(LOG_WARN, "tlsrpt", "cannot keep the TLS-RPT counts: %s",
            strerror(-status));
}

static struct rdom *dom_get(struct tlsrpt *t, const char *domain, int create) {
  for (size_t i = 0; i < t->ndoms; i++)
    if (strcmp(t->doms[i].domain, domain) == 0)
      return &t->doms[i];
  if (!create || t->ndoms >= TLSRPT_DOMAINS_MAX)
    return NULL;
  struct rdom *a = realloc(t->doms, (t->ndoms + 1) * sizeof *a);
  if (!a)
    return NULL;
  t->doms = a;
  struct rdom *d = &t->doms[t->ndoms++];
  memset(d, 0, sizeof *d);
  snprintf(d->domain, sizeof d->domain, "%s", domain);
  return d;
}

/* Adds n to a count in memory; returns 0, or -1 when out of room. */
static int add(struct tlsrpt *t, const char *domain, int pol,
               const char *result, int64_t n, const char *mx) {
  struct rdom *d = dom_get(t, domain, 1);
  if (!d)
    return -1;
  struct rpol *p = &d->p[pol];
  if (!result || !result[0]) {
    p->ok += n;
    return 0;
  }
  for (int i = 0; i < p->ntypes; i++)
    if (strcmp(p->t[i].type, result) == 0) {
      p->t[i].n += n;
      if (mx)
        snprintf(p->t[i].mx, sizeof p->t[i].mx, "%s", mx);
      return 0;
    }
  if (p->ntypes >= TLSRPT_TYPES_MAX)
    return -1;
  struct rtype *r = &p->t[p->ntypes++];
  snprintf(r->type, sizeof r->type, "%s", result);
  r->n = n;
  snprintf(r->mx, sizeof r->mx, "%s", mx ? mx : "");
  return 0;
}

void tlsrpt_count(struct tlsrpt *t, const char *domain, enum tlsrpt_policy p,
                  const char *result, const char *mx_host) {
  if (!t || !t->cfg->tls_rpt || t->freeing || !domain || !*domain ||
      strlen(domain) >= 256 || (unsigned)p >= TLSRPT_POLICY_N)
    return;
  if (result && strlen(result) >= 48)
    return;
  if (add(t, domain, (int)p, result, 1, mx_host) < 0) {
    if (!t->warned)
      log_msg(LOG_WARN, "tlsrpt",
              "more than %d domains or %d result types in this period: "
              "the rest is not counted",
              TLSRPT_DOMAINS_MAX, TLSRPT_TYPES_MAX);
    t->warned = 1;
    return;
  }
  if (store_tlsrpt_add(t->st, domain, tlsrpt_policy_name(p),
                       result ? result : "", 1, on_written, NULL) < 0)
    log_msg(LOG_WARN, "tlsrpt", "cannot keep the TLS-RPT count of %s", domain);
}

void tlsrpt_policy_text(struct tlsrpt *t, const char *domain,
                        const char *text) {
  if (!t || !t->cfg->tls_rpt || t->freeing || !domain || !*domain ||
      strlen(domain) >= 256 || !text || strlen(text) > TLSRPT_POLICY_TEXT_MAX)
    return;
  struct rdom *d = dom_get(t, domain, 1);
  if (!d || (d->sts_text && strcmp(d->sts_text, text) == 0))
    return;
  free(d->sts_text);
  d->sts_text = strdup(text);
}

int tlsrpt_is_report(const char *sender, const char *headers) {
  if (!headers || (sender && sender[0]))
    return 0;
  /* A header field name at the start of a line. */
  const char *name = "TLS-Report-Domain:";
  size_t nl = strlen(name);
  for (const char *p = headers; *p;) {
    if (strncasecmp(p, name, nl) == 0)
      return 1;
    const char *e = strchr(p, '\n');
    if (!e)
      break;
    p = e + 1;
    if (*p == '\r' || *p == '\n')
      break; /* end of the header section */
  }
  return 0;
}

static void fmt_time(int64_t s, char out[32]) {
  time_t tt = (time_t)s;
  struct tm tm;
  gmtime_r(&tt, &tm);
  strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

char *tlsrpt_json(const struct tlsrpt *t) {
  json_t *o = json_object();
  json_t *arr = json_array();
  char ts[32];
  fmt_time(t->start, ts);
  json_object_set_new(o, "period_start", json_string(ts));
  for (size_t i = 0; i < t->ndoms; i++) {
    const struct rdom *d = &t->doms[i];
    for (int k = 0; k < TLSRPT_POLICY_N; k++) {
      const struct rpol *p = &d->p[k];
      if (p->ok == 0 && p->ntypes == 0)
        continue;
      json_t *e = json_object();
      json_t *f = json_object();
      int64_t failed = 0;
      for (int j = 0; j < p->ntypes; j++) {
        failed += p->t[j].n;
        json_object_set_new(f, p->t[j].type, json_integer(p->t[j].n));
      }
      json_object_set_new(e, "domain", json_string(d->domain));
      json_object_set_new(
          e, "policy", json_string(tlsrpt_policy_name((enum tlsrpt_policy)k)));
      json_object_set_new(e, "successful", json_integer(p->ok));
      json_object_set_new(e, "failed", json_integer(failed));
      json_object_set_new(e, "failures", f);
      json_array_append_new(arr, e);
    }
  }
  json_object_set_new(o, "domains", arr);
  char *s = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  return s;
}

char *tlsrpt_json_arg(void *arg) {
  return tlsrpt_json(arg);
}

/* ---- reports ------------------------------------------------------------ */

/* The RFC 8460 §4 JSON of one domain's counts. */
static char *report_json(const struct tlsrpt *t, const struct rjob *j) {
  char a[32], b[32], rid[400];
  fmt_time(j->start, a);
  fmt_time(j->end, b);
  snprintf(rid, sizeof rid, "%s_%lld_%s@%s", a, (long long)j->end,
           j->dom.domain, t->cfg->hostname);
  json_t *o = json_object();
  json_object_set_new(o, "organization-name", json_string(t->cfg->hostname));
  json_t *dr = json_object();
  json_object_set_new(dr, "start-datetime", json_string(a));
  json_object_set_new(dr, "end-datetime", json_string(b));
  json_object_set_new(o, "date-range", dr);
  char contact[300];
  snprintf(contact, sizeof contact, "postmaster@%s", t->cfg->hostname);
  json_object_set_new(o, "contact-info", json_string(contact));
  json_object_set_new(o, "report-id", json_string(rid));
  json_t *pols = json_array();
  for (int k = 0; k < TLSRPT_POLICY_N; k++) {
    const struct rpol *p = &j->dom.p[k];
    if (p->ok == 0 && p->ntypes == 0)
      continue;
    json_t *pe = json_object();
    json_t *pol = json_object();
    json_object_set_new(pol, "policy-type",
                        json_string(tlsrpt_policy_name((enum tlsrpt_policy)k)));
    json_object_set_new(pol, "policy-domain", json_string(j->dom.domain));
    if (k == TLSRPT_POLICY_STS && j->dom.sts_text) {
      /* RFC 8460 §4.4: the policy, one string per line */
      json_t *ps = json_array();
      const char *p = j->dom.sts_text;
      while (*p) {
        size_t n = strcspn(p, "\n");
        size_t m = n;
        if (m > 0 && p[m - 1] == '\r')
          m--;
        if (m > 0)
          json_array_append_new(ps, json_stringn(p, m));
        p += n + (p[n] == '\n');
      }
      json_object_set_new(pol, "policy-string", ps);
    }
    json_object_set_new(pe, "policy", pol);
    int64_t failed = 0;
    json_t *fd = json_array();
    for (int i = 0; i < p->ntypes; i++) {
      failed += p->t[i].n;
      json_t *f = json_object();
      json_object_set_new(f, "result-type", json_string(p->t[i].type));
      if (p->t[i].mx[0])
        json_object_set_new(f, "receiving-mx-hostname",
                            json_string(p->t[i].mx));
      json_object_set_new(f, "failed-session-count", json_integer(p->t[i].n));
      json_array_append_new(fd, f);
    }
    json_t *sum = json_object();
    json_object_set_new(sum, "total-successful-session-count",
                        json_integer(p->ok));
    json_object_set_new(sum, "total-failure-session-count",
                        json_integer(failed));
    json_object_set_new(pe, "summary", sum);
    if (p->ntypes)
      json_object_set_new(pe, "failure-details", fd);
    else
      json_decref(fd);
    json_array_append_new(pols, pe);
  }
  json_object_set_new(o, "policies", pols);
  char *s = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  return s;
}

/* Pool thread: gzip (RFC 1952) of the JSON. */
static void gzip_work(uv_work_t *w) {
  struct rjob *j = w->data;
  size_t n = strlen(j->json);
  z_stream z;
  memset(&z, 0, sizeof z);
  if (deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8,
                   Z_DEFAULT_STRATEGY) != Z_OK)
    return;
  size_t cap = deflateBound(&z, (uLong)n) + 32;
  j->gz = malloc(cap);
  if (!j->gz) {
    deflateEnd(&z);
    return;
  }
  z.next_in = (Bytef *)j->json;
  z.avail_in = (uInt)n;
  z.next_out = j->gz;
  z.avail_out = (uInt)cap;
  if (deflate(&z, Z_FINISH) == Z_STREAM_END)
    j->gzlen = cap - z.avail_out;
  deflateEnd(&z);
}

static void job_free(struct rjob *j) {
  struct tlsrpt *t = j->t;
  for (struct rjob **pp = &t->jobs; *pp; pp = &(*pp)->next)
    if (*pp == j) {
      *pp = j->next;
      break;
    }
  free(j->json);
  free(j->gz);
  free(j->dom.sts_text);
  free(j);
}

static void maybe_free(struct tlsrpt *t);

/* The message (RFC 8460 §5.3): multipart/report; report-type=tlsrpt, a
 * text part and the gzip'd JSON. */
static void queue_report(struct tlsrpt *t, struct rjob *j) {
  size_t b64cap = 4 * ((j->gzlen + 2) / 3) + 1;
  char *b64 = malloc(b64cap);
  size_t cap = b64cap + b64cap / 76 * 2 + 4096 + TLSRPT_MAX_RUA * 300;
  char *m = malloc(cap);
  if (!b64 || !m || dkim_base64(j->gz, j->gzlen, b64, b64cap) < 0) {
    free(b64);
    free(m);
    log_msg(LOG_WARN, "tlsrpt", "report for %s: out of memory", j->dom.domain);
    return;
  }
  const char *host = t->cfg->hostname;
  char a[32], b[32], date[64], rid[400], boundary[64];
  fmt_time(j->start, a);
  fmt_time(j->end, b);
  snprintf(rid, sizeof rid, "%s_%lld_%s@%s", a, (long long)j->end,
           j->dom.domain, host);
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
  snprintf(boundary, sizeof boundary, "tlsrpt-%lld-%u", (long long)now,
           (unsigned)rand());
  size_t o = 0;
#define PUT(...)                                                               \
  do {                                                                         \
    int k_ = snprintf(m + o, cap - o, __VA_ARGS__);                            \
    if (k_ > 0)                                                                \
      o += (size_t)k_ < cap - o ? (size_t)k_ : cap - o - 1;                    \
  } while (0)
  PUT("From: MAILER-DAEMON@%s\r\n", host);
  PUT("Date: %s\r\n", date);
  PUT("Subject: Report Domain: %s Submitter: %s Report-ID: <%s>\r\n",
      j->dom.domain, host, rid);
  PUT("To: ");
  for (int i = 0; i < j->nrua; i++)
    PUT("%s<%s>", i ? ", " : "", j->rua[i]);
  PUT("\r\n");
  PUT("Message-ID: <%s>\r\n", rid);
  PUT("TLS-Report-Domain: %s\r\n", j->dom.domain);
  PUT("TLS-Report-Submitter: %s\r\n", host);
  PUT("Auto-Submitted: auto-generated\r\n");
  PUT("MIME-Version: 1.0\r\n");
  PUT("Content-Type: multipart/report; report-type=\"tlsrpt\";\r\n"
      " boundary=\"%s\"\r\n\r\n",
      boundary);
  PUT("This is a multi-part message in MIME format.\r\n\r\n");
  PUT("--%s\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n", boundary);
  PUT("This is an aggregate TLS report (RFC 8460) from %s for %s,\r\n"
      "%s to %s.\r\n\r\n",
      host, j->dom.domain, a, b);
  PUT("--%s\r\nContent-Type: application/tlsrpt+gzip\r\n"
      "Content-Transfer-Encoding: base64\r\n"
      "Content-Disposition: attachment;\r\n"
      " filename=\"%s!%s!%lld!%lld.json.gz\"\r\n\r\n",
      boundary, host, j->dom.domain, (long long)j->start, (long long)j->end);
  size_t bl = strlen(b64);
  for (size_t i = 0; i < bl; i += 76)
    PUT("%.*s\r\n", (int)(bl - i < 76 ? bl - i : 76), b64 + i);
  PUT("\r\n--%s--\r\n", boundary);
#undef PUT
  free(b64);
  struct store_rcpt rc[TLSRPT_MAX_RUA];
  char doms[TLSRPT_MAX_RUA][TLSRPT_RUA_LEN];
  memset(rc, 0, sizeof rc);
  for (int i = 0; i < j->nrua; i++) {
    const char *at = strrchr(j->rua[i], '@');
    size_t k = 0;
    for (const char *p = at + 1; *p && k + 1 < sizeof doms[i]; p++)
      doms[i][k++] = (char)tolower((unsigned char)*p);
    doms[i][k] = '\0';
    rc[i].address = j->rua[i];
    rc[i].domain = doms[i];
  }
  struct store_msg msg;
  memset(&msg, 0, sizeof msg);
  msg.sender = "";
  msg.received_at = (int64_t)now;
  msg.rcpts = rc;
  msg.nrcpts = (size_t)j->nrua;
  msg.prefix = m;
  msg.prefix_len = o;
  if (t->submit(t->submit_arg, &msg) < 0)
    log_msg(LOG_WARN, "tlsrpt", "report for %s not queued", j->dom.domain);
  else
    log_msg(LOG_INFO, "tlsrpt", "report for %s (%s to %s) queued for %s%s",
            j->dom.domain, a, b, j->rua[0], j->nrua > 1 ? " and others" : "");
  free(m);
}

static void gzip_done(uv_work_t *w, int status) {
  struct rjob *j = w->data;
  struct tlsrpt *t = j->t;
  j->working = 0;
  if (status == 0 && j->gzlen > 0 && !t->freeing)
    queue_report(t, j);
  else if (!t->freeing)
    log_msg(LOG_WARN, "tlsrpt", "report for %s: gzip failed", j->dom.domain);
  job_free(j);
  maybe_free(t);
}

static void on_rua(struct resolver_query *q, const struct resolver_txt *res,
                   void *data) {
  (void)q;
  struct rjob *j = data;
  struct tlsrpt *t = j->t;
  j->q = NULL;
  if (res->status != DNS_OK) {
    if (res->status != DNS_CANCELED)
      log_msg(LOG_WARN, "tlsrpt", "no report for %s: %s", j->dom.domain,
              res->reason);
    job_free(j);
    maybe_free(t);
    return;
  }
  const char *txts[RESOLVER_TXT_MAX];
  for (int i = 0; i < res->n; i++)
    txts[i] = res->txt[i];
  j->nrua = tlsrpt_txt_rua(txts, res->n, j->rua);
  if (j->nrua == 0) {
    job_free(j); /* the domain asks for no reports by mail */
    maybe_free(t);
    return;
  }
  j->json = report_json(t, j);
  j->work.data = j;
  if (!j->json || uv_queue_work(t->loop, &j->work, gzip_work, gzip_done) != 0) {
    log_msg(LOG_WARN, "tlsrpt", "report for %s: out of memory", j->dom.domain);
    job_free(j);
    maybe_free(t);
    return;
  }
  j->working = 1;
}

static void arm(struct tlsrpt *t);

/* The period ends: take the counts, start the next period, report. */
static void on_period(uv_timer_t *tm) {
  struct tlsrpt *t = tm->data;
  int64_t now = (int64_t)time(NULL);
  int64_t end = t->start + (int64_t)(t->cfg->tls_rpt_interval_ms / 1000);
  if (end > now)
    end = now;
  struct rdom *doms = t->doms;
  size_t n = t->ndoms;
  int64_t start = t->start;
  t->doms = NULL;
  t->ndoms = 0;
  t->warned = 0;
  t->start = now;
  if (store_tlsrpt_reset(t->st, now, on_written, NULL) < 0)
    log_msg(LOG_WARN, "tlsrpt", "cannot start the new period in the queue");
  for (size_t i = 0; i < n; i++) {
    int any = 0;
    for (int k = 0; k < TLSRPT_POLICY_N; k++)
      any |= doms[i].p[k].ok > 0 || doms[i].p[k].ntypes > 0;
    struct rjob *j = any ? calloc(1, sizeof *j) : NULL;
    if (!j) { /* nothing counted (only its policy text), or no memory */
      free(doms[i].sts_text);
      continue;
    }
    j->t = t;
    j->dom = doms[i];
    j->start = start;
    j->end = end;
    j->next = t->jobs;
    t->jobs = j;
    char name[300];
    snprintf(name, sizeof name, "_smtp._tls.%s", j->dom.domain);
    j->q = resolver_lookup_txt(t->res, name, on_rua, j);
    if (!j->q)
      job_free(j);
  }
  free(doms);
  arm(t);
}

static void arm(struct tlsrpt *t) {
  int64_t now = (int64_t)time(NULL);
  int64_t end = t->start + (int64_t)(t->cfg->tls_rpt_interval_ms / 1000);
  uint64_t ms = end > now ? (uint64_t)(end - now) * 1000 : 0;
  uv_timer_start(&t->timer, on_period, ms, 0);
}

struct tlsrpt *tlsrpt_new(uv_loop_t *loop, const struct config *cfg,
                          struct store *st, struct resolver *res,
                          tlsrpt_submit_fn submit, void *submit_arg) {
  struct tlsrpt *t = calloc(1, sizeof *t);
  if (!t)
    return NULL;
  t->loop = loop;
  t->cfg = cfg;
  t->st = st;
  t->res = res;
  t->submit = submit;
  t->submit_arg = submit_arg;
  const struct store_sts_row *sts;
  const struct store_rpt_row *rpt;
  size_t nsts, nrpt;
  store_trust_at_open(st, &sts, &nsts, &rpt, &nrpt, &t->start);
  for (size_t i = 0; i < nrpt; i++) {
    int p = policy_from_name(rpt[i].policy);
    if (p >= 0)
      (void)add(t, rpt[i].domain, p, rpt[i].result, rpt[i].count, NULL);
  }
  int64_t now = (int64_t)time(NULL);
  if (!cfg->tls_rpt) {
    /* No reports: the counts still run, from now when no period was
     * kept (`tlsrpt` said 1970 before). */
    if (t->start == 0 || t->start > now)
      t->start = now;
    return t;
  }
  if (t->start == 0 || t->start > now) {
    t->start = now;
    if (store_tlsrpt_reset(st, now, on_written, NULL) < 0)
      log_msg(LOG_WARN, "tlsrpt", "cannot start the period in the queue");
  }
  uv_timer_init(loop, &t->timer);
  t->timer.data = t;
  t->timer_open = 1;
  arm(t);
  uv_unref((uv_handle_t *)&t->timer);
  return t;
}

static void maybe_free(struct tlsrpt *t) {
  if (!t->freeing || t->timer_open)
    return;
  for (struct rjob *j = t->jobs; j; j = j->next)
    if (j->working)
      return;
  while (t->jobs)
    job_free(t->jobs);
  for (size_t i = 0; i < t->ndoms; i++)
    free(t->doms[i].sts_text);
  free(t->doms);
  free(t);
}

static void on_timer_close(uv_handle_t *h) {
  struct tlsrpt *t = h->data;
  t->timer_open = 0;
  maybe_free(t);
}

void tlsrpt_free(struct tlsrpt *t) {
  if (!t)
    return;
  t->freeing = 1;
  /* Lookups end now (their callbacks free their jobs); gzips finish on
   * the pool and are dropped. */
  struct rjob *j = t->jobs;
  while (j) {
    struct rjob *next = j->next;
    if (j->q) {
      struct resolver_query *q = j->q;
      j->q = NULL;
      resolver_cancel(q);
    }
    j = next;
  }
  if (t->timer_open)
    uv_close((uv_handle_t *)&t->timer, on_timer_close);
  else
    maybe_free(t);
}
