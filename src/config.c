#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto/smtp_parse.h"

/*
 * One table drives parsing, printing and the environment mapping: each key
 * has a type and a setter/printer pair.  Setters get the value text and
 * write a message (without the location prefix) to err on failure.
 */

enum key_type {
  K_ADDRS,
  K_STRING,
  K_CIDRS,
  K_DOMAINS,
  K_PATH,
  K_BOOL,
  K_SIZE,
  K_INT,
  K_DURATION,
  K_USER,
  K_RELAYHOST,
  K_SECRET,
  K_RELAYHOST_TLS,
  K_RELAYHOST_AUTH,
  K_OUTBOUND_TLS,
  K_PORT,
  K_DNS,
  K_SCHEDULE,
  K_LOG_FORMAT,
  K_DKIM,
  K_RECEIVED_HEADER,
  K_RATE,
  K_DURATION_OPT, /* a duration; empty or 0 is 0 (off) */
  K_MAILBOX,      /* local@domain (an SMTP forward-path), or empty */
};

struct key {
  const char *name;
  enum key_type type;
  size_t off;  /* offset of the field in struct config */
  size_t off2; /* count field for lists, or buffer size for strings */
  const char *dflt;
};

static const char *const relayhost_auth_names[] = {"auto", "plain", "login",
                                                   "xoauth2"};

#define F(field) offsetof(struct config, field)
#define S(field) sizeof(((struct config *)0)->field)

