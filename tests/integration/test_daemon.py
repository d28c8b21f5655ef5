"""test_daemon.py — authcached end to end over loopback, against the test IdP (build/test-idp):
miss/hit and byte-identical replay, single flight, revalidation and refresh-ahead, per-host and
per-URI keys, cookies that do not change the key, open paths, pass-through of the IdP's refusals,
sign-out, authentik's login-flow markers, the admin API, flags and exit statuses, SIGTERM drain and
restart on the same segment, malformed requests and pipelining, heads arriving in pieces, requests
without a credential.
The IdP outage cases (stale, 503, lifetimes, hang) are in test_daemon_outage.py.

Every case starts its own authcached (fresh segment /dev/shm/authcache-it-<pid>-<n>, removed after)
and, at its end, stops it with SIGTERM (exit status 0 expected) and fails if the daemon's log holds
a sanitizer report. AUTHCACHED_BIN picks another binary, e.g. the ASan+UBSan build:
    AUTHCACHED_BIN=build/san-address-undefined/authcached python3 tests/integration/test_daemon.py

Run from the repo root: python3 tests/integration/test_daemon.py [CASE...]
"""

import json
import os
import re
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from daemon_util import (ANY, AUTH, admin_get, admin_post, cookie, daemon, describe,  # noqa: E402
                         expect, fa, identity, metric, raw_exchange, timed)
import daemon_util  # noqa: E402
from harness import case, check, eq  # noqa: E402

SIGN_OUT = "/outpost.goauthentik.io/sign_out"


def setup():
    daemon_util.setup_idp()


def idp():
    return daemon_util.IDP


# ---------------------------------------------------------------- 1. miss then hit

@case
def miss_then_hit_byte_identical():
    v = cookie("hit")
    idp().session(v, "alice", ["users"])
    with daemon() as d:
        req = harness.build_request("GET", AUTH, harness.auth_headers("app1.test", "/x", v))
        miss_status, miss_lines, _ = raw_exchange(d.port, req)
        eq(miss_status, b"HTTP/1.1 200 OK", "status line of the first request")
        xac = [l for l in miss_lines if l.lower().startswith(b"x-authcache:")]
        eq(xac, [b"X-Authcache: miss"], "X-Authcache of the first request")
        eq(idp().calls(v), 1, "IdP calls after the miss")
        for i in range(10):
            status, lines, body = raw_exchange(d.port, req)
            eq(status, b"HTTP/1.1 200 OK", f"status line of hit #{i + 1}")
            eq([l for l in lines if l.lower().startswith(b"x-authcache:")], [b"X-Authcache: hit"],
               f"X-Authcache of request #{i + 2}")
            eq([l for l in lines if not l.lower().startswith(b"x-authcache:")],
               [l for l in miss_lines if not l.lower().startswith(b"x-authcache:")],
               f"header lines of hit #{i + 1} vs the miss (X-Authcache aside)")
            eq(body, b"", "body of a hit")
        eq(idp().calls(v), 1, "IdP calls after ten hits")
        # Keep-alive: hits over one reused connection.
        with harness.Conn(d.port) as c:
            for i in range(3):
                expect(fa(d, "app1.test", "/y", v, conn=c), 200, "hit", "alice", f"keep-alive #{i}")
        eq(idp().calls(v), 1, "IdP calls after keep-alive hits")
        # The miss carried the IdP's identity header lines exactly (name case, order, bytes).
        _, direct_lines, _ = raw_exchange(idp().port, req)
        want = [l for l in direct_lines if l.lower().startswith(b"x-authentik-")]
        got = [l for l in miss_lines if l.lower().startswith(b"x-authentik-")]
        check(len(want) >= 7, "the IdP's own answer has identity headers", direct_lines)
        eq(got, want, "identity header lines of the miss vs the IdP's own answer")


# ---------------------------------------------------------------- 2. single flight

@case
def single_flight_200_concurrent():
    n = 200
    v = cookie("flight")
    idp().session(v, "sf-user")
    with daemon() as d:
        req = harness.build_request("GET", AUTH, harness.auth_headers("app1.test", "/", v))
        conns = [harness.Conn(d.port, timeout=15) for _ in range(n)]
        results, errors = [None] * n, []
        barrier = threading.Barrier(n, timeout=15)

        def one(i):
            try:
                barrier.wait()
                conns[i].send(req)
                results[i] = conns[i].read_response()
            except Exception as e:  # reported below
                errors.append(f"#{i}: {type(e).__name__}: {e}")

        idp().fault(latency_ms=300)
        try:
            threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
            t0 = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join(20)
            elapsed = time.monotonic() - t0
        finally:
            idp().fault(latency_ms=0)
            for c in conns:
                c.close()
        eq(errors, [], "client errors")
        kinds = {}
        for i, r in enumerate(results):
            check(r is not None, f"answer #{i} arrived")
            expect(r, 200, None, "sf-user", f"concurrent request #{i}")
            kinds[r.header("X-Authcache")] = kinds.get(r.header("X-Authcache"), 0) + 1
        check(set(kinds) <= {"miss", "hit"}, "X-Authcache of every answer is miss or hit", kinds)
        check(kinds.get("miss", 0) >= 1, "at least one miss", kinds)
        eq(idp().calls(v), 1,
           f"IdP calls for {n} concurrent first requests ({kinds}, {elapsed:.2f}s)")
        stats = json.loads(admin_get(d, "/v1/stats").body)
        eq(stats["idp"]["requests"], 1, "authcache's own count of IdP requests")

        # A flight that ends in a refusal: every waiter asks the IdP itself and gets its answer,
        # in what is left of its --upstream-timeout (500 ms): the leader's call and its own take
        # 2 x 100 ms. (test_daemon_outage.py: when that is not enough, a 503 in time.)
        u, k = cookie("flight-unknown"), 20
        req = harness.build_request("GET", AUTH, harness.auth_headers("app1.test", "/", u))
        conns = [harness.Conn(d.port, timeout=15) for _ in range(k)]
        idp().fault(latency_ms=100)
        try:
            for c in conns:
                c.send(req)
            got = []
            for c in conns:
                r = c.read_response()
                got.append((r.status, r.header("X-Authcache")))
        finally:
            idp().fault(latency_ms=0)
            for c in conns:
                c.close()
        eq(got, [(302, "miss")] * k, f"{k} concurrent requests with an unknown cookie")
        eq(idp().calls(u), k, "IdP calls: after a refusal each waiter asked the IdP itself")

    # --fresh-ttl 0 (always revalidate): concurrent misses still share one IdP call.
    z = cookie("flight0")
    idp().session(z, "zed")
    with daemon({"--fresh-ttl": "0"}) as d:
        req = harness.build_request("GET", AUTH, harness.auth_headers("app1.test", "/", z))
        conns = [harness.Conn(d.port, timeout=15) for _ in range(10)]
        idp().fault(latency_ms=300)
        try:
            for c in conns:
                c.send(req)
            got = []
            for c in conns:
                r = c.read_response()
                got.append((r.status, r.header("X-Authcache"), r.header("X-authentik-username")))
        finally:
            idp().fault(latency_ms=0)
            for c in conns:
                c.close()
        eq(got, [(200, "miss", "zed")] * 10, "10 concurrent first requests with --fresh-ttl 0")
        eq(idp().calls(z), 1, "IdP calls for them")
        expect(fa(d, "app1.test", "/", z), 200, "revalidated", "zed", "the next one (fresh-ttl 0)")
        eq(idp().calls(z), 2, "IdP calls after it")


