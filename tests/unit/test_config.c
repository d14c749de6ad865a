/* Unit tests of the pure configuration parser (CONTRACT §2). */
#include "config.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"

static char err[CONFIG_ERR_MAX];
static struct config cfg;

static int parse(const char *text) {
  config_defaults(&cfg);
  err[0] = '\0';
  return config_parse_text(&cfg, "t.conf", text, strlen(text), err);
}

/* Loads with every source; env and overrides NULL-terminated arrays. */
static int load(const char *file, char *const *env, const char *const *ov) {
  int n = 0;
  while (ov && ov[n])
    n++;
  struct config_source src = {.file = file,
                              .file_explicit = file != NULL,
                              .environ = env,
                              .overrides = ov,
                              .n_overrides = n};
  struct config_warnings w;
  err[0] = '\0';
  return config_load(&cfg, &src, &w, err);
}

static char tmpdir[256];

static const char *write_file(const char *name, const char *text) {
  static char path[8][256];
  static int next;
  char *p = path[next++ % 8];
  snprintf(p, 256, "%s/%s", tmpdir, name);
  FILE *f = fopen(p, "w");
  fputs(text, f);
  fclose(f);
  return p;
}

static void test_defaults(void) {
  CHECK_INT(load(NULL, NULL, NULL), 0);
  CHECK_INT(cfg.n_listen, 1);
  CHECK_STR(cfg.listen[0].text, "127.0.0.1:2525");
  CHECK_INT(cfg.max_message_size, 25 * 1048576);
  CHECK_INT(cfg.max_recipients, 100);
  CHECK_INT(cfg.max_sessions, 1000);
  CHECK_INT(cfg.smtp_timeout_ms, 300000);
  CHECK_INT(cfg.shutdown_timeout_ms, 8000);
  CHECK_INT(cfg.relayhost_tls, CONFIG_RELAYHOST_TLS_STARTTLS);
  CHECK_INT(cfg.outbound_tls, CONFIG_OUTBOUND_TLS_OPPORTUNISTIC);
  CHECK_INT(cfg.smtp_port, 25);
  CHECK_INT(cfg.n_retry_schedule, 7);
  CHECK_INT(cfg.retry_schedule_ms[6], 4 * 3600000);
  CHECK_INT(cfg.queue_lifetime_ms, 5ULL * 86400000);
  CHECK_STR(cfg.queue_path, "./mailhop-queue.db");
  CHECK_STR(cfg.admin_socket, "./mailhop.sock");
  CHECK_INT(cfg.n_relay_networks, 2);
  CHECK_INT(cfg.auth_require_tls, 1);
  CHECK_INT(cfg.relay_networks_set, 0);
}

