/*
 * fuzz_cookie.c — the small grammars of http.h on arbitrary bytes: Cookie iteration, the name
 * matchers, Connection lists, hop-by-hop names, target splitting and query lookup.
 *
 * The input is split at its first NUL (if any) into a pattern / key and a subject. Each function is
 * checked for spans inside the input and termination, and against a naive reference implementation.
 */
#include "http.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fuzz_check.h"

static int ows(char c)
{
    return c == ' ' || c == '\t';
}

static unsigned char low(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* Cookie pairs, the slow way: split at every ';', trim, need '=' and a non-empty name. */
static void check_cookies(const char *s, size_t n)
{
    const char *pos = s, *end = s + n;
    struct http_span name, value;
    size_t start = 0, count = 0;
    for (;;) {
        /* the reference's next pair */
        size_t rn = 0, rnl = 0, rv = 0, rvl = 0;
        int found = 0;
        while (start < n && !found) {
            size_t e = start;
            while (e < n && s[e] != ';')
                e++;
            size_t a = start, eq;
            start = e + 1;
            while (a < e && ows(s[a]))
                a++;
            for (eq = a; eq < e && s[eq] != '='; eq++)
                ;
            if (eq == e)
                continue;
            size_t ne = eq;
            while (ne > a && ows(s[ne - 1]))
                ne--;
            if (ne == a)
                continue;
            size_t vs = eq + 1, ve = e;
            while (vs < ve && ows(s[vs]))
                vs++;
            while (ve > vs && ows(s[ve - 1]))
                ve--;
            rn = a, rnl = ne - a, rv = vs, rvl = ve - vs;
            found = 1;
        }
        int got = http_cookie_next(&pos, end, &name, &value);
        must(got == found);
        must(pos >= s && pos <= end);
        if (!got) {
            must(pos == end);
            break;
        }
        must(inside(s, n, name.p, name.len) && inside(s, n, value.p, value.len));
        must(name.p == s + rn && name.len == rnl && value.p == s + rv && value.len == rvl);
        must(name.len > 0 && !memchr(name.p, ';', name.len) && !memchr(name.p, '=', name.len));
        must(!memchr(value.p, ';', value.len));
        must(++count <= n / 2 + 1);
    }
}

static int ref_match(const char *name, size_t len, const char *pat, int icase)
{
    size_t pl = strlen(pat);
    int prefix = pl && pat[pl - 1] == '*';
    size_t need = prefix ? pl - 1 : pl;
    if (prefix ? len < need : len != need)
        return 0;
    for (size_t i = 0; i < need; i++) {
        unsigned char a = (unsigned char)name[i], b = (unsigned char)pat[i];
        if (icase ? low(a) != low(b) : a != b)
            return 0;
    }
    return 1;
}

/* Query component decoding as Go's url.QueryUnescape; -1 on a broken escape. */
static long unescape(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            char hex[3] = {0};
            if (i + 2 >= n)
                return -1;
            hex[0] = s[i + 1];
            hex[1] = s[i + 2];
            if (!strchr("0123456789abcdefABCDEF", hex[0]) || !hex[0] ||
                !strchr("0123456789abcdefABCDEF", hex[1]) || !hex[1])
                return -1;
            out[o++] = (char)strtol(hex, NULL, 16);
            i += 2;
        } else {
            out[o++] = s[i] == '+' ? ' ' : s[i];
        }
    }
    return (long)o;
}

