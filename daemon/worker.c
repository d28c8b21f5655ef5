/*
 * worker.c — the request path: io_uring loop -> HTTP parse -> policy -> cache or IdP -> answer.
 *
 * Each worker owns an io_uring, a SO_REUSEPORT listener with a multishot accept, and multishot
 * receives on its client connections into a ring of provided buffers. Received bytes are appended to
 * the connection's input and the buffer goes straight back to the ring. Answers
 * are written into the connection's output buffer and sent once per loop turn, so pipelined requests
 * go out in one send. A cache hit costs no system call beyond io_uring_enter.
 *
 * A request that needs the IdP becomes a `pending`, owned by its connection. Its connection stops
 * parsing (answers stay in order) until the pending resolves. The IdP is reached through this worker's
 * pool of keep-alive connections (`up`), driven by the same ring: connect, send, receive, parse.
 * Concurrent misses for one key share one IdP call through the daemon's single-flight table; waiters
 * on other workers are told the outcome by worker_post (a mutex-guarded queue and an eventfd).
 *
 * Time: a tick (a timeout op) every few ms checks header/idle deadlines of connections and the IdP
 * timeout of upstream calls, and sends the circuit breaker's background probe.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "http.h"
#include "log.h"
#include "policy.h"
#include "tls.h"
#include "worker.h"

#define RING_ENTRIES 1024
#define NBUF 512            /* provided receive buffers */
#define BUFSZ 4096
#define MAX_HEADER 32768    /* request header section: more is 431 */
#define MAX_HDRS 256
#define HEADER_TIMEOUT_MS 10000
#define IDLE_TIMEOUT_MS 120000
#define UP_MAX_RESPONSE (1u << 20)
#define UP_IDLE_MAX 64
#define UP_IDLE_TIMEOUT_MS 30000
#define OUT_HIGH_WATER (256u << 10) /* stop parsing a connection until its output drains */
#define UPREQ_MAX (MAX_HEADER + 4096)

enum op {
    OP_ACCEPT = 1,
    OP_RECV,
    OP_SEND,
    OP_CLOSE,
    OP_UP_CONNECT,
    OP_UP_SEND,
    OP_UP_RECV,
    OP_TICK,
    OP_EVENT,
    OP_CANCEL,
};

#define UD(op, slot, gen) (((uint64_t)(op) << 56) | ((uint64_t)(slot) << 32) | (uint32_t)(gen))
#define UD_OP(u) ((int)((u) >> 56))
#define UD_SLOT(u) ((uint32_t)(((u) >> 32) & 0xffffff))
#define UD_GEN(u) ((uint32_t)(u))

/* A request waiting on the IdP. */
struct pending {
    enum policy_kind kind;
    enum result result;         /* RES_MISS or RES_REVALIDATED (cacheable), RES_BYPASS, RES_SIGNOUT */
    int cacheable;              /* has key */
    int leader;                 /* leads the key's flight: must end it */
    int orphan;                 /* its connection closed: freed when the IdP call ends */
    int in_up;                  /* an upstream call is using it */
    int background;             /* refresh-ahead: no connection */
    int64_t held_first_seen;    /* first_seen of the answer being revalidated, else 0 */
    int64_t deadline_ms;        /* --upstream-timeout from when the request first needed the IdP:
                                 * a waiter that must ask again after the leader's call gets only
                                 * what is left of it (docs/contract.md: a miss waits at most
                                 * that long) */
    struct shm_key key;
    struct policy_conn pc;
    uint32_t conn_slot, conn_gen;
    char host[SHM_MAX_HOST];
    uint32_t host_len;
    size_t upreq_len;
    char upreq[]; /* the request for the IdP */
};

struct conn {
    int fd;
    uint32_t gen;
    uint8_t in_use, closing, recv_armed, sending, waiting, close_after_send, dirty, eof;
    uint8_t rearm;          /* multishot receive ended (no buffers): arm again */
    uint8_t in_process;     /* conn_process is running on it (a request answered at once) */
    uint8_t chunk_skip;     /* discarding a chunked request body */
    uint32_t head_seen;     /* bytes of the head at in[0] seen by the last HTTP_PARTIAL, or 0 */
    int64_t body_skip;      /* bytes of a request body still to discard */
    struct http_chunked chunked;
    char *in;
    uint32_t in_len, in_cap;
    char *out;
    uint32_t out_len, out_cap, out_off;
    int64_t deadline_ms;
    struct pending *p;
    uint32_t next_free;
};

enum up_state { UP_FREE = 0, UP_CONNECTING, UP_SENDING, UP_READING, UP_IDLE };
enum up_owner { OWN_CONN, OWN_BACKGROUND, OWN_PROBE };

struct up {
    int fd;
    uint32_t gen;
    enum up_state state;
    int reused, timed_out, hdr_done, retried;
    enum up_owner owner;
    struct pending *p;
    const char *req;
    size_t req_len, req_off;
    char *buf;
    uint32_t len, cap;
    uint32_t hdr_len, raw_pos, body_len;
    int body_mode;
    int64_t content_length;
    struct http_chunked chunked;
    int64_t deadline_ms, idle_since_ms;
    int64_t started_us; /* monotonic, for the latency histogram */
    uint32_t next_idle;
    /* https upstreams: ciphertext goes through tx (to send) and rx (received) */
    struct tls_conn *tls;
    int hs_done;
    char *tx, *rx;
    uint32_t tx_len, tx_off;
};

#define TLS_TX_CAP (64u << 10)
#define TLS_RX_CAP (16u << 10)

struct wmsg {
    uint32_t slot, gen;
    enum flight_outcome o;
};

struct worker {
    struct daemon *d;
    const struct config *cfg;
    unsigned id;
    struct metrics *m;
    struct io_uring ring;
    int ring_disabled; /* created disabled: enabled by the worker thread */
    pthread_t thread;
    int listen_fd, port;
    int64_t refresh_ahead_ms; /* a hit this close to its fresh_until revalidates in the background */
    int accept_armed;
    int accept_failing; /* the last accept failed: logged once until one succeeds */
    struct io_uring_buf_ring *br;
    uint8_t *bufs;
    struct conn *conns;
    uint32_t max_conns, nconns, free_head;
    uint32_t *dirty;
    uint32_t ndirty;
    struct up *ups;
    uint32_t max_ups, idle_head, nidle;
    struct sockaddr_storage up_addr;
    socklen_t up_addrlen;
    int efd;
    uint64_t efd_buf;
    pthread_mutex_t qmu;
    struct wmsg *q;
    size_t qn, qcap;
    struct __kernel_timespec tick_ts;
    int64_t tick_ms;
    uint64_t sweep_next;
    int draining;
    int64_t drain_deadline_ms;
    int64_t now_ms;
    struct policy_req preq;
    struct http_hdr hdrs[MAX_HDRS];
    uint8_t lbuf[SHM_MAX_RECORD];
    char scratch[SHM_MAX_HDRS + 1024];
    char probe_req[1024];
    size_t probe_len;
};

static void conn_close(struct worker *w, struct conn *c);
static void conn_process(struct worker *w, struct conn *c);
static void up_start(struct worker *w, struct pending *p, enum up_owner owner);
static void outcome(struct worker *w, uint32_t slot, uint32_t gen, enum flight_outcome o);

/* ---- ring helpers ---- */

static struct io_uring_sqe *sqe_get(struct worker *w)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);

    if (!sqe) {
        io_uring_submit(&w->ring);
        sqe = io_uring_get_sqe(&w->ring);
    }
    return sqe; /* never NULL after a submit: the ring has RING_ENTRIES free */
}

static void arm_accept(struct worker *w)
{
    struct io_uring_sqe *sqe = sqe_get(w);

    io_uring_prep_multishot_accept(sqe, w->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, UD(OP_ACCEPT, 0, 0));
    w->accept_armed = 1;
}

static void arm_recv(struct worker *w, struct conn *c)
{
    struct io_uring_sqe *sqe = sqe_get(w);
    uint32_t slot = (uint32_t)(c - w->conns);

    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = 0;
    io_uring_sqe_set_data64(sqe, UD(OP_RECV, slot, c->gen));
    c->recv_armed = 1;
    c->rearm = 0;
}

static void buf_return(struct worker *w, unsigned bid)
{
    io_uring_buf_ring_add(w->br, w->bufs + (size_t)bid * BUFSZ, BUFSZ, (unsigned short)bid,
                          io_uring_buf_ring_mask(NBUF), 0);
    io_uring_buf_ring_advance(w->br, 1);
}

static void arm_tick(struct worker *w)
{
    struct io_uring_sqe *sqe = sqe_get(w);

    io_uring_prep_timeout(sqe, &w->tick_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, UD(OP_TICK, 0, 0));
}

