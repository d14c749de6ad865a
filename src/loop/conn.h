/*
 * conn: one TCP connection on the libuv loop, inbound or outbound, with an
 * optional TLS engine.  It moves bytes and knows nothing about SMTP.
 *
 * A conn owns its uv_tcp_t, a deadline timer, a deferred-delivery idle
 * handle, a bounded input buffer (plaintext read but not yet consumed by
 * the owner), a bounded write queue and, once TLS starts, an SSL between
 * two memory BIOs: ciphertext from the socket goes into the read BIO,
 * plaintext comes out through SSL_read to on_read; conn_write goes through
 * SSL_write and the write BIO is drained to the socket.
 *
 * Life: conn_connect() or a listener accept -> conn_set_owner() -> ... ->
 * conn_close() (the one end) -> on_close, after which the conn is freed.
 * on_close runs exactly once for every conn that has callbacks (from
 * conn_connect, or after conn_set_owner), always from a libuv close
 * callback (never inside conn_close itself), and is the last callback; an
 * accepted conn closed before conn_set_owner just goes away.  After
 * conn_close() no other callback runs.  Every function here is safe to
 * call from inside any of the conn's callbacks; memory is released only
 * when all handles have closed.
 *
 * Input flow: on_read returns how much it consumed; the rest is kept
 * (bounded by CONN_IN_MAX) and offered again later, so an owner can stop
 * mid-buffer while it waits on an async answer (conn_read_pause), then
 * conn_read_resume.  Backpressure: conn_write returns CONN_WRITE_FULL at
 * the high-water mark and the conn stops reading until the queue drains.
 */
#ifndef MAILHOP_LOOP_CONN_H
#define MAILHOP_LOOP_CONN_H

#include <stddef.h>
#include <sys/socket.h>

#include <openssl/ssl.h>
#include <uv.h>

#define CONN_MUSTCHECK __attribute__((warn_unused_result))

/* Bound of the input buffer: plaintext read but not yet consumed. */
#define CONN_IN_MAX (16 * 1024)
/* Socket read size for ciphertext. */
#define CONN_READ_CHUNK (16 * 1024)
/* Write queue: at or above HIGH conn_write returns CONN_WRITE_FULL and the
 * conn stops reading until the queue drains to LOW; beyond MAX conn_write
 * refuses (UV_ENOBUFS). */
#define CONN_WQ_HIGH (256 * 1024)
#define CONN_WQ_LOW (64 * 1024)
#define CONN_WQ_MAX (1024 * 1024)

struct conn;

/* Why a conn ended; passed to on_close. */
enum conn_end {
  CONN_END_LOCAL,    /* the owner called conn_close(c, CONN_END_LOCAL) */
  CONN_END_TIMEOUT,  /* deadline passed with no on_timeout, or linger */
  CONN_END_EOF,      /* the peer closed (FIN or TLS close_notify) */
  CONN_END_IO,       /* socket error; status holds the UV_E* code */
  CONN_END_TLS,      /* TLS handshake or record failure */
  CONN_END_CONNECT,  /* outbound connect failed or timed out */
  CONN_END_OVERFLOW, /* input buffer full and the owner consumed nothing */
  CONN_END_SHUTDOWN, /* the process is stopping */
};
const char *conn_end_name(enum conn_end end);

/* TLS outcome, valid during on_tls_done and afterwards via conn_tls(). */
struct conn_tls_info {
  int ok;              /* handshake completed */
  const char *error;   /* one line when !ok, else NULL */
  const char *version; /* "TLSv1.3" ... or NULL */
  const char *cipher;  /* OpenSSL cipher name or NULL */
  int verified;        /* client side: the chain verified (X509_V_OK) and the
                          name given to conn_start_tls matched */
  long verify_result;  /* X509_V_* code (client side) */
};

#define CONN_WRITE_FULL 1

