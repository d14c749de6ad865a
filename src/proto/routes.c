/*
 * proto/routes: the routes_file parser and matcher (see routes.h).
 */
#include "proto/routes.h"
#include "proto/rate.h"
#include "proto/text.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proto/proxy.h"

struct perr {
  const char *name;
  int line;
  char *err;
  size_t errlen;
};

__attribute__((format(printf, 2, 3))) static int fail(struct perr *p,
                                                      const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  snprintf(p->err, p->errlen, "%s:%d: %s", p->name, p->line, msg);
  return -1;
}

static void lower(char *s) {
  for (; *s; s++)
    *s = (char)tolower((unsigned char)*s);
}

/* A host name or IP literal as config/values.c accepts one. */
static int valid_host(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 253)
    return 0;
  for (const char *p = s; *p; p++) {
    unsigned char c = (unsigned char)*p;
    if (c <= ' ' || c == '@' || c == ',' || c == '<' || c == '>' || c == 0x7f ||
        c >= 0x80)
      return 0;
  }
  return 1;
}

static int parse_u64(const char *s, size_t n, uint64_t *out) {
  if (n == 0 || n > 18)
    return -1;
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    v = v * 10 + (uint64_t)(s[i] - '0');
  }
  *out = v;
  return 0;
}

static int parse_host(struct perr *p, const char *item, struct route_host *h) {
  const char *hs = item, *port_s = NULL;
  size_t hn;
  if (item[0] == '[') {
    const char *end = strchr(item, ']');
    if (!end)
      return fail(p, "relayhost: '%s': missing ']'", item);
    hs = item + 1;
    hn = (size_t)(end - hs);
    if (end[1] == ':')
      port_s = end + 2;
    else if (end[1])
      return fail(p, "relayhost: '%s': expected ':' after ']'", item);
    h->mx_lookup = 0;
  } else {
    const char *colon = strrchr(item, ':');
    if (colon && strchr(item, ':') != colon)
      return fail(p, "relayhost: '%s': IPv6 addresses need brackets", item);
    hn = colon ? (size_t)(colon - item) : strlen(item);
    if (colon)
      port_s = colon + 1;
    h->mx_lookup = 1;
  }
  if (hn == 0 || hn >= sizeof h->host)
    return fail(p, "relayhost: '%s': bad host", item);
  memcpy(h->host, hs, hn);
  h->host[hn] = '\0';
  if (!valid_host(h->host))
    return fail(p, "relayhost: '%s': bad host name", item);
  h->port = 25;
  if (port_s) {
    uint64_t v;
    if (parse_u64(port_s, strlen(port_s), &v) < 0 || v == 0 || v > 65535)
      return fail(p, "relayhost: '%s': bad port", item);
    h->port = (uint16_t)v;
  }
  return 0;
}

int routes_parse_peer(const char *s, struct route_host *out) {
  memset(out, 0, sizeof *out);
  const char *hs = s, *port_s;
  size_t hn;
  if (s[0] == '[') {
    const char *end = strchr(s, ']');
    if (!end || end[1] != ':')
      return -1;
    hs = s + 1;
    hn = (size_t)(end - hs);
    port_s = end + 2;
    if (hn == 0)
      return -1;
  } else {
    const char *colon = strrchr(s, ':');
    if (!colon || strchr(s, ':') != colon)
      return -1;
    hn = (size_t)(colon - s);
    port_s = colon + 1;
  }
  if (hn == 0) {
    hs = "127.0.0.1";
    hn = strlen(hs);
  }
  if (hn >= sizeof out->host)
    return -1;
  memcpy(out->host, hs, hn);
  out->host[hn] = '\0';
  if (!valid_host(out->host) || strchr(out->host, '[') ||
      strchr(out->host, ']'))
    return -1;
  uint64_t v;
  if (parse_u64(port_s, strlen(port_s), &v) < 0 || v == 0 || v > 65535)
    return -1;
  out->port = (uint16_t)v;
  out->mx_lookup = 0;
  return 0;
}

