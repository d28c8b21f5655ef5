/*
 * test_sids.c — the session index (daemon/sids.c): a session's credentials found by its sid and by
 * the hex SHA-256 of its sid, each once, another session's never; an entry extended by a new store;
 * ended entries skipped and their slots reused; a full window drops the entry that ends first and
 * the lookups of that part say "lossy" until it would have ended; an adopted segment is lossy until
 * indexed, and only by a scan that starts late enough; inserts from several threads while another
 * looks up (run it under TSan: make SANITIZER=thread).
 */
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "check.h"
#include "sids.h"

#define NOW INT64_C(1800000000000)
#define HOUR INT64_C(3600000)

static void cred_of(unsigned i, uint8_t cred[SHM_CRED_LEN])
{
    for (unsigned b = 0; b < SHM_CRED_LEN; b++)
        cred[b] = (uint8_t)(i >> (8 * (b % 4)) ^ b * 37u);
}

static void hex_sha256(const char *s, char out[65])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[SHA256_DIGEST_LENGTH];

    SHA256((const unsigned char *)s, strlen(s), md);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

/* Whether cred is among creds[0, n). */
static int has(uint8_t (*creds)[SHM_CRED_LEN], unsigned n, const uint8_t cred[SHM_CRED_LEN])
{
    for (unsigned i = 0; i < n; i++)
        if (memcmp(creds[i], cred, SHM_CRED_LEN) == 0)
            return 1;
    return 0;
}

static void test_key(void)
{
    /* SHA-256("s-123") = bcf61dbb52ee702d...: the key is its first 8 bytes, big-endian. */
    CHECK(sids_key("s-123", 5) == UINT64_C(0xbcf61dbb52ee702d), "key %016llx",
          (unsigned long long)sids_key("s-123", 5));
}

static void test_both_forms(void)
{
    struct sids *s = sids_new(1000, 0);
    uint8_t creds[8][SHM_CRED_LEN], c1[SHM_CRED_LEN], c2[SHM_CRED_LEN], c3[SHM_CRED_LEN];
    char h[65], upper[65];
    int lossy = -1;
    unsigned n;

    CHECK(s != NULL, "sids_new");
    cred_of(1, c1);
    cred_of(2, c2);
    cred_of(3, c3);
    CHECK_INT(sids_insert(s, sids_key("sid-a", 5), c1, NOW + HOUR, NOW), 0);
    CHECK_INT(sids_insert(s, sids_key("sid-a", 5), c2, NOW + HOUR, NOW), 0);
    CHECK_INT(sids_insert(s, sids_key("sid-a", 5), c1, NOW + HOUR, NOW), 0); /* the same again */
    CHECK_INT(sids_insert(s, sids_key("sid-b", 5), c3, NOW + HOUR, NOW), 0);
    CHECK_INT(sids_entries(s), 3);

    /* Older authentik: the sid itself. */
    n = sids_lookup(s, "sid-a", NOW, creds, 8, &lossy);
    CHECK_INT(n, 2);
    CHECK_INT(lossy, 0);
    CHECK(has(creds, n, c1) && has(creds, n, c2) && !has(creds, n, c3), "sid-a's two credentials");
    /* 2025.x: the lowercase hex SHA-256 of the sid. */
    hex_sha256("sid-a", h);
    n = sids_lookup(s, h, NOW, creds, 8, &lossy);
    CHECK_INT(n, 2);
    CHECK(has(creds, n, c1) && has(creds, n, c2), "sid-a by its hash");
    hex_sha256("sid-b", h);
    n = sids_lookup(s, h, NOW, creds, 8, &lossy);
    CHECK_INT(n, 1);
    CHECK(has(creds, n, c3), "sid-b by its hash");
    /* Uppercase hex is not authentik's hash: only the id itself is looked up. */
    for (int i = 0; i < 65; i++)
        upper[i] = h[i] >= 'a' && h[i] <= 'f' ? (char)(h[i] - 32) : h[i];
    CHECK_INT(sids_lookup(s, upper, NOW, creds, 8, &lossy), 0);
    CHECK_INT(sids_lookup(s, "sid-c", NOW, creds, 8, &lossy), 0);
    CHECK_INT(sids_lookup(s, "", NOW, creds, 8, &lossy), 0);
    CHECK_INT(lossy, 0);
    /* The caller's bound. */
    CHECK_INT(sids_lookup(s, "sid-a", NOW, creds, 1, &lossy), 1);
    sids_free(s);
}

