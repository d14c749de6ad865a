/*
 * config/sources.c: the sources of the configuration and their precedence,
 * later wins: built-in defaults < file < MAILHOP_* environment (MAILHOP_X_FILE
 * reads X from a file) < -o KEY=VALUE; then the checks of validate.c.  An
 * unknown key in the file or -o is an error, in the environment a warning;
 * both name the key it most likely meant (did-you-mean).
 */
#include "config.h"
#include "config/internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Levenshtein distance of a[0..an) and b[0..bn), capped at 32 octets. */
static size_t edit_distance(const char *a, size_t an, const char *b,
                            size_t bn) {
  if (an > 32 || bn > 32)
    return 99;
  size_t row[33];
  for (size_t j = 0; j <= bn; j++)
    row[j] = j;
  for (size_t i = 1; i <= an; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= bn; j++) {
      size_t up = row[j];
      size_t best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best)
        best = up + 1;
      if (row[j - 1] + 1 < best)
        best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[bn];
}

/*
 * The key a mistyped name most likely meant, or NULL: within two edits
 * (relayhost_pasword), or one name a prefix of the other sharing at least
 * three quarters of the longer one (relayhost_username, relayhost_pass).
 */
static const char *near_key(const char *name, size_t len) {
  const char *best = NULL;
  size_t best_d = 3;
  for (size_t i = 0; i < cfg_n_keys; i++) {
    const char *k = cfg_keys[i].name;
    size_t kn = strlen(k);
    size_t d = edit_distance(name, len, k, kn);
    size_t shorter = kn < len ? kn : len, longer = kn < len ? len : kn;
    if (d > 2 && strncmp(name, k, shorter) == 0 && shorter * 4 >= longer * 3)
      d = 2;
    if (d < best_d) {
      best_d = d;
      best = k;
    }
  }
  return best;
}

/* cfg_set_key for a key a source names; notes that relay_networks was given
 * (the open-relay check of validate.c). */
static int set_named(struct config *cfg, const struct key *k, const char *value,
                     char *err) {
  if (cfg_set_key(cfg, k, value, err) < 0)
    return -1;
  if (k->off == F(relay_networks) && k->type == K_CIDRS)
    cfg->relay_networks_set = 1;
  return 0;
}

int config_parse_text(struct config *cfg, const char *name, const char *text,
                      size_t len, char err[CONFIG_ERR_MAX]) {
  size_t pos = 0;
  int lineno = 0;
  char msg[CONFIG_ERR_MAX];
  while (pos < len) {
    lineno++;
    const char *line = text + pos;
    const char *nl = memchr(line, '\n', len - pos);
    size_t n = nl ? (size_t)(nl - line) : len - pos;
    pos += n + (nl ? 1 : 0);
    const char *s = line;
    cfg_trim(&s, &n);
    if (n == 0 || s[0] == '#')
      continue;
    if (memchr(s, '\0', n))
      return ERR("%s:%d: NUL byte in line", name, lineno);
    const char *eq = memchr(s, '=', n);
    if (!eq)
      return ERR("%s:%d: expected 'key = value'", name, lineno);
    const char *kname = s;
    size_t kn = (size_t)(eq - s);
    cfg_trim(&kname, &kn);
    const struct key *k = cfg_find_key(kname, kn);
    if (!k) {
      const char *near = near_key(kname, kn);
      return ERR("%s:%d: unknown key '%.*s'%s%s%s", name, lineno, (int)kn,
                 kname, near ? " (did you mean '" : "", near ? near : "",
                 near ? "'?)" : "");
    }
    char value[4096];
    size_t vn = n - (size_t)(eq + 1 - s);
    if (vn >= sizeof value)
      return ERR("%s:%d: %s: value too long", name, lineno, k->name);
    memcpy(value, eq + 1, vn);
    value[vn] = '\0';
    if (set_named(cfg, k, value, msg) < 0)
      return ERR("%s:%d: %s", name, lineno, msg);
  }
  return 0;
}

