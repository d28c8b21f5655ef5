/*
 * log.c — one line per event on stderr (see log.h for the formats).
 *
 * A line is built in a stack buffer and written with a single write(2): LOG_LINE_MAX is below
 * PIPE_BUF, so even through a pipe to journald or a container runtime no two lines interleave. A
 * message too long for the buffer is cut at an escape boundary and ends in "...", and the line
 * stays well-formed (closing quote and brace in JSON).
 */
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

enum log_level log__level = LOG_LEVEL_INFO;
static enum log_format log_format_cur = LOG_FORMAT_TEXT;

void log_init(enum log_level level, enum log_format format)
{
    log__level = level;
    log_format_cur = format;
}

const char *log_level_name(enum log_level level)
{
    switch (level) {
    case LOG_LEVEL_DEBUG:
        return "debug";
    case LOG_LEVEL_INFO:
        return "info";
    case LOG_LEVEL_WARN:
        return "warn";
    case LOG_LEVEL_ERROR:
        return "error";
    }
    return "?";
}

/* The line under construction. Appends that would pass `limit` set `cut` and are dropped whole, so
 * an escape sequence is never split; the bytes between limit and cap hold the ending. */
struct line {
    char *p;
    size_t len, limit;
    int cut;
};

#define LINE_TAIL 8 /* room kept for "...\"}\n" and the NUL */

static void put(struct line *l, const char *s, size_t n)
{
    if (l->cut || n > l->limit - l->len) {
        l->cut = 1;
        return;
    }
    memcpy(l->p + l->len, s, n);
    l->len += n;
}

static void puts_(struct line *l, const char *s)
{
    put(l, s, strlen(s));
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if it is not one. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF; /* range of the second byte */

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        if (c == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return len;
}

/* Text mode: control bytes and DEL as \xNN, everything else as is. */
static void put_text(struct line *l, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";

    for (size_t i = 0; i < n && !l->cut; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c < 0x20 || c == 0x7f) {
            char e[4] = {'\\', 'x', hex[c >> 4], hex[c & 15]};

            put(l, e, 4);
        } else
            put(l, &s[i], 1);
    }
}

/* JSON string body: RFC 8259 escapes; valid UTF-8 as is, each invalid byte as U+FFFD. */
static void put_json(struct line *l, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;

    while (i < n && !l->cut) {
        unsigned char c = u[i];
        size_t k;

        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};

            put(l, e, 2);
            i++;
        } else if (c < 0x20) {
            const char *short_esc = c == '\n'   ? "\\n"
                                    : c == '\r' ? "\\r"
                                    : c == '\t' ? "\\t"
                                                : NULL;

            if (short_esc)
                put(l, short_esc, 2);
            else {
                char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};

                put(l, e, 6);
            }
            i++;
        } else if ((k = utf8_seq(u + i, n - i)) != 0) {
            put(l, s + i, k);
            i += k;
        } else {
            put(l, "\\ufffd", 6);
            i++;
        }
    }
}

size_t log__format(char *buf, size_t cap, enum log_format format, int64_t ts_ms,
                   enum log_level level, const char *event, const char *fmt, va_list ap)
{
    struct line l = {.p = buf, .len = 0, .limit = cap - LINE_TAIL, .cut = 0};
    char ts[64], msg[LOG_LINE_MAX];
    size_t msg_len = 0;
    int msg_cut = 0;
    time_t secs = (time_t)(ts_ms / 1000);
    struct tm tm;

