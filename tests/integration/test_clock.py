"""test_clock.py — a step of the wall clock moves no deadline. The daemon's wall clock is offset
through its test hook (AUTHCACHE_TEST_WALL_OFFSET_FILE: 8 bytes of signed milliseconds it maps and
adds to wall time; daemon.c), which the test changes while the daemon runs; the machine's clock and
CLOCK_MONOTONIC stay as they are. (libfaketime would be the tool of choice, but it recurses into
jemalloc's first clock_gettime and the daemon never starts.) Timeouts run on the monotonic clock;
wall time is only what an answer's lifetime means, so a step forward still ages answers.

Run from the repo root: python3 tests/integration/test_clock.py [CASE...]
"""

import json
import os
import struct
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from daemon_util import cookie, daemon, expect, fa, timed  # noqa: E402
import daemon_util  # noqa: E402
from harness import case, check  # noqa: E402

TIMEOUT_S = 0.5
FLAGS = {"--upstream-timeout": "500ms", "--fresh-ttl": "10s", "--session-ttl": "1h"}
_offset_file = None
UNITS = {"s": 1000, "h": 3600 * 1000, "d": 86400 * 1000}


def setup():
    global _offset_file
    daemon_util.setup_idp()
    fd, _offset_file = tempfile.mkstemp(prefix="authcache-wall-offset-")
    os.close(fd)
    set_offset("+0")


def set_offset(spec):
    """The daemon's wall clock from now on: real time + spec ("+0", "-1h", "+1d")."""
    ms = int(spec[:-1]) * UNITS[spec[-1]] if spec[-1] in UNITS else int(spec)
    with open(_offset_file, "r+b" if os.path.getsize(_offset_file) else "wb") as f:
        f.write(struct.pack("<q", ms))  # in place: the daemon maps this page


def faked():
    return daemon(FLAGS, env={"AUTHCACHE_TEST_WALL_OFFSET_FILE": _offset_file})


def idp():
    return daemon_util.IDP


def uptime(d):
    return json.loads(daemon_util.admin_get(d, "/v1/stats").body)["uptime_seconds"]


@case
def wall_clock_is_faked():
    """The premise: the daemon's wall clock moves with the file (its uptime is wall time)."""
    set_offset("+0")
    with faked() as d:
        up0 = uptime(d)
        set_offset("+1d")
        try:
            up1 = uptime(d)
        finally:
            set_offset("+0")
        check(up1 - up0 >= 86000, "the daemon's wall clock moved a day forward", (up0, up1))


@case
def step_back_does_not_stall_the_idp_timeout():
    s = cookie("back")
    idp().session(s, "bob")
    set_offset("+0")
    with faked() as d:
        idp().fault("hang")
        result = {}

        def ask():
            result["r"], result["dt"] = timed(lambda: fa(d, "app1.test", "/", s, timeout=10))

        try:
            t = threading.Thread(target=ask)
            t.start()
            time.sleep(0.1)  # the call is in flight
            set_offset("-1h")
            t.join(12)
        finally:
            idp().fault("ok")
            set_offset("+0")
        check("r" in result, "the request got an answer")
        expect(result["r"], 503, "unavailable", None, "a hung IdP after a step back")
        check(result["dt"] <= TIMEOUT_S + 1.5,
              f"answered within --upstream-timeout ({TIMEOUT_S}s) + 1.5s", f"{result['dt']:.2f}s")


@case
def step_forward_closes_no_connection():
    s = cookie("fwd")
    idp().session(s, "fay")
    set_offset("+0")
    with faked() as d:
        idle = harness.Conn(d.port)
        partial = harness.Conn(d.port)
        try:
            r = fa(d, "app1.test", "/", s, conn=idle)
            expect(r, 200, "miss", "fay", "before the step")
            head = harness.build_request("GET", harness.AUTH_TRAEFIK,
                                         harness.auth_headers("app1.test", "/", s))
            partial.send(head[:40])  # half a head: its timer runs
            set_offset("+1d")
            time.sleep(0.6)  # several ticks of the daemon
            partial.send(head[40:])
            r = partial.read_response()
            check(r.status == 200, "a head begun before the step is still read after it", r.status)
            r = fa(d, "app1.test", "/", s, conn=idle)
            check(r.status == 200, "an idle keep-alive connection survives the step", r.status)
        finally:
            set_offset("+0")
            idle.close()
            partial.close()


@case
def step_forward_still_ages_answers():
    """Wall time is what an answer's lifetime means: a day later, past --session-ttl 1h, the
    answer held is not served; the IdP is asked again."""
    s = cookie("age")
    idp().session(s, "ada")
    set_offset("+0")
    with faked() as d:
        expect(fa(d, "app1.test", "/", s), 200, "miss", "ada", "first")
        expect(fa(d, "app1.test", "/", s), 200, "hit", "ada", "second")
        calls = idp().calls(s)
        set_offset("+1d")
        try:
            expect(fa(d, "app1.test", "/", s), 200, "miss", "ada", "a day later")
        finally:
            set_offset("+0")
        check(idp().calls(s) == calls + 1, "the IdP was asked again", idp().calls(s) - calls)


if __name__ == "__main__":
    try:
        harness.main(setup)
    finally:
        if _offset_file:
            os.unlink(_offset_file)
