/*
 * test_resp.c — the RESP2 codec (daemon/resp.c): commands are written byte for byte; resp_parse
 * reads every reply type, nil bulks and arrays, arrays nested in arrays (an XREAD-shaped reply),
 * reports a reply fed one byte at a time as partial until its last byte and then whole, takes one
 * reply of several in a row, keeps its limits (bulk length, line length, items, depth), and refuses
 * malformed input with -EPROTO or -E2BIG (never reading past it: every input is an exact-size heap
 * copy, so ASan sees an over-read).
 */
#include <errno.h>
#include <stdlib.h>

#include "check.h"
#include "resp.h"

#define CAP 64

static const struct resp_limits lim = {.max_bulk = 1024, .max_depth = 4};

/* Parse s[0, len) from an exact-size copy; the return code. items' strings point into s, not into
 * the copy: they are rebased before the copy is freed. */
static ssize_t parse_lim(const char *s, size_t len, const struct resp_limits *l,
                         struct resp_item *items, size_t cap, size_t *ni)
{
    char *copy = malloc(len ? len : 1);
    ssize_t n;

    memcpy(copy, s, len);
    n = resp_parse(copy, len, l, items, cap, ni);
    for (size_t i = 0; n > 0 && i < *ni; i++)
        if (items[i].p)
            items[i].p = s + (items[i].p - copy);
    free(copy);
    return n;
}

static ssize_t parse(const char *s, struct resp_item *items, size_t *ni)
{
    return parse_lim(s, strlen(s), &lim, items, CAP, ni);
}

/* The index of element k of the array at i. */
static size_t elem(const struct resp_item *items, size_t i, int64_t k)
{
    size_t j = i + 1;

    while (k-- > 0)
        j = items[j].next;
    return j;
}

static void test_command(void)
{
    char out[128];
    const char *argv[3] = {"PUBLISH", "authcache", "v1 x"};
    size_t lens[3] = {7, 9, 4};
    int n = resp_command(out, sizeof(out), 3, argv, lens);
    const char *want = "*3\r\n$7\r\nPUBLISH\r\n$9\r\nauthcache\r\n$4\r\nv1 x\r\n";
    const char *bin[2] = {"AUTH", "a\r\n\0b"};
    size_t blens[2] = {4, 5};

    CHECK_MEM(out, n, want, strlen(want));
    CHECK_INT(resp_command(out, strlen(want) - 1, 3, argv, lens), -ENOSPC);
    CHECK_INT(resp_command(out, strlen(want), 3, argv, lens), (int)strlen(want));
    CHECK_INT(resp_command(out, 4, 0, argv, lens), 4);
    CHECK_MEM(out, 4, "*0\r\n", 4);
    CHECK_INT(resp_command(out, 3, 3, argv, lens), -ENOSPC);
    CHECK_INT(resp_command(out, 0, 0, argv, lens), -ENOSPC);
    /* Any bytes in an argument, and what is written parses back to the same. */
    n = resp_command(out, sizeof(out), 2, bin, blens);
    CHECK_MEM(out, n, "*2\r\n$4\r\nAUTH\r\n$5\r\na\r\n\0b\r\n", 25);
    {
        struct resp_item it[CAP];
        size_t ni;
        CHECK_INT(parse_lim(out, (size_t)n, &lim, it, CAP, &ni), n);
        CHECK_INT(ni, 3);
        CHECK_MEM(it[2].p, it[2].len, "a\r\n\0b", 5);
    }
}

