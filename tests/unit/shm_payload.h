/*
 * shm_payload.h — self-checking answers for the shm concurrency tests. An answer for (key, version)
 * carries the key, the version, filler bytes whose length and content derive from both, and an
 * FNV-1a sum of everything before it, so a torn or mixed-up read is always detected by
 * payload_check().
 */
#ifndef AUTHCACHE_SHM_PAYLOAD_H
#define AUTHCACHE_SHM_PAYLOAD_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "shm.h"

static inline uint64_t payload_fnv(const void *p, size_t n)
{
    const uint8_t *s = p;
    uint64_t h = 0xcbf29ce484222325ull;

    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 0x100000001b3ull;
    return h;
}

/* Writes the identity headers for (key, ver) into out (SHM_MAX_HDRS bytes); returns their length.
 */
static inline size_t payload_make(const char *key, uint64_t ver, size_t max_fill, char *out)
{
    uint64_t x = payload_fnv(key, strlen(key)) ^ (ver * 0x9e3779b97f4a7c15ull);
    size_t fill = max_fill ? (size_t)(x % max_fill) : 0;
    int n = snprintf(out, 256,
                     "X-authentik-username: user-%s\r\nX-Key: %s\r\nX-Ver: %llu\r\nX-Fill: ", key,
                     key, (unsigned long long)ver);

    for (size_t i = 0; i < fill; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        out[n + i] = (char)('a' + x % 26);
    }
    n += (int)fill;
    n += snprintf(out + n, 64, "\r\nX-Sum: %016llx\r\n",
                  (unsigned long long)payload_fnv(out, (size_t)n));
    return (size_t)n;
}

static inline double payload_now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The key the concurrency tests store a named answer under. */
static inline void payload_key(struct shm *h, const char *key, struct shm_key *out)
{
    struct iovec scope = {"app.test", 8};

    shm_key_make(h, key, strlen(key), &scope, 1, out);
}

/* 0 if hdrs is a whole answer for key (its version in *ver), -1 if torn or for another key. */
static inline int payload_check(const char *key, const char *hdrs, size_t len, uint64_t *ver)
{
    char want[256];
    unsigned long long v, sum;
    const char *s;
    int n;

    if (len < 40 || len >= SHM_MAX_HDRS)
        return -1;
    n = snprintf(want, sizeof(want), "X-authentik-username: user-%s\r\nX-Key: %s\r\nX-Ver: ", key,
                 key);
    if ((size_t)n > len || memcmp(hdrs, want, (size_t)n) != 0)
        return -1;
    if (sscanf(hdrs + n, "%llu", &v) != 1)
        return -1;
    s = hdrs + len - 27; /* "\r\nX-Sum: " + 16 hex + "\r\n" */
    if (memcmp(s, "\r\nX-Sum: ", 9) != 0 || sscanf(s + 9, "%16llx", &sum) != 1)
        return -1;
    if (sum != payload_fnv(hdrs, (size_t)(s - hdrs)))
        return -1;
    *ver = v;
    return 0;
}

/* What the readers of the concurrency tests saw. torn and regress must stay 0; lost too, unless a
 * write could have been lapped (test_shm_threads). */
struct payload_tally {
    uint64_t lookups, found, torn, lost, regress, evictable_misses;
};

/*
 * Counts one lookup of key: rc and *a as shm_lookup gave them; led_ver the version the writer's
 * ledger confirmed before the lookup (0: none yet), led_hb the head before that write, ring the
 * log's size. A found answer must be whole and not older than led_ver; a miss of a confirmed
 * answer is lost unless the log has moved far enough since its write for it to be evicted.
 */
static inline void payload_tally_lookup(struct payload_tally *t, const struct shm *h,
                                        const char *key, int rc, const struct shm_answer *a,
                                        uint64_t led_ver, uint64_t led_hb, uint64_t ring)
{
    uint64_t v;

    t->lookups++;
    if (rc == 0) {
        t->found++;
        if (payload_check(key, a->hdrs, a->hdrs_len, &v) != 0)
            t->torn++;
        else if (v < led_ver)
            t->regress++;
    } else if (led_ver != 0) {
        uint64_t head = __atomic_load_n(&h->hdr->head, __ATOMIC_ACQUIRE);
        if (head - led_hb < ring - 4 * SHM_MAX_RECORD)
            t->lost++;
        else
            t->evictable_misses++;
    }
}

static inline void payload_tally_add(struct payload_tally *to, const struct payload_tally *t)
{
    to->lookups += t->lookups;
    to->found += t->found;
    to->torn += t->torn;
    to->lost += t->lost;
    to->regress += t->regress;
    to->evictable_misses += t->evictable_misses;
}

#endif
