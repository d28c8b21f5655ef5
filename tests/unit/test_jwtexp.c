/*
 * test_jwtexp.c — the exp of a JWT: real tokens made by libjwt (HS256, RS256, with and without exp,
 * checked against libjwt's own reading), hand-made payloads for the JSON corners (fractional,
 * negative and huge exp, duplicates, escapes, nesting, "typ":"at+jwt"), header values with and
 * without "Bearer ", and malformed input of every kind: garbage, every truncation, bad base64url,
 * oversized tokens. The sid claim beside it (strict: a non-empty string without NUL, bounded).
 * Malformed input must give -EINVAL (or -ENOENT), never a crash or a read past the given length
 * (run under ASan to see the latter).
 */
#include <errno.h>
#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdlib.h>

#include "check.h"
#include "jwtexp.h"

static const char hs_key[] = "0123456789abcdef0123456789abcdef";

/* base64url without padding of s[0, n) into out; returns out. */
static char *b64url(const void *s, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const unsigned char *p = s;
    size_t o = 0, i = 0;

    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];

        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = tab[(v >> 6) & 63];
        out[o++] = tab[v & 63];
    }
    if (n - i == 1) {
        out[o++] = tab[p[i] >> 2];
        out[o++] = tab[(p[i] & 3) << 4];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 8 | p[i + 1];

        out[o++] = tab[v >> 10];
        out[o++] = tab[(v >> 4) & 63];
        out[o++] = tab[(v & 15) << 2];
    }
    out[o] = '\0';
    return out;
}

/* "b64(header).b64(payload).sig" in a static buffer. */
static const char *make(const char *header, const char *payload, const char *sig)
{
    static char tok[70000];
    size_t o;

    b64url(header, strlen(header), tok);
    o = strlen(tok);
    tok[o++] = '.';
    b64url(payload, strlen(payload), tok + o);
    o = strlen(tok);
    tok[o++] = '.';
    strcpy(tok + o, sig);
    return tok;
}

#define HDR "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"

static int exp_of(const char *tok, int64_t *exp)
{
    return jwtexp_from_token(tok, strlen(tok), exp);
}

/* The payload JSON gives rc and (when 0) exp. */
#define CHECK_PAYLOAD(payload, want_rc, want_exp)                                                  \
    do {                                                                                           \
        int64_t e_ = -12345;                                                                       \
        int r_ = exp_of(make(HDR, payload, "c2ln"), &e_);                                          \
        CHECK(r_ == (want_rc) && (r_ != 0 || e_ == (want_exp)),                                    \
              "payload %s: expected rc %d exp %lld, got rc %d exp %lld", payload, (int)(want_rc),  \
              (long long)(want_exp), r_, (long long)e_);                                           \
    } while (0)

/* A token from libjwt with the given alg and key; exp < 0 means no exp claim. */
static char *libjwt_token(jwt_alg_t alg, const unsigned char *key, int key_len, long exp)
{
    jwt_t *j = NULL;
    char *tok;

    if (jwt_new(&j) != 0)
        return NULL;
    jwt_add_grant(j, "sub", "alice");
    jwt_add_grant(j, "iss", "https://idp.example/application/o/app/");
    jwt_add_grants_json(j, "{\"groups\":[\"admins\",{\"exp\":1}],\"ak_proxy\":{\"user_attributes\":"
                           "{\"exp\":2,\"additionalHeaders\":{\"X-A\":\"b\"}}}}");
    if (exp >= 0)
        jwt_add_grant_int(j, "exp", exp);
    jwt_add_grant_int(j, "iat", 1700000000);
    if (jwt_set_alg(j, alg, key, key_len) != 0) {
        jwt_free(j);
        return NULL;
    }
    tok = jwt_encode_str(j);
    jwt_free(j);
    return tok;
}