static void test_scalars(void)
{
    struct resp_item it[CAP];
    size_t ni;

    CHECK_INT(parse("+OK\r\n", it, &ni), 5);
    CHECK_INT(ni, 1);
    CHECK_INT(it[0].type, RESP_SIMPLE);
    CHECK_MEM(it[0].p, it[0].len, "OK", 2);
    CHECK_INT(it[0].next, 1);

    CHECK_INT(parse("-WRONGPASS invalid username-password pair\r\n", it, &ni), 43);
    CHECK_INT(it[0].type, RESP_ERROR);
    CHECK_MEM(it[0].p, it[0].len, "WRONGPASS invalid username-password pair", 40);

    CHECK_INT(parse(":-12\r\n", it, &ni), 6);
    CHECK(it[0].type == RESP_INT && it[0].n == -12, "integer: type %c n %lld", it[0].type,
          (long long)it[0].n);
    CHECK_INT(parse(":123456789012345678\r\n", it, &ni), 21);
    CHECK_INT(it[0].n, 123456789012345678LL);

    CHECK_INT(parse("$5\r\nab\r\nc\r\n", it, &ni), 11);
    CHECK_INT(it[0].type, RESP_BULK);
    CHECK_MEM(it[0].p, it[0].len, "ab\r\nc", 5);
    CHECK_INT(parse("$0\r\n\r\n", it, &ni), 6);
    CHECK(it[0].p != NULL && it[0].len == 0, "empty bulk is not nil");

    /* nil */
    CHECK_INT(parse("$-1\r\n", it, &ni), 5);
    CHECK(it[0].type == RESP_BULK && it[0].n == -1 && it[0].p == NULL && it[0].len == 0,
          "nil bulk: n %lld p %p", (long long)it[0].n, (const void *)it[0].p);
    CHECK_INT(parse("*-1\r\n", it, &ni), 5);
    CHECK(it[0].type == RESP_ARRAY && it[0].n == -1 && ni == 1 && it[0].next == 1,
          "nil array: n %lld, %zu items", (long long)it[0].n, ni);
    CHECK_INT(parse("*0\r\n", it, &ni), 4);
    CHECK(it[0].n == 0 && ni == 1, "empty array: n %lld, %zu items", (long long)it[0].n, ni);
}

static void test_nested(void)
{
    /* XREAD's shape: [[stream, [[id, [field, value, ...]], ...]], ...], with nils and an error. */
    const char *xread = "*2\r\n"
                        "*2\r\n$9\r\nauthcache\r\n"
                        "*2\r\n"
                        "*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nm\r\n$23\r\nv1 0123456789abcdef all\r\n"
                        "*2\r\n$3\r\n2-0\r\n*-1\r\n"
                        "*3\r\n$-1\r\n-ERR in an array\r\n:7\r\n";
    const struct resp_limits five = {.max_bulk = 1024, .max_depth = 5}; /* XREAD nests 5 deep */
    struct resp_item it[CAP];
    size_t ni, s, entries, e, f;

    CHECK_INT(parse_lim(xread, strlen(xread), &five, it, CAP, &ni), (ssize_t)strlen(xread));
    CHECK_INT(parse(xread, it, &ni), -EPROTO); /* lim allows 4 */
    CHECK_INT(parse_lim(xread, strlen(xread), &five, it, CAP, &ni), (ssize_t)strlen(xread));
    CHECK_INT(ni, 16);
    CHECK(it[0].type == RESP_ARRAY && it[0].n == 2 && it[0].next == ni, "top: n %lld next %zu",
          (long long)it[0].n, it[0].next);
    s = elem(it, 0, 0);
    CHECK_INT(s, 1);
    CHECK(it[s].type == RESP_ARRAY && it[s].n == 2, "stream: type %c", it[s].type);
    CHECK_MEM(it[elem(it, s, 0)].p, it[elem(it, s, 0)].len, "authcache", 9);
    entries = elem(it, s, 1);
    CHECK(it[entries].type == RESP_ARRAY && it[entries].n == 2, "entries");
    e = elem(it, entries, 0);
    CHECK_MEM(it[elem(it, e, 0)].p, it[elem(it, e, 0)].len, "1-0", 3);
    f = elem(it, e, 1);
    CHECK_INT(it[f].n, 2);
    CHECK_MEM(it[elem(it, f, 1)].p, it[elem(it, f, 1)].len, "v1 0123456789abcdef all", 23);
    e = elem(it, entries, 1);
    CHECK_MEM(it[elem(it, e, 0)].p, it[elem(it, e, 0)].len, "2-0", 3);
    CHECK(it[elem(it, e, 1)].type == RESP_ARRAY && it[elem(it, e, 1)].n == -1, "nil entry");
    /* The top's second element follows the whole first. */
    s = elem(it, 0, 1);
    CHECK_INT(s, 12);
    CHECK_INT(it[s].n, 3);
    CHECK(it[elem(it, s, 0)].type == RESP_BULK && it[elem(it, s, 0)].p == NULL, "nil in array");
    CHECK_MEM(it[elem(it, s, 1)].p, it[elem(it, s, 1)].len, "ERR in an array", 15);
    CHECK_INT(it[elem(it, s, 2)].n, 7);
    CHECK_INT(it[s].next, ni);

    /* Arrays closing together, then empty arrays as elements. */
    CHECK_INT(parse("*2\r\n*1\r\n*1\r\n:1\r\n*0\r\n", it, &ni), 20);
    CHECK_INT(ni, 5);
    CHECK_INT(it[1].next, 4);
    CHECK_INT(it[2].next, 4);
    CHECK_INT(it[4].next, 5);

    /* Depth: lim allows 4 levels, a fifth is refused; max_depth 0 allows no array. */
    CHECK_INT(parse("*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", it, &ni), 20);
    CHECK_INT(parse("*1\r\n*1\r\n*1\r\n*1\r\n*0\r\n", it, &ni), -EPROTO);
    {
        const struct resp_limits flat = {.max_bulk = 16, .max_depth = 0};
        const struct resp_limits one = {.max_bulk = 16, .max_depth = 1};
        CHECK_INT(parse_lim("*0\r\n", 4, &flat, it, CAP, &ni), -EPROTO);
        CHECK_INT(parse_lim(":1\r\n", 4, &flat, it, CAP, &ni), 4);
        CHECK_INT(parse_lim("*1\r\n*0\r\n", 8, &one, it, CAP, &ni), -EPROTO);
        CHECK_INT(parse_lim("*1\r\n:0\r\n", 8, &one, it, CAP, &ni), 8);
    }
}

