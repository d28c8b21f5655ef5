/*
 * idp.c — the test identity provider. A small HTTP/1.1 server that answers forward-auth checks the
 * way authentik's embedded outpost does in forward-auth mode (traefik/caddy/envoy/nginx endpoints,
 * session cookie, login callback, sign-out, unauthenticated paths, group allow-lists, X-authentik-*
 * identity headers with a real HS256 JWT), plus a second listener through which tests create
 * sessions, inject faults (500, 503, refuse, hang, reset, garbage, latency, and two that start the
 * real answer: reset-mid cuts it off halfway with a reset, drip trickles it out) and read call
 * counters.
 *
 * Design: one thread per connection with blocking sockets and its own in/out buffers. Pipelined
 * requests are parsed from the input buffer in order; their answers are batched in the output
 * buffer and written when the input holds no further complete request. All sessions live in one
 * hash table keyed by cookie value behind one mutex; an entry also carries that cookie's call
 * counter. A session's identity headers (its signed JWT included) are rendered once when it is
 * created, so an allowed check costs one lookup and one memcpy. The fault state is one struct
 * behind a mutex and a condition variable: "refuse" makes the accept thread close the listening
 * socket (see fault_set()), "hang" parks connection threads on the condition variable until the
 * mode changes.
 *
 * Usage: test-idp --listen HOST:PORT --control HOST:PORT [--threads N] [--jwt-secret S]
 *                 [--cookie-name NAME] [--app HOST[;allow=GROUP][;skip=PREFIX,...]]... [--quiet]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <jwt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SIGN_OUT_PATH "/outpost.goauthentik.io/sign_out"
#define CALLBACK_PATH "/outpost.goauthentik.io/callback"
#define IDP_ORIGIN "https://idp.test"
#define JWT_ISSUER "https://idp.test/application/o/test-idp/"
#define OUTPOST_NAME "authentik Embedded Outpost"
#define OUTPOST_VERSION "goauthentik.io/outpost/2024.8.3"

#define MAX_APPS 32
#define MAX_SKIPS 8
#define MAX_HOST 255
#define MAX_PREFIX 255
#define MAX_COOKIE 256 /* longer cookie values are treated as absent */
#define MAX_USER 64
#define MAX_GROUPS 512
#define MAX_TTL (366L * 86400)
#define DEFAULT_TTL 3600
#define COOKIE_MAX_AGE 86400
#define NEW_COOKIE_LEN 32

#define IN_CAP (32 * 1024)      /* largest request head */
#define OUT_CAP (64 * 1024)     /* answers batched per connection */
#define OUT_RESERVE (16 * 1024) /* bigger than any one answer: flush when less is free */
#define THREAD_STACK (512 * 1024)
#define DEFAULT_MAX_CONNS 4096
#define MAX_CONTROL_CONNS 64
#define NBUCKETS (1u << 16)
#define MAX_ENTRIES (1u << 18) /* cookies remembered; past this new cookies are not counted */

struct str {
    const char *p;
    size_t n;
};

/* ---- configuration: parsed once in main(), read-only afterwards ---- */

struct app {
    char host[MAX_HOST + 1];  /* lower case, no port */
    char slug[64];            /* first label of host: client_id, meta-app */
    char allow[MAX_USER + 1]; /* group required; "" = any logged-in user */
    char skip[MAX_SKIPS][MAX_PREFIX + 1];
    int nskip;
    char meta[1024]; /* the X-authentik-meta-* header lines */
    size_t meta_len;
};

static struct {
    struct sockaddr_in listen_addr, control_addr;
    const char *listen_arg, *control_arg;
    int max_conns;
    const char *jwt_secret;
    const char *cookie_name;
    bool quiet;
    struct app apps[MAX_APPS];
    int napps;
} cfg = {
    .max_conns = DEFAULT_MAX_CONNS,
    .jwt_secret = "authcache-test-idp-secret",
    .cookie_name = "authentik_proxy_3f2a1b0c",
};

/* ---- small string helpers ---- */

static bool str_eq(struct str a, const char *b)
{
    size_t n = strlen(b);
    return a.n == n && memcmp(a.p, b, n) == 0;
}

static bool str_has_prefix(struct str a, const char *b)
{
    size_t n = strlen(b);
    return a.n >= n && memcmp(a.p, b, n) == 0;
}

static bool str_caseeq(struct str a, const char *b)
{
    size_t n = strlen(b);
    return a.n == n && strncasecmp(a.p, b, n) == 0;
}

static struct str str_trim(struct str s)
{
    while (s.n && (s.p[0] == ' ' || s.p[0] == '\t'))
        s.p++, s.n--;
    while (s.n && (s.p[s.n - 1] == ' ' || s.p[s.n - 1] == '\t'))
        s.n--;
    return s;
}

/* A user name, group list or header value we echo: printable ASCII, spaces allowed. */
static bool text_ok(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
            return false;
    return true;
}

/* A cookie value we accept and echo in Set-Cookie (RFC 6265 cookie-octet). */
static bool cookie_ok(struct str v)
{
    if (v.n == 0 || v.n > MAX_COOKIE)
        return false;
    for (size_t i = 0; i < v.n; i++) {
        unsigned char ch = (unsigned char)v.p[i];
        if (ch <= 0x20 || ch >= 0x7f || ch == '"' || ch == ',' || ch == ';' || ch == '\\')
            return false;
    }
    return true;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/*
 * Finds parameter `name` in the query string q ("a=b&c=d", no '?'), percent-decodes its value into
 * out (NUL-terminated, '+' kept as is so base64 cookie values survive). Returns the value's length,
 * -1 when the parameter is absent, -2 when the value is malformed, too long for out or holds a NUL.
 */
static int query_get(struct str q, const char *name, char *out, size_t cap)
{
    size_t nlen = strlen(name);
    const char *p = q.p, *end = q.p + q.n;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        const char *ke = eq ? eq : pe;
        if ((size_t)(ke - p) == nlen && memcmp(p, name, nlen) == 0) {
            size_t o = 0;
            for (const char *v = eq ? eq + 1 : pe; v < pe; v++) {
                char ch = *v;
                if (ch == '%') {
                    if (pe - v < 3 || hexval(v[1]) < 0 || hexval(v[2]) < 0)
                        return -2;
                    ch = (char)(hexval(v[1]) * 16 + hexval(v[2]));
                    v += 2;
                }
                if (ch == '\0' || o + 1 >= cap)
                    return -2;
                out[o++] = ch;
            }
            out[o] = '\0';
            return (int)o;
        }
        p = pe + 1;
    }
    return -1;
}

static bool query_is(struct str q, const char *name, const char *want)
{
    char v[16];
    return query_get(q, name, v, sizeof v) >= 0 && strcmp(v, want) == 0;
}

