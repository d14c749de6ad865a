/*
 * admin/suspend: `suspend DESTINATION [SECONDS]` and `unsuspend
 * DESTINATION` (CONTRACT §1, §5).  Keeps the operator's suspensions by
 * name, maps each name to the scheduler keys it covers (a recipient
 * domain, the relayhost targets of admin_set_destinations), keeps them in
 * the queue database (store_suspend) and restores them at start; `status`
 * lists them.
 */
#include "relay/admin/internal.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "dns/idna.h"
#include "log.h"
#include "loop/admin_socket.h"
#include "proto/qfilter.h"
#include "proto/routes.h"
#include "queue/sched.h"
#include "queue/store.h"

/* ---- suspend / unsuspend (CONTRACT §1, §5) ----------------------------- */

/*
 * What a destination name covers (CONTRACT §1 suspend: a recipient domain,
 * or a relayhost as written in the configuration).  A name is canonical
 * (routes_dest_canon: lower case) and covers these scheduler keys:
 *   - the name itself when it can be a recipient domain;
 *   - the key of every relayhost target it designates: the global
 *     relayhost (key "relayhost") and each routes_file route with a
 *     relayhost (its key, "#LINE" variants included), when the name is
 *     that key or designates its list (routes_dest_covers: an entry
 *     "[h]:p"/"h:p", its host without the port "[h]"/"h" meaning every
 *     port the list gives it, or the whole list).
 * A name that covers no key is not a destination.
 */
static int target_covers(const struct admin_target *t, const char *name) {
  return !strcmp(t->key, name) || routes_dest_covers(name, t->hosts, t->n);
}

/* An internationalized domain's other form: the A-label form of a name
 * with UTF-8 labels, the UTF-8 form of one with A-labels ("xn--").  Mail
 * is keyed by the domain as its recipients wrote it, so a suspension of
 * either form covers both (CONTRACT §4: they are one domain).  1 with
 * out set, or 0 when the name has no other form. */
static int domain_alt(const char *name, char *out, size_t cap) {
  int ascii = 1;
  for (const char *p = name; *p; p++)
    ascii &= (unsigned char)*p < 0x80;
  int rc = ascii ? (strstr(name, "xn--") ? idna_to_utf8(name, out, cap) : -1)
                 : idna_to_ascii(name, out, cap);
  return rc == 0 && strcmp(out, name) != 0;
}

/* Calls each(a, key, arg) for every key name covers (a key may come more
 * than once: routes that share it); returns how many calls. */
static size_t name_keys(struct admin *a, const char *name,
                        void (*each)(struct admin *, const char *, void *),
                        void *arg) {
  size_t n = 0;
  if (routes_dest_is_domain(name)) {
    char alt[SCHED_DEST_MAX + 1];
    if (each)
      each(a, name, arg);
    n++;
    if (domain_alt(name, alt, sizeof alt)) {
      if (each)
        each(a, alt, arg);
      n++;
    }
  }
  for (size_t i = 0; i < a->ntgt; i++)
    if (target_covers(&a->tgt[i], name)) {
      if (each)
        each(a, a->tgt[i].key, arg);
      n++;
    }
  return n;
}

/* 1 when name covers key. */
static int name_covers_key(const struct admin *a, const char *name,
                           const char *key) {
  char alt[SCHED_DEST_MAX + 1];
  if (routes_dest_is_domain(name) &&
      (!strcmp(name, key) ||
       (domain_alt(name, alt, sizeof alt) && !strcmp(alt, key))))
    return 1;
  for (size_t i = 0; i < a->ntgt; i++)
    if (!strcmp(a->tgt[i].key, key) && target_covers(&a->tgt[i], name))
      return 1;
  return 0;
}

static struct admin_susp *susp_find(struct admin *a, const char *name) {
  int64_t now = sched_now(a->sched);
  for (size_t i = 0; i < a->nsusp; i++)
    if (a->susp[i].until > now && !strcmp(a->susp[i].name, name))
      return &a->susp[i];
  return NULL;
}

/* Sets name's suspension to until (0: none), reusing a slot that is over;
 * 0, -ENOSPC, -ENOMEM. */
