/*
 * fuzz_http_response.c — http_parse_response and http_chunked_decode on arbitrary bytes.
 *
 *  1. The input as a response head: a code or a length within bounds, spans inside the head, status
 *     100..999, the same answer from every prefix once decided, a body mode that fits the fields.
 *  2. The body (what follows a parsed head, else the whole input) through the chunked decoder three
 *     ways — all at once, a byte per call, and in pseudo-random pieces — which must agree on the
 *     result, on the decoded bytes and on where the body ended, and must agree with a plain
 *     whole-buffer reference decoder written from RFC 9112 7.1 and the limits in http.h.
 */
#include "http.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fuzz_check.h"

#define CAP 16

static int tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int field_byte(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/* ---- 1: the head ----------------------------------------------------------------------------- */

static int parse(const char *buf, size_t len, size_t maxb, struct http_resp *r,
                 struct http_hdr *hdrs)
{
    r->hdrs = hdrs;
    r->hdrs_cap = CAP;
    int rc = http_parse_response(buf, len, maxb, r);
    must(rc > 0 || rc == HTTP_BAD || rc == HTTP_PARTIAL || rc == HTTP_TOO_LARGE);
    if (rc == HTTP_PARTIAL)
        must(len < maxb);
    if (rc <= 0)
        return rc;
    size_t n = (size_t)rc;
    must(n <= len && n <= maxb && n >= 16); /* "HTTP/1.1 200\r\n\r\n" */
    must(!memcmp(buf, "HTTP/1.", 7) && buf[7] == '0' + r->minor_version);
    must(r->status >= 100 && r->status <= 999);
    must(inside(buf, n, r->reason, r->reason_len));
    for (size_t i = 0; i < r->reason_len; i++)
        must(field_byte((unsigned char)r->reason[i]));
    must(r->nhdrs <= CAP);
    for (size_t h = 0; h < r->nhdrs; h++) {
        const struct http_hdr *f = &hdrs[h];
        must(f->name_len > 0 && inside(buf, n, f->name, f->name_len));
        must(inside(buf, n, f->value, f->value_len));
        for (size_t i = 0; i < f->name_len; i++)
            must(tchar((unsigned char)f->name[i]));
        for (size_t i = 0; i < f->value_len; i++)
            must(field_byte((unsigned char)f->value[i]));
    }
    must(!memcmp(buf + n - 4, "\r\n\r\n", 4) || (r->nhdrs == 0 && !memcmp(buf + n - 2, "\r\n", 2)));
    must(r->content_length >= -1 && r->content_length <= HTTP_MAX_BODY);
    must(!(r->chunked && r->content_length >= 0));
    int mode = http_resp_body_mode(r, 0);
    if (r->status < 200 || r->status == 204 || r->status == 304)
        must(mode == HTTP_BODY_NONE);
    else
        must(mode == (r->chunked               ? HTTP_BODY_CHUNKED
                      : r->content_length >= 0 ? HTTP_BODY_LENGTH
                                               : HTTP_BODY_CLOSE));
    must(http_resp_body_mode(r, 1) == HTTP_BODY_NONE);
    return rc;
}

static int check_head(const uint8_t *data, size_t size)
{
    struct http_hdr hdrs[CAP], hdrs2[CAP];
    struct http_resp full, part;
    size_t maxb = size > 64 && (data[0] & 1) ? size / 2 : 4096;
    int rc = parse((const char *)data, size, maxb, &full, hdrs);
    char *room = malloc(size ? size : 1);
    if (!room)
        abort();
    size_t step = size <= 1024 ? 1 : size / 512;
    for (size_t k = 0; k < size; k += step) {
        char *copy = room + size - k;
        memcpy(copy, data, k);
        int rk = parse(copy, k, maxb, &part, hdrs2);
        if (rc > 0 && k < (size_t)rc)
            must(rk == HTTP_PARTIAL);
        else if (rk != HTTP_PARTIAL)
            must(rk == rc && (rc <= 0 || (part.status == full.status && part.nhdrs == full.nhdrs)));
        else
            must(rc <= 0 || k < (size_t)rc);
    }
    free(room);
    return rc;
}

/* ---- 2: chunked bodies ----------------------------------------------------------------------- */

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The reference: the whole body at once, a straight reading of the grammar. Returns HTTP_BAD,
 * HTTP_PARTIAL, or 0 with *end where the body ended; out gets the data seen before. */
static int ref_decode(const uint8_t *p, size_t n, uint8_t *out, size_t *outlen, size_t *end)
{
    size_t i = 0, o = 0, line, t = 0;
    int rc;
#define NEED                                                                                       \
    do {                                                                                           \
        if (i >= n) {                                                                              \
            rc = HTTP_PARTIAL;                                                                     \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)
#define BAD                                                                                        \
    do {                                                                                           \
        rc = HTTP_BAD;                                                                             \
        goto out;                                                                                  \
    } while (0)
#define LINE_BYTE                                                                                  \
    do {                                                                                           \
        if (++line > HTTP_CHUNK_LINE_MAX)                                                          \
            BAD;                                                                                   \
    } while (0)
#define TRAILER_BYTE                                                                               \
    do {                                                                                           \
        if (++t > HTTP_CHUNK_TRAILER_MAX)                                                          \
            BAD;                                                                                   \
    } while (0)

    for (;;) {
        uint64_t size = 0;
        line = 0;
        NEED;
        if (hexval(p[i]) < 0)
            BAD;
        while (i < n && hexval(p[i]) >= 0) {
            size = size * 16 + (uint64_t)hexval(p[i]);
            if (size > (uint64_t)HTTP_MAX_BODY)
                BAD;
            LINE_BYTE;
            i++;
        }
        NEED;
        if (p[i] == ' ' || p[i] == '\t') {
            while (i < n && (p[i] == ' ' || p[i] == '\t')) {
                LINE_BYTE;
                i++;
            }
            NEED;
            if (p[i] != ';')
                BAD;
        }
        if (p[i] == ';') {
            while (i < n && p[i] != '\r') {
                if (!field_byte(p[i]))
                    BAD;
                LINE_BYTE;
                i++;
            }
            NEED;
        }
        if (p[i++] != '\r')
            BAD;
        NEED;
        if (p[i++] != '\n')
            BAD;
        if (size == 0)
            break;
        size_t have = n - i < size ? n - i : (size_t)size;
        memcpy(out + o, p + i, have);
        o += have;
        i += have;
        if (have < size)
            NEED;
        NEED;
        if (p[i++] != '\r')
            BAD;
        NEED;
        if (p[i++] != '\n')
            BAD;
    }
    for (;;) {
        NEED;
        if (p[i] == '\r') {
            TRAILER_BYTE;
            i++;
            NEED;
            if (p[i++] != '\n')
                BAD;
            TRAILER_BYTE;
            rc = 0;
            goto out;
        }
        if (!tchar(p[i]))
            BAD;
        while (i < n && tchar(p[i])) {
            TRAILER_BYTE;
            i++;
        }
        NEED;
        if (p[i++] != ':')
            BAD;
        TRAILER_BYTE;
        while (i < n && p[i] != '\r') {
            if (!field_byte(p[i]))
                BAD;
            TRAILER_BYTE;
            i++;
        }
        NEED;
        i++;
        TRAILER_BYTE;
        NEED;
        if (p[i++] != '\n')
            BAD;
        TRAILER_BYTE;
    }
out:
    *outlen = o;
    *end = i;
    return rc;
#undef NEED
#undef BAD
#undef LINE_BYTE
#undef TRAILER_BYTE
}

struct result {
    int rc;     /* HTTP_BAD, HTTP_PARTIAL, or 0: the body ended */
    size_t end; /* where it ended */
    size_t outlen;
};

/* Feed data in pieces; piece(i) gives the length of the next one. */
static struct result decode(const uint8_t *data, size_t n, uint8_t *out, uint64_t seed, int mode)
{
    struct http_chunked st;
    http_chunked_init(&st);
    struct result res = {HTTP_PARTIAL, 0, 0};
    size_t off = 0;
    while (off < n) {
        size_t piece = n - off;
        if (mode == 1) {
            piece = 1;
        } else if (mode == 2) {
            seed = seed * 6364136223846793005u + 1442695040888963407u;
            size_t want = (size_t)(seed >> 33) % 23;
            piece = want < piece ? want : piece;
        }
        uint8_t *buf = malloc(piece ? piece : 1);
        if (!buf)
            abort();
        memcpy(buf, data + off, piece);
        size_t len = piece;
        ssize_t r = http_chunked_decode(&st, (char *)buf, &len);
        must(len <= piece);
        must(r == HTTP_BAD || r == HTTP_PARTIAL || (r >= 0 && (size_t)r <= piece - len));
        memcpy(out + res.outlen, buf, len);
        res.outlen += len;
        if (r >= 0) {
            /* the bytes after the body are the input's last r bytes, untouched */
            must(!memcmp(buf + piece - (size_t)r, data + off + piece - (size_t)r, (size_t)r));
            res.rc = 0;
            res.end = off + piece - (size_t)r;
        } else {
            res.rc = (int)r;
        }
        free(buf);
        off += piece;
        if (r != HTTP_PARTIAL)
            break;
    }
    if (res.rc == 0) {
        /* once ended, all further input is left over */
        char extra[3] = "abc";
        size_t len = 3;
        must(http_chunked_decode(&st, extra, &len) == 3 && len == 0);
    }
    return res;
}

static void check_chunked(const uint8_t *body, size_t n, uint64_t seed)
{
    uint8_t *ref = malloc(n + 1), *out = malloc(n + 1);
    if (!ref || !out)
        abort();
    size_t reflen, refend;
    int refrc = ref_decode(body, n, ref, &reflen, &refend);
    for (int mode = 0; mode < 3; mode++) {
        struct result r = decode(body, n, out, seed, mode);
        must(r.rc == refrc);
        must(r.outlen == reflen && !memcmp(out, ref, reflen));
        if (refrc == 0)
            must(r.end == refend);
    }
    free(ref);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int rc = check_head(data, size);
    uint64_t seed = 0xcbf29ce484222325u;
    for (size_t i = 0; i < size; i++)
        seed = (seed ^ data[i]) * 0x100000001b3u;
    if (rc > 0)
        check_chunked(data + rc, size - (size_t)rc, seed);
    check_chunked(data, size, seed);
    return 0;
}
