/*
 * test_epoch.c — purge stamps: what each kind of purge covers, that only purges after the taken
 * number count, and that concurrent purges leave every slot at least at the latest number stamped.
 * Exact credential stamps: a credential that shares a shared slot with a purged one is not hidden;
 * a full set falls back to the shared slot; a stamp ends only after a walk that began after it,
 * and no purge is lost while stamps and walks race.
 */
#include <pthread.h>
#include <stdlib.h>
#include <xxhash.h>

#include "check.h"
#include "epoch.h"

static const uint8_t cred_a[SHM_CRED_LEN] = {1, 2, 3, 4, 5, 6, 7, 8};
static const uint8_t cred_b[SHM_CRED_LEN] = {8, 7, 6, 5, 4, 3, 2, 1};

/* Wall stamps: an answer confirmed at or before the latest purge that covers it is hidden; one
 * confirmed later is not; a later stamp never lowers an earlier one. */
static void test_hides(void)
{
    struct epochs *e = epoch_new();

    CHECK_INT(epoch_last_ms(e, "alice", 5, cred_a), 0);
    CHECK_INT(epoch_hides(e, 1, "alice", 5, cred_a), 0);
    epoch_purge_user(e, "alice", 5, 5000);
    CHECK_INT(epoch_last_ms(e, "alice", 5, NULL), 5000);
    CHECK_INT(epoch_hides(e, 4999, "alice", 5, cred_b), 1);
    CHECK_INT(epoch_hides(e, 5000, "alice", 5, cred_b), 1); /* the same millisecond: hidden */
    CHECK_INT(epoch_hides(e, 5001, "alice", 5, cred_b), 0);
    CHECK_INT(epoch_hides(e, 10, "bob", 3, cred_b), 0);
    epoch_purge_user(e, "alice", 5, 4000); /* a clock stepped back: the stamp stays */
    CHECK_INT(epoch_last_ms(e, "alice", 5, NULL), 5000);
    epoch_purge_cred(e, cred_b, 7000, 0);
    CHECK_INT(epoch_last_ms(e, "alice", 5, cred_b), 7000);
    CHECK_INT(epoch_hides(e, 6000, "bob", 3, cred_b), 1);
    CHECK_INT(epoch_hides(e, 6000, "bob", 3, cred_a), 0);
    epoch_purge_all(e, 9000);
    CHECK_INT(epoch_hides(e, 8999, "", 0, NULL), 1);
    CHECK_INT(epoch_last_ms(e, "", 0, NULL), 9000);
    epoch_free(e);
}

static void test_kinds(void)
{
    struct epochs *e = epoch_new();
    uint64_t t0 = epoch_now(e), t1, t2;

    CHECK_INT(epoch_covered(e, t0, "alice", 5, cred_a), 0);
    epoch_purge_user(e, "alice", 5, 1000);
    t1 = epoch_now(e);
    CHECK(t1 > t0, "a purge moves the sequence on");
    CHECK_INT(epoch_covered(e, t0, "alice", 5, NULL), 1);
    CHECK_INT(epoch_covered(e, t0, "alice", 5, cred_b), 1);
    CHECK_INT(epoch_covered(e, t1, "alice", 5, NULL), 0); /* taken after the purge */
    CHECK_INT(epoch_covered(e, t0, "bob", 3, cred_b), 0); /* (no collision for these two) */
    CHECK_INT(epoch_covered(e, t0, "", 0, NULL), 0);
    epoch_purge_cred(e, cred_a, 2000, 0);
    CHECK_INT(epoch_covered(e, t1, "bob", 3, cred_a), 1);
    CHECK_INT(epoch_covered(e, t1, "bob", 3, cred_b), 0);
    CHECK_INT(epoch_covered(e, t1, "bob", 3, NULL), 0);
    t2 = epoch_now(e);
    epoch_purge_all(e, 3000);
    CHECK_INT(epoch_covered(e, t2, "", 0, NULL), 1);
    CHECK_INT(epoch_covered(e, t2, "carol", 5, cred_b), 1);
    CHECK_INT(epoch_covered(e, epoch_now(e), "carol", 5, cred_b), 0);
    /* names count up to SHM_MAX_USER bytes, as the segment keeps them */
    {
        char a[SHM_MAX_USER + 10], b[SHM_MAX_USER + 10];
        uint64_t t = epoch_now(e);
        memset(a, 'x', sizeof(a));
        memset(b, 'x', sizeof(b));
        b[SHM_MAX_USER + 5] = 'y';
        epoch_purge_user(e, a, sizeof(a), 4000);
        CHECK_INT(epoch_covered(e, t, b, sizeof(b), NULL), 1);
        CHECK_INT(epoch_covered(e, t, b, SHM_MAX_USER, NULL), 1);
    }
    epoch_free(e);
}

