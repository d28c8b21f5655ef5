"""test_top.py — `authcache top` as an operator sees it (docs/contract.md, "The authcache CLI").

  top_in_a_terminal
      authcached in front of the test IdP holds answers for 6 sessions on app1.test and app3.test;
      a thread sends checks all along (hits, a refusal by the IdP on app2.test, a check without a
      cookie). `authcache top --iterations 3` runs in a detached tmux pane (160x50); its last
      screen must show hits per second > 0, the breaker closed, the segment's entries as /v1/stats
      counts them, and app1.test or app3.test among the busiest hosts. Then the daemon stops and a
      second top in tmux must say in one line that the admin listener is unreachable and still
      show the segment's entries.
  top_without_a_tty
      stdout a pipe and LANG=C: plain blocks, one per refresh, separated by a blank line, with no
      escape code and nothing but ASCII.

Skips (exit 77) if tmux is not installed (`make deps`).
Run from the repo root: python3 tests/integration/test_top.py [CASE...]
"""

import atexit
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import daemon_util  # noqa: E402
from daemon_util import Daemon, expect, fa, remove_shm  # noqa: E402
from harness import case, check, eq  # noqa: E402

CLI = os.path.join(harness.BUILD, "authcache")
TMUX_SOCKET = f"authcache-test-top-{os.getpid()}"
HOSTS = ("app1.test", "app3.test")
SESSIONS = 6


def setup():
    daemon_util.setup_idp()
    if not os.access(CLI, os.X_OK):
        raise AssertionError(f"{CLI} is missing: run `make build/authcache`")


