/*
 * cmd/help: the texts of `mailhop --help` and `mailhop COMMAND --help`
 * (see help.h).  mailhop(8) says the same (a test compares).
 */
#include "cmd/help.h"

#include <stdio.h>
#include <string.h>

/* The command list: mailhop(8) lists the same commands (a test compares). */
static const char usage[] =
    "usage: mailhop COMMAND [options]\n"
    "\n"
    "commands:\n"
    "  serve [-c FILE] [-o KEY=VALUE]...   run the relay in the foreground\n"
    "  check [-c FILE] [-o KEY=VALUE]...   validate and print the "
    "configuration\n"
    "  check --explain KEY                 describe one configuration key\n"
    "  status [-s SOCKET] [--json]         daemon status\n"
    "  queue [-s SOCKET] [--json]          list the queue\n"
    "  queue show ID                       one message in detail\n"
    "  queue flush [ID]                    retry deferred mail now\n"
    "  queue delete ID                     remove a message, no bounce\n"
    "  queue hold ID | release ID          stop / resume delivery of a "
    "message\n"
    "  queue [list] [FILTER]...            list the matching messages\n"
    "  queue delete|hold|release|flush FILTER...  act on every matching "
    "message\n"
    "  suspend DESTINATION [--for DURATION]  stop delivery to a destination "
    "(1h)\n"
    "  unsuspend DESTINATION               resume delivery to a "
    "destination\n"
    "  pause | resume                      stop / restart outbound delivery\n"
    "  drain [--to [HOST]:PORT] [--timeout DURATION] | drain --cancel  stop "
    "accepting, hand the queue on\n"
    "  tlsrpt [-s SOCKET] [--json]         TLS-RPT counts of this report "
    "period\n"
    "  resolve DOMAIN [--sender ADDR]      print the route and delivery "
    "candidates\n"
    "  dkim keygen DOMAIN SELECTOR [...]   write a DKIM key, print its DNS "
    "record\n"
    "\n"
    "options:\n"
    "  -c FILE        configuration file (default /etc/mailhop/mailhop.conf "
    "if it exists)\n"
    "  -o KEY=VALUE   set one configuration key (wins over file and "
    "environment)\n"
    "  -s SOCKET      admin socket (default: admin_socket from the "
    "configuration)\n"
    "  --json         machine-readable output\n"
    "  FILTER         --domain D, --sender ADDR|@DOMAIN|<>, --state "
    "queued|deferred|held,\n"
    "                 --older-than DURATION (ANDed), or --all\n"
    "  --explain KEY  (check) a key's description, default and current value\n"
    "  --version      print the version\n"
    "  --help         this text; after a command, that command's help\n"
    "\n"
    "mailhop COMMAND --help describes one command; man mailhop, man "
    "mailhop.conf\n";

/* `mailhop COMMAND --help`: each command's options, as in mailhop(8). */
#define CONFIG_OPTIONS                                                         \
  "  -c FILE        configuration file (default /etc/mailhop/mailhop.conf "    \
  "if it exists)\n"                                                            \
  "  -o KEY=VALUE   set one key; wins over the file and MAILHOP_KEY "          \
  "variables\n"
#define ADMIN_OPTIONS                                                          \
  "  -s SOCKET      admin socket (default: admin_socket from the "             \
  "configuration)\n"                                                           \
  "  -c FILE, -o KEY=VALUE   configuration to take admin_socket from\n"
