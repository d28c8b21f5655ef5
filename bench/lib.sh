# bench/lib.sh — shell helpers shared by bench/run, bench/hitpath.sh and tests/demo.sh: starting and
# stopping helper processes, loopback ports, readiness, CPU and memory of a process tree, medians,
# the test IdP's control API and nginx configurations. Source it from bash after setting LIB_NAME
# (the prefix of messages, e.g. "hitpath"); nothing here writes outside the directories it is given.
#
# Process bookkeeping: append every background PID to PIDS; lib_traps installs an EXIT trap that
# stops them all (TERM, then KILL after LIB_STOP_TRIES tenths of a second each) and then calls
# on_cleanup if the script defines it.
# shellcheck shell=bash

LIB_NAME=${LIB_NAME:-bench}
LIB_STOP_TRIES=${LIB_STOP_TRIES:-40}
# shellcheck disable=SC2034 # for the scripts: /proc/PID/stat counts CPU time in these
CLK_TCK=$(getconf CLK_TCK)
PIDS=()

die() {
    echo "$LIB_NAME: $*" >&2
    exit 1
}

# ---------------------------------------------------------------- processes

# stop_pids PID...: SIGTERM each, wait up to LIB_STOP_TRIES tenths of a second for each, then SIGKILL.
stop_pids() {
    local pid
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "$@"; do
        for _ in $(seq "$LIB_STOP_TRIES"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
}

# forget_pids PID...: drop them from PIDS (after stopping them yourself).
forget_pids() {
    local keep=() p q drop
    for p in "${PIDS[@]}"; do
        drop=0
        for q in "$@"; do [ "$p" = "$q" ] && drop=1; done
        [ "$drop" = 1 ] || keep+=("$p")
    done
    PIDS=("${keep[@]}")
}

lib_cleanup() {
    trap - EXIT
    trap '' INT TERM # a second Ctrl-C must not cut the cleanup short
    stop_pids "${PIDS[@]}"
    if declare -F on_cleanup >/dev/null; then on_cleanup; fi
}

lib_traps() {
    trap lib_cleanup EXIT
    # shellcheck disable=SC2064
    trap "echo >&2; echo '$LIB_NAME: interrupted' >&2; exit 130" INT
    trap 'exit 143' TERM
}

# free_port VAR: a loopback port in 20000..31999 (below the ephemeral range) that nothing listens
# on and that was not handed out before (call it in this shell, not in a $(...) subshell).
LIB_TAKEN=" "
free_port() {
    local __fp # a name no caller passes: printf -v must reach the caller's variable
    for _ in $(seq 200); do
        __fp=$((20000 + RANDOM % 12000))
        case $LIB_TAKEN in *" $__fp "*) continue ;; esac
        if ! (: </dev/tcp/127.0.0.1/$__fp) 2>/dev/null; then
            LIB_TAKEN="$LIB_TAKEN$__fp "
            printf -v "$1" '%s' "$__fp"
            return 0
        fi
    done
    die "no free port found"
}

# wait_http NAME PID URL LOG [TENTHS]: until URL answers 200 (default 5 s), else the log's tail
# and exit 1.
wait_http() {
    local name=$1 pid=$2 url=$3 log=$4 tries=${5:-50}
    for _ in $(seq $((tries * 2))); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url")" = 200 ] && return 0
        kill -0 "$pid" 2>/dev/null || die "$name exited before it was ready: $(tail -n 5 "$log")"
        sleep 0.05
    done
    die "$name not ready after $((tries / 10)) s: $(tail -n 5 "$log")"
}

# wait_port NAME PID PORT LOG: until something accepts on 127.0.0.1:PORT (5 s).
wait_port() {
    for _ in $(seq 100); do
        (: </dev/tcp/127.0.0.1/"$3") 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || die "$1 exited before it was ready: $(tail -n 5 "$4")"
        sleep 0.05
    done
    die "$1 not listening on $3 after 5 s: $(tail -n 5 "$4")"
}

# proc_tree PID: PID and its child processes (nginx: master and workers, cache manager, loader).
proc_tree() {
    echo "$1"
    pgrep -P "$1" 2>/dev/null
}

# ---------------------------------------------------------------- measuring

# cpu_ticks PID...: utime+stime (clock ticks) of the given processes, all threads (and threads
# that have exited); a process that is gone counts 0. Fields after the "(comm)".
cpu_ticks() {
    local pid sum=0 t
    for pid in "$@"; do
        t=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{ print $12 + $13 }')
        sum=$((sum + ${t:-0}))
    done
    echo "$sum"
}

# busy_ticks: all CPUs' non-idle time (clock ticks) from /proc/stat.
busy_ticks() {
    awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
}

# children_s FILE: user+sys seconds of the shell's waited-for children, from a saved `times`
# output (run `times` in the measuring shell itself: a $(...) subshell's children start at 0).
children_s() {
    awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } print t }' "$1"
}

# rss_kb PID...: resident set (VmRSS, KiB) summed over the processes.
rss_kb() {
    local pid sum=0 v
    for pid in "$@"; do
        v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)
        sum=$((sum + ${v:-0}))
    done
    echo "$sum"
}

