/*
 * bench_http.c — how long the forward-auth hot path spends in daemon/http.c.
 *
 *   parse_req_ns    http_parse_request: Traefik forwardAuth check, ~600 bytes, 15 fields
 *   parse_resp_ns   http_parse_response: authentik's 200, 12 X-authentik-* fields, 700-byte JWT
 *   cookie_scan_ns  http_cookie_next + http_cookie_match over that request's Cookie value
 *   head32k_bytewise_cpu_ms  a 32 KiB request head (a proxy forwarding oauth2-proxy's split
 *                   session cookies) arriving one byte per receive: http_parse_request called on
 *                   each longer prefix, as a worker does, until it completes; CPU time of the whole
 *                   feed, best of 3. A slow client must not cost the worker more than its bytes do.
 *
 * The other figures are the best of 7 rounds of 200000 calls, in nanoseconds per call. Prints
 * name=value lines; the message sizes are printed too so a change in them is not mistaken for a
 * speed-up.
 */
#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ROUNDS 7
#define ITERS 200000
#define BIG_HEAD 32768 /* = MAX_HEADER in daemon/worker_int.h */

static const char req_msg[] =
    "GET /outpost.goauthentik.io/auth/traefik HTTP/1.1\r\n"
    "Host: authentik-server:9000\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Firefox/128.0\r\n"
    "Accept: text/html,application/xhtml+xml,*/*;q=0.8\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "Accept-Language: en-US,en;q=0.5\r\n"
    "Cookie: _ga=GA1.2.1234.1700000000; authentik_proxy_3f9a2c1d=MTcwMDAwMDAwMHxEWDhFQVFMX2dBQUJF; "
    "theme=dark\r\n"
    "X-Forwarded-For: 203.0.113.7\r\n"
    "X-Forwarded-Host: grafana.example.com\r\n"
    "X-Forwarded-Method: GET\r\n"
    "X-Forwarded-Port: 443\r\n"
    "X-Forwarded-Proto: https\r\n"
    "X-Forwarded-Server: traefik-7d9f8b6c5\r\n"
    "X-Forwarded-Prefix: /grafana\r\n"
    "X-Forwarded-Uri: /d/abc123?orgId=1\r\n"
    "X-Real-Ip: 203.0.113.7\r\n"
    "\r\n";

#define JWT                                                                                        \
    "eyJhbGciOiJSUzI1NiIsImtpZCI6IjBhYjEyMyIsInR5cCI6IkpXVCJ9."                                    \
    "eyJpc3MiOiJodHRwczovL2F1dGguZXhhbXBsZS5jb20vYXBwbGljYXRpb24vby9ncmFmYW5hLyIsInN1YiI6IjlkM2Yw" \
    "YzJiOGE3ZTZkNWM0YjNhMjkxODE3MTYxNTE0MTMxMjExMTAiLCJhdWQiOiJncmFmYW5hIiwiZXhwIjoxNzMyODUzNDIw" \
    "LCJpYXQiOjE3MzI4NTE2MjAsImF1dGhfdGltZSI6MTczMjg1MTYxOSwiYWNyIjoiZ29hdXRoZW50aWsuaW8vcHJvdmlk" \
    "ZXJzL29hdXRoMi9kZWZhdWx0IiwiZW1haWwiOiJyb290QGV4YW1wbGUuY29tIiwiZW1haWxfdmVyaWZpZWQiOnRydWUs" \
    "Im5hbWUiOiJhdXRoZW50aWsgRGVmYXVsdCBBZG1pbiIsImdpdmVuX25hbWUiOiJhdXRoZW50aWsgRGVmYXVsdCBBZG1p" \
    "biIsInByZWZlcnJlZF91c2VybmFtZSI6ImFrYWRtaW4iLCJncm91cHMiOlsiYXV0aGVudGlrIEFkbWlucyJdLCJzaWQi" \
    "OiI4ZTJmNjBhYjljMTQ0ZGQ3YjVhMzA5ZmM0ZTcxYWIyMiJ9."                                            \
    "c2lnbmF0dXJlLWJ5dGVzLWdvLWhlcmUtMDEyMzQ1Njc4OWFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6QUJDREVGR0hJ" \
    "SktMTU5PUFFSU1RVVldYWVo"

static const char resp_msg[] =
    "HTTP/1.1 200 OK\r\n"
    "X-Authentik-Username: akadmin\r\n"
    "X-Authentik-Groups: authentik Admins|ops|grafana-editors\r\n"
    "X-Authentik-Entitlements: \r\n"
    "X-Authentik-Email: root@example.com\r\n"
    "X-Authentik-Name: authentik Default Admin\r\n"
    "X-Authentik-Uid: 9d3f0c2b8a7e6d5c4b3a29181716151413121110\r\n"
    "X-Authentik-Jwt: " JWT "\r\n"
    "X-Authentik-Meta-Jwks: https://auth.example.com/application/o/grafana/jwks/\r\n"
    "X-Authentik-Meta-Outpost: authentik Embedded Outpost\r\n"
    "X-Authentik-Meta-Provider: grafana\r\n"
    "X-Authentik-Meta-App: grafana\r\n"
    "X-Authentik-Meta-Version: goauthentik.io/outpost/2024.10.4\r\n"
    "Date: Fri, 29 Nov 2024 04:37:00 GMT\r\n"
    "Content-Length: 0\r\n"
    "\r\n";

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static double cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static volatile long sink;

/* A head of exactly BIG_HEAD bytes: the forward-auth request line and fields, then Cookie fields
 * of 4000-byte values (oauth2-proxy splits its session cookie at 4 KiB), the last one cut to
 * fit. */
