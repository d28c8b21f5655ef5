"""test_proxies.py — authcached behind real reverse proxies, configured from the deploy templates.

Caddy runs deploy/caddy/Caddyfile itself (its {$ENV} placeholders set to local ports); nginx runs
deploy/nginx/authcache.conf with its upstream addresses and listen port replaced. In front of each:
a logged-in session reaches the application with authentik's identity headers and is asked of the
IdP once (a miss, then hits); an unknown session gets the login answer (Caddy: the IdP's 302 as it
is; nginx: the IdP's 401 turned into the redirect to /outpost.goauthentik.io/start); a user outside
the application's group gets 403; identity headers sent by the client never reach the application;
the sign-out route purges the user's cached answers; while the IdP refuses connections, a cached
session is still served and a new one is refused (Caddy: authcached's 503 as it is; nginx: 500).

The application is an HTTP server in this process that answers every request with a JSON echo of
what it received. Everything generated (configs, Caddy's home, nginx's prefix, logs) goes under
build/test-logs/. caddy and nginx ($CADDY / $NGINX, else from PATH) are required (`make deps`
installs them): a missing one fails its cases.

Run from the repo root: python3 tests/integration/test_proxies.py [CASE...]
"""

import atexit
import json
import os
import re
import shutil
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import daemon_util  # noqa: E402  (AUTHCACHED_BIN, the sanitizer check)
from harness import case, check, eq  # noqa: E402

AUTHCACHED = daemon_util.BIN  # AUTHCACHED_BIN, e.g. the ASan+UBSan build (tests/run)
CADDYFILE = os.path.join(harness.ROOT, "deploy", "caddy", "Caddyfile")
NGINX_SITE = os.path.join(harness.ROOT, "deploy", "nginx", "authcache.conf")
WORK_ROOT = os.path.join(harness.LOG_DIR, "test_proxies")
WORK = os.path.join(WORK_ROOT, f"run-{os.getpid()}")  # this run's configs, Caddy home, nginx prefix
COOKIE = harness.IDP_COOKIE
SHM = f"authcache-px-{os.getpid()}"
LOGIN_BODY = b"<html><body>Found: redirecting.</body></html>\n"  # the test IdP's 302 body
DENIED_BODY = b"access denied: user is not in the allowed group"  # and its 403 body

idp = None
ac_port = admin_port = None
app = None
caddy = nginx = None  # Proxy, or None with the reason in *_error
caddy_error = nginx_error = None


# ---------------------------------------------------------------- the application

class App:
    """The protected application: answers every request 200 with JSON {method, path, headers
    [[name, value]...], body}; keeps a count of requests."""

    def __init__(self):
        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def answer(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                rec = {"method": self.command, "path": self.path,
                       "headers": [[k, v] for k, v in self.headers.items()],
                       "body": body.decode("latin-1")}
                seen.append(rec)
                out = json.dumps(rec).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_DELETE = answer

            def log_message(self, fmt, *args):
                pass

        self.port = harness.free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self):
        return len(self.seen)


def app_saw(r, what="the application's answer"):
    """The request the application received, from its JSON echo: (record, {lower name: [values]})."""
    check(r.status == 200 and r.header("Content-Type") == "application/json",
          f"{what}: 200 from the application", r)
    rec = json.loads(r.body)
    hdrs = {}
    for k, v in rec["headers"]:
        hdrs.setdefault(k.lower(), []).append(v)
    return rec, hdrs


def identity_of(hdrs):
    return {k: v for k, v in hdrs.items() if k.startswith("x-authentik-")}


# ---------------------------------------------------------------- authcached

def metrics():
    r = harness.request(admin_port, "GET", "/metrics")
    eq(r.status, 200, "GET /metrics")
    out = {}
    for line in r.body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def results():
    """authcached's answers so far by X-Authcache result."""
    m = metrics()
    return {k[len('authcache_requests_total{result="'):-2]: v for k, v in m.items()
            if k.startswith("authcache_requests_total{")}


def delta(before, after):
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def wait_idp_usable():
    """After an outage: until authcached's circuit breaker has closed again."""
    harness.wait_for(lambda: metrics().get("authcache_idp_circuit_open") == 0, timeout=12,
                     what="authcached's circuit breaker closed after the IdP came back")


# ---------------------------------------------------------------- proxies

