"""tern-load (issue 5) end to end: the real binary (TERN_LOAD_BIN, default .build/debug/tern-load) against
in-test HTTP/1.1 servers whose latency is known. Every run is bounded (a few seconds at most). The `backend`
fixture (conftest.py) runs a test on io_uring and on epoll."""
import asyncio
import base64
import json
import os
import signal
import socket
import struct
import subprocess
import time
import xml.etree.ElementTree as ET
import zlib

import pytest

from conftest import ROOT
from peers import Upstream, dead_port


def tern_load_bin():
    return os.environ.get("TERN_LOAD_BIN", os.path.join(ROOT, ".build", "debug", "tern-load"))


def run_load(*args, timeout=30):
    """Runs tern-load to completion; returns (exit code, stdout, stderr)."""
    p = subprocess.run([tern_load_bin(), *args], capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def run_json(*args, timeout=30):
    code, out, err = run_load("--json", *args, timeout=timeout)
    assert code == 0, err
    return json.loads(out)  # exactly one document: json.loads refuses anything after it


class HTTPServer(Upstream):
    """An HTTP/1.1 server on loopback answering every request after `delay` seconds with `status` and a body of
    `body` bytes (Content-Length, or chunked). A stall, once set with `stall(after, length)`, holds every
    response due in [first request + after, first request + after + length) until the stall ends."""

    def __init__(self, delay=0.0, status=200, body=b"hello", chunked=False, close=False, behaviour=None):
        self.delay = delay
        self.status = status
        self.body = body
        self.chunked = chunked
        self.close_after = close
        self.first = None
        self.stall_window = None
        self.requests = 0
        super().__init__(behaviour or HTTPServer.serve)

    def url(self, path="/"):
        return f"http://127.0.0.1:{self.port}{path}"

    def stall(self, after, length):
        self.stall_window = (after, length)

    def response(self):
        reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}.get(self.status, "X")
        head = f"HTTP/1.1 {self.status} {reason}\r\n"
        if self.close_after:
            head += "Connection: close\r\n"
        if self.chunked:
            half = len(self.body) // 2
            parts = [self.body[:half], self.body[half:]]
            payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts if p) + b"0\r\n\r\n"
            return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + payload
        return (head + f"Content-Length: {len(self.body)}\r\n\r\n").encode() + self.body

    @staticmethod
    async def read_request(reader):
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        if length:
            await reader.readexactly(length)
        return head

    @staticmethod
    async def serve(reader, writer, up):
        while True:
            try:
                await HTTPServer.read_request(reader)
            except asyncio.IncompleteReadError:
                return
            now = time.monotonic()
            if up.first is None:
                up.first = now
            up.requests += 1
            if up.stall_window:
                begin = up.first + up.stall_window[0]
                end = begin + up.stall_window[1]
                if begin <= now < end:
                    await asyncio.sleep(end - now)
            if up.delay:
                await asyncio.sleep(up.delay)
            writer.write(up.response())
            await writer.drain()
            if up.close_after:
                return


