/*
 * differential.c — the differential test of authcached's first rule: it never answers 2xx where
 * the IdP alone would refuse.
 *
 * The driver starts the test IdP (tests/idp, or --idp-bin) and authcached in front of it, then
 * sends a seeded, reproducible stream of forward-auth checks. Each check goes, byte for byte the
 * same, first to "the IdP alone" (the oracle) and then to authcached, and the two answers are
 * compared:
 *   - authcached answers 2xx only where the oracle does. The one exception is a revocation at the
 *     IdP the cache was not told of (control /end, or an IdP-side sign-out authcached does not
 *     recognise): 2xx for that session stays allowed while the request was sent less than
 *     --fresh-ttl after the revocation (the answer was last confirmed before it), and, during an
 *     injected IdP fault (from /fault until authcached's circuit breaker has closed again), less
 *     than --outage-grace after it. An admin purge or a sign-out authcached sees ends the
 *     exception at once for what it covers (a sign-out or ?session=: the answers held under that
 *     cookie alone; ?user= and ?all=: every answer of the user's sessions). The credentials the
 *     IdP reads are modelled per preset: the cookie of its exact name, and with a test IdP that
 *     has --mode the Bearer token and Basic password each session gets (one password per user).
 *   - on 2xx, authcached's identity headers (all but those describing the response: the list of
 *     policy.c's describes_response and the hop-by-hop ones) are exactly the oracle's, in order.
 *   - outside fault windows every non-2xx has the oracle's status and the same Location,
 *     Set-Cookie, WWW-Authenticate and Proxy-Authenticate headers.
 * Asking the oracle first matters for checks that change the IdP's state (a sign-out ends the
 * user's sessions): authcached then meets the state the oracle left, as a later check would.
 *
 * The oracle is the IdP's --oracle listener when the binary has one (the same sessions, never
 * faulted, not counted). An older test IdP without it: the oracle is the IdP's own listener, not
 * asked during fault windows (a 2xx then must be a session the driver knows to be alive, or
 * revoked within the exception, with the identity the oracle gave it before), and the random
 * parts of its refusals (32-character state and fresh cookie) are masked before comparing.
 *
 * A share of the checks (--proxy NAME=CACHE_PORT,ORACLE_PORT, --proxy-share PCT) goes through
 * real proxies instead: two identical server blocks, one asking authcached and one the oracle,
 * in front of the application this program serves (--app-port), which echoes the identity
 * headers it received in its body; the two answers must agree the same way.
 *
 * Every --epoch checks the processes restart and the driver forgets its sessions, so that a
 * long run never fills the test IdP's tables. A seed draws the same checks and events at any
 * speed (fault windows are counted in checks; the one pause past --fresh-ttl is a sleep), though
 * which answers are held, fresh or stale depends on timing.
 *
 * A divergence prints the seed, the request number, the checks and events before it, the request
 * and both answers, and exits 1. Exit 0 at the end with the summary line; 2 for bad arguments or
 * a start that failed; 77 when the IdP binary does not support the preset.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_HDRS 96
#define RBUF_CAP (256 * 1024)
#define REQ_CAP (16 * 1024)
#define MAX_SESSIONS 65536
#define NUSERS 16
#define NHOSTS 3
#define COOKIE_LEN 24
#define SLACK_MS 5
#define MAX_PROXIES 4
#define RECENT 32 /* checks kept to be sent again */

/* ---- options ---- */

static struct {
    uint64_t seed;
    long requests;
    const char *preset;
    const char *idp_bin;
    const char *authcached_bin;
    const char *log_dir;
    int port_base; /* 0: free ports */
    long fresh_ms, grace_ms;
    long fault_every; /* requests between fault windows; 0: none */
    long epoch;       /* requests between restarts of the IdP and authcached */
    int proxy_share;  /* percent of checks sent through a proxy */
    int app_port;
    int nproxies;
    struct {
        char name[32];
        int cache_port, oracle_port;
    } proxies[MAX_PROXIES];
    bool verbose;
} opt = {
    .requests = 20000,
    .preset = "authentik",
    .idp_bin = "build/test-idp",
    .authcached_bin = "build/authcached",
    .log_dir = "build/test-logs/differential",
    .fresh_ms = 1000,
    .grace_ms = 3000,
    .fault_every = 5000,
    .epoch = 500000,
    .proxy_share = 0,
};

/* ---- random numbers: splitmix64, so a seed replays the same run ---- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static unsigned below(unsigned n)
{
    return (unsigned)(rnd() % n);
}

static bool chance(unsigned per_mille)
{
    return below(1000) < per_mille;
}

static const char *pick(const char *const *v, size_t n)
{
    return v[below((unsigned)n)];
}
#define PICK(a) pick(a, sizeof(a) / sizeof(*(a)))

static void rnd_string(char *out, size_t n)
{
    static const char alnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    for (size_t i = 0; i < n; i++)
        out[i] = alnum[below(sizeof alnum - 1)];
    out[n] = '\0';
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* The driver's events (an end at the IdP, a purge authcached saw) and the checks' send times are
 * in microseconds: two events of one millisecond keep their order. */
static long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000L + ts.tv_nsec / 1000L;
}

__attribute__((format(printf, 1, 2), noreturn)) static void die(const char *fmt, ...)
{
    va_list ap;
    fputs("differential: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

/* ---- presets: what the driver sends for each IdP ---- */

struct preset {
    const char *name;
    const char *cookie;       /* the IdP's session cookie */
    const char *wrong_cookie; /* matches authcached's pattern, not the IdP's name */
    const char *endpoints[6];
    int nendpoints;
    const char *signout;     /* authcached's --signout-path (NULL: none) */
    const char *idp_signout; /* a forwarded path the IdP ends sessions on (prefix), or NULL */
    const char *user_header;
    const char *ident_prefix; /* identity headers the proxied application echoes */
    const char *bogus;        /* an endpoint the IdP does not serve */
    const char *cred_header;  /* where the IdP reads a Basic/Bearer credential */
    bool header_first;        /* the IdP reads that header before the cookie */
};

static const struct preset presets[] = {
    {"authentik",
     "authentik_proxy_3f2a1b0c",
     "authentik_proxy_zzzz",
     {"/outpost.goauthentik.io/auth/traefik", "/outpost.goauthentik.io/auth/nginx",
      "/outpost.goauthentik.io/auth/caddy", "/outpost.goauthentik.io/auth/envoy"},
     4,
     "/outpost.goauthentik.io/sign_out",
     "/outpost.goauthentik.io/sign_out",
     "X-authentik-username",
     "x-authentik-",
     "/outpost.goauthentik.io/auth/bogus",
     "Authorization",
     false},
    {"oauth2-proxy",
     "_oauth2_proxy",
     "_oauth2_proxyzzzz",
     {"/oauth2/auth", "/oauth2/auth", "/oauth2/auth?allowed_groups=admins",
      "/oauth2/auth?allowed_emails=u01@example.test,u02@example.test"},
     4,
     "/oauth2/sign_out",
     NULL, /* its sign-out is a request of its own, not a forward-auth check */
     "X-Auth-Request-User",
     "x-auth-request-",
     "/oauth2/bogus",
     "Authorization",
     true},
    {"authelia",
     "authelia_session",
     "authelia_sessionzzzz",
     {"/api/authz/forward-auth", "/api/authz/auth-request", "/api/verify"},
     3,
     NULL,
     NULL,
     "Remote-User",
     "remote-",
     "/api/authz/bogus",
     "Proxy-Authorization",
     true},
};

static const struct preset *P;

static const char *const hosts[NHOSTS] = {"app1.test", "app2.test", "app3.test"};
static const char *const user_groups[4] = {"", "admins", "staff", "admins|staff"};

/* ---- processes ---- */

static pid_t children[8];
static int nchildren;
static char shm_path[128]; /* authcached's segment, removed at the end */

static void stop_children(void)
{
    for (int i = 0; i < nchildren; i++)
        if (children[i] > 0)
            kill(children[i], SIGTERM);
    for (int i = 0; i < nchildren; i++)
        if (children[i] > 0)
            waitpid(children[i], NULL, 0);
    nchildren = 0;
    if (shm_path[0])
        unlink(shm_path);
}

static void on_signal(int sig)
{
    for (int i = 0; i < nchildren; i++)
        if (children[i] > 0)
            kill(children[i], SIGTERM);
    signal(sig, SIG_DFL);
    raise(sig);
}

static pid_t spawn(char *const argv[], const char *log_name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", opt.log_dir, log_name);
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    children[nchildren++] = pid;
    return pid;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        die("cannot find a free port: %s", strerror(errno));
    close(fd);
    return ntohs(a.sin_port);
}

/* Does `bin --help` (or its usage error) mention `word`? */
static bool binary_mentions(const char *bin, const char *word)
{
    char cmd[1024], line[1024];
    bool found = false;
    snprintf(cmd, sizeof cmd, "'%s' --help 2>&1", bin);
    FILE *f = popen(cmd, "r");
    if (!f)
        return false;
    while (fgets(line, sizeof line, f))
        found |= strstr(line, word) != NULL;
    pclose(f);
    return found;
}

/* ---- HTTP client: one keep-alive connection per peer ---- */

struct conn {
    int port;
    int fd;
};

struct resp {
    int status;
    int nh;
    struct {
        const char *n, *v;
        size_t nl, vl;
    } h[MAX_HDRS];
    const char *body;
    size_t body_len;
    char buf[RBUF_CAP];
    size_t len;
};

static int conn_open(struct conn *c)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)c->port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -errno;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0) {
        int e = -errno;
        close(c->fd);
        c->fd = -1;
        return e;
    }
    return 0;
}

