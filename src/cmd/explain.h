/*
 * explain: `mailhop check --explain KEY` — one configuration key's
 * description, default and current value.
 *
 * The descriptions come from docs/keys.txt through a table that
 * scripts/gen-keydocs generates at build time (keydocs.c); the key's
 * existence and default come from the key table in config/keys.c.
 */
#ifndef MAILHOP_EXPLAIN_H
#define MAILHOP_EXPLAIN_H

#include <stddef.h>
#include <stdio.h>

#include "config.h"

/* One key's description: wrapped at 72 columns, ends in a newline. */
struct keydoc {
  const char *name;
  const char *text;
};

/* The generated table (keydocs.c); it may hold keys not in config/keys.c. */
extern const struct keydoc keydocs[];
extern const size_t n_keydocs;

/* The description of key name, or NULL. */
const char *explain_text(const char *name);

/*
 * Prints key's description, default and current value to out.  key may be
 * written as in the file (relay_networks) or as its environment variable
 * (MAILHOP_RELAY_NETWORKS).  cfg is the loaded configuration, or NULL
 * when it could not be loaded (the current value is then "unknown", and
 * cfg_err, when not NULL, is printed to err).  An unknown key prints "mailhop:
 * no key 'X'" and a did-you-mean to err.  Returns the exit code: 0, or 1 for an
 * unknown key, a key without a description, or cfg NULL.
 */
int explain_main(const char *key, const struct config *cfg, const char *cfg_err,
                 FILE *out, FILE *err);

#endif
