#!/usr/bin/env bash
# bench/signout.sh — what sign-outs cost the traffic of everybody else, and how fast a sign-out on
# one node reaches another (issue 10: purges off the request path).
#
#   AC_BINS="before=/tmp/ac-before/build/authcached after=build/authcached" bench/signout.sh
#
# (1) flood. One test IdP (app1.test .. app5.test), and per binary of AC_BINS one authcached
#     --workers 1 (server on CPU 0, wrk and the IdP on CPU 1, as bench/run pins them), each warmed
#     with the same 64 000 (session, host) pairs (FLOOD_SESSIONS x 5 hosts, bench/lua/warm.lua,
#     fresh-ttl 1 h). Then FLOOD_ROUNDS rounds, each running every binary in turn, alternating:
#       alone   hit traffic only: wrk -t1 -c32 -dFLOOD_SECONDS, bench/lua/hit.lua, uniform over
#               the warmed pairs
#       flood   the same hit traffic while a second wrk (-t1 -c4, bench/lua/signout.lua) sends
#               sign-outs of sessions the cache never saw, a new cookie value each (authcached asks
#               the IdP once per such sign-out to learn the user; the IdP knows none, so no user
#               is purged, and the flood should leave the cached answers alone)
#       control the same hit traffic while the same sign-outs, at the rate the flood run just
#               before got answered, go to the IdP itself (BENCH_DELAY_MS): what the flood's load
#               on CPU 1 (the IdP and the flood's wrk, beside the hit traffic's wrk) does to the
#               latency wrk measures, with the daemon doing nothing for it
#     Per run: the hit traffic's p50/p99 and requests/s, the sign-outs/s, the daemon's CPU
#     (utime+stime, all threads, /proc) per request (hits + sign-outs), the busiest threads
#     of the daemon, and the share of the hit traffic that was not a hit (/v1/stats). Medians over the rounds, and per binary
#     flood_p99_ratio = p99(flood) / p99(alone) (goal <= 1.5), control_p99_ratio = p99(control) /
#     p99(alone), and flood_p99_over_control = p99(flood) / p99(control): the daemon's own share.
# (2) cross-node. redis-server on a free loopback port; per binary two authcached nodes A and B
#     (--workers 1, one --hash-key-file, --bus redis://127.0.0.1:PORT/CHANNEL), both holding the
#     64 000 pairs of (1) (XNODE_FILL); then bench/signout_xnode.py: XNODE_COUNT sessions, each
#     cached on both nodes, signed out on A one at a time while B is asked for the session every
#     1 ms until it stops answering `X-Authcache: hit`: p50/p99/max of that latency (goal p99 <=
#     100 ms). Not pinned. Then (XNODE_BEHIND, default 1) the same for 20 more sessions right
#     after a 3 s flood of sign-outs of unknown sessions on A (as in (1)): B applies what the bus
#     brings one purge at a time, so this says how far behind a flood leaves it.
#
# Environment:
#   AC_BINS          NAME=PATH ... the authcached binaries to compare (default: after=build/authcached)
#   FLOOD_ROUNDS     rounds of (1) (default 3)
#   FLOOD_SECONDS    seconds of each run of (1) (default 5)
#   FLOOD_SESSIONS   sessions warmed in (1), each on 5 hosts (default 12800: 64 000 pairs)
#   XNODE_COUNT      sign-outs per binary in (2) (default 1000)
#   XNODE_FILL=0|1   in (2), first cache the pairs of (1) on both nodes too, so that a purge that
#                    walks the table walks 64 000 answers as in (1) (default 1)
#   XNODE_BEHIND=0|1 in (2), also the sign-outs right after a flood on A (default 1)
#   SIGNOUT_PARTS    "flood xnode" (default), or either alone
#   BENCH_PIN=0|1    pin as above in (1) (default 1)
#   BUILD            build directory for test-idp (default build)
# Prints name=value lines (and writes them to build/bench/signout/results.txt). Traffic goes to
# 127.0.0.1 only. Everything it starts is stopped, and its /dev/shm segments removed, on exit.
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
LIB_NAME=signout
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

