/*
 * bus.c — purges shared across nodes over a Redis stream (docs/contract.md, --bus; docs/daemon.md,
 * "Bus").
 *
 * A purge on this node (daemon_purge: admin API, sign-out, authentik's logout marker) is encoded
 * at once on the calling thread, a worker, and put in a bounded queue; the bus thread appends it to
 * the stream with XADD ... MAXLEN ~ --bus-maxlen, so the stream keeps about that many purges for
 * nodes that were away. The same thread reads the stream over a second connection with XREAD BLOCK
 * from the last id it read, and applies what other nodes wrote with daemon_purge_received, which
 * never publishes: no purge travels twice. This file is the client thread alone: the message and
 * Redis's stream replies are read by bus_msg.c, the Redis protocol by resp.c.
 *
 * Invariants:
 *  - A worker never waits on the network: bus_publish takes the queue's mutex for a copy and writes
 *    the eventfd that wakes the thread. Everything else (DNS, connect, TLS, send, receive) is this
 *    thread's, on non-blocking sockets polled together with the eventfd, so bus_stop is heard
 *    within one poll (except inside getaddrinfo, which bus_stop waits out for a bounded time).
 *  - The queue holds sequence numbers head <= next <= tail, tail - head <= BUS_QUEUE_MAX:
 *    [head, next) were sent on the current connection and await Redis's reply, [next, tail) wait
 *    to be sent. A purge leaves the queue when Redis acknowledges its XADD; after a reconnect
 *    every unacknowledged one is sent again (at least once: purges are idempotent). When full, a
 *    new purge pushes out the oldest, counted as dropped.
 *  - Reading: b->pos is the last id read (and its ordinal in the stream), kept across reconnects
 *    for the life of the process. Each connection first asks XINFO STREAM and bus_sync decides
 *    from it whether entries after pos were lost (trimmed past the retention, the stream deleted
 *    or recreated): such a gap purges everything held here (daemon_purge_received of PURGE_ALL:
 *    from that moment no answer confirmed before it is served, fresh or stale, until the IdP
 *    confirms it again) and is counted. A reply too big or malformed to read is a gap too: the
 *    next connection starts at the stream's end. The position read is also marked in the segment
 *    (shm_bus_mark): a daemon that adopts the segment (a restart, a handover) reads on from there,
 *    BUS_REPLAY_MS before, so nothing published while no daemon read for the segment is lost; a
 *    new segment (empty) starts at the stream's end.
 *  - This node's own entries come back on its reading connection: they move pos on and are not
 *    applied (bus_msg_decode knows the node id).
 *  - Messages carry no credential: user names, keyed digests (useless without the hash key), "all".
 *    Nothing received is trusted: every field is bounded and checked (bus_msg_decode,
 *    bus_xread_entries, resp_parse), a bad message is counted and never applied, and its log lines
 *    are rate-limited per kind (log_limit): a flood cannot flood the log.
 *  - With --bus-auth-file, each connection's first command is AUTH, and nothing else is sent on it
 *    until Redis answered +OK. A refusal (WRONGPASS, an AUTH without a configured password, ...)
 *    fails the connection like any other cause: the node serves on, unconnected, and retries
 *    with back-off. The password lives in the configuration and, briefly, in the command buffer,
 *    wiped after sending; it is never logged (Redis's error lines do not repeat it).
 *  - rediss://: TLS on both connections (OpenSSL on the non-blocking socket, as feed.c does),
 *    the certificate verified against --bus-ca-file or the system's store, and the host name.
 *  - Logs: one line per change of the connection's state or, while down, of its cause; never one
 *    per retry.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "bus_msg.h"
#include "log.h"
#include "resp.h"
#include "tls.h"

#define BUS_BACKOFF_MIN_MS 100
#define BUS_BACKOFF_MAX_MS 5000
#define BUS_IO_TIMEOUT_MS 2000 /* to connect, to send a command, to have a command answered */
#define BUS_BLOCK_MS 5000      /* XREAD BLOCK: Redis answers nil after this long without entries */
#define BUS_READ_COUNT 128     /* entries per XREAD */
#define BUS_READ_ITEMS 4096    /* reply items per XREAD: 4 + 5 per entry of one field, and room */
#define BUS_WINDOW 64          /* commands sent and not yet answered on the writing connection */
#define BUS_RX_MAX (1u << 20)  /* the largest XREAD reply */
#define BUS_RX_BULK_MAX (BUS_RX_MAX - 1024)
#define BUS_WR_RX 65536          /* replies to XADD (ids) and XINFO STREAM */
#define BUS_WR_ITEMS 64          /* XINFO STREAM's reply: 20 fields, two entries of a few fields */
#define BUS_SEQ_XINFO UINT64_MAX /* in the window: XINFO STREAM, not an XADD */
#define BUS_CHECK_MS 1000        /* XINFO STREAM while up: a reader too slow for the retention */
#define BUS_AUTH_RX 1024         /* the reply to AUTH: +OK or an error line */
#define BUS_LOG_PER_SEC 5        /* lines of one kind about bad messages or drops, per second */
#define BUS_REPLAY_MS 5000       /* an adopted segment: read again this much before its mark */

/* What Redis may send: XREAD's entries nest 5 deep, XINFO's 3; ids, +OK or errors otherwise. */
static const struct resp_limits rd_limits = {.max_bulk = BUS_RX_BULK_MAX, .max_depth = 5};
static const struct resp_limits wr_limits = {.max_bulk = 4096, .max_depth = 4};
static const struct resp_limits auth_limits = {.max_bulk = 64, .max_depth = 0};

/* ---------------------------------------------------------------- the client */

