/*
 * sids.c — the session index (sids.h): session key -> credential digests of its answers.
 *
 * The table is 16 parts, each a power-of-two array of entries under its own mutex; a key's part
 * is its top 4 bits, its home slot its low bits (the key is already a hash: SHA-256). An entry
 * lives in one of the SIDS_PROBE slots from its home (wrapping within the part), and both insert
 * and lookup look at exactly those: no tombstones, no rehash, bounded work.
 *
 * An entry is live while now < until (the end of its answer's life: the answer is not served
 * after it, docs/daemon.md "Lifetimes"); a slot whose entry ended is free. When an insert finds
 * all SIDS_PROBE slots live, it replaces the entry that ends first and remembers that end as the
 * part's lossy_until: until then a lookup in that part may miss credentials, and says so. A
 * lookup never misses an entry for another reason: the same (key, cred) is kept in one slot (an
 * insert finds it within the window before taking a free slot), and an entry leaves its window
 * only by ending or by being dropped.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "pct.h"
#include "sids.h"

#define SIDS_PARTS 16
#define SIDS_PART_MIN 64 /* slots per part at least: more than SIDS_PROBE */

struct sids_entry {
    uint64_t key;
    int64_t until_ms; /* 0: never used */
    uint8_t cred[SHM_CRED_LEN];
};

struct sids_part {
    pthread_mutex_t mu;
    struct sids_entry *e;
    int64_t lossy_until_ms; /* under mu */
} __attribute__((aligned(64)));

struct sids {
    struct sids_part part[SIDS_PARTS];
    uint64_t mask;       /* slots per part - 1 */
    uint64_t used;       /* slots ever filled (atomic) */
    uint64_t dropped;    /* live entries replaced (atomic) */
    int64_t adopt_at_ms; /* 0: nothing to adopt; INT64_MAX: not yet known (atomic) */
};

struct sids *sids_new(uint64_t capacity, int adopt_pending)
{
    struct sids *s = calloc(1, sizeof(*s));
    uint64_t per = SIDS_PART_MIN, want = capacity * SIDS_PER_ANSWER / SIDS_PARTS;

    if (!s)
        return NULL;
    while (per < want)
        per <<= 1;
    s->mask = per - 1;
    s->adopt_at_ms = adopt_pending ? INT64_MAX : 0;
    for (int i = 0; i < SIDS_PARTS; i++) {
        pthread_mutex_init(&s->part[i].mu, NULL);
        if (!(s->part[i].e = calloc(per, sizeof(struct sids_entry)))) {
            sids_free(s);
            return NULL;
        }
    }
    return s;
}

void sids_free(struct sids *s)
{
    if (!s)
        return;
    for (int i = 0; i < SIDS_PARTS; i++) {
        free(s->part[i].e);
        pthread_mutex_destroy(&s->part[i].mu);
    }
    free(s);
}

uint64_t sids_key(const char *sid, size_t len)
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    uint64_t k = 0;

    SHA256((const unsigned char *)sid, len, md);
    for (int i = 0; i < 8; i++)
        k = k << 8 | md[i];
    return k;
}

static struct sids_part *part_of(struct sids *s, uint64_t key)
{
    return &s->part[key >> 60];
}

int sids_insert(struct sids *s, uint64_t key, const uint8_t cred[SHM_CRED_LEN], int64_t until_ms,
                int64_t now_ms)
{
    struct sids_part *p = part_of(s, key);
    struct sids_entry *free_e = NULL, *first_end = NULL;
    int dropped = 0;

    if (until_ms <= now_ms)
        return 0; /* already over: nothing to find */
    pthread_mutex_lock(&p->mu);
    for (uint64_t i = 0; i < SIDS_PROBE; i++) {
        struct sids_entry *e = &p->e[(key + i) & s->mask];

        if (e->until_ms > now_ms) {
            if (e->key == key && memcmp(e->cred, cred, SHM_CRED_LEN) == 0) {
                if (until_ms > e->until_ms)
                    e->until_ms = until_ms;
                pthread_mutex_unlock(&p->mu);
                return 0;
            }
            if (!first_end || e->until_ms < first_end->until_ms)
                first_end = e;
        } else if (!free_e) {
            free_e = e;
        }
    }
    if (!free_e) { /* every slot live: drop the entry that ends first */
        free_e = first_end;
        if (free_e->until_ms > p->lossy_until_ms)
            p->lossy_until_ms = free_e->until_ms;
        __atomic_fetch_add(&s->dropped, 1, __ATOMIC_RELAXED);
        dropped = 1;
    } else if (free_e->until_ms == 0) {
        __atomic_fetch_add(&s->used, 1, __ATOMIC_RELAXED);
    }
    free_e->key = key;
    free_e->until_ms = until_ms;
    memcpy(free_e->cred, cred, SHM_CRED_LEN);
    pthread_mutex_unlock(&p->mu);
    return dropped;
}

