/*
 * epoch.c — purge stamps (epoch.h says what they are for and why the order holds).
 *
 * Two tables of EPOCH_SLOTS stamps shared by hash, one for user names and one for credential
 * digests, plus one stamp for "everything"; each stamp is a sequence number and a wall time. Both
 * only grow (a compare-and-swap maximum), so two purges racing on one slot leave the later of each.
 *
 * Exact credential stamps: EPOCH_EXACT_MAX of them, in sets of EPOCH_EXACT_WAYS chosen by the
 * digest's hash; a set's digests fill one cache line (0: a free way), so a reader compares one
 * line. Writers (a stamp, the end of one) hold e->mu; readers take none. The order that makes the
 * end of a stamp safe, in epoch_walked: the number goes on in the shared slot first, then released
 * moves, then the stamp is cleared and its way freed. A reader reads the exact way before the
 * shared slot, so whichever it sees of the exact number, it sees the shared one too; a reader that
 * saw the wall time cleared sees released moved (fa.c looks again). A way taken anew is zero until
 * stamped.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "epoch.h"

#define EPOCH_SLOTS 65536u /* a power of two: 2 MiB of shared stamps */

struct stamp {
    uint64_t seq;
    int64_t wall_ms;
};

#define EPOCH_EXACT_WAYS 8u /* one cache line of digests */
#define EPOCH_EXACT_SETS (EPOCH_EXACT_MAX / EPOCH_EXACT_WAYS)
_Static_assert((EPOCH_EXACT_SETS & (EPOCH_EXACT_SETS - 1)) == 0, "sets: a power of two");

struct exact_set {
    _Alignas(64) uint64_t cred[EPOCH_EXACT_WAYS]; /* the digest, 0: free */
};

struct exact_stamp {
    struct stamp st;
    unsigned flags; /* EPOCH_FIND_USERS; under mu */
};

struct epochs {
    uint64_t seq;      /* the last number handed out */
    uint64_t released; /* moves with every epoch_walked that ended a stamp */
    struct stamp all;
    struct stamp user[EPOCH_SLOTS];
    struct stamp cred[EPOCH_SLOTS];
    pthread_mutex_t mu; /* writers of the exact stamps */
    size_t nexact;      /* ways taken; under mu (read without it as a hint) */
    struct exact_set set[EPOCH_EXACT_SETS];
    struct exact_stamp exact[EPOCH_EXACT_MAX]; /* set s way i at s * EPOCH_EXACT_WAYS + i */
};

struct epochs *epoch_new(void)
{
    struct epochs *e = calloc(1, sizeof(struct epochs));

    if (e && pthread_mutex_init(&e->mu, NULL) != 0) {
        free(e);
        return NULL;
    }
    return e;
}

void epoch_free(struct epochs *e)
{
    if (!e)
        return;
    pthread_mutex_destroy(&e->mu);
    free(e);
}

uint64_t epoch_now(struct epochs *e)
{
    return __atomic_load_n(&e->seq, __ATOMIC_SEQ_CST);
}