static void conn_close(struct conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static bool name_is(const char *n, size_t nl, const char *want)
{
    return nl == strlen(want) && strncasecmp(n, want, nl) == 0;
}

static const char *resp_get(const struct resp *r, const char *name, size_t *vl)
{
    for (int i = 0; i < r->nh; i++)
        if (name_is(r->h[i].n, r->h[i].nl, name)) {
            *vl = r->h[i].vl;
            return r->h[i].v;
        }
    return NULL;
}

/* Parses the head in r->buf[0..head_len). Returns 0 or -1. */
static int resp_parse_head(struct resp *r, size_t head_len)
{
    char *p = r->buf, *end = r->buf + head_len - 2;
    char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
    if (!eol || eol - p < 12 || memcmp(p, "HTTP/1.", 7) != 0)
        return -1;
    r->status = atoi(p + 9);
    r->nh = 0;
    for (p = eol + 2; p < end; p = eol + 2) {
        eol = memmem(p, (size_t)(end + 2 - p), "\r\n", 2);
        char *colon = memchr(p, ':', (size_t)(eol - p));
        if (!colon || r->nh == MAX_HDRS)
            return -1;
        char *v = colon + 1, *ve = eol;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        r->h[r->nh].n = p;
        r->h[r->nh].nl = (size_t)(colon - p);
        r->h[r->nh].v = v;
        r->h[r->nh].vl = (size_t)(ve - v);
        r->nh++;
    }
    return 0;
}

/*
 * Sends req and reads one answer into r (a HEAD answer has no body). Reconnects once when a kept
 * connection turns out closed before any answer byte. Returns 0, or -errno / -EPROTO (no answer:
 * r->status is 0).
 */
static int http_do(struct conn *c, const char *req, size_t len, bool head, struct resp *r)
{
    r->status = 0;
    r->len = 0;
    r->nh = 0;
    r->body_len = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (c->fd < 0) {
            int e = conn_open(c);
            if (e < 0)
                return e;
        }
        bool fresh = attempt > 0;
        size_t off = 0;
        while (off < len) {
            ssize_t w = send(c->fd, req + off, len - off, MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                break;
            off += (size_t)w;
        }
        r->len = 0;
        size_t head_len = 0;
        while (!head_len) {
            if (r->len == sizeof r->buf)
                return -EPROTO;
            ssize_t n = recv(c->fd, r->buf + r->len, sizeof r->buf - r->len, 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                int e = n < 0 ? -errno : -ECONNRESET;
                conn_close(c);
                if (r->len == 0 && !fresh && off == len)
                    goto retry;
                return e;
            }
            r->len += (size_t)n;
            char *e = memmem(r->buf, r->len, "\r\n\r\n", 4);
            if (e)
                head_len = (size_t)(e + 4 - r->buf);
        }
        if (resp_parse_head(r, head_len) < 0) {
            conn_close(c);
            return -EPROTO;
        }
        size_t vl;
        const char *cl = resp_get(r, "Content-Length", &vl);
        const char *cn = resp_get(r, "Connection", &vl);
        bool close_after = cn && vl == 5 && strncasecmp(cn, "close", 5) == 0;
        bool no_body = head || r->status == 204 || r->status == 304 || r->status < 200;
        size_t want = no_body ? 0 : cl ? (size_t)strtoul(cl, NULL, 10) : SIZE_MAX;
        if (want == SIZE_MAX)
            close_after = true;
        while (want != SIZE_MAX ? r->len - head_len < want : true) {
            if (r->len == sizeof r->buf)
                return -EPROTO;
            ssize_t n = recv(c->fd, r->buf + r->len, sizeof r->buf - r->len, 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                if (want == SIZE_MAX)
                    break;
                conn_close(c);
                return -EPROTO;
            }
            r->len += (size_t)n;
        }
        r->body = r->buf + head_len;
        r->body_len = r->len - head_len;
        if (close_after)
            conn_close(c);
        return 0;
    retry:;
    }
    return -ECONNRESET;
}

/* A one-off request (control API, admin): status, body in r. */
static int simple_request(int port, const char *method, const char *target, struct resp *r)
{
    static struct conn c = {.fd = -1};
    char req[2048];
    int n =
        snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
                 method, target);
    if (c.port != port) {
        conn_close(&c);
        c.port = port;
    }
    int rc = http_do(&c, req, (size_t)n, false, r);
    return rc < 0 ? rc : r->status;
}

static void wait_ready(int port, const char *target, const char *what)
{
    static struct resp r;
    for (int i = 0; i < 200; i++) {
        if (simple_request(port, "GET", target, &r) == 200)
            return;
        usleep(50 * 1000);
    }
    die("%s is not ready on port %d (logs in %s)", what, port, opt.log_dir);
}

/* ---- the world the driver knows ---- */

struct session {
    char cookie[COOKIE_LEN + 1];
    int user;
    bool alive;
    long revoked_us;            /* when the IdP ended it (0: never) */
    long told_us;               /* last purge authcached saw covering it */
    long told_multi_us;         /* ... and its answers held under several cookies too */
    long revoked_req, told_req; /* the request numbers then */
    /* its Bearer token and Basic password (a test IdP with --mode): valid while the session is
     * and until the IdP revokes its user's credentials */
    char bearer[COOKIE_LEN + 1], pw[COOKIE_LEN + 1];
    bool hdr_alive[2]; /* [0] the Bearer token, [1] the Basic password */
    long hdr_revoked_us[2], hdr_told_us;
    /* identity headers of the oracle's last 2xx for it, per host (the last: unknown.test) */
    char *ident[NHOSTS + 1];
    char *echo[NHOSTS + 1]; /* the same as the application echoed it through a proxy */
};

static struct session sessions[MAX_SESSIONS];
static bool idp_modes; /* the test IdP has --mode: header credentials, the other presets */
static long nreq;      /* checks sent so far: the number of the current one */
static int nsessions;

static struct {
    int idp, control, oracle, ac, admin;
    bool oracle_port; /* the IdP has --oracle */
} ports;

static struct {
    long epochs, requests, proxied, proxied2xx, ac2xx, acnon2xx, hits, stale, misses, revalidated,
        bypass, signout, unavailable, other_result, sessions, revocations, signouts_idp, purges,
        faults, excused_revoked, excused_outage, divergences;
} fig;

static bool in_outage;
static long outage_start_ms;

static struct conn ac_conn = {.fd = -1}, oracle_conn = {.fd = -1};
static struct resp ac_resp, oracle_resp;

/* The last checks and events, for the report of a divergence. */
#define HISTORY 400
static char history[HISTORY][2048];
static long start_ms;
static long nhistory;

__attribute__((format(printf, 1, 2))) static void note(const char *fmt, ...)
{
    va_list ap;
    char *h = history[nhistory++ % HISTORY];
    int n = snprintf(h, sizeof history[0], "[%ld ms] ", now_ms() - start_ms);
    va_start(ap, fmt);
    vsnprintf(h + n, sizeof history[0] - (size_t)n, fmt, ap);
    va_end(ap);
}

