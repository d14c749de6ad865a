/*
 * config/values.c: the value of each key type.  Parsers turn a key's text
 * into its field (lists item by item), printers write the field back as
 * text (secrets as <set>); config_parse_rate and config_cidr_match are the
 * parts other modules use too.  Pure.
 */
#include "config.h"
#include "config/internal.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/rate.h"
#include "proto/text.h"
#include "proto/smtp_parse.h"

static const char *const relayhost_auth_names[] = {"auto", "plain", "login",
                                                   "xoauth2"};

/* ---- value parsers (pure) ------------------------------------------- */

void cfg_trim(const char **s, size_t *n) {
  while (*n && isspace((unsigned char)**s))
    (*s)++, (*n)--;
  while (*n && isspace((unsigned char)(*s)[*n - 1]))
    (*n)--;
}

/*
 * Splits a comma-separated list; calls fn for each trimmed non-empty item.
 * An empty item between commas is an error.
 */
typedef int (*item_fn)(struct config *cfg, const struct key *k, int idx,
                       const char *item, char *err);

static int each_item(struct config *cfg, const struct key *k, const char *v,
                     int max, item_fn fn, char *err) {
  int idx = 0;
  const char *p = v;
  size_t total = strlen(v);
  const char *t = v;
  size_t tn = total;
  cfg_trim(&t, &tn);
  if (tn == 0)
    return 0;
  for (;;) {
    const char *comma = strchr(p, ',');
    size_t n = comma ? (size_t)(comma - p) : strlen(p);
    const char *s = p;
    cfg_trim(&s, &n);
    if (n == 0)
      return ERR("empty item in list");
    if (idx >= max)
      return ERR("too many items (at most %d)", max);
    char item[4096];
    if (n >= sizeof item)
      return ERR("item too long");
    memcpy(item, s, n);
    item[n] = '\0';
    if (fn(cfg, k, idx, item, err) < 0)
      return -1;
    idx++;
    if (!comma)
      break;
    p = comma + 1;
  }
  return idx;
}

static int parse_u64(const char *s, uint64_t *out) {
  if (!isdigit((unsigned char)*s))
    return -1;
  uint64_t v = 0;
  for (; isdigit((unsigned char)*s); s++) {
    unsigned d = (unsigned)(*s - '0');
    if (v > (UINT64_MAX - d) / 10)
      return -1;
    v = v * 10 + d;
  }
  if (*s)
    return -1;
  *out = v;
  return 0;
}

/* "300ms", "90s", "5m", "2h", "5d"; a bare number means seconds.  Result
 * in ms (the one grammar of proto/rate). */
static int parse_duration(const char *s, uint64_t *ms) {
  return duration_parse_ms(s, strlen(s), ms);
}

_Static_assert(CONFIG_RATE_MAX == RATE_MAX_N, "one rate limit everywhere");

int config_parse_rate(const char *s, struct config_rate *out,
                      char err[CONFIG_ERR_MAX]) {
  uint64_t n, ms;
  if (rate_parse(s, &n, &ms, err, CONFIG_ERR_MAX) < 0)
    return -1;
  out->n = (unsigned)n;
  out->window_ms = ms;
  return 0;
}

/* bytes, or k (1024) / m (1048576) suffix; case-insensitive. */
static int parse_size(const char *s, uint64_t *out) {
  char num[32];
  size_t n = strlen(s);
  if (n == 0 || n >= sizeof num)
    return -1;
  memcpy(num, s, n + 1);
  uint64_t mult = 1;
  char last = (char)tolower((unsigned char)num[n - 1]);
  if (last == 'k')
    mult = 1024, num[n - 1] = '\0';
  else if (last == 'm')
    mult = 1048576, num[n - 1] = '\0';
  else if (last == 'g')
    mult = 1073741824ULL, num[n - 1] = '\0';
  uint64_t v;
  if (parse_u64(num, &v) < 0 || v > UINT64_MAX / mult / 4)
    return -1;
  *out = v * mult;
  return 0;
}

static int parse_port(const char *s, uint16_t *port) {
  uint64_t v;
  if (parse_u64(s, &v) < 0 || v == 0 || v > 65535)
    return -1;
  *port = (uint16_t)v;
  return 0;
}

