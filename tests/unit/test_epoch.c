/*
 * test_epoch.c — purge stamps: what each kind of purge covers, that only purges after the taken
 * number count, and that concurrent purges leave every slot at least at the latest number stamped.
 */
#include <pthread.h>
#include <stdlib.h>

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
    epoch_purge_cred(e, cred_b, 7000);
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
    epoch_purge_cred(e, cred_a, 2000);
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
        epoch_purge_cred(shared, cred_a, i);
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

int main(void)
{
    test_kinds();
    test_hides();
    test_concurrent();
    return check_done("test_epoch");
}
