/*
 * bus.h — purges shared across nodes over Redis pub/sub (--bus redis://HOST:PORT[/CHANNEL]), in
 * bus.c. Three parts, each usable alone:
 *
 *  - the message: one purge as a short line of text (bus_encode, bus_decode). Only what a peer
 *    needs goes on the wire: a user name, a session's keyed credential digests (never the
 *    credential), or "all". Format (docs/daemon.md, "Bus"):
 *        v1 <node> all
 *        v1 <node> user <len>:<name>
 *        v1 <node> session <key-id> <digest>[ <digest>]
 *    <node>, <key-id> and <digest> are 16 lowercase hex digits; <len> is decimal, 1 to
 *    BUS_USER_MAX, without leading zeros, and <name> is exactly that many bytes (any bytes).
 *  - RESP2, the Redis protocol: bus_resp_command writes a command, bus_resp_parse reads one reply.
 *  - the client: one thread (bus_start) with two connections to Redis, one SUBSCRIBEd to the
 *    channel and one that PUBLISHes. Workers only enqueue (bus_publish); the thread sends.
 *
 * bus_decode and bus_resp_parse read bytes from the network: they bound every field, never read
 * outside [in, in + len), never allocate, and are fuzzed (tests/fuzz/fuzz_bus.c).
 */
#ifndef AUTHCACHE_BUS_H
#define AUTHCACHE_BUS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon.h"

#define BUS_VERSION "v1"
#define BUS_USER_MAX SHM_MAX_USER /* a longer user name cannot be in any segment */
#define BUS_MSG_MAX 600           /* >= "v1 " + node + " user 512:" + 512 bytes */
#define BUS_QUEUE_MAX 1024        /* purges held for Redis; beyond it the oldest is dropped */

/* ---- the message ---- */

/* A decoded message. For PURGE_USER, p.user points into the decoded bytes. */
struct bus_msg {
    uint64_t node;                /* the sender's random id */
    uint8_t key_id[SHM_CRED_LEN]; /* PURGE_CREDS: the sender's hash-key id (bus_key_id) */
    struct purge p;
};

/* bus_decode's verdict on a well-formed message this node sent itself. */
#define BUS_OWN 1

/*
 * Write the message for purge p from node into out (no NUL added). key_id is the sender's
 * bus_key_id, used for PURGE_CREDS. Returns the length (at most BUS_MSG_MAX), -EINVAL for a purge
 * that has no message (a user name empty or over BUS_USER_MAX bytes, no digests, unknown kind),
 * -ENOSPC if cap is too small.
 */
int bus_encode(uint64_t node, const uint8_t key_id[SHM_CRED_LEN], const struct purge *p, char *out,
               size_t cap);

/*
 * Read the message in[0, len) into *m. Returns 0 for a purge from another node, BUS_OWN for a
 * well-formed one whose node is self (to be ignored), -E2BIG if len > BUS_MSG_MAX, -EPROTO for
 * anything malformed (unknown version or kind, bad hex, a length that does not match, trailing
 * bytes). On failure *why names the problem in a few words (a constant string, never the bytes).
 */
int bus_decode(const char *in, size_t len, uint64_t self, struct bus_msg *m, const char **why);

/* The hash-key id: a keyed digest of a fixed label, equal on two nodes exactly when they hash
 * credentials with the same key (--hash-key-file), and telling nothing about the key. */
void bus_key_id(const struct shm *h, uint8_t out[SHM_CRED_LEN]);

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
