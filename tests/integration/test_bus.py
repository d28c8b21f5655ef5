"""test_bus.py — the purge bus (--bus redis://...) end to end: two or three authcached nodes (own
segments, one --hash-key-file, one stream) in front of one test IdP, and a real redis-server
(Debian's `redis-server`, started here on a free loopback port with its append-only file in a
temporary directory, never the system service).

A purge on node A — by session, by user, of everything through the admin API, and a sign-out
through the sign-out path — makes node B answer `miss` within 500 ms; with Redis stopped both
nodes keep answering from their caches, /metrics says authcache_bus_connected 0, and a purge made
on A meanwhile reaches B once Redis is back; garbage added to the stream is counted as bad and
changes nothing; 1 000 purges on A while every Redis connection is killed every 10 ms and Redis
restarts once all reach B and C; a node stopped while the stream is trimmed past it (--bus-maxlen)
counts a gap and serves nothing it held, not even stale while the IdP fails; rediss:// carries
purges with a CA that verifies and is refused, said once, with one that does not; and the stream
that held every message of the run never held a cookie value (nor its hex, base64 or URL
encoding).

With --bus-auth-file (a Redis of its own per case, started with `--requirepass` and an ACL user):
two nodes with the password file, and two with a `user:password` file, share a purge; a wrong
password leaves the node serving with authcache_bus_connected 0 and one clear log line (never the
password), and it connects once Redis accepts the password; a missing or empty file, or the flag
without --bus, exits 2 with one line naming the flag.

Skips (exit 77) if redis-server is not installed (`make deps`).
Run from the repo root: python3 tests/integration/test_bus.py [CASE...]
"""

import base64
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from daemon_util import admin_get, admin_post, cookie, daemon, describe, expect, fa, metric  # noqa: E402
import daemon_util  # noqa: E402
from harness import case, check, eq  # noqa: E402

SIGN_OUT = "/outpost.goauthentik.io/sign_out"
REDIS_BIN = shutil.which("redis-server")
CHANNEL = f"authcache-it-{os.getpid()}"  # the stream
PROPAGATE_S = 0.5  # a purge on A must show on B within this

REDIS = None     # the running Redis
KEY_FILE = None  # the hash key both nodes share
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
    """redis-server on a loopback port, its append-only file in a directory of its own (a restart
    keeps the stream); stop() and start() again on that port. extra: more redis-server arguments;
    auth: the AUTH arguments call() sends first; tls: (ca, cert, key) to listen with TLS only."""

    def __init__(self, extra=(), auth=(), tls=None):
        self.port = harness.free_port()
        self.proc = None
        self.extra, self.auth, self.tls = list(extra), list(auth), tls
        self.dir = tempfile.mkdtemp(prefix="authcache-redis-")
        self.start()

    def start(self):
        ports = ["--port", str(self.port)]
        if self.tls:
            ca, cert, key = self.tls
            ports = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", cert,
                     "--tls-key-file", key, "--tls-ca-cert-file", ca, "--tls-auth-clients", "no"]
        self.proc = harness.start([REDIS_BIN, "--save", "", "--appendonly", "yes",
                                   "--appendfsync", "always", "--dir", self.dir, "--bind",
                                   "127.0.0.1", "--daemonize", "no"] + ports + self.extra,
                                  name="redis")
        harness.wait_for(self.ping, timeout=10, what="redis-server answering PING")

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=2)
        if self.tls:
            ctx = ssl.create_default_context(cafile=self.tls[0])
            s = ctx.wrap_socket(s, server_hostname="localhost")
        return s

    def stop(self):
        self.proc.stop()

    def ping(self):
        try:
            return self.call(b"PING").startswith(b"+PONG")
        except OSError:
            return False

    def call(self, *args):
        """One command; the raw reply (read until a CRLF-terminated line or bulk is complete)."""
        with self.connect() as s:
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

    def call_all(self, *args):
        """One command whose reply may be long: read until Redis is silent for 0.3 s."""
        with self.connect() as s:
            s.sendall(resp_command(*args))
            s.settimeout(0.3)
            data = b""
            try:
                while True:
                    chunk = s.recv(1 << 20)
                    if not chunk:
                        break
                    data += chunk
            except (socket.timeout, ssl.SSLError):
                pass
            return data

    def xadd(self, *fields, stream=CHANNEL):
        """XADD an entry of fields (bytes) to the stream; its id."""
        r = self.call(b"XADD", stream.encode(), b"*", *fields)
        check(r.startswith(b"$"), "XADD answered with an id", r)
        return r.split(b"\r\n")[1]

    def kill_clients(self):
        """CLIENT KILL TYPE normal (every client but this one); quiet while Redis is away."""
        try:
            self.call(b"CLIENT", b"KILL", b"TYPE", b"normal")
        except OSError:
            pass


