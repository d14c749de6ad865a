/*
 * resolver_lookup: the lookups the delivery engine asks for (see
 * resolver.h for the contract, resolver_internal.h for the parts).
 *
 * Owns the lookups (struct resolver_query) until their callbacks return.
 * A lookup is composed of questions (struct sub): the MX, then each MX
 * host's AAAA and A (or the domain's own, implicit MX); a host's AAAA and
 * A; one TXT; one TLSA.  CNAME chains are followed here, up to
 * DNS_CNAME_MAX links, with their AD bits.  The transport
 * (resolver_transport.c) answers the questions.
 *
 * Never calls a user callback from inside an internal step: lookups start
 * and results are delivered from one idle handle (on_idle), one at a
 * time, so the internal lists are never changed under our feet.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dns/idna.h"
#include "dns/resolver_internal.h"

static void kick(struct resolver *r);

/* ---- lists ------------------------------------------------------------ */

static void q_list_remove(struct qlist *l, struct resolver_query *q) {
  if (q->prev)
    q->prev->next = q->next;
  else
    l->head = q->next;
  if (q->next)
    q->next->prev = q->prev;
  else
    l->tail = q->prev;
  q->prev = q->next = NULL;
}

static void q_list_push(struct qlist *l, struct resolver_query *q) {
  q->next = NULL;
  q->prev = l->tail;
  if (l->tail)
    l->tail->next = q;
  else
    l->head = q;
  l->tail = q;
}

static struct qlist *q_list_of(struct resolver_query *q) {
  switch (q->state) {
  case Q_STARTING:
    return &q->r->starting;
  case Q_ACTIVE:
    return &q->r->active;
  case Q_DONE:
    return &q->r->done;
  }
  abort();
}

/* ---- lookups ---------------------------------------------------------- */

static void q_complete(struct resolver_query *q) {
  struct resolver *r = q->r;
  q_list_remove(&r->active, q);
  q->state = Q_DONE;
  q_list_push(&r->done, q);
  kick(r);
}

static void q_build(struct resolver_query *q) {
  mx_build(q->domain, q->hosts, q->n_hosts, q->port, q->r->self, q->r->n_self,
           q->r->max_addrs, &q->res);
  q->res.mx_secure = q->kind == Q_MX && q->mx_secure;
  q_complete(q);
}

static void q_add_sub(struct resolver_query *q, int host, const char *name,
                      uint16_t type) {
  struct sub *s = &q->subs[q->n_subs++];
  memset(s, 0, sizeof *s);
  s->q = q;
  s->host = host;
  s->type = type;
  snprintf(s->name, sizeof s->name, "%s", name);
  q->pending++;
}

/* Starts the address lookups of every host that is not an IP literal. */
static void q_resolve_hosts(struct resolver_query *q) {
  int first = q->n_subs;
  for (int h = 0; h < q->n_hosts; h++) {
    struct mx_addr ip;
    if (mx_parse_ip(q->hosts[h].name, &ip)) {
      q->hosts[h].addr[0] = ip;
      q->hosts[h].n_addr = 1;
      q->hosts[h].addr_status = DNS_R_OK;
      continue;
    }
    q->hosts[h].addr_status = DNS_R_NXDOMAIN;
    q->hosts[h].secure = 1; /* until an answer without AD */
    q_add_sub(q, h, q->hosts[h].name, DNS_TYPE_AAAA);
    q_add_sub(q, h, q->hosts[h].name, DNS_TYPE_A);
  }
  if (q->pending == 0) {
    q_build(q);
    return;
  }
  /* Count first, start after: a cached answer completes a sub at once. */
  int last = q->n_subs;
  for (int i = first; i < last; i++)
    if (q->state == Q_ACTIVE)
      rsv_sub_start(&q->subs[i]);
}

static void q_on_mx(struct resolver_query *q, const struct dns_rrset *rs,
                    int secure) {
  q->mx_secure = secure;
  switch (rs->status) {
  case DNS_R_OK:
    q->n_hosts =
        mx_order(q->domain, rs->rr, rs->n, rsv_rnd32, q->r, q->hosts, &q->res);
    if (q->n_hosts == 0) {
      q_complete(q);
      return;
    }
    q_resolve_hosts(q);
    return;
  case DNS_R_NODATA:
    /* RFC 5321 §5.1: no MX, the domain itself is the host (implicit MX). */
    q->res.implicit = 1;
    q->n_hosts = 1;
    memset(&q->hosts[0], 0, sizeof q->hosts[0]);
    snprintf(q->hosts[0].name, sizeof q->hosts[0].name, "%s", q->ascii);
    q_resolve_hosts(q);
    return;
  case DNS_R_NXDOMAIN:
    mx_result_fail(&q->res, DNS_PERMFAIL, "5.1.2",
                   "Host or domain name not found. Name service error for "
                   "name=%s type=MX: Host not found",
                   q->ascii);
    q_complete(q);
    return;
  case DNS_R_CNAME: /* handled in rsv_sub_on_rrset */
  case DNS_R_TEMPFAIL:
    break;
  }
  mx_result_fail(&q->res, DNS_TEMPFAIL, "4.4.3",
                 "Name service error for name=%s type=MX: %s", q->ascii,
                 rs->reason[0] ? rs->reason : "temporary failure");
  q_complete(q);
}

