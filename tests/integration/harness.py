"""harness.py — shared plumbing for authcache's integration tests (Python 3.11 stdlib only).

What it gives a test file (run as `python3 tests/integration/test_x.py` from the repo root):
  - free_port(): a loopback port nobody listens on, never the same one twice in a process;
  - start(argv, ready_line=..., ready_url=...): a process whose stdout+stderr go to
    build/test-logs/<test>.<name>.<n>.log, waited on until ready (else an error with the log's
    tail); every started process is stopped at exit (atexit, SIGTERM/SIGINT/SIGHUP, and the
    kernel's parent-death signal should this interpreter be killed outright);
  - request(port, method, path, headers=[(name, value)...], body=b"", conn=None): a raw-socket
    HTTP/1.1 client that keeps header case and order and can reuse a keep-alive Conn;
  - start_idp() and idp_session/idp_fault/idp_calls/idp_end/idp_reset: the test IdP's control API;
  - @case, eq(), check() and main(): cases run in order, each prints `ok NAME` or
    `FAIL NAME: message`, then one line `RESULT <passed> <failed>`; exit 0 only if none failed.
"""

import atexit
import ctypes
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import traceback
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("BUILD", "build"))
LOG_DIR = os.path.join(ROOT, "build", "test-logs")
IDP_BIN = os.environ.get("IDP_BIN", os.path.join(BUILD, "test-idp"))
IDP_COOKIE = "authentik_proxy_3f2a1b0c"
IDP_JWT_SECRET = "authcache-test-idp-secret"
AUTH_TRAEFIK = "/outpost.goauthentik.io/auth/traefik"
AUTH_NGINX = "/outpost.goauthentik.io/auth/nginx"

_TEST_NAME = os.path.splitext(os.path.basename(sys.argv[0] or "python"))[0]


# ---------------------------------------------------------------- ports

_ports_given = set()


def free_port():
    """A TCP port on 127.0.0.1 that can be bound now, below the kernel's ephemeral range (so an
    outgoing connection will not take it meanwhile), never returned twice by this process."""
    for _ in range(1000):
        port = random.randrange(20000, 32000)
        if port in _ports_given:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _ports_given.add(port)
        return port
    raise RuntimeError("no free port found in 20000..31999")


