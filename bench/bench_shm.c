/*
 * bench_shm.c — how fast the shm table is on a production-sized segment, and how much memory it
 * spends per answer. Prints name=value lines (bench/record turns them into bench/RESULTS.md).
 *
 * The table: capacity = entries (default 1,000,000), ring_bytes = exactly the bytes the entries'
 * records take (16 + the sum of their 16-aligned record sizes: the log starts at position 16), so
 * after the fill the table is full and the ring has not wrapped. Each answer is what authentik's
 * embedded outpost returns for a domain-level forward-auth check: ~640 bytes of X-authentik-* lines
 * (username, groups, email, name, uid, a ~350-byte ES256 JWT, meta-* lines) for one of 4096 users,
 * on one of 32 hosts appN.example.com; the credential is a random 64-96 character base64url cookie
 * value; the key is shm_key_query over (cookie, host, /outpost.goauthentik.io/auth/traefik), as the
 * daemon computes it.
 *
 *   inserts_per_s             the fill: entries fresh answers into the segment shm_create made
 *                             (each 4 KiB page of it touched for the first time)
 *   inserts_per_s_prefaulted  the same fill into a second segment whose pages were allocated first
 *                             (MADV_POPULATE_WRITE): the table's own cost
 *   probe_*                   shm_lookup with a precomputed digest, keys uniform over all
 *                             entries, so bucket and record are cache- and TLB-cold as in
 *                             production;
 *                             probe_p50_ns_hot: the same over 1024 keys whose data stays in cache
 *   digest_p50_ns             shm_key_digest of (cookie, host, auth path) alone
 *   lookup_*                  digest + shm_lookup, from the raw cookie and host
 *   *_with_writer             the same while a second thread replaces answers nonstop (round-robin
 *                             over the keys in fill order: every write evicts the oldest
 *                             record, and the keys stay live)
 *   inserts_per_s_evicting    entries fresh answers into the full table, each evicting
 *   bytes_per_entry           segment bytes / live entries; overhead_pct against the answer's own
 *                             bytes (host + user + headers)
 *
 * Latency: each operation of a sample of 200,000 (keys drawn uniformly; their digests or cookies
 * copied into a sequential array first, so the benchmark's own bookkeeping adds no cache miss) is
 * timed alone with clock_gettime(CLOCK_MONOTONIC) on both sides, and the median cost of an empty
 * timed region (timer_overhead_ns, ~20 ns; the clock ticks in 10 ns steps) is subtracted.
 * Throughput: batches of 1024 operations are timed and the median batch rate is reported, so that
 * time this thread spent preempted is not counted — the machine may be shared; loadavg_1m and
 * preempted_pct (the share of 300 ms a spinning thread lost to gaps over 5 us) say how busy it was.
 * Lookups use a read-write handle (the daemon's) without SHM_LOOKUP_PROMOTE (promotion would
 * rewrite the table under the measurement), so each pays the two stats counters.
 *
 * Options: --entries N, --quick (100,000 entries). Segments are authcache-bench-<pid>[-2], unlinked
 * at exit.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "shm.h"

#define USERS 4096u
#define HOSTS 32u
#define SAMPLE 200000u
#define HOT 1024u /* entries in the hot set: ~0.8 MB, fits in L2 */
#define CRED_MAX 96u
#define AUTH_PATH "/outpost.goauthentik.io/auth/traefik"

/* ---- clock, random numbers, statistics ---- */

static inline uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

/* splitmix64: fast, and good enough to spread keys over buckets and pick samples. */
static inline uint64_t rnd_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15u);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static inline uint64_t rnd(void)
{
    return rnd_next(&rng_state);
}

/* Uniform in [0, n). */
static inline uint64_t rnd_below(uint64_t n)
{
    return (uint64_t)(((unsigned __int128)rnd() * n) >> 64);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return (x > y) - (x < y);
}

/* Percentile of n samples, sorting them in place. */
static uint32_t percentile(uint32_t *v, size_t n, double pct)
{
    size_t i;

    qsort(v, n, sizeof(*v), cmp_u32);
    i = (size_t)(pct / 100.0 * (double)(n - 1) + 0.5);
    return v[i];
}

