/*
 * handover.h — an upgrade without systemd: the running daemon gives its listening sockets to its
 * successor over a Unix socket (--handover PATH), and drains once the successor serves.
 *
 *   successor                               running daemon (handover thread)
 *   connect(PATH); "TAKE\n"          ->
 *                                    <-     "LISTENERS <n> <admin 0|1>\n" + SCM_RIGHTS: the n
 *                                           forward-auth sockets, then the admin one
 *   starts its workers on them (the running daemon accepts from them too meanwhile)
 *   "READY\n"                        ->
 *                                    <-     "DRAINING\n"; closes its end of PATH, then SIGTERM
 *                                           to itself: stops accepting, finishes what is in
 *                                           flight, exits 0 (its copies of the sockets close;
 *                                           the successor's keep them and their queues alive)
 *   unlink(PATH), listens on it itself
 *
 * A successor that goes away before READY (it failed to start) changes nothing: the running
 * daemon goes on serving and waits for the next. Only a peer of this process's user is served.
 */
#ifndef AUTHCACHE_HANDOVER_H
#define AUTHCACHE_HANDOVER_H

#include <stddef.h>

#include "listeners.h"

struct handover;

/* Ask the daemon listening on path for its sockets, into ls (empty). Returns 1 with *conn the
 * open connection (for handover_ready), 0 when no daemon listens there (ls untouched, *conn -1),
 * -1 with err naming --handover. */
int handover_take(const char *path, struct listeners *ls, int *conn, char *err, size_t errlen);

/* Tell the predecessor on conn that this daemon serves, wait (briefly) for its DRAINING, close
 * conn. 0, or -1 with err (the predecessor went away: it serves no more either way). */
int handover_ready(int conn, char *err, size_t errlen);

/* Listen on path (replacing a stale socket file) and give ls (and admin_fd, if >= 0) to the
 * first successor that asks, on a thread of its own; when it is READY, raise SIGTERM in this
 * process. ls must outlive handover_stop. NULL with err naming --handover. */
struct handover *handover_serve(const char *path, const struct listeners *ls, int admin_fd,
                                char *err, size_t errlen);

/* 1 if the sockets went to a successor (then the SIGTERM was ours). */
int handover_done(const struct handover *h);

/* Stop the thread; remove path unless a successor took it over. NULL is a no-op. */
void handover_stop(struct handover *h);

#endif