static char *big_head(void)
{
    static const char start[] = "GET /oauth2/auth HTTP/1.1\r\n"
                                "Host: oauth2-proxy:4180\r\n"
                                "X-Forwarded-Host: grafana.example.com\r\n"
                                "X-Forwarded-Uri: /d/abc123?orgId=1\r\n";
    char *h = malloc(BIG_HEAD);
    size_t n = sizeof start - 1, i = 0;
    if (!h)
        return NULL;
    memcpy(h, start, n);
    while (n < BIG_HEAD - 2) {
        char name[40];
        size_t k = (size_t)snprintf(name, sizeof name, "Cookie: _oauth2_proxy_%zu=", i++);
        size_t room = BIG_HEAD - 2 - n - k - 2; /* for the value, before its CRLF and the last */
        size_t v = room < 4000 + sizeof name ? room : 4000; /* no scrap of a field left over */
        memcpy(h + n, name, k);
        n += k;
        for (size_t j = 0; j < v; j++)
            h[n++] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[j % 64];
        memcpy(h + n, "\r\n", 2);
        n += 2;
    }
    memcpy(h + n, "\r\n", 2);
    return h;
}

/* CPU ms to parse head[0, BIG_HEAD) given one more byte per call, as a worker would. */
static double bytewise_ms(const char *head)
{
    struct http_hdr hdrs[64];
    struct http_req req = {.hdrs = hdrs, .hdrs_cap = 64};
    double t0 = cpu_ms();
    int rc = HTTP_PARTIAL;
    size_t len = 0;
    while (rc == HTTP_PARTIAL && len < BIG_HEAD) {
        len++;
        rc = http_parse_request(head, len, len - 1, BIG_HEAD, &req);
    }
    double ms = cpu_ms() - t0;
    if (rc != BIG_HEAD || len != BIG_HEAD) {
        fprintf(stderr, "bench_http: the 32 KiB head does not parse (%d at %zu bytes)\n", rc, len);
        exit(1);
    }
    return ms;
}

static long run_req(const char *buf, size_t len)
{
    struct http_hdr hdrs[64];
    struct http_req req = {.hdrs = hdrs, .hdrs_cap = 64};
    return http_parse_request(buf, len, 0, 16384, &req) + (long)req.nhdrs;
}

static long run_resp(const char *buf, size_t len)
{
    struct http_hdr hdrs[64];
    struct http_resp resp = {.hdrs = hdrs, .hdrs_cap = 64};
    return http_parse_response(buf, len, 16384, &resp) + (long)resp.nhdrs;
}

static long run_cookie(const char *buf, size_t len)
{
    const char *pos = buf, *end = buf + len;
    struct http_span name, value;
    long hits = 0;
    while (http_cookie_next(&pos, end, &name, &value))
        hits += http_cookie_match(name.p, name.len, "authentik_proxy_*") ? (long)value.len : 0;
    return hits;
}

static double best_ns(long (*fn)(const char *, size_t), const char *buf, size_t len)
{
    double best = 1e30;
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = now_ns();
        long acc = 0;
        for (int i = 0; i < ITERS; i++)
            acc += fn(buf, len);
        double per = (now_ns() - t0) / ITERS;
        sink += acc;
        if (per < best)
            best = per;
    }
    return best;
}

int main(void)
{
    /* the buffers a worker would have: heap, not .rodata */
    size_t req_len = sizeof req_msg - 1, resp_len = sizeof resp_msg - 1;
    char *req = malloc(req_len), *resp = malloc(resp_len);
    if (!req || !resp)
        return 1;
    memcpy(req, req_msg, req_len);
    memcpy(resp, resp_msg, resp_len);

    struct http_hdr hdrs[64];
    struct http_req r = {.hdrs = hdrs, .hdrs_cap = 64};
    if (http_parse_request(req, req_len, 0, 16384, &r) != (int)req_len) {
        fprintf(stderr, "bench_http: the request does not parse\n");
        return 1;
    }
    size_t req_hdrs = r.nhdrs;
    const struct http_hdr *cookie = http_hdr_find(hdrs, r.nhdrs, "cookie");
    if (!cookie)
        return 1;
    struct http_span cookies = {cookie->value, cookie->value_len};
    struct http_resp s = {.hdrs = hdrs, .hdrs_cap = 64};
    if (http_parse_response(resp, resp_len, 16384, &s) != (int)resp_len) {
        fprintf(stderr, "bench_http: the response does not parse\n");
        return 1;
    }

    printf("req_bytes=%zu\n", req_len);
    printf("req_hdrs=%zu\n", req_hdrs);
    printf("parse_req_ns=%.1f\n", best_ns(run_req, req, req_len));
    printf("resp_bytes=%zu\n", resp_len);
    printf("resp_hdrs=%zu\n", s.nhdrs);
    printf("parse_resp_ns=%.1f\n", best_ns(run_resp, resp, resp_len));
    printf("cookie_scan_ns=%.1f\n", best_ns(run_cookie, cookies.p, cookies.len));

    char *head = big_head();
    if (!head)
        return 1;
    double best = 1e30;
    for (int round = 0; round < 3; round++) {
        double ms = bytewise_ms(head);
        best = ms < best ? ms : best;
    }
    printf("head32k_bytes=%d\n", BIG_HEAD);
    printf("head32k_bytewise_cpu_ms=%.3f\n", best);
    free(head);
    free(req);
    free(resp);
    return 0;
}
