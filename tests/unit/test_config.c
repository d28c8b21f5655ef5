/*
 * test_config.c — authcached's flags and environment: defaults, every flag, --name=VALUE, env vs
 * flag precedence, presets and overrides, repeatable flags, the secret files, and every kind of
 * error, each of which must be one line naming the flag (and never showing a secret).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "config.h"

#define MAXARGS 128

static char err[512];
static char tmpdir[] = "/tmp/test_config.XXXXXX";

/* Parse "authcached" + args (NULL-terminated) with env (NULL-terminated, may be NULL). */
static int run(struct config *cfg, const char *const *args, const char *const *env)
{
    char *argv[MAXARGS];
    int argc = 0;

    argv[argc++] = "authcached";
    for (; args && *args; args++)
        argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    memset(err, 'X', sizeof(err)); /* so a missing NUL would show */
    err[sizeof(err) - 1] = '\0';
    return config_parse(cfg, argc, argv, (char **)env, err, sizeof(err));
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})
#define UP "--upstream", "http://127.0.0.1:9000"

/* An error: -1, one line, naming `flag` (and `also` if given). */
static void expect_err_at(int line, const char *const *args, const char *const *env,
                          const char *flag, const char *also)
{
    struct config cfg;
    int r = run(&cfg, args, env);

    check_count++;
    if (r != -1 || !strstr(err, flag) || strchr(err, '\n') || (also && !strstr(err, also)) ||
        strlen(err) == 0) {
        check_failures++;
        fprintf(stderr, "FAIL %s:%d: expected -1 and one line naming %s%s%s, got %d: \"%s\"\n",
                __FILE__, line, flag, also ? " and " : "", also ? also : "", r, r == -1 ? err : "");
    }
}
#define expect_err(args, env, flag) expect_err_at(__LINE__, args, env, flag, NULL)
#define expect_err2(args, env, flag, also) expect_err_at(__LINE__, args, env, flag, also)

static int ok(struct config *cfg, const char *const *args, const char *const *env)
{
    int r = run(cfg, args, env);

    if (r != 0)
        fprintf(stderr, "  (config_parse said: %s)\n", err);
    return r;
}

static const char *write_file(const char *name, const char *contents, size_t len)
{
    static char path[16][256];
    static int next;
    char *p = path[next++ % 16];
    FILE *f;

    snprintf(p, 256, "%s/%s", tmpdir, name);
    f = fopen(p, "w");
    if (!f || fwrite(contents, 1, len, f) != len || fclose(f) != 0) {
        perror(p);
        exit(1);
    }
    return p;
}

static void test_durations(void)
{
    static const struct {
        const char *s;
        int rc;
        int64_t ms;
    } t[] = {
        {"250ms", 0, 250},
        {"30s", 0, 30000},
        {"5m", 0, 300000},
        {"24h", 0, 86400000},
        {"1h30m", 0, 5400000},
        {"1s500ms", 0, 1500},
        {"2h3m4s5ms", 0, 7384005},
        {"0", 0, 0},
        {"0s", 0, 0},
        {"0ms", 0, 0},
        {"007s", 0, 7000},
        {"876000h", 0, CONFIG_DURATION_MAX_MS},
        {"876000h1ms", -ERANGE, 0},
        {"876001h", -ERANGE, 0},
        {"52560001m", -ERANGE, 0},
        {"99999999999999999999h", -ERANGE, 0},
        {"9223372036854775807ms", -ERANGE, 0},
        {"18446744073709551616s", -ERANGE, 0},
        {"", -EINVAL, 0},
        {"30", -EINVAL, 0},
        {"00", -EINVAL, 0},
        {"5 m", -EINVAL, 0},
        {" 5m", -EINVAL, 0},
        {"5m ", -EINVAL, 0},
        {"-5s", -EINVAL, 0},
        {"+5s", -EINVAL, 0},
        {"5S", -EINVAL, 0},
        {"5M", -EINVAL, 0},
        {"1.5h", -EINVAL, 0},
        {"5m1h", -EINVAL, 0},
        {"1h1h", -EINVAL, 0},
        {"5ms5s", -EINVAL, 0},
        {"ms", -EINVAL, 0},
        {"h", -EINVAL, 0},
        {"5d", -EINVAL, 0},
        {"5us", -EINVAL, 0},
        {"5mss", -EINVAL, 0},
        {"1h30", -EINVAL, 0},
    };

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        int64_t ms = -1;
        int rc = config_parse_duration(t[i].s, &ms);

        CHECK(rc == t[i].rc, "\"%s\": expected rc %d, got %d", t[i].s, t[i].rc, rc);
        if (rc == 0 && t[i].rc == 0)
            CHECK(ms == t[i].ms, "\"%s\": expected %" PRId64 " ms, got %" PRId64, t[i].s, t[i].ms,
                  ms);
    }
    CHECK_INT(config_parse_duration(NULL, NULL), -EINVAL);
}