struct bus_slot {
    uint32_t len;
    char msg[BUS_MSG_MAX];
};

enum bus_state { BUS_STARTING, BUS_UP, BUS_DOWN };

/* One connection to Redis: a non-blocking socket, with TLS over it for rediss://. */
struct bus_conn {
    int fd; /* -1 when closed */
    SSL *ssl;
};

struct bus {
    struct daemon *d;
    const struct config_bus *cfg;
    size_t slen;                      /* strlen(cfg->channel): the stream's key */
    uint64_t maxlen;                  /* --bus-maxlen */
    SSL_CTX *tls;                     /* rediss:// */
    char where[CONFIG_HOST_MAX + 16]; /* host:port, for logs */
    uint64_t node;
    uint8_t key_id[SHM_CRED_LEN];
    int evfd; /* wakes the thread: a purge queued, or stop */
    pthread_t thread;
    int stop;              /* set once by bus_stop */
    int64_t stop_deadline; /* monotonic ms: the flush ends then */

    pthread_mutex_t mu; /* the queue */
    struct bus_slot *q; /* BUS_QUEUE_MAX slots, seq % BUS_QUEUE_MAX */
    uint64_t head, next, tail;
    struct log_limit drop_log;

    /* The thread's alone. */
    struct bus_conn rd, wr; /* XREAD; XINFO STREAM and XADD */
    enum bus_state state;
    char *rx; /* the reading connection's unparsed bytes */
    size_t rx_len;
    struct resp_item *items;   /* BUS_READ_ITEMS */
    struct bus_entry *entries; /* BUS_READ_COUNT */
    int reading;               /* an XREAD awaits its reply ... */
    int64_t read_by;           /* ... until then (monotonic ms) */
    char wrx[BUS_WR_RX];
    size_t wrx_len;
    uint64_t win[BUS_WINDOW]; /* seqs of the commands awaiting a reply, oldest at win_first */
    unsigned win_first, win_n;
    int xinfo_pending;  /* an XINFO STREAM is in the window */
    int64_t check_at;   /* monotonic ms: the next one */
    struct bus_pos pos; /* the last entry read, kept across reconnects */
    int resync;         /* a reply could not be read: the next connection is a gap */
    int replay;         /* pos is an adopted segment's mark: read from BUS_REPLAY_MS before it */
    struct log_limit bad_log, mismatch_log;
    char down_cause[512]; /* the cause last logged while down: a new one is logged once */
    int auth_refused;     /* the last connection failed because Redis refused AUTH */

    /* Figures, read by the admin thread (relaxed atomics). */
    int connected;
    uint64_t published, received, applied, bad, key_mismatch, dropped, gaps;
    uint64_t behind, lag_ms; /* at the last XINFO STREAM (bus_stats) */
};

#define INC(x) __atomic_add_fetch(&(x), 1, __ATOMIC_RELAXED)

/* Purges in the queue not yet acknowledged by Redis (workers append under the mutex). */
static uint64_t queued_count(struct bus *b)
{
    uint64_t n;

    pthread_mutex_lock(&b->mu);
    n = b->tail - b->head;
    pthread_mutex_unlock(&b->mu);
    return n;
}

/* Give up what the thread is doing: stop asked and, if connected, the flush's time is over. */
static int cancelled(struct bus *b)
{
    if (!__atomic_load_n(&b->stop, __ATOMIC_ACQUIRE))
        return 0;
    return b->state != BUS_UP ||
           daemon_mono_ms() >= __atomic_load_n(&b->stop_deadline, __ATOMIC_RELAXED);
}

static void drain_evfd(struct bus *b)
{
    uint64_t v;

    if (read(b->evfd, &v, sizeof(v)) < 0) {
        /* EAGAIN: already drained */
    }
}

/* Wait until fd has events (1), deadline passes (0) or the wait is cancelled (-ECANCELED). fd may
 * be -1 to just sleep. */
static int wait_fd(struct bus *b, int fd, short events, int64_t deadline)
{
    for (;;) {
        struct pollfd pfd[2] = {{.fd = b->evfd, .events = POLLIN}, {.fd = fd, .events = events}};
        int64_t left = deadline - daemon_mono_ms();
        int n;

        if (cancelled(b))
            return -ECANCELED;
        if (left <= 0)
            return 0;
        n = poll(pfd, fd >= 0 ? 2 : 1, (int)left);
        if (n < 0 && errno != EINTR)
            return -errno;
        if (n > 0 && pfd[0].revents)
            drain_evfd(b);
        if (n > 0 && fd >= 0 && pfd[1].revents)
            return 1;
    }
}

static void conn_close(struct bus_conn *c)
{
    if (c->ssl)
        SSL_free(c->ssl);
    c->ssl = NULL;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

/* OpenSSL's verdict on a failed handshake or transfer, for a cause. */
static void tls_cause(SSL *ssl, const char *what, char *cause, size_t cl)
{
    long v = SSL_get_verify_result(ssl);
    unsigned long e = ERR_get_error();

    if (v != X509_V_OK)
        snprintf(cause, cl, "%s: certificate: %s", what, X509_verify_cert_error_string(v));
    else
        snprintf(cause, cl, "%s: %s", what, e ? ERR_reason_error_string(e) : "connection lost");
    ERR_clear_error();
}

/* The TLS handshake on a connected socket, within BUS_IO_TIMEOUT_MS. 0, or -1 with the cause. */
static int tls_start(struct bus *b, struct bus_conn *c, char *cause, size_t cl)
{
    int64_t deadline = daemon_mono_ms() + BUS_IO_TIMEOUT_MS;

    ERR_clear_error();
    if (!(c->ssl = SSL_new(b->tls)) || !SSL_set_fd(c->ssl, c->fd) ||
        !SSL_set_tlsext_host_name(c->ssl, b->cfg->host) || !SSL_set1_host(c->ssl, b->cfg->host)) {
        snprintf(cause, cl, "TLS setup failed");
        return -1;
    }
    for (;;) {
        int r = SSL_connect(c->ssl), e, w;

        if (r == 1)
            return 0;
        e = SSL_get_error(c->ssl, r);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            tls_cause(c->ssl, "TLS handshake", cause, cl);
            return -1;
        }
        if ((w = wait_fd(b, c->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline)) <= 0) {
            snprintf(cause, cl, "TLS handshake: %s", w == 0 ? "timed out" : strerror(-w));
            return -1;
        }
    }
}

