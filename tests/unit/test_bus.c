/*
 * test_bus.c — the purge bus's message codec (daemon/bus_msg.c): messages round-trip through
 * bus_msg_encode and bus_msg_decode for every kind of purge, and the decoder refuses what is not
 * exactly a v1 message (version, node id, kind, lengths, hex, trailing bytes, size) and recognises
 * this node's own. The RESP2 codec the bus speaks to Redis with is tested in test_resp.c.
 */
#include <errno.h>
#include <stdlib.h>

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

int main(void)
{
    test_roundtrip();
    test_rejects();
    return check_done("test_bus");
}