/* An IP literal (no brackets) into sa; port set separately. */
static int parse_ip(const char *s, struct sockaddr_storage *sa) {
  memset(sa, 0, sizeof *sa);
  struct sockaddr_in *in4 = (struct sockaddr_in *)sa;
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa;
  if (inet_pton(AF_INET, s, &in4->sin_addr) == 1) {
    in4->sin_family = AF_INET;
    return 0;
  }
  if (inet_pton(AF_INET6, s, &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    return 0;
  }
  return -1;
}

static void set_port(struct sockaddr_storage *sa, uint16_t port) {
  if (sa->ss_family == AF_INET)
    ((struct sockaddr_in *)sa)->sin_port = htons(port);
  else
    ((struct sockaddr_in6 *)sa)->sin6_port = htons(port);
}

static void addr_text(struct config_addr *a, uint16_t port) {
  char ip[INET6_ADDRSTRLEN];
  if (a->sa.ss_family == AF_INET) {
    inet_ntop(AF_INET, &((struct sockaddr_in *)&a->sa)->sin_addr, ip,
              sizeof ip);
    snprintf(a->text, sizeof a->text, "%s:%u", ip, port);
  } else {
    inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&a->sa)->sin6_addr, ip,
              sizeof ip);
    snprintf(a->text, sizeof a->text, "[%s]:%u", ip, port);
  }
}

/*
 * "ip:port", "[v6]:port"; when default_port is non-zero the port may be
 * left out ("ip", "[v6]", or a bare v6 literal).
 */
static int parse_addr(const char *s, uint16_t default_port,
                      struct config_addr *a, char *err) {
  char host[128];
  const char *port_s = NULL;
  if (s[0] == '[') {
    const char *end = strchr(s, ']');
    if (!end || (size_t)(end - s - 1) >= sizeof host)
      return ERR("'%s': missing ']'", s);
    memcpy(host, s + 1, (size_t)(end - s - 1));
    host[end - s - 1] = '\0';
    if (end[1] == ':')
      port_s = end + 2;
    else if (end[1] != '\0')
      return ERR("'%s': expected ':' after ']'", s);
    if (parse_ip(host, &a->sa) < 0 || a->sa.ss_family != AF_INET6)
      return ERR("'%s': not an IPv6 address", s);
  } else {
    const char *colon = strchr(s, ':');
    if (colon && strchr(colon + 1, ':')) {
      /* A bare IPv6 literal: only allowed without a port. */
      if (!default_port)
        return ERR("'%s': IPv6 addresses need brackets: [addr]:port", s);
      if (parse_ip(s, &a->sa) < 0)
        return ERR("'%s': not an IP address", s);
      set_port(&a->sa, default_port);
      addr_text(a, default_port);
      return 0;
    }
    size_t hn = colon ? (size_t)(colon - s) : strlen(s);
    if (hn >= sizeof host)
      return ERR("'%s': not an IP address", s);
    memcpy(host, s, hn);
    host[hn] = '\0';
    if (colon)
      port_s = colon + 1;
    if (parse_ip(host, &a->sa) < 0)
      return ERR("'%s': not an IP address (host names are not allowed here)",
                 s);
  }
  uint16_t port = default_port;
  if (port_s) {
    if (parse_port(port_s, &port) < 0)
      return ERR("'%s': bad port", s);
  } else if (!default_port) {
    return ERR("'%s': missing port (ip:port)", s);
  }
  set_port(&a->sa, port);
  addr_text(a, port);
  return 0;
}

static int item_addr(struct config *cfg, const struct key *k, int idx,
                     const char *item, char *err) {
  struct config_addr *arr = (struct config_addr *)((char *)cfg + k->off);
  return parse_addr(item, 0, &arr[idx], err);
}

static int item_dns(struct config *cfg, const struct key *k, int idx,
                    const char *item, char *err) {
  (void)k;
  return parse_addr(item, 53, &cfg->dns_servers[idx], err);
}