BUILD=$ROOT/${BUILD:-build}
WORK=$BUILD/bench/signout
AC_BINS=${AC_BINS:-after=build/authcached}
ROUNDS=${FLOOD_ROUNDS:-3}
DUR=${FLOOD_SECONDS:-5}
SESSIONS=${FLOOD_SESSIONS:-12800}
HOSTS=5
XNODE_COUNT=${XNODE_COUNT:-1000}
XNODE_FILL=${XNODE_FILL:-1}
XNODE_BEHIND=${XNODE_BEHIND:-1}
PARTS=${SIGNOUT_PARTS:-flood xnode}
PIN=${BENCH_PIN:-1}
TAG=$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')
CAPACITY=262144 # 4 x the pairs: hits move answers to the head of the log, nothing may be evicted

if [ "$PIN" = 1 ]; then
    SERVER_CPU=0 WRK_CPU=1 IDP_CPU=1
else
    SERVER_CPU=0-$(($(nproc) - 1)) WRK_CPU=$SERVER_CPU IDP_CPU=$SERVER_CPU
fi

NAMES=()
declare -A BIN PORT ADMIN MAIN_PID
for nb in $AC_BINS; do
    name=${nb%%=*} bin=${nb#*=}
    case $nb in *=*) ;; *) die "AC_BINS: '$nb' is not NAME=PATH" ;; esac
    case $bin in /*) ;; *) bin=$ROOT/$bin ;; esac
    [ -x "$bin" ] || die "$bin is missing (AC_BINS=\"$AC_BINS\"); run: make"
    NAMES+=("$name")
    BIN[$name]=$bin
done
[ -x "$BUILD/test-idp" ] || die "$BUILD/test-idp is missing; run: make"
for tool in wrk curl taskset python3; do
    command -v "$tool" >/dev/null || die "$tool is not installed (make deps)"
done
case " $PARTS " in *" xnode "*) command -v redis-server >/dev/null || die "redis-server is not installed (make deps)" ;; esac
rm -rf "$WORK"
mkdir -p "$WORK"

SHMS=()
on_cleanup() {
    local s
    for s in "${SHMS[@]}"; do rm -f "/dev/shm/$s"; done
}
lib_traps

T_START=$SECONDS
say() { echo "$*" >&2; }

# ---------------------------------------------------------------- the IdP and the sessions

free_port IDP_PORT
free_port CTL
apps=()
for h in $(seq "$HOSTS"); do apps+=(--app "app$h.test"); done
taskset -c "$IDP_CPU" "$BUILD/test-idp" --listen "127.0.0.1:$IDP_PORT" --control "127.0.0.1:$CTL" \
    "${apps[@]}" --quiet >"$WORK/idp.log" 2>&1 &
IDP_PID=$!
PIDS+=("$IDP_PID")
wait_http test-idp "$IDP_PID" "http://127.0.0.1:$CTL/healthz" "$WORK/idp.log"
idp_ok "$CTL" "/fault?latency_ms=0"
sessions() { # POOL FROM COUNT
    python3 bench/idpctl.py sessions --control "$CTL" --tag "$TAG" --pool "$1" --from "$2" \
        --count "$3" >"$WORK/sessions.$1" 2>&1 || die "creating pool $1: $(cat "$WORK/sessions.$1")"
}
case " $PARTS " in *" flood "*) sessions h 0 "$SESSIONS" ;; *) [ "$XNODE_FILL" = 1 ] && sessions h 0 "$SESSIONS" ;; esac
case " $PARTS " in *" xnode "*) sessions x 0 $((XNODE_COUNT * ${#NAMES[@]})); sessions y 0 $((20 * ${#NAMES[@]})) ;; esac

# start_ac NAME KEY CPUS LOG [FLAG...]: an authcached of binary NAME on free ports, segment
# authcache-signout-$$-KEY; sets PORT[KEY], ADMIN[KEY], MAIN_PID[KEY].
start_ac() {
    local name=$1 key=$2 cpus=$3 log=$4 p a shm pid
    shift 4
    free_port p
    free_port a
    shm=authcache-signout-$$-$key
    SHMS+=("$shm")
    rm -f "/dev/shm/$shm"
    taskset -c "$cpus" "${BIN[$name]}" --listen "127.0.0.1:$p" --admin "127.0.0.1:$a" \
        --upstream "http://127.0.0.1:$IDP_PORT" --shm "$shm" --workers 1 --fresh-ttl 1h \
        --outage-grace 1h --capacity "$CAPACITY" --log-level warn "$@" >"$log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    PORT[$key]=$p ADMIN[$key]=$a MAIN_PID[$key]=$pid
    wait_http "$key" "$pid" "http://127.0.0.1:$a/readyz" "$log" 100
}

ac_stats() { curl -s --max-time 2 "http://127.0.0.1:${ADMIN[$1]}/v1/stats"; }

# warm KEY: every pair of pool h asked for once; done when the cache holds them all.
warm() {
    local key=$1 n=$((SESSIONS * HOSTS)) e pid t0=$SECONDS
    BENCH_TAG=$TAG BENCH_POOL=h BENCH_HOSTS=$HOSTS BENCH_FROM=0 BENCH_TO=$n \
        taskset -c "$WRK_CPU" wrk -t1 -c64 -d600s -s bench/lua/warm.lua "http://127.0.0.1:${PORT[$key]}" \
        >"$WORK/warm.$key" 2>&1 &
    pid=$!
    while :; do
        e=$(json_num "$(ac_stats "$key")" cache entries)
        [ "${e:-0}" -ge "$n" ] && break
        kill -0 "$pid" 2>/dev/null || die "warming $key: wrk ended early: $(tail -n 3 "$WORK/warm.$key")"
        [ $((SECONDS - t0)) -lt 120 ] || die "warming $key: $e of $n pairs after 120 s"
        sleep 0.1
    done
    kill -INT "$pid"
    wait "$pid"
    say "  warmed $key: $n pairs in $((SECONDS - t0)) s ($e entries)"
}

# ---------------------------------------------------------------- (1) flood

# thread_ticks PID: "TID TICKS" (utime+stime) per thread of PID.
thread_ticks() {
    local t
    for t in /proc/"$1"/task/*; do
        echo "${t##*/} $(sed 's/^.*) //' "$t/stat" 2>/dev/null | awk '{ print $12 + $13 }')"
    done
}

