/*
 * test_fa.c — the forward-auth state machine (fa.c) and the connection layer under it (conn.c),
 * driven without a network: a real worker and segment, requests fed as receive completions, and a
 * fake IdP (w->fake_call) whose calls the test answers, fails or leaves open. Nothing is submitted
 * to the ring (the test never flushes), so every effect is in the connection's output, the segment,
 * the request table and the calls made.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "authcache.h"
#include "check.h"
#include "epoch.h"
#include "purger.h"
#include "log.h"
#include "worker_int.h"

static struct config cfg;
static struct daemon d;
static struct worker *w;
static char shm_name[64];

/* ---- the fake IdP ---- */

struct call {
    char req[UPREQ_MAX];
    size_t len;
    upstream_done_fn *done;
    uint32_t ctx, gen;
    int open;
};
static struct call calls[128];
static int ncalls;

static void fake_call(struct worker *wk, const char *req, size_t len, upstream_done_fn *done,
                      uint32_t ctx, uint32_t gen)
{
    (void)wk;
    if (ncalls == (int)(sizeof(calls) / sizeof(calls[0]))) {
        fprintf(stderr, "too many fake calls\n");
        exit(1);
    }
    memcpy(calls[ncalls].req, req, len);
    calls[ncalls].len = len;
    calls[ncalls].done = done;
    calls[ncalls].ctx = ctx;
    calls[ncalls].gen = gen;
    calls[ncalls].open = 1;
    ncalls++;
}

/* Answer call i with a raw HTTP response (Content-Length framed or empty). */
static void answer(int i, const char *raw)
{
    struct http_hdr h[64];
    struct http_resp r = {.hdrs = h, .hdrs_cap = 64};
    int rc = http_parse_response(raw, strlen(raw), 65536, &r);

    if (rc <= 0 || !calls[i].open) {
        fprintf(stderr, "answer(%d): bad test response or call not open\n", i);
        exit(1);
    }
    calls[i].open = 0;
    calls[i].done(w, calls[i].ctx, calls[i].gen, &r, raw + rc, strlen(raw) - (size_t)rc, NULL, 0);
}

static void fail_as(int i, const char *cause, int local)
{
    calls[i].open = 0;
    calls[i].done(w, calls[i].ctx, calls[i].gen, NULL, NULL, 0, cause, local);
}

static void fail(int i, const char *cause)
{
    fail_as(i, cause, 0);
}

/* ---- connections ---- */

static struct conn *open_conn(void)
{
    int sv[2];
    uint32_t slot = w->free_head;
    struct io_uring_cqe cqe = {.flags = IORING_CQE_F_MORE};

    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0 || slot == SLOT_NONE) {
        fprintf(stderr, "open_conn: no socket pair or no free slot\n");
        exit(1);
    }
    close(sv[1]);
    cqe.res = sv[0];
    conn__accept(w, &cqe);
    return &w->conns[slot];
}

static void feed(struct conn *c, const char *data)
{
    size_t len = strlen(data);
    struct io_uring_cqe cqe = {.res = (int)len, .flags = IORING_CQE_F_MORE};

    memcpy(w->bufs, data, len); /* buffer 0 */
    conn__recv(w, c, &cqe);
}

/* What the connection was sent since the last call (the test plays the kernel's send). */
static const char *out(struct conn *c)
{
    static char buf[65536];
    size_t n = c->out_len - c->out_off;

    memcpy(buf, c->out + c->out_off, n);
    buf[n] = 0;
    c->out_len = c->out_off = 0;
    return buf;
}

static int live_reqs(void)
{
    int n = 0;

    for (uint32_t i = 0; i < w->max_reqs; i++)
        n += w->reqs[i].state != REQ_FREE;
    return n;
}

static const char *check_req(const char *session)
{
    static char buf[1024];

    snprintf(buf, sizeof(buf),
             "GET /outpost.goauthentik.io/auth/traefik HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             "Cookie: authentik_proxy_t=%s\r\nX-Forwarded-Host: app.test\r\n"
             "X-Forwarded-Uri: /page\r\n\r\n",
             session);
    return buf;
}

#define OK_ALICE "HTTP/1.1 200 OK\r\nX-Authentik-Username: alice\r\nContent-Length: 0\r\n\r\n"
#define REDIRECT                                                                                   \
    "HTTP/1.1 302 Found\r\nLocation: https://idp.test/login\r\nContent-Length: 5\r\n\r\nlogin"

#define HAS(s, needle) CHECK(strstr((s), (needle)) != NULL, "expected \"%s\" in:\n%s", needle, s)

/* ---- cases ---- */

static void test_miss_then_hit(void)
{
    struct conn *c = open_conn();
    const char *o;
    int n0 = ncalls;

    feed(c, check_req("S1"));
    CHECK_INT(ncalls, n0 + 1);
    CHECK_INT(c->state, CONN_WAITING);
    CHECK_INT(c->out_len, 0);
    CHECK(strstr(calls[n0].req, "authentik_proxy_t=S1") != NULL, "the IdP is asked the question");
    answer(n0, OK_ALICE);
    o = out(c);
    HAS(o, "HTTP/1.1 200");
    HAS(o, "X-Authcache: miss");
    HAS(o, "X-Authentik-Username: alice");
    CHECK_INT(c->state, CONN_OPEN);
    CHECK_INT(live_reqs(), 0);
    feed(c, check_req("S1"));
    o = out(c);
    HAS(o, "X-Authcache: hit");
    HAS(o, "X-Authentik-Username: alice");
    CHECK_INT(ncalls, n0 + 1);
}

