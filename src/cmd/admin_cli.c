/*
 * admin_cli: sends one admin command over the Unix socket, reads the one
 * JSON line that answers it and prints it for people or scripts.  Owns only
 * its socket and buffers; blocking I/O with a timeout.
 */
#include "cmd/admin_cli.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cmd/help.h"
#include "config.h"
#include "proto/qfilter.h"
#include "proto/routes.h"

#define EXIT_USAGE 1
#define EXIT_RUNTIME 2

/* ---- printing ----------------------------------------------------------- */

/* Prints peer text with control characters shown as \xNN, so a header or
 * an error cannot drive the terminal.  keep_nl keeps "\n" and "\t". */
static void put_safe(FILE *out, const char *s, int keep_nl) {
  if (!s)
    return;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    /* Header lines end in CRLF: show them as plain lines. */
    if (keep_nl && p[0] == '\r' && p[1] == '\n')
      continue;
    if ((*p < 0x20 && !(keep_nl && (*p == '\n' || *p == '\t'))) || *p == 0x7f)
      fprintf(out, "\\x%02x", *p);
    else
      fputc(*p, out);
  }
}

static const char *jget_str(const json_t *o, const char *key) {
  return json_string_value(json_object_get(o, key));
}

static long long jget_int(const json_t *o, const char *key) {
  return (long long)json_integer_value(json_object_get(o, key));
}

/* Parses "YYYY-MM-DDTHH:MM:SSZ"; -1 when absent or malformed. */
static long long parse_time(const char *s) {
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  if (!s)
    return -1;
  const char *end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
  if (!end || *end)
    return -1;
  return (long long)timegm(&tm);
}

/* "45s", "12m", "3h", "2d" (coarse, like mailq). */
static void fmt_span(char *buf, size_t n, long long s) {
  if (s < 0)
    s = 0;
  if (s < 60)
    snprintf(buf, n, "%llds", s);
  else if (s < 3600)
    snprintf(buf, n, "%lldm%02llds", s / 60, s % 60);
  else if (s < 86400)
    snprintf(buf, n, "%lldh%02lldm", s / 3600, s / 60 % 60);
  else
    snprintf(buf, n, "%lldd%02lldh", s / 86400, s / 3600 % 24);
}

static void print_next(FILE *out, const json_t *r, long long now) {
  const char *state = jget_str(r, "state");
  const char *next = jget_str(r, "next_attempt_at");
  if (state && (!strcmp(state, "delivered") || !strcmp(state, "bounced")))
    return;
  if (state && !strcmp(state, "delivering")) {
    fputs("  next: in progress", out);
    return;
  }
  long long t = parse_time(next);
  if (t < 0 || t <= now) {
    fputs("  next: now", out);
    return;
  }
  char span[32];
  fmt_span(span, sizeof span, t - now);
  fprintf(out, "  next: %s (in %s)", next, span);
}

static void print_rcpts(FILE *out, const json_t *msg, long long now) {
  const json_t *rs = json_object_get(msg, "recipients");
  size_t i;
  const json_t *r;
  json_array_foreach(rs, i, r) {
    const char *err = jget_str(r, "last_error");
    fputs("    ", out);
    put_safe(out, jget_str(r, "address"), 0);
    fprintf(out, "  %s  attempts: %lld", jget_str(r, "state") ?: "?",
            jget_int(r, "attempts"));
    print_next(out, r, now);
    fputc('\n', out);
    if (err) {
      /* a delivered recipient's is its 250, not an error */
      const char *st = jget_str(r, "state");
      fputs(st && strcmp(st, "delivered") == 0 ? "        last reply: "
                                               : "        last error: ",
            out);
      put_safe(out, err, 0);
      fputc('\n', out);
    }
  }
}

static void print_msg_line(FILE *out, const json_t *m, long long now) {
  char age[32];
  long long at = parse_time(jget_str(m, "received_at"));
  fmt_span(age, sizeof age, at < 0 ? 0 : now - at);
  const char *sender = jget_str(m, "sender");
  fprintf(out, "%-16s %8s %10lld  ", jget_str(m, "id") ?: "?", age,
          jget_int(m, "size"));
  if (!sender || !*sender)
    fputs("<>", out);
  else
    put_safe(out, sender, 0);
  if (json_is_true(json_object_get(m, "held")))
    fputs("  [held]", out);
  fputc('\n', out);
}

