/*
 * feed.h — authentik's outpost event feed (--authentik-url, --authentik-token-file): a thread that
 * stays connected to authentik's outpost websocket as an outpost instance does and, when authentik
 * says a session ended, purges every answer of that session here and, through the bus, everywhere
 * (docs/daemon.md, "authentik event feed").
 */
#ifndef AUTHCACHE_FEED_H
#define AUTHCACHE_FEED_H

#include <stddef.h>
#include <stdint.h>

#include "daemon.h"

#define FEED_SID_MAX 256 /* longest session id or sid claim handled */

struct feed;

/* Start the thread for d (d->cfg->authentik set). 0, or -errno (nothing started). */
int feed_start(struct daemon *d, struct feed **out);

/* Close the connection, stop the thread, free it. NULL is fine. */
void feed_stop(struct feed *f);

/* The feed's Prometheus lines into out (NUL-terminated); "" when f is NULL. Returns the length.
 * Any thread. */
size_t feed_metrics_text(struct feed *f, char *out, size_t cap);

/* What a message of the feed means. */
struct feed_event {
    int instruction;               /* authentik's WebsocketMessageInstruction */
    int session_end;               /* 1: session_id names a session that ended */
    char session_id[FEED_SID_MAX]; /* NUL-terminated */
};

/* Decode one text message {"instruction": N, "args": {...}}. 0, or -EINVAL (not such a message).
 * Safe for any bytes (fuzzed). */
int feed__decode(const char *msg, size_t len, struct feed_event *ev);

/* The sid claim of the X-authentik-jwt among stored identity header lines ("Name: value\r\n"...).
 * Returns its length (sid NUL-terminated), -ENOENT (no such header or claim) or -EINVAL. */
int feed__jwt_sid(const char *hdrs, size_t len, char sid[FEED_SID_MAX]);

/* 1 if a session_id from the feed names the session of a token whose sid claim is sid: equal, or
 * (authentik 2025.x) the lowercase hex SHA-256 of the sid. */
int feed__sid_matches(const char *sid, size_t sid_len, const char *session_id);

#endif
