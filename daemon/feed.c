/*
 * feed.c — authentik's outpost event feed (feed.h; docs/daemon.md, "authentik event feed").
 *
 * The thread does what an authentik outpost does (internal/outpost/ak/api_event.go in authentik):
 * learn its outpost's uuid from GET /api/v3/outposts/instances/ with the outpost's token, open
 * the websocket /ws/outpost/<uuid>/?instance_uuid=<ours> with "Authorization: Bearer <token>",
 * say hello (instruction 1) at once and every FEED_HELLO_MS, which keeps the instance listed as
 * healthy; authentik acks each hello (instruction 0). On instruction 4 (session end, args
 * {"session_id": ...}) the credential digests of the answers whose X-authentik-jwt carries that
 * session's sid claim are looked up in the session index the workers fill (sids.h), and purged
 * with daemon_purge_soon: stamped at once (no longer served), published on the bus as credential
 * purges, removed by the purge thread. Only while the index is lossy (it dropped an entry, or the
 * segment adopted at start is not indexed yet) is the segment scanned as well. A second lookup
 * --upstream-timeout + 0.5 s later catches an answer that was on its way from the IdP during the
 * first. The adopted segment is indexed here, with one scan, once sids_adopt_at allows.
 *
 * Invariants:
 *  - The token is only ever written into request headers; never logged, never in an error.
 *  - Nothing received is trusted: frames are bounded (ws.h), messages strictly parsed (json.h).
 *  - One log line per change of the connection's state (same error again: not logged again).
 *  - Sockets are this thread's; feed_stop is heard within one poll (connects and reads poll the
 *    stop eventfd too); a TLS handshake or an HTTP exchange waits at most FEED_IO_MS.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "feed.h"
#include "tls.h"
#include "http.h"
#include "json.h"
#include "jwtexp.h"
#include "log.h"
#include "sids.h"
#include "ws.h"

#define FEED_BACKOFF_MIN_MS 500
#define FEED_BACKOFF_MAX_MS 30000
#define FEED_IO_MS 10000      /* connect, TLS, one HTTP exchange (authentik's dialer: 10 s) */
#define FEED_HELLO_MS 10000   /* authentik's OUTPOST_HELLO_INTERVAL */
#define FEED_SILENCE_MS 35000 /* nothing heard for this long (3 hellos unacked): reconnect */
#define FEED_API_MAX (1u << 20)
#define FEED_RX_MAX (WS_MAX_MESSAGE + 64 * 1024)
#define FEED_SCAN_MAX 4096 /* credential digests purged per session end */
#define FEED_RESCANS 1024  /* session ends waiting for their second lookup (a FIFO) */

_Static_assert(FEED_SID_MAX == JWTEXP_SID_MAX, "a sid the feed reads is one jwtexp reads");

struct rescan {
    int64_t at_ms; /* monotonic */
    char sid[FEED_SID_MAX];
};

struct feed {
    struct daemon *d;
    const struct config_upstream *u;
    pthread_t thread;
    int efd;
    int stop;
    int connected;
    uint64_t session_ends, reconnects, purged, fallback_scans;
    SSL_CTX *ctx;
    int fd;
    SSL *ssl;
    char outpost[128]; /* the outpost's uuid, once learnt */
    char instance[37];
    char last_err[160];
    uint8_t *rx;
    size_t rxlen;
    struct ws_msg msg;
    struct rescan rescans[FEED_RESCANS];
    unsigned rescan_head, rescan_n;
};

/* ---------------------------------------------------------------- decoding (pure, fuzzed) */

int feed__decode(const char *msg, size_t len, struct feed_event *ev)
{
    static const char *const k_instr[] = {"instruction"};
    static const char *const k_sid[] = {"args", "session_id"};
    static const char *const k_sub[] = {"args", "sub_type"};
    int64_t instr;
    char sub[16];
    int rc;

    memset(ev, 0, sizeof(*ev));
    if (json_check_object(msg, len) < 0 || json_get_int(msg, len, k_instr, 1, &instr) < 0 ||
        instr < 0 || instr > 1000)
        return -EINVAL;
    ev->instruction = (int)instr;
    /* 4: SESSION_END (authentik/outposts/consumer.py); 3 with sub_type "logout": the same in
     * authentik before 2024.8 (PROVIDER_SPECIFIC). */
    if (instr == 3 && !(json_get_string(msg, len, k_sub, 2, sub, sizeof(sub), NULL) == 0 &&
                        strcmp(sub, "logout") == 0))
        return 0;
    if (instr != 3 && instr != 4)
        return 0;
    rc = json_get_string(msg, len, k_sid, 2, ev->session_id, sizeof(ev->session_id), NULL);
    if (rc < 0 || !ev->session_id[0])
        return rc == -ENOENT || rc == 0 ? 0 : -EINVAL; /* nothing to end */
    ev->session_end = 1;
    return 0;
}

