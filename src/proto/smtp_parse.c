/*
 * smtp_parse: pure parsers of SMTP command lines, paths and ESMTP
 * parameters.  See smtp_parse.h.  Never allocates, logs or does I/O.
 */
#include "proto/smtp_parse.h"

#include "proto/text.h"

#include <string.h>

const char *smtp_parse_result_name(int r) {
  switch (r) {
  case SMTP_PARSE_OK:
    return "ok";
  case SMTP_PARSE_ESYNTAX:
    return "syntax";
  case SMTP_PARSE_EADDR:
    return "address";
  case SMTP_PARSE_ENODOMAIN:
    return "nodomain";
  case SMTP_PARSE_ENULL:
    return "null";
  case SMTP_PARSE_EPARAM:
    return "param";
  case SMTP_PARSE_EVALUE:
    return "value";
  case SMTP_PARSE_ENOTIFY:
    return "notify";
  }
  return "?";
}

static const struct {
  const char *word;
  enum smtp_verb verb;
} verbs[] = {
    {"HELO", SMTP_VERB_HELO}, {"EHLO", SMTP_VERB_EHLO},
    {"MAIL", SMTP_VERB_MAIL}, {"RCPT", SMTP_VERB_RCPT},
    {"DATA", SMTP_VERB_DATA}, {"RSET", SMTP_VERB_RSET},
    {"NOOP", SMTP_VERB_NOOP}, {"QUIT", SMTP_VERB_QUIT},
    {"VRFY", SMTP_VERB_VRFY}, {"EXPN", SMTP_VERB_EXPN},
    {"HELP", SMTP_VERB_HELP}, {"STARTTLS", SMTP_VERB_STARTTLS},
    {"AUTH", SMTP_VERB_AUTH},
};

const char *smtp_verb_name(enum smtp_verb v) {
  for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
    if (verbs[i].verb == v)
      return verbs[i].word;
  return "UNKNOWN";
}

enum smtp_verb smtp_parse_verb(const char *line, size_t len, const char **args,
                               size_t *args_len) {
  size_t w = 0;
  while (w < len && line[w] != ' ')
    w++;
  size_t a = w;
  while (a < len && line[a] == ' ')
    a++;
  size_t e = len;
  while (e > a && line[e - 1] == ' ')
    e--;
  *args = line + a;
  *args_len = e - a;
  for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
    if (strlen(verbs[i].word) == w && text_casecmp(line, verbs[i].word, w) == 0)
      return verbs[i].verb;
  return SMTP_VERB_UNKNOWN;
}

/* RFC 5322 atext. */
static int is_atext(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
      (c >= '0' && c <= '9'))
    return 1;
  return c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