#define THREADS 4
#define ROUNDS 20000
static struct epochs *shared;

static void *purger(void *arg)
{
    (void)arg;
    for (int i = 0; i < ROUNDS; i++)
        epoch_purge_user(shared, "alice", 5, i);
    return NULL;
}

/* A reader that took its number before a purge it then waits for always sees itself covered. */
static void *reader(void *arg)
{
    int *bad = arg;

    for (int i = 0; i < ROUNDS; i++) {
        uint64_t t = epoch_now(shared);
        epoch_purge_cred(shared, cred_a, i, 0);
        if (!epoch_covered(shared, t, "", 0, cred_a))
            (*bad)++;
    }
    return NULL;
}

static void test_concurrent(void)
{
    pthread_t th[THREADS];
    int bad[THREADS] = {0};
    uint64_t before;

    shared = epoch_new();
    before = epoch_now(shared);
    for (int i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, i % 2 ? reader : purger, &bad[i]);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < THREADS; i++)
        CHECK_INT(bad[i], 0);
    CHECK_INT(epoch_now(shared) - before, (uint64_t)THREADS * ROUNDS);
    CHECK_INT(epoch_covered(shared, epoch_now(shared) - 1, "alice", 5, NULL) ||
                  epoch_covered(shared, epoch_now(shared) - 1, "", 0, cred_a),
              1); /* the last number went to one of the two slots */
    epoch_free(shared);
}

/* epoch.c chooses a credential's shared slot by the low 16 bits of the XXH3-64 of its digest, and
 * its exact set by bits 32-43: the tests find collisions on purpose. */
static uint32_t slot_of(const uint8_t c[SHM_CRED_LEN])
{
    return (uint32_t)XXH3_64bits(c, SHM_CRED_LEN) & 65535u;
}

static uint32_t set_of(const uint8_t c[SHM_CRED_LEN])
{
    return (uint32_t)(XXH3_64bits(c, SHM_CRED_LEN) >> 32) & (EPOCH_EXACT_MAX / 8 - 1);
}

#define CRED_N_FACTOR 0x9e3779b97f4a7c15ull
#define CRED_N_INVERSE 0xf1de83e19937733dull /* CRED_N_FACTOR * this == 1 (mod 2^64) */
static void cred_n(uint64_t n, uint8_t c[SHM_CRED_LEN])
{
    n = n * CRED_N_FACTOR + 1; /* never 0 for the n used here */
    memcpy(c, &n, SHM_CRED_LEN);
}

static uint64_t key_of(const uint8_t c[SHM_CRED_LEN])
{
    uint64_t k;

    memcpy(&k, c, sizeof(k));
    return k;
}

/* A credential that shares the shared slot of a purged one is no longer hidden, nor kept from being
 * stored; the purged one is both, until a walk that began after its stamp ends it. */
