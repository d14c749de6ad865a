/*
 * outbound/dane: DANE for SMTP (RFC 7672) with OpenSSL's DANE support (see
 * dane.h).
 */
#include "relay/outbound/dane.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "config.h"
#include "dns/resolver.h"
#include "log.h"
#include "loop/conn.h"
#include "loop/tls.h"
#include "proto/tlsa.h"
#include "relay/outbound/dispatch.h"
#include "relay/outbound/record.h"
#include "relay/outbound/session.h"

static int dane_mode(const struct outbound *ob) {
  return ob->cfg->outbound_tls == CONFIG_OUTBOUND_TLS_DANE ||
         ob->cfg->outbound_tls == CONFIG_OUTBOUND_TLS_DANE_ONLY;
}

int dane_init(struct outbound *ob, char *err, size_t errlen) {
  if (!dane_mode(ob))
    return 0;
  if (!resolver_servers_loopback(ob->res))
    log_msg(LOG_WARN, "config",
            "outbound_tls = %s trusts the AD bit of the resolvers, and one "
            "of them is not on loopback: run a validating resolver on this "
            "host (CONTRACT §4b)",
            ob->cfg->outbound_tls == CONFIG_OUTBOUND_TLS_DANE ? "dane"
                                                              : "dane-only");
  char why[160];
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) {
    snprintf(err, errlen, "cannot create the DANE TLS context: %s",
             tls_last_error(why, sizeof why));
    return -1;
  }
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  /* Usages 2 and 3 need no PKIX trust store: the TLSA records are the
   * trust anchors (RFC 7672 §3.1). */
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  if (SSL_CTX_dane_enable(ctx) <= 0) {
    snprintf(err, errlen, "cannot enable DANE: %s",
             tls_last_error(why, sizeof why));
    SSL_CTX_free(ctx);
    return -1;
  }
  ob->ctx_dane = ctx;
  return 0;
}

void dane_free(struct outbound *ob) {
  SSL_CTX_free(ob->ctx_dane);
  ob->ctx_dane = NULL;
}

/* Usable records in d->tlsa (RFC 7672 §3.1, RFC 7671 §4): parsed by
 * proto/tlsa and, for full (matching type 0) data, DER that OpenSSL can
 * read, so that the records counted here are those SSL_dane_tlsa_add takes
 * later. */
static int count_usable(const struct dns_rrset *rs) {
  int n = 0;
  for (int i = 0; i < rs->n; i++) {
    struct tlsa_rec r;
    if (rs->rr[i].type != DNS_TYPE_TLSA ||
        tlsa_parse(rs->rr[i].rdata, rs->rr[i].rdlen, &r) != TLSA_USABLE)
      continue;
    if (r.mtype == TLSA_MATCH_FULL) {
      const unsigned char *p = r.data;
      void *obj = r.selector == TLSA_SELECTOR_CERT
                      ? (void *)d2i_X509(NULL, &p, (long)r.len)
                      : (void *)d2i_PUBKEY(NULL, &p, (long)r.len);
      int ok = obj && p == r.data + r.len;
      if (r.selector == TLSA_SELECTOR_CERT)
        X509_free(obj);
      else
        EVP_PKEY_free(obj);
      ERR_clear_error();
      if (!ok)
        continue;
    }
    n++;
  }
  return n;
}

/* Skips every remaining candidate of the current host (its other
 * addresses) with last_err/last_status set, and moves on. */
static void skip_host(struct delivery *d, const char *status) {
  const char *host = d->cands[d->cand].host;
  while (d->cand + 1 < d->ncands &&
         strcmp(d->cands[d->cand + 1].host, host) == 0)
    d->cand++;
  snprintf(d->last_status, sizeof d->last_status, "%s", status);
  d->next = NEXT_HOST;
  session_next(d);
}

/* Decides the current candidate from d->tlsa (for its host).  Returns as
 * dane_before_connect. */
static int decide(struct delivery *d) {
  const char *host = d->cands[d->cand].host;
  int usable = d->tlsa && d->tlsa->secure && d->tlsa->status == DNS_R_OK
                   ? count_usable(d->tlsa)
                   : 0;
  if (usable > 0) {
    d->dane = 1;
    return 0;
  }
  if (d->ob->cfg->outbound_tls == CONFIG_OUTBOUND_TLS_DANE_ONLY) {
    snprintf(d->last_err, sizeof d->last_err,
             "DANE: no usable DNSSEC-secure TLSA records for %s "
             "(outbound_tls = dane-only)",
             host);
    skip_host(d, "4.7.5");
    return 1;
  }
  return 0; /* opportunistic */
}

static void on_tlsa(struct resolver_query *q, const struct dns_rrset *rs,
                    int canceled, void *data);

/* Starts the TLSA lookup of _PORT._tcp.base.  0, or -1 (out of memory,
 * last_err set). */
static int tlsa_ask(struct delivery *d, const char *base) {
  snprintf(d->tlsa_asked, sizeof d->tlsa_asked, "%s", base);
  d->q = resolver_lookup_tlsa(d->ob->res, base, (uint16_t)d->ob->cfg->smtp_port,
                              on_tlsa, d);
  if (!d->q) {
    snprintf(d->last_err, sizeof d->last_err, "out of memory");
    return -1;
  }
  return 0;
}