# ---------------------------------------------------------------- 3. revalidation

@case
def revalidation_and_refresh_ahead():
    """Past fresh-ttl a request revalidates in-band; in the last fifth of fresh-ttl a hit starts one
    background call and does not wait for it. fresh-ttl 3 s, upstream-timeout 2 s: the refresh-ahead
    window (the smaller of fresh-ttl / 5 and upstream-timeout) is 600 ms wide. A loaded
    machine can make the test late: an attempt whose timing slipped is repeated with a new session
    (at most 3)."""
    with daemon({"--fresh-ttl": "3s", "--upstream-timeout": "2s"}) as d:
        for attempt in range(3):
            v = cookie(f"reval{attempt}")
            idp().session(v, "rita")
            expect(fa(d, "app1.test", "/", v), 200, "miss", "rita", "first request")
            eq(idp().calls(v), 1, "IdP calls after the miss")
            expect(fa(d, "app1.test", "/", v), 200, "hit", "rita", "second request")
            time.sleep(3.1)
            sent = time.monotonic()
            expect(fa(d, "app1.test", "/", v), 200, "revalidated", "rita",
                   "request after fresh-ttl")
            got = time.monotonic()
            eq(idp().calls(v), 2, "IdP calls after the revalidation")
            # Last fifth of fresh-ttl ([2.4 s, 3 s) after the confirmation): a hit that starts
            # one background revalidation. The IdP is slow now; the client must not wait for it.
            idp().fault(latency_ms=1000)
            try:
                time.sleep(max(0.0, got + 2.5 - time.monotonic()))
                r, dt = timed(lambda: fa(d, "app1.test", "/", v))
                ahead = time.monotonic()
                if ahead > sent + 2.9:
                    continue  # not clearly inside the last fifth: try again
                expect(r, 200, "hit", "rita", "request in the last fifth of fresh-ttl")
                check(dt < 0.8, "the refresh-ahead hit is answered without waiting for the IdP "
                      "(IdP latency 1 s)", f"{dt:.3f}s")
                for i in range(3):  # while the background call is out: hits, no second call
                    expect(fa(d, "app1.test", "/", v), 200, "hit", "rita",
                           f"refresh-ahead hit #{i + 2}")
                harness.wait_for(lambda: idp().calls(v) == 3, timeout=3.0,
                                 what="one background IdP call after the refresh-ahead hit "
                                      f"(calls now {idp().calls(v)})")
            finally:
                idp().fault(latency_ms=0)
            # The background answer (1 s later) was stored: past the old fresh-ttl, a hit.
            time.sleep(max(0.0, ahead + 1.3 - time.monotonic()))
            expect(fa(d, "app1.test", "/", v), 200, "hit", "rita",
                   "request past the old fresh-ttl after the background revalidation")
            eq(idp().calls(v), 3, "IdP calls: the background answer serves the next requests "
               "(four hits in the last fifth started one call)")
            return
        raise AssertionError("three attempts all too late for the last fifth of fresh-ttl "
                             "(machine overloaded)")


@case
def refresh_ahead_starts_no_earlier_than_the_idp_needs():
    """Refresh ahead within min(fresh-ttl / 5, upstream-timeout) of the end: with fresh-ttl 4 s and
    upstream-timeout 300 ms, a hit 650 ms before the end asks nothing, one 250 ms before does.
    A loaded machine can make the test late: an attempt whose timing slipped is repeated with a
    new session (at most 3)."""
    with daemon({"--fresh-ttl": "4s", "--upstream-timeout": "300ms"}) as d:
        for attempt in range(3):
            v = cookie(f"ahead{attempt}")
            idp().session(v, "abe")
            t0 = time.monotonic()
            expect(fa(d, "app1.test", "/", v), 200, "miss", "abe", "first request")
            got = time.monotonic()  # the answer's fresh_until lies in [t0 + 4 s, got + 4 s]
            time.sleep(max(0.0, got + 3.35 - time.monotonic()))
            r = fa(d, "app1.test", "/", v)
            if time.monotonic() > t0 + 3.65:
                continue  # not clearly before the last 300 ms
            expect(r, 200, "hit", "abe", "650 ms before the end")
            time.sleep(0.2)
            eq(idp().calls(v), 1, "no IdP call for a hit in the last fifth but before the last "
               "300 ms")
            time.sleep(max(0.0, got + 3.75 - time.monotonic()))
            r = fa(d, "app1.test", "/", v)
            if time.monotonic() > t0 + 3.95:
                continue  # perhaps past fresh-ttl: a revalidation, not a refresh ahead
            expect(r, 200, "hit", "abe", "250 ms before the end")
            harness.wait_for(lambda: idp().calls(v) == 2, timeout=2.0,
                             what="one background IdP call in the last 300 ms")
            return
        raise AssertionError("3 attempts, each too late for its timing (machine overloaded?)")


# ---------------------------------------------------------------- 3b. what revalidation learns

@case
def revalidation_replaces_and_refusal_drops_the_held_answer():
    v, w = cookie("chg"), cookie("gone")
    idp().session(v, "vera", ["g1"])
    idp().session(w, "walt")
    with daemon({"--fresh-ttl": "1s", "--outage-grace": "30s"}) as d:
        r = fa(d, "app1.test", "/", v)
        expect(r, 200, "miss", "vera", "first")
        eq(r.header("X-authentik-groups"), "g1", "groups at first")
        idp().session(v, "vera", ["g2"])  # the IdP's answer changes
        expect(fa(d, "app1.test", "/", w), 200, "miss", "walt", "w first")
        idp().end(cookie=w)  # the IdP ends w's session
        r = fa(d, "app1.test", "/", v)
        expect(r, 200, "hit", "vera", "within fresh-ttl")
        eq(r.header("X-authentik-groups"), "g1", "groups within fresh-ttl (held answer)")
        expect(fa(d, "app1.test", "/", w), 200, "hit", "walt", "w within fresh-ttl")
        time.sleep(1.05)
        r = fa(d, "app1.test", "/", v)
        expect(r, 200, "revalidated", "vera", "after fresh-ttl")
        eq(r.header("X-authentik-groups"), "g2", "groups after revalidation")
        r = fa(d, "app1.test", "/", v)
        expect(r, 200, "hit", "vera", "after revalidation")
        eq(r.header("X-authentik-groups"), "g2", "groups replayed after revalidation")
        r = fa(d, "app1.test", "/", w)
        expect(r, 302, "revalidated", None, "w after fresh-ttl: the IdP's refusal")
        eq(r.header("Cache-Control"), "no-store", "Cache-Control on the refusal")
        expect(fa(d, "app1.test", "/", w), 302, "miss", None,
               "w again: the held answer was dropped")
        # ...so an outage cannot bring it back.
        idp().fault("500")
        try:
            r = fa(d, "app1.test", "/", w)
            check(r.status == 503, "w in an outage after its refusal: 503, never the old answer",
                  describe(r))
        finally:
            idp().fault("ok")

    # The same through a refresh-ahead (background) revalidation.
    x = cookie("gone-bg")
    idp().session(x, "xena")
    with daemon({"--fresh-ttl": "1s", "--outage-grace": "30s"}) as d:
        expect(fa(d, "app1.test", "/", x), 200, "miss", "xena", "x first")
        got = time.monotonic()
        idp().end(cookie=x)
        time.sleep(0.85)
        expect(fa(d, "app1.test", "/", x), 200, "hit", "xena", "x in the last fifth of fresh-ttl")
        harness.wait_for(lambda: idp().calls(x) == 2, timeout=3.0, what="the background call")
        time.sleep(max(0.1, got + 1.05 - time.monotonic()))
        idp().fault("500")
        try:
            r = fa(d, "app1.test", "/", x)
            check(r.status == 503, "x in an outage after the background refusal: 503, never the "
                  "old answer", describe(r))
        finally:
            idp().fault("ok")