def wait_port(proc, port, timeout=10.0):
    """Until something accepts on 127.0.0.1:port; fails if proc (a Proc) exits first or the
    timeout passes, with the tail of its log."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            pass
        if not proc.alive():
            raise AssertionError(f"{proc.name} exited with status {proc.popen.returncode}; "
                                 f"log {proc.log}:\n{proc.log_tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{proc.name} not listening on {port} after {timeout}s; "
                                 f"log {proc.log}:\n{proc.log_tail()}")
        time.sleep(0.05)


# ---------------------------------------------------------------- processes

_procs = []
_log_seq = 0


def _die_with_parent():
    # Runs in the child between fork and exec: ask for SIGKILL when this interpreter dies.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Proc:
    """A started process: .popen, .log (path), .name; stop(), send_signal(), alive(), log_tail()."""

    def __init__(self, name, argv, popen, log):
        self.name, self.argv, self.popen, self.log = name, argv, popen, log

    @property
    def pid(self):
        return self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def log_text(self):
        try:
            with open(self.log, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_tail(self, lines=20):
        return "\n".join(self.log_text().splitlines()[-lines:])

    def send_signal(self, sig):
        if self.alive():
            self.popen.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=5.0):
        """Sends sig, waits up to timeout, then SIGKILL. Returns the exit status."""
        if self.alive():
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


def start(argv, ready_line=None, ready_url=None, timeout=10.0, name=None, env=None):
    """Starts argv (a list) from the repo root, output to a log under build/test-logs/.

    ready_line: wait until the log holds a line equal to it (e.g. "ready");
    ready_url:  wait until GET of "http://127.0.0.1:PORT/path" answers 200;
    neither:    return at once. Raises RuntimeError with the log's tail when the process exits or
    is not ready within timeout seconds. Returns a Proc, stopped at exit if still running."""
    global _log_seq
    os.makedirs(LOG_DIR, exist_ok=True)
    name = name or os.path.basename(argv[0])
    _log_seq += 1
    log = os.path.join(LOG_DIR, f"{_TEST_NAME}.{name}.{_log_seq}.log")
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    with open(log, "wb") as out:
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, cwd=ROOT, env=full_env,
                                 preexec_fn=_die_with_parent)
    p = Proc(name, argv, popen, log)
    _procs.append(p)
    if ready_url:
        u = urllib.parse.urlsplit(ready_url)
        target = (u.path or "/") + (("?" + u.query) if u.query else "")
    deadline = time.monotonic() + timeout
    while ready_line or ready_url:
        if ready_line and ready_line in (l.strip() for l in p.log_text().splitlines()):
            break
        if ready_url:
            try:
                if request(u.port, "GET", target, timeout=1.0, host=u.hostname).status == 200:
                    break
            except (OSError, ConnectionError):
                pass
        if not p.alive():
            raise RuntimeError(f"{name} exited with status {p.popen.returncode} before it was "
                               f"ready; log {log}:\n{p.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} not ready after {timeout}s; log {log}:\n{p.log_tail()}")
        time.sleep(0.02)
    return p


def run(argv, timeout=10.0):
    """Runs argv to completion; returns (exit status, stdout, stderr) as text."""
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def stop_all():
    """Stops every process start() launched: SIGTERM, then SIGKILL after 3 s."""
    live = [p for p in _procs if p.alive()]
    for p in live:
        p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 3.0
    for p in live:
        try:
            p.popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.popen.kill()
            p.popen.wait()


def _on_signal(signum, frame):
    stop_all()
    os._exit(128 + signum)


atexit.register(stop_all)
for _sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(_sig, _on_signal)


# ---------------------------------------------------------------- HTTP client

class Response:
    """status (int), reason, headers [(name, value)] as sent, body (bytes).
    Unpacks as `status, headers, body = response`."""

    def __init__(self, status, reason, headers, body, version="HTTP/1.1"):
        self.status, self.reason, self.headers, self.body = status, reason, headers, body
        self.version = version

    def __iter__(self):
        return iter((self.status, self.headers, self.body))

    def header(self, name, default=None):
        """The first value of header `name` (any case), or default."""
        n = name.lower()
        for k, v in self.headers:
            if k.lower() == n:
                return v
        return default

    def header_all(self, name):
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def names(self):
        return [k for k, _ in self.headers]

    def __repr__(self):
        return f"<Response {self.status} {self.headers!r} {self.body[:200]!r}>"


def build_request(method, path, headers=(), body=b"", host="127.0.0.1"):
    """The bytes of one HTTP/1.1 request. headers: pairs or a dict, sent in that order; Host and
    Content-Length are added when missing (Content-Length only with a body or for POST/PUT/PATCH)."""
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers)
    names = {k.lower() for k, _ in pairs}
    if "host" not in names:
        pairs.insert(0, ("Host", host))
    if isinstance(body, str):
        body = body.encode()
    if "content-length" not in names and "transfer-encoding" not in names and (
            body or method in ("POST", "PUT", "PATCH")):
        pairs.append(("Content-Length", str(len(body))))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in pairs) + "\r\n"
    return head.encode("latin-1") + body


class Closed(ConnectionError):
    """The server closed the connection (EOF) — as opposed to a reset, ConnectionResetError."""


class Conn:
    """One client connection; reusable for keep-alive and pipelining. .closed turns true once the
    server said Connection: close, answered HTTP/1.0 without keep-alive, or closed."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0):
        self.port, self.host = port, host
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass

    def settimeout(self, t):
        self.sock.settimeout(t)

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            self.closed = True
            raise Closed("server closed the connection before a complete response"
                                  + (f" (got {bytes(self.buf[:200])!r})" if self.buf else ""))
        self.buf += chunk

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                return self._take(i + 2)[:-2]
            if len(self.buf) > 1 << 20:
                raise ConnectionError("response line longer than 1 MiB")
            self._fill()

    def read_until_close(self):
        """Everything the server sends until it closes (bytes); a reset raises
        ConnectionResetError."""
        while True:
            try:
                self._fill()
            except Closed:
                break
        data, self.buf = bytes(self.buf), bytearray()
        return data

    def read_response(self, method="GET"):
        """Reads one response to a request made with `method`."""
        while True:
            status_line = self._line().decode("latin-1")
            parts = status_line.split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise ConnectionError(f"not an HTTP status line: {status_line[:200]!r}")
            headers = []
            while True:
                line = self._line().decode("latin-1")
                if not line:
                    break
                k, sep, v = line.partition(":")
                if not sep:
                    raise ConnectionError(f"bad header line {line[:200]!r}")
                headers.append((k, v.strip(" \t")))
            status = int(parts[1])
            if status >= 200 or status == 101:
                break
        resp = Response(status, parts[2] if len(parts) > 2 else "", headers, b"", parts[0])
        te = (resp.header("Transfer-Encoding") or "").lower()
        cl = resp.header("Content-Length")
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            pass
        elif "chunked" in te:
            body = bytearray()
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():
                        pass
                    break
                body += self._take(size)
                self._take(2)
            resp.body = bytes(body)
        elif cl is not None:
            resp.body = self._take(int(cl))
        else:
            resp.body = self.read_until_close()
        conn_tokens = (resp.header("Connection") or "").lower()
        if "close" in conn_tokens or (resp.version == "HTTP/1.0" and "keep-alive" not in conn_tokens):
            self.closed = True
        return resp

    def request(self, method, path, headers=(), body=b""):
        self.send(build_request(method, path, headers, body, f"{self.host}:{self.port}"))
        return self.read_response(method)


