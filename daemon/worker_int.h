/*
 * worker_int.h — the inside of a worker, shared by the files that make it up (not an API: only
 * worker.c's worker.h is). Read them in this order, which is the order a request takes:
 *
 *   loop.c      the ring: submissions, user data, dispatch, the cross-worker mailbox, the tick
 *   conn.c      client connections: accept, receive, parse, answer, send, close, their timers
 *   fa.c        the forward-auth state machine: cache, single flight, IdP, stale, sign-out
 *   upstream.c  calls to the IdP: keep-alive pool, connect / send / receive, TLS, framing
 *   worker.c    setup, the thread, teardown
 *
 * Everything here runs on the worker's own thread, except worker_post and worker_wake.
 *
 * Ownership, one owner each. A connection belongs to its slot in w->conns, an IdP call to its slot
 * in w->ups, a request waiting on the IdP (struct fareq) to its slot in w->reqs — and, while it is
 * in an IdP call, to that call: only the call's completion ends it. Everything else names an object
 * by slot + generation and checks the generation before use, so nothing dangles.
 *
 * Clocks. w->now_ms is wall time and means what the outside world means by time: an answer's
 * first sight, freshness and lifetime (they live in the segment, shared with other processes and
 * restarts). w->mono_ms is the monotonic clock and drives every deadline (headers, idle, the IdP
 * timeout, the breaker's back-off, draining): a step of the wall clock moves none of them.
 */
#ifndef AUTHCACHE_WORKER_INT_H
#define AUTHCACHE_WORKER_INT_H

#include <liburing.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>

#include "buf.h"
#include "daemon.h"
#include "http.h"
#include "listeners.h"
#include "policy.h"
#include "worker.h"

#define RING_ENTRIES 1024
#define NBUF 512 /* provided receive buffers */
#define BUFSZ 4096
#define MAX_HEADER 32768 /* request header section: more is 431 */
#define MAX_HDRS 256
#define HEADER_TIMEOUT_MS 10000
#define IDLE_TIMEOUT_MS 120000
#define DRAIN_IDLE_GRACE_MS 250     /* draining: an idle connection's last chance of a request */
#define OUT_HIGH_WATER (256u << 10) /* stop parsing a connection until its output drains */
#define UPREQ_MAX (MAX_HEADER + 4096)
#define SLOT_NONE UINT32_MAX
#define CONN_WAITING_MAX 1024 /* accepted connections waiting for an evicted one's slot */

/* ---- the ring's user data: operation, slot, generation ---- */

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

/* ---- client connections (conn.c) ---- */

enum conn_state {
    CONN_FREE = 0, /* on the free list */
    CONN_OPEN,     /* reading and answering requests */
    CONN_WAITING,  /* its current request (req_slot) waits on the IdP; input stays parked */
    CONN_CLOSING,  /* closed: the slot is released once no operation refers to it */
};

enum conn_timer { TIMER_NONE = 0, TIMER_HEADER, TIMER_IDLE, TIMER_KINDS };

enum conn_body { BODY_NONE = 0, BODY_LENGTH, BODY_CHUNKED }; /* a request body being discarded */

struct conn {
    int fd;
    uint32_t gen;
    enum conn_state state;
    enum conn_body body;
    /* operations in flight and small facts; the lifecycle is `state` */
    uint8_t recv_armed, sending, dirty, eof, close_after_send;
    uint8_t in_process; /* conn_process is running on it (a request answered at once) */
    uint32_t head_seen; /* bytes of the head at in[0] seen by the last HTTP_PARTIAL, or 0 */
    int64_t body_skip;  /* BODY_LENGTH: bytes still to discard */
    struct http_chunked chunked;
    char *in;
    uint32_t in_len;
    size_t in_cap;
    char *out;
    uint32_t out_len, out_off;
    size_t out_cap;
    uint32_t req_slot, req_gen; /* CONN_WAITING: the request in w->reqs */
    /* timer: at most one list (header or idle), ordered by deadline since every entry of a list
     * got the same timeout; monotonic ms */
    enum conn_timer timer;
    int64_t deadline_ms;
    uint32_t tprev, tnext;
    uint32_t next_free;
};

struct timer_list {
    uint32_t head, tail;
};

/* ---- requests waiting on the IdP (fa.c) ---- */

/* Who has a request at hand. Each state has one owner, and only that owner ends it (req_end):
 * the function deciding it, the flight outcome that reaches it, or the completion of its IdP call.
 * A connection that closes detaches from its request (fa__conn_gone); a request waiting on
 * another's flight has nobody else to end it, so that one ends at once. */