# busiest_threads BEFORE AFTER SECONDS: the daemon's threads by CPU over the run, busiest first,
# in cores ("TID:cores ..."): which thread did the work (the worker, or the purge thread).
busiest_threads() {
    awk -v hz="$CLK_TCK" -v d="$3" 'NR == FNR { t0[$1] = $2; next }
        { c = ($2 - t0[$1]) / hz / d; if (c >= 0.01) printf "%s:%.2f\n", $1, c }' "$1" "$2" |
        sort -t: -k2 -gr | head -n 3 | tr '\n' ' '
}

# settle KEY: waits until the daemon is idle (under 3 % of a core over half a second; at most
# 60 s) and prints the seconds it took: after a flood, the purge thread may still have queued
# walks to run, which would load CPU 0 during the next run (another binary's, too).
settle() {
    local t0=$SECONDS a b
    while [ $((SECONDS - t0)) -lt 60 ]; do
        a=$(cpu_ticks "${MAIN_PID[$1]}")
        sleep 0.5
        b=$(cpu_ticks "${MAIN_PID[$1]}")
        [ $(((b - a) * 100)) -lt $((3 * CLK_TCK / 2)) ] && break
    done
    echo $((SECONDS - t0))
}

# run KEY MODE ROUND: one run of hit traffic (MODE alone), hit traffic + sign-out flood (MODE
# flood), or hit traffic + the same sign-outs sent to the IdP instead (MODE control); appends "p50_ms p99_ms hit_rps signouts_per_s cpu_us_per_req other_cores miss_pct
# settle_s cpu_us_per_req_with_after" to WORK/KEY.MODE.runs and prints a line. settle_s: how long
# the daemon stayed busy after the run (settle); the last column counts its CPU meanwhile too.
run() {
    local key=$1 mode=$2 round=$3 out=$WORK/hit.$1.$2.$3 fout=$WORK/flood.$1.$2.$3 fpid="" s0 s1 t0 t1 b0 b1
    s0=$(ac_stats "$key")
    thread_ticks "${MAIN_PID[$key]}" >"$WORK/threads.0"
    b0=$(busy_ticks) t0=$(cpu_ticks "${MAIN_PID[$key]}")
    if [ "$mode" = flood ]; then
        BENCH_TAG=$TAG BENCH_HOSTS=$HOSTS taskset -c "$WRK_CPU" wrk -t1 -c4 -d"$((DUR + 1))s" \
            -s bench/lua/signout.lua "http://127.0.0.1:${PORT[$key]}" >"$fout" 2>&1 &
        fpid=$!
        sleep 0.5 # the flood under way before the hit traffic starts (and after it ends)
    elif [ "$mode" = control ]; then
        # The same sign-outs, at the rate this binary answered them in its flood run of this
        # round, sent to the IdP itself: the load the flood puts on CPU 1 (the IdP and the flood's
        # wrk, beside the hit traffic's wrk) without the daemon doing anything for it.
        # wrk's delay is whole ms: at least 4 connections, one more per 250 a second.
        local rate conns delay
        rate=$(tail -n 1 "$WORK/$key.flood.runs" | awk '{ print $4 }')
        conns=$(awk -v r="$rate" 'BEGIN { n = int(r / 250) + 1; print (n < 4 ? 4 : n) }')
        delay=$(awk -v r="$rate" -v n="$conns" 'BEGIN { printf "%d", (r > 0 ? n * 1000 / r + 0.5 : 1000) }')
        BENCH_TAG=$TAG BENCH_HOSTS=$HOSTS BENCH_DELAY_MS=$delay taskset -c "$WRK_CPU" wrk -t1 -c"$conns" \
            -d"$((DUR + 1))s" -s bench/lua/signout.lua "http://127.0.0.1:$IDP_PORT" >"$fout" 2>&1 &
        fpid=$!
        sleep 0.5
    fi
    BENCH_TAG=$TAG BENCH_POOL=h BENCH_SESSIONS=$SESSIONS BENCH_HOSTS=$HOSTS BENCH_DIST=uniform \
        taskset -c "$WRK_CPU" wrk -t1 -c32 -d"${DUR}s" --latency -s bench/lua/hit.lua \
        "http://127.0.0.1:${PORT[$key]}" >"$out" 2>&1
    [ -n "$fpid" ] && wait "$fpid"
    t1=$(cpu_ticks "${MAIN_PID[$key]}") b1=$(busy_ticks)
    thread_ticks "${MAIN_PID[$key]}" >"$WORK/threads.1"
    s1=$(ac_stats "$key")
    local settle_s t2
    settle_s=$(settle "$key")
    t2=$(cpu_ticks "${MAIN_PID[$key]}")
    grep -q '^wrk_requests=' "$out" || die "wrk against $key failed: $(tail -n 5 "$out")"
    local reqs hits signouts misses f_reqs=0 f_2xx=0 f_us=1 window
    reqs=$(sed -n 's/^wrk_requests=//p' "$out")
    hits=$(($(json_num "$s1" requests hit) - $(json_num "$s0" requests hit)))
    misses=$(($(json_num "$s1" requests miss) - $(json_num "$s0" requests miss)))
    signouts=$(($(json_num "$s1" requests signout) - $(json_num "$s0" requests signout)))
    if [ -n "$fpid" ]; then
        grep -q '^wrk_requests=' "$fout" || die "the sign-out flood against $key failed: $(tail -n 5 "$fout")"
        f_reqs=$(sed -n 's/^wrk_requests=//p' "$fout")
        f_2xx=$(sed -n 's/^wrk_status_2xx=//p' "$fout")
        f_us=$(sed -n 's/^wrk_duration_us=//p' "$fout")
        # a sign-out gets the IdP's own answer (the test IdP: 302 for a session it does not know)
    fi
    # hits may exceed wrk's count by the few requests in flight at the end; misses mean the hot
    # set was not all cached (a sign-out of an unknown session purging somebody else's answer?)
    [ "$hits" -ge "$reqs" ] || say "  signout: warning: $key $mode round $round: $hits hits for $reqs requests (misses $misses)"
    window=$((DUR + (${fpid:+1} + 0)))
    awk -v p50="$(sed -n 's/^wrk_p50_us=//p' "$out")" -v p99="$(sed -n 's/^wrk_p99_us=//p' "$out")" \
        -v rps="$(sed -n 's/^wrk_rps=//p' "$out")" -v freqs="$f_reqs" -v fus="$f_us" \
        -v ticks=$((t1 - t0)) -v hz="$CLK_TCK" -v all=$((reqs + f_reqs)) \
        -v busy=$((b1 - b0)) -v d="$window" -v hits="$hits" -v misses="$misses" -v settle_s="$settle_s" -v ticks2=$((t2 - t0)) 'BEGIN {
            # other_cores: CPU in use beyond the daemon itself (wrk, the IdP, and anybody else)
            o = (busy - ticks) / hz / d
            printf "%.3f %.3f %.0f %.0f %.2f %.2f %.2f %d %.2f\n", p50 / 1000, p99 / 1000, rps,
                freqs / (fus / 1e6), ticks / hz * 1e6 / all, (o < 0 ? 0 : o),
                misses * 100 / (hits + misses > 0 ? hits + misses : 1), settle_s,
                ticks2 / hz * 1e6 / all }' >>"$WORK/$key.$mode.runs"
    say "$(tail -n 1 "$WORK/$key.$mode.runs" | awk -v k="$key" -v m="$mode" -v r="$round" '{
        printf "  r%s %-8s %-5s p50 %6.3f  p99 %7.3f ms  %7d hits/s  %6d sign-outs/s  %6.2f us CPU/req  busy other than daemon %.2f cores",
            r, k, m, $1, $2, $3, $4, $5, $6 }')  threads $(busiest_threads "$WORK/threads.0" "$WORK/threads.1" "$window")"
    [ "$misses" = 0 ] || say "    $key $mode: $misses misses, $hits hits: the flood made cached answers miss"
    [ "$settle_s" -le 1 ] || say "    $key $mode: the daemon stayed busy $settle_s s after the run"
}