static void test_defaults(void)
{
    struct config c;
    const struct sockaddr_in *a4 = (const struct sockaddr_in *)&c.listen.sa;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

    CHECK_INT(ok(&c, ARGS(UP), NULL), 0);
    CHECK_INT(c.info, CONFIG_RUN);
    CHECK_INT(a4->sin_family, AF_INET);
    CHECK_INT(ntohs(a4->sin_port), 9300);
    CHECK_INT(ntohl(a4->sin_addr.s_addr), INADDR_LOOPBACK);
    CHECK_INT(c.listen.len, sizeof(struct sockaddr_in));
    CHECK_MEM(c.listen.text, strlen(c.listen.text), "127.0.0.1:9300", 14);
    a4 = (const struct sockaddr_in *)&c.admin.sa;
    CHECK_INT(ntohs(a4->sin_port), 9301);
    CHECK_INT(c.upstream.tls, 0);
    CHECK_MEM(c.upstream.host, strlen(c.upstream.host), "127.0.0.1", 9);
    CHECK_INT(c.upstream.port, 9000);
    CHECK_MEM(c.upstream.host_header, strlen(c.upstream.host_header), "127.0.0.1:9000", 14);
    CHECK_MEM(c.upstream.base_path, strlen(c.upstream.base_path), "", 0);
    CHECK_INT(c.preset, CONFIG_PRESET_AUTHENTIK);
    CHECK_INT(c.session_cookies.n, 1);
    CHECK_MEM(c.session_cookies.v[0].name, c.session_cookies.v[0].len, "authentik_proxy_", 16);
    CHECK_INT(c.session_cookies.v[0].prefix, 1);
    CHECK_INT(c.identity_headers.n, 1); /* "*": every header (policy_identity drops the rest) */
    CHECK_INT(c.identity_headers.v[0].len, 0);
    CHECK_INT(c.identity_headers.v[0].prefix, 1);
    CHECK_MEM(c.user_header, strlen(c.user_header), "X-Authentik-Username", 20);
    CHECK_INT(c.key_scope, CONFIG_SCOPE_HOST);
    CHECK_MEM(c.signout_path, strlen(c.signout_path), "/outpost.goauthentik.io/sign_out", 32);
    CHECK_INT(c.fresh_ttl_ms, 30000);
    CHECK_INT(c.session_ttl_ms, 86400000);
    CHECK_INT(c.outage_grace_ms, 900000);
    CHECK_INT(c.upstream_timeout_ms, 2000);
    CHECK_MEM(c.shm_name, strlen(c.shm_name), "authcache", 9);
    CHECK_INT(c.capacity, 65536);
    CHECK_INT(c.workers, ncpu < 1 ? 1 : ncpu > 256 ? 256 : ncpu);
    CHECK_INT(c.have_hash_key, 0);
    CHECK_INT(c.bus.enabled, 0);
    CHECK_INT(c.admin_token_len, 0);
    CHECK_INT(c.log_level, LOG_LEVEL_INFO);
    CHECK_INT(c.log_format, LOG_FORMAT_TEXT);
    config_free(&c);
}

