/*
 * idp.h — what the test IdP's files share: the configuration (parsed once, read-only after main()
 * starts the listeners), one connection with its buffers, one parsed request, a copy of a session
 * taken under the table lock, and the helpers every mode answers with.
 *
 * idp.c holds the server (listeners, connections, parsing, faults, control API, sessions and
 * credentials); each mode_<idp>.c answers forward-auth checks the way that IdP does, following
 * the source facts in docs/idps.md (§1-3; the section "The test IdP" maps each behaviour to its
 * source). A mode's answer is a function of the request and the session state only: any value
 * that real IdPs draw at random (a fresh cookie, a state nonce) is derived here from a hash of
 * the request (derive_token()), so asking twice gives the same bytes.
 */
#ifndef IDP_H
#define IDP_H

#include <netinet/in.h>
#include <regex.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAX_APPS 32
#define MAX_SKIPS 8
#define MAX_HOST 255
#define MAX_PREFIX 255
#define MAX_COOKIE 256 /* longer cookie values are treated as absent */
#define MAX_USER 64
#define MAX_GROUPS 512
#define MAX_EMAIL 128
#define MAX_SECRET 256 /* a Basic password or a bearer token */
#define MAX_EXTRA 1024 /* a session's extra header lines (authentik additionalHeaders) */
#define MAX_HDR 4096   /* a session's rendered authentik identity lines */
#define MAX_RULES 256
#define MAX_ROUTES 32
#define MAX_CIDRS 16
#define MAX_COOKIE_DOMAINS 8
#define MAX_TTL (366L * 86400)
#define DEFAULT_TTL 3600
#define COOKIE_MAX_AGE 86400
#define NEW_COOKIE_LEN 32

#define IN_CAP (32 * 1024)      /* largest request head */
#define OUT_CAP (64 * 1024)     /* answers batched per connection */
#define OUT_RESERVE (16 * 1024) /* bigger than any one answer: flush when less is free */

struct str {
    const char *p;
    size_t n;
};

static inline bool str_eq(struct str a, const char *b)
{
    size_t n = strlen(b);
    return a.n == n && memcmp(a.p, b, n) == 0;
}

static inline bool str_has_prefix(struct str a, const char *b)
{
    size_t n = strlen(b);
    return a.n >= n && memcmp(a.p, b, n) == 0;
}

static inline bool str_caseeq(struct str a, const char *b)
{
    size_t n = strlen(b);
    return a.n == n && strncasecmp(a.p, b, n) == 0;
}

static inline struct str str_trim(struct str s)
{
    while (s.n && (s.p[0] == ' ' || s.p[0] == '\t'))
        s.p++, s.n--;
    while (s.n && (s.p[s.n - 1] == ' ' || s.p[s.n - 1] == '\t'))
        s.n--;
    return s;
}

/* ---- configuration ---- */

enum idp_mode { MODE_AUTHENTIK, MODE_OAUTH2_PROXY, MODE_AUTHELIA };

/* An IPv4 or IPv6 network; an address is kept as 16 bytes (IPv4 mapped into ::ffff:0:0/96). */
struct cidr {
    uint8_t addr[16];
    int bits; /* prefix length over the 16 bytes */
};

/* authentik: one application (proxy provider in forward_single or forward_domain mode). */
struct app {
    char host[MAX_HOST + 1];   /* lower case, no port: the external host */
    char domain[MAX_HOST + 1]; /* forward_domain: the cookie domain; "" = single-app mode */
    char slug[64];             /* first label of host: client_id, meta-app */
    char allow[MAX_USER + 1];  /* group required; "" = any logged-in user */
    char skip[MAX_SKIPS][MAX_PREFIX + 1];
    int nskip;
    char meta[1024]; /* the X-authentik-meta-* header lines */
    size_t meta_len;
};

/* oauth2-proxy: --skip-auth-route [METHOD=]REGEX */
struct route {
    char method[16]; /* "" = any */
    regex_t re;
};