# median FILE COLUMN: the median of a whitespace-separated column.
median() {
    awk -v c="$2" '{ print $c }' "$1" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# json_num JSON PATH...: the number after the last of the keys given, each searched after the
# previous one (enough for the flat answers of authcached's /v1/stats and the IdP's control API).
json_num() {
    local s=$1 k
    shift
    for k in "$@"; do
        case $s in *"\"$k\":"*) s=${s#*\"$k\":} ;; *) echo ""; return 1 ;; esac
    done
    s=${s%%[,\}]*}
    echo "${s//[^0-9.-]/}"
}

# header_value FILE NAME: the first value of header NAME (case-insensitive) in a saved response head.
header_value() {
    tr -d '\r' <"$1" | awk -v n="$(echo "$2" | tr 'A-Z' 'a-z')" \
        'tolower($0) ~ "^" n ":" { sub(/^[^:]*:[ \t]*/, ""); print; exit }'
}

# ---------------------------------------------------------------- the test IdP's control API

# idp_ctl CONTROL_PORT METHOD PATH?QUERY: the control API's JSON answer.
idp_ctl() {
    curl -s --max-time 5 -X "$2" "http://127.0.0.1:$1$3"
}

# idp_ok CONTROL_PORT PATH?QUERY: POST, and die unless the answer says ok.
idp_ok() {
    local out
    out=$(idp_ctl "$1" POST "$2")
    case $out in *'"ok":true'*) ;; *) die "IdP control $2: $out" ;; esac
}

# idp_calls CONTROL_PORT [COOKIE]: forward-auth requests the IdP received, in total or for a cookie.
idp_calls() {
    json_num "$(idp_ctl "$1" GET "/calls${2:+?cookie=$2}")" calls
}

# ---------------------------------------------------------------- nginx

# nginx_prelude DIR WORKERS: the top of an nginx.conf that keeps everything under DIR (pid, logs,
# temp paths), runs in the foreground and logs no requests.
nginx_prelude() {
    mkdir -p "$1/tmp" "$1/logs"
    cat <<EOF
# written by bench/lib.sh
worker_processes $2;
daemon off;
pid $1/nginx.pid;
error_log $1/logs/error.log warn;
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $1/tmp/body;
    proxy_temp_path $1/tmp/proxy;
    fastcgi_temp_path $1/tmp/fastcgi;
    uwsgi_temp_path $1/tmp/uwsgi;
    scgi_temp_path $1/tmp/scgi;
EOF
}

# nginx_add_headers HEADERFILE: add_header lines answering the "Name: value" lines of HEADERFILE.
nginx_add_headers() {
    local name value
    while IFS= read -r line; do
        line=${line%$'\r'}
        [ -n "$line" ] || continue
        name=${line%%:*} value=${line#*:}
        value=${value# }
        case $value in *'$'* | *'"'* | *'\'*) die "nginx_add_headers: cannot quote the value of $name" ;; esac
        printf '            add_header %s "%s";\n' "$name" "$value"
    done <"$1"
}

# nginx_conf_return200 DIR PORT HEADERFILE: nginx answering every request `return 200` with the
# headers of HEADERFILE, 1 worker.
nginx_conf_return200() {
    nginx_prelude "$1" 1
    cat <<EOF
    server {
        listen 127.0.0.1:$2 reuseport backlog=4096;
        location / {
$(nginx_add_headers "$3")
            return 200;
        }
    }
}
EOF
}

# nginx_conf_cache DIR PORT IDP_PORT FRESH_TTL COOKIE_NAME WORKERS CACHE_DIR: nginx as a caching forward-auth
# endpoint in front of the IdP, the way one would build authcached's job from stock nginx:
# proxy_cache keyed on the session cookie and X-Forwarded-Host, one request per key to the IdP at
# a time (proxy_cache_lock), stale answers while the IdP fails (proxy_cache_use_stale error
# timeout), 200s kept FRESH_TTL seconds; requests without the cookie, sign-outs and the login
# callback go to the IdP uncached. Keep-alive connections to the IdP; IdP timeouts as authcached's
# default --upstream-timeout (2 s). The cache files go to CACHE_DIR (bench/run: on tmpfs, like
# authcached's segment — one file per answer on a disk would measure the disk).
nginx_conf_cache() {
    nginx_prelude "$1" "$6"
    cat <<EOF
    proxy_cache_path $7 levels=1:2 keys_zone=auth:128m max_size=4g inactive=24h use_temp_path=off;
    upstream idp {
        server 127.0.0.1:$3;
        keepalive 256;
    }
    map "\$http_x_forwarded_uri" \$bench_nocache_uri {
        default 0;
        ~^/outpost\.goauthentik\.io/sign_out 1;
        ~[?&]X-authentik-(auth-callback|logout)=true 1;
    }
    map "\$cookie_$5" \$bench_nocache {
        "" 1;
        default \$bench_nocache_uri;
    }
    server {
        listen 127.0.0.1:$2 reuseport backlog=4096;
        location / {
            proxy_pass http://idp;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_connect_timeout 2s;
            proxy_send_timeout 2s;
            proxy_read_timeout 2s;
            proxy_cache auth;
            proxy_cache_key "\$cookie_$5|\$http_x_forwarded_host";
            proxy_cache_lock on;
            proxy_cache_lock_timeout 2s;
            proxy_cache_use_stale error timeout;
            proxy_cache_valid 200 ${4}s;
            proxy_cache_bypass \$bench_nocache;
            proxy_no_cache \$bench_nocache;
        }
    }
}
EOF
}
