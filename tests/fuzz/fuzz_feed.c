/*
 * fuzz_feed.c — libFuzzer target for what authentik (or whoever poses as it, or sends the admin
 * listener a webhook) controls in the event feed: WebSocket frames (daemon/ws.c), the feed's
 * messages and a JWT's sid (daemon/feed.c), the webhook's body (daemon/hooks.c), all over the JSON
 * reader (daemon/json.c).
 *
 * The first byte picks what the rest (an exact-size heap copy, so ASan sees any over-read) goes to:
 *   0  ws_frame_parse frame after frame as the feed thread does (server frames, then with masks
 *      allowed), reassembled by ws_msg_add: each frame inside the input, a control frame at most
 *      125 bytes and final, a message at most WS_MAX_MESSAGE; every proper prefix of a whole frame
 *      is partial; a parsed frame encoded again (unmasked) parses to the same frame;
 *   1  feed__decode: 0 or -EINVAL; a session end names a non-empty NUL-terminated id;
 *   2  feed__jwt_sid on the bytes as stored header lines: a length within FEED_SID_MAX, NUL-ended;
 *   3  hooks_decode: 0 (action and user NUL-terminated, a purge names a user) or -EINVAL with why;
 *   4  json_get_string / json_get_int at a few paths: only the documented results, strings
 *      NUL-terminated within cap.
 * Seeds: tests/fuzz/corpus/feed/.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "feed.h"
#include "fuzz_check.h"
#include "hooks.h"
#include "json.h"
#include "ws.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_frames(uint8_t *in, size_t n, int allow_masked)
{
    static uint8_t mbuf[WS_MAX_MESSAGE];
    static uint8_t enc[WS_MAX_MESSAGE + WS_HEADER_MAX];
    struct ws_msg m = {.buf = mbuf};
    size_t off = 0;

    for (;;) {
        struct ws_frame f, g;
        long used = ws_frame_parse(in + off, n - off, allow_masked, &f);

        must(used == 0 || used > 0 || used == -EPROTO || used == -EMSGSIZE);
        if (used <= 0)
            break;
        must((size_t)used <= n - off);
        must(inside((char *)in, n, (const char *)f.payload, f.len));
        must(f.len <= WS_MAX_MESSAGE);
        if (f.op >= WS_CLOSE)
            must(f.fin && f.len <= 125);
        for (size_t cut = 0; cut < (size_t)used && cut < 16; cut++)
            must(ws_frame_parse(in + off, cut, allow_masked, &g) == 0);
        must(ws_frame_parse(in + off, (size_t)used - 1, allow_masked, &g) == 0);
        size_t e = ws_frame_encode(enc, f.op, f.fin, f.payload, f.len, NULL);
        must(ws_frame_parse(enc, e, 0, &g) == (long)e);
        must(g.op == f.op && g.fin == f.fin && g.len == f.len &&
             memcmp(g.payload, f.payload, f.len) == 0);
        if (f.op < WS_CLOSE) {
            int rc = ws_msg_add(&m, &f);
            must(rc == 0 || rc == 1 || rc == -EPROTO || rc == -EMSGSIZE);
            must(m.len <= WS_MAX_MESSAGE);
            if (rc < 0)
                break;
        }
        off += (size_t)used;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *in;
    size_t n;

    if (size < 1)
        return 0;
    n = size - 1;
    in = malloc(n ? n : 1);
    if (!in)
        return 0;
    memcpy(in, data + 1, n);
    switch (data[0] % 5) {
    case 0:
        fuzz_frames(in, n, 0);
        memcpy(in, data + 1, n);
        fuzz_frames(in, n, 1);
        break;
    case 1: {
        struct feed_event ev;
        int rc = feed__decode((const char *)in, n, &ev);

        must(rc == 0 || rc == -EINVAL);
        if (rc == 0 && ev.session_end)
            must(ev.session_id[0] && strlen(ev.session_id) < sizeof(ev.session_id));
        break;
    }
    case 2: {
        char sid[FEED_SID_MAX];
        int rc = feed__jwt_sid((const char *)in, n, sid);

        must(rc == -ENOENT || rc == -EINVAL || (rc >= 0 && rc < FEED_SID_MAX));
        if (rc >= 0)
            must(sid[rc] == 0);
        break;
    }
    case 3: {
        struct hooks_event ev;
        const char *why = NULL;
        int rc = hooks_decode((const char *)in, n, &ev, &why);

        must(rc == 0 || rc == -EINVAL);
        if (rc < 0)
            must(why && *why);
        else {
            must(memchr(ev.action, 0, sizeof(ev.action)) && memchr(ev.user, 0, sizeof(ev.user)));
            must(!ev.purge || ev.user[0]);
        }
        break;
    }
    case 4: {
        static const char *const paths[][3] = {
            {"a", NULL, NULL}, {"args", "session_id", NULL}, {"results", "#0", "pk"}};
        static const unsigned np[] = {1, 2, 3};
        char out[16];
        size_t len;
        int64_t v;

        for (int i = 0; i < 3; i++) {
            int rc = json_get_string((const char *)in, n, paths[i], np[i], out, sizeof(out), &len);
            must(rc == 0 || rc == -EINVAL || rc == -ENOENT || rc == -EPROTO || rc == -EMSGSIZE);
            if (rc == 0)
                must(len < sizeof(out) && out[len] == 0);
            rc = json_get_int((const char *)in, n, paths[i], np[i], &v);
            must(rc == 0 || rc == -EINVAL || rc == -ENOENT || rc == -EPROTO || rc == -EMSGSIZE);
        }
        break;
    }
    }
    free(in);
    return 0;
}
