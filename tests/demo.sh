#!/usr/bin/env bash
# tests/demo.sh — what `make demo` runs: start the test IdP and authcached on loopback, walk a few
# sessions through the cache the way a reverse proxy would send them, and print one line per step
# (HTTP status, X-Authcache result, how often the IdP was asked for that cookie). Every line is
# computed from the real answers; a step whose result is not what the product promises is flagged
# and makes the script exit 1. Ends with a 5-second wrk run of cached hits beside the same run
# straight at the IdP.
#
# Needs build/authcached and build/test-idp (make builds them first), curl and wrk.
# Environment: BUILD (default build), DEMO_SECONDS (wrk duration, default 5).
# Everything it starts is stopped, and its /dev/shm segment removed, on exit and on Ctrl-C.
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LIB_NAME=demo
LIB_STOP_TRIES=30 # authcached drains in at most upstream-timeout + 2 s; do not wait longer than that
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
BUILD=$ROOT/${BUILD:-build}
DAEMON=$BUILD/authcached
IDP=$BUILD/test-idp
LOGDIR=$BUILD/demo
SECS=${DEMO_SECONDS:-5}
COOKIE_NAME=authentik_proxy_3f2a1b0c # the test IdP's default, matched by the authentik preset
AUTH_PATH=/outpost.goauthentik.io/auth/traefik
SHM_NAME=authcache-demo-$$

for tool in curl wrk; do
    command -v "$tool" >/dev/null || { echo "demo: $tool is not installed (make deps)" >&2; exit 2; }
done
for bin in "$DAEMON" "$IDP"; do
    [ -x "$bin" ] || { echo "demo: $bin is missing; run: make build/authcached build/test-idp" >&2; exit 2; }
done
mkdir -p "$LOGDIR"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/authcache-demo.XXXXXX")

# ---------------------------------------------------------------- cleanup

# Everything started is in PIDS (bench/lib.sh stops them on exit and on Ctrl-C).
on_cleanup() {
    rm -f "/dev/shm/$SHM_NAME"
    rm -rf "$TMP"
}
lib_traps

# ---------------------------------------------------------------- helpers

FAILED=0
fail() { # one promise broken: say so now, exit 1 at the end
    printf '   !! %s\n' "$*"
    FAILED=$((FAILED + 1))
}

