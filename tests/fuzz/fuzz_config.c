/*
 * fuzz_config.c — libFuzzer target for the start-up parsers and the JWT expiry reader.
 *
 * The first byte picks what the rest is fed to:
 *   0  config_parse_duration: only 0 / -EINVAL / -ERANGE, a result within range that reads back
 *      the same when written as "<n>ms";
 *   1  config_parse: the bytes split on NUL, space and newline into argv (a token starting "E:" is
 *      an environment entry instead); it must only return: -1 with one non-empty line, 1, or 0
 *      with a configuration inside every documented bound;
 *   2  jwtexp_from_token and jwtexp_from_header_value on an exact-size heap copy, and against
 *      libjwt: whenever libjwt decodes a well-formed token with an integer exp, jwtexp must read
 *      the same exp (clamped), and -ENOENT must mean libjwt saw none;
 *   3  log__format of the bytes as a JSON and a text message: one line, below LOG_LINE_MAX, no
 *      raw control byte.
 * Seeds: tests/fuzz/corpus/config/.
 */
#include <errno.h>
#include <jwt.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "jwtexp.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_duration(const uint8_t *d, size_t n)
{
    char *s = malloc(n + 1), back[40];
    int64_t ms = -1, ms2 = -1;
    int r;

    memcpy(s, d, n);
    s[n] = '\0';
    r = config_parse_duration(s, &ms);
    if (r != 0 && r != -EINVAL && r != -ERANGE)
        abort();
    if (r == 0) {
        if (ms < 0 || ms > CONFIG_DURATION_MAX_MS)
            abort();
        snprintf(back, sizeof(back), "%lldms", (long long)ms);
        if (config_parse_duration(back, &ms2) != 0 || ms2 != ms)
            abort();
    }
    free(s);
}

#define MAX_TOKENS 64

static void fuzz_parse(const uint8_t *d, size_t n)
{
    char *buf = malloc(n + 1), *argv[MAX_TOKENS + 2], *envp[MAX_TOKENS + 1];
    int argc = 0, envc = 0, r;
    char err[256];
    struct config cfg;
    size_t i = 0;

    memcpy(buf, d, n);
    buf[n] = '\0';
    argv[argc++] = "authcached";
    while (i < n && argc + envc < MAX_TOKENS) {
        size_t start = i;

        while (i < n && buf[i] != '\0' && buf[i] != ' ' && buf[i] != '\n')
            i++;
        buf[i] = '\0';
        if (strncmp(buf + start, "E:", 2) == 0)
            envp[envc++] = buf + start + 2;
        else
            argv[argc++] = buf + start;
        i++;
    }
    argv[argc] = NULL;
    envp[envc] = NULL;

    memset(err, 'X', sizeof(err));
    r = config_parse(&cfg, argc, argv, envp, err, sizeof(err));
    if (r == -1) {
        size_t len = strnlen(err, sizeof(err));

        if (len == 0 || len == sizeof(err) || memchr(err, '\n', len) || memchr(err, '\r', len))
            abort();
    } else if (r == 0) {
        if (!cfg.upstream.host[0] || cfg.upstream.port == 0 || cfg.fresh_ttl_ms < 0 ||
            cfg.session_ttl_ms <= 0 || cfg.outage_grace_ms < 0 || cfg.upstream_timeout_ms <= 0 ||
            cfg.session_ttl_ms > CONFIG_DURATION_MAX_MS || cfg.capacity < CONFIG_CAPACITY_MIN ||
            cfg.capacity > CONFIG_CAPACITY_MAX || cfg.workers < 1 ||
            cfg.workers > CONFIG_WORKERS_MAX || cfg.session_cookies.n > CONFIG_MAX_PATTERNS ||
            cfg.identity_headers.n > CONFIG_MAX_PATTERNS || !cfg.shm_name[0] ||
            cfg.shm_name[0] == '.' ||
            (cfg.listen.len != sizeof(struct sockaddr_in) &&
             cfg.listen.len != sizeof(struct sockaddr_in6)) ||
            (cfg.upstream.base_path[0] &&
             cfg.upstream.base_path[strlen(cfg.upstream.base_path) - 1] == '/') ||
            !config_patterns_match(&cfg.identity_headers, cfg.user_header,
                                   strlen(cfg.user_header)) ||
            (cfg.bus.enabled && (!cfg.bus.host[0] || !cfg.bus.port || !cfg.bus.channel[0])))
            abort();
        config_free(&cfg);
    } else if (r != 1)
        abort();
    free(buf);
}

