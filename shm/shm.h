/*
 * shm.h — the authcache table: a lock-free map from a keyed credential digest to one answer (the
 * identity headers an IdP returned and their lifetimes), in a shared-memory segment any number of
 * processes attach to. No I/O beyond opening the segment, no threads, no locks.
 *
 * Contracts, for every function here:
 *  - returns 0 (or a count) on success, -errno on failure; nothing is logged;
 *  - safe to call from any number of threads and processes at once, readers and writers alike;
 *  - readers never block and never write to the segment (a read-only handle maps it PROT_READ);
 *  - every offset and length read from the segment is checked, so arbitrary bytes in it can make a
 *    call fail or miss, never crash or loop.
 * Times are wall-clock milliseconds passed in by the caller (tests control the clock).
 */
#ifndef AUTHCACHE_SHM_H
#define AUTHCACHE_SHM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "shm_layout.h"

/* A process's handle on a segment. */
struct shm {
    struct shm_hdr_sh *hdr;
    struct shm_bucket_sh *index;
    uint8_t *ring;
    size_t map_size;
    uint64_t nbuckets, ring_size, capacity;
    uint64_t generation;
    int writable;
    int fd;
    char name[256];
    uint64_t mac_[32]; /* HMAC state from the segment's key (shm_key.c) */
};

struct shm_params {
    uint64_t capacity;   /* most live answers */
    uint64_t ring_bytes; /* bytes for records; 0 = capacity * SHM_DEFAULT_BYTES_PER_ENTRY */
    const uint8_t *key;  /* SHM_KEY_LEN bytes, or NULL for a random key */
    int has_group;       /* 1: the segment is mode 0640, group `group` (--shm-group), else 0600 */
    uint32_t group;
};
#define SHM_DEFAULT_BYTES_PER_ENTRY 1536u

/* The digest pair that names an answer. */
struct shm_key {
    uint8_t digest[SHM_DIGEST_LEN]; /* of credential + scope: equality of answers */
    uint8_t cred[SHM_CRED_LEN];     /* of the credential alone: purge by session */
};

/* An answer as stored: on insert the caller fills it; on lookup it is copied out and the three
 * strings point into the caller's buffer. */
struct shm_answer {
    struct shm_key key;
    int64_t first_seen_ms, confirmed_ms, fresh_until_ms, session_end_ms;
    uint16_t flags; /* SHM_ANSWER_* */
    const char *host;
    const char *user;
    const char *hdrs;
    uint32_t host_len, user_len, hdrs_len;
    uint64_t pos; /* log position found at (lookup only) */
};

/*
 * Create /dev/shm/<name> anew (replacing any segment of that name: attached processes see it
 * retired), or with shm_open_or_create keep an existing one whose layout, capacity, ring size and
 * key match. The handle is read-write. -EINVAL for bad params or name, or -errno from the system.
 * *created (may be NULL) tells which happened.
 */
int shm_create(struct shm *h, const char *name, const struct shm_params *p);
int shm_open_or_create(struct shm *h, const char *name, const struct shm_params *p, int *created);

/* Attach an existing segment, read-only or read-write. -ENOENT if absent, -EPROTO if its header is
 * not a layout this code can use (bad magic, version, sizes or offsets). Opened with O_NOFOLLOW:
 * -ELOOP for a symlink, -EBADF for anything but a regular file; read-write needs our own file with
 * no group/other bits (shm_open_or_create: group read allowed when p names that group),
 * read-only our own or root's, or one made group-readable for a group we are in, with no
 * group/other write; else -EPERM (owner) or -EACCES (mode). shm_open_or_create returns these too
 * instead of recreating the segment. */
int shm_attach(struct shm *h, const char *name, int writable);

/* 1 if the process's effective group or one of its supplementary groups is g (a reader's right to
 * a segment of --shm-group; the daemon's right to give one to it). */
int shm_in_my_groups(uint32_t g);

