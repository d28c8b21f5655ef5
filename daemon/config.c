/*
 * config.c — authcached's flags and AUTHCACHED_* environment into struct config (see config.h).
 *
 * One table (opts[]) names every flag; the usage text, the environment names and the errors all
 * come from it. Parsing runs in four steps so that precedence is simply "later step wins":
 *   1. split argv into (flag, value) pairs, stopping at --help / --version or the first bad flag;
 *   2. defaults, then the preset (last --preset, else AUTHCACHED_PRESET, else authentik);
 *   3. every AUTHCACHED_* variable whose flag is not on the command line;
 *   4. the flags, in order: the last of a repeated flag wins, except --session-cookie and
 *      --identity-header, whose first occurrence replaces the preset's list and the rest append.
 * then cross-checks and reads the two secret files.
 *
 * Every error goes through fail(), which prefixes the flag (and its variable) and guarantees one
 * printable line. A value is echoed quoted, cut to 64 bytes, with control bytes shown as '?'; a
 * URL holding credentials ('@') is not echoed at all.
 *
 * Preset facts, checked against the IdPs' own sources and docs:
 *  - authentik proxy outpost: the session cookie is "authentik_proxy_" + 8 characters derived from
 *    the provider's client id (internal/outpost/proxyv2/application), hence the prefix pattern; the
 *    forward-auth answer carries X-authentik-username, -groups, -entitlements, -email, -name, -uid,
 *    -jwt and X-authentik-meta-{jwks,outpost,provider,app,version}, plus Authorization when the
 *    provider sets HTTP-Basic credentials; sign-out is /outpost.goauthentik.io/sign_out.
 *  - oauth2-proxy: the cookie is "_oauth2_proxy" (--cookie-name), split into "_oauth2_proxy_0",
 *    "_oauth2_proxy_1", ... when too large for one cookie; /oauth2/auth answers 202 with
 *    X-Auth-Request-User, -Email, -Groups, -Preferred-Username (--set-xauthrequest) and
 *    -Access-Token (--pass-access-token), and Authorization: Bearer <id token> with
 *    --set-authorization-header; sign-out is /oauth2/sign_out. The prefix also matches its
 *    login-flow CSRF cookie (_oauth2_proxy_csrf, or _oauth2_proxy_<id>_csrf), which a browser can
 *    still send for --cookie-csrf-expire (15m) after login: until then the key differs, which
 *    costs a miss, never a wrong answer.
 *  - Authelia: the cookie is "authelia_session" (session.name); /api/verify (before 4.38) and
 *    /api/authz/forward-auth (4.38 on) answer with Remote-User, Remote-Groups, Remote-Name and
 *    Remote-Email; its access rules match paths and methods, hence key scope "uri"; the portal
 *    signs out at /logout.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"

#ifndef AUTHCACHE_VERSION
#define AUTHCACHE_VERSION "0.1.0"
#endif

enum opt_id {
    OPT_LISTEN,
    OPT_ADMIN,
    OPT_UPSTREAM,
    OPT_PRESET,
    OPT_SESSION_COOKIE,
    OPT_IDENTITY_HEADER,
    OPT_USER_HEADER,
    OPT_KEY_SCOPE,
    OPT_SIGNOUT_PATH,
    OPT_SIGNOUT_RATE,
    OPT_FRESH_TTL,
    OPT_SESSION_TTL,
    OPT_OUTAGE_GRACE,
    OPT_UPSTREAM_TIMEOUT,
    OPT_SHM,
    OPT_SHM_GROUP,
    OPT_CAPACITY,
    OPT_WORKERS,
    OPT_HASH_KEY_FILE,
    OPT_BUS,
    OPT_BUS_AUTH_FILE,
    OPT_BUS_CA_FILE,
    OPT_BUS_MAXLEN,
    OPT_ADMIN_TOKEN_FILE,
    OPT_HANDOVER,
    OPT_AUTHENTIK_URL,
    OPT_AUTHENTIK_TOKEN_FILE,
    OPT_LOG_LEVEL,
    OPT_LOG_FORMAT,
    OPT_COUNT
};

struct opt {
    const char *name; /* without "--" */
    const char *arg;  /* for the usage text */
    const char *help;
};

static const struct opt opts[OPT_COUNT] = {
    [OPT_LISTEN] = {"listen", "HOST:PORT", "forward-auth listener (default 127.0.0.1:9300)"},
    [OPT_ADMIN] = {"admin", "HOST:PORT", "admin listener (default 127.0.0.1:9301)"},
    [OPT_UPSTREAM] = {"upstream", "URL", "the IdP's base URL, http:// or https:// (required)"},
    [OPT_PRESET] = {"preset", "NAME", "authentik, oauth2-proxy or authelia (default authentik)"},
    [OPT_SESSION_COOKIE] = {"session-cookie", "NAME", "session cookie; NAME* = prefix; repeatable"},
    [OPT_IDENTITY_HEADER] = {"identity-header", "NAME",
                             "IdP response header to store and replay; NAME* = prefix; repeatable"},
    [OPT_USER_HEADER] = {"user-header", "NAME", "the header naming the user"},
    [OPT_KEY_SCOPE] = {"key-scope", "host|uri", "what else the cache key includes"},
    [OPT_SIGNOUT_PATH] = {"signout-path", "PATH", "X-Forwarded-Uri under this path signs out"},
    [OPT_SIGNOUT_RATE] = {"signout-rate", "N",
                          "sign-outs a second sent to the IdP; more wait (default 1000, 0: no "
                          "limit)"},
    [OPT_FRESH_TTL] = {"fresh-ttl", "DUR", "serve without asking the IdP this long (default 30s)"},
    [OPT_SESSION_TTL] = {"session-ttl", "DUR", "session lifetime from first sight (default 24h)"},
    [OPT_OUTAGE_GRACE] = {"outage-grace", "DUR",
                          "serve stale this long while the IdP is down "
                          "(default 15m)"},
    [OPT_UPSTREAM_TIMEOUT] = {"upstream-timeout", "DUR", "longest wait for the IdP (default 2s)"},
    [OPT_SHM] = {"shm", "NAME", "shared-memory segment /dev/shm/NAME (default authcache)"},
    [OPT_SHM_GROUP] = {"shm-group", "GROUP",
                       "let this group (name or gid) read the segment: mode 0640 (default 0600)"},
    [OPT_CAPACITY] = {"capacity", "N", "most answers kept (default 65536)"},
    [OPT_WORKERS] = {"workers", "N", "worker threads (default: online CPUs)"},
    [OPT_HASH_KEY_FILE] = {"hash-key-file", "FILE", "secret for the credential hash (>= 16 bytes)"},
    [OPT_BUS] = {"bus", "URL", "redis[s]://HOST:PORT[/STREAM] to share purges"},
    [OPT_BUS_AUTH_FILE] = {"bus-auth-file", "FILE", "[user:]password for redis AUTH (with --bus)"},
    [OPT_BUS_CA_FILE] = {"bus-ca-file", "FILE",
                         "CA certificates for rediss:// (default: the system's)"},
    [OPT_BUS_MAXLEN] = {"bus-maxlen", "N",
                        "purges the stream keeps for nodes that were away (default 100000)"},
    [OPT_ADMIN_TOKEN_FILE] = {"admin-token-file", "FILE", "bearer token for admin write calls"},
    [OPT_HANDOVER] = {"handover", "PATH",
                      "Unix socket: take the listeners of the daemon there, then serve it "
                      "(default off)"},
    [OPT_AUTHENTIK_URL] = {"authentik-url", "URL",
                           "authentik's URL: follow its outpost event feed (session ends)"},
    [OPT_AUTHENTIK_TOKEN_FILE] = {"authentik-token-file", "FILE",
                                  "the outpost's API token for --authentik-url"},
    [OPT_LOG_LEVEL] = {"log-level", "LEVEL", "debug, info, warn or error (default info)"},
    [OPT_LOG_FORMAT] = {"log-format", "FMT", "text or json (default text)"},
};

