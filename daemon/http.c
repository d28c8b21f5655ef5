/*
 * http.c — HTTP/1.x request and response heads, chunked bodies, and the small field-value grammars
 * (cookies, Connection lists, query strings) the forward-auth path needs. Contracts are in http.h.
 *
 * The message parsers are one left-to-right pass over buf[0, min(len, max_bytes)) that never reads
 * past that window. Every rejection is decided by the bytes seen so far, and running out
 * of bytes is the only way to "need more": that is what makes a prefix's answer final (http.h) and
 * re-parsing from the start on each call safe. Running out yields HTTP_TOO_LARGE instead of
 * HTTP_PARTIAL when the window was cut by max_bytes rather than by len. A request head arriving in
 * pieces is not re-parsed on every piece, though: given where the last HTTP_PARTIAL ended
 * (last_len), only the new bytes are searched for something that could end the head
 * (head_may_be_done), and the full pass runs once that is found, or at the limit.
 *
 * Speed comes from scanning the long runs (targets, field values: cookies, JWTs) eight bytes at a
 * time: a word with no byte that could end or spoil the run is skipped whole; otherwise the bytes
 * are looked at one by one in a class table.
 */
#include "http.h"

#include <limits.h>
#include <string.h>

#include "pct.h"

/* Byte classes. */
enum {
    C_TCHAR = 1, /* RFC 9110 token character */
    C_VCHAR = 2, /* 0x21-0x7E */
    C_OBS = 4,   /* 0x80-0xFF, obs-text */
    C_SP = 8,    /* ' ' */
    C_HTAB = 16, /* '\t' */
    C_HEX = 32,  /* 0-9 a-f A-F */
};
#define C_FIELD (C_VCHAR | C_OBS | C_SP) /* field-value bytes but HTAB */
#define T (C_TCHAR | C_VCHAR)
#define TH (C_TCHAR | C_VCHAR | C_HEX)

static const uint8_t ctype[256] = {
    ['\t'] = C_HTAB,
    [' '] = C_SP,
    ['!'] = T,
    ['"'] = C_VCHAR,
    ['#' ... '\''] = T,
    ['(' ... ')'] = C_VCHAR,
    ['*' ... '+'] = T,
    [','] = C_VCHAR,
    ['-' ... '.'] = T,
    ['/'] = C_VCHAR,
    ['0' ... '9'] = TH,
    [':' ... '@'] = C_VCHAR,
    ['A' ... 'F'] = TH,
    ['G' ... 'Z'] = T,
    ['[' ... ']'] = C_VCHAR,
    ['^' ... '`'] = T,
    ['a' ... 'f'] = TH,
    ['g' ... 'z'] = T,
    ['{'] = C_VCHAR,
    ['|'] = T,
    ['}'] = C_VCHAR,
    ['~'] = T,
    [0x80 ... 0xff] = C_OBS,
};
#undef T
#undef TH

static inline int is_class(char c, int cls)
{
    return ctype[(unsigned char)c] & cls;
}

static inline int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static inline unsigned char lower(unsigned char c)
{
    return (unsigned)(c - 'A') < 26u ? (unsigned char)(c | 0x20) : c;
}

/* ---- word-at-a-time scanning ----------------------------------------------------------------- */

/* For a 64-bit word x, (x - ONES*n) & ~x & HIGHS is nonzero iff some byte of x is below n (n <=
 * 128; a borrow can only spill upward from a byte that really is below n, so the "iff" is
 * exact). */
#define ONES UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)

static inline uint64_t has_below(uint64_t x, unsigned n)
{
    return (x - ONES * n) & ~x & HIGHS;
}

static inline uint64_t has_byte(uint64_t x, unsigned b)
{
    return has_below(x ^ (ONES * b), 1);
}

static inline uint64_t load64(const char *p)
{
    uint64_t x;
    memcpy(&x, p, sizeof x);
    return x;
}