static void test_each_flag(void)
{
    struct config c;
    const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&c.listen.sa;
    const struct sockaddr_in *a4 = (const struct sockaddr_in *)&c.admin.sa;

    CHECK_INT(ok(&c,
                 ARGS("--listen", "[::1]:0", "--admin", "localhost:1234", "--upstream",
                      "https://idp.example.com/outpost/", "--preset", "oauth2-proxy",
                      "--session-cookie", "sid", "--identity-header", "X-User", "--identity-header",
                      "X-Groups", "--user-header", "x-user", "--key-scope", "uri", "--signout-path",
                      "/bye", "--fresh-ttl", "0", "--session-ttl", "1h", "--outage-grace", "0s",
                      "--upstream-timeout", "250ms", "--shm", "ac-test_1.x", "--capacity", "16",
                      "--workers", "256", "--bus", "redis://10.0.0.1:6380/purges", "--log-level",
                      "debug", "--log-format", "json"),
                 NULL),
              0);
    CHECK_INT(a6->sin6_family, AF_INET6);
    CHECK_INT(ntohs(a6->sin6_port), 0);
    CHECK(memcmp(&a6->sin6_addr, &in6addr_loopback, 16) == 0, "expected ::1");
    CHECK_INT(c.listen.len, sizeof(struct sockaddr_in6));
    CHECK_INT(a4->sin_family, AF_INET);
    CHECK_INT(ntohs(a4->sin_port), 1234);
    CHECK_INT(ntohl(a4->sin_addr.s_addr), INADDR_LOOPBACK);
    CHECK_INT(c.upstream.tls, 1);
    CHECK_INT(c.upstream.port, 443);
    CHECK_MEM(c.upstream.host, strlen(c.upstream.host), "idp.example.com", 15);
    CHECK_MEM(c.upstream.host_header, strlen(c.upstream.host_header), "idp.example.com", 15);
    CHECK_MEM(c.upstream.base_path, strlen(c.upstream.base_path), "/outpost", 8);
    CHECK_INT(c.preset, CONFIG_PRESET_OAUTH2_PROXY);
    CHECK_INT(c.session_cookies.n, 1);
    CHECK_MEM(c.session_cookies.v[0].name, c.session_cookies.v[0].len, "sid", 3);
    CHECK_INT(c.session_cookies.v[0].prefix, 0);
    CHECK_INT(c.identity_headers.n, 2);
    CHECK_MEM(c.identity_headers.v[1].name, c.identity_headers.v[1].len, "X-Groups", 8);
    CHECK_MEM(c.user_header, strlen(c.user_header), "x-user", 6);
    CHECK_INT(c.key_scope, CONFIG_SCOPE_URI);
    CHECK_MEM(c.signout_path, strlen(c.signout_path), "/bye", 4);
    CHECK_INT(c.fresh_ttl_ms, 0);
    CHECK_INT(c.session_ttl_ms, 3600000);
    CHECK_INT(c.outage_grace_ms, 0);
    CHECK_INT(c.upstream_timeout_ms, 250);
    CHECK_MEM(c.shm_name, strlen(c.shm_name), "ac-test_1.x", 11);
    CHECK_INT(c.capacity, 16);
    CHECK_INT(c.workers, 256);
    CHECK_INT(c.bus.enabled, 1);
    CHECK_MEM(c.bus.host, strlen(c.bus.host), "10.0.0.1", 8);
    CHECK_INT(c.bus.port, 6380);
    CHECK_MEM(c.bus.channel, strlen(c.bus.channel), "purges", 6);
    CHECK_INT(c.log_level, LOG_LEVEL_DEBUG);
    CHECK_INT(c.log_format, LOG_FORMAT_JSON);

    /* --name=VALUE, the largest capacity, an empty sign-out path, bus defaults. */
    CHECK_INT(ok(&c,
                 ARGS("--upstream=http://[::1]:8080/a/b//", "--capacity=268435456",
                      "--signout-path=", "--bus=redis://[::1]", "--workers=1", "--log-level=error",
                      "--key-scope=host"),
                 NULL),
              0);
    CHECK_MEM(c.upstream.host, strlen(c.upstream.host), "::1", 3);
    CHECK_INT(c.upstream.port, 8080);
    CHECK_MEM(c.upstream.host_header, strlen(c.upstream.host_header), "[::1]:8080", 10);
    CHECK_MEM(c.upstream.base_path, strlen(c.upstream.base_path), "/a/b", 4);
    CHECK_INT(c.capacity, 268435456);
    CHECK_MEM(c.signout_path, strlen(c.signout_path), "", 0);
    CHECK_MEM(c.bus.host, strlen(c.bus.host), "::1", 3);
    CHECK_INT(c.bus.port, 6379);
    CHECK_MEM(c.bus.channel, strlen(c.bus.channel), "authcache", 9);
    CHECK_INT(c.workers, 1);
    CHECK_INT(c.log_level, LOG_LEVEL_ERROR);

    /* The Host header keeps an explicit non-default port only. */
    CHECK_INT(ok(&c, ARGS("--upstream", "HTTP://idp:80"), NULL), 0);
    CHECK_MEM(c.upstream.host_header, strlen(c.upstream.host_header), "idp", 3);
    CHECK_INT(c.upstream.port, 80);
    CHECK_INT(ok(&c, ARGS("--upstream", "https://idp:8443/"), NULL), 0);
    CHECK_MEM(c.upstream.host_header, strlen(c.upstream.host_header), "idp:8443", 8);
    CHECK_MEM(c.upstream.base_path, strlen(c.upstream.base_path), "", 0);
    CHECK_INT(ok(&c, ARGS("--upstream", "http://idp"), NULL), 0);
    CHECK_INT(c.upstream.port, 80);
    /* The last of a repeated single-valued flag wins. */
    CHECK_INT(ok(&c, ARGS(UP, "--fresh-ttl", "1s", "--fresh-ttl", "2s"), NULL), 0);
    CHECK_INT(c.fresh_ttl_ms, 2000);
    /* An empty optional file or URL means none. */
    CHECK_INT(ok(&c, ARGS(UP, "--bus", "", "--hash-key-file", "", "--admin-token-file", ""), NULL),
              0);
    CHECK_INT(c.bus.enabled, 0);
    CHECK_INT(c.have_hash_key, 0);
}

