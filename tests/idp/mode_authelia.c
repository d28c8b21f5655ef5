/*
 * mode_authelia.c — answers as Authelia's authz endpoints do (docs/idps.md §3):
 * /api/authz/forward-auth (X-Forwarded-Proto/-Host/-Uri/-Method, all required),
 * /api/authz/auth-request (X-Original-URL and X-Original-Method, required) and the legacy
 * /api/verify (X-Original-URL, else X-Forwarded-*; X-Forwarded-Method, else its own method).
 *
 * Authz.Handler's order: the target URL (400, or 401 for legacy, when missing, not https/wss or
 * not under a --cookie-domain); credentials: `Proxy-Authorization: Basic` of a registered
 * user:password first (legacy with ?auth=basic: `Authorization`), then the authelia_session
 * cookie; a present but bad header is an error that wins over a valid cookie. Then the first
 * --rule that matches host, path (cleaned, with ?query), method, client IP (first X-Forwarded-For
 * entry if it parses, else the TCP peer) and subject (an anonymous user matches any subject:
 * Authorizer.GetRequiredLevel) gives the policy, else --default-policy. isAuthzResult: bypass →
 * 200; deny → 403 unless anonymous on a rule with subjects; one_factor → 200 for a logged-in
 * user. 200 carries Remote-User/-Groups/-Name/-Email when a user is logged in (bypass too).
 * Not authenticated: a header error → 407 + Proxy-Authenticate (forward-auth) or 401 +
 * WWW-Authenticate (auth-request, legacy); otherwise forward-auth/legacy redirect to the portal
 * (302 for GET/HEAD/OPTIONS, 303 else, 401 when XHR or Accept lacks text/html; legacy takes the
 * portal from its ?rd= and answers 401 without one), auth-request answers 401 with Location.
 */
#include <stdio.h>
#include <stdlib.h>

#include "idp.h"

enum { AU_FORWARD_AUTH = 1, AU_AUTH_REQUEST, AU_LEGACY };

#define AUTHENTICATE_BASIC "Basic realm=\"Authorization Required\""

int authelia_route(const struct req *r, bool *count)
{
    *count = true;
    if (str_eq(r->path, "/api/authz/forward-auth"))
        return AU_FORWARD_AUTH;
    if (str_eq(r->path, "/api/authz/auth-request"))
        return AU_AUTH_REQUEST;
    if (str_eq(r->path, "/api/verify"))
        return AU_LEGACY;
    return 0;
}

/* ReplyStatusCode: "<code> <text>" as text/plain. */
static void reply_status(struct conn *c, int status, const char *text, const char *hdr)
{
    char body[64];
    int n = snprintf(body, sizeof body, "%d %s", status, text);
    resp_start(c, status);
    if (hdr)
        out_printf(c, "%s\r\n", hdr);
    resp_finish(c, "text/plain; charset=utf-8", body, (size_t)n);
}

/* The target of the check: its URL as text and its parts. */
struct target {
    char url[2048];
    struct str scheme, authority, path, query;
    char method[16];
};

/* Splits t->url into scheme, authority, path and query; false when it is not an absolute URL. */
static bool target_split(struct target *t)
{
    const char *u = t->url, *sep = strstr(u, "://");
    if (!sep || sep == u)
        return false;
    t->scheme = (struct str){u, (size_t)(sep - u)};
    const char *a = sep + 3, *end = u + strcspn(u, "#");
    const char *pq = a + strcspn(a, "/?#");
    t->authority = (struct str){a, (size_t)(pq - a)};
    const char *qm = memchr(pq, '?', (size_t)(end - pq));
    t->path = (struct str){pq, (size_t)((qm ? qm : end) - pq)};
    t->query = qm ? (struct str){qm + 1, (size_t)(end - qm - 1)} : (struct str){"", 0};
    return t->authority.n > 0;
}

static bool copy_str(char *out, size_t cap, struct str s)
{
    if (s.n >= cap)
        return false;
    memcpy(out, s.p, s.n);
    out[s.n] = '\0';
    return true;
}