static char *dup_range(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    if (!s)
        die("out of memory");
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

static int control(const char *fmt, ...)
{
    static struct resp r;
    char target[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(target, sizeof target, fmt, ap);
    va_end(ap);
    int st = simple_request(ports.control, "POST", target, &r);
    if (st != 200)
        die("control %s answered %d: %.*s", target, st, (int)r.body_len, r.body);
    return st;
}

static void kill_header_cred(struct session *s, int basic, long t)
{
    if (s->hdr_alive[basic]) {
        s->hdr_alive[basic] = false;
        s->hdr_revoked_us[basic] = t;
    }
}

static void session_new(void)
{
    if (nsessions == MAX_SESSIONS) {
        /* forget the oldest dead sessions' identities by reusing the array from the start */
        for (int i = 0; i < nsessions; i++)
            for (int h = 0; h <= NHOSTS; h++) {
                free(sessions[i].ident[h]);
                free(sessions[i].echo[h]);
                sessions[i].ident[h] = sessions[i].echo[h] = NULL;
            }
        nsessions = 0;
    }
    struct session *s = &sessions[nsessions];
    memset(s, 0, sizeof *s);
    rnd_string(s->cookie, COOKIE_LEN);
    s->user = (int)below(NUSERS);
    s->alive = true;
    if (idp_modes) {
        rnd_string(s->bearer, COOKIE_LEN);
        rnd_string(s->pw, COOKIE_LEN);
        s->hdr_alive[0] = s->hdr_alive[1] = true;
        control("/session?cookie=%s&user=u%02d&groups=%s&email=u%02d@example.test&ttl=86400"
                "&basic=%s&bearer=%s",
                s->cookie, s->user, user_groups[s->user % 4], s->user, s->pw, s->bearer);
    } else {
        control("/session?cookie=%s&user=u%02d&groups=%s&ttl=86400", s->cookie, s->user,
                user_groups[s->user % 4]);
    }
    note("event: new session %s of u%02d", s->cookie, s->user);
    /* one Basic password per user (htpasswd): the new one replaces the user's others */
    for (int i = 0; idp_modes && i < nsessions; i++)
        if (sessions[i].user == s->user)
            kill_header_cred(&sessions[i], 1, now_us());
    nsessions++;
    fig.sessions++;
}

static int live_sessions(void)
{
    int n = 0;
    for (int i = 0; i < nsessions; i++)
        n += sessions[i].alive;
    return n;
}

static void kill_header_creds(struct session *s, long t)
{
    kill_header_cred(s, 0, t);
    kill_header_cred(s, 1, t);
}

/* The session's cookie ends, and with it its header credentials (they hold while it lives). */
static void kill_session(struct session *s, long t)
{
    if (s->alive) {
        s->alive = false;
        s->revoked_us = t;
        s->revoked_req = nreq;
        fig.revocations++;
    }
    kill_header_creds(s, t);
}

/* Control /end?cookie: that session, and (a live one's owner) every header credential of its
 * user. */
static void revoke_session(struct session *s, long t)
{
    if (!s->alive)
        return;
    for (int i = 0; i < nsessions; i++)
        if (sessions[i].user == s->user)
            kill_header_creds(&sessions[i], t);
    kill_session(s, t);
}

static void revoke_user(int user, long t)
{
    for (int i = 0; i < nsessions; i++)
        if (sessions[i].user == user)
            kill_session(&sessions[i], t);
}

/* ---- one check ---- */

struct check {
    char req[REQ_CAP];
    size_t len;
    bool head;
    int host;                      /* index into hosts, NHOSTS: unknown.test */
    bool multi;                    /* several cookies authcached takes for the credential */
    struct session *idp_ses;       /* the session the IdP reads (first cookie of its exact name) */
    struct session *cookie_ses[2]; /* sessions whose value is in a cookie authcached reads */
    struct session *hdr_ses;       /* the session whose header credential is sent */
    int hdr_basic;                 /* it is the Basic password (else the Bearer token) */
    bool ac_signout;               /* authcached should see a sign-out */
    bool idp_signout;              /* the IdP ends the user's sessions */
};

static void put(struct check *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(c->req + c->len, sizeof c->req - c->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        c->len += (size_t)n < sizeof c->req - c->len ? (size_t)n : 0;
}

static int unhex(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* The path as a server resolves it: %XX of unreserved characters decoded, dot segments removed
 * (RFC 3986 5.2.4). out holds at least strlen(path) + 2. */
static void normalize_path(const char *path, char *out)
{
    char dec[1024];
    size_t n = 0;
    for (const char *p = path; *p && *p != '?' && n < sizeof dec - 1; p++) {
        int a, b;
        if (*p == '%' && (a = unhex(p[1])) >= 0 && (b = unhex(p[2])) >= 0) {
            char ch = (char)(a * 16 + b);
            if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
                ch == '-' || ch == '.' || ch == '_' || ch == '~') {
                dec[n++] = ch;
                p += 2;
                continue;
            }
        }
        dec[n++] = *p;
    }
    dec[n] = '\0';
    size_t o = 0;
    const char *in = dec;
    while (*in) {
        if (strncmp(in, "../", 3) == 0)
            in += 3;
        else if (strncmp(in, "./", 2) == 0)
            in += 2;
        else if (strncmp(in, "/./", 3) == 0)
            in += 2;
        else if (strcmp(in, "/.") == 0)
            in = "/";
        else if (strncmp(in, "/../", 4) == 0 || strcmp(in, "/..") == 0) {
            in = in[3] ? in + 3 : "/";
            while (o > 0 && out[--o] != '/')
                ;
        } else if (strcmp(in, ".") == 0 || strcmp(in, "..") == 0)
            in += strlen(in);
        else {
            do
                out[o++] = *in++;
            while (*in && *in != '/');
        }
    }
    out[o] = '\0';
}

static const char *const methods[] = {"GET", "GET",    "GET",     "HEAD", "POST",
                                      "PUT", "DELETE", "OPTIONS", "PATCH"};

static void forwarded_uri(char *out, size_t cap, bool *has_logout_marker)
{
    static const char *const paths[] = {
        "/",         "/index.html",      "/admin",          "/admin/users",
        "/a/b/../c", "/%2e%2e/admin",    "/a/%2E%2E/admin", "//admin",
        "/public/x", "/public/../admin", "/./admin",        "/%61dmin",
    };
    static const char *const queries[] = {
        "", "", "", "?a=1", "?rd=%2Fadmin", "?x=1&y=2", "?X-authentik-logout=false"};
    const char *so = P->signout ? P->signout : "/logout";
    unsigned k = below(1000);
    *has_logout_marker = false;
    if (k < 8) {
        static const char *const tails[] = {"",  "/",   "/../../admin", "/%2e%2e/%2e%2e/admin",
                                            "x", "/..", "?rd=/",        "/./"};
        snprintf(out, cap, "%s%s", so, PICK(tails));
    } else if (k < 12) {
        static const char *const heads[] = {"/x/..", "/X/%2e%2e", "//", "/."};
        snprintf(out, cap, "%s%s", PICK(heads), so);
    } else if (k < 14 && strncmp(so, "/outpost", 8) == 0) {
        snprintf(out, cap, "/outpost.goauthentik.io/%%73ign_out");
    } else if (k < 16 && strcmp(P->name, "authentik") == 0) {
        snprintf(out, cap, "%s?X-authentik-logout=true", PICK(paths));
        *has_logout_marker = true;
    } else {
        snprintf(out, cap, "%s%s", PICK(paths), PICK(queries));
    }
}

/* A cookie value no session has, from a small pool: the test IdP remembers every cookie it is
 * sent (up to 2^18) and a long run must not fill its table. */
static const char *unknown_cookie(void)
{
    static char pool[64][COOKIE_LEN + 1];
    static bool made;
    if (!made) {
        for (int i = 0; i < 64; i++)
            rnd_string(pool[i], COOKIE_LEN);
        made = true;
    }
    return pool[below(64)];
}

static void base64(const char *in, char *out)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(in), o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)(unsigned char)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)(unsigned char)in[i + 1] << 8;
        if (i + 2 < n)
            v |= (unsigned char)in[i + 2];
        out[o++] = t[v >> 18 & 63];
        out[o++] = t[v >> 12 & 63];
        out[o++] = i + 1 < n ? t[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? t[v & 63] : '=';
    }
    out[o] = '\0';
}

/* Picks a session for a cookie: mostly live ones. */
static struct session *some_session(void)
{
    if (!nsessions)
        return NULL;
    if (chance(800)) {
        int live = live_sessions();
        if (live) {
            int k = (int)below((unsigned)live);
            for (int i = 0; i < nsessions; i++)
                if (sessions[i].alive && k-- == 0)
                    return &sessions[i];
        }
    }
    /* recent ones, so a revoked session is tried again soon after */
    int span = nsessions < 64 ? nsessions : 64;
    return &sessions[nsessions - 1 - (int)below((unsigned)span)];
}

static const char *hname(const char *canonical)
{
    static char buf[4][64];
    static int k;
    char *b = buf[k++ & 3];
    snprintf(b, 64, "%s", canonical);
    if (chance(100))
        for (char *p = b; *p; p++)
            *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
    else if (chance(30))
        for (char *p = b; *p; p++)
            *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
    return b;
}

