/*
 * fuzz_shm.c — the shm table on arbitrary segment bytes: shm_attach_mem, then lookups, foreach,
 * check and stats, and on a writable handle insert, delete, the purges and sweep. shm.h promises
 * that arbitrary bytes in a segment can make a call fail or miss, never crash, overrun or loop; and
 * that a read-only handle never writes to the segment. Beyond the sanitizers this checks that every
 * answer handed out lies inside the caller's buffer within the SHM_MAX_* limits, that return values
 * are in their documented ranges, and that read-only calls leave every byte of the image as it was.
 *
 * The image is built one of two ways, chosen by bit 0 of the first input byte:
 *
 *   overlay (0)  a real segment (capacity 64, the ring wrapped with fillers, answers live, expired,
 *                deleted and evicted), made once per process with shm_create and copied, with the
 *                input's patches written over it, so most inputs get past attach validation:
 *                  byte 1       number of patches (low 4 bits)
 *                  each patch   where (1 byte: low 2 bits pick header / index / record / anywhere),
 *                               offset (3 bytes LE), length (1 byte, mod 65), then the bytes
 *                the rest of the input is the operations' input (below).
 *   raw (1)      the input after byte 0 is the image. So that short inputs can describe a whole
 *                geometry, an image whose header claims a total_size between its length and 256 KiB
 *                is zero-extended to that size. The last 64 bytes double as the operations' input.
 *
 * Byte 0 also gives: bit 1 writable handle, bit 2 the lookup buffer is small (as a caller's
 * buf_len may be; bits 6-7 pick its size), bit 3 lookups promote, bit 4 time is far in the future
 * (answers expire), bit 5 purge all and insert an answer that ends now.
 *
 * The operations' input is read as: 2 digests (16 bytes each), a user name (up to 16 bytes, length
 * first), then the rest as a credential and an answer's headers.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shm.h"
#include "fuzz_check.h"

#define NOW INT64_C(1800000000000) /* ms */
#define BASE_CAPACITY 64
#define BASE_ANSWERS 200
#define RAW_MAX (256u * 1024)

/* ---- the base segment, made once ---- */

static uint8_t *base;
static size_t base_len;
static uint8_t known[BASE_ANSWERS][SHM_DIGEST_LEN]; /* digests of every answer ever inserted */
static uint8_t known_cred[SHM_CRED_LEN];
static uint64_t rec_off[256]; /* image offsets of the records between tail and head */
static unsigned nrec;
static uint64_t index_len;

static void base_answer(struct shm *h, unsigned i, struct shm_answer *a, char *hdrs)
{
    static const char *const hosts[] = {"app1.example.com", "app2.example.com",
                                        "grafana.example.com"};
    static char cred[32], user[16];
    const char *host = hosts[i % 3];
    int n = snprintf(cred, sizeof(cred), "cookie-%u", i);
    struct iovec scope[2] = {{(void *)host, strlen(host)},
                             {"/outpost.goauthentik.io/auth/traefik", 36}};
    size_t pad = 40 + (i * 97) % 1400, h_len;

    snprintf(user, sizeof(user), "user%u", i % 7);
    memset(a, 0, sizeof(*a));
    shm_key_make(h, cred, (size_t)n, scope, 2, &a->key);
    h_len = (size_t)snprintf(hdrs, 2048, "X-authentik-username: %s\r\nX-authentik-jwt: ", user);
    memset(hdrs + h_len, 'j', pad);
    memcpy(hdrs + h_len + pad, "\r\n", 2);
    a->first_seen_ms = NOW - 60000;
    a->confirmed_ms = NOW - 1000;
    a->fresh_until_ms = NOW + 30000;
    a->session_end_ms = i % 5 == 0 ? NOW - 1 : NOW + 3600000 * (int64_t)(i % 4); /* some expired */
    a->host = host;
    a->host_len = (uint32_t)strlen(host);
    a->user = user;
    a->user_len = (uint32_t)strlen(user);
    a->hdrs = hdrs;
    a->hdrs_len = (uint32_t)(h_len + pad + 2);
}

