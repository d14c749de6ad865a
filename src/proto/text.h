/*
 * text: small pure helpers for peer text.
 */
#ifndef MAILHOP_PROTO_TEXT_H
#define MAILHOP_PROTO_TEXT_H

#include <stddef.h>

/* Length (1..4) of the valid UTF-8 sequence at s, or 0 when invalid. */
size_t text_utf8_len(const unsigned char *s, size_t n);

/*
 * Copies in[0..n) to out as valid UTF-8, each invalid byte replaced by
 * U+FFFD, and NUL-terminates.  Returns the length written; the output is
 * cut at a character boundary when cap is too small.
 */
size_t text_utf8_sanitize(char *out, size_t cap, const char *in, size_t n);

/* Octets of s[0..n) before the first CR or LF (n when there is none):
 * the line scanners copy such runs in blocks instead of octet by octet
 * (issue 21).  Two memchr calls. */
size_t text_plain_run(const char *s, size_t n);

/* 1 when an octet of s[0..n) is >= 0x80 (no early exit: vectorizes). */
int text_has_8bit(const char *s, size_t n);

/* A yes/no value of the configuration and the routes file: yes, true, on,
 * 1 or no, false, off, 0 (any case) into *out.  0, or -1 for anything
 * else (*out untouched). */
int text_parse_bool(const char *s, int *out);

/* The value (0..15) of a hexadecimal digit, either case, or -1. */
int text_hexval(int c);

/* ASCII case-insensitive compare of n bytes; 0 when equal. */
int text_casecmp(const char *a, const char *b, size_t n);

#endif
