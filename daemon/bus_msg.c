/*
 * bus_msg.c — the purge bus's message codec (bus_msg.h; docs/daemon.md, "Bus"): one purge as one
 * short line of text, written by bus_msg_encode and read back by bus_msg_decode; and the readers of
 * Redis's stream replies (entry ids, XREAD's entries, XINFO STREAM) with bus_sync's gap verdict.
 *
 * Pure functions, no I/O. The format is canonical (exactly one spelling per purge: lowercase hex of
 * fixed width, decimal lengths without leading zeros, single spaces, nothing trailing), so the
 * decoder can refuse anything else and the fuzzer can check that what decodes encodes back to the
 * same bytes. The decoder reads bytes anyone who can write to the stream controls: it bounds
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

/* ---- Redis Streams ---- */

/* 1 to 20 decimal digits at s[0, len), at most UINT64_MAX. 0 or -EPROTO. */
static int get_u64(const char *s, size_t len, uint64_t *v)
{
    uint64_t x = 0;

    if (len == 0 || len > 20)
        return -EPROTO;
    for (size_t i = 0; i < len; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (d > 9 || x > (UINT64_MAX - d) / 10)
            return -EPROTO;
        x = x * 10 + d;
    }
    *v = x;
    return 0;
}

int bus_id_parse(const char *s, size_t len, struct bus_id *id)
{
    const char *dash = s ? memchr(s, '-', len) : NULL;

    if (!dash || get_u64(s, (size_t)(dash - s), &id->ms) < 0 ||
        get_u64(dash + 1, len - (size_t)(dash - s) - 1, &id->seq) < 0)
        return -EPROTO;
    return 0;
}

int bus_id_format(const struct bus_id *id, char out[BUS_ID_MAX])
{
    return snprintf(out, BUS_ID_MAX, "%llu-%llu", (unsigned long long)id->ms,
                    (unsigned long long)id->seq);
}