/* A 2xx with Set-Cookie (the IdP refreshed or saved the session): the request that got it passes
 * it on to the browser; the answer is stored without it, and a hit never replays it. */
static void test_set_cookie_on_2xx(void)
{
    struct conn *c = open_conn(), *b = open_conn();
    const char *o;
    int n0 = ncalls;

    feed(c, check_req("SC"));
    feed(b, check_req("SC")); /* a waiter on the same flight gets the stored answer */
    answer(n0,
           "HTTP/1.1 200 OK\r\nX-Authentik-Username: alice\r\n"
           "Set-Cookie: authentik_proxy_t=ROTATED; Path=/; HttpOnly\r\nContent-Length: 0\r\n\r\n");
    o = out(c);
    HAS(o, "X-Authcache: miss");
    HAS(o, "Set-Cookie: authentik_proxy_t=ROTATED; Path=/; HttpOnly\r\n");
    o = out(b);
    HAS(o, "X-Authentik-Username: alice");
    CHECK(!strstr(o, "Set-Cookie"), "the waiter's answer has no Set-Cookie:\n%s", o);
    feed(c, check_req("SC"));
    o = out(c);
    HAS(o, "X-Authcache: hit");
    CHECK(!strstr(o, "Set-Cookie"), "a hit replays no Set-Cookie:\n%s", o);
}

/* An answer that came with Set-Cookie is never revalidated in the background (the new cookie would
 * reach no browser): inside the refresh-ahead window it is served without a call; past fresh-ttl
 * the request that finds it waits for the IdP and gets the Set-Cookie. */
static void test_rotating_answers_revalidate_in_band(void)
{
    struct conn *c = open_conn();
    const char *o;
    int n0 = ncalls;

    feed(c, check_req("RO"));
    answer(n0, "HTTP/1.1 200 OK\r\nX-Authentik-Username: alice\r\n"
               "Set-Cookie: authentik_proxy_t=RO2\r\nContent-Length: 0\r\n\r\n");
    out(c);
    usleep(850 * 1000); /* inside the refresh-ahead window */
    feed(c, check_req("RO"));
    if (c->state == CONN_OPEN) { /* (a slow machine may be past fresh-ttl already) */
        HAS(out(c), "X-Authcache: hit");
        CHECK_INT(ncalls, n0 + 1); /* no background call */
        usleep(300 * 1000);
        feed(c, check_req("RO"));
    }
    CHECK_INT(c->state, CONN_WAITING); /* past fresh-ttl: in band */
    CHECK_INT(ncalls, n0 + 2);
    answer(n0 + 1, "HTTP/1.1 200 OK\r\nX-Authentik-Username: alice\r\n"
                   "Set-Cookie: authentik_proxy_t=RO3\r\nContent-Length: 0\r\n\r\n");
    o = out(c);
    HAS(o, "X-Authcache: revalidated");
    HAS(o, "Set-Cookie: authentik_proxy_t=RO3");
}

/* A user name longer than the segment keeps (SHM_MAX_USER) is passed on but never stored: cut
 * short, a purge by that name would miss it. One of exactly the limit is stored. */
static void test_long_user_names(void)
{
    static char resp[2048], name[SHM_MAX_USER + 2];
    struct conn *c = open_conn();
    int n0 = ncalls;

    for (int len = SHM_MAX_USER + 1, k = 0; k < 2; k++, len = SHM_MAX_USER) {
        const char *s = k ? "LN2" : "LN1";
        memset(name, 'n', (size_t)len);
        name[len] = 0;
        snprintf(resp, sizeof(resp),
                 "HTTP/1.1 200 OK\r\nX-Authentik-Username: %s\r\nContent-Length: 0\r\n\r\n", name);
        feed(c, check_req(s));
        answer(ncalls - 1, resp);
        HAS(out(c), "X-Authcache: miss");
        feed(c, check_req(s));
        if (k == 0) {
            CHECK_INT(ncalls, n0 + 2); /* not stored: asked again */
            answer(ncalls - 1, resp);
            HAS(out(c), "X-Authcache: miss");
        } else {
            HAS(out(c), "X-Authcache: hit");
            daemon_purge(&d, name, (size_t)len, NULL, 0, "test");
            feed(c, check_req(s));
            CHECK_INT(c->state, CONN_WAITING); /* the purge by the whole name found it */
            answer(ncalls - 1, resp);
            out(c);
        }
    }
}

/* Every credential the IdP may read is in the key: the same cookie with another Authorization or
 * Proxy-Authorization (which oauth2-proxy and Authelia read first) is another question. And
 * libauthcache finds an answer under the key the daemon stored it (the inputs encoded alike). */
