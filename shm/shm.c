/*
 * shm.c — the lock-free table in the segment (layout: shm_layout.h; the protocol in full and why it
 * is safe: shm/README.md).
 *
 * The idea: answers are appended to a circular log and never changed afterwards; a hash index of
 * one-word slots names them by log position. So
 *  - a writer reserves space with one fetch-add on `head`, writes the record where nobody else can,
 *    and publishes it with one CAS on a slot;
 *  - eviction is moving `tail` forward with CAS (the oldest records die first) and clearing the
 * slots that named them; a reader that copied a record checks afterwards that `tail` has not passed
 * it (and its checksum), so it never returns bytes a writer was overwriting;
 *  - a process killed anywhere leaves at worst some unreferenced bytes in the log, which the tail
 *    walks over, and the live counter off by one; there is no lock to recover.
 * Approximate LRU: a lookup that finds an answer in the oldest quarter of the log copies it to the
 * head (FIFO with reinsertion, which behaves like CLOCK).
 *
 * Everything read from the segment is treated as untrusted: positions are reduced modulo the ring,
 * lengths checked against the record's place, loops bounded.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "shm.h"
#include "shm_int.h"

#define REC_HDR ((uint32_t)sizeof(struct shm_rec_sh))
#define LOOKUP_TRIES 4
#define WALK_LIMIT 4096 /* tail steps one make_room may take before it jumps */

