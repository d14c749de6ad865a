/*
 * diskspace: see diskspace.h.  One statfs in flight at a time; its answer
 * updates the figure on the loop thread (uv_fs_statfs's callback).
 */
#include "relay/diskspace.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"

struct diskspace {
  uv_loop_t *loop;
  char *dir;
  unsigned interval_ms;
  uv_timer_t timer;
  uv_fs_t req;
  int in_flight;    /* a statfs is on the pool */
  int stopping;     /* diskspace_stop ran */
  int timer_closed; /* the timer's close callback ran */
  uint64_t free_bytes;
  uint64_t fake;
  unsigned long answers;
  int last_error; /* to log a failure once, not every second */
  diskspace_cb on_update;
  void *cb_data;
};

static void maybe_release(struct diskspace *ds) {
  if (ds->stopping && ds->timer_closed && !ds->in_flight) {
    free(ds->dir);
    free(ds);
  }
}

static void on_statfs(uv_fs_t *req) {
  struct diskspace *ds = req->data;
  ds->in_flight = 0;
  ds->answers++;
  if (req->result == 0 && req->ptr) {
    const uv_statfs_t *st = req->ptr;
    ds->free_bytes = (uint64_t)st->f_bavail * (uint64_t)st->f_bsize;
    ds->last_error = 0;
  } else {
    int err = (int)req->result;
    if (err != ds->last_error && !ds->stopping)
      log_msg(LOG_WARN, "diskspace", "cannot read the free space of %s: %s",
              ds->dir, uv_strerror(err));
    ds->last_error = err;
    ds->free_bytes = DISKSPACE_UNKNOWN;
  }
  uv_fs_req_cleanup(req);
  if (ds->on_update && !ds->stopping)
    ds->on_update(ds, ds->cb_data);
  maybe_release(ds);
}

void diskspace_on_update(struct diskspace *ds, diskspace_cb cb, void *data) {
  ds->on_update = cb;
  ds->cb_data = data;
}

static void refresh(struct diskspace *ds) {
  if (ds->in_flight || ds->stopping)
    return;
  ds->req.data = ds;
  if (uv_fs_statfs(ds->loop, &ds->req, ds->dir, on_statfs) == 0)
    ds->in_flight = 1;
}

static void on_timer(uv_timer_t *t) {
  refresh(t->data);
}

struct diskspace *diskspace_start(uv_loop_t *loop, const char *dir,
                                  unsigned interval_ms) {
  struct diskspace *ds = calloc(1, sizeof *ds);
  if (!ds || !(ds->dir = strdup(dir && *dir ? dir : "."))) {
    free(ds);
    return NULL;
  }
  ds->loop = loop;
  ds->interval_ms = interval_ms ? interval_ms : DISKSPACE_INTERVAL_MS;
  ds->free_bytes = DISKSPACE_UNKNOWN;
  ds->fake = DISKSPACE_UNKNOWN;
  uv_timer_init(loop, &ds->timer);
  ds->timer.data = ds;
  /* The watch must not keep the loop alive on its own. */
  uv_unref((uv_handle_t *)&ds->timer);
  uv_timer_start(&ds->timer, on_timer, ds->interval_ms, ds->interval_ms);
  refresh(ds);
  return ds;
}

static void on_timer_closed(uv_handle_t *h) {
  struct diskspace *ds = h->data;
  ds->timer_closed = 1;
  maybe_release(ds);
}

void diskspace_stop(struct diskspace *ds) {
  if (!ds || ds->stopping)
    return;
  ds->stopping = 1;
  uv_close((uv_handle_t *)&ds->timer, on_timer_closed);
}

uint64_t diskspace_free(const struct diskspace *ds) {
  if (ds->fake != DISKSPACE_UNKNOWN)
    return ds->fake;
  return ds->free_bytes;
}

uint64_t diskspace_room(const struct diskspace *ds, uint64_t floor) {
  uint64_t f = diskspace_free(ds);
  if (f == DISKSPACE_UNKNOWN)
    return UINT64_MAX;
  return f > floor ? f - floor : 0;
}

unsigned long diskspace_answers(const struct diskspace *ds) {
  return ds->answers;
}

void diskspace_debug_fake(struct diskspace *ds, uint64_t bytes) {
  ds->fake = bytes;
}
