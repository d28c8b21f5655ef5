/*
 * pct.h — percent-decoding (RFC 3986 2.1) as query strings use it, and the hex digits it is made
 * of: the one copy for the request path (http.c's query lookups), the admin API's query values
 * (admin.c), the JSON \u escapes (json.c: JWT payloads, the authentik feed) and authentik's hex
 * session hashes (sids.c). Header-only: each is a few instructions on a hot path and needs no
 * state.
 */
#ifndef AUTHCACHE_PCT_H
#define AUTHCACHE_PCT_H

#include <stddef.h>

/* The value of the hex digit c (0-9, a-f, A-F), or -1. */
static inline int pct_hexval(char c)
{
    unsigned u = (unsigned char)c;

    if (u - '0' < 10u)
        return (int)(u - '0');
    u |= 0x20; /* ASCII letters to lower case; no other byte becomes a-f */
    if (u - 'a' < 6u)
        return (int)(u - 'a' + 10);
    return -1;
}

/*
 * The next byte of a query component s[0, n) at s[*i] (*i < n), decoded as Go's url.ParseQuery and
 * HTML forms do: "%XX" (two hex digits, either case) is that byte, '+' is SP, any other byte is
 * itself. Returns 0..255 and advances *i past what it read (3 bytes or 1), or -1 for a '%' not
 * followed by two hex digits within n, *i unchanged.
 */
static inline int pct_query_next(const char *s, size_t n, size_t *i)
{
    unsigned char c = (unsigned char)s[*i];

    if (c == '%') {
        int hi = *i + 2 < n ? pct_hexval(s[*i + 1]) : -1;
        int lo = *i + 2 < n ? pct_hexval(s[*i + 2]) : -1;
        if (hi < 0 || lo < 0)
            return -1;
        *i += 3;
        return hi << 4 | lo;
    }
    *i += 1;
    return c == '+' ? ' ' : c;
}

#endif
