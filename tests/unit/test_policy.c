/*
 * test_policy.c — what a forward-auth request means (credential, key scope, sign-out and login
 * markers, header fallbacks, ambiguity), the request sent to the IdP, the identity picked from its
 * answer, lifetimes, and the bytes of each answer.
 */
#include <errno.h>
#include <stdlib.h>

#include "check.h"
#include "policy.h"

static struct http_hdr hdrs[64];
static struct policy_req pr;

static struct config *cfg_of(const char *preset, const char *scope)
{
    static struct config cfg;
    char *argv[] = {"authcached",
                    "--upstream",
                    "http://idp.internal:9000/base",
                    "--preset",
                    (char *)preset,
                    scope ? "--key-scope" : NULL,
                    (char *)scope,
                    NULL};
    char err[256];
    char *envp[] = {NULL};

    if (config_parse(&cfg, scope ? 7 : 5, argv, envp, err, sizeof(err)) != 0) {
        fprintf(stderr, "config_parse: %s\n", err);
        exit(1);
    }
    return &cfg;
}

/* Parse a request given as header lines; the buffer must outlive the result. */
static struct http_req parse(const char *raw)
{
    struct http_req req = {.hdrs = hdrs, .hdrs_cap = 64};
    int rc = http_parse_request(raw, strlen(raw), 0, 65536, &req);

    if (rc <= 0) {
        fprintf(stderr, "test request did not parse (%d): %s\n", rc, raw);
        exit(1);
    }
    return req;
}

#define SPAN_IS(p, len, want) CHECK_MEM(p, len, want, strlen(want))

static void test_credentials(void)
{
    struct config *cfg = cfg_of("authentik", NULL);
    struct http_req r;

    r = parse("GET /outpost.goauthentik.io/auth/traefik HTTP/1.1\r\nHost: 127.0.0.1:9300\r\n"
              "Cookie: foo=1; authentik_proxy_3f2a1b0c=SESSION; bar=2\r\n"
              "X-Forwarded-Host: app1.test\r\nX-Forwarded-Uri: /x?y=1\r\n\r\n");
    policy_classify(cfg, &r, &pr);
    CHECK_INT(pr.kind, POLICY_CACHEABLE);
    CHECK_INT(pr.q.cred_kind, SHM_CRED_COOKIE);
    SPAN_IS(pr.q.cred, pr.q.cred_len, "SESSION");
    SPAN_IS(pr.q.host, pr.q.host_len, "app1.test");
    SPAN_IS(pr.q.auth_path, pr.q.auth_path_len, "/outpost.goauthentik.io/auth/traefik");
    CHECK_INT(pr.q.scope_uri, 0);

    /* Empty session cookie: no credential; Authorization is then the credential. */
    r = parse("GET /a HTTP/1.1\r\nCookie: authentik_proxy_x=\r\nAuthorization: Basic dTpw\r\n"
              "X-Forwarded-Host: app1.test\r\n\r\n");
    policy_classify(cfg, &r, &pr);
    CHECK_INT(pr.kind, POLICY_CACHEABLE);
    CHECK_INT(pr.q.cred_kind, SHM_CRED_AUTHORIZATION);
    SPAN_IS(pr.q.cred, pr.q.cred_len, "Basic dTpw");

    /* Only unrelated cookies: bypass. */
    r = parse("GET /a HTTP/1.1\r\nCookie: foo=1\r\nX-Forwarded-Host: app1.test\r\n\r\n");
    policy_classify(cfg, &r, &pr);
    CHECK_INT(pr.kind, POLICY_BYPASS);
    CHECK_INT(pr.has_cred, 0);

    /* oauth2-proxy splits big sessions: every part, in name order, whatever the header order. Its
     * preset keys by uri (skip routes and trusted IPs answer 202 without the group checks). */
    cfg = cfg_of("oauth2-proxy", NULL);
    r = parse("GET /oauth2/auth?allowed_groups=admins HTTP/1.1\r\n"
              "Cookie: _oauth2_proxy_1=BBB; x=9\r\nCookie: _oauth2_proxy_0=AAA\r\n"
              "X-Forwarded-Host: app.test\r\n\r\n");
    policy_classify(cfg, &r, &pr);
    CHECK_INT(pr.kind, POLICY_CACHEABLE);
    SPAN_IS(pr.q.cred, pr.q.cred_len, "_oauth2_proxy_0=AAA; _oauth2_proxy_1=BBB");
    SPAN_IS(pr.q.auth_path, pr.q.auth_path_len, "/oauth2/auth?allowed_groups=admins");
}

