/*
 * tls.h — TLS for https:// upstreams without letting OpenSSL touch a socket: the worker's io_uring
 * moves ciphertext, this module turns it into plaintext and back through memory BIOs.
 *
 * Use: tls_new; then loop { send what tls_take gives; feed what arrives with tls_feed; call
 * tls_handshake until it returns 1 }; then tls_write the request, send tls_take's ciphertext, feed
 * what arrives and tls_read plaintext. Certificates are verified against the system store
 * (SSL_CERT_FILE / SSL_CERT_DIR are honoured) and the upstream's host name.
 */
#ifndef AUTHCACHE_TLS_H
#define AUTHCACHE_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <sys/types.h>

struct tls_conn;

/* Once per process. 0, or -1 with a one-line reason. */
int tls_global_init(char *err, size_t errlen);

/* A client context for the threads that run OpenSSL on their own sockets (the authentik feed, the
 * purge bus): TLS 1.2 or later, peers verified against the PEM certificates of ca_file, or the
 * system's store (SSL_CERT_FILE / SSL_CERT_DIR honoured) when ca_file is NULL or "". The caller
 * still names the host on each SSL (SSL_set1_host). NULL with a one-line reason in err. */
SSL_CTX *tls_client_ctx(const char *ca_file, char *err, size_t errlen);

/* A client connection to host (SNI and the name the certificate must carry). NULL: out of memory.
 */
struct tls_conn *tls_new(const char *host);
void tls_free(struct tls_conn *t);

/* Give it ciphertext that arrived. 0, or -1. */
int tls_feed(struct tls_conn *t, const void *data, size_t len);

/* Take up to cap bytes of ciphertext to send. Returns the number of bytes (0: nothing to send). */
size_t tls_take(struct tls_conn *t, void *out, size_t cap);

/* Advance the handshake: 1 done, 0 needs more I/O (send tls_take, feed replies), -1 failed
 * (tls_error says why, e.g. a certificate that does not verify). */
int tls_handshake(struct tls_conn *t);

/* Encrypt plaintext (after the handshake). 0, or -1. */
int tls_write(struct tls_conn *t, const void *data, size_t len);

/* Decrypt into out: > 0 bytes, 0 nothing yet (feed more), -1 error, -2 the peer closed cleanly. */
ssize_t tls_read(struct tls_conn *t, void *out, size_t cap);

/* Why the last call failed, for the log. */
const char *tls_error(const struct tls_conn *t);

#endif
