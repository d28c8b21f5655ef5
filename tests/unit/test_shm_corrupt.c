/*
 * test_shm_corrupt.c — random bytes written over random places of a live segment (header, index,
 * ring) while reader threads look up, list, check and attach it, and a writer keeps writing.
 * Run under AddressSanitizer by `make test`. Asserts: no crash, no hang (a watchdog requires every
 * thread to make progress each second), and every answer a lookup returns is whole and for the key
 * asked — corruption may cost a miss, never a wrong identity.
 */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "shm.h"
#include "shm_payload.h"

#define KEYS 3000
#define READERS 3
#define THREADS (READERS + 3) /* readers, writer, attacher, corrupter */

static char seg[64];
static const int64_t NOW = 1800000000000;
static int stop; /* atomic: set by main, read by every thread */
static uint64_t progress[THREADS];
static uint64_t wrong_answers, found_total;

static uint64_t rnd(uint64_t *x)
{
    *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
    return *x;
}

static void put(struct shm *h, const char *key, uint64_t ver)
{
    static __thread char hdrs[SHM_MAX_HDRS];
    struct shm_answer a = {0};

    payload_key(h, key, &a.key);
    a.host = "app.test";
    a.host_len = 8;
    a.user = key;
    a.user_len = (uint32_t)strlen(key);
    a.hdrs = hdrs;
    a.hdrs_len = (uint32_t)payload_make(key, ver, 400, hdrs);
    a.session_end_ms = NOW + 3600000;
    shm_insert(h, &a);
}

static int count_fn(const struct shm_answer *a, void *arg)
{
    (void)a;
    ++*(uint64_t *)arg;
    return 0;
}

static void *reader(void *arg)
{
    static __thread uint8_t buf[SHM_MAX_RECORD];
    int id = (int)(intptr_t)arg;
    uint64_t x = 777 + (uint64_t)id, v, n;
    struct shm h;
    char key[32];

    if (shm_attach(&h, seg, 0) != 0)
        abort();
    while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
        struct shm_key k;
        struct shm_answer a;
        uint64_t r = rnd(&x);
        snprintf(key, sizeof(key), "k%llu", (unsigned long long)(r % KEYS));
        payload_key(&h, key, &k);
        if (shm_lookup(&h, k.digest, NOW, &a, buf, sizeof(buf), 0) == 0) {
            __atomic_fetch_add(&found_total, 1, __ATOMIC_RELAXED);
            if (payload_check(key, a.hdrs, a.hdrs_len, &v) != 0)
                __atomic_fetch_add(&wrong_answers, 1, __ATOMIC_RELAXED);
        }
        if (r % 5000 == 0) {
            struct shm_check_report rep;
            struct shm_stats st;
            n = 0;
            shm_foreach(&h, NOW, count_fn, &n);
            shm_check(&h, 0, &rep);
            shm_stats_get(&h, &st);
        }
        __atomic_fetch_add(&progress[id], 1, __ATOMIC_RELAXED);
    }
    shm_detach(&h);
    return NULL;
}

static void *writer(void *arg)
{
    static __thread uint8_t buf[SHM_MAX_RECORD];
    int id = (int)(intptr_t)arg;
    uint64_t x = 4242;
    struct shm h;
    char key[32];

    if (shm_attach(&h, seg, 1) != 0)
        abort();
    while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
        uint64_t r = rnd(&x);
        struct shm_key k;
        struct shm_answer a;
        snprintf(key, sizeof(key), "k%llu", (unsigned long long)(r % KEYS));
        switch (r % 10) {
        case 0:
            payload_key(&h, key, &k);
            shm_delete(&h, k.digest);
            break;
        case 1:
            payload_key(&h, key, &k);
            shm_lookup(&h, k.digest, NOW, &a, buf, sizeof(buf), SHM_LOOKUP_PROMOTE);
            break;
        case 2:
            if (r % 1000 == 2)
                shm_purge_user(&h, key, strlen(key));
            else
                shm_sweep(&h, (r >> 20) % h.nbuckets, 16, NOW);
            break;
        default:
            put(&h, key, r >> 32);
        }
        __atomic_fetch_add(&progress[id], 1, __ATOMIC_RELAXED);
    }
    shm_detach(&h);
    return NULL;
}