static void test_env(void)
{
    struct config c;

    /* From the environment alone. */
    CHECK_INT(ok(&c, NULL,
                 ARGS("PATH=/bin", "AUTHCACHED_UPSTREAM=http://idp:9000", "AUTHCACHED_FRESH_TTL=5s",
                      "AUTHCACHED_LISTEN=0.0.0.0:80", "AUTHCACHED_LOG_FORMAT=json",
                      "AUTHCACHED_SESSION_COOKIE=a, b* ,c", "AUTHCACHED_IDENTITY_HEADER=X-A-*",
                      "AUTHCACHED_USER_HEADER=X-A-User", "AUTHCACHED_OUTAGE_GRACE=1m",
                      "AUTHCACHED_UPSTREAM_TIMEOUT=3s", "AUTHCACHED_ADMIN_TOKEN_FILE=",
                      "OTHER_AUTHCACHED_X=1", "authcached_fresh_ttl=bogus")),
              0);
    CHECK_MEM(c.upstream.host, strlen(c.upstream.host), "idp", 3);
    CHECK_INT(c.fresh_ttl_ms, 5000);
    CHECK_MEM(c.listen.text, strlen(c.listen.text), "0.0.0.0:80", 10);
    CHECK_INT(c.log_format, LOG_FORMAT_JSON);
    CHECK_INT(c.session_cookies.n, 3);
    CHECK_MEM(c.session_cookies.v[0].name, c.session_cookies.v[0].len, "a", 1);
    CHECK_MEM(c.session_cookies.v[1].name, c.session_cookies.v[1].len, "b", 1);
    CHECK_INT(c.session_cookies.v[1].prefix, 1);
    CHECK_MEM(c.session_cookies.v[2].name, c.session_cookies.v[2].len, "c", 1);
    CHECK_INT(c.identity_headers.n, 1);
    CHECK_INT(c.outage_grace_ms, 60000);
    CHECK_INT(c.upstream_timeout_ms, 3000);

    /* A flag wins over the environment, even over a bad value there. */
    CHECK_INT(ok(&c, ARGS(UP, "--fresh-ttl", "7s", "--session-cookie", "z"),
                 ARGS("AUTHCACHED_FRESH_TTL=bogus", "AUTHCACHED_SESSION_COOKIE=a,b",
                      "AUTHCACHED_SESSION_TTL=2h")),
              0);
    CHECK_INT(c.fresh_ttl_ms, 7000);
    CHECK_INT(c.session_cookies.n, 1);
    CHECK_MEM(c.session_cookies.v[0].name, c.session_cookies.v[0].len, "z", 1);
    CHECK_INT(c.session_ttl_ms, 7200000);
}

static void test_presets(void)
{
    struct config c;

    CHECK_INT(ok(&c, ARGS(UP, "--preset", "oauth2-proxy"), NULL), 0);
    CHECK_INT(c.session_cookies.n, 1);
    CHECK_MEM(c.session_cookies.v[0].name, c.session_cookies.v[0].len, "_oauth2_proxy", 13);
    CHECK_INT(c.session_cookies.v[0].prefix, 1);
    CHECK_INT(c.identity_headers.n, 1);
    CHECK_INT(c.identity_headers.v[0].len, 0);
    CHECK_MEM(c.user_header, strlen(c.user_header), "X-Auth-Request-User", 19);
    CHECK_INT(c.key_scope, CONFIG_SCOPE_URI);
    CHECK_MEM(c.signout_path, strlen(c.signout_path), "/oauth2/sign_out", 16);
    CHECK_INT(config_patterns_match(&c.session_cookies, "_oauth2_proxy", 13), 1);
    CHECK_INT(config_patterns_match(&c.session_cookies, "_oauth2_proxy_0", 15), 1);
    CHECK_INT(config_patterns_match(&c.session_cookies, "_oauth2_prox", 12), 0);
    CHECK_INT(config_patterns_match(&c.session_cookies, "_OAUTH2_PROXY", 13), 0);
    CHECK_INT(config_patterns_match(&c.identity_headers, "x-auth-request-email", 20), 1);
    CHECK_INT(config_patterns_match(&c.identity_headers, "AUTHORIZATION", 13), 1);
    CHECK_INT(config_patterns_match(&c.identity_headers, "GAP-Auth", 8), 1);

    CHECK_INT(ok(&c, ARGS(UP, "--preset", "authelia"), NULL), 0);
    CHECK_INT(c.session_cookies.n, 1);
    CHECK_MEM(c.session_cookies.v[0].name, c.session_cookies.v[0].len, "authelia_session", 16);
    CHECK_INT(c.session_cookies.v[0].prefix, 0);
    CHECK_INT(c.identity_headers.v[0].len, 0);
    CHECK_MEM(c.user_header, strlen(c.user_header), "Remote-User", 11);
    CHECK_INT(c.key_scope, CONFIG_SCOPE_URI);
    CHECK_INT(c.signout_path[0], 0); /* Authelia signs out on its portal, not via forward-auth */
    CHECK_INT(config_patterns_match(&c.session_cookies, "authelia_session", 16), 1);
    CHECK_INT(config_patterns_match(&c.session_cookies, "authelia_session2", 17), 0);
    CHECK_INT(config_patterns_match(&c.identity_headers, "remote-groups", 13), 1);

    CHECK_INT(ok(&c, ARGS(UP), NULL), 0);
    CHECK_INT(config_patterns_match(&c.session_cookies, "authentik_proxy_4b2f1a3c", 24), 1);
    CHECK_INT(config_patterns_match(&c.identity_headers, "X-authentik-jwt", 15), 1);

    /* Explicit flags override the preset wherever they stand relative to --preset. */
    CHECK_INT(ok(&c,
                 ARGS("--key-scope", "host", UP, "--preset", "authelia", "--signout-path", "/out"),
                 NULL),
              0);
    CHECK_INT(c.preset, CONFIG_PRESET_AUTHELIA);
    CHECK_INT(c.key_scope, CONFIG_SCOPE_HOST);
    CHECK_MEM(c.signout_path, strlen(c.signout_path), "/out", 4);
    CHECK_MEM(c.user_header, strlen(c.user_header), "Remote-User", 11);

    /* Preset from the environment; the flag's preset wins over it. */
    CHECK_INT(ok(&c, ARGS(UP), ARGS("AUTHCACHED_PRESET=authelia")), 0);
    CHECK_INT(c.preset, CONFIG_PRESET_AUTHELIA);
    CHECK_INT(ok(&c, ARGS(UP, "--preset", "oauth2-proxy"), ARGS("AUTHCACHED_PRESET=authelia")), 0);
    CHECK_INT(c.preset, CONFIG_PRESET_OAUTH2_PROXY);
    /* An environment override applies on top of a flag's preset. */
    CHECK_INT(ok(&c, ARGS(UP, "--preset", "authelia"), ARGS("AUTHCACHED_KEY_SCOPE=host")), 0);
    CHECK_INT(c.key_scope, CONFIG_SCOPE_HOST);
}

