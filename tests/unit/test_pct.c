/*
 * test_pct.c — daemon/pct.h: hex digits (every byte against a plain reference) and query-component
 * decoding (escapes of either case, '+', broken escapes at every position, never a read past n:
 * each input comes from an exactly-sized heap copy).
 */
#include "check.h"
#include "pct.h"

#include <stdlib.h>

static int ref_hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void test_hexval(void)
{
    for (int c = 0; c < 256; c++) {
        int got = pct_hexval((char)c);
        CHECK(got == ref_hexval(c), "pct_hexval(0x%02x): expected %d, got %d", c, ref_hexval(c),
              got);
    }
}

/* Decode s[0, n) with pct_query_next into out; the count, or -1 at the first broken escape (with
 * *at its offset). */
static int decode(const char *s, size_t n, unsigned char *out, size_t *at)
{
    char *copy = malloc(n ? n : 1);
    int len = 0;
    size_t i = 0;

    if (!copy)
        abort();
    memcpy(copy, s, n);
    while (i < n) {
        size_t before = i;
        int c = pct_query_next(copy, n, &i);
        if (c < 0) {
            CHECK(i == before, "\"%.*s\": a broken escape moved the offset from %zu to %zu", (int)n,
                  s, before, i);
            *at = i;
            len = -1;
            break;
        }
        CHECK(c <= 255 && (i == before + 1 || i == before + 3),
              "\"%.*s\" at %zu: got %d, advanced to %zu", (int)n, s, before, c, i);
        out[len++] = (unsigned char)c;
    }
    free(copy);
    return len;
}

static void test_query_next(void)
{
    static const struct {
        const char *in;
        size_t in_len; /* 0: strlen */
        const char *want;
        int want_len; /* -1: broken escape at want_at */
        size_t want_at;
    } cases[] = {
        {"", 0, "", 0, 0},
        {"plain", 0, "plain", 5, 0},
        {"a+b", 0, "a b", 3, 0},
        {"%41%62%2B+", 0, "Ab+ ", 4, 0},
        {"%2b%2B", 0, "++", 2, 0},
        {"%ff%FF%fF%00x", 13, "\xff\xff\xff\0x", 5, 0},
        {"%25%32%30", 0, "%20", 3, 0}, /* one pass: %2520 is "%20", never " " */
        {"caf%C3%A9", 0, "caf\xc3\xa9", 5, 0},
        {"%", 0, NULL, -1, 0},
        {"a%4", 0, NULL, -1, 1},
        {"ab%", 0, NULL, -1, 2},
        {"%g1", 0, NULL, -1, 0},
        {"%1g", 0, NULL, -1, 0},
        {"x%+1", 0, NULL, -1, 1},
        {"%%41", 0, NULL, -1, 0},
        {"ok%41%4", 0, NULL, -1, 5},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        size_t n = cases[k].in_len ? cases[k].in_len : strlen(cases[k].in), at = SIZE_MAX;
        unsigned char out[32];
        int got = decode(cases[k].in, n, out, &at);
        if (cases[k].want_len < 0) {
            CHECK(got == -1 && at == cases[k].want_at,
                  "\"%s\": expected a broken escape at %zu, got %d (at %zu)", cases[k].in,
                  cases[k].want_at, got, at);
        } else {
            CHECK(got == cases[k].want_len, "\"%s\": expected %d bytes, got %d", cases[k].in,
                  cases[k].want_len, got);
            if (got == cases[k].want_len)
                CHECK_MEM(out, (size_t)got, cases[k].want, (size_t)cases[k].want_len);
        }
    }
    /* an escape cut short by n, whatever follows in memory */
    CHECK_INT(decode("%41", 2, (unsigned char[4]){0}, &(size_t){0}), -1);
}

int main(void)
{
    test_hexval();
    test_query_next();
    return check_done("test_pct");
}
