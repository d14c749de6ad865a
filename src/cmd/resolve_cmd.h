/*
 * resolve_cmd: `mailhop resolve DOMAIN` (CONTRACT §1).
 */
#ifndef MAILHOP_RESOLVE_CMD_H
#define MAILHOP_RESOLVE_CMD_H

#include "config.h"

/*
 * Looks up the delivery candidates of domain as the relay would (MX,
 * dns_servers, dns_timeout, smtp_port, the loop check against listen and
 * listen_tls) on a loop of its own, and prints them in the order they
 * would be tried, one per line on stdout:
 *
 *     mx1.a.test[127.0.0.2]:2525 pref=10
 *
 * domain may also be "[host]" or "[host]:port" (addresses only, as a
 * `[host]` relayhost), "host:port", or an IP literal in brackets.  On
 * failure prints "mailhop: resolve DOMAIN: permanent|temporary failure
 * DSN: reason" on stderr.  Returns the exit code: 0 found, 2 failed.
 *
 * With a routes_file, or a sender (the envelope sender, "" for <>; NULL
 * when not given), domain is a recipient domain and the route a message
 * from sender to it would take comes first (CONTRACT §4a):
 *
 *     route = sender:@billing.test (/etc/mailhop/routes:4)
 *     target = [smtp.provider.test]:587
 *
 * ("route = none" when no line matches: the global settings; "target =
 * mx" for delivery by MX), then the candidates of that target: each host
 * of a relayhost list in order, or the domain's MX.  A routes file that
 * does not load is "FILE:LINE: message" on stderr and exit 1.
 */
int resolve_cmd_main(const struct config *cfg, const char *domain,
                     const char *sender);

#endif
