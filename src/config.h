/*
 * config: the effective configuration (CONTRACT §2).
 *
 * Sources, later wins: built-in defaults < file < MAILHOP_* environment <
 * -o KEY=VALUE.  config_load() is pure apart from reading the files it is
 * told to read (the config file and *_FILE secrets); it never exits and
 * never logs: errors come back as "FILE:LINE: message" or "KEY: message",
 * warnings through a list the caller prints.
 *
 * The struct is filled once and then treated as immutable.
 */
#ifndef MAILHOP_CONFIG_H
#define MAILHOP_CONFIG_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define CONFIG_MAX_LIST 32
#define CONFIG_ERR_MAX 512

/* An IP literal with a port: "127.0.0.1:2525", "[::1]:2525". */
struct config_addr {
  struct sockaddr_storage sa; /* AF_INET or AF_INET6, port set */
  char text[64];              /* as printed: ip:port or [ip]:port */
};

/* A CIDR block: family, network bytes, prefix length. */
struct config_cidr {
  int family; /* AF_INET or AF_INET6 */
  uint8_t addr[16];
  int prefix;
};

/* One relayhost entry: "host:port" (MX lookup) or "[host]:port" (direct). */
struct config_relayhost {
  char host[256];
  uint16_t port;
  int mx_lookup; /* 1 for host:port, 0 for [host]:port */
};

/* One dkim_sign entry, DOMAIN:SELECTOR:KEYFILE (CONTRACT §3a). */
struct config_dkim {
  char domain[256]; /* lower case */
  char selector[64];
  char keyfile[1024];
};

/* A rate limit, N/DURATION (CONTRACT §2 destination_rate): at most n
 * starts in any window of window_ms; n = 0: no limit. */
#define CONFIG_RATE_MAX 100000
struct config_rate {
  unsigned n; /* 0..CONFIG_RATE_MAX */
  uint64_t window_ms;
};

enum config_relayhost_tls {
  CONFIG_RELAYHOST_TLS_STARTTLS,
  CONFIG_RELAYHOST_TLS_IMPLICIT,
  CONFIG_RELAYHOST_TLS_OPPORTUNISTIC,
  CONFIG_RELAYHOST_TLS_NONE,
};

/* relayhost_auth: the SASL mechanism (CONTRACT §2, §4a). */
enum config_relayhost_auth {
  CONFIG_RELAYHOST_AUTH_AUTO,
  CONFIG_RELAYHOST_AUTH_PLAIN,
  CONFIG_RELAYHOST_AUTH_LOGIN,
  CONFIG_RELAYHOST_AUTH_XOAUTH2,
};

enum config_outbound_tls {
  CONFIG_OUTBOUND_TLS_OPPORTUNISTIC,
  CONFIG_OUTBOUND_TLS_REQUIRED,
  CONFIG_OUTBOUND_TLS_NONE,
  CONFIG_OUTBOUND_TLS_DANE,      /* RFC 7672 where secure, else opportunistic */
  CONFIG_OUTBOUND_TLS_DANE_ONLY, /* RFC 7672 or defer (CONTRACT §4b) */
};

enum config_log_format { CONFIG_LOG_LOGFMT, CONFIG_LOG_JSON };

struct config {
  struct config_addr listen[CONFIG_MAX_LIST];
  int n_listen;
  struct config_addr listen_tls[CONFIG_MAX_LIST];
  int n_listen_tls;
  char hostname[256];
  struct config_cidr relay_networks[CONFIG_MAX_LIST];
  int n_relay_networks;
  char allowed_sender_domains[CONFIG_MAX_LIST][256];
  int n_allowed_sender_domains;
  char auth_users_file[4096];
  int auth_require_tls;
  char tls_cert_file[4096];
  char tls_key_file[4096];
  uint64_t max_message_size; /* bytes */
  uint64_t queue_minfree;    /* bytes the queue's file system keeps free */
  int max_recipients;
  int max_sessions;
  uint64_t smtp_timeout_ms;
  uint64_t min_data_rate; /* bytes per second */
  uint64_t shutdown_timeout_ms;
  int has_user; /* uid/gid valid */
  unsigned uid, gid;
  struct config_relayhost relayhost[CONFIG_MAX_LIST];
  int n_relayhost;
  char relayhost_user[256];
  char relayhost_password[1024];
  char relayhost_password_file[4096];
  int relayhost_auth_plaintext;
  enum config_relayhost_tls relayhost_tls;
  enum config_relayhost_auth relayhost_auth;
  enum config_outbound_tls outbound_tls;
  char tls_ca_file[4096]; /* empty: the system store */
  uint16_t smtp_port;
  struct config_addr dns_servers[CONFIG_MAX_LIST]; /* port 53 unless given */
  int n_dns_servers;                               /* 0: use /etc/resolv.conf */
  uint64_t dns_timeout_ms;
  uint64_t connect_timeout_ms;
  int max_outbound;
  int max_per_destination;
  int max_rcpt_per_transaction;
  uint64_t retry_schedule_ms[CONFIG_MAX_LIST];
  int n_retry_schedule;
  uint64_t queue_lifetime_ms;
  char queue_path[4096];
  char admin_socket[4096];
  enum config_log_format log_format;
  struct config_addr metrics_listen[CONFIG_MAX_LIST]; /* HTTP (CONTRACT §7) */
  int n_metrics_listen;
  struct config_dkim dkim_sign[CONFIG_MAX_LIST];
  int n_dkim_sign;
  /* PROXY protocol senders (CONTRACT 2); 0: no PROXY header expected */
  struct config_cidr proxy_networks[CONFIG_MAX_LIST];
  int n_proxy_networks;
  int received_header_redacted;        /* received_header = redacted */
  struct config_rate destination_rate; /* per destination (sched) */
  struct config_rate outbound_rate;    /* all outbound together */
  uint64_t delay_warning_time_ms;      /* 0: no delay warnings */
  /* local@domain that gets a copy of every bounce ("": none); 64 + 1 +
   * 255 bytes at most, as SMTP_ADDR_MAX */
  char bounce_notice_recipient[321];
  char routes_file[4096]; /* empty: no routes (CONTRACT §4a) */
  /* the OAuth2 client for XOAUTH2 (CONTRACT §4a); the _file keys are read
   * into the secrets at load */
  char relayhost_oauth2_token_url[2048]; /* empty: the token is the password */
  char relayhost_oauth2_client_id[512];
  char relayhost_oauth2_client_secret[1024];
  char relayhost_oauth2_client_secret_file[4096];
  char relayhost_oauth2_refresh_token[4096];
  char relayhost_oauth2_refresh_token_file[4096];
  char relayhost_oauth2_scope[1024];
  /* outbound trust (CONTRACT §4b) */
  int mta_sts;                  /* honour MTA-STS policies on MX delivery */
  int tls_rpt;                  /* send TLS-RPT reports */
  uint64_t tls_rpt_interval_ms; /* the report period */
  uint16_t https_port;          /* MTA-STS policy fetches */

