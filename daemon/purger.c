/*
 * purger.c — the purge thread (purger.h says why it exists).
 *
 * A bounded queue under one mutex, and one thread that takes a purge at a time and runs it with
 * daemon__purge_run. Purges are rare next to requests, so a mutex is plenty; a full queue is not
 * an error: the caller runs the purge itself (slower, never lost). The stamp that makes a purge
 * effective was set before it was queued, so the order in which the thread runs them does not
 * matter.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "purger.h"

#define PURGER_QUEUE 1024

struct purger_item {
    struct purge p;
    int find_users;
    const char *why; /* a string literal */
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
};

static void *purger_main(void *arg)
{
    struct purger *pg = arg;
    struct purger_item it;

    pthread_mutex_lock(&pg->mu);
    for (;;) {
        while (pg->n == 0 && !pg->stopping)
            pthread_cond_wait(&pg->cv, &pg->mu);
        if (pg->n == 0)
            break;
        it = pg->q[pg->head];
        pg->head = (pg->head + 1) % PURGER_QUEUE;
        pg->n--;
        pthread_mutex_unlock(&pg->mu);
        if (it.p.kind == PURGE_USER)
            it.p.user = it.user;
        daemon__purge_run(pg->d, &it.p, it.find_users, it.why);
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
    it->why = why;
    if (p->kind == PURGE_USER) {
        it->p.user_len = p->user_len < SHM_MAX_USER ? p->user_len : SHM_MAX_USER;
        memcpy(it->user, p->user, it->p.user_len);
        it->p.user = NULL; /* set to it->user when taken: the item is copied */
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
