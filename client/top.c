/*
 * top.c — `authcache top`: the live view (see the section comment below). Split from cli.c, whose
 * helpers it uses through cli.h.
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "authcache.h"
#include "cli.h"

/* ---- top ----
 *
 * Each second top samples the segment (authcache_stats), GET /v1/stats and GET /metrics, and shows
 * the rates over the last second beside a sparkline of the last TOP_HISTORY seconds. Per-host
 * request rates are not exported, so the busiest hosts are those with the most answers held,
 * counted by walking the segment every TOP_WALK_EVERY refreshes. Without the admin listener the
 * segment figures still show, with one line saying so; the listener is tried again each second.
 */

#define TOP_HISTORY 30
#define TOP_WALK_EVERY 5
#define TOP_HOSTS 5
#define TOP_ADMIN_TIMEOUT_MS 400
#define TOP_LAT_BUCKETS 32

/* What top reads from GET /v1/stats: X(id, JSON object, key, label); RATE ones show per second. */
#define TOP_RATES(X)                                                                               \
    X(HIT, "requests", "hit", "hit")                                                               \
    X(MISS, "requests", "miss", "miss")                                                            \
    X(STALE, "requests", "stale", "stale")                                                         \
    X(REVALIDATED, "requests", "revalidated", "revalidated")                                       \
    X(UNAVAILABLE, "requests", "unavailable", "unavailable (503)")                                 \
    X(SIGNOUT, "requests", "signout", "signout")                                                   \
    X(BYPASS, "requests", "bypass", "bypass")                                                      \
    X(REJECTED, "requests", "rejected", "rejected")                                                \
    X(IDP_CALLS, "idp", "requests", "calls/s")                                                     \
    X(IDP_FAILURES, "idp", "failures", "failures/s")                                               \
    X(IDP_COALESCED, "idp", "coalesced", "coalesced/s")                                            \
    X(BUS_PUBLISHED, "bus", "published", "published/s")                                            \
    X(BUS_RECEIVED, "bus", "received", "received/s")                                               \
    X(BUS_APPLIED, "bus", "applied", "applied/s")                                                  \
    X(CONN_ACCEPTED, "connections", "accepted", "accepted/s")                                      \
    X(CONN_EVICTED, "connections", "evicted", "evicted/s")                                         \
    X(CONN_TIMED_OUT, "connections", "timed_out", "timed out/s")
#define TOP_GAUGES(X)                                                                              \
    X(CONN_OPEN, "connections", "open", "open")                                                    \
    X(BUS_QUEUED, "bus", "queued", "queued")                                                       \
    X(BUS_BEHIND, "bus", "behind", "behind")                                                       \
    X(BUS_LAG, "bus", "lag_seconds", "lag")                                                        \
    X(BUS_GAPS, "bus", "gaps", "gaps")                                                             \
    X(BUS_DROPPED, "bus", "dropped", "dropped")                                                    \
    X(BUS_ENABLED, "bus", "enabled", "")                                                           \
    X(BUS_CONNECTED, "bus", "connected", "")                                                       \
    X(CIRCUIT_OPEN, "idp", "circuit_open", "")                                                     \
    X(CIRCUIT_OPENED, "idp", "circuit_opened", "")                                                 \
    X(WORKERS, "", "workers", "")                                                                  \
    X(READY, "", "ready", "")                                                                      \
    X(UPTIME, "", "uptime_seconds", "")

enum top_fig {
#define X(id, obj, key, label) T_##id,
    TOP_RATES(X) T_RATES_END,
    TOP_GAUGES(X)
#undef X
    /* figures of /metrics and of the segment, and figures derived from the others */
    T_FEED_CONNECTED,
    T_FEED_ENDS,
    T_SEG_LOOKUPS,
    T_SEG_HITS,
    T_SEG_EVICTIONS,
    T_SEG_PURGES,
    T_ANSWERS,
    T_HIT_RATIO,
    T_P50,
    T_P99,
    T_SEG_ENTRIES,
    T_SEG_LOG,
    T_COUNT
};

