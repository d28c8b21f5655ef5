/*
 * epoch.h — the order of purges against answers in flight: an IdP answer requested before a purge
 * that covers it is never kept in the cache (it may still answer the one request that asked: the
 * IdP said so then).
 *
 * A process-wide sequence numbers the purges. A purge first stamps what it covers — everything, a
 * user name (the slot of its hash), or a credential digest — with a new number, and only then
 * touches the segment. An IdP call takes the current number when it is sent (epoch_now); when its
 * answer has been stored, epoch_covered says whether a purge stamped since covers the answer's user
 * or credential, and the caller then deletes what it stored. Either the stamp is seen there, or the
 * purge came after the store and removes the answer itself (both sides use sequentially consistent
 * atomics).
 *
 * The same stamps also carry the wall time of the purge, so that a held answer it covers can be
 * refused at once (epoch_hides: confirmed no later than the stamp) while the segment is still being
 * purged off the request path. A step back of the wall clock after a purge only hides more: answers
 * confirmed within the step cost one IdP call each, never an answer kept past a purge.
 *
 * Credential digests are stamped exactly: the digest is kept beside its stamp, so the stamp hides
 * the answers of that credential and no other, until a walk of the segment that began after the
 * stamp has removed them (epoch_pending lists what waits for a walk, epoch_walked ends it). Then
 * the stamp's number goes on in a slot shared by hash (for calls still in flight: one such call of
 * another credential may go unstored, never an answer kept), and its wall time is dropped: nothing
 * it covered is left to hide. When the exact table has no room, the purge is stamped in the shared
 * slot, number and wall time, for good: it then hides the answers of every credential of that slot
 * confirmed before it (an IdP call each), and is never forgotten. User names are stamped in slots
 * shared by hash (a collision costs one needless IdP call).
 *
 * A lookup that found an answer and then found no stamp hiding it may have raced the end of a
 * walk: epoch_released changes with every epoch_walked, and a lookup that sees it change looks
 * again (fa.c: held_answer).
 *
 * Thread-safe; readers lock-free, stampers of credentials and epoch_walked share one mutex; no
 * allocation after epoch_new.
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
/* flags: EPOCH_FIND_USERS, kept with an exact stamp for its walk (the users found among the
 * credential's answers are to be purged too). Returns 1 if stamped exactly (it waits for a walk:
 * epoch_pending), 0 if in the shared slot (no room, or a digest of zero). */
#define EPOCH_FIND_USERS 1u
int epoch_purge_cred(struct epochs *e, const uint8_t cred[SHM_CRED_LEN], int64_t now_ms,
                     unsigned flags);
void epoch_purge_all(struct epochs *e, int64_t now_ms);

/* 1 if a purge stamped after `since` covers the user (len 0: none) or the credential digest
 * (NULL: none), or everything; else 0. */
int epoch_covered(struct epochs *e, uint64_t since, const char *user, size_t len,
                  const uint8_t cred[SHM_CRED_LEN]);

/* The wall time of the latest purge that covers the user, the credential digest or everything (0:
 * none). A held answer confirmed at or before it is purged, or about to be: not to be served. An
 * answer confirmed in the millisecond of a purge that covers it is hidden too (an IdP call more),
 * never dated later: a purge later in that millisecond must hide it. On the hit path: two hashes,
 * three loads, and one cache line of exact stamps. */
int64_t epoch_last_ms(struct epochs *e, const char *user, size_t len,
                      const uint8_t cred[SHM_CRED_LEN]);

/* The exact stamps numbered at most upto that wait for a walk: their digests (SHM_CRED_LEN bytes as
 * a uint64_t, memcpy, as shm_purge_set takes them) in creds, their flags in flags, at most cap of
 * them. Returns how many. Take upto = epoch_now before, and walk after: the walk then began after
 * every stamp listed. */
size_t epoch_pending(struct epochs *e, uint64_t upto, uint64_t *creds, unsigned *flags, size_t cap);

/* A walk that began after epoch_now returned upto has removed every answer of creds[0, n) from the
 * segment (none skipped): their exact stamps numbered at most upto end (the number stays in the
 * shared slot, the wall time goes). A credential stamped again since keeps its stamp. */
void epoch_walked(struct epochs *e, const uint64_t *creds, size_t n, uint64_t upto);

/* Exact stamps waiting for a walk (a snapshot), and how many the table holds at most. */
size_t epoch_exact_count(struct epochs *e);
#define EPOCH_EXACT_MAX 32768u

/* Changes whenever epoch_walked ends a stamp: read it before a lookup, and again after the lookup's
 * epoch_hides said no; if it changed, look again. */
uint64_t epoch_released(struct epochs *e);

static inline int epoch_hides(struct epochs *e, int64_t confirmed_ms, const char *user, size_t len,
                              const uint8_t cred[SHM_CRED_LEN])
{
    return epoch_last_ms(e, user, len, cred) >= confirmed_ms;
}

#endif
