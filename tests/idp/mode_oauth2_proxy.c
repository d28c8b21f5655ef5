/*
 * mode_oauth2_proxy.c — answers as oauth2-proxy's /oauth2/auth does (docs/idps.md §2), plus its
 * /oauth2/sign_out.
 *
 * Session loaders in oauth2-proxy's order (buildSessionChain), each passing on once a session is
 * loaded: (1) with --skip-jwt-bearer-tokens, `Authorization: Bearer TOKEN` registered for a user
 * (the test IdP's stand-in for a valid JWT); any other Authorization value is an invalid JWT, which
 * --deny-invalid-jwts answers 403 at once; (2) `Authorization: Basic` of a registered user:password
 * (the htpasswd loader); (3) the session cookie (_oauth2_proxy, or _oauth2_proxy_0 + _1 joined).
 * A cookie session older than --cookie-refresh is "refreshed": the 202 carries a new cookie whose
 * value is derived from the session's sid and the number of refresh periods passed, so the same
 * question gets the same answer; the new value is itself a session (a copy).
 *
 * Then: a skip route (the auth request's own method, the path of X-Forwarded-Uri) or a trusted
 * client IP (X-Real-IP, oauth2-proxy's default --real-client-ip-header; else the TCP peer) is an
 * allowed request: 202, with the loaded session's identity if any, no group or email checks.
 * Otherwise no session → 401; the auth request's query allowed_groups / allowed_emails /
 * allowed_email_domains refusing → 403; else 202. X-Auth-Request-* only with --set-xauthrequest.
 */
#include <stdio.h>
#include <stdlib.h>

#include "idp.h"

enum { O2P_AUTH = 1, O2P_SIGN_OUT };

int oauth2_proxy_route(const struct req *r, bool *count)
{
    *count = true;
    if (str_eq(r->path, "/oauth2/auth"))
        return O2P_AUTH;
    if (str_eq(r->path, "/oauth2/sign_out")) {
        *count = false; /* a normal request, not a forward-auth check */
        return O2P_SIGN_OUT;
    }
    return 0;
}

/* Go's http.Error: the status text and a newline, as text/plain. */
static void go_error(struct conn *c, int status, const char *text)
{
    char body[64];
    int n = snprintf(body, sizeof body, "%s\n", text);
    resp_start(c, status);
    out_put(c, "X-Content-Type-Options: nosniff\r\n", 33);
    resp_finish(c, "text/plain; charset=utf-8", body, (size_t)n);
}

/* SignOut: ClearSessionCookie, then a 302 to rd (a local path) or "/". With the cookie session
 * store the session itself is not ended: a copied cookie stays valid until it expires. */
static void sign_out(struct conn *c, const struct req *r)
{
    char rd[512], body[600];
    int n = query_get(r->query, "rd", rd, sizeof rd);
    if (n <= 0 || rd[0] != '/' || rd[1] == '/' || rd[1] == '\\' || !text_ok(rd) || strchr(rd, ' '))
        strcpy(rd, "/");
    resp_start(c, 302);
    out_printf(c, "Location: %s\r\n", rd);
    out_printf(c,
               "Set-Cookie: %s=; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; "
               "Secure; SameSite=Lax\r\n",
               cfg.cookie_name);
    n = snprintf(body, sizeof body, "<a href=\"%s\">Found</a>.\n\n", rd);
    resp_finish(c, "text/html; charset=utf-8", body, (size_t)n);
}

/* One comma-separated list of the auth request's query, e.g. allowed_groups=a,b. */
static bool list_has(const char *list, const char *item, size_t item_len)
{
    for (const char *p = list;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        struct str v = str_trim((struct str){p, len});
        if (v.n == item_len && memcmp(v.p, item, item_len) == 0)
            return true;
        if (!comma)
            return false;
        p = comma + 1;
    }
}

/* authOnlyAuthorize's checkAllowedGroups / checkAllowedEmailDomains / checkAllowedEmails: every
 * parameter present must accept the session. */
static bool query_allows(struct str q, const struct sess_info *s)
{
    char list[1024];
    if (query_get(q, "allowed_groups", list, sizeof list) >= 0) {
        bool any = false;
        for (const char *g = s->groups; *g && !any;) {
            const char *bar = strchr(g, '|');
            size_t len = bar ? (size_t)(bar - g) : strlen(g);
            any = list_has(list, g, len);
            g = bar ? bar + 1 : g + len;
        }
        if (!any)
            return false;
    }
    if (query_get(q, "allowed_email_domains", list, sizeof list) >= 0) {
        const char *at = strrchr(s->email, '@');
        if (!at || !list_has(list, at + 1, strlen(at + 1)))
            return false;
    }
    if (query_get(q, "allowed_emails", list, sizeof list) >= 0 &&
        !list_has(list, s->email, strlen(s->email)))
        return false;
    return true;
}

