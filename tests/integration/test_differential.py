"""test_differential.py — the differential test (tests/diff/differential.c) with a fixed seed.

For each preset build/differential starts the test IdP ($IDP_BIN, else build/test-idp) and
authcached, then sends 20 000 random forward-auth checks both to authcached and to the IdP alone
and fails on any answer authcached may not give (docs/reliability.md, "The differential test").
A tenth of them goes through nginx (auth_request) and Caddy (forward_auth): for each, one server
block asking authcached and an identical one asking the IdP alone, in front of the driver's own
application, which echoes the identity headers it received.

Each case asserts 0 divergences and that the run exercised what it is for: hits, stale answers
in IdP faults, refusals, revocations at the IdP answered inside the declared window, admin purges,
sign-outs (not Authelia's: they never pass through forward-auth) and checks through both proxies
that reached the application. A preset the test IdP cannot play (a test IdP
without --mode) is reported as skipped.

Run from the repo root: python3 tests/integration/test_differential.py [CASE...]
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import daemon_util  # noqa: E402  (AUTHCACHED_BIN, the sanitizer check)
from harness import case, check, eq  # noqa: E402

DRIVER = os.path.join(harness.BUILD, "differential")
SEED = 20261204
REQUESTS = 20000
PROXY_SHARE = 10  # percent of checks through a proxy
FAULT_EVERY = 2500  # checks between IdP faults: 7 or 8, some pausing past --fresh-ttl (stale)
WORK = os.path.join(harness.LOG_DIR, "test_differential", f"run-{os.getpid()}")

# Per preset: the identity headers the proxies copy, the header prefix they strip from the
# client's request, nginx's auth endpoint and the headers it sets, Caddy's.
PROXY_SETUP = {
    "authentik": {
        "headers": ["X-Authentik-Username", "X-Authentik-Groups", "X-Authentik-Entitlements",
                    "X-Authentik-Email", "X-Authentik-Name", "X-Authentik-Uid", "X-Authentik-Jwt",
                    "X-Authentik-Meta-Jwks", "X-Authentik-Meta-Outpost",
                    "X-Authentik-Meta-Provider", "X-Authentik-Meta-App",
                    "X-Authentik-Meta-Version"],
        "strip": "X-Authentik-*",
        "nginx_uri": "/outpost.goauthentik.io/auth/nginx",
        "nginx_set": ["X-Forwarded-Host $host", "X-Forwarded-Uri $request_uri",
                      "X-Forwarded-Method $request_method", "X-Forwarded-Proto $scheme"],
        "caddy_uri": "/outpost.goauthentik.io/auth/caddy",
        "caddy_up": [],
    },
    "oauth2-proxy": {
        "headers": ["X-Auth-Request-User", "X-Auth-Request-Email", "X-Auth-Request-Groups",
                    "X-Auth-Request-Preferred-Username"],
        "strip": "X-Auth-Request-*",
        "nginx_uri": "/oauth2/auth",
        "nginx_set": ["X-Forwarded-Host $host", "X-Forwarded-Uri $request_uri",
                      "X-Forwarded-Method $request_method", "X-Forwarded-Proto $scheme"],
        "caddy_uri": "/oauth2/auth",
        "caddy_up": [],
    },
    "authelia": {  # the test pretends TLS: Authelia answers 2xx only for https targets
        "headers": ["Remote-User", "Remote-Groups", "Remote-Name", "Remote-Email"],
        "strip": "Remote-*",
        "nginx_uri": "/api/authz/auth-request",
        "nginx_set": ["X-Original-URL https://$http_host$request_uri",
                      "X-Original-Method $request_method"],
        "caddy_uri": "/api/authz/forward-auth",
        "caddy_up": ["X-Forwarded-Proto https"],
    },
}


def find_program(name):
    """$CADDY / $NGINX, else the one on PATH or in /usr/sbin, /usr/bin."""
    path = os.environ.get(name.upper()) or shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None)
    check(path and os.access(path, os.X_OK), f"{name} is installed (make deps)")
    return path


def port_base():
    """Five consecutive free ports (IdP, control, oracle, authcached, admin), as the driver's
    --port-base wants them."""
    for _ in range(200):
        base = harness.free_port()
        socks = []
        try:
            for p in range(base, base + 5):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no five consecutive free ports")


def idp_has_mode():
    r = subprocess.run([harness.IDP_BIN, "--help"], capture_output=True, text=True)
    return "--mode" in r.stdout + r.stderr


def idp_has_oracle():
    r = subprocess.run([harness.IDP_BIN, "--help"], capture_output=True, text=True)
    return "--oracle" in r.stdout + r.stderr


def start_nginx(preset, sides, app_port):
    """One server block per (listen port, auth upstream port): auth_request to the upstream's
    nginx endpoint, the identity headers set on the request to the application."""
    setup = PROXY_SETUP[preset]
    exe = find_program("nginx")
    prefix = os.path.join(WORK, "nginx")
    for d in ("logs", "tmp"):
        os.makedirs(os.path.join(prefix, d), exist_ok=True)
    blocks = []
    for listen, upstream in sides:
        sets = "".join(f"        auth_request_set $a_{h.lower().replace('-', '_')} "
                       f"$upstream_http_{h.lower().replace('-', '_')};\n"
                       f"        proxy_set_header {h} $a_{h.lower().replace('-', '_')};\n"
                       for h in setup["headers"])
        auth_set = "".join(f"            proxy_set_header {h};\n" for h in setup["nginx_set"])
        blocks.append(f"""
    server {{
        listen 127.0.0.1:{listen};
        location / {{
            auth_request /_auth;
{sets}
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://127.0.0.1:{app_port};
        }}
        location = /_auth {{
            internal;
            proxy_pass http://127.0.0.1:{upstream}{setup["nginx_uri"]};
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
{auth_set}        }}
    }}""")
    conf = os.path.join(prefix, "nginx.conf")
    error_log = os.path.join(prefix, "logs", "error.log")
    tmp = os.path.join(prefix, "tmp")
    with open(conf, "w") as f:
        f.write(f"""# generated by tests/integration/test_differential.py
{"user root;" if os.geteuid() == 0 else ""}
worker_processes 1;
error_log {error_log} warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{"".join(blocks)}
}}
""")
    argv = [exe, "-p", prefix + "/", "-c", conf, "-e", error_log]
    rc, out, err = harness.run(argv + ["-t", "-g", f"pid {prefix}/nginx-t.pid;"])
    check(rc == 0, f"nginx -t accepts {conf}", (out + err).strip())
    proc = harness.start(argv + ["-g", f"daemon off; pid {prefix}/nginx.pid;"], name="nginx")
    harness.wait_port(proc, sides[0][0])
    return proc


def start_caddy(preset, sides, app_port):
    """One site per (listen port, auth upstream port): forward_auth to the upstream's endpoint,
    copying the identity headers, then the application."""
    setup = PROXY_SETUP[preset]
    up = "".join(f"\t\t\theader_up {h}\n" for h in setup["caddy_up"])
    exe = find_program("caddy")
    home = os.path.join(WORK, "caddy-home")
    os.makedirs(home, exist_ok=True)
    sites = []
    for listen, upstream in sides:
        sites.append(f"""
