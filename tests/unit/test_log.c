/*
 * test_log.c — the log line formats (text and JSON, with escaping of control bytes, quotes and
 * invalid UTF-8, and cutting of long messages), level filtering, one write per line from many
 * threads, and log_digest_hex.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "log.h"

static const int64_t TS = INT64_C(1795926824123); /* 2026-11-29T04:33:44.123Z */

static char line[LOG_LINE_MAX];

__attribute__((format(printf, 4, 5))) static const char *
fmt(enum log_format f, enum log_level l, const char *event, const char *msg, ...)
{
    va_list ap;

    va_start(ap, msg);
    log__format(line, sizeof(line), f, TS, l, event, msg, ap);
    va_end(ap);
    return line;
}

#define CHECK_STR(got, want)                                                                       \
    do {                                                                                           \
        const char *g2_ = (got), *w2_ = (want);                                                    \
        CHECK(strcmp(g2_, w2_) == 0, "\n  expected %s\n  got      %s", w2_, g2_);                  \
    } while (0)

static void test_text(void)
{
    CHECK_STR(fmt(LOG_FORMAT_TEXT, LOG_LEVEL_INFO, "listening", "addr=%s workers=%d",
                  "127.0.0.1:9300", 2),
              "2026-11-29T04:33:44.123Z info  listening addr=127.0.0.1:9300 workers=2\n");
    CHECK_STR(fmt(LOG_FORMAT_TEXT, LOG_LEVEL_ERROR, "boom", NULL),
              "2026-11-29T04:33:44.123Z error boom\n");
    CHECK_STR(fmt(LOG_FORMAT_TEXT, LOG_LEVEL_DEBUG, "e", "%s", ""),
              "2026-11-29T04:33:44.123Z debug e\n");
    CHECK_STR(fmt(LOG_FORMAT_TEXT, LOG_LEVEL_WARN, "e", "v=%s", "a\nb\rc\x7f\"d\xc3\xa9"),
              "2026-11-29T04:33:44.123Z warn  e v=a\\x0ab\\x0dc\\x7f\"d\xc3\xa9\n");
}

static void test_json(void)
{
    CHECK_STR(fmt(LOG_FORMAT_JSON, LOG_LEVEL_INFO, "listening", "addr=%s", "127.0.0.1:9300"),
              "{\"ts\":\"2026-11-29T04:33:44.123Z\",\"level\":\"info\",\"event\":\"listening\","
              "\"msg\":\"addr=127.0.0.1:9300\"}\n");
    CHECK_STR(fmt(LOG_FORMAT_JSON, LOG_LEVEL_WARN, "e", NULL),
              "{\"ts\":\"2026-11-29T04:33:44.123Z\",\"level\":\"warn\",\"event\":\"e\"}\n");
    /* Quotes, backslashes, control bytes, valid UTF-8 kept, invalid UTF-8 replaced. */
    CHECK_STR(
        fmt(LOG_FORMAT_JSON, LOG_LEVEL_ERROR, "e\"v", "%s",
            "q\" b\\ n\n r\r t\t z\x01 del\x7f caf\xc3\xa9 bad\xff\xc3 cut\xe2\x82 "
            "ok\xf0\x9f\x98\x80 "
            "sur\xed\xa0\x80 over\xc0\xaf"),
        "{\"ts\":\"2026-11-29T04:33:44.123Z\",\"level\":\"error\",\"event\":\"e\\\"v\","
        "\"msg\":\"q\\\" b\\\\ n\\n r\\r t\\t z\\u0001 del\x7f caf\xc3\xa9 bad\\ufffd\\ufffd "
        "cut\\ufffd\\ufffd ok\xf0\x9f\x98\x80 sur\\ufffd\\ufffd\\ufffd over\\ufffd\\ufffd\"}\n");
}

static void test_cut(void)
{
    static char big[3 * LOG_LINE_MAX];
    size_t n;

    /* A message longer than a line: cut, marked, still one well-formed line. */
    memset(big, 'a', sizeof(big) - 1);
    for (int f = 0; f < 2; f++) {
        fmt((enum log_format)f, LOG_LEVEL_INFO, "e", "%s", big);
        n = strlen(line);
        CHECK(n < LOG_LINE_MAX, "line of %zu bytes", n);
        CHECK(n > LOG_LINE_MAX - 16, "line of only %zu bytes", n);
        CHECK(strchr(line, '\n') == line + n - 1, "expected one newline, at the end");
        CHECK(strstr(line, f ? "...\"}\n" : "...\n") != NULL, "expected a cut marker: %s",
              line + n - 12);
    }
    /* Escapes are never split by the cut: all '\n' (2-byte escape in JSON, 4 in text). */
    memset(big, '\n', LOG_LINE_MAX);
    big[LOG_LINE_MAX] = '\0';
    fmt(LOG_FORMAT_JSON, LOG_LEVEL_INFO, "e", "%s", big);
    n = strlen(line);
    CHECK(strcmp(line + n - 8, "\\n...\"}\n") == 0, "expected whole escapes: %s", line + n - 8);
    fmt(LOG_FORMAT_TEXT, LOG_LEVEL_INFO, "e", "%s", big);
    n = strlen(line);
    CHECK(strcmp(line + n - 8, "\\x0a...\n") == 0, "expected whole escapes: %s", line + n - 8);
}

/* Capture what log_msg writes to fd 2: a temporary file opened for appending (a pipe would fill
 * up and block the writers while nobody reads). */
static int capture_fd, saved_stderr;