/* IsAllowedRequest without preflight: a skip route or a trusted client IP. */
static bool allowed_request(const struct conn *c, const struct req *r)
{
    if (cfg.nroutes) {
        char path[2048];
        struct str uri = r->fwd_uri.p ? r->fwd_uri : r->path;
        const char *qm = memchr(uri.p, '?', uri.n);
        size_t n = qm ? (size_t)(qm - uri.p) : uri.n;
        if (n < sizeof path) {
            memcpy(path, uri.p, n);
            path[n] = '\0';
            for (int i = 0; i < cfg.nroutes; i++) {
                const struct route *rt = &cfg.routes[i];
                if ((!rt->method[0] || str_eq(r->method, rt->method)) &&
                    regexec(&rt->re, path, 0, NULL, 0) == 0)
                    return true;
            }
        }
    }
    if (cfg.ntrusted) {
        uint8_t ip[16];
        bool ok = r->real_ip.p ? ip_parse(r->real_ip, ip)
                               : ip_parse((struct str){c->peer, strlen(c->peer)}, ip);
        if (ok && cidr_match(cfg.trusted, cfg.ntrusted, ip))
            return true;
    }
    return false;
}

static void put_groups(struct conn *c, const char *groups)
{
    out_put(c, "X-Auth-Request-Groups: ", 23);
    for (const char *g = groups; *g; g++)
        out_put(c, *g == '|' ? "," : g, 1);
    out_put(c, "\r\n", 2);
}

void oauth2_proxy_answer(struct conn *c, const struct req *r, int kind)
{
    if (kind == O2P_SIGN_OUT) {
        sign_out(c, r);
        return;
    }
    struct sess_info s;
    bool have = false, from_cookie = false;
    if (cfg.skip_jwt_bearer_tokens && r->authorization.n) {
        struct str token;
        if (bearer_parse(r->authorization, &token) && cred_session(NULL, token, &s))
            have = true;
        else if (cfg.deny_invalid_jwts) {
            go_error(c, 403, "Forbidden");
            return;
        }
    }
    if (!have && r->authorization.n) {
        char user[MAX_USER + 1], pass[MAX_SECRET + 1];
        if (basic_parse(r->authorization, user, sizeof user, pass, sizeof pass))
            have = cred_session(user, (struct str){pass, strlen(pass)}, &s);
    }
    if (!have && r->has_cookie && cookie_ok(r->cookie)) {
        have = from_cookie = session_get(r->cookie, &s);
    }

    if (!allowed_request(c, r)) {
        if (!have) {
            go_error(c, 401, "Unauthorized");
            return;
        }
        if (!query_allows(r->query, &s)) {
            go_error(c, 403, "Forbidden");
            return;
        }
    }

    resp_start(c, 202);
    if (have && cfg.set_xauthrequest) {
        out_printf(c, "X-Auth-Request-User: %s\r\n", s.user);
        out_printf(c, "X-Auth-Request-Email: %s\r\n", s.email);
        if (s.groups[0])
            put_groups(c, s.groups);
        out_printf(c, "X-Auth-Request-Preferred-Username: %s\r\n", s.user);
    }
    if (from_cookie && cfg.cookie_refresh > 0) {
        long periods = (long)(time(NULL) - s.created) / cfg.cookie_refresh;
        if (periods > 0) {
            char num[24], fresh[NEW_COOKIE_LEN + 1];
            int n = snprintf(num, sizeof num, "%ld", periods);
            const struct str parts[] = {{"refresh", 7}, {s.sid, strlen(s.sid)}, {num, (size_t)n}};
            derive_token(fresh, NEW_COOKIE_LEN, ALNUM, parts, 3);
            session_alias((struct str){fresh, NEW_COOKIE_LEN}, &s);
            out_printf(c,
                       "Set-Cookie: %s=%s; Path=/; Max-Age=%d; HttpOnly; Secure; "
                       "SameSite=Lax\r\n",
                       cfg.cookie_name, fresh, 7 * 86400);
        }
    }
    resp_finish(c, NULL, "", 0);
}

/* [METHOD=]REGEX, as oauth2-proxy's --skip-auth-route (POSIX extended regex here). */
void oauth2_proxy_parse_route(const char *spec)
{
    if (cfg.nroutes == MAX_ROUTES)
        die_usage("--skip-auth-route: at most %d", MAX_ROUTES);
    struct route *rt = &cfg.routes[cfg.nroutes];
    const char *re = spec, *eq = strchr(spec, '=');
    rt->method[0] = '\0';
    if (eq && eq > spec && (size_t)(eq - spec) < sizeof rt->method) {
        bool upper = true;
        for (const char *p = spec; p < eq; p++)
            upper = upper && *p >= 'A' && *p <= 'Z';
        if (upper) {
            memcpy(rt->method, spec, (size_t)(eq - spec));
            rt->method[eq - spec] = '\0';
            re = eq + 1;
        }
    }
    if (regcomp(&rt->re, re, REG_EXTENDED | REG_NOSUB) != 0)
        die_usage("--skip-auth-route %s: not a POSIX extended regex", spec);
    cfg.nroutes++;
}
