"""test_daemon_outage.py — authcached while the IdP fails: held sessions served `stale` with the
same headers, 503 with Retry-After for sessions it never saw, recovery (`revalidated` once the
circuit closes), session-ttl and JWT exp honoured during an outage, a hung IdP cut at
--upstream-timeout, concurrent misses in an outage sharing one IdP call, and the circuit breaker
answering at once. Shares daemon_util.py with test_daemon.py (AUTHCACHED_BIN, sanitizer checks).

Run from the repo root: python3 tests/integration/test_daemon_outage.py [CASE...]
"""

import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from daemon_util import (circuit_open, cookie, daemon, describe, expect, fa,  # noqa: E402
                         identity, timed)
import daemon_util  # noqa: E402
from harness import case, check, eq  # noqa: E402

TIMEOUT_S = 0.5  # --upstream-timeout of every daemon here
MARGIN_S = 0.3
OUTAGE_FLAGS = {"--fresh-ttl": "500ms", "--outage-grace": "5s", "--session-ttl": "30s",
                "--upstream-timeout": "500ms"}


def setup():
    daemon_util.setup_idp()


def idp():
    return daemon_util.IDP


def expect_unavailable(r, what):
    expect(r, 503, "unavailable", None, what)
    ra = r.header("Retry-After") or ""
    check(ra.isdigit() and int(ra) >= 1, f"{what}: Retry-After is a number of seconds >= 1", ra)
    check((r.header("Content-Type") or "").startswith("text/plain"), f"{what}: text/plain",
          r.header("Content-Type"))
    eq(r.header("Cache-Control"), "no-store", f"{what}: Cache-Control")
    check(r.body.startswith(b"authcache: identity provider unavailable: ") and
          r.body.endswith(b"\n") and r.body.count(b"\n") == 1,
          f"{what}: a one-line body naming the cause", r.body)
    eq(identity(r), [], f"{what}: identity headers")


def wait_closed(d, what):
    harness.wait_for(lambda: circuit_open(d) == 0, timeout=12.0, interval=0.05,
                     what=f"{what}: the circuit closes after the IdP recovered")


def _outage(mode):
    s, n = cookie(f"s{mode}"), cookie(f"n{mode}")
    idp().session(s, "olga")
    idp().session(n, "nina")
    with daemon(OUTAGE_FLAGS) as d:
        r = fa(d, "app1.test", "/", s)
        expect(r, 200, "miss", "olga", "before the outage")
        held = identity(r)
        idp().fault(mode)
        try:
            time.sleep(0.6)  # past fresh-ttl
            slowest = 0.0
            for i in range(4):
                r, dt = timed(lambda: fa(d, "app1.test", "/", s))
                slowest = max(slowest, dt)
                expect(r, 200, "stale", "olga", f"{mode}: held session #{i + 1}")
                eq(identity(r), held, f"{mode}: stale identity headers vs the miss's")
                r, dt = timed(lambda: fa(d, "app1.test", "/", n))
                slowest = max(slowest, dt)
                expect_unavailable(r, f"{mode}: never-seen session #{i + 1}")
            check(slowest <= TIMEOUT_S + MARGIN_S, f"{mode}: every outage answer within "
                  f"upstream-timeout + {MARGIN_S}s", f"{slowest:.3f}s")
            # A 500 fails its own request but does not say the IdP is down: one misconfigured
            # route must not fail everybody fast (docs/daemon.md, "Circuit breaker").
            eq(circuit_open(d), 0 if mode == "500" else 1,
               f"{mode}: circuit {'still closed' if mode == '500' else 'open'} after repeated "
               f"failures")
        finally:
            idp().fault("ok")
        wait_closed(d, mode)
        before = idp().calls(s)
        expect(fa(d, "app1.test", "/", s), 200, "revalidated", "olga", f"{mode}: after recovery")
        eq(idp().calls(s), before + 1, f"{mode}: IdP calls of the held session after recovery")
        expect(fa(d, "app1.test", "/", n), 200, "miss", "nina", f"{mode}: the other after recovery")
        expect(fa(d, "app1.test", "/", s), 200, "hit", "olga", f"{mode}: then a hit")


# ---------------------------------------------------------------- 9. outage

@case
def outage_500_stale_503_recovery():
    _outage("500")


