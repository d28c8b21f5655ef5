/*
 * buf.h — growing a heap array: the one way the daemon does it (connection input and output, IdP
 * answers, mailboxes, single-flight waiters, admin replies).
 */
#ifndef AUTHCACHE_BUF_H
#define AUTHCACHE_BUF_H

#include <errno.h>
#include <stdlib.h>

/* Make *p (an array of *cap elements of elem bytes) hold at least need elements: the capacity
 * doubles, from first when the array is empty, until need fits; beyond max (0: no limit) it does
 * not grow. 0, -E2BIG (past max, *p untouched) or -ENOMEM (*p untouched). */
static inline int buf__reserve(void **p, size_t *cap, size_t need, size_t elem, size_t first,
                               size_t max)
{
    size_t c = *cap ? *cap : first;
    void *n;

    if (need <= *cap)
        return 0;
    while (c < need)
        c *= 2;
    if (max && c > max)
        return -E2BIG;
    if (!(n = realloc(*p, c * elem)))
        return -ENOMEM;
    *p = n;
    *cap = c;
    return 0;
}

/* buf__reserve for an array p with a size_t capacity cap. */
#define BUF_RESERVE(p, cap, need, first, max)                                                      \
    buf__reserve((void **)&(p), &(cap), (need), sizeof(*(p)), (first), (max))

#endif