/* Percent-encodes s for use inside a query parameter; out gets at most cap-1 bytes + NUL. */
static void pct_encode(const char *s, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s && o + 4 <= cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            out[o++] = (char)ch;
        } else {
            out[o++] = '%';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    out[o] = '\0';
}

/* ---- randomness: per-thread xorshift64*, seeded from the kernel; nothing here is a secret ---- */

static __thread uint64_t rng_state;

static uint64_t rng_next(void)
{
    if (rng_state == 0) {
        if (getrandom(&rng_state, sizeof rng_state, 0) != sizeof rng_state || rng_state == 0)
            rng_state = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)&rng_state ^ 0x9e3779b97f4a7c15;
    }
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dULL;
}

/* Writes n random characters from alphabet plus a NUL into out. */
static void rng_string(char *out, size_t n, const char *alphabet)
{
    size_t k = strlen(alphabet);
    for (size_t i = 0; i < n; i++)
        out[i] = alphabet[rng_next() % k];
    out[n] = '\0';
}

static const char HEX[] = "0123456789abcdef";
static const char ALNUM[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/* ---- sessions and call counters ---- */

/* A logged-in session, immutable once published in the table. */
struct session {
    char user[MAX_USER + 1];
    char groups[MAX_GROUPS + 1]; /* '|'-joined */
    time_t end;                  /* expired from this second on; also the JWT's exp */
    size_t hdr_len;
    char hdr[]; /* the identity header lines X-authentik-username .. X-authentik-jwt */
};

/* What the IdP knows about one cookie value: its call counter and its session, if any. */
struct entry {
    struct entry *next;
    uint64_t hash;
    unsigned long calls;
    struct session *sess; /* NULL: not logged in */
    size_t cookie_len;
    char cookie[];
};

static struct {
    pthread_mutex_t mu; /* guards everything below but total_calls */
    struct entry *buckets[NBUCKETS];
    size_t nentries;
    atomic_ulong total_calls;
} tab = {.mu = PTHREAD_MUTEX_INITIALIZER};

static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 0x100000001b3ULL;
    return h;
}

/* Returns the entry for cookie value k, creating it when add is set (NULL when absent, or when the
 * table is full or out of memory). Caller holds tab.mu. */
static struct entry *__tab_get(struct str k, bool add)
{
    uint64_t h = hash_bytes(k.p, k.n);
    struct entry **b = &tab.buckets[h & (NBUCKETS - 1)];
    for (struct entry *e = *b; e; e = e->next)
        if (e->hash == h && e->cookie_len == k.n && memcmp(e->cookie, k.p, k.n) == 0)
            return e;
    if (!add || tab.nentries >= MAX_ENTRIES)
        return NULL;
    struct entry *e = calloc(1, sizeof *e + k.n + 1);
    if (!e)
        return NULL;
    e->hash = h;
    e->cookie_len = k.n;
    memcpy(e->cookie, k.p, k.n);
    e->next = *b;
    *b = e;
    tab.nentries++;
    return e;
}

/* Counts one forward-auth request, in total and for its cookie value (n == 0: none). */
static void calls_count(struct str cookie)
{
    atomic_fetch_add_explicit(&tab.total_calls, 1, memory_order_relaxed);
    if (cookie.n == 0)
        return;
    pthread_mutex_lock(&tab.mu);
    struct entry *e = __tab_get(cookie, true);
    if (e)
        e->calls++;
    pthread_mutex_unlock(&tab.mu);
}

static unsigned long calls_get(struct str cookie)
{
    if (cookie.n == 0)
        return atomic_load_explicit(&tab.total_calls, memory_order_relaxed);
    pthread_mutex_lock(&tab.mu);
    struct entry *e = __tab_get(cookie, false);
    unsigned long n = e ? e->calls : 0;
    pthread_mutex_unlock(&tab.mu);
    return n;
}

/* Zeroes every counter and forgets the cookies that have no session. */
static void calls_reset(void)
{
    pthread_mutex_lock(&tab.mu);
    atomic_store(&tab.total_calls, 0);
    for (size_t i = 0; i < NBUCKETS; i++) {
        for (struct entry **pe = &tab.buckets[i]; *pe;) {
            struct entry *e = *pe;
            if (e->sess) {
                e->calls = 0;
                pe = &e->next;
            } else {
                *pe = e->next;
                free(e);
                tab.nentries--;
            }
        }
    }
    pthread_mutex_unlock(&tab.mu);
}

/* The user's stable id, as authentik's uid: 64 hex digits. */
static void user_uid(const char *user, char out[65])
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    char buf[MAX_USER + 32];
    int n = snprintf(buf, sizeof buf, "authcache-test-idp/%s", user);
    SHA256((const unsigned char *)buf, (size_t)n, md);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        out[2 * i] = HEX[md[i] >> 4];
        out[2 * i + 1] = HEX[md[i] & 15];
    }
    out[64] = '\0';
}

/* Signs the session's JWT. Returns a malloc'd string (free()), NULL on failure. */
static char *jwt_make(const char *sub, const char *sid, const char *user, time_t iat, time_t exp)
{
    jwt_t *j = NULL;
    char *s = NULL;
    if (jwt_new(&j) != 0)
        return NULL;
    if (jwt_add_grant(j, "sub", sub) == 0 && jwt_add_grant(j, "sid", sid) == 0 &&
        jwt_add_grant(j, "preferred_username", user) == 0 &&
        jwt_add_grant(j, "iss", JWT_ISSUER) == 0 && jwt_add_grant_int(j, "iat", (long)iat) == 0 &&
        jwt_add_grant_int(j, "exp", (long)exp) == 0 &&
        jwt_set_alg(j, JWT_ALG_HS256, (const unsigned char *)cfg.jwt_secret,
                    (int)strlen(cfg.jwt_secret)) == 0)
        s = jwt_encode_str(j);
    jwt_free(j);
    return s;
}

/*
 * Logs `user` in under cookie value `cookie` for ttl seconds, replacing any session that cookie
 * had. user/groups/ents must be text_ok() and fit MAX_USER/MAX_GROUPS. Signs the JWT outside the
 * lock. Returns 0 and the session's end in *end, or -ENOMEM / -ENOSPC (table full).
 */
