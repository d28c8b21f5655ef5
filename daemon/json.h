/*
 * json.h — a small strict JSON reader for the few fields authcache takes from authentik: the
 * outpost feed's messages ({"instruction": N, "args": {...}}), the outposts API's answer, a JWT
 * payload's "sid" and "exp" (jwtexp.c), the notification webhook's body.
 *
 * The whole document is checked (RFC 8259; strings are not checked for UTF-8), nesting is bounded
 * by JSON_MAX_DEPTH, nothing is allocated, nothing is read past len: safe for any bytes (fuzzed by
 * tests/fuzz/fuzz_feed.c and, through jwtexp.c, tests/fuzz/fuzz_jwtexp.c). A member named more
 * than once counts by its last value, as JSON.parse does.
 */
#ifndef AUTHCACHE_JSON_H
#define AUTHCACHE_JSON_H

#include <stddef.h>
#include <stdint.h>

#define JSON_MAX_DEPTH 32
#define JSON_MAX_PATH 4

/*
 * Find the value at path (member names, or "#0" for an array's first element) in doc[0, len),
 * which must be one valid JSON document.
 *
 * json_get_string: 0 and the decoded string in out (NUL-terminated, escapes decoded to UTF-8),
 * *out_len its length (may be NULL). json_get_int: 0 and the integer (no fraction or exponent).
 * -EINVAL: doc is not valid JSON; -ENOENT: nothing at path; -EPROTO: the value has another type;
 * -EMSGSIZE: the string does not fit in cap (including its NUL): out then holds its first cap - 1
 *           bytes and a NUL; or the integer does not fit in 64 bits.
 */
int json_get_string(const char *doc, size_t len, const char *const *path, unsigned npath, char *out,
                    size_t cap, size_t *out_len);
int json_get_int(const char *doc, size_t len, const char *const *path, unsigned npath,
                 int64_t *out);

/*
 * json_get_number: 0 and where the number at path is: its text [*num, *num + *num_len), inside doc,
 * is one JSON number (-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?) of any length, for the caller
 * to read as its field needs (a JWT's NumericDate may have a fraction: jwtexp.c uses strtod).
 * -EINVAL, -ENOENT, -EPROTO as above.
 */
int json_get_number(const char *doc, size_t len, const char *const *path, unsigned npath,
                    const char **num, size_t *num_len);

/* 0 if doc[0, len) is one valid JSON document whose top level is an object, else -EINVAL. */
int json_check_object(const char *doc, size_t len);

/* Decode unpadded (or padded) base64url s[0, n) into out (room for n / 4 * 3 + 2). Returns the
 * decoded length, or -1 for a byte outside the alphabet or an impossible length. */
long json_b64url_decode(const char *s, size_t n, unsigned char *out);

#endif
