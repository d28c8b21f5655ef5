/*
 * test_bus.c — the purge bus's two codecs (daemon/bus.c): messages round-trip through
 * bus_msg_encode and bus_msg_decode for every kind of purge, and the decoder refuses what is not
 * exactly a v1 message (version, node id, kind, lengths, hex, trailing bytes, size) and recognises
 * this node's own; RESP2 commands are written byte for byte, and bus_resp_parse reads every reply
 * type, waits on every prefix of a reply, and refuses malformed and oversized ones.
 */
#include <errno.h>
#include <stdlib.h>

#include "bus.h"
#include "bus_msg.h"
#include "check.h"

#define NODE UINT64_C(0x0123456789abcdef)
#define SELF UINT64_C(0xfedcba9876543210)

static const uint8_t key_id[SHM_CRED_LEN] = {0xde, 0xad, 0xbe, 0xef, 0x00, 0x11, 0x22, 0x33};

/* Decode the NUL-terminated s; the return code. */
static int dec(const char *s, struct bus_msg *m, const char **why)
{
    return bus_msg_decode(s, strlen(s), SELF, m, why);
}

static void expect_bad(const char *s, int want, const char *what)
{
    struct bus_msg m;
    const char *why = NULL;
    int rc = dec(s, &m, &why);

    CHECK(rc == want && why && *why, "%s: \"%s\": expected %d with a reason, got %d (%s)", what, s,
          want, rc, why ? why : "no reason");
}

static void test_roundtrip(void)
{
    char buf[BUS_MSG_MAX], name[BUS_MSG_USER_MAX];
    struct purge p = {.kind = PURGE_ALL};
    struct bus_msg m;
    const char *why;
    int n;

    n = bus_msg_encode(NODE, key_id, &p, buf, sizeof(buf));
    CHECK_MEM(buf, n, "v1 0123456789abcdef all", 23);
    CHECK_INT(bus_msg_decode(buf, (size_t)n, SELF, &m, &why), 0);
    CHECK_INT(m.p.kind, PURGE_ALL);
    CHECK(m.node == NODE, "node %016llx", (unsigned long long)m.node);

    p = (struct purge){.kind = PURGE_USER, .user = "alice smith", .user_len = 11};
    n = bus_msg_encode(NODE, key_id, &p, buf, sizeof(buf));
    CHECK_MEM(buf, n, "v1 0123456789abcdef user 11:alice smith", 39);
    CHECK_INT(bus_msg_decode(buf, (size_t)n, SELF, &m, &why), 0);
    CHECK_INT(m.p.kind, PURGE_USER);
    CHECK_MEM(m.p.user, m.p.user_len, "alice smith", 11);
    CHECK(m.p.user >= buf && m.p.user < buf + n, "user points into the message");

    /* Any bytes in a name, at the longest. */
    for (size_t i = 0; i < sizeof(name); i++)
        name[i] = (char)(i * 7);
    p = (struct purge){.kind = PURGE_USER, .user = name, .user_len = sizeof(name)};
    n = bus_msg_encode(NODE, key_id, &p, buf, sizeof(buf));
    CHECK(n > 0 && n <= BUS_MSG_MAX, "n = %d", n);
    CHECK_INT(bus_msg_decode(buf, (size_t)n, SELF, &m, &why), 0);
    CHECK(m.p.user_len == sizeof(name) && memcmp(m.p.user, name, sizeof(name)) == 0,
          "binary name of %zu bytes", m.p.user_len);
    CHECK_INT(bus_msg_encode(NODE, key_id, &p, buf, (size_t)n - 1), -ENOSPC);
    p.user_len = BUS_MSG_USER_MAX + 1;
    CHECK_INT(bus_msg_encode(NODE, key_id, &p, buf, sizeof(buf)), -EINVAL);
    p.user_len = 0;
    CHECK_INT(bus_msg_encode(NODE, key_id, &p, buf, sizeof(buf)), -EINVAL);

    p = (struct purge){.kind = PURGE_CREDS,
                       .ncred = 2,
                       .cred = {{1, 2, 3, 4, 5, 6, 7, 8}, {0xff, 0xee, 0, 0, 0, 0, 0x10, 0x0a}}};
    n = bus_msg_encode(NODE, key_id, &p, buf, sizeof(buf));
    CHECK_MEM(buf, n,
              "v1 0123456789abcdef session deadbeef00112233 0102030405060708 ffee00000000100a", 78);
    CHECK_INT(bus_msg_decode(buf, (size_t)n, SELF, &m, &why), 0);
    CHECK_INT(m.p.kind, PURGE_CREDS);
    CHECK_INT(m.p.ncred, 2);
    CHECK(memcmp(m.key_id, key_id, SHM_CRED_LEN) == 0, "key id");
    CHECK(memcmp(m.p.cred, p.cred, sizeof(p.cred)) == 0, "digests");

    p.ncred = 1;
    n = bus_msg_encode(NODE, key_id, &p, buf, sizeof(buf));
    CHECK_INT(n, 61);
    CHECK_INT(bus_msg_decode(buf, (size_t)n, SELF, &m, &why), 0);
    CHECK_INT(m.p.ncred, 1);
    CHECK(memcmp(m.p.cred[0], p.cred[0], SHM_CRED_LEN) == 0, "one digest");
    p.ncred = 0;
    CHECK_INT(bus_msg_encode(NODE, key_id, &p, buf, sizeof(buf)), -EINVAL);
    p.ncred = 3;
    CHECK_INT(bus_msg_encode(NODE, key_id, &p, buf, sizeof(buf)), -EINVAL);
    p.kind = 0;
    CHECK_INT(bus_msg_encode(NODE, key_id, &p, buf, sizeof(buf)), -EINVAL);

    /* This node's own: well-formed, recognised. */
    p = (struct purge){.kind = PURGE_ALL};
    n = bus_msg_encode(SELF, key_id, &p, buf, sizeof(buf));
    CHECK_INT(bus_msg_decode(buf, (size_t)n, SELF, &m, &why), BUS_MSG_OWN);
    CHECK_INT(bus_msg_decode(buf, (size_t)n, NODE, &m, &why), 0);
}