static int session_create(struct str cookie, const char *user, const char *groups, const char *ents,
                          long ttl, time_t *end)
{
    time_t now = time(NULL);
    char uid[65], sid[33];
    user_uid(user, uid);
    rng_string(sid, 32, HEX);
    char *jwt = jwt_make(uid, sid, user, now, now + ttl);
    if (!jwt)
        return -ENOMEM;
    size_t cap = strlen(jwt) + 3 * strlen(user) + strlen(groups) + strlen(ents) + 512;
    struct session *s = malloc(sizeof *s + cap);
    if (!s) {
        free(jwt);
        return -ENOMEM;
    }
    snprintf(s->user, sizeof s->user, "%s", user);
    snprintf(s->groups, sizeof s->groups, "%s", groups);
    s->end = now + ttl;
    int n = snprintf(s->hdr, cap,
                     "X-authentik-username: %s\r\n"
                     "X-authentik-groups: %s\r\n"
                     "X-authentik-entitlements: %s\r\n"
                     "X-authentik-email: %s@example.test\r\n"
                     "X-authentik-name: Test %s\r\n"
                     "X-authentik-uid: %s\r\n"
                     "X-authentik-jwt: %s\r\n",
                     user, groups, ents, user, user, uid, jwt);
    free(jwt);
    s->hdr_len = (size_t)n; /* cap leaves room for every fixed part: never truncated */

    pthread_mutex_lock(&tab.mu);
    struct entry *e = __tab_get(cookie, true);
    struct session *old = NULL;
    if (e) {
        old = e->sess;
        e->sess = s;
    }
    pthread_mutex_unlock(&tab.mu);
    if (!e) {
        free(s);
        return -ENOSPC;
    }
    free(old);
    *end = s->end;
    return 0;
}

static bool in_group(const char *groups, const char *group)
{
    size_t n = strlen(group);
    for (const char *p = groups;;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && memcmp(p, group, n) == 0)
            return true;
        if (!bar)
            return false;
        p = bar + 1;
    }
}

/* Ends sessions: the one of `cookie` (user NULL), or every one of `user` (cookie.n == 0), or, with
 * owner set, every one of the user owning `cookie`'s session. Returns how many were ended. */
static int sessions_end(struct str cookie, const char *user, bool owner)
{
    char who[MAX_USER + 1] = "";
    int n = 0;
    pthread_mutex_lock(&tab.mu);
    if (cookie.n) {
        struct entry *e = __tab_get(cookie, false);
        if (e && e->sess) {
            if (owner) {
                snprintf(who, sizeof who, "%s", e->sess->user);
                user = who;
            } else {
                free(e->sess);
                e->sess = NULL;
                n = 1;
            }
        }
    }
    if (user && user[0]) {
        for (size_t i = 0; i < NBUCKETS; i++)
            for (struct entry *e = tab.buckets[i]; e; e = e->next)
                if (e->sess && strcmp(e->sess->user, user) == 0) {
                    free(e->sess);
                    e->sess = NULL;
                    n++;
                }
    }
    pthread_mutex_unlock(&tab.mu);
    return n;
}

/* ---- connections ---- */

struct conn {
    int fd;
    int slot; /* in the registry; -1 for control connections */
    bool control;
    bool close_after;   /* answer the current request, then close */
    bool keep_alive_10; /* HTTP/1.0 client that asked for keep-alive */
    bool head;
    int status; /* of the current answer, for the log */
    size_t in_len, in_off, discard, out_len;
    char in[IN_CAP];
    char out[OUT_CAP];
};

/* Every open forward-auth connection, so "refuse" can cut them all. */
static struct {
    pthread_mutex_t mu;
    int *fds;  /* cfg.max_conns slots, -1 when free */
    int *free; /* stack of free slot numbers */
    int nfree;
} reg = {.mu = PTHREAD_MUTEX_INITIALIZER};

static atomic_int control_conns;

static int reg_add(int fd)
{
    int slot = -1;
    pthread_mutex_lock(&reg.mu);
    if (reg.nfree > 0) {
        slot = reg.free[--reg.nfree];
        reg.fds[slot] = fd;
    }
    pthread_mutex_unlock(&reg.mu);
    return slot;
}

/* Closes a connection's socket and gives its slot (-1: a control connection) back. The slot is
 * freed before close() so that reg_shutdown_all() never touches a reused descriptor. */
static void conn_release(int fd, int slot)
{
    if (slot >= 0) {
        pthread_mutex_lock(&reg.mu);
        reg.fds[slot] = -1;
        reg.free[reg.nfree++] = slot;
        pthread_mutex_unlock(&reg.mu);
    } else {
        atomic_fetch_sub(&control_conns, 1);
    }
    close(fd);
}

static void reg_shutdown_all(void)
{
    pthread_mutex_lock(&reg.mu);
    for (int i = 0; i < cfg.max_conns; i++)
        if (reg.fds[i] >= 0)
            shutdown(reg.fds[i], SHUT_RDWR);
    pthread_mutex_unlock(&reg.mu);
}

static void out_put(struct conn *c, const char *s, size_t n)
{
    if (n > OUT_CAP - c->out_len) /* cannot happen: callers flush below OUT_RESERVE */
        n = OUT_CAP - c->out_len;
    memcpy(c->out + c->out_len, s, n);
    c->out_len += n;
}

__attribute__((format(printf, 2, 3))) static void out_printf(struct conn *c, const char *fmt, ...)
{
    size_t room = OUT_CAP - c->out_len;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(c->out + c->out_len, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        c->out_len += (size_t)n < room ? (size_t)n : room - 1;
}

/* Writes everything queued. Returns 0, or -1 when the peer is gone. */
static int out_flush(struct conn *c)
{
    size_t off = 0;
    while (off < c->out_len) {
        ssize_t n = send(c->fd, c->out + off, c->out_len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            c->out_len = 0;
            return -1;
        }
        off += (size_t)n;
    }
    c->out_len = 0;
    return 0;
}

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 302:
        return "Found";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Unknown";
    }
}

static void resp_start(struct conn *c, int status)
{
    c->status = status;
    out_printf(c, "HTTP/1.1 %d %s\r\n", status, reason(status));
}

/* Ends the head begun by resp_start() (plus any header lines the caller added) and adds the body.
 */
static void resp_finish(struct conn *c, const char *ctype, const char *body, size_t n)
{
    if (ctype)
        out_printf(c, "Content-Type: %s\r\n", ctype);
    out_printf(c, "Content-Length: %zu\r\n", n);
    if (c->close_after)
        out_put(c, "Connection: close\r\n", 19);
    else if (c->keep_alive_10)
        out_put(c, "Connection: keep-alive\r\n", 24);
    out_put(c, "\r\n", 2);
    if (!c->head)
        out_put(c, body, n);
}

static void resp_text(struct conn *c, int status, const char *body)
{
    resp_start(c, status);
    resp_finish(c, "text/plain; charset=utf-8", body, strlen(body));
}

__attribute__((format(printf, 3, 4))) static void resp_json(struct conn *c, int status,
                                                            const char *fmt, ...)
{
    char body[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof body)
        n = snprintf(body, sizeof body, "{\"error\":\"answer too long\"}");
    resp_start(c, status);
    resp_finish(c, "application/json", body, (size_t)n);
}

/* ---- request parsing ---- */

struct req {
    struct str method, path, query;
    int minor; /* HTTP/1.minor */
    bool conn_close, conn_keep_alive, chunked;
    size_t content_length;
    bool has_cookie;
    struct str cookie; /* value of the cookie named --cookie-name */
    struct str fwd_host, fwd_uri, fwd_proto;
};

