/*
 * epoch.h — the order of purges against answers in flight: an IdP answer requested before a purge
 * that covers it is never kept in the cache (it may still answer the one request that asked: the
 * IdP said so then).
 *
 * A process-wide sequence numbers the purges. A purge first stamps what it covers — everything, or
 * the slot of a user name's hash, or the slot of a credential digest's hash — with a new number,
 * and only then touches the segment. An IdP call takes the current number when it is sent
 * (epoch_now); when its answer has been stored, epoch_covered says whether a purge stamped since
 * covers the answer's user or credential, and the caller then deletes what it stored. Either the
 * stamp is seen there, or the purge came after the store and removes the answer itself (both sides
 * use sequentially consistent atomics). Slots are shared by hash: a collision costs one needless
 * IdP call, never an answer kept past a purge.
 *
 * Thread-safe, lock-free; no allocation after epoch_new.
 */
#ifndef AUTHCACHE_EPOCH_H
#define AUTHCACHE_EPOCH_H

#include <stddef.h>
#include <stdint.h>

#include "shm.h"

struct epochs;

struct epochs *epoch_new(void); /* NULL: out of memory */
void epoch_free(struct epochs *e);

/* The number to compare later stamps with: take it when the IdP call is sent. */
uint64_t epoch_now(struct epochs *e);

/* Stamp a purge (before it touches the segment). A user name counts up to SHM_MAX_USER bytes, as
 * the segment keeps it. */
void epoch_purge_user(struct epochs *e, const char *user, size_t len);
void epoch_purge_cred(struct epochs *e, const uint8_t cred[SHM_CRED_LEN]);
void epoch_purge_all(struct epochs *e);

/* 1 if a purge stamped after `since` covers the user (len 0: none) or the credential digest
 * (NULL: none), or everything; else 0. */
int epoch_covered(struct epochs *e, uint64_t since, const char *user, size_t len,
                  const uint8_t cred[SHM_CRED_LEN]);

#endif