static void test_rejects(void)
{
    char big[BUS_MSG_MAX + 2];
    struct bus_msg m;
    const char *why;

    /* version */
    expect_bad("v2 0123456789abcdef all", -EPROTO, "version 2");
    expect_bad("V1 0123456789abcdef all", -EPROTO, "upper-case version");
    expect_bad("v10123456789abcdef all", -EPROTO, "no space after the version");
    expect_bad("", -EPROTO, "empty");
    expect_bad("v1", -EPROTO, "version alone");
    expect_bad("hello world", -EPROTO, "not a message");
    /* node id */
    expect_bad("v1 0123456789ABCDEF all", -EPROTO, "upper-case node id");
    expect_bad("v1 0123456789abcdeg all", -EPROTO, "node id not hex");
    expect_bad("v1 0123456789abcde all", -EPROTO, "node id of 15 digits");
    expect_bad("v1 0123456789abcdef0 all", -EPROTO, "node id of 17 digits");
    expect_bad("v1 0123456789abcdef", -EPROTO, "node id, no kind");
    expect_bad("v1 0123456789abcdef ", -EPROTO, "empty kind");
    /* kind */
    expect_bad("v1 0123456789abcdef everything", -EPROTO, "unknown kind");
    expect_bad("v1 0123456789abcdef all ", -EPROTO, "trailing space");
    expect_bad("v1 0123456789abcdef all\n", -EPROTO, "trailing newline");
    expect_bad("v1 0123456789abcdef alll", -EPROTO, "all and more");
    /* user */
    expect_bad("v1 0123456789abcdef user 5:alic", -EPROTO, "truncated name");
    expect_bad("v1 0123456789abcdef user 5:alice!", -EPROTO, "name longer than its length");
    expect_bad("v1 0123456789abcdef user 5alice", -EPROTO, "no colon");
    expect_bad("v1 0123456789abcdef user :alice", -EPROTO, "no length");
    expect_bad("v1 0123456789abcdef user 05:alice", -EPROTO, "leading zero");
    expect_bad("v1 0123456789abcdef user 0:", -EPROTO, "empty name");
    expect_bad("v1 0123456789abcdef user -5:alice", -EPROTO, "negative length");
    expect_bad("v1 0123456789abcdef user 513:x", -EPROTO, "length over the limit");
    expect_bad("v1 0123456789abcdef user 99999999999999999999:x", -EPROTO, "huge length");
    expect_bad("v1 0123456789abcdef user 5", -EPROTO, "length alone");
    expect_bad("v1 0123456789abcdef user", -EPROTO, "user alone");
    /* session */
    expect_bad("v1 0123456789abcdef session deadbeef00112233", -EPROTO, "no digest");
    expect_bad("v1 0123456789abcdef session deadbeef00112233 ", -EPROTO, "space, no digest");
    expect_bad("v1 0123456789abcdef session deadbeef00112233 010203040506070", -EPROTO,
               "short digest");
    expect_bad("v1 0123456789abcdef session deadbeef00112233 01020304050607080", -EPROTO,
               "long digest");
    expect_bad("v1 0123456789abcdef session deadbeef00112233 0102030405060x08", -EPROTO,
               "digest not hex");
    expect_bad("v1 0123456789abcdef session deadbeef00112233 0102030405060A08", -EPROTO,
               "upper-case digest");
    expect_bad("v1 0123456789abcdef session deadbeef0011223 0102030405060708", -EPROTO,
               "short key id");
    expect_bad("v1 0123456789abcdef session deadbeef00112233  0102030405060708", -EPROTO,
               "two spaces");
    expect_bad("v1 0123456789abcdef session deadbeef00112233 0102030405060708 "
               "0102030405060708 0102030405060708",
               -EPROTO, "three digests");
    expect_bad("v1 0123456789abcdef session", -EPROTO, "session alone");
    /* size */
    memset(big, 'a', sizeof(big));
    memcpy(big, "v1 0123456789abcdef user 512:", 29);
    CHECK_INT(bus_msg_decode(big, BUS_MSG_MAX + 1, SELF, &m, &why), -E2BIG);
    CHECK(why != NULL, "a reason for the size");
    /* A name with a NUL in it is a name like any other (length-prefixed). */
    CHECK_INT(bus_msg_decode("v1 0123456789abcdef user 3:a\0b", 30, SELF, &m, &why), 0);
    CHECK_INT(m.p.user_len, 3);
    /* Every prefix of a good message is refused, never read past. */
    {
        const char *good = "v1 0123456789abcdef session deadbeef00112233 0102030405060708";
        size_t n = strlen(good);
        for (size_t i = 0; i < n; i++) {
            char *cut = malloc(i ? i : 1);
            memcpy(cut, good, i);
            CHECK(bus_msg_decode(cut, i, SELF, &m, &why) == -EPROTO, "prefix of %zu bytes", i);
            free(cut);
        }
    }
}