static void test_repeatable(void)
{
    struct config c;

    CHECK_INT(ok(&c,
                 ARGS(UP, "--session-cookie", "a", "--identity-header", "X-Authentik-*",
                      "--session-cookie", "b*", "--session-cookie", "c"),
                 NULL),
              0);
    CHECK_INT(c.session_cookies.n, 3);
    CHECK_MEM(c.session_cookies.v[1].name, c.session_cookies.v[1].len, "b", 1);
    CHECK_INT(c.session_cookies.v[1].prefix, 1);
    CHECK_INT(c.identity_headers.n, 1); /* the preset's Authorization is gone */
    CHECK_INT(config_patterns_match(&c.identity_headers, "Authorization", 13), 0);

    /* 32 are fine, 33 are not. */
    {
        const char *args[2 * 34 + 3];
        char names[33][16];
        int n = 0;

        args[n++] = "--upstream";
        args[n++] = "http://idp";
        for (int i = 0; i < 33; i++) {
            snprintf(names[i], sizeof(names[i]), "c%d", i);
            args[n++] = "--session-cookie";
            args[n++] = names[i];
        }
        args[n] = NULL;
        expect_err(args, NULL, "--session-cookie");
        args[n - 2] = NULL;
        CHECK_INT(ok(&c, args, NULL), 0);
        CHECK_INT(c.session_cookies.n, 32);
    }
}

static void test_files(void)
{
    struct config c, d;
    const char *k1 = write_file("k1", "0123456789abcdef\n", 17);
    const char *k1b = write_file("k1b", "0123456789abcdef", 16);
    const char *k1c = write_file("k1c", "0123456789abcdef\r\n", 18);
    const char *k2 = write_file("k2", "0123456789abcdeg", 16);
    const char *short_key = write_file("short", "0123456789abcde\n", 16);
    const char *two_nl = write_file("twonl", "0123456789abcde\n\n", 17);
    const char *tok = write_file("tok", "s3cret-Token_1\n", 15);
    const char *tok_empty = write_file("tok0", "\n", 1);
    const char *tok_space = write_file("toksp", "hunter2 hunter2\n", 16);
    static char big[CONFIG_KEY_FILE_MAX + 2];
    const char *kbig, *kmax;
    unsigned char want[32];
    unsigned char label_and_key[64];

    memset(big, 'k', sizeof(big));
    kmax = write_file("kmax", big, CONFIG_KEY_FILE_MAX);
    big[CONFIG_KEY_FILE_MAX] = '\n';
    kbig = write_file("kbig", big, CONFIG_KEY_FILE_MAX + 2); /* max, '\n', one more */

    CHECK_INT(ok(&c, ARGS(UP, "--hash-key-file", k1, "--admin-token-file", tok), NULL), 0);
    CHECK_INT(c.have_hash_key, 1);
    memcpy(label_and_key, "authcache hash key v1", 22); /* with its NUL */
    memcpy(label_and_key + 22, "0123456789abcdef", 16);
    SHA256(label_and_key, 38, want);
    CHECK(memcmp(c.hash_key, want, 32) == 0, "expected the hash key to be SHA-256(label, secret)");
    CHECK_MEM(c.admin_token, c.admin_token_len, "s3cret-Token_1", 14);
    config_free(&c);
    CHECK_INT(c.admin_token_len, 0);
    CHECK_INT(c.have_hash_key, 0);

    /* The same secret with or without its newline gives the same key; another secret another. */
    CHECK_INT(ok(&c, ARGS(UP, "--hash-key-file", k1b), NULL), 0);
    CHECK_INT(ok(&d, ARGS(UP, "--hash-key-file", k1c), NULL), 0);
    CHECK(memcmp(c.hash_key, d.hash_key, 32) == 0, "expected \\n and \\r\\n to be trimmed");
    CHECK_INT(ok(&d, ARGS(UP, "--hash-key-file", k2), NULL), 0);
    CHECK(memcmp(c.hash_key, d.hash_key, 32) != 0, "expected different keys");
    CHECK_INT(ok(&d, ARGS(UP, "--hash-key-file", kmax), NULL), 0);
    CHECK_INT(ok(&d, ARGS(UP, "--hash-key-file", two_nl), NULL), 0); /* 16 bytes: "...e\n" */

    expect_err2(ARGS(UP, "--hash-key-file", short_key), NULL, "--hash-key-file", "at least 16");
    expect_err2(ARGS(UP, "--hash-key-file", kbig), NULL, "--hash-key-file", "longer than");
    expect_err2(ARGS(UP, "--hash-key-file", "/nonexistent/key"), NULL, "--hash-key-file",
                "/nonexistent/key");
    expect_err2(ARGS(UP, "--hash-key-file", tmpdir), NULL, "--hash-key-file", "regular file");
    expect_err2(ARGS(UP, "--hash-key-file", "/dev/zero"), NULL, "--hash-key-file", "regular");
    expect_err2(ARGS(UP), ARGS("AUTHCACHED_HASH_KEY_FILE=/nonexistent"), "--hash-key-file",
                "AUTHCACHED_HASH_KEY_FILE");
    expect_err(ARGS(UP, "--admin-token-file", tok_empty), NULL, "--admin-token-file");
    expect_err(ARGS(UP, "--admin-token-file", "/nonexistent/tok"), NULL, "--admin-token-file");
    expect_err(ARGS(UP, "--admin-token-file", tok_space), NULL, "--admin-token-file");
    CHECK(!strstr(err, "hunter2"), "the token must not appear in \"%s\"", err);
    if (geteuid() != 0) {
        const char *locked = write_file("locked", "0123456789abcdef", 16);

        chmod(locked, 0);
        expect_err2(ARGS(UP, "--hash-key-file", locked), NULL, "--hash-key-file", "ermission");
    }
    /* A short key's bytes are not shown either. */
    expect_err(ARGS(UP, "--hash-key-file", short_key), NULL, "--hash-key-file");
    CHECK(!strstr(err, "0123456789"), "the key must not appear in \"%s\"", err);
}