int feed__jwt_sid(const char *hdrs, size_t len, char sid[FEED_SID_MAX])
{
    const char *p = hdrs, *end = hdrs + len;
    size_t hl = strlen(SIDS_JWT_HEADER);
    int rc = -ENOENT;

    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *le = eol ? eol : end, *v, *ve = le;
        struct jwtexp_claims c;

        if ((size_t)(le - p) <= hl || strncasecmp(p, SIDS_JWT_HEADER, hl) != 0 || p[hl] != ':') {
            p = le + 1;
            continue;
        }
        v = p + hl + 1;
        while (ve > v && ve[-1] == '\r')
            ve--;
        /* The same reading as when the answer was stored (policy_identity): the first JWT that
         * names a session counts. */
        jwtexp_claims_from_header_value(v, (size_t)(ve - v), &c);
        if (c.sid_rc == 0) {
            memcpy(sid, c.sid, c.sid_len + 1);
            return (int)c.sid_len;
        }
        if (rc == -ENOENT)
            rc = c.sid_rc;
        p = le + 1;
    }
    return rc;
}

int feed__sid_matches(const char *sid, size_t sid_len, const char *session_id)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[SHA256_DIGEST_LENGTH];
    char h[2 * SHA256_DIGEST_LENGTH + 1];

    if (!sid_len)
        return 0;
    if (strlen(session_id) == sid_len && memcmp(sid, session_id, sid_len) == 0)
        return 1;
    SHA256((const unsigned char *)sid, sid_len, md);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        h[2 * i] = hex[md[i] >> 4];
        h[2 * i + 1] = hex[md[i] & 15];
    }
    h[sizeof(h) - 1] = 0;
    return strcmp(h, session_id) == 0;
}

/* ---------------------------------------------------------------- purging a session */

struct scan {
    const char *session_id;
    uint8_t (*creds)[SHM_CRED_LEN];
    unsigned n;
};

/* Add cred to s->creds unless it is there (or the bound is reached). */
static void add_cred(struct scan *s, const uint8_t cred[SHM_CRED_LEN])
{
    for (unsigned i = 0; i < s->n; i++)
        if (memcmp(s->creds[i], cred, SHM_CRED_LEN) == 0)
            return;
    if (s->n < FEED_SCAN_MAX)
        memcpy(s->creds[s->n++], cred, SHM_CRED_LEN);
}

static int scan_one(const struct shm_answer *a, void *arg)
{
    struct scan *s = arg;
    char sid[FEED_SID_MAX];
    int n = feed__jwt_sid(a->hdrs, a->hdrs_len, sid);

    if (n > 0 && feed__sid_matches(sid, (size_t)n, s->session_id))
        add_cred(s, a->key.cred);
    return 0;
}

/*
 * Purge the answers of session_id; returns how many credential digests were purged. The index
 * (sids.h) names them; while it may miss some (lossy: it dropped an entry, or the adopted segment
 * is not indexed yet) the segment is scanned as well, decoding every answer's X-authentik-jwt.
 */
static unsigned purge_session(struct feed *f, const char *session_id, const char *why)
{
    static uint8_t creds[FEED_SCAN_MAX][SHM_CRED_LEN]; /* this thread's only */
    struct scan s = {.session_id = session_id, .creds = creds};
    int64_t now = daemon_now_ms();
    int lossy = 1;

    if (f->d->sids)
        s.n = sids_lookup(f->d->sids, session_id, now, creds, FEED_SCAN_MAX, &lossy);
    if (lossy) {
        shm_foreach(&f->d->shm, now, scan_one, &s);
        __atomic_fetch_add(&f->fallback_scans, 1, __ATOMIC_RELAXED);
    }
    for (unsigned i = 0; i < s.n; i += PURGE_MAX_CREDS) {
        struct purge p = {.kind = PURGE_CREDS};

        p.ncred = s.n - i < PURGE_MAX_CREDS ? s.n - i : PURGE_MAX_CREDS;
        memcpy(p.cred, creds[i], p.ncred * (size_t)SHM_CRED_LEN);
        daemon_purge_soon(f->d, &p, 0, why);
    }
    __atomic_fetch_add(&f->purged, s.n, __ATOMIC_RELAXED);
    return s.n;
}

