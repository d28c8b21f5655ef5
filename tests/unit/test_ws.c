/*
 * test_ws.c — the WebSocket frame codec (daemon/ws.c) and the JSON reader (daemon/json.c) it
 * feeds, and the feed's and webhook's decoders built on them: masking, fragmentation, control
 * frames, the length encodings at 125/126/65535/65536, bad input refused with a clear error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "feed.h"
#include "hooks.h"
#include "json.h"
#include "ws.h"

static uint8_t buf[WS_MAX_MESSAGE + 64];

static void test_accept(void)
{
    char out[WS_ACCEPT_LEN + 1], key[WS_KEY_LEN + 1], key2[WS_KEY_LEN + 1];

    /* RFC 6455, 1.3 */
    ws_accept_for("dGhlIHNhbXBsZSBub25jZQ==", 24, out);
    CHECK_MEM(out, strlen(out), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", 28);
    CHECK_INT(ws_key_new(key), 0);
    CHECK_INT(ws_key_new(key2), 0);
    CHECK_INT(strlen(key), 24);
    CHECK(strcmp(key, key2) != 0, "two keys differ: %s %s", key, key2);
}

/* Encode len bytes masked, parse them back (allowing the mask), compare. */
static void roundtrip(size_t len)
{
    static uint8_t payload[70000];
    const uint8_t mask[4] = {0x12, 0x34, 0x56, 0x78};
    struct ws_frame f;
    size_t n;
    long used;

    for (size_t i = 0; i < len; i++)
        payload[i] = (uint8_t)(i * 7 + 3);
    n = ws_frame_encode(buf, WS_BINARY, 1, payload, len, mask);
    CHECK_INT(n, len + (len < 126 ? 2 : len < 65536 ? 4 : 10) + 4);
    CHECK(buf[1] & 0x80, "masked bit set for len %zu", len);
    if (len)
        CHECK(memcmp(buf + n - len, payload, len) != 0 || len < 4, "payload masked for %zu", len);
    CHECK_INT(ws_frame_parse(buf, n, 0, &f), -EPROTO); /* a client's frame is masked */
    for (size_t cut = 0; cut < n; cut += n / 7 + 1)
        CHECK_INT(ws_frame_parse(buf, cut, 1, &f), 0);
    used = ws_frame_parse(buf, n, 1, &f);
    CHECK_INT(used, n);
    CHECK_INT(f.len, len);
    CHECK_INT(f.op, WS_BINARY);
    CHECK_INT(f.fin, 1);
    CHECK(len == 0 || memcmp(f.payload, payload, len) == 0, "unmasked payload of %zu", len);
    /* the same unmasked, as a server sends it */
    n = ws_frame_encode(buf, WS_TEXT, 1, payload, len, NULL);
    CHECK_INT(n, len + (len < 126 ? 2 : len < 65536 ? 4 : 10));
    used = ws_frame_parse(buf, n, 0, &f);
    CHECK_INT(used, n);
    CHECK(len == 0 || memcmp(f.payload, payload, len) == 0, "unmasked frame of %zu", len);
}

static void test_lengths(void)
{
    size_t lens[] = {0, 1, 125, 126, 127, 65535, 65536, 69999};

    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++)
        roundtrip(lens[i]);
    /* header bytes for 125 / 126 / 65536 */
    CHECK_INT(ws_frame_encode(buf, WS_TEXT, 1, buf + 1000, 125, NULL), 127);
    CHECK_INT(buf[1], 125);
    CHECK_INT(ws_frame_encode(buf, WS_TEXT, 1, buf + 1000, 126, NULL), 130);
    CHECK_INT(buf[1], 126);
    CHECK_INT(buf[2] << 8 | buf[3], 126);
    CHECK_INT(ws_frame_encode(buf, WS_TEXT, 1, buf + 100000, 65536, NULL), 65546);
    CHECK_INT(buf[1], 127);
    CHECK_INT(buf[7], 1);
    CHECK_INT(buf[8], 0);
}

