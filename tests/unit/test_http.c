/*
 * test_http.c — daemon/http.c: request and response heads (accepted, refused with 400 or 431, and
 * the same answer at every split point), chunked bodies (whole, byte by byte, random splits),
 * cookies, name matchers, Connection lists and query lookups. Every input is parsed from an
 * exactly-sized heap copy so the sanitizer build catches a read past the end.
 */
#include "check.h"
#include "http_same.h"
#include "http.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>

#define ALL INT_MAX /* want: complete, consuming the whole input */
#define MAXB 8192
#define CAP 32

static const char *code_name(long long rc)
{
    switch (rc) {
    case HTTP_BAD:
        return "BAD";
    case HTTP_PARTIAL:
        return "PARTIAL";
    case HTTP_TOO_LARGE:
        return "TOO_LARGE";
    default:
        return rc >= 0 ? "length" : "?";
    }
}

/* A heap copy of exactly n bytes (ASan flags any read past them). */
static char *dup_exact(const char *s, size_t n)
{
    char *p = malloc(n ? n : 1);
    if (!p)
        abort();
    memcpy(p, s, n);
    return p;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15u;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* ---- requests -------------------------------------------------------------------------------- */

struct hdr_want {
    size_t index;
    const char *name, *value;
};

struct req_case {
    const char *what;
    const char *raw;
    size_t len;       /* 0: strlen(raw) */
    int want;         /* ALL, a length, or an HTTP_ code */
    size_t max_bytes; /* 0: MAXB */
    size_t cap;       /* 0: CAP */
    /* checked when complete */
    const char *method, *target;
    int minor;
    size_t nhdrs;
    long long cl;
    int chunked, keep_alive;
    struct hdr_want hdr; /* name == NULL: none */
};

#define TRAEFIK                                                                                    \
    "GET /outpost.goauthentik.io/auth/traefik HTTP/1.1\r\n"                                        \
    "Host: authentik-server:9000\r\n"                                                              \
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"       \
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"                  \
    "Accept-Encoding: gzip, deflate, br, zstd\r\n"                                                 \
    "Accept-Language: en-US,en;q=0.5\r\n"                                                          \
    "Cookie: _ga=GA1.2.1234567890.1700000000; "                                                    \
    "authentik_proxy_3f9a2c1d=MTcwMDAwMDAwMHxEWDhFQVFMX2dBQUJFQUVRQUFCX180PXw5Yx3kZx; "            \
    "theme=dark\r\n"                                                                               \
    "X-Forwarded-For: 203.0.113.7\r\n"                                                             \
    "X-Forwarded-Host: grafana.example.com\r\n"                                                    \
    "X-Forwarded-Method: GET\r\n"                                                                  \
    "X-Forwarded-Port: 443\r\n"                                                                    \
    "X-Forwarded-Proto: https\r\n"                                                                 \
    "X-Forwarded-Server: traefik-7d9f8b6c5-x2x4z\r\n"                                              \
    "X-Forwarded-Uri: /d/abc123/overview?orgId=1&refresh=30s\r\n"                                  \
    "X-Real-Ip: 203.0.113.7\r\n"                                                                   \
    "\r\n"

#define NGINX                                                                                      \
    "GET /outpost.goauthentik.io/auth/nginx HTTP/1.0\r\n"                                          \
    "Host: app.example.com\r\n"                                                                    \
    "X-Original-URL: https://app.example.com/admin/?page=2\r\n"                                    \
    "Connection: close\r\n"                                                                        \
    "Cookie: authentik_proxy_a1=xyz\r\n"                                                           \
    "\r\n"

#define PIPE1 "GET /oauth2/auth HTTP/1.1\r\nHost: a\r\nCookie: _oauth2_proxy=abc\r\n\r\n"
#define PIPE2 "GET /oauth2/auth?allowed_groups=admins HTTP/1.1\r\nHost: a\r\n\r\n"

/* clang-format off */
static const struct req_case req_cases[] = {
    /* accepted */
    {.what = "traefik forwardAuth", .raw = TRAEFIK, .want = ALL, .method = "GET",
     .target = "/outpost.goauthentik.io/auth/traefik", .minor = 1, .nhdrs = 14, .cl = -1,
     .keep_alive = 1,
     .hdr = {5, "Cookie",
             "_ga=GA1.2.1234567890.1700000000; "
             "authentik_proxy_3f9a2c1d=MTcwMDAwMDAwMHxEWDhFQVFMX2dBQUJFQUVRQUFCX180PXw5Yx3kZx; "
             "theme=dark"}},
    {.what = "nginx auth_request, HTTP/1.0 close", .raw = NGINX, .want = ALL, .method = "GET",
     .target = "/outpost.goauthentik.io/auth/nginx", .minor = 0, .nhdrs = 4, .cl = -1,
     .keep_alive = 0, .hdr = {1, "X-Original-URL", "https://app.example.com/admin/?page=2"}},
    {.what = "HTTP/1.0 keep-alive", .raw = "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
     .want = ALL, .method = "GET", .target = "/", .minor = 0, .nhdrs = 1, .cl = -1,
     .keep_alive = 1},
    {.what = "HTTP/1.0 default close", .raw = "GET / HTTP/1.0\r\nHost: a\r\n\r\n", .want = ALL,
     .method = "GET", .target = "/", .minor = 0, .nhdrs = 1, .cl = -1, .keep_alive = 0},
    {.what = "close wins over keep-alive",
     .raw = "GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: Upgrade, CLOSE\r\n\r\n",
     .want = ALL, .method = "GET", .target = "/", .minor = 1, .nhdrs = 2, .cl = -1,
     .keep_alive = 0},
    {.what = "close in a list", .raw = "GET / HTTP/1.1\r\nConnection: ,, te ,close,\r\n\r\n",
     .want = ALL, .method = "GET", .target = "/", .minor = 1, .nhdrs = 1, .cl = -1,
     .keep_alive = 0},
    {.what = "closed is not close", .raw = "GET / HTTP/1.1\r\nConnection: closed\r\n\r\n",
     .want = ALL, .method = "GET", .target = "/", .minor = 1, .nhdrs = 1, .cl = -1,
     .keep_alive = 1},
    {.what = "pipelined: first of two", .raw = PIPE1 PIPE2, .want = sizeof PIPE1 - 1,
     .method = "GET", .target = "/oauth2/auth", .minor = 1, .nhdrs = 2, .cl = -1,
     .keep_alive = 1},
    {.what = "pipelined: second of two", .raw = PIPE2, .want = ALL, .method = "GET",
     .target = "/oauth2/auth?allowed_groups=admins", .minor = 1, .nhdrs = 1, .cl = -1,
     .keep_alive = 1},
    {.what = "empty lines before the request line", .raw = "\r\n\r\nGET / HTTP/1.1\r\n\r\n",
     .want = ALL, .method = "GET", .target = "/", .minor = 1, .nhdrs = 0, .cl = -1,
     .keep_alive = 1},
    {.what = "no fields, no Host", .raw = "GET / HTTP/1.1\r\n\r\n", .want = ALL, .method = "GET",
     .target = "/", .minor = 1, .nhdrs = 0, .cl = -1, .keep_alive = 1},
    {.what = "OPTIONS *", .raw = "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", .want = ALL,
     .method = "OPTIONS", .target = "*", .minor = 1, .nhdrs = 1, .cl = -1, .keep_alive = 1},
    {.what = "body by Content-Length follows",
     .raw = "POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
     .want = sizeof "POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\n" - 1, .method = "POST",
     .target = "/x", .minor = 1, .nhdrs = 1, .cl = 5, .keep_alive = 1},
    {.what = "chunked", .raw = "POST /x HTTP/1.1\r\nTransfer-Encoding: ChunKed \r\n\r\n",
     .want = ALL, .method = "POST", .target = "/x", .minor = 1, .nhdrs = 1, .cl = -1,
     .chunked = 1, .keep_alive = 1},
    {.what = "identical Content-Length twice",
     .raw = "POST /x HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 005\r\n\r\n", .want = ALL,
     .method = "POST", .target = "/x", .minor = 1, .nhdrs = 2, .cl = 5, .keep_alive = 1},
    {.what = "Content-Length 2^53",
     .raw = "POST /x HTTP/1.1\r\nContent-Length: 9007199254740992\r\n\r\n", .want = ALL,
     .method = "POST", .target = "/x", .minor = 1, .nhdrs = 1, .cl = 9007199254740992LL,
     .keep_alive = 1},
    {.what = "Content-Length 0", .raw = "GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
     .want = ALL, .method = "GET", .target = "/", .minor = 1, .nhdrs = 1, .cl = 0,
     .keep_alive = 1},
    {.what = "OWS trimmed, inner kept", .raw = "GET / HTTP/1.1\r\nX-A: \t v a\tl \t \r\n\r\n",
     .want = ALL, .method = "GET", .target = "/", .minor = 1, .nhdrs = 1, .cl = -1,
     .keep_alive = 1, .hdr = {0, "X-A", "v a\tl"}},
    {.what = "empty value", .raw = "GET / HTTP/1.1\r\nX-Empty:\r\nX-Blank:   \r\n\r\n", .want = ALL,
     .method = "GET", .target = "/", .minor = 1, .nhdrs = 2, .cl = -1, .keep_alive = 1,
     .hdr = {1, "X-Blank", ""}},
    {.what = "obs-text in a value", .raw = "GET / HTTP/1.1\r\nX-User: J\xc3\xb6rg\xff\r\n\r\n",
     .want = ALL, .method = "GET", .target = "/", .minor = 1, .nhdrs = 1, .cl = -1,
     .keep_alive = 1, .hdr = {0, "X-User", "J\xc3\xb6rg\xff"}},
    {.what = "long value crossing words, tab inside",
     .raw = "GET / HTTP/1.1\r\nAuthorization: Bearer "
            "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0\t.sig-nature_0123456789\r\n\r\n",
     .want = ALL, .method = "GET", .target = "/", .minor = 1, .nhdrs = 1, .cl = -1,
     .keep_alive = 1,
     .hdr = {0, "Authorization",
             "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0\t.sig-nature_0123456789"}},
    {.what = "token chars in method and names",
     .raw = "M-!#$%&'*+.^_`|~9 /a HTTP/1.1\r\n!#$%&'*+-.^_`|~09azAZ: x\r\n\r\n", .want = ALL,
     .method = "M-!#$%&'*+.^_`|~9", .target = "/a", .minor = 1, .nhdrs = 1, .cl = -1,
     .keep_alive = 1, .hdr = {0, "!#$%&'*+-.^_`|~09azAZ", "x"}},
    {.what = "all VCHAR in target",
     .raw = "GET /!\"#$%&'()*+,-./0123456789:;<=>?@AZ[\\]^_`az{|}~ HTTP/1.1\r\n\r\n", .want = ALL,
     .method = "GET", .target = "/!\"#$%&'()*+,-./0123456789:;<=>?@AZ[\\]^_`az{|}~", .minor = 1,
     .nhdrs = 0, .cl = -1, .keep_alive = 1},
    {.what = "max_bytes beyond INT_MAX", .raw = "GET / HTTP/1.1\r\n\r\n", .want = ALL,
     .max_bytes = SIZE_MAX, .method = "GET", .target = "/", .minor = 1, .nhdrs = 0, .cl = -1,
     .keep_alive = 1},
    {.what = "fields == cap", .raw = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n", .want = ALL,
     .cap = 2, .method = "GET", .target = "/", .minor = 1, .nhdrs = 2, .cl = -1,
     .keep_alive = 1},
    {.what = "head == max_bytes", .raw = "GET / HTTP/1.1\r\nA: 1\r\n\r\n", .want = ALL,
     .max_bytes = 24, .method = "GET", .target = "/", .minor = 1, .nhdrs = 1, .cl = -1,
     .keep_alive = 1},

    /* 400 */
    {.what = "bare LF after request line",
     .raw = "GET / HTTP/1.1\nHost: a\r\n\r\n", .want = HTTP_BAD},
    {.what = "bare LF after a field", .raw = "GET / HTTP/1.1\r\nHost: a\n\r\n", .want = HTTP_BAD},
    {.what = "bare LF as the empty line",
     .raw = "GET / HTTP/1.1\r\nHost: a\r\n\n", .want = HTTP_BAD},
    {.what = "LF-only message", .raw = "GET / HTTP/1.1\n\n", .want = HTTP_BAD},
    {.what = "bare CR as the empty line", .raw = "GET / HTTP/1.1\r\nHost: a\r\n\rX",
     .want = HTTP_BAD},
    {.what = "bare CR in request line", .raw = "GET / HTTP/1.1\rX", .want = HTTP_BAD},
    {.what = "bare CR before the request line",
     .raw = "\r\rGET / HTTP/1.1\r\n\r\n", .want = HTTP_BAD},
    {.what = "bare LF before the request line",
     .raw = "\nGET / HTTP/1.1\r\n\r\n", .want = HTTP_BAD},
    {.what = "bare CR in a value", .raw = "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", .want = HTTP_BAD},
    {.what = "CR CR LF ending a field",
     .raw = "GET / HTTP/1.1\r\nX: a\r\r\n\r\n", .want = HTTP_BAD},
    {.what = "lower-case version", .raw = "GET / http/1.1\r\n\r\n", .want = HTTP_BAD},
    {.what = "HTTP/2.0", .raw = "GET / HTTP/2.0\r\n\r\n", .want = HTTP_BAD},
    {.what = "HTTP/2", .raw = "GET / HTTP/2\r\n\r\n", .want = HTTP_BAD},
    {.what = "HTTP/1.2", .raw = "GET / HTTP/1.2\r\n\r\n", .want = HTTP_BAD},
    {.what = "HTTP/1.10", .raw = "GET / HTTP/1.10\r\n\r\n", .want = HTTP_BAD},
    {.what = "HTTP/0.9 request", .raw = "GET /\r\n\r\n", .want = HTTP_BAD},
    {.what = "no version", .raw = "GET / \r\n\r\n", .want = HTTP_BAD},
    {.what = "space after version", .raw = "GET / HTTP/1.1 \r\n\r\n", .want = HTTP_BAD},
    {.what = "two spaces after method", .raw = "GET  / HTTP/1.1\r\n\r\n", .want = HTTP_BAD},
    {.what = "two spaces before version", .raw = "GET /  HTTP/1.1\r\n\r\n", .want = HTTP_BAD},
    {.what = "tab as separator", .raw = "GET\t/ HTTP/1.1\r\n\r\n", .want = HTTP_BAD},
    {.what = "empty method", .raw = " / HTTP/1.1\r\n\r\n", .want = HTTP_BAD},
    {.what = "method not a token", .raw = "GE(T / HTTP/1.1\r\n\r\n", .want = HTTP_BAD},
    {.what = "NUL in method", .raw = "GE\0T / HTTP/1.1\r\n\r\n", .len = 19, .want = HTTP_BAD},
    {.what = "absolute-form target", .raw = "GET http://a/ HTTP/1.1\r\n\r\n", .want = HTTP_BAD},
    {.what = "authority-form target", .raw = "CONNECT a:443 HTTP/1.1\r\n\r\n", .want = HTTP_BAD},
    {.what = "* with GET", .raw = "GET * HTTP/1.1\r\n\r\n", .want = HTTP_BAD},
    {.what = "* with options", .raw = "options * HTTP/1.1\r\n\r\n", .want = HTTP_BAD},
    {.what = "*x target", .raw = "OPTIONS *x HTTP/1.1\r\n\r\n", .want = HTTP_BAD},
    {.what = "control byte in target", .raw = "GET /a\x01 HTTP/1.1\r\n\r\n", .want = HTTP_BAD},
    {.what = "DEL in target", .raw = "GET /a\x7f HTTP/1.1\r\n\r\n", .want = HTTP_BAD},
    {.what = "non-ASCII in target", .raw = "GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n", .want = HTTP_BAD},
    {.what = "NUL in target", .raw = "GET /a\0b HTTP/1.1\r\n\r\n", .len = 20, .want = HTTP_BAD},
    {.what = "space before colon", .raw = "GET / HTTP/1.1\r\nHost : a\r\n\r\n", .want = HTTP_BAD},
    {.what = "tab before colon", .raw = "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", .want = HTTP_BAD},
    {.what = "obs-fold", .raw = "GET / HTTP/1.1\r\nX-A: b\r\n c\r\n\r\n", .want = HTTP_BAD},
    {.what = "obs-fold with tab",
     .raw = "GET / HTTP/1.1\r\nX-A: b\r\n\tc\r\n\r\n", .want = HTTP_BAD},
    {.what = "whitespace before the first field", .raw = "GET / HTTP/1.1\r\n Host: a\r\n\r\n",
     .want = HTTP_BAD},
    {.what = "empty field name", .raw = "GET / HTTP/1.1\r\n: v\r\n\r\n", .want = HTTP_BAD},
    {.what = "no colon", .raw = "GET / HTTP/1.1\r\nHost\r\n\r\n", .want = HTTP_BAD},
    {.what = "name not a token", .raw = "GET / HTTP/1.1\r\nX(A): v\r\n\r\n", .want = HTTP_BAD},
    {.what = "space inside name", .raw = "GET / HTTP/1.1\r\nX A: v\r\n\r\n", .want = HTTP_BAD},
    {.what = "non-ASCII in name",
     .raw = "GET / HTTP/1.1\r\nX\xc3\xa9: v\r\n\r\n", .want = HTTP_BAD},
    {.what = "NUL in value",
     .raw = "GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", .len = 25, .want = HTTP_BAD},
    {.what = "DEL in value", .raw = "GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n", .want = HTTP_BAD},
    {.what = "ESC in value", .raw = "GET / HTTP/1.1\r\nX: a\x1b[0m\r\n\r\n", .want = HTTP_BAD},
    {.what = "CTL deep in a long value",
     .raw = "GET / HTTP/1.1\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\x0b"
            "aaaaaaaaaaaaaaaaa\r\n\r\n",
     .want = HTTP_BAD},
    {.what = "DEL deep in a long value",
     .raw = "GET / HTTP/1.1\r\nX: aaaaaaaaaaaaaaaaaaaaaaaa\x7f" "aaaaaaaaaaaaaaaa\r\n\r\n",
     .want = HTTP_BAD},
    {.what = "NUL deep in a long value",
     .raw = "GET / HTTP/1.1\r\nX: aaaaaaaaaaaaaaaaaaaaaaaa\0aaaaaaaaaaaaaaaa\r\n\r\n", .len = 64,
     .want = HTTP_BAD},
    {.what = "DEL deep in a long target",
     .raw = "GET /aaaaaaaaaaaaaaaaaaaaaaaa\x7f" "aaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n",
     .want = HTTP_BAD},
    {.what = "non-ASCII deep in a long target",
     .raw = "GET /aaaaaaaaaaaaaaaaaaaaaaaa\x80" "aaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n",
     .want = HTTP_BAD},
    {.what = "tab deep in a long target",
     .raw = "GET /aaaaaaaaaaaaaaaaaaaaaaaa\taaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n", .want = HTTP_BAD},
    {.what = "Content-Length not digits", .raw = "POST / HTTP/1.1\r\nContent-Length: 5a\r\n\r\n",
     .want = HTTP_BAD},
    {.what = "Content-Length negative", .raw = "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
     .want = HTTP_BAD},
    {.what = "Content-Length plus sign", .raw = "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
     .want = HTTP_BAD},
    {.what = "Content-Length hex", .raw = "POST / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\n",
     .want = HTTP_BAD},
    {.what = "Content-Length empty", .raw = "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
     .want = HTTP_BAD},
    {.what = "Content-Length inner space", .raw = "POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n",
     .want = HTTP_BAD},
    {.what = "Content-Length list", .raw = "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
     .want = HTTP_BAD},
    {.what = "Content-Length 2^53+1",
     .raw = "POST / HTTP/1.1\r\nContent-Length: 9007199254740993\r\n\r\n", .want = HTTP_BAD},
    {.what = "Content-Length 2^64+",
     .raw = "POST / HTTP/1.1\r\nContent-Length: 18446744073709551617\r\n\r\n", .want = HTTP_BAD},
    {.what = "Content-Length disagree",
     .raw = "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", .want = HTTP_BAD},
    {.what = "Content-Length and chunked",
     .raw = "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
     .want = HTTP_BAD},
    {.what = "chunked and Content-Length",
     .raw = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
     .want = HTTP_BAD},
    {.what = "Transfer-Encoding list",
     .raw = "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", .want = HTTP_BAD},
    {.what = "Transfer-Encoding twice",
     .raw = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
     .want = HTTP_BAD},
    {.what = "Transfer-Encoding identity",
     .raw = "POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n", .want = HTTP_BAD},
    {.what = "Transfer-Encoding chunked-ish",
     .raw = "POST / HTTP/1.1\r\nTransfer-Encoding: chunkedx\r\n\r\n", .want = HTTP_BAD},
    {.what = "Transfer-Encoding empty", .raw = "POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n",
     .want = HTTP_BAD},
    {.what = "Transfer-Encoding in HTTP/1.0",
     .raw = "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", .want = HTTP_BAD},
    {.what = "400 before the end of the window", .raw = "GET / HTTP/1.1\r\nX : y\r\n",
     .max_bytes = 20, .want = HTTP_BAD},

    /* 431 */
    {.what = "head over max_bytes", .raw = "GET / HTTP/1.1\r\nA: 1\r\n\r\n", .max_bytes = 23,
     .want = HTTP_TOO_LARGE},
    {.what = "unfinished head at max_bytes", .raw = "GET / HTTP/1.1\r\nA: 1", .max_bytes = 20,
     .want = HTTP_TOO_LARGE},
    {.what = "request line over max_bytes", .raw = "GET /aaaaaaaaaaaaaaaaaaaa", .max_bytes = 10,
     .want = HTTP_TOO_LARGE},
    {.what = "fields > cap", .raw = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", .cap = 2,
     .want = HTTP_TOO_LARGE},
    {.what = "a field with cap 0", .raw = "GET / HTTP/1.1\r\nA: 1\r\n\r\n", .cap = SIZE_MAX,
     .want = HTTP_TOO_LARGE},
    {.what = "only empty lines up to max_bytes", .raw = "\r\n\r\n\r\n\r\n", .max_bytes = 8,
     .want = HTTP_TOO_LARGE},

    /* unfinished */
    {.what = "unfinished", .raw = "GET / HTTP/1.1\r\nHost: a\r\n", .want = HTTP_PARTIAL},
    {.what = "nothing", .raw = "", .want = HTTP_PARTIAL},
};
/* clang-format on */

/* Parse raw[0, n) from an exact copy, resuming at last_len (0: from the start). */
static int run_req_from(const struct req_case *c, const char *raw, size_t n, size_t last_len,
                        struct http_req *req, struct http_hdr *hdrs)
{
    char *copy = dup_exact(raw, n);
    req->hdrs = hdrs;
    req->hdrs_cap = c->cap == SIZE_MAX ? 0 : c->cap ? c->cap : CAP;
    int rc = http_parse_request(copy, n, last_len, c->max_bytes ? c->max_bytes : MAXB, req);
    /* make the spans point into raw so they outlive the copy */
    if (rc > 0) {
        ptrdiff_t d = raw - copy;
        req->method += d;
        req->target += d;
        for (size_t i = 0; i < req->nhdrs; i++) {
            hdrs[i].name += d;
            hdrs[i].value += d;
        }
    }
    free(copy);
    return rc;
}

static int run_req(const struct req_case *c, const char *raw, size_t n, struct http_req *req,
                   struct http_hdr *hdrs)
{
    return run_req_from(c, raw, n, 0, req, hdrs);
}

static void test_requests(void)
{
    struct http_hdr hdrs[CAP];
    for (size_t i = 0; i < sizeof req_cases / sizeof req_cases[0]; i++) {
        const struct req_case *c = &req_cases[i];
        size_t n = c->len ? c->len : strlen(c->raw);
        int want = c->want == ALL ? (int)n : c->want;
        struct http_req req;
        int rc = run_req(c, c->raw, n, &req, hdrs);
        CHECK(rc == want, "%s: expected %s %d, got %s %d", c->what, code_name(want), want,
              code_name(rc), rc);
        if (rc != want)
            continue;
        if (rc > 0) {
            CHECK_MEM(req.method, req.method_len, c->method, strlen(c->method));
            CHECK_MEM(req.target, req.target_len, c->target, strlen(c->target));
            CHECK(req.minor_version == c->minor && req.nhdrs == c->nhdrs &&
                      req.content_length == c->cl && req.chunked == c->chunked &&
                      req.keep_alive == c->keep_alive,
                  "%s: expected minor %d nhdrs %zu cl %lld chunked %d keep_alive %d, got %d %zu "
                  "%lld %d %d",
                  c->what, c->minor, c->nhdrs, c->cl, c->chunked, c->keep_alive, req.minor_version,
                  req.nhdrs, (long long)req.content_length, req.chunked, req.keep_alive);
            if (c->hdr.name && c->hdr.index < req.nhdrs) {
                const struct http_hdr *h = &hdrs[c->hdr.index];
                CHECK_MEM(h->name, h->name_len, c->hdr.name, strlen(c->hdr.name));
                CHECK_MEM(h->value, h->value_len, c->hdr.value, strlen(c->hdr.value));
            }
        }
        /* every prefix: HTTP_PARTIAL until the answer is decided, then that answer */
        for (size_t k = 0; k < n; k++) {
            struct http_req r2;
            int rk = run_req(c, c->raw, k, &r2, hdrs);
            int ok = rk == HTTP_PARTIAL || rk == rc;
            if (rc > 0)
                ok = k < (size_t)rc ? rk == HTTP_PARTIAL : rk == rc;
            CHECK(ok, "%s: prefix of %zu bytes: expected %s or %s %d, got %s %d", c->what, k,
                  code_name(HTTP_PARTIAL), code_name(rc), rc, code_name(rk), rk);
            if (!ok)
                break;
        }
    }
}

/*
 * Feed raw[0, n) in pieces (each piece 1..max_piece bytes, random; 1: byte by byte), passing the
 * last HTTP_PARTIAL length, as a worker does. Every answer must be HTTP_PARTIAL or exactly the
 * one-shot answer for the same bytes (http.h), parsed into one_hdrs. Returns the last answer, with
 * *req from it.
 */
static int feed_req(const struct req_case *c, const char *raw, size_t n, size_t max_piece,
                    struct http_req *req, struct http_hdr *hdrs, struct http_hdr *one_hdrs)
{
    size_t len = 0, last = 0;
    int rc = HTTP_PARTIAL;
    while (len < n) {
        len += 1 + (size_t)(rng() % max_piece);
        if (len > n)
            len = n;
        struct http_req one;
        int ro = run_req(c, raw, len, &one, one_hdrs);
        rc = run_req_from(c, raw, len, last, req, hdrs);
        CHECK(rc == HTTP_PARTIAL || same_req(rc, req, ro, &one),
              "%s: %zu bytes after %zu: expected %s or the one-shot %s %d, got %s %d", c->what, len,
              last, code_name(HTTP_PARTIAL), code_name(ro), ro, code_name(rc), rc);
        if (rc != HTTP_PARTIAL)
            break;
        last = len;
    }
    return rc;
}

/*
 * Every request case, in random pieces and byte by byte: the same answer as in one shot. An error
 * in a head that has not ended may come late (http.h), so each case is also fed with an empty line
 * appended, and then the answer must be the one-shot one exactly.
 */
static void test_requests_in_pieces(void)
{
    struct http_hdr hdrs[CAP], one_hdrs[CAP], step_hdrs[CAP];
    for (size_t i = 0; i < sizeof req_cases / sizeof req_cases[0]; i++) {
        const struct req_case *c = &req_cases[i];
        size_t n = c->len ? c->len : strlen(c->raw);
        char *ended = malloc(n + 4);
        if (!ended)
            abort();
        memcpy(ended, c->raw, n);
        memcpy(ended + n, "\r\n\r\n", 4);
        for (int variant = 0; variant < 2; variant++) {
            const char *raw = variant ? ended : c->raw;
            size_t len = variant ? n + 4 : n;
            struct http_req one, req;
            int ro = run_req(c, raw, len, &one, one_hdrs);
            for (int round = 0; round < 40; round++) {
                size_t max_piece = round == 0 ? 1 : 1 + (size_t)(rng() % (len / 2 + 2));
                int rc = feed_req(c, raw, len, max_piece, &req, hdrs, step_hdrs);
                int ok = same_req(rc, &req, ro, &one) ||
                         (!variant && rc == HTTP_PARTIAL && ro < 0 && ro != HTTP_PARTIAL);
                CHECK(ok, "%s%s, pieces of up to %zu bytes: expected %s %d, got %s %d", c->what,
                      variant ? " + CRLF CRLF" : "", max_piece, code_name(ro), ro, code_name(rc),
                      rc);
                if (!ok)
                    break;
            }
        }
        free(ended);
    }
}

/* A head of exactly size bytes, max_bytes = size: the request line, then fields of 100-byte
 * values. */
static char *make_head(size_t size, size_t *nfields)
{
    char *h = malloc(size);
    if (!h)
        abort();
    size_t n = (size_t)sprintf(h, "GET /auth HTTP/1.1\r\n");
    *nfields = 0;
    while (n < size - 2) {
        size_t room = size - 2 - n - 6; /* "Xnnn: " is 6 bytes, then the value and CRLF */
        size_t v = room < 100 + 110 ? room - 2 : 100;
        n += (size_t)sprintf(h + n, "X%03zu: ", *nfields % 1000);
        memset(h + n, 'v', v);
        n += v;
        memcpy(h + n, "\r\n", 2);
        n += 2;
        ++*nfields;
    }
    memcpy(h + n, "\r\n", 2);
    return h;
}

/* Byte by byte up to the limit: a 32 KiB head parses; one byte more than the limit, or a request
 * line that does not end within it, is HTTP_TOO_LARGE at the limit and not a byte before (the
 * worker tells 414 from 431 by whether a line ended: it must see the same bytes as before). */
static void test_request_bytewise_limit(void)
{
    enum { SIZE = 32768 };
    static struct http_hdr hdrs[400], one_hdrs[400], step_hdrs[400];
    struct req_case c = {.what = "32 KiB head byte by byte", .max_bytes = SIZE, .cap = 400};
    size_t nfields;
    char *head = make_head(SIZE, &nfields);
    struct http_req req, one;

    int rc = feed_req(&c, head, SIZE, 1, &req, hdrs, step_hdrs);
    CHECK(rc == SIZE && req.nhdrs == nfields, "expected %d with %zu fields, got %s %d with %zu",
          SIZE, nfields, code_name(rc), rc, rc > 0 ? req.nhdrs : 0);
    CHECK(same_req(rc, &req, run_req(&c, head, SIZE, &one, one_hdrs), &one),
          "byte by byte and in one shot disagree");

    /* the same head with one byte more than the limit allows: 431 */
    c.what = "32 KiB + 1 head byte by byte";
    c.max_bytes = SIZE - 1;
    size_t len = 0, last = 0;
    do {
        rc = run_req_from(&c, head, ++len, last, &req, hdrs);
        last = len;
    } while (rc == HTTP_PARTIAL && len < SIZE);
    CHECK(rc == HTTP_TOO_LARGE && len == SIZE - 1, "expected %s at %d bytes, got %s at %zu",
          code_name(HTTP_TOO_LARGE), SIZE - 1, code_name(rc), len);
    CHECK(memchr(head, '\n', len) != NULL, "a line ended within the limit: 431, not 414");

    /* a target that does not end within the limit: 414 */
    c.what = "long target byte by byte";
    c.max_bytes = SIZE;
    memcpy(head, "GET /", 5);
    memset(head + 5, 'a', SIZE - 5);
    len = last = 0;
    do {
        rc = run_req_from(&c, head, ++len, last, &req, hdrs);
        last = len;
    } while (rc == HTTP_PARTIAL && len < SIZE);
    CHECK(rc == HTTP_TOO_LARGE && len == SIZE, "expected %s at %d bytes, got %s at %zu",
          code_name(HTTP_TOO_LARGE), SIZE, code_name(rc), len);
    CHECK(memchr(head, '\n', len) == NULL, "no line ended within the limit: 414");

    /* garbage is refused at its first byte that no head may hold, not at the limit */
    static const struct {
        const char *what, *raw;
        size_t bad_at; /* the length at which it is certain */
    } garbage[] = {
        {"a control byte", "GET / HTTP/1.1\r\nX: a\x01", 21},
        {"a bare CR", "GET / HTTP/1.1\r\nX: a\rb", 22},
        {"a bare LF", "GET / HTTP/1.1\r\nX: a\nb", 21},
        {"LF LF", "GET / HTTP/1.1\n\n", 15},
    };
    for (size_t i = 0; i < sizeof garbage / sizeof garbage[0]; i++) {
        c.what = garbage[i].what;
        memset(head, 'a', SIZE);
        memcpy(head, garbage[i].raw, strlen(garbage[i].raw));
        len = last = 0;
        do {
            rc = run_req_from(&c, head, ++len, last, &req, hdrs);
            last = len;
        } while (rc == HTTP_PARTIAL && len < SIZE);
        CHECK(rc == HTTP_BAD && len == garbage[i].bad_at,
              "%s: expected %s at %zu bytes, got %s at %zu", c.what, code_name(HTTP_BAD),
              garbage[i].bad_at, code_name(rc), len);
        /* and in two pieces, the bad byte inside the second */
        CHECK_INT(run_req_from(&c, head, 5, 0, &req, hdrs), HTTP_PARTIAL);
        CHECK_INT(run_req_from(&c, head, garbage[i].bad_at + 8, 5, &req, hdrs), HTTP_BAD);
    }
    free(head);
}

/* http_parse_request walks a pipelined buffer from one request to the next */
static void test_pipeline(void)
{
    static const char buf[] = "\r\n" PIPE1 "POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc" PIPE2;
    struct http_hdr hdrs[8];
    struct http_req req = {.hdrs = hdrs, .hdrs_cap = 8};
    size_t off = 0, n = sizeof buf - 1;
    const char *targets[] = {"/oauth2/auth", "/b", "/oauth2/auth?allowed_groups=admins"};
    for (int i = 0; i < 3; i++) {
        int rc = http_parse_request(buf + off, n - off, 0, MAXB, &req);
        CHECK(rc > 0, "request %d: expected a length, got %s %d", i, code_name(rc), rc);
        if (rc <= 0)
            return;
        CHECK_MEM(req.target, req.target_len, targets[i], strlen(targets[i]));
        off += (size_t)rc;
        if (http_req_body_mode(&req) == HTTP_BODY_LENGTH)
            off += (size_t)req.content_length;
    }
    CHECK_INT(off, n);
    CHECK_INT(http_parse_request(buf + off, 0, 0, MAXB, &req), HTTP_PARTIAL);
}

/* ---- responses ------------------------------------------------------------------------------- */

struct resp_case {
    const char *what;
    const char *raw;
    int want; /* ALL, a length, or an HTTP_ code */
    int head; /* the request was HEAD */
    size_t max_bytes;
    /* checked when complete */
    int status;
    const char *reason;
    int minor;
    size_t nhdrs;
    long long cl;
    int chunked, keep_alive, body;
    struct hdr_want hdr;
};

#define AK_200                                                                                     \
    "HTTP/1.1 200 OK\r\n"                                                                          \
    "X-Authentik-Username: akadmin\r\n"                                                            \
    "X-Authentik-Groups: authentik Admins|ops\r\n"                                                 \
    "X-Authentik-Email: root@example.com\r\n"                                                      \
    "X-Authentik-Name: authentik Default Admin\r\n"                                                \
    "X-Authentik-Uid: 9d3f0c2b8a7e6d5c4b3a29181716151413121110\r\n"                                \
    "Date: Fri, 29 Nov 2024 04:37:00 GMT\r\n"                                                      \
    "Content-Length: 0\r\n"                                                                        \
    "\r\n"

#define AK_302                                                                                     \
    "HTTP/1.1 302 Found\r\n"                                                                       \
    "Location: https://auth.example.com/application/o/authorize/?client_id=abc&state=xyz\r\n"      \
    "Set-Cookie: authentik_proxy_3f9a=MTcwMDAw; Path=/; Expires=Sat, 30 Nov 2024 04:37:00 GMT; "   \
    "HttpOnly; SameSite=Lax\r\n"                                                                   \
    "Set-Cookie: authentik_csrf=abc; Path=/; Secure\r\n"                                           \
    "Content-Type: text/html; charset=utf-8\r\n"                                                   \
    "Content-Length: 5\r\n"                                                                        \
    "\r\n"

/* clang-format off */
static const struct resp_case resp_cases[] = {
    {.what = "authentik 200", .raw = AK_200, .want = ALL, .status = 200, .reason = "OK",
     .minor = 1, .nhdrs = 7, .cl = 0, .keep_alive = 1, .body = HTTP_BODY_LENGTH,
     .hdr = {4, "X-Authentik-Uid", "9d3f0c2b8a7e6d5c4b3a29181716151413121110"}},
    {.what = "authentik 302 + body", .raw = AK_302 "Found", .want = sizeof AK_302 - 1,
     .status = 302, .reason = "Found", .minor = 1, .nhdrs = 5, .cl = 5, .keep_alive = 1,
     .body = HTTP_BODY_LENGTH, .hdr = {2, "Set-Cookie", "authentik_csrf=abc; Path=/; Secure"}},
    {.what = "chunked 401",
     .raw = "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"x\"\r\n"
            "Transfer-Encoding: chunked\r\n\r\n",
     .want = ALL, .status = 401, .reason = "Unauthorized", .minor = 1, .nhdrs = 2, .cl = -1,
     .chunked = 1, .keep_alive = 1, .body = HTTP_BODY_CHUNKED},
    {.what = "204 has no body", .raw = "HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n",
     .want = ALL, .status = 204, .reason = "No Content", .minor = 1, .nhdrs = 1, .cl = 7,
     .keep_alive = 1, .body = HTTP_BODY_NONE},
    {.what = "304 has no body", .raw = "HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n",
     .want = ALL, .status = 304, .reason = "Not Modified", .minor = 1, .nhdrs = 1, .cl = 7,
     .keep_alive = 1, .body = HTTP_BODY_NONE},
    {.what = "HEAD has no body", .raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
     .head = 1, .want = ALL, .status = 200, .reason = "OK", .minor = 1, .nhdrs = 1, .cl = -1,
     .chunked = 1, .keep_alive = 1, .body = HTTP_BODY_NONE},
    {.what = "100 Continue", .raw = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
     .want = sizeof "HTTP/1.1 100 Continue\r\n\r\n" - 1, .status = 100, .reason = "Continue",
     .minor = 1, .nhdrs = 0, .cl = -1, .keep_alive = 1, .body = HTTP_BODY_NONE},
    {.what = "1.0 until close", .raw = "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n",
     .want = ALL, .status = 200, .reason = "OK", .minor = 0, .nhdrs = 1, .cl = -1,
     .keep_alive = 0, .body = HTTP_BODY_CLOSE},
    {.what = "1.1 until close", .raw = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", .want = ALL,
     .status = 200, .reason = "OK", .minor = 1, .nhdrs = 1, .cl = -1, .keep_alive = 0,
     .body = HTTP_BODY_CLOSE},
    {.what = "1.0 keep-alive with length",
     .raw = "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n", .want = ALL,
     .status = 200, .reason = "OK", .minor = 0, .nhdrs = 2, .cl = 2, .keep_alive = 1,
     .body = HTTP_BODY_LENGTH},
    {.what = "no reason", .raw = "HTTP/1.1 200\r\n\r\n", .want = ALL, .status = 200, .reason = "",
     .minor = 1, .nhdrs = 0, .cl = -1, .keep_alive = 1, .body = HTTP_BODY_CLOSE},
    {.what = "empty reason", .raw = "HTTP/1.1 503 \r\n\r\n", .want = ALL, .status = 503,
     .reason = "", .minor = 1, .nhdrs = 0, .cl = -1, .keep_alive = 1, .body = HTTP_BODY_CLOSE},
    {.what = "reason with tab and obs-text", .raw = "HTTP/1.1 999 Tr\xc3\xa8s\tbien \r\n\r\n",
     .want = ALL, .status = 999, .reason = "Tr\xc3\xa8s\tbien ", .minor = 1, .nhdrs = 0,
     .cl = -1, .keep_alive = 1, .body = HTTP_BODY_CLOSE},

    {.what = "status 099", .raw = "HTTP/1.1 099 X\r\n\r\n", .want = HTTP_BAD},
    {.what = "two-digit status", .raw = "HTTP/1.1 20 OK\r\n\r\n", .want = HTTP_BAD},
    {.what = "four-digit status", .raw = "HTTP/1.1 2000 OK\r\n\r\n", .want = HTTP_BAD},
    {.what = "status not digits", .raw = "HTTP/1.1 2x0 OK\r\n\r\n", .want = HTTP_BAD},
    {.what = "HTTP/2", .raw = "HTTP/2 200\r\n\r\n", .want = HTTP_BAD},
    {.what = "HTTP/1.2", .raw = "HTTP/1.2 200 OK\r\n\r\n", .want = HTTP_BAD},
    {.what = "lower-case version", .raw = "http/1.1 200 OK\r\n\r\n", .want = HTTP_BAD},
    {.what = "two spaces", .raw = "HTTP/1.1  200 OK\r\n\r\n", .want = HTTP_BAD},
    {.what = "tab after version", .raw = "HTTP/1.1\t200 OK\r\n\r\n", .want = HTTP_BAD},
    {.what = "bare LF status line", .raw = "HTTP/1.1 200 OK\n\r\n", .want = HTTP_BAD},
    {.what = "empty line first", .raw = "\r\nHTTP/1.1 200 OK\r\n\r\n", .want = HTTP_BAD},
    {.what = "CTL in reason", .raw = "HTTP/1.1 200 O\x01K\r\n\r\n", .want = HTTP_BAD},
    {.what = "obs-fold", .raw = "HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\n\r\n", .want = HTTP_BAD},
    {.what = "Content-Length and chunked",
     .raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
     .want = HTTP_BAD},
    {.what = "chunked in 1.0", .raw = "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
     .want = HTTP_BAD},
    {.what = "Content-Length disagree",
     .raw = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", .want = HTTP_BAD},
    {.what = "head over max_bytes", .raw = AK_200, .max_bytes = 100, .want = HTTP_TOO_LARGE},
    {.what = "unfinished", .raw = "HTTP/1.1 200 OK\r\n", .want = HTTP_PARTIAL},
};
/* clang-format on */

static void test_responses(void)
{
    struct http_hdr hdrs[CAP];
    for (size_t i = 0; i < sizeof resp_cases / sizeof resp_cases[0]; i++) {
        const struct resp_case *c = &resp_cases[i];
        size_t n = strlen(c->raw);
        size_t maxb = c->max_bytes ? c->max_bytes : MAXB;
        int want = c->want == ALL ? (int)n : c->want;
        struct http_resp resp = {.hdrs = hdrs, .hdrs_cap = CAP};
        int rc = http_parse_response(c->raw, n, maxb, &resp);
        CHECK(rc == want, "%s: expected %s %d, got %s %d", c->what, code_name(want), want,
              code_name(rc), rc);
        if (rc != want)
            continue;
        if (rc > 0) {
            CHECK_MEM(resp.reason, resp.reason_len, c->reason, strlen(c->reason));
            int body = http_resp_body_mode(&resp, c->head);
            CHECK(resp.status == c->status && resp.minor_version == c->minor &&
                      resp.nhdrs == c->nhdrs && resp.content_length == c->cl &&
                      resp.chunked == c->chunked && resp.keep_alive == c->keep_alive &&
                      body == c->body,
                  "%s: expected status %d minor %d nhdrs %zu cl %lld chunked %d keep_alive %d "
                  "body %d, got %d %d %zu %lld %d %d %d",
                  c->what, c->status, c->minor, c->nhdrs, c->cl, c->chunked, c->keep_alive, c->body,
                  resp.status, resp.minor_version, resp.nhdrs, (long long)resp.content_length,
                  resp.chunked, resp.keep_alive, body);
            if (c->hdr.name && c->hdr.index < resp.nhdrs) {
                const struct http_hdr *h = &hdrs[c->hdr.index];
                CHECK_MEM(h->name, h->name_len, c->hdr.name, strlen(c->hdr.name));
                CHECK_MEM(h->value, h->value_len, c->hdr.value, strlen(c->hdr.value));
            }
        }
        for (size_t k = 0; k < n; k++) {
            char *copy = dup_exact(c->raw, k);
            struct http_resp r2 = {.hdrs = hdrs, .hdrs_cap = CAP};
            int rk = http_parse_response(copy, k, maxb, &r2);
            free(copy);
            int ok = rc > 0 ? (k < (size_t)rc ? rk == HTTP_PARTIAL : rk == rc)
                            : (rk == HTTP_PARTIAL || rk == rc);
            CHECK(ok, "%s: prefix of %zu bytes: expected %s or %s, got %s %d", c->what, k,
                  code_name(HTTP_PARTIAL), code_name(rc), code_name(rk), rk);
            if (!ok)
                break;
        }
    }

    /* the final answer after an interim one */
    static const char two[] = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n\r\n";
    struct http_resp resp = {.hdrs = hdrs, .hdrs_cap = CAP};
    int rc = http_parse_response(two, sizeof two - 1, MAXB, &resp);
    CHECK(rc > 0 && resp.status == 100, "expected 100 first, got rc %d status %d", rc, resp.status);
    if (rc > 0) {
        int rc2 = http_parse_response(two + rc, sizeof two - 1 - (size_t)rc, MAXB, &resp);
        CHECK(rc2 > 0 && resp.status == 201, "expected 201 next, got rc %d status %d", rc2,
              resp.status);
    }

    /* http_hdr_find and request body modes */
    rc = http_parse_response(AK_302, sizeof AK_302 - 1, MAXB, &resp);
    CHECK_INT(rc, sizeof AK_302 - 1);
    const struct http_hdr *h = http_hdr_find(hdrs, resp.nhdrs, "set-cookie");
    CHECK(h == &hdrs[1], "expected the first Set-Cookie (index 1), got %td", h ? h - hdrs : -1);
    CHECK(http_hdr_find(hdrs, resp.nhdrs, "Set-Cookie2") == NULL, "expected no Set-Cookie2");
    struct http_req req = {.content_length = -1};
    CHECK_INT(http_req_body_mode(&req), HTTP_BODY_NONE);
    req.content_length = 0;
    CHECK_INT(http_req_body_mode(&req), HTTP_BODY_LENGTH);
    req.content_length = -1;
    req.chunked = 1;
    CHECK_INT(http_req_body_mode(&req), HTTP_BODY_CHUNKED);
}

/* ---- chunked bodies -------------------------------------------------------------------------- */

struct chunk_case {
    const char *what;
    const char *raw;
    size_t len;       /* 0: strlen(raw) */
    int want;         /* >= 0: bytes left after the body; else an HTTP_ code */
    const char *data; /* decoded data (for HTTP_BAD: what came before the error) */
    size_t data_len;  /* 0: strlen(data) */
};

/* clang-format off */
static const struct chunk_case chunk_cases[] = {
    {"one chunk", "5\r\nhello\r\n0\r\n\r\n", 0, 0, "hello", 0},
    {"chunks and what follows", "5\r\nhello\r\n1\r\n,\r\n6\r\n world\r\n0\r\n\r\nGET / HTTP/1.1",
     0, 14, "hello, world", 0},
    {"hex sizes", "a\r\n0123456789\r\nA\r\nabcdefghij\r\n0\r\n\r\n", 0, 0,
     "0123456789abcdefghij", 0},
    {"leading zeros", "0005\r\nhello\r\n000\r\n\r\n", 0, 0, "hello", 0},
    {"extensions", "5;name=val\r\nhello\r\n3 ; a=\"q;\\\"x\"\t;b\r\nabc\r\n0;last\r\n\r\n", 0, 0,
     "helloabc", 0},
    {"trailers", "2\r\nhi\r\n0\r\nX-Trailer: 1\r\nChecksum:\tab c\r\n\r\nrest", 0, 4, "hi", 0},
    {"empty body", "0\r\n\r\n", 0, 0, "", 0},
    {"data with CR LF NUL inside", "6\r\na\r\n\0b\n\r\n0\r\n\r\n", 16, 0, "a\r\n\0b\n", 6},
    {"unfinished data", "5\r\nhel", 0, HTTP_PARTIAL, "hel", 0},
    {"unfinished trailer", "0\r\nX: 1\r\n", 0, HTTP_PARTIAL, "", 0},
    {"chunk size 2^53 accepted", "20000000000000\r\nab", 0, HTTP_PARTIAL, "ab", 0},

    {"bare LF after size", "5\nhello\r\n0\r\n\r\n", 0, HTTP_BAD, "", 0},
    {"CR CR after size", "5\r\rhello\r\n0\r\n\r\n", 0, HTTP_BAD, "", 0},
    {"CR CR after data", "5\r\nhello\r\r0\r\n\r\n", 0, HTTP_BAD, "hello", 0},
    {"CR CR after a trailer", "0\r\nX: 1\r\r\n\r\n", 0, HTTP_BAD, "", 0},
    {"bare LF after data", "5\r\nhello\n0\r\n\r\n", 0, HTTP_BAD, "hello", 0},
    {"data longer than size", "5\r\nhelloX\r\n0\r\n\r\n", 0, HTTP_BAD, "hello", 0},
    {"bare LF in last chunk", "0\n\r\n", 0, HTTP_BAD, "", 0},
    {"bare LF ending trailers", "0\r\n\n", 0, HTTP_BAD, "", 0},
    {"bare LF after a trailer", "0\r\nX: 1\n\r\n", 0, HTTP_BAD, "", 0},
    {"CR then not LF at the end", "0\r\n\rX", 0, HTTP_BAD, "", 0},
    {"empty size", "\r\nhello\r\n", 0, HTTP_BAD, "", 0},
    {"not hex", "g\r\n", 0, HTTP_BAD, "", 0},
    {"negative", "-5\r\n", 0, HTTP_BAD, "", 0},
    {"0x prefix", "0x5\r\nhello\r\n", 0, HTTP_BAD, "", 0},
    {"space after size", "5 \r\nhello\r\n0\r\n\r\n", 0, HTTP_BAD, "", 0},
    {"space before size", " 5\r\nhello\r\n", 0, HTTP_BAD, "", 0},
    {"size 2^53+1", "20000000000001\r\n", 0, HTTP_BAD, "", 0},
    {"size 2^64+", "10000000000000000\r\n", 0, HTTP_BAD, "", 0},
    {"size 2^72", "FFFFFFFFFFFFFFFFFF\r\n", 0, HTTP_BAD, "", 0},
    {"CTL in extension", "5;a\x01\r\nhello\r\n0\r\n\r\n", 0, HTTP_BAD, "", 0},
    {"bare LF in extension", "5;a\nhello\r\n0\r\n\r\n", 0, HTTP_BAD, "", 0},
    {"obs-fold in trailers", "0\r\nX: 1\r\n 2\r\n\r\n", 0, HTTP_BAD, "", 0},
    {"trailer without colon", "0\r\nfoo\r\n\r\n", 0, HTTP_BAD, "", 0},
    {"trailer empty name", "0\r\n: v\r\n\r\n", 0, HTTP_BAD, "", 0},
    {"NUL in trailer", "0\r\nX: \0\r\n\r\n", 11, HTTP_BAD, "", 0},
};
/* clang-format on */

/* Decode raw[0, n) in pieces: split(i) says how long piece i is. Each piece goes in an exact heap
 * copy; decoded bytes are collected in out. Returns the final code and, for >= 0, where the body
 * ended in *consumed. */
static int decode_pieces(const char *raw, size_t n, size_t (*split)(size_t left), char *out,
                         size_t *outlen, size_t *consumed)
{
    struct http_chunked st;
    http_chunked_init(&st);
    size_t off = 0;
    int rc = HTTP_PARTIAL;
    *outlen = 0;
    while (off < n) {
        size_t piece = split(n - off);
        char *buf = dup_exact(raw + off, piece);
        size_t len = piece;
        ssize_t r = http_chunked_decode(&st, buf, &len);
        CHECK(len <= piece, "decoded %zu bytes from a piece of %zu", len, piece);
        memcpy(out + *outlen, buf, len);
        *outlen += len;
        if (r >= 0) {
            CHECK(memcmp(buf + piece - (size_t)r, raw + off + piece - (size_t)r, (size_t)r) == 0,
                  "the %zd bytes after the body were changed", r);
            *consumed = off + piece - (size_t)r;
        }
        free(buf);
        off += piece;
        rc = (int)r;
        if (r != HTTP_PARTIAL)
            break;
    }
    return rc;
}

static size_t split_all(size_t left)
{
    return left;
}

static size_t split_one(size_t left)
{
    (void)left;
    return 1;
}

static size_t split_random(size_t left)
{
    size_t p = 1 + (size_t)(rng() % 7);
    if (rng() % 4 == 0)
        p = 0; /* empty calls are allowed too */
    return p < left ? p : left;
}

static void test_chunked(void)
{
    char out[256];
    for (size_t i = 0; i < sizeof chunk_cases / sizeof chunk_cases[0]; i++) {
        const struct chunk_case *c = &chunk_cases[i];
        size_t n = c->len ? c->len : strlen(c->raw);
        size_t outlen, consumed = 0;
        int rc = decode_pieces(c->raw, n, split_all, out, &outlen, &consumed);
        CHECK(rc == c->want, "%s: expected %s %d, got %s %d", c->what, code_name(c->want), c->want,
              code_name(rc), rc);
        size_t dlen = c->data_len ? c->data_len : strlen(c->data);
        CHECK_MEM(out, outlen, c->data, dlen);
        if (rc >= 0)
            CHECK_INT(consumed, n - (size_t)rc);

        size_t (*splits[])(size_t) = {split_one, split_random};
        for (int s = 0; s < 2; s++) {
            for (int round = 0; round < (s ? 50 : 1); round++) {
                char out2[256];
                size_t outlen2, consumed2 = 0;
                int rc2 = decode_pieces(c->raw, n, splits[s], out2, &outlen2, &consumed2);
                int same = (rc2 < 0 ? rc == rc2 : rc >= 0 && consumed2 == consumed) &&
                           outlen2 == outlen && memcmp(out2, out, outlen) == 0;
                CHECK(same, "%s: %s split: expected %s %d with %zu bytes out, got %s %d with %zu",
                      c->what, s ? "random" : "byte", code_name(rc), rc, outlen, code_name(rc2),
                      rc2, outlen2);
                if (!same)
                    break;
            }
        }
    }

    /* after the end all input is left over; after an error everything is an error */
    struct http_chunked st;
    http_chunked_init(&st);
    char buf[32] = "0\r\n\r\nabc";
    size_t len = 8;
    CHECK_INT(http_chunked_decode(&st, buf, &len), 3);
    CHECK_INT(len, 0);
    len = 3;
    CHECK_INT(http_chunked_decode(&st, buf, &len), 3);
    CHECK_INT(len, 0);
    http_chunked_init(&st);
    memcpy(buf, "x0\r\n\r\n", 6);
    len = 6;
    CHECK_INT(http_chunked_decode(&st, buf, &len), HTTP_BAD);
    memcpy(buf, "0\r\n\r\n", 5);
    len = 5;
    CHECK_INT(http_chunked_decode(&st, buf, &len), HTTP_BAD);

    /* limits: a size line of HTTP_CHUNK_LINE_MAX bytes is fine, one more is not; so for trailers */
    static char big[HTTP_CHUNK_TRAILER_MAX + 64];
    for (int extra = 0; extra < 2; extra++) {
        size_t n = HTTP_CHUNK_LINE_MAX + (size_t)extra;
        memset(big, '0', n);
        memcpy(big + n, "\r\n\r\n", 4);
        http_chunked_init(&st);
        len = n + 4;
        CHECK_INT(http_chunked_decode(&st, big, &len), extra ? HTTP_BAD : 0);
    }
    for (int extra = 0; extra < 2; extra++) {
        /* trailer section: "X:" + value + CRLF counted, final CRLF counted too */
        size_t n = HTTP_CHUNK_TRAILER_MAX + (size_t)extra;
        memcpy(big, "0\r\nX:", 5);
        memset(big + 5, 'v', n - 6);
        memcpy(big + n - 1, "\r\n\r\n", 4);
        http_chunked_init(&st);
        len = n + 3;
        CHECK_INT(http_chunked_decode(&st, big, &len), extra ? HTTP_BAD : 0);
    }
    memcpy(big, "0\r\nX:", 5); /* a trailer line alone longer than the limit, still unfinished */
    memset(big + 5, 'v', HTTP_CHUNK_TRAILER_MAX);
    http_chunked_init(&st);
    len = HTTP_CHUNK_TRAILER_MAX + 5;
    CHECK_INT(http_chunked_decode(&st, big, &len), HTTP_BAD);
}

/* ---- cookies --------------------------------------------------------------------------------- */

static void test_cookies(void)
{
    static const struct {
        const char *in, *want; /* pairs as name=value joined by '|' */
    } cases[] = {
        {"a=1; b=2", "a=1|b=2"},
        {"a=1;b=2", "a=1|b=2"},
        {"  a = 1 ;  ; b=2;", "a=1|b=2"},
        {"a=1;\tb=2\t", "a=1|b=2"},
        {"", ""},
        {";;; ;", ""},
        {"novalue; a=1", "a=1"},
        {"a=1; novalue", "a=1"},
        {"=bare; a=1", "a=1"},
        {" = ; a=1", "a=1"},
        {"a=; b=2", "a=|b=2"},
        {"q=\"x y\"; z=1", "q=\"x y\"|z=1"},
        {"a=b=c", "a=b=c"},
        {"a==", "a=="},
        {"_ga=GA1.2.3; authentik_proxy_3f9a=MTcw%3D%3D; theme=dark",
         "_ga=GA1.2.3|authentik_proxy_3f9a=MTcw%3D%3D|theme=dark"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char got[256] = "";
        size_t n = strlen(cases[i].in);
        char *copy = dup_exact(cases[i].in, n);
        const char *pos = copy, *end = copy + n;
        struct http_span name, value;
        int count = 0;
        while (http_cookie_next(&pos, end, &name, &value)) {
            CHECK(name.p >= copy && name.p + name.len <= end && value.p >= copy &&
                      value.p + value.len <= end && pos <= end,
                  "\"%s\": spans outside the input", cases[i].in);
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%.*s=%.*s", count ? "|" : "",
                     (int)name.len, name.p, (int)value.len, value.p);
            if (++count > 20)
                break;
        }
        CHECK(pos == end, "\"%s\": expected pos at the end", cases[i].in);
        CHECK(strcmp(got, cases[i].want) == 0, "cookies \"%s\": expected \"%s\", got \"%s\"",
              cases[i].in, cases[i].want, got);
        free(copy);
    }
}

/* ---- names, lists, targets, queries ---------------------------------------------------------- */

static void test_names(void)
{
    static const struct {
        int (*fn)(const char *, size_t, const char *);
        const char *fname, *pattern, *name;
        int want;
    } cases[] = {
        {http_name_match, "name_match", "X-Authentik-*", "x-authentik-username", 1},
        {http_name_match, "name_match", "X-Authentik-*", "X-Authentik-", 1},
        {http_name_match, "name_match", "X-Authentik-*", "X-Authentik", 0},
        {http_name_match, "name_match", "X-Authentik-*", "X-Authentix-uid", 0},
        {http_name_match, "name_match", "Authorization", "AUTHORIZATION", 1},
        {http_name_match, "name_match", "Authorization", "Authorization2", 0},
        {http_name_match, "name_match", "Authorization", "Authorizatio", 0},
        {http_name_match, "name_match", "*", "", 1},
        {http_name_match, "name_match", "*", "anything", 1},
        {http_name_match, "name_match", "a*b", "A*B", 1},
        {http_name_match, "name_match", "a*b", "axb", 0},
        {http_name_match, "name_match", "", "", 1},
        {http_name_match, "name_match", "", "a", 0},
        {http_name_match, "name_match", "\xc3\xa9*", "\xc3\x89x", 0},
        {http_cookie_match, "cookie_match", "authentik_proxy_*", "authentik_proxy_3f9a", 1},
        {http_cookie_match, "cookie_match", "authentik_proxy_*", "Authentik_proxy_3f9a", 0},
        {http_cookie_match, "cookie_match", "_oauth2_proxy", "_oauth2_proxy", 1},
        {http_cookie_match, "cookie_match", "_oauth2_proxy", "_OAUTH2_PROXY", 0},
        {http_cookie_match, "cookie_match", "_oauth2_proxy_*", "_oauth2_proxy_1", 1},
        {http_name_eq, "name_eq", "content-length", "Content-Length", 1},
        {http_name_eq, "name_eq", "content-length", "Content-Lengt", 0},
        {http_name_eq, "name_eq", "content-length", "Content-Length2", 0},
        {http_name_eq, "name_eq", "content-length", "Content_Length", 0},
        {http_name_eq, "name_eq", "a[", "A{", 0},
        {http_name_eq, "name_eq", "@", "`", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int got = cases[i].fn(cases[i].name, strlen(cases[i].name), cases[i].pattern);
        CHECK(got == cases[i].want, "%s(\"%s\", \"%s\"): expected %d, got %d", cases[i].fname,
              cases[i].name, cases[i].pattern, cases[i].want, got);
    }
    CHECK_INT(http_name_eq("a\0", 2, "a"), 0);

    static const char *hop[] = {"Connection",
                                "keep-alive",
                                "PROXY-AUTHENTICATE",
                                "Proxy-Authorization",
                                "Proxy-Connection",
                                "te",
                                "Trailer",
                                "Transfer-Encoding",
                                "upgrade"};
    static const char *not_hop[] = {"Keep-Alive2", "X-Authentik-Uid", "Tes",       "Cookie", "",
                                    "Trailers",    "Connectio",       "Set-Cookie"};
    for (size_t i = 0; i < sizeof hop / sizeof hop[0]; i++)
        CHECK(http_is_hop_by_hop(hop[i], strlen(hop[i])), "expected %s hop-by-hop", hop[i]);
    for (size_t i = 0; i < sizeof not_hop / sizeof not_hop[0]; i++)
        CHECK(!http_is_hop_by_hop(not_hop[i], strlen(not_hop[i])), "expected %s end-to-end",
              not_hop[i]);

    static const struct {
        const char *value, *name;
        int want;
    } conn[] = {
        {"close", "close", 1},
        {"Keep-Alive, Upgrade", "upgrade", 1},
        {" ,, close ,", "close", 1},
        {"closed", "close", 0},
        {"x-close", "close", 0},
        {"", "close", 0},
        {"clo se", "close", 0},
        {"upgrade,X-Secret", "x-secret", 1},
        {"close", "", 0},
    };
    for (size_t i = 0; i < sizeof conn / sizeof conn[0]; i++) {
        int got = http_connection_lists(conn[i].value, strlen(conn[i].value), conn[i].name,
                                        strlen(conn[i].name));
        CHECK(got == conn[i].want, "connection_lists(\"%s\", \"%s\"): expected %d, got %d",
              conn[i].value, conn[i].name, conn[i].want, got);
    }
}

static void test_targets(void)
{
    static const struct {
        const char *target, *path, *query; /* query NULL: no '?' */
    } cases[] = {
        {"/a/b?c=d#f", "/a/b", "c=d"}, {"/a", "/a", NULL},   {"/a?", "/a", ""},
        {"/a#x?y", "/a", NULL},        {"?x", "", "x"},      {"", "", NULL},
        {"/a?b?c", "/a", "b?c"},       {"/a?b#", "/a", "b"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct http_span path, query;
        size_t n = strlen(cases[i].target);
        int got = http_target_split(cases[i].target, n, &path, &query);
        CHECK(got == (cases[i].query != NULL), "split(\"%s\"): expected %d, got %d",
              cases[i].target, cases[i].query != NULL, got);
        CHECK_MEM(path.p, path.len, cases[i].path, strlen(cases[i].path));
        if (cases[i].query)
            CHECK_MEM(query.p, query.len, cases[i].query, strlen(cases[i].query));
        else
            CHECK(query.p == NULL && query.len == 0, "split(\"%s\"): expected no query",
                  cases[i].target);
    }

    static const char cb[] = "X-authentik-auth-callback";
    static const struct {
        const char *query, *key, *value;
        int want;
    } q[] = {
        {"X-authentik-auth-callback=true", cb, "true", 1},
        {"a=1&X-authentik-auth-callback=TRUE", cb, "true", 1},
        {"x-authentik-auth-callback=true", cb, "true", 0},
        {"X-authentik-auth-callback=true1", cb, "true", 0},
        {"X-authentik-auth-callback=tru", cb, "true", 0},
        {"X-authentik-auth-callback=false&X-authentik-auth-callback=true", cb, "true", 1},
        {"X%2Dauthentik-auth-callback=%74rue", cb, "true", 1},
        {"X-authentik-auth-callback=%54RUE", cb, "true", 1},
        {"X-authentik-auth-callback=tr%ue", cb, "true", 0},
        {"X-authentik-auth-callback=true%", cb, "true", 0},
        {"X-authentik-auth-callback=true%4", cb, "true", 0},
        {"X-authentik-auth-callback=true;a=b", cb, "true", 0},
        {"a=b;c&X-authentik-auth-callback=true", cb, "true", 1},
        {"a=1;b", "a", NULL, 0},
        {"a=%zz", "a", NULL, 0},
        {"a=%zz", "a", "%zz", 0},
        {"a=%zz&a=1", "a", "1", 1},
        {"%zz=1", "%zz", NULL, 0},
        {"X-authentik-auth-callback", cb, NULL, 1},
        {"X-authentik-auth-callback", cb, "true", 0},
        {"X-authentik-auth-callback", cb, "", 1},
        {"X-authentik-auth-callback=", cb, NULL, 1},
        {"X-authentik-auth-callbac=true", cb, NULL, 0},
        {"&&X-authentik-logout=true&", "X-authentik-logout", "true", 1},
        {"a=b+c", "a", "b c", 1},
        {"a=b%20c", "a", "B C", 1},
        {"a%3Db=c", "a=b", "c", 1},
        {"a+b=1", "a b", "1", 1},
        {"", "a", NULL, 0},
        {"a", "a", NULL, 1},
        {"=x", "", "x", 1},
    };
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
        size_t n = strlen(q[i].query);
        char *copy = dup_exact(q[i].query, n);
        int got = http_query_has(copy, n, q[i].key, q[i].value);
        free(copy);
        CHECK(got == q[i].want, "query_has(\"%s\", \"%s\", \"%s\"): expected %d, got %d",
              q[i].query, q[i].key, q[i].value ? q[i].value : "(any)", q[i].want, got);
    }
}

int main(void)
{
    test_requests();
    test_requests_in_pieces();
    test_request_bytewise_limit();
    test_pipeline();
    test_responses();
    test_chunked();
    test_cookies();
    test_names();
    test_targets();
    return check_done("test_http");
}
