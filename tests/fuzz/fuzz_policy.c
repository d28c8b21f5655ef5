/*
 * fuzz_policy.c — what policy.c makes of a forward-auth request, on arbitrary header fields, under
 * the three presets (authentik, oauth2-proxy, authelia) with --key-scope host and uri.
 *
 * The first input byte picks the method (GET, HEAD, POST) and whether the rest is a whole request
 * (bit 2) or header fields behind a fixed request line to authentik's Traefik endpoint; the head is
 * closed with an empty line when it has none. For each configuration, a request that parses is
 * classified and checked: every span lies in the request or the policy_req's own buffers, the kind
 * and credential kind are valid, q.inputs is a well-formed tag/length/value list, a second
 * classification gives the same key parts byte for byte, and a cacheable request gives the same
 * key with its header fields in reverse order. policy_upstream_request is checked at too-small and
 * exact caps and parsed back. policy_path_normalize is checked on the raw input and on the
 * forwarded path: bounded, no dot segments left, idempotent, and failing cleanly when cap is short.
 * Buffers are exact-size heap copies so that a read or write past the end is an ASan report.
 */
#include "policy.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fuzz_check.h"

#define HDRS_CAP 64
#define MAX_HEAD 65536

static const char *const presets[] = {"authentik", "oauth2-proxy", "authelia"};
static struct config cfgs[6]; /* preset i, scope host (2i) and uri (2i + 1) */
static struct policy_req pr1, pr2;

static void init(void)
{
    static int done;
    char err[256];
    char *envp[] = {NULL};

    if (done)
        return;
    for (int i = 0; i < 6; i++) {
        char *argv[] = {
            "authcached",           "--upstream",  "http://idp.internal:9000/base", "--preset",
            (char *)presets[i / 2], "--key-scope", i % 2 ? "uri" : "host",          NULL};
        if (config_parse(&cfgs[i], 7, argv, envp, err, sizeof(err)) != 0) {
            fprintf(stderr, "fuzz_policy: config_parse %s: %s\n", presets[i / 2], err);
            abort();
        }
    }
    done = 1;
}

static char *dup_exact(const void *p, size_t n)
{
    char *s = malloc(n ? n : 1);

    if (!s)
        abort();
    memcpy(s, p, n);
    return s;
}

static int span_eq(const char *a, size_t al, const char *b, size_t bl)
{
    return al == bl && (al == 0 || memcmp(a, b, al) == 0);
}

static int has_sub(const char *s, size_t n, const char *sub)
{
    size_t k = strlen(sub);

    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(s + i, sub, k) == 0)
            return 1;
    return 0;
}

/* policy_path_normalize on p[0, n): its contract, a cap too short, and idempotence. */
static void check_normalize(const char *src, size_t n)
{
    size_t cap = n + 2;
    char *p = dup_exact(src, n), *out = malloc(cap);
    int r;

    if (!out)
        abort();
    r = policy_path_normalize(p, n, out, cap);
    if (n == 0 || p[0] != '/') {
        must(r == -1);
        free(out);
        free(p);
        return;
    }
    /* decoding and dot removal only shorten; a lone "/" may be added to an empty result */
    must(r >= 1 && (size_t)r <= n + 1);
    must(out[0] == '/');
    must(!has_sub(out, (size_t)r, "/./") && !has_sub(out, (size_t)r, "/../"));
    must(!(r >= 2 && memcmp(out + r - 2, "/.", 2) == 0));
    must(!(r >= 3 && memcmp(out + r - 3, "/..", 3) == 0));

    /* exact-size output: succeeds or fails (an intermediate may be longer), never writes past */
    char *exact = malloc((size_t)r);
    int r2 = policy_path_normalize(p, n, exact, (size_t)r);
    must(r2 == -1 || (r2 == r && memcmp(exact, out, (size_t)r) == 0));
    free(exact);
    char *shortb = malloc((size_t)r - 1 ? (size_t)r - 1 : 1);
    must(policy_path_normalize(p, n, shortb, (size_t)r - 1) == -1);
    free(shortb);

    /* again on its own output: the same, unless decoding made a new escape ("%4%31" -> "%41") */
    if (!memchr(out, '%', (size_t)r)) {
        char *in = dup_exact(out, (size_t)r), *again = malloc((size_t)r + 2);
        int r3 = policy_path_normalize(in, (size_t)r, again, (size_t)r + 2);
        must(r3 == r && memcmp(again, out, (size_t)r) == 0);
        free(in);
        free(again);
    }
    free(out);
    free(p);
}