class Proxy:
    def __init__(self, name, proc, port):
        self.name, self.proc, self.port = name, proc, port

    def get(self, host, path="/", cookie=None, method="GET", headers=(), body=b"", port=None):
        h = [("Host", host)]
        if cookie is not None:
            h.append(("Cookie", f"theme=dark; {COOKIE}={cookie}"))
        return harness.request(port or self.port, method, path, h + list(headers), body)


def find_program(name):
    """$CADDY / $NGINX, else the one on PATH or in /usr/sbin, /usr/bin."""
    given = os.environ.get(name.upper())
    path = given if given else shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None)
    if not path or not os.access(path, os.X_OK):
        raise AssertionError(f"{name} is not installed{f' (${name.upper()}={given})' if given else ''}:"
                             f" run `make deps` (deps.txt lists it)")
    return path


def start_caddy():
    exe = find_program("caddy")
    home = os.path.join(WORK, "caddy-home")  # Caddy's data, config and autosave stay in build/
    os.makedirs(home, exist_ok=True)
    port = harness.free_port()
    env = {"HOME": home, "XDG_DATA_HOME": os.path.join(home, "data"),
           "XDG_CONFIG_HOME": os.path.join(home, "config"),
           "CADDY_ADMIN": "off", "APP_SITE": f"http://:{port}",
           "AUTHCACHED": f"127.0.0.1:{ac_port}", "AUTHENTIK_OUTPOST": f"127.0.0.1:{idp.port}",
           "APP_UPSTREAM": f"127.0.0.1:{app.port}"}
    with open(os.path.join(WORK, "caddy.env"), "w") as f:
        f.write("".join(f"{k}={v}\n" for k, v in env.items()))
    proc = harness.start([exe, "run", "--config", CADDYFILE, "--adapter", "caddyfile"],
                         name="caddy", env=env)
    harness.wait_port(proc, port)
    return Proxy("caddy", proc, port)


