"""test_security.py — what authcached must never disclose, and who may write through its admin port.

Secrets: session cookie values, the Authorization header a client sends (bearer tokens), the JWTs the
IdP issues (X-authentik-jwt) and the admin token. STYLE.md: "never a cookie, token or JWT" in a log;
docs/contract.md: the segment and `authcache dump` hold no credential, the segment is mode 0600,
admin writes need the token of --admin-token-file or else a loopback peer.

  secrets_stay_out_of_logs_segment_and_outputs
      One authcached at --log-level debug in front of the test IdP, through a small relay (below) that
      also accepts bearer tokens. Several sessions with distinctive cookie values and bearer tokens go
      through misses, hits, revalidation, an IdP failure, refusals (302 and 401), the login callback,
      malformed (400) and oversized (431) requests that carry a cookie, sign-out and admin purges by
      session (the cookie and "Bearer <token>" in the purge's query), by user and of all. Then: no
      cookie value, token or JWT in the daemon's log; no cookie value or token in the bytes of
      /dev/shm/<segment> (the JWT is an identity header, stored on purpose: it is checked to BE there,
      which proves the scan reads the right bytes), in /metrics, /v1/stats, or the CLI's
      `stats`, `stats --json`, `dump`, `dump --json` and `get` (which also redacts the JWT) — both
      while the answers are live and after they were purged (dead records stay in the ring).
  segment_is_mode_0600            even when the daemon starts under umask 000
  admin_writes_refused_from_non_loopback_without_token
      admin bound to 0.0.0.0; POST /v1/purge from a non-loopback source address is 403 (reads stay
      open), from loopback 200. The source: this machine's first global IPv4 address, else a
      network namespace joined by a veth pair (root), else the check is skipped, saying why.
  admin_token_required_and_never_logged
      with --admin-token-file, POST /v1/purge needs `Authorization: Bearer <token>` from any source:
      none or a wrong one is 403, the right one 200 (also through `authcache purge
      --admin-token-file`); the token appears in no log line nor CLI output.

The test IdP (build/test-idp) knows cookies only, so the daemon's upstream is a relay in this
process: a request with `Authorization: Bearer <token>` is answered here (200 with X-authentik-*
identity headers and an HS256 JWT for a known token, 401 otherwise); every other request is passed
to the test IdP and its answer passed back unchanged.

Run from the repo root: python3 tests/integration/test_security.py [CASE...]
"""

import base64
import hashlib
import hmac
import http.client
import http.server
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import daemon_util  # noqa: E402
from daemon_util import AUTH, expect, remove_shm, shm_name  # noqa: E402
from harness import case, check, eq  # noqa: E402

CLI = os.path.join(harness.BUILD, "authcache")
SIGN_OUT = "/outpost.goauthentik.io/sign_out"
RELAY = None


def setup():
    global RELAY
    daemon_util.setup_idp()
    if not os.access(CLI, os.X_OK):
        raise AssertionError(f"{CLI} is missing: run `make build/authcache`")
    RELAY = Relay(daemon_util.IDP.port)


def idp():
    return daemon_util.IDP


def secret(kind):
    """A distinctive secret: a marker naming its kind, then 24 random hex digits."""
    return f"SECRET{kind}x{secrets.token_hex(12)}"


def make_jwt(claims, key=b"relay-jwt-secret"):
    def b64(b):
        return base64.urlsafe_b64encode(b).rstrip(b"=")
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = b64(hmac.new(key, head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + sig).decode()


# ---------------------------------------------------------------- the relay IdP

HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
       "upgrade", "content-length"}


