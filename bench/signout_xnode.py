#!/usr/bin/env python3
"""bench/signout_xnode.py — how long a sign-out on node A takes to stop node B serving the session.

    signout_xnode.py --a PORT --b PORT --tag TAG --pool P --from N --count C [--host H]

Sessions N .. N+C-1 of pool P (bench/idpctl.py made them at the IdP, one user each) are first
asked for on A and on B (twice each: the second must be `X-Authcache: hit`). Then, one session at
a time: A and B must answer it `hit` (if an earlier sign-out's stamp hid it, it is asked for again
until it is: counted in xnode_recached); the sign-out (X-Forwarded-Uri /outpost.goauthentik.io/sign_out) is
sent to A, and from that moment B is asked for the session again and again, a new request 1 ms
after the previous one was sent (or at once if its answer took longer), until B answers anything
but `hit` (give up after --give-up seconds, default 2: "lost"). The latency is from sending the sign-out to receiving B's
first answer that is not a hit; so it includes A's work, the bus (A -> Redis -> B) and up to ~1 ms
of polling granularity. One keep-alive connection per node. Prints name=value lines (p50, p99,
max in ms, and the same measured from A's answer to the sign-out). Standard library only.
"""

import argparse
import socket
import sys
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0] if "/" in __file__ else ".")
import idpctl  # noqa: E402  (cookie(): the values the IdP holds)

COOKIE_NAME = "authentik_proxy_3f2a1b0c"
AUTH_PATH = "/outpost.goauthentik.io/auth/traefik"
SIGN_OUT = "/outpost.goauthentik.io/sign_out"
POLL_S = 0.001


class Conn:
    """A keep-alive HTTP/1.1 connection to one node; check() sends one forward-auth check and
    returns (status, X-Authcache value or "")."""

    def __init__(self, port):
        self.port = port
        self.s = None
        self.buf = b""

    def connect(self):
        self.s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def check(self, cookie, host, uri):
        if self.s is None:
            self.connect()
        req = (f"GET {AUTH_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"Cookie: {COOKIE_NAME}={cookie}\r\nX-Forwarded-Host: {host}\r\n"
               f"X-Forwarded-Method: GET\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Uri: {uri}\r\n\r\n")
        self.s.sendall(req.encode())
        while b"\r\n\r\n" not in self.buf:
            self.recv()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, cache, close = 0, "", False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            if name == "content-length":
                length = int(value)
            elif name == "x-authcache":
                cache = value
            elif name == "connection" and value.lower() == "close":
                close = True
        while len(self.buf) < length:
            self.recv()
        self.buf = self.buf[length:]
        if close:
            self.s.close()
            self.s = None
        return status, cache

    def recv(self):
        data = self.s.recv(65536)
        if not data:
            raise ConnectionError(f"port {self.port} closed the connection")
        self.buf += data


def pct(sorted_ms, p):
    """The p-th percentile (nearest rank) of a sorted list."""
    if not sorted_ms:
        return float("nan")
    k = max(0, min(len(sorted_ms) - 1, int(round(p / 100 * len(sorted_ms) + 0.5)) - 1))
    return sorted_ms[k]


def main():
    ap = argparse.ArgumentParser(description="cross-node sign-out latency")
    ap.add_argument("--a", type=int, required=True)
    ap.add_argument("--b", type=int, required=True)
    ap.add_argument("--tag", required=True)
    ap.add_argument("--pool", required=True)
    ap.add_argument("--from", dest="first", type=int, default=0)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--host", default="app1.test")
    ap.add_argument("--give-up", type=float, default=2.0,
                    help="seconds after which a sign-out that B still serves counts as lost")
    a = ap.parse_args()

    A, B = Conn(a.a), Conn(a.b)
    cookies = [idpctl.cookie(a.tag, a.pool, i) for i in range(a.first, a.first + a.count)]
    not_cached = 0
    for v in cookies:
        for node in (A, B):
            node.check(v, a.host, "/")
            status, cache = node.check(v, a.host, "/")
            if status != 200 or cache != "hit":
                not_cached += 1
    if not_cached:  # hidden by a stamp in between (see below): asked for again in the loop
        print(f"signout_xnode: {not_cached} (session, node) pairs not cached after warming",
              file=sys.stderr)

    from_send, from_ack, polls, lost, kinds, signout_bad = [], [], 0, 0, {}, 0
    recached, skipped = 0, 0
    t_start = time.monotonic()
    for v in cookies:
        # Both nodes must hold it now. An earlier sign-out may have hidden it: stamps live in
        # slots shared by hash (docs/daemon.md, "Sign-out"), so a stamp for another user or
        # session can cover this one too. Then ask again: the new answer is confirmed after it.
        ok = True
        for node in (A, B):
            for attempt in range(3):
                status, cache = node.check(v, a.host, "/")
                if status == 200 and cache == "hit":
                    break
                recached += attempt == 0
            else:
                ok = False
        if not ok:
            skipped += 1
            continue
        t0 = time.perf_counter()
        status, _ = A.check(v, a.host, SIGN_OUT)
        t_ack = time.perf_counter()
        if status >= 500:  # the IdP's own answer is passed on (302 from the test IdP): not a failure
            signout_bad += 1
        while True:
            t_poll = time.perf_counter()
            status, cache = B.check(v, a.host, "/")
            t1 = time.perf_counter()
            polls += 1
            if cache != "hit":
                from_send.append((t1 - t0) * 1000)
                from_ack.append((t1 - t_ack) * 1000)
                kinds[f"{status} {cache or '-'}"] = kinds.get(f"{status} {cache or '-'}", 0) + 1
                break
            if t1 - t0 > a.give_up:
                lost += 1
                break
            pause = POLL_S - (time.perf_counter() - t_poll)
            if pause > 0:
                time.sleep(pause)
    elapsed = time.monotonic() - t_start

    from_send.sort()
    from_ack.sort()
    print(f"xnode_signouts={len(from_send)}")
    print(f"xnode_lost={lost}")
    print(f"xnode_recached={recached}")
    print(f"xnode_skipped={skipped}")
    print(f"xnode_signout_5xx={signout_bad}")
    for name, ms in (("", from_send), ("_from_ack", from_ack)):
        print(f"xnode_p50_ms{name}={pct(ms, 50):.2f}")
        print(f"xnode_p99_ms{name}={pct(ms, 99):.2f}")
        print(f"xnode_max_ms{name}={ms[-1] if ms else float('nan'):.2f}")
    print(f"xnode_mean_ms={sum(from_send) / max(1, len(from_send)):.2f}")
    print(f"xnode_polls_per_signout={polls / max(1, len(from_send) + lost):.1f}")
    print("xnode_b_answers=" + ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items())))
    print(f"xnode_seconds={elapsed:.1f}")
    return 1 if lost or signout_bad else 0


if __name__ == "__main__":
    sys.exit(main())
