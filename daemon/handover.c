/*
 * handover.c — giving the listening sockets to a successor (the protocol is in handover.h).
 *
 * Why this loses no connection: a listening socket is one kernel object however many descriptors
 * refer to it, in however many processes; its accept queue lives as long as any of them. The
 * successor gets descriptors for the very sockets the running daemon accepts from (every socket
 * of its SO_REUSEPORT group: the kernel keeps hashing connections to each), accepts from all of
 * them before it says READY, and only then does the running daemon stop accepting and close its
 * descriptors, which closes no socket. A connection waiting in a queue is taken by whichever
 * process accepts first; neither ever resets one.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "handover.h"
#include "log.h"

#define HANDOVER_WAIT_MS 5000 /* for a peer's line (except READY, which takes a whole start) */

struct handover {
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    const struct listeners *ls;
    int admin_fd;
    int fd; /* the Unix listener, -1 once handed over */
    int stop, done;
    pthread_t thread;
};

static int unix_addr(const char *path, struct sockaddr_un *sun, char *err, size_t errlen)
{
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sun->sun_path)) {
        snprintf(err, errlen, "--handover %s: the path is too long for a Unix socket", path);
        return -1;
    }
    memcpy(sun->sun_path, path, strlen(path) + 1);
    return 0;
}

/* Read one line ending in \n into buf (NUL-terminated, without it) within ms, or forever while
 * *stop is 0 when ms < 0. Returns its length, -1 on EOF, error or timeout. */
static int read_line(int fd, char *buf, size_t cap, int ms, const int *stop)
{
    size_t len = 0;

    while (len + 1 < cap) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, ms < 0 ? 200 : ms);
        ssize_t n;

        if (stop && __atomic_load_n(stop, __ATOMIC_ACQUIRE))
            return -1;
        if (r == 0 && ms < 0)
            continue;
        if (r <= 0 || (n = read(fd, buf + len, 1)) <= 0)
            return -1;
        if (buf[len] == '\n') {
            buf[len] = '\0';
            return (int)len;
        }
        len++;
    }
    return -1;
}

static int write_all(int fd, const char *s)
{
    size_t len = strlen(s);

    while (len) {
        ssize_t n = send(fd, s, len, MSG_NOSIGNAL);
        if (n <= 0)
            return -1;
        s += n;
        len -= (size_t)n;
    }
    return 0;
}

int handover_take(const char *path, struct listeners *ls, int *conn, char *err, size_t errlen)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * (LISTENERS_MAX + 1))];
        struct cmsghdr align;
    } cm;
    struct sockaddr_un sun;
    char line[64];
    struct iovec iov = {.iov_base = line, .iov_len = sizeof(line) - 1};
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf, .msg_controllen = sizeof(cm.buf)};
    int fd, fds[LISTENERS_MAX + 1], nfds = 0, port;
    unsigned n, admin;
    ssize_t got;

    *conn = -1;
    if (unix_addr(path, &sun, err, errlen) < 0)
        return -1;
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
        snprintf(err, errlen, "--handover %s: socket: %s", path, strerror(errno));
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        int e = errno;

        close(fd);
        if (e == ENOENT || e == ECONNREFUSED)
            return 0; /* nobody serves there: a first start */
        snprintf(err, errlen, "--handover %s: connect: %s", path, strerror(e));
        return -1;
    }
    if (write_all(fd, "TAKE\n") < 0)
        goto gone;
    {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, HANDOVER_WAIT_MS) != 1)
            goto gone;
    }
    if ((got = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC)) <= 0)
        goto gone;
    line[got] = '\0';
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < k && nfds < LISTENERS_MAX + 1; i++)
                memcpy(&fds[nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        }
    }
    if (sscanf(line, "LISTENERS %u %u", &n, &admin) != 2 || n < 1 || n > LISTENERS_MAX ||
        admin > 1 || (int)(n + admin) != nfds || (msg.msg_flags & MSG_CTRUNC)) {
        snprintf(err, errlen, "--handover %s: the running daemon's answer is garbled", path);
        goto fail;
    }
    for (unsigned i = n + admin; i-- > 0;) {
        if (listeners_check(fds[i], "--handover: a socket passed", &port, err, errlen) < 0)
            goto fail;
        if (i == n)
            ls->admin_port = port;
    }
    for (unsigned i = 0; i < n; i++)
        ls->fd[ls->n++] = fds[i];
    ls->port = port; /* of fds[0], checked last */
    ls->admin_fd = admin ? fds[n] : -1;
    ls->from = "handover";
    *conn = fd;
    return 1;
gone:
    snprintf(err, errlen, "--handover %s: the running daemon did not hand over its sockets", path);
fail:
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    close(fd);
    return -1;
}