/* The object URL and method per endpoint (handleAuthzGetObject*). False: 400 (401 legacy). */
static bool target_get(const struct req *r, int kind, struct target *t)
{
    struct str method = {"", 0};
    bool ok;
    if (kind == AU_AUTH_REQUEST || (kind == AU_LEGACY && r->orig_url.n)) {
        ok = r->orig_url.n && copy_str(t->url, sizeof t->url, r->orig_url);
        method = kind == AU_AUTH_REQUEST ? r->orig_method : r->fwd_method;
    } else {
        ok = r->fwd_proto.n && r->fwd_host.n && r->fwd_uri.n &&
             (size_t)snprintf(t->url, sizeof t->url, "%.*s://%.*s%.*s", (int)r->fwd_proto.n,
                              r->fwd_proto.p, (int)r->fwd_host.n, r->fwd_host.p, (int)r->fwd_uri.n,
                              r->fwd_uri.p) < sizeof t->url;
        method = r->fwd_method;
    }
    if (kind == AU_LEGACY && method.n == 0)
        method = r->method;
    return ok && method.n && copy_str(t->method, sizeof t->method, method) && text_ok(t->url) &&
           !strchr(t->url, ' ') && target_split(t);
}

/* path.Clean of a decoded path, keeping a trailing slash (URLPathFullClean). */
static void path_clean(const char *in, char *out, size_t cap)
{
    size_t o = 0, len = strlen(in);
    bool trailing = len > 1 && in[len - 1] == '/';
    out[o++] = '/';
    for (const char *p = in; *p;) {
        while (*p == '/')
            p++;
        size_t n = strcspn(p, "/");
        if (n == 0)
            break;
        if (n == 1 && p[0] == '.') {
        } else if (n == 2 && p[0] == '.' && p[1] == '.') {
            while (o > 1 && out[o - 1] != '/')
                o--;
            if (o > 1)
                o--;
        } else if (o + n + 2 < cap) {
            if (o > 1)
                out[o++] = '/';
            memcpy(out + o, p, n);
            o += n;
        }
        p += n;
    }
    if (trailing && o > 1 && o + 1 < cap)
        out[o++] = '/';
    out[o] = '\0';
}

static bool domain_under(const char *host, const char *domain)
{
    size_t hl = strlen(host), dl = strlen(domain);
    return hl == dl ? strcmp(host, domain) == 0
                    : hl > dl && host[hl - dl - 1] == '.' && strcmp(host + hl - dl, domain) == 0;
}

static bool rule_host(const char *pattern, const char *host)
{
    if (!pattern[0])
        return true;
    if (pattern[0] == '*' && pattern[1] == '.')
        return strlen(host) > strlen(pattern + 2) && domain_under(host, pattern + 2);
    return strcmp(pattern, host) == 0;
}

/* user NULL: anonymous, who matches any subject (the rule then "has subjects"). */
static bool rule_subject(const struct rule *ru, const struct sess_info *s)
{
    if (!ru->subjects[0] || !s)
        return true;
    char want[MAX_USER + 16];
    snprintf(want, sizeof want, "|user:%s|", s->user);
    if (strstr(ru->subjects, want))
        return true;
    for (const char *g = s->groups; *g;) {
        size_t len = strcspn(g, "|");
        snprintf(want, sizeof want, "|group:%.*s|", (int)len, g);
        if (len && strstr(ru->subjects, want))
            return true;
        g += len + (g[len] == '|');
    }
    return false;
}

/* GetRequiredLevel: the first matching rule's policy and whether it has subjects. */
static enum policy required_level(const char *host, const char *object, const char *method,
                                  const uint8_t ip[16], const struct sess_info *s, bool *subjects)
{
    char m[20];
    snprintf(m, sizeof m, ",%s,", method);
    for (int i = 0; i < cfg.nrules; i++) {
        const struct rule *ru = &cfg.rules[i];
        if (rule_host(ru->host, host) &&
            (!ru->has_path || regexec(&ru->path, object, 0, NULL, 0) == 0) &&
            (!ru->methods[0] || strstr(ru->methods, m)) &&
            (!ru->nnets || cidr_match(ru->nets, ru->nnets, ip)) && rule_subject(ru, s)) {
            *subjects = ru->subjects[0] != '\0';
            return ru->policy;
        }
    }
    *subjects = false;
    return cfg.default_policy;
}