def start_nginx():
    exe = find_program("nginx")
    prefix = os.path.join(WORK, "nginx")
    for d in ("logs", "tmp"):
        os.makedirs(os.path.join(prefix, d), exist_ok=True)
    port, port10 = harness.free_port(), harness.free_port()
    with open(NGINX_SITE) as f:
        site = f.read()
    for old, new in (("server 127.0.0.1:9300;", f"server 127.0.0.1:{ac_port};"),
                     ("server 127.0.0.1:9000;", f"server 127.0.0.1:{idp.port};"),
                     ("server 127.0.0.1:8080;", f"server 127.0.0.1:{app.port};"),
                     ("listen 80;", f"listen 127.0.0.1:{port};")):
        eq(site.count(old), 1, f"occurrences of `{old}` in {NGINX_SITE} (the test replaces it)")
        site = site.replace(old, new)
    site_conf = os.path.join(prefix, "authcache.conf")
    with open(site_conf, "w") as f:
        f.write(site)
    error_log = os.path.join(prefix, "logs", "error.log")
    tmp = os.path.join(prefix, "tmp")
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""# generated by tests/integration/test_proxies.py
{"user root;" if os.geteuid() == 0 else ""}
worker_processes 1;
error_log {error_log} info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/logs/access.log;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;

    include {site_conf};

    # Test only: the same check over nginx's default upstream protocol, HTTP/1.0 with a connection
    # per check (no keepalive upstream, no proxy_http_version 1.1).
    server {{
        listen 127.0.0.1:{port10};
        location / {{
            auth_request /_authcache_http10;
            auth_request_set $http10_username $upstream_http_x_authentik_username;
            proxy_set_header X-authentik-username $http10_username;
            proxy_pass http://app;
        }}
        location = /_authcache_http10 {{
            internal;
            proxy_pass http://127.0.0.1:{ac_port}/outpost.goauthentik.io/auth/nginx;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Uri $request_uri;
            proxy_set_header X-Forwarded-Method $request_method;
        }}
    }}
}}
""")
    argv = [exe, "-p", prefix + "/", "-c", conf, "-e", error_log]
    rc, out, err = harness.run(argv + ["-t", "-g", f"pid {prefix}/nginx-t.pid;"])
    check(rc == 0, f"nginx -t accepts {conf}", (out + err).strip())
    proc = harness.start(argv + ["-g", f"daemon off; pid {prefix}/nginx.pid;"], name="nginx")
    harness.wait_port(proc, port)
    p = Proxy("nginx", proc, port)
    p.port10, p.error_log = port10, error_log
    return p


def need(proxy, error):
    if proxy is None:
        raise AssertionError(error)
    check(proxy.proc.alive(), f"{proxy.name} still running", proxy.proc.log_tail())
    return proxy


def clean_old_runs():
    """Removes the directories of earlier runs whose process is gone."""
    for d in os.listdir(WORK_ROOT):
        pid = d[4:] if d.startswith("run-") else ""
        if pid.isdigit() and int(pid) != os.getpid() and not os.path.exists(f"/proc/{pid}"):
            shutil.rmtree(os.path.join(WORK_ROOT, d), ignore_errors=True)


def setup():
    global idp, ac_port, admin_port, app, caddy, nginx, caddy_error, nginx_error, ac
    os.makedirs(WORK, exist_ok=True)
    clean_old_runs()
    if not os.access(AUTHCACHED, os.X_OK):
        raise AssertionError(f"{AUTHCACHED} is missing: run `make build/authcached`")
    idp = harness.start_idp(["--app", "app1.test", "--app", "app2.test;allow=admins",
                             "--app", "open.test;skip=/public/"])
    ac_port, admin_port = harness.free_port(), harness.free_port()
    atexit.register(lambda: os.path.exists(f"/dev/shm/{SHM}") and os.unlink(f"/dev/shm/{SHM}"))
    ac = harness.start([AUTHCACHED, "--upstream", f"http://127.0.0.1:{idp.port}",
                   "--listen", f"127.0.0.1:{ac_port}", "--admin", f"127.0.0.1:{admin_port}",
                   "--shm", SHM, "--workers", "2", "--fresh-ttl", "1s", "--capacity", "1024"],
                  ready_url=f"http://127.0.0.1:{admin_port}/readyz", name="authcached")
    app = App()
    # A proxy that cannot start fails its own cases, not the other proxy's.
    try:
        caddy = start_caddy()
    except AssertionError as e:
        caddy_error = f"Caddy: {e}"
    try:
        nginx = start_nginx()
    except AssertionError as e:
        nginx_error = f"nginx: {e}"


# ---------------------------------------------------------------- shared checks

def check_logged_in(px, cookie, user, groups, forged_header):
    """A session asked of the IdP once, then served from authcached; the application sees the
    identity headers and never the client's forged one."""
    idp.session(cookie, user, groups)
    before = results()
    rec, hdrs = app_saw(px.get("app1.test", "/page?x=1", cookie), "first request")
    eq(rec["path"], "/page?x=1", "path at the application")
    eq(hdrs.get("x-authentik-username"), [user], "X-authentik-username at the application")
    eq(hdrs.get("x-authentik-groups"), ["|".join(groups)], "X-authentik-groups")
    eq(hdrs.get("x-authentik-email"), [f"{user}@example.test"], "X-authentik-email")
    check(re.fullmatch(r"[0-9a-f]{64}", hdrs.get("x-authentik-uid", [""])[0]), "X-authentik-uid",
          hdrs.get("x-authentik-uid"))
    jwt = hdrs.get("x-authentik-jwt", [""])[0]
    eq(len(jwt.split(".")), 3, "X-authentik-jwt is a JWT")
    eq(delta(before, results()), {"miss": 1}, "authcached's answer to the first request")
    eq(idp.calls(cookie), 1, "IdP calls after the first request")

    before = results()
    first = identity_of(hdrs)
    # Other paths and query strings of the same host: the same key (the check's own path and
    # query stay fixed; for Caddy thanks to the "?" that ends forward_auth's uri).
    for i, target in enumerate(("/page?x=2", f"/other/{cookie}?y=1&z=2")):
        rec, again = app_saw(px.get("app1.test", target, cookie), f"repeat #{i}")
        eq(rec["path"], target, f"path of repeat #{i}")
        eq(identity_of(again), first, f"identity headers of repeat #{i}, as on the miss")
    rec, hdrs = app_saw(px.get("app1.test", "/submit", cookie, method="POST",
                               headers=[("Content-Type", "text/plain"), (forged_header, "mallory")],
                               body=b"hello"), "POST")
    eq((rec["method"], rec["body"]), ("POST", "hello"), "method and body at the application")
    eq(hdrs.get("x-authentik-username"), [user], "a forged identity header is replaced")
    eq(delta(before, results()), {"hit": 3}, "authcached's answers to the repeats")
    eq(idp.calls(cookie), 1, "IdP calls after the repeats")