static void test_path_normalize(void)
{
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"/", "/"},
        {"/a/b", "/a/b"},
        {"/a/./b", "/a/b"},
        {"/a/b/..", "/a/"},
        {"/a/b/../c", "/a/c"},
        {"/..", "/"},
        {"/../../a", "/a"},
        {"/a/.", "/a/"},
        {"/a//b", "/a//b"},
        {"/%61%2Fb", "/a%2Fb"}, /* an escaped "/" stays escaped: it is not a separator */
        {"/%2e%2E/x", "/x"},
        {"/a/%2e", "/a/"},
        {"/%7Euser", "/~user"},
        {"/%zz", "/%zz"},
        {"/a%", "/a%"},
    };
    char out[64];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int n = policy_path_normalize(cases[i].in, strlen(cases[i].in), out, sizeof(out));
        CHECK(n >= 0 && (size_t)n == strlen(cases[i].want) && memcmp(out, cases[i].want, n) == 0,
              "normalize %s: expected %s, got %.*s", cases[i].in, cases[i].want, n < 0 ? 0 : n,
              out);
    }
    CHECK_INT(policy_path_normalize("a/b", 3, out, sizeof(out)), -1);
    CHECK_INT(policy_path_normalize("", 0, out, sizeof(out)), -1);
    CHECK_INT(policy_path_normalize("/abcdef", 7, out, 4), -1);
}

static void test_markers(void)
{
    struct config *cfg = cfg_of("authentik", NULL);
    struct http_req r;

    r = parse(
        "GET /outpost.goauthentik.io/auth/traefik HTTP/1.1\r\nCookie: authentik_proxy_a=S\r\n"
        "X-Forwarded-Host: app1.test\r\nX-Forwarded-Uri: /outpost.goauthentik.io/sign_out\r\n\r\n");
    policy_classify(cfg, &r, &pr);
    CHECK_INT(pr.kind, POLICY_SIGNOUT);
    CHECK_INT(pr.has_cred, 1);
    /* The sign-out path is matched exactly, on the path as a server resolves it: nothing below
     * it, nothing that only begins like it, and no ".." that leads out of it. */
    {
        static const struct {
            const char *uri;
            int signout;
        } cases[] = {
            {"/outpost.goauthentik.io/sign_outside", 0},
            {"/outpost.goauthentik.io/sign_out/x", 0},
            {"/outpost.goauthentik.io/sign_out/../../admin", 0},
            {"/outpost.goauthentik.io/sign_out/%2e%2e/%2E%2E/admin", 0},
            {"/outpost.goauthentik.io/sign_out?rd=/x", 1},
            {"/outpost.goauthentik.io/./sign_out", 1},
            {"/x/../outpost.goauthentik.io/sign_out", 1},
            {"/outpost.goauthentik.io/sign%5fout", 1},
            {"/outpost.goauthentik.io/sign_out/", 0},
            {"/OUTPOST.goauthentik.io/sign_out", 0},
        };
        char raw[512];
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            snprintf(raw, sizeof(raw),
                     "GET /a HTTP/1.1\r\nCookie: authentik_proxy_a=S\r\nX-Forwarded-Host: h\r\n"
                     "X-Forwarded-Uri: %s\r\n\r\n",
                     cases[i].uri);
            r = parse(raw);
            policy_classify(cfg, &r, &pr);
            CHECK(pr.kind == (cases[i].signout ? POLICY_SIGNOUT : POLICY_CACHEABLE),
                  "%s: expected %s, got kind %d", cases[i].uri,
                  cases[i].signout ? "sign-out" : "cacheable", pr.kind);
        }
    }
    /* nginx snippets send only an absolute X-Original-URL: sign-out still seen, host taken. */
    r = parse("GET /a HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: authentik_proxy_a=S\r\n"
              "X-Original-URL: https://app9.test/outpost.goauthentik.io/sign_out?rd=/\r\n\r\n");
    policy_classify(cfg, &r, &pr);
    CHECK_INT(pr.kind, POLICY_SIGNOUT);
    SPAN_IS(pr.q.host, pr.q.host_len, "app9.test");
    r = parse("GET /a HTTP/1.1\r\nCookie: authentik_proxy_a=S\r\nX-Forwarded-Host: h\r\n"
              "X-Forwarded-Uri: /cb?X-authentik-auth-callback=true&code=x\r\n\r\n");
    policy_classify(cfg, &r, &pr);
    CHECK_INT(pr.kind, POLICY_LOGIN_FLOW);
    r = parse("GET /a HTTP/1.1\r\nCookie: authentik_proxy_a=S\r\nX-Forwarded-Host: h\r\n"
              "X-Forwarded-Uri: /?X-authentik-logout=TRUE\r\n\r\n");
    policy_classify(cfg, &r, &pr);
    CHECK_INT(pr.kind, POLICY_LOGOUT);
    CHECK_INT(pr.ncookies, 0); /* one cookie: the credential is its value */
    /* Two session cookies: the credential is both, but the IdP ends the session of the one it
     * reads, held under that cookie alone, so each value is kept for the purge (the
     * differential test, seed 1: a sign-out with two authentik_proxy_ cookies left the session
     * answered from the cache). */
    r = parse("GET /a HTTP/1.1\r\nCookie: authentik_proxy_zzzz=B; authentik_proxy_a=S\r\n"
              "X-Forwarded-Host: h\r\nX-Forwarded-Uri: /outpost.goauthentik.io/sign_out\r\n\r\n");
    policy_classify(cfg, &r, &pr);
    CHECK_INT(pr.kind, POLICY_SIGNOUT);
    CHECK_INT(pr.ncookies, 2);
    SPAN_IS(pr.cookie_values[0].p, pr.cookie_values[0].len, "S");
    SPAN_IS(pr.cookie_values[1].p, pr.cookie_values[1].len, "B");
}