static int parse_relayhost(struct perr *p, char *val, struct route *r) {
  if (strcasecmp(val, "mx") == 0) {
    r->n_hosts = 0;
    return 0;
  }
  r->n_hosts = 0;
  char *save = NULL;
  for (char *it = strtok_r(val, ",", &save); it;
       it = strtok_r(NULL, ",", &save)) {
    if (!*it)
      continue;
    if (r->n_hosts == ROUTES_MAX_HOSTS)
      return fail(p, "relayhost: more than %d hosts", ROUTES_MAX_HOSTS);
    if (parse_host(p, it, &r->hosts[r->n_hosts]) < 0)
      return -1;
    r->n_hosts++;
  }
  if (r->n_hosts == 0)
    return fail(p, "relayhost: empty (write relayhost=mx for MX delivery)");
  return 0;
}

static int parse_match(struct perr *p, const char *tok, struct route *r) {
  const char *rest;
  if (strncasecmp(tok, "recipient:", 10) == 0) {
    rest = tok + 10;
    if (rest[0] != '@')
      return fail(p, "'%s': a recipient route is recipient:@DOMAIN", tok);
    r->kind = ROUTE_RECIPIENT_DOMAIN;
    rest++;
  } else if (strncasecmp(tok, "sender:", 7) == 0) {
    rest = tok + 7;
    if (rest[0] == '@') {
      r->kind = ROUTE_SENDER_DOMAIN;
      rest++;
    } else {
      r->kind = ROUTE_SENDER_ADDRESS;
      const char *at = strrchr(rest, '@');
      if (!at || at == rest || !at[1])
        return fail(p, "'%s': expected sender:LOCAL@DOMAIN or sender:@DOMAIN",
                    tok);
    }
  } else {
    return fail(p,
                "'%s': a route begins with recipient:@DOMAIN, sender:ADDRESS "
                "or sender:@DOMAIN",
                tok);
  }
  if (!*rest || strlen(rest) >= sizeof r->match)
    return fail(p, "'%s': missing or overlong domain or address", tok);
  const char *dom =
      r->kind == ROUTE_SENDER_ADDRESS ? strrchr(rest, '@') + 1 : rest;
  if (!valid_host(dom) || strchr(dom, ':') || strchr(dom, '['))
    return fail(p, "'%s': '%s' is not a domain", tok, dom);
  for (const char *c = rest; *c; c++)
    if ((unsigned char)*c <= ' ' || *c == '<' || *c == '>' || *c == 0x7f)
      return fail(p, "'%s': bad character", tok);
  snprintf(r->match, sizeof r->match, "%s", rest);
  lower(r->match);
  return 0;
}

static int copy_val(struct perr *p, const char *key, const char *val, char *dst,
                    size_t cap) {
  if (!*val)
    return fail(p, "%s: empty value", key);
  if (strlen(val) >= cap)
    return fail(p, "%s: value too long", key);
  memcpy(dst, val, strlen(val) + 1);
  return 0;
}

static int parse_setting(struct perr *p, char *tok, struct route *r,
                         unsigned *seen) {
  static const char *const keys[] = {
      "relayhost",     "relayhost_user", "relayhost_password_file",
      "relayhost_tls", "relayhost_auth", "relayhost_auth_plaintext",
      "rate"};
  char *eq = strchr(tok, '=');
  if (!eq)
    return fail(p, "'%s': expected key=value", tok);
  *eq = '\0';
  const char *key = tok;
  char *val = eq + 1;
  size_t k = 0;
  while (k < sizeof keys / sizeof keys[0] && strcmp(keys[k], key) != 0)
    k++;
  if (k == sizeof keys / sizeof keys[0]) {
    if (strcmp(key, "relayhost_password") == 0)
      return fail(p, "relayhost_password: not allowed in a routes file; use "
                     "relayhost_password_file");
    return fail(p, "'%s': not a route setting", key);
  }
  if (*seen & (1u << k))
    return fail(p, "%s: given twice", key);
  *seen |= 1u << k;
  switch (k) {
  case 0:
    return parse_relayhost(p, val, r);
  case 1:
    return copy_val(p, key, val, r->user, sizeof r->user);
  case 2:
    return copy_val(p, key, val, r->password_file, sizeof r->password_file);
  case 3: {
    static const char *const n[] = {"starttls", "implicit", "opportunistic",
                                    "none"};
    for (int i = 0; i < 4; i++)
      if (strcmp(val, n[i]) == 0)
        return r->tls = (enum route_tls)i, 0;
    return fail(p,
                "relayhost_tls: '%s' is not one of starttls, implicit, "
                "opportunistic, none",
                val);
  }
  case 4: {
    static const char *const n[] = {"auto", "plain", "login", "xoauth2"};
    for (int i = 0; i < 4; i++)
      if (strcmp(val, n[i]) == 0)
        return r->auth = (enum route_auth)i, 0;
    return fail(p,
                "relayhost_auth: '%s' is not one of auto, plain, login, "
                "xoauth2",
                val);
  }
  case 5:
    if (text_parse_bool(val, &r->auth_plaintext) < 0)
      return fail(p, "relayhost_auth_plaintext: '%s' is not yes or no", val);
    return 0;
  default: {
    char why[160];
    if (rate_parse(val, &r->rate_n, &r->rate_window_ms, why, sizeof why) < 0)
      return fail(p, "rate: %s", why);
    return 0;
  }
  }
}

