/*
 * fuzz_http_request.c — http_parse_request on arbitrary bytes.
 *
 * Four checks per input, any failure aborts:
 *  1. the input parsed under two limit settings: the answer is a code or a length within the input
 *     and max_bytes, and a success re-reads exactly as the grammar in http.h (every byte of the
 *     head accounted for by the spans, CRLF everywhere, framing fields matching what came back);
 *  2. every prefix (each from an exactly-sized copy, so ASan sees any read past it) gives
 *     HTTP_PARTIAL until the full input's answer is decided, and that same answer after;
 *  3. the input used as a recipe for a valid request, which must parse back to what was built;
 *  4. the input parsed in two pieces, the second call given the first's length as last_len: each
 *     answer is HTTP_PARTIAL or the one-shot answer for the same bytes, and with an empty line
 *     appended (so that the head surely ends) the last answer is the one-shot answer exactly.
 */
#include "http.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fuzz_check.h"
#include "../unit/http_same.h"

#define CAP 24

static int tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int field_byte(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static int ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* A success must be exactly: CRLF* method SP target SP HTTP/1.d CRLF (name ":" OWS value OWS CRLF)*
 * CRLF, with the spans where the walk finds them, and framing as the fields say. */
static void check_success(const char *buf, size_t len, size_t maxb, const struct http_req *r,
                          int rc)
{
    const unsigned char *b = (const unsigned char *)buf;
    size_t n = (size_t)rc, p = 0;
    must(n <= len && n <= maxb && n <= INT_MAX);
    while (p < n && b[p] == '\r') {
        must(p + 1 < n && b[p + 1] == '\n');
        p += 2;
    }
    must(r->method == buf + p && r->method_len > 0 && p + r->method_len < n);
    for (size_t i = 0; i < r->method_len; i++)
        must(tchar(b[p + i]));
    p += r->method_len;
    must(b[p++] == ' ');
    must(r->target == buf + p && r->target_len > 0 && p + r->target_len < n);
    if (r->target[0] == '*')
        must(r->target_len == 1 && r->method_len == 7 && !memcmp(r->method, "OPTIONS", 7));
    else
        must(r->target[0] == '/');
    for (size_t i = 0; i < r->target_len; i++)
        must(b[p + i] > 0x20 && b[p + i] < 0x7f);
    p += r->target_len;
    must(p + 10 <= n && !memcmp(buf + p, " HTTP/1.", 8));
    must(r->minor_version == 0 || r->minor_version == 1);
    must(b[p + 8] == '0' + r->minor_version);
    p += 9;
    must(b[p] == '\r' && b[p + 1] == '\n');
    p += 2;

    must(r->nhdrs <= r->hdrs_cap);
    int64_t cl = -1;
    int te = 0, close = 0, ka = 0;
    for (size_t h = 0; h < r->nhdrs; h++) {
        const struct http_hdr *f = &r->hdrs[h];
        must(f->name == buf + p && f->name_len > 0);
        for (size_t i = 0; i < f->name_len; i++)
            must(p + i < n && tchar(b[p + i]));
        p += f->name_len;
        must(p < n && b[p++] == ':');
        while (p < n && b + p < (const unsigned char *)f->value) {
            must(ows(b[p]));
            p++;
        }
        must(f->value == buf + p && p + f->value_len <= n);
        if (f->value_len)
            must(!ows(b[p]) && !ows(b[p + f->value_len - 1]));
        for (size_t i = 0; i < f->value_len; i++)
            must(field_byte(b[p + i]));
        p += f->value_len;
        while (p < n && ows(b[p]))
            p++;
        must(p + 1 < n && b[p] == '\r' && b[p + 1] == '\n');
        p += 2;

        if (http_name_eq(f->name, f->name_len, "content-length")) {
            int64_t v = 0;
            must(f->value_len > 0);
            for (size_t i = 0; i < f->value_len; i++) {
                must(f->value[i] >= '0' && f->value[i] <= '9');
                v = v * 10 + (f->value[i] - '0');
                must(v <= HTTP_MAX_BODY);
            }
            must(cl < 0 || cl == v);
            cl = v;
        } else if (http_name_eq(f->name, f->name_len, "transfer-encoding")) {
            must(!te && http_name_eq(f->value, f->value_len, "chunked"));
            te = 1;
        } else if (http_name_eq(f->name, f->name_len, "connection")) {
            close |= http_connection_lists(f->value, f->value_len, "close", 5);
            ka |= http_connection_lists(f->value, f->value_len, "keep-alive", 10);
        }
    }
    must(p + 2 == n && b[p] == '\r' && b[p + 1] == '\n');
    must(r->content_length == cl && r->chunked == te);
    if (te)
        must(cl < 0 && r->minor_version == 1);
    must(r->keep_alive == (!close && (r->minor_version == 1 || ka)));
}

/* Parse buf[0, len), resuming at last_len (0: in one shot), and check what came back. */
static int parse_from(const char *buf, size_t len, size_t last_len, size_t maxb, size_t cap,
                      struct http_req *r, struct http_hdr *hdrs)
{
    r->hdrs = hdrs;
    r->hdrs_cap = cap;
    int rc = http_parse_request(buf, len, last_len, maxb, r);
    must(rc > 0 || rc == HTTP_BAD || rc == HTTP_PARTIAL || rc == HTTP_TOO_LARGE);
    if (rc == HTTP_PARTIAL)
        must(len < maxb);
    if (rc > 0)
        check_success(buf, len, maxb, r, rc);
    return rc;
}

static int parse(const char *buf, size_t len, size_t maxb, size_t cap, struct http_req *r,
                 struct http_hdr *hdrs)
{
    return parse_from(buf, len, 0, maxb, cap, r, hdrs);
}

static void check_prefixes(const uint8_t *data, size_t size, size_t maxb, size_t cap)
{
    struct http_hdr hdrs[CAP], hdrs2[CAP];
    struct http_req full, part;
    int rc = parse((const char *)data, size, maxb, cap, &full, hdrs);
    /* a second parse of the same bytes gives the same */
    must(parse((const char *)data, size, maxb, cap, &part, hdrs2) == rc);

    char *room = malloc(size ? size : 1);
    if (!room)
        abort();
    size_t step = size <= 1024 ? 1 : size / 512;
    for (size_t k = 0; k < size; k += step) {
        char *copy = room + size - k; /* the prefix ends where the allocation ends */
        memcpy(copy, data, k);
        int rk = parse(copy, k, maxb, cap, &part, hdrs2);
        if (rc > 0 && k < (size_t)rc) {
            must(rk == HTTP_PARTIAL);
        } else if (rk != HTTP_PARTIAL) {
            must(rk == rc);
            if (rc > 0) {
                must(part.method - copy == full.method - (const char *)data);
                must(part.target_len == full.target_len && part.nhdrs == full.nhdrs);
                must(part.content_length == full.content_length &&
                     part.keep_alive == full.keep_alive);
            }
        } else {
            must(rc <= 0 || k < (size_t)rc);
        }
    }
    free(room);
}

/* ---- 4: in two pieces ------------------------------------------------------------------------ */

/* buf[0, len) (an exact heap copy) split at k: the first piece from an exact copy of its own. */
static void check_split(const char *buf, size_t len, size_t k, size_t maxb, size_t cap, int ended)
{
    struct http_hdr hdrs[CAP], hdrs2[CAP];
    struct http_req one, two;
    int ro = parse(buf, len, maxb, cap, &one, hdrs);

    char *first = malloc(k ? k : 1);
    if (!first)
        abort();
    memcpy(first, buf, k);
    int r1 = parse(first, k, maxb, cap, &two, hdrs2);
    free(first);
    if (r1 != HTTP_PARTIAL)
        return; /* a one-shot answer (case 2 checks it against the whole input's) */
    int r2 = parse_from(buf, len, k, maxb, cap, &two, hdrs2);
    must(r2 == HTTP_PARTIAL || same_req(r2, &two, ro, &one));
    if (ended && ro != HTTP_PARTIAL)
        must(same_req(r2, &two, ro, &one));
}

static void check_pieces(const uint8_t *data, size_t size, size_t maxb, size_t cap)
{
    if (size == 0)
        return;
    size_t k = ((size_t)data[0] * 131 + (size_t)data[size - 1] * 7 + size) % (size + 1);
    char *buf = malloc(size + 4);
    if (!buf)
        abort();
    memcpy(buf, data, size);
    check_split(buf, size, k, maxb, cap, 0);
    memcpy(buf + size, "\r\n\r\n", 4);
    check_split(buf, size + 4, k, maxb, cap, 1);
    free(buf);
}

/* ---- 3: a valid request built from the input ------------------------------------------------- */

struct recipe {
    const uint8_t *p;
    size_t n;
};

static unsigned take(struct recipe *r, unsigned mod)
{
    if (!r->n)
        return 0;
    r->n--;
    return *r->p++ % mod;
}

static void check_built(const uint8_t *data, size_t size)
{
    static const char tok[] =
        "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    static char buf[8192];
    struct recipe rc = {data, size};
    size_t n = 0;
    struct {
        size_t name, name_len, value, value_len;
    } want[CAP];

    size_t empty = take(&rc, 3);
    for (size_t i = 0; i < empty; i++)
        n += (size_t)(memcpy(buf + n, "\r\n", 2), 2);
    size_t method = n, mlen = 1 + take(&rc, 8);
    for (size_t i = 0; i < mlen; i++)
        buf[n++] = tok[take(&rc, sizeof tok - 1)];
    buf[n++] = ' ';
    size_t target = n, tlen = 1 + take(&rc, 40);
    buf[n++] = '/';
    for (size_t i = 1; i < tlen; i++)
        buf[n++] = (char)(0x21 + take(&rc, 0x7f - 0x21));
    int minor = (int)take(&rc, 2);
    memcpy(buf + n, minor ? " HTTP/1.1\r\n" : " HTTP/1.0\r\n", 11);
    n += 11;
    size_t nh = take(&rc, CAP + 1);
    for (size_t h = 0; h < nh; h++) {
        want[h].name = n;
        buf[n++] = 'X'; /* never a framing field */
        size_t nl = take(&rc, 12);
        for (size_t i = 0; i < nl; i++)
            buf[n++] = tok[take(&rc, sizeof tok - 1)];
        want[h].name_len = n - want[h].name;
        buf[n++] = ':';
        for (unsigned i = take(&rc, 3); i; i--)
            buf[n++] = take(&rc, 2) ? ' ' : '\t';
        want[h].value = n;
        size_t vl = take(&rc, 64);
        for (size_t i = 0; i < vl; i++) {
            unsigned c = take(&rc, 256);
            if (c < 0x20 || c == 0x7f)
                c = c == '\t' ? '\t' : ' ';
            if ((i == 0 || i == vl - 1) && (c == ' ' || c == '\t'))
                c = 'v'; /* OWS there would be trimmed */
            buf[n++] = (char)c;
        }
        want[h].value_len = n - want[h].value;
        for (unsigned i = take(&rc, 3); i; i--)
            buf[n++] = take(&rc, 2) ? ' ' : '\t';
        if (want[h].value_len == 0)
            want[h].value = n; /* all the OWS was leading */
        buf[n++] = '\r';
        buf[n++] = '\n';
    }
    buf[n++] = '\r';
    buf[n++] = '\n';

    char *copy = malloc(n);
    if (!copy)
        abort();
    memcpy(copy, buf, n);
    struct http_hdr hdrs[CAP];
    struct http_req r;
    int got = parse(copy, n, 8192, CAP, &r, hdrs);
    must(got == (int)n);
    must(r.method == copy + method && r.method_len == mlen);
    must(r.target == copy + target && r.target_len == tlen);
    must(r.minor_version == minor && r.nhdrs == nh && r.content_length == -1 && !r.chunked);
    must(r.keep_alive == minor);
    for (size_t h = 0; h < nh; h++) {
        must(hdrs[h].name == copy + want[h].name && hdrs[h].name_len == want[h].name_len);
        must(hdrs[h].value == copy + want[h].value && hdrs[h].value_len == want[h].value_len);
    }
    /* one field more than the room for them is 431, one byte less than the head is 431 */
    if (nh)
        must(parse(copy, n, 8192, nh - 1, &r, hdrs) == HTTP_TOO_LARGE);
    must(parse(copy, n, n - 1, CAP, &r, hdrs) == HTTP_TOO_LARGE);
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_prefixes(data, size, 4096, CAP);
    check_prefixes(data, size, 1 + size / 2 + (size & 7), 1 + size % 4);
    check_built(data, size);
    check_pieces(data, size, 4096, CAP);
    check_pieces(data, size, 1 + size / 2 + (size & 7), 1 + size % 4);
    return 0;
}
