/*
 * smtp_server: the inbound SMTP session as a pure (sans-I/O) state
 * machine.  It is fed the client's bytes, produces reply bytes and a
 * stream of events (HELO, MAIL, RCPT, data chunks, end of data, STARTTLS
 * wanted, AUTH credentials), and is told the results of the asynchronous
 * work it asks for (queue commit, password check, TLS handshake).
 *
 * Owns: the copies of its options and, while attached, its working
 * buffers (command line, data chunk, replies, AUTH exchange: struct
 * smtp_server_bufs, ~47 KB).  Never does I/O, reads a clock or logs;
 * allocates only in smtp_server_new and smtp_server_bufs_new.
 *
 * Memory per idle session: the working buffers are needed only while data
 * is in flight.  smtp_server_new attaches a block of its own; a caller
 * holding many idle sessions takes it back with smtp_server_detach when
 * the session is quiescent and attaches a block (its own pool) again
 * before the next smtp_server_* call that feeds or answers.  Without
 * buffers, feed consumes nothing and output is empty; the greeting waits
 * for the first attach.
 *
 * Driving it (the caller, src/inbound.c):
 *
 *   write smtp_server_output() (the 220 greeting is already there);
 *   on read:  off = 0;
 *             for (;;) {
 *               off += smtp_server_feed(s, buf + off, len - off);
 *               while (smtp_server_event(s, &ev)) handle(ev);
 *               if (off == len || smtp_server_blocked(s)) break;
 *             }
 *             write smtp_server_output(), then smtp_server_output_consumed;
 *             if smtp_server_close_wanted(s) close after the write;
 *             keep the unconsumed bytes buf[off..len) for the next round
 *             (they are at most one read buffer: stop reading meanwhile).
 *
 * smtp_server_feed consumes input until the input is exhausted or it has
 * produced an event (it stops right after the byte that completed it, so
 * at most two events are pending: a last DATA_CHUNK and DATA_END), or it
 * is waiting for an answer, or the reply buffer is above its high-water
 * mark, or the session is closed.  It returns the number of bytes
 * consumed (never more than len; 0 while an event is pending or while it
 * waits).
 *
 * Events and the answers they need:
 *   HELO         name (no answer).  Ends any transaction.
 *   MAIL         sender + parameters; starts a new envelope: forget any
 *                earlier one (no answer; already replied 250).
 *   RCPT         an accepted recipient + DSN parameters (no answer).
 *   DATA_START   354 was sent: open a spool (no answer).
 *   DATA_CHUNK   message octets, dot-unstuffed and with every line ending
 *                CRLF; ptr is valid until the next call to
 *                smtp_server_feed (copy or spool it).
 *   DATA_END     the message is complete; facts in ev.end.  The caller
 *                MUST answer smtp_server_commit_done exactly once.
 *   DATA_ABORT   the message was refused (size, mail loop) or the
 *                session ended during DATA: drop the spool (no answer).
 *   STARTTLS     "220 2.0.0 Ready to start TLS" is in the output.  The
 *                caller writes the output, DISCARDS every unconsumed
 *                input byte (RFC 3207 §4.2), runs the handshake, then
 *                calls smtp_server_tls_started (or closes on failure).
 *   REJECT       a policy refusal (relay denied, sender not allowed) was
 *                replied; for the log (no answer).
 *   AUTH         decoded credentials (pointers valid until the next call
 *                to any smtp_server_* function; copy and wipe).  The
 *                caller MUST answer smtp_server_auth_done exactly once.
 *
 * DATA handling (CONTRACT §3):
 *  - End of data is the octet sequence CRLF "." CRLF and nothing else;
 *    the CRLF ending the DATA command counts as the first CRLF.
 *  - Bare LF and bare CR inside the data are NORMALIZED to CRLF in the
 *    chunks (not rejected).  A line "." that starts or ends with a bare
 *    line ending is therefore ordinary content (emitted as an empty line
 *    after unstuffing, and dot-stuffed again on the way out), so no
 *    smuggled end of data or second message can exist.
 *  - Dot-unstuffing removes the first "." of every line, whatever ended
 *    the line before.
 *  - Lines of any length pass through unchanged (folding over 998 octets
 *    is the outbound side's job); memory stays bounded because chunks are
 *    emitted whenever SMTP_SERVER_CHUNK_MAX octets are ready.
 *  - Over max_message_size (counted on the normalized octets) no further
 *    chunk is emitted, the rest is read and discarded to CRLF.CRLF, then
 *    552 5.3.4 and DATA_ABORT.  Nothing in the discarded tail is executed.
 *  - More than SMTP_SERVER_MAX_RECEIVED Received: headers: 554 5.4.6 and
 *    DATA_ABORT at the end of data.
 *
 * Command lines: CRLF-terminated; a bare LF is tolerated as a command
 * terminator (Postfix does the same), but then the data that follows a
 * DATA command ended by a bare LF does not count that LF as the first CRLF
 * of an end-of-data sequence.  Limits are SMTP_CMD_LINE_MAX,
 * SMTP_MAILRCPT_LINE_MAX and SMTP_AUTH_LINE_MAX (smtp_parse.h); a longer
 * line is discarded to its LF and answered 500 5.5.2.
 *
 * Addresses: RCPT needs a domain.  mailhop has no local mailboxes, so
 * even <postmaster> without a domain is refused (501 5.1.3) — a
 * deliberate deviation from RFC 5321 §4.5.1 for a relay-only MTA.
 *
 * Errors: every 4xx/5xx reply to a client command (not a commit failure)
 * counts.  The reply that makes the count exceed max_errors is followed by
 * "421 4.7.0 <host> Error: too many errors" and the session closes.
 */