static void test_scope_and_ambiguity(void)
{
    struct config *cfg = cfg_of("authelia", NULL); /* key scope uri */
    struct http_req r;

    r = parse("GET /api/authz/forward-auth HTTP/1.1\r\nCookie: authelia_session=S\r\n"
              "X-Forwarded-Host: app.test\r\nX-Forwarded-Method: POST\r\n"
              "X-Forwarded-Uri: /admin/delete?id=3\r\n\r\n");
    policy_classify(cfg, &r, &pr);
    CHECK_INT(pr.kind, POLICY_CACHEABLE);
    CHECK_INT(pr.q.scope_uri, 1);
    SPAN_IS(pr.q.method, pr.q.method_len, "POST");
    SPAN_IS(pr.q.uri_path, pr.q.uri_path_len, "/admin/delete?id=3"); /* rules match the query */
    /* the cookie's name, and which fields were sent (not the usual four: no X-Forwarded-Proto) */
    CHECK_INT(pr.q.inputs_len, 5 + 16 + 6);
    /* The scheme is an input (Authelia answers 2xx only for https or wss): an answer for https
     * is not one for http (the differential test, authelia seed 1 request 3713: a cached 200 for
     * a target the IdP refused with 401 for its http scheme). */
    {
        char inputs[2][256];
        size_t len[2];
        for (int i = 0; i < 2; i++) {
            char raw[256];
            snprintf(raw, sizeof(raw),
                     "GET /api/verify HTTP/1.1\r\nCookie: authelia_session=S\r\n"
                     "X-Forwarded-Host: app.test\r\nX-Forwarded-Proto: %s\r\n"
                     "X-Forwarded-Method: GET\r\nX-Forwarded-Uri: /public/x\r\n\r\n",
                     i ? "http" : "https");
            r = parse(raw);
            policy_classify(cfg, &r, &pr);
            CHECK_INT(pr.kind, POLICY_CACHEABLE);
            len[i] = pr.q.inputs_len < sizeof(inputs[i]) ? pr.q.inputs_len : sizeof(inputs[i]);
            memcpy(inputs[i], pr.q.inputs, len[i]);
        }
        CHECK(len[0] != len[1] || memcmp(inputs[0], inputs[1], len[0]) != 0,
              "X-Forwarded-Proto https and http: expected other key inputs, got the same");
        CHECK_INT(len[0], 5 + 16); /* https: the key the client library computes too */
    }
    /* Which fields were sent is an input: Authelia's auth-request endpoint refuses a check
     * without X-Original-URL (400) that agrees on every value with one that had it (the
     * differential test, authelia seed 11 request 10451: a cached 200 for it). */
    {
        char inputs[2][256];
        size_t len[2];
        for (int i = 0; i < 2; i++) {
            char raw[512];
            snprintf(raw, sizeof(raw),
                     "GET /api/authz/auth-request HTTP/1.1\r\nCookie: authelia_session=S\r\n"
                     "X-Forwarded-Host: app.test\r\nX-Forwarded-Proto: https\r\n"
                     "X-Forwarded-Method: POST\r\nX-Forwarded-Uri: /index.html\r\n%s\r\n",
                     i ? ""
                       : "X-Original-URL: https://app.test/index.html\r\n"
                         "X-Original-Method: POST\r\n");
            r = parse(raw);
            policy_classify(cfg, &r, &pr);
            CHECK_INT(pr.kind, POLICY_CACHEABLE);
            len[i] = pr.q.inputs_len < sizeof(inputs[i]) ? pr.q.inputs_len : sizeof(inputs[i]);
            memcpy(inputs[i], pr.q.inputs, len[i]);
        }
        CHECK(len[0] != len[1] || memcmp(inputs[0], inputs[1], len[0]) != 0,
              "with and without X-Original-URL: expected other key inputs, got the same");
    }
    /* Authelia's nginx snippet: X-Original-URL and X-Original-Method only. */
    r = parse("GET /api/verify HTTP/1.1\r\nHost: authelia:9091\r\nCookie: authelia_session=S\r\n"
              "X-Original-URL: https://app.test/admin\r\nX-Original-Method: GET\r\n\r\n");
    policy_classify(cfg, &r, &pr);
    CHECK_INT(pr.kind, POLICY_CACHEABLE);
    SPAN_IS(pr.q.host, pr.q.host_len, "app.test");
    SPAN_IS(pr.q.uri_path, pr.q.uri_path_len, "/admin");
    SPAN_IS(pr.q.method, pr.q.method_len, "GET");
    /* nginx passes the client's own headers on: a client-sent X-Forwarded-Uri (or -Host, or
     * -Method) that disagrees with the X-Original-URL the IdP decides on is never cached. */
    {
        static const char *const forged[] = {
            "X-Forwarded-Uri: /public\r\n",
            "X-Original-URI: /public\r\n",
            "X-Forwarded-Host: other.test\r\n",
            "X-Forwarded-Method: POST\r\n",
        };
        char raw[512];
        for (size_t i = 0; i < sizeof(forged) / sizeof(forged[0]); i++) {
            snprintf(raw, sizeof(raw),
                     "GET /api/authz/auth-request HTTP/1.1\r\nCookie: authelia_session=S\r\n%s"
                     "X-Original-URL: https://app.test/admin\r\nX-Original-Method: GET\r\n\r\n",
                     forged[i]);
            r = parse(raw);
            policy_classify(cfg, &r, &pr);
            CHECK(pr.kind == POLICY_BYPASS, "%s beside X-Original-URL: expected bypass, got %d",
                  forged[i], pr.kind);
        }
        /* ... while the same facts said twice alike are fine (host names case-insensitively) */
        r = parse("GET /api/authz/auth-request HTTP/1.1\r\nCookie: authelia_session=S\r\n"
                  "X-Forwarded-Uri: /admin\r\nX-Forwarded-Host: APP.test\r\n"
                  "X-Forwarded-Method: GET\r\nX-Original-URL: https://app.test/admin\r\n"
                  "X-Original-Method: GET\r\n\r\n");
        policy_classify(cfg, &r, &pr);
        CHECK_INT(pr.kind, POLICY_CACHEABLE);
    }
    /* Network rules: the client address Authelia reads is part of the key; and so is every
     * credential it reads (Proxy-Authorization and Authorization before the cookie). */
    {
        struct shm_query q0;
        r = parse("GET /api/authz/forward-auth HTTP/1.1\r\nCookie: authelia_session=S\r\n"
                  "X-Forwarded-Host: app.test\r\nX-Forwarded-Method: GET\r\n"
                  "X-Forwarded-Uri: /\r\nX-Forwarded-For: 10.0.0.1, 192.0.2.7\r\n"
                  "Proxy-Authorization: Basic YTpi\r\n\r\n");
        policy_classify(cfg, &r, &pr);
        CHECK_INT(pr.kind, POLICY_CACHEABLE);
        CHECK_INT(pr.q.cred_kind, SHM_CRED_COOKIE);
        q0 = pr.q;
        CHECK(q0.inputs_len == 5 + 16 + 5 + 10 + 5 + 19 + 6 && q0.inputs[0] == SHM_IN_COOKIE_NAME &&
                  q0.inputs[5 + 16] == SHM_IN_PROXY_AUTHORIZATION &&
                  q0.inputs[5 + 16 + 5 + 10] == SHM_IN_FORWARDED_FOR,
              "inputs: the cookie's name, Proxy-Authorization, X-Forwarded-For (%zu bytes)",
              q0.inputs_len);
        r = parse("GET /api/authz/forward-auth HTTP/1.1\r\nX-Forwarded-Host: app.test\r\n"
                  "X-Forwarded-Method: GET\r\nX-Forwarded-Uri: /\r\n"
                  "Proxy-Authorization: Basic YTpi\r\n\r\n");
        policy_classify(cfg, &r, &pr);
        CHECK_INT(pr.kind, POLICY_CACHEABLE);
        CHECK_INT(pr.q.cred_kind, SHM_CRED_PROXY_AUTHORIZATION);
        CHECK_INT(pr.q.inputs_len, 6); /* the fields sent: no X-Forwarded-Proto */
    }
    /* Without a path or method the key holds them empty, as the IdP gets them; the auth
     * request's own method, when not GET, is an input too. */
    r = parse(
        "GET /api/verify HTTP/1.1\r\nCookie: authelia_session=S\r\nX-Forwarded-Host: a\r\n\r\n");
    policy_classify(cfg, &r, &pr);
    CHECK_INT(pr.kind, POLICY_CACHEABLE);
    CHECK_INT(pr.q.method_len + pr.q.uri_path_len, 0);
    CHECK_INT(pr.q.inputs_len, 5 + 16 + 6); /* the cookie's name, the fields sent */
    r = parse(
        "HEAD /api/verify HTTP/1.1\r\nCookie: authelia_session=S\r\nX-Forwarded-Host: a\r\n\r\n");
    policy_classify(cfg, &r, &pr);
    CHECK(pr.q.inputs_len == 21 + 9 + 6 && pr.q.inputs[21] == SHM_IN_AUTH_METHOD,
          "HEAD as an input");

    /* Two different X-Forwarded-Host values: ambiguous, never cached. Equal duplicates are fine. */
    cfg = cfg_of("authentik", NULL);
    r = parse("GET /a HTTP/1.1\r\nCookie: authentik_proxy_a=S\r\nX-Forwarded-Host: app1.test\r\n"
              "X-Forwarded-Host: app2.test\r\n\r\n");
    policy_classify(cfg, &r, &pr);
    CHECK_INT(pr.kind, POLICY_BYPASS);
    r = parse("GET /a HTTP/1.1\r\nCookie: authentik_proxy_a=S\r\nX-Forwarded-Host: app1.test\r\n"
              "X-Forwarded-Host: app1.test\r\n\r\n");
    policy_classify(cfg, &r, &pr);
    CHECK_INT(pr.kind, POLICY_CACHEABLE);
}