static void make_base(void)
{
    static const uint8_t key[SHM_KEY_LEN] = "authcache fuzz_shm fixed key!!!";
    struct shm_params p = {.capacity = BASE_CAPACITY, .key = key};
    char name[64], path[96], hdrs[2048];
    struct shm h;
    int rc;

    snprintf(name, sizeof(name), "authcache-fuzz-shm-%d", (int)getpid());
    snprintf(path, sizeof(path), "/dev/shm/%s", name);
    if ((rc = shm_create(&h, name, &p)) != 0) {
        fprintf(stderr, "fuzz_shm: shm_create: %s\n", strerror(-rc));
        abort();
    }
    for (unsigned i = 0; i < BASE_ANSWERS; i++) {
        struct shm_answer a;
        base_answer(&h, i, &a, hdrs);
        memcpy(known[i], a.key.digest, SHM_DIGEST_LEN);
        if (i == BASE_ANSWERS - 1)
            memcpy(known_cred, a.key.cred, SHM_CRED_LEN);
        must(shm_insert(&h, &a) == 0);
        if (i % 11 == 0) /* a replace: the old record stays in the log, dead */
            must(shm_insert(&h, &a) == 0);
        if (i % 13 == 0 && i > 0)
            shm_delete(&h, known[i - 1]);
    }
    base_len = h.map_size;
    must(posix_memalign((void **)&base, 64, base_len) == 0); /* the header is 64-aligned */
    memcpy(base, h.hdr, base_len);
    index_len = h.nbuckets * SHM_BUCKET_SIZE;
    /* Where the records are, for patches aimed at record headers. */
    {
        const struct shm_hdr_sh *hd = (const struct shm_hdr_sh *)base;
        uint64_t t = hd->tail;
        while (t < hd->head && nrec < 256) {
            const struct shm_rec_sh *r = (const void *)(base + hd->ring_off + t % hd->ring_size);
            if (r->pos != t || r->len < 16)
                break;
            rec_off[nrec++] = hd->ring_off + t % hd->ring_size;
            t += (r->len + SHM_REC_ALIGN - 1) & ~(uint64_t)(SHM_REC_ALIGN - 1);
        }
    }
    shm_detach(&h);
    unlink(path);
}

/* ---- checks on what the table hands out ---- */

static volatile unsigned sink;

static void touch(const char *p, size_t n)
{
    unsigned s = 0;

    for (size_t i = 0; i < n; i++)
        s += (unsigned char)p[i];
    sink += s;
}

/* An answer whose strings lie in [lo, lo + len). */
static void check_answer(const struct shm_answer *a, const void *lo, size_t len)
{
    const char *b = lo, *e = b + len;

    must(a->host_len <= SHM_MAX_HOST && a->user_len <= SHM_MAX_USER && a->hdrs_len <= SHM_MAX_HDRS);
    must(a->host >= b && a->host + a->host_len <= e);
    must(a->user >= b && a->user + a->user_len <= e);
    must(a->hdrs >= b && a->hdrs + a->hdrs_len <= e);
    touch(a->host, a->host_len);
    touch(a->user, a->user_len);
    touch(a->hdrs, a->hdrs_len);
}

struct walk {
    int64_t now;
    unsigned seen, stop_after;
};

static int on_answer(const struct shm_answer *a, void *arg)
{
    static uint8_t copy[SHM_MAX_RECORD];
    struct walk *w = arg;
    size_t n = (size_t)a->host_len + a->user_len + a->hdrs_len;

    /* foreach's strings point into its own buffer: bound them by the largest record. */
    must(a->host_len <= SHM_MAX_HOST && a->user_len <= SHM_MAX_USER && a->hdrs_len <= SHM_MAX_HDRS);
    must(a->session_end_ms > w->now);
    must(n <= sizeof(copy));
    memcpy(copy, a->host, a->host_len);
    memcpy(copy + a->host_len, a->user, a->user_len);
    memcpy(copy + a->host_len + a->user_len, a->hdrs, a->hdrs_len);
    return ++w->seen == w->stop_after ? 7 : 0;
}

/*
 * Known bug (tests/fuzz/regress/shm/hang-check-*): shm_check walks the log with absolute positions,
 * t from align16(tail) while t < head. With head within a record's length of 2^64, t wraps to 0
 * (in align16, or in t += len) and the walk goes on for ~2^60 steps. Building with
 * -DFUZZ_SHM_SKIP_KNOWN_HANG skips shm_check on such segments so that a long run can look for other
 * problems; the default build keeps the call, so the regression inputs fail until shm.c is fixed.
 */
