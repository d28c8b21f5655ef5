/*
 * test_bus.c — the purge bus's message codec (daemon/bus_msg.c): messages round-trip through
 * bus_msg_encode and bus_msg_decode for every kind of purge, and the decoder refuses what is not
 * exactly a v1 message (version, node id, kind, lengths, hex, trailing bytes, size) and recognises
 * this node's own. The stream's replies: ids, XREAD's entries (nil, one, several, a stranger's
 * fields, every wrong shape), XINFO STREAM, and bus_sync's verdicts (start at the end, no gap
 * within the retention, a gap past it, a stream deleted or recreated, Redis 6 without
 * entries-added). The RESP2 codec the bus speaks to Redis with is tested in test_resp.c.
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

/* ---- Redis Streams ---- */

#define STREAM "purges"
#define ITEMS 64

static struct resp_item items[ITEMS];

/* Parse the whole reply s (NUL-terminated) into items; their number. */
static size_t reply(const char *s)
{
    static const struct resp_limits lim = {.max_bulk = 1024, .max_depth = 5};
    size_t ni = 0;
    ssize_t n = resp_parse(s, strlen(s), &lim, items, ITEMS, &ni);

    CHECK(n == (ssize_t)strlen(s), "the test's reply parses whole: %zd of %zu bytes", n, strlen(s));
    return ni;
}

static int xread(const char *s, struct bus_entry *e, size_t cap)
{
    size_t ni = reply(s);

    return bus_xread_entries(items, ni, STREAM, strlen(STREAM), e, cap);
}