static void test_upstream_request(void)
{
    struct config *cfg = cfg_of("authentik", NULL);
    char out[4096];
    struct http_req r = parse("GET /outpost.goauthentik.io/auth/traefik?x=1 HTTP/1.1\r\n"
                              "Host: 127.0.0.1:9300\r\nConnection: keep-alive, X-Drop\r\n"
                              "X-Drop: secret-hop\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n"
                              "Content-Length: 0\r\nCookie: authentik_proxy_a=S\r\n"
                              "X-Forwarded-Uri: /orig\r\nX-Forwarded-Host: app1.test\r\n\r\n");
    size_t n = policy_upstream_request(cfg, &r, out, sizeof(out));
    const char *want = "GET /base/outpost.goauthentik.io/auth/traefik?x=1 HTTP/1.1\r\n"
                       "Host: idp.internal:9000\r\nCookie: authentik_proxy_a=S\r\n"
                       "X-Forwarded-Uri: /orig\r\nX-Forwarded-Host: app1.test\r\n\r\n";
    CHECK_MEM(out, n, want, strlen(want));
    CHECK_INT(policy_upstream_request(cfg, &r, out, 40), 0);
    /* Proxy-Authorization is the client's credential for the IdP (Authelia), not hop-by-hop. */
    r = parse(
        "GET /api/authz/forward-auth HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic YTpi\r\n"
        "Proxy-Connection: keep-alive\r\n\r\n");
    n = policy_upstream_request(cfg, &r, out, sizeof(out));
    CHECK(n > 0 && memmem(out, n, "Proxy-Authorization: Basic YTpi\r\n", 33) &&
              !memmem(out, n, "Proxy-Connection", 16),
          "Proxy-Authorization forwarded, Proxy-Connection not: %.*s", (int)n, out);
}

