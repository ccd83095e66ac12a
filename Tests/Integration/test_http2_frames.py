"""HTTP/2 frame-level conformance of the h2c listener (issue 17), in the spirit of h2spec (not packaged here): the
MUST-level server behaviours of RFC 9113 and RFC 7541 (HPACK), each case sent as raw bytes on one socket
(hyperframe for well-formed frames, hand-packed bytes for malformed ones, hpack's encoder or hand-made bytes for
field blocks), never through h2's state machine, which refuses to send them. What Tern sends back is parsed with
hyperframe and hpack.

What a case expects, as RFC 9113 words it:
- a connection error (§5.4.1): GOAWAY with the error code, then the connection closes;
- a stream error (§5.4.2): RST_STREAM with the code on that stream, and the connection goes on serving (a new
  stream on it gets a 200). An endpoint MAY treat any stream error as a connection error (§5.4.1), as nghttp2 does
  for some: there a GOAWAY with the same code, then the close, passes too;
- ignored: the connection still answers a PING (its ACK echoing the payload) and serves a request.
No sleeps: every wait reads frames until the one expected (or the close), bounded by the socket's timeout.
A case where Tern deviates from the RFC is xfail(strict=True), its reason saying what Tern does instead.
"""
import socket
import struct

import hpack
import pytest
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame, PingFrame,
                              PriorityFrame, RstStreamFrame, SettingsFrame, WindowUpdateFrame)

from http_peers import HttpUpstream
from test_http_proxy import proxy

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Error codes (RFC 9113 §7) and frame types (§6).
NO_ERROR, PROTOCOL, INTERNAL, FLOW_CONTROL, SETTINGS_TIMEOUT, STREAM_CLOSED, FRAME_SIZE, REFUSED, CANCEL, \
    COMPRESSION = range(10)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIO = 0x4, 0x8, 0x20
ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE = 0x2, 0x3, 0x4, 0x5
MAX_WINDOW = 2**31 - 1
TIMEOUT = 5  # seconds a read may wait for Tern: the bound of every wait
AFTER = 1001  # the stream of the request that proves the connection serves on (above any a case uses)
REQ = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "svc")]


@pytest.fixture
def up():
    u = HttpUpstream()
    yield u
    u.stop()