static const struct {
    const char *obj, *key, *label;
} top_figs[T_COUNT] = {
#define X(id, obj, key, label) [T_##id] = {obj, key, label},
    TOP_RATES(X) TOP_GAUGES(X)
#undef X
};

/* One sample: the counters as read (NAN where unknown) and the IdP latency histogram. */
struct top_sample {
    int64_t mono_ms;
    int admin_ok, feed;
    struct authcache_stats seg;
    double v[T_COUNT];
    int nlat;
    double lat_le[TOP_LAT_BUCKETS], lat_cum[TOP_LAT_BUCKETS];
};

struct host_count {
    char *host; /* NULL: free slot */
    size_t len;
    uint64_t n;
};

/* Answers held per host, from one walk of the segment. */
struct host_table {
    struct host_count *slot;
    size_t cap, used;
};

struct top {
    struct authcache *c;
    const char *name, *admin, *token;
    int tty, utf8;
    char *resp; /* one admin answer */
    size_t resp_cap;
    char admin_err[128]; /* "" while the admin listener answers */
    struct top_sample prev, cur;
    double shown[T_COUNT]; /* this refresh: rates, gauges, derived figures (NAN: unknown) */
    double hist[T_COUNT][TOP_HISTORY];
    unsigned refreshes;
    struct host_count busiest[TOP_HOSTS];
    size_t nbusiest, nhosts;
    uint64_t walked;
};

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The number (true 1, false 0) at "key" of the object "obj" of a /v1/stats body ("" obj: the top
 * level). Not a JSON parser: it relies on that body's shape, objects one level deep and no
 * braces inside strings. Returns 0, or -ENOENT. */
static int json_number(const char *json, const char *obj, const char *key, double *v)
{
    char pat[96];
    const char *from = json, *to, *p;

    if (obj[0]) {
        snprintf(pat, sizeof(pat), "\"%s\":{", obj);
        if (!(from = strstr(json, pat)))
            return -ENOENT;
        from += strlen(pat) - 1;
        if (!(to = strchr(from, '}')))
            return -ENOENT;
    } else {
        to = json + strlen(json);
    }
    snprintf(pat, sizeof(pat), "\"%s\":", key);
    for (p = strstr(from, pat); p && p < to; p = strstr(p + 1, pat)) {
        /* at the top level, skip keys inside nested objects */
        int depth = 0;
        for (const char *q = from; !obj[0] && q < p; q++)
            depth += (*q == '{') - (*q == '}');
        if (!obj[0] && depth != 1)
            continue;
        p += strlen(pat);
        if (!strncmp(p, "true", 4) || !strncmp(p, "false", 5)) {
            *v = p[0] == 't';
            return 0;
        }
        char *end;
        *v = strtod(p, &end);
        return end == p ? -ENOENT : 0;
    }
    return -ENOENT;
}

/* The value of the sample line "name value" of a Prometheus text body: 0, or -ENOENT. */
static int prom_number(const char *text, const char *name, double *v)
{
    size_t n = strlen(name);

    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (!strncmp(p, name, n) && p[n] == ' ') {
            *v = strtod(p + n + 1, NULL);
            return 0;
        }
    return -ENOENT;
}

/* The buckets of authcache_idp_latency_seconds into s (cumulative, as exported). */
static void prom_latency(const char *text, struct top_sample *s)
{
    static const char pre[] = "authcache_idp_latency_seconds_bucket{le=\"";
    const char *p = text;

    s->nlat = 0;
    while ((p = strstr(p, pre)) && s->nlat < TOP_LAT_BUCKETS) {
        char *end;
        p += sizeof(pre) - 1;
        s->lat_le[s->nlat] = strtod(p, &end); /* "+Inf" reads as infinity */
        if (!(end = strstr(end, "} ")))
            break;
        s->lat_cum[s->nlat++] = strtod(end + 2, NULL);
    }
}

