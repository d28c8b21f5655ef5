/*
 * tls.c — OpenSSL over memory BIOs (tls.h). One client SSL_CTX for the process, verifying peers
 * against the default trust store and the upstream's host name; one SSL per upstream connection,
 * reused with its keep-alive connection.
 */
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tls.h"

static SSL_CTX *ctx;

struct tls_conn {
    SSL *ssl;
    BIO *rbio, *wbio; /* network -> SSL, SSL -> network */
    char err[160];
};

int tls_global_init(char *err, size_t errlen)
{
    if (ctx)
        return 0;
    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(err, errlen, "--upstream: cannot create a TLS context");
        return -1;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        snprintf(err, errlen, "--upstream: cannot load the system's trusted certificates");
        SSL_CTX_free(ctx);
        ctx = NULL;
        return -1;
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT);
    return 0;
}

SSL_CTX *tls_client_ctx(const char *ca_file, char *err, size_t errlen)
{
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    int ok;

    if (!c) {
        snprintf(err, errlen, "cannot create a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
    ok = ca_file && *ca_file ? SSL_CTX_load_verify_locations(c, ca_file, NULL)
                             : SSL_CTX_set_default_verify_paths(c);
    if (ok != 1) {
        unsigned long e = ERR_get_error();
        char why[256] = "unknown error";

        if (e) /* the whole error: a missing file has no reason string of its own */
            ERR_error_string_n(e, why, sizeof(why));
        if (ca_file && *ca_file)
            snprintf(err, errlen, "cannot load CA certificates from %s: %s", ca_file, why);
        else
            snprintf(err, errlen, "cannot load the system's trusted certificates");
        ERR_clear_error();
        SSL_CTX_free(c);
        return NULL;
    }
    return c;
}

struct tls_conn *tls_new(const char *host)
{
    struct tls_conn *t = calloc(1, sizeof(*t));

    if (!t || !ctx)
        goto fail;
    t->ssl = SSL_new(ctx);
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (!t->ssl || !t->rbio || !t->wbio)
        goto fail;
    BIO_set_mem_eof_return(t->rbio, -1); /* an empty read BIO means "wait", not EOF */
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    t->rbio = t->wbio = NULL; /* owned by the SSL now */
    SSL_set_connect_state(t->ssl);
    SSL_set_tlsext_host_name(t->ssl, host);
    if (SSL_set1_host(t->ssl, host) != 1)
        goto fail;
    return t;
fail:
    if (t) {
        BIO_free(t->rbio);
        BIO_free(t->wbio);
        SSL_free(t->ssl);
        free(t);
    }
    return NULL;
}

void tls_free(struct tls_conn *t)
{
    if (!t)
        return;
    SSL_free(t->ssl);
    free(t);
}

static int fail(struct tls_conn *t, int rc, const char *what)
{
    unsigned long e = ERR_get_error();
    long v = SSL_get_verify_result(t->ssl);

    if (v != X509_V_OK)
        snprintf(t->err, sizeof(t->err), "%s: certificate: %s", what,
                 X509_verify_cert_error_string(v));
    else if (e)
        snprintf(t->err, sizeof(t->err), "%s: %s", what, ERR_reason_error_string(e));
    else
        snprintf(t->err, sizeof(t->err), "%s failed (%d)", what, SSL_get_error(t->ssl, rc));
    ERR_clear_error();
    return -1;
}

int tls_feed(struct tls_conn *t, const void *data, size_t len)
{
    return BIO_write(SSL_get_rbio(t->ssl), data, (int)len) == (int)len ? 0 : -1;
}

size_t tls_take(struct tls_conn *t, void *out, size_t cap)
{
    int n = BIO_read(SSL_get_wbio(t->ssl), out, (int)cap);

    return n > 0 ? (size_t)n : 0;
}

int tls_handshake(struct tls_conn *t)
{
    int rc = SSL_do_handshake(t->ssl);

    if (rc == 1)
        return 1;
    switch (SSL_get_error(t->ssl, rc)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return 0;
    default:
        return fail(t, rc, "TLS handshake");
    }
}

int tls_write(struct tls_conn *t, const void *data, size_t len)
{
    int rc = SSL_write(t->ssl, data, (int)len);

    return rc == (int)len ? 0 : fail(t, rc, "TLS write");
}

ssize_t tls_read(struct tls_conn *t, void *out, size_t cap)
{
    int rc = SSL_read(t->ssl, out, (int)cap);

    if (rc > 0)
        return rc;
    switch (SSL_get_error(t->ssl, rc)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return 0;
    case SSL_ERROR_ZERO_RETURN:
        return -2;
    default:
        return fail(t, rc, "TLS read");
    }
}

const char *tls_error(const struct tls_conn *t)
{
    return t->err[0] ? t->err : "TLS error";
}