static int item_cidr(struct config *cfg, const struct key *k, int idx,
                     const char *item, char *err) {
  struct config_cidr *c = (struct config_cidr *)((char *)cfg + k->off) + idx;
  char ip[64];
  const char *slash = strchr(item, '/');
  size_t n = slash ? (size_t)(slash - item) : strlen(item);
  if (n >= sizeof ip)
    return ERR("'%s': not a CIDR block", item);
  memcpy(ip, item, n);
  ip[n] = '\0';
  struct sockaddr_storage sa;
  if (parse_ip(ip, &sa) < 0)
    return ERR("'%s': not a CIDR block (address/prefix)", item);
  c->family = sa.ss_family;
  int max = sa.ss_family == AF_INET ? 32 : 128;
  memset(c->addr, 0, sizeof c->addr);
  if (sa.ss_family == AF_INET)
    memcpy(c->addr, &((struct sockaddr_in *)&sa)->sin_addr, 4);
  else
    memcpy(c->addr, &((struct sockaddr_in6 *)&sa)->sin6_addr, 16);
  c->prefix = max;
  if (slash) {
    uint64_t p;
    if (parse_u64(slash + 1, &p) < 0 || p > (uint64_t)max)
      return ERR("'%s': bad prefix length", item);
    c->prefix = (int)p;
  }
  /* Clear the host bits so matching is a plain compare. */
  for (int bit = c->prefix; bit < max; bit++)
    c->addr[bit / 8] &= (uint8_t) ~(0x80 >> (bit % 8));
  return 0;
}

int cfg_valid_domain(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 253)
    return 0;
  for (const char *p = s; *p; p++) {
    unsigned char c = (unsigned char)*p;
    if (c <= ' ' || c == '@' || c == ',' || c == '<' || c == '>' || c == 0x7f)
      return 0;
  }
  return 1;
}

static int item_domain(struct config *cfg, const struct key *k, int idx,
                       const char *item, char *err) {
  (void)k;
  if (!cfg_valid_domain(item))
    return ERR("'%s': not a domain name", item);
  snprintf(cfg->allowed_sender_domains[idx],
           sizeof cfg->allowed_sender_domains[idx], "%s", item);
  return 0;
}

static int item_relayhost(struct config *cfg, const struct key *k, int idx,
                          const char *item, char *err) {
  (void)k;
  struct config_relayhost *r = &cfg->relayhost[idx];
  const char *port_s = NULL;
  const char *h = item;
  size_t hn;
  if (item[0] == '[') {
    const char *end = strchr(item, ']');
    if (!end)
      return ERR("'%s': missing ']'", item);
    h = item + 1;
    hn = (size_t)(end - h);
    if (end[1] == ':')
      port_s = end + 2;
    else if (end[1])
      return ERR("'%s': expected ':' after ']'", item);
    r->mx_lookup = 0;
  } else {
    const char *colon = strrchr(item, ':');
    if (colon && strchr(item, ':') != colon)
      return ERR("'%s': IPv6 addresses need brackets: [addr]:port", item);
    hn = colon ? (size_t)(colon - item) : strlen(item);
    if (colon)
      port_s = colon + 1;
    r->mx_lookup = 1;
  }
  if (hn == 0 || hn >= sizeof r->host)
    return ERR("'%s': bad host", item);
  memcpy(r->host, h, hn);
  r->host[hn] = '\0';
  if (!cfg_valid_domain(r->host))
    return ERR("'%s': bad host name", item);
  r->port = 25;
  if (port_s && parse_port(port_s, &r->port) < 0)
    return ERR("'%s': bad port", item);
  return 0;
}

static int item_schedule(struct config *cfg, const struct key *k, int idx,
                         const char *item, char *err) {
  (void)k;
  uint64_t ms;
  if (parse_duration(item, &ms) < 0 || ms == 0)
    return ERR("'%s': not a duration (e.g. 90s, 5m, 1h, 2d)", item);
  cfg->retry_schedule_ms[idx] = ms;
  return 0;
}

#define DKIM_NAME_CHARS                                                        \
  "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._"

