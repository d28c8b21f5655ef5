"""test_feed.py — authentik's event feed (--authentik-url, --authentik-token-file) and webhook
(POST /v1/hooks/authentik), end to end: authcached, the test IdP (whose X-authentik-jwt carries a
random sid claim per session, as authentik's does) and ak_standin.py in authentik's place.

A session end from the feed purges that session's answers and no other (the session named by its
sid, or by the SHA-256 of its sid as authentik 2025.x sends it), here and — over the bus — on a
node without the feed, found through the session index without a scan, also after a restart
(the adopted segment indexed once); pings are answered; a dropped feed comes back, /metrics saying 0 then 1,
/readyz staying 200; a wrong token keeps it down with one clear log line, serving going on; the
webhook wants the admin token (401 and nothing purged without it), purges the user of a logout,
ignores a failed login and answers bad JSON with 400.

Run from the repo root: python3 tests/integration/test_feed.py [CASE...]
"""

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import ak_standin  # noqa: E402
import daemon_util  # noqa: E402
from daemon_util import admin_get, cookie, daemon, expect, fa, metric  # noqa: E402
from harness import case, check, eq  # noqa: E402

TOKEN = "ak-outpost-token-" + os.urandom(8).hex()
ADMIN_TOKEN = "admin-" + os.urandom(8).hex()
TMP = None
TOKEN_FILE = ADMIN_FILE = KEY_FILE = None
REDIS_BIN = shutil.which("redis-server")


def idp():
    return daemon_util.IDP


def session(tag, user):
    v = cookie(tag)
    idp().session(v, user, ["users"])
    return v


def sid_of(r):
    """The sid claim of the X-authentik-jwt of a response."""
    jwt = r.header("X-authentik-jwt")
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sid"]


def cache_on(d, host, v, user):
    fa(d, host, "/", v)
    r = fa(d, host, "/", v)
    expect(r, 200, "hit", user, f"{user} cached on {host}")
    return r


def feed_flags(standin, token_file=None):
    return {"--authentik-url": standin.url(), "--authentik-token-file": token_file or TOKEN_FILE}


def feed_metric(d, name):
    return metric(admin_get(d, "/metrics").body, "authcache_feed_" + name)


def wait_connected(d, standin, want=1, timeout=10.0):
    ak_standin.wait(lambda: feed_metric(d, "connected") == want and
                    (want == 0 or standin.connected() >= 1),
                    timeout, f"authcache_feed_connected {want}")


def wait_miss(d, host, v, user, what, timeout=2.0):
    t0 = time.monotonic()
    while True:
        r = fa(d, host, "/", v)
        if r.header("X-Authcache") != "hit":
            expect(r, 200, "miss", user, what)
            return
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what}: still a hit {timeout}s after the session end")
        time.sleep(0.02)


# ---------------------------------------------------------------- the feed

@case
def session_end_purges_that_session_only():
    s = ak_standin.Standin(TOKEN)
    a1, a2, b = session("feed-a1", "alice"), session("feed-a2", "alice"), session("feed-b", "bob")
    with daemon(feed_flags(s)) as d:
        wait_connected(d, s)
        ak_standin.wait(lambda: len(s.hellos()) >= 1, 5, "a hello from the outpost")
        check(s.api_calls == 1, "the outpost's uuid learnt once from the API", s.api_calls)
        check(any(f"/ws/outpost/{s.outpost}/?instance_uuid=" in q for q in s.requests),
              "connected to /ws/outpost/<uuid>/ with an instance_uuid", s.requests)
        sid1 = sid_of(cache_on(d, "app1.test", a1, "alice"))
        cache_on(d, "app3.test", a1, "alice")
        sid2 = sid_of(cache_on(d, "app1.test", a2, "alice"))
        cache_on(d, "app1.test", b, "bob")
        check(sid1 != sid2, "two sessions of alice have two sids", (sid1, sid2))
        # authentik 2025.x sends the SHA-256 of the session key that the sid claim carries.
        eq(s.session_end(hashlib.sha256(sid1.encode()).hexdigest()), 1, "session end sent")
        wait_miss(d, "app1.test", a1, "alice", "alice's first session, app1, after its end")
        expect(fa(d, "app3.test", "/", a1), 200, "miss", "alice", "the same session on app3")
        expect(fa(d, "app1.test", "/", a2), 200, "hit", "alice", "alice's other session")
        expect(fa(d, "app1.test", "/", b), 200, "hit", "bob", "another user")
        eq(feed_metric(d, "session_ends_total"), 1, "authcache_feed_session_ends_total")
        # Found by the session index: one entry per session and credential, no scan.
        eq(feed_metric(d, "index_entries"), 3, "authcache_feed_index_entries (a1, a2, b)")
        eq(feed_metric(d, "index_lossy"), 0, "authcache_feed_index_lossy")
        eq(feed_metric(d, "fallback_scans_total"), 0, "authcache_feed_fallback_scans_total")
        # Older authentik sends the sid itself.
        s.session_end(sid2)
        wait_miss(d, "app1.test", a2, "alice", "alice's second session, ended by its raw sid")
        expect(fa(d, "app1.test", "/", b), 200, "hit", "bob", "bob after both ends")
        # A session nobody holds, garbage and other instructions change nothing.
        s.session_end("0" * 64)
        s.send_json({"instruction": 2, "args": {}})
        s.send_json({"nonsense": True})
        s.ping(b"ping-123")
        ak_standin.wait(lambda: b"ping-123" in s.pongs, 5, "the pong of a ping")
        eq(feed_metric(d, "connected"), 1, "still connected after junk")
        expect(fa(d, "app1.test", "/", b), 200, "hit", "bob", "bob after junk")
        check(not s.errors, "every frame from authcached was masked and JSON", s.errors)
        log = d.proc.log_text()
        check(TOKEN not in log, "the outpost token is never logged")
        check(sid1 not in log and sid2 not in log, "no sid in the log")
        eq(feed_metric(d, "fallback_scans_total"), 0, "no session end scanned the segment")
    s.stop()