static void parse_connection(struct req *r, struct str v)
{
    const char *p = v.p, *end = v.p + v.n;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *te = comma ? comma : end;
        struct str tok = str_trim((struct str){p, (size_t)(te - p)});
        if (str_caseeq(tok, "close"))
            r->conn_close = true;
        else if (str_caseeq(tok, "keep-alive"))
            r->conn_keep_alive = true;
        p = te + 1;
    }
}

static void parse_cookie(struct req *r, struct str v)
{
    size_t nlen = strlen(cfg.cookie_name);
    const char *p = v.p, *end = v.p + v.n;
    while (p < end && !r->has_cookie) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *pe = semi ? semi : end;
        struct str pair = str_trim((struct str){p, (size_t)(pe - p)});
        const char *eq = memchr(pair.p, '=', pair.n);
        if (eq && (size_t)(eq - pair.p) == nlen && memcmp(pair.p, cfg.cookie_name, nlen) == 0) {
            r->has_cookie = true;
            r->cookie = (struct str){eq + 1, (size_t)(pair.p + pair.n - (eq + 1))};
        }
        p = pe + 1;
    }
}

/*
 * Parses one request head from buf[0..len). Returns the head's length through the blank line, 0
 * when the head is not complete yet, -1 when it is malformed. r's strings point into buf.
 */
static long req_parse(const char *buf, size_t len, struct req *r)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end)
        return 0;
    memset(r, 0, sizeof *r);
    const char *lines_end = end + 2; /* every line, the last one included, ends in CRLF */

    const char *eol = memmem(buf, (size_t)(lines_end - buf), "\r\n", 2);
    const char *sp = memchr(buf, ' ', (size_t)(eol - buf));
    if (!sp || sp == buf)
        return -1;
    r->method = (struct str){buf, (size_t)(sp - buf)};
    for (size_t i = 0; i < r->method.n; i++)
        if (r->method.p[i] < 'A' || r->method.p[i] > 'Z')
            return -1;
    const char *target = sp + 1;
    sp = memchr(target, ' ', (size_t)(eol - target));
    if (!sp || sp == target || *target != '/')
        return -1;
    const char *q = memchr(target, '?', (size_t)(sp - target));
    r->path = (struct str){target, (size_t)((q ? q : sp) - target)};
    if (q)
        r->query = (struct str){q + 1, (size_t)(sp - (q + 1))};
    const char *ver = sp + 1;
    if (eol - ver != 8 || memcmp(ver, "HTTP/1.", 7) != 0 || (ver[7] != '0' && ver[7] != '1'))
        return -1;
    r->minor = ver[7] - '0';

    bool have_length = false;
    for (const char *p = eol + 2; p < lines_end; p = eol + 2) {
        eol = memmem(p, (size_t)(lines_end - p), "\r\n", 2);
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (!colon || colon == p)
            return -1;
        struct str name = {p, (size_t)(colon - p)};
        for (size_t i = 0; i < name.n; i++)
            if (name.p[i] <= ' ' || name.p[i] >= 0x7f)
                return -1;
        struct str v = str_trim((struct str){colon + 1, (size_t)(eol - colon - 1)});
        for (size_t i = 0; i < v.n; i++)
            if (((unsigned char)v.p[i] < 0x20 && v.p[i] != '\t') || v.p[i] == 0x7f)
                return -1;
        if (str_caseeq(name, "Content-Length")) {
            size_t n = 0;
            if (v.n == 0 || v.n > 12)
                return -1;
            for (size_t i = 0; i < v.n; i++) {
                if (v.p[i] < '0' || v.p[i] > '9')
                    return -1;
                n = n * 10 + (size_t)(v.p[i] - '0');
            }
            if (have_length && n != r->content_length)
                return -1;
            have_length = true;
            r->content_length = n;
        } else if (str_caseeq(name, "Transfer-Encoding")) {
            r->chunked = true; /* any transfer coding: we do not decode bodies */
        } else if (str_caseeq(name, "Connection")) {
            parse_connection(r, v);
        } else if (str_caseeq(name, "Cookie")) {
            parse_cookie(r, v);
        } else if (str_caseeq(name, "X-Forwarded-Host")) {
            r->fwd_host = v;
        } else if (str_caseeq(name, "X-Forwarded-Uri")) {
            r->fwd_uri = v;
        } else if (str_caseeq(name, "X-Forwarded-Proto")) {
            r->fwd_proto = v;
        }
    }
    return (long)(end + 4 - buf);
}

/* ---- faults ---- */

enum fault_mode {
    FAULT_OK,
    FAULT_500,
    FAULT_503,
    FAULT_REFUSE,
    FAULT_HANG,
    FAULT_RESET,
    FAULT_GARBAGE,
    FAULT_RESET_MID, /* the real answer's first half, then a reset */
    FAULT_DRIP       /* the real answer, DRIP_BYTES every DRIP_MS */
};
static const char *const fault_names[] = {"ok",    "500",     "503",       "refuse", "hang",
                                          "reset", "garbage", "reset-mid", "drip"};
#define DRIP_BYTES 16
#define DRIP_MS 50

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* broadcast on every change of mode or listen_fd */
    _Atomic enum fault_mode mode;
    atomic_int latency_ms;
    unsigned gen;  /* bumped on every mode change: wakes hung connections */
    int listen_fd; /* -1 while refusing; the accept thread closes it */
    bool closing;  /* fault_set() asked the accept thread to close listen_fd */
} fault = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .listen_fd = -1};

static int listen_open(const struct sockaddr_in *a)
{
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (const struct sockaddr *)a, sizeof *a) < 0 || listen(fd, 4096) < 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    return fd;
}

/*
 * Switches the fault mode (and the latency when latency_ms >= 0). Entering "refuse" shuts the
 * listening socket down, waits until the accept thread has closed it (so the port is free to be
 * bound again) and cuts every open forward-auth connection; leaving it binds the port again.
 * Returns 0, or -errno when the port cannot be bound again (the mode then stays "refuse").
 */
static int fault_set(enum fault_mode mode, int latency_ms)
{
    int rc = 0;
    pthread_mutex_lock(&fault.mu);
    enum fault_mode old = fault.mode;
    if (mode == FAULT_REFUSE && old != FAULT_REFUSE) {
        fault.closing = true;
        shutdown(fault.listen_fd, SHUT_RDWR); /* wakes the accept thread out of accept() */
        while (fault.listen_fd >= 0)
            pthread_cond_wait(&fault.cv, &fault.mu);
        reg_shutdown_all();
    } else if (mode != FAULT_REFUSE && old == FAULT_REFUSE) {
        int fd = listen_open(&cfg.listen_addr);
        if (fd < 0) {
            rc = fd;
            mode = FAULT_REFUSE;
        } else {
            fault.listen_fd = fd;
        }
    }
    if (latency_ms >= 0)
        atomic_store(&fault.latency_ms, latency_ms);
    fault.mode = mode;
    fault.gen++;
    pthread_cond_broadcast(&fault.cv);
    pthread_mutex_unlock(&fault.mu);
    return rc;
}