/* DOMAIN:SELECTOR:KEYFILE; the key itself is read at start-up. */
static int item_dkim(struct config *cfg, const struct key *k, int idx,
                     const char *item, char *err) {
  (void)k;
  struct config_dkim *d = &cfg->dkim_sign[idx];
  const char *c1 = strchr(item, ':');
  const char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
  if (!c2)
    return ERR("'%s': expected DOMAIN:SELECTOR:KEYFILE", item);
  size_t dn = (size_t)(c1 - item), sn = (size_t)(c2 - c1 - 1);
  if (dn == 0 || dn >= sizeof d->domain || sn == 0 ||
      sn >= sizeof d->selector || !c2[1] || strlen(c2 + 1) >= sizeof d->keyfile)
    return ERR("'%s': expected DOMAIN:SELECTOR:KEYFILE", item);
  memcpy(d->domain, item, dn);
  d->domain[dn] = '\0';
  memcpy(d->selector, c1 + 1, sn);
  d->selector[sn] = '\0';
  snprintf(d->keyfile, sizeof d->keyfile, "%s", c2 + 1);
  /* d= and s= are DNS names in ASCII (RFC 6376 §3.5: A-labels). */
  if (!cfg_valid_domain(d->domain) || strspn(d->domain, DKIM_NAME_CHARS) != dn)
    return ERR("'%s': not a domain name (ASCII, A-labels)", d->domain);
  if (strspn(d->selector, DKIM_NAME_CHARS) != sn)
    return ERR("'%s': not a selector", d->selector);
  for (char *p = d->domain; *p; p++)
    *p = (char)tolower((unsigned char)*p);
  return 0;
}

/* The item parser of a list-valued key type. */
static item_fn list_item(enum key_type t) {
  switch (t) {
  case K_ADDRS:
    return item_addr;
  case K_DNS:
    return item_dns;
  case K_CIDRS:
    return item_cidr;
  case K_DOMAINS:
    return item_domain;
  case K_RELAYHOST:
    return item_relayhost;
  case K_SCHEDULE:
    return item_schedule;
  case K_DKIM:
    return item_dkim;
  default:
    abort(); /* only list types come here: our bug */
  }
}

