/*
 * cli.h — what the `authcache` CLI's files share: cli.c (arguments, stats, get, dump, purge,
 * check) and top.c (the live view).
 */
#ifndef AUTHCACHE_CLI_H
#define AUTHCACHE_CLI_H

#include <stddef.h>
#include <stdint.h>

#include "authcache.h"

/* One line "authcache: ..." on stderr, then exit(code). */
void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

/* "12s", "3m05s", "2h10m", "4d3h" into b. */
const char *dur(int64_t ms, char *b, size_t n);

/* The bearer token from token_file ("" when none; exits 2 if it cannot be read). */
void read_token(const char *token_file, char *token, size_t cap);

/* One HTTP/1.1 request to the admin listener: the status (> 0), or < 0 (admin_strerror says why);
 * the response is read into resp, *body pointing at its body. */
int admin_request(const char *admin, const char *token, const char *method, const char *target,
                  int timeout_ms, char *resp, size_t cap, char **body);
const char *admin_strerror(int rc);

int cmd_top(struct authcache *c, const char *name, const char *admin, const char *token_file,
            long iterations);

#endif
