/*
 * conn.c — client connections: accept, receive, parse, answer, send, close.
 *
 * A connection takes a multishot receive into the worker's ring of provided buffers; received bytes
 * are appended to its input and the buffer goes straight back to the ring. Complete requests are
 * parsed in order and handed to fa.c; answers are written into the connection's output and sent
 * once per loop turn (conn__flush), so pipelined requests go out in one send. A request that needs
 * the IdP parks the connection (CONN_WAITING): its later input stays unparsed until the answer is
 * out, which keeps answers in order.
 *
 * Timers: a connection is on at most one of two lists, waiting for the rest of a request head
 * (HEADER_TIMEOUT_MS) or idle between requests (IDLE_TIMEOUT_MS). Every entry of a list got the
 * same timeout on the same monotonic clock, so appending keeps each list in deadline order and the
 * tick looks only at the expired heads: its cost does not grow with the number of connection slots.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "worker_int.h"

/* ---- timers ---- */

static uint32_t slot_of(const struct worker *w, const struct conn *c)
{
    return (uint32_t)(c - w->conns);
}

static void timer_unlink(struct worker *w, struct conn *c)
{
    struct timer_list *l;

    if (c->timer == TIMER_NONE)
        return;
    l = &w->timers[c->timer];
    if (c->tprev != SLOT_NONE)
        w->conns[c->tprev].tnext = c->tnext;
    else
        l->head = c->tnext;
    if (c->tnext != SLOT_NONE)
        w->conns[c->tnext].tprev = c->tprev;
    else
        l->tail = c->tprev;
    c->timer = TIMER_NONE;
    c->deadline_ms = 0;
}

/* Start timer t from now (monotonic), or none. w->mono_ms never decreases, so the tail is the
 * latest deadline of its list. */
static void timer_set(struct worker *w, struct conn *c, enum conn_timer t)
{
    struct timer_list *l;
    uint32_t slot = slot_of(w, c);

    timer_unlink(w, c);
    if (t == TIMER_NONE)
        return;
    l = &w->timers[t];
    c->timer = t;
    c->deadline_ms = w->mono_ms + (t == TIMER_HEADER ? HEADER_TIMEOUT_MS : IDLE_TIMEOUT_MS);
    c->tnext = SLOT_NONE;
    c->tprev = l->tail;
    if (l->tail != SLOT_NONE)
        w->conns[l->tail].tnext = slot;
    else
        l->head = slot;
    l->tail = slot;
}

void conn__expire(struct worker *w)
{
    for (int t = TIMER_HEADER; t < TIMER_KINDS; t++) {
        struct timer_list *l = &w->timers[t];
        while (l->head != SLOT_NONE && w->conns[l->head].deadline_ms <= w->mono_ms) {
            M_ADD(w->m, conns_timed_out, 1);
            conn__close(w, &w->conns[l->head]); /* unlinks it */
        }
    }
}

/* ---- output ---- */

static int out_reserve(struct conn *c, size_t need)
{
    return BUF_RESERVE(c->out, c->out_cap, c->out_len + need, 2048, 0);
}

static void mark_dirty(struct worker *w, struct conn *c)
{
    if (!c->dirty) {
        c->dirty = 1;
        w->dirty[w->ndirty++] = slot_of(w, c);
    }
}

static void count_answer(struct worker *w, enum result r, int status)
{
    M_ADD(w->m, results[r], 1);
    M_ADD(w->m, status[status >= 100 && status < 600 ? status / 100 : 0], 1);
}

/* Room for an answer of up to max bytes at the end of c's output, or NULL (c is then closed). */
static char *answer_begin(struct worker *w, struct conn *c, size_t max, size_t *cap)
{
    if (out_reserve(c, max) < 0) {
        conn__close(w, c);
        return NULL;
    }
    *cap = c->out_cap - c->out_len;
    return c->out + c->out_len;
}

/* The answer of n bytes written at answer_begin is complete (n 0: it did not fit; close). */
static void answer_end(struct worker *w, struct conn *c, const struct policy_conn *pc, size_t n,
                       enum result res, int status)
{
    if (n == 0) {
        conn__close(w, c);
        return;
    }
    c->out_len += (uint32_t)n;
    count_answer(w, res, status);
    mark_dirty(w, c);
    if (!pc->keep_alive)
        c->close_after_send = 1;
}

