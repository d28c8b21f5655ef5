/*
 * idp.c — the test identity provider. A small HTTP/1.1 server that answers forward-auth checks the
 * way one of three IdPs does (--mode): authentik's embedded outpost (the default:
 * mode_authentik.c), oauth2-proxy's /oauth2/auth (mode_oauth2_proxy.c) or Authelia's
 * /api/authz/forward-auth, auth-request and /api/verify (mode_authelia.c). Beside the forward-auth
 * listener it has a control listener through which tests create sessions and credentials, inject
 * faults (500, 503, refuse, hang, reset, garbage, latency, and two that start the real answer:
 * reset-mid cuts it off halfway with a reset, drip trickles it out) and read call counters, and an
 * optional oracle listener that answers exactly like the forward-auth one but is never faulted nor
 * counted (a differential test asks it what the IdP alone says).
 *
 * Design: one thread per connection with blocking sockets and its own in/out buffers. Pipelined
 * requests are parsed from the input buffer in order; their answers are batched in the output
 * buffer and written when the input holds no further complete request. All sessions live in one
 * hash table keyed by cookie value behind one mutex; an entry also carries that cookie's call
 * counter. Registered credentials (Basic user:password, bearer tokens) sit in a list under the same
 * mutex and name the cookie whose session they log in as. A session's authentik identity headers
 * (its signed JWT included) are rendered once when it is created. The fault state is one struct
 * behind a mutex and a condition variable: "refuse" makes the accept thread close the listening
 * socket (see fault_set()), "hang" parks connection threads on the condition variable until the
 * mode changes. Answers are deterministic: nothing random goes into them but a session's sid,
 * which is part of the session (see idp.h).
 *
 * Usage: test-idp --listen HOST:PORT --control HOST:PORT [--oracle HOST:PORT] [--threads N]
 *                 [--mode authentik|oauth2-proxy|authelia] [--jwt-secret S] [--cookie-name NAME]
 *                 [--quiet]
 *   authentik:    [--app HOST[;allow=GROUP][;skip=PREFIX,...][;domain=COOKIE_DOMAIN]]...
 *                 (default: app1.test, app2.test;allow=admins, open.test;skip=/public/; in
 *                 authelia mode the apps also become rules after the --rule ones; oauth2-proxy
 *                 mode ignores them)
 *   oauth2-proxy: [--set-xauthrequest[=true|false]] [--cookie-refresh SECONDS]
 *                 [--skip-jwt-bearer-tokens] [--deny-invalid-jwts]
 *                 [--skip-auth-route [METHOD=]REGEX]... [--trusted-ip CIDR]...
 *   authelia:     [--rule 'host=H;path=REGEX;methods=GET,HEAD;networks=CIDR[,CIDR];
 *                          subject=group:G|user:U;policy=bypass|one_factor|deny']...
 *                 [--default-policy deny|one_factor] [--cookie-domain D]... [--portal URL]
 *
 * Control API (any method): /session?cookie=V&user=U[&groups=a|b][&entitlements=a|b][&email=E]
 * [&ttl=S][&basic=PASSWORD][&bearer=TOKEN][&extra=Name:value]... registers a session and the
 * credentials U:PASSWORD and TOKEN that log in as it; /end?cookie=V or /end?user=U ends sessions
 * and revokes that user's credentials; /fault?mode=M&latency_ms=N; /calls[?cookie=V]; /reset;
 * /healthz.
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

#include "idp.h"

#define JWT_ISSUER "https://idp.test/application/o/test-idp/"
#define THREAD_STACK (512 * 1024)
#define DEFAULT_MAX_CONNS 4096
#define MAX_CONTROL_CONNS 64
#define MAX_CREDS 65536
#define NBUCKETS (1u << 16)
#define MAX_ENTRIES (1u << 18) /* cookies remembered; past this new cookies are not counted */

/* ---- configuration: parsed once in main(), read-only afterwards ---- */

struct idp_cfg cfg = {
    .max_conns = DEFAULT_MAX_CONNS,
    .jwt_secret = "authcache-test-idp-secret",
    .mode = MODE_AUTHENTIK,
    .default_policy = POLICY_DENY,
    .portal = "https://auth.test/",
};

/* ---- small string helpers ---- */

/* A user name, group list or header value we echo: printable ASCII, spaces allowed. */
bool text_ok(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
            return false;
    return true;
}

/* A cookie value we accept and echo in Set-Cookie (RFC 6265 cookie-octet). */
bool cookie_ok(struct str v)
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

bool pct_decode(struct str s, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < s.n; i++) {
        char ch = s.p[i];
        if (ch == '%') {
            if (s.n - i < 3 || hexval(s.p[i + 1]) < 0 || hexval(s.p[i + 2]) < 0)
                return false;
            ch = (char)(hexval(s.p[i + 1]) * 16 + hexval(s.p[i + 2]));
            i += 2;
        }
        if (ch == '\0' || o + 1 >= cap)
            return false;
        out[o++] = ch;
    }
    out[o] = '\0';
    return true;
}

int query_get_nth(struct str q, const char *name, int nth, char *out, size_t cap)
{
    size_t nlen = strlen(name);
    const char *p = q.p, *end = q.p + q.n;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        const char *ke = eq ? eq : pe;
        if ((size_t)(ke - p) == nlen && memcmp(p, name, nlen) == 0 && nth-- == 0) {
            const char *v = eq ? eq + 1 : pe;
            if (!pct_decode((struct str){v, (size_t)(pe - v)}, out, cap))
                return -2;
            return (int)strlen(out);
        }
        p = pe + 1;
    }
    return -1;
}

