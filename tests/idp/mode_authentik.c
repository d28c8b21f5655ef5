/*
 * mode_authentik.c — forward-auth answers as authentik's embedded outpost gives them (the default
 * mode; docs/idps.md §1): the traefik/caddy/envoy endpoints (302 to the login page) and nginx
 * (401), application choice by host (single-app mode, or domain mode where every host under the
 * cookie domain shares one application and one cookie), the session cookie first and then
 * `Authorization: Bearer`/`Basic` for a registered credential (a header login hands out a new
 * session cookie on its 200), X-authentik-* identity headers plus the session's extra headers
 * (authentik's additionalHeaders), group allow-lists, unauthenticated prefixes and anything under
 * /outpost.goauthentik.io answered 200 without identity, the login callback and the sign-out.
 *
 * Decision order: application, sign-out, login callback, unauthenticated prefix, cookie session,
 * header credential, login redirect. A new cookie value or state nonce is derived from the request
 * (derive_token()), so the same question gets the same answer.
 */
#include <stdio.h>
#include <stdlib.h>

#include "idp.h"

#define SIGN_OUT_PATH "/outpost.goauthentik.io/sign_out"
#define CALLBACK_PATH "/outpost.goauthentik.io/callback"
#define OUTPOST_PREFIX "/outpost.goauthentik.io"
#define IDP_ORIGIN "https://idp.test"
#define OUTPOST_NAME "authentik Embedded Outpost"
#define OUTPOST_VERSION "goauthentik.io/outpost/2024.8.3"

enum { AK_REDIRECT = 1, AK_NGINX };

int authentik_route(const struct req *r, bool *count)
{
    *count = true;
    if (str_eq(r->path, "/outpost.goauthentik.io/auth/nginx"))
        return AK_NGINX;
    if (str_eq(r->path, "/outpost.goauthentik.io/auth/traefik") ||
        str_eq(r->path, "/outpost.goauthentik.io/auth/caddy") ||
        str_eq(r->path, "/outpost.goauthentik.io/auth/envoy"))
        return AK_REDIRECT;
    return 0;
}

/* lookupApp: the application of that exact host, else the domain-mode application whose cookie
 * domain is the longest suffix of host. */
static const struct app *app_find(const char *host)
{
    const struct app *best = NULL;
    size_t best_len = 0, hl = strlen(host);
    for (int i = 0; i < cfg.napps; i++)
        if (strcmp(cfg.apps[i].host, host) == 0)
            return &cfg.apps[i];
    for (int i = 0; i < cfg.napps; i++) {
        const char *d = cfg.apps[i].domain;
        size_t dl = strlen(d);
        if (dl == 0 || dl > hl || dl <= best_len)
            continue;
        if (strcmp(host + hl - dl, d) == 0 && (hl == dl || host[hl - dl - 1] == '.')) {
            best = &cfg.apps[i];
            best_len = dl;
        }
    }
    return best;
}

static void put_set_cookie(struct conn *c, const char *domain, struct str value)
{
    out_printf(c, "Set-Cookie: %s=%.*s; Path=/; Domain=%s; Max-Age=%d; HttpOnly; SameSite=Lax\r\n",
               cfg.cookie_name, (int)value.n, value.p, domain, COOKIE_MAX_AGE);
}

static void resp_redirect_body(struct conn *c)
{
    static const char body[] = "<html><body>Found: redirecting.</body></html>\n";
    resp_finish(c, "text/html; charset=utf-8", body, sizeof body - 1);
}

/* The 200 of an allowed session: identity, meta, then the session's extra headers. */
static void put_allowed(struct conn *c, const struct app *app, const struct sess_info *s)
{
    resp_start(c, 200);
    out_put(c, s->hdr, s->hdr_len);
    out_put(c, app->meta, app->meta_len);
    out_put(c, s->extra, s->extra_len);
}

/* auth.go checkAuth steps 3-4: a registered bearer token or Basic user:password. */
static bool header_login(struct str auth, struct sess_info *s)
{
    char user[MAX_USER + 1], pass[MAX_SECRET + 1];
    struct str token;
    if (bearer_parse(auth, &token))
        return cred_session(NULL, token, s);
    if (basic_parse(auth, user, sizeof user, pass, sizeof pass))
        return cred_session(user, (struct str){pass, strlen(pass)}, s);
    return false;
}

