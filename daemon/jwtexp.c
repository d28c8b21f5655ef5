/*
 * jwtexp.c — read the exp claim of a compact JWS without verifying it.
 *
 * Why not libjwt: Debian 12's libjwt 1.10.2 does decode without verifying (jwt_decode(&j, tok,
 * NULL, 0) returns 0 for HS256 and RS256 tokens and checks no signature), but for this purpose it
 * refuses too much and reads too little:
 *  - its header check rejects any "typ" other than "JWT", so RFC 9068 access tokens ("at+jwt")
 * fail;
 *  - it knows only HS/RS/ES 256-512 and "none", so PS256 or EdDSA tokens fail;
 *  - jwt_get_grant_int() returns 0 with errno 0 for a fractional exp (1.5e9), which is legal JSON;
 *  - it needs a NUL-terminated copy and allocates (strdup, jansson) on every call.
 * A token we cannot read is a token whose exp we cannot honour, so this file decodes the payload
 * itself: base64url into a stack buffer, then a small strict JSON reader that walks the top-level
 * object and keeps the last "exp". The unit test checks it against libjwt on tokens libjwt makes,
 * and the fuzz target does the same on every input libjwt accepts.
 *
 * Bounds: the token is at most JWTEXP_MAX_TOKEN bytes, so a decoded part fits in a 12 KiB buffer;
 * JSON nesting is limited to JSON_MAX_DEPTH, so the recursion is bounded; nothing reads past len.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "jwtexp.h"
#include "pct.h"

#define JSON_MAX_DEPTH 32
#define DECODED_MAX (JWTEXP_MAX_TOKEN / 4 * 3 + 3)

/* base64url alphabet value, or -1. */
static int b64url_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Decode unpadded base64url s[0, n) into out (room for n / 4 * 3 + 2 bytes). Returns the decoded
 * length, or -1 for a byte outside the alphabet or a length that no encoding has (n % 4 == 1). */
static long b64url_decode(const char *s, size_t n, unsigned char *out)
{
    uint32_t acc = 0;
    int bits = 0;
    long o = 0;

    if (n % 4 == 1)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_val((unsigned char)s[i]);

        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    return o;
}

/* A strict JSON reader over [p, end) (RFC 8259, without UTF-8 validation of strings). */
struct json {
    unsigned char *p, *end;
};

static void json_ws(struct json *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

/* A string starting at j->p (the opening quote). Returns 1 if its decoded value is exactly "exp"
 * (escapes count: "\u0065xp" is "exp"), 0 if it is another string, -1 if malformed. */
static int json_string(struct json *j)
{
    char key[4];
    size_t klen = 0; /* decoded length, counted past sizeof(key) only as "too long" */

    if (j->p >= j->end || *j->p != '"')
        return -1;
    j->p++;
    while (j->p < j->end) {
        unsigned char c = *j->p++;
        int ch; /* decoded character if ASCII, else -1 */

        if (c == '"')
            return klen == 3 && memcmp(key, "exp", 3) == 0;
        if (c < 0x20)
            return -1;
        if (c != '\\')
            ch = c < 0x80 ? c : -1;
        else {
            if (j->p >= j->end)
                return -1;
            c = *j->p++;
            switch (c) {
            case '"':
            case '\\':
            case '/':
                ch = c;
                break;
            case 'b':
            case 'f':
            case 'n':
            case 'r':
            case 't':
                ch = 1; /* a control character: not part of "exp" */
                break;
            case 'u': {
                int cp = 0;

                if (j->end - j->p < 4)
                    return -1;
                for (int i = 0; i < 4; i++) {
                    int h = pct_hexval((char)j->p[i]);

                    if (h < 0)
                        return -1;
                    cp = cp << 4 | h;
                }
                j->p += 4;
                ch = cp < 0x80 ? cp : -1;
                break;
            }
            default:
                return -1;
            }
        }
        if (klen < sizeof(key))
            key[klen] = (char)(ch < 0 ? 0 : ch);
        if (klen <= sizeof(key))
            klen++;
    }
    return -1;
}

/* A number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? Returns 0, or -1 if malformed. */
static int json_number(struct json *j)
{
    unsigned char *p = j->p, *e = j->end;

    if (p < e && *p == '-')
        p++;
    if (p >= e)
        return -1;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    else
        return -1;
    if (p < e && *p == '.') {
        p++;
        if (p >= e || *p < '0' || *p > '9')
            return -1;
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < e && (*p == '+' || *p == '-'))
            p++;
        if (p >= e || *p < '0' || *p > '9')
            return -1;
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    }
    j->p = p;
    return 0;
}

static int json_literal(struct json *j, const char *lit)
{
    size_t n = strlen(lit);

    if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
        return -1;
    j->p += n;
    return 0;
}

static int json_value(struct json *j, int depth);

/* An object or array starting at j->p. For the top-level object (exp != NULL) each member named
 * "exp" is recorded: exp->p at its value if that is a number, else exp->p = NULL and exp->bad = 1.
 */
