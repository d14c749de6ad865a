/*
 * reply: resumable parser of SMTP server replies (RFC 5321 §4.2), single-
 * and multi-line, with RFC 3463 enhanced status codes (RFC 2034).
 *
 * Owns nothing but the caller-owned struct reply_parser; it never
 * allocates, logs or does I/O.  Every bound is named below and enforced
 * here: a peer cannot make the parser grow without limit.
 */
#ifndef MAILHOP_PROTO_REPLY_H
#define MAILHOP_PROTO_REPLY_H

#include <stddef.h>

/*
 * RFC 5321 §4.5.3.1.5 limits a reply line to 512 octets with CRLF; real
 * servers exceed it (long EHLO AUTH lists, verbose 5xx), so we accept
 * twice that and call anything longer a protocol error.
 */
#define REPLY_LINE_MAX 1024
/* Lines in one multi-line reply (EHLO answers have ~15). */
#define REPLY_LINES_MAX 100
/* Stored text of one reply; longer text is cut and `truncated` is set. */
#define REPLY_TEXT_MAX 4096

/* Public, read-only for the caller. */
struct reply {
  int code;     /* 200..599 */
  char esc[16]; /* enhanced status of the first line ("5.1.1"), or "" */
  int nlines;
  int truncated; /* text was cut at REPLY_TEXT_MAX */
  size_t text_len;
  /* Text of each line after "ddd-"/"ddd ", lines separated by '\n',
   * NUL-terminated.  Bytes are verbatim except NUL, stored as '?'. */
  char text[REPLY_TEXT_MAX];
};

enum reply_result {
  REPLY_DONE = 1,       /* a whole reply is in parser->r */
  REPLY_AGAIN = 0,      /* all input consumed, reply incomplete */
  REPLY_ESYNTAX = -1,   /* not "ddd", bad separator, bare CR */
  REPLY_EMISMATCH = -2, /* multi-line reply whose lines differ in code */
  REPLY_ETOOLONG = -3,  /* line over REPLY_LINE_MAX */
  REPLY_ETOOMANY = -4,  /* more than REPLY_LINES_MAX lines */
};

/* Caller-owned; fields private except r (read-only, valid after DONE). */
struct reply_parser {
  int state;
  int last;        /* current line is the final one */
  int err;         /* sticky error, 0 when none */
  int done;        /* r holds a finished reply */
  size_t line_len; /* octets of the current line so far */
  int line_code;
  struct reply r;
};

void reply_parser_init(struct reply_parser *p);

/*
 * Parses buf[0..len).  Sets *consumed (always <= len) to the octets used.
 * REPLY_DONE: p->r holds the reply; bytes after it (buf + *consumed) belong
 * to the next reply and were not looked at.  The next call starts a new
 * reply.  REPLY_AGAIN: feed more.  Negative: the peer is broken; the error
 * is sticky until reply_parser_init.  A bare LF ends a line like CRLF.
 */
__attribute__((warn_unused_result)) int reply_parse(struct reply_parser *p,
                                                    const char *buf, size_t len,
                                                    size_t *consumed);

/* Short name of a reply_result, for logs. */
const char *reply_result_name(int result);

/*
 * Formats r as one line for last_error and Diagnostic-Code:
 * "550 5.1.1 first line text second line text".  A continuation line's
 * repeated enhanced code is dropped; control bytes become '?'.  Always
 * NUL-terminates (cap > 0); returns the length written.
 */
size_t reply_join(const struct reply *r, char *out, size_t cap);

/*
 * The enhanced status of r: its own ("5.1.1") when the server gave one,
 * otherwise "<class>.0.0" from the reply code.  out has room for 16.
 */
void reply_status(const struct reply *r, char out[16]);

/* Sets r to a locally made reply (code, esc or NULL, text). */
void reply_set(struct reply *r, int code, const char *esc, const char *text);

#endif