/* First byte of [p, end) that is not a field-value byte (SP, HTAB, VCHAR, obs-text), or end. */
static const char *scan_field(const char *p, const char *end)
{
    for (;;) {
        while (end - p >= 8) {
            uint64_t x = load64(p);
            if (has_below(x, 0x20) | has_byte(x, 0x7f))
                break;
            p += 8;
        }
        while (p < end && is_class(*p, C_FIELD))
            p++;
        if (p < end && *p == '\t') {
            p++;
            continue;
        }
        return p;
    }
}

/* First byte of [p, end) outside 0x21-0x7E, or end. */
static const char *scan_vchar(const char *p, const char *end)
{
    while (end - p >= 8) {
        uint64_t x = load64(p);
        if (has_below(x, 0x21) | has_byte(x, 0x7f) | (x & HIGHS))
            break;
        p += 8;
    }
    while (p < end && is_class(*p, C_VCHAR))
        p++;
    return p;
}

/* ---- small grammars -------------------------------------------------------------------------- */

int http__caseeq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
            return 0;
    return 1;
}

static int match(const char *name, size_t len, const char *pattern, int icase)
{
    size_t plen = strlen(pattern);
    int prefix = plen > 0 && pattern[plen - 1] == '*';
    if (prefix)
        plen--;
    if (prefix ? len < plen : len != plen)
        return 0;
    if (!icase)
        return memcmp(name, pattern, plen) == 0;
    for (size_t i = 0; i < plen; i++) {
        if (lower((unsigned char)name[i]) != lower((unsigned char)pattern[i]))
            return 0;
    }
    return 1;
}

int http_name_match(const char *name, size_t len, const char *pattern)
{
    return match(name, len, pattern, 1);
}

int http_cookie_match(const char *name, size_t len, const char *pattern)
{
    return match(name, len, pattern, 0);
}

/* Next element of a comma list (RFC 9110 5.6.1) in [*pos, end), OWS trimmed; empty ones skipped.
 * Returns 1 with the element in *elem, or 0 at the end. */
static int list_next(const char **pos, const char *end, struct http_span *elem)
{
    const char *p = *pos;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        const char *s = p;
        p = comma ? comma + 1 : end;
        while (s < e && is_ows(*s))
            s++;
        while (e > s && is_ows(e[-1]))
            e--;
        if (e > s) {
            elem->p = s;
            elem->len = (size_t)(e - s);
            *pos = p;
            return 1;
        }
    }
    *pos = end;
    return 0;
}

int http_connection_lists(const char *conn, size_t len, const char *name, size_t name_len)
{
    const char *p = conn, *end = conn + len;
    struct http_span tok;
    while (list_next(&p, end, &tok)) {
        if (tok.len != name_len)
            continue;
        size_t i = 0;
        while (i < name_len && lower((unsigned char)tok.p[i]) == lower((unsigned char)name[i]))
            i++;
        if (i == name_len)
            return 1;
    }
    return 0;
}

int http_is_hop_by_hop(const char *name, size_t len)
{
    switch (len) {
    case 2:
        return http_name_eq(name, len, "te");
    case 7:
        return http_name_eq(name, len, "trailer") || http_name_eq(name, len, "upgrade");
    case 10:
        return http_name_eq(name, len, "connection") || http_name_eq(name, len, "keep-alive");
    case 16:
        return http_name_eq(name, len, "proxy-connection");
    case 17:
        return http_name_eq(name, len, "transfer-encoding");
    case 18:
        return http_name_eq(name, len, "proxy-authenticate");
    case 19:
        return http_name_eq(name, len, "proxy-authorization");
    default:
        return 0;
    }
}

const struct http_hdr *http_hdr_find(const struct http_hdr *hdrs, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (http_name_eq(hdrs[i].name, hdrs[i].name_len, name))
            return &hdrs[i];
    }
    return NULL;
}