struct conn_cbs {
  /* Outbound only: the TCP connection is up.  Failure (including the
   * connect timeout) is reported as on_close(CONN_END_CONNECT, status). */
  void (*on_connected)(struct conn *c);
  /*
   * Plaintext from the peer.  Returns how many bytes of data the owner
   * consumed (0..len).  The rest stays in the conn's buffer and is offered
   * again, with any newer bytes appended, at the next delivery: after more
   * input arrives, or after conn_read_resume().  An owner that waits on an
   * async answer calls conn_read_pause() and returns what it has used so
   * far.  If the buffer is full (CONN_IN_MAX) and nothing is consumed
   * while not paused, the conn ends with CONN_END_OVERFLOW.  Bytes not
   * consumed when TLS starts (conn_start_tls) are dropped (RFC 3207).
   */
  size_t (*on_read)(struct conn *c, const char *data, size_t len);
  /* TLS handshake finished, successfully or not.  After a failure the conn
   * is already closing; on_close(CONN_END_TLS) follows. */
  void (*on_tls_done)(struct conn *c, const struct conn_tls_info *info);
  /* The write queue became empty. */
  void (*on_drain)(struct conn *c);
  /* The deadline set by conn_set_timeout passed.  If NULL, the conn closes
   * with CONN_END_TIMEOUT.  The timer is not re-armed automatically. */
  void (*on_timeout)(struct conn *c);
  /* The last callback; c is freed when it returns.  status is a UV_E*
   * code for CONN_END_IO/CONNECT/TLS-on-socket-error, else 0. */
  void (*on_close)(struct conn *c, enum conn_end end, int status);
};

/*
 * Starts an outbound connection to addr (AF_INET or AF_INET6), failing
 * with UV_ETIMEDOUT after timeout_ms (0: no limit).  cbs must outlive the
 * conn.  Returns 0 and the conn in *out, then exactly one of on_connected
 * or on_close(CONN_END_CONNECT) follows (on_close always ends it); or a
 * negative UV_E* code, and then no callback ever runs.
 */
int conn_connect(uv_loop_t *loop, const struct sockaddr *addr,
                 unsigned timeout_ms, const struct conn_cbs *cbs, void *data,
                 struct conn **out) CONN_MUSTCHECK;

/*
 * Wraps an accepted socket fd (the listener calls this).  The conn does
 * nothing until conn_set_owner().  On error fd is closed and a UV_E* code
 * returned.
 */
int conn_adopt(uv_loop_t *loop, int fd, struct conn **out) CONN_MUSTCHECK;

/* Sets the callbacks (cbs must outlive the conn) and starts reading. */
void conn_set_owner(struct conn *c, const struct conn_cbs *cbs, void *data);

void *conn_data(const struct conn *c);
void conn_set_data(struct conn *c, void *data);

/*
 * Queues a copy of buf for the peer (through TLS when started).  Returns
 * 0, or CONN_WRITE_FULL when the queue is at or above CONN_WQ_HIGH (the
 * owner should stop producing until on_drain), or a negative code:
 * UV_EPIPE when closing, UV_EBUSY during a TLS handshake, UV_ENOBUFS when
 * the queue would pass CONN_WQ_MAX (nothing queued), UV_EPROTO on a TLS
 * failure (the conn then closes).
 */
int conn_write(struct conn *c, const void *buf, size_t len) CONN_MUSTCHECK;

/* Bytes queued for the socket and not yet written. */
size_t conn_write_queued(const struct conn *c);

/* Stops delivering input (and reading the socket).  Idempotent. */
void conn_read_pause(struct conn *c);
/* Resumes; retained bytes are re-delivered from the next loop turn, never
 * from inside this call. */
void conn_read_resume(struct conn *c);

/* Drops every byte read but not yet consumed by the owner (RFC 3207: the
 * plaintext after STARTTLS).  Inside on_read, it also drops the rest of
 * the buffer being delivered, whatever the callback returns. */
void conn_discard_input(struct conn *c);
/* Bytes read and not yet consumed (outside on_read: what the next delivery
 * starts with).  A client that just read the 220 to STARTTLS uses this (or
 * len - consumed inside on_read) to detect response injection. */
size_t conn_input_pending(const struct conn *c);

/* (Re)arms the one deadline: on_timeout after ms; 0 disarms.  During a
 * TLS handshake the same deadline bounds the handshake (expiry = failed
 * handshake).  While an outbound connect is pending it replaces the
 * connect timeout. */