/* Sets one key from its text.  err gets "key: message" on failure. */
int cfg_set_key(struct config *cfg, const struct key *k, const char *value,
                char *err) {
  char msg[CONFIG_ERR_MAX];
  const char *v = value;
  size_t vn = strlen(value);
  cfg_trim(&v, &vn);
  char val[4096];
  if (vn >= sizeof val)
    return ERR("%s: value too long", k->name);
  memcpy(val, v, vn);
  val[vn] = '\0';
  char *field = (char *)cfg + k->off;
  int n;
  uint64_t u;
  switch (k->type) {
  case K_ADDRS:
  case K_DNS:
  case K_CIDRS:
  case K_DOMAINS:
  case K_RELAYHOST:
  case K_SCHEDULE:
  case K_DKIM:
    /* Lists: each item parsed by its type's function; off2 is the count. */
    n = each_item(cfg, k, val, CONFIG_MAX_LIST, list_item(k->type), msg);
    if (n < 0)
      return ERR("%s: %s", k->name, msg);
    if (n == 0 && k->type == K_SCHEDULE)
      return ERR("%s: needs at least one duration", k->name);
    *(int *)((char *)cfg + k->off2) = n;
    return 0;
  case K_STRING:
  case K_SECRET:
  case K_PATH:
    if (vn >= k->off2)
      return ERR("%s: value too long (at most %zu bytes)", k->name,
                 k->off2 - 1);
    for (size_t i = 0; i < vn; i++)
      if ((unsigned char)val[i] < 0x20 || val[i] == 0x7f)
        return ERR("%s: control character in value", k->name);
    memcpy(field, val, vn + 1);
    return 0;
  case K_MAILBOX: {
    if (vn == 0) {
      *field = '\0';
      return 0;
    }
    /* As a RCPT TO path would be: a local part and a domain, no <>. */
    char path[SMTP_ADDR_MAX + 3];
    struct smtp_path sp;
    size_t end = 0;
    int n = snprintf(path, sizeof path, "<%s>", val);
    if (n < 0 || (size_t)n >= sizeof path || vn >= k->off2)
      return ERR("%s: address too long (at most %d bytes)", k->name,
                 SMTP_ADDR_MAX);
    if (smtp_parse_path(path, (size_t)n, SMTP_PATH_NEED_DOMAIN, &sp, &end) <
            0 ||
        end != (size_t)n || sp.len >= k->off2)
      return ERR("%s: '%s' is not an address (local@domain)", k->name, val);
    memcpy(field, sp.addr, sp.len + 1);
    return 0;
  }
  case K_BOOL:
    if (text_parse_bool(val, (int *)field) < 0)
      return ERR("%s: '%s' is not yes or no", k->name, val);
    return 0;
  case K_SIZE:
    if (parse_size(val, &u) < 0)
      return ERR("%s: '%s' is not a size (bytes, or with k or m: 25m)", k->name,
                 val);
    /* queue_minfree = 0 turns the free-space reserve off. */
    if (u == 0 && k->off != F(queue_minfree))
      return ERR("%s: must be greater than 0", k->name);
    *(uint64_t *)field = u;
    return 0;
  case K_INT:
    if (parse_u64(val, &u) < 0 || u > INT_MAX)
      return ERR("%s: '%s' is not a number", k->name, val);
    if (u == 0)
      return ERR("%s: must be greater than 0", k->name);
    *(int *)field = (int)u;
    return 0;
  case K_DURATION_OPT:
    if (vn == 0) {
      *(uint64_t *)field = 0;
      return 0;
    }
    /* fall through */
  case K_DURATION:
    if (parse_duration(val, &u) < 0)
      return ERR("%s: '%s' is not a duration (e.g. 90s, 5m, 1h, 2d)", k->name,
                 val);
    if (u == 0 && k->type != K_DURATION_OPT) /* optional: 0 is off */
      return ERR("%s: must be greater than 0", k->name);
    *(uint64_t *)field = u;
    return 0;
  case K_PORT:
    if (parse_port(val, (uint16_t *)field) < 0)
      return ERR("%s: '%s' is not a port (1-65535)", k->name, val);
    return 0;
  case K_USER: {
    if (vn == 0) {
      cfg->has_user = 0;
      return 0;
    }
    char *colon = strchr(val, ':');
    uint64_t uid, gid;
    if (!colon)
      return ERR("%s: '%s' is not numeric uid:gid", k->name, val);
    *colon = '\0';
    if (parse_u64(val, &uid) < 0 || parse_u64(colon + 1, &gid) < 0 ||
        uid > 0xfffffffeU || gid > 0xfffffffeU)
      return ERR("%s: '%s:%s' is not numeric uid:gid", k->name, val, colon + 1);
    cfg->has_user = 1;
    cfg->uid = (unsigned)uid;
    cfg->gid = (unsigned)gid;
    return 0;
  }
  case K_RELAYHOST_TLS: {
    static const char *const names[] = {"starttls", "implicit", "opportunistic",
                                        "none"};
    for (int i = 0; i < 4; i++)
      if (strcmp(val, names[i]) == 0)
        return cfg->relayhost_tls = (enum config_relayhost_tls)i, 0;
    return ERR("%s: '%s' is not one of starttls, implicit, opportunistic, "
               "none",
               k->name, val);
  }
  case K_RELAYHOST_AUTH: {
    for (int i = 0; i < 4; i++)
      if (strcmp(val, relayhost_auth_names[i]) == 0)
        return cfg->relayhost_auth = (enum config_relayhost_auth)i, 0;
    return ERR("%s: '%s' is not one of auto, plain, login, xoauth2", k->name,
               val);
  }
  case K_OUTBOUND_TLS: {
    static const char *const names[] = {"opportunistic", "required", "none",
                                        "dane", "dane-only"};
    for (int i = 0; i < 5; i++)
      if (strcmp(val, names[i]) == 0)
        return cfg->outbound_tls = (enum config_outbound_tls)i, 0;
    return ERR("%s: '%s' is not one of opportunistic, required, none, dane, "
               "dane-only",
               k->name, val);
  }
  case K_RATE: {
    struct config_rate r = {0, 0};
    if (vn && config_parse_rate(val, &r, msg) < 0)
      return ERR("%s: %s", k->name, msg);
    *(struct config_rate *)field = r;
    return 0;
  }
  case K_LOG_FORMAT:
    if (strcmp(val, "logfmt") == 0)
      return cfg->log_format = CONFIG_LOG_LOGFMT, 0;
    if (strcmp(val, "json") == 0)
      return cfg->log_format = CONFIG_LOG_JSON, 0;
    return ERR("%s: '%s' is not logfmt or json", k->name, val);
  case K_RECEIVED_HEADER:
    if (strcmp(val, "full") == 0)
      return cfg->received_header_redacted = 0, 0;
    if (strcmp(val, "redacted") == 0)
      return cfg->received_header_redacted = 1, 0;
    return ERR("%s: '%s' is not full or redacted", k->name, val);
  }
  return ERR("%s: internal error", k->name);
}

