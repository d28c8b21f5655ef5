/*
 * bus.c — purges shared across nodes over Redis pub/sub (docs/contract.md, --bus; docs/daemon.md,
 * "Bus").
 *
 * A purge on this node (daemon_purge: admin API, sign-out, authentik's logout marker) is encoded
 * at once on the calling thread, a worker, and put in a bounded queue; the bus thread sends it with
 * PUBLISH. The same thread reads the channel over a second, SUBSCRIBEd connection and applies what
 * other nodes sent with daemon_purge_received, which never publishes: no purge travels twice. This
 * file is the client thread alone: the message is written and read by bus_msg.c, the Redis
 * protocol by resp.c.
 *
 * Invariants:
 *  - A worker never waits on the network: bus_publish takes the queue's mutex for a copy and writes
 *    the eventfd that wakes the thread. Everything else (DNS, connect, send, receive) is this
 *    thread's, on non-blocking sockets polled together with the eventfd, so bus_stop is heard
 *    within one poll (except inside getaddrinfo, which bus_stop waits out for a bounded time).
 *  - The queue holds sequence numbers head <= next <= tail, tail - head <= BUS_QUEUE_MAX:
 *    [head, next) were sent on the current connection and await Redis's reply, [next, tail) wait
 *    to be sent. A purge leaves the queue when Redis acknowledges its PUBLISH; after a reconnect
 *    every unacknowledged one is sent again (at least once: purges are idempotent). When full, a
 *    new purge pushes out the oldest, counted as dropped.
 *  - Purges queued while Redis was away wait after the reconnect until the channel has as many
 *    subscribers as before (PUBSUB NUMSUB), at most BUS_REJOIN_MS: pub/sub keeps nothing for a
 *    node that has not subscribed again yet.
 *  - Messages carry no credential: user names, keyed digests (useless without the hash key), "all".
 *    Nothing received is trusted: every field is bounded and checked (bus_msg_decode,
 *    resp_parse), a bad message is counted and logged at most every BUS_LOG_EVERY_MS, never
 *    applied.
 *  - With --bus-auth-file, each connection's first command is AUTH, and nothing else is sent on it
 *    until Redis answered +OK. A refusal (WRONGPASS, an AUTH without a configured password, ...)
 *    fails the connection like any other cause: the node serves on, unconnected, and retries
 *    with back-off. The password lives in the configuration and, briefly, in the command buffer,
 *    wiped after sending; it is never logged (Redis's error lines do not repeat it).
 *  - Logs: one line per change of the connection's state or, while down, of its cause; never one
 *    per retry.
 */
#include <errno.h>
#include <netdb.h>
#include <openssl/crypto.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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
#include "resp.h"
#include "log.h"

#define BUS_BACKOFF_MIN_MS 100
#define BUS_BACKOFF_MAX_MS 5000
#define BUS_IO_TIMEOUT_MS 2000 /* to connect, to send a command, to have SUBSCRIBE confirmed */
#define BUS_WINDOW 64          /* PUBLISHes sent and not yet answered, per connection */
#define BUS_RX_MAX (1u << 20)  /* the largest reply read from the subscription */
#define BUS_RX_BULK_MAX (BUS_RX_MAX - 1024)
#define BUS_PUB_RX 8192        /* replies to PUBLISH: integers, or an error line */
#define BUS_LOG_EVERY_MS 10000 /* rate limit of the logs about bad messages and drops */
#define BUS_REJOIN_MS (BUS_BACKOFF_MAX_MS + 1000) /* longest hold of purges queued while down */
#define BUS_NUMSUB_EVERY_MS 1000  /* how often the subscribers are counted while up */
#define BUS_NUMSUB_HOLD_MS 100    /* ... and while holding queued purges */
#define BUS_SEQ_NUMSUB UINT64_MAX /* in the window: a PUBSUB NUMSUB, not a PUBLISH */
#define BUS_RESP_ITEMS 9 /* a reply and its elements: pub/sub pushes have 3 or 4, NUMSUB's 2 */
#define BUS_AUTH_RX 1024 /* the reply to AUTH: +OK or an error line */