/* The authentication strategies in order. Returns 1 with *s filled, 0 anonymous, -1 when a
 * header was present but bad (an error that stops the strategies). */
static int authenticate(const struct req *r, int kind, struct sess_info *s)
{
    struct str hdr = r->proxy_authorization;
    bool legacy_basic = kind == AU_LEGACY && query_is(r->query, "auth", "basic");
    if (legacy_basic)
        hdr = r->authorization;
    if (hdr.n) {
        char user[MAX_USER + 1], pass[MAX_SECRET + 1];
        bool is_basic = hdr.n > 6 && strncasecmp(hdr.p, "Basic ", 6) == 0;
        if (!is_basic && kind != AU_LEGACY && memchr(hdr.p, ' ', hdr.n))
            goto cookie; /* a scheme this endpoint does not handle is skipped */
        if (!basic_parse(hdr, user, sizeof user, pass, sizeof pass) ||
            !cred_session(user, (struct str){pass, strlen(pass)}, s))
            return -1;
        return 1;
    } else if (legacy_basic) {
        return -1; /* "header Authorization expected" */
    }
cookie:
    if (r->has_cookie && cookie_ok(r->cookie) && session_get(r->cookie, s))
        return 1;
    return 0;
}

static void header_unauthorized(struct conn *c, int kind)
{
    if (kind == AU_FORWARD_AUTH)
        reply_status(c, 407, "Proxy Authentication Required",
                     "Proxy-Authenticate: " AUTHENTICATE_BASIC);
    else
        reply_status(c, 401, "Unauthorized", "WWW-Authenticate: " AUTHENTICATE_BASIC);
}

/* doAuthzRedirect: Location, and unless the object's method is HEAD a link to it. */
static void redirect(struct conn *c, int status, const char *location, const char *method)
{
    char body[3 * 2048], esc[3 * 2048];
    size_t o = 0;
    for (const char *p = location; *p && o + 6 < sizeof esc; p++) {
        const char *rep = *p == '&' ? "&amp;" : *p == '"' ? "&#34;" : *p == '<' ? "&lt;" : NULL;
        if (rep) {
            memcpy(esc + o, rep, strlen(rep));
            o += strlen(rep);
        } else {
            esc[o++] = *p;
        }
    }
    esc[o] = '\0';
    resp_start(c, status);
    out_printf(c, "Location: %s\r\n", location);
    if (strcmp(method, "HEAD") == 0) {
        resp_finish(c, NULL, "", 0);
        return;
    }
    int n = snprintf(body, sizeof body, "<a href=\"%s\">%d %s</a>", esc, status,
                     status == 302   ? "Found"
                     : status == 303 ? "See Other"
                                     : "Unauthorized");
    resp_finish(c, "text/html; charset=utf-8", body, (size_t)n);
}

static bool accepts_html(struct str accept)
{
    for (int i = 0; accept.n; i++) {
        const char *comma = memchr(accept.p, ',', accept.n);
        struct str item = {accept.p, comma ? (size_t)(comma - accept.p) : accept.n};
        const char *semi = memchr(item.p, ';', item.n);
        if (semi)
            item.n = (size_t)(semi - item.p);
        item = str_trim(item);
        if (str_eq(item, "text/html") || (i == 0 && str_eq(item, "*/*")))
            return true;
        if (!comma)
            break;
        accept.n -= (size_t)(comma + 1 - accept.p);
        accept.p = comma + 1;
    }
    return false;
}

