/*
 * check.h — the unit tests' assertions. A failed check prints where, what was expected and what
 * came, and counts; check_done() prints the tally and gives the exit status (0 pass, 1 fail).
 */
#ifndef AUTHCACHE_CHECK_H
#define AUTHCACHE_CHECK_H

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static int check_failures, check_count;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        check_count++;                                                                             \
        if (!(cond)) {                                                                             \
            check_failures++;                                                                      \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

#define CHECK_INT(got, want)                                                                       \
    do {                                                                                           \
        long long g_ = (long long)(got), w_ = (long long)(want);                                   \
        CHECK(g_ == w_, "expected %s = %lld, got %lld", #got, w_, g_);                             \
    } while (0)

#define CHECK_MEM(got, glen, want, wlen)                                                           \
    do {                                                                                           \
        size_t gl_ = (size_t)(glen), wl_ = (size_t)(wlen);                                         \
        CHECK(gl_ == wl_ && memcmp((got), (want), wl_) == 0,                                       \
              "expected %s = \"%.*s\", got \"%.*s\"", #got, (int)wl_, (const char *)(want),        \
              (int)gl_, (const char *)(got));                                                      \
    } while (0)

static inline int check_done(const char *name)
{
    if (check_failures)
        fprintf(stderr, "%s: %d of %d checks failed\n", name, check_failures, check_count);
    else
        printf("%s: all %d checks passed\n", name, check_count);
    return check_failures ? 1 : 0;
}

#endif
