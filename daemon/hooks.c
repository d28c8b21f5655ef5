/*
 * hooks.c — authentik's notification webhook (hooks.h).
 *
 * authentik's Webhook transport (authentik/events/models.py, NotificationTransport.send_webhook)
 * POSTs {"body", "severity", "user_email", "user_username", "event_user_email",
 * "event_user_username"}, where body is the event's summary ("<action>: <context>") and
 * user_* name the notification's recipient, event_user_* the user the event is about. Events
 * whose action ends a user's access (authentik/events/models.py, EventAction):
 *  - "logout": the user signed out of authentik: every session of theirs is gone;
 *  - "password_set": their password was set or changed (authentik/core/signals.py sends it with
 *    the user whose password it is): other sessions must not outlive it;
 *  - "model_deleted" / "model_updated" of a user (deleted, disabled) are purged only when a body
 *    mapping names the user in "username": with the default body, event_user_* is the admin who
 *    acted, not the user acted on.
 * "login_failed" is not among them: anyone can fail to log in as anyone, and nothing held is wrong.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>

#include "hooks.h"
#include "json.h"
#include "log.h"

#define HOOKS_TIMEOUT_MS 2000

int hooks_wants(const struct http_req *req)
{
    size_t n = strlen(HOOKS_PATH);
    const char *q = memchr(req->target, '?', req->target_len);
    size_t plen = q ? (size_t)(q - req->target) : req->target_len;

    return plen == n && memcmp(req->target, HOOKS_PATH, n) == 0;
}

int hooks_decode(const char *body, size_t len, struct hooks_event *ev, const char **why)
{
    static const char *const k_action[] = {"action"}, *const k_body[] = {"body"},
                             *const k_user[] = {"username"},
                             *const k_euser[] = {"event_user_username"};
    char summary[64];
    int rc;

    memset(ev, 0, sizeof(*ev));
    if (json_check_object(body, len) < 0) {
        *why = "the body is not a JSON object";
        return -EINVAL;
    }
    rc = json_get_string(body, len, k_action, 1, ev->action, sizeof(ev->action), NULL);
    if (rc < 0) {
        ev->action[0] = 0;
        /* The summary may be long: only its start matters, and json_get_string leaves the
         * first bytes of a string too long for summary in it. */
        rc = json_get_string(body, len, k_body, 1, summary, sizeof(summary), NULL);
        if (rc == 0 || rc == -EMSGSIZE) {
            size_t n = strcspn(summary, ":");

            if (summary[n] == ':' && n < sizeof(ev->action)) {
                memcpy(ev->action, summary, n);
                ev->action[n] = 0;
            }
        }
    }
    int named =
        json_get_string(body, len, k_user, 1, ev->user, sizeof(ev->user), NULL) == 0 && ev->user[0];
    if (!named && json_get_string(body, len, k_euser, 1, ev->user, sizeof(ev->user), NULL) < 0)
        ev->user[0] = 0;
    if (strcmp(ev->action, "logout") == 0 || strcmp(ev->action, "password_set") == 0)
        ev->purge = ev->user[0] != 0;
    else if (strcmp(ev->action, "model_deleted") == 0 || strcmp(ev->action, "model_updated") == 0)
        ev->purge = named;
    if (!ev->purge)
        ev->user[0] = 0;
    *why = NULL;
    return 0;
}

static void reply(int fd, int status, const char *reason, const char *type, const char *body)
{
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\nConnection: close\r\n%s\r\n",
                     status, reason, type, strlen(body),
                     status == 401 ? "WWW-Authenticate: Bearer\r\n" : "");
    struct iovec iov[2] = {{head, (size_t)n}, {(void *)body, strlen(body)}};
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};

    if (sendmsg(fd, &mh, MSG_NOSIGNAL) < 0) {
        /* the client left */
    }
}

static int token_ok(const struct config *cfg, const struct http_req *req)
{
    const struct http_hdr *h = http_hdr_find(req->hdrs, req->nhdrs, "Authorization");
    unsigned char diff = 0;

    if (!cfg->admin_token_len || !h || h->value_len != 7 + cfg->admin_token_len ||
        strncasecmp(h->value, "Bearer ", 7) != 0)
        return 0;
    for (size_t i = 0; i < cfg->admin_token_len; i++)
        diff |= (unsigned char)(h->value[7 + i] ^ cfg->admin_token[i]);
    return diff == 0;
}

void hooks_serve(struct daemon *d, int fd, const struct http_req *req, const char *have,
                 size_t nhave)
{
    static char body[HOOKS_MAX_BODY]; /* the admin thread's only */
    struct timeval tv = {HOOKS_TIMEOUT_MS / 1000, (HOOKS_TIMEOUT_MS % 1000) * 1000};
    struct hooks_event ev;
    const char *why;
    char out[128];
    size_t len;
    int rc;

    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (req->method_len != 4 || memcmp(req->method, "POST", 4) != 0) {
        reply(fd, 405, "Method Not Allowed", "text/plain; charset=utf-8", "method not allowed\n");
        return;
    }
    if (!token_ok(d->cfg, req)) {
        reply(fd, 401, "Unauthorized", "text/plain; charset=utf-8",
              d->cfg->admin_token_len ? "the admin token is required\n"
                                      : "the webhook needs --admin-token-file\n");
        return;
    }
    if (req->chunked || req->content_length < 0) {
        reply(fd, 411, "Length Required", "text/plain; charset=utf-8",
              "Content-Length is required\n");
        return;
    }
    if (req->content_length > HOOKS_MAX_BODY) {
        reply(fd, 413, "Payload Too Large", "text/plain; charset=utf-8", "body too large\n");
        return;
    }
    len = (size_t)req->content_length;
    if (nhave > len)
        nhave = len;
    if (nhave < len && http_hdr_find(req->hdrs, req->nhdrs, "Expect") &&
        send(fd, "HTTP/1.1 100 Continue\r\n\r\n", 25, MSG_NOSIGNAL) < 0)
        return; /* curl asks before a body over 1 KiB; the client left */
    memcpy(body, have, nhave);
    while (nhave < len) {
        ssize_t n = recv(fd, body + nhave, len - nhave, 0);
        if (n <= 0) {
            reply(fd, 400, "Bad Request", "text/plain; charset=utf-8", "body incomplete\n");
            return;
        }
        nhave += (size_t)n;
    }
    if (hooks_decode(body, len, &ev, &why) < 0) {
        snprintf(out, sizeof(out), "bad JSON: %s\n", why);
        reply(fd, 400, "Bad Request", "text/plain; charset=utf-8", out);
        return;
    }
    if (!ev.purge) {
        log_debug("hook_ignored", "authentik webhook: action \"%s\" ends no access", ev.action);
        reply(fd, 200, "OK", "application/json", "{\"purged\":0}\n");
        return;
    }
    rc = daemon_purge(d, ev.user, strlen(ev.user), NULL, 0, "authentik webhook");
    if (rc < 0) {
        reply(fd, 500, "Internal Server Error", "text/plain; charset=utf-8", "purge failed\n");
        return;
    }
    log_info("hook_purge", "authentik webhook: %s: %d answers purged", ev.action, rc);
    snprintf(out, sizeof(out), "{\"purged\":%d}\n", rc);
    reply(fd, 200, "OK", "application/json", out);
}
