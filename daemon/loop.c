/*
 * loop.c — a worker's io_uring loop: submissions, the completion dispatch, the tick, and the
 * mailbox other workers post single-flight outcomes to.
 *
 * One turn: submit what the last turn queued (the sends of every connection that got output are
 * batched here, conn__flush), wait for at least one completion, dispatch every completion by the
 * operation in its user data (UD: op, slot, generation; a stale generation is dropped, so a
 * completion never reaches a slot that was reused). A hit costs no system call beyond the turn's
 * io_uring_enter.
 *
 * The tick (a timeout op every few ms) closes connections past their deadline (conn.c keeps them in
 * deadline order, so this looks only at the expired), times out IdP calls, sends the breaker's
 * probe, sweeps a slice of the segment, re-arms an accept that ended, and starts draining.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "worker_int.h"

struct io_uring_sqe *loop__sqe(struct worker *w)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);

    if (!sqe) {
        io_uring_submit(&w->ring);
        sqe = io_uring_get_sqe(&w->ring);
    }
    return sqe; /* never NULL after a submit: the ring has RING_ENTRIES free */
}

void loop__clock(struct worker *w)
{
    w->now_ms = daemon_now_ms();
    w->mono_ms = daemon_mono_ms();
}

void loop__arm_accept(struct worker *w, unsigned i)
{
    struct io_uring_sqe *sqe = loop__sqe(w);

    io_uring_prep_multishot_accept(sqe, w->listen_fd[i], NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, UD(OP_ACCEPT, i, 0));
    w->accept_armed[i] = 1;
}

/* Cancel the operation with user data ud; its own completion reports the end. */
void loop__cancel(struct worker *w, uint64_t ud)
{
    struct io_uring_sqe *sqe = loop__sqe(w);

    io_uring_prep_cancel64(sqe, ud, 0);
    io_uring_sqe_set_data64(sqe, UD(OP_CANCEL, 0, 0));
}

void loop__buf_return(struct worker *w, unsigned bid)
{
    io_uring_buf_ring_add(w->br, w->bufs + (size_t)bid * BUFSZ, BUFSZ, (unsigned short)bid,
                          io_uring_buf_ring_mask(NBUF), 0);
    io_uring_buf_ring_advance(w->br, 1);
}

static void arm_tick(struct worker *w)
{
    struct io_uring_sqe *sqe = loop__sqe(w);

    io_uring_prep_timeout(sqe, &w->tick_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, UD(OP_TICK, 0, 0));
}

static void arm_event(struct worker *w)
{
    struct io_uring_sqe *sqe = loop__sqe(w);

    io_uring_prep_read(sqe, w->efd, &w->efd_buf, sizeof(w->efd_buf), 0);
    io_uring_sqe_set_data64(sqe, UD(OP_EVENT, 0, 0));
}

/* ---- the tick ---- */

static void on_tick(struct worker *w)
{
    loop__clock(w);
    conn__expire(w);
    upstream__tick(w);
    if (w->id == 0) { /* expired answers go a slice at a time: the whole table every ~minute */
        uint64_t nb = w->d->shm.nbuckets, slice = nb / (60000 / (uint64_t)w->tick_ms) + 1;
        shm_sweep(&w->d->shm, w->sweep_next, slice, w->now_ms);
        w->sweep_next = w->sweep_next + slice >= nb ? 0 : w->sweep_next + slice;
    }
    /* A multishot accept that ended (EMFILE/ENFILE, or the CQ full when a burst of connections was
     * queued) is armed again: else this worker's listener would never be accepted from again. */
    for (unsigned i = 0; i < w->nlisten; i++)
        if (!w->accept_armed[i] && !w->draining)
            loop__arm_accept(w, i);
    fa__tick(w);
    if (!__atomic_load_n(&w->d->draining, __ATOMIC_ACQUIRE) || w->draining)
        return;
    /* Drain: stop accepting, close idle connections, answer the rest with Connection: close. */
    w->draining = 1;
    w->drain_deadline_ms = w->mono_ms + w->cfg->upstream_timeout_ms + 2000;
    for (unsigned i = 0; i < w->nlisten; i++)
        if (w->accept_armed[i])
            loop__cancel(w, UD(OP_ACCEPT, i, 0));
}

/* ---- cross-worker messages ---- */

void worker_post(struct worker *w, const struct flight_waiter *fw, enum flight_outcome o)
{
    uint64_t one = 1;

    pthread_mutex_lock(&w->qmu);
    if (BUF_RESERVE(w->q, w->qcap, w->qn + 1, 64, 0) < 0) {
        pthread_mutex_unlock(&w->qmu);
        return; /* out of memory: this waiter is not told, its client (the proxy) times out */
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
        fa__outcome(w, q[i].slot, q[i].gen, q[i].o);
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
        conn__accept(w, cqe);
        break;
    case OP_RECV:
    case OP_SEND: {
        struct conn *c = slot < w->max_conns ? &w->conns[slot] : NULL;
        if (!c || c->gen != gen || c->state == CONN_FREE) {
            if (UD_OP(ud) == OP_RECV && cqe->res > 0) /* a late receive: give its buffer back */
                loop__buf_return(w, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
            break;
        }
        if (UD_OP(ud) == OP_RECV)
            conn__recv(w, c, cqe);
        else
            conn__sent(w, c, cqe->res);
        break;
    }
    case OP_UP_CONNECT:
    case OP_UP_SEND:
    case OP_UP_RECV: {
        struct up *u = slot < w->max_ups ? &w->ups[slot] : NULL;
        if (!u || u->gen != gen || u->state == UP_FREE || u->state == UP_IDLE)
            break;
        loop__clock(w);
        if (UD_OP(ud) == OP_UP_CONNECT)
            upstream__connected(w, u, cqe->res);
        else if (UD_OP(ud) == OP_UP_SEND)
            upstream__sent(w, u, cqe->res);
        else
            upstream__received(w, u, cqe->res);
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

void *loop__main(void *arg)
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
    loop__clock(w);
    for (unsigned i = 0; i < w->nlisten; i++)
        loop__arm_accept(w, i);
    arm_tick(w);
    arm_event(w);
    for (;;) {
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;

        conn__flush(w);
        if (w->draining) {
            /* Draining ends by its deadline whatever completes: never wait past a tick for one. */
            struct __kernel_timespec ts = w->tick_ts;
            io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, &ts, NULL);
        } else {
            io_uring_submit_and_wait(&w->ring, 1);
        }
        io_uring_for_each_cqe(&w->ring, head, cqe)
        {
            dispatch(w, cqe);
            n++;
        }
        io_uring_cq_advance(&w->ring, n);
        if (w->nwaiting)
            conn__adopt(w);
        if (w->pace.n) {
            loop__clock(w);
            fa__pace(w);
        }
        if (w->draining) {
            conn__drain_idle(w);
            if ((w->nconns == 0 && !upstream__busy(w)) || daemon_mono_ms() > w->drain_deadline_ms)
                break;
        }
    }
    conn__flush(w);
    io_uring_submit(&w->ring);
    return NULL;
}
