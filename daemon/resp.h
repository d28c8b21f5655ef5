/*
 * resp.h — RESP2, the Redis protocol, in resp.c: resp_command writes a command, resp_parse reads
 * one reply. Pure functions: no I/O, no allocation, no state between calls. Used by the purge bus
 * (bus.c) for AUTH, XADD, XREAD and XINFO STREAM; general enough for any command and reply.
 *
 * A reply is read into a flat array of items in pre-order: an array's item is followed by its
 * elements, each followed by its own elements if it is an array. items[i].next is the index just
 * past item i and everything inside it, so the elements of an array at i are found by starting at
 * i + 1 and stepping with .next, count items[i].n times.
 *
 * Reading is incremental in the manner of picohttpparser: keep the received bytes, call resp_parse
 * on all of them each time more arrive; it returns 0 until a whole reply is there, and nothing
 * before that is kept or needed. resp_parse reads bytes from the network: every length and count
 * is bounded before use, nothing outside [in, in + len) is read, and it is fuzzed
 * (tests/fuzz/fuzz_resp.c).
 */
#ifndef AUTHCACHE_RESP_H
#define AUTHCACHE_RESP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define RESP_LINE_MAX 4096 /* a simple string, error or integer line, without its CRLF */
#define RESP_DEPTH_MAX 16  /* the most arrays nested in one another resp_parse can follow */

/* The type of an item: its first byte on the wire. */
#define RESP_SIMPLE '+'
#define RESP_ERROR '-'
#define RESP_INT ':'
#define RESP_BULK '$'
#define RESP_ARRAY '*'

struct resp_item {
    char type; /* RESP_SIMPLE, RESP_ERROR, RESP_INT, RESP_BULK or RESP_ARRAY */
    int64_t n; /* INT: the integer; BULK: the length, -1 for nil; ARRAY: the count, -1 for nil */
    const char
        *p;      /* SIMPLE, ERROR, BULK: the bytes, inside the parsed buffer; NULL for a nil bulk */
    size_t len;  /* ... and their length (0 for nil) */
    size_t next; /* the index of the item after this one and all it contains */
};

/* What resp_parse accepts. */
struct resp_limits {
    size_t max_bulk;    /* the longest bulk string */
    unsigned max_depth; /* arrays nested this deep at most: 0 no arrays, 1 arrays of scalars, ...
                           (at most RESP_DEPTH_MAX) */
};

/*
 * Parse one reply from in[0, len) into items[0, *nitems), at most cap items. Returns the bytes the
 * reply takes (> 0), 0 if in holds only part of one (*nitems is then 0), or on failure:
 *   -E2BIG   a bulk string longer than lim->max_bulk, a line longer than RESP_LINE_MAX, or more
 *            items than cap (an array announcing more elements than the items left is refused as
 *            soon as its count is read);
 *   -EPROTO  not RESP2: an unknown type byte, a bad integer or length, a line with a bare CR or LF,
 *            a bulk not followed by CRLF, or an array nested deeper than lim->max_depth.
 * A failure is final: more bytes would not mend it, the stream is lost. The strings in items
 * point into in. An empty in is partial.
 */
ssize_t resp_parse(const char *in, size_t len, const struct resp_limits *lim,
                   struct resp_item *items, size_t cap, size_t *nitems);

/* Write the command argv[0..argc) (lens[i] bytes each, any bytes) into out as a RESP array of bulk
 * strings. Returns its length, or -ENOSPC if it does not fit in cap (out is then undefined). */
int resp_command(char *out, size_t cap, int argc, const char *const *argv, const size_t *lens);

#endif