void conn_set_timeout(struct conn *c, unsigned ms);

/*
 * Starts TLS on the connection: server (server != 0; name ignored) or
 * client (name is the SNI and the name to verify; NULL for none, an IP
 * literal is verified as an address and not sent as SNI).  Usable at any
 * time, including at once for implicit TLS, and from inside on_read (the
 * STARTTLS case).  Plaintext not yet consumed is dropped.  The handshake
 * starts from a libuv callback, never inside this call, and is bounded by
 * the conn_set_timeout deadline (set one first).  conn_write returns
 * UV_EBUSY and on_drain stays silent until on_tls_done.  Returns 0, then
 * on_tls_done runs exactly once unless the owner closes the conn first (a
 * peer that hangs up or a deadline passing mid-handshake is reported as a
 * failed handshake); or UV_EPIPE (closing), UV_EALREADY, UV_ENOMEM,
 * UV_EPROTO (bad name) and no callback for it.
 */
int conn_start_tls(struct conn *c, SSL_CTX *ctx, int server,
                   const char *name) CONN_MUSTCHECK;
int conn_tls_active(const struct conn *c);
/* The handshake outcome, or NULL before TLS finished. */
const struct conn_tls_info *conn_tls(const struct conn *c);
/* The connection's SSL (borrowed; owned by the conn) once conn_start_tls
 * succeeded, else NULL.  For settings that must be made before the
 * handshake, which starts on the next loop turn (DANE: SSL_dane_enable,
 * SSL_dane_tlsa_add), and for SSL_get0_dane_authority after it. */
SSL *conn_ssl(const struct conn *c);

/*
 * The one end.  Stops reading, cancels the timer, sends a TLS
 * close_notify if it can without waiting, closes the handles and frees
 * everything from their close callbacks, then calls on_close(end, 0).
 * Queued writes that have not reached the socket are dropped; see
 * conn_close_flush.  Idempotent (the first end wins).
 */
void conn_close(struct conn *c, enum conn_end end);
/* Like conn_close once the write queue is empty, waiting at most
 * linger_ms (then CONN_END_TIMEOUT); reading stops at once.  For "write
 * the 421, then close". */
void conn_close_flush(struct conn *c, enum conn_end end, unsigned linger_ms);
int conn_closing(const struct conn *c);

/* Addresses; v4-mapped IPv6 addresses are reported as AF_INET. */
const struct sockaddr *conn_peer(const struct conn *c);
const struct sockaddr *conn_local(const struct conn *c);
/* The peer address as text without port ("192.0.2.1", "2001:db8::1"). */
const char *conn_peer_str(const struct conn *c);

/*
 * Replaces the address conn_peer() and conn_peer_str() report, e.g. with
 * the client address a PROXY protocol header carries (relay/proxy_accept);
 * the socket is untouched.  sa is AF_INET or AF_INET6 (a v4-mapped
 * address is unmapped) and copied.  Returns 0, or UV_EINVAL for another
 * family (nothing changed).
 */
int conn_set_peer(struct conn *c, const struct sockaddr *sa);

/*
 * The socket descriptor, or -1 when closed.  Only for reading a preamble
 * straight off the socket before conn_set_owner() (relay/proxy_accept):
 * the conn does not read until then, so bytes left in the socket are the
 * owner's first input.  The descriptor stays the conn's: never close it.
 */
int conn_fileno(const struct conn *c);

/* Rewrites a v4-mapped AF_INET6 address (::ffff:a.b.c.d) in place as
 * AF_INET, keeping the port.  Returns 1 if it did, else 0. */
int conn_addr_unmap(struct sockaddr_storage *ss);
/* "192.0.2.1:25", "[2001:db8::1]:25" (with_port) or the bare address.
 * Returns buf ("?" for an unknown family). */
const char *conn_addr_format(const struct sockaddr *sa, int with_port,
                             char *buf, size_t len);

/* Test hook for the interleaving harness: when next is set, every socket
 * read of every conn is at most next(data) bytes (0: no cap), so a test
 * decides where the peer's bytes fall into reads.  NULL clears it.
 * Process-wide; never set in production. */
void conn_debug_read_size(size_t (*next)(void *data), void *data);

#endif