static int print_queue(FILE *out, const json_t *reply, long long now) {
  const json_t *msgs = json_object_get(reply, "messages");
  if (!json_is_array(msgs))
    return -1;
  size_t n = json_array_size(msgs);
  if (n == 0) {
    fputs("Mail queue is empty\n", out);
    return 0;
  }
  fprintf(out, "%-16s %8s %10s  %s\n", "ID", "AGE", "SIZE", "SENDER");
  long long total = 0, rcpts = 0;
  size_t i;
  const json_t *m;
  json_array_foreach(msgs, i, m) {
    print_msg_line(out, m, now);
    print_rcpts(out, m, now);
    total += jget_int(m, "size");
    rcpts += (long long)json_array_size(json_object_get(m, "recipients"));
  }
  fprintf(out, "-- %zu message%s, %lld recipient%s, %lld bytes\n", n,
          n == 1 ? "" : "s", rcpts, rcpts == 1 ? "" : "s", total);
  return 0;
}

static int print_show(FILE *out, const json_t *reply, long long now) {
  const json_t *m = json_object_get(reply, "message");
  if (!json_is_object(m))
    return -1;
  const char *sender = jget_str(m, "sender");
  fprintf(out, "id:          %s\n", jget_str(m, "id") ?: "?");
  fputs("sender:      ", out);
  if (!sender || !*sender)
    fputs("<>", out);
  else
    put_safe(out, sender, 0);
  fputc('\n', out);
  fprintf(out, "size:        %lld\n", jget_int(m, "size"));
  fprintf(out, "received at: %s\n", jget_str(m, "received_at") ?: "?");
  fprintf(out, "held:        %s\n",
          json_is_true(json_object_get(m, "held")) ? "yes" : "no");
  fputs("recipients:\n", out);
  print_rcpts(out, m, now);
  const char *h = jget_str(m, "headers");
  if (h) {
    fputs("headers:\n", out);
    put_safe(out, h, 1);
    if (*h && h[strlen(h) - 1] != '\n')
      fputc('\n', out);
  }
  return 0;
}

static int print_status(FILE *out, const json_t *reply, long long now) {
  const json_t *q = json_object_get(reply, "queue");
  const json_t *c = json_object_get(reply, "counters");
  if (!json_is_object(q) || !json_is_object(c))
    return -1;
  char up[32];
  fmt_span(up, sizeof up, jget_int(reply, "uptime_s"));
  fprintf(out, "mailhop %s, up %s\n", jget_str(reply, "version") ?: "?", up);
  fprintf(out, "delivery:    %s\n",
          json_is_true(json_object_get(reply, "paused")) ? "PAUSED"
                                                         : "running");
  const json_t *acc = json_object_get(reply, "accepting");
  if (json_is_boolean(acc))
    fprintf(out, "accepting:   %s\n",
            json_is_true(acc) ? "yes" : "NO (draining or shutting down)");
  fprintf(out, "sessions:    %lld inbound, %lld outbound\n",
          jget_int(reply, "sessions"), jget_int(reply, "outbound"));
  fprintf(out,
          "queue:       %lld messages, %lld recipients (%lld deferred), "
          "%lld held%s\n",
          jget_int(q, "messages"), jget_int(q, "recipients"),
          jget_int(q, "deferred"), jget_int(q, "held"),
          json_is_true(json_object_get(reply, "loading"))
              ? " (loading the queue)"
              : "");
  fprintf(out,
          "counters:    %lld received, %lld delivered, %lld deferred, "
          "%lld bounced\n",
          jget_int(c, "received"), jget_int(c, "delivered"),
          jget_int(c, "deferred"), jget_int(c, "bounced"));
  const json_t *su = json_object_get(reply, "suspended");
  size_t i;
  const json_t *e;
  json_array_foreach(su, i, e) {
    const char *until = jget_str(e, "until");
    long long t = parse_time(until);
    char span[32] = "?";
    if (t >= 0)
      fmt_span(span, sizeof span, t - now);
    fputs(i ? "             " : "suspended:   ", out);
    put_safe(out, jget_str(e, "destination"), 0);
    fprintf(out, " until %s (in %s)\n", until ? until : "?", span);
  }
  return 0;
}