/* q.inputs: (tag, 4-byte LE length, bytes)..., tags increasing within SHM_IN_*, filling it. */
static void check_inputs(const struct config *cfg, const struct policy_req *pr)
{
    const unsigned char *p = (const unsigned char *)pr->q.inputs;
    size_t n = pr->q.inputs_len, i = 0;
    int last = 0;

    must(n <= sizeof(pr->inputs_buf));
    must(n == 0 || pr->q.inputs == pr->inputs_buf);
    while (i < n) {
        must(n - i >= 5);
        int tag = p[i];
        size_t len = (size_t)p[i + 1] | (size_t)p[i + 2] << 8 | (size_t)p[i + 3] << 16 |
                     (size_t)p[i + 4] << 24;
        must(tag > last && tag >= SHM_IN_COOKIE_NAME && tag <= SHM_IN_FIELDS);
        must(len <= n - i - 5);
        if (tag == SHM_IN_FORWARDED_FOR || tag == SHM_IN_REAL_IP || tag == SHM_IN_FORWARDED_PROTO ||
            tag == SHM_IN_URL_SCHEME || tag == SHM_IN_FIELDS)
            must(cfg->key_scope == CONFIG_SCOPE_URI);
        if (tag == SHM_IN_FORWARDED_PROTO || tag == SHM_IN_URL_SCHEME)
            must(!(len == 5 && http__caseeq((const char *)p + i + 5, "https", 5)));
        if (tag == SHM_IN_FIELDS)
            must(len == 1 && p[i + 5] != 0xf && p[i + 5] < 0x80);
        if (tag == SHM_IN_COOKIE_NAME)
            must(pr->q.cred_kind == SHM_CRED_COOKIE &&
                 span_eq((const char *)p + i + 5, len, pr->cookie_name.p, pr->cookie_name.len));
        if (tag == SHM_IN_AUTHORIZATION)
            must(pr->q.cred_kind != SHM_CRED_AUTHORIZATION);
        if (tag == SHM_IN_PROXY_AUTHORIZATION)
            must(pr->q.cred_kind != SHM_CRED_PROXY_AUTHORIZATION);
        last = tag;
        i += 5 + len;
    }
    must(i == n);
}

/* A non-empty span must lie in the request; cred may also lie in cred_buf. */
#define IN_REQ(p, len) ((len) == 0 || inside(buf, n, (p), (len)))

static void check_classified(const struct config *cfg, const char *buf, size_t n,
                             const struct http_req *req, const struct policy_req *pr)
{
    const struct shm_query *q = &pr->q;

    must(pr->kind >= POLICY_CACHEABLE && pr->kind <= POLICY_SIGNOUT);
    must(pr->has_cred == 0 || pr->has_cred == 1);
    /* X-Original-URL without a path means "/", a literal */
    must(IN_REQ(pr->uri.p, pr->uri.len) || span_eq(pr->uri.p, pr->uri.len, "/", 1));
    must(pr->cookie_name.p == NULL || inside(buf, n, pr->cookie_name.p, pr->cookie_name.len));
    if (!pr->has_cred) {
        must(pr->kind != POLICY_CACHEABLE);
        return;
    }
    must(q->cred_kind == SHM_CRED_COOKIE || q->cred_kind == SHM_CRED_AUTHORIZATION ||
         q->cred_kind == SHM_CRED_PROXY_AUTHORIZATION);
    must(q->cred_len > 0 && (inside(buf, n, q->cred, q->cred_len) ||
                             inside(pr->cred_buf, sizeof(pr->cred_buf), q->cred, q->cred_len)));
    must(pr->cookie_name.p == NULL || q->cred_kind == SHM_CRED_COOKIE);
    if (pr->kind == POLICY_LOGIN_FLOW)
        return; /* classified before the scope: no key is made */
    must(IN_REQ(q->host, q->host_len));
    must(q->auth_path == req->target && q->auth_path_len == req->target_len);
    must(q->scope_uri == (cfg->key_scope == CONFIG_SCOPE_URI));
    if (q->scope_uri) {
        must(IN_REQ(q->method, q->method_len));
        must(span_eq(q->uri_path, q->uri_path_len, pr->uri.p, pr->uri.len));
    } else {
        must(q->method_len == 0 && q->uri_path_len == 0);
    }
    check_inputs(cfg, pr);
}

