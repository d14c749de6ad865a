/*
 * fuzz_routes: the routes_file parser (proto/routes.h routes_parse) and the
 * matcher on arbitrary bytes.  Invariants:
 *  - it returns 0 or -1; on -1 the message is "NAME:LINE: text" with LINE
 *    between 1 and the number of lines, and the routes are empty;
 *  - on 0 every route has a non-empty match, its line is in range and
 *    strictly after the previous route's, a relayhost route has a key of
 *    at most 255 bytes (the scheduler's limit), credentials come in pairs
 *    and only with a relayhost, and never over unverified TLS unless
 *    relayhost_auth_plaintext is set;
 *  - routes_match of each route's own match finds a route of the same
 *    kind or a stronger one (a recipient route over a sender route);
 *  - keys are canonical (no upper case), and the key without its "#LINE"
 *    names the route's own list (routes_dest_covers), as each entry does;
 *  - the destination-name functions take the raw bytes (as a name) without
 *    harm, and a name they canonicalize has no upper case;
 *  - routes_parse_peer (`drain --to`) of the bytes up to the first NUL or
 *    newline returns 0 or -1; on 0 the host is non-empty, without blanks
 *    or brackets, and the port is 1..65535.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proto/routes.h"

#define CHECK(x)                                                               \
  do {                                                                         \
    if (!(x)) {                                                                \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__,     \
              #x);                                                             \
      abort();                                                                 \
    }                                                                          \
  } while (0)

#define NAME "fuzz.routes"

static void dest_names(const uint8_t *data, size_t size);

static void fuzz_peer(const uint8_t *data, size_t size) {
  char s[600];
  size_t n = 0;
  while (n < size && n < sizeof s - 1 && data[n] && data[n] != '\n')
    n++;
  memcpy(s, data, n);
  s[n] = '\0';
  struct route_host h;
  int rc = routes_parse_peer(s, &h);
  CHECK(rc == 0 || rc == -1);
  if (rc == 0) {
    CHECK(h.host[0] && strlen(h.host) < sizeof h.host);
    CHECK(!strpbrk(h.host, " \t[]"));
    CHECK(h.port >= 1);
    CHECK(h.mx_lookup == 0);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_peer(data, size);
  dest_names(data, size);
  struct routes rs;
  char err[1024];
  size_t lines = 1;
  for (size_t i = 0; i < size; i++)
    lines += data[i] == '\n';
  int rc = routes_parse(NAME, (const char *)data, size, &rs, err, sizeof err);
  CHECK(rc == 0 || rc == -1);
  if (rc < 0) {
    CHECK(rs.n == 0 && rs.r == NULL);
    CHECK(strncmp(err, NAME ":", strlen(NAME) + 1) == 0);
    long line = strtol(err + strlen(NAME) + 1, NULL, 10);
    CHECK(line >= 1 && (size_t)line <= lines);
    return 0;
  }
  int prev = 0;
  for (size_t i = 0; i < rs.n; i++) {
    const struct route *r = &rs.r[i];
    CHECK(r->match[0]);
    CHECK(r->line > prev && (size_t)r->line <= lines);
    prev = r->line;
    CHECK(strlen(r->key) <= 255);
    CHECK(r->n_hosts == 0 ? r->key[0] == '\0' : r->key[0] != '\0');
    CHECK(!r->user[0] == !r->password_file[0]);
    CHECK(!r->user[0] || r->n_hosts > 0);
    CHECK(!r->user[0] || r->auth_plaintext || r->tls == ROUTE_TLS_STARTTLS ||
          r->tls == ROUTE_TLS_IMPLICIT);
    const char *sender = "", *domain = "";
    if (r->kind == ROUTE_RECIPIENT_DOMAIN)
      domain = r->match;
    else if (r->kind == ROUTE_SENDER_ADDRESS)
      sender = r->match;
    char addr[400];
    if (r->kind == ROUTE_SENDER_DOMAIN) {
      snprintf(addr, sizeof addr, "x@%s", r->match);
      sender = addr;
    }
    const struct route *m = routes_match(&rs, sender, domain);
    CHECK(m != NULL);
    CHECK(m->kind == r->kind || m->kind == ROUTE_RECIPIENT_DOMAIN ||
          m->kind == ROUTE_SENDER_ADDRESS);
    CHECK(m <= r || m->kind != r->kind || strcasecmp(m->match, r->match));
  }
  for (size_t i = 0; i < rs.n; i++) {
    const struct route *r = &rs.r[i];
    if (r->n_hosts == 0)
      continue;
    char base[ROUTES_KEY_MAX];
    snprintf(base, sizeof base, "%s", r->key);
    char *hash = strchr(base, '#');
    if (hash)
      *hash = '\0';
    for (const char *c = r->key; *c; c++)
      CHECK(!(*c >= 'A' && *c <= 'Z'));
    CHECK(routes_dest_covers(base, r->hosts, r->n_hosts) == 1);
    CHECK(routes_dest_covers(r->key, r->hosts, r->n_hosts) == !hash);
  }
  routes_free(&rs);
  return 0;
}

/* The destination-name functions on the raw bytes (up to a NUL). */
static void dest_names(const uint8_t *data, size_t size) {
  char in[300], name[300];
  size_t n = size < sizeof in - 1 ? size : sizeof in - 1;
  memcpy(in, data, n);
  in[n] = '\0';
  if (routes_dest_canon(in, name, sizeof name) < 0)
    return;
  for (const char *c = name; *c; c++)
    CHECK(!(*c >= 'A' && *c <= 'Z') && (unsigned char)*c > 0x20);
  int d = routes_dest_is_domain(name);
  CHECK(d == 0 || d == 1);
  struct route_host h = {.port = 25, .mx_lookup = 0};
  snprintf(h.host, sizeof h.host, "%s", name);
  int c = routes_dest_covers(name, &h, 1);
  CHECK(c == 0 || c == 1);
}