static const struct {
  const char *cmd;
  const char *text;
} command_help[] = {
    {"serve", "usage: mailhop serve [-c FILE] [-o KEY=VALUE]...\n\n"
              "Runs the relay in the foreground, logging to stderr. SIGTERM "
              "or SIGINT:\nfinish what is in flight (shutdown_timeout), exit "
              "0. SIGHUP: reload\ncertificates, the AUTH users file, "
              "tls_ca_file and routes_file.\n\noptions:\n" CONFIG_OPTIONS},
    {"check", "usage: mailhop check [-c FILE] [-o KEY=VALUE]...\n"
              "       mailhop check --explain KEY [-c FILE] [-o "
              "KEY=VALUE]...\n\n"
              "Validates the configuration and prints every key as "
              "`key = value`\n(secrets as <set>); exit 1 with "
              "FILE:LINE: message on an error.\n\noptions:\n" CONFIG_OPTIONS
              "  --explain KEY  print KEY's description, default and current "
              "value\n"},
    {"status",
     "usage: mailhop status [-s SOCKET] [--json]\n\n"
     "The daemon's status through the admin socket.\n\noptions:\n" ADMIN_OPTIONS
     "  --json         the admin socket's JSON\n"},
    {"queue",
     "usage: mailhop queue [-s SOCKET] [--json]\n"
     "       mailhop queue show ID\n"
     "       mailhop queue flush [ID]\n"
     "       mailhop queue delete ID\n"
     "       mailhop queue hold ID | release ID\n"
     "       mailhop queue [list] [FILTER]...\n"
     "       mailhop queue delete|hold|release|flush FILTER...\n\n"
     "Lists the queue (a table; JSON with --json), shows one "
     "message, retries\ndeferred mail now, removes a message "
     "without a bounce, or stops and\nresumes delivery attempts "
     "for one message.  With FILTERs (all ANDed) it\nlists, or acts "
     "on, every matching message and prints how many; a bulk\naction "
     "needs at least one filter or --all.\n\noptions:\n" ADMIN_OPTIONS
     "  --json         the admin socket's JSON\n"
     "  --domain D     a recipient's domain is D\n"
     "  --sender ADDR  the sender is ADDR (or @DOMAIN: its domain)\n"
     "  --state S      queued, deferred or held\n"
     "  --older-than DURATION  received at least DURATION ago (30m, 2h, "
     "7d)\n"
     "  --all          every message (a bulk action without a filter)\n"},
    {"suspend",
     "usage: mailhop suspend DESTINATION [--for DURATION] [-s SOCKET]\n\n"
     "Stops delivery to one destination (a recipient domain, or a "
     "relayhost as\nwritten in the configuration) for DURATION (default "
     "1h) or until unsuspend.\nIts mail waits: it is not deferred, "
     "attempts are not counted, flush does\nnot override it; the "
     "suspension survives a restart and shows in status.\n\noptions:\n"
     "  --for DURATION how long (90s, 30m, 2h, 1d; default "
     "1h)\n" ADMIN_OPTIONS},
    {"unsuspend", "usage: mailhop unsuspend DESTINATION [-s SOCKET]\n\n"
                  "Resumes delivery to a suspended destination.\n\n"
                  "options:\n" ADMIN_OPTIONS},
    {"pause", "usage: mailhop pause [-s SOCKET]\n\n"
              "Stops all outbound delivery; accepting mail goes on (mailhop "
              "resume\nrestarts it).\n\noptions:\n" ADMIN_OPTIONS},
    {"resume", "usage: mailhop resume [-s SOCKET]\n\n"
               "Restarts outbound delivery after mailhop pause.\n\n"
               "options:\n" ADMIN_OPTIONS},
    {"drain",
     "usage: mailhop drain [--to [HOST]:PORT] [--timeout DURATION] [-s "
     "SOCKET]\n"
     "       mailhop drain --cancel [-s SOCKET]\n\n"
     "Stops accepting (listeners closed, /readyz 503, status accepting "
     "false) and\ndelivers every queued message that is not held: with "
     "--to, hands each to\nthat SMTP peer (another mailhop that lists this "
     "one in relay_networks)\ninstead of its own route, envelope and DSN "
     "parameters kept; the local copy\ngoes after the peer's 250.  Open "
     "sessions get 421 after their transaction.\nExit 0 when nothing "
     "deliverable is left and no session is open, 1 on\ntimeout (default "
     "5m) printing how many remain.  The daemon keeps running,\nnot "
     "accepting, until drain --cancel (listeners reopen) or SIGTERM.\n\n"
     "options:\n"
     "  --to [HOST]:PORT     the peer (HOST defaults to 127.0.0.1)\n"
     "  --timeout DURATION   how long to wait (90s, 5m, 1h; default 5m)\n"
     "  --cancel             accept again, deliver by the own routes\n"
     "  --json               print {\"drained\", \"remaining\", "
     "\"sessions\"}\n" ADMIN_OPTIONS},
    {"tlsrpt", "usage: mailhop tlsrpt [-s SOCKET] [--json]\n\n"
               "Shows the TLS-RPT counts of the current report period, per "
               "policy\ndomain and policy type: successful and failed TLS "
               "sessions, and the\nfailures by result type (RFC 8460).\n\n"
               "options:\n" ADMIN_OPTIONS},
    {"resolve",
     "usage: mailhop resolve DOMAIN [--sender ADDR] [-c FILE] [-o "
     "KEY=VALUE]...\n\n"
     "Prints the delivery candidates for DOMAIN in the order they would "
     "be\ntried (MX, dns_servers, smtp_port from the configuration). With "
     "a\nroutes_file or --sender, first the route a message from ADDR to "
     "DOMAIN\nwould take and its target.\n\noptions:\n" CONFIG_OPTIONS
     "  --sender ADDR  the envelope sender, for sender routes\n"},
};

const char *help_text(const char *cmd) {
  for (size_t i = 0; cmd && i < sizeof command_help / sizeof command_help[0];
       i++)
    if (strcmp(cmd, command_help[i].cmd) == 0)
      return command_help[i].text;
  return usage;
}

void help_usage_line(const char *cmd, char *out, size_t cap) {
  const char *t = help_text(cmd);
  const char *nl = strchr(t, '\n');
  snprintf(out, cap, "%.*s", nl ? (int)(nl - t) : (int)strlen(t), t);
}