/* libjwt's reading of the same token: 0 and exp, or -1. */
static int libjwt_exp(const char *tok, long *exp)
{
    jwt_t *j = NULL;

    if (jwt_decode(&j, tok, NULL, 0) != 0)
        return -1;
    errno = 0;
    *exp = jwt_get_grant_int(j, "exp");
    jwt_free(j);
    return errno == ENOENT ? -ENOENT : 0;
}

static char *rsa_pem(int *len)
{
    EVP_PKEY *pk = EVP_RSA_gen(2048);
    BIO *bio = BIO_new(BIO_s_mem());
    char *data, *copy = NULL;
    long n;

    if (pk && bio && PEM_write_bio_PrivateKey(bio, pk, NULL, NULL, 0, NULL, NULL) == 1) {
        n = BIO_get_mem_data(bio, &data);
        copy = malloc((size_t)n + 1);
        memcpy(copy, data, (size_t)n);
        copy[n] = '\0';
        *len = (int)n;
    }
    BIO_free(bio);
    EVP_PKEY_free(pk);
    return copy;
}

static void test_libjwt_tokens(void)
{
    static const long exps[] = {1800000000, 0, 1, 2147483647, 253402300799};
    int pem_len = 0;
    char *pem = rsa_pem(&pem_len);

    CHECK(pem != NULL, "expected an RSA key");
    for (size_t i = 0; i < sizeof(exps) / sizeof(exps[0]); i++) {
        for (int rs = 0; rs < 2; rs++) {
            char *tok =
                rs ? libjwt_token(JWT_ALG_RS256, (unsigned char *)pem, pem_len, exps[i])
                   : libjwt_token(JWT_ALG_HS256, (const unsigned char *)hs_key, 32, exps[i]);
            int64_t got = -1;
            long lib = -1;

            CHECK(tok != NULL, "libjwt made no token");
            if (!tok)
                continue;
            CHECK_INT(jwtexp_from_token(tok, strlen(tok), &got), 0);
            CHECK_INT(got, exps[i]);
            CHECK_INT(libjwt_exp(tok, &lib), 0);
            CHECK_INT(got, lib);
            free(tok);
        }
    }
    /* Without exp (the nested "exp"s in groups and ak_proxy do not count). */
    for (int rs = 0; rs < 2; rs++) {
        char *tok = rs ? libjwt_token(JWT_ALG_RS256, (unsigned char *)pem, pem_len, -1)
                       : libjwt_token(JWT_ALG_HS256, (const unsigned char *)hs_key, 32, -1);
        int64_t got = 77;
        long lib;

        CHECK(tok != NULL, "libjwt made no token");
        if (!tok)
            continue;
        CHECK_INT(jwtexp_from_token(tok, strlen(tok), &got), -ENOENT);
        CHECK_INT(got, 77);
        CHECK_INT(libjwt_exp(tok, &lib), -ENOENT);
        free(tok);
    }
    free(pem);
}