int http_cookie_next(const char **pos, const char *end, struct http_span *name,
                     struct http_span *value)
{
    const char *p = *pos;
    while (p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *pe = semi ? semi : end;
        const char *s = p;
        p = semi ? semi + 1 : end;
        while (s < pe && is_ows(*s))
            s++;
        const char *eq = memchr(s, '=', (size_t)(pe - s));
        if (!eq)
            continue;
        const char *ne = eq;
        while (ne > s && is_ows(ne[-1]))
            ne--;
        if (ne == s)
            continue;
        const char *vs = eq + 1, *ve = pe;
        while (vs < ve && is_ows(*vs))
            vs++;
        while (ve > vs && is_ows(ve[-1]))
            ve--;
        name->p = s;
        name->len = (size_t)(ne - s);
        value->p = vs;
        value->len = (size_t)(ve - vs);
        *pos = p;
        return 1;
    }
    *pos = end;
    return 0;
}

int http_target_split(const char *target, size_t len, struct http_span *path,
                      struct http_span *query)
{
    const char *end = target + len;
    const char *hash = memchr(target, '#', len);
    if (hash)
        end = hash;
    const char *q = memchr(target, '?', (size_t)(end - target));
    path->p = target;
    path->len = (size_t)((q ? q : end) - target);
    if (!q) {
        query->p = NULL;
        query->len = 0;
        return 0;
    }
    query->p = q + 1;
    query->len = (size_t)(end - (q + 1));
    return 1;
}

/* 1 if s[0, n), read as a query component ('+' is SP, %XX a byte), equals lit; -1 if s holds a
 * broken escape; else 0. icase: compare ignoring ASCII case. */
static int query_eq(const char *s, size_t n, const char *lit, int icase)
{
    int eq = 1;
    size_t i = 0, j = 0;
    while (i < n) {
        int d = pct_query_next(s, n, &i);
        if (d < 0)
            return -1;
        unsigned char c = (unsigned char)d;
        if (!eq)
            continue; /* keep going: a later broken escape still voids the parameter */
        if (lit[j] == '\0')
            eq = 0;
        else if (icase ? lower(c) != lower((unsigned char)lit[j]) : c != (unsigned char)lit[j])
            eq = 0;
        else
            j++;
    }
    return eq && lit[j] == '\0';
}

int http_query_has(const char *query, size_t len, const char *key, const char *value)
{
    const char *p = query, *end = query + len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        const char *s = p;
        p = amp ? amp + 1 : end;
        if (pe == s || memchr(s, ';', (size_t)(pe - s)))
            continue;
        const char *eq = memchr(s, '=', (size_t)(pe - s));
        const char *ke = eq ? eq : pe;
        const char *vs = eq ? eq + 1 : pe;
        int k = query_eq(s, (size_t)(ke - s), key, 0);
        int v = query_eq(vs, (size_t)(pe - vs), value ? value : "", 1);
        if (k < 0 || v < 0)
            continue;
        if (k && (v || !value))
            return 1;
    }
    return 0;
}

/* ---- message heads --------------------------------------------------------------------------- */

/* What the framing fields said, gathered while the fields are parsed. */
struct framing {
    int64_t content_length;
    int chunked; /* also: a Transfer-Encoding field was seen, there may be only one */
    int conn_close;
    int conn_keep_alive;
};

static int parse_content_length(const char *v, size_t n, int64_t *out)
{
    int64_t x = 0;
    if (n == 0)
        return HTTP_BAD;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned char)v[i] - '0';
        if (d > 9)
            return HTTP_BAD;
        x = x * 10 + d;
        if (x > HTTP_MAX_BODY)
            return HTTP_BAD;
    }
    *out = x;
    return 0;
}

/* Apply one field to *fr if it is a framing field; HTTP_BAD if it breaks a rule of http.h. */
static int framing_field(const struct http_hdr *h, struct framing *fr)
{
    switch (h->name_len) {
    case 10:
        if (http_name_eq(h->name, h->name_len, "connection")) {
            if (http_connection_lists(h->value, h->value_len, "close", 5))
                fr->conn_close = 1;
            if (http_connection_lists(h->value, h->value_len, "keep-alive", 10))
                fr->conn_keep_alive = 1;
        }
        return 0;
    case 14:
        if (http_name_eq(h->name, h->name_len, "content-length")) {
            int64_t cl;
            if (parse_content_length(h->value, h->value_len, &cl) < 0)
                return HTTP_BAD;
            if (fr->content_length >= 0 && fr->content_length != cl)
                return HTTP_BAD;
            fr->content_length = cl;
        }
        return 0;
    case 17:
        if (http_name_eq(h->name, h->name_len, "transfer-encoding")) {
            if (fr->chunked || !http_name_eq(h->value, h->value_len, "chunked"))
                return HTTP_BAD;
            fr->chunked = 1;
        }
        return 0;
    default:
        return 0;
    }
}

