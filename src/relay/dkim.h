/*
 * dkim (relay): DKIM signing of inbound messages (CONTRACT §3a; RFC 6376,
 * RFC 8463).  Owns the signing keys of dkim_sign (read and checked at
 * start-up, read again on SIGHUP) and the signing jobs in flight.
 *
 * A message is signed once, between end of data and its commit: the job
 * runs on libuv's thread pool (never on the loop thread), reads the
 * caller's prefix and the spooled body (store_spool_pread), canonicalizes
 * them as they will be sent (proto/dkim: the outbound encoder's folding
 * included), hashes the body as a stream (memory bounded whatever the
 * size) and signs with OpenSSL (EVP_DigestSign: RSA PKCS#1 v1.5 over
 * SHA-256; Ed25519 over the SHA-256 of the header data, RFC 8463 §3).  A
 * message whose single From: address has a listed domain is signed with
 * every key of that domain; others pass unsigned.
 *
 * Keys: PEM, PKCS#8 or traditional RSA; RSA or Ed25519 only; RSA under
 * 1024 bits is a configuration error, under 2048 bits a warning.  A job
 * keeps the key set it started with, so a reload never disturbs it.
 *
 * Callbacks: when dkim_sign() returns 0 its callback runs exactly once,
 * from the loop, never from inside dkim_sign() or dkim_cancel().  When it
 * returns an error the callback never runs and the body stays the
 * caller's.
 */
#ifndef MAILHOP_RELAY_DKIM_H
#define MAILHOP_RELAY_DKIM_H

#include <stddef.h>
#include <uv.h>

struct config;
struct store_spool;
struct dkim;
struct dkim_req;

/* Smallest RSA modulus accepted, and the smallest without a warning. */
#define DKIM_RSA_MIN_BITS 1024
#define DKIM_RSA_WARN_BITS 2048

/* What a finished job hands back; valid only during the callback. */
struct dkim_signed {
  /* the DKIM-Signature field(s) followed by the caller's prefix: the new
   * prefix to commit (equal to the caller's when not signed) */
  const char *prefix;
  size_t prefix_len;
  const char *domains;      /* "d1,d2" signing domains; "" when unsigned */
  const char *note;         /* why a From-matching message was not signed,
                               or NULL */
  struct store_spool *body; /* the caller's again (may be NULL) */
};

/* status: 0 (signed or not, see res->domains), -ECANCELED after
 * dkim_cancel(), the spool's error when it could not be read (-ENOSPC when
 * it had failed to take the data, -EIO), -EIO when signing failed,
 * -ENOMEM.  res is never NULL; only res->body is set when status < 0. */
typedef void (*dkim_sign_cb)(struct dkim_req *req, int status,
                             const struct dkim_signed *res, void *data);

/*
 * Reads every key of cfg->dkim_sign (blocking: start-up, before the loop
 * runs) and, when warn is set, logs a warning for each RSA key under 2048
 * bits (then also on each reload).  Returns the
 * signer, or NULL with "dkim_sign: FILE: reason" in err (a key that cannot
 * be read or parsed, a type other than RSA/Ed25519, RSA under 1024 bits).
 */
struct dkim *dkim_new(uv_loop_t *loop, const struct config *cfg, int warn,
                      char *err, size_t errlen);

/* SIGHUP: reads the key files again (blocking, small files).  On error
 * returns -1 with err set and the old keys stay; 0 on success. */
int dkim_reload(struct dkim *d, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Frees the signer; jobs in flight keep their keys until they finish. */
void dkim_free(struct dkim *d);

/* 1 when some key signs for domain (case-insensitive). */
int dkim_has_domain(const struct dkim *d, const char *domain);

/* dkim_sign() flags */
/* Keys of a parent domain of the From: domain sign too, the longest match
 * winning (bounces: From: MAILER-DAEMON@hostname is signed by the key of
 * hostname's domain, aligned under DMARC's relaxed rule). */
#define DKIM_SIGN_PARENT 0x1

/*
 * Starts signing the message prefix[0..prefix_len) + body (the spool;
 * may be NULL).  The prefix is copied; the body is lent to the job until
 * the callback hands it back (do not append to it or free it meanwhile).
 * If reqp is not NULL it receives a handle for dkim_cancel(), valid until
 * the callback runs.  Returns 0 or -ENOMEM (callback not run).
 */
int dkim_sign(struct dkim *d, const char *prefix, size_t prefix_len,
              struct store_spool *body, unsigned flags, dkim_sign_cb cb,
              void *data, struct dkim_req **reqp)
    __attribute__((warn_unused_result));

/* The owner is going away: the callback still runs once, later, with
 * -ECANCELED (a job already running finishes first). */
void dkim_cancel(struct dkim_req *req);

#endif