static void host_text(const struct route *r, char *out, size_t cap) {
  size_t o = 0;
  out[0] = '\0';
  for (int i = 0; i < r->n_hosts && o < cap; i++) {
    const struct route_host *h = &r->hosts[i];
    int w = snprintf(out + o, cap - o, "%s%s%s%s:%u", i ? "," : "",
                     h->mx_lookup ? "" : "[", h->host, h->mx_lookup ? "" : "]",
                     (unsigned)h->port);
    if (w < 0)
      break;
    o += (size_t)w;
  }
  /* Keys are canonical: host names in lower case (suspend compares). */
  for (size_t i = 0; out[i]; i++)
    if (out[i] >= 'A' && out[i] <= 'Z')
      out[i] = (char)(out[i] + 32);
}

static int same_target_settings(const struct route *a, const struct route *b) {
  return strcmp(a->user, b->user) == 0 &&
         strcmp(a->password_file, b->password_file) == 0 && a->tls == b->tls &&
         a->auth == b->auth && a->auth_plaintext == b->auth_plaintext &&
         a->rate_n == b->rate_n && a->rate_window_ms == b->rate_window_ms;
}

static int parse_line(struct perr *p, char *line, struct route *r) {
  memset(r, 0, sizeof *r);
  r->line = p->line;
  r->tls = ROUTE_TLS_STARTTLS;
  r->auth = ROUTE_AUTH_AUTO;
  char *save = NULL;
  char *tok = strtok_r(line, " \t", &save);
  if (parse_match(p, tok, r) < 0)
    return -1;
  unsigned seen = 0;
  while ((tok = strtok_r(NULL, " \t", &save)))
    if (parse_setting(p, tok, r, &seen) < 0)
      return -1;
  /* CONTRACT §2, per route. */
  if (r->user[0] && !r->password_file[0])
    return fail(p, "relayhost_password_file: required when relayhost_user "
                   "is set");
  if (r->password_file[0] && !r->user[0])
    return fail(p, "relayhost_user: required when relayhost_password_file "
                   "is set");
  if (r->user[0] && r->n_hosts == 0)
    return fail(p, "relayhost_user: credentials need a relayhost (this route "
                   "delivers by MX)");
  if ((seen & (1u << 3 | 1u << 4 | 1u << 5)) && r->n_hosts == 0)
    return fail(p, "relayhost_tls, relayhost_auth and "
                   "relayhost_auth_plaintext need a relayhost (this route "
                   "delivers by MX)");
  if (r->rate_n > 0 && r->n_hosts == 0 && r->kind != ROUTE_RECIPIENT_DOMAIN)
    return fail(p, "rate: a sender route by MX has no one destination to "
                   "limit (its mail goes to every recipient domain); use "
                   "destination_rate, or give the route a relayhost");
  if (r->user[0] && !r->auth_plaintext &&
      (r->tls == ROUTE_TLS_NONE || r->tls == ROUTE_TLS_OPPORTUNISTIC))
    return fail(p, "relayhost_tls: credentials would be sent without verified "
                   "TLS; use starttls or implicit, or set "
                   "relayhost_auth_plaintext=yes");
  return 0;
}