http://:{listen} {{
	route {{
		request_header -{setup["strip"]}
		forward_auth 127.0.0.1:{upstream} {{
			uri {setup["caddy_uri"]}
{up}			copy_headers {" ".join(setup["headers"])}
		}}
		reverse_proxy 127.0.0.1:{app_port}
	}}
}}""")
    caddyfile = os.path.join(WORK, "Caddyfile")
    with open(caddyfile, "w") as f:
        f.write("{\n\tadmin off\n\tauto_https off\n}\n" + "".join(sites))
    env = {"HOME": home, "XDG_DATA_HOME": os.path.join(home, "data"),
           "XDG_CONFIG_HOME": os.path.join(home, "config")}
    proc = harness.start([exe, "run", "--config", caddyfile, "--adapter", "caddyfile"],
                         name="caddy", env=env)
    harness.wait_port(proc, sides[0][0])
    return proc


def figures(out):
    line = [l for l in out.splitlines() if " preset=" in l]
    check(line, "the driver printed its summary line", out[-2000:])
    return {k: v for k, v in re.findall(r"(\w+)=(\S+)", line[-1])}


def run_driver(preset, proxies=False):
    os.makedirs(WORK, exist_ok=True)
    if preset != "authentik" and not idp_has_mode():
        print(f"skipped {preset}: {harness.IDP_BIN} has no --mode", flush=True)
        return None
    base = port_base()
    argv = [DRIVER, "--seed", str(SEED), "--requests", str(REQUESTS), "--preset", preset,
            "--idp-bin", harness.IDP_BIN, "--authcached-bin", daemon_util.BIN,
            "--log-dir", os.path.join(WORK, preset), "--port-base", str(base),
            "--fault-every", str(FAULT_EVERY)]
    if proxies:
        oracle = base + 2 if idp_has_oracle() else base  # the IdP's own listener without --oracle
        app = harness.free_port()
        ngx = (harness.free_port(), harness.free_port())
        cdy = (harness.free_port(), harness.free_port())
        start_nginx(preset, [(ngx[0], base + 3), (ngx[1], oracle)], app)
        start_caddy(preset, [(cdy[0], base + 3), (cdy[1], oracle)], app)
        argv += ["--app-port", str(app), "--proxy-share", str(PROXY_SHARE),
                 "--proxy", f"nginx={ngx[0]},{ngx[1]}", "--proxy", f"caddy={cdy[0]},{cdy[1]}"]
    r = subprocess.run(argv, cwd=harness.ROOT, capture_output=True, text=True, timeout=110)
    with open(os.path.join(WORK, preset, "driver.log"), "w") as f:
        f.write(r.stdout + r.stderr)
    ac_log = os.path.join(WORK, preset, f"authcached-{preset}.log")
    if os.path.exists(ac_log):  # under AUTHCACHED_BIN=the ASan+UBSan build: any report fails
        with open(ac_log, errors="replace") as f:
            daemon_util.no_sanitizer_report(f.read(), ac_log)
    if r.returncode == 77:
        print(f"skipped {preset}: {r.stderr.strip()}", flush=True)
        return None
    check(r.returncode == 0, f"differential --preset {preset} --seed {SEED} exits 0",
          f"see {WORK}/{preset}/driver.log; its end:\n" + (r.stdout + r.stderr)[-5000:])
    f = figures(r.stdout)
    print(f"  {preset}: " + " ".join(f"{k}={v}" for k, v in f.items()), flush=True)
    eq(f["divergences"], "0", "divergences")
    eq(int(f["requests"]), REQUESTS, "checks sent")
    exercised = ["hit", "stale", "miss", "non2xx", "2xx", "revocations", "excused_revoked",
                 "purges", "faults", "sessions"]
    if preset != "authelia":  # Authelia signs out on its portal, never through forward-auth
        exercised.append("signout")
    for k in exercised:
        check(int(f[k]) > 0, f"the run exercised {k}", f[k])
    if proxies:
        check(int(f["proxied"]) > REQUESTS * PROXY_SHARE // 200, "checks through the proxies",
              f["proxied"])
        check(int(f["proxied_2xx"]) > 0, "checks through the proxies that reached the application",
              f["proxied_2xx"])
    return f


@case
def authentik():
    run_driver("authentik", proxies=True)


@case
def oauth2_proxy():
    run_driver("oauth2-proxy", proxies=True)


@case
def authelia():
    run_driver("authelia", proxies=True)


def setup():
    for b in (DRIVER, daemon_util.BIN, harness.IDP_BIN):
        check(os.access(b, os.X_OK), f"{b} is built (make all)")


if __name__ == "__main__":
    harness.main(setup, case_timeout=115)
