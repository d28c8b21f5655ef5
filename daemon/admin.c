/*
 * admin.c — the admin listener (docs/contract.md): /healthz, /readyz, /metrics (Prometheus text),
 * /v1/stats (JSON), POST /v1/purge. Off the hot path on purpose: one thread, one request per
 * connection, so nothing here can slow a forward-auth answer. The thread polls up to ADMIN_CONNS
 * connections at once, each with a deadline of ADMIN_TIMEOUT_MS to send its request, and when all
 * are taken a new one pushes out the oldest: a client that connects and says nothing (or dribbles)
 * cannot hold /healthz hostage. Answers are small and written at once with a send timeout.
 *
 * Write calls (purge) need the bearer token of --admin-token-file, or, without one, a loopback
 * peer.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admin.h"
#include "buf.h"
#include "bus.h"
#include "feed.h"
#include "hooks.h"
#include "http.h"
#include "log.h"
#include "pct.h"

#define ADMIN_CONNS 32
#define ADMIN_TIMEOUT_MS 2000
#define ADMIN_MAX_REQUEST 16384

struct admin_conn {
    int fd; /* -1: free */
    size_t len;
    int64_t deadline_ms;
    char in[ADMIN_MAX_REQUEST];
};

struct admin {
    struct daemon *d;
    int fd, port;
    int stop, running;
    pthread_t thread;
    struct admin_conn conns[ADMIN_CONNS];
};

struct buf {
    char *p;
    size_t len, cap;
};

static void bprintf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bprintf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (;;) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        if (BUF_RESERVE(b->p, b->cap, b->len + (size_t)n + 1, 8192, 0) < 0)
            return;
    }
}

enum { GAUGE, COUNTER };

/* The sum over workers of one metrics field. */
#define SUM(d, field)                                                                              \
    ({                                                                                             \
        uint64_t s_ = 0;                                                                           \
        for (unsigned i_ = 0; i_ < (d)->nworkers; i_++)                                            \
            s_ += __atomic_load_n(&(d)->metrics[i_].field, __ATOMIC_RELAXED);                      \
        s_;                                                                                        \
    })

static const char *const kind_names[] = {[GAUGE] = "gauge", [COUNTER] = "counter"};

/* One sample of a figure, with its HELP and TYPE lines. */
static void prom(struct buf *b, const char *name, int kind, const char *help, long long v)
{
    bprintf(b, "# HELP %s %s\n# TYPE %s %s\n%s %lld\n", name, help, name, kind_names[kind], name,
            v);
}

/* The bus's figures: X(field of struct bus_stats, JSON key, Prometheus name, kind, help). */
#define BUS_FIGURES(X)                                                                             \
    X(connected, connected, "authcache_bus_connected", GAUGE,                                      \
      "1 while connected to the purge bus (--bus).")                                               \
    X(published, published, "authcache_bus_published_total", COUNTER,                              \
      "Purges of this node that redis accepted.")                                                  \
    X(received, received, "authcache_bus_received_total", COUNTER,                                 \
      "Messages from other nodes on the bus.")                                                     \
    X(applied, applied, "authcache_bus_applied_total", COUNTER,                                    \
      "Purges from other nodes applied here.")                                                     \
    X(bad, bad, "authcache_bus_bad_messages_total", COUNTER,                                       \
      "Bus messages that did not decode (ignored).")                                               \
    X(key_mismatch, key_mismatch, "authcache_bus_key_mismatch_total", COUNTER,                     \
      "Session purges from a node with another --hash-key-file (ignored).")                        \
    X(gaps, gaps, "authcache_bus_gaps_total", COUNTER,                                             \
      "Reconnections to the bus that found purges lost to this node (everything held purged).")    \
    X(dropped, dropped, "authcache_bus_dropped_total", COUNTER,                                    \
      "Purges dropped unsent from a full queue.")                                                  \
    X(queued, queued, "authcache_bus_queued", GAUGE, "Purges waiting for redis.")                  \
    X(behind, behind, "authcache_bus_behind", GAUGE,                                               \
      "Stream entries this node had not read at the last check (every second; redis >= 7).")