/*
 * Parse header fields from buf + pos up to and including the empty line, within [0, end).
 * incomplete is what running out of bytes means (HTTP_PARTIAL or HTTP_TOO_LARGE). Returns the
 * offset after the empty line, or a negative code.
 */
static int parse_fields(const char *buf, size_t pos, size_t end, int incomplete,
                        struct http_hdr *hdrs, size_t cap, size_t *nhdrs, struct framing *fr)
{
    const char *const e = buf + end;
    size_t n = 0;
    fr->content_length = -1;
    fr->chunked = fr->conn_close = fr->conn_keep_alive = 0;

    for (;;) {
        const char *p = buf + pos;
        if (p == e)
            return incomplete;
        if (*p == '\r') {
            if (p + 1 == e)
                return incomplete;
            if (p[1] != '\n')
                return HTTP_BAD;
            *nhdrs = n;
            return (int)(pos + 2);
        }
        /* name: token chars up to ':'. Anything else first (SP/HTAB: obs-fold or whitespace before
         * the colon; LF; CTL; an empty name) is malformed. */
        const char *name = p;
        while (p < e && is_class(*p, C_TCHAR))
            p++;
        if (p == e)
            return incomplete;
        if (*p != ':' || p == name)
            return HTTP_BAD;
        size_t name_len = (size_t)(p - name);
        p++;
        while (p < e && is_ows(*p))
            p++;
        const char *value = p;
        p = scan_field(p, e);
        if (p == e)
            return incomplete;
        if (*p != '\r')
            return HTTP_BAD;
        if (p + 1 == e)
            return incomplete;
        if (p[1] != '\n')
            return HTTP_BAD;
        const char *vend = p;
        while (vend > value && is_ows(vend[-1]))
            vend--;
        pos = (size_t)(p + 2 - buf);
        if (n == cap)
            return HTTP_TOO_LARGE;
        struct http_hdr *h = &hdrs[n++];
        h->name = name;
        h->name_len = name_len;
        h->value = value;
        h->value_len = (size_t)(vend - value);
        if (framing_field(h, fr) < 0)
            return HTTP_BAD;
    }
}

/* Rules that need the whole header section; sets *keep_alive. */
static int framing_done(const struct framing *fr, int minor_version, int *keep_alive)
{
    if (fr->chunked && (fr->content_length >= 0 || minor_version == 0))
        return HTTP_BAD;
    if (fr->conn_close)
        *keep_alive = 0;
    else
        *keep_alive = minor_version == 1 || fr->conn_keep_alive;
    return 0;
}

/* Match "HTTP/1.0" or "HTTP/1.1" at buf + *pos; sets *minor and advances *pos. */
static int parse_version(const char *buf, size_t *pos, size_t end, int incomplete, int *minor)
{
    static const char v[] = "HTTP/1.";
    size_t p = *pos;
    for (size_t i = 0; i < sizeof v - 1; i++, p++) {
        if (p == end)
            return incomplete;
        if (buf[p] != v[i])
            return HTTP_BAD;
    }
    if (p == end)
        return incomplete;
    if (buf[p] != '0' && buf[p] != '1')
        return HTTP_BAD;
    *minor = buf[p] - '0';
    *pos = p + 1;
    return 0;
}