int bus_id_cmp(const struct bus_id *a, const struct bus_id *b)
{
    if (a->ms != b->ms)
        return a->ms < b->ms ? -1 : 1;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static int is_nil(const struct resp_item *it)
{
    return (it->type == RESP_ARRAY || it->type == RESP_BULK) && it->n == -1;
}

static int is_str(const struct resp_item *it, const char *s)
{
    size_t n = strlen(s);

    return (it->type == RESP_BULK || it->type == RESP_SIMPLE) && it->p && it->len == n &&
           memcmp(it->p, s, n) == 0;
}

int bus_xread_entries(const struct resp_item *r, size_t n, const char *stream, size_t slen,
                      struct bus_entry *out, size_t cap)
{
    size_t i, k = 0;
    int64_t count;

    if (n >= 1 && is_nil(&r[0]))
        return 0;
    /* [[stream, [entries]]]: items 0 (1 stream), 1 (its pair), 2 (name), 3 (its entries) */
    if (n < 4 || r[0].type != RESP_ARRAY || r[0].n != 1 || r[1].type != RESP_ARRAY || r[1].n != 2 ||
        r[2].type != RESP_BULK || !r[2].p || r[2].len != slen ||
        memcmp(r[2].p, stream, slen) != 0 || r[3].type != RESP_ARRAY || r[3].n < 0 || r[3].next > n)
        return -EPROTO;
    count = r[3].n;
    for (i = 4; count > 0; count--) {
        const struct resp_item *e = &r[i], *fields;
        struct bus_entry *o;

        if (i + 3 > n || k == cap || e->type != RESP_ARRAY || e->n != 2 || e->next > n ||
            r[i + 1].type != RESP_BULK || !r[i + 1].p)
            return -EPROTO;
        o = &out[k];
        if (bus_id_parse(r[i + 1].p, r[i + 1].len, &o->id) < 0 ||
            (k > 0 && bus_id_cmp(&o->id, &out[k - 1].id) <= 0))
            return -EPROTO;
        fields = &r[i + 2];
        o->msg = NULL;
        o->len = 0;
        if (fields->type == RESP_ARRAY && fields->n == 2 && i + 4 < n && is_str(&r[i + 3], "m") &&
            r[i + 4].type == RESP_BULK && r[i + 4].p) {
            o->msg = r[i + 4].p;
            o->len = r[i + 4].len;
        } else if (fields->type != RESP_ARRAY && !is_nil(fields)) {
            return -EPROTO;
        }
        k++;
        i = e->next;
    }
    return i == r[0].next ? (int)k : -EPROTO;
}

int bus_xinfo_parse(const struct resp_item *r, size_t n, struct bus_xinfo *x)
{
    int has_len = 0, has_last = 0;
    size_t i;
    int64_t pairs;

    memset(x, 0, sizeof(*x));
    if (n < 1 || r[0].type != RESP_ARRAY || r[0].n < 0 || r[0].n % 2 != 0 || r[0].next > n)
        return -EPROTO;
    for (i = 1, pairs = r[0].n / 2; pairs > 0; pairs--) {
        const struct resp_item *k = &r[i], *v;

        if (i + 1 >= n || k->next != i + 1)
            return -EPROTO;
        v = &r[i + 1];
        if (is_str(k, "length")) {
            if (v->type != RESP_INT || v->n < 0)
                return -EPROTO;
            x->length = v->n;
            has_len = 1;
        } else if (is_str(k, "last-generated-id")) {
            if (v->type != RESP_BULK || bus_id_parse(v->p, v->len, &x->last) < 0)
                return -EPROTO;
            has_last = 1;
        } else if (is_str(k, "entries-added")) {
            if (v->type != RESP_INT || v->n < 0)
                return -EPROTO;
            x->added = v->n;
            x->has_added = 1;
        } else if (is_str(k, "first-entry") && !is_nil(v)) {
            if (v->type != RESP_ARRAY || v->n != 2 || i + 2 >= n || r[i + 2].type != RESP_BULK ||
                bus_id_parse(r[i + 2].p, r[i + 2].len, &x->first) < 0)
                return -EPROTO;
            x->has_first = 1;
        }
        if (v->next > n || v->next <= i + 1)
            return -EPROTO;
        i = v->next;
    }
    return has_len && has_last ? 0 : -EPROTO;
}

int bus_sync(struct bus_pos *pos, const struct bus_xinfo *x)
{
    static const struct bus_id zero;
    int gap = 0;

    if (!x) { /* no stream: a gap if it held entries this node knew */
        gap = pos->known && bus_id_cmp(&pos->last, &zero) != 0;
        pos->known = pos->ord_known = 1;
        pos->last = zero;
        pos->ord = 0;
        return gap;
    }
    if (pos->known) {
        if (bus_id_cmp(&x->last, &pos->last) < 0) /* recreated: what it held after us is gone */
            gap = 1;
        else if (x->has_added && pos->ord_known) /* trimming takes the oldest: more gone than
                                                     we read is a gap */
            gap = x->added < x->length || (uint64_t)x->added < pos->ord ||
                  (uint64_t)(x->added - x->length) > pos->ord;
        else if (x->has_first) /* the oldest entry held came after ours */
            gap = bus_id_cmp(&x->first, &pos->last) > 0;
        else /* empty, and it had entries after ours */
            gap = bus_id_cmp(&x->last, &pos->last) > 0;
        if (!gap)
            return 0;
    }
    pos->known = 1;
    pos->last = x->last;
    pos->ord_known = x->has_added;
    pos->ord = x->has_added ? (uint64_t)x->added : 0;
    return gap;
}

void bus_lag(const struct bus_pos *pos, const struct bus_xinfo *x, uint64_t *behind,
             uint64_t *lag_ms)
{
    *behind = x->has_added && pos->ord_known && x->added > 0 && (uint64_t)x->added > pos->ord
                  ? (uint64_t)x->added - pos->ord
                  : 0;
    *lag_ms = x->last.ms > pos->last.ms ? x->last.ms - pos->last.ms : 0;
}
