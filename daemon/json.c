/*
 * json.c — find one value in a strict JSON document (json.h says what and why).
 *
 * One recursive-descent pass checks the whole document and, on the way, remembers where the value
 * at the wanted path begins (the last one, when a member repeats). A second, small step reads that
 * value: a string is decoded (escapes, \u surrogate pairs to UTF-8), a number is read as an
 * integer. Depth is bounded by JSON_MAX_DEPTH, so the recursion is too.
 */
#include <errno.h>
#include <string.h>

#include "json.h"
#include "pct.h"

struct jr {
    const unsigned char *p, *end;
    const char *const *path;
    unsigned npath;
    const unsigned char *found; /* start of the value at path, or NULL */
};

static void ws(struct jr *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int hex4(const unsigned char *p, const unsigned char *end, unsigned *cp)
{
    unsigned v = 0;

    if (end - p < 4)
        return -1;
    for (int i = 0; i < 4; i++) {
        int h = pct_hexval((char)p[i]);
        if (h < 0)
            return -1;
        v = v << 4 | (unsigned)h;
    }
    *cp = v;
    return 0;
}

static size_t put_utf8(unsigned cp, unsigned char o[4])
{
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xc0 | cp >> 6);
        o[1] = (unsigned char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xe0 | cp >> 12);
        o[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
        o[2] = (unsigned char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (unsigned char)(0xf0 | cp >> 18);
    o[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
    o[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
    o[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

/*
 * The string at p (its opening quote). With out, its decoded value goes there (at most cap - 1
 * bytes, then NUL); *n counts the decoded length even past cap. Returns a pointer past the closing
 * quote, or NULL if malformed.
 */
static const unsigned char *string_at(const unsigned char *p, const unsigned char *end, char *out,
                                      size_t cap, size_t *n)
{
    size_t k = 0;

    if (p >= end || *p != '"')
        return NULL;
    p++;
    while (p < end) {
        unsigned char c = *p++, u[4];
        size_t ul = 1;

        if (c == '"') {
            if (out && cap)
                out[k < cap ? k : cap - 1] = 0;
            *n = k;
            return p;
        }
        if (c < 0x20)
            return NULL;
        u[0] = c;
        if (c == '\\') {
            if (p >= end)
                return NULL;
            c = *p++;
            switch (c) {
            case '"':
            case '\\':
            case '/':
                u[0] = c;
                break;
            case 'b':
                u[0] = '\b';
                break;
            case 'f':
                u[0] = '\f';
                break;
            case 'n':
                u[0] = '\n';
                break;
            case 'r':
                u[0] = '\r';
                break;
            case 't':
                u[0] = '\t';
                break;
            case 'u': {
                unsigned cp, lo;

                if (hex4(p, end, &cp) < 0)
                    return NULL;
                p += 4;
                if (cp >= 0xd800 && cp < 0xdc00 && end - p >= 6 && p[0] == '\\' && p[1] == 'u' &&
                    hex4(p + 2, end, &lo) == 0 && lo >= 0xdc00 && lo < 0xe000) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    p += 6;
                } else if (cp >= 0xd800 && cp < 0xe000) {
                    cp = 0xfffd; /* a lone surrogate */
                }
                ul = put_utf8(cp, u);
                break;
            }
            default:
                return NULL;
            }
        }
        for (size_t i = 0; i < ul; i++, k++)
            if (out && k + 1 < cap)
                out[k] = (char)u[i];
    }
    return NULL;
}

static int number(struct jr *j)
{
    const unsigned char *p = j->p, *e = j->end;

    if (p < e && *p == '-')
        p++;
    if (p >= e)
        return -1;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    else
        return -1;
    if (p < e && *p == '.') {
        if (++p >= e || *p < '0' || *p > '9')
            return -1;
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < e && (*p == '+' || *p == '-'))
            p++;
        if (p >= e || *p < '0' || *p > '9')
            return -1;
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    }
    j->p = p;
    return 0;
}

static int literal(struct jr *j, const char *lit)
{
    size_t n = strlen(lit);

    if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
        return -1;
    j->p += n;
    return 0;
}

static int value(struct jr *j, unsigned depth, int on_path);

/*
 * A member's name and the ':' after it, at j->p. *match: on_path, and the name is the path's step
 * at depth. Returns 0, or -1 if malformed.
 */
static int member_name(struct jr *j, unsigned depth, int on_path, int *match)
{
    char key[64];
    size_t kn;
    const unsigned char *q;

    ws(j);
    q = string_at(j->p, j->end, key, sizeof(key), &kn);
    if (!q)
        return -1;
    j->p = q;
    *match = on_path && depth < j->npath && kn < sizeof(key) && strlen(j->path[depth]) == kn &&
             memcmp(key, j->path[depth], kn) == 0;
    ws(j);
    if (j->p >= j->end || *j->p != ':')
        return -1;
    j->p++;
    return 0;
}

/* The object or array at j->p, at depth (below JSON_MAX_DEPTH). on_path as for value(). */
static int container(struct jr *j, unsigned depth, int on_path)
{
    int object = *j->p == '{';
    unsigned char close = object ? '}' : ']';

    j->p++;
    ws(j);
    if (j->p < j->end && *j->p == close) {
        j->p++;
        return 0;
    }
    for (unsigned i = 0;; i++) {
        int match;

        if (object) {
            if (member_name(j, depth, on_path, &match) < 0)
                return -1;
        } else {
            match = on_path && depth < j->npath && i == 0 && strcmp(j->path[depth], "#0") == 0;
        }
        if (value(j, depth + 1, match) < 0)
            return -1;
        ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        if (j->p < j->end && *j->p == close) {
            j->p++;
            return 0;
        }
        return -1;
    }
}

/* The value at j->p. on_path: the path's first `depth` steps led here. */
static int value(struct jr *j, unsigned depth, int on_path)
{
    ws(j);
    if (on_path && depth == j->npath)
        j->found = j->p;
    if (j->p >= j->end)
        return -1;
    if (depth >= JSON_MAX_DEPTH && (*j->p == '{' || *j->p == '['))
        return -1;
    switch (*j->p) {
    case '{':
    case '[':
        return container(j, depth, on_path);
    case '"': {
        size_t n;
        const unsigned char *q = string_at(j->p, j->end, NULL, 0, &n);
        if (!q)
            return -1;
        j->p = q;
        return 0;
    }
    case 't':
        return literal(j, "true");
    case 'f':
        return literal(j, "false");
    case 'n':
        return literal(j, "null");
    default:
        return number(j);
    }
}

/* Check doc and find path: 0 with *at (NULL: not found), or -EINVAL. */
static int walk(const char *doc, size_t len, const char *const *path, unsigned npath,
                const unsigned char **at)
{
    struct jr j = {(const unsigned char *)doc, (const unsigned char *)doc + len, path, npath, NULL};

    if (npath > JSON_MAX_PATH || value(&j, 0, 1) < 0)
        return -EINVAL;
    ws(&j);
    if (j.p != j.end)
        return -EINVAL;
    *at = j.found;
    return 0;
}

int json_get_string(const char *doc, size_t len, const char *const *path, unsigned npath, char *out,
                    size_t cap, size_t *out_len)
{
    const unsigned char *at;
    size_t n;
    int rc = walk(doc, len, path, npath, &at);

    if (rc < 0)
        return rc;
    if (!at)
        return -ENOENT;
    if (*at != '"')
        return -EPROTO;
    string_at(at, (const unsigned char *)doc + len, out, cap, &n);
    if (n >= cap)
        return -EMSGSIZE;
    if (out_len)
        *out_len = n;
    return 0;
}

int json_get_number(const char *doc, size_t len, const char *const *path, unsigned npath,
                    const char **num, size_t *num_len)
{
    const unsigned char *at;
    struct jr j = {NULL, (const unsigned char *)doc + len, NULL, 0, NULL};
    int rc = walk(doc, len, path, npath, &at);

    if (rc < 0)
        return rc;
    if (!at)
        return -ENOENT;
    j.p = at;
    if (number(&j) < 0) /* walk checked the value: not a number means another type */
        return -EPROTO;
    *num = (const char *)at;
    *num_len = (size_t)(j.p - at);
    return 0;
}

int json_get_int(const char *doc, size_t len, const char *const *path, unsigned npath, int64_t *out)
{
    const char *at, *end;
    size_t n;
    int rc = json_get_number(doc, len, path, npath, &at, &n);
    int neg = 0;
    uint64_t v = 0;

    if (rc < 0)
        return rc;
    end = at + n;
    if (*at == '-') {
        neg = 1;
        at++;
    }
    for (; at < end && *at >= '0' && *at <= '9'; at++) {
        unsigned d = (unsigned)(*at - '0');

        if (v > (UINT64_MAX - d) / 10)
            return -EMSGSIZE;
        v = v * 10 + d;
    }
    if (at < end) /* a fraction or an exponent */
        return -EPROTO;
    if (v > (uint64_t)INT64_MAX + (uint64_t)neg) /* -2^63 is an int64_t, 2^63 is not */
        return -EMSGSIZE;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

int json_check_object(const char *doc, size_t len)
{
    const unsigned char *at;
    size_t i = 0;

    while (i < len && (doc[i] == ' ' || doc[i] == '\t' || doc[i] == '\n' || doc[i] == '\r'))
        i++;
    if (i == len || doc[i] != '{')
        return -EINVAL;
    return walk(doc, len, NULL, 0, &at);
}

static int b64url_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

long json_b64url_decode(const char *s, size_t n, unsigned char *out)
{
    uint32_t acc = 0;
    int bits = 0;
    long o = 0;

    while (n > 0 && s[n - 1] == '=')
        n--;
    if (n % 4 == 1)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_val((unsigned char)s[i]);

        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    return o;
}
