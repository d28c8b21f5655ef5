/*
 * bus_msg.h — the purge bus's message codec, in bus_msg.c: one purge as one short line of text.
 * Pure functions: no I/O, no allocation, no state. The bus thread (bus.c) sends what
 * bus_msg_encode writes and applies what bus_msg_decode reads.
 *
 * Only what a peer needs goes on the wire: a user name, a session's keyed credential digests
 * (never the credential), or "all". Format (docs/daemon.md, "Bus"):
 *     v1 <node> all
 *     v1 <node> user <len>:<name>
 *     v1 <node> session <key-id> <digest>[ <digest>]
 * <node>, <key-id> and <digest> are 16 lowercase hex digits; <len> is decimal, 1 to
 * BUS_MSG_USER_MAX, without leading zeros, and <name> is exactly that many bytes (any bytes).
 *
 * bus_msg_decode reads bytes from the network: it bounds every field, never reads outside
 * [in, in + len), and is fuzzed (tests/fuzz/fuzz_bus.c).
 */
#ifndef AUTHCACHE_BUS_MSG_H
#define AUTHCACHE_BUS_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "daemon.h"
#include "resp.h"

#define BUS_MSG_VERSION "v1"
#define BUS_MSG_USER_MAX SHM_MAX_USER /* a longer user name cannot be in any segment */
#define BUS_MSG_MAX 600               /* >= "v1 " + node + " user 512:" + 512 bytes */

/* A decoded message. For PURGE_USER, p.user points into the decoded bytes. */
struct bus_msg {
    uint64_t node;                /* the sender's random id */
    uint8_t key_id[SHM_CRED_LEN]; /* PURGE_CREDS: the sender's hash-key id (bus_msg_key_id) */
    struct purge p;
};

/* bus_msg_decode's verdict on a well-formed message this node sent itself. */
#define BUS_MSG_OWN 1

/*
 * Write the message for purge p from node into out (no NUL added). key_id is the sender's
 * bus_msg_key_id, used for PURGE_CREDS. Returns the length (at most BUS_MSG_MAX), -EINVAL for a
 * purge that has no message (a user name empty or over BUS_MSG_USER_MAX bytes, no digests, unknown
 * kind), -ENOSPC if cap is too small.
 */
int bus_msg_encode(uint64_t node, const uint8_t key_id[SHM_CRED_LEN], const struct purge *p,
                   char *out, size_t cap);

/*
 * Read the message in[0, len) into *m. Returns 0 for a purge from another node, BUS_MSG_OWN for a
 * well-formed one whose node is self (to be ignored), -E2BIG if len > BUS_MSG_MAX, -EPROTO for
 * anything malformed (unknown version or kind, bad hex, a length that does not match, trailing
 * bytes). On failure *why names the problem in a few words (a constant string, never the bytes).
 */
int bus_msg_decode(const char *in, size_t len, uint64_t self, struct bus_msg *m, const char **why);

/* ---- Redis Streams: what the bus reads from Redis besides the message itself ----
 * The bus keeps one stream (XADD ... MAXLEN ~ N * m <message>) and each node reads it from the last
 * id it applied (XREAD ... STREAMS <stream> <id>). These functions read Redis's replies as
 * resp_parse left them (resp.h's flat items); they bound everything, read only the items given, and
 * are fuzzed (tests/fuzz/fuzz_bus.c). */

/* A stream entry id, "<ms>-<seq>" in decimal. */
struct bus_id {
    uint64_t ms, seq;
};
#define BUS_ID_MAX 42     /* two 20-digit numbers, '-', NUL */
#define BUS_MSG_FIELD "m" /* the entry's one field: the message */

/* Read an id: 1 to 20 digits, '-', 1 to 20 digits, each at most UINT64_MAX. 0 or -EPROTO. */
int bus_id_parse(const char *s, size_t len, struct bus_id *id);
/* Write id into out, NUL-terminated; its length. */
int bus_id_format(const struct bus_id *id, char out[BUS_ID_MAX]);
/* <0, 0, >0 as a is before, equal to, after b. */
int bus_id_cmp(const struct bus_id *a, const struct bus_id *b);

/* One entry of an XREAD reply. msg is NULL for an entry that is not [m, <bulk>] (a stranger's
 * entry: its id still counts as read). */
struct bus_entry {
    struct bus_id id;
    const char *msg;
    size_t len;
};

/*
 * The entries of the reply r[0, n) to XREAD [COUNT c] [BLOCK ms] STREAMS <stream> <id>: a nil (the
 * block timed out: 0 entries) or [[stream, [[id, [field, value, ...]], ...]]]. At most cap entries
 * into out, in the reply's order. Returns their number, or -EPROTO for another shape (another
 * stream, a bad id, ids not increasing, more than cap entries).
 */
int bus_xread_entries(const struct resp_item *r, size_t n, const char *stream, size_t slen,
                      struct bus_entry *out, size_t cap);

/* What XINFO STREAM tells (the fields the bus uses). */
struct bus_xinfo {
    int64_t length;      /* entries held */
    struct bus_id last;  /* last-generated-id */
    int has_first;       /* the stream holds an entry: */
    struct bus_id first; /* ... first-entry's id */
    int has_added;       /* Redis >= 7: */
    int64_t added;       /* ... entries-added, every entry ever added */
};

/* The reply r[0, n) to XINFO STREAM <stream>: a flat array of field names and values. 0, or
 * -EPROTO (not such a reply, a length or id missing or bad). An error reply ("no such key") is the
 * caller's to see first. */
int bus_xinfo_parse(const struct resp_item *r, size_t n, struct bus_xinfo *x);

/* Where a node stands in the stream: the last id it read and that entry's ordinal (entries added
 * to the stream up to it, as entries-added counts them), if it read anything since it started. */
struct bus_pos {
    int known;
    struct bus_id last;
    int ord_known; /* a position taken from the segment's mark has no ordinal */
    uint64_t ord;
};

/*
 * On each (re)connection: where to read from, and whether entries after pos->last may have been
 * lost (a gap: trimmed past the retention, or the stream deleted or recreated). x is NULL for a
 * stream that does not exist. Updates *pos to the position to read from and returns 1 for a gap, 0
 * for none. A gap was not read: the caller purges everything held (docs/daemon.md, "Bus").
 * Unknown position (a node that just started on a new segment): read from the stream's end, no
 * gap. Without the ordinal (or entries-added, Redis 6) the oldest entry held coming after the
 * position is a gap.
 */
int bus_sync(struct bus_pos *pos, const struct bus_xinfo *x);

/* How far a node at pos reads behind the stream x describes: entries not read yet (0 where Redis
 * does not count them, before 7, or pos has no ordinal) and the time between the newest entry's
 * id and pos (ms; 0 when pos is at or past it). */
void bus_lag(const struct bus_pos *pos, const struct bus_xinfo *x, uint64_t *behind,
             uint64_t *lag_ms);

/* The hash-key id: a keyed digest of a fixed label, equal on two nodes exactly when they hash
 * credentials with the same key (--hash-key-file), and telling nothing about the key. */
void bus_msg_key_id(const struct shm *h, uint8_t out[SHM_CRED_LEN]);

#endif
