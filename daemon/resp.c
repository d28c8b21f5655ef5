/*
 * resp.c — RESP2, the Redis protocol (resp.h): commands written as arrays of bulk strings, replies
 * read into a flat array of items.
 *
 * resp_parse reads the whole reply again on each call until it is complete (the caller keeps the
 * bytes): a reply is a few lines and a bulk's bytes, the bulk's length is read from its header and
 * its bytes are not scanned, so a call costs the number of lines, not of bytes. Nesting is followed
 * without recursion, with a stack of the open arrays bounded by RESP_DEPTH_MAX. Every item is
 * checked whole before the next is looked at: a reply cut anywhere is partial (0), never an error,
 * and an error is reported as soon as the bytes that make it one are there.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "resp.h"

/* The line at in[0, len) up to CRLF: 1 and its length in *n, 0 if incomplete, -E2BIG, -EPROTO. */
static int resp_line(const char *in, size_t len, size_t *n)
{
    size_t lim = len < RESP_LINE_MAX + 1 ? len : RESP_LINE_MAX + 1;
    const char *cr = memchr(in, '\r', lim);

    if (!cr)
        return len > RESP_LINE_MAX ? -E2BIG : 0;
    if (memchr(in, '\n', (size_t)(cr - in)))
        return -EPROTO;
    if ((size_t)(cr - in) + 1 >= len)
        return 0;
    if (cr[1] != '\n')
        return -EPROTO;
    *n = (size_t)(cr - in);
    return 1;
}

/* A RESP integer: an optional '-', 1 to 18 digits, nothing else. 0 or -EPROTO. */
static int resp_int(const char *p, size_t n, int64_t *v)
{
    int neg = n > 0 && p[0] == '-';
    int64_t x = 0;

    if (neg) {
        p++;
        n--;
    }
    if (n == 0 || n > 18)
        return -EPROTO;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -EPROTO;
        x = x * 10 + (p[i] - '0');
    }
    *v = neg ? -x : x;
    return 0;
}

/* One item at in[0, len); for an array, its header alone. Returns the bytes it takes, 0 if
 * incomplete, or -errno. */
static ssize_t resp_item(const char *in, size_t len, size_t max_bulk, struct resp_item *it)
{
    size_t n;
    int rc;

    if (len == 0)
        return 0;
    memset(it, 0, sizeof(*it));
    it->type = in[0];
    if ((rc = resp_line(in + 1, len - 1, &n)) <= 0)
        return rc;
    switch (in[0]) {
    case RESP_SIMPLE:
    case RESP_ERROR:
        it->p = in + 1;
        it->len = n;
        return (ssize_t)(n + 3);
    case RESP_INT:
        if (resp_int(in + 1, n, &it->n) < 0)
            return -EPROTO;
        return (ssize_t)(n + 3);
    case RESP_BULK: {
        size_t head = n + 3;
        if (resp_int(in + 1, n, &it->n) < 0 || it->n < -1)
            return -EPROTO;
        if (it->n == -1)
            return (ssize_t)head;
        if ((uint64_t)it->n > max_bulk)
            return -E2BIG;
        if (len - head < (size_t)it->n + 2)
            return 0;
        if (in[head + (size_t)it->n] != '\r' || in[head + (size_t)it->n + 1] != '\n')
            return -EPROTO;
        it->p = in + head;
        it->len = (size_t)it->n;
        return (ssize_t)(head + (size_t)it->n + 2);
    }
    case RESP_ARRAY:
        if (resp_int(in + 1, n, &it->n) < 0 || it->n < -1)
            return -EPROTO;
        return (ssize_t)(n + 3);
    default:
        return -EPROTO;
    }
}

ssize_t resp_parse(const char *in, size_t len, const struct resp_limits *lim,
                   struct resp_item *items, size_t cap, size_t *nitems)
{
    /* The arrays still open, innermost last: their index and how many elements they still await. */
    size_t open[RESP_DEPTH_MAX];
    int64_t left[RESP_DEPTH_MAX];
    unsigned depth = 0,
             max_depth = lim->max_depth < RESP_DEPTH_MAX ? lim->max_depth : RESP_DEPTH_MAX;
    size_t off = 0, ni = 0;

    *nitems = 0;
    do {
        struct resp_item *it;
        ssize_t k;

        if (ni == cap)
            return -E2BIG;
        it = &items[ni];
        if ((k = resp_item(in + off, len - off, lim->max_bulk, it)) <= 0)
            return k;
        off += (size_t)k;
        it->next = ++ni;
        if (it->type == RESP_ARRAY && depth == max_depth)
            return -EPROTO;
        if (it->type == RESP_ARRAY && it->n > 0) {
            /* Each element takes an item at least: refuse at once what cannot fit. */
            if ((uint64_t)it->n > cap - ni)
                return -E2BIG;
            open[depth] = ni - 1;
            left[depth] = it->n;
            depth++;
            continue;
        }
        /* An item is complete: close every array it completes. */
        while (depth > 0 && --left[depth - 1] == 0) {
            depth--;
            items[open[depth]].next = ni;
        }
    } while (depth > 0);
    *nitems = ni;
    return (ssize_t)off;
}

/* Append the bytes p[0, n) at out + *o if they fit in cap. 0 or -ENOSPC. */
static int put(char *out, size_t cap, size_t *o, const void *p, size_t n)
{
    if (cap - *o < n)
        return -ENOSPC;
    memcpy(out + *o, p, n);
    *o += n;
    return 0;
}

int resp_command(char *out, size_t cap, int argc, const char *const *argv, const size_t *lens)
{
    char head[32];
    size_t o = 0;
    int n = snprintf(head, sizeof(head), "*%d\r\n", argc);

    if (put(out, cap, &o, head, (size_t)n) < 0)
        return -ENOSPC;
    for (int i = 0; i < argc; i++) {
        n = snprintf(head, sizeof(head), "$%zu\r\n", lens[i]);
        if (put(out, cap, &o, head, (size_t)n) < 0 || put(out, cap, &o, argv[i], lens[i]) < 0 ||
            put(out, cap, &o, "\r\n", 2) < 0)
            return -ENOSPC;
    }
    return o > (size_t)INT32_MAX ? -ENOSPC : (int)o;
}