void authentik_answer(struct conn *c, const struct req *r, int kind)
{
    char host[MAX_HOST + 1];
    const struct app *app = host_normalize(r->fwd_host, host) ? app_find(host) : NULL;
    if (!app) {
        resp_text(c, 400, "no application for this X-Forwarded-Host");
        return;
    }
    /* Domain mode: the cookie goes to the whole domain, the login comes back to the app host. */
    const char *cookie_domain = app->domain[0] ? app->domain : host;
    struct str upath = r->fwd_uri, uquery = {"", 0};
    const char *qm = memchr(upath.p, '?', upath.n);
    if (qm) {
        uquery = (struct str){qm + 1, (size_t)(upath.p + upath.n - (qm + 1))};
        upath.n = (size_t)(qm - upath.p);
    }
    struct str proto =
        r->fwd_proto.n && r->fwd_proto.n <= 8 ? r->fwd_proto : (struct str){"http", 4};
    struct str cookie = r->has_cookie && cookie_ok(r->cookie) ? r->cookie : (struct str){"", 0};
    struct str back_host =
        app->domain[0] ? (struct str){app->host, strlen(app->host)} : r->fwd_host;
    const struct str req_parts[] = {proto, r->fwd_host, r->fwd_uri, r->path};
    char fresh[NEW_COOKIE_LEN + 1];

    if (str_has_prefix(upath, SIGN_OUT_PATH) || query_is(uquery, "X-authentik-logout", "true")) {
        if (cookie.n)
            sessions_end(cookie, NULL, true);
        resp_start(c, 302);
        out_printf(c, "Location: http://%.*s/application/o/%s/end-session/\r\n", (int)r->fwd_host.n,
                   r->fwd_host.p, app->slug);
        out_printf(c,
                   "Set-Cookie: %s=; Path=/; Domain=%s; Max-Age=0; "
                   "Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Lax\r\n",
                   cfg.cookie_name, cookie_domain);
        resp_redirect_body(c);
        return;
    }

    if (query_is(uquery, "X-authentik-auth-callback", "true")) {
        char user[MAX_USER + 1], groups[MAX_GROUPS + 1];
        if (query_get(uquery, "code", user, sizeof user) <= 0 || !text_ok(user)) {
            resp_text(c, 400, "login callback without a usable code");
            return;
        }
        int n = query_get(uquery, "groups", groups, sizeof groups);
        if (n == -1)
            groups[0] = '\0';
        else if (n < 0 || !text_ok(groups)) {
            resp_text(c, 400, "login callback with unusable groups");
            return;
        }
        if (!cookie.n) {
            derive_token(fresh, NEW_COOKIE_LEN, ALNUM, req_parts, 4);
            cookie = (struct str){fresh, NEW_COOKIE_LEN};
        }
        if (session_login(cookie, user, groups) < 0) {
            resp_text(c, 500, "cannot create the session");
            return;
        }
        resp_start(c, 302);
        out_printf(c, "Location: %.*s://%.*s/\r\n", (int)proto.n, proto.p, (int)back_host.n,
                   back_host.p);
        put_set_cookie(c, cookie_domain, cookie);
        resp_redirect_body(c);
        return;
    }

    for (int i = 0; i < app->nskip; i++) {
        if (str_has_prefix(upath, app->skip[i])) {
            resp_start(c, 200);
            resp_finish(c, NULL, "", 0);
            return;
        }
    }
    if (str_has_prefix(upath, OUTPOST_PREFIX "/") || str_eq(upath, OUTPOST_PREFIX)) {
        resp_start(c, 200); /* the outpost's own paths: mode_forward.go answers without identity */
        resp_finish(c, NULL, "", 0);
        return;
    }

    struct sess_info s;
    if (cookie.n && session_get(cookie, &s)) {
        if (app->allow[0] && !in_group(s.groups, app->allow)) {
            resp_text(c, 403, "access denied: user is not in the allowed group");
            return;
        }
        put_allowed(c, app, &s);
        resp_finish(c, NULL, "", 0);
        return;
    }

    if (r->authorization.n && header_login(r->authorization, &s)) {
        if (app->allow[0] && !in_group(s.groups, app->allow)) {
            resp_text(c, 403, "access denied: user is not in the allowed group");
            return;
        }
        /* saveAndCacheClaims: the header login becomes a session, sent back as a cookie. */
        const struct str parts[] = {{"header-login", 12}, {s.sid, strlen(s.sid)}, r->authorization};
        derive_token(fresh, NEW_COOKIE_LEN, ALNUM, parts, 3);
        struct str fc = {fresh, NEW_COOKIE_LEN};
        session_alias(fc, &s);
        put_allowed(c, app, &s);
        put_set_cookie(c, cookie_domain, fc);
        resp_finish(c, NULL, "", 0);
        return;
    }

    if (!cookie.n) {
        derive_token(fresh, NEW_COOKIE_LEN, ALNUM, req_parts, 4);
        cookie = (struct str){fresh, NEW_COOKIE_LEN};
    }
    if (kind == AK_NGINX) {
        resp_start(c, 401);
        put_set_cookie(c, cookie_domain, cookie);
        resp_finish(c, "text/plain; charset=utf-8", "unauthorized request", 20);
        return;
    }
    char cb[MAX_HOST + 128], cb_enc[3 * sizeof cb], state[33];
    snprintf(cb, sizeof cb, "%.*s://%.*s" CALLBACK_PATH "?X-authentik-auth-callback=true",
             (int)proto.n, proto.p, (int)back_host.n, back_host.p);
    pct_encode(cb, cb_enc, sizeof cb_enc);
    const struct str sparts[] = {{"state", 5}, cookie, proto, r->fwd_host, r->fwd_uri};
    derive_token(state, 32, HEX, sparts, 5);
    resp_start(c, 302);
    out_printf(c,
               "Location: " IDP_ORIGIN "/application/o/authorize/?client_id=%s&redirect_uri=%s"
               "&response_type=code&state=%s\r\n",
               app->slug, cb_enc, state);
    put_set_cookie(c, cookie_domain, cookie);
    resp_redirect_body(c);
}

