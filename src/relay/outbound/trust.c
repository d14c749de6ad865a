/*
 * outbound/trust: MTA-STS and TLS-RPT hooks of the delivery (see
 * trust.h).
 */
#include "relay/outbound/trust.h"

#include <openssl/x509_vfy.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "loop/conn.h"
#include "queue/sched.h"
#include "queue/store.h"
#include "relay/outbound.h"
#include "relay/outbound/dispatch.h"
#include "relay/outbound/record.h"
#include "relay/outbound/session.h"
#include "relay/tlsrpt.h"

#define TLSRPT_RUA_MAX_Q 4 /* recipients of one report (TLSRPT_MAX_RUA) */

static const char *dest_domain(const struct delivery *d) {
  return d->job->dest;
}

/* The TLS-RPT policy type the delivery's sessions count under: a
 * connection to a host with usable TLSA records (outbound/dane.h sets
 * d->dane) counts as tlsa — DANE wins. */
static enum tlsrpt_policy rpt_policy(const struct delivery *d) {
  if (d->dane)
    return TLSRPT_POLICY_TLSA;
  return d->sts_mode != STS_MODE_NONE ? TLSRPT_POLICY_STS : TLSRPT_POLICY_NONE;
}

/* DANE may apply to the destination's hosts: outbound_tls is dane or
 * dane-only and the MX answer was DNSSEC-secure; which host has usable
 * TLSA is only known just before it is connected. */
static int dane_possible(const struct delivery *d) {
  return d->ob->ctx_dane && d->mx_secure;
}

static void count(struct delivery *d, const char *result) {
  if (d->is_report || !d->ob->tlsrpt || dest_domain(d)[0] == '[')
    return; /* no reports about reports, nor for address literals */
  const char *host =
      d->cand >= 0 && d->cand < d->ncands ? d->cands[d->cand].host : NULL;
  tlsrpt_count(d->ob->tlsrpt, dest_domain(d), rpt_policy(d), result, host);
}

static void go(struct delivery *d) {
  d->cand = -1;
  d->next = NEXT_HOST;
  session_next(d);
}

static void on_verdict(void *arg, const struct sts_verdict *v) {
  struct delivery *d = arg;
  d->sts_waiting = 0;
  if (v->canceled) {
    record_finish(d); /* shutdown: the recipients stay as they are */
    return;
  }
  if (v->failure && !d->is_report && d->ob->tlsrpt)
    /* Discovery failed: counted once per delivery, under sts (RFC 8460
     * §4.3.2.2); a cached policy may still apply. */
    tlsrpt_count(d->ob->tlsrpt, dest_domain(d), TLSRPT_POLICY_STS, v->failure,
                 NULL);
  if (v->mode != STS_MODE_NONE) {
    if (!d->is_report && d->ob->tlsrpt)
      tlsrpt_policy_text(d->ob->tlsrpt, dest_domain(d), v->policy_text);
    d->sts_pol = malloc(sizeof *d->sts_pol);
    if (d->sts_pol) {
      *d->sts_pol = *v->pol;
      d->sts_mode = v->mode;
      d->sts_enforce = v->mode == STS_MODE_ENFORCE;
      if (d->sts_enforce)
        snprintf(d->sts_stamp, sizeof d->sts_stamp, "sts:%s", v->id);
    } else if (v->mode == STS_MODE_ENFORCE) {
      dispatch_decide_pending(d, OUTCOME_TEMPFAIL, "out of memory", "4.3.0");
      record_finish(d);
      return;
    }
  }
  dispatch_connect(d);
}

void trust_begin(struct delivery *d) {
  struct outbound *ob = d->ob;
  d->sts_mode = STS_MODE_NONE;
  d->sts_enforce = 0;
  d->sts_stamp[0] = '\0';
  d->is_report = tlsrpt_is_report(d->sender, d->headers);
  /* MTA-STS is for delivery by MX to a domain (not an address literal).
   * DANE hook: when DANE applies to the destination it wins (CONTRACT
   * §4b); the DANE side decides per MX host after resolution, and its
   * hosts keep the DANE rules (trust_after_resolve leaves them alone). */
  if (!ob->sts || d->relayhost || d->job->dest[0] == '[') {
    dispatch_connect(d);
    return;
  }
  d->sts_waiting = 1;
  if (sts_get(ob->sts, dest_domain(d), &d->sts_wait, on_verdict, d) < 0) {
    d->sts_waiting = 0;
    dispatch_connect(d);
  }
}

void trust_after_resolve(struct delivery *d) {
  if (!d->sts_pol || d->relayhost) {
    go(d);
    return;
  }
  for (int i = 0; i < d->ncands; i++)
    d->sts_match[i] = (unsigned char)sts_mx_match(d->sts_pol, d->cands[i].host);
  if (d->sts_enforce && !dane_possible(d)) {
    int kept = 0;
    for (int i = 0; i < d->ncands; i++) {
      if (!d->sts_match[i])
        continue;
      d->cands[kept] = d->cands[i];
      d->cand_relay[kept] = d->cand_relay[i];
      d->sts_match[kept] = 1;
      kept++;
    }
    if (kept == 0) {
      char why[OB_ERR_MAX];
      snprintf(why, sizeof why,
               "no MX host of %s matches its MTA-STS policy (first: %s)",
               dest_domain(d), d->ncands ? d->cands[0].host : "none");
      log_msg(LOG_WARN, "mta-sts", "%s", why);
      d->cand = -1;
      count(d, "validation-failure");
      d->remote[0] = '\0';
      dispatch_decide_pending(d, OUTCOME_TEMPFAIL, why, "4.7.5");
      record_finish(d);
      return;
    }
    d->ncands = kept;
  }
  go(d);
}