@pytest.fixture
def server():
    started = []

    def start(**kw):
        s = HTTPServer(**kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


PERCENTILES = ["p50", "p75", "p90", "p99", "p99_9", "p99_99", "max"]


def test_fixed_delay_gives_that_latency_at_every_percentile(server, backend):
    s = server(delay=0.010)
    doc = run_json("--io-backend", backend, "--connections", "2", "--duration", "1500ms", s.url())
    assert doc["requests"] > 100
    lat = doc["latency_us"]
    # Never below the delay (within the histogram's 0.1%), and the loopback and asyncio add little above it.
    assert lat["p50"] >= 10_000 * 0.999
    assert lat["p50"] <= 10_000 + 4_000, lat
    assert lat["p90"] <= 10_000 + 8_000, lat
    # Closed loop: nothing is scheduled, so corrected and uncorrected agree.
    assert doc["latency_uncorrected_us"] == lat
    assert doc["target_rate"] is None
    assert doc["errors"] == {"connect": 0, "timeout": 0, "reset": 0, "status_4xx": 0, "status_5xx": 0}


def test_a_one_second_stall_shows_in_the_open_loop_tail_not_in_the_closed_loop_uncorrected(server):
    # Closed loop, one connection: the stalled request is one sample among about a thousand.
    s = server(delay=0.002)
    s.stall(after=0.8, length=1.0)
    closed = run_json("--connections", "1", "--duration", "3s", s.url())
    assert closed["latency_uncorrected_us"]["max"] >= 900_000
    assert closed["latency_uncorrected_us"]["p99"] < 100_000, closed
    # Open loop at 200 req/s on one connection: the 200 requests due during the stall each count their wait,
    # and so do those queued behind them, a third of the run: the tail is the stall.
    s2 = server(delay=0.002)
    s2.stall(after=0.8, length=1.0)
    opened = run_json("--connections", "1", "--rate", "200", "--duration", "3s", s2.url())
    lat = opened["latency_us"]
    assert opened["target_rate"] == 200
    assert lat["p90"] >= 500_000, lat
    assert lat["max"] >= 900_000
    # Measured from when each request actually left, the same run hides the stall below the maximum.
    assert opened["latency_uncorrected_us"]["p90"] < 100_000, opened


def test_achieved_rate_is_close_to_the_target(server, backend):
    s = server()
    doc = run_json("--io-backend", backend, "--connections", "8", "--rate", "400", "--duration", "2s", s.url())
    assert abs(doc["requests_per_second"] - 400) <= 40, doc
    assert doc["requests"] >= 720


def sched_yield_calls(tmp_path, name, *args):
    """Runs tern-load under strace, counting its sched_yield calls; returns (that count, the run's JSON).
    --seccomp-bpf stops the process at sched_yield only: every other system call runs untraced, so the loop's
    timing is disturbed as little as strace allows."""
    summary = tmp_path / f"{name}.strace"
    p = subprocess.run(["strace", "-f", "--seccomp-bpf", "-c", "-e", "trace=sched_yield", "-o", str(summary),
                        tern_load_bin(), "--json", *args], capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr.decode()
    doc = json.loads(p.stdout)
    for line in summary.read_text().splitlines():
        fields = line.split()
        if fields and fields[-1] == "sched_yield":
            return int(fields[3]), doc
    return 0, doc


def test_open_loop_polling_gives_way_to_other_threads(server, backend, tmp_path):
    # The last 100 µs before each due send are polled; every poll that finds nothing yields the CPU (SendWait),
    # so a server on the same CPU is not held up by the poll loop (it was: 610-980 µs p50 instead of 53 µs at
    # 16,000 req/s). Closed loop never polls, so never yields.
    #
    # How many sends are polled for depends on the machine: a loop woken later than 100 µs before its send
    # skips the poll, and on a busy machine epoll did that for most of them (164 yields for 2,000 sends, where
    # an idle one gives over 1,000). So no count is asserted. The closed-loop run of the same binary on the
    # same machine is the control: the sched_yield calls tern-load makes when it never polls (exactly 0). The
    # open loop must yield more than that, i.e. at all. Without the yield in LoadClient it yields 0 and fails.
    s = server()
    closed, doc = sched_yield_calls(tmp_path, "closed", "--io-backend", backend, "--connections", "4", "--duration", "1s", s.url())
    assert doc["target_rate"] is None and doc["requests"] > 0, doc
    assert closed == 0, closed
    opened, doc = sched_yield_calls(tmp_path, "open", "--io-backend", backend, "--connections", "4", "--rate", "2000",
                                    "--duration", "1s", s.url())
    assert doc["target_rate"] == 2000 and doc["requests"] > 0, doc
    assert opened > closed, (opened, closed)


def test_refused_connections_count_as_connect_errors():
    doc = run_json("--connections", "2", "--duration", "500ms", f"http://127.0.0.1:{dead_port()}/")
    assert doc["requests"] == 0
    assert doc["errors"]["connect"] > 0
    assert doc["errors"]["reset"] == doc["errors"]["timeout"] == 0


def test_resets_count_as_resets(server):
    async def reset(reader, writer, up):
        await HTTPServer.read_request(reader)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    s = server(behaviour=reset)
    doc = run_json("--connections", "2", "--duration", "500ms", s.url())
    assert doc["errors"]["reset"] > 0
    assert doc["requests"] == 0
    assert doc["errors"]["timeout"] == 0


def test_unanswered_requests_count_as_timeouts(server):
    async def silent(reader, writer, up):
        await HTTPServer.read_request(reader)
        await reader.read()  # never answers

    s = server(behaviour=silent)
    doc = run_json("--connections", "2", "--duration", "1s", "--timeout", "200ms", s.url())
    assert doc["errors"]["timeout"] >= 4
    assert doc["requests"] == 0
    assert doc["errors"]["reset"] == 0


@pytest.mark.parametrize("status,kind", [(404, "status_4xx"), (503, "status_5xx")])
def test_error_statuses_are_counted_by_class(server, status, kind):
    s = server(status=status)
    doc = run_json("--connections", "2", "--requests", "50", s.url())
    assert doc["requests"] == 50
    assert doc["errors"][kind] == 50


def test_chunked_and_close_delimited_responses_are_framed(server, backend):
    chunked = server(chunked=True, body=b"x" * 3000)
    doc = run_json("--io-backend", backend, "--connections", "2", "--requests", "200", chunked.url())
    assert doc["requests"] == 200 and sum(doc["errors"].values()) == 0, doc
    closing = server(close=True)
    doc = run_json("--io-backend", backend, "--connections", "2", "--requests", "100", closing.url())
    assert doc["requests"] == 100 and sum(doc["errors"].values()) == 0, doc
    assert closing.connections >= 100


def test_request_count_method_headers_and_body_are_sent(server):
    seen = []

    async def recording(reader, writer, up):
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
                body = await reader.readexactly(int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0]))
            except (asyncio.IncompleteReadError, IndexError):
                return
            seen.append((head, body))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()

    s = server(behaviour=recording)
    doc = run_json("--connections", "3", "--requests", "30", "--method", "POST", "--header", "X-Test: yes",
                   "--body", "payload", s.url("/p?q=1"))
    assert doc["requests"] == 30 and len(seen) == 30
    head, body = seen[0]
    assert head.startswith(b"POST /p?q=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{s.port}\r\n".encode() in head and b"X-Test: yes\r\n" in head
    assert body == b"payload"
    assert doc["bytes_sent"] == 30 * (len(head) + len(body))


def test_json_has_the_documented_fields(server):
    s = server()
    doc = run_json("--connections", "2", "--rate", "100", "--duration", "500ms", "--warmup", "200ms", s.url())
    assert set(doc) == {"requests", "duration_s", "requests_per_second", "target_rate", "latency_us",
                        "latency_uncorrected_us", "errors", "bytes_sent", "bytes_received"}
    assert set(doc["latency_us"]) == set(PERCENTILES) == set(doc["latency_uncorrected_us"])
    assert set(doc["errors"]) == {"connect", "timeout", "reset", "status_4xx", "status_5xx"}
    assert doc["duration_s"] == 0.5
    # The warm-up is not measured: 100 req/s for 0.5 s.
    assert 45 <= doc["requests"] <= 55, doc
    assert doc["bytes_received"] > 0 and doc["bytes_sent"] > 0
    assert all(isinstance(doc["latency_us"][k], int) for k in PERCENTILES)


def test_compare_reports_the_added_latency(server, tmp_path):
    a = server(delay=0.002)
    b = server(delay=0.007)
    svg = tmp_path / "compare.svg"
    doc = run_json("--connections", "2", "--duration", "2s", "--plot", str(svg), "--compare", a.url(), b.url())
    assert set(doc) == {"a", "b", "added_latency_us"}
    assert set(doc["added_latency_us"]) == set(PERCENTILES)
    assert doc["a"]["requests"] > 50 and doc["b"]["requests"] > 50
    assert 3_000 <= doc["added_latency_us"]["p50"] <= 8_000, doc
    # Interleaved in slices: each target had about half the time.
    assert abs(doc["a"]["duration_s"] - 1.0) <= 0.13 and abs(doc["b"]["duration_s"] - 1.0) <= 0.13
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    assert len([e for e in root.iter() if e.tag.endswith("polyline")]) == 2


def test_plot_is_a_well_formed_svg(server, tmp_path):
    s = server()
    svg = tmp_path / "plot.svg"
    code, out, err = run_load("--connections", "2", "--rate", "200", "--duration", "500ms", "--plot", str(svg), s.url())
    assert code == 0, err
    assert "p99_99" in out and "latency (µs)" in out
    root = ET.parse(svg).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    # Open loop: corrected and uncorrected curves.
    assert len([e for e in root.iter() if e.tag.endswith("polyline")]) == 2


def decode_v2(data):
    """HdrHistogram's V2 encoding: a 40-byte header, then ZigZag LEB128 counts (negative: a run of zeros)."""
    cookie, length, _, digits, lowest, highest = struct.unpack(">iiiiqq", data[:32])
    assert cookie == 0x1C849313
    assert (digits, lowest, highest) == (3, 1, 3_600_000_000)
    counts, i, payload = [], 0, data[40:40 + length]
    while i < len(payload):
        value, shift = 0, 0
        for n in range(9):
            b = payload[i]
            i += 1
            value |= (b & (0x7F if n < 8 else 0xFF)) << shift
            shift += 7
            if n < 8 and not b & 0x80:
                break
        value = (value >> 1) ^ -(value & 1)
        counts.extend([0] * -value if value < 0 else [value])
    return counts


def test_hdr_log_is_in_hdrhistogram_log_format(server, tmp_path):
    s = server(delay=0.001)
    log = tmp_path / "run.hlog"
    doc = run_json("--connections", "2", "--rate", "200", "--duration", "1500ms", "--warmup", "300ms",
                   "--hdr-log", str(log), s.url())
    lines = log.read_text().splitlines()
    assert lines[0] == "#[Histogram log format version 1.3]"
    assert lines[1].startswith("#[StartTime: ")
    assert '"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"' in lines
    entries = [l.split(",") for l in lines if l.startswith("Tag=")]
    # One interval a second from the end of the warm-up, the last one as long as what is left.
    assert [(e[0], e[1], e[2]) for e in entries] == [
        ("Tag=corrected", "0.300", "1.000"), ("Tag=uncorrected", "0.300", "1.000"),
        ("Tag=corrected", "1.300", "0.500"), ("Tag=uncorrected", "1.300", "0.500")]
    totals = {}
    for tag, _, _, max_ms, encoded in entries:
        raw = base64.b64decode(encoded)
        cookie, size = struct.unpack(">ii", raw[:8])
        assert cookie == 0x1C849314
        counts = decode_v2(zlib.decompress(raw[8:8 + size]))
        totals[tag] = totals.get(tag, 0) + sum(counts)
    assert totals == {"Tag=corrected": doc["requests"], "Tag=uncorrected": doc["requests"]}
    overall_max = max(float(e[3]) for e in entries if e[0] == "Tag=corrected") * 1000
    assert abs(overall_max - doc["latency_us"]["max"]) <= doc["latency_us"]["max"] * 0.001 + 1


def test_compare_warms_up_one_slice_of_each_target_unless_told(server, tmp_path):
    """With --compare and no --warmup, one slice of A and one of B run unmeasured first (the measurement, and
    the HdrHistogram log's intervals, start 0.5 s in), so neither target's first slice takes the run's start-up
    transient alone; --warmup 0s still means none."""
    a, b = server(delay=0.001), server(delay=0.001)
    for flags, start in (([], "0.500"), (["--warmup", "0s"], "0.000")):
        log = tmp_path / f"compare{len(flags)}.hlog"
        before = a.requests + b.requests
        doc = run_json("--connections", "2", "--rate", "200", "--duration", "1s", "--hdr-log", str(log), *flags,
                       "--compare", a.url(), b.url())
        starts = {l.split(",")[1] for l in log.read_text().splitlines() if l.startswith("Tag=")}
        assert min(starts, key=float) == start, (flags, sorted(starts))
        served = a.requests + b.requests - before
        measured = doc["a"]["requests"] + doc["b"]["requests"]
        if flags:
            # Nothing unmeasured but the odd request still on its way at the end.
            assert served - measured <= 5, (served, measured)
        else:
            # 200 req/s through the 0.5 s warm-up: about 100 requests served and not measured.
            assert 80 <= served - measured <= 120, (served, measured)


def test_sigint_prints_the_results_so_far(server):
    s = server(delay=0.001)
    p = subprocess.Popen([tern_load_bin(), "--json", "--connections", "2", "--duration", "60s", s.url()],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 10
    while s.requests < 50 and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=10)
    assert p.returncode == 0, err
    doc = json.loads(out)
    assert doc["requests"] > 0
    assert doc["duration_s"] < 20
    assert b"interrupted" in err


@pytest.mark.parametrize("args,message", [
    ([], "give at least one URL"),
    (["ftp://127.0.0.1/"], "must start with http:// or https://"),
    (["--insecure", "http://127.0.0.1:1/"], "are for https:// URLs"),
    (["--cacert", "/nonexistent.pem", "https://127.0.0.1:1/"], "/nonexistent.pem"),
    (["http://example.com/"], "IP literal or localhost"),
    (["--connections", "0", "http://127.0.0.1:1/"], "--connections must be"),
    (["--duration", "ten", "http://127.0.0.1:1/"], "--duration must be a duration"),
    (["--rate", "0", "http://127.0.0.1:1/"], "--rate must be"),
    (["--requests", "5", "--duration", "1s", "http://127.0.0.1:1/"], "exclude each other"),
    (["--header", "NoColon", "http://127.0.0.1:1/"], "--header must be"),
    (["--io-backend", "kqueue", "http://127.0.0.1:1/"], "--io-backend must be"),
    (["--compare", "http://127.0.0.1:1/"], "exactly two URLs"),
    (["--body", "x", "--body-file", "/etc/hostname", "http://127.0.0.1:1/"], "exclude each other"),
    (["--body-file", "/nonexistent/file", "http://127.0.0.1:1/"], "--body-file cannot be read"),
])
def test_bad_flags_exit_64_with_a_clear_message(args, message):
    code, out, err = run_load(*args)
    assert code == 64, (out, err)
    assert message in err


def test_connections_are_spread_over_several_urls(server):
    a = server()
    b = server()
    doc = run_json("--connections", "4", "--requests", "200", a.url(), b.url())
    assert doc["requests"] == 200
    assert a.requests >= 60 and b.requests >= 60


def test_heads_split_across_reads_interim_responses_and_head_requests(server):
    async def split(reader, writer, up):
        while True:
            try:
                head = await HTTPServer.read_request(reader)
            except asyncio.IncompleteReadError:
                return
            if head.startswith(b"HEAD "):
                # Announces a body that a response to HEAD does not carry.
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Le")
                await writer.drain()
                await asyncio.sleep(0.002)
                writer.write(b"ngth: 5\r\n\r\nhel")
                await writer.drain()
                await asyncio.sleep(0.002)
                writer.write(b"lo")
            await writer.drain()

    s = server(behaviour=split)
    doc = run_json("--connections", "2", "--requests", "100", s.url())
    assert doc["requests"] == 100 and sum(doc["errors"].values()) == 0, doc
    assert doc["latency_us"]["p50"] >= 4_000
    doc = run_json("--connections", "2", "--requests", "100", "--method", "HEAD", s.url())
    assert doc["requests"] == 100 and sum(doc["errors"].values()) == 0, doc


def test_a_malformed_response_counts_as_reset_and_is_explained_once(server):
    async def garbage(reader, writer, up):
        await HTTPServer.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n")
        await writer.drain()
        await reader.read()

    s = server(behaviour=garbage)
    code, out, err = run_load("--json", "--connections", "2", "--requests", "20", s.url())
    assert code == 0, err
    doc = json.loads(out)
    assert doc["errors"]["reset"] == 20 and doc["requests"] == 0
    assert err.count("malformed response") == 1


def test_a_stall_across_the_end_is_not_hidden(server):
    # Open loop at 200 req/s for 1 s; the server stalls from 0.5 s to 1.2 s. The 100 requests due in the
    # second half are sent after the end, once the stall is over, and counted from their due times.
    s = server(delay=0.002)
    s.stall(after=0.5, length=0.7)
    doc = run_json("--connections", "1", "--rate", "200", "--duration", "1s", s.url())
    assert doc["requests"] == 200, doc
    assert doc["latency_us"]["p75"] >= 200_000, doc
    assert doc["latency_us"]["max"] >= 650_000


def test_compare_measures_what_the_http_proxy_adds(start_tern, server, backend):
    # The use tern-load exists for: the upstream directly (A) and through `tern proxy --http` (B).
    s = server(delay=0.002)
    tern = start_tern("--http", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{s.port}",
                      "--io-backend", backend, "--cores", "1")
    doc = run_json("--io-backend", backend, "--connections", "4", "--rate", "400", "--duration", "2s",
                   "--compare", s.url(), f"http://127.0.0.1:{tern.port}/")
    for side in ("a", "b"):
        assert doc[side]["requests"] >= 350 and sum(doc[side]["errors"].values()) == 0, doc
    # What the proxy adds at the median is well under the upstream's own 2 ms (noise can make it slightly
    # negative on a busy machine, never large).
    assert -500 < doc["added_latency_us"]["p50"] < 2_000, doc


def test_auto_falls_back_to_epoll_when_seccomp_refuses_io_uring(server):
    wrapper = os.path.join(ROOT, "build-cmake", "no-io-uring")
    assert os.path.exists(wrapper), "build the C tools first: bash Tools/scripts/ctest.sh"
    s = server()
    p = subprocess.run([wrapper, tern_load_bin(), "--requests", "20", s.url()], capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert b", epoll\n" in p.stdout.split(b"\n")[0] + b"\n"
    p = subprocess.run([wrapper, tern_load_bin(), "--io-backend", "io_uring", "--requests", "20", s.url()],
                       capture_output=True, timeout=30)
    assert p.returncode == 1
    assert b"io_uring cannot be set up" in p.stderr


def test_progress_line_on_a_terminal_and_not_on_a_pipe(server):
    """On a terminal, stderr gets a progress line about once a second (elapsed, req/s, requests, errors,
    rewritten in place with a carriage return and cleared at the end); through a pipe it stays silent."""
    import pty
    s = server()
    url = f"http://127.0.0.1:{s.port}/"
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen([tern_load_bin(), "--connections", "2", "--duration", "2500ms", "--json", url],
                             stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        slave = -1
        out, _ = p.communicate(timeout=30)
        assert p.returncode == 0
        err = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            err += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    lines = [l for l in err.split(b"\r") if b"req/s" in l]
    assert len(lines) >= 2, err
    for l in lines:
        text = l.replace(b"\x1b[K", b"").decode().strip()
        parts = text.split()
        # "1.0 s  5234 req/s  5240 requests  0 errors"
        assert parts[1] == "s" and parts[3] == "req/s" and parts[5] == "requests" and parts[7] == "errors", text
        assert int(parts[2]) > 0 and parts[6] == "0"
    assert err.endswith(b"\r\x1b[K")
    assert json.loads(out)["requests"] > 0
    code, _, piped = run_load("--connections", "2", "--duration", "1500ms", url)
    assert code == 0 and "req/s" not in piped and "\r" not in piped
