/*
 * metrics: the HTTP endpoints of CONTRACT §7 over loop/http.
 *
 *   GET /metrics  200, Prometheus text format 0.0.4: every family of §7,
 *                 each with # HELP and # TYPE, read from the same snapshot
 *                 as `status` (relay/stats.h) plus the counters of struct
 *                 stats.  Label values come from small fixed sets only.
 *   GET /healthz  200 while the loop turns (answering proves it).
 *   GET /readyz   200 when accepting (listeners open, not draining, not
 *                 shutting down, queue disk above queue_minfree), else 503
 *                 with the reason in the body.
 *   other paths   404; a known path with a method other than GET or HEAD
 *                 405 with `Allow: GET, HEAD`.
 *
 * Everything is answered from memory on the loop thread: a scrape never
 * touches SQLite.  This module owns its http server; it borrows the stats
 * and the scheduler.
 */
#ifndef MAILHOP_METRICS_H
#define MAILHOP_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct config;
struct metrics;
struct sched;
struct stats;
struct stats_snapshot;

/*
 * Starts the listeners of cfg->metrics_listen (none: returns 0 and *out
 * NULL).  stats and sched are borrowed and must outlive metrics_stop();
 * sched may be NULL (queue figures 0).  Returns 0, or a negative errno with
 * a one-line message naming the address in err; -ENOTSUP when this build
 * has no HTTP support (meson -Dmetrics=disabled) and an address is set.
 */
int metrics_start(uv_loop_t *loop, const struct config *cfg,
                  const struct stats *stats, const struct sched *sched,
                  struct metrics **out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Closes the listeners and connections; the memory goes with the handles'
 * close callbacks (run the loop afterwards).  NULL is ignored. */
void metrics_stop(struct metrics *m);

/*
 * Renders the exposition (text format 0.0.4) of sn and s (s may be NULL:
 * counters 0) into a new NUL-terminated malloc'd buffer; *len gets its
 * length without the NUL.  Pure.  Returns NULL when out of memory.
 */
char *metrics_render(const struct stats_snapshot *sn, const struct stats *s,
                     size_t *len);

#endif
