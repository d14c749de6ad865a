/*
 * reply: resumable SMTP reply parser.  A byte-at-a-time state machine
 * (nginx style), so a reply may arrive split anywhere and the parser
 * keeps no line buffer of its own: text goes straight into the reply.
 */
#include "proto/reply.h"

#include <stdio.h>
#include <string.h>

enum {
  S_CODE0,
  S_CODE1,
  S_CODE2,
  S_SEP,
  S_TEXT,
  S_LF,
};

void reply_parser_init(struct reply_parser *p) {
  memset(p, 0, sizeof(*p));
  p->state = S_CODE0;
}

static void reply_reset(struct reply_parser *p) {
  p->state = S_CODE0;
  p->last = 0;
  p->line_len = 0;
  p->line_code = 0;
  p->r.code = 0;
  p->r.esc[0] = '\0';
  p->r.nlines = 0;
  p->r.truncated = 0;
  p->r.text_len = 0;
  p->r.text[0] = '\0';
}

static void text_put(struct reply *r, char c) {
  if (r->text_len + 1 < sizeof(r->text)) {
    r->text[r->text_len++] = c;
    r->text[r->text_len] = '\0';
  } else {
    r->truncated = 1;
  }
}

/*
 * RFC 3463 status-code = class "." subject "." detail, class 2/4/5
 * matching the reply code's first digit, subject and detail 1-3 digits.
 * Returns the length of the code at s (followed by SP or end), or 0.
 */
static size_t esc_len(const char *s, size_t n, int code) {
  size_t i = 0;
  int cls = code / 100;
  if (cls != 2 && cls != 4 && cls != 5)
    return 0; /* RFC 3463 has no class 3 */
  if (n < 5 || s[0] != '0' + cls)
    return 0;
  i = 1;
  for (int part = 0; part < 2; part++) {
    if (i >= n || s[i] != '.')
      return 0;
    i++;
    size_t d = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9' && d < 4)
      i++, d++;
    if (d == 0 || d > 3)
      return 0;
  }
  if (i < n && s[i] != ' ')
    return 0;
  return i;
}

static void reply_finish(struct reply *r) {
  const char *nl = memchr(r->text, '\n', r->text_len);
  size_t first = nl ? (size_t)(nl - r->text) : r->text_len;
  size_t e = esc_len(r->text, first, r->code);
  if (e > 0 && e < sizeof(r->esc)) {
    memcpy(r->esc, r->text, e);
    r->esc[e] = '\0';
  }
}

/* Ends the current line; returns REPLY_DONE, REPLY_AGAIN or an error. */
static int line_end(struct reply_parser *p) {
  p->r.nlines++;
  p->line_len = 0;
  p->state = S_CODE0;
  if (p->last) {
    reply_finish(&p->r);
    return REPLY_DONE;
  }
  if (p->r.nlines >= REPLY_LINES_MAX)
    return REPLY_ETOOMANY;
  text_put(&p->r, '\n');
  return REPLY_AGAIN;
}