/* Index what an adopted segment holds (sids.h): one scan, once no other process stores into it. */
struct adopt {
    struct sids *sids;
    int64_t now;
    unsigned n;
};

static int adopt_one(const struct shm_answer *a, void *arg)
{
    struct adopt *ad = arg;
    char sid[FEED_SID_MAX];
    int n = feed__jwt_sid(a->hdrs, a->hdrs_len, sid);

    if (n > 0) {
        sids_insert(ad->sids, sids_key(sid, (size_t)n), a->key.cred, a->session_end_ms, ad->now);
        ad->n++;
    }
    return 0;
}

static void adopt_segment(struct feed *f, int64_t mono)
{
    struct adopt ad = {.sids = f->d->sids, .now = daemon_now_ms()};
    int64_t due = f->d->sids ? sids_adopt_due(f->d->sids) : 0;

    if (!due || due > mono)
        return;
    shm_foreach(&f->d->shm, ad.now, adopt_one, &ad);
    if (sids_adopted(f->d->sids, mono))
        log_info("feed_index", "indexed the %u answers of the adopted segment that name a session",
                 ad.n);
}

static void session_end(struct feed *f, const char *session_id)
{
    char id[LOG_DIGEST_HEX_SIZE];
    unsigned n = purge_session(f, session_id, "authentik session end");

    __atomic_fetch_add(&f->session_ends, 1, __ATOMIC_RELAXED);
    log_info("feed_session_end", "authentik ended session %s: %u credentials purged",
             log_digest_hex(session_id, strlen(session_id), id), n);
    if (f->rescan_n == FEED_RESCANS) { /* full: the oldest has its second lookup now, early */
        struct rescan *r = &f->rescans[f->rescan_head];

        purge_session(f, r->sid, "authentik session end (rescan, early)");
        f->rescan_head = (f->rescan_head + 1) % FEED_RESCANS;
        f->rescan_n--;
    }
    struct rescan *r = &f->rescans[(f->rescan_head + f->rescan_n++) % FEED_RESCANS];
    r->at_ms = daemon_mono_ms() + f->d->cfg->upstream_timeout_ms + FEED_BACKOFF_MIN_MS;
    memcpy(r->sid, session_id, strlen(session_id) + 1);
}

/* Run the rescans that are due; returns the next one's time (INT64_MAX: none). They are queued in
 * the order they fall due: all wait the same time. */
static int64_t rescans_run(struct feed *f, int64_t now)
{
    while (f->rescan_n) {
        struct rescan *r = &f->rescans[f->rescan_head];

        if (r->at_ms > now)
            return r->at_ms;
        purge_session(f, r->sid, "authentik session end (rescan)");
        f->rescan_head = (f->rescan_head + 1) % FEED_RESCANS;
        f->rescan_n--;
    }
    return INT64_MAX;
}

/* ---------------------------------------------------------------- the connection */

