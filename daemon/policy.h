/*
 * policy.h — what a forward-auth request means and what bytes answer it, with no I/O: classify a
 * parsed request (credential, key scope, sign-out and login-flow markers), build the request to the
 * IdP, pick the identity headers out of the IdP's answer, and write every answer authcached sends.
 * The worker (conn.c, fa.c, upstream.c) does the I/O and the timing; everything here is a pure
 * function of its arguments, so it is unit-tested directly (tests/unit/test_policy.c).
 */
#ifndef AUTHCACHE_POLICY_H
#define AUTHCACHE_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "http.h"
#include "shm.h"

#define POLICY_CRED_MAX 8192 /* a credential built from split cookies; longer: not cached */
#define POLICY_MAX_COOKIES 16

enum policy_kind {
    POLICY_CACHEABLE = 0, /* a credential: answer from the cache or ask the IdP and store */
    POLICY_BYPASS,        /* no credential: always the IdP, never stored */
    POLICY_LOGIN_FLOW,    /* authentik's auth callback: always the IdP, never stored */
    POLICY_LOGOUT,        /* authentik's logout marker: purge, then the IdP */
    POLICY_SIGNOUT,       /* X-Forwarded-Uri at --signout-path: purge, then the IdP's own answer */
};

/* A classified request. Spans point into the request buffer or into cred_buf. */
struct policy_req {
    enum policy_kind kind;
    int has_cred;
    struct shm_query q;           /* the key's parts (valid when has_cred) */
    struct http_span uri;         /* X-Forwarded-Uri (or X-Original-URI) as sent */
    struct http_span cookie_name; /* a lone session cookie's name, else {NULL, 0} */
    /* every session cookie's value when several matched (the credential is then all of them,
     * but the IdP reads one: a sign-out purges each), else ncookies 0 */
    struct http_span cookie_values[POLICY_MAX_COOKIES];
    size_t ncookies;
    char cred_buf[POLICY_CRED_MAX];
    char inputs_buf[POLICY_CRED_MAX]; /* q.inputs: other credentials, client address */
};

/* The path p (n bytes, starting with "/") as a server resolves it: %XX escapes of unreserved
 * characters decoded (others kept as sent), "." and ".." segments removed (RFC 3986 5.2.4). Writes
 * it to out; returns its length, or -1 if p does not start with "/" or out is too small. The
 * sign-out path is matched against this, exactly: /oauth2/sign_out/../../admin is not a sign-out.
 */
int policy_path_normalize(const char *p, size_t n, char *out, size_t cap);

/* Classify req (already parsed). Never fails: anything unusual becomes POLICY_BYPASS. */
void policy_classify(const struct config *cfg, const struct http_req *req, struct policy_req *out);

/*
 * The request to send the IdP: req's method, the upstream base path + req's target, req's headers
 * less hop-by-hop ones, Host, Content-Length and Transfer-Encoding, then Host: the upstream's. No
 * body. Returns the length written, or 0 if cap is too small.
 */
size_t policy_upstream_request(const struct config *cfg, const struct http_req *req, char *out,
                               size_t cap);

/* What an IdP 2xx carries: the identity headers as "Name: value\r\n" lines (names matching
 * --identity-header, by default all; never hop-by-hop ones nor those that describe the response
 * itself: framing, Content-Type, Date, Server, caching, Set-Cookie), the user, the earliest JWT
 * exp, and the session of the X-authentik-jwt (the first of them, among the identity headers). The
 * IdP's Set-Cookie lines follow the identity headers in the same buffer: the request that got this
 * answer passes them on to the browser (the IdP refreshed or saved its session); they are never
 * stored. */
struct policy_identity {
    size_t hdrs_len;       /* the identity headers: what is stored and replayed */
    size_t answer_len;     /* hdrs_len + the Set-Cookie lines: what this answer carries */
    struct http_span user; /* points into the response; len 0 if absent */
    int64_t jwt_exp_ms;    /* 0 if no JWT with an exp */
    int has_sid;           /* the X-authentik-jwt names its session: */
    uint64_t sid_key;      /* sids_key of its sid claim (sids.h) */
};
/* Returns 0, or -E2BIG if the headers exceed cap. */
int policy_identity(const struct config *cfg, const struct http_resp *resp, char *out, size_t cap,
                    struct policy_identity *id);

/* What to do with the IdP's answer to a request that had to ask it. */
enum policy_verdict {
    POLICY_DO_FAIL,  /* 5xx: the IdP is failing (breaker; a held answer within grace, or 503) */
    POLICY_DO_STORE, /* 2xx naming the user, cacheable: store the identity, answer with it */
    POLICY_DO_SIGNOUT_PURGE, /* sign-out whose 2xx named the user: purge that user too, pass the
                              * answer on, store nothing */
    POLICY_DO_DROP_PASS, /* a refusal for a cacheable key: drop what is held, pass the answer on */
    POLICY_DO_PASS,      /* pass the answer on, store nothing (bypass, login flow, a 2xx without
                          * the user: an open path) */
};
/* The verdict on an answer of status to a request of kind (cacheable: it has a key); names_user:
 * a 2xx whose identity headers named the user (policy_identity). A pure function. */
enum policy_verdict policy_on_idp_answer(enum policy_kind kind, int cacheable, int status,
                                         int names_user);

/* The lifetimes of an answer stored at now: fresh_until and session_end (first_seen + session-ttl,
 * cut short by the JWT's exp). */
void policy_lifetimes(const struct config *cfg, int64_t now_ms, int64_t first_seen_ms,
                      int64_t jwt_exp_ms, struct shm_answer *a);

/* Whether a held answer may be served at now while the IdP is failing. */
int policy_stale_ok(const struct config *cfg, const struct shm_answer *a, int64_t now_ms);

/*
 * Answers. Each writes a whole HTTP/1.1 response into out and returns its length, or 0 if cap is
 * too small. keep_alive 0 adds "Connection: close"; http10 answers a 1.0 client (keep-alive then
 * needs saying); head answers a HEAD request: the same head as for GET, no body.
 */
struct policy_conn {
    int keep_alive;
    int http10;
    int head;
};
/* 200 with the stored identity headers and X-Authcache: result. */
size_t policy_answer_identity(const struct policy_conn *c, const char *hdrs, size_t hdrs_len,
                              const char *result, char *out, size_t cap);
/* The IdP's answer passed on: status, headers (less hop-by-hop, framing recomputed), body, plus
 * Cache-Control: no-store when the IdP sent none and the status is not 2xx. To a HEAD request
 * (the IdP answered HEAD too) the IdP's own Content-Length is passed on, and no body. */
size_t policy_answer_passthrough(const struct policy_conn *c, const struct http_resp *resp,
                                 const char *body, size_t body_len, const char *result, char *out,
                                 size_t cap);
/* 503 with Retry-After and a one-line text/plain body naming the cause. */
size_t policy_answer_unavailable(const struct policy_conn *c, const char *cause, int retry_after_s,
                                 char *out, size_t cap);
/* A bare status (400, 404, 408, 431, 500 ...) with a one-line body; always Connection: close
 * when close is set. */
size_t policy_answer_status(const struct policy_conn *c, int status, const char *text, char *out,
                            size_t cap);

#endif
