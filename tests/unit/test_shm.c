/*
 * test_shm.c — every operation of the shm table on a real segment in /dev/shm: round trip, replace,
 * delete, expiry, purges, eviction order (LRU by promotion, and by ring bytes), wrap-around,
 * digests, attach validation, reuse and retirement, consistency check, stats.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "check.h"
#include "shm.h"

static char seg[64];
static uint8_t buf[SHM_MAX_RECORD];
static const int64_t NOW = 1800000000000; /* ms */

static void key_for(struct shm *h, const char *cookie, const char *host, struct shm_key *k)
{
    struct iovec scope[2] = {{(void *)host, strlen(host)}, {(void *)"/auth", 5}};

    shm_key_make(h, cookie, strlen(cookie), scope, 2, k);
}

/* An answer whose headers repeat the cookie name, so a mix-up would show. */
static int put(struct shm *h, const char *cookie, const char *host, const char *user,
               size_t hdr_pad, int64_t session_end)
{
    static char hdrs[SHM_MAX_HDRS + 256];
    struct shm_answer a = {0};
    int n =
        snprintf(hdrs, sizeof(hdrs), "X-authentik-username: %s\r\nX-Cookie: %s\r\n", user, cookie);

    memset(hdrs + n, 'p', hdr_pad);
    key_for(h, cookie, host, &a.key);
    a.first_seen_ms = NOW - 1000;
    a.confirmed_ms = NOW - 500;
    a.fresh_until_ms = NOW + 30000;
    a.session_end_ms = session_end ? session_end : NOW + 86400000;
    a.host = host;
    a.host_len = (uint32_t)strlen(host);
    a.user = user;
    a.user_len = (uint32_t)strlen(user);
    a.hdrs = hdrs;
    a.hdrs_len = (uint32_t)(n + hdr_pad);
    return shm_insert(h, &a);
}

static int get(struct shm *h, const char *cookie, const char *host, struct shm_answer *out,
               int flags)
{
    struct shm_key k;

    key_for(h, cookie, host, &k);
    return shm_lookup(h, k.digest, NOW, out, buf, sizeof(buf), flags);
}

static int present(struct shm *h, const char *cookie, const char *host)
{
    struct shm_answer a;

    return get(h, cookie, host, &a, 0) == 0;
}

/* Segments with a fixed key, so that which answers share a bucket is the same in every run. */
static void make(struct shm *h, uint64_t capacity, uint64_t ring)
{
    static const uint8_t key[SHM_KEY_LEN] = "authcache unit test fixed key!!";
    struct shm_params p = {.capacity = capacity, .ring_bytes = ring, .key = key};
    int rc = shm_create(h, seg, &p);

    CHECK_INT(rc, 0);
    if (rc)
        exit(1);
}

static void test_round_trip(void)
{
    struct shm w, r;
    struct shm_answer a;
    char want[200];

    make(&w, 1024, 0);
    CHECK_INT(put(&w, "cookie-a", "app1.test", "alice", 0, 0), 0);
    CHECK_INT(shm_attach(&r, seg, 0), 0);
    CHECK_INT(get(&r, "cookie-a", "app1.test", &a, 0), 0);
    snprintf(want, sizeof(want), "X-authentik-username: alice\r\nX-Cookie: cookie-a\r\n");
    CHECK_MEM(a.hdrs, a.hdrs_len, want, strlen(want));
    CHECK_MEM(a.host, a.host_len, "app1.test", 9);
    CHECK_MEM(a.user, a.user_len, "alice", 5);
    CHECK_INT(a.first_seen_ms, NOW - 1000);
    CHECK_INT(a.confirmed_ms, NOW - 500);
    CHECK_INT(a.fresh_until_ms, NOW + 30000);
    CHECK_INT(a.session_end_ms, NOW + 86400000);
    /* Other host, other cookie: misses. */
    CHECK_INT(get(&r, "cookie-a", "app2.test", &a, 0), -ENOENT);
    CHECK_INT(get(&r, "cookie-b", "app1.test", &a, 0), -ENOENT);
    /* A read-only handle cannot write. */
    CHECK_INT(put(&r, "cookie-b", "app1.test", "bob", 0, 0), -EROFS);
    CHECK_INT(shm_purge_all(&r), -EROFS);

    /* Replace: the newer answer wins; still one entry. */
    CHECK_INT(put(&w, "cookie-a", "app1.test", "alice2", 0, 0), 0);
    CHECK_INT(get(&r, "cookie-a", "app1.test", &a, 0), 0);
    CHECK_MEM(a.user, a.user_len, "alice2", 6);
    struct shm_stats st;
    shm_stats_get(&w, &st);
    CHECK_INT(st.live, 1);
    CHECK_INT(st.inserts, 1);
    CHECK_INT(st.replaces, 1);

    /* Delete. */
    struct shm_key k;
    key_for(&w, "cookie-a", "app1.test", &k);
    CHECK_INT(shm_delete(&w, k.digest), 1);
    CHECK_INT(shm_delete(&w, k.digest), 0);
    CHECK(!present(&r, "cookie-a", "app1.test"), "deleted answer still found");
    shm_stats_get(&w, &st);
    CHECK_INT(st.live, 0);

    /* Too big. */
    CHECK_INT(put(&w, "big", "app1.test", "bob", SHM_MAX_HDRS, 0), -E2BIG);
    shm_detach(&r);
    shm_detach(&w);
}

