/*
 * jwtexp.h — the expiry ("exp" claim) of a JSON Web Token, and its session ("sid" claim), without
 * verifying it.
 *
 * The daemon never serves an answer past the exp of a JWT among the identity headers
 * (docs/contract.md: --session-ttl). The IdP already validated the token it sent; all that is
 * needed here is when it ends, so the signature is not checked and no key is needed. The "sid"
 * claim (OpenID Connect's session id, which authentik puts in its X-authentik-jwt) says which
 * session an answer belongs to, so that authentik's session end finds it (sids.h).
 *
 * Named jwtexp, not jwt: <jwt.h> is libjwt's header, and -Idaemon must not shadow it.
 *
 * Nothing is allocated, nothing is logged, no state is kept: safe from any thread, and for
 * arbitrary bytes (fuzzed). Only tok[0, len) is read.
 */
#ifndef AUTHCACHE_JWTEXP_H
#define AUTHCACHE_JWTEXP_H

#include <stddef.h>
#include <stdint.h>

#define JWTEXP_MAX_TOKEN 16384             /* longer tokens are refused: -EINVAL */
#define JWTEXP_MAX_S INT64_C(253402300799) /* 9999-12-31T23:59:59Z: exp is clamped to this */
#define JWTEXP_SID_MAX 256                 /* room for the longest sid read, with its NUL */

/*
 * tok[0, len) is a compact JWS, "header.payload.signature", each part base64url without padding
 * (the signature part may be empty, as with alg "none"); header and payload are JSON objects.
 *
 * Returns 0 and *exp_s = the top-level "exp" claim in seconds since the epoch: a fraction is cut, a
 * negative value gives 0 (long expired), a value past JWTEXP_MAX_S gives JWTEXP_MAX_S. When "exp"
 * appears more than once the last counts (as in JSON.parse and jansson).
 * -ENOENT: a well-formed JWT without an exp claim.
 * -EINVAL: not a well-formed JWT (wrong number of parts, bad base64url, not JSON, JSON not an
 *          object, longer than JWTEXP_MAX_TOKEN), or an exp that is not a JSON number.
 * *exp_s is written only on 0.
 */
int jwtexp_from_token(const char *tok, size_t len, int64_t *exp_s);

/*
 * Same, for a header value that carries a JWT: "Authorization: Bearer <jwt>" (oauth2-proxy with
 * --pass-authorization-header / --set-authorization-header) or "X-authentik-jwt: <jwt>". Leading
 * and trailing spaces and tabs and a case-insensitive "Bearer " scheme are removed first. Any other
 * scheme (Basic, ...) is -EINVAL.
 */
int jwtexp_from_header_value(const char *value, size_t len, int64_t *exp_s);

/* What jwtexp_claims reads. */
struct jwtexp_claims {
    int exp_rc; /* as jwtexp_from_token returns: 0 (exp_s set), -ENOENT or -EINVAL */
    int64_t exp_s;
    int sid_rc; /* 0: sid[0, sid_len) is the top-level "sid" claim (NUL-terminated); -ENOENT: a
                 * well-formed JWT without one; -EINVAL: not a well-formed JWT, or a sid that is
                 * not a JSON string, is empty, holds a NUL or is longer than JWTEXP_SID_MAX - 1
                 * bytes once its escapes are decoded */
    size_t sid_len;
    char sid[JWTEXP_SID_MAX];
};

/*
 * Both claims of tok[0, len) (as jwtexp_from_token) with one decoding; the last "sid" counts when
 * there are several. Returns exp_rc. One claim's trouble never hides the other: an exp that is not
 * a number leaves a good sid readable, and the reverse.
 */
int jwtexp_claims(const char *tok, size_t len, struct jwtexp_claims *c);

/* Same, for a header value (as jwtexp_from_header_value). */
int jwtexp_claims_from_header_value(const char *value, size_t len, struct jwtexp_claims *c);

#endif
