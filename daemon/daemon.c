/*
 * daemon.c — process-wide pieces shared by the workers: clocks, purges, and the names of results.
 * The IdP circuit breaker is breaker.c, the single-flight table flight.c.
 *
 * Purges: daemon_purge = purge_local (this segment, in place: the admin API answers with the
 * count) + bus_publish (the other nodes, with --bus). Workers use daemon_purge_soon (stamped now,
 * walked by the purge thread); what the bus receives goes to daemon_purge_received, which never
 * publishes, so a purge never travels twice.
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus.h"
#include "daemon.h"
#include "epoch.h"
#include "log.h"
#include "purger.h"

const char *const result_names[RES_COUNT] = {
    "hit", "stale", "miss", "revalidated", "bypass", "signout", "unavailable", "rejected",
};

const double metrics_lat_bounds_ms[METRICS_LAT_BUCKETS - 1] = {
    0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000,
};

/* The tests' wall clock: with AUTHCACHE_TEST_WALL_OFFSET_FILE naming a file of 8 bytes, the signed
 * milliseconds it holds are added to wall time. It is mapped shared, so a test steps the daemon's
 * wall clock while it runs (tests/integration/test_clock.py) without touching the machine's. Unset
 * (always, in production), it costs one predictable branch. */
static const int64_t *wall_offset;