static void test_expiry_and_sweep(void)
{
    struct shm h;
    struct shm_answer a;
    struct shm_stats st;

    make(&h, 1024, 0);
    CHECK_INT(put(&h, "old", "app1.test", "alice", 0, NOW), 0); /* ends exactly now */
    CHECK_INT(put(&h, "young", "app1.test", "alice", 0, NOW + 1), 0);
    CHECK_INT(put(&h, "later", "app1.test", "bob", 0, NOW + 5000), 0);
    CHECK_INT(get(&h, "old", "app1.test", &a, 0), -ENOENT);
    CHECK_INT(get(&h, "young", "app1.test", &a, 0), 0);
    shm_stats_get(&h, &st);
    CHECK_INT(st.expired, 1);
    CHECK_INT(st.live, 2); /* the expired one was deleted by the writable lookup */
    CHECK_INT(shm_sweep(&h, 0, h.nbuckets, NOW + 1), 1);
    CHECK_INT(shm_sweep(&h, 0, h.nbuckets, NOW + 5000), 1);
    shm_stats_get(&h, &st);
    CHECK_INT(st.live, 0);
    shm_detach(&h);
}

static void test_purges(void)
{
    struct shm h;
    struct shm_key k;
    char c[32];

    make(&h, 1024, 0);
    for (int i = 0; i < 10; i++) {
        snprintf(c, sizeof(c), "c%d", i);
        put(&h, c, "app1.test", i < 4 ? "alice" : "bob", 0, 0);
        put(&h, c, "app2.test", i < 4 ? "alice" : "bob", 0, 0);
    }
    CHECK_INT(shm_purge_user(&h, "alice", 5), 8);
    CHECK_INT(shm_purge_user(&h, "alice", 5), 0);
    CHECK_INT(shm_purge_user(&h, "ali", 3), 0);
    CHECK(!present(&h, "c0", "app2.test"), "alice's answer survived purge by user");
    CHECK(present(&h, "c5", "app2.test"), "bob's answer lost by purge of alice");
    /* By session: every host of that credential, nothing else. */
    key_for(&h, "c5", "app1.test", &k);
    CHECK_INT(shm_purge_cred(&h, k.cred), 2);
    CHECK(!present(&h, "c5", "app1.test") && !present(&h, "c5", "app2.test"), "c5 survived");
    CHECK(present(&h, "c6", "app1.test"), "c6 lost by purge of c5");
    CHECK_INT(shm_purge_all(&h), 10);
    CHECK(!present(&h, "c9", "app1.test"), "purge all left c9");
    struct shm_stats st;
    shm_stats_get(&h, &st);
    CHECK_INT(st.live, 0);
    CHECK_INT(st.purges, 20);
    shm_detach(&h);
}

/* Capacity reached: the oldest answers go, except those used recently (promoted). */
static void test_lru_order(void)
{
    struct shm h;
    struct shm_answer a;
    char c[32];
    int wrong = 0, promoted_lost = 0;

    make(&h, 64, 4u << 20);
    for (int i = 0; i < 64; i++) {
        snprintf(c, sizeof(c), "k%d", i);
        put(&h, c, "app1.test", "u", 100, 0);
    }
    for (int i = 0; i < 8; i++) { /* the oldest eighth, used: copied forward */
        snprintf(c, sizeof(c), "k%d", i);
        CHECK_INT(get(&h, c, "app1.test", &a, SHM_LOOKUP_PROMOTE), 0);
    }
    for (int i = 64; i < 96; i++) {
        snprintf(c, sizeof(c), "k%d", i);
        put(&h, c, "app1.test", "u", 100, 0);
    }
    for (int i = 0; i < 96; i++) {
        snprintf(c, sizeof(c), "k%d", i);
        int want = i < 8 || i >= 40;
        if (present(&h, c, "app1.test") != want) {
            wrong++;
            promoted_lost += i < 8;
            fprintf(stderr, "k%d: expected %s\n", i, want ? "present" : "evicted");
        }
    }
    CHECK_INT(promoted_lost, 0);
    CHECK_INT(wrong, 0);
    struct shm_stats st;
    shm_stats_get(&h, &st);
    CHECK_INT(st.live, 64);
    CHECK_INT(st.promotions, 8);
    CHECK(st.evictions >= 32, "expected >= 32 evictions, got %llu",
          (unsigned long long)st.evictions);
    shm_detach(&h);
}

