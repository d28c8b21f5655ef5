/*
 * test_breaker.c — the IdP circuit breaker: the threshold, exactly one probe per back-off, the
 * back-off doubling to its cap, success closing it, Retry-After rounding, and one probe among
 * racing threads.
 */
#include <pthread.h>

#include "breaker.h"
#include "check.h"
#include "log.h"

static void test_threshold_and_probe(void)
{
    struct breaker b = {0};
    int64_t t = 1000000;

    for (int i = 0; i < BREAKER_THRESHOLD - 1; i++) {
        breaker_failure(&b, t, "test");
        CHECK(breaker_allow(&b, t), "still closed after %d failures", i + 1);
    }
    breaker_success(&b); /* resets the count */
    for (int i = 0; i < BREAKER_THRESHOLD - 1; i++)
        breaker_failure(&b, t, "test");
    CHECK(breaker_allow(&b, t), "a success between failures resets the count");
    breaker_failure(&b, t, "test");
    CHECK(!breaker_allow(&b, t), "open at the threshold");
    CHECK_INT(breaker_is_open(&b), 1);
    CHECK_INT(breaker_opened_total(&b), 1);
    CHECK_INT(breaker_retry_after_s(&b, t), 1); /* 0.5 s left: at least 1 */
    CHECK_INT(breaker_take_probe(&b, t + BREAKER_MIN_BACKOFF_MS - 1), 0);
    CHECK_INT(breaker_take_probe(&b, t + BREAKER_MIN_BACKOFF_MS), 1);
    CHECK_INT(breaker_take_probe(&b, t + BREAKER_MIN_BACKOFF_MS), 0); /* one probe at a time */
    /* a failed probe doubles the back-off, up to the cap */
    int64_t now = t + BREAKER_MIN_BACKOFF_MS, want = BREAKER_MIN_BACKOFF_MS;
    for (int i = 0; i < 8; i++) {
        breaker_failure(&b, now, "probe failed");
        want = want * 2 > BREAKER_MAX_BACKOFF_MS ? BREAKER_MAX_BACKOFF_MS : want * 2;
        CHECK(breaker_take_probe(&b, now + want - 1) == 0, "no probe before %lld ms",
              (long long)want);
        CHECK(breaker_take_probe(&b, now + want) == 1, "a probe at %lld ms", (long long)want);
        now += want;
    }
    CHECK_INT(want, BREAKER_MAX_BACKOFF_MS);
    breaker_failure(&b, now, "probe failed");
    CHECK_INT(breaker_retry_after_s(&b, now), BREAKER_MAX_BACKOFF_MS / 1000);
    CHECK_INT(breaker_retry_after_s(&b, now + 1), BREAKER_MAX_BACKOFF_MS / 1000); /* rounds up */
    CHECK_INT(breaker_retry_after_s(&b, now + 1001), BREAKER_MAX_BACKOFF_MS / 1000 - 1);
    breaker_success(&b);
    CHECK(breaker_allow(&b, now), "a success closes it");
    CHECK_INT(breaker_retry_after_s(&b, now), 1);
    CHECK_INT(breaker_take_probe(&b, now + BREAKER_MAX_BACKOFF_MS), 0); /* closed: no probe */
    for (int i = 0; i < BREAKER_THRESHOLD; i++)
        breaker_failure(&b, now, "again");
    CHECK_INT(breaker_opened_total(&b), 2);
    CHECK(breaker_take_probe(&b, now + BREAKER_MIN_BACKOFF_MS),
          "reopened: back to the first back-off");
}

static struct breaker shared;
static int probes;

static void *racer(void *arg)
{
    (void)arg;
    if (breaker_take_probe(&shared, 10000))
        __atomic_add_fetch(&probes, 1, __ATOMIC_RELAXED);
    return NULL;
}

static void test_one_probe_among_threads(void)
{
    pthread_t th[8];

    for (int i = 0; i < BREAKER_THRESHOLD; i++)
        breaker_failure(&shared, 0, "test");
    for (int i = 0; i < 8; i++)
        pthread_create(&th[i], NULL, racer, NULL);
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    CHECK_INT(probes, 1);
}

int main(void)
{
    log_init(LOG_LEVEL_ERROR, LOG_FORMAT_TEXT);
    test_threshold_and_probe();
    test_one_probe_among_threads();
    return check_done("test_breaker");
}