/* Feed stream one byte at a time, as a socket might: each reply is partial until its last byte,
 * then taken whole; the next starts where it ended. */
static void test_byte_by_byte(void)
{
    static const char stream[] = "*3\r\n$9\r\nsubscribe\r\n$9\r\nauthcache\r\n:1\r\n"
                                 "+OK\r\n"
                                 "$-1\r\n"
                                 "*2\r\n*2\r\n$1\r\na\r\n$-1\r\n*-1\r\n"
                                 "-ERR unknown command 'XREAD'\r\n"
                                 "$12\r\nhello\r\nworld\r\n"
                                 ":-42\r\n";
    static const size_t ends[] = {38, 43, 48, 73, 103, 122, 128};
    static const size_t nitems[] = {4, 1, 1, 5, 1, 1, 1};
    size_t total = sizeof(stream) - 1, start = 0, r = 0;

    CHECK_INT(ends[6], total);
    for (size_t have = start; have <= total; have++) {
        struct resp_item it[CAP];
        size_t ni = 99;
        ssize_t n = parse_lim(stream + start, have - start, &lim, it, CAP, &ni);

        if (r < 7 && have < ends[r]) {
            CHECK(n == 0 && ni == 0,
                  "reply %zu with %zu of its bytes: expected 0 (partial), got "
                  "%zd with %zu items",
                  r, have - start, n, ni);
            continue;
        }
        if (r == 7) {
            CHECK_INT(n, 0);
            break;
        }
        CHECK(n == (ssize_t)(ends[r] - start) && ni == nitems[r],
              "reply %zu whole: expected %zu bytes and %zu items, got %zd and %zu", r,
              ends[r] - start, nitems[r], n, ni);
        if (r == 5)
            CHECK_MEM(it[0].p, it[0].len, "hello\r\nworld", 12);
        if (r == 4)
            CHECK_MEM(it[0].p, it[0].len, "ERR unknown command 'XREAD'", 27);
        start = ends[r++];
    }
    CHECK_INT(r, 7);
}