#ifndef MAILHOP_PROTO_SMTP_SERVER_H
#define MAILHOP_PROTO_SMTP_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "proto/smtp_parse.h"

#define SMTP_SERVER_CHUNK_MAX 16384     /* octets per DATA_CHUNK */
#define SMTP_SERVER_OUT_MAX 16384       /* reply buffer */
#define SMTP_SERVER_OUT_HIGH 8192       /* stop reading commands above this */
#define SMTP_SERVER_MAX_RECEIVED 50     /* mail loop above this (5.4.6) */
#define SMTP_SERVER_AUTH_FIELD_MAX 1024 /* decoded AUTH user / password */
#define SMTP_SERVER_HELO_MAX 255        /* stored HELO argument */
#define SMTP_SERVER_AUTH_USER_MAX 255   /* recorded authenticated name */

/* Options; copied (strings included) by smtp_server_new. */
struct smtp_server_opts {
  const char *hostname;
  uint64_t max_message_size; /* 0: no limit, "SIZE" without a number */
  int max_recipients;        /* 0: no limit */
  int max_errors;            /* 0: the default, 20 */
  int starttls_available;    /* certificate configured, not yet in TLS */
  int auth_available;        /* auth_users_file set */
  int auth_require_tls;
  int relay_allowed; /* client IP in relay_networks (caller decides) */
  const char *const *allowed_sender_domains; /* n == 0: any */
  int n_allowed_sender_domains;
  int tls_active; /* implicit TLS listener */
};

enum smtp_server_event_type {
  SMTP_SRV_EV_NONE = 0,
  SMTP_SRV_EV_HELO,
  SMTP_SRV_EV_MAIL,
  SMTP_SRV_EV_RCPT,
  SMTP_SRV_EV_DATA_START,
  SMTP_SRV_EV_DATA_CHUNK,
  SMTP_SRV_EV_DATA_END,
  SMTP_SRV_EV_DATA_ABORT,
  SMTP_SRV_EV_STARTTLS,
  SMTP_SRV_EV_AUTH,
  SMTP_SRV_EV_REJECT, /* a policy refusal, for the log (no answer) */
};

const char *smtp_server_event_name(enum smtp_server_event_type t);