static void make_check(struct check *c)
{
    c->len = 0;
    c->idp_ses = c->hdr_ses = NULL;
    c->hdr_basic = 0;
    const char *ep = P->endpoints[below((unsigned)P->nendpoints)];
    if (chance(5))
        ep = P->bogus;
    const char *method = chance(900) ? "GET" : chance(500) ? "HEAD" : "POST";
    c->head = strcmp(method, "HEAD") == 0;
    put(c, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n", method, ep);

    int h = (int)below(NHOSTS);
    const char *host = hosts[h];
    c->host = h;
    char hostbuf[64];
    if (chance(20)) {
        host = "unknown.test";
        c->host = NHOSTS;
    } else if (chance(30)) {
        snprintf(hostbuf, sizeof hostbuf, "%s:443", host);
        host = hostbuf;
    } else if (chance(30)) {
        snprintf(hostbuf, sizeof hostbuf, "%s", host);
        hostbuf[0] = 'A';
        host = hostbuf;
    }
    char uri[256];
    bool marker;
    forwarded_uri(uri, sizeof uri, &marker);
    const char *fmethod = PICK(methods), *proto = chance(900) ? "https" : "http";
    put(c, "%s: %s\r\n", hname("X-Forwarded-Method"), fmethod);
    put(c, "%s: %s\r\n", hname("X-Forwarded-Proto"), proto);
    if (!strcmp(P->name, "authelia") && chance(700)) {
        /* nginx's auth-request endpoint reads only these; mostly they agree */
        put(c, "X-Original-URL: %s://%s%s\r\n", proto, host, chance(950) ? uri : "/elsewhere");
        put(c, "X-Original-Method: %s\r\n", chance(950) ? fmethod : "GET");
    }
    put(c, "%s: %s\r\n", hname("X-Forwarded-Host"), host);
    put(c, "%s: %s\r\n", hname("X-Forwarded-Uri"), uri);
    char raw[256];
    bool ambiguous = false; /* URI fields that disagree: authcached sees no sign-out in them */
    snprintf(raw, sizeof raw, "%s", uri);
    if (chance(15)) {
        /* a second, different X-Forwarded-Uri: the IdP reads the last one */
        char uri2[256];
        bool marker2;
        forwarded_uri(uri2, sizeof uri2, &marker2);
        put(c, "%s: %s\r\n", hname("X-Forwarded-Uri"), uri2);
        snprintf(raw, sizeof raw, "%s", uri2);
        marker = marker2;
        ambiguous |= strcmp(uri, uri2) != 0;
    }
    if (chance(30)) {
        const char *orig = chance(500) ? uri : "/other";
        put(c, "X-Original-URI: %s\r\n", orig);
        ambiguous |= strcmp(orig, raw) != 0;
    }
    if (chance(100))
        put(c, "%s: 10.%u.%u.%u\r\n", hname("X-Forwarded-For"), below(4), below(4), below(4));
    if (chance(50))
        put(c, "X-Real-IP: 192.168.%u.%u\r\n", below(4), below(4));
    else if (chance(30))
        put(c, "X-Real-IP: 10.9.0.%u\r\n", below(4)); /* oauth2-proxy's --trusted-ip */

    /* credentials */
    struct session *s = some_session();
    const char *unknown = unknown_cookie();
    const char *val = s ? s->cookie : unknown;
    unsigned k = below(1000);
    c->cookie_ses[0] = c->cookie_ses[1] = NULL;
    /* the wrong name is another session cookie for authcached unless the pattern is exact */
    bool wrong_counts = strcmp(P->name, "authelia") != 0;
    c->multi = (k >= 800 && k < 840) || (wrong_counts && k >= 840 && k < 900);
    if (k < 900 && (k < 700 || k >= 750))
        c->cookie_ses[0] = s;
    if (k < 700) {
        put(c, "%s: %s%s=%s\r\n", hname("Cookie"), chance(300) ? "theme=dark; " : "", P->cookie,
            val);
        c->idp_ses = s;
    } else if (k < 750) {
        put(c, "Cookie: %s=%s\r\n", P->cookie, unknown);
    } else if (k < 800) {
        put(c, "Cookie: %s=%s\r\n", P->wrong_cookie, val);
    } else if (k < 840) {
        struct session *s2 = some_session();
        c->cookie_ses[1] = s2;
        put(c, "Cookie: %s=%s\r\nCookie: %s=%s\r\n", P->cookie, val, P->cookie,
            s2 ? s2->cookie : unknown);
        c->idp_ses = s;
    } else if (k < 870) {
        put(c, "Cookie: %s=%s; %s=%s\r\n", P->wrong_cookie, unknown, P->cookie, val);
        c->idp_ses = s;
    } else if (k < 900) {
        put(c, "Cookie: %s=%s\r\nCookie: %s=%s\r\n", P->wrong_cookie, val, P->cookie, val);
        c->idp_ses = s;
    } else if (k < 920) {
        put(c, "Cookie: theme=dark\r\n");
    }
    /* header credentials: a session's valid Bearer token or Basic password (a test IdP with
     * --mode registers them), else junk */
    struct session *hs = idp_modes ? some_session() : NULL;
    bool authz = false, pauthz = false;
    unsigned a = below(1000);
    if (hs && a < 80) {
        char up[96], b64[160];
        c->hdr_basic = 1;
        if (strcmp(P->cred_header, "Authorization") == 0 && a < 40) {
            put(c, "%s: Bearer %s\r\n", hname(P->cred_header), hs->bearer);
            c->hdr_basic = 0;
        } else {
            snprintf(up, sizeof up, "u%02d:%s", hs->user, hs->pw);
            base64(up, b64);
            put(c, "%s: Basic %s\r\n", hname(P->cred_header), b64);
        }
        c->hdr_ses = hs;
        authz = strcmp(P->cred_header, "Authorization") == 0;
        pauthz = !authz;
    }
    if (!authz && chance(80))
        put(c, "%s: Bearer %s\r\n", hname("Authorization"), chance(500) ? val : unknown);
    else if (!authz && chance(40))
        put(c, "Authorization: Basic dTAxOnBhc3N3b3Jk\r\n");
    if (!pauthz && chance(40))
        put(c, "Proxy-Authorization: %s\r\n",
            chance(500) ? "Basic dTAxOnBhc3N3b3Jk" : "Bearer dTAxOnBhc3N3b3Jk");
    if (chance(10))
        put(c, "%s: forged\r\n", P->user_header);
    if (chance(50))
        put(c, "Accept: text/html\r\n");
    put(c, "\r\n");

    /* what each side should make of a sign-out */
    char norm[300];
    normalize_path(raw, norm);
    c->ac_signout = !ambiguous && ((P->signout && strcmp(norm, P->signout) == 0) ||
                                   (strcmp(P->name, "authentik") == 0 && marker));
    c->idp_signout =
        c->host < NHOSTS && strcmp(ep, P->bogus) != 0 &&
        ((P->idp_signout && strncmp(raw, P->idp_signout, strlen(P->idp_signout)) == 0) || marker);
}

/* ---- comparing answers ---- */

/* Headers that describe a response (daemon/policy.c describes_response), hop-by-hop ones, and
 * authcached's own. */
static bool not_identity(const char *n, size_t nl)
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
        "Connection",
        "Keep-Alive",
        "TE",
        "Trailer",
        "Upgrade",
        "Proxy-Connection",
        "Retry-After",
    };
    for (size_t i = 0; i < sizeof deny / sizeof *deny; i++)
        if (name_is(n, nl, deny[i]))
            return true;
    return false;
}

static char ident_a[32768], ident_b[32768];
static char detail[70000]; /* more about a divergence, printed with it */

/* The identity of a 2xx: its other headers as "Name: value\r\n" in order. */
static void identity_of(const struct resp *r, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (int i = 0; i < r->nh; i++) {
        if (not_identity(r->h[i].n, r->h[i].nl))
            continue;
        int n = snprintf(out + o, cap - o, "%.*s: %.*s\r\n", (int)r->h[i].nl, r->h[i].n,
                         (int)r->h[i].vl, r->h[i].v);
        if (n < 0 || (size_t)n >= cap - o)
            break;
        o += (size_t)n;
    }
}

/* A 2xx's identity as the proxied application echoes it: the preset's identity headers and
 * Authorization, names in lower case, "name: value\n" in order. */
static void echo_form(const struct resp *r, char *out, size_t cap)
{
    size_t o = 0, pl = strlen(P->ident_prefix);
    out[0] = '\0';
    for (int i = 0; i < r->nh; i++) {
        if (!((r->h[i].nl > pl && strncasecmp(r->h[i].n, P->ident_prefix, pl) == 0) ||
              name_is(r->h[i].n, r->h[i].nl, "Authorization")))
            continue;
        if (o + r->h[i].nl + r->h[i].vl + 4 >= cap)
            break;
        for (size_t k = 0; k < r->h[i].nl; k++)
            out[o++] = (char)(r->h[i].n[k] >= 'A' && r->h[i].n[k] <= 'Z' ? r->h[i].n[k] + 32
                                                                         : r->h[i].n[k]);
        o += (size_t)sprintf(out + o, ": %.*s\n", (int)r->h[i].vl, r->h[i].v);
    }
}