static void test_identity_and_lifetimes(void)
{
    struct config *cfg = cfg_of("authentik", NULL);
    const char *raw = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nSet-Cookie: a=b\r\n"
                      "X-authentik-username: alice\r\nX-Other: no\r\nConnection: close\r\n"
                      "X-authentik-jwt: eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjE4MDAwMDAwMDB9.c2ln\r\n"
                      "x-authentik-groups: a|b\r\nX-Authcache: hit\r\nDate: Fri, 04 Dec 2026\r\n"
                      "Server: outpost\r\nContent-Type: text/plain\r\nGAP-Auth: alice@x\r\n"
                      "Cache-Control: no-cache\r\nETag: \"1\"\r\nVary: Cookie\r\n\r\n";
    struct http_resp resp = {.hdrs = hdrs, .hdrs_cap = 64};
    struct policy_identity id;
    char out[1024];

    CHECK(http_parse_response(raw, strlen(raw), 65536, &resp) > 0, "response parses");
    CHECK_INT(policy_identity(cfg, &resp, out, sizeof(out), &id), 0);
    /* every header but those that describe the response (Content-Length, Set-Cookie, X-Authcache)
     * and hop-by-hop ones (Connection) */
    const char *want = "X-authentik-username: alice\r\nX-Other: no\r\n"
                       "X-authentik-jwt: eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjE4MDAwMDAwMDB9.c2ln\r\n"
                       "x-authentik-groups: a|b\r\nGAP-Auth: alice@x\r\n";
    CHECK_MEM(out, id.hdrs_len, want, strlen(want));
    SPAN_IS(id.user.p, id.user.len, "alice");
    CHECK_INT(id.jwt_exp_ms, 1800000000000LL);
    CHECK_INT(id.has_sid, 0); /* a JWT without a sid claim */
    CHECK_INT(policy_identity(cfg, &resp, out, 20, &id), -E2BIG);

    /* The session is the X-authentik-jwt's sid, not another JWT's: sids_key("s-123"). */
    const char *with_sid =
        "HTTP/1.1 200 OK\r\nX-authentik-username: alice\r\n"
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzaWQiOiJvdGhlciJ9.c2ln\r\n"
        "X-Authentik-JWT: eyJhbGciOiJIUzI1NiJ9.eyJzaWQiOiJzLTEyMyIsImV4cCI6MTgwMDAwMDAwMH0.c2ln\r\n"
        "\r\n";
    resp = (struct http_resp){.hdrs = hdrs, .hdrs_cap = 64};
    CHECK(http_parse_response(with_sid, strlen(with_sid), 65536, &resp) > 0, "response parses");
    CHECK_INT(policy_identity(cfg, &resp, out, sizeof(out), &id), 0);
    CHECK_INT(id.has_sid, 1);
    CHECK(id.sid_key == UINT64_C(0xbcf61dbb52ee702d), "sid key %016llx",
          (unsigned long long)id.sid_key);
    CHECK_INT(id.jwt_exp_ms, 1800000000000LL);

    struct shm_answer a;
    int64_t now = 1799990000000LL;
    policy_lifetimes(cfg, now, now - 1000, 1800000000000LL, &a);
    CHECK_INT(a.confirmed_ms, now);
    CHECK_INT(a.fresh_until_ms, now + 30000);
    CHECK_INT(a.session_end_ms, 1800000000000LL); /* the JWT ends before first_seen + 24h */
    policy_lifetimes(cfg, now, now - 1000, 0, &a);
    CHECK_INT(a.session_end_ms, now - 1000 + 86400000LL);
    a.confirmed_ms = now - 10 * 60000;
    CHECK(policy_stale_ok(cfg, &a, now), "within the 15m outage grace");
    CHECK(!policy_stale_ok(cfg, &a, now + 6 * 60000), "past the outage grace");
    a.session_end_ms = now;
    CHECK(!policy_stale_ok(cfg, &a, now), "never past the session end");
}

