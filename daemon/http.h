/*
 * http.h — strict, zero-copy, incremental HTTP/1.x parsing for the forward-auth path.
 *
 * Everything here works on the caller's bytes: results are spans (pointer + length) into the buffer
 * given, nothing is allocated, nothing is logged, no state is global. The parsers keep no state
 * between calls either: when more bytes arrive, call again with the same buffer start and a larger
 * length (for a request, also the length the previous call saw: it resumes there). What is
 * accepted is deliberately narrower than what browsers tolerate, because two parsers that disagree
 * about where a message ends are a request-smuggling hole; each rule is listed at the function
 * that applies it.
 *
 * Return convention of the message parsers: > 0 bytes parsed, or one of the codes below. A caller
 * maps HTTP_BAD to "400, close" and HTTP_TOO_LARGE to "431, close" (414 when no line ended within
 * the limit: the request line itself is too long); from the IdP, both mean the
 * answer is unusable and the connection must be dropped (count it as the IdP failing).
 */
#ifndef AUTHCACHE_HTTP_H
#define AUTHCACHE_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#define HTTP_BAD (-1)       /* malformed */
#define HTTP_PARTIAL (-2)   /* no error yet, no end yet: more bytes needed */
#define HTTP_TOO_LARGE (-3) /* head longer than max_bytes, or more fields than hdrs_cap */

/* Largest Content-Length and chunk size accepted: 2^53 (exact in a double, beyond any body). */
#define HTTP_MAX_BODY (INT64_C(1) << 53)

struct http_span {
    const char *p;
    size_t len;
};

