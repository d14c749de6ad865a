/*
 * relay/routes: the routes_file loaded (see routes.h).
 */
#include "relay/routes.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int relay_read_secret(const char *path, char *out, size_t cap, char *why,
                      size_t whycap) {
  if (config_read_secret(path, out, cap, why, whycap) < 0)
    return -1;
  if (out[0] == '\0') {
    snprintf(why, whycap, "%s is empty", path);
    return -1;
  }
  return 0;
}

static char *read_file(const char *file, size_t *len, char *err,
                       size_t errlen) {
  FILE *f = fopen(file, "rb");
  if (!f) {
    snprintf(err, errlen, "routes_file: cannot read %s: %s", file,
             strerror(errno));
    return NULL;
  }
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  while (buf) {
    if (n == cap) {
      if (cap >= RELAY_ROUTES_FILE_MAX) {
        snprintf(err, errlen, "routes_file: %s is larger than %d bytes", file,
                 RELAY_ROUTES_FILE_MAX);
        free(buf);
        fclose(f);
        return NULL;
      }
      char *nb = realloc(buf, cap * 2);
      if (!nb) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = nb;
      cap *= 2;
    }
    size_t r = fread(buf + n, 1, cap - n, f);
    n += r;
    if (r == 0)
      break;
  }
  if (!buf || ferror(f)) {
    snprintf(err, errlen, "routes_file: cannot read %s", file);
    free(buf);
    fclose(f);
    return NULL;
  }
  fclose(f);
  *len = n;
  return buf;
}

int relay_routes_load(const char *file, struct relay_routes **out, char *err,
                      size_t errlen) {
  *out = NULL;
  struct relay_routes *rt = calloc(1, sizeof *rt);
  if (!rt) {
    snprintf(err, errlen, "routes_file: out of memory");
    return -1;
  }
  rt->refs = 1;
  if (file && file[0]) {
    size_t len = 0;
    char *text = read_file(file, &len, err, errlen);
    if (!text) {
      free(rt);
      return -1;
    }
    int rc = routes_parse(file, text, len, &rt->rs, err, errlen);
    free(text);
    if (rc < 0) {
      free(rt);
      return -1;
    }
    /* The password files must be readable now (a start-up error rather
     * than deferred mail); they are read again before each connection. */
    for (size_t i = 0; i < rt->rs.n; i++) {
      const struct route *r = &rt->rs.r[i];
      if (!r->password_file[0])
        continue;
      char secret[1024], why[512];
      int bad = relay_read_secret(r->password_file, secret, sizeof secret, why,
                                  sizeof why);
      explicit_bzero(secret, sizeof secret);
      if (bad) {
        snprintf(err, errlen, "%s:%d: relayhost_password_file: %s", file,
                 r->line, why);
        routes_free(&rt->rs);
        free(rt);
        return -1;
      }
    }
  }
  *out = rt;
  return 0;
}

struct relay_routes *relay_routes_ref(struct relay_routes *rt) {
  if (rt)
    rt->refs++;
  return rt;
}

void relay_routes_unref(struct relay_routes *rt) {
  if (!rt || --rt->refs > 0)
    return;
  routes_free(&rt->rs);
  free(rt);
}

struct sb {
  char *out;
  size_t cap, len;
};

__attribute__((format(printf, 2, 3))) static void sb_add(struct sb *b,
                                                         const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int w = vsnprintf(b->len < b->cap ? b->out + b->len : NULL,
                    b->len < b->cap ? b->cap - b->len : 0, fmt, ap);
  va_end(ap);
  if (w > 0)
    b->len += (size_t)w;
}

size_t relay_routes_print(const struct relay_routes *rt, char *out,
                          size_t cap) {
  static const char *const tls[] = {"starttls", "implicit", "opportunistic",
                                    "none"};
  static const char *const auth[] = {"auto", "plain", "login", "xoauth2"};
  struct sb b = {out, cap, 0};
  if (out && cap)
    out[0] = '\0';
  for (size_t i = 0; rt && i < rt->rs.n; i++) {
    const struct route *r = &rt->rs.r[i];
    char m[400];
    routes_format_match(r, m, sizeof m);
    sb_add(&b, "route = %s", m);
    if (r->n_hosts == 0) {
      sb_add(&b, " relayhost=mx");
    } else {
      sb_add(&b, " relayhost=");
      for (int h = 0; h < r->n_hosts; h++)
        sb_add(&b, "%s%s%s%s:%u", h ? "," : "",
               r->hosts[h].mx_lookup ? "" : "[", r->hosts[h].host,
               r->hosts[h].mx_lookup ? "" : "]", (unsigned)r->hosts[h].port);
      sb_add(&b, " relayhost_tls=%s relayhost_auth=%s", tls[r->tls],
             auth[r->auth]);
      sb_add(&b, " relayhost_auth_plaintext=%s",
             r->auth_plaintext ? "yes" : "no");
      if (r->user[0])
        sb_add(&b, " relayhost_user=%s relayhost_password_file=%s", r->user,
               r->password_file);
    }
    if (r->rate_n)
      sb_add(&b, " rate=%llu/%llus", (unsigned long long)r->rate_n,
             (unsigned long long)(r->rate_window_ms / 1000));
    sb_add(&b, "\n");
  }
  return b.len;
}
