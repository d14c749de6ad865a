/*
 * proto/oauth2: token request form and token answer (see oauth2.h).
 */
#include "proto/oauth2.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

struct fb {
  char *out;
  size_t cap, len;
};

static void fb_ch(struct fb *b, char c) {
  if (b->len + 1 < b->cap)
    b->out[b->len] = c;
  b->len++;
}

/* application/x-www-form-urlencoded: unreserved bytes as they are, space
 * as '+', the rest %XX. */
static void fb_enc(struct fb *b, const char *s) {
  static const char hex[] = "0123456789ABCDEF";
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    unsigned char c = *p;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
        (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
        c == '*') {
      fb_ch(b, (char)c);
    } else if (c == ' ') {
      fb_ch(b, '+');
    } else {
      fb_ch(b, '%');
      fb_ch(b, hex[c >> 4]);
      fb_ch(b, hex[c & 15]);
    }
  }
}

static void fb_field(struct fb *b, const char *name, const char *val) {
  if (!val || !val[0])
    return;
  if (b->len)
    fb_ch(b, '&');
  fb_enc(b, name);
  fb_ch(b, '=');
  fb_enc(b, val);
}

size_t oauth2_form(const struct oauth2_grant *g, char *out, size_t cap) {
  struct fb b = {out, cap, 0};
  int refresh = g->refresh_token && g->refresh_token[0];
  fb_field(&b, "grant_type", refresh ? "refresh_token" : "client_credentials");
  if (refresh)
    fb_field(&b, "refresh_token", g->refresh_token);
  fb_field(&b, "client_id", g->client_id);
  fb_field(&b, "client_secret", g->client_secret);
  fb_field(&b, "scope", g->scope);
  if (cap)
    out[b.len < cap ? b.len : cap - 1] = '\0';
  return b.len;
}

/* A string of the answer for a log line: cut, non-printable bytes as '?'. */
static void safe_copy(char *out, size_t cap, const char *s) {
  size_t o = 0;
  for (; s && *s && o + 1 < cap && o < 200; s++)
    out[o++] = (*s >= 0x20 && *s < 0x7f) ? *s : '?';
  if (cap)
    out[o] = '\0';
}

int oauth2_parse_token(int http_status, const char *body, size_t len,
                       struct oauth2_token *out, char *why, size_t whylen) {
  memset(out, 0, sizeof *out);
  if (why && whylen)
    why[0] = '\0';
  if (len > OAUTH2_ANSWER_MAX) {
    snprintf(why, whylen, "HTTP %d: answer larger than %d bytes", http_status,
             OAUTH2_ANSWER_MAX);
    return -1;
  }
  json_error_t jerr;
  json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
  if (!root || !json_is_object(root)) {
    snprintf(why, whylen, "HTTP %d: the answer is not a JSON object",
             http_status);
    json_decref(root);
    return -1;
  }
  const char *err = json_string_value(json_object_get(root, "error"));
  if (http_status != 200 || err) {
    char e[64], desc[208];
    safe_copy(e, sizeof e, err);
    safe_copy(desc, sizeof desc,
              json_string_value(json_object_get(root, "error_description")));
    snprintf(why, whylen, "HTTP %d%s%s%s%s", http_status, e[0] ? ": " : "", e,
             desc[0] ? ": " : "", desc);
    json_decref(root);
    return -1;
  }
  int rc = -1;
  json_t *tt = json_object_get(root, "token_type");
  json_t *at = json_object_get(root, "access_token");
  json_t *ex = json_object_get(root, "expires_in");
  const char *tok = json_string_value(at);
  size_t tl = tok ? json_string_length(at) : 0;
  if (!tok || tl == 0) {
    snprintf(why, whylen, "no access_token in the answer");
    goto out;
  }
  if (tl > OAUTH2_TOKEN_MAX) {
    snprintf(why, whylen, "access_token longer than %d bytes",
             OAUTH2_TOKEN_MAX);
    goto out;
  }
  for (size_t i = 0; i < tl; i++)
    if (tok[i] <= 0x20 || tok[i] >= 0x7f) {
      snprintf(why, whylen,
               "access_token has a byte that is not printable "
               "ASCII");
      goto out;
    }
  if (tt && (!json_is_string(tt) ||
             strcasecmp(json_string_value(tt), "bearer") != 0)) {
    char t[64];
    safe_copy(t, sizeof t, json_string_value(tt));
    snprintf(why, whylen, "token_type '%s' is not Bearer", t);
    goto out;
  }
  uint64_t expires = OAUTH2_DEFAULT_EXPIRES;
  if (ex && !json_is_null(ex)) {
    double v = -1;
    if (json_is_integer(ex)) {
      v = (double)json_integer_value(ex);
    } else if (json_is_real(ex)) {
      v = json_real_value(ex);
    } else if (json_is_string(ex)) {
      /* Some endpoints send it as a string ("3599"). */
      const char *s = json_string_value(ex);
      uint64_t u = 0;
      size_t n = 0;
      for (; s[n] >= '0' && s[n] <= '9' && n < 12; n++)
        u = u * 10 + (uint64_t)(s[n] - '0');
      if (n > 0 && !s[n])
        v = (double)u;
    }
    if (!(v >= 0 && v <= 1e9)) {
      snprintf(why, whylen, "expires_in is not a number of seconds");
      goto out;
    }
    expires = (uint64_t)v;
  }
  memcpy(out->access_token, tok, tl);
  out->access_token[tl] = '\0';
  out->expires_in = expires;
  rc = 0;
out:
  json_decref(root);
  return rc;
}