static void test_ends(void)
{
    struct sids *s = sids_new(1000, 0);
    uint8_t creds[8][SHM_CRED_LEN], c1[SHM_CRED_LEN], c2[SHM_CRED_LEN];
    uint64_t k = sids_key("sid-e", 5);
    int lossy;

    cred_of(1, c1);
    cred_of(2, c2);
    CHECK_INT(sids_insert(s, k, c1, NOW + 1000, NOW), 0);
    CHECK_INT(sids_lookup(s, "sid-e", NOW + 999, creds, 8, &lossy), 1);
    CHECK_INT(sids_lookup(s, "sid-e", NOW + 1000, creds, 8, &lossy), 0); /* its answer ended */
    /* A new store extends it, never shortens it. */
    CHECK_INT(sids_insert(s, k, c1, NOW + 5000, NOW + 10), 0);
    CHECK_INT(sids_insert(s, k, c1, NOW + 2000, NOW + 20), 0);
    CHECK_INT(sids_lookup(s, "sid-e", NOW + 4999, creds, 8, &lossy), 1);
    CHECK_INT(sids_entries(s), 1);
    /* An ended entry's slot is reused: no new slot taken. */
    CHECK_INT(sids_insert(s, k, c2, NOW + 9000, NOW + 6000), 0);
    CHECK_INT(sids_entries(s), 1);
    CHECK_INT(sids_lookup(s, "sid-e", NOW + 6000, creds, 8, &lossy), 1);
    CHECK(has(creds, 1, c2), "the new credential");
    /* Already over: not kept. */
    CHECK_INT(sids_insert(s, sids_key("x", 1), c1, NOW, NOW), 0);
    CHECK_INT(sids_entries(s), 1);
    sids_free(s);
}

/* Keys whose home is the same slot of the same part: the top 4 and the low bits equal. */
static uint64_t crowd_key(unsigned i)
{
    return UINT64_C(0x5000000000000000) | (uint64_t)i << 32 | 7;
}

static void test_full(void)
{
    struct sids *s = sids_new(16, 0); /* the smallest table: 64 slots a part */
    uint8_t creds[8][SHM_CRED_LEN], c[SHM_CRED_LEN];
    int lossy;
    unsigned i;

    CHECK_INT(sids_slots(s), 16 * 64);
    /* SIDS_PROBE live entries in one window, ending at different times. */
    for (i = 0; i < SIDS_PROBE; i++) {
        cred_of(i, c);
        CHECK_INT(sids_insert(s, crowd_key(i), c, NOW + HOUR + i * 1000, NOW), 0);
    }
    CHECK_INT(sids_lossy(s, NOW), 0);
    /* One more: the entry that ends first (i = 0, at NOW + HOUR) is dropped. */
    cred_of(100, c);
    CHECK_INT(sids_insert(s, crowd_key(100), c, NOW + 2 * HOUR, NOW), 1);
    CHECK_INT(sids_dropped(s), 1);
    CHECK_INT(sids_lossy(s, NOW), 1);
    /* A lookup in that part (a sid whose key's top 4 bits are 5) is lossy until NOW + HOUR, when
     * the dropped entry would have ended; one in another part is not. */
    {
        char sid[32];
        unsigned part5 = 0, other = 0;

        for (unsigned j = 0; j < 10000 && (!part5 || !other); j++) {
            snprintf(sid, sizeof(sid), "probe-%u", j);
            if ((sids_key(sid, strlen(sid)) >> 60) == 5 && !part5) {
                part5 = 1;
                sids_lookup(s, sid, NOW, creds, 8, &lossy);
                CHECK_INT(lossy, 1);
                sids_lookup(s, sid, NOW + HOUR, creds, 8, &lossy);
                CHECK_INT(lossy, 0); /* the dropped entry would have ended */
            } else if ((sids_key(sid, strlen(sid)) >> 60) != 5 && !other) {
                other = 1;
                sids_lookup(s, sid, NOW, creds, 8, &lossy);
                CHECK_INT(lossy, 0);
            }
        }
        CHECK(part5 && other, "sids in and out of part 5");
    }
    CHECK_INT(sids_lossy(s, NOW + HOUR), 0);
    /* Once entries end, their slots take new ones without dropping. */
    cred_of(101, c);
    CHECK_INT(sids_insert(s, crowd_key(101), c, NOW + 3 * HOUR, NOW + HOUR + 1500), 0);
    CHECK_INT(sids_dropped(s), 1);
    sids_free(s);
}

