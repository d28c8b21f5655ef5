/*
 * hooks.h — POST /v1/hooks/authentik on the admin listener: authentik's notification webhook
 * (a Webhook transport of a notification rule). An event that ends a user's access purges that
 * user's answers here and, with --bus, on every node (docs/daemon.md, "authentik webhook").
 */
#ifndef AUTHCACHE_HOOKS_H
#define AUTHCACHE_HOOKS_H

#include <stddef.h>

#include "daemon.h"
#include "http.h"

#define HOOKS_PATH "/v1/hooks/authentik"
#define HOOKS_MAX_BODY (64 * 1024)

/* 1 if req is a request for the webhook (any method: hooks_serve answers 405 for others). */
int hooks_wants(const struct http_req *req);

/*
 * Answer req on fd (a blocking socket or not: it is made blocking with timeouts here) and leave fd
 * open for the caller to close. have[0, nhave) are the bytes read after the request's head (the
 * start of the body); the rest of the body is read here. Checks the bearer token of
 * --admin-token-file in constant time: without the right one, 401 and nothing done.
 */
void hooks_serve(struct daemon *d, int fd, const struct http_req *req, const char *have,
                 size_t nhave);

/* What a webhook body asks. */
struct hooks_event {
    char action[64]; /* authentik's event action: "logout", "password_set", ... */
    char user[256];  /* whose access ends; "" when none applies */
    int purge;       /* 1: purge user */
};

/*
 * Decode authentik's webhook JSON body (json.h rules). The action is the "action" member if there
 * is one (a body mapping may send it), else the start of "body" up to ':' (authentik's default body
 * is the event's summary, "<action>: <context>"). The user is "username" if present, else
 * "event_user_username" — the event's user, never "user_username" (the notification's recipient).
 * 0 with *ev set; -EINVAL with why (a one-line reason) for a body that is not a JSON object.
 * Safe for any bytes (fuzzed).
 */
int hooks_decode(const char *body, size_t len, struct hooks_event *ev, const char **why);

#endif