/* Blocks while the mode stays "hang". */
static void fault_wait_hang(void)
{
    pthread_mutex_lock(&fault.mu);
    unsigned gen = fault.gen;
    while (fault.mode == FAULT_HANG && fault.gen == gen)
        pthread_cond_wait(&fault.cv, &fault.mu);
    pthread_mutex_unlock(&fault.mu);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* ---- forward-auth ---- */

/* Lower-cases host and strips a ":port"; out gets MAX_HOST+1 bytes. False when empty or too long.
 */
static bool host_normalize(struct str h, char *out)
{
    if (h.n && h.p[h.n - 1] != ']') {
        const char *colon = memrchr(h.p, ':', h.n);
        if (colon)
            h.n = (size_t)(colon - h.p);
    }
    if (h.n == 0 || h.n > MAX_HOST)
        return false;
    for (size_t i = 0; i < h.n; i++)
        out[i] = (char)(h.p[i] >= 'A' && h.p[i] <= 'Z' ? h.p[i] + 32 : h.p[i]);
    out[h.n] = '\0';
    return true;
}

static const struct app *app_find(const char *host)
{
    for (int i = 0; i < cfg.napps; i++)
        if (strcmp(cfg.apps[i].host, host) == 0)
            return &cfg.apps[i];
    return NULL;
}

static void put_set_cookie(struct conn *c, const char *domain, struct str value)
{
    out_printf(c, "Set-Cookie: %s=%.*s; Path=/; Domain=%s; Max-Age=%d; HttpOnly; SameSite=Lax\r\n",
               cfg.cookie_name, (int)value.n, value.p, domain, COOKIE_MAX_AGE);
}

static void resp_redirect_body(struct conn *c)
{
    static const char body[] = "<html><body>Found: redirecting.</body></html>\n";
    resp_finish(c, "text/html; charset=utf-8", body, sizeof body - 1);
}

/*
 * Answers one forward-auth check (the fault mode already applied). nginx: answer 401 where the
 * other proxies get a 302 to the login page. The decision order is the one in the file's brief:
 * application, sign-out, login callback, unauthenticated prefix, session, login redirect.
 */
static void forward_auth(struct conn *c, const struct req *r, bool nginx)
{
    char host[MAX_HOST + 1];
    const struct app *app = host_normalize(r->fwd_host, host) ? app_find(host) : NULL;
    if (!app) {
        resp_text(c, 400, "no application for this X-Forwarded-Host");
        return;
    }
    struct str upath = r->fwd_uri, uquery = {"", 0};
    const char *qm = memchr(upath.p, '?', upath.n);
    if (qm) {
        uquery = (struct str){qm + 1, (size_t)(upath.p + upath.n - (qm + 1))};
        upath.n = (size_t)(qm - upath.p);
    }
    struct str proto =
        r->fwd_proto.n && r->fwd_proto.n <= 8 ? r->fwd_proto : (struct str){"http", 4};
    struct str cookie = r->has_cookie && cookie_ok(r->cookie) ? r->cookie : (struct str){"", 0};

    if (str_has_prefix(upath, SIGN_OUT_PATH) || query_is(uquery, "X-authentik-logout", "true")) {
        if (cookie.n)
            sessions_end(cookie, NULL, true);
        resp_start(c, 302);
        out_printf(c, "Location: http://%.*s/application/o/%s/end-session/\r\n", (int)r->fwd_host.n,
                   r->fwd_host.p, app->slug);
        out_printf(c,
                   "Set-Cookie: %s=; Path=/; Domain=%s; Max-Age=0; "
                   "Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Lax\r\n",
                   cfg.cookie_name, host);
        resp_redirect_body(c);
        return;
    }

    if (query_is(uquery, "X-authentik-auth-callback", "true")) {
        char user[MAX_USER + 1], groups[MAX_GROUPS + 1], fresh[NEW_COOKIE_LEN + 1];
        time_t end;
        if (query_get(uquery, "code", user, sizeof user) <= 0 || !text_ok(user)) {
            resp_text(c, 400, "login callback without a usable code");
            return;
        }
        int n = query_get(uquery, "groups", groups, sizeof groups);
        if (n == -1)
            groups[0] = '\0';
        else if (n < 0 || !text_ok(groups)) {
            resp_text(c, 400, "login callback with unusable groups");
            return;
        }
        if (!cookie.n) {
            rng_string(fresh, NEW_COOKIE_LEN, ALNUM);
            cookie = (struct str){fresh, NEW_COOKIE_LEN};
        }
        if (session_create(cookie, user, groups, "", DEFAULT_TTL, &end) < 0) {
            resp_text(c, 500, "cannot create the session");
            return;
        }
        resp_start(c, 302);
        out_printf(c, "Location: %.*s://%.*s/\r\n", (int)proto.n, proto.p, (int)r->fwd_host.n,
                   r->fwd_host.p);
        put_set_cookie(c, host, cookie);
        resp_redirect_body(c);
        return;
    }

    for (int i = 0; i < app->nskip; i++) {
        if (str_has_prefix(upath, app->skip[i])) {
            resp_start(c, 200);
            resp_finish(c, NULL, "", 0);
            return;
        }
    }

    if (cookie.n) {
        /* The status line goes out first and the session's header lines are copied right after
         * it under the lock; when there is no allowed session the head is rolled back. */
        size_t mark = c->out_len;
        int allowed = 0;
        time_t now = time(NULL);
        resp_start(c, 200);
        pthread_mutex_lock(&tab.mu);
        struct entry *e = __tab_get(cookie, false);
        if (e && e->sess && e->sess->end > now) {
            allowed = !app->allow[0] || in_group(e->sess->groups, app->allow) ? 1 : -1;
            if (allowed > 0)
                out_put(c, e->sess->hdr, e->sess->hdr_len);
        }
        pthread_mutex_unlock(&tab.mu);
        if (allowed > 0) {
            out_put(c, app->meta, app->meta_len);
            resp_finish(c, NULL, "", 0);
            return;
        }
        c->out_len = mark;
        if (allowed < 0) {
            resp_text(c, 403, "access denied: user is not in the allowed group");
            return;
        }
    }

    char fresh[NEW_COOKIE_LEN + 1];
    if (!cookie.n) {
        rng_string(fresh, NEW_COOKIE_LEN, ALNUM);
        cookie = (struct str){fresh, NEW_COOKIE_LEN};
    }
    if (nginx) {
        resp_start(c, 401);
        put_set_cookie(c, host, cookie);
        resp_finish(c, "text/plain; charset=utf-8", "unauthorized request", 20);
        return;
    }
    char cb[MAX_HOST + 128], cb_enc[3 * sizeof cb], state[33];
    snprintf(cb, sizeof cb, "%.*s://%.*s" CALLBACK_PATH "?X-authentik-auth-callback=true",
             (int)proto.n, proto.p, (int)r->fwd_host.n, r->fwd_host.p);
    pct_encode(cb, cb_enc, sizeof cb_enc);
    rng_string(state, 32, HEX);
    resp_start(c, 302);
    out_printf(c,
               "Location: " IDP_ORIGIN "/application/o/authorize/?client_id=%s&redirect_uri=%s"
               "&response_type=code&state=%s\r\n",
               app->slug, cb_enc, state);
    put_set_cookie(c, host, cookie);
    resp_redirect_body(c);
}

/*
 * Routes a request on the forward-auth listener and applies the fault mode. Returns 0 when an
 * answer was queued, -1 when the connection must be dropped now (everything queued before was
 * flushed).
 */
static int auth_handle(struct conn *c, const struct req *r)
{
    bool nginx;
    if (str_eq(r->path, "/outpost.goauthentik.io/auth/nginx"))
        nginx = true;
    else if (str_eq(r->path, "/outpost.goauthentik.io/auth/traefik") ||
             str_eq(r->path, "/outpost.goauthentik.io/auth/caddy") ||
             str_eq(r->path, "/outpost.goauthentik.io/auth/envoy"))
        nginx = false;
    else {
        resp_text(c, 404, "not found");
        return 0;
    }

    calls_count(r->has_cookie && cookie_ok(r->cookie) ? r->cookie : (struct str){"", 0});
    enum fault_mode mode = fault.mode;
    int latency = atomic_load(&fault.latency_ms);
    if (mode == FAULT_REFUSE)
        return -1;
    if (mode == FAULT_HANG) {
        if (out_flush(c) == 0)
            fault_wait_hang();
        return -1;
    }
    if (latency > 0) {
        if (out_flush(c) < 0)
            return -1;
        sleep_ms(latency);
    }
    switch (mode) {
    case FAULT_RESET: {
        struct linger lg = {1, 0};
        out_flush(c);
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg); /* close() sends RST */
        return -1;
    }
    case FAULT_GARBAGE: {
        static const char junk[] = "\x00\xff\x16\x03 this is not HTTP \x01\x02\x7f\r\n\r\n";
        if (out_flush(c) == 0)
            (void)!send(c->fd, junk, sizeof junk - 1, MSG_NOSIGNAL);
        return -1;
    }
    case FAULT_500:
    case FAULT_503:
        resp_text(c, mode == FAULT_500 ? 500 : 503, "idp down");
        return 0;
    case FAULT_RESET_MID:
    case FAULT_DRIP: {
        /* Render the real answer alone in the buffer, then send it badly. */
        if (out_flush(c) < 0)
            return -1;
        forward_auth(c, r, nginx);
        size_t n = mode == FAULT_RESET_MID ? c->out_len / 2 : c->out_len;
        for (size_t off = 0; off < n;) {
            size_t k = mode == FAULT_DRIP && n - off > DRIP_BYTES ? DRIP_BYTES : n - off;
            ssize_t w = send(c->fd, c->out + off, k, MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                c->out_len = 0;
                return -1;
            }
            off += (size_t)w;
            if (mode == FAULT_DRIP && off < n)
                sleep_ms(DRIP_MS);
        }
        c->out_len = 0;
        if (mode == FAULT_DRIP)
            return 0;
        struct linger lg = {1, 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg); /* close() sends RST */
        return -1;
    }
    default:
        forward_auth(c, r, nginx);
        return 0;
    }
}