static void test_payloads(void)
{
    CHECK_PAYLOAD("{\"exp\":1800000000}", 0, 1800000000);
    CHECK_PAYLOAD(" {\n\t\"sub\" : \"a\" ,\r\n \"exp\" : 1800000000 } ", 0, 1800000000);
    CHECK_PAYLOAD("{\"exp\":1.5e9}", 0, 1500000000);
    CHECK_PAYLOAD("{\"exp\":1800000000.999}", 0, 1800000000);
    CHECK_PAYLOAD("{\"exp\":1.8E+9}", 0, 1800000000);
    CHECK_PAYLOAD("{\"exp\":0}", 0, 0);
    CHECK_PAYLOAD("{\"exp\":-5}", 0, 0);
    CHECK_PAYLOAD("{\"exp\":-0.5}", 0, 0);
    CHECK_PAYLOAD("{\"exp\":0.5}", 0, 0);
    CHECK_PAYLOAD("{\"exp\":1e300}", 0, JWTEXP_MAX_S);
    CHECK_PAYLOAD("{\"exp\":1e999}", 0, JWTEXP_MAX_S);
    CHECK_PAYLOAD("{\"exp\":99999999999999999999999999999}", 0, JWTEXP_MAX_S);
    CHECK_PAYLOAD("{\"exp\":-1e999}", 0, 0);
    CHECK_PAYLOAD("{\"exp\":1,\"exp\":2}", 0, 2);
    CHECK_PAYLOAD("{\"exp\":\"x\",\"exp\":2}", 0, 2);
    CHECK_PAYLOAD("{\"exp\":2,\"exp\":\"x\"}", -EINVAL, 0);
    CHECK_PAYLOAD("{\"\\u0065xp\":42}", 0, 42);
    CHECK_PAYLOAD("{\"\\u0065\\u0078\\u0070\":42}", 0, 42);
    CHECK_PAYLOAD("{\"ex\\u0070\":42,\"e\":1}", 0, 42);
    CHECK_PAYLOAD("{\"expx\":42}", -ENOENT, 0);
    CHECK_PAYLOAD("{\"ex\":42}", -ENOENT, 0);
    CHECK_PAYLOAD("{\"EXP\":42}", -ENOENT, 0);
    CHECK_PAYLOAD("{\"exp\\u0000\":42}", -ENOENT, 0);
    CHECK_PAYLOAD("{\"a\":{\"exp\":1},\"b\":[{\"exp\":2}]}", -ENOENT, 0);
    CHECK_PAYLOAD("{\"a\":{\"exp\":1},\"exp\":3,\"b\":[{\"exp\":2}]}", 0, 3);
    CHECK_PAYLOAD("{\"s\":\"\\\"exp\\\":5\",\"t\":\"\\\\\",\"u\":\"\\/\\b\\f\\n\\r\\t\"}", -ENOENT,
                  0);
    CHECK_PAYLOAD("{\"s\":\"caf\xc3\xa9\",\"exp\":7}", 0, 7);
    CHECK_PAYLOAD("{\"l\":[true,false,null,-0,0.0,1e-3,\"x\",[],{}],\"exp\":8}", 0, 8);
    CHECK_PAYLOAD("{}", -ENOENT, 0);
    CHECK_PAYLOAD("{\"exp\":\"1800000000\"}", -EINVAL, 0);
    CHECK_PAYLOAD("{\"exp\":null}", -EINVAL, 0);
    CHECK_PAYLOAD("{\"exp\":true}", -EINVAL, 0);
    CHECK_PAYLOAD("{\"exp\":[1]}", -EINVAL, 0);
    CHECK_PAYLOAD("{\"exp\":{\"v\":1}}", -EINVAL, 0);
    /* Not JSON, or not an object. */
    CHECK_PAYLOAD("", -EINVAL, 0);
    CHECK_PAYLOAD("[]", -EINVAL, 0);
    CHECK_PAYLOAD("1800000000", -EINVAL, 0);
    CHECK_PAYLOAD("\"exp\"", -EINVAL, 0);
    CHECK_PAYLOAD("{\"exp\":1}x", -EINVAL, 0);
    CHECK_PAYLOAD("{\"exp\":1}{}", -EINVAL, 0);
    CHECK_PAYLOAD("{\"exp\":1,}", -EINVAL, 0);
    CHECK_PAYLOAD("{,\"exp\":1}", -EINVAL, 0);
    CHECK_PAYLOAD("{\"exp\" 1}", -EINVAL, 0);
    CHECK_PAYLOAD("{\"exp\":1", -EINVAL, 0);
    CHECK_PAYLOAD("{\"exp\":01}", -EINVAL, 0);
    CHECK_PAYLOAD("{\"exp\":1.}", -EINVAL, 0);
    CHECK_PAYLOAD("{\"exp\":.5}", -EINVAL, 0);
    CHECK_PAYLOAD("{\"exp\":+1}", -EINVAL, 0);
    CHECK_PAYLOAD("{\"exp\":-}", -EINVAL, 0);
    CHECK_PAYLOAD("{\"exp\":1e}", -EINVAL, 0);
    CHECK_PAYLOAD("{\"exp\":0x10}", -EINVAL, 0);
    CHECK_PAYLOAD("{\"exp\":Infinity}", -EINVAL, 0);
    CHECK_PAYLOAD("{\"exp\":NaN}", -EINVAL, 0);
    CHECK_PAYLOAD("{exp:1}", -EINVAL, 0);
    CHECK_PAYLOAD("{'exp':1}", -EINVAL, 0);
    CHECK_PAYLOAD("{\"a\":tru,\"exp\":1}", -EINVAL, 0);
    CHECK_PAYLOAD("{\"a\":\"\\x\",\"exp\":1}", -EINVAL, 0);
    CHECK_PAYLOAD("{\"a\":\"\\u12\",\"exp\":1}", -EINVAL, 0);
    CHECK_PAYLOAD("{\"a\":\"\\u12g4\",\"exp\":1}", -EINVAL, 0);
    CHECK_PAYLOAD("{\"a\":\"tab\there\",\"exp\":1}", -EINVAL, 0);
    CHECK_PAYLOAD("{\"a\":[1 2],\"exp\":1}", -EINVAL, 0);
    CHECK_PAYLOAD("{\"a\":[1,],\"exp\":1}", -EINVAL, 0);
    CHECK_PAYLOAD("{\"a\":\"unterminated", -EINVAL, 0);

    /* A NUL inside the decoded JSON is not its end (libjwt reads only up to it and would take
     * {"exp":-1}: a difference the fuzz target found; strict is right here). */
    {
        static const char nul_payload[] = "{\"exp\":-1}\0\x14Lp";
        char tok[128], *o = tok;
        int64_t e = 0;

        b64url(HDR, strlen(HDR), o);
        o += strlen(o);
        *o++ = '.';
        b64url(nul_payload, sizeof(nul_payload) - 1, o);
        o += strlen(o);
        strcpy(o, ".c2ln");
        CHECK_INT(exp_of(tok, &e), -EINVAL);
        b64url(HDR "\0", strlen(HDR) + 1, tok);
        o = tok + strlen(tok);
        *o++ = '.';
        b64url("{\"exp\":1}", 9, o);
        strcat(tok, ".c2ln");
        CHECK_INT(exp_of(tok, &e), -EINVAL);
    }

    /* Nesting: 30 levels are fine, 100 are refused (bounded recursion). */
    {
        char deep[512];
        size_t o = 0;

        o += (size_t)sprintf(deep + o, "{\"exp\":9,\"a\":");
        for (int i = 0; i < 30; i++)
            deep[o++] = '[';
        for (int i = 0; i < 30; i++)
            deep[o++] = ']';
        strcpy(deep + o, "}");
        CHECK_PAYLOAD(deep, 0, 9);
        o = (size_t)sprintf(deep, "{\"exp\":9,\"a\":");
        for (int i = 0; i < 100; i++)
            deep[o++] = '[';
        for (int i = 0; i < 100; i++)
            deep[o++] = ']';
        strcpy(deep + o, "}");
        CHECK_PAYLOAD(deep, -EINVAL, 0);
    }
}