class Relay:
    """Bearer tokens answered here, everything else relayed to the test IdP (see the top)."""

    def __init__(self, backend_port):
        self.tokens = {}  # token -> (user, jwt)
        self.backend_port = backend_port
        relay = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def answer(self, status, headers, body=b""):
                self.send_response_only(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def handle_any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                authz = self.headers.get("Authorization") or ""
                if authz.startswith("Bearer "):
                    who = relay.tokens.get(authz[7:])
                    if who is None:
                        self.answer(401, [("WWW-Authenticate", 'Bearer realm="idp.test"'),
                                          ("Content-Type", "text/plain")], b"unauthorized\n")
                    else:
                        user, jwt = who
                        self.answer(200, [("X-authentik-username", user),
                                          ("X-authentik-groups", "users"),
                                          ("X-authentik-email", f"{user}@example.test"),
                                          ("X-authentik-jwt", jwt)])
                    return
                try:
                    c = http.client.HTTPConnection("127.0.0.1", relay.backend_port, timeout=5)
                    c.putrequest(self.command, self.path, skip_host=True,
                                 skip_accept_encoding=True)
                    for k, v in self.headers.items():
                        if k.lower() not in HOP:
                            c.putheader(k, v)
                    if body:
                        c.putheader("Content-Length", str(len(body)))
                    c.endheaders(body or None)
                    r = c.getresponse()
                    data = r.read()
                    headers = [(k, v) for k, v in r.getheaders() if k.lower() not in HOP]
                    c.close()
                    self.answer(r.status, headers, data)
                except OSError as e:
                    self.answer(502, [("Content-Type", "text/plain")], f"relay: {e}\n".encode())

            do_GET = do_POST = do_HEAD = handle_any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", harness.free_port()), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add_token(self, token, user):
        jwt = make_jwt({"sub": user, "preferred_username": user, "iat": int(time.time()),
                        "exp": int(time.time()) + 3600})
        self.tokens[token] = (user, jwt)
        return jwt


# ---------------------------------------------------------------- an authcached of our own

class sec_daemon:
    """Like daemon_util.daemon, with the admin listener on admin_host and extra flags; upstream is
    the relay. On leaving: SIGTERM, exit status 0, no sanitizer report; .log holds the whole log."""

    def __init__(self, flags=None, admin_host="127.0.0.1", env=None):
        self.flags, self.admin_host, self.env = dict(flags or {}), admin_host, env

    def __enter__(self):
        self.port, self.admin = harness.free_port(), harness.free_port()
        self.shm = shm_name()
        opts = dict(daemon_util.DEFAULT_FLAGS)
        opts.update(self.flags)
        argv = [daemon_util.BIN, "--listen", f"127.0.0.1:{self.port}",
                "--admin", f"{self.admin_host}:{self.admin}",
                "--upstream", f"http://127.0.0.1:{RELAY.port}", "--shm", self.shm]
        for k, v in opts.items():
            argv += [k, v]
        self.proc = harness.start(argv, ready_url=f"http://127.0.0.1:{self.admin}/readyz",
                                  name="authcached", env=self.env, timeout=15)
        return self

    def __exit__(self, exc_type, exc, tb):
        rc = self.proc.stop(timeout=8.0)
        remove_shm(self.shm)
        self.log = self.proc.log_text()
        daemon_util.no_sanitizer_report(self.log, self.proc.log)
        if exc_type is None and rc != 0:
            raise AssertionError(f"authcached exit status after SIGTERM: expected 0, got {rc}; "
                                 f"log {self.proc.log}:\n{self.proc.log_tail()}")
        return False


def bearer(token):
    return [("Authorization", f"Bearer {token}")]


def cli(d, *args, want=0):
    rc, out, err = harness.run([CLI, "--shm", d.shm, "--admin", f"127.0.0.1:{d.admin}"] +
                               list(args))
    if want is not None and rc != want:
        raise AssertionError(f"authcache {' '.join(args)}: expected exit {want}, got {rc}: "
                             f"{err.strip()!r}")
    return out + err


def forms(value):
    """The ways a secret could show up: itself, its random part, base64 and hex of it."""
    v = value.encode()
    out = {value: v, "base64": base64.b64encode(v), "hex": v.hex().encode()}
    # Our made-up secrets end in "x<random>"; a JWT may hold an "x" anywhere, and a short tail after
    # it would match ordinary text, so only a long enough tail counts.
    if "x" in value and len(value.rsplit("x", 1)[1]) >= 12:
        out["random part"] = value.rsplit("x", 1)[1].encode()
    return out


def assert_absent(blob, named_secrets, where):
    """named_secrets: {label: value}. Fails naming the first secret (and form) found in blob."""
    if isinstance(blob, str):
        blob = blob.encode("utf-8", "replace")
    for label, value in named_secrets.items():
        for form, b in forms(value).items():
            if b in blob:
                i = blob.index(b)
                raise AssertionError(f"{label} ({form if form != value else 'verbatim'}) found in "
                                     f"{where} at byte {i}: ...{blob[max(0, i - 60):i + 80]!r}...")


def segment_bytes(d):
    with open(f"/dev/shm/{d.shm}", "rb") as f:
        return f.read()


def raw_status(port, data):
    """Sends raw bytes, returns the status code of the answer (or None if the server just closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered and closed before all of it was sent: read the answer
        buf = b""
        while b"\r\n" not in buf:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            buf += chunk
    return int(buf.split(b" ")[1]) if buf.startswith(b"HTTP/1.") else None


# ---------------------------------------------------------------- 1. secrets

@case
def secrets_stay_out_of_logs_segment_and_outputs():
    users = ["sec-alice", "sec-bob", "sec-carol", "sec-dave"]
    cookies = {f"cookie of {u}": secret(f"COOKIE{i}") for i, u in enumerate(users)}
    cvals = list(cookies.values())
    for v, u in zip(cvals, users):
        idp().session(v, u, ["users"])
    tokens = {f"bearer token {i}": secret(f"BEARER{i}") for i in range(3)}
    tvals = list(tokens.values())
    jwts = {}
    for i, t in enumerate(tvals[:2]):  # the third token is one the IdP does not know
        jwts[f"JWT of bearer token {i}"] = RELAY.add_token(t, f"sec-bearer{i}")
    stranger = secret("COOKIEUNKNOWN")
    cookies["a cookie the IdP does not know"] = stranger
    creds = dict(cookies, **tokens)

    flags = {"--log-level": "debug", "--fresh-ttl": "1s", "--outage-grace": "30s"}
    with sec_daemon(flags) as d:
        # Misses, then hits, on two applications.
        for v, u in zip(cvals, users):
            for host in ("app1.test", "app3.test"):
                r = daemon_util.fa(d.port, host, "/", v)
                expect(r, 200, "miss", u, f"{u} on {host}, first")
                jwts[f"JWT issued to {u} for {host}"] = r.header("X-authentik-jwt")
                expect(daemon_util.fa(d.port, host, "/x", v), 200, "hit", u, f"{u} on {host}")
        for i, t in enumerate(tvals[:2]):
            r = daemon_util.fa(d.port, "app1.test", "/", None, headers=bearer(t))
            expect(r, 200, "miss", f"sec-bearer{i}", f"bearer token {i}, first")
            eq(r.header("X-authentik-jwt"), jwts[f"JWT of bearer token {i}"], "JWT replayed")
            r = daemon_util.fa(d.port, "app1.test", "/", None, headers=bearer(t))
            expect(r, 200, "hit", f"sec-bearer{i}", f"bearer token {i}, again")
        # Refusals: a cookie and a token the IdP does not know; the login callback.
        expect(daemon_util.fa(d.port, "app1.test", "/", stranger), 302, "miss", None, "unknown cookie")
        r = daemon_util.fa(d.port, "app1.test", "/", None, headers=bearer(tvals[2]))
        expect(r, 401, None, None, "unknown bearer token")
        daemon_util.fa(d.port, "app1.test", "/?X-authentik-auth-callback=true&code=1", cvals[0])
        # Revalidation, then an IdP failure (stale answer served, the failure logged).
        time.sleep(1.2)
        expect(daemon_util.fa(d.port, "app1.test", "/", cvals[1]), 200, "revalidated", users[1],
               "after fresh-ttl")
        idp().fault("500")
        try:
            r = daemon_util.fa(d.port, "app3.test", "/", cvals[2])
            check(r.status in (200, 503), "answer while the IdP fails (stale or 503)", r.status)
            r = daemon_util.fa(d.port, "app1.test", "/", None, headers=bearer(tvals[1]))
            r = daemon_util.fa(d.port, "app1.test", "/", stranger)
        finally:
            idp().fault("ok")
        # Malformed and oversized requests that carry a session cookie.
        ck = f"Cookie: {harness.IDP_COOKIE}={cvals[3]}\r\n".encode()
        eq(raw_status(d.port, b"GET " + AUTH.encode() + b" HTTP/1.1\r\nHost: a\r\n" + ck +
                      b"Bad Header\r\n\r\n"), 400, "a malformed request with a cookie")
        eq(raw_status(d.port, b"GET " + AUTH.encode() + b" HTTP/1.1\r\nHost: a\r\n" + ck +
                      b"X-Pad: " + b"p" * 40000 + b"\r\n\r\n"), 431, "an oversized request")
        eq(raw_status(d.port, b"GET " + AUTH.encode() + b" HTTP/1.1\r\nHost: a\r\n" +
                      f"Authorization: Bearer {tvals[0]}\r\n".encode() + b"\x01: x\r\n\r\n"), 400,
           "a malformed request with a bearer token")

        def outputs(when):
            seg = segment_bytes(d)
            assert_absent(seg, creds, f"/dev/shm/{d.shm} ({when})")
            for what, blob in (
                    ("GET /metrics", daemon_util.admin_get(d, "/metrics").body),
                    ("GET /v1/stats", daemon_util.admin_get(d, "/v1/stats").body),
                    ("authcache stats", cli(d, "stats")),
                    ("authcache stats --json", cli(d, "stats", "--json")),
                    ("authcache dump", cli(d, "dump")),
                    ("authcache dump --json", cli(d, "dump", "--json"))):
                assert_absent(blob, dict(creds, **jwts), f"{what} ({when})")
            return seg

        # While the answers are live.
        seg = outputs("answers live")
        for label, jwt in jwts.items():  # identity headers are stored on purpose
            check(jwt.encode() in seg, f"{label} should be in the segment (it is an identity header: "
                  "the scan must be reading the right bytes)")
        for u in users:
            check(u.encode() in seg, f"user {u} should be in the segment")
        dump = cli(d, "dump")
        for u in users:
            check(u in dump, f"`authcache dump` should list {u}", dump)
        got = cli(d, "get", "--cookie", cvals[0], "--host", "app1.test")
        check("sec-alice" in got, "`authcache get --cookie` finds alice's answer", got)
        assert_absent(got, dict(creds, **jwts), "authcache get --cookie")
        got = cli(d, "get", "--authorization", f"Bearer {tvals[0]}", "--host", "app1.test")
        check("sec-bearer0" in got, "`authcache get --authorization` finds the token's answer", got)
        assert_absent(got, dict(creds, **jwts), "authcache get --authorization")

        # Sign-out, purges by session (the secret in the query), by user, then all.
        r = daemon_util.fa(d.port, "app1.test", SIGN_OUT, cvals[0])  # the IdP's own answer
        eq((r.status, r.header("X-Authcache")), (302, "signout"), "sign-out")
        for q, what in ((f"?session={cvals[1]}", "a cookie value"),
                        ("?session=" + f"Bearer {tvals[0]}".replace(" ", "%20"), "a bearer token"),
                        (f"?user={users[2]}", "a user")):
            r = daemon_util.admin_post(d, "/v1/purge" + q)
            eq(r.status, 200, f"purge by {what}")
            check(json.loads(r.body)["purged"] >= 1, f"purge by {what} removed something", r.body)
        outputs("after sign-out and purges")
        eq(daemon_util.admin_post(d, "/v1/purge?all=1").status, 200, "purge all")
        outputs("after purge all")
    log = d.log
    check("purge" in log and "listening" in log,
          "the daemon's log should hold its start and purge lines", log[-400:])
    assert_absent(log, dict(creds, **jwts), f"the daemon's log {d.proc.log}")


# ---------------------------------------------------------------- 2. the segment's mode

@case
def segment_is_mode_0600():
    old = os.umask(0)
    try:
        with sec_daemon() as d:
            st = os.stat(f"/dev/shm/{d.shm}")
            eq(oct(st.st_mode & 0o7777), oct(0o600), f"mode of /dev/shm/{d.shm} under umask 000")
            eq(st.st_uid, os.getuid(), "owner of the segment")
            leftovers = [n for n in os.listdir("/dev/shm") if d.shm in n and n != d.shm]
            eq(leftovers, [], "temporary segment files left in /dev/shm")
    finally:
        os.umask(old)


# ---------------------------------------------------------------- 3. admin writes from elsewhere

def global_ipv4():
    """This machine's first global (non-loopback) IPv4 address, or None."""
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                             capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            addr = parts[parts.index("inet") + 1].split("/")[0]
            if not addr.startswith("127."):
                return addr
    return None


def http_from(src, dst, port, method, path, headers=()):
    """One request from source address src to dst:port; returns the status code."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.bind((src, 0))
        s.connect((dst, port))
        s.sendall(harness.build_request(method, path, headers, host=dst))
        buf = b""
        while b"\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    return int(buf.split(b" ")[1])


class Netns:
    """A network namespace joined to this one by a veth pair: host side .host_ip, inside .ns_ip."""

    def __init__(self):
        n = os.getpid() % 50000
        self.ns, self.vh, self.vn = f"acsec{n}", f"acsh{n}", f"acsn{n}"
        sub = 16 + n % 200
        self.host_ip, self.ns_ip = f"10.231.{sub}.1", f"10.231.{sub}.2"

    def __enter__(self):
        cmds = [["ip", "netns", "add", self.ns],
                ["ip", "link", "add", self.vh, "type", "veth", "peer", "name", self.vn],
                ["ip", "link", "set", self.vn, "netns", self.ns],
                ["ip", "addr", "add", f"{self.host_ip}/30", "dev", self.vh],
                ["ip", "link", "set", self.vh, "up"],
                ["ip", "netns", "exec", self.ns, "ip", "addr", "add", f"{self.ns_ip}/30", "dev",
                 self.vn],
                ["ip", "netns", "exec", self.ns, "ip", "link", "set", self.vn, "up"],
                ["ip", "netns", "exec", self.ns, "ip", "link", "set", "lo", "up"]]
        for c in cmds:
            r = subprocess.run(c, capture_output=True, text=True, timeout=10)
            if r.returncode != 0:
                self.__exit__(None, None, None)
                raise OSError(f"{' '.join(c)}: {r.stderr.strip()}")
        return self

    def __exit__(self, *exc):
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "del", self.vh], capture_output=True, timeout=10)
        return False

    def request(self, port, method, path, headers=()):
        code = ("import socket,sys\n"
                "s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=5)\n"
                "s.sendall(sys.stdin.buffer.read())\n"
                "b=b''\n"
                "while b'\\r\\n' not in b:\n"
                "    c=s.recv(4096)\n"
                "    if not c: break\n"
                "    b+=c\n"
                "print(b.split(b' ')[1].decode())\n")
        r = subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, "-c", code,
                            self.host_ip, str(port)],
                           input=harness.build_request(method, path, headers, host=self.host_ip),
                           capture_output=True, timeout=15)
        if r.returncode != 0:
            raise AssertionError(f"request from the namespace failed: {r.stderr.decode()[-300:]}")
        return int(r.stdout)


def non_loopback_client():
    """(describe, request(port, method, path, headers)) for a client with a non-loopback source
    address, inside a context; or (None, reason) when none can be had."""
    addr = None if os.environ.get("SECURITY_FORCE_NETNS") else global_ipv4()
    if addr:
        class Direct:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def request(self, port, method, path, headers=()):
                return http_from(addr, addr, port, method, path, headers)
        return f"source {addr} (this machine's global address)", Direct()
    if os.geteuid() != 0:
        return None, "no global IPv4 address and not root (no network namespace)"
    try:
        return "a network namespace over a veth pair", Netns()
    except OSError as e:
        return None, f"no global IPv4 address and no network namespace: {e}"


@case
def admin_writes_refused_from_non_loopback_without_token():
    how, client = non_loopback_client()
    if how is None:
        print(f"SKIP admin_writes_refused_from_non_loopback_without_token: {client}", flush=True)
        return
    v = secret("COOKIEADM")
    idp().session(v, "sec-erin", ["users"])
    with sec_daemon(admin_host="0.0.0.0") as d:
        try:
            with client as c:
                expect(daemon_util.fa(d.port, "app1.test", "/", v), 200, "miss", "sec-erin", "login")
                eq(c.request(d.admin, "POST", "/v1/purge?all=1"), 403,
                   f"POST /v1/purge?all=1 from {how}, no token")
                eq(c.request(d.admin, "POST", "/v1/purge?user=sec-erin"), 403,
                   f"POST /v1/purge?user= from {how}, no token")
                eq(c.request(d.admin, "POST", "/v1/purge?all=1", [("Authorization", "Bearer x")]),
                   403, f"POST /v1/purge from {how} with a token nobody configured")
                eq(c.request(d.admin, "GET", "/healthz"), 200, f"GET /healthz from {how}")
                eq(c.request(d.admin, "GET", "/metrics"), 200, f"GET /metrics from {how}")
                expect(daemon_util.fa(d.port, "app1.test", "/", v), 200, "hit", "sec-erin",
                       "the answer survives the refused purges")
                r = daemon_util.admin_post(d, "/v1/purge?all=1")
                eq(r.status, 200, "POST /v1/purge?all=1 from 127.0.0.1, no token")
        except OSError as e:
            print(f"SKIP admin_writes_refused_from_non_loopback_without_token: {how}: {e}",
                  flush=True)
            return
    print(f"    (non-loopback client: {how})", flush=True)


# ---------------------------------------------------------------- 4. the admin token

@case
def admin_token_required_and_never_logged():
    token = secret("ADMINTOKEN")
    with tempfile.NamedTemporaryFile("w", prefix="authcache-sec-token-", delete=False) as f:
        f.write(token + "\n")
        path = f.name
    os.chmod(path, 0o600)
    how, client = non_loopback_client()
    outs = []
    try:
        v = secret("COOKIETOK")
        idp().session(v, "sec-frank", ["users"])
        with sec_daemon({"--admin-token-file": path, "--log-level": "debug"},
                        admin_host="0.0.0.0") as d:
            expect(daemon_util.fa(d.port, "app1.test", "/", v), 200, "miss", "sec-frank", "login")

            def post(q, headers=()):
                return harness.request(d.admin, "POST", "/v1/purge" + q, headers)

            r = post("?all=1")
            eq(r.status, 403, "POST /v1/purge from loopback without the token")
            outs.append(r.body)
            for wrong in ("Bearer " + token[:-1], "Bearer " + token + "x", "Bearer x" + token,
                          "Basic " + token, token, "Bearer", "Bearer  " + token):
                r = post("?all=1", [("Authorization", wrong)])
                eq(r.status, 403, f"POST /v1/purge with Authorization {wrong[:14]!r}...")
                outs.append(r.body)
            eq(daemon_util.admin_get(d, "/metrics").status, 200, "GET /metrics without a token")
            expect(daemon_util.fa(d.port, "app1.test", "/", v), 200, "hit", "sec-frank",
                   "the answer survives the refused purges")
            r = post("?user=sec-frank", [("Authorization", "Bearer " + token)])
            eq(r.status, 200, "POST /v1/purge?user= with the token")
            eq(json.loads(r.body), {"purged": 1}, "purge with the token")
            outs.append(r.body)
            # The CLI: without the token file refused, with it accepted; never echoes the token.
            outs.append(cli(d, "purge", "--all", want=1))
            outs.append(cli(d, "--admin-token-file", path, "purge", "--all"))
            if how is not None:
                try:
                    with client as c:
                        eq(c.request(d.admin, "POST", "/v1/purge?all=1"), 403,
                           f"POST /v1/purge from {how} without the token")
                        eq(c.request(d.admin, "POST", "/v1/purge?all=1",
                                     [("Authorization", "Bearer " + token)]), 200,
                           f"POST /v1/purge from {how} with the token")
                except OSError as e:
                    print(f"    (non-loopback part skipped: {how}: {e})", flush=True)
            else:
                print(f"    (non-loopback part skipped: {client})", flush=True)
        for o in outs:
            assert_absent(o, {"the admin token": token}, "an admin answer or CLI output")
        assert_absent(d.log, {"the admin token": token, "the session cookie": v},
                      f"the daemon's log {d.proc.log}")
    finally:
        os.unlink(path)


if __name__ == "__main__":
    harness.main(setup)
