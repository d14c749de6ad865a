/*
 * message: pure helpers for the RFC 5322 message itself — a streaming
 * header scanner (fed the normalized DATA bytes, it counts Received:
 * headers and notes Date:, Message-ID: and 8-bit octets), and builders
 * for the Received:, Date: and Message-ID: header fields we add.
 *
 * Owns nothing but the caller-embedded scanner state; never reads a clock
 * (the caller passes the time), never allocates, logs or does I/O.
 */
#ifndef MAILHOP_PROTO_MESSAGE_H
#define MAILHOP_PROTO_MESSAGE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define MESSAGE_NAME_MAX 32 /* longest header name we need to recognise */

/* Scanner state; embed it and call message_scan_init.  Fields marked
 * public are read-only results; the others are private. */
struct message_scan {
  /* public, read-only */
  uint64_t size;      /* octets fed so far */
  int received_count; /* Received: fields in the header section */
  int has_date;
  int has_message_id;
  int eight_bit;  /* some octet >= 0x80 anywhere */
  int in_headers; /* still inside the header section */
  /* Where the header section ends, once !in_headers: the offset of the
   * line that ended it (the empty line, or the first line that is
   * neither a header field nor a continuation).  0: the data has no
   * header section. */
  uint64_t header_end;
  int separator; /* the header section ended at an empty line */
  /* private */
  uint64_t line_start; /* offset of the current line */
  int bol;             /* at the beginning of a line */
  int name_state;      /* 0 collecting name, 1 name done, 2 not a header line */
  size_t name_len;     /* octets of the name collected */
  char name[MESSAGE_NAME_MAX];
};

void message_scan_init(struct message_scan *m);

/*
 * Feeds message octets with CRLF line ends (the server's normalized
 * output).  The header section ends at the first empty line, or at the
 * first line that is neither a header field nor a continuation (as
 * Postfix does).  Header names are compared case-insensitively.
 */
void message_scan_feed(struct message_scan *m, const char *buf, size_t len);

/*
 * Where the header section of a whole message (CRLF lines) ends: the
 * offset of the line that ends it, by the scanner's rule above (RFC 5322
 * §2.1, §3.5; the same code as message_scan_feed, so the two never
 * disagree).  len when the section has not ended within buf.  *separator
 * (may be NULL) is set to 1 when that line is the empty line.  Every
 * producer of header fields uses this (or the scanner's header_end):
 * fields added in front of the data land before it.
 */
size_t message_header_end(const char *buf, size_t len, int *separator);

/*
 * 1 when header fields added in front of the data (Received, Date,
 * Message-ID) must be followed by an empty line: the data is not empty
 * and its first line is neither a header field nor the empty line (a
 * message without headers, CONTRACT §3) — without it the first body line
 * would become part of the header section.  m must have seen the whole
 * data (or at least its first line).
 */
int message_added_headers_need_separator(const struct message_scan *m);

/* What the Received: header records.  All strings are borrowed. */
struct message_received {
  const char *helo;     /* client's HELO/EHLO argument; NULL: none */
  const char *rdns;     /* verified reverse DNS name; NULL: "unknown" */
  const char *ip;       /* client IP, text form */
  const char *hostname; /* our host name */
  const char *id;       /* queue id */
  const char *rcpt;     /* the one recipient; NULL when several */
  int esmtp;            /* EHLO was used */
  int tls;              /* session in TLS */
  int auth;             /* client authenticated */
  const char *tls_desc; /* e.g. "version=TLSv1.3 cipher=..."; NULL: none */
  time_t when;
  int tz_minutes; /* offset east of UTC, for the date */
  int redacted;   /* received_header = redacted: no "(rdns [ip])" */
};

/*
 * Writes a complete "Received: ..." header field, CRLF-terminated and
 * folded so no line exceeds 78 octets where a fold point exists, into
 * buf (cap octets, NUL-terminated).  Untrusted text (helo) is sanitized:
 * octets outside printable ASCII, parentheses and backslashes become '?'.
 * "with" is SMTP, ESMTP, ESMTPS, ESMTPA or ESMTPSA (RFC 3848).  Returns
 * the length written, or -1 when cap is too small.
 */
int message_received_header(char *buf, size_t cap,
                            const struct message_received *r);

/* Writes an RFC 5322 date-time, "Mon, 2 Jan 2006 15:04:05 +0100", for the
 * given time and offset.  Returns the length or -1 when cap is too small. */
int message_date(char *buf, size_t cap, time_t when, int tz_minutes);

/* Writes "Date: <date-time>\r\n".  Returns the length or -1. */
int message_date_header(char *buf, size_t cap, time_t when, int tz_minutes);

/* Writes "Message-ID: <id@host>\r\n".  Returns the length or -1. */
int message_id_header(char *buf, size_t cap, const char *id, const char *host);

#endif
