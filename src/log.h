/*
 * log: one line per event on stderr, logfmt or JSON (CONTRACT §6).
 *
 * A line is built on the caller's stack and written with one write(2):
 *
 *     struct log_line l;
 *     log_begin(&l, LOG_INFO, "accepted");
 *     log_str(&l, "id", id);
 *     log_int(&l, "size", size);
 *     log_end(&l);
 *
 * Every value is escaped, so peer text can be passed as it came.  A line
 * longer than the buffer is cut and marked `truncated=1`, never split.
 */
#ifndef MAILHOP_LOG_H
#define MAILHOP_LOG_H

#include <stddef.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };
enum log_format { LOG_FMT_LOGFMT, LOG_FMT_JSON };

#define LOG_LINE_MAX 4096

struct log_line {
  /* private */
  char buf[LOG_LINE_MAX];
  size_t len;
  int enabled;
  int truncated;
};

void log_setup(enum log_format fmt, enum log_level min_level);
int log_enabled(enum log_level level);
const char *log_level_name(enum log_level level);

void log_begin(struct log_line *l, enum log_level level, const char *event);
void log_str(struct log_line *l, const char *key, const char *value);
void log_strn(struct log_line *l, const char *key, const char *value, size_t n);
void log_int(struct log_line *l, const char *key, long long value);
void log_double(struct log_line *l, const char *key, double value);
void log_end(struct log_line *l);

/* Shorthand: an event with a free-text `msg` (printf-style). */
void log_msg(enum log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Formats into out (for tests): appends the escaped logfmt value of s. */
size_t log_escape_logfmt(char *out, size_t cap, const char *s, size_t n);

#endif