  /* private: set when relay_networks was given by any source */
  int relay_networks_set;
};

/* Where the configuration comes from; the caller collects it. */
struct config_source {
  const char *file;     /* -c FILE, or NULL */
  int file_explicit;    /* 1 if -c was given: a missing file is an error */
  char *const *environ; /* NULL-terminated "NAME=VALUE" list, or NULL */
  const char *const *overrides; /* -o "KEY=VALUE" strings */
  int n_overrides;
};

#define CONFIG_MAX_WARNINGS 16
struct config_warnings {
  char text[CONFIG_MAX_WARNINGS][CONFIG_ERR_MAX];
  int n;
};

/*
 * Fills cfg from src.  Returns 0, or -1 with a one-line message in err
 * ("FILE:LINE: message" or "KEY: message").
 */
int config_load(struct config *cfg, const struct config_source *src,
                struct config_warnings *warn, char err[CONFIG_ERR_MAX])
    __attribute__((warn_unused_result));

/* Built-in defaults only (hostname from the system). */
void config_defaults(struct config *cfg);

/*
 * Parses a file's text (for tests and config_load): name is used in the
 * error messages.  Returns 0 or -1 with err set.
 */
int config_parse_text(struct config *cfg, const char *name, const char *text,
                      size_t len, char err[CONFIG_ERR_MAX])
    __attribute__((warn_unused_result));

/* Writes every key as "key = value\n" lines, secrets as <set>. */
size_t config_print(const struct config *cfg, char *out, size_t cap);

/*
 * For `mailhop check --explain`: the key a mistyped name most likely meant
 * (a static string), or NULL.
 */
const char *config_near_key(const char *name);

/*
 * The built-in default of key name as the key table writes it ("" for
 * empty; *dflt NULL when it is computed at start-up, as hostname's).
 * Returns 0, or -1 when name is no key.
 */
int config_key_default(const char *name, const char **dflt);

/*
 * Parses a rate "N/DURATION" ("30/1m", "3/10s", "5/300ms"): N from 1 to
 * CONFIG_RATE_MAX, DURATION as the durations of the file (greater than 0,
 * at most 7 days).  Surrounding spaces are allowed around N and DURATION.
 * Pure.  Returns 0, or -1 with a message (no key name) in err.  The
 * routes file's `rate` uses it too.
 */
int config_parse_rate(const char *s, struct config_rate *out,
                      char err[CONFIG_ERR_MAX])
    __attribute__((warn_unused_result));

/* 1 if the address (AF_INET/AF_INET6 sockaddr) is in the CIDR list (e.g.
 * relay_networks, proxy_networks). */
int config_cidr_match(const struct config_cidr *list, int n,
                      const struct sockaddr *sa);

/*
 * Reads the first line of a secret file (the *_FILE convention of CONTRACT
 * §2: passwords, tokens, client secrets) into out (cap bytes), without its
 * CR/LF; an empty file gives "".  Blocking: start-up, or off the loop.
 * Returns 0, or -1 with the reason in why (the path and strerror, never
 * the content).
 */
int config_read_secret(const char *path, char *out, size_t cap, char *why,
                       size_t whycap);

/* The directory holding queue_path ("." for a bare file name), where the
 * queue and the DATA spools live, into out (cap bytes).  Pure. */
void config_queue_dir(const struct config *cfg, char *out, size_t cap);

#endif
