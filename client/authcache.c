/*
 * authcache.c — the client library (authcache.h) over a read-only shm handle. The key scheme is the
 * segment's own (shm_key_query), so a lookup here finds exactly what authcached stored.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "authcache.h"
#include "shm.h"

struct authcache {
    struct shm h;
    char name[256];
    uint8_t buf[SHM_MAX_RECORD];
    uint8_t host[SHM_MAX_HOST], user[SHM_MAX_USER], hdrs[SHM_MAX_HDRS]; /* find/foreach copies */
    char inputs[16384]; /* a lookup's other inputs (shm_key_input) */
};

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int authcache_open(const char *name, struct authcache **out)
{
    struct authcache *c = malloc(sizeof(*c));
    int rc;

    *out = NULL;
    if (!c)
        return -ENOMEM;
    if ((rc = shm_attach(&c->h, name, 0)) < 0) {
        free(c);
        return rc;
    }
    strncpy(c->name, name, sizeof(c->name) - 1);
    c->name[sizeof(c->name) - 1] = 0;
    *out = c;
    return 0;
}

void authcache_close(struct authcache *c)
{
    if (!c)
        return;
    shm_detach(&c->h);
    free(c);
}

int authcache_retired(struct authcache *c)
{
    return shm_retired(&c->h);
}

/* Follow a daemon that re-created the segment (new capacity or key). */
static void reopen_if_retired(struct authcache *c)
{
    struct shm n;

    if (shm_retired(&c->h) && shm_attach(&n, c->name, 0) == 0) {
        shm_detach(&c->h);
        c->h = n;
    }
}

static void fill(struct authcache_answer *out, const struct shm_answer *a)
{
    out->headers = a->hdrs;
    out->headers_len = a->hdrs_len;
    out->user = a->user;
    out->user_len = a->user_len;
    out->host = a->host;
    out->host_len = a->host_len;
    out->first_seen_ms = a->first_seen_ms;
    out->confirmed_ms = a->confirmed_ms;
    out->fresh_until_ms = a->fresh_until_ms;
    out->session_end_ms = a->session_end_ms;
    memcpy(out->digest, a->key.digest, sizeof(out->digest));
}

int authcache_lookup(struct authcache *c, const struct authcache_request *r,
                     struct authcache_answer *out)
{
    struct shm_query q = {0};
    struct shm_key k;
    struct shm_answer a;
    int rc;

    if (r->cookie) {
        q.cred_kind = SHM_CRED_COOKIE;
        q.cred = r->cookie;
        q.cred_len = r->cookie_len;
    } else if (r->authorization) {
        q.cred_kind = SHM_CRED_AUTHORIZATION;
        q.cred = r->authorization;
        q.cred_len = r->authorization_len;
    } else if (r->proxy_authorization) {
        q.cred_kind = SHM_CRED_PROXY_AUTHORIZATION;
        q.cred = r->proxy_authorization;
        q.cred_len = r->proxy_authorization_len;
    } else {
        return -EINVAL;
    }
    /* The other inputs, as the daemon adds them (daemon/policy.c policy_classify). */
    {
        const struct {
            enum shm_input tag;
            const char *v;
            size_t n;
            int use;
        } in[] = {
            {SHM_IN_COOKIE_NAME, r->cookie_name, r->cookie_name_len,
             q.cred_kind == SHM_CRED_COOKIE},
            {SHM_IN_AUTHORIZATION, r->authorization, r->authorization_len,
             q.cred_kind != SHM_CRED_AUTHORIZATION},
            {SHM_IN_PROXY_AUTHORIZATION, r->proxy_authorization, r->proxy_authorization_len,
             q.cred_kind != SHM_CRED_PROXY_AUTHORIZATION},
            {SHM_IN_FORWARDED_FOR, r->forwarded_for, r->forwarded_for_len, 1},
            {SHM_IN_REAL_IP, r->real_ip, r->real_ip_len, 1},
            {SHM_IN_AUTH_METHOD, r->auth_method, r->auth_method_len,
             !(r->auth_method_len == 3 && memcmp(r->auth_method, "GET", 3) == 0)},
        };
        for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++)
            if (in[i].v && in[i].use &&
                shm_key_input(c->inputs, &q.inputs_len, sizeof(c->inputs), in[i].tag, in[i].v,
                              in[i].n) < 0)
                return -E2BIG;
        q.inputs = c->inputs;
    }
    q.host = r->host ? r->host : "";
    q.host_len = r->host_len;
    q.auth_path = r->auth_path ? r->auth_path : "";
    q.auth_path_len = r->auth_path_len;
    if (r->method || r->uri_path) {
        q.scope_uri = 1;
        q.method = r->method ? r->method : "";
        q.method_len = r->method_len;
        q.uri_path = r->uri_path ? r->uri_path : "";
        q.uri_path_len = r->uri_path_len;
    }
    reopen_if_retired(c);
    shm_key_query(&c->h, &q, &k, 0);
    rc = shm_lookup(&c->h, k.digest, now_ms(), &a, c->buf, sizeof(c->buf), 0);
    if (rc == 0)
        fill(out, &a);
    return rc;
}