/* Attach a segment given as raw bytes (fuzzing, tests): validates like shm_attach. The handle does
 * not own the memory; shm_detach only forgets it. */
int shm_attach_mem(struct shm *h, void *mem, size_t len, int writable);

void shm_detach(struct shm *h);

/* Whether the segment this handle maps was replaced by a newer one (reattach by name). */
int shm_retired(const struct shm *h);

/* The purge bus's mark (docs/daemon.md, "Bus"): the millisecond part of the id of the newest Redis
 * stream entry whose purge was applied to this segment, so that a daemon that adopts the segment
 * reads the purges made since. shm_bus_mark raises it to ms (never lowers it; lock-free, safe
 * with two daemons on one segment during a handover); shm_bus_mark_get reads it, 0 for none. */
void shm_bus_mark(struct shm *h, uint64_t ms);
uint64_t shm_bus_mark_get(const struct shm *h);

/*
 * Keyed digests (HMAC-SHA-256 with the segment's key, each part length-prefixed, so ("ab","c") and
 * ("a","bc") differ). shm_key_digest hashes any parts; shm_key_query is the one scheme every reader
 * and writer of a segment uses for forward-auth answers (docs/contract.md: credential,
 * X-Forwarded-Host, the auth request's path and query, and with key scope "uri" the forwarded
 * method and path).
 * shm_key_cred is the credential-only digest kept for purge by session.
 */
#define SHM_CRED_COOKIE 1        /* the session cookie(s) */
#define SHM_CRED_AUTHORIZATION 2 /* the Authorization header */
#define SHM_CRED_PROXY_AUTHORIZATION                                                               \
    3 /* the Proxy-Authorization header (Authelia reads it first) */

/* Tags of the other inputs an IdP decides on (shm_key_input), in this order. */
enum shm_input {
    SHM_IN_COOKIE_NAME = 1,     /* the name of a lone session cookie (its value is the credential):
                                 * authentik reads its cookie by exact name */
    SHM_IN_AUTHORIZATION,       /* Authorization, when it is not the credential */
    SHM_IN_PROXY_AUTHORIZATION, /* Proxy-Authorization, likewise */
    SHM_IN_FORWARDED_FOR,       /* X-Forwarded-For as sent (--key-scope uri: network rules) */
    SHM_IN_REAL_IP,             /* X-Real-IP as sent (likewise) */
    SHM_IN_AUTH_METHOD,         /* the forward-auth request's own method, when not GET */
    SHM_IN_FORWARDED_PROTO,     /* X-Forwarded-Proto unless https (--key-scope uri: Authelia
                                 * refuses a target that is not https or wss) */
    SHM_IN_URL_SCHEME,          /* X-Original-URL's scheme unless https (likewise) */
    SHM_IN_FIELDS,              /* one byte: which of X-Forwarded-Host, -Uri, -Method, -Proto,
                                 * X-Original-URI, -URL, -Method were sent (bits 0-6), unless the
                                 * first four exactly (--key-scope uri: endpoints read some only) */
};
struct shm_query {
    int cred_kind; /* SHM_CRED_* */
    const char *cred;
    size_t cred_len;
    const char *host;
    size_t host_len;
    const char *auth_path; /* path and query of the forward-auth request itself */
    size_t auth_path_len;
    int scope_uri;      /* then also: */
    const char *method; /* X-Forwarded-Method */
    size_t method_len;
    const char *uri_path; /* path and query of X-Forwarded-Uri */
    size_t uri_path_len;
    const char *inputs; /* the other inputs the IdP decides on (shm_key_input), or empty: the key
                         * of a request without any is what it was before they existed */
    size_t inputs_len;
};
/* Append input tag with value v to the inputs buf holds (*len of cap). 0, or -E2BIG. Tags go in
 * increasing order, each once. */
int shm_key_input(char *buf, size_t *len, size_t cap, enum shm_input tag, const char *v, size_t n);
void shm_key_digest(const struct shm *h, const struct iovec *parts, int nparts,
                    uint8_t out[SHM_DIGEST_LEN]);
