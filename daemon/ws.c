/*
 * ws.c — WebSocket frames and handshake values (RFC 6455), client side (ws.h).
 *
 * The parser takes a whole frame or nothing: it returns 0 until the header and the payload are all
 * in the buffer, so the caller only appends what arrives and calls again. Every length is checked
 * against what is in the buffer and against WS_MAX_MESSAGE before any byte of the payload is used.
 */
#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "ws.h"

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

void ws_accept_for(const char *key, size_t key_len, char out[WS_ACCEPT_LEN + 1])
{
    unsigned char in[64 + sizeof(ws_guid)], md[SHA_DIGEST_LENGTH];

    if (key_len > 64)
        key_len = 64; /* a real key is 24 bytes; a longer one cannot match anyway */
    memcpy(in, key, key_len);
    memcpy(in + key_len, ws_guid, sizeof(ws_guid) - 1);
    SHA1(in, key_len + sizeof(ws_guid) - 1, md);
    EVP_EncodeBlock((unsigned char *)out, md, SHA_DIGEST_LENGTH);
}

int ws_key_new(char out[WS_KEY_LEN + 1])
{
    unsigned char r[16];

    if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
        return -EIO;
    EVP_EncodeBlock((unsigned char *)out, r, sizeof(r));
    return 0;
}

long ws_frame_parse(uint8_t *buf, size_t len, int allow_masked, struct ws_frame *f)
{
    size_t hl = 2;
    uint64_t plen;
    int masked, op;

    if (len < 2)
        return 0;
    if (buf[0] & 0x70)
        return -EPROTO; /* RSV1-3: no extension was negotiated */
    op = buf[0] & 0x0f;
    if (op != WS_CONT && op != WS_TEXT && op != WS_BINARY && op != WS_CLOSE && op != WS_PING &&
        op != WS_PONG)
        return -EPROTO;
    masked = buf[1] >> 7;
    if (masked && !allow_masked)
        return -EPROTO;
    plen = buf[1] & 0x7f;
    if (plen == 126) {
        if (len < 4)
            return 0;
        plen = (uint64_t)buf[2] << 8 | buf[3];
        if (plen < 126)
            return -EPROTO;
        hl = 4;
    } else if (plen == 127) {
        if (len < 10)
            return 0;
        if (buf[2] & 0x80)
            return -EPROTO;
        plen = 0;
        for (int i = 2; i < 10; i++)
            plen = plen << 8 | buf[i];
        if (plen < 65536)
            return -EPROTO;
        hl = 10;
    }
    if (op >= WS_CLOSE && (!(buf[0] & 0x80) || plen > 125))
        return -EPROTO;
    if (plen > WS_MAX_MESSAGE)
        return -EMSGSIZE;
    if (masked)
        hl += 4;
    if (len < hl || len - hl < plen)
        return 0;
    if (masked) {
        const uint8_t *k = buf + hl - 4;
        for (size_t i = 0; i < plen; i++)
            buf[hl + i] ^= k[i & 3];
    }
    f->fin = buf[0] >> 7;
    f->op = op;
    f->payload = buf + hl;
    f->len = (size_t)plen;
    return (long)(hl + plen);
}

size_t ws_frame_encode(uint8_t *out, int op, int fin, const void *payload, size_t len,
                       const uint8_t mask[4])
{
    size_t hl = 2;
    const uint8_t *p = payload;

    out[0] = (uint8_t)((fin ? 0x80 : 0) | (op & 0x0f));
    if (len < 126) {
        out[1] = (uint8_t)len;
    } else if (len < 65536) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        hl = 4;
    } else {
        out[1] = 127;
        for (int i = 0; i < 8; i++)
            out[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
        hl = 10;
    }
    if (mask) {
        out[1] |= 0x80;
        memcpy(out + hl, mask, 4);
        hl += 4;
        for (size_t i = 0; i < len; i++)
            out[hl + i] = p[i] ^ mask[i & 3];
    } else if (len) {
        memcpy(out + hl, p, len);
    }
    return hl + len;
}

int ws_msg_add(struct ws_msg *m, const struct ws_frame *f)
{
    if (f->op == WS_CONT) {
        if (!m->active)
            return -EPROTO;
    } else {
        if (m->active)
            return -EPROTO;
        m->op = f->op;
        m->len = 0;
    }
    if (f->len > WS_MAX_MESSAGE - m->len)
        return -EMSGSIZE;
    if (f->len)
        memcpy(m->buf + m->len, f->payload, f->len);
    m->len += f->len;
    m->active = !f->fin;
    return f->fin ? 1 : 0;
}
