/*
 * mailhop: an SMTP relay.  main parses the command line, loads the
 * configuration and hands over to the command; serve() wires the parts.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cmd/admin_cli.h"
#include "cmd/explain.h"
#include "cmd/help.h"
#include "cmd/dkim_cmd.h"
#include "cmd/resolve_cmd.h"
#include "config.h"
#include "log.h"
#include "relay/preflight.h"
#include "relay/routes.h"
#include "relay/serve.h"

extern char **environ;

/* Prints the help of the command cli names, or the usage. */
static void print_help(const struct cli *cli) {
  fputs(help_text(cli->n_words > 0 ? cli->words[0] : NULL), stdout);
}

#define DEFAULT_CONFIG "/etc/mailhop/mailhop.conf"

/* Loads the configuration from the command line's sources, or says why. */
static int load_config(const struct cli *cli, struct config *cfg, int quiet) {
  struct config_source src = {
      .file = cli->config_file ? cli->config_file : DEFAULT_CONFIG,
      .file_explicit = cli->config_file != NULL,
      .environ = environ,
      .overrides = cli->overrides,
      .n_overrides = cli->n_overrides,
  };
  struct config_warnings warn;
  char err[CONFIG_ERR_MAX];
  if (config_load(cfg, &src, &warn, err) < 0) {
    fprintf(stderr, "%s\n", err);
    return -1;
  }
  log_setup(cfg->log_format == CONFIG_LOG_JSON ? LOG_FMT_JSON : LOG_FMT_LOGFMT,
            LOG_INFO);
  for (int i = 0; i < warn.n && !quiet; i++)
    log_msg(LOG_WARN, "config", "%s", warn.text[i]);
  return 0;
}

static int cmd_check(const struct cli *cli) {
  struct config *cfg = malloc(sizeof *cfg);
  if (!cfg)
    return 2;
  if (cli->explain) {
    int loaded = load_config(cli, cfg, 1) == 0;
    int rc =
        explain_main(cli->explain, loaded ? cfg : NULL, NULL, stdout, stderr);
    free(cfg);
    return rc;
  }
  if (load_config(cli, cfg, 0) < 0) {
    free(cfg);
    return 1;
  }
  /* The files it names are part of the configuration: read and check
   * them as serve would (certificate and key, trust anchors, users file,
   * DKIM keys), so that what check passes, serve starts with. */
  char ferr[1024];
  if (preflight_files(cfg, 1, ferr, sizeof ferr) < 0) {
    fprintf(stderr, "%s\n", ferr);
    free(cfg);
    return 1;
  }
  /* So is the routes file (CONTRACT §4a): printed after the keys. */
  struct relay_routes *routes;
  char rerr[1024];
  if (relay_routes_load(cfg->routes_file, &routes, rerr, sizeof rerr) < 0) {
    fprintf(stderr, "%s\n", rerr);
    free(cfg);
    return 1;
  }
  size_t need = config_print(cfg, NULL, 0) + 1;
  size_t rneed = relay_routes_print(routes, NULL, 0) + 1;
  char *out = malloc(need + rneed);
  if (!out) {
    relay_routes_unref(routes);
    free(cfg);
    return 2;
  }
  config_print(cfg, out, need);
  relay_routes_print(routes, out + strlen(out), rneed);
  fputs(out, stdout);
  free(out);
  relay_routes_unref(routes);
  free(cfg);
  return 0;
}

int main(int argc, char **argv) {
  /* `dkim` takes options of its own (--type, --bits, --out). */
  if (argc >= 2 && strcmp(argv[1], "dkim") == 0)
    return dkim_cmd_main(argc - 1, argv + 1);
  struct cli cli;
  char err[256];
  if (cli_parse(&cli, argc, argv, err, sizeof err) < 0) {
    fprintf(stderr, "mailhop: %s\n", err);
    return 1;
  }
  if (cli.version) {
    printf("mailhop %s\n", MAILHOP_VERSION);
    return 0;
  }
  if (cli.help) {
    print_help(&cli);
    return 0;
  }
  if (cli.n_words == 0) {
    fputs(help_text(NULL), stderr);
    return 1;
  }
  const char *cmd = cli.words[0];
  if (cli.explain && strcmp(cmd, "check") != 0) {
    fprintf(stderr, "mailhop: --explain goes with check (mailhop check "
                    "--explain KEY)\n");
    return 1;
  }
  if (strcmp(cmd, "check") == 0 && cli.n_words == 1)
    return cmd_check(&cli);
  if (strcmp(cmd, "check") == 0) {
    char line[160];
    help_usage_line("check", line, sizeof line);
    fprintf(stderr, "mailhop: check takes no arguments (got '%s'; %s)\n",
            cli.words[1], line);
    return 1;
  }

  int known = strcmp(cmd, "serve") == 0 || strcmp(cmd, "resolve") == 0 ||
              strcmp(cmd, "status") == 0 || strcmp(cmd, "queue") == 0 ||
              strcmp(cmd, "pause") == 0 || strcmp(cmd, "resume") == 0 ||
              strcmp(cmd, "tlsrpt") == 0 || strcmp(cmd, "suspend") == 0 ||
              strcmp(cmd, "unsuspend") == 0 || strcmp(cmd, "drain") == 0;
  if (known && strcmp(cmd, "resolve") == 0 && cli.n_words != 2) {
    fprintf(stderr, "mailhop: resolve takes one DOMAIN (usage: mailhop resolve "
                    "DOMAIN [--sender ADDR])\n");
    return 1;
  }
  if (known && strcmp(cmd, "serve") == 0 && cli.n_words != 1) {
    fprintf(stderr, "mailhop: serve takes no arguments (got '%s')\n",
            cli.words[1]);
    return 1;
  }
  if (!known) {
    fprintf(stderr, "mailhop: unknown command '%s' (see mailhop --help)\n",
            cmd);
    return 1;
  }
  struct config *cfg = malloc(sizeof *cfg);
  if (!cfg)
    return 2;
  /* An admin command given its socket (-s) needs nothing else of the
   * configuration: a broken file or MAILHOP_* variable must not keep the
   * operator from asking the daemon (as postqueue does not care). */
  int admin = strcmp(cmd, "serve") != 0 && strcmp(cmd, "resolve") != 0;
  if (admin && cli.socket && !cli.config_file)
    memset(cfg, 0, sizeof *cfg);
  /* Warnings concern the daemon; the admin commands stay quiet. */
  else if (load_config(&cli, cfg, strcmp(cmd, "serve") != 0) < 0) {
    free(cfg);
    return 1;
  }
  int rc;
  if (strcmp(cmd, "serve") == 0)
    rc = serve_main(cfg);
  else if (strcmp(cmd, "resolve") == 0)
    rc = resolve_cmd_main(cfg, cli.words[1], cli.f_sender);
  else
    rc = admin_cli_main(cfg, &cli);
  free(cfg);
  return rc;
}