enum smtp_server_auth_mech {
  SMTP_SRV_AUTH_PLAIN = 1,
  SMTP_SRV_AUTH_LOGIN,
};

/* An event.  Every pointer is owned by the session and valid until the
 * next call to smtp_server_feed (AUTH: to any smtp_server_* call). */
struct smtp_event {
  enum smtp_server_event_type type;
  struct {
    const char *name; /* NUL-terminated */
    int esmtp;        /* EHLO rather than HELO */
  } helo;
  struct {
    const char *sender; /* "" for <> */
    const struct smtp_mail_params *params;
  } mail;
  struct {
    const char *addr;
    const struct smtp_rcpt_params *params;
  } rcpt;
  struct {
    const char *ptr;
    size_t len;
  } chunk;
  struct {
    uint64_t size; /* octets after unstuffing and normalization */
    int received_count;
    int has_date;
    int has_message_id;
    int eight_bit;
    /* The data has no header section (its first line is neither a header
     * field nor empty): header fields added in front of it must be
     * followed by an empty line (message_added_headers_need_separator,
     * CONTRACT §3). */
    int needs_separator;
  } end;
  struct {
    int code;           /* the reply sent: 552, 554, or 0 when closing */
    const char *reason; /* static: "message too big", "too many hops" */
  } abort;
  struct {
    int code;           /* the reply sent: 553 or 554 */
    const char *addr;   /* the refused sender or recipient */
    const char *reason; /* "relay access denied", ... (static) */
  } reject;
  struct {
    enum smtp_server_auth_mech mech;
    const char *user; /* NUL-terminated; authcid */
    const char *pass; /* NUL-terminated */
  } auth;
};

enum smtp_server_state {
  SMTP_SRV_ST_CMD = 0,     /* reading commands */
  SMTP_SRV_ST_DATA,        /* reading message data */
  SMTP_SRV_ST_AUTH_LINE,   /* reading an AUTH continuation line */
  SMTP_SRV_ST_WAIT_COMMIT, /* DATA_END sent; awaiting commit_done */
  SMTP_SRV_ST_WAIT_AUTH,   /* AUTH sent; awaiting auth_done */
  SMTP_SRV_ST_WAIT_TLS,    /* STARTTLS sent; awaiting tls_started */
  SMTP_SRV_ST_CLOSED,      /* QUIT or 421: flush the output and close */
};

const char *smtp_server_state_name(enum smtp_server_state st);

struct smtp_server;

/* Creates a session and puts the 220 greeting in its output.  Returns
 * NULL when out of memory. */
__attribute__((warn_unused_result)) struct smtp_server *
smtp_server_new(const struct smtp_server_opts *o);

/* Frees the session and its attached buffers; NULL is fine.  Wipes any
 * credentials it held. */
void smtp_server_free(struct smtp_server *s);

struct smtp_server_bufs;
/* A working-buffer block (malloc'd, not zeroed), or NULL.  Freed with
 * smtp_server_bufs_free (which wipes AUTH data), or by smtp_server_free
 * while attached. */
struct smtp_server_bufs *smtp_server_bufs_new(void);
void smtp_server_bufs_free(struct smtp_server_bufs *b);
size_t smtp_server_bufs_size(void); /* bytes of one block */

/* Gives the session a block (ownership passes to it); ignored when it has
 * one.  Writes the greeting if it is still due. */
void smtp_server_attach(struct smtp_server *s, struct smtp_server_bufs *b);
/* Takes the block back (ownership to the caller) when the session does
 * not need it: no partial command line, no replies or events waiting,
 * reading commands (not DATA, an AUTH exchange or a wait).  NULL
 * otherwise (the session keeps it). */
struct smtp_server_bufs *smtp_server_detach(struct smtp_server *s);
int smtp_server_attached(const struct smtp_server *s);

/* Feeds client bytes.  Returns the number consumed (<= len); see the
 * file comment for when it stops. */
size_t smtp_server_feed(struct smtp_server *s, const char *buf, size_t len);