static void test_headers_and_parts(void)
{
    int64_t e = 0;
    const char *p = "{\"exp\":5}";

    /* Headers libjwt would refuse are fine here: the signature is never checked. */
    CHECK_INT(exp_of(make("{\"alg\":\"RS256\",\"typ\":\"at+jwt\"}", p, "c2ln"), &e), 0);
    CHECK_INT(e, 5);
    CHECK_INT(exp_of(make("{\"alg\":\"EdDSA\"}", p, "c2ln"), &e), 0);
    CHECK_INT(exp_of(make("{\"alg\":\"none\"}", p, ""), &e), 0);
    CHECK_INT(exp_of(make("{}", p, ""), &e), 0);
    /* The header must be a JSON object too. */
    CHECK_INT(exp_of(make("[]", p, "c2ln"), &e), -EINVAL);
    CHECK_INT(exp_of(make("{\"alg\":", p, "c2ln"), &e), -EINVAL);
    CHECK_INT(exp_of(make("", p, "c2ln"), &e), -EINVAL);
    /* The signature must be base64url, of a possible length. */
    CHECK_INT(exp_of(make(HDR, p, "c2ln+"), &e), -EINVAL);
    CHECK_INT(exp_of(make(HDR, p, "c2ln="), &e), -EINVAL);
    CHECK_INT(exp_of(make(HDR, p, "c2lnx"), &e), -EINVAL);
    CHECK_INT(exp_of(make(HDR, p, "c2ln.c2ln"), &e), -EINVAL); /* four parts */
    CHECK_INT(exp_of(make(HDR, p, "a.b.c"), &e), -EINVAL);     /* a JWE has five */
    CHECK_INT(exp_of(make(HDR, p, "c2ln "), &e), -EINVAL);

    /* Bad base64url in header or payload. */
    CHECK_INT(exp_of("eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjV9=.c2ln", &e), -EINVAL);
    CHECK_INT(exp_of("eyJhbGciOiJIUzI1NiJ9.eyJleH+iOjV9.c2ln", &e), -EINVAL);
    CHECK_INT(exp_of("eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjV9X.c2ln", &e), -EINVAL); /* len % 4 == 1 */
    CHECK_INT(exp_of("eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjV9.c2ln", &e), 0);
    CHECK_INT(e, 5);
    CHECK_INT(exp_of("eyJhbGciOiJIUzI1NiJ9..c2ln", &e), -EINVAL);
    CHECK_INT(exp_of(".eyJleHAiOjV9.c2ln", &e), -EINVAL);
    CHECK_INT(exp_of("..", &e), -EINVAL);
    CHECK_INT(exp_of(".", &e), -EINVAL);
    CHECK_INT(exp_of("", &e), -EINVAL);
    CHECK_INT(exp_of("not a jwt", &e), -EINVAL);
    CHECK_INT(jwtexp_from_token(NULL, 0, &e), -EINVAL);
}