/* `tlsrpt` (CONTRACT §1): one line per policy domain and policy type. */
static int print_tlsrpt(FILE *out, const json_t *reply) {
  const json_t *ds = json_object_get(reply, "domains");
  if (!json_is_array(ds))
    return -1;
  fputs("period since ", out);
  put_safe(out, jget_str(reply, "period_start") ?: "?", 0);
  fputs("\n", out);
  if (json_array_size(ds) == 0) {
    fputs("no TLS sessions counted\n", out);
    return 0;
  }
  fprintf(out, "%-32s %-16s %10s %8s  %s\n", "DOMAIN", "POLICY", "SUCCESSFUL",
          "FAILED", "FAILURES");
  size_t i;
  const json_t *e;
  json_array_foreach(ds, i, e) {
    char dom[64];
    snprintf(dom, sizeof dom, "%s", jget_str(e, "domain") ?: "?");
    for (char *p = dom; *p; p++)
      if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
        *p = '?';
    fprintf(out, "%-32s %-16s %10lld %8lld ", dom, jget_str(e, "policy") ?: "?",
            jget_int(e, "successful"), jget_int(e, "failed"));
    const json_t *f = json_object_get(e, "failures");
    const char *k;
    const json_t *v;
    int first = 1;
    json_object_foreach((json_t *)f, k, v) {
      fputs(first ? " " : ", ", out);
      put_safe(out, k, 0);
      fprintf(out, "=%lld", (long long)json_integer_value(v));
      first = 0;
    }
    fputs(first ? " -\n" : "\n", out);
  }
  return 0;
}

int admin_cli_print(FILE *out, const char *what, const json_t *reply,
                    long long now) {
  if (!strcmp(what, "tlsrpt"))
    return print_tlsrpt(out, reply);
  if (!strcmp(what, "status"))
    return print_status(out, reply, now);
  if (!strcmp(what, "queue"))
    return print_queue(out, reply, now);
  if (!strcmp(what, "show"))
    return print_show(out, reply, now);
  if (!json_is_true(json_object_get(reply, "ok")))
    return -1;
  if (json_is_integer(json_object_get(reply, "count"))) {
    static const char *const past[][2] = {{"delete", "deleted"},
                                          {"hold", "held"},
                                          {"release", "released"},
                                          {"flush", "flushed"}};
    const char *verb = what;
    for (size_t i = 0; i < sizeof past / sizeof past[0]; i++)
      if (!strcmp(what, past[i][0]))
        verb = past[i][1];
    long long n = jget_int(reply, "count");
    fprintf(out, "%s %lld message%s\n", verb, n, n == 1 ? "" : "s");
  } else if (!strcmp(what, "suspend")) {
    fputs("suspended\n", out);
  } else if (!strcmp(what, "unsuspend")) {
    fputs("unsuspended\n", out);
  } else if (!strcmp(what, "flush")) {
    long long n = jget_int(reply, "flushed");
    fprintf(out, "flushed %lld message%s\n", n, n == 1 ? "" : "s");
  } else if (!strcmp(what, "pause")) {
    fputs("outbound delivery paused\n", out);
  } else if (!strcmp(what, "resume")) {
    fputs("outbound delivery resumed\n", out);
  } else if (!strcmp(what, "drain")) {
    fputs("drain cancelled, accepting again\n", out);
  } else {
    fputs("ok\n", out);
  }
  return 0;
}

/* ---- the conversation ---------------------------------------------------- */

