/*
 * policy.c — the meaning of a forward-auth request and the bytes of every answer (policy.h).
 *
 * The cache key follows docs/contract.md: the credential is the session cookie's value, or the
 * name=value pairs of every matching cookie in name order (oauth2-proxy splits large sessions), or
 * else the Authorization header; the scope is X-Forwarded-Host (falling back to Host), the
 * forward-auth request's own target, and with --key-scope uri the forwarded method and path. Other
 * cookies never reach the key. Anything that is not clearly a credential-bearing check is a bypass:
 * the safe side is always "ask the IdP and store nothing".
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jwtexp.h"
#include "pct.h"
#include "policy.h"
#include "sids.h"

/* Whether path lies under prefix: equal, or continuing with '/' or '?' (or prefix ends in '/'). */
static int unreserved(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

int policy_path_normalize(const char *p, size_t n, char *out, size_t cap)
{
    size_t len = 0, i = 0;

    if (n == 0 || p[0] != '/')
        return -1;
    while (i < n) {
        size_t seg = len; /* a segment: "/" and what follows up to the next "/" */
        char c;
        if (len + 1 > cap)
            return -1;
        out[len++] = '/';
        for (i++; i < n && p[i] != '/'; i++) {
            int hi, lo;
            c = p[i];
            if (c == '%' && i + 2 < n && (hi = pct_hexval(p[i + 1])) >= 0 &&
                (lo = pct_hexval(p[i + 2])) >= 0 && unreserved(hi * 16 + lo)) {
                c = (char)(hi * 16 + lo);
                i += 2;
            }
            if (len + 1 > cap)
                return -1;
            out[len++] = c;
        }
        /* "." and ".." segments (RFC 3986 5.2.4); a trailing one leaves the path ending in "/" */
        if (len - seg == 2 && out[seg + 1] == '.') {
            len = seg + (i == n);
        } else if (len - seg == 3 && out[seg + 1] == '.' && out[seg + 2] == '.') {
            size_t k = seg; /* back to the start of the previous segment, which goes too */
            while (k > 0 && out[k - 1] != '/')
                k--;
            len = k > 0 ? k - 1 : 0;
            if (i == n)
                out[len++] = '/';
        }
    }
    if (len == 0)
        out[len++] = '/';
    return (int)len;
}

struct cookie_ref {
    struct http_span name, value;
};

static int cookie_cmp(const void *a, const void *b)
{
    const struct cookie_ref *x = a, *y = b;
    size_t n = x->name.len < y->name.len ? x->name.len : y->name.len;
    int c = memcmp(x->name.p, y->name.p, n);

    return c ? c : (x->name.len > y->name.len) - (x->name.len < y->name.len);
}

/* The session credential from the Cookie headers: 1 found (into out), 0 none, -1 unusable. */
static int cookie_cred(const struct config *cfg, const struct http_req *req, struct policy_req *out)
{
    struct cookie_ref c[POLICY_MAX_COOKIES];
    size_t n = 0, len = 0;

    for (size_t i = 0; i < req->nhdrs; i++) {
        const struct http_hdr *h = &req->hdrs[i];
        const char *pos = h->value;
        struct http_span name, value;

        if (!http_name_eq(h->name, h->name_len, "Cookie"))
            continue;
        while (http_cookie_next(&pos, h->value + h->value_len, &name, &value)) {
            if (value.len == 0 || !config_patterns_match(&cfg->session_cookies, name.p, name.len))
                continue;
            if (n == POLICY_MAX_COOKIES)
                return -1;
            c[n].name = name;
            c[n].value = value;
            n++;
        }
    }
    if (n == 0)
        return 0;
    if (n == 1) {
        out->q.cred = c[0].value.p;
        out->q.cred_len = c[0].value.len;
        out->cookie_name = c[0].name;
        return 1;
    }
    qsort(c, n, sizeof(c[0]), cookie_cmp);
    for (size_t i = 0; i < n; i++)
        out->cookie_values[i] = c[i].value;
    out->ncookies = n;
    for (size_t i = 0; i < n; i++) {
        size_t need = (i ? 2 : 0) + c[i].name.len + 1 + c[i].value.len;
        if (len + need > sizeof(out->cred_buf))
            return -1;
        if (i) {
            memcpy(out->cred_buf + len, "; ", 2);
            len += 2;
        }
        memcpy(out->cred_buf + len, c[i].name.p, c[i].name.len);
        len += c[i].name.len;
        out->cred_buf[len++] = '=';
        memcpy(out->cred_buf + len, c[i].value.p, c[i].value.len);
        len += c[i].value.len;
    }
    out->q.cred = out->cred_buf;
    out->q.cred_len = len;
    return 1;
}

/* The value of a header that must be unambiguous: 0 absent, 1 found, -1 present twice with
 * different values (then nothing may be cached on it). */
static int hdr_unique(const struct http_req *req, const char *name, struct http_span *out)
{
    int found = 0;

    *out = (struct http_span){NULL, 0};
    for (size_t i = 0; i < req->nhdrs; i++) {
        const struct http_hdr *h = &req->hdrs[i];
        if (!http_name_eq(h->name, h->name_len, name))
            continue;
        if (found && (h->value_len != out->len || memcmp(h->value, out->p, out->len) != 0))
            return -1;
        *out = (struct http_span){h->value, h->value_len};
        found = 1;
    }
    return found;
}

/* Split an absolute URL (X-Original-URL: "https://app.test/a?b") into authority and target. */
static int split_url(struct http_span url, struct http_span *host, struct http_span *target)
{
    const char *p = url.p, *end = url.p + url.len, *s = NULL;

    for (const char *q = p; q + 2 < end; q++)
        if (q[0] == ':' && q[1] == '/' && q[2] == '/') {
            s = q + 3;
            break;
        }
    if (!s)
        return -1;
    const char *slash = memchr(s, '/', (size_t)(end - s));
    const char *at = memchr(s, '@', (size_t)((slash ? slash : end) - s));
    if (at)
        s = at + 1;
    *host = (struct http_span){s, (size_t)((slash ? slash : end) - s)};
    *target = slash ? (struct http_span){slash, (size_t)(end - slash)} : (struct http_span){"/", 1};
    return 0;
}

/* The one value several headers carry for one fact (proxies and IdP endpoints spell them
 * differently, and nginx passes the client's own headers on beside the ones it sets): 1 with it in
 * *out when every one present says the same, 0 when none is present, -1 when two disagree (an IdP
 * reading one of them could be asked another question than the key says). icase: compare
 * case-insensitively (host names). */
static int agree(struct http_span *out, const struct http_span *v, int n, int icase)
{
    int found = 0;

    for (int i = 0; i < n; i++) {
        if (!v[i].p)
            continue;
        if (found && (v[i].len != out->len || (icase ? !http__caseeq(v[i].p, out->p, out->len)
                                                     : memcmp(v[i].p, out->p, out->len) != 0)))
            return -1;
        *out = v[i];
        found = 1;
    }
    return found;
}

/* A header's one value as a span ({NULL, 0} if absent); -1 in *bad if repeated with another. */
static struct http_span one(const struct http_req *req, const char *name, int *bad)
{
    struct http_span v;

    if (hdr_unique(req, name, &v) < 0)
        *bad = 1;
    return v;
}

/* X-Forwarded-Host, -Uri, -Method and -Proto: the fields a check usually carries (bits 0-3 of
 * the set keyed with --key-scope uri). */
#define POLICY_USUAL_FIELDS 0xfu

void policy_classify(const struct config *cfg, const struct http_req *req, struct policy_req *out)
{
    struct http_span host = {0}, uri = {0}, url, url_host = {0}, url_uri = {0}, upath, uquery;
    struct http_span method = {0}, scheme[2] = {{0}}, authz, pauthz, v[3];
    unsigned fields = 0;
    int rc, ambiguous = 0, have_uri, have_method, n;
    char norm[CONFIG_PATH_MAX];

    memset(&out->q, 0, sizeof(out->q));
    out->kind = POLICY_BYPASS;
    out->has_cred = 0;
    out->cookie_name = (struct http_span){NULL, 0};
    out->ncookies = 0;
    /* Where the client was going: X-Forwarded-Uri (Traefik, Caddy), X-Original-URI, or the path
     * and query of an absolute X-Original-URL (nginx snippets of authentik and Authelia, whose
     * auth-request endpoint reads only that). When several are present they must agree. */
    url = one(req, "X-Original-URL", &ambiguous);
    if (url.p && split_url(url, &url_host, &url_uri) < 0)
        ambiguous = 1;
    v[0] = one(req, "X-Forwarded-Uri", &ambiguous);
    v[1] = one(req, "X-Original-URI", &ambiguous);
    v[2] = url_uri;
    have_uri = agree(&uri, v, 3, 0);
    ambiguous |= have_uri < 0;
    if (have_uri <= 0)
        uri = (struct http_span){"", 0};
    out->uri = uri;
    http_target_split(uri.p, uri.len, &upath, &uquery);

    /* The credential: the session cookie(s), else Authorization, else Proxy-Authorization. The
     * others, when present too, are part of the key (oauth2-proxy and Authelia read a header
     * before the cookie: the same cookie with another header is another question). */
    authz = one(req, "Authorization", &ambiguous);
    pauthz = one(req, "Proxy-Authorization", &ambiguous);
    rc = cookie_cred(cfg, req, out);
    if (rc == 1) {
        out->q.cred_kind = SHM_CRED_COOKIE;
        out->has_cred = 1;
    } else if (rc == 0 && authz.len > 0) {
        out->q.cred_kind = SHM_CRED_AUTHORIZATION;
        out->q.cred = authz.p;
        out->q.cred_len = authz.len;
        out->has_cred = 1;
    } else if (rc == 0 && pauthz.len > 0) {
        out->q.cred_kind = SHM_CRED_PROXY_AUTHORIZATION;
        out->q.cred = pauthz.p;
        out->q.cred_len = pauthz.len;
        out->has_cred = 1;
    }

    if (cfg->signout_path[0] &&
        (n = policy_path_normalize(upath.p, upath.len, norm, sizeof(norm))) >= 0 &&
        (size_t)n == strlen(cfg->signout_path) && memcmp(norm, cfg->signout_path, (size_t)n) == 0) {
        out->kind = POLICY_SIGNOUT;
    } else if (uquery.p &&
               http_query_has(uquery.p, uquery.len, "X-authentik-auth-callback", "true")) {
        out->kind = POLICY_LOGIN_FLOW;
        return;
    } else if (uquery.p && http_query_has(uquery.p, uquery.len, "X-authentik-logout", "true")) {
        out->kind = POLICY_LOGOUT;
    } else if (out->has_cred) {
        out->kind = POLICY_CACHEABLE;
    } else {
        return;
    }
    if (!out->has_cred)
        return;

    /* The application: X-Forwarded-Host and the host of X-Original-URL (which must agree), else
     * Host. */
    v[0] = one(req, "X-Forwarded-Host", &ambiguous);
    v[1] = url_host.p ? url_host : (struct http_span){NULL, 0};
    rc = agree(&host, v, 2, 1);
    ambiguous |= rc < 0;
    if (rc == 0)
        ambiguous |= hdr_unique(req, "Host", &host) < 0;
    out->q.host = host.p ? host.p : "";
    out->q.host_len = host.len;
    out->q.auth_path = req->target; /* path and query, as sent */
    out->q.auth_path_len = req->target_len;

    size_t il = 0;
    /* The cookie's name is part of the question (authentik_proxy_zzzz=<alice's value> is not
     * alice's session); its value alone stays the credential purges by session are made of. */
    if (out->q.cred_kind == SHM_CRED_COOKIE && out->cookie_name.p)
        ambiguous |=
            shm_key_input(out->inputs_buf, &il, sizeof(out->inputs_buf), SHM_IN_COOKIE_NAME,
                          out->cookie_name.p, out->cookie_name.len) < 0;
    if (out->q.cred_kind != SHM_CRED_AUTHORIZATION && authz.p)
        ambiguous |= shm_key_input(out->inputs_buf, &il, sizeof(out->inputs_buf),
                                   SHM_IN_AUTHORIZATION, authz.p, authz.len) < 0;
    if (out->q.cred_kind != SHM_CRED_PROXY_AUTHORIZATION && pauthz.p)
        ambiguous |= shm_key_input(out->inputs_buf, &il, sizeof(out->inputs_buf),
                                   SHM_IN_PROXY_AUTHORIZATION, pauthz.p, pauthz.len) < 0;
    if (cfg->key_scope == CONFIG_SCOPE_URI) {
        struct http_span xff = one(req, "X-Forwarded-For", &ambiguous);
        struct http_span rip = one(req, "X-Real-IP", &ambiguous);
        v[0] = one(req, "X-Forwarded-Method", &ambiguous);
        v[1] = one(req, "X-Original-Method", &ambiguous);
        have_method = agree(&method, v, 2, 0);
        /* Rules by path, query, method and network: the key holds each as the IdP gets it (empty
         * when absent: the IdP then decides without it, or refuses, which is never stored). */
        ambiguous |= have_method < 0;
        out->q.scope_uri = 1;
        out->q.method = method.p ? method.p : "";
        out->q.method_len = method.len;
        out->q.uri_path = uri.p; /* path and query: Authelia's rules match both */
        out->q.uri_path_len = uri.len;
        if (xff.p)
            ambiguous |= shm_key_input(out->inputs_buf, &il, sizeof(out->inputs_buf),
                                       SHM_IN_FORWARDED_FOR, xff.p, xff.len) < 0;
        if (rip.p)
            ambiguous |= shm_key_input(out->inputs_buf, &il, sizeof(out->inputs_buf),
                                       SHM_IN_REAL_IP, rip.p, rip.len) < 0;
        /* Which of the fields were sent: each endpoint reads only some (Authelia's forward-auth
         * X-Forwarded-*, auth-request X-Original-URL and -Method, all required) and refuses a
         * check without them, so a check that agrees with another on every value but lacks a
         * field is another question. Keyed unless it is the usual set (Traefik's, Caddy's, and
         * what the client library computes). */
        {
            static const char *const names[] = {
                "X-Forwarded-Host", "X-Forwarded-Uri", "X-Forwarded-Method", "X-Forwarded-Proto",
                "X-Original-URI",   "X-Original-URL",  "X-Original-Method",
            };
            int dup = 0;
            for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++)
                if (one(req, names[i], &dup).p)
                    fields |= 1u << i;
        }
        /* Authelia answers 2xx only for an https or wss target: the scheme is its input too,
         * as each endpoint reads it (X-Forwarded-Proto, X-Original-URL's), unless it is https. */
        scheme[0] = one(req, "X-Forwarded-Proto", &ambiguous);
        if (url.p) {
            const char *sep = memmem(url.p, url.len, "://", 3);
            scheme[1] = (struct http_span){url.p, sep ? (size_t)(sep - url.p) : 0};
        }
        for (int i = 0; i < 2; i++)
            if (scheme[i].p && scheme[i].len == 5 && http__caseeq(scheme[i].p, "https", 5))
                scheme[i] = (struct http_span){NULL, 0};
    }
    /* oauth2-proxy's skip routes match the auth request's own method (nginx's auth_request may
     * send the client's); proxies that always send GET keep the key they had. */
    if (!http_method_is(req, "GET"))
        ambiguous |= shm_key_input(out->inputs_buf, &il, sizeof(out->inputs_buf),
                                   SHM_IN_AUTH_METHOD, req->method, req->method_len) < 0;
    if (scheme[0].p)
        ambiguous |= shm_key_input(out->inputs_buf, &il, sizeof(out->inputs_buf),
                                   SHM_IN_FORWARDED_PROTO, scheme[0].p, scheme[0].len) < 0;
    if (scheme[1].p)
        ambiguous |= shm_key_input(out->inputs_buf, &il, sizeof(out->inputs_buf), SHM_IN_URL_SCHEME,
                                   scheme[1].p, scheme[1].len) < 0;
    if (cfg->key_scope == CONFIG_SCOPE_URI && fields != POLICY_USUAL_FIELDS) {
        char f = (char)fields;
        ambiguous |=
            shm_key_input(out->inputs_buf, &il, sizeof(out->inputs_buf), SHM_IN_FIELDS, &f, 1) < 0;
    }
    out->q.inputs = out->inputs_buf;
    out->q.inputs_len = il;
    /* Headers that could name two different things: ask the IdP, store nothing. */
    if (ambiguous && out->kind == POLICY_CACHEABLE)
        out->kind = POLICY_BYPASS;
}

