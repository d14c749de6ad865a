/*
 * mx: MX ordering and candidate selection (pure; see mx.h).
 *
 * Owns nothing: every array is the caller's.  Must never do I/O or read a
 * clock or a global random source, so that every rule is unit-testable.
 */
#include "dns/mx.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *dns_status_name(enum dns_status s) {
  switch (s) {
  case DNS_OK:
    return "ok";
  case DNS_PERMFAIL:
    return "permfail";
  case DNS_TEMPFAIL:
    return "tempfail";
  case DNS_CANCELED:
    return "canceled";
  }
  return "?";
}

void mx_result_fail(struct mx_result *r, enum dns_status st, const char *dsn,
                    const char *fmt, ...) {
  r->status = st;
  r->n = 0;
  snprintf(r->dsn, sizeof r->dsn, "%s", dsn);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->reason, sizeof r->reason, fmt, ap);
  va_end(ap);
}

int mx_parse_ip(const char *name, struct mx_addr *a) {
  char buf[64];
  size_t n = strlen(name);
  if (n >= 2 && name[0] == '[' && name[n - 1] == ']') {
    name++;
    n -= 2;
  }
  if (n == 0 || n >= sizeof buf)
    return 0;
  memcpy(buf, name, n);
  buf[n] = '\0';
  memset(a, 0, sizeof *a);
  if (inet_pton(AF_INET, buf, a->a) == 1) {
    a->family = AF_INET;
    return 1;
  }
  const char *v6 = buf;
  if (strncasecmp(buf, "ipv6:", 5) == 0) /* RFC 5321 address literal */
    v6 = buf + 5;
  if (inet_pton(AF_INET6, v6, a->a) == 1) {
    a->family = AF_INET6;
    return 1;
  }
  return 0;
}

int mx_order(const char *domain, const struct dns_rr *rrs, int n,
             mx_random_fn rnd, void *ctx, struct mx_host *hosts,
             struct mx_result *r) {
  int nh = 0, nulls = 0, bad = 0;
  for (int i = 0; i < n; i++) {
    if (strcmp(rrs[i].name, ".") == 0 || rrs[i].name[0] == '\0') {
      nulls++;
      continue;
    }
    char name[DNS_NAME_MAX + 2];
    struct mx_addr ip;
    if (mx_parse_ip(rrs[i].name, &ip)) {
      snprintf(name, sizeof name, "%s", rrs[i].name);
    } else if (dns_name_normalize(rrs[i].name, name, sizeof name) != 0) {
      bad++;
      continue;
    }
    /* Duplicates: keep the best preference. */
    int dup = -1;
    for (int j = 0; j < nh; j++)
      if (strcmp(hosts[j].name, name) == 0)
        dup = j;
    if (dup >= 0) {
      if (rrs[i].pref < hosts[dup].pref)
        hosts[dup].pref = rrs[i].pref;
      continue;
    }
    if (nh == MX_MAX_HOSTS) {
      /* Keep the best MX_MAX_HOSTS: replace the worst if this is better. */
      int worst = 0;
      for (int j = 1; j < nh; j++)
        if (hosts[j].pref > hosts[worst].pref)
          worst = j;
      if (rrs[i].pref >= hosts[worst].pref)
        continue;
      memset(&hosts[worst], 0, sizeof hosts[worst]);
      snprintf(hosts[worst].name, sizeof hosts[worst].name, "%s", name);
      hosts[worst].pref = rrs[i].pref;
      continue;
    }
    memset(&hosts[nh], 0, sizeof hosts[nh]);
    snprintf(hosts[nh].name, sizeof hosts[nh].name, "%s", name);
    hosts[nh].pref = rrs[i].pref;
    nh++;
  }
  if (nh == 0) {
    if (nulls > 0 && bad == 0)
      mx_result_fail(r, DNS_PERMFAIL, "5.1.10",
                     "Domain %s does not accept mail (null MX)", domain);
    else
      mx_result_fail(r, DNS_PERMFAIL, "5.4.4",
                     "Domain %s has no valid MX host name", domain);
    return 0;
  }
  /* Insertion sort by preference (n is small), then shuffle each run of
   * equal preferences so that load spreads (RFC 5321 §5.1). */
  for (int i = 1; i < nh; i++) {
    struct mx_host t = hosts[i];
    int j = i - 1;
    while (j >= 0 && hosts[j].pref > t.pref) {
      hosts[j + 1] = hosts[j];
      j--;
    }
    hosts[j + 1] = t;
  }
  for (int s = 0; s < nh;) {
    int e = s + 1;
    while (e < nh && hosts[e].pref == hosts[s].pref)
      e++;
    for (int i = e - 1; i > s; i--) {
      int k = s + (int)(rnd(ctx) % (uint32_t)(i - s + 1));
      if (k != i) {
        struct mx_host t = hosts[i];
        hosts[i] = hosts[k];
        hosts[k] = t;
      }
    }
    s = e;
  }
  return nh;
}

