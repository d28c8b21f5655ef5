/*
 * test_shm_promote_race.c — deterministic regression tests (docs/reliability.md):
 * a promotion (shm_lookup with SHM_LOOKUP_PROMOTE) resurrects an older answer over a newer one that
 * shm_insert stored in another slot of the bucket. Prints RESULT passed failed; exits 1 on any
 * failure.
 *
 * Interleaving forced with a write-protected `out` (struct shm_answer): the reader thread R stops
 * inside shm_lookup right after its copy was verified (answer_from_copy's first store faults) and
 * before promote(). Meanwhile the main thread:
 *   1. moves the tail past K's record without clearing K's slot — the state a make_room() "jump"
 *      or a tail stepper preempted/killed between its tail CAS and unlink_pos() leaves (README:
 *      "slots left naming positions below the tail are dead");
 *   2. inserts K version 2 (the writer's revalidation): insert sees K's slot as dead and, because
 * an earlier slot of the bucket (J's) is dead too, stores v2 in that slot, leaving K's old slot;
 * then R resumes: promote() copies v1 to the head and its CAS on K's old slot succeeds (the slot
 * still holds the value R read). Now the bucket holds v2 and a newer-positioned copy of v1: every
 * lookup returns v1 — an answer older than one the writer stored after it.
 *
 * The same pause, with step 2 a sign-out instead (shm_purge_user, then shm_delete): a purge that
 * skipped K's slot because its record was already behind the tail let the promotion's CAS resurrect
 * the signed-out session. Fixed: purges and deletes clear dead slots too, and re-examine a slot
 * whose CAS failed.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>

#include "shm.h"

static const int64_t NOW = 1800000000000;
static struct shm hw;          /* the writer's handle (main thread) */
static struct shm hr;          /* the reader's handle */
static struct shm_answer *out; /* on a page of its own, write-protected */
static long page;
static volatile int paused, go;
static uint8_t kdigest[SHM_DIGEST_LEN];
static uint8_t rbuf[SHM_MAX_RECORD];
static int reader_rc = -99;

static void on_segv(int sig, siginfo_t *si, void *ctx)
{
    (void)sig, (void)ctx;
    if ((char *)si->si_addr < (char *)out || (char *)si->si_addr >= (char *)out + page)
        abort();
    paused = 1;
    while (!go)
        usleep(1000);
    mprotect(out, (size_t)page, PROT_READ | PROT_WRITE);
}

static void make_key(const char *cred, struct shm_key *k)
{
    struct iovec scope = {"app.test", 8};

    shm_key_make(&hw, cred, strlen(cred), &scope, 1, k);
}

static uint64_t bucket_of(const uint8_t *digest)
{
    return XXH3_64bits(digest, SHM_DIGEST_LEN) & (hw.nbuckets - 1);
}

static void put(const struct shm_key *k, const char *user, const char *ver)
{
    char hdrs[128];
    struct shm_answer a = {0};

    a.key = *k;
    a.host = "app.test";
    a.host_len = 8;
    a.user = user;
    a.user_len = (uint32_t)strlen(user);
    a.hdrs_len = (uint32_t)snprintf(hdrs, sizeof(hdrs), "X-authentik-username: %s\r\nX-Ver: %s\r\n",
                                    user, ver);
    a.hdrs = hdrs;
    a.confirmed_ms = NOW;
    a.session_end_ms = NOW + 3600000;
    if (shm_insert(&hw, &a) != 0)
        abort();
}

static void *reader(void *arg)
{
    (void)arg;
    reader_rc = shm_lookup(&hr, kdigest, NOW, out, rbuf, sizeof(rbuf), SHM_LOOKUP_PROMOTE);
    return NULL;
}

static const char *version_found(void)
{
    static uint8_t buf[SHM_MAX_RECORD];
    struct shm_answer a;
    const char *v;

    if (shm_lookup(&hw, kdigest, NOW, &a, buf, sizeof(buf), 0) != 0)
        return "(none)";
    v = memmem(a.hdrs, a.hdrs_len, "X-Ver: ", 7);
    return v ? v + 7 : "?";
}

enum { STEP_INSERT_V2, STEP_PURGE_USER, STEP_DELETE };