/* Log err once per change of the feed's state. */
static void feed_fail(struct feed *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void feed_fail(struct feed *f, const char *fmt, ...)
{
    char e[sizeof(f->last_err)];
    va_list ap;

    if (__atomic_load_n(&f->stop, __ATOMIC_RELAXED))
        return; /* what fails now fails because we are stopping */
    va_start(ap, fmt);
    vsnprintf(e, sizeof(e), fmt, ap);
    va_end(ap);
    if (strcmp(e, f->last_err) != 0) {
        log_warn("feed_down", "authentik event feed %s:%u: %s; retrying with back-off", f->u->host,
                 f->u->port, e);
        memcpy(f->last_err, e, sizeof(e));
    }
}

static void conn_close(struct feed *f)
{
    if (f->ssl) {
        SSL_free(f->ssl);
        f->ssl = NULL;
    }
    if (f->fd >= 0) {
        close(f->fd);
        f->fd = -1;
    }
    f->rxlen = 0;
    f->msg.active = 0;
}

/* Wait for fd (events) or the stop eventfd until deadline. 1 ready, 0 timed out, -1 stopping. */
static int wait_fd(struct feed *f, int events, int64_t deadline)
{
    for (;;) {
        struct pollfd p[2] = {{f->efd, POLLIN, 0}, {f->fd, (short)events, 0}};
        int64_t left = deadline - daemon_mono_ms();
        int rc;

        if (__atomic_load_n(&f->stop, __ATOMIC_RELAXED))
            return -1;
        if (left <= 0)
            return 0;
        rc = poll(p, f->fd >= 0 ? 2 : 1, left > 1000 ? 1000 : (int)left);
        if (rc < 0 && errno != EINTR)
            return -1;
        if (rc > 0 && p[0].revents)
            return -1;
        if (rc > 0 && p[1].revents)
            return 1;
    }
}

static int conn_open(struct feed *f)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    char port[8];
    int64_t deadline = daemon_mono_ms() + FEED_IO_MS;
    int rc, err = 0;

    snprintf(port, sizeof(port), "%u", f->u->port);
    if ((rc = getaddrinfo(f->u->host, port, &hints, &res)) != 0) {
        feed_fail(f, "cannot resolve: %s", gai_strerror(rc));
        return -1;
    }
    for (struct addrinfo *ai = res; ai && f->fd < 0; ai = ai->ai_next) {
        socklen_t el = sizeof(err);

        f->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (f->fd < 0)
            continue;
        if (connect(f->fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS)
            err = errno;
        else if (wait_fd(f, POLLOUT, deadline) <= 0)
            err = ETIMEDOUT;
        else if (getsockopt(f->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
            err = errno;
        if (err) {
            close(f->fd);
            f->fd = -1;
        }
    }
    freeaddrinfo(res);
    if (f->fd < 0) {
        feed_fail(f, "cannot connect: %s", strerror(err ? err : ECONNREFUSED));
        return -1;
    }
    if (!f->u->tls)
        return 0;
    f->ssl = SSL_new(f->ctx);
    if (!f->ssl || !SSL_set_fd(f->ssl, f->fd) || !SSL_set_tlsext_host_name(f->ssl, f->u->host) ||
        !SSL_set1_host(f->ssl, f->u->host)) {
        feed_fail(f, "TLS setup failed");
        return -1;
    }
    for (;;) {
        int r = SSL_connect(f->ssl), e;

        if (r == 1)
            return 0;
        e = SSL_get_error(f->ssl, r);
        if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) &&
            wait_fd(f, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline) > 0)
            continue;
        long v = SSL_get_verify_result(f->ssl);
        feed_fail(f, "TLS handshake failed: %s",
                  v != X509_V_OK ? X509_verify_cert_error_string(v)
                                 : ERR_reason_error_string(ERR_get_error())
                                       ?: "connection closed");
        return -1;
    }
}

/* Write all of buf before deadline. 0, or -1. */
static int conn_write(struct feed *f, const void *buf, size_t len, int64_t deadline)
{
    const char *p = buf;

    while (len) {
        ssize_t n;

        if (f->ssl) {
            int r = SSL_write(f->ssl, p, (int)len), e;
            if (r > 0) {
                n = r;
            } else {
                e = SSL_get_error(f->ssl, r);
                if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) &&
                    wait_fd(f, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline) > 0)
                    continue;
                return -1;
            }
        } else {
            n = send(f->fd, p, len, MSG_NOSIGNAL);
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                if (wait_fd(f, POLLOUT, deadline) > 0)
                    continue;
                return -1;
            }
            if (n < 0)
                return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Read what is there into f->rx (waiting until deadline for something). > 0 bytes, 0 the peer
 * closed, -1 error or timeout or stop, -2 buffer full. */
static long conn_read(struct feed *f, int64_t deadline)
{
    if (f->rxlen == FEED_RX_MAX)
        return -2;
    for (;;) {
        long n;

        if (f->ssl) {
            int r = SSL_read(f->ssl, f->rx + f->rxlen, (int)(FEED_RX_MAX - f->rxlen)), e;
            if (r > 0) {
                n = r;
            } else {
                e = SSL_get_error(f->ssl, r);
                if (e == SSL_ERROR_ZERO_RETURN)
                    return 0;
                if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) &&
                    wait_fd(f, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline) > 0)
                    continue;
                return -1;
            }
        } else {
            n = recv(f->fd, f->rx + f->rxlen, FEED_RX_MAX - f->rxlen, 0);
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                if (wait_fd(f, POLLIN, deadline) > 0)
                    continue;
                return -1;
            }
            if (n < 0)
                return -1;
            if (n == 0)
                return 0;
        }
        f->rxlen += (size_t)n;
        return n;
    }
}