#define DURATION_HINT "(use 250ms, 30s, 5m, 24h)"
#define ENV_PREFIX "AUTHCACHED_"

/* Where the value being checked came from, for the error line. */
struct ctx {
    char *err;
    size_t errlen;
    enum opt_id id;
    int from_env;
    char shown[80]; /* the value, quoted and made printable */
};

/* Replace anything that could break the one-line rule. */
static void sanitize_line(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f)
            *s = '?';
}

static void env_name(enum opt_id id, char *out, size_t cap)
{
    size_t n = snprintf(out, cap, ENV_PREFIX "%s", opts[id].name);

    for (size_t i = sizeof(ENV_PREFIX) - 1; i < n && i < cap; i++)
        out[i] =
            out[i] == '-' ? '_' : (char)(out[i] >= 'a' && out[i] <= 'z' ? out[i] - 32 : out[i]);
}

/* Write "--flag[ (AUTHCACHED_FLAG)]: <problem>" to the error buffer; returns -1. */
__attribute__((format(printf, 2, 3))) static int fail(struct ctx *c, const char *fmt, ...)
{
    char env[64];
    size_t off = 0;
    va_list ap;
    int n;

    if (!c->err || c->errlen == 0)
        return -1;
    if (c->from_env) {
        env_name(c->id, env, sizeof(env));
        n = snprintf(c->err, c->errlen, "--%s (%s): ", opts[c->id].name, env);
    } else
        n = snprintf(c->err, c->errlen, "--%s: ", opts[c->id].name);
    off = n < 0 ? 0 : (size_t)n < c->errlen ? (size_t)n : c->errlen - 1;
    va_start(ap, fmt);
    vsnprintf(c->err + off, c->errlen - off, fmt, ap);
    va_end(ap);
    sanitize_line(c->err);
    return -1;
}

/* An error not about one flag's value. */
__attribute__((format(printf, 3, 4))) static int fail_plain(char *err, size_t errlen,
                                                            const char *fmt, ...)
{
    va_list ap;

    if (!err || errlen == 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    sanitize_line(err);
    return -1;
}

/* A URL whose authority has a "user:password@" part (or that might: no "://" but an '@'). */
static int has_userinfo(const char *v)
{
    const char *start = strstr(v, "://");
    size_t n;

    start = start ? start + 3 : v;
    n = strcspn(start, "/?#");
    return memchr(start, '@', n) != NULL;
}

/* v quoted, cut to 64 bytes, control bytes as '?'; a URL with credentials is not shown at all. */
static void show_value(char out[80], const char *v, int may_hold_credentials)
{
    size_t o = 0, i;

    if (may_hold_credentials && has_userinfo(v)) {
        snprintf(out, 80, "(the URL, not shown: it holds credentials)");
        return;
    }
    out[o++] = '"';
    for (i = 0; v[i] && i < 64; i++)
        out[o++] = (unsigned char)v[i] < 0x20 || (unsigned char)v[i] == 0x7f ? '?' : v[i];
    if (v[i]) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o++] = '"';
    out[o] = '\0';
}

static void set_shown(struct ctx *c, const char *v)
{
    show_value(c->shown, v,
               c->id == OPT_UPSTREAM || c->id == OPT_BUS || c->id == OPT_AUTHENTIK_URL);
}

/* ---- value parsers: each returns 0, or -1 after fail() ---- */

int config_parse_duration(const char *s, int64_t *ms)
{
    static const struct {
        const char *name;
        size_t len;
        int64_t mult;
    } units[] = {{"h", 1, 3600000}, {"ms", 2, 1}, {"m", 1, 60000}, {"s", 1, 1000}};
    static const int rank[] = {3, 0, 2, 1}; /* h > m > s > ms */
    int64_t total = 0;
    int last_rank = 4;

    if (!s || !*s)
        return -EINVAL;
    if (strcmp(s, "0") == 0) {
        *ms = 0;
        return 0;
    }
    while (*s) {
        int64_t n = 0;
        size_t u;

        if (*s < '0' || *s > '9')
            return -EINVAL;
        while (*s >= '0' && *s <= '9') {
            if (n > CONFIG_DURATION_MAX_MS / 10)
                return -ERANGE; /* no unit is below 1 ms: past the maximum whatever follows */
            n = n * 10 + (*s++ - '0');
        }
        /* "ms" is tried before "m", so "5ms" is five milliseconds. */
        for (u = 0; u < sizeof(units) / sizeof(units[0]); u++)
            if (strncmp(s, units[u].name, units[u].len) == 0)
                break;
        if (u == sizeof(units) / sizeof(units[0]) || rank[u] >= last_rank)
            return -EINVAL; /* bare number, unknown unit, or units out of order or repeated */
        last_rank = rank[u];
        s += units[u].len;
        if (n > (CONFIG_DURATION_MAX_MS - total) / units[u].mult)
            return -ERANGE;
        total += n * units[u].mult;
    }
    *ms = total;
    return 0;
}