/* ---- control ---- */

static void control_handle(struct conn *c, const struct req *r)
{
    char cookie[MAX_COOKIE + 1], user[MAX_USER + 1], groups[MAX_GROUPS + 1], ents[MAX_GROUPS + 1];
    char num[24];
    struct str q = r->query;
    int clen = query_get(q, "cookie", cookie, sizeof cookie);
    struct str ck = {cookie, clen > 0 ? (size_t)clen : 0};
    bool cookie_bad = clen == -2 || (clen >= 0 && !cookie_ok(ck));

    if (str_eq(r->path, "/healthz")) {
        resp_json(c, 200, "{\"ok\":true}");
    } else if (str_eq(r->path, "/session")) {
        long ttl = DEFAULT_TTL;
        time_t end;
        int ul = query_get(q, "user", user, sizeof user);
        int gl = query_get(q, "groups", groups, sizeof groups);
        int el = query_get(q, "entitlements", ents, sizeof ents);
        int tl = query_get(q, "ttl", num, sizeof num);
        if (gl == -1)
            groups[0] = '\0';
        if (el == -1)
            ents[0] = '\0';
        if (tl >= 0) {
            char *e;
            ttl = strtol(num, &e, 10);
            if (tl == 0 || *e || ttl < 1 || ttl > MAX_TTL)
                tl = -2;
        }
        if (clen <= 0 || cookie_bad || ul <= 0 || !text_ok(user) || gl == -2 || !text_ok(groups) ||
            el == -2 || !text_ok(ents) || tl == -2) {
            resp_json(c, 400,
                      "{\"error\":\"need cookie=V&user=NAME[&groups=a|b]"
                      "[&entitlements=a|b][&ttl=1..%ld], printable\"}",
                      MAX_TTL);
            return;
        }
        int rc = session_create(ck, user, groups, ents, ttl, &end);
        if (rc < 0)
            resp_json(c, 500, "{\"error\":\"%s\"}", strerror(-rc));
        else
            resp_json(c, 200, "{\"ok\":true,\"exp\":%ld}", (long)end);
    } else if (str_eq(r->path, "/end")) {
        int ul = query_get(q, "user", user, sizeof user);
        if (cookie_bad || ul == -2 || (clen <= 0 && ul <= 0)) {
            resp_json(c, 400, "{\"error\":\"need cookie=V or user=NAME\"}");
            return;
        }
        resp_json(c, 200, "{\"ended\":%d}", sessions_end(ck, ul > 0 ? user : NULL, false));
    } else if (str_eq(r->path, "/fault")) {
        char m[16];
        int ml = query_get(q, "mode", m, sizeof m);
        int ll = query_get(q, "latency_ms", num, sizeof num);
        int mode = -1;
        long latency = -1;
        for (int i = 0; ml >= 0 && i < (int)(sizeof fault_names / sizeof *fault_names); i++)
            if (strcmp(m, fault_names[i]) == 0)
                mode = i;
        if (ll >= 0) {
            char *e;
            latency = strtol(num, &e, 10);
            if (ll == 0 || *e || latency < 0 || latency > 600000)
                ll = -2;
        }
        if ((ml < 0 && ll < 0) || (ml >= 0 && mode < 0) || ml == -2 || ll == -2) {
            resp_json(c, 400,
                      "{\"error\":\"need mode=ok|500|503|refuse|hang|reset|garbage|reset-mid|"
                      "drip and/or latency_ms=0..600000\"}");
            return;
        }
        int rc = fault_set(mode >= 0 ? (enum fault_mode)mode : fault.mode, (int)latency);
        if (rc < 0)
            resp_json(c, 500, "{\"error\":\"cannot listen again: %s\"}", strerror(-rc));
        else
            resp_json(c, 200, "{\"ok\":true}");
    } else if (str_eq(r->path, "/calls")) {
        if (cookie_bad || clen == 0) {
            resp_json(c, 400, "{\"error\":\"bad cookie value\"}");
            return;
        }
        resp_json(c, 200, "{\"calls\":%lu}", calls_get(ck));
    } else if (str_eq(r->path, "/reset")) {
        calls_reset();
        int rc = fault_set(FAULT_OK, 0);
        if (rc < 0)
            resp_json(c, 500, "{\"error\":\"cannot listen again: %s\"}", strerror(-rc));
        else
            resp_json(c, 200, "{\"ok\":true}");
    } else {
        resp_json(c, 404, "{\"error\":\"not found\"}");
    }
}