@case
def a_restart_indexes_the_segment_it_adopts():
    # The answers a segment held before a restart are not in the new process's index: the feed
    # indexes them with one scan when it starts, and session ends find them without a scan.
    s = ak_standin.Standin(TOKEN)
    shm = daemon_util.shm_name()
    a1, a2 = session("feed-ad1", "ivan"), session("feed-ad2", "ivan")
    try:
        with daemon(feed_flags(s), shm=shm, keep_shm=True) as d:
            wait_connected(d, s)
            sid1 = sid_of(cache_on(d, "app1.test", a1, "ivan"))
            cache_on(d, "app3.test", a1, "ivan")
            cache_on(d, "app1.test", a2, "ivan")
        with daemon(feed_flags(s), shm=shm) as d:
            wait_connected(d, s)
            expect(fa(d, "app1.test", "/", a1), 200, "hit", "ivan", "held across the restart")
            ak_standin.wait(lambda: feed_metric(d, "index_lossy") == 0, 5, "the segment indexed")
            check("indexed the 3 answers of the adopted segment" in d.proc.log_text(),
                  "one line for the adoption scan", d.proc.log_tail())
            eq(feed_metric(d, "index_entries"), 2, "authcache_feed_index_entries (a1, a2)")
            s.session_end(hashlib.sha256(sid1.encode()).hexdigest())
            wait_miss(d, "app1.test", a1, "ivan", "ivan's first session after the restart")
            expect(fa(d, "app3.test", "/", a1), 200, "miss", "ivan", "the same session on app3")
            expect(fa(d, "app1.test", "/", a2), 200, "hit", "ivan", "ivan's other session")
            eq(feed_metric(d, "fallback_scans_total"), 0, "found without a scan")
    finally:
        daemon_util.remove_shm(shm)
        s.stop()


@case
def feed_reconnects_and_metrics_follow():
    s = ak_standin.Standin(TOKEN)
    v = session("feed-rc", "carol")
    with daemon(feed_flags(s)) as d:
        wait_connected(d, s)
        cache_on(d, "app1.test", v, "carol")
        s.close_all()
        wait_connected(d, s, want=0, timeout=5)
        eq(admin_get(d, "/readyz").status, 200, "/readyz while the feed is down")
        expect(fa(d, "app1.test", "/", v), 200, "hit", "carol", "served while the feed is down")
        wait_connected(d, s, want=1, timeout=10)
        check(feed_metric(d, "reconnects_total") >= 1, "authcache_feed_reconnects_total counts it")
        check(s.upgrades >= 2, "a second websocket", s.upgrades)
        # and the new connection works
        sid = sid_of(fa(d, "app1.test", "/", v))
        s.session_end(sid)
        wait_miss(d, "app1.test", v, "carol", "a session ended after the reconnect")
    s.stop()


