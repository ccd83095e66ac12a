"""HTTP/1.1 peers for the integration tests of `tern proxy --http`: loopback servers in background threads.

`HttpUpstream` records, per accepted connection, the exact bytes it received and the requests it parsed from
them (strictly, with h11), and answers by the request's path, so one upstream serves every behaviour a test
needs, even on one keep-alive connection:

    /bytes/N                    N bytes of the deterministic stream (peers.stream_bytes), Content-Length
    /bytes/N?framing=chunked    the same, chunked (64 KiB chunks)
    /bytes/N?framing=close      the same, no framing: ends when the upstream closes the connection
    /bytes/N?framing=chunked&chunk=K  chunked in K-byte chunks, all sent in one write per 64 KiB of body
    /sha256[?pause_ms=T]        reads the whole body (waiting T ms before the first read), answers
                                {"length": n, "sha256": hex}
    /echo                       answers with the request body (small bodies only: it is held in memory)
    /status/CODE                answers CODE; 204 has no body, 304 carries `Content-Length: 1000` and no body
    /delay/MS                   answers like the default after MS milliseconds
    /hang                       never answers; holds the connection until the peer closes it
    /hold/NAME                  answers like the default once the test calls `release(NAME)` (a release may
                                come first); closes without answering if the upstream stops before
    /reset                      reads the request, then resets the connection (RST)
    /close                      reads the request, then closes cleanly (FIN) without answering
    /garbage/KIND               answers with an invalid status line (KIND: `not-http`, `bad-code`), then holds
    /hop-by-hop                 an answer carrying hop-by-hop fields (Connection and what it names, Keep-Alive,
                                Proxy-Connection, Upgrade, TE) next to an end-to-end one
    /connection-close           answers with `Connection: close` and closes
    /stall-body                 announces 10 bytes, sends 5, then waits for the peer to close
    /cut-body                   announces 10 bytes, sends 5, then closes (FIN)
    /close-after-response       answers normally (keep-alive), then closes the idle connection 100 ms later
                                (`closed` is set once it did)
    /headers?NAME=VALUE&...     200 carrying each query parameter as a response field (a name given twice: two
                                fields), the body the request target
    anything else               200, the body is the request target

Every answer carries `X-Upstream-Connection: K` (the accepting order of the connection, from 1), so tests see
which upstream connection served a request. HEAD gets the headers of the GET and no body. A request with
`Expect: 100-continue` gets `100 Continue` before its body is read.

`WebSocketEcho` is the `websockets` library's server echoing every message; `TunnelEcho` answers a CONNECT
with 200 and then echoes raw bytes (and echoes raw bytes from the start when the first bytes are no CONNECT).
"""
import hashlib
import json
import socket
import ssl
import struct
import threading
import time
from urllib.parse import parse_qs, parse_qsl, urlsplit

import h11

from peers import stream_bytes

RAW_CAP = 1 << 20  # raw bytes kept per connection (the count goes on); enough for any head a test sends
BODY_CAP = 1 << 20  # request body bytes kept per request (length and sha256 cover the whole body)
MAX_HEAD = 1 << 20  # the upstream itself accepts heads far larger than any limit of Tern's under test

REASONS = {100: "Continue", 101: "Switching Protocols", 200: "OK", 201: "Created", 204: "No Content",
           304: "Not Modified", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error",
           503: "Service Unavailable"}