void conn__answer_status(struct worker *w, struct conn *c, const struct policy_conn *pc, int status,
                         const char *text)
{
    size_t cap;
    char *out = answer_begin(w, c, 512, &cap);

    if (out)
        answer_end(w, c, pc, policy_answer_status(pc, status, text, out, cap), RES_REJECTED,
                   status);
}

void conn__answer_identity(struct worker *w, struct conn *c, const struct policy_conn *pc,
                           const char *hdrs, size_t len, enum result res)
{
    size_t cap;
    char *out = answer_begin(w, c, len + 128, &cap);

    if (out)
        answer_end(w, c, pc, policy_answer_identity(pc, hdrs, len, result_names[res], out, cap),
                   res, 200);
}

void conn__answer_unavailable(struct worker *w, struct conn *c, const struct policy_conn *pc,
                              const char *cause)
{
    int retry = breaker_retry_after_s(&w->d->breaker, w->mono_ms);
    size_t cap;
    char *out;

    if ((out = answer_begin(w, c, 512, &cap)))
        answer_end(w, c, pc, policy_answer_unavailable(pc, cause, retry, out, cap), RES_UNAVAILABLE,
                   503);
}

void conn__answer_passthrough(struct worker *w, struct conn *c, const struct policy_conn *pc,
                              const struct http_resp *r, const char *body, size_t body_len,
                              enum result res)
{
    size_t cap, head = 0;
    char *out;

    for (size_t i = 0; i < r->nhdrs; i++)
        head += r->hdrs[i].name_len + r->hdrs[i].value_len + 4;
    if ((out = answer_begin(w, c, head + r->reason_len + body_len + 288, &cap)))
        answer_end(w, c, pc,
                   policy_answer_passthrough(pc, r, body, body_len, result_names[res], out, cap),
                   res, r->status);
}

