#!/usr/bin/env python3
"""bench/idpctl.py — logs many sessions in at the test IdP at once, through its control API.

    idpctl.py sessions --control PORT --tag TAG --pool P --from N --count C [--conns K]

creates sessions N .. N+C-1 of pool P: cookie value cookie(TAG, P, i) (the same function as
cookie() in bench/lua/common.lua, so the wrk scripts send exactly these), user "bench-P-i" (one
user per session: the IdP's sign-out ends every session of the signed-out user), group "users".
The requests are pipelined over K keep-alive connections (default 2), since one request at a time
would take minutes for a million sessions. Prints name=value lines; exit 1 if any was refused.
Standard library only.
"""

import argparse
import socket
import sys
import threading
import time

TAIL = "RmFrZVNlc3Npb25UYWlsWFlaMDEyMzQ1Njc4OUFC"  # as in bench/lua/common.lua


def cookie(tag, pool, i):
    return f"{tag}{pool}{i:07d}{(i * 2654435761) % 4294967296:08x}{TAIL}"


def create(port, tag, pool, first, count, result, slot):
    """Sends the /session requests for first..first+count-1 on one connection and counts the
    200 answers. Stores (ok, answered) in result[slot]."""
    if count <= 0:
        result[slot] = (0, 0)
        return
    reqs = "".join(
        f"POST /session?cookie={cookie(tag, pool, i)}&user=bench-{pool}-{i}&groups=users HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
        for i in range(first, first + count)).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    ok = answered = 0
    tail = b""

    def reader():
        # Both markers are 9 bytes long, so carrying the last 8 bytes over catches one split
        # between two receives and never counts one twice.
        nonlocal ok, answered, tail
        while answered < count:
            data = s.recv(1 << 20)
            if not data:
                break
            data = tail + data
            answered += data.count(b"HTTP/1.1 ")
            ok += data.count(b'"ok":true')
            tail = data[-8:]

    t = threading.Thread(target=reader)
    t.start()
    s.sendall(reqs)
    t.join()
    s.close()
    result[slot] = (ok, answered)


def main():
    ap = argparse.ArgumentParser(description="create test-IdP sessions in bulk")
    ap.add_argument("command", choices=["sessions"])
    ap.add_argument("--control", type=int, required=True)
    ap.add_argument("--tag", required=True)
    ap.add_argument("--pool", required=True)
    ap.add_argument("--from", dest="first", type=int, default=0)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--conns", type=int, default=2)
    a = ap.parse_args()

    t0 = time.monotonic()
    k = max(1, min(a.conns, a.count))
    per = (a.count + k - 1) // k
    result = [None] * k
    threads = []
    for j in range(k):
        lo = a.first + j * per
        n = min(per, a.first + a.count - lo)
        threads.append(threading.Thread(target=create,
                                        args=(a.control, a.tag, a.pool, lo, n, result, j)))
        threads[-1].start()
    for t in threads:
        t.join()
    ok = sum(r[0] for r in result if r)
    print(f"sessions_created={ok}")
    print(f"sessions_seconds={time.monotonic() - t0:.2f}")
    if ok != a.count:
        print(f"idpctl: {a.count - ok} of {a.count} sessions of pool {a.pool} were not created",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