# ---------------------------------------------------------------- 3c. clients that leave

@case
def clients_leaving_mid_flight():
    v, u = cookie("orph"), cookie("orph1")
    idp().session(v, "olly")
    idp().session(u, "uma")
    with daemon() as d:
        idp().fault(latency_ms=300)
        try:
            # One request, its client gone at once: the IdP call still finishes and stores.
            with harness.Conn(d.port) as c:
                c.send(harness.build_request("GET", AUTH,
                                             harness.auth_headers("app1.test", "/", u)))
                harness.wait_for(lambda: idp().calls(u) == 1, timeout=3.0, what="the call left")
            # Six on one key; four leave while waiting (the leader among them).
            req = harness.build_request("GET", AUTH, harness.auth_headers("app1.test", "/", v))
            conns = [harness.Conn(d.port, timeout=5) for _ in range(6)]
            for c in conns:
                c.send(req)
                time.sleep(0.005)
            for c in conns[:4]:
                c.close()
            for i, c in enumerate(conns[4:]):
                expect(c.read_response(), 200, ANY, "olly", f"a waiter that stayed #{i + 1}")
                c.close()
            time.sleep(0.35)
        finally:
            idp().fault(latency_ms=0)
        expect(fa(d, "app1.test", "/", u), 200, "hit", "uma", "stored by the left client's call")
        eq(idp().calls(u), 1, "IdP calls of the left client's session")
        expect(fa(d, "app1.test", "/", v), 200, "hit", "olly", "after the waiters left")
        eq(idp().calls(v), 1, "IdP calls for the six")


# ---------------------------------------------------------------- 4. per-host scoping

@case
def per_host_scoping_and_refusals_not_cached():
    v = cookie("host")
    idp().session(v, "bob", ["users"])
    with daemon() as d:
        r = fa(d, "app2.test", "/", v)
        expect(r, 403, "miss", None, "app2 before app1 is cached")
        eq(r.body, b"access denied: user is not in the allowed group", "403 body from the IdP")
        eq(idp().calls(v), 1, "IdP calls")
        expect(fa(d, "app1.test", "/", v), 200, "miss", "bob", "app1 first")
        expect(fa(d, "app1.test", "/", v), 200, "hit", "bob", "app1 second")
        eq(idp().calls(v), 2, "IdP calls after app1 is cached")
        for i in range(3):
            r = fa(d, "app2.test", "/", v)
            expect(r, 403, "miss", None, f"app2 #{i + 1} after app1 is cached")
            eq(r.header("Cache-Control"), "no-store", "Cache-Control added to the 403")
            eq(idp().calls(v), 3 + i, f"IdP calls after app2 #{i + 1}: refusals are never cached")
        expect(fa(d, "app1.test", "/", v), 200, "hit", "bob", "app1 after the refusals")
        eq(idp().calls(v), 5, "IdP calls at the end")


# ---------------------------------------------------------------- 5. other cookies

@case
def other_cookies_do_not_change_the_key():
    v, v2 = cookie("ck"), cookie("ck2")
    idp().session(v, "carol")
    idp().session(v2, "carol")
    name = harness.IDP_COOKIE
    with daemon() as d:
        expect(fa(d, "app1.test", "/", v), 200, "miss", "carol", "first request")
        variants = [
            [("Cookie", f"{name}={v}")],
            [("Cookie", f"foo=1; {name}={v}; bar=2")],
            [("Cookie", f"bar=2; foo=1; {name}={v}")],
            [("Cookie", f"{name}={v}; foo=changed")],
            [("Cookie", "foo=1"), ("Cookie", f"{name}={v}"), ("Cookie", "bar=2")],
            [("Cookie", f"foo=1;{name}={v};bar=2")],
        ]
        for i, hdrs in enumerate(variants):
            r = fa(d, "app1.test", "/", None, headers=hdrs)
            expect(r, 200, "hit", "carol", f"cookie variant {hdrs!r}")
        eq(idp().calls(v), 1, "IdP calls after the cookie variants")
        expect(fa(d, "app1.test", "/", None, headers=[("Cookie", f"foo=1; {name}={v2}; bar=2")]),
               200, "miss", "carol", "another session cookie value")
        eq(idp().calls(v2), 1, "IdP calls for the other value")
        expect(fa(d, "app1.test", "/", v2), 200, "hit", "carol", "the other value again")
        r = fa(d, "app1.test", "/", None, headers=[("Cookie", f"foo=1; {name}={v}x")])
        expect(r, 302, "miss", None, "a changed (unknown) session cookie value")
        eq(idp().calls(v), 1, "IdP calls for the first value at the end")


# ---------------------------------------------------------------- 6. open path

@case
def open_path_answer_is_not_stored():
    v = cookie("open")  # looks valid, unknown to the IdP
    with daemon() as d:
        r = fa(d, "open.test", "/public/x", v)
        expect(r, 200, "miss", None, "unknown cookie on the open path")
        eq(identity(r), [], "identity headers on the open path")
        eq(idp().calls(v), 1, "IdP calls")
        r = fa(d, "open.test", "/private", v)
        expect(r, 302, "miss", None, "the same cookie outside the open path")
        check((r.header("Location") or "").startswith("https://idp.test/application/o/authorize/"),
              "the IdP's login redirect", r.header("Location"))
        eq(idp().calls(v), 2, "IdP calls: the open path's 200 was not stored")
        expect(fa(d, "open.test", "/public/x", v), 200, "miss", None, "open path again")
        eq(idp().calls(v), 3, "IdP calls: asked again for the open path")
        expect(fa(d, "open.test", "/private", v), 302, "miss", None, "outside again")
        eq(idp().calls(v), 4, "IdP calls at the end")
        stats = json.loads(admin_get(d, "/v1/stats").body)
        eq(stats["cache"]["entries"], 0, "entries held")


# ---------------------------------------------------------------- 7. key scope uri