static void test_every_credential_in_the_key(void)
{
    static const char *const extra[] = {"", "Authorization: Bearer other\r\n",
                                        "Proxy-Authorization: Basic YTpi\r\n"};
    struct conn *c = open_conn();
    struct authcache *ac;
    struct authcache_answer got;
    char req[1024];
    int n0 = ncalls;

    for (int i = 0; i < 3; i++) {
        snprintf(req, sizeof(req),
                 "GET /outpost.goauthentik.io/auth/traefik HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 "Cookie: authentik_proxy_t=EC\r\n%sX-Forwarded-Host: app.test\r\n"
                 "X-Forwarded-Uri: /page\r\n\r\n",
                 extra[i]);
        feed(c, req);
        CHECK(ncalls == n0 + i + 1, "credential set %d is its own question (%d calls)", i, ncalls);
        answer(ncalls - 1, OK_ALICE);
        HAS(out(c), "X-Authcache: miss");
        feed(c, req);
        HAS(out(c), "X-Authcache: hit");
    }
    CHECK_INT(authcache_open(shm_name, &ac), 0);
    {
        struct authcache_request r = {.cookie = "EC",
                                      .cookie_len = 2,
                                      .cookie_name = "authentik_proxy_t",
                                      .cookie_name_len = 17,
                                      .host = "app.test",
                                      .host_len = 8,
                                      .auth_path = "/outpost.goauthentik.io/auth/traefik",
                                      .auth_path_len = 36};
        CHECK_INT(authcache_lookup(ac, &r, &got), 0);
        r.cookie_name = "authentik_proxy_zzzz"; /* alice's value under another cookie */
        r.cookie_name_len = 20;
        CHECK_INT(authcache_lookup(ac, &r, &got), -ENOENT);
        r.cookie_name = "authentik_proxy_t";
        r.cookie_name_len = 17;
        r.proxy_authorization = "Basic YTpi";
        r.proxy_authorization_len = 10;
        CHECK_INT(authcache_lookup(ac, &r, &got), 0);
        r.proxy_authorization = "Basic Ytpi";
        CHECK_INT(authcache_lookup(ac, &r, &got), -ENOENT);
        r.proxy_authorization = NULL;
        r.authorization = "Bearer other";
        r.authorization_len = 12;
        CHECK_INT(authcache_lookup(ac, &r, &got), 0);
        r.auth_method = "HEAD";
        r.auth_method_len = 4;
        CHECK_INT(authcache_lookup(ac, &r, &got), -ENOENT); /* never asked with HEAD */
    }
    authcache_close(ac);
}

/* The cookie's name is part of the question: alice's value under another session cookie's name is
 * not alice's session (authentik reads its cookie by exact name). */
static void test_cookie_name_in_the_key(void)
{
    struct conn *c = open_conn();
    int n0 = ncalls;

    feed(c, check_req("CN"));
    answer(n0, OK_ALICE);
    out(c);
    feed(c, "GET /outpost.goauthentik.io/auth/traefik HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Cookie: authentik_proxy_zzzz=CN\r\nX-Forwarded-Host: app.test\r\n"
            "X-Forwarded-Uri: /page\r\n\r\n");
    CHECK_INT(ncalls, n0 + 2); /* asked: not served alice's answer */
    answer(n0 + 1, REDIRECT);
    HAS(out(c), "HTTP/1.1 302");
}

/* Two requests read before the first is answered: the second waits, answers stay in order. */
static void test_pipelined_in_order(void)
{
    struct conn *c = open_conn();
    char two[2048];
    const char *o;
    int n0 = ncalls;

    snprintf(two, sizeof(two), "%s%s", check_req("P1"), check_req("S1"));
    feed(c, two);
    CHECK_INT(ncalls, n0 + 1);
    CHECK_INT(c->out_len, 0); /* the hit behind the miss is not answered first */
    answer(n0, OK_ALICE);
    o = out(c);
    CHECK(strstr(o, "X-Authcache: miss") && strstr(o, "X-Authcache: hit") &&
              strstr(o, "X-Authcache: miss") < strstr(o, "X-Authcache: hit"),
          "expected miss then hit, got:\n%s", o);
}

static void test_single_flight(void)
{
    struct conn *a = open_conn(), *b = open_conn();
    int n0 = ncalls;

    feed(a, check_req("S2"));
    feed(b, check_req("S2"));
    CHECK_INT(ncalls, n0 + 1);
    CHECK_INT(w->reqs[b->req_slot].state, REQ_JOINED);
    answer(n0, OK_ALICE);
    HAS(out(a), "X-Authcache: miss");
    HAS(out(b), "X-Authentik-Username: alice");
    CHECK_INT(live_reqs(), 0);
}

/* The leader is refused: its refusal is passed on, the waiter asks the IdP itself. */
static void test_refused_leader(void)
{
    struct conn *a = open_conn(), *b = open_conn();
    const char *o;
    int n0 = ncalls;

    feed(a, check_req("S3"));
    feed(b, check_req("S3"));
    answer(n0, REDIRECT);
    o = out(a);
    HAS(o, "HTTP/1.1 302");
    HAS(o, "Location: https://idp.test/login");
    HAS(o, "Cache-Control: no-store");
    CHECK_INT(ncalls, n0 + 2);
    CHECK_INT(b->state, CONN_WAITING);
    answer(n0 + 1, OK_ALICE);
    HAS(out(b), "X-Authcache: miss");
    CHECK_INT(live_reqs(), 0);
}

/* A connection that closes while it waits on another's flight: its request ends at once. */
static void test_close_while_joined(void)
{
    struct conn *a = open_conn(), *b = open_conn();
    int n0 = ncalls;

    feed(a, check_req("S4"));
    feed(b, check_req("S4"));
    CHECK_INT(live_reqs(), 2);
    conn__close(w, b);
    CHECK_INT(live_reqs(), 1);
    answer(n0, OK_ALICE);
    HAS(out(a), "X-Authcache: miss");
    CHECK_INT(live_reqs(), 0);
}

/* A connection that closes while its request is in an IdP call: the call ends the request, and
 * the answer is still stored for the next one. */
static void test_close_while_calling(void)
{
    struct conn *a = open_conn(), *b;
    int n0 = ncalls;

    feed(a, check_req("S5"));
    conn__close(w, a);
    CHECK_INT(live_reqs(), 1);
    answer(n0, OK_ALICE);
    CHECK_INT(live_reqs(), 0);
    b = open_conn();
    feed(b, check_req("S5"));
    HAS(out(b), "X-Authcache: hit");
    CHECK_INT(ncalls, n0 + 1);
}

