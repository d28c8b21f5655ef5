"""daemon_util.py — what test_daemon.py and test_daemon_outage.py share: one test IdP per file,
an authcached per case with its own segment, the forward-auth and admin requests, and the checks
every case ends with (SIGTERM -> exit status 0, no sanitizer report in the daemon's log).

AUTHCACHED_BIN picks the daemon binary (default build/authcached), e.g. the ASan+UBSan build
build/san-address-undefined/authcached.
"""

import os
import re
import time

import harness

# Ours, not the daemon's: kept out of the environment of the daemons this process starts (builds
# before 72287bf refused AUTHCACHED_* variables that name no flag).
BIN = os.environ.pop("AUTHCACHED_BIN", None) or os.path.join(harness.BUILD, "authcached")
AUTH = harness.AUTH_TRAEFIK
IDP = None

# Short lifetimes keep the files fast; cases that test expiry set their own.
DEFAULT_FLAGS = {
    "--fresh-ttl": "10s",
    "--session-ttl": "30s",
    "--outage-grace": "2s",
    "--upstream-timeout": "500ms",
    "--workers": "2",
    "--capacity": "1024",
}

SANITIZER_MARKERS = ("runtime error", "AddressSanitizer", "LeakSanitizer",
                     "UndefinedBehaviorSanitizer", "ThreadSanitizer")

ANY = object()  # expect(): do not check this part


def setup_idp():
    global IDP
    if not os.access(BIN, os.X_OK):
        raise AssertionError(f"{BIN} is missing: run `make build/authcached` "
                             "(or set AUTHCACHED_BIN)")
    IDP = harness.start_idp(["--app", "app1.test", "--app", "app2.test;allow=admins",
                             "--app", "app3.test", "--app", "open.test;skip=/public/"])
    return IDP


_seq = 0


def cookie(tag):
    """A session cookie value no other case uses."""
    global _seq
    _seq += 1
    return f"{tag}-{os.getpid()}-{_seq}"


_shm_seq = 0


def shm_name():
    global _shm_seq
    _shm_seq += 1
    return f"authcache-it-{os.getpid()}-{_shm_seq}"


def remove_shm(name):
    try:
        os.unlink("/dev/shm/" + name)
    except FileNotFoundError:
        pass