static void test_errors(void)
{
    char long_name[300];

    expect_err(ARGS(UP, "--frobnicate", "1"), NULL, "unknown flag --frobnicate");
    expect_err(ARGS(UP, "--frobnicate=1"), NULL, "unknown flag --frobnicate");
    expect_err(ARGS(UP, "-x"), NULL, "\"-x\"");
    expect_err(ARGS(UP, "stray"), NULL, "\"stray\"");
    expect_err(ARGS(UP, "--"), NULL, "\"--\"");
    expect_err2(ARGS(UP, "--fresh-ttl"), NULL, "--fresh-ttl", "missing value");
    expect_err2(ARGS("--fresh-ttl", UP), NULL, "--fresh-ttl", "missing value");
    expect_err(ARGS("--upstream"), NULL, "--upstream");
    expect_err2(ARGS(UP, "--fresh-ttl", "30"), NULL,
                "--fresh-ttl: \"30\" is not a duration (use 250ms, 30s, 5m, 24h)", NULL);
    expect_err2(ARGS(UP), ARGS("AUTHCACHED_FRESH_TTL=30"), "--fresh-ttl",
                "(AUTHCACHED_FRESH_TTL): \"30\" is not a duration");
    expect_err2(ARGS(UP, "--session-ttl", "99999999999h"), NULL, "--session-ttl", "too long");
    expect_err2(ARGS(UP, "--session-ttl", "0s"), NULL, "--session-ttl", "longer than 0");
    expect_err2(ARGS(UP, "--upstream-timeout", "0"), NULL, "--upstream-timeout", "longer than 0");
    expect_err(ARGS(UP, "--outage-grace", "forever"), NULL, "--outage-grace");
    expect_err2(ARGS(UP, "--listen", "127.0.0.1:70000"), NULL, "--listen", "port");
    expect_err2(ARGS(UP, "--listen", "127.0.0.1:"), NULL, "--listen", "port");
    expect_err2(ARGS(UP, "--listen", "127.0.0.1:-1"), NULL, "--listen", "port");
    expect_err(ARGS(UP, "--listen", "127.0.0.1"), NULL, "--listen");
    expect_err(ARGS(UP, "--listen", "example.com:80"), NULL, "--listen");
    expect_err(ARGS(UP, "--listen", "1.2.3:80"), NULL, "--listen");
    expect_err(ARGS(UP, "--listen", "::1:80"), NULL, "--listen");
    expect_err(ARGS(UP, "--listen", "[::1]80"), NULL, "--listen");
    expect_err(ARGS(UP, "--listen", ":80"), NULL, "--listen");
    expect_err(ARGS(UP, "--admin", "[zz]:80"), NULL, "--admin");
    expect_err2(ARGS("--upstream", "ftp://idp"), NULL, "--upstream", "http://");
    expect_err(ARGS("--upstream", "idp:9000"), NULL, "--upstream");
    expect_err(ARGS("--upstream", "http://"), NULL, "--upstream");
    expect_err(ARGS("--upstream", "http:///path"), NULL, "--upstream");
    expect_err2(ARGS("--upstream", "http://idp:0"), NULL, "--upstream", "port");
    expect_err2(ARGS("--upstream", "http://idp:65536"), NULL, "--upstream", "port");
    expect_err2(ARGS("--upstream", "http://idp:"), NULL, "--upstream", "port");
    expect_err2(ARGS("--upstream", "http://idp/?x=1"), NULL, "--upstream", "query");
    expect_err2(ARGS("--upstream", "http://idp?x=1"), NULL, "--upstream", "query");
    expect_err(ARGS("--upstream", "http://idp/a b"), NULL, "--upstream");
    expect_err(ARGS("--upstream", "http://id p/"), NULL, "--upstream");
    expect_err(ARGS("--upstream", "http://[::1/"), NULL, "--upstream");
    expect_err2(ARGS("--upstream", "http://user:pa55word@idp/"), NULL, "--upstream", "credentials");
    CHECK(!strstr(err, "pa55word"), "the password must not appear in \"%s\"", err);
    expect_err2(ARGS(UP, "--bus", "redis://:pa55word@redis/"), NULL, "--bus", "credentials");
    CHECK(!strstr(err, "pa55word"), "the password must not appear in \"%s\"", err);
    expect_err2(ARGS(NULL), NULL, "--upstream", "required");
    expect_err2(ARGS("--fresh-ttl", "1s"), NULL, "--upstream", "required");
    expect_err(ARGS(UP, "--preset", "keycloak"), NULL, "--preset");
    expect_err2(ARGS(UP), ARGS("AUTHCACHED_PRESET=keycloak"), "--preset", "AUTHCACHED_PRESET");
    expect_err(ARGS(UP, "--key-scope", "path"), NULL, "--key-scope");
    expect_err(ARGS(UP, "--log-level", "trace"), NULL, "--log-level");
    expect_err(ARGS(UP, "--log-format", "xml"), NULL, "--log-format");
    expect_err(ARGS(UP, "--capacity", "15"), NULL, "--capacity");
    expect_err(ARGS(UP, "--capacity", "268435457"), NULL, "--capacity");
    expect_err(ARGS(UP, "--capacity", "99999999999999999999999"), NULL, "--capacity");
    expect_err(ARGS(UP, "--capacity", "1k"), NULL, "--capacity");
    expect_err(ARGS(UP, "--capacity", ""), NULL, "--capacity");
    expect_err(ARGS(UP, "--workers", "0"), NULL, "--workers");
    expect_err(ARGS(UP, "--workers", "257"), NULL, "--workers");
    expect_err(ARGS(UP, "--workers", "-1"), NULL, "--workers");
    expect_err(ARGS(UP, "--shm", ".hidden"), NULL, "--shm");
    expect_err(ARGS(UP, "--shm", "a/b"), NULL, "--shm");
    expect_err(ARGS(UP, "--shm", ""), NULL, "--shm");
    memset(long_name, 'a', 201);
    long_name[201] = '\0';
    expect_err(ARGS(UP, "--shm", long_name), NULL, "--shm");
    long_name[200] = '\0';
    {
        struct config c;

        CHECK_INT(ok(&c, ARGS(UP, "--shm", long_name), NULL), 0);
    }
    expect_err(ARGS(UP, "--session-cookie", "*"), NULL, "--session-cookie");
    expect_err(ARGS(UP, "--session-cookie", "a*b"), NULL, "--session-cookie");
    expect_err(ARGS(UP, "--session-cookie", ""), NULL, "--session-cookie");
    expect_err(ARGS(UP, "--session-cookie", "a b"), NULL, "--session-cookie");
    expect_err(ARGS(UP, "--session-cookie", "a;b"), NULL, "--session-cookie");
    expect_err(ARGS(UP), ARGS("AUTHCACHED_SESSION_COOKIE=a,,b"), "AUTHCACHED_SESSION_COOKIE");
    expect_err(ARGS(UP, "--identity-header", "X:Y"), NULL, "--identity-header");
    expect_err(ARGS(UP, "--user-header", "X-User*"), NULL, "--user-header");
    expect_err2(ARGS(UP, "--identity-header", "X-A-*", "--user-header", "X-User"), NULL,
                "--user-header", "--identity-header");
    expect_err2(ARGS(UP, "--identity-header", "X-Other"), NULL, "--user-header", "X-Authentik");
    expect_err(ARGS(UP, "--signout-path", "logout"), NULL, "--signout-path");
    expect_err(ARGS(UP, "--signout-path", "/a?b"), NULL, "--signout-path");
    expect_err(ARGS(UP, "--bus", "http://redis"), NULL, "--bus");
    {
        struct config c;

        CHECK_INT(ok(&c,
                     ARGS(UP, "--bus", "rediss://redis.test:6380/s", "--bus-ca-file", "/ca.pem",
                          "--bus-maxlen", "500"),
                     NULL),
                  0);
        CHECK_INT(c.bus.tls, 1);
        CHECK_MEM(c.bus.host, strlen(c.bus.host), "redis.test", 10);
        CHECK_INT(c.bus.port, 6380);
        CHECK_MEM(c.bus.channel, strlen(c.bus.channel), "s", 1);
        CHECK_MEM(c.bus_ca_file, strlen(c.bus_ca_file), "/ca.pem", 7);
        CHECK_INT(c.bus_maxlen, 500);
        CHECK_INT(ok(&c, ARGS(UP, "--bus", "redis://redis"), NULL), 0);
        CHECK_INT(c.bus.tls, 0);
        CHECK_INT(c.bus_maxlen, CONFIG_BUS_MAXLEN_DEFAULT);
    }
    expect_err(ARGS(UP, "--bus", "redis://redis", "--bus-ca-file", "/ca.pem"), NULL,
               "--bus-ca-file");
    expect_err(ARGS(UP, "--bus", "redis://redis", "--bus-maxlen", "0"), NULL, "--bus-maxlen");
    {
        struct config c;

        CHECK_INT(ok(&c, ARGS(UP), NULL), 0);
        CHECK_INT(c.signout_rate, CONFIG_SIGNOUT_RATE_DEFAULT);
        CHECK_INT(ok(&c, ARGS(UP, "--signout-rate", "0"), NULL), 0);
        CHECK_INT(c.signout_rate, 0);
        CHECK_INT(ok(&c, ARGS(UP, "--signout-rate=250"), NULL), 0);
        CHECK_INT(c.signout_rate, 250);
    }
    expect_err(ARGS(UP, "--signout-rate", "-1"), NULL, "--signout-rate");
    expect_err(ARGS(UP, "--signout-rate", "fast"), NULL, "--signout-rate");
    expect_err(ARGS(UP, "--signout-rate", "1000001"), NULL, "--signout-rate");
    expect_err(ARGS(UP, "--bus", "redis://redis:0"), NULL, "--bus");
    expect_err(ARGS(UP, "--bus", "redis://"), NULL, "--bus");
    expect_err(ARGS(UP, "--bus", "redis://r/a b"), NULL, "--bus");
    /* Variables that name no flag are not ours (Kubernetes injects AUTHCACHED_PORT and
     * AUTHCACHED_SERVICE_HOST for a Service named authcached): ignored, never fatal. */
    {
        struct config kc;
        CHECK(ok(&kc, ARGS(UP),
                 ARGS("AUTHCACHED_FROBNICATE=1", "AUTHCACHED_PORT=tcp://10.0.0.7:9300",
                      "AUTHCACHED_SERVICE_HOST=10.0.0.7", "AUTHCACHED_FRESH_TTL=7s",
                      "AUTHCACHED_HELP=1")) == 0,
              "unknown AUTHCACHED_ variables must be ignored");
        CHECK_INT(kc.info, CONFIG_RUN);
        CHECK_INT(kc.fresh_ttl_ms, 7000);
    }

    /* A value with control bytes is shown without them, and cut. */
    expect_err(ARGS(UP, "--fresh-ttl", "1\n2\r3\x1b"), NULL, "--fresh-ttl");
    CHECK(!strpbrk(err, "\r\x1b"), "expected no control bytes in \"%s\"", err);
    memset(long_name, '9', 299);
    long_name[299] = '\0';
    expect_err(ARGS(UP, "--fresh-ttl", long_name), NULL, "--fresh-ttl");
    CHECK(strlen(err) < 200, "expected a short line, got %zu bytes", strlen(err));
    expect_err(ARGS(UP, "--frobnicate\nmore"), NULL, "--frobnicate");

    /* A small error buffer is filled and terminated, never overrun. */
    {
        struct config c;
        char small[12];
        char *argv[] = {"authcached", "--fresh-ttl", "30", NULL};

        memset(small, 'X', sizeof(small));
        CHECK_INT(config_parse(&c, 3, argv, NULL, small, 8), -1);
        CHECK_INT(strlen(small), 7);
        CHECK_INT(small[8], 'X');
        CHECK_INT(config_parse(&c, 3, argv, NULL, NULL, 0), -1);
    }
}