/* Reads /v1/stats and /metrics into s; on failure says why in t->admin_err. */
static void top_sample_admin(struct top *t, struct top_sample *s)
{
    char *body;
    int st;

    s->admin_ok = 0;
    st = admin_request(t->admin, t->token, "GET", "/v1/stats", TOP_ADMIN_TIMEOUT_MS, t->resp,
                       t->resp_cap, &body);
    if (st == 200) {
        for (int i = 0; i < T_FEED_CONNECTED; i++)
            if (i != T_RATES_END && json_number(body, top_figs[i].obj, top_figs[i].key, &s->v[i]))
                s->v[i] = NAN;
        st = admin_request(t->admin, t->token, "GET", "/metrics", TOP_ADMIN_TIMEOUT_MS, t->resp,
                           t->resp_cap, &body);
    }
    if (st != 200) {
        if (st < 0)
            snprintf(t->admin_err, sizeof(t->admin_err), "%s", admin_strerror(st));
        else
            snprintf(t->admin_err, sizeof(t->admin_err), "HTTP status %d", st);
        return;
    }
    s->feed = prom_number(body, "authcache_feed_connected", &s->v[T_FEED_CONNECTED]) == 0 &&
              prom_number(body, "authcache_feed_session_ends_total", &s->v[T_FEED_ENDS]) == 0;
    prom_latency(body, s);
    s->admin_ok = 1;
    t->admin_err[0] = 0;
}

static void top_sample(struct top *t, struct top_sample *s)
{
    struct authcache_stats st = {0};

    for (int i = 0; i < T_COUNT; i++)
        s->v[i] = NAN;
    s->mono_ms = mono_ms();
    if (authcache_stats(t->c, &st) == 0) {
        s->v[T_SEG_LOOKUPS] = (double)st.lookups;
        s->v[T_SEG_HITS] = (double)st.hits;
        s->v[T_SEG_EVICTIONS] = (double)st.evictions;
        s->v[T_SEG_PURGES] = (double)st.purges;
        s->v[T_SEG_ENTRIES] = (double)st.entries;
        s->v[T_SEG_LOG] = st.ring_bytes ? 100.0 * (double)st.ring_used / (double)st.ring_bytes : 0;
    }
    s->seg = st;
    top_sample_admin(t, s);
}

/* The q-quantile of the IdP latencies between two samples, interpolated within its bucket as
 * Prometheus's histogram_quantile does; NAN without calls, INFINITY past the last bound. */
static double latency_quantile(const struct top_sample *a, const struct top_sample *b, double q)
{
    double total, rank, below = 0;

    if (!a->admin_ok || !b->admin_ok || a->nlat != b->nlat || b->nlat == 0)
        return NAN;
    total = b->lat_cum[b->nlat - 1] - a->lat_cum[a->nlat - 1];
    if (total <= 0)
        return NAN;
    rank = q * total;
    for (int i = 0; i < b->nlat; i++) {
        double cum = b->lat_cum[i] - a->lat_cum[i], lo = i ? b->lat_le[i - 1] : 0;
        if (cum >= rank && cum > below) {
            if (isinf(b->lat_le[i]))
                return INFINITY;
            return lo + (b->lat_le[i] - lo) * (rank - below) / (cum - below);
        }
        below = cum;
    }
    return NAN;
}

/* Per second from prev to cur; NAN when either is unknown or the counter went back (restart). */
static double rate(const struct top *t, int fig)
{
    double d = t->cur.v[fig] - t->prev.v[fig];
    int64_t ms = t->cur.mono_ms - t->prev.mono_ms;

    if (isnan(d) || d < 0 || ms <= 0)
        return NAN;
    return d * 1000.0 / (double)ms;
}

