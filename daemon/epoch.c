/*
 * epoch.c — purge stamps (epoch.h says what they are for and why the order holds).
 *
 * Two tables of EPOCH_SLOTS stamps, one for user names and one for credential digests, plus one
 * stamp for "everything"; each stamp is a sequence number and a wall time. Both only grow (a
 * compare-and-swap maximum), so two purges racing on one slot leave the later of each.
 */
#include <stdlib.h>
#include <xxhash.h>

#include "epoch.h"

#define EPOCH_SLOTS                                                                                \
    65536u /* a power of two: 2 MiB of stamps; under a flood of sign-outs of unknown               \
            * sessions, each hides 1/65536 of the answers until the IdP confirms them */

struct stamp {
    uint64_t seq;
    int64_t wall_ms;
};

struct epochs {
    uint64_t seq; /* the last number handed out */
    struct stamp all;
    struct stamp user[EPOCH_SLOTS];
    struct stamp cred[EPOCH_SLOTS];
};

struct epochs *epoch_new(void)
{
    return calloc(1, sizeof(struct epochs));
}

void epoch_free(struct epochs *e)
{
    free(e);
}

uint64_t epoch_now(struct epochs *e)
{
    return __atomic_load_n(&e->seq, __ATOMIC_SEQ_CST);
}

static void raise_u64(uint64_t *p, uint64_t v)
{
    uint64_t old = __atomic_load_n(p, __ATOMIC_SEQ_CST);

    while (old < v &&
           !__atomic_compare_exchange_n(p, &old, v, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        ;
}

static void raise_i64(int64_t *p, int64_t v)
{
    int64_t old = __atomic_load_n(p, __ATOMIC_SEQ_CST);

    while (old < v &&
           !__atomic_compare_exchange_n(p, &old, v, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        ;
}

static void stamp(struct epochs *e, struct stamp *st, int64_t now_ms)
{
    raise_i64(&st->wall_ms, now_ms);
    raise_u64(&st->seq, __atomic_add_fetch(&e->seq, 1, __ATOMIC_SEQ_CST));
}

static uint32_t user_slot(const char *user, size_t len)
{
    if (len > SHM_MAX_USER)
        len = SHM_MAX_USER;
    return (uint32_t)XXH3_64bits(user, len) & (EPOCH_SLOTS - 1);
}

static uint32_t cred_slot(const uint8_t cred[SHM_CRED_LEN])
{
    return (uint32_t)XXH3_64bits(cred, SHM_CRED_LEN) & (EPOCH_SLOTS - 1);
}

void epoch_purge_user(struct epochs *e, const char *user, size_t len, int64_t now_ms)
{
    stamp(e, &e->user[user_slot(user, len)], now_ms);
}

void epoch_purge_cred(struct epochs *e, const uint8_t cred[SHM_CRED_LEN], int64_t now_ms)
{
    stamp(e, &e->cred[cred_slot(cred)], now_ms);
}

void epoch_purge_all(struct epochs *e, int64_t now_ms)
{
    stamp(e, &e->all, now_ms);
}

int epoch_covered(struct epochs *e, uint64_t since, const char *user, size_t len,
                  const uint8_t cred[SHM_CRED_LEN])
{
    if (__atomic_load_n(&e->all.seq, __ATOMIC_SEQ_CST) > since)
        return 1;
    if (len && __atomic_load_n(&e->user[user_slot(user, len)].seq, __ATOMIC_SEQ_CST) > since)
        return 1;
    return cred && __atomic_load_n(&e->cred[cred_slot(cred)].seq, __ATOMIC_SEQ_CST) > since;
}

int64_t epoch_last_ms(struct epochs *e, const char *user, size_t len,
                      const uint8_t cred[SHM_CRED_LEN])
{
    int64_t t = __atomic_load_n(&e->all.wall_ms, __ATOMIC_ACQUIRE), u;

    if (len && (u = __atomic_load_n(&e->user[user_slot(user, len)].wall_ms, __ATOMIC_ACQUIRE)) > t)
        t = u;
    if (cred && (u = __atomic_load_n(&e->cred[cred_slot(cred)].wall_ms, __ATOMIC_ACQUIRE)) > t)
        t = u;
    return t;
}
