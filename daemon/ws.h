/*
 * ws.h — the client side of the WebSocket protocol (RFC 6455) that the authentik event feed needs:
 * the opening handshake's key and accept value, and frames (encode masked, parse, reassemble).
 *
 * No I/O, no allocation but the message buffer the caller gives; safe for any bytes (fuzzed by
 * tests/fuzz/fuzz_feed.c). Return convention: >= 0 success, -errno on error.
 */
#ifndef AUTHCACHE_WS_H
#define AUTHCACHE_WS_H

#include <stddef.h>
#include <stdint.h>

#define WS_MAX_MESSAGE (1u << 20) /* a longer message (or frame) is refused: -EMSGSIZE */
#define WS_KEY_LEN 24             /* base64 of 16 random bytes */
#define WS_ACCEPT_LEN 28          /* base64 of a SHA-1 */
#define WS_HEADER_MAX 14          /* the longest frame header: 2 + 8 length + 4 mask */

enum ws_op { WS_CONT = 0, WS_TEXT = 1, WS_BINARY = 2, WS_CLOSE = 8, WS_PING = 9, WS_PONG = 10 };

struct ws_frame {
    int fin;
    int op;                 /* enum ws_op */
    const uint8_t *payload; /* into the parsed buffer, unmasked */
    size_t len;
};

/* The Sec-WebSocket-Accept value for key (RFC 6455 4.2.2): base64(SHA-1(key GUID)), NUL-ended. */
void ws_accept_for(const char *key, size_t key_len, char out[WS_ACCEPT_LEN + 1]);

/* A fresh Sec-WebSocket-Key from 16 random bytes, NUL-ended. 0, or -errno from getrandom. */
int ws_key_new(char out[WS_KEY_LEN + 1]);

/*
 * Parse one frame at buf[0, len). A server's frames are never masked (RFC 6455 5.1): a masked one
 * is -EPROTO unless allow_masked (the tests parse client frames); a masked payload is unmasked in
 * place. Returns the bytes the frame takes (> 0) with *f set; 0 if more bytes are needed;
 * -EPROTO for a reserved bit or opcode, a fragmented or longer than 125 bytes control frame, a
 * 64-bit length with its top bit set or a length not in its shortest form; -EMSGSIZE for a payload
 * over WS_MAX_MESSAGE.
 */
long ws_frame_parse(uint8_t *buf, size_t len, int allow_masked, struct ws_frame *f);

/*
 * Write a frame with payload[0, len) into out (room for len + WS_HEADER_MAX), masked with mask
 * (a client's frames must be; NULL: unmasked, as a server sends). Returns its length.
 */
size_t ws_frame_encode(uint8_t *out, int op, int fin, const void *payload, size_t len,
                       const uint8_t mask[4]);

/* Reassembly of a fragmented message: data frames in, whole messages out. Control frames may
 * arrive between fragments and are not given to it. buf holds WS_MAX_MESSAGE bytes. */
struct ws_msg {
    uint8_t *buf;
    size_t len;
    int op;     /* of the first frame: WS_TEXT or WS_BINARY */
    int active; /* fragments taken, the final one not yet */
};

/* Add a data frame. 1: a message is complete in m->buf[0, m->len) (taken: the next call starts a
 * new one); 0: more fragments to come; -EPROTO a continuation with no message begun, or a new
 * message before the last ended; -EMSGSIZE the message outgrows WS_MAX_MESSAGE. */
int ws_msg_add(struct ws_msg *m, const struct ws_frame *f);

#endif