void daemon_clock_init(void)
{
    const char *f = getenv("AUTHCACHE_TEST_WALL_OFFSET_FILE");
    int fd;
    void *m;

    if (!f || (fd = open(f, O_RDONLY | O_CLOEXEC)) < 0)
        return;
    m = mmap(NULL, sizeof(int64_t), PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (m != MAP_FAILED) {
        wall_offset = m;
        log_warn("test_clock", "wall clock offset by %s (a test hook)", f);
    }
}

int64_t daemon_now_ms(void)
{
    struct timespec ts;
    int64_t off = wall_offset ? __atomic_load_n(wall_offset, __ATOMIC_RELAXED) : 0;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + off;
}

int64_t daemon_mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- purges ---- */

/* Stamp p (epoch.h): from now on no answer it covers is served or kept, whatever the segment
 * still holds. 1 if p is a session purge whose every digest was stamped exactly (the purge thread
 * finds it in the exact table: it need not be queued), 0 otherwise, or -EINVAL for an unknown
 * kind. find_users goes with exact stamps (EPOCH_FIND_USERS). */
static int purge_stamp(struct daemon *d, const struct purge *p, int find_users)
{
    int64_t now = daemon_now_ms();
    int exact = 1;

    switch (p->kind) {
    case PURGE_USER:
        epoch_purge_user(d->epochs, p->user, p->user_len, now);
        return 0;
    case PURGE_CREDS:
        for (unsigned i = 0; i < p->ncred && i < PURGE_MAX_CREDS; i++)
            if (epoch_purge_cred(d->epochs, p->cred[i], now, find_users ? EPOCH_FIND_USERS : 0) !=
                1)
                exact = 0;
        return exact;
    case PURGE_ALL:
        epoch_purge_all(d->epochs, now);
        return 0;
    default:
        return -EINVAL;
    }
}

/* Purges received from the bus are as many as anyone who can write to it makes: their lines are
 * rate-limited (the figures still count every one). */
static struct log_limit bus_purge_log = LOG_LIMIT_INIT(20);

static int purge_log_ok(const char *why)
{
    return strncmp(why, "via bus", 7) != 0 || log_limit_pass(&bus_purge_log, "purge");
}

/* Remove what p covers from the segment (a walk of the whole table), count it and log one line. */
static int purge_segment(struct daemon *d, const struct purge *p, const char *why)
{
    uint64_t creds[PURGE_MAX_CREDS], upto;
    struct shm_purge_set set = {.creds = creds};
    int n = 0;

    switch (p->kind) {
    case PURGE_USER:
        n = shm_purge_user(&d->shm, p->user, p->user_len);
        break;
    case PURGE_CREDS:
        for (unsigned i = 0; i < p->ncred && i < PURGE_MAX_CREDS; i++)
            memcpy(&creds[set.ncreds++], p->cred[i], sizeof(uint64_t));
        shm_purge_set_sort(&set);
        upto = epoch_now(d->epochs); /* the walk begins after p's stamps */
        n = shm_purge_set(&d->shm, &set);
        if (n >= 0 && set.skipped == 0)
            epoch_walked(d->epochs, creds, set.ncreds, upto);
        break;
    default:
        n = shm_purge_all(&d->shm);
        break;
    }
    if (n >= 0)
        __atomic_add_fetch(&d->purged_total, (uint64_t)n, __ATOMIC_RELAXED);
    if (!purge_log_ok(why))
        return n;
    if (p->kind == PURGE_USER)
        log_info("purge", "purged %d answers of user \"%.*s\" (%s)", n, (int)p->user_len, p->user,
                 why);
    else
        log_info("purge", "purged %d answers%s (%s)", n,
                 p->kind == PURGE_CREDS ? " of one session" : ", all", why);
    return n;
}

/* Every purge ends here, whether it began on this node (daemon_purge) or on another one (bus.c). */
static int purge_local(struct daemon *d, const struct purge *p, const char *why)
{
    int rc = purge_stamp(d, p, 0);

    return rc < 0 ? rc : purge_segment(d, p, why);
}

/* The users of the answers of p's credentials: a session signed out here whose user this node
 * could not name at once. */
#define FIND_USERS_MAX 8
struct find_users {
    const struct purge *p;
    unsigned n;
    uint32_t len[FIND_USERS_MAX];
    char user[FIND_USERS_MAX][SHM_MAX_USER];
};

static int find_users_fn(const struct shm_answer *a, void *arg)
{
    struct find_users *f = arg;
    unsigned i;

    for (i = 0; i < f->p->ncred && i < PURGE_MAX_CREDS; i++)
        if (memcmp(a->key.cred, f->p->cred[i], SHM_CRED_LEN) == 0)
            break;
    if (i == f->p->ncred || i == PURGE_MAX_CREDS || a->user_len == 0)
        return 0;
    for (i = 0; i < f->n; i++)
        if (f->len[i] == a->user_len && memcmp(f->user[i], a->user, a->user_len) == 0)
            return 0;
    f->len[f->n] = a->user_len;
    memcpy(f->user[f->n], a->user, a->user_len);
    return ++f->n == FIND_USERS_MAX;
}

void daemon__purge_run(struct daemon *d, const struct purge *p, int find_users, const char *why)
{
    static __thread struct find_users f;

    if (find_users && p->kind == PURGE_CREDS) { /* before the answers that name them go */
        f.p = p;
        f.n = 0;
        shm_foreach(&d->shm, daemon_now_ms(), find_users_fn, &f);
    }
    purge_segment(d, p, why);
    for (unsigned i = 0; find_users && p->kind == PURGE_CREDS && i < f.n; i++)
        daemon_purge(d, f.user[i], f.len[i], NULL, 0, why);
}

void daemon__purge_announce(struct daemon *d, const struct purge *p)
{
    if (purge_stamp(d, p, 0) >= 0)
        bus_publish(d->bus, p);
}

void daemon__purged(struct daemon *d, int n, const char *what, const char *why)
{
    if (n > 0)
        __atomic_add_fetch(&d->purged_total, (uint64_t)n, __ATOMIC_RELAXED);
    if (purge_log_ok(why))
        log_info("purge", "purged %d answers, %s (%s)", n, what, why);
}

void daemon__purged_user(struct daemon *d, int n, const char *user, size_t len, const char *why)
{
    if (n > 0)
        __atomic_add_fetch(&d->purged_total, (uint64_t)n, __ATOMIC_RELAXED);
    if (purge_log_ok(why))
        log_info("purge", "purged %d answers of user \"%.*s\" (%s)", n, (int)len, user, why);
}

void daemon__purged_batch(struct daemon *d, int n, size_t purges, size_t users_found,
                          const char *why)
{
    if (n > 0)
        __atomic_add_fetch(&d->purged_total, (uint64_t)n, __ATOMIC_RELAXED);
    if (!purge_log_ok(why))
        return;
    log_info("purge",
             "purged %d answers for %zu purges in one walk, %zu users found among their "
             "sessions (%s%s)",
             n, purges, users_found, why, purges > 1 ? ", ..." : "");
}

void daemon_purge_soon(struct daemon *d, const struct purge *p, int find_users, const char *why)
{
    int exact = purge_stamp(d, p, find_users);

    if (exact < 0)
        return;
    bus_publish(d->bus, p);
    if (exact && d->purger && purger_poke(d->purger, why) == 0)
        return; /* the purge thread finds it in the exact table */
    if (!d->purger || purger_queue(d->purger, p, find_users, why) < 0)
        daemon__purge_run(d, p, find_users, why);
}

int daemon_purge_received(struct daemon *d, const struct purge *p, const char *why)
{
    int exact = purge_stamp(d, p, 0);

    if (exact < 0)
        return exact;
    if (exact && d->purger && purger_poke(d->purger, why) == 0)
        return 0;
    if (!d->purger || purger_queue(d->purger, p, 0, why) < 0)
        return purge_segment(d, p, why);
    return 0;
}

int daemon_purge(struct daemon *d, const char *user, size_t user_len, const char *session,
                 size_t session_len, const char *why)
{
    struct purge p = {.kind = PURGE_ALL};
    int n;

    if (user) {
        p.kind = PURGE_USER;
        p.user = user;
        p.user_len = user_len;
    } else if (session) {
        /* The value may have come as the cookie or as the Authorization header: both digests. */
        p.kind = PURGE_CREDS;
        p.ncred = 2;
        shm_key_cred(&d->shm, SHM_CRED_COOKIE, session, session_len, p.cred[0]);
        shm_key_cred(&d->shm, SHM_CRED_AUTHORIZATION, session, session_len, p.cred[1]);
    }
    n = purge_local(d, &p, why);
    bus_publish(d->bus, &p); /* also when nothing was held here: the others may hold some */
    return n;
}