static uint64_t timer_overhead;

/* Median cost of an empty timed region: what each per-op sample has to lose. */
static uint64_t calibrate_timer(void)
{
    static uint32_t d[100000];

    for (unsigned i = 0; i < 100000; i++) {
        uint64_t t0 = now_ns(), t1 = now_ns();
        d[i] = (uint32_t)(t1 - t0);
    }
    return percentile(d, 100000, 50);
}

static inline uint32_t elapsed(uint64_t t0, uint64_t t1)
{
    uint64_t d = t1 - t0;

    return d > timer_overhead ? (uint32_t)(d - timer_overhead) : 0;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);

    if (!p) {
        fprintf(stderr, "bench_shm: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

/* ---- the answers ---- */

static const char *const first_names[16] = {"alice", "bruno", "chen", "dagny", "emeka", "fatima",
                                            "goran", "hana",  "ines", "jonas", "kiri",  "lars",
                                            "mei",   "nadia", "omar", "priya"};
static const char *const last_names[16] = {
    "nguyen", "okafor", "schmidt", "tanaka",  "garcia", "kowalski", "haddad", "larsen",
    "moreau", "silva",  "ivanova", "oconnor", "patel",  "yilmaz",   "novak",  "berg"};
static const char *const group_sets[8] = {"staff",
                                          "staff|engineering",
                                          "staff|engineering|grafana-editors",
                                          "authentik Admins|staff|ops",
                                          "staff|finance",
                                          "contractors",
                                          "staff|support|helpdesk",
                                          "staff|engineering|oncall|k8s-admins"};

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static size_t b64url_encode(char *out, const void *in, size_t len)
{
    const uint8_t *p = in;
    size_t o = 0, i = 0;

    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = b64url[v >> 18];
        out[o++] = b64url[(v >> 12) & 63];
        out[o++] = b64url[(v >> 6) & 63];
        out[o++] = b64url[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = b64url[v >> 18];
        out[o++] = b64url[(v >> 12) & 63];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        out[o++] = b64url[v >> 18];
        out[o++] = b64url[(v >> 12) & 63];
        out[o++] = b64url[(v >> 6) & 63];
    }
    return o;
}

static void random_b64url(char *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = b64url[rnd() & 63];
}

struct user {
    char name[32];
    uint32_t name_len;
    char *hdrs;
    uint32_t hdrs_len;
};

/* The headers authentik's outpost sends for user u (X-authentik-*, a JWT whose claims name u). */
static void make_user(struct user *u, unsigned i, int64_t now_ms)
{
    const char *first = first_names[i % 16], *last = last_names[(i / 16) % 16];
    char uid[41], claims[400], jwt[700], *h = xmalloc(2048);
    uint8_t raw[64];
    size_t n;
    int len;

    u->name_len = (uint32_t)snprintf(u->name, sizeof(u->name), "%s.%s%u", first, last, i / 256);
    for (unsigned k = 0; k < 40; k++)
        uid[k] = "0123456789abcdef"[rnd() & 15];
    uid[40] = 0;
    len = snprintf(claims, sizeof(claims),
                   "{\"iss\":\"https://auth.example.com/\",\"sub\":\"%.16s\",\"exp\":%lld,"
                   "\"iat\":%lld,\"email\":\"%s@example.com\",\"preferred_username\":\"%s\"}",
                   uid, (long long)(now_ms / 1000 + 86400), (long long)(now_ms / 1000), u->name,
                   u->name);
    n = b64url_encode(jwt, "{\"alg\":\"ES256\",\"typ\":\"JWT\"}", 27);
    jwt[n++] = '.';
    n += b64url_encode(jwt + n, claims, (size_t)len);
    jwt[n++] = '.';
    for (unsigned k = 0; k < sizeof(raw); k++)
        raw[k] = (uint8_t)rnd();
    n += b64url_encode(jwt + n, raw, sizeof(raw)); /* an ES256 signature is 64 bytes */
    jwt[n] = 0;
    len = snprintf(h, 2048,
                   "X-authentik-username: %s\r\n"
                   "X-authentik-groups: %s\r\n"
                   "X-authentik-email: %s@example.com\r\n"
                   "X-authentik-name: %c%s %c%s\r\n"
                   "X-authentik-uid: %s\r\n"
                   "X-authentik-jwt: %s\r\n"
                   "X-authentik-meta-app: fwd\r\n"
                   "X-authentik-meta-outpost: embedded\r\n",
                   u->name, group_sets[i % 8], u->name, first[0] - 32, first + 1, last[0] - 32,
                   last + 1, uid, jwt);
    u->hdrs = h;
    u->hdrs_len = (uint32_t)len;
}

/* One entry: its user, host and cookie. */
struct entry {
    uint16_t user, host;
    uint8_t cred_len;
};

struct bench {
    uint64_t n;
    int64_t now_ms;
    struct user users[USERS];
    char hosts[HOSTS][24];
    uint32_t host_len[HOSTS];
    struct entry *ent;      /* n entries inserted by the fill */
    char (*cred)[CRED_MAX]; /* their cookies */
    struct shm_key *key;    /* their keys */
    struct entry *ent2;     /* n more, inserted into the full table */
    struct shm_key *key2;
    char seg[64];
    struct shm h;
};

static void new_entry(struct entry *e, char *cred)
{
    e->user = (uint16_t)rnd_below(USERS);
    e->host = (uint16_t)rnd_below(HOSTS);
    e->cred_len = (uint8_t)(64 + rnd_below(CRED_MAX - 64 + 1));
    random_b64url(cred, e->cred_len);
}

static void query_for(const struct bench *b, const struct entry *e, const char *cred,
                      struct shm_query *q)
{
    memset(q, 0, sizeof(*q));
    q->cred_kind = SHM_CRED_COOKIE;
    q->cred = cred;
    q->cred_len = e->cred_len;
    q->host = b->hosts[e->host];
    q->host_len = b->host_len[e->host];
    q->auth_path = AUTH_PATH;
    q->auth_path_len = sizeof(AUTH_PATH) - 1;
}

static uint64_t record_bytes(const struct bench *b, const struct entry *e)
{
    uint64_t len = sizeof(struct shm_rec_sh) + b->host_len[e->host] + b->users[e->user].name_len +
                   b->users[e->user].hdrs_len;

    return (len + SHM_REC_ALIGN - 1) & ~(uint64_t)(SHM_REC_ALIGN - 1);
}

static void answer_for(const struct bench *b, const struct entry *e, const struct shm_key *k,
                       struct shm_answer *a)
{
    const struct user *u = &b->users[e->user];

    a->key = *k;
    a->first_seen_ms = b->now_ms - 1000;
    a->confirmed_ms = b->now_ms - 1000;
    a->fresh_until_ms = b->now_ms + 300000;
    a->session_end_ms = b->now_ms + 86400000;
    a->host = b->hosts[e->host];
    a->host_len = b->host_len[e->host];
    a->user = u->name;
    a->user_len = u->name_len;
    a->hdrs = u->hdrs;
    a->hdrs_len = u->hdrs_len;
}

/* ---- the segment ---- */

static char seg_path[96], seg_path2[96];

static void unlink_segment(void)
{
    if (seg_path[0])
        unlink(seg_path);
    if (seg_path2[0])
        unlink(seg_path2);
}

static void on_signal(int sig)
{
    unlink_segment();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* ---- measurements ---- */

static uint8_t lbuf[SHM_MAX_RECORD];
static volatile uint64_t sink;

/* A sample of entries drawn uniformly, laid out in the order they will be used. */
struct sample {
    size_t n;
    uint8_t (*digest)[SHM_DIGEST_LEN];
    char (*cred)[CRED_MAX];
    struct entry *ent;
};

static void draw_sample(const struct bench *b, struct sample *s, size_t n)
{
    s->n = n;
    for (size_t i = 0; i < n; i++) {
        uint64_t j = rnd_below(b->n);
        memcpy(s->digest[i], b->key[j].digest, SHM_DIGEST_LEN);
        memcpy(s->cred[i], b->cred[j], CRED_MAX);
        s->ent[i] = b->ent[j];
    }
}

/* Per-op latency of shm_lookup with a known digest. Returns hits. */
static size_t time_probes(struct bench *b, const struct sample *s, uint32_t *lat)
{
    struct shm_answer a;
    size_t hits = 0;

    for (size_t i = 0; i < s->n; i++) {
        uint64_t t0 = now_ns();
        int rc = shm_lookup(&b->h, s->digest[i], b->now_ms, &a, lbuf, sizeof(lbuf), 0);
        uint64_t t1 = now_ns();
        lat[i] = elapsed(t0, t1);
        hits += rc == 0;
    }
    return hits;
}

static void time_digests(struct bench *b, const struct sample *s, uint32_t *lat)
{
    uint8_t d[SHM_DIGEST_LEN];

    for (size_t i = 0; i < s->n; i++) {
        const struct entry *e = &s->ent[i];
        uint8_t kind = SHM_CRED_COOKIE;
        struct iovec parts[4] = {
            {&kind, 1},
            {s->cred[i], e->cred_len},
            {b->hosts[e->host], b->host_len[e->host]},
            {(void *)AUTH_PATH, sizeof(AUTH_PATH) - 1},
        };
        uint64_t t0 = now_ns();
        shm_key_digest(&b->h, parts, 4, d);
        uint64_t t1 = now_ns();
        lat[i] = elapsed(t0, t1);
        sink += d[0];
    }
}

/* The daemon's path: shm_key_query from the raw cookie and host, then shm_lookup. */
static inline int full_lookup(struct bench *b, const struct sample *s, size_t i)
{
    struct shm_query q;
    struct shm_key k;
    struct shm_answer a;

    query_for(b, &s->ent[i], s->cred[i], &q);
    shm_key_query(&b->h, &q, &k, 0);
    return shm_lookup(&b->h, k.digest, b->now_ms, &a, lbuf, sizeof(lbuf), 0);
}

static size_t time_lookups(struct bench *b, const struct sample *s, uint32_t *lat)
{
    size_t hits = 0;

    for (size_t i = 0; i < s->n; i++) {
        uint64_t t0 = now_ns();
        int rc = full_lookup(b, s, i);
        uint64_t t1 = now_ns();
        lat[i] = elapsed(t0, t1);
        hits += rc == 0;
    }
    return hits;
}

/* Operations per second as the median over batches of BATCH operations: the machine may be shared,
 * and a batch during which this thread was preempted is an outlier the median ignores. */
#define BATCH 1024u

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static double median_rate(double *r, size_t n)
{
    qsort(r, n, sizeof(*r), cmp_double);
    return r[n / 2];
}

static double *batch_rates;

static double lookup_rate(struct bench *b, const struct sample *s, size_t *hits)
{
    size_t h = 0, nb = 0;

    for (size_t i = 0; i + BATCH <= s->n; i += BATCH) {
        uint64_t t0 = now_ns();
        for (size_t j = i; j < i + BATCH; j++)
            h += full_lookup(b, s, j) == 0;
        batch_rates[nb++] = BATCH * 1e9 / (double)(now_ns() - t0);
    }
    *hits = h;
    return median_rate(batch_rates, nb);
}

/* The second thread: replace answers round-robin in fill order until told to stop. */
struct writer {
    struct bench *b;
    struct shm h; /* its own handle, as another process would have */
    int stop;
    uint64_t writes, errors;
    double *rates;
    size_t nrates, max_rates;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    const struct bench *b = w->b;
    uint64_t i = 0;

    while (!__atomic_load_n(&w->stop, __ATOMIC_RELAXED)) {
        uint64_t t0 = now_ns();
        for (unsigned k = 0; k < BATCH; k++, i++) {
            struct shm_answer a;
            uint64_t j = i % b->n;
            answer_for(b, &b->ent[j], &b->key[j], &a);
            if (shm_insert(&w->h, &a) != 0)
                w->errors++;
        }
        if (w->nrates < w->max_rates)
            w->rates[w->nrates++] = BATCH * 1e9 / (double)(now_ns() - t0);
    }
    w->writes = i;
    return NULL;
}

/* Insert the n answers of ent/key into h; the median batch rate. */
static double insert_all(struct bench *b, struct shm *h, const struct entry *ent,
                         const struct shm_key *key)
{
    size_t nb = 0;

    for (uint64_t i = 0; i < b->n; i += BATCH) {
        uint64_t t0 = now_ns(), end = i + BATCH < b->n ? i + BATCH : b->n;
        for (uint64_t j = i; j < end; j++) {
            struct shm_answer a;
            int rc;
            answer_for(b, &ent[j], &key[j], &a);
            if ((rc = shm_insert(h, &a)) != 0) {
                fprintf(stderr, "bench_shm: shm_insert: %s\n", strerror(-rc));
                exit(1);
            }
        }
        if (end - i == BATCH)
            batch_rates[nb++] = BATCH * 1e9 / (double)(now_ns() - t0);
    }
    return median_rate(batch_rates, nb);
}

/* Per cent of 300 ms that a spinning thread lost to gaps over 5 us: how busy the machine is. */
static double preempted_pct(void)
{
    uint64_t start = now_ns(), prev = start, lost = 0;

    while (prev - start < 300000000u) {
        uint64_t t = now_ns();
        if (t - prev > 5000)
            lost += t - prev;
        prev = t;
    }
    return 100.0 * (double)lost / (double)(prev - start);
}

static void cpu_model(char *out, size_t len)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[256];

    snprintf(out, len, "unknown");
    if (!f)
        return;
    while (fgets(line, sizeof(line), f)) {
        char *c = strchr(line, ':');
        if (strncmp(line, "model name", 10) == 0 && c) {
            c += 1 + (c[1] == ' ');
            c[strcspn(c, "\n")] = 0;
            snprintf(out, len, "%s", c);
            break;
        }
    }
    fclose(f);
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_shm [--entries N] [--quick]\n");
    exit(2);
}

/* Create the segment called name for the bench's entries. */
static void create_segment(struct bench *b, struct shm *h, const char *name, uint64_t ring)
{
    struct shm_params p = {.capacity = b->n, .ring_bytes = ring};
    int rc;

    if ((rc = shm_create(h, name, &p)) != 0) {
        fprintf(stderr, "bench_shm: shm_create %s: %s\n", name, strerror(-rc));
        exit(1);
    }
}

int main(int argc, char **argv)
{
    static struct bench bench;
    struct bench *b = &bench;
    struct shm_stats st;
    struct sample s;
    struct writer w = {0};
    pthread_t thr;
    uint32_t *lat;
    uint64_t ring = SHM_REC_ALIGN, answer_bytes = 0, t_start = now_ns();
    size_t ns, hits, hits_rate;
    double load = 0;
    char model[128];
    FILE *f;
    int rc;

    b->n = 1000000;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            b->n = 100000;
        else if (strcmp(argv[i], "--entries") == 0 && i + 1 < argc)
            b->n = strtoull(argv[++i], NULL, 10);
        else
            usage();
    }
    if (b->n < 10 * BATCH || b->n > 20000000)
        usage();

    cpu_model(model, sizeof(model));
    printf("machine=%s\n", model);
    printf("entries=%llu\n", (unsigned long long)b->n);
    if ((f = fopen("/proc/loadavg", "r"))) {
        if (fscanf(f, "%lf", &load) != 1)
            load = 0;
        fclose(f);
    }
    printf("loadavg_1m=%.2f\n", load);
    printf("preempted_pct=%.1f\n", preempted_pct());
    fflush(stdout);

    /* The answers, the entries, and the ring size they need: the log starts at position 16 and
     * each record takes its 16-aligned size, so the last one ends exactly at the ring's end. */
    {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        b->now_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    }
    for (unsigned i = 0; i < USERS; i++)
        make_user(&b->users[i], i, b->now_ms);
    for (unsigned i = 0; i < HOSTS; i++)
        b->host_len[i] =
            (uint32_t)snprintf(b->hosts[i], sizeof(b->hosts[i]), "app%u.example.com", i);
    b->ent = xmalloc(b->n * sizeof(*b->ent));
    b->ent2 = xmalloc(b->n * sizeof(*b->ent2));
    b->cred = xmalloc(b->n * sizeof(*b->cred));
    b->key = xmalloc(b->n * sizeof(*b->key));
    b->key2 = xmalloc(b->n * sizeof(*b->key2));
    batch_rates = xmalloc((b->n / BATCH + 1) * sizeof(*batch_rates));
    for (uint64_t i = 0; i < b->n; i++) {
        const struct entry *e = &b->ent[i];
        new_entry(&b->ent[i], b->cred[i]);
        ring += record_bytes(b, e);
        answer_bytes +=
            b->host_len[e->host] + b->users[e->user].name_len + b->users[e->user].hdrs_len;
    }

    snprintf(b->seg, sizeof(b->seg), "authcache-bench-%d", (int)getpid());
    snprintf(seg_path, sizeof(seg_path), "/dev/shm/%.63s", b->seg);
    atexit(unlink_segment);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    create_segment(b, &b->h, b->seg, ring);

    /* Keys, as the daemon computes them (with the credential digest kept for purge by session). */
    for (uint64_t i = 0; i < b->n; i++) {
        struct shm_query q;
        query_for(b, &b->ent[i], b->cred[i], &q);
        shm_key_query(&b->h, &q, &b->key[i], 1);
    }
    for (uint64_t i = 0; i < b->n; i++) {
        char cred[CRED_MAX];
        struct shm_query q;
        new_entry(&b->ent2[i], cred);
        query_for(b, &b->ent2[i], cred, &q);
        shm_key_query(&b->h, &q, &b->key2[i], 1);
    }

    /* Fill a fresh segment: every answer fits, nothing is evicted (but a bucket that gets 9 live
     * answers evicts its oldest); each 4 KiB page of the ring is touched for the first time. */
    printf("inserts_per_s=%.0f\n", insert_all(b, &b->h, b->ent, b->key));
    shm_stats_get(&b->h, &st);
    printf("live_entries=%lld\n", (long long)st.live);
    printf("evictions_during_fill=%llu\n", (unsigned long long)st.evictions);
    printf("ring_bytes=%llu\n", (unsigned long long)st.ring_size);
    printf("segment_bytes=%llu\n", (unsigned long long)st.segment_bytes);
    {
        double per = (double)st.segment_bytes / (double)st.live;
        double ans = (double)answer_bytes / (double)b->n;
        printf("bytes_per_entry=%.1f\n", per);
        printf("answer_bytes_per_entry=%.1f\n", ans);
        printf("overhead_pct=%.1f\n", (per / ans - 1) * 100);
    }
    fflush(stdout);

    /* The same fill into a second segment whose pages were allocated beforehand: the table's own
     * cost, without the kernel's first-touch page faults. */
    {
        char name[64];
        struct shm h2;
        snprintf(name, sizeof(name), "%.40s-2", b->seg);
        snprintf(seg_path2, sizeof(seg_path2), "/dev/shm/%s", name);
        create_segment(b, &h2, name, ring);
        if (madvise(h2.hdr, h2.map_size, MADV_POPULATE_WRITE) == 0)
            printf("inserts_per_s_prefaulted=%.0f\n", insert_all(b, &h2, b->ent, b->key));
        shm_detach(&h2);
        unlink(seg_path2);
        seg_path2[0] = 0;
    }

    timer_overhead = calibrate_timer();
    printf("timer_overhead_ns=%llu\n", (unsigned long long)timer_overhead);

    ns = b->n < SAMPLE ? (size_t)b->n : SAMPLE;
    s.digest = xmalloc(ns * sizeof(*s.digest));
    s.cred = xmalloc(ns * sizeof(*s.cred));
    s.ent = xmalloc(ns * sizeof(*s.ent));
    lat = xmalloc(ns * sizeof(*lat));

    /* The probe alone: cold, then on a hot set of HOT entries that stays in the CPU's caches. */
    draw_sample(b, &s, ns);
    hits = time_probes(b, &s, lat);
    if (hits != ns)
        fprintf(stderr, "bench_shm: note: %zu of %zu probes missed (evicted from full buckets)\n",
                ns - hits, ns);
    printf("probe_p50_ns=%u\n", percentile(lat, ns, 50));
    printf("probe_p99_ns=%u\n", percentile(lat, ns, 99));
    for (size_t i = HOT; i < ns; i++)
        memcpy(s.digest[i], s.digest[i % HOT], SHM_DIGEST_LEN);
    time_probes(b, &s, lat);
    printf("probe_p50_ns_hot=%u\n", percentile(lat, ns, 50));

    /* The digest alone; check once that it is the daemon's key. */
    {
        struct shm_query q;
        struct shm_key k;
        uint8_t d[SHM_DIGEST_LEN], kind = SHM_CRED_COOKIE;
        struct iovec parts[4] = {
            {&kind, 1},
            {b->cred[0], b->ent[0].cred_len},
            {b->hosts[b->ent[0].host], b->host_len[b->ent[0].host]},
            {(void *)AUTH_PATH, sizeof(AUTH_PATH) - 1},
        };
        query_for(b, &b->ent[0], b->cred[0], &q);
        shm_key_query(&b->h, &q, &k, 0);
        shm_key_digest(&b->h, parts, 4, d);
        if (memcmp(d, k.digest, SHM_DIGEST_LEN) != 0) {
            fprintf(stderr, "bench_shm: shm_key_digest differs from shm_key_query\n");
            return 1;
        }
    }
    draw_sample(b, &s, ns);
    time_digests(b, &s, lat);
    printf("digest_p50_ns=%u\n", percentile(lat, ns, 50));

    /* Full lookups: latency, then rate. */
    draw_sample(b, &s, ns);
    time_lookups(b, &s, lat);
    printf("lookup_p50_ns=%u\n", percentile(lat, ns, 50));
    printf("lookup_p99_ns=%u\n", percentile(lat, ns, 99));
    draw_sample(b, &s, ns);
    printf("lookups_per_s=%.0f\n", lookup_rate(b, &s, &hits_rate));
    fflush(stdout);

    /* The same with a writer. */
    w.b = b;
    w.max_rates = 1u << 20;
    w.rates = xmalloc(w.max_rates * sizeof(*w.rates));
    if ((rc = shm_attach(&w.h, b->seg, 1)) != 0) {
        fprintf(stderr, "bench_shm: shm_attach: %s\n", strerror(-rc));
        return 1;
    }
    draw_sample(b, &s, ns);
    if ((rc = pthread_create(&thr, NULL, writer_main, &w)) != 0) {
        fprintf(stderr, "bench_shm: pthread_create: %s\n", strerror(rc));
        return 1;
    }
    usleep(20000); /* let it reach full speed */
    hits = time_lookups(b, &s, lat);
    printf("lookup_p50_ns_with_writer=%u\n", percentile(lat, ns, 50));
    printf("lookup_p99_ns_with_writer=%u\n", percentile(lat, ns, 99));
    draw_sample(b, &s, ns);
    printf("lookups_per_s_with_writer=%.0f\n", lookup_rate(b, &s, &hits_rate));
    __atomic_store_n(&w.stop, 1, __ATOMIC_RELAXED);
    pthread_join(thr, NULL);
    printf("lookup_hit_pct_with_writer=%.2f\n",
           100.0 * (double)(hits + hits_rate) / (double)(ns + ns / BATCH * BATCH));
    printf("writer_inserts_per_s=%.0f\n", w.nrates ? median_rate(w.rates, w.nrates) : 0.0);
    if (w.errors)
        fprintf(stderr, "bench_shm: writer: %llu inserts failed\n", (unsigned long long)w.errors);
    shm_detach(&w.h);
    fflush(stdout);

    /* Fresh answers into the full table: each evicts the oldest. */
    printf("inserts_per_s_evicting=%.0f\n", insert_all(b, &b->h, b->ent2, b->key2));
    printf("elapsed_s=%.1f\n", (double)(now_ns() - t_start) / 1e9);

    shm_detach(&b->h);
    return 0;
}