static void *attacher(void *arg)
{
    int id = (int)(intptr_t)arg;
    struct shm h;

    while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
        if (shm_attach(&h, seg, 0) == 0)
            shm_detach(&h);
        __atomic_fetch_add(&progress[id], 1, __ATOMIC_RELAXED);
        usleep(1000);
    }
    return NULL;
}

/* Scribbles: mostly single bytes and words anywhere, sometimes runs of random bytes, sometimes the
 * header's counters (head, tail, live) specifically. */
static void *corrupter(void *arg)
{
    int id = (int)(intptr_t)arg;
    uint64_t x = 99991;
    struct shm h;

    if (shm_attach(&h, seg, 1) != 0)
        abort();
    uint8_t *base = (uint8_t *)h.hdr;
    while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
        uint64_t r = rnd(&x);
        size_t off = (size_t)(rnd(&x) % h.map_size);
        switch (r % 8) {
        case 0: { /* a run of random bytes */
            size_t n = (size_t)(r >> 8) % 512;
            for (size_t i = 0; i < n && off + i < h.map_size; i++)
                base[off + i] = (uint8_t)rnd(&x);
            break;
        }
        case 1: /* the log positions */
            ((uint64_t *)&h.hdr->head)[0] = rnd(&x) % (4 * h.ring_size);
            break;
        case 2:
            ((uint64_t *)&h.hdr->tail)[0] = rnd(&x) % (4 * h.ring_size);
            break;
        case 3: /* a slot */
            h.index[(r >> 8) % h.nbuckets].slot[(r >> 40) % SHM_BUCKET_SLOTS] = rnd(&x);
            break;
        default:
            base[off] = (uint8_t)(r >> 24);
        }
        __atomic_fetch_add(&progress[id], 1, __ATOMIC_RELAXED);
        usleep(50);
    }
    shm_detach(&h);
    return NULL;
}

int main(void)
{
    const char *env = getenv("CORRUPT_SECONDS");
    int secs = env ? atoi(env) : 5, hung = 0;
    struct shm_params p = {.capacity = KEYS, .ring_bytes = 1u << 20};
    pthread_t t[THREADS];
    struct shm h;
    char key[32];

    snprintf(seg, sizeof(seg), "authcache-corrupt-%d", (int)getpid());
    CHECK_INT(shm_create(&h, seg, &p), 0);
    for (int i = 0; i < KEYS; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        put(&h, key, 1);
    }
    for (int i = 0; i < READERS; i++)
        pthread_create(&t[i], NULL, reader, (void *)(intptr_t)i);
    pthread_create(&t[READERS], NULL, writer, (void *)(intptr_t)READERS);
    pthread_create(&t[READERS + 1], NULL, attacher, (void *)(intptr_t)(READERS + 1));
    pthread_create(&t[READERS + 2], NULL, corrupter, (void *)(intptr_t)(READERS + 2));

    uint64_t last[THREADS] = {0};
    int still[THREADS] = {0};
    for (int s = 0; s < secs * 4 && !hung; s++) {
        usleep(250000);
        for (int i = 0; i < THREADS; i++) {
            uint64_t now = __atomic_load_n(&progress[i], __ATOMIC_RELAXED);
            still[i] = now == last[i] ? still[i] + 1 : 0;
            last[i] = now;
            if (still[i] >= 12) { /* 3 s without one operation: a hang */
                fprintf(stderr, "FAIL thread %d made no progress for 3 s\n", i);
                hung = 1;
            }
        }
    }
    CHECK_INT(hung, 0);
    if (hung)
        _exit(1); /* a hung thread cannot be joined */
    __atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    printf("seconds=%d lookups_found=%llu wrong_answers=%llu reader_ops=%llu corruptions=%llu\n",
           secs, (unsigned long long)found_total, (unsigned long long)wrong_answers,
           (unsigned long long)(progress[0] + progress[1] + progress[2]),
           (unsigned long long)progress[READERS + 2]);
    CHECK_INT(wrong_answers, 0);
    CHECK(found_total > 1000, "readers found only %llu answers", (unsigned long long)found_total);
    char path[128];
    snprintf(path, sizeof(path), "/dev/shm/%s", seg);
    unlink(path);
    shm_detach(&h);
    return check_done("test_shm_corrupt");
}
