/*
 * htab: the string-keyed hash table (see htab.h).
 */
#include "queue/htab.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static uint32_t hash_str(const char *s) {
  uint32_t h = 2166136261u;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 16777619u;
  return h;
}

int htab_init(struct htab *t, size_t nb) {
  t->b = calloc(nb, sizeof *t->b);
  t->nb = nb;
  t->n = 0;
  return t->b ? 0 : -ENOMEM;
}

void htab_fini(struct htab *t) {
  free(t->b);
  t->b = NULL;
  t->nb = t->n = 0;
}

struct hnode *htab_get(const struct htab *t, const char *key) {
  uint32_t h = hash_str(key);
  for (struct hnode *n = t->b[h & (t->nb - 1)]; n; n = n->next)
    if (n->hash == h && strcmp(n->key, key) == 0)
      return n;
  return NULL;
}

static void htab_grow(struct htab *t) {
  size_t nb = t->nb * 2;
  struct hnode **b = calloc(nb, sizeof *b);
  if (!b)
    return; /* longer chains, still correct */
  for (size_t i = 0; i < t->nb; i++) {
    struct hnode *n = t->b[i], *next;
    for (; n; n = next) {
      next = n->next;
      n->next = b[n->hash & (nb - 1)];
      b[n->hash & (nb - 1)] = n;
    }
  }
  free(t->b);
  t->b = b;
  t->nb = nb;
}

void htab_put(struct htab *t, struct hnode *n) {
  if (t->n >= t->nb)
    htab_grow(t);
  n->hash = hash_str(n->key);
  struct hnode **p = &t->b[n->hash & (t->nb - 1)];
  n->next = *p;
  *p = n;
  t->n++;
}

void htab_del(struct htab *t, struct hnode *n) {
  struct hnode **p = &t->b[n->hash & (t->nb - 1)];
  while (*p != n)
    p = &(*p)->next;
  *p = n->next;
  t->n--;
}