static int susp_set(struct admin *a, const char *name, int64_t until) {
  int64_t now = sched_now(a->sched);
  struct admin_susp *free_slot = NULL;
  for (size_t i = 0; i < a->nsusp; i++) {
    struct admin_susp *e = &a->susp[i];
    if (e->until > now && !strcmp(e->name, name)) {
      e->until = until;
      return 0;
    }
    if (e->until <= now && !free_slot)
      free_slot = e;
  }
  if (until <= now)
    return 0;
  if (!free_slot) {
    if (a->nsusp >= ADMIN_SUSP_MAX)
      return -ENOSPC;
    if (a->nsusp == a->capsusp) {
      size_t cap = a->capsusp ? a->capsusp * 2 : 8;
      struct admin_susp *ns = realloc(a->susp, cap * sizeof *ns);
      if (!ns)
        return -ENOMEM;
      a->susp = ns;
      a->capsusp = cap;
    }
    free_slot = &a->susp[a->nsusp++];
  }
  snprintf(free_slot->name, sizeof free_slot->name, "%s", name);
  free_slot->until = until;
  return 0;
}

/* Gives the scheduler key's suspension the latest end among the names
 * that cover it (none: lifted).  Records the first error in *arg. */
static void key_apply(struct admin *a, const char *key, void *arg) {
  int64_t now = sched_now(a->sched), until = 0;
  for (size_t i = 0; i < a->nsusp; i++)
    if (a->susp[i].until > now && a->susp[i].until > until &&
        name_covers_key(a, a->susp[i].name, key))
      until = a->susp[i].until;
  int rc = 0;
  if (until > 0)
    rc = sched_suspend(a->sched, key, until);
  else if (sched_suspended_until(a->sched, key) > 0)
    sched_unsuspend(a->sched, key);
  int *err = arg;
  if (rc < 0 && err && *err == 0)
    *err = rc;
}

/* Brings every key name covers in line with the suspensions; 0 or the
 * first scheduler error. */
static int name_apply(struct admin *a, const char *name) {
  int err = 0;
  name_keys(a, name, key_apply, &err);
  return err;
}

/* Puts name back as it was before a command (prev_until 0: none). */
static void susp_undo(struct admin *a, const char *name, int64_t prev_until) {
  susp_set(a, name, prev_until > sched_now(a->sched) ? prev_until : 0);
  name_apply(a, name);
}

/* The canonical name of a destination argument, with the reason in why
 * when it is none (-1). */
static int dest_name(struct admin *a, const char *arg, char *name, size_t n,
                     const char **why) {
  if (routes_dest_canon(arg, name, n) < 0) {
    *why = "bad destination (empty, too long, or a blank or control "
           "character)";
    return -1;
  }
  if (name_keys(a, name, NULL, NULL) == 0) {
    *why = "bad destination (not a configured relayhost or route, nor a "
           "domain name)";
    return -1;
  }
  return 0;
}

static void on_suspend_stored(struct store *st, int status, void *data) {
  struct admin_req *r = data;
  struct admin *a = r->a;
  (void)st;
  if (status < 0) {
    /* Not durable: put the scheduler back as it was. */
    if (!a->stopped)
      susp_undo(a, r->dest, r->prev_until);
    char msg[96];
    snprintf(msg, sizeof msg, "suspend failed (%s)", strerror(-status));
    adm_reply_error(r->c, msg, r->dest);
  } else {
    adm_reply_ok(r->c);
  }
  adm_req_finish(r);
}

