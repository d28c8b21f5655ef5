"""test_idp.py — the test IdP (build/test-idp, or $IDP_BIN) against its own contract: identity
headers and JWT of a valid session, unauthenticated paths, login redirect and nginx 401, group
allow-list, unknown host, login callback, sign-out, expiry, every fault mode, latency, call counters,
keep-alive, pipelining and request framing, command-line errors and SIGTERM. Then the additions:
authentik domain mode, header login after the cookie, extra (additionalHeaders) headers; the
oauth2-proxy mode (202/401/403, X-Auth-Request-*, bearer and Basic before the cookie, skip routes,
trusted IPs, cookie refresh, split cookies, sign-out); the Authelia mode (forward-auth,
auth-request, legacy /api/verify, rules, Proxy-Authorization); the oracle listener; determinism.

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
import urllib.parse

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

# ---------------------------------------------------------------- the other modes and additions

def start_mode(mode, args=(), oracle=False, name=None):
    """A test IdP in --mode `mode`; .oracle is the oracle port when asked for."""
    extra = ["--mode", mode] + list(args)
    port = harness.free_port() if oracle else None
    if oracle:
        extra += ["--oracle", f"127.0.0.1:{port}"]
    p = harness.start_idp(extra, name=name or f"idp-{mode}")
    p.oracle = port
    return p


def register(p, cookie, user, groups=None, email=None, ttl=None, basic=None, bearer=None,
             extra=()):
    """/session with the new parameters; extra: ["Name:value", ...]."""
    params = [("cookie", cookie), ("user", user)]
    for k, v in (("groups", harness._join(groups)), ("email", email), ("ttl", ttl),
                 ("basic", basic), ("bearer", bearer)):
        if v is not None:
            params.append((k, v))
    params += [("extra", x) for x in extra]
    qs = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
    r = harness.request(p.control, "POST", "/session?" + qs)
    eq(r.status, 200, f"/session?{qs}: {r.body!r}")
    return json.loads(r.body)


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def ak_auth(p, host, uri="/", cookie=None, headers=()):
    return p.auth(host, uri, cookie=cookie, headers=headers)


@case
def authentik_domain_and_single_app_mode():
    p = harness.start_idp(["--app", "auth.corp.test;domain=corp.test", "--app", "solo.test",
                           "--app", "deep.a.corp.test;domain=a.corp.test"], name="idp-domain")
    p.session("dm-1", "dora")
    for host in ("wiki.corp.test", "corp.test", "auth.corp.test"):
        r = ak_auth(p, host, "/", "dm-1")
        eq(r.status, 200, f"{host}: a host under the cookie domain shares the app and cookie")
        eq(r.header("X-authentik-meta-app"), "auth", f"{host}: the domain app answers")
    eq(ak_auth(p, "x.a.corp.test", "/", "dm-1").header("X-authentik-meta-app"), "deep",
       "the longest matching cookie domain wins")
    eq(ak_auth(p, "other.test", "/", "dm-1").status, 400, "a host under no app")
    eq(ak_auth(p, "x.solo.test", "/", "dm-1").status, 400, "single-app mode: only its own host")
    r = ak_auth(p, "wiki.corp.test", "/page")
    eq(r.status, 302, "deny in domain mode")
    check("Domain=corp.test;" in r.header("Set-Cookie", ""), "cookie for the whole domain",
          r.header("Set-Cookie"))
    check("auth.corp.test%2Foutpost.goauthentik.io%2Fcallback" in r.header("Location", ""),
          "the login comes back to the app's own host", r.header("Location"))
    r = ak_auth(p, "solo.test", "/page")
    check("Domain=solo.test;" in r.header("Set-Cookie", ""), "single-app cookie for its host",
          r.header("Set-Cookie"))
    rc, _, _ = harness.run([harness.IDP_BIN, "--listen", "127.0.0.1:1", "--control",
                            "127.0.0.1:2", "--app", "a.test;domain=b.test"])
    eq(rc, 2, "an app host outside its cookie domain is refused")


@case
def authentik_header_auth_after_the_cookie():
    register(idp, "hb-hank", "hank", ["users"], basic="s3cret", bearer="tok-hank")
    idp.session("hb-alice", "alice", ["admins"])
    for auth in ("Bearer tok-hank", basic("hank", "s3cret")):
        r = ak_auth(idp, "app1.test", "/", headers=[("Authorization", auth)])
        eq(r.status, 200, f"{auth.split()[0]} without a cookie")
        eq(r.header("X-authentik-username"), "hank", "user of the credential")
        value, sc = set_cookie_value(r)
        check(re.fullmatch(r"[A-Za-z0-9]{32}", value), "a new session cookie on the 200", sc)
        again = ak_auth(idp, "app1.test", "/", headers=[("Authorization", auth)])
        eq(again.header("Set-Cookie"), sc, "the same question gets the same cookie")
        r = ak_auth(idp, "app1.test", "/", cookie=value)
        eq(r.header("X-authentik-username"), "hank", "the new cookie is a session of hank")
    hank = [("Authorization", "Bearer tok-hank")]
    r = ak_auth(idp, "app1.test", "/", cookie="hb-alice", headers=hank)
    eq(r.header("X-authentik-username"), "alice", "the cookie wins over Authorization")
    eq(r.header("Set-Cookie"), None, "no new cookie when the cookie logged in")
    r = ak_auth(idp, "app1.test", "/", cookie="no-such", headers=hank)
    eq(r.header("X-authentik-username"), "hank", "an unknown cookie falls back to the header")
    eq(ak_auth(idp, "app1.test", "/", headers=[("Authorization", basic("hank", "wrong"))]).status,
       302, "a wrong password")
    eq(ak_auth(idp, "app1.test", "/", headers=[("Authorization", "Bearer nope")]).status, 302,
       "an unknown token")
    eq(ak_auth(idp, "app2.test", "/", headers=[("Authorization", "Bearer tok-hank")]).status, 403,
       "the allow group applies to a header login")
    eq(idp.end(user="hank") >= 1, True, "hank's sessions ended")
    eq(ak_auth(idp, "app1.test", "/", headers=[("Authorization", "Bearer tok-hank")]).status, 302,
       "the bearer token is revoked with the user")
    register(idp, "hb-hank2", "hank", basic="s3cret")
    eq(ak_auth(idp, "app1.test", "/", headers=[("Authorization", "Bearer tok-hank")]).status, 302,
       "a new session does not bring the revoked token back")
    r = harness.request(idp.control, "POST", "/end?cookie=hb-hank2")
    eq(json.loads(r.body), {"ended": 1, "revoked": 1}, "/end by cookie revokes the owner's Basic")
    eq(ak_auth(idp, "app1.test", "/", headers=[("Authorization", basic("hank", "s3cret"))]).status,
       302, "Basic revoked")


@case
def authentik_extra_headers_and_outpost_paths():
    register(idp, "ex-1", "xena", email="xena@corp.test", extra=["X-Team:blue", "Remote-Floor: 3"])
    r = ak_auth(idp, "app1.test", "/", "ex-1")
    eq(r.header("X-Team"), "blue", "additionalHeaders X-Team")
    eq(r.header("Remote-Floor"), "3", "additionalHeaders of any name")
    eq(r.header("X-authentik-email"), "xena@corp.test", "email=")
    eq(r.names()[-3:-1], ["X-Team", "Remote-Floor"], "extra headers after the identity")
    eq(ak_auth(idp, "app1.test", "/", "ck-alice").header("X-Team"), None, "only that session")
    for cookie in (None, "ex-1"):
        r = ak_auth(idp, "app1.test", "/outpost.goauthentik.io/start?rd=x", cookie)
        eq((r.status, identity_names(r), r.header("Set-Cookie")), (200, [], None),
           f"an outpost path answers 200 without identity (cookie {cookie})")
    eq(harness.request(idp.control, "POST", "/session?cookie=e&user=u&extra=bad").status, 400,
       "extra without a colon")


@case
def oauth2_proxy_allow_deny_and_query_checks():
    p = start_mode("oauth2-proxy", ["--set-xauthrequest"])
    register(p, "o-ann", "ann", ["users", "ops"], email="ann@corp.test")

    def ask(cookie=None, query="", headers=()):
        h = harness.auth_headers("app.test", "/x", cookie, "_oauth2_proxy") + list(headers)
        return harness.request(p.port, "GET", "/oauth2/auth" + query, h)
    r = ask()
    eq((r.status, r.body), (401, b"Unauthorized\n"), "no session")
    r = ask("o-ann")
    eq(r.status, 202, "a session")
    eq([(k, v) for k, v in r.headers if k.startswith("X-Auth-Request-")],
       [("X-Auth-Request-User", "ann"), ("X-Auth-Request-Email", "ann@corp.test"),
        ("X-Auth-Request-Groups", "users,ops"), ("X-Auth-Request-Preferred-Username", "ann")],
       "X-Auth-Request-* with --set-xauthrequest")
    eq(ask("o-ann", "?allowed_groups=admins").status, 403, "allowed_groups refuses")
    eq(ask("o-ann", "?allowed_groups=admins,ops").status, 202, "allowed_groups accepts")
    eq(ask("o-ann", "?allowed_emails=bob@corp.test").status, 403, "allowed_emails refuses")
    eq(ask("o-ann", "?allowed_emails=ann@corp.test").status, 202, "allowed_emails accepts")
    eq(ask("o-ann", "?allowed_email_domains=other.test").status, 403, "allowed_email_domains")
    eq(ask(None, "?allowed_groups=admins").status, 401, "no session: 401 before the query check")
    eq(harness.request(p.port, "GET", "/outpost.goauthentik.io/auth/traefik").status, 404,
       "authentik's endpoint does not exist here")
    r = harness.request(p.port, "GET", "/oauth2/auth",
                        harness.auth_headers("a.test", "/", "x", "_oauth2_proxy") +
                        [("Cookie", "_oauth2_proxy_0=o-a; _oauth2_proxy_1=nn")])
    eq(r.status, 401, "a whole cookie (unknown) hides split parts")
    r = harness.request(p.port, "GET", "/oauth2/auth",
                        [("Cookie", "_oauth2_proxy_0=o-a; _oauth2_proxy_1=nn")])
    eq(r.header("X-Auth-Request-User"), "ann", "split cookies _0 and _1 are joined")
    q = start_mode("oauth2-proxy", ["--set-xauthrequest", "false", "--app", "ignored.test"],
                   name="idp-o2p-quiet")
    register(q, "o-ann", "ann")
    r = harness.request(q.port, "GET", "/oauth2/auth", [("Cookie", "_oauth2_proxy=o-ann")])
    eq(r.status, 202, "status without --set-xauthrequest")
    eq([k for k, _ in r.headers if k.startswith("X-Auth-Request")], [],
       "no user header without --set-xauthrequest")


@case
def oauth2_proxy_bearer_and_basic_before_the_cookie():
    p = start_mode("oauth2-proxy", ["--set-xauthrequest", "--skip-jwt-bearer-tokens"])
    d = start_mode("oauth2-proxy", ["--set-xauthrequest", "--skip-jwt-bearer-tokens",
                                    "--deny-invalid-jwts"], name="idp-o2p-deny")
    for x in (p, d):
        register(x, "ob-amy", "amy", ["users"])
        register(x, "ob-ben", "ben", ["admins"], bearer="tok-ben", basic="pw-ben")

    def user(x, auth, cookie="ob-amy", query=""):
        h = [("Cookie", f"_oauth2_proxy={cookie}")] if cookie else []
        r = harness.request(x.port, "GET", "/oauth2/auth" + query, h + [("Authorization", auth)])
        return r.status, r.header("X-Auth-Request-User")
    eq(user(p, "Bearer tok-ben"), (202, "ben"), "a registered bearer hides the cookie")
    eq(user(p, "Bearer tok-ben", query="?allowed_groups=users"), (403, None),
       "the bearer's user decides the group check")
    eq(user(p, "Bearer unknown"), (202, "amy"), "an unknown bearer falls through to the cookie")
    eq(user(d, "Bearer unknown"), (403, None), "--deny-invalid-jwts: 403 even with a cookie")
    eq(user(d, "Bearer tok-ben"), (202, "ben"), "--deny-invalid-jwts: a valid bearer")
    eq(user(p, basic("ben", "pw-ben")), (202, "ben"), "a registered Basic before the cookie")
    eq(user(p, basic("ben", "nope")), (202, "amy"), "a wrong Basic falls through")
    eq(user(p, basic("ben", "pw-ben"), cookie=None), (202, "ben"), "Basic alone")
    q = start_mode("oauth2-proxy", ["--set-xauthrequest"], name="idp-o2p-nojwt")
    register(q, "ob-amy", "amy")
    register(q, "ob-ben", "ben", bearer="tok-ben")
    eq(user(q, "Bearer tok-ben"), (202, "amy"), "without --skip-jwt-bearer-tokens no bearer")
    eq(user(q, "Bearer tok-ben", cookie=None), (401, None), "...and alone it is no session")


@case
def oauth2_proxy_skip_routes_and_trusted_ips():
    p = start_mode("oauth2-proxy", ["--set-xauthrequest", "--skip-auth-route", "GET=^/public/",
                                    "--skip-auth-route", "^/health$", "--trusted-ip",
                                    "10.1.0.0/16"])
    register(p, "os-cy", "cy", ["users"])

    def ask(uri, cookie=None, method="GET", query="", headers=()):
        h = harness.auth_headers("app.test", uri, cookie, "_oauth2_proxy", method="PUT")
        r = harness.request(p.port, method, "/oauth2/auth" + query, h + list(headers))
        return r.status, r.header("X-Auth-Request-User")
    eq(ask("/public/a?b=c"), (202, None), "a skip route without a session: 202 without identity")
    eq(ask("/public/a", "os-cy", query="?allowed_groups=admins"), (202, "cy"),
       "a skip route with a session: its identity, group check skipped")
    eq(ask("/public/a", method="POST"), (401, None),
       "the method of the auth request itself (POST) does not match GET=")
    eq(ask("/health", method="DELETE"), (202, None), "a route without a method")
    eq(ask("/private"), (401, None), "outside the routes")
    eq(ask("/x", headers=[("X-Real-IP", "10.1.2.3")]), (202, None), "a trusted X-Real-IP")
    eq(ask("/x", headers=[("X-Real-IP", "10.2.0.1")]), (401, None), "an untrusted X-Real-IP")
    eq(ask("/x", headers=[("X-Forwarded-For", "10.1.2.3")]), (401, None),
       "X-Forwarded-For is not the client IP header")
    rc, _, _ = harness.run([harness.IDP_BIN, "--listen", "127.0.0.1:1", "--control",
                            "127.0.0.1:2", "--skip-auth-route", "GET=("])
    eq(rc, 2, "a bad regex is refused")


@case
def oauth2_proxy_cookie_refresh_and_sign_out():
    p = start_mode("oauth2-proxy", ["--set-xauthrequest", "--cookie-refresh", "2"])
    register(p, "or-dan", "dan")

    def ask(cookie, uri="/"):
        return harness.request(p.port, "GET", "/oauth2/auth",
                               harness.auth_headers("app.test", uri, cookie, "_oauth2_proxy"))
    eq(ask("or-dan").header("Set-Cookie"), None, "a young session gets no new cookie")
    time.sleep(2.2)
    r1, r2 = ask("or-dan"), ask("or-dan")
    eq(r1.status, 202, "status of a refreshed session")
    sc = r1.header("Set-Cookie") or ""
    m = re.match(r"_oauth2_proxy=([A-Za-z0-9]{32}); ", sc)
    check(m, "Set-Cookie: _oauth2_proxy=<new value> on the 202", sc)
    eq(r2.header("Set-Cookie"), sc, "the same question, the same new cookie")
    eq(ask(m.group(1)).header("X-Auth-Request-User"), "dan", "the new value is dan's session")
    p.reset()
    r = harness.request(p.port, "GET", "/oauth2/sign_out?rd=/bye",
                        [("Cookie", "_oauth2_proxy=or-dan")])
    eq(r.status, 302, "sign_out status")
    eq(r.header("Location"), "/bye", "sign_out Location")
    check(re.match(r"_oauth2_proxy=; Path=/; Expires=Thu, 01 Jan 1970", r.header("Set-Cookie", "")),
          "sign_out clears the cookie", r.header("Set-Cookie"))
    eq(p.calls(), 0, "sign_out is not a forward-auth check")
    eq(ask("or-dan", "/oauth2/sign_out").status, 202,
       "a check of the sign_out path is just a check")


AU_RULES = ["--rule", "host=public.test;policy=bypass",
            "--rule", "host=app.test;path=^/admin;subject=group:admins|user:root;policy=one_factor",
            "--rule", "host=app.test;path=^/admin;policy=deny",
            "--rule", r"host=app.test;path=\?secret=1$;policy=deny",
            "--rule", "host=app.test;path=^/ro;methods=POST,PUT;policy=deny",
            "--rule", "host=app.test;path=^/intranet;networks=10.0.0.0/8,192.0.2.7;policy=bypass",
            "--rule", "host=app.test;path=^/intranet;policy=deny",
            "--rule", "host=*.wild.test;policy=deny",
            "--default-policy", "one_factor"]

au = None


def au_idp():
    global au
    if au is None:
        au = start_mode("authelia", AU_RULES, oracle=True)
        register(au, "au-alice", "alice", ["admins", "users"], email="alice@corp.test")
        register(au, "au-bob", "bob", ["users"], basic="pw-bob")
    return au


def fwd(host, uri, cookie=None, method="GET", proto="https", headers=(), accept="text/html",
        endpoint="/api/authz/forward-auth", port=None):
    h = [("X-Forwarded-Proto", proto), ("X-Forwarded-Host", host), ("X-Forwarded-Uri", uri),
         ("X-Forwarded-Method", method)]
    if accept:
        h.append(("Accept", accept))
    if cookie:
        h.append(("Cookie", f"authelia_session={cookie}"))
    return harness.request(port or au_idp().port, "GET", endpoint, h + list(headers))


@case
def authelia_forward_auth_answers():
    au_idp()
    r = fwd("app.test", "/x", "au-alice")
    eq(r.status, 200, "a session")
    eq([(k, v) for k, v in r.headers if k.startswith("Remote-")],
       [("Remote-User", "alice"), ("Remote-Groups", "admins,users"), ("Remote-Name", "Test alice"),
        ("Remote-Email", "alice@corp.test")], "Remote-* headers")
    r = fwd("app.test", "/x?a=1")
    eq(r.status, 302, "no session, GET, Accept text/html")
    eq(r.header("Location"), "https://auth.test/?rd=https%3A%2F%2Fapp.test%2Fx%3Fa%3D1&rm=GET",
       "Location: the portal with rd=")
    eq(fwd("app.test", "/x", method="POST").status, 303, "POST: 303")
    eq(fwd("app.test", "/x", method="OPTIONS").status, 302, "OPTIONS: 302")
    eq(fwd("app.test", "/x", accept="application/json").status, 401, "Accept without text/html")
    eq(fwd("app.test", "/x", accept=None).status, 401, "no Accept")
    eq(fwd("app.test", "/x", accept="*/*").status, 302, "Accept */* first")
    eq(fwd("app.test", "/x", headers=[("X-Requested-With", "XMLHttpRequest")]).status, 401, "XHR")
    r = fwd("app.test", "/x", method="HEAD")
    eq((r.status, r.header("Content-Length")), (302, "0"), "HEAD: a redirect without a body")
    eq(fwd("app.test", "/x", "au-alice", proto="http").status, 400, "http target")
    eq(fwd("example.com", "/x", "au-alice").status, 400, "host under no cookie domain")
    r = harness.request(au.port, "GET", "/api/authz/forward-auth",
                        [("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "app.test"),
                         ("X-Forwarded-Uri", "/x"), ("Cookie", "authelia_session=au-alice")])
    eq(r.status, 400, "forward-auth without X-Forwarded-Method")


@case
def authelia_rules_first_match():
    au_idp()

    def st(host, uri, cookie=None, **kw):
        r = fwd(host, uri, cookie, **kw)
        return r.status, r.header("Remote-User")
    eq(st("public.test", "/"), (200, None), "bypass without a session: no identity")
    eq(st("public.test", "/", "au-bob"), (200, "bob"),
       "bypass with a session: Authelia still sends its identity (handleAuthzAuthorizedStandard)")
    eq(st("app.test", "/admin/x", "au-alice"), (200, "alice"), "subject group:admins")
    eq(st("app.test", "/admin/x", "au-bob"), (403, None), "the next rule denies bob")
    eq(st("app.test", "/admin"), (302, None), "anonymous on a rule with subjects: log in first")
    eq(st("app.test", "/a/../admin", "au-bob"), (403, None), "the path is cleaned before matching")
    eq(st("app.test", "/page?secret=1", "au-bob"), (403, None), "the query is part of the path")
    eq(st("app.test", "/page?secret=12", "au-bob"), (200, "bob"), "another query")
    eq(st("app.test", "/ro", "au-bob", method="POST"), (403, None), "methods=POST")
    eq(st("app.test", "/ro", "au-bob", method="GET"), (200, "bob"), "GET is not in methods")
    for xff, want in (("10.9.8.7", 200), ("10.9.8.7, 192.168.0.1", 200), ("192.0.2.7", 200),
                      ("192.168.0.1, 10.9.8.7", 403), ("garbage, 10.9.8.7", 403)):
        eq(st("app.test", "/intranet", headers=[("X-Forwarded-For", xff)])[0], want,
           f"networks with X-Forwarded-For {xff!r} (first entry, else the peer)")
    eq(st("app.test", "/intranet")[0], 403, "anonymous on a deny rule without subjects: 403")
    eq(st("x.wild.test", "/", "au-bob")[0], 403, "*.wild.test matches a subdomain")
    eq(st("wild.test", "/", "au-bob")[0], 200, "...but not the domain itself (default policy)")


@case
def authelia_proxy_authorization_first():
    au_idp()
    bob = [("Proxy-Authorization", basic("bob", "pw-bob"))]
    bad = [("Proxy-Authorization", basic("bob", "nope"))]
    r = fwd("app.test", "/x", headers=bob)
    eq((r.status, r.header("Remote-User")), (200, "bob"), "Proxy-Authorization Basic")
    r = fwd("app.test", "/x", "au-alice", headers=bob)
    eq(r.header("Remote-User"), "bob", "Proxy-Authorization beats the cookie")
    r = fwd("app.test", "/x", "au-alice", headers=bad)
    eq(r.status, 407, "a bad Proxy-Authorization with a valid cookie (forward-auth)")
    eq(r.header("Proxy-Authenticate"), 'Basic realm="Authorization Required"', "Proxy-Authenticate")
    eq(fwd("public.test", "/", headers=bad).status, 200, "...except on a bypass rule")
    r = fwd("app.test", "/x", "au-alice", headers=bad, endpoint="/api/authz/auth-request",
            port=None)
    eq(r.status, 400, "auth-request ignores X-Forwarded-*")
    r = harness.request(au.port, "GET", "/api/authz/auth-request",
                        [("X-Original-URL", "https://app.test/x"), ("X-Original-Method", "GET"),
                         ("Cookie", "authelia_session=au-alice")] + bad)
    eq((r.status, r.header("WWW-Authenticate")), (401, 'Basic realm="Authorization Required"'),
       "auth-request: a bad header is 401 with WWW-Authenticate")
    r = fwd("app.test", "/x", "au-alice", headers=[("Proxy-Authorization", "Bearer xyz")])
    eq(r.header("Remote-User"), "alice", "a scheme forward-auth does not handle is skipped")


@case
def authelia_auth_request_and_legacy_verify():
    au_idp()

    def ar(url, method="GET", cookie=None, path="/api/authz/auth-request", headers=()):
        h = []
        if url:
            h.append(("X-Original-URL", url))
        if method:
            h.append(("X-Original-Method", method))
        if cookie:
            h.append(("Cookie", f"authelia_session={cookie}"))
        return harness.request(au.port, "GET", path, h + [("Accept", "text/html")] + list(headers))
    r = ar("https://app.test/x", cookie="au-alice")
    eq((r.status, r.header("Remote-User")), (200, "alice"), "auth-request allow")
    r = ar("https://app.test/x")
    eq(r.status, 401, "auth-request: not logged in is always 401")
    eq(r.header("Location"), "https://auth.test/?rd=https%3A%2F%2Fapp.test%2Fx&rm=GET", "Location")
    eq(ar("https://app.test/x", method=None, cookie="au-alice").status, 400,
       "auth-request without X-Original-Method")
    eq(ar("http://app.test/x", cookie="au-alice").status, 400, "auth-request, http target")
    eq(ar("https://app.test/admin", "DELETE", "au-bob").status, 403, "auth-request deny")
    # Legacy: X-Original-URL, else X-Forwarded-*; the method from X-Forwarded-Method or its own.
    r = ar("https://app.test/x", method=None, cookie="au-bob", path="/api/verify")
    eq((r.status, r.header("Remote-User")), (200, "bob"), "legacy with X-Original-URL")
    r = fwd("app.test", "/x", "au-bob", endpoint="/api/verify")
    eq(r.header("Remote-User"), "bob", "legacy with X-Forwarded-*")
    eq(fwd("app.test", "/x", endpoint="/api/verify").status, 401, "legacy without ?rd=: 401")
    r = fwd("app.test", "/x", endpoint="/api/verify?rd=https://auth.test/")
    eq((r.status, r.header("Location")),
       (302, "https://auth.test/?rd=https%3A%2F%2Fapp.test%2Fx&rm=GET"), "legacy with ?rd=")
    eq(fwd("app.test", "/x", "au-bob", proto="http", endpoint="/api/verify").status, 401,
       "legacy: an http target is 401")
    r = fwd("app.test", "/x", "au-bob", endpoint="/api/verify?auth=basic")
    eq((r.status, r.header("WWW-Authenticate")), (401, 'Basic realm="Authorization Required"'),
       "legacy ?auth=basic needs Authorization")
    r = fwd("app.test", "/x", endpoint="/api/verify?auth=basic",
            headers=[("Authorization", basic("bob", "pw-bob"))])
    eq(r.header("Remote-User"), "bob", "legacy ?auth=basic reads Authorization")


@case
def authelia_apps_become_rules():
    """The --app list (here the default one) plays the same site in Authelia mode."""
    p = start_mode("authelia", ["--app", "app1.test", "--app", "app2.test;allow=admins",
                                "--app", "open.test;skip=/public/,/a.b"], name="idp-au-apps")
    register(p, "aa-amy", "amy", ["users"])
    register(p, "aa-root", "root", ["admins"])
    for host, uri, cookie, want in (
            ("app1.test", "/", "aa-amy", 200), ("app1.test", "/", None, 302),
            ("app2.test", "/", "aa-amy", 403), ("app2.test", "/", "aa-root", 200),
            ("app2.test", "/", None, 302),
            ("open.test", "/public/x", None, 200), ("open.test", "/private", None, 302),
            ("open.test", "/a.b", None, 200), ("open.test", "/axb", None, 302),
            ("unknown.test", "/", "aa-amy", 403)):
        eq(fwd(host, uri, cookie, port=p.port).status, want, f"{host}{uri} cookie {cookie}")
    eq(fwd("app1.test", "/", "aa-amy", port=p.port).header("Remote-User"), "amy", "identity")


@case
def oracle_is_never_faulted_nor_counted():
    p = au_idp()
    p.reset()

    def both(uri, cookie):
        return fwd("app.test", uri, cookie), fwd("app.test", uri, cookie, port=p.oracle)
    main, oracle = both("/x", "au-alice")
    eq((oracle.status, oracle.headers, oracle.body), (main.status, main.headers, main.body),
       "the oracle answers like the main listener")
    eq(p.calls(), 1, "oracle requests are not counted")
    p.fault("503", latency_ms=300)
    t0 = time.monotonic()
    eq(fwd("app.test", "/x", "au-alice", port=p.oracle).status, 200, "oracle during fault 503")
    check(time.monotonic() - t0 < 0.25, "no latency on the oracle", time.monotonic() - t0)
    eq(fwd("app.test", "/x", "au-alice").status, 503, "the main listener is faulted")
    p.fault("refuse", latency_ms=0)
    eq(fwd("app.test", "/x", "au-alice", port=p.oracle).status, 200, "oracle during refuse")
    p.fault("ok")
    eq(p.calls(), 2, "only the main listener's checks counted")
    eq(p.calls("au-alice"), 2, "per cookie too")


@case
def answers_are_deterministic():
    """Every mode: the same question twice, and to the oracle, gets the same bytes."""
    a = start_mode("authentik", ["--app", "app1.test", "--app", "auth.corp.test;domain=corp.test"],
                   oracle=True, name="idp-det-ak")
    register(a, "det-1", "dee", bearer="tok-dee", extra=["X-Team:red"])
    o = start_mode("oauth2-proxy", ["--set-xauthrequest", "--cookie-refresh", "2",
                                    "--skip-jwt-bearer-tokens"], oracle=True, name="idp-det-o2p")
    register(o, "det-1", "dee", bearer="tok-dee")
    time.sleep(2.1)  # one refresh period: the cookie answer carries a new cookie
    asks = [
        (a, "/outpost.goauthentik.io/auth/traefik", harness.auth_headers("app1.test", "/p?q=1")),
        (a, "/outpost.goauthentik.io/auth/nginx", harness.auth_headers("wiki.corp.test", "/")),
        (a, "/outpost.goauthentik.io/auth/traefik",
         harness.auth_headers("app1.test", "/", "det-1")),
        (a, "/outpost.goauthentik.io/auth/traefik",
         harness.auth_headers("app1.test", "/") + [("Authorization", "Bearer tok-dee")]),
        (o, "/oauth2/auth", [("Cookie", "_oauth2_proxy=det-1")]),
        (o, "/oauth2/auth", [("Authorization", "Bearer tok-dee")]),
        (o, "/oauth2/auth", []),
        (au_idp(), "/api/authz/forward-auth",
         [("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "app.test"),
          ("X-Forwarded-Uri", "/a?b=c"), ("X-Forwarded-Method", "PUT"), ("Accept", "text/html")]),
    ]
    for p, path, headers in asks:
        got = [harness.request(port, "GET", path, headers) for port in (p.port, p.port, p.oracle)]
        raw = [(r.status, r.headers, r.body) for r in got]
        eq(raw[1], raw[0], f"{path} {headers}: asked twice")
        eq(raw[2], raw[0], f"{path} {headers}: main vs oracle")


if __name__ == "__main__":
    harness.main(setup)
