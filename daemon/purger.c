/*
 * purger.c — the purge thread (purger.h says why it exists).
 *
 * A bounded queue under one mutex, and one thread that takes everything queued at once and runs it
 * as one batch: one walk of the table for the whole batch (shm_purge_set), and, for sign-outs of
 * sessions this node could not name, one more walk that finds their users first. A flood of
 * sign-outs thus costs a walk per batch, not per sign-out. A full queue is not an error: the caller
 * runs its purge itself (slower, never lost). The stamp that makes a purge effective was set before
 * it was queued, so when the walk happens changes nothing anyone is served.
 */
#include <errno.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "epoch.h"
#include "log.h"
#include "purger.h"

#define PURGER_QUEUE 1024
#define FIND_USERS_MAX 1024 /* users found among the sessions of one batch */

struct purger_item {
    struct purge p;
    int find_users;
    char why[96];
    char user[SHM_MAX_USER];
};

struct purger {
    struct daemon *d;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stopping;
    unsigned head, n;
    struct purger_item q[PURGER_QUEUE];
    /* the batch being run (the thread's own) */
    struct purger_item batch[PURGER_QUEUE];
    uint64_t creds[PURGER_QUEUE * PURGE_MAX_CREDS], find[PURGER_QUEUE * PURGE_MAX_CREDS];
    uint64_t users[PURGER_QUEUE + FIND_USERS_MAX];
    size_t nfind, nfound;
    struct purge found[FIND_USERS_MAX];
    char found_user[FIND_USERS_MAX][SHM_MAX_USER];
};

/* The users of the answers whose credential is in pg->find (sorted): each once. */
static int find_fn(const struct shm_answer *a, void *arg)
{
    struct purger *pg = arg;
    uint64_t c;
    size_t lo = 0, hi = pg->nfind;

    memcpy(&c, a->key.cred, sizeof(c));
    while (lo < hi && pg->find[lo + (hi - lo) / 2] != c) {
        if (pg->find[lo + (hi - lo) / 2] < c)
            lo = lo + (hi - lo) / 2 + 1;
        else
            hi = lo + (hi - lo) / 2;
    }
    if (lo >= hi || a->user_len == 0 || a->user_len > SHM_MAX_USER)
        return 0;
    for (size_t i = 0; i < pg->nfound; i++)
        if (pg->found[i].user_len == a->user_len &&
            memcmp(pg->found_user[i], a->user, a->user_len) == 0)
            return 0;
    memcpy(pg->found_user[pg->nfound], a->user, a->user_len);
    pg->found[pg->nfound] = (struct purge){
        .kind = PURGE_USER, .user = pg->found_user[pg->nfound], .user_len = a->user_len};
    return ++pg->nfound == FIND_USERS_MAX;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Run n purges (stamped already) on the segment with one walk (two with users to find). */
static void run_batch(struct purger *pg, struct purger_item *it, size_t n)
{
    struct daemon *d = pg->d;
    struct shm_purge_set set = {pg->creds, 0, pg->users, 0, 0};
    int removed;

    for (size_t i = 0; i < n; i++)
        if (it[i].p.kind == PURGE_ALL) { /* covers the rest */
            removed = shm_purge_all(&d->shm);
            daemon__purged(d, removed, "all", it[i].why);
            return;
        }
    pg->nfind = pg->nfound = 0;
    for (size_t i = 0; i < n; i++) {
        if (it[i].p.kind == PURGE_USER) {
            set.users[set.nusers++] = shm_user_hash(it[i].user, it[i].p.user_len);
            continue;
        }
        for (unsigned k = 0; k < it[i].p.ncred && k < PURGE_MAX_CREDS; k++) {
            memcpy(&set.creds[set.ncreds++], it[i].p.cred[k], sizeof(uint64_t));
            if (it[i].find_users)
                memcpy(&pg->find[pg->nfind++], it[i].p.cred[k], sizeof(uint64_t));
        }
    }
    if (pg->nfind) { /* before the answers that name them go */
        qsort(pg->find, pg->nfind, sizeof(*pg->find), cmp_u64);
        shm_foreach(&d->shm, daemon_now_ms(), find_fn, pg);
        for (size_t i = 0; i < pg->nfound; i++) {
            daemon__purge_announce(d, &pg->found[i]);
            set.users[set.nusers++] = shm_user_hash(pg->found_user[i], pg->found[i].user_len);
        }
    }
    shm_purge_set_sort(&set);
    removed = shm_purge_set(&d->shm, &set);
    if (n == 1 && it[0].p.kind == PURGE_USER && pg->nfound == 0)
        daemon__purged_user(d, removed, it[0].user, it[0].p.user_len, it[0].why);
    else
        daemon__purged_batch(d, removed, n, pg->nfound, it[0].why);
}

static void *purger_main(void *arg)
{
    struct purger *pg = arg;
    size_t n;

    pthread_mutex_lock(&pg->mu);
    for (;;) {
        while (pg->n == 0 && !pg->stopping)
            pthread_cond_wait(&pg->cv, &pg->mu);
        if (pg->n == 0)
            break;
        for (n = 0; pg->n; n++, pg->n--, pg->head = (pg->head + 1) % PURGER_QUEUE)
            pg->batch[n] = pg->q[pg->head];
        pthread_mutex_unlock(&pg->mu);
        run_batch(pg, pg->batch, n);
        pthread_mutex_lock(&pg->mu);
    }
    pthread_mutex_unlock(&pg->mu);
    return NULL;
}

int purger_start(struct daemon *d, struct purger **out)
{
    struct purger *pg = calloc(1, sizeof(*pg));
    int rc;

    *out = NULL;
    if (!pg)
        return -ENOMEM;
    pg->d = d;
    pthread_mutex_init(&pg->mu, NULL);
    pthread_cond_init(&pg->cv, NULL);
    if ((rc = pthread_create(&pg->thread, NULL, purger_main, pg)) != 0) {
        pthread_cond_destroy(&pg->cv);
        pthread_mutex_destroy(&pg->mu);
        free(pg);
        return -rc;
    }
    *out = pg;
    return 0;
}

int purger_queue(struct purger *pg, const struct purge *p, int find_users, const char *why)
{
    struct purger_item *it;

    pthread_mutex_lock(&pg->mu);
    if (pg->n == PURGER_QUEUE || pg->stopping) {
        pthread_mutex_unlock(&pg->mu);
        return -ENOSPC;
    }
    it = &pg->q[(pg->head + pg->n) % PURGER_QUEUE];
    it->p = *p;
    it->find_users = find_users;
    snprintf(it->why, sizeof(it->why), "%s", why);
    if (p->kind == PURGE_USER) {
        it->p.user_len = p->user_len < SHM_MAX_USER ? p->user_len : SHM_MAX_USER;
        memcpy(it->user, p->user, it->p.user_len);
        it->p.user = NULL; /* the item is copied: its user is it->user */
    }
    pg->n++;
    pthread_cond_signal(&pg->cv);
    pthread_mutex_unlock(&pg->mu);
    return 0;
}

void purger_stop(struct purger *pg)
{
    if (!pg)
        return;
    pthread_mutex_lock(&pg->mu);
    pg->stopping = 1;
    pthread_cond_signal(&pg->cv);
    pthread_mutex_unlock(&pg->mu);
    pthread_join(pg->thread, NULL);
    pthread_cond_destroy(&pg->cv);
    pthread_mutex_destroy(&pg->mu);
    free(pg);
}
