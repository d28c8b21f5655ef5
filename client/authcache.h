/*
 * authcache.h — read the authcache shared-memory cache from any local process.
 *
 * authcached keeps (session credential, application) -> identity headers in /dev/shm/<name>. This
 * library attaches that segment read-only and answers the same question the daemon answers, in
 * about a microsecond, without a system call: "who is this session on this host?". It never writes
 * to the segment and never blocks the daemon.
 *
 * Contracts: every function returns 0 (or a count) on success and -errno on failure; nothing is
 * logged. A handle is for one thread at a time (answers point into its buffer); open one per
 * thread. Link with -lauthcache (or libauthcache.a -lssl -lcrypto -lxxhash).
 */
#ifndef AUTHCACHE_H
#define AUTHCACHE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct authcache;

/* Attach /dev/shm/<name> read-only. -ENOENT: no segment (is authcached running with --shm name?);
 * -EPROTO: a segment of another layout version; -EACCES: no permission (mode 0600). */
int authcache_open(const char *name, struct authcache **out);
void authcache_close(struct authcache *c);

/* One cached answer. Strings are not NUL-terminated; they stay valid until the next call on the
 * handle. headers are the identity headers as the IdP sent them: "Name: value\r\n" lines. */
struct authcache_answer {
    const char *headers;
    size_t headers_len;
    const char *user;
    size_t user_len;
    const char *host;
    size_t host_len;
    int64_t first_seen_ms, confirmed_ms, fresh_until_ms, session_end_ms; /* wall clock, ms */
    uint8_t digest[16]; /* the answer's key digest (not reversible) */
};

/* The exact question authcached answers: its key is the credential, the application host, the path
 * and query of the forward-auth request, with --key-scope uri the forwarded method, path and query
 * and the client address, and every other credential header sent. Fields left NULL were not sent.
 * With --key-scope uri the question is a check carrying X-Forwarded-Host, -Uri, -Method and
 * -Proto: https, and no X-Original-*: the daemon keys other schemes and other fields apart.
 * Set fields from here on to zero (a designated initializer does). */
struct authcache_request {
    const char
        *cookie; /* the session cookie's value (or split cookies' "n=v; n=v" in name order) */
    size_t cookie_len;
    const char *cookie_name; /* a lone session cookie's name (authcached keys on it too) */
    size_t cookie_name_len;
    const char *authorization; /* the Authorization header value: the credential without a cookie */
    size_t authorization_len;
    const char *host; /* X-Forwarded-Host */
    size_t host_len;
    const char *auth_path; /* e.g. "/outpost.goauthentik.io/auth/traefik" */
    size_t auth_path_len;
    const char *method; /* --key-scope uri only: X-Forwarded-Method, else NULL */
    size_t method_len;
    const char *uri_path; /* --key-scope uri only: path and query of X-Forwarded-Uri */
    size_t uri_path_len;
    const char *proxy_authorization; /* Proxy-Authorization: the credential without the others */
    size_t proxy_authorization_len;
    const char *forwarded_for; /* --key-scope uri only: X-Forwarded-For as sent */
    size_t forwarded_for_len;
    const char *real_ip; /* --key-scope uri only: X-Real-IP as sent */
    size_t real_ip_len;
    const char *auth_method; /* the forward-auth request's method; NULL: GET */
    size_t auth_method_len;
};

/* The answer for exactly that request, if held and before its session end. -ENOENT otherwise.
 * Whether it is still fresh is fresh_until_ms vs. now; the daemon revalidates older ones. */
int authcache_lookup(struct authcache *c, const struct authcache_request *r,
                     struct authcache_answer *a);

/* Any held answer for a credential on a host, whatever the auth path (walks the table: use for
 * tools, not per request). Pass cookie or authorization as in authcache_request. */
int authcache_find(struct authcache *c, const char *cookie, size_t cookie_len,
                   const char *authorization, size_t authorization_len, const char *host,
                   size_t host_len, struct authcache_answer *a);

/* Every held answer (a consistent copy of each; the table may change meanwhile). fn returns 0 to
 * go on, anything else stops the walk and is returned. */
typedef int (*authcache_fn)(const struct authcache_answer *a, void *arg);
int authcache_foreach(struct authcache *c, authcache_fn fn, void *arg);

struct authcache_stats {
    int64_t entries;
    uint64_t capacity;
    uint64_t lookups, hits, misses, inserts, replaces, evictions, purges, expired, retries,
        promotions;
    uint64_t segment_bytes, ring_bytes, ring_used;
    uint64_t generation;
    uint64_t size_class[8]; /* answers stored by size: <=256 B, 512, 1K, 2K, 4K, 8K, 16K, more */
};
int authcache_stats(struct authcache *c, struct authcache_stats *st);

/* 1 if authcached has replaced the segment since it was opened (the handle reopens it by itself
 * on the next lookup). */
int authcache_retired(struct authcache *c);

#ifdef __cplusplus
}
#endif
#endif