/* ---- the request to the IdP ---- */

struct out {
    char *p;
    size_t len, cap;
    int full;
};

static void put(struct out *o, const void *s, size_t n)
{
    if (o->full || o->len + n > o->cap) {
        o->full = 1;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void puts_(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

static void put_hdr(struct out *o, const char *name, size_t nlen, const char *value, size_t vlen)
{
    put(o, name, nlen);
    put(o, ": ", 2);
    put(o, value, vlen);
    put(o, "\r\n", 2);
}

static void put_num(struct out *o, long long v)
{
    char b[24];
    int n = snprintf(b, sizeof(b), "%lld", v);

    put(o, b, (size_t)n);
}

/* Hop-by-hop by name or because a Connection header lists it. */
/* Whether h is hop-by-hop between authcached and the IdP. Proxy-Authorization and
 * Proxy-Authenticate are not: the proxy in front forwards them for the IdP (Authelia reads
 * Proxy-Authorization first and challenges with Proxy-Authenticate), so they are the client's
 * credential and the IdP's answer to the client, as without authcached. */
static int hop_by_hop(const struct http_hdr *hdrs, size_t n, const struct http_hdr *h)
{
    if (http_is_hop_by_hop(h->name, h->name_len) &&
        !http_name_eq(h->name, h->name_len, "Proxy-Authorization") &&
        !http_name_eq(h->name, h->name_len, "Proxy-Authenticate"))
        return 1;
    for (size_t i = 0; i < n; i++)
        if (http_name_eq(hdrs[i].name, hdrs[i].name_len, "Connection") &&
            http_connection_lists(hdrs[i].value, hdrs[i].value_len, h->name, h->name_len))
            return 1;
    return 0;
}

size_t policy_upstream_request(const struct config *cfg, const struct http_req *req, char *buf,
                               size_t cap)
{
    struct out o = {buf, 0, cap, 0};

    put(&o, req->method, req->method_len);
    put(&o, " ", 1);
    puts_(&o, cfg->upstream.base_path);
    put(&o, req->target, req->target_len);
    puts_(&o, " HTTP/1.1\r\nHost: ");
    puts_(&o, cfg->upstream.host_header);
    puts_(&o, "\r\n");
    for (size_t i = 0; i < req->nhdrs; i++) {
        const struct http_hdr *h = &req->hdrs[i];
        if (hop_by_hop(req->hdrs, req->nhdrs, h) || http_name_eq(h->name, h->name_len, "Host") ||
            http_name_eq(h->name, h->name_len, "Content-Length") ||
            http_name_eq(h->name, h->name_len, "Expect"))
            continue;
        put_hdr(&o, h->name, h->name_len, h->value, h->value_len);
    }
    puts_(&o, "\r\n");
    return o.full ? 0 : o.len;
}

/* ---- the IdP's answer ---- */

/* Headers of an IdP's 2xx that describe that response, not the user: never stored or replayed
 * (nor are hop-by-hop ones; Set-Cookie goes only to the request that got it). */
static int describes_response(const char *name, size_t len)
{
    static const char *const deny[] = {
        "Content-Length",
        "Content-Type",
        "Content-Encoding",
        "Transfer-Encoding",
        "Date",
        "Server",
        "Cache-Control",
        "Expires",
        "Age",
        "ETag",
        "Last-Modified",
        "Vary",
        "Set-Cookie",
        "X-Authcache",
        NULL,
    };

    for (int i = 0; deny[i]; i++)
        if (http_name_eq(name, len, deny[i]))
            return 1;
    return 0;
}

int policy_identity(const struct config *cfg, const struct http_resp *resp, char *buf, size_t cap,
                    struct policy_identity *id)
{
    struct out o = {buf, 0, cap, 0};

    memset(id, 0, sizeof(*id));
    for (size_t i = 0; i < resp->nhdrs; i++) {
        const struct http_hdr *h = &resp->hdrs[i];
        struct jwtexp_claims jc;

        if (!config_patterns_match(&cfg->identity_headers, h->name, h->name_len) ||
            hop_by_hop(resp->hdrs, resp->nhdrs, h) || describes_response(h->name, h->name_len))
            continue;
        put_hdr(&o, h->name, h->name_len, h->value, h->value_len);
        if (id->user.len == 0 && http_name_eq(h->name, h->name_len, cfg->user_header) &&
            h->value_len > 0)
            id->user = (struct http_span){h->value, h->value_len};
        if (!memchr(h->value, '.', h->value_len))
            continue;
        if (jwtexp_claims_from_header_value(h->value, h->value_len, &jc) == 0) {
            int64_t ms = jc.exp_s * 1000;
            if (id->jwt_exp_ms == 0 || ms < id->jwt_exp_ms)
                id->jwt_exp_ms = ms;
        }
        if (!id->has_sid && jc.sid_rc == 0 && http_name_eq(h->name, h->name_len, SIDS_JWT_HEADER)) {
            id->has_sid = 1;
            id->sid_key = sids_key(jc.sid, jc.sid_len);
        }
    }
    id->hdrs_len = o.len;
    for (size_t i = 0; i < resp->nhdrs; i++) {
        const struct http_hdr *h = &resp->hdrs[i];
        if (http_name_eq(h->name, h->name_len, "Set-Cookie"))
            put_hdr(&o, h->name, h->name_len, h->value, h->value_len);
    }
    if (o.full)
        return -E2BIG;
    id->answer_len = o.len;
    return 0;
}

enum policy_verdict policy_on_idp_answer(enum policy_kind kind, int cacheable, int status,
                                         int names_user)
{
    int ok = status >= 200 && status <= 299;

    if (status >= 500)
        return POLICY_DO_FAIL;
    if (kind == POLICY_SIGNOUT)
        return ok && names_user ? POLICY_DO_SIGNOUT_PURGE : POLICY_DO_PASS;
    if (!cacheable)
        return POLICY_DO_PASS;
    if (ok)
        return names_user ? POLICY_DO_STORE : POLICY_DO_PASS;
    return POLICY_DO_DROP_PASS;
}

void policy_lifetimes(const struct config *cfg, int64_t now_ms, int64_t first_seen_ms,
                      int64_t jwt_exp_ms, struct shm_answer *a)
{
    a->first_seen_ms = first_seen_ms;
    a->confirmed_ms = now_ms;
    a->fresh_until_ms = now_ms + cfg->fresh_ttl_ms;
    a->session_end_ms = first_seen_ms + cfg->session_ttl_ms;
    if (jwt_exp_ms > 0 && jwt_exp_ms < a->session_end_ms)
        a->session_end_ms = jwt_exp_ms;
    if (a->fresh_until_ms > a->session_end_ms)
        a->fresh_until_ms = a->session_end_ms;
}

int policy_stale_ok(const struct config *cfg, const struct shm_answer *a, int64_t now_ms)
{
    return now_ms < a->session_end_ms && now_ms < a->confirmed_ms + cfg->outage_grace_ms;
}

/* ---- answers ---- */

static void status_line(struct out *o, int status, const char *reason)
{
    puts_(o, "HTTP/1.1 ");
    put_num(o, status);
    put(o, " ", 1);
    puts_(o, reason);
    puts_(o, "\r\n");
}

static void conn_headers(struct out *o, const struct policy_conn *c)
{
    if (!c->keep_alive)
        puts_(o, "Connection: close\r\n");
    else if (c->http10)
        puts_(o, "Connection: keep-alive\r\n");
}

size_t policy_answer_identity(const struct policy_conn *c, const char *hdrs, size_t hdrs_len,
                              const char *result, char *buf, size_t cap)
{
    struct out o = {buf, 0, cap, 0};

    puts_(&o, "HTTP/1.1 200 OK\r\n");
    put(&o, hdrs, hdrs_len);
    puts_(&o, "X-Authcache: ");
    puts_(&o, result);
    puts_(&o, "\r\nContent-Length: 0\r\n");
    conn_headers(&o, c);
    puts_(&o, "\r\n");
    return o.full ? 0 : o.len;
}

size_t policy_answer_passthrough(const struct policy_conn *c, const struct http_resp *resp,
                                 const char *body, size_t body_len, const char *result, char *buf,
                                 size_t cap)
{
    struct out o = {buf, 0, cap, 0};
    int cache_control = 0;

    puts_(&o, "HTTP/1.1 ");
    put_num(&o, resp->status);
    put(&o, " ", 1);
    put(&o, resp->reason, resp->reason_len);
    puts_(&o, "\r\n");
    for (size_t i = 0; i < resp->nhdrs; i++) {
        const struct http_hdr *h = &resp->hdrs[i];
        if (hop_by_hop(resp->hdrs, resp->nhdrs, h) ||
            (!c->head && http_name_eq(h->name, h->name_len, "Content-Length")) ||
            http_name_eq(h->name, h->name_len, "X-Authcache"))
            continue;
        cache_control |= http_name_eq(h->name, h->name_len, "Cache-Control");
        put_hdr(&o, h->name, h->name_len, h->value, h->value_len);
    }
    if (!cache_control && (resp->status < 200 || resp->status > 299))
        puts_(&o, "Cache-Control: no-store\r\n");
    puts_(&o, "X-Authcache: ");
    puts_(&o, result);
    puts_(&o, "\r\n");
    if (!c->head) {
        puts_(&o, "Content-Length: ");
        put_num(&o, (long long)body_len);
        puts_(&o, "\r\n");
    }
    conn_headers(&o, c);
    puts_(&o, "\r\n");
    if (!c->head)
        put(&o, body, body_len);
    return o.full ? 0 : o.len;
}

size_t policy_answer_unavailable(const struct policy_conn *c, const char *cause, int retry_after_s,
                                 char *buf, size_t cap)
{
    struct out o = {buf, 0, cap, 0};
    char body[256];
    int n = snprintf(body, sizeof(body), "authcache: identity provider unavailable: %s\n", cause);

    if (n < 0 || (size_t)n >= sizeof(body))
        n = (int)sizeof(body) - 1;
    status_line(&o, 503, "Service Unavailable");
    puts_(&o, "Retry-After: ");
    put_num(&o, retry_after_s);
    puts_(&o, "\r\nContent-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\n"
              "X-Authcache: unavailable\r\nContent-Length: ");
    put_num(&o, n);
    puts_(&o, "\r\n");
    conn_headers(&o, c);
    puts_(&o, "\r\n");
    if (!c->head)
        put(&o, body, (size_t)n);
    return o.full ? 0 : o.len;
}

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    default:
        return "Status";
    }
}

size_t policy_answer_status(const struct policy_conn *c, int status, const char *text, char *buf,
                            size_t cap)
{
    struct out o = {buf, 0, cap, 0};
    size_t n = strlen(text);

    status_line(&o, status, reason(status));
    puts_(&o,
          "Content-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\nContent-Length: ");
    put_num(&o, (long long)n + 1);
    puts_(&o, "\r\n");
    conn_headers(&o, c);
    puts_(&o, "\r\n");
    if (!c->head) {
        put(&o, text, n);
        put(&o, "\n", 1);
    }
    return o.full ? 0 : o.len;
}