static bool host_name_ok(char *h)
{
    for (char *p = h; *p; p++) {
        *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '.' || *p == '-'))
            return false;
    }
    return h[0] && strlen(h) <= MAX_HOST;
}

/* HOST[;allow=GROUP][;skip=PREFIX,PREFIX...][;domain=COOKIE_DOMAIN] */
void authentik_parse_app(const char *spec)
{
    if (cfg.napps == MAX_APPS)
        die_usage("--app: at most %d applications", MAX_APPS);
    struct app *a = &cfg.apps[cfg.napps++];
    memset(a, 0, sizeof *a);
    char buf[2048];
    if (strlen(spec) >= sizeof buf)
        die_usage("--app %s: too long", spec);
    strcpy(buf, spec);
    char *save = NULL;
    char *host = strtok_r(buf, ";", &save);
    if (!host || strlen(host) > MAX_HOST || spec[0] == ';')
        die_usage("--app %s: want HOST[;allow=GROUP][;skip=PREFIX,...][;domain=D]", spec);
    if (!host_name_ok(host))
        die_usage("--app %s: bad host name", spec);
    strcpy(a->host, host);
    size_t slug = strcspn(host, ".");
    if (slug == 0 || slug >= sizeof a->slug)
        die_usage("--app %s: bad host name", spec);
    memcpy(a->slug, host, slug);
    for (char *opt; (opt = strtok_r(NULL, ";", &save));) {
        if (strncmp(opt, "allow=", 6) == 0) {
            if (!opt[6] || strlen(opt + 6) > MAX_USER || !text_ok(opt + 6))
                die_usage("--app %s: bad allow group", spec);
            strcpy(a->allow, opt + 6);
        } else if (strncmp(opt, "skip=", 5) == 0) {
            char *s2 = NULL;
            for (char *pre = strtok_r(opt + 5, ",", &s2); pre; pre = strtok_r(NULL, ",", &s2)) {
                if (a->nskip == MAX_SKIPS || pre[0] != '/' || strlen(pre) > MAX_PREFIX ||
                    !text_ok(pre))
                    die_usage("--app %s: skip prefixes start with '/', at most %d", spec,
                              MAX_SKIPS);
                strcpy(a->skip[a->nskip++], pre);
            }
        } else if (strncmp(opt, "domain=", 7) == 0) {
            char *d = opt + 7 + (opt[7] == '.');
            if (!host_name_ok(d))
                die_usage("--app %s: bad cookie domain", spec);
            size_t hl = strlen(a->host), dl = strlen(d);
            if (dl > hl || strcmp(a->host + hl - dl, d) != 0 ||
                (hl > dl && a->host[hl - dl - 1] != '.'))
                die_usage("--app %s: the host must be under the cookie domain", spec);
            strcpy(a->domain, d);
        } else {
            die_usage("--app %s: unknown option '%s'", spec, opt);
        }
    }
    for (int i = 0; i < cfg.napps - 1; i++)
        if (strcmp(cfg.apps[i].host, a->host) == 0)
            die_usage("--app %s: host given twice", spec);
    int n = snprintf(a->meta, sizeof a->meta,
                     "X-authentik-meta-app: %.*s\r\n"
                     "X-authentik-meta-outpost: " OUTPOST_NAME "\r\n"
                     "X-authentik-meta-provider: Provider for %.*s\r\n"
                     "X-authentik-meta-version: " OUTPOST_VERSION "\r\n",
                     (int)slug, host, (int)slug, host);
    a->meta_len = (size_t)n;
}