const char *trust_stamp(const struct delivery *d) {
  return d->sts_stamp;
}

int trust_abort(struct delivery *d) {
  if (!d->sts_waiting)
    return 0;
  sts_cancel(d->ob->sts, &d->sts_wait);
  d->sts_waiting = 0;
  record_finish(d);
  return 1;
}

int trust_skip_host(struct delivery *d) {
  if (d->relayhost || !d->sts_enforce || d->dane || d->cand < 0 ||
      d->cand >= d->ncands || d->sts_match[d->cand])
    return 0;
  snprintf(d->last_err, sizeof d->last_err,
           "MX host %s of %s does not match its MTA-STS policy",
           d->cands[d->cand].host, dest_domain(d));
  snprintf(d->last_status, sizeof d->last_status, "4.7.5");
  log_msg(LOG_WARN, "mta-sts", "%s", d->last_err);
  count(d, "validation-failure");
  return 1;
}

int trust_tls_required(const struct delivery *d) {
  return !d->relayhost && d->sts_enforce && !d->dane;
}

const char *trust_policy_name(const struct delivery *d) {
  if (d->relayhost)
    return "none";
  if (d->dane)
    return "dane";
  return d->sts_enforce ? "sts" : "none";
}

/* RFC 8460 §4.3.2.1 result types of a certificate that did not verify. */
static const char *cert_result(long vr) {
  switch (vr) {
  case X509_V_ERR_HOSTNAME_MISMATCH:
    return "certificate-host-mismatch";
  case X509_V_ERR_CERT_HAS_EXPIRED:
  case X509_V_ERR_CERT_NOT_YET_VALID:
    return "certificate-expired";
  default:
    return "certificate-not-trusted";
  }
}

void trust_tls_outcome(struct delivery *d, const struct conn_tls_info *info,
                       int starttls_missing) {
  if (d->relayhost || d->tls_counted)
    return;
  d->tls_counted = 1;
  const char *result = NULL;
  if (starttls_missing || !info)
    result = "starttls-not-supported";
  else if (!info->ok)
    result = "validation-failure";
  else if (d->sts_mode != STS_MODE_NONE && !info->verified)
    result = cert_result(info->verify_result);
  else if (d->sts_mode == STS_MODE_TESTING && d->cand >= 0 &&
           d->cand < d->ncands && !d->sts_match[d->cand])
    result = "validation-failure"; /* testing: only reported */
  if (result && d->sts_enforce)
    snprintf(d->last_status, sizeof d->last_status, "4.7.5");
  count(d, result);
}

/* ---- TLS-RPT reports into the queue ----------------------------------- */

struct report_job {
  struct outbound *ob;
  char id[STORE_ID_SIZE];
  int64_t received_at, size;
  size_t n;
  char dest[TLSRPT_RUA_MAX_Q][256];
};

static void on_report_stored(struct store *st, int status, void *data) {
  (void)st;
  struct report_job *j = data;
  struct outbound *ob = j->ob;
  if (status < 0) {
    log_msg(LOG_WARN, "tlsrpt", "report not queued: %s", strerror(-status));
  } else if (ob->sched && !ob->freeing) {
    struct sched_rcpt sr[TLSRPT_RUA_MAX_Q];
    for (size_t i = 0; i < j->n; i++)
      sr[i] = (struct sched_rcpt){.idx = (int)i,
                                  .dest = outbound_dest(ob, j->dest[i])};
    struct sched_msg sm = {.id = j->id,
                           .received_at = sched_arrival_ms(j->received_at),
                           .size = j->size,
                           .rcpts = sr,
                           .nrcpts = j->n};
    if (sched_add(ob->sched, &sm) < 0)
      log_msg(LOG_WARN, "tlsrpt", "report %s waits for the next restart",
              j->id);
  }
  free(j);
}

int trust_submit_report(void *arg, struct store_msg *msg) {
  struct outbound *ob = arg;
  if (msg->nrcpts == 0 || msg->nrcpts > TLSRPT_RUA_MAX_Q)
    return -1;
  struct report_job *j = calloc(1, sizeof *j);
  if (!j)
    return -1;
  j->ob = ob;
  j->n = msg->nrcpts;
  for (size_t i = 0; i < msg->nrcpts; i++)
    snprintf(j->dest[i], sizeof j->dest[i], "%s", msg->rcpts[i].domain);
  int rc = store_commit(ob->store, msg, NULL, on_report_stored, j, NULL);
  if (rc < 0) {
    free(j);
    return -1;
  }
  snprintf(j->id, sizeof j->id, "%s", msg->id);
  j->received_at = msg->received_at;
  j->size = (int64_t)msg->prefix_len;
  return 0;
}