@case
def wrong_token_stays_down_and_serving_goes_on():
    s = ak_standin.Standin(TOKEN)
    bad = ak_standin.write_token_file(tempfile.mkdtemp(dir=TMP), "not-the-token")
    v = session("feed-wt", "dave")
    with daemon(feed_flags(s, bad)) as d:
        ak_standin.wait(lambda: s.refused >= 1, 5, "the stand-in refusing the token")
        cache_on(d, "app1.test", v, "dave")
        time.sleep(1.5)
        eq(feed_metric(d, "connected"), 0, "authcache_feed_connected with a wrong token")
        eq(admin_get(d, "/readyz").status, 200, "/readyz with the feed refused")
        log = d.proc.log_text()
        check("refused the outpost token (HTTP 403" in log, "a clear log line", d.proc.log_tail())
        eq(log.count("refused the outpost token"), 1, "said once, not per retry")
        check("not-the-token" not in log, "the token is never logged")
    s.stop()


@case
def flags_are_checked():
    for argv, want in (
            (["--authentik-url", "http://127.0.0.1:1"], "--authentik-url: needs"),
            (["--authentik-token-file", TOKEN_FILE], "--authentik-token-file: needs"),
            (["--authentik-url", "ftp://x", "--authentik-token-file", TOKEN_FILE],
             "--authentik-url"),
            (["--authentik-url", "http://127.0.0.1:1", "--authentik-token-file", "/nonexistent"],
             "--authentik-token-file")):
        rc, _, err = harness.run([daemon_util.BIN, "--upstream", "http://127.0.0.1:1"] + argv)
        eq(rc, 2, f"exit status for {argv}")
        check(want in err and err.count("\n") == 1, f"one line naming the flag for {argv}", err)


@case
def session_end_reaches_a_node_without_the_feed():
    if not REDIS_BIN:
        print("redis-server is not installed: case skipped", flush=True)
        return
    redis_port = harness.free_port()
    redis = harness.start([REDIS_BIN, "--save", "", "--appendonly", "no", "--port",
                           str(redis_port), "--bind", "127.0.0.1"], name="redis")
    time.sleep(0.3)
    s = ak_standin.Standin(TOKEN)
    bus = {"--hash-key-file": KEY_FILE,
           "--bus": f"redis://127.0.0.1:{redis_port}/feed-{os.getpid()}"}
    a1, a2 = session("feed-n1", "erin"), session("feed-n2", "erin")
    try:
        with daemon(dict(bus, **feed_flags(s))) as a, daemon(bus) as b:
            wait_connected(a, s)
            for d in (a, b):
                ak_standin.wait(lambda d=d: metric(admin_get(d, "/metrics").body,
                                                   "authcache_bus_connected") == 1, 10,
                                "bus connected")
            sid = sid_of(cache_on(a, "app1.test", a1, "erin"))
            for d in (a, b):
                cache_on(d, "app3.test", a1, "erin")
                cache_on(d, "app3.test", a2, "erin")
            s.session_end(hashlib.sha256(sid.encode()).hexdigest())
            wait_miss(a, "app3.test", a1, "erin", "node A (feed) after the session end")
            wait_miss(b, "app3.test", a1, "erin", "node B (no feed) after the session end")
            expect(fa(b, "app3.test", "/", a2), 200, "hit", "erin", "B: erin's other session")
    finally:
        s.stop()
        redis.stop()


def make_certs(work):
    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, cwd=work, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=authcache feed test CA", "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "srv.key",
            "-out", "srv.csr")
    with open(os.path.join(work, "ext.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost\n")
    openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "srv.pem")
    return tuple(os.path.join(work, f) for f in ("ca.pem", "srv.pem", "srv.key"))


@case
def wss_verifies_the_certificate():
    work = tempfile.mkdtemp(dir=TMP)
    ca, cert, key = make_certs(work)
    s = ak_standin.Standin(TOKEN, tls=(cert, key))
    v = session("feed-tls", "hank")
    with daemon(feed_flags(s) | {"--authentik-url": s.url("localhost")},
                env={"SSL_CERT_FILE": ca}) as d:
        wait_connected(d, s)
        sid = sid_of(cache_on(d, "app1.test", v, "hank"))
        s.session_end(sid)
        wait_miss(d, "app1.test", v, "hank", "a session ended over wss://")
    # The system store does not know the test CA: refused, said once, serving goes on.
    with daemon(feed_flags(s) | {"--authentik-url": s.url("localhost")},
                env={"SSL_CERT_FILE": cert + ".none"}) as d:
        ak_standin.wait(lambda: "TLS handshake failed" in d.proc.log_text(), 10,
                        "the TLS failure in the log")
        eq(feed_metric(d, "connected"), 0, "authcache_feed_connected with an unknown CA")
        check("certificate" in d.proc.log_text(), "the log names the certificate",
              d.proc.log_tail())
        cache_on(d, "app1.test", v, "hank")
    s.stop()