void shm_key_cred(const struct shm *h, int kind, const void *cred, size_t len,
                  uint8_t out[SHM_CRED_LEN]);
void shm_key_query(const struct shm *h, const struct shm_query *q, struct shm_key *out,
                   int with_cred);
/* A key from a cookie credential and arbitrary scope parts (tests and benchmarks). */
void shm_key_make(const struct shm *h, const void *cred, size_t cred_len, const struct iovec *scope,
                  int nscope, struct shm_key *out);

/*
 * Find the newest answer under digest and copy it into buf (at least SHM_MAX_RECORD bytes); the
 * answer's strings point into buf. An answer at or past its session end is not returned (and with a
 * writable handle is deleted). With SHM_LOOKUP_PROMOTE on a writable handle, an answer found near
 * the tail of the log is copied forward so that used answers outlive unused ones (approximate LRU).
 * Returns 0, -ENOENT (none, expired, or still torn after a few retries), -EINVAL.
 */
#define SHM_LOOKUP_PROMOTE 1
int shm_lookup(struct shm *h, const uint8_t digest[SHM_DIGEST_LEN], int64_t now_ms,
               struct shm_answer *out, void *buf, size_t buf_len, int flags);

/* Insert or replace the answer for a->key. Evicts the oldest answers when the log or capacity is
 * full. -E2BIG if the answer exceeds the SHM_MAX_* limits, -EROFS on a read-only handle. */
int shm_insert(struct shm *h, const struct shm_answer *a);

/* Remove the answer under digest. Returns the number removed (0 or 1, more after a racing insert).
 */
int shm_delete(struct shm *h, const uint8_t digest[SHM_DIGEST_LEN]);

/* Remove every answer of a user / of a credential / all. Return the number removed. */
int shm_purge_user(struct shm *h, const char *user, size_t len);
int shm_purge_cred(struct shm *h, const uint8_t cred[SHM_CRED_LEN]);
int shm_purge_all(struct shm *h);

/* Many purges in one walk of the table: the answers whose credential digest (SHM_CRED_LEN bytes
 * read as a uint64_t, memcpy) is in creds, or whose user name's XXH3-64 is in users; both arrays
 * sorted ascending (shm_purge_set_sort). A hash shared by two names purges both: an IdP call too
 * many, never an answer kept. Returns the number removed, or -errno; s->skipped says how many slots
 * the walk left because they kept changing under it (0: nothing that matched is left). */
struct shm_purge_set {
    uint64_t *creds;
    size_t ncreds;
    uint64_t *users;
    size_t nusers;
    size_t skipped; /* out */
    /* Optional: for each answer removed whose credential digest is also in find (sorted), found
     * gets its user name (read in place: copy it; a name scribbled on by a lapped writer can only
     * purge one user too many) before its slot is cleared; it may come more than once per answer.
     * So the users of signed-out sessions are found in the same walk. */
    const uint64_t *find;
    size_t nfind;
    void (*found)(const char *user, size_t len, void *arg);
    void *arg;
};
int shm_purge_set(struct shm *h, struct shm_purge_set *s);
void shm_purge_set_sort(struct shm_purge_set *s);
uint64_t shm_user_hash(const char *user, size_t len);

/* Remove answers past their session end and slots naming dead records, in buckets
 * [first, first + count) (the daemon sweeps a slice at a time). Returns the number removed. */
int shm_sweep(struct shm *h, uint64_t first, uint64_t count, int64_t now_ms);

/* Call fn for every live answer (a consistent copy of each; the table may change meanwhile). fn
 * returns 0 to go on, anything else to stop and have shm_foreach return it. */
typedef int (*shm_foreach_fn)(const struct shm_answer *a, void *arg);
int shm_foreach(struct shm *h, int64_t now_ms, shm_foreach_fn fn, void *arg);

