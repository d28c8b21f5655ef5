/*
 * config.h — authcached's command line and environment, parsed and checked once at start into one
 * struct config that the hot path only reads (docs/contract.md, "authcached flags").
 *
 * Where a value comes from, in rising precedence: built-in defaults; the preset (--preset, or
 * AUTHCACHED_PRESET); AUTHCACHED_<NAME> environment variables; flags. A flag given on the command
 * line makes the environment variable of that flag ignored altogether.
 *
 * The struct holds no pointers: it can be copied, and config_free only wipes the secrets in it.
 */
#ifndef AUTHCACHE_CONFIG_H
#define AUTHCACHE_CONFIG_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "log.h"

#define CONFIG_MAX_PATTERNS 32 /* per list: --session-cookie, --identity-header */
#define CONFIG_NAME_MAX 128    /* a cookie or header name (pattern) */
#define CONFIG_PATH_MAX 1024   /* --signout-path, the upstream base path */
#define CONFIG_HOST_MAX 255    /* a DNS name or address literal */
#define CONFIG_SHM_NAME_MAX 200
#define CONFIG_CHANNEL_MAX 128 /* redis stream key */
#define CONFIG_BUS_MAXLEN_DEFAULT 100000
#define CONFIG_SIGNOUT_RATE_DEFAULT 1000 /* sign-outs a second sent to the IdP, per daemon */
#define CONFIG_SIGNOUT_RATE_MAX 1000000
#define CONFIG_BUS_MAXLEN_MIN 1
#define CONFIG_BUS_MAXLEN_MAX 100000000
#define CONFIG_TOKEN_MAX 1023    /* admin bearer token */
#define CONFIG_BUS_AUTH_MAX 1023 /* the line of --bus-auth-file, [user:]password */
#define CONFIG_KEY_FILE_MIN 16   /* bytes of secret in --hash-key-file */
#define CONFIG_KEY_FILE_MAX 4096
#define CONFIG_HASH_KEY_LEN 32 /* = SHM_KEY_LEN */
#define CONFIG_CAPACITY_MIN 16
#define CONFIG_CAPACITY_MAX (UINT64_C(1) << 28)
#define CONFIG_WORKERS_MAX 256
#define CONFIG_DURATION_MAX_MS (INT64_C(876000) * 3600 * 1000) /* 876000h, 100 years */

enum config_preset {
    CONFIG_PRESET_AUTHENTIK = 0,
    CONFIG_PRESET_OAUTH2_PROXY,
    CONFIG_PRESET_AUTHELIA
};
enum config_key_scope { CONFIG_SCOPE_HOST = 0, CONFIG_SCOPE_URI };
/* What config_parse found besides a configuration to run. */
enum config_info { CONFIG_RUN = 0, CONFIG_HELP, CONFIG_VERSION };

/* A listen address. */
struct config_addr {
    struct sockaddr_storage sa; /* AF_INET or AF_INET6, port set (0 = ephemeral) */
    socklen_t len;
    char text[64]; /* as given, for logs: "127.0.0.1:9300" */
};

/* A cookie or header name: exact, or a prefix when it was given with a trailing '*'. */
struct config_pattern {
    char name[CONFIG_NAME_MAX + 1]; /* without the '*' */
    size_t len;
    int prefix;
};

struct config_patterns {
    struct config_pattern v[CONFIG_MAX_PATTERNS];
    size_t n;
    int icase; /* header names compare case-insensitively, cookie names exactly */
};

struct config_upstream {
    int tls;                               /* https */
    char host[CONFIG_HOST_MAX + 1];        /* to connect to: a name, IPv4 or IPv6 (no brackets) */
    uint16_t port;                         /* as given, or 80 / 443 */
    char host_header[CONFIG_HOST_MAX + 9]; /* Host to send: host (IPv6 in brackets)[:port] */
    char base_path[CONFIG_PATH_MAX];       /* "" or "/prefix", never ending in '/' */
};

struct config_bus {
    int enabled;
    char host[CONFIG_HOST_MAX + 1];       /* no brackets */
    uint16_t port;                        /* default 6379 */
    char channel[CONFIG_CHANNEL_MAX + 1]; /* the stream's key; default "authcache" */
    int tls;                              /* rediss:// */
    /* --bus-auth-file: Redis AUTH on every connection when auth_pass_len > 0; auth_user_len 0
     * means "AUTH password" (requirepass), else "AUTH user password" (Redis 6 ACL). Secrets,
     * wiped by config_free; never logged. */
    char auth_user[CONFIG_BUS_AUTH_MAX + 1];
    size_t auth_user_len;
    char auth_pass[CONFIG_BUS_AUTH_MAX + 1];
    size_t auth_pass_len;
};