enum fareq_state {
    REQ_FREE = 0,
    REQ_NEW,     /* being decided (fa__request, fa__outcome): ended by that call */
    REQ_JOINED,  /* waiting on another request's single flight: fa__outcome goes on with it */
    REQ_CALLING, /* in an IdP call, which owns it until its completion */
    REQ_PACED,   /* a sign-out waiting for its turn (--signout-rate): the pace queue owns it */
};

struct fareq {
    enum policy_kind kind;
    enum result result;      /* RES_MISS or RES_REVALIDATED (cacheable), RES_BYPASS, RES_SIGNOUT */
    int cacheable;           /* has key */
    int leader;              /* leads the key's flight: must end it */
    uint64_t epoch;          /* the purge stamp when its IdP call was sent (epoch.h) */
    int64_t held_first_seen; /* first_seen of the answer being revalidated, else 0 (wall) */
    int64_t deadline_ms;     /* monotonic: --upstream-timeout from when the request first needed
                              * the IdP; a waiter that asks again after the leader's call gets only
                              * what is left of it (docs/contract.md: a miss waits at most that) */
    struct shm_key key;
    struct policy_conn pc;
    uint32_t conn_slot, conn_gen; /* SLOT_NONE: refresh ahead, nobody to answer */
    char host[SHM_MAX_HOST];
    uint32_t host_len;
    size_t upreq_len;
    char upreq[]; /* the request for the IdP */
};

struct reqslot {
    struct fareq *r;
    enum fareq_state state;
    uint32_t gen, next_free;
    uint32_t pace_next; /* REQ_PACED: the next in the pace queue */
};

/* Sign-outs (and logouts) sent to the IdP at most --signout-rate a second, this worker's share: a
 * token bucket of one second's worth, and a queue of those waiting for a token (fa.c). */
struct pace {
    double per_ms, tokens, burst; /* per_ms 0: no limit */
    int64_t refilled_ms;          /* monotonic */
    uint32_t head, tail, n, max;  /* the queue, through reqslot.pace_next */
};

/* ---- IdP calls (upstream.c) ---- */

/*
 * How an IdP call ends: r is the parsed answer with its body, or NULL and cause says why the call
 * failed (unreachable, timed out, reset, garbled, too large); local: the failure was this
 * process's (no IdP connection free, no descriptor, no memory), which says nothing of the IdP.
 * Runs exactly once per call, on the worker's thread, possibly before upstream__call returns. The
 * connection is back in the pool (or closed) before it runs; r and body stay valid until it
 * returns.
 */
typedef void upstream_done_fn(struct worker *w, uint32_t ctx, uint32_t ctx_gen,
                              const struct http_resp *r, const char *body, size_t body_len,
                              const char *cause, int local);

enum up_state { UP_FREE = 0, UP_CONNECTING, UP_SENDING, UP_READING, UP_IDLE };

struct up {
    int fd;
    uint32_t gen;
    enum up_state state;
    int reused, timed_out, hdr_done, retried;
    int head; /* the request is HEAD: the answer has no body, whatever its framing headers say */
    upstream_done_fn *done;
    uint32_t ctx, ctx_gen;
    const char *req;
    size_t req_len, req_off;
    char *buf;
    uint32_t len;
    size_t cap;
    struct http_hdr *hdrs; /* the answer's head, parsed once when it is whole */
    struct http_resp resp;
    uint32_t hdr_len, raw_pos, body_len;
    int body_mode;
    struct http_chunked chunked;
    int64_t deadline_ms, idle_since_ms; /* monotonic */
    int64_t started_us;                 /* monotonic, for the latency histogram */
    uint32_t next_idle;
    /* https upstreams: ciphertext goes through tx (to send) and rx (received) */
    struct tls_conn *tls;
    int hs_done;
    char *tx, *rx;
    uint32_t tx_len, tx_off;
};