static int connect_admin(const char *path) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof sa.sun_path) {
    fprintf(stderr, "mailhop: admin socket path too long: %s\n", path);
    return -1;
  }
  memcpy(sa.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    fprintf(stderr, "mailhop: socket: %s\n", strerror(errno));
    return -1;
  }
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    int e = errno;
    close(fd);
    fprintf(stderr,
            "mailhop: cannot connect to admin socket %s: %s (is mailhop "
            "serve running?)\n",
            path, strerror(e));
    return -1;
  }
  struct timeval tv = {.tv_sec = ADMIN_CLI_TIMEOUT};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return fd;
}

static int send_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Reads up to and including the first "\n" into a malloc'd string (the
 * newline removed).  NULL with *why set on EOF, timeout or error. */
static char *read_line(int fd, size_t *lenp, const char **why) {
  size_t cap = 64 * 1024, len = 0;
  char *buf = malloc(cap);
  if (!buf) {
    *why = "out of memory";
    return NULL;
  }
  for (;;) {
    if (len == cap) {
      char *nb = realloc(buf, cap * 2);
      if (!nb) {
        free(buf);
        *why = "out of memory";
        return NULL;
      }
      buf = nb;
      cap *= 2;
    }
    ssize_t n = recv(fd, buf + len, cap - len, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      *why = n == 0 ? "the daemon closed the connection"
             : (errno == EAGAIN || errno == EWOULDBLOCK)
                 ? "timed out waiting for the daemon"
                 : strerror(errno);
      free(buf);
      return NULL;
    }
    char *nl = memchr(buf + len, '\n', (size_t)n);
    len += (size_t)n;
    if (nl) {
      *nl = '\0';
      *lenp = (size_t)(nl - buf);
      return buf;
    }
  }
}

/* 1 when a value may go into the one-line command (no blank, no control
 * byte: it would split the line or the words). */
static int word_ok(const char *v) {
  if (!v || !*v)
    return 0;
  for (const unsigned char *p = (const unsigned char *)v; *p; p++)
    if (*p <= 0x20 || *p == 0x7f)
      return 0;
  return 1;
}

static int any_filter(const struct cli *cli) {
  return cli->f_domain || cli->f_sender || cli->f_state || cli->f_older_than ||
         cli->f_all;
}

/* Appends the FILTER words of the options (CONTRACT §5 spelling) to out;
 * -1 with a message on stderr for a bad value. */
static int filter_words(const struct cli *cli, char *out, size_t n) {
  size_t len = strlen(out);
  const struct {
    const char *word, *v;
  } f[] = {{"domain", cli->f_domain},
           {"sender", cli->f_sender},
           {"state", cli->f_state}};
  for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
    if (!f[i].v)
      continue;
    if (!word_ok(f[i].v)) {
      fprintf(stderr, "mailhop: bad --%s value\n", f[i].word);
      return -1;
    }
    len += (size_t)snprintf(out + len, len < n ? n - len : 0, " %s=%s",
                            f[i].word, f[i].v);
  }
  if (cli->f_older_than) {
    int64_t secs;
    if (qfilter_duration(cli->f_older_than, &secs) < 0) {
      fprintf(stderr,
              "mailhop: bad --older-than duration '%s' (e.g. 30m, 2h, 7d)\n",
              cli->f_older_than);
      return -1;
    }
    len += (size_t)snprintf(out + len, len < n ? n - len : 0,
                            " older_than=%lld", (long long)secs);
  }
  if (cli->f_all)
    len += (size_t)snprintf(out + len, len < n ? n - len : 0, " all");
  if (len + 2 >= n) {
    fprintf(stderr, "mailhop: filter too long\n");
    return -1;
  }
  /* The daemon's own parser says what it would refuse (a --state other
   * than the three, ...), so that a bad filter is a usage error here. */
  char copy[512];
  snprintf(copy, sizeof copy, "%s", out);
  const char *words[16];
  size_t nw = 0;
  for (char *save = NULL, *w = strtok_r(copy, " ", &save); w;
       w = strtok_r(NULL, " ", &save))
    if (nw < sizeof words / sizeof words[0])
      words[nw++] = w;
  struct qfilter qf;
  char err[160];
  if (nw > 0 && qfilter_parse(&qf, words + 1, nw - 1, err, sizeof err) < 0) {
    fprintf(stderr, "mailhop: %s\n", err);
    return -1;
  }
  out[len++] = '\n';
  out[len] = '\0';
  return 0;
}

