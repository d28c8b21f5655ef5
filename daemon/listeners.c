/*
 * listeners.c — the forward-auth listening sockets: bound here, passed by systemd, or handed over
 * by the daemon this one replaces (listeners.h says when each applies).
 *
 * Socket activation is read by hand (the protocol is three environment variables): LISTEN_PID
 * must be this process (else the variables were meant for a parent and are ignored), LISTEN_FDS
 * descriptors start at 3, LISTEN_FDNAMES names them in order, colon-separated. Each one must be a
 * listening stream socket of AF_INET or AF_INET6: anything else is refused with the reason, since
 * accepting from it would fail on every connection.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "listeners.h"

#define SD_LISTEN_FDS_START 3

void listeners_init(struct listeners *ls)
{
    memset(ls, 0, sizeof(*ls));
    ls->admin_fd = -1;
    ls->from = "bound";
}

static int port_of(const struct sockaddr_storage *ss)
{
    return ntohs(ss->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)ss)->sin6_port
                                           : ((const struct sockaddr_in *)ss)->sin_port);
}

static int bind_one(const struct config_addr *a, int port, int reuseport, char *err, size_t errlen)
{
    int fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_storage sa = a->sa;

    if (fd < 0) {
        snprintf(err, errlen, "--listen %s: socket: %s", a->text, strerror(errno));
        return -1;
    }
    if (sa.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&sa)->sin6_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in *)&sa)->sin_port = htons((uint16_t)port);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    /* Answers leave in one send each: no reason to hold a segment back. Accepted sockets inherit
     * it, which saves a setsockopt per connection. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&sa, a->len) < 0 || (reuseport && listen(fd, 4096) < 0)) {
        snprintf(err, errlen, "--listen %s: %s", a->text, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int listeners_bind(struct listeners *ls, const struct config_addr *a, unsigned n, char *err,
                   size_t errlen)
{
    struct sockaddr_storage got;
    socklen_t gl = sizeof(got);
    int port = port_of(&a->sa), fd;

    if (n > LISTENERS_MAX)
        n = LISTENERS_MAX;
    if (port != 0) { /* the probe: refused if anyone listens there, SO_REUSEPORT or not */
        if ((fd = bind_one(a, port, 0, err, errlen)) < 0)
            return -1;
        close(fd);
    }
    for (unsigned i = 0; i < n; i++) {
        if ((fd = bind_one(a, port, 1, err, errlen)) < 0) {
            listeners_close(ls);
            return -1;
        }
        ls->fd[ls->n++] = fd;
        if (port == 0 && getsockname(fd, (struct sockaddr *)&got, &gl) == 0)
            port = port_of(&got);
    }
    ls->port = port;
    ls->from = "bound";
    return 0;
}

int listeners_check(int fd, const char *what, int *port, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss), il = sizeof(int);
    int type = 0, acc = 0, one = 1;

    if (fcntl(fd, F_GETFD) < 0) {
        snprintf(err, errlen, "%s: descriptor %d is not open", what, fd);
        return -1;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &il) < 0 ||
        getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
        snprintf(err, errlen, "%s: descriptor %d is not a socket", what, fd);
        return -1;
    }
    il = sizeof(int);
    if (type != SOCK_STREAM || (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)) {
        snprintf(err, errlen, "%s: descriptor %d is not a TCP socket", what, fd);
        return -1;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &il) < 0 || !acc) {
        snprintf(err, errlen, "%s: descriptor %d is a TCP socket that is not listening", what, fd);
        return -1;
    }
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    *port = port_of(&ss);
    return 0;
}

int listeners_from_systemd(struct listeners *ls, char *err, size_t errlen)
{
    const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
    char names[4096] = "", *save = NULL, *name;
    long n;
    int rc = 0;

    if (getenv("LISTEN_FDNAMES"))
        snprintf(names, sizeof(names), "%s", getenv("LISTEN_FDNAMES"));
    if (!pid || !fds || strtol(pid, NULL, 10) != (long)getpid())
        goto out; /* not for this process */
    n = strtol(fds, NULL, 10);
    if (n < 1 || n > LISTENERS_MAX + 1) {
        snprintf(err, errlen, "LISTEN_FDS=%s: expected 1 to %d sockets", fds, LISTENERS_MAX + 1);
        rc = -1;
        goto out;
    }
    name = strtok_r(names, ":", &save);
    for (int i = 0; i < n; i++, name = name ? strtok_r(NULL, ":", &save) : NULL) {
        int fd = SD_LISTEN_FDS_START + i, port;
        int admin = name && strcmp(name, "admin") == 0;

        if (listeners_check(fd, "LISTEN_FDS (systemd socket activation)", &port, err, errlen) < 0) {
            rc = -1;
            goto out;
        }
        if (admin) {
            ls->admin_fd = fd;
            ls->admin_port = port;
            continue;
        }
        if (ls->n == 0)
            ls->port = port;
        ls->fd[ls->n++] = fd;
    }
    if (ls->n == 0) {
        snprintf(err, errlen, "LISTEN_FDS: only an admin socket was passed; no forward-auth one");
        rc = -1;
        goto out;
    }
    ls->from = "systemd";
    rc = (int)ls->n;
out:
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    return rc;
}

unsigned listeners_share(const struct listeners *ls, unsigned id, unsigned nworkers, int *out)
{
    unsigned k = 0;

    if (ls->n == 0)
        return 0;
    if (ls->n < nworkers) {
        out[0] = ls->fd[id % ls->n];
        return 1;
    }
    for (unsigned i = id; i < ls->n && k < LISTENERS_MAX; i += nworkers)
        out[k++] = ls->fd[i];
    return k;
}

void listeners_close(struct listeners *ls)
{
    for (unsigned i = 0; i < ls->n; i++)
        close(ls->fd[i]);
    ls->n = 0;
    if (ls->admin_fd >= 0)
        close(ls->admin_fd);
    ls->admin_fd = -1;
}