static void test_bounds(void)
{
    char *big = malloc(JWTEXP_MAX_TOKEN * 2);
    const char *tok;
    char payload[13000];
    int64_t e = 0;
    size_t n;

    /* The largest token accepted, with exp at the very end of the payload. */
    memcpy(payload, "{\"pad\":\"", 8);
    n = 8;
    while (n < 12000 - 40)
        payload[n++] = 'p';
    n += (size_t)sprintf(payload + n, "\",\"exp\":1800000001}");
    payload[n] = '\0';
    tok = make(HDR, payload, "");
    CHECK(strlen(tok) <= JWTEXP_MAX_TOKEN, "token of %zu bytes", strlen(tok));
    CHECK_INT(exp_of(tok, &e), 0);
    CHECK_INT(e, 1800000001);

    /* Longer than the limit: refused unread. */
    memset(big, 'A', JWTEXP_MAX_TOKEN * 2);
    big[10] = '.';
    big[20] = '.';
    CHECK_INT(jwtexp_from_token(big, JWTEXP_MAX_TOKEN + 1, &e), -EINVAL);
    CHECK_INT(jwtexp_from_token(big, JWTEXP_MAX_TOKEN * 2, &e), -EINVAL);

    /* len is honoured: a valid token followed by more bytes, and a NUL inside. */
    tok = make(HDR, "{\"exp\":6}", "c2ln");
    n = strlen(tok);
    memcpy(big, tok, n);
    memcpy(big + n, "!junk!!", 7);
    CHECK_INT(jwtexp_from_token(big, n, &e), 0);
    CHECK_INT(e, 6);
    CHECK_INT(jwtexp_from_token(big, n + 7, &e), -EINVAL);
    big[n - 1] = '\0';
    CHECK_INT(jwtexp_from_token(big, n, &e), -EINVAL);

    /* Every truncation of a real token: no crash, and only the documented codes. Copied to the
     * heap exactly, so ASan sees any read past the end. */
    tok = make(HDR, "{\"sub\":\"alice\",\"exp\":1800000000,\"n\":[1,2.5,{\"x\":null}]}",
               "c2lnbmF0dXJl");
    n = strlen(tok);
    for (size_t k = 0; k <= n; k++) {
        char *copy = malloc(k ? k : 1);
        int r;

        memcpy(copy, tok, k);
        r = jwtexp_from_token(copy, k, &e);
        CHECK(r == 0 || r == -EINVAL || r == -ENOENT, "prefix %zu: rc %d", k, r);
        if (r == 0)
            CHECK_INT(e, 1800000000);
        free(copy);
    }

    /* Garbage: deterministic pseudo-random bytes with dots sprinkled in. */
    {
        uint64_t x = 88172645463325252ull;

        for (int round = 0; round < 20000; round++) {
            size_t len = (size_t)(x % 200);
            char *g = malloc(len ? len : 1);
            int r;

            for (size_t i = 0; i < len; i++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                g[i] = (x & 7) == 0 ? '.' : (x & 8) ? "eyJhbGciOiJ9.{}\"exp:1,"[x % 22] : (char)x;
            }
            r = jwtexp_from_token(g, len, &e);
            CHECK(r == 0 || r == -EINVAL || r == -ENOENT, "garbage round %d: rc %d", round, r);
            free(g);
            x += 0x9E3779B97F4A7C15ull;
        }
    }
    free(big);
}

