/*
 * admin_cli: the client side of the admin socket (CONTRACT §1, §5):
 * `mailhop status`, `mailhop queue [show|flush|delete|hold|release ID]`,
 * `mailhop pause`, `mailhop resume`.  Plain blocking socket code: it runs
 * in its own short-lived process, never inside the daemon's loop.
 */
#ifndef MAILHOP_ADMIN_CLI_H
#define MAILHOP_ADMIN_CLI_H

#include <stddef.h>
#include <stdio.h>

struct config;
struct cli;

/* Seconds the CLI waits for each piece of a reply before giving up. */
#define ADMIN_CLI_TIMEOUT 60

/*
 * Runs the admin command named by cli->words against the socket given by
 * -s (cli->socket) or else cfg->admin_socket; prints the reply as a table
 * for people, or the raw JSON line with --json.  Returns the exit code:
 * 0 done; 1 usage error or an {"error": ...} reply (message on stderr);
 * 2 the daemon is unreachable (not running, socket missing, no access),
 * hung up or answered garbage.
 */
int admin_cli_main(const struct config *cfg, const struct cli *cli);

/*
 * Pure formatting, exposed for tests: writes the human form of a reply
 * (`what` is the admin command word: "status", "queue", "show", ...) to
 * `out`.  `reply` is the parsed JSON object; `now` the current unix time.
 * Returns 0, or -1 when the reply does not have the expected shape.
 */
struct json_t;
int admin_cli_print(FILE *out, const char *what, const struct json_t *reply,
                    long long now);

#endif