newcookie() { head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

ctl() { idp_ctl "$CTL" "$@"; }                           # ctl METHOD PATH?QUERY -> JSON answer
calls() { idp_calls "$CTL" "$1"; }                       # IdP forward-auth calls for a cookie value
session() { idp_ok "$CTL" "/session?cookie=$1&user=$2&groups=$3"; } # COOKIE USER GROUPS: log in
fault() { idp_ok "$CTL" "/fault?mode=$1"; }

hdr() { # the first value of header $1 (lower case) in the last answer
    tr -d '\r' <"$TMP/h" | awk -v n="$1" 'tolower($0) ~ "^" n ":" { sub(/^[^:]*:[ \t]*/, ""); print; exit }'
}

# ask COOKIE HOST URI [PORT]: one forward-auth check as Traefik sends it. Sets STATUS, RESULT
# (X-Authcache, "-" if none), LOCATION, RETRY_AFTER and BODY.
ask() {
    local port=${4:-$AC}
    STATUS=$(curl -s --max-time 5 -D "$TMP/h" -o "$TMP/b" -w '%{http_code}' \
        -H "Cookie: $COOKIE_NAME=$1" -H "X-Forwarded-Host: $2" -H "X-Forwarded-Uri: $3" \
        -H "X-Forwarded-Proto: https" -H "X-Forwarded-Method: GET" \
        "http://127.0.0.1:$port$AUTH_PATH")
    RESULT=$(hdr x-authcache); RESULT=${RESULT:--}
    LOCATION=$(hdr location)
    RETRY_AFTER=$(hdr retry-after)
    BODY=$(head -c 200 "$TMP/b" | tr -d '\r' | head -n 1)
}

# line N LABEL WHAT [CALLS]: "N. label ........ what   IdP calls: CALLS"
line() {
    local label="$2 " what=$3 dots
    dots=$(printf '%*s' $((46 - ${#label})) '' | tr ' ' '.')
    printf '%3s %s%s %-32s %s\n' "$1." "$label" "$dots" "$what" "${4:+IdP calls: $4}"
}

now() { date +%s.%N; }

# ---------------------------------------------------------------- start

free_port IDP_PORT; free_port CTL; free_port AC; free_port ADM
"$IDP" --listen "127.0.0.1:$IDP_PORT" --control "127.0.0.1:$CTL" \
    --app app1.test --app 'app2.test;allow=admins' --quiet >"$LOGDIR/idp.log" 2>&1 &
PIDS+=($!)
wait_http test-idp "$!" "http://127.0.0.1:$CTL/healthz" "$LOGDIR/idp.log"

DAEMON_ARGS=(--listen "127.0.0.1:$AC" --admin "127.0.0.1:$ADM" --upstream "http://127.0.0.1:$IDP_PORT"
    --shm "$SHM_NAME" --fresh-ttl 5s --outage-grace 1m --upstream-timeout 1s)
"$DAEMON" "${DAEMON_ARGS[@]}" >"$LOGDIR/authcached.log" 2>&1 &
PIDS+=($!)
wait_http authcached "$!" "http://127.0.0.1:$ADM/readyz" "$LOGDIR/authcached.log"

cat <<EOF
authcache demo — a forward-auth cache between your reverse proxy and authentik

  test IdP (plays authentik's outpost)  http://127.0.0.1:$IDP_PORT   apps: app1.test (any user), app2.test (admins only)
  authcached                            http://127.0.0.1:$AC   ${DAEMON_ARGS[*]:6}
  logs                                  ${LOGDIR#"$ROOT"/}/

Each line is one forward-auth check sent the way Traefik sends it: the HTTP status authcached
answered, its X-Authcache header (hit = answered from the cache, miss/revalidated = asked the IdP),
and how many checks the IdP itself has received for that session cookie so far.

EOF

ALICE=$(newcookie); BOB=$(newcookie); CAROL=$(newcookie)
session "$ALICE" alice users
session "$BOB" bob users
session "$CAROL" carol users

# ---------------------------------------------------------------- 1. miss, then hits

BOB_SEEN=$(now)
ask "$BOB" app1.test /
c=$(calls "$BOB")
line 0 "bob signs in on app1.test (kept for later)" "$STATUS $RESULT" "$c"
[ "$STATUS" = 200 ] && [ "$RESULT" = miss ] || fail "bob's first check: expected 200 miss, got $STATUS $RESULT"

ask "$ALICE" app1.test /
c=$(calls "$ALICE")
line 1 "first request for alice on app1.test" "$STATUS $RESULT" "$c"
[ "$STATUS" = 200 ] && [ "$RESULT" = miss ] && [ "$c" = 1 ] ||
    fail "expected 200 miss and 1 IdP call, got $STATUS $RESULT and $c"

hits=0 others=""
for _ in $(seq 10); do
    ask "$ALICE" app1.test /some/page
    if [ "$STATUS" = 200 ] && [ "$RESULT" = hit ]; then hits=$((hits + 1)); else others="$others $STATUS/$RESULT"; fi
done
c=$(calls "$ALICE")
line 2 "ten more requests" "200 hit x$hits${others:+,$others}" "$c"
[ "$hits" = 10 ] && [ "$c" = 1 ] ||
    fail "expected all 10 answered from the cache with the IdP still at 1 call, got $hits hits and $c calls"

# ---------------------------------------------------------------- 2. a refusal is passed on, never cached

ask "$ALICE" app2.test /
c=$(calls "$ALICE")
line 3 "alice on app2.test (admins only)" "$STATUS ${RESULT/miss/(from IdP)}" "$c"
[ "$STATUS" = 403 ] && [ "$RESULT" != hit ] && [ "$c" = 2 ] ||
    fail "expected the IdP's 403 (IdP calls 2), got $STATUS $RESULT, IdP calls $c"

ask "$ALICE" app2.test /
c=$(calls "$ALICE")
line 4 "again (a refusal is never cached)" "$STATUS ${RESULT/miss/(from IdP)}" "$c"
[ "$STATUS" = 403 ] && [ "$RESULT" != hit ] && [ "$c" = 3 ] ||
    fail "expected the IdP asked again (403, IdP calls 3), got $STATUS $RESULT, IdP calls $c"

# ---------------------------------------------------------------- 3. sign-out

# The sign-out route carries authcached as a forwardAuth middleware: it purges alice's answers, then
# passes on the IdP's own answer to the sign-out (the test IdP, like authentik's outpost, ends her
# sessions and redirects): a sign-out never grants by itself.
ask "$ALICE" app1.test /outpost.goauthentik.io/sign_out
line 5 "sign-out (cache purged, the IdP's answer)" "$STATUS $RESULT"
[ "$STATUS" = 302 ] && [ "$RESULT" = signout ] ||
    fail "expected the IdP's 302 with X-Authcache signout, got $STATUS $RESULT"

before=$(calls "$ALICE")
ask "$ALICE" app1.test /
c=$(calls "$ALICE")
what="$STATUS $RESULT"
case $LOCATION in */authorize/*) what="$STATUS to login" ;; esac
line 6 "alice after sign-out" "$what" "$c"
[ "$STATUS" = 302 ] && [ "$RESULT" != hit ] && [ "$c" = $((before + 1)) ] ||
    fail "expected the IdP's 302 to its login page, got $STATUS $RESULT (Location: $LOCATION), IdP calls $before -> $c"

# She logs in again: the browser comes back through the login callback, which always goes to the
# IdP (it turns the same cookie value into a logged-in session) and is never cached.
ask "$ALICE" app1.test "/outpost.goauthentik.io/callback?X-authentik-auth-callback=true&code=alice&groups=users"
c=$(calls "$ALICE")
line 7 "alice logs in again (login callback)" "$STATUS $RESULT" "$c"
[ "$STATUS" = 302 ] && [ "$RESULT" = bypass ] || fail "expected the IdP's 302 passed through (bypass), got $STATUS $RESULT"

ask "$ALICE" app1.test /
c=$(calls "$ALICE")
line 8 "alice back on app1.test" "$STATUS $RESULT" "$c"
[ "$STATUS" = 200 ] && [ "$RESULT" = miss ] || fail "expected 200 miss, got $STATUS $RESULT"

# ---------------------------------------------------------------- 4. IdP outage

# bob's answer must be older than --fresh-ttl (5 s) for the outage to matter to it.
wait_s=$(awk -v a="$BOB_SEEN" -v b="$(now)" 'BEGIN { w = a + 5.3 - b; printf "%.1f", (w > 0 ? w : 0) }')
echo "    (waiting ${wait_s} s until bob's answer is past --fresh-ttl 5s, then the IdP refuses connections)"
sleep "$wait_s"
fault refuse

ask "$BOB" app1.test /
line 9 "IdP outage: bob (cached)" "$STATUS $RESULT" "$(calls "$BOB")"
[ "$STATUS" = 200 ] && [ "$RESULT" = stale ] || fail "expected bob's held answer served stale (200 stale), got $STATUS $RESULT"

ask "$CAROL" app1.test /
what="$STATUS $RESULT"
[ -n "$RETRY_AFTER" ] && what="$what, Retry-After $RETRY_AFTER"
line 10 "IdP outage: carol (never seen)" "$what" "$(calls "$CAROL")"
echo "        body: $BODY"
[ "$STATUS" = 503 ] && [ "$RESULT" = unavailable ] && [ -n "$RETRY_AFTER" ] ||
    fail "expected 503 unavailable with Retry-After, got $STATUS $RESULT (Retry-After: ${RETRY_AFTER:-none})"

fault ok
ask "$BOB" app1.test /
note=""
# Should the circuit breaker have opened, its probe closes it within 0.5 s of the IdP's return.
for _ in 1 2 3 4 5; do
    [ "$RESULT" = stale ] || break
    sleep 0.3
    ask "$BOB" app1.test /
    note=" (after the breaker's probe)"
done
line 11 "IdP back: bob" "$STATUS $RESULT$note" "$(calls "$BOB")"
[ "$STATUS" = 200 ] && [ "$RESULT" = revalidated ] || fail "expected 200 revalidated, got $STATUS $RESULT"

# ---------------------------------------------------------------- 5. throughput

# wrk: alice's cached answer, -t1 -c32, against authcached and straight at the IdP.
bench() { # bench PORT -> sets RPS, NON2XX, ERRS
    wrk -t1 -c32 -d"${SECS}s" \
        -H "Cookie: $COOKIE_NAME=$ALICE" -H "X-Forwarded-Host: app1.test" -H "X-Forwarded-Uri: /" \
        -H "X-Forwarded-Proto: https" -H "X-Forwarded-Method: GET" \
        "http://127.0.0.1:$1$AUTH_PATH" >"$TMP/wrk" 2>&1
    RPS=$(awk '/^Requests\/sec:/ { printf "%d", $2 }' "$TMP/wrk")
    REQS=$(awk '/ requests in / { print $1 }' "$TMP/wrk")
    NON2XX=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$TMP/wrk")
    ERRS=$(awk '/Socket errors:/ { sub(/.*Socket errors: */, ""); print }' "$TMP/wrk")
    if [ -z "$RPS" ]; then
        echo "demo: wrk failed:" >&2
        cat "$TMP/wrk" >&2
        exit 1
    fi
}

echo
echo "Throughput: wrk -t1 -c32 -d${SECS}s, alice's cookie on app1.test (wrk and the servers share $(nproc) cores)"
ask "$ALICE" app1.test / # cache warm and fresh before the run
c0=$(calls "$ALICE")
bench "$AC"
AC_RPS=$RPS AC_REQS=$REQS
c1=$(calls "$ALICE")
printf '    %-38s %8s req/s   (%s requests; the IdP was asked %s time(s))\n' \
    "authcached, cached hits" "$AC_RPS" "$AC_REQS" "$((c1 - c0))"
[ -z "$NON2XX" ] && [ -z "$ERRS" ] || fail "authcached run: non-2xx ${NON2XX:-0}, socket errors ${ERRS:-none}"
bench "$IDP_PORT"
IDP_RPS=$RPS
printf '    %-38s %8s req/s\n' "test IdP straight (every check asked)" "$IDP_RPS"
[ -z "$NON2XX" ] && [ -z "$ERRS" ] || fail "IdP run: non-2xx ${NON2XX:-0}, socket errors ${ERRS:-none}"
awk -v a="$AC_RPS" -v b="$IDP_RPS" 'BEGIN { if (b > 0) printf "    ratio %.1fx (the test IdP is a minimal C server; a real outpost does more work per check)\n", a / b }'

echo
if [ "$FAILED" -gt 0 ]; then
    echo "demo: FAILED — $FAILED step(s) did not give the promised result (see !! above; logs in ${LOGDIR#"$ROOT"/}/)" >&2
    exit 1
fi
echo "demo: every step behaved as promised."