flood() {
    local name round
    say "== flood: $SESSIONS sessions x $HOSTS hosts cached; hit traffic wrk -t1 -c32 -d${DUR}s (uniform) alone and with a sign-out flood (wrk -t1 -c4, unknown sessions); $ROUNDS rounds"
    for name in "${NAMES[@]}"; do
        start_ac "$name" "$name" "$SERVER_CPU" "$WORK/$name.log"
        warm "$name"
        : >"$WORK/$name.alone.runs"
        : >"$WORK/$name.flood.runs"
        : >"$WORK/$name.control.runs"
    done
    for round in $(seq "$ROUNDS"); do
        for name in "${NAMES[@]}"; do
            run "$name" alone "$round"
            run "$name" flood "$round"
            run "$name" control "$round"
        done
    done
    for name in "${NAMES[@]}"; do
        local m
        for m in alone flood control; do
            echo "${name}_${m}_hit_p50_ms=$(median "$WORK/$name.$m.runs" 1)"
            echo "${name}_${m}_hit_p99_ms=$(median "$WORK/$name.$m.runs" 2)"
            echo "${name}_${m}_hits_per_s=$(median "$WORK/$name.$m.runs" 3)"
            echo "${name}_${m}_cpu_us_per_req=$(median "$WORK/$name.$m.runs" 5)"
            echo "${name}_${m}_cpu_us_per_req_with_after=$(median "$WORK/$name.$m.runs" 9)"
            echo "${name}_${m}_hit_traffic_miss_pct=$(median "$WORK/$name.$m.runs" 7)"
        done
        echo "${name}_flood_signouts_per_s=$(median "$WORK/$name.flood.runs" 4)"
        echo "${name}_flood_busy_after_s=$(median "$WORK/$name.flood.runs" 8)"
        # the ratio of the medians, and the ratios round by round (alone and flood of one round
        # ran back to back)
        paste "$WORK/$name.alone.runs" "$WORK/$name.flood.runs" |
            awk '{ r[NR] = $11 / $2 } END { for (i = 1; i <= NR; i++) printf "%s%.2f", (i > 1 ? "," : ""), r[i]; print "" }' \
                >"$WORK/$name.ratios"
        local ratio
        ratio=$(awk -v a="$(median "$WORK/$name.alone.runs" 2)" -v f="$(median "$WORK/$name.flood.runs" 2)" \
            'BEGIN { printf "%.2f", f / a }')
        echo "${name}_flood_p99_ratio=$ratio"
        echo "${name}_flood_p99_ratio_goal=<= 1.5 ($(awk -v r="$ratio" 'BEGIN { print (r <= 1.5) ? "met" : "NOT met" }'))"
        echo "${name}_flood_p99_ratio_rounds=$(cat "$WORK/$name.ratios")"
        # the control: the same sign-out load on CPU 1, sent to the IdP, not through the daemon
        echo "${name}_control_signouts_per_s=$(median "$WORK/$name.control.runs" 4)"
        echo "${name}_control_p99_ratio=$(awk -v a="$(median "$WORK/$name.alone.runs" 2)" \
            -v f="$(median "$WORK/$name.control.runs" 2)" 'BEGIN { printf "%.2f", f / a }')"
        echo "${name}_flood_p99_over_control=$(awk -v c="$(median "$WORK/$name.control.runs" 2)" \
            -v f="$(median "$WORK/$name.flood.runs" 2)" 'BEGIN { printf "%.2f", f / c }')"
        echo "${name}_other_cores=$(median "$WORK/$name.alone.runs" 6) / $(median "$WORK/$name.flood.runs" 6) (alone / flood: CPU busy beyond the daemon, wrk and the IdP included)"
    done
    for name in "${NAMES[@]}"; do
        stop_pids "${MAIN_PID[$name]}"
        forget_pids "${MAIN_PID[$name]}"
        grep -v '^$' "$WORK/$name.log" | head -n 3 | sed "s/^/  $name log: /" >&2
    done
}