/* Bad usage without a more precise message: the command's usage line. */
static int bad_usage(const char *cmd) {
  char line[200];
  help_usage_line(cmd, line, sizeof line);
  fprintf(stderr, "mailhop: %s (see mailhop %s --help)\n", line, cmd);
  return -1;
}

/* Maps the command words to an admin command line; -1 for bad usage, with
 * one line on stderr (what is wrong, or the command's usage). */
static int build_command(const struct cli *cli, char *out, size_t n,
                         const char **what) {
  const char *w0 = cli->words[0];
  int nw = cli->n_words;
  int is_queue = !strcmp(w0, "queue");
  if (any_filter(cli) && !is_queue) {
    fprintf(stderr, "mailhop: filters (--domain, --sender, --state, "
                    "--older-than, --all) go with queue\n");
    return -1;
  }
  if (cli->for_duration && strcmp(w0, "suspend") != 0) {
    fprintf(stderr, "mailhop: --for goes with suspend\n");
    return -1;
  }
  if ((cli->drain_to || cli->timeout || cli->cancel) && strcmp(w0, "drain")) {
    fprintf(stderr, "mailhop: --to, --timeout and --cancel go with drain\n");
    return -1;
  }
  if (!strcmp(w0, "drain")) {
    if (nw != 1 || (cli->cancel && (cli->drain_to || cli->timeout)))
      return bad_usage(w0);
    *what = w0;
    if (cli->cancel) {
      snprintf(out, n, "drain cancel\n");
      return 0;
    }
    struct route_host peer;
    if (cli->drain_to &&
        (!word_ok(cli->drain_to) || routes_parse_peer(cli->drain_to, &peer))) {
      fputs("mailhop: bad --to '", stderr);
      put_safe(stderr, cli->drain_to, 0);
      fputs("': HOST:PORT, [IPV6]:PORT or :PORT\n", stderr);
      return -1;
    }
    int64_t secs = 300; /* CONTRACT §1: 5m */
    if (cli->timeout && qfilter_duration(cli->timeout, &secs) < 0) {
      fprintf(stderr, "mailhop: bad --timeout duration '%s' (e.g. 90s, 5m)\n",
              cli->timeout);
      return -1;
    }
    snprintf(out, n, "drain%s%s %lld\n", cli->drain_to ? " " : "",
             cli->drain_to ? cli->drain_to : "", (long long)secs);
    return 0;
  }
  if (!strcmp(w0, "status") || !strcmp(w0, "pause") || !strcmp(w0, "resume") ||
      !strcmp(w0, "tlsrpt")) {
    if (nw != 1)
      return bad_usage(w0);
    *what = w0;
    snprintf(out, n, "%s\n", w0);
    return 0;
  }
  if (!strcmp(w0, "suspend") || !strcmp(w0, "unsuspend")) {
    if (nw != 2)
      return bad_usage(w0);
    if (!word_ok(cli->words[1])) {
      fputs("mailhop: bad destination '", stderr);
      put_safe(stderr, cli->words[1], 0);
      fputs(*cli->words[1] ? "': a relayhost or domain name has no blank "
                             "or control character\n"
                           : "': empty\n",
            stderr);
      return -1;
    }
    *what = w0;
    if (w0[0] == 'u') {
      snprintf(out, n, "unsuspend %s\n", cli->words[1]);
      return 0;
    }
    int64_t secs = 3600;
    if (cli->for_duration && qfilter_duration(cli->for_duration, &secs) < 0) {
      fprintf(stderr, "mailhop: bad --for duration '%s' (e.g. 30m, 2h, 1d)\n",
              cli->for_duration);
      return -1;
    }
    snprintf(out, n, "suspend %s %lld\n", cli->words[1], (long long)secs);
    return 0;
  }
  if (!is_queue)
    return bad_usage(w0);
  const char *sub = nw > 1 ? cli->words[1] : "list";
  if (!strcmp(sub, "list")) {
    if (nw > 2)
      return bad_usage(w0);
    *what = "queue";
    snprintf(out, n, "queue");
    return any_filter(cli) ? filter_words(cli, out, n)
                           : (snprintf(out, n, "queue\n"), 0);
  }
  static const char *const bulk[] = {"delete", "hold", "release", "flush"};
  int is_bulk = 0;
  for (size_t i = 0; i < sizeof bulk / sizeof bulk[0]; i++)
    is_bulk |= !strcmp(sub, bulk[i]);
  if (is_bulk && any_filter(cli)) {
    if (nw != 2) {
      fprintf(stderr, "mailhop: queue %s takes an ID or filters, not both\n",
              sub);
      return -1;
    }
    *what = sub; /* the reply's "count" says it is the bulk form */
    snprintf(out, n, "%s", sub);
    return filter_words(cli, out, n);
  }
  if (any_filter(cli))
    return bad_usage(w0);
  if (is_bulk && strcmp(sub, "flush") != 0 && nw == 2) {
    fprintf(stderr,
            "mailhop: queue %s needs an ID, or at least one filter "
            "or --all\n",
            sub);
    return -1;
  }
  static const char *const with_id[] = {"show", "delete", "hold", "release"};
  if (!strcmp(sub, "flush") && nw <= 3) {
    *what = "flush";
    snprintf(out, n, nw == 3 ? "flush %s\n" : "flush\n", cli->words[2]);
  } else {
    size_t i;
    for (i = 0; i < sizeof with_id / sizeof with_id[0]; i++)
      if (!strcmp(sub, with_id[i]))
        break;
    if (i == sizeof with_id / sizeof with_id[0] || nw != 3)
      return bad_usage(w0);
    *what = with_id[i];
    snprintf(out, n, "%s %s\n", sub, cli->words[2]);
  }
  /* An id never holds spaces or newlines, nor is it a filter word; refuse
   * before they split the line or turn it into a bulk action. */
  if (nw == 3 && (!word_ok(cli->words[2]) || strchr(cli->words[2], '=') ||
                  !strcmp(cli->words[2], "all"))) {
    fprintf(stderr, "mailhop: bad message ID\n");
    return -1;
  }
  return 0;
}

