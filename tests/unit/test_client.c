/*
 * test_client.c — the client library (client/authcache.h) against a segment written the way
 * authcached writes it (shm_key_query): exact lookups, key scope, find by credential and host,
 * cookie vs Authorization credentials, foreach, stats, and following a re-created segment.
 */
#include <errno.h>
#include <time.h>
#include <unistd.h>

#include "authcache.h"
#include "check.h"
#include "shm.h"

static char seg[64];
static const char *AUTH = "/outpost.goauthentik.io/auth/traefik";

static void store(struct shm *h, int kind, const char *cred, const char *host, const char *path,
                  const char *method, const char *uri_path, const char *user, int64_t now)
{
    char hdrs[256];
    struct shm_query q = {.cred_kind = kind,
                          .cred = cred,
                          .cred_len = strlen(cred),
                          .host = host,
                          .host_len = strlen(host),
                          .auth_path = path,
                          .auth_path_len = strlen(path)};
    struct shm_answer a = {0};
    int n = snprintf(hdrs, sizeof(hdrs), "X-authentik-username: %s\r\nX-Host: %s\r\n", user, host);

    if (method) {
        q.scope_uri = 1;
        q.method = method;
        q.method_len = strlen(method);
        q.uri_path = uri_path;
        q.uri_path_len = strlen(uri_path);
    }
    shm_key_query(h, &q, &a.key, 1);
    a.first_seen_ms = now - 1000;
    a.confirmed_ms = now;
    a.fresh_until_ms = now + 30000;
    a.session_end_ms = now + 3600000;
    a.host = host;
    a.host_len = (uint32_t)strlen(host);
    a.user = user;
    a.user_len = (uint32_t)strlen(user);
    a.hdrs = hdrs;
    a.hdrs_len = (uint32_t)n;
    CHECK_INT(shm_insert(h, &a), 0);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int main(void)
{
    struct shm_params p = {.capacity = 1024};
    struct authcache *c;
    struct authcache_answer a;
    struct authcache_stats st;
    struct shm h;
    int64_t now = now_ms();

    snprintf(seg, sizeof(seg), "authcache-client-%d", (int)getpid());
    CHECK_INT(authcache_open(seg, &c), -ENOENT);
    CHECK_INT(shm_create(&h, seg, &p), 0);
    store(&h, SHM_CRED_COOKIE, "sess-alice", "app1.test", AUTH, NULL, NULL, "alice", now);
    store(&h, SHM_CRED_COOKIE, "sess-alice", "app2.test", AUTH, NULL, NULL, "alice", now);
    store(&h, SHM_CRED_AUTHORIZATION, "Bearer tok-bob", "app1.test", AUTH, NULL, NULL, "bob", now);
    store(&h, SHM_CRED_COOKIE, "sess-carol", "rules.test", AUTH, "GET", "/a", "carol", now);
    CHECK_INT(authcache_open(seg, &c), 0);

    struct authcache_request r = {.cookie = "sess-alice",
                                  .cookie_len = 10,
                                  .host = "app1.test",
                                  .host_len = 9,
                                  .auth_path = AUTH,
                                  .auth_path_len = strlen(AUTH)};
    CHECK_INT(authcache_lookup(c, &r, &a), 0);
    CHECK_MEM(a.user, a.user_len, "alice", 5);
    CHECK_MEM(a.headers, a.headers_len, "X-authentik-username: alice\r\nX-Host: app1.test\r\n",
              strlen("X-authentik-username: alice\r\nX-Host: app1.test\r\n"));
    CHECK(a.fresh_until_ms > now, "answer should be fresh");
    /* Another auth path, another host, or the cookie given as Authorization: other keys. */
    r.auth_path = "/outpost.goauthentik.io/auth/nginx";
    r.auth_path_len = strlen(r.auth_path);
    CHECK_INT(authcache_lookup(c, &r, &a), -ENOENT);
    r.auth_path = AUTH;
    r.auth_path_len = strlen(AUTH);
    r.host = "app3.test";
    CHECK_INT(authcache_lookup(c, &r, &a), -ENOENT);
    struct authcache_request rb = {.authorization = "Bearer tok-bob",
                                   .authorization_len = 14,
                                   .host = "app1.test",
                                   .host_len = 9,
                                   .auth_path = AUTH,
                                   .auth_path_len = strlen(AUTH)};
    CHECK_INT(authcache_lookup(c, &rb, &a), 0);
    CHECK_MEM(a.user, a.user_len, "bob", 3);
    rb.cookie = "Bearer tok-bob";
    rb.cookie_len = 14;
    CHECK_INT(authcache_lookup(c, &rb, &a), -ENOENT);
    /* Key scope uri: method and path are part of the key. */
    struct authcache_request rc = {.cookie = "sess-carol",
                                   .cookie_len = 10,
                                   .host = "rules.test",
                                   .host_len = 10,
                                   .auth_path = AUTH,
                                   .auth_path_len = strlen(AUTH),
                                   .method = "GET",
                                   .method_len = 3,
                                   .uri_path = "/a",
                                   .uri_path_len = 2};
    CHECK_INT(authcache_lookup(c, &rc, &a), 0);
    rc.uri_path = "/b";
    CHECK_INT(authcache_lookup(c, &rc, &a), -ENOENT);
    struct authcache_request none = {.host = "x"};
    CHECK_INT(authcache_lookup(c, &none, &a), -EINVAL);

    /* Find by credential and host, whatever the auth path. */
    CHECK_INT(authcache_find(c, "sess-alice", 10, NULL, 0, "app2.test", 9, &a), 0);
    CHECK_MEM(a.host, a.host_len, "app2.test", 9);
    CHECK_INT(authcache_find(c, "sess-alice", 10, NULL, 0, "app9.test", 9, &a), -ENOENT);
    CHECK_INT(authcache_find(c, NULL, 0, "Bearer tok-bob", 14, "app1.test", 9, &a), 0);
    CHECK_MEM(a.user, a.user_len, "bob", 3);

    CHECK_INT(authcache_stats(c, &st), 0);
    CHECK_INT(st.entries, 4);
    CHECK_INT(st.capacity, 1024);

    /* The daemon re-creates the segment (another capacity): the handle follows it. */
    struct shm h2;
    p.capacity = 2048;
    CHECK_INT(shm_create(&h2, seg, &p), 0);
    CHECK(authcache_retired(c) == 1, "old segment should read as retired");
    store(&h2, SHM_CRED_COOKIE, "sess-dave", "app1.test", AUTH, NULL, NULL, "dave", now);
    r.cookie = "sess-dave";
    r.cookie_len = 9;
    r.host = "app1.test";
    CHECK_INT(authcache_lookup(c, &r, &a), 0);
    CHECK_MEM(a.user, a.user_len, "dave", 4);
    CHECK_INT(authcache_stats(c, &st), 0);
    CHECK_INT(st.capacity, 2048);

    authcache_close(c);
    shm_detach(&h);
    shm_detach(&h2);
    char path[128];
    snprintf(path, sizeof(path), "/dev/shm/%s", seg);
    unlink(path);
    return check_done("test_client");
}
