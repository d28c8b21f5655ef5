"""test_bus.py — the purge bus (--bus redis://...) end to end: two authcached nodes (own segments,
one --hash-key-file, one channel) in front of one test IdP, and a real redis-server (Debian's
`redis-server`, started here on a free loopback port without persistence, never the system service).

A purge on node A — by session, by user, of everything through the admin API, and a sign-out
through the sign-out path — makes node B answer `miss` within 500 ms; with Redis stopped both
nodes keep answering from their caches, /metrics says authcache_bus_connected 0, and a purge made
on A meanwhile reaches B once Redis is back; garbage published on the channel is counted as bad
and changes nothing; and a raw subscriber that heard every message of the run never saw a cookie
value (nor its hex, base64 or URL encoding).

With --bus-auth-file (a Redis of its own per case, started with `--requirepass` and an ACL user):
two nodes with the password file, and two with a `user:password` file, share a purge; a wrong
password leaves the node serving with authcache_bus_connected 0 and one clear log line (never the
password), and it connects once Redis accepts the password; a missing or empty file, or the flag
without --bus, exits 2 with one line naming the flag.

Skips (exit 77) if redis-server is not installed (`make deps`).
Run from the repo root: python3 tests/integration/test_bus.py [CASE...]
"""

import base64
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from daemon_util import admin_get, admin_post, cookie, daemon, expect, fa, metric  # noqa: E402
import daemon_util  # noqa: E402
from harness import case, check, eq  # noqa: E402

SIGN_OUT = "/outpost.goauthentik.io/sign_out"
REDIS_BIN = shutil.which("redis-server")
CHANNEL = f"authcache-it-{os.getpid()}"
PROPAGATE_S = 0.5  # a purge on A must show on B within this

REDIS = None     # the running Redis
KEY_FILE = None  # the hash key both nodes share
SPY = None       # a raw subscriber recording every message on the channel
COOKIES = []     # every cookie value a case used: none may appear on the bus


def idp():
    return daemon_util.IDP


# ---------------------------------------------------------------- Redis

