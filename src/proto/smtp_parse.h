/*
 * smtp_parse: pure parsers for what an SMTP client sends a server —
 * the command verb, MAIL/RCPT paths and their ESMTP parameters (SIZE,
 * BODY, SMTPUTF8, RET, ENVID, AUTH, NOTIFY, ORCPT), xtext (RFC 3461 §4)
 * and base64 (for AUTH).
 *
 * Owns nothing: every function takes an input buffer and a length and
 * fills a caller-owned result struct.  Never allocates, never logs, never
 * does I/O.  Limits from RFC 5321 §4.5.3 are named below and enforced here.
 */
#ifndef MAILHOP_PROTO_SMTP_PARSE_H
#define MAILHOP_PROTO_SMTP_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "proto/dsn.h" /* the RET and NOTIFY values, shared with bounces */

/*
 * Command line limits, counted in octets including the CRLF.
 * RFC 5321 §4.5.3.1.4: 512 for a plain command line.  MAIL and RCPT may be
 * longer by what the extensions in use add (§4.5.3.1.4 lets each extension
 * raise the limit): SIZE (RFC 1870: +26), BODY=8BITMIME (RFC 6152: +14),
 * SMTPUTF8 (RFC 6531: +10), RET+ENVID (RFC 3461: +100 for MAIL), NOTIFY and
 * ORCPT (RFC 3461: +500 for RCPT), AUTH= (RFC 4954: +500 for MAIL).  That
 * sums to about 1162; we round up generously to 2048 for both.  An AUTH
 * command with an initial response, and an AUTH continuation line, may be
 * 12288 octets (RFC 4954 §4).
 */
#define SMTP_CMD_LINE_MAX 512
#define SMTP_MAILRCPT_LINE_MAX 2048
#define SMTP_AUTH_LINE_MAX 12288

/*
 * Address limits.  RFC 5321 §4.5.3.1: local part 64, domain 255.  Many
 * real senders (SRS, VERP) exceed 64 octets of local part, so we only
 * bound the whole address (local@domain, brackets excluded) by the sum of
 * the two maxima, and the domain by 255.
 */
#define SMTP_DOMAIN_MAX 255
#define SMTP_ADDR_MAX (64 + 1 + SMTP_DOMAIN_MAX)
#define SMTP_ENVID_MAX 100 /* RFC 3461 §4.4, decoded value */
#define SMTP_ORCPT_MAX 500 /* RFC 3461 §4.2, whole xtext value */

enum smtp_parse_result {
  SMTP_PARSE_OK = 0,
  SMTP_PARSE_ESYNTAX = -1,   /* malformed command: 501 5.5.4 */
  SMTP_PARSE_EADDR = -2,     /* malformed address: 501 5.1.7 / 5.1.3 */
  SMTP_PARSE_ENODOMAIN = -3, /* address without a domain */
  SMTP_PARSE_ENULL = -4,     /* <> where it is not allowed */
  SMTP_PARSE_EPARAM = -5,    /* unknown ESMTP parameter: 555 5.5.4 */
  SMTP_PARSE_EVALUE = -6,    /* bad parameter value or repeated: 501 */
  SMTP_PARSE_ENOTIFY = -7,   /* NOTIFY=NEVER with others: 501 5.5.4 */
};

/* Name of a parse result, for logs and test messages. */
const char *smtp_parse_result_name(int r);

enum smtp_verb {
  SMTP_VERB_UNKNOWN = 0,
  SMTP_VERB_HELO,
  SMTP_VERB_EHLO,
  SMTP_VERB_MAIL,
  SMTP_VERB_RCPT,
  SMTP_VERB_DATA,
  SMTP_VERB_RSET,
  SMTP_VERB_NOOP,
  SMTP_VERB_QUIT,
  SMTP_VERB_VRFY,
  SMTP_VERB_EXPN,
  SMTP_VERB_HELP,
  SMTP_VERB_STARTTLS,
  SMTP_VERB_AUTH,
};

const char *smtp_verb_name(enum smtp_verb v);

/*
 * Splits a command line (without its CRLF) into verb and arguments: the
 * verb is the first word, case-insensitive; the arguments start after the
 * spaces that follow it and run to the end of the line, trailing spaces
 * removed.  *args points into line.  Returns the verb (UNKNOWN for any
 * word not in the list, including an empty line).
 */
enum smtp_verb smtp_parse_verb(const char *line, size_t len, const char **args,
                               size_t *args_len);

