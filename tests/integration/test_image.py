"""test_image.py — the image `make image` builds (build/image, deploy/image/build.sh): unpacked with
umoci, its entrypoint runs as the config's user under unshare + chroot (host loopback, a private
/dev/shm) against the test IdP on the host and answers a forward-auth check (miss, then hit); the
process runs as uid 65532; the rootfs holds no compiler and no -dev package.
Exit 77 when mmdebstrap/umoci/unshare are missing. Run from the repo root as root.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import daemon_util  # noqa: E402
from daemon_util import AUTH, cookie, expect, fa  # noqa: E402
from harness import case, check, eq  # noqa: E402

TMP = None
ROOTFS = None
CONFIG = None


def setup():
    global TMP, ROOTFS, CONFIG
    for t in ("mmdebstrap", "umoci", "unshare", "chroot"):
        if shutil.which(t) is None:
            print(f"SKIP {t} is missing (make deps installs it)")
            sys.exit(77)
    if os.geteuid() != 0:
        print("SKIP needs root for chroot")
        sys.exit(77)
    p = subprocess.run(["make", "-s", "image"], capture_output=True, text=True, timeout=600)
    check(p.returncode == 0, "make image exits 0", p.stderr[-800:])
    daemon_util.setup_idp()
    TMP = tempfile.mkdtemp(prefix="authcache-image-")
    bundle = os.path.join(TMP, "bundle")
    p = subprocess.run(["umoci", "unpack", "--image", "build/image:latest", bundle],
                       capture_output=True, text=True, timeout=120)
    check(p.returncode == 0, "umoci unpack exits 0", p.stderr[-800:])
    ROOTFS = os.path.join(bundle, "rootfs")
    with open(os.path.join(bundle, "config.json")) as f:
        CONFIG = json.load(f)


@case
def config_runs_authcached_as_non_root():
    eq(CONFIG["process"]["args"][0], "/usr/bin/authcached", "entrypoint")
    eq((CONFIG["process"]["user"]["uid"], CONFIG["process"]["user"]["gid"]), (65532, 65532), "user")


@case
def no_compiler_no_dev_packages():
    for c in ("usr/bin/gcc", "usr/bin/cc", "usr/bin/clang", "usr/bin/ld"):
        check(not os.path.lexists(os.path.join(ROOTFS, c)), f"no {c} in the rootfs")
    with open(os.path.join(ROOTFS, "var/lib/dpkg/status")) as f:
        pkgs = [l.split()[1] for l in f if l.startswith("Package: ")]
    eq([p for p in pkgs if p.endswith("-dev")], [], "-dev packages in the rootfs")
    for lib in ("liburing2", "libssl3", "libxxhash0", "libjemalloc2", "libjwt0"):
        check(lib in pkgs, f"{lib} in the rootfs")


@case
def containerized_daemon_answers_miss_then_hit():
    port, admin = harness.free_port(), harness.free_port()
    shm = daemon_util.shm_name()
    uid, gid = CONFIG["process"]["user"]["uid"], CONFIG["process"]["user"]["gid"]
    entry = CONFIG["process"]["args"]
    # A private /dev/shm inside the unshared mount namespace; the host's loopback is shared.
    script = (f"mount -t tmpfs -o mode=1777 tmpfs {ROOTFS}/dev/shm 2>/dev/null || "
              f"{{ mkdir -p {ROOTFS}/dev/shm && mount -t tmpfs -o mode=1777 tmpfs {ROOTFS}/dev/shm; }}; "
              f"exec chroot --userspec={uid}:{gid} {ROOTFS} " + " ".join(entry) +
              f" --upstream http://127.0.0.1:{daemon_util.IDP.port} --listen 127.0.0.1:{port}"
              f" --admin 127.0.0.1:{admin} --shm {shm} --workers 1")
    # --kill-child: should the test stop unshare (or die), its child (authcached, pid 1 of the
    # new namespace) gets SIGTERM; else it lived on, reparented (the test also stops it itself).
    proc = harness.start(["unshare", "--mount", "--pid", "--fork", "--kill-child=SIGTERM",
                          "--propagation", "private", "sh", "-c", script], ready_url=f"http://127.0.0.1:{admin}/readyz",
                         timeout=15, name="authcached-in-image")
    inside = []
    try:
        d = type("D", (), {"port": port})()
        v = cookie("img")
        daemon_util.IDP.session(v, "alice", ["users"])
        expect(fa(d, "app1.test", "/", v), 200, "miss", "alice")
        expect(fa(d, "app1.test", "/", v), 200, "hit", "alice")
        out = subprocess.run(["ps", "-o", "uid=,comm=", "--ppid", str(proc.pid)], capture_output=True,
                             text=True).stdout
        pids = subprocess.run(["pgrep", "-x", "authcached"], capture_output=True, text=True).stdout.split()
        inside = [p for p in pids if os.path.realpath(f"/proc/{p}/root") == os.path.realpath(ROOTFS)]
        uids = [open(f"/proc/{p}/status").read().split("Uid:")[1].split()[0] for p in inside]
        eq(uids, ["65532"], f"uid of the authcached inside the image ({out.strip()})")
    finally:
        for p in inside:  # SIGTERM to the daemon itself: it drains and exits, and unshare with it
            try:
                os.kill(int(p), signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            rc = proc.popen.wait(10)
        except subprocess.TimeoutExpired:
            rc = proc.stop()
        eq(rc, 0, "unshare's exit status once authcached stopped (by itself, on its SIGTERM)")
        left = [p for p in inside if os.path.exists(f"/proc/{p}")]
        eq(left, [], "no authcached of the image left running")


if __name__ == "__main__":
    try:
        harness.main(setup=setup)
    finally:
        if TMP:
            shutil.rmtree(TMP, ignore_errors=True)