static void q_on_addr(struct resolver_query *q, struct sub *s,
                      const struct dns_rrset *rs, int secure) {
  struct mx_host *h = &q->hosts[s->host];
  /* RFC 7672 §2.2.2: the addresses we use (and the denial of the other
   * family) must all be secure; a failed family gives no address. */
  if (rs->status != DNS_R_TEMPFAIL && !secure)
    h->secure = 0;
  const char *tname = s->type == DNS_TYPE_A ? "A" : "AAAA";
  char tmp[sizeof h->err];
  if (rs->status == DNS_R_OK) {
    /* Where a CNAME chain led (across queries: s->name; inside the last
     * answer: rs->cname), for the TLSA base domain (RFC 7672 §2.2.2). */
    char end[DNS_NAME_MAX + 2];
    if (secure && !h->expanded[0] &&
        dns_name_normalize(rs->cname[0] ? rs->cname : s->name, end,
                           sizeof end) == 0 &&
        strcasecmp(end, h->name) != 0)
      memcpy(h->expanded, end, sizeof end);
    int fam = s->type == DNS_TYPE_A ? AF_INET : AF_INET6;
    int len = s->type == DNS_TYPE_A ? 4 : 16;
    int added = 0;
    for (int i = 0; i < rs->n && added < MX_HOST_MAX_ADDR / 2 &&
                    h->n_addr < MX_HOST_MAX_ADDR;
         i++) {
      if (rs->rr[i].type != s->type)
        continue;
      struct mx_addr *a = &h->addr[h->n_addr++];
      memset(a, 0, sizeof *a);
      a->family = fam;
      memcpy(a->a, rs->rr[i].addr, (size_t)len);
      added++;
    }
    h->addr_status = DNS_R_OK;
  } else if (h->n_addr == 0) {
    /* The worst failure wins: a temporary one means "try later". */
    if (rs->status == DNS_R_TEMPFAIL) {
      h->addr_status = DNS_R_TEMPFAIL;
      snprintf(tmp, sizeof tmp, "%s type=%s: %.120s", s->name, tname,
               rs->reason);
      memcpy(h->err, tmp, sizeof h->err);
    } else if (h->addr_status != DNS_R_TEMPFAIL) {
      h->addr_status = rs->status;
      snprintf(tmp, sizeof tmp, "%s type=%s: %s", s->name, tname,
               rs->status == DNS_R_NXDOMAIN ? "Host not found"
                                            : "No address associated");
      memcpy(h->err, tmp, sizeof h->err);
    }
  }
  if (--q->pending == 0)
    q_build(q);
}

/* The TXT answer (resolver_lookup_txt). */
static void q_on_txt(struct resolver_query *q, const struct dns_rrset *rs) {
  struct resolver_txt *t = q->txt;
  switch (rs->status) {
  case DNS_R_OK:
    t->status = DNS_OK;
    for (int i = 0; i < rs->n && t->n < RESOLVER_TXT_MAX; i++)
      if (rs->rr[i].type == DNS_TYPE_TXT)
        memcpy(t->txt[t->n++], rs->rr[i].rdata, sizeof t->txt[0]);
    break;
  case DNS_R_NXDOMAIN:
    t->nxdomain = 1;
    /* fall through */
  case DNS_R_NODATA:
    t->status = DNS_OK;
    break;
  case DNS_R_CNAME:
  case DNS_R_TEMPFAIL:
    t->status = DNS_TEMPFAIL;
    snprintf(t->reason, sizeof t->reason,
             "Name service error for name=%s type=TXT: %s", q->ascii,
             rs->reason[0] ? rs->reason : "temporary failure");
    break;
  }
  q_complete(q);
}

/* The TLSA answer: kept for the callback (RFC 7672 §2.2.3). */
static void q_on_tlsa(struct resolver_query *q, const struct dns_rrset *rs,
                      int secure) {
  q->tlsa = malloc(sizeof *q->tlsa);
  if (q->tlsa) {
    memcpy(q->tlsa, rs, sizeof *rs);
    q->tlsa->secure = secure;
  }
  q_complete(q);
}