# ---------------------------------------------------------------- nodes

def node_flags(r=None, **more):
    r = r or REDIS
    return {"--hash-key-file": KEY_FILE, "--bus": f"redis://127.0.0.1:{r.port}/{CHANNEL}"} | more


def bus_metric(d, name):
    return metric(admin_get(d, "/metrics").body, "authcache_bus_" + name)


def wait_connected(*nodes, timeout=10.0, want=1):
    for d in nodes:
        harness.wait_for(lambda: bus_metric(d, "connected") == want, timeout=timeout,
                         what=f"authcache_bus_connected {want} on the node at port {d.port}")


def top_once(d):
    """One screen of `authcache top` for node d, as plain text (stdout not a tty)."""
    r = subprocess.run([os.path.join(harness.BUILD, "authcache"), "--shm", d.shm, "--admin",
                        f"127.0.0.1:{d.admin}", "top", "--iterations", "1"],
                       capture_output=True, timeout=15,
                       env=dict(os.environ, LANG="C", LC_ALL="", LC_CTYPE=""))
    eq(r.returncode, 0, f"top's exit status (stderr {r.stderr!r})")
    return r.stdout.decode()


def top_row(screen, label):
    """The value column of top's row `label` (the text after the label, up to two spaces)."""
    m = re.search(r"^  " + re.escape(label) + r" +(\S+(?: \S+)?)", screen, re.M)
    check(m, f"top shows a row {label!r}", screen)
    return m.group(1)


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
        # logged by B's purge thread after its walk (the stamp above hid the answer at once)
        harness.wait_for(lambda: "via bus from node" in b.proc.log_text(), timeout=5,
                         what="B logs the purge as via bus")


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
    v, w = session("bus-down", "dora"), session("bus-down2", "dora2")
    a_cm, b_cm = nodes()
    with a_cm as a, b_cm as b:
        wait_connected(a, b)
        for d in (a, b):
            cache_on(d, "app1.test", v, "dora")
            cache_on(d, "app1.test", w, "dora2")
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
        wait_connected(a, b, timeout=10)
        wait_miss(b, "app1.test", v, "dora", "B once Redis is back", timeout=3)
        expect(fa(b, "app1.test", "/", w), 200, "hit", "dora2", "B: the other session")
        eq(bus_metric(a, "queued"), 0, "A: nothing waits any more")
        eq(bus_metric(a, "dropped_total"), 0, "A: nothing dropped")
        for d in (a, b):
            eq(bus_metric(d, "gaps_total"), 0, f"gaps on port {d.port}: Redis kept the stream")
        eq(a.proc.log_text().count("bus_disconnected"), 1, "bus_disconnected lines in A's log")


def entries_added(r):
    """XINFO STREAM's entries-added: every entry the stream ever took (0 without a stream)."""
    reply = r.call_all(b"XINFO", b"STREAM", CHANNEL.encode())
    if reply.startswith(b"-"):
        return 0
    return int(reply.split(b"entries-added\r\n:")[1].split(b"\r\n")[0])