/* 0 if the scenario ends right (version 2 served; nothing served after a purge), 1 if not. */
static int scenario(int step)
{
    static const uint8_t fixed_key[SHM_KEY_LEN] = "repro: a fixed 32-byte hash key";
    struct shm_params p = {.capacity = 64, .key = fixed_key}; /* the same layout every run */
    struct shm_key kk, kj;
    char name[64], cred[32];
    struct sigaction sa = {0};
    pthread_t t;

    page = sysconf(_SC_PAGESIZE);
    paused = go = 0;
    reader_rc = -99;
    snprintf(name, sizeof(name), "repro-promote-%d-%d", (int)getpid(), step);
    if (shm_create(&hw, name, &p) != 0 || shm_attach(&hr, name, 1) != 0)
        return 2;

    /* J and K in one bucket, J's slot first; then enough answers for "under pressure" (live > 48)
     * with K in the oldest eighth of the log. */
    make_key("session-K", &kk);
    memcpy(kdigest, kk.digest, sizeof(kdigest));
    for (int i = 0;; i++) {
        snprintf(cred, sizeof(cred), "session-J%d", i);
        make_key(cred, &kj);
        if (bucket_of(kj.digest) == bucket_of(kk.digest))
            break;
    }
    put(&kj, "juliet", "1");
    put(&kk, "kilo", "1");
    uint64_t k_end = hw.hdr->head; /* K's record ends here */
    for (int i = 0; i < 50; i++) {
        struct shm_key o;
        snprintf(cred, sizeof(cred), "other-%d", i);
        make_key(cred, &o);
        if (bucket_of(o.digest) == bucket_of(kk.digest))
            continue;
        put(&o, "other", "1");
    }
    printf("before: lookup of K finds version %.1s\n", version_found());

    /* R: stop inside shm_lookup after the copy is verified, before promote(). */
    out = mmap(NULL, (size_t)page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, NULL);
    pthread_create(&t, NULL, reader, NULL);
    while (!paused)
        usleep(1000);

    /* 1. The tail passes J's and K's records; their slots are not cleared (a jump, or a stepper
     *    between its CAS and unlink_pos). */
    __atomic_store_n(&hw.hdr->tail, k_end, __ATOMIC_SEQ_CST);
    /* 2. The writer stores K version 2, or K's user signs out. */
    if (step == STEP_INSERT_V2)
        put(&kk, "kilo", "2");
    else if (step == STEP_PURGE_USER)
        shm_purge_user(&hw, "kilo", 4);
    else
        shm_delete(&hw, kk.digest);
    printf("after step %d: lookup of K finds version %.1s\n", step, version_found());

    /* R resumes: promote(). */
    go = 1;
    pthread_join(t, NULL);
    printf("reader's lookup returned %d (version %.1s)\n", reader_rc,
           reader_rc == 0 ? (const char *)memmem(out->hdrs, out->hdrs_len, "X-Ver: ", 7) + 7 : "-");
    const char *after = version_found();
    struct shm_stats st;
    shm_stats_get(&hw, &st);
    printf("promotions that replaced a slot: %llu\n", (unsigned long long)st.promotions);
    printf("after the reader's promotion: lookup of K finds version %.1s\n", after);

    struct shm_check_report rep;
    int rc = shm_check(&hw, 0, &rep);
    printf("shm_check: %d %s\n", rc, rep.first_problem);
    char path[128];
    snprintf(path, sizeof(path), "/dev/shm/%s", name);
    unlink(path);
    munmap(out, (size_t)page);
    shm_detach(&hr);
    shm_detach(&hw);
    if (step == STEP_INSERT_V2 && after[0] != '2') {
        printf("BUG: version %s is served after version 2 was stored\n", after);
        return 1;
    }
    if (step != STEP_INSERT_V2 && after[0] != '(') {
        printf("BUG: version %s is served after K was purged\n", after);
        return 1;
    }
    printf("ok\n");
    return 0;
}

int main(void)
{
    int bad = 0;

    for (int step = STEP_INSERT_V2; step <= STEP_DELETE; step++)
        bad += scenario(step);
    printf("RESULT %d %d\n", 3 - bad, bad);
    return bad != 0;
}