void rsv_sub_on_rrset(struct sub *s, const struct dns_rrset *rs) {
  struct resolver_query *q = s->q;
  if (q->state != Q_ACTIVE)
    return;
  if (rs->status == DNS_R_CNAME) {
    if (++s->hops > DNS_CNAME_MAX) {
      struct dns_rrset fail = {.status = DNS_R_TEMPFAIL};
      snprintf(fail.reason, sizeof fail.reason, "CNAME chain too long");
      rsv_sub_on_rrset(s, &fail);
      return;
    }
    if (!rs->secure)
      s->insecure = 1;
    if (dns_name_normalize(rs->cname, s->name, sizeof s->name) != 0) {
      struct dns_rrset fail = {.status = DNS_R_TEMPFAIL};
      snprintf(fail.reason, sizeof fail.reason, "bad CNAME target");
      rsv_sub_on_rrset(s, &fail);
      return;
    }
    rsv_sub_start(s);
    return;
  }
  if (rs->status != DNS_R_TEMPFAIL && !rs->secure)
    s->insecure = 1;
  int secure = !s->insecure && rs->status != DNS_R_TEMPFAIL;
  if (s->host == SUB_TXT) {
    q->pending--;
    q_on_txt(q, rs);
    return;
  }
  if (s->host == SUB_TLSA) {
    q->pending--;
    q_on_tlsa(q, rs, secure);
  } else if (s->host < 0) {
    q->pending--;
    q_on_mx(q, rs, secure);
  } else {
    q_on_addr(q, s, rs, secure);
  }
}

/* Begins a lookup that was queued by resolver_lookup_*(). */
static void q_begin(struct resolver_query *q) {
  struct resolver *r = q->r;
  q_list_remove(&r->starting, q);
  q->state = Q_ACTIVE;
  q_list_push(&r->active, q);

  if (q->kind == Q_TXT) {
    if (idna_to_ascii(q->domain, q->ascii, sizeof q->ascii) != 0) {
      q->txt->status = DNS_OK; /* no such name: no records */
      q->txt->nxdomain = 1;
      q_complete(q);
      return;
    }
    q_add_sub(q, SUB_TXT, q->ascii, DNS_TYPE_TXT);
    rsv_sub_start(&q->subs[0]);
    return;
  }
  /* An IP literal is its own address: no query at all. */
  struct mx_addr ip;
  size_t dl = strlen(q->domain);
  int bracketed = dl > 1 && q->domain[0] == '[' && q->domain[dl - 1] == ']';
  if (q->kind != Q_TLSA && (bracketed || q->kind == Q_HOST) &&
      mx_parse_ip(q->domain, &ip)) {
    q->n_hosts = 1;
    memset(&q->hosts[0], 0, sizeof q->hosts[0]);
    snprintf(q->hosts[0].name, sizeof q->hosts[0].name, "%s", q->domain);
    q->hosts[0].addr[0] = ip;
    q->hosts[0].n_addr = 1;
    q->hosts[0].addr_status = DNS_R_OK;
    q_build(q);
    return;
  }
  const char *name = q->domain;
  char inner[DNS_NAME_MAX + 2];
  if (bracketed) {
    /* "[host]" given to the MX lookup: strip the brackets, no MX. */
    snprintf(inner, sizeof inner, "%.*s", (int)(dl - 2), q->domain + 1);
    name = inner;
    q->kind = Q_HOST;
  }
  if (idna_to_ascii(name, q->ascii, sizeof q->ascii) != 0) {
    mx_result_fail(&q->res, DNS_PERMFAIL, "5.1.2", "Invalid domain name: %s",
                   q->domain);
    if (q->kind == Q_TLSA && (q->tlsa = calloc(1, sizeof *q->tlsa)))
      snprintf(q->tlsa->reason, sizeof q->tlsa->reason,
               "invalid TLSA name %.200s", q->domain);
    q_complete(q);
    return;
  }
  if (q->kind == Q_TLSA) {
    q_add_sub(q, SUB_TLSA, q->ascii, DNS_TYPE_TLSA);
    rsv_sub_start(&q->subs[0]);
    return;
  }
  if (q->kind == Q_HOST) {
    q->n_hosts = 1;
    memset(&q->hosts[0], 0, sizeof q->hosts[0]);
    snprintf(q->hosts[0].name, sizeof q->hosts[0].name, "%s", q->ascii);
    q_resolve_hosts(q);
    return;
  }
  q_add_sub(q, SUB_MX, q->ascii, DNS_TYPE_MX);
  rsv_sub_start(&q->subs[0]);
}