static void metrics_text(struct daemon *d, struct buf *b)
{
    struct shm_stats st;
    struct bus_stats bs;
    uint64_t cum = 0, n;

    shm_stats_get(&d->shm, &st);
    bus_stats_get(d->bus, &bs);
    bprintf(b, "# HELP authcache_requests_total Forward-auth answers by result (X-Authcache).\n"
               "# TYPE authcache_requests_total counter\n");
    for (int r = 0; r < RES_COUNT; r++)
        bprintf(b, "authcache_requests_total{result=\"%s\"} %llu\n", result_names[r],
                (unsigned long long)SUM(d, results[r]));
    bprintf(b, "# HELP authcache_responses_total Forward-auth answers by status class.\n"
               "# TYPE authcache_responses_total counter\n");
    for (int c = 1; c <= 5; c++)
        bprintf(b, "authcache_responses_total{code=\"%dxx\"} %llu\n", c,
                (unsigned long long)SUM(d, status[c]));
#define X(field, group, key, name, kind, help) prom(b, name, kind, help, (long long)SUM(d, field));
    METRICS_WORKER(X)
#undef X
    bprintf(b, "# HELP authcache_idp_latency_seconds IdP call latency.\n"
               "# TYPE authcache_idp_latency_seconds histogram\n");
    for (int i = 0; i < METRICS_LAT_BUCKETS; i++) {
        cum += SUM(d, idp_lat[i]);
        if (i < METRICS_LAT_BUCKETS - 1)
            bprintf(b, "authcache_idp_latency_seconds_bucket{le=\"%g\"} %llu\n",
                    metrics_lat_bounds_ms[i] / 1000, (unsigned long long)cum);
        else
            bprintf(b, "authcache_idp_latency_seconds_bucket{le=\"+Inf\"} %llu\n",
                    (unsigned long long)cum);
    }
    n = SUM(d, idp_lat_sum_us);
    bprintf(b, "authcache_idp_latency_seconds_sum %.6f\nauthcache_idp_latency_seconds_count %llu\n",
            (double)n / 1e6, (unsigned long long)cum);
    prom(b, "authcache_idp_circuit_open", GAUGE, "1 while the IdP circuit breaker is open.",
         breaker_is_open(&d->breaker));
    prom(b, "authcache_idp_circuit_opened_total", COUNTER, "Times the circuit breaker opened.",
         (long long)breaker_opened_total(&d->breaker));
#define X(field, key, name, kind, help) prom(b, name, kind, help, (long long)st.field);
    SHM_STATS_FIGURES(X)
#undef X
#define X(field, key, name, kind, help) prom(b, name, kind, help, (long long)bs.field);
    BUS_FIGURES(X)
#undef X
    bprintf(b,
            "# HELP authcache_bus_lag_seconds The stream's newest entry less the last one this "
            "node read, at the last check (every second).\n# TYPE authcache_bus_lag_seconds "
            "gauge\nauthcache_bus_lag_seconds %.3f\n",
            (double)bs.lag_ms / 1000);
    char feed[2560];
    bprintf(b, "%.*s", (int)feed_metrics_text(d->feed, feed, sizeof(feed)), feed);
    prom(b, "authcache_ready", GAUGE, "1 while serving.",
         __atomic_load_n(&d->ready, __ATOMIC_RELAXED));
}