# ---------------------------------------------------------------- the webhook

def hook(d, body, token=ADMIN_TOKEN):
    hdrs = [("Content-Type", "application/json")]
    if token is not None:
        hdrs.append(("Authorization", f"Bearer {token}"))
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return harness.request(d.admin, "POST", "/v1/hooks/authentik", hdrs, body=data)


def authentik_body(action, event_user, recipient="akadmin"):
    """authentik's default webhook body (NotificationTransport.send_webhook)."""
    return {"body": f"{action}: {{'http_request': {{'method': 'GET'}}}}", "severity": "notice",
            "user_email": f"{recipient}@example.com", "user_username": recipient,
            "event_user_email": f"{event_user}@example.com", "event_user_username": event_user}


@case
def webhook_needs_the_admin_token():
    v = session("hook-t", "frank")
    with daemon({"--admin-token-file": ADMIN_FILE}) as d:
        cache_on(d, "app1.test", v, "frank")
        for tok in (None, "wrong", ADMIN_TOKEN + "x"):
            r = hook(d, authentik_body("logout", "frank"), tok)
            eq(r.status, 401, f"webhook with token {tok!r}")
        expect(fa(d, "app1.test", "/", v), 200, "hit", "frank", "nothing purged without it")
    with daemon() as d:  # no --admin-token-file: the webhook is refused altogether
        cache_on(d, "app1.test", v, "frank")
        eq(hook(d, authentik_body("logout", "frank"), "anything").status, 401,
           "webhook without --admin-token-file")
        expect(fa(d, "app1.test", "/", v), 200, "hit", "frank", "nothing purged")


@case
def webhook_logout_purges_the_user():
    a1, a2 = session("hook-a1", "alice"), session("hook-a2", "alice")
    g = session("hook-g", "gina")
    with daemon({"--admin-token-file": ADMIN_FILE}) as d:
        for v, u in ((a1, "alice"), (a2, "alice"), (g, "gina")):
            cache_on(d, "app1.test", v, u)
        r = hook(d, authentik_body("login_failed", "alice"))
        eq(r.status, 200, "a failed login")
        eq(json.loads(r.body)["purged"], 0, "a failed login purges nothing")
        expect(fa(d, "app1.test", "/", a1), 200, "hit", "alice", "after login_failed")
        r = hook(d, authentik_body("logout", "alice", recipient="gina"))
        eq(r.status, 200, "logout")
        eq(json.loads(r.body)["purged"], 2, "alice's two answers purged")
        expect(fa(d, "app1.test", "/", a1), 200, "miss", "alice", "alice's first session")
        expect(fa(d, "app1.test", "/", a2), 200, "miss", "alice", "alice's second session")
        expect(fa(d, "app1.test", "/", g), 200, "hit", "gina", "the notification's recipient")
        # A body mapping may name the action and the user outright (a user deleted by an admin).
        r = hook(d, {"action": "model_deleted", "username": "gina",
                     "event_user_username": "akadmin"})
        eq(json.loads(r.body)["purged"], 1, "model_deleted with username")
        expect(fa(d, "app1.test", "/", g), 200, "miss", "gina", "gina after model_deleted")
        for bad in (b"{not json", b"[1,2]", b"", b'{"body": "logout: x"'):
            r = hook(d, bad)
            eq(r.status, 400, f"bad body {bad!r}")
            check(r.body.count(b"\n") == 1 and r.body.startswith(b"bad JSON"),
                  "one line saying why", r.body)
        eq(admin_get(d, "/healthz").status, 200, "/healthz after the webhook")


def setup():
    global TMP, TOKEN_FILE, ADMIN_FILE, KEY_FILE
    daemon_util.setup_idp()
    TMP = tempfile.mkdtemp(prefix="authcache-feed-")
    TOKEN_FILE = ak_standin.write_token_file(TMP, TOKEN)
    ADMIN_FILE = os.path.join(TMP, "admin.token")
    with open(ADMIN_FILE, "w") as f:
        f.write(ADMIN_TOKEN + "\n")
    KEY_FILE = os.path.join(TMP, "hash.key")
    with open(KEY_FILE, "wb") as f:
        f.write(os.urandom(32))


if __name__ == "__main__":
    harness.main(setup)