/* ---- connection loop ---- */

/* Answers one parsed request. Returns 0, or -1 when the connection must be dropped now. */
static int handle(struct conn *c, const struct req *r)
{
    int rc = 0;
    c->close_after = r->conn_close || (r->minor == 0 && !r->conn_keep_alive);
    c->keep_alive_10 = r->minor == 0 && !c->close_after;
    c->head = str_eq(r->method, "HEAD");
    c->status = 0;
    if (r->chunked) {
        c->close_after = true; /* the body is not consumed, so nothing after it can be read */
        resp_text(c, 400, "chunked request bodies are not supported");
    } else if (c->control) {
        control_handle(c, r);
    } else {
        rc = auth_handle(c, r);
    }
    if (!cfg.quiet)
        fprintf(stderr, "test-idp: %s %.*s %.*s -> %d\n", c->control ? "control" : "auth",
                (int)r->method.n, r->method.p, (int)r->path.n, r->path.p, c->status);
    return rc;
}

/* Serves c until the peer closes, an error, Connection: close or a fault drops it. */
static void conn_serve(struct conn *c)
{
    for (;;) {
        size_t avail = c->in_len - c->in_off;
        if (c->discard) {
            size_t k = c->discard < avail ? c->discard : avail;
            c->in_off += k;
            c->discard -= k;
            avail -= k;
        }
        if (!c->discard && avail) {
            struct req r;
            long n = req_parse(c->in + c->in_off, avail, &r);
            if (n < 0) {
                c->close_after = true;
                c->head = false;
                resp_text(c, 400, "malformed request");
                out_flush(c);
                return;
            }
            if (n > 0) {
                c->in_off += (size_t)n;
                c->discard = r.content_length;
                if (handle(c, &r) < 0)
                    return;
                if (c->close_after) {
                    out_flush(c);
                    return;
                }
                if (OUT_CAP - c->out_len < OUT_RESERVE && out_flush(c) < 0)
                    return;
                continue;
            }
        }
        if (c->out_len && out_flush(c) < 0)
            return;
        if (c->in_off) {
            memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
            c->in_len -= c->in_off;
            c->in_off = 0;
        }
        if (c->in_len == IN_CAP) {
            c->close_after = true;
            c->head = false;
            resp_text(c, 431, "request head too large");
            out_flush(c);
            return;
        }
        ssize_t rd = recv(c->fd, c->in + c->in_len, IN_CAP - c->in_len, 0);
        if (rd < 0 && errno == EINTR)
            continue;
        if (rd <= 0)
            return;
        c->in_len += (size_t)rd;
    }
}

static void *conn_main(void *arg)
{
    struct conn *c = arg;
    conn_serve(c);
    if (c->close_after)
        shutdown(c->fd, SHUT_WR); /* let the last answer arrive before the close */
    conn_release(c->fd, c->slot);
    free(c);
    return NULL;
}

static pthread_attr_t conn_attr;

/* Hands an accepted socket to a new thread; closes it when over the connection limit. */
static void conn_spawn(int fd, bool control)
{
    int one = 1;
    struct conn *c = NULL;
    int slot = -1;
    if (control) {
        if (atomic_fetch_add(&control_conns, 1) >= MAX_CONTROL_CONNS) {
            atomic_fetch_sub(&control_conns, 1);
            close(fd);
            return;
        }
    } else if ((slot = reg_add(fd)) < 0) {
        close(fd);
        return;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c = malloc(sizeof *c);
    if (c) {
        c->fd = fd;
        c->slot = slot;
        c->control = control;
        c->close_after = false;
        c->in_len = c->in_off = c->discard = c->out_len = 0;
        pthread_t t;
        if (pthread_create(&t, &conn_attr, conn_main, c) == 0)
            return;
    }
    conn_release(fd, slot);
    free(c);
}

/* The forward-auth accept loop; also closes the listening socket when fault_set() asks. */
static void *auth_accept_main(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&fault.mu);
        while (fault.listen_fd < 0)
            pthread_cond_wait(&fault.cv, &fault.mu);
        int lfd = fault.listen_fd;
        pthread_mutex_unlock(&fault.mu);

        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0) {
            conn_spawn(fd, false);
            continue;
        }
        int err = errno;
        pthread_mutex_lock(&fault.mu);
        bool closed = fault.closing;
        if (closed) {
            close(fault.listen_fd);
            fault.listen_fd = -1;
            fault.closing = false;
            pthread_cond_broadcast(&fault.cv);
        }
        pthread_mutex_unlock(&fault.mu);
        if (!closed && err != EINTR && err != ECONNABORTED)
            sleep_ms(10); /* EMFILE and friends: let connections end */
    }
    return NULL;
}

static void *control_accept_main(void *arg)
{
    int lfd = *(int *)arg;
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0)
            conn_spawn(fd, true);
        else if (errno != EINTR && errno != ECONNABORTED)
            sleep_ms(10);
    }
    return NULL;
}

/* ---- command line ---- */