def check_denied(px, cookie):
    idp.session(cookie, "bob")  # in no group; app2.test allows group admins only
    n = app.count()
    r = px.get("app2.test", "/", cookie)
    eq(r.status, 403, "bob on app2.test")
    eq(app.count(), n, "requests reaching the application")
    r2 = px.get("app2.test", "/", cookie)
    eq(r2.status, 403, "bob on app2.test again")
    eq(idp.calls(cookie), 2, "IdP calls: a refusal is never cached")
    _, hdrs = app_saw(px.get("app1.test", "/", cookie), "bob on app1.test")
    eq(hdrs.get("x-authentik-username"), ["bob"], "bob on app1.test")
    return r


def check_open_path(px):
    """An unauthenticated path: the IdP answers 200 without identity; the application must not see
    any X-authentik-* header, neither the client's nor a placeholder."""
    idp.session(f"{px.name}-open", "olive")
    forged = [("X-Authentik-Username", "mallory"), ("x-authentik-groups", "admins"),
              ("X-authentik-meta-jwks", "forged")]
    for cookie in (None, f"{px.name}-open", f"{px.name}-nobody"):
        rec, hdrs = app_saw(px.get("open.test", "/public/doc", cookie, headers=forged),
                            f"open path, cookie {cookie}")
        eq(rec["path"], "/public/doc", "path")
        eq(identity_of(hdrs), {}, f"identity headers at the application (cookie {cookie})")
    check(px.get("open.test", "/private", None).status != 200, "outside the open prefix: not let in")


def check_sign_out(px, want_status):
    idp.session(f"{px.name}-sam-1", "sam")
    idp.session(f"{px.name}-sam-2", "sam")
    for c in (f"{px.name}-sam-1", f"{px.name}-sam-2"):
        app_saw(px.get("app1.test", "/", c), f"{c} before sign-out")
        app_saw(px.get("app1.test", "/", c), f"{c} before sign-out, again")
        eq(idp.calls(c), 1, f"IdP calls of {c} before sign-out")
    before, purges, n = results(), metrics()["authcache_purges_total"], app.count()
    r = px.get("app1.test", "/outpost.goauthentik.io/sign_out", f"{px.name}-sam-1")
    eq(r.status, want_status, "sign-out answer (the IdP's own: it ends sam's sessions, redirects)")
    eq(app.count(), n, "the application is not asked")
    eq(delta(before, results()), {"signout": 1}, "authcached's answer on the sign-out route")
    harness.wait_for(lambda: metrics()["authcache_purges_total"] - purges >= 2, timeout=5,
                     what="both of sam's answers purged (by the purge thread)")
    idp.session(f"{px.name}-sam-2", "sam")  # signed in again: the IdP must be asked
    app_saw(px.get("app1.test", "/", f"{px.name}-sam-2"), "sam's other session after sign-out")
    eq(idp.calls(f"{px.name}-sam-2"), 2, "sam's other session is asked of the IdP again")


def outage(px, on_new_session):
    """Caches a session, makes the IdP refuse connections, lets the answer go past fresh-ttl:
    the cached session still reaches the application (stale); a new session is answered by
    on_new_session(response). The IdP comes back and authcached's breaker closes before return."""
    cached, new = f"{px.name}-olga", f"{px.name}-newbie"
    idp.session(cached, "olga")
    idp.session(new, "nina")
    app_saw(px.get("app1.test", "/", cached), "before the outage")
    idp.fault("refuse")
    try:
        time.sleep(1.1)  # past --fresh-ttl 1s: the cached answer needs the IdP, which is gone
        before, n = results(), app.count()
        _, hdrs = app_saw(px.get("app1.test", "/during", cached), "cached session in the outage")
        eq(hdrs.get("x-authentik-username"), ["olga"], "user of the cached session")
        eq(delta(before, results()).get("stale"), 1, "authcached served it stale")
        r = px.get("app1.test", "/during", new)
        eq(app.count(), n + 1, "a new session does not reach the application")
        eq(delta(before, results()).get("unavailable"), 1, "authcached answered 503 (unavailable)")
        on_new_session(r)
    finally:
        idp.fault("ok")
    wait_idp_usable()
    _, hdrs = app_saw(px.get("app1.test", "/after", new), "the new session once the IdP is back")
    eq(hdrs.get("x-authentik-username"), ["nina"], "user once the IdP is back")


