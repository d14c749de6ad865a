/*
 * check.h: the tiny assertion kit of the C unit tests.  A failed check
 * prints file, line and both values, counts the failure and goes on; the
 * test's main returns check_result(), so meson sees a non-zero exit.
 */
#ifndef MAILHOP_CHECK_H
#define MAILHOP_CHECK_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_failures;
static int check_count;

#define CHECK(cond)                                                            \
  do {                                                                         \
    check_count++;                                                             \
    if (!(cond)) {                                                             \
      check_failures++;                                                        \
      fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
    }                                                                          \
  } while (0)

#define CHECK_INT(a, b)                                                        \
  do {                                                                         \
    long long va_ = (long long)(a), vb_ = (long long)(b);                      \
    check_count++;                                                             \
    if (va_ != vb_) {                                                          \
      check_failures++;                                                        \
      fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__,      \
              __LINE__, #a, #b, va_, vb_);                                     \
    }                                                                          \
  } while (0)

#define CHECK_STR(a, b)                                                        \
  do {                                                                         \
    const char *sa_ = (a), *sb_ = (b);                                         \
    check_count++;                                                             \
    if (!sa_ || !sb_ || strcmp(sa_, sb_) != 0) {                               \
      check_failures++;                                                        \
      fprintf(stderr,                                                          \
              "%s:%d: %s == %s failed:\n  got:  \"%s\"\n  want: \"%s\"\n",     \
              __FILE__, __LINE__, #a, #b, sa_ ? sa_ : "(null)",                \
              sb_ ? sb_ : "(null)");                                           \
    }                                                                          \
  } while (0)

/* Substring check, for error messages. */
#define CHECK_CONTAINS(hay, needle)                                            \
  do {                                                                         \
    const char *h_ = (hay), *n_ = (needle);                                    \
    check_count++;                                                             \
    if (!h_ || !strstr(h_, n_)) {                                              \
      check_failures++;                                                        \
      fprintf(stderr, "%s:%d: \"%s\" does not contain \"%s\"\n", __FILE__,     \
              __LINE__, h_ ? h_ : "(null)", n_);                               \
    }                                                                          \
  } while (0)

/* Makes a fresh directory "$TMPDIR/<prefix>.<random>" into buf (mkdtemp(3)
 * wants six trailing 'X's, filled in here).  Returns buf, or NULL. */
static inline char *check_tmpdir(char *buf, size_t cap, const char *prefix) {
  const char *tmp = getenv("TMPDIR");
  int n = snprintf(buf, cap, "%s/%s.", tmp && *tmp ? tmp : "/tmp", prefix);
  if (n < 0 || (size_t)n + 7 > cap)
    return NULL;
  memset(buf + n, 'X', 6);
  buf[n + 6] = '\0';
  return mkdtemp(buf);
}

/* The test's exit status: 1 on any failed check, and when no check ran at
 * all (a test that checked nothing has not passed). */
static inline int check_result(const char *name) {
  fprintf(stderr, "%s: %d checks, %d failed\n", name, check_count,
          check_failures);
  if (check_count == 0)
    fprintf(stderr, "%s: no check ran\n", name);
  return check_failures || check_count == 0 ? 1 : 0;
}

#endif
