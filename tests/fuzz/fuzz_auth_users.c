/*
 * fuzz_auth_users: the users file parser (auth.h auth_parse_users) on
 * arbitrary bytes.  Invariants (leaks are caught by LeakSanitizer):
 *  - it returns 0 or -EINVAL (-ENOMEM cannot happen here);
 *  - on error *out is left alone and the message is "NAME:LINE: text"
 *    with LINE between 1 and the number of lines, and that line is not
 *    empty, blank or a comment (unless it holds a NUL byte);
 *  - on success the table holds exactly the non-blank, non-comment lines
 *    (so count <= lines), each user's stored hash is its line's hash
 *    without trailing blanks, unknown users have none, and there is a
 *    dummy hash.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/auth.h"

#define CHECK(x)                                                               \
  do {                                                                         \
    if (!(x)) {                                                                \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__,     \
              #x);                                                             \
      abort();                                                                 \
    }                                                                          \
  } while (0)

#define NAME "users.fuzz"

/* Line number lineno (1-based) of text as a slice, without its LF. */
static void get_line(const char *text, size_t len, unsigned long lineno,
                     const char **s, size_t *n) {
  size_t pos = 0;
  for (unsigned long l = 1; l < lineno; l++) {
    const char *nl = memchr(text + pos, '\n', len - pos);
    CHECK(nl != NULL);
    pos = (size_t)(nl - text) + 1;
  }
  const char *nl = memchr(text + pos, '\n', len - pos);
  *s = text + pos;
  *n = nl ? (size_t)(nl - (text + pos)) : len - pos;
}

/* Strips leading blanks and trailing blanks/CR as the parser documents. */
static void trim(const char **s, size_t *n) {
  while (*n > 0 &&
         ((*s)[*n - 1] == '\r' || (*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
    (*n)--;
  while (*n > 0 && (**s == ' ' || **s == '\t'))
    (*s)++, (*n)--;
}

/* Undefined behaviour is a finding, not a warning. */
const char *__ubsan_default_options(void);
const char *__ubsan_default_options(void) {
  return "halt_on_error=1:print_stacktrace=1";
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *text = (const char *)data;
  size_t lines = 1;
  for (size_t i = 0; i < size; i++)
    if (text[i] == '\n')
      lines++;

  struct auth_table *sentinel = (struct auth_table *)&lines;
  struct auth_table *t = sentinel;
  char err[512];
  memset(err, 0x55, sizeof(err));
  int rc = auth_parse_users(text, size, NAME, &t, err, sizeof(err));
  CHECK(rc == 0 || rc == -EINVAL);

  if (rc < 0) {
    CHECK(t == sentinel);
    CHECK(memchr(err, '\0', sizeof(err)) != NULL);
    CHECK(strncmp(err, NAME ":", strlen(NAME ":")) == 0);
    const char *p = err + strlen(NAME ":");
    char *end;
    CHECK(*p >= '1' && *p <= '9');
    unsigned long ln = strtoul(p, &end, 10);
    CHECK(end[0] == ':' && end[1] == ' ' && end[2] != '\0');
    CHECK(ln >= 1 && ln <= lines);
    const char *s;
    size_t n;
    get_line(text, size, ln, &s, &n);
    int has_nul = memchr(s, '\0', n) != NULL;
    trim(&s, &n);
    CHECK(has_nul || (n > 0 && s[0] != '#'));
    return 0;
  }

  CHECK(t != sentinel && t != NULL);
  size_t expect = 0;
  for (unsigned long ln = 1; ln <= lines; ln++) {
    const char *s;
    size_t n;
    get_line(text, size, ln, &s, &n);
    CHECK(memchr(s, '\0', n) == NULL);
    trim(&s, &n);
    if (n == 0 || s[0] == '#')
      continue;
    expect++;
    const char *colon = memchr(s, ':', n);
    CHECK(colon != NULL && colon > s);
    size_t ul = (size_t)(colon - s);
    CHECK(ul <= AUTH_USER_MAX);
    char user[AUTH_USER_MAX + 1];
    memcpy(user, s, ul);
    user[ul] = '\0';
    const char *h = auth_table_hash(t, user);
    CHECK(h != NULL);
    size_t hl = n - ul - 1;
    CHECK(strlen(h) == hl && memcmp(h, colon + 1, hl) == 0);
  }
  CHECK(auth_table_count(t) == expect);
  CHECK(auth_table_count(t) <= lines);
  CHECK(auth_table_dummy(t) != NULL);
  CHECK(auth_table_hash(t, "no such user\x01") == NULL);
  auth_table_free(t);
  return 0;
}
