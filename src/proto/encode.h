/*
 * encode: outbound message body encoding for DATA (RFC 5321 §4.5.2,
 * §4.5.3.1.6; RFC 5322 §2.1.1, §2.2.3).  A streaming encoder with bounded
 * state: the message may be fed in chunks of any size, the output is the
 * same as when fed at once.
 *
 * What it does to the stored (unstuffed) message:
 *  - line endings: CRLF stays; a bare CR or bare LF becomes CRLF, so no
 *    smuggled end-of-data can reach the next hop;
 *  - dot-stuffing: a line starting with '.' gets another '.';
 *  - long lines: no line is longer than ENCODE_LINE_MAX octets (998, not
 *    counting CRLF or the stuffing dot).  In the header section (up to the
 *    first empty line) a long line is folded before the last whitespace
 *    that fits, so unfolding restores it; a header line without any
 *    whitespace is split and the continuation starts with one inserted SP
 *    (the only legal fold).  In the body a long line is split by inserting
 *    CRLF after 998 octets (no MIME conversion: the content of that line
 *    changes by the inserted CRLF, which is what RFC 5321 §4.5.3.1.6 leaves
 *    us);
 *  - the end: encode_finish() ends the last line with CRLF if needed and
 *    appends the ".\r\n" terminator, so the output always ends in
 *    CRLF "." CRLF (counting the CRLF of the DATA command for an empty
 *    message).
 * It also notes whether the message has 8-bit octets.
 *
 * Pure: no allocation, no I/O, no logging.
 */
#ifndef MAILHOP_PROTO_ENCODE_H
#define MAILHOP_PROTO_ENCODE_H

#include <stddef.h>

#define ENCODE_LINE_MAX 998
/* Output room encode_finish() may need. */
#define ENCODE_FINISH_MAX (ENCODE_LINE_MAX + 16)

/* Caller-owned; fields private except has_8bit and folds (read-only). */
struct encoder {
  int in_header;  /* still in the header section */
  int pending_cr; /* last input octet was CR */
  size_t col;     /* body: octets on the current output line */
  size_t hlen;    /* header: octets of the held line */
  int has_8bit;   /* an octet >= 0x80 was fed */
  size_t folds;   /* line breaks inserted (header and body); 0 when the
                     message went out with its lines as they were */
  int fold_only;  /* encode_init_fold: no dot-stuffing, no terminator */
  char hbuf[ENCODE_LINE_MAX];
};

void encode_init(struct encoder *e);

/*
 * For intake, before anything is signed (DKIM, CONTRACT §3a): the same
 * normalization and line breaks as encode_init, but no dot-stuffing and
 * no ".\r\n" terminator: the message as it will go out.  Encoding that
 * output again for DATA changes nothing but the stuffing and the
 * terminator (encode_folds() is then 0), so a signature computed over it
 * survives delivery.  Same bounds as encode_feed/encode_finish.
 */
void encode_init_fold(struct encoder *e);

/* Output room that encode_feed() of n input octets may need. */
size_t encode_bound(size_t n);

/*
 * Encodes in[0..n) into out and returns the octets written.  All input is
 * consumed; up to one header line may be held back until its end is seen.
 * cap must be at least encode_bound(n) (asserted: a caller bug).
 */
size_t encode_feed(struct encoder *e, const char *in, size_t n, char *out,
                   size_t cap);

/*
 * Flushes what is held, ends the last line and appends ".\r\n".  cap must
 * be at least ENCODE_FINISH_MAX.  The encoder is then spent.
 */
size_t encode_finish(struct encoder *e, char *out, size_t cap);

/* Line breaks inserted so far (header folds and body "CRLF SP" breaks);
 * non-zero means the message was changed to fit RFC 5321 §4.5.3.1.6. */
size_t encode_folds(const struct encoder *e);

/* 1 when buf[0..n) has an octet >= 0x80 (needs 8BITMIME), else 0. */
int encode_has_8bit(const char *buf, size_t n);

#endif