static int parse_duration_opt(struct ctx *c, const char *v, int64_t min_ms, int64_t *out)
{
    int64_t ms;
    int r = config_parse_duration(v, &ms);

    if (r == -ERANGE)
        return fail(c, "%s is too long (at most 876000h)", c->shown);
    if (r < 0)
        return fail(c, "%s is not a duration " DURATION_HINT, c->shown);
    if (ms < min_ms)
        return fail(c, "%s must be longer than 0", c->shown);
    *out = ms;
    return 0;
}

/* Decimal digits only, within [min, max]. */
static int parse_uint(struct ctx *c, const char *v, uint64_t min, uint64_t max, uint64_t *out)
{
    uint64_t n = 0;
    const char *p = v;

    if (!*p)
        return fail(c, "%s is not a number", c->shown);
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return fail(c, "%s is not a number", c->shown);
        if (n > (UINT64_MAX - 9) / 10)
            n = UINT64_MAX - 9; /* saturate: surely out of range */
        else
            n = n * 10 + (uint64_t)(*p - '0');
    }
    if (n < min || n > max)
        return fail(c, "%s is out of range (%llu to %llu)", c->shown, (unsigned long long)min,
                    (unsigned long long)max);
    *out = n;
    return 0;
}

/* s[0, n) as a port; returns 0..65535, or -1. */
static long port_of(const char *s, size_t n)
{
    long port = 0;

    if (n == 0 || n > 5)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        port = port * 10 + (s[i] - '0');
    }
    return port <= 65535 ? port : -1;
}

static int is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* A URL host: [IPv6] or a name / IPv4 of [A-Za-z0-9._-]. Copies it without brackets into host. */
static int parse_url_host(const char *s, size_t n, char host[CONFIG_HOST_MAX + 1])
{
    if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
        struct in6_addr a6;

        if (n - 2 > CONFIG_HOST_MAX)
            return -1;
        memcpy(host, s + 1, n - 2);
        host[n - 2] = '\0';
        return inet_pton(AF_INET6, host, &a6) == 1 ? 0 : -1;
    }
    if (n == 0 || n > CONFIG_HOST_MAX)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];

        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '-' || ch == '_'))
            return -1;
    }
    memcpy(host, s, n);
    host[n] = '\0';
    return 0;
}

#define ADDR_HINT "(use IPV4:PORT, [IPV6]:PORT or localhost:PORT)"

static int parse_addr(struct ctx *c, const char *v, struct config_addr *out)
{
    const char *colon = strrchr(v, ':');
    size_t hlen;
    char host[64];
    long port;

    memset(out, 0, sizeof(*out));
    if (!colon || strlen(v) >= sizeof(out->text))
        return fail(c, "%s is not HOST:PORT " ADDR_HINT, c->shown);
    hlen = (size_t)(colon - v);
    port = port_of(colon + 1, strlen(colon + 1));
    if (port < 0)
        return fail(c, "%s has a bad port (0 to 65535)", c->shown);
    if (hlen >= 2 && v[0] == '[' && v[hlen - 1] == ']') {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&out->sa;

        memcpy(host, v + 1, hlen - 2);
        host[hlen - 2] = '\0';
        if (inet_pton(AF_INET6, host, &a6->sin6_addr) != 1)
            return fail(c, "%s is not HOST:PORT " ADDR_HINT, c->shown);
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        out->len = sizeof(*a6);
    } else {
        struct sockaddr_in *a4 = (struct sockaddr_in *)&out->sa;

        memcpy(host, v, hlen);
        host[hlen] = '\0';
        if (strcasecmp(host, "localhost") == 0)
            a4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        else if (inet_pton(AF_INET, host, &a4->sin_addr) != 1)
            return fail(c, "%s is not HOST:PORT " ADDR_HINT, c->shown);
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        out->len = sizeof(*a4);
    }
    memcpy(out->text, v, strlen(v) + 1);
    return 0;
}

/* http[s]://HOST[:PORT][/PATH] */
static int parse_upstream(struct ctx *c, const char *v, struct config_upstream *u)
{
    const char *auth, *path, *colon;
    size_t alen, hlen, plen;
    long port = -1;

    memset(u, 0, sizeof(*u));
    if (has_userinfo(v))
        return fail(c, "credentials (user:password@) in the URL are not supported; not shown");
    if (strncasecmp(v, "http://", 7) == 0)
        auth = v + 7;
    else if (strncasecmp(v, "https://", 8) == 0) {
        auth = v + 8;
        u->tls = 1;
    } else
        return fail(c, "%s must start with http:// or https://", c->shown);
    path = auth + strcspn(auth, "/?#");
    alen = (size_t)(path - auth);
    if (*path == '?' || *path == '#')
        return fail(c, "%s may not have a query or fragment: the request's own are appended",
                    c->shown);

    /* A ':' after the last ']' separates the port ([::1] alone has none). */
    colon = NULL;
    for (const char *p = auth; p < path; p++)
        if (*p == ':')
            colon = p;
        else if (*p == ']')
            colon = NULL;
    hlen = colon ? (size_t)(colon - auth) : alen;
    if (colon) {
        port = port_of(colon + 1, (size_t)(path - colon - 1));
        if (port < 1)
            return fail(c, "%s has a bad port (1 to 65535)", c->shown);
    }
    if (parse_url_host(auth, hlen, u->host) < 0)
        return fail(c, "%s has a bad host", c->shown);
    u->port = (uint16_t)(port > 0 ? port : u->tls ? 443 : 80);
    if (port > 0 && port != (u->tls ? 443 : 80))
        snprintf(u->host_header, sizeof(u->host_header), "%.*s:%ld", (int)hlen, auth, port);
    else
        snprintf(u->host_header, sizeof(u->host_header), "%.*s", (int)hlen, auth);

    plen = strlen(path);
    for (size_t i = 0; i < plen; i++) {
        unsigned char ch = (unsigned char)path[i];

        if (ch <= 0x20 || ch >= 0x7f || ch == '?' || ch == '#')
            return fail(c, "%s: the path may hold only visible ASCII, no query or fragment",
                        c->shown);
    }
    while (plen > 0 && path[plen - 1] == '/')
        plen--;
    if (plen >= sizeof(u->base_path))
        return fail(c, "%s: the path is too long", c->shown);
    memcpy(u->base_path, path, plen);
    u->base_path[plen] = '\0';
    return 0;
}

