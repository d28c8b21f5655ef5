/*
 * breaker.h — the IdP circuit breaker: after BREAKER_THRESHOLD consecutive failures that say the
 * IdP is down (fa.c decides which do), requests that need the IdP fail at once (stale or 503)
 * instead of each waiting for a timeout, and one background probe per back-off (0.5 s doubling to
 * 10 s) tests whether it is back.
 *
 * Every function takes now on the monotonic clock (daemon_mono_ms): a step of the wall clock must
 * not stretch or cut the back-off. Any thread; lock-free.
 */
#ifndef AUTHCACHE_BREAKER_H
#define AUTHCACHE_BREAKER_H

#include <stdint.h>

#define BREAKER_THRESHOLD 3
#define BREAKER_MIN_BACKOFF_MS 500
#define BREAKER_MAX_BACKOFF_MS 10000

struct breaker {
    int failures;        /* consecutive */
    int open;            /* 1 while open */
    int64_t retry_at_ms; /* next probe when open (monotonic) */
    int64_t backoff_ms;
    int probing; /* a probe is in flight */
    uint64_t opened_total;
};

/* 1: requests may go to the IdP (the breaker is closed). */
int breaker_allow(struct breaker *b, int64_t now_ms);
/* 1: the caller sends the probe now (open, its back-off over, no probe in flight). */
int breaker_take_probe(struct breaker *b, int64_t now_ms);
/* An answer that does not say the IdP is down: closes the breaker, ends a probe. */
void breaker_success(struct breaker *b);
/* A failure that says the IdP is down: counts; opens at the threshold; a failed probe doubles the
 * back-off. cause is logged when it opens. */
void breaker_failure(struct breaker *b, int64_t now_ms, const char *cause);

int breaker_is_open(struct breaker *b);
uint64_t breaker_opened_total(struct breaker *b);
/* Retry-After for a 503: whole seconds until the next probe (at least 1; 1 when closed). */
int breaker_retry_after_s(struct breaker *b, int64_t now_ms);

#endif