static void test_bad(void)
{
    static const char *const bad[] = {
        "?\r\n",
        "+OK\n\r\n",
        "+O\rK\r\n",
        ":\r\n",
        ":-\r\n",
        ":12a\r\n",
        ":1234567890123456789\r\n",
        ": 1\r\n",
        "$-2\r\n",
        "$3\r\nabcd\r\n",
        "$3\r\nab\rX\n",
        "$x\r\n",
        "$\r\n",
        "*-2\r\n",
        "*2\r\n:1\r\n?\r\n",
        "* 1\r\n",
        "*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
        "_\r\n", /* RESP3's null: not RESP2 */
        "%1\r\n",
        "\r\n\r\n",
        "OK\r\n",
    };
    struct resp_item it[CAP];
    char line[RESP_LINE_MAX + 8], many[64];
    size_t ni;

    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        ssize_t n = parse(bad[i], it, &ni);
        CHECK(n == -EPROTO || n == -E2BIG,
              "bad reply #%zu \"%s\": expected -EPROTO or -E2BIG, got %zd", i, bad[i], n);
    }
    CHECK_INT(parse("*2\r\n:1\r\n?\r\n", it, &ni), -EPROTO);

    /* Limits. */
    {
        const struct resp_limits small = {.max_bulk = 4, .max_depth = 1};
        CHECK_INT(parse_lim("$5\r\nhello\r\n", 11, &small, it, CAP, &ni), -E2BIG);
        CHECK_INT(parse_lim("$5\r\n", 4, &small, it, CAP, &ni), -E2BIG); /* known at once */
        CHECK_INT(parse_lim("$4\r\nhell\r\n", 10, &small, it, CAP, &ni), 10);
    }
    CHECK_INT(parse("$99999999999\r\n", it, &ni), -E2BIG);
    /* Items: an array of 3 needs 4; announced counts beyond cap are refused before their elements.
     */
    CHECK_INT(parse_lim("*3\r\n:1\r\n:2\r\n:3\r\n", 16, &lim, it, 4, &ni), 16);
    CHECK_INT(parse_lim("*3\r\n:1\r\n:2\r\n:3\r\n", 16, &lim, it, 3, &ni), -E2BIG);
    CHECK_INT(parse_lim("*3\r\n", 4, &lim, it, 3, &ni), -E2BIG);
    CHECK_INT(parse_lim(":1\r\n", 4, &lim, it, 0, &ni), -E2BIG);
    CHECK_INT(parse_lim("*2\r\n*2\r\n:1\r\n:2\r\n:3\r\n", 20, &lim, it, 4, &ni), -E2BIG);
    snprintf(many, sizeof(many), "*%d\r\n", CAP);
    CHECK_INT(parse(many, it, &ni), -E2BIG);
    snprintf(many, sizeof(many), "*999999999999999999\r\n");
    CHECK_INT(parse(many, it, &ni), -E2BIG);
    memset(line, 'a', sizeof(line));
    line[0] = '+';
    CHECK_INT(parse_lim(line, RESP_LINE_MAX, &lim, it, CAP, &ni), 0); /* could still end */
    CHECK_INT(parse_lim(line, RESP_LINE_MAX + 2, &lim, it, CAP, &ni), -E2BIG);
    memcpy(line + 1 + RESP_LINE_MAX, "\r\n", 2);
    CHECK_INT(parse_lim(line, RESP_LINE_MAX + 3, &lim, it, CAP, &ni), RESP_LINE_MAX + 3);
    CHECK_INT(parse_lim("", 0, &lim, it, CAP, &ni), 0);
    CHECK_INT(ni, 0);
}

/* Random bytes, and good replies with one byte changed: whatever comes, a defined answer that
 * stays inside the input. */
static void test_garbage(void)
{
    static const char alphabet[] = "+-:$*\r\n0123456789-ab";
    static const char good[] = "*2\r\n*2\r\n$3\r\nabc\r\n:12\r\n$-1\r\n";
    uint32_t x = 2463534242u;
    char buf[64];

    for (int round = 0; round < 20000; round++) {
        struct resp_item it[8];
        size_t len, ni;
        ssize_t n;

        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        if (round % 2) {
            len = x % sizeof(buf);
            for (size_t i = 0; i < len; i++) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                buf[i] = alphabet[x % (sizeof(alphabet) - 1)];
            }
        } else {
            len = sizeof(good) - 1;
            memcpy(buf, good, len);
            buf[x % len] = alphabet[(x >> 8) % (sizeof(alphabet) - 1)];
        }
        n = parse_lim(buf, len, &lim, it, 8, &ni);
        CHECK(n == 0 || n == -EPROTO || n == -E2BIG || (n > 0 && (size_t)n <= len),
              "round %d: %zd of %zu bytes", round, n, len);
        if (n <= 0) {
            CHECK(ni == 0, "round %d: %zu items on failure", round, ni);
            continue;
        }
        CHECK(ni >= 1 && ni <= 8 && it[0].next == ni, "round %d: %zu items", round, ni);
        for (size_t i = 0; i < ni; i++)
            CHECK(!it[i].p || (it[i].p >= buf && it[i].p + it[i].len <= buf + n),
                  "round %d: item %zu outside the reply", round, i);
    }
}

int main(void)
{
    test_command();
    test_scalars();
    test_nested();
    test_byte_by_byte();
    test_bad();
    test_garbage();
    return check_done("test_resp");
}
