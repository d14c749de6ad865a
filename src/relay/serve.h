/*
 * serve: `mailhop serve` (CONTRACT §1), the one place where the parts are
 * wired together.
 */
#ifndef MAILHOP_SERVE_H
#define MAILHOP_SERVE_H

#include "config.h"

/*
 * Runs the relay in the foreground on the default loop until SIGTERM or
 * SIGINT: opens the queue, starts inbound, the scheduler, outbound and the
 * admin socket, and on a signal stops accepting and lets work in flight
 * finish for up to cfg->shutdown_timeout.  cfg is borrowed for the whole
 * run.  Returns the exit code: 0 after a clean shutdown, 2 when the relay
 * cannot start (bind, queue open, queue in use).
 */
int serve_main(const struct config *cfg);

#endif