/* redis[s]://HOST[:PORT][/STREAM], or "" for none. */
static int parse_bus(struct ctx *c, const char *v, struct config_bus *b)
{
    const char *auth, *end, *colon = NULL;
    size_t hlen;
    long port = 6379;

    memset(b, 0, sizeof(*b));
    if (!*v)
        return 0;
    if (has_userinfo(v))
        return fail(c, "credentials (user:password@) in the URL are not supported; not shown");
    if (strncasecmp(v, "rediss://", 9) == 0)
        b->tls = 1;
    else if (strncasecmp(v, "redis://", 8) != 0)
        return fail(c, "%s is not redis[s]://HOST:PORT[/STREAM]", c->shown);
    auth = v + 8 + b->tls;
    end = auth + strcspn(auth, "/");
    for (const char *p = auth; p < end; p++)
        if (*p == ':')
            colon = p;
        else if (*p == ']')
            colon = NULL;
    hlen = colon ? (size_t)(colon - auth) : (size_t)(end - auth);
    if (colon && (port = port_of(colon + 1, (size_t)(end - colon - 1))) < 1)
        return fail(c, "%s has a bad port (1 to 65535)", c->shown);
    if (parse_url_host(auth, hlen, b->host) < 0)
        return fail(c, "%s has a bad host", c->shown);
    b->port = (uint16_t)port;
    if (*end == '/' && end[1]) {
        size_t n = strlen(end + 1);

        if (n > CONFIG_CHANNEL_MAX)
            return fail(c, "%s: the stream is longer than %d bytes", c->shown, CONFIG_CHANNEL_MAX);
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)end[1 + i] <= 0x20 || (unsigned char)end[1 + i] >= 0x7f)
                return fail(c, "%s: the stream may hold only visible ASCII", c->shown);
        memcpy(b->channel, end + 1, n + 1);
    } else
        strcpy(b->channel, "authcache");
    b->enabled = 1;
    return 0;
}

/* A cookie or header name, with '*' allowed only at the end when prefix_ok. */
static int check_name(struct ctx *c, const char *v, size_t n, int prefix_ok)
{
    if (n == 0)
        return fail(c, "a name may not be empty");
    if (n > CONFIG_NAME_MAX)
        return fail(c, "%s is longer than %d bytes", c->shown, CONFIG_NAME_MAX);
    for (size_t i = 0; i < n; i++) {
        if (v[i] == '*' && !(prefix_ok && i == n - 1))
            return fail(c, "%s: '*' is allowed only at the end of a name", c->shown);
        if (!is_tchar((unsigned char)v[i]))
            return fail(c, "%s is not a valid name (letters, digits and !#$%%&'*+-.^_`|~)",
                        c->shown);
    }
    if (n == 1 && v[0] == '*')
        return fail(c, "a bare '*' would match every name");
    return 0;
}

static int add_pattern(struct ctx *c, struct config_patterns *ps, const char *v, size_t n)
{
    struct config_pattern *p;

    if (check_name(c, v, n, 1) < 0)
        return -1;
    if (ps->n == CONFIG_MAX_PATTERNS)
        return fail(c, "more than %d names", CONFIG_MAX_PATTERNS);
    p = &ps->v[ps->n++];
    p->prefix = v[n - 1] == '*';
    p->len = n - (size_t)p->prefix;
    memcpy(p->name, v, p->len);
    p->name[p->len] = '\0';
    return 0;
}

static int parse_path(struct ctx *c, const char *v, char out[CONFIG_PATH_MAX])
{
    size_t n = strlen(v);

    if (n == 0) {
        out[0] = '\0';
        return 0;
    }
    if (v[0] != '/')
        return fail(c, "%s must start with '/'", c->shown);
    if (n >= CONFIG_PATH_MAX)
        return fail(c, "%s is longer than %d bytes", c->shown, CONFIG_PATH_MAX - 1);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] <= 0x20 || (unsigned char)v[i] >= 0x7f || v[i] == '?' ||
            v[i] == '#')
            return fail(c, "%s may hold only visible ASCII, no query or fragment", c->shown);
    memcpy(out, v, n + 1);
    return 0;
}

static int parse_shm_name(struct ctx *c, const char *v, char out[CONFIG_SHM_NAME_MAX + 1])
{
    size_t n = strlen(v);

    if (n == 0 || n > CONFIG_SHM_NAME_MAX || v[0] == '.')
        return fail(c, "%s must be 1 to %d characters of A-Z a-z 0-9 . _ - not starting with '.'",
                    c->shown, CONFIG_SHM_NAME_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)v[i];

        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return fail(c,
                        "%s must be 1 to %d characters of A-Z a-z 0-9 . _ - not starting with '.'",
                        c->shown, CONFIG_SHM_NAME_MAX);
    }
    memcpy(out, v, n + 1);
    return 0;
}

/* A group name, else a number: the group must exist (a typo must not start a daemon whose readers
 * all fail), and a number must be a gid the system knows. */
static int parse_group(struct ctx *c, const char *v, struct config *cfg)
{
    char buf[4096], *e;
    struct group gr, *found = NULL;
    unsigned long n;

    if (*v && getgrnam_r(v, &gr, buf, sizeof(buf), &found) == 0 && found) {
        cfg->shm_group = (uint32_t)found->gr_gid;
    } else {
        errno = 0;
        n = strtoul(v, &e, 10);
        if (!*v || *e || errno || n >= UINT32_MAX || v[0] == '-')
            return fail(c, "%s is not a group on this system (a name from /etc/group or a gid)",
                        c->shown);
        if (getgrgid_r((gid_t)n, &gr, buf, sizeof(buf), &found) != 0 || !found)
            return fail(c, "%s is not a group on this system (a name from /etc/group or a gid)",
                        c->shown);
        cfg->shm_group = (uint32_t)n;
    }
    cfg->have_shm_group = 1;
    return 0;
}