struct config {
    struct config_addr listen, admin;
    struct config_upstream upstream;
    enum config_preset preset;
    struct config_patterns session_cookies;  /* matched exactly (case-sensitive) */
    struct config_patterns identity_headers; /* matched case-insensitively */
    char user_header[CONFIG_NAME_MAX + 1];   /* always matches identity_headers */
    enum config_key_scope key_scope;
    int background_revalidation; /* refresh ahead (a preset's, no flag): 0 for an IdP that may
                                  * rotate sessions on its auth endpoint (oauth2-proxy's
                                  * --cookie-refresh): a background call would lose its Set-Cookie
                                  */
    char signout_path[CONFIG_PATH_MAX]; /* "" = no sign-out path */
    uint64_t signout_rate;       /* --signout-rate: sign-outs a second to the IdP, 0 = no limit */
    int64_t fresh_ttl_ms;        /* >= 0 (0: always revalidate) */
    int64_t session_ttl_ms;      /* > 0 */
    int64_t outage_grace_ms;     /* >= 0 */
    int64_t upstream_timeout_ms; /* > 0 */
    char shm_name[CONFIG_SHM_NAME_MAX + 1];
    int have_shm_group; /* --shm-group: the segment is mode 0640 for this group */
    uint32_t shm_group;
    uint64_t capacity;
    unsigned workers;
    char hash_key_file[PATH_MAX]; /* "" = none: a random key kept in the segment */
    int have_hash_key;
    uint8_t hash_key[CONFIG_HASH_KEY_LEN]; /* SHA-256 of a label and the file's secret */
    char bus_url[CONFIG_PATH_MAX];         /* "" = none */
    struct config_bus bus;
    char bus_auth_file[PATH_MAX];               /* "" = none */
    char bus_ca_file[PATH_MAX];                 /* --bus-ca-file, "" = the system's store */
    uint64_t bus_maxlen;                        /* --bus-maxlen: the stream keeps about this many */
    struct config_upstream authentik;           /* --authentik-url; host "" = no event feed */
    char authentik_token_file[PATH_MAX];        /* "" = none */
    char authentik_token[CONFIG_TOKEN_MAX + 1]; /* the outpost's token; "" when no file */
    size_t authentik_token_len;
    char admin_token_file[PATH_MAX];        /* "" = none */
    char admin_token[CONFIG_TOKEN_MAX + 1]; /* "" when no file */
    size_t admin_token_len;
    char handover[108]; /* --handover: a Unix socket path (sun_path's size), "" = off */
    enum log_level log_level;
    enum log_format log_format;
    enum config_info info;
};

/*
 * Parse argv (argv[0] is the program and is skipped) and envp (NULL-terminated "NAME=value"
 * entries, may be NULL; only AUTHCACHED_* ones are read) into *cfg, then read --hash-key-file,
 * --admin-token-file, --authentik-token-file and --bus-auth-file. Flags are "--name VALUE" or
 * "--name=VALUE"; "-h" is "--help".
 *
 * Returns 0 with *cfg ready to run; 1 for --help or --version (cfg->info says which: print it with
 * config_print_info, exit 0); -1 with err holding one line (no newline, NUL-terminated, cut to
 * errlen) that names the flag and the problem, e.g.
 *     --fresh-ttl: "30" is not a duration (use 250ms, 30s, 5m, 24h)
 *     --fresh-ttl (AUTHCACHED_FRESH_TTL): "30" is not a duration (use 250ms, 30s, 5m, 24h)
 *     unknown flag --frobnicate
 * The contents of the key and token files never appear in it. Never prints, never exits; the only
 * side effects are reading those two files. An AUTHCACHED_* variable that names no flag is ignored
 * (Kubernetes injects AUTHCACHED_PORT and the like for a Service of that name). After -1, *cfg is
 * unspecified but holds no secret and needs no config_free.
 */
int config_parse(struct config *cfg, int argc, char **argv, char **envp, char *err, size_t errlen);

/* Wipe the secrets held in cfg (hash key, admin and authentik tokens, the bus's password). */
void config_free(struct config *cfg);

/* After config_parse returned 1: the usage text or the version line, to out. */
void config_print_info(const struct config *cfg, FILE *out);

/*
 * A duration: one or more <digits><unit> with unit ms, s, m or h, largest unit first, each unit at
 * most once ("250ms", "30s", "5m", "24h", "1h30m", "1s500ms"); or "0". No sign, space, fraction or
 * bare number. Returns 0 and *ms; -EINVAL if malformed; -ERANGE past CONFIG_DURATION_MAX_MS.
 */
int config_parse_duration(const char *s, int64_t *ms);

/* 1 if name[0, len) matches one of the patterns (exactly, or by prefix), else 0. */
int config_patterns_match(const struct config_patterns *ps, const char *name, size_t len);

#endif