void adm_cmd_suspend(struct admin *a, struct admin_client *c, char **argv,
                     int argc) {
  char name[SCHED_DEST_MAX + 1];
  const char *why;
  int64_t secs = ADMIN_SUSPEND_DEFAULT_S;
  if (dest_name(a, argv[0], name, sizeof name, &why) < 0) {
    adm_reply_error(c, why, argv[0]);
    admin_socket_end(c);
    return;
  }
  if (argc > 1 && qfilter_duration(argv[1], &secs) < 0) {
    adm_reply_error(c, "bad duration (seconds)", argv[1]);
    admin_socket_end(c);
    return;
  }
  struct admin_req *r = adm_start_req(a, c, NULL);
  if (!r)
    return;
  snprintf(r->dest, sizeof r->dest, "%s", name);
  const struct admin_susp *old = susp_find(a, name);
  r->prev_until = old ? old->until : 0;
  int64_t until = sched_now(a->sched) + secs * 1000;
  /* In memory at once (no new attempt from now on), then durable. */
  int rc = susp_set(a, name, until);
  if (rc == 0)
    rc = name_apply(a, name);
  if (rc == 0)
    rc = store_suspend(a->st, name, (until + 999) / 1000, on_suspend_stored, r);
  if (rc < 0) {
    susp_undo(a, name, r->prev_until);
    adm_reply_error(
        c, rc == -ENOSPC ? "too many suspended destinations" : "suspend failed",
        argv[0]);
    adm_req_finish(r);
    return;
  }
  struct log_line l;
  log_begin(&l, LOG_INFO, "admin_suspend");
  log_str(&l, "destination", name);
  log_int(&l, "seconds", secs);
  log_end(&l);
}

static void on_unsuspend_stored(struct store *st, int status, void *data) {
  struct admin_req *r = data;
  struct admin *a = r->a;
  (void)st;
  if (status < 0) {
    char msg[96];
    snprintf(msg, sizeof msg, "unsuspend failed (%s)", strerror(-status));
    adm_reply_error(r->c, msg, r->dest);
  } else {
    if (!a->stopped)
      susp_undo(a, r->dest, 0);
    adm_reply_ok(r->c);
  }
  adm_req_finish(r);
}

void adm_cmd_unsuspend(struct admin *a, struct admin_client *c, char **argv,
                       int argc) {
  (void)argc;
  char name[SCHED_DEST_MAX + 1];
  if (routes_dest_canon(argv[0], name, sizeof name) < 0 ||
      !susp_find(a, name)) {
    adm_reply_error(c, "not suspended", argv[0]);
    admin_socket_end(c);
    return;
  }
  struct admin_req *r = adm_start_req(a, c, NULL);
  if (!r)
    return;
  snprintf(r->dest, sizeof r->dest, "%s", name);
  int rc = store_suspend(a->st, name, 0, on_unsuspend_stored, r);
  if (rc < 0) {
    adm_reply_error(c, "unsuspend failed", argv[0]);
    adm_req_finish(r);
    return;
  }
  struct log_line l;
  log_begin(&l, LOG_INFO, "admin_unsuspend");
  log_str(&l, "destination", name);
  log_end(&l);
}

/* `"suspended": [{"destination", "until"}]` of status (CONTRACT §5): the
 * names as the operator gave them (canonical), in name order; NULL on
 * ENOMEM. */
static int susp_cmp(const void *x, const void *y) {
  return strcmp((*(const struct admin_susp *const *)x)->name,
                (*(const struct admin_susp *const *)y)->name);
}

json_t *adm_suspended_json(struct admin *a) {
  json_t *arr = json_array();
  if (!arr || a->stopped || a->nsusp == 0)
    return arr;
  const struct admin_susp **ss = calloc(a->nsusp, sizeof *ss);
  if (!ss) {
    json_decref(arr);
    return NULL;
  }
  int64_t now = sched_now(a->sched);
  size_t n = 0;
  for (size_t i = 0; i < a->nsusp; i++)
    if (a->susp[i].until > now)
      ss[n++] = &a->susp[i];
  if (n > 1)
    qsort(ss, n, sizeof *ss, susp_cmp);
  int bad = 0;
  for (size_t i = 0; i < n && !bad; i++) {
    const char *d = ss[i]->name;
    json_t *o =
        json_pack("{s:o, s:o}", "destination", adm_jstr_safe(d, strlen(d)),
                  "until", adm_jtime((ss[i]->until + 999) / 1000));
    bad = !o || json_array_append_new(arr, o) < 0;
  }
  free(ss);
  if (bad) {
    json_decref(arr);
    return NULL;
  }
  return arr;
}

void adm_free_targets(struct admin_target *t, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(t[i].hosts);
  free(t);
}

/* ---- restored at start; targets set by the owner ----------------------- */

static void on_susp_tidied(struct store *st, int status, void *data) {
  (void)st;
  (void)status;
  (void)data;
}

