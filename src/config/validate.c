/*
 * config/validate.c: the checks across keys, once every source is applied:
 * settings that contradict each other or need a partner (TLS certificate
 * and key, relayhost credentials and TLS, the OAuth2 client, listeners
 * that would be an open relay or collide with metrics_listen), the secrets
 * read from their *_file keys, and the warnings for what is odd but works.
 */
#include "config.h"
#include "config/internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* 1 when two listening addresses would collide at bind: the same port
 * and family, and the same address or either a wildcard. */
static int addr_overlaps(const struct config_addr *x,
                         const struct config_addr *y) {
  if (x->sa.ss_family != y->sa.ss_family)
    return 0;
  if (x->sa.ss_family == AF_INET) {
    const struct sockaddr_in *a = (const void *)&x->sa,
                             *b = (const void *)&y->sa;
    return a->sin_port == b->sin_port &&
           (a->sin_addr.s_addr == b->sin_addr.s_addr ||
            a->sin_addr.s_addr == htonl(INADDR_ANY) ||
            b->sin_addr.s_addr == htonl(INADDR_ANY));
  }
  const struct sockaddr_in6 *a = (const void *)&x->sa,
                            *b = (const void *)&y->sa;
  return a->sin6_port == b->sin6_port &&
         (memcmp(&a->sin6_addr, &b->sin6_addr, sizeof a->sin6_addr) == 0 ||
          IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr) ||
          IN6_IS_ADDR_UNSPECIFIED(&b->sin6_addr));
}

int config_read_secret(const char *path, char *out, size_t cap, char *why,
                       size_t whycap) {
  FILE *f = fopen(path, "r");
  if (!f) {
    snprintf(why, whycap, "cannot read %s: %s", path, strerror(errno));
    return -1;
  }
  if (!fgets(out, (int)cap, f))
    out[0] = '\0';
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    snprintf(why, whycap, "cannot read %s", path);
    out[0] = '\0';
    return -1;
  }
  size_t n = strlen(out);
  while (n && (out[n - 1] == '\n' || out[n - 1] == '\r'))
    out[--n] = '\0';
  return 0;
}

void cfg_warn_add(struct config_warnings *w, const char *fmt, ...) {
  if (!w || w->n >= CONFIG_MAX_WARNINGS)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(w->text[w->n++], CONFIG_ERR_MAX, fmt, ap);
  va_end(ap);
}