/* What Redis may send: arrays of scalars at most, a bulk as long as the buffer holds. */
static const struct resp_limits sub_limits = {.max_bulk = BUS_RX_BULK_MAX, .max_depth = 1};
static const struct resp_limits pub_limits = {.max_bulk = CONFIG_CHANNEL_MAX, .max_depth = 1};
static const struct resp_limits auth_limits = {.max_bulk = 64, .max_depth = 0};

/* ---------------------------------------------------------------- the client */

struct bus_slot {
    uint32_t len;
    char msg[BUS_MSG_MAX];
};

enum bus_state { BUS_STARTING, BUS_UP, BUS_DOWN };

struct bus {
    struct daemon *d;
    const struct config_bus *cfg;
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
    int64_t drop_logged_ms;
    uint64_t drop_quiet;

    /* The thread's alone. */
    int sub, pub; /* -1 when closed */
    enum bus_state state;
    char *rx; /* the subscription's unparsed bytes */
    size_t rx_len;
    char prx[BUS_PUB_RX];
    size_t prx_len;
    uint64_t win[BUS_WINDOW]; /* seqs of the commands awaiting a reply, oldest at win_first */
    unsigned win_first, win_n;
    int numsub_pending; /* a PUBSUB NUMSUB is in the window */
    int64_t numsub_at;  /* monotonic ms: the next one */
    int64_t subs_now;   /* subscribers of the channel, as last counted */
    int64_t subs_last;  /* ... as last counted while up and not holding, 0 unknown */
    int holding;        /* purges queued while down wait for the others to subscribe again */
    int64_t hold_until, hold_target;
    int64_t bad_logged_ms;
    uint64_t bad_quiet;
    char down_cause[512]; /* the cause last logged while down: a new one is logged once */
    int auth_refused;     /* the last connection failed because Redis refused AUTH */

    /* Figures, read by the admin thread (relaxed atomics). */
    int connected;
    uint64_t published, received, applied, bad, key_mismatch, dropped;
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

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* A connection to Redis, or -1 with the cause. */
static int dial(struct bus *b, char *cause, size_t cl)
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
        close_fd(&fd);
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
    return fd;
}

/* All of buf on fd within BUS_IO_TIMEOUT_MS. 0, or -1 with the cause. */
static int send_all(struct bus *b, int fd, const char *buf, size_t len, char *cause, size_t cl)
{
    int64_t deadline = daemon_mono_ms() + BUS_IO_TIMEOUT_MS;

    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        int rc;

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
        if ((rc = wait_fd(b, fd, POLLOUT, deadline)) <= 0) {
            snprintf(cause, cl, "send: %s", rc == 0 ? "timed out" : strerror(-rc));
            return -1;
        }
    }
    return 0;
}

/* Append what fd has to buf[*len, cap). 1 if something came, 0 if nothing yet, -1 with the cause
 * if the connection is over. */
