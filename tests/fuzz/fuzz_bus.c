/*
 * fuzz_bus.c — libFuzzer target for the purge bus's two decoders (daemon/bus.c), the code that
 * reads bytes anyone who can publish on the Redis channel (or pose as Redis) controls.
 *
 * The first byte picks what the rest (as an exact-size heap copy, so ASan sees any over-read) is
 * fed to:
 *   0  bus_msg_decode: only 0 / BUS_MSG_OWN / -EPROTO / -E2BIG, a reason on failure, a user name
 * inside the input and within BUS_MSG_USER_MAX, 1..2 digests; and the format is canonical: what
 * decodes encodes back to exactly the same bytes; 1  bus_resp_parse, as the bus thread uses it on a
 * stream: reply after reply until partial or bad, each taking between 1 and the bytes left, every
 * string inside the input, counts and lengths within their limits, and every proper prefix of a
 * whole reply partial; an array of bulk strings written again with bus_resp_command parses to the
 * same strings; 2  bus_msg_encode then bus_msg_decode of a purge built from the bytes: the same
 * purge comes back. Seeds: tests/fuzz/corpus/bus/.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
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

static void check_item(const char *in, size_t n, const struct bus_resp_item *it, size_t max_bulk)
{
    switch (it->type) {
    case '+':
    case '-':
        must(it->len <= BUS_RESP_LINE_MAX && inside(in, n, it->p, it->len));
        must(!memchr(it->p, '\r', it->len) && !memchr(it->p, '\n', it->len));
        break;
    case ':':
        break;
    case '$':
        must(it->n >= -1);
        if (it->n == -1)
            must(it->p == NULL);
        else
            must((size_t)it->n == it->len && it->len <= max_bulk && inside(in, n, it->p, it->len));
        break;
    default:
        must(!"a scalar type");
    }
}

static void fuzz_resp(const char *in, size_t n, size_t max_bulk)
{
    size_t off = 0;

    for (;;) {
        struct bus_resp r;
        ssize_t k = bus_resp_parse(in + off, n - off, max_bulk, &r);

        must(k == 0 || k == -EPROTO || k == -E2BIG || (k > 0 && (size_t)k <= n - off));
        if (k <= 0)
            return;
        if (r.top.type == '*') {
            int all_bulk = 1;
            must(r.top.n >= -1 && r.top.n <= BUS_RESP_MAX_ELEMS);
            must(r.nelem == (size_t)(r.top.n < 0 ? 0 : r.top.n));
            for (size_t i = 0; i < r.nelem; i++) {
                check_item(in + off, (size_t)k, &r.elem[i], max_bulk);
                all_bulk &= r.elem[i].type == '$' && r.elem[i].p != NULL;
            }
            if (all_bulk && r.nelem > 0) {
                const char *argv[BUS_RESP_MAX_ELEMS];
                size_t lens[BUS_RESP_MAX_ELEMS], cap = (size_t)k + 64;
                char *w = malloc(cap);
                struct bus_resp again;
                int wl;
                for (size_t i = 0; i < r.nelem; i++) {
                    argv[i] = r.elem[i].p;
                    lens[i] = r.elem[i].len;
                }
                wl = bus_resp_command(w, cap, (int)r.nelem, argv, lens);
                must(wl > 0 && (size_t)wl <= (size_t)k);
                must(bus_resp_parse(w, (size_t)wl, max_bulk, &again) == wl);
                must(again.nelem == r.nelem);
                for (size_t i = 0; i < r.nelem; i++)
                    must(again.elem[i].len == r.elem[i].len &&
                         memcmp(again.elem[i].p, r.elem[i].p, r.elem[i].len) == 0);
                free(w);
            }
        } else {
            must(r.nelem == 0);
            check_item(in + off, (size_t)k, &r.top, max_bulk);
        }
        /* Every proper prefix of a whole reply is partial (checked on short replies: quadratic). */
        if (k <= 256) {
            for (ssize_t p = 0; p < k; p++) {
                struct bus_resp q;
                char *cut = malloc((size_t)p + 1);
                memcpy(cut, in + off, (size_t)p);
                must(bus_resp_parse(cut, (size_t)p, max_bulk, &q) == 0);
                free(cut);
            }
        }
        off += (size_t)k;
    }
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy;

    if (size < 1)
        return 0;
    copy = malloc(size - 1 ? size - 1 : 1);
    memcpy(copy, data + 1, size - 1);
    switch (data[0] % 3) {
    case 0:
        fuzz_decode(copy, size - 1);
        break;
    case 1:
        /* The bus thread's two limits, and a tiny one so the E2BIG paths are reached. */
        fuzz_resp(copy, size - 1, data[0] & 0x80 ? 16 : (1u << 20) - 1024);
        break;
    case 2:
        fuzz_roundtrip((const uint8_t *)copy, size - 1);
        break;
    }
    free(copy);
    return 0;
}