/* Send an HTTP request, read the response head into f->rx; *head its length. 0 or -1. */
static int http_send_read(struct feed *f, const char *req, size_t len, struct http_resp *resp,
                          size_t *head)
{
    int64_t deadline = daemon_mono_ms() + FEED_IO_MS;
    int rc;

    if (conn_write(f, req, len, deadline) < 0) {
        feed_fail(f, "cannot send the request");
        return -1;
    }
    for (;;) {
        long n = conn_read(f, deadline);

        if (n <= 0) {
            feed_fail(f, n == 0 ? "connection closed before an answer" : "no answer in time");
            return -1;
        }
        rc = http_parse_response((const char *)f->rx, f->rxlen, 64 * 1024, resp);
        if (rc > 0) {
            *head = (size_t)rc;
            return 0;
        }
        if (rc != HTTP_PARTIAL) {
            feed_fail(f, "not an HTTP answer");
            return -1;
        }
    }
}

/* http_send_read of a request made by asprintf (len < 0: it failed), which carries the token:
 * wiped and freed here whatever happens. 0 or -1. */
static int http_exchange(struct feed *f, char *req, int len, struct http_resp *resp, size_t *head)
{
    int rc;

    if (len < 0)
        return -1;
    rc = http_send_read(f, req, (size_t)len, resp, head);
    OPENSSL_cleanse(req, (size_t)len);
    free(req);
    return rc;
}

static void status_fail(struct feed *f, int status, const char *what)
{
    if (status == 401 || status == 403)
        feed_fail(f,
                  "authentik refused the outpost token (HTTP %d on %s): check "
                  "--authentik-token-file",
                  status, what);
    else
        feed_fail(f, "HTTP %d on %s", status, what);
}

/* The outpost's uuid: what the token's outpost sees of /api/v3/outposts/instances/. 0 or -1. */
static int learn_outpost(struct feed *f)
{
    static const char *const k_pk[] = {"results", "#0", "pk"};
    struct http_hdr hdrs[64];
    struct http_resp resp = {.hdrs = hdrs, .hdrs_cap = 64};
    char *req;
    size_t head;
    int n, rc;
    int64_t deadline = daemon_mono_ms() + FEED_IO_MS;

    if (conn_open(f) < 0)
        return -1;
    /* HTTP/1.0: the body ends when the server closes, never chunked. */
    n = asprintf(&req,
                 "GET %s/api/v3/outposts/instances/ HTTP/1.0\r\nHost: %s\r\n"
                 "Authorization: Bearer %s\r\nAccept: application/json\r\n"
                 "User-Agent: authcache\r\n\r\n",
                 f->u->base_path, f->u->host_header, f->d->cfg->authentik_token);
    if (http_exchange(f, req, n, &resp, &head) < 0)
        return -1;
    if (resp.status != 200) {
        status_fail(f, resp.status, "/api/v3/outposts/instances/");
        return -1;
    }
    if (resp.content_length > FEED_API_MAX) {
        feed_fail(f, "the outposts API answer is too large");
        return -1;
    }
    /* To Content-Length when there is one (some servers close TLS without close_notify), else to
     * the close. */
    while (resp.content_length < 0 || f->rxlen - head < (uint64_t)resp.content_length) {
        long r = conn_read(f, deadline);
        if (r == 0 && resp.content_length < 0)
            break;
        if (r <= 0 || f->rxlen - head > FEED_API_MAX) {
            feed_fail(f, "the outposts API answer did not end in time");
            return -1;
        }
    }
    rc = json_get_string((const char *)f->rx + head,
                         resp.content_length >= 0 ? (size_t)resp.content_length : f->rxlen - head,
                         k_pk, 3, f->outpost, sizeof(f->outpost), NULL);
    if (rc < 0 || !f->outpost[0] || strspn(f->outpost, "0123456789abcdef-") != strlen(f->outpost)) {
        f->outpost[0] = 0;
        feed_fail(f, "the token's outpost was not found in /api/v3/outposts/instances/ (is it an "
                     "outpost's token?)");
        return -1;
    }
    return 0;
}