/* A connection to Redis (TLS set up for rediss://), or -1 with the cause. */
static int dial(struct bus *b, struct bus_conn *c, char *cause, size_t cl)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV},
                    *res, *ai;
    char port[8];
    int fd = -1, rc, one = 1, idle = 15, intvl = 5, cnt = 3;

    snprintf(port, sizeof(port), "%u", b->cfg->port);
    if ((rc = getaddrinfo(b->cfg->host, port, &hints, &res)) != 0) {
        snprintf(cause, cl, "resolve %s: %s", b->cfg->host, gai_strerror(rc));
        return -1;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        int err = 0;
        socklen_t el = sizeof(err);

        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            snprintf(cause, cl, "socket: %s", strerror(errno));
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS)
            err = errno;
        else if ((rc = wait_fd(b, fd, POLLOUT, daemon_mono_ms() + BUS_IO_TIMEOUT_MS)) <= 0)
            err = rc == 0 ? ETIMEDOUT : -rc;
        else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
            err = errno;
        if (err == 0)
            break;
        snprintf(cause, cl, "connect: %s", strerror(err));
        close(fd);
        fd = -1;
        if (err == ECANCELED)
            break;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return -1;
    /* Redis may vanish without a FIN (a host gone): keepalive notices within about 30 s. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    c->fd = fd;
    c->ssl = NULL;
    if (b->tls && tls_start(b, c, cause, cl) < 0)
        return -1;
    return 0;
}

/* All of buf on c within BUS_IO_TIMEOUT_MS. 0, or -1 with the cause. */
static int send_all(struct bus *b, struct bus_conn *c, const char *buf, size_t len, char *cause,
                    size_t cl)
{
    int64_t deadline = daemon_mono_ms() + BUS_IO_TIMEOUT_MS;

    while (len > 0) {
        short want = POLLOUT;
        ssize_t n;
        int rc;

        if (c->ssl) {
            int r = SSL_write(c->ssl, buf, (int)len), e;

            if (r > 0) {
                buf += r;
                len -= (size_t)r;
                continue;
            }
            e = SSL_get_error(c->ssl, r);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                tls_cause(c->ssl, "TLS write", cause, cl);
                return -1;
            }
            want = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
        } else {
            n = send(c->fd, buf, len, MSG_NOSIGNAL);
            if (n > 0) {
                buf += n;
                len -= (size_t)n;
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && errno != EAGAIN) {
                snprintf(cause, cl, "send: %s", strerror(errno));
                return -1;
            }
        }
        if ((rc = wait_fd(b, c->fd, want, deadline)) <= 0) {
            snprintf(cause, cl, "send: %s", rc == 0 ? "timed out" : strerror(-rc));
            return -1;
        }
    }
    return 0;
}

/* Append what c has to buf[*len, cap). 1 if something came, 0 if nothing yet (or no room), -1
 * with the cause if the connection is over. */