/* Fills t->shown from the last two samples and pushes it onto the histories. */
static void top_compute(struct top *t)
{
    double *v = t->shown, cached = 0, cacheable = 0;

    for (int i = 0; i < T_COUNT; i++)
        v[i] = i < T_RATES_END ? rate(t, i) : t->cur.v[i];
    v[T_RATES_END] = NAN;
    v[T_FEED_ENDS] = rate(t, T_FEED_ENDS);
    v[T_SEG_LOOKUPS] = rate(t, T_SEG_LOOKUPS);
    v[T_SEG_HITS] = rate(t, T_SEG_HITS);
    v[T_SEG_EVICTIONS] = rate(t, T_SEG_EVICTIONS);
    v[T_SEG_PURGES] = rate(t, T_SEG_PURGES);
    v[T_ANSWERS] = 0;
    for (int i = T_HIT; i <= T_REJECTED; i++)
        v[T_ANSWERS] += v[i];
    /* answered from the cache, of the answers the cache could have given */
    cached = v[T_HIT] + v[T_STALE];
    cacheable = cached + v[T_MISS] + v[T_REVALIDATED] + v[T_UNAVAILABLE];
    v[T_HIT_RATIO] = cacheable > 0 ? 100.0 * cached / cacheable : NAN;
    v[T_P50] = latency_quantile(&t->prev, &t->cur, 0.50);
    v[T_P99] = latency_quantile(&t->prev, &t->cur, 0.99);
    for (int i = 0; i < T_COUNT; i++) {
        memmove(t->hist[i], t->hist[i] + 1, (TOP_HISTORY - 1) * sizeof(double));
        t->hist[i][TOP_HISTORY - 1] = v[i];
    }
}

/* ---- top: the busiest hosts ---- */

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;

    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

/* Counts one more answer for host; -ENOMEM if the table cannot hold it. */
static int hosts_add(struct host_table *ht, const char *host, size_t len)
{
    if (ht->used * 2 >= ht->cap) {
        struct host_table big = {calloc(ht->cap ? ht->cap * 2 : 256, sizeof(*big.slot)),
                                 ht->cap ? ht->cap * 2 : 256, 0};
        if (!big.slot)
            return -ENOMEM;
        for (size_t i = 0; i < ht->cap; i++) {
            struct host_count *o = &ht->slot[i];
            if (!o->host)
                continue;
            size_t j = fnv1a(o->host, o->len) & (big.cap - 1);
            while (big.slot[j].host)
                j = (j + 1) & (big.cap - 1);
            big.slot[j] = *o;
        }
        big.used = ht->used;
        free(ht->slot);
        *ht = big;
    }
    size_t j = fnv1a(host, len) & (ht->cap - 1);
    for (; ht->slot[j].host; j = (j + 1) & (ht->cap - 1))
        if (ht->slot[j].len == len && !memcmp(ht->slot[j].host, host, len)) {
            ht->slot[j].n++;
            return 0;
        }
    if (!(ht->slot[j].host = malloc(len ? len : 1)))
        return -ENOMEM;
    memcpy(ht->slot[j].host, host, len);
    ht->slot[j].len = len;
    ht->slot[j].n = 1;
    ht->used++;
    return 0;
}

static int hosts_fn(const struct authcache_answer *a, void *arg)
{
    return hosts_add(arg, a->host, a->host_len);
}

/* Walks the segment and keeps the TOP_HOSTS hosts with the most answers held in t->busiest. */
static void top_walk_hosts(struct top *t)
{
    struct host_table ht = {0};

    for (size_t i = 0; i < t->nbusiest; i++)
        free(t->busiest[i].host);
    t->nbusiest = t->walked = 0;
    authcache_foreach(t->c, hosts_fn, &ht);
    for (size_t i = 0; i < ht.cap; i++) {
        struct host_count h = ht.slot[i];
        size_t k;
        if (!h.host)
            continue;
        t->walked += h.n;
        for (k = t->nbusiest; k > 0 && t->busiest[k - 1].n < h.n; k--)
            if (k < TOP_HOSTS)
                t->busiest[k] = t->busiest[k - 1];
            else
                free(t->busiest[k - 1].host);
        if (k < TOP_HOSTS) {
            t->busiest[k] = h;
            t->nbusiest += t->nbusiest < TOP_HOSTS;
        } else {
            free(h.host);
        }
    }
    t->nhosts = ht.used;
    free(ht.slot);
}

/* ---- top: the screen ---- */

/* The last TOP_HISTORY values of a figure as a sparkline scaled to max (auto when max <= 0);
 * unknown values show as blanks. */