static int send_frame(struct feed *f, int op, const void *p, size_t len)
{
    uint8_t out[WS_HEADER_MAX + 512], mask[4];

    if (len > sizeof(out) - WS_HEADER_MAX || getrandom(mask, 4, 0) != 4)
        return -1;
    return conn_write(f, out, ws_frame_encode(out, op, 1, p, len, mask),
                      daemon_mono_ms() + FEED_IO_MS);
}

static int send_hello(struct feed *f)
{
    char host[64] = "", msg[256];
    int n;

    gethostname(host, sizeof(host) - 1);
    host[strcspn(host, "\"\\")] = 0;
    /* authentik's consumer reads hostname, version, buildHash... from args; an unknown key is
     * kept in the instance's state. No version: authentik would compare it with its own. */
    n = snprintf(msg, sizeof(msg),
                 "{\"instruction\":1,\"args\":{\"hostname\":\"%s\",\"uuid\":\"%s\","
                 "\"authcache\":true}}",
                 host, f->instance);
    return send_frame(f, WS_TEXT, msg, (size_t)n);
}

/* The websocket's opening handshake, then hello. 0 or -1. */
static int ws_open(struct feed *f)
{
    struct http_hdr hdrs[64];
    struct http_resp resp = {.hdrs = hdrs, .hdrs_cap = 64};
    const struct http_hdr *h;
    char key[WS_KEY_LEN + 1], accept[WS_ACCEPT_LEN + 1], *req;
    size_t head;
    int n;

    if (conn_open(f) < 0 || ws_key_new(key) < 0)
        return -1;
    n = asprintf(&req,
                 "GET %s/ws/outpost/%s/?instance_uuid=%s HTTP/1.1\r\nHost: %s\r\n"
                 "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                 "Sec-WebSocket-Version: 13\r\nAuthorization: Bearer %s\r\n"
                 "User-Agent: authcache\r\n\r\n",
                 f->u->base_path, f->outpost, f->instance, f->u->host_header, key,
                 f->d->cfg->authentik_token);
    if (http_exchange(f, req, n, &resp, &head) < 0)
        return -1;
    if (resp.status != 101) {
        if (resp.status == 404)
            f->outpost[0] = 0; /* the outpost is gone: learn it again */
        status_fail(f, resp.status, "/ws/outpost/");
        return -1;
    }
    ws_accept_for(key, strlen(key), accept);
    h = http_hdr_find(resp.hdrs, resp.nhdrs, "Sec-WebSocket-Accept");
    if (!h || h->value_len != WS_ACCEPT_LEN || memcmp(h->value, accept, WS_ACCEPT_LEN) != 0) {
        feed_fail(f, "the websocket handshake's Sec-WebSocket-Accept is wrong or missing");
        return -1;
    }
    h = http_hdr_find(resp.hdrs, resp.nhdrs, "Upgrade");
    if (!h || h->value_len != 9 || strncasecmp(h->value, "websocket", 9) != 0) {
        feed_fail(f, "the handshake's answer does not upgrade to websocket");
        return -1;
    }
    memmove(f->rx, f->rx + head, f->rxlen - head);
    f->rxlen -= head;
    if (send_hello(f) < 0) {
        feed_fail(f, "cannot send hello");
        return -1;
    }
    return 0;
}