static void test_answers(void)
{
    char out[2048];
    struct policy_conn keep = {1, 0, 0}, close10 = {0, 1, 0}, head = {1, 0, 1};
    size_t n = policy_answer_identity(&keep, "X-A: 1\r\n", 8, "hit", out, sizeof(out));
    const char *want = "HTTP/1.1 200 OK\r\nX-A: 1\r\nX-Authcache: hit\r\nContent-Length: 0\r\n\r\n";
    CHECK_MEM(out, n, want, strlen(want));
    n = policy_answer_unavailable(&close10, "timed out", 3, out, sizeof(out));
    out[n] = 0;
    CHECK(strstr(out, "HTTP/1.1 503 ") == out && strstr(out, "Retry-After: 3\r\n") &&
              strstr(out, "Connection: close\r\n") &&
              strstr(out, "\r\n\r\nauthcache: identity "
                          "provider unavailable: timed out\n"),
          "503 answer: %s", out);
    const char *raw = "HTTP/1.1 302 Found\r\nLocation: /login\r\nSet-Cookie: s=1\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n";
    struct http_resp resp = {.hdrs = hdrs, .hdrs_cap = 64};
    CHECK(http_parse_response(raw, strlen(raw), 65536, &resp) > 0, "302 parses");
    n = policy_answer_passthrough(&keep, &resp, "body", 4, "miss", out, sizeof(out));
    want = "HTTP/1.1 302 Found\r\nLocation: /login\r\nSet-Cookie: s=1\r\n"
           "Cache-Control: no-store\r\nX-Authcache: miss\r\nContent-Length: 4\r\n\r\nbody";
    CHECK_MEM(out, n, want, strlen(want));
    /* HEAD: the IdP's own head, its Content-Length passed on, no body, in every answer */
    raw = "HTTP/1.1 302 Found\r\nLocation: /login\r\nContent-Length: 42\r\n\r\n";
    CHECK(http_parse_response(raw, strlen(raw), 65536, &resp) > 0, "HEAD 302 parses");
    n = policy_answer_passthrough(&head, &resp, "", 0, "miss", out, sizeof(out));
    want = "HTTP/1.1 302 Found\r\nLocation: /login\r\nContent-Length: 42\r\n"
           "Cache-Control: no-store\r\nX-Authcache: miss\r\n\r\n";
    CHECK_MEM(out, n, want, strlen(want));
    n = policy_answer_unavailable(&head, "timed out", 3, out, sizeof(out));
    CHECK(n > 4 && memcmp(out + n - 4, "\r\n\r\n", 4) == 0 &&
              memmem(out, n, "Content-Length: ", 16),
          "HEAD 503: a head ending the answer, with the GET's Content-Length: %.*s", (int)n, out);
    n = policy_answer_status(&head, 400, "malformed request", out, sizeof(out));
    CHECK(n > 4 && memcmp(out + n - 4, "\r\n\r\n", 4) == 0 &&
              memmem(out, n, "Content-Length: 18", 18),
          "HEAD 400: no body: %.*s", (int)n, out);
}

