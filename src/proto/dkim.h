/*
 * dkim: the pure parts of DKIM signing (RFC 6376, RFC 8463) — relaxed
 * header and body canonicalization (RFC 6376 §3.4.2, §3.4.4), the choice
 * of header fields to sign (§5.4) with From oversigned, the From: domain
 * (RFC 5322 §3.4), and the DKIM-Signature header field itself (§3.5) with
 * its b= value folded.
 *
 * Signing must cover what will be sent: dkim_msg_feed() takes the message
 * as it is STORED (prefix + spooled body) and runs it through the very
 * encoder that delivery uses (proto/encode: line endings, folding of lines
 * over 998 octets) and undoes the encoder's dot-stuffing, so what it
 * canonicalizes is exactly what the next hop receives after DATA.
 *
 * Memory is bounded whatever the message size: the body is canonicalized
 * as a stream into the caller's sink (to be hashed); of the header section
 * only the fields that are signed are kept, canonicalized, in a fixed
 * buffer inside struct dkim_msg (DKIM_HDR_MAX octets).
 *
 * Pure: no allocation, no I/O, no clock, no logging, no crypto (the
 * caller hashes and signs).  Owns nothing but the caller-embedded state.
 */
#ifndef MAILHOP_PROTO_DKIM_H
#define MAILHOP_PROTO_DKIM_H

#include <stddef.h>
#include <stdint.h>

#include "proto/encode.h"

/* Octets of signed header fields (canonicalized) kept per message. */
#define DKIM_HDR_MAX (64 * 1024)
/* Signed header fields kept per message (occurrences, all names). */
#define DKIM_HDR_FIELDS 64
/* Longest domain (RFC 1035) and selector we handle. */
#define DKIM_DOMAIN_MAX 253
/* Input octets encoded per step (bounds the encoder's output buffer). */
#define DKIM_STEP 2048
/* Octets of canonical body gathered before the sink is called. */
#define DKIM_SINK_BUF 8192

/* Where canonicalized body octets go (the caller hashes them). */
typedef void (*dkim_sink_fn)(void *ctx, const char *p, size_t n);

/* Streaming relaxed body canonicalization (RFC 6376 §3.4.4).  Fed lines
 * ending in CRLF (a lone LF also ends a line; a CR not before an LF is an
 * ordinary octet).  Private fields. */
struct dkim_body {
  dkim_sink_fn sink;
  void *ctx;
  int cr;             /* last octet was CR */
  int wsp;            /* WSP seen on this line, not yet written */
  int has;            /* this line has written content */
  uint64_t empty;     /* empty lines held back (dropped at the end) */
  uint64_t out_total; /* canonical octets produced (read-only) */
  size_t blen;
  char buf[DKIM_SINK_BUF];
};

void dkim_body_init(struct dkim_body *b, dkim_sink_fn sink, void *ctx);
void dkim_body_feed(struct dkim_body *b, const char *p, size_t n);
/* Ends the body: a last line without CRLF gets one, trailing empty lines
 * are dropped, an empty body stays empty.  Flushes to the sink. */
void dkim_body_finish(struct dkim_body *b);

/*
 * Relaxed canonicalization of one header field (RFC 6376 §3.4.2): name
 * lower-cased, WSP around the colon removed, folding removed, WSP runs made
 * one SP, trailing WSP removed, then CRLF.  in is the field as it appears
 * (name, colon, value, folds; a final CRLF may be there or not).  Writes
 * at most cap octets to out; returns the length, or -1 when out is too
 * small or in has no colon.  with_crlf = 0 leaves the CRLF off (the
 * DKIM-Signature field itself is hashed without it, §3.7).
 */
long dkim_hcanon(const char *in, size_t n, char *out, size_t cap,
                 int with_crlf);

/*
 * The domain of the single address in a From: field value (RFC 5322
 * §3.4: display names, quoted strings, comments, angle addresses).
 * Writes it lower-cased into out (NUL-terminated).  Returns 0, or -1 when
 * the value holds no address, more than one, a group, or a domain that
 * does not fit or is not a dot-atom.
 */
int dkim_from_domain(const char *value, size_t n, char *out, size_t cap);

/* One kept header field: its canonical form inside dkim_msg.hdr. */
struct dkim_field {
  int name_idx; /* index into the signed-name table */
  uint32_t off; /* canonical "name:value\r\n" at hdr + off */
  uint32_t len;
};