/* Frames until the connection ends or stop. */
static void ws_run(struct feed *f)
{
    int64_t now = daemon_mono_ms(), next_hello = now + FEED_HELLO_MS, heard = now;

    for (;;) {
        struct ws_frame fr;
        long used;

        while ((used = ws_frame_parse(f->rx, f->rxlen, 0, &fr)) > 0) {
            heard = daemon_mono_ms();
            if (fr.op == WS_PING) {
                uint8_t pl[125];
                memcpy(pl, fr.payload, fr.len);
                if (send_frame(f, WS_PONG, pl, fr.len) < 0) {
                    feed_fail(f, "cannot answer a ping");
                    return;
                }
            } else if (fr.op == WS_CLOSE) {
                send_frame(f, WS_CLOSE, fr.payload, fr.len >= 2 ? 2 : 0);
                feed_fail(f, "authentik closed the feed (code %d)",
                          fr.len >= 2 ? fr.payload[0] << 8 | fr.payload[1] : 1005);
                return;
            } else if (fr.op != WS_PONG) {
                int rc = ws_msg_add(&f->msg, &fr);
                struct feed_event ev;

                if (rc < 0) {
                    feed_fail(f, "bad websocket framing: %s", strerror(-rc));
                    return;
                }
                if (rc == 1 && f->msg.op == WS_TEXT) {
                    if (feed__decode((const char *)f->msg.buf, f->msg.len, &ev) < 0)
                        log_debug("feed_bad_message", "a message that is not an instruction");
                    else if (ev.session_end)
                        session_end(f, ev.session_id);
                }
            }
            memmove(f->rx, f->rx + used, f->rxlen - (size_t)used);
            f->rxlen -= (size_t)used;
        }
        if (used < 0) {
            feed_fail(f, "bad websocket frame: %s", strerror((int)-used));
            return;
        }
        now = daemon_mono_ms();
        if (now >= next_hello) {
            if (send_hello(f) < 0) {
                feed_fail(f, "cannot send hello");
                return;
            }
            next_hello = now + FEED_HELLO_MS;
        }
        if (now - heard > FEED_SILENCE_MS) {
            feed_fail(f, "authentik has been silent for %d s", FEED_SILENCE_MS / 1000);
            return;
        }
        adopt_segment(f, now);
        int64_t until = rescans_run(f, now), due = f->d->sids ? sids_adopt_due(f->d->sids) : 0;
        if (until > next_hello)
            until = next_hello;
        if (due && until > due)
            until = due;
        if (!f->ssl || SSL_pending(f->ssl) == 0) {
            int w = wait_fd(f, POLLIN, until);

            if (w < 0)
                return;
            if (w == 0)
                continue;
        }
        long n = conn_read(f, daemon_mono_ms() + FEED_IO_MS);
        if (n <= 0) {
            feed_fail(f, n == -2 ? "a frame larger than the buffer" : "connection lost");
            return;
        }
    }
}

static void *feed_main(void *arg)
{
    struct feed *f = arg;
    int64_t backoff = FEED_BACKOFF_MIN_MS;

    while (!__atomic_load_n(&f->stop, __ATOMIC_RELAXED)) {
        int have_outpost = f->outpost[0] != 0;

        adopt_segment(f, daemon_mono_ms());
        if (!have_outpost) {
            have_outpost = learn_outpost(f) == 0;
            conn_close(f); /* HTTP/1.0: that connection is done */
        }
        if (have_outpost && ws_open(f) == 0) {
            __atomic_store_n(&f->connected, 1, __ATOMIC_RELAXED);
            log_info("feed_connected", "following authentik's event feed at %s:%u, outpost %s",
                     f->u->host, f->u->port, f->outpost);
            f->last_err[0] = 0;
            backoff = FEED_BACKOFF_MIN_MS;
            ws_run(f);
            __atomic_store_n(&f->connected, 0, __ATOMIC_RELAXED);
            if (!__atomic_load_n(&f->stop, __ATOMIC_RELAXED))
                __atomic_fetch_add(&f->reconnects, 1, __ATOMIC_RELAXED);
        }
        conn_close(f);
        if (__atomic_load_n(&f->stop, __ATOMIC_RELAXED))
            break;
        wait_fd(f, 0, daemon_mono_ms() + backoff);
        backoff = backoff * 2 > FEED_BACKOFF_MAX_MS ? FEED_BACKOFF_MAX_MS : backoff * 2;
    }
    conn_close(f);
    return NULL;
}

int feed_start(struct daemon *d, struct feed **out)
{
    struct feed *f = calloc(1, sizeof(*f));
    unsigned char r[16];
    int rc;

    *out = NULL;
    if (!f)
        return -ENOMEM;
    f->d = d;
    f->u = &d->cfg->authentik;
    f->fd = -1;
    f->rx = malloc(FEED_RX_MAX);
    f->msg.buf = malloc(WS_MAX_MESSAGE);
    f->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (!f->rx || !f->msg.buf || f->efd < 0 || getrandom(r, sizeof(r), 0) != sizeof(r)) {
        rc = -ENOMEM;
        goto fail;
    }
    r[6] = (r[6] & 0x0f) | 0x40; /* a version 4 uuid, as authentik's outposts use */
    r[8] = (r[8] & 0x3f) | 0x80;
    snprintf(f->instance, sizeof(f->instance),
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0], r[1],
             r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13], r[14],
             r[15]);
    if (f->u->tls) {
        char err[160];

        if (!(f->ctx = tls_client_ctx(NULL, err, sizeof(err)))) {
            rc = -ENOMEM;
            goto fail;
        }
    }
    if ((rc = pthread_create(&f->thread, NULL, feed_main, f)) != 0) {
        rc = -rc;
        goto fail;
    }
    *out = f;
    return 0;