def raw(ftype, flags, sid, payload=b""):
    """A frame as bytes, whatever its fields say (hyperframe will not build malformed frames)."""
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def settings(*pairs, flags=0, sid=0):
    """SETTINGS as bytes: pairs in order, repeats kept (hyperframe's dict would merge them)."""
    return raw(SETTINGS, flags, sid, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def literal(index, value):
    """HPACK: a literal field without indexing whose name is static entry `index` (< 15), value < 127 bytes."""
    return bytes([index, len(value)]) + value


# `GET /` as a field block of static entries and literals only (it leaves the dynamic table as it is).
STATIC_GET = b"\x82\x86\x84" + literal(1, b"svc")


class Silence(AssertionError):
    """Tern sent nothing more, and did not close, within TIMEOUT."""


class NotClosed(AssertionError):
    """The connection stayed open after a GOAWAY for an error."""


class H2Raw:
    """One client connection writing raw frames and reading Tern's, one at a time."""

    def __init__(self, port, initial=(), handshake=True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.enc, self.dec = hpack.Encoder(), hpack.Decoder()
        self.parts = {}  # field blocks still arriving, by stream
        self.seen = []  # every frame read, for the failure messages
        if handshake:
            # The preface and SETTINGS; Tern's first frame must be its SETTINGS (§3.4), which is acknowledged, and
            # then Tern's acknowledgement of ours is awaited (as h2spec does).
            self.send(PREFACE, settings(*initial))
            first = self.frame()
            assert isinstance(first, SettingsFrame) and "ACK" not in first.flags, f"first frame: {first}"
            self.server_settings = dict(first.settings)
            self.send(SettingsFrame(0, flags=["ACK"]))
            self.until(lambda f: isinstance(f, SettingsFrame) and "ACK" in f.flags, "the SETTINGS ACK")

    def send(self, *parts):
        self.sock.sendall(b"".join(p if isinstance(p, bytes) else p.serialize() for p in parts))

    def block(self, fields):
        return self.enc.encode(fields)

    def req(self, sid, fields=REQ, end=True, path=None):
        """HEADERS opening a request on `sid` (END_STREAM unless `end` is false), its fields through hpack."""
        if path is not None:
            fields = [(":path", path) if n == ":path" else (n, v) for n, v in fields]
        return raw(HEADERS, END_HEADERS | (END_STREAM if end else 0), sid, self.block(fields))

    def post(self, sid, path="/"):
        """A request with a body to follow: the stream stays open."""
        return self.req(sid, [(":method", "POST"), *REQ[1:]], end=False, path=path)

    def _recv(self, n):
        buf = b""
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except ConnectionResetError:
                chunk = b""
            except (socket.timeout, TimeoutError):
                raise Silence(f"nothing from Tern within {TIMEOUT}s; frames read: {self.seen}") from None
            if not chunk:
                return None
            buf += chunk
        return buf

    def frame(self):
        """The next frame Tern sent (field blocks decoded into `fields`), None once the connection closed."""
        head = self._recv(9)
        if head is None:
            return None
        f, n = Frame.parse_frame_header(memoryview(head))
        body = self._recv(n) if n else b""
        if body is None:
            return None
        f.parse_body(memoryview(body))
        if isinstance(f, (HeadersFrame, ContinuationFrame)):
            block = self.parts.pop(f.stream_id, b"") + f.data
            if "END_HEADERS" in f.flags:
                f.fields = dict(self.dec.decode(block))
            else:
                self.parts[f.stream_id] = block
        self.seen.append(f)
        return f

    def until(self, want, what):
        """Reads frames until one `want`s it; a close, or a GOAWAY not wanted, fails."""
        while True:
            f = self.frame()
            assert f is not None, f"closed while waiting for {what}; frames read: {self.seen}"
            if want(f):
                return f
            assert not isinstance(f, GoAwayFrame), f"GOAWAY while waiting for {what}: {f}; frames: {self.seen}"

    def closed(self):
        """Reads until the close (what comes after GOAWAY does not matter)."""
        try:
            while self.frame() is not None:
                pass
        except Silence as e:
            raise NotClosed(f"not closed after GOAWAY: {e}") from None

    def answer(self, sid):
        """The response head on `sid` (a reset of it fails)."""
        f = self.until(lambda f: f.stream_id == sid and isinstance(f, (HeadersFrame, RstStreamFrame)),
                       f"the answer on stream {sid}")
        assert isinstance(f, HeadersFrame), f"stream {sid} reset: {f}; frames: {self.seen}"
        return f.fields[":status"]

    def served(self):
        """The connection serves on: a new request gets a 200."""
        self.send(raw(HEADERS, END_HEADERS | END_STREAM, AFTER, STATIC_GET))
        assert self.answer(AFTER) == "200"


def conn_error(*codes):
    """RFC 9113 §5.4.1: GOAWAY with one of `codes`, then the close."""
    def check(c):
        g = c.until(lambda f: isinstance(f, GoAwayFrame), f"GOAWAY {codes}")
        assert g.error_code in codes, f"GOAWAY code {g.error_code}, RFC 9113 wants {codes}; frames: {c.seen}"
        c.closed()
    return check


def stream_error(sid, *codes):
    """RFC 9113 §5.4.2: RST_STREAM with one of `codes` on `sid`, and the connection serves on; or (§5.4.1, MAY)
    the same codes as a connection error."""
    def check(c):
        f = c.until(lambda f: isinstance(f, GoAwayFrame) or isinstance(f, RstStreamFrame) and f.stream_id == sid,
                    f"RST_STREAM {codes} on stream {sid}")
        assert f.error_code in codes, f"{f} has code {f.error_code}, RFC 9113 wants {codes}; frames: {c.seen}"
        if isinstance(f, GoAwayFrame):
            c.closed()
        else:
            c.served()
    return check


def ignored(c):
    """The connection goes on: a PING is echoed and a request served."""
    c.send(PingFrame(0, opaque_data=b"h2frames"))
    c.until(lambda f: isinstance(f, PingFrame) and "ACK" in f.flags and f.opaque_data == b"h2frames", "PING ACK")
    c.served()


def answered(sid):
    def check(c):
        assert c.answer(sid) == "200"
        ignored(c)
    return check


def deviation(reason, raises=AssertionError):
    """A case where Tern deviates from the RFC: it must fail, and with `raises` only."""
    return pytest.mark.xfail(strict=True, raises=raises, reason=reason)


def run(start_tern, up, backend, send, check, *args, **kw):
    t = proxy(start_tern, up, backend, *args)
    c = H2Raw(t.port, **kw)
    try:
        c.send(*send(c))
        check(c)
    finally:
        c.sock.close()


# --- Connection errors (§5.4.1): GOAWAY with the code, then the close -------------------------------------------

def interrupted(by):
    """A field block begun on stream 1 (HEADERS without END_HEADERS), then frame `by` before its CONTINUATION."""
    return lambda c: [raw(HEADERS, END_STREAM, 1, c.block(REQ)), by, ContinuationFrame(1, flags=["END_HEADERS"])]


CONNECTION_ERRORS = [
    # §4.2: a frame carrying a field block over SETTINGS_MAX_FRAME_SIZE (16,384) alters the connection's state.
    pytest.param(lambda c: [raw(HEADERS, END_HEADERS | END_STREAM, 1, c.enc.encode(REQ + [("x-big", "a" * 16_400)],
                                                                               huffman=False))],
                 FRAME_SIZE, id="HEADERS over max frame size"),
    # §6.1 DATA; §5.1 idle: any frame but HEADERS or PRIORITY on an idle stream.
    pytest.param(lambda c: [raw(DATA, 0, 0, b"x")], PROTOCOL, id="DATA on stream 0"),
    pytest.param(lambda c: [DataFrame(1, b"x")], PROTOCOL, id="DATA on an idle stream"),
    pytest.param(lambda c: [c.post(1), raw(DATA, PADDED, 1, b"\x03ab")], PROTOCOL,
                 id="DATA with padding as long as its payload"),
    # §6.2 HEADERS; §5.1.1 stream identifiers: odd from a client, increasing.
    pytest.param(lambda c: [c.req(0)], PROTOCOL, id="HEADERS on stream 0"),
    pytest.param(lambda c: [c.req(2)], PROTOCOL, id="HEADERS on an even stream"),
    pytest.param(lambda c: [c.req(5), c.req(3)], PROTOCOL, id="HEADERS on a decreasing stream id",
                 marks=deviation("nghttp2 1.52 ignores HEADERS on a stream below the last one opened (stream 3 after "
                                 "5; on purpose, see its session_on_request_headers_received): stream 5 is answered, "
                                 "stream 3 gets nothing, no GOAWAY, the connection stays open. RFC 9113 §5.1.1: a "
                                 "connection error of type PROTOCOL_ERROR.", raises=Silence)),
    pytest.param(lambda c: [raw(HEADERS, END_HEADERS | END_STREAM | PADDED, 1, b"\xff" + c.block(REQ))], PROTOCOL,
                 id="HEADERS with padding longer than its payload"),
    # §6.3 PRIORITY, §6.4 RST_STREAM.
    pytest.param(lambda c: [raw(PRIORITY, 0, 0, struct.pack(">IB", 1, 15))], PROTOCOL, id="PRIORITY on stream 0"),
    pytest.param(lambda c: [raw(RST_STREAM, 0, 0, struct.pack(">I", CANCEL))], PROTOCOL, id="RST_STREAM on stream 0"),
    pytest.param(lambda c: [RstStreamFrame(1, error_code=CANCEL)], PROTOCOL, id="RST_STREAM on an idle stream"),
    pytest.param(lambda c: [c.post(1), raw(RST_STREAM, 0, 1, b"\x00\x00\x08")], FRAME_SIZE,
                 id="RST_STREAM of length 3"),
    # §6.5 SETTINGS, §6.5.2 their values.
    pytest.param(lambda c: [settings((MAX_CONCURRENT_STREAMS, 10), flags=ACK)], FRAME_SIZE,
                 id="SETTINGS ACK with a payload"),
    pytest.param(lambda c: [settings(sid=1)], PROTOCOL, id="SETTINGS on stream 1"),
    pytest.param(lambda c: [raw(SETTINGS, 0, 0, b"\x00\x03\x00")], FRAME_SIZE, id="SETTINGS of length 3"),
    pytest.param(lambda c: [settings((ENABLE_PUSH, 2))], PROTOCOL, id="SETTINGS_ENABLE_PUSH 2"),
    pytest.param(lambda c: [settings((INITIAL_WINDOW_SIZE, 2**31))], FLOW_CONTROL,
                 id="SETTINGS_INITIAL_WINDOW_SIZE 2^31"),
    pytest.param(lambda c: [settings((MAX_FRAME_SIZE, 16_383))], PROTOCOL, id="SETTINGS_MAX_FRAME_SIZE 16383"),
    pytest.param(lambda c: [settings((MAX_FRAME_SIZE, 2**24))], PROTOCOL, id="SETTINGS_MAX_FRAME_SIZE 2^24"),
    # §8.4: a client cannot push.
    pytest.param(lambda c: [c.post(1), raw(PUSH_PROMISE, END_HEADERS, 1, struct.pack(">I", 2) + c.block(REQ))],
                 PROTOCOL, id="PUSH_PROMISE from the client"),
    # §6.7 PING, §6.8 GOAWAY.
    pytest.param(lambda c: [raw(PING, 0, 1, b"12345678")], PROTOCOL, id="PING on stream 1"),
    pytest.param(lambda c: [raw(PING, 0, 0, b"123456")], FRAME_SIZE, id="PING of length 6"),
    pytest.param(lambda c: [raw(GOAWAY, 0, 1, struct.pack(">II", 0, 0))], PROTOCOL, id="GOAWAY on stream 1"),
    # §6.9 WINDOW_UPDATE; §6.9.1: a window over 2^31-1 (the first increment fills it exactly, and is legal).
    pytest.param(lambda c: [raw(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0))], PROTOCOL,
                 id="WINDOW_UPDATE of 0 on the connection"),
    pytest.param(lambda c: [raw(WINDOW_UPDATE, 0, 0, b"\x00\x00\x01")], FRAME_SIZE, id="WINDOW_UPDATE of length 3"),
    pytest.param(lambda c: [WindowUpdateFrame(1, window_increment=1)], PROTOCOL, id="WINDOW_UPDATE on an idle stream"),
    pytest.param(lambda c: [WindowUpdateFrame(0, window_increment=MAX_WINDOW - 65_535),
                            WindowUpdateFrame(0, window_increment=1)], FLOW_CONTROL,
                 id="WINDOW_UPDATE over 2^31-1 on the connection"),
    # §6.9.2: a change of SETTINGS_INITIAL_WINDOW_SIZE taking an open stream's window over 2^31-1.
    pytest.param(lambda c: [c.req(1, path="/hold/w"), WindowUpdateFrame(1, window_increment=MAX_WINDOW - 65_535),
                            settings((INITIAL_WINDOW_SIZE, 65_536))], FLOW_CONTROL,
                 id="SETTINGS_INITIAL_WINDOW_SIZE taking a stream window over 2^31-1",
                 marks=deviation("Tern (nghttp2) resets only the stream (RST_STREAM FLOW_CONTROL_ERROR on stream 1) "
                                 "and keeps the connection, no GOAWAY. RFC 9113 §6.9.2: a change of "
                                 "SETTINGS_INITIAL_WINDOW_SIZE taking any window over 2^31-1 MUST be a connection "
                                 "error of type FLOW_CONTROL_ERROR.", raises=Silence)),
    # §6.10 CONTINUATION: only right after HEADERS, PUSH_PROMISE or CONTINUATION without END_HEADERS, same stream.
    pytest.param(lambda c: [ContinuationFrame(1, c.block(REQ), flags=["END_HEADERS"])], PROTOCOL,
                 id="CONTINUATION without HEADERS"),
    pytest.param(lambda c: [c.req(1), ContinuationFrame(1, flags=["END_HEADERS"])], PROTOCOL,
                 id="CONTINUATION after END_HEADERS"),
    pytest.param(lambda c: [raw(HEADERS, END_STREAM, 1, c.block(REQ[:2])),
                            ContinuationFrame(1, c.block(REQ[2:]), flags=["END_HEADERS"]),
                            ContinuationFrame(1, flags=["END_HEADERS"])], PROTOCOL,
                 id="CONTINUATION after a CONTINUATION with END_HEADERS"),
    pytest.param(lambda c: [c.post(1), DataFrame(1, b"x"), ContinuationFrame(1, flags=["END_HEADERS"])], PROTOCOL,
                 id="CONTINUATION after DATA"),
    pytest.param(interrupted(raw(CONTINUATION, END_HEADERS, 0)), PROTOCOL, id="CONTINUATION on stream 0 in a block"),
    pytest.param(interrupted(raw(CONTINUATION, END_HEADERS, 3)), PROTOCOL,
                 id="CONTINUATION of another stream in a block"),
    # §6.2, §5.5: nothing else may come between HEADERS and the CONTINUATION that ends its block, not even an
    # unknown frame type.
    pytest.param(interrupted(DataFrame(1, b"x")), PROTOCOL, id="DATA in a field block"),
    pytest.param(interrupted(PriorityFrame(1, depends_on=0, stream_weight=15)), PROTOCOL,
                 id="PRIORITY in a field block"),
    pytest.param(interrupted(raw(HEADERS, END_HEADERS | END_STREAM, 3, STATIC_GET)), PROTOCOL,
                 id="HEADERS of another stream in a field block"),
    pytest.param(interrupted(PingFrame(0, opaque_data=b"12345678")), PROTOCOL, id="PING in a field block"),
    pytest.param(interrupted(raw(0xFA, 0, 0, b"ext")), PROTOCOL, id="an unknown frame type in a field block"),
]


@pytest.mark.parametrize("send, code", CONNECTION_ERRORS)
def test_connection_errors(start_tern, up, backend, send, code):
    run(start_tern, up, backend, send, conn_error(code))


# --- Stream errors (§5.4.2): RST_STREAM with the code, the connection serves on --------------------------------

STREAM_ERRORS = [
    # §4.2: DATA over SETTINGS_MAX_FRAME_SIZE (16,384; checked in the test).
    pytest.param(lambda c: [c.post(1), DataFrame(1, b"x" * 16_385)], 1, [FRAME_SIZE], id="DATA over max frame size"),
    # §5.1 half-closed (remote): frames other than WINDOW_UPDATE, PRIORITY, RST_STREAM (the answer is held).
    pytest.param(lambda c: [c.req(1, path="/hold/d"), DataFrame(1, b"x")], 1, [STREAM_CLOSED],
                 id="DATA on a half-closed stream"),
    pytest.param(lambda c: [c.req(1, path="/hold/h"), c.req(1, [("x-trailer", "1")])], 1, [STREAM_CLOSED],
                 id="HEADERS on a half-closed stream"),
    # §5.1 closed: any frame but PRIORITY after the RST_STREAM that closed it.
    pytest.param(lambda c: [c.post(1), RstStreamFrame(1, error_code=CANCEL), DataFrame(1, b"x")], 1,
                 [STREAM_CLOSED], id="DATA after RST_STREAM"),
    # §5.3.1: a stream cannot depend on itself.
    pytest.param(lambda c: [raw(HEADERS, END_HEADERS | END_STREAM | PRIO, 1, struct.pack(">IB", 1, 15)
                                + c.block(REQ))], 1, [PROTOCOL], id="HEADERS depending on itself"),
    pytest.param(lambda c: [raw(PRIORITY, 0, 1, struct.pack(">IB", 1, 15))], 1, [PROTOCOL],
                 id="PRIORITY depending on itself"),
    # §6.3: a PRIORITY frame of a length other than 5.
    pytest.param(lambda c: [c.post(1), raw(PRIORITY, 0, 1, struct.pack(">I", 0))], 1, [FRAME_SIZE],
                 id="PRIORITY of length 4"),
    # §6.9: an increment of 0 on a stream; §6.9.1: a stream window over 2^31-1 (filled exactly first: legal).
    pytest.param(lambda c: [c.post(1), raw(WINDOW_UPDATE, 0, 1, struct.pack(">I", 0))], 1, [PROTOCOL],
                 id="WINDOW_UPDATE of 0 on a stream"),
    pytest.param(lambda c: [c.req(1, path="/hold/o"), WindowUpdateFrame(1, window_increment=MAX_WINDOW - 65_535),
                            WindowUpdateFrame(1, window_increment=1)], 1, [FLOW_CONTROL],
                 id="WINDOW_UPDATE over 2^31-1 on a stream"),
    # §5.1.2: one stream over SETTINGS_MAX_CONCURRENT_STREAMS (3 here: streams 1, 3 and 5 are open); then the
    # client ends stream 1, so that the request proving the connection serves on fits.
    pytest.param(lambda c: [c.post(1), c.post(3), c.post(5), c.post(7), RstStreamFrame(1, error_code=CANCEL)], 7,
                 [PROTOCOL, REFUSED],
                 id="a stream over SETTINGS_MAX_CONCURRENT_STREAMS"),
]


@pytest.mark.parametrize("send, sid, codes", STREAM_ERRORS)
def test_stream_errors(start_tern, up, backend, send, sid, codes):
    def check(c):
        assert c.server_settings.get(MAX_FRAME_SIZE, 16_384) == 16_384
        assert c.server_settings.get(MAX_CONCURRENT_STREAMS) == 3
        stream_error(sid, *codes)(c)
    run(start_tern, up, backend, send, check, "--http2-max-concurrent-streams", "3")


# --- Malformed requests (§8.1.1): a stream error of type PROTOCOL_ERROR ----------------------------------------

def with_fields(*extra, drop=(), replace=()):
    """REQ without the pseudo-header fields named in `drop`, with `replace`d ones, and `extra` fields appended."""
    fields = [(n, dict(replace).get(n, v)) for n, v in REQ if n not in drop]
    return lambda c: [c.req(1, fields + list(extra))]


MALFORMED = [
    # §8.2: field names in lower case; §8.2.1: no SP, no colon in a regular name; no CR, LF, NUL in a value, and
    # no whitespace at its start or end.
    pytest.param(with_fields(("X-Upper", "1")), id="an uppercase field name"),
    pytest.param(with_fields(("x a", "1")), id="a space in a field name"),
    pytest.param(with_fields(("x:a", "1")), id="a colon in a field name"),
    pytest.param(with_fields(("x-a", "a\r\nx-b: c")), id="CR LF in a field value"),
    pytest.param(with_fields(("x-a", "a\x00b")), id="NUL in a field value"),
    pytest.param(with_fields(("x-a", " a")), id="a field value starting with a space"),
    pytest.param(with_fields(("x-a", "a\t")), id="a field value ending with a tab"),
    # §8.3: pseudo-header fields: only those defined for requests, before the regular fields, once each; :method,
    # :scheme and a non-empty :path present (not CONNECT).
    pytest.param(lambda c: [c.req(1, REQ[:3] + [("x-a", "1"), REQ[3]])], id="a pseudo-header after a regular field"),
    pytest.param(with_fields((":foo", "bar")), id="an unknown pseudo-header"),
    pytest.param(with_fields((":status", "200")), id="the response pseudo-header :status"),
    pytest.param(with_fields(drop=[":method"]), id=":method missing"),
    pytest.param(with_fields(drop=[":scheme"]), id=":scheme missing"),
    pytest.param(with_fields(drop=[":path"]), id=":path missing"),
    pytest.param(with_fields(replace=[(":path", "")]), id=":path empty"),
    pytest.param(lambda c: [c.req(1, REQ[:1] + REQ)], id=":method twice"),
    pytest.param(lambda c: [c.req(1, REQ[:2] + REQ[1:])], id=":scheme twice"),
    pytest.param(lambda c: [c.req(1, REQ[:3] + REQ[2:])], id=":path twice"),
    pytest.param(lambda c: [c.post(1), c.req(1, [(":method", "POST")])], id="a pseudo-header in trailers"),
    # §8.1: a HEADERS frame without END_STREAM after the one opening the request.
    pytest.param(lambda c: [c.post(1), c.req(1, [("x-trailer", "1")], end=False)], id="trailers without END_STREAM"),
    # §8.2.2: connection-specific fields; TE only with "trailers".
    pytest.param(with_fields(("connection", "keep-alive")), id="connection"),
    pytest.param(with_fields(("keep-alive", "timeout=5")), id="keep-alive"),
    pytest.param(with_fields(("proxy-connection", "keep-alive")), id="proxy-connection"),
    pytest.param(with_fields(("transfer-encoding", "chunked")), id="transfer-encoding"),
    pytest.param(with_fields(("upgrade", "h2c")), id="upgrade"),
    pytest.param(with_fields(("te", "gzip")), id="te gzip"),
    # §8.1.1: content-length not the sum of the DATA payloads (short at the end; exceeded over two frames).
    pytest.param(lambda c: [c.req(1, [(":method", "POST"), *REQ[1:], ("content-length", "5")], end=False),
                            DataFrame(1, b"abc", flags=["END_STREAM"])], id="content-length above the DATA"),
    pytest.param(lambda c: [c.req(1, [(":method", "POST"), *REQ[1:], ("content-length", "3")], end=False),
                            DataFrame(1, b"ab"), DataFrame(1, b"cd", flags=["END_STREAM"])],
                 id="content-length below the DATA"),
]


@pytest.mark.parametrize("send", MALFORMED)
def test_malformed_requests_are_stream_errors(start_tern, up, backend, send):
    run(start_tern, up, backend, send, stream_error(1, PROTOCOL))


# --- HPACK (RFC 7541; RFC 9113 §4.3): a decoding error is a connection error of type COMPRESSION_ERROR ----------

def field_block(block):
    return lambda c: [raw(HEADERS, END_HEADERS | END_STREAM, 1, block)]


HUFFMAN_FIELD = b"\x00\x03x-h"  # a literal field named x-h (not indexed), its value next
HPACK_ERRORS = [
    pytest.param(field_block(STATIC_GET + b"\xbe"), id="index 62 with an empty dynamic table"),  # §2.3.3
    pytest.param(field_block(STATIC_GET + b"\x0f\x2f\x01a"), id="a literal naming index 62"),  # §2.3.3
    pytest.param(field_block(STATIC_GET + b"\x80"), id="index 0"),  # §6.1
    # §4.2, §6.3: a table size update above SETTINGS_HEADER_TABLE_SIZE (4,096): to 4,097.
    pytest.param(field_block(b"\x3f\xe2\x1f" + STATIC_GET), id="a table size update over the limit"),
    # §4.2: an update only at the start of a block.
    pytest.param(field_block(STATIC_GET + b"\x20"), id="a table size update after a field"),
    # §5.2: padding of more than 7 bits; padding not the most significant bits of EOS; EOS in the string.
    pytest.param(field_block(STATIC_GET + HUFFMAN_FIELD + b"\x82\x1f\xff"), id="Huffman padding over 7 bits"),
    pytest.param(field_block(STATIC_GET + HUFFMAN_FIELD + b"\x81\x18"), id="Huffman padding of zeros"),
    pytest.param(field_block(STATIC_GET + HUFFMAN_FIELD + b"\x84\xff\xff\xff\xff"), id="Huffman EOS in a string"),
    # §5.1, §6.2: a block ending inside a representation; an integer past any index.
    pytest.param(field_block(STATIC_GET + b"\x00\x05"), id="a block cut inside a literal"),
    pytest.param(field_block(STATIC_GET + b"\xff" + b"\xff" * 10 + b"\x01"), id="an integer overflowing"),
]


@pytest.mark.parametrize("send", HPACK_ERRORS)
def test_hpack_decoding_errors_are_compression_errors(start_tern, up, backend, send):
    run(start_tern, up, backend, send, conn_error(COMPRESSION))


# --- What must be ignored or answered, and the connection goes on ---------------------------------------------

def ping_acked(payload):
    """The first PING frame back is the ACK of `payload` (an ACK from the client is not answered, §6.7)."""
    def check(c):
        f = c.until(lambda f: isinstance(f, PingFrame), "PING ACK")
        assert "ACK" in f.flags and f.opaque_data == payload, f
        ignored(c)
    return check


def settings_acked(c):
    c.until(lambda f: isinstance(f, SettingsFrame) and "ACK" in f.flags, "SETTINGS ACK")
    ignored(c)


def after_answer(*frames):
    """`frames` on stream 1 once its exchange is over (its END_STREAM came both ways)."""
    def send(c):
        c.send(c.req(1))
        c.until(lambda f: f.stream_id == 1 and "END_STREAM" in f.flags, "the end of stream 1")
        return frames
    return send


ACCEPTED = [
    # §4.1: unknown flags and the reserved bit are ignored; §5.5: so are unknown frame types.
    pytest.param(lambda c: [raw(0xFA, 0xFF, 0, b"extension"), raw(0xFA, 0, 1, b"")], ignored, id="unknown frame types"),
    pytest.param(lambda c: [raw(PING, 0xFE, 0, b"unflaged")], ping_acked(b"unflaged"), id="unknown flags on PING"),
    pytest.param(lambda c: [raw(PING, 0, 1 << 31, b"reserved")], ping_acked(b"reserved"),
                 id="the reserved bit of the stream id"),
    # §6.7: PING is answered with the same payload; a PING ACK is not.
    pytest.param(lambda c: [PingFrame(0, opaque_data=b"abcdefgh")], ping_acked(b"abcdefgh"), id="PING echoed"),
    pytest.param(lambda c: [PingFrame(0, opaque_data=b"unasked!", flags=["ACK"]), PingFrame(0, opaque_data=b"asked!!!")],
                 ping_acked(b"asked!!!"), id="PING ACK not answered"),
    # §6.5.3: SETTINGS are acknowledged; §6.5.2: unknown settings ignored.
    pytest.param(lambda c: [settings((MAX_CONCURRENT_STREAMS, 10))], settings_acked, id="SETTINGS acknowledged"),
    pytest.param(lambda c: [settings((0xFF, 1), (0x7777, 0xFFFFFFFF))], settings_acked, id="unknown SETTINGS"),
    # §5.1: PRIORITY on an idle stream; §5.1 closed: WINDOW_UPDATE and RST_STREAM just after the exchange ended.
    pytest.param(lambda c: [PriorityFrame(9, depends_on=0, stream_weight=15)], ignored, id="PRIORITY on an idle stream"),
    pytest.param(after_answer(WindowUpdateFrame(1, window_increment=1)), ignored, id="WINDOW_UPDATE on a closed stream"),
    pytest.param(after_answer(RstStreamFrame(1, error_code=CANCEL)), ignored, id="RST_STREAM on a closed stream"),
    # §6.10: a field block over HEADERS and CONTINUATIONs; §4.2: DATA of exactly SETTINGS_MAX_FRAME_SIZE.
    pytest.param(lambda c: [raw(HEADERS, END_STREAM, 1, STATIC_GET[:1]), ContinuationFrame(1, STATIC_GET[1:3]),
                            ContinuationFrame(1, STATIC_GET[3:], flags=["END_HEADERS"])], answered(1),
                 id="HEADERS and CONTINUATIONs"),
    pytest.param(lambda c: [c.post(1, "/sha256"), DataFrame(1, b"x" * 16_384, flags=["END_STREAM"])], answered(1),
                 id="DATA of max frame size"),
    # §8.2.2: TE with "trailers" is allowed.
    pytest.param(lambda c: [c.req(1, REQ + [("te", "trailers")])], answered(1), id="te trailers"),
]


@pytest.mark.parametrize("send, check", ACCEPTED)
def test_accepted(start_tern, up, backend, send, check):
    run(start_tern, up, backend, send, check)


# --- The connection preface (§3.4) ------------------------------------------------------------------------------

def test_the_server_preface_is_settings_and_a_first_frame_other_than_settings_is_a_connection_error(
        start_tern, up, backend):
    # (Every other case checks that Tern's first frame is SETTINGS, in H2Raw's handshake.)
    run(start_tern, up, backend, lambda c: [PREFACE, PingFrame(0, opaque_data=b"12345678")], conn_error(PROTOCOL),
        handshake=False)


def test_an_invalid_preface_after_a_valid_beginning_is_a_connection_error(start_tern, up, backend):
    """§3.4: an invalid preface is a connection error of type PROTOCOL_ERROR, whose GOAWAY MAY be left out. The
    preface's first 16 bytes make the connection HTTP/2 (Tern's SETTINGS come); then a wrong rest: the close, with
    nothing more than Tern's own preface frames and at most a GOAWAY PROTOCOL_ERROR."""
    t = proxy(start_tern, up, backend)
    c = H2Raw(t.port, handshake=False)
    try:
        c.send(PREFACE[:16])
        c.until(lambda f: isinstance(f, SettingsFrame), "Tern's SETTINGS")
        c.send(b"\r\nXX\r\n\r\n", settings())
        c.closed()
        assert all(isinstance(f, (SettingsFrame, WindowUpdateFrame)) and f.stream_id == 0 or
                   isinstance(f, GoAwayFrame) and f.error_code == PROTOCOL for f in c.seen), c.seen
    finally:
        c.sock.close()


def test_an_invalid_preface_in_one_write_is_answered_as_http11_and_closed(start_tern, up, backend):
    """The listener serves HTTP/1.1 too: bytes that never were an HTTP/2 preface are an HTTP/1.1 request line
    (`PRI * HTTP/2.0`), answered with an error status and `connection: close`, then the close."""
    t = proxy(start_tern, up, backend)
    with socket.create_connection(("127.0.0.1", t.port), timeout=TIMEOUT) as s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + settings())
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    assert got.startswith(b"HTTP/1.1 ") and int(got.split()[1]) >= 400 and b"connection: close" in got.lower(), got


