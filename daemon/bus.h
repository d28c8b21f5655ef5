/*
 * bus.h — purges shared across nodes over a Redis stream (--bus redis[s]://HOST:PORT[/STREAM]):
 * the client, in bus.c. One thread (bus_start) with two connections to Redis, one that reads the
 * stream (XREAD BLOCK) from the last entry it read, and one that appends (XADD). Workers only
 * enqueue (bus_publish); the thread sends.
 *
 * What goes over the wire is written and read elsewhere, by pure functions: the purge message in
 * bus_msg.h, the Redis protocol in resp.h.
 */
#ifndef AUTHCACHE_BUS_H
#define AUTHCACHE_BUS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon.h"

#define BUS_QUEUE_MAX 1024 /* purges held for Redis; beyond it the oldest is dropped */

struct bus;

/* Start the bus thread for d->cfg->bus; d->shm must be open. It connects (and reconnects) by
 * itself; *out is the handle for bus_publish, bus_stats_get and bus_stop. 0, or -errno with a
 * one-line reason in err (nothing started): -EINVAL for a TLS set-up that failed (--bus-ca-file).
 */
int bus_start(struct daemon *d, struct bus **out, char *err, size_t errlen);

/* Enqueue purge p for the other nodes and return at once (a mutex held for a copy, one eventfd
 * write: safe on a worker). With BUS_QUEUE_MAX purges already waiting, the oldest is dropped and
 * counted. b may be NULL (no --bus): nothing happens. Thread-safe. */
void bus_publish(struct bus *b, const struct purge *p);

/* Stop: sends what is queued for at most BUS_FLUSH_MS if connected, closes the connections, joins
 * the thread, frees b. b may be NULL. Call once, after the last bus_publish. */
#define BUS_FLUSH_MS 500
void bus_stop(struct bus *b);

struct bus_stats {
    int enabled, connected;
    uint64_t node;
    uint64_t published;    /* purges Redis accepted from this node */
    uint64_t received;     /* entries from other nodes (and undecodable ones) */
    uint64_t applied;      /* received purges applied to this node's segment */
    uint64_t bad;          /* received messages that did not decode */
    uint64_t key_mismatch; /* received session purges made with another hash key (not applied) */
    uint64_t dropped;      /* purges dropped from a full queue */
    uint64_t gaps;         /* reconnections that found purges lost to this node: all purged */
    uint64_t queued;       /* purges waiting for Redis (or for its acknowledgement) now */
    uint64_t behind;       /* stream entries not read yet, at the last check (Redis >= 7) */
    uint64_t lag_ms;       /* the newest entry's id less the last one read, at the last check */
};
/* The figures of b (all zero for NULL). Thread-safe. */
void bus_stats_get(struct bus *b, struct bus_stats *st);

#endif