static void spark(FILE *f, const struct top *t, int fig, double max)
{
    static const char *const bars[] = {" ", "▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};
    static const char ascii[] = " _.-:=+*#";
    const double *h = t->hist[fig];
    unsigned from = TOP_HISTORY - (t->refreshes < TOP_HISTORY ? t->refreshes : TOP_HISTORY);

    if (max <= 0)
        for (unsigned i = from; i < TOP_HISTORY; i++)
            if (!isnan(h[i]) && h[i] > max)
                max = isinf(h[i]) ? max : h[i];
    fputc(' ', f);
    for (unsigned i = 0; i < TOP_HISTORY; i++) {
        int level = 0;
        if (i >= from && !isnan(h[i]) && max > 0)
            level = h[i] <= 0 ? 0 : h[i] >= max ? 8 : 1 + (int)(h[i] / max * 7.0);
        if (t->utf8)
            fputs(bars[level], f);
        else
            fputc(ascii[level], f);
    }
}

/* A rate or count for the value column: "-" unknown, 1 decimal under 10, "12.3k" from 100 000. */
static const char *num(double v, char *b, size_t n)
{
    if (isnan(v))
        snprintf(b, n, "-");
    else if (v != 0 && v < 10 && v != (double)(long long)v)
        snprintf(b, n, "%.1f", v);
    else if (v < 100000)
        snprintf(b, n, "%.0f", v);
    else
        snprintf(b, n, "%.1fk", v / 1000);
    return b;
}

/* A latency in seconds: "-" without calls, ">5s" past the last bucket. */
static const char *secs(double v, double last_bound, char *b, size_t n)
{
    if (isnan(v))
        snprintf(b, n, "-");
    else if (isinf(v))
        snprintf(b, n, ">%gs", last_bound);
    else if (v < 0.01)
        snprintf(b, n, "%.2fms", v * 1000);
    else if (v < 1)
        snprintf(b, n, "%.0fms", v * 1000);
    else
        snprintf(b, n, "%.2fs", v);
    return b;
}

/* One line: label, value, sparkline of fig (none if fig < 0), note. */
static void row(FILE *f, const struct top *t, const char *label, const char *value, int fig,
                double max, const char *note)
{
    fprintf(f, "  %-18s %18s", label, value);
    if (fig >= 0)
        spark(f, t, fig, max);
    fprintf(f, "%s%s\n", note && note[0] ? "  " : "", note ? note : "");
}

static void rate_row(FILE *f, const struct top *t, int fig)
{
    char b[32];

    row(f, t, top_figs[fig].label, num(t->shown[fig], b, sizeof(b)), fig, 0, NULL);
}

static void show_answers(FILE *f, const struct top *t)
{
    char b[32];

    fprintf(f, "%-40s last %ds\n", "ANSWERS per second", TOP_HISTORY);
    row(f, t, "all", num(t->shown[T_ANSWERS], b, sizeof(b)), T_ANSWERS, 0, NULL);
    for (int i = T_HIT; i <= T_REJECTED; i++)
        rate_row(f, t, i);
    if (isnan(t->shown[T_HIT_RATIO]))
        snprintf(b, sizeof(b), "-");
    else
        snprintf(b, sizeof(b), "%.1f%%", t->shown[T_HIT_RATIO]);
    row(f, t, "hit ratio", b, T_HIT_RATIO, 100, "hit+stale of hit..unavailable");
}

static void show_idp(FILE *f, const struct top *t)
{
    const struct top_sample *s = &t->cur;
    double last = s->nlat > 1 ? s->lat_le[s->nlat - 2] : 0;
    char b[32], note[64];

    fprintf(f, "IDP\n");
    rate_row(f, t, T_IDP_CALLS);
    rate_row(f, t, T_IDP_FAILURES);
    row(f, t, "latency p50", secs(t->shown[T_P50], last, b, sizeof(b)), T_P50, 0, NULL);
    row(f, t, "latency p99", secs(t->shown[T_P99], last, b, sizeof(b)), T_P99, 0, NULL);
    rate_row(f, t, T_IDP_COALESCED);
    snprintf(note, sizeof(note), "opened %.0f times", t->shown[T_CIRCUIT_OPENED]);
    row(f, t, "breaker", t->shown[T_CIRCUIT_OPEN] > 0 ? "OPEN" : "closed", T_CIRCUIT_OPEN, 1, note);
}

static void show_bus(FILE *f, const struct top *t)
{
    char b[32], note[64], lag[32];

    if (!(t->shown[T_BUS_ENABLED] > 0)) {
        fprintf(f, "BUS  not enabled (--bus)\n");
    } else {
        fprintf(f, "BUS  %s\n", t->shown[T_BUS_CONNECTED] > 0 ? "connected" : "NOT CONNECTED");
        rate_row(f, t, T_BUS_PUBLISHED);
        rate_row(f, t, T_BUS_RECEIVED);
        rate_row(f, t, T_BUS_APPLIED);
        row(f, t, "queued", num(t->shown[T_BUS_QUEUED], b, sizeof(b)), T_BUS_QUEUED, 0, NULL);
        snprintf(note, sizeof(note), "%s entries behind",
                 num(t->shown[T_BUS_BEHIND], b, sizeof(b)));
        snprintf(lag, sizeof(lag), "%.3f s", t->shown[T_BUS_LAG]);
        row(f, t, "lag", lag, T_BUS_LAG, 0, note);
        snprintf(note, sizeof(note), "dropped unsent %s",
                 num(t->shown[T_BUS_DROPPED], b, sizeof(b)));
        row(f, t, "gaps (all purged)", num(t->shown[T_BUS_GAPS], b, sizeof(b)), T_BUS_GAPS, 0,
            note);
    }
    if (t->cur.feed) {
        fprintf(f, "AUTHENTIK FEED  %s\n",
                t->shown[T_FEED_CONNECTED] > 0 ? "connected" : "NOT CONNECTED");
        row(f, t, "session ends/s", num(t->shown[T_FEED_ENDS], b, sizeof(b)), T_FEED_ENDS, 0, NULL);
    }
}

static void show_connections(FILE *f, const struct top *t)
{
    char b[32];

    fprintf(f, "CONNECTIONS\n");
    row(f, t, "open", num(t->shown[T_CONN_OPEN], b, sizeof(b)), T_CONN_OPEN, 0, NULL);
    rate_row(f, t, T_CONN_ACCEPTED);
    rate_row(f, t, T_CONN_EVICTED);
    rate_row(f, t, T_CONN_TIMED_OUT);
}

static void show_segment(FILE *f, const struct top *t, const struct authcache_stats *st)
{
    char b[64], note[64];

    fprintf(f, "SEGMENT  /dev/shm/%s\n", t->name);
    snprintf(b, sizeof(b), "%lld of %llu", (long long)st->entries,
             (unsigned long long)st->capacity);
    row(f, t, "entries", b, T_SEG_ENTRIES, (double)st->capacity, NULL);
    snprintf(b, sizeof(b), "%.1f of %llu MiB", (double)st->ring_used / (1 << 20),
             (unsigned long long)(st->ring_bytes >> 20));
    row(f, t, "log", b, T_SEG_LOG, 100, NULL);
    snprintf(note, sizeof(note), "%s found", num(t->shown[T_SEG_HITS], b, sizeof(b)));
    row(f, t, "lookups/s", num(t->shown[T_SEG_LOOKUPS], b, sizeof(b)), T_SEG_LOOKUPS, 0, note);
    row(f, t, "evictions/s", num(t->shown[T_SEG_EVICTIONS], b, sizeof(b)), T_SEG_EVICTIONS, 0,
        NULL);
    row(f, t, "purges/s", num(t->shown[T_SEG_PURGES], b, sizeof(b)), T_SEG_PURGES, 0, NULL);
}

/* A host as it may be printed: no control bytes, nothing a terminal would act on. */
static void safe_host(char *out, size_t cap, const char *h, size_t len)
{
    size_t n = 0;

    for (size_t i = 0; i < len && n + 1 < cap; i++)
        out[n++] = h[i] > 0x20 && h[i] < 0x7f ? h[i] : '?';
    if (len >= cap && n > 3)
        memcpy(out + n - 3, "...", 3);
    out[n] = 0;
}

static void show_hosts(FILE *f, const struct top *t)
{
    char name[48], b[32], note[32];

    fprintf(f,
            "BUSIEST HOSTS  by answers held, of %zu hosts, walked every %ds (requests per host "
            "are not exported)\n",
            t->nhosts, TOP_WALK_EVERY);
    for (size_t i = 0; i < t->nbusiest; i++) {
        safe_host(name, sizeof(name), t->busiest[i].host, t->busiest[i].len);
        snprintf(note, sizeof(note), "%.1f%%",
                 t->walked ? 100.0 * (double)t->busiest[i].n / (double)t->walked : 0.0);
        fprintf(f, "  %-40s %8s  %s\n", name, num((double)t->busiest[i].n, b, sizeof(b)), note);
    }
}

static void top_render(FILE *f, const struct top *t)
{
    char up[32];

    fprintf(f, "authcache top %s /dev/shm/%s %s admin %s", t->utf8 ? "—" : "-", t->name,
            t->utf8 ? "—" : "-", t->admin);
    if (t->cur.admin_ok)
        fprintf(f, " %s up %s, %.0f workers, %s", t->utf8 ? "—" : "-",
                dur((int64_t)t->shown[T_UPTIME] * 1000, up, sizeof(up)), t->shown[T_WORKERS],
                t->shown[T_READY] > 0 ? "ready" : "NOT READY");
    fprintf(f, "%s\n", t->tty ? "   (every 1s, Ctrl-C quits)" : "");
    if (!t->cur.admin_ok)
        fprintf(f,
                "admin listener %s unreachable: segment figures only (%s; retrying each "
                "second)\n",
                t->admin, t->admin_err);
    if (t->cur.admin_ok) {
        show_answers(f, t);
        show_idp(f, t);
        show_bus(f, t);
        show_connections(f, t);
    }
    show_segment(f, t, &t->cur.seg);
    show_hosts(f, t);
}

/* UTF-8 output when the locale the environment names is (LC_ALL, then LC_CTYPE, then LANG). */
static int utf8_locale(void)
{
    const char *vars[] = {"LC_ALL", "LC_CTYPE", "LANG"};

    for (int i = 0; i < 3; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v)
            return strcasestr(v, "utf-8") || strcasestr(v, "utf8");
    }
    return 0;
}