static void test_adopt(void)
{
    struct sids *s = sids_new(100, 1);
    uint8_t creds[8][SHM_CRED_LEN], c[SHM_CRED_LEN];
    int lossy;

    cred_of(1, c);
    CHECK_INT(sids_insert(s, sids_key("a", 1), c, NOW + HOUR, NOW), 0);
    CHECK_INT(sids_lookup(s, "a", NOW, creds, 8, &lossy), 1);
    CHECK_INT(lossy, 1); /* the adopted answers are not indexed yet */
    CHECK(sids_adopt_due(s) == INT64_MAX, "no time yet");
    CHECK_INT(sids_adopted(s, 1000), 0); /* a scan before the time is known does not count */
    sids_adopt_at(s, 5000);
    CHECK_INT(sids_adopt_due(s), 5000);
    CHECK_INT(sids_adopted(s, 4999), 0); /* the predecessor may still store */
    CHECK_INT(sids_lossy(s, NOW), 1);
    CHECK_INT(sids_adopted(s, 5000), 1);
    CHECK_INT(sids_adopt_due(s), 0);
    sids_lookup(s, "a", NOW, creds, 8, &lossy);
    CHECK_INT(lossy, 0);
    sids_adopt_at(s, 9000); /* done stays done */
    CHECK_INT(sids_adopt_due(s), 0);
    sids_free(s);
    s = sids_new(100, 0);
    CHECK_INT(sids_adopt_due(s), 0);
    sids_adopt_at(s, 9000);
    CHECK_INT(sids_adopt_due(s), 0);
    sids_free(s);
}

/* Four threads insert sessions (two credentials each) while the main thread looks them up. */
#define T_THREADS 4
#define T_SESSIONS 5000

struct targ {
    struct sids *s;
    unsigned t;
};

static void *inserter(void *arg)
{
    struct targ *a = arg;
    uint8_t c[SHM_CRED_LEN];
    char sid[32];

    for (unsigned i = 0; i < T_SESSIONS; i++) {
        snprintf(sid, sizeof(sid), "t%u-s%u", a->t, i);
        for (unsigned j = 0; j < 2; j++) {
            cred_of(a->t * 1000000 + i * 2 + j, c);
            sids_insert(a->s, sids_key(sid, strlen(sid)), c, NOW + HOUR, NOW);
        }
    }
    return NULL;
}

static void test_threads(void)
{
    struct sids *s = sids_new(T_THREADS * T_SESSIONS, 0);
    struct targ a[T_THREADS];
    pthread_t th[T_THREADS];
    uint8_t creds[8][SHM_CRED_LEN];
    unsigned found = 0;
    char sid[32];
    int lossy;

    for (unsigned t = 0; t < T_THREADS; t++) {
        a[t] = (struct targ){s, t};
        pthread_create(&th[t], NULL, inserter, &a[t]);
    }
    for (unsigned i = 0; i < T_SESSIONS; i++) {
        snprintf(sid, sizeof(sid), "t%u-s%u", i % T_THREADS, i);
        found += sids_lookup(s, sid, NOW, creds, 8, &lossy) > 0;
    }
    for (unsigned t = 0; t < T_THREADS; t++)
        pthread_join(th[t], NULL);
    (void)found; /* how many were there yet depends on the schedule */
    /* 2 x capacity entries in a table of 4 x capacity slots: nothing dropped, all found. */
    CHECK_INT(sids_dropped(s), 0);
    CHECK_INT(sids_entries(s), T_THREADS * T_SESSIONS * 2);
    for (unsigned t = 0; t < T_THREADS; t++)
        for (unsigned i = 0; i < T_SESSIONS; i += 97) {
            uint8_t c0[SHM_CRED_LEN], c1[SHM_CRED_LEN];
            unsigned n;

            snprintf(sid, sizeof(sid), "t%u-s%u", t, i);
            n = sids_lookup(s, sid, NOW, creds, 8, &lossy);
            cred_of(t * 1000000 + i * 2, c0);
            cred_of(t * 1000000 + i * 2 + 1, c1);
            CHECK(n == 2 && has(creds, n, c0) && has(creds, n, c1) && !lossy,
                  "%s: expected its 2 credentials, not lossy; got %u, lossy %d", sid, n, lossy);
        }
    sids_free(s);
}

int main(void)
{
    test_key();
    test_both_forms();
    test_ends();
    test_full();
    test_adopt();
    test_threads();
    return check_done("test_sids");
}