static int is_loopback(const struct sockaddr_storage *sa) {
  if (sa->ss_family == AF_INET) {
    const uint8_t *b =
        (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
    return b[0] == 127;
  }
  const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
  return IN6_IS_ADDR_LOOPBACK(a);
}

int cfg_validate(struct config *cfg, struct config_warnings *warn, char *err) {
  if (cfg->n_listen == 0 && cfg->n_listen_tls == 0)
    return ERR("listen: no listener configured");
  int have_cert = cfg->tls_cert_file[0] != '\0';
  int have_key = cfg->tls_key_file[0] != '\0';
  if (have_cert != have_key)
    return ERR("%s: must be set together with %s",
               have_cert ? "tls_key_file" : "tls_cert_file",
               have_cert ? "tls_cert_file" : "tls_key_file");
  if (cfg->n_listen_tls > 0 && !have_cert)
    return ERR("listen_tls: implicit TLS needs tls_cert_file and "
               "tls_key_file");
  if (!cfg->relay_networks_set && !cfg->auth_users_file[0]) {
    for (int i = 0; i < cfg->n_listen + cfg->n_listen_tls; i++) {
      const struct config_addr *a = i < cfg->n_listen
                                        ? &cfg->listen[i]
                                        : &cfg->listen_tls[i - cfg->n_listen];
      if (!is_loopback(&a->sa))
        return ERR("relay_networks: listener %s is not on loopback; set "
                   "relay_networks explicitly (or auth_users_file) so "
                   "mailhop is not an open relay",
                   a->text);
    }
  }
  if (cfg->relayhost_password_file[0]) {
    char msg[CONFIG_ERR_MAX];
    if (cfg->relayhost_password[0])
      return ERR("relayhost_password_file: relayhost_password is set too; "
                 "use one");
    if (config_read_secret(cfg->relayhost_password_file,
                           cfg->relayhost_password,
                           sizeof cfg->relayhost_password, msg, sizeof msg) < 0)
      return ERR("relayhost_password_file: %s", msg);
  }
  /* The OAuth2 client's secrets from their files (CONTRACT §4a). */
  static const struct {
    const char *name;
    size_t file, val, cap;
  } oauth2_files[] = {
      {"relayhost_oauth2_client_secret", F(relayhost_oauth2_client_secret_file),
       F(relayhost_oauth2_client_secret), S(relayhost_oauth2_client_secret)},
      {"relayhost_oauth2_refresh_token", F(relayhost_oauth2_refresh_token_file),
       F(relayhost_oauth2_refresh_token), S(relayhost_oauth2_refresh_token)},
  };
  for (size_t i = 0; i < sizeof oauth2_files / sizeof oauth2_files[0]; i++) {
    const char *file = (const char *)cfg + oauth2_files[i].file;
    char *val = (char *)cfg + oauth2_files[i].val;
    char msg[CONFIG_ERR_MAX];
    if (!file[0])
      continue;
    if (val[0])
      return ERR("%s_file: %s is set too; use one", oauth2_files[i].name,
                 oauth2_files[i].name);
    if (config_read_secret(file, val, oauth2_files[i].cap, msg, sizeof msg) < 0)
      return ERR("%s_file: %s", oauth2_files[i].name, msg);
  }
  int oauth2 = cfg->relayhost_oauth2_token_url[0] != '\0';
  if (oauth2) {
    if (strncasecmp(cfg->relayhost_oauth2_token_url, "https://", 8) != 0)
      return ERR("relayhost_oauth2_token_url: must be an https:// URL");
    if (cfg->relayhost_auth != CONFIG_RELAYHOST_AUTH_XOAUTH2)
      return ERR("relayhost_oauth2_token_url: needs relayhost_auth = xoauth2");
    if (!cfg->relayhost_oauth2_client_id[0])
      return ERR("relayhost_oauth2_client_id: required with "
                 "relayhost_oauth2_token_url");
    if (!cfg->relayhost_user[0])
      return ERR("relayhost_user: required with relayhost_oauth2_token_url "
                 "(the XOAUTH2 user)");
    if (cfg->relayhost_password[0])
      return ERR("relayhost_password: not used with "
                 "relayhost_oauth2_token_url (tokens are fetched); unset it");
    if (!cfg->relayhost_oauth2_client_secret[0] &&
        !cfg->relayhost_oauth2_refresh_token[0])
      return ERR("relayhost_oauth2_client_secret: required with "
                 "relayhost_oauth2_token_url (the client-credentials grant; "
                 "or set relayhost_oauth2_refresh_token)");
  }
  if (cfg->relayhost_auth != CONFIG_RELAYHOST_AUTH_AUTO &&
      !cfg->relayhost_user[0] && cfg->n_relayhost > 0)
    return ERR("relayhost_auth: a mechanism is chosen but relayhost_user is "
               "empty, so AUTH would never be sent; set the credentials or "
               "relayhost_auth = auto");
  int have_user = cfg->relayhost_user[0] != '\0';
  int have_pass = cfg->relayhost_password[0] != '\0' || oauth2;
  if (have_user && !have_pass)
    return ERR("relayhost_password: required when relayhost_user is set");
  if (have_pass && !have_user)
    return ERR("relayhost_user: required when a relayhost password is set");
  if (have_user && !cfg->relayhost_auth_plaintext &&
      (cfg->relayhost_tls == CONFIG_RELAYHOST_TLS_NONE ||
       cfg->relayhost_tls == CONFIG_RELAYHOST_TLS_OPPORTUNISTIC))
    return ERR("relayhost_tls: credentials would be sent without verified "
               "TLS; use starttls or implicit, or set "
               "relayhost_auth_plaintext = yes");
  if (have_user && cfg->n_relayhost == 0)
    cfg_warn_add(warn, "relayhost_user: set but relayhost is empty; ignored");
  if (cfg->delay_warning_time_ms > 0 &&
      cfg->delay_warning_time_ms >= cfg->queue_lifetime_ms)
    return ERR("delay_warning_time: not under queue_lifetime, so no delay "
               "notice could ever be sent (the message bounces first)");
  for (int i = 0; i < cfg->n_metrics_listen; i++)
    for (int j = 0; j < cfg->n_listen + cfg->n_listen_tls; j++) {
      const struct config_addr *a = j < cfg->n_listen
                                        ? &cfg->listen[j]
                                        : &cfg->listen_tls[j - cfg->n_listen];
      if (addr_overlaps(&cfg->metrics_listen[i], a))
        return ERR("metrics_listen: %s is also an SMTP listener (%s)",
                   cfg->metrics_listen[i].text, a->text);
    }
  if (strlen(cfg->admin_socket) > 107)
    return ERR("admin_socket: path is %zu bytes; a Unix socket path holds at "
               "most 107",
               strlen(cfg->admin_socket));
  if (!cfg->admin_socket[0])
    return ERR("admin_socket: must not be empty");
  if (!cfg->queue_path[0])
    return ERR("queue_path: must not be empty");
  if (!cfg->hostname[0])
    return ERR("hostname: must not be empty");
  if (!cfg_valid_domain(cfg->hostname))
    return ERR("hostname: '%s' is not a host name", cfg->hostname);
  if (!strchr(cfg->hostname, '.'))
    cfg_warn_add(warn,
                 "hostname: '%s' has no dot; set a fully qualified name "
                 "(receivers may refuse mail from this HELO)",
                 cfg->hostname);
  return 0;
}

void config_queue_dir(const struct config *cfg, char *out, size_t cap) {
  snprintf(out, cap, "%s", cfg->queue_path);
  char *slash = strrchr(out, '/');
  if (!slash)
    snprintf(out, cap, ".");
  else if (slash == out)
    out[1] = '\0';
  else
    *slash = '\0';
}
