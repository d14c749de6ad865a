/*
 * proto/routes: the routes_file parser and matcher (CONTRACT §4a).  Pure:
 * no I/O; the caller reads the file and checks the password files.
 *
 * One route per line, "#" comments and blank lines ignored:
 *
 *     recipient:@DOMAIN | sender:ADDRESS | sender:@DOMAIN   key=value ...
 *
 * with the keys relayhost (a relayhost list as for the configuration key,
 * or "mx"), relayhost_user, relayhost_password_file, relayhost_tls,
 * relayhost_auth, relayhost_auth_plaintext and rate (N/DURATION).  Keys a
 * route leaves out take their built-in defaults, never the global values.
 */
#ifndef MAILHOP_PROTO_ROUTES_H
#define MAILHOP_PROTO_ROUTES_H

#include <stddef.h>
#include <stdint.h>

#define ROUTES_MAX 4096       /* routes per file */
#define ROUTES_MAX_HOSTS 32   /* relayhost failover list (CONFIG_MAX_LIST) */
#define ROUTES_LINE_MAX 16384 /* bytes of one line */
#define ROUTES_KEY_MAX 256    /* bytes of a destination key, NUL included */

enum route_kind {
  ROUTE_RECIPIENT_DOMAIN, /* recipient:@DOMAIN */
  ROUTE_SENDER_ADDRESS,   /* sender:ADDRESS */
  ROUTE_SENDER_DOMAIN,    /* sender:@DOMAIN */
};

/* Values as config.h's enum config_relayhost_tls / _auth. */
enum route_tls {
  ROUTE_TLS_STARTTLS,
  ROUTE_TLS_IMPLICIT,
  ROUTE_TLS_OPPORTUNISTIC,
  ROUTE_TLS_NONE
};
enum route_auth {
  ROUTE_AUTH_AUTO,
  ROUTE_AUTH_PLAIN,
  ROUTE_AUTH_LOGIN,
  ROUTE_AUTH_XOAUTH2
};

struct route_host {
  char host[256];
  uint16_t port;
  int mx_lookup; /* 1 for host:port, 0 for [host]:port */
};

struct route {
  enum route_kind kind;
  char match[320]; /* lower-cased domain (no '@') or address */
  int line;        /* 1-based line in the file */
  struct route_host hosts[ROUTES_MAX_HOSTS];
  int n_hosts; /* 0: MX delivery (relayhost=mx, or no relayhost) */
  char user[256];
  char password_file[4096];
  enum route_tls tls;
  enum route_auth auth;
  int auth_plaintext;
  uint64_t rate_n;         /* 0: no rate of its own */
  uint64_t rate_window_ms; /* the rate's window, ms */
  /* The destination key of this route's target (relayhost routes): the
   * relayhost list as "[h]:p,h:p" (host names in lower case), with "#LINE"
   * added when an earlier route names the same list with other settings
   * (a later route with the same settings as that one shares its key).  Empty
   * for MX routes (their destination is the recipient domain). */
  char key[ROUTES_KEY_MAX];
};

struct routes {
  struct route *r; /* owned; in file order */
  size_t n;
};

/*
 * Parses a routes file's text.  name is the file name used in errors.
 * Returns 0 with *out filled (free with routes_free), or -1 with
 * "NAME:LINE: message" in err (and *out empty).  Checks the rules of
 * CONTRACT §2 per route: a user needs a password file and the other way
 * round; credentials need a relayhost; credentials over relayhost_tls none
 * or opportunistic need relayhost_auth_plaintext=yes.
 */
int routes_parse(const char *name, const char *text, size_t len,
                 struct routes *out, char *err, size_t errlen);

void routes_free(struct routes *rs);

/*
 * The route of a recipient: sender is the envelope sender ("" for <>),
 * rcpt_domain the recipient's domain.  A recipient route wins over a
 * sender route, an exact sender address over a sender domain, the first
 * line among equals; case-insensitive.  Returns a route of rs, or NULL
 * (the global settings apply).
 */
const struct route *routes_match(const struct routes *rs, const char *sender,
                                 const char *rcpt_domain);

/*
 * The peer of `drain --to [HOST]:PORT` (CONTRACT §1): "host:port",
 * "[host]:port" (an IPv6 literal needs the brackets) or ":port" (HOST
 * left out: 127.0.0.1).  The port is required (1..65535).  Fills out
 * (mx_lookup 0: the host's own addresses).  0, or -1 for anything else.
 * Pure.
 */
int routes_parse_peer(const char *s, struct route_host *out);

/* "recipient:@d", "sender:a@d" or "sender:@d" into out (for check and
 * logs). */
void routes_format_match(const struct route *r, char *out, size_t cap);

/*
 * Destination names as an operator writes them (`suspend`, CONTRACT §1).
 * Pure.  A name is compared in its canonical form: ASCII lower case.
 *
 * routes_dest_canon: copies in to out (cap bytes) in lower case; 0, or -1
 * when in is empty, does not fit, or holds a blank or control byte.
 */
int routes_dest_canon(const char *in, char *out, size_t cap);

/*
 * 1 when the canonical name designates the relayhost list hosts[0..n) (a
 * route's, or the global relayhost): one entry as written ("[h]:p" or
 * "h:p", the port always given: the default is 25), one entry's host
 * without the port ("[h]" or "h": that host on whatever port the list
 * gives it), or the whole list in order, comma-separated (each entry with
 * or without its port).  Host names compare without case.  Else 0.
 */
int routes_dest_covers(const char *name, const struct route_host *hosts, int n);

/*
 * 1 when the canonical name can be a recipient domain as the scheduler
 * keys it: dot-separated labels of 1..63 bytes (a-z, 0-9, '-' not first
 * or last, '_', UTF-8), 253 bytes at most, or an address literal
 * "[192.0.2.1]" / "[ipv6:2001:db8::1]" (RFC 5321 §4.1.3).  Else 0.
 */
int routes_dest_is_domain(const char *name);

#endif
