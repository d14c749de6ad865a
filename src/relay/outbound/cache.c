/*
 * outbound/cache: idle connections kept for reuse (see cache.h).
 */
#include "relay/outbound/cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "loop/conn.h"
#include "proto/smtp_client.h"
#include "queue/sched.h"
#include "relay/outbound/dispatch.h"
#include "relay/outbound/trust.h"
#include "relay/outbound/session.h"

/* A connection kept open after its delivery.  Owned by the outbound; ends
 * through on_idle_close. */
struct idle {
  struct outbound *ob;
  struct idle *prev, *next;
  char dest[SCHED_DEST_MAX + 1];
  struct conn *conn;
  struct smtp_client *cli;
  char remote[OB_REMOTE_MAX];
  char stamp[STS_ID_MAX + 8]; /* trust_stamp() of the delivery parking it */
};

static size_t on_idle_read(struct conn *c, const char *data, size_t len) {
  (void)data;
  /* A server speaking while idle is closing on us (421): drop it. */
  conn_close(c, CONN_END_LOCAL);
  return len;
}

static void on_idle_timeout(struct conn *c) {
  struct idle *ic = conn_data(c);
  smtp_client_quit(ic->cli);
  size_t n;
  const char *out = smtp_client_output(ic->cli, &n);
  if (n && conn_write(c, out, n) >= 0)
    smtp_client_output_done(ic->cli, n);
  conn_close_flush(c, CONN_END_LOCAL, 1000);
}

static void unlink_idle(struct outbound *ob, struct idle *ic) {
  if (ic->prev)
    ic->prev->next = ic->next;
  else if (ob->idle == ic)
    ob->idle = ic->next;
  if (ic->next)
    ic->next->prev = ic->prev;
  ic->prev = ic->next = NULL;
  ob->n_idle--;
}

static void on_idle_close(struct conn *c, enum conn_end end, int status) {
  (void)end;
  (void)status;
  struct idle *ic = conn_data(c);
  struct outbound *ob = ic->ob;
  unlink_idle(ob, ic);
  ob->conns--;
  smtp_client_free(ic->cli);
  free(ic);
  session_wake(ob); /* a slot is free */
}

static const struct conn_cbs idle_cbs = {
    .on_read = on_idle_read,
    .on_timeout = on_idle_timeout,
    .on_close = on_idle_close,
};

int cache_park(struct delivery *d) {
  struct outbound *ob = d->ob;
  if (ob->stopping || ob->freeing || !d->conn || conn_closing(d->conn) ||
      ob->n_idle >= ob->cfg->max_outbound)
    return 0;
  int same = 0;
  for (struct idle *i = ob->idle; i; i = i->next)
    same += strcmp(i->dest, d->job->dest) == 0;
  if (same >= ob->cfg->max_per_destination)
    return 0;
  struct idle *ic = calloc(1, sizeof *ic);
  if (!ic)
    return 0;
  ic->ob = ob;
  snprintf(ic->dest, sizeof ic->dest, "%s", d->job->dest);
  snprintf(ic->remote, sizeof ic->remote, "%s", d->remote);
  snprintf(ic->stamp, sizeof ic->stamp, "%s", trust_stamp(d));
  ic->conn = d->conn;
  ic->cli = d->cli;
  ic->next = ob->idle;
  if (ob->idle)
    ob->idle->prev = ic;
  ob->idle = ic;
  ob->n_idle++;
  d->conn = NULL;
  d->cli = NULL;
  conn_set_owner(ic->conn, &idle_cbs, ic);
  conn_set_timeout(ic->conn, CACHE_IDLE_MS);
  return 1;
}

int cache_take(struct outbound *ob, const char *dest, const char *stamp,
               struct conn **conn, struct smtp_client **cli, char *remote,
               size_t remote_cap) {
  for (struct idle *ic = ob->idle; ic; ic = ic->next) {
    if (strcmp(ic->dest, dest) != 0 || conn_closing(ic->conn))
      continue;
    if (stamp && stamp[0] && strcmp(stamp, ic->stamp) != 0)
      continue;
    unlink_idle(ob, ic);
    *conn = ic->conn;
    *cli = ic->cli;
    snprintf(remote, remote_cap, "%s", ic->remote);
    free(ic);
    return 1;
  }
  return 0;
}

int cache_make_room(struct outbound *ob, const char *dest) {
  int per = 0;
  for (struct delivery *d = ob->list; d; d = d->lnext)
    per += d->conn && strcmp(d->job->dest, dest) == 0;
  struct idle *same = NULL, *oldest = NULL;
  for (struct idle *ic = ob->idle; ic; ic = ic->next) {
    int mine = strcmp(ic->dest, dest) == 0;
    per += mine;
    if (conn_closing(ic->conn))
      continue;
    if (mine)
      same = ic;
    oldest = ic; /* new ones are pushed at the head */
  }
  if (per < ob->cfg->max_per_destination && ob->conns < ob->cfg->max_outbound)
    return 1;
  struct idle *victim = per >= ob->cfg->max_per_destination ? same : oldest;
  if (victim)
    on_idle_timeout(victim->conn); /* polite QUIT, then close */
  return 0;
}

void cache_close_all(struct outbound *ob) {
  ob->stopping = 1;
  for (struct idle *ic = ob->idle; ic; ic = ic->next)
    if (!conn_closing(ic->conn))
      on_idle_timeout(ic->conn);
}