struct shm_stats {
    uint64_t lookups, hits, misses, expired, inserts, replaces, deletes, evictions, purges, retries,
        promotions;
    uint64_t size_class[SHM_SIZE_CLASSES];
    int64_t live; /* entries, as counted by writers */
    uint64_t capacity;
    uint64_t ring_size, ring_used; /* bytes: head - tail */
    uint64_t segment_bytes;
    uint64_t generation;
};
void shm_stats_get(const struct shm *h, struct shm_stats *st);

/*
 * The segment's figures, declared once for every output: the daemon's /metrics and /v1/stats
 * ("cache"), libauthcache's struct authcache_stats and `authcache stats [--json]`.
 * X(field of struct shm_stats, key: the JSON key and the struct authcache_stats field,
 *   Prometheus name, GAUGE or COUNTER, help text). generation and size_class are shown apart.
 */
#define SHM_STATS_FIGURES(X)                                                                       \
    X(live, entries, "authcache_entries", GAUGE, "Answers held in the segment.")                   \
    X(capacity, capacity, "authcache_capacity", GAUGE, "Most answers held.")                       \
    X(lookups, lookups, "authcache_segment_lookups_total", COUNTER, "Lookups in the segment.")     \
    X(hits, hits, "authcache_segment_hits_total", COUNTER, "Lookups that found an answer.")        \
    X(misses, misses, "authcache_segment_misses_total", COUNTER, "Lookups that found none.")       \
    X(inserts, inserts, "authcache_inserts_total", COUNTER, "Answers stored (new keys).")          \
    X(replaces, replaces, "authcache_replaces_total", COUNTER, "Answers stored over a held one.")  \
    X(evictions, evictions, "authcache_evictions_total", COUNTER,                                  \
      "Answers evicted (least recently used first).")                                              \
    X(purges, purges, "authcache_purges_total", COUNTER,                                           \
      "Answers removed by purges (sign-out, admin).")                                              \
    X(expired, expired, "authcache_expired_total", COUNTER,                                        \
      "Answers dropped at their session end.")                                                     \
    X(retries, retries, "authcache_segment_retries_total", COUNTER,                                \
      "Reader retries after a torn or changed record.")                                            \
    X(promotions, promotions, "authcache_promotions_total", COUNTER,                               \
      "Hot answers copied forward before the tail reached them.")                                  \
    X(segment_bytes, segment_bytes, "authcache_segment_bytes", GAUGE,                              \
      "Size of the shared-memory segment.")                                                        \
    X(ring_size, ring_bytes, "authcache_ring_bytes", GAUGE, "Bytes of the log of answers.")        \
    X(ring_used, ring_used, "authcache_ring_used_bytes", GAUGE, "Bytes of the log in use.")

/* Full consistency check: header sane, tail <= head, every used slot names a verifiable record that
 * hashes to its bucket, or a dead one. Fills the report, fixes the live counter when fix != 0 on a
 * writable handle. Returns 0 if consistent, -EUCLEAN if not.
 *
 * head may run past tail + ring by reservations whose writers have not moved the tail yet (in
 * flight, or killed between the two steps; the next write moves the tail): up to
 * SHM_CHECK_MAX_OVERRUN bytes of that is reported in head_overrun, not as a problem. A live
 * writer can make one pass see a transient problem; callers checking a segment in use repeat. */
#define SHM_CHECK_MAX_OVERRUN (64u * SHM_MAX_RECORD)
struct shm_check_report {
    uint64_t slots_used, slots_live, slots_dead, slots_bad, records_walked;
    /* Slots whose record a writer descheduled for a whole lap of the log overwrote late (readers
     * see a miss; not a fault, cleared by fix). */
    uint64_t slots_overwritten;
    uint64_t head_overrun; /* bytes head is past tail + ring_size */
    int64_t live_counter;
    char first_problem[160];
};
int shm_check(struct shm *h, int fix, struct shm_check_report *r);

#endif
