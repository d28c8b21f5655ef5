/*
 * bus_msg.c — the purge bus's message codec (bus_msg.h; docs/daemon.md, "Bus"): one purge as one
 * short line of text, written by bus_msg_encode and read back by bus_msg_decode.
 *
 * Pure functions, no I/O. The format is canonical (exactly one spelling per purge: lowercase hex of
 * fixed width, decimal lengths without leading zeros, single spaces, nothing trailing), so the
 * decoder can refuse anything else and the fuzzer can check that what decodes encodes back to the
 * same bytes. The decoder reads bytes anyone who can publish on the channel controls: it bounds
 * every field, reads only inside [in, in + len) and allocates nothing.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "bus_msg.h"

static const char hexdig[] = "0123456789abcdef";

static char *put_hex(char *o, const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        *o++ = hexdig[b[i] >> 4];
        *o++ = hexdig[b[i] & 15];
    }
    return o;
}

/* Exactly 2 * n lowercase hex digits at p into out. 0 or -EPROTO. */
static int get_hex(const char *p, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < 2 * n; i++) {
        int v;
        if (p[i] >= '0' && p[i] <= '9')
            v = p[i] - '0';
        else if (p[i] >= 'a' && p[i] <= 'f')
            v = p[i] - 'a' + 10;
        else
            return -EPROTO;
        if (i % 2 == 0)
            out[i / 2] = (uint8_t)(v << 4);
        else
            out[i / 2] |= (uint8_t)v;
    }
    return 0;
}

int bus_msg_encode(uint64_t node, const uint8_t key_id[SHM_CRED_LEN], const struct purge *p,
                   char *out, size_t cap)
{
    char buf[BUS_MSG_MAX], *o = buf;
    uint8_t nb[8];

    for (int i = 0; i < 8; i++)
        nb[i] = (uint8_t)(node >> (56 - 8 * i));
    memcpy(o, BUS_MSG_VERSION " ", 3);
    o = put_hex(o + 3, nb, 8);
    switch (p->kind) {
    case PURGE_ALL:
        memcpy(o, " all", 4);
        o += 4;
        break;
    case PURGE_USER:
        if (p->user_len == 0 || p->user_len > BUS_MSG_USER_MAX || !p->user)
            return -EINVAL;
        o += sprintf(o, " user %zu:", p->user_len);
        memcpy(o, p->user, p->user_len);
        o += p->user_len;
        break;
    case PURGE_CREDS:
        if (p->ncred == 0 || p->ncred > PURGE_MAX_CREDS)
            return -EINVAL;
        memcpy(o, " session ", 9);
        o = put_hex(o + 9, key_id, SHM_CRED_LEN);
        for (unsigned i = 0; i < p->ncred; i++) {
            *o++ = ' ';
            o = put_hex(o, p->cred[i], SHM_CRED_LEN);
        }
        break;
    default:
        return -EINVAL;
    }
    if ((size_t)(o - buf) > cap)
        return -ENOSPC;
    memcpy(out, buf, (size_t)(o - buf));
    return (int)(o - buf);
}

/* in[0, len) starts with the literal s. */
static int starts(const char *in, size_t len, const char *s)
{
    size_t n = strlen(s);

    return len >= n && memcmp(in, s, n) == 0;
}

#define BAD(what)                                                                                  \
    do {                                                                                           \
        *why = (what);                                                                             \
        return -EPROTO;                                                                            \
    } while (0)

int bus_msg_decode(const char *in, size_t len, uint64_t self, struct bus_msg *m, const char **why)
{
    const char *p = in, *end = in + len;
    uint8_t nb[8];

    memset(m, 0, sizeof(*m));
    *why = NULL;
    if (len > BUS_MSG_MAX) {
        *why = "longer than " /* BUS_MSG_MAX */ "600 bytes";
        return -E2BIG;
    }
    if (!starts(p, len, BUS_MSG_VERSION " "))
        BAD("not a v1 message");
    p += 3;
    if (end - p < 17 || get_hex(p, nb, 8) < 0 || p[16] != ' ')
        BAD("bad node id");
    for (int i = 0; i < 8; i++)
        m->node = m->node << 8 | nb[i];
    p += 17;
    if ((size_t)(end - p) == 3 && memcmp(p, "all", 3) == 0) {
        m->p.kind = PURGE_ALL;
    } else if (starts(p, (size_t)(end - p), "user ")) {
        size_t n = 0;
        const char *d = p += 5;
        while (p < end && *p >= '0' && *p <= '9' && p - d < 4)
            n = n * 10 + (size_t)(*p++ - '0');
        if (p == d || p - d > 3 || *d == '0' || p == end || *p != ':')
            BAD("bad user name length");
        if (n > BUS_MSG_USER_MAX)
            BAD("user name too long");
        p++;
        if ((size_t)(end - p) != n)
            BAD("user name length does not match");
        m->p.kind = PURGE_USER;
        m->p.user = p;
        m->p.user_len = n;
    } else if (starts(p, (size_t)(end - p), "session ")) {
        p += 8;
        if (end - p < 16 || get_hex(p, m->key_id, SHM_CRED_LEN) < 0)
            BAD("bad key id");
        p += 16;
        while (p < end) {
            if (m->p.ncred == PURGE_MAX_CREDS)
                BAD("too many digests");
            if (end - p < 17 || *p != ' ' ||
                get_hex(p + 1, m->p.cred[m->p.ncred], SHM_CRED_LEN) < 0)
                BAD("bad session digest");
            m->p.ncred++;
            p += 17;
        }
        if (m->p.ncred == 0)
            BAD("no session digest");
        m->p.kind = PURGE_CREDS;
    } else {
        BAD("unknown kind of purge");
    }
    return m->node == self ? BUS_MSG_OWN : 0;
}

void bus_msg_key_id(const struct shm *h, uint8_t out[SHM_CRED_LEN])
{
    static const char label[] = "authcache bus hash-key id";

    /* Kind 0 is no credential kind (SHM_CRED_* start at 1): this can equal no session's digest. */
    shm_key_cred(h, 0, label, sizeof(label) - 1, out);
}
