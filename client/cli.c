/*
 * cli.c — `authcache`, the operator's CLI (docs/contract.md): stats, get, dump and top (top.c) read
 * the segment directly through the client library; purge goes through the daemon's admin listener,
 * so every node's bus and logs see it. Never prints a credential: dump shows digests, get redacts
 * tokens.
 *
 * check attaches the segment read-only through shm/ itself and runs shm_check().
 *
 * Exit: 0 ok, 1 nothing found (get), the daemon refused (purge) or problems found (check), 2 bad
 * arguments, missing segment or unreachable admin listener — with one line on stderr saying what is
 * wrong.
 */
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "authcache.h"
#include "cli.h"
#include "shm.h"

static const char *usage_text =
    "usage: authcache [--shm NAME] [--admin HOST:PORT] [--admin-token-file FILE] COMMAND\n"
    "commands:\n"
    "  stats [--json]                          the segment's figures\n"
    "  get (--cookie VALUE | --authorization VALUE) --host HOST\n"
    "                                          the answer held for that credential and host\n"
    "  dump [--json]                           every answer: digest, user, host, ages\n"
    "  purge (--user NAME | --session VALUE | --all)   through the admin listener\n"
    "  top [--iterations N]                    live view each second: answers, IdP, bus,\n"
    "                                          connections, segment, busiest hosts\n"
    "  check                                   read-only consistency check of the segment:\n"
    "                                          exit 0 consistent, 1 problems. Nobody writing\n"
    "                                          (daemon stopped or killed): one pass decides, and\n"
    "                                          what a kill leaves is no problem (live counter\n"
    "                                          off, head past tail + ring by <= 64 records).\n"
    "                                          While a daemon writes, a pass can race a write:\n"
    "                                          problems count if 5 passes 100 ms apart find some.\n"
    "environment: AUTHCACHED_SHM, AUTHCACHED_ADMIN, AUTHCACHED_ADMIN_TOKEN_FILE\n";