def tmux(*args, check_rc=True):
    env = dict(os.environ, LANG="C.UTF-8")
    r = subprocess.run(["tmux", "-u", "-f", "/dev/null", "-L", TMUX_SOCKET] + list(args),
                       capture_output=True, text=True, env=env, timeout=10)
    if check_rc and r.returncode != 0:
        raise AssertionError(f"tmux {' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def kill_tmux():
    tmux("kill-server", check_rc=False)


def top_in_tmux(name, d, iterations):
    """Runs top in a new detached pane and returns its screen once top has exited."""
    cmd = (f"env LANG=C.UTF-8 {CLI} --shm {d.shm} --admin 127.0.0.1:{d.admin} top "
           f"--iterations {iterations}; echo TOP-EXIT $?; sleep 60")
    tmux("new-session", "-d", "-x", "160", "-y", "50", "-s", name, cmd)
    screen = harness.wait_for(
        lambda: (lambda s: s if "TOP-EXIT" in s else None)(tmux("capture-pane", "-p", "-t", name)),
        timeout=iterations + 8, what=f"top --iterations {iterations} exits in tmux")
    eq(re.search(r"TOP-EXIT (\d+)", screen).group(1), "0", "top's exit status")
    return screen


def figure(screen, label):
    """The value column of the row `  <label>  <value>` of a top screen."""
    m = re.search(r"^  " + re.escape(label) + r"\s{2,}(\S+(?: of \d+)?)", screen, re.M)
    if not m:
        raise AssertionError(f"no row {label!r} on the screen:\n{screen}")
    return m.group(1)


def warm(d):
    """Sessions held for both hosts; returns the cookies."""
    cookies = []
    for i in range(SESSIONS):
        c = daemon_util.cookie("top")
        daemon_util.IDP.session(c, f"topuser{i}")
        cookies.append(c)
        for h in HOSTS:
            expect(fa(d, h, cookie=c), 200, what=f"first check of session {i} on {h}")
    return cookies


class Traffic:
    """Checks sent from a thread until stop(): hits, with now and then a refusal and a bypass."""

    def __init__(self, d, cookies):
        self.d, self.cookies, self.sent, self.errors = d, cookies, 0, []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.done.is_set():
            n = self.sent
            try:
                if n % 50 == 0:  # the IdP refuses: app2.test admits admins only
                    fa(self.d, "app2.test", cookie=self.cookies[0])
                elif n % 50 == 25:
                    fa(self.d, HOSTS[0])  # no cookie
                else:
                    r = fa(self.d, HOSTS[n % 2], cookie=self.cookies[n % SESSIONS])
                    if r.status != 200:
                        self.errors.append(daemon_util.describe(r))
            except OSError as e:
                self.errors.append(repr(e))
            self.sent += 1
            time.sleep(0.004)

    def stop(self):
        self.done.set()
        self.thread.join(5)


@case
def top_in_a_terminal():
    kill_tmux()
    d = Daemon()
    try:
        cookies = warm(d)
        traffic = Traffic(d, cookies)
        try:
            screen = top_in_tmux("busy", d, 3)
            stats = json.loads(daemon_util.admin_get(d, "/v1/stats").body)
        finally:
            traffic.stop()
        check(not traffic.errors, "every check of the traffic got 200", traffic.errors[:3])
        check(traffic.sent >= 200, "a few hundred checks sent while top ran", traffic.sent)
        hits = float(figure(screen, "hit"))
        check(hits > 0, f"hits per second > 0 on top's last screen:\n{screen}", hits)
        eq(figure(screen, "breaker"), "closed", "breaker state on top's screen")
        entries, capacity = (int(x) for x in figure(screen, "entries").split(" of "))
        held = stats["cache"]["entries"]
        # the traffic's refusal and bypass may add or renew an answer or two meanwhile
        check(abs(entries - held) <= 2, f"top's entries {entries} as /v1/stats says: {held}")
        eq(capacity, stats["cache"]["capacity"], "capacity on top's screen")
        busiest = screen[screen.index("BUSIEST HOSTS"):]
        check(any(h in busiest for h in HOSTS),
              f"{' or '.join(HOSTS)} among the busiest hosts:\n{busiest}")

        eq(d.stop(), 0, "authcached exit status after SIGTERM")
        screen = top_in_tmux("stopped", d, 2)
        notice = (f"admin listener 127.0.0.1:{d.admin} unreachable: segment figures only")
        eq(len([ln for ln in screen.splitlines() if notice in ln]), 1,
           f"lines with the notice {notice!r} on the screen:\n{screen}")
        eq(int(figure(screen, "entries").split(" of ")[0]), entries,
           f"entries of the stopped daemon's segment on top's screen:\n{screen}")
        check("BUSIEST HOSTS" in screen and "hit ratio" not in screen,
              f"the segment's view only:\n{screen}")
    finally:
        kill_tmux()
        d.stop()
        remove_shm(d.shm)


@case
def top_without_a_tty():
    d = Daemon()
    try:
        cookies = warm(d)
        for i in range(20):
            fa(d, HOSTS[i % 2], cookie=cookies[i % SESSIONS])
        r = subprocess.run([CLI, "--shm", d.shm, "--admin", f"127.0.0.1:{d.admin}", "top",
                            "--iterations", "2"], capture_output=True, timeout=15,
                           env=dict(os.environ, LANG="C", LC_ALL="", LC_CTYPE=""))
        eq(r.returncode, 0, f"top's exit status (stderr {r.stderr!r})")
        out = r.stdout
        check(b"\x1b" not in out, "no escape code when stdout is not a tty", out[:300])
        check(all(b < 0x80 for b in out), "only ASCII under LANG=C", out[:300])
        blocks = out.decode().split("\n\n")
        eq(len(blocks), 2, f"blocks separated by a blank line in:\n{out.decode()}")
        for b in blocks:
            check(b.startswith("authcache top - /dev/shm/" + d.shm), "a block's first line", b[:80])
            check("BUSIEST HOSTS" in b, "a whole block", b)
    finally:
        d.stop()
        remove_shm(d.shm)


if __name__ == "__main__":
    if not shutil.which("tmux"):
        print("skip: tmux is not installed (make deps)")
        sys.exit(77)
    atexit.register(kill_tmux)
    harness.main(setup)
