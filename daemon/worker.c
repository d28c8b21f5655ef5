/*
 * worker.c — a worker's setup and teardown: its ring with provided receive buffers, its
 * share of the listening sockets (listeners.h), the IdP's address, its tables (connections,
 * requests, IdP calls), and its thread. The request path itself is in loop.c -> conn.c -> fa.c ->
 * upstream.c (worker_int.h says how they fit together).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "worker_int.h"

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
    w->efd = -1;
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
    w->max_reqs = max_conns + w->max_ups + 1;
    w->reqs = calloc(w->max_reqs, sizeof(*w->reqs));
    if (!w->conns || !w->dirty || !w->ups || !w->reqs) {
        snprintf(err, errlen, "out of memory for %u connections", max_conns);
        goto fail;
    }
    for (uint32_t i = 0; i < max_conns; i++) {
        w->conns[i].fd = -1;
        w->conns[i].next_free = i + 1 < max_conns ? i + 1 : SLOT_NONE;
    }
    w->free_head = 0;
    for (int t = 0; t < TIMER_KINDS; t++)
        w->timers[t].head = w->timers[t].tail = SLOT_NONE;
    for (uint32_t i = 0; i < w->max_reqs; i++)
        w->reqs[i].next_free = i + 1 < w->max_reqs ? i + 1 : SLOT_NONE;
    w->req_free = 0;
    /* This worker's share of --signout-rate; a queue no longer than what that share sends within
     * --upstream-timeout (fa.c, "sign-outs paced"). */
    w->pace.head = w->pace.tail = SLOT_NONE;
    if (d->cfg->signout_rate > 0) {
        double per_ms = (double)d->cfg->signout_rate / d->cfg->workers / 1000.0;
        double max = per_ms * (double)d->cfg->upstream_timeout_ms;
        w->pace.per_ms = per_ms;
        w->pace.burst = w->pace.tokens = per_ms * 1000.0 < 1.0 ? 1.0 : per_ms * 1000.0;
        w->pace.max = max < 1.0 ? 1 : max >= (double)w->max_reqs ? w->max_reqs : (uint32_t)max;
    }
    for (uint32_t i = 0; i < w->max_ups; i++)
        w->ups[i].fd = -1;
    w->idle_head = SLOT_NONE;

    /* Single issuer: the worker thread, which enables the ring when it starts (worker_main). */
    params.flags =
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED;
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
    w->probe_len =
        (size_t)snprintf(w->probe_req, sizeof(w->probe_req),
                         "GET %s/ HTTP/1.1\r\nHost: %s\r\nUser-Agent: authcached-probe\r\n\r\n",
                         d->cfg->upstream.base_path, d->cfg->upstream.host_header);
    loop__clock(w);
    return w;
fail_usage:
    *usage_error = 1;
fail:
    worker_free(w);
    return NULL;
}

int worker_start(struct worker *w)
{
    int rc = pthread_create(&w->thread, NULL, loop__main, w);

    return -rc;
}

void worker_join(struct worker *w)
{
    pthread_join(w->thread, NULL);
}

void worker_listen(struct worker *w, const int *fds, unsigned n, int port)
{
    if (n > LISTENERS_MAX)
        n = LISTENERS_MAX;
    memcpy(w->listen_fd, fds, n * sizeof(*fds));
    w->nlisten = n;
    w->port = port;
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
            if (w->conns[i].state != CONN_FREE)
                close(w->conns[i].fd);
            free(w->conns[i].in);
            free(w->conns[i].out);
        }
    fa__free_all(w);
    upstream__free_all(w);
    if (w->ring.ring_fd > 0)
        io_uring_queue_exit(&w->ring);
    if (w->bufs && w->bufs != MAP_FAILED)
        munmap(w->bufs, (size_t)NBUF * BUFSZ);
    if (w->br && w->br != MAP_FAILED)
        munmap(w->br, NBUF * sizeof(struct io_uring_buf));
    if (w->efd >= 0)
        close(w->efd);
    free(w->conns);
    free(w->dirty);
    free(w->ups);
    free(w->reqs);
    free(w->q);
    pthread_mutex_destroy(&w->qmu);
    free(w);
}
