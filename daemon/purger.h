/*
 * purger.h — the purge thread: scans of the segment that a worker must not wait for (a purge by
 * user or session walks the whole table: milliseconds at 64 k answers). A worker stamps the purge
 * (epoch.h: from then on no answer it covers is served) and queues it here; the thread removes the
 * answers. daemon_purge_soon (daemon.h) is the way in.
 */
#ifndef AUTHCACHE_PURGER_H
#define AUTHCACHE_PURGER_H

#include "daemon.h"

struct purger;

/* Start the thread for d. 0, or -errno (nothing started). */
int purger_start(struct daemon *d, struct purger **out);

/* Queue p (copied, and why) to be run by the thread; find_users: also purge every user found among
 * the answers of p's credentials. 0, or -ENOSPC when the queue is full (the caller runs it itself).
 * Any thread. */
int purger_queue(struct purger *pg, const struct purge *p, int find_users, const char *why);

/* Exact stamps wait for a walk (epoch_pending finds them); why is for the walk's log line. 0, or
 * -ESHUTDOWN once stopping (the caller walks itself). Any thread. */
int purger_poke(struct purger *pg, const char *why);

/* Run what is queued (and the exact stamps that wait), stop the thread, free it. NULL is fine. */
void purger_stop(struct purger *pg);

#endif