__attribute__((format(printf, 1, 2), noreturn)) static void die_usage(const char *fmt, ...)
{
    va_list ap;
    fputs("test-idp: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

static void parse_addr(const char *flag, const char *s, struct sockaddr_in *a)
{
    const char *colon = strrchr(s, ':');
    char host[64];
    char *end;
    if (!colon || (size_t)(colon - s) >= sizeof host)
        die_usage("%s %s: want HOST:PORT", flag, s);
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    long port = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || port < 1 || port > 65535)
        die_usage("%s %s: bad port", flag, s);
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
        die_usage("%s %s: want an IPv4 address", flag, s);
}

/* HOST[;allow=GROUP][;skip=PREFIX,PREFIX...] */
static void parse_app(const char *spec)
{
    if (cfg.napps == MAX_APPS)
        die_usage("--app: at most %d applications", MAX_APPS);
    struct app *a = &cfg.apps[cfg.napps++];
    memset(a, 0, sizeof *a);
    char buf[2048];
    if (strlen(spec) >= sizeof buf)
        die_usage("--app %s: too long", spec);
    strcpy(buf, spec);
    char *save = NULL;
    char *host = strtok_r(buf, ";", &save);
    if (!host || strlen(host) > MAX_HOST || spec[0] == ';')
        die_usage("--app %s: want HOST[;allow=GROUP][;skip=PREFIX,...]", spec);
    for (char *p = host; *p; p++) {
        *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '.' || *p == '-'))
            die_usage("--app %s: bad host name", spec);
    }
    strcpy(a->host, host);
    size_t slug = strcspn(host, ".");
    if (slug == 0 || slug >= sizeof a->slug)
        die_usage("--app %s: bad host name", spec);
    memcpy(a->slug, host, slug);
    for (char *opt; (opt = strtok_r(NULL, ";", &save));) {
        if (strncmp(opt, "allow=", 6) == 0) {
            if (!opt[6] || strlen(opt + 6) > MAX_USER || !text_ok(opt + 6))
                die_usage("--app %s: bad allow group", spec);
            strcpy(a->allow, opt + 6);
        } else if (strncmp(opt, "skip=", 5) == 0) {
            char *s2 = NULL;
            for (char *pre = strtok_r(opt + 5, ",", &s2); pre; pre = strtok_r(NULL, ",", &s2)) {
                if (a->nskip == MAX_SKIPS || pre[0] != '/' || strlen(pre) > MAX_PREFIX ||
                    !text_ok(pre))
                    die_usage("--app %s: skip prefixes start with '/', at most %d", spec,
                              MAX_SKIPS);
                strcpy(a->skip[a->nskip++], pre);
            }
        } else {
            die_usage("--app %s: unknown option '%s'", spec, opt);
        }
    }
    for (int i = 0; i < cfg.napps - 1; i++)
        if (strcmp(cfg.apps[i].host, a->host) == 0)
            die_usage("--app %s: host given twice", spec);
    int n = snprintf(a->meta, sizeof a->meta,
                     "X-authentik-meta-app: %.*s\r\n"
                     "X-authentik-meta-outpost: " OUTPOST_NAME "\r\n"
                     "X-authentik-meta-provider: Provider for %.*s\r\n"
                     "X-authentik-meta-version: " OUTPOST_VERSION "\r\n",
                     (int)slug, host, (int)slug, host);
    a->meta_len = (size_t)n;
}

static const char *flag_value(int argc, char **argv, int *i, const char *flag)
{
    size_t n = strlen(flag);
    if (strncmp(argv[*i], flag, n) == 0 && argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (strcmp(argv[*i], flag) != 0)
        return NULL;
    if (*i + 1 >= argc)
        die_usage("%s needs a value", flag);
    return argv[++*i];
}

static void parse_args(int argc, char **argv)
{
    bool apps_given = false;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if ((v = flag_value(argc, argv, &i, "--listen"))) {
            parse_addr("--listen", v, &cfg.listen_addr);
            cfg.listen_arg = v;
        } else if ((v = flag_value(argc, argv, &i, "--control"))) {
            parse_addr("--control", v, &cfg.control_addr);
            cfg.control_arg = v;
        } else if ((v = flag_value(argc, argv, &i, "--threads"))) {
            char *end;
            long n = strtol(v, &end, 10);
            if (*end || end == v || n < 1 || n > 65536)
                die_usage("--threads %s: want 1..65536", v);
            cfg.max_conns = (int)n;
        } else if ((v = flag_value(argc, argv, &i, "--jwt-secret"))) {
            if (!*v)
                die_usage("--jwt-secret: must not be empty");
            cfg.jwt_secret = v;
        } else if ((v = flag_value(argc, argv, &i, "--cookie-name"))) {
            for (const char *p = v; *p; p++)
                if (*p <= ' ' || *p >= 0x7f || strchr("()<>@,;:\\\"/[]?={}", *p))
                    die_usage("--cookie-name %s: not a cookie name", v);
            if (!*v || strlen(v) > 128)
                die_usage("--cookie-name: 1..128 characters");
            cfg.cookie_name = v;
        } else if ((v = flag_value(argc, argv, &i, "--app"))) {
            if (!apps_given)
                cfg.napps = 0;
            apps_given = true;
            parse_app(v);
        } else if (strcmp(argv[i], "--quiet") == 0) {
            cfg.quiet = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: test-idp --listen HOST:PORT --control HOST:PORT [--threads N] "
                   "[--jwt-secret S] [--cookie-name NAME] [--app HOST[;allow=GROUP]"
                   "[;skip=PREFIX,...]]... [--quiet]\n");
            exit(0);
        } else {
            die_usage("unknown argument '%s'", argv[i]);
        }
    }
    if (!cfg.listen_arg || !cfg.control_arg)
        die_usage("--listen HOST:PORT and --control HOST:PORT are required");
    if (!apps_given) {
        parse_app("app1.test");
        parse_app("app2.test;allow=admins");
        parse_app("open.test;skip=/public/");
    }
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);

    reg.fds = malloc(sizeof *reg.fds * (size_t)cfg.max_conns);
    reg.free = malloc(sizeof *reg.free * (size_t)cfg.max_conns);
    if (!reg.fds || !reg.free)
        die_usage("out of memory");
    for (int i = 0; i < cfg.max_conns; i++) {
        reg.fds[i] = -1;
        reg.free[i] = cfg.max_conns - 1 - i;
    }
    reg.nfree = cfg.max_conns;

    static int control_fd;
    fault.listen_fd = listen_open(&cfg.listen_addr);
    if (fault.listen_fd < 0)
        die_usage("--listen %s: %s", cfg.listen_arg, strerror(-fault.listen_fd));
    control_fd = listen_open(&cfg.control_addr);
    if (control_fd < 0)
        die_usage("--control %s: %s", cfg.control_arg, strerror(-control_fd));

    /* Only main() takes SIGTERM/SIGINT (sigwait below); every thread inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    pthread_attr_init(&conn_attr);
    pthread_attr_setdetachstate(&conn_attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&conn_attr, THREAD_STACK);
    pthread_t t;
    if (pthread_create(&t, &conn_attr, auth_accept_main, NULL) != 0 ||
        pthread_create(&t, &conn_attr, control_accept_main, &control_fd) != 0) {
        fprintf(stderr, "test-idp: cannot start threads\n");
        return 1;
    }

    printf("ready\n");
    fflush(stdout);
    if (!cfg.quiet)
        fprintf(stderr, "test-idp: forward-auth on %s, control on %s, %d apps, cookie %s\n",
                cfg.listen_arg, cfg.control_arg, cfg.napps, cfg.cookie_name);

    int sig = 0;
    while (sigwait(&sigs, &sig) != 0)
        ;
    if (!cfg.quiet)
        fprintf(stderr, "test-idp: signal %d, exiting\n", sig);
    exit(0);
}
