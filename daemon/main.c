/*
 * main.c — authcached: parse the configuration, get the listening sockets (passed by systemd,
 * handed over by the daemon this one replaces with --handover, or bound), open (or keep) the
 * segment, start the purge bus (--bus), the workers and the admin listener, then wait for
 * SIGTERM/SIGINT (or a successor that took the sockets over) and drain: stop accepting, finish
 * in-flight requests, flush the bus, exit 0. The segment stays for the next start.
 *
 * Exit status: 0 after a clean stop, 2 for a bad flag or an address that cannot be bound (one line
 * naming the flag), 1 for anything else that stops the start. Each step that can fail tells which
 * by what it returns (config_parse: always 2; worker_new: usage_error), never by its message.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "admin.h"
#include "bus.h"
#include "config.h"
#include "daemon.h"
#include "epoch.h"
#include "handover.h"
#include "listeners.h"
#include "log.h"
#include "purger.h"
#include "feed.h"
#include "sids.h"
#include "tls.h"
#include "worker.h"

extern char **environ;

static unsigned raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return 65536;
    return rl.rlim_cur > (1u << 20) ? (1u << 20) : (unsigned)rl.rlim_cur;
}

int main(int argc, char **argv)
{
    static struct config cfg;
    static struct daemon d;
    char err[512];
    struct admin *admin;
    const char *admin_at;
    static struct listeners ls;
    struct handover *ho = NULL;
    int ho_conn = -1;
    struct shm_params sp = {0};
    sigset_t sigs;
    unsigned nofile, reserve, per_worker, ups_per_worker;
    int created, rc, sig;

    rc = config_parse(&cfg, argc, argv, environ, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "authcached: %s\n", err);
        return 2;
    }
    if (cfg.info != CONFIG_RUN) {
        config_print_info(&cfg, stdout);
        return 0;
    }
    log_init(cfg.log_level, cfg.log_format);
    daemon_clock_init();
    if (cfg.upstream.tls && tls_global_init(err, sizeof(err)) < 0) {
        fprintf(stderr, "authcached: %s\n", err);
        return 2;
    }

    /* Signals go to this thread only (sigwait below); workers never see them. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    nofile = raise_nofile();
    d.cfg = &cfg;
    d.started_ms = daemon_now_ms();
    d.nworkers = cfg.workers;
    d.metrics = aligned_alloc(64, sizeof(*d.metrics) * cfg.workers);
    d.workers = calloc(cfg.workers, sizeof(*d.workers));
    d.flights = flights_new();
    d.epochs = epoch_new();
    if (!d.metrics || !d.workers || !d.flights || !d.epochs) {
        fprintf(stderr, "authcached: out of memory\n");
        return 1;
    }
    memset(d.metrics, 0, sizeof(*d.metrics) * cfg.workers);
    /* The listeners first: a start that cannot listen leaves the segment alone. */
    /* Descriptors: 128 (a quarter of a small limit) kept for listeners, rings, the segment, the
     * admin and bus sockets; the rest in workers + 1 equal shares, one per worker for its clients
     * and the last split among the workers for their IdP connections. */
    reserve = nofile > 512 ? 128 : nofile / 4;
    per_worker = (nofile - reserve) / (cfg.workers + 1);
    ups_per_worker = per_worker / cfg.workers;
    if (per_worker < 1 || ups_per_worker < 2) {
        fprintf(stderr, "authcached: the open-files limit (%u) is too low for %u workers\n", nofile,
                cfg.workers);
        return 2;
    }
    /* Sockets systemd passed; else those of the daemon serving --handover (it keeps serving
     * until handover_ready below); else bound here. */
    listeners_init(&ls);
    if ((rc = listeners_from_systemd(&ls, err, sizeof(err))) < 0) {
        fprintf(stderr, "authcached: %s\n", err);
        return 2;
    }
    if (rc == 0 && cfg.handover[0] &&
        handover_take(cfg.handover, &ls, &ho_conn, err, sizeof(err)) < 0) {
        fprintf(stderr, "authcached: %s\n", err);
        return 1;
    }
    if (ls.n == 0 && listeners_bind(&ls, &cfg.listen, cfg.workers, err, sizeof(err)) < 0) {
        fprintf(stderr, "authcached: %s\n", err);
        return 2;
    }
    for (unsigned i = 0; i < cfg.workers; i++) {
        int usage_error, share[LISTENERS_MAX];
        unsigned n;

        d.workers[i] =
            worker_new(&d, i, per_worker, ups_per_worker, err, sizeof(err), &usage_error);
        if (!d.workers[i]) {
            fprintf(stderr, "authcached: %s\n", err);
            return usage_error ? 2 : 1;
        }
        n = listeners_share(&ls, i, cfg.workers, share);
        worker_listen(d.workers[i], share, n, ls.port);
    }
    admin_at = ls.admin_fd >= 0 ? "a passed socket" : cfg.admin.text;
    if (ls.admin_fd >= 0) {
        admin = admin_adopt(&d, ls.admin_fd, ls.admin_port, err, sizeof(err));
        if (admin)
            ls.admin_fd = -1; /* the admin listener's now */
    } else {
        admin = admin_bind(&d, err, sizeof(err));
    }
    if (!admin) {
        fprintf(stderr, "authcached: %s\n", err);
        return 2;
    }
    /* A first start serves --handover before anything else can fail late; a successor once its
     * predecessor no longer does (below). */
    if (cfg.handover[0] && ho_conn < 0 &&
        !(ho = handover_serve(cfg.handover, &ls, admin_fd(admin), err, sizeof(err)))) {
        fprintf(stderr, "authcached: %s\n", err);
        return 2;
    }
    sp.capacity = cfg.capacity;
    sp.key = cfg.have_hash_key ? cfg.hash_key : NULL;
    sp.has_group = cfg.have_shm_group;
    sp.group = cfg.shm_group;
    /* chown to a group needs root or membership of that group. */
    if (cfg.have_shm_group && geteuid() != 0 && !shm_in_my_groups(cfg.shm_group)) {
        fprintf(stderr,
                "authcached: --shm-group %u: this daemon (uid %u) is neither root nor a member of "
                "that group, so it cannot give the segment to it\n",
                (unsigned)cfg.shm_group, (unsigned)geteuid());
        admin_stop(admin);
        return 2;
    }
    rc = shm_open_or_create(&d.shm, cfg.shm_name, &sp, &created);
    if (rc < 0) {
        if (rc == -ELOOP)
            fprintf(stderr, "authcached: --shm %s: /dev/shm/%s is a symlink: refusing to use it\n",
                    cfg.shm_name, cfg.shm_name);
        else if (rc == -EBADF)
            fprintf(stderr,
                    "authcached: --shm %s: /dev/shm/%s is not a regular file: refusing to use it\n",
                    cfg.shm_name, cfg.shm_name);
        else if (rc == -EPERM)
            fprintf(stderr,
                    "authcached: --shm %s: /dev/shm/%s is not owned by uid %u (this daemon): "
                    "refusing to use it\n",
                    cfg.shm_name, cfg.shm_name, (unsigned)geteuid());
        else if (rc == -EACCES && cfg.have_shm_group)
            fprintf(stderr,
                    "authcached: --shm %s: /dev/shm/%s is writable by group or others, or "
                    "readable by others or by a group other than %u (want mode 0640 or 0600): "
                    "refusing to use it\n",
                    cfg.shm_name, cfg.shm_name, (unsigned)cfg.shm_group);
        else if (rc == -EACCES)
            fprintf(stderr,
                    "authcached: --shm %s: /dev/shm/%s is readable or writable by group or others "
                    "(want mode 0600; --shm-group allows group read): refusing to use it\n",
                    cfg.shm_name, cfg.shm_name);
        else
            fprintf(stderr, "authcached: --shm %s: cannot open /dev/shm/%s: %s\n", cfg.shm_name,
                    cfg.shm_name, strerror(-rc));
        admin_stop(admin); /* not started: closes and frees (a clean exit, also under LSan) */
        return 1;
    }
    /* The session index before the workers store anything (sids.h). A segment that already held
     * answers is indexed by the feed once nothing else stores into it: at once without a
     * predecessor, else below. */
    if (cfg.authentik.host[0]) {
        if (!(d.sids = sids_new(d.shm.capacity, !created))) {
            fprintf(stderr, "authcached: out of memory for the session index\n");
            admin_stop(admin);
            return 1;
        }
        if (!created && ho_conn < 0)
            sids_adopt_at(d.sids, daemon_mono_ms());
    }
    /* The purge thread before the bus, whose first read may bring purges at once (an adopted
     * segment reads on from its mark) and hands them to d.purger. */
    if ((rc = purger_start(&d, &d.purger)) < 0) {
        fprintf(stderr, "authcached: cannot start the purge thread: %s\n", strerror(-rc));
        return 1;
    }
    /* The bus before anything can purge: workers and the admin listener publish through d.bus. */
    if (cfg.bus.enabled && (rc = bus_start(&d, &d.bus, err, sizeof(err))) < 0) {
        fprintf(stderr, "authcached: --bus: %s\n", err);
        admin_stop(admin); /* not started: closes and frees (a clean exit, also under LSan) */
        return rc == -EINVAL ? 2 : 1;
    }
    if (cfg.authentik.host[0] && (rc = feed_start(&d, &d.feed)) < 0) {
        fprintf(stderr, "authcached: --authentik-url: cannot start its thread: %s\n",
                strerror(-rc));
        return 1;
    }
    if ((rc = admin_run(admin)) < 0) {
        fprintf(stderr, "authcached: --admin: cannot start its thread: %s\n", strerror(-rc));
        return 1;
    }
    log_info("segment", "%s /dev/shm/%s: capacity %llu answers, %llu MiB",
             created ? "created" : "reusing", cfg.shm_name, (unsigned long long)d.shm.capacity,
             (unsigned long long)(d.shm.map_size >> 20));
    for (unsigned i = 0; i < cfg.workers; i++) {
        if ((rc = worker_start(d.workers[i])) < 0) {
            fprintf(stderr, "authcached: cannot start worker %u: %s\n", i, strerror(-rc));
            return 1;
        }
    }
    __atomic_store_n(&d.ready, 1, __ATOMIC_RELEASE);
    log_info("listening",
             "forward-auth on %s (port %d, %u socket(s) %s), admin on %s (port %d), "
             "%u workers, upstream %s:%u, %u connections per worker",
             ls.from[0] == 'b' ? cfg.listen.text : "passed sockets", worker_port(d.workers[0]),
             ls.n, ls.from, admin_at, admin_port(admin), cfg.workers, cfg.upstream.host,
             cfg.upstream.port, per_worker);
    if (ho_conn >= 0) {
        /* Serving: now the predecessor may stop accepting and drain. */
        if (handover_ready(ho_conn, err, sizeof(err)) < 0) {
            log_warn("handover", "%s", err);
        } else {
            log_info("handover", "took over from the previous daemon; it drains");
            /* It stores what its requests in flight bring until its drain ends (loop.c: at most
             * --upstream-timeout + 2 s, with the same flags); only then can the feed index the
             * segment it shared. Until then, and if it never says it drains, session ends scan. */
            if (d.sids)
                sids_adopt_at(d.sids, daemon_mono_ms() + cfg.upstream_timeout_ms + 3000);
        }
        if (!(ho = handover_serve(cfg.handover, &ls, admin_fd(admin), err, sizeof(err))))
            log_error("handover", "%s: the next upgrade cannot take over from this daemon", err);
    }

    /* SIGHUP (a terminal closing, or an operator used to "reload") must not kill a daemon every
     * request depends on: there is nothing to reload, so it is logged and ignored. */
    while (sigwait(&sigs, &sig) == 0 && sig == SIGHUP)
        log_info("sighup", "SIGHUP ignored: nothing to reload (restart to change flags)");
    log_info("draining", "%s: no new connections; finishing requests in flight",
             handover_done(ho) ? "handed over"
             : sig == SIGTERM  ? "SIGTERM"
                               : "SIGINT");
    __atomic_store_n(&d.ready, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&d.draining, 1, __ATOMIC_RELEASE);
    for (unsigned i = 0; i < cfg.workers; i++)
        worker_wake(d.workers[i]);
    for (unsigned i = 0; i < cfg.workers; i++)
        worker_join(d.workers[i]);
    handover_stop(ho); /* before the sockets it hands out close */
    admin_stop(admin);
    /* The feed before the purge thread: its purges are queued there. */
    feed_stop(d.feed);
    purger_stop(d.purger); /* runs what is queued; may still publish */
    bus_stop(d.bus);       /* after the last purge: sends what is queued (briefly), then closes */
    for (unsigned i = 0; i < cfg.workers; i++)
        worker_free(d.workers[i]);
    listeners_close(&ls); /* a successor's copies keep the sockets and their queues */
    flights_free(d.flights);
    sids_free(d.sids);
    free(d.workers);
    free(d.metrics);
    shm_detach(&d.shm);
    config_free(&cfg);
    log_info("stopped", "clean stop");
    return 0;
}