/* A parsed reverse-path or forward-path. */
struct smtp_path {
  char addr[SMTP_ADDR_MAX + 1]; /* local@domain, NUL-terminated; "" for <> */
  size_t len;
  size_t at;    /* offset of the '@' that starts the domain; len if none */
  int is_null;  /* the path was <> */
  int has_utf8; /* the address holds non-ASCII (valid UTF-8) octets */
};

#define SMTP_PATH_ALLOW_NULL 1u  /* <> is accepted (MAIL FROM) */
#define SMTP_PATH_NEED_DOMAIN 2u /* local part alone is refused */

/*
 * Parses "<path>" at s[0..n): an optional source route (@a,@b:) is
 * accepted and dropped (RFC 5321 §4.1.2, C.); the local part is a
 * dot-string or a quoted string; the domain a name or an address literal.
 * Control characters, and invalid UTF-8, are refused anywhere; valid
 * UTF-8 is accepted and flagged in has_utf8 (the caller decides whether
 * SMTPUTF8 allows it).  On success *end is the offset just past '>'.
 * Input that does not start with '<' is ESYNTAX (a command syntax error),
 * a malformed address inside the brackets EADDR.
 */
int smtp_parse_path(const char *s, size_t n, unsigned flags,
                    struct smtp_path *p, size_t *end);

enum smtp_body {
  SMTP_BODY_NONE = 0,
  SMTP_BODY_7BIT,
  SMTP_BODY_8BITMIME,
};

struct smtp_mail_params {
  int has_size;
  uint64_t size; /* UINT64_MAX when the value overflows */
  enum smtp_body body;
  int smtputf8;
  enum dsn_ret ret; /* RET= (DSN_RET_UNSET when absent) */
  int has_envid;
  char envid[SMTP_ENVID_MAX + 1]; /* xtext-decoded, NUL-terminated */
  /* XARRIVAL=<unix seconds>: mailhop's private extension (RFC 5321
   * §4.1.5: keywords starting with X are local) carrying a message's
   * original arrival time when one instance of a fleet hands it to
   * another (`drain --to`, CONTRACT §1).  1 .. 10^11; the server decides
   * whether it is allowed (smtp_server: relay clients only). */
  int has_arrival;
  int64_t arrival;
};

struct smtp_rcpt_params {
  unsigned notify; /* enum dsn_notify bits; 0 when absent */
  int has_orcpt;
  char orcpt_type[32];                 /* addr-type, e.g. "rfc822" */
  char orcpt_addr[SMTP_ORCPT_MAX + 1]; /* xtext-decoded */
};

/*
 * Parses the arguments of MAIL ("FROM:<path> params") and of RCPT
 * ("TO:<path> params"), as returned by smtp_parse_verb.  A space after
 * the colon is tolerated.  Keywords and their values are
 * case-insensitive.  A parameter given twice is EVALUE.  The AUTH=
 * parameter of MAIL (RFC 4954 §5) is syntax-checked and ignored.
 * RCPT refuses <> (ENULL) and, with SMTP_PATH_NEED_DOMAIN in flags, a
 * local part alone (ENODOMAIN).
 */
int smtp_parse_mail(const char *args, size_t n, struct smtp_path *p,
                    struct smtp_mail_params *mp);
int smtp_parse_rcpt(const char *args, size_t n, unsigned flags,
                    struct smtp_path *p, struct smtp_rcpt_params *rp);

/*
 * Decodes xtext (RFC 3461 §4): "+XX" hex escapes, other octets from '!'
 * to '~' except '+' and '=' literal.  Writes a NUL-terminated result to
 * out.  Returns the decoded length, or -1 for bad syntax, a decoded
 * control character, or when out (cap octets) is too small.
 */
int smtp_xtext_decode(char *out, size_t cap, const char *in, size_t n);

/*
 * Encodes in[0..n) as xtext into out (NUL-terminated).  Returns the
 * length, or -1 when cap is too small.
 */
int smtp_xtext_encode(char *out, size_t cap, const char *in, size_t n);

/*
 * Decodes base64 (RFC 4648, standard alphabet; padding required when the
 * length is not a multiple of 4 is tolerated when absent).  Returns the
 * decoded length, or -1 for bad input or when out (cap) is too small.  The
 * output is not NUL-terminated and may contain NULs.
 */
int smtp_base64_decode(unsigned char *out, size_t cap, const char *in,
                       size_t n);

#endif
