/*
 * purger.c — the purge thread (purger.h says why it exists).
 *
 * What waits for a walk: the session purges stamped exactly (epoch.h: the exact table is their
 * queue, purger_poke says there is more), and a bounded queue under one mutex for the rest (users,
 * everything, sessions whose exact stamp found no room). One thread takes all of it at once and
 * runs it as one batch: one walk of the table for the whole batch (shm_purge_set), which also
 * finds the users of sessions this node could not name among the answers it removes; then the
 * exact stamps the walk has served end (epoch_walked), and the users found are stamped and purged
 * with one more walk (only when there are some). A full queue is not an error: the caller
 * runs its purge itself (slower, never lost). The stamp that makes a purge effective was set before
 * it was queued, so when the walk happens changes nothing anyone is served; only direct readers of
 * the segment (libauthcache) wait for it.
 *
 * Walks are paced: the next begins no sooner than PURGER_GAP_WALKS times the last one took after
 * it (at least PURGER_GAP_MIN_MS, at most PURGER_GAP_MAX_MS), so that a flood of sign-outs costs
 * at most about a tenth of a core in walks, and leaves no backlog behind (one walk takes all that
 * waits). A queue or exact table filling up, or a stop, does not wait for the pace. The thread
 * also runs under SCHED_IDLE (nice PURGER_NICE where that is refused): where it shares a core with
 * a worker (one CPU, or a daemon pinned to one), the worker's requests go first and a walk only
 * fills the gaps between them. At nice 10 a walk still took slices of the core while requests
 * waited: hit p99 3.1x its value without a sign-out flood, against 1.2x under SCHED_IDLE
 * (bench/RESULTS.md, "sign-outs paced"). The price: with every core busy with requests all the
 * time, walks crawl (SCHED_IDLE's weight is 3, a worker's 1024). Nobody is served a purged answer
 * meanwhile (the stamps do that); the exact stamp table may overflow into the shared slots (more
 * IdP calls), and libauthcache readers see purged answers until the walk.
 */
#include <errno.h>
#include <stdio.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "epoch.h"
#include "log.h"
#include "purger.h"

#define PURGER_QUEUE 1024
#define FIND_USERS_MAX 1024 /* users found among the sessions of one batch */
#define PURGER_GAP_MIN_MS 5
#define PURGER_GAP_WALKS 10
#define PURGER_GAP_MAX_MS 1000
#define PURGER_NICE 10 /* about a tenth of a worker's share of a core, as the pace needs */
#define PURGER_CREDS (PURGER_QUEUE * PURGE_MAX_CREDS + EPOCH_EXACT_MAX)

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
    int poked;            /* exact stamps wait for a walk */
    char poke_why[96];    /* why the last of them was stamped, for the log line */
    int64_t next_walk_us; /* monotonic: the pace */
    unsigned head, n;
    struct purger_item q[PURGER_QUEUE];
    /* the batch being run (the thread's own) */
    struct purger_item batch[PURGER_QUEUE];
    uint64_t pend[EPOCH_EXACT_MAX]; /* exact stamps taken into the batch (epoch_pending) */
    unsigned pend_flags[EPOCH_EXACT_MAX];
    uint64_t creds[PURGER_CREDS], find[PURGER_CREDS];
    uint64_t users[PURGER_QUEUE + FIND_USERS_MAX];
    size_t nfind, nfound;
    struct purge found[FIND_USERS_MAX];
    char found_user[FIND_USERS_MAX][SHM_MAX_USER];
};

