"""test_restart.py — restarts and upgrades that fail no check (issue 11, item 4).

Under `wrk -t1 -c64` load of cached-session checks (restart.lua), the daemon is
  (a) restarted under socket activation: the test holds the listening socket, as systemd does,
      and starts each daemon with it as fd 3 (LISTEN_FDS=1, LISTEN_PID = the daemon's pid), so
      that connections made while no daemon runs wait in its backlog;
  (b) upgraded by --handover: a second daemon takes the running one's sockets (every socket of
      its SO_REUSEPORT group, and the admin one), after which the first drains and exits 0.
wrk must report no socket error and no non-2xx answer, the checks right after the swap are hits
(the segment was reused), the old daemon exits 0 and the new one serves. Also: systemd's own
launcher (systemd-socket-activate), a passed descriptor that is no listening socket, and a
successor that fails to start (the running daemon goes on serving).
"""

import os
import re
import shutil
import socket
import subprocess
import time

import daemon_util as du
import harness
from daemon_util import expect, fa

WRK = shutil.which("wrk")
LUA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "restart.lua")
ACTIVATE = "/usr/bin/systemd-socket-activate"
# Sessions cached before the run stay fresh through it: every answer of the run can be a hit.
FLAGS = dict(du.DEFAULT_FLAGS, **{"--fresh-ttl": "60s", "--session-ttl": "120s"})


def setup():
    if not WRK:
        raise AssertionError("wrk is missing (apt-get install wrk)")
    du.setup_idp()


def argv(port, admin, shm, extra=(), upstream=None):
    a = [du.BIN, "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}",
         "--upstream", upstream or f"http://127.0.0.1:{du.IDP.port}", "--shm", shm]
    for k, v in FLAGS.items():
        a += [k, v]
    return a + list(extra)


def start_log(name):
    os.makedirs(harness.LOG_DIR, exist_ok=True)
    harness._log_seq += 1
    return os.path.join(harness.LOG_DIR, f"test_restart.{name}.{harness._log_seq}.log")