static void test_bad(void)
{
    struct ws_frame f;
    uint8_t b[16];

    memcpy(b, "\xc1\x00", 2); /* RSV1 */
    CHECK_INT(ws_frame_parse(b, 2, 0, &f), -EPROTO);
    memcpy(b, "\x83\x00", 2); /* reserved opcode 3 */
    CHECK_INT(ws_frame_parse(b, 2, 0, &f), -EPROTO);
    memcpy(b, "\x89\x7e\x00\x7e", 4); /* a ping of 126 bytes */
    CHECK_INT(ws_frame_parse(b, 4, 0, &f), -EPROTO);
    memcpy(b, "\x09\x00", 2); /* a fragmented ping */
    CHECK_INT(ws_frame_parse(b, 2, 0, &f), -EPROTO);
    memcpy(b, "\x81\x7e\x00\x05", 4); /* 5 in the 16-bit form */
    CHECK_INT(ws_frame_parse(b, 4, 0, &f), -EPROTO);
    memcpy(b, "\x81\x7f\x00\x00\x00\x00\x00\x00\x01\x00", 10); /* 256 in the 64-bit form */
    CHECK_INT(ws_frame_parse(b, 10, 0, &f), -EPROTO);
    memcpy(b, "\x81\x7f\x80\x00\x00\x00\x00\x00\x00\x00", 10); /* top bit set */
    CHECK_INT(ws_frame_parse(b, 10, 0, &f), -EPROTO);
    memcpy(b, "\x81\x7f\x00\x00\x00\x00\x01\x00\x00\x00", 10); /* 16 MiB: too large */
    CHECK_INT(ws_frame_parse(b, 10, 0, &f), -EMSGSIZE);
    CHECK_INT(ws_frame_parse(b, 1, 0, &f), 0);
    CHECK_INT(ws_frame_parse(b, 0, 0, &f), 0);
}

static void test_fragments_and_control(void)
{
    static uint8_t mbuf[WS_MAX_MESSAGE];
    struct ws_msg m = {.buf = mbuf};
    struct ws_frame f;
    size_t n = 0, off = 0;
    long used;
    int got = 0;

    n += ws_frame_encode(buf + n, WS_TEXT, 0, "{\"instr", 7, NULL);
    n += ws_frame_encode(buf + n, WS_PING, 1, "hi", 2, NULL); /* between fragments */
    n += ws_frame_encode(buf + n, WS_CONT, 0, "uction\":", 8, NULL);
    n += ws_frame_encode(buf + n, WS_CONT, 1, "4}", 2, NULL);
    while ((used = ws_frame_parse(buf + off, n - off, 0, &f)) > 0) {
        off += (size_t)used;
        if (f.op == WS_PING) {
            CHECK_MEM(f.payload, f.len, "hi", 2);
            continue;
        }
        int rc = ws_msg_add(&m, &f);
        CHECK(rc >= 0, "ws_msg_add: %d", rc);
        if (rc == 1) {
            got++;
            CHECK_MEM(m.buf, m.len, "{\"instruction\":4}", 17);
            CHECK_INT(m.op, WS_TEXT);
        }
    }
    CHECK_INT(off, n);
    CHECK_INT(got, 1);
    /* a continuation with nothing begun, a new message inside another */
    f = (struct ws_frame){.fin = 1, .op = WS_CONT, .payload = buf, .len = 1};
    CHECK_INT(ws_msg_add(&m, &f), -EPROTO);
    f = (struct ws_frame){.fin = 0, .op = WS_TEXT, .payload = buf, .len = 1};
    CHECK_INT(ws_msg_add(&m, &f), 0);
    f.fin = 1;
    CHECK_INT(ws_msg_add(&m, &f), -EPROTO);
    /* growing past the limit */
    m.active = 1;
    m.len = WS_MAX_MESSAGE - 1;
    f = (struct ws_frame){.fin = 1, .op = WS_CONT, .payload = buf, .len = 2};
    CHECK_INT(ws_msg_add(&m, &f), -EMSGSIZE);
}