static void arm_event(struct worker *w)
{
    struct io_uring_sqe *sqe = sqe_get(w);

    io_uring_prep_read(sqe, w->efd, &w->efd_buf, sizeof(w->efd_buf), 0);
    io_uring_sqe_set_data64(sqe, UD(OP_EVENT, 0, 0));
}

/* ---- client connections: output ---- */

static int out_reserve(struct conn *c, size_t need)
{
    if (c->out_len + need <= c->out_cap)
        return 0;
    size_t cap = c->out_cap ? c->out_cap : 2048;
    while (cap < c->out_len + need)
        cap *= 2;
    char *n = realloc(c->out, cap);
    if (!n)
        return -ENOMEM;
    c->out = n;
    c->out_cap = (uint32_t)cap;
    return 0;
}

static void mark_dirty(struct worker *w, struct conn *c)
{
    if (!c->dirty) {
        c->dirty = 1;
        w->dirty[w->ndirty++] = (uint32_t)(c - w->conns);
    }
}

static void count_answer(struct worker *w, enum result r, int status)
{
    M_ADD(w->m, results[r], 1);
    M_ADD(w->m, status[status >= 100 && status < 600 ? status / 100 : 0], 1);
}

/* Append an answer of up to max bytes produced by fn into c's output. */
#define ANSWER(w, c, res, status, max, call)                                                       \
    do {                                                                                           \
        size_t n_ = 0;                                                                             \
        if (out_reserve((c), (max)) == 0) {                                                        \
            char *out = (c)->out + (c)->out_len;                                                   \
            size_t cap = (c)->out_cap - (c)->out_len;                                              \
            n_ = (call);                                                                           \
        }                                                                                          \
        if (n_ == 0) {                                                                             \
            conn_close((w), (c));                                                                  \
        } else {                                                                                   \
            (c)->out_len += (uint32_t)n_;                                                          \
            count_answer((w), (res), (status));                                                    \
            mark_dirty((w), (c));                                                                  \
        }                                                                                          \
    } while (0)

static void answer_status(struct worker *w, struct conn *c, const struct policy_conn *pc, int status,
                          const char *text)
{
    ANSWER(w, c, RES_REJECTED, status, 512, policy_answer_status(pc, status, text, out, cap));
    if (!pc->keep_alive)
        c->close_after_send = 1;
}

static void answer_identity(struct worker *w, struct conn *c, const struct policy_conn *pc,
                            const char *hdrs, size_t len, enum result res)
{
    ANSWER(w, c, res, 200, len + 128,
           policy_answer_identity(pc, hdrs, len, result_names[res], out, cap));
    if (!pc->keep_alive)
        c->close_after_send = 1;
}

static void answer_unavailable(struct worker *w, struct conn *c, const struct policy_conn *pc,
                               const char *cause)
{
    int retry = 1;

    if (__atomic_load_n(&w->d->breaker.open, __ATOMIC_RELAXED)) {
        int64_t left = __atomic_load_n(&w->d->breaker.retry_at_ms, __ATOMIC_RELAXED) - w->now_ms;
        retry = left > 1000 ? (int)((left + 999) / 1000) : 1;
    }
    ANSWER(w, c, RES_UNAVAILABLE, 503, 512, policy_answer_unavailable(pc, cause, retry, out, cap));
    if (!pc->keep_alive)
        c->close_after_send = 1;
}