static void stats_json(struct daemon *d, struct buf *b)
{
    struct shm_stats st;
    struct bus_stats bs;
    uint64_t lat = 0;
    const char *sep = "";

    shm_stats_get(&d->shm, &st);
    bus_stats_get(d->bus, &bs);
    bprintf(b, "{\"requests\":{");
    for (int r = 0; r < RES_COUNT; r++)
        bprintf(b, "%s\"%s\":%llu", r ? "," : "", result_names[r],
                (unsigned long long)SUM(d, results[r]));
    bprintf(b, "},\"responses\":{");
    for (int c = 1; c <= 5; c++)
        bprintf(b, "%s\"%dxx\":%llu", c > 1 ? "," : "", c, (unsigned long long)SUM(d, status[c]));
    for (int i = 0; i < METRICS_LAT_BUCKETS; i++)
        lat += SUM(d, idp_lat[i]);
    bprintf(b, "},\"idp\":{");
#define X(field, group, key, name, kind, help)                                                     \
    if (!strcmp(#group, "idp"))                                                                    \
        bprintf(b, "\"" #key "\":%lld,", (long long)SUM(d, field));
    METRICS_WORKER(X)
#undef X
    bprintf(b,
            "\"latency_count\":%llu,\"latency_sum_seconds\":%.6f,\"circuit_open\":%s,"
            "\"circuit_opened\":%llu},\"cache\":{",
            (unsigned long long)lat, (double)SUM(d, idp_lat_sum_us) / 1e6,
            breaker_is_open(&d->breaker) ? "true" : "false",
            (unsigned long long)breaker_opened_total(&d->breaker));
#define X(field, key, name, kind, help) bprintf(b, "\"" #key "\":%lld,", (long long)st.field);
    SHM_STATS_FIGURES(X)
#undef X
    bprintf(b, "\"generation\":\"%016llx\"},\"connections\":{", (unsigned long long)st.generation);
#define X(field, group, key, name, kind, help)                                                     \
    if (!strcmp(#group, "connections")) {                                                          \
        bprintf(b, "%s\"" #key "\":%lld", sep, (long long)SUM(d, field));                          \
        sep = ",";                                                                                 \
    }
    METRICS_WORKER(X)
#undef X
    bprintf(b, "},\"bus\":{\"enabled\":%s,\"node\":\"%016llx\"", bs.enabled ? "true" : "false",
            (unsigned long long)bs.node);
#define X(field, key, name, kind, help)                                                            \
    if (!strcmp(#key, "connected"))                                                                \
        bprintf(b, ",\"connected\":%s", bs.connected ? "true" : "false");                          \
    else                                                                                           \
        bprintf(b, ",\"" #key "\":%lld", (long long)bs.field);
    BUS_FIGURES(X)
#undef X
    bprintf(b, ",\"lag_seconds\":%.3f", (double)bs.lag_ms / 1000);
    bprintf(b, "},\"workers\":%u,\"ready\":%s,\"uptime_seconds\":%lld}\n", d->nworkers,
            __atomic_load_n(&d->ready, __ATOMIC_RELAXED) ? "true" : "false",
            (long long)((daemon_now_ms() - d->started_ms) / 1000));
}

static void reply(int fd, int status, const char *reason, const char *type, const char *body,
                  size_t len)
{
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
                     status, reason, type, len);
    struct iovec iov[2] = {{head, (size_t)n}, {(void *)body, len}};
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};

    if (sendmsg(fd, &mh, MSG_NOSIGNAL) < 0) {
        /* the client left; nothing to do */
    }
}

static void reply_text(int fd, int status, const char *reason, const char *text)
{
    reply(fd, status, reason, "text/plain; charset=utf-8", text, strlen(text));
}

/* Percent-decode a query value into out (NUL-terminated). -1 on a bad escape or overflow. */
static int query_value(const char *q, size_t qlen, const char *key, char *out, size_t cap)
{
    size_t klen = strlen(key);
    const char *p = q, *end = q + qlen;

    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        if ((size_t)(e - p) > klen && memcmp(p, key, klen) == 0 && p[klen] == '=') {
            const char *v = p + klen + 1;
            size_t n = 0, i = 0, vlen = (size_t)(e - v);
            while (i < vlen) {
                int c = pct_query_next(v, vlen, &i);
                if (c < 0 || n + 1 >= cap)
                    return -1;
                out[n++] = (char)c;
            }
            out[n] = 0;
            return (int)n;
        }
        p = e + 1;
    }
    return -2; /* absent */
}

static int peer_is_loopback(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
    if (ss.ss_family == AF_INET6) {
        const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return 0;
}

/* Constant-time comparison of the presented bearer token. */
static int token_ok(const struct config *cfg, const struct http_req *req)
{
    const struct http_hdr *h = http_hdr_find(req->hdrs, req->nhdrs, "Authorization");
    unsigned char diff = 0;

    if (!h || h->value_len != 7 + cfg->admin_token_len || strncasecmp(h->value, "Bearer ", 7) != 0)
        return 0;
    for (size_t i = 0; i < cfg->admin_token_len; i++)
        diff |= (unsigned char)(h->value[7 + i] ^ cfg->admin_token[i]);
    return diff == 0;
}

/* Whether a write call came from a browser: a page on any site can POST to loopback, and the
 * browser marks it with Origin, or with Sec-Fetch-Site other than "none" (typed by the user). A
 * script or the CLI sends neither. Returns the one-line reason to refuse, or NULL. */
static const char *browser_write(const struct http_req *req)
{
    const struct http_hdr *h;

    if (http_hdr_find(req->hdrs, req->nhdrs, "Origin"))
        return "admin writes from a browser (Origin header) are refused\n";
    h = http_hdr_find(req->hdrs, req->nhdrs, "Sec-Fetch-Site");
    if (h && !(h->value_len == 4 && strncasecmp(h->value, "none", 4) == 0))
        return "admin writes from a browser (Sec-Fetch-Site) are refused\n";
    return NULL;
}

static void purge(struct admin *a, int fd, const struct http_req *req, struct http_span query)
{
    struct daemon *d = a->d;
    char val[4096], body[64];
    const char *why;
    int n, rc;

    if ((why = browser_write(req))) {
        reply_text(fd, 403, "Forbidden", why);
        return;
    }
    if (d->cfg->admin_token_len ? !token_ok(d->cfg, req) : !peer_is_loopback(fd)) {
        reply_text(fd, 403, "Forbidden",
                   d->cfg->admin_token_len ? "admin token required\n"
                                           : "admin writes are accepted from loopback only\n");
        return;
    }
    if ((n = query_value(query.p, query.len, "user", val, sizeof(val))) >= 0 && n > 0)
        rc = daemon_purge(d, val, (size_t)n, NULL, 0, "admin");
    else if ((n = query_value(query.p, query.len, "session", val, sizeof(val))) >= 0 && n > 0)
        rc = daemon_purge(d, NULL, 0, val, (size_t)n, "admin");
    else if ((n = query_value(query.p, query.len, "all", val, sizeof(val))) >= 0 &&
             (strcmp(val, "1") == 0 || strcmp(val, "true") == 0))
        rc = daemon_purge(d, NULL, 0, NULL, 0, "admin");
    else {
        reply_text(fd, 400, "Bad Request", "purge needs ?user=NAME, ?session=VALUE or ?all=1\n");
        return;
    }
    if (rc < 0) {
        reply_text(fd, 500, "Internal Server Error", "purge failed\n");
        return;
    }
    n = snprintf(body, sizeof(body), "{\"purged\":%d}\n", rc);
    reply(fd, 200, "OK", "application/json", body, (size_t)n);
}

/* Answers on fd the request conn_read parsed: *r when rc > 0, else rc is why it is bad. */
static void serve(struct admin *a, int fd, const struct http_req *r, int rc)
{
    struct http_span path, query;
    struct timeval tv = {ADMIN_TIMEOUT_MS / 1000, 0};
    int fl = fcntl(fd, F_GETFL);

    /* Back to blocking, with a send timeout: answers are a few KiB and leave at once. */
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (rc < 0) {
        reply_text(fd, rc == HTTP_TOO_LARGE ? 431 : 400, "Bad Request", "bad request\n");
        return;
    }
    http_target_split(r->target, r->target_len, &path, &query);
#define PATH(s_) (path.len == strlen(s_) && memcmp(path.p, s_, path.len) == 0)
#define IS(m_, s_)                                                                                 \
    (r->method_len == strlen(m_) && memcmp(r->method, m_, r->method_len) == 0 && PATH(s_))
    if (IS("GET", "/healthz") || IS("HEAD", "/healthz")) {
        reply_text(fd, 200, "OK", "ok\n");
    } else if (IS("GET", "/readyz") || IS("HEAD", "/readyz")) {
        if (__atomic_load_n(&a->d->draining, __ATOMIC_RELAXED))
            reply_text(fd, 503, "Service Unavailable", "draining\n");
        else if (!__atomic_load_n(&a->d->ready, __ATOMIC_RELAXED))
            reply_text(fd, 503, "Service Unavailable", "starting\n");
        else
            reply_text(fd, 200, "OK", "ready\n");
    } else if (IS("GET", "/metrics")) {
        struct buf b = {0};
        metrics_text(a->d, &b);
        reply(fd, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", b.p ? b.p : "", b.len);
        free(b.p);
    } else if (IS("GET", "/v1/stats")) {
        struct buf b = {0};
        stats_json(a->d, &b);
        reply(fd, 200, "OK", "application/json", b.p ? b.p : "", b.len);
        free(b.p);
    } else if (IS("POST", "/v1/purge")) {
        purge(a, fd, r, query);
    } else if (PATH("/healthz") || PATH("/readyz") || PATH("/metrics") || PATH("/v1/stats") ||
               PATH("/v1/purge")) {
        reply_text(fd, 405, "Method Not Allowed", "method not allowed\n");
    } else {
        reply_text(fd, 404, "Not Found", "not found\n");
    }
#undef IS
#undef PATH
}

static void conn_close(struct admin_conn *c)
{
    close(c->fd);
    c->fd = -1;
}

/* Takes a new connection into a free place, or the oldest one's. */
static void conn_accept(struct admin *a, int64_t now)
{
    int fd = accept4(a->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    struct admin_conn *c = NULL;

    if (fd < 0)
        return;
    for (int i = 0; i < ADMIN_CONNS; i++) {
        struct admin_conn *o = &a->conns[i];
        if (o->fd < 0) {
            c = o;
            break;
        }
        if (!c || o->deadline_ms < c->deadline_ms)
            c = o;
    }
    if (c->fd >= 0)
        conn_close(c);
    c->fd = fd;
    c->len = 0;
    c->deadline_ms = now + ADMIN_TIMEOUT_MS;
}

/* Reads what c has sent; answers and closes it once its request is complete or bad. */
static void conn_read(struct admin *a, struct admin_conn *c)
{
    struct http_hdr hdrs[64];
    struct http_req req = {.hdrs = hdrs, .hdrs_cap = 64};
    ssize_t n = recv(c->fd, c->in + c->len, sizeof(c->in) - c->len, 0);
    int rc;

    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        conn_close(c);
        return;
    }
    c->len += (size_t)n;
    rc = http_parse_request(c->in, c->len, 0, sizeof(c->in), &req);
    if (rc == HTTP_PARTIAL && c->len < sizeof(c->in))
        return;
    if (rc > 0 && hooks_wants(&req)) { /* hooks.c: it reads its body itself */
        hooks_serve(a->d, c->fd, &req, c->in + rc, c->len - (size_t)rc);
        conn_close(c);
        return;
    }
    serve(a, c->fd, &req, rc == HTTP_PARTIAL ? HTTP_TOO_LARGE : rc);
    conn_close(c);
}

static void *admin_main(void *arg)
{
    struct admin *a = arg;
    struct pollfd pfd[ADMIN_CONNS + 1];
    int idx[ADMIN_CONNS + 1];

    while (!__atomic_load_n(&a->stop, __ATOMIC_RELAXED)) {
        int n = 1, ready;
        int64_t now;

        pfd[0] = (struct pollfd){.fd = a->fd, .events = POLLIN};
        for (int i = 0; i < ADMIN_CONNS; i++) {
            if (a->conns[i].fd >= 0) {
                idx[n] = i;
                pfd[n++] = (struct pollfd){.fd = a->conns[i].fd, .events = POLLIN};
            }
        }
        ready = poll(pfd, (nfds_t)n, 200);
        now = daemon_mono_ms();
        for (int k = 1; ready > 0 && k < n; k++)
            if (pfd[k].revents)
                conn_read(a, &a->conns[idx[k]]);
        for (int i = 0; i < ADMIN_CONNS; i++)
            if (a->conns[i].fd >= 0 && now >= a->conns[i].deadline_ms)
                conn_close(&a->conns[i]);
        if (ready > 0 && (pfd[0].revents & POLLIN))
            conn_accept(a, now);
    }
    for (int i = 0; i < ADMIN_CONNS; i++)
        if (a->conns[i].fd >= 0)
            conn_close(&a->conns[i]);
    return NULL;
}

/* A listener for d on fd (and port) with no connections yet, or NULL with the reason in err. */
static struct admin *admin_new(struct daemon *d, int fd, int port, char *err, size_t errlen)
{
    struct admin *a = calloc(1, sizeof(*a));

    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->d = d;
    for (int i = 0; i < ADMIN_CONNS; i++)
        a->conns[i].fd = -1;
    a->fd = fd;
    a->port = port;
    return a;
}

struct admin *admin_bind(struct daemon *d, char *err, size_t errlen)
{
    struct admin *a = admin_new(d, -1, 0, err, errlen);
    const struct config_addr *addr = &d->cfg->admin;
    struct sockaddr_storage got;
    socklen_t gl = sizeof(got);
    int one = 1;

    if (!a)
        return NULL;
    a->fd = socket(addr->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (a->fd < 0 || setsockopt(a->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(a->fd, (const struct sockaddr *)&addr->sa, addr->len) < 0 || listen(a->fd, 64) < 0) {
        snprintf(err, errlen, "--admin %s: %s", addr->text, strerror(errno));
        if (a->fd >= 0)
            close(a->fd);
        free(a);
        return NULL;
    }
    getsockname(a->fd, (struct sockaddr *)&got, &gl);
    a->port = ntohs(got.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&got)->sin6_port
                                              : ((struct sockaddr_in *)&got)->sin_port);
    return a;
}

struct admin *admin_adopt(struct daemon *d, int fd, int port, char *err, size_t errlen)
{
    return admin_new(d, fd, port, err, errlen);
}

int admin_fd(const struct admin *a)
{
    return a->fd;
}

int admin_run(struct admin *a)
{
    int rc;

    /* Non-blocking accept: after a handover the listening socket is shared with the successor,
     * and the connection poll announced may be the other daemon's by the time accept runs (a
     * blocking accept then waited forever, and so did the drain that joins this thread). */
    if (fcntl(a->fd, F_SETFL, fcntl(a->fd, F_GETFL) | O_NONBLOCK) < 0)
        return -errno;
    rc = pthread_create(&a->thread, NULL, admin_main, a);

    a->running = rc == 0;
    return -rc;
}

int admin_port(const struct admin *a)
{
    return a->port;
}

void admin_stop(struct admin *a)
{
    if (!a)
        return;
    __atomic_store_n(&a->stop, 1, __ATOMIC_RELAXED);
    if (a->running)
        pthread_join(a->thread, NULL);
    close(a->fd);
    free(a);
}
