/*
 * bus.h — purges shared across nodes over Redis pub/sub (--bus redis://HOST:PORT[/CHANNEL]), in
 * bus.c. Its parts, each usable alone:
 *
 *  - the message: one purge as a short line of text, in bus_msg.h and bus_msg.c.
 *  - RESP2, the Redis protocol: bus_resp_command writes a command, bus_resp_parse reads one reply.
 *  - the client: one thread (bus_start) with two connections to Redis, one SUBSCRIBEd to the
 *    channel and one that PUBLISHes. Workers only enqueue (bus_publish); the thread sends.
 *
 * bus_resp_parse reads bytes from the network: it bounds every field, never reads
 * outside [in, in + len), never allocates, and is fuzzed (tests/fuzz/fuzz_bus.c).
 */
#ifndef AUTHCACHE_BUS_H
#define AUTHCACHE_BUS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon.h"

#define BUS_QUEUE_MAX 1024 /* purges held for Redis; beyond it the oldest is dropped */

/* ---- RESP2 ---- */

#define BUS_RESP_MAX_ELEMS 8   /* elements of an array reply (pub/sub pushes have 3 or 4) */
#define BUS_RESP_LINE_MAX 4096 /* a simple string, error or integer line, without its CRLF */

/* One value: type '+' simple string, '-' error, ':' integer, '$' bulk string, '*' array. */
struct bus_resp_item {
    char type;
    int64_t n;     /* ':' the integer; '$' the length, -1 for null; '*' the count, -1 for null */
    const char *p; /* '+' '-' '$': the bytes (inside the parsed buffer); NULL for a null bulk */
    size_t len;
};

/* One reply: a scalar in top, or an array in top (type '*') with its elements, scalars only. */
struct bus_resp {
    struct bus_resp_item top;
    size_t nelem;
    struct bus_resp_item elem[BUS_RESP_MAX_ELEMS];
};

/*
 * Parse one reply from in[0, len). Returns the bytes it takes (> 0), 0 if in holds only part of
 * one, -E2BIG if a bulk string is longer than max_bulk, an array longer than BUS_RESP_MAX_ELEMS or
 * a line longer than BUS_RESP_LINE_MAX, -EPROTO if it is not RESP2 (or an array nests one). The
 * strings in *r point into in.
 */
ssize_t bus_resp_parse(const char *in, size_t len, size_t max_bulk, struct bus_resp *r);

/* Write the command argv[0..argc) (lens[i] bytes each) into out as a RESP array of bulk strings.
 * Returns its length, or -ENOSPC. */
int bus_resp_command(char *out, size_t cap, int argc, const char *const *argv, const size_t *lens);

/* ---- the client ---- */

struct bus;

/* Start the bus thread for d->cfg->bus; d->shm must be open. It connects (and reconnects) by
 * itself; *out is the handle for bus_publish, bus_stats_get and bus_stop. 0 or -errno (nothing
 * started). */
int bus_start(struct daemon *d, struct bus **out);

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
    uint64_t received;     /* messages from other nodes (and undecodable ones) */
    uint64_t applied;      /* received purges applied to this node's segment */
    uint64_t bad;          /* received messages that did not decode */
    uint64_t key_mismatch; /* received session purges made with another hash key (not applied) */
    uint64_t dropped;      /* purges dropped from a full queue */
    uint64_t queued;       /* purges waiting for Redis (or for its acknowledgement) now */
};
/* The figures of b (all zero for NULL). Thread-safe. */
void bus_stats_get(struct bus *b, struct bus_stats *st);

#endif