static void flush_sends(struct worker *w)
{
    for (uint32_t i = 0; i < w->ndirty; i++) {
        struct conn *c = &w->conns[w->dirty[i]];
        c->dirty = 0;
        if (!c->in_use || c->sending || c->out_off >= c->out_len)
            continue;
        struct io_uring_sqe *sqe = sqe_get(w);
        io_uring_prep_send(sqe, c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        io_uring_sqe_set_data64(sqe, UD(OP_SEND, w->dirty[i], c->gen));
        c->sending = 1;
    }
    w->ndirty = 0;
}

/* ---- client connections: lifecycle ---- */

static void pending_free(struct pending *p)
{
    free(p);
}

/* Closed through the ring, not with close(2): one system call less per connection, batched with
 * the turn's other submissions; no completion is posted unless it fails (nothing to do then). No
 * operation refers to the descriptor any more, and its number cannot be handed out again by accept
 * before the close has run. */
static void conn_release(struct worker *w, struct conn *c)
{
    uint32_t slot = (uint32_t)(c - w->conns);
    struct io_uring_sqe *sqe = sqe_get(w);

    io_uring_prep_close(sqe, c->fd);
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    io_uring_sqe_set_data64(sqe, UD(OP_CLOSE, 0, 0));
    c->fd = -1;
    c->in_use = 0;
    c->gen++;
    c->in_len = c->out_len = c->out_off = 0;
    if (c->in_cap > 16384) { /* keep small buffers for the next connection, give big ones back */
        free(c->in);
        c->in = NULL;
        c->in_cap = 0;
    }
    if (c->out_cap > 16384) {
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
    }
    c->next_free = w->free_head;
    w->free_head = slot;
    w->nconns--;
    M_ADD(w->m, conns_open, (uint64_t)-1);
}

/* Close: cancel the multishot receive; the slot is released when no operation refers to it. */
static void conn_close(struct worker *w, struct conn *c)
{
    if (!c->in_use || c->closing)
        return;
    c->closing = 1;
    if (c->p) {
        if (c->p->in_up)
            c->p->orphan = 1; /* the IdP call finishes (and stores) without it */
        else
            pending_free(c->p);
        c->p = NULL;
    }
    if (c->recv_armed) {
        struct io_uring_sqe *sqe = sqe_get(w);
        io_uring_prep_cancel64(sqe, UD(OP_RECV, (uint32_t)(c - w->conns), c->gen), 0);
        io_uring_sqe_set_data64(sqe, UD(OP_CANCEL, 0, 0));
    }
    if (!c->recv_armed && !c->sending)
        conn_release(w, c);
}

/* Release a closing connection once no operation refers to it (not twice: conn_close may have
 * released it already, leaving closing set on a slot that is back on the free list). */
static void conn_maybe_release(struct worker *w, struct conn *c)
{
    if (c->in_use && c->closing && !c->recv_armed && !c->sending)
        conn_release(w, c);
}

static void on_accept(struct worker *w, struct io_uring_cqe *cqe)
{
    int fd = cqe->res;

    if (!(cqe->flags & IORING_CQE_F_MORE)) {
        /* The multishot accept ended: the CQ overflowed (a burst), or no descriptor was left. At
         * once again in the first case; in the second the tick does it (on_tick), so that a
         * process out of descriptors does not spin. */
        w->accept_armed = 0;
        if (fd != -EMFILE && fd != -ENFILE && fd != -ECANCELED && !w->draining)
            arm_accept(w);
    }
    if (fd < 0) {
        if (fd != -ECANCELED && fd != -EINVAL && !w->accept_failing) /* once per episode */
            log_warn("accept", "worker %u: accept failed: %s (retrying every tick)", w->id,
                     strerror(-fd));
        w->accept_failing = fd != -ECANCELED && fd != -EINVAL;
        return;
    }
    if (w->accept_failing) {
        log_info("accept", "worker %u: accepting again", w->id);
        w->accept_failing = 0;
    }
    if (w->draining || w->free_head == UINT32_MAX) {
        /* Too many connections: the newest is closed at once, cleanly. */
        close(fd);
        M_ADD(w->m, conns_rejected, 1);
        return;
    }
    uint32_t slot = w->free_head;
    struct conn *c = &w->conns[slot];

    w->free_head = c->next_free; /* TCP_NODELAY comes from the listener (Linux copies it) */
    c->fd = fd;
    c->in_use = 1;
    c->closing = c->sending = c->waiting = c->close_after_send = c->dirty = c->eof = 0;
    c->chunk_skip = 0;
    c->head_seen = 0;
    c->in_process = 0;
    c->body_skip = 0;
    c->p = NULL;
    c->deadline_ms = w->now_ms + IDLE_TIMEOUT_MS;
    w->nconns++;
    M_ADD(w->m, conns_accepted, 1);
    M_ADD(w->m, conns_open, 1);
    arm_recv(w, c);
}

static int in_append(struct conn *c, const char *data, size_t len)
{
    if (c->in_len + len > c->in_cap) {
        size_t cap = c->in_cap ? c->in_cap : 4096;
        while (cap < c->in_len + len)
            cap *= 2;
        char *n = realloc(c->in, cap);
        if (!n)
            return -ENOMEM;
        c->in = n;
        c->in_cap = (uint32_t)cap;
    }
    memcpy(c->in + c->in_len, data, len);
    c->in_len += (uint32_t)len;
    return 0;
}

static void on_recv(struct worker *w, struct conn *c, struct io_uring_cqe *cqe)
{
    int more = (cqe->flags & IORING_CQE_F_MORE) != 0;

    if (!more)
        c->recv_armed = 0;
    if (cqe->res > 0) {
        unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        const char *data = (const char *)w->bufs + (size_t)bid * BUFSZ;
        if (!c->closing) {
            if (in_append(c, data, (size_t)cqe->res) < 0)
                conn_close(w, c);
            else
                conn_process(w, c);
        }
        buf_return(w, bid);
        if (!more && !c->closing)
            c->rearm = 1;
    } else if (cqe->res == -ENOBUFS && !c->closing) {
        c->rearm = 1; /* buffers are back after this turn: arm again then */
    } else if (!c->closing) {
        c->eof = 1;
        if (!c->waiting && !c->sending && c->out_off >= c->out_len)
            conn_close(w, c);
        else
            c->close_after_send = 1;
    }
    if (c->rearm && !c->closing && !c->recv_armed)
        arm_recv(w, c);
    conn_maybe_release(w, c);
}

static void on_send(struct worker *w, struct conn *c, int res)
{
    c->sending = 0;
    if (res < 0) {
        conn_close(w, c);
    } else {
        c->out_off += (uint32_t)res;
        if (c->out_off >= c->out_len) {
            c->out_off = c->out_len = 0;
            if (c->close_after_send && !c->waiting)
                conn_close(w, c);
            else if (c->in_len > 0 && !c->waiting && !c->closing)
                conn_process(w, c); /* input held back by the high-water mark */
        } else {
            mark_dirty(w, c);
        }
    }
    conn_maybe_release(w, c);
}

/* ---- requests ---- */

static struct pending *pending_new(struct worker *w, struct conn *c, const struct http_req *req,
                                   const struct policy_req *pr, const char *uri_override)
{
    struct pending *p = malloc(sizeof(*p) + UPREQ_MAX);

    if (!p)
        return NULL;
    memset(p, 0, sizeof(*p));
    p->kind = pr->kind;
    p->deadline_ms = w->now_ms + w->cfg->upstream_timeout_ms;
    p->result = RES_BYPASS;
    p->upreq_len = policy_upstream_request(w->cfg, req, uri_override, p->upreq, UPREQ_MAX);
    if (p->upreq_len == 0) {
        free(p);
        return NULL;
    }
    if (c) {
        p->conn_slot = (uint32_t)(c - w->conns);
        p->conn_gen = c->gen;
        p->pc.keep_alive = req->keep_alive && !w->draining;
        p->pc.http10 = req->minor_version == 0;
    }
    if (pr->has_cred && pr->q.host) { /* no key parts for the login flow (policy_classify) */
        p->host_len = (uint32_t)(pr->q.host_len < SHM_MAX_HOST ? pr->q.host_len : SHM_MAX_HOST);
        memcpy(p->host, pr->q.host, p->host_len);
    }
    return p;
}

/* The connection p belongs to, if it is still open. While draining, its answer closes it. */
static struct conn *pending_conn(struct worker *w, struct pending *p)
{
    struct conn *c;

    if (p->background || p->orphan || p->conn_slot >= w->max_conns)
        return NULL;
    c = &w->conns[p->conn_slot];
    if (!c->in_use || c->closing || c->gen != p->conn_gen)
        return NULL;
    if (w->draining)
        p->pc.keep_alive = 0;
    return c;
}

/* The connection's pending request is answered: go on with its pipelined input. */
static void conn_resume(struct worker *w, struct conn *c)
{
    if (c->p) {
        pending_free(c->p);
        c->p = NULL;
    }
    c->waiting = 0;
    c->deadline_ms = w->now_ms + (c->in_len ? HEADER_TIMEOUT_MS : IDLE_TIMEOUT_MS);
    if (c->eof && !c->sending && c->out_off >= c->out_len) {
        conn_close(w, c);
        return;
    }
    if (c->eof)
        c->close_after_send = 1;
    if (c->in_len > 0 && !c->in_process) /* else the running conn_process goes on by itself */
        conn_process(w, c);
}

/* The IdP could not be asked or failed: a held answer within the outage grace, else 503. */
static void serve_failed(struct worker *w, struct conn *c, struct pending *p, const char *cause)
{
    struct shm_answer a;

    if (p->cacheable &&
        shm_lookup(&w->d->shm, p->key.digest, w->now_ms, &a, w->lbuf, sizeof(w->lbuf), 0) == 0 &&
        policy_stale_ok(w->cfg, &a, w->now_ms)) {
        answer_identity(w, c, &p->pc, a.hdrs, a.hdrs_len, RES_STALE);
        return;
    }
    if (p->kind == POLICY_SIGNOUT) { /* purged what we could: the sign-out goes on to the IdP */
        answer_identity(w, c, &p->pc, "", 0, RES_SIGNOUT);
        return;
    }
    answer_unavailable(w, c, &p->pc, cause);
}

static void deliver(struct worker *w, struct pending *p, enum flight_outcome o)
{
    struct flight_waiter *fw;
    size_t n;

    if (!p->leader)
        return;
    p->leader = 0;
    n = flight_end(w->d->flights, p->key.digest, &fw);
    for (size_t i = 0; i < n; i++) {
        if (fw[i].worker == w->id)
            outcome(w, fw[i].slot, fw[i].gen, o);
        else if (fw[i].worker < w->d->nworkers)
            worker_post(w->d->workers[fw[i].worker], &fw[i], o);
    }
    free(fw);
}

/* Send p to the IdP for connection c (or fail fast while the breaker is open). */
static void ask_idp(struct worker *w, struct conn *c, struct pending *p, int coalesce)
{
    c->p = p;
    c->waiting = 1;
    c->deadline_ms = 0;
    if (!breaker_allow(&w->d->breaker, w->now_ms)) {
        serve_failed(w, c, p, "circuit open after repeated failures");
        conn_resume(w, c);
        return;
    }
    if (coalesce && p->cacheable) {
        struct flight_waiter me = {w->id, p->conn_slot, p->conn_gen};
        int rc = flight_begin(w->d->flights, p->key.digest, &me);
        if (rc == 0) {
            M_ADD(w->m, idp_coalesced, 1);
            return; /* outcome() resumes us */
        }
        p->leader = rc == 1;
    }
    up_start(w, p, OWN_CONN);
}

/* A single-flight outcome reached a waiting connection. */
static void outcome(struct worker *w, uint32_t slot, uint32_t gen, enum flight_outcome o)
{
    struct conn *c = slot < w->max_conns ? &w->conns[slot] : NULL;
    struct pending *p;
    struct shm_answer a;

    if (!c || !c->in_use || c->closing || c->gen != gen || !c->waiting || !(p = c->p))
        return;
    if (w->draining)
        p->pc.keep_alive = 0;
    w->now_ms = daemon_now_ms();
    /* The stored answer is at least as new as this request, fresh or not (--fresh-ttl 0). */
    if (o == FLIGHT_STORED &&
        shm_lookup(&w->d->shm, p->key.digest, w->now_ms, &a, w->lbuf, sizeof(w->lbuf), 0) == 0) {
        answer_identity(w, c, &p->pc, a.hdrs, a.hdrs_len, p->result);
    } else if (o == FLIGHT_FAILED) {
        serve_failed(w, c, p, "identity provider failing");
    } else if (w->now_ms >= p->deadline_ms) {
        serve_failed(w, c, p, "timed out"); /* the leader's call used up this request's time */
    } else {
        ask_idp(w, c, p, 0); /* on its own, in the time left (up_start) */
        return;
    }
    conn_resume(w, c);
}

/* Learn the user of a session from the cache: the exact key, else any answer of the credential. */
struct find_cred {
    const uint8_t *cred;
    char user[SHM_MAX_USER];
    size_t len;
};

static int find_cred_fn(const struct shm_answer *a, void *arg)
{
    struct find_cred *f = arg;

    if (memcmp(a->key.cred, f->cred, SHM_CRED_LEN) != 0 || a->user_len == 0)
        return 0;
    f->len = a->user_len;
    memcpy(f->user, a->user, a->user_len);
    return 1;
}

/* Purge what the cache knows of pr's session. Returns 1 if its user was known. */
static int purge_session(struct worker *w, const struct policy_req *pr, const char *why)
{
    struct shm_key k;
    struct shm_answer a;
    struct find_cred f = {0};

    if (!pr->has_cred)
        return 0;
    shm_key_query(&w->d->shm, &pr->q, &k, 1);
    f.cred = k.cred;
    if (shm_lookup(&w->d->shm, k.digest, w->now_ms, &a, w->lbuf, sizeof(w->lbuf), 0) == 0 &&
        a.user_len > 0) {
        f.len = a.user_len;
        memcpy(f.user, a.user, a.user_len);
    } else {
        shm_foreach(&w->d->shm, w->now_ms, find_cred_fn, &f);
    }
    /* The user known: all of the user's answers, here and (--bus) on every node. Else the
     * session's own answers, by its credential digest, here and everywhere. */
    if (f.len)
        daemon_purge(w->d, f.user, f.len, NULL, 0, why);
    else
        daemon_purge_cred(w->d, k.cred, why);
    return f.len != 0;
}

static void start_background(struct worker *w, const struct http_req *req,
                             const struct policy_req *pr, const struct shm_key *key,
                             int64_t first_seen)
{
    struct pending *p;

    if (!breaker_allow(&w->d->breaker, w->now_ms) ||
        flight_begin(w->d->flights, key->digest, NULL) != 1)
        return;
    if (!(p = pending_new(w, NULL, req, pr, NULL))) {
        struct flight_waiter *fw;
        flight_end(w->d->flights, key->digest, &fw);
        free(fw);
        return;
    }
    p->background = 1;
    p->leader = 1;
    p->cacheable = 1;
    p->key = *key;
    shm_key_cred(&w->d->shm, pr->q.cred_kind, pr->q.cred, pr->q.cred_len, p->key.cred);
    p->held_first_seen = first_seen;
    p->result = RES_REVALIDATED;
    M_ADD(w->m, idp_background, 1);
    up_start(w, p, OWN_BACKGROUND);
}

/* One complete request: answer it now or park the connection on the IdP. */
static void handle_request(struct worker *w, struct conn *c, const struct http_req *req)
{
    struct policy_req *pr = &w->preq;
    struct policy_conn pc = {req->keep_alive && !w->draining, req->minor_version == 0};
    struct shm_answer a;
    struct shm_key key;
    struct pending *p;
    const char *override = NULL;
    int held = 0;

    policy_classify(w->cfg, req, pr);
    switch (pr->kind) {
    case POLICY_CACHEABLE:
        shm_key_query(&w->d->shm, &pr->q, &key, 0);
        if (shm_lookup(&w->d->shm, key.digest, w->now_ms, &a, w->lbuf, sizeof(w->lbuf),
                       SHM_LOOKUP_PROMOTE) == 0) {
            if (w->now_ms < a.fresh_until_ms) {
                answer_identity(w, c, &pc, a.hdrs, a.hdrs_len, RES_HIT);
                if (w->now_ms >= a.fresh_until_ms - w->refresh_ahead_ms)
                    start_background(w, req, pr, &key, a.first_seen_ms);
                return;
            }
            held = 1;
        }
        break;
    case POLICY_SIGNOUT:
        if (purge_session(w, pr, "sign-out") || !pr->has_cred) {
            answer_identity(w, c, &pc, "", 0, RES_SIGNOUT);
            return;
        }
        override = "/"; /* one IdP call to learn whose session this is */
        break;
    case POLICY_LOGOUT:
        purge_session(w, pr, "logout");
        break;
    default:
        break;
    }

    if (!(p = pending_new(w, c, req, pr, override))) {
        answer_status(w, c, &pc, 431, "request too large to forward");
        return;
    }
    if (pr->kind == POLICY_CACHEABLE) {
        p->cacheable = 1;
        p->key = key;
        shm_key_cred(&w->d->shm, pr->q.cred_kind, pr->q.cred, pr->q.cred_len, p->key.cred);
        p->result = held ? RES_REVALIDATED : RES_MISS;
        p->held_first_seen = held ? a.first_seen_ms : 0;
    } else if (pr->kind == POLICY_SIGNOUT) {
        p->result = RES_SIGNOUT;
    }
    ask_idp(w, c, p, 1);
}

/* Parse and answer the connection's buffered input until it runs out or must wait. */
static void conn_process(struct worker *w, struct conn *c)
{
    size_t off = 0;

    w->now_ms = daemon_now_ms();
    c->in_process = 1;
    while (off < c->in_len && !c->waiting && !c->closing && !c->close_after_send &&
           c->out_len < OUT_HIGH_WATER) {
        char *data = c->in + off;
        size_t len = c->in_len - off;
        struct http_req req = {.hdrs = w->hdrs, .hdrs_cap = MAX_HDRS};
        struct policy_conn close_pc = {0, 0};
        int rc;

        if (c->body_skip > 0) { /* the rest of a request body: ignored */
            size_t n = (size_t)c->body_skip < len ? (size_t)c->body_skip : len;
            c->body_skip -= (int64_t)n;
            off += n;
            continue;
        }
        if (c->chunk_skip) {
            size_t n = len;
            ssize_t left = http_chunked_decode(&c->chunked, data, &n);
            if (left == HTTP_BAD) {
                answer_status(w, c, &close_pc, 400, "bad chunked body");
                break;
            }
            if (left == HTTP_PARTIAL) {
                off = c->in_len;
                break;
            }
            c->chunk_skip = 0;
            off += len - (size_t)left;
            continue;
        }
        rc = http_parse_request(data, len, c->head_seen, MAX_HEADER, &req);
        c->head_seen = rc == HTTP_PARTIAL ? (uint32_t)len : 0;
        if (rc == HTTP_PARTIAL) {
            if (c->deadline_ms == 0 || off > 0 || c->deadline_ms > w->now_ms + HEADER_TIMEOUT_MS)
                c->deadline_ms = w->now_ms + HEADER_TIMEOUT_MS;
            break;
        }
        if (rc == HTTP_BAD) {
            answer_status(w, c, &close_pc, 400, "malformed request");
            break;
        }
        if (rc == HTTP_TOO_LARGE) {
            /* No line end within the limit: it is the request line, i.e. the target (RFC 9112
             * 3: 414); else the header fields (RFC 6585: 431). */
            size_t seen = len < MAX_HEADER ? len : MAX_HEADER;
            if (!memchr(data, '\n', seen))
                answer_status(w, c, &close_pc, 414, "request target too long");
            else
                answer_status(w, c, &close_pc, 431, "request header fields too large");
            break;
        }
        off += (size_t)rc;
        switch (http_req_body_mode(&req)) {
        case HTTP_BODY_LENGTH:
            c->body_skip = req.content_length;
            break;
        case HTTP_BODY_CHUNKED:
            http_chunked_init(&c->chunked);
            c->chunk_skip = 1;
            break;
        default:
            break;
        }
        handle_request(w, c, &req);
        if (!req.keep_alive)
            c->close_after_send = 1;
        if (!c->waiting)
            c->deadline_ms = w->now_ms + IDLE_TIMEOUT_MS;
    }
    c->in_process = 0;
    if (c->closing)
        return;
    if (off > 0) {
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= (uint32_t)off;
    }
    if (c->close_after_send && !c->waiting && !c->sending && c->out_off >= c->out_len)
        conn_close(w, c);
}

/* ---- upstream (IdP) connections ---- */

static struct up *up_alloc(struct worker *w)
{
    for (uint32_t i = 0; i < w->max_ups; i++)
        if (w->ups[i].state == UP_FREE)
            return &w->ups[i];
    return NULL;
}

static void up_tls_reset(struct up *u)
{
    tls_free(u->tls);
    u->tls = NULL;
    u->hs_done = 0;
    u->tx_len = u->tx_off = 0;
}

static void up_close(struct up *u)
{
    if (u->fd >= 0)
        close(u->fd);
    up_tls_reset(u);
    u->fd = -1;
    u->state = UP_FREE;
    u->gen++;
    u->p = NULL;
}

static void up_submit_send(struct worker *w, struct up *u)
{
    struct io_uring_sqe *sqe = sqe_get(w);

    u->state = UP_SENDING;
    io_uring_prep_send(sqe, u->fd, u->req + u->req_off, u->req_len - u->req_off, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, UD(OP_UP_SEND, (uint32_t)(u - w->ups), u->gen));
}

static void idp_failed(struct worker *w, struct up *u, const char *cause);
static void idp_answered(struct worker *w, struct up *u);

/* Receive more of the answer; one over UP_MAX_RESPONSE fails the call at once (callers return
 * right after calling this). */
static void up_submit_recv(struct worker *w, struct up *u)
{
    struct io_uring_sqe *sqe;

    if (u->len == u->cap) {
        uint32_t cap = u->cap ? u->cap * 2 : 8192;
        char *n;
        if (cap > UP_MAX_RESPONSE || !(n = realloc(u->buf, cap))) {
            idp_failed(w, u, cap > UP_MAX_RESPONSE ? "answer too large" : "out of memory");
            return;
        }
        u->buf = n;
        u->cap = cap;
    }
    sqe = sqe_get(w);
    u->state = UP_READING;
    io_uring_prep_recv(sqe, u->fd, u->buf + u->len, u->cap - u->len, 0);
    io_uring_sqe_set_data64(sqe, UD(OP_UP_RECV, (uint32_t)(u - w->ups), u->gen));
}

/* ---- TLS: the same calls, with ciphertext in between ---- */

static void up_submit_recv_tls(struct worker *w, struct up *u)
{
    struct io_uring_sqe *sqe = sqe_get(w);

    u->state = UP_READING;
    io_uring_prep_recv(sqe, u->fd, u->rx, TLS_RX_CAP, 0);
    io_uring_sqe_set_data64(sqe, UD(OP_UP_RECV, (uint32_t)(u - w->ups), u->gen));
}

/* Send what TLS has to send, else wait for the peer. */
static void up_tls_flush(struct worker *w, struct up *u)
{
    if (u->tx_off >= u->tx_len) {
        u->tx_off = 0;
        u->tx_len = (uint32_t)tls_take(u->tls, u->tx, TLS_TX_CAP);
    }
    if (u->tx_len > u->tx_off) {
        struct io_uring_sqe *sqe = sqe_get(w);
        u->state = UP_SENDING;
        io_uring_prep_send(sqe, u->fd, u->tx + u->tx_off, u->tx_len - u->tx_off, MSG_NOSIGNAL);
        io_uring_sqe_set_data64(sqe, UD(OP_UP_SEND, (uint32_t)(u - w->ups), u->gen));
    } else {
        up_submit_recv_tls(w, u);
    }
}

/* Handshake done: encrypt the request and send it. */
static void up_tls_send_request(struct worker *w, struct up *u)
{
    if (tls_write(u->tls, u->req, u->req_len) < 0) {
        idp_failed(w, u, tls_error(u->tls));
        return;
    }
    up_tls_flush(w, u);
}

static void up_tls_handshake(struct worker *w, struct up *u)
{
    int rc = tls_handshake(u->tls);

    if (rc < 0) {
        log_warn("idp_tls", "TLS with the identity provider failed: %s", tls_error(u->tls));
        idp_failed(w, u, "TLS handshake failed");
    } else if (rc == 1) {
        u->hs_done = 1;
        up_tls_send_request(w, u);
    } else {
        up_tls_flush(w, u);
    }
}

static void up_begin_io(struct worker *w, struct up *u)
{
    u->len = u->hdr_len = u->raw_pos = u->body_len = 0;
    u->hdr_done = 0;
    u->req_off = 0;
    if (!w->cfg->upstream.tls) {
        up_submit_send(w, u);
        return;
    }
    if (!u->tls) {
        if ((!u->tx && !(u->tx = malloc(TLS_TX_CAP))) || (!u->rx && !(u->rx = malloc(TLS_RX_CAP))) ||
            !(u->tls = tls_new(w->cfg->upstream.host))) {
            idp_failed(w, u, "out of memory for TLS");
            return;
        }
    }
    u->tx_len = u->tx_off = 0;
    if (u->hs_done)
        up_tls_send_request(w, u);
    else
        up_tls_handshake(w, u);
}

static int up_connect(struct worker *w, struct up *u)
{
    int one = 1;
    struct io_uring_sqe *sqe;

    u->fd = socket(w->up_addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (u->fd < 0)
        return -errno;
    setsockopt(u->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    u->reused = 0;
    u->state = UP_CONNECTING;
    sqe = sqe_get(w);
    io_uring_prep_connect(sqe, u->fd, (struct sockaddr *)&w->up_addr, w->up_addrlen);
    io_uring_sqe_set_data64(sqe, UD(OP_UP_CONNECT, (uint32_t)(u - w->ups), u->gen));
    return 0;
}

static void up_start(struct worker *w, struct pending *p, enum up_owner owner)
{
    struct up *u = NULL;

    if (w->idle_head != UINT32_MAX) {
        u = &w->ups[w->idle_head];
        w->idle_head = u->next_idle;
        w->nidle--;
        u->reused = 1;
    } else if (!(u = up_alloc(w))) {
        struct up tmp = {.fd = -1, .owner = owner, .p = p};
        if (p)
            p->in_up = 0;
        idp_failed(w, &tmp, "too many IdP connections");
        return;
    }
    u->owner = owner;
    u->p = p;
    u->timed_out = 0;
    u->retried = 0;
    if (p) {
        p->in_up = 1;
        u->req = p->upreq;
        u->req_len = p->upreq_len;
    } else {
        u->req = w->probe_req;
        u->req_len = w->probe_len;
    }
    u->started_us = daemon_mono_us();
    u->deadline_ms = w->now_ms + w->cfg->upstream_timeout_ms;
    if (p && p->deadline_ms < u->deadline_ms)
        u->deadline_ms = p->deadline_ms;
    M_ADD(w->m, idp_calls, 1);
    if (u->reused) {
        up_begin_io(w, u);
    } else {
        int rc = up_connect(w, u);
        if (rc < 0) {
            u->fd = -1;
            idp_failed(w, u, "cannot create a socket");
        }
    }
}

/* A reused keep-alive connection the IdP had closed: try once more on a fresh one. */
static int up_retry_fresh(struct worker *w, struct up *u)
{
    if (!u->reused || u->retried || u->len > 0 || u->timed_out)
        return 0;
    close(u->fd);
    up_tls_reset(u);
    u->fd = -1;
    u->gen++;
    u->retried = 1;
    if (up_connect(w, u) < 0)
        return 0;
    return 1;
}

static void on_up_connect(struct worker *w, struct up *u, int res)
{
    if (res < 0) {
        idp_failed(w, u, u->timed_out ? "timed out" : "connection refused or unreachable");
        return;
    }
    up_begin_io(w, u);
}

static void on_up_send(struct worker *w, struct up *u, int res)
{
    if (res <= 0) {
        if (!up_retry_fresh(w, u))
            idp_failed(w, u, u->timed_out ? "timed out" : "connection reset while sending");
        return;
    }
    if (u->tls) {
        u->tx_off += (uint32_t)res;
        up_tls_flush(w, u);
        return;
    }
    u->req_off += (size_t)res;
    if (u->req_off < u->req_len)
        up_submit_send(w, u);
    else
        up_submit_recv(w, u);
}

/* Feed newly received bytes; 1 = response complete, 0 = need more, -1 = garbage. */
static int up_parse(struct up *u, int eof)
{
    if (!u->hdr_done) {
        struct http_hdr hdrs[MAX_HDRS];
        struct http_resp r = {.hdrs = hdrs, .hdrs_cap = MAX_HDRS};
        int rc = http_parse_response(u->buf, u->len, 65536, &r);
        if (rc == HTTP_PARTIAL)
            return eof ? -1 : 0;
        if (rc < 0 || r.status < 200)
            return -1;
        u->hdr_done = 1;
        u->hdr_len = (uint32_t)rc;
        u->raw_pos = u->hdr_len;
        u->body_len = 0;
        u->body_mode = http_resp_body_mode(&r, 0);
        u->content_length = r.content_length;
        if (u->body_mode == HTTP_BODY_CHUNKED)
            http_chunked_init(&u->chunked);
    }
    switch (u->body_mode) {
    case HTTP_BODY_NONE:
        return 1;
    case HTTP_BODY_LENGTH:
        if (u->len - u->hdr_len >= (uint64_t)u->content_length) {
            u->body_len = (uint32_t)u->content_length;
            return 1;
        }
        return eof ? -1 : 0;
    case HTTP_BODY_CLOSE:
        u->body_len = u->len - u->hdr_len;
        return eof ? 1 : 0;
    default: {
        size_t n = u->len - u->raw_pos;
        ssize_t left = http_chunked_decode(&u->chunked, u->buf + u->raw_pos, &n);
        if (left == HTTP_BAD)
            return -1;
        memmove(u->buf + u->hdr_len + u->body_len, u->buf + u->raw_pos, n);
        u->body_len += (uint32_t)n;
        u->raw_pos = u->len;
        if (left >= 0)
            return 1;
        return eof ? -1 : 0;
    }
    }
}

/* Ciphertext arrived: advance the handshake, or decrypt into u->buf. Returns the plaintext byte
 * count for on_up_recv (0 with *eof at the peer's close), or -1 when it handled the call itself. */
static int up_tls_received(struct worker *w, struct up *u, int res, int *eof)
{
    if (res > 0 && tls_feed(u->tls, u->rx, (size_t)res) < 0) {
        idp_failed(w, u, "out of memory for TLS");
        return -1;
    }
    if (!u->hs_done) {
        if (res == 0) {
            idp_failed(w, u, u->timed_out ? "timed out" : "connection closed during the TLS handshake");
            return -1;
        }
        up_tls_handshake(w, u);
        return -1;
    }
    size_t got = 0;
    for (;;) {
        if (u->len + got == u->cap) {
            uint32_t cap = u->cap ? u->cap * 2 : 8192;
            char *n;
            if (cap > UP_MAX_RESPONSE || !(n = realloc(u->buf, cap))) {
                idp_failed(w, u, cap > UP_MAX_RESPONSE ? "answer too large" : "out of memory");
                return -1;
            }
            u->buf = n;
            u->cap = cap;
        }
        ssize_t n = tls_read(u->tls, u->buf + u->len + got, u->cap - u->len - got);
        if (n > 0) {
            got += (size_t)n;
            continue;
        }
        if (n == -2 || res == 0)
            *eof = 1;
        else if (n < 0) {
            idp_failed(w, u, tls_error(u->tls));
            return -1;
        }
        break;
    }
    return (int)got;
}

static void on_up_recv(struct worker *w, struct up *u, int res)
{
    int rc, eof = 0;

    if (u->tls && res >= 0) {
        int n = up_tls_received(w, u, res, &eof);
        if (n < 0)
            return;
        if (n == 0 && !eof) { /* a TLS record not yet whole, or a session ticket */
            up_tls_flush(w, u);
            return;
        }
        res = eof && n == 0 ? 0 : n;
    }
    if (res < 0 || (res == 0 && !u->hdr_done && u->len == 0)) {
        if (!up_retry_fresh(w, u))
            idp_failed(w, u, u->timed_out       ? "timed out"
                             : u->len || u->hdr_done ? "connection reset mid-answer"
                                                     : "connection closed without an answer");
        return;
    }
    u->len += (uint32_t)res;
    rc = up_parse(u, res == 0 || eof);
    /* The tick shut down a call past its deadline: the end of stream that follows is ours, not
     * the end of a body delimited by the IdP closing, so what was read is not a whole answer. */
    if (rc == 1 && u->timed_out)
        rc = -1;
    if (rc < 0) {
        idp_failed(w, u, u->timed_out ? "timed out" : "garbled answer");
    } else if (rc == 1) {
        idp_answered(w, u);
    } else if (res == 0 || eof) {
        idp_failed(w, u, "connection closed mid-answer");
    } else if (u->tls) {
        up_tls_flush(w, u);
    } else {
        up_submit_recv(w, u);
    }
}

/* IdP call latency in microseconds: a local outpost answers well under a millisecond. */
static void up_latency(struct worker *w, struct up *u)
{
    int64_t us = daemon_mono_us() - u->started_us;
    int b = 0;

    if (us < 0)
        us = 0;
    while (b < METRICS_LAT_BUCKETS - 1 && (double)us > metrics_lat_bounds_ms[b] * 1000)
        b++;
    M_ADD(w->m, idp_lat[b], 1);
    M_ADD(w->m, idp_lat_sum_us, (uint64_t)us);
}

/* The upstream call is over: keep the connection for reuse or close it. */
static void up_finish(struct worker *w, struct up *u, int reusable)
{
    struct pending *p = u->p;

    if (p) {
        p->in_up = 0;
        if (p->orphan || p->background)
            pending_free(p);
    }
    u->p = NULL;
    if (reusable && u->fd >= 0 && w->nidle < UP_IDLE_MAX && !w->draining) {
        u->state = UP_IDLE;
        u->idle_since_ms = w->now_ms;
        u->next_idle = w->idle_head;
        w->idle_head = (uint32_t)(u - w->ups);
        w->nidle++;
    } else {
        up_close(u);
    }
}

/* The breaker's probe asks what last failed (its method-less target, no credentials): an IdP that
 * fails only its auth endpoints must not look healthy because "/" answers. */
static void probe_from(struct worker *w, const struct pending *p)
{
    const char *sp1 = memchr(p->upreq, ' ', p->upreq_len), *sp2;

    if (!sp1 || !(sp2 = memchr(sp1 + 1, ' ', p->upreq_len - (size_t)(sp1 + 1 - p->upreq))))
        return;
    int n = snprintf(w->probe_req, sizeof(w->probe_req),
                     "GET %.*s HTTP/1.1\r\nHost: %s\r\nUser-Agent: authcached-probe\r\n\r\n",
                     (int)(sp2 - sp1 - 1), sp1 + 1, w->cfg->upstream.host_header);
    if (n > 0 && (size_t)n < sizeof(w->probe_req))
        w->probe_len = (size_t)n;
}

/* The IdP failed this call (unreachable, timed out, 5xx, garbage): count it, tell the breaker and
 * the flight's waiters, and answer the connection with a held answer or 503. reusable: the
 * connection itself is fine (a well-formed 5xx). */
static void idp_failure(struct worker *w, struct up *u, const char *cause, int reusable)
{
    struct pending *p = u->p;
    struct conn *c;

    M_ADD(w->m, idp_failures, 1);
    if (!__atomic_load_n(&w->d->breaker.open, __ATOMIC_RELAXED))
        log_warn("idp_error", "identity provider call failed: %s", cause);
    breaker_failure(&w->d->breaker, w->now_ms, cause);
    if (p) {
        probe_from(w, p);
        deliver(w, p, FLIGHT_FAILED);
        if ((c = pending_conn(w, p))) {
            serve_failed(w, c, p, cause);
            p->in_up = 0;
            up_finish(w, u, reusable);
            conn_resume(w, c);
            return;
        }
    }
    if (u->state != UP_FREE || u->fd >= 0)
        up_finish(w, u, reusable);
    else if (p) { /* never got a connection (up_start's stand-in) */
        p->in_up = 0;
        if (p->orphan || p->background)
            pending_free(p);
    }
}

static void idp_failed(struct worker *w, struct up *u, const char *cause)
{
    w->now_ms = daemon_now_ms();
    if (u->fd >= 0)
        up_latency(w, u);
    idp_failure(w, u, cause, 0);
}

static void idp_answered(struct worker *w, struct up *u)
{
    struct http_hdr hdrs[MAX_HDRS];
    struct http_resp r = {.hdrs = hdrs, .hdrs_cap = MAX_HDRS};
    struct pending *p = u->p;
    struct conn *c;
    const char *body;
    int reusable;

    w->now_ms = daemon_now_ms();
    up_latency(w, u);
    http_parse_response(u->buf, u->hdr_len, 65536, &r);
    body = u->buf + u->hdr_len;
    reusable = r.keep_alive && u->body_mode != HTTP_BODY_CLOSE &&
               (u->body_mode != HTTP_BODY_LENGTH || u->len == u->hdr_len + u->body_len);
    if (r.status >= 500) {
        char cause[64];
        snprintf(cause, sizeof(cause), "answered %d", r.status);
        idp_failure(w, u, cause, reusable);
        return;
    }
    breaker_success(&w->d->breaker);
    if (!p) { /* the breaker's probe */
        up_finish(w, u, reusable);
        return;
    }

    c = pending_conn(w, p);
    if (r.status >= 200 && r.status <= 299 && (p->cacheable || p->kind == POLICY_SIGNOUT)) {
        struct policy_identity id;
        int stored = 0;
        if (policy_identity(w->cfg, &r, w->scratch, sizeof(w->scratch), &id) == 0 && id.user.len) {
            if (p->kind == POLICY_SIGNOUT) {
                daemon_purge(w->d, id.user.p, id.user.len, NULL, 0, "sign-out");
                deliver(w, p, FLIGHT_RETRY);
                if (c)
                    answer_identity(w, c, &p->pc, "", 0, RES_SIGNOUT);
                goto done;
            }
            struct shm_answer a = {.key = p->key};
            policy_lifetimes(w->cfg, w->now_ms, p->held_first_seen ? p->held_first_seen : w->now_ms,
                             id.jwt_exp_ms, &a);
            a.host = p->host;
            a.host_len = p->host_len;
            a.user = id.user.p;
            a.user_len = (uint32_t)(id.user.len < SHM_MAX_USER ? id.user.len : SHM_MAX_USER);
            a.hdrs = w->scratch;
            a.hdrs_len = (uint32_t)id.hdrs_len;
            stored = a.session_end_ms > w->now_ms && shm_insert(&w->d->shm, &a) == 0;
            deliver(w, p, stored ? FLIGHT_STORED : FLIGHT_RETRY);
            if (c)
                answer_identity(w, c, &p->pc, w->scratch, id.hdrs_len, p->result);
            goto done;
        }
        if (p->kind == POLICY_SIGNOUT) {
            deliver(w, p, FLIGHT_RETRY);
            if (c)
                answer_identity(w, c, &p->pc, "", 0, RES_SIGNOUT);
            goto done;
        }
        /* A 2xx without the user (an open path): passed on, never stored. */
    } else if (p->cacheable && (r.status < 200 || r.status > 299)) {
        shm_delete(&w->d->shm, p->key.digest);
    }
    deliver(w, p, FLIGHT_RETRY);
    if (c) {
        if (p->kind == POLICY_SIGNOUT)
            answer_identity(w, c, &p->pc, "", 0, RES_SIGNOUT);
        else
            ANSWER(w, c, p->cacheable ? p->result : RES_BYPASS, r.status, u->hdr_len + u->body_len + 256,
                   policy_answer_passthrough(&p->pc, &r, body, u->body_len,
                                             result_names[p->cacheable ? p->result : RES_BYPASS],
                                             out, cap));
        if (!p->pc.keep_alive)
            c->close_after_send = 1;
    }
done:
    p->in_up = 0;
    up_finish(w, u, reusable);
    if (c && c->in_use && !c->closing)
        conn_resume(w, c);
}

/* ---- timers ---- */

static void on_tick(struct worker *w)
{
    w->now_ms = daemon_now_ms();
    for (uint32_t i = 0; i < w->max_conns; i++) {
        struct conn *c = &w->conns[i];
        if (c->in_use && !c->closing && c->deadline_ms && w->now_ms >= c->deadline_ms) {
            M_ADD(w->m, conns_timed_out, 1);
            conn_close(w, c);
        }
    }
    for (uint32_t i = 0; i < w->max_ups; i++) {
        struct up *u = &w->ups[i];
        if ((u->state == UP_CONNECTING || u->state == UP_SENDING || u->state == UP_READING) &&
            !u->timed_out && w->now_ms >= u->deadline_ms) {
            u->timed_out = 1;
            shutdown(u->fd, SHUT_RDWR); /* the pending operation completes with an error */
            if (u->state == UP_CONNECTING) {
                struct io_uring_sqe *sqe = sqe_get(w);
                io_uring_prep_cancel64(sqe, UD(OP_UP_CONNECT, i, u->gen), 0);
                io_uring_sqe_set_data64(sqe, UD(OP_CANCEL, 0, 0));
            }
        }
    }
    /* Idle IdP connections past their time: close (walk the list, drop the old ones). */
    uint32_t *link = &w->idle_head;
    while (*link != UINT32_MAX) {
        struct up *u = &w->ups[*link];
        if (w->now_ms - u->idle_since_ms > UP_IDLE_TIMEOUT_MS || w->draining) {
            *link = u->next_idle;
            w->nidle--;
            up_close(u);
        } else {
            link = &u->next_idle;
        }
    }
    if (w->id == 0) { /* expired answers go a slice at a time: the whole table every ~minute */
        uint64_t nb = w->d->shm.nbuckets, slice = nb / (60000 / (uint64_t)w->tick_ms) + 1;
        shm_sweep(&w->d->shm, w->sweep_next, slice, w->now_ms);
        w->sweep_next = w->sweep_next + slice >= nb ? 0 : w->sweep_next + slice;
    }
    /* A multishot accept that ended (EMFILE/ENFILE, or the CQ full when a burst of connections was
     * queued) is armed again: else this worker's listener would never be accepted from again. */
    if (!w->accept_armed && !w->draining)
        arm_accept(w);
    if (breaker_take_probe(&w->d->breaker, w->now_ms)) { /* one worker wins it */
        M_ADD(w->m, idp_background, 1);
        up_start(w, NULL, OWN_PROBE);
    }
    if (!__atomic_load_n(&w->d->draining, __ATOMIC_ACQUIRE) || w->draining)
        return;
    /* Drain: stop accepting, close idle connections, answer the rest with Connection: close. */
    w->draining = 1;
    w->drain_deadline_ms = w->now_ms + w->cfg->upstream_timeout_ms + 2000;
    if (w->accept_armed) {
        struct io_uring_sqe *sqe = sqe_get(w);
        io_uring_prep_cancel64(sqe, UD(OP_ACCEPT, 0, 0), 0);
        io_uring_sqe_set_data64(sqe, UD(OP_CANCEL, 0, 0));
    }
}

static void drain_idle(struct worker *w)
{
    for (uint32_t i = 0; i < w->max_conns; i++) {
        struct conn *c = &w->conns[i];
        if (c->in_use && !c->closing && !c->waiting && !c->sending && c->out_off >= c->out_len)
            conn_close(w, c);
    }
}

/* ---- cross-worker messages ---- */

void worker_post(struct worker *w, const struct flight_waiter *fw, enum flight_outcome o)
{
    uint64_t one = 1;

    pthread_mutex_lock(&w->qmu);
    if (w->qn == w->qcap) {
        size_t cap = w->qcap ? w->qcap * 2 : 64;
        struct wmsg *n = realloc(w->q, cap * sizeof(*n));
        if (!n) {
            pthread_mutex_unlock(&w->qmu);
            return; /* the waiter's connection is ended by its idle timeout */
        }
        w->q = n;
        w->qcap = cap;
    }
    w->q[w->qn++] = (struct wmsg){fw->slot, fw->gen, o};
    pthread_mutex_unlock(&w->qmu);
    if (write(w->efd, &one, sizeof(one)) < 0) {
        /* the counter cannot overflow in practice; nothing to do */
    }
}

void worker_wake(struct worker *w)
{
    uint64_t one = 1;

    if (write(w->efd, &one, sizeof(one)) < 0) {
    }
}

static void on_event(struct worker *w)
{
    struct wmsg *q;
    size_t n;

    pthread_mutex_lock(&w->qmu);
    q = w->q;
    n = w->qn;
    w->q = NULL;
    w->qn = w->qcap = 0;
    pthread_mutex_unlock(&w->qmu);
    for (size_t i = 0; i < n; i++)
        outcome(w, q[i].slot, q[i].gen, q[i].o);
    free(q);
    if (__atomic_load_n(&w->d->draining, __ATOMIC_ACQUIRE) && !w->draining)
        on_tick(w);
}

/* ---- the loop ---- */

static void dispatch(struct worker *w, struct io_uring_cqe *cqe)
{
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    uint32_t slot = UD_SLOT(ud), gen = UD_GEN(ud);

    switch (UD_OP(ud)) {
    case OP_ACCEPT:
        on_accept(w, cqe);
        break;
    case OP_RECV:
    case OP_SEND: {
        struct conn *c = &w->conns[slot];
        if (slot >= w->max_conns || c->gen != gen || !c->in_use) {
            if (UD_OP(ud) == OP_RECV && cqe->res > 0) /* a late receive: give its buffer back */
                buf_return(w, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
            break;
        }
        if (UD_OP(ud) == OP_RECV)
            on_recv(w, c, cqe);
        else
            on_send(w, c, cqe->res);
        break;
    }
    case OP_UP_CONNECT:
    case OP_UP_SEND:
    case OP_UP_RECV: {
        struct up *u = &w->ups[slot];
        if (slot >= w->max_ups || u->gen != gen || u->state == UP_FREE || u->state == UP_IDLE)
            break;
        w->now_ms = daemon_now_ms();
        if (UD_OP(ud) == OP_UP_CONNECT)
            on_up_connect(w, u, cqe->res);
        else if (UD_OP(ud) == OP_UP_SEND)
            on_up_send(w, u, cqe->res);
        else
            on_up_recv(w, u, cqe->res);
        break;
    }
    case OP_TICK:
        on_tick(w);
        arm_tick(w);
        break;
    case OP_EVENT:
        on_event(w);
        arm_event(w);
        break;
    default:
        break;
    }
}

static int busy_ups(const struct worker *w)
{
    for (uint32_t i = 0; i < w->max_ups; i++)
        if (w->ups[i].state != UP_FREE && w->ups[i].state != UP_IDLE)
            return 1;
    return 0;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;

    /* liburing 2.3 declares io_uring_enable_rings but does not export it: the raw call. */
    if (w->ring_disabled && syscall(__NR_io_uring_register, w->ring.ring_fd,
                                    IORING_REGISTER_ENABLE_RINGS, NULL, 0) < 0) {
        log_error("io_uring", "worker %u cannot enable its ring", w->id);
        abort();
    }
    /* Each io_uring_enter then skips the file-table lookup of the ring's descriptor. Per thread,
     * hence here; without it (an old kernel) everything works the same, a little slower. */
    io_uring_register_ring_fd(&w->ring);
    arm_accept(w);
    arm_tick(w);
    arm_event(w);
    for (;;) {
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;

        flush_sends(w);
        io_uring_submit_and_wait(&w->ring, 1);
        io_uring_for_each_cqe(&w->ring, head, cqe)
        {
            dispatch(w, cqe);
            n++;
        }
        io_uring_cq_advance(&w->ring, n);
        if (w->draining) {
            drain_idle(w);
            if ((w->nconns == 0 && !busy_ups(w)) || w->now_ms > w->drain_deadline_ms)
                break;
        }
    }
    flush_sends(w);
    io_uring_submit(&w->ring);
    return NULL;
}

/* ---- setup ---- */

/* Bind the forward-auth listener with SO_REUSEPORT. The first worker (port_of_first < 0) first
 * binds the address without SO_REUSEPORT, so that an address another process listens on (which
 * SO_REUSEPORT would silently share) is refused; the others bind the port the first one got (which
 * matters for port 0). */
static int make_listener(const struct config_addr *a, int port_of_first, int *port, char *err,
                         size_t errlen)
{
    int fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_storage sa = a->sa, got;
    socklen_t gl = sizeof(got);
    in_port_t *sp = sa.ss_family == AF_INET6 ? &((struct sockaddr_in6 *)&sa)->sin6_port
                                             : &((struct sockaddr_in *)&sa)->sin_port;

    if (fd < 0) {
        snprintf(err, errlen, "--listen %s: socket: %s", a->text, strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (port_of_first >= 0) {
        *sp = htons((uint16_t)port_of_first);
    } else if (*sp != 0) {
        if (bind(fd, (const struct sockaddr *)&sa, a->len) < 0) {
            snprintf(err, errlen, "--listen %s: %s", a->text, strerror(errno));
            close(fd);
            return -1;
        }
        close(fd); /* the probe: now the real one */
        if ((fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
            snprintf(err, errlen, "--listen %s: socket: %s", a->text, strerror(errno));
            return -1;
        }
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    /* Answers leave in one send each: no reason to hold a segment back. Accepted sockets inherit
     * it, which saves a setsockopt per connection. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&sa, a->len) < 0 || listen(fd, 4096) < 0) {
        snprintf(err, errlen, "--listen %s: %s", a->text, strerror(errno));
        close(fd);
        return -1;
    }
    getsockname(fd, (struct sockaddr *)&got, &gl);
    *port = ntohs(got.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&got)->sin6_port
                                            : ((struct sockaddr_in *)&got)->sin_port);
    return fd;
}

static int resolve_upstream(struct worker *w, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    char port[8];
    int rc;

    snprintf(port, sizeof(port), "%u", w->cfg->upstream.port);
    if ((rc = getaddrinfo(w->cfg->upstream.host, port, &hints, &res)) != 0) {
        snprintf(err, errlen, "--upstream: cannot resolve %s: %s", w->cfg->upstream.host,
                 gai_strerror(rc));
        return -1;
    }
    memcpy(&w->up_addr, res->ai_addr, res->ai_addrlen);
    w->up_addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

struct worker *worker_new(struct daemon *d, unsigned id, unsigned max_conns, unsigned max_ups,
                          char *err, size_t errlen, int *usage_error)
{
    struct worker *w = calloc(1, sizeof(*w));
    struct io_uring_params params = {0};
    struct io_uring_buf_reg reg = {0};
    int rc;

    *usage_error = 0;

    if (!w) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    w->d = d;
    w->cfg = d->cfg;
    w->id = id;
    w->m = &d->metrics[id];
    w->listen_fd = w->efd = -1;
    pthread_mutex_init(&w->qmu, NULL);
    /* Refresh ahead by as much as the IdP may take (then a busy answer never goes stale), but
     * not more than a fifth of fresh-ttl: every ms earlier is IdP load. A pair in use all the time
     * costs fresh-ttl / (fresh-ttl - this) IdP calls per fresh-ttl: 1.07 with the defaults. */
    w->refresh_ahead_ms = d->cfg->fresh_ttl_ms / 5;
    if (w->refresh_ahead_ms > d->cfg->upstream_timeout_ms)
        w->refresh_ahead_ms = d->cfg->upstream_timeout_ms;
    w->max_conns = max_conns;
    w->max_ups = max_ups < 1024 ? max_ups : 1024;
    w->conns = calloc(max_conns, sizeof(*w->conns));
    w->dirty = calloc(max_conns, sizeof(*w->dirty));
    w->ups = calloc(w->max_ups, sizeof(*w->ups));
    if (!w->conns || !w->dirty || !w->ups) {
        snprintf(err, errlen, "out of memory for %u connections", max_conns);
        goto fail;
    }
    for (uint32_t i = 0; i < max_conns; i++) {
        w->conns[i].fd = -1;
        w->conns[i].next_free = i + 1 < max_conns ? i + 1 : UINT32_MAX;
    }
    w->free_head = 0;
    for (uint32_t i = 0; i < w->max_ups; i++)
        w->ups[i].fd = -1;
    w->idle_head = UINT32_MAX;

    /* Single issuer: the worker thread, which enables the ring when it starts (worker_main). */
    params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED;
    rc = io_uring_queue_init_params(RING_ENTRIES, &w->ring, &params);
    w->ring_disabled = rc == 0;
    if (rc < 0) {
        memset(&params, 0, sizeof(params));
        rc = io_uring_queue_init_params(RING_ENTRIES, &w->ring, &params);
    }
    if (rc < 0) {
        snprintf(err, errlen, "io_uring: %s", strerror(-rc));
        goto fail;
    }
    w->bufs = mmap(NULL, (size_t)NBUF * BUFSZ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    w->br = mmap(NULL, NBUF * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (w->bufs == MAP_FAILED || w->br == MAP_FAILED) {
        snprintf(err, errlen, "out of memory for receive buffers");
        goto fail;
    }
    reg.ring_addr = (unsigned long)w->br;
    reg.ring_entries = NBUF;
    reg.bgid = 0;
    if ((rc = io_uring_register_buf_ring(&w->ring, &reg, 0)) < 0) {
        snprintf(err, errlen, "io_uring provided buffers: %s", strerror(-rc));
        goto fail;
    }
    io_uring_buf_ring_init(w->br);
    for (unsigned i = 0; i < NBUF; i++)
        io_uring_buf_ring_add(w->br, w->bufs + (size_t)i * BUFSZ, BUFSZ, (unsigned short)i,
                              io_uring_buf_ring_mask(NBUF), (int)i);
    io_uring_buf_ring_advance(w->br, NBUF);

    if ((w->listen_fd = make_listener(&d->cfg->listen, id > 0 ? d->workers[0]->port : -1, &w->port,
                                      err, errlen)) < 0)
        goto fail_usage;
    if (resolve_upstream(w, err, errlen) < 0)
        goto fail_usage;
    if ((w->efd = eventfd(0, EFD_CLOEXEC)) < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        goto fail;
    }
    w->tick_ms = d->cfg->upstream_timeout_ms / 8;
    if (w->tick_ms > 100)
        w->tick_ms = 100;
    if (w->tick_ms < 5)
        w->tick_ms = 5;
    w->tick_ts.tv_sec = w->tick_ms / 1000;
    w->tick_ts.tv_nsec = (w->tick_ms % 1000) * 1000000;
    w->probe_len = (size_t)snprintf(w->probe_req, sizeof(w->probe_req),
                                    "GET %s/ HTTP/1.1\r\nHost: %s\r\nUser-Agent: authcached-probe\r\n\r\n",
                                    d->cfg->upstream.base_path, d->cfg->upstream.host_header);
    w->now_ms = daemon_now_ms();
    return w;
fail_usage:
    *usage_error = 1;
fail:
    worker_free(w);
    return NULL;
}

int worker_start(struct worker *w)
{
    int rc = pthread_create(&w->thread, NULL, worker_main, w);

    return -rc;
}

void worker_join(struct worker *w)
{
    pthread_join(w->thread, NULL);
}

int worker_port(const struct worker *w)
{
    return w->port;
}

void worker_free(struct worker *w)
{
    if (!w)
        return;
    if (w->conns)
        for (uint32_t i = 0; i < w->max_conns; i++) {
            if (w->conns[i].in_use)
                close(w->conns[i].fd);
            free(w->conns[i].in);
            free(w->conns[i].out);
            if (w->conns[i].p)
                pending_free(w->conns[i].p);
        }
    if (w->ups)
        for (uint32_t i = 0; i < w->max_ups; i++) {
            if (w->ups[i].fd >= 0)
                close(w->ups[i].fd);
            if (w->ups[i].p && (w->ups[i].p->orphan || w->ups[i].p->background))
                pending_free(w->ups[i].p);
            free(w->ups[i].buf);
            free(w->ups[i].tx);
            free(w->ups[i].rx);
            tls_free(w->ups[i].tls);
        }
    if (w->ring.ring_fd > 0)
        io_uring_queue_exit(&w->ring);
    if (w->bufs && w->bufs != MAP_FAILED)
        munmap(w->bufs, (size_t)NBUF * BUFSZ);
    if (w->br && w->br != MAP_FAILED)
        munmap(w->br, NBUF * sizeof(struct io_uring_buf));
    if (w->listen_fd >= 0)
        close(w->listen_fd);
    if (w->efd >= 0)
        close(w->efd);
    free(w->conns);
    free(w->dirty);
    free(w->ups);
    free(w->q);
    pthread_mutex_destroy(&w->qmu);
    free(w);
}
