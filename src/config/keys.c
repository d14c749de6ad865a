/*
 * config/keys.c: the key table (each key's name, type, field and built-in
 * default), lookup by name, and the defaults it gives.  scripts/gen-keydocs
 * reads the table from this file's source for the documentation.
 */
#include "config.h"
#include "config/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const struct key cfg_keys[] = {
    {"listen", K_ADDRS, F(listen), F(n_listen), "127.0.0.1:2525"},
    {"listen_tls", K_ADDRS, F(listen_tls), F(n_listen_tls), ""},
    {"hostname", K_STRING, F(hostname), S(hostname), NULL},
    {"relay_networks", K_CIDRS, F(relay_networks), F(n_relay_networks),
     "127.0.0.0/8, ::1/128"},
    {"allowed_sender_domains", K_DOMAINS, F(allowed_sender_domains),
     F(n_allowed_sender_domains), ""},
    {"auth_users_file", K_PATH, F(auth_users_file), S(auth_users_file), ""},
    {"auth_require_tls", K_BOOL, F(auth_require_tls), 0, "yes"},
    {"tls_cert_file", K_PATH, F(tls_cert_file), S(tls_cert_file), ""},
    {"tls_key_file", K_PATH, F(tls_key_file), S(tls_key_file), ""},
    {"max_message_size", K_SIZE, F(max_message_size), 0, "25m"},
    {"queue_minfree", K_SIZE, F(queue_minfree), 0, "100m"},
    {"max_recipients", K_INT, F(max_recipients), 0, "100"},
    {"max_sessions", K_INT, F(max_sessions), 0, "1000"},
    {"smtp_timeout", K_DURATION, F(smtp_timeout_ms), 0, "5m"},
    {"min_data_rate", K_SIZE, F(min_data_rate), 0, "500"},
    {"shutdown_timeout", K_DURATION, F(shutdown_timeout_ms), 0, "8s"},
    {"user", K_USER, 0, 0, ""},
    {"relayhost", K_RELAYHOST, F(relayhost), F(n_relayhost), ""},
    {"relayhost_user", K_STRING, F(relayhost_user), S(relayhost_user), ""},
    {"relayhost_password", K_SECRET, F(relayhost_password),
     S(relayhost_password), ""},
    {"relayhost_password_file", K_PATH, F(relayhost_password_file),
     S(relayhost_password_file), ""},
    {"relayhost_auth_plaintext", K_BOOL, F(relayhost_auth_plaintext), 0, "no"},
    {"relayhost_tls", K_RELAYHOST_TLS, 0, 0, "starttls"},
    {"relayhost_auth", K_RELAYHOST_AUTH, 0, 0, "auto"},
    {"outbound_tls", K_OUTBOUND_TLS, 0, 0, "opportunistic"},
    {"tls_ca_file", K_PATH, F(tls_ca_file), S(tls_ca_file), ""},
    {"smtp_port", K_PORT, F(smtp_port), 0, "25"},
    {"dns_servers", K_DNS, F(dns_servers), F(n_dns_servers), ""},
    {"dns_timeout", K_DURATION, F(dns_timeout_ms), 0, "5s"},
    {"connect_timeout", K_DURATION, F(connect_timeout_ms), 0, "30s"},
    {"max_outbound", K_INT, F(max_outbound), 0, "100"},
    {"max_per_destination", K_INT, F(max_per_destination), 0, "10"},
    {"max_rcpt_per_transaction", K_INT, F(max_rcpt_per_transaction), 0, "50"},
    {"retry_schedule", K_SCHEDULE, F(retry_schedule_ms), F(n_retry_schedule),
     "1m,5m,15m,30m,1h,2h,4h"},
    {"queue_lifetime", K_DURATION, F(queue_lifetime_ms), 0, "5d"},
    {"queue_path", K_PATH, F(queue_path), S(queue_path), "./mailhop-queue.db"},
    {"admin_socket", K_PATH, F(admin_socket), S(admin_socket),
     "./mailhop.sock"},
    {"log_format", K_LOG_FORMAT, 0, 0, "logfmt"},
    {"metrics_listen", K_ADDRS, F(metrics_listen), F(n_metrics_listen), ""},
    {"dkim_sign", K_DKIM, F(dkim_sign), F(n_dkim_sign), ""},
    {"proxy_networks", K_CIDRS, F(proxy_networks), F(n_proxy_networks), ""},
    {"received_header", K_RECEIVED_HEADER, 0, 0, "full"},
    {"destination_rate", K_RATE, F(destination_rate), 0, ""},
    {"outbound_rate", K_RATE, F(outbound_rate), 0, ""},
    {"delay_warning_time", K_DURATION_OPT, F(delay_warning_time_ms), 0, ""},
    {"bounce_notice_recipient", K_MAILBOX, F(bounce_notice_recipient),
     S(bounce_notice_recipient), ""},
    {"routes_file", K_PATH, F(routes_file), S(routes_file), ""},
    {"relayhost_oauth2_token_url", K_STRING, F(relayhost_oauth2_token_url),
     S(relayhost_oauth2_token_url), ""},
    {"relayhost_oauth2_client_id", K_STRING, F(relayhost_oauth2_client_id),
     S(relayhost_oauth2_client_id), ""},
    {"relayhost_oauth2_client_secret", K_SECRET,
     F(relayhost_oauth2_client_secret), S(relayhost_oauth2_client_secret), ""},
    {"relayhost_oauth2_client_secret_file", K_PATH,
     F(relayhost_oauth2_client_secret_file),
     S(relayhost_oauth2_client_secret_file), ""},
    {"relayhost_oauth2_refresh_token", K_SECRET,
     F(relayhost_oauth2_refresh_token), S(relayhost_oauth2_refresh_token), ""},
    {"relayhost_oauth2_refresh_token_file", K_PATH,
     F(relayhost_oauth2_refresh_token_file),
     S(relayhost_oauth2_refresh_token_file), ""},
    {"relayhost_oauth2_scope", K_STRING, F(relayhost_oauth2_scope),
     S(relayhost_oauth2_scope), ""},
    {"mta_sts", K_BOOL, F(mta_sts), 0, "yes"},
    {"tls_rpt", K_BOOL, F(tls_rpt), 0, "no"},
    {"tls_rpt_interval", K_DURATION, F(tls_rpt_interval_ms), 0, "1d"},
    {"https_port", K_PORT, F(https_port), 0, "443"},
};
const size_t cfg_n_keys = sizeof cfg_keys / sizeof cfg_keys[0];

const struct key *cfg_find_key(const char *name, size_t len) {
  for (size_t i = 0; i < cfg_n_keys; i++)
    if (strlen(cfg_keys[i].name) == len &&
        memcmp(cfg_keys[i].name, name, len) == 0)
      return &cfg_keys[i];
  return NULL;
}

void config_defaults(struct config *cfg) {
  char err[CONFIG_ERR_MAX];
  memset(cfg, 0, sizeof *cfg);
  for (size_t i = 0; i < cfg_n_keys; i++) {
    if (!cfg_keys[i].dflt)
      continue;
    if (cfg_set_key(cfg, &cfg_keys[i], cfg_keys[i].dflt, err) < 0)
      abort(); /* a broken built-in default is our bug */
  }
  char host[256] = "";
  if (gethostname(host, sizeof host - 1) < 0 || !host[0])
    snprintf(host, sizeof host, "localhost");
  snprintf(cfg->hostname, sizeof cfg->hostname, "%s", host);
  cfg->relay_networks_set = 0;
}

int config_key_default(const char *name, const char **dflt) {
  const struct key *k = cfg_find_key(name, strlen(name));
  if (!k)
    return -1;
  *dflt = k->dflt;
  return 0;
}
