/*
 * config/internal.h: what the configuration's files share, and nothing else
 * includes (config.h is the module's interface).
 *   keys.c      the key table (name, type, field, default), lookup by name,
 *               the built-in defaults
 *   values.c    the value of each key type: parsers (text into the
 *               field), printers (the field as text), CIDR matching
 *   sources.c   the sources and their precedence: file, MAILHOP_*
 *               environment (with _FILE), -o overrides; did-you-mean
 *   validate.c  the checks across keys once every source is applied:
 *               contradictions, secrets files, warnings
 * All of it is pure apart from reading the files it is told to read.
 */
#ifndef MAILHOP_CONFIG_INTERNAL_H
#define MAILHOP_CONFIG_INTERNAL_H

#include <stddef.h>
#include <stdio.h>

#include "config.h"

/*
 * One table drives parsing, printing and the environment mapping: each key
 * has a type and a setter/printer pair.  Setters get the value text and
 * write a message (without the location prefix) to err on failure.
 */

enum key_type {
  K_ADDRS,
  K_STRING,
  K_CIDRS,
  K_DOMAINS,
  K_PATH,
  K_BOOL,
  K_SIZE,
  K_INT,
  K_DURATION,
  K_USER,
  K_RELAYHOST,
  K_SECRET,
  K_RELAYHOST_TLS,
  K_RELAYHOST_AUTH,
  K_OUTBOUND_TLS,
  K_PORT,
  K_DNS,
  K_SCHEDULE,
  K_LOG_FORMAT,
  K_DKIM,
  K_RECEIVED_HEADER,
  K_RATE,
  K_DURATION_OPT, /* a duration; empty or 0 is 0 (off) */
  K_MAILBOX,      /* local@domain (an SMTP forward-path), or empty */
};

struct key {
  const char *name;
  enum key_type type;
  size_t off;  /* offset of the field in struct config */
  size_t off2; /* count field for lists, or buffer size for strings */
  const char *dflt;
};

#define F(field) offsetof(struct config, field)
#define S(field) sizeof(((struct config *)0)->field)

/* The key table (keys.c), in the order config_print writes it. */
extern const struct key cfg_keys[];
extern const size_t cfg_n_keys;

/* Writes a message into err (CONFIG_ERR_MAX bytes, in scope) and is -1. */
#define ERR(...) (snprintf(err, CONFIG_ERR_MAX, __VA_ARGS__), -1)

/* The key named name[0..len), or NULL (keys.c). */
const struct key *cfg_find_key(const char *name, size_t len);

/* Sets one key from its text.  err gets "key: message" on failure
 * (values.c). */
int cfg_set_key(struct config *cfg, const struct key *k, const char *value,
                char *err);

/* Trims white space from both ends of s[0..*n) (values.c). */
void cfg_trim(const char **s, size_t *n);

/* 1 if s can be a domain name (1 to 253 octets; no space, control
 * character, '@', ',', '<' or '>'), else 0 (values.c). */
int cfg_valid_domain(const char *s);

/* The checks across keys once every source is applied; 0, or -1 with err
 * set (validate.c). */
int cfg_validate(struct config *cfg, struct config_warnings *warn, char *err);

/* Adds a warning to w (none when w is NULL or full) (validate.c). */
void cfg_warn_add(struct config_warnings *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
