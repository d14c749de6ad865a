/*
 * sched/suspend: destination suspensions (sched_suspend), a table by
 * destination key kept whether or not the destination has mail, copied
 * into the destination's state when it is known.
 */
#include "queue/sched/internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void sch_susp_free_all(struct sched *s) {
  for (size_t i = 0; s->susp.b && i < s->susp.nb; i++)
    for (struct hnode *n = s->susp.b[i], *next; n; n = next) {
      next = n->next;
      free(n);
    }
  free(s->susp.b);
  s->susp.b = NULL;
}

/* Forgets suspensions whose time is over (admin calls only: O(n)). */
static void susp_prune(struct sched *s, int64_t now) {
  for (size_t i = 0; s->susp.b && i < s->susp.nb; i++)
    for (struct hnode *n = s->susp.b[i], *next; n; n = next) {
      next = n->next;
      if (((struct ssusp *)n)->until <= now) {
        htab_del(&s->susp, n);
        free(n);
      }
    }
}

/* Applies a changed suspension to the destination, if it is known. */
static void susp_apply(struct sched *s, const char *dest, int64_t until) {
  struct sdest *d = (struct sdest *)htab_get(&s->dests, dest);
  if (!d)
    return;
  d->suspended_until = until;
  sch_dest_update(s, d);
  sched_kick(s);
}

int sched_suspend(struct sched *s, const char *dest, int64_t until) {
  int64_t now = sch_now_ms(s);
  if (!dest || !*dest || strlen(dest) > SCHED_DEST_MAX || until <= now)
    return -EINVAL;
  if (!s->susp.b && htab_init(&s->susp, 16) < 0)
    return -ENOMEM;
  susp_prune(s, now);
  struct ssusp *su = (struct ssusp *)htab_get(&s->susp, dest);
  if (!su) {
    if (s->susp.n >= SCHED_SUSPEND_MAX)
      return -ENOSPC;
    size_t len = strlen(dest);
    su = calloc(1, sizeof *su + len + 1);
    if (!su)
      return -ENOMEM;
    memcpy(su->key, dest, len + 1);
    su->h.key = su->key;
    htab_put(&s->susp, &su->h);
  }
  su->until = until;
  susp_apply(s, dest, until);
  return 0;
}

int sched_unsuspend(struct sched *s, const char *dest) {
  int64_t now = sch_now_ms(s);
  if (!dest || !s->susp.b)
    return -ENOENT;
  struct ssusp *su = (struct ssusp *)htab_get(&s->susp, dest);
  int active = su && su->until > now;
  if (su) {
    htab_del(&s->susp, &su->h);
    free(su);
  }
  susp_apply(s, dest, 0);
  return active ? 0 : -ENOENT;
}

void sched_suspensions_hold(struct sched *s, int hold) {
  if (s->susp_off == !hold)
    return;
  s->susp_off = !hold;
  for (size_t i = 0; i < s->dests.nb; i++)
    for (struct hnode *h = s->dests.b[i]; h; h = h->next)
      sch_dest_update(s, (struct sdest *)h);
  sched_kick(s);
}

int64_t sched_suspended_until(const struct sched *s, const char *dest) {
  if (!dest || !s->susp.b)
    return 0;
  const struct ssusp *su = (const struct ssusp *)htab_get(&s->susp, dest);
  return su && su->until > sch_now_ms(s) ? su->until : 0;
}

size_t sched_suspensions(struct sched *s, struct sched_suspension *out,
                         size_t max) {
  int64_t now = sch_now_ms(s);
  susp_prune(s, now);
  size_t k = 0;
  for (size_t i = 0; s->susp.b && i < s->susp.nb; i++)
    for (const struct hnode *n = s->susp.b[i]; n; n = n->next) {
      const struct ssusp *su = (const struct ssusp *)n;
      if (k < max) {
        out[k].dest = su->key;
        out[k].until = su->until;
      }
      k++;
    }
  return k;
}
