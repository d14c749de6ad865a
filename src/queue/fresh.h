/*
 * fresh: the store's cache of freshly committed messages (issue 21).
 *
 * A message committed by this process is almost always read back within
 * milliseconds: its envelope by the first delivery attempt (store_show),
 * its bytes by the body stream (store_body_read).  Both would be a
 * reader-lane job each — a thread-pool hand-off, a read transaction and,
 * since every write invalidates the reader's page cache, the message's
 * pages read again from the WAL.  The store keeps the committed envelope
 * and bytes here instead, and answers those reads from memory.
 *
 * It is a cache of what IS in the database, never a substitute: an entry
 * is added only after its commit is durable, and dropped as soon as any
 * writer request naming the message is submitted (update, delete, held,
 * bulk) — or never added, when such a request came while the commit was
 * still in flight (store.c keeps those commits by id) — so what it
 * answers is exactly the committed state.  A miss just means the read
 * goes to the database, as before.
 *
 * Bounds: at most FRESH_BUDGET bytes of message bytes (reserved when the
 * commit is submitted, so commits in flight count), FRESH_MSG_MAX bytes
 * per message and FRESH_MAX_ENTRIES entries.  A commit that does not fit
 * is simply not cached.  To make room, entries older than FRESH_AGE_MS are
 * evicted oldest first (mail that waits that long — a destination in
 * backoff, a held queue — is not fresh); younger ones are kept, because
 * delivery reads messages in arrival order and evicting the oldest would
 * turn every read of a backlog into a miss.  Measured (issue 21): 16 MiB
 * gives a 100 KiB relay run nearly all of what 32 MiB or 64 MiB give.
 *
 * Loop thread only.  Owns every entry (envelope strings and bytes).
 */
#ifndef MAILHOP_QUEUE_FRESH_H
#define MAILHOP_QUEUE_FRESH_H

#include <stddef.h>
#include <stdint.h>

#include "queue/htab.h"
#include "queue/store.h"

#define FRESH_BUDGET (16u * 1024 * 1024) /* bytes of messages */
#define FRESH_MSG_MAX (1024u * 1024)     /* bytes per message */
#define FRESH_MAX_ENTRIES 16384u         /* plus commits in flight */
#define FRESH_AGE_MS 5000u

struct fresh_entry {
  struct hnode node;    /* key: msg.id */
  struct store_msg msg; /* as committed: every recipient queued */
  char *bytes;          /* msg.size bytes: prefix + body */
  size_t hlen;          /* header section: bytes[0..hlen) (<= 64 KiB) */
  uint64_t added_ms;
  struct fresh_entry *prev, *next; /* age order, oldest first */
};

struct fresh {
  struct htab tab;
  struct fresh_entry *oldest, *newest;
  size_t entries;
  size_t used;     /* bytes of the entries' messages */
  size_t reserved; /* bytes reserved by commits in flight */
  uint64_t hits, misses;
};

/* 0 or -ENOMEM. */
int fresh_init(struct fresh *f);
/* Frees every entry and the table. */
void fresh_fini(struct fresh *f);

/* Reserves room for a message of `bytes` before its commit is submitted,
 * evicting entries older than FRESH_AGE_MS at now_ms if that makes room.
 * Returns 1 when reserved (the commit then ends in fresh_put() or
 * fresh_unreserve() with the same bytes), 0 when it does not fit. */
int fresh_reserve(struct fresh *f, size_t bytes, uint64_t now_ms);

/* Gives back a reservation whose commit failed or kept no bytes. */
void fresh_unreserve(struct fresh *f, size_t bytes);

/* Adds a durable message, turning its reservation (msg->size bytes) into
 * an entry.  Takes ownership of *msg's contents (msg is zeroed) and of
 * bytes (malloc'd, msg->size long).  On -ENOMEM nothing is added and both
 * are freed; the reservation is given back either way. */
int fresh_put(struct fresh *f, struct store_msg *msg, char *bytes, size_t hlen,
              uint64_t now_ms);

/* The entry of id, or NULL (counted as a hit or a miss).  Valid until the
 * next fresh_* call that changes f. */
const struct fresh_entry *fresh_get(struct fresh *f, const char *id);

/* Drops id's entry, if any: a writer request names the message. */
void fresh_drop(struct fresh *f, const char *id);

#endif
