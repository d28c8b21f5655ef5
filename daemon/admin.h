/* admin.h — the admin listener on its own thread (admin.c). */
#ifndef AUTHCACHE_ADMIN_H
#define AUTHCACHE_ADMIN_H

#include <stddef.h>

#include "daemon.h"

struct admin;

/* Bind cfg->admin and serve it on a thread. NULL with a one-line reason naming --admin on failure. */
struct admin *admin_start(struct daemon *d, char *err, size_t errlen);
int admin_port(const struct admin *a);
void admin_stop(struct admin *a);

#endif