@case
def key_scope_uri():
    v = cookie("uri")
    idp().session(v, "ursula")
    with daemon({"--key-scope": "uri"}) as d:
        expect(fa(d, "app1.test", "/a", v), 200, "miss", "ursula", "/a first")
        expect(fa(d, "app1.test", "/a", v), 200, "hit", "ursula", "/a second")
        # Authelia's rules match the query too: /a?q=1 is another question.
        expect(fa(d, "app1.test", "/a?q=1", v), 200, "miss", "ursula", "/a with a query")
        eq(idp().calls(v), 2, "IdP calls after /a and /a?q=1")
        expect(fa(d, "app1.test", "/b", v), 200, "miss", "ursula", "/b first")
        eq(idp().calls(v), 3, "IdP calls after /b: /a's answer is not served for /b")
        expect(fa(d, "app1.test", "/b", v), 200, "hit", "ursula", "/b second")
        expect(fa(d, "app1.test", "/a", v), 200, "hit", "ursula", "/a third")
        r = fa(d, "app1.test", "/a", v, fwd_method="POST")
        expect(r, 200, "miss", "ursula", "/a with X-Forwarded-Method POST")
        eq(idp().calls(v), 4, "IdP calls at the end")
        # Network rules: another client address is another question.
        r = fa(d, "app1.test", "/a", v, headers=[("X-Forwarded-For", "192.0.2.9")])
        expect(r, 200, "miss", "ursula", "/a from another client address")
        r = fa(d, "app1.test", "/a", v, headers=[("X-Forwarded-For", "192.0.2.9")])
        expect(r, 200, "hit", "ursula", "/a from that address again")


# ---------------------------------------------------------------- 8. pass-through

def _norm_state(line):
    return re.sub(rb"state=[0-9a-f]+", b"state=*", line)


@case
def login_redirect_passed_through_byte_faithful():
    v = cookie("redir")  # unknown to the IdP: it keeps the value in its Set-Cookie
    with daemon() as d:
        for kind, want_status in (("traefik", b"HTTP/1.1 302 Found"),
                                  ("nginx", b"HTTP/1.1 401 Unauthorized")):
            path = f"/outpost.goauthentik.io/auth/{kind}"
            req = harness.build_request("GET", path,
                                        harness.auth_headers("app1.test", "/wanted?a=b", v))
            before = idp().calls(v)
            d_status, d_lines, d_body = raw_exchange(d.port, req)
            i_status, i_lines, i_body = raw_exchange(idp().port, req)
            eq(idp().calls(v), before + 2,
               f"{kind}: IdP calls (one through authcached, one direct)")
            eq(d_status, want_status, f"{kind}: status line")
            eq(d_status, i_status, f"{kind}: status line vs the IdP's")
            eq(d_body, i_body, f"{kind}: body vs the IdP's")

            def framing(l):
                return l.lower().split(b":")[0] in (b"content-length", b"connection")
            want = [_norm_state(l) for l in i_lines if not framing(l)]
            got = [_norm_state(l) for l in d_lines if not framing(l) and
                   l.lower().split(b":")[0] not in (b"x-authcache", b"cache-control")]
            eq(got, want, f"{kind}: header lines (Content-Length aside, state= normalised)")
            check(any(l.startswith(b"Set-Cookie: ") for l in got), f"{kind}: Set-Cookie kept", got)
            eq([l for l in d_lines if l.lower().startswith(b"cache-control:")],
               [b"Cache-Control: no-store"], f"{kind}: Cache-Control added")
            eq([l for l in d_lines if l.lower().startswith(b"x-authcache:")],
               [b"X-Authcache: miss"], f"{kind}: X-Authcache")
            eq([l for l in d_lines if l.lower().startswith(b"content-length:")],
               [b"Content-Length: %d" % len(d_body)], f"{kind}: Content-Length")
        # Nothing stored: asked again, still the redirect.
        before = idp().calls(v)
        expect(fa(d, "app1.test", "/", v), 302, "miss", None, "the same cookie again")
        eq(idp().calls(v), before + 1, "IdP calls: the redirect was not stored")
        # Without any cookie: a bypass, the IdP's fresh cookie passed on.
        r = fa(d, "app1.test", "/", None)
        expect(r, 302, "bypass", None, "no cookie")
        check(re.match(re.escape(harness.IDP_COOKIE) + r"=[A-Za-z0-9]{32}; ",
                       r.header("Set-Cookie") or ""), "the IdP's new session cookie",
              r.header("Set-Cookie"))
        eq(r.header("Cache-Control"), "no-store", "Cache-Control on the bypassed redirect")
        eq(json.loads(admin_get(d, "/v1/stats").body)["cache"]["entries"], 0, "entries held")


# ---------------------------------------------------------------- 12. sign-out

@case
def an_answer_in_flight_is_not_kept_after_a_purge():
    """The IdP takes 1.5 s to answer (latency) while the user is purged through the admin API; the
    answer then reaches the request that asked, but the next request asks the IdP again
    instead of being served an answer older than the purge. Same for a purge by session."""
    for how in ("user", "session"):
        c = cookie(f"inflight-{how}")
        idp().session(c, "ida")
        with daemon({"--upstream-timeout": "5s"}) as d:
            box = {}

            def ask():
                box["r"] = fa(d, "app1.test", "/", c, timeout=10)

            idp().fault(latency_ms=1500)
            try:
                t = threading.Thread(target=ask)
                t.start()
                harness.wait_for(lambda: daemon_util.metric(admin_get(d, "/metrics").body,
                                                            "authcache_idp_requests_total") >= 1,
                                 what="the miss reached the IdP")
                q = "user=ida" if how == "user" else f"session={c}"
                eq(admin_post(d, f"/v1/purge?{q}").status, 200, f"purge by {how}")
                t.join(10)
            finally:
                idp().fault(latency_ms=0)
            expect(box.get("r"), 200, "miss", "ida", f"{how}: the request in flight")
            calls = idp().calls(c)
            expect(fa(d, "app1.test", "/", c), 200, "miss", "ida",
                   f"{how}: the next request, after the purge")
            eq(idp().calls(c), calls + 1, f"{how}: IdP calls for the next request")


