/*
 * resolver_setup: see resolver_setup.h.
 */
#include "relay/resolver_setup.h"

#include <sys/socket.h>

#include "dns/resolver.h"

struct resolver *resolver_from_config(uv_loop_t *loop, const struct config *cfg,
                                      int *err) {
  struct sockaddr_storage servers[CONFIG_MAX_LIST];
  for (int i = 0; i < cfg->n_dns_servers; i++)
    servers[i] = cfg->dns_servers[i].sa;
  struct sockaddr_storage self[2 * CONFIG_MAX_LIST];
  int n_self = 0;
  for (int i = 0; i < cfg->n_listen; i++)
    self[n_self++] = cfg->listen[i].sa;
  for (int i = 0; i < cfg->n_listen_tls; i++)
    self[n_self++] = cfg->listen_tls[i].sa;
  struct resolver_opts o = {
      .servers = servers,
      .n_servers = cfg->n_dns_servers,
      .timeout_ms = cfg->dns_timeout_ms,
      .self = self,
      .n_self = n_self,
      /* One lookup per delivery at most: a delivery to a healthy domain
       * never waits behind lookups of dead ones. */
      .max_inflight = cfg->max_outbound > 128 ? cfg->max_outbound : 128,
  };
  return resolver_new(loop, &o, err);
}
