/*
 * upstream.c — calls to the IdP: one call API (upstream__call: a request, a deadline, a completion)
 * over this worker's pool of keep-alive connections, driven by the worker's ring: connect, send,
 * receive, frame the answer (Content-Length, chunked, or close-delimited), with TLS in between for
 * https upstreams.
 *
 * A call ends exactly once, in its completion (upstream_done_fn), with the parsed answer or a
 * cause. Before the completion runs the connection is already back in the idle pool (or closed),
 * its receive buffer swapped with the worker's spare one: so a request the completion starts (a
 * pipelined miss, a flight waiter asking again) can reuse the connection while the completion still
 * reads the answer. The answer's head is parsed once, when it is whole.
 *
 * Deadlines are monotonic: the tick (upstream__tick) shuts a call past its deadline down, and the
 * operation in flight then completes with an error that fails the call as "timed out".
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "tls.h"
#include "worker_int.h"

#define UP_MAX_RESPONSE (1u << 20)
#define UP_IDLE_MAX 64
#define UP_IDLE_TIMEOUT_MS 30000
#define TLS_TX_CAP (64u << 10)
#define TLS_RX_CAP (16u << 10)

static uint32_t up_slot(const struct worker *w, const struct up *u)
{
    return (uint32_t)(u - w->ups);
}

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
    u->done = NULL;
}

/* The call is over: keep the connection for reuse or close it. */
static void up_release(struct worker *w, struct up *u, int reusable)
{
    u->done = NULL;
    if (reusable && u->fd >= 0 && w->nidle < UP_IDLE_MAX && !w->draining) {
        u->state = UP_IDLE;
        u->idle_since_ms = w->mono_ms;
        u->next_idle = w->idle_head;
        w->idle_head = up_slot(w, u);
        w->nidle++;
    } else {
        up_close(u);
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

/* The call failed: the connection is closed, then the completion is told why (local: on this
 * side, not the IdP's). */
static void up_fail_as(struct worker *w, struct up *u, const char *cause, int local)
{
    upstream_done_fn *done = u->done;
    uint32_t ctx = u->ctx, ctx_gen = u->ctx_gen;

    loop__clock(w);
    if (u->fd >= 0)
        up_latency(w, u);
    up_close(u);
    done(w, ctx, ctx_gen, NULL, NULL, 0, cause, local);
}

static void up_fail(struct worker *w, struct up *u, const char *cause)
{
    up_fail_as(w, u, cause, 0);
}

/* A whole answer: the connection goes back to the pool with the spare buffer, and the completion
 * reads the answer from the one swapped out. */
static void up_answered(struct worker *w, struct up *u)
{
    upstream_done_fn *done = u->done;
    uint32_t ctx = u->ctx, ctx_gen = u->ctx_gen, body_len = u->body_len;
    size_t cap = u->cap;
    uint32_t hdr_len = u->hdr_len;
    struct http_resp r = u->resp;
    char *buf = u->buf;
    struct http_hdr *hdrs = u->hdrs;
    int reusable = r.keep_alive && u->body_mode != HTTP_BODY_CLOSE &&
                   (u->body_mode != HTTP_BODY_LENGTH || u->len == u->hdr_len + u->body_len);

    loop__clock(w);
    up_latency(w, u);
    u->buf = w->spare_buf;
    u->cap = w->spare_cap;
    u->hdrs = w->spare_hdrs;
    u->len = 0;
    up_release(w, u, reusable);
    w->spare_buf = buf;
    w->spare_cap = cap;
    w->spare_hdrs = hdrs;
    done(w, ctx, ctx_gen, &r, buf + hdr_len, body_len, NULL, 0);
}

static void up_submit_send(struct worker *w, struct up *u)
{
    struct io_uring_sqe *sqe = loop__sqe(w);

    u->state = UP_SENDING;
    io_uring_prep_send(sqe, u->fd, u->req + u->req_off, u->req_len - u->req_off, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, UD(OP_UP_SEND, up_slot(w, u), u->gen));
}

/* Room for more of the answer in u->buf than used: 0, or -1 when the call failed (too large, no
 * memory). */
static int up_room(struct worker *w, struct up *u, size_t used)
{
    int rc = BUF_RESERVE(u->buf, u->cap, used + 1, 8192, UP_MAX_RESPONSE);

    if (rc < 0) {
        up_fail_as(w, u, rc == -E2BIG ? "answer too large" : "out of memory", rc == -ENOMEM);
        return -1;
    }
    return 0;
}

/* Receive more of the answer (callers return right after calling this). */
static void up_submit_recv(struct worker *w, struct up *u)
{
    struct io_uring_sqe *sqe;

    if (up_room(w, u, u->len) < 0)
        return;
    sqe = loop__sqe(w);
    u->state = UP_READING;
    io_uring_prep_recv(sqe, u->fd, u->buf + u->len, u->cap - u->len, 0);
    io_uring_sqe_set_data64(sqe, UD(OP_UP_RECV, up_slot(w, u), u->gen));
}

/* ---- TLS: the same calls, with ciphertext in between ---- */

static void up_submit_recv_tls(struct worker *w, struct up *u)
{
    struct io_uring_sqe *sqe = loop__sqe(w);

    u->state = UP_READING;
    io_uring_prep_recv(sqe, u->fd, u->rx, TLS_RX_CAP, 0);
    io_uring_sqe_set_data64(sqe, UD(OP_UP_RECV, up_slot(w, u), u->gen));
}

/* Send what TLS has to send, else wait for the peer. */
static void up_tls_flush(struct worker *w, struct up *u)
{
    if (u->tx_off >= u->tx_len) {
        u->tx_off = 0;
        u->tx_len = (uint32_t)tls_take(u->tls, u->tx, TLS_TX_CAP);
    }
    if (u->tx_len > u->tx_off) {
        struct io_uring_sqe *sqe = loop__sqe(w);
        u->state = UP_SENDING;
        io_uring_prep_send(sqe, u->fd, u->tx + u->tx_off, u->tx_len - u->tx_off, MSG_NOSIGNAL);
        io_uring_sqe_set_data64(sqe, UD(OP_UP_SEND, up_slot(w, u), u->gen));
    } else {
        up_submit_recv_tls(w, u);
    }
}

/* Handshake done: encrypt the request and send it. */
static void up_tls_send_request(struct worker *w, struct up *u)
{
    if (tls_write(u->tls, u->req, u->req_len) < 0) {
        up_fail(w, u, tls_error(u->tls));
        return;
    }
    up_tls_flush(w, u);
}

static void up_tls_handshake(struct worker *w, struct up *u)
{
    int rc = tls_handshake(u->tls);

    if (rc < 0) {
        log_warn("idp_tls", "TLS with the identity provider failed: %s", tls_error(u->tls));
        up_fail(w, u, "TLS handshake failed");
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
        if ((!u->tx && !(u->tx = malloc(TLS_TX_CAP))) ||
            (!u->rx && !(u->rx = malloc(TLS_RX_CAP))) ||
            !(u->tls = tls_new(w->cfg->upstream.host))) {
            up_fail_as(w, u, "out of memory for TLS", 1);
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
    sqe = loop__sqe(w);
    io_uring_prep_connect(sqe, u->fd, (struct sockaddr *)&w->up_addr, w->up_addrlen);
    io_uring_sqe_set_data64(sqe, UD(OP_UP_CONNECT, up_slot(w, u), u->gen));
    return 0;
}

void upstream__call(struct worker *w, const char *req, size_t len, int64_t deadline_ms,
                    upstream_done_fn *done, uint32_t ctx, uint32_t ctx_gen)
{
    struct up *u = NULL;

    if (w->idle_head != SLOT_NONE) {
        u = &w->ups[w->idle_head];
        w->idle_head = u->next_idle;
        w->nidle--;
        u->reused = 1;
    } else if (!(u = up_alloc(w))) {
        done(w, ctx, ctx_gen, NULL, NULL, 0, "too many IdP connections", 1);
        return;
    }
    u->done = done;
    u->ctx = ctx;
    u->ctx_gen = ctx_gen;
    u->timed_out = 0;
    u->retried = 0;
    u->req = req;
    u->req_len = len;
    u->head = len >= 5 && memcmp(req, "HEAD ", 5) == 0;
    u->started_us = daemon_mono_us();
    u->deadline_ms = deadline_ms;
    M_ADD(w->m, idp_calls, 1);
    if (u->reused) {
        up_begin_io(w, u);
    } else if (up_connect(w, u) < 0) {
        u->fd = -1;
        up_fail_as(w, u, "cannot create a socket", 1);
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

void upstream__connected(struct worker *w, struct up *u, int res)
{
    if (res < 0) {
        up_fail(w, u, u->timed_out ? "timed out" : "connection refused or unreachable");
        return;
    }
    up_begin_io(w, u);
}

void upstream__sent(struct worker *w, struct up *u, int res)
{
    if (res <= 0) {
        if (!up_retry_fresh(w, u))
            up_fail(w, u, u->timed_out ? "timed out" : "connection reset while sending");
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

/* Feed newly received bytes; 1 = answer complete, 0 = need more, -1 = garbage (or no memory for
 * the head's fields). The head is parsed once, into u->resp, when it is whole. */
static int up_parse(struct up *u, int eof)
{
    if (!u->hdr_done) {
        if (!u->hdrs && !(u->hdrs = malloc(MAX_HDRS * sizeof(*u->hdrs))))
            return -1;
        u->resp = (struct http_resp){.hdrs = u->hdrs, .hdrs_cap = MAX_HDRS};
        int rc = http_parse_response(u->buf, u->len, 65536, &u->resp);
        if (rc == HTTP_PARTIAL)
            return eof ? -1 : 0;
        if (rc < 0 || u->resp.status < 200)
            return -1;
        u->hdr_done = 1;
        u->hdr_len = (uint32_t)rc;
        u->raw_pos = u->hdr_len;
        u->body_len = 0;
        u->body_mode = http_resp_body_mode(&u->resp, u->head);
        if (u->body_mode == HTTP_BODY_CHUNKED)
            http_chunked_init(&u->chunked);
    }
    switch (u->body_mode) {
    case HTTP_BODY_NONE:
        return 1;
    case HTTP_BODY_LENGTH:
        if (u->len - u->hdr_len >= (uint64_t)u->resp.content_length) {
            u->body_len = (uint32_t)u->resp.content_length;
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
 * count for upstream__received (0 with *eof at the peer's close), or -1 when it handled the call
 * itself. */
static int up_tls_received(struct worker *w, struct up *u, int res, int *eof)
{
    if (res > 0 && tls_feed(u->tls, u->rx, (size_t)res) < 0) {
        up_fail_as(w, u, "out of memory for TLS", 1);
        return -1;
    }
    if (!u->hs_done) {
        if (res == 0) {
            up_fail(w, u,
                    u->timed_out ? "timed out" : "connection closed during the TLS handshake");
            return -1;
        }
        up_tls_handshake(w, u);
        return -1;
    }
    size_t got = 0;
    for (;;) {
        if (up_room(w, u, u->len + got) < 0)
            return -1;
        ssize_t n = tls_read(u->tls, u->buf + u->len + got, u->cap - u->len - got);
        if (n > 0) {
            got += (size_t)n;
            continue;
        }
        if (n == -2 || res == 0)
            *eof = 1;
        else if (n < 0) {
            up_fail(w, u, tls_error(u->tls));
            return -1;
        }
        break;
    }
    return (int)got;
}

void upstream__received(struct worker *w, struct up *u, int res)
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
            up_fail(w, u,
                    u->timed_out            ? "timed out"
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
    if (rc < 0)
        up_fail(w, u, u->timed_out ? "timed out" : "garbled answer");
    else if (rc == 1)
        up_answered(w, u);
    else if (res == 0 || eof)
        up_fail(w, u, "connection closed mid-answer");
    else if (u->tls)
        up_tls_flush(w, u);
    else
        up_submit_recv(w, u);
}

void upstream__tick(struct worker *w)
{
    for (uint32_t i = 0; i < w->max_ups; i++) {
        struct up *u = &w->ups[i];
        if ((u->state == UP_CONNECTING || u->state == UP_SENDING || u->state == UP_READING) &&
            !u->timed_out && w->mono_ms >= u->deadline_ms) {
            u->timed_out = 1;
            shutdown(u->fd, SHUT_RDWR); /* the pending operation completes with an error */
            if (u->state == UP_CONNECTING)
                loop__cancel(w, UD(OP_UP_CONNECT, i, u->gen));
        }
    }
    /* Idle IdP connections past their time: close (walk the list, drop the old ones). */
    uint32_t *link = &w->idle_head;
    while (*link != SLOT_NONE) {
        struct up *u = &w->ups[*link];
        if (w->mono_ms - u->idle_since_ms > UP_IDLE_TIMEOUT_MS || w->draining) {
            *link = u->next_idle;
            w->nidle--;
            up_close(u);
        } else {
            link = &u->next_idle;
        }
    }
}

int upstream__busy(const struct worker *w)
{
    for (uint32_t i = 0; i < w->max_ups; i++)
        if (w->ups[i].state != UP_FREE && w->ups[i].state != UP_IDLE)
            return 1;
    return 0;
}

void upstream__free_all(struct worker *w)
{
    for (uint32_t i = 0; w->ups && i < w->max_ups; i++) {
        if (w->ups[i].fd >= 0)
            close(w->ups[i].fd);
        free(w->ups[i].buf);
        free(w->ups[i].hdrs);
        free(w->ups[i].tx);
        free(w->ups[i].rx);
        tls_free(w->ups[i].tls);
    }
    free(w->spare_buf);
    free(w->spare_hdrs);
}