void die(int code, const char *fmt, ...)
{
    va_list ap;

    fputs("authcache: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(code);
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "12s", "3m05s", "2h10m", "4d3h" */
const char *dur(int64_t ms, char *b, size_t n)
{
    int64_t s = (ms < 0 ? -ms : ms) / 1000;

    if (s < 60)
        snprintf(b, n, "%llds", (long long)s);
    else if (s < 3600)
        snprintf(b, n, "%lldm%02llds", (long long)s / 60, (long long)s % 60);
    else if (s < 86400)
        snprintf(b, n, "%lldh%02lldm", (long long)s / 3600, (long long)(s % 3600) / 60);
    else
        snprintf(b, n, "%lldd%lldh", (long long)s / 86400, (long long)(s % 86400) / 3600);
    return b;
}

/* Exits 2 with one line saying why the segment could not be opened (rc < 0), else returns. */
static void open_or_die(const char *name, int rc)
{
    if (rc == -ENOENT)
        die(2, "no segment /dev/shm/%s: is authcached running with --shm %s?", name, name);
    if (rc == -EPROTO)
        die(2, "/dev/shm/%s is not an authcache segment of this version", name);
    if (rc == -EINVAL)
        die(2, "--shm %s: not a segment name", name);
    if (rc == -ELOOP)
        die(2, "/dev/shm/%s is a symlink: refusing to read it", name);
    if (rc == -EBADF)
        die(2, "/dev/shm/%s is not a regular file: refusing to read it", name);
    if (rc == -EPERM)
        die(2, "/dev/shm/%s is owned by neither root nor uid %u: refusing to read it", name,
            (unsigned)geteuid());
    if (rc == -EACCES) {
        char path[300];
        struct stat st;
        snprintf(path, sizeof(path), "/dev/shm/%s", name);
        if (stat(path, &st) == 0 && !(st.st_mode & 022))
            die(2,
                "/dev/shm/%s is mode %04o, group %u: not readable by uid %u (the daemon's "
                "--shm-group gives one group read)",
                name, (unsigned)(st.st_mode & 07777), (unsigned)st.st_gid, (unsigned)geteuid());
        die(2, "/dev/shm/%s is writable by group or others: refusing to read it", name);
    }
    if (rc < 0)
        die(2, "cannot open /dev/shm/%s: %s", name, strerror(-rc));
}

static struct authcache *open_segment(const char *name)
{
    struct authcache *c;

    open_or_die(name, authcache_open(name, &c));
    return c;
}

/* JSON string body (no quotes) of s[0, n). */
static void json_str(FILE *f, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20 || ch == 0x7f)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
}

/* ---- stats ---- */

static void print_stats(const struct authcache_stats *s, const char *name, int json)
{
    if (json) {
        printf("{\"segment\":\"/dev/shm/%s\"", name);
#define X(field, key, prom, kind, help) printf(",\"" #key "\":%lld", (long long)s->key);
        SHM_STATS_FIGURES(X)
#undef X
        printf(",\"generation\":\"%016llx\",\"size_classes\":[", (unsigned long long)s->generation);
        for (int i = 0; i < 8; i++)
            printf("%s%llu", i ? "," : "", (unsigned long long)s->size_class[i]);
        printf("]}\n");
        return;
    }
    uint64_t l = s->hits + s->misses;
    printf("segment     /dev/shm/%s  %llu MiB  generation %016llx\n", name,
           (unsigned long long)(s->segment_bytes >> 20), (unsigned long long)s->generation);
    printf("entries     %lld of %llu\n", (long long)s->entries, (unsigned long long)s->capacity);
    printf("lookups     %llu  hits %llu (%.1f%%)  misses %llu\n", (unsigned long long)s->lookups,
           (unsigned long long)s->hits, l ? 100.0 * (double)s->hits / (double)l : 0.0,
           (unsigned long long)s->misses);
    printf("writes      inserts %llu  replaces %llu  promotions %llu\n",
           (unsigned long long)s->inserts, (unsigned long long)s->replaces,
           (unsigned long long)s->promotions);
    printf("removals    evictions %llu  purges %llu  expired %llu\n",
           (unsigned long long)s->evictions, (unsigned long long)s->purges,
           (unsigned long long)s->expired);
    printf("log         %llu of %llu MiB in use  reader retries %llu\n",
           (unsigned long long)(s->ring_used >> 20), (unsigned long long)(s->ring_bytes >> 20),
           (unsigned long long)s->retries);
    printf("sizes       <=256B %llu  512B %llu  1K %llu  2K %llu  4K %llu  8K %llu  16K %llu  more "
           "%llu\n",
           (unsigned long long)s->size_class[0], (unsigned long long)s->size_class[1],
           (unsigned long long)s->size_class[2], (unsigned long long)s->size_class[3],
           (unsigned long long)s->size_class[4], (unsigned long long)s->size_class[5],
           (unsigned long long)s->size_class[6], (unsigned long long)s->size_class[7]);
}

/* ---- get ---- */

/* A header value that grants access by itself: shown by length only. */
static int secret_value(const char *name, size_t nlen, const char *v, size_t vlen)
{
    int dots = 0;

    if (nlen == 13 && strncasecmp(name, "Authorization", 13) == 0)
        return 1;
    for (size_t i = 0; i < vlen; i++)
        dots += v[i] == '.';
    return dots >= 2 && vlen > 40 && !memchr(v, ' ', vlen);
}

static void print_headers(const char *h, size_t len)
{
    const char *p = h, *end = h + len;

    while (p < end) {
        const char *eol = memchr(p, '\r', (size_t)(end - p));
        const char *colon;
        if (!eol)
            eol = end;
        colon = memchr(p, ':', (size_t)(eol - p));
        if (colon) {
            const char *v = colon + 1;
            while (v < eol && *v == ' ')
                v++;
            if (secret_value(p, (size_t)(colon - p), v, (size_t)(eol - v)))
                printf("  %.*s: <redacted, %zu bytes>\n", (int)(colon - p), p, (size_t)(eol - v));
            else
                printf("  %.*s\n", (int)(eol - p), p);
        }
        p = eol + 2;
    }
}

static int cmd_get(struct authcache *c, const char *cookie, const char *authz, const char *host)
{
    struct authcache_answer a;
    int64_t now = now_ms();
    char b1[32], b2[32], b3[32];

    if (authcache_find(c, cookie, cookie ? strlen(cookie) : 0, authz, authz ? strlen(authz) : 0,
                       host, strlen(host), &a) != 0) {
        fprintf(stderr, "authcache: no answer held for that credential on %s\n", host);
        return 1;
    }
    printf("user        %.*s\n", (int)a.user_len, a.user);
    printf("host        %.*s\n", (int)a.host_len, a.host);
    if (now < a.fresh_until_ms)
        printf("freshness   fresh for %s more (confirmed %s ago)\n",
               dur(a.fresh_until_ms - now, b1, 32), dur(now - a.confirmed_ms, b2, 32));
    else
        printf(
            "freshness   stale: revalidated with the IdP on the next request (confirmed %s ago)\n",
            dur(now - a.confirmed_ms, b2, 32));
    printf("session     ends in %s (first seen %s ago)\n", dur(a.session_end_ms - now, b3, 32),
           dur(now - a.first_seen_ms, b1, 32));
    printf("headers\n");
    print_headers(a.headers, a.headers_len);
    return 0;
}

/* ---- dump ---- */

static int dump_fn(const struct authcache_answer *a, void *arg)
{
    int json = *(int *)arg;
    int64_t now = now_ms();
    char b1[32], b2[32], b3[32], b4[32];

    if (json) {
        printf("{\"digest\":\"%02x%02x%02x%02x%02x%02x\",\"user\":\"", a->digest[0], a->digest[1],
               a->digest[2], a->digest[3], a->digest[4], a->digest[5]);
        json_str(stdout, a->user, a->user_len);
        printf("\",\"host\":\"");
        json_str(stdout, a->host, a->host_len);
        printf("\",\"first_seen_ms\":%lld,\"confirmed_ms\":%lld,\"fresh_until_ms\":%lld,"
               "\"session_end_ms\":%lld,\"fresh\":%s,\"headers_bytes\":%zu}\n",
               (long long)a->first_seen_ms, (long long)a->confirmed_ms,
               (long long)a->fresh_until_ms, (long long)a->session_end_ms,
               now < a->fresh_until_ms ? "true" : "false", a->headers_len);
    } else {
        printf("%02x%02x%02x%02x%02x%02x  %-20.*s %-28.*s age %-7s confirmed %-7s %s %-7s session "
               "%s\n",
               a->digest[0], a->digest[1], a->digest[2], a->digest[3], a->digest[4], a->digest[5],
               (int)a->user_len, a->user, (int)a->host_len, a->host,
               dur(now - a->first_seen_ms, b1, 32), dur(now - a->confirmed_ms, b2, 32),
               now < a->fresh_until_ms ? "fresh" : "stale", dur(a->fresh_until_ms - now, b3, 32),
               dur(a->session_end_ms - now, b4, 32));
    }
    return 0;
}

/* ---- purge, through the admin listener ---- */

static void pct(char *out, size_t cap, const char *s)
{
    size_t n = 0;

    for (; *s && n + 4 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.' || ch == '~')
            out[n++] = (char)ch;
        else
            n += (size_t)snprintf(out + n, cap - n, "%%%02X", ch);
    }
    out[n] = 0;
}

/* A socket connected to the admin listener at admin ("HOST:PORT", "[V6]:PORT"), or -errno
 * (-ENOENT: the host does not resolve). A malformed address exits 2. With timeout_ms > 0 the
 * connect, and each send and receive on the socket after it, give up after about that long. */
static int admin_dial(const char *admin, int timeout_ms)
{
    char host[256], *colon;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res, *ai;
    int fd = -1, err = ECONNREFUSED;

    snprintf(host, sizeof(host), "%s", admin);
    colon = strrchr(host, ':');
    if (!colon || colon == host || !colon[1])
        die(2, "--admin %s: expected HOST:PORT", admin);
    *colon = 0;
    char *h = host;
    if (h[0] == '[' && colon[-1] == ']') {
        h++;
        colon[-1] = 0;
    }
    if (getaddrinfo(h, colon + 1, &hints, &res) != 0)
        return -ENOENT;
    for (ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = errno;
            continue;
        }
        if (timeout_ms > 0) {
            struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
            /* Linux applies SO_SNDTIMEO to connect() too. */
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
            err = errno == EINPROGRESS ? ETIMEDOUT : errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd < 0 ? -err : fd;
}

const char *admin_strerror(int rc)
{
    return rc == -ENOENT ? "cannot resolve" : rc == -EPROTO ? "no HTTP answer" : strerror(-rc);
}

/* The bearer token of --admin-token-file into token ("" without one); exits 2 if unreadable. */
void read_token(const char *token_file, char *token, size_t cap)
{
    token[0] = 0;
    if (!token_file)
        return;
    FILE *f = fopen(token_file, "r");
    if (!f || !fgets(token, (int)cap, f))
        die(2, "--admin-token-file %s: cannot read it", token_file);
    fclose(f);
    token[strcspn(token, "\r\n")] = 0;
}

/* One request to the admin listener: METHOD TARGET with the bearer token (if any), the whole
 * answer read into resp (NUL-terminated). Returns the HTTP status with *body set, or -errno: the
 * listener cannot be reached or stopped answering, -EPROTO no HTTP answer, -EMSGSIZE an answer of
 * cap bytes or more. timeout_ms as in admin_dial. */
int admin_request(const char *admin, const char *token, const char *method, const char *target,
                  int timeout_ms, char *resp, size_t cap, char **body)
{
    char req[10240];
    size_t len = 0;
    ssize_t n = 0;
    int fd, status = 0;
    int rl = snprintf(req, sizeof(req),
                      "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\n%s%s%s"
                      "Connection: close\r\n\r\n",
                      method, target, admin, token[0] ? "Authorization: Bearer " : "", token,
                      token[0] ? "\r\n" : "");

    if (rl < 0 || (size_t)rl >= sizeof(req))
        return -E2BIG;
    if ((fd = admin_dial(admin, timeout_ms)) < 0)
        return fd;
    if (send(fd, req, (size_t)rl, MSG_NOSIGNAL) != rl) {
        int err = errno ? errno : EIO;
        close(fd);
        return -err;
    }
    while (len < cap - 1 && (n = read(fd, resp + len, cap - 1 - len)) > 0)
        len += (size_t)n;
    if (n < 0) {
        int err = errno == EAGAIN ? ETIMEDOUT : errno;
        close(fd);
        return -err;
    }
    if (len == cap - 1 && read(fd, req, 1) > 0) {
        close(fd);
        return -EMSGSIZE;
    }
    close(fd);
    resp[len] = 0;
    if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1)
        return -EPROTO;
    *body = strstr(resp, "\r\n\r\n");
    *body = *body ? *body + 4 : resp + len;
    return status;
}

static int cmd_purge(const char *admin, const char *token_file, const char *user,
                     const char *session, int all)
{
    char q[8192], target[8300], resp[4096], token[1100], *body = resp;
    int status;

    read_token(token_file, token, sizeof(token));
    if (user) {
        char e[8000];
        pct(e, sizeof(e), user);
        snprintf(q, sizeof(q), "user=%s", e);
    } else if (session) {
        char e[8000];
        pct(e, sizeof(e), session);
        snprintf(q, sizeof(q), "session=%s", e);
    } else if (all) {
        snprintf(q, sizeof(q), "all=1");
    }
    snprintf(target, sizeof(target), "/v1/purge?%s", q);
    status = admin_request(admin, token, "POST", target, 0, resp, sizeof(resp), &body);
    if (status == -EPROTO)
        die(2, "no HTTP answer from the admin listener at %s", admin);
    if (status < 0)
        die(2, "cannot reach the admin listener at %s: %s", admin, admin_strerror(status));
    if (status != 200) {
        fprintf(stderr, "authcache: purge refused (%d): %s", status, body);
        return 1;
    }
    fputs(body, stdout);
    return 0;
}

/* ---- check ---- */

#define CHECK_PASSES 5
#define CHECK_PAUSE_MS 100

static int cmd_check(const char *name)
{
    struct shm h;
    struct shm_check_report r;
    int pass, active = 0, bad;

    open_or_die(name, shm_attach(&h, name, 0));
    /* A pass that saw head or tail move may have raced a write: only a problem every pass finds
     * counts while the segment is in use. */
    for (pass = 1;; pass++) {
        uint64_t h0 = __atomic_load_n(&h.hdr->head, __ATOMIC_ACQUIRE);
        uint64_t t0 = __atomic_load_n(&h.hdr->tail, __ATOMIC_ACQUIRE);
        bad = shm_check(&h, 0, &r) != 0;
        int moved = __atomic_load_n(&h.hdr->head, __ATOMIC_ACQUIRE) != h0 ||
                    __atomic_load_n(&h.hdr->tail, __ATOMIC_ACQUIRE) != t0;
        active |= moved;
        if (!bad || !moved || pass == CHECK_PASSES)
            break;
        struct timespec ts = {0, CHECK_PAUSE_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
    printf("check /dev/shm/%s: %s entries=%llu slots=%llu dead=%llu bad=%llu overwritten=%llu "
           "records=%llu "
           "live_counter=%lld head_overrun=%llu passes=%d writers=%s first_problem=",
           name, bad ? "PROBLEMS" : "consistent", (unsigned long long)r.slots_live,
           (unsigned long long)r.slots_used, (unsigned long long)r.slots_dead,
           (unsigned long long)r.slots_bad, (unsigned long long)r.slots_overwritten,
           (unsigned long long)r.records_walked, (long long)r.live_counter,
           (unsigned long long)r.head_overrun, pass, active ? "active" : "idle");
    if (bad && r.first_problem[0])
        printf("\"%s\"\n", r.first_problem);
    else
        printf("none\n");
    shm_detach(&h);
    return bad ? 1 : 0;
}

/* ---- arguments ---- */

static const char *need(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc)
        die(2, "%s needs a value", argv[*i]);
    return argv[++*i];
}

int main(int argc, char **argv)
{
    const char *shm = getenv("AUTHCACHED_SHM"), *admin = getenv("AUTHCACHED_ADMIN");
    const char *token_file = getenv("AUTHCACHED_ADMIN_TOKEN_FILE");
    const char *cmd = NULL, *cookie = NULL, *authz = NULL, *host = NULL, *user = NULL,
               *session = NULL;
    int json = 0, all = 0, i;
    long iterations = 0;

    if (!shm)
        shm = "authcache";
    if (!admin)
        admin = "127.0.0.1:9301";
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage_text, stdout);
            return 0;
        } else if (!strcmp(a, "--shm")) {
            shm = need(argc, argv, &i);
        } else if (!strcmp(a, "--admin")) {
            admin = need(argc, argv, &i);
        } else if (!strcmp(a, "--admin-token-file")) {
            token_file = need(argc, argv, &i);
        } else if (!cmd && a[0] != '-') {
            cmd = a;
        } else if (cmd && !strcmp(a, "--json")) {
            json = 1;
        } else if (cmd && !strcmp(a, "--cookie")) {
            cookie = need(argc, argv, &i);
        } else if (cmd && !strcmp(a, "--authorization")) {
            authz = need(argc, argv, &i);
        } else if (cmd && !strcmp(a, "--host")) {
            host = need(argc, argv, &i);
        } else if (cmd && !strcmp(a, "--user")) {
            user = need(argc, argv, &i);
        } else if (cmd && !strcmp(a, "--session")) {
            session = need(argc, argv, &i);
        } else if (cmd && !strcmp(a, "--all")) {
            all = 1;
        } else if (cmd && !strcmp(a, "--iterations")) {
            char *end;
            iterations = strtol(need(argc, argv, &i), &end, 10);
            if (*end || iterations < 1)
                die(2, "--iterations: expected a positive number");
        } else {
            die(2, "unknown argument %s (see authcache --help)", a);
        }
    }
    if (!cmd)
        die(2, "no command given (stats, get, dump, purge, top, check; see authcache --help)");

    if (!strcmp(cmd, "purge")) {
        if ((user != NULL) + (session != NULL) + all != 1)
            die(2, "purge needs exactly one of --user NAME, --session VALUE, --all");
        if ((user && !*user) || (session && !*session))
            die(2, "purge: an empty value purges nothing");
        return cmd_purge(admin, token_file, user, session, all);
    }
    if (!strcmp(cmd, "check")) {
        if (json || cookie || authz || host || user || session || all || iterations)
            die(2, "check takes no options");
        return cmd_check(shm);
    }
    if (strcmp(cmd, "stats") && strcmp(cmd, "get") && strcmp(cmd, "dump") && strcmp(cmd, "top"))
        die(2, "unknown command %s (stats, get, dump, purge, top, check)", cmd);
    if (!strcmp(cmd, "get") && (!host || (cookie != NULL) == (authz != NULL)))
        die(2, "get needs --host HOST and one of --cookie VALUE, --authorization VALUE");

    struct authcache *c = open_segment(shm);
    int rc = 0;
    if (!strcmp(cmd, "stats")) {
        struct authcache_stats s;
        authcache_stats(c, &s);
        print_stats(&s, shm, json);
    } else if (!strcmp(cmd, "get")) {
        rc = cmd_get(c, cookie, authz, host);
    } else if (!strcmp(cmd, "dump")) {
        authcache_foreach(c, dump_fn, &json);
    } else {
        rc = cmd_top(c, shm, admin, token_file, iterations);
    }
    authcache_close(c);
    return rc;
}