static inline uint64_t load_acq(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline int cas(uint64_t *p, uint64_t expect, uint64_t v)
{
    return __atomic_compare_exchange_n(p, &expect, v, 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
}

static inline uint64_t align16(uint64_t n)
{
    return (n + SHM_REC_ALIGN - 1) & ~(uint64_t)(SHM_REC_ALIGN - 1);
}

/* ---- statistics: one stripe per thread (by thread id), relaxed adds, writable handles only ----
 */

static __thread unsigned stripe_id = ~0u;

static struct shm_stats_sh *stripe(struct shm *h)
{
    if (stripe_id == ~0u)
        stripe_id = (unsigned)syscall(SYS_gettid) % SHM_STRIPES;
    return &h->hdr->stats[stripe_id];
}

#define STAT_ADD(h, field, n)                                                                      \
    do {                                                                                           \
        if ((h)->writable)                                                                         \
            __atomic_fetch_add(&stripe(h)->field, (n), __ATOMIC_RELAXED);                          \
    } while (0)

static inline void live_add(struct shm *h, int64_t n)
{
    __atomic_fetch_add(&h->hdr->live, n, __ATOMIC_RELAXED);
}

static unsigned size_class(uint32_t len)
{
    unsigned c = 0;

    for (uint32_t lim = 256; len > lim && c < SHM_SIZE_CLASSES - 1; lim <<= 1)
        c++;
    return c;
}

/* ---- index arithmetic ---- */

struct slot_ref {
    struct shm_bucket_sh *b;
    uint64_t tag; /* already shifted into place */
};

static struct slot_ref slot_ref(const struct shm *h, const uint8_t digest[SHM_DIGEST_LEN])
{
    uint64_t x = XXH3_64bits(digest, SHM_DIGEST_LEN);

    return (struct slot_ref){
        .b = &h->index[x & (h->nbuckets - 1)],
        .tag = ((x >> SHM_SLOT_POS_BITS) | 1) << SHM_SLOT_POS_BITS,
    };
}

static inline uint64_t slot_make(uint64_t tag, uint64_t pos)
{
    return tag | ((pos >> 4) & SHM_SLOT_POS_MASK);
}

static inline uint64_t slot_tag(uint64_t v)
{
    return v & ~SHM_SLOT_POS_MASK;
}

/* The full log position a slot names, given a recent head; 0 if it cannot be live (older than one
 * ring, or ahead of head). Position 0 is never a record's: the log starts at SHM_REC_ALIGN. */
static inline uint64_t slot_pos(const struct shm *h, uint64_t v, uint64_t head)
{
    uint64_t delta;

    head &= ~(uint64_t)(SHM_REC_ALIGN - 1); /* only a scribbled head is unaligned */
    delta = (((head >> 4) - v) & SHM_SLOT_POS_MASK) << 4;

    if (delta > h->ring_size || delta > head)
        return 0;
    return head - delta;
}

static inline struct shm_rec_sh *rec_at(const struct shm *h, uint64_t pos)
{
    return (struct shm_rec_sh *)(h->ring + pos % h->ring_size);
}

/* The bucket's slots (acquire), then head and tail: a slot seen here names a position below head.
 */
static inline void bucket_snapshot(const struct shm *h, const struct shm_bucket_sh *b,
                                   uint64_t v[SHM_BUCKET_SLOTS], uint64_t *head, uint64_t *tail)
{
    for (unsigned i = 0; i < SHM_BUCKET_SLOTS; i++)
        v[i] = load_acq(&b->slot[i]);
    *head = load_acq(&h->hdr->head);
    *tail = load_acq(&h->hdr->tail);
}

/* A record header checked in place: its own position, a length that fits where it lies. Returns the
 * length, or 0. The caller must still verify what it copies (a lapped writer could be rewriting).
 */
static uint32_t rec_len_in_place(const struct shm *h, uint64_t pos, const struct shm_rec_sh *r)
{
    uint64_t off = pos % h->ring_size;
    uint32_t len;

    if (off + REC_HDR > h->ring_size || load_acq(&r->pos) != pos)
        return 0;
    len = __atomic_load_n(&r->len, __ATOMIC_RELAXED);
    if (len < REC_HDR || len > SHM_MAX_RECORD || off + len > h->ring_size)
        return 0;
    return len;
}

enum { COPY_OK = 0, COPY_GONE = 1, COPY_TORN = 2 };

/*
 * Copy the record at pos into buf and verify it: still ahead of tail after the copy (so no writer
 * started on it meanwhile), its position, lengths and checksum. The memcpy races with nothing but a
 * writer that already moved tail past pos — which the tail check after the acquire fence detects.
 */
static int rec_copy(const struct shm *h, uint64_t pos, void *buf, size_t buf_len)
{
    const struct shm_rec_sh *r = rec_at(h, pos);
    const struct shm_rec_sh *c = buf;
    uint32_t len = rec_len_in_place(h, pos, r);

    if (len == 0)
        return load_acq(&h->hdr->tail) > pos ? COPY_GONE : COPY_TORN;
    if (len > buf_len)
        return COPY_TORN;
    memcpy(buf, r, len);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (load_acq(&h->hdr->tail) > pos)
        return COPY_GONE;
    if (c->pos != pos || c->len != len || c->kind != SHM_REC_ANSWER ||
        (uint64_t)REC_HDR + c->host_len + c->user_len + c->hdrs_len != len ||
        c->host_len > SHM_MAX_HOST || c->user_len > SHM_MAX_USER || c->hdrs_len > SHM_MAX_HDRS ||
        XXH3_64bits_withSeed((const uint8_t *)buf + 16, len - 16, pos) != c->check)
        return COPY_TORN;
    return COPY_OK;
}

static void answer_from_copy(struct shm_answer *a, const void *buf, uint64_t pos)
{
    const struct shm_rec_sh *c = buf;
    const char *p = (const char *)buf + REC_HDR;

    memcpy(a->key.digest, c->digest, SHM_DIGEST_LEN);
    memcpy(a->key.cred, c->cred, SHM_CRED_LEN);
    a->first_seen_ms = c->first_seen_ms;
    a->confirmed_ms = c->confirmed_ms;
    a->fresh_until_ms = c->fresh_until_ms;
    a->session_end_ms = c->session_end_ms;
    a->flags = c->flags;
    a->host = p;
    a->host_len = c->host_len;
    a->user = p + c->host_len;
    a->user_len = c->user_len;
    a->hdrs = p + c->host_len + c->user_len;
    a->hdrs_len = c->hdrs_len;
    a->pos = pos;
}

/* ---- eviction: moving the tail ---- */

/* Clear the slot that names the record at pos (digest from that record). 1 if this call did. */
static int unlink_pos(struct shm *h, const uint8_t digest[SHM_DIGEST_LEN], uint64_t pos)
{
    struct slot_ref s = slot_ref(h, digest);
    uint64_t want = slot_make(s.tag, pos);

    for (unsigned i = 0; i < SHM_BUCKET_SLOTS; i++) {
        uint64_t *slot = &s.b->slot[i];
        if (load_acq(slot) == want && cas(slot, want, 0)) {
            live_add(h, -1);
            return 1;
        }
    }
    return 0;
}

/*
 * Try to move the tail from t past the record there. Reads the header before the CAS: while tail is
 * still t nobody writes at t (a writer needs tail past its whole reservation first), so a header
 * that names t is the real one. Returns 1 if a live answer was evicted by this call, 0 otherwise.
 */
static int tail_step(struct shm *h, uint64_t t)
{
    struct shm_rec_sh *r = rec_at(h, t);
    uint64_t off = t % h->ring_size, next = t + SHM_REC_ALIGN;
    uint8_t digest[SHM_DIGEST_LEN];
    int is_answer = 0;

    if (t % SHM_REC_ALIGN) { /* a scribbled tail: realign it */
        cas(&h->hdr->tail, t, align16(t));
        return 0;
    }
    if (off + REC_HDR <= h->ring_size && load_acq(&r->pos) == t) {
        uint32_t len = __atomic_load_n(&r->len, __ATOMIC_RELAXED);
        uint16_t kind = __atomic_load_n(&r->kind, __ATOMIC_RELAXED);
        if (kind == SHM_REC_FILLER && len >= SHM_REC_ALIGN && off + len <= h->ring_size) {
            next = t + align16(len);
        } else if (kind == SHM_REC_ANSWER && len >= REC_HDR && len <= SHM_MAX_RECORD &&
                   off + len <= h->ring_size) {
            next = t + align16(len);
            memcpy(digest, r->digest, SHM_DIGEST_LEN);
            is_answer = 1;
        }
    }
    if (!cas(&h->hdr->tail, t, next))
        return 0;
    if (is_answer && unlink_pos(h, digest, t)) {
        STAT_ADD(h, evictions, 1);
        return 1;
    }
    return 0;
}

/* Make every position below end - ring_size dead, so [end - ring_size, end) may be written. */
static void make_room(struct shm *h, uint64_t end)
{
    uint64_t need;

    if (end <= h->ring_size)
        return;
    need = end - h->ring_size;
    for (unsigned steps = 0;; steps++) {
        uint64_t t = load_acq(&h->hdr->tail);
        if (t >= need)
            return;
        if (steps >= WALK_LIMIT || need - t > h->ring_size) {
            /* Far behind (garbage, or scribbled counters): jump; slots left naming positions
             * below the tail are dead and get cleared when met. */
            cas(&h->hdr->tail, t, need);
            continue;
        }
        tail_step(h, t);
    }
}

/* Evict the oldest live answer (capacity reached). Bounded: gives up after WALK_LIMIT steps. */
static void evict_oldest(struct shm *h)
{
    for (unsigned steps = 0; steps < WALK_LIMIT; steps++) {
        uint64_t t = load_acq(&h->hdr->tail), hd = load_acq(&h->hdr->head);
        if (t >= hd || hd - t > h->ring_size)
            return;
        if (tail_step(h, t))
            return;
    }
}

static void put_filler(struct shm *h, uint64_t pos, uint64_t len)
{
    struct shm_rec_sh *r = rec_at(h, pos);

    if (len < REC_HDR)
        return; /* too short to hold a header: the tail walks over it 16 bytes at a time */
    r->len = (uint32_t)len;
    r->kind = SHM_REC_FILLER;
    __atomic_store_n(&r->pos, pos, __ATOMIC_RELEASE);
}

/* Reserve len16 contiguous bytes of log (never across the ring's end) with room made for them. */
static uint64_t reserve(struct shm *h, uint64_t len16)
{
    for (;;) {
        uint64_t p = __atomic_fetch_add(&h->hdr->head, len16, __ATOMIC_SEQ_CST);
        uint64_t off = p % h->ring_size;

        if (p % SHM_REC_ALIGN) { /* a scribbled head: realign it, and waste this reservation */
            uint64_t hd = load_acq(&h->hdr->head);
            if (hd % SHM_REC_ALIGN)
                cas(&h->hdr->head, hd, align16(hd));
            continue;
        }

        make_room(h, p + len16);
        if (off + len16 <= h->ring_size)
            return p;
        /* [p, p + len16) is ours but wraps: mark both pieces as filler and take another. */
        put_filler(h, p, h->ring_size - off);
        put_filler(h, p + (h->ring_size - off), len16 - (h->ring_size - off));
    }
}

/* ---- insert, lookup, delete ---- */

/* Append a record for a to the log; returns its position. The record is complete (pos stored last,
 * release) but named by no slot yet. The checksum is taken over the writer's own bytes (the header
 * built on the stack, then the caller's buffers), never re-read from the ring: a scribble on the
 * ring between the copy and the checksum must fail verification, not be sealed into the record. */
static uint64_t write_record(struct shm *h, const struct shm_answer *a, uint64_t len)
{
    uint64_t p = reserve(h, align16(len));
    struct shm_rec_sh *r = rec_at(h, p);
    uint8_t *d = (uint8_t *)r + REC_HDR;
    struct shm_rec_sh rh = {
        .len = (uint32_t)len,
        .kind = SHM_REC_ANSWER,
        .host_len = (uint16_t)a->host_len,
        .user_len = (uint16_t)a->user_len,
        .flags = a->flags,
        .hdrs_len = a->hdrs_len,
        .first_seen_ms = a->first_seen_ms,
        .confirmed_ms = a->confirmed_ms,
        .fresh_until_ms = a->fresh_until_ms,
        .session_end_ms = a->session_end_ms,
    };
    XXH3_state_t st;

    memcpy(rh.digest, a->key.digest, SHM_DIGEST_LEN);
    memcpy(rh.cred, a->key.cred, SHM_CRED_LEN);
    XXH3_64bits_reset_withSeed(&st, p);
    XXH3_64bits_update(&st, (const uint8_t *)&rh + 16, REC_HDR - 16);
    XXH3_64bits_update(&st, a->host, a->host_len);
    XXH3_64bits_update(&st, a->user, a->user_len);
    XXH3_64bits_update(&st, a->hdrs, a->hdrs_len);
    rh.check = XXH3_64bits_digest(&st);
    memcpy((uint8_t *)r + 8, (const uint8_t *)&rh + 8, REC_HDR - 8); /* all but pos */
    memcpy(d, a->host, a->host_len);
    memcpy(d + a->host_len, a->user, a->user_len);
    memcpy(d + a->host_len + a->user_len, a->hdrs, a->hdrs_len);
    __atomic_store_n(&r->pos, p, __ATOMIC_RELEASE);
    STAT_ADD(h, size_class[size_class((uint32_t)len)], 1);
    return p;
}

static uint64_t answer_len(const struct shm_answer *a)
{
    return REC_HDR + (uint64_t)a->host_len + a->user_len + a->hdrs_len;
}

static int clear_key_slots(struct shm *h, struct slot_ref s, const uint8_t digest[SHM_DIGEST_LEN],
                           uint64_t keep);

/*
 * Publish a's answer: replace the slot naming this key's answer, else take a free or dead slot,
 * else evict the bucket's oldest. Then clear every other slot still naming this key: a lookup's
 * promotion may have raced the replace and left a copy of the previous answer in another slot (see
 * clear_key_slots), and once this returns no lookup may find anything older than a.
 */
int shm_insert(struct shm *h, const struct shm_answer *a)
{
    uint64_t p, nv, head, tail;
    struct slot_ref s;

    if (!h->writable)
        return -EROFS;
    if (a->host_len > SHM_MAX_HOST || a->user_len > SHM_MAX_USER || a->hdrs_len > SHM_MAX_HDRS)
        return -E2BIG;
    p = write_record(h, a, answer_len(a));

    s = slot_ref(h, a->key.digest);
    nv = slot_make(s.tag, p);
    for (;;) {
        uint64_t v[SHM_BUCKET_SLOTS];
        int match = -1, free_slot = -1, oldest = -1;
        uint64_t oldest_pos = UINT64_MAX;

        bucket_snapshot(h, s.b, v, &head, &tail);
        for (unsigned i = 0; i < SHM_BUCKET_SLOTS; i++) {
            uint64_t pos;
            if (v[i] == 0) {
                if (free_slot < 0)
                    free_slot = (int)i;
                continue;
            }
            pos = slot_pos(h, v[i], head);
            if (pos < tail || pos == 0) { /* dead: reusable (and still counted live) */
                /* A dead slot with this key's tag first: a promotion that read this key may still
                 * CAS that slot, and must then find it changed, not hide the newer answer. */
                if (free_slot < 0 || v[free_slot] == 0 ||
                    (slot_tag(v[i]) == s.tag && slot_tag(v[free_slot]) != s.tag))
                    free_slot = (int)i;
                continue;
            }
            if (slot_tag(v[i]) == s.tag && match < 0 && pos != p) {
                struct shm_rec_sh *o = rec_at(h, pos);
                if (rec_len_in_place(h, pos, o) &&
                    memcmp(o->digest, a->key.digest, SHM_DIGEST_LEN) == 0) {
                    match = (int)i;
                    continue;
                }
            }
            if (pos < oldest_pos) {
                oldest_pos = pos;
                oldest = (int)i;
            }
        }
        if (match >= 0) {
            if (!cas(&s.b->slot[match], v[match], nv))
                continue;
            STAT_ADD(h, replaces, 1);
            break;
        }
        if (free_slot >= 0) {
            if (!cas(&s.b->slot[free_slot], v[free_slot], nv))
                continue;
            if (v[free_slot] == 0)
                live_add(h, 1);
            STAT_ADD(h, inserts, 1);
            if (__atomic_load_n(&h->hdr->live, __ATOMIC_RELAXED) > (int64_t)h->capacity)
                evict_oldest(h);
            break;
        }
        /* Bucket full of live answers: the oldest of them goes. */
        if (oldest < 0 || !cas(&s.b->slot[oldest], v[oldest], nv))
            continue;
        STAT_ADD(h, inserts, 1);
        STAT_ADD(h, evictions, 1);
        break;
    }
    clear_key_slots(h, s, a->key.digest, nv);
    return 0;
}

/*
 * What a slot with a key's tag names, for removing it: 0 a live answer of another key, 1 nothing
 * usable (a dead position, or a live one whose record fails the in-place check: overwritten by a
 * lapped writer or scribbled on; it can only ever be a miss), 2 a live answer of this digest.
 */
static int slot_names(const struct shm *h, uint64_t v, const uint8_t digest[SHM_DIGEST_LEN])
{
    uint64_t pos = slot_pos(h, v, load_acq(&h->hdr->head));
    const struct shm_rec_sh *r;

    if (pos == 0 || pos < load_acq(&h->hdr->tail))
        return 1;
    r = rec_at(h, pos);
    if (!rec_len_in_place(h, pos, r))
        return 1;
    return memcmp(r->digest, digest, SHM_DIGEST_LEN) == 0 ? 2 : 0;
}

/*
 * Clear every slot of s's bucket with s's tag that names digest's answer or nothing usable, except
 * the one holding `keep`. A failed CAS is re-examined, not skipped: the slot may have just been
 * changed by a promotion (shm_lookup) copying an answer of this key forward, and that copy must go
 * too. Returns how many live answers of digest were cleared.
 */
static int clear_key_slots(struct shm *h, struct slot_ref s, const uint8_t digest[SHM_DIGEST_LEN],
                           uint64_t keep)
{
    int n = 0;

    for (unsigned i = 0; i < SHM_BUCKET_SLOTS; i++) {
        for (int tries = 0; tries < 16; tries++) {
            uint64_t v = load_acq(&s.b->slot[i]);
            int what;
            if (v == 0 || v == keep || slot_tag(v) != s.tag)
                break;
            if ((what = slot_names(h, v, digest)) == 0)
                break;
            if (cas(&s.b->slot[i], v, 0)) {
                live_add(h, -1);
                n += what == 2;
                break;
            }
        }
    }
    return n;
}

/* Remove the slots under digest that name a record with that digest (or nothing usable). */
int shm_delete(struct shm *h, const uint8_t digest[SHM_DIGEST_LEN])
{
    int n;

    if (!h->writable)
        return -EROFS;
    n = clear_key_slots(h, slot_ref(h, digest), digest, 0);
    STAT_ADD(h, deletes, (uint64_t)n);
    return n;
}

/* Eviction is near (the log or the capacity three-quarters full): only then is promotion worth a
 * copy. */
static int under_pressure(const struct shm *h, uint64_t used)
{
    return used > h->ring_size / 4 * 3 ||
           __atomic_load_n(&h->hdr->live, __ATOMIC_RELAXED) > (int64_t)(h->capacity / 4 * 3);
}

/* Copy a found answer to the head of the log, replacing the slot only if it still names the copy we
 * read: a newer answer stored meanwhile must never be overwritten by this older one. */
static void promote(struct shm *h, const struct shm_answer *a, uint64_t *slot, uint64_t seen)
{
    uint64_t p = write_record(h, a, answer_len(a));

    if (cas(slot, seen, slot_make(slot_tag(seen), p)))
        STAT_ADD(h, promotions, 1);
}

int shm_lookup(struct shm *h, const uint8_t digest[SHM_DIGEST_LEN], int64_t now_ms,
               struct shm_answer *out, void *buf, size_t buf_len, int flags)
{
    struct slot_ref s = slot_ref(h, digest);

    if (buf_len < REC_HDR)
        return -EINVAL;
    STAT_ADD(h, lookups, 1);
    for (int attempt = 0; attempt < LOOKUP_TRIES; attempt++) {
        uint64_t v[SHM_BUCKET_SLOTS], cand[SHM_BUCKET_SLOTS], head, tail;
        unsigned cslot[SHM_BUCKET_SLOTS];
        int ncand = 0, torn = 0;

        bucket_snapshot(h, s.b, v, &head, &tail);
        for (unsigned i = 0; i < SHM_BUCKET_SLOTS; i++) {
            uint64_t pos;
            if (slot_tag(v[i]) != s.tag || v[i] == 0)
                continue;
            pos = slot_pos(h, v[i], head);
            if (pos != 0 && pos >= tail) { /* keep candidates newest first */
                int j = ncand++;
                while (j > 0 && cand[j - 1] < pos) {
                    cand[j] = cand[j - 1];
                    cslot[j] = cslot[j - 1];
                    j--;
                }
                cand[j] = pos;
                cslot[j] = i;
            }
        }
        /* The record's first lines, fetched while its header is checked: typical answers are
         * under 1 KiB, and these misses then overlap instead of following one another. */
        if (ncand > 0) {
            const uint8_t *r0 = (const uint8_t *)rec_at(h, cand[0]);
            size_t room = h->ring_size - cand[0] % h->ring_size;
            for (size_t o = 64; o < 1024 && o < room; o += 64)
                __builtin_prefetch(r0 + o);
        }
        for (int i = 0; i < ncand; i++) {
            int rc = rec_copy(h, cand[i], buf, buf_len);
            if (rc == COPY_TORN)
                torn = 1;
            if (rc != COPY_OK ||
                memcmp(((struct shm_rec_sh *)buf)->digest, digest, SHM_DIGEST_LEN) != 0)
                continue;
            answer_from_copy(out, buf, cand[i]);
            if (out->session_end_ms <= now_ms) {
                STAT_ADD(h, expired, 1);
                STAT_ADD(h, misses, 1);
                if (h->writable)
                    shm_delete(h, digest);
                return -ENOENT;
            }
            STAT_ADD(h, hits, 1);
            if ((flags & SHM_LOOKUP_PROMOTE) && h->writable && head > tail &&
                cand[i] - tail < (head - tail) / 4 && under_pressure(h, head - tail))
                promote(h, out, &s.b->slot[cslot[i]], v[cslot[i]]);
            return 0;
        }
        if (!torn)
            break;
        STAT_ADD(h, retries, 1);
    }
    STAT_ADD(h, misses, 1);
    return -ENOENT;
}

/* ---- whole-table walks: purge, sweep, foreach ---- */

enum { MATCH_ALL, MATCH_USER, MATCH_CRED, MATCH_EXPIRED, MATCH_SET };

static int in_sorted(const uint64_t *a, size_t n, uint64_t v)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid] == v)
            return 1;
        if (a[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

uint64_t shm_user_hash(const char *user, size_t len)
{
    return XXH3_64bits(user, len);
}

/* Clear every slot whose record matches. Live records never change, so comparing in place is safe:
 * a record being overwritten is already dead, and clearing its slot is right either way. A slot
 * that changed under the walk 16 times running is left, and counted in *skipped (may be NULL). */
static int purge_matching(struct shm *h, int what, const void *arg, size_t arg_len, int64_t now,
                          size_t *skipped)
{
    int n = 0;

    if (!h->writable)
        return -EROFS;
    for (uint64_t b = 0; b < h->nbuckets; b++) {
        for (unsigned i = 0, tries = 0; i < SHM_BUCKET_SLOTS; i++, tries = 0) {
            uint64_t *slot = &h->index[b].slot[i];
            uint64_t v, head, pos;
            struct shm_rec_sh *r;
            uint32_t len;
            int hit = 0;
        again:
            v = load_acq(slot);
            if (v == 0)
                continue;
            head = load_acq(&h->hdr->head);
            pos = slot_pos(h, v, head);
            r = rec_at(h, pos);
            len = (pos == 0 || pos < load_acq(&h->hdr->tail)) ? 0 : rec_len_in_place(h, pos, r);
            if (len == 0) {
                hit = 1; /* dead or unusable: garbage whatever the purge */
            } else if (what == MATCH_ALL) {
                hit = 1;
            } else if (what == MATCH_USER) {
                /* Each field read once: the bytes may be scribbled on between two reads. */
                uint16_t host_len = __atomic_load_n(&r->host_len, __ATOMIC_RELAXED);
                uint16_t user_len = __atomic_load_n(&r->user_len, __ATOMIC_RELAXED);
                hit = user_len == arg_len && REC_HDR + host_len + arg_len <= len &&
                      memcmp((uint8_t *)r + REC_HDR + host_len, arg, arg_len) == 0;
            } else if (what == MATCH_CRED) {
                hit = memcmp(r->cred, arg, SHM_CRED_LEN) == 0;
            } else if (what == MATCH_SET) {
                const struct shm_purge_set *s = arg;
                uint16_t host_len = __atomic_load_n(&r->host_len, __ATOMIC_RELAXED);
                uint16_t user_len = __atomic_load_n(&r->user_len, __ATOMIC_RELAXED);
                uint64_t c;
                memcpy(&c, r->cred, sizeof(c));
                hit = in_sorted(s->creds, s->ncreds, c);
                if (hit && s->found && user_len && REC_HDR + host_len + user_len <= len &&
                    in_sorted(s->find, s->nfind, c))
                    s->found((const char *)r + REC_HDR + host_len, user_len, s->arg);
                hit = hit || (s->nusers && REC_HDR + host_len + user_len <= len &&
                              in_sorted(s->users, s->nusers,
                                        XXH3_64bits((uint8_t *)r + REC_HDR + host_len, user_len)));
            } else {
                hit = r->session_end_ms <= now;
            }
            if (!hit)
                continue;
            if (cas(slot, v, 0)) {
                live_add(h, -1);
                n += len != 0; /* dead slots are cleared but not counted as purged */
            } else if (++tries < 16) {
                goto again; /* changed under us, perhaps by a promotion's copy: look again */
            } else if (skipped) {
                ++*skipped;
            }
        }
    }
    return n;
}

int shm_purge_user(struct shm *h, const char *user, size_t len)
{
    int n = purge_matching(h, MATCH_USER, user, len, 0, NULL);

    if (n > 0)
        STAT_ADD(h, purges, (uint64_t)n);
    return n;
}

int shm_purge_cred(struct shm *h, const uint8_t cred[SHM_CRED_LEN])
{
    int n = purge_matching(h, MATCH_CRED, cred, SHM_CRED_LEN, 0, NULL);

    if (n > 0)
        STAT_ADD(h, purges, (uint64_t)n);
    return n;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

void shm_purge_set_sort(struct shm_purge_set *s)
{
    if (s->ncreds) /* an empty array may be NULL, which qsort must not get */
        qsort(s->creds, s->ncreds, sizeof(*s->creds), cmp_u64);
    if (s->nusers)
        qsort(s->users, s->nusers, sizeof(*s->users), cmp_u64);
}

int shm_purge_set(struct shm *h, struct shm_purge_set *s)
{
    int n;

    s->skipped = 0;
    if (s->ncreds == 0 && s->nusers == 0)
        return 0;
    n = purge_matching(h, MATCH_SET, s, 0, 0, &s->skipped);
    if (n > 0)
        STAT_ADD(h, purges, (uint64_t)n);
    return n;
}

int shm_purge_all(struct shm *h)
{
    int n = purge_matching(h, MATCH_ALL, NULL, 0, 0, NULL);

    if (n > 0)
        STAT_ADD(h, purges, (uint64_t)n);
    return n;
}

int shm_sweep(struct shm *h, uint64_t first, uint64_t count, int64_t now_ms)
{
    struct shm sub = *h;
    int n;

    if (first >= h->nbuckets)
        return 0;
    if (count > h->nbuckets - first)
        count = h->nbuckets - first;
    sub.index = h->index + first;
    sub.nbuckets = count;
    n = purge_matching(&sub, MATCH_EXPIRED, NULL, 0, now_ms, NULL);
    if (n > 0)
        STAT_ADD(h, expired, (uint64_t)n);
    return n;
}

int shm_foreach(struct shm *h, int64_t now_ms, shm_foreach_fn fn, void *arg)
{
    static __thread uint8_t buf[SHM_MAX_RECORD];

    for (uint64_t b = 0; b < h->nbuckets; b++) {
        for (unsigned i = 0; i < SHM_BUCKET_SLOTS; i++) {
            uint64_t v = load_acq(&h->index[b].slot[i]), pos;
            struct shm_answer a;
            int rc;

            if (v == 0)
                continue;
            pos = slot_pos(h, v, load_acq(&h->hdr->head));
            if (pos == 0 || pos < load_acq(&h->hdr->tail) || rec_copy(h, pos, buf, sizeof(buf)))
                continue;
            answer_from_copy(&a, buf, pos);
            if (a.session_end_ms <= now_ms)
                continue;
            if ((rc = fn(&a, arg)) != 0)
                return rc;
        }
    }
    return 0;
}

void shm_stats_get(const struct shm *h, struct shm_stats *st)
{
    const struct shm_hdr_sh *hd = h->hdr;
    uint64_t head = load_acq(&hd->head), tail = load_acq(&hd->tail);

    memset(st, 0, sizeof(*st));
    for (unsigned i = 0; i < SHM_STRIPES; i++) {
        const struct shm_stats_sh *s = &hd->stats[i];
#define SUM(f) st->f += __atomic_load_n(&s->f, __ATOMIC_RELAXED)
        SUM(lookups);
        SUM(hits);
        SUM(misses);
        SUM(expired);
        SUM(inserts);
        SUM(replaces);
        SUM(deletes);
        SUM(evictions);
        SUM(purges);
        SUM(retries);
        SUM(promotions);
        for (unsigned c = 0; c < SHM_SIZE_CLASSES; c++)
            SUM(size_class[c]);
#undef SUM
    }
    st->live = __atomic_load_n(&hd->live, __ATOMIC_RELAXED);
    st->capacity = h->capacity;
    st->ring_size = h->ring_size;
    st->ring_used = head >= tail && head - tail <= h->ring_size ? head - tail : h->ring_size;
    st->segment_bytes = h->map_size;
    st->generation = h->generation;
}

/* ---- consistency check ---- */

static void problem(struct shm_check_report *r, const char *fmt, uint64_t a, uint64_t b)
{
    if (r->first_problem[0] == 0)
        snprintf(r->first_problem, sizeof(r->first_problem), fmt, (unsigned long long)a,
                 (unsigned long long)b);
}

/*
 * A record header that sealed itself at ring offset o in an older lap than q: its position is below
 * q, maps to o, and its length and checksum hold in place. Such bytes can only come from a writer
 * that was descheduled for a whole lap of the log between its reservation and its stores
 * (shm/README: "a writer descheduled for a lap").
 */
static int sealed_older(const struct shm *h, uint64_t o, uint64_t q, uint64_t *end)
{
    const struct shm_rec_sh *r = (const struct shm_rec_sh *)(h->ring + o);
    uint64_t rp = load_acq(&r->pos);
    uint32_t len = __atomic_load_n(&r->len, __ATOMIC_RELAXED);

    if (rp >= q || rp % h->ring_size != o || len < SHM_REC_ALIGN || len > SHM_MAX_RECORD ||
        o + len > h->ring_size)
        return 0;
    *end = o + len;
    if (r->kind == SHM_REC_FILLER)
        return 1;
    return r->kind == SHM_REC_ANSWER && len >= REC_HDR &&
           XXH3_64bits_withSeed((const uint8_t *)r + 16, len - 16, rp) == r->check;
}

/* Whether the record at q (in the live window, failing verification) was overwritten by such a late
 * writer: a record or filler sealed by an older lap overlaps q's bytes. Readers treat the slot as a
 * miss and writers clear it when they meet it; anything else failing verification is a real fault.
 */
static int overwritten_late(const struct shm *h, uint64_t q)
{
    uint64_t qo = q % h->ring_size, end;
    const struct shm_rec_sh *rq = rec_at(h, q);
    uint64_t qlen = rec_len_in_place(h, q, rq) ? rq->len : REC_HDR;
    uint64_t o = qo > SHM_MAX_RECORD ? qo - SHM_MAX_RECORD : 0;

    for (o -= o % SHM_REC_ALIGN; o < qo + qlen && o + REC_HDR <= h->ring_size; o += SHM_REC_ALIGN)
        if (sealed_older(h, o, q, &end) && end > qo)
            return 1;
    return 0;
}

int shm_check(struct shm *h, int fix, struct shm_check_report *r)
{
    static __thread uint8_t buf[SHM_MAX_RECORD];
    uint64_t head = load_acq(&h->hdr->head), tail = load_acq(&h->hdr->tail);

    memset(r, 0, sizeof(*r));
    if (tail <= head && head - tail > h->ring_size)
        r->head_overrun = head - tail - h->ring_size;
    if (tail > head || r->head_overrun > SHM_CHECK_MAX_OVERRUN)
        problem(r, "tail %llu and head %llu are more than a ring apart", tail, head);
    for (uint64_t b = 0; b < h->nbuckets; b++) {
        for (unsigned i = 0; i < SHM_BUCKET_SLOTS; i++) {
            uint64_t v = load_acq(&h->index[b].slot[i]), pos;
            const struct shm_rec_sh *c = (const struct shm_rec_sh *)buf;
            struct slot_ref s;
            int rc;

            if (v == 0)
                continue;
            r->slots_used++;
            pos = slot_pos(h, v, head);
            if (pos == 0 || pos < tail) {
                r->slots_dead++;
                continue;
            }
            rc = rec_copy(h, pos, buf, sizeof(buf));
            if (rc == COPY_GONE) {
                r->slots_dead++;
                continue;
            }
            if (rc == COPY_TORN && overwritten_late(h, pos)) {
                r->slots_overwritten++;
                if (fix && h->writable && cas(&h->index[b].slot[i], v, 0))
                    r->slots_used--; /* the recount below stores slots_used */
                continue;
            }
            s = slot_ref(h, c->digest);
            if (rc != COPY_OK || s.b != &h->index[b] || s.tag != slot_tag(v)) {
                r->slots_bad++;
                problem(r, "bucket %llu slot names position %llu: no valid record there", b, pos);
                continue;
            }
            r->slots_live++;
        }
    }
    /* The log between tail and head must be walkable: records and fillers, or garbage skipped.
     * Walked by distance from tail, so positions near 2^64 (a scribbled head) cannot wrap. */
    if (tail <= head && r->head_overrun <= SHM_CHECK_MAX_OVERRUN) {
        uint64_t end = head - tail - r->head_overrun; /* reservations past a ring: not written */
        for (uint64_t d = (0 - tail) % SHM_REC_ALIGN; d < end; r->records_walked++) {
            uint64_t t = tail + d;
            uint32_t len = rec_len_in_place(h, t, rec_at(h, t));
            d += len ? align16(len) : SHM_REC_ALIGN;
        }
    }
    r->live_counter = __atomic_load_n(&h->hdr->live, __ATOMIC_RELAXED);
    if (fix && h->writable)
        __atomic_store_n(&h->hdr->live, (int64_t)r->slots_used, __ATOMIC_RELAXED);
    return r->slots_bad || r->first_problem[0] ? -EUCLEAN : 0;
}

/* ---- segments: create, attach ---- */

static int name_ok(const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || n > 200 || name[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* name_ok() names are at most 200 bytes, so these paths always fit. */
#define SEG_PATH_MAX 256
static void seg_path(char out[SEG_PATH_MAX], const char *name, const char *prefix, int tmp_pid)
{
    if (tmp_pid)
        snprintf(out, SEG_PATH_MAX, "/dev/shm/%s%.200s.%d.tmp", prefix, name, tmp_pid);
    else
        snprintf(out, SEG_PATH_MAX, "/dev/shm/%s%.200s", prefix, name);
}

struct geometry {
    uint64_t capacity, nbuckets, ring_size, total;
};

static int geometry(const struct shm_params *p, struct geometry *g)
{
    uint64_t ring = p->ring_bytes ? p->ring_bytes : p->capacity * SHM_DEFAULT_BYTES_PER_ENTRY;

    if (p->capacity < 1 || p->capacity > (UINT64_C(1) << 28))
        return -EINVAL;
    g->capacity = p->capacity;
    /* Four slots per entry: a bucket of 8 holds 2 answers on average, and one full of live answers
     * (which then evicts its own oldest, out of LRU order) is rarer than 1 in 4000. */
    for (g->nbuckets = 1; g->nbuckets * SHM_BUCKET_SLOTS < 4 * p->capacity; g->nbuckets <<= 1)
        ;
    ring = align16(ring);
    if (ring < 4 * SHM_MAX_RECORD)
        ring = 4 * SHM_MAX_RECORD;
    if (ring > (UINT64_C(1) << 42))
        return -EINVAL;
    g->ring_size = ring;
    g->total = SHM_HDR_SIZE + g->nbuckets * SHM_BUCKET_SIZE + ring;
    return 0;
}

/* Validate a header found in memory of len bytes; fill the handle's copies of its geometry. */
static int adopt(struct shm *h, void *mem, size_t len, int writable)
{
    struct shm_hdr_sh *hd = mem;
    uint64_t idx_bytes;

    if (len < SHM_HDR_SIZE || hd->magic != SHM_MAGIC || hd->version != SHM_LAYOUT_VERSION ||
        hd->hdr_size != SHM_HDR_SIZE || hd->total_size != len ||
        hd->bucket_size != SHM_BUCKET_SIZE || hd->rec_align != SHM_REC_ALIGN ||
        hd->max_record != SHM_MAX_RECORD || hd->index_off != SHM_HDR_SIZE || hd->nbuckets == 0 ||
        (hd->nbuckets & (hd->nbuckets - 1)) != 0 || hd->nbuckets > (UINT64_C(1) << 40) ||
        hd->ring_size % SHM_REC_ALIGN != 0 || hd->ring_size < 4 * SHM_MAX_RECORD ||
        hd->ring_size > (UINT64_C(1) << 42) || hd->capacity == 0)
        return -EPROTO;
    idx_bytes = hd->nbuckets * SHM_BUCKET_SIZE;
    if (hd->ring_off != SHM_HDR_SIZE + idx_bytes || hd->ring_off + hd->ring_size != len)
        return -EPROTO;
    h->hdr = hd;
    h->index = (struct shm_bucket_sh *)((uint8_t *)mem + SHM_HDR_SIZE);
    h->ring = (uint8_t *)mem + hd->ring_off;
    h->map_size = len;
    h->nbuckets = hd->nbuckets;
    h->ring_size = hd->ring_size;
    h->capacity = hd->capacity;
    h->generation = hd->generation;
    h->writable = writable;
    shm__key_init(h, hd->key);
    return 0;
}

int shm_attach_mem(struct shm *h, void *mem, size_t len, int writable)
{
    memset(h, 0, sizeof(*h));
    h->fd = -1;
    return adopt(h, mem, len, writable);
}

int shm_in_my_groups(uint32_t g)
{
    gid_t list[256];
    int n = getgroups(256, list);

    if (g == getegid())
        return 1;
    for (int i = 0; i < n; i++)
        if (list[i] == g)
            return 1;
    return 0;
}

/* Whether a segment found in /dev/shm (anyone may plant a file there) is safe to use, judged on the
 * open descriptor's stat so nothing can be swapped in between. A writer needs a regular file it
 * owns that nobody else can read or write: the table holds identity headers and the hash key. A
 * reader accepts root's or its own segment that nobody else can write. -EPERM for a foreign owner,
 * -EACCES for a loose mode, -EBADF for anything but a regular file.
 *
 * A writer with --shm-group (p->has_group) also accepts group read for exactly that group. A reader
 * accepts a foreign owner only through a group it is in that was given read (--shm-group): the
 * members of that group are trusted as much as the daemon's user. */
static int owner_ok(const struct stat *st, int writable, const struct shm_params *p)
{
    uid_t me = geteuid();
    int group_read = (st->st_mode & 040) != 0;

    if (!S_ISREG(st->st_mode))
        return -EBADF;
    if (writable) {
        if (st->st_uid != me)
            return -EPERM;
        if (st->st_mode & 077 & ~(p && p->has_group && st->st_gid == p->group ? 040 : 0))
            return -EACCES;
        return 0;
    }
    if (st->st_mode & 022)
        return -EACCES;
    if (st->st_uid != me && st->st_uid != 0 && !(group_read && shm_in_my_groups(st->st_gid)))
        return -EPERM;
    return 0;
}

static int attach(struct shm *h, const char *name, int writable, const struct shm_params *p);

int shm_attach(struct shm *h, const char *name, int writable)
{
    return attach(h, name, writable, NULL);
}

static int attach(struct shm *h, const char *name, int writable, const struct shm_params *p)
{
    char path[SEG_PATH_MAX];
    struct stat st;
    void *mem;
    int fd, rc;

    memset(h, 0, sizeof(*h));
    h->fd = -1;
    if (!name_ok(name))
        return -EINVAL;
    seg_path(path, name, "", 0);
    fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) == 0 && (rc = owner_ok(&st, writable, p)) < 0) {
        close(fd);
        return rc;
    }
    if (fstat(fd, &st) < 0 || st.st_size < (off_t)SHM_HDR_SIZE) {
        rc = st.st_size < (off_t)SHM_HDR_SIZE ? -EPROTO : -errno;
        close(fd);
        return rc;
    }
    mem =
        mmap(NULL, (size_t)st.st_size, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) {
        rc = -errno;
        close(fd);
        return rc;
    }
    if ((rc = adopt(h, mem, (size_t)st.st_size, writable)) < 0) {
        munmap(mem, (size_t)st.st_size);
        close(fd);
        return rc;
    }
    h->fd = fd;
    snprintf(h->name, sizeof(h->name), "%s", name);
    return 0;
}

void shm_detach(struct shm *h)
{
    if (h->fd >= 0) {
        munmap(h->hdr, h->map_size);
        close(h->fd);
    }
    memset(h, 0, sizeof(*h));
    h->fd = -1;
}

int shm_retired(const struct shm *h)
{
    return __atomic_load_n(&h->hdr->retired, __ATOMIC_ACQUIRE) != 0;
}

void shm_bus_mark(struct shm *h, uint64_t ms)
{
    uint64_t cur = __atomic_load_n(&h->hdr->bus_read_ms, __ATOMIC_RELAXED);

    while (cur < ms && !__atomic_compare_exchange_n(&h->hdr->bus_read_ms, &cur, ms, 1,
                                                    __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
}

uint64_t shm_bus_mark_get(const struct shm *h)
{
    return __atomic_load_n(&h->hdr->bus_read_ms, __ATOMIC_RELAXED);
}

static int64_t wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Mark the segment now under name retired, so attached readers know to reopen. */
static void retire(const char *name)
{
    struct shm old;

    if (shm_attach(&old, name, 1) == 0) {
        __atomic_store_n(&old.hdr->retired, 1, __ATOMIC_RELEASE);
        shm_detach(&old);
    }
}

int shm_create(struct shm *h, const char *name, const struct shm_params *p)
{
    char path[SEG_PATH_MAX], final[SEG_PATH_MAX];
    struct shm_hdr_sh *hd;
    struct geometry g;
    void *mem;
    int fd, rc;

    memset(h, 0, sizeof(*h));
    h->fd = -1;
    if (!name_ok(name) || (rc = geometry(p, &g)) < 0)
        return -EINVAL;
    /* Build it under a temporary name, then rename over the old one: no process ever attaches a
     * half-initialised segment. */
    seg_path(path, name, ".", (int)getpid());
    fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    /* fallocate, not just ftruncate: the pages are reserved now, so a /dev/shm too small for the
     * segment is -ENOSPC here instead of SIGBUS at some later insert, and no insert pays for a page
     * fault. */
    if ((p->has_group && fchown(fd, (uid_t)-1, (gid_t)p->group) < 0) ||
        fchmod(fd, p->has_group ? 0640 : 0600) < 0 || ftruncate(fd, (off_t)g.total) < 0 ||
        (rc = posix_fallocate(fd, 0, (off_t)g.total)) != 0) {
        rc = rc > 0 ? -rc : -errno;
        goto fail;
    }
    mem = mmap(NULL, g.total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) {
        rc = -errno;
        goto fail;
    }
    hd = mem;
    hd->magic = SHM_MAGIC;
    hd->version = SHM_LAYOUT_VERSION;
    hd->hdr_size = SHM_HDR_SIZE;
    hd->total_size = g.total;
    if (getrandom(&hd->generation, sizeof(hd->generation), 0) != sizeof(hd->generation))
        hd->generation = (uint64_t)wall_ms() ^ ((uint64_t)getpid() << 32);
    hd->created_ms = wall_ms();
    hd->capacity = g.capacity;
    hd->nbuckets = g.nbuckets;
    hd->index_off = SHM_HDR_SIZE;
    hd->ring_off = SHM_HDR_SIZE + g.nbuckets * SHM_BUCKET_SIZE;
    hd->ring_size = g.ring_size;
    hd->bucket_size = SHM_BUCKET_SIZE;
    hd->rec_align = SHM_REC_ALIGN;
    hd->max_record = SHM_MAX_RECORD;
    if (p->key) {
        memcpy(hd->key, p->key, SHM_KEY_LEN);
        hd->flags |= SHM_FLAG_KEY_FROM_FILE;
    } else if (getrandom(hd->key, SHM_KEY_LEN, 0) != SHM_KEY_LEN) {
        rc = -EIO;
        munmap(mem, g.total);
        goto fail;
    }
    hd->head = SHM_REC_ALIGN; /* position 0 is never a record's */
    hd->tail = SHM_REC_ALIGN;
    if ((rc = adopt(h, mem, g.total, 1)) < 0) {
        munmap(mem, g.total);
        goto fail;
    }
    h->fd = fd;
    snprintf(h->name, sizeof(h->name), "%s", name);
    retire(name);
    seg_path(final, name, "", 0);
    if (rename(path, final) < 0) {
        rc = -errno;
        shm_detach(h);
        unlink(path);
        return rc;
    }
    return 0;
fail:
    close(fd);
    unlink(path);
    return rc;
}

int shm_open_or_create(struct shm *h, const char *name, const struct shm_params *p, int *created)
{
    struct geometry g;
    int rc;

    if (created)
        *created = 0;
    if (!name_ok(name) || geometry(p, &g) < 0)
        return -EINVAL;
    /* Only a segment that is absent or of another layout is (re)created; one that is unsafe to use
     * is refused, never silently replaced. */
    rc = attach(h, name, 1, p);
    if (rc < 0 && rc != -ENOENT && rc != -EPROTO)
        return rc;
    if (rc == 0) {
        int from_file = (h->hdr->flags & SHM_FLAG_KEY_FROM_FILE) != 0;
        int key_ok =
            p->key ? from_file && memcmp(h->hdr->key, p->key, SHM_KEY_LEN) == 0 : !from_file;
        if (h->capacity == g.capacity && h->ring_size == g.ring_size && !shm_retired(h) && key_ok) {
            /* Adopted as 0600 with --shm-group now given: open it to that group. */
            if (p->has_group &&
                (fchown(h->fd, (uid_t)-1, (gid_t)p->group) < 0 || fchmod(h->fd, 0640) < 0)) {
                rc = -errno;
                shm_detach(h);
                return rc;
            }
            return 0;
        }
        shm_detach(h);
    }
    rc = shm_create(h, name, p);
    if (rc == 0 && created)
        *created = 1;
    return rc;
}