static void test_resp_command(void)
{
    char out[128];
    const char *argv[3] = {"PUBLISH", "authcache", "v1 x"};
    size_t lens[3] = {7, 9, 4};
    int n = bus_resp_command(out, sizeof(out), 3, argv, lens);
    const char *want = "*3\r\n$7\r\nPUBLISH\r\n$9\r\nauthcache\r\n$4\r\nv1 x\r\n";

    CHECK_MEM(out, n, want, strlen(want));
    CHECK_INT(bus_resp_command(out, strlen(want) - 1, 3, argv, lens), -ENOSPC);
    CHECK_INT(bus_resp_command(out, strlen(want), 3, argv, lens), (int)strlen(want));
    CHECK_INT(bus_resp_command(out, 4, 0, argv, lens), 4);
    CHECK_MEM(out, 4, "*0\r\n", 4);
    CHECK_INT(bus_resp_command(out, 3, 3, argv, lens), -ENOSPC);
}

/* Parse s (len bytes) whole: the bytes taken. */
static ssize_t parse(const char *s, size_t len, size_t max_bulk, struct bus_resp *r)
{
    char *copy = malloc(len ? len : 1); /* exact size: ASan sees any over-read */
    ssize_t n;

    memcpy(copy, s, len);
    n = bus_resp_parse(copy, len, max_bulk, r);
    /* the pointers in r would dangle: the callers here look at lengths and types only, or
     * re-parse the original */
    free(copy);
    return n;
}