/* Add key's live entries to creds[*n, cap), each digest once; 1 if key's part is lossy. */
static int lookup_key(struct sids *s, uint64_t key, int64_t now_ms, uint8_t (*creds)[SHM_CRED_LEN],
                      unsigned cap, unsigned *n)
{
    struct sids_part *p = part_of(s, key);
    int lossy;

    pthread_mutex_lock(&p->mu);
    for (uint64_t i = 0; i < SIDS_PROBE; i++) {
        const struct sids_entry *e = &p->e[(key + i) & s->mask];
        unsigned j;

        if (e->until_ms <= now_ms || e->key != key)
            continue;
        for (j = 0; j < *n; j++)
            if (memcmp(creds[j], e->cred, SHM_CRED_LEN) == 0)
                break;
        if (j == *n && *n < cap)
            memcpy(creds[(*n)++], e->cred, SHM_CRED_LEN);
    }
    lossy = p->lossy_until_ms > now_ms;
    pthread_mutex_unlock(&p->mu);
    return lossy;
}

/* A digit of authentik's hash, which it writes in lowercase hex: an upper-case one is not its. */
static int hash_hexval(char c)
{
    return c >= 'A' && c <= 'F' ? -1 : pct_hexval(c);
}

unsigned sids_lookup(struct sids *s, const char *id, int64_t now_ms, uint8_t (*creds)[SHM_CRED_LEN],
                     unsigned cap, int *lossy)
{
    size_t len = strlen(id);
    unsigned n = 0;
    int hex = len == 2 * SHA256_DIGEST_LENGTH;

    *lossy = sids_adopt_due(s) != 0;
    for (size_t i = 0; hex && i < len; i++)
        hex = hash_hexval(id[i]) >= 0;
    if (hex) { /* the SHA-256 of the sid: its first 8 bytes are the key */
        uint64_t k = 0;

        for (int i = 0; i < 16; i++)
            k = k << 4 | (uint64_t)hash_hexval(id[i]);
        *lossy |= lookup_key(s, k, now_ms, creds, cap, &n);
    }
    *lossy |= lookup_key(s, sids_key(id, len), now_ms, creds, cap, &n); /* the sid itself */
    return n;
}

void sids_adopt_at(struct sids *s, int64_t at_mono_ms)
{
    int64_t pending = INT64_MAX;

    /* Only a pending adoption gets a time; 0 (done or never needed) stays. */
    __atomic_compare_exchange_n(&s->adopt_at_ms, &pending, at_mono_ms > 0 ? at_mono_ms : 1, 0,
                                __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

int64_t sids_adopt_due(struct sids *s)
{
    return __atomic_load_n(&s->adopt_at_ms, __ATOMIC_SEQ_CST);
}

int sids_adopted(struct sids *s, int64_t started_mono_ms)
{
    int64_t at = __atomic_load_n(&s->adopt_at_ms, __ATOMIC_SEQ_CST);

    if (at != 0 && (at == INT64_MAX || started_mono_ms < at))
        return 0;
    __atomic_store_n(&s->adopt_at_ms, 0, __ATOMIC_SEQ_CST); /* only the feed thread adopts */
    return 1;
}

uint64_t sids_entries(struct sids *s)
{
    return __atomic_load_n(&s->used, __ATOMIC_RELAXED);
}

uint64_t sids_slots(struct sids *s)
{
    return (s->mask + 1) * SIDS_PARTS;
}

uint64_t sids_dropped(struct sids *s)
{
    return __atomic_load_n(&s->dropped, __ATOMIC_RELAXED);
}

int sids_lossy(struct sids *s, int64_t now_ms)
{
    int lossy = sids_adopt_due(s) != 0;

    for (int i = 0; i < SIDS_PARTS && !lossy; i++) {
        pthread_mutex_lock(&s->part[i].mu);
        lossy = s->part[i].lossy_until_ms > now_ms;
        pthread_mutex_unlock(&s->part[i].mu);
    }
    return lossy;
}