static int is_ldh(unsigned char c) {
  /* Underscores are not legal in host names but appear in real mail. */
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* Length of a valid UTF-8 sequence of 2..4 octets at s, else 0. */
static size_t utf8_at(const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  if (n == 0 || u[0] < 0x80)
    return 0;
  return text_utf8_len(u, n);
}

/* Parses a domain (name or address literal) at s[0..n); returns its length
 * or 0 when invalid.  Stops at the first octet that cannot continue it. */
static size_t parse_domain(const char *s, size_t n, int *utf8) {
  size_t i = 0;
  if (n > 0 && s[0] == '[') {
    /* RFC 5321 §4.1.3 address literal: dcontent is %d33-90 / %d94-126. */
    for (i = 1; i < n && s[i] != ']'; i++) {
      unsigned char c = (unsigned char)s[i];
      if (c < 33 || c > 126 || c == '[' || c == '\\')
        return 0;
    }
    if (i >= n || i == 1)
      return 0;
    return i + 1;
  }
  size_t label = 0;
  while (i < n) {
    unsigned char c = (unsigned char)s[i];
    size_t k;
    if (is_ldh(c)) {
      i++, label++;
    } else if ((k = utf8_at(s + i, n - i)) > 0) {
      *utf8 = 1;
      i += k, label += k;
    } else if (c == '.' && label > 0) {
      i++, label = 0;
    } else {
      break;
    }
  }
  if (i == 0 || label == 0) /* empty, or ends with a dot */
    return 0;
  return i;
}

static void path_reset(struct smtp_path *p) {
  p->addr[0] = '\0';
  p->len = 0;
  p->at = 0;
  p->is_null = 0;
  p->has_utf8 = 0;
}

int smtp_parse_path(const char *s, size_t n, unsigned flags,
                    struct smtp_path *p, size_t *end) {
  path_reset(p);
  size_t i = 0;
  /* No angle brackets at all is a command syntax error (5.5.4), not a
   * bad address (5.1.x). */
  if (n == 0 || s[0] != '<')
    return SMTP_PARSE_ESYNTAX;
  if (n < 2)
    return SMTP_PARSE_EADDR;
  i = 1;
  if (s[i] == '>') {
    if (!(flags & SMTP_PATH_ALLOW_NULL))
      return SMTP_PARSE_ENULL;
    p->is_null = 1;
    *end = 2;
    return SMTP_PARSE_OK;
  }
  /* Source route "@one,@two:" — tolerated and dropped (RFC 5321 C.). */
  if (s[i] == '@') {
    for (;;) {
      int u8 = 0;
      if (i >= n || s[i] != '@')
        return SMTP_PARSE_EADDR;
      i++;
      size_t d = parse_domain(s + i, n - i, &u8);
      if (d == 0)
        return SMTP_PARSE_EADDR;
      i += d;
      if (i < n && s[i] == ',') {
        i++;
        continue;
      }
      if (i < n && s[i] == ':') {
        i++;
        break;
      }
      return SMTP_PARSE_EADDR;
    }
  }
  size_t start = i;
  int utf8 = 0;
  /* Local part. */
  if (i < n && s[i] == '"') {
    i++;
    for (;;) {
      if (i >= n)
        return SMTP_PARSE_EADDR;
      unsigned char c = (unsigned char)s[i];
      size_t k;
      if (c == '"') {
        i++;
        break;
      }
      if (c == '\\') {
        /* quoted-pairSMTP: %d92 %d32-126 */
        if (i + 1 >= n || (unsigned char)s[i + 1] < 32 ||
            (unsigned char)s[i + 1] > 126)
          return SMTP_PARSE_EADDR;
        i += 2;
      } else if (c >= 32 && c <= 126) {
        i++;
      } else if ((k = utf8_at(s + i, n - i)) > 0) {
        utf8 = 1;
        i += k;
      } else {
        return SMTP_PARSE_EADDR;
      }
    }
  } else {
    size_t atom = 0;
    while (i < n) {
      unsigned char c = (unsigned char)s[i];
      size_t k;
      if (is_atext(c)) {
        i++, atom++;
      } else if ((k = utf8_at(s + i, n - i)) > 0) {
        utf8 = 1;
        i += k, atom += k;
      } else if (c == '.' && atom > 0) {
        i++, atom = 0;
      } else {
        break;
      }
    }
    if (atom == 0) /* empty, or a leading/trailing/double dot */
      return SMTP_PARSE_EADDR;
  }
  size_t at = i - start;
  if (i < n && s[i] == '@') {
    i++;
    size_t d = parse_domain(s + i, n - i, &utf8);
    if (d == 0 || d > SMTP_DOMAIN_MAX)
      return SMTP_PARSE_EADDR;
    i += d;
  } else if (flags & SMTP_PATH_NEED_DOMAIN) {
    if (i < n && s[i] == '>')
      return SMTP_PARSE_ENODOMAIN;
    return SMTP_PARSE_EADDR;
  }
  if (i >= n || s[i] != '>')
    return SMTP_PARSE_EADDR;
  size_t len = i - start;
  if (len > SMTP_ADDR_MAX)
    return SMTP_PARSE_EADDR;
  memcpy(p->addr, s + start, len);
  p->addr[len] = '\0';
  p->len = len;
  p->at = at;
  p->has_utf8 = utf8;
  *end = i + 1;
  return SMTP_PARSE_OK;
}

/* One "keyword[=value]" parameter: slices into the argument string. */
struct param {
  const char *key, *val;
  size_t key_len, val_len;
  int has_val;
};

/* Splits the next space-separated parameter from s[*i..n). Returns 1 when
 * one was found, 0 at the end, -1 on bad syntax. */
static int next_param(const char *s, size_t n, size_t *i, struct param *pm) {
  while (*i < n && s[*i] == ' ')
    (*i)++;
  if (*i >= n)
    return 0;
  size_t b = *i;
  while (*i < n && s[*i] != ' ')
    (*i)++;
  size_t e = *i;
  pm->key = s + b;
  pm->has_val = 0;
  pm->val = NULL;
  pm->val_len = 0;
  size_t k = b;
  while (k < e && s[k] != '=')
    k++;
  pm->key_len = k - b;
  if (k < e) {
    pm->has_val = 1;
    pm->val = s + k + 1;
    pm->val_len = e - k - 1;
  }
  /* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
  if (pm->key_len == 0)
    return -1;
  for (size_t j = 0; j < pm->key_len; j++) {
    unsigned char c = (unsigned char)pm->key[j];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || (c == '-' && j > 0)))
      return -1;
  }
  /* esmtp-value = 1*(%d33-60 / %d62-126), or UTF-8 under RFC 6531 */
  if (pm->has_val) {
    if (pm->val_len == 0)
      return -1;
    for (size_t j = 0; j < pm->val_len;) {
      unsigned char c = (unsigned char)pm->val[j];
      size_t u;
      if (c >= 33 && c <= 126 && c != '=')
        j++;
      else if ((u = utf8_at(pm->val + j, pm->val_len - j)) > 0)
        j += u;
      else
        return -1;
    }
  }
  return 1;
}

static int key_is(const struct param *pm, const char *word) {
  return strlen(word) == pm->key_len &&
         text_casecmp(pm->key, word, pm->key_len) == 0;
}

static int val_is(const struct param *pm, const char *word) {
  return pm->has_val && strlen(word) == pm->val_len &&
         text_casecmp(pm->val, word, pm->val_len) == 0;
}

/* Parses "FROM:" / "TO:" and the path, leaving *i after the path. */
static int parse_prefix_path(const char *args, size_t n, const char *prefix,
                             unsigned flags, struct smtp_path *p, size_t *i) {
  size_t pl = strlen(prefix);
  if (n < pl || text_casecmp(args, prefix, pl) != 0)
    return SMTP_PARSE_ESYNTAX;
  *i = pl;
  /* Postfix-compatible tolerance of "MAIL FROM: <a@b>". */
  while (*i < n && args[*i] == ' ')
    (*i)++;
  size_t end = 0;
  int r = smtp_parse_path(args + *i, n - *i, flags, p, &end);
  if (r != SMTP_PARSE_OK)
    return r;
  *i += end;
  if (*i < n && args[*i] != ' ')
    return SMTP_PARSE_EADDR;
  return SMTP_PARSE_OK;
}

int smtp_parse_mail(const char *args, size_t n, struct smtp_path *p,
                    struct smtp_mail_params *mp) {
  memset(mp, 0, sizeof(*mp));
  size_t i;
  int r = parse_prefix_path(args, n, "FROM:", SMTP_PATH_ALLOW_NULL, p, &i);
  if (r != SMTP_PARSE_OK)
    return r;
  int seen_auth = 0;
  struct param pm;
  int k;
  while ((k = next_param(args, n, &i, &pm)) > 0) {
    if (key_is(&pm, "SIZE")) {
      if (mp->has_size || !pm.has_val)
        return SMTP_PARSE_EVALUE;
      uint64_t v = 0;
      for (size_t j = 0; j < pm.val_len; j++) {
        unsigned char c = (unsigned char)pm.val[j];
        if (c < '0' || c > '9')
          return SMTP_PARSE_EVALUE;
        if (v > (UINT64_MAX - 9) / 10)
          v = UINT64_MAX; /* saturate: surely over any limit */
        else
          v = v * 10 + (c - '0');
      }
      mp->has_size = 1;
      mp->size = v;
    } else if (key_is(&pm, "BODY")) {
      if (mp->body != SMTP_BODY_NONE)
        return SMTP_PARSE_EVALUE;
      if (val_is(&pm, "8BITMIME"))
        mp->body = SMTP_BODY_8BITMIME;
      else if (val_is(&pm, "7BIT"))
        mp->body = SMTP_BODY_7BIT;
      else
        return SMTP_PARSE_EVALUE;
    } else if (key_is(&pm, "SMTPUTF8")) {
      if (mp->smtputf8 || pm.has_val)
        return SMTP_PARSE_EVALUE;
      mp->smtputf8 = 1;
    } else if (key_is(&pm, "RET")) {
      if (mp->ret != DSN_RET_UNSET)
        return SMTP_PARSE_EVALUE;
      if (val_is(&pm, "FULL"))
        mp->ret = DSN_RET_FULL;
      else if (val_is(&pm, "HDRS"))
        mp->ret = DSN_RET_HDRS;
      else
        return SMTP_PARSE_EVALUE;
    } else if (key_is(&pm, "ENVID")) {
      if (mp->has_envid || !pm.has_val ||
          smtp_xtext_decode(mp->envid, sizeof(mp->envid), pm.val, pm.val_len) <
              0)
        return SMTP_PARSE_EVALUE;
      mp->has_envid = 1;
    } else if (key_is(&pm, "XARRIVAL")) {
      if (mp->has_arrival || !pm.has_val || pm.val_len > 11)
        return SMTP_PARSE_EVALUE;
      int64_t v = 0;
      for (size_t j = 0; j < pm.val_len; j++) {
        unsigned char c = (unsigned char)pm.val[j];
        if (c < '0' || c > '9')
          return SMTP_PARSE_EVALUE;
        v = v * 10 + (c - '0');
      }
      if (v <= 0 || v > 100000000000LL)
        return SMTP_PARSE_EVALUE;
      mp->has_arrival = 1;
      mp->arrival = v;
    } else if (key_is(&pm, "AUTH")) {
      char tmp[SMTP_ADDR_MAX + 3];
      if (seen_auth || !pm.has_val ||
          smtp_xtext_decode(tmp, sizeof(tmp), pm.val, pm.val_len) < 0)
        return SMTP_PARSE_EVALUE;
      seen_auth = 1;
    } else {
      return SMTP_PARSE_EPARAM;
    }
  }
  return k < 0 ? SMTP_PARSE_ESYNTAX : SMTP_PARSE_OK;
}

static int parse_notify(const struct param *pm, unsigned *out) {
  unsigned bits = 0;
  if (!pm->has_val)
    return SMTP_PARSE_EVALUE;
  size_t b = 0;
  while (b <= pm->val_len) {
    size_t e = b;
    while (e < pm->val_len && pm->val[e] != ',')
      e++;
    struct param one = {.has_val = 1, .val = pm->val + b, .val_len = e - b};
    unsigned bit;
    if (val_is(&one, "NEVER"))
      bit = DSN_NOTIFY_NEVER;
    else if (val_is(&one, "SUCCESS"))
      bit = DSN_NOTIFY_SUCCESS;
    else if (val_is(&one, "FAILURE"))
      bit = DSN_NOTIFY_FAILURE;
    else if (val_is(&one, "DELAY"))
      bit = DSN_NOTIFY_DELAY;
    else
      return SMTP_PARSE_EVALUE;
    if (bits & bit)
      return SMTP_PARSE_EVALUE;
    bits |= bit;
    b = e + 1;
  }
  /* RFC 3461 §4.1: NEVER must appear alone. */
  if ((bits & DSN_NOTIFY_NEVER) && bits != DSN_NOTIFY_NEVER)
    return SMTP_PARSE_ENOTIFY;
  *out = bits;
  return SMTP_PARSE_OK;
}

int smtp_parse_rcpt(const char *args, size_t n, unsigned flags,
                    struct smtp_path *p, struct smtp_rcpt_params *rp) {
  memset(rp, 0, sizeof(*rp));
  size_t i;
  int r =
      parse_prefix_path(args, n, "TO:", flags & ~SMTP_PATH_ALLOW_NULL, p, &i);
  if (r != SMTP_PARSE_OK)
    return r;
  struct param pm;
  int k;
  while ((k = next_param(args, n, &i, &pm)) > 0) {
    if (key_is(&pm, "NOTIFY")) {
      if (rp->notify)
        return SMTP_PARSE_EVALUE;
      if ((r = parse_notify(&pm, &rp->notify)) != SMTP_PARSE_OK)
        return r;
    } else if (key_is(&pm, "ORCPT")) {
      /* orcpt-parameter = "ORCPT=" addr-type ";" xtext */
      if (rp->has_orcpt || !pm.has_val || pm.val_len > SMTP_ORCPT_MAX)
        return SMTP_PARSE_EVALUE;
      size_t semi = 0;
      while (semi < pm.val_len && pm.val[semi] != ';')
        semi++;
      if (semi == 0 || semi >= pm.val_len || semi >= sizeof(rp->orcpt_type))
        return SMTP_PARSE_EVALUE;
      for (size_t j = 0; j < semi; j++) {
        unsigned char c = (unsigned char)pm.val[j];
        if (!(is_ldh(c) && c != '_'))
          return SMTP_PARSE_EVALUE;
      }
      memcpy(rp->orcpt_type, pm.val, semi);
      rp->orcpt_type[semi] = '\0';
      if (smtp_xtext_decode(rp->orcpt_addr, sizeof(rp->orcpt_addr),
                            pm.val + semi + 1, pm.val_len - semi - 1) <= 0)
        return SMTP_PARSE_EVALUE;
      rp->has_orcpt = 1;
    } else {
      return SMTP_PARSE_EPARAM;
    }
  }
  return k < 0 ? SMTP_PARSE_ESYNTAX : SMTP_PARSE_OK;
}

int smtp_xtext_decode(char *out, size_t cap, const char *in, size_t n) {
  size_t o = 0;
  for (size_t i = 0; i < n;) {
    unsigned char c = (unsigned char)in[i];
    size_t u;
    if (c == '+') {
      if (i + 2 >= n)
        return -1;
      int h = text_hexval((unsigned char)in[i + 1]),
          l = text_hexval((unsigned char)in[i + 2]);
      if (h < 0 || l < 0)
        return -1;
      c = (unsigned char)(h * 16 + l);
      if (c < 32 || c == 127)
        return -1;
      i += 3;
      if (o + 2 > cap)
        return -1;
      out[o++] = (char)c;
      continue;
    }
    if (c >= 33 && c <= 126 && c != '=') {
      u = 1;
    } else if ((u = utf8_at(in + i, n - i)) == 0) {
      return -1;
    }
    if (o + u + 1 > cap)
      return -1;
    memcpy(out + o, in + i, u);
    o += u;
    i += u;
  }
  if (o + 1 > cap)
    return -1;
  out[o] = '\0';
  return (int)o;
}

int smtp_xtext_encode(char *out, size_t cap, const char *in, size_t n) {
  static const char hex[] = "0123456789ABCDEF";
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)in[i];
    if (c >= 33 && c <= 126 && c != '+' && c != '=') {
      if (o + 2 > cap)
        return -1;
      out[o++] = (char)c;
    } else {
      if (o + 4 > cap)
        return -1;
      out[o++] = '+';
      out[o++] = hex[c >> 4];
      out[o++] = hex[c & 15];
    }
  }
  if (o + 1 > cap)
    return -1;
  out[o] = '\0';
  return (int)o;
}

static int b64val(unsigned char c) {
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  if (c == '+')
    return 62;
  if (c == '/')
    return 63;
  return -1;
}

int smtp_base64_decode(unsigned char *out, size_t cap, const char *in,
                       size_t n) {
  /* Strip the padding, then require that only 0, 2 or 3 chars remain in
   * the last group and no more than two '=' were present. */
  size_t pad = 0;
  while (n > 0 && in[n - 1] == '=' && pad < 2)
    n--, pad++;
  if (pad && (n + pad) % 4 != 0)
    return -1;
  if (n % 4 == 1)
    return -1;
  size_t o = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; i++) {
    int v = b64val((unsigned char)in[i]);
    if (v < 0)
      return -1;
    acc = (acc << 6) | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      if (o >= cap)
        return -1;
      out[o++] = (unsigned char)(acc >> bits);
      acc &= (1u << bits) - 1;
    }
  }
  return (int)o;
}