/* The key parts of a and b name the same key. */
static int same_key(const struct policy_req *a, const struct policy_req *b)
{
    const struct shm_query *x = &a->q, *y = &b->q;

    if (a->kind != b->kind || a->has_cred != b->has_cred)
        return 0;
    if (!a->has_cred)
        return 1;
    return x->cred_kind == y->cred_kind && span_eq(x->cred, x->cred_len, y->cred, y->cred_len) &&
           (a->kind == POLICY_LOGIN_FLOW ||
            (span_eq(x->host, x->host_len, y->host, y->host_len) &&
             span_eq(x->auth_path, x->auth_path_len, y->auth_path, y->auth_path_len) &&
             x->scope_uri == y->scope_uri &&
             span_eq(x->method, x->method_len, y->method, y->method_len) &&
             span_eq(x->uri_path, x->uri_path_len, y->uri_path, y->uri_path_len) &&
             span_eq(x->inputs, x->inputs_len, y->inputs, y->inputs_len)));
}

/* Whether a split-cookie credential ("a=1; b=2") names one cookie twice: its order then follows
 * the request's, which is no promise. */
static int dup_cookie_names(const struct policy_req *pr)
{
    const char *s = pr->q.cred, *end = s + pr->q.cred_len;
    struct http_span names[POLICY_MAX_COOKIES];
    size_t k = 0;

    if (pr->q.cred_kind != SHM_CRED_COOKIE || pr->q.cred != pr->cred_buf)
        return 0;
    while (s < end && k < POLICY_MAX_COOKIES) {
        const char *eq = memchr(s, '=', (size_t)(end - s));
        const char *semi = memchr(s, ';', (size_t)(end - s));
        must(eq && (!semi || eq < semi));
        names[k] = (struct http_span){s, (size_t)(eq - s)};
        for (size_t j = 0; j < k; j++)
            if (span_eq(names[j].p, names[j].len, names[k].p, names[k].len))
                return 1;
        k++;
        s = semi ? semi + 2 : end;
    }
    return 0;
}

/* The same request with its header fields in reverse order, as an exact-size copy. */
static char *reversed(const struct http_req *req, size_t *len)
{
    size_t n = req->method_len + 1 + req->target_len + 11 + 2;
    char *s, *p;

    for (size_t i = 0; i < req->nhdrs; i++)
        n += req->hdrs[i].name_len + 2 + req->hdrs[i].value_len + 2;
    p = s = malloc(n);
    if (!s)
        abort();
    memcpy(p, req->method, req->method_len), p += req->method_len;
    *p++ = ' ';
    memcpy(p, req->target, req->target_len), p += req->target_len;
    memcpy(p, req->minor_version ? " HTTP/1.1\r\n" : " HTTP/1.0\r\n", 11), p += 11;
    for (size_t i = req->nhdrs; i-- > 0;) {
        const struct http_hdr *h = &req->hdrs[i];
        memcpy(p, h->name, h->name_len), p += h->name_len;
        memcpy(p, ": ", 2), p += 2;
        memcpy(p, h->value, h->value_len), p += h->value_len;
        memcpy(p, "\r\n", 2), p += 2;
    }
    memcpy(p, "\r\n", 2), p += 2;
    must((size_t)(p - s) == n);
    *len = n;
    return s;
}

