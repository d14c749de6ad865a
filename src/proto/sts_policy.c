/*
 * proto/sts_policy: MTA-STS and TLS-RPT records and policies (see
 * sts_policy.h).
 */
#include "proto/sts_policy.h"
#include "proto/text.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

const char *sts_mode_name(enum sts_mode m) {
  switch (m) {
  case STS_MODE_ENFORCE:
    return "enforce";
  case STS_MODE_TESTING:
    return "testing";
  case STS_MODE_NONE:
    break;
  }
  return "none";
}

static int is_wsp(char c) {
  return c == ' ' || c == '\t';
}

static int is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9');
}

int sts_txt_parse(const char *txt, char *id) {
  id[0] = '\0';
  if (strncmp(txt, "v=STSv1", 7) != 0)
    return 0;
  const char *p = txt + 7;
  while (is_wsp(*p))
    p++;
  if (*p != ';' && *p != '\0')
    return 0; /* "v=STSv10": not ours */
  int have_id = 0;
  while (*p) {
    if (*p == ';') {
      p++;
      continue;
    }
    while (is_wsp(*p))
      p++;
    if (!*p)
      break;
    const char *k = p;
    while (*p && *p != '=' && *p != ';')
      p++;
    if (*p != '=')
      return -1;
    size_t kl = (size_t)(p - k);
    p++;
    const char *v = p;
    while (*p && *p != ';')
      p++;
    size_t vl = (size_t)(p - v);
    while (vl > 0 && is_wsp(v[vl - 1]))
      vl--;
    if (kl == 2 && memcmp(k, "id", 2) == 0) {
      if (have_id || vl < 1 || vl > STS_ID_MAX)
        return -1;
      for (size_t i = 0; i < vl; i++)
        if (!is_alnum(v[i]))
          return -1;
      memcpy(id, v, vl);
      id[vl] = '\0';
      have_id = 1;
    } else {
      /* other extension fields: sts-ext-name "=" sts-ext-value */
      for (size_t i = 0; i < kl; i++)
        if (!is_alnum(k[i]) && k[i] != '_' && k[i] != '-' && k[i] != '.')
          return -1;
    }
  }
  if (!have_id) {
    id[0] = '\0';
    return -1;
  }
  return 1;
}

int sts_txt_pick(const char *const *txts, int n, char *id) {
  int found = 0;
  char tmp[STS_ID_MAX + 1];
  id[0] = '\0';
  for (int i = 0; i < n; i++) {
    if (strncmp(txts[i], "v=STSv1", 7) != 0)
      continue;
    found++;
    if (sts_txt_parse(txts[i], tmp) == 1)
      memcpy(id, tmp, sizeof tmp);
    else
      id[0] = '\0';
  }
  if (found != 1 || !id[0]) {
    id[0] = '\0';
    return 0;
  }
  return 1;
}

static void why_set(char *why, size_t cap, const char *msg) {
  if (cap > 0)
    snprintf(why, cap, "%s", msg);
}

/* A pattern or host name: letters, digits, '-', '_', dots; labels 1..63;
 * a leading "*." allowed when wild.  Lower-cased into out (cap bytes). */
static int norm_name(const char *in, size_t len, int wild, char *out,
                     size_t cap) {
  if (len > 0 && in[len - 1] == '.')
    len--;
  if (len == 0 || len >= cap || len > 253)
    return -1;
  size_t i = 0;
  if (wild && len > 2 && in[0] == '*' && in[1] == '.') {
    out[0] = '*';
    out[1] = '.';
    i = 2;
  }
  size_t lab = 0;
  for (; i < len; i++) {
    char c = in[i];
    if (c >= 'A' && c <= 'Z')
      c = (char)(c - 'A' + 'a');
    if (c == '.') {
      if (lab == 0)
        return -1;
      lab = 0;
    } else if (is_alnum(c) || c == '-' || c == '_') {
      if (++lab > 63)
        return -1;
    } else {
      return -1;
    }
    out[i] = c;
  }
  if (lab == 0)
    return -1;
  out[len] = '\0';
  return 0;
}

