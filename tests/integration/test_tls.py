#!/usr/bin/env python3
"""https:// upstreams: authcached talks TLS to the IdP, verifying its certificate by default.

nginx (Debian's) terminates TLS in front of the test IdP with a certificate for "localhost" from a
CA made here. authcached trusts that CA only through SSL_CERT_FILE (OpenSSL's default verify path),
so the same binary also shows that an untrusted CA and a wrong host name are refused.
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import daemon_util  # noqa: E402
from daemon_util import cookie, daemon, expect, fa  # noqa: E402
from harness import case, check, eq  # noqa: E402

WORK = os.path.join(harness.LOG_DIR, f"tls-{os.getpid()}")
TLS_PORT = None
CA = None


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, cwd=WORK, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def make_certs():
    os.makedirs(WORK, exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=authcache test CA",
            "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "srv.key",
            "-out", "srv.csr")
    with open(os.path.join(WORK, "ext.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost\n")
    openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "ext.cnf", "-out", "srv.pem")


def start_nginx(idp_port):
    global TLS_PORT
    TLS_PORT = harness.free_port()
    conf = os.path.join(WORK, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""
worker_processes 1;
error_log {WORK}/error.log warn;
pid {WORK}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {WORK}/tmp; proxy_temp_path {WORK}/tmp; fastcgi_temp_path {WORK}/tmp;
    uwsgi_temp_path {WORK}/tmp; scgi_temp_path {WORK}/tmp;
    upstream idp {{ server 127.0.0.1:{idp_port}; keepalive 8; }}
    server {{
        listen 127.0.0.1:{TLS_PORT} ssl;
        ssl_certificate {WORK}/srv.pem;
        ssl_certificate_key {WORK}/srv.key;
        location / {{
            proxy_pass http://idp;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
        }}
    }}
}}
""")
    os.makedirs(os.path.join(WORK, "tmp"), exist_ok=True)
    p = harness.start(["nginx", "-p", WORK, "-c", conf, "-g", "daemon off;"], name="nginx-tls")
    harness.wait_for(lambda: _port_open(TLS_PORT), timeout=5, what="nginx TLS listener")
    return p


def _port_open(port):
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def setup():
    idp = daemon_util.setup_idp()
    make_certs()
    start_nginx(idp.port)


def trusted():
    return {"SSL_CERT_FILE": os.path.join(WORK, "ca.pem")}


@case
def https_miss_then_hit():
    v = cookie("tls")
    daemon_util.IDP.session(v, "tina")
    with daemon(upstream=f"https://localhost:{TLS_PORT}", env=trusted()) as d:
        expect(fa(d, "app1.test", "/", v), 200, "miss", "tina", "first request over TLS")
        for i in range(5):
            expect(fa(d, "app1.test", "/", v), 200, "hit", "tina", f"hit {i}")
        eq(daemon_util.IDP.calls(v), 1, "IdP calls for the session")
        # A second session reuses the kept-alive TLS connection; a refusal passes through.
        w = cookie("tls2")
        daemon_util.IDP.session(w, "uma")
        expect(fa(d, "app1.test", "/", w), 200, "miss", "uma", "second session")
        r = fa(d, "app1.test", "/", cookie("unknown"))
        eq(r.status, 302, "unknown session over TLS: the IdP's redirect")
        check(r.header("Location") and "/application/o/authorize/" in r.header("Location"),
              "Location passed through", r.header("Location"))


@case
def untrusted_certificate_is_refused():
    v = cookie("tls-untrusted")
    daemon_util.IDP.session(v, "vera")
    # No SSL_CERT_FILE: the system store does not know our CA.
    env = {"SSL_CERT_FILE": "/nonexistent/ca.pem", "SSL_CERT_DIR": "/nonexistent"}
    with daemon(upstream=f"https://localhost:{TLS_PORT}", env=env) as d:
        r = fa(d, "app1.test", "/", v)
        eq(r.status, 503, "status when the IdP's certificate does not verify")
        eq(daemon_util.IDP.calls(v), 0, "IdP calls: the request never left TLS")
        log = d.proc.log_text()
        check("certificate" in log, "the log names the certificate problem", log[-600:])


@case
def wrong_host_name_is_refused():
    v = cookie("tls-name")
    daemon_util.IDP.session(v, "walt")
    # Trusted CA, but the certificate is for "localhost", not 127.0.0.1.
    with daemon(upstream=f"https://127.0.0.1:{TLS_PORT}", env=trusted()) as d:
        r = fa(d, "app1.test", "/", v)
        eq(r.status, 503, "status when the certificate names another host")
        eq(daemon_util.IDP.calls(v), 0, "IdP calls")


if __name__ == "__main__":
    harness.main(setup)