static int parse_file_name(struct ctx *c, const char *v, char out[PATH_MAX])
{
    size_t n = strlen(v);

    if (n >= PATH_MAX)
        return fail(c, "the file name is too long");
    memcpy(out, v, n + 1);
    return 0;
}

static int preset_of(const char *v, enum config_preset *p)
{
    if (strcmp(v, "authentik") == 0)
        *p = CONFIG_PRESET_AUTHENTIK;
    else if (strcmp(v, "oauth2-proxy") == 0)
        *p = CONFIG_PRESET_OAUTH2_PROXY;
    else if (strcmp(v, "authelia") == 0)
        *p = CONFIG_PRESET_AUTHELIA;
    else
        return -1;
    return 0;
}

static void set_patterns(struct config_patterns *ps, const char *const *names)
{
    ps->n = 0;
    for (; *names; names++) {
        struct config_pattern *p = &ps->v[ps->n++];
        size_t n = strlen(*names);

        p->prefix = (*names)[n - 1] == '*';
        p->len = n - (size_t)p->prefix;
        memcpy(p->name, *names, p->len);
        p->name[p->len] = '\0';
    }
}

static void apply_preset(struct config *cfg, enum config_preset preset)
{
    static const char *const ak_cookies[] = {"authentik_proxy_*", NULL};
    /* Every header of the IdP's 2xx is identity (policy_identity leaves out those that describe the
     * response itself): authentik's additionalHeaders, oauth2-proxy's GAP-Auth and injected
     * headers reach the application as they do without the cache. */
    static const char *const all_headers[] = {"*", NULL};
    static const char *const o2_cookies[] = {"_oauth2_proxy*", NULL};
    static const char *const al_cookies[] = {"authelia_session", NULL};

    cfg->preset = preset;
    switch (preset) {
    case CONFIG_PRESET_AUTHENTIK:
        set_patterns(&cfg->session_cookies, ak_cookies);
        set_patterns(&cfg->identity_headers, all_headers);
        strcpy(cfg->user_header, "X-Authentik-Username");
        cfg->key_scope = CONFIG_SCOPE_HOST;
        cfg->background_revalidation = 1;
        strcpy(cfg->signout_path, "/outpost.goauthentik.io/sign_out");
        break;
    case CONFIG_PRESET_OAUTH2_PROXY:
        set_patterns(&cfg->session_cookies, o2_cookies);
        set_patterns(&cfg->identity_headers, all_headers);
        strcpy(cfg->user_header, "X-Auth-Request-User");
        /* Skip-auth routes and trusted IPs answer 202 without the email and group checks, with
         * the user of a loaded session: a host-keyed answer would stand for every path. */
        cfg->key_scope = CONFIG_SCOPE_URI;
        cfg->background_revalidation = 0; /* /oauth2/auth refreshes with Set-Cookie */
        strcpy(cfg->signout_path, "/oauth2/sign_out");
        break;
    case CONFIG_PRESET_AUTHELIA:
        set_patterns(&cfg->session_cookies, al_cookies);
        set_patterns(&cfg->identity_headers, all_headers);
        strcpy(cfg->user_header, "Remote-User");
        cfg->key_scope = CONFIG_SCOPE_URI;
        cfg->background_revalidation = 1;
        /* Authelia signs out with POST /api/logout on its own portal, which never passes through
         * forward-auth: there is no path to watch (purge through the admin API or the bus). */
        cfg->signout_path[0] = 0;
        break;
    }
}

static void set_defaults(struct config *cfg)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    struct ctx quiet = {.err = NULL};

    memset(cfg, 0, sizeof(*cfg));
    parse_addr(&quiet, "127.0.0.1:9300", &cfg->listen);
    parse_addr(&quiet, "127.0.0.1:9301", &cfg->admin);
    cfg->session_cookies.icase = 0;
    cfg->identity_headers.icase = 1;
    cfg->fresh_ttl_ms = 30 * 1000;
    cfg->session_ttl_ms = 24 * 3600 * 1000;
    cfg->outage_grace_ms = 15 * 60 * 1000;
    cfg->upstream_timeout_ms = 2 * 1000;
    strcpy(cfg->shm_name, "authcache");
    cfg->capacity = 65536;
    cfg->bus_maxlen = CONFIG_BUS_MAXLEN_DEFAULT;
    cfg->signout_rate = CONFIG_SIGNOUT_RATE_DEFAULT;
    cfg->workers = ncpu < 1 ? 1 : ncpu > CONFIG_WORKERS_MAX ? CONFIG_WORKERS_MAX : (unsigned)ncpu;
    cfg->log_level = LOG_LEVEL_INFO;
    cfg->log_format = LOG_FORMAT_TEXT;
}

/*
 * Apply one value. first_of_list: for a repeatable flag, this value starts a new list (the first
 * such flag on the command line, or the environment variable, whose value is a comma list).
 */
