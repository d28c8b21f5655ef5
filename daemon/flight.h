/*
 * flight.h — single flight: one IdP request per key in the whole process; concurrent requests for
 * the key wait for its outcome instead of asking too. A waiter is named by (worker, slot, gen) and
 * told the outcome by the leader's worker (worker_post), so nothing here points into a worker.
 * Any thread.
 */
#ifndef AUTHCACHE_FLIGHT_H
#define AUTHCACHE_FLIGHT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "shm.h"

struct flight_waiter {
    uint32_t worker, slot, gen;
};

enum flight_outcome {
    FLIGHT_STORED, /* an answer is in the cache now: serve it */
    FLIGHT_RETRY,  /* not stored (non-2xx, no user, purged meanwhile): each waiter asks itself */
    FLIGHT_FAILED, /* the IdP failed: stale or 503 */
};

struct flights;
struct flights *flights_new(void); /* NULL: out of memory */
void flights_free(struct flights *f);

/* Lead the flight for digest (returns 1) or, with w, join it (returns 0). Without w (a background
 * revalidation) returns 0 and does nothing when a flight exists. -ENOMEM. */
int flight_begin(struct flights *f, const uint8_t digest[SHM_DIGEST_LEN],
                 const struct flight_waiter *w);

/* End the flight: hands back its waiters (the caller frees *out with free()); 0 if none. */
size_t flight_end(struct flights *f, const uint8_t digest[SHM_DIGEST_LEN],
                  struct flight_waiter **out);

#endif
