/*
 * htab: a string-keyed hash table with intrusive nodes (chained,
 * power-of-two buckets, doubling when it holds as many nodes as buckets;
 * never shrinks).  Used by the scheduler (messages, destinations,
 * suspensions, rate overrides) and the store's fresh-message cache.
 *
 * Owns only its bucket array: nodes are the caller's, embedded in its own
 * structures, and their keys must stay unchanged while they are in the
 * table.  Loop thread only (no locking).
 */
#ifndef MAILHOP_QUEUE_HTAB_H
#define MAILHOP_QUEUE_HTAB_H

#include <stddef.h>
#include <stdint.h>

struct hnode {
  struct hnode *next;
  const char *key; /* set by the caller before htab_put() */
  uint32_t hash;
};

struct htab {
  struct hnode **b;
  size_t nb; /* power of two */
  size_t n;
};

/* nb buckets (a power of two); 0 or -ENOMEM. */
int htab_init(struct htab *t, size_t nb);
/* Frees the bucket array (not the nodes). */
void htab_fini(struct htab *t);
/* The node with this key, or NULL. */
struct hnode *htab_get(const struct htab *t, const char *key);
/* Adds n (n->key set by the caller; not already in t).  When growing the
 * buckets fails, chains get longer: still correct. */
void htab_put(struct htab *t, struct hnode *n);
/* Takes n (in t) out of t; the caller frees it. */
void htab_del(struct htab *t, struct hnode *n);

#endif