static int apply(struct config *cfg, struct ctx *c, const char *v, int first_of_list)
{
    uint64_t n;

    set_shown(c, v);
    switch (c->id) {
    case OPT_LISTEN:
        return parse_addr(c, v, &cfg->listen);
    case OPT_ADMIN:
        return parse_addr(c, v, &cfg->admin);
    case OPT_UPSTREAM:
        return parse_upstream(c, v, &cfg->upstream);
    case OPT_PRESET: {
        enum config_preset p;

        /* Already applied before everything else; here it is only checked. */
        if (preset_of(v, &p) < 0)
            return fail(c, "%s is not a preset (authentik, oauth2-proxy or authelia)", c->shown);
        return 0;
    }
    case OPT_SESSION_COOKIE:
    case OPT_IDENTITY_HEADER: {
        struct config_patterns *ps =
            c->id == OPT_SESSION_COOKIE ? &cfg->session_cookies : &cfg->identity_headers;

        if (first_of_list)
            ps->n = 0;
        if (!c->from_env)
            return add_pattern(c, ps, v, strlen(v));
        for (const char *p = v;;) {
            size_t len = strcspn(p, ",");
            const char *s = p, *e = p + len;

            while (s < e && (*s == ' ' || *s == '\t'))
                s++;
            while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            if (add_pattern(c, ps, s, (size_t)(e - s)) < 0)
                return -1;
            if (!p[len])
                return 0;
            p += len + 1;
        }
    }
    case OPT_USER_HEADER:
        if (check_name(c, v, strlen(v), 0) < 0)
            return -1;
        memcpy(cfg->user_header, v, strlen(v) + 1);
        return 0;
    case OPT_KEY_SCOPE:
        if (strcmp(v, "host") == 0)
            cfg->key_scope = CONFIG_SCOPE_HOST;
        else if (strcmp(v, "uri") == 0)
            cfg->key_scope = CONFIG_SCOPE_URI;
        else
            return fail(c, "%s is not host or uri", c->shown);
        return 0;
    case OPT_SIGNOUT_PATH:
        return parse_path(c, v, cfg->signout_path);
    case OPT_SIGNOUT_RATE:
        if (parse_uint(c, v, 0, CONFIG_SIGNOUT_RATE_MAX, &n) < 0)
            return -1;
        cfg->signout_rate = n;
        return 0;
    case OPT_FRESH_TTL:
        return parse_duration_opt(c, v, 0, &cfg->fresh_ttl_ms);
    case OPT_SESSION_TTL:
        return parse_duration_opt(c, v, 1, &cfg->session_ttl_ms);
    case OPT_OUTAGE_GRACE:
        return parse_duration_opt(c, v, 0, &cfg->outage_grace_ms);
    case OPT_UPSTREAM_TIMEOUT:
        return parse_duration_opt(c, v, 1, &cfg->upstream_timeout_ms);
    case OPT_SHM:
        return parse_shm_name(c, v, cfg->shm_name);
    case OPT_SHM_GROUP:
        return parse_group(c, v, cfg);
    case OPT_CAPACITY:
        if (parse_uint(c, v, CONFIG_CAPACITY_MIN, CONFIG_CAPACITY_MAX, &n) < 0)
            return -1;
        cfg->capacity = n;
        return 0;
    case OPT_WORKERS:
        if (parse_uint(c, v, 1, CONFIG_WORKERS_MAX, &n) < 0)
            return -1;
        cfg->workers = (unsigned)n;
        return 0;
    case OPT_HASH_KEY_FILE:
        return parse_file_name(c, v, cfg->hash_key_file);
    case OPT_BUS:
        if (strlen(v) >= sizeof(cfg->bus_url))
            return fail(c, "the URL is too long");
        if (parse_bus(c, v, &cfg->bus) < 0)
            return -1;
        memcpy(cfg->bus_url, v, strlen(v) + 1);
        return 0;
    case OPT_BUS_AUTH_FILE:
        return parse_file_name(c, v, cfg->bus_auth_file);
    case OPT_BUS_CA_FILE:
        return parse_file_name(c, v, cfg->bus_ca_file);
    case OPT_BUS_MAXLEN:
        if (parse_uint(c, v, CONFIG_BUS_MAXLEN_MIN, CONFIG_BUS_MAXLEN_MAX, &n) < 0)
            return -1;
        cfg->bus_maxlen = n;
        return 0;
    case OPT_ADMIN_TOKEN_FILE:
        return parse_file_name(c, v, cfg->admin_token_file);
    case OPT_HANDOVER:
        if (strlen(v) >= sizeof(cfg->handover))
            return fail(c, "the path is too long for a Unix socket (%zu bytes at most)",
                        sizeof(cfg->handover) - 1);
        memcpy(cfg->handover, v, strlen(v) + 1);
        return 0;
    case OPT_AUTHENTIK_URL:
        return parse_upstream(c, v, &cfg->authentik);
    case OPT_AUTHENTIK_TOKEN_FILE:
        return parse_file_name(c, v, cfg->authentik_token_file);
    case OPT_LOG_LEVEL:
        for (int l = LOG_LEVEL_DEBUG; l <= LOG_LEVEL_ERROR; l++)
            if (strcmp(v, log_level_name((enum log_level)l)) == 0) {
                cfg->log_level = (enum log_level)l;
                return 0;
            }
        return fail(c, "%s is not debug, info, warn or error", c->shown);
    case OPT_LOG_FORMAT:
        if (strcmp(v, "text") == 0)
            cfg->log_format = LOG_FORMAT_TEXT;
        else if (strcmp(v, "json") == 0)
            cfg->log_format = LOG_FORMAT_JSON;
        else
            return fail(c, "%s is not text or json", c->shown);
        return 0;
    case OPT_COUNT:
        break;
    }
    return -1;
}

/*
 * Read a small secret file into buf (room for max + 2 bytes): a regular file (never a FIFO or
 * device that could block or never end), at most max bytes once one trailing "\n" or "\r\n" is
 * removed. Returns its length, or -1 after fail() with a message that names the file but never
 * shows its contents.
 */
