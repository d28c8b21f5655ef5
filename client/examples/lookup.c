/* lookup: what a local program does to ask authcached's cache whether a session is known, using
 * only <authcache.h>. Usage: lookup SHM NAME=VALUE HOST AUTH_PATH (the session cookie as the
 * browser sends it: authcached keys on its name too). Prints the user and identity headers and
 * exits 0 when held, exits 1 when not, 2 when the segment cannot be opened. Build: cc lookup.c
 * $(pkg-config --cflags --libs authcache)   (add --static for libauthcache.a) */
#include <authcache.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    struct authcache *c;
    struct authcache_answer a;
    int err;

    const char *eq = argc == 5 ? strchr(argv[2], '=') : NULL;

    if (!eq) {
        fprintf(stderr, "usage: %s SHM NAME=VALUE HOST AUTH_PATH\n", argv[0]);
        return 2;
    }
    if ((err = authcache_open(argv[1], &c)) < 0) {
        fprintf(stderr, "authcache_open %s: %s\n", argv[1], strerror(-err));
        return 2;
    }
    struct authcache_request r = {
        .cookie_name = argv[2],
        .cookie_name_len = (size_t)(eq - argv[2]),
        .cookie = eq + 1,
        .cookie_len = strlen(eq + 1),
        .host = argv[3],
        .host_len = strlen(argv[3]),
        .auth_path = argv[4],
        .auth_path_len = strlen(argv[4]),
    };
    err = authcache_lookup(c, &r, &a);
    if (err == 0)
        printf("user=%.*s\n%.*s", (int)a.user_len, a.user, (int)a.headers_len, a.headers);
    else
        printf("none\n");
    authcache_close(c);
    return err == 0 ? 0 : 1;
}