/* Suspensions kept in the queue database (CONTRACT §1: they survive a
 * restart) go back into the scheduler before the queue loads; those whose
 * time is over are dropped from the database.  A name that covers a
 * relayhost takes effect when admin_set_destinations() says what it is. */
void adm_restore_suspensions(struct admin *a) {
  const struct store_suspension *ss;
  size_t n = store_suspensions_at_open(a->st, &ss);
  int64_t now = sched_now(a->sched);
  for (size_t i = 0; i < n; i++) {
    int64_t until = ss[i].until * 1000;
    char name[SCHED_DEST_MAX + 1];
    int rc =
        until > now && routes_dest_canon(ss[i].dest, name, sizeof name) == 0
            ? susp_set(a, name, until)
            : -1;
    if (rc == 0)
      rc = name_apply(a, name);
    if (rc == 0) {
      struct log_line l;
      log_begin(&l, LOG_INFO, "suspended");
      log_str(&l, "destination", name);
      log_int(&l, "remaining_s", (until - now) / 1000);
      log_end(&l);
    } else if (store_suspend(a->st, ss[i].dest, 0, on_susp_tidied, NULL) < 0) {
      log_msg(LOG_WARN, "admin", "cannot drop an old suspension");
    }
  }
}

/* Adds a target (hosts copied); 0 or -ENOMEM. */
static int target_add(struct admin_target **tgt, size_t *n, size_t *cap,
                      const char *key, const struct route_host *hosts, int nh) {
  if (*n == *cap) {
    size_t c = *cap ? *cap * 2 : 8;
    struct admin_target *nt = realloc(*tgt, c * sizeof *nt);
    if (!nt)
      return -ENOMEM;
    *tgt = nt;
    *cap = c;
  }
  struct admin_target *t = &(*tgt)[*n];
  t->hosts = malloc((size_t)nh * sizeof *t->hosts);
  if (!t->hosts)
    return -ENOMEM;
  memcpy(t->hosts, hosts, (size_t)nh * sizeof *t->hosts);
  t->n = nh;
  snprintf(t->key, sizeof t->key, "%s", key);
  (*n)++;
  return 0;
}

static void key_reapply(struct admin *a, const char *key, void *arg) {
  (void)arg;
  key_apply(a, key, NULL);
}

void admin_set_destinations(struct admin *a, const struct config *cfg,
                            const struct routes *rs) {
  struct admin_target *tgt = NULL;
  size_t n = 0, cap = 0;
  int bad = 0;
  if (cfg && cfg->n_relayhost > 0) {
    struct route_host h[CONFIG_MAX_LIST];
    int nh = 0;
    for (int i = 0; i < cfg->n_relayhost && nh < CONFIG_MAX_LIST; i++, nh++) {
      snprintf(h[nh].host, sizeof h[nh].host, "%s", cfg->relayhost[i].host);
      h[nh].port = cfg->relayhost[i].port;
      h[nh].mx_lookup = cfg->relayhost[i].mx_lookup;
    }
    bad |= target_add(&tgt, &n, &cap, "relayhost", h, nh) < 0;
  }
  for (size_t i = 0; rs && i < rs->n && !bad; i++)
    if (rs->r[i].n_hosts > 0)
      bad |= target_add(&tgt, &n, &cap, rs->r[i].key, rs->r[i].hosts,
                        rs->r[i].n_hosts) < 0;
  if (bad) {
    adm_free_targets(tgt, n);
    log_msg(LOG_WARN, "admin",
            "out of memory: suspend keeps the old relayhost names");
    return;
  }
  struct admin_target *old = a->tgt;
  size_t nold = a->ntgt;
  a->tgt = tgt;
  a->ntgt = n;
  /* Keys the old targets had and the new ones cover: in line with the
   * suspensions under the new names (never lifted in between). */
  int64_t now = sched_now(a->sched);
  int any = 0;
  for (size_t i = 0; i < a->nsusp; i++)
    any |= a->susp[i].until > now;
  if (any) {
    for (size_t i = 0; i < nold; i++)
      key_apply(a, old[i].key, NULL);
    for (size_t i = 0; i < a->nsusp; i++)
      if (a->susp[i].until > now)
        name_keys(a, a->susp[i].name, key_reapply, NULL);
  }
  adm_free_targets(old, nold);
}
