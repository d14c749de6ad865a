/*
 * admin/hooks: the commands the owner answers through a callback it set:
 * `drain [[HOST]:PORT] [TIMEOUT_S]` and `drain cancel` (admin_set_drain)
 * and `tlsrpt` (admin_set_tlsrpt).  Admin only parses the words and writes
 * the reply.
 */
#include "relay/admin/internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "loop/admin_socket.h"
#include "proto/routes.h"

/* ---- drain (CONTRACT §1, §5) ------------------------------------------- */

/* 1 when s is all digits (a TIMEOUT_S word), at most 9 of them. */
static int all_digits(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 9)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (s[i] < '0' || s[i] > '9')
      return 0;
  return 1;
}

void adm_cmd_drain(struct admin *a, struct admin_client *c, char **argv,
                   int argc) {
  int cancel = argc == 1 && strcasecmp(argv[0], "cancel") == 0;
  struct route_host to;
  int have_to = 0;
  int64_t timeout_s = 0;
  for (int i = 0; i < argc && !cancel; i++) {
    if (all_digits(argv[i]) && i == argc - 1) {
      timeout_s = strtoll(argv[i], NULL, 10);
    } else if (i == 0 && routes_parse_peer(argv[i], &to) == 0) {
      have_to = 1;
    } else {
      adm_reply_error(
          c, "usage: drain [[HOST]:PORT] [TIMEOUT_S] | drain cancel", NULL);
      admin_socket_end(c);
      return;
    }
  }
  char err[256] = "";
  if (!a->drain) {
    adm_reply_error(c, "drain is not available", NULL);
  } else if (a->drain(a->drain_data, cancel, have_to ? &to : NULL, timeout_s,
                      err, sizeof err) < 0) {
    adm_reply_error(c, err[0] ? err : "drain failed", NULL);
  } else {
    adm_reply_ok(c);
  }
  admin_socket_end(c);
}

void admin_set_drain(struct admin *a, admin_drain_cb cb, void *data) {
  a->drain = cb;
  a->drain_data = data;
}

/* `tlsrpt` (CONTRACT §5): the running TLS-RPT counts. */
void adm_cmd_tlsrpt(struct admin *a, struct admin_client *c, char **argv,
                    int argc) {
  (void)argv;
  (void)argc;
  char *s = a->tlsrpt ? a->tlsrpt(a->tlsrpt_arg) : NULL;
  if (!s) {
    adm_reply_error(c, a->tlsrpt ? "out of memory" : "TLS-RPT is not running",
                    NULL);
  } else {
    admin_socket_write(c, s, strlen(s));
    admin_socket_write(c, "\n", 1);
    free(s);
  }
  admin_socket_end(c);
}

void admin_set_tlsrpt(struct admin *a, char *(*json)(void *arg), void *arg) {
  a->tlsrpt = json;
  a->tlsrpt_arg = arg;
}