static int b64url_char(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

/* Whether base64url part s[0, n), once decoded, is one jwtexp and libjwt may read differently
 * without either being wrong: it holds a NUL (libjwt hands jansson a C string, so it reads only up
 * to the NUL), or 32 or more brackets (jwtexp refuses nesting deeper than 32). */
static int ambiguous_part(const char *s, size_t n)
{
    uint32_t acc = 0;
    int bits = 0, brackets = 0;

    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int v = c >= 'A' && c <= 'Z'   ? c - 'A'
                : c >= 'a' && c <= 'z' ? c - 'a' + 26
                : c >= '0' && c <= '9' ? c - '0' + 52
                : c == '-'             ? 62
                                       : 63;

        acc = (acc << 6 | (uint32_t)v) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            uint8_t b = (uint8_t)(acc >> (bits - 8));

            bits -= 8;
            if (b == '\0')
                return 1;
            brackets += b == '[' || b == '{';
        }
    }
    return brackets >= 32;
}

static void fuzz_jwt(const uint8_t *d, size_t n)
{
    char *tok = malloc(n ? n : 1);
    int64_t exp = -1, exp2 = -1;
    int r, dots = 0, clean = n > 0;
    size_t seg = 0, cut[2] = {0, 0};

    memcpy(tok, d, n);
    r = jwtexp_from_token(tok, n, &exp);
    if (r != 0 && r != -EINVAL && r != -ENOENT)
        abort();
    if (r == 0 && (exp < 0 || exp > JWTEXP_MAX_S))
        abort();
    r = jwtexp_from_header_value(tok, n, &exp2);
    if (r != 0 && r != -EINVAL && r != -ENOENT)
        abort();

    /* Against libjwt, on tokens both must read: three base64url parts of possible lengths. */
    r = jwtexp_from_token(tok, n, &exp);
    for (size_t i = 0; i < n && clean; i++) {
        if (d[i] == '.') {
            if (dots == 2 || (i - seg) % 4 == 1) {
                clean = 0;
                break;
            }
            cut[dots++] = i;
            seg = i + 1;
        } else if (!b64url_char(d[i]))
            clean = 0;
    }
    if (clean && dots == 2 && (n - seg) % 4 != 1 && n <= JWTEXP_MAX_TOKEN) {
        char *z = malloc(n + 1);
        jwt_t *j = NULL;

        memcpy(z, d, n);
        z[n] = '\0';
        if (jwt_decode(&j, z, NULL, 0) == 0) {
            char *grants = jwt_get_grants_json(j, NULL);
            char *e = jwt_get_grants_json(j, "exp");
            int ambiguous =
                ambiguous_part(z, cut[0]) || ambiguous_part(z + cut[0] + 1, cut[1] - cut[0] - 1);
            int object = grants && grants[0] == '{';

            if (object && !ambiguous) {
                if (!e) {
                    if (r != -ENOENT)
                        abort();
                } else if (strspn(e + (e[0] == '-'), "0123456789") == strlen(e + (e[0] == '-')) &&
                           e[e[0] == '-'] != '\0') {
                    long long v = strtoll(e, NULL, 10);
                    int64_t want = v < 0 ? 0 : v > JWTEXP_MAX_S ? JWTEXP_MAX_S : v;

                    if (r != 0 || exp != want)
                        abort();
                } else if (r == -ENOENT)
                    abort();
            }
            free(grants);
            free(e);
            jwt_free(j);
        }
        free(z);
    }
    free(tok);
}

static size_t format(char *buf, size_t cap, enum log_format f, const char *msg, ...)
{
    va_list ap;
    size_t n;

    va_start(ap, msg);
    n = log__format(buf, cap, f, INT64_C(1795926824123), LOG_LEVEL_WARN, "fuzz", msg, ap);
    va_end(ap);
    return n;
}

static void fuzz_log(const uint8_t *d, size_t n)
{
    char *msg = malloc(n + 1), line[LOG_LINE_MAX];

    memcpy(msg, d, n);
    msg[n] = '\0';
    for (int f = 0; f < 2; f++) {
        size_t len = format(line, sizeof(line), (enum log_format)f, "%s", msg);

        if (len == 0 || len >= sizeof(line) || line[len] != '\0' || line[len - 1] != '\n')
            abort();
        for (size_t i = 0; i + 1 < len; i++)
            if ((unsigned char)line[i] < 0x20)
                abort();
        if (f == LOG_FORMAT_JSON && (len < 3 || memcmp(line + len - 3, "\"}\n", 3) != 0))
            abort();
    }
    free(msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    switch (data[0] % 4) {
    case 0:
        fuzz_duration(data + 1, size - 1);
        break;
    case 1:
        fuzz_parse(data + 1, size - 1);
        break;
    case 2:
        fuzz_jwt(data + 1, size - 1);
        break;
    default:
        fuzz_log(data + 1, size - 1);
        break;
    }
    return 0;
}
