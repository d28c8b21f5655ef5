/*
 * breaker.c — the IdP circuit breaker (breaker.h says what it decides).
 *
 * One mutex-free struct of atomics; state changes are rare (a failure, a recovery) and every reader
 * tolerates a slightly stale view. The probe is taken with a compare-and-swap, so exactly one
 * thread sends it per back-off.
 */
#include "breaker.h"
#include "log.h"

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELEASE)

int breaker_allow(struct breaker *b, int64_t now_ms)
{
    (void)now_ms;
    return !LOAD(b->open);
}

int breaker_is_open(struct breaker *b)
{
    return LOAD(b->open);
}

uint64_t breaker_opened_total(struct breaker *b)
{
    return __atomic_load_n(&b->opened_total, __ATOMIC_RELAXED);
}

int breaker_retry_after_s(struct breaker *b, int64_t now_ms)
{
    int64_t left;

    if (!LOAD(b->open))
        return 1;
    left = LOAD(b->retry_at_ms) - now_ms;
    return left > 1000 ? (int)((left + 999) / 1000) : 1;
}

int breaker_take_probe(struct breaker *b, int64_t now_ms)
{
    int zero = 0;

    if (!LOAD(b->open) || now_ms < LOAD(b->retry_at_ms))
        return 0;
    return __atomic_compare_exchange_n(&b->probing, &zero, 1, 0, __ATOMIC_ACQ_REL,
                                       __ATOMIC_RELAXED);
}

void breaker_success(struct breaker *b)
{
    STORE(b->failures, 0);
    STORE(b->probing, 0);
    if (LOAD(b->open)) {
        STORE(b->backoff_ms, 0);
        STORE(b->open, 0);
        log_info("idp_recovered", "identity provider answers again; circuit closed");
    }
}

void breaker_failure(struct breaker *b, int64_t now_ms, const char *cause)
{
    int n = __atomic_add_fetch(&b->failures, 1, __ATOMIC_ACQ_REL);

    if (LOAD(b->open)) { /* a failed probe: wait longer */
        int64_t bo = LOAD(b->backoff_ms) * 2;
        if (bo > BREAKER_MAX_BACKOFF_MS)
            bo = BREAKER_MAX_BACKOFF_MS;
        STORE(b->backoff_ms, bo);
        STORE(b->retry_at_ms, now_ms + bo);
        STORE(b->probing, 0);
        return;
    }
    if (n >= BREAKER_THRESHOLD) {
        STORE(b->backoff_ms, (int64_t)BREAKER_MIN_BACKOFF_MS);
        STORE(b->retry_at_ms, now_ms + BREAKER_MIN_BACKOFF_MS);
        STORE(b->open, 1);
        __atomic_add_fetch(&b->opened_total, 1, __ATOMIC_RELAXED);
        log_warn("idp_down",
                 "identity provider failing (%s) %d times in a row; circuit open, "
                 "answering from the cache",
                 cause, n);
    }
}