/* Takes the next pending event into *ev.  Returns 1 if there was one. */
int smtp_server_event(struct smtp_server *s, struct smtp_event *ev);

/* Reply bytes waiting to be written (whole CRLF-terminated lines), and
 * how many of them the caller has written. */
const char *smtp_server_output(struct smtp_server *s, size_t *len);
void smtp_server_output_consumed(struct smtp_server *s, size_t n);

/* 1 when the output should be written now rather than batched: a command
 * that ends a pipelined group (RFC 2920 §3.1: EHLO, HELO, DATA, QUIT, NOOP,
 * VRFY, EXPN, HELP, STARTTLS, AUTH, end of data) was answered, or the
 * session waits for an answer or is closing.  Writing whenever the input
 * is exhausted is also always correct. */
int smtp_server_want_flush(const struct smtp_server *s);

/* 1 when feeding more input cannot make progress until an event is taken,
 * an answer given, the output written, or never (closed). */
int smtp_server_blocked(const struct smtp_server *s);

/* 1 once the session is over: write the remaining output, then close. */
int smtp_server_close_wanted(const struct smtp_server *s);

enum smtp_server_state smtp_server_state(const struct smtp_server *s);

/*
 * Answer to DATA_END.  ok: queue_id_or_reply is the queue id and the
 * reply is "250 2.0.0 Ok: queued as ID".  !ok: it is the complete reply
 * line without CRLF ("451 4.3.0 Error: queue file write error"); NULL, or
 * text that does not start with 4xx/5xx, gives "451 4.3.0 Error: queue
 * write failed".  Ignored unless the session waits for a commit.
 */
void smtp_server_commit_done(struct smtp_server *s, int ok,
                             const char *queue_id_or_reply);

/*
 * The bytes the queue can still take above its free-space floor
 * (queue_minfree), as the caller last learned it; UINT64_MAX (the
 * default): unknown or unlimited.  With room 0, MAIL gets "452 4.3.1
 * Insufficient system storage", also when its SIZE= exceeds the room;
 * DATA gets the same 452 (and the transaction is reset) unless the room
 * holds twice the declared SIZE (else twice max_message_size): the spool
 * file and the database copy.  Refusing before the disk is full keeps
 * room to record delivery outcomes (issue 12 item 5).
 */
void smtp_server_set_room(struct smtp_server *s, uint64_t room);

/* Answer to AUTH.  ok > 0: 235 2.7.0, the session is authenticated as
 * user (may be NULL).  ok == 0: 535 5.7.8, counted as an error.  ok < 0:
 * the check could not be made (overloaded): 454 4.7.0, not counted.
 * Ignored unless the session waits for it. */
void smtp_server_auth_done(struct smtp_server *s, int ok, const char *user);

/* The TLS handshake after STARTTLS succeeded: forget HELO/EHLO, the
 * transaction and any authentication (RFC 3207 §4.2); STARTTLS is no
 * longer offered.  tls_desc (may be NULL) is not retained: the caller
 * keeps it for the Received header. */
void smtp_server_tls_started(struct smtp_server *s, const char *tls_desc);

enum smtp_server_close_reason {
  SMTP_SRV_CLOSE_TIMEOUT,  /* 421 4.4.2 ... Error: timeout exceeded */
  SMTP_SRV_CLOSE_SHUTDOWN, /* 421 4.3.2 ... Service shutting down */
};

/* The caller ends the session (idle timeout, shutdown): queues a 421 and
 * marks the session closed.  During DATA a DATA_ABORT event is queued;
 * while waiting for a commit, the caller must still drop its job. */
void smtp_server_close(struct smtp_server *s, enum smtp_server_close_reason r);

/* Read-only facts for the caller (Received header, logs). */
const char *smtp_server_helo_name(const struct smtp_server *s); /* or NULL */
int smtp_server_esmtp(const struct smtp_server *s);
int smtp_server_tls(const struct smtp_server *s);
const char *smtp_server_auth_user(const struct smtp_server *s); /* or NULL */
int smtp_server_errors(const struct smtp_server *s);

#endif