static void unauthorized(struct conn *c, const struct req *r, int kind, const struct target *t)
{
    char portal[512], enc_url[3 * sizeof t->url], location[sizeof enc_url + 600];
    if (kind == AU_LEGACY) {
        if (query_get(r->query, "rd", portal, sizeof portal) <= 0) {
            reply_status(c, 401, "Unauthorized", NULL);
            return;
        }
    } else {
        snprintf(portal, sizeof portal, "%s", cfg.portal);
    }
    pct_encode(t->url, enc_url, sizeof enc_url);
    snprintf(location, sizeof location, "%s%s?rd=%s&rm=%s", portal,
             strchr(portal + 8, '/') ? "" : "/", enc_url, t->method);
    int status = 401;
    if (kind != AU_AUTH_REQUEST) {
        bool xhr = r->requested_with.n && str_caseeq(r->requested_with, "XMLHttpRequest");
        if (!xhr && accepts_html(r->accept))
            status = strcmp(t->method, "GET") == 0 || strcmp(t->method, "HEAD") == 0 ||
                             strcmp(t->method, "OPTIONS") == 0
                         ? 302
                         : 303;
    }
    redirect(c, status, location, t->method);
}

void authelia_answer(struct conn *c, const struct req *r, int kind)
{
    int bad = kind == AU_LEGACY ? 401 : 400;
    const char *bad_text = kind == AU_LEGACY ? "Unauthorized" : "Bad Request";
    struct target t;
    char host[MAX_HOST + 1], path[2048], object[4096];
    if (!target_get(r, kind, &t) || !host_normalize(t.authority, host)) {
        reply_status(c, bad, bad_text, NULL);
        return;
    }
    if (!str_caseeq(t.scheme, "https") && !str_caseeq(t.scheme, "wss")) {
        reply_status(c, bad, bad_text, NULL);
        return;
    }
    bool domain_ok = false;
    for (int i = 0; i < cfg.ncookie_domains && !domain_ok; i++)
        domain_ok = domain_under(host, cfg.cookie_domains[i]);
    if (!domain_ok || !pct_decode(t.path.n ? t.path : (struct str){"/", 1}, path, sizeof path)) {
        reply_status(c, bad, bad_text, NULL);
        return;
    }
    char clean[2048];
    path_clean(path, clean, sizeof clean);
    snprintf(object, sizeof object, "%s%s%.*s", clean, t.query.n ? "?" : "", (int)t.query.n,
             t.query.p);

    /* RequestCtxRemoteIP: the first X-Forwarded-For entry when it parses, else the peer. */
    uint8_t ip[16];
    struct str first = r->fwd_for;
    const char *comma = first.n ? memchr(first.p, ',', first.n) : NULL;
    if (comma)
        first.n = (size_t)(comma - first.p);
    if (!first.n || !ip_parse(first, ip))
        ip_parse((struct str){c->peer, strlen(c->peer)}, ip);

    struct sess_info s;
    int authn = authenticate(r, kind, &s);
    bool subjects;
    enum policy need = required_level(host, object, t.method, ip, authn > 0 ? &s : NULL, &subjects);
    if (authn < 0 && need != POLICY_BYPASS) {
        header_unauthorized(c, kind);
        return;
    }
    if (need == POLICY_DENY && (authn > 0 || !subjects)) {
        reply_status(c, 403, "Forbidden", NULL);
        return;
    }
    if (need == POLICY_BYPASS || (need == POLICY_ONE_FACTOR && authn > 0)) {
        resp_start(c, 200);
        if (authn > 0) {
            out_printf(c, "Remote-User: %s\r\nRemote-Groups: ", s.user);
            for (const char *g = s.groups; *g; g++)
                out_put(c, *g == '|' ? "," : g, 1);
            out_printf(c, "\r\nRemote-Name: Test %s\r\nRemote-Email: %s\r\n", s.user, s.email);
        }
        resp_finish(c, NULL, "", 0);
        return;
    }
    unauthorized(c, r, kind, &t);
}

