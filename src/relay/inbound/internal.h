/*
 * inbound/internal.h: what the inbound module's two files share, and
 * nothing else includes (relay/inbound.h is the module's interface).
 *   session.c  listeners, sessions, the wait/step machine, conn callbacks
 *   commit.c   the message: envelope for the store, added header fields
 *              (Received, Date, Message-ID), DKIM signing, the commit
 * All of it runs on the loop thread.
 */
#ifndef MAILHOP_RELAY_INBOUND_INTERNAL_H
#define MAILHOP_RELAY_INBOUND_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "log.h"
#include "proto/smtp_server.h"
#include "queue/store.h"
#include "relay/auth.h"
#include "relay/inbound.h"

struct conn;
struct dkim;
struct dkim_req;
struct diskspace;
struct listener;
struct proxy_accept;
struct stats;
typedef struct ssl_ctx_st SSL_CTX;

#define MAX_LISTENERS (2 * CONFIG_MAX_LIST)
/* How often the DATA rate is checked. */
#define DATA_CHECK_MS 1000
/* Idle working-buffer blocks kept for reuse (about 47 KB each). */
#define BUFS_POOL_MAX 16
/* After a flood: once the sessions fall to a quarter of a peak of at least
 * this many, free heap pages go back to the OS (malloc_trim). */
#define TRIM_PEAK_MIN 256

struct session;

struct inbound {
  uv_loop_t *loop;
  const struct config *cfg;
  struct store *store;
  struct stats *stats;
  inbound_queued_cb on_queued;
  void *data;
  struct listener *listeners[MAX_LISTENERS];
  int n_listeners;
  /* The bound addresses (the real port of a `:0` listener) and their TLS
   * flag, to open them again after a drain (inbound_resume_accepting). */
  struct sockaddr_storage bound[MAX_LISTENERS];
  int bound_tls[MAX_LISTENERS];
  int n_bound;
  SSL_CTX *tls_ctx;           /* NULL without a certificate */
  struct auth *auth;          /* NULL without auth_users_file */
  struct dkim *dkim;          /* NULL without dkim_sign */
  struct proxy_accept *proxy; /* NULL without proxy_networks */
  struct session *sessions;   /* doubly linked, for shutdown */
  int n_sessions;
  uint64_t next_session;
  int freeing;
  int draining; /* `drain`: sessions end after their transaction */
  void (*freed_cb)(void *data);
  void *freed_data;
  struct inbound_debug dbg; /* test hooks; zero in production */
  /* Working buffers of sessions that idle, for the next one that reads. */
  struct smtp_server_bufs *pool[BUFS_POOL_MAX];
  int n_pool;
  int peak;               /* most sessions open since the last trim */
  struct diskspace *disk; /* free space of the queue's file system */
};

struct rcpt {
  char *addr;
  char *domain; /* lower case: the destination key */
  char *orcpt;
  unsigned notify;
};

/* What a session waits for; while it waits it acts on no input. */
enum session_wait {
  WAIT_NONE = 0,
  WAIT_SPOOL,  /* the spool is writing its memory part to disk */
  WAIT_DKIM,   /* the message is being signed on the pool (CONTRACT §3a) */
  WAIT_COMMIT, /* the message is being committed */
  WAIT_AUTH,   /* the password hash is being checked on the pool */
  WAIT_TLS,    /* the TLS handshake after STARTTLS */
  WAIT_OUTPUT, /* the conn's write queue is above its high-water mark */
};

struct session {
  struct inbound *in;
  struct session *prev, *next;
  struct conn *conn; /* NULL once closed */
  struct smtp_server *srv;
  char id[20]; /* session id for logs */
  char peer[64];
  int implicit_tls;
  /* envelope of the transaction in progress */
  char *sender;
  struct smtp_mail_params mail;
  struct rcpt *rcpts;
  int n_rcpts, cap_rcpts;
  /* DATA */
  struct store_spool *spool;
  int spool_writing;         /* a spool write callback is pending */
  struct store_job *commit;  /* commit in flight */
  struct auth_req *auth_req; /* password check in flight */
  struct dkim_req *dkim_req; /* signing in flight (holds the spool) */
  char *signed_prefix;       /* the signer's new prefix, until committed */
  size_t signed_prefix_len;
  char dkim_domains[256]; /* signing domains, for the accepted line */
  int body_8bit;          /* of the message being committed */
  uint64_t body_size;     /* its DATA octets */
  uint64_t data_start_ms;
  uint64_t data_bytes;
  uint64_t data_rx; /* bytes read during DATA, for min_data_rate */
  char queue_id[STORE_ID_SIZE];
  int64_t received_at;
  int ended;
  /* the async step in flight and, once it completed, its outcome */
  enum session_wait wait;
  int held; /* the completion is held by the test hook */
  int step_status;
  enum auth_status auth_status;
  char *auth_user; /* copy of the user name from the AUTH answer */
};

/* ---- session.c, for commit.c ---------------------------------------- */

/* One log line for the session (session, client, then key=val if key). */
void inb_log(struct session *s, enum log_level lvl, const char *event,
             const char *key, const char *val);
/* A failed step of the transaction, with the envelope and the cause
 * (status: a negative errno). */
void inb_log_error(struct session *s, const char *event, const char *what,
                   int status);
/* Frees the transaction's sender and recipients. */
void inb_envelope_clear(struct session *s);
/* The one setter of s->wait; every wait but TLS pauses reading. */
void inb_wait(struct session *s, enum session_wait w);
/* Frees the session once nothing refers to it any more (conn, commit,
 * spool write, signing job, held completion). */
void inb_maybe_free(struct session *s);
/* A step's completion (its status in s->step_status): acted on now, or
 * held by the test hook. */
void inb_step_arrived(struct session *s);

/* ---- commit.c, for session.c ---------------------------------------- */

/* End of data: builds the added header fields and hands the message to
 * the store, through the DKIM signer when dkim_sign is set; the session
 * waits (WAIT_DKIM, then WAIT_COMMIT).  A refusal answers at once. */
void inb_commit_message(struct session *s, const struct smtp_event *ev);
/* Commits prefix (len bytes, copied by the store) + the spool; the
 * session waits for WAIT_COMMIT.  A refusal answers at once. */
void inb_commit_prefixed(struct session *s, const char *prefix, size_t len);
/* The reply to a failed commit, by its cause (-ENOSPC: 452 4.3.1). */
const char *inb_commit_error_reply(int status);

#endif