static void raise_u64(uint64_t *p, uint64_t v)
{
    uint64_t old = __atomic_load_n(p, __ATOMIC_SEQ_CST);

    while (old < v &&
           !__atomic_compare_exchange_n(p, &old, v, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        ;
}

static void raise_i64(int64_t *p, int64_t v)
{
    int64_t old = __atomic_load_n(p, __ATOMIC_SEQ_CST);

    while (old < v &&
           !__atomic_compare_exchange_n(p, &old, v, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        ;
}

static void stamp(struct epochs *e, struct stamp *st, int64_t now_ms)
{
    raise_i64(&st->wall_ms, now_ms);
    raise_u64(&st->seq, __atomic_add_fetch(&e->seq, 1, __ATOMIC_SEQ_CST));
}

static uint32_t user_slot(const char *user, size_t len)
{
    if (len > SHM_MAX_USER)
        len = SHM_MAX_USER;
    return (uint32_t)XXH3_64bits(user, len) & (EPOCH_SLOTS - 1);
}

/* A credential digest's shared slot, its exact set and its value as the exact table keeps it. */
struct cred_ref {
    uint32_t slot, set;
    uint64_t key;
};

static struct cred_ref cred_ref(const uint8_t cred[SHM_CRED_LEN])
{
    uint64_t h = XXH3_64bits(cred, SHM_CRED_LEN);
    struct cred_ref r = {(uint32_t)h & (EPOCH_SLOTS - 1),
                         (uint32_t)(h >> 32) & (EPOCH_EXACT_SETS - 1), 0};

    memcpy(&r.key, cred, sizeof(r.key));
    return r;
}

static struct cred_ref cred_ref_key(uint64_t key)
{
    uint8_t c[SHM_CRED_LEN];

    memcpy(c, &key, sizeof(key));
    return cred_ref(c);
}

/* The exact stamp of r's digest, or NULL. Without mu the way may be ending or taken anew meanwhile
 * (the file comment says why readers may read it anyway). */
static struct exact_stamp *exact_find(struct epochs *e, const struct cred_ref *r)
{
    const struct exact_set *s = &e->set[r->set];

    for (unsigned i = 0; i < EPOCH_EXACT_WAYS; i++)
        if (__atomic_load_n(&s->cred[i], __ATOMIC_SEQ_CST) == r->key)
            return &e->exact[r->set * EPOCH_EXACT_WAYS + i];
    return NULL;
}

void epoch_purge_user(struct epochs *e, const char *user, size_t len, int64_t now_ms)
{
    stamp(e, &e->user[user_slot(user, len)], now_ms);
}

int epoch_purge_cred(struct epochs *e, const uint8_t cred[SHM_CRED_LEN], int64_t now_ms,
                     unsigned flags)
{
    struct cred_ref r = cred_ref(cred);
    struct exact_stamp *x = NULL;

    if (r.key == 0) { /* 0 marks a free way */
        stamp(e, &e->cred[r.slot], now_ms);
        return 0;
    }
    pthread_mutex_lock(&e->mu);
    if (!(x = exact_find(e, &r))) {
        struct exact_set *s = &e->set[r.set];
        for (unsigned i = 0; i < EPOCH_EXACT_WAYS && !x; i++) {
            if (__atomic_load_n(&s->cred[i], __ATOMIC_RELAXED) != 0)
                continue;
            x = &e->exact[r.set * EPOCH_EXACT_WAYS + i]; /* zero since it was freed */
            __atomic_store_n(&s->cred[i], r.key, __ATOMIC_SEQ_CST);
            __atomic_add_fetch(&e->nexact, 1, __ATOMIC_RELAXED); /* epoch_exact_count */
        }
    }
    if (x) {
        x->flags |= flags;
        stamp(e, &x->st, now_ms);
    } else { /* the set is full: for good, in the shared slot */
        stamp(e, &e->cred[r.slot], now_ms);
    }
    pthread_mutex_unlock(&e->mu);
    return x != NULL;
}

size_t epoch_pending(struct epochs *e, uint64_t upto, uint64_t *creds, unsigned *flags, size_t cap)
{
    size_t n = 0;

    pthread_mutex_lock(&e->mu);
    for (uint32_t i = 0; i < EPOCH_EXACT_MAX && n < cap && e->nexact; i++) {
        uint64_t key = e->set[i / EPOCH_EXACT_WAYS].cred[i % EPOCH_EXACT_WAYS];
        if (key == 0 || e->exact[i].st.seq > upto)
            continue;
        creds[n] = key;
        flags[n++] = e->exact[i].flags;
    }
    pthread_mutex_unlock(&e->mu);
    return n;
}

/* The exact stamp of key if it is numbered at most upto (under mu), else NULL. */
static struct exact_stamp *walked_one(struct epochs *e, uint64_t key, uint64_t upto,
                                      struct cred_ref *r)
{
    struct exact_stamp *x;

    *r = cred_ref_key(key);
    if (key == 0 || !(x = exact_find(e, r)) || x->st.seq > upto)
        return NULL;
    return x;
}

void epoch_walked(struct epochs *e, const uint64_t *creds, size_t n, uint64_t upto)
{
    struct cred_ref r;
    struct exact_stamp *x;
    int any = 0;

    pthread_mutex_lock(&e->mu);
    for (size_t i = 0; i < n; i++) /* first the number, in the shared slot */
        if ((x = walked_one(e, creds[i], upto, &r))) {
            raise_u64(&e->cred[r.slot].seq, x->st.seq);
            any = 1;
        }
    if (any)
        __atomic_add_fetch(&e->released, 1, __ATOMIC_SEQ_CST);
    for (size_t i = 0; any && i < n; i++) { /* then the stamp, and its way */
        if (!(x = walked_one(e, creds[i], upto, &r)))
            continue;
        __atomic_store_n(&x->st.wall_ms, 0, __ATOMIC_SEQ_CST);
        __atomic_store_n(&x->st.seq, 0, __ATOMIC_SEQ_CST);
        x->flags = 0;
        __atomic_store_n(&e->set[r.set].cred[(size_t)(x - e->exact) % EPOCH_EXACT_WAYS], 0,
                         __ATOMIC_SEQ_CST);
        __atomic_sub_fetch(&e->nexact, 1, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&e->mu);
}

size_t epoch_exact_count(struct epochs *e)
{
    return __atomic_load_n(&e->nexact, __ATOMIC_RELAXED);
}

uint64_t epoch_released(struct epochs *e)
{
    return __atomic_load_n(&e->released, __ATOMIC_SEQ_CST);
}

void epoch_purge_all(struct epochs *e, int64_t now_ms)
{
    stamp(e, &e->all, now_ms);
}

int epoch_covered(struct epochs *e, uint64_t since, const char *user, size_t len,
                  const uint8_t cred[SHM_CRED_LEN])
{
    if (__atomic_load_n(&e->all.seq, __ATOMIC_SEQ_CST) > since)
        return 1;
    if (len && __atomic_load_n(&e->user[user_slot(user, len)].seq, __ATOMIC_SEQ_CST) > since)
        return 1;
    if (cred) { /* the exact way before the shared slot (the file comment says why) */
        struct cred_ref r = cred_ref(cred);
        struct exact_stamp *x = r.key ? exact_find(e, &r) : NULL;
        if (x && __atomic_load_n(&x->st.seq, __ATOMIC_SEQ_CST) > since)
            return 1;
        return __atomic_load_n(&e->cred[r.slot].seq, __ATOMIC_SEQ_CST) > since;
    }
    return 0;
}

int64_t epoch_last_ms(struct epochs *e, const char *user, size_t len,
                      const uint8_t cred[SHM_CRED_LEN])
{
    int64_t t = __atomic_load_n(&e->all.wall_ms, __ATOMIC_ACQUIRE), u;

    if (len && (u = __atomic_load_n(&e->user[user_slot(user, len)].wall_ms, __ATOMIC_ACQUIRE)) > t)
        t = u;
    if (cred) {
        struct cred_ref r = cred_ref(cred);
        struct exact_stamp *x = r.key ? exact_find(e, &r) : NULL;
        if (x && (u = __atomic_load_n(&x->st.wall_ms, __ATOMIC_SEQ_CST)) > t)
            t = u;
        if ((u = __atomic_load_n(&e->cred[r.slot].wall_ms, __ATOMIC_ACQUIRE)) > t)
            t = u;
    }
    return t;
}
