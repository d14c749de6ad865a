/*
 * relay/tlsrpt: TLS-RPT (RFC 8460, CONTRACT §4b) for delivery by MX: the
 * counts of the running report period per policy domain, policy type
 * (sts, tlsa, no-policy-found) and result (successful, or an RFC 8460
 * result type), kept in memory and in the queue database (they survive a
 * restart); at the end of each tls_rpt_interval one report per domain
 * that publishes `_smtp._tls` TXT with mailto: rua: the RFC's JSON,
 * gzip'd (zlib, on the pool), as application/tlsrpt+gzip from <> and
 * MAILER-DAEMON@hostname, queued like a bounce and delivered by the relay
 * itself.  Sessions carrying report mail are not counted (the caller
 * checks tlsrpt_is_report()).
 *
 * Bounded: at most TLSRPT_DOMAINS_MAX domains and TLSRPT_TYPES_MAX result
 * types per domain and policy are counted in a period (more are dropped,
 * with one warning per period).  Never blocks the loop.
 */
#ifndef MAILHOP_RELAY_TLSRPT_H
#define MAILHOP_RELAY_TLSRPT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define TLSRPT_DOMAINS_MAX 1000
#define TLSRPT_TYPES_MAX 12
#define TLSRPT_POLICY_TEXT_MAX 4096 /* policy-string kept up to this */

enum tlsrpt_policy {
  TLSRPT_POLICY_STS = 0,
  TLSRPT_POLICY_TLSA,
  TLSRPT_POLICY_NONE, /* "no-policy-found" */
  TLSRPT_POLICY_N
};

const char *tlsrpt_policy_name(enum tlsrpt_policy p);

struct config;
struct store;
struct resolver;
struct tlsrpt;

/* How a report reaches the queue: the message (prefix holds all of it;
 * at most 4 rcpts, each with its domain) is committed and handed to the
 * scheduler by the owner (outbound/trust.h trust_submit_report).  Returns
 * 0, or -1 when it could not be queued. */
struct store_msg;
typedef int (*tlsrpt_submit_fn)(void *arg, struct store_msg *msg);

/* Creates the counter with the counts the store read at open.  With
 * cfg->tls_rpt 0 it counts nothing and sends nothing (tlsrpt_json still
 * answers).  res, st are borrowed.  NULL when out of memory. */
struct tlsrpt *tlsrpt_new(uv_loop_t *loop, const struct config *cfg,
                          struct store *st, struct resolver *res,
                          tlsrpt_submit_fn submit, void *submit_arg);

/* Counts one TLS session (or its failure) towards domain (ASCII, lower
 * case; the recipient domain, the policy domain).  result NULL:
 * successful; else an RFC 8460 result type (copied).  mx_host: the
 * receiving MX host for a failure's details, or NULL. */
void tlsrpt_count(struct tlsrpt *t, const char *domain, enum tlsrpt_policy p,
                  const char *result, const char *mx_host);

/* The MTA-STS policy in force for domain (the file as fetched; copied,
 * up to TLSRPT_POLICY_TEXT_MAX bytes, else left out), for the report's
 * policy-string (RFC 8460 §4.4). */
void tlsrpt_policy_text(struct tlsrpt *t, const char *domain, const char *text);

/* Whether a message is a TLS-RPT report this relay made (its header
 * section holds TLS-Report-Domain and the sender is <>): its deliveries
 * are not counted (RFC 8460 §5.3: no reports about reports). */
int tlsrpt_is_report(const char *sender, const char *headers);

/* The running counts as one line of JSON (CONTRACT §5 tlsrpt), malloc'd,
 * without a newline; NULL when out of memory. */
char *tlsrpt_json(const struct tlsrpt *t);

/* tlsrpt_json for a callback: arg is the struct tlsrpt. */
char *tlsrpt_json_arg(void *arg);

/* Ends the period timer and any report in the making; frees when the
 * last pool job is back.  Call before freeing the resolver. */
void tlsrpt_free(struct tlsrpt *t);

#endif
