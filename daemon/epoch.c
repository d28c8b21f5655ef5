/*
 * epoch.c — purge stamps (epoch.h says what they are for and why the order holds).
 *
 * Two tables of EPOCH_SLOTS stamps, one for user names and one for credential digests, plus one
 * stamp for "everything". A stamp only grows (a compare-and-swap maximum), so two purges racing on
 * one slot leave the later number.
 */
#include <stdlib.h>
#include <xxhash.h>

#include "epoch.h"

#define EPOCH_SLOTS 4096u /* a power of two */

struct epochs {
    uint64_t seq; /* the last number handed out */
    uint64_t all;
    uint64_t user[EPOCH_SLOTS];
    uint64_t cred[EPOCH_SLOTS];
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

static void stamp(struct epochs *e, uint64_t *slot)
{
    uint64_t s = __atomic_add_fetch(&e->seq, 1, __ATOMIC_SEQ_CST);
    uint64_t old = __atomic_load_n(slot, __ATOMIC_SEQ_CST);

    while (old < s &&
           !__atomic_compare_exchange_n(slot, &old, s, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        ;
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

void epoch_purge_user(struct epochs *e, const char *user, size_t len)
{
    stamp(e, &e->user[user_slot(user, len)]);
}

void epoch_purge_cred(struct epochs *e, const uint8_t cred[SHM_CRED_LEN])
{
    stamp(e, &e->cred[cred_slot(cred)]);
}

void epoch_purge_all(struct epochs *e)
{
    stamp(e, &e->all);
}

int epoch_covered(struct epochs *e, uint64_t since, const char *user, size_t len,
                  const uint8_t cred[SHM_CRED_LEN])
{
    if (__atomic_load_n(&e->all, __ATOMIC_SEQ_CST) > since)
        return 1;
    if (len && __atomic_load_n(&e->user[user_slot(user, len)], __ATOMIC_SEQ_CST) > since)
        return 1;
    return cred && __atomic_load_n(&e->cred[cred_slot(cred)], __ATOMIC_SEQ_CST) > since;
}
