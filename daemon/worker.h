/*
 * worker.h — one io_uring event loop on its own thread: its share of the listening sockets, its
 * client connections, its keep-alive pool of IdP connections. Workers share only the segment, the
 * daemon's breaker and single-flight table, and messages posted with worker_post.
 */
#ifndef AUTHCACHE_WORKER_H
#define AUTHCACHE_WORKER_H

#include <stddef.h>

#include "daemon.h"

struct worker;

/* Make a worker: ring, buffers; at most max_conns client and max_ups IdP connections (at most
 * 1024). On failure returns NULL with a one-line reason in err, and *usage_error 1 if a flag's
 * value is the cause (the --upstream host does not resolve: the exit status of a usage error),
 * else 0. */
struct worker *worker_new(struct daemon *d, unsigned id, unsigned max_conns, unsigned max_ups,
                          char *err, size_t errlen, int *usage_error);
/* Before worker_start: the n listening sockets (main's, listeners_share) it accepts from, and the
 * forward-auth port they listen on. The worker never closes them. */
void worker_listen(struct worker *w, const int *fds, unsigned n, int port);
int worker_start(struct worker *w); /* its thread; 0 or -errno */
void worker_wake(struct worker *w); /* look at d->draining and the message queue now */
void worker_join(struct worker *w);
void worker_free(struct worker *w);

/* Hand a single-flight outcome to the waiter's worker (any thread). */
void worker_post(struct worker *w, const struct flight_waiter *fw, enum flight_outcome o);

/* The port the listener got (for --listen with port 0). */
int worker_port(const struct worker *w);

#endif