static void test_values(void) {
  CHECK_INT(parse("# comment\n\nlisten = 127.0.0.1:25, [::1]:2525\n"), 0);
  CHECK_INT(cfg.n_listen, 2);
  CHECK_STR(cfg.listen[1].text, "[::1]:2525");
  CHECK_INT(cfg.listen[1].sa.ss_family, AF_INET6);
  CHECK_INT(parse("max_message_size = 10k\nsmtp_timeout=90s\n"
                  "shutdown_timeout = 2m\nqueue_lifetime = 1d\n"),
            0);
  CHECK_INT(cfg.max_message_size, 10240);
  CHECK_INT(cfg.smtp_timeout_ms, 90000);
  CHECK_INT(cfg.shutdown_timeout_ms, 120000);
  CHECK_INT(cfg.queue_lifetime_ms, 86400000);
  /* sub-second durations (tests use them instead of waiting out seconds) */
  CHECK_INT(parse("smtp_timeout = 300ms\nretry_schedule = 200ms, 1s\n"), 0);
  CHECK_INT(cfg.smtp_timeout_ms, 300);
  CHECK_INT(cfg.retry_schedule_ms[0], 200);
  CHECK_INT(parse("smtp_timeout = ms\n"), -1);
  CHECK_INT(parse("relay_networks = 10.0.0.0/8, 192.168.1.7, 2001:db8::/32\n"),
            0);
  CHECK_INT(cfg.n_relay_networks, 3);
  CHECK_INT(cfg.relay_networks[1].prefix, 32);
  CHECK_INT(cfg.relay_networks_set, 1);
  /* proxy_networks is its own list: relay_networks is left alone */
  CHECK_INT(cfg.n_proxy_networks, 0);
  CHECK_INT(parse("proxy_networks = 10.1.0.0/16, ::1\n"), 0);
  CHECK_INT(cfg.n_proxy_networks, 2);
  CHECK_INT(cfg.proxy_networks[0].prefix, 16);
  CHECK_INT(cfg.proxy_networks[1].prefix, 128);
  CHECK_INT(cfg.n_relay_networks, 2); /* the default, untouched */
  CHECK_INT(cfg.relay_networks[0].prefix, 8);
  {
    char out[32768];
    config_print(&cfg, out, sizeof out);
    CHECK_CONTAINS(out, "proxy_networks = 10.1.0.0/16, ::1/128\n");
    CHECK_CONTAINS(out, "received_header = full\n");
  }
  CHECK_INT(cfg.received_header_redacted, 0);
  CHECK_INT(parse("received_header = redacted\n"), 0);
  CHECK_INT(cfg.received_header_redacted, 1);
  CHECK_INT(parse("relayhost = [smtp.example]:587, mail.example:2525, "
                  "backup.example\n"),
            0);
  CHECK_INT(cfg.n_relayhost, 3);
  CHECK_INT(cfg.relayhost[0].mx_lookup, 0);
  CHECK_INT(cfg.relayhost[0].port, 587);
  CHECK_STR(cfg.relayhost[0].host, "smtp.example");
  CHECK_INT(cfg.relayhost[1].mx_lookup, 1);
  CHECK_INT(cfg.relayhost[2].port, 25);
  CHECK_INT(parse("dns_servers = 127.0.0.1:5353, 127.0.0.2, ::1, "
                  "[::1]:5300\n"),
            0);
  CHECK_INT(cfg.n_dns_servers, 4);
  CHECK_STR(cfg.dns_servers[1].text, "127.0.0.2:53");
  CHECK_STR(cfg.dns_servers[2].text, "[::1]:53");
  CHECK_STR(cfg.dns_servers[3].text, "[::1]:5300");
  CHECK_INT(parse("user = 1000:1001\n"), 0);
  CHECK_INT(cfg.has_user, 1);
  CHECK_INT(cfg.uid, 1000);
  CHECK_INT(cfg.gid, 1001);
  CHECK_INT(parse("retry_schedule = 30s, 2m\n"), 0);
  CHECK_INT(cfg.n_retry_schedule, 2);
  CHECK_INT(cfg.retry_schedule_ms[0], 30000);
  CHECK_INT(parse("auth_require_tls = no\nlog_format = json\n"
                  "relayhost_tls = implicit\noutbound_tls = required\n"
                  "allowed_sender_domains = a.example, B.example\n"),
            0);
  CHECK_INT(cfg.auth_require_tls, 0);
  CHECK_INT(cfg.log_format, CONFIG_LOG_JSON);
  CHECK_INT(cfg.relayhost_tls, CONFIG_RELAYHOST_TLS_IMPLICIT);
  CHECK_INT(cfg.outbound_tls, CONFIG_OUTBOUND_TLS_REQUIRED);
  CHECK_INT(cfg.n_allowed_sender_domains, 2);
  CHECK_INT(parse("outbound_tls = dane\n"), 0);
  CHECK_INT(cfg.outbound_tls, CONFIG_OUTBOUND_TLS_DANE);
  CHECK_INT(parse("outbound_tls = dane-only\n"), 0);
  CHECK_INT(cfg.outbound_tls, CONFIG_OUTBOUND_TLS_DANE_ONLY);
  CHECK_INT(parse("relayhost_auth = xoauth2\n"), 0);
  CHECK_INT(cfg.relayhost_auth, CONFIG_RELAYHOST_AUTH_XOAUTH2);
  /* Rates: N/DURATION, empty = none. */
  CHECK_INT(cfg.destination_rate.n, 0);
  CHECK_INT(parse("destination_rate = 30/1m\noutbound_rate = 5 / 300ms\n"), 0);
  CHECK_INT(cfg.destination_rate.n, 30);
  CHECK_INT(cfg.destination_rate.window_ms, 60000);
  CHECK_INT(cfg.outbound_rate.n, 5);
  CHECK_INT(cfg.outbound_rate.window_ms, 300);
  CHECK_INT(parse("destination_rate = 100000/7d\n"), 0);
  CHECK_INT(cfg.destination_rate.n, 100000);
  CHECK_INT(parse("destination_rate = 3/1h\ndestination_rate =\n"), 0);
  CHECK_INT(cfg.destination_rate.n, 0);
  struct config_rate r;
  CHECK_INT(config_parse_rate("3/10s", &r, err), 0);
  CHECK_INT(r.n, 3);
  CHECK_INT(r.window_ms, 10000);
  CHECK_INT(config_parse_rate("3", &r, err), -1);
  /* A value may contain '#' and '=' (passwords do). */
  CHECK_INT(parse("relayhost_password = a#b=c\n"), 0);
  CHECK_STR(cfg.relayhost_password, "a#b=c");
}