static void to_sockaddr(const struct mx_addr *a, uint16_t port,
                        struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof *ss);
  if (a->family == AF_INET) {
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    s4->sin_family = AF_INET;
    s4->sin_port = htons(port);
    memcpy(&s4->sin_addr, a->a, 4);
  } else {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(port);
    memcpy(&s6->sin6_addr, a->a, 16);
  }
}

static int is_self(const struct mx_addr *a, uint16_t port,
                   const struct sockaddr_storage *self, int n_self) {
  for (int i = 0; i < n_self; i++) {
    if (self[i].ss_family != a->family)
      continue;
    if (a->family == AF_INET) {
      const struct sockaddr_in *s4 = (const struct sockaddr_in *)&self[i];
      if (ntohs(s4->sin_port) == port && memcmp(&s4->sin_addr, a->a, 4) == 0)
        return 1;
    } else {
      const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&self[i];
      if (ntohs(s6->sin6_port) == port && memcmp(&s6->sin6_addr, a->a, 16) == 0)
        return 1;
    }
  }
  return 0;
}

void mx_build(const char *domain, const struct mx_host *hosts, int n,
              uint16_t port, const struct sockaddr_storage *self, int n_self,
              int max_addrs, struct mx_result *r) {
  if (max_addrs <= 0 || max_addrs > MX_MAX_CANDIDATES)
    max_addrs = MX_MAX_CANDIDATES;
  r->n = 0;
  r->loop = 0;

  /* Loop detection first, over all hosts: find our own preference. */
  int limit = n;
  for (int h = 0; h < n && limit == n; h++)
    for (int i = 0; i < hosts[h].n_addr; i++)
      if (is_self(&hosts[h].addr[i], port, self, n_self)) {
        limit = h;
        while (limit > 0 && hosts[limit - 1].pref == hosts[h].pref)
          limit--;
        break;
      }
  if (limit == 0) {
    mx_result_fail(r, DNS_PERMFAIL, "5.4.6",
                   "mail for %s loops back to myself (%s)", domain,
                   hosts[0].name);
    r->loop = 1;
    return;
  }

  int temp = 0;
  const char *err = NULL;
  for (int h = 0; h < limit; h++) {
    if (hosts[h].n_addr == 0) {
      if (hosts[h].addr_status == DNS_R_TEMPFAIL)
        temp = 1;
      if (!err)
        err = hosts[h].err[0] ? hosts[h].err : hosts[h].name;
      continue;
    }
    for (int fam = 0; fam < 2; fam++) {
      int want = fam == 0 ? AF_INET6 : AF_INET;
      for (int i = 0; i < hosts[h].n_addr && r->n < max_addrs; i++) {
        if (hosts[h].addr[i].family != want)
          continue;
        struct mx_candidate *c = &r->c[r->n++];
        snprintf(c->host, sizeof c->host, "%s", hosts[h].name);
        c->pref = hosts[h].pref;
        c->secure = hosts[h].secure;
        snprintf(c->expanded, sizeof c->expanded, "%s",
                 c->secure ? hosts[h].expanded : "");
        to_sockaddr(&hosts[h].addr[i], port, &c->addr);
      }
    }
  }
  if (r->n > 0) {
    r->status = DNS_OK;
    r->dsn[0] = '\0';
    r->reason[0] = '\0';
    return;
  }
  if (temp)
    mx_result_fail(r, DNS_TEMPFAIL, "4.4.3",
                   "cannot resolve the mail hosts of %s: %s", domain,
                   err ? err : "");
  else
    mx_result_fail(r, DNS_PERMFAIL, "5.4.4",
                   "Host or domain name not found: no address for the mail "
                   "hosts of %s (%s)",
                   domain, err ? err : "");
}

void mx_candidate_format(const struct mx_candidate *c, char *out, size_t cap) {
  char ip[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (c->addr.ss_family == AF_INET) {
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)&c->addr;
    inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
    port = ntohs(s4->sin_port);
  } else if (c->addr.ss_family == AF_INET6) {
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&c->addr;
    inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
    port = ntohs(s6->sin6_port);
  }
  snprintf(out, cap, "%s[%s]:%u", c->host, ip, (unsigned)port);
}