@case
def outage_refuse_stale_503_recovery():
    _outage("refuse")


@case
def outage_reset_and_garbage():
    for mode in ("reset", "garbage", "503"):
        s, n = cookie(f"s{mode}"), cookie(f"n{mode}")
        idp().session(s, "gary")
        with daemon(OUTAGE_FLAGS) as d:
            expect(fa(d, "app1.test", "/", s), 200, "miss", "gary", f"{mode}: before")
            idp().fault(mode)
            try:
                time.sleep(0.6)
                r, dt = timed(lambda: fa(d, "app1.test", "/", s))
                expect(r, 200, "stale", "gary", f"{mode}: held session")
                check(dt <= TIMEOUT_S + MARGIN_S, f"{mode}: answered in time", f"{dt:.3f}s")
                r, dt = timed(lambda: fa(d, "app1.test", "/", n))
                expect_unavailable(r, f"{mode}: never-seen session")
                check(dt <= TIMEOUT_S + MARGIN_S, f"{mode}: answered in time", f"{dt:.3f}s")
            finally:
                idp().fault("ok")


# ---------------------------------------------------------------- 10. lifetimes in an outage

@case
def outage_honours_session_ttl():
    s = cookie("sttl")
    idp().session(s, "sid")
    with daemon({"--fresh-ttl": "500ms", "--session-ttl": "2s", "--outage-grace": "30s"}) as d:
        t_sent = time.time()
        expect(fa(d, "app1.test", "/", s), 200, "miss", "sid", "first sight")
        time.sleep(0.55)  # a revalidation keeps the first sight
        expect(fa(d, "app1.test", "/", s), 200, "revalidated", "sid", "after fresh-ttl")
        idp().fault("500")
        try:
            time.sleep(0.55)
            expect(fa(d, "app1.test", "/", s), 200, "stale", "sid", "within session-ttl")
            time.sleep(max(0.0, t_sent + 2.15 - time.time()))
            for i in range(2):
                expect_unavailable(fa(d, "app1.test", "/", s),
                                   f"past first sight + session-ttl in an outage #{i + 1}")
        finally:
            idp().fault("ok")
        wait_closed(d, "after the session-ttl case")
        expect(fa(d, "app1.test", "/", s), 200, "miss", "sid", "a new first sight after recovery")


@case
def outage_honours_jwt_exp():
    s = cookie("jexp")
    reply = idp().session(s, "jay", ttl=3)  # the JWT's exp is the session's end
    exp = reply["exp"]
    with daemon({"--fresh-ttl": "500ms", "--session-ttl": "1h", "--outage-grace": "1h"}) as d:
        expect(fa(d, "app1.test", "/", s), 200, "miss", "jay", "first sight")
        idp().fault("500")
        try:
            time.sleep(0.6)
            check(time.time() < exp - 0.2, "still before the JWT's exp (test timing)")
            expect(fa(d, "app1.test", "/", s), 200, "stale", "jay", "before the JWT's exp")
            time.sleep(max(0.0, exp + 0.1 - time.time()))
            for i in range(2):
                expect_unavailable(fa(d, "app1.test", "/", s), f"past the JWT's exp #{i + 1}")
        finally:
            idp().fault("ok")
        # And once the IdP is back, the (now ended) session is the IdP's to judge: a redirect.
        wait_closed(d, "after the exp case")
        r = fa(d, "app1.test", "/", s)
        check(r.status == 302, "the IdP's answer for the ended session", describe(r))


# ---------------------------------------------------------------- 11. hang and timeout

