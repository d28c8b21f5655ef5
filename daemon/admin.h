/* admin.h — the admin listener on its own thread (admin.c). */
#ifndef AUTHCACHE_ADMIN_H
#define AUTHCACHE_ADMIN_H

#include <stddef.h>

#include "daemon.h"

struct admin;

/* Bind cfg->admin (before the segment is opened, so a start that cannot listen changes nothing).
 * NULL with a one-line reason naming --admin on failure. */
struct admin *admin_bind(struct daemon *d, char *err, size_t errlen);
/* The same with a listening socket already made (systemd's, or a predecessor's: listeners.h),
 * which becomes the admin listener's; port is its port. */
struct admin *admin_adopt(struct daemon *d, int fd, int port, char *err, size_t errlen);
/* Its listening socket (to hand over; still the admin listener's). */
int admin_fd(const struct admin *a);
/* Serve it on its own thread, once d->shm is open. 0 or -errno. */
int admin_run(struct admin *a);
int admin_port(const struct admin *a);
void admin_stop(struct admin *a);

#endif