static void test_ids(void)
{
    struct bus_id a, b;
    char out[BUS_ID_MAX];

    CHECK_INT(bus_id_parse("1700000000000-5", 15, &a), 0);
    CHECK(a.ms == 1700000000000ull && a.seq == 5, "id parsed");
    CHECK_INT(bus_id_format(&a, out), 15);
    CHECK_MEM(out, strlen(out), "1700000000000-5", 15);
    CHECK_INT(bus_id_parse("18446744073709551615-18446744073709551615", 41, &b), 0);
    CHECK(b.ms == UINT64_MAX && b.seq == UINT64_MAX, "the largest id");
    CHECK_INT(bus_id_format(&b, out), 41);
    CHECK(bus_id_cmp(&a, &b) < 0 && bus_id_cmp(&b, &a) > 0 && bus_id_cmp(&a, &a) == 0, "order");
    b = a;
    b.seq++;
    CHECK(bus_id_cmp(&a, &b) < 0, "order by seq within a millisecond");
    CHECK_INT(bus_id_parse("0-0", 3, &a), 0);
    {
        static const char *const bad[] = {"",
                                          "-",
                                          "1-",
                                          "-1",
                                          "1",
                                          "1-2-3",
                                          "a-1",
                                          "1-b",
                                          "+1-1",
                                          "1 -1",
                                          "18446744073709551616-0",
                                          "0-18446744073709551616",
                                          "000000000000000000001-0"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
            CHECK_INT(bus_id_parse(bad[i], strlen(bad[i]), &a), -EPROTO);
    }
}

static void test_xread(void)
{
    struct bus_entry e[4];

    CHECK_INT(xread("*-1\r\n", e, 4), 0); /* BLOCK timed out */
    CHECK_INT(xread("$-1\r\n", e, 4), 0); /* as some proxies spell nil */
    CHECK_INT(xread("*1\r\n*2\r\n$6\r\npurges\r\n*0\r\n", e, 4), 0);
    CHECK_INT(xread("*1\r\n*2\r\n$6\r\npurges\r\n*2\r\n"
                    "*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nm\r\n$5\r\nhello\r\n"
                    "*2\r\n$3\r\n1-1\r\n*4\r\n$1\r\nx\r\n$1\r\ny\r\n$1\r\nm\r\n$1\r\nz\r\n",
                    e, 4),
              2);
    CHECK(e[0].id.ms == 1 && e[0].id.seq == 0 && e[0].msg && e[0].len == 5 &&
              memcmp(e[0].msg, "hello", 5) == 0,
          "the first entry and its message");
    CHECK(e[1].id.seq == 1 && e[1].msg == NULL, "a stranger's fields: no message, the id read");
    /* nil fields (an entry deleted under a consumer group's reader) and one field alone */
    CHECK_INT(xread("*1\r\n*2\r\n$6\r\npurges\r\n*2\r\n*2\r\n$3\r\n5-0\r\n*-1\r\n"
                    "*2\r\n$3\r\n6-0\r\n*1\r\n$1\r\nm\r\n",
                    e, 4),
              2);
    CHECK(e[0].msg == NULL && e[1].msg == NULL, "no message in either");
    /* wrong shapes */
    CHECK_INT(xread("*1\r\n*2\r\n$5\r\nother\r\n*0\r\n", e, 4), -EPROTO);
    CHECK_INT(xread("*2\r\n*2\r\n$6\r\npurges\r\n*0\r\n*2\r\n$6\r\npurges\r\n*0\r\n", e, 4),
              -EPROTO);
    CHECK_INT(xread(":1\r\n", e, 4), -EPROTO);
    CHECK_INT(xread("*1\r\n*2\r\n$6\r\npurges\r\n*1\r\n*2\r\n$3\r\nx-0\r\n*0\r\n", e, 4), -EPROTO);
    CHECK_INT(xread("*1\r\n*2\r\n$6\r\npurges\r\n*1\r\n*2\r\n:1\r\n*0\r\n", e, 4), -EPROTO);
    CHECK_INT(xread("*1\r\n*2\r\n$6\r\npurges\r\n*1\r\n*3\r\n$3\r\n1-0\r\n*0\r\n:1\r\n", e, 4),
              -EPROTO);
    CHECK_INT(xread("*1\r\n*2\r\n$6\r\npurges\r\n*1\r\n*2\r\n$3\r\n1-0\r\n:5\r\n", e, 4), -EPROTO);
    CHECK_INT(xread("*1\r\n*2\r\n$6\r\npurges\r\n*2\r\n*2\r\n$3\r\n2-0\r\n*0\r\n"
                    "*2\r\n$3\r\n1-0\r\n*0\r\n",
                    e, 4),
              -EPROTO); /* ids going back */
    CHECK_INT(xread("*1\r\n*2\r\n$6\r\npurges\r\n*2\r\n*2\r\n$3\r\n1-0\r\n*0\r\n"
                    "*2\r\n$3\r\n2-0\r\n*0\r\n",
                    e, 1),
              -EPROTO); /* more than cap */
}

/* An XINFO STREAM reply as Redis 7 writes it (first-entry given as fe, "" for nil). */
static size_t xinfo_reply(char *buf, size_t cap, long len, const char *last, long added,
                          const char *fe)
{
    char first[128];

    if (*fe)
        snprintf(first, sizeof(first), "*2\r\n$%zu\r\n%s\r\n*2\r\n$1\r\nm\r\n$1\r\nx\r\n",
                 strlen(fe), fe);
    else
        snprintf(first, sizeof(first), "*-1\r\n");
    snprintf(buf, cap,
             "*20\r\n$6\r\nlength\r\n:%ld\r\n$15\r\nradix-tree-keys\r\n:1\r\n"
             "$16\r\nradix-tree-nodes\r\n:2\r\n$17\r\nlast-generated-id\r\n$%zu\r\n%s\r\n"
             "$20\r\nmax-deleted-entry-id\r\n$3\r\n0-0\r\n$13\r\nentries-added\r\n:%ld\r\n"
             "$23\r\nrecorded-first-entry-id\r\n$3\r\n0-0\r\n$6\r\ngroups\r\n:0\r\n"
             "$11\r\nfirst-entry\r\n%s$10\r\nlast-entry\r\n*-1\r\n",
             len, strlen(last), last, added, first);
    return reply(buf);
}

static void test_xinfo_and_sync(void)
{
    char buf[1024];
    struct bus_xinfo x;
    struct bus_pos pos = {0};
    size_t ni;

    ni = xinfo_reply(buf, sizeof(buf), 100, "50-9", 300, "40-0");
    CHECK_INT(bus_xinfo_parse(items, ni, &x), 0);
    CHECK(x.length == 100 && x.last.ms == 50 && x.last.seq == 9 && x.has_added && x.added == 300 &&
              x.has_first && x.first.ms == 40,
          "XINFO STREAM read");
    /* A node that just started reads from the end, no gap. */
    CHECK_INT(bus_sync(&pos, &x), 0);
    CHECK(pos.known && pos.last.ms == 50 && pos.last.seq == 9 && pos.ord == 300, "at the end");
    /* It read 5 more (ordinal 305), was away while 95 more came and the stream kept 100: the
     * oldest held is ordinal 301, nothing after ours is lost. */
    pos.last = (struct bus_id){60, 0};
    pos.ord = 305;
    ni = xinfo_reply(buf, sizeof(buf), 100, "90-0", 400, "55-0");
    CHECK_INT(bus_xinfo_parse(items, ni, &x), 0);
    CHECK_INT(bus_sync(&pos, &x), 0);
    CHECK(pos.last.ms == 60 && pos.ord == 305, "reads on from where it was");
    /* 110 more came: the oldest held is ordinal 311, 306..310 are lost: a gap, read from the end.
     */
    ni = xinfo_reply(buf, sizeof(buf), 100, "95-0", 410, "70-0");
    CHECK_INT(bus_xinfo_parse(items, ni, &x), 0);
    CHECK_INT(bus_sync(&pos, &x), 1);
    CHECK(pos.last.ms == 95 && pos.ord == 410, "after a gap: the end");
    /* Exactly at the edge: the oldest held is ordinal 411, ours 410: no gap. */
    ni = xinfo_reply(buf, sizeof(buf), 100, "99-0", 510, "96-0");
    CHECK_INT(bus_xinfo_parse(items, ni, &x), 0);
    CHECK_INT(bus_sync(&pos, &x), 0);
    /* Recreated (its last id before ours): a gap. */
    ni = xinfo_reply(buf, sizeof(buf), 3, "7-0", 3, "5-0");
    CHECK_INT(bus_xinfo_parse(items, ni, &x), 0);
    CHECK_INT(bus_sync(&pos, &x), 1);
    CHECK(pos.last.ms == 7 && pos.ord == 3, "the recreated stream's end");
    /* Deleted: a gap for a node that had read entries, none for one that never saw any. */
    CHECK_INT(bus_sync(&pos, NULL), 1);
    CHECK(pos.known && pos.last.ms == 0 && pos.ord == 0, "from 0-0");
    CHECK_INT(bus_sync(&pos, NULL), 0);
    {
        struct bus_pos fresh = {0};
        CHECK_INT(bus_sync(&fresh, NULL), 0);
    }
    /* From an empty start (0-0), a stream made meanwhile whose entries are all held: no gap. */
    ni = xinfo_reply(buf, sizeof(buf), 2, "9-0", 2, "8-0");
    CHECK_INT(bus_xinfo_parse(items, ni, &x), 0);
    CHECK_INT(bus_sync(&pos, &x), 0);
    /* Redis 6 (no entries-added): the oldest held after ours is a gap. */
    x.has_added = 0;
    pos = (struct bus_pos){.known = 1, .last = {8, 0}};
    CHECK_INT(bus_sync(&pos, &x), 0);
    pos.last = (struct bus_id){7, 0};
    CHECK_INT(bus_sync(&pos, &x), 1);
    /* A position from the segment's mark has no ordinal: the oldest entry held decides. */
    ni = xinfo_reply(buf, sizeof(buf), 100, "99-0", 510, "96-0");
    CHECK_INT(bus_xinfo_parse(items, ni, &x), 0);
    pos = (struct bus_pos){.known = 1, .last = {96, 0}};
    CHECK_INT(bus_sync(&pos, &x), 0);
    CHECK(pos.last.ms == 96 && !pos.ord_known, "reads on from the mark");
    pos.last = (struct bus_id){95, 0};
    CHECK_INT(bus_sync(&pos, &x), 1);
    CHECK(pos.last.ms == 99 && pos.ord_known && pos.ord == 510, "after a gap: the end, counted");
    /* How far behind: 12 entries and 30 ms; none at the end; entries unknown without an ordinal
     * (a mark) or without entries-added (Redis 6); never negative. */
    {
        uint64_t behind, lag;
        ni = xinfo_reply(buf, sizeof(buf), 100, "130-0", 522, "96-0");
        CHECK_INT(bus_xinfo_parse(items, ni, &x), 0);
        pos = (struct bus_pos){.known = 1, .last = {100, 0}, .ord_known = 1, .ord = 510};
        bus_lag(&pos, &x, &behind, &lag);
        CHECK(behind == 12 && lag == 30, "12 entries and 30 ms behind: %llu, %llu",
              (unsigned long long)behind, (unsigned long long)lag);
        pos = (struct bus_pos){.known = 1, .last = {130, 0}, .ord_known = 1, .ord = 522};
        bus_lag(&pos, &x, &behind, &lag);
        CHECK(behind == 0 && lag == 0, "at the end");
        pos = (struct bus_pos){.known = 1, .last = {125, 0}};
        bus_lag(&pos, &x, &behind, &lag);
        CHECK(behind == 0 && lag == 5, "from a mark: time only");
        x.has_added = 0;
        pos = (struct bus_pos){.known = 1, .last = {140, 0}, .ord_known = 1, .ord = 530};
        bus_lag(&pos, &x, &behind, &lag);
        CHECK(behind == 0 && lag == 0, "ahead (own entries read first), Redis 6");
    }
    /* Wrong shapes */
    ni = reply("*2\r\n$6\r\nlength\r\n:1\r\n");
    CHECK_INT(bus_xinfo_parse(items, ni, &x), -EPROTO); /* no last-generated-id */
    ni = reply("*4\r\n$6\r\nlength\r\n$1\r\n1\r\n$17\r\nlast-generated-id\r\n$3\r\n1-0\r\n");
    CHECK_INT(bus_xinfo_parse(items, ni, &x), -EPROTO); /* a length that is no integer */
    ni = reply("*4\r\n$6\r\nlength\r\n:1\r\n$17\r\nlast-generated-id\r\n$3\r\n1-x\r\n");
    CHECK_INT(bus_xinfo_parse(items, ni, &x), -EPROTO);
    ni = reply("*3\r\n$6\r\nlength\r\n:1\r\n$1\r\nx\r\n");
    CHECK_INT(bus_xinfo_parse(items, ni, &x), -EPROTO); /* odd */
    ni = reply("*4\r\n*1\r\n:1\r\n:1\r\n$17\r\nlast-generated-id\r\n$3\r\n1-0\r\n");
    CHECK_INT(bus_xinfo_parse(items, ni, &x), -EPROTO); /* a name that is an array */
    ni = reply("*6\r\n$6\r\nlength\r\n:1\r\n$17\r\nlast-generated-id\r\n$3\r\n1-0\r\n"
               "$11\r\nfirst-entry\r\n*2\r\n:1\r\n*0\r\n");
    CHECK_INT(bus_xinfo_parse(items, ni, &x), -EPROTO); /* first-entry's id no bulk */
    ni = reply("*4\r\n$6\r\nlength\r\n:1\r\n$17\r\nlast-generated-id\r\n$3\r\n1-0\r\n");
    CHECK_INT(bus_xinfo_parse(items, ni, &x), 0); /* the least Redis can say */
    CHECK(!x.has_added && !x.has_first, "nothing more");
}

int main(void)
{
    test_roundtrip();
    test_rejects();
    test_ids();
    test_xread();
    test_xinfo_and_sync();
    return check_done("test_bus");
}