/* ---- printing ---------------------------------------------------------- */

static void fmt_duration(char *out, size_t cap, uint64_t ms) {
  if (ms % 1000)
    snprintf(out, cap, "%llums", (unsigned long long)ms);
  else if (ms % 60000 || ms == 0)
    snprintf(out, cap, "%llus", (unsigned long long)(ms / 1000));
  else if (ms % 3600000)
    snprintf(out, cap, "%llum", (unsigned long long)(ms / 60000));
  else if (ms % 86400000)
    snprintf(out, cap, "%lluh", (unsigned long long)(ms / 3600000));
  else
    snprintf(out, cap, "%llud", (unsigned long long)(ms / 86400000));
}

static void fmt_size(char *out, size_t cap, uint64_t v) {
  if (v && v % 1048576 == 0)
    snprintf(out, cap, "%llum", (unsigned long long)(v / 1048576));
  else if (v && v % 1024 == 0)
    snprintf(out, cap, "%lluk", (unsigned long long)(v / 1024));
  else
    snprintf(out, cap, "%llu", (unsigned long long)v);
}

struct sbuf {
  char *p;
  size_t cap, len;
};

static void sb_add(struct sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void sb_add(struct sbuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(b->len < b->cap ? b->p + b->len : NULL,
                    b->len < b->cap ? b->cap - b->len : 0, fmt, ap);
  va_end(ap);
  if (n > 0)
    b->len += (size_t)n;
}

static void print_value(const struct config *cfg, const struct key *k,
                        struct sbuf *b) {
  const char *field = (const char *)cfg + k->off;
  char tmp[128];
  switch (k->type) {
  case K_ADDRS: {
    const struct config_addr *a = (const struct config_addr *)field;
    int n = *(const int *)((const char *)cfg + k->off2);
    for (int i = 0; i < n; i++)
      sb_add(b, "%s%s", i ? ", " : "", a[i].text);
    break;
  }
  case K_DNS:
    for (int i = 0; i < cfg->n_dns_servers; i++)
      sb_add(b, "%s%s", i ? ", " : "", cfg->dns_servers[i].text);
    break;
  case K_CIDRS:
    for (int i = 0; i < *(const int *)((const char *)cfg + k->off2); i++) {
      const struct config_cidr *c = (const struct config_cidr *)field + i;
      char ip[INET6_ADDRSTRLEN];
      inet_ntop(c->family, c->addr, ip, sizeof ip);
      sb_add(b, "%s%s/%d", i ? ", " : "", ip, c->prefix);
    }
    break;
  case K_DOMAINS:
    for (int i = 0; i < cfg->n_allowed_sender_domains; i++)
      sb_add(b, "%s%s", i ? ", " : "", cfg->allowed_sender_domains[i]);
    break;
  case K_RELAYHOST:
    for (int i = 0; i < cfg->n_relayhost; i++) {
      const struct config_relayhost *r = &cfg->relayhost[i];
      sb_add(b, r->mx_lookup ? "%s%s:%u" : "%s[%s]:%u", i ? ", " : "", r->host,
             r->port);
    }
    break;
  case K_SCHEDULE:
    for (int i = 0; i < cfg->n_retry_schedule; i++) {
      fmt_duration(tmp, sizeof tmp, cfg->retry_schedule_ms[i]);
      sb_add(b, "%s%s", i ? "," : "", tmp);
    }
    break;
  case K_STRING:
  case K_PATH:
  case K_MAILBOX:
    sb_add(b, "%s", field);
    break;
  case K_SECRET:
    sb_add(b, "%s", field[0] ? "<set>" : "");
    break;
  case K_BOOL:
    sb_add(b, "%s", *(const int *)field ? "yes" : "no");
    break;
  case K_SIZE:
    fmt_size(tmp, sizeof tmp, *(const uint64_t *)field);
    sb_add(b, "%s", tmp);
    break;
  case K_INT:
    sb_add(b, "%d", *(const int *)field);
    break;
  case K_DURATION:
    fmt_duration(tmp, sizeof tmp, *(const uint64_t *)field);
    sb_add(b, "%s", tmp);
    break;
  case K_DURATION_OPT:
    if (*(const uint64_t *)field) {
      fmt_duration(tmp, sizeof tmp, *(const uint64_t *)field);
      sb_add(b, "%s", tmp);
    }
    break;
  case K_PORT:
    sb_add(b, "%u", *(const uint16_t *)field);
    break;
  case K_USER:
    if (cfg->has_user)
      sb_add(b, "%u:%u", cfg->uid, cfg->gid);
    break;
  case K_RELAYHOST_TLS: {
    static const char *const names[] = {"starttls", "implicit", "opportunistic",
                                        "none"};
    sb_add(b, "%s", names[cfg->relayhost_tls]);
    break;
  }
  case K_RELAYHOST_AUTH:
    sb_add(b, "%s", relayhost_auth_names[cfg->relayhost_auth]);
    break;
  case K_OUTBOUND_TLS: {
    static const char *const names[] = {"opportunistic", "required", "none",
                                        "dane", "dane-only"};
    sb_add(b, "%s", names[cfg->outbound_tls]);
    break;
  }
  case K_LOG_FORMAT:
    sb_add(b, "%s", cfg->log_format == CONFIG_LOG_JSON ? "json" : "logfmt");
    break;
  case K_RATE: {
    const struct config_rate *r = (const struct config_rate *)field;
    if (r->n) {
      fmt_duration(tmp, sizeof tmp, r->window_ms);
      sb_add(b, "%u/%s", r->n, tmp);
    }
    break;
  }
  case K_DKIM:
    for (int i = 0; i < cfg->n_dkim_sign; i++)
      sb_add(b, "%s%s:%s:%s", i ? ", " : "", cfg->dkim_sign[i].domain,
             cfg->dkim_sign[i].selector, cfg->dkim_sign[i].keyfile);
    break;
  case K_RECEIVED_HEADER:
    sb_add(b, "%s", cfg->received_header_redacted ? "redacted" : "full");
    break;
  }
}

size_t config_print(const struct config *cfg, char *out, size_t cap) {
  struct sbuf b = {out, cap, 0};
  for (size_t i = 0; i < cfg_n_keys; i++) {
    sb_add(&b, "%s = ", cfg_keys[i].name);
    print_value(cfg, &cfg_keys[i], &b);
    sb_add(&b, "\n");
  }
  if (cap)
    out[b.len < cap ? b.len : cap - 1] = '\0';
  return b.len;
}

/* ---- matching ---------------------------------------------------------- */

int config_cidr_match(const struct config_cidr *list, int n,
                      const struct sockaddr *sa) {
  uint8_t addr[16];
  int family = sa->sa_family;
  if (family == AF_INET) {
    memcpy(addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
  } else if (family == AF_INET6) {
    const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(a6)) {
      family = AF_INET;
      memcpy(addr, &a6->s6_addr[12], 4);
    } else {
      memcpy(addr, a6, 16);
    }
  } else {
    return 0;
  }
  for (int i = 0; i < n; i++) {
    const struct config_cidr *c = &list[i];
    if (c->family != family)
      continue;
    int full = c->prefix / 8, rest = c->prefix % 8;
    if (memcmp(addr, c->addr, (size_t)full) != 0)
      continue;
    if (rest && ((addr[full] ^ c->addr[full]) & (uint8_t)(0xff << (8 - rest))))
      continue;
    return 1;
  }
  return 0;
}
