/*
 * libFuzzer target for proto/smtp_server.  The input is split by its
 * first byte into feed sizes; events are answered (commit ok/fail, auth
 * ok/fail, TLS started).  Invariants: consumed <= len, progress, output
 * made of CRLF-terminated lines that start with three digits, chunks
 * never hold bare CR or LF, bounded output.
 */
#include "proto/smtp_server.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void check_output(struct smtp_server *s) {
  size_t n;
  const char *o = smtp_server_output(s, &n);
  if (n > SMTP_SERVER_OUT_MAX)
    abort();
  size_t i = 0;
  while (i < n) {
    if (n - i < 5)
      abort();
    for (int k = 0; k < 3; k++)
      if (o[i + k] < '0' || o[i + k] > '9')
        abort();
    if (o[i + 3] != ' ' && o[i + 3] != '-')
      abort();
    const char *e = memchr(o + i, '\n', n - i);
    if (!e || e == o + i || e[-1] != '\r')
      abort();
    for (const char *p = o + i; p < e - 1; p++)
      if (*p == '\r' || *p == '\0')
        abort();
    i = (size_t)(e - o) + 1;
  }
  smtp_server_output_consumed(s, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  unsigned mode = data[0];
  data++, size--;
  static const char *const doms[] = {"example.com"};
  struct smtp_server_opts o = {
      .hostname = "mx.example",
      .max_message_size = (mode & 1) ? 200 : 0,
      .max_recipients = 3,
      .max_errors = (mode & 2) ? 3 : 20,
      .starttls_available = !!(mode & 4),
      .auth_available = 1,
      .auth_require_tls = !!(mode & 8),
      .relay_allowed = !!(mode & 16),
      .allowed_sender_domains = doms,
      .n_allowed_sender_domains = (mode & 32) ? 1 : 0,
  };
  struct smtp_server *s = smtp_server_new(&o);
  if (!s)
    return 0;
  size_t step = (mode >> 6) == 0 ? size : (mode >> 6) == 1 ? 1 : 7;
  size_t off = 0, avail = step < size ? step : size;
  int rounds = 0;
  const char *src = (const char *)data;
  while (off < size && rounds++ < 1000000) {
    size_t n = smtp_server_feed(s, src + off, avail - off);
    if (n > avail - off)
      abort();
    off += n;
    struct smtp_event ev;
    int discard = 0;
    while (smtp_server_event(s, &ev)) {
      switch (ev.type) {
      case SMTP_SRV_EV_DATA_CHUNK:
        for (size_t i = 0; i < ev.chunk.len; i++) {
          char c = ev.chunk.ptr[i];
          if (c == '\r' &&
              (i + 1 >= ev.chunk.len || ev.chunk.ptr[i + 1] != '\n'))
            abort();
          if (c == '\n' && (i == 0 || ev.chunk.ptr[i - 1] != '\r'))
            abort();
        }
        break;
      case SMTP_SRV_EV_DATA_END:
        smtp_server_commit_done(s, ev.end.size % 2 == 0, "QID");
        break;
      case SMTP_SRV_EV_AUTH:
        smtp_server_auth_done(s, ev.auth.pass[0] == 's', NULL);
        break;
      case SMTP_SRV_EV_STARTTLS:
        discard = 1;
        break;
      default:
        break;
      }
    }
    if (discard) {
      /* Drop the rest of the current read, as the caller must. */
      off = avail;
      smtp_server_tls_started(s, "TLSv1.3");
    }
    if (smtp_server_close_wanted(s))
      break;
    check_output(s);
    if (off == avail) {
      if (avail == size)
        break;
      avail = avail + step < size ? avail + step : size;
    } else if (n == 0 && smtp_server_blocked(s) &&
               smtp_server_state(s) != SMTP_SRV_ST_CMD &&
               smtp_server_state(s) != SMTP_SRV_ST_AUTH_LINE &&
               smtp_server_state(s) != SMTP_SRV_ST_DATA) {
      abort(); /* stuck waiting although every answer was given */
    }
  }
  check_output(s);
  smtp_server_close(s, SMTP_SRV_CLOSE_SHUTDOWN);
  check_output(s);
  smtp_server_free(s);
  return 0;
}
