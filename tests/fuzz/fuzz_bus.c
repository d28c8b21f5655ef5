/*
 * fuzz_bus.c — libFuzzer target for the purge bus's message codec (daemon/bus_msg.c), the code that
 * reads bytes anyone who can write to the Redis stream controls, and for its readers of Redis's
 * stream replies (XREAD's entries, XINFO STREAM, and the gap verdict bus_sync draws from it). (The
 * RESP2 framing itself is read by resp.c: tests/fuzz/fuzz_resp.c.)
 *
 * The first byte picks what the rest (as an exact-size heap copy, so ASan sees any over-read) is
 * fed to, by its value modulo 4:
 *
 *     0     bus_msg_decode: only 0 / BUS_MSG_OWN / -EPROTO / -E2BIG, a reason on failure, a user
 *           name inside the input and within BUS_MSG_USER_MAX, 1..2 digests; and the format is
 *           canonical: what decodes encodes back to exactly the same bytes;
 *     1, 2  bus_msg_encode then bus_msg_decode of a purge built from the bytes: the same purge
 *           comes back (1 once picked RESP2, now in fuzz_resp; the seeds keep their meaning);
 *     3     the rest's first byte is a position (its bits: known, and the low bits of the last id
 *           and ordinal), the bytes after it one RESP reply as the bus thread parses it; that
 *           reply is read as XREAD's (entries at most the cap, ids increasing, every message
 *           inside the input, and each entry's message fed to bus_msg_decode too) and as XINFO
 *           STREAM's, and what that gives goes to bus_sync: 0 or 1, a known position after, at
 *           the stream's last id after a gap or for an unknown start.
 *
 * Seeds: tests/fuzz/corpus/bus/.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus_msg.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SELF UINT64_C(0x00000000000000aa)

static void fuzz_decode(const char *in, size_t n)
{
    struct bus_msg m;
    const char *why = NULL;
    char out[BUS_MSG_MAX];
    int rc = bus_msg_decode(in, n, SELF, &m, &why), k;

    must(rc == 0 || rc == BUS_MSG_OWN || rc == -EPROTO || rc == -E2BIG);
    if (rc < 0) {
        must(why && *why);
        must(rc != -E2BIG || n > BUS_MSG_MAX);
        return;
    }
    must(n <= BUS_MSG_MAX);
    must((rc == BUS_MSG_OWN) == (m.node == SELF));
    switch (m.p.kind) {
    case PURGE_USER:
        must(m.p.user_len >= 1 && m.p.user_len <= BUS_MSG_USER_MAX);
        must(inside(in, n, m.p.user, m.p.user_len));
        break;
    case PURGE_CREDS:
        must(m.p.ncred >= 1 && m.p.ncred <= PURGE_MAX_CREDS);
        break;
    case PURGE_ALL:
        break;
    default:
        must(!"a kind");
    }
    k = bus_msg_encode(m.node, m.key_id, &m.p, out, sizeof(out));
    must(k > 0 && (size_t)k == n && memcmp(out, in, n) == 0);
}

static void fuzz_roundtrip(const uint8_t *d, size_t n)
{
    struct purge p = {0};
    struct bus_msg m;
    uint8_t key_id[SHM_CRED_LEN] = {0};
    uint64_t node = 0;
    char out[BUS_MSG_MAX];
    const char *why;
    int k;

    if (n < 1 + 8 + 8)
        return;
    for (int i = 0; i < 8; i++)
        node = node << 8 | d[1 + i];
    memcpy(key_id, d + 9, SHM_CRED_LEN);
    p.kind = (enum purge_kind)(d[0] % 4); /* 0 is no kind */
    d += 17;
    n -= 17;
    if (p.kind == PURGE_USER) {
        p.user = (const char *)d;
        p.user_len = n;
    } else if (p.kind == PURGE_CREDS) {
        p.ncred = n >= 2 * SHM_CRED_LEN ? 2 : 1;
        for (unsigned i = 0; i < p.ncred; i++)
            for (unsigned j = 0; j < SHM_CRED_LEN; j++)
                p.cred[i][j] = i * SHM_CRED_LEN + j < n ? d[i * SHM_CRED_LEN + j] : 0;
    }
    k = bus_msg_encode(node, key_id, &p, out, sizeof(out));
    if (p.kind == 0 || (p.kind == PURGE_USER && (n == 0 || n > BUS_MSG_USER_MAX))) {
        must(k == -EINVAL);
        return;
    }
    must(k > 0 && k <= BUS_MSG_MAX);
    must(bus_msg_decode(out, (size_t)k, node, &m, &why) == BUS_MSG_OWN);
    must(bus_msg_decode(out, (size_t)k, ~node, &m, &why) == 0);
    must(m.node == node && m.p.kind == p.kind);
    if (p.kind == PURGE_USER)
        must(m.p.user_len == p.user_len && memcmp(m.p.user, p.user, p.user_len) == 0);
    if (p.kind == PURGE_CREDS)
        must(m.p.ncred == p.ncred && memcmp(m.p.cred, p.cred, sizeof(p.cred)) == 0 &&
             memcmp(m.key_id, key_id, SHM_CRED_LEN) == 0);
}

#define STREAM "authcache"
#define ITEMS 512
#define ENTRIES 16

static void fuzz_stream(const char *in, size_t n)
{
    static const struct resp_limits lim = {.max_bulk = 4096, .max_depth = 5};
    static struct resp_item items[ITEMS];
    struct bus_entry e[ENTRIES];
    struct bus_xinfo x;
    struct bus_pos pos = {0};
    size_t ni = 0;
    ssize_t got;
    int k;

    if (n < 1)
        return;
    pos.known = in[0] & 1;
    pos.last.ms = (uint8_t)in[0] >> 1 & 7;
    pos.ord = (uint8_t)in[0] >> 4;
    in++;
    n--;
    got = resp_parse(in, n, &lim, items, ITEMS, &ni);
    if (got <= 0)
        return;
    k = bus_xread_entries(items, ni, STREAM, strlen(STREAM), e, ENTRIES);
    must(k == -EPROTO || (k >= 0 && k <= ENTRIES));
    for (int i = 0; i < k; i++) {
        struct bus_msg m;
        const char *why;

        must(i == 0 || bus_id_cmp(&e[i - 1].id, &e[i].id) < 0);
        if (!e[i].msg)
            continue;
        must(inside(in, (size_t)got, e[i].msg, e[i].len));
        bus_msg_decode(e[i].msg, e[i].len, SELF, &m, &why);
    }
    if (bus_xinfo_parse(items, ni, &x) == 0) {
        struct bus_pos before = pos;
        int gap;

        must(x.length >= 0 && (!x.has_added || x.added >= 0));
        gap = bus_sync(&pos, &x);
        must(gap == 0 || gap == 1);
        must(pos.known);
        if (gap || !before.known)
            must(bus_id_cmp(&pos.last, &x.last) == 0);
        else
            must(bus_id_cmp(&pos.last, &before.last) == 0 && pos.ord == before.ord);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy;

    if (size < 1)
        return 0;
    copy = malloc(size - 1 ? size - 1 : 1);
    memcpy(copy, data + 1, size - 1);
    if (data[0] % 4 == 0)
        fuzz_decode(copy, size - 1);
    else if (data[0] % 4 == 3)
        fuzz_stream(copy, size - 1);
    else
        fuzz_roundtrip((const uint8_t *)copy, size - 1);
    free(copy);
    return 0;
}
