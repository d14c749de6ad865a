/*
 * outbound/dispatch: the life cycle of a delivery and the state the
 * outbound folder shares (private to src/relay/outbound/; the public API
 * for serve.c is relay/outbound.h).
 *
 * One `struct delivery` per scheduler job.  Its life:
 *
 *   outbound_dispatch -> store_show (envelope) -> cache_take (a connection
 *   kept from an earlier delivery) or dispatch_resolve (MX or relayhost
 *   list) -> session (connect, SMTP, body) -> record_finish (outcome,
 *   store update, scheduler) -> dispatch_free.
 *
 * Owns: the delivery list, the resolver, the TLS client contexts.  Never
 * waits on the disk or the network (store and resolver calls are
 * asynchronous, their callbacks run on the loop).
 */
#ifndef MAILHOP_RELAY_OUTBOUND_DISPATCH_H
#define MAILHOP_RELAY_OUTBOUND_DISPATCH_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "dns/mx.h"
#include "proto/encode.h"
#include "proto/routes.h"
#include "queue/store.h"
#include "relay/oauth2.h"
#include "relay/outbound/outcome.h"
#include "relay/outbound/sts.h"

#define OB_BODY_CHUNK (64 * 1024)
#define OB_MAX_CANDS 16
#define OB_ERR_MAX OUTCOME_ERR_MAX
#define OB_REMOTE_MAX 300

struct config;
struct conn;
struct resolver;
struct resolver_query;
struct sched;
struct sched_job;
struct smtp_client;
struct smtp_cli_rcpt;
struct stats;
struct idle;
struct record;
typedef struct ssl_ctx_st SSL_CTX;

/* One recipient of a delivery. */
struct drcpt {
  int idx;
  int attempts;
  char *addr;  /* NULL when the store holds it as final already */
  char *orcpt; /* "type;xtext" for the wire and the DSN */
  unsigned notify;
  enum outcome_state state;
  char err[OB_ERR_MAX];
  char status[16];
  char remote[OB_REMOTE_MAX];
  char tls[16];       /* TLS version of the connection that decided it */
  char tls_policy[8]; /* "dane", "sts" or "none" (CONTRACT §4b) */
  int relayed_no_dsn; /* delivered to a next hop without DSN */
  int64_t next_at_s;  /* a deadline job's: as stored (unix s) */
};

enum next_action { NEXT_HOST, NEXT_PLAINTEXT, NEXT_DONE };

struct delivery {
  struct outbound *ob;
  struct delivery *lprev, *lnext;
  struct sched_job *job;
  char id[STORE_ID_SIZE];
  char *sender;
  char *envid_x; /* xtext */
  int ret;
  unsigned flags;
  int64_t received_at; /* unix s */
  int64_t size;        /* bytes, as stored */
  char *headers;
  unsigned notices; /* STORE_NOTICE_* already sent (delay warning) */
  struct drcpt *r;
  size_t n;
  int64_t started_ms;
  /* the route: a line of the routes file, or the global settings */
  struct relay_routes *routes; /* a reference held while rt points in it */
  const struct route *rt;
  /* the password, or the XOAUTH2 access token, for this delivery only;
   * wiped by dispatch_free */
  char password[8193];
  uv_work_t secret_work; /* reading the password file off the loop */
  int secret_rc;         /* its outcome: 0, or -1 with secret_why */
  char secret_why[512];
  struct oauth2_wait token_wait; /* waiting for an OAuth2 access token */
  int oauth2_token;              /* password is a token from ob->oauth2 */
  int token_retry;   /* the relayhost refused it: fetch anew, same host */
  int token_retried; /* that was done once for this delivery */
  /* resolution */
  struct resolver_query *q;
  int relayhost; /* rt->n_hosts > 0 */
  int relay_idx;
  int mx_secure; /* the MX answer was DNSSEC-secure (AD) */
  struct mx_candidate cands[OB_MAX_CANDS];
  int cand_relay[OB_MAX_CANDS];
  int ncands, cand;
  char last_err[OB_ERR_MAX];
  char last_status[16]; /* enhanced code for last_err, "" = the default */
  /* the connection in progress */
  struct conn *conn;
  struct smtp_client *cli;
  char remote[OB_REMOTE_MAX];
  int plaintext;          /* retrying without TLS after a failed handshake */
  int dane;               /* this connection must be DANE-authenticated */
  struct dns_rrset *tlsa; /* TLSA answer for tlsa_host, owned */
  char tlsa_host[DNS_NAME_MAX + 2];
  char tlsa_base[DNS_NAME_MAX + 2];  /* where d->tlsa was found: tlsa_host
                                        or its CNAME expansion */
  char tlsa_asked[DNS_NAME_MAX + 2]; /* the TLSA lookup in flight is for
                                        this base domain */
  int reused;        /* the connection came from the idle cache */
  int conversed;     /* some server answered SMTP (destination is alive) */
  int conn_decided;  /* recipients decided on this connection */
  int waiting_slot;  /* waits for room in the connection budget */
  int body_sent;     /* the transaction reached its body (DATA replies) */
  int relay_refused; /* the relayhost refused this relay (530, 5.7.x) */
  int relay_took;    /* ... but decided some recipient otherwise */
  enum next_action next;
  struct smtp_cli_rcpt *txr;
  size_t *txmap;
  size_t ntx;
  /* body */
  struct encoder enc;
  int64_t body_off;
  char *rbuf, *ebuf;
  struct store_job *read_job;
  int waiting_drain;
  int folds_logged; /* the "folded" line was written for this message */
  /* outbound trust (outbound/trust.h, CONTRACT §4b) */
  struct sts_wait sts_wait; /* waiting for the MTA-STS verdict */
  int sts_waiting;
  enum sts_mode sts_mode; /* of the policy that applies, or NONE */
  int sts_enforce;        /* enforce: matching MX, verified TLS, 4.7.5 */
  unsigned char sts_match[OB_MAX_CANDS]; /* candidate's host matches */
  struct sts_policy *sts_pol;            /* mode != NONE: a copy, owned */
  char sts_stamp[STS_ID_MAX + 8];        /* "sts:ID" under enforce, else "" */
  int is_report;                         /* a TLS-RPT report: never counted */
  int tls_counted; /* this connection's TLS outcome counted */
  /* outcome */
  struct record *rec;
  int finishing;
  int dest_ok;
};

