/*
 * sids.h — which credentials hold answers of an authentik session: an index from a session key
 * (the first 8 bytes of SHA-256(sid), the JWT's "sid" claim) to the credential digests
 * (struct shm_key.cred) of the answers stored for that session, so that a session end from
 * authentik's feed (feed.c) finds them without a scan of the segment.
 *
 * Daemon memory, not the segment: the workers fill it when they store an answer whose
 * X-authentik-jwt names a sid (fa.c), the feed thread reads it. Bounded: a fixed table of
 * SIDS_PER_ANSWER entries per answer the segment holds, open addressing with at most SIDS_PROBE
 * slots probed. An entry is kept until the end of its answer's life (session_end_ms: no answer
 * outlives first_seen + --session-ttl); after that its slot is free. An insert that finds its
 * window full of live entries drops the one that ends first, and the index is then "lossy" until
 * that entry's end: a lookup says so, and its caller must scan the segment as well.
 *
 * A segment adopted at start may hold answers nobody indexed: sids_new(..., pending) starts lossy
 * until sids_adopted says the segment has been indexed (feed.c scans it once, when sids_adopt_at
 * says no other process stores into it any more).
 *
 * Thread-safe: 16 mutexes, each owning a sixteenth of the table. Inserts come only with IdP
 * answers and lookups only with session ends: no lock is taken on the hit path.
 */
#ifndef AUTHCACHE_SIDS_H
#define AUTHCACHE_SIDS_H

#include <stddef.h>
#include <stdint.h>

#include "shm.h"

#define SIDS_JWT_HEADER "X-authentik-jwt" /* the header whose JWT's sid names the session */
#define SIDS_PER_ANSWER 4                 /* table entries per answer of the segment */
#define SIDS_PROBE 32                     /* slots an insert or a lookup looks at */

struct sids;

/* A table for a segment of capacity answers (SIDS_PER_ANSWER entries each, rounded up to a power
 * of two). adopt_pending: the segment already held answers (a restart, --handover): lossy until
 * sids_adopted. NULL: out of memory. */
struct sids *sids_new(uint64_t capacity, int adopt_pending);
void sids_free(struct sids *s); /* NULL is fine */

/* The session key of a sid claim sid[0, len): the first 8 bytes of its SHA-256, big-endian. */
uint64_t sids_key(const char *sid, size_t len);

/*
 * Record that the answer with credential digest cred, of the session key, may be served until
 * until_ms (wall time: its session_end_ms). An entry for the same key and cred is extended, not
 * doubled. now_ms: wall time, to tell the entries that ended. 0, or 1 if a live entry had to be
 * dropped (the index is lossy until that entry's end). Any thread.
 */
int sids_insert(struct sids *s, uint64_t key, const uint8_t cred[SHM_CRED_LEN], int64_t until_ms,
                int64_t now_ms);

/*
 * The credential digests of the session named by id (NUL-terminated, as authentik's session end
 * sends it): the sid itself (authentik before 2025), or the lowercase hex SHA-256 of the sid
 * (2025.x): both are looked up. Up to cap digests into creds, each once, only entries live at
 * now_ms. Returns how many (more are dropped: the caller's bound). *lossy = 1 when the index may
 * miss some: an entry of those keys' part of the table was dropped, or the adopted segment is not
 * indexed yet; the caller must then scan the segment. Any thread.
 */
unsigned sids_lookup(struct sids *s, const char *id, int64_t now_ms, uint8_t (*creds)[SHM_CRED_LEN],
                     unsigned cap, int *lossy);

/* An adopted segment: a scan that starts at or after at_mono_ms (monotonic) sees every answer that
 * no worker of this process indexes: the predecessor that shared the segment (--handover) stores
 * nothing after it. Until it is called, no scan qualifies. Any thread. */
void sids_adopt_at(struct sids *s, int64_t at_mono_ms);

/* When the adopted segment may be indexed (monotonic ms; INT64_MAX: not known yet), or 0: nothing
 * to adopt, the index is complete. */
int64_t sids_adopt_due(struct sids *s);

/* Every answer the segment held at started_mono_ms has been inserted: if that is no earlier than
 * sids_adopt_at's time, the index no longer waits for adoption. Returns 1 if so. Any thread. */
int sids_adopted(struct sids *s, int64_t started_mono_ms);

/* Figures (any thread): slots in use (some may hold entries that ended and wait to be reused), all
 * slots, live entries dropped by inserts, and 1 if a lookup at now_ms may be lossy for some key. */
uint64_t sids_entries(struct sids *s);
uint64_t sids_slots(struct sids *s);
uint64_t sids_dropped(struct sids *s);
int sids_lossy(struct sids *s, int64_t now_ms);

#endif
