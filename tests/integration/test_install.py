"""test_install.py — `make install DESTDIR=tmp PREFIX=/usr` installs what another program needs:
client/examples/lookup.c is built with `pkg-config --cflags --libs authcache` against the installed
files only (PKG_CONFIG_SYSROOT_DIR/PKG_CONFIG_LIBDIR point into DESTDIR), once static and once
shared, and each build looks up a session that a running authcached has cached. `make uninstall`
then leaves no file behind.

Run from the repo root: python3 tests/integration/test_install.py [CASE...]
"""

import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from daemon_util import AUTH, cookie, daemon, expect, fa  # noqa: E402
import daemon_util  # noqa: E402
from harness import case, check, eq  # noqa: E402

EXAMPLE = "client/examples/lookup.c"
DEST = None


def sh(argv, env=None, what=None):
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    check(p.returncode == 0, f"{what or argv[0]} exits 0", (p.returncode, p.stdout[-500:], p.stderr[-500:]))
    return p.stdout


def pc_env():
    env = dict(os.environ)
    env["PKG_CONFIG_SYSROOT_DIR"] = DEST
    env["PKG_CONFIG_LIBDIR"] = os.path.join(DEST, "usr/lib/pkgconfig")
    env.pop("PKG_CONFIG_PATH", None)
    return env


def setup():
    global DEST
    if shutil.which("pkg-config") is None:
        print("SKIP pkg-config is missing (make deps installs it)")
        sys.exit(77)
    daemon_util.setup_idp()
    DEST = tempfile.mkdtemp(prefix="authcache-install-")
    sh(["make", "-s", "install", f"DESTDIR={DEST}", "PREFIX=/usr"], what="make install")


def build(static):
    flags = sh(["pkg-config", "--cflags", "--libs"] + (["--static"] if static else []) + ["authcache"],
               env=pc_env(), what="pkg-config").split()
    check(all(f.startswith(("-I" + DEST, "-L" + DEST, "-l")) for f in flags),
          "pkg-config points into DESTDIR only", flags)
    out = os.path.join(DEST, "lookup-" + ("static" if static else "shared"))
    if static:  # the .a beside the .so: name it so the linker cannot pick the shared one
        flags = ["-l:libauthcache.a" if f == "-lauthcache" else f for f in flags]
    sh(["cc", "-Wall", "-Wextra", "-Werror", "-o", out, EXAMPLE] + flags, what="cc " + out)
    return out


def lookup_against_daemon(binary, env=None):
    v = cookie("inst")
    daemon_util.IDP.session(v, "alice", ["users"])
    with daemon() as d:
        expect(fa(d, "app1.test", "/", v), 200, "miss", "alice")
        p = subprocess.run([binary, d.shm, f"{harness.IDP_COOKIE}={v}", "app1.test", AUTH],
                           env=env, capture_output=True, text=True, timeout=10)
        eq(p.returncode, 0, f"{binary} exit status (stderr {p.stderr.strip()!r})")
        check("user=alice" in p.stdout, "the example prints user=alice", p.stdout)
        p = subprocess.run([binary, d.shm, f"{harness.IDP_COOKIE}={v}-other", "app1.test", AUTH],
                           env=env, capture_output=True, text=True, timeout=10)
        eq((p.returncode, p.stdout), (1, "none\n"), "an unknown session")


@case
def static_build_finds_cached_session():
    b = build(static=True)
    out = sh(["readelf", "-d", b], what="readelf")
    check("libauthcache" not in out, "the static build needs no libauthcache.so", out)
    lookup_against_daemon(b)


@case
def shared_build_finds_cached_session():
    b = build(static=False)
    env = dict(os.environ, LD_LIBRARY_PATH=os.path.join(DEST, "usr/lib"))
    lookup_against_daemon(b, env)


@case
def uninstall_removes_everything():
    sh(["make", "-s", "uninstall", f"DESTDIR={DEST}", "PREFIX=/usr"], what="make uninstall")
    left = [os.path.join(r, f) for r, _, fs in os.walk(DEST) for f in fs if not f.startswith("lookup-")]
    eq(left, [], "files left after make uninstall")


if __name__ == "__main__":
    try:
        harness.main(setup=setup)
    finally:
        if DEST:
            shutil.rmtree(DEST, ignore_errors=True)