# ---------------------------------------------------------------- Caddy

@case
def caddy_logged_in_session_miss_then_hits():
    check_logged_in(need(caddy, caddy_error), "cd-alice", "alice", ["admins", "users"],
                    "X-Authentik-Username")


@case
def caddy_unknown_session_gets_the_idp_redirect_unchanged():
    px = need(caddy, caddy_error)
    n = app.count()
    r = px.get("app1.test", "/wanted?a=b", "cd-unknown")
    eq(r.status, 302, "status")
    # Caddy copies a non-2xx auth answer to the client: the IdP's own Location, Set-Cookie, type
    # and body; authcached adds Cache-Control: no-store (the IdP sent none) and X-Authcache.
    cb = urllib.parse.quote("http://app1.test/outpost.goauthentik.io/callback"
                            "?X-authentik-auth-callback=true", safe="")
    check(re.fullmatch(r"https://idp\.test/application/o/authorize/\?client_id=app1"
                       rf"&redirect_uri={re.escape(cb)}&response_type=code&state=[0-9a-f]{{32}}",
                       r.header("Location") or ""), "the IdP's authorize Location", r.header("Location"))
    eq(r.header_all("Set-Cookie"), [f"{COOKIE}=cd-unknown; Path=/; Domain=app1.test; Max-Age=86400; "
                                    "HttpOnly; SameSite=Lax"], "the IdP's Set-Cookie")
    eq(r.header("Content-Type"), "text/html; charset=utf-8", "Content-Type")
    eq(r.body, LOGIN_BODY, "the IdP's body")
    eq(r.header("Cache-Control"), "no-store", "Cache-Control")
    eq(r.header("X-Authcache"), "miss", "X-Authcache")
    eq(app.count(), n, "requests reaching the application")
    eq(px.get("app1.test", "/", "cd-unknown").status, 302, "again")
    eq(idp.calls("cd-unknown"), 2, "IdP calls: a login redirect is never cached")
    r = px.get("app1.test", "/", None)
    eq(r.status, 302, "without a cookie")
    check(re.fullmatch(COOKIE + r"=[A-Za-z0-9]{32}; Path=/; .*", r.header("Set-Cookie") or ""),
          "a new session cookie from the IdP", r.header("Set-Cookie"))
    eq(r.header("X-Authcache"), "bypass", "X-Authcache without a cookie")


@case
def caddy_user_outside_the_group_gets_403():
    r = check_denied(need(caddy, caddy_error), "cd-bob")
    eq(r.body, DENIED_BODY, "the IdP's 403 body, passed on by Caddy")
    eq(r.header("Content-Type"), "text/plain; charset=utf-8", "Content-Type")


@case
def caddy_open_path_no_identity_headers():
    check_open_path(need(caddy, caddy_error))


@case
def caddy_sign_out_purges_the_users_answers():
    # The test IdP serves sign-out only as a forward-auth check: the outpost path itself is a 404
    # there (the real outpost redirects to its end-session page).
    check_sign_out(need(caddy, caddy_error), 302)


@case
def caddy_idp_outage_cached_session_served_new_one_503():
    px = need(caddy, caddy_error)

    def new_session(r):
        # Caddy passes authcached's 503 to the client unchanged.
        eq(r.status, 503, "a new session in the outage")
        check(r.header("Retry-After"), "Retry-After", r.headers)
        eq(r.header("Content-Type"), "text/plain; charset=utf-8", "Content-Type")
        check(r.body.startswith(b"authcache: identity provider unavailable"), "503 body", r.body)

    outage(px, new_session)


# ---------------------------------------------------------------- nginx