static int apply_env(struct config *cfg, char *const *env,
                     struct config_warnings *warn, char *err) {
  char msg[CONFIG_ERR_MAX];
  if (!env)
    return 0;
  for (char *const *e = env; *e; e++) {
    if (strncmp(*e, "MAILHOP_", 8) != 0)
      continue;
    const char *eq = strchr(*e, '=');
    if (!eq)
      continue;
    char name[128];
    size_t n = (size_t)(eq - *e) - 8;
    if (n == 0 || n >= sizeof name) {
      cfg_warn_add(warn, "%.*s: not a mailhop setting, ignored", (int)(n + 8),
                   *e);
      continue;
    }
    for (size_t i = 0; i < n; i++)
      name[i] = (char)tolower((unsigned char)(*e)[8 + i]);
    name[n] = '\0';
    const char *value = eq + 1;
    const struct key *k = cfg_find_key(name, n);
    char filebuf[4096];
    int from_file = 0;
    if (!k && n > 5 && strcmp(name + n - 5, "_file") == 0 &&
        (k = cfg_find_key(name, n - 5)) != NULL) {
      /* MAILHOP_X_FILE: the key X from a file; both set is an error. */
      char plain[160];
      snprintf(plain, sizeof plain, "MAILHOP_%.*s=", (int)(n - 5), *e + 8);
      for (char *const *o = env; *o; o++)
        if (strncmp(*o, plain, strlen(plain)) == 0)
          return ERR("%s: both MAILHOP_%.*s and MAILHOP_%.*s are set; use "
                     "one",
                     k->name, (int)(n - 5), *e + 8, (int)n, *e + 8);
      if (config_read_secret(value, filebuf, sizeof filebuf, msg, sizeof msg) <
          0)
        return ERR("%s: %s (from MAILHOP_%.*s)", k->name, msg, (int)n, *e + 8);
      value = filebuf;
      from_file = 1;
    }
    if (!k) {
      const char *near = near_key(name, n);
      char upper[64] = "";
      for (size_t i = 0; near && near[i] && i + 1 < sizeof upper; i++) {
        upper[i] = (char)toupper((unsigned char)near[i]);
        upper[i + 1] = '\0';
      }
      if (near)
        cfg_warn_add(
            warn,
            "MAILHOP_%.*s: not a mailhop setting, ignored (did you mean "
            "MAILHOP_%s?)",
            (int)n, *e + 8, upper);
      else
        cfg_warn_add(warn, "MAILHOP_%.*s: not a mailhop setting, ignored",
                     (int)n, *e + 8);
      continue;
    }
    if (set_named(cfg, k, value, msg) < 0)
      return ERR("%s (from MAILHOP_%.*s)", msg, (int)n, *e + 8);
    (void)from_file;
  }
  return 0;
}

int config_load(struct config *cfg, const struct config_source *src,
                struct config_warnings *warn, char err[CONFIG_ERR_MAX]) {
  char msg[CONFIG_ERR_MAX];
  config_defaults(cfg);
  if (warn)
    warn->n = 0;
  const char *file = src->file;
  if (file) {
    FILE *f = fopen(file, "r");
    if (!f) {
      if (src->file_explicit || errno != ENOENT)
        return ERR("%s: cannot read: %s", file, strerror(errno));
    } else {
      size_t cap = 1 << 16, len = 0;
      char *buf = malloc(cap);
      if (!buf) {
        fclose(f);
        return ERR("%s: out of memory", file);
      }
      size_t r;
      while ((r = fread(buf + len, 1, cap - len, f)) > 0) {
        len += r;
        if (len == cap) {
          free(buf);
          fclose(f);
          return ERR("%s: file too large (over 64 KiB)", file);
        }
      }
      int bad = ferror(f);
      fclose(f);
      if (bad) {
        free(buf);
        return ERR("%s: read error", file);
      }
      int rc = config_parse_text(cfg, file, buf, len, err);
      free(buf);
      if (rc < 0)
        return -1;
    }
  }
  if (apply_env(cfg, src->environ, warn, err) < 0)
    return -1;
  for (int i = 0; i < src->n_overrides; i++) {
    const char *o = src->overrides[i];
    const char *eq = strchr(o, '=');
    if (!eq)
      return ERR("%s: -o needs KEY=VALUE", o);
    size_t kn = (size_t)(eq - o);
    const struct key *k = cfg_find_key(o, kn);
    if (!k) {
      const char *near = near_key(o, kn);
      return ERR("%.*s: unknown key%s%s%s", (int)kn, o,
                 near ? " (did you mean '" : "", near ? near : "",
                 near ? "'?)" : "");
    }
    if (set_named(cfg, k, eq + 1, msg) < 0)
      return ERR("%s", msg);
  }
  return cfg_validate(cfg, warn, err);
}

const char *config_near_key(const char *name) {
  return near_key(name, strlen(name));
}
