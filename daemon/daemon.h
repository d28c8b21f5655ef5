/*
 * daemon.h — the process-wide state of authcached that workers, the admin listener and main share:
 * configuration, the segment, per-worker metrics, the IdP circuit breaker (breaker.h), the
 * single-flight table (flight.h), purges.
 * Everything here is made at start; the hot path only reads it (metrics are per worker).
 */
#ifndef AUTHCACHE_DAEMON_H
#define AUTHCACHE_DAEMON_H

#include <pthread.h>
#include <stdalign.h>
#include <stdint.h>

#include "breaker.h"
#include "config.h"
#include "flight.h"
#include "shm.h"

/* What answered a forward-auth request: the X-Authcache values, and the rest. */
enum result {
    RES_HIT,         /* fresh answer from the cache */
    RES_STALE,       /* held answer served while the IdP fails */
    RES_MISS,        /* asked the IdP: no answer held */
    RES_REVALIDATED, /* asked the IdP: the held answer was past fresh-ttl */
    RES_BYPASS,      /* not cacheable: no credential, login flow */
    RES_SIGNOUT,     /* sign-out purge */
    RES_UNAVAILABLE, /* 503: IdP failing and nothing servable */
    RES_REJECTED,    /* malformed or oversized request (4xx from authcached itself) */
    RES_COUNT
};
extern const char *const result_names[RES_COUNT];

#define METRICS_LAT_BUCKETS                                                                        \
    14 /* IdP latency: 0.5 1 2.5 5 10 25 50 100 250 500 1000 2500 5000 ms +Inf */
extern const double metrics_lat_bounds_ms[METRICS_LAT_BUCKETS - 1];

/*
 * A worker's plain counters, declared once for every output (admin.c: /metrics and /v1/stats):
 * X(field of struct metrics, JSON group, JSON key, Prometheus name, GAUGE or COUNTER, help text).
 */
#define METRICS_WORKER(X)                                                                          \
    X(idp_calls, idp, requests, "authcache_idp_requests_total", COUNTER,                           \
      "Requests sent to the identity provider.")                                                   \
    X(idp_failures, idp, failures, "authcache_idp_failures_total", COUNTER,                        \
      "IdP calls unreachable, timed out, 5xx or garbled.")                                         \
    X(idp_coalesced, idp, coalesced, "authcache_idp_coalesced_total", COUNTER,                     \
      "Requests that waited on another's IdP call.")                                               \
    X(idp_background, idp, background, "authcache_idp_background_total", COUNTER,                  \
      "Refresh-ahead revalidations and breaker probes.")                                           \
    X(signouts_paced, idp, signouts_paced, "authcache_signouts_paced_total", COUNTER,              \
      "Sign-outs that waited for their turn to the IdP (--signout-rate).")                         \
    X(signouts_shed, idp, signouts_shed, "authcache_signouts_shed_total", COUNTER,                 \
      "Sign-outs answered 503 unsent: their turn would come after --upstream-timeout.")            \
    X(conns_open, connections, open, "authcache_connections_open", GAUGE,                          \
      "Forward-auth client connections open.")                                                     \
    X(conns_accepted, connections, accepted, "authcache_connections_accepted_total", COUNTER,      \
      "Client connections accepted.")                                                              \
    X(conns_rejected, connections, rejected, "authcache_connections_rejected_total", COUNTER,      \
      "Connections closed at once: over the limit with none idle.")                                \
    X(conns_timed_out, connections, timed_out, "authcache_connections_timed_out_total", COUNTER,   \
      "Connections closed by header or idle timeout.")                                             \
    X(conns_evicted, connections, evicted, "authcache_connections_evicted_total", COUNTER,         \
      "Idle connections closed to make room for a new one.")

/* One worker's counters: written only by that worker (relaxed stores), read by the admin thread. */
struct metrics {
    alignas(64) uint64_t results[RES_COUNT];
    uint64_t status[6]; /* by class: 1xx..5xx at [1..5], [0] other */
    uint64_t idp_lat[METRICS_LAT_BUCKETS];
    uint64_t idp_lat_sum_us;
#define X(field, group, key, prom, kind, help) uint64_t field;
    METRICS_WORKER(X)
#undef X
};