/* Expect CRLF at buf + *pos. */
static int parse_crlf(const char *buf, size_t *pos, size_t end, int incomplete)
{
    size_t p = *pos;
    if (p == end)
        return incomplete;
    if (buf[p] != '\r')
        return HTTP_BAD;
    if (p + 1 == end)
        return incomplete;
    if (buf[p + 1] != '\n')
        return HTTP_BAD;
    *pos = p + 2;
    return 0;
}

/* The scan window and what running out of it means. */
static size_t window(size_t len, size_t max_bytes, int *incomplete)
{
    if (max_bytes > INT_MAX)
        max_bytes = INT_MAX;
    *incomplete = len < max_bytes ? HTTP_PARTIAL : HTTP_TOO_LARGE;
    return len < max_bytes ? len : max_bytes;
}

/*
 * Since buf[0, last_len) (0 < last_len <= end) gave HTTP_PARTIAL: 1 if buf[0, end) may give
 * something else, so the head must be parsed again; 0 if it surely gives HTTP_PARTIAL as well.
 * Only the new bytes (and the three before them) are looked at, so feeding a head in n pieces costs
 * O(its length) here plus one full pass at the end, not n full passes. Two things end a head:
 *  - its empty line: CRLF CRLF after a byte other than LF. The byte before rules out the empty
 *    lines allowed before the request line (a run of CRLFs); no other line of a head is empty.
 *  - a byte that no head may hold at all, which makes the full pass fail (HTTP_BAD, or
 *    HTTP_TOO_LARGE for a field past hdrs_cap before it): a control byte but HTAB, a CR not
 *    followed by LF, an LF not after a CR. That is no rule of its own, only a way to give up on a
 *    stream of garbage at the first such byte rather than at the head's limit; what the grammar
 *    refuses otherwise (a space before a colon, a byte 0x80-0xFF in a name) waits for one of the
 *    two.
 * Nothing before last_len can end the head: those bytes gave HTTP_PARTIAL, by a full pass or by
 * this function (by induction; the first call, last_len = 0, is a full pass).
 */
static int head_may_be_done(const char *buf, size_t last_len, size_t end)
{
    const char *p = buf + last_len, *e = buf + end;

    if (p[-1] == '\r' && p < e && *p != '\n') /* the CR that ended the previous piece */
        return 1;
    for (;;) {
        p = scan_field(p, e); /* past field-value bytes and HTAB */
        if (p == e)
            return 0;
        switch (*p) {
        case '\r':
            if (p + 1 < e && p[1] != '\n')
                return 1;
            break;
        case '\n':
            if (p[-1] != '\r') /* p > buf: p >= buf + last_len > buf */
                return 1;
            if (p - buf >= 4 && p[-2] == '\n' && p[-3] == '\r' && p[-4] != '\n')
                return 1;
            break;
        default:
            return 1;
        }
        p++;
    }
}

int http_parse_request(const char *buf, size_t len, size_t last_len, size_t max_bytes,
                       struct http_req *req)
{
    int incomplete, rc;
    size_t end = window(len, max_bytes, &incomplete);
    size_t pos = 0;

    /* Resume only where the contract allows it; any other call is a full pass (always right). */
    if (last_len > 0 && last_len <= len && incomplete == HTTP_PARTIAL &&
        !head_may_be_done(buf, last_len, end))
        return HTTP_PARTIAL;

    /* empty lines before the request line */
    while (pos < end && buf[pos] == '\r') {
        if (pos + 1 == end)
            return incomplete;
        if (buf[pos + 1] != '\n')
            return HTTP_BAD;
        pos += 2;
    }

    size_t m = pos;
    while (pos < end && is_class(buf[pos], C_TCHAR))
        pos++;
    if (pos == end)
        return incomplete;
    if (buf[pos] != ' ' || pos == m)
        return HTTP_BAD;
    req->method = buf + m;
    req->method_len = pos - m;
    pos++;

    size_t t = pos;
    if (pos == end)
        return incomplete;
    if (buf[pos] == '/') {
        pos = (size_t)(scan_vchar(buf + pos + 1, buf + end) - buf);
    } else if (buf[pos] == '*') {
        if (req->method_len != 7 || memcmp(req->method, "OPTIONS", 7) != 0)
            return HTTP_BAD;
        pos++;
    } else {
        return HTTP_BAD;
    }
    if (pos == end)
        return incomplete;
    if (buf[pos] != ' ')
        return HTTP_BAD;
    req->target = buf + t;
    req->target_len = pos - t;
    pos++;