int sts_policy_parse(const char *body, size_t len, struct sts_policy *out,
                     char *why, size_t cap) {
  memset(out, 0, sizeof *out);
  if (cap > 0)
    why[0] = '\0';
  if (len > STS_POLICY_MAX) {
    why_set(why, cap, "policy larger than 64 KiB");
    return -1;
  }
  int have_version = 0, have_mode = 0, have_age = 0;
  size_t pos = 0, lineno = 0;
  while (pos < len) {
    size_t end = pos;
    while (end < len && body[end] != '\n')
      end++;
    size_t next = end < len ? end + 1 : end;
    size_t le = end;
    if (le > pos && body[le - 1] == '\r')
      le--;
    lineno++;
    const char *l = body + pos;
    size_t ll = le - pos;
    pos = next;
    /* trailing whitespace */
    while (ll > 0 && is_wsp(l[ll - 1]))
      ll--;
    if (ll == 0)
      continue;
    const char *colon = memchr(l, ':', ll);
    if (!colon) {
      char m[80];
      snprintf(m, sizeof m, "line %zu: no ':'", lineno);
      why_set(why, cap, m);
      goto fail;
    }
    size_t kl = (size_t)(colon - l);
    const char *v = colon + 1;
    size_t vl = ll - kl - 1;
    while (vl > 0 && is_wsp(*v)) {
      v++;
      vl--;
    }
    for (size_t i = 0; i < kl; i++)
      if ((unsigned char)l[i] < 0x21 || (unsigned char)l[i] > 0x7e) {
        why_set(why, cap, "bad key");
        goto fail;
      }
    if (kl == 7 && memcmp(l, "version", 7) == 0) {
      if (have_version || vl != 5 || memcmp(v, "STSv1", 5) != 0) {
        why_set(why, cap, "version is not STSv1");
        goto fail;
      }
      have_version = 1;
    } else if (kl == 4 && memcmp(l, "mode", 4) == 0) {
      if (have_mode) {
        why_set(why, cap, "mode given twice");
        goto fail;
      }
      if (vl == 7 && memcmp(v, "enforce", 7) == 0)
        out->mode = STS_MODE_ENFORCE;
      else if (vl == 7 && memcmp(v, "testing", 7) == 0)
        out->mode = STS_MODE_TESTING;
      else if (vl == 4 && memcmp(v, "none", 4) == 0)
        out->mode = STS_MODE_NONE;
      else {
        why_set(why, cap, "bad mode");
        goto fail;
      }
      have_mode = 1;
    } else if (kl == 7 && memcmp(l, "max_age", 7) == 0) {
      if (have_age || vl == 0 || vl > 10) {
        why_set(why, cap, "bad max_age");
        goto fail;
      }
      uint64_t a = 0;
      for (size_t i = 0; i < vl; i++) {
        if (v[i] < '0' || v[i] > '9') {
          why_set(why, cap, "bad max_age");
          goto fail;
        }
        a = a * 10 + (uint64_t)(v[i] - '0');
      }
      out->max_age = a > STS_MAX_AGE_MAX ? STS_MAX_AGE_MAX : (uint32_t)a;
      have_age = 1;
    } else if (kl == 2 && memcmp(l, "mx", 2) == 0) {
      if (out->n_mx >= STS_MAX_MX)
        continue;
      if (norm_name(v, vl, 1, out->mx[out->n_mx], STS_MX_LEN) != 0) {
        why_set(why, cap, "bad mx pattern");
        goto fail;
      }
      out->n_mx++;
    }
    /* other keys: ignored (RFC 8461 §3.2 extensions) */
  }
  if (!have_version || !have_mode || !have_age) {
    why_set(why, cap,
            !have_version ? "no version"
            : !have_mode  ? "no mode"
                          : "no max_age");
    goto fail;
  }
  if (out->mode != STS_MODE_NONE && out->n_mx == 0) {
    why_set(why, cap, "no mx");
    goto fail;
  }
  return 0;
fail:
  memset(out, 0, sizeof *out);
  if (cap > 0 && !why[0])
    why_set(why, cap, "malformed policy");
  return -1;
}

