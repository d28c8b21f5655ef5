/*
 * listeners.h — the forward-auth listening sockets a daemon accepts from, wherever they come from:
 * bound here (one SO_REUSEPORT socket per worker), passed by systemd (socket activation:
 * LISTEN_FDS), or passed by the daemon this one replaces (handover.h). The set is main's; workers
 * only accept from their share of it (listeners_share) and never close it.
 */
#ifndef AUTHCACHE_LISTENERS_H
#define AUTHCACHE_LISTENERS_H

#include <stddef.h>

#include "config.h"

/* At most this many forward-auth sockets (one SCM_RIGHTS message carries them all, and the kernel
 * allows 253): with more workers than that, workers share sockets (listeners_share). */
#define LISTENERS_MAX 64

struct listeners {
    int fd[LISTENERS_MAX]; /* listening TCP sockets, [0, n) */
    unsigned n;
    int admin_fd;     /* a passed admin listener (systemd's FileDescriptorName=admin, or handed
                       * over), -1: bind --admin */
    int admin_port;   /* admin_fd's */
    int port;         /* the forward-auth port (of fd[0]) */
    const char *from; /* "bound", "systemd" or "handover", for the log */
};

void listeners_init(struct listeners *ls);

/* Bind a (--listen) n times with SO_REUSEPORT. The address is first bound once without
 * SO_REUSEPORT, so that an address another process listens on (which SO_REUSEPORT would silently
 * share) is refused; the others bind the port the first got (port 0). 0, or -1 with err naming
 * --listen. */
int listeners_bind(struct listeners *ls, const struct config_addr *a, unsigned n, char *err,
                   size_t errlen);

/* Adopt the sockets systemd passed (LISTEN_PID = this process, LISTEN_FDS = n from fd 3,
 * LISTEN_FDNAMES: the one named "admin" is the admin listener), and unset the three variables so
 * that no child inherits them. Returns the number of forward-auth sockets adopted, 0 when nothing
 * was passed to this process, -1 with err when a passed descriptor is not a listening TCP socket.
 */
int listeners_from_systemd(struct listeners *ls, char *err, size_t errlen);

/* Check that fd is a listening TCP socket and make it ready to accept from (close-on-exec,
 * TCP_NODELAY inherited by accepted sockets); *port gets its port. 0, or -1 with err (what names
 * the descriptor's origin). */
int listeners_check(int fd, const char *what, int *port, char *err, size_t errlen);

/* Worker id's share of the set among nworkers: every socket is accepted from by at least one
 * worker (a SO_REUSEPORT group keeps hashing connections to each of its sockets). Sockets i with
 * i % nworkers == id; with fewer sockets than workers, socket id % n (several rings then accept
 * from one socket). Writes at most LISTENERS_MAX descriptors to out; returns how many. */
unsigned listeners_share(const struct listeners *ls, unsigned id, unsigned nworkers, int *out);

/* Close the set (the admin one too, unless given to the admin listener: set admin_fd to -1). */
void listeners_close(struct listeners *ls);

#endif
