/*
 * store_db_load: what store_db_open()'s caller reads once, at open, on the
 * loop thread before it runs: the largest id, the suspensions, the MTA-STS
 * policies and TLS-RPT counts (store_db.h).  Split from store_db.c, which
 * keeps the schema, the statements and the pool work.
 */
#include "queue/store_db.h"
#include "queue/store_db_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int store_db_max_id(struct store_db *st, char out[STORE_ID_SIZE]) {
  sqlite3 *db = sdb_writer(st);
  sqlite3_stmt *s;
  out[0] = '\0';
  int rc = sqlite3_prepare_v2(db, "SELECT max(id) FROM messages", -1, &s, NULL);
  if (rc != SQLITE_OK)
    return -EIO;
  rc = sqlite3_step(s);
  if (rc == SQLITE_ROW && sqlite3_column_type(s, 0) != SQLITE_NULL)
    snprintf(out, STORE_ID_SIZE, "%s", (const char *)sqlite3_column_text(s, 0));
  sqlite3_finalize(s);
  return rc == SQLITE_ROW ? 0 : -EIO;
}

/* Room for one more element in *arr (n used of *cap, elem bytes each),
 * doubling from 8.  0, or -ENOMEM with *arr unchanged. */
static int grow(void *arr, size_t n, size_t *cap, size_t elem) {
  if (n < *cap)
    return 0;
  size_t ncap = *cap ? *cap * 2 : 8;
  void *a = realloc(*(void **)arr, ncap * elem);
  if (!a)
    return -ENOMEM;
  *(void **)arr = a;
  *cap = ncap;
  return 0;
}

static int susp_cmp(const void *a, const void *b) {
  return strcmp(((const struct store_suspension *)a)->dest,
                ((const struct store_suspension *)b)->dest);
}

int store_db_suspensions(struct store_db *st, struct store_suspension **out,
                         size_t *n) {
  sqlite3 *db = sdb_writer(st);
  *out = NULL;
  *n = 0;
  sqlite3_stmt *s;
  if (sqlite3_prepare_v2(db, "SELECT dest, until FROM suspensions", -1, &s,
                         NULL) != SQLITE_OK)
    return -EIO;
  int rc, r = 0;
  size_t cap = 0;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    const unsigned char *d = sqlite3_column_text(s, 0);
    if (!d)
      continue;
    if ((r = grow(out, *n, &cap, sizeof **out)) < 0)
      break;
    snprintf((*out)[*n].dest, sizeof(*out)[*n].dest, "%s", (const char *)d);
    (*out)[*n].until = sqlite3_column_int64(s, 1);
    (*n)++;
  }
  if (r == 0 && rc != SQLITE_DONE)
    r = -EIO;
  sqlite3_finalize(s);
  if (r < 0) {
    free(*out);
    *out = NULL;
    *n = 0;
    return r;
  }
  if (*n > 1)
    qsort(*out, *n, sizeof **out, susp_cmp);
  return 0;
}

int store_db_trust(struct store_db *st, struct store_sts_row **sts,
                   size_t *nsts, struct store_rpt_row **rpt, size_t *nrpt,
                   int64_t *period_start) {
  sqlite3 *db = sdb_writer(st);
  *sts = NULL;
  *rpt = NULL;
  *nsts = *nrpt = 0;
  *period_start = 0;
  long long v = 0;
  if (sdb_int(db, "SELECT coalesce(max(start), 0) FROM tlsrpt_period", &v) !=
      SQLITE_OK)
    return -EIO;
  *period_start = v;
  sqlite3_stmt *s;
  int rc, r = 0;
  size_t cap = 0;
  if (sqlite3_prepare_v2(db,
                         "SELECT domain, id, fetched_at, expires_at, policy"
                         " FROM sts_policies",
                         -1, &s, NULL) != SQLITE_OK)
    return -EIO;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    const unsigned char *d = sqlite3_column_text(s, 0);
    const unsigned char *id = sqlite3_column_text(s, 1);
    const void *pol = sqlite3_column_blob(s, 4);
    int plen = sqlite3_column_bytes(s, 4);
    if (!d || !id || !pol || plen < 0)
      continue;
    if ((r = grow(sts, *nsts, &cap, sizeof **sts)) < 0)
      break;
    struct store_sts_row *row = &(*sts)[*nsts];
    row->policy = malloc((size_t)plen + 1);
    if (!row->policy) {
      r = -ENOMEM;
      break;
    }
    memcpy(row->policy, pol, (size_t)plen);
    row->policy[plen] = '\0';
    snprintf(row->domain, sizeof row->domain, "%s", (const char *)d);
    snprintf(row->id, sizeof row->id, "%s", (const char *)id);
    row->fetched_at = sqlite3_column_int64(s, 2);
    row->expires_at = sqlite3_column_int64(s, 3);
    (*nsts)++;
  }
  if (r == 0 && rc != SQLITE_DONE)
    r = -EIO;
  sqlite3_finalize(s);
  cap = 0;
  if (r == 0 && sqlite3_prepare_v2(db,
                                   "SELECT domain, policy, result, count"
                                   " FROM tlsrpt_counts",
                                   -1, &s, NULL) != SQLITE_OK)
    r = -EIO;
  else if (r == 0) {
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      const unsigned char *d = sqlite3_column_text(s, 0);
      const unsigned char *p = sqlite3_column_text(s, 1);
      const unsigned char *res = sqlite3_column_text(s, 2);
      if (!d || !p || !res)
        continue;
      if ((r = grow(rpt, *nrpt, &cap, sizeof **rpt)) < 0)
        break;
      struct store_rpt_row *row = &(*rpt)[*nrpt];
      snprintf(row->domain, sizeof row->domain, "%s", (const char *)d);
      snprintf(row->policy, sizeof row->policy, "%s", (const char *)p);
      snprintf(row->result, sizeof row->result, "%s", (const char *)res);
      row->count = sqlite3_column_int64(s, 3);
      (*nrpt)++;
    }
    if (r == 0 && rc != SQLITE_DONE)
      r = -EIO;
    sqlite3_finalize(s);
  }
  if (r < 0) {
    for (size_t i = 0; i < *nsts; i++)
      free((*sts)[i].policy);
    free(*sts);
    free(*rpt);
    *sts = NULL;
    *rpt = NULL;
    *nsts = *nrpt = 0;
  }
  return r;
}