static void test_exact(void)
{
    struct epochs *e = epoch_new();
    uint8_t a[SHM_CRED_LEN], b[SHM_CRED_LEN];
    uint64_t t0, upto, keys[2], got[4], rel;
    unsigned flags[4];
    uint64_t n = 1;

    cred_n(n, a);
    do /* b: another credential of a's shared slot */
        cred_n(++n, b);
    while (slot_of(b) != slot_of(a));
    t0 = epoch_now(e);
    CHECK_INT(epoch_purge_cred(e, a, 5000, EPOCH_FIND_USERS), 1);
    CHECK_INT(epoch_exact_count(e), 1);
    CHECK_INT(epoch_hides(e, 4000, "", 0, a), 1);
    CHECK_INT(epoch_hides(e, 4000, "", 0, b), 0); /* with one shared stamp: 1 */
    CHECK_INT(epoch_covered(e, t0, "", 0, a), 1);
    CHECK_INT(epoch_covered(e, t0, "", 0, b), 0);

    /* The pending list: a, with its flag; nothing stamped after upto. */
    upto = epoch_now(e);
    CHECK_INT(epoch_pending(e, upto, got, flags, 4), 1);
    CHECK_INT(got[0] == key_of(a), 1);
    CHECK_INT(flags[0], EPOCH_FIND_USERS);
    CHECK_INT(epoch_pending(e, upto - 1, got, flags, 4), 0);

    /* Stamped again after the walk began: the walk does not end it. */
    CHECK_INT(epoch_purge_cred(e, a, 6000, 0), 1);
    rel = epoch_released(e);
    keys[0] = key_of(a);
    epoch_walked(e, keys, 1, upto);
    CHECK_INT(epoch_released(e), rel);
    CHECK_INT(epoch_exact_count(e), 1);
    CHECK_INT(epoch_last_ms(e, "", 0, a), 6000);

    /* A walk that began after it ends it: the wall time goes, the number stays (shared slot). */
    upto = epoch_now(e);
    epoch_walked(e, keys, 1, upto);
    CHECK(epoch_released(e) != rel, "an ended stamp moves released");
    CHECK_INT(epoch_exact_count(e), 0);
    CHECK_INT(epoch_last_ms(e, "", 0, a), 0);
    CHECK_INT(epoch_covered(e, t0, "", 0, a), 1);   /* a call sent before the purge */
    CHECK_INT(epoch_covered(e, t0, "", 0, b), 1);   /* ... and one of its slot: conservative */
    CHECK_INT(epoch_hides(e, 4000, "", 0, b), 0);   /* but nothing held is hidden */
    CHECK_INT(epoch_covered(e, upto, "", 0, a), 0); /* a call sent after it is kept */
    CHECK_INT(epoch_pending(e, epoch_now(e), got, flags, 4), 0);
    epoch_free(e);
}

/* A full set: the ninth credential is stamped in the shared slot, for good (a walk does not end
 * it), hiding its slot's other credentials too; the eight exact ones end with their walk. */
static void test_exact_full(void)
{
    struct epochs *e = epoch_new();
    uint8_t c[9][SHM_CRED_LEN], other[SHM_CRED_LEN];
    uint64_t keys[9], upto, t0 = epoch_now(e), n = 1000;
    unsigned k = 0;

    cred_n(n, c[0]);
    for (k = 1; k < 9;) {
        cred_n(++n, c[k]);
        if (set_of(c[k]) == set_of(c[0]))
            k++;
    }
    do
        cred_n(++n, other);
    while (slot_of(other) != slot_of(c[8]));
    for (k = 0; k < 9; k++) {
        keys[k] = key_of(c[k]);
        CHECK_INT(epoch_purge_cred(e, c[k], 7000 + k, 0), k < 8);
    }
    CHECK_INT(epoch_exact_count(e), 8);
    for (k = 0; k < 9; k++) {
        CHECK_INT(epoch_hides(e, 6000, "", 0, c[k]), 1);
        CHECK_INT(epoch_covered(e, t0, "", 0, c[k]), 1);
    }
    CHECK_INT(epoch_hides(e, 6000, "", 0, other), 1); /* the fallback is coarse */
    upto = epoch_now(e);
    epoch_walked(e, keys, 9, upto);
    CHECK_INT(epoch_exact_count(e), 0);
    CHECK_INT(epoch_hides(e, 6000, "", 0, c[8]), 1); /* never forgotten */
    CHECK_INT(epoch_hides(e, 6000, "", 0, other), 1);
    CHECK_INT(epoch_covered(e, t0, "", 0, c[8]), 1);
    for (k = 0; k < 8; k++)
        CHECK_INT(epoch_covered(e, t0, "", 0, c[k]), 1);
    /* A way freed by the walk takes the next stamp of that set exactly again. */
    CHECK_INT(epoch_purge_cred(e, c[8], 8000, 0), 1);
    epoch_free(e);
}

