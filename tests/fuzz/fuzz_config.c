/*
 * fuzz_config: the configuration file parser (config.h config_parse_text
 * after config_defaults) on arbitrary bytes.  Invariants:
 *  - it returns 0 or -1; on -1 the message is "NAME:LINE: text" with LINE
 *    between 1 and the number of lines, and that line is neither blank
 *    nor a comment;
 *  - a successful parse prints (config_print) within a generous buffer,
 *    and the printed text, parsed again over fresh defaults, parses and
 *    prints to the same text (round trip).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

#define CHECK(x)                                                               \
  do {                                                                         \
    if (!(x)) {                                                                \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__,     \
              #x);                                                             \
      abort();                                                                 \
    }                                                                          \
  } while (0)

#define NAME "fuzz.conf"
#define PRINT_MAX (1024 * 1024)

static int blank(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Checks "NAME:LINE: text" and that LINE is a key line of text. */
static void check_err(const char *err, const char *text, size_t len,
                      const char *name) {
  size_t lines = 1;
  for (size_t i = 0; i < len; i++)
    if (text[i] == '\n')
      lines++;
  CHECK(memchr(err, '\0', CONFIG_ERR_MAX) != NULL);
  size_t nl = strlen(name);
  CHECK(strncmp(err, name, nl) == 0 && err[nl] == ':');
  const char *p = err + nl + 1;
  CHECK(*p >= '1' && *p <= '9');
  char *end;
  unsigned long ln = strtoul(p, &end, 10);
  CHECK(end[0] == ':' && end[1] == ' ' && end[2] != '\0');
  CHECK(ln >= 1 && ln <= lines);
  size_t pos = 0;
  for (unsigned long l = 1; l < ln; l++)
    pos =
        (size_t)((const char *)memchr(text + pos, '\n', len - pos) - text) + 1;
  const char *e = memchr(text + pos, '\n', len - pos);
  size_t n = e ? (size_t)(e - (text + pos)) : len - pos;
  const char *s = text + pos;
  while (n > 0 && blank(*s))
    s++, n--;
  CHECK(n > 0 && *s != '#');
}

/* Undefined behaviour is a finding, not a warning. */
const char *__ubsan_default_options(void);
const char *__ubsan_default_options(void) {
  return "halt_on_error=1:print_stacktrace=1";
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static struct config a, b;
  static char pa[PRINT_MAX], pb[PRINT_MAX], err[CONFIG_ERR_MAX];
  const char *text = (const char *)data;

  config_defaults(&a);
  memset(err, 0, sizeof(err));
  int rc = config_parse_text(&a, NAME, text, size, err);
  CHECK(rc == 0 || rc == -1);
  if (rc < 0) {
    check_err(err, text, size, NAME);
    return 0;
  }

  size_t la = config_print(&a, pa, sizeof(pa));
  CHECK(la < sizeof(pa) && strlen(pa) == la);

  config_defaults(&b);
  rc = config_parse_text(&b, "printed", pa, la, err);
  if (rc != 0) {
    fprintf(stderr,
            "printed config does not parse: %s\n--- input\n%.*s\n"
            "--- printed\n%s\n",
            err, (int)size, text, pa);
    CHECK(rc == 0);
  }
  size_t lb = config_print(&b, pb, sizeof(pb));
  if (la != lb || memcmp(pa, pb, la) != 0) {
    fprintf(stderr, "--- printed once\n%s\n--- printed twice\n%s\n", pa, pb);
    CHECK(la == lb && memcmp(pa, pb, la) == 0);
  }
  return 0;
}
