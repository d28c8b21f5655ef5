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
 * The same stamps also carry the wall time of the purge, so that a held answer it covers can be
 * refused at once (epoch_hides: confirmed no later than the stamp) while the segment is still being
 * purged off the request path. A step back of the wall clock after a purge only hides more: answers
 * confirmed within the step cost one IdP call each, never an answer kept past a purge.
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

/* Stamp a purge at wall time now_ms (before it touches the segment). A user name counts up to
 * SHM_MAX_USER bytes, as the segment keeps it. */
void epoch_purge_user(struct epochs *e, const char *user, size_t len, int64_t now_ms);
void epoch_purge_cred(struct epochs *e, const uint8_t cred[SHM_CRED_LEN], int64_t now_ms);
void epoch_purge_all(struct epochs *e, int64_t now_ms);

/* 1 if a purge stamped after `since` covers the user (len 0: none) or the credential digest
 * (NULL: none), or everything; else 0. */
int epoch_covered(struct epochs *e, uint64_t since, const char *user, size_t len,
                  const uint8_t cred[SHM_CRED_LEN]);

/* The wall time of the latest purge that covers the user, the credential digest or everything (0:
 * none). A held answer confirmed at or before it is purged, or about to be: not to be served. An
 * answer stored later (its call sent after that purge) is confirmed after it, at least 1 ms, so
 * that it is not hidden by a purge of the same millisecond. On the hit path: two hashes, three
 * loads. */
int64_t epoch_last_ms(struct epochs *e, const char *user, size_t len,
                      const uint8_t cred[SHM_CRED_LEN]);

static inline int epoch_hides(struct epochs *e, int64_t confirmed_ms, const char *user, size_t len,
                              const uint8_t cred[SHM_CRED_LEN])
{
    return epoch_last_ms(e, user, len, cred) >= confirmed_ms;
}

#endif