/* One header field: name as sent (case kept), value with leading and trailing SP/HTAB removed. */
struct http_hdr {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

struct http_req {
    const char *method; /* token, case-sensitive ("GET", never "get") */
    size_t method_len;
    const char *target; /* as sent: "/path[?query]", or "*" (OPTIONS only) */
    size_t target_len;
    int minor_version;     /* 0 or 1 */
    struct http_hdr *hdrs; /* caller-owned array of hdrs_cap entries; set both before each call */
    size_t hdrs_cap;
    size_t nhdrs;           /* fields found, in order; duplicates are kept as separate entries */
    int64_t content_length; /* -1 when absent */
    int chunked;            /* Transfer-Encoding: chunked (content_length is then -1) */
    int keep_alive; /* 1.1: unless Connection: close; 1.0: only with Connection: keep-alive */
};

struct http_resp {
    int minor_version;  /* 0 or 1 */
    int status;         /* 100..999 */
    const char *reason; /* reason phrase as sent, possibly empty */
    size_t reason_len;
    struct http_hdr *hdrs; /* as in struct http_req */
    size_t hdrs_cap;
    size_t nhdrs;
    int64_t content_length; /* -1 when absent */
    int chunked;
    int keep_alive; /* what the header says; see http_resp_body_mode for when it cannot hold */
};

/*
 * Parse the request line and header section at the start of buf[0, len).
 *
 * The caller sets req->hdrs and req->hdrs_cap; every other field is set by the call. max_bytes
 * bounds the header section (values above INT_MAX count as INT_MAX); bytes past it are never read.
 *
 * last_len makes a head that arrives in pieces cost its length, not its length times the pieces
 * (as picohttpparser's last_len): pass 0 on the first call for a head, and after HTTP_PARTIAL, the
 * len of that call on the next one, with the same bytes at buf[0, last_len). The call then only
 * looks for the end of the head in the new bytes and parses the head in full once it has ended (or
 * len reaches max_bytes). So, while the head has not ended, an error in it may be reported late:
 * HTTP_PARTIAL where last_len = 0 would already give HTTP_BAD or HTTP_TOO_LARGE, until the empty
 * line ending the head arrives, len reaches max_bytes, or a byte arrives that no head may hold (a
 * control byte but HTAB, a bare CR or LF). The final answer is the same as with last_len = 0: a
 * call with last_len > 0 returns either HTTP_PARTIAL or exactly what last_len = 0 returns. A
 * last_len larger than len counts as 0.
 *
 * Returns
 *   > 0             complete: the length of the header section, through its empty line. The
 *                   body (see content_length / chunked) or the next pipelined request starts at
 *                   buf + ret. All spans in *req point into buf[0, ret).
 *   HTTP_PARTIAL    no error so far, but no end of the header section either; call again with more
 *                   bytes. Never returned when len >= max_bytes.
 *   HTTP_BAD        malformed (below): answer 400 and close.
 *   HTTP_TOO_LARGE  no complete header section within max_bytes, or more than hdrs_cap fields: 431.
 * On anything but > 0 the fields of *req are unspecified. With last_len = 0 the result depends only
 * on the bytes and the limits, and once a prefix gives anything but HTTP_PARTIAL, every longer
 * buffer that starts with it gives the same result.
 *
 * Accepted, exactly:
 *  - any number of empty lines (CRLF) before the request line (RFC 9112 2.2: a stray CRLF after
 *    a body);
 *  - request line: method SP target SP "HTTP/1.0" | "HTTP/1.1" CRLF, single spaces. The method is a
 *    token. The target is origin-form: '/' then bytes 0x21-0x7E (non-ASCII must come
 *    percent-encoded), or "*" with OPTIONS. Absolute-form and authority-form (CONNECT) are
 *    refused: a forward-auth check is always origin-form, and the target is appended to the IdP
 *    URL unchanged;
 *  - fields: token ':' OWS value OWS CRLF. No whitespace before the colon, no obs-fold (a line
 *    starting with SP/HTAB), no control byte in a value except HTAB (NUL, bare CR, DEL refused);
 *    bytes 0x80-0xFF are allowed in values (obs-text);
 *  - every line ends in CRLF: a bare LF anywhere is HTTP_BAD (a parser that accepts it and one that
 *    does not would split the stream differently);
 *  - Content-Length: 1*DIGIT, at most HTTP_MAX_BODY. Repeated fields must agree in value ("5" and
 *    "005" agree); a list value such as "5, 5" is refused;
 *  - Transfer-Encoding: exactly "chunked" (any case), in one field, only in HTTP/1.1, never
 *    together with Content-Length;
 *  - Connection: a comma list; "close" and "keep-alive" tokens (any case) set keep_alive.
 * A missing Host is accepted (forward-auth clients always send one; doing without is policy).
 */
int http_parse_request(const char *buf, size_t len, size_t last_len, size_t max_bytes,
                       struct http_req *req);

/*
 * Parse a status line and header section, same conventions and field rules as http_parse_request
 * (so Content-Length with Transfer-Encoding is refused here too, where RFC 9112 would let chunked
 * win: an IdP that sends both is broken or being impersonated). Status line: "HTTP/1.0" |
 * "HTTP/1.1" SP 3DIGIT (100..999) [ SP reason ] CRLF, where the reason may hold SP, HTAB, VCHAR and
 * obs-text and is kept as sent. Nothing may precede it.
 *
 * A 1xx is an interim answer: the final one follows at buf + ret, parse again there (a client that
 * never asks to upgrade treats 101 as an error).
 */
int http_parse_response(const char *buf, size_t len, size_t max_bytes, struct http_resp *resp);

/* How the body after a parsed header section is delimited. */
enum http_body {
    HTTP_BODY_NONE = 0, /* no body: the next message starts right after the header section */
    HTTP_BODY_LENGTH,   /* exactly content_length bytes (possibly 0) */
    HTTP_BODY_CHUNKED,  /* chunked coding: feed it to http_chunked_decode */
    HTTP_BODY_CLOSE,    /* response only: everything until the server closes; never reusable */
};

/*
 * Body framing of a request: LENGTH, CHUNKED, or NONE when neither header is present (RFC 9112 6.3:
 * a request without either has no body).
 */
int http_req_body_mode(const struct http_req *req);

/*
 * Body framing of a response to a request whose method was HEAD (head != 0) or not, RFC 9112 6.3:
 * NONE for HEAD, 1xx, 204 and 304 whatever the headers say; else CHUNKED, else LENGTH when
 * Content-Length is present, else CLOSE. With CLOSE the connection cannot be reused whatever
 * resp->keep_alive says.
 */
int http_resp_body_mode(const struct http_resp *resp, int head);

/* The first field named name (case-insensitive), or NULL. */
const struct http_hdr *http_hdr_find(const struct http_hdr *hdrs, size_t n, const char *name);

/*
 * Incremental, in-place decoder of the chunked transfer coding (RFC 9112 7.1). Zero the state (or
 * http_chunked_init) before the first byte of a body; the struct holds all progress between calls.
 */
struct http_chunked {
    uint64_t remaining; /* data bytes due in the current chunk, or the chunk size being read */
    uint32_t line;      /* bytes of the current chunk-size line, or of the trailer section so far */
    uint8_t state;
};

/* Longest chunk-size line (size + extensions, without CRLF) and trailer section (every byte after
 * the last chunk's line through the final CRLF) accepted: longer is an error. */
#define HTTP_CHUNK_LINE_MAX 4096u
#define HTTP_CHUNK_TRAILER_MAX 8192u

static inline void http_chunked_init(struct http_chunked *st)
{
    *st = (struct http_chunked){0};
}

/*
 * Decode the next *len bytes of a chunked body in buf. The data bytes found are moved to the front:
 * on return buf[0, *len) holds this call's decoded data (possibly nothing), and the rest of the
 * input has been consumed. Feed each new piece of input in its own call; pieces may split anywhere.
 *
 * Returns
 *   >= 0            the body ended (last chunk, trailers and final CRLF seen) in this call.
 *                   The value is how many input bytes follow the body: the last ret bytes of the
 *                   input, buf[in - ret, in) with in the *len passed, untouched (say, a
 *                   pipelined message).
 *   HTTP_PARTIAL    the body goes on: call again with the next bytes.
 *   HTTP_BAD        not a valid chunked body; *len still gives the data decoded before the error.
 * After the end or an error the state stays there: further calls return all input as left over, or
 * HTTP_BAD.
 *
 * Accepted: chunk-size is 1*HEXDIG (leading zeros allowed) at most HTTP_MAX_BODY; extensions
 * (BWS ';' ...) are skipped but may not hold control bytes other than HTAB; data must be followed
 * by CRLF; trailer fields must be token ':' value and are skipped; every line ends in CRLF, bare LF
 * is an error. Limits: HTTP_CHUNK_LINE_MAX, HTTP_CHUNK_TRAILER_MAX. The total body size is the
 * caller's to bound (it sees every decoded byte).
 */
ssize_t http_chunked_decode(struct http_chunked *st, char *buf, size_t *len);

/*
 * Iterate the name=value pairs of one Cookie header value: *pos starts at the value, end is its
 * end. Pairs are separated by ';'. SP/HTAB around names and values is dropped; empty pieces, pieces
 * without '=' and pieces with an empty name are skipped; values keep their quotes ("\"a b\"" stays
 * quoted) and are not decoded. ';' always separates, even inside quotes (RFC 6265 forbids it
 * there). Returns 1 with *name and *value set and *pos advanced, or 0 when no pair is left (*pos =
 * end). Several Cookie fields (HTTP/2 proxies split them) are iterated one after the other.
 */
int http_cookie_next(const char **pos, const char *end, struct http_span *name,
                     struct http_span *value);

/* 1 if a[0, n) equals b[0, n) ignoring ASCII case; else 0. */
int http__caseeq(const char *a, const char *b, size_t n);

/* 1 if a[0, alen) equals the NUL-terminated lit, ignoring ASCII case; else 0. Inline so that the
 * length of a literal is a constant: the request path compares every header name against a dozen
 * literals, and most are told apart by length, the rest mostly by their last byte (X-Forwarded-Uri
 * and X-Forwarded-For share 12 of 15). `| 0x20` folds case for letters and never makes two bytes
 * that are equal ignoring case differ, so it is a safe pre-check. */
/* Whether req's method is exactly lit (methods are case-sensitive). */
static inline int http_method_is(const struct http_req *req, const char *lit)
{
    size_t n = strlen(lit);

    return req->method_len == n && memcmp(req->method, lit, n) == 0;
}

static inline int http_name_eq(const char *a, size_t alen, const char *lit)
{
    size_t n = __builtin_strlen(lit);

    return alen == n && (n == 0 || (a[n - 1] | 0x20) == (lit[n - 1] | 0x20)) &&
           http__caseeq(a, lit, n);
}

/*
 * 1 if name[0, len) matches the NUL-terminated pattern: equal, or, when the pattern ends in '*', it
 * starts with the part before the '*' (so "X-Authentik-*" matches "x-authentik-uid" and
 * "X-Authentik-"). A '*' anywhere else is an ordinary byte. http_name_match ignores ASCII case
 * (header names); http_cookie_match does not (cookie names are case-sensitive).
 */
int http_name_match(const char *name, size_t len, const char *pattern);
int http_cookie_match(const char *name, size_t len, const char *pattern);

/*
 * 1 if the field name is hop-by-hop (never stored or replayed): Connection, Keep-Alive,
 * Proxy-Authenticate, Proxy-Authorization, Proxy-Connection, TE, Trailer, Transfer-Encoding,
 * Upgrade. Fields a Connection header lists are hop-by-hop too: see http_connection_lists.
 */
int http_is_hop_by_hop(const char *name, size_t len);

/* 1 if the Connection field value conn[0, len) lists the token name (case-insensitive); else 0. */
int http_connection_lists(const char *conn, size_t len, const char *name, size_t name_len);

/*
 * Split a request target or X-Forwarded-Uri value at the first '?': *path is what precedes it,
 * *query what follows up to a '#' (a fragment is dropped from both). Returns 1 if there is a '?'
 * (the query may still be empty), else 0 with *query = {NULL, 0}. No decoding is done.
 */
int http_target_split(const char *target, size_t len, struct http_span *path,
                      struct http_span *query);

/*
 * 1 if the query string query[0, len) (without '?') has a parameter named key whose value, compared
 * ignoring ASCII case, is value (NULL: any value, or none). Parameters are separated by '&'; a
 * parameter without '=' has the empty value. Names and values are compared after percent-decoding
 * and '+' -> SP, as the IdP (Go's url.ParseQuery) reads them, and the name compare is exact; a
 * parameter with a broken %-escape or a ';' is skipped, as Go skips it. Any matching parameter
 * counts, even if an earlier one with the same name differs (Go's Get would see only the first):
 * for the login-flow checks this is the safe side, the request goes to the IdP.
 */
int http_query_has(const char *query, size_t len, const char *key, const char *value);

#endif