/* A small ring: eviction by bytes, many laps around the ring end, fillers; always consistent. */
static void test_ring_wrap(void)
{
    struct shm h;
    struct shm_check_report rep;
    char c[32];

    make(&h, 4096, 1); /* ring clamps up to 4 * SHM_MAX_RECORD = 72 KiB */
    CHECK_INT(h.ring_size, 4 * SHM_MAX_RECORD);
    for (int i = 0; i < 3000; i++) {
        snprintf(c, sizeof(c), "w%d", i);
        CHECK_INT(put(&h, c, "app1.test", "u", (size_t)(i * 37) % 3000, 0), 0);
        if (i % 500 == 499) {
            int rc = shm_check(&h, 0, &rep);
            CHECK(rc == 0, "check after %d inserts: %s", i + 1, rep.first_problem);
            CHECK_INT(rep.slots_bad, 0);
        }
    }
    /* The last few are present, byte-exact; the first are long gone. */
    for (int i = 2995; i < 3000; i++) {
        struct shm_answer a;
        char want[64];
        snprintf(c, sizeof(c), "w%d", i);
        CHECK_INT(get(&h, c, "app1.test", &a, 0), 0);
        int n = snprintf(want, sizeof(want), "X-authentik-username: u\r\nX-Cookie: %s\r\n", c);
        CHECK(a.hdrs_len == (uint32_t)(n + (i * 37) % 3000) && memcmp(a.hdrs, want, (size_t)n) == 0,
              "w%d: wrong answer", i);
    }
    CHECK(!present(&h, "w0", "app1.test"), "w0 should have been evicted by ring bytes");
    CHECK_INT(shm_check(&h, 0, &rep), 0);
    CHECK_INT(rep.live_counter, (int64_t)rep.slots_used);
    CHECK(rep.slots_live > 10, "expected a ring's worth of live answers, got %llu",
          (unsigned long long)rep.slots_live);
    shm_detach(&h);
}

static void test_digests(void)
{
    struct shm a, b;
    struct shm_params p = {.capacity = 64};
    uint8_t key[SHM_KEY_LEN];
    uint8_t d1[SHM_DIGEST_LEN], d2[SHM_DIGEST_LEN];
    struct iovec x[2] = {{"ab", 2}, {"c", 1}}, y[2] = {{"a", 1}, {"bc", 2}};
    char seg2[80];

    make(&a, 64, 0);
    shm_key_digest(&a, x, 2, d1);
    shm_key_digest(&a, y, 2, d2);
    CHECK(memcmp(d1, d2, sizeof(d1)) != 0, "part boundaries must change the digest");
    shm_key_digest(&a, x, 2, d2);
    CHECK(memcmp(d1, d2, sizeof(d1)) == 0, "digest must be deterministic");
    /* A random key per segment: another segment digests differently... */
    snprintf(seg2, sizeof(seg2), "%s-2", seg);
    CHECK_INT(shm_create(&b, seg2, &p), 0);
    shm_key_digest(&b, x, 2, d2);
    CHECK(memcmp(d1, d2, sizeof(d1)) != 0, "two random keys gave one digest");
    shm_detach(&b);
    /* ...while a shared key file makes every node agree. */
    memset(key, 7, sizeof(key));
    p.key = key;
    CHECK_INT(shm_create(&b, seg2, &p), 0);
    shm_key_digest(&b, x, 2, d1);
    shm_detach(&b);
    CHECK_INT(shm_create(&b, seg2, &p), 0);
    shm_key_digest(&b, x, 2, d2);
    CHECK(memcmp(d1, d2, sizeof(d1)) == 0, "same key file, different digest");
    shm_detach(&b);
    char path[128];
    snprintf(path, sizeof(path), "/dev/shm/%s", seg2);
    unlink(path);
    shm_detach(&a);
}