static const struct key keys[] = {
    {"listen", K_ADDRS, F(listen), F(n_listen), "127.0.0.1:2525"},
    {"listen_tls", K_ADDRS, F(listen_tls), F(n_listen_tls), ""},
    {"hostname", K_STRING, F(hostname), S(hostname), NULL},
    {"relay_networks", K_CIDRS, F(relay_networks), F(n_relay_networks),
     "127.0.0.0/8, ::1/128"},
    {"allowed_sender_domains", K_DOMAINS, F(allowed_sender_domains),
     F(n_allowed_sender_domains), ""},
    {"auth_users_file", K_PATH, F(auth_users_file), S(auth_users_file), ""},
    {"auth_require_tls", K_BOOL, F(auth_require_tls), 0, "yes"},
    {"tls_cert_file", K_PATH, F(tls_cert_file), S(tls_cert_file), ""},
    {"tls_key_file", K_PATH, F(tls_key_file), S(tls_key_file), ""},
    {"max_message_size", K_SIZE, F(max_message_size), 0, "25m"},
    {"queue_minfree", K_SIZE, F(queue_minfree), 0, "100m"},
    {"max_recipients", K_INT, F(max_recipients), 0, "100"},
    {"max_sessions", K_INT, F(max_sessions), 0, "1000"},
    {"smtp_timeout", K_DURATION, F(smtp_timeout_ms), 0, "5m"},
    {"min_data_rate", K_SIZE, F(min_data_rate), 0, "500"},
    {"shutdown_timeout", K_DURATION, F(shutdown_timeout_ms), 0, "8s"},
    {"user", K_USER, 0, 0, ""},
    {"relayhost", K_RELAYHOST, F(relayhost), F(n_relayhost), ""},
    {"relayhost_user", K_STRING, F(relayhost_user), S(relayhost_user), ""},
    {"relayhost_password", K_SECRET, F(relayhost_password),
     S(relayhost_password), ""},
    {"relayhost_password_file", K_PATH, F(relayhost_password_file),
     S(relayhost_password_file), ""},
    {"relayhost_auth_plaintext", K_BOOL, F(relayhost_auth_plaintext), 0, "no"},
    {"relayhost_tls", K_RELAYHOST_TLS, 0, 0, "starttls"},
    {"relayhost_auth", K_RELAYHOST_AUTH, 0, 0, "auto"},
    {"outbound_tls", K_OUTBOUND_TLS, 0, 0, "opportunistic"},
    {"tls_ca_file", K_PATH, F(tls_ca_file), S(tls_ca_file), ""},
    {"smtp_port", K_PORT, F(smtp_port), 0, "25"},
    {"dns_servers", K_DNS, F(dns_servers), F(n_dns_servers), ""},
    {"dns_timeout", K_DURATION, F(dns_timeout_ms), 0, "5s"},
    {"connect_timeout", K_DURATION, F(connect_timeout_ms), 0, "30s"},
    {"max_outbound", K_INT, F(max_outbound), 0, "100"},
    {"max_per_destination", K_INT, F(max_per_destination), 0, "10"},
    {"max_rcpt_per_transaction", K_INT, F(max_rcpt_per_transaction), 0, "50"},
    {"retry_schedule", K_SCHEDULE, F(retry_schedule_ms), F(n_retry_schedule),
     "1m,5m,15m,30m,1h,2h,4h"},
    {"queue_lifetime", K_DURATION, F(queue_lifetime_ms), 0, "5d"},
    {"queue_path", K_PATH, F(queue_path), S(queue_path), "./mailhop-queue.db"},
    {"admin_socket", K_PATH, F(admin_socket), S(admin_socket),
     "./mailhop.sock"},
    {"log_format", K_LOG_FORMAT, 0, 0, "logfmt"},
    {"metrics_listen", K_ADDRS, F(metrics_listen), F(n_metrics_listen), ""},
    {"dkim_sign", K_DKIM, F(dkim_sign), F(n_dkim_sign), ""},
    {"proxy_networks", K_CIDRS, F(proxy_networks), F(n_proxy_networks), ""},
    {"received_header", K_RECEIVED_HEADER, 0, 0, "full"},
    {"destination_rate", K_RATE, F(destination_rate), 0, ""},
    {"outbound_rate", K_RATE, F(outbound_rate), 0, ""},
    {"delay_warning_time", K_DURATION_OPT, F(delay_warning_time_ms), 0, ""},
    {"bounce_notice_recipient", K_MAILBOX, F(bounce_notice_recipient),
     S(bounce_notice_recipient), ""},
    {"routes_file", K_PATH, F(routes_file), S(routes_file), ""},
    {"relayhost_oauth2_token_url", K_STRING, F(relayhost_oauth2_token_url),
     S(relayhost_oauth2_token_url), ""},
    {"relayhost_oauth2_client_id", K_STRING, F(relayhost_oauth2_client_id),
     S(relayhost_oauth2_client_id), ""},
    {"relayhost_oauth2_client_secret", K_SECRET,
     F(relayhost_oauth2_client_secret), S(relayhost_oauth2_client_secret), ""},
    {"relayhost_oauth2_client_secret_file", K_PATH,
     F(relayhost_oauth2_client_secret_file),
     S(relayhost_oauth2_client_secret_file), ""},
    {"relayhost_oauth2_refresh_token", K_SECRET,
     F(relayhost_oauth2_refresh_token), S(relayhost_oauth2_refresh_token), ""},
    {"relayhost_oauth2_refresh_token_file", K_PATH,
     F(relayhost_oauth2_refresh_token_file),
     S(relayhost_oauth2_refresh_token_file), ""},
    {"relayhost_oauth2_scope", K_STRING, F(relayhost_oauth2_scope),
     S(relayhost_oauth2_scope), ""},
    {"mta_sts", K_BOOL, F(mta_sts), 0, "yes"},
    {"tls_rpt", K_BOOL, F(tls_rpt), 0, "no"},
    {"tls_rpt_interval", K_DURATION, F(tls_rpt_interval_ms), 0, "1d"},
    {"https_port", K_PORT, F(https_port), 0, "443"},
};
#define N_KEYS (sizeof keys / sizeof keys[0])

static const struct key *find_key(const char *name, size_t len) {
  for (size_t i = 0; i < N_KEYS; i++)
    if (strlen(keys[i].name) == len && memcmp(keys[i].name, name, len) == 0)
      return &keys[i];
  return NULL;
}

/* Levenshtein distance of a[0..an) and b[0..bn), capped at 32 octets. */
static size_t edit_distance(const char *a, size_t an, const char *b,
                            size_t bn) {
  if (an > 32 || bn > 32)
    return 99;
  size_t row[33];
  for (size_t j = 0; j <= bn; j++)
    row[j] = j;
  for (size_t i = 1; i <= an; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= bn; j++) {
      size_t up = row[j];
      size_t best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best)
        best = up + 1;
      if (row[j - 1] + 1 < best)
        best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[bn];
}

/*
 * The key a mistyped name most likely meant, or NULL: within two edits
 * (relayhost_pasword), or one name a prefix of the other sharing at least
 * three quarters of the longer one (relayhost_username, relayhost_pass).
 */
