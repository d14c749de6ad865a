/*
 * diskspace: the free space of the queue's file system, kept in memory
 * and refreshed asynchronously (uv_fs_statfs on the thread pool, on a
 * timer), so the loop never waits on the disk to know it (issue 12 item
 * 5, CONTRACT §2 queue_minfree).  Inbound reads it to refuse new mail
 * before the disk is full (452 4.3.1), so that delivery outcomes can
 * still be written; /readyz can read it too.
 *
 * Owns a uv_timer_t and one uv_fs_t (at most one statfs in flight).
 * Never blocks the loop, never knows SMTP or the queue's format.
 */
#ifndef MAILHOP_RELAY_DISKSPACE_H
#define MAILHOP_RELAY_DISKSPACE_H

#include <stdint.h>
#include <uv.h>

/* How often the figure is refreshed. */
#define DISKSPACE_INTERVAL_MS 1000
/* diskspace_free() before the first answer, or after a failed one. */
#define DISKSPACE_UNKNOWN UINT64_MAX

struct diskspace;

/*
 * Starts watching the file system holding dir (copied): a first statfs
 * at once, then every interval_ms (0: DISKSPACE_INTERVAL_MS).  Returns
 * NULL when out of memory.
 */
struct diskspace *diskspace_start(uv_loop_t *loop, const char *dir,
                                  unsigned interval_ms);

/* Stops; the memory goes once the timer is closed and a statfs in flight
 * has returned.  NULL is fine. */
void diskspace_stop(struct diskspace *ds);

/* Called on the loop after each statfs answer (success or failure), to
 * read the new figure; never after diskspace_stop(). */
typedef void (*diskspace_cb)(struct diskspace *ds, void *data);

/* Sets (or, with cb NULL, clears) the update callback. */
void diskspace_on_update(struct diskspace *ds, diskspace_cb cb, void *data);

/* Bytes available to the (unprivileged) queue owner as of the last
 * answer (f_bavail * f_bsize), or DISKSPACE_UNKNOWN. */
uint64_t diskspace_free(const struct diskspace *ds);

/* Bytes the queue can still take above the floor: free - floor (0 when
 * below it), or UINT64_MAX while unknown. */
uint64_t diskspace_room(const struct diskspace *ds, uint64_t floor);

/* Statfs answers received and failed, for tests and logs. */
unsigned long diskspace_answers(const struct diskspace *ds);

/* Test hook: report bytes as the free space from now on (the real
 * figure is still fetched but not used); DISKSPACE_UNKNOWN undoes it. */
void diskspace_debug_fake(struct diskspace *ds, uint64_t bytes);

#endif
