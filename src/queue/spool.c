/*
 * spool: bounded-memory DATA spool.  See spool.h for the contract.
 *
 * Owns: the memory part, the temp file's descriptor, the one uv_fs_t of the
 * write (or open, unlink, close) in flight.  Never: blocks the loop on the
 * disk, or knows SQL or SMTP.
 */
#include "queue/spool.h"

#include "log.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct store_spool {
  uv_loop_t *loop;
  const char *dir;
  const char *enospc_file; /* test hook, borrowed */
  unsigned flags;
  char *mem;
  size_t used, cap, woff;
  struct spool_budget *budget; /* borrowed; NULL: never grows */
  size_t charged;              /* capacity beyond SPOOL_MEM, from budget */
  uv_file fd;
  int64_t file_len;
  int64_t total;
  int err;
  int pending;
  int freed;
  uv_fs_t req;
  uv_buf_t wbuf;
  char *tmppath;
  store_spool_cb cb;
  void *data;
};

static void spool_destroy(struct store_spool *sp);
static void spool_write(struct store_spool *sp);

/* Gives back what the spool drew from the budget. */
static void budget_release(struct store_spool *sp) {
  if (sp->budget)
    sp->budget->used -= sp->charged;
  sp->charged = 0;
}

/* Grows the memory to hold `need` bytes (<= SPOOL_MEM_MAX) if the budget
 * has room for the capacity beyond SPOOL_MEM.  1 when it now fits. */
static int grow_in_memory(struct store_spool *sp, size_t need) {
  if (sp->budget->limit == 0)
    return 0; /* no budget: past SPOOL_MEM is the file's, as always */
  if (need <= sp->cap)
    return 1;
  size_t ncap = sp->cap < SPOOL_MEM ? SPOOL_MEM : sp->cap;
  while (ncap < need)
    ncap *= 2;
  if (ncap > SPOOL_MEM_MAX)
    ncap = SPOOL_MEM_MAX;
  size_t extra = ncap - SPOOL_MEM - sp->charged;
  if (sp->budget->used + extra > sp->budget->limit)
    return 0;
  char *m = realloc(sp->mem, ncap);
  if (!m)
    return 0;
  sp->mem = m;
  sp->cap = ncap;
  sp->budget->used += extra;
  sp->charged += extra;
  return 1;
}

struct store_spool *spool_new(uv_loop_t *loop, const char *dir, unsigned flags,
                              struct spool_budget *budget) {
  struct store_spool *sp = calloc(1, sizeof *sp);
  if (!sp)
    return NULL;
  sp->loop = loop;
  sp->budget = budget;
  sp->dir = dir;
  sp->flags = flags;
  sp->fd = -1;
  return sp;
}

void spool_debug_enospc_file(struct store_spool *sp, const char *path) {
  sp->enospc_file = path;
}

int64_t spool_size(const struct store_spool *sp) {
  return sp->total;
}

int spool_busy(const struct store_spool *sp) {
  return sp->pending;
}

int spool_error(const struct store_spool *sp) {
  return sp->err;
}

int spool_pread(const struct store_spool *sp, int64_t off, char *buf,
                size_t len, char *err, size_t errlen) {
  while (len > 0) {
    if (off < sp->file_len) {
      size_t n = len;
      if ((int64_t)n > sp->file_len - off)
        n = (size_t)(sp->file_len - off);
      ssize_t r = pread(sp->fd, buf, n, off);
      if (r < 0) {
        int e = errno;
        snprintf(err, errlen, "spool read: %s", strerror(e));
        return -e;
      }
      if (r == 0) {
        snprintf(err, errlen, "spool file truncated");
        return -EIO;
      }
      buf += r, off += r, len -= (size_t)r;
      continue;
    }
    int64_t moff = off - sp->file_len;
    assert(moff + (int64_t)len <= (int64_t)sp->used);
    memcpy(buf, sp->mem + moff, len);
    return 0;
  }
  return 0;
}

static void spool_done(struct store_spool *sp, int status) {
  store_spool_cb cb = sp->cb;
  void *data = sp->data;
  sp->pending = 0;
  sp->cb = NULL;
  if (status < 0 && !sp->err)
    sp->err = status;
  if (status < 0)
    log_msg(LOG_WARN, "store", "spool write failed: %s", uv_strerror(status));
  if (sp->freed) {
    cb(sp, -ECANCELED, data);
    spool_destroy(sp);
    return;
  }
  cb(sp, status, data);
}

static void on_spool_written(uv_fs_t *req) {
  struct store_spool *sp = req->data;
  ssize_t r = req->result;
  uv_fs_req_cleanup(req);
  /* Test hook only (an access() on the loop thread is fine there). */
  if (r >= 0 && sp->enospc_file && access(sp->enospc_file, F_OK) == 0)
    r = -ENOSPC;
  if (r < 0 || sp->freed) {
    spool_done(sp, r < 0 ? (int)r : 0);
    return;
  }
  if (r == 0) {
    spool_done(sp, -EIO);
    return;
  }
  sp->file_len += r;
  sp->woff += (size_t)r;
  if (sp->woff < sp->used) {
    spool_write(sp); /* short write: the rest */
    return;
  }
  sp->used = sp->woff = 0;
  if (sp->charged) {
    /* It grew, then spilled: back to SPOOL_MEM pieces, budget returned. */
    char *m = realloc(sp->mem, SPOOL_MEM);
    if (m) {
      sp->mem = m;
      sp->cap = SPOOL_MEM;
      budget_release(sp);
    }
  }
  spool_done(sp, 0);
}