static int ref_query_has(const char *q, size_t n, const char *key, const char *value)
{
    char *k = malloc(n + 1), *v = malloc(n + 1);
    if (!k || !v)
        abort();
    int found = 0;
    size_t start = 0;
    while (start <= n && !found) {
        size_t e = start;
        while (e < n && q[e] != '&')
            e++;
        size_t a = start;
        start = e + 1;
        if (a == e || memchr(q + a, ';', e - a))
            continue;
        size_t eq = a;
        while (eq < e && q[eq] != '=')
            eq++;
        long kl = unescape(q + a, eq - a, k);
        long vl = unescape(q + (eq < e ? eq + 1 : e), eq < e ? e - eq - 1 : 0, v);
        if (kl < 0 || vl < 0)
            continue;
        if ((size_t)kl != strlen(key) || memcmp(k, key, (size_t)kl))
            continue;
        if (!value) {
            found = 1;
        } else if ((size_t)vl == strlen(value)) {
            found = 1;
            for (long i = 0; i < vl; i++)
                found &= low((unsigned char)v[i]) == low((unsigned char)value[i]);
        }
    }
    free(k);
    free(v);
    return found;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* exact-size copies: a read past the end is an ASan report */
    char *s = malloc(size ? size : 1);
    if (!s)
        abort();
    memcpy(s, data, size);
    check_cookies(s, size);

    const char *nul = memchr(s, '\0', size);
    const char *pat = nul ? s : "X-Authentik-*"; /* NUL-terminated */
    const char *subj = nul ? nul + 1 : s;
    size_t sl = nul ? size - (size_t)(subj - s) : size;

    must(http_name_match(subj, sl, pat) == ref_match(subj, sl, pat, 1));
    must(http_cookie_match(subj, sl, pat) == ref_match(subj, sl, pat, 0));
    int eq = strlen(pat) == sl;
    for (size_t i = 0; eq && i < sl; i++)
        eq = low((unsigned char)subj[i]) == low((unsigned char)pat[i]);
    must(http_name_eq(subj, sl, pat) == eq);
    int hop = http_is_hop_by_hop(subj, sl);
    static const char *hops[] = {"connection",
                                 "keep-alive",
                                 "proxy-authenticate",
                                 "proxy-authorization",
                                 "proxy-connection",
                                 "te",
                                 "trailer",
                                 "transfer-encoding",
                                 "upgrade"};
    int want_hop = 0;
    for (size_t i = 0; i < sizeof hops / sizeof hops[0]; i++)
        want_hop |= strlen(hops[i]) == sl && ref_match(subj, sl, hops[i], 1);
    must(hop == want_hop);

    /* Connection lists: is pat one of the comma-separated, OWS-trimmed, non-empty elements? */
    size_t pl = strlen(pat);
    int listed = 0;
    for (size_t a = 0; a <= sl;) {
        size_t e = a;
        while (e < sl && subj[e] != ',')
            e++;
        size_t x = a, y = e;
        while (x < y && ows(subj[x]))
            x++;
        while (y > x && ows(subj[y - 1]))
            y--;
        if (y > x && y - x == pl) {
            size_t i = 0;
            while (i < pl && low((unsigned char)subj[x + i]) == low((unsigned char)pat[i]))
                i++;
            listed |= i == pl;
        }
        a = e + 1;
    }
    must(http_connection_lists(subj, sl, pat, pl) == listed);

    struct http_span path, query;
    int hasq = http_target_split(subj, sl, &path, &query);
    must(path.p == subj && inside(subj, sl, path.p, path.len));
    must(!memchr(path.p, '?', path.len) && !memchr(path.p, '#', path.len));
    if (hasq) {
        must(inside(subj, sl, query.p, query.len) && query.p == path.p + path.len + 1);
        must(!memchr(query.p, '#', query.len));
        must(query.p + query.len == subj + sl || query.p[query.len] == '#');
    } else {
        must(!query.p && !query.len);
        must(path.len == sl || subj[path.len] == '#');
    }
    const char *q = hasq ? query.p : subj;
    size_t ql = hasq ? query.len : sl;
    must(http_query_has(q, ql, pat, NULL) == ref_query_has(q, ql, pat, NULL));
    must(http_query_has(q, ql, pat, "true") == ref_query_has(q, ql, pat, "true"));
    must(http_query_has(q, ql, "X-authentik-auth-callback", "true") ==
         ref_query_has(q, ql, "X-authentik-auth-callback", "true"));
    free(s);
    return 0;
}
