/*
 * shm_layout.h — the bytes of an authcache segment, /dev/shm/<name>. Everything that lives in the
 * segment is declared here and nowhere else: fixed-width types, no pointers (only offsets and log
 * positions), every size and offset pinned by _Static_assert. Per-process handles live in shm.h.
 *
 *   0        8 KiB                        index_off + nbuckets*64              total_size
 *   +--------+------------------------------+-------------------------------------+
 *   | header | index: nbuckets x 64-B bucket | ring: ring_size bytes of records     |
 *   +--------+------------------------------+-------------------------------------+
 *
 * The index is an array of buckets; a bucket is one cache line of 8 slots; a slot is one 64-bit
 * word (tag:24 | pos/16:40), 0 when empty. A slot names a record by its *log position*: records are
 * appended to a circular log whose absolute position `head` only grows; a position p lives at ring
 * offset p % ring_size. Everything before `tail` is dead and may be overwritten. Slots are changed
 * only by single compare-and-swap, records are never changed after they are published — so no lock
 * exists anywhere and a writer killed at any instruction leaves nothing to repair. See
 * shm/README.md.
 */
#ifndef AUTHCACHE_SHM_LAYOUT_H
#define AUTHCACHE_SHM_LAYOUT_H

#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>

#define SHM_MAGIC UINT64_C(0x314d48534843414b) /* "KACHSHM1" little-endian */
#define SHM_LAYOUT_VERSION 1u

#define SHM_HDR_SIZE 8192u
#define SHM_BUCKET_SLOTS 8u
#define SHM_BUCKET_SIZE 64u
#define SHM_REC_ALIGN 16u
#define SHM_DIGEST_LEN 16u /* bytes of the keyed digest kept: 128 bits */
#define SHM_CRED_LEN 8u    /* bytes of the credential-only digest: purge by session */
#define SHM_KEY_LEN 32u    /* HMAC-SHA-256 key */

/* Limits of one answer; a record is at most SHM_MAX_RECORD bytes. */
#define SHM_MAX_HOST 1024u
#define SHM_MAX_USER 512u
#define SHM_MAX_HDRS 16384u
#define SHM_MAX_RECORD                                                                             \
    18432u /* >= sizeof(struct shm_rec_sh) + the three maxima above, 16-aligned */

/* Slot word: the low 40 bits are pos/16 modulo 2^40, the high 24 bits a tag from the key's hash
 * with its lowest bit forced to 1, so a used slot is never 0. The position is recovered from `head`
 * (see shm.c: slot_pos); a wrapped alias is caught because the record repeats its full position. */
#define SHM_SLOT_POS_BITS 40u
#define SHM_SLOT_POS_MASK ((UINT64_C(1) << SHM_SLOT_POS_BITS) - 1)

#define SHM_STRIPES 16u     /* stats stripes: writers pick one by thread, no false sharing */
#define SHM_SIZE_CLASSES 8u /* record-size histogram: <=256, 512, 1K, 2K, 4K, 8K, 16K, more */

#define SHM_FLAG_KEY_FROM_FILE 1u

/* One stripe of counters, a multiple of a cache line. Counters only grow. */
struct shm_stats_sh {
    uint64_t lookups;
    uint64_t hits;
    uint64_t misses;
    uint64_t expired;  /* lookups that found an answer past its session end */
    uint64_t inserts;  /* new keys */
    uint64_t replaces; /* inserts over an existing key (revalidation, promotion) */
    uint64_t deletes;
    uint64_t evictions;  /* LRU (ring tail) and full-bucket evictions */
    uint64_t purges;     /* entries removed by purge by user, session or all */
    uint64_t retries;    /* reader retries after a torn or changed record */
    uint64_t promotions; /* hot records copied forward before the tail reaches them */
    uint64_t size_class[SHM_SIZE_CLASSES];
    uint64_t pad_[5];
};
_Static_assert(sizeof(struct shm_stats_sh) == 192, "stats stripe is three cache lines");

/* The segment header. Constant after creation, except the atomics on their own cache lines. */
struct shm_hdr_sh {
    uint64_t magic;
    uint32_t version;
    uint32_t hdr_size;        /* SHM_HDR_SIZE */
    uint64_t total_size;      /* bytes of the file */
    uint64_t generation;      /* random, new every time a daemon creates the segment */
    int64_t created_ms;       /* wall clock */
    uint64_t capacity;        /* most live entries */
    uint64_t nbuckets;        /* power of two */
    uint64_t index_off;       /* SHM_HDR_SIZE */
    uint64_t ring_off;        /* index_off + nbuckets * SHM_BUCKET_SIZE */
    uint64_t ring_size;       /* multiple of SHM_REC_ALIGN, >= 4 * SHM_MAX_RECORD */
    uint32_t bucket_size;     /* SHM_BUCKET_SIZE */
    uint32_t rec_align;       /* SHM_REC_ALIGN */
    uint32_t max_record;      /* SHM_MAX_RECORD */
    uint32_t flags;           /* SHM_FLAG_* */
    uint8_t key[SHM_KEY_LEN]; /* HMAC key for credential digests (the segment is mode 0600) */
    uint32_t retired; /* set to 1 when a daemon replaces this segment: attached readers reopen */
    uint32_t pad0a_;
    /* The purge bus's mark: the millisecond part of the newest stream entry id whose purge a daemon
     * applied here (0: none). Only raised; the next daemon to adopt the segment reads on from it.
     */
    uint64_t bus_read_ms;
    uint8_t pad0_[256 - 144];

