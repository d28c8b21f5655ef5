/*
 * cli.c — `authcache`, the operator's CLI (docs/contract.md): stats, get, dump and top read the
 * segment directly through the client library; purge goes through the daemon's admin listener, so
 * every node's bus and logs see it. Never prints a credential: dump shows digests, get redacts
 * tokens.
 *
 * check attaches the segment read-only through shm/ itself and runs shm_check().
 *
 * Exit: 0 ok, 1 nothing found (get), the daemon refused (purge) or problems found (check), 2 bad
 * arguments, missing segment or unreachable admin listener — with one line on stderr saying what is
 * wrong.
 */
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "authcache.h"
#include "shm.h"

static const char *usage_text =
    "usage: authcache [--shm NAME] [--admin HOST:PORT] [--admin-token-file FILE] COMMAND\n"
    "commands:\n"
    "  stats [--json]                          the segment's figures\n"
    "  get (--cookie VALUE | --authorization VALUE) --host HOST\n"
    "                                          the answer held for that credential and host\n"
    "  dump [--json]                           every answer: digest, user, host, ages\n"
    "  purge (--user NAME | --session VALUE | --all)   through the admin listener\n"
    "  top [--iterations N]                    live view each second: answers, IdP, bus,\n"
    "                                          connections, segment, busiest hosts\n"
    "  check                                   read-only consistency check of the segment:\n"
    "                                          exit 0 consistent, 1 problems. Nobody writing\n"
    "                                          (daemon stopped or killed): one pass decides, and\n"
    "                                          what a kill leaves is no problem (live counter\n"
    "                                          off, head past tail + ring by <= 64 records).\n"
    "                                          While a daemon writes, a pass can race a write:\n"
    "                                          problems count if 5 passes 100 ms apart find some.\n"
    "environment: AUTHCACHED_SHM, AUTHCACHED_ADMIN, AUTHCACHED_ADMIN_TOKEN_FILE\n";