static long read_secret(struct ctx *c, const char *path, char *buf, size_t max)
{
    struct stat st;
    size_t len = 0;
    int fd;

    set_shown(c, path);
    /* stat first: a device is never even opened (opening some has effects). */
    if (stat(path, &st) < 0)
        return fail(c, "cannot open %s: %s", c->shown, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return fail(c, "%s is not a regular file", c->shown);
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return fail(c, "cannot open %s: %s", c->shown, strerror(errno));
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fail(c, "%s is not a regular file", c->shown);
    }
    /* Up to max + 2 bytes: max, a newline, and one more to tell "too long". */
    while (len < max + 2) {
        ssize_t n = read(fd, buf + len, max + 2 - len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;

            close(fd);
            OPENSSL_cleanse(buf, len);
            return fail(c, "cannot read %s: %s", c->shown, strerror(e));
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    if (len < max + 2 && len > 0 && buf[len - 1] == '\n') {
        len--;
        if (len > 0 && buf[len - 1] == '\r')
            len--;
    }
    if (len > max) {
        OPENSSL_cleanse(buf, max + 2);
        return fail(c, "%s is longer than %zu bytes", c->shown, max);
    }
    return (long)len;
}

/* A bearer token from path (the flag opt names it) into out (CONFIG_TOKEN_MAX + 1 bytes): visible
 * ASCII without spaces, not empty. 0, or -1 with the one line in c. */
static int load_token(struct ctx *c, int opt, const int *from_env, const char *path, char *out,
                      size_t *len)
{
    char buf[CONFIG_TOKEN_MAX + 2];
    long n;

    c->id = opt;
    c->from_env = from_env[opt];
    n = read_secret(c, path, buf, CONFIG_TOKEN_MAX);
    if (n < 0)
        return -1;
    if (n == 0)
        return fail(c, "%s is empty", c->shown);
    for (long i = 0; i < n; i++)
        if ((unsigned char)buf[i] <= 0x20 || (unsigned char)buf[i] >= 0x7f) {
            OPENSSL_cleanse(buf, sizeof(buf));
            return fail(c, "the token in %s must be visible ASCII without spaces", c->shown);
        }
    memcpy(out, buf, (size_t)n);
    out[n] = '\0';
    *len = (size_t)n;
    OPENSSL_cleanse(buf, sizeof(buf));
    return 0;
}

/*
 * --bus-auth-file into cfg->bus: one line, "password" or "user:password" split at the first ':'
 * (a password holding ':' for the default user: "default:pa:ss"). Sent as RESP bulk strings, so
 * any bytes but NUL, CR and LF will do.
 */
static int load_bus_auth(struct config *cfg, struct ctx *c)
{
    char buf[CONFIG_BUS_AUTH_MAX + 2];
    const char *colon;
    long n;
    int r = -1;

    if (!cfg->bus.enabled)
        return fail(c, "needs --bus (the redis to authenticate to)");
    n = read_secret(c, cfg->bus_auth_file, buf, CONFIG_BUS_AUTH_MAX);
    if (n < 0)
        return -1;
    if (n == 0) {
        fail(c, "%s is empty (it holds [user:]password)", c->shown);
        goto out;
    }
    if (memchr(buf, '\0', (size_t)n) || memchr(buf, '\n', (size_t)n) ||
        memchr(buf, '\r', (size_t)n)) {
        fail(c, "%s must hold one line, [user:]password", c->shown);
        goto out;
    }
    colon = memchr(buf, ':', (size_t)n);
    if (colon) {
        size_t ulen = (size_t)(colon - buf), plen = (size_t)n - ulen - 1;

        if (ulen == 0 || plen == 0) {
            fail(c, "%s: the %s is empty (it holds [user:]password)", c->shown,
                 ulen == 0 ? "user name before ':'" : "password after ':'");
            goto out;
        }
        memcpy(cfg->bus.auth_user, buf, ulen);
        cfg->bus.auth_user_len = ulen;
        memcpy(cfg->bus.auth_pass, colon + 1, plen);
        cfg->bus.auth_pass_len = plen;
    } else {
        memcpy(cfg->bus.auth_pass, buf, (size_t)n);
        cfg->bus.auth_pass_len = (size_t)n;
    }
    r = 0;
out:
    OPENSSL_cleanse(buf, sizeof(buf));
    return r;
}

/* from_env[id]: the file name came from the environment (for the error line). */
static int load_files(struct config *cfg, const int *from_env, char *err, size_t errlen)
{
    struct ctx c = {.err = err, .errlen = errlen};

    if (cfg->hash_key_file[0]) {
        static const char label[] = "authcache hash key v1";
        char buf[sizeof(label) + CONFIG_KEY_FILE_MAX + 2];
        long n;

        c.id = OPT_HASH_KEY_FILE;
        c.from_env = from_env[OPT_HASH_KEY_FILE];
        memcpy(buf, label, sizeof(label)); /* with its NUL: the label ends unambiguously */
        n = read_secret(&c, cfg->hash_key_file, buf + sizeof(label), CONFIG_KEY_FILE_MAX);
        if (n < 0)
            return -1;
        if (n < CONFIG_KEY_FILE_MIN) {
            OPENSSL_cleanse(buf, sizeof(buf));
            return fail(&c, "%s holds %ld bytes; the key must be at least %d", c.shown, n,
                        CONFIG_KEY_FILE_MIN);
        }
        SHA256((const unsigned char *)buf, sizeof(label) + (size_t)n, cfg->hash_key);
        cfg->have_hash_key = 1;
        OPENSSL_cleanse(buf, sizeof(buf));
    }
    if (cfg->admin_token_file[0] &&
        load_token(&c, OPT_ADMIN_TOKEN_FILE, from_env, cfg->admin_token_file, cfg->admin_token,
                   &cfg->admin_token_len) < 0)
        return -1;
    if (cfg->authentik_token_file[0] &&
        load_token(&c, OPT_AUTHENTIK_TOKEN_FILE, from_env, cfg->authentik_token_file,
                   cfg->authentik_token, &cfg->authentik_token_len) < 0)
        return -1;
    if (cfg->bus_auth_file[0]) {
        c.id = OPT_BUS_AUTH_FILE;
        c.from_env = from_env[OPT_BUS_AUTH_FILE];
        if (load_bus_auth(cfg, &c) < 0)
            return -1;
    }
    if (cfg->bus_ca_file[0] && !cfg->bus.tls) {
        c.id = OPT_BUS_CA_FILE;
        c.from_env = from_env[OPT_BUS_CA_FILE];
        set_shown(&c, cfg->bus_ca_file);
        return fail(&c, "needs --bus rediss://... (TLS to redis)");
    }
    return 0;
}

static int opt_by_name(const char *name, size_t len)
{
    for (int i = 0; i < OPT_COUNT; i++)
        if (strlen(opts[i].name) == len && memcmp(opts[i].name, name, len) == 0)
            return i;
    return -1;
}

struct arg {
    enum opt_id id;
    const char *value;
};

int config_parse(struct config *cfg, int argc, char **argv, char **envp, char *err, size_t errlen)
{
    struct arg *args;
    int nargs = 0, on_cmdline[OPT_COUNT] = {0}, seen[OPT_COUNT] = {0}, from_env[OPT_COUNT] = {0};
    enum config_preset preset = CONFIG_PRESET_AUTHENTIK;
    const char *preset_value = NULL;
    int preset_from_env = 0, r = -1;

    if (err && errlen)
        err[0] = '\0';
    set_defaults(cfg);
    args = calloc(argc > 0 ? (size_t)argc : 1, sizeof(*args));
    if (!args)
        return fail_plain(err, errlen, "out of memory");

    /* 1. Split the command line. */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *eq, *name;
        size_t nlen;
        int id;

        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0 || strcmp(a, "--version") == 0) {
            cfg->info = a[2] == 'v' ? CONFIG_VERSION : CONFIG_HELP;
            r = 1;
            goto out;
        }
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            char shown[80];

            show_value(shown, a, 0);
            fail_plain(err, errlen, "unexpected argument %s (flags start with --; see --help)",
                       shown);
            goto out;
        }
        name = a + 2;
        eq = strchr(name, '=');
        nlen = eq ? (size_t)(eq - name) : strlen(name);
        id = opt_by_name(name, nlen);
        if (id < 0) {
            fail_plain(err, errlen, "unknown flag --%.*s (see --help)",
                       (int)(nlen > 64 ? 64 : nlen), name);
            goto out;
        }
        args[nargs].id = (enum opt_id)id;
        if (eq)
            args[nargs].value = eq + 1;
        else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0)
            args[nargs].value = argv[++i];
        else {
            fail_plain(err, errlen, "--%s: missing value (%s)", opts[id].name, opts[id].arg);
            goto out;
        }
        on_cmdline[id] = 1;
        if (id == OPT_PRESET)
            preset_value = args[nargs].value;
        nargs++;
    }

    /* 2. The preset, from the command line or else the environment. */
    for (char **e = envp; e && *e && !preset_value; e++)
        if (strncmp(*e, ENV_PREFIX "PRESET=", sizeof(ENV_PREFIX "PRESET=") - 1) == 0) {
            preset_value = *e + sizeof(ENV_PREFIX "PRESET=") - 1;
            preset_from_env = 1;
        }
    if (preset_value && preset_of(preset_value, &preset) < 0) {
        struct ctx c = {
            .err = err, .errlen = errlen, .id = OPT_PRESET, .from_env = preset_from_env};

        set_shown(&c, preset_value);
        fail(&c, "%s is not a preset (authentik, oauth2-proxy or authelia)", c.shown);
        goto out;
    }
    apply_preset(cfg, preset);

    /* 3. The environment, for flags not on the command line. */
    for (char **e = envp; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        char name[64];
        int id = -1;

        if (strncmp(*e, ENV_PREFIX, sizeof(ENV_PREFIX) - 1) != 0 || !eq)
            continue;
        for (int i = 0; i < OPT_COUNT && id < 0; i++) {
            env_name((enum opt_id)i, name, sizeof(name));
            if (strlen(name) == (size_t)(eq - *e) && memcmp(name, *e, (size_t)(eq - *e)) == 0)
                id = i;
        }
        /* Not ours: Kubernetes injects AUTHCACHED_PORT, AUTHCACHED_SERVICE_HOST ... for a
         * Service named authcached, and those must not stop the daemon. */
        if (id < 0)
            continue;
        if (on_cmdline[id])
            continue; /* the flag wins */
        struct ctx c = {.err = err, .errlen = errlen, .id = (enum opt_id)id, .from_env = 1};

        if (apply(cfg, &c, eq + 1, 1) < 0)
            goto out;
        from_env[id] = 1;
    }

    /* 4. The command line. */
    for (int i = 0; i < nargs; i++) {
        struct ctx c = {.err = err, .errlen = errlen, .id = args[i].id};

        if (apply(cfg, &c, args[i].value, !seen[args[i].id]) < 0)
            goto out;
        seen[args[i].id] = 1;
    }

    /* Cross-checks. */
    if (!cfg->upstream.host[0]) {
        fail_plain(err, errlen, "--upstream: required (the IdP's URL, e.g. http://127.0.0.1:9000)");
        goto out;
    }
    if (!config_patterns_match(&cfg->identity_headers, cfg->user_header,
                               strlen(cfg->user_header))) {
        fail_plain(
            err, errlen,
            "--user-header: \"%s\" matches no --identity-header, so it would never be stored",
            cfg->user_header);
        goto out;
    }
    if (cfg->authentik.host[0] && !cfg->authentik_token_file[0]) {
        fail_plain(err, errlen, "--authentik-url: needs --authentik-token-file (an outpost token)");
        goto out;
    }
    if (!cfg->authentik.host[0] && cfg->authentik_token_file[0]) {
        fail_plain(err, errlen, "--authentik-token-file: needs --authentik-url");
        goto out;
    }
    if (load_files(cfg, from_env, err, errlen) < 0)
        goto out;
    r = 0;