    /* Log positions; each on its own line. head: next free position. tail: positions below are
     * dead. */
    alignas(64) uint64_t head;
    uint8_t pad1_[56];
    alignas(64) uint64_t tail;
    uint8_t pad2_[56];
    /* Slots in use (non-zero), kept by every CAS that changes a slot from or to zero. A process
     * killed between such a CAS and this add leaves it off by one; shm_check() recounts. */
    alignas(64) int64_t live;
    uint8_t pad3_[56];
    alignas(64) struct shm_stats_sh stats[SHM_STRIPES];
    uint8_t pad4_[SHM_HDR_SIZE - 448 - SHM_STRIPES * sizeof(struct shm_stats_sh)];
};
_Static_assert(offsetof(struct shm_hdr_sh, key) == 96, "key offset");
_Static_assert(offsetof(struct shm_hdr_sh, retired) == 128, "retired offset");
_Static_assert(offsetof(struct shm_hdr_sh, bus_read_ms) == 136, "bus mark offset");
_Static_assert(offsetof(struct shm_hdr_sh, head) == 256, "head on its own line");
_Static_assert(offsetof(struct shm_hdr_sh, tail) == 320, "tail on its own line");
_Static_assert(offsetof(struct shm_hdr_sh, live) == 384, "live on its own line");
_Static_assert(offsetof(struct shm_hdr_sh, stats) == 448, "stats after the atomics");
_Static_assert(sizeof(struct shm_hdr_sh) == SHM_HDR_SIZE, "header is 8 KiB");

struct shm_bucket_sh {
    uint64_t slot[SHM_BUCKET_SLOTS];
};
_Static_assert(sizeof(struct shm_bucket_sh) == SHM_BUCKET_SIZE, "a bucket is one cache line");

#define SHM_REC_ANSWER 1u /* an answer */
/* The IdP sent Set-Cookie with this answer (it refreshes or saves sessions on its auth endpoint):
 * revalidate it only for a request whose browser gets the new cookie, never in the background. */
#define SHM_ANSWER_ROTATES 1u
#define SHM_REC_FILLER 2u /* padding at the end of the ring; len bytes to skip */

/*
 * A record in the ring, followed by host, user and the identity headers (as the IdP sent them,
 * "Name: value\r\n" lines). Written completely, then `pos` last with a release store, then
 * published in a slot. `check` covers every byte after itself up to len, seeded with pos.
 */
struct shm_rec_sh {
    uint64_t pos;   /* this record's own log position: proves it is the record a slot names */
    uint64_t check; /* XXH3-64 of bytes [16, len) with seed pos */
    uint32_t len;   /* header + payload, not rounded */
    uint16_t kind;  /* SHM_REC_* */
    uint16_t host_len;
    uint16_t user_len;
    uint16_t flags; /* SHM_ANSWER_*; 0 in segments written before they existed */
    uint32_t hdrs_len;
    uint8_t digest[SHM_DIGEST_LEN];
    uint8_t cred[SHM_CRED_LEN];
    int64_t first_seen_ms;  /* when the IdP first allowed this credential here */
    int64_t confirmed_ms;   /* when the IdP last confirmed it */
    int64_t fresh_until_ms; /* served without asking the IdP until then */
    int64_t session_end_ms; /* never served at or after: first_seen + session-ttl, or a JWT's exp */
};
_Static_assert(offsetof(struct shm_rec_sh, len) == 16, "checksum starts at len");
_Static_assert(offsetof(struct shm_rec_sh, digest) == 32, "digest offset");
_Static_assert(offsetof(struct shm_rec_sh, first_seen_ms) == 56, "times offset");
_Static_assert(sizeof(struct shm_rec_sh) == 88, "record header is 88 bytes");
_Static_assert(sizeof(struct shm_rec_sh) + SHM_MAX_HOST + SHM_MAX_USER + SHM_MAX_HDRS <=
                   SHM_MAX_RECORD,
               "largest record fits");
_Static_assert(SHM_MAX_RECORD % SHM_REC_ALIGN == 0, "aligned maximum");

#endif
