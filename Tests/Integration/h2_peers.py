"""HTTP/2 upstreams for the tests (issue 17): a plaintext h2c server over Python's h2 that records what it got and
answers by path, and a gRPC server (grpcio) with raw-bytes methods of every kind."""
import hashlib
import json
import socket
import struct
import threading

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings

from peers import stream_bytes


def lazy(block, n):
    """Yields n bytes made of `block` repeated, a block at a time."""
    while n > 0:
        piece = block[:n]
        n -= len(piece)
        yield piece


class H2Upstream:
    """An h2c server (prior knowledge). Paths: `/echo` answers the request body (with `x-trailers: 1`, trailers
    `x-t: done` follow it; with `x-length: 1` too, the body has its content-length); `/held` answers once `gate` is set; `/big?n=N` answers N bytes; `/tiny?n=N` answers N bytes in
    N DATA frames of one byte; `/empties` sends three empty DATA frames before its body; `/flood?KIND` floods PING,
    SETTINGS (reading nothing), PRIORITY or WINDOW_UPDATE frames before its answer (`flood_ended` set when Tern cut it); anything else its path.
    `/bytes/N` answers N bytes of the deterministic stream (peers.stream_bytes) with their content-length;
    `/sha256` hashes the request body as it arrives (never holding it) and answers JSON {"length", "sha256"}; with
    `?withhold=1` it acknowledges none of the body's DATA (no WINDOW_UPDATE) until the test calls `open_gate()`.
    Large bodies (`/bytes`, `/big`) are made as they are sent, a block at a time, never held whole.
    `refuse_first`: the first N streams are reset REFUSED_STREAM; `goaway_after`: a connection says GOAWAY (last
    stream: the last one it answered) once it answered that many. `max_streams`: its SETTINGS_MAX_CONCURRENT_STREAMS.
    Records, per connection, the most streams open at once, and every request's head and body (a `/sha256` body as
    b"": it is hashed, not kept). Flow-control counts for tests of slow peers: `body_received` (request DATA bytes,
    all connections), `withheld` (those not yet acknowledged), `sent` (response DATA bytes), and `stalled`, set
    whenever an answer waited `stall_seconds` for a WINDOW_UPDATE that did not come."""

    # An answer waiting for a window gives up (its stream left as it is) after this long without one.
    WINDOW_GIVE_UP = 120

    def __init__(self, max_streams=100, refuse_first=0, goaway_after=0, stall_seconds=0.3):
        self.max_streams, self.refuse_left, self.goaway_after = max_streams, refuse_first, goaway_after
        self.stall_seconds = stall_seconds
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.requests = []  # (headers dict, body bytes)
        self.request_trailers = []  # (path, trailers dict) of each request that had trailers
        self.connections = 0
        self.max_open = []  # per connection
        self.refused = 0
        self.stopped = False
        self.conns = []
        self.errors = []
        self.hanging = threading.Event()
        self.flood_ended = threading.Event()
        self.gate = threading.Event()
        self.refused_on = []  # per connection
        self.body_received, self.withheld, self.sent = 0, 0, 0
        self.stalled = threading.Event()
        self._on_gate = []  # per connection: acknowledges what it withheld
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            # (As HttpUpstream: without it, Nagle holds back the tail of a window's DATA until Tern's delayed ACK.)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.connections += 1
                index = len(self.max_open)
                self.max_open.append(0)
                self.refused_on.append(0)
                self.conns.append(c)
            threading.Thread(target=self._serve, args=(c, index), daemon=True).start()

    def _serve(self, sock, index):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        # (Set as initial values: a change made through local_settings is sent only once acknowledged.)
        conn.local_settings = h2.settings.Settings(
            client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams})
        conn.initiate_connection()
        # The limit is kept here, not by h2 (which ends the connection on a stream over it): a stream over it is
        # refused, as RFC 9113 §5.1.2 allows (and as a client that sent it before the SETTINGS arrived expects).
        conn.local_settings = h2.settings.Settings(
            client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1 << 20})
        send_lock = threading.Lock()
        window_moved = threading.Condition(send_lock)
        heads, bodies, open_streams, answered = {}, {}, set(), [0]
        hashes = {}  # stream → [sha256, length] of a /sha256 body
        withheld = {}  # stream → DATA bytes not acknowledged yet (`?withhold=1` before the gate opens)
        closed = [False]  # the peer closed (or the server stopped): answers waiting for a window give up

        def send():
            data = conn.data_to_send()
            if data:
                try:
                    sock.sendall(data)
                except OSError:
                    pass

        with send_lock:
            send()

        def release_withheld():
            # (On the gate's opening: every byte withheld so far is acknowledged, and the window updates sent.)
            with send_lock:
                total = 0
                for sid, n in withheld.items():
                    try:
                        conn.acknowledge_received_data(n, sid)
                    except Exception:
                        pass  # (a stream reset meanwhile)
                    total += n
                withheld.clear()
                with self.lock:
                    self.withheld -= total
                send()

        with self.lock:
            self._on_gate.append(release_withheld)

        def answer(sid):
            head, body = heads[sid], bytes(bodies.get(sid, b""))
            path = head.get(":path", "/")
            if path == "/held":
                # Answered once the test opens the gate (bounded: a test that forgets gets the answer in 60 s).
                self.gate.wait(60)
            trailers, frame, fields = None, 1 << 20, [("content-type", "text/plain")]
            if path == "/echo":
                out = body
                if head.get("x-trailers") == "1":
                    trailers = [("x-t", "done")]
                if head.get("x-length") == "1":
                    fields = [*fields, ("content-length", str(len(out)))]
            elif path.startswith("/big?n="):
                out = lazy(b"b" * 65536, int(path.split("=")[1]))
            elif path.startswith("/bytes/"):
                n = int(path.split("/")[2].split("?")[0])
                out, fields = stream_bytes(n), [("content-type", "application/octet-stream"),
                                                ("content-length", str(n))]
            elif path.startswith("/sha256"):
                digest, length = hashes.pop(sid, (hashlib.sha256(), 0))
                out = json.dumps({"length": length, "sha256": digest.hexdigest()}).encode()
                fields = [("content-type", "application/json"), ("content-length", str(len(out)))]
            elif path == "/empties":
                # A flood of empty DATA frames (a misbehaving upstream), then the body.
                with send_lock:
                    conn.send_headers(sid, [(":status", "200")], end_stream=False)
                    for _ in range(3):
                        conn.send_data(sid, b"")
                    conn.send_data(sid, b"late", end_stream=True)
                    send()
                return
            elif path.startswith("/flood?"):
                # A misbehaving upstream, before its answer: `ping` and `settings` frames asking for an
                # acknowledgement while it reads nothing (the reader waits on the lock held here), `priority` and
                # `window` frames that cost work and carry nothing. Bounded: at most 2,000,000 frames (18 MB),
                # stopping once Tern closes the connection. The acknowledgements must outgrow what the kernel holds
                # for them (this socket's receive buffer, cut to 4 KiB here, and Tern's send buffer, up to 4 MiB)
                # before they queue in nghttp2; 400,000 did not always (a loopback that absorbed 3.6 MB of them).
                kind = path.split("?")[1]
                with send_lock:
                    try:
                        if kind in ("ping", "settings"):
                            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                        for i in range(2_000_000 if kind in ("ping", "settings") else 300):
                            if kind == "ping":
                                conn.ping(struct.pack(">Q", i))
                            elif kind == "settings":
                                sock.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # (h2 allows one unacknowledged)
                            elif kind == "priority":
                                # (h2 will not send PRIORITY from a server: the frame is written here.)
                                sock.sendall(b"\x00\x00\x05\x02\x00" + struct.pack(">I", sid) + b"\x00\x00\x00\x00\x0f")
                            else:
                                conn.increment_flow_control_window(1)
                            if i % 100 == 99:
                                sock.sendall(conn.data_to_send())
                        sock.sendall(conn.data_to_send())
                        conn.send_headers(sid, [(":status", "200")], end_stream=False)
                        conn.send_data(sid, b"late", end_stream=True)
                        send()
                    except OSError:
                        self.flood_ended.set()
                return
            elif path == "/hang":
                # Headers and a little of the body, then nothing until the connection is dropped.
                with send_lock:
                    conn.send_headers(sid, [(":status", "200"), ("content-type", "text/plain")], end_stream=False)
                    conn.send_data(sid, b"partial")
                    send()
                self.hanging.set()
                return
            elif path.startswith("/tiny?n="):
                out, frame = bytes(i % 251 for i in range(int(path.split("=")[1]))), 1
            else:
                out = path.encode()
            with send_lock:
                try:
                    conn.send_headers(sid, [(":status", "200"), *fields, ("x-proto", "h2")], end_stream=False)
                    for chunk in ([out] if isinstance(out, bytes) else out):
                        view = memoryview(chunk)
                        waited, unsent = 0.0, 0
                        while view:
                            if closed[0]:
                                return
                            window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                            if window <= 0:
                                send()
                                # (Woken when a WINDOW_UPDATE or a close comes. A wait of `stall_seconds` with
                                # neither marks the answer stalled; after WINDOW_GIVE_UP seconds it is given up.)
                                if not window_moved.wait(self.stall_seconds):
                                    waited += self.stall_seconds
                                    if conn.local_flow_control_window(sid) <= 0:
                                        self.stalled.set()
                                    if waited >= self.WINDOW_GIVE_UP:
                                        return
                                continue
                            waited = 0.0
                            n = min(window, len(view), frame)
                            conn.send_data(sid, bytes(view[:n]))
                            view = view[n:]
                            with self.lock:
                                self.sent += n
                            unsent += n
                            if unsent >= 1 << 16:
                                # (Out a window's worth at a time, so what waits in h2 stays small.)
                                send()
                                unsent = 0
                    if trailers:
                        conn.send_headers(sid, trailers, end_stream=True)
                    else:
                        conn.end_stream(sid)
                    send()
                except Exception:
                    return
                open_streams.discard(sid)
                answered[0] += 1
                if self.goaway_after and answered[0] == self.goaway_after:
                    conn.close_connection(last_stream_id=sid)
                    send()

        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                break
            if not data:
                break
            with send_lock:
                try:
                    events = conn.receive_data(data)
                except Exception as e:
                    self.errors.append(repr(e))
                    break
                for e in events:
                    if isinstance(e, h2.events.RequestReceived):
                        heads[e.stream_id] = dict(e.headers)
                        if heads[e.stream_id].get(":path", "").startswith("/sha256"):
                            hashes[e.stream_id] = [hashlib.sha256(), 0]
                        over = len(open_streams) >= self.max_streams
                        if not over:
                            open_streams.add(e.stream_id)
                        with self.lock:
                            self.max_open[index] = max(self.max_open[index], len(open_streams))
                            refuse = over or self.refuse_left > 0
                            if refuse and not over:
                                self.refuse_left -= 1
                            if refuse:
                                self.refused += 1
                                self.refused_on[index] += 1
                        if refuse:
                            conn.reset_stream(e.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                            open_streams.discard(e.stream_id)
                            heads.pop(e.stream_id)
                    elif isinstance(e, h2.events.DataReceived):
                        if e.stream_id in hashes:
                            hashes[e.stream_id][0].update(e.data)
                            hashes[e.stream_id][1] += len(e.data)
                        else:
                            bodies.setdefault(e.stream_id, bytearray()).extend(e.data)
                        withhold = ("withhold=1" in heads.get(e.stream_id, {}).get(":path", "")
                                    and not self.gate.is_set())
                        with self.lock:
                            self.body_received += len(e.data)
                            if withhold:
                                self.withheld += e.flow_controlled_length
                        if withhold:
                            withheld[e.stream_id] = withheld.get(e.stream_id, 0) + e.flow_controlled_length
                        else:
                            conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                    elif isinstance(e, h2.events.TrailersReceived) and e.stream_id in heads:
                        with self.lock:
                            self.request_trailers.append((heads[e.stream_id].get(":path"), dict(e.headers)))
                    elif isinstance(e, h2.events.StreamEnded) and e.stream_id in heads:
                        with self.lock:
                            self.requests.append((heads[e.stream_id], bytes(bodies.get(e.stream_id, b""))))
                        threading.Thread(target=answer, args=(e.stream_id,), daemon=True).start()
                    elif isinstance(e, h2.events.StreamReset):
                        open_streams.discard(e.stream_id)
                    if isinstance(e, (h2.events.WindowUpdated, h2.events.StreamReset, h2.events.RemoteSettingsChanged)):
                        window_moved.notify_all()
                send()
        with send_lock:
            closed[0] = True
            window_moved.notify_all()
        with self.lock:
            self._on_gate.remove(release_withheld)
        sock.close()

    def open_gate(self):
        """Answers `/held` and acknowledges what `?withhold=1` streams withheld (and goes on acknowledging)."""
        self.gate.set()
        with self.lock:
            releases = list(self._on_gate)
        for release in releases:
            # (On a thread of its own: an answer holding the connection's lock in a send does not hold up the test.)
            threading.Thread(target=release, daemon=True).start()

    def drop_connections(self):
        """Closes every connection it accepted (the listener stays)."""
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.conns = []

    def stop(self):
        self.stopped = True
        self.gate.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # (a close alone does not end an accept blocked in a thread)
        except OSError:
            pass
        self.sock.close()
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class GRPCUpstream:
    """A grpcio server (plaintext, or TLS with `tls` = (certificate chain file, key file)) with raw-bytes methods of every kind under `/test.Echo/`: Unary (echoes),
    ServerStream (the request three times), ClientStream (the requests joined), Bidi (each request back), Fail
    (NOT_FOUND "nope"), Slow (answers only once `release` is set); records the metadata it saw."""

    def __init__(self, tls=None):
        import grpc
        from concurrent import futures
        self.grpc = grpc
        self.metadata = []
        self.release = threading.Event()

        def record(context):
            self.metadata.append(dict(context.invocation_metadata()))

        def unary(request, context):
            record(context)
            return request

        def server_stream(request, context):
            record(context)
            for _ in range(3):
                yield request

        def client_stream(requests, context):
            record(context)
            return b"".join(requests)

        def bidi(requests, context):
            record(context)
            for r in requests:
                yield r

        def fail(request, context):
            record(context)
            context.abort(grpc.StatusCode.NOT_FOUND, "nope")

        def slow(request, context):
            # Answers only once released (at stop at the latest): a deadline always comes first.
            self.release.wait(60)
            return request

        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
            "Slow": grpc.unary_unary_rpc_method_handler(slow),
        }
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
        if tls:
            chain, key = (open(f, "rb").read() for f in tls)
            self.port = self.server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, chain)]))
        else:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self):
        self.release.set()
        self.server.stop(0)