@case
def a_thousand_purges_through_killed_connections_and_a_restart():
    """Every Redis connection killed every 10 ms (the XREAD BLOCK one is a normal client) while A
    makes 1 000 purges, and Redis restarted once midway: B and C apply every entry A added (1 000,
    and again the few whose XADD was answered on a connection killed before the answer came: at
    least once), and the 20 answers they held for users purged all along the run turn into
    misses."""
    held = [(session(f"bus-k{i}", f"k{i}"), f"k{i}") for i in range(0, 1000, 50)]
    held.append((session("bus-k999", "k999"), "k999"))
    a_cm, b_cm, c_cm = daemon(node_flags()), daemon(node_flags()), daemon(node_flags())
    with a_cm as a, b_cm as b, c_cm as c:
        wait_connected(a, b, c)
        for d in (b, c):
            for v, user in held:
                cache_on(d, "app1.test", v, user)
        added0 = entries_added(REDIS)
        stop = threading.Event()

        def killer():
            while not stop.is_set():
                REDIS.kill_clients()
                time.sleep(0.01)
        t = threading.Thread(target=killer, daemon=True)
        t.start()
        t0 = time.monotonic()
        try:
            for i in range(1000):
                purge(a, f"user=k{i}")
                time.sleep(0.002)  # the purges spread over the kills
                if i == 500:
                    REDIS.stop()
                    REDIS.start()
        finally:
            stop.set()
            t.join()
        made = time.monotonic() - t0
        harness.wait_for(lambda: bus_metric(a, "published_total") == 1000, timeout=10,
                         what="A's 1000 purges accepted by Redis")
        added = entries_added(REDIS) - added0
        check(added >= 1000, f"entries A added: {added} (expected at least 1000)")
        for d in (b, c):
            harness.wait_for(lambda: bus_metric(d, "applied_total") == added, timeout=10,
                             what=f"{added} entries applied on port {d.port} "
                                  f"(now {bus_metric(d, 'applied_total')})")
        took = time.monotonic() - t0
        eq(bus_metric(a, "dropped_total"), 0, "A: purges dropped")
        for d in (b, c):
            eq(bus_metric(d, "gaps_total"), 0, f"gaps on port {d.port}")
            for v, user in held:
                expect(fa(d, "app1.test", "/", v), 200, "miss", user,
                       f"{user}'s answer on port {d.port} after the purges")
        for d in (a, b, c):
            check(d.proc.log_text().count("bus_disconnected") >= 5,
                  f"the node at {d.port} lost Redis many times", d.proc.log_tail())
        print(f"bus_1000_purges_made_s={made:.1f} bus_1000_purges_applied_s={took:.1f} "
              f"bus_1000_purges_entries={added}", flush=True)


@case
def lag_in_stats_metrics_and_top():
    """How far a node reads behind the stream (checked every second with XINFO STREAM): in
    /metrics (authcache_bus_behind, authcache_bus_lag_seconds), /v1/stats (bus.behind,
    bus.lag_seconds) and `authcache top`'s BUS block; 0 once the node has read what A wrote."""
    with daemon(node_flags()) as a, daemon(node_flags()) as b:
        wait_connected(a, b)
        for i in range(5):
            purge(a, f"user=nobody-lag-{i}")
        harness.wait_for(lambda: bus_metric(b, "applied_total") == 5, timeout=3,
                         what="B applied A's 5 purges")
        time.sleep(1.2)  # the next check, after B read them
        eq(bus_metric(b, "behind"), 0, "B: entries behind")
        eq(bus_metric(b, "lag_seconds"), 0, "B: lag")
        bus = json.loads(admin_get(b, "/v1/stats").body)["bus"]
        eq((bus["behind"], bus["lag_seconds"]), (0, 0), "/v1/stats bus.behind, bus.lag_seconds")
        screen = top_once(b)
        check("BUS  connected" in screen, "top: the bus connected", screen)
        eq(top_row(screen, "lag"), "0.000 s", "top: B's lag")
        check("0 entries behind" in screen, "top: entries behind", screen)
        eq(top_row(screen, "gaps (all purged)"), "0", "top: no gap")