def no_sanitizer_report(text, where):
    """Fails with the report's first lines if text holds a sanitizer report."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if any(m in line for m in SANITIZER_MARKERS):
            raise AssertionError(f"sanitizer report in {where}:\n" +
                                 "\n".join(lines[max(0, i - 2):i + 25]))


class Daemon:
    """A running authcached: .port (forward-auth), .admin, .shm, .proc (harness.Proc)."""

    def __init__(self, flags=None, shm=None, env=None, upstream=None):
        self.port, self.admin = harness.free_port(), harness.free_port()
        self.shm = shm or shm_name()
        opts = dict(DEFAULT_FLAGS)
        opts.update(flags or {})
        argv = [BIN, "--listen", f"127.0.0.1:{self.port}", "--admin", f"127.0.0.1:{self.admin}",
                "--upstream", upstream or f"http://127.0.0.1:{IDP.port}", "--shm", self.shm]
        for k, v in opts.items():
            if v is not None:  # None: leave the flag out
                argv += [k, v]
        self.proc = harness.start(argv, ready_url=f"http://127.0.0.1:{self.admin}/readyz",
                                  name="authcached", env=env, timeout=15)

    def stop(self, timeout=8.0):
        return self.proc.stop(timeout=timeout)


class daemon:
    """`with daemon(flags) as d:` — a fresh authcached for the block. On leaving: SIGTERM, exit
    status 0 expected, no sanitizer report in its log, its segment removed (unless keep_shm)."""

    def __init__(self, flags=None, shm=None, env=None, keep_shm=False, upstream=None):
        self.flags, self.shm, self.env, self.keep_shm = flags, shm, env, keep_shm
        self.upstream = upstream

    def __enter__(self):
        self.d = Daemon(self.flags, self.shm, self.env, self.upstream)
        return self.d

    def __exit__(self, exc_type, exc, tb):
        d = self.d
        t0 = time.monotonic()
        rc = d.stop()
        took = time.monotonic() - t0
        if not self.keep_shm:
            remove_shm(d.shm)
        no_sanitizer_report(d.proc.log_text(), d.proc.log)
        if exc_type is None:
            if rc != 0:
                raise AssertionError(f"authcached exit status after SIGTERM: expected 0, got {rc}; "
                                     f"log {d.proc.log}:\n{d.proc.log_tail()}")
            if took > 3.0:
                raise AssertionError(f"authcached took {took:.1f}s to stop after SIGTERM with "
                                     f"nothing in flight (expected well under 3 s)")
        return False


# ---------------------------------------------------------------- requests

def fa(d, host, uri="/", cookie=None, headers=(), conn=None, timeout=5.0, fwd_method="GET",
       path=AUTH):
    """A forward-auth check as Traefik sends it, to authcached d (or to a port number)."""
    port = d if isinstance(d, int) else d.port
    h = harness.auth_headers(host, uri, cookie, method=fwd_method) + list(headers)
    return harness.request(port, "GET", path, h, conn=conn, timeout=timeout)


def admin_get(d, path, timeout=5.0):
    return harness.request(d.admin, "GET", path, timeout=timeout)


def admin_post(d, path, timeout=5.0):
    return harness.request(d.admin, "POST", path, timeout=timeout)


def raw_exchange(port, data, timeout=5.0):
    """Sends request bytes on a new connection; returns (status line, [header lines], body) as
    bytes, the lines without their CRLF, exactly as received."""
    with harness.Conn(port, timeout=timeout) as c:
        c.send(data)
        while b"\r\n\r\n" not in c.buf:
            c._fill()
        i = c.buf.index(b"\r\n\r\n")
        head = bytes(c.buf[:i])
        del c.buf[:i + 4]
        lines = head.split(b"\r\n")
        n = 0
        for line in lines[1:]:
            if line.lower().startswith(b"content-length:"):
                n = int(line.split(b":", 1)[1])
        body = c._take(n)
        return lines[0], lines[1:], body


def raw_header_lines(lines, prefix):
    return [l for l in lines if l.lower().startswith(prefix.lower())]


def timed(fn):
    t0 = time.monotonic()
    r = fn()
    return r, time.monotonic() - t0


def identity(r):
    """The X-authentik-* headers of a response, as (name, value) in order."""
    return [(k, v) for k, v in r.headers if k.lower().startswith("x-authentik-")]


def describe(r):
    return (f"{r.status} X-Authcache={r.header('X-Authcache')!r} "
            f"user={r.header('X-authentik-username')!r} body={r.body[:120]!r}")


def expect(r, status, xac=ANY, user=ANY, what="answer"):
    """status; X-Authcache (ANY/None: not checked); user: the X-authentik-username value, None
    for "no such header", ANY for not checked."""
    if r.status != status:
        raise AssertionError(f"{what}: expected status {status}, got {describe(r)}")
    if xac is not ANY and xac is not None and r.header("X-Authcache") != xac:
        raise AssertionError(f"{what}: expected X-Authcache {xac!r}, got {describe(r)}")
    if user is not ANY and r.header("X-authentik-username") != user:
        raise AssertionError(f"{what}: expected X-authentik-username {user!r}, got {describe(r)}")
    if status == 200 and isinstance(user, str) and not r.header("X-authentik-jwt"):
        raise AssertionError(f"{what}: expected the identity headers (X-authentik-jwt), got "
                             f"{r.headers!r}")


def metric(text, name):
    """The value of one sample line `name value` of a Prometheus text body."""
    if isinstance(text, bytes):
        text = text.decode()
    m = re.search(r"^" + re.escape(name) + r" (\S+)$", text, re.M)
    if not m:
        raise AssertionError(f"/metrics has no sample {name}")
    v = float(m.group(1))
    return int(v) if v == int(v) else v


def circuit_open(d):
    return metric(admin_get(d, "/metrics").body, "authcache_idp_circuit_open")
