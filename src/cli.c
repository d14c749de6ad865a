#include "cli.h"

#include <stdio.h>
#include <string.h>

int cli_parse(struct cli *c, int argc, char **argv, char *err, size_t errlen) {
  memset(c, 0, sizeof *c);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char **slot = NULL;
    int once = 0; /* a filter: given twice would silently drop one */
    if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0)
      slot = &c->config_file;
    else if (strcmp(a, "-s") == 0 || strcmp(a, "--socket") == 0)
      slot = &c->socket;
    else if (strcmp(a, "--explain") == 0)
      slot = &c->explain;
    else if (strcmp(a, "--domain") == 0)
      slot = &c->f_domain, once = 1;
    else if (strcmp(a, "--sender") == 0)
      slot = &c->f_sender, once = 1;
    else if (strcmp(a, "--state") == 0)
      slot = &c->f_state, once = 1;
    else if (strcmp(a, "--older-than") == 0)
      slot = &c->f_older_than, once = 1;
    else if (strcmp(a, "--for") == 0)
      slot = &c->for_duration;
    else if (strcmp(a, "--to") == 0)
      slot = &c->drain_to;
    else if (strcmp(a, "--timeout") == 0)
      slot = &c->timeout;
    if (slot) {
      if (i + 1 >= argc) {
        snprintf(err, errlen, "%s needs an argument", a);
        return -1;
      }
      if (once && *slot) {
        snprintf(err, errlen,
                 "%s given twice (filters are ANDed: give each at most once)",
                 a);
        return -1;
      }
      *slot = argv[++i];
      continue;
    }
    if (strcmp(a, "-o") == 0) {
      if (i + 1 >= argc) {
        snprintf(err, errlen, "-o needs KEY=VALUE");
        return -1;
      }
      if (c->n_overrides >= CLI_MAX_OVERRIDES) {
        snprintf(err, errlen, "too many -o options");
        return -1;
      }
      c->overrides[c->n_overrides++] = argv[++i];
      continue;
    }
    if (strcmp(a, "--json") == 0) {
      c->json = 1;
    } else if (strcmp(a, "--all") == 0) {
      c->f_all = 1;
    } else if (strcmp(a, "--cancel") == 0) {
      c->cancel = 1;
    } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      c->help = 1;
    } else if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
      c->version = 1;
    } else if (a[0] == '-' && a[1] != '\0') {
      snprintf(err, errlen, "unknown option '%s' (see mailhop --help)", a);
      return -1;
    } else {
      if (c->n_words >= CLI_MAX_WORDS) {
        snprintf(err, errlen, "too many arguments at '%s'", a);
        return -1;
      }
      c->words[c->n_words++] = a;
    }
  }
  return 0;
}