fail:
    if (f->ctx)
        SSL_CTX_free(f->ctx);
    if (f->efd >= 0)
        close(f->efd);
    free(f->rx);
    free(f->msg.buf);
    free(f);
    return rc;
}

void feed_stop(struct feed *f)
{
    uint64_t one = 1;

    if (!f)
        return;
    __atomic_store_n(&f->stop, 1, __ATOMIC_RELAXED);
    if (write(f->efd, &one, sizeof(one)) < 0) {
        /* the flag alone is seen within a poll's second */
    }
    pthread_join(f->thread, NULL);
    if (f->ctx)
        SSL_CTX_free(f->ctx);
    close(f->efd);
    free(f->rx);
    free(f->msg.buf);
    free(f);
}

size_t feed_metrics_text(struct feed *f, char *out, size_t cap)
{
    int n;

    if (!f || !cap) {
        if (cap)
            out[0] = 0;
        return 0;
    }
    n = snprintf(
        out, cap,
        "# HELP authcache_feed_connected 1 while following authentik's event feed.\n"
        "# TYPE authcache_feed_connected gauge\nauthcache_feed_connected %d\n"
        "# HELP authcache_feed_session_ends_total Session ends received from authentik.\n"
        "# TYPE authcache_feed_session_ends_total counter\n"
        "authcache_feed_session_ends_total %llu\n"
        "# HELP authcache_feed_purged_total Credentials purged for ended sessions "
        "(each may hold several answers).\n"
        "# TYPE authcache_feed_purged_total counter\nauthcache_feed_purged_total %llu\n"
        "# HELP authcache_feed_fallback_scans_total Session ends that scanned the segment: "
        "the session index was lossy.\n"
        "# TYPE authcache_feed_fallback_scans_total counter\n"
        "authcache_feed_fallback_scans_total %llu\n"
        "# HELP authcache_feed_index_entries Slots of the session index in use (some may "
        "hold sessions that ended).\n"
        "# TYPE authcache_feed_index_entries gauge\nauthcache_feed_index_entries %llu\n"
        "# HELP authcache_feed_index_slots Slots of the session index.\n"
        "# TYPE authcache_feed_index_slots gauge\nauthcache_feed_index_slots %llu\n"
        "# HELP authcache_feed_index_dropped_total Live entries the full session index "
        "dropped (it is lossy until they end).\n"
        "# TYPE authcache_feed_index_dropped_total counter\n"
        "authcache_feed_index_dropped_total %llu\n"
        "# HELP authcache_feed_index_lossy 1 while session ends also scan the segment.\n"
        "# TYPE authcache_feed_index_lossy gauge\nauthcache_feed_index_lossy %d\n"
        "# HELP authcache_feed_reconnects_total Times the feed was lost after being up.\n"
        "# TYPE authcache_feed_reconnects_total counter\n"
        "authcache_feed_reconnects_total %llu\n",
        __atomic_load_n(&f->connected, __ATOMIC_RELAXED),
        (unsigned long long)__atomic_load_n(&f->session_ends, __ATOMIC_RELAXED),
        (unsigned long long)__atomic_load_n(&f->purged, __ATOMIC_RELAXED),
        (unsigned long long)__atomic_load_n(&f->fallback_scans, __ATOMIC_RELAXED),
        (unsigned long long)(f->d->sids ? sids_entries(f->d->sids) : 0),
        (unsigned long long)(f->d->sids ? sids_slots(f->d->sids) : 0),
        (unsigned long long)(f->d->sids ? sids_dropped(f->d->sids) : 0),
        f->d->sids ? sids_lossy(f->d->sids, daemon_now_ms()) : 1,
        (unsigned long long)__atomic_load_n(&f->reconnects, __ATOMIC_RELAXED));
    return n < 0 ? 0 : (size_t)n >= cap ? cap - 1 : (size_t)n;
}