@case
def sign_out_purges_the_user():
    """X-Forwarded-Uri at the sign-out path (exactly, after resolving "." and ".."): what the cache
    knows of the session's user is purged (every session of that user, on every host), and the
    answer is the IdP's own to that very request, passed on and never stored: a sign-out never
    grants by itself (the test IdP ends the user's sessions and redirects, as authentik's outpost
    does). Before, authcached answered 200 by itself."""
    a1, a2, b1 = cookie("a1"), cookie("a2"), cookie("b1")
    for v, u in ((a1, "alice-so"), (a2, "alice-so"), (b1, "bob-so")):
        idp().session(v, u)
    with daemon() as d:
        expect(fa(d, "app1.test", "/", a1), 200, "miss", "alice-so", "a1 on app1")
        expect(fa(d, "app3.test", "/", a1), 200, "miss", "alice-so", "a1 on app3")
        expect(fa(d, "app1.test", "/", a2), 200, "miss", "alice-so", "a2 on app1")
        expect(fa(d, "app1.test", "/", b1), 200, "miss", "bob-so", "b1 on app1")
        expect(fa(d, "app3.test", "/", a1), 200, "hit", "alice-so", "a1 on app3 again")
        expect(fa(d, "app3.test", SIGN_OUT + "side", a1), 200, "hit", "alice-so",
               "a path that only begins like the sign-out path")
        expect(fa(d, "app3.test", SIGN_OUT + "/../../admin", a1), 200, "hit", "alice-so",
               "a path that leads out of the sign-out path (/admin)")
        calls = idp().calls(a1)
        r = fa(d, "app1.test", SIGN_OUT, a1)
        eq(r.status, 302, "sign-out: the IdP's own answer")
        eq(r.header("X-Authcache"), "signout", "sign-out: X-Authcache")
        check(r.header("Location"), "the IdP's redirect passed on", r.headers)
        eq(identity(r), [], "sign-out: no identity headers")
        eq(idp().calls(a1), calls + 1, "IdP calls of a1: the sign-out itself")
        # The IdP ended alice's sessions: nothing of hers comes from the cache any more.
        for host, v, what in (("app1.test", a1, "a1 on app1"), ("app3.test", a1, "a1 on app3"),
                              ("app1.test", a2, "alice's other session")):
            r = fa(d, host, "/", v)
            eq((r.status, r.header("X-Authcache")), (302, "miss"), f"{what} after the sign-out")
        expect(fa(d, "app1.test", "/", b1), 200, "hit", "bob-so", "another user after sign-out")
        # A session the cache never saw, and no cookie at all: the IdP's answer all the same.
        for v, what in ((cookie("nobody"), "an unknown session"), (None, "no cookie")):
            r = fa(d, "app1.test", SIGN_OUT + "?x=1", v)
            eq((r.status, r.header("X-Authcache")), (302, "signout"), f"sign-out of {what}")
        # While the IdP is down a sign-out gets 503, never a 200 of authcached's own.
        idp().fault("refuse")
        try:
            r = fa(d, "app1.test", SIGN_OUT, b1)
            eq(r.status, 503, "a sign-out while the IdP is down")
        finally:
            idp().fault("ok")
        expect(fa(d, "app1.test", "/", b1), 200, "miss", "bob-so", "b1 after its sign-out")


@case
def sign_outs_paced():
    """--signout-rate: sign-outs go to the IdP at most that many a second (burst: one second's
    worth); more wait their turn, and those whose turn would come after --upstream-timeout get 503
    at once, unsent. Never a 2xx of authcached's own; a cached session stays a hit throughout."""
    held = cookie("paced-held")
    idp().session(held, "alice-paced")
    with daemon({"--signout-rate": "4", "--workers": "1", "--upstream-timeout": "1s"}) as d:
        expect(fa(d, "app1.test", "/", held), 200, "miss", "alice-paced", "held session")
        calls0 = idp().calls()
        results, lock = [], threading.Lock()

        def one(i):
            r = fa(d, "app1.test", SIGN_OUT, cookie(f"paced-{i}"), timeout=10)
            with lock:
                results.append((r.status, r.header("X-Authcache")))

        t0 = time.monotonic()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        expect(fa(d, "app1.test", "/", held), 200, "hit", "alice-paced", "a hit during the flood")
        for t in threads:
            t.join(10)
        took = time.monotonic() - t0
        eq(len(results), 16, "sign-outs answered")
        sent = sum(1 for st, x in results if (st, x) == (302, "signout"))
        shed = sum(1 for st, _ in results if st == 503)
        eq(sent + shed, 16, f"every answer the IdP's 302 or a 503: {results}")
        check(4 <= sent <= 9, "sign-outs sent: the burst of 4 and at most 4 a second for 1 s",
              results)
        eq(idp().calls() - calls0, sent, "IdP calls: one per sign-out answered 302")
        check(took < 3.0, f"every sign-out answered within --upstream-timeout (+slack): {took:.2f}s")
        m = admin_get(d, "/metrics").body.decode()
        check(metric(m, "authcache_signouts_paced_total") >= 1, "paced counted", m)
        eq(metric(m, "authcache_signouts_shed_total"), shed, "shed counted")
        # A second later the bucket holds tokens again: sign-outs one at a time go straight on.
        time.sleep(1.2)
        for i in range(3):
            r = fa(d, "app1.test", SIGN_OUT, cookie(f"paced-late-{i}"))
            eq((r.status, r.header("X-Authcache")), (302, "signout"), f"sign-out {i} after a pause")
        expect(fa(d, "app1.test", "/", held), 200, "hit", "alice-paced", "held session after")


@case
def sign_out_elsewhere_finds_the_user():
    """A sign-out on a host where the session has no answer: the purge thread finds the session's
    user among the answers it removes (the session's answers on other hosts, in the same walk) and
    purges all of that user's answers, other sessions included; another user's stay."""
    f1, f2, g1 = cookie("f1"), cookie("f2"), cookie("g1")
    for v, u in ((f1, "alice-find"), (f2, "alice-find"), (g1, "bob-find")):
        idp().session(v, u)
    with daemon() as d:
        for v, u, what in ((f1, "alice-find", "f1"), (f2, "alice-find", "f2"),
                           (g1, "bob-find", "g1")):
            expect(fa(d, "app1.test", "/", v), 200, "miss", u, f"{what} on app1")
            expect(fa(d, "app1.test", "/", v), 200, "hit", u, f"{what} on app1 again")
        r = fa(d, "app2.test", SIGN_OUT, f1)  # f1 has no answer for app2
        eq((r.status, r.header("X-Authcache")), (302, "signout"), "sign-out of f1 on app2")
        # The test IdP ended alice's sessions: once the purge thread has walked, f2 (never signed
        # out here) is no longer a hit.
        deadline = time.time() + 5
        while True:
            r = fa(d, "app1.test", "/", f2)
            if r.header("X-Authcache") != "hit" or time.time() > deadline:
                break
            time.sleep(0.05)
        eq((r.status, r.header("X-Authcache")), (302, "miss"), "alice's other session (f2)")
        expect(fa(d, "app1.test", "/", g1), 200, "hit", "bob-find", "another user's session")


# ---------------------------------------------------------------- 13. login-flow markers

@case
def authentik_login_flow_markers():
    v = cookie("cb")
    cb = "/outpost.goauthentik.io/callback?X-authentik-auth-callback=true&code=lf-user&state=s"
    with daemon() as d:
        for i in range(2):
            r = fa(d, "app1.test", cb, v)
            expect(r, 302, "bypass", None, f"callback #{i + 1}")
            eq(r.header("Location"), "https://app1.test/", "callback Location")
            eq(idp().calls(v), i + 1, f"IdP calls after callback #{i + 1}")
        expect(fa(d, "app1.test", "/", v), 200, "miss", "lf-user", "after the login")
        expect(fa(d, "app1.test", "/", v), 200, "hit", "lf-user", "again")
        eq(idp().calls(v), 3, "IdP calls")
        r = fa(d, "app1.test", cb, v)
        expect(r, 302, "bypass", None, "callback with a cached cookie")
        eq(idp().calls(v), 4, "IdP calls: the callback is never answered from the cache")
        expect(fa(d, "app1.test", "/", v), 200, "hit", "lf-user", "the callback stored nothing")
        eq(idp().calls(v), 4, "IdP calls")
        r = fa(d, "app1.test", "/page?X-authentik-logout=true", v)
        eq(r.status, 302, "logout marker status (the IdP's)")
        eq(idp().calls(v), 5, "IdP calls: the logout marker goes to the IdP")
        r = fa(d, "app1.test", "/", v)
        expect(r, 302, "miss", None, "after the logout marker: purged, the IdP says 302")
        eq(idp().calls(v), 6, "IdP calls at the end")
        eq(json.loads(admin_get(d, "/v1/stats").body)["cache"]["entries"], 0, "entries held")