@case
def hang_is_cut_at_upstream_timeout():
    s, n, m = cookie("hs"), cookie("hn"), cookie("hm")
    for v, u in ((s, "hank"), (n, "hana"), (m, "hugo")):
        idp().session(v, u)
    with daemon(OUTAGE_FLAGS) as d:
        expect(fa(d, "app1.test", "/", s), 200, "miss", "hank", "before the hang")
        idp().fault("hang")
        try:
            time.sleep(0.6)
            # Concurrent misses for one key: one IdP call, every one 503 in time.
            out, lock = [], threading.Lock()

            def one():
                try:
                    r, dt = timed(lambda: fa(d, "app1.test", "/", m, timeout=5))
                    res = (r.status, r.header("X-Authcache"), round(dt, 3))
                except Exception as e:
                    res = (type(e).__name__, str(e), 0)
                with lock:
                    out.append(res)
            threads = [threading.Thread(target=one) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(5)
            check(all(o[0] == 503 and o[1] == "unavailable" for o in out) and len(out) == 8,
                  "8 concurrent misses against a hung IdP: all 503 unavailable", out)
            check(all(TIMEOUT_S - 0.05 <= o[2] <= TIMEOUT_S + MARGIN_S for o in out),
                  f"each answered after upstream-timeout, within {MARGIN_S}s of it", out)
            eq(idp().calls(m), 1, "IdP calls for the concurrent misses")

            r, dt = timed(lambda: fa(d, "app1.test", "/", s))
            expect(r, 200, "stale", "hank", "held session, IdP hung")
            check(dt <= TIMEOUT_S + MARGIN_S, "stale answer within upstream-timeout + margin",
                  f"{dt:.3f}s")
            r, dt = timed(lambda: fa(d, "app1.test", "/", n))
            expect_unavailable(r, "never-seen session, IdP hung")
            check(b"timed out" in r.body, "the body names the cause", r.body)
            check(TIMEOUT_S - 0.05 <= dt <= TIMEOUT_S + MARGIN_S,
                  "503 after upstream-timeout, within the margin", f"{dt:.3f}s")
            eq(circuit_open(d), 1, "circuit open after three timeouts")
            for i in range(3):
                r, dt = timed(lambda: fa(d, "app1.test", "/", n))
                expect_unavailable(r, f"circuit open #{i + 1}")
                check(dt < 0.15, "answered at once while the circuit is open", f"{dt:.3f}s")
                r, dt = timed(lambda: fa(d, "app1.test", "/", s))
                expect(r, 200, "stale", "hank", f"held session, circuit open #{i + 1}")
                check(dt < 0.15, "stale at once while the circuit is open", f"{dt:.3f}s")
        finally:
            idp().fault("ok")
        wait_closed(d, "after the hang")
        expect(fa(d, "app1.test", "/", n), 200, "miss", "hana", "after the IdP answers again")
        expect(fa(d, "app1.test", "/", s), 200, "revalidated", "hank",
               "held session after the hang")


# ---------------------------------------------------------------- an oversized answer

class FakeIdp:
    """A minimal upstream on a thread: mode "ok" answers 200 with a user header (keep-alive);
    "big" answers 200 with a 2 MiB body, more than authcached takes from an IdP; "until-close"
    answers 200 with a body delimited by the end of the connection, then holds it open for 3 s."""

    def __init__(self):
        self.mode = "ok"
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        buf = b""
        with c:
            try:
                while True:
                    while b"\r\n\r\n" not in buf:
                        chunk = c.recv(65536)
                        if not chunk:
                            return
                        buf += chunk
                    buf = buf[buf.index(b"\r\n\r\n") + 4:]
                    head = (b"HTTP/1.1 200 OK\r\nX-authentik-username: fake\r\n"
                            b"X-authentik-jwt: -\r\n")
                    if self.mode == "ok":
                        c.sendall(head + b"Content-Length: 0\r\n\r\n")
                    elif self.mode == "until-close":
                        c.sendall(head + b"\r\nbody-start")
                        time.sleep(3)
                        return
                    else:
                        c.sendall(head + b"Content-Length: 2097152\r\n\r\n" + b"x" * 2097152)
                        return
            except OSError:
                return

    def close(self):
        self.sock.close()


@case
def oversized_idp_answer_is_a_failure():
    fake = FakeIdp()
    try:
        with daemon(OUTAGE_FLAGS, upstream=f"http://127.0.0.1:{fake.port}") as d:
            expect(fa(d, "app1.test", "/", "held"), 200, "miss", "fake", "before")
            fake.mode = "big"
            time.sleep(0.6)
            r, dt = timed(lambda: fa(d, "app1.test", "/", "held"))
            expect(r, 200, "stale", "fake", "held session, IdP answers 2 MiB")
            check(dt <= TIMEOUT_S + MARGIN_S, "answered in time", f"{dt:.3f}s")
            r, dt = timed(lambda: fa(d, "app1.test", "/", "new"))
            expect_unavailable(r, "never-seen session, IdP answers 2 MiB")
            check(dt <= TIMEOUT_S + MARGIN_S, "answered in time", f"{dt:.3f}s")
    finally:
        fake.close()


@case
def timed_out_close_delimited_answer_is_a_failure():
    """An answer whose body runs to the end of the connection, cut by --upstream-timeout: the end
    of stream is our shutdown, not the IdP's, so nothing may be stored or served as allowed."""
    fake = FakeIdp()
    fake.mode = "until-close"
    try:
        with daemon(OUTAGE_FLAGS, upstream=f"http://127.0.0.1:{fake.port}") as d:
            for what in ("first ask", "second ask (nothing was stored)"):
                r, dt = timed(lambda: fa(d, "app1.test", "/", "cut"))
                expect_unavailable(r, what)
                check(dt <= TIMEOUT_S + MARGIN_S, "answered in time", f"{dt:.3f}s")
            r = daemon_util.admin_get(d, "/metrics")
            check(daemon_util.metric(r.body, "authcache_idp_failures_total") >= 2,
                  "the cut answers count as IdP failures", r.body[-300:])
    finally:
        fake.close()


@case
def waiters_get_no_more_than_upstream_timeout():
    """Concurrent misses for one key share the leader's IdP call; when it is refused each waiter
    asks on its own, but only in what is left of its own --upstream-timeout."""
    c = cookie("never-logged-in")
    with daemon(OUTAGE_FLAGS) as d:
        idp().fault("ok", latency_ms=int(TIMEOUT_S * 1000 * 0.9))
        try:
            res = []

            def one():
                r, dt = timed(lambda: fa(d, "app1.test", "/", c))
                res.append((r.status, r.header("X-Authcache"), dt))

            ts = [threading.Thread(target=one) for _ in range(4)]
            for t in ts:
                t.start()
                time.sleep(0.01)
            for t in ts:
                t.join()
        finally:
            idp().fault("ok", latency_ms=0)
        eq(len(res), 4, "answers")
        for status, result, dt in res:
            check(dt <= TIMEOUT_S + MARGIN_S, "no request waits past --upstream-timeout + margin",
                  f"{status} {result} after {dt:.3f}s")
            check(status in (302, 401, 503), "a refusal or 503 for a cookie the IdP never knew",
                  (status, result))


@case
def head_checks_and_local_limits_open_no_breaker():
    """A HEAD check is answered like GET and never waits for a body the IdP does not send (its
    refusals come with a Content-Length and no body); none of them opens the breaker. Before, a
    HEAD refusal waited for the body until --upstream-timeout and counted as an IdP outage."""
    s = cookie("head")
    idp().session(s, "hedda")
    with daemon(OUTAGE_FLAGS) as d:
        r = harness.request(d.port, "HEAD", harness.AUTH_TRAEFIK,
                            harness.auth_headers("app1.test", "/", s))
        expect(r, 200, "miss", "hedda", "HEAD of a session")
        r = harness.request(d.port, "HEAD", harness.AUTH_TRAEFIK,
                            harness.auth_headers("app1.test", "/", s))
        expect(r, 200, "hit", "hedda", "HEAD again")
        for i in range(2 * 3):
            r, dt = timed(lambda: harness.request(d.port, "HEAD", harness.AUTH_TRAEFIK,
                                                  harness.auth_headers("app1.test", "/",
                                                                       cookie("nobody"))))
            eq(r.status, 302, f"HEAD of an unknown session #{i + 1}")
            check(r.header("Location"), "the refusal's Location passed on", r.headers)
            eq(r.body, b"", "no body to a HEAD")
            check(dt < TIMEOUT_S, f"answered before --upstream-timeout ({TIMEOUT_S}s)", f"{dt:.3f}s")
        eq(circuit_open(d), 0, "the breaker after HEAD refusals")
        # A GET check is another question than a HEAD one (the auth request's own method is in
        # the key): asked once, then a hit.
        expect(fa(d, "app1.test", "/", s), 200, "miss", "hedda", "a GET after them")
        expect(fa(d, "app1.test", "/", s), 200, "hit", "hedda", "a GET again")


if __name__ == "__main__":
    harness.main(setup)