struct find {
    struct authcache *c;
    uint8_t cred[SHM_CRED_LEN];
    const char *host;
    size_t host_len;
    struct authcache_answer *out;
    int64_t best_confirmed;
};

/* Keep a copy of the most recently confirmed answer of the credential on the host. */
static int find_fn(const struct shm_answer *a, void *arg)
{
    struct find *f = arg;

    if (memcmp(a->key.cred, f->cred, SHM_CRED_LEN) != 0 || a->host_len != f->host_len ||
        memcmp(a->host, f->host, f->host_len) != 0 || a->confirmed_ms <= f->best_confirmed)
        return 0;
    f->best_confirmed = a->confirmed_ms;
    memcpy(f->c->host, a->host, a->host_len);
    memcpy(f->c->user, a->user, a->user_len);
    memcpy(f->c->hdrs, a->hdrs, a->hdrs_len);
    fill(f->out, a);
    f->out->host = (const char *)f->c->host;
    f->out->user = (const char *)f->c->user;
    f->out->headers = (const char *)f->c->hdrs;
    return 0;
}

int authcache_find(struct authcache *c, const char *cookie, size_t cookie_len,
                   const char *authorization, size_t authorization_len, const char *host,
                   size_t host_len, struct authcache_answer *out)
{
    struct find f = {.c = c, .host = host, .host_len = host_len, .out = out, .best_confirmed = -1};

    if (!host || (!cookie && !authorization))
        return -EINVAL;
    reopen_if_retired(c);
    if (cookie)
        shm_key_cred(&c->h, SHM_CRED_COOKIE, cookie, cookie_len, f.cred);
    else
        shm_key_cred(&c->h, SHM_CRED_AUTHORIZATION, authorization, authorization_len, f.cred);
    shm_foreach(&c->h, now_ms(), find_fn, &f);
    return f.best_confirmed >= 0 ? 0 : -ENOENT;
}

struct each {
    authcache_fn fn;
    void *arg;
};

static int each_fn(const struct shm_answer *a, void *arg)
{
    struct each *e = arg;
    struct authcache_answer out;

    fill(&out, a);
    return e->fn(&out, e->arg);
}

int authcache_foreach(struct authcache *c, authcache_fn fn, void *arg)
{
    struct each e = {fn, arg};

    reopen_if_retired(c);
    return shm_foreach(&c->h, now_ms(), each_fn, &e);
}

int authcache_stats(struct authcache *c, struct authcache_stats *out)
{
    struct shm_stats st;

    reopen_if_retired(c);
    shm_stats_get(&c->h, &st);
    memset(out, 0, sizeof(*out));
#define X(field, key, prom, kind, help) out->key = st.field;
    SHM_STATS_FIGURES(X)
#undef X
    out->generation = st.generation;
    for (unsigned i = 0; i < 8 && i < SHM_SIZE_CLASSES; i++)
        out->size_class[i] = st.size_class[i];
    return 0;
}