int sts_media_type_ok(const char *content_type) {
  if (!content_type)
    return 0;
  const char *p = content_type;
  while (*p == ' ' || *p == '\t')
    p++;
  if (strncasecmp(p, "text/plain", 10) != 0)
    return 0;
  p += 10;
  while (*p == ' ' || *p == '\t')
    p++;
  return *p == '\0' || *p == ';';
}

int sts_mx_match(const struct sts_policy *p, const char *host) {
  char h[STS_MX_LEN];
  if (norm_name(host, strlen(host), 0, h, sizeof h) != 0)
    return 0;
  for (int i = 0; i < p->n_mx; i++) {
    const char *m = p->mx[i];
    if (m[0] == '*' && m[1] == '.') {
      const char *dot = strchr(h, '.');
      if (dot && dot != h && strcmp(dot + 1, m + 2) == 0)
        return 1;
    } else if (strcmp(h, m) == 0) {
      return 1;
    }
  }
  return 0;
}

/* One URI of rua (u[0..ul)): a mailto: address into out, or -1. */
static int rua_mailto(const char *u, size_t ul, char *out) {
  if (ul < 7 || strncasecmp(u, "mailto:", 7) != 0)
    return -1;
  u += 7;
  ul -= 7;
  const char *q = memchr(u, '?', ul);
  if (q)
    ul = (size_t)(q - u);
  size_t o = 0;
  int at = 0;
  for (size_t i = 0; i < ul; i++) {
    char c = u[i];
    if (c == '%') {
      if (i + 2 >= ul)
        return -1;
      int a = text_hexval(u[i + 1]), b = text_hexval(u[i + 2]);
      if (a < 0 || b < 0)
        return -1;
      c = (char)(a * 16 + b);
      i += 2;
    }
    if ((unsigned char)c <= 0x20 || (unsigned char)c >= 0x7f || c == '<' ||
        c == '>' || c == '(' || c == ')' || c == ',' || c == ';' || c == '"' ||
        c == '\\')
      return -1;
    if (c == '@')
      at++;
    if (o + 1 >= TLSRPT_RUA_LEN)
      return -1;
    out[o++] = c;
  }
  out[o] = '\0';
  if (at != 1 || out[0] == '@' || out[o - 1] == '@')
    return -1;
  return 0;
}

int tlsrpt_txt_rua(const char *const *txts, int n,
                   char rua[TLSRPT_MAX_RUA][TLSRPT_RUA_LEN]) {
  const char *rec = NULL;
  int found = 0;
  for (int i = 0; i < n; i++) {
    const char *t = txts[i];
    if (strncmp(t, "v=TLSRPTv1", 10) != 0)
      continue;
    const char *p = t + 10;
    while (is_wsp(*p))
      p++;
    if (*p != ';' && *p != '\0')
      continue;
    found++;
    rec = t;
  }
  if (found != 1)
    return 0;
  int nr = 0;
  const char *p = rec + 10;
  while (*p) {
    if (*p == ';' || is_wsp(*p)) {
      p++;
      continue;
    }
    const char *k = p;
    while (*p && *p != '=' && *p != ';')
      p++;
    if (*p != '=')
      return 0;
    size_t kl = (size_t)(p - k);
    p++;
    const char *v = p;
    while (*p && *p != ';')
      p++;
    if (kl != 3 || memcmp(k, "rua", 3) != 0)
      continue;
    const char *e = p;
    const char *u = v;
    while (u < e) {
      while (u < e && (is_wsp(*u) || *u == ','))
        u++;
      const char *ue = u;
      while (ue < e && *ue != ',')
        ue++;
      size_t ul = (size_t)(ue - u);
      while (ul > 0 && is_wsp(u[ul - 1]))
        ul--;
      if (ul > 0 && nr < TLSRPT_MAX_RUA && rua_mailto(u, ul, rua[nr]) == 0)
        nr++;
      u = ue;
    }
  }
  return nr;
}
