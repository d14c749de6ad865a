/*
 * resolve_cmd: the `mailhop resolve` command (see resolve_cmd.h).
 *
 * Owns a private uv loop and resolver for the length of one lookup.  Must
 * never use the daemon's loop or state: it is a one-shot diagnostic.
 */
#include "cmd/resolve_cmd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "dns/resolver.h"
#include "relay/resolver_setup.h"
#include "relay/routes.h"

struct resolve_ctx {
  int done;
  int rc;
};

static void on_resolved(struct resolver_query *q, const struct mx_result *res,
                        void *data) {
  struct resolve_ctx *ctx = data;
  (void)q;
  ctx->done = 1;
  if (res->status == DNS_OK) {
    for (int i = 0; i < res->n; i++) {
      char buf[512];
      mx_candidate_format(&res->c[i], buf, sizeof buf);
      printf("%s pref=%u\n", buf, (unsigned)res->c[i].pref);
    }
    fflush(stdout);
    ctx->rc = 0;
    return;
  }
  fprintf(stderr, "mailhop: resolve: %s failure %s: %s\n",
          res->status == DNS_PERMFAIL ? "permanent" : "temporary", res->dsn,
          res->reason);
  ctx->rc = 2;
}

/* Splits "host:port" / "[host]:port"; returns 0 or -1 on a bad port. */
static int split_port(const char *in, char *host, size_t cap, uint16_t *port) {
  const char *colon = NULL;
  if (in[0] == '[') {
    const char *close = strchr(in, ']');
    if (close && close[1] == ':')
      colon = close + 1;
  } else {
    colon = strchr(in, ':');
    if (colon && strchr(colon + 1, ':'))
      colon = NULL; /* a bare IPv6 address, not host:port */
  }
  size_t n = colon ? (size_t)(colon - in) : strlen(in);
  if (n >= cap)
    n = cap - 1;
  memcpy(host, in, n);
  host[n] = '\0';
  if (colon) {
    char *end = NULL;
    long p = strtol(colon + 1, &end, 10);
    if (!end || *end || p < 1 || p > 65535)
      return -1;
    *port = (uint16_t)p;
  }
  return 0;
}

/* One lookup on its own loop; prints the candidates.  Returns 0 or 2. */
static int lookup(const struct config *cfg, const char *host, uint16_t port,
                  int mx) {
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) {
    fprintf(stderr, "mailhop: resolve: cannot create the event loop\n");
    return 2;
  }
  int err = 0;
  struct resolver *r = resolver_from_config(&loop, cfg, &err);
  if (!r) {
    fprintf(stderr, "mailhop: resolve: %s\n",
            err == -ENOENT ? "no DNS server (dns_servers, /etc/resolv.conf)"
                           : uv_strerror(err));
    uv_loop_close(&loop);
    return 2;
  }
  struct resolve_ctx ctx = {0, 2};
  struct resolver_query *q =
      mx ? resolver_lookup_mx(r, host, port, on_resolved, &ctx)
         : resolver_lookup_host(r, host, port, on_resolved, &ctx);
  if (!q) {
    fprintf(stderr, "mailhop: resolve: out of memory\n");
    ctx.rc = 2;
  } else {
    while (!ctx.done && uv_run(&loop, UV_RUN_ONCE))
      ;
  }
  resolver_free(r);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0)
    fprintf(stderr, "mailhop: resolve: handles left open\n");
  return ctx.rc;
}

/* The route of a message from sender to domain, printed, then its
 * target's candidates (CONTRACT §4a). */
static int resolve_route(const struct config *cfg, const char *domain,
                         const char *sender) {
  struct relay_routes *rt;
  char err[1024];
  if (relay_routes_load(cfg->routes_file, &rt, err, sizeof err) < 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  const struct route *m = routes_match(&rt->rs, sender ? sender : "", domain);
  struct route global = {0};
  if (m) {
    char match[400];
    routes_format_match(m, match, sizeof match);
    printf("route = %s (%s:%d)\n", match, cfg->routes_file, m->line);
  } else {
    printf("route = none\n");
    for (int i = 0; i < cfg->n_relayhost && i < ROUTES_MAX_HOSTS; i++) {
      snprintf(global.hosts[i].host, sizeof global.hosts[i].host, "%s",
               cfg->relayhost[i].host);
      global.hosts[i].port = cfg->relayhost[i].port;
      global.hosts[i].mx_lookup = cfg->relayhost[i].mx_lookup;
      global.n_hosts = i + 1;
    }
    m = &global;
  }
  if (m->n_hosts == 0) {
    printf("target = mx\n");
    fflush(stdout);
    relay_routes_unref(rt);
    return lookup(cfg, domain, cfg->smtp_port, 1);
  }
  printf("target = ");
  for (int i = 0; i < m->n_hosts; i++) {
    const struct route_host *h = &m->hosts[i];
    printf(h->mx_lookup ? "%s%s:%u" : "%s[%s]:%u", i ? "," : "", h->host,
           (unsigned)h->port);
  }
  printf("\n");
  fflush(stdout);
  /* Each host of a failover list in order; found when any is. */
  int rc = 2;
  for (int i = 0; i < m->n_hosts; i++)
    if (lookup(cfg, m->hosts[i].host, m->hosts[i].port,
               m->hosts[i].mx_lookup) == 0)
      rc = 0;
  relay_routes_unref(rt);
  return rc;
}

int resolve_cmd_main(const struct config *cfg, const char *domain,
                     const char *sender) {
  /* With routes, a sender or a relayhost, say which target the mail takes
   * first: a bare MX lookup would name hosts that are never used. */
  if (cfg->routes_file[0] || sender || cfg->n_relayhost > 0)
    return resolve_route(cfg, domain, sender);
  char host[300];
  uint16_t port = cfg->smtp_port;
  if (split_port(domain, host, sizeof host, &port) != 0) {
    fprintf(stderr, "mailhop: resolve: bad port in %s\n", domain);
    return 2;
  }
  /* A "[host]" names the host itself (no MX), as in relayhost. */
  return lookup(cfg, host, port, host[0] != '[');
}