int query_get(struct str q, const char *name, char *out, size_t cap)
{
    return query_get_nth(q, name, 0, out, cap);
}

bool query_is(struct str q, const char *name, const char *want)
{
    char v[16];
    return query_get(q, name, v, sizeof v) >= 0 && strcmp(v, want) == 0;
}

/* Percent-encodes s for use inside a query parameter; out gets at most cap-1 bytes + NUL. */
void pct_encode(const char *s, char *out, size_t cap)
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

int b64_decode(struct str in, char *out, size_t cap)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0, i = 0;
    for (; i < in.n && in.p[i] != '='; i++) {
        char ch = in.p[i];
        int v = ch >= 'A' && ch <= 'Z'   ? ch - 'A'
                : ch >= 'a' && ch <= 'z' ? ch - 'a' + 26
                : ch >= '0' && ch <= '9' ? ch - '0' + 52
                : ch == '+'              ? 62
                : ch == '/'              ? 63
                                         : -1;
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o + 1 >= cap)
                return -1;
            out[o++] = (char)(acc >> bits & 0xff);
        }
    }
    for (; i < in.n; i++)
        if (in.p[i] != '=')
            return -1;
    out[o] = '\0';
    return (int)o;
}

static bool auth_scheme(struct str auth, const char *scheme, struct str *rest)
{
    size_t n = strlen(scheme);
    if (auth.n <= n || strncasecmp(auth.p, scheme, n) != 0 || auth.p[n] != ' ')
        return false;
    *rest = str_trim((struct str){auth.p + n + 1, auth.n - n - 1});
    return rest->n > 0;
}

bool basic_parse(struct str auth, char *user, size_t ucap, char *pass, size_t pcap)
{
    char buf[MAX_USER + MAX_SECRET + 2];
    struct str b64;
    if (!auth_scheme(auth, "Basic", &b64))
        return false;
    int n = b64_decode(b64, buf, sizeof buf);
    char *colon = n > 0 ? memchr(buf, ':', (size_t)n) : NULL;
    if (!colon || (size_t)(colon - buf) >= ucap || strlen(colon + 1) >= pcap ||
        strlen(buf) != (size_t)n)
        return false;
    memcpy(user, buf, (size_t)(colon - buf));
    user[colon - buf] = '\0';
    strcpy(pass, colon + 1);
    return true;
}

bool bearer_parse(struct str auth, struct str *token)
{
    return auth_scheme(auth, "Bearer", token);
}

/* Lower-cases host and strips a ":port"; out gets MAX_HOST+1 bytes. False when empty or too long.
 */
bool host_normalize(struct str h, char *out)
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

bool ip_parse(struct str s, uint8_t out[16])
{
    char buf[64];
    s = str_trim(s);
    if (s.n == 0 || s.n >= sizeof buf)
        return false;
    memcpy(buf, s.p, s.n);
    buf[s.n] = '\0';
    memset(out, 0, 16);
    if (inet_pton(AF_INET, buf, out + 12) == 1) {
        out[10] = out[11] = 0xff;
        return true;
    }
    return inet_pton(AF_INET6, buf, out) == 1;
}

