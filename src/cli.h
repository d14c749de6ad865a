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
  const char *overrides[CLI_MAX_OVERRIDES]; /* -o KEY=VALUE */
  int n_overrides;
  /* queue FILTERs (CONTRACT §1), as given; NULL: not given */
  const char *f_domain;     /* --domain D */
  const char *f_sender;     /* --sender ADDR|@DOMAIN|<> */
  const char *f_state;      /* --state queued|deferred|held */
  const char *f_older_than; /* --older-than DURATION */
  int f_all;                /* --all */
  const char *for_duration; /* suspend --for DURATION */
  const char *drain_to;     /* drain --to [HOST]:PORT */
  const char *timeout;      /* drain --timeout DURATION */
  int cancel;               /* drain --cancel */
  int json;                 /* --json */
  int help;                 /* --help / -h */
  int version;              /* --version / -V */
};

/* Returns 0, or -1 with a one-line message in err. */
int cli_parse(struct cli *c, int argc, char **argv, char *err, size_t errlen);

#endif