static void check_upstream(const struct config *cfg, const struct http_req *req, size_t small)
{
    size_t big = MAX_HEAD + 4096, len;
    char *out = malloc(big);
    struct http_hdr hdrs[HDRS_CAP + 1];
    struct http_req back = {.hdrs = hdrs, .hdrs_cap = HDRS_CAP + 1};
    size_t bl = strlen(cfg->upstream.base_path);

    if (!out)
        abort();
    len = policy_upstream_request(cfg, req, out, big);
    must(len > 0 && len <= big);
    char *exact = malloc(len), *shortb = malloc(len - 1);
    must(policy_upstream_request(cfg, req, exact, len) == len && memcmp(exact, out, len) == 0);
    must(policy_upstream_request(cfg, req, shortb, len - 1) == 0);
    if (small < len) {
        char *sb = malloc(small ? small : 1);
        must(policy_upstream_request(cfg, req, sb, small) == 0);
        free(sb);
    }
    free(shortb);

    int rc = http_parse_request(exact, len, 0, big, &back);
    must(rc > 0 && (size_t)rc == len);
    must(span_eq(back.method, back.method_len, req->method, req->method_len));
    must(back.target_len == bl + req->target_len &&
         memcmp(back.target, cfg->upstream.base_path, bl) == 0 &&
         memcmp(back.target + bl, req->target, req->target_len) == 0);
    must(back.content_length == -1 && !back.chunked);
    int hosts = 0;
    for (size_t i = 0; i < back.nhdrs; i++) {
        const struct http_hdr *h = &back.hdrs[i];
        if (!http_name_eq(h->name, h->name_len, "Host"))
            continue;
        must(span_eq(h->value, h->value_len, cfg->upstream.host_header,
                     strlen(cfg->upstream.host_header)));
        hosts++;
    }
    must(hosts == 1);
    free(exact);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const methods[] = {"GET", "HEAD", "POST", "GET"};
    struct http_hdr hdrs[HDRS_CAP], rhdrs[HDRS_CAP];
    struct http_req req = {.hdrs = hdrs, .hdrs_cap = HDRS_CAP};
    char line[128];
    size_t n, ll;
    char *buf;

    init();
    check_normalize((const char *)data, size);
    if (size == 0)
        return 0;
    unsigned sel = data[0];
    data++, size--;
    ll = (sel & 4) ? 0
                   : (size_t)snprintf(line, sizeof(line),
                                      "%s /outpost.goauthentik.io/auth/traefik HTTP/1.1\r\n",
                                      methods[sel & 3]);
    int closed = size >= 4 && memcmp(data + size - 4, "\r\n\r\n", 4) == 0;
    n = ll + size + (closed ? 0 : 4);
    buf = malloc(n ? n : 1);
    if (!buf)
        abort();
    memcpy(buf, line, ll);
    memcpy(buf + ll, data, size);
    if (!closed)
        memcpy(buf + ll + size, "\r\n\r\n", 4);

    int rc = http_parse_request(buf, n, 0, MAX_HEAD, &req);
    if (rc <= 0) {
        must(rc == HTTP_BAD || rc == HTTP_TOO_LARGE || rc == HTTP_PARTIAL);
        free(buf);
        return 0;
    }
    for (int c = 0; c < 6; c++) {
        const struct config *cfg = &cfgs[c];

        policy_classify(cfg, &req, &pr1);
        check_classified(cfg, buf, n, &req, &pr1);
        policy_classify(cfg, &req, &pr2);
        check_classified(cfg, buf, n, &req, &pr2);
        must(same_key(&pr1, &pr2));

        if (pr1.kind == POLICY_CACHEABLE && !dup_cookie_names(&pr1)) {
            size_t rl;
            char *rev = reversed(&req, &rl);
            struct http_req rreq = {.hdrs = rhdrs, .hdrs_cap = HDRS_CAP};
            must(http_parse_request(rev, rl, 0, MAX_HEAD + 4096, &rreq) == (int)rl);
            policy_classify(cfg, &rreq, &pr2);
            check_classified(cfg, rev, rl, &rreq, &pr2);
            must(same_key(&pr1, &pr2));
            free(rev);
        }
        if (c % 2 == 0)
            check_upstream(cfg, &req, (size_t)(sel >> 3) * 8);
    }
    check_normalize(pr1.uri.p, pr1.uri.len);
    {
        struct http_span path, query;
        http_target_split(pr1.uri.p, pr1.uri.len, &path, &query);
        check_normalize(path.p, path.len);
    }
    free(buf);
    return 0;
}