/* The payload JSON gives sid_rc and (when 0) the sid; exp is read as before whatever the sid. */
#define CHECK_SID(payload, want_rc, want_sid)                                                      \
    do {                                                                                           \
        struct jwtexp_claims c_;                                                                   \
        const char *t_ = make(HDR, payload, "c2ln");                                               \
        int64_t e_ = -1;                                                                           \
        int r_ = jwtexp_claims(t_, strlen(t_), &c_);                                               \
        CHECK(c_.sid_rc == (want_rc) &&                                                            \
                  (c_.sid_rc != 0 ||                                                               \
                   (c_.sid_len == strlen(want_sid) && memcmp(c_.sid, want_sid, c_.sid_len) == 0)), \
              "payload %s: expected sid rc %d \"%s\", got rc %d \"%s\"", payload, (int)(want_rc),  \
              (const char *)(want_sid), c_.sid_rc, c_.sid);                                        \
        CHECK_INT(r_, exp_of(t_, &e_));                                                            \
        CHECK(r_ != 0 || c_.exp_s == e_, "payload %s: exp %lld, jwtexp_from_token %lld", payload,  \
              (long long)c_.exp_s, (long long)e_);                                                 \
    } while (0)

static void test_sid(void)
{
    char long_sid[600], payload[700];
    struct jwtexp_claims c;
    char v[512];

    CHECK_SID("{\"sid\":\"3e5b1c\",\"exp\":5}", 0, "3e5b1c");
    CHECK_SID("{\"exp\":5,\"sid\":\"a\"}", 0, "a");
    CHECK_SID("{\"sid\":\"a\"}", 0, "a"); /* no exp: -ENOENT for exp, the sid still read */
    CHECK_SID("{\"sid\":\"a\",\"sid\":\"b\"}", 0, "b");
    CHECK_SID("{\"s\\u0069d\":\"caf\\u00e9\"}", 0, "caf\xc3\xa9");
    CHECK_SID("{\"sid\":\"a\\\"b\"}", 0, "a\"b");
    CHECK_SID("{\"a\":{\"sid\":\"x\"},\"exp\":5}", -ENOENT, "");
    CHECK_SID("{\"exp\":5}", -ENOENT, "");
    CHECK_SID("{\"SID\":\"x\"}", -ENOENT, "");
    CHECK_SID("{\"sid\":\"\",\"exp\":5}", -EINVAL, "");
    CHECK_SID("{\"sid\":5,\"exp\":5}", -EINVAL, "");
    CHECK_SID("{\"sid\":null}", -EINVAL, "");
    CHECK_SID("{\"sid\":[\"a\"]}", -EINVAL, "");
    CHECK_SID("{\"sid\":\"a\\u0000b\"}", -EINVAL, "");
    CHECK_SID("{\"sid\":\"a\",\"exp\":\"x\"}", 0, "a"); /* a bad exp hides no sid */
    CHECK_SID("{\"sid\":\"a\",}", -EINVAL, "");
    CHECK_SID("[\"sid\"]", -EINVAL, "");
    /* The longest sid kept, and one byte more. */
    memset(long_sid, 'x', sizeof(long_sid));
    long_sid[JWTEXP_SID_MAX - 1] = '\0';
    snprintf(payload, sizeof(payload), "{\"sid\":\"%s\"}", long_sid);
    CHECK_SID(payload, 0, long_sid);
    long_sid[JWTEXP_SID_MAX - 1] = 'x';
    long_sid[JWTEXP_SID_MAX] = '\0';
    snprintf(payload, sizeof(payload), "{\"sid\":\"%s\"}", long_sid);
    CHECK_SID(payload, -EINVAL, "");

    /* Not a JWT: both claims -EINVAL. */
    CHECK_INT(jwtexp_claims("a.b", 3, &c), -EINVAL);
    CHECK_INT(c.sid_rc, -EINVAL);
    CHECK_INT(jwtexp_claims(NULL, 0, &c), -EINVAL);
    CHECK_INT(c.sid_rc, -EINVAL);
    CHECK_INT(jwtexp_claims_from_header_value(NULL, 0, &c), -EINVAL);
    CHECK_INT(c.sid_rc, -EINVAL);
    /* A header value with "Bearer ". */
    snprintf(v, sizeof(v), " Bearer %s ", make(HDR, "{\"sid\":\"s1\",\"exp\":9}", "c2ln"));
    CHECK_INT(jwtexp_claims_from_header_value(v, strlen(v), &c), 0);
    CHECK_INT(c.exp_s, 9);
    CHECK_INT(c.sid_rc, 0);
    CHECK_MEM(c.sid, c.sid_len, "s1", 2);
    snprintf(v, sizeof(v), "Basic %s", make(HDR, "{\"sid\":\"s1\"}", "c2ln"));
    CHECK_INT(jwtexp_claims_from_header_value(v, strlen(v), &c), -EINVAL);
    CHECK_INT(c.sid_rc, -EINVAL);
}