# ---------------------------------------------------------------- 14. admin API

@case
def metrics_come_from_one_table():
    """Every figure of the tables (daemon/daemon.h METRICS_WORKER, shm/shm.h SHM_STATS_FIGURES,
    daemon/admin.c BUS_FIGURES) is in /metrics exactly once, with one HELP and one TYPE line of the
    table's kind, and in /v1/stats under its key; no family is exported twice."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    src = "".join(open(os.path.join(root, f)).read()
                  for f in ("daemon/daemon.h", "shm/shm.h", "daemon/admin.c"))
    worker = re.findall(r'X\((\w+), (\w+), (\w+), "(authcache_\w+)", (GAUGE|COUNTER),', src)
    other = re.findall(r'X\((\w+), (\w+), "(authcache_\w+)", (GAUGE|COUNTER),', src)
    check(len(worker) >= 9 and len(other) >= 20, "the tables were found", (len(worker), len(other)))
    with daemon() as d:
        text = admin_get(d, "/metrics").body.decode()
        stats = json.loads(admin_get(d, "/v1/stats").body)
    helps = re.findall(r"^# HELP (\S+) ", text, re.M)
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    eq(sorted(set(helps)), sorted(helps), "families with more than one HELP line")
    eq(len(re.findall(r"^# TYPE ", text, re.M)), len(types), "families with more than one TYPE")
    for field, group, key, name, kind in worker:
        eq(types.get(name), kind.lower(), f"TYPE of {name}")
        eq(len(re.findall(r"^" + name + r" ", text, re.M)), 1, f"samples of {name}")
        check(key in stats[group], f"/v1/stats {group}.{key}", list(stats[group]))
    for field, key, name, kind in other:
        eq(types.get(name), kind.lower(), f"TYPE of {name}")
        eq(len(re.findall(r"^" + name + r" ", text, re.M)), 1, f"samples of {name}")
        group = "bus" if name.startswith("authcache_bus_") else "cache"
        check(key in stats[group], f"/v1/stats {group}.{key}", list(stats[group]))


@case
def admin_api():
    p1, p2, q1 = cookie("p1"), cookie("p2"), cookie("q1")
    idp().session(p1, "alice-adm")
    idp().session(p2, "alice-adm")
    idp().session(q1, "bob-adm")
    with daemon() as d:
        r = admin_get(d, "/healthz")
        eq((r.status, r.body.strip()), (200, b"ok"), "/healthz")
        eq(admin_get(d, "/readyz").status, 200, "/readyz")
        for v, host in ((p1, "app1.test"), (p1, "app3.test"), (p2, "app1.test"),
                        (q1, "app1.test"), (q1, "app3.test")):
            expect(fa(d, host, "/", v), 200, "miss", ANY, f"{host} first")
        for _ in range(3):
            expect(fa(d, "app1.test", "/", p1), 200, "hit", "alice-adm", "hit")
        r = admin_get(d, "/metrics")
        eq(r.status, 200, "/metrics status")
        check(r.header("Content-Type", "").startswith("text/plain"), "/metrics Content-Type",
              r.header("Content-Type"))
        eq(metric(r.body, 'authcache_requests_total{result="hit"}'), 3, "hits in /metrics")
        eq(metric(r.body, 'authcache_requests_total{result="miss"}'), 5, "misses in /metrics")
        eq(metric(r.body, "authcache_entries"), 5, "authcache_entries")
        eq(metric(r.body, "authcache_idp_requests_total"), 5, "authcache_idp_requests_total")
        r = admin_get(d, "/v1/stats")
        eq(r.status, 200, "/v1/stats status")
        eq(r.header("Content-Type"), "application/json", "/v1/stats Content-Type")
        st = json.loads(r.body)
        eq(st["cache"]["entries"], 5, "cache.entries")
        eq(st["requests"]["hit"], 3, "requests.hit")
        # IdP latency is measured in microseconds: sub-millisecond local calls still add up.
        check(st["idp"]["latency_count"] >= 1 and st["idp"]["latency_sum_seconds"] > 0,
              "IdP latency recorded with sub-millisecond resolution", st["idp"])

        def purged(query, want, what):
            r = admin_post(d, "/v1/purge" + query)
            eq((r.status, r.header("Content-Type")), (200, "application/json"), f"{what}: status")
            eq(json.loads(r.body), {"purged": want}, f"{what}: answer")
            # An answer confirmed in the purge's own millisecond is hidden by it (an IdP call
            # more, docs/daemon.md "Purges and answers in flight"): the next ones come later.
            time.sleep(0.002)

        purged("?user=alice-adm", 3, "purge by user")
        expect(fa(d, "app1.test", "/", p1), 200, "miss", "alice-adm", "p1 after the user purge")
        expect(fa(d, "app1.test", "/", p2), 200, "miss", "alice-adm", "p2 after the user purge")
        expect(fa(d, "app3.test", "/", q1), 200, "hit", "bob-adm", "q1 after alice's purge")
        purged("?user=nobody", 0, "purge of an unknown user")
        purged(f"?session={q1}", 2, "purge by session")
        expect(fa(d, "app1.test", "/", q1), 200, "miss", "bob-adm", "q1 after the session purge")
        expect(fa(d, "app1.test", "/", p1), 200, "hit", "alice-adm", "p1 after q1's purge")
        eq(json.loads(admin_get(d, "/v1/stats").body)["cache"]["entries"], 3, "entries")
        purged("?all=1", 3, "purge all")
        eq(json.loads(admin_get(d, "/v1/stats").body)["cache"]["entries"], 0, "entries after all")
        expect(fa(d, "app1.test", "/", p1), 200, "miss", "alice-adm", "p1 after purge all")
        for q in ("", "?user=", "?all=0", "?bogus=1"):
            r = admin_post(d, "/v1/purge" + q)
            eq(r.status, 400, f"POST /v1/purge{q}")
        eq(admin_get(d, "/v1/purge?all=1").status, 405, "GET /v1/purge")
        eq(json.loads(admin_get(d, "/v1/stats").body)["cache"]["entries"], 1,
           "entries after the refused purges")
        eq(admin_post(d, "/healthz").status, 405, "POST /healthz")
        eq(admin_get(d, "/nope").status, 404, "GET /nope")
        r = admin_get(d, "/metrics")
        eq(metric(r.body, "authcache_purges_total"), 8, "authcache_purges_total")


@case
def admin_answers_past_silent_clients():
    """Clients that connect to the admin port and say nothing (or dribble half a request) do not
    hold up /healthz: before, one thread served one connection at a time with a 2 s timeout."""
    with daemon() as d:
        silent = [harness.Conn(d.admin, timeout=5.0) for _ in range(40)]
        for c in silent[:5]:
            c.send(b"GET /hea")
        try:
            t0 = time.monotonic()
            r = admin_get(d, "/healthz", timeout=1.5)
            eq((r.status, r.body.strip()), (200, b"ok"), "/healthz behind 40 silent clients")
            check(time.monotonic() - t0 < 1.5, "answered within 1.5 s (the stall was 2 s per client)")
            # A request split over several packets is still read whole.
            with harness.Conn(d.admin, timeout=3.0) as c:
                c.send(b"GET /rea")
                time.sleep(0.1)
                c.send(b"dyz HTTP/1.1\r\nHost: x\r\n\r\n")
                eq(c.read_response().status, 200, "/readyz sent in two pieces")
            # Silent clients are closed at the admin timeout (2 s): read() sees the end.
            c = silent[-1]
            c.settimeout(4.0)
            t0 = time.monotonic()
            check(c.read_until_close() == b"", "a silent admin client is closed without an answer")
            check(time.monotonic() - t0 < 3.5, "closed within the 2 s admin timeout + margin")
        finally:
            for c in silent:
                c.close()


# ---------------------------------------------------------------- 15. flags and exits

def _one_line(err, what):
    lines = err.strip("\n").split("\n")
    eq(len(lines), 1, f"{what}: lines on stderr ({err!r})")
    return lines[0]


def _run(argv):
    """harness.run, failing on a sanitizer report in the program's stderr."""
    rc, out, err = harness.run(argv, timeout=10)
    daemon_util.no_sanitizer_report(err, f"stderr of {argv!r}")
    return rc, out, err