    if ((rc = parse_version(buf, &pos, end, incomplete, &req->minor_version)) < 0)
        return rc;
    if ((rc = parse_crlf(buf, &pos, end, incomplete)) < 0)
        return rc;

    struct framing fr;
    rc = parse_fields(buf, pos, end, incomplete, req->hdrs, req->hdrs_cap, &req->nhdrs, &fr);
    if (rc < 0)
        return rc;
    if (framing_done(&fr, req->minor_version, &req->keep_alive) < 0)
        return HTTP_BAD;
    req->content_length = fr.content_length;
    req->chunked = fr.chunked;
    return rc;
}

int http_parse_response(const char *buf, size_t len, size_t max_bytes, struct http_resp *resp)
{
    int incomplete, rc;
    size_t end = window(len, max_bytes, &incomplete);
    size_t pos = 0;

    if ((rc = parse_version(buf, &pos, end, incomplete, &resp->minor_version)) < 0)
        return rc;
    if (pos == end)
        return incomplete;
    if (buf[pos++] != ' ')
        return HTTP_BAD;
    int status = 0;
    for (int i = 0; i < 3; i++, pos++) {
        if (pos == end)
            return incomplete;
        unsigned d = (unsigned char)buf[pos] - '0';
        if (d > 9 || (i == 0 && d == 0))
            return HTTP_BAD;
        status = status * 10 + (int)d;
    }
    resp->status = status;
    if (pos == end)
        return incomplete;
    if (buf[pos] == ' ') {
        pos++;
        const char *r = buf + pos;
        pos = (size_t)(scan_field(r, buf + end) - buf);
        resp->reason = r;
        resp->reason_len = (size_t)(buf + pos - r);
    } else {
        resp->reason = buf + pos;
        resp->reason_len = 0;
    }
    if ((rc = parse_crlf(buf, &pos, end, incomplete)) < 0)
        return rc;

    struct framing fr;
    rc = parse_fields(buf, pos, end, incomplete, resp->hdrs, resp->hdrs_cap, &resp->nhdrs, &fr);
    if (rc < 0)
        return rc;
    if (framing_done(&fr, resp->minor_version, &resp->keep_alive) < 0)
        return HTTP_BAD;
    resp->content_length = fr.content_length;
    resp->chunked = fr.chunked;
    return rc;
}

int http_req_body_mode(const struct http_req *req)
{
    if (req->chunked)
        return HTTP_BODY_CHUNKED;
    return req->content_length >= 0 ? HTTP_BODY_LENGTH : HTTP_BODY_NONE;
}

int http_resp_body_mode(const struct http_resp *resp, int head)
{
    if (head || resp->status < 200 || resp->status == 204 || resp->status == 304)
        return HTTP_BODY_NONE;
    if (resp->chunked)
        return HTTP_BODY_CHUNKED;
    return resp->content_length >= 0 ? HTTP_BODY_LENGTH : HTTP_BODY_CLOSE;
}

/* ---- chunked bodies -------------------------------------------------------------------------- */

/* A byte-at-a-time state machine for the framing lines; chunk data is moved in one memmove per call
 * and chunk. Decoded data is written at w <= r (the read offset), so the move never overtakes
 * unread input and the bytes after the body stay where they were. */
enum {
    CH_SIZE0 = 0, /* first hex digit of a chunk size */
    CH_SIZE,      /* more hex digits, ';', BWS or CR */
    CH_EXT_BWS,   /* SP/HTAB after the size: only ';' may follow */
    CH_EXT,       /* extension bytes up to CR */
    CH_SIZE_LF,   /* LF ending the size line */
    CH_DATA,      /* chunk data */
    CH_DATA_CR,   /* CRLF after the data */
    CH_DATA_LF,
    CH_TRAILER0, /* start of a trailer line, or CR of the final empty line */
    CH_TRAILER_NAME,
    CH_TRAILER_VALUE,
    CH_TRAILER_LF,
    CH_END_LF, /* LF of the final empty line */
    CH_DONE,
    CH_ERROR,
};