@case
def a_gap_past_the_retention_purges_everything_held():
    """B stopped (SIGSTOP) while A adds 60 purges to a stream kept at about 10 entries
    (--bus-maxlen 10, nodes of 5 entries): B counts a gap, and every answer it held asks the IdP
    again; while the IdP fails none of them is served, not even stale."""
    r = Redis(extra=["--stream-node-max-entries", "5"])
    held = [(session(f"bus-gap{i}", f"g{i}"), f"g{i}") for i in range(5)]
    grace = {"--fresh-ttl": "300ms", "--outage-grace": "60s", "--bus-maxlen": "10"}
    try:
        with daemon(node_flags(r, **grace)) as a, daemon(node_flags(r, **grace)) as b:
            wait_connected(a, b)
            for v, user in held:
                cache_on(b, "app1.test", v, user)
            purge(a, "user=nobody-0")  # one B reads: it stands inside the stream
            harness.wait_for(lambda: bus_metric(b, "applied_total") == 1, timeout=2,
                             what="B applied the first purge")
            os.kill(b.proc.pid, signal.SIGSTOP)
            try:
                for i in range(1, 61):
                    purge(a, f"user=nobody-{i}")
                    time.sleep(0.02)  # A keeps up with a stream this short; B is stopped
                harness.wait_for(lambda: bus_metric(a, "published_total") == 61, timeout=5,
                                 what="A's 61 purges in the stream")
                check(int(r.call(b"XLEN", CHANNEL.encode())[1:]) < 30,
                      "the stream was trimmed to about --bus-maxlen")
                r.kill_clients()  # B reconnects when it runs again
            finally:
                os.kill(b.proc.pid, signal.SIGCONT)
            harness.wait_for(lambda: bus_metric(b, "gaps_total") >= 1, timeout=5,
                             what="B counts a gap")
            eq(bus_metric(a, "gaps_total"), 0, "A: no gap (it read every entry)")
            eq(top_row(top_once(b), "gaps (all purged)"), str(bus_metric(b, "gaps_total")),
               "B's gaps in top")
            eq(top_row(top_once(a), "gaps (all purged)"), "0", "A's gaps in top")
            check("bus_gap" in b.proc.log_text(), "B logs the gap", b.proc.log_tail())
            idp().fault("500")
            try:
                time.sleep(0.4)  # past --fresh-ttl: B would serve stale now if it still held them
                for v, user in held:
                    rr = fa(b, "app1.test", "/", v)
                    check(rr.header("X-Authcache") not in ("hit", "stale"),
                          f"{user}: not served from what B held before the gap while the IdP "
                          f"fails", describe(rr))
            finally:
                idp().fault("ok")
            for v, user in held:
                before = idp().calls(v)
                expect(fa(b, "app1.test", "/", v), 200, "miss", user,
                       f"{user} on B after the gap")
                eq(idp().calls(v), before + 1, f"{user}: B asked the IdP again")
    finally:
        r.stop()


