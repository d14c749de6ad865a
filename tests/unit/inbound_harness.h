/*
 * inbound_harness: the deterministic interleaving harness for the inbound
 * session (issue 12 item 1), shared by the unit test
 * (test_inbound_harness.c) and the fuzz target (fuzz_inbound_harness.c).
 *
 * One run: a real loop, a real store in a temp dir (real spools), the real
 * inbound module listening on 127.0.0.1:0 with AUTH (a real users file and
 * crypt hash); n clients on loopback each send the same conversation,
 * written at once, while
 *   - every socket read of the server is capped by the plan's read sizes
 *     (conn_debug_read_size): one byte at a time, random splits, or one
 *     buffer;
 *   - every async completion a session waits for (spool write, commit,
 *     AUTH check, TLS, output) is held (inbound_debug_set) and released
 *     later in an order the plan's seed chooses, across sessions.
 * The result is each client's replies (queue ids masked), each session's
 * trace of events and waits, and the stored messages (envelope + body,
 * the Received header masked), as text, so two runs compare with strcmp.
 */
#ifndef MAILHOP_TEST_INBOUND_HARNESS_H
#define MAILHOP_TEST_INBOUND_HARNESS_H

#include <stddef.h>
#include <stdint.h>

struct harness_plan {
  int sessions; /* clients, each sending the whole conversation */
  /* Read caps, used in turn and repeated; n_reads 0 means one buffer.  A
   * cap of 0 means "as much as fits". */
  const size_t *reads;
  size_t n_reads;
  int hold;      /* hold async completions (else act at once) */
  uint64_t seed; /* release order and delays of held completions */
  int max_delay; /* loop turns a held completion may wait (0..) */
  /* When set, held completions are released one at a time by a timer
   * after this many ms each (a slow disk or hash), in seeded order. */
  unsigned delay_ms;
  /* Each client says EHLO and STARTTLS in plaintext, waits for the 220,
   * shakes hands (a certificate made at run time) and sends the
   * conversation over TLS: the read caps then cut ciphertext, and the
   * handshake is one more held step. */
  int starttls;
  /* Sign with an Ed25519 key made at run time (dkim_sign for a.example,
   * the conversation's From: domain): signing is one more held step. */
  int dkim;
  /* When set (a wait name: "spool", "dkim", "commit", "auth", "tls"), the
   * relay shuts down (inbound_free) the first time a step of that kind is
   * held, before it is released: sessions end with the step in flight.
   * The run must still end cleanly (no leak, no handle left open). */
  const char *shutdown_at;
  /* The spools' shared memory budget (store_debug_spool_budget).  0, the
   * default: every spool goes to its temp file past SPOOL_MEM, so the
   * spool writes are held steps (the sizes of the tests straddle 64 KiB);
   * SPOOL_BUDGET: as `mailhop serve` runs, spools grow in memory up to
   * SPOOL_MEM_MAX while the budget lasts. */
  size_t spool_budget;
};

struct harness_result {
  char *replies; /* per client, "C<i>:\n" then the reply lines */
  char *trace;   /* per session, "S<i> <event or wait>" lines */
  char *stored;  /* the stored messages, sorted */
  int held;      /* completions held and released (for the report) */
  int shut_down; /* plan->shutdown_at happened */
  int reads;     /* socket reads the server made */
};

/* Runs the conversation (conv, len bytes) under plan.  Returns 0, or -1
 * with a reason on stderr (set-up failure, a run that did not finish).
 * The result strings are malloc'd; harness_result_free frees them. */
int harness_run(const char *conv, size_t len, const struct harness_plan *plan,
                struct harness_result *out);
void harness_result_free(struct harness_result *r);

/* The conversation the tests use: EHLO, AUTH PLAIN, pipelined envelopes,
 * messages whose unstuffed bodies are the given sizes (around the 64 KiB
 * spool boundary), RSET, NOOP, QUIT.  malloc'd; *len set. */
char *harness_conversation(const size_t *sizes, size_t n, size_t *len);

#endif