/* ADDR or ADDR/BITS (IPv4 bits count over the mapped address). */
bool cidr_parse(const char *s, struct cidr *c)
{
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    if (!ip_parse((struct str){s, n}, c->addr))
        return false;
    bool v4 = memcmp(c->addr, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0 && strchr(s, '.');
    int max = v4 ? 32 : 128;
    long bits = max;
    if (slash) {
        char *end;
        bits = strtol(slash + 1, &end, 10);
        if (*end || end == slash + 1 || bits < 0 || bits > max)
            return false;
    }
    c->bits = (int)bits + (v4 ? 96 : 0);
    return true;
}

bool cidr_match(const struct cidr *nets, int n, const uint8_t ip[16])
{
    for (int i = 0; i < n; i++) {
        int full = nets[i].bits / 8, rest = nets[i].bits % 8;
        if (memcmp(nets[i].addr, ip, (size_t)full) != 0)
            continue;
        if (rest && ((nets[i].addr[full] ^ ip[full]) & (0xff00 >> rest)))
            continue;
        return true;
    }
    return false;
}

/* ---- randomness: per-thread xorshift64*, seeded from the kernel; only for a session's sid ---- */

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

const char HEX[] = "0123456789abcdef";
const char ALNUM[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

void derive_token(char *out, size_t n, const char *alphabet, const struct str *parts, int nparts)
{
    size_t k = strlen(alphabet), len = 1;
    unsigned char md[SHA256_DIGEST_LENGTH], buf[8192];
    for (int j = 0; j < nparts; j++) {
        size_t m = parts[j].n < sizeof buf - len - 1 ? parts[j].n : sizeof buf - len - 1;
        memcpy(buf + len, parts[j].p, m);
        len += m;
        buf[len++] = '\0';
    }
    for (size_t i = 0; i < n;) {
        buf[0] = (unsigned char)(i / sizeof md); /* one digest per 32 characters */
        SHA256(buf, len, md);
        for (size_t b = 0; b < sizeof md && i < n; b++)
            out[i++] = alphabet[md[b] % k];
    }
    out[n] = '\0';
}

/* ---- sessions, credentials and call counters ---- */

/* A logged-in session, immutable once published in the table. */
struct session {
    char user[MAX_USER + 1];
    char groups[MAX_GROUPS + 1]; /* '|'-joined */
    char email[MAX_EMAIL + 1];
    char sid[33];   /* random once per login; copies (session_alias) keep it */
    time_t created; /* oauth2-proxy's cookie refresh counts from here */
    time_t end;     /* expired from this second on; also the JWT's exp */
    size_t extra_len;
    char extra[MAX_EXTRA]; /* extra identity header lines (authentik additionalHeaders) */
    size_t hdr_len;
    char hdr[]; /* the identity header lines X-authentik-username .. X-authentik-jwt */
};

/* A registered credential: logs in as the session of `cookie` while it belongs to `user`. */
struct cred {
    struct cred *next;
    bool basic; /* Basic user:secret; else a bearer token */
    char user[MAX_USER + 1];
    char secret[MAX_SECRET + 1];
    char cookie[MAX_COOKIE + 1];
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
    struct cred *creds; /* newest first */
    size_t ncreds;
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

/* Publishes s as the session of cookie value `cookie` unless keep_sid names the sid it already
 * has (then s is freed). Takes ownership of s. Returns 0 or -ENOSPC (table full). */
static int session_publish(struct str cookie, struct session *s, bool keep_same_sid)
{
    pthread_mutex_lock(&tab.mu);
    struct entry *e = __tab_get(cookie, true);
    struct session *old = NULL;
    if (e) {
        if (keep_same_sid && e->sess && strcmp(e->sess->sid, s->sid) == 0) {
            old = s;
        } else {
            old = e->sess;
            e->sess = s;
        }
    }
    pthread_mutex_unlock(&tab.mu);
    if (!e) {
        free(s);
        return -ENOSPC;
    }
    free(old);
    return 0;
}

/*
 * Logs `user` in under cookie value `cookie` for ttl seconds, replacing any session that cookie
 * had. user/groups/ents/email must be text_ok() and fit their MAX_*; email NULL or "" means
 * USER@example.test; extra holds extra_len bytes of "Name: value\r\n" lines (< MAX_EXTRA). Signs
 * the JWT outside the lock. Returns 0 and the session's end in *end, or -ENOMEM / -ENOSPC.
 */
static int session_create(struct str cookie, const char *user, const char *groups, const char *ents,
                          const char *email, const char *extra, size_t extra_len, long ttl,
                          time_t *end)
{
    time_t now = time(NULL);
    char uid[65], sid[33], mail[MAX_EMAIL + 1];
    user_uid(user, uid);
    rng_string(sid, 32, HEX);
    if (email && email[0])
        snprintf(mail, sizeof mail, "%s", email);
    else
        snprintf(mail, sizeof mail, "%s@example.test", user);
    char *jwt = jwt_make(uid, sid, user, now, now + ttl);
    if (!jwt)
        return -ENOMEM;
    size_t cap =
        strlen(jwt) + 2 * strlen(user) + strlen(mail) + strlen(groups) + strlen(ents) + 512;
    struct session *s = malloc(sizeof *s + cap);
    if (!s) {
        free(jwt);
        return -ENOMEM;
    }
    snprintf(s->user, sizeof s->user, "%s", user);
    snprintf(s->groups, sizeof s->groups, "%s", groups);
    snprintf(s->email, sizeof s->email, "%s", mail);
    memcpy(s->sid, sid, sizeof sid);
    s->created = now;
    s->end = now + ttl;
    s->extra_len = extra_len;
    memcpy(s->extra, extra, extra_len);
    int n = snprintf(s->hdr, cap,
                     "X-authentik-username: %s\r\n"
                     "X-authentik-groups: %s\r\n"
                     "X-authentik-entitlements: %s\r\n"
                     "X-authentik-email: %s\r\n"
                     "X-authentik-name: Test %s\r\n"
                     "X-authentik-uid: %s\r\n"
                     "X-authentik-jwt: %s\r\n",
                     user, groups, ents, mail, user, uid, jwt);
    free(jwt);
    s->hdr_len = (size_t)n; /* cap leaves room for every fixed part: never truncated */
    int rc = session_publish(cookie, s, false);
    if (rc == 0)
        *end = now + ttl;
    return rc;
}

int session_login(struct str cookie, const char *user, const char *groups)
{
    time_t end;
    return session_create(cookie, user, groups, "", NULL, "", 0, DEFAULT_TTL, &end);
}

static void session_copy(struct sess_info *o, const struct session *s)
{
    memcpy(o->user, s->user, sizeof o->user);
    memcpy(o->groups, s->groups, sizeof o->groups);
    memcpy(o->email, s->email, sizeof o->email);
    memcpy(o->sid, s->sid, sizeof o->sid);
    o->created = s->created;
    o->end = s->end;
    o->extra_len = s->extra_len;
    memcpy(o->extra, s->extra, s->extra_len);
    o->hdr_len = s->hdr_len < MAX_HDR ? s->hdr_len : MAX_HDR;
    memcpy(o->hdr, s->hdr, o->hdr_len);
}

/* The live session of cookie value k, or NULL. Caller holds tab.mu. */
static const struct session *__session_live(struct str k, time_t now)
{
    struct entry *e = __tab_get(k, false);
    return e && e->sess && e->sess->end > now ? e->sess : NULL;
}

bool session_get(struct str cookie, struct sess_info *out)
{
    pthread_mutex_lock(&tab.mu);
    const struct session *s = __session_live(cookie, time(NULL));
    if (s)
        session_copy(out, s);
    pthread_mutex_unlock(&tab.mu);
    return s != NULL;
}

int session_alias(struct str cookie, const struct sess_info *i)
{
    struct session *s = malloc(sizeof *s + i->hdr_len);
    if (!s)
        return -ENOMEM;
    memcpy(s->user, i->user, sizeof s->user);
    memcpy(s->groups, i->groups, sizeof s->groups);
    memcpy(s->email, i->email, sizeof s->email);
    memcpy(s->sid, i->sid, sizeof s->sid);
    s->created = i->created;
    s->end = i->end;
    s->extra_len = i->extra_len;
    memcpy(s->extra, i->extra, i->extra_len);
    s->hdr_len = i->hdr_len;
    memcpy(s->hdr, i->hdr, i->hdr_len);
    return session_publish(cookie, s, true);
}

/* Registers a credential for the session of `cookie` (owned by `user`), replacing the same Basic
 * user's password or the same bearer token. Returns 0, -ENOMEM or -ENOSPC. */
static int cred_add(bool basic, const char *user, const char *secret, struct str cookie)
{
    struct cred *n = calloc(1, sizeof *n);
    if (!n)
        return -ENOMEM;
    n->basic = basic;
    snprintf(n->user, sizeof n->user, "%s", user);
    snprintf(n->secret, sizeof n->secret, "%s", secret);
    memcpy(n->cookie, cookie.p, cookie.n);
    pthread_mutex_lock(&tab.mu);
    for (struct cred **pc = &tab.creds; *pc; pc = &(*pc)->next) {
        struct cred *c = *pc;
        if (c->basic == basic && (basic ? strcmp(c->user, user) : strcmp(c->secret, secret)) == 0) {
            *pc = c->next;
            free(c);
            tab.ncreds--;
            break;
        }
    }
    int rc = 0;
    if (tab.ncreds < MAX_CREDS) {
        n->next = tab.creds;
        tab.creds = n;
        tab.ncreds++;
        n = NULL;
    } else {
        rc = -ENOSPC;
    }
    pthread_mutex_unlock(&tab.mu);
    free(n);
    return rc;
}

/* Revokes every credential of `user`; returns how many. */
static int creds_revoke(const char *user)
{
    int n = 0;
    pthread_mutex_lock(&tab.mu);
    for (struct cred **pc = &tab.creds; *pc;) {
        struct cred *c = *pc;
        if (strcmp(c->user, user) == 0) {
            *pc = c->next;
            free(c);
            tab.ncreds--;
            n++;
        } else {
            pc = &c->next;
        }
    }
    pthread_mutex_unlock(&tab.mu);
    return n;
}

bool cred_session(const char *user, struct str secret, struct sess_info *out)
{
    bool found = false;
    time_t now = time(NULL);
    pthread_mutex_lock(&tab.mu);
    for (const struct cred *c = tab.creds; c; c = c->next) {
        if (c->basic != (user != NULL) || strlen(c->secret) != secret.n ||
            memcmp(c->secret, secret.p, secret.n) != 0 || (user && strcmp(c->user, user) != 0))
            continue;
        const struct session *s = __session_live((struct str){c->cookie, strlen(c->cookie)}, now);
        if (s && strcmp(s->user, c->user) == 0) {
            session_copy(out, s);
            found = true;
        }
        break;
    }
    pthread_mutex_unlock(&tab.mu);
    return found;
}

bool in_group(const char *groups, const char *group)
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
int sessions_end(struct str cookie, const char *user, bool owner)
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

/* Every open forward-auth connection, so "refuse" can cut them all. */
static struct {
    pthread_mutex_t mu;
    int *fds;  /* cfg.max_conns slots, -1 when free */
    int *free; /* stack of free slot numbers */
    int nfree;
} reg = {.mu = PTHREAD_MUTEX_INITIALIZER};

static atomic_int control_conns, oracle_conns;

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

/* Closes a connection's socket and gives its slot (forward-auth) or its place under the limit
 * (control, oracle) back. The slot is freed before close() so that reg_shutdown_all() never touches
 * a reused descriptor. */
static void conn_release(int fd, int slot, enum conn_kind kind)
{
    if (kind == CONN_ORACLE) {
        atomic_fetch_sub(&oracle_conns, 1);
    } else if (slot >= 0) {
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

void out_put(struct conn *c, const char *s, size_t n)
{
    if (n > OUT_CAP - c->out_len) /* cannot happen: callers flush below OUT_RESERVE */
        n = OUT_CAP - c->out_len;
    memcpy(c->out + c->out_len, s, n);
    c->out_len += n;
}

__attribute__((format(printf, 2, 3))) void out_printf(struct conn *c, const char *fmt, ...)
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
    case 202:
        return "Accepted";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 407:
        return "Proxy Authentication Required";
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

void resp_start(struct conn *c, int status)
{
    c->status = status;
    out_printf(c, "HTTP/1.1 %d %s\r\n", status, reason(status));
}

/* Ends the head begun by resp_start() (plus any header lines the caller added) and adds the body.
 */
void resp_finish(struct conn *c, const char *ctype, const char *body, size_t n)
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

void resp_text(struct conn *c, int status, const char *body)
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

/* Finds the cookie named cfg.cookie_name; in oauth2-proxy mode also its split parts <name>_0 and
 * <name>_1, which req_parse() joins when the whole cookie is absent. */
static void parse_cookie(struct req *r, struct str v)
{
    size_t nlen = strlen(cfg.cookie_name);
    const char *p = v.p, *end = v.p + v.n;
    while (p < end && !r->has_cookie) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *pe = semi ? semi : end;
        struct str pair = str_trim((struct str){p, (size_t)(pe - p)});
        const char *eq = memchr(pair.p, '=', pair.n);
        p = pe + 1;
        if (!eq || (size_t)(eq - pair.p) < nlen || memcmp(pair.p, cfg.cookie_name, nlen) != 0)
            continue;
        struct str val = {eq + 1, (size_t)(pair.p + pair.n - (eq + 1))};
        size_t klen = (size_t)(eq - pair.p);
        if (klen == nlen) {
            r->has_cookie = true;
            r->cookie = val;
        } else if (cfg.mode == MODE_OAUTH2_PROXY && klen == nlen + 2 && pair.p[nlen] == '_' &&
                   (pair.p[nlen + 1] == '0' || pair.p[nlen + 1] == '1') &&
                   !r->split[pair.p[nlen + 1] - '0'].p) {
            r->split[pair.p[nlen + 1] - '0'] = val;
        }
    }
}

/* The request headers the modes read: name → field of struct req. A repeated header: the last
 * one counts, but for X-Forwarded-For the first (Authelia reads its first entry). */
static const struct {
    const char *name;
    size_t off;
} req_headers[] = {
    {"X-Forwarded-Host", offsetof(struct req, fwd_host)},
    {"X-Forwarded-Uri", offsetof(struct req, fwd_uri)},
    {"X-Forwarded-Proto", offsetof(struct req, fwd_proto)},
    {"X-Forwarded-Method", offsetof(struct req, fwd_method)},
    {"X-Forwarded-For", offsetof(struct req, fwd_for)},
    {"X-Real-IP", offsetof(struct req, real_ip)},
    {"X-Original-URL", offsetof(struct req, orig_url)},
    {"X-Original-URI", offsetof(struct req, orig_uri)},
    {"X-Original-Method", offsetof(struct req, orig_method)},
    {"Authorization", offsetof(struct req, authorization)},
    {"Proxy-Authorization", offsetof(struct req, proxy_authorization)},
    {"Accept", offsetof(struct req, accept)},
    {"X-Requested-With", offsetof(struct req, requested_with)},
};

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
        } else {
            for (size_t i = 0; i < sizeof req_headers / sizeof *req_headers; i++) {
                struct str *f = (struct str *)((char *)r + req_headers[i].off);
                if (str_caseeq(name, req_headers[i].name)) {
                    if (!f->p || f != &r->fwd_for) /* the last wins, as it always did here */
                        *f = v;
                    break;
                }
            }
        }
    }
    if (!r->has_cookie && r->split[0].p && r->split[0].n + r->split[1].n < sizeof r->cookie_buf) {
        memcpy(r->cookie_buf, r->split[0].p, r->split[0].n);
        if (r->split[1].p)
            memcpy(r->cookie_buf + r->split[0].n, r->split[1].p, r->split[1].n);
        r->has_cookie = true;
        r->cookie = (struct str){r->cookie_buf, r->split[0].n + r->split[1].n};
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

/* The mode's answer to a request on the forward-auth or oracle listener. */
static void mode_answer(struct conn *c, const struct req *r, int kind)
{
    switch (cfg.mode) {
    case MODE_AUTHENTIK:
        authentik_answer(c, r, kind);
        break;
    case MODE_OAUTH2_PROXY:
        oauth2_proxy_answer(c, r, kind);
        break;
    case MODE_AUTHELIA:
        authelia_answer(c, r, kind);
        break;
    }
}

/*
 * Routes a request on the forward-auth or oracle listener and, on the forward-auth one, counts it
 * and applies the fault mode. Returns 0 when an answer was queued, -1 when the connection must be
 * dropped now (everything queued before was flushed).
 */
static int auth_handle(struct conn *c, const struct req *r)
{
    bool count = false;
    int kind = cfg.mode == MODE_AUTHENTIK      ? authentik_route(r, &count)
               : cfg.mode == MODE_OAUTH2_PROXY ? oauth2_proxy_route(r, &count)
                                               : authelia_route(r, &count);
    if (kind == 0) {
        resp_text(c, 404, "not found");
        return 0;
    }
    if (c->kind == CONN_ORACLE) {
        mode_answer(c, r, kind);
        return 0;
    }
    if (count)
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
        mode_answer(c, r, kind);
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
        mode_answer(c, r, kind);
        return 0;
    }
}

/* ---- control ---- */

/* /session?cookie=V&user=U[&groups=a|b][&entitlements=a|b][&email=E][&ttl=S][&basic=PASSWORD]
 * [&bearer=TOKEN][&extra=Name:value]... */
static void control_session(struct conn *c, struct str q, struct str ck, bool cookie_bad)
{
    char user[MAX_USER + 1], groups[MAX_GROUPS + 1], ents[MAX_GROUPS + 1], email[MAX_EMAIL + 1];
    char basic[MAX_SECRET + 1], bearer[MAX_SECRET + 1], num[24], one[MAX_EXTRA], extra[MAX_EXTRA];
    size_t extra_len = 0;
    long ttl = DEFAULT_TTL;
    time_t end;
    int ul = query_get(q, "user", user, sizeof user);
    int gl = query_get(q, "groups", groups, sizeof groups);
    int el = query_get(q, "entitlements", ents, sizeof ents);
    int ml = query_get(q, "email", email, sizeof email);
    int bl = query_get(q, "basic", basic, sizeof basic);
    int tl = query_get(q, "bearer", bearer, sizeof bearer);
    int nl = query_get(q, "ttl", num, sizeof num);
    bool extra_bad = false;
    for (int i = 0, xl; !extra_bad && (xl = query_get_nth(q, "extra", i, one, sizeof one)) != -1;
         i++) {
        /* Name:value, a header name of token characters, a printable value. */
        char *colon = xl > 0 ? strchr(one, ':') : NULL;
        size_t name_len = colon ? (size_t)(colon - one) : 0;
        extra_bad = xl < 0 || name_len == 0 || !text_ok(one) ||
                    strcspn(one, " \t()<>@,;\\\"/[]?={}") < name_len;
        if (extra_bad)
            break;
        struct str v = str_trim((struct str){colon + 1, strlen(colon + 1)});
        int n = snprintf(extra + extra_len, sizeof extra - extra_len, "%.*s: %.*s\r\n",
                         (int)name_len, one, (int)v.n, v.p);
        extra_bad = n < 0 || (size_t)n >= sizeof extra - extra_len;
        if (!extra_bad)
            extra_len += (size_t)n;
    }
    if (gl == -1)
        groups[0] = '\0';
    if (el == -1)
        ents[0] = '\0';
    if (ml == -1)
        email[0] = '\0';
    if (nl >= 0) {
        char *e;
        ttl = strtol(num, &e, 10);
        if (nl == 0 || *e || ttl < 1 || ttl > MAX_TTL)
            nl = -2;
    }
    if (ck.n == 0 || cookie_bad || ul <= 0 || !text_ok(user) || strchr(user, ':') || gl == -2 ||
        !text_ok(groups) || el == -2 || !text_ok(ents) || ml == -2 || !text_ok(email) || nl == -2 ||
        bl == -2 || bl == 0 || tl == -2 || tl == 0 || (bl > 0 && !text_ok(basic)) ||
        (tl > 0 && !cookie_ok((struct str){bearer, (size_t)tl})) || extra_bad) {
        resp_json(c, 400,
                  "{\"error\":\"need cookie=V&user=NAME[&groups=a|b][&entitlements=a|b][&email=E]"
                  "[&ttl=1..%ld][&basic=PASSWORD][&bearer=TOKEN][&extra=Name:value]..., "
                  "printable\"}",
                  MAX_TTL);
        return;
    }
    int rc = session_create(ck, user, groups, ents, email, extra, extra_len, ttl, &end);
    if (rc == 0 && bl > 0)
        rc = cred_add(true, user, basic, ck);
    if (rc == 0 && tl > 0)
        rc = cred_add(false, user, bearer, ck);
    if (rc < 0)
        resp_json(c, 500, "{\"error\":\"%s\"}", strerror(-rc));
    else
        resp_json(c, 200, "{\"ok\":true,\"exp\":%ld}", (long)end);
}

static void control_handle(struct conn *c, const struct req *r)
{
    char cookie[MAX_COOKIE + 1], user[MAX_USER + 1];
    char num[24];
    struct str q = r->query;
    int clen = query_get(q, "cookie", cookie, sizeof cookie);
    struct str ck = {cookie, clen > 0 ? (size_t)clen : 0};
    bool cookie_bad = clen == -2 || (clen >= 0 && !cookie_ok(ck));

    if (str_eq(r->path, "/healthz")) {
        resp_json(c, 200, "{\"ok\":true}");
    } else if (str_eq(r->path, "/session")) {
        control_session(c, q, ck, cookie_bad);
    } else if (str_eq(r->path, "/end")) {
        int ul = query_get(q, "user", user, sizeof user);
        if (cookie_bad || ul == -2 || (clen <= 0 && ul <= 0)) {
            resp_json(c, 400, "{\"error\":\"need cookie=V or user=NAME\"}");
            return;
        }
        /* The credentials go with the user: the one named, or the owner of the cookie's session. */
        struct sess_info *s = malloc(sizeof *s);
        char owner[MAX_USER + 1] = "";
        if (s && clen > 0 && session_get(ck, s))
            snprintf(owner, sizeof owner, "%s", s->user);
        free(s);
        int n = sessions_end(ck, ul > 0 ? user : NULL, false);
        int revoked = (ul > 0 ? creds_revoke(user) : 0) + (owner[0] ? creds_revoke(owner) : 0);
        resp_json(c, 200, "{\"ended\":%d,\"revoked\":%d}", n, revoked);
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
    } else if (c->kind == CONN_CONTROL) {
        control_handle(c, r);
    } else {
        rc = auth_handle(c, r);
    }
    if (!cfg.quiet)
        fprintf(stderr, "test-idp: %s %.*s %.*s -> %d\n",
                c->kind == CONN_CONTROL  ? "control"
                : c->kind == CONN_ORACLE ? "oracle"
                                         : "auth",
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
    conn_release(c->fd, c->slot, c->kind);
    free(c);
    return NULL;
}

static pthread_attr_t conn_attr;
/* Hands an accepted socket (peer address a) to a new thread; closes it when over the limit of its
 * listener. */
static void conn_spawn(int fd, enum conn_kind kind, const struct sockaddr_storage *a)
{
    int one = 1;
    struct conn *c = NULL;
    int slot = -1;
    if (kind == CONN_CONTROL || kind == CONN_ORACLE) {
        atomic_int *n = kind == CONN_CONTROL ? &control_conns : &oracle_conns;
        int max = kind == CONN_CONTROL ? MAX_CONTROL_CONNS : cfg.max_conns;
        if (atomic_fetch_add(n, 1) >= max) {
            atomic_fetch_sub(n, 1);
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
        c->kind = kind;
        c->close_after = false;
        c->in_len = c->in_off = c->discard = c->out_len = 0;
        c->peer[0] = '\0';
        if (a->ss_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)a)->sin_addr, c->peer, sizeof c->peer);
        else if (a->ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)a)->sin6_addr, c->peer,
                      sizeof c->peer);
        pthread_t t;
        if (pthread_create(&t, &conn_attr, conn_main, c) == 0)
            return;
    }
    conn_release(fd, slot, kind);
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

        struct sockaddr_storage a;
        socklen_t alen = sizeof a;
        int fd = accept4(lfd, (struct sockaddr *)&a, &alen, SOCK_CLOEXEC);
        if (fd >= 0) {
            conn_spawn(fd, CONN_AUTH, &a);
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

struct listener {
    int fd;
    enum conn_kind kind;
};

/* The accept loop of the control and oracle listeners (never faulted). */
static void *plain_accept_main(void *arg)
{
    const struct listener *l = arg;
    for (;;) {
        struct sockaddr_storage a;
        socklen_t alen = sizeof a;
        int fd = accept4(l->fd, (struct sockaddr *)&a, &alen, SOCK_CLOEXEC);
        if (fd >= 0)
            conn_spawn(fd, l->kind, &a);
        else if (errno != EINTR && errno != ECONNABORTED)
            sleep_ms(10);
    }
    return NULL;
}

/* ---- command line ---- */

__attribute__((format(printf, 1, 2), noreturn)) void die_usage(const char *fmt, ...)
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

/* true/on/1 or false/off/0; -1 for anything else. */
static int bool_word(const char *v)
{
    if (!strcmp(v, "true") || !strcmp(v, "on") || !strcmp(v, "1"))
        return 1;
    if (!strcmp(v, "false") || !strcmp(v, "off") || !strcmp(v, "0"))
        return 0;
    return -1;
}

/* A switch: --flag, --flag=BOOL or --flag BOOL (BOOL: true|false|on|off|1|0). */
static bool flag_bool(int argc, char **argv, int *i, const char *flag, bool *out)
{
    size_t n = strlen(flag);
    if (strcmp(argv[*i], flag) == 0) {
        int b = *i + 1 < argc ? bool_word(argv[*i + 1]) : -1;
        *out = b != 0;
        if (b >= 0)
            ++*i;
        return true;
    }
    if (strncmp(argv[*i], flag, n) != 0 || argv[*i][n] != '=')
        return false;
    int b = bool_word(argv[*i] + n + 1);
    if (b < 0)
        die_usage("%s: want true|false|on|off|1|0", argv[*i]);
    *out = b;
    return true;
}

static const char usage[] =
    "usage: test-idp --listen HOST:PORT --control HOST:PORT [--oracle HOST:PORT] [--threads N]\n"
    "       [--mode authentik|oauth2-proxy|authelia] [--jwt-secret S] [--cookie-name NAME] "
    "[--quiet]\n"
    "  authentik:    [--app HOST[;allow=GROUP][;skip=PREFIX,...][;domain=COOKIE_DOMAIN]]...\n"
    "  oauth2-proxy: [--set-xauthrequest[=true|false]] [--cookie-refresh SECONDS]\n"
    "                [--skip-jwt-bearer-tokens] [--deny-invalid-jwts]\n"
    "                [--skip-auth-route [METHOD=]REGEX]... [--trusted-ip CIDR]...\n"
    "  authelia:     [--rule 'host=H;path=REGEX;methods=GET,HEAD;networks=CIDR[,CIDR];"
    "subject=group:G|user:U;policy=bypass|one_factor|deny']...\n"
    "                [--default-policy deny|one_factor] [--cookie-domain D]... [--portal URL]\n";

static void parse_args(int argc, char **argv)
{
    bool apps_given = false;
    const char *apps[MAX_APPS];
    int napps = 0;
    for (int i = 1; i < argc; i++) {
        const char *v;
        bool b;
        if ((v = flag_value(argc, argv, &i, "--listen"))) {
            parse_addr("--listen", v, &cfg.listen_addr);
            cfg.listen_arg = v;
        } else if ((v = flag_value(argc, argv, &i, "--control"))) {
            parse_addr("--control", v, &cfg.control_addr);
            cfg.control_arg = v;
        } else if ((v = flag_value(argc, argv, &i, "--oracle"))) {
            parse_addr("--oracle", v, &cfg.oracle_addr);
            cfg.oracle_arg = v;
        } else if ((v = flag_value(argc, argv, &i, "--mode"))) {
            if (strcmp(v, "authentik") == 0)
                cfg.mode = MODE_AUTHENTIK;
            else if (strcmp(v, "oauth2-proxy") == 0)
                cfg.mode = MODE_OAUTH2_PROXY;
            else if (strcmp(v, "authelia") == 0)
                cfg.mode = MODE_AUTHELIA;
            else
                die_usage("--mode %s: want authentik, oauth2-proxy or authelia", v);
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
            if (napps == MAX_APPS)
                die_usage("--app: at most %d applications", MAX_APPS);
            apps_given = true;
            apps[napps++] = v;
        } else if (flag_bool(argc, argv, &i, "--set-xauthrequest", &b)) {
            cfg.set_xauthrequest = b;
        } else if (flag_bool(argc, argv, &i, "--skip-jwt-bearer-tokens", &b)) {
            cfg.skip_jwt_bearer_tokens = b;
        } else if (flag_bool(argc, argv, &i, "--deny-invalid-jwts", &b)) {
            cfg.deny_invalid_jwts = b;
        } else if ((v = flag_value(argc, argv, &i, "--cookie-refresh"))) {
            char *end;
            long n = strtol(v, &end, 10);
            if (*end || end == v || n < 0 || n > MAX_TTL)
                die_usage("--cookie-refresh %s: want 0..%ld seconds", v, MAX_TTL);
            cfg.cookie_refresh = n;
        } else if ((v = flag_value(argc, argv, &i, "--skip-auth-route"))) {
            oauth2_proxy_parse_route(v);
        } else if ((v = flag_value(argc, argv, &i, "--trusted-ip"))) {
            if (cfg.ntrusted == MAX_CIDRS || !cidr_parse(v, &cfg.trusted[cfg.ntrusted]))
                die_usage("--trusted-ip %s: want an address or CIDR, at most %d", v, MAX_CIDRS);
            cfg.ntrusted++;
        } else if ((v = flag_value(argc, argv, &i, "--rule"))) {
            authelia_parse_rule(v);
        } else if ((v = flag_value(argc, argv, &i, "--default-policy"))) {
            if (strcmp(v, "deny") == 0)
                cfg.default_policy = POLICY_DENY;
            else if (strcmp(v, "one_factor") == 0)
                cfg.default_policy = POLICY_ONE_FACTOR;
            else
                die_usage("--default-policy %s: want deny or one_factor", v);
        } else if ((v = flag_value(argc, argv, &i, "--cookie-domain"))) {
            char d[MAX_HOST + 1];
            if (cfg.ncookie_domains == MAX_COOKIE_DOMAINS || *v == '.' ||
                !host_normalize((struct str){v, strlen(v)}, d) || strchr(v, ':'))
                die_usage("--cookie-domain %s: want a domain, at most %d", v, MAX_COOKIE_DOMAINS);
            strcpy(cfg.cookie_domains[cfg.ncookie_domains++], d);
        } else if ((v = flag_value(argc, argv, &i, "--portal"))) {
            if (strncmp(v, "https://", 8) != 0 || !text_ok(v) || strchr(v, ' ') || strlen(v) > 200)
                die_usage("--portal %s: want an https:// URL", v);
            cfg.portal = v;
        } else if (strcmp(argv[i], "--quiet") == 0) {
            cfg.quiet = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            exit(0);
        } else {
            die_usage("unknown argument '%s'", argv[i]);
        }
    }
    if (!cfg.listen_arg || !cfg.control_arg)
        die_usage("--listen HOST:PORT and --control HOST:PORT are required");
    if (!cfg.cookie_name)
        cfg.cookie_name = cfg.mode == MODE_OAUTH2_PROXY ? "_oauth2_proxy"
                          : cfg.mode == MODE_AUTHELIA   ? "authelia_session"
                                                        : "authentik_proxy_3f2a1b0c";
    if (cfg.mode == MODE_AUTHELIA && cfg.ncookie_domains == 0)
        strcpy(cfg.cookie_domains[cfg.ncookie_domains++], "test");
    for (int i = 0; i < napps; i++)
        authentik_parse_app(apps[i]);
    if (!apps_given) {
        authentik_parse_app("app1.test");
        authentik_parse_app("app2.test;allow=admins");
        authentik_parse_app("open.test;skip=/public/");
    }
    /* Authelia: the applications become access-control rules after the --rule ones, so one
     * --app list describes the same site to every mode. oauth2-proxy has no per-host policy. */
    if (cfg.mode == MODE_AUTHELIA)
        for (int i = 0; i < cfg.napps; i++)
            authelia_rules_from_app(&cfg.apps[i]);
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

    static struct listener control = {.kind = CONN_CONTROL}, oracle = {.kind = CONN_ORACLE};
    fault.listen_fd = listen_open(&cfg.listen_addr);
    if (fault.listen_fd < 0)
        die_usage("--listen %s: %s", cfg.listen_arg, strerror(-fault.listen_fd));
    control.fd = listen_open(&cfg.control_addr);
    if (control.fd < 0)
        die_usage("--control %s: %s", cfg.control_arg, strerror(-control.fd));
    if (cfg.oracle_arg) {
        oracle.fd = listen_open(&cfg.oracle_addr);
        if (oracle.fd < 0)
            die_usage("--oracle %s: %s", cfg.oracle_arg, strerror(-oracle.fd));
    }

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
        pthread_create(&t, &conn_attr, plain_accept_main, &control) != 0 ||
        (cfg.oracle_arg && pthread_create(&t, &conn_attr, plain_accept_main, &oracle) != 0)) {
        fprintf(stderr, "test-idp: cannot start threads\n");
        return 1;
    }

    printf("ready\n");
    fflush(stdout);
    if (!cfg.quiet)
        fprintf(stderr,
                "test-idp: forward-auth on %s, control on %s, oracle on %s, %s mode, cookie %s\n",
                cfg.listen_arg, cfg.control_arg, cfg.oracle_arg ? cfg.oracle_arg : "-",
                cfg.mode == MODE_AUTHENTIK      ? "authentik"
                : cfg.mode == MODE_OAUTH2_PROXY ? "oauth2-proxy"
                                                : "authelia",
                cfg.cookie_name);

    int sig = 0;
    while (sigwait(&sigs, &sig) != 0)
        ;
    if (!cfg.quiet)
        fprintf(stderr, "test-idp: signal %d, exiting\n", sig);
    exit(0);
}