class ReceivedRequest:
    """One request as the upstream parsed it. Header names are lowercased; `raw_headers` keep their case."""

    def __init__(self, event, connection):
        self.method = event.method.decode()
        self.target = event.target.decode()
        self.http_version = event.http_version.decode()
        self.headers = [(n.decode(), v.decode("latin-1")) for n, v in event.headers]
        self.raw_headers = [(n.decode(), v.decode("latin-1")) for n, v in event.headers.raw_items()]
        self.connection = connection  # the UpstreamConnection it arrived on
        self.body_length = 0
        self.body_prefix = bytearray()  # the first BODY_CAP bytes of the body
        self.body_hash = hashlib.sha256()
        self.complete = False  # its whole body arrived

    @property
    def path(self):
        return urlsplit(self.target).path

    def header(self, name):
        """The values of field `name` joined as a list would be (`a, b`), or None when absent."""
        values = self.header_values(name)
        return ", ".join(values) if values else None

    def header_values(self, name):
        name = name.lower()
        return [v for n, v in self.headers if n == name]

    def has(self, name):
        return any(n == name.lower() for n, _ in self.headers)

    @property
    def body_sha256(self):
        return self.body_hash.hexdigest()

    def __repr__(self):
        return f"<{self.method} {self.target} body={self.body_length}{'' if self.complete else ' incomplete'}>"


class UpstreamConnection:
    """What one accepted connection received. `partial` is set when it ended inside a request (some bytes of a
    head or body arrived that never made a whole request); `error` holds h11's complaint about bytes that
    were no valid HTTP/1.1; `end` is how the peer (Tern) ended it: "eof", "reset", or None while open or when
    the upstream closed first."""

    def __init__(self, sock, index):
        self.sock = sock
        self.index = index
        self.raw = bytearray()
        self.received = 0
        self.requests = []
        self.partial = False
        self.error = None
        self.end = None
        self.closed = threading.Event()  # the handler is done with this connection
        self.peer = None  # the client's address, as accepted

    def recv(self, n=1 << 20):
        """Receives and records; b"" at the peer's FIN. A reset is recorded and raised."""
        try:
            data = self.sock.recv(n)
        except ConnectionResetError:
            self.end = "reset"
            raise
        if data:
            self.received += len(data)
            if len(self.raw) < RAW_CAP:
                self.raw += data[: RAW_CAP - len(self.raw)]
        elif self.end is None:
            self.end = "eof"
        return data

    def wait_for_peer_close(self):
        """Reads (and records) until the peer closes or resets, or the server stops."""
        try:
            while self.recv():
                pass
        except OSError:
            pass

    def reset(self):
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def __repr__(self):
        return (f"<upstream connection {self.index}: {self.received} bytes, requests {self.requests}, "
                f"partial={self.partial} error={self.error!r} end={self.end}>")