static const char *near_key(const char *name, size_t len) {
  const char *best = NULL;
  size_t best_d = 3;
  for (size_t i = 0; i < N_KEYS; i++) {
    const char *k = keys[i].name;
    size_t kn = strlen(k);
    size_t d = edit_distance(name, len, k, kn);
    size_t shorter = kn < len ? kn : len, longer = kn < len ? len : kn;
    if (d > 2 && strncmp(name, k, shorter) == 0 && shorter * 4 >= longer * 3)
      d = 2;
    if (d < best_d) {
      best_d = d;
      best = k;
    }
  }
  return best;
}

#define ERR(...) (snprintf(err, CONFIG_ERR_MAX, __VA_ARGS__), -1)

/* ---- value parsers (pure) ------------------------------------------- */

static void trim(const char **s, size_t *n) {
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
  trim(&t, &tn);
  if (tn == 0)
    return 0;
  for (;;) {
    const char *comma = strchr(p, ',');
    size_t n = comma ? (size_t)(comma - p) : strlen(p);
    const char *s = p;
    trim(&s, &n);
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
 * in ms. */
static int parse_duration(const char *s, uint64_t *ms) {
  char num[32];
  size_t n = strlen(s);
  if (n == 0 || n >= sizeof num)
    return -1;
  uint64_t mult = 1000;
  memcpy(num, s, n + 1);
  if (n > 2 && strcmp(num + n - 2, "ms") == 0)
    mult = 1, num[n - 2] = '\0';
  switch (mult == 1 ? '\0' : num[n - 1]) {
  case 's':
    mult = 1000, num[n - 1] = '\0';
    break;
  case 'm':
    mult = 60 * 1000, num[n - 1] = '\0';
    break;
  case 'h':
    mult = 3600 * 1000, num[n - 1] = '\0';
    break;
  case 'd':
    mult = 86400 * 1000, num[n - 1] = '\0';
    break;
  }
  uint64_t v;
  if (parse_u64(num, &v) < 0 || v > UINT64_MAX / mult / 4)
    return -1;
  *ms = v * mult;
  return 0;
}

int config_parse_rate(const char *s, struct config_rate *out,
                      char err[CONFIG_ERR_MAX]) {
  const char *slash = strchr(s, '/');
  if (!slash)
    return ERR("'%s' is not N/DURATION (e.g. 30/1m)", s);
  char num[32], dur[32];
  const char *a = s, *b = slash + 1;
  size_t an = (size_t)(slash - s), bn = strlen(b);
  trim(&a, &an);
  trim(&b, &bn);
  if (an == 0 || an >= sizeof num || bn == 0 || bn >= sizeof dur)
    return ERR("'%s' is not N/DURATION (e.g. 30/1m)", s);
  memcpy(num, a, an);
  num[an] = '\0';
  memcpy(dur, b, bn);
  dur[bn] = '\0';
  uint64_t n, ms;
  if (parse_u64(num, &n) < 0 || n == 0 || n > CONFIG_RATE_MAX)
    return ERR("'%s': N must be a number from 1 to %d", s, CONFIG_RATE_MAX);
  if (parse_duration(dur, &ms) < 0)
    return ERR("'%s': '%s' is not a duration (e.g. 1m)", s, dur);
  if (ms == 0 || ms > 7ULL * 86400000)
    return ERR("'%s': the window must be greater than 0 and at most 7d", s);
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

static int parse_bool(const char *s, int *out) {
  static const char *const yes[] = {"yes", "true", "on", "1"};
  static const char *const no[] = {"no", "false", "off", "0"};
  for (size_t i = 0; i < 4; i++) {
    if (strcasecmp(s, yes[i]) == 0)
      return *out = 1, 0;
    if (strcasecmp(s, no[i]) == 0)
      return *out = 0, 0;
  }
  return -1;
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

static int valid_domain(const char *s) {
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
  if (!valid_domain(item))
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
  if (!valid_domain(r->host))
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
  if (!valid_domain(d->domain) || strspn(d->domain, DKIM_NAME_CHARS) != dn)
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
static int set_key(struct config *cfg, const struct key *k, const char *value,
                   char *err) {
  char msg[CONFIG_ERR_MAX];
  const char *v = value;
  size_t vn = strlen(value);
  trim(&v, &vn);
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
    if (parse_bool(val, (int *)field) < 0)
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

static int set_named(struct config *cfg, const struct key *k, const char *value,
                     char *err) {
  if (set_key(cfg, k, value, err) < 0)
    return -1;
  if (k->off == F(relay_networks) && k->type == K_CIDRS)
    cfg->relay_networks_set = 1;
  return 0;
}

void config_defaults(struct config *cfg) {
  char err[CONFIG_ERR_MAX];
  memset(cfg, 0, sizeof *cfg);
  for (size_t i = 0; i < N_KEYS; i++) {
    if (!keys[i].dflt)
      continue;
    if (set_key(cfg, &keys[i], keys[i].dflt, err) < 0)
      abort(); /* a broken built-in default is our bug */
  }
  char host[256] = "";
  if (gethostname(host, sizeof host - 1) < 0 || !host[0])
    snprintf(host, sizeof host, "localhost");
  snprintf(cfg->hostname, sizeof cfg->hostname, "%s", host);
  cfg->relay_networks_set = 0;
}

int config_parse_text(struct config *cfg, const char *name, const char *text,
                      size_t len, char err[CONFIG_ERR_MAX]) {
  size_t pos = 0;
  int lineno = 0;
  char msg[CONFIG_ERR_MAX];
  while (pos < len) {
    lineno++;
    const char *line = text + pos;
    const char *nl = memchr(line, '\n', len - pos);
    size_t n = nl ? (size_t)(nl - line) : len - pos;
    pos += n + (nl ? 1 : 0);
    const char *s = line;
    trim(&s, &n);
    if (n == 0 || s[0] == '#')
      continue;
    if (memchr(s, '\0', n))
      return ERR("%s:%d: NUL byte in line", name, lineno);
    const char *eq = memchr(s, '=', n);
    if (!eq)
      return ERR("%s:%d: expected 'key = value'", name, lineno);
    const char *kname = s;
    size_t kn = (size_t)(eq - s);
    trim(&kname, &kn);
    const struct key *k = find_key(kname, kn);
    if (!k) {
      const char *near = near_key(kname, kn);
      return ERR("%s:%d: unknown key '%.*s'%s%s%s", name, lineno, (int)kn,
                 kname, near ? " (did you mean '" : "", near ? near : "",
                 near ? "'?)" : "");
    }
    char value[4096];
    size_t vn = n - (size_t)(eq + 1 - s);
    if (vn >= sizeof value)
      return ERR("%s:%d: %s: value too long", name, lineno, k->name);
    memcpy(value, eq + 1, vn);
    value[vn] = '\0';
    if (set_named(cfg, k, value, msg) < 0)
      return ERR("%s:%d: %s", name, lineno, msg);
  }
  return 0;
}

/* Reads the first line of a file (secrets convention). */
/* 1 when two listening addresses would collide at bind: the same port
 * and family, and the same address or either a wildcard. */
static int addr_overlaps(const struct config_addr *x,
                         const struct config_addr *y) {
  if (x->sa.ss_family != y->sa.ss_family)
    return 0;
  if (x->sa.ss_family == AF_INET) {
    const struct sockaddr_in *a = (const void *)&x->sa,
                             *b = (const void *)&y->sa;
    return a->sin_port == b->sin_port &&
           (a->sin_addr.s_addr == b->sin_addr.s_addr ||
            a->sin_addr.s_addr == htonl(INADDR_ANY) ||
            b->sin_addr.s_addr == htonl(INADDR_ANY));
  }
  const struct sockaddr_in6 *a = (const void *)&x->sa,
                            *b = (const void *)&y->sa;
  return a->sin6_port == b->sin6_port &&
         (memcmp(&a->sin6_addr, &b->sin6_addr, sizeof a->sin6_addr) == 0 ||
          IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr) ||
          IN6_IS_ADDR_UNSPECIFIED(&b->sin6_addr));
}

static int read_first_line(const char *path, char *out, size_t cap, char *why,
                           size_t whycap) {
  FILE *f = fopen(path, "r");
  if (!f) {
    snprintf(why, whycap, "cannot read %s: %s", path, strerror(errno));
    return -1;
  }
  if (!fgets(out, (int)cap, f))
    out[0] = '\0';
  fclose(f);
  size_t n = strlen(out);
  while (n && (out[n - 1] == '\n' || out[n - 1] == '\r'))
    out[--n] = '\0';
  return 0;
}

static void warn_add(struct config_warnings *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void warn_add(struct config_warnings *w, const char *fmt, ...) {
  if (!w || w->n >= CONFIG_MAX_WARNINGS)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(w->text[w->n++], CONFIG_ERR_MAX, fmt, ap);
  va_end(ap);
}

static int is_loopback(const struct sockaddr_storage *sa) {
  if (sa->ss_family == AF_INET) {
    const uint8_t *b =
        (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
    return b[0] == 127;
  }
  const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
  return IN6_IS_ADDR_LOOPBACK(a);
}

static int apply_env(struct config *cfg, char *const *env,
                     struct config_warnings *warn, char *err) {
  char msg[CONFIG_ERR_MAX];
  if (!env)
    return 0;
  for (char *const *e = env; *e; e++) {
    if (strncmp(*e, "MAILHOP_", 8) != 0)
      continue;
    const char *eq = strchr(*e, '=');
    if (!eq)
      continue;
    char name[128];
    size_t n = (size_t)(eq - *e) - 8;
    if (n == 0 || n >= sizeof name) {
      warn_add(warn, "%.*s: not a mailhop setting, ignored", (int)(n + 8), *e);
      continue;
    }
    for (size_t i = 0; i < n; i++)
      name[i] = (char)tolower((unsigned char)(*e)[8 + i]);
    name[n] = '\0';
    const char *value = eq + 1;
    const struct key *k = find_key(name, n);
    char filebuf[4096];
    int from_file = 0;
    if (!k && n > 5 && strcmp(name + n - 5, "_file") == 0 &&
        (k = find_key(name, n - 5)) != NULL) {
      /* MAILHOP_X_FILE: the key X from a file; both set is an error. */
      char plain[160];
      snprintf(plain, sizeof plain, "MAILHOP_%.*s=", (int)(n - 5), *e + 8);
      for (char *const *o = env; *o; o++)
        if (strncmp(*o, plain, strlen(plain)) == 0)
          return ERR("%s: both MAILHOP_%.*s and MAILHOP_%.*s are set; use "
                     "one",
                     k->name, (int)(n - 5), *e + 8, (int)n, *e + 8);
      if (read_first_line(value, filebuf, sizeof filebuf, msg, sizeof msg) < 0)
        return ERR("%s: %s (from MAILHOP_%.*s)", k->name, msg, (int)n, *e + 8);
      value = filebuf;
      from_file = 1;
    }
    if (!k) {
      const char *near = near_key(name, n);
      char upper[64] = "";
      for (size_t i = 0; near && near[i] && i + 1 < sizeof upper; i++) {
        upper[i] = (char)toupper((unsigned char)near[i]);
        upper[i + 1] = '\0';
      }
      if (near)
        warn_add(warn,
                 "MAILHOP_%.*s: not a mailhop setting, ignored (did you mean "
                 "MAILHOP_%s?)",
                 (int)n, *e + 8, upper);
      else
        warn_add(warn, "MAILHOP_%.*s: not a mailhop setting, ignored", (int)n,
                 *e + 8);
      continue;
    }
    if (set_named(cfg, k, value, msg) < 0)
      return ERR("%s (from MAILHOP_%.*s)", msg, (int)n, *e + 8);
    (void)from_file;
  }
  return 0;
}

static int validate(struct config *cfg, struct config_warnings *warn,
                    char *err) {
  if (cfg->n_listen == 0 && cfg->n_listen_tls == 0)
    return ERR("listen: no listener configured");
  int have_cert = cfg->tls_cert_file[0] != '\0';
  int have_key = cfg->tls_key_file[0] != '\0';
  if (have_cert != have_key)
    return ERR("%s: must be set together with %s",
               have_cert ? "tls_key_file" : "tls_cert_file",
               have_cert ? "tls_cert_file" : "tls_key_file");
  if (cfg->n_listen_tls > 0 && !have_cert)
    return ERR("listen_tls: implicit TLS needs tls_cert_file and "
               "tls_key_file");
  if (!cfg->relay_networks_set && !cfg->auth_users_file[0]) {
    for (int i = 0; i < cfg->n_listen + cfg->n_listen_tls; i++) {
      const struct config_addr *a = i < cfg->n_listen
                                        ? &cfg->listen[i]
                                        : &cfg->listen_tls[i - cfg->n_listen];
      if (!is_loopback(&a->sa))
        return ERR("relay_networks: listener %s is not on loopback; set "
                   "relay_networks explicitly (or auth_users_file) so "
                   "mailhop is not an open relay",
                   a->text);
    }
  }
  if (cfg->relayhost_password_file[0]) {
    char msg[CONFIG_ERR_MAX];
    if (cfg->relayhost_password[0])
      return ERR("relayhost_password_file: relayhost_password is set too; "
                 "use one");
    if (read_first_line(cfg->relayhost_password_file, cfg->relayhost_password,
                        sizeof cfg->relayhost_password, msg, sizeof msg) < 0)
      return ERR("relayhost_password_file: %s", msg);
  }
  /* The OAuth2 client's secrets from their files (CONTRACT §4a). */
  static const struct {
    const char *name;
    size_t file, val, cap;
  } oauth2_files[] = {
      {"relayhost_oauth2_client_secret", F(relayhost_oauth2_client_secret_file),
       F(relayhost_oauth2_client_secret), S(relayhost_oauth2_client_secret)},
      {"relayhost_oauth2_refresh_token", F(relayhost_oauth2_refresh_token_file),
       F(relayhost_oauth2_refresh_token), S(relayhost_oauth2_refresh_token)},
  };
  for (size_t i = 0; i < sizeof oauth2_files / sizeof oauth2_files[0]; i++) {
    const char *file = (const char *)cfg + oauth2_files[i].file;
    char *val = (char *)cfg + oauth2_files[i].val;
    char msg[CONFIG_ERR_MAX];
    if (!file[0])
      continue;
    if (val[0])
      return ERR("%s_file: %s is set too; use one", oauth2_files[i].name,
                 oauth2_files[i].name);
    if (read_first_line(file, val, oauth2_files[i].cap, msg, sizeof msg) < 0)
      return ERR("%s_file: %s", oauth2_files[i].name, msg);
  }
  int oauth2 = cfg->relayhost_oauth2_token_url[0] != '\0';
  if (oauth2) {
    if (strncasecmp(cfg->relayhost_oauth2_token_url, "https://", 8) != 0)
      return ERR("relayhost_oauth2_token_url: must be an https:// URL");
    if (cfg->relayhost_auth != CONFIG_RELAYHOST_AUTH_XOAUTH2)
      return ERR("relayhost_oauth2_token_url: needs relayhost_auth = xoauth2");
    if (!cfg->relayhost_oauth2_client_id[0])
      return ERR("relayhost_oauth2_client_id: required with "
                 "relayhost_oauth2_token_url");
    if (!cfg->relayhost_user[0])
      return ERR("relayhost_user: required with relayhost_oauth2_token_url "
                 "(the XOAUTH2 user)");
    if (cfg->relayhost_password[0])
      return ERR("relayhost_password: not used with "
                 "relayhost_oauth2_token_url (tokens are fetched); unset it");
    if (!cfg->relayhost_oauth2_client_secret[0] &&
        !cfg->relayhost_oauth2_refresh_token[0])
      return ERR("relayhost_oauth2_client_secret: required with "
                 "relayhost_oauth2_token_url (the client-credentials grant; "
                 "or set relayhost_oauth2_refresh_token)");
  }
  if (cfg->relayhost_auth != CONFIG_RELAYHOST_AUTH_AUTO &&
      !cfg->relayhost_user[0] && cfg->n_relayhost > 0)
    return ERR("relayhost_auth: a mechanism is chosen but relayhost_user is "
               "empty, so AUTH would never be sent; set the credentials or "
               "relayhost_auth = auto");
  int have_user = cfg->relayhost_user[0] != '\0';
  int have_pass = cfg->relayhost_password[0] != '\0' || oauth2;
  if (have_user && !have_pass)
    return ERR("relayhost_password: required when relayhost_user is set");
  if (have_pass && !have_user)
    return ERR("relayhost_user: required when a relayhost password is set");
  if (have_user && !cfg->relayhost_auth_plaintext &&
      (cfg->relayhost_tls == CONFIG_RELAYHOST_TLS_NONE ||
       cfg->relayhost_tls == CONFIG_RELAYHOST_TLS_OPPORTUNISTIC))
    return ERR("relayhost_tls: credentials would be sent without verified "
               "TLS; use starttls or implicit, or set "
               "relayhost_auth_plaintext = yes");
  if (have_user && cfg->n_relayhost == 0)
    warn_add(warn, "relayhost_user: set but relayhost is empty; ignored");
  if (cfg->delay_warning_time_ms > 0 &&
      cfg->delay_warning_time_ms >= cfg->queue_lifetime_ms)
    return ERR("delay_warning_time: not under queue_lifetime, so no delay "
               "notice could ever be sent (the message bounces first)");
  for (int i = 0; i < cfg->n_metrics_listen; i++)
    for (int j = 0; j < cfg->n_listen + cfg->n_listen_tls; j++) {
      const struct config_addr *a = j < cfg->n_listen
                                        ? &cfg->listen[j]
                                        : &cfg->listen_tls[j - cfg->n_listen];
      if (addr_overlaps(&cfg->metrics_listen[i], a))
        return ERR("metrics_listen: %s is also an SMTP listener (%s)",
                   cfg->metrics_listen[i].text, a->text);
    }
  if (strlen(cfg->admin_socket) > 107)
    return ERR("admin_socket: path is %zu bytes; a Unix socket path holds at "
               "most 107",
               strlen(cfg->admin_socket));
  if (!cfg->admin_socket[0])
    return ERR("admin_socket: must not be empty");
  if (!cfg->queue_path[0])
    return ERR("queue_path: must not be empty");
  if (!cfg->hostname[0])
    return ERR("hostname: must not be empty");
  if (!valid_domain(cfg->hostname))
    return ERR("hostname: '%s' is not a host name", cfg->hostname);
  if (!strchr(cfg->hostname, '.'))
    warn_add(warn,
             "hostname: '%s' has no dot; set a fully qualified name "
             "(receivers may refuse mail from this HELO)",
             cfg->hostname);
  return 0;
}

int config_load(struct config *cfg, const struct config_source *src,
                struct config_warnings *warn, char err[CONFIG_ERR_MAX]) {
  char msg[CONFIG_ERR_MAX];
  config_defaults(cfg);
  if (warn)
    warn->n = 0;
  const char *file = src->file;
  if (file) {
    FILE *f = fopen(file, "r");
    if (!f) {
      if (src->file_explicit || errno != ENOENT)
        return ERR("%s: cannot read: %s", file, strerror(errno));
    } else {
      size_t cap = 1 << 16, len = 0;
      char *buf = malloc(cap);
      if (!buf) {
        fclose(f);
        return ERR("%s: out of memory", file);
      }
      size_t r;
      while ((r = fread(buf + len, 1, cap - len, f)) > 0) {
        len += r;
        if (len == cap) {
          free(buf);
          fclose(f);
          return ERR("%s: file too large (over 64 KiB)", file);
        }
      }
      int bad = ferror(f);
      fclose(f);
      if (bad) {
        free(buf);
        return ERR("%s: read error", file);
      }
      int rc = config_parse_text(cfg, file, buf, len, err);
      free(buf);
      if (rc < 0)
        return -1;
    }
  }
  if (apply_env(cfg, src->environ, warn, err) < 0)
    return -1;
  for (int i = 0; i < src->n_overrides; i++) {
    const char *o = src->overrides[i];
    const char *eq = strchr(o, '=');
    if (!eq)
      return ERR("%s: -o needs KEY=VALUE", o);
    size_t kn = (size_t)(eq - o);
    const struct key *k = find_key(o, kn);
    if (!k) {
      const char *near = near_key(o, kn);
      return ERR("%.*s: unknown key%s%s%s", (int)kn, o,
                 near ? " (did you mean '" : "", near ? near : "",
                 near ? "'?)" : "");
    }
    if (set_named(cfg, k, eq + 1, msg) < 0)
      return ERR("%s", msg);
  }
  return validate(cfg, warn, err);
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
  for (size_t i = 0; i < N_KEYS; i++) {
    sb_add(&b, "%s = ", keys[i].name);
    print_value(cfg, &keys[i], &b);
    sb_add(&b, "\n");
  }
  if (cap)
    out[b.len < cap ? b.len : cap - 1] = '\0';
  return b.len;
}

const char *config_near_key(const char *name) {
  return near_key(name, strlen(name));
}

int config_key_default(const char *name, const char **dflt) {
  const struct key *k = find_key(name, strlen(name));
  if (!k)
    return -1;
  *dflt = k->dflt;
  return 0;
}

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
