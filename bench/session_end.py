#!/usr/bin/env python3
"""bench/session_end.py — authentik ends a session: how long until no node serves it any more.

    python3 bench/session_end.py [--sessions 1000] [--fill 20000] [--give-up 2]

Starts the test IdP, redis-server, the authentik stand-in (tests/integration/ak_standin.py: the
outpost websocket authentik keeps with its outposts) and two nodes sharing a bus and a hash key:
A follows the feed (--authentik-url), B does not and learns of session ends over the bus only.
Both hold --fill answers of other sessions (so each session end costs a real scan of the segment)
and then each of --sessions sessions (one user each, its sid in the X-authentik-jwt as authentik
sets it) is cached on both (second request a `hit`).

Then, one session at a time: the stand-in sends `session.end` with the SHA-256 of the session's
sid (what authentik 2025.x sends), and both nodes are asked for the session again and again (a new
request each 1 ms on one keep-alive connection per node) until both answer anything but `hit`.
The latency is from sending session.end to the later of the two first non-hit answers: the
websocket, A's lookup of the session's credentials (its session index; a scan of the segment
before it), A -> Redis -> B and B's purge, plus up to ~1 ms of polling. Prints p50, p99
and max in ms, for A and for "every node" (the later of the two), and how many were lost (still a
hit after --give-up seconds), and A's session-index figures (how many session ends still scanned
the segment). Standard library only; run from the repo root after `make`.
"""

import argparse
import base64
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import ak_standin  # noqa: E402
import daemon_util  # noqa: E402
import harness  # noqa: E402
from signout_xnode import Conn  # noqa: E402

HOST = "app1.test"


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def sid_of(jwt):
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sid"]


def cache(d, conn, c):
    """Asks d for c until it is a hit; returns the X-authentik-jwt of the first answer."""
    r = harness.request(d.port, "GET", harness.AUTH_TRAEFIK, headers=[
        ("Host", "127.0.0.1"), ("Cookie", f"{harness.IDP_COOKIE}={c}"),
        ("X-Forwarded-Host", HOST), ("X-Forwarded-Method", "GET"),
        ("X-Forwarded-Proto", "https"), ("X-Forwarded-Uri", "/")])
    for _ in range(50):
        if conn.check(c, HOST, "/") == (200, "hit"):
            return r.header("X-authentik-jwt")
    raise SystemExit(f"session {c} never became a hit")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--fill", type=int, default=20000)
    ap.add_argument("--give-up", type=float, default=2.0)
    args = ap.parse_args()
    redis_bin = shutil.which("redis-server")
    if not redis_bin:
        raise SystemExit("redis-server is not installed (make deps)")

    tmp = tempfile.mkdtemp(prefix="authcache-se-")
    token_file, key_file = os.path.join(tmp, "token"), os.path.join(tmp, "key")
    token = "ak-bench-" + os.urandom(8).hex()
    with open(token_file, "w") as f:
        f.write(token + "\n")
    with open(key_file, "wb") as f:
        f.write(os.urandom(32))
    os.chmod(token_file, 0o600)
    os.chmod(key_file, 0o600)

    daemon_util.setup_idp()
    idp = daemon_util.IDP
    rport = harness.free_port()
    redis = harness.start([redis_bin, "--save", "", "--appendonly", "no", "--port", str(rport),
                           "--bind", "127.0.0.1"], name="redis")
    time.sleep(0.3)
    standin = ak_standin.Standin(token)
    common = {"--hash-key-file": key_file, "--bus": f"redis://127.0.0.1:{rport}/se-{os.getpid()}",
              "--capacity": str(max(65536, 2 * (args.fill + args.sessions))), "--workers": "1",
              "--fresh-ttl": "10m", "--session-ttl": "2h", "--outage-grace": "1m",
              "--log-level": "warn"}
    a = daemon_util.Daemon(dict(common, **{"--authentik-url": standin.url(),
                                           "--authentik-token-file": token_file}))
    b = daemon_util.Daemon(common)
    try:
        ak_standin.wait(lambda: standin.connected() >= 1, 10, "the feed connected")
        for d in (a, b):
            ak_standin.wait(lambda d=d: daemon_util.metric(
                daemon_util.admin_get(d, "/metrics").body, "authcache_bus_connected") == 1, 10,
                "bus connected")
        ca, cb = Conn(a.port), Conn(b.port)
        tag = os.urandom(4).hex()
        t0 = time.monotonic()
        for i in range(args.fill):
            c = f"fill-{tag}-{i}"
            idp.session(c, f"fill{i}")
            ca.check(c, HOST, "/")
            cb.check(c, HOST, "/")
        sess = []
        for i in range(args.sessions):
            c = f"se-{tag}-{i}"
            idp.session(c, f"user{i}")
            sid = sid_of(cache(a, ca, c))
            cache(b, cb, c)
            sess.append((c, hashlib.sha256(sid.encode()).hexdigest()))
        print(f"# filled {args.fill} + {args.sessions} answers per node in "
              f"{time.monotonic() - t0:.0f} s", flush=True)

        lat_a, lat_all, lost = [], [], 0
        for c, sid_hash in sess:
            sent = time.monotonic()
            standin.session_end(sid_hash)
            done = {}
            while len(done) < 2 and time.monotonic() - sent < args.give_up:
                nxt = time.monotonic() + 0.001
                for name, conn in (("a", ca), ("b", cb)):
                    if name not in done and conn.check(c, HOST, "/")[1] != "hit":
                        done[name] = time.monotonic() - sent
                time.sleep(max(0.0, nxt - time.monotonic()))
            if len(done) < 2:
                lost += 1
                continue
            lat_a.append(done["a"] * 1000)
            lat_all.append(max(done.values()) * 1000)
        print(f"sessions={args.sessions} fill={args.fill} lost={lost}")
        print(f"node_a_p50_ms={pct(lat_a, 0.5):.2f} node_a_p99_ms={pct(lat_a, 0.99):.2f} "
              f"node_a_max_ms={max(lat_a or [float('nan')]):.2f}")
        print(f"every_node_p50_ms={pct(lat_all, 0.5):.2f} "
              f"every_node_p99_ms={pct(lat_all, 0.99):.2f} "
              f"every_node_max_ms={max(lat_all or [float('nan')]):.2f}")
        body = daemon_util.admin_get(a, "/metrics").body
        for m in ("fallback_scans_total", "index_entries", "index_dropped_total"):
            try:
                v = daemon_util.metric(body, "authcache_feed_" + m)
            except AssertionError:
                v = "n/a"  # a daemon from before the session index
            print(f"node_a_{m}={v}")
        print(f"load_average={os.getloadavg()[0]:.2f}")
    finally:
        for d in (a, b):
            d.stop()
            daemon_util.remove_shm(d.shm)
        standin.stop()
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
