/*
 * store_db_internal.h: what store_db.c shares with store_db_load.c, and
 * nothing else includes (store_db.h is the module's interface).
 */
#ifndef MAILHOP_QUEUE_STORE_DB_INTERNAL_H
#define MAILHOP_QUEUE_STORE_DB_INTERNAL_H

#include <sqlite3.h>

#include "queue/store_db.h"

/* The writer connection (loop thread, before the pool runs any job). */
sqlite3 *sdb_writer(struct store_db *st);

/* One integer from a one-row query into *out: an SQLite result code. */
int sdb_int(sqlite3 *db, const char *sql, long long *out);

#endif
