/*
 * fresh: the store's cache of freshly committed messages (see fresh.h).
 */
#include "queue/fresh.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "queue/store_db.h"

#ifndef container_of
#define container_of(ptr, type, member)                                        \
  ((type *)((char *)(ptr)-offsetof(type, member)))
#endif

int fresh_init(struct fresh *f) {
  memset(f, 0, sizeof *f);
  return htab_init(&f->tab, 256);
}

static void entry_free(struct fresh_entry *e) {
  store_msg_clear(&e->msg);
  free(e->bytes);
  free(e);
}

/* Takes e out of the table and the age list and frees it. */
static void entry_remove(struct fresh *f, struct fresh_entry *e) {
  htab_del(&f->tab, &e->node);
  if (e->prev)
    e->prev->next = e->next;
  else
    f->oldest = e->next;
  if (e->next)
    e->next->prev = e->prev;
  else
    f->newest = e->prev;
  f->entries--;
  f->used -= (size_t)e->msg.size;
  entry_free(e);
}

void fresh_fini(struct fresh *f) {
  while (f->oldest)
    entry_remove(f, f->oldest);
  htab_fini(&f->tab);
}

static int fits(const struct fresh *f, size_t bytes) {
  return f->used + f->reserved + bytes <= FRESH_BUDGET &&
         f->entries + 1 <= FRESH_MAX_ENTRIES;
}

int fresh_reserve(struct fresh *f, size_t bytes, uint64_t now_ms) {
  if (bytes == 0 || bytes > FRESH_MSG_MAX)
    return 0;
  while (!fits(f, bytes) && f->oldest &&
         now_ms - f->oldest->added_ms >= FRESH_AGE_MS)
    entry_remove(f, f->oldest);
  if (!fits(f, bytes))
    return 0;
  f->reserved += bytes;
  return 1;
}

void fresh_unreserve(struct fresh *f, size_t bytes) {
  f->reserved -= bytes < f->reserved ? bytes : f->reserved;
}

int fresh_put(struct fresh *f, struct store_msg *msg, char *bytes, size_t hlen,
              uint64_t now_ms) {
  size_t size = (size_t)msg->size;
  fresh_unreserve(f, size);
  struct fresh_entry *e = calloc(1, sizeof *e);
  if (!e) {
    store_msg_clear(msg);
    free(bytes);
    return -ENOMEM;
  }
  e->msg = *msg;
  memset(msg, 0, sizeof *msg);
  /* What the database holds for a new message (store_db's inserts). */
  e->msg.held = 0;
  e->msg.notices = 0;
  for (size_t i = 0; i < e->msg.nrcpts; i++) {
    struct store_rcpt *r = &e->msg.rcpts[i];
    r->idx = (int)i;
    r->state = STORE_RCPT_QUEUED;
    r->attempts = 0;
    r->next_attempt_at = 0;
  }
  e->bytes = bytes;
  e->hlen = hlen;
  e->added_ms = now_ms;
  e->node.key = e->msg.id;
  /* An id is committed once; a stale entry of it cannot exist, but a
   * second one must not shadow the first in the table. */
  struct hnode *old = htab_get(&f->tab, e->msg.id);
  if (old)
    entry_remove(f, container_of(old, struct fresh_entry, node));
  htab_put(&f->tab, &e->node);
  e->prev = f->newest;
  if (f->newest)
    f->newest->next = e;
  else
    f->oldest = e;
  f->newest = e;
  f->entries++;
  f->used += size;
  return 0;
}

const struct fresh_entry *fresh_get(struct fresh *f, const char *id) {
  struct hnode *n = f->entries ? htab_get(&f->tab, id) : NULL;
  if (!n) {
    f->misses++;
    return NULL;
  }
  f->hits++;
  return container_of(n, struct fresh_entry, node);
}

void fresh_drop(struct fresh *f, const char *id) {
  struct hnode *n = f->entries ? htab_get(&f->tab, id) : NULL;
  if (n)
    entry_remove(f, container_of(n, struct fresh_entry, node));
}
