#include "log.h"

#include "proto/text.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static enum log_format log_fmt = LOG_FMT_LOGFMT;
static enum log_level log_min = LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_setup(enum log_format fmt, enum log_level min_level) {
  log_fmt = fmt;
  log_min = min_level;
}

int log_enabled(enum log_level level) {
  return level >= log_min;
}

const char *log_level_name(enum log_level level) {
  return level_names[level];
}

static void put(struct log_line *l, const char *s, size_t n) {
  /* Keep room for the " truncated=1" marker and the newline. */
  size_t room = LOG_LINE_MAX - 32;
  if (l->len >= room) {
    l->truncated = 1;
    return;
  }
  if (n > room - l->len) {
    n = room - l->len;
    l->truncated = 1;
  }
  memcpy(l->buf + l->len, s, n);
  l->len += n;
}

static void puts_(struct log_line *l, const char *s) {
  put(l, s, strlen(s));
}

/*
 * Escapes one value.  Control bytes and invalid UTF-8 become \xNN (logfmt)
 * or \u00NN (JSON), so a peer can never forge a line break, a key or an
 * invalid byte in our log.
 */
static size_t escape(char *out, size_t cap, const char *str, size_t n, int json,
                     int *needs_quotes) {
  const unsigned char *s = (const unsigned char *)str;
  size_t o = 0;
  int quote = json || n == 0;
#define EMIT(c)                                                                \
  do {                                                                         \
    if (o < cap)                                                               \
      out[o] = (char)(c);                                                      \
    o++;                                                                       \
  } while (0)
  for (size_t i = 0; i < n;) {
    unsigned char c = s[i];
    if (c == '"' || c == '\\') {
      EMIT('\\');
      EMIT(c);
      quote = 1;
      i++;
    } else if (c == '\n' || c == '\r' || c == '\t') {
      EMIT('\\');
      EMIT(c == '\n' ? 'n' : c == '\r' ? 'r' : 't');
      quote = 1;
      i++;
    } else if (c < 0x20 || c == 0x7f) {
      char tmp[8];
      snprintf(tmp, sizeof tmp, json ? "\\u%04x" : "\\x%02x", c);
      for (char *p = tmp; *p; p++)
        EMIT(*p);
      quote = 1;
      i++;
    } else if (c >= 0x80) {
      size_t k = text_utf8_len(s + i, n - i);
      if (k == 0) {
        /* JSON strings cannot hold raw bytes; use U+FFFD. */
        const char *rep = json ? "\\ufffd" : NULL;
        char tmp[8];
        if (!rep) {
          snprintf(tmp, sizeof tmp, "\\x%02x", c);
          rep = tmp;
        }
        for (const char *p = rep; *p; p++)
          EMIT(*p);
        quote = 1;
        i++;
      } else {
        for (size_t j = 0; j < k; j++)
          EMIT(s[i + j]);
        i += k;
      }
    } else {
      if (c == ' ' || c == '=')
        quote = 1;
      EMIT(c);
      i++;
    }
  }
#undef EMIT
  if (needs_quotes)
    *needs_quotes = quote;
  return o;
}

size_t log_escape_logfmt(char *out, size_t cap, const char *s, size_t n) {
  int q;
  size_t need = escape(NULL, 0, s, n, 0, &q);
  size_t o = 0;
  if (q && o < cap)
    out[o++] = '"';
  size_t got = escape(out + o, cap > o ? cap - o : 0, s, n, 0, NULL);
  o += got < need ? got : need;
  if (q && o < cap)
    out[o++] = '"';
  if (o < cap)
    out[o] = '\0';
  return o;
}

static void put_key(struct log_line *l, const char *key) {
  if (log_fmt == LOG_FMT_JSON) {
    puts_(l, ",\"");
    puts_(l, key);
    puts_(l, "\":");
  } else {
    puts_(l, " ");
    puts_(l, key);
    puts_(l, "=");
  }
}

void log_strn(struct log_line *l, const char *key, const char *value,
              size_t n) {
  if (!l->enabled)
    return;
  if (!value) {
    value = "";
    n = 0;
  }
  char tmp[LOG_LINE_MAX];
  int quote;
  int json = log_fmt == LOG_FMT_JSON;
  size_t len = escape(tmp, sizeof tmp, value, n, json, &quote);
  if (len > sizeof tmp) {
    len = sizeof tmp;
    l->truncated = 1;
  }
  put_key(l, key);
  if (quote)
    puts_(l, "\"");
  put(l, tmp, len);
  if (quote)
    puts_(l, "\"");
}

void log_str(struct log_line *l, const char *key, const char *value) {
  log_strn(l, key, value, value ? strlen(value) : 0);
}

void log_int(struct log_line *l, const char *key, long long value) {
  if (!l->enabled)
    return;
  char tmp[32];
  snprintf(tmp, sizeof tmp, "%lld", value);
  put_key(l, key);
  puts_(l, tmp);
}

void log_double(struct log_line *l, const char *key, double value) {
  if (!l->enabled)
    return;
  char tmp[48];
  snprintf(tmp, sizeof tmp, "%.3f", value);
  put_key(l, key);
  puts_(l, tmp);
}

void log_begin(struct log_line *l, enum log_level level, const char *event) {
  l->len = 0;
  l->truncated = 0;
  l->enabled = log_enabled(level);
  if (!l->enabled)
    return;
  struct timeval tv;
  gettimeofday(&tv, NULL);
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  char ts[40];
  snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
           tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
  if (log_fmt == LOG_FMT_JSON) {
    puts_(l, "{\"ts\":\"");
    puts_(l, ts);
    puts_(l, "\",\"level\":\"");
    puts_(l, level_names[level]);
    puts_(l, "\"");
  } else {
    puts_(l, "ts=");
    puts_(l, ts);
    puts_(l, " level=");
    puts_(l, level_names[level]);
  }
  log_str(l, "event", event);
}

void log_end(struct log_line *l) {
  if (!l->enabled)
    return;
  if (l->truncated) {
    /* put() kept room for this marker. */
    const char *m =
        log_fmt == LOG_FMT_JSON ? ",\"truncated\":1" : " truncated=1";
    memcpy(l->buf + l->len, m, strlen(m));
    l->len += strlen(m);
  }
  if (log_fmt == LOG_FMT_JSON)
    l->buf[l->len++] = '}';
  l->buf[l->len++] = '\n';
  /* One write per line keeps lines whole even with other writers. */
  size_t off = 0;
  while (off < l->len) {
    ssize_t w = write(STDERR_FILENO, l->buf + off, l->len - off);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return;
    }
    off += (size_t)w;
  }
}

void log_msg(enum log_level level, const char *event, const char *fmt, ...) {
  struct log_line l;
  log_begin(&l, level, event);
  if (!l.enabled)
    return;
  char tmp[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  log_str(&l, "msg", tmp);
  log_end(&l);
}