class ThreadedServer:
    """A loopback listener with a thread per accepted connection running `serve(connection)`."""

    def __init__(self, host="127.0.0.1"):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.host = host
        self.listener = socket.create_server((host, 0), family=family, backlog=1024)
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.connections = []
        self.failures = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    @property
    def address(self):
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def accepted(self):
        """How many TCP connections this upstream accepted."""
        return len(self.connections)

    @property
    def received(self):
        """How many bytes this upstream received, over all its connections."""
        return sum(c.received for c in self.connections)

    def _accept(self):
        while not self.stopping.is_set():
            try:
                sock, peer = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                conn = UpstreamConnection(sock, len(self.connections) + 1)
                conn.peer = peer
                self.connections.append(conn)
            t = threading.Thread(target=self._run, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _run(self, conn):
        try:
            self.serve(conn)
        except OSError:
            pass  # the peer went away, or stop() shut the socket
        except Exception as e:  # a bug of the peer itself: keep it visible to the test
            self.failures.append(f"connection {conn.index}: {e!r}")
            raise
        finally:
            try:
                conn.sock.close()
            except OSError:
                pass
            conn.closed.set()

    def serve(self, conn):
        raise NotImplementedError

    def stop(self):
        self.stopping.set()
        self.acceptor.join(5)
        self.listener.close()
        for c in list(self.connections):
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self.threads:
            t.join(5)


class Exchange:
    """One request being served: its body can be streamed once, then one answer is written."""

    def __init__(self, upstream, conn, parser, request):
        self.upstream = upstream
        self.conn = conn
        self.parser = parser
        self.request = request
        self.body_done = False
        self.keep_alive = True

    def _next_event(self):
        while True:
            event = self.parser.next_event()
            if event is h11.NEED_DATA:
                self.parser.receive_data(self.conn.recv())
                continue
            return event

    def body(self):
        """Yields the request body as it arrives, recording its length, hash and first bytes."""
        if self.body_done:
            return
        r = self.request
        if r.header("expect") and r.header("expect").lower() == "100-continue":
            self.conn.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        while True:
            event = self._next_event()
            if isinstance(event, h11.Data):
                data = bytes(event.data)
                r.body_length += len(data)
                r.body_hash.update(data)
                if len(r.body_prefix) < BODY_CAP:
                    r.body_prefix += data[: BODY_CAP - len(r.body_prefix)]
                yield data
            elif isinstance(event, h11.EndOfMessage):
                r.complete = True
                self.body_done = True
                return
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("closed inside a request body")
            else:
                raise h11.RemoteProtocolError(f"unexpected {event!r} in a request body")

    def read_body(self):
        for _ in self.body():
            pass
        return bytes(self.request.body_prefix)

    def send(self, data):
        self.conn.sock.sendall(data)

    def head(self, status, headers=(), reason=None):
        lines = [f"HTTP/1.1 {status} {reason or REASONS.get(status, 'Status')}",
                 f"X-Upstream-Connection: {self.conn.index}"]
        lines += [f"{n}: {v}" for n, v in headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def respond(self, status=200, body=b"", headers=(), reason=None):
        """An answer framed by Content-Length (none for 1xx, 204 and 304); HEAD gets no body."""
        self.read_body()
        headers = list(headers)
        bodiless = status in (204, 304) or status < 200
        if not bodiless and not any(n.lower() == "content-length" for n, _ in headers):
            headers.append(("Content-Length", str(len(body))))
        out = self.head(status, headers, reason)
        if not bodiless and self.request.method != "HEAD":
            out += body
        self.send(out)


class HttpUpstream(ThreadedServer):
    """The recording HTTP/1.1 upstream (see the module comment for its paths)."""

    @property
    def requests(self):
        """Every request whose head arrived, over all connections, in arrival order."""
        with self.lock:
            return list(self._requests)

    def __init__(self, host="127.0.0.1"):
        self._requests = []
        self._holds = {}  # NAME of /hold/NAME → set once released
        super().__init__(host)

    def paths(self):
        return [r.path for r in self.requests]

    def _hold(self, name):
        with self.lock:
            return self._holds.setdefault(name, threading.Event())

    def release(self, name):
        """Lets the requests for /hold/NAME be answered."""
        self._hold(name).set()

    def all_raw(self):
        """Every byte received (up to RAW_CAP per connection), connections in accepting order."""
        return b"".join(bytes(c.raw) for c in self.connections)

    def serve(self, conn):
        leftover = b""
        request = None
        started = False  # bytes of the next request arrived before its head was whole
        try:
            while True:
                parser = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
                request = None
                started = bool(leftover)
                if leftover:
                    parser.receive_data(leftover)
                event = parser.next_event()
                while event is h11.NEED_DATA:
                    data = conn.recv()
                    if not data:
                        conn.partial = started
                        return
                    started = True
                    parser.receive_data(data)
                    event = parser.next_event()
                request = ReceivedRequest(event, conn)
                with self.lock:
                    conn.requests.append(request)
                    self._requests.append(request)
                exchange = Exchange(self, conn, parser, request)
                if not self.answer(exchange):
                    return
                exchange.read_body()
                if not exchange.keep_alive:
                    return
                leftover, closed = parser.trailing_data
                if closed and not leftover:
                    return
        except h11.RemoteProtocolError as e:
            # Bytes that are no valid HTTP/1.1 request (or a body cut short by the peer's FIN).
            conn.partial = True
            if conn.end is None:
                conn.error = str(e)
                conn.sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        except ConnectionError:
            conn.partial = (not request.complete) if request is not None else started

    def answer(self, ex):
        """Answers one request; returns False when the connection must not be used again."""
        url = urlsplit(ex.request.target)
        parts = url.path.strip("/").split("/")
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        route = parts[0]
        if route == "bytes":
            return self.answer_bytes(ex, int(parts[1]), query.get("framing", "content-length"))
        if route == "sha256":
            pause = int(query.get("pause_ms", "0"))
            if pause:
                time.sleep(pause / 1000)
            ex.read_body()
            r = ex.request
            body = json.dumps({"length": r.body_length, "sha256": r.body_sha256}).encode()
            ex.respond(200, body, [("Content-Type", "application/json")])
            return True
        if route == "echo":
            ex.respond(200, ex.read_body(), [("Content-Type", "application/octet-stream")])
            return True
        if route == "status":
            code = int(parts[1])
            headers = [("ETag", '"tern"'), ("Content-Length", "1000")] if code == 304 else []
            ex.respond(code, b"" if code in (204, 304) else f"status {code}\n".encode(), headers)
            return True
        if route == "delay":
            time.sleep(int(parts[1]) / 1000)
            ex.respond(200, ex.request.target.encode())
            return True
        if route == "hold":
            released = self._hold(parts[1])
            while not released.wait(0.1):
                if self.stopping.is_set():
                    return False
            ex.respond(200, ex.request.target.encode())
            return True
        if route == "hang":
            ex.read_body()
            ex.conn.wait_for_peer_close()
            return False
        if route == "reset":
            ex.read_body()
            ex.conn.reset()
            return False
        if route == "close":
            ex.read_body()
            ex.conn.sock.shutdown(socket.SHUT_WR)
            ex.conn.wait_for_peer_close()
            return False
        if route == "garbage":
            ex.read_body()
            ex.send({"not-http": b"SSH-2.0-OpenSSH_9.2p1 nonsense\r\n\r\n",
                     "bad-code": b"HTTP/1.1 2x0 Fine\r\nContent-Length: 2\r\n\r\nok"}[parts[1]])
            ex.conn.wait_for_peer_close()
            return False
        if route == "hop-by-hop":
            ex.respond(200, b"hop", [("Connection", "keep-alive, X-Upstream-Hop"), ("X-Upstream-Hop", "1"),
                                     ("Keep-Alive", "timeout=5"), ("Proxy-Connection", "keep-alive"),
                                     ("Upgrade", "h2c"), ("TE", "gzip"), ("X-End-To-End", "kept")])
            return True
        if route == "connection-close":
            ex.respond(200, b"bye", [("Connection", "close")])
            ex.keep_alive = False
            return False
        if route == "stall-body":
            # Announces 10 bytes, sends 5 and goes quiet until the peer closes.
            ex.read_body()
            ex.send(ex.head(200, [("Content-Length", "10")]) + b"12345")
            ex.conn.wait_for_peer_close()
            return False
        if route == "cut-body":
            # Announces 10 bytes, sends 5 and closes (FIN): the response is cut after its head.
            ex.read_body()
            ex.send(ex.head(200, [("Content-Length", "10")]) + b"12345")
            return False
        if route == "headers":
            ex.respond(200, ex.request.target.encode(), parse_qsl(url.query))
            return True
        if route == "close-after-response":
            ex.respond(200, b"closing soon")
            time.sleep(0.1)
            return False  # the socket is closed on return: later bytes from the peer get a reset
        ex.respond(200, ex.request.target.encode())
        return True

    def answer_bytes(self, ex, n, framing):
        ex.read_body()
        head_only = ex.request.method == "HEAD"
        if framing == "content-length":
            ex.send(ex.head(200, [("Content-Length", str(n)), ("Content-Type", "application/octet-stream")]))
            if not head_only:
                for chunk in stream_bytes(n):
                    ex.send(chunk)
            return True
        if framing == "chunked":
            size = int(parse_qs(urlsplit(ex.request.target).query).get("chunk", ["65536"])[0])
            ex.send(ex.head(200, [("Transfer-Encoding", "chunked"), ("Content-Type", "application/octet-stream")]))
            if not head_only:
                for block in stream_bytes(n):
                    for i in range(0, len(block), 65536):
                        piece = block[i:i + 65536]
                        ex.send(b"".join(b"%x\r\n%s\r\n" % (len(piece[j:j + size]), piece[j:j + size])
                                         for j in range(0, len(piece), size)))
                ex.send(b"0\r\nx-trailer: t\r\n\r\n")
            return True
        if framing == "close":
            ex.send(ex.head(200, [("Connection", "close"), ("Content-Type", "application/octet-stream")]))
            if not head_only:
                for chunk in stream_bytes(n):
                    ex.send(chunk)
            ex.keep_alive = False
            return False
        raise ValueError(framing)


class TunnelEcho(ThreadedServer):
    """Answers `CONNECT` with 200 and then echoes raw bytes; echoes from the first byte when the connection
    does not start with a CONNECT (a proxy that terminates CONNECT itself sends only the tunnelled bytes).
    `connect_heads` records the CONNECT heads it received."""

    def __init__(self, host="127.0.0.1"):
        self.connect_heads = []
        super().__init__(host)

    def serve(self, conn):
        data = conn.recv()
        if data.startswith(b"CONNECT "):
            while b"\r\n\r\n" not in data:
                more = conn.recv()
                if not more:
                    return
                data += more
            head, data = data.split(b"\r\n\r\n", 1)
            self.connect_heads.append(head)
            conn.sock.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        while True:
            if data:
                conn.sock.sendall(data)
            data = conn.recv()
            if not data:
                break
        conn.sock.shutdown(socket.SHUT_WR)


class WebSocketEcho:
    """The `websockets` library's server, echoing every message back; `requests` records the handshake
    requests (their headers) it received."""

    def __init__(self, host="127.0.0.1"):
        from websockets.sync.server import serve

        self.requests = []
        self.host = host

        def record(connection, request):
            self.requests.append(request)
            return None

        def echo(ws):
            for message in ws:
                ws.send(message)

        self.server = serve(echo, host, 0, process_request=record, compression=None, max_size=None,
                            ping_interval=None)
        self.port = self.server.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    def stop(self):
        self.server.shutdown()
        self.thread.join(5)


class TLSHttpUpstream(HttpUpstream):
    """HttpUpstream behind TLS (Python's ssl, server side): `context` is set by `with_context` before it starts.
    Each connection's handshake is recorded in `handshakes` (SNI asked for, client certificate subject's URI or
    CN, whether the session was resumed); handshakes that fail go to `handshake_failures` (a failing handshake
    is what some tests want, so it is not a failure of the peer)."""

    context = None

    @classmethod
    def with_context(cls, context):
        return type("BoundTLSHttpUpstream", (cls,), {"context": context})

    def __init__(self, host="127.0.0.1"):
        self.handshakes = []
        self.handshake_failures = []
        self._sni = {}
        self.context.sni_callback = self._remember_sni
        super().__init__(host)

    def _remember_sni(self, sock, name, ctx):
        self._sni[id(sock)] = name

    def _run(self, conn):
        try:
            tls = self.context.wrap_socket(conn.sock, server_side=True, do_handshake_on_connect=False)
            tls.settimeout(30)
            tls.do_handshake()
        except (ssl.SSLError, OSError) as e:
            self.handshake_failures.append(repr(e))
            try:
                conn.sock.close()
            except OSError:
                pass
            conn.closed.set()
            return
        peer = tls.getpeercert() or {}
        names = [v for k, v in peer.get("subjectAltName", ()) if k == "URI"]
        self.handshakes.append({"sni": self._sni.pop(id(tls), None), "peer": names[0] if names else None,
                                "resumed": tls.session_reused, "version": tls.version()})
        conn.sock = tls
        super()._run(conn)