struct exp_seen {
    unsigned char *num; /* start of the last exp's number, or NULL */
    int found, bad;
};

static int json_container(struct json *j, int depth, struct exp_seen *exp)
{
    unsigned char open = *j->p;
    unsigned char close = open == '{' ? '}' : ']';

    if (depth >= JSON_MAX_DEPTH)
        return -1;
    j->p++;
    json_ws(j);
    if (j->p < j->end && *j->p == close) {
        j->p++;
        return 0;
    }
    for (;;) {
        int is_exp = 0;

        if (open == '{') {
            is_exp = json_string(j);
            if (is_exp < 0)
                return -1;
            json_ws(j);
            if (j->p >= j->end || *j->p != ':')
                return -1;
            j->p++;
            json_ws(j);
        }
        if (exp && is_exp) {
            exp->found = 1;
            if (j->p < j->end && (*j->p == '-' || (*j->p >= '0' && *j->p <= '9'))) {
                exp->num = j->p;
                exp->bad = 0;
            } else {
                exp->num = NULL;
                exp->bad = 1;
            }
        }
        if (json_value(j, depth + 1) < 0)
            return -1;
        json_ws(j);
        if (j->p >= j->end)
            return -1;
        if (*j->p == close) {
            j->p++;
            return 0;
        }
        if (*j->p != ',')
            return -1;
        j->p++;
        json_ws(j);
    }
}

static int json_value(struct json *j, int depth)
{
    if (j->p >= j->end)
        return -1;
    switch (*j->p) {
    case '{':
    case '[':
        return json_container(j, depth, NULL);
    case '"':
        return json_string(j) < 0 ? -1 : 0;
    case 't':
        return json_literal(j, "true");
    case 'f':
        return json_literal(j, "false");
    case 'n':
        return json_literal(j, "null");
    default:
        return json_number(j);
    }
}

/* buf[0, n) (with one spare byte after it) is a whole JSON document that must be an object. */
static int json_top_object(unsigned char *buf, size_t n, struct exp_seen *exp)
{
    struct json j = {buf, buf + n};

    json_ws(&j);
    if (j.p >= j.end || *j.p != '{')
        return -1;
    if (json_container(&j, 0, exp) < 0)
        return -1;
    json_ws(&j);
    return j.p == j.end ? 0 : -1;
}

/* The number at num, which json_number accepted and which ends before end, as clamped seconds. */
static int64_t exp_seconds(unsigned char *num, unsigned char *end)
{
    struct json j = {num, end};
    unsigned char saved;
    double d;

    json_number(&j);
    saved = *j.p; /* j.p < end + 1: the buffer has a spare byte */
    *j.p = '\0';
    d = strtod((char *)num, NULL); /* JSON numbers are a subset of strtod's "C" locale syntax */
    *j.p = saved;
    if (!(d > 0))
        return 0;
    if (d >= (double)JWTEXP_MAX_S)
        return JWTEXP_MAX_S;
    return (int64_t)d; /* truncation is floor for d > 0 */
}

int jwtexp_from_token(const char *tok, size_t len, int64_t *exp_s)
{
    unsigned char buf[DECODED_MAX + 1];
    const char *dot1, *dot2;
    struct exp_seen exp = {NULL, 0, 0};
    long n;

    if (!tok || len == 0 || len > JWTEXP_MAX_TOKEN)
        return -EINVAL;
    dot1 = memchr(tok, '.', len);
    if (!dot1)
        return -EINVAL;
    dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - tok));
    if (!dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - tok)))
        return -EINVAL; /* not three parts (a JWE has five) */

    /* The signature is not verified, but it must still look like one. */
    for (const char *s = dot2 + 1; s < tok + len; s++)
        if (b64url_val((unsigned char)*s) < 0)
            return -EINVAL;
    if ((len - (size_t)(dot2 + 1 - tok)) % 4 == 1)
        return -EINVAL;

    n = b64url_decode(tok, (size_t)(dot1 - tok), buf);
    if (n <= 0 || json_top_object(buf, (size_t)n, NULL) < 0)
        return -EINVAL;

    n = b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), buf);
    if (n <= 0 || json_top_object(buf, (size_t)n, &exp) < 0)
        return -EINVAL;
    if (!exp.found)
        return -ENOENT;
    if (exp.bad)
        return -EINVAL;
    *exp_s = exp_seconds(exp.num, buf + n);
    return 0;
}

int jwtexp_from_header_value(const char *value, size_t len, int64_t *exp_s)
{
    const char *p = value, *e = value ? value + len : NULL;

    if (!value)
        return -EINVAL;
    while (p < e && (*p == ' ' || *p == '\t'))
        p++;
    while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    if (e - p > 7 && strncasecmp(p, "bearer", 6) == 0 && (p[6] == ' ' || p[6] == '\t')) {
        p += 7;
        while (p < e && (*p == ' ' || *p == '\t'))
            p++;
    }
    return jwtexp_from_token(p, (size_t)(e - p), exp_s);
}