static void test_resp_parse(void)
{
    static const char *const good[] = {
        "+OK\r\n",
        "-ERR unknown command\r\n",
        ":0\r\n",
        ":-12\r\n",
        ":123456789012345678\r\n",
        "$0\r\n\r\n",
        "$-1\r\n",
        "$5\r\nab\r\nc\r\n",
        "*-1\r\n",
        "*0\r\n",
        "*3\r\n$9\r\nsubscribe\r\n$9\r\nauthcache\r\n:1\r\n",
        "*3\r\n$7\r\nmessage\r\n$9\r\nauthcache\r\n$23\r\nv1 0123456789abcdef all\r\n",
        "*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$1\r\nc\r\n$-1\r\n",
    };
    static const char *const bad[] = {
        "?\r\n",
        "+OK\n\r\n",
        "+O\rK\r\n",
        ":\r\n",
        ":-\r\n",
        ":12a\r\n",
        ":1234567890123456789\r\n",
        "$-2\r\n",
        "$3\r\nabcd\r\n",
        "$3\r\nab\rX\n",
        "*-2\r\n",
        "*1\r\n*0\r\n",
        "*2\r\n:1\r\n?\r\n",
        "$x\r\n",
        "* 1\r\n",
    };
    struct bus_resp r;
    char line[BUS_RESP_LINE_MAX + 8], many[64];

    for (size_t i = 0; i < sizeof(good) / sizeof(*good); i++) {
        size_t len = strlen(good[i]);
        CHECK(parse(good[i], len, 1024, &r) == (ssize_t)len, "good reply #%zu taken whole", i);
        for (size_t k = 0; k < len; k++)
            CHECK(parse(good[i], k, 1024, &r) == 0, "good reply #%zu: prefix of %zu is partial", i,
                  k);
        /* Two in a row: the first is taken alone. */
        {
            char two[256];
            snprintf(two, sizeof(two), "%s%s", good[i], good[i]);
            CHECK(parse(two, 2 * len, 1024, &r) == (ssize_t)len, "good reply #%zu twice", i);
        }
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        CHECK(parse(bad[i], strlen(bad[i]), 1024, &r) < 0, "bad reply #%zu \"%s\" refused", i,
              bad[i]);

    /* What the fields say. */
    CHECK_INT(bus_resp_parse(good[11], strlen(good[11]), 1024, &r), (ssize_t)strlen(good[11]));
    CHECK_INT(r.top.type, '*');
    CHECK_INT(r.top.n, 3);
    CHECK_INT(r.nelem, 3);
    CHECK_MEM(r.elem[0].p, r.elem[0].len, "message", 7);
    CHECK_MEM(r.elem[1].p, r.elem[1].len, "authcache", 9);
    CHECK_MEM(r.elem[2].p, r.elem[2].len, "v1 0123456789abcdef all", 23);
    CHECK_INT(bus_resp_parse(":-12\r\n", 6, 0, &r), 6);
    CHECK_INT(r.top.n, -12);
    CHECK_INT(bus_resp_parse("$-1\r\n", 5, 0, &r), 5);
    CHECK(r.top.type == '$' && r.top.n == -1 && r.top.p == NULL, "null bulk");
    CHECK_INT(bus_resp_parse("-ERR x\r\n", 8, 0, &r), 8);
    CHECK_MEM(r.top.p, r.top.len, "ERR x", 5);
    CHECK_INT(bus_resp_parse("$5\r\nab\r\nc\r\n", 11, 1024, &r), 11);
    CHECK_MEM(r.top.p, r.top.len, "ab\r\nc", 5);

    /* Limits. */
    CHECK_INT(bus_resp_parse("$5\r\nhello\r\n", 11, 4, &r), -E2BIG);
    CHECK_INT(bus_resp_parse("$5\r\nhello\r\n", 11, 5, &r), 11);
    CHECK_INT(bus_resp_parse("$99999999999\r\n", 14, 1024, &r), -E2BIG);
    snprintf(many, sizeof(many), "*%d\r\n", BUS_RESP_MAX_ELEMS + 1);
    CHECK_INT(bus_resp_parse(many, strlen(many), 1024, &r), -E2BIG);
    memset(line, 'a', sizeof(line));
    line[0] = '+';
    CHECK_INT(bus_resp_parse(line, BUS_RESP_LINE_MAX, 0, &r), 0); /* could still end */
    CHECK_INT(bus_resp_parse(line, BUS_RESP_LINE_MAX + 2, 0, &r), -E2BIG);
    memcpy(line + 1 + BUS_RESP_LINE_MAX, "\r\n", 2);
    CHECK_INT(bus_resp_parse(line, BUS_RESP_LINE_MAX + 3, 0, &r), BUS_RESP_LINE_MAX + 3);
    CHECK_INT(bus_resp_parse("", 0, 0, &r), 0);
}

int main(void)
{
    test_roundtrip();
    test_rejects();
    test_resp_command();
    test_resp_parse();
    return check_done("test_bus");
}