/* A waiter whose own time ran out while the leader was refused gets 503, not another call. */
static void test_waiter_deadline(void)
{
    struct conn *a = open_conn(), *b = open_conn();
    const char *o;
    int n0 = ncalls;

    feed(a, check_req("S7"));
    feed(b, check_req("S7"));
    w->reqs[b->req_slot].r->deadline_ms = w->mono_ms - 1;
    answer(n0, REDIRECT);
    out(a);
    o = out(b);
    HAS(o, "HTTP/1.1 503");
    HAS(o, "timed out");
    CHECK_INT(ncalls, n0 + 1);
    CHECK_INT(live_reqs(), 0);
}

static void test_failures_open_the_breaker(void)
{
    struct conn *c = open_conn();
    const char *o;
    int n0 = ncalls;

    for (int i = 0; i < BREAKER_THRESHOLD; i++) {
        feed(c, check_req("S6"));
        CHECK_INT(ncalls, n0 + i + 1);
        fail(n0 + i, "connection refused or unreachable");
        o = out(c);
        HAS(o, "HTTP/1.1 503");
        HAS(o, "Retry-After:");
        HAS(o, "connection refused");
    }
    CHECK(breaker_is_open(&d.breaker), "the breaker opens after %d failures", BREAKER_THRESHOLD);
    feed(c, check_req("S6"));
    o = out(c);
    HAS(o, "HTTP/1.1 503");
    HAS(o, "circuit open");
    CHECK_INT(ncalls, n0 + BREAKER_THRESHOLD); /* failed fast: the IdP was not asked */
    /* The probe: the tick sends one, its success closes the breaker. */
    __atomic_store_n(&d.breaker.retry_at_ms, 0, __ATOMIC_RELAXED);
    fa__tick(w);
    CHECK_INT(ncalls, n0 + BREAKER_THRESHOLD + 1);
    fa__tick(w);
    CHECK_INT(ncalls, n0 + BREAKER_THRESHOLD + 1); /* one probe at a time */
    answer(ncalls - 1, OK_ALICE);
    CHECK(!breaker_is_open(&d.breaker), "the probe's success closes it");
    CHECK_INT(live_reqs(), 0);
}

/* Failures that do not say the IdP is down fail their own request (503) but never open the breaker
 * for everybody: this process's limits (no IdP connection free) and a 500 one request provoked.
 * 502, 503 and 504 do. */