static void test_attach_validation(void)
{
    struct shm h, r;
    char path[128];
    int fd;

    CHECK_INT(shm_attach(&r, "no-such-authcache-segment", 0), -ENOENT);
    CHECK_INT(shm_attach(&r, "../etc/passwd", 0), -EINVAL);
    make(&h, 64, 0);
    snprintf(path, sizeof(path), "/dev/shm/%s", seg);
    /* Each header field spoiled in turn: attach refuses with -EPROTO. */
    struct {
        size_t off;
        uint64_t val;
    } bad[] = {
        {offsetof(struct shm_hdr_sh, magic), 1},
        {offsetof(struct shm_hdr_sh, version), 99},
        {offsetof(struct shm_hdr_sh, total_size), 12345},
        {offsetof(struct shm_hdr_sh, nbuckets), 3},
        {offsetof(struct shm_hdr_sh, ring_off), 8},
        {offsetof(struct shm_hdr_sh, ring_size), 100},
        {offsetof(struct shm_hdr_sh, capacity), 0},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t saved;
        memcpy(&saved, (uint8_t *)h.hdr + bad[i].off, 8);
        if (bad[i].off == offsetof(struct shm_hdr_sh, version))
            memcpy((uint8_t *)h.hdr + bad[i].off, &bad[i].val, 4);
        else
            memcpy((uint8_t *)h.hdr + bad[i].off, &bad[i].val, 8);
        CHECK(shm_attach(&r, seg, 0) == -EPROTO, "spoiled field %zu accepted", i);
        memcpy((uint8_t *)h.hdr + bad[i].off, &saved, 8);
    }
    CHECK_INT(shm_attach(&r, seg, 0), 0);
    shm_detach(&r);
    /* A short file. */
    fd = open("/dev/shm/authcache-test-short", O_RDWR | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0 && write(fd, "KACHSHM1", 8) == 8, "write short file");
    close(fd);
    CHECK_INT(shm_attach(&r, "authcache-test-short", 0), -EPROTO);
    unlink("/dev/shm/authcache-test-short");
    shm_detach(&h);
}

static void test_reuse_and_retire(void)
{
    struct shm a, b, c;
    struct shm_params p = {.capacity = 256};
    int created = -1;

    CHECK_INT(shm_open_or_create(&a, seg, &p, &created), 0);
    CHECK_INT(created, 1);
    put(&a, "keep", "app1.test", "alice", 0, 0);
    shm_detach(&a);
    /* A restart with the same layout keeps the entries. */
    CHECK_INT(shm_open_or_create(&b, seg, &p, &created), 0);
    CHECK_INT(created, 0);
    CHECK(present(&b, "keep", "app1.test"), "entry lost across reopen");
    /* Another capacity: a new segment; the old one is marked retired for its readers. */
    p.capacity = 512;
    CHECK_INT(shm_open_or_create(&c, seg, &p, &created), 0);
    CHECK_INT(created, 1);
    CHECK(shm_retired(&b), "old segment not marked retired");
    CHECK(!shm_retired(&c), "new segment marked retired");
    CHECK(b.generation != c.generation, "generation unchanged by re-creation");
    CHECK(!present(&c, "keep", "app1.test"), "new segment has old entries");
    shm_detach(&b);
    shm_detach(&c);
}

static int count_fn(const struct shm_answer *a, void *arg)
{
    (void)a;
    ++*(int *)arg;
    return 0;
}

static void test_foreach_and_check(void)
{
    struct shm h;
    struct shm_check_report rep;
    char c[32];
    int n = 0;

    make(&h, 1024, 0);
    for (int i = 0; i < 100; i++) {
        snprintf(c, sizeof(c), "f%d", i);
        put(&h, c, "app1.test", "u", 0, i < 10 ? NOW - 1 : 0);
    }
    CHECK_INT(shm_foreach(&h, NOW, count_fn, &n), 0);
    CHECK_INT(n, 90); /* expired answers are not listed */
    CHECK_INT(shm_check(&h, 0, &rep), 0);
    CHECK_INT(rep.slots_live, 100);
    /* Corrupt one record's bytes: check flags it, lookups miss it, nothing crashes. */
    struct shm_key k;
    struct shm_answer a;
    key_for(&h, "f50", "app1.test", &k);
    CHECK_INT(shm_lookup(&h, k.digest, NOW, &a, buf, sizeof(buf), 0), 0);
    h.ring[a.pos % h.ring_size + 100] ^= 0xff;
    CHECK_INT(shm_lookup(&h, k.digest, NOW, &a, buf, sizeof(buf), 0), -ENOENT);
    CHECK_INT(shm_check(&h, 0, &rep), -EUCLEAN);
    CHECK_INT(rep.slots_bad, 1);
    struct shm_stats st;
    shm_stats_get(&h, &st);
    CHECK(st.retries >= 1, "a torn read must be retried and counted");
    shm_detach(&h);
}