static void on_tlsa(struct resolver_query *q, const struct dns_rrset *rs,
                    int canceled, void *data) {
  (void)q;
  struct delivery *d = data;
  d->q = NULL;
  if (canceled) {
    record_finish(d); /* shutdown: the recipients stay as they are */
    return;
  }
  if (d->ob->freeing || d->job->removed) {
    session_next(d); /* ends the delivery, as after any step */
    return;
  }
  const char *host = d->cands[d->cand].host;
  if (rs->status == DNS_R_TEMPFAIL) {
    /* RFC 7672 §2.2: a secure host whose TLSA lookup fails is not used
     * (a SERVFAIL is what a validating resolver says of a bogus answer). */
    snprintf(d->last_err, sizeof d->last_err,
             "DANE: TLSA lookup for _%u._tcp.%s failed: %s",
             (unsigned)d->ob->cfg->smtp_port, d->tlsa_asked, rs->reason);
    snprintf(d->tlsa_host, sizeof d->tlsa_host, "%s", "");
    skip_host(d, "4.7.5");
    return;
  }
  /* RFC 7672 §2.2.2: nothing secure at the CNAME-expanded name, so the
   * MX host name as it was given is asked next. */
  if (strcmp(d->tlsa_asked, host) != 0 &&
      !(rs->status == DNS_R_OK && rs->secure)) {
    if (tlsa_ask(d, host) < 0)
      skip_host(d, "4.3.0");
    return;
  }
  if (!d->tlsa)
    d->tlsa = malloc(sizeof *d->tlsa);
  if (!d->tlsa) {
    snprintf(d->last_err, sizeof d->last_err, "out of memory");
    skip_host(d, "4.3.0");
    return;
  }
  memcpy(d->tlsa, rs, sizeof *rs);
  snprintf(d->tlsa_host, sizeof d->tlsa_host, "%s", host);
  memcpy(d->tlsa_base, d->tlsa_asked, sizeof d->tlsa_base);
  if (decide(d))
    return;
  session_connect(d);
}

int dane_before_connect(struct delivery *d) {
  struct outbound *ob = d->ob;
  d->dane = 0;
  if (!dane_mode(ob) || d->relayhost)
    return 0;
  const struct mx_candidate *c = &d->cands[d->cand];
  /* RFC 7672 §2.2.1-2: DANE only for a secure MX RRset and secure address
   * records of the host; otherwise as opportunistic. */
  if (!d->mx_secure || !c->secure) {
    if (ob->cfg->outbound_tls == CONFIG_OUTBOUND_TLS_DANE_ONLY) {
      if (!d->mx_secure)
        snprintf(d->last_err, sizeof d->last_err,
                 "DANE: the MX lookup for %s is not DNSSEC-secure "
                 "(outbound_tls = dane-only)",
                 d->job->dest);
      else
        snprintf(d->last_err, sizeof d->last_err,
                 "DANE: the address lookup of %s is not DNSSEC-secure "
                 "(outbound_tls = dane-only)",
                 c->host);
      skip_host(d, "4.7.5");
      return 1;
    }
    return 0;
  }
  if (d->tlsa && strcmp(d->tlsa_host, c->host) == 0)
    return decide(d); /* another address of the same host */
  /* RFC 7672 §2.2.2: the TLSA base domain is the host's secure CNAME
   * expansion when it has TLSA records, else the name itself. */
  if (tlsa_ask(d, c->expanded[0] ? c->expanded : c->host) < 0)
    skip_host(d, "4.3.0");
  return 1;
}

int dane_setup_ssl(struct delivery *d, SSL *ssl, char *err, size_t errlen) {
  char why[160];
  const char *host = d->cands[d->cand].host;
  if (!ssl || !d->tlsa) {
    snprintf(err, errlen, "DANE: no TLS session");
    return -1;
  }
  /* The TLSA base domain is the reference identifier for DANE-TA name
   * checks and is sent as SNI; when it is the CNAME expansion of the MX
   * host name, that name is accepted too (RFC 7672 §3.2.2). */
  const char *base = d->tlsa_base[0] ? d->tlsa_base : host;
  if (SSL_dane_enable(ssl, base) <= 0 ||
      (strcmp(base, host) != 0 && SSL_add1_host(ssl, host) != 1)) {
    snprintf(err, errlen, "DANE: cannot enable DANE for %s: %s", base,
             tls_last_error(why, sizeof why));
    return -1;
  }
  /* RFC 7672 §3.1.1: DANE-EE(3) binds the key to the service, so neither
   * its names nor its dates are checked. */
  SSL_dane_set_flags(ssl, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
  int added = 0;
  for (int i = 0; i < d->tlsa->n; i++) {
    struct tlsa_rec r;
    if (tlsa_parse(d->tlsa->rr[i].rdata, d->tlsa->rr[i].rdlen, &r) !=
        TLSA_USABLE)
      continue;
    int rc =
        SSL_dane_tlsa_add(ssl, r.usage, r.selector, r.mtype, r.data, r.len);
    if (rc > 0)
      added++;
    /* 0: unusable to OpenSSL; < 0: malformed data: both unusable. */
  }
  ERR_clear_error();
  if (added == 0) {
    snprintf(err, errlen, "DANE: no TLSA record of %s usable by OpenSSL", host);
    return -1;
  }
  return added;
}

const char *dane_conn_policy(const struct conn *c) {
  SSL *ssl = c ? conn_ssl(c) : NULL;
  const struct conn_tls_info *ti = c ? conn_tls(c) : NULL;
  /* -1 unless DANE was enabled on ssl and a TLSA record authenticated
   * the peer. */
  if (ssl && ti && ti->ok && SSL_get0_dane_authority(ssl, NULL, NULL) >= 0)
    return "dane";
  return "none";
}