def request(port, method, path, headers=(), body=b"", conn=None, timeout=5.0, host="127.0.0.1"):
    """One request. With conn (a Conn) it goes over that connection, which stays open; without,
    over a new connection closed afterwards. Returns a Response (status, headers, body)."""
    if conn is not None:
        return conn.request(method, path, headers, body)
    with Conn(port, host, timeout) as c:
        return c.request(method, path, headers, body)


# ---------------------------------------------------------------- the test IdP

def _control(port, path, params=None, method="POST", want=200):
    qs = urllib.parse.urlencode({k: v for k, v in (params or {}).items() if v is not None},
                                quote_via=urllib.parse.quote)
    r = request(port, method, path + ("?" + qs if qs else ""))
    if want is not None and r.status != want:
        raise AssertionError(f"IdP control {method} {path}?{qs}: expected {want}, got "
                             f"{r.status} {r.body[:200]!r}")
    return json.loads(r.body) if r.body else {}


def _join(groups):
    return groups if groups is None or isinstance(groups, str) else "|".join(groups)


def idp_session(ctl_port, cookie, user, groups=None, ttl=None, entitlements=None):
    """Logs `user` in under cookie value `cookie`; groups/entitlements: list or "a|b".
    Returns the reply, e.g. {"ok": true, "exp": <session end, unix seconds>}."""
    return _control(ctl_port, "/session", {"cookie": cookie, "user": user, "groups": _join(groups),
                                           "entitlements": _join(entitlements), "ttl": ttl})


def idp_end(ctl_port, cookie=None, user=None):
    """Ends the session of a cookie value or every session of a user; returns how many."""
    return _control(ctl_port, "/end", {"cookie": cookie, "user": user})["ended"]


def idp_fault(ctl_port, mode=None, latency_ms=None):
    """mode: ok|500|503|refuse|hang|reset|garbage|reset-mid|drip (None: unchanged); latency_ms
    (None: unchanged)."""
    return _control(ctl_port, "/fault", {"mode": mode, "latency_ms": latency_ms})


def idp_calls(ctl_port, cookie=None):
    """Forward-auth requests the IdP received, in total or for one cookie value."""
    return _control(ctl_port, "/calls", {"cookie": cookie}, method="GET")["calls"]


def idp_reset(ctl_port):
    """Zeroes the counters and clears every fault; sessions stay."""
    return _control(ctl_port, "/reset")


