"""test_lib.py — build/libauthcache.so as a program outside the tree sees it: its dynamic symbols
are the API of client/authcache.h and nothing else (client/libauthcache.map), each function the
header declares is there under the version AUTHCACHE_1, and a program built against the header and
linked with -lauthcache runs.

Run from the repo root: python3 tests/integration/test_lib.py [CASE...]
"""

import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import case, check, eq  # noqa: E402

LIB = os.path.join(harness.BUILD, "libauthcache.so")
HEADER = os.path.join(harness.ROOT, "client", "authcache.h")
VERSION = "AUTHCACHE_1"


def setup():
    check(os.path.exists(LIB), f"{LIB} is missing: run `make`")


def exported():
    """{name: version} of the functions and objects the library defines, from nm -D; the absolute
    symbols naming version nodes (AUTHCACHE_1) are left out."""
    out = subprocess.run(["nm", "-D", "--defined-only", LIB], capture_output=True, text=True,
                         check=True).stdout
    syms = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        kind, sym = parts[1], parts[2]
        name, _, version = sym.partition("@@") if "@@" in sym else sym.partition("@")
        if kind == "A" and re.fullmatch(r"AUTHCACHE_[0-9]+", name):
            continue
        syms[name] = version
    return syms


def declared():
    """The function names client/authcache.h declares."""
    with open(HEADER) as f:
        text = f.read()
    return set(re.findall(r"^[a-z][^;(]*?\b(authcache_[a-z_0-9]+)\(", text, re.M))


@case
def exports_only_the_api():
    syms = exported()
    check(syms, "nm -D shows no symbol at all")
    extra = sorted(n for n in syms if not n.startswith("authcache_"))
    eq(extra, [], "exported symbols outside the API")


@case
def exports_every_declared_function_versioned():
    syms = exported()
    api = declared()
    check(len(api) >= 5, "the header's functions were not found", sorted(api))
    eq(sorted(api - set(syms)), [], "functions of authcache.h missing from the library")
    eq(sorted(n for n in api if syms.get(n) != VERSION), [], f"functions not under {VERSION}")


@case
def a_program_links_and_runs():
    prog = r"""
#include <errno.h>
#include <stdio.h>
#include "authcache.h"
int main(void)
{
    struct authcache *c = NULL;
    int rc = authcache_open("authcache-test-lib-no-such-segment", &c);
    printf("%d\n", rc);
    return rc == -ENOENT && c == NULL ? 0 : 1;
}
"""
    with tempfile.TemporaryDirectory() as d:
        src, exe = os.path.join(d, "p.c"), os.path.join(d, "p")
        with open(src, "w") as f:
            f.write(prog)
        cc = subprocess.run([os.environ.get("CC", "cc"), "-o", exe, src, "-I",
                             os.path.dirname(HEADER), "-L", harness.BUILD, "-lauthcache"],
                            capture_output=True, text=True)
        eq(cc.returncode, 0, f"linking with -lauthcache ({cc.stderr.strip()})")
        env = dict(os.environ, LD_LIBRARY_PATH=harness.BUILD)
        run = subprocess.run([exe], capture_output=True, text=True, env=env)
        eq(run.returncode, 0, "authcache_open of a missing segment: expected -ENOENT, got "
           f"{run.stdout.strip()!r} {run.stderr.strip()[-300:]!r}")


if __name__ == "__main__":
    harness.main(setup)
