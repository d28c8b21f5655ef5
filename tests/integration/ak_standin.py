"""ak_standin.py — a stand-in for authentik's side of the outpost event feed, for test_feed.py.

What it does is what authentik does for an outpost (authentik/outposts/consumer.py and the
outposts API in authentik's source): `GET /api/v3/outposts/instances/` with the outpost's token
answers the outpost it belongs to ({"results": [{"pk": <uuid>, ...}]}), `GET /ws/outpost/<uuid>/`
upgrades to a websocket for that token (403 for any other token, as channels' DenyConnection
does), every message from the outpost gets an ACK ({"instruction": 0}), and the test makes it send
session ends ({"instruction": 4, "args": {"session_id": ...}}), pings, or close every connection.

Only the standard library; one thread per connection; with tls=(cert, key), TLS (wss://). With TLS,
reads poll with a short timeout under one lock that sends take too, so that a TLS connection is
never read and written by two threads at once; a plain connection needs no lock. Frames from the client must be masked
(RFC 6455 5.1): an unmasked one is recorded in .errors and the connection dropped.
"""

import base64
import contextlib
import hashlib
import json
import os
import socket
import ssl
import struct
import threading
import time
import uuid

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Standin:
    def __init__(self, token, tls=None):
        self.token = token
        self.ctx = None
        if tls:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(*tls)
        # A TLS connection must not be read and written by two threads at once; a plain socket
        # may, and then a send never waits for a read's timeout (bench/session_end.py times it).
        self.io = threading.RLock() if tls else contextlib.nullcontext()
        self.outpost = str(uuid.uuid4())
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.conns = []          # live websocket connections
        self.messages = []       # every JSON message received from outposts
        self.pongs = []          # payloads of pongs received
        self.refused = 0         # requests refused for their token
        self.api_calls = 0
        self.upgrades = 0
        self.requests = []       # request heads, as received (to check what is sent)
        self.errors = []
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    # ------------------------------------------------------------ control, for the tests

    def url(self, host="127.0.0.1"):
        return f"{'https' if self.ctx else 'http'}://{host}:{self.port}"

    def connected(self):
        with self.lock:
            return len(self.conns)

    def hellos(self):
        with self.lock:
            return [m for m in self.messages if m.get("instruction") == 1]

    def send_json(self, obj):
        """To every connected outpost; returns how many got it."""
        data = json.dumps(obj).encode()
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            self._send_frame(c, 1, data)
        return len(conns)

    def session_end(self, session_id):
        return self.send_json({"instruction": 4, "args": {"session_id": session_id}})

    def ping(self, payload=b"are you there"):
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            self._send_frame(c, 9, payload)
        return len(conns)

    def close_all(self):
        """Drops every websocket connection at once (authentik restarting)."""
        with self.lock:
            conns, self.conns = list(self.conns), []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def stop(self):
        self.stopping = True
        self.close_all()
        self.sock.close()

    # ------------------------------------------------------------ the server

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _reply(self, c, status, reason, body=b"", headers=()):
        head = f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\n"
        for k, v in headers:
            head += f"{k}: {v}\r\n"
        c.sendall(head.encode() + b"Connection: close\r\n\r\n" + body)
        c.close()

    def _serve(self, c):
        c.settimeout(10)
        if self.ctx:
            try:
                c = self.ctx.wrap_socket(c, server_side=True)
            except (OSError, ssl.SSLError) as e:
                with self.lock:
                    self.errors.append(f"TLS: {e}")
                c.close()
                return
        buf = b""
        try:
            while b"\r\n\r\n" not in buf:
                chunk = c.recv(65536)
                if not chunk:
                    c.close()
                    return
                buf += chunk
        except OSError:
            c.close()
            return
        head, rest = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        hdrs = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
        with self.lock:
            self.requests.append(head.decode("latin-1"))
        if hdrs.get("authorization") != f"Bearer {self.token}":
            with self.lock:
                self.refused += 1
            self._reply(c, 403, "Forbidden", b'{"detail":"Token invalid/expired"}')
            return
        path = target.split("?", 1)[0]
        if method == "GET" and path == "/api/v3/outposts/instances/":
            with self.lock:
                self.api_calls += 1
            body = json.dumps({"pagination": {"count": 1}, "results": [
                {"pk": self.outpost, "name": "authentik Embedded Outpost", "type": "proxy"}]})
            self._reply(c, 200, "OK", body.encode(), [("Content-Type", "application/json")])
            return
        if method == "GET" and path == f"/ws/outpost/{self.outpost}/":
            key = hdrs.get("sec-websocket-key", "")
            if (hdrs.get("upgrade", "").lower() != "websocket" or
                    hdrs.get("sec-websocket-version") != "13" or len(base64.b64decode(key)) != 16):
                self._reply(c, 400, "Bad Request")
                return
            accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
            c.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                       f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").encode())
            with self.lock:
                self.upgrades += 1
                self.conns.append(c)
            self._ws(c, rest)
            return
        self._reply(c, 404, "Not Found")

    def _send_frame(self, c, op, payload):
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | op, n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | op, 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | op, 127, n)
        try:
            with self.io:
                c.sendall(head + payload)
        except OSError:
            pass

    def _ws(self, c, buf):
        c.settimeout(0.05)
        frag = b""
        try:
            while True:
                while True:
                    if len(buf) >= 2:
                        b0, b1 = buf[0], buf[1]
                        n, i = b1 & 0x7f, 2
                        if n == 126 and len(buf) >= 4:
                            n, i = struct.unpack("!H", buf[2:4])[0], 4
                        elif n == 127 and len(buf) >= 10:
                            n, i = struct.unpack("!Q", buf[2:10])[0], 10
                        if not b1 & 0x80:
                            self.errors.append("an unmasked frame from the client")
                            raise OSError("unmasked")
                        if len(buf) >= i + 4 + n:
                            mask = buf[i:i + 4]
                            body = buf[i + 4:i + 4 + n]
                            data = bytes(x ^ mask[j % 4] for j, x in enumerate(body))
                            buf = buf[i + 4 + n:]
                            self._frame(c, b0 & 0x0f, b0 & 0x80, data, frag)
                            frag = b"" if b0 & 0x80 else frag + data
                            continue
                    break
                try:
                    with self.io:
                        chunk = c.recv(65536)
                except socket.timeout:
                    if self.stopping or c not in self.conns:
                        break
                    continue
                if not chunk:
                    break
                buf += chunk
        except OSError:
            pass
        with self.lock:
            if c in self.conns:
                self.conns.remove(c)
        try:
            c.close()
        except OSError:
            pass

    def _frame(self, c, op, fin, data, frag):
        if op == 10:
            with self.lock:
                self.pongs.append(data)
        elif op == 8:
            raise OSError("closed by the client")
        elif op in (0, 1) and fin:
            try:
                msg = json.loads(frag + data)
            except ValueError:
                self.errors.append(f"not JSON: {data[:80]!r}")
                return
            with self.lock:
                self.messages.append(msg)
            self._send_frame(c, 1, json.dumps({"instruction": 0, "args": {}}).encode())


def write_token_file(directory, token):
    path = os.path.join(directory, "outpost.token")
    with open(path, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)
    return path


def wait(pred, timeout=5.0, what="condition"):
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)