static int cmp_line(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* An echo in a form two proxies agree on: lines with an empty or unset value dropped (nginx
 * sends no header for an empty variable), the rest sorted (each sets them in its own order). */
static void echo_canon(const char *in, char *out, size_t cap)
{
    char tmp[32768], *lines[256];
    int n = 0;
    snprintf(tmp, sizeof tmp, "%s", in);
    for (char *save = NULL, *l = strtok_r(tmp, "\n", &save); l && n < 256;
         l = strtok_r(NULL, "\n", &save)) {
        size_t len = strlen(l);
        /* Caddy's copy_headers sends its unset placeholder for an absent header */
        if (len >= 2 && strcmp(l + len - 2, ": ") != 0 && l[len - 1] != ':' &&
            !strstr(l, ": {http.reverse_proxy.header."))
            lines[n++] = l;
    }
    qsort(lines, (size_t)n, sizeof *lines, cmp_line);
    size_t o = 0;
    out[0] = '\0';
    for (int i = 0; i < n && o < cap; i++)
        o += (size_t)snprintf(out + o, cap - o, "%s\n", lines[i]);
}

/* Masks what an old test IdP draws at random: any run of exactly 32 alphanumerics. */
static void mask_random(char *s)
{
    for (char *p = s; *p;) {
        char *q = p;
        while ((*q >= 'A' && *q <= 'Z') || (*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9'))
            q++;
        if (q - p == 32) {
            memset(p, '*', 32);
        }
        p = q == p ? p + 1 : q;
    }
}

/* The deny headers the proxy passes on, as "name: value\r\n" lines in order. */
static void deny_headers(const struct resp *r, char *out, size_t cap)
{
    static const char *const names[] = {"Location", "Set-Cookie", "WWW-Authenticate",
                                        "Proxy-Authenticate"};
    size_t o = 0;
    out[0] = '\0';
    for (int i = 0; i < r->nh; i++)
        for (size_t k = 0; k < 4; k++)
            if (name_is(r->h[i].n, r->h[i].nl, names[k])) {
                int n = snprintf(out + o, cap - o, "%s: %.*s\r\n", names[k], (int)r->h[i].vl,
                                 r->h[i].v);
                if (n > 0 && (size_t)n < cap - o)
                    o += (size_t)n;
            }
    if (!ports.oracle_port)
        mask_random(out);
}

static void dump_answer(const char *who, const struct resp *r)
{
    fprintf(stderr, "--- %s answered:\n", who);
    if (!r->status) {
        fprintf(stderr, "(no answer)\n");
        return;
    }
    fwrite(r->buf, 1, r->len, stderr);
    fputc('\n', stderr);
}

static void remember(const struct check *c)
{
    size_t vl;
    const char *v = resp_get(&ac_resp, "X-Authcache", &vl);
    note("request %ld: oracle %d, authcached %d (%.*s)\n%.*s", nreq, oracle_resp.status,
         ac_resp.status, v ? (int)vl : 1, v ? v : "-", (int)c->len, c->req);
}

__attribute__((format(printf, 2, 3))) static void divergence(const struct check *c, const char *fmt,
                                                             ...)
{
    va_list ap;
    fig.divergences++;
    fprintf(stderr, "\nDIVERGENCE (preset %s, seed %" PRIu64 ", request %ld): ", P->name, opt.seed,
            nreq);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n--- the checks before it:\n");
    for (long k = nhistory > HISTORY ? nhistory - HISTORY : 0; k < nhistory; k++)
        fprintf(stderr, "%s\n", history[k % HISTORY]);
    fprintf(stderr, "--- the request (sent to both):\n%.*s", (int)c->len, c->req);
    if (c->idp_ses)
        fprintf(stderr,
                "--- [%ld ms] its session: user u%02d, %s, revoked at %ld ms (request %ld), last "
                "purge seen at %ld ms (request %ld); outage %s\n",
                now_ms() - start_ms, c->idp_ses->user, c->idp_ses->alive ? "alive" : "ended",
                c->idp_ses->revoked_us ? c->idp_ses->revoked_us / 1000 - start_ms : -1,
                c->idp_ses->revoked_req,
                c->idp_ses->told_us ? c->idp_ses->told_us / 1000 - start_ms : -1,
                c->idp_ses->told_req, in_outage ? "yes" : "no");
    dump_answer("the IdP alone (oracle)", &oracle_resp);
    dump_answer("authcached", &ac_resp);
    fputs(detail, stderr);
    fprintf(stderr, "DIVERGENCE (preset %s, seed %" PRIu64 ", request %ld): ", P->name, opt.seed,
            nreq);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    stop_children();
    exit(1);
}

static bool is2xx(int st)
{
    return st >= 200 && st <= 299;
}

static void count_result(const struct resp *r)
{
    size_t vl;
    const char *v = resp_get(r, "X-Authcache", &vl);
    if (!v)
        fig.other_result++;
    else if (vl == 3 && !memcmp(v, "hit", 3))
        fig.hits++;
    else if (vl == 5 && !memcmp(v, "stale", 5))
        fig.stale++;
    else if (vl == 4 && !memcmp(v, "miss", 4))
        fig.misses++;
    else if (vl == 11 && !memcmp(v, "revalidated", 11))
        fig.revalidated++;
    else if (vl == 6 && !memcmp(v, "bypass", 6))
        fig.bypass++;
    else if (vl == 7 && !memcmp(v, "signout", 7))
        fig.signout++;
    else if (vl == 11 && !memcmp(v, "unavailable", 11))
        fig.unavailable++;
    else
        fig.other_result++;
}

/* Does authcached's 2xx carry the identity the IdP gave s on c's host? */
static bool same_identity(const struct check *c, const struct session *s, bool check_identity,
                          const char **why)
{
    if (!s->ident[c->host] && !s->echo[c->host]) {
        *why = "a session the oracle never allowed on this host";
        return false;
    }
    if (!check_identity) /* through a proxy: the application's echo is compared instead */
        return true;
    if (s->ident[c->host]) {
        identity_of(&ac_resp, ident_a, sizeof ident_a);
        snprintf(ident_b, sizeof ident_b, "%s", s->ident[c->host]);
    } else {
        char tmp[32768];
        echo_form(&ac_resp, tmp, sizeof tmp);
        echo_canon(tmp, ident_a, sizeof ident_a);
        echo_canon(s->echo[c->host], ident_b, sizeof ident_b);
    }
    if (strcmp(ident_a, ident_b) != 0) {
        snprintf(detail, sizeof detail, "--- authcached's identity:\n%s--- the IdP's before:\n%s",
                 ident_a, ident_b);
        *why = "the identity differs from the one the IdP gave this session";
        return false;
    }
    return true;
}

/* One credential of c the IdP reads: the cookie (hdr false) or the header one of s. */
static bool excused_by(const struct check *c, const struct session *s, bool hdr, long sent_us,
                       bool check_identity, const char **why)
{
    bool alive = hdr ? s->hdr_alive[c->hdr_basic] : s->alive;
    long revoked = hdr ? s->hdr_revoked_us[c->hdr_basic] : s->revoked_us;
    /* a purge by session covers the answers held under that cookie alone: those held under
     * several cookies are reached only through their user (docs/contract.md, sign-out) */
    long told = hdr ? s->hdr_told_us : c->multi ? s->told_multi_us : s->told_us;
    if (alive) {
        *why = "its session is alive, the IdP refused on other grounds";
        if (ports.oracle_port || !in_outage)
            return false;
        /* fault window without an oracle: an alive session on a host the oracle allowed it */
        return same_identity(c, s, check_identity, why);
    }
    if (told >= revoked) {
        *why = "the session was ended and authcached was told since (purge or sign-out)";
        return false;
    }
    long age = sent_us - revoked; /* microseconds */
    if (age >= (opt.fresh_ms + SLACK_MS) * 1000 &&
        !(in_outage && age < (opt.grace_ms + SLACK_MS) * 1000)) {
        *why = "the session was ended at the IdP longer ago than the promise allows";
        return false;
    }
    if (!same_identity(c, s, check_identity, why))
        return false;
    if (age < (opt.fresh_ms + SLACK_MS) * 1000)
        fig.excused_revoked++;
    else
        fig.excused_outage++;
    return true;
}

/*
 * May authcached answer 2xx to c while the oracle refuses (or, in a fault window without an
 * oracle, cannot be asked)? Only for a credential of c the IdP reads (the cookie of its exact
 * name, the header credential) whose session the IdP ended without authcached being told since,
 * within the window, with the identity the oracle gave that session before.
 */
static bool excused(const struct check *c, long sent_us, bool check_identity, const char **why)
{
    *why = "no session of the driver's the IdP would read in this request";
    if (c->host == NHOSTS && !strcmp(P->name, "authentik"))
        return false; /* no application: never a 2xx */
    if (c->idp_ses && excused_by(c, c->idp_ses, false, sent_us, check_identity, why))
        return true;
    if (c->hdr_ses) {
        const char *why_hdr;
        if (excused_by(c, c->hdr_ses, true, sent_us, check_identity, &why_hdr))
            return true;
        if (!c->idp_ses)
            *why = why_hdr;
    }
    return false;
}

/* The session whose identity the IdP answers with, when it is one of the driver's and alive:
 * the header credential before the cookie for oauth2-proxy and Authelia, after it for
 * authentik. */
static struct session *winner(const struct check *c)
{
    struct session *ck = c->idp_ses && c->idp_ses->alive ? c->idp_ses : NULL;
    struct session *hd = c->hdr_ses && c->hdr_ses->hdr_alive[c->hdr_basic] ? c->hdr_ses : NULL;
    return P->header_first ? (hd ? hd : ck) : (ck ? ck : hd);
}

static void apply_signouts(const struct check *c, long t)
{
    if (c->idp_signout && c->idp_ses && c->idp_ses->alive) {
        fig.signouts_idp++;
        revoke_user(c->idp_ses->user, t);
        note("event: the next check is a sign-out at the IdP: every session of u%02d ends",
             c->idp_ses->user);
    }
}

static void tell_user(int user, long t)
{
    for (int i = 0; i < nsessions; i++)
        if (sessions[i].user == user) {
            sessions[i].told_us = sessions[i].hdr_told_us = sessions[i].told_multi_us = t;
            sessions[i].told_req = nreq;
        }
}

static void run_check_inner(struct check *c)
{
    bool ask_oracle = ports.oracle_port || !in_outage;
    if (!ask_oracle && (c->idp_signout || c->ac_signout)) {
        /* without an oracle port a sign-out in an outage cannot be modelled: send another */
        return;
    }
    nreq++;
    fig.requests++;
    if (ask_oracle) {
        if (http_do(&oracle_conn, c->req, c->len, c->head, &oracle_resp) < 0)
            die("the oracle did not answer request %ld (seed %" PRIu64 ")", nreq, opt.seed);
    }
    long t_oracle = now_us();
    apply_signouts(c, t_oracle);
    long sent = now_us();
    if (http_do(&ac_conn, c->req, c->len, c->head, &ac_resp) < 0)
        ac_resp.status = 0;
    if (c->ac_signout) {
        /* authcached purges the sessions of the cookies it reads; their users' other sessions
         * only when it holds an answer naming the user, which the driver cannot know */
        for (int i = 0; i < 2; i++)
            if (c->cookie_ses[i]) {
                c->cookie_ses[i]->told_us = sent;
                c->cookie_ses[i]->told_req = nreq;
            }
    }
    count_result(&ac_resp);
    bool ac_ok = is2xx(ac_resp.status);
    ac_ok ? fig.ac2xx++ : fig.acnon2xx++;

    struct session *w = winner(c);
    size_t ul;
    const char *uv = resp_get(&oracle_resp, P->user_header, &ul);
    char want[8];
    snprintf(want, sizeof want, "u%02d", w ? w->user : 0);
    if (ask_oracle && is2xx(oracle_resp.status) && w && uv && ul == 3 && !memcmp(uv, want, 3)) {
        identity_of(&oracle_resp, ident_b, sizeof ident_b);
        struct session *s = w;
        if (!s->ident[c->host] || strcmp(s->ident[c->host], ident_b) != 0) {
            free(s->ident[c->host]);
            s->ident[c->host] = dup_range(ident_b, strlen(ident_b));
        }
    }

    if (ac_resp.status == 0) {
        if (!in_outage)
            divergence(c, "authcached gave no answer");
        return;
    }
    if (!ask_oracle) {
        const char *why;
        if (ac_ok && !excused(c, sent, true, &why))
            divergence(c, "2xx during an IdP fault (no oracle): %s", why);
        return;
    }
    bool or_ok = is2xx(oracle_resp.status);
    if (ac_ok && !or_ok) {
        const char *why;
        if (!excused(c, sent, true, &why))
            divergence(c, "authcached answered %d where the IdP alone answered %d: %s",
                       ac_resp.status, oracle_resp.status, why);
        return;
    }
    if (ac_ok && or_ok) {
        identity_of(&ac_resp, ident_a, sizeof ident_a);
        identity_of(&oracle_resp, ident_b, sizeof ident_b);
        if (strcmp(ident_a, ident_b) != 0) {
            const char *why;
            /* an ended session's cached identity during the exception, where the IdP now lets
             * the request through without one (an open path) or with another credential's */
            if (!excused(c, sent, true, &why))
                divergence(c, "both 2xx, but the identity headers differ (%s)", why);
        }
        return;
    }
    if (in_outage)
        return;
    if (ac_resp.status != oracle_resp.status)
        divergence(c, "status %d where the IdP alone answered %d (no fault injected)",
                   ac_resp.status, oracle_resp.status);
    if (!or_ok) {
        deny_headers(&ac_resp, ident_a, sizeof ident_a);
        deny_headers(&oracle_resp, ident_b, sizeof ident_b);
        if (strcmp(ident_a, ident_b) != 0)
            divergence(c, "the refusal's Location/Set-Cookie/WWW-Authenticate differ");
    }
}

static void run_check(struct check *c)
{
    long before = nreq;
    run_check_inner(c);
    if (nreq != before)
        remember(c);
}

/* The last new checks, sent again now and then (fewer misses, held answers used). */
static struct check recent[RECENT];
static long nrecent;

/* ---- events ---- */

static long metric(const char *name)
{
    static struct resp r;
    if (simple_request(ports.admin, "GET", "/metrics", &r) != 200)
        return -1;
    size_t n = strlen(name);
    for (const char *p = r.body; p && p < r.body + r.body_len;) {
        const char *eol = memchr(p, '\n', (size_t)(r.body + r.body_len - p));
        if ((size_t)((eol ? eol : r.body + r.body_len) - p) > n && !memcmp(p, name, n) &&
            p[n] == ' ')
            return atol(p + n + 1);
        p = eol ? eol + 1 : NULL;
    }
    return -1;
}

static void admin_purge(void)
{
    static struct resp r;
    char target[256];
    long t = now_us();
    unsigned k = below(10);
    struct session *s = nsessions ? &sessions[below((unsigned)nsessions)] : NULL;
    if (k < 5 || !s) {
        int user = (int)below(NUSERS);
        snprintf(target, sizeof target, "/v1/purge?user=u%02d", user);
        tell_user(user, t);
    } else if (k < 8) {
        snprintf(target, sizeof target, "/v1/purge?session=%s", s->cookie);
        s->told_us = t;
        s->told_req = nreq;
    } else {
        snprintf(target, sizeof target, "/v1/purge?all=1");
        for (int i = 0; i < nsessions; i++) {
            sessions[i].told_us = sessions[i].hdr_told_us = sessions[i].told_multi_us = t;
            sessions[i].told_req = nreq;
        }
    }
    note("event: admin POST %s", target);
    if (simple_request(ports.admin, "POST", target, &r) != 200)
        die("admin %s answered %d", target, r.status);
    fig.purges++;
}

/* Starts an IdP fault; returns whether it fails fast (an answer or a refused connection at once,
 * not a hang). */
static bool fault_begin(void)
{
    static const char *const modes[] = {"500", "503", "refuse", "hang", "reset"};
    const char *m = PICK(modes);
    control("/fault?mode=%s", m);
    note("event: IdP fault %s", m);
    in_outage = true;
    outage_start_ms = now_ms();
    fig.faults++;
    return strcmp(m, "hang") != 0;
}

static long fault_pause_at; /* fault_left at which the window pauses past --fresh-ttl, or 0 */

static void fault_end(void)
{
    static struct resp r;
    control("/fault?mode=ok");
    /* the IdP's own listener answers again (after "refuse" it listens anew) ... */
    for (int i = 0; i < 200; i++) {
        if (simple_request(ports.idp, "GET", "/healthz", &r) > 0)
            break;
        usleep(10 * 1000);
    }
    /* ... and the outage lasts, for authcached, until its circuit breaker has closed again */
    for (int i = 0; i < 400; i++) {
        if (metric("authcache_idp_circuit_open") == 0)
            break;
        usleep(25 * 1000);
    }
    in_outage = false;
    note("event: IdP fault over, circuit closed");
}

static void maybe_event(long i, long *fault_left)
{
    if (*fault_left > 0 && --*fault_left == 0)
        fault_end();
    if (*fault_left && *fault_left == fault_pause_at) {
        /* the answers held before the fault outlive --fresh-ttl: now served stale, and the
         * sessions ended meanwhile meet the outage grace (a pause, so that the same seed draws
         * the same checks at any speed) */
        note("event: %ld ms into the fault, the driver waits %ld ms", now_ms() - outage_start_ms,
             opt.fresh_ms + 100);
        /* and one session asked about just before the fault ends at the IdP, unknown to the
         * cache: its held answers may now be served only within the outage grace */
        for (long k = nrecent - 1; k >= 0 && k >= nrecent - RECENT; k--) {
            struct session *s = recent[k % RECENT].idp_ses;
            if (s && s->alive) {
                control("/end?cookie=%s", s->cookie);
                note("event: IdP ends session %s (u%02d) in the fault, authcached not told",
                     s->cookie, s->user);
                revoke_session(s, now_us());
                break;
            }
        }
        usleep((useconds_t)(opt.fresh_ms + 100) * 1000);
        fault_pause_at = 0;
    }
    if (live_sessions() < 12 || chance(5))
        session_new();
    if (chance(4) && nsessions) {
        struct session *s = &sessions[below((unsigned)nsessions)];
        if (s->alive) {
            control("/end?cookie=%s", s->cookie);
            note("event: IdP ends session %s (u%02d), authcached not told", s->cookie, s->user);
            revoke_session(s, now_us());
        }
    }
    if (chance(1)) {
        int user = (int)below(NUSERS);
        control("/end?user=u%02d", user);
        note("event: IdP ends every session of u%02d, authcached not told", user);
        revoke_user(user, now_us());
    }
    if (chance(1) && !in_outage) /* a purge in an outage would leave nothing to serve stale */
        admin_purge();
    if (opt.fault_every && *fault_left == 0 && i > 0 && i % opt.fault_every == 0) {
        /* short windows; half the fast ones (not a hang) pause past --fresh-ttl halfway */
        bool fast = fault_begin();
        *fault_left = 10 + below(40);
        fault_pause_at = 0;
        if (fast && chance(500)) {
            *fault_left += 60;
            fault_pause_at = *fault_left / 2;
        }
    }
}

/* ---- the proxied application and proxied checks ---- */

static int app_listen_fd;

/* Answers every request 200 with the identity headers it received (the preset's prefix and
 * Authorization) as its body, in order and lower case names. */
static void *app_conn_main(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char *buf = malloc(65536), *out = malloc(65536);
    size_t len = 0;
    for (;;) {
        char *end;
        while (!(end = memmem(buf, len, "\r\n\r\n", 4))) {
            ssize_t n = len < 65536 ? recv(fd, buf + len, 65536 - len, 0) : 0;
            if (n <= 0)
                goto out;
            len += (size_t)n;
        }
        size_t head = (size_t)(end + 4 - buf), o = 0;
        char body[32768];
        size_t bo = 0;
        for (char *p = memmem(buf, head, "\r\n", 2) + 2; p < end;) {
            char *eol = memmem(p, (size_t)(end + 2 - p), "\r\n", 2);
            char *colon = memchr(p, ':', (size_t)(eol - p));
            size_t pl = strlen(P->ident_prefix);
            if (colon &&
                (((size_t)(colon - p) > pl && strncasecmp(p, P->ident_prefix, pl) == 0) ||
                 ((size_t)(colon - p) == 13 && strncasecmp(p, "Authorization", 13) == 0))) {
                for (char *q = p; q < colon && bo < sizeof body - 1; q++)
                    body[bo++] = (char)(*q >= 'A' && *q <= 'Z' ? *q + 32 : *q);
                size_t vl = (size_t)(eol - colon);
                if (bo + vl + 1 < sizeof body) {
                    memcpy(body + bo, colon, vl);
                    bo += vl;
                    body[bo++] = '\n';
                }
            }
            p = eol + 2;
        }
        o = (size_t)snprintf(out, 65536,
                             "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                             "%zu\r\n\r\n",
                             bo);
        memcpy(out + o, body, bo);
        o += bo;
        if (send(fd, out, o, MSG_NOSIGNAL) != (ssize_t)o)
            goto out;
        memmove(buf, buf + head, len - head);
        len -= head;
    }
out:
    close(fd);
    free(buf);
    free(out);
    return NULL;
}

static void *app_accept_main(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept4(app_listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        pthread_t t;
        if (pthread_create(&t, NULL, app_conn_main, (void *)(intptr_t)fd) == 0)
            pthread_detach(t);
        else
            close(fd);
    }
    return NULL;
}

static void app_start(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)opt.app_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1;
    app_listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    setsockopt(app_listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(app_listen_fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(app_listen_fd, 128) < 0)
        die("--app-port %d: %s", opt.app_port, strerror(errno));
    pthread_t t;
    if (pthread_create(&t, NULL, app_accept_main, NULL) != 0)
        die("cannot start the application thread");
    pthread_detach(t);
}

static struct conn px_conn[MAX_PROXIES][2];

/*
 * One client request through proxy p: to its server block asking authcached, then to the one
 * asking the oracle (the oracle first, as for direct checks). The application echoes the identity
 * it got; the answers must agree like direct ones.
 */
static void run_proxied(int p, struct check *c)
{
    struct session *s = some_session();
    const char *unknown = unknown_cookie();
    static const char *const paths[] = {"/",   "/admin",    "/a/b/../c",      "/%2e%2e/admin",
                                        "//x", "/public/x", "/index.html?x=1"};
    int h = (int)below(NHOSTS);
    c->len = 0;
    c->head = false;
    c->host = h;
    c->idp_ses = c->hdr_ses = NULL;
    c->multi = false;
    c->cookie_ses[0] = c->cookie_ses[1] = NULL;
    c->ac_signout = c->idp_signout = false;
    put(c, "GET %s HTTP/1.1\r\nHost: %s\r\n", PICK(paths), hosts[h]);
    unsigned k = below(10);
    if (k < 7 && s) {
        put(c, "Cookie: %s=%s\r\n", P->cookie, s->cookie);
        c->idp_ses = s;
    } else if (k < 8 && s) {
        put(c, "Cookie: %s=%s\r\n", P->wrong_cookie, s->cookie);
    } else if (k < 9) {
        put(c, "Cookie: %s=%s\r\n", P->cookie, unknown);
    }
    if (chance(100))
        put(c, "%s: forged\r\n", P->user_header);
    put(c, "\r\n");
    nreq++;
    fig.requests++;
    fig.proxied++;
    px_conn[p][0].port = opt.proxies[p].cache_port;
    px_conn[p][1].port = opt.proxies[p].oracle_port;
    int rc = http_do(&px_conn[p][1], c->req, c->len, false, &oracle_resp);
    if (rc < 0)
        die("proxy %s (oracle side, port %d) did not answer: %s", opt.proxies[p].name,
            px_conn[p][1].port, strerror(-rc));
    long sent = now_us();
    if (http_do(&px_conn[p][0], c->req, c->len, false, &ac_resp) < 0)
        divergence(c, "proxy %s (authcached side) did not answer", opt.proxies[p].name);
    bool ac_ok = is2xx(ac_resp.status), or_ok = is2xx(oracle_resp.status);
    ac_ok ? fig.ac2xx++ : fig.acnon2xx++;
    fig.proxied2xx += ac_ok;
    count_result(&ac_resp);
    if (or_ok && oracle_resp.body_len && c->idp_ses && c->idp_ses->alive) {
        struct session *ss = c->idp_ses;
        free(ss->echo[h]);
        ss->echo[h] = dup_range(oracle_resp.body, oracle_resp.body_len);
    }
    const char *why;
    if (ac_ok && !or_ok) {
        if (!excused(c, sent, false, &why))
            divergence(c, "through %s: the application was reached where the IdP alone refused: %s",
                       opt.proxies[p].name, why);
        return;
    }
    if (ac_ok && or_ok) {
        if (ac_resp.body_len != oracle_resp.body_len ||
            memcmp(ac_resp.body, oracle_resp.body, ac_resp.body_len) != 0)
            divergence(c, "through %s: the application saw other identity headers",
                       opt.proxies[p].name);
        return;
    }
    if (ac_resp.status != oracle_resp.status)
        divergence(c, "through %s: status %d where the IdP alone gave %d", opt.proxies[p].name,
                   ac_resp.status, oracle_resp.status);
    deny_headers(&ac_resp, ident_a, sizeof ident_a);
    deny_headers(&oracle_resp, ident_b, sizeof ident_b);
    if (strcmp(ident_a, ident_b) != 0)
        divergence(c, "through %s: the refusal's Location/Set-Cookie differ", opt.proxies[p].name);
}

/* ---- start-up ---- */

static void usage(void)
{
    fputs(
        "usage: differential [--seed N] [--requests N] [--preset authentik|oauth2-proxy|authelia]\n"
        "         [--idp-bin PATH] [--authcached-bin PATH] [--log-dir DIR] [--port-base P]\n"
        "         [--fresh-ttl-ms N] [--outage-grace-ms N] [--fault-every N] [--epoch N]\n"
        "         [--app-port P --proxy NAME=CACHE_PORT,ORACLE_PORT ... --proxy-share PCT]\n"
        "         [--verbose]\n"
        "with --port-base P: IdP P, control P+1, oracle P+2, authcached P+3, admin P+4\n",
        stderr);
    exit(2);
}

static long num_arg(const char *flag, const char *v, long lo, long hi)
{
    char *e;
    errno = 0;
    long n = strtol(v, &e, 10);
    if (errno || *e || e == v || n < lo || n > hi)
        die("%s: %s is not a number in %ld..%ld", flag, v, lo, hi);
    return n;
}

static void parse_args(int argc, char **argv)
{
    bool seeded = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            usage();
        if (!strcmp(a, "--verbose")) {
            opt.verbose = true;
            continue;
        }
        if (!v)
            usage();
        i++;
        if (!strcmp(a, "--seed")) {
            opt.seed = strtoull(v, NULL, 10);
            seeded = true;
        } else if (!strcmp(a, "--requests"))
            opt.requests = num_arg(a, v, 1, 1L << 40);
        else if (!strcmp(a, "--preset"))
            opt.preset = v;
        else if (!strcmp(a, "--idp-bin"))
            opt.idp_bin = v;
        else if (!strcmp(a, "--authcached-bin"))
            opt.authcached_bin = v;
        else if (!strcmp(a, "--log-dir"))
            opt.log_dir = v;
        else if (!strcmp(a, "--port-base"))
            opt.port_base = (int)num_arg(a, v, 1024, 65530);
        else if (!strcmp(a, "--fresh-ttl-ms"))
            opt.fresh_ms = num_arg(a, v, 1, 3600000);
        else if (!strcmp(a, "--outage-grace-ms"))
            opt.grace_ms = num_arg(a, v, 1, 3600000);
        else if (!strcmp(a, "--epoch"))
            opt.epoch = num_arg(a, v, 1000, 1L << 40);
        else if (!strcmp(a, "--fault-every"))
            opt.fault_every = num_arg(a, v, 0, 1L << 40);
        else if (!strcmp(a, "--proxy-share"))
            opt.proxy_share = (int)num_arg(a, v, 0, 100);
        else if (!strcmp(a, "--app-port"))
            opt.app_port = (int)num_arg(a, v, 1, 65535);
        else if (!strcmp(a, "--proxy")) {
            const char *eq = strchr(v, '=');
            if (!eq || opt.nproxies == MAX_PROXIES || eq - v >= 32 ||
                sscanf(eq + 1, "%d,%d", &opt.proxies[opt.nproxies].cache_port,
                       &opt.proxies[opt.nproxies].oracle_port) != 2)
                die("--proxy %s: want NAME=CACHE_PORT,ORACLE_PORT (at most %d)", v, MAX_PROXIES);
            snprintf(opt.proxies[opt.nproxies].name, 32, "%.*s", (int)(eq - v), v);
            opt.nproxies++;
        } else
            die("unknown flag %s", a);
    }
    if (!seeded) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        opt.seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 20) ^ (uint64_t)ts.tv_sec;
    }
    P = NULL;
    for (size_t k = 0; k < sizeof presets / sizeof *presets; k++)
        if (!strcmp(presets[k].name, opt.preset))
            P = &presets[k];
    if (!P)
        die("--preset %s: want authentik, oauth2-proxy or authelia", opt.preset);
    if (opt.nproxies && !opt.app_port)
        die("--proxy needs --app-port");
    if (opt.grace_ms < opt.fresh_ms)
        die("--outage-grace-ms must be at least --fresh-ttl-ms");
}