/* Every branch of the verdict on an IdP answer, including the boundaries of 2xx and 5xx. */
static void test_on_idp_answer(void)
{
    static const struct {
        enum policy_kind kind;
        int cacheable, status, names_user;
        enum policy_verdict want;
    } cases[] = {
        {POLICY_CACHEABLE, 1, 200, 1, POLICY_DO_STORE},
        {POLICY_CACHEABLE, 1, 204, 1, POLICY_DO_STORE},
        {POLICY_CACHEABLE, 1, 299, 1, POLICY_DO_STORE},
        {POLICY_CACHEABLE, 1, 200, 0, POLICY_DO_PASS},      /* an open path: never stored */
        {POLICY_CACHEABLE, 1, 302, 0, POLICY_DO_DROP_PASS}, /* a refusal drops what is held */
        {POLICY_CACHEABLE, 1, 401, 0, POLICY_DO_DROP_PASS},
        {POLICY_CACHEABLE, 1, 403, 1, POLICY_DO_DROP_PASS}, /* names_user means nothing off 2xx */
        {POLICY_CACHEABLE, 1, 199, 0, POLICY_DO_DROP_PASS},
        {POLICY_CACHEABLE, 1, 300, 1, POLICY_DO_DROP_PASS},
        {POLICY_CACHEABLE, 1, 499, 0, POLICY_DO_DROP_PASS},
        {POLICY_CACHEABLE, 1, 500, 1, POLICY_DO_FAIL},
        {POLICY_CACHEABLE, 1, 503, 0, POLICY_DO_FAIL},
        {POLICY_CACHEABLE, 1, 599, 0, POLICY_DO_FAIL},
        {POLICY_BYPASS, 0, 200, 1, POLICY_DO_PASS}, /* no credential: never stored */
        {POLICY_BYPASS, 0, 302, 0, POLICY_DO_PASS},
        {POLICY_BYPASS, 0, 502, 0, POLICY_DO_FAIL},
        {POLICY_LOGIN_FLOW, 0, 200, 1, POLICY_DO_PASS}, /* the callback: never stored */
        {POLICY_LOGIN_FLOW, 0, 302, 0, POLICY_DO_PASS},
        {POLICY_LOGOUT, 0, 200, 1, POLICY_DO_PASS},
        {POLICY_LOGOUT, 0, 500, 0, POLICY_DO_FAIL},
        {POLICY_SIGNOUT, 0, 200, 1, POLICY_DO_SIGNOUT_PURGE},
        {POLICY_SIGNOUT, 0, 200, 0, POLICY_DO_PASS}, /* the IdP's own verdict, passed on */
        {POLICY_SIGNOUT, 0, 302, 0, POLICY_DO_PASS},
        {POLICY_SIGNOUT, 0, 302, 1, POLICY_DO_PASS},
        {POLICY_SIGNOUT, 0, 500, 1, POLICY_DO_FAIL},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        enum policy_verdict v = policy_on_idp_answer(cases[i].kind, cases[i].cacheable,
                                                     cases[i].status, cases[i].names_user);
        CHECK(v == cases[i].want,
              "case %zu (kind %d, status %d, user %d): expected verdict %d, got %d", i,
              cases[i].kind, cases[i].status, cases[i].names_user, cases[i].want, v);
    }
}

/* Refresh ahead is a preset's: off for oauth2-proxy, whose /oauth2/auth may refresh the session
 * with a Set-Cookie a background call would lose. */
static void test_background_revalidation_by_preset(void)
{
    CHECK_INT(cfg_of("authentik", NULL)->background_revalidation, 1);
    CHECK_INT(cfg_of("oauth2-proxy", NULL)->background_revalidation, 0);
    CHECK_INT(cfg_of("authelia", NULL)->background_revalidation, 1);
}

int main(void)
{
    test_background_revalidation_by_preset();
    test_on_idp_answer();
    test_path_normalize();
    test_credentials();
    test_markers();
    test_scope_and_ambiguity();
    test_upstream_request();
    test_identity_and_lifetimes();
    test_answers();
    return check_done("test_policy");
}
