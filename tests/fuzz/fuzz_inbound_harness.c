/*
 * fuzz_inbound_harness: the deterministic interleaving harness
 * (tests/unit/inbound_harness.h) with fuzzer-chosen read splits and
 * release orders.  The input is the plan: byte 0 picks the session count
 * (1-3), whether completions are held and whether spools may grow in
 * memory (the serve default) or go to disk past 64 KiB (where the spool
 * writes are held steps), byte 1 the release seed and
 * delay, and each following pair of bytes one read size (1..16384; the
 * sizes are used in turn and repeated).  Invariant: the replies, the
 * session traces and the stored messages equal the reference run's (one
 * buffer, completions acted on at once) — whatever the splits and the
 * order in which spool writes, commits and AUTH checks complete.
 *
 * Each input runs a real loop, store and sockets (about 100 KB of SMTP
 * and three fsync'd commits per session): slow, but the fault it guards
 * against depends on exactly this.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/inbound_harness.h"
#include "queue/spool.h"

#define MAX_READS 256

static char *conv;
static size_t conv_len;
static struct harness_result ref[2][4];
static int have_ref[2][4];

static void fail(const char *what) {
  fprintf(stderr, "fuzz_inbound_harness: %s\n", what);
  abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!conv) {
    /* The first message ends in the read that sends the spool to disk
     * when read whole: the issue-12 window. */
    static const size_t sizes[] = {65636, 1200, 30000};
    conv = harness_conversation(sizes, 3, &conv_len);
  }
  if (size < 2)
    return 0;
  struct harness_plan p = {
      .sessions = 1 + data[0] % 3,
      .hold = (data[0] & 4) != 0,
      .seed = data[1],
      .max_delay = data[1] % 4,
      .spool_budget = (data[0] & 8) ? SPOOL_BUDGET : 0,
  };
  int g = p.spool_budget != 0;
  if (!have_ref[g][p.sessions]) {
    struct harness_plan rp = {.sessions = p.sessions,
                              .spool_budget = p.spool_budget};
    if (harness_run(conv, conv_len, &rp, &ref[g][p.sessions]) < 0)
      fail("the reference run failed");
    have_ref[g][p.sessions] = 1;
  }
  size_t reads[MAX_READS];
  size_t n = 0;
  for (size_t i = 2; i + 1 < size && n < MAX_READS; i += 2)
    reads[n++] = 1 + (((size_t)data[i] << 8 | data[i + 1]) % 16384);
  p.reads = reads;
  p.n_reads = n;
  struct harness_result got;
  if (harness_run(conv, conv_len, &p, &got) < 0)
    fail("the run failed or hung");
  const struct harness_result *want = &ref[g][p.sessions];
  if (strcmp(got.replies, want->replies) != 0) {
    fprintf(stderr, "replies:\n%s\nwanted:\n%s\n", got.replies, want->replies);
    fail("replies differ");
  }
  if (strcmp(got.trace, want->trace) != 0)
    fail("traces differ");
  if (strcmp(got.stored, want->stored) != 0)
    fail("stored messages differ");
  harness_result_free(&got);
  return 0;
}