/* One command, one reply: the parsed JSON object (caller frees), or NULL
 * with a message on stderr (*rc the exit code). */
static json_t *ask(const char *path, const char *line, int *rc) {
  int fd = connect_admin(path);
  if (fd < 0) {
    *rc = EXIT_RUNTIME;
    return NULL;
  }
  if (send_all(fd, line, strlen(line)) < 0) {
    fprintf(stderr, "mailhop: admin socket %s: %s\n", path, strerror(errno));
    close(fd);
    *rc = EXIT_RUNTIME;
    return NULL;
  }
  shutdown(fd, SHUT_WR);
  const char *why = NULL;
  size_t len = 0;
  char *reply = read_line(fd, &len, &why);
  close(fd);
  if (!reply) {
    fprintf(stderr, "mailhop: admin socket %s: no reply: %s\n", path, why);
    *rc = EXIT_RUNTIME;
    return NULL;
  }
  json_error_t jerr;
  json_t *j = json_loadb(reply, len, 0, &jerr);
  free(reply);
  if (!json_is_object(j)) {
    fprintf(stderr, "mailhop: admin socket %s: bad reply\n", path);
    json_decref(j);
    *rc = EXIT_RUNTIME;
    return NULL;
  }
  const char *err = jget_str(j, "error");
  if (err) {
    fputs("mailhop: ", stderr);
    put_safe(stderr, err, 0);
    fputc('\n', stderr);
    json_decref(j);
    *rc = EXIT_USAGE;
    return NULL;
  }
  return j;
}

/* `mailhop drain` (CONTRACT §1): the command, then `status` once a second
 * until nothing deliverable is left (messages not held) or the timeout. */