void conn__flush(struct worker *w)
{
    for (uint32_t i = 0; i < w->ndirty; i++) {
        struct conn *c = &w->conns[w->dirty[i]];
        c->dirty = 0;
        if (c->state == CONN_FREE || c->sending || c->out_off >= c->out_len)
            continue;
        struct io_uring_sqe *sqe = loop__sqe(w);
        io_uring_prep_send(sqe, c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        io_uring_sqe_set_data64(sqe, UD(OP_SEND, w->dirty[i], c->gen));
        c->sending = 1;
    }
    w->ndirty = 0;
}

/* ---- lifecycle ---- */

/* Closed through the ring, not with close(2): one system call less per connection, batched with
 * the turn's other submissions; no completion is posted unless it fails (nothing to do then). No
 * operation refers to the descriptor any more, and its number cannot be handed out again by accept
 * before the close has run. */
static void conn_release(struct worker *w, struct conn *c)
{
    struct io_uring_sqe *sqe = loop__sqe(w);

    io_uring_prep_close(sqe, c->fd);
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    io_uring_sqe_set_data64(sqe, UD(OP_CLOSE, 0, 0));
    timer_unlink(w, c);
    c->fd = -1;
    c->state = CONN_FREE;
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
    w->free_head = slot_of(w, c);
    w->nconns--;
    M_ADD(w->m, conns_open, (uint64_t)-1);
}

/* Close: cancel the multishot receive; the slot is released when no operation refers to it. A
 * request it was waiting on is told (fa.c ends it, or its IdP call does when it completes). */
void conn__close(struct worker *w, struct conn *c)
{
    if (c->state == CONN_FREE || c->state == CONN_CLOSING)
        return;
    if (c->state == CONN_WAITING)
        fa__conn_gone(w, c->req_slot, c->req_gen);
    c->state = CONN_CLOSING;
    timer_unlink(w, c);
    if (c->recv_armed)
        loop__cancel(w, UD(OP_RECV, slot_of(w, c), c->gen));
    if (!c->recv_armed && !c->sending)
        conn_release(w, c);
}

/* Release a closing connection once no operation refers to it (not twice: conn__close may have
 * released it already). */
static void conn_maybe_release(struct worker *w, struct conn *c)
{
    if (c->state == CONN_CLOSING && !c->recv_armed && !c->sending)
        conn_release(w, c);
}

struct conn *conn__get(struct worker *w, uint32_t slot, uint32_t gen)
{
    struct conn *c;

    if (slot >= w->max_conns)
        return NULL;
    c = &w->conns[slot];
    if (c->gen != gen || (c->state != CONN_OPEN && c->state != CONN_WAITING))
        return NULL;
    return c;
}

void conn__drain_idle(struct worker *w)
{
    int64_t now = daemon_mono_ms();

    /* Only a connection idle for DRAIN_IDLE_GRACE_MS: a client that got an answer sends its next
     * request on the same connection at once, and a close racing that request fails it (a reset,
     * or a connection closed with no answer). Given the grace, that request arrives and is
     * answered with Connection: close; a connection that stays idle is closed. */
    for (uint32_t i = 0; i < w->max_conns; i++) {
        struct conn *c = &w->conns[i];
        if (c->state == CONN_OPEN && !c->sending && c->out_off >= c->out_len && c->in_len == 0 &&
            (c->timer != TIMER_IDLE ||
             now - (c->deadline_ms - IDLE_TIMEOUT_MS) >= DRAIN_IDLE_GRACE_MS))
            conn__close(w, c);
    }
}

static void arm_recv(struct worker *w, struct conn *c)
{
    struct io_uring_sqe *sqe = loop__sqe(w);

    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = 0;
    io_uring_sqe_set_data64(sqe, UD(OP_RECV, slot_of(w, c), c->gen));
    c->recv_armed = 1;
}

static int evict_idle(struct worker *w);
static void conn_open(struct worker *w, int fd);

void conn__accept(struct worker *w, struct io_uring_cqe *cqe)
{
    int fd = cqe->res;
    unsigned li = UD_SLOT(io_uring_cqe_get_data64(cqe)); /* which listen_fd */

    if (!(cqe->flags & IORING_CQE_F_MORE) && li < w->nlisten) {
        /* The multishot accept ended: the CQ overflowed (a burst), or no descriptor was left. At
         * once again in the first case; in the second the tick does it, so that a process out of
         * descriptors does not spin. */
        w->accept_armed[li] = 0;
        if (fd != -EMFILE && fd != -ENFILE && fd != -ECANCELED && !w->draining)
            loop__arm_accept(w, li);
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
    /* Draining: an accept that completed before its cancel is a connection the kernel has
     * established and taken from the queue; nobody else can serve it, so it is served (its answer
     * says Connection: close) rather than reset. */
    if (w->free_head == SLOT_NONE || w->nwaiting) {
        /* Full: the oldest idle connection makes room (its slot is free once its receive is
         * cancelled; the new one waits for it in w->waiting, taken each turn by conn__adopt).
         * Idle connections must not starve new checks. While others wait, a newcomer queues
         * behind them (a slot freed this turn is theirs) and makes room of its own. Nothing
         * idle and no slot free, or too many waiting: the newest is closed at once, cleanly. */
        int room = w->free_head != SLOT_NONE;
        if (w->nwaiting == CONN_WAITING_MAX || (!evict_idle(w) && !room)) {
            close(fd);
            M_ADD(w->m, conns_rejected, 1);
            return;
        }
        w->waiting[w->nwaiting++] = fd;
        return;
    }
    conn_open(w, fd);
}

/* The accepted connections that waited for a slot, while there are slots (each loop turn: never
 * inside another connection's handling, whose slot may be the one freed). */
void conn__adopt(struct worker *w)
{
    uint32_t i = 0;

    for (; i < w->nwaiting && w->free_head != SLOT_NONE; i++)
        conn_open(w, w->waiting[i]);
    if (i && i < w->nwaiting)
        memmove(w->waiting, w->waiting + i, (w->nwaiting - i) * sizeof(*w->waiting));
    w->nwaiting -= i;
    if (w->draining) {
        for (i = 0; i < w->nwaiting; i++) {
            close(w->waiting[i]);
            M_ADD(w->m, conns_rejected, 1);
        }
        w->nwaiting = 0;
    }
}

/* Close the connection idle the longest that has nothing being sent (the idle list is in deadline
 * order, so its head; a few are looked at). Returns 1 if one was closed. */
static int evict_idle(struct worker *w)
{
    uint32_t s = w->timers[TIMER_IDLE].head;

    for (int n = 0; s != SLOT_NONE && n < 8; n++, s = w->conns[s].tnext) {
        struct conn *c = &w->conns[s];
        if (c->state == CONN_OPEN && !c->sending && c->out_off >= c->out_len && c->in_len == 0) {
            conn__close(w, c);
            M_ADD(w->m, conns_evicted, 1);
            return 1;
        }
    }
    return 0;
}

static void conn_open(struct worker *w, int fd)
{
    uint32_t slot = w->free_head;
    struct conn *c = &w->conns[slot];

    w->free_head = c->next_free; /* TCP_NODELAY comes from the listener (Linux copies it) */
    c->fd = fd;
    c->state = CONN_OPEN;
    c->body = BODY_NONE;
    c->sending = c->close_after_send = c->dirty = c->eof = c->in_process = 0;
    c->head_seen = 0;
    c->body_skip = 0;
    c->req_slot = SLOT_NONE;
    timer_set(w, c, TIMER_IDLE);
    w->nconns++;
    M_ADD(w->m, conns_accepted, 1);
    M_ADD(w->m, conns_open, 1);
    arm_recv(w, c);
}

/* ---- input ---- */

static int in_append(struct conn *c, const char *data, size_t len)
{
    int rc = BUF_RESERVE(c->in, c->in_cap, c->in_len + len, 4096, 0);

    if (rc < 0)
        return rc;
    memcpy(c->in + c->in_len, data, len);
    c->in_len += (uint32_t)len;
    return 0;
}

static void conn_process(struct worker *w, struct conn *c);

void conn__recv(struct worker *w, struct conn *c, struct io_uring_cqe *cqe)
{
    int more = (cqe->flags & IORING_CQE_F_MORE) != 0, rearm = 0;

    if (!more)
        c->recv_armed = 0;
    if (cqe->res > 0) {
        unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        const char *data = (const char *)w->bufs + (size_t)bid * BUFSZ;
        if (c->state != CONN_CLOSING) {
            if (in_append(c, data, (size_t)cqe->res) < 0)
                conn__close(w, c);
            else
                conn_process(w, c);
        }
        loop__buf_return(w, bid);
        rearm = !more;
    } else if (cqe->res == -ENOBUFS) {
        rearm = 1; /* buffers are back after this turn: arm again then */
    } else if (c->state != CONN_CLOSING) {
        c->eof = 1;
        if (c->state != CONN_WAITING && !c->sending && c->out_off >= c->out_len)
            conn__close(w, c);
        else
            c->close_after_send = 1;
    }
    if (rearm && (c->state == CONN_OPEN || c->state == CONN_WAITING) && !c->recv_armed)
        arm_recv(w, c);
    conn_maybe_release(w, c);
}

void conn__sent(struct worker *w, struct conn *c, int res)
{
    c->sending = 0;
    if (res < 0) {
        conn__close(w, c);
    } else {
        c->out_off += (uint32_t)res;
        if (c->out_off >= c->out_len) {
            c->out_off = c->out_len = 0;
            if (c->close_after_send && c->state != CONN_WAITING)
                conn__close(w, c);
            else if (c->in_len > 0 && c->state == CONN_OPEN)
                conn_process(w, c); /* input held back by the high-water mark */
        } else {
            mark_dirty(w, c);
        }
    }
    conn_maybe_release(w, c);
}

void conn__park(struct worker *w, struct conn *c, uint32_t req_slot, uint32_t req_gen)
{
    c->state = CONN_WAITING;
    c->req_slot = req_slot;
    c->req_gen = req_gen;
    timer_set(w, c, TIMER_NONE); /* the IdP call has its own deadline */
}

void conn__resume(struct worker *w, struct conn *c)
{
    if (c->state != CONN_WAITING)
        return;
    c->state = CONN_OPEN;
    c->req_slot = SLOT_NONE;
    timer_set(w, c, c->in_len ? TIMER_HEADER : TIMER_IDLE);
    if (c->eof && !c->sending && c->out_off >= c->out_len) {
        conn__close(w, c);
        return;
    }
    if (c->eof)
        c->close_after_send = 1;
    if (c->in_len > 0 && !c->in_process) /* else the running conn_process goes on by itself */
        conn_process(w, c);
}

/* What cannot be parsed is answered by authcached itself and the connection closed after it. */
static void reject(struct worker *w, struct conn *c, int status, const char *text)
{
    static const struct policy_conn close_pc = {0, 0, 0};

    conn__answer_status(w, c, &close_pc, status, text);
}

/* Parse and answer the connection's buffered input until it runs out or must wait. */
static void conn_process(struct worker *w, struct conn *c)
{
    size_t off = 0;

    loop__clock(w);
    c->in_process = 1;
    while (off < c->in_len && c->state == CONN_OPEN && !c->close_after_send &&
           c->out_len < OUT_HIGH_WATER) {
        char *data = c->in + off;
        size_t len = c->in_len - off;
        struct http_req req = {.hdrs = w->hdrs, .hdrs_cap = MAX_HDRS};
        int rc;

        if (c->body == BODY_LENGTH) { /* the rest of a request body: ignored */
            size_t n = (size_t)c->body_skip < len ? (size_t)c->body_skip : len;
            c->body_skip -= (int64_t)n;
            off += n;
            if (c->body_skip == 0)
                c->body = BODY_NONE;
            continue;
        }
        if (c->body == BODY_CHUNKED) {
            size_t n = len;
            ssize_t left = http_chunked_decode(&c->chunked, data, &n);
            if (left == HTTP_BAD) {
                reject(w, c, 400, "bad chunked body");
                break;
            }
            if (left == HTTP_PARTIAL) {
                off = c->in_len;
                break;
            }
            c->body = BODY_NONE;
            off += len - (size_t)left;
            continue;
        }
        rc = http_parse_request(data, len, c->head_seen, MAX_HEADER, &req);
        c->head_seen = rc == HTTP_PARTIAL ? (uint32_t)len : 0;
        if (rc == HTTP_PARTIAL) {
            /* The head's time runs from its first byte; a request answered in this pass starts
             * the next head's. */
            if (c->timer != TIMER_HEADER || off > 0)
                timer_set(w, c, TIMER_HEADER);
            break;
        }
        if (rc == HTTP_BAD) {
            reject(w, c, 400, "malformed request");
            break;
        }
        if (rc == HTTP_TOO_LARGE) {
            /* No line end within the limit: it is the request line, i.e. the target (RFC 9112
             * 3: 414); else the header fields (RFC 6585: 431). */
            size_t seen = len < MAX_HEADER ? len : MAX_HEADER;
            if (!memchr(data, '\n', seen))
                reject(w, c, 414, "request target too long");
            else
                reject(w, c, 431, "request header fields too large");
            break;
        }
        off += (size_t)rc;
        switch (http_req_body_mode(&req)) {
        case HTTP_BODY_LENGTH:
            c->body = req.content_length > 0 ? BODY_LENGTH : BODY_NONE;
            c->body_skip = req.content_length;
            break;
        case HTTP_BODY_CHUNKED:
            http_chunked_init(&c->chunked);
            c->body = BODY_CHUNKED;
            break;
        default:
            break;
        }
        fa__request(w, c, &req);
        if (c->state != CONN_OPEN && c->state != CONN_WAITING)
            break;
        if (!req.keep_alive)
            c->close_after_send = 1;
        if (c->state == CONN_OPEN)
            timer_set(w, c, TIMER_IDLE);
    }
    c->in_process = 0;
    if (c->state == CONN_CLOSING || c->state == CONN_FREE)
        return;
    if (off > 0) {
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= (uint32_t)off;
    }
    if (c->close_after_send && c->state == CONN_OPEN && !c->sending && c->out_off >= c->out_len)
        conn__close(w, c);
}