struct outbound {
  uv_loop_t *loop;
  const struct config *cfg;
  struct store *store;
  struct sched *sched;
  struct stats *stats;
  struct resolver *res;
  SSL_CTX *ctx_verify, *ctx_any;
  SSL_CTX *ctx_dane;           /* outbound_tls = dane/dane-only, else NULL */
  struct dkim *dkim;           /* signs bounces; NULL without dkim_sign */
  struct relay_routes *routes; /* routes_file, never NULL once started */
  struct route global;         /* the global relayhost settings as a route */
  struct route mx;             /* delivery by MX with no route */
  /* `drain --to` (CONTRACT §1): while drain_to is set, every delivery
   * takes this route instead of its own (outbound_set_drain_to). */
  struct route drain;
  int drain_to;
  struct oauth2 *oauth2; /* relayhost_oauth2_token_url; NULL without */
  struct sts *sts;       /* MTA-STS policies; NULL with mta_sts = no */
  struct tlsrpt *tlsrpt; /* TLS-RPT counts and reports */
  struct delivery *list;
  int active;
  int conns; /* open connections: deliveries' and idle ones */
  int freeing;
  int stopping; /* no new idle connections */
  struct idle *idle;
  int n_idle;
};

/* Sets recipient i's outcome (err and status copied; the remote is the
 * delivery's current one). */
void dispatch_decide(struct delivery *d, size_t i, enum outcome_state st,
                     const char *err, const char *status);

/* Every recipient still open gets this outcome. */
/* An OAuth2 token fetch ended (relay/oauth2's callback arguments): at
 * shutdown the delivery ends as it is, a failed fetch defers its pending
 * recipients with 4.7.0 (a relayhost problem, never a bounce); both end
 * the delivery and return -1.  Otherwise the token is the delivery's
 * password and 0 is returned. */
int dispatch_token_arrived(struct delivery *d, int rc, const char *token,
                           const char *why);

void dispatch_decide_pending(struct delivery *d, enum outcome_state st,
                             const char *err, const char *status);

/* Recipients still open (pending or waiting for a further transaction). */
size_t dispatch_count_pending(const struct delivery *d);

/* Resolves the delivery's destination (the next relayhost of the list, or
 * the MX of the domain) and goes on with the session ladder; on failure
 * the recipients are decided and the delivery finishes. */
void dispatch_resolve(struct delivery *d);

/* Gets the route's credentials for this delivery (the password file read
 * again off the loop, when the route has one), then dispatch_resolve; a
 * failure defers the recipients (a relayhost problem, CONTRACT §4). */
void dispatch_credentials(struct delivery *d);

/* Takes a kept connection for the delivery's destination (one made
 * under the same trust stamp, outbound/trust.h) or goes on with
 * dispatch_credentials: called once the MTA-STS verdict is in. */
void dispatch_connect(struct delivery *d);

/* Unlinks and frees the delivery (after its job was handed back). */
void dispatch_free(struct delivery *d);

/* The system's wall clock, unix ms: for log lines (delay=) only. */
int64_t dispatch_wall_ms(void);

/* The scheduler's clock, unix ms (sched_now): every time handed to the
 * scheduler or stored as next_attempt_at comes from it, never from the
 * system's wall clock, so an NTP step does not shift retries. */
int64_t dispatch_sched_ms(const struct outbound *ob);

#endif