    if (fmt) {
        int n = vsnprintf(msg, sizeof(msg), fmt, ap);

        if (n > 0) {
            msg_len = (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1;
            msg_cut = (size_t)n >= sizeof(msg);
        }
    }
    gmtime_r(&secs, &tm);
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ts_ms % 1000));

    if (format == LOG_FORMAT_JSON) {
        puts_(&l, "{\"ts\":\"");
        puts_(&l, ts);
        puts_(&l, "\",\"level\":\"");
        puts_(&l, log_level_name(level));
        puts_(&l, "\",\"event\":\"");
        put_json(&l, event, strlen(event));
        if (fmt) {
            puts_(&l, "\",\"msg\":\"");
            put_json(&l, msg, msg_len);
        }
        if (l.cut || msg_cut) {
            l.cut = 0; /* the tail room is reserved for this */
            l.limit = cap - 1;
            puts_(&l, "...");
        }
        l.limit = cap - 1;
        puts_(&l, "\"}\n");
    } else {
        char lvl[8];

        snprintf(lvl, sizeof(lvl), "%-5s ", log_level_name(level));
        puts_(&l, ts);
        puts_(&l, " ");
        puts_(&l, lvl);
        put_text(&l, event, strlen(event));
        if (fmt && msg_len) {
            puts_(&l, " ");
            put_text(&l, msg, msg_len);
        }
        l.limit = cap - 1;
        if (l.cut || msg_cut) {
            l.cut = 0;
            puts_(&l, "...");
        }
        puts_(&l, "\n");
    }
    buf[l.len] = '\0';
    return l.len;
}

void log_msg(enum log_level level, const char *event, const char *fmt, ...)
{
    char line[LOG_LINE_MAX];
    struct timespec now;
    va_list ap;
    size_t len, off = 0;
    int saved_errno = errno; /* callers log after a failed call and may still read errno */

    if (level < log__level)
        return;
    clock_gettime(CLOCK_REALTIME, &now);
    va_start(ap, fmt);
    len = log__format(line, sizeof(line), log_format_cur,
                      (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000, level, event, fmt, ap);
    va_end(ap);
    while (off < len) {
        ssize_t n = write(STDERR_FILENO, line + off, len - off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* nowhere to report a failing stderr */
        off += (size_t)n;
    }
    errno = saved_errno;
}

static pthread_once_t digest_once = PTHREAD_ONCE_INIT;
static unsigned char digest_key[32];

static void digest_key_init(void)
{
    if (RAND_bytes(digest_key, sizeof(digest_key)) != 1 &&
        getrandom(digest_key, sizeof(digest_key), 0) != (ssize_t)sizeof(digest_key)) {
        /* No randomness at all: fall back to time and address, still never the bare secret. */
        struct timespec t;

        clock_gettime(CLOCK_REALTIME, &t);
        memcpy(digest_key, &t, sizeof(t) < sizeof(digest_key) ? sizeof(t) : sizeof(digest_key));
    }
}

char *log_digest_hex(const void *data, size_t len, char out[LOG_DIGEST_HEX_SIZE])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;

    pthread_once(&digest_once, digest_key_init);
    if (!HMAC(EVP_sha256(), digest_key, sizeof(digest_key), data ? data : (const void *)"", len,
              mac, &mac_len) ||
        mac_len < 8) {
        memcpy(out, "????????????????", LOG_DIGEST_HEX_SIZE);
        return out;
    }
    for (int i = 0; i < 8; i++) {
        out[2 * i] = hex[mac[i] >> 4];
        out[2 * i + 1] = hex[mac[i] & 15];
    }
    out[16] = '\0';
    return out;
}

int log_limit_pass(struct log_limit *l, const char *event)
{
    struct timespec ts;
    uint64_t quiet = 0;
    int pass = 0;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    pthread_mutex_lock(&l->mu);
    if (ts.tv_sec != l->sec) {
        l->sec = ts.tv_sec;
        l->n = 0;
    }
    if (l->n < l->per_sec) {
        l->n++;
        pass = 1;
        quiet = l->quiet;
        l->quiet = 0;
    } else {
        l->quiet++;
    }
    pthread_mutex_unlock(&l->mu);
    if (quiet)
        log_warn("log_suppressed", "%llu %s lines not written (at most %u a second)",
                 (unsigned long long)quiet, event, l->per_sec);
    return pass;
}