ssize_t http_chunked_decode(struct http_chunked *st, char *buf, size_t *len)
{
    const size_t in = *len;
    size_t r = 0, w = 0;

    if (st->state == CH_DONE) {
        *len = 0;
        return (ssize_t)in;
    }
    while (r < in) {
        char c = buf[r];
        switch (st->state) {
        case CH_DATA: {
            size_t n = in - r;
            if (n > st->remaining)
                n = (size_t)st->remaining;
            if (w != r)
                memmove(buf + w, buf + r, n);
            w += n;
            r += n;
            st->remaining -= n;
            if (st->remaining == 0)
                st->state = CH_DATA_CR;
            continue;
        }
        case CH_SIZE0:
        case CH_SIZE: {
            int d = pct_hexval(c);
            if (d >= 0) {
                st->remaining = st->remaining << 4 | (uint64_t)d;
                if (st->remaining > (uint64_t)HTTP_MAX_BODY)
                    goto bad;
                st->state = CH_SIZE;
            } else if (st->state == CH_SIZE0) {
                goto bad;
            } else if (c == ';') {
                st->state = CH_EXT;
            } else if (is_ows(c)) {
                st->state = CH_EXT_BWS;
            } else if (c == '\r') {
                st->state = CH_SIZE_LF;
            } else {
                goto bad;
            }
            break;
        }
        case CH_EXT_BWS:
            if (c == ';')
                st->state = CH_EXT;
            else if (!is_ows(c))
                goto bad;
            break;
        case CH_EXT:
            if (c == '\r')
                st->state = CH_SIZE_LF;
            else if (!is_class(c, C_FIELD | C_HTAB))
                goto bad;
            break;
        case CH_SIZE_LF:
            if (c != '\n')
                goto bad;
            st->line = 0;
            st->state = st->remaining ? CH_DATA : CH_TRAILER0;
            r++;
            continue;
        case CH_DATA_CR:
            if (c != '\r')
                goto bad;
            st->state = CH_DATA_LF;
            r++;
            continue;
        case CH_DATA_LF:
            if (c != '\n')
                goto bad;
            st->state = CH_SIZE0;
            st->line = 0;
            r++;
            continue;
        case CH_TRAILER0:
            if (c == '\r')
                st->state = CH_END_LF;
            else if (is_class(c, C_TCHAR))
                st->state = CH_TRAILER_NAME;
            else
                goto bad;
            break;
        case CH_TRAILER_NAME:
            if (c == ':')
                st->state = CH_TRAILER_VALUE;
            else if (!is_class(c, C_TCHAR))
                goto bad;
            break;
        case CH_TRAILER_VALUE:
            if (c == '\r')
                st->state = CH_TRAILER_LF;
            else if (!is_class(c, C_FIELD | C_HTAB))
                goto bad;
            break;
        case CH_TRAILER_LF:
            if (c != '\n')
                goto bad;
            st->state = CH_TRAILER0;
            break;
        case CH_END_LF:
            if (c != '\n' || ++st->line > HTTP_CHUNK_TRAILER_MAX)
                goto bad;
            st->state = CH_DONE;
            *len = w;
            return (ssize_t)(in - r - 1);
        default: /* CH_ERROR */
            goto bad;
        }
        /* a byte of a size line (its CR not counted) or of the trailer section (all counted) */
        r++;
        if (st->state >= CH_TRAILER0) {
            if (++st->line > HTTP_CHUNK_TRAILER_MAX)
                goto bad;
        } else if (c != '\r' && ++st->line > HTTP_CHUNK_LINE_MAX) {
            goto bad;
        }
    }
    *len = w;
    return HTTP_PARTIAL;
bad:
    st->state = CH_ERROR;
    *len = w;
    return HTTP_BAD;
}
