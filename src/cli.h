/*
 * cli: the command line of the mailhop binary (CONTRACT §1), parsed into
 * one struct.  Options may stand anywhere after the command words.
 */
#ifndef MAILHOP_CLI_H
#define MAILHOP_CLI_H

#include <stddef.h>

#define CLI_MAX_WORDS 4
#define CLI_MAX_OVERRIDES 64

struct cli {
  const char *words[CLI_MAX_WORDS]; /* command words: "queue", "show", ID */
  int n_words;
  const char *config_file;                  /* -c */
  const char *socket;                       /* -s */
  const char *explain;                      /* check --explain KEY */
  const char *sender;                       /* resolve --sender ADDR */
  const char *overrides[CLI_MAX_OVERRIDES]; /* -o KEY=VALUE */
  int n_overrides;
  int json;    /* --json */
  int help;    /* --help / -h */
  int version; /* --version / -V */
};

/* Returns 0, or -1 with a one-line message in err. */
int cli_parse(struct cli *c, int argc, char **argv, char *err, size_t errlen);

#endif