/* Stampers and a walker racing: whenever a stamped credential's wall time no longer shows, the
 * walker had listed it (epoch_pending) before ending it, and its number never stops covering
 * calls sent before it. In the end every stamp is either ended by a walk or still pending. */
#define RACE_CREDS 20000
#define RACE_STAMPERS 2
static struct epochs *race;
static uint8_t race_walked[RACE_STAMPERS * RACE_CREDS];
static int race_done;

static void *race_stamper(void *arg)
{
    int id = (int)(intptr_t)arg, *bad = calloc(1, sizeof(int));

    for (int i = 0; i < RACE_CREDS; i++) {
        uint8_t c[SHM_CRED_LEN];
        uint64_t t = epoch_now(race);
        int idx = id * RACE_CREDS + i;
        cred_n((uint64_t)idx + 1, c);
        epoch_purge_cred(race, c, 1000 + i, 0);
        for (int look = 0; look < 3; look++) {
            if (!epoch_covered(race, t, "", 0, c))
                (*bad)++;
            if (epoch_last_ms(race, "", 0, c) < 1000 + i &&
                !__atomic_load_n(&race_walked[idx], __ATOMIC_SEQ_CST))
                (*bad)++; /* ended without a walk listing it: a purge lost */
        }
    }
    return bad;
}

static void *race_walker(void *arg)
{
    static uint64_t got[EPOCH_EXACT_MAX];
    static unsigned flags[EPOCH_EXACT_MAX];

    (void)arg;
    while (!__atomic_load_n(&race_done, __ATOMIC_SEQ_CST)) {
        uint64_t upto = epoch_now(race);
        size_t n = epoch_pending(race, upto, got, flags, EPOCH_EXACT_MAX);
        for (size_t i = 0; i < n; i++) { /* cred_n backwards: which one it is */
            uint64_t k = (got[i] - 1) * CRED_N_INVERSE;
            if (k >= 1 && k <= RACE_STAMPERS * RACE_CREDS)
                __atomic_store_n(&race_walked[k - 1], 1, __ATOMIC_SEQ_CST);
        }
        epoch_walked(race, got, n, upto);
    }
    return NULL;
}

static void test_exact_race(void)
{
    pthread_t st[RACE_STAMPERS], wk;
    uint64_t left[EPOCH_EXACT_MAX];
    unsigned flags[EPOCH_EXACT_MAX];
    int bad = 0;

    CHECK_INT(CRED_N_FACTOR * CRED_N_INVERSE, 1);
    race = epoch_new();
    pthread_create(&wk, NULL, race_walker, NULL);
    for (int i = 0; i < RACE_STAMPERS; i++)
        pthread_create(&st[i], NULL, race_stamper, (void *)(intptr_t)i);
    for (int i = 0; i < RACE_STAMPERS; i++) {
        int *b;
        pthread_join(st[i], (void **)&b);
        bad += *b;
        free(b);
    }
    __atomic_store_n(&race_done, 1, __ATOMIC_SEQ_CST);
    pthread_join(wk, NULL);
    CHECK_INT(bad, 0);
    /* every stamp is accounted for: walked, or still listed as pending */
    {
        size_t n = epoch_pending(race, epoch_now(race), left, flags, EPOCH_EXACT_MAX), lost = 0;
        CHECK_INT(n, epoch_exact_count(race));
        for (int idx = 0; idx < RACE_STAMPERS * RACE_CREDS; idx++) {
            uint8_t c[SHM_CRED_LEN];
            cred_n((uint64_t)idx + 1, c);
            if (!race_walked[idx] && epoch_last_ms(race, "", 0, c) < 1000 + idx % RACE_CREDS)
                lost++;
        }
        CHECK_INT(lost, 0);
    }
    epoch_free(race);
}

int main(void)
{
    test_kinds();
    test_hides();
    test_concurrent();
    test_exact();
    test_exact_full();
    test_exact_race();
    return check_done("test_epoch");
}
