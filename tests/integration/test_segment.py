"""test_segment.py — an existing /dev/shm/<name> the daemon must refuse, and browser writes to admin.

  planted_symlink_refused       /dev/shm/<name> is a symlink: exit status != 0, one line naming the
                                path and "symlink", the link left in place
  world_writable_refused        a 0666 file under the name: exit status != 0, one line naming the
                                path and the mode, the file left as it was (mode and bytes)
  shm_group_lets_that_group_read
      --shm-group nogroup: the segment is mode 0640 with that group; a reader that is neither root
      nor the owner but in that group reads it (`authcache stats`), one outside it is refused;
      restarted without the flag, the daemon refuses the group-readable segment (one line naming
      the flag); an unknown group is a usage error (exit 2)
  admin_write_with_origin_refused
      POST /v1/purge with an Origin header (or Sec-Fetch-Site: cross-site) is 403 with a one-line
      body and purges nothing (the cached answer is still a hit); without them it is 200.

Run from the repo root: python3 tests/integration/test_segment.py [CASE...]
"""

import os
import subprocess

import daemon_util
import harness
from daemon_util import admin_post, cookie, daemon, expect, fa, remove_shm, shm_name


def run_refused(name):
    argv = [daemon_util.BIN, "--listen", f"127.0.0.1:{harness.free_port()}",
            "--admin", f"127.0.0.1:{harness.free_port()}",
            "--upstream", f"http://127.0.0.1:{daemon_util.IDP.port}", "--shm", name]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    if p.returncode == 0:
        raise AssertionError(f"expected a non-zero exit status, got 0; stderr: {p.stderr!r}")
    if len(lines) != 1 or f"/dev/shm/{name}" not in lines[0]:
        raise AssertionError(f"expected one line naming /dev/shm/{name}, got {p.stderr!r}")
    return lines[0]


@harness.case
def planted_symlink_refused():
    name = shm_name()
    path = "/dev/shm/" + name
    os.symlink("/etc/hostname", path)
    try:
        line = run_refused(name)
        if "symlink" not in line:
            raise AssertionError(f"expected the line to say symlink, got {line!r}")
        if not os.path.islink(path) or os.readlink(path) != "/etc/hostname":
            raise AssertionError("expected the planted symlink left untouched")
    finally:
        remove_shm(name)


@harness.case
def world_writable_refused():
    name = shm_name()
    path = "/dev/shm/" + name
    with open(path, "wb") as f:
        f.write(b"\x5a" * 8192)
    os.chmod(path, 0o666)
    try:
        line = run_refused(name)
        if "writable" not in line:
            raise AssertionError(f"expected the line to say what is wrong with the mode, got {line!r}")
        st = os.stat(path)
        if st.st_mode & 0o777 != 0o666 or open(path, "rb").read() != b"\x5a" * 8192:
            raise AssertionError("expected the planted file left untouched")
    finally:
        remove_shm(name)


def cli_as(uid, gid, name):
    """`authcache stats` on segment name as another user (setpriv), exit status and output."""
    cli = os.path.join(harness.BUILD, "authcache")
    p = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", cli,
                        "--shm", name, "stats"], capture_output=True, text=True, timeout=10)
    return p.returncode, p.stdout + p.stderr


@harness.case
def shm_group_lets_that_group_read():
    if os.geteuid() != 0:
        raise AssertionError("needs root (as CI runs it) to run the reader as another user")
    name = shm_name()
    path = "/dev/shm/" + name
    nogroup = 65534
    try:
        with daemon({"--shm-group": "nogroup"}, shm=name, keep_shm=True):
            st = os.stat(path)
            if st.st_mode & 0o777 != 0o640 or st.st_gid != nogroup:
                raise AssertionError(f"expected mode 0640 group {nogroup}, got "
                                     f"{st.st_mode & 0o777:o} group {st.st_gid}")
            rc, out = cli_as(65534, nogroup, name)
            if rc != 0 or "entries" not in out:
                raise AssertionError(f"a reader in the group: expected stats, got {rc}: {out!r}")
            rc, out = cli_as(65534, 1, name)
            if rc != 2 or "not readable by uid 65534" not in out:
                raise AssertionError(f"a reader outside the group: expected exit 2 saying it may "
                                     f"not read, got {rc}: {out!r}")
        line = run_refused(name)
        if "--shm-group" not in line:
            raise AssertionError(f"expected the refusal to name --shm-group, got {line!r}")
        # Adopted as 0600 by a daemon started with the flag: given to the group.
        os.chmod(path, 0o600)
        with daemon({"--shm-group": str(nogroup)}, shm=name, keep_shm=True):
            if os.stat(path).st_mode & 0o777 != 0o640:
                raise AssertionError("expected an adopted 0600 segment opened to the group")
    finally:
        remove_shm(name)
    argv = [daemon_util.BIN, "--upstream", "http://127.0.0.1:1", "--shm-group", "no-such-group-x"]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    if p.returncode != 2 or "no-such-group-x" not in p.stderr:
        raise AssertionError(f"unknown group: expected exit 2 naming it, got {p.returncode} "
                             f"{p.stderr!r}")


@harness.case
def admin_write_with_origin_refused():
    c = cookie("origin")
    harness.idp_session(daemon_util.IDP.control, c, "alice")
    with daemon() as d:
        expect(fa(d, "app1.test", cookie=c), 200, xac="miss")
        for hdr in (("Origin", "http://evil.example"), ("Sec-Fetch-Site", "cross-site")):
            r = harness.request(d.admin, "POST", "/v1/purge?all=1", headers=[hdr])
            body = r.body.decode(errors="replace")
            if r.status != 403 or body.count("\n") != 1:
                raise AssertionError(f"POST /v1/purge with {hdr[0]}: expected 403 and one line, "
                                     f"got {r.status} {body!r}")
            expect(fa(d, "app1.test", cookie=c), 200, xac="hit", what=f"after purge with {hdr[0]}")
        r = admin_post(d, "/v1/purge?all=1")
        if r.status != 200:
            raise AssertionError(f"POST /v1/purge without Origin: expected 200, got {r.status}")


if __name__ == "__main__":
    harness.main(daemon_util.setup_idp)