/* ---- the worker ---- */

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
    /* the listening sockets this worker accepts from (its share of main's set, listeners.h):
     * one multishot accept each, OP_ACCEPT's slot the index */
    int listen_fd[LISTENERS_MAX];
    uint8_t accept_armed[LISTENERS_MAX];
    unsigned nlisten;
    int port;
    int64_t
        refresh_ahead_ms; /* a hit this close to its fresh_until revalidates in the background */
    int accept_failing;   /* the last accept failed: logged once until one succeeds */
    struct io_uring_buf_ring *br;
    uint8_t *bufs;
    /* client connections */
    struct conn *conns;
    uint32_t max_conns, nconns, free_head;
    uint32_t *dirty;
    uint32_t ndirty;
    struct timer_list timers[TIMER_KINDS];
    int waiting[CONN_WAITING_MAX]; /* accepted, waiting for the slot of an evicted idle one */
    uint32_t nwaiting;
    /* requests waiting on the IdP: max_conns + max_ups + 1 slots (a closed connection's request
     * lives on only in its IdP call, and each call has at most one) */
    struct reqslot *reqs;
    uint32_t max_reqs, req_free;
    struct pace pace;
    /* IdP calls */
    struct up *ups;
    uint32_t max_ups, idle_head, nidle;
    char *spare_buf; /* swapped with a finished call's buffer, so the call can be reused while its
                      * completion reads the answer */
    size_t spare_cap;
    struct http_hdr *spare_hdrs;
    struct sockaddr_storage up_addr;
    socklen_t up_addrlen;
    /* mailbox from other workers */
    int efd;
    uint64_t efd_buf;
    pthread_mutex_t qmu;
    struct wmsg *q;
    size_t qn, qcap;
    /* time */
    struct __kernel_timespec tick_ts;
    int64_t tick_ms;
    uint64_t sweep_next;
    int draining;
    int64_t drain_deadline_ms; /* monotonic */
    int64_t now_ms;            /* wall: answers' lifetimes */
    int64_t mono_ms;           /* monotonic: deadlines */
    int64_t local_warned_ms;   /* the last "cannot ask the IdP" warning (at most one a second) */
    /* scratch */
    struct policy_req preq;
    struct http_hdr hdrs[MAX_HDRS];
    uint8_t lbuf[SHM_MAX_RECORD];
    char scratch[SHM_MAX_HDRS + 1024];
    char probe_req[1024];
    size_t probe_len;
    /* tests (test_fa): when set, IdP calls go here instead of to the network */
    void (*fake_call)(struct worker *w, const char *req, size_t len, upstream_done_fn *done,
                      uint32_t ctx, uint32_t ctx_gen);
};

/* loop.c */
struct io_uring_sqe *loop__sqe(struct worker *w);    /* never NULL */
void loop__clock(struct worker *w);                  /* read both clocks into now_ms and mono_ms */
void loop__arm_accept(struct worker *w, unsigned i); /* on listen_fd[i] */
void loop__cancel(struct worker *w, uint64_t ud);
void loop__buf_return(struct worker *w, unsigned bid); /* a provided buffer back to the ring */
void *loop__main(void *arg);

/* conn.c */
void conn__accept(struct worker *w, struct io_uring_cqe *cqe);
void conn__recv(struct worker *w, struct conn *c, struct io_uring_cqe *cqe);
void conn__sent(struct worker *w, struct conn *c, int res);
void conn__flush(struct worker *w); /* submit the turn's sends */
void conn__close(struct worker *w, struct conn *c);
void conn__expire(struct worker *w);     /* close connections past their deadline */
void conn__drain_idle(struct worker *w); /* draining: close those with nothing in progress */
void conn__adopt(struct worker *w);      /* give waiting accepted connections the slots freed */
struct conn *conn__get(struct worker *w, uint32_t slot, uint32_t gen); /* open, or NULL */
void conn__park(struct worker *w, struct conn *c, uint32_t req_slot, uint32_t req_gen);
void conn__resume(struct worker *w, struct conn *c); /* its request is answered: go on */
void conn__answer_identity(struct worker *w, struct conn *c, const struct policy_conn *pc,
                           const char *hdrs, size_t len, enum result res);
void conn__answer_status(struct worker *w, struct conn *c, const struct policy_conn *pc, int status,
                         const char *text);
void conn__answer_unavailable(struct worker *w, struct conn *c, const struct policy_conn *pc,
                              const char *cause);
void conn__answer_passthrough(struct worker *w, struct conn *c, const struct policy_conn *pc,
                              const struct http_resp *r, const char *body, size_t body_len,
                              enum result res);

/* fa.c */
void fa__request(struct worker *w, struct conn *c, const struct http_req *req);
void fa__outcome(struct worker *w, uint32_t slot, uint32_t gen, enum flight_outcome o);
void fa__conn_gone(struct worker *w, uint32_t req_slot, uint32_t req_gen);
void fa__tick(struct worker *w); /* the breaker's probe */
void fa__pace(struct worker *w); /* sign-outs whose turn came go to the IdP, late ones get 503;
                                  * from the loop only, never inside a request's parse */
void fa__free_all(struct worker *w);

/* upstream.c */
void upstream__call(struct worker *w, const char *req, size_t len, int64_t deadline_ms,
                    upstream_done_fn *done, uint32_t ctx, uint32_t ctx_gen);
void upstream__connected(struct worker *w, struct up *u, int res);
void upstream__sent(struct worker *w, struct up *u, int res);
void upstream__received(struct worker *w, struct up *u, int res);
void upstream__tick(struct worker *w); /* IdP timeouts, idle connections past their time */
int upstream__busy(const struct worker *w);
void upstream__free_all(struct worker *w);

#endif
