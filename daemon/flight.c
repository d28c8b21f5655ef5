/*
 * flight.c — the single-flight table (flight.h says what it is for).
 *
 * Striped buckets, each a mutex and a short array of in-flight keys with their waiters. Only misses
 * and revalidations touch it, so a mutex per stripe is cheap and keeps it obviously right; the hit
 * path never does.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "flight.h"

#define FLIGHT_STRIPES 256

struct flight {
    uint8_t digest[SHM_DIGEST_LEN];
    struct flight_waiter *w;
    size_t nw, capw;
};

struct stripe {
    pthread_mutex_t mu;
    struct flight *f;
    size_t n, cap;
    char pad_[64];
};

struct flights {
    struct stripe s[FLIGHT_STRIPES];
};

struct flights *flights_new(void)
{
    struct flights *f = calloc(1, sizeof(*f));

    if (!f)
        return NULL;
    for (int i = 0; i < FLIGHT_STRIPES; i++)
        pthread_mutex_init(&f->s[i].mu, NULL);
    return f;
}

void flights_free(struct flights *f)
{
    if (!f)
        return;
    for (int i = 0; i < FLIGHT_STRIPES; i++) {
        for (size_t j = 0; j < f->s[i].n; j++)
            free(f->s[i].f[j].w);
        free(f->s[i].f);
        pthread_mutex_destroy(&f->s[i].mu);
    }
    free(f);
}

static struct stripe *stripe_of(struct flights *f, const uint8_t digest[SHM_DIGEST_LEN])
{
    return &f->s[digest[0]];
}

static struct flight *find(struct stripe *s, const uint8_t digest[SHM_DIGEST_LEN])
{
    for (size_t i = 0; i < s->n; i++)
        if (memcmp(s->f[i].digest, digest, SHM_DIGEST_LEN) == 0)
            return &s->f[i];
    return NULL;
}

int flight_begin(struct flights *f, const uint8_t digest[SHM_DIGEST_LEN],
                 const struct flight_waiter *w)
{
    struct stripe *s = stripe_of(f, digest);
    struct flight *fl;
    int rc = 1;

    pthread_mutex_lock(&s->mu);
    if ((fl = find(s, digest))) {
        rc = 0;
        if (w) {
            if (BUF_RESERVE(fl->w, fl->capw, fl->nw + 1, 8, 0) < 0) {
                rc = -ENOMEM;
                goto out;
            }
            fl->w[fl->nw++] = *w;
        }
        goto out;
    }
    if (BUF_RESERVE(s->f, s->cap, s->n + 1, 4, 0) < 0) {
        rc = -ENOMEM;
        goto out;
    }
    fl = &s->f[s->n++];
    memset(fl, 0, sizeof(*fl));
    memcpy(fl->digest, digest, SHM_DIGEST_LEN);
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

size_t flight_end(struct flights *f, const uint8_t digest[SHM_DIGEST_LEN],
                  struct flight_waiter **out)
{
    struct stripe *s = stripe_of(f, digest);
    struct flight *fl;
    size_t n = 0;

    *out = NULL;
    pthread_mutex_lock(&s->mu);
    if ((fl = find(s, digest))) {
        *out = fl->w;
        n = fl->nw;
        *fl = s->f[--s->n];
    }
    pthread_mutex_unlock(&s->mu);
    return n;
}