static void test_json(void)
{
    static const char doc[] =
        " {\"a\": {\"b\": [ {\"pk\": \"u-1\"}, {\"pk\": \"u-2\"} ]}, \"n\": -42, \"s\": "
        "\"x\\u00e9\\ud83d\\ude00\\n\", \"a2\": 1.5, \"dup\": \"1\", \"dup\": \"2\"} ";
    const char *p1[] = {"a", "b", "#0", "pk"}, *p2[] = {"n"}, *p3[] = {"s"}, *p4[] = {"a2"},
               *p5[] = {"dup"}, *p6[] = {"zz"};
    char out[32];
    size_t n;
    int64_t v;

    CHECK_INT(json_get_string(doc, strlen(doc), p1, 4, out, sizeof(out), &n), 0);
    CHECK_MEM(out, n, "u-1", 3);
    CHECK_INT(json_get_int(doc, strlen(doc), p2, 1, &v), 0);
    CHECK_INT(v, -42);
    CHECK_INT(json_get_string(doc, strlen(doc), p3, 1, out, sizeof(out), &n), 0);
    CHECK_MEM(out, n, "x\xc3\xa9\xf0\x9f\x98\x80\n", 8);
    CHECK_INT(json_get_int(doc, strlen(doc), p4, 1, &v), -EPROTO);
    CHECK_INT(json_get_string(doc, strlen(doc), p5, 1, out, sizeof(out), &n), 0);
    CHECK_MEM(out, n, "2", 1);
    CHECK_INT(json_get_string(doc, strlen(doc), p6, 1, out, sizeof(out), &n), -ENOENT);
    CHECK_INT(json_get_string(doc, strlen(doc), p2, 1, out, sizeof(out), &n), -EPROTO);
    CHECK_INT(json_get_string(doc, strlen(doc), p3, 1, out, 4, &n), -EMSGSIZE);
    /* The int64 limits, and past 2^64 (where v * 10 once wrapped: 18446744073709551620 read 4). */
    static const struct {
        const char *doc;
        int rc;
        int64_t v;
    } ints[] = {
        {"{\"n\":9223372036854775807}", 0, INT64_MAX},
        {"{\"n\":-9223372036854775807}", 0, -INT64_MAX},
        {"{\"n\":9223372036854775808}", -EMSGSIZE, 0},
        {"{\"n\":-9223372036854775808}", 0, INT64_MIN},
        {"{\"n\":-9223372036854775809}", -EMSGSIZE, 0},
        {"{\"n\":18446744073709551615}", -EMSGSIZE, 0},
        {"{\"n\":18446744073709551620}", -EMSGSIZE, 0},
        {"{\"n\":-18446744073709551621}", -EMSGSIZE, 0},
        {"{\"n\":46116860184273879040}", -EMSGSIZE, 0},
        {"{\"n\":99999999999999999999999}", -EMSGSIZE, 0},
    };
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        int rc = json_get_int(ints[i].doc, strlen(ints[i].doc), p2, 1, &v);

        CHECK(rc == ints[i].rc && (rc != 0 || v == ints[i].v),
              "%s: expected rc %d value %lld, got rc %d value %lld", ints[i].doc, ints[i].rc,
              (long long)ints[i].v, rc, rc == 0 ? (long long)v : 0LL);
    }
    const char *bad[] = {"",      "{",          "{\"a\":}",   "{\"a\":1,}",
                         "[1 2]", "{\"a\":01}", "\"\\x\"",    "{\"a\":\"\x01\"}",
                         "{} {}", "tru",        "{\"a\":1e}", "-"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(json_check_object(bad[i], strlen(bad[i])) == -EINVAL, "refused: %s", bad[i]);
    char deep[80];
    memset(deep, '[', sizeof(deep));
    CHECK_INT(json_get_int(deep, sizeof(deep), p2, 1, &v), -EINVAL);
    CHECK_INT(json_check_object("[]", 2), -EINVAL);
    CHECK_INT(json_check_object("{}", 2), 0);
}