@case
def flags_and_exit_statuses():
    up = f"http://127.0.0.1:{idp().port}"
    b = daemon_util.BIN
    rc, out, err = _run([b, "--upstream", up, "--frobnicate"])
    eq(rc, 2, "exit status for an unknown flag")
    check("--frobnicate" in _one_line(err, "unknown flag"), "the line names the flag", err)
    rc, out, err = _run([b, "--upstream", up, "--fresh-ttl", "30"])
    eq(rc, 2, "exit status for a bad duration")
    line = _one_line(err, "bad duration")
    check("--fresh-ttl" in line and "30" in line, "the line names the flag and the value", line)
    rc, out, err = _run([b, "--listen", "127.0.0.1:0"])
    eq(rc, 2, "exit status without --upstream")
    check("--upstream" in _one_line(err, "missing --upstream"), "the line names --upstream", err)

    # The listen address in use: by a plain socket, and by another authcached (SO_REUSEPORT
    # must not let a second daemon share the port).
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    shm = daemon_util.shm_name()
    try:
        rc, out, err = _run([b, "--upstream", up, "--listen",
                                    f"127.0.0.1:{s.getsockname()[1]}", "--admin",
                                    f"127.0.0.1:{harness.free_port()}", "--shm", shm,
                                    "--capacity", "1024"])
        eq(rc, 2, "exit status when the listen address is in use")
        check("--listen" in _one_line(err, "listen in use"), "the line names --listen", err)
        check(not os.path.exists("/dev/shm/" + shm),
              "no segment made by a start that cannot listen")
    finally:
        s.close()
        daemon_util.remove_shm(shm)
    v = cookie("flags")
    idp().session(v, "fiona")
    with daemon() as d:
        expect(fa(d, "app1.test", "/", v), 200, "miss", "fiona", "first daemon")
        rc, out, err = _run([b, "--upstream", up, "--listen", f"127.0.0.1:{d.port}",
                                    "--admin", f"127.0.0.1:{harness.free_port()}",
                                    "--shm", d.shm, "--capacity", "2048"])
        eq(rc, 2, "exit status when another authcached listens on the address")
        check("--listen" in _one_line(err, "listen used by authcached"), "names --listen", err)
        shm = daemon_util.shm_name()
        try:
            rc, out, err = _run([b, "--upstream", up, "--listen",
                                        f"127.0.0.1:{harness.free_port()}", "--admin",
                                        f"127.0.0.1:{d.admin}", "--shm", shm,
                                        "--capacity", "1024"])
            made = os.path.exists("/dev/shm/" + shm)
        finally:
            daemon_util.remove_shm(shm)
        check(not made, "a start that cannot listen on --admin creates no segment", shm)
        eq(rc, 2, "exit status when the admin address is in use")
        check("--admin" in _one_line(err, "admin in use"), "names --admin", err)
        for _ in range(4):  # over new connections: both workers
            expect(fa(d, "app1.test", "/", v), 200, "hit", "fiona",
                   "the first daemon after the failed starts (segment untouched)")

    # AUTHCACHED_FRESH_TTL works; a flag wins over it (and its variable is then ignored).
    v2 = cookie("env")
    idp().session(v2, "envy")
    with daemon({"--fresh-ttl": None}, env={"AUTHCACHED_FRESH_TTL": "300ms"}) as d:
        expect(fa(d, "app1.test", "/", v2), 200, "miss", "envy", "env fresh-ttl: first")
        time.sleep(0.4)
        expect(fa(d, "app1.test", "/", v2), 200, "revalidated", "envy",
               "env fresh-ttl 300ms: after 400 ms")
    v3 = cookie("env")
    idp().session(v3, "envy")
    with daemon({"--fresh-ttl": "10s"}, env={"AUTHCACHED_FRESH_TTL": "300ms"}) as d:
        expect(fa(d, "app1.test", "/", v3), 200, "miss", "envy", "flag over env: first")
        time.sleep(0.4)
        expect(fa(d, "app1.test", "/", v3), 200, "hit", "envy",
               "--fresh-ttl 10s over AUTHCACHED_FRESH_TTL=300ms: after 400 ms")
    with daemon({"--fresh-ttl": "10s"}, env={"AUTHCACHED_FRESH_TTL": "bogus"}) as d:
        eq(admin_get(d, "/readyz").status, 200, "a bad variable is ignored when its flag is given")
    rc, out, err = _run(["env", "AUTHCACHED_FRESH_TTL=bogus", b, "--upstream", up])
    eq(rc, 2, "exit status for a bad AUTHCACHED_FRESH_TTL")
    check("AUTHCACHED_FRESH_TTL" in _one_line(err, "bad env"), "names the variable", err)


# ---------------------------------------------------------------- 16. SIGTERM drain

@case
def sigterm_drains_and_restart_keeps_the_cache():
    v = cookie("drain")
    idp().session(v, "dora")
    shm = daemon_util.shm_name()
    try:
        with daemon(shm=shm, keep_shm=True) as d:
            out = {}

            def slow():
                try:
                    out["r"] = fa(d, "app1.test", "/", v, timeout=10)
                except Exception as e:
                    out["e"] = f"{type(e).__name__}: {e}"

            idp().fault(latency_ms=400)
            try:
                t = threading.Thread(target=slow)
                t.start()
                harness.wait_for(lambda: idp().calls(v) == 1, timeout=3.0,
                                 what="the request reached the (slow) IdP")
                d.proc.send_signal(signal.SIGTERM)
                readyz = []
                deadline = time.monotonic() + 2.0
                while t.is_alive() and time.monotonic() < deadline:
                    try:
                        readyz.append(admin_get(d, "/readyz", timeout=1.0).status)
                    except OSError:
                        break
                    if 503 in readyz:
                        break
                    time.sleep(0.01)
                t.join(5)
            finally:
                idp().fault(latency_ms=0)
            check("e" not in out, "the in-flight request got an answer", out.get("e"))
            r = out.get("r")
            check(r is not None, "the in-flight request finished")
            expect(r, 200, "miss", "dora", "request in flight at SIGTERM")
            eq(r.header("Connection"), "close", "Connection on an answer finished while draining")
            check(503 in readyz, "/readyz answered 503 while draining", readyz)
            try:
                rc = d.proc.popen.wait(5)
            except Exception:
                rc = None
            eq(rc, 0, "exit status after SIGTERM")
        with daemon(shm=shm) as d2:
            r = fa(d2, "app1.test", "/", v)
            expect(r, 200, "hit", "dora", "first request after the restart on the same --shm")
            eq(idp().calls(v), 1, "IdP calls after the restart")
    finally:
        daemon_util.remove_shm(shm)


