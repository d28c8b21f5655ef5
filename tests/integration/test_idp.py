"""test_idp.py — the test IdP (build/test-idp, or $IDP_BIN) against its own contract: identity
headers and JWT of a valid session, unauthenticated paths, login redirect and nginx 401, group
allow-list, unknown host, login callback, sign-out, expiry, every fault mode, latency, call counters,
keep-alive, pipelining and request framing, command-line errors and SIGTERM.

Run from the repo root: python3 tests/integration/test_idp.py [CASE...]
"""

import base64
import hashlib
import hmac
import json
import os
import re
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import case, check, eq  # noqa: E402

idp = None

IDENTITY = ["X-authentik-username", "X-authentik-groups", "X-authentik-entitlements",
            "X-authentik-email", "X-authentik-name", "X-authentik-uid", "X-authentik-jwt",
            "X-authentik-meta-app", "X-authentik-meta-outpost", "X-authentik-meta-provider",
            "X-authentik-meta-version"]


def setup():
    global idp
    idp = harness.start_idp(["--app", "app1.test", "--app", "app2.test;allow=admins",
                             "--app", "open.test;skip=/public/,/health"])


def b64url(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def identity_names(r):
    return [k for k, _ in r.headers if k.lower().startswith("x-authentik-")]


def set_cookie_value(r):
    sc = r.header("Set-Cookie")
    check(sc is not None, "a Set-Cookie header", r.headers)
    m = re.match(re.escape(idp.cookie_name) + r"=([^;]*);", sc)
    check(m is not None, "Set-Cookie for the session cookie", sc)
    return m.group(1), sc


@case
def valid_session_headers_and_jwt():
    reply = idp.session("ck-alice", "alice", ["admins", "users"], ttl=600,
                        entitlements=["read", "write"])
    now = time.time()
    r = idp.auth("APP1.test:8443", "/some/page?x=1", cookie="ck-alice")
    eq(r.status, 200, "status")
    eq(r.header("Content-Length"), "0", "Content-Length")
    eq(identity_names(r), IDENTITY, "identity header names, case and order")
    eq(r.header("X-authentik-username"), "alice", "username")
    eq(r.header("X-authentik-groups"), "admins|users", "groups")
    eq(r.header("X-authentik-entitlements"), "read|write", "entitlements")
    eq(r.header("X-authentik-email"), "alice@example.test", "email")
    check(r.header("X-authentik-name"), "a non-empty X-authentik-name", r.header("X-authentik-name"))
    eq(r.header("X-authentik-meta-app"), "app1", "meta-app")
    uid = r.header("X-authentik-uid")
    check(re.fullmatch(r"[0-9a-f]{64}", uid), "uid is 64 hex digits", uid)

    jwt = r.header("X-authentik-jwt")
    parts = jwt.split(".")
    eq(len(parts), 3, "JWT parts")
    head, claims = json.loads(b64url(parts[0])), json.loads(b64url(parts[1]))
    eq(head.get("alg"), "HS256", "JWT alg")
    sig = hmac.new(idp.jwt_secret.encode(), f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256)
    eq(b64url(parts[2]), sig.digest(), "JWT signature")
    eq(claims["exp"], reply["exp"], "JWT exp = session end")
    check(abs(claims["exp"] - (now + 600)) <= 2, "exp is now + ttl", claims["exp"] - now)
    eq(claims["sub"], uid, "JWT sub")
    eq(claims["preferred_username"], "alice", "JWT preferred_username")
    for k in ("sid", "iss", "iat"):
        check(k in claims, f"JWT claim {k}", claims)

    # Cached per session: the same token again; the uid is stable across sessions of one user.
    eq(idp.auth("app1.test", "/", cookie="ck-alice").header("X-authentik-jwt"), jwt, "JWT reused")
    idp.session("ck-alice-2", "alice")
    r2 = idp.auth("app1.test", "/", cookie="ck-alice-2")
    eq(r2.header("X-authentik-uid"), uid, "uid of another session of alice")
    eq(r2.header("X-authentik-groups"), "", "groups of a session made without groups")
    for kind in ("caddy", "envoy", "nginx"):
        eq(idp.auth("app1.test", "/", cookie="ck-alice", kind=kind).status, 200, f"{kind} status")


@case
def skip_paths_answer_without_identity():
    idp.session("ck-skip", "sam")
    for cookie in (None, "ck-skip", "unknown-cookie"):
        for uri in ("/public/", "/public/a/b?c=d", "/health"):
            r = idp.auth("open.test", uri, cookie=cookie)
            eq(r.status, 200, f"status for {uri} cookie {cookie}")
            eq(identity_names(r), [], f"identity headers for {uri}")
            eq(r.header("Set-Cookie"), None, "Set-Cookie on a skip path")
            eq(r.body, b"", "body")
    eq(idp.auth("open.test", "/private", cookie=None).status, 302, "status outside the prefix")
    eq(idp.auth("open.test", "/publicity", cookie=None).status, 302, "/publicity is not /public/")


@case
def login_redirect_sets_cookie():
    for kind in ("traefik", "caddy", "envoy"):
        r = idp.auth("app1.test:8443", "/wanted?a=b", kind=kind)
        eq(r.status, 302, f"{kind} status")
        loc = r.header("Location")
        check(re.fullmatch(r"https://idp\.test/application/o/authorize/\?client_id=app1"
                           r"&redirect_uri=[^&]+&response_type=code&state=[0-9a-f]+", loc or ""),
              "authorize Location", loc)
        value, sc = set_cookie_value(r)
        check(re.fullmatch(r"[A-Za-z0-9]{32}", value), "a new 32-character cookie value", value)
        for attr in ("Path=/", "Domain=app1.test;", "Max-Age=", "HttpOnly", "SameSite=Lax"):
            check(attr in sc, f"Set-Cookie has {attr}", sc)
        check(r.header("Content-Type", "").startswith("text/html"), "text/html body",
              r.header("Content-Type"))
        eq(int(r.header("Content-Length")), len(r.body), "Content-Length")
    # An unknown or ended cookie value keeps its value through the redirect.
    r = idp.auth("app1.test", "/", cookie="keep-me-123")
    eq(r.status, 302, "status with an unknown cookie")
    eq(set_cookie_value(r)[0], "keep-me-123", "cookie value kept")
    # A fresh value is a function of the request (the IdP's answers are deterministic): the same
    # question gets the same value, another URL another one.
    same = {set_cookie_value(idp.auth("app1.test", "/"))[0] for _ in range(2)}
    eq(len(same), 1, "the same request gets the same fresh value")
    other = set_cookie_value(idp.auth("app1.test", "/other"))[0]
    check(other not in same, "another URL gets another fresh value", other)


@case
def nginx_answers_401():
    r = idp.auth("app1.test", "/x", kind="nginx")
    eq(r.status, 401, "status")
    check(re.fullmatch(r"[A-Za-z0-9]{32}", set_cookie_value(r)[0]), "new cookie value")
    r = idp.auth("app1.test", "/x", cookie="nginx-val", kind="nginx")
    eq(r.status, 401, "status with unknown cookie")
    eq(set_cookie_value(r)[0], "nginx-val", "cookie value kept")
    eq(r.header("Location"), None, "no Location")


@case
def allow_group_403():
    idp.session("ck-bob", "bob", ["users"])
    idp.session("ck-root", "root", "staff|admins")
    r = idp.auth("app2.test", "/", cookie="ck-bob")
    eq(r.status, 403, "status of a user outside the allowed group")
    eq(identity_names(r), [], "identity headers on 403")
    eq(idp.auth("app1.test", "/", cookie="ck-bob").status, 200, "bob on the open app1")
    r = idp.auth("app2.test", "/", cookie="ck-root")
    eq(r.status, 200, "admin on app2")
    eq(r.header("X-authentik-meta-app"), "app2", "meta-app")


@case
def unknown_host_400_and_unknown_path_404():
    eq(idp.auth("nope.test", "/").status, 400, "unknown host")
    r = harness.request(idp.port, "GET", harness.AUTH_TRAEFIK, [("X-Forwarded-Uri", "/")])
    eq(r.status, 400, "missing X-Forwarded-Host")
    check(r.header("Content-Type", "").startswith("text/plain"), "text body", r.header("Content-Type"))
    eq(harness.request(idp.port, "GET", "/outpost.goauthentik.io/auth/other").status, 404, "path")
    eq(harness.request(idp.control, "GET", "/nope").status, 404, "control path")
    eq(harness.request(idp.control, "GET", "/healthz").status, 200, "healthz")


@case
def callback_completes_login():
    r = idp.auth("app1.test", "/start")
    value, _ = set_cookie_value(r)
    eq(idp.auth("app1.test", "/", cookie=value).status, 302, "before login")
    uri = ("/outpost.goauthentik.io/callback?X-authentik-auth-callback=true&code=carol"
           "&groups=admins%7Cops&state=abc")
    r = idp.auth("app1.test", uri, cookie=value)
    eq(r.status, 302, "callback status")
    eq(r.header("Location"), "https://app1.test/", "back to / of the host")
    eq(set_cookie_value(r)[0], value, "same cookie value after login")
    r = idp.auth("app2.test", "/", cookie=value)
    eq(r.status, 200, "after login")
    eq(r.header("X-authentik-username"), "carol", "user named by code=")
    eq(r.header("X-authentik-groups"), "admins|ops", "groups from groups=")
    eq(idp.auth("app1.test", "/outpost.goauthentik.io/callback?X-authentik-auth-callback=true",
                cookie="x").status, 400, "callback without code")


@case
def sign_out_ends_every_session_of_the_user():
    idp.session("dave-1", "dave")
    idp.session("dave-2", "dave")
    idp.session("erin-1", "erin")
    r = idp.auth("app1.test", "/outpost.goauthentik.io/sign_out", cookie="dave-1")
    eq(r.status, 302, "sign_out status")
    eq(r.header("Location"), "http://app1.test/application/o/app1/end-session/", "Location")
    value, sc = set_cookie_value(r)
    eq(value, "", "expired cookie value")
    check("Max-Age=0" in sc, "Set-Cookie expires the cookie", sc)
    eq(idp.auth("app1.test", "/", cookie="dave-1").status, 302, "dave-1 after sign-out")
    eq(idp.auth("app1.test", "/", cookie="dave-2").status, 302, "dave-2 after sign-out")
    eq(idp.auth("app1.test", "/", cookie="erin-1").status, 200, "erin untouched")
    r = idp.auth("app1.test", "/page?X-authentik-logout=true", cookie="erin-1")
    eq(r.status, 302, "logout query status")
    eq(idp.auth("app1.test", "/", cookie="erin-1").status, 302, "erin after logout query")
    eq(idp.auth("app1.test", "/outpost.goauthentik.io/sign_out").status, 302, "without a cookie")


@case
def control_end_and_expiry():
    idp.session("fay-1", "fay")
    idp.session("fay-2", "fay")
    idp.session("gus-1", "gus")
    eq(idp.end(cookie="gus-1"), 1, "ended by cookie")
    eq(idp.end(cookie="gus-1"), 0, "ended twice")
    eq(idp.end(user="fay"), 2, "ended by user")
    eq(idp.auth("app1.test", "/", cookie="fay-2").status, 302, "after end")
    eq(harness.request(idp.control, "POST", "/session?cookie=x").status, 400, "session without user")
    reply = idp.session("short", "hal", ttl=1)
    eq(idp.auth("app1.test", "/", cookie="short").status, 200, "before expiry")
    time.sleep(max(0.0, reply["exp"] - time.time()) + 0.05)
    eq(idp.auth("app1.test", "/", cookie="short").status, 302, "after expiry")


@case
def faults_500_503_reset_garbage():
    idp.reset()
    idp.session("ck-f", "fred")
    for mode in ("500", "503"):
        idp.fault(mode)
        r = idp.auth("app1.test", "/", cookie="ck-f")
        eq(r.status, int(mode), f"status in mode {mode}")
        eq(r.body, b"idp down", "body")
    idp.fault("reset")
    with harness.Conn(idp.port) as c:
        c.send(harness.build_request("GET", harness.AUTH_TRAEFIK, harness.auth_headers("app1.test")))
        try:
            got = c.read_until_close()
            raise AssertionError(f"reset: expected ECONNRESET, got {got!r}")
        except ConnectionResetError:
            pass
    idp.fault("garbage")
    with harness.Conn(idp.port) as c:
        c.send(harness.build_request("GET", harness.AUTH_TRAEFIK, harness.auth_headers("app1.test")))
        got = c.read_until_close()
        check(got and not got.startswith(b"HTTP/"), "non-HTTP bytes", got)
    idp.fault("ok")
    eq(idp.auth("app1.test", "/", cookie="ck-f").status, 200, "after mode ok")
    eq(idp.calls("ck-f"), 3, "calls of ck-f counted in every mode")
    eq(idp.calls(), 5, "total calls, reset and garbage included")


@case
def fault_refuse_and_recovery():
    idp.reset()
    idp.session("ck-r", "rita")
    held = harness.Conn(idp.port)
    eq(idp.auth("app1.test", "/", cookie="ck-r", conn=held).status, 200, "before refuse")
    idp.fault("refuse")
    try:
        socket.create_connection(("127.0.0.1", idp.port), timeout=2).close()
        raise AssertionError("refuse: expected connection refused, got a connection")
    except ConnectionRefusedError:
        pass
    try:
        r = idp.auth("app1.test", "/", cookie="ck-r", conn=held)
        raise AssertionError(f"refuse: expected the open connection cut, got {r.status}")
    except (ConnectionError, OSError):
        pass
    held.close()
    eq(idp.calls(), 1, "refused requests are not counted")
    idp.fault("ok")
    eq(idp.auth("app1.test", "/", cookie="ck-r").status, 200, "after recovery, same port")


@case
def fault_hang_then_release():
    idp.reset()
    idp.fault("hang")
    c = harness.Conn(idp.port, timeout=0.4)
    c.send(harness.build_request("GET", harness.AUTH_TRAEFIK, harness.auth_headers("app1.test")))
    try:
        r = c.read_response()
        raise AssertionError(f"hang: expected no answer, got {r.status}")
    except TimeoutError:
        pass
    eq(idp.calls(), 1, "hung request counted")
    idp.fault("ok")
    c.settimeout(2)
    eq(c.read_until_close(), b"", "hung connection closed without an answer once mode changes")
    c.close()
    eq(idp.auth("app1.test", "/").status, 302, "answers again")


@case
def latency_delays_answers():
    idp.reset()
    idp.fault(latency_ms=300)
    t0 = time.monotonic()
    eq(idp.auth("app1.test", "/").status, 302, "status with latency")
    dt = time.monotonic() - t0
    check(dt >= 0.3, "answer delayed >= 300 ms", dt)
    idp.fault("503")
    t0 = time.monotonic()
    eq(idp.auth("app1.test", "/").status, 503, "latency applies in mode 503 too")
    check(time.monotonic() - t0 >= 0.3, "503 delayed")
    idp.fault(latency_ms=0)
    idp.fault("ok")
    t0 = time.monotonic()
    idp.auth("app1.test", "/")
    check(time.monotonic() - t0 < 0.2, "no delay at latency 0", time.monotonic() - t0)


@case
def call_counters():
    idp.reset()
    eq(idp.calls(), 0, "total after reset")
    for _ in range(3):
        idp.auth("app1.test", "/", cookie="count-a")
    idp.auth("nope.test", "/", cookie="count-b")
    idp.auth("app1.test", "/")
    harness.request(idp.port, "GET", "/not-auth")
    eq(idp.calls("count-a"), 3, "calls for count-a")
    eq(idp.calls("count-b"), 1, "calls for count-b")
    eq(idp.calls("never-seen"), 0, "calls for an unseen cookie")
    eq(idp.calls(), 5, "total calls")
    idp.reset()
    eq(idp.calls("count-a"), 0, "count-a after reset")


@case
def keep_alive_pipelining_and_framing():
    idp.session("ck-p", "pia")
    with harness.Conn(idp.port) as c:
        for i in range(3):
            eq(idp.auth("app1.test", f"/{i}", cookie="ck-p", conn=c).status, 200, f"keep-alive #{i}")
        # Five requests in one write, a POST with a body among them: answered in order.
        reqs = [("app1.test", "ck-p", 200), ("app2.test", "ck-p", 403), ("nope.test", None, 400),
                ("app1.test", None, 302), ("open.test", None, 200)]
        data = b""
        for i, (host, cookie, _) in enumerate(reqs):
            body = b"x" * 1000 if i == 1 else b""
            data += harness.build_request("POST" if body else "GET", harness.AUTH_TRAEFIK,
                                          harness.auth_headers(host, "/public/", cookie), body)
        c.send(data)
        for i, (host, _, want) in enumerate(reqs):
            eq(c.read_response().status, want, f"pipelined answer #{i} ({host})")
        r = idp.auth("app1.test", "/", cookie="ck-p", conn=c,
                     headers=[("Connection", "close")])
        eq(r.header("Connection"), "close", "Connection: close echoed")
        eq(c.read_until_close(), b"", "closed after Connection: close")
    with harness.Conn(idp.port) as c:
        c.send(b"GET /healthz HTTP/1.0\r\n\r\n")
        r = c.read_response()
        eq(r.status, 404, "HTTP/1.0 request on the auth port")
        eq(c.read_until_close(), b"", "HTTP/1.0 closed")
    with harness.Conn(idp.port) as c:
        c.send(b"POST " + harness.AUTH_TRAEFIK.encode() + b" HTTP/1.1\r\nHost: x\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        eq(c.read_response().status, 400, "chunked request")
    with harness.Conn(idp.port) as c:
        c.send(b"NOT HTTP AT ALL\r\n\r\n")
        eq(c.read_response().status, 400, "malformed request")
    # Requests split across many small writes.
    with harness.Conn(idp.port) as c:
        data = harness.build_request("GET", harness.AUTH_TRAEFIK,
                                     harness.auth_headers("app1.test", "/", "ck-p"))
        for i in range(0, len(data), 7):
            c.send(data[i:i + 7])
            time.sleep(0.001)
        eq(c.read_response().status, 200, "request sent in pieces")


@case
def command_line_errors_and_sigterm():
    rc, out, err = harness.run([harness.IDP_BIN, "--listen", "127.0.0.1:1"])
    eq(rc, 2, "exit status without --control")
    eq(len(err.strip().splitlines()), 1, "one line on stderr")
    rc, _, err = harness.run([harness.IDP_BIN, "--listen", "x", "--control", "127.0.0.1:9"])
    eq(rc, 2, "exit status for a bad address")
    rc, _, err = harness.run([harness.IDP_BIN, "--bogus"])
    eq(rc, 2, "exit status for an unknown flag")
    rc, _, err = harness.run([harness.IDP_BIN, "--listen", f"127.0.0.1:{idp.port}",
                              "--control", f"127.0.0.1:{harness.free_port()}"])
    eq(rc, 2, "exit status when the port is taken")
    check("--listen" in err, "message names the flag", err)
    other = harness.start_idp(["--cookie-name", "sess", "--app", "x.test;allow=ops"], name="idp2")
    other.session("v", "olga", ["ops"])
    r = other.auth("x.test", "/", cookie="v")
    eq(r.status, 200, "custom cookie name and app")
    eq(harness.request(other.port, "GET", harness.AUTH_TRAEFIK,
                       harness.auth_headers("x.test", "/", "v", cookie_name="authentik_proxy_3f2a1b0c")
                       ).status, 302, "other cookie names are ignored")
    eq(other.proc.stop(signal.SIGTERM), 0, "exit status on SIGTERM")


if __name__ == "__main__":
    harness.main(setup)