/* Ports, the test IdP's abilities, the application: once. */
static void setup(void)
{
    if (opt.port_base) {
        ports.idp = opt.port_base;
        ports.control = opt.port_base + 1;
        ports.oracle = opt.port_base + 2;
        ports.ac = opt.port_base + 3;
        ports.admin = opt.port_base + 4;
    } else {
        ports.idp = free_port();
        ports.control = free_port();
        ports.oracle = free_port();
        ports.ac = free_port();
        ports.admin = free_port();
    }
    mkdir("build", 0755);
    mkdir("build/test-logs", 0755);
    mkdir(opt.log_dir, 0755);
    ports.oracle_port = binary_mentions(opt.idp_bin, "--oracle");
    idp_modes = binary_mentions(opt.idp_bin, "--mode");
    if (strcmp(P->name, "authentik") != 0 && !idp_modes) {
        fprintf(stderr, "differential: %s has no --mode: preset %s skipped\n", opt.idp_bin,
                P->name);
        exit(77);
    }
    if (!ports.oracle_port)
        ports.oracle = ports.idp;
    atexit(stop_children);
    if (opt.app_port)
        app_start();
}

/* Starts the test IdP and authcached (again, for a new epoch: the same ports, fresh state). */
static void start_processes(void)
{
    char a_idp[32], a_ctl[32], a_orc[32], a_ac[32], a_adm[32], upstream[64], fresh[32], grace[32],
        shm[64];
    bool modes = idp_modes;
    snprintf(a_idp, sizeof a_idp, "127.0.0.1:%d", ports.idp);
    snprintf(a_ctl, sizeof a_ctl, "127.0.0.1:%d", ports.control);
    snprintf(a_orc, sizeof a_orc, "127.0.0.1:%d", ports.oracle);
    snprintf(a_ac, sizeof a_ac, "127.0.0.1:%d", ports.ac);
    snprintf(a_adm, sizeof a_adm, "127.0.0.1:%d", ports.admin);
    snprintf(upstream, sizeof upstream, "http://127.0.0.1:%d", ports.idp);
    snprintf(fresh, sizeof fresh, "%ldms", opt.fresh_ms);
    snprintf(grace, sizeof grace, "%ldms", opt.grace_ms);
    snprintf(shm, sizeof shm, "authcache-diff-%d", (int)getpid());

    char *idp_argv[48];
    int n = 0;
    idp_argv[n++] = (char *)opt.idp_bin;
    idp_argv[n++] = "--listen";
    idp_argv[n++] = a_idp;
    idp_argv[n++] = "--control";
    idp_argv[n++] = a_ctl;
    idp_argv[n++] = "--quiet";
    if (ports.oracle_port) {
        idp_argv[n++] = "--oracle";
        idp_argv[n++] = a_orc;
    }
    if (modes) {
        idp_argv[n++] = "--mode";
        idp_argv[n++] = (char *)P->name;
    }
    /* each IdP's decisions: a group-only application, skip routes, trusted addresses, rules on
     * path, method, network and subject */
    static char *const authentik_args[] = {"--app", "app1.test", "--app", "app2.test;allow=admins",
                                           "--app", "app3.test", NULL};
    static char *const oauth2_args[] = {"--set-xauthrequest",
                                        "--skip-jwt-bearer-tokens",
                                        "--cookie-refresh",
                                        "2",
                                        "--skip-auth-route",
                                        "GET=^/public/",
                                        "--trusted-ip",
                                        "10.9.0.0/16",
                                        NULL};
    static char *const authelia_args[] = {
        "--rule",
        "host=app1.test;path=^/public;policy=bypass",
        "--rule",
        "host=app1.test;methods=DELETE;policy=deny",
        "--rule",
        "host=app1.test;path=^/admin;networks=10.1.0.0/16;policy=one_factor",
        "--rule",
        "host=app1.test;path=^/admin;policy=deny",
        "--rule",
        "host=app1.test;path=\\?x=1;policy=deny",
        "--rule",
        "host=app2.test;subject=group:admins;policy=one_factor",
        "--rule",
        "host=app1.test;policy=one_factor",
        "--rule",
        "host=app3.test;policy=one_factor",
        "--default-policy",
        "deny",
        NULL};
    char *const *extra = !strcmp(P->name, "oauth2-proxy") ? oauth2_args
                         : !strcmp(P->name, "authelia")   ? authelia_args
                                                          : authentik_args;
    for (int k = 0; extra[k]; k++)
        idp_argv[n++] = extra[k];
    idp_argv[n] = NULL;
    spawn(idp_argv, "test-idp.log");
    wait_ready(ports.control, "/healthz", "the test IdP");

    char workers[] = "2";
    char *ac_argv[] = {(char *)opt.authcached_bin,
                       "--listen",
                       a_ac,
                       "--admin",
                       a_adm,
                       "--upstream",
                       upstream,
                       "--preset",
                       (char *)P->name,
                       "--fresh-ttl",
                       fresh,
                       "--outage-grace",
                       grace,
                       "--upstream-timeout",
                       "1s",
                       "--shm",
                       shm,
                       "--workers",
                       workers,
                       "--capacity",
                       "16384",
                       "--log-level",
                       "warn",
                       NULL};
    char ac_log[64];
    snprintf(ac_log, sizeof ac_log, "authcached-%s.log", P->name);
    spawn(ac_argv, ac_log);
    wait_ready(ports.admin, "/readyz", "authcached");
    snprintf(shm_path, sizeof shm_path, "/dev/shm/%s", shm);
}

