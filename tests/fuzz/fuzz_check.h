/*
 * fuzz_check.h — what every fuzz target checks with: must(cond) aborts (libFuzzer then keeps the
 * input) naming the file, line and condition; inside() says whether a span lies in the input.
 */
#ifndef AUTHCACHE_FUZZ_CHECK_H
#define AUTHCACHE_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

static inline void fuzz_fail(const char *file, int line, const char *what)
{
    fprintf(stderr, "%s:%d: invariant broken: %s\n", file, line, what);
    abort();
}
#define must(cond) ((cond) ? (void)0 : fuzz_fail(__FILE__, __LINE__, #cond))

/* 1 if [p, p + len) lies within buf[0, n). */
static inline int inside(const char *buf, size_t n, const char *p, size_t len)
{
    return p >= buf && len <= n && (size_t)(p - buf) <= n - len;
}

#endif