out:
    free(args);
    if (r < 0)
        config_free(cfg);
    return r;
}

void config_free(struct config *cfg)
{
    OPENSSL_cleanse(cfg->hash_key, sizeof(cfg->hash_key));
    OPENSSL_cleanse(cfg->admin_token, sizeof(cfg->admin_token));
    OPENSSL_cleanse(cfg->authentik_token, sizeof(cfg->authentik_token));
    cfg->authentik_token_len = 0;
    OPENSSL_cleanse(cfg->bus.auth_user, sizeof(cfg->bus.auth_user));
    OPENSSL_cleanse(cfg->bus.auth_pass, sizeof(cfg->bus.auth_pass));
    cfg->bus.auth_user_len = cfg->bus.auth_pass_len = 0;
    cfg->have_hash_key = 0;
    cfg->admin_token_len = 0;
}

int config_patterns_match(const struct config_patterns *ps, const char *name, size_t len)
{
    for (size_t i = 0; i < ps->n; i++) {
        const struct config_pattern *p = &ps->v[i];

        if (p->prefix ? len < p->len : len != p->len)
            continue;
        if (ps->icase ? strncasecmp(name, p->name, p->len) == 0
                      : memcmp(name, p->name, p->len) == 0)
            return 1;
    }
    return 0;
}

void config_print_info(const struct config *cfg, FILE *out)
{
    if (cfg->info == CONFIG_VERSION) {
        fprintf(out, "authcached %s\n", AUTHCACHE_VERSION);
        return;
    }
    fprintf(out, "usage: authcached --upstream URL [flags]\n\n"
                 "A forward-auth cache in front of authentik, oauth2-proxy or Authelia.\n\n");
    for (int i = 0; i < OPT_COUNT; i++) {
        char left[64];

        snprintf(left, sizeof(left), "--%s %s", opts[i].name, opts[i].arg);
        fprintf(out, "  %-30s %s\n", left, opts[i].help);
    }
    fprintf(out, "  %-30s %s\n  %-30s %s\n\n", "--help", "this text", "--version", "the version");
    fprintf(
        out,
        "Every flag can be set as AUTHCACHED_<NAME> (--fresh-ttl: AUTHCACHED_FRESH_TTL); a flag\n"
        "wins. In the environment a repeatable flag takes a comma list. Durations: 250ms, 30s,\n"
        "5m, 24h, 1h30m. Errors exit 2.\n");
}
