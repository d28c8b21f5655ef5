/*
 * test_shm_stress.c — 4 writer and 4 reader processes on one segment for STRESS_SECONDS (default
 * 10).
 *
 * Each writer owns 2000 keys and rewrites them in turn with a new version; after each insert it
 * records (version, head before the insert) in a ledger shared with the readers. Readers (two of
 * them read-write with promotion, two read-only) look up random keys and assert:
 *  - every answer found is whole and for the key asked (self-checking payload): 0 torn reads;
 *  - its version is at least the one the ledger confirmed before the lookup: no going back;
 *  - a key is found whenever the log cannot have evicted it (its insert began less than a ring
 *    ago): 0 lost answers.
 * The ring (32 MiB) wraps many times during the run, so eviction runs under the readers all along.
 */
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "shm.h"
#include "shm_payload.h"

#define WRITERS 4
#define READERS 4
#define KEYS 2000
#define RING (32u << 20)

struct ledger_entry {
    uint64_t head_before;
    uint64_t ver;
};

struct shared {
    struct ledger_entry led[WRITERS][KEYS];
    struct payload_tally res[READERS];
    uint64_t writes[WRITERS];
    int stop;
};

static char seg[64];
static const int64_t NOW = 1800000000000;

static void key_name(char *out, int w, int k)
{
    snprintf(out, 32, "w%d-k%d", w, k);
}

static void writer(struct shared *sh, int w)
{
    static char hdrs[SHM_MAX_HDRS];
    char key[32], user[48];
    uint64_t ver[KEYS] = {0};
    struct shm h;

    if (shm_attach(&h, seg, 1) != 0)
        _exit(3);
    for (uint64_t i = 0; !__atomic_load_n(&sh->stop, __ATOMIC_RELAXED); i++) {
        int k = (int)(i % KEYS);
        struct shm_answer a = {0};
        uint64_t hb = __atomic_load_n(&h.hdr->head, __ATOMIC_ACQUIRE);

        key_name(key, w, k);
        snprintf(user, sizeof(user), "user-%s", key);
        payload_key(&h, key, &a.key);
        a.host = "app.test";
        a.host_len = 8;
        a.user = user;
        a.user_len = (uint32_t)strlen(user);
        a.hdrs = hdrs;
        a.hdrs_len = (uint32_t)payload_make(key, ++ver[k], 600, hdrs);
        a.session_end_ms = NOW + 3600000;
        if (shm_insert(&h, &a) != 0)
            _exit(4);
        __atomic_store_n(&sh->led[w][k].head_before, hb, __ATOMIC_RELAXED);
        __atomic_store_n(&sh->led[w][k].ver, ver[k], __ATOMIC_RELEASE);
        __atomic_fetch_add(&sh->writes[w], 1, __ATOMIC_RELAXED);
    }
    _exit(0);
}

static void reader(struct shared *sh, int r)
{
    static uint8_t buf[SHM_MAX_RECORD];
    struct payload_tally *res = &sh->res[r];
    int writable = r < 2;
    uint64_t x = 0x9e3779b97f4a7c15ull * (uint64_t)(r + 1);
    char key[32];
    struct shm h;

    if (shm_attach(&h, seg, writable) != 0)
        _exit(3);
    while (!__atomic_load_n(&sh->stop, __ATOMIC_RELAXED)) {
        struct shm_answer a;
        struct shm_key k;
        uint64_t led_ver, led_hb;
        int w, kk, rc;

        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        w = (int)(x % WRITERS);
        kk = (int)((x >> 8) % KEYS);
        led_ver = __atomic_load_n(&sh->led[w][kk].ver, __ATOMIC_ACQUIRE);
        led_hb = __atomic_load_n(&sh->led[w][kk].head_before, __ATOMIC_RELAXED);
        key_name(key, w, kk);
        payload_key(&h, key, &k);
        rc = shm_lookup(&h, k.digest, NOW, &a, buf, sizeof(buf), writable ? SHM_LOOKUP_PROMOTE : 0);
        payload_tally_lookup(res, &h, key, rc, &a, led_ver, led_hb, RING);
    }
    _exit(0);
}

int main(void)
{
    const char *env = getenv("STRESS_SECONDS");
    double secs = env ? atof(env) : 10;
    static const uint8_t key[SHM_KEY_LEN] = "stress test fixed key, 32 bytes";
    struct shm_params p = {.capacity = 4 * KEYS * 2, .ring_bytes = RING, .key = key};
    struct shared *sh;
    struct shm h;
    pid_t pids[WRITERS + READERS];
    struct payload_tally tot = {0};
    uint64_t writes = 0;

    snprintf(seg, sizeof(seg), "authcache-stress-%d", (int)getpid());
    CHECK_INT(shm_create(&h, seg, &p), 0);
    sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(sh != MAP_FAILED, "mmap ledger");
    for (int i = 0; i < WRITERS + READERS; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            if (i < WRITERS)
                writer(sh, i);
            reader(sh, i - WRITERS);
        }
    }
    double t0 = payload_now_s();
    while (payload_now_s() - t0 < secs)
        usleep(100000);
    __atomic_store_n(&sh->stop, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < WRITERS + READERS; i++) {
        int st;
        waitpid(pids[i], &st, 0);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "process %d ended with status %d", i, st);
    }
    for (int r = 0; r < READERS; r++) {
        payload_tally_add(&tot, &sh->res[r]);
    }
    for (int w = 0; w < WRITERS; w++)
        writes += sh->writes[w];
    struct shm_stats st;
    shm_stats_get(&h, &st);
    printf("seconds=%.1f writes=%llu lookups=%llu found=%llu torn=%llu lost=%llu regress=%llu "
           "evictable_misses=%llu ring_laps=%.1f reader_retries=%llu\n",
           secs, (unsigned long long)writes, (unsigned long long)tot.lookups,
           (unsigned long long)tot.found, (unsigned long long)tot.torn,
           (unsigned long long)tot.lost, (unsigned long long)tot.regress,
           (unsigned long long)tot.evictable_misses, (double)(h.hdr->head - SHM_REC_ALIGN) / RING,
           (unsigned long long)st.retries);
    CHECK_INT(tot.torn, 0);
    CHECK_INT(tot.lost, 0);
    CHECK_INT(tot.regress, 0);
    CHECK(tot.found > 10000, "readers found only %llu answers", (unsigned long long)tot.found);
    CHECK(h.hdr->head - SHM_REC_ALIGN > 2ull * RING, "the ring should have wrapped; head %llu",
          (unsigned long long)h.hdr->head);
    struct shm_check_report rep;
    int rc = shm_check(&h, 0, &rep);
    CHECK(rc == 0, "consistency check: %s", rep.first_problem);
    CHECK_INT(rep.live_counter, (int64_t)rep.slots_used);
    char path[128];
    snprintf(path, sizeof(path), "/dev/shm/%s", seg);
    unlink(path);
    shm_detach(&h);
    return check_done("test_shm_stress");
}