static int conn_fill(struct bus_conn *c, char *buf, size_t *len, size_t cap, char *cause, size_t cl)
{
    ssize_t n;

    if (*len == cap)
        return 0;
    if (c->ssl) {
        int r = SSL_read(c->ssl, buf + *len, (int)(cap - *len)), e;

        if (r > 0) {
            *len += (size_t)r;
            return 1;
        }
        e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            return 0;
        if (e == SSL_ERROR_ZERO_RETURN)
            snprintf(cause, cl, "redis closed the connection");
        else
            tls_cause(c->ssl, "TLS read", cause, cl);
        return -1;
    }
    n = recv(c->fd, buf + *len, cap - *len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    if (n <= 0) {
        snprintf(cause, cl, "%s", n == 0 ? "redis closed the connection" : strerror(errno));
        return -1;
    }
    *len += (size_t)n;
    return 1;
}

/* A Redis error line, printable ASCII and cut short, into t. */
static void error_text(char t[81], const struct resp_item *it)
{
    size_t n = it->len < 80 ? it->len : 80;

    for (size_t i = 0; i < n; i++)
        t[i] = it->p[i] >= 0x20 && it->p[i] < 0x7f ? it->p[i] : '?';
    t[n] = '\0';
}

/* A Redis error line as a cause. */
static void redis_error(char *cause, size_t cl, const char *what, const struct resp_item *it)
{
    char t[81];

    error_text(t, it);
    snprintf(cause, cl, "redis answered %s with an error: %s", what, t);
}

static void note_up(struct bus *b)
{
    uint64_t queued;
    char at[BUS_ID_MAX];

    __atomic_store_n(&b->connected, 1, __ATOMIC_RELAXED);
    b->down_cause[0] = '\0';
    if (b->state == BUS_UP)
        return;
    queued = queued_count(b);
    bus_id_format(&b->pos.last, at);
    log_info("bus_connected",
             "connected to redis %s%s, stream \"%s\", node id %016llx, reading after %s; %llu "
             "purges queued meanwhile go out now",
             b->where, b->tls ? " (TLS)" : "", b->cfg->channel, (unsigned long long)b->node, at,
             (unsigned long long)queued);
    b->state = BUS_UP;
}

static void note_down(struct bus *b, const char *cause)
{
    __atomic_store_n(&b->connected, 0, __ATOMIC_RELAXED);
    if (b->auth_refused && strcmp(cause, b->down_cause) != 0)
        log_warn("bus_auth_refused",
                 "cannot use redis %s: %s (check --bus-auth-file against redis's requirepass or "
                 "ACL user); purges are queued (at most %d); retrying",
                 b->where, cause, BUS_QUEUE_MAX);
    else if (b->state == BUS_UP)
        log_warn("bus_disconnected",
                 "lost redis %s (%s); purges made meanwhile are queued (at most "
                 "%d) and sent on reconnect, and what the others sent is read then; retrying",
                 b->where, cause, BUS_QUEUE_MAX);
    else if (b->state == BUS_STARTING || strcmp(cause, b->down_cause) != 0)
        log_warn("bus_unreachable",
                 "cannot use redis %s (%s); purges are queued (at most %d) "
                 "and sent once it answers; retrying",
                 b->where, cause, BUS_QUEUE_MAX);
    else
        log_debug("bus_retry", "redis %s: %s", b->where, cause);
    snprintf(b->down_cause, sizeof(b->down_cause), "%s", cause);
    b->state = BUS_DOWN;
}

/*
 * AUTH on a fresh connection, when the configuration has a password: send it and wait up to
 * BUS_IO_TIMEOUT_MS for +OK. 0 (also without a password), or -1 with the cause; a refusal by
 * Redis also sets b->auth_refused.
 */
static int bus_auth(struct bus *b, struct bus_conn *c, char *cause, size_t cl)
{
    const struct config_bus *cf = b->cfg;
    char cmd[2 * CONFIG_BUS_AUTH_MAX + 64], rx[BUS_AUTH_RX];
    const char *argv[3] = {"AUTH", cf->auth_user, cf->auth_pass};
    size_t lens[3] = {4, cf->auth_user_len, cf->auth_pass_len}, len = 0, ni;
    int64_t deadline = daemon_mono_ms() + BUS_IO_TIMEOUT_MS;
    struct resp_item r[1];
    int n, rc;

    if (cf->auth_pass_len == 0)
        return 0;
    if (cf->auth_user_len == 0) { /* requirepass: AUTH password */
        argv[1] = cf->auth_pass;
        lens[1] = cf->auth_pass_len;
    }
    n = resp_command(cmd, sizeof(cmd), cf->auth_user_len ? 3 : 2, argv, lens);
    rc = n < 0 ? -1 : send_all(b, c, cmd, (size_t)n, cause, cl);
    OPENSSL_cleanse(cmd, sizeof(cmd));
    if (n < 0)
        snprintf(cause, cl, "AUTH too long");
    if (rc < 0)
        return -1;
    for (;;) {
        ssize_t got;

        if ((rc = conn_fill(c, rx, &len, sizeof(rx), cause, cl)) < 0)
            return -1;
        if (rc == 0) {
            if ((rc = wait_fd(b, c->fd, POLLIN, deadline)) <= 0) {
                snprintf(cause, cl, "no answer to AUTH: %s", rc == 0 ? "timed out" : strerror(-rc));
                return -1;
            }
            continue;
        }
        got = resp_parse(rx, len, &auth_limits, r, 1, &ni);
        if (got == 0 && len < sizeof(rx))
            continue;
        if (got <= 0 || (size_t)got != len) {
            snprintf(cause, cl, "unexpected reply to AUTH");
            return -1;
        }
        if (r[0].type == RESP_ERROR) {
            char t[81];

            error_text(t, &r[0]);
            snprintf(cause, cl, "redis refused AUTH: %s", t);
            b->auth_refused = 1;
            return -1;
        }
        if (r[0].type != RESP_SIMPLE || r[0].len != 2 || memcmp(r[0].p, "OK", 2) != 0) {
            snprintf(cause, cl, "unexpected reply to AUTH");
            return -1;
        }
        return 0;
    }
}

/* Ask XINFO STREAM on the writing connection (at most one in the window). 0, or -1 with the
 * cause. */
static int send_xinfo(struct bus *b, char *cause, size_t cl)
{
    char cmd[64 + CONFIG_CHANNEL_MAX];
    const char *argv[3] = {"XINFO", "STREAM", b->cfg->channel};
    size_t lens[3] = {5, 6, b->slen};
    int n;

    if (b->xinfo_pending || b->win_n == BUS_WINDOW)
        return 0;
    if ((n = resp_command(cmd, sizeof(cmd), 3, argv, lens)) < 0) {
        snprintf(cause, cl, "stream name too long");
        return -1;
    }
    b->win[(b->win_first + b->win_n) % BUS_WINDOW] = BUS_SEQ_XINFO;
    b->win_n++;
    b->xinfo_pending = 1;
    b->check_at = daemon_mono_ms() + BUS_CHECK_MS;
    return send_all(b, &b->wr, cmd, (size_t)n, cause, cl);
}

/* Open both connections and ask XINFO STREAM on the writing one. 0, or -1 with the cause. */
static int bus_connect(struct bus *b, char *cause, size_t cl)
{
    b->auth_refused = 0;
    if (dial(b, &b->rd, cause, cl) < 0 || bus_auth(b, &b->rd, cause, cl) < 0 ||
        dial(b, &b->wr, cause, cl) < 0 || bus_auth(b, &b->wr, cause, cl) < 0)
        return -1;
    b->rx_len = b->wrx_len = 0;
    b->win_first = b->win_n = 0;
    b->reading = b->xinfo_pending = 0;
    pthread_mutex_lock(&b->mu);
    b->next = b->head; /* what the last connection left unacknowledged goes again */
    pthread_mutex_unlock(&b->mu);
    return send_xinfo(b, cause, cl);
}

static void bus_close(struct bus *b)
{
    conn_close(&b->rd);
    conn_close(&b->wr);
}

/* Log a bad message, at most BUS_LOG_PER_SEC lines of its kind a second. */
static void log_bad(struct log_limit *lim, const char *event, const char *what, size_t len)
{
    if (log_limit_pass(lim, event))
        log_warn(event, "%s (%zu bytes); not applied", what, len);
}

/* A message from the stream. */
static void on_message(struct bus *b, const char *p, size_t len)
{
    struct bus_msg m;
    const char *why = "not a purge message";
    char desc[160];
    int rc = p ? bus_msg_decode(p, len, b->node, &m, &why) : -EPROTO;

    if (rc == BUS_MSG_OWN)
        return;
    INC(b->received);
    if (rc < 0) {
        INC(b->bad);
        snprintf(desc, sizeof(desc), "bad message on the bus: %s", why);
        log_bad(&b->bad_log, "bus_bad_message", desc, len);
        return;
    }
    if (m.p.kind == PURGE_CREDS && memcmp(m.key_id, b->key_id, SHM_CRED_LEN) != 0) {
        INC(b->key_mismatch);
        snprintf(desc, sizeof(desc),
                 "session purge from node %016llx made with another hash key "
                 "(give every node the same --hash-key-file)",
                 (unsigned long long)m.node);
        log_bad(&b->mismatch_log, "bus_key_mismatch", desc, len);
        return;
    }
    snprintf(desc, sizeof(desc), "via bus from node %016llx", (unsigned long long)m.node);
    daemon_purge_received(b->d, &m.p, desc); /* the walk on the purge thread: this one reads on */
    INC(b->applied);
}

/* Entries after the last one read may be lost: purge everything held, as an "all" from the bus
 * would (stamped now: nothing confirmed before is served, not even stale). */
static void on_gap(struct bus *b, const char *what)
{
    struct purge p = {.kind = PURGE_ALL};
    char at[BUS_ID_MAX];

    INC(b->gaps);
    bus_id_format(&b->pos.last, at);
    log_warn("bus_gap",
             "purges may have been missed (%s); every answer held is purged and asks the IdP "
             "again; reading after %s now",
             what, at);
    daemon_purge_received(b->d, &p, "via bus: a gap in the stream");
}

/* Ask for the entries after b->pos. 0, or -1 with the cause. */
static int send_xread(struct bus *b, char *cause, size_t cl)
{
    char cmd[128 + CONFIG_CHANNEL_MAX], count[8], block[16], id[BUS_ID_MAX];
    const char *argv[7] = {"XREAD", "COUNT", count, "BLOCK", block, "STREAMS", b->cfg->channel};
    const char *argv8[8];
    size_t lens[8];
    int n;

    snprintf(count, sizeof(count), "%d", BUS_READ_COUNT);
    snprintf(block, sizeof(block), "%d", BUS_BLOCK_MS);
    bus_id_format(&b->pos.last, id);
    memcpy(argv8, argv, sizeof(argv));
    argv8[7] = id;
    for (int i = 0; i < 8; i++)
        lens[i] = i == 6 ? b->slen : strlen(argv8[i]);
    if ((n = resp_command(cmd, sizeof(cmd), 8, argv8, lens)) < 0) {
        snprintf(cause, cl, "stream name too long");
        return -1;
    }
    b->reading = 1;
    b->read_by = daemon_mono_ms() + BUS_BLOCK_MS + BUS_IO_TIMEOUT_MS;
    return send_all(b, &b->rd, cmd, (size_t)n, cause, cl);
}

/* One XREAD reply: apply its entries in order and ask for more. 0, or -1 with the cause. */
static int on_xread(struct bus *b, const struct resp_item *r, size_t ni, char *cause, size_t cl)
{
    int k;

    b->reading = 0;
    if (r[0].type == RESP_ERROR) {
        redis_error(cause, cl, "XREAD", &r[0]);
        return -1;
    }
    k = bus_xread_entries(r, ni, b->cfg->channel, b->slen, b->entries, BUS_READ_COUNT);
    if (k < 0) {
        b->resync = 1;
        snprintf(cause, cl, "unexpected reply to XREAD");
        return -1;
    }
    for (int i = 0; i < k; i++) {
        if (bus_id_cmp(&b->entries[i].id, &b->pos.last) <= 0)
            continue; /* read already */
        b->pos.last = b->entries[i].id;
        b->pos.ord++;
        on_message(b, b->entries[i].msg, b->entries[i].len);
    }
    if (k > 0)
        shm_bus_mark(&b->d->shm, b->pos.last.ms);
    return send_xread(b, cause, cl);
}

/* Read what came on the reading connection. 0, or -1 with the cause. */
static int read_rd(struct bus *b, char *cause, size_t cl)
{
    for (;;) {
        int got = conn_fill(&b->rd, b->rx, &b->rx_len, BUS_RX_MAX, cause, cl);
        size_t off = 0, ni;
        ssize_t n;

        if (got < 0)
            return -1;
        while ((n = resp_parse(b->rx + off, b->rx_len - off, &rd_limits, b->items, BUS_READ_ITEMS,
                               &ni)) > 0) {
            off += (size_t)n;
            if (!b->reading) {
                snprintf(cause, cl, "a reply from redis to no command");
                return -1;
            }
            if (on_xread(b, b->items, ni, cause, cl) < 0)
                return -1;
        }
        if (n < 0 || (off == 0 && b->rx_len == BUS_RX_MAX)) {
            b->resync = 1; /* the same reply would come again: start after it, as after a gap */
            snprintf(cause, cl, "%s from redis on the reading connection",
                     n == -EPROTO ? "garbled reply" : "a reply over 1 MiB or 4096 items");
            return -1;
        }
        memmove(b->rx, b->rx + off, b->rx_len - off);
        b->rx_len -= off;
        if (got == 0)
            return 0;
    }
}

/* XINFO STREAM's answer: where to read from and whether entries were lost to this node (a gap:
 * purge). The first on a connection starts the reading; later ones (every BUS_CHECK_MS) catch a
 * reader that fell behind by more than the stream keeps while connected. */
static int on_xinfo(struct bus *b, const struct resp_item *r, size_t ni, int *up, char *cause,
                    size_t cl)
{
    struct bus_xinfo x;
    int gap, had = b->pos.known;

    b->xinfo_pending = 0;
    if (r[0].type == RESP_ERROR && r[0].len >= 11 && memcmp(r[0].p, "ERR no such", 11) == 0) {
        gap = bus_sync(&b->pos, NULL);
    } else if (r[0].type == RESP_ERROR) {
        redis_error(cause, cl, "XINFO STREAM", &r[0]);
        return -1;
    } else if (bus_xinfo_parse(r, ni, &x) < 0) {
        snprintf(cause, cl, "unexpected reply to XINFO STREAM");
        return -1;
    } else {
        if (b->resync)
            b->pos.known = 0; /* to the end; the gap is below */
        gap = bus_sync(&b->pos, &x);
        /* How far behind the stream this node reads (what the XREAD in flight brings included) */
        uint64_t behind, lag_ms;
        bus_lag(&b->pos, &x, &behind, &lag_ms);
        __atomic_store_n(&b->behind, behind, __ATOMIC_RELAXED);
        __atomic_store_n(&b->lag_ms, lag_ms, __ATOMIC_RELAXED);
    }
    if (b->replay && !gap && !b->resync)
        b->pos.last.ms = b->pos.last.ms > BUS_REPLAY_MS ? b->pos.last.ms - BUS_REPLAY_MS : 0;
    b->replay = 0;
    shm_bus_mark(&b->d->shm, b->pos.last.ms); /* at the end, or where it was */
    if (b->resync)
        on_gap(b, "a reply from redis this node could not read");
    else if (gap)
        on_gap(b, had ? "the stream no longer holds the entries after the last one read here "
                        "(trimmed past --bus-maxlen, or redis lost them)"
                      : "the stream was reset");
    b->resync = 0;
    if (*up)
        return 0; /* the XREAD in flight reads on; what it brings from before pos is skipped */
    *up = 1;
    note_up(b);
    return send_xread(b, cause, cl);
}

/* Read the replies on the writing connection: each answers the oldest command in the window; an
 * XADD's answer (the entry's id) acknowledges its purge. 0, or -1 with the cause. */
static int read_wr(struct bus *b, int *up, char *cause, size_t cl)
{
    struct resp_item r[BUS_WR_ITEMS];

    for (;;) {
        int got = conn_fill(&b->wr, b->wrx, &b->wrx_len, sizeof(b->wrx), cause, cl);
        size_t off = 0, ni;
        ssize_t n;

        if (got < 0)
            return -1;
        while ((n = resp_parse(b->wrx + off, b->wrx_len - off, &wr_limits, r, BUS_WR_ITEMS, &ni)) >
               0) {
            uint64_t seq;

            off += (size_t)n;
            if (b->win_n == 0) {
                snprintf(cause, cl, "a reply from redis to no command");
                return -1;
            }
            seq = b->win[b->win_first];
            b->win_first = (b->win_first + 1) % BUS_WINDOW;
            b->win_n--;
            if (seq == BUS_SEQ_XINFO) {
                if (on_xinfo(b, r, ni, up, cause, cl) < 0)
                    return -1;
                continue;
            }
            if (r[0].type == RESP_ERROR) {
                redis_error(cause, cl, "XADD", &r[0]);
                return -1;
            }
            if (r[0].type != RESP_BULK) {
                snprintf(cause, cl, "unexpected reply to XADD");
                return -1;
            }
            pthread_mutex_lock(&b->mu);
            if (seq >= b->head) /* else dropped meanwhile */
                b->head = seq + 1;
            pthread_mutex_unlock(&b->mu);
            INC(b->published);
        }
        if (n < 0 || (off == 0 && b->wrx_len == sizeof(b->wrx))) {
            snprintf(cause, cl, "garbled reply on the writing connection");
            return -1;
        }
        memmove(b->wrx, b->wrx + off, b->wrx_len - off);
        b->wrx_len -= off;
        if (got == 0)
            return 0;
    }
}

/* XADD what waits, up to BUS_WINDOW commands in flight. 0, or -1 with the cause. */
static int send_queued(struct bus *b, char *cause, size_t cl)
{
    char cmd[BUS_MSG_MAX + CONFIG_CHANNEL_MAX + 128], maxlen[24];
    struct bus_slot s;

    snprintf(maxlen, sizeof(maxlen), "%llu", (unsigned long long)b->maxlen);
    while (b->win_n < BUS_WINDOW) {
        const char *argv[7] = {"XADD", b->cfg->channel, "MAXLEN", "~", maxlen, "*", BUS_MSG_FIELD};
        const char *argv8[8];
        size_t lens[8];
        uint64_t seq;
        int n;

        pthread_mutex_lock(&b->mu);
        if (b->next == b->tail) {
            pthread_mutex_unlock(&b->mu);
            return 0;
        }
        seq = b->next++;
        s.len = b->q[seq % BUS_QUEUE_MAX].len;
        memcpy(s.msg, b->q[seq % BUS_QUEUE_MAX].msg, s.len);
        pthread_mutex_unlock(&b->mu);
        memcpy(argv8, argv, sizeof(argv));
        argv8[7] = s.msg;
        for (int i = 0; i < 7; i++)
            lens[i] = i == 1 ? b->slen : strlen(argv8[i]);
        lens[7] = s.len;
        n = resp_command(cmd, sizeof(cmd), 8, argv8, lens);
        if (n < 0) {
            snprintf(cause, cl, "XADD too long");
            return -1;
        }
        b->win[(b->win_first + b->win_n) % BUS_WINDOW] = seq;
        b->win_n++;
        if (send_all(b, &b->wr, cmd, (size_t)n, cause, cl) < 0)
            return -1;
    }
    return 0;
}

/* Serve the two connections until one fails (cause set) or the stop's flush is over. Returns 1 if
 * XINFO STREAM was answered (the connection was up), else 0. */
static int bus_serve(struct bus *b, char *cause, size_t cl)
{
    int64_t confirm_by = daemon_mono_ms() + BUS_IO_TIMEOUT_MS;
    int up = 0;

    for (;;) {
        struct pollfd pfd[3] = {{.fd = b->evfd, .events = POLLIN},
                                {.fd = b->rd.fd, .events = POLLIN},
                                {.fd = b->wr.fd, .events = POLLIN}};
        int64_t now = daemon_mono_ms(), timeout = 1000;
        int n;

        if (__atomic_load_n(&b->stop, __ATOMIC_ACQUIRE)) {
            int64_t end = __atomic_load_n(&b->stop_deadline, __ATOMIC_RELAXED);
            uint64_t left = queued_count(b);
            if (!up || left == 0 || now >= end)
                return up;
            timeout = end - now;
        }
        if (!up) {
            if (now >= confirm_by) {
                snprintf(cause, cl, "no answer to XINFO STREAM");
                return 0;
            }
            if (confirm_by - now < timeout)
                timeout = confirm_by - now;
        } else {
            if (b->reading && now >= b->read_by) {
                snprintf(cause, cl, "no answer to XREAD");
                return up;
            }
            if (send_queued(b, cause, cl) < 0)
                return up;
            if (now >= b->check_at && send_xinfo(b, cause, cl) < 0)
                return up;
            if (b->check_at - now < timeout)
                timeout = b->check_at - now;
            if (b->reading && b->read_by - now < timeout)
                timeout = b->read_by - now;
        }
        n = poll(pfd, 3, (int)(timeout > 0 ? timeout : 0));
        if (n < 0 && errno != EINTR) {
            snprintf(cause, cl, "poll: %s", strerror(errno));
            return up;
        }
        if (n <= 0)
            continue;
        if (pfd[0].revents)
            drain_evfd(b);
        if (pfd[2].revents && read_wr(b, &up, cause, cl) < 0)
            return up;
        if (pfd[1].revents && read_rd(b, cause, cl) < 0)
            return up;
    }
}

static void *bus_main(void *arg)
{
    struct bus *b = arg;
    int64_t backoff = BUS_BACKOFF_MIN_MS;
    char cause[512];
    uint64_t left;

    while (!__atomic_load_n(&b->stop, __ATOMIC_ACQUIRE)) {
        int was_up = 0;

        snprintf(cause, sizeof(cause), "stopped");
        if (bus_connect(b, cause, sizeof(cause)) == 0)
            was_up = bus_serve(b, cause, sizeof(cause));
        bus_close(b);
        if (was_up)
            backoff = BUS_BACKOFF_MIN_MS;
        if (__atomic_load_n(&b->stop, __ATOMIC_ACQUIRE))
            break;
        note_down(b, cause);
        wait_fd(b, -1, 0, daemon_mono_ms() + backoff);
        backoff = backoff * 2 > BUS_BACKOFF_MAX_MS ? BUS_BACKOFF_MAX_MS : backoff * 2;
    }
    __atomic_store_n(&b->connected, 0, __ATOMIC_RELAXED);
    left = queued_count(b);
    if (left)
        log_warn("bus_unsent",
                 "%llu purges not confirmed by redis %s at stop: the other nodes "
                 "may not have them",
                 (unsigned long long)left, b->where);
    return NULL;
}

static void bus_free(struct bus *b)
{
    if (!b)
        return;
    if (b->tls)
        SSL_CTX_free(b->tls);
    free(b->q);
    free(b->rx);
    free(b->items);
    free(b->entries);
    free(b);
}

int bus_start(struct daemon *d, struct bus **out, char *err, size_t errlen)
{
    struct bus *b = calloc(1, sizeof(*b));
    static const struct log_limit lim = LOG_LIMIT_INIT(BUS_LOG_PER_SEC);
    uint64_t mark;
    int rc;

    *out = NULL;
    snprintf(err, errlen, "out of memory");
    if (!b || !(b->q = calloc(BUS_QUEUE_MAX, sizeof(*b->q))) || !(b->rx = malloc(BUS_RX_MAX)) ||
        !(b->items = calloc(BUS_READ_ITEMS, sizeof(*b->items))) ||
        !(b->entries = calloc(BUS_READ_COUNT, sizeof(*b->entries)))) {
        rc = -ENOMEM;
        goto fail;
    }
    b->d = d;
    b->cfg = &d->cfg->bus;
    b->slen = strlen(b->cfg->channel);
    b->maxlen = d->cfg->bus_maxlen;
    b->rd.fd = b->wr.fd = -1;
    b->drop_log = b->bad_log = b->mismatch_log = lim;
    snprintf(b->where, sizeof(b->where), strchr(b->cfg->host, ':') ? "[%s]:%u" : "%s:%u",
             b->cfg->host, b->cfg->port);
    if (b->cfg->tls && !(b->tls = tls_client_ctx(d->cfg->bus_ca_file, err, errlen))) {
        rc = -EINVAL;
        goto fail;
    }
    bus_msg_key_id(&d->shm, b->key_id);
    /* A segment a daemon applied bus purges to before: read on from its mark (a little before: a
     * purge of the last moments may have been stamped but not walked when that daemon died), not
     * from the end, which would lose what was published while no daemon read for it. */
    if ((mark = shm_bus_mark_get(&d->shm)) > 0) {
        b->pos.known = b->replay = 1;
        b->pos.last.ms = mark; /* the gap check's; the reading starts before, see on_xinfo */
    }
    /* The node id only tells a node its own messages apart: random, never 0. */
    while (b->node == 0) {
        if (getrandom(&b->node, sizeof(b->node), 0) != (ssize_t)sizeof(b->node)) {
            rc = -EIO;
            snprintf(err, errlen, "getrandom failed");
            goto fail;
        }
    }
    if ((b->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
        rc = -errno;
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        goto fail;
    }
    pthread_mutex_init(&b->mu, NULL);
    if ((rc = pthread_create(&b->thread, NULL, bus_main, b)) != 0) {
        pthread_mutex_destroy(&b->mu);
        close(b->evfd);
        snprintf(err, errlen, "cannot start its thread: %s", strerror(rc));
        rc = -rc;
        goto fail;
    }
    *out = b;
    return 0;
fail:
    bus_free(b);
    return rc;
}

void bus_publish(struct bus *b, const struct purge *p)
{
    char msg[BUS_MSG_MAX];
    uint64_t one = 1;
    int n, dropped = 0;

    if (!b)
        return;
    if ((n = bus_msg_encode(b->node, b->key_id, p, msg, sizeof(msg))) < 0) {
        log_warn("bus_not_published",
                 "a purge of a user name of %zu bytes stays on this node: "
                 "the bus carries names of 1 to %u bytes",
                 p->user_len, BUS_MSG_USER_MAX);
        return;
    }
    pthread_mutex_lock(&b->mu);
    if (b->tail - b->head == BUS_QUEUE_MAX) {
        b->head++;
        if (b->next < b->head)
            b->next = b->head;
        dropped = 1;
    }
    b->q[b->tail % BUS_QUEUE_MAX].len = (uint32_t)n;
    memcpy(b->q[b->tail % BUS_QUEUE_MAX].msg, msg, (size_t)n);
    b->tail++;
    pthread_mutex_unlock(&b->mu);
    if (dropped) {
        INC(b->dropped);
        if (log_limit_pass(&b->drop_log, "bus_dropped"))
            log_warn("bus_dropped", "%d purges wait for redis %s: the oldest was dropped",
                     BUS_QUEUE_MAX, b->where);
    }
    if (write(b->evfd, &one, sizeof(one)) < 0) {
        /* the counter is saturated only if the thread is gone; nothing to wake then */
    }
}

void bus_stop(struct bus *b)
{
    struct timespec ts;
    uint64_t one = 1;

    if (!b)
        return;
    __atomic_store_n(&b->stop_deadline, daemon_mono_ms() + BUS_FLUSH_MS, __ATOMIC_RELAXED);
    __atomic_store_n(&b->stop, 1, __ATOMIC_RELEASE);
    if (write(b->evfd, &one, sizeof(one)) < 0) {
        /* see bus_publish */
    }
    /* Only getaddrinfo can hold the thread past the flush; a drain must not hang on DNS. */
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (BUS_FLUSH_MS + 1500) / 1000 + 1;
    if (pthread_timedjoin_np(b->thread, NULL, &ts) != 0) {
        log_warn("bus_stop", "the bus thread did not stop in time (resolving %s?); leaving it",
                 b->cfg->host);
        return;
    }
    close(b->evfd);
    pthread_mutex_destroy(&b->mu);
    bus_free(b);
}

void bus_stats_get(struct bus *b, struct bus_stats *st)
{
    memset(st, 0, sizeof(*st));
    if (!b)
        return;
    st->enabled = 1;
    st->connected = __atomic_load_n(&b->connected, __ATOMIC_RELAXED);
    st->node = b->node;
    st->published = __atomic_load_n(&b->published, __ATOMIC_RELAXED);
    st->received = __atomic_load_n(&b->received, __ATOMIC_RELAXED);
    st->applied = __atomic_load_n(&b->applied, __ATOMIC_RELAXED);
    st->bad = __atomic_load_n(&b->bad, __ATOMIC_RELAXED);
    st->key_mismatch = __atomic_load_n(&b->key_mismatch, __ATOMIC_RELAXED);
    st->dropped = __atomic_load_n(&b->dropped, __ATOMIC_RELAXED);
    st->gaps = __atomic_load_n(&b->gaps, __ATOMIC_RELAXED);
    st->queued = queued_count(b);
    st->behind = __atomic_load_n(&b->behind, __ATOMIC_RELAXED);
    st->lag_ms = __atomic_load_n(&b->lag_ms, __ATOMIC_RELAXED);
}
