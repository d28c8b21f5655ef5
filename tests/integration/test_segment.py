"""test_segment.py — an existing /dev/shm/<name> the daemon must refuse, and browser writes to admin.

  planted_symlink_refused       /dev/shm/<name> is a symlink: exit status != 0, one line naming the
                                path and "symlink", the link left in place
  world_writable_refused        a 0666 file under the name: exit status != 0, one line naming the
                                path and the mode, the file left as it was (mode and bytes)
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
