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
 * itself: base64url into a stack buffer (json_b64url_decode), then the daemon's strict JSON reader
 * (json.c) checks the whole payload and finds the last top-level "exp" (and "sid", for
 * jwtexp_claims: a non-empty JSON string, its escapes decoded). The unit test checks it
 * against libjwt on tokens libjwt makes, and the fuzz target does the same on every input libjwt
 * accepts.
 *
 * Bounds: the token is at most JWTEXP_MAX_TOKEN bytes, so a decoded part fits in a 12 KiB buffer;
 * json.c bounds the nesting and reads nothing past the decoded length.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "json.h"
#include "jwtexp.h"

#define DECODED_MAX (JWTEXP_MAX_TOKEN / 4 * 3 + 3)

/*
 * Decode one part of a compact JWS, s[0, n), into out (room for n / 4 * 3 + 2 bytes). RFC 7515
 * section 2 encodes the parts as base64url with the trailing '=' removed, so a '=' is refused here
 * (json_b64url_decode would accept padding). Returns the decoded length, or -1.
 */
static long part_decode(const char *s, size_t n, unsigned char *out)
{
    if (memchr(s, '=', n))
        return -1;
    return json_b64url_decode(s, n, out);
}

/*
 * The JSON number num[0, n), inside buf with a byte to spare after it, as clamped whole seconds.
 * RFC 7519 section 2: a NumericDate may have a fraction; it is cut.
 */
static int64_t exp_seconds(unsigned char *buf, const char *num, size_t n)
{
    unsigned char *end = buf + (num - (const char *)buf) + n, saved = *end;
    double d;

    *end = '\0';
    d = strtod(num, NULL); /* JSON numbers are a subset of strtod's "C" locale syntax */
    *end = saved;
    if (!(d > 0))
        return 0;
    if (d >= (double)JWTEXP_MAX_S)
        return JWTEXP_MAX_S;
    return (int64_t)d; /* truncation is floor for d > 0 */
}

/* The claims of tok[0, len); want_sid: read the sid too. Returns c->exp_rc. */
static int read_token(const char *tok, size_t len, int want_sid, struct jwtexp_claims *c)
{
    static const char *const k_exp[] = {"exp"};
    static const char *const k_sid[] = {"sid"};
    unsigned char buf[DECODED_MAX + 1];
    const char *dot1, *dot2, *num;
    size_t num_len;
    long n;
    int rc;

    c->exp_rc = c->sid_rc = -EINVAL;
    c->sid_len = 0;
    c->sid[0] = '\0';
    if (!tok || len == 0 || len > JWTEXP_MAX_TOKEN)
        return -EINVAL;
    dot1 = memchr(tok, '.', len);
    if (!dot1)
        return -EINVAL;
    dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - tok));
    if (!dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - tok)))
        return -EINVAL; /* not three parts (a JWE has five) */

    /* The signature is not verified, but it must still look like one. */
    if (part_decode(dot2 + 1, len - (size_t)(dot2 + 1 - tok), buf) < 0)
        return -EINVAL;

    n = part_decode(tok, (size_t)(dot1 - tok), buf);
    if (n <= 0 || json_check_object((const char *)buf, (size_t)n) < 0)
        return -EINVAL;

    n = part_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), buf);
    if (n <= 0 || json_check_object((const char *)buf, (size_t)n) < 0)
        return -EINVAL; /* the payload is not a JSON object: not a JWT */

    if (want_sid) {
        rc = json_get_string((const char *)buf, (size_t)n, k_sid, 1, c->sid, sizeof(c->sid),
                             &c->sid_len);
        if (rc == 0 && c->sid_len > 0 && strlen(c->sid) == c->sid_len) {
            c->sid_rc = 0;
        } else {
            c->sid_rc = rc == -ENOENT ? -ENOENT : -EINVAL; /* -EPROTO, -EMSGSIZE, "", a NUL */
            c->sid_len = 0;
            c->sid[0] = '\0';
        }
    }
    rc = json_get_number((const char *)buf, (size_t)n, k_exp, 1, &num, &num_len);
    if (rc == -ENOENT)
        return c->exp_rc = -ENOENT;
    if (rc < 0)
        return c->exp_rc = -EINVAL; /* an exp that is not a number */
    c->exp_s = exp_seconds(buf, num, num_len);
    return c->exp_rc = 0;
}

/* value without surrounding blanks and a "Bearer " scheme: *len the token's length. */
static const char *header_token(const char *value, size_t *len)
{
    const char *p = value, *e = value + *len;

    while (p < e && (*p == ' ' || *p == '\t'))
        p++;
    while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    if (e - p > 7 && strncasecmp(p, "bearer", 6) == 0 && (p[6] == ' ' || p[6] == '\t')) {
        p += 7;
        while (p < e && (*p == ' ' || *p == '\t'))
            p++;
    }
    *len = (size_t)(e - p);
    return p;
}

int jwtexp_from_token(const char *tok, size_t len, int64_t *exp_s)
{
    struct jwtexp_claims c;
    int rc = read_token(tok, len, 0, &c);

    if (rc == 0)
        *exp_s = c.exp_s;
    return rc;
}

int jwtexp_from_header_value(const char *value, size_t len, int64_t *exp_s)
{
    if (!value)
        return -EINVAL;
    value = header_token(value, &len);
    return jwtexp_from_token(value, len, exp_s);
}

int jwtexp_claims(const char *tok, size_t len, struct jwtexp_claims *c)
{
    return read_token(tok, len, 1, c);
}

int jwtexp_claims_from_header_value(const char *value, size_t len, struct jwtexp_claims *c)
{
    if (!value)
        return read_token(NULL, 0, 1, c);
    value = header_token(value, &len);
    return read_token(value, len, 1, c);
}