static void test_header_value(void)
{
    const char *tok = make(HDR, "{\"exp\":1800000002}", "c2ln");
    char v[512];
    int64_t e = 0;

#define HV(s) jwtexp_from_header_value((s), strlen(s), &e)
    CHECK_INT(HV(tok), 0);
    CHECK_INT(e, 1800000002);
    snprintf(v, sizeof(v), "Bearer %s", tok);
    CHECK_INT(HV(v), 0);
    snprintf(v, sizeof(v), "  bearer \t %s \t", tok);
    CHECK_INT(HV(v), 0);
    snprintf(v, sizeof(v), "BEARER %s", tok);
    CHECK_INT(HV(v), 0);
    snprintf(v, sizeof(v), "Bearer%s", tok);
    CHECK_INT(HV(v), -EINVAL);
    snprintf(v, sizeof(v), "Basic %s", tok);
    CHECK_INT(HV(v), -EINVAL);
    CHECK_INT(HV("Basic YWxpY2U6c2VjcmV0"), -EINVAL);
    CHECK_INT(HV("Bearer "), -EINVAL);
    CHECK_INT(HV("Bearer"), -EINVAL);
    CHECK_INT(HV(""), -EINVAL);
    CHECK_INT(HV("   "), -EINVAL);
    CHECK_INT(jwtexp_from_header_value(NULL, 0, &e), -EINVAL);
#undef HV
}

int main(void)
{
    test_libjwt_tokens();
    test_payloads();
    test_headers_and_parts();
    test_bounds();
    test_header_value();
    test_sid();
    return check_done("test_jwtexp");
}