@case
def a_restarted_node_reads_what_was_published_while_it_was_down():
    """B's segment outlives B (a restart): the purge A made while no daemon read for that segment
    reaches it when B starts again (from the segment's mark, not the stream's end), and the rest
    of what B held stays (no gap)."""
    v, w = session("bus-rs", "rita"), session("bus-rs2", "ruth")
    name = daemon_util.shm_name()
    try:
        with daemon(node_flags()) as a:
            with daemon(node_flags(), shm=name, keep_shm=True) as b:
                wait_connected(a, b)
                cache_on(b, "app1.test", v, "rita")
                cache_on(b, "app1.test", w, "ruth")
                purge(a, "user=nobody-rs")  # B reads it: the segment's mark
                harness.wait_for(lambda: bus_metric(b, "applied_total") == 1, timeout=2,
                                 what="B applied the first purge")
            purge(a, "user=rita")  # B is down
            harness.wait_for(lambda: bus_metric(a, "published_total") == 2, timeout=2,
                             what="A's purge in the stream")
            time.sleep(0.1)
            with daemon(node_flags(), shm=name) as b:
                wait_connected(b)
                check("reusing" in b.proc.log_text(), "B adopted its segment", b.proc.log_tail())
                wait_miss(b, "app1.test", v, "rita", "B restarted after a purge made while down",
                          timeout=3)
                expect(fa(b, "app1.test", "/", w), 200, "hit", "ruth", "B: the other answer kept")
                eq(bus_metric(b, "gaps_total"), 0, "B: no gap")
    finally:
        daemon_util.remove_shm(name)


@case
def garbage_on_the_stream_is_counted_and_ignored():
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
            REDIS.xadd(b"m", m)
        REDIS.xadd(b"x", b"v1 00000000000000aa all")  # not the field the bus writes
        REDIS.xadd(b"m", b"v1 00000000000000aa all", b"m", b"again")  # two fields
        bad = len(junk) + 2
        # A session purge made under another hash key: well-formed, not applied.
        REDIS.xadd(b"m", b"v1 0123456789abcdef session 0000000000000000 0000000000000000")
        for d in (a, b):
            harness.wait_for(lambda: bus_metric(d, "bad_messages_total") == bad,
                             timeout=2, what=f"{bad} bad messages counted on port {d.port}")
            harness.wait_for(lambda: bus_metric(d, "key_mismatch_total") == 1, timeout=2,
                             what="the foreign session purge counted")
            eq(bus_metric(d, "applied_total"), 0, "purges applied from junk")
            expect(fa(d, "app1.test", "/", v), 200, "hit", "jules", "a hit after the junk")
            eq(admin_get(d, "/healthz").status, 200, "/healthz after the junk")
        eq(bus_metric(a, "connected"), 1, "A still connected")
        # A good "all" from a stranger node still works afterwards.
        REDIS.xadd(b"m", b"v1 00000000000000aa all")
        wait_miss(b, "app1.test", v, "jules", "B after a valid message from another node")


@case
def a_flood_of_valid_purges_does_not_flood_the_log():
    """3 000 valid purges from a stranger node: all applied, in a few log lines. The purge thread
    logs one line per walk, and a walk takes every purge queued (so the 3 000 come in a handful of
    lines); any other line a stranger can cause per message goes through log_limit (test_log),
    which would end in a log_suppressed line."""
    with daemon(node_flags()) as b:
        wait_connected(b)
        lines0 = len(b.proc.log_text().splitlines())
        for i in range(0, 3000, 500):
            cmds = b"".join(resp_command(b"XADD", CHANNEL.encode(), b"*", b"m",
                                         f"v1 00000000000000bb user {len(f'f{j}')}:f{j}".encode())
                            for j in range(i, i + 500))
            with REDIS.connect() as s:
                s.sendall(cmds)
                got = b""
                while got.count(b"\r\n") < 1000:
                    got += s.recv(65536)
        harness.wait_for(lambda: bus_metric(b, "applied_total") == 3000, timeout=10,
                         what=f"3000 purges applied (now {bus_metric(b, 'applied_total')})")
        time.sleep(1.1)  # the next second: a suppressed count, if any, is written now
        REDIS.xadd(b"m", b"v1 00000000000000bb user 4:last")
        harness.wait_for(lambda: bus_metric(b, "applied_total") == 3001, timeout=2,
                         what="the last purge applied")
        time.sleep(0.2)
        # the purge thread logs after its walks (SCHED_IDLE: late on a busy machine)
        harness.wait_for(lambda: "purge" in "".join(b.proc.log_text().splitlines()[lines0:]),
                         timeout=5, what="the purges are logged (in few lines)")
        lines = b.proc.log_text().splitlines()[lines0:]
        check(len(lines) < 60, f"log lines for 3001 purges: {len(lines)} (expected < 60)",
              "\n".join(lines[-5:]))