/* Authelia: one access-control rule; an empty field matches anything. */
enum policy { POLICY_BYPASS, POLICY_ONE_FACTOR, POLICY_DENY };
struct rule {
    char host[MAX_HOST + 1]; /* exact, or "*.domain" for any subdomain */
    bool has_path;
    regex_t path;
    char methods[128]; /* ",GET,HEAD," */
    struct cidr nets[MAX_CIDRS];
    int nnets;
    char subjects[512]; /* "|user:U|group:G|" */
    enum policy policy;
};

struct idp_cfg {
    struct sockaddr_in listen_addr, control_addr, oracle_addr;
    const char *listen_arg, *control_arg, *oracle_arg;
    int max_conns;
    const char *jwt_secret;
    const char *cookie_name;
    bool quiet;
    enum idp_mode mode;
    /* authentik */
    struct app apps[MAX_APPS];
    int napps;
    /* oauth2-proxy */
    bool set_xauthrequest, skip_jwt_bearer_tokens, deny_invalid_jwts;
    long cookie_refresh; /* seconds; 0 = never */
    struct route routes[MAX_ROUTES];
    int nroutes;
    struct cidr trusted[MAX_CIDRS];
    int ntrusted;
    /* Authelia */
    struct rule rules[MAX_RULES];
    int nrules;
    enum policy default_policy;
    char cookie_domains[MAX_COOKIE_DOMAINS][MAX_HOST + 1];
    int ncookie_domains;
    const char *portal; /* the login portal's URL, for the redirect */
};

extern struct idp_cfg cfg;

/* ---- connections and requests ---- */

enum conn_kind { CONN_AUTH, CONN_CONTROL, CONN_ORACLE };

struct conn {
    int fd;
    int slot; /* in the registry; -1 for control and oracle connections */
    enum conn_kind kind;
    bool close_after;   /* answer the current request, then close */
    bool keep_alive_10; /* HTTP/1.0 client that asked for keep-alive */
    bool head;
    int status;    /* of the current answer, for the log */
    char peer[48]; /* the TCP peer's address, text */
    size_t in_len, in_off, discard, out_len;
    char in[IN_CAP];
    char out[OUT_CAP];
};

struct req {
    struct str method, path, query;
    int minor; /* HTTP/1.minor */
    bool conn_close, conn_keep_alive, chunked;
    size_t content_length;
    bool has_cookie;
    struct str cookie; /* value of the cookie named cfg.cookie_name (split parts joined) */
    struct str fwd_host, fwd_uri, fwd_proto, fwd_method, fwd_for, real_ip;
    struct str orig_url, orig_uri, orig_method;
    struct str authorization, proxy_authorization, accept, requested_with;
    struct str split[2]; /* oauth2-proxy: <name>_0 and <name>_1 */
    char cookie_buf[2 * MAX_COOKIE + 2];
};

/* ---- helpers (idp.c) ---- */

bool text_ok(const char *s);
bool cookie_ok(struct str v);
/* Finds the nth (from 0) parameter `name` in the query string q ("a=b&c=d", no '?') and
 * percent-decodes its value into out ('+' kept). Returns the value's length, -1 when absent, -2
 * when malformed, too long or holding a NUL. */
int query_get_nth(struct str q, const char *name, int nth, char *out, size_t cap);
int query_get(struct str q, const char *name, char *out, size_t cap);
bool query_is(struct str q, const char *name, const char *want);
void pct_encode(const char *s, char *out, size_t cap);
/* Percent-decodes s into out (NUL-terminated); false when malformed or too long. */
bool pct_decode(struct str s, char *out, size_t cap);
/* Writes n characters from alphabet plus a NUL into out: a function of the NUL-separated parts
 * (SHA-256 of them), so the same inputs always give the same token. */