# ---------------------------------------------------------------- (2) cross-node

xnode() {
    local name i=0 rpid rport out
    say "== cross-node: redis-server, two nodes per binary on one bus; $XNODE_COUNT sign-outs on A, B polled every 1 ms"
    free_port rport
    redis-server --save "" --appendonly no --port "$rport" --bind 127.0.0.1 --daemonize no \
        >"$WORK/redis.log" 2>&1 &
    rpid=$!
    PIDS+=("$rpid")
    for _ in $(seq 100); do
        [ "$(printf 'PING\r\n' | timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$rport; cat >&3; head -c 5 <&3" 2>/dev/null)" = "+PONG" ] && break
        kill -0 "$rpid" 2>/dev/null || die "redis-server exited: $(tail -n 3 "$WORK/redis.log")"
        sleep 0.05
    done
    head -c 32 /dev/urandom >"$WORK/hash.key"
    for name in "${NAMES[@]}"; do
        local bus="redis://127.0.0.1:$rport/authcache-signout-$$-$name"
        start_ac "$name" "$name-A" "0-$(($(nproc) - 1))" "$WORK/$name-A.log" --hash-key-file "$WORK/hash.key" --bus "$bus"
        start_ac "$name" "$name-B" "0-$(($(nproc) - 1))" "$WORK/$name-B.log" --hash-key-file "$WORK/hash.key" --bus "$bus"
        if [ "$XNODE_FILL" = 1 ]; then
            warm "$name-A"
            warm "$name-B"
        fi
        for _ in $(seq 100); do # both subscribed
            curl -s "http://127.0.0.1:${ADMIN[$name-A]}/metrics" | grep -q '^authcache_bus_connected 1' &&
                curl -s "http://127.0.0.1:${ADMIN[$name-B]}/metrics" | grep -q '^authcache_bus_connected 1' && break
            sleep 0.05
        done
        out=$WORK/xnode.$name
        python3 bench/signout_xnode.py --a "${PORT[$name-A]}" --b "${PORT[$name-B]}" --tag "$TAG" \
            --pool x --from $((i * XNODE_COUNT)) --count "$XNODE_COUNT" >"$out" 2>"$out.err" ||
            say "  signout: warning: signout_xnode.py against $name: exit $? $(tail -n 2 "$out.err")"
        sed "s/^xnode_/${name}_xnode_/" "$out"
        say "  $name: $(grep -E '^xnode_(p50|p99|max)_ms=' "$out" | tr '\n' ' ')"
        if [ "$XNODE_BEHIND" = 1 ]; then
            BENCH_TAG=$TAG BENCH_HOSTS=$HOSTS wrk -t1 -c4 -d3s -s bench/lua/signout.lua \
                "http://127.0.0.1:${PORT[$name-A]}" >"$out.flood" 2>&1
            python3 bench/signout_xnode.py --a "${PORT[$name-A]}" --b "${PORT[$name-B]}" --tag "$TAG" \
                --pool y --from $((i * 20)) --count 20 --give-up 120 >"$out.behind" 2>"$out.behind.err" ||
                say "  signout: warning: signout_xnode.py after the flood against $name: exit $? $(tail -n 2 "$out.behind.err")"
            echo "${name}_xnode_flood_signouts=$(sed -n 's/^wrk_requests=//p' "$out.flood")"
            sed -n "s/^xnode_\(p50_ms\|max_ms\|lost\|signouts\)=/${name}_xnode_behind_\1=/p" "$out.behind"
            say "  $name after a 3 s flood of $(sed -n 's/^wrk_requests=//p' "$out.flood") sign-outs on A: $(grep -E '^xnode_(p50|max)_ms=' "$out.behind" | tr '\n' ' ')"
        fi
        stop_pids "${MAIN_PID[$name-A]}" "${MAIN_PID[$name-B]}"
        forget_pids "${MAIN_PID[$name-A]}" "${MAIN_PID[$name-B]}"
        for k in A B; do grep -v '^$' "$WORK/$name-$k.log" | head -n 3 | sed "s/^/  $name-$k log: /" >&2; done
        i=$((i + 1))
    done
    for name in "${NAMES[@]}"; do
        local p99
        p99=$(sed -n 's/^xnode_p99_ms=//p' "$WORK/xnode.$name")
        echo "${name}_xnode_p99_goal=<= 100 ms ($(awk -v p="${p99:-nan}" 'BEGIN { print (p != "nan" && p <= 100) ? "met" : "NOT met" }'))"
    done
}

# ---------------------------------------------------------------- run

RES=$WORK/results.txt
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
say "signout: ${NAMES[*]}; parts: $PARTS; load average $LOAD_BEFORE"
{
    case " $PARTS " in *" flood "*) flood ;; esac
    case " $PARTS " in *" xnode "*) xnode ;; esac
    for name in "${NAMES[@]}"; do echo "${name}_binary=${BIN[$name]#"$ROOT"/}"; done
    echo "rounds=$ROUNDS"
    echo "flood=hit: wrk -t1 -c32 -d${DUR}s --latency bench/lua/hit.lua, $SESSIONS sessions x $HOSTS hosts uniform, all cached; sign-outs: wrk -t1 -c4 bench/lua/signout.lua"
    echo "pinned=$([ "$PIN" = 1 ] && echo 'daemon CPU 0; both wrk and the IdP CPU 1 (flood: cross-node not pinned)' || echo no)"
    echo "load_before=$LOAD_BEFORE"
    echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "commit=$(git describe --always --dirty 2>/dev/null || echo unknown)"
    echo "elapsed_s=$((SECONDS - T_START))"
} >"$RES"
cat "$RES"
