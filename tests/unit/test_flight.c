/*
 * test_flight.c — the single-flight table: lead, join, end with the waiters handed back, a
 * background revalidation never joining, many keys in one stripe, and racing threads on one key:
 * exactly one leader, every joiner handed back exactly once.
 */
#include <pthread.h>
#include <stdlib.h>

#include "check.h"
#include "flight.h"

static void digest_of(unsigned k, uint8_t d[SHM_DIGEST_LEN])
{
    memset(d, 0, SHM_DIGEST_LEN);
    d[0] = (uint8_t)(k & 1); /* two stripes, many keys in each */
    memcpy(d + 4, &k, sizeof(k));
}

static void test_lead_join_end(void)
{
    struct flights *f = flights_new();
    struct flight_waiter w1 = {0, 5, 7}, w2 = {1, 9, 2}, *out;
    uint8_t a[SHM_DIGEST_LEN], b[SHM_DIGEST_LEN];

    digest_of(1, a);
    digest_of(3, b);
    CHECK_INT(flight_begin(f, a, &w1), 1); /* leads */
    CHECK_INT(flight_begin(f, a, &w1), 0); /* joins */
    CHECK_INT(flight_begin(f, a, &w2), 0);
    CHECK_INT(flight_begin(f, a, NULL), 0); /* a background call does not join */
    CHECK_INT(flight_begin(f, b, NULL), 1); /* another key, same stripe: leads */
    CHECK_INT(flight_end(f, a, &out), 2);
    CHECK(out[0].worker == 0 && out[0].slot == 5 && out[0].gen == 7, "first waiter");
    CHECK(out[1].worker == 1 && out[1].slot == 9 && out[1].gen == 2, "second waiter");
    free(out);
    CHECK_INT(flight_end(f, a, &out), 0); /* ended */
    CHECK(out == NULL, "no waiters");
    CHECK_INT(flight_begin(f, a, &w1), 1); /* a new flight */
    CHECK_INT(flight_end(f, b, &out), 0);
    free(out);
    for (unsigned k = 100; k < 1100; k++) { /* many keys in the two stripes */
        uint8_t d[SHM_DIGEST_LEN];
        digest_of(k, d);
        CHECK(flight_begin(f, d, &w1) == 1, "key %u leads", k);
    }
    for (unsigned k = 100; k < 1100; k++) {
        uint8_t d[SHM_DIGEST_LEN];
        digest_of(k, d);
        CHECK(flight_end(f, d, &out) == 0, "key %u ends", k);
        free(out);
    }
    flights_free(f);
}

#define THREADS 8
#define ROUNDS 2000
static struct flights *shared;
static int leaders[ROUNDS], joined[ROUNDS], handed[ROUNDS];
static pthread_barrier_t bar;

static void *racer(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;

    for (unsigned r = 0; r < ROUNDS; r++) {
        uint8_t d[SHM_DIGEST_LEN];
        struct flight_waiter me = {id, r, 0}, *out;
        digest_of(r, d);
        pthread_barrier_wait(&bar);
        int rc = flight_begin(shared, d, &me);
        if (rc == 1)
            __atomic_add_fetch(&leaders[r], 1, __ATOMIC_RELAXED);
        else if (rc == 0)
            __atomic_add_fetch(&joined[r], 1, __ATOMIC_RELAXED);
        pthread_barrier_wait(&bar);
        if (rc == 1) {
            size_t n = flight_end(shared, d, &out);
            __atomic_add_fetch(&handed[r], (int)n, __ATOMIC_RELAXED);
            free(out);
        }
    }
    return NULL;
}

static void test_racing_threads(void)
{
    pthread_t th[THREADS];
    int bad = 0;

    shared = flights_new();
    pthread_barrier_init(&bar, NULL, THREADS);
    for (uintptr_t i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, racer, (void *)i);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    for (int r = 0; r < ROUNDS; r++)
        bad += leaders[r] != 1 || joined[r] != THREADS - 1 || handed[r] != THREADS - 1;
    CHECK(bad == 0, "%d of %d rounds without exactly one leader and every joiner handed back", bad,
          ROUNDS);
    pthread_barrier_destroy(&bar);
    flights_free(shared);
}

int main(void)
{
    test_lead_join_end();
    test_racing_threads();
    return check_done("test_flight");
}