int reply_parse(struct reply_parser *p, const char *buf, size_t len,
                size_t *consumed) {
  size_t i = 0;
  int rc = REPLY_AGAIN;

  *consumed = 0;
  if (p->err)
    return p->err;
  /* A reply completed by the previous call is replaced by the next one. */
  if (p->done) {
    reply_reset(p);
    p->done = 0;
  }

  while (i < len && rc == REPLY_AGAIN) {
    unsigned char c = (unsigned char)buf[i++];
    if (++p->line_len > REPLY_LINE_MAX) {
      rc = REPLY_ETOOLONG;
      break;
    }
    switch (p->state) {
    case S_CODE0:
      if (c < '2' || c > '5') {
        rc = REPLY_ESYNTAX;
        break;
      }
      p->line_code = (c - '0') * 100;
      p->state = S_CODE1;
      break;
    case S_CODE1:
      if (c < '0' || c > '5') {
        rc = REPLY_ESYNTAX;
        break;
      }
      p->line_code += (c - '0') * 10;
      p->state = S_CODE2;
      break;
    case S_CODE2:
      if (c < '0' || c > '9') {
        rc = REPLY_ESYNTAX;
        break;
      }
      p->line_code += c - '0';
      if (p->r.nlines == 0)
        p->r.code = p->line_code;
      else if (p->line_code != p->r.code) {
        rc = REPLY_EMISMATCH;
        break;
      }
      p->state = S_SEP;
      break;
    case S_SEP:
      /* RFC 5321 §4.2: the last line may be the bare code. */
      if (c == ' ' || c == '-') {
        p->last = c == ' ';
        p->state = S_TEXT;
      } else if (c == '\r') {
        p->last = 1;
        p->state = S_LF;
      } else if (c == '\n') {
        p->last = 1;
        rc = line_end(p);
      } else {
        rc = REPLY_ESYNTAX;
      }
      break;
    case S_TEXT:
      if (c == '\r')
        p->state = S_LF;
      else if (c == '\n')
        rc = line_end(p);
      else
        text_put(&p->r, c == '\0' ? '?' : (char)c);
      break;
    case S_LF:
      if (c != '\n') {
        rc = REPLY_ESYNTAX;
        break;
      }
      rc = line_end(p);
      break;
    }
  }
  *consumed = i;
  if (rc == REPLY_DONE)
    p->done = 1;
  if (rc < 0)
    p->err = rc;
  return rc;
}

const char *reply_result_name(int result) {
  switch (result) {
  case REPLY_DONE:
    return "done";
  case REPLY_AGAIN:
    return "again";
  case REPLY_ESYNTAX:
    return "syntax";
  case REPLY_EMISMATCH:
    return "code_mismatch";
  case REPLY_ETOOLONG:
    return "line_too_long";
  case REPLY_ETOOMANY:
    return "too_many_lines";
  }
  return "unknown";
}

size_t reply_join(const struct reply *r, char *out, size_t cap) {
  size_t o = 0, i = 0, esc = strlen(r->esc);
  int first = 1;

  if (cap == 0)
    return 0;
  o = (size_t)snprintf(out, cap, "%03d", r->code);
  if (o >= cap)
    return cap - 1;
  while (i <= r->text_len) {
    const char *line = r->text + i;
    const char *nl = memchr(line, '\n', r->text_len - i);
    size_t n = nl ? (size_t)(nl - line) : r->text_len - i;
    size_t skip = 0;
    if (!first && esc > 0 && n >= esc && memcmp(line, r->esc, esc) == 0 &&
        (n == esc || line[esc] == ' '))
      skip = n == esc ? esc : esc + 1;
    if (n > skip && o + 1 < cap)
      out[o++] = ' ';
    for (size_t k = skip; k < n && o + 1 < cap; k++) {
      unsigned char c = (unsigned char)line[k];
      out[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    first = 0;
    i += n + 1;
  }
  out[o] = '\0';
  return o;
}

void reply_status(const struct reply *r, char out[16]) {
  if (r->esc[0] != '\0') {
    memcpy(out, r->esc, sizeof(r->esc));
    return;
  }
  int cls = r->code / 100;
  if (cls != 2 && cls != 4 && cls != 5)
    cls = 4;
  snprintf(out, 16, "%d.0.0", cls);
}

void reply_set(struct reply *r, int code, const char *esc, const char *text) {
  r->code = code;
  r->esc[0] = '\0';
  if (esc)
    snprintf(r->esc, sizeof(r->esc), "%s", esc);
  r->nlines = 1;
  r->truncated = 0;
  r->text_len = 0;
  r->text[0] = '\0';
  if (esc) {
    for (const char *s = esc; *s; s++)
      text_put(r, *s);
    text_put(r, ' ');
  }
  for (const char *s = text; *s; s++)
    text_put(r, *s == '\n' ? ' ' : *s);
}