# ---------------------------------------------------------------- 17. malformed requests

@case
def malformed_requests_and_pipelining():
    a, bb = cookie("pa"), cookie("pb")
    idp().session(a, "pipe-a")
    idp().session(bb, "pipe-b")
    with daemon() as d:
        expect(fa(d, "app1.test", "/", a), 200, "miss", "pipe-a", "warm-up")
        for what, data, want in (
                ("garbage", b"\x00\x01\x02 garbage\r\n\r\n", 400),
                ("a bad request line", b"GET\r\n\r\n", 400),
                ("a header line without a colon",
                 b"GET / HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n", 400),
                ("a header section over 32 KiB",
                 harness.build_request("GET", AUTH, harness.auth_headers("app1.test", "/", a) +
                                       [("X-Big", "b" * 33000)]), 431)):
            with harness.Conn(d.port) as c:
                c.send(data)
                r = c.read_response()
                eq(r.status, want, f"status for {what}")
                eq(r.header("Connection"), "close", f"Connection for {what}")
                eq(c.read_until_close(), b"", f"closed after {what}")
        expect(fa(d, "app1.test", "/", a), 200, "hit", "pipe-a", "the next client")
        # HTTP/1.0: answered and closed; with keep-alive it stays open.
        head = "".join(f"{k}: {v}\r\n" for k, v in harness.auth_headers("app1.test", "/", a))
        with harness.Conn(d.port) as c:
            c.send(f"GET {AUTH} HTTP/1.0\r\n{head}\r\n".encode())
            r = c.read_response()
            expect(r, 200, "hit", "pipe-a", "HTTP/1.0 request")
            eq(c.read_until_close(), b"", "HTTP/1.0 connection closed after the answer")
        with harness.Conn(d.port) as c:
            for i in range(2):
                c.send(f"GET {AUTH} HTTP/1.0\r\nConnection: keep-alive\r\n{head}\r\n".encode())
                r = c.read_response()
                expect(r, 200, "hit", "pipe-a", f"HTTP/1.0 keep-alive #{i + 1}")
                eq(r.header("Connection"), "keep-alive",
                   "Connection on an HTTP/1.0 keep-alive answer")
        # Pipelined: a hit, a pass-through, a miss, a hit — in one write, answered in order.
        u = cookie("pu")
        reqs = [("app1.test", a), ("app1.test", u), ("app1.test", bb), ("app3.test", a),
                ("app1.test", a)]
        data = b"".join(harness.build_request("GET", AUTH, harness.auth_headers(h, "/", v))
                        for h, v in reqs)
        with harness.Conn(d.port) as c:
            c.send(data)
            got = []
            for _ in reqs:
                r = c.read_response()
                got.append((r.status, r.header("X-Authcache"), r.header("X-authentik-username")))
        eq(got, [(200, "hit", "pipe-a"), (302, "miss", None), (200, "miss", "pipe-b"),
                 (200, "miss", "pipe-a"), (200, "hit", "pipe-a")], "pipelined answers in order")
        # A request with a body (skipped), then one more on the same connection.
        with harness.Conn(d.port) as c:
            r = c.request("POST", AUTH, harness.auth_headers("app1.test", "/", a), body=b"x" * 5000)
            # the auth request's own method is part of the key (oauth2-proxy's skip routes)
            expect(r, 200, "miss", "pipe-a", "POST with a body")
            expect(fa(d, "app1.test", "/", a, conn=c), 200, "hit", "pipe-a", "after the body")


@case
def request_heads_in_pieces():
    """Heads that arrive in many receives (the parser resumes where the last one stopped, http.h
    last_len) are answered as if whole, also on a reused connection, after a pipelined request in
    the same receive, and a bad one is refused with 400 when its bad byte arrives."""
    a = cookie("pieces")
    idp().session(a, "pieces-a")
    req = harness.build_request("GET", AUTH, harness.auth_headers("app1.test", "/", a) +
                                [("X-Pad", "p" * 3000)])

    def dribble(c, data, step):
        for i in range(0, len(data), step):
            c.send(data[i:i + step])
            time.sleep(0.001)  # TCP_NODELAY: each piece its own segment, mostly its own receive

    with daemon() as d:
        with harness.Conn(d.port) as c:
            dribble(c, req, 7)
            expect(c.read_response(), 200, "miss", "pieces-a", "a head in 7-byte pieces")
            dribble(c, req, 1)
            expect(c.read_response(), 200, "hit", "pieces-a", "the next one byte by byte")
            # one whole request and the start of the next in one write, the rest in pieces
            c.send(req + req[:100])
            expect(c.read_response(), 200, "hit", "pieces-a", "the whole one of a pipelined pair")
            time.sleep(0.05)
            dribble(c, req[100:], 50)
            expect(c.read_response(), 200, "hit", "pieces-a", "the one finished in pieces")
        with harness.Conn(d.port) as c:
            dribble(c, b"GET / HTTP/1.1\r\nX-A: a", 3)
            time.sleep(0.05)
            c.send(b"\x01")
            r = c.read_response()
            eq(r.status, 400, "status when a control byte arrives in an unfinished head")
            eq(c.read_until_close(), b"", "closed after the 400")


# ---------------------------------------------------------------- 18. no credential

@case
def no_credential_is_bypass():
    with daemon() as d:
        for hdrs, what in (([], "no cookie"),
                           ([("Cookie", "foo=1; bar=2")], "only unrelated cookies"),
                           ([("Cookie", f"{harness.IDP_COOKIE}=")], "an empty session cookie")):
            for i in range(3):
                total = idp().calls()
                r = fa(d, "app1.test", "/", None, headers=hdrs)
                expect(r, 302, "bypass", None, f"{what} #{i + 1}")
                eq(idp().calls(), total + 1, f"IdP calls for {what} #{i + 1}")
        total = idp().calls()
        r = fa(d, "open.test", "/public/x", None)
        expect(r, 200, "bypass", None, "no cookie on the open path")
        eq(idp().calls(), total + 1, "IdP calls")
        eq(json.loads(admin_get(d, "/v1/stats").body)["cache"]["entries"], 0, "entries held")
        eq(json.loads(admin_get(d, "/v1/stats").body)["requests"]["bypass"], 10, "bypass count")


if __name__ == "__main__":
    harness.main(setup)
