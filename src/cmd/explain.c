/*
 * explain: `mailhop check --explain KEY` (see explain.h).
 */
#include "cmd/explain.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

const char *explain_text(const char *name) {
  for (size_t i = 0; i < n_keydocs; i++)
    if (strcmp(keydocs[i].name, name) == 0)
      return keydocs[i].text;
  return NULL;
}

/* The value config_print gives key in cfg, into out (cap bytes). */
static void value_of(const struct config *cfg, const char *key, char *out,
                     size_t cap) {
  out[0] = '\0';
  size_t need = config_print(cfg, NULL, 0) + 1;
  char *all = malloc(need);
  if (!all)
    return;
  config_print(cfg, all, need);
  size_t kn = strlen(key);
  for (char *line = all; line && *line;) {
    char *nl = strchr(line, '\n');
    if (nl)
      *nl = '\0';
    if (strncmp(line, key, kn) == 0 && strncmp(line + kn, " = ", 3) == 0) {
      snprintf(out, cap, "%s", line + kn + 3);
      break;
    }
    line = nl ? nl + 1 : NULL;
  }
  free(all);
}

/* "  label: value" with "(empty)" for an empty value. */
static void field(FILE *out, const char *label, const char *value,
                  const char *note) {
  fprintf(out, "  %-12s %s%s\n", label, value[0] ? value : "(empty)", note);
}

int explain_main(const char *key, const struct config *cfg, const char *cfg_err,
                 FILE *out, FILE *err) {
  /* MAILHOP_RELAYHOST is the key relayhost. */
  char name[128];
  const char *k = strncasecmp(key, "MAILHOP_", 8) == 0 ? key + 8 : key;
  size_t n = 0;
  for (; k[n] && n + 1 < sizeof name; n++)
    name[n] = (char)tolower((unsigned char)k[n]);
  name[n] = '\0';

  const char *dflt;
  if (k[n] || config_key_default(name, &dflt) < 0) {
    const char *near = config_near_key(name);
    fprintf(err, "mailhop: no key '%s'%s%s%s (mailhop check lists every key)\n",
            key, near ? "; did you mean '" : "", near ? near : "",
            near ? "'?" : "");
    return 1;
  }
  const char *text = explain_text(name);
  char upper[128];
  for (size_t i = 0; i <= n; i++)
    upper[i] = (char)toupper((unsigned char)name[i]);

  fprintf(out, "%s\n\n", name);
  if (text) {
    /* Indent the description by two spaces. */
    for (const char *p = text; *p;) {
      const char *nl = strchr(p, '\n');
      size_t len = nl ? (size_t)(nl - p) : strlen(p);
      fprintf(out, "%s%.*s\n", len ? "  " : "", (int)len, p);
      p += len + (nl ? 1 : 0);
    }
  } else {
    fprintf(out, "  (no description: add one to docs/keys.txt)\n");
  }
  fputc('\n', out);

  char value[4096];
  if (dflt) {
    field(out, "default:", dflt, "");
  } else {
    struct config *d = malloc(sizeof *d);
    if (d) {
      config_defaults(d);
      value_of(d, name, value, sizeof value);
      free(d);
      fprintf(out, "  %-12s set at start-up (here: %s)\n",
              "default:", value[0] ? value : "empty");
    }
  }
  if (cfg) {
    value_of(cfg, name, value, sizeof value);
    field(out, "current:", value, "");
  } else {
    field(out, "current:", "unknown", "");
    if (cfg_err)
      fprintf(err, "%s\n", cfg_err);
  }
  fprintf(out, "  %-12s MAILHOP_%s, MAILHOP_%s_FILE\n", "environment:", upper,
          upper);
  return text && cfg ? 0 : 1;
}