enum dkim_msg_err {
  DKIM_MSG_OK = 0,
  DKIM_MSG_HDR_FULL,   /* signed header fields exceed DKIM_HDR_MAX/FIELDS */
  DKIM_MSG_BAD_HEADER, /* a header line that is neither "name:" with an
                          RFC 5322 field name nor a continuation: verifiers
                          refuse such a message, so it is not signed */
};

/* Message state: the stored message goes in, canonical body octets go to
 * the sink, signed header fields are kept.  Embed it (it is about 90 KiB:
 * allocate it, not on a small stack).  Private fields except where
 * marked. */
struct dkim_msg {
  /* read-only results, valid after dkim_msg_finish */
  int err;        /* enum dkim_msg_err */
  int from_count; /* From: fields in the header section */
  size_t nfields; /* kept fields, in message order */
  struct dkim_field fields[DKIM_HDR_FIELDS];
  char hdr[DKIM_HDR_MAX];
  size_t hlen;
  /* private */
  struct encoder enc;
  int bol;        /* unstuffing: at the beginning of an encoded line */
  int in_header;  /* still in the header section */
  int hstate;     /* header parser state */
  int line_start; /* at the beginning of a header line */
  int keep;       /* current field is kept */
  int cr;         /* last header octet was CR */
  size_t name_len;
  char name[64];
  size_t field_off; /* start of the current kept field in hdr */
  struct dkim_body body;
  char encbuf[2 * DKIM_STEP + ENCODE_FINISH_MAX];
};

void dkim_msg_init(struct dkim_msg *m, dkim_sink_fn sink, void *ctx);
/* Feeds stored message octets (any chunking gives the same result). */
void dkim_msg_feed(struct dkim_msg *m, const char *p, size_t n);
/* 1 once the header section has ended (the empty line was fed): then
 * dkim_msg_from_domain() already has its answer, so a caller may stop
 * reading a message that will not be signed. */
int dkim_msg_headers_done(const struct dkim_msg *m);

/* Ends the message (flushes the encoder and the body canonicalizer). */
void dkim_msg_finish(struct dkim_msg *m);

/*
 * The From: domain of a finished message (one From: field holding one
 * address), lower-cased into out.  Returns 0, or -1 (then the message is
 * not signed, CONTRACT §3a).
 */
int dkim_msg_from_domain(const struct dkim_msg *m, char *out, size_t cap);

/* The names mailhop signs (lower case), in h= order; From is one more
 * than it occurs (RFC 6376 §8.15, oversigning). */
extern const char *const dkim_signed_names[];
extern const size_t dkim_n_signed_names;

/*
 * Writes the h= value ("from:from:to:subject...") for a finished message:
 * every kept field's name once per occurrence, in the table's order, and
 * "from" once more.  Returns the length or -1 when cap is too small.
 */
long dkim_msg_h_list(const struct dkim_msg *m, char *out, size_t cap);

/*
 * Feeds the header hash input of §3.7 for that h= list to sink: for each
 * name, the canonical form of the next unused occurrence counted from the
 * bottom (§5.4.2); a name with no occurrence left contributes nothing
 * (the oversigned From).  The DKIM-Signature field itself is NOT included.
 */
void dkim_msg_hash_headers(const struct dkim_msg *m, dkim_sink_fn sink,
                           void *ctx);

/* Tag values of one signature (all strings borrowed, NUL-terminated). */
struct dkim_sig {
  const char *algo;     /* "rsa-sha256" or "ed25519-sha256" */
  const char *domain;   /* d= */
  const char *selector; /* s= */
  long long timestamp;  /* t=, unix seconds */
  const char *h_list;   /* h= */
  const char *bh;       /* base64 body hash */
};

/*
 * Writes "DKIM-Signature: v=1; a=...; ...; bh=...;\r\n\tb=" — every line
 * folded below 78 octets where possible — into out.  The signer hashes
 * dkim_hcanon(out, ..., with_crlf = 0) after the signed fields, then calls
 * dkim_sig_finish().  Returns the length, or -1 when cap is too small or
 * a value holds a character that cannot appear in its tag (';', WSP,
 * control octets).
 */
long dkim_sig_begin(const struct dkim_sig *s, char *out, size_t cap);

/*
 * Appends the base64 signature b64 to the len octets begun by
 * dkim_sig_begin(), folded in lines of at most 76 octets, and the final
 * CRLF.  Returns the new length or -1 when cap is too small.
 */
long dkim_sig_finish(char *out, size_t len, size_t cap, const char *b64);

/* Base64 (RFC 4648 §4, with padding) of in into out (NUL-terminated).
 * Returns the length or -1 when cap < 4 * ceil(n / 3) + 1. */
long dkim_base64(const unsigned char *in, size_t n, char *out, size_t cap);

#endif