int routes_parse(const char *name, const char *text, size_t len,
                 struct routes *out, char *err, size_t errlen) {
  struct perr p = {.name = name, .line = 0, .err = err, .errlen = errlen};
  out->r = NULL;
  out->n = 0;
  size_t cap = 0;
  char *line = malloc(ROUTES_LINE_MAX);
  if (!line) {
    snprintf(err, errlen, "%s: out of memory", name);
    return -1;
  }
  size_t pos = 0;
  while (pos < len) {
    p.line++;
    const char *nl = memchr(text + pos, '\n', len - pos);
    size_t ll = nl ? (size_t)(nl - (text + pos)) : len - pos;
    const char *src = text + pos;
    pos += ll + (nl ? 1 : 0);
    if (ll >= ROUTES_LINE_MAX) {
      fail(&p, "line longer than %d bytes", ROUTES_LINE_MAX - 1);
      goto bad;
    }
    if (memchr(src, '\0', ll)) {
      fail(&p, "NUL byte");
      goto bad;
    }
    memcpy(line, src, ll);
    line[ll] = '\0';
    char *hash = strchr(line, '#');
    if (hash)
      *hash = '\0';
    size_t e = strlen(line);
    while (e > 0 && isspace((unsigned char)line[e - 1]))
      line[--e] = '\0';
    char *s = line;
    while (*s == ' ' || *s == '\t')
      s++;
    if (!*s)
      continue;
    for (char *c = s; *c; c++)
      if ((unsigned char)*c < 0x20 && *c != '\t') {
        fail(&p, "control character");
        goto bad;
      }
    if (out->n == ROUTES_MAX) {
      fail(&p, "more than %d routes", ROUTES_MAX);
      goto bad;
    }
    if (out->n == cap) {
      size_t ncap = cap ? cap * 2 : 16;
      struct route *nr = realloc(out->r, ncap * sizeof *nr);
      if (!nr) {
        fail(&p, "out of memory");
        goto bad;
      }
      out->r = nr;
      cap = ncap;
    }
    struct route *r = &out->r[out->n];
    if (parse_line(&p, s, r) < 0)
      goto bad;
    if (r->n_hosts > 0) {
      char hk[ROUTES_KEY_MAX * 8];
      host_text(r, hk, sizeof hk);
      if (strlen(hk) > ROUTES_KEY_MAX - 16) {
        fail(&p, "relayhost: the list is longer than %d bytes",
             ROUTES_KEY_MAX - 16);
        goto bad;
      }
      /* The same list: the key of an earlier route with the same
       * settings, else (when another one has other settings) "#LINE". */
      int seen = 0;
      snprintf(r->key, sizeof r->key, "%s", hk);
      size_t hl = strlen(hk);
      for (size_t i = 0; i < out->n; i++) {
        const struct route *o = &out->r[i];
        if (o->n_hosts == 0 || strncmp(o->key, hk, hl) != 0 ||
            (o->key[hl] != '\0' && o->key[hl] != '#'))
          continue;
        if (same_target_settings(o, r)) {
          snprintf(r->key, sizeof r->key, "%s", o->key);
          seen = 0;
          break;
        }
        seen = 1;
      }
      if (seen)
        snprintf(r->key + hl, sizeof r->key - hl, "#%d", r->line);
    }
    out->n++;
  }
  free(line);
  return 0;
bad:
  free(line);
  routes_free(out);
  return -1;
}

void routes_free(struct routes *rs) {
  free(rs->r);
  rs->r = NULL;
  rs->n = 0;
}

