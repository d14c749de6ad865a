/*
 * relay/preflight: the files the configuration names, read and checked
 * the way `serve` uses them, before anything starts: the server
 * certificate chain and key (tls_cert_file, tls_key_file), the trust
 * anchors (tls_ca_file), the users file (auth_users_file) and the DKIM
 * keys (dkim_sign).  `mailhop check` runs it so that a configuration it
 * passes is one `serve` starts with (CONTRACT §1), and `serve` runs it
 * first so that each of these mistakes is a configuration error (exit 1)
 * named in one line.  Blocking file reads: start-up only, never on a
 * running loop.  Owns nothing afterwards.
 */
#ifndef MAILHOP_RELAY_PREFLIGHT_H
#define MAILHOP_RELAY_PREFLIGHT_H

#include <stddef.h>

struct config;

/* 0, or -1 with a one-line reason naming the key and the file in err
 * (errlen bytes, always terminated).  warn: log a warning for each weak
 * DKIM key (RSA under 2048 bits), as `check` does. */
int preflight_files(const struct config *cfg, int warn, char *err,
                    size_t errlen);

#endif