static int drain_wait(const char *path, const char *line, int64_t timeout_s,
                      int json) {
  int rc = 0;
  json_t *j = ask(path, line, &rc);
  if (!j)
    return rc;
  json_decref(j);
  struct timespec start, now;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    j = ask(path, "status\n", &rc);
    if (!j)
      return rc;
    const json_t *q = json_object_get(j, "queue");
    long long left = jget_int(q, "messages") - jget_int(q, "held");
    /* A session still open may yet commit a message (draining ends each
     * after its transaction): not done before the last one is gone. */
    long long sessions = jget_int(j, "sessions");
    json_decref(j);
    if (left < 0)
      left = 0;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int late = now.tv_sec - start.tv_sec >= timeout_s;
    int done = left == 0 && sessions == 0;
    if (done || late) {
      if (json)
        printf("{\"drained\": %s, \"remaining\": %lld, \"sessions\": %lld}\n",
               done ? "true" : "false", left, sessions);
      else if (done)
        printf("drained\n");
      else if (sessions == 0)
        printf("timeout: %lld %s\n", left,
               left == 1 ? "message remains" : "messages remain");
      else
        printf("timeout: %lld %s, %lld session%s open\n", left,
               left == 1 ? "message remains" : "messages remain", sessions,
               sessions == 1 ? "" : "s");
      if (fflush(stdout) != 0)
        return EXIT_RUNTIME;
      return done ? 0 : 1;
    }
    struct timespec pause = {.tv_sec = 0, .tv_nsec = 500 * 1000 * 1000};
    nanosleep(&pause, NULL);
  }
}

int admin_cli_main(const struct config *cfg, const struct cli *cli) {
  char line[512];
  const char *what = NULL;
  if (cli->n_words < 1)
    return bad_usage("?"), EXIT_USAGE;
  if (build_command(cli, line, sizeof line, &what) < 0)
    return EXIT_USAGE;
  if (strlen(line) >= sizeof line - 1) {
    fprintf(stderr, "mailhop: command too long\n");
    return EXIT_USAGE;
  }
  const char *path = cli->socket ? cli->socket : cfg->admin_socket;
  if (!strcmp(what, "drain") && !cli->cancel) {
    int64_t secs = 300;
    if (cli->timeout)
      qfilter_duration(cli->timeout, &secs);
    return drain_wait(path, line, secs, cli->json);
  }
  int fd = connect_admin(path);
  if (fd < 0)
    return EXIT_RUNTIME;
  if (send_all(fd, line, strlen(line)) < 0) {
    fprintf(stderr, "mailhop: admin socket %s: %s\n", path, strerror(errno));
    close(fd);
    return EXIT_RUNTIME;
  }
  /* One command per connection here: say so, the daemon answers first. */
  shutdown(fd, SHUT_WR);
  const char *why = NULL;
  size_t len = 0;
  char *reply = read_line(fd, &len, &why);
  close(fd);
  if (!reply) {
    fprintf(stderr, "mailhop: admin socket %s: no reply: %s\n", path, why);
    return EXIT_RUNTIME;
  }
  json_error_t jerr;
  json_t *j = json_loadb(reply, len, 0, &jerr);
  if (!json_is_object(j)) {
    fprintf(stderr, "mailhop: admin socket %s: bad reply: %s\n", path,
            j ? "not an object" : jerr.text);
    json_decref(j);
    free(reply);
    return EXIT_RUNTIME;
  }
  int rc = 0;
  const char *err = jget_str(j, "error");
  if (cli->json) {
    fwrite(reply, 1, len, stdout);
    fputc('\n', stdout);
  }
  if (err) {
    fputs("mailhop: ", stderr);
    put_safe(stderr, err, 0);
    fputc('\n', stderr);
    rc = EXIT_USAGE;
  } else if (!cli->json &&
             admin_cli_print(stdout, what, j, (long long)time(NULL)) < 0) {
    fprintf(stderr, "mailhop: unexpected reply: %s\n", reply);
    rc = EXIT_RUNTIME;
  }
  json_decref(j);
  free(reply);
  if (fflush(stdout) != 0)
    rc = rc ? rc : EXIT_RUNTIME;
  return rc;
}
