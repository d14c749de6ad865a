/*
 * relay/routes: the routes_file loaded (CONTRACT §4a).  Reads the file,
 * parses it with proto/routes and checks that every route's password file
 * can be read; a loaded table is reference-counted so that deliveries in
 * flight keep the routes they started with across a SIGHUP reload.
 *
 * Runs on the loop thread at start-up and on SIGHUP only (one small file;
 * the same moment the certificates and trust anchors are read).
 */
#ifndef MAILHOP_RELAY_ROUTES_H
#define MAILHOP_RELAY_ROUTES_H

#include <stddef.h>

#include "proto/routes.h"

#define RELAY_ROUTES_FILE_MAX (4 * 1024 * 1024) /* bytes of a routes file */

struct relay_routes {
  int refs;
  struct routes rs;
};

/*
 * Loads file (empty: no routes, an empty table).  Returns 0 with *out
 * (refs 1; release with relay_routes_unref), or -1 with "FILE:LINE:
 * message" (or "routes_file: message" when the file cannot be read) in
 * err.
 */
int relay_routes_load(const char *file, struct relay_routes **out, char *err,
                      size_t errlen);

/* Takes one more reference; returns rt (NULL stays NULL). */
struct relay_routes *relay_routes_ref(struct relay_routes *rt);

/* Drops a reference; frees the table with the last one.  NULL is fine. */
void relay_routes_unref(struct relay_routes *rt);

/*
 * Writes the routes as "route = MATCH key=value ..." lines (for `mailhop
 * check`; the password files' paths are printed, never their content).
 * Returns the length it needs (bytes, without the NUL), as snprintf.
 */
size_t relay_routes_print(const struct relay_routes *rt, char *out, size_t cap);

/*
 * A route's password (or token) file: config_read_secret(), and an empty
 * one is an error too.  Blocking: off the loop, or at start-up.  Returns
 * 0, or -1 with the reason in why (never the content).
 */
int relay_read_secret(const char *path, char *out, size_t cap, char *why,
                      size_t whycap);

#endif