#define M_ADD(m, field, n) __atomic_store_n(&(m)->field, (m)->field + (n), __ATOMIC_RELAXED)

struct worker;
struct bus;
struct epochs;
struct purger;
struct feed;
struct sids;

struct daemon {
    struct config *cfg;
    struct shm shm;
    struct worker **workers;
    unsigned nworkers;
    struct metrics *metrics; /* nworkers of them */
    struct breaker breaker;
    struct flights *flights;
    int ready;    /* serving */
    int draining; /* SIGTERM seen */
    int64_t started_ms;
    uint64_t purged_total;
    struct bus *bus;       /* NULL without --bus; set before the workers start */
    struct epochs *epochs; /* purge stamps against answers in flight and held (epoch.h) */
    struct purger *purger; /* the purge thread; NULL: purges run where they are asked */
    struct feed *feed;     /* authentik's event feed (feed.h); NULL without --authentik-url */
    struct sids *sids;     /* session -> credentials of its answers, for the feed (sids.h); NULL
                            * without --authentik-url; set before the workers start */
};

/* What one purge removes: the answers of a user, those of a session (by the keyed digests of its
 * credential, shm_key_cred: they match only under the same hash key), or all. */
enum purge_kind { PURGE_USER = 1, PURGE_CREDS, PURGE_ALL };
#define PURGE_MAX_CREDS 2 /* a session value hashed as a cookie and as an Authorization header */
struct purge {
    enum purge_kind kind;
    const char *user; /* PURGE_USER */
    size_t user_len;
    uint8_t cred[PURGE_MAX_CREDS][SHM_CRED_LEN]; /* PURGE_CREDS: cred[0, ncred) */
    unsigned ncred;
};

/* Purge by user, session credential value, or everything (user == NULL && session == NULL), on
 * this node and, with --bus, on every node (bus_publish: never blocks). Returns the number of
 * answers removed here, or -errno. Logs one line. Thread-safe. */
int daemon_purge(struct daemon *d, const char *user, size_t user_len, const char *session,
                 size_t session_len, const char *why);

/* Purge p here and, with --bus, everywhere, without waiting for the segment: stamped now (from this
 * moment no answer it covers is served or kept, epoch.h), published now, and the segment purged by
 * the purge thread (purger.h; at once here without one). With find_users (a session purge), the
 * users found among the session's answers are purged too. Never blocks on a scan; for workers. */
void daemon_purge_soon(struct daemon *d, const struct purge *p, int find_users, const char *why);

/* A purge received from another node: stamped now (it holds here from this moment), the segment
 * purged by the purge thread (in place without one, or when its queue is full), never published
 * again. 0 (queued) or the number removed here, or -errno. Never waits for other purges' walks:
 * the bus thread calls it. */
int daemon_purge_received(struct daemon *d, const struct purge *p, const char *why);

/* For the purge thread (purger.c): */
/* p alone, in place (stamped already): the segment, then the users it finds (find_users). */
void daemon__purge_run(struct daemon *d, const struct purge *p, int find_users, const char *why);
/* Stamp p and publish it: a user found among a signed-out session's answers. */
void daemon__purge_announce(struct daemon *d, const struct purge *p);
/* Count n answers removed and log one line. */
void daemon__purged(struct daemon *d, int n, const char *what, const char *why);
void daemon__purged_user(struct daemon *d, int n, const char *user, size_t len, const char *why);
void daemon__purged_batch(struct daemon *d, int n, size_t purges, size_t users_found,
                          const char *why);

/* Wall-clock milliseconds: what answers' lifetimes mean (and nothing else: deadlines are
 * monotonic). daemon_clock_init, once at start, reads the tests' offset (daemon.c). */
int64_t daemon_now_ms(void);
void daemon_clock_init(void);

/* Monotonic clock, for timeouts and durations (it never jumps with the wall clock). */
int64_t daemon_mono_us(void);
static inline int64_t daemon_mono_ms(void)
{
    return daemon_mono_us() / 1000;
}

#endif