static void test_feed_decode(void)
{
    struct feed_event ev;
    static const char m1[] = "{\"instruction\":4,\"args\":{\"session_id\":\"abc\"}}",
                      m2[] = "{\"instruction\":0,\"args\":{}}",
                      m3[] = "{\"instruction\":3,\"args\":{\"sub_type\":\"logout\","
                             "\"session_id\":\"old\"}}",
                      m4[] = "{\"instruction\":3,\"args\":{\"session_id\":\"x\"}}",
                      m5[] = "{\"instruction\":\"4\"}", m6[] = "{\"instruction\":4}";

    CHECK_INT(feed__decode(m1, strlen(m1), &ev), 0);
    CHECK_INT(ev.session_end, 1);
    CHECK_MEM(ev.session_id, strlen(ev.session_id), "abc", 3);
    CHECK_INT(feed__decode(m2, strlen(m2), &ev), 0);
    CHECK_INT(ev.session_end, 0);
    CHECK_INT(feed__decode(m3, strlen(m3), &ev), 0);
    CHECK_INT(ev.session_end, 1);
    CHECK_MEM(ev.session_id, strlen(ev.session_id), "old", 3);
    CHECK_INT(feed__decode(m4, strlen(m4), &ev), 0);
    CHECK_INT(ev.session_end, 0);
    CHECK_INT(feed__decode(m5, strlen(m5), &ev), -EINVAL);
    CHECK_INT(feed__decode(m6, strlen(m6), &ev), 0);
    CHECK_INT(ev.session_end, 0);
    CHECK_INT(feed__decode("{", 1, &ev), -EINVAL);

    /* {"alg":"none"} . {"sub":"u","sid":"s-123"} . */
    static const char hdrs[] =
        "X-authentik-username: a\r\n"
        "x-AUTHENTIK-jwt: eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1Iiwic2lkIjoicy0xMjMifQ.\r\n";
    char sid[FEED_SID_MAX];
    CHECK_INT(feed__jwt_sid(hdrs, strlen(hdrs), sid), 5);
    CHECK_MEM(sid, 5, "s-123", 5);
    CHECK_INT(feed__jwt_sid(hdrs, 26, sid), -ENOENT);
    static const char nosid[] = "X-authentik-jwt: eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1In0.\r\n";
    CHECK_INT(feed__jwt_sid(nosid, strlen(nosid), sid), -ENOENT);
    static const char junk[] = "X-authentik-jwt: not-a-jwt\r\n";
    CHECK_INT(feed__jwt_sid(junk, strlen(junk), sid), -EINVAL);
    CHECK_INT(feed__sid_matches("s-123", 5, "s-123"), 1);
    /* sha256("s-123") */
    CHECK_INT(feed__sid_matches("s-123", 5,
                                "bcf61dbb52ee702d268e52feda411945f1ffb24ce59a3176c7b97039749148d1"),
              1);
    CHECK_INT(feed__sid_matches("s-124", 5,
                                "bcf61dbb52ee702d268e52feda411945f1ffb24ce59a3176c7b97039749148d1"),
              0);
    CHECK_INT(feed__sid_matches("s-123", 5, "s-12"), 0);
    CHECK_INT(feed__sid_matches("", 0, ""), 0);
}

static void test_hooks_decode(void)
{
    struct hooks_event ev;
    const char *why;
    static const char logout[] =
        "{\"body\":\"logout: {'http_request': {}}\",\"severity\":\"notice\",\"user_email\":"
        "\"r@x\",\"user_username\":\"root\",\"event_user_email\":\"a@x\","
        "\"event_user_username\":\"alice\"}",
                      failed[] =
                          "{\"body\":\"login_failed: {}\",\"event_user_username\":\"alice\"}",
                      deleted[] =
                          "{\"body\":\"model_deleted: {}\",\"event_user_username\":\"root\"}",
                      mapped[] = "{\"action\":\"model_updated\",\"username\":\"bob\"}",
                      pw[] = "{\"body\":\"password_set: {}\",\"event_user_username\":\"carl\"}";

    CHECK_INT(hooks_decode(logout, strlen(logout), &ev, &why), 0);
    CHECK_INT(ev.purge, 1);
    CHECK_MEM(ev.action, strlen(ev.action), "logout", 6);
    CHECK_MEM(ev.user, strlen(ev.user), "alice", 5);
    CHECK_INT(hooks_decode(failed, strlen(failed), &ev, &why), 0);
    CHECK_INT(ev.purge, 0);
    CHECK_INT(hooks_decode(deleted, strlen(deleted), &ev, &why), 0);
    CHECK_INT(ev.purge, 0); /* the event's user is the admin who deleted */
    CHECK_INT(hooks_decode(mapped, strlen(mapped), &ev, &why), 0);
    CHECK_INT(ev.purge, 1);
    CHECK_MEM(ev.user, strlen(ev.user), "bob", 3);
    CHECK_INT(hooks_decode(pw, strlen(pw), &ev, &why), 0);
    CHECK_INT(ev.purge, 1);
    CHECK_MEM(ev.user, strlen(ev.user), "carl", 4);
    /* a long summary (authentik's default body carries the event's whole context) */
    char longb[600];
    snprintf(longb, sizeof(longb),
             "{\"body\":\"logout: {'http_request': {'path': '/%0400d'}}\","
             "\"event_user_username\":\"dora\"}",
             0);
    CHECK_INT(hooks_decode(longb, strlen(longb), &ev, &why), 0);
    CHECK_INT(ev.purge, 1);
    CHECK_MEM(ev.action, strlen(ev.action), "logout", 6);
    CHECK_MEM(ev.user, strlen(ev.user), "dora", 4);
    CHECK_INT(hooks_decode("[]", 2, &ev, &why), -EINVAL);
    CHECK(why && strchr(why, '\n') == NULL, "one line: %s", why ? why : "(null)");
}

int main(void)
{
    test_accept();
    test_lengths();
    test_bad();
    test_fragments_and_control();
    test_json();
    test_feed_decode();
    test_hooks_decode();
    return check_done("test_ws");
}