/* host=H;path=REGEX;methods=GET,HEAD;networks=CIDR[,CIDR];subject=group:G|user:U;policy=P */
void authelia_parse_rule(const char *spec)
{
    if (cfg.nrules == MAX_RULES)
        die_usage("--rule: at most %d", MAX_RULES);
    struct rule *ru = &cfg.rules[cfg.nrules];
    memset(ru, 0, sizeof *ru);
    char buf[2048];
    bool have_policy = false;
    if (strlen(spec) >= sizeof buf)
        die_usage("--rule %s: too long", spec);
    strcpy(buf, spec);
    char *save = NULL;
    for (char *opt = strtok_r(buf, ";", &save); opt; opt = strtok_r(NULL, ";", &save)) {
        char *v = strchr(opt, '=');
        if (!v)
            die_usage("--rule %s: '%s' is not KEY=VALUE", spec, opt);
        *v++ = '\0';
        if (strcmp(opt, "host") == 0) {
            if (!host_normalize((struct str){v, strlen(v)}, ru->host))
                die_usage("--rule %s: bad host", spec);
        } else if (strcmp(opt, "path") == 0) {
            if (regcomp(&ru->path, v, REG_EXTENDED | REG_NOSUB) != 0)
                die_usage("--rule %s: path is not a POSIX extended regex", spec);
            ru->has_path = true;
        } else if (strcmp(opt, "methods") == 0) {
            if (strlen(v) + 3 > sizeof ru->methods || !*v)
                die_usage("--rule %s: bad methods", spec);
            snprintf(ru->methods, sizeof ru->methods, ",%s,", v);
        } else if (strcmp(opt, "networks") == 0) {
            char *s2 = NULL;
            for (char *n = strtok_r(v, ",", &s2); n; n = strtok_r(NULL, ",", &s2))
                if (ru->nnets == MAX_CIDRS || !cidr_parse(n, &ru->nets[ru->nnets++]))
                    die_usage("--rule %s: bad network '%s'", spec, n);
        } else if (strcmp(opt, "subject") == 0) {
            if (strlen(v) + 3 > sizeof ru->subjects || !text_ok(v))
                die_usage("--rule %s: bad subject", spec);
            snprintf(ru->subjects, sizeof ru->subjects, "|%s|", v);
            for (char *p = ru->subjects + 1; *p; p += strcspn(p, "|") + 1)
                if (strncmp(p, "user:", 5) != 0 && strncmp(p, "group:", 6) != 0)
                    die_usage("--rule %s: subjects are user:U or group:G, '|'-separated", spec);
        } else if (strcmp(opt, "policy") == 0) {
            have_policy = true;
            if (strcmp(v, "bypass") == 0)
                ru->policy = POLICY_BYPASS;
            else if (strcmp(v, "one_factor") == 0)
                ru->policy = POLICY_ONE_FACTOR;
            else if (strcmp(v, "deny") == 0)
                ru->policy = POLICY_DENY;
            else
                die_usage("--rule %s: policy is bypass, one_factor or deny", spec);
        } else {
            die_usage("--rule %s: unknown key '%s'", spec, opt);
        }
    }
    if (!have_policy)
        die_usage("--rule %s: needs policy=", spec);
    cfg.nrules++;
}

static void rules_for_host(const struct app *a, const char *host)
{
    char spec[1024], re[2 * MAX_PREFIX + 2];
    for (int i = 0; i < a->nskip; i++) {
        size_t o = 0;
        re[o++] = '^';
        for (const char *p = a->skip[i]; *p; p++) {
            if (strchr(".[]{}()\\*+?^$|", *p))
                re[o++] = '\\';
            re[o++] = *p;
        }
        re[o] = '\0';
        snprintf(spec, sizeof spec, "host=%s;path=%s;policy=bypass", host, re);
        authelia_parse_rule(spec);
    }
    if (a->allow[0]) {
        snprintf(spec, sizeof spec, "host=%s;subject=group:%s;policy=one_factor", host, a->allow);
        authelia_parse_rule(spec);
        snprintf(spec, sizeof spec, "host=%s;policy=deny", host);
    } else {
        snprintf(spec, sizeof spec, "host=%s;policy=one_factor", host);
    }
    authelia_parse_rule(spec);
}

void authelia_rules_from_app(const struct app *a)
{
    char wild[MAX_HOST + 3];
    if (!a->domain[0]) {
        rules_for_host(a, a->host);
        return;
    }
    snprintf(wild, sizeof wild, "*.%s", a->domain);
    rules_for_host(a, wild);
    rules_for_host(a, a->domain);
}