int handover_ready(int conn, char *err, size_t errlen)
{
    char line[64];
    int rc = 0;

    if (write_all(conn, "READY\n") < 0 ||
        read_line(conn, line, sizeof(line), HANDOVER_WAIT_MS, NULL) < 0 ||
        strcmp(line, "DRAINING") != 0) {
        snprintf(err, errlen, "--handover: the previous daemon went away before it said it drains");
        rc = -1;
    }
    close(conn);
    return rc;
}

/* One successor: its sockets, then its READY. Returns 1 if it took over. */
static int serve_one(struct handover *h, int c)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * (LISTENERS_MAX + 1))];
        struct cmsghdr align;
    } cm;
    char line[64];
    struct iovec iov = {.iov_base = line};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf};
    struct cmsghdr *cmsg;
    unsigned n = h->ls->n, admin = h->admin_fd >= 0;
    struct ucred cred;
    socklen_t cl = sizeof(cred);

    if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0 ||
        (cred.uid != geteuid() && cred.uid != 0)) {
        log_warn("handover", "refused a peer of another user (uid %u)", (unsigned)cred.uid);
        return 0;
    }
    if (read_line(c, line, sizeof(line), HANDOVER_WAIT_MS, &h->stop) < 0 ||
        strcmp(line, "TAKE") != 0)
        return 0;
    memset(&cm, 0, sizeof(cm));
    iov.iov_len = (size_t)snprintf(line, sizeof(line), "LISTENERS %u %u\n", n, admin);
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * (n + admin));
    cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * (n + admin));
    memcpy(CMSG_DATA(cmsg), h->ls->fd, sizeof(int) * n);
    if (admin)
        memcpy(CMSG_DATA(cmsg) + sizeof(int) * n, &h->admin_fd, sizeof(int));
    if (sendmsg(c, &msg, MSG_NOSIGNAL) != (ssize_t)iov.iov_len)
        return 0;
    log_info("handover", "gave %u listening socket(s) to pid %d; serving until it is ready", n,
             (int)cred.pid);
    if (read_line(c, line, sizeof(line), -1, &h->stop) < 0 || strcmp(line, "READY") != 0) {
        log_warn("handover", "pid %d went away before it served: still serving", (int)cred.pid);
        return 0;
    }
    /* The path is the successor's from now on: close ours before it binds its own. */
    close(h->fd);
    h->fd = -1;
    __atomic_store_n(&h->done, 1, __ATOMIC_RELEASE);
    write_all(c, "DRAINING\n");
    log_info("handover", "pid %d serves: draining", (int)cred.pid);
    return 1;
}

static void *handover_main(void *arg)
{
    struct handover *h = arg;

    while (!__atomic_load_n(&h->stop, __ATOMIC_ACQUIRE)) {
        struct pollfd p = {.fd = h->fd, .events = POLLIN};
        int c, took;

        if (poll(&p, 1, 200) != 1)
            continue;
        if ((c = accept4(h->fd, NULL, NULL, SOCK_CLOEXEC)) < 0)
            continue;
        took = serve_one(h, c);
        close(c);
        if (took) {
            kill(getpid(), SIGTERM); /* main's sigwait: the usual drain */
            break;
        }
    }
    return NULL;
}

struct handover *handover_serve(const char *path, const struct listeners *ls, int admin_fd,
                                char *err, size_t errlen)
{
    struct handover *h = calloc(1, sizeof(*h));
    struct sockaddr_un sun;
    int rc;

    if (!h) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (unix_addr(path, &sun, err, errlen) < 0) {
        free(h);
        return NULL;
    }
    memcpy(h->path, sun.sun_path, sizeof(h->path));
    h->ls = ls;
    h->admin_fd = admin_fd;
    unlink(path); /* a stale socket file (handover_take found nobody listening), or our
                   * predecessor's, who said DRAINING and no longer listens */
    if ((h->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
        bind(h->fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 || chmod(path, 0600) < 0 ||
        listen(h->fd, 4) < 0) {
        snprintf(err, errlen, "--handover %s: %s", path, strerror(errno));
        if (h->fd >= 0)
            close(h->fd);
        free(h);
        return NULL;
    }
    if ((rc = pthread_create(&h->thread, NULL, handover_main, h)) != 0) {
        snprintf(err, errlen, "--handover: cannot start its thread: %s", strerror(rc));
        close(h->fd);
        unlink(path);
        free(h);
        return NULL;
    }
    return h;
}

int handover_done(const struct handover *h)
{
    return h && __atomic_load_n(&h->done, __ATOMIC_ACQUIRE);
}

void handover_stop(struct handover *h)
{
    if (!h)
        return;
    __atomic_store_n(&h->stop, 1, __ATOMIC_RELEASE);
    pthread_join(h->thread, NULL);
    if (h->fd >= 0) {
        close(h->fd);
        unlink(h->path);
    }
    free(h);
}