/* Calls q's callback with its result (or the cancellation). */
static void deliver(struct resolver_query *q, int canceled) {
  if (q->kind == Q_TXT) {
    if (canceled) {
      memset(q->txt, 0, sizeof *q->txt);
      q->txt->status = DNS_CANCELED;
      snprintf(q->txt->reason, sizeof q->txt->reason, "lookup canceled");
    }
    q->xcb(q, q->txt, q->data);
    return;
  }
  if (q->kind != Q_TLSA) {
    q->cb(q, &q->res, q->data);
    return;
  }
  static const struct dns_rrset oom = {.status = DNS_R_TEMPFAIL,
                                       .reason = "out of memory"};
  static const struct dns_rrset cancel = {.status = DNS_R_TEMPFAIL,
                                          .reason = "lookup canceled"};
  q->tcb(q, canceled ? &cancel : q->tlsa ? q->tlsa : &oom, canceled, q->data);
}

/* Runs queued starts and finished callbacks, one at a time, from the loop. */
static void on_idle(uv_idle_t *h) {
  struct resolver *r = h->data;
  while (!r->free_requested && (r->starting.head || r->done.head)) {
    if (r->starting.head) {
      q_begin(r->starting.head);
      continue;
    }
    struct resolver_query *q = r->done.head;
    q_list_remove(&r->done, q);
    r->in_cb++;
    deliver(q, 0);
    r->in_cb--;
    free(q->tlsa);
    free(q->txt);
    free(q);
  }
  if (r->free_requested) {
    resolver_free(r);
    return;
  }
  uv_idle_stop(&r->idle);
  r->idle_on = 0;
}

static void kick(struct resolver *r) {
  if (!r->idle_on && !r->closing) {
    uv_idle_start(&r->idle, on_idle);
    r->idle_on = 1;
  }
}

static struct resolver_query *q_new(struct resolver *r, enum q_kind kind,
                                    const char *domain, uint16_t port,
                                    resolver_cb cb, void *data) {
  if (r->closing || r->free_requested)
    return NULL;
  struct resolver_query *q = calloc(1, sizeof *q);
  if (!q)
    return NULL;
  q->r = r;
  q->kind = kind;
  q->port = port;
  q->cb = cb;
  q->data = data;
  snprintf(q->domain, sizeof q->domain, "%s", domain);
  if (strlen(domain) >= sizeof q->domain)
    q->domain[0] = '\0'; /* too long: fails as an invalid name */
  q->state = Q_STARTING;
  q_list_push(&r->starting, q);
  kick(r);
  return q;
}

struct resolver_query *resolver_lookup_mx(struct resolver *r,
                                          const char *domain, uint16_t port,
                                          resolver_cb cb, void *data) {
  return q_new(r, Q_MX, domain, port, cb, data);
}

struct resolver_query *resolver_lookup_host(struct resolver *r,
                                            const char *host, uint16_t port,
                                            resolver_cb cb, void *data) {
  return q_new(r, Q_HOST, host, port, cb, data);
}

struct resolver_query *resolver_lookup_txt(struct resolver *r, const char *name,
                                           resolver_txt_cb cb, void *data) {
  struct resolver_txt *t = calloc(1, sizeof *t);
  if (!t)
    return NULL;
  struct resolver_query *q = q_new(r, Q_TXT, name, 0, NULL, data);
  if (!q) {
    free(t);
    return NULL;
  }
  q->xcb = cb;
  q->txt = t;
  return q;
}

struct resolver_query *resolver_lookup_tlsa(struct resolver *r,
                                            const char *host, uint16_t port,
                                            resolver_tlsa_cb cb, void *data) {
  char name[DNS_NAME_MAX + 2];
  int n = snprintf(name, sizeof name, "_%u._tcp.%s", (unsigned)port, host);
  if (n < 0 || (size_t)n >= sizeof name)
    name[0] = '\0'; /* fails as an invalid name */
  struct resolver_query *q = q_new(r, Q_TLSA, name, port, NULL, data);
  if (q)
    q->tcb = cb;
  return q;
}

/* Drops every question q waits on and takes it off its list. */
static void q_detach(struct resolver_query *q) {
  for (int i = 0; i < q->n_subs; i++)
    rsv_sub_unwait(&q->subs[i]);
  q_list_remove(q_list_of(q), q);
}

void resolver_cancel(struct resolver_query *q) {
  struct resolver *r = q->r;
  q_detach(q);
  r->in_cb++;
  if (q->kind == Q_TLSA || q->kind == Q_TXT) {
    deliver(q, 1);
  } else {
    struct mx_result res;
    memset(&res, 0, sizeof res);
    mx_result_fail(&res, DNS_CANCELED, "4.3.0", "lookup canceled");
    q->cb(q, &res, q->data);
  }
  r->in_cb--;
  free(q->tlsa);
  free(q->txt);
  free(q);
}