static void capture_start(void)
{
    char path[] = "/tmp/test_log.XXXXXX";

    capture_fd = mkstemp(path);
    if (capture_fd < 0) {
        perror("mkstemp");
        exit(1);
    }
    unlink(path);
    fcntl(capture_fd, F_SETFL, O_APPEND);
    fflush(stderr);
    saved_stderr = dup(2);
    dup2(capture_fd, 2);
}

static size_t capture_end(char *buf, size_t cap)
{
    size_t n = 0;
    ssize_t r;

    dup2(saved_stderr, 2);
    close(saved_stderr);
    lseek(capture_fd, 0, SEEK_SET);
    while (n < cap - 1 && (r = read(capture_fd, buf + n, cap - 1 - n)) > 0)
        n += (size_t)r;
    buf[n] = '\0';
    close(capture_fd);
    return n;
}

static int evaluated;

static int side_effect(void)
{
    return ++evaluated;
}

static void test_levels(void)
{
    static char out[8192];

    capture_start();
    log_init(LOG_LEVEL_WARN, LOG_FORMAT_TEXT);
    log_info("hidden", "n=%d", side_effect());
    log_debug("hidden", "n=%d", side_effect());
    log_warn("shown", "n=%d", 1);
    log_error("shown", "n=%d", 2);
    log_msg(LOG_LEVEL_INFO, "hidden", "direct");
    log_init(LOG_LEVEL_DEBUG, LOG_FORMAT_JSON);
    log_debug("json", "k=%s", "v");
    log_init(LOG_LEVEL_INFO, LOG_FORMAT_TEXT);
    capture_end(out, sizeof(out));
    CHECK_INT(evaluated, 0);
    CHECK(!strstr(out, "hidden"), "below-level lines written: %s", out);
    CHECK(strstr(out, " warn  shown n=1\n") && strstr(out, " error shown n=2\n"),
          "missing lines: %s", out);
    CHECK(strstr(out, "\"level\":\"debug\",\"event\":\"json\",\"msg\":\"k=v\"}\n") != NULL,
          "missing json line: %s", out);
}

/* log_limit: 3 a second pass, the rest are counted, and the first let through in a later second
 * comes after one line saying how many were not written. */
static void test_limit(void)
{
    static struct log_limit lim = LOG_LIMIT_INIT(3);
    static char out[8192];
    struct timespec ts;
    int passed = 0;

    /* Start at the beginning of a second, so that the 10 calls below share it. */
    do
        clock_gettime(CLOCK_MONOTONIC, &ts);
    while (ts.tv_nsec > 100000000);
    capture_start();
    for (int i = 0; i < 10; i++)
        passed += log_limit_pass(&lim, "flood");
    CHECK_INT(passed, 3);
    while (ts.tv_sec == lim.sec)
        clock_gettime(CLOCK_MONOTONIC, &ts);
    CHECK_INT(log_limit_pass(&lim, "flood"), 1);
    CHECK_INT(log_limit_pass(&lim, "flood"), 1);
    capture_end(out, sizeof(out));
    CHECK(strstr(out, " warn  log_suppressed 7 flood lines not written (at most 3 a second)\n") !=
              NULL,
          "the suppressed line: %s", out);
    CHECK(strstr(out, "log_suppressed") &&
              !strstr(strstr(out, "log_suppressed") + 1, "log_suppressed"),
          "one suppressed line: %s", out);
}

#define THREADS 4
#define PER_THREAD 500

static void *writer(void *arg)
{
    char pad[1500];

    memset(pad, 'a' + (int)(intptr_t)arg, sizeof(pad) - 1);
    pad[sizeof(pad) - 1] = '\0';
    for (int i = 0; i < PER_THREAD; i++)
        log_msg(LOG_LEVEL_INFO, "t", "id=%d i=%d pad=%s", (int)(intptr_t)arg, i, pad);
    return NULL;
}

static void test_threads(void)
{
    static char out[THREADS * PER_THREAD * 1600];
    pthread_t t[THREADS];
    size_t n, lines = 0;
    int bad = 0;

    capture_start();
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, writer, (void *)(intptr_t)i);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    n = capture_end(out, sizeof(out));
    /* Every line whole: its pad is one letter, matching its id, and 1499 long. */
    for (char *p = out, *nl; p < out + n; p = nl + 1) {
        int id = -1;
        char *pad, *idp;

        nl = memchr(p, '\n', (size_t)(out + n - p));
        if (!nl)
            break;
        lines++;
        pad = strstr(p, "pad=");
        idp = strstr(p, " t id=");
        if (!idp || sscanf(idp + 3, "id=%d", &id) != 1 || !pad || nl - (pad + 4) != 1499 ||
            pad[4] != 'a' + id || pad[4 + 1498] != 'a' + id)
            bad++;
    }
    CHECK_INT(lines, THREADS * PER_THREAD);
    CHECK_INT(bad, 0);
}

static void test_digest(void)
{
    char a[LOG_DIGEST_HEX_SIZE], b[LOG_DIGEST_HEX_SIZE], c[LOG_DIGEST_HEX_SIZE];

    log_digest_hex("session-cookie-value", 20, a);
    log_digest_hex("session-cookie-value", 20, b);
    log_digest_hex("session-cookie-valuf", 20, c);
    CHECK_INT(strlen(a), 16);
    CHECK(strspn(a, "0123456789abcdef") == 16, "not hex: %s", a);
    CHECK(strcmp(a, b) == 0, "same input, different ids: %s %s", a, b);
    CHECK(strcmp(a, c) != 0, "different inputs, same id: %s", a);
    CHECK(log_digest_hex(NULL, 0, c) == c, "expected out back");
    CHECK_INT(strlen(c), 16);
}

int main(void)
{
    test_text();
    test_json();
    test_cut();
    test_levels();
    test_threads();
    test_digest();
    test_limit();
    return check_done("test_log");
}