const struct route *routes_match(const struct routes *rs, const char *sender,
                                 const char *rcpt_domain) {
  if (!rs)
    return NULL;
  const char *sdom = sender ? strrchr(sender, '@') : NULL;
  const struct route *by_addr = NULL, *by_dom = NULL;
  for (size_t i = 0; i < rs->n; i++) {
    const struct route *r = &rs->r[i];
    switch (r->kind) {
    case ROUTE_RECIPIENT_DOMAIN:
      if (rcpt_domain && strcasecmp(r->match, rcpt_domain) == 0)
        return r; /* a recipient route wins; first line among equals */
      break;
    case ROUTE_SENDER_ADDRESS:
      if (!by_addr && sender && sender[0] && strcasecmp(r->match, sender) == 0)
        by_addr = r;
      break;
    case ROUTE_SENDER_DOMAIN:
      if (!by_dom && sdom && strcasecmp(r->match, sdom + 1) == 0)
        by_dom = r;
      break;
    }
  }
  return by_addr ? by_addr : by_dom;
}

void routes_format_match(const struct route *r, char *out, size_t cap) {
  snprintf(out, cap, "%s%s",
           r->kind == ROUTE_RECIPIENT_DOMAIN ? "recipient:@"
           : r->kind == ROUTE_SENDER_DOMAIN  ? "sender:@"
                                             : "sender:",
           r->match);
}

/* ---- destination names (suspend, CONTRACT §1) ---------------------------- */

int routes_dest_canon(const char *in, char *out, size_t cap) {
  size_t n = strlen(in);
  if (n == 0 || n >= cap)
    return -1;
  for (size_t i = 0; i <= n; i++) {
    unsigned char ch = (unsigned char)in[i];
    if (ch && (ch < 0x21 || ch == 0x7f))
      return -1;
    out[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
  }
  return 0;
}

/* One entry as "[h]:p" / "h:p" (port 0: without ":p"), lower case. */
static void entry_text(const struct route_host *h, unsigned port, char *out,
                       size_t cap) {
  if (port)
    snprintf(out, cap, h->mx_lookup ? "%s:%u" : "[%s]:%u", h->host, port);
  else
    snprintf(out, cap, h->mx_lookup ? "%s" : "[%s]", h->host);
  for (size_t i = 0; out[i]; i++)
    if (out[i] >= 'A' && out[i] <= 'Z')
      out[i] = (char)(out[i] + 32);
}

int routes_dest_covers(const char *name, const struct route_host *hosts,
                       int n) {
  if (!name || !*name || n <= 0)
    return 0;
  char one[300];
  for (int i = 0; i < n; i++) {
    entry_text(&hosts[i], hosts[i].port, one, sizeof one);
    if (!strcmp(name, one))
      return 1;
    entry_text(&hosts[i], 0, one, sizeof one);
    if (!strcmp(name, one))
      return 1;
  }
  if (n < 2)
    return 0;
  /* The whole list, in order; each entry with or without its port. */
  const char *p = name;
  for (int i = 0; i < n; i++) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    if ((i < n - 1) != (end != NULL))
      return 0;
    int ok = 0;
    for (int withport = 0; withport < 2 && !ok; withport++) {
      entry_text(&hosts[i], withport ? hosts[i].port : 0, one, sizeof one);
      ok = strlen(one) == len && !memcmp(one, p, len);
    }
    if (!ok)
      return 0;
    p = end ? end + 1 : p + len;
  }
  return 1;
}

static int literal_ok(const char *s, size_t n) {
  uint8_t addr[16];
  if (n > 5 && !memcmp(s, "ipv6:", 5))
    return proxy_parse_ipv6(s + 5, n - 5, addr) == 0;
  return n > 0 && proxy_parse_ipv4(s, n, addr) == 0;
}

int routes_dest_is_domain(const char *name) {
  size_t n = strlen(name);
  if (n == 0 || n > 253)
    return 0;
  if (name[0] == '[')
    return name[n - 1] == ']' && literal_ok(name + 1, n - 2);
  size_t label = 0;
  for (size_t i = 0; i <= n; i++) {
    unsigned char ch = (unsigned char)name[i];
    if (ch == '.' || ch == '\0') {
      if (label == 0 || label > 63 || name[i - 1] == '-')
        return 0;
      label = 0;
      continue;
    }
    if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ||
          ch == '_' || ch >= 0x80))
      return 0;
    if (label == 0 && ch == '-')
      return 0;
    label++;
  }
  return 1;
}