static int check(struct shm *h, int fix, struct shm_check_report *rep)
{
#ifdef FUZZ_SHM_SKIP_KNOWN_HANG
    uint64_t head = __atomic_load_n(&h->hdr->head, __ATOMIC_RELAXED);
    if (head > UINT64_MAX - SHM_MAX_RECORD - SHM_REC_ALIGN) {
        memset(rep, 0, sizeof(*rep));
        return 0;
    }
#endif
    return shm_check(h, fix, rep);
}

static void lookup(struct shm *h, const uint8_t *digest, int64_t now, void *buf, size_t buf_len,
                   int flags)
{
    struct shm_answer a;
    int rc = shm_lookup(h, digest, now, &a, buf, buf_len, flags);

    must(rc == 0 || rc == -ENOENT || rc == -EINVAL);
    if (rc == 0) {
        check_answer(&a, buf, buf_len);
        must(a.session_end_ms > now);
        must(memcmp(a.key.digest, digest, SHM_DIGEST_LEN) == 0);
    }
}

/* ---- one input ---- */

struct ops {
    const uint8_t *p;
    size_t n;
};

static size_t take(struct ops *o, void *out, size_t want)
{
    size_t n = want < o->n ? want : o->n;

    memset(out, 0, want);
    memcpy(out, o->p, n);
    o->p += n;
    o->n -= n;
    return n;
}