void derive_token(char *out, size_t n, const char *alphabet, const struct str *parts, int nparts);
extern const char HEX[];
extern const char ALNUM[];
/* Decodes standard base64; returns the length, -1 when malformed or over cap-1 (out NUL-ended). */
int b64_decode(struct str in, char *out, size_t cap);
/* "Basic <b64 user:pass>" → user and password; false when not Basic or malformed. */
bool basic_parse(struct str auth, char *user, size_t ucap, char *pass, size_t pcap);
/* "Bearer <token>" → the token; false when not Bearer. */
bool bearer_parse(struct str auth, struct str *token);
bool in_group(const char *groups, const char *group); /* groups '|'-joined */
bool host_normalize(struct str h, char *out);         /* out: MAX_HOST+1 */
/* Parses an IPv4/IPv6 address (no port) into 16 bytes; false when it is not one. */
bool ip_parse(struct str s, uint8_t out[16]);
bool cidr_parse(const char *s, struct cidr *c);
bool cidr_match(const struct cidr *nets, int n, const uint8_t ip[16]);

/* ---- sessions and credentials (idp.c) ---- */

/* A copy of one session, taken under the table lock. */
struct sess_info {
    char user[MAX_USER + 1];
    char groups[MAX_GROUPS + 1]; /* '|'-joined */
    char email[MAX_EMAIL + 1];
    char sid[33];
    time_t created, end;
    size_t extra_len, hdr_len;
    char extra[MAX_EXTRA]; /* "Name: value\r\n" lines */
    char hdr[MAX_HDR];     /* authentik: X-authentik-username .. X-authentik-jwt lines */
};

/* Copies the live (unexpired) session of cookie value `cookie` into *out. False when none. */
bool session_get(struct str cookie, struct sess_info *out);
/* Gives cookie value `cookie` a copy of the session in *s (same sid) unless it already holds
 * that one. Used for the new cookie a header login or a refresh hands out. Returns 0 or -errno. */
int session_alias(struct str cookie, const struct sess_info *s);
/* The session a registered credential logs in as: a Basic user+password or a bearer token (user
 * NULL). False when the credential is unknown or revoked or its session ended. */
bool cred_session(const char *user, struct str secret, struct sess_info *out);
int sessions_end(struct str cookie, const char *user, bool owner);
/* Logs user in under cookie for the default lifetime (the login callback). Returns 0 or -errno. */
int session_login(struct str cookie, const char *user, const char *groups);

/* ---- answers (idp.c) ---- */

void out_put(struct conn *c, const char *s, size_t n);
__attribute__((format(printf, 2, 3))) void out_printf(struct conn *c, const char *fmt, ...);
void resp_start(struct conn *c, int status);
void resp_finish(struct conn *c, const char *ctype, const char *body, size_t n);
void resp_text(struct conn *c, int status, const char *body);

/* ---- the modes: answer one forward-auth check (fault already applied) ---- */

/* Which endpoint a request on the forward-auth listener is for; 0 = none (404), or a mode-specific
 * positive kind passed back to the mode's answer. count: whether it is a forward-auth check
 * (counted in /calls) or a normal request (sign-out). */
int authentik_route(const struct req *r, bool *count);
void authentik_answer(struct conn *c, const struct req *r, int kind);
void authentik_parse_app(const char *spec);

int oauth2_proxy_route(const struct req *r, bool *count);
void oauth2_proxy_answer(struct conn *c, const struct req *r, int kind);
void oauth2_proxy_parse_route(const char *spec);

int authelia_route(const struct req *r, bool *count);
void authelia_answer(struct conn *c, const struct req *r, int kind);
void authelia_parse_rule(const char *spec);
/* Appends the rules that play an --app in Authelia: per skip prefix host=H;path=^PREFIX;bypass,
 * then with allow=G host=H;subject=group:G;one_factor and host=H;deny, else host=H;one_factor (a
 * domain-mode app: the same for *.DOMAIN and DOMAIN). */
void authelia_rules_from_app(const struct app *a);

__attribute__((format(printf, 1, 2), noreturn)) void die_usage(const char *fmt, ...);

#endif