static void spool_write(struct store_spool *sp) {
  sp->wbuf = uv_buf_init(sp->mem + sp->woff, (unsigned)(sp->used - sp->woff));
  sp->req.data = sp;
  int r = uv_fs_write(sp->loop, &sp->req, sp->fd, &sp->wbuf, 1, sp->file_len,
                      on_spool_written);
  /* uv_fs_write fails synchronously only on bad arguments. */
  assert(r == 0);
  (void)r;
}

static void on_spool_unlinked(uv_fs_t *req) {
  struct store_spool *sp = req->data;
  uv_fs_req_cleanup(req);
  free(sp->tmppath);
  sp->tmppath = NULL;
  /* A failed unlink leaves a stray file but the spool still works. */
  if (sp->freed) {
    spool_done(sp, 0);
    return;
  }
  spool_write(sp);
}

static void on_spool_mkstemp(uv_fs_t *req) {
  struct store_spool *sp = req->data;
  ssize_t r = req->result;
  char *path = r >= 0 ? strdup(req->path) : NULL;
  uv_fs_req_cleanup(req);
  free(sp->tmppath);
  sp->tmppath = path;
  if (r < 0) {
    spool_done(sp, (int)r);
    return;
  }
  sp->fd = (uv_file)r;
  if (!path || uv_fs_unlink(sp->loop, &sp->req, path, on_spool_unlinked) < 0)
    spool_done(sp, -ENOMEM);
}

/* Without O_TMPFILE (old kernel, some file systems): a named temp file in
 * the queue's directory, unlinked at once. */
static void spool_mkstemp(struct store_spool *sp) {
  static const char prefix[] = "/.mailhop-spool-";
  enum { RANDOM_SUFFIX = 6 }; /* mkstemp(3) replaces six trailing 'X's */
  size_t dl = strlen(sp->dir);
  char *tmpl = malloc(dl + sizeof prefix + RANDOM_SUFFIX);
  if (!tmpl) {
    spool_done(sp, -ENOMEM);
    return;
  }
  memcpy(tmpl, sp->dir, dl);
  memcpy(tmpl + dl, prefix, sizeof prefix - 1);
  memset(tmpl + dl + sizeof prefix - 1, 'X', RANDOM_SUFFIX);
  tmpl[dl + sizeof prefix - 1 + RANDOM_SUFFIX] = '\0';
  int e = uv_fs_mkstemp(sp->loop, &sp->req, tmpl, on_spool_mkstemp);
  free(tmpl); /* libuv copied it */
  if (e < 0)
    spool_done(sp, e);
}

static void on_spool_open(uv_fs_t *req) {
  struct store_spool *sp = req->data;
  ssize_t r = req->result;
  uv_fs_req_cleanup(req);
  if (r >= 0) {
    sp->fd = (uv_file)r;
    if (sp->freed)
      spool_done(sp, 0);
    else
      spool_write(sp);
    return;
  }
  if (sp->freed) {
    spool_done(sp, (int)r);
    return;
  }
  spool_mkstemp(sp);
}

int spool_append(struct store_spool *sp, const void *buf, size_t len,
                 store_spool_cb cb, void *data) {
  if (sp->err)
    return sp->err;
  if (sp->pending)
    return -EBUSY;
  size_t need = sp->used + len;
  /* Still in memory: below SPOOL_MEM, or grown within the budget while
   * nothing has gone to a file yet (a file, once there, takes the rest). */
  int keep = need < SPOOL_MEM;
  if (!keep && sp->fd < 0 && sp->budget && need <= SPOOL_MEM_MAX)
    keep = grow_in_memory(sp, need);
  if (need > sp->cap) {
    size_t ncap = need;
    if (ncap < SPOOL_MEM)
      ncap = SPOOL_MEM;
    char *m = realloc(sp->mem, ncap);
    if (!m)
      return -ENOMEM;
    sp->mem = m;
    sp->cap = ncap;
  }
  if (len)
    memcpy(sp->mem + sp->used, buf, len);
  sp->used += len;
  sp->total += (int64_t)len;
  if (keep)
    return 0;
  sp->pending = 1;
  sp->cb = cb;
  sp->data = data;
  sp->req.data = sp;
  if (sp->fd >= 0) {
    spool_write(sp);
  } else if (sp->flags & SPOOL_NO_TMPFILE) {
    spool_mkstemp(sp);
  } else {
    int r = uv_fs_open(sp->loop, &sp->req, sp->dir,
                       O_TMPFILE | O_RDWR | O_CLOEXEC, 0600, on_spool_open);
    if (r < 0) {
      sp->pending = 0;
      sp->cb = NULL;
      sp->err = r;
      return r;
    }
  }
  return SPOOL_PAUSE;
}

static void on_spool_closed(uv_fs_t *req) {
  struct store_spool *sp = req->data;
  uv_fs_req_cleanup(req);
  free(sp->mem);
  free(sp->tmppath);
  free(sp);
}

static void spool_destroy(struct store_spool *sp) {
  budget_release(sp);
  if (sp->fd >= 0) {
    /* Closing an unlinked file frees its blocks: not on the loop thread. */
    sp->req.data = sp;
    if (uv_fs_close(sp->loop, &sp->req, sp->fd, on_spool_closed) == 0)
      return;
  }
  free(sp->mem);
  free(sp->tmppath);
  free(sp);
}

void spool_free(struct store_spool *sp) {
  if (!sp)
    return;
  if (sp->pending) {
    sp->freed = 1; /* spool_done finishes it */
    return;
  }
  spool_destroy(sp);
}