static volatile sig_atomic_t stop_top;
static void on_int(int sig)
{
    (void)sig;
    stop_top = 1;
}

/* Sleeps until the monotonic time at_ms, or a signal. */
static void sleep_until(int64_t at_ms)
{
    int64_t left = at_ms - mono_ms();

    if (left > 0) {
        struct timespec ts = {left / 1000, (left % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

int cmd_top(struct authcache *c, const char *name, const char *admin, const char *token_file,
            long iterations)
{
    static struct top t;
    char token[1100], *frame = NULL;
    size_t frame_len = 0;
    int64_t start;

    read_token(token_file, token, sizeof(token));
    t = (struct top){.c = c,
                     .name = name,
                     .admin = admin,
                     .token = token,
                     .tty = isatty(1),
                     .utf8 = utf8_locale(),
                     .resp_cap = 256 << 10};
    if (!(t.resp = malloc(t.resp_cap)))
        die(1, "out of memory");
    signal(SIGINT, on_int);
    signal(SIGTERM, on_int);
    top_sample(&t, &t.prev);
    start = t.prev.mono_ms;
    for (long i = 0; !stop_top && (iterations <= 0 || i < iterations); i++) {
        sleep_until(start + (i + 1) * 1000);
        if (stop_top)
            break;
        top_sample(&t, &t.cur);
        t.refreshes++;
        top_compute(&t);
        if (i % TOP_WALK_EVERY == 0)
            top_walk_hosts(&t);
        FILE *f = open_memstream(&frame, &frame_len);
        if (!f)
            die(1, "out of memory");
        fputs(t.tty ? "\033[H\033[2J" : i ? "\n" : "", f);
        top_render(f, &t);
        fclose(f);
        fwrite(frame, 1, frame_len, stdout);
        fflush(stdout);
        free(frame);
        frame = NULL;
        t.prev = t.cur;
    }
    for (size_t i = 0; i < t.nbusiest; i++)
        free(t.busiest[i].host);
    free(t.resp);
    return 0;
}