/*
 * A writer descheduled for a whole lap of the log between its reservation and its stores writes
 * late, over a newer record (found by test_shm_crash on a busy CI machine). Replayed here: the
 * bytes of an old record are written back at their ring offset after the ring has lapped. The newer
 * answer there must read as a miss, never as the old one; shm_check must tell this (a record sealed
 * by an older lap over the slot's bytes) from corruption, and fix must clear the slot.
 */
static void test_late_writer(void)
{
    static uint8_t old[SHM_MAX_RECORD];
    struct shm h;
    struct shm_check_report rep;
    struct shm_answer a;
    char c[32];
    uint64_t p_old, len_old;
    int victim = -1;

    make(&h, 4096, 1);
    CHECK_INT(put(&h, "late", "app1.test", "old-user", 200, 0), 0);
    CHECK_INT(get(&h, "late", "app1.test", &a, 0), 0);
    p_old = a.pos;
    len_old = ((const struct shm_rec_sh *)buf)->len;
    memcpy(old, h.ring + p_old % h.ring_size, len_old);
    for (int i = 0; victim < 0 && i < 2000; i++) {
        snprintf(c, sizeof(c), "n%d", i);
        CHECK_INT(put(&h, c, "app1.test", "new-user", 200, 0), 0);
        CHECK_INT(get(&h, c, "app1.test", &a, 0), 0);
        if (a.pos > p_old + h.ring_size - len_old && a.pos % h.ring_size < p_old % h.ring_size + 16)
            victim = i;
    }
    CHECK(victim >= 0, "no record landed over the old one's bytes");
    CHECK_INT(shm_check(&h, 0, &rep), 0);
    memcpy(h.ring + p_old % h.ring_size, old, len_old); /* the late stores */
    snprintf(c, sizeof(c), "n%d", victim);
    CHECK_INT(get(&h, c, "app1.test", &a, 0), -ENOENT);
    CHECK_INT(get(&h, "late", "app1.test", &a, 0), -ENOENT);
    CHECK_INT(shm_check(&h, 0, &rep), 0);
    CHECK_INT(rep.slots_bad, 0);
    CHECK_INT(rep.slots_overwritten, 1);
    /* The same bytes without a valid older seal are corruption, not a late writer. */
    struct shm_rec_sh *seal = (struct shm_rec_sh *)(h.ring + p_old % h.ring_size);
    seal->check ^= 1;
    CHECK_INT(shm_check(&h, 0, &rep), -EUCLEAN);
    CHECK_INT(rep.slots_bad, 1);
    CHECK_INT(rep.slots_overwritten, 0);
    seal->check ^= 1;
    CHECK_INT(shm_check(&h, 1, &rep), 0);
    CHECK_INT(shm_check(&h, 0, &rep), 0);
    CHECK_INT(rep.slots_overwritten, 0);
    CHECK_INT(rep.live_counter, (int64_t)rep.slots_used);
    shm_detach(&h);
}

/* Found by fuzz_shm: a scribbled head near 2^64 made shm_check's walk wrap around and run ~2^60
 * steps. It must return at once. */
static void test_check_wrap(void)
{
    struct shm h;
    struct shm_check_report rep;

    make(&h, 64, 0);
    h.hdr->head = UINT64_MAX;
    h.hdr->tail = UINT64_MAX - 3;
    shm_check(&h, 0, &rep);
    h.hdr->head = UINT64_MAX - 5;
    h.hdr->tail = UINT64_MAX - 3 * SHM_MAX_RECORD;
    shm_check(&h, 0, &rep);
    CHECK(rep.records_walked <= 3 * SHM_MAX_RECORD / SHM_REC_ALIGN, "walked %llu steps",
          (unsigned long long)rep.records_walked);
    shm_detach(&h);
}

int main(void)
{
    snprintf(seg, sizeof(seg), "authcache-test-%d", (int)getpid());
    test_round_trip();
    test_expiry_and_sweep();
    test_purges();
    test_lru_order();
    test_ring_wrap();
    test_digests();
    test_attach_validation();
    test_reuse_and_retire();
    test_foreach_and_check();
    test_check_wrap();
    test_late_writer();
    char path[128];
    snprintf(path, sizeof(path), "/dev/shm/%s", seg);
    unlink(path);
    return check_done("test_shm");
}