static void run(uint8_t *img, size_t len, unsigned mode, struct ops o)
{
    int writable = (mode & 2) != 0, flags = (mode & 8) ? SHM_LOOKUP_PROMOTE : 0;
    int64_t now = (mode & 16) ? NOW + INT64_C(86400000) * 365 : NOW;
    size_t buf_len =
        (mode & 4) ? sizeof(struct shm_rec_sh) + 64 + (size_t)(mode >> 6) * 300 : SHM_MAX_RECORD;
    uint8_t *buf = malloc(buf_len), *before = NULL, d[2][SHM_DIGEST_LEN], ulen = 0;
    char user[16], rest[512];
    struct shm_check_report rep;
    struct shm_stats st;
    struct walk w = {.now = now, .stop_after = 1 + mode % 5};
    struct shm h;
    size_t rest_len;
    int rc;

    must(buf != NULL);
    take(&o, d, sizeof(d));
    take(&o, &ulen, 1);
    ulen %= sizeof(user) + 1;
    take(&o, user, ulen);
    rest_len = take(&o, rest, sizeof(rest));

    if (!writable) {
        before = malloc(len);
        must(before != NULL);
        memcpy(before, img, len);
    }
    rc = shm_attach_mem(&h, img, len, writable);
    must(rc == 0 || rc == -EPROTO);
    if (rc != 0)
        goto out;

    for (unsigned i = 0; i < BASE_ANSWERS; i += 9)
        lookup(&h, known[(i + mode) % BASE_ANSWERS], now, buf, buf_len, flags);
    lookup(&h, d[0], now, buf, buf_len, flags);
    lookup(&h, d[1], now, buf, buf_len, flags);
    {
        struct shm_query q = {.cred_kind = SHM_CRED_COOKIE,
                              .cred = rest,
                              .cred_len = rest_len,
                              .host = user,
                              .host_len = ulen,
                              .auth_path = "/auth",
                              .auth_path_len = 5};
        struct shm_key k;
        shm_key_query(&h, &q, &k, 1);
        lookup(&h, k.digest, now, buf, buf_len, flags);
    }
    rc = shm_foreach(&h, now, on_answer, &w);
    must(rc == 0 || rc == 7);
    rc = check(&h, writable, &rep);
    must(rc == 0 || rc == -EUCLEAN);
    must(memchr(rep.first_problem, 0, sizeof(rep.first_problem)) != NULL);
    must(rc != 0 || (rep.slots_bad == 0 && rep.first_problem[0] == 0));
    must(rc == 0 || rep.slots_bad != 0 || rep.first_problem[0] != 0);
    shm_stats_get(&h, &st);
    must(st.segment_bytes == len);
    sink += (unsigned)shm_retired(&h);

    if (!writable) {
        must(shm_insert(&h, &(struct shm_answer){0}) == -EROFS);
        must(shm_delete(&h, d[0]) == -EROFS);
        must(shm_purge_user(&h, user, ulen) == -EROFS);
        must(shm_sweep(&h, 0, 1, now) == -EROFS);
        must(memcmp(before, img, len) == 0); /* readers never write */
        goto out;
    }

    /* Writers: an answer from the input (too big sometimes), a replace of a known one. */
    {
        struct shm_answer a = {0};
        uint32_t cut = rest_len ? (uint8_t)rest[0] : 0;
        memcpy(a.key.digest, d[0], SHM_DIGEST_LEN);
        memcpy(a.key.cred, d[1], SHM_CRED_LEN);
        a.first_seen_ms = now - 1;
        a.session_end_ms = (mode & 32) ? now : now + 1000;
        a.host = rest;
        a.host_len = cut % 64 < rest_len ? cut % 64 : (uint32_t)rest_len;
        a.user = user;
        a.user_len = ulen;
        a.hdrs = rest + a.host_len;
        a.hdrs_len = (uint32_t)rest_len - a.host_len;
        rc = shm_insert(&h, &a);
        must(rc == 0);
        lookup(&h, d[0], now, buf, buf_len, flags);
        a.hdrs_len = SHM_MAX_HDRS + 1;
        must(shm_insert(&h, &a) == -E2BIG);
    }
    rc = shm_delete(&h, known[mode % BASE_ANSWERS]);
    must(rc >= 0 && rc <= (int)SHM_BUCKET_SLOTS);
    rc = shm_delete(&h, d[1]);
    must(rc >= 0 && rc <= (int)SHM_BUCKET_SLOTS);
    must(shm_purge_user(&h, user, ulen) >= 0);
    must(shm_purge_user(&h, "user3", 5) >= 0);
    must(shm_purge_cred(&h, known_cred) >= 0);
    {
        uint64_t first = 0, count = 0;
        memcpy(&first, d[1] + 8, 4);
        memcpy(&count, d[1] + 12, 4);
        must(shm_sweep(&h, first % (h.nbuckets + 2), count, now) >= 0);
        must(shm_sweep(&h, 0, UINT64_MAX, now) >= 0);
    }
    if (mode & 32)
        must(shm_purge_all(&h) >= 0);
    lookup(&h, d[0], now, buf, buf_len, flags);
    lookup(&h, known[BASE_ANSWERS - 1], now, buf, buf_len, SHM_LOOKUP_PROMOTE);
    rc = shm_foreach(&h, now, on_answer, &w);
    must(rc == 0 || rc == 7);
    rc = check(&h, 1, &rep);
    must(rc == 0 || rc == -EUCLEAN);
    shm_stats_get(&h, &st);
out:
    shm_detach(&h);
    free(before);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ops o;
    uint8_t *img;
    size_t len;
    unsigned mode;

    if (!base)
        make_base();
    if (size < 1)
        return 0;
    mode = data[0];

    if (mode & 1) {
        /* Raw: the input is the image, zero-extended to the size its header claims. */
        uint64_t claimed = 0;
        len = size - 1;
        if (len >= 24)
            memcpy(&claimed, data + 1 + 16, 8); /* total_size */
        if (claimed > len && claimed <= RAW_MAX)
            len = (size_t)claimed;
        if (posix_memalign((void **)&img, 64, len ? len : 1) != 0)
            return 0;
        memset(img, 0, len);
        memcpy(img, data + 1, size - 1);
        o.n = size - 1 < 64 ? size - 1 : 64;
        o.p = data + size - o.n;
    } else {
        /* Overlay: patches over the base segment. */
        const uint8_t *p = data + 1, *end = data + size;
        unsigned npatch = size > 1 ? (*p++ & 15) : 0;
        len = base_len;
        if (posix_memalign((void **)&img, 64, len) != 0)
            return 0;
        memcpy(img, base, len);
        for (unsigned i = 0; i < npatch && end - p >= 5; i++) {
            unsigned where = p[0] & 3, n = p[4] % 65;
            uint64_t off = (uint64_t)p[1] | (uint64_t)p[2] << 8 | (uint64_t)p[3] << 16;
            p += 5;
            if (where == 0) /* the header's fields, not its stats */
                off %= 512;
            else if (where == 1)
                off = SHM_HDR_SIZE + off % index_len;
            else if (where == 2 && nrec > 0)
                off = rec_off[(off >> 8) % nrec] + (off & 0xff);
            else
                off %= len;
            if (n > (size_t)(end - p))
                n = (unsigned)(end - p);
            if (off >= len)
                continue;
            if (n > len - off)
                n = (unsigned)(len - off);
            memcpy(img + off, p, n);
            p += n;
        }
        o.p = p;
        o.n = (size_t)(end - p);
    }
    run(img, len, mode, o);
    free(img);
    return 0;
}