class Idp:
    """A running test IdP: .port (forward-auth), .control, .proc, .cookie_name, .jwt_secret."""

    def __init__(self, proc, port, control, cookie_name, jwt_secret):
        self.proc, self.port, self.control = proc, port, control
        self.cookie_name, self.jwt_secret = cookie_name, jwt_secret

    def session(self, cookie, user, groups=None, ttl=None, entitlements=None):
        return idp_session(self.control, cookie, user, groups, ttl, entitlements)

    def end(self, cookie=None, user=None):
        return idp_end(self.control, cookie, user)

    def fault(self, mode=None, latency_ms=None):
        return idp_fault(self.control, mode, latency_ms)

    def calls(self, cookie=None):
        return idp_calls(self.control, cookie)

    def reset(self):
        return idp_reset(self.control)

    def auth(self, host, uri="/", cookie=None, kind="traefik", headers=(), method="GET",
             conn=None, timeout=5.0):
        """A forward-auth check as Traefik would send it, straight to the IdP."""
        return request(self.port, method, f"/outpost.goauthentik.io/auth/{kind}",
                       auth_headers(host, uri, cookie, self.cookie_name) + list(headers),
                       conn=conn, timeout=timeout)


def auth_headers(host, uri="/", cookie=None, cookie_name=IDP_COOKIE, method="GET", proto="https"):
    """The headers a reverse proxy adds to a forward-auth check."""
    h = [("X-Forwarded-Method", method), ("X-Forwarded-Proto", proto),
         ("X-Forwarded-Host", host), ("X-Forwarded-Uri", uri)]
    if cookie is not None:
        h.append(("Cookie", f"theme=dark; {cookie_name}={cookie}"))
    return h


def start_idp(args=(), name="idp", quiet=True, binary=None, jwt_secret=IDP_JWT_SECRET):
    """Starts build/test-idp (or $IDP_BIN) on two free ports; returns an Idp once it is ready.
    args: extra flags, e.g. ["--app", "x.test;allow=ops"]."""
    binary = binary or IDP_BIN
    if not os.access(binary, os.X_OK):
        raise AssertionError(f"{binary} is missing: run `make build/test-idp`")
    port, control = free_port(), free_port()
    argv = [binary, "--listen", f"127.0.0.1:{port}", "--control", f"127.0.0.1:{control}",
            "--jwt-secret", jwt_secret] + (["--quiet"] if quiet else []) + list(args)
    cookie_name = IDP_COOKIE
    for i, a in enumerate(argv):
        if a == "--cookie-name" and i + 1 < len(argv):
            cookie_name = argv[i + 1]
    proc = start(argv, ready_line="ready", name=name)
    return Idp(proc, port, control, cookie_name, jwt_secret)


# ---------------------------------------------------------------- the test framework

_cases = []


def case(fn):
    """Registers fn as a test case; cases run in the order they are defined."""
    _cases.append(fn)
    return fn


def eq(got, expected, what="value"):
    if got != expected:
        raise AssertionError(f"{what}: expected {expected!r}, got {got!r}")


def check(cond, what, got=None):
    if not cond:
        raise AssertionError(what + ("" if got is None else f" (got {got!r})"))


def wait_for(pred, timeout=5.0, interval=0.02, what="condition"):
    """Polls pred() until it is truthy; returns its value or fails after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true after {timeout}s")
        time.sleep(interval)


def _alarm(signum, frame):
    raise TimeoutError("case timed out")


def main(setup=None, case_timeout=None):
    """Runs setup() (a failure there fails the run), then every @case — or only those named on the
    command line — printing `ok NAME` / `FAIL NAME: message`, then `RESULT <passed> <failed>`.
    Each case is interrupted after case_timeout seconds ($CASE_TIMEOUT, default 60)."""
    case_timeout = case_timeout or int(os.environ.get("CASE_TIMEOUT", "60"))
    only = set(sys.argv[1:])
    passed = failed = 0
    signal.signal(signal.SIGALRM, _alarm)
    try:
        if setup:
            setup()
    except Exception as e:
        print(f"FAIL setup: {type(e).__name__}: {e}", flush=True)
        print(f"RESULT 0 1", flush=True)
        stop_all()
        sys.exit(1)
    for fn in _cases:
        name = fn.__name__
        if only and name not in only:
            continue
        signal.alarm(case_timeout)
        try:
            fn()
            passed += 1
            print(f"ok {name}", flush=True)
        except AssertionError as e:
            failed += 1
            print(f"FAIL {name}: {e}", flush=True)
        except Exception as e:
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
            for line in traceback.format_exc().splitlines():
                print("    " + line, flush=True)
        finally:
            signal.alarm(0)
    print(f"RESULT {passed} {failed}", flush=True)
    stop_all()
    sys.exit(0 if failed == 0 else 1)
