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

/* The hash-key id: a keyed digest of a fixed label, equal on two nodes exactly when they hash
 * credentials with the same key (--hash-key-file), and telling nothing about the key. */
void bus_msg_key_id(const struct shm *h, uint8_t out[SHM_CRED_LEN]);

#endif