def start_activated(sock, args, name="authcached"):
    """args started as systemd would with sock as its one socket: fd 3, LISTEN_FDS=1, LISTEN_PID
    its pid (the shell's, which exec keeps). Returns a harness.Proc, not waited on."""
    fd = sock.fileno()

    def preexec():
        if fd != 3:
            os.dup2(fd, 3)  # inheritable
        else:
            os.set_inheritable(3, True)
        harness._die_with_parent()

    env = dict(os.environ, LISTEN_FDS="1", LISTEN_FDNAMES="authcached")
    log = start_log(name)
    with open(log, "wb") as out:
        popen = subprocess.Popen(["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$0" "$@"'] + args,
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 cwd=harness.ROOT, env=env, close_fds=False, preexec_fn=preexec)
    p = harness.Proc(name, args, popen, log)
    harness._procs.append(p)
    return p


def wait_ready(p, admin, log_says=None, timeout=10.0):
    """Until p's admin port answers /readyz 200 (and its log holds log_says)."""
    def ready():
        if not p.alive():
            raise AssertionError(f"{p.name} exited with {p.popen.returncode}; log {p.log}:\n"
                                 f"{p.log_tail()}")
        if log_says and log_says not in p.log_text():
            return False
        try:
            return harness.request(admin, "GET", "/readyz", timeout=1.0).status == 200
        except (OSError, ConnectionError):
            return False
    harness.wait_for(ready, timeout, what=f"{p.name} ready")


def cache_sessions(port, n=3):
    cookies = []
    for i in range(n):
        c = du.cookie("restart")
        harness.idp_session(du.IDP.control, c, f"user{i}")
        expect(fa(port, "app1.test", "/dashboard", c), 200, None, f"user{i}", "first check")
        expect(fa(port, "app1.test", "/dashboard", c), 200, "hit", f"user{i}", "second check")
        cookies.append(c)
    return cookies


def start_wrk(port, cookies, seconds=6):
    env = dict(os.environ, RESTART_COOKIES=",".join(cookies),
               RESTART_COOKIE_NAME=harness.IDP_COOKIE)
    return subprocess.Popen([WRK, "-t1", "-c64", f"-d{seconds}s", "-s", LUA,
                             f"http://127.0.0.1:{port}"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def wrk_report(w, what):
    """wrk's report checked: no socket error, no non-2xx, every answer a hit. Returns it."""
    out, _ = w.communicate(timeout=30)
    if w.returncode != 0:
        raise AssertionError(f"{what}: wrk exited {w.returncode}:\n{out}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    counts = re.search(r"restart: answers=(\d+) hits=(\d+) not_hit=(\d+)", out)
    if errors or non2xx or not counts or int(counts.group(1)) == 0:
        raise AssertionError(f"{what}: expected no socket error and no non-2xx answer, got:\n{out}")
    if int(counts.group(3)) != 0:
        raise AssertionError(f"{what}: expected every answer a hit (the segment kept), got:\n{out}")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    print(f"    {what}: {counts.group(1)} answers, all hits, 0 errors, "
          f"{rps.group(1) if rps else '?'} requests/s", flush=True)
    return out


def stopped_cleanly(p, what, timeout=10.0):
    try:
        rc = p.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{what} still running {timeout}s later; log {p.log}:\n{p.log_tail()}")
    du.no_sanitizer_report(p.log_text(), p.log)
    if rc != 0:
        raise AssertionError(f"{what}: expected exit status 0, got {rc}; log {p.log}:\n"
                             f"{p.log_tail()}")


def listening_socket(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(4096)
    return s


@harness.case
def socket_activation_restart_under_load():
    port, admin, shm = harness.free_port(), harness.free_port(), du.shm_name()
    sock = listening_socket(port)
    try:
        a = start_activated(sock, argv(port, admin, shm), "authcached-a")
        wait_ready(a, admin)
        if "1 socket(s) systemd" not in a.log_text():
            raise AssertionError(f"expected the daemon to say it adopted systemd's socket; log:\n"
                                 f"{a.log_tail()}")
        cookies = cache_sessions(port)
        w = start_wrk(port, cookies)
        time.sleep(2)
        a.send_signal(15)
        stopped_cleanly(a, "the daemon stopped by the restart")
        b = start_activated(sock, argv(port, admin, shm), "authcached-b")
        wait_ready(b, admin)
        for c in cookies:
            expect(fa(port, "app1.test", "/dashboard", c), 200, "hit", du.ANY, "check after restart")
        wrk_report(w, "restart under socket activation")
        b.send_signal(15)
        stopped_cleanly(b, "the restarted daemon")
    finally:
        sock.close()
        du.remove_shm(shm)


@harness.case
def systemd_socket_activate_launcher():
    """Debian's systemd-socket-activate passes LISTEN_FDS as systemd does (and starts the daemon
    on the first connection); the variables are not passed on."""
    if not os.access(ACTIVATE, os.X_OK):
        print(f"    skipped: no {ACTIVATE}", flush=True)
        return
    port, admin, shm = harness.free_port(), harness.free_port(), du.shm_name()
    try:
        p = harness.start([ACTIVATE, "-l", f"127.0.0.1:{port}", "--fdname=authcached"] +
                          argv(port, admin, shm), name="socket-activate")

        def launcher_listens():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False
        harness.wait_for(launcher_listens, 5, what="systemd-socket-activate listening")
        c = du.cookie("activate")
        harness.idp_session(du.IDP.control, c, "alice")
        expect(fa(port, "app1.test", "/", c, timeout=10), 200, None, "alice", "first check")
        expect(fa(port, "app1.test", "/", c), 200, "hit", "alice", "second check")
        wait_ready(p, admin)
        if "1 socket(s) systemd" not in p.log_text():
            raise AssertionError(f"expected the passed socket adopted; log:\n{p.log_tail()}")
        stopped = p.stop()
        du.no_sanitizer_report(p.log_text(), p.log)
        if stopped != 0:
            raise AssertionError(f"exit status {stopped}; log {p.log}:\n{p.log_tail()}")
    finally:
        du.remove_shm(shm)


@harness.case
def passed_descriptor_not_a_listener():
    port, admin, shm = harness.free_port(), harness.free_port(), du.shm_name()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # bound, not listening
    s.bind(("127.0.0.1", port))
    try:
        p = start_activated(s, argv(port, admin, shm), "authcached-bad-fd")
        rc = p.popen.wait(10)
        text = p.log_text()
        if rc != 2 or "not listening" not in text:
            raise AssertionError(f"expected exit status 2 and 'not listening', got {rc}:\n{text}")
    finally:
        s.close()
        du.remove_shm(shm)


def handover_path():
    return f"/tmp/authcache-it-{os.getpid()}-{du.cookie('ho')[-4:]}.sock"


@harness.case
def handover_upgrade_under_load():
    port, admin, shm, path = harness.free_port(), harness.free_port(), du.shm_name(), handover_path()
    try:
        a = harness.start(argv(port, admin, shm, ["--handover", path]), name="authcached-a",
                          ready_url=f"http://127.0.0.1:{admin}/readyz", timeout=15)
        cookies = cache_sessions(port)
        w = start_wrk(port, cookies)
        time.sleep(2)
        # One worker more than the old has sockets: the new shares them out, all accepted from.
        b = harness.start(argv(port, admin, shm, ["--handover", path, "--workers", "3"]),
                          name="authcached-b")
        wait_ready(b, admin, "took over")
        stopped_cleanly(a, "the daemon upgraded from")
        if "handed over" not in a.log_text():
            raise AssertionError(f"expected the old daemon to say it handed over:\n{a.log_tail()}")
        for c in cookies:
            expect(fa(port, "app1.test", "/dashboard", c), 200, "hit", du.ANY, "check after upgrade")
        wrk_report(w, "upgrade by handover")
        # The new one serves --handover in turn.
        c3 = harness.start(argv(port, admin, shm, ["--handover", path]), name="authcached-c")
        wait_ready(c3, admin, "took over")
        stopped_cleanly(b, "the second daemon upgraded from")
        expect(fa(port, "app1.test", "/dashboard", cookies[0]), 200, "hit", du.ANY, "third daemon")
        c3.send_signal(15)
        stopped_cleanly(c3, "the third daemon")
        if os.path.exists(path):
            raise AssertionError(f"{path} left behind by the last daemon's clean stop")
    finally:
        du.remove_shm(shm)


@harness.case
def handover_to_a_failing_start_keeps_serving():
    port, admin, shm, path = harness.free_port(), harness.free_port(), du.shm_name(), handover_path()
    try:
        a = harness.start(argv(port, admin, shm, ["--handover", path]), name="authcached-a",
                          ready_url=f"http://127.0.0.1:{admin}/readyz", timeout=15)
        cookies = cache_sessions(port, 1)
        # Takes the sockets, then cannot resolve its IdP: exits 2 before it serves.
        b = harness.start(argv(port, admin, shm, ["--handover", path],
                               upstream="http://no-such-host.invalid/"), name="authcached-bad")
        rc = b.popen.wait(10)
        if rc != 2:
            raise AssertionError(f"expected the failing successor to exit 2, got {rc}:\n"
                                 f"{b.log_tail()}")
        harness.wait_for(lambda: "still serving" in a.log_text(), 5, what="old still serving")
        if not a.alive():
            raise AssertionError(f"the old daemon stopped:\n{a.log_tail()}")
        for i in range(20):  # fresh connections: every socket still accepted from
            expect(fa(port, "app1.test", "/dashboard", cookies[0]), 200, "hit", du.ANY,
                   f"check #{i + 1} after the failed upgrade")
        a.send_signal(15)
        stopped_cleanly(a, "the daemon that kept serving")
    finally:
        du.remove_shm(shm)


if __name__ == "__main__":
    harness.main(setup)
