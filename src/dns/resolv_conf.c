/*
 * resolv_conf: the name servers and options of resolv.conf, for a
 * resolver given no servers (see resolver.h).  The parser is pure; the
 * reader reads at most 8 KB of the file, once, at resolver_new().
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dns/resolver_internal.h"

int resolver_parse_resolv_conf(const char *text, struct sockaddr_storage *out,
                               int max, uint64_t *timeout_ms, int *attempts) {
  int n = 0;
  const char *p = text;
  while (*p) {
    const char *eol = strchr(p, '\n');
    size_t len = eol ? (size_t)(eol - p) : strlen(p);
    char line[512];
    if (len >= sizeof line)
      len = sizeof line - 1;
    memcpy(line, p, len);
    line[len] = '\0';
    p = eol ? eol + 1 : p + strlen(p);
    char *save = NULL;
    char *w = strtok_r(line, " \t\r", &save);
    if (!w || w[0] == '#' || w[0] == ';')
      continue;
    if (strcmp(w, "nameserver") == 0) {
      char *ip = strtok_r(NULL, " \t\r", &save);
      if (!ip || n >= max)
        continue;
      struct sockaddr_storage ss;
      memset(&ss, 0, sizeof ss);
      struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
      struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
      if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons(53);
      } else if (inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(53);
      } else {
        continue; /* scoped or malformed: skip, as glibc would */
      }
      out[n++] = ss;
    } else if (strcmp(w, "options") == 0) {
      for (char *o; (o = strtok_r(NULL, " \t\r", &save));) {
        if (strncmp(o, "timeout:", 8) == 0) {
          long v = strtol(o + 8, NULL, 10);
          if (v >= 1 && v <= 30)
            *timeout_ms = (uint64_t)v * 1000;
        } else if (strncmp(o, "attempts:", 9) == 0) {
          long v = strtol(o + 9, NULL, 10);
          if (v >= 1 && v <= 5)
            *attempts = (int)v;
        }
      }
    }
  }
  return n;
}

int rsv_read_resolv_conf(const char *path, struct resolver *r,
                         uint64_t *timeout_ms, int *attempts) {
  FILE *f = fopen(path, "r");
  if (!f)
    return 0;
  char text[8192];
  size_t n = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  text[n] = '\0';
  return resolver_parse_resolv_conf(text, r->servers, RESOLVER_MAX_SERVERS,
                                    timeout_ms, attempts);
}