static void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void die(int code, const char *fmt, ...)
{
    va_list ap;

    fputs("authcache: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(code);
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "12s", "3m05s", "2h10m", "4d3h" */
static const char *dur(int64_t ms, char *b, size_t n)
{
    int64_t s = (ms < 0 ? -ms : ms) / 1000;

    if (s < 60)
        snprintf(b, n, "%llds", (long long)s);
    else if (s < 3600)
        snprintf(b, n, "%lldm%02llds", (long long)s / 60, (long long)s % 60);
    else if (s < 86400)
        snprintf(b, n, "%lldh%02lldm", (long long)s / 3600, (long long)(s % 3600) / 60);
    else
        snprintf(b, n, "%lldd%lldh", (long long)s / 86400, (long long)(s % 86400) / 3600);
    return b;
}

/* Exits 2 with one line saying why the segment could not be opened (rc < 0), else returns. */
static void open_or_die(const char *name, int rc)
{
    if (rc == -ENOENT)
        die(2, "no segment /dev/shm/%s: is authcached running with --shm %s?", name, name);
    if (rc == -EPROTO)
        die(2, "/dev/shm/%s is not an authcache segment of this version", name);
    if (rc == -EINVAL)
        die(2, "--shm %s: not a segment name", name);
    if (rc == -ELOOP)
        die(2, "/dev/shm/%s is a symlink: refusing to read it", name);
    if (rc == -EBADF)
        die(2, "/dev/shm/%s is not a regular file: refusing to read it", name);
    if (rc == -EPERM)
        die(2, "/dev/shm/%s is owned by neither root nor uid %u: refusing to read it", name,
            (unsigned)geteuid());
    if (rc == -EACCES) {
        char path[300];
        struct stat st;
        snprintf(path, sizeof(path), "/dev/shm/%s", name);
        if (stat(path, &st) == 0 && !(st.st_mode & 022))
            die(2,
                "/dev/shm/%s is mode %04o, group %u: not readable by uid %u (the daemon's "
                "--shm-group gives one group read)",
                name, (unsigned)(st.st_mode & 07777), (unsigned)st.st_gid, (unsigned)geteuid());
        die(2, "/dev/shm/%s is writable by group or others: refusing to read it", name);
    }
    if (rc < 0)
        die(2, "cannot open /dev/shm/%s: %s", name, strerror(-rc));
}

static struct authcache *open_segment(const char *name)
{
    struct authcache *c;

    open_or_die(name, authcache_open(name, &c));
    return c;
}

/* JSON string body (no quotes) of s[0, n). */
static void json_str(FILE *f, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20 || ch == 0x7f)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
}

/* ---- stats ---- */

static void print_stats(const struct authcache_stats *s, const char *name, int json)
{
    if (json) {
        printf("{\"segment\":\"/dev/shm/%s\"", name);
#define X(field, key, prom, kind, help) printf(",\"" #key "\":%lld", (long long)s->key);
        SHM_STATS_FIGURES(X)
#undef X
        printf(",\"generation\":\"%016llx\",\"size_classes\":[", (unsigned long long)s->generation);
        for (int i = 0; i < 8; i++)
            printf("%s%llu", i ? "," : "", (unsigned long long)s->size_class[i]);
        printf("]}\n");
        return;
    }
    uint64_t l = s->hits + s->misses;
    printf("segment     /dev/shm/%s  %llu MiB  generation %016llx\n", name,
           (unsigned long long)(s->segment_bytes >> 20), (unsigned long long)s->generation);
    printf("entries     %lld of %llu\n", (long long)s->entries, (unsigned long long)s->capacity);
    printf("lookups     %llu  hits %llu (%.1f%%)  misses %llu\n", (unsigned long long)s->lookups,
           (unsigned long long)s->hits, l ? 100.0 * (double)s->hits / (double)l : 0.0,
           (unsigned long long)s->misses);
    printf("writes      inserts %llu  replaces %llu  promotions %llu\n",
           (unsigned long long)s->inserts, (unsigned long long)s->replaces,
           (unsigned long long)s->promotions);
    printf("removals    evictions %llu  purges %llu  expired %llu\n",
           (unsigned long long)s->evictions, (unsigned long long)s->purges,
           (unsigned long long)s->expired);
    printf("log         %llu of %llu MiB in use  reader retries %llu\n",
           (unsigned long long)(s->ring_used >> 20), (unsigned long long)(s->ring_bytes >> 20),
           (unsigned long long)s->retries);
    printf("sizes       <=256B %llu  512B %llu  1K %llu  2K %llu  4K %llu  8K %llu  16K %llu  more "
           "%llu\n",
           (unsigned long long)s->size_class[0], (unsigned long long)s->size_class[1],
           (unsigned long long)s->size_class[2], (unsigned long long)s->size_class[3],
           (unsigned long long)s->size_class[4], (unsigned long long)s->size_class[5],
           (unsigned long long)s->size_class[6], (unsigned long long)s->size_class[7]);
}

/* ---- get ---- */

/* A header value that grants access by itself: shown by length only. */
static int secret_value(const char *name, size_t nlen, const char *v, size_t vlen)
{
    int dots = 0;

    if (nlen == 13 && strncasecmp(name, "Authorization", 13) == 0)
        return 1;
    for (size_t i = 0; i < vlen; i++)
        dots += v[i] == '.';
    return dots >= 2 && vlen > 40 && !memchr(v, ' ', vlen);
}

static void print_headers(const char *h, size_t len)
{
    const char *p = h, *end = h + len;

    while (p < end) {
        const char *eol = memchr(p, '\r', (size_t)(end - p));
        const char *colon;
        if (!eol)
            eol = end;
        colon = memchr(p, ':', (size_t)(eol - p));
        if (colon) {
            const char *v = colon + 1;
            while (v < eol && *v == ' ')
                v++;
            if (secret_value(p, (size_t)(colon - p), v, (size_t)(eol - v)))
                printf("  %.*s: <redacted, %zu bytes>\n", (int)(colon - p), p, (size_t)(eol - v));
            else
                printf("  %.*s\n", (int)(eol - p), p);
        }
        p = eol + 2;
    }
}

static int cmd_get(struct authcache *c, const char *cookie, const char *authz, const char *host)
{
    struct authcache_answer a;
    int64_t now = now_ms();
    char b1[32], b2[32], b3[32];

    if (authcache_find(c, cookie, cookie ? strlen(cookie) : 0, authz, authz ? strlen(authz) : 0,
                       host, strlen(host), &a) != 0) {
        fprintf(stderr, "authcache: no answer held for that credential on %s\n", host);
        return 1;
    }
    printf("user        %.*s\n", (int)a.user_len, a.user);
    printf("host        %.*s\n", (int)a.host_len, a.host);
    if (now < a.fresh_until_ms)
        printf("freshness   fresh for %s more (confirmed %s ago)\n",
               dur(a.fresh_until_ms - now, b1, 32), dur(now - a.confirmed_ms, b2, 32));
    else
        printf(
            "freshness   stale: revalidated with the IdP on the next request (confirmed %s ago)\n",
            dur(now - a.confirmed_ms, b2, 32));
    printf("session     ends in %s (first seen %s ago)\n", dur(a.session_end_ms - now, b3, 32),
           dur(now - a.first_seen_ms, b1, 32));
    printf("headers\n");
    print_headers(a.headers, a.headers_len);
    return 0;
}

/* ---- dump ---- */

static int dump_fn(const struct authcache_answer *a, void *arg)
{
    int json = *(int *)arg;
    int64_t now = now_ms();
    char b1[32], b2[32], b3[32], b4[32];

    if (json) {
        printf("{\"digest\":\"%02x%02x%02x%02x%02x%02x\",\"user\":\"", a->digest[0], a->digest[1],
               a->digest[2], a->digest[3], a->digest[4], a->digest[5]);
        json_str(stdout, a->user, a->user_len);
        printf("\",\"host\":\"");
        json_str(stdout, a->host, a->host_len);
        printf("\",\"first_seen_ms\":%lld,\"confirmed_ms\":%lld,\"fresh_until_ms\":%lld,"
               "\"session_end_ms\":%lld,\"fresh\":%s,\"headers_bytes\":%zu}\n",
               (long long)a->first_seen_ms, (long long)a->confirmed_ms,
               (long long)a->fresh_until_ms, (long long)a->session_end_ms,
               now < a->fresh_until_ms ? "true" : "false", a->headers_len);
    } else {
        printf("%02x%02x%02x%02x%02x%02x  %-20.*s %-28.*s age %-7s confirmed %-7s %s %-7s session "
               "%s\n",
               a->digest[0], a->digest[1], a->digest[2], a->digest[3], a->digest[4], a->digest[5],
               (int)a->user_len, a->user, (int)a->host_len, a->host,
               dur(now - a->first_seen_ms, b1, 32), dur(now - a->confirmed_ms, b2, 32),
               now < a->fresh_until_ms ? "fresh" : "stale", dur(a->fresh_until_ms - now, b3, 32),
               dur(a->session_end_ms - now, b4, 32));
    }
    return 0;
}

/* ---- purge, through the admin listener ---- */

static void pct(char *out, size_t cap, const char *s)
{
    size_t n = 0;

    for (; *s && n + 4 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.' || ch == '~')
            out[n++] = (char)ch;
        else
            n += (size_t)snprintf(out + n, cap - n, "%%%02X", ch);
    }
    out[n] = 0;
}

/* A socket connected to the admin listener at admin ("HOST:PORT", "[V6]:PORT"), or -errno
 * (-ENOENT: the host does not resolve). A malformed address exits 2. With timeout_ms > 0 the
 * connect, and each send and receive on the socket after it, give up after about that long. */
static int admin_dial(const char *admin, int timeout_ms)
{
    char host[256], *colon;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res, *ai;
    int fd = -1, err = ECONNREFUSED;

    snprintf(host, sizeof(host), "%s", admin);
    colon = strrchr(host, ':');
    if (!colon || colon == host || !colon[1])
        die(2, "--admin %s: expected HOST:PORT", admin);
    *colon = 0;
    char *h = host;
    if (h[0] == '[' && colon[-1] == ']') {
        h++;
        colon[-1] = 0;
    }
    if (getaddrinfo(h, colon + 1, &hints, &res) != 0)
        return -ENOENT;
    for (ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = errno;
            continue;
        }
        if (timeout_ms > 0) {
            struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
            /* Linux applies SO_SNDTIMEO to connect() too. */
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
            err = errno == EINPROGRESS ? ETIMEDOUT : errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd < 0 ? -err : fd;
}

static const char *admin_strerror(int rc)
{
    return rc == -ENOENT ? "cannot resolve" : rc == -EPROTO ? "no HTTP answer" : strerror(-rc);
}

/* The bearer token of --admin-token-file into token ("" without one); exits 2 if unreadable. */
static void read_token(const char *token_file, char *token, size_t cap)
{
    token[0] = 0;
    if (!token_file)
        return;
    FILE *f = fopen(token_file, "r");
    if (!f || !fgets(token, (int)cap, f))
        die(2, "--admin-token-file %s: cannot read it", token_file);
    fclose(f);
    token[strcspn(token, "\r\n")] = 0;
}

/* One request to the admin listener: METHOD TARGET with the bearer token (if any), the whole
 * answer read into resp (NUL-terminated). Returns the HTTP status with *body set, or -errno: the
 * listener cannot be reached or stopped answering, -EPROTO no HTTP answer, -EMSGSIZE an answer of
 * cap bytes or more. timeout_ms as in admin_dial. */
static int admin_request(const char *admin, const char *token, const char *method,
                         const char *target, int timeout_ms, char *resp, size_t cap, char **body)
{
    char req[10240];
    size_t len = 0;
    ssize_t n = 0;
    int fd, status = 0;
    int rl = snprintf(req, sizeof(req),
                      "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\n%s%s%s"
                      "Connection: close\r\n\r\n",
                      method, target, admin, token[0] ? "Authorization: Bearer " : "", token,
                      token[0] ? "\r\n" : "");

    if (rl < 0 || (size_t)rl >= sizeof(req))
        return -E2BIG;
    if ((fd = admin_dial(admin, timeout_ms)) < 0)
        return fd;
    if (send(fd, req, (size_t)rl, MSG_NOSIGNAL) != rl) {
        int err = errno ? errno : EIO;
        close(fd);
        return -err;
    }
    while (len < cap - 1 && (n = read(fd, resp + len, cap - 1 - len)) > 0)
        len += (size_t)n;
    if (n < 0) {
        int err = errno == EAGAIN ? ETIMEDOUT : errno;
        close(fd);
        return -err;
    }
    if (len == cap - 1 && read(fd, req, 1) > 0) {
        close(fd);
        return -EMSGSIZE;
    }
    close(fd);
    resp[len] = 0;
    if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1)
        return -EPROTO;
    *body = strstr(resp, "\r\n\r\n");
    *body = *body ? *body + 4 : resp + len;
    return status;
}

static int cmd_purge(const char *admin, const char *token_file, const char *user,
                     const char *session, int all)
{
    char q[8192], target[8300], resp[4096], token[1100], *body = resp;
    int status;

    read_token(token_file, token, sizeof(token));
    if (user) {
        char e[8000];
        pct(e, sizeof(e), user);
        snprintf(q, sizeof(q), "user=%s", e);
    } else if (session) {
        char e[8000];
        pct(e, sizeof(e), session);
        snprintf(q, sizeof(q), "session=%s", e);
    } else if (all) {
        snprintf(q, sizeof(q), "all=1");
    }
    snprintf(target, sizeof(target), "/v1/purge?%s", q);
    status = admin_request(admin, token, "POST", target, 0, resp, sizeof(resp), &body);
    if (status == -EPROTO)
        die(2, "no HTTP answer from the admin listener at %s", admin);
    if (status < 0)
        die(2, "cannot reach the admin listener at %s: %s", admin, admin_strerror(status));
    if (status != 200) {
        fprintf(stderr, "authcache: purge refused (%d): %s", status, body);
        return 1;
    }
    fputs(body, stdout);
    return 0;
}

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
    char b[32];

    if (!(t->shown[T_BUS_ENABLED] > 0)) {
        fprintf(f, "BUS  not enabled (--bus)\n");
    } else {
        fprintf(f, "BUS  %s\n", t->shown[T_BUS_CONNECTED] > 0 ? "connected" : "NOT CONNECTED");
        rate_row(f, t, T_BUS_PUBLISHED);
        rate_row(f, t, T_BUS_RECEIVED);
        rate_row(f, t, T_BUS_APPLIED);
        row(f, t, "queued", num(t->shown[T_BUS_QUEUED], b, sizeof(b)), T_BUS_QUEUED, 0, NULL);
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

static int cmd_top(struct authcache *c, const char *name, const char *admin, const char *token_file,
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

/* ---- check ---- */

#define CHECK_PASSES 5
#define CHECK_PAUSE_MS 100

static int cmd_check(const char *name)
{
    struct shm h;
    struct shm_check_report r;
    int pass, active = 0, bad;

    open_or_die(name, shm_attach(&h, name, 0));
    /* A pass that saw head or tail move may have raced a write: only a problem every pass finds
     * counts while the segment is in use. */
    for (pass = 1;; pass++) {
        uint64_t h0 = __atomic_load_n(&h.hdr->head, __ATOMIC_ACQUIRE);
        uint64_t t0 = __atomic_load_n(&h.hdr->tail, __ATOMIC_ACQUIRE);
        bad = shm_check(&h, 0, &r) != 0;
        int moved = __atomic_load_n(&h.hdr->head, __ATOMIC_ACQUIRE) != h0 ||
                    __atomic_load_n(&h.hdr->tail, __ATOMIC_ACQUIRE) != t0;
        active |= moved;
        if (!bad || !moved || pass == CHECK_PASSES)
            break;
        struct timespec ts = {0, CHECK_PAUSE_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
    printf("check /dev/shm/%s: %s entries=%llu slots=%llu dead=%llu bad=%llu overwritten=%llu "
           "records=%llu "
           "live_counter=%lld head_overrun=%llu passes=%d writers=%s first_problem=",
           name, bad ? "PROBLEMS" : "consistent", (unsigned long long)r.slots_live,
           (unsigned long long)r.slots_used, (unsigned long long)r.slots_dead,
           (unsigned long long)r.slots_bad, (unsigned long long)r.slots_overwritten,
           (unsigned long long)r.records_walked, (long long)r.live_counter,
           (unsigned long long)r.head_overrun, pass, active ? "active" : "idle");
    if (bad && r.first_problem[0])
        printf("\"%s\"\n", r.first_problem);
    else
        printf("none\n");
    shm_detach(&h);
    return bad ? 1 : 0;
}

/* ---- arguments ---- */

static const char *need(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc)
        die(2, "%s needs a value", argv[*i]);
    return argv[++*i];
}

int main(int argc, char **argv)
{
    const char *shm = getenv("AUTHCACHED_SHM"), *admin = getenv("AUTHCACHED_ADMIN");
    const char *token_file = getenv("AUTHCACHED_ADMIN_TOKEN_FILE");
    const char *cmd = NULL, *cookie = NULL, *authz = NULL, *host = NULL, *user = NULL,
               *session = NULL;
    int json = 0, all = 0, i;
    long iterations = 0;

    if (!shm)
        shm = "authcache";
    if (!admin)
        admin = "127.0.0.1:9301";
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage_text, stdout);
            return 0;
        } else if (!strcmp(a, "--shm")) {
            shm = need(argc, argv, &i);
        } else if (!strcmp(a, "--admin")) {
            admin = need(argc, argv, &i);
        } else if (!strcmp(a, "--admin-token-file")) {
            token_file = need(argc, argv, &i);
        } else if (!cmd && a[0] != '-') {
            cmd = a;
        } else if (cmd && !strcmp(a, "--json")) {
            json = 1;
        } else if (cmd && !strcmp(a, "--cookie")) {
            cookie = need(argc, argv, &i);
        } else if (cmd && !strcmp(a, "--authorization")) {
            authz = need(argc, argv, &i);
        } else if (cmd && !strcmp(a, "--host")) {
            host = need(argc, argv, &i);
        } else if (cmd && !strcmp(a, "--user")) {
            user = need(argc, argv, &i);
        } else if (cmd && !strcmp(a, "--session")) {
            session = need(argc, argv, &i);
        } else if (cmd && !strcmp(a, "--all")) {
            all = 1;
        } else if (cmd && !strcmp(a, "--iterations")) {
            char *end;
            iterations = strtol(need(argc, argv, &i), &end, 10);
            if (*end || iterations < 1)
                die(2, "--iterations: expected a positive number");
        } else {
            die(2, "unknown argument %s (see authcache --help)", a);
        }
    }
    if (!cmd)
        die(2, "no command given (stats, get, dump, purge, top, check; see authcache --help)");

    if (!strcmp(cmd, "purge")) {
        if ((user != NULL) + (session != NULL) + all != 1)
            die(2, "purge needs exactly one of --user NAME, --session VALUE, --all");
        if ((user && !*user) || (session && !*session))
            die(2, "purge: an empty value purges nothing");
        return cmd_purge(admin, token_file, user, session, all);
    }
    if (!strcmp(cmd, "check")) {
        if (json || cookie || authz || host || user || session || all || iterations)
            die(2, "check takes no options");
        return cmd_check(shm);
    }
    if (strcmp(cmd, "stats") && strcmp(cmd, "get") && strcmp(cmd, "dump") && strcmp(cmd, "top"))
        die(2, "unknown command %s (stats, get, dump, purge, top, check)", cmd);
    if (!strcmp(cmd, "get") && (!host || (cookie != NULL) == (authz != NULL)))
        die(2, "get needs --host HOST and one of --cookie VALUE, --authorization VALUE");

    struct authcache *c = open_segment(shm);
    int rc = 0;
    if (!strcmp(cmd, "stats")) {
        struct authcache_stats s;
        authcache_stats(c, &s);
        print_stats(&s, shm, json);
    } else if (!strcmp(cmd, "get")) {
        rc = cmd_get(c, cookie, authz, host);
    } else if (!strcmp(cmd, "dump")) {
        authcache_foreach(c, dump_fn, &json);
    } else {
        rc = cmd_top(c, shm, admin, token_file, iterations);
    }
    authcache_close(c);
    return rc;
}