static int conn_fill(int fd, char *buf, size_t *len, size_t cap, char *cause, size_t cl)
{
    ssize_t n = recv(fd, buf + *len, cap - *len, 0);

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

    __atomic_store_n(&b->connected, 1, __ATOMIC_RELAXED);
    b->down_cause[0] = '\0';
    if (b->state == BUS_UP)
        return;
    queued = queued_count(b);
    if (queued)
        log_info("bus_connected",
                 "connected to redis %s, channel \"%s\", node id %016llx; %llu "
                 "purges queued meanwhile go out once the other nodes are back",
                 b->where, b->cfg->channel, (unsigned long long)b->node,
                 (unsigned long long)queued);
    else
        log_info("bus_connected", "connected to redis %s, channel \"%s\", node id %016llx",
                 b->where, b->cfg->channel, (unsigned long long)b->node);
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
                 "%d) and sent on reconnect; retrying",
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
static int bus_auth(struct bus *b, int fd, char *cause, size_t cl)
{
    const struct config_bus *c = b->cfg;
    char cmd[2 * CONFIG_BUS_AUTH_MAX + 64], rx[BUS_AUTH_RX];
    const char *argv[3] = {"AUTH", c->auth_user, c->auth_pass};
    size_t lens[3] = {4, c->auth_user_len, c->auth_pass_len}, len = 0, ni;
    int64_t deadline = daemon_mono_ms() + BUS_IO_TIMEOUT_MS;
    struct resp_item r[1];
    int n, rc;

    if (c->auth_pass_len == 0)
        return 0;
    if (c->auth_user_len == 0) { /* requirepass: AUTH password */
        argv[1] = c->auth_pass;
        lens[1] = c->auth_pass_len;
    }
    n = resp_command(cmd, sizeof(cmd), c->auth_user_len ? 3 : 2, argv, lens);
    rc = n < 0 ? -1 : send_all(b, fd, cmd, (size_t)n, cause, cl);
    OPENSSL_cleanse(cmd, sizeof(cmd));
    if (n < 0)
        snprintf(cause, cl, "AUTH too long");
    if (rc < 0)
        return -1;
    for (;;) {
        ssize_t got;

        if ((rc = wait_fd(b, fd, POLLIN, deadline)) <= 0) {
            snprintf(cause, cl, "no answer to AUTH: %s", rc == 0 ? "timed out" : strerror(-rc));
            return -1;
        }
        if ((rc = conn_fill(fd, rx, &len, sizeof(rx), cause, cl)) < 0)
            return -1;
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

/* Open both connections and ask for the subscription. 0, or -1 with the cause. */
static int bus_connect(struct bus *b, char *cause, size_t cl)
{
    char cmd[64 + CONFIG_CHANNEL_MAX];
    const char *argv[2] = {"SUBSCRIBE", b->cfg->channel};
    size_t lens[2] = {9, strlen(b->cfg->channel)};
    int n;

    b->auth_refused = 0;
    if ((b->sub = dial(b, cause, cl)) < 0 || bus_auth(b, b->sub, cause, cl) < 0 ||
        (b->pub = dial(b, cause, cl)) < 0 || bus_auth(b, b->pub, cause, cl) < 0)
        return -1;
    b->rx_len = b->prx_len = 0;
    b->win_first = b->win_n = 0;
    b->numsub_pending = b->holding = 0;
    pthread_mutex_lock(&b->mu);
    b->next = b->head; /* what the last connection left unacknowledged goes again */
    pthread_mutex_unlock(&b->mu);
    n = resp_command(cmd, sizeof(cmd), 2, argv, lens);
    if (n < 0) {
        snprintf(cause, cl, "channel name too long");
        return -1;
    }
    return send_all(b, b->sub, cmd, (size_t)n, cause, cl);
}

static void bus_close(struct bus *b)
{
    close_fd(&b->sub);
    close_fd(&b->pub);
}

/* Log a bad message, at most once per BUS_LOG_EVERY_MS (saying how many were not logged). */
static void log_bad(struct bus *b, const char *event, const char *what, size_t len)
{
    int64_t now = daemon_mono_ms();

    if (b->bad_logged_ms && now - b->bad_logged_ms < BUS_LOG_EVERY_MS) {
        b->bad_quiet++;
        return;
    }
    if (b->bad_quiet)
        log_warn(event,
                 "%s (%zu bytes); not applied; %llu more not logged since the last such "
                 "line",
                 what, len, (unsigned long long)b->bad_quiet);
    else
        log_warn(event, "%s (%zu bytes); not applied", what, len);
    b->bad_logged_ms = now;
    b->bad_quiet = 0;
}

/* A message from the channel. */
static void on_message(struct bus *b, const char *p, size_t len)
{
    struct bus_msg m;
    const char *why;
    char desc[160];
    int rc = bus_msg_decode(p, len, b->node, &m, &why);

    if (rc == BUS_MSG_OWN)
        return;
    INC(b->received);
    if (rc < 0) {
        INC(b->bad);
        snprintf(desc, sizeof(desc), "bad message on the bus: %s", why);
        log_bad(b, "bus_bad_message", desc, len);
        return;
    }
    if (m.p.kind == PURGE_CREDS && memcmp(m.key_id, b->key_id, SHM_CRED_LEN) != 0) {
        INC(b->key_mismatch);
        snprintf(desc, sizeof(desc),
                 "session purge from node %016llx made with another hash key "
                 "(give every node the same --hash-key-file)",
                 (unsigned long long)m.node);
        log_bad(b, "bus_key_mismatch", desc, len);
        return;
    }
    snprintf(desc, sizeof(desc), "via bus from node %016llx", (unsigned long long)m.node);
    daemon_purge_received(b->d, &m.p, desc); /* the walk on the purge thread: this one reads on */
    INC(b->applied);
}

/* Read what the subscription sent. Sets *up on the subscription's confirmation. 0, or -1 with the
 * cause. */
static int read_sub(struct bus *b, int *up, char *cause, size_t cl)
{
    struct resp_item r[BUS_RESP_ITEMS];
    ssize_t n = conn_fill(b->sub, b->rx, &b->rx_len, BUS_RX_MAX, cause, cl);
    size_t off = 0, ni;

    if (n <= 0)
        return (int)n;
    while ((n = resp_parse(b->rx + off, b->rx_len - off, &sub_limits, r, BUS_RESP_ITEMS, &ni)) >
           0) {
        const struct resp_item *e = r + 1; /* the elements (no nesting: max_depth 1) */
        size_t nelem = ni - 1;
        off += (size_t)n;
        if (r[0].type == RESP_ERROR) {
            redis_error(cause, cl, "SUBSCRIBE", &r[0]);
            return -1;
        }
        if (r[0].type != RESP_ARRAY || nelem < 1 || e[0].type != RESP_BULK)
            continue; /* nothing else is sent to a subscriber; ignore what is not for us */
        if (e[0].len == 7 && memcmp(e[0].p, "message", 7) == 0 && nelem == 3 &&
            e[1].type == RESP_BULK && e[1].len == strlen(b->cfg->channel) &&
            memcmp(e[1].p, b->cfg->channel, e[1].len) == 0 && e[2].type == RESP_BULK && e[2].p)
            on_message(b, e[2].p, e[2].len);
        else if (e[0].len == 9 && memcmp(e[0].p, "subscribe", 9) == 0)
            *up = 1;
    }
    if (n < 0) {
        snprintf(cause, cl, "%s from redis on the subscription",
                 n == -E2BIG ? "a reply over 1 MiB" : "garbled reply");
        return -1;
    }
    memmove(b->rx, b->rx + off, b->rx_len - off);
    b->rx_len -= off;
    if (b->rx_len == BUS_RX_MAX) {
        snprintf(cause, cl, "a reply over 1 MiB from redis on the subscription");
        return -1;
    }
    return 0;
}

/* A count of subscribers (a PUBLISH's receivers, or PUBSUB NUMSUB). Ends the hold once the
 * channel has as many as before the outage. */
static void subscribers(struct bus *b, int64_t n)
{
    b->subs_now = n;
    if (b->holding && n >= b->hold_target)
        b->holding = 0;
    if (!b->holding)
        b->subs_last = n;
}

/* Read the replies on the publishing connection: each answers the oldest command in the window; a
 * PUBLISH's answer acknowledges its purge. 0, or -1 with the cause. */
static int read_pub(struct bus *b, char *cause, size_t cl)
{
    struct resp_item r[BUS_RESP_ITEMS];
    ssize_t n = conn_fill(b->pub, b->prx, &b->prx_len, sizeof(b->prx), cause, cl);
    size_t off = 0, ni;

    if (n <= 0)
        return (int)n;
    while ((n = resp_parse(b->prx + off, b->prx_len - off, &pub_limits, r, BUS_RESP_ITEMS, &ni)) >
           0) {
        uint64_t seq;
        off += (size_t)n;
        if (b->win_n == 0) {
            snprintf(cause, cl, "a reply from redis to no command");
            return -1;
        }
        seq = b->win[b->win_first];
        if (r[0].type == RESP_ERROR) {
            redis_error(cause, cl, seq == BUS_SEQ_NUMSUB ? "PUBSUB NUMSUB" : "PUBLISH", &r[0]);
            return -1;
        }
        b->win_first = (b->win_first + 1) % BUS_WINDOW;
        b->win_n--;
        if (seq == BUS_SEQ_NUMSUB) {
            if (r[0].type != RESP_ARRAY || ni != 3 || r[2].type != RESP_INT) {
                snprintf(cause, cl, "unexpected reply to PUBSUB NUMSUB");
                return -1;
            }
            b->numsub_pending = 0;
            subscribers(b, r[2].n);
            continue;
        }
        if (r[0].type != RESP_INT) {
            snprintf(cause, cl, "unexpected reply to PUBLISH");
            return -1;
        }
        subscribers(b, r[0].n);
        pthread_mutex_lock(&b->mu);
        if (seq >= b->head) /* else dropped meanwhile */
            b->head = seq + 1;
        pthread_mutex_unlock(&b->mu);
        INC(b->published);
    }
    if (n < 0) {
        snprintf(cause, cl, "garbled reply on the publishing connection");
        return -1;
    }
    memmove(b->prx, b->prx + off, b->prx_len - off);
    b->prx_len -= off;
    return 0;
}

/* Ask how many subscribe to the channel. 0, or -1 with the cause. */
static int send_numsub(struct bus *b, char *cause, size_t cl)
{
    char cmd[64 + CONFIG_CHANNEL_MAX];
    const char *argv[3] = {"PUBSUB", "NUMSUB", b->cfg->channel};
    size_t lens[3] = {6, 6, strlen(b->cfg->channel)};
    int n = resp_command(cmd, sizeof(cmd), 3, argv, lens);

    if (b->numsub_pending || b->win_n == BUS_WINDOW)
        return 0;
    if (n < 0) {
        snprintf(cause, cl, "channel name too long");
        return -1;
    }
    b->win[(b->win_first + b->win_n) % BUS_WINDOW] = BUS_SEQ_NUMSUB;
    b->win_n++;
    b->numsub_pending = 1;
    return send_all(b, b->pub, cmd, (size_t)n, cause, cl);
}

/* PUBLISH what waits, up to BUS_WINDOW commands in flight. 0, or -1 with the cause. */
static int send_queued(struct bus *b, char *cause, size_t cl)
{
    char cmd[BUS_MSG_MAX + CONFIG_CHANNEL_MAX + 64];
    struct bus_slot s;

    while (b->win_n < BUS_WINDOW) {
        const char *argv[3] = {"PUBLISH", b->cfg->channel, s.msg};
        size_t lens[3] = {7, strlen(b->cfg->channel), 0};
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
        lens[2] = s.len;
        n = resp_command(cmd, sizeof(cmd), 3, argv, lens);
        if (n < 0) {
            snprintf(cause, cl, "PUBLISH too long");
            return -1;
        }
        b->win[(b->win_first + b->win_n) % BUS_WINDOW] = seq;
        b->win_n++;
        if (send_all(b, b->pub, cmd, (size_t)n, cause, cl) < 0)
            return -1;
    }
    return 0;
}

/* The subscription is confirmed: the connection is up. Purges queued while it was down are held
 * until the channel has as many subscribers as it had before (the other nodes reconnect on their
 * own back-off; pub/sub keeps nothing for a node not yet subscribed), at most BUS_REJOIN_MS. */
static void came_up(struct bus *b, int64_t now)
{
    uint64_t waiting;

    note_up(b);
    pthread_mutex_lock(&b->mu);
    waiting = b->tail - b->next;
    pthread_mutex_unlock(&b->mu);
    b->numsub_at = now;
    if (waiting) {
        b->holding = 1;
        b->hold_until = now + BUS_REJOIN_MS;
        b->hold_target = b->subs_last > 0 ? b->subs_last : 2; /* unknown: this node and one more */
    }
}

/* Serve the two connections until one fails (cause set) or the stop's flush is over. Returns 1 if
 * the subscription was confirmed (the connection was up), else 0. */
static int bus_serve(struct bus *b, char *cause, size_t cl)
{
    int64_t confirm_by = daemon_mono_ms() + BUS_IO_TIMEOUT_MS;
    int up = 0;

    for (;;) {
        struct pollfd pfd[3] = {{.fd = b->evfd, .events = POLLIN},
                                {.fd = b->sub, .events = POLLIN},
                                {.fd = b->pub, .events = POLLIN}};
        int64_t now = daemon_mono_ms(), timeout = 1000;
        int n;

        if (__atomic_load_n(&b->stop, __ATOMIC_ACQUIRE)) {
            int64_t end = __atomic_load_n(&b->stop_deadline, __ATOMIC_RELAXED);
            uint64_t left = queued_count(b);
            if (!up || left == 0 || now >= end)
                return up;
            timeout = end - now;
            b->holding = 0; /* stopping: send what waits now or never */
        }
        if (!up) {
            if (now >= confirm_by) {
                snprintf(cause, cl, "no answer to SUBSCRIBE");
                return 0;
            }
            timeout = confirm_by - now;
        } else {
            if (b->holding && now >= b->hold_until) {
                b->holding = 0;
                log_info("bus_rejoin",
                         "sending the purges queued while redis was away although "
                         "only %lld of %lld subscribers are back after %d s",
                         (long long)b->subs_now, (long long)b->hold_target, BUS_REJOIN_MS / 1000);
            }
            if (now >= b->numsub_at) {
                if (send_numsub(b, cause, cl) < 0)
                    return up;
                b->numsub_at = now + (b->holding ? BUS_NUMSUB_HOLD_MS : BUS_NUMSUB_EVERY_MS);
            }
            if (!b->holding && send_queued(b, cause, cl) < 0)
                return up;
            if (b->numsub_at - now < timeout)
                timeout = b->numsub_at - now;
            if (b->holding && b->hold_until - now < timeout)
                timeout = b->hold_until - now;
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
        if (pfd[1].revents) {
            int was = up;
            if (read_sub(b, &up, cause, cl) < 0)
                return was || up;
            if (up && !was)
                came_up(b, daemon_mono_ms());
        }
        if (pfd[2].revents && read_pub(b, cause, cl) < 0)
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

int bus_start(struct daemon *d, struct bus **out)
{
    struct bus *b = calloc(1, sizeof(*b));
    int rc;

    *out = NULL;
    if (!b || !(b->q = calloc(BUS_QUEUE_MAX, sizeof(*b->q))) || !(b->rx = malloc(BUS_RX_MAX))) {
        rc = -ENOMEM;
        goto fail;
    }
    b->d = d;
    b->cfg = &d->cfg->bus;
    b->sub = b->pub = -1;
    snprintf(b->where, sizeof(b->where), strchr(b->cfg->host, ':') ? "[%s]:%u" : "%s:%u",
             b->cfg->host, b->cfg->port);
    bus_msg_key_id(&d->shm, b->key_id);
    /* The node id only tells a node its own messages apart: random, never 0. */
    while (b->node == 0) {
        if (getrandom(&b->node, sizeof(b->node), 0) != (ssize_t)sizeof(b->node)) {
            rc = -EIO;
            goto fail;
        }
    }
    if ((b->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
        rc = -errno;
        goto fail;
    }
    pthread_mutex_init(&b->mu, NULL);
    if ((rc = pthread_create(&b->thread, NULL, bus_main, b)) != 0) {
        pthread_mutex_destroy(&b->mu);
        close(b->evfd);
        rc = -rc;
        goto fail;
    }
    *out = b;
    return 0;
fail:
    if (b) {
        free(b->q);
        free(b->rx);
    }
    free(b);
    return rc;
}

void bus_publish(struct bus *b, const struct purge *p)
{
    char msg[BUS_MSG_MAX];
    uint64_t one = 1, quiet = 0;
    int64_t now;
    int n, dropped = 0, log_drop = 0;

    if (!b)
        return;
    if ((n = bus_msg_encode(b->node, b->key_id, p, msg, sizeof(msg))) < 0) {
        log_warn("bus_not_published",
                 "a purge of a user name of %zu bytes stays on this node: "
                 "the bus carries names of 1 to %u bytes",
                 p->user_len, BUS_MSG_USER_MAX);
        return;
    }
    now = daemon_mono_ms();
    pthread_mutex_lock(&b->mu);
    if (b->tail - b->head == BUS_QUEUE_MAX) {
        b->head++;
        if (b->next < b->head)
            b->next = b->head;
        dropped = 1;
        if (!b->drop_logged_ms || now - b->drop_logged_ms >= BUS_LOG_EVERY_MS) {
            log_drop = 1;
            quiet = b->drop_quiet;
            b->drop_quiet = 0;
            b->drop_logged_ms = now;
        } else {
            b->drop_quiet++;
        }
    }
    b->q[b->tail % BUS_QUEUE_MAX].len = (uint32_t)n;
    memcpy(b->q[b->tail % BUS_QUEUE_MAX].msg, msg, (size_t)n);
    b->tail++;
    pthread_mutex_unlock(&b->mu);
    if (dropped)
        INC(b->dropped);
    if (log_drop)
        log_warn("bus_dropped",
                 "%d purges wait for redis %s: the oldest was dropped (%llu more "
                 "dropped since the last such line)",
                 BUS_QUEUE_MAX, b->where, (unsigned long long)quiet);
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
    free(b->q);
    free(b->rx);
    free(b);
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
    st->queued = queued_count(b);
}