struct bad {
  const char *text;
  const char *want; /* substring of the error */
};

static void test_bad_values(void) {
  static const struct bad cases[] = {
      {"nonsense\n", "t.conf:1: expected 'key = value'"},
      {"\n\nfoo = 1\n", "t.conf:3: unknown key 'foo'"},
      {"listen = localhost:25\n", "t.conf:1: listen:"},
      {"listen = 127.0.0.1\n", "missing port"},
      {"listen = 127.0.0.1:99999\n", "bad port"},
      {"listen = ::1:25\n", "brackets"},
      {"listen = [::1:25\n", "missing ']'"},
      {"listen = [127.0.0.1]:25\n", "not an IPv6"},
      {"listen = 127.0.0.1:25,,127.0.0.1:26\n", "empty item"},
      {"max_message_size = 10x\n", "max_message_size: '10x' is not a size"},
      {"max_message_size = -1\n", "not a size"},
      {"max_message_size = 0\n", "greater than 0"},
      {"max_recipients = ten\n", "max_recipients: 'ten' is not a number"},
      {"max_sessions = 99999999999\n", "not a number"},
      {"smtp_timeout = 5w\n", "smtp_timeout: '5w' is not a duration"},
      {"smtp_timeout = 0\n", "greater than 0"},
      {"auth_require_tls = maybe\n", "not yes or no"},
      {"relay_networks = 10.0.0.0/33\n", "bad prefix"},
      {"relay_networks = example.com/8\n", "not a CIDR"},
      {"proxy_networks = 10.0.0.0/33\n", "proxy_networks: '10.0.0.0/33'"},
      {"proxy_networks = lb.example\n", "proxy_networks: 'lb.example'"},
      {"received_header = none\n", "received_header: 'none' is not full"},
      {"relayhost_tls = sometimes\n", "relayhost_tls: 'sometimes' is not one"},
      {"relayhost_auth = cram-md5\n",
       "relayhost_auth: 'cram-md5' is not one of auto, plain, login, xoauth2"},
      {"outbound_tls = dane-sometimes\n",
       "not one of opportunistic, required, none, dane, dane-only"},
      {"outbound_tls = bogus\n", "outbound_tls: 'bogus'"},
      {"user = nobody\n", "user: 'nobody' is not numeric uid:gid"},
      {"user = 1:x\n", "not numeric uid:gid"},
      {"smtp_port = 0\n", "smtp_port: '0' is not a port"},
      {"dns_servers = ns.example\n", "dns_servers:"},
      {"retry_schedule = 1m, 0s\n", "retry_schedule:"},
      {"retry_schedule = \n", "at least one"},
      {"log_format = xml\n", "log_format: 'xml'"},
      {"relayhost = [a.example\n", "missing ']'"},
      {"relayhost = a.example:0\n", "bad port"},
      {"hostname = a\x01.example\n", "control character"},
      {"destination_rate = 30\n", "destination_rate: '30' is not N/DURATION"},
      {"destination_rate = /1m\n", "is not N/DURATION"},
      {"destination_rate = 30/\n", "is not N/DURATION"},
      {"destination_rate = 0/1m\n", "N must be a number from 1 to 100000"},
      {"destination_rate = -1/1m\n", "N must be a number"},
      {"destination_rate = 100001/1m\n", "from 1 to 100000"},
      {"destination_rate = 30/1w\n", "'1w' is not a duration"},
      {"outbound_rate = 30/0s\n", "outbound_rate: '30/0s': the window"},
      {"outbound_rate = 30/8d\n", "at most 7d"},
      {"outbound_rate = 3/1m/2\n", "is not a duration"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int rc = parse(cases[i].text);
    CHECK_INT(rc, -1);
    CHECK_CONTAINS(err, cases[i].want);
  }
}

static void test_contradictions(void) {
  const char *const non_loopback[] = {"listen=0.0.0.0:25", NULL};
  CHECK_INT(load(NULL, NULL, non_loopback), -1);
  CHECK_CONTAINS(err, "relay_networks");
  /* Setting relay_networks explicitly, even to the default, is enough. */
  const char *const explicit_rn[] = {
      "listen=0.0.0.0:25", "relay_networks=127.0.0.0/8, ::1/128", NULL};
  CHECK_INT(load(NULL, NULL, explicit_rn), 0);
  const char *const with_auth[] = {"listen=[::]:25", "auth_users_file=/x",
                                   NULL};
  CHECK_INT(load(NULL, NULL, with_auth), 0);
  const char *const tls_no_cert[] = {"listen_tls=127.0.0.1:465", NULL};
  CHECK_INT(load(NULL, NULL, tls_no_cert), -1);
  CHECK_CONTAINS(err, "listen_tls");
  const char *const cert_no_key[] = {"tls_cert_file=/c.pem", NULL};
  CHECK_INT(load(NULL, NULL, cert_no_key), -1);
  CHECK_CONTAINS(err, "tls_key_file");
  const char *const plain_creds[] = {"relayhost=[r.example]:587",
                                     "relayhost_user=u", "relayhost_password=p",
                                     "relayhost_tls=none", NULL};
  CHECK_INT(load(NULL, NULL, plain_creds), -1);
  CHECK_CONTAINS(err, "relayhost_auth_plaintext");
  const char *const opp_creds[] = {"relayhost=[r.example]:587",
                                   "relayhost_user=u", "relayhost_password=p",
                                   "relayhost_tls=opportunistic", NULL};
  CHECK_INT(load(NULL, NULL, opp_creds), -1);
  const char *const plain_ok[] = {
      "relayhost=[r.example]:587",    "relayhost_user=u",
      "relayhost_password=p",         "relayhost_tls=none",
      "relayhost_auth_plaintext=yes", NULL};
  CHECK_INT(load(NULL, NULL, plain_ok), 0);
  const char *const user_no_pass[] = {"relayhost_user=u", NULL};
  CHECK_INT(load(NULL, NULL, user_no_pass), -1);
  CHECK_CONTAINS(err, "relayhost_password");
  char longpath[200];
  memset(longpath, 'a', sizeof longpath);
  snprintf(longpath, sizeof longpath, "admin_socket=/tmp/%0108d", 0);
  const char *const long_sock[] = {longpath, NULL};
  CHECK_INT(load(NULL, NULL, long_sock), -1);
  CHECK_CONTAINS(err, "admin_socket");
  CHECK_CONTAINS(err, "107");
  char okpath[200];
  snprintf(okpath, sizeof okpath, "admin_socket=/tmp/%0102d", 0);
  const char *const ok_sock[] = {okpath, NULL};
  CHECK_INT(load(NULL, NULL, ok_sock), 0);
}

static void test_precedence(void) {
  const char *f = write_file("p.conf", "max_sessions = 10\nmax_recipients = "
                                       "11\nmax_outbound = 12\n");
  char *env[] = {"MAILHOP_MAX_RECIPIENTS=21", "MAILHOP_MAX_OUTBOUND=22",
                 "PATH=/bin", NULL};
  const char *const ov[] = {"max_outbound=32", NULL};
  CHECK_INT(load(f, env, ov), 0);
  CHECK_INT(cfg.max_sessions, 10);   /* file */
  CHECK_INT(cfg.max_recipients, 21); /* env beats file */
  CHECK_INT(cfg.max_outbound, 32);   /* -o beats env */

  /* _FILE convention: the first line, newline stripped. */
  const char *secret = write_file("pw", "s3cret\nsecond line\n");
  char envf[300];
  snprintf(envf, sizeof envf, "MAILHOP_RELAYHOST_PASSWORD=%s", "x");
  char envfile[300];
  snprintf(envfile, sizeof envfile, "MAILHOP_HOSTNAME_FILE=%s", secret);
  char *env2[] = {envfile, NULL};
  CHECK_INT(load(NULL, env2, NULL), 0);
  CHECK_STR(cfg.hostname, "s3cret");
  /* The exact key wins: RELAYHOST_PASSWORD_FILE is a key of its own. */
  char envpf[300];
  snprintf(envpf, sizeof envpf, "MAILHOP_RELAYHOST_PASSWORD_FILE=%s", secret);
  char *env3[] = {envpf, "MAILHOP_RELAYHOST_USER=u",
                  "MAILHOP_RELAYHOST=[r.example]:587", NULL};
  CHECK_INT(load(NULL, env3, NULL), 0);
  CHECK_STR(cfg.relayhost_password_file, secret);
  CHECK_STR(cfg.relayhost_password, "s3cret");
  /* Both MAILHOP_X and MAILHOP_X_FILE: an error. */
  char *env4[] = {envfile, "MAILHOP_HOSTNAME=h.example", NULL};
  CHECK_INT(load(NULL, env4, NULL), -1);
  CHECK_CONTAINS(err, "hostname: both");
  /* A missing _FILE file names the key. */
  char *env5[] = {"MAILHOP_HOSTNAME_FILE=/nonexistent/x", NULL};
  CHECK_INT(load(NULL, env5, NULL), -1);
  CHECK_CONTAINS(err, "hostname:");
  /* Unknown MAILHOP_* names only warn. */
  struct config_warnings w;
  char *env6[] = {"MAILHOP_PORT=tcp://10.0.0.1:25", NULL};
  struct config_source src = {.environ = env6};
  CHECK_INT(config_load(&cfg, &src, &w, err), 0);
  int found = 0;
  for (int i = 0; i < w.n; i++)
    found |= strstr(w.text[i], "MAILHOP_PORT") != NULL;
  CHECK(found);
  /* A bad env value names the key and the variable. */
  char *env7[] = {"MAILHOP_MAX_SESSIONS=lots", NULL};
  CHECK_INT(load(NULL, env7, NULL), -1);
  CHECK_CONTAINS(err, "max_sessions: 'lots'");
  CHECK_CONTAINS(err, "MAILHOP_MAX_SESSIONS");
  /* -o errors start with the key. */
  const char *const bad_ov[] = {"smtp_port=x", NULL};
  CHECK_INT(load(NULL, NULL, bad_ov), -1);
  CHECK_CONTAINS(err, "smtp_port:");
  const char *const unk_ov[] = {"nope=1", NULL};
  CHECK_INT(load(NULL, NULL, unk_ov), -1);
  CHECK_CONTAINS(err, "nope: unknown key");
  /* A missing explicit file is an error; a bad line names file:line. */
  CHECK_INT(load("/nonexistent/mailhop.conf", NULL, NULL), -1);
  CHECK_CONTAINS(err, "/nonexistent/mailhop.conf");
  const char *badf = write_file("bad.conf", "# c\nmax_sessions = 1\nbogus\n");
  CHECK_INT(load(badf, NULL, NULL), -1);
  char want[300];
  snprintf(want, sizeof want, "%s:3:", badf);
  CHECK_CONTAINS(err, want);
}

/* Issue 12 §2: near-miss names say which key they probably meant. */
static void test_did_you_mean(void) {
  struct config_warnings w;
  char *env[] = {
      "MAILHOP_HOSTNAME=relay.example", "MAILHOP_RELAYHOST_USERNAME=u",
      "MAILHOP_RELAYHOST_PASS=p",       "MAILHOP_RELAYHOST_PASWORD=p",
      "MAILHOP_PORT=tcp://x:25",        NULL};
  struct config_source src = {.environ = env};
  CHECK_INT(config_load(&cfg, &src, &w, err), 0);
  CHECK_INT(w.n, 4);
  CHECK_CONTAINS(w.text[0], "did you mean MAILHOP_RELAYHOST_USER?");
  CHECK_CONTAINS(w.text[1], "did you mean MAILHOP_RELAYHOST_PASSWORD?");
  CHECK_CONTAINS(w.text[2], "did you mean MAILHOP_RELAYHOST_PASSWORD?");
  CHECK(strstr(w.text[3], "did you mean") == NULL);
  const char *const ov[] = {"max_sesions=3", NULL};
  CHECK_INT(load(NULL, NULL, ov), -1);
  CHECK_CONTAINS(err,
                 "max_sesions: unknown key (did you mean 'max_sessions'?)");
  CHECK_INT(parse("relay_network = 10.0.0.0/8\n"), -1);
  CHECK_CONTAINS(err, "did you mean 'relay_networks'?");
}

static void test_print(void) {
  const char *const ov[] = {"relayhost=[r.example]:587", "relayhost_user=u",
                            "relayhost_password=hunter2", NULL};
  CHECK_INT(load(NULL, NULL, ov), 0);
  char out[8192];
  config_print(&cfg, out, sizeof out);
  CHECK_CONTAINS(out, "relayhost_password = <set>\n");
  CHECK(strstr(out, "hunter2") == NULL);
  CHECK_CONTAINS(out, "listen = 127.0.0.1:2525\n");
  CHECK_CONTAINS(out, "max_message_size = 25m\n");
  CHECK_CONTAINS(out, "retry_schedule = 1m,5m,15m,30m,1h,2h,4h\n");
  CHECK_CONTAINS(out, "queue_lifetime = 5d\n");
  CHECK_CONTAINS(out, "relayhost = [r.example]:587\n");
  CHECK_CONTAINS(out, "relay_networks = 127.0.0.0/8, ::1/128\n");
  CHECK_CONTAINS(out, "log_format = logfmt\n");
  CHECK_CONTAINS(out, "relayhost_auth = auto\n");
  CHECK_CONTAINS(out, "metrics_listen = \n");
  CHECK_CONTAINS(out, "queue_minfree = 100m\n");
  /* Every key is printed exactly once. */
  int lines = 0;
  for (char *p = out; *p; p++)
    lines += *p == '\n';
  CHECK_INT(lines, 58);
  CHECK_CONTAINS(out, "destination_rate = \n");
  CHECK_CONTAINS(out, "delay_warning_time = \n");
  CHECK_CONTAINS(out, "bounce_notice_recipient = \n");
  CHECK(cfg.delay_warning_time_ms == 0);

  /* delay_warning_time: a duration or empty (off). */
  CHECK_INT(parse("delay_warning_time = 4h\n"), 0);
  CHECK(cfg.delay_warning_time_ms == 4ull * 3600 * 1000);
  config_print(&cfg, out, sizeof out);
  CHECK_CONTAINS(out, "delay_warning_time = 4h\n");
  CHECK_INT(parse("delay_warning_time =\n"), 0);
  CHECK(cfg.delay_warning_time_ms == 0);
  CHECK_INT(parse("delay_warning_time = 0\n"), 0); /* 0 is off too */
  CHECK(cfg.delay_warning_time_ms == 0);
  config_print(&cfg, out, sizeof out);
  CHECK_CONTAINS(out, "delay_warning_time = \n");
  CHECK(parse("delay_warning_time = soon\n") < 0);

  /* bounce_notice_recipient: local@domain or empty. */
  CHECK_INT(parse("bounce_notice_recipient = postmaster@ops.example\n"), 0);
  CHECK_STR(cfg.bounce_notice_recipient, "postmaster@ops.example");
  config_print(&cfg, out, sizeof out);
  CHECK_CONTAINS(out, "bounce_notice_recipient = postmaster@ops.example\n");
  CHECK_INT(parse("bounce_notice_recipient =\n"), 0);
  CHECK_STR(cfg.bounce_notice_recipient, "");
  CHECK(parse("bounce_notice_recipient = postmaster\n") < 0);
  CHECK(parse("bounce_notice_recipient = <pm@ops.example>\n") < 0);
  CHECK(parse("bounce_notice_recipient = a@b.example, c@d.example\n") < 0);
  CHECK(parse("bounce_notice_recipient = a b@ops.example\n") < 0);

  CHECK_INT(parse("destination_rate = 30/60s\noutbound_rate = 2/1500ms\n"), 0);
  config_print(&cfg, out, sizeof out);
  CHECK_CONTAINS(out, "destination_rate = 30/1m\n");
  CHECK_CONTAINS(out, "outbound_rate = 2/1500ms\n");

  CHECK_INT(parse("metrics_listen = 127.0.0.1:9100, [::1]:9101\n"), 0);
  CHECK_INT(cfg.n_metrics_listen, 2);
  CHECK_STR(cfg.metrics_listen[1].text, "[::1]:9101");
  CHECK(parse("metrics_listen = localhost:9100\n") < 0);
}

static void test_dkim_sign(void) {
  CHECK_INT(parse("dkim_sign = Sign.Example:s1:/k/rsa.key, "
                  "sign.example:s2:/k/a:b.key\n"),
            0);
  CHECK_INT(cfg.n_dkim_sign, 2);
  CHECK_STR(cfg.dkim_sign[0].domain, "sign.example");
  CHECK_STR(cfg.dkim_sign[0].selector, "s1");
  CHECK_STR(cfg.dkim_sign[0].keyfile, "/k/rsa.key");
  CHECK_STR(cfg.dkim_sign[1].keyfile, "/k/a:b.key");
  CHECK_INT(parse("dkim_sign = sign.example:s1\n"), -1);
  CHECK_INT(parse("dkim_sign = sign.example:s;1:/k\n"), -1);
  CHECK_INT(parse("dkim_sign = :s1:/k\n"), -1);
  CHECK_INT(parse("dkim_sign = b\xc3\xbc"
                  "cher.example:s1:/k\n"),
            -1);
}

/* Settings that contradict each other or can never take effect are
 * errors, never silently unused. */
static int load_ov(const char *a, const char *b, const char *c, const char *d,
                   const char *e) {
  const char *const ov[] = {a, b, c, d, e, NULL};
  return load(NULL, NULL, ov);
}

static void test_more_contradictions(void) {
  const char *rh = "relayhost=[r.example]:587";
  CHECK_INT(load_ov(rh, "relayhost_auth=xoauth2", NULL, NULL, NULL), -1);
  CHECK_CONTAINS(err, "relayhost_auth: a mechanism is chosen");
  CHECK_INT(load_ov(rh, "relayhost_auth=plain", NULL, NULL, NULL), -1);
  CHECK_INT(load_ov("relayhost_auth=xoauth2", NULL, NULL, NULL, NULL), 0);
  CHECK_INT(
      load_ov("delay_warning_time=6d", "queue_lifetime=5d", NULL, NULL, NULL),
      -1);
  CHECK_CONTAINS(err, "delay_warning_time: not under queue_lifetime");
  CHECK_INT(
      load_ov("delay_warning_time=5d", "queue_lifetime=5d", NULL, NULL, NULL),
      -1);
  CHECK_INT(
      load_ov("delay_warning_time=4h", "queue_lifetime=5d", NULL, NULL, NULL),
      0);
  CHECK_INT(load_ov("listen=127.0.0.1:2525", "metrics_listen=127.0.0.1:2525",
                    NULL, NULL, NULL),
            -1);
  CHECK_CONTAINS(err, "metrics_listen: 127.0.0.1:2525 is also");
  CHECK_INT(load_ov("listen=0.0.0.0:2525", "relay_networks=10.0.0.0/8",
                    "metrics_listen=127.0.0.1:2525", NULL, NULL),
            -1);
  CHECK_INT(load_ov("listen=127.0.0.1:2525", "metrics_listen=127.0.0.1:9100",
                    NULL, NULL, NULL),
            0);
  CHECK_INT(load_ov("listen=127.0.0.1:2525", "metrics_listen=127.0.0.2:2525",
                    NULL, NULL, NULL),
            0);
  const char *const oauth_no_secret[] = {
      rh,
      "relayhost_auth=xoauth2",
      "relayhost_user=u@example.com",
      "relayhost_oauth2_token_url=https://t.example/token",
      "relayhost_oauth2_client_id=id",
      NULL};
  CHECK_INT(load(NULL, NULL, oauth_no_secret), -1);
  CHECK_CONTAINS(err, "relayhost_oauth2_client_secret: required");
  const char *const oauth_ok[] = {
      rh,
      "relayhost_auth=xoauth2",
      "relayhost_user=u@example.com",
      "relayhost_oauth2_token_url=https://t.example/token",
      "relayhost_oauth2_client_id=id",
      "relayhost_oauth2_client_secret=s",
      NULL};
  CHECK_INT(load(NULL, NULL, oauth_ok), 0);
}

static void test_queue_dir(void) {
  char dir[64];
  config_defaults(&cfg);
  snprintf(cfg.queue_path, sizeof cfg.queue_path, "/var/lib/mailhop/q.db");
  config_queue_dir(&cfg, dir, sizeof dir);
  CHECK_STR(dir, "/var/lib/mailhop");
  snprintf(cfg.queue_path, sizeof cfg.queue_path, "/q.db");
  config_queue_dir(&cfg, dir, sizeof dir);
  CHECK_STR(dir, "/");
  snprintf(cfg.queue_path, sizeof cfg.queue_path, "q.db");
  config_queue_dir(&cfg, dir, sizeof dir);
  CHECK_STR(dir, ".");
}

static void test_cidr_match(void) {
  CHECK_INT(parse("relay_networks = 10.1.0.0/16, 2001:db8::/32\n"), 0);
  struct sockaddr_in in = {.sin_family = AF_INET};
  inet_pton(AF_INET, "10.1.200.3", &in.sin_addr);
  CHECK_INT(config_cidr_match(cfg.relay_networks, cfg.n_relay_networks,
                              (struct sockaddr *)&in),
            1);
  inet_pton(AF_INET, "10.2.0.1", &in.sin_addr);
  CHECK_INT(config_cidr_match(cfg.relay_networks, cfg.n_relay_networks,
                              (struct sockaddr *)&in),
            0);
  struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
  inet_pton(AF_INET6, "2001:db8:1::5", &in6.sin6_addr);
  CHECK_INT(config_cidr_match(cfg.relay_networks, cfg.n_relay_networks,
                              (struct sockaddr *)&in6),
            1);
  /* A v4-mapped address matches the IPv4 block. */
  inet_pton(AF_INET6, "::ffff:10.1.0.9", &in6.sin6_addr);
  CHECK_INT(config_cidr_match(cfg.relay_networks, cfg.n_relay_networks,
                              (struct sockaddr *)&in6),
            1);
}

int main(void) {
  if (!check_tmpdir(tmpdir, sizeof tmpdir, "mh-config")) {
    perror("mkdtemp");
    return 1;
  }
  test_defaults();
  test_values();
  test_bad_values();
  test_contradictions();
  test_precedence();
  test_did_you_mean();
  test_print();
  test_dkim_sign();
  test_more_contradictions();
  test_queue_dir();
  test_cidr_match();
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  if (system(cmd) != 0)
    fprintf(stderr, "cleanup failed\n");
  return check_result("test_config");
}
