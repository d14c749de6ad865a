/* Unit tests of log escaping: peer text can never forge a line or a key. */
#include "log.h"

#include "check.h"

static const char *esc(const char *s, size_t n) {
  static char out[256];
  log_escape_logfmt(out, sizeof out, s, n);
  return out;
}

int main(void) {
  CHECK_STR(esc("plain", 5), "plain");
  CHECK_STR(esc("two words", 9), "\"two words\"");
  CHECK_STR(esc("", 0), "\"\"");
  CHECK_STR(esc("a=b", 3), "\"a=b\"");
  CHECK_STR(esc("x\r\nlevel=error", 14), "\"x\\r\\nlevel=error\"");
  CHECK_STR(esc("q\"uote\\", 7), "\"q\\\"uote\\\\\"");
  CHECK_STR(esc("nul\0x", 5), "\"nul\\x00x\"");
  CHECK_STR(esc("caf\xc3\xa9", 5), "caf\xc3\xa9");
  CHECK_STR(esc("bad\xff", 4), "\"bad\\xff\"");
  CHECK_STR(esc("\x1b[31m", 5), "\"\\x1b[31m\"");
  return check_result("test_log");
}