@case
def nginx_logged_in_session_miss_then_hits():
    px = need(nginx, nginx_error)
    check_logged_in(px, "ng-alice", "alice", ["admins", "users"], "X-authentik-username")
    # nginx's default upstream protocol (HTTP/1.0, Connection: close): the same key, a hit.
    before = results()
    _, hdrs = app_saw(px.get("app1.test", "/page", "ng-alice", port=px.port10), "over HTTP/1.0")
    eq(hdrs.get("x-authentik-username"), ["alice"], "user over HTTP/1.0")
    eq(delta(before, results()), {"hit": 1}, "authcached's answer over HTTP/1.0")
    # The check location is internal: clients cannot ask authcached through nginx.
    eq(px.get("app1.test", "/outpost.goauthentik.io/auth/nginx", "ng-alice").status, 404,
       "the internal auth location from outside")


@case
def nginx_unknown_session_401_becomes_login_redirect():
    px = need(nginx, nginx_error)
    n = app.count()
    r = px.get("app1.test", "/wanted?a=b", "ng-unknown")
    # The IdP's nginx endpoint answers 401 (authcached passes it on); auth_request hands a 401 to
    # error_page 401 = @goauthentik_proxy_signin, which redirects to the outpost's start URL and
    # adds the IdP's Set-Cookie (auth_request_set $auth_cookie $upstream_http_set_cookie).
    eq(r.status, 302, "status")
    check((r.header("Location") or "").endswith(
        "/outpost.goauthentik.io/start?rd=http://app1.test/wanted?a=b"), "Location",
        r.header("Location"))
    eq(r.header_all("Set-Cookie"), [f"{COOKIE}=ng-unknown; Path=/; Domain=app1.test; Max-Age=86400; "
                                    "HttpOnly; SameSite=Lax"], "the IdP's Set-Cookie")
    eq(app.count(), n, "requests reaching the application")
    eq(px.get("app1.test", "/", "ng-unknown").status, 302, "again")
    eq(idp.calls("ng-unknown"), 2, "IdP calls: a 401 is never cached")
    r = px.get("app1.test", "/", None)
    eq(r.status, 302, "without a cookie")
    check(re.fullmatch(COOKIE + r"=[A-Za-z0-9]{32}; Path=/; .*", r.header("Set-Cookie") or ""),
          "a new session cookie from the IdP", r.header("Set-Cookie"))


@case
def nginx_user_outside_the_group_gets_403():
    r = check_denied(need(nginx, nginx_error), "ng-bob")
    # auth_request returns a subrequest's 403 as the status only: the body is nginx's own page.
    check(b"403 Forbidden" in r.body and DENIED_BODY not in r.body, "nginx's own 403 page", r.body)


@case
def nginx_open_path_no_identity_headers():
    check_open_path(need(nginx, nginx_error))


@case
def nginx_sign_out_purges_the_users_answers():
    # nginx's auth_request takes only 2xx, 401 and 403 from the auth request: the IdP's redirect for
    # the sign-out becomes 500, exactly as it does without authcached.
    check_sign_out(need(nginx, nginx_error), 500)


@case
def nginx_idp_outage_cached_session_served_new_one_500():
    px = need(nginx, nginx_error)
    with open(px.error_log, "rb") as f:
        f.seek(0, os.SEEK_END)
        log_at = f.tell()

    def new_session(r):
        # auth_request accepts 2xx, 401 and 403 from the subrequest; any other status (here
        # authcached's 503) is logged as "auth request unexpected status" and answered 500.
        eq(r.status, 500, "a new session in the outage")
        eq(r.header("Retry-After"), None, "Retry-After (nginx does not pass it on)")

        def logged():
            with open(px.error_log, "rb") as f:
                f.seek(log_at)
                return b"auth request unexpected status: 503" in f.read()
        harness.wait_for(logged, timeout=2, what="nginx logs the subrequest's 503")

    outage(px, new_session)


@case
def authcached_healthy_after_both_proxies():
    r = harness.request(admin_port, "GET", "/healthz")
    eq(r.status, 200, "/healthz")
    m = metrics()
    check(m["authcache_connections_open"] >= 0, "open connections gauge not negative",
          m["authcache_connections_open"])
    check(m["authcache_connections_open"] <= m["authcache_connections_accepted_total"],
          "open connections <= accepted", m)
    for px in (caddy, nginx):
        if px:
            check(px.proc.alive(), f"{px.name} still running", px.proc.log_tail())
    check(ac.alive(), "authcached still running", ac.log_tail())
    daemon_util.no_sanitizer_report(ac.log_text(), ac.log)


if __name__ == "__main__":
    harness.main(setup, case_timeout=20)
