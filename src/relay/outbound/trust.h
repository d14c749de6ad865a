/*
 * outbound/trust: where the delivery meets MTA-STS (outbound/sts.h) and
 * TLS-RPT (relay/tlsrpt.h), CONTRACT §4b — kept out of dispatch.c and
 * session.c, which call these few hooks:
 *
 *   on_show -> trust_begin: the domain's MTA-STS verdict (for every
 *   delivery by MX: RFC 8461 §5 checks the TXT id each time) ->
 *   dispatch_connect: a kept connection made under the same policy
 *   (trust_stamp), or the resolution;
 *   on_resolved -> trust_after_resolve: enforce keeps only candidates
 *   whose host matches an mx: pattern (none: defer 4.7.5) -> session_next.
 *   start_session -> trust_tls_required: STARTTLS required, verified
 *   against tls_ca_file and the MX host name (no plaintext fallback).
 *   TLS outcome of each new connection -> trust_count (TLS-RPT).
 *
 * DANE (RFC 7672) wins when both apply: with outbound_tls = dane and a
 * secure MX answer the candidates are not filtered after resolution;
 * the DANE side decides each host just before it is connected
 * (d->dane), and trust_skip_host skips only hosts outside the policy
 * that DANE does not authenticate; a DANE host keeps DANE's TLS rules
 * and counts as tlsa for TLS-RPT.
 */
#ifndef MAILHOP_RELAY_OUTBOUND_TRUST_H
#define MAILHOP_RELAY_OUTBOUND_TRUST_H

struct delivery;
struct conn_tls_info;

/* Before the first connection of a delivery (route chosen): asks the
 * MTA-STS verdict when mta_sts = yes and the delivery is by MX, keeps it
 * in the delivery, then dispatch_connect (later, from the loop, or at
 * once when no policy is asked for). */
void trust_begin(struct delivery *d);

/* After resolution (candidates set): under an enforced policy only the
 * candidates whose host matches stay (none: the recipients defer 4.7.5
 * and the delivery finishes); then session_next. */
void trust_after_resolve(struct delivery *d);

/* The stamp a kept connection carries (outbound/cache.h): "sts:ID" when
 * made under an enforced MTA-STS policy, else "".  Valid while d lives. */
const char *trust_stamp(const struct delivery *d);

/* Shutdown: a delivery waiting for its verdict finishes at once, its
 * recipients as they are.  Returns 1 when it did (d is gone). */
int trust_abort(struct delivery *d);

/* Just before the current candidate is connected (after the DANE side
 * decided d->dane): under an enforced MTA-STS policy a host outside it
 * is skipped (last_err set, 4.7.5, counted) unless DANE authenticates it
 * (DANE wins).  Returns 1 when skipped: the caller goes on with
 * session_next. */
int trust_skip_host(struct delivery *d);

/* Whether the current candidate needs verified TLS (MTA-STS enforce, and
 * the host is not under DANE, whose own rules hold). */
int trust_tls_required(const struct delivery *d);

/* "sts" when an enforced MTA-STS policy governs the connection, else
 * "none" (the log's tls_policy=, CONTRACT §4b). */
const char *trust_policy_name(const struct delivery *d);

/* The TLS outcome of the current (new, not reused) connection, once:
 * info NULL with starttls_missing set when the server offered no
 * STARTTLS; info with ok 0 for a failed handshake; info ok for a
 * session (verified or not).  Counted for TLS-RPT under the policy that
 * applies (testing and enforce: sts, with the mx match), and for enforce
 * the deferral's code becomes 4.7.5. */
void trust_tls_outcome(struct delivery *d, const struct conn_tls_info *info,
                       int starttls_missing);

/* Queues a TLS-RPT report (relay/tlsrpt.h tlsrpt_submit_fn; arg is the
 * outbound): commits msg (its prefix is the whole message, at most 4
 * recipients) and hands it to the scheduler once durable.  0, or -1 when
 * it could not be queued. */
struct store_msg;
int trust_submit_report(void *arg, struct store_msg *msg);

#endif
