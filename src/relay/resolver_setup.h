/*
 * resolver_setup: the DNS resolver as the configuration sets it up, shared
 * by the delivery engine and `mailhop resolve`.
 */
#ifndef MAILHOP_RESOLVER_SETUP_H
#define MAILHOP_RESOLVER_SETUP_H

#include <uv.h>

#include "config.h"

struct resolver;

/*
 * The resolver as the configuration sets it up: dns_servers (else
 * /etc/resolv.conf), dns_timeout, the relay's own listen addresses for the
 * loop check, and one query in flight per possible delivery.  Used by the
 * delivery engine and by `mailhop resolve`, so both see the same answers.
 * Returns NULL with *err set (see resolver_new).
 */
struct resolver *resolver_from_config(uv_loop_t *loop, const struct config *cfg,
                                      int *err);

#endif