/* A new epoch: the processes restarted, the driver's sessions forgotten. A long run thus never
 * fills the test IdP's tables, and each epoch starts from an empty cache. */
static void new_epoch(void)
{
    stop_children();
    for (int i = 0; i < nsessions; i++)
        for (int h = 0; h <= NHOSTS; h++) {
            free(sessions[i].ident[h]);
            free(sessions[i].echo[h]);
            sessions[i].ident[h] = sessions[i].echo[h] = NULL;
        }
    nsessions = 0;
    nrecent = 0;
    conn_close(&ac_conn);
    conn_close(&oracle_conn);
    for (int i = 0; i < MAX_PROXIES; i++) {
        conn_close(&px_conn[i][0]);
        conn_close(&px_conn[i][1]);
    }
    start_processes();
    fig.epochs++;
    note("event: new epoch (the IdP and authcached restarted)");
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    rng_state = opt.seed;
    printf("differential: preset %s, seed %" PRIu64 ", %ld requests, fresh-ttl %ld ms, outage "
           "grace %ld ms\n",
           P->name, opt.seed, opt.requests, opt.fresh_ms, opt.grace_ms);
    fflush(stdout);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    start_ms = now_ms();
    setup();
    start_processes();
    printf("differential: oracle %s\n", ports.oracle_port
                                            ? "the IdP's --oracle listener"
                                            : "the IdP's own listener (old test IdP: no --oracle)");
    fflush(stdout);
    for (int i = 0; i < MAX_PROXIES; i++)
        px_conn[i][0].fd = px_conn[i][1].fd = -1;
    ac_conn.port = ports.ac;
    oracle_conn.port = ports.oracle;

    static struct check c;
    long fault_left = 0, start = now_ms(), last_report = start, next_epoch = opt.epoch;
    for (long i = 0; fig.requests < opt.requests; i++) {
        if (fig.requests >= next_epoch && !fault_left) {
            new_epoch();
            next_epoch += opt.epoch;
        }
        maybe_event(i, &fault_left);
        if (opt.nproxies && !in_outage && below(100) < (unsigned)opt.proxy_share)
            run_proxied((int)below((unsigned)opt.nproxies), &c);
        else if (nrecent && chance(400)) {
            /* the same question again (a browser asks the same thing many times): hits */
            c = recent[below((unsigned)(nrecent < RECENT ? nrecent : RECENT))];
            run_check(&c);
        } else {
            make_check(&c);
            /* in an outage a sign-out purges what would be served stale: mostly another */
            for (int k = 0; k < 3 && in_outage && c.ac_signout && !chance(100); k++)
                make_check(&c);
            run_check(&c);
            if (!in_outage) /* in an outage, questions asked before it come again: stale */
                recent[nrecent++ % RECENT] = c;
        }
        if (opt.verbose && now_ms() - last_report > 10000) {
            last_report = now_ms();
            fprintf(stderr, "differential: %ld requests, %ld/s\n", fig.requests,
                    fig.requests * 1000 / (last_report - start + 1));
        }
    }
    if (fault_left)
        fault_end();
    long ms = now_ms() - start;
    printf("differential: preset=%s seed=%" PRIu64
           " requests=%ld proxied=%ld proxied_2xx=%ld 2xx=%ld "
           "non2xx=%ld "
           "hit=%ld stale=%ld miss=%ld revalidated=%ld bypass=%ld signout=%ld unavailable=%ld "
           "sessions=%ld revocations=%ld idp_signouts=%ld purges=%ld faults=%ld "
           "excused_revoked=%ld excused_outage=%ld epochs=%ld divergences=%ld seconds=%.1f "
           "rate=%ld/s\n",
           P->name, opt.seed, fig.requests, fig.proxied, fig.proxied2xx, fig.ac2xx, fig.acnon2xx,
           fig.hits, fig.stale, fig.misses, fig.revalidated, fig.bypass, fig.signout,
           fig.unavailable, fig.sessions, fig.revocations, fig.signouts_idp, fig.purges, fig.faults,
           fig.excused_revoked, fig.excused_outage, fig.epochs, fig.divergences, ms / 1000.0,
           fig.requests * 1000 / (ms + 1));
    stop_children();
    return fig.divergences ? 1 : 0;
}