/* shm_purge_set's found: the user of an answer of a session to find users of, each once. */
static void found_fn(const char *user, size_t len, void *arg)
{
    struct purger *pg = arg;

    if (len == 0 || len > SHM_MAX_USER || pg->nfound == FIND_USERS_MAX)
        return;
    for (size_t i = 0; i < pg->nfound; i++)
        if (pg->found[i].user_len == len && memcmp(pg->found_user[i], user, len) == 0)
            return;
    memcpy(pg->found_user[pg->nfound], user, len);
    pg->found[pg->nfound] =
        (struct purge){.kind = PURGE_USER, .user = pg->found_user[pg->nfound], .user_len = len};
    pg->nfound++;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Run n purges and the exact stamps numbered at most upto (all stamped already) on the segment with
 * one walk, which also finds the users of sessions to find users of; then end those exact stamps,
 * and purge the users found (stamped, published, and one more walk). */
static void run_batch(struct purger *pg, struct purger_item *it, size_t n, uint64_t upto,
                      const char *poke_why)
{
    struct daemon *d = pg->d;
    struct shm_purge_set set = {.creds = pg->creds, .users = pg->users};
    size_t npend = epoch_pending(d->epochs, upto, pg->pend, pg->pend_flags, EPOCH_EXACT_MAX);
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
    for (size_t i = 0; i < npend; i++) {
        set.creds[set.ncreds++] = pg->pend[i];
        if (pg->pend_flags[i] & EPOCH_FIND_USERS)
            pg->find[pg->nfind++] = pg->pend[i];
    }
    if (pg->nfind) { /* found_fn learns their users as their answers go */
        qsort(pg->find, pg->nfind, sizeof(*pg->find), cmp_u64);
        set.find = pg->find;
        set.nfind = pg->nfind;
        set.found = found_fn;
        set.arg = pg;
    }
    shm_purge_set_sort(&set);
    removed = shm_purge_set(&d->shm, &set);
    if (removed >= 0 && set.skipped == 0)
        epoch_walked(d->epochs, pg->pend, npend, upto);
    if (pg->nfound) { /* stamped at once; a second walk for their other answers */
        struct shm_purge_set more = {.creds = pg->creds, .users = pg->users};
        int m;
        for (size_t i = 0; i < pg->nfound; i++) {
            daemon__purge_announce(d, &pg->found[i]);
            more.users[more.nusers++] = shm_user_hash(pg->found_user[i], pg->found[i].user_len);
        }
        shm_purge_set_sort(&more);
        if ((m = shm_purge_set(&d->shm, &more)) > 0 && removed >= 0)
            removed += m;
    }
    if (n == 1 && npend == 0 && it[0].p.kind == PURGE_USER && pg->nfound == 0)
        daemon__purged_user(d, removed, it[0].user, it[0].p.user_len, it[0].why);
    else
        daemon__purged_batch(d, removed, n + npend, pg->nfound, n ? it[0].why : poke_why);
}

/* Whether the next walk is due now, whatever the pace. Under mu. */
static int pressed(struct purger *pg)
{
    return pg->stopping || pg->n >= PURGER_QUEUE / 2 ||
           epoch_exact_count(pg->d->epochs) >= EPOCH_EXACT_MAX / 4;
}

static void *purger_main(void *arg)
{
    struct purger *pg = arg;
    int64_t t0, t1, gap;
    uint64_t upto;
    char why[96];
    size_t n;

    /* This thread's own policy and nice value (Linux: per thread). Lowering either needs no
     * privilege; should both fail anyway, walks only compete with the workers as before. */
    {
        struct sched_param sp = {0};
        if (pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp) != 0 &&
            setpriority(PRIO_PROCESS, (id_t)gettid(), PURGER_NICE) < 0)
            log_debug("purger", "cannot lower the purge thread's priority: %s", strerror(errno));
    }
    pthread_mutex_lock(&pg->mu);
    for (;;) {
        if (pg->n == 0 && !pg->poked) {
            if (pg->stopping)
                break;
            pthread_cond_wait(&pg->cv, &pg->mu);
            continue;
        }
        if ((t0 = daemon_mono_us()) < pg->next_walk_us && !pressed(pg)) {
            struct timespec ts = {(time_t)(pg->next_walk_us / 1000000),
                                  (long)(pg->next_walk_us % 1000000) * 1000};
            pthread_cond_timedwait(&pg->cv, &pg->mu, &ts); /* more may come meanwhile */
            continue;
        }
        for (n = 0; pg->n; n++, pg->n--, pg->head = (pg->head + 1) % PURGER_QUEUE)
            pg->batch[n] = pg->q[pg->head];
        pg->poked = 0;
        memcpy(why, pg->poke_why, sizeof(why));
        pthread_mutex_unlock(&pg->mu);
        upto = epoch_now(pg->d->epochs); /* after the batch was taken: its stamps are older */
        run_batch(pg, pg->batch, n, upto, why);
        t1 = daemon_mono_us();
        gap = (t1 - t0) * PURGER_GAP_WALKS;
        if (gap < PURGER_GAP_MIN_MS * 1000)
            gap = PURGER_GAP_MIN_MS * 1000;
        if (gap > PURGER_GAP_MAX_MS * 1000)
            gap = PURGER_GAP_MAX_MS * 1000;
        pthread_mutex_lock(&pg->mu);
        pg->next_walk_us = t1 + gap;
    }
    pthread_mutex_unlock(&pg->mu);
    return NULL;
}

int purger_start(struct daemon *d, struct purger **out)
{
    struct purger *pg = calloc(1, sizeof(*pg));
    pthread_condattr_t ca;
    int rc;

    *out = NULL;
    if (!pg)
        return -ENOMEM;
    pg->d = d;
    pthread_mutex_init(&pg->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* the pace is on daemon_mono_us */
    pthread_cond_init(&pg->cv, &ca);
    pthread_condattr_destroy(&ca);
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

int purger_poke(struct purger *pg, const char *why)
{
    int rc = 0;

    pthread_mutex_lock(&pg->mu);
    if (pg->stopping) {
        rc = -ESHUTDOWN;
    } else {
        snprintf(pg->poke_why, sizeof(pg->poke_why), "%s", why);
        if (!pg->poked)
            pthread_cond_signal(&pg->cv);
        pg->poked = 1;
    }
    pthread_mutex_unlock(&pg->mu);
    return rc;
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