# --- Flow control (§6.9.1, §6.9.2) ------------------------------------------------------------------------------

def first_data(c, sid):
    return c.until(lambda f: isinstance(f, DataFrame) and f.stream_id == sid and f.data, f"DATA on stream {sid}")


@pytest.mark.parametrize("initial", [[(INITIAL_WINDOW_SIZE, 1)], [(INITIAL_WINDOW_SIZE, 100), (INITIAL_WINDOW_SIZE, 1)]],
                         ids=["1", "100 then 1 in one frame"])
def test_a_stream_window_of_one_byte_gets_one_byte(start_tern, up, backend, initial):
    """§6.9.2 and §6.5.3 (of two values in one SETTINGS frame the last counts): DATA of 1 byte, the window's."""
    def check(c):
        assert len(first_data(c, 1).data) == 1
        ignored(c)
    run(start_tern, up, backend, lambda c: [c.req(1, path="/bytes/100")], check, initial=initial)


def test_a_change_of_the_initial_window_applies_to_open_streams(start_tern, up, backend):
    """§6.9.2: a window of 0, the answer's head sent; SETTINGS_INITIAL_WINDOW_SIZE 1 opens 1 byte on that stream."""
    def check(c):
        assert c.answer(1) == "200"
        c.send(settings((INITIAL_WINDOW_SIZE, 1)))
        assert len(first_data(c, 1).data) == 1
        ignored(c)
    run(start_tern, up, backend, lambda c: [c.req(1, path="/bytes/100")], check, initial=[(INITIAL_WINDOW_SIZE, 0)])


def test_a_window_made_negative_by_settings_is_honoured(start_tern, up, backend):
    """§6.9.2: 3 bytes sent of a window of 3; SETTINGS_INITIAL_WINDOW_SIZE 2 makes it -1; a WINDOW_UPDATE of 2
    then allows exactly 1 byte."""
    def check(c):
        got = 0
        while got < 3:
            got += len(first_data(c, 1).data)
        assert got == 3
        c.send(settings((INITIAL_WINDOW_SIZE, 2)), WindowUpdateFrame(1, window_increment=2))
        assert len(first_data(c, 1).data) == 1
        ignored(c)
    run(start_tern, up, backend, lambda c: [c.req(1, path="/bytes/100")], check, initial=[(INITIAL_WINDOW_SIZE, 3)])
