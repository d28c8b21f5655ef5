/*
 * shm_key.c — keyed digests of credentials: HMAC-SHA-256 under the segment's key, truncated to 128
 * bits for the lookup digest and 64 bits for the credential-only digest. Equality of answers is
 * equality of these digests; a credential never reaches the segment in any other form.
 *
 * The HMAC inner and outer states are computed once per handle (shm_key_init) and copied per call,
 * so a digest costs the compression of the message plus one block, no allocation. OpenSSL's
 * low-level SHA-256 is used for that reason (its EVP contexts allocate on copy); it uses the CPU's
 * SHA extensions where present.
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <errno.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <string.h>

#include "shm.h"
#include "shm_int.h"

struct mac_state {
    SHA256_CTX inner, outer;
};
_Static_assert(sizeof(struct mac_state) <= sizeof(((struct shm *)0)->mac_),
               "HMAC state fits in the handle");

void shm__key_init(struct shm *h, const uint8_t key[SHM_KEY_LEN])
{
    struct mac_state *m = (struct mac_state *)h->mac_;
    uint8_t pad[64];

    memset(pad, 0x36, sizeof(pad));
    for (unsigned i = 0; i < SHM_KEY_LEN; i++)
        pad[i] ^= key[i];
    SHA256_Init(&m->inner);
    SHA256_Update(&m->inner, pad, sizeof(pad));
    memset(pad, 0x5c, sizeof(pad));
    for (unsigned i = 0; i < SHM_KEY_LEN; i++)
        pad[i] ^= key[i];
    SHA256_Init(&m->outer);
    SHA256_Update(&m->outer, pad, sizeof(pad));
}

static void mac_final(const struct shm *h, SHA256_CTX *inner, uint8_t out[32])
{
    const struct mac_state *m = (const struct mac_state *)h->mac_;
    uint8_t ih[32];
    SHA256_CTX outer = m->outer;

    SHA256_Final(ih, inner);
    SHA256_Update(&outer, ih, sizeof(ih));
    SHA256_Final(out, &outer);
}

static void mac_part(SHA256_CTX *c, const void *p, size_t len)
{
    uint8_t l[4] = {(uint8_t)len, (uint8_t)(len >> 8), (uint8_t)(len >> 16), (uint8_t)(len >> 24)};

    SHA256_Update(c, l, sizeof(l));
    SHA256_Update(c, p, len);
}

void shm_key_digest(const struct shm *h, const struct iovec *parts, int nparts,
                    uint8_t out[SHM_DIGEST_LEN])
{
    SHA256_CTX c = ((const struct mac_state *)h->mac_)->inner;
    uint8_t md[32];

    SHA256_Update(&c, "D", 1);
    for (int i = 0; i < nparts; i++)
        mac_part(&c, parts[i].iov_base, parts[i].iov_len);
    mac_final(h, &c, md);
    memcpy(out, md, SHM_DIGEST_LEN);
}

void shm_key_cred(const struct shm *h, int kind, const void *cred, size_t len,
                  uint8_t out[SHM_CRED_LEN])
{
    SHA256_CTX c = ((const struct mac_state *)h->mac_)->inner;
    uint8_t k = (uint8_t)kind, md[32];

    SHA256_Update(&c, "C", 1);
    mac_part(&c, &k, 1);
    mac_part(&c, cred, len);
    mac_final(h, &c, md);
    memcpy(out, md, SHM_CRED_LEN);
}

void shm_key_query(const struct shm *h, const struct shm_query *q, struct shm_key *out,
                   int with_cred)
{
    uint8_t k = (uint8_t)q->cred_kind;
    struct iovec parts[7] = {
        {&k, 1},
        {(void *)q->cred, q->cred_len},
        {(void *)q->host, q->host_len},
        {(void *)q->auth_path, q->auth_path_len},
        {(void *)q->method, q->method_len},
        {(void *)q->uri_path, q->uri_path_len},
    };
    int n = q->scope_uri ? 6 : 4;

    /* The other inputs come last and only when there are some (tagged, so their presence cannot
     * be mistaken for the scope parts): keys of requests without them stay what they were. */
    if (q->inputs_len)
        parts[n++] = (struct iovec){(void *)q->inputs, q->inputs_len};
    shm_key_digest(h, parts, n, out->digest);
    if (with_cred)
        shm_key_cred(h, q->cred_kind, q->cred, q->cred_len, out->cred);
    else
        memset(out->cred, 0, SHM_CRED_LEN);
}

int shm_key_input(char *buf, size_t *len, size_t cap, enum shm_input tag, const char *v, size_t n)
{
    if (n > UINT32_MAX || *len + 5 + n > cap)
        return -E2BIG;
    buf[*len] = (char)tag;
    for (int i = 0; i < 4; i++)
        buf[*len + 1 + i] = (char)(n >> (8 * i));
    memcpy(buf + *len + 5, v, n);
    *len += 5 + n;
    return 0;
}

void shm_key_make(const struct shm *h, const void *cred, size_t cred_len, const struct iovec *scope,
                  int nscope, struct shm_key *out)
{
    SHA256_CTX c = ((const struct mac_state *)h->mac_)->inner;
    uint8_t md[32];

    /* The same bytes shm_key_digest hashes for parts = {cred, scope...}. */
    SHA256_Update(&c, "D", 1);
    mac_part(&c, cred, cred_len);
    for (int i = 0; i < nscope; i++)
        mac_part(&c, scope[i].iov_base, scope[i].iov_len);
    mac_final(h, &c, md);
    memcpy(out->digest, md, SHM_DIGEST_LEN);
    shm_key_cred(h, SHM_CRED_COOKIE, cred, cred_len, out->cred);
}
