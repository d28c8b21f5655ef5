/*
 * log.h — the daemon's log: one line per event on stderr, as text or JSON.
 *
 * Every call writes one whole line with one write(2) (at most LOG_LINE_MAX bytes, below PIPE_BUF),
 * so lines from many threads never interleave. Nothing is shared between calls but the level and
 * format set once by log_init before any thread starts, so logging takes no lock.
 *
 * Text:  2026-11-29T04:33:44.123Z info  upstream_down cause="connect: refused" addr=127.0.0.1:9000
 * JSON:  {"ts":"2026-11-29T04:33:44.123Z","level":"info","event":"upstream_down","msg":"cause=..."}
 *
 * The message is printf-formatted by the caller, by convention as key=value pairs. Control bytes in
 * it are escaped (\n never ends a line early); in JSON, invalid UTF-8 becomes U+FFFD. Callers must
 * never pass a cookie, token or JWT: log a log_digest_hex() of it, or the cache's own digest.
 */
#ifndef AUTHCACHE_LOG_H
#define AUTHCACHE_LOG_H

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* Not LOG_INFO etc.: <syslog.h> owns those names. */
enum log_level { LOG_LEVEL_DEBUG = 0, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };
enum log_format { LOG_FORMAT_TEXT = 0, LOG_FORMAT_JSON };

#define LOG_LINE_MAX 4096      /* a longer line is cut, and ends in "..." */
#define LOG_DIGEST_HEX_SIZE 17 /* 16 hex digits and a NUL */

/* Set the least level written and the format. Call once at start, before threads; until then the
 * log writes info and above as text. */
void log_init(enum log_level level, enum log_format format);

/* Write one line if level is at least the configured one. event is a short snake_case name (not
 * escaped in text mode: pass a literal). fmt may be NULL for no message. Thread-safe. */
void log_msg(enum log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The level/name helpers for config parsing and usage text: "debug", "info", "warn", "error". */
const char *log_level_name(enum log_level level);

/*
 * A short id for a secret (a cookie value, a token), safe to log: the first 8 bytes of
 * HMAC-SHA-256(per-process random key, data) in hex, written into out and returned. The same secret
 * gives the same id for the life of the process (so log lines can be correlated), and no id can be
 * tested against a guessed secret without that key. Thread-safe.
 */
char *log_digest_hex(const void *data, size_t len, char out[LOG_DIGEST_HEX_SIZE]);

/*
 * A rate limit for one kind of line (one per event name), for lines whose number others control (a
 * flood of forged messages on the bus): at most per_sec lines in each second of the monotonic
 * clock. The lines refused are counted; the next one let through is preceded by one
 * "log_suppressed" line saying how many of its kind were not written. Thread-safe (a mutex, taken
 * only to log).
 */
struct log_limit {
    pthread_mutex_t mu;
    unsigned per_sec, n; /* the limit; lines written in second sec */
    int64_t sec;
    uint64_t quiet; /* refused since the last line written */
};
#define LOG_LIMIT_INIT(per)                                                                        \
    {                                                                                              \
        .mu = PTHREAD_MUTEX_INITIALIZER, .per_sec = (per)                                          \
    }

/* 1 if a line of event's kind may be written now (the "log_suppressed" line, if due, is written
 * first), 0 if not (counted). */
int log_limit_pass(struct log_limit *l, const char *event);

/* The level the macros compare against; written only by log_init. */
extern enum log_level log__level;

/* Skip formatting (and evaluating the arguments) below the level. */
#define log_at_(lvl, event, ...)                                                                   \
    do {                                                                                           \
        if ((lvl) >= log__level)                                                                   \
            log_msg((lvl), (event), __VA_ARGS__);                                                  \
    } while (0)
#define log_debug(event, ...) log_at_(LOG_LEVEL_DEBUG, event, __VA_ARGS__)
#define log_info(event, ...) log_at_(LOG_LEVEL_INFO, event, __VA_ARGS__)
#define log_warn(event, ...) log_at_(LOG_LEVEL_WARN, event, __VA_ARGS__)
#define log_error(event, ...) log_at_(LOG_LEVEL_ERROR, event, __VA_ARGS__)

/*
 * For tests: format one line as log_msg would (timestamp ts_ms, wall-clock milliseconds) into buf,
 * ending in '\n' and NUL-terminated. cap must be at least 64. Returns the line's length.
 */
size_t log__format(char *buf, size_t cap, enum log_format format, int64_t ts_ms,
                   enum log_level level, const char *event, const char *fmt, va_list ap)
    __attribute__((format(printf, 7, 0)));

#endif
