/*
 * fuzz_jwtexp.c — the JWT "exp" extraction (daemon/jwtexp.c) on arbitrary bytes. The IdP's
 * identity headers are network bytes, and the daemon reads the exp of every JWT among them.
 *
 * Four ways in, each checked for its return contract (0, -ENOENT or -EINVAL; *exp_s in range and
 * written only on 0), and jwtexp_claims beside each: the same exp, and a sid that is -ENOENT,
 * -EINVAL or a non-empty string of at most JWTEXP_SID_MAX - 1 bytes without NUL:
 *  1. the input as a token, and as a header value (with and without "Bearer ");
 *  2. the input as the *payload* of a token built here (base64url-encoded, a fixed header, an empty
 *     signature), so the JSON parser sees arbitrary JSON-ish bytes rather than base64 noise;
 *  3. a payload {"exp":N, "x":"<input as a JSON string>"} with N from the input's first bytes: the
 *     answer must be exactly N (clamped), whatever the other member holds, and no sid;
 *  4. a payload {"sid":"<input as a JSON string>"}: the sid must be the input (bytes past 0x7f as
 *     their UTF-8), or -EINVAL when that is empty, holds a NUL or is too long.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jwtexp.h"
#include "fuzz_check.h"

static const int64_t SENTINEL = INT64_C(-777);

static void contract(int rc, int64_t exp)
{
    must(rc == 0 || rc == -ENOENT || rc == -EINVAL);
    if (rc == 0)
        must(exp >= 0 && exp <= JWTEXP_MAX_S);
    else
        must(exp == SENTINEL);
}

/* jwtexp_claims agrees with jwtexp_from_token (rc, exp) on tok[0, n), and its sid keeps the
 * contract. Returns sid_rc. */
static int claims(const char *tok, size_t n, int rc, int64_t exp)
{
    struct jwtexp_claims c;
    int crc = jwtexp_claims(tok, n, &c);

    must(crc == rc && c.exp_rc == rc);
    must(rc != 0 || c.exp_s == exp);
    must(c.sid_rc == 0 || c.sid_rc == -ENOENT || c.sid_rc == -EINVAL);
    if (c.sid_rc == 0)
        must(c.sid_len > 0 && c.sid_len < JWTEXP_SID_MAX && strlen(c.sid) == c.sid_len);
    else
        must(c.sid_len == 0 && c.sid[0] == '\0');
    return c.sid_rc;
}

static size_t b64url(const uint8_t *in, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0, i = 0;

    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = tab[v >> 18], out[o++] = tab[(v >> 12) & 63];
        out[o++] = tab[(v >> 6) & 63], out[o++] = tab[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = tab[v >> 18], out[o++] = tab[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = tab[v >> 18], out[o++] = tab[(v >> 12) & 63], out[o++] = tab[(v >> 6) & 63];
    }
    return o;
}

/* "eyJhbGciOiJub25lIn0" = {"alg":"none"}; then '.', the payload, '.', no signature. */
static size_t token_with_payload(const uint8_t *payload, size_t n, char *out)
{
    static const char hdr[] = "eyJhbGciOiJub25lIn0.";
    size_t o = sizeof(hdr) - 1;

    memcpy(out, hdr, o);
    o += b64url(payload, n, out + o);
    out[o++] = '.';
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char tok[4 * JWTEXP_MAX_TOKEN], val[4 * JWTEXP_MAX_TOKEN];
    static uint8_t payload[2 * JWTEXP_MAX_TOKEN];
    int64_t exp = SENTINEL;
    int rc;

    if (size > JWTEXP_MAX_TOKEN + 16)
        return 0;

    /* 1. as a token and as header values */
    rc = jwtexp_from_token((const char *)data, size, &exp);
    contract(rc, exp);
    claims((const char *)data, size, rc, exp);
    exp = SENTINEL;
    rc = jwtexp_from_header_value((const char *)data, size, &exp);
    contract(rc, exp);
    memcpy(val, "Bearer ", 7);
    memcpy(val + 7, data, size);
    exp = SENTINEL;
    rc = jwtexp_from_header_value(val, size + 7, &exp);
    contract(rc, exp);

    /* 2. as the payload of a token */
    size_t n = token_with_payload(data, size, tok);
    exp = SENTINEL;
    rc = jwtexp_from_token(tok, n, &exp);
    contract(rc, exp);
    claims(tok, n, rc, exp);

    /* 3. {"exp":N,"x":"<input, escaped>"}: must give N */
    if (size >= 8) {
        int64_t want;
        size_t p;
        memcpy(&want, data, sizeof(want));
        want = want < 0 ? -(want / 2) : want; /* non-negative, without overflow */
        want %= INT64_C(1) << 40;
        p = (size_t)snprintf((char *)payload, 64, "{\"exp\":%lld,\"x\":\"", (long long)want);
        for (size_t i = 8; i < size; i++) {
            uint8_t c = data[i];
            if (c == '"' || c == '\\') {
                payload[p++] = '\\';
                payload[p++] = c;
            } else if (c < 0x20 || c >= 0x7f) {
                p += (size_t)snprintf((char *)payload + p, 8, "\\u%04x", c);
            } else {
                payload[p++] = c;
            }
        }
        payload[p++] = '"';
        payload[p++] = '}';
        n = token_with_payload(payload, p, tok);
        exp = SENTINEL;
        rc = jwtexp_from_token(tok, n, &exp);
        if (n <= JWTEXP_MAX_TOKEN) {
            must(rc == 0);
            must(exp == (want > JWTEXP_MAX_S ? JWTEXP_MAX_S : want));
            must(claims(tok, n, rc, exp) == -ENOENT);
        } else {
            must(rc == -EINVAL && exp == SENTINEL);
        }
    }

    /* 4. {"sid":"<input, escaped>"}: must give the input */
    if (size < 2 * JWTEXP_SID_MAX) {
        static char want[4 * JWTEXP_SID_MAX];
        struct jwtexp_claims c;
        size_t p = 8, w = 0;
        int has_nul = 0;

        memcpy(payload, "{\"sid\":\"", 8);
        for (size_t i = 0; i < size; i++) {
            uint8_t ch = data[i];
            if (ch == '"' || ch == '\\') {
                payload[p++] = '\\';
                payload[p++] = ch;
            } else if (ch < 0x20 || ch >= 0x7f) {
                p += (size_t)snprintf((char *)payload + p, 8, "\\u%04x", ch);
            } else {
                payload[p++] = ch;
            }
            if (ch >= 0x80) { /* \u0080-\u00ff decode to two bytes of UTF-8 */
                want[w++] = (char)(0xc0 | ch >> 6);
                want[w++] = (char)(0x80 | (ch & 0x3f));
            } else {
                has_nul |= ch == 0;
                want[w++] = (char)ch;
            }
        }
        payload[p++] = '"';
        payload[p++] = '}';
        n = token_with_payload(payload, p, tok);
        must(jwtexp_claims(tok, n, &c) == -ENOENT);
        if (w == 0 || has_nul || w >= JWTEXP_SID_MAX)
            must(c.sid_rc == -EINVAL);
        else
            must(c.sid_rc == 0 && c.sid_len == w && memcmp(c.sid, want, w) == 0);
    }
    return 0;
}