def resp_command(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else a.encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


class Redis:
    """redis-server on a loopback port, no persistence; stop() and start() again on that port.
    extra: more redis-server arguments; auth: the AUTH arguments call() sends first."""

    def __init__(self, extra=(), auth=()):
        self.port = harness.free_port()
        self.proc = None
        self.extra, self.auth = list(extra), list(auth)
        self.start()

    def start(self):
        self.proc = harness.start([REDIS_BIN, "--save", "", "--appendonly", "no", "--port",
                                   str(self.port), "--bind", "127.0.0.1", "--daemonize", "no"]
                                  + self.extra, name="redis")
        harness.wait_for(self.ping, timeout=10, what="redis-server answering PING")

    def stop(self):
        self.proc.stop()

    def ping(self):
        try:
            return self.call(b"PING").startswith(b"+PONG")
        except OSError:
            return False

    def call(self, *args):
        """One command; the raw reply (read until a CRLF-terminated line or bulk is complete)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            if self.auth:
                s.sendall(resp_command(b"AUTH", *self.auth))
                check(s.recv(64) == b"+OK\r\n", "the test's own AUTH to redis")
            s.sendall(resp_command(*args))
            data = b""
            while not data.endswith(b"\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            return data

    def publish(self, payload):
        """PUBLISH payload (bytes) on the channel; the number of subscribers that got it."""
        r = self.call(b"PUBLISH", CHANNEL.encode(), payload)
        check(r.startswith(b":"), "PUBLISH answered with an integer", r)
        return int(r[1:].strip())


class Spy:
    """A raw RESP subscriber on the channel, in a thread: .data holds every byte Redis sent it.
    Reconnects when Redis restarts, unless .paused."""

    def __init__(self, port):
        self.port, self.data, self.stop, self.paused = port, bytearray(), False, False
        self.lock = threading.Lock()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()
        harness.wait_for(lambda: b"subscribe" in self.snapshot(), what="the spy subscribed")

    def run(self):
        while not self.stop:
            if self.paused:
                time.sleep(0.02)
                continue
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(resp_command(b"SUBSCRIBE", CHANNEL.encode()))
                    s.settimeout(0.2)
                    while not self.stop and not self.paused:
                        try:
                            chunk = s.recv(65536)
                        except socket.timeout:
                            continue
                        if not chunk:
                            break
                        with self.lock:
                            self.data += chunk
            except OSError:
                time.sleep(0.1)

    def snapshot(self):
        with self.lock:
            return bytes(self.data)


# ---------------------------------------------------------------- nodes

def node_flags():
    return {"--hash-key-file": KEY_FILE, "--bus": f"redis://127.0.0.1:{REDIS.port}/{CHANNEL}"}


def bus_metric(d, name):
    return metric(admin_get(d, "/metrics").body, "authcache_bus_" + name)


def wait_connected(*nodes, timeout=10.0, want=1):
    for d in nodes:
        harness.wait_for(lambda: bus_metric(d, "connected") == want, timeout=timeout,
                         what=f"authcache_bus_connected {want} on the node at port {d.port}")


def nodes():
    """Two nodes on the bus, connected."""
    return daemon(node_flags()), daemon(node_flags())


def session(tag, user):
    v = cookie(tag)
    COOKIES.append(v)
    idp().session(v, user, ["users"])
    return v


def cache_on(d, host, v, user):
    """Makes d hold v's answer for host: a miss (or hit) now, a hit after."""
    fa(d, host, "/", v)
    expect(fa(d, host, "/", v), 200, "hit", user, f"{user} cached on port {d.port}")


def purge(d, query):
    r = admin_post(d, "/v1/purge?" + query)
    eq(r.status, 200, f"status of POST /v1/purge?{query}")
    return r


def wait_miss(d, host, v, user, what, timeout=PROPAGATE_S):
    """Asks d every 20 ms until it stops answering `hit`: that answer must come within timeout
    and be a `miss` (the IdP asked again)."""
    t0 = time.monotonic()
    while True:
        r = fa(d, host, "/", v)
        took = time.monotonic() - t0
        if r.header("X-Authcache") != "hit":
            expect(r, 200, "miss", user, what)
            return took
        if took > timeout:
            raise AssertionError(f"{what}: still a hit {took:.2f}s after the purge on the other "
                                 f"node (expected a miss within {timeout}s)")
        time.sleep(0.02)


# ---------------------------------------------------------------- cases

@case
def purge_by_session_reaches_the_other_node():
    v, other = session("bus-s", "sam"), session("bus-s2", "sam")
    a_cm, b_cm = nodes()
    with a_cm as a, b_cm as b:
        wait_connected(a, b)
        for d in (a, b):
            cache_on(d, "app1.test", v, "sam")
            cache_on(d, "app1.test", other, "sam")
        purge(a, "session=" + urllib.parse.quote(v, safe=""))
        expect(fa(a, "app1.test", "/", v), 200, "miss", "sam", "A after its own purge")
        took = wait_miss(b, "app1.test", v, "sam", "B after a session purge on A")
        expect(fa(b, "app1.test", "/", other), 200, "hit", "sam",
               "B: another session of the same user")
        eq(bus_metric(a, "published_total"), 1, "A: purges published")
        eq(bus_metric(b, "applied_total"), 1, "B: purges applied")
        eq(bus_metric(a, "applied_total"), 0, "A: its own message is not applied again")
        eq(bus_metric(b, "published_total"), 0, "B: a received purge is never published again")
        eq(bus_metric(b, "key_mismatch_total"), 0, "B: the same hash key")
        print(f"bus_propagation_session_ms={took * 1000:.0f}", flush=True)
        check("via bus from node" in b.proc.log_text(), "B logs the purge as via bus",
              b.proc.log_tail())


@case
def purge_by_user_and_all_reach_the_other_node():
    u1, u2, w = session("bus-u1", "ursula"), session("bus-u2", "ursula"), session("bus-w", "walt")
    a_cm, b_cm = nodes()
    with a_cm as a, b_cm as b:
        wait_connected(a, b)
        for d in (a, b):
            for v, user in ((u1, "ursula"), (u2, "ursula"), (w, "walt")):
                cache_on(d, "app1.test", v, user)
                cache_on(d, "app3.test", v, user)
        purge(a, "user=ursula")
        wait_miss(b, "app1.test", u1, "ursula", "B: ursula's first session after a user purge")
        wait_miss(b, "app3.test", u2, "ursula", "B: ursula's second session, another app")
        expect(fa(b, "app1.test", "/", w), 200, "hit", "walt", "B: another user")
        purge(a, "all=1")
        wait_miss(b, "app3.test", w, "walt", "B: walt after purge all on A")
        wait_miss(b, "app3.test", u1, "ursula", "B: ursula's app3 answer after purge all")
        eq(bus_metric(b, "applied_total"), 2, "B: purges applied")


@case
def sign_out_on_one_node_reaches_the_other():
    v, w = session("bus-so", "otto"), session("bus-so2", "petra")
    a_cm, b_cm = nodes()
    with a_cm as a, b_cm as b:
        wait_connected(a, b)
        for d in (a, b):
            cache_on(d, "app1.test", v, "otto")
            cache_on(d, "app3.test", v, "otto")
            cache_on(d, "app1.test", w, "petra")
        r = fa(a, "app1.test", SIGN_OUT, v)  # the IdP's own answer to it, passed on
        eq((r.status, r.header("X-Authcache")), (302, "signout"), "sign-out on A")
        idp().session(v, "otto")  # the IdP ended it; signed in again, B must ask the IdP
        wait_miss(b, "app3.test", v, "otto", "B after a sign-out on A")
        expect(fa(b, "app1.test", "/", w), 200, "hit", "petra", "B: another user")


@case
def sign_out_of_a_session_unknown_here_reaches_the_other():
    """A sign-out on a node whose cache never saw the session cannot name its user: it purges the
    session by its credential digest, and that goes over the bus too."""
    v, w = session("bus-su", "ulla"), session("bus-su2", "vera")
    a_cm, b_cm = nodes()
    with a_cm as a, b_cm as b:
        wait_connected(a, b)
        cache_on(b, "app1.test", v, "ulla")
        cache_on(b, "app1.test", w, "vera")
        r = fa(a, "app1.test", SIGN_OUT, v)  # then asked of the IdP, which answers for itself
        check(r.status < 500, "sign-out on A, session unknown there, answered", r.status)
        idp().session(v, "ulla")  # the IdP ended it; signed in again, B must ask the IdP
        wait_miss(b, "app1.test", v, "ulla", "B after a sign-out on A of a session only B held")
        expect(fa(b, "app1.test", "/", w), 200, "hit", "vera", "B: another session")

@case
def redis_down_nodes_serve_and_queue():
    """Also: A holds what it queued until the channel has its 3 subscribers again (A, B and the
    spy, which stays away a while here), so a slower node does not miss it."""
    v, w = session("bus-down", "dora"), session("bus-down2", "dora2")
    a_cm, b_cm = nodes()
    with a_cm as a, b_cm as b:
        wait_connected(a, b)
        for d in (a, b):
            cache_on(d, "app1.test", v, "dora")
            cache_on(d, "app1.test", w, "dora2")
        purge(a, "user=nobody-at-all")  # its PUBLISH tells A there are 3 subscribers
        harness.wait_for(lambda: bus_metric(a, "published_total") == 1, timeout=1,
                         what="A's first purge published")
        SPY.paused = True
        REDIS.stop()
        try:
            wait_connected(a, b, want=0, timeout=5)
            for d in (a, b):
                expect(fa(d, "app1.test", "/", v), 200, "hit", "dora", "a hit with Redis down")
            purge(a, "session=" + urllib.parse.quote(v, safe=""))
            eq(bus_metric(a, "queued"), 1, "A: the purge waits for Redis")
            time.sleep(0.3)
            expect(fa(b, "app1.test", "/", v), 200, "hit", "dora", "B before Redis is back")
        finally:
            REDIS.start()
        try:
            wait_connected(a, b, timeout=10)
            time.sleep(0.5)
            eq(bus_metric(a, "queued"), 1, "A: the purge held while the spy is not back")
            expect(fa(b, "app1.test", "/", v), 200, "hit", "dora", "B while A holds the purge")
        finally:
            SPY.paused = False
        wait_miss(b, "app1.test", v, "dora", "B once every subscriber is back", timeout=3)
        expect(fa(b, "app1.test", "/", w), 200, "hit", "dora2", "B: the other session")
        eq(bus_metric(a, "queued"), 0, "A: nothing waits any more")
        eq(bus_metric(a, "dropped_total"), 0, "A: nothing dropped")
        check("bus_disconnected" in a.proc.log_text(), "A logs the loss of Redis once",
              a.proc.log_tail())
        eq(a.proc.log_text().count("bus_disconnected"), 1, "bus_disconnected lines in A's log")


@case
def garbage_on_the_channel_is_counted_and_ignored():
    v = session("bus-junk", "jules")
    a_cm, b_cm = nodes()
    with a_cm as a, b_cm as b:
        wait_connected(a, b)
        for d in (a, b):
            cache_on(d, "app1.test", v, "jules")
        junk = [b"hello", b"v2 0123456789abcdef all", b"v1 0123456789abcdef user 99:jules",
                b"v1 0123456789abcdef session zz", b"v1 0123456789abcdef all" + b"\x00" * 2000,
                bytes(range(256)), b"v1 0123456789abcdef all\r\n*3\r\n$7\r\nmessage\r\n", b""]
        for m in junk:
            eq(REDIS.publish(m), 3, "subscribers that got the junk (A, B and the spy)")
        # A session purge made under another hash key: well-formed, not applied.
        REDIS.publish(b"v1 0123456789abcdef session 0000000000000000 0000000000000000")
        for d in (a, b):
            harness.wait_for(lambda: bus_metric(d, "bad_messages_total") == len(junk),
                             timeout=2, what=f"{len(junk)} bad messages counted on port {d.port}")
            harness.wait_for(lambda: bus_metric(d, "key_mismatch_total") == 1, timeout=2,
                             what="the foreign session purge counted")
            eq(bus_metric(d, "applied_total"), 0, "purges applied from junk")
            expect(fa(d, "app1.test", "/", v), 200, "hit", "jules", "a hit after the junk")
            eq(admin_get(d, "/healthz").status, 200, "/healthz after the junk")
        eq(bus_metric(a, "connected"), 1, "A still connected")
        # A good "all" from a stranger node still works afterwards.
        REDIS.publish(b"v1 00000000000000aa all")
        wait_miss(b, "app1.test", v, "jules", "B after a valid message from another node")


@case
def no_credential_on_the_bus():
    seen = SPY.snapshot()
    check(b"session" in seen and b"user" in seen and b" all" in seen,
          "the spy heard session, user and all purges", seen[:300])
    for v in COOKIES:
        raw = v.encode()
        forms = {"value": raw, "hex": raw.hex().encode(), "HEX": raw.hex().upper().encode(),
                 "base64": base64.b64encode(raw).rstrip(b"="),
                 "base64url": base64.urlsafe_b64encode(raw).rstrip(b"="),
                 "urlencoded": urllib.parse.quote(v, safe="").encode()}
        for form, b in forms.items():
            check(b not in seen, f"the cookie value {v!r} ({form}) is not on the bus")


# ---------------------------------------------------------------- --bus-auth-file

AUTH_PASS = "rq-" + os.urandom(9).hex()     # requirepass of the AUTH cases' Redis
ACL_PASS = "acl-" + os.urandom(9).hex()     # the ACL user alice's
WRONG_PASS = "wrong-" + os.urandom(9).hex()  # what no Redis here accepts


def auth_redis():
    """A Redis of its own that wants AUTH: requirepass AUTH_PASS and the ACL user alice."""
    return Redis(extra=["--requirepass", AUTH_PASS, "--user", "alice", "on", ">" + ACL_PASS,
                        "~*", "&*", "+@all"], auth=[AUTH_PASS])


def secret_file(name, content):
    path = os.path.join(os.path.dirname(KEY_FILE), name)
    with open(path, "w") as f:
        f.write(content)
    os.chmod(path, 0o600)
    return path


def auth_flags(r, auth_file):
    return {"--hash-key-file": KEY_FILE, "--bus": f"redis://127.0.0.1:{r.port}/{CHANNEL}",
            "--bus-auth-file": auth_file}


def no_secret_seen(d, *secrets):
    """Neither the log, /metrics nor /v1/stats of d holds any of the secrets."""
    seen = {"log": d.proc.log_text(), "/metrics": admin_get(d, "/metrics").body.decode(),
            "/v1/stats": admin_get(d, "/v1/stats").body.decode()}
    for where, text in seen.items():
        for s in secrets:
            check(s not in text, f"the password is not in the {where} of the node at {d.port}")


def share_a_purge(r, auth_file, tag, user):
    v = session(tag, user)
    a_cm, b_cm = daemon(auth_flags(r, auth_file)), daemon(auth_flags(r, auth_file))
    with a_cm as a, b_cm as b:
        wait_connected(a, b)
        for d in (a, b):
            cache_on(d, "app1.test", v, user)
        purge(a, "user=" + user)
        wait_miss(b, "app1.test", v, user, f"B after a user purge on A ({tag})")
        eq(bus_metric(b, "applied_total"), 1, "B: purges applied")
        for d in (a, b):
            no_secret_seen(d, AUTH_PASS, ACL_PASS)


@case
def bus_auth_password_file():
    r = auth_redis()
    try:
        share_a_purge(r, secret_file("redis-password", AUTH_PASS + "\n"), "bus-auth", "auggie")
    finally:
        r.stop()


@case
def bus_auth_acl_user_file():
    r = auth_redis()
    try:
        acl = secret_file("redis-acl", f"alice:{ACL_PASS}\n")
        share_a_purge(r, acl, "bus-acl", "alison")
        # The connections are alice's (CLIENT LIST: both of a running node).
        with daemon(auth_flags(r, acl)) as a:
            wait_connected(a)
            check(r.call(b"CLIENT", b"LIST").count(b"user=alice") >= 2,
                  "the node's connections are the ACL user alice's")
    finally:
        r.stop()


@case
def bus_auth_wrong_password():
    r = auth_redis()
    v = session("bus-wrong", "wanda")
    try:
        with daemon(auth_flags(r, secret_file("redis-wrong", WRONG_PASS + "\n"))) as d:
            harness.wait_for(lambda: "bus_auth_refused" in d.proc.log_text(), timeout=5,
                             what="the node logs that redis refused AUTH")
            eq(bus_metric(d, "connected"), 0, "authcache_bus_connected with a wrong password")
            expect(fa(d, "app1.test", "/", v), 200, "miss", "wanda", "serving: first ask")
            expect(fa(d, "app1.test", "/", v), 200, "hit", "wanda", "serving: from the cache")
            purge(d, "user=nobody-at-all")  # queued, never sent
            time.sleep(3)  # several retries (100 ms doubling)
            eq(bus_metric(d, "connected"), 0, "still not connected, nothing fixed")
            eq(bus_metric(d, "queued"), 1, "the purge waits")
            lines = [l for l in d.proc.log_text().splitlines() if "bus_auth_refused" in l]
            eq(len(lines), 1, f"bus_auth_refused lines after 3 s of retries ({lines!r})")
            check("WRONGPASS" in lines[0] and "AUTH" in lines[0],
                  "the line says redis refused AUTH with WRONGPASS", lines[0])
            no_secret_seen(d, WRONG_PASS, AUTH_PASS)
            # Redis takes the node's password now: it connects on its next retry (<= 5 s).
            eq(r.call(b"CONFIG", b"SET", b"requirepass", WRONG_PASS.encode()), b"+OK\r\n",
               "CONFIG SET requirepass")
            wait_connected(d, timeout=8)
            harness.wait_for(lambda: bus_metric(d, "queued") == 0, timeout=10,
                             what="the queued purge sent once connected")
            no_secret_seen(d, WRONG_PASS, AUTH_PASS)
    finally:
        r.stop()


@case
def bus_auth_file_errors():
    b, up = daemon_util.BIN, f"http://127.0.0.1:{idp().port}"
    bus = f"redis://127.0.0.1:{REDIS.port}/{CHANNEL}"
    good = secret_file("redis-good", AUTH_PASS)
    tries = {
        "a missing file": [b, "--upstream", up, "--bus", bus, "--bus-auth-file", "/nonexistent/pw"],
        "an empty file": [b, "--upstream", up, "--bus", bus, "--bus-auth-file",
                          secret_file("redis-empty", "")],
        "a file of a newline": [b, "--upstream", up, "--bus", bus, "--bus-auth-file",
                                secret_file("redis-nl", "\n")],
        "two lines": [b, "--upstream", up, "--bus", bus, "--bus-auth-file",
                      secret_file("redis-2l", AUTH_PASS + "\nmore\n")],
        "an empty user": [b, "--upstream", up, "--bus", bus, "--bus-auth-file",
                          secret_file("redis-nouser", ":" + AUTH_PASS)],
        "no --bus": [b, "--upstream", up, "--bus-auth-file", good],
        "no --bus, from the environment": ["env", f"AUTHCACHED_BUS_AUTH_FILE={good}", b,
                                           "--upstream", up],
    }
    for what, argv in tries.items():
        rc, out, err = harness.run(argv, timeout=10)
        eq(rc, 2, f"exit status for {what}")
        lines = err.strip("\n").split("\n")
        eq(len(lines), 1, f"{what}: lines on stderr ({err!r})")
        check("--bus-auth-file" in lines[0], f"{what}: the line names the flag", lines[0])
        check(AUTH_PASS not in err, f"{what}: the password is not shown", err)
    check("AUTHCACHED_BUS_AUTH_FILE" in err, "the variable is named when it is the source", err)


def setup():
    global REDIS, KEY_FILE, SPY
    if not REDIS_BIN:
        print("redis-server is not installed (make deps)", flush=True)
        sys.exit(77)
    daemon_util.setup_idp()
    d = tempfile.mkdtemp(prefix="authcache-bus-")
    KEY_FILE = os.path.join(d, "hash.key")
    with open(KEY_FILE, "wb") as f:
        f.write(os.urandom(32))
    os.chmod(KEY_FILE, 0o600)
    REDIS = Redis()
    SPY = Spy(REDIS.port)


if __name__ == "__main__":
    harness.main(setup)