static void test_breaker_counts_only_outages(void)
{
    struct conn *c = open_conn();
    const char *o;
    int n0 = ncalls;

    for (int i = 0; i < 2 * BREAKER_THRESHOLD; i++) {
        feed(c, check_req("LB"));
        CHECK_INT(ncalls, n0 + 2 * i + 1);
        fail_as(n0 + 2 * i, "too many IdP connections", 1);
        o = out(c);
        HAS(o, "HTTP/1.1 503");
        HAS(o, "too many IdP connections");
        feed(c, check_req("LB"));
        answer(n0 + 2 * i + 1, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n");
        HAS(out(c), "HTTP/1.1 503");
    }
    CHECK(!breaker_is_open(&d.breaker), "local failures and 500s leave the breaker closed");
    n0 = ncalls;
    for (int i = 0; i < BREAKER_THRESHOLD; i++) {
        feed(c, check_req("LB"));
        answer(n0 + i, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        out(c);
    }
    CHECK(breaker_is_open(&d.breaker), "502s open it");
    breaker_success(&d.breaker);
}

/* A 5xx is an IdP failure too, and a held answer past fresh-ttl is then served stale. */
static void test_stale_on_5xx(void)
{
    struct conn *c = open_conn();
    const char *o;
    int n0 = ncalls;

    feed(c, check_req("S8"));
    answer(n0, OK_ALICE);
    out(c);
    usleep(1100 * 1000); /* past --fresh-ttl 1s */
    feed(c, check_req("S8"));
    CHECK_INT(ncalls, n0 + 2); /* revalidation */
    answer(n0 + 1, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
    o = out(c);
    HAS(o, "HTTP/1.1 200");
    HAS(o, "X-Authcache: stale");
    breaker_success(&d.breaker);
}

/* A sign-out purges what the cache knows of the session, then answers with the IdP's own verdict
 * on that very request (passed on, never stored; here a redirect): it never grants by itself. */
static void test_sign_out_purges(void)
{
    static const char signout[] =
        "GET /outpost.goauthentik.io/auth/traefik HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Cookie: authentik_proxy_t=S9\r\nX-Forwarded-Host: app.test\r\n"
        "X-Forwarded-Uri: /outpost.goauthentik.io/sign_out\r\n\r\n";
    struct conn *c = open_conn();
    const char *o;
    int n0 = ncalls;

    feed(c, check_req("S9"));
    answer(n0, OK_ALICE);
    out(c);
    feed(c, signout);
    CHECK_INT(ncalls, n0 + 2); /* the IdP is asked the sign-out itself */
    CHECK(strstr(calls[n0 + 1].req, "X-Forwarded-Uri: /outpost.goauthentik.io/sign_out\r\n") !=
              NULL,
          "the IdP gets the request as sent: %s", calls[n0 + 1].req);
    answer(n0 + 1, REDIRECT);
    o = out(c);
    HAS(o, "HTTP/1.1 302");
    HAS(o, "X-Authcache: signout");
    feed(c, check_req("S9"));
    CHECK_INT(ncalls, n0 + 3); /* purged: asked again */
    answer(n0 + 2, OK_ALICE);
    HAS(out(c), "X-Authcache: miss");
    /* The IdP allowing the sign-out request (2xx naming the user) is passed on too, not stored,
     * and purges every answer of that user; without a credential it is asked all the same. */
    feed(c, signout);
    answer(ncalls - 1, OK_ALICE);
    o = out(c);
    HAS(o, "HTTP/1.1 200");
    HAS(o, "X-Authcache: signout");
    feed(c, check_req("S9"));
    CHECK_INT(c->state, CONN_WAITING);
    answer(ncalls - 1, OK_ALICE);
    out(c);
    feed(c,
         "GET /outpost.goauthentik.io/auth/traefik HTTP/1.1\r\nHost: 127.0.0.1\r\n"
         "X-Forwarded-Host: app.test\r\nX-Forwarded-Uri: /outpost.goauthentik.io/sign_out\r\n\r\n");
    CHECK_INT(c->state, CONN_WAITING);
    answer(ncalls - 1, REDIRECT);
    HAS(out(c), "HTTP/1.1 302");
}

/* Sign-outs go to the IdP at most --signout-rate a second: the rest wait their turn in order, or
 * get 503 unsent when more wait than go within --upstream-timeout; a waiting one whose client left
 * is never sent, and one whose time ran out gets 503. Here: 1 a second, 2 may wait. */
static void test_signouts_paced(void)
{
    static const char signout[] =
        "GET /outpost.goauthentik.io/auth/traefik HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Cookie: authentik_proxy_t=P%d\r\nX-Forwarded-Host: app.test\r\n"
        "X-Forwarded-Uri: /outpost.goauthentik.io/sign_out\r\n\r\n";
    struct pace saved = w->pace;
    struct conn *c[6];
    char req[512];
    int n0 = ncalls;
    uint64_t paced0 = w->m->signouts_paced, shed0 = w->m->signouts_shed;
    const char *o;

    loop__clock(w);
    w->pace.per_ms = 0.001;
    w->pace.burst = w->pace.tokens = 1.0;
    w->pace.max = 2;
    w->pace.refilled_ms = w->mono_ms;
    for (int i = 0; i < 4; i++) {
        c[i] = open_conn();
        snprintf(req, sizeof(req), signout, i);
        feed(c[i], req);
    }
    CHECK_INT(ncalls, n0 + 1); /* the first has the token */
    HAS(calls[n0].req, "Cookie: authentik_proxy_t=P0");
    CHECK_INT(w->pace.n, 2);
    CHECK_INT(w->m->signouts_paced - paced0, 2);
    o = out(c[3]); /* a third would wait past --upstream-timeout */
    HAS(o, "HTTP/1.1 503");
    HAS(o, "too many sign-outs");
    CHECK_INT(w->m->signouts_shed - shed0, 1);
    answer(n0, REDIRECT);
    HAS(out(c[0]), "HTTP/1.1 302");
    CHECK_INT(c[1]->state, CONN_WAITING);
    fa__pace(w); /* no token yet */
    CHECK_INT(ncalls, n0 + 1);
    w->pace.refilled_ms = w->mono_ms - 1000; /* a second later: the next in order */
    fa__pace(w);
    CHECK_INT(ncalls, n0 + 2);
    HAS(calls[n0 + 1].req, "Cookie: authentik_proxy_t=P1");
    answer(n0 + 1, REDIRECT);
    HAS(out(c[1]), "HTTP/1.1 302");
    conn__close(w, c[2]); /* its client left: never sent */
    CHECK_INT(live_reqs(), 1);
    w->pace.refilled_ms = w->mono_ms - 1000;
    fa__pace(w);
    CHECK_INT(ncalls, n0 + 2);
    CHECK_INT(live_reqs(), 0);
    CHECK_INT(w->pace.n, 0);
    /* One that waited past its deadline: 503, unsent. */
    w->pace.tokens = 0;
    c[4] = open_conn();
    snprintf(req, sizeof(req), signout, 4);
    feed(c[4], req);
    CHECK_INT(w->pace.n, 1);
    w->reqs[c[4]->req_slot].r->deadline_ms = w->mono_ms - 1;
    fa__pace(w);
    HAS(out(c[4]), "HTTP/1.1 503");
    CHECK_INT(ncalls, n0 + 2);
    CHECK_INT(w->m->signouts_shed - shed0, 2);
    CHECK_INT(live_reqs(), 0);
    /* A sign-out's arrival releases none queued: that could answer another connection and
     * parse its pipelined request inside this one's (the parse's scratch is the worker's). X
     * waits with a check pipelined behind it, its time run out; Y's sign-out arrives: nothing of
     * X's happens until the loop's turn (fa__pace), and Y's request is Y's. */
    w->pace.tokens = 0;
    c[0] = open_conn();
    snprintf(req, sizeof(req), signout, 20);
    {
        char both[sizeof(req) + 1024];
        snprintf(both, sizeof(both), "%s%s", req, check_req("PX"));
        feed(c[0], both);
    }
    CHECK_INT(w->pace.n, 1);
    w->reqs[c[0]->req_slot].r->deadline_ms = w->mono_ms - 1;
    w->pace.tokens = 1.0;
    w->pace.refilled_ms = w->mono_ms + 1000000; /* no refill in this step */
    c[1] = open_conn();
    snprintf(req, sizeof(req), signout, 21);
    feed(c[1], req);
    CHECK_INT(ncalls, n0 + 2); /* X's pipelined check not parsed yet, Y queued behind X */
    CHECK_INT(w->pace.n, 2);
    CHECK_INT(c[0]->state, CONN_WAITING);
    w->pace.refilled_ms = w->mono_ms;
    fa__pace(w); /* X: 503 and its check goes on; Y: the token */
    HAS(out(c[0]), "HTTP/1.1 503");
    CHECK_INT(ncalls, n0 + 4);
    HAS(calls[n0 + 2].req, "Cookie: authentik_proxy_t=PX");
    HAS(calls[n0 + 3].req, "Cookie: authentik_proxy_t=P21");
    answer(n0 + 2, OK_ALICE);
    answer(n0 + 3, REDIRECT);
    HAS(out(c[0]), "X-Authcache: miss");
    HAS(out(c[1]), "HTTP/1.1 302");
    CHECK_INT(live_reqs(), 0);
    n0 += 2;
    /* --signout-rate 0: no limit. */
    w->pace.per_ms = 0;
    c[5] = open_conn();
    for (int i = 5; i < 8; i++) {
        snprintf(req, sizeof(req), signout, i);
        feed(c[5], req);
        CHECK_INT(ncalls, n0 + 3 + (i - 5));
        answer(ncalls - 1, REDIRECT);
        HAS(out(c[5]), "HTTP/1.1 302");
    }
    w->pace = saved;
}

static void purge(int kind, const char *session)
{
    switch (kind) {
    case 0:
        daemon_purge(&d, "alice", 5, NULL, 0, "test");
        break;
    case 1:
        daemon_purge(&d, NULL, 0, session, strlen(session), "test");
        break;
    case 2:
        daemon_purge(&d, NULL, 0, NULL, 0, "test");
        break;
    default:
        daemon_purge(&d, "mallory", 7, NULL, 0, "test"); /* covers someone else */
        break;
    }
    /* What follows is in a later millisecond: an answer confirmed in the purge's own millisecond is
     * hidden by it (test_purge_in_the_store_millisecond), and these tests are about order. */
    usleep(2000);
}

/* An answer asked for before a purge that covers it (by user, by session, everything) answers the
 * request that asked, but is not kept: the next request asks the IdP again. A purge of someone
 * else does not stop it being kept. */
static void test_purge_overtakes_answer(void)
{
    for (int kind = 0; kind < 4; kind++) {
        struct conn *a = open_conn(), *b = open_conn();
        char s[16];
        int n0 = ncalls;

        snprintf(s, sizeof(s), "PF%d", kind);
        feed(a, check_req(s));
        feed(b, check_req(s)); /* joins a's flight */
        purge(kind, s);
        answer(n0, OK_ALICE);
        HAS(out(a), "X-Authcache: miss");
        if (kind == 3) {
            HAS(out(b), "X-Authentik-Username: alice");
            feed(a, check_req(s));
            HAS(out(a), "X-Authcache: hit");
            CHECK_INT(ncalls, n0 + 1);
            continue;
        }
        CHECK(ncalls == n0 + 2, "purge kind %d: the waiter asks again (expected %d calls, got %d)",
              kind, n0 + 2, ncalls);
        answer(n0 + 1, OK_ALICE); /* asked after the purge: kept */
        HAS(out(b), "X-Authcache: miss");
        feed(a, check_req(s));
        HAS(out(a), "X-Authcache: hit");
        CHECK_INT(ncalls, n0 + 2);
        CHECK_INT(live_reqs(), 0);
    }
}

/* The same for a revalidation of a held answer and for a refresh ahead (a background call nobody
 * waits for): a sign-out while either is in flight leaves nothing held. */
static void test_purge_overtakes_revalidation(void)
{
    struct conn *c = open_conn();
    const char *o;
    int n0 = ncalls;

    feed(c, check_req("RV"));
    answer(n0, OK_ALICE);
    out(c);
    usleep(850 * 1000); /* inside the refresh-ahead window (the last 200 ms of --fresh-ttl 1s) */
    feed(c, check_req("RV"));
    CHECK_INT(ncalls, n0 + 2); /* a refresh ahead, or (on a slow machine) a revalidation */
    purge(0, "RV");
    answer(n0 + 1, OK_ALICE);
    o = out(c);
    HAS(o, "X-Authentik-Username: alice");
    feed(c, check_req("RV"));
    CHECK(ncalls == n0 + 3, "after the purge the IdP is asked again (expected %d calls, got %d)",
          n0 + 3, ncalls);
    answer(n0 + 2, OK_ALICE);
    HAS(out(c), "X-Authcache: miss");
    usleep(1100 * 1000); /* past fresh-ttl: a revalidation */
    feed(c, check_req("RV"));
    CHECK_INT(c->state, CONN_WAITING);
    purge(1, "RV");
    answer(n0 + 3, OK_ALICE);
    HAS(out(c), "X-Authcache: revalidated");
    feed(c, check_req("RV"));
    CHECK(ncalls == n0 + 5, "after the purge the IdP is asked again (expected %d calls, got %d)",
          n0 + 5, ncalls);
    answer(n0 + 4, OK_ALICE);
    out(c);
}

/* A purge stamped but not yet run on the segment (queued for the purge thread) already stops the
 * answer it covers being served; an answer asked for after it is kept and served. */
static void test_stamp_hides_before_the_scan(void)
{
    struct conn *c = open_conn();
    struct shm_answer a;
    struct shm_key k;
    int n0 = ncalls;

    feed(c, check_req("ST"));
    answer(n0, OK_ALICE);
    out(c);
    epoch_purge_user(d.epochs, "alice", 5, daemon_now_ms());
    usleep(2000); /* the answers below are confirmed in a later millisecond than the purge */
    feed(c, check_req("ST"));
    CHECK_INT(ncalls, n0 + 2); /* not served: asked again */
    CHECK_INT(c->state, CONN_WAITING);
    k = w->reqs[c->req_slot].r->key;
    CHECK(shm_lookup(&d.shm, k.digest, daemon_now_ms(), &a, w->lbuf, sizeof(w->lbuf), 0) == 0,
          "the segment still holds the answer (nobody ran the purge)");
    answer(n0 + 1, OK_ALICE);
    HAS(out(c), "X-Authcache: miss");
    feed(c, check_req("ST"));
    HAS(out(c), "X-Authcache: hit");
    CHECK_INT(ncalls, n0 + 2);
}

/* A purge stamped in the same millisecond as an answer stored after an earlier purge (the
 * differential test, authentik seed 1204 request 3836897: a logout marker 1 ms after a miss of the
 * same session; the miss's answer had been given confirmed_ms = the earlier stamp + 1, a
 * millisecond in the future, so the logout's stamp in the current millisecond did not hide it and
 * it was served as a hit until the purge thread's walk). */
static void test_purge_in_the_store_millisecond(void)
{
    struct conn *c = open_conn();
    int n0 = ncalls, same = 0;

    for (int tries = 0; tries < 50 && !same; tries++) {
        int64_t t1 = daemon_now_ms();
        epoch_purge_user(d.epochs, "alice", 5, t1);
        feed(c, check_req("MS"));
        answer(ncalls - 1, OK_ALICE);
        HAS(out(c), "X-Authcache: miss");
        if (daemon_now_ms() != t1)
            continue; /* the millisecond went by: try again */
        same = 1;
        epoch_purge_user(d.epochs, "alice", 5, t1); /* a logout, still in that millisecond */
        feed(c, check_req("MS"));
        CHECK(c->state == CONN_WAITING,
              "an answer stored before a purge of its millisecond was served (calls %d)",
              ncalls - n0);
        answer(ncalls - 1, OK_ALICE);
        out(c);
    }
    CHECK(same, "never stored an answer within one millisecond of the purge (machine too slow)");
}

/* A session purge that finds users: every answer of every user found among the session's answers
 * goes (another session of the same user too), others stay. */
static void test_session_purge_finds_users(void)
{
    struct conn *c = open_conn();
    struct purge p = {.kind = PURGE_CREDS, .ncred = 1};
    int n0 = ncalls;

    feed(c, check_req("FU1"));
    answer(n0, OK_ALICE);
    feed(c, check_req("FU2")); /* alice's other session */
    answer(n0 + 1, OK_ALICE);
    feed(c, check_req("FU3"));
    answer(n0 + 2, "HTTP/1.1 200 OK\r\nX-Authentik-Username: bob\r\nContent-Length: 0\r\n\r\n");
    out(c);
    shm_key_cred(&d.shm, SHM_CRED_COOKIE, "FU1", 3, p.cred[0]);
    daemon_purge_soon(&d, &p, 1, "test");
    feed(c, check_req("FU2"));
    CHECK_INT(ncalls, n0 + 4); /* alice's other session was purged too */
    answer(n0 + 3, OK_ALICE);
    feed(c, check_req("FU3"));
    HAS(out(c), "X-Authcache: hit"); /* bob's stays */
    CHECK_INT(ncalls, n0 + 4);
}

/* The purge thread: a batch of sign-outs of sessions nobody cached, a user purge and a session
 * purge that must find its user run in one go; what they cover is gone, the rest stays. */
static void test_purge_thread_batches(void)
{
    struct conn *c = open_conn();
    struct purge p = {.kind = PURGE_CREDS, .ncred = 1};
    int n0 = ncalls;

    feed(c, check_req("PT1")); /* alice */
    answer(ncalls - 1, OK_ALICE);
    feed(c, check_req("PT2")); /* alice's other session */
    answer(ncalls - 1, OK_ALICE);
    feed(c, check_req("PT3")); /* carol */
    answer(ncalls - 1,
           "HTTP/1.1 200 OK\r\nX-Authentik-Username: carol\r\nContent-Length: 0\r\n\r\n");
    feed(c, check_req("PT4")); /* dave */
    answer(ncalls - 1,
           "HTTP/1.1 200 OK\r\nX-Authentik-Username: dave\r\nContent-Length: 0\r\n\r\n");
    out(c);
    CHECK_INT(purger_start(&d, &d.purger), 0);
    for (int i = 0; i < 300; i++) { /* sign-outs of sessions nobody cached */
        char v[16];
        int n = snprintf(v, sizeof(v), "unknown%d", i);
        shm_key_cred(&d.shm, SHM_CRED_COOKIE, v, (size_t)n, p.cred[0]);
        daemon_purge_soon(&d, &p, 1, "test flood");
    }
    shm_key_cred(&d.shm, SHM_CRED_COOKIE, "PT1", 3, p.cred[0]);
    daemon_purge_soon(&d, &p, 1, "test"); /* finds alice: PT2 goes too */
    {
        struct purge u = {.kind = PURGE_USER, .user = "carol", .user_len = 5};
        daemon_purge_soon(&d, &u, 0, "test");
    }
    purger_stop(d.purger); /* runs what is queued */
    d.purger = NULL;
    for (int i = 1; i <= 4; i++) {
        char s[8];
        snprintf(s, sizeof(s), "PT%d", i);
        struct shm_key k;
        struct shm_query q = {.cred_kind = SHM_CRED_COOKIE,
                              .cred = s,
                              .cred_len = 3,
                              .host = "app.test",
                              .host_len = 8,
                              .auth_path = "/outpost.goauthentik.io/auth/traefik",
                              .auth_path_len = 36};
        struct shm_answer a;
        char in[64];
        size_t il = 0;
        shm_key_input(in, &il, sizeof(in), SHM_IN_COOKIE_NAME, "authentik_proxy_t", 17);
        q.inputs = in;
        q.inputs_len = il;
        shm_key_query(&d.shm, &q, &k, 0);
        int held =
            shm_lookup(&d.shm, k.digest, daemon_now_ms(), &a, w->lbuf, sizeof(w->lbuf), 0) == 0;
        CHECK(held == (i == 4), "%s: expected %s in the segment", s,
              i == 4 ? "still" : "no longer");
    }
    CHECK_INT(ncalls, n0 + 4);
}

/* Deadlines are kept in order on the monotonic clock; the tick closes only the expired. */
static void test_timers(void)
{
    struct conn *idle = open_conn(), *partial = open_conn(), *waiting = open_conn();
    uint32_t gi = idle->gen, gp = partial->gen;
    int64_t t0 = w->mono_ms;
    int n0 = ncalls;

    feed(partial, "GET /outpost.goauthentik.io/auth/traefik HTTP/1.1\r\nHost: x\r\n");
    CHECK_INT(partial->timer, TIMER_HEADER);
    feed(waiting, check_req("S10"));
    CHECK_INT(waiting->timer, TIMER_NONE); /* the IdP call has its own deadline */
    w->mono_ms = t0 + HEADER_TIMEOUT_MS - 1;
    conn__expire(w);
    CHECK(partial->gen == gp && partial->state == CONN_OPEN, "a head within its time stays");
    w->mono_ms = t0 + HEADER_TIMEOUT_MS + 1;
    conn__expire(w);
    CHECK(partial->gen != gp || partial->state == CONN_CLOSING, "an unfinished head is closed");
    CHECK(idle->gen == gi && idle->state == CONN_OPEN, "an idle connection within its time stays");
    w->mono_ms = t0 + IDLE_TIMEOUT_MS + 1;
    conn__expire(w);
    CHECK(idle->gen != gi || idle->state == CONN_CLOSING, "an idle connection past its time goes");
    CHECK_INT(waiting->state, CONN_WAITING);
    w->mono_ms = daemon_mono_ms();
    answer(n0, OK_ALICE);
    HAS(out(waiting), "X-Authcache: miss");
    CHECK_INT(waiting->timer, TIMER_IDLE);
}

int main(void)
{
    char err[512];
    char *envp[] = {NULL};
    struct shm_params sp = {.capacity = 1024};
    int created;

    snprintf(shm_name, sizeof(shm_name), "authcache-test-fa-%d", (int)getpid());
    char *argv[] = {"authcached",  "--upstream",  "http://127.0.0.1:9",
                    "--listen",    "127.0.0.1:0", "--admin",
                    "127.0.0.1:0", "--shm",       shm_name,
                    "--workers",   "1",           "--fresh-ttl",
                    "1s",          "--log-level", "error",
                    NULL};
    if (config_parse(&cfg, (int)(sizeof(argv) / sizeof(argv[0])) - 1, argv, envp, err,
                     sizeof(err)) != 0) {
        fprintf(stderr, "config_parse: %s\n", err);
        return 1;
    }
    log_init(cfg.log_level, cfg.log_format);
    d.cfg = &cfg;
    d.nworkers = 1;
    d.metrics = aligned_alloc(64, sizeof(*d.metrics));
    memset(d.metrics, 0, sizeof(*d.metrics));
    d.workers = calloc(1, sizeof(*d.workers));
    d.flights = flights_new();
    d.epochs = epoch_new();
    if (shm_open_or_create(&d.shm, shm_name, &sp, &created) < 0) {
        fprintf(stderr, "cannot make the segment\n");
        return 1;
    }
    int usage_error;
    if (!(w = d.workers[0] = worker_new(&d, 0, 64, 8, err, sizeof(err), &usage_error))) {
        fprintf(stderr, "worker_new: %s\n", err);
        return 1;
    }
    w->fake_call = fake_call;

    test_miss_then_hit();
    test_pipelined_in_order();
    test_set_cookie_on_2xx();
    test_every_credential_in_the_key();
    test_cookie_name_in_the_key();
    test_long_user_names();
    test_rotating_answers_revalidate_in_band();
    test_single_flight();
    test_refused_leader();
    test_close_while_joined();
    test_close_while_calling();
    test_waiter_deadline();
    test_failures_open_the_breaker();
    test_stale_on_5xx();
    test_breaker_counts_only_outages();
    test_sign_out_purges();
    test_signouts_paced();
    test_timers();
    test_purge_overtakes_answer();
    test_purge_overtakes_revalidation();
    test_purge_in_the_store_millisecond();
    test_stamp_hides_before_the_scan();
    test_session_purge_finds_users();
    test_purge_thread_batches();

    worker_free(w);
    shm_detach(&d.shm);
    {
        char path[128];
        snprintf(path, sizeof(path), "/dev/shm/%s", shm_name);
        unlink(path);
    }
    flights_free(d.flights);
    epoch_free(d.epochs);
    free(d.workers);
    free(d.metrics);
    return check_done("test_fa");
}