static void test_help(void)
{
    struct config c;
    char *text = NULL;
    size_t len = 0;
    FILE *f;

    CHECK_INT(run(&c, ARGS("--help"), NULL), 1);
    CHECK_INT(c.info, CONFIG_HELP);
    CHECK_INT(run(&c, ARGS("-h", "--bogus"), NULL), 1); /* before anything else is looked at */
    CHECK_INT(run(&c, ARGS(UP, "--version"), ARGS("AUTHCACHED_FRESH_TTL=30")), 1);
    CHECK_INT(c.info, CONFIG_VERSION);
    CHECK_INT(run(&c, ARGS("--bogus", "--help"), NULL), -1);

    f = open_memstream(&text, &len);
    c.info = CONFIG_HELP;
    config_print_info(&c, f);
    fclose(f);
    CHECK(text && strstr(text, "--fresh-ttl DUR") && strstr(text, "--upstream URL") &&
              strstr(text, "AUTHCACHED_"),
          "usage text lacks the flags: %s", text ? text : "(null)");
    free(text);
    f = open_memstream(&text, &len);
    c.info = CONFIG_VERSION;
    config_print_info(&c, f);
    fclose(f);
    CHECK(text && strncmp(text, "authcached ", 11) == 0, "version line: %s", text ? text : "");
    free(text);
}

static void cleanup(void)
{
    char cmd[300];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
}

int main(void)
{
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_durations();
    test_defaults();
    test_each_flag();
    test_env();
    test_presets();
    test_repeatable();
    test_files();
    test_errors();
    test_help();
    cleanup();
    return check_done("test_config");
}