@case
def no_credential_on_the_bus():
    seen = REDIS.call_all(b"XRANGE", CHANNEL.encode(), b"-", b"+")
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


# ---------------------------------------------------------------- rediss://

def make_certs(work, cn):
    """A throwaway CA and a certificate for localhost it signed: (ca, cert, key)."""
    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, cwd=work, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={cn}",
            "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "srv.key",
            "-out", "srv.csr")
    with open(os.path.join(work, "ext.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost\n")
    openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "srv.pem")
    return tuple(os.path.join(work, f) for f in ("ca.pem", "srv.pem", "srv.key"))


def tls_flags(r, ca, host="localhost"):
    return {"--hash-key-file": KEY_FILE, "--bus": f"rediss://{host}:{r.port}/{CHANNEL}",
            "--bus-ca-file": ca}


@case
def rediss_verifies_the_certificate():
    base = os.path.dirname(KEY_FILE)
    good, other = os.path.join(base, "tls-good"), os.path.join(base, "tls-other")
    os.makedirs(good)
    os.makedirs(other)
    certs = make_certs(good, "authcache bus test CA")
    wrong_ca = make_certs(other, "another CA")[0]
    r = Redis(tls=certs)
    v, w = session("bus-tls", "tilda"), session("bus-tls2", "tom")
    try:
        with daemon(tls_flags(r, certs[0])) as a, daemon(tls_flags(r, certs[0])) as b:
            wait_connected(a, b)
            check("(TLS)" in a.proc.log_text(), "A says it is connected with TLS",
                  a.proc.log_tail())
            cache_on(b, "app1.test", v, "tilda")
            purge(a, "user=tilda")
            wait_miss(b, "app1.test", v, "tilda", "B after a purge on A over rediss://")
            eq(bus_metric(b, "applied_total"), 1, "B: purges applied over TLS")
        # A CA that did not sign the certificate, and the right CA for another host name.
        for what, flags, why in (
                ("a wrong CA", tls_flags(r, wrong_ca), "certificate"),
                ("a name the certificate does not carry", tls_flags(r, certs[0], "127.0.0.1"),
                 "certificate")):
            with daemon(flags) as d:
                harness.wait_for(lambda: "bus_unreachable" in d.proc.log_text(), timeout=5,
                                 what=f"{what}: the node logs that it cannot use redis")
                eq(bus_metric(d, "connected"), 0, f"{what}: authcache_bus_connected")
                cache_on(d, "app1.test", w, "tom")  # serving goes on
                time.sleep(1)  # retries
                lines = [l for l in d.proc.log_text().splitlines() if "bus_unreachable" in l]
                eq(len(lines), 1, f"{what}: bus_unreachable lines after retries ({lines!r})")
                check("TLS handshake" in lines[0] and why in lines[0],
                      f"{what}: the line says the TLS handshake failed on the certificate",
                      lines[0])
                eq(bus_metric(d, "connected"), 0, f"{what}: still not connected")
        # A CA file that cannot be read: exit 2, one line naming the flag.
        rc, out, err = harness.run([daemon_util.BIN, "--upstream", f"http://127.0.0.1:{idp().port}",
                                    "--bus", f"rediss://localhost:{r.port}/x", "--bus-ca-file",
                                    "/nonexistent/ca.pem"], timeout=10)
        eq(rc, 2, "exit status for an unreadable --bus-ca-file")
        check("--bus" in err and "/nonexistent/ca.pem" in err, "the line names the CA file", err)
    finally:
        r.stop()


def setup():
    global REDIS, KEY_FILE
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


if __name__ == "__main__":
    harness.main(setup)
