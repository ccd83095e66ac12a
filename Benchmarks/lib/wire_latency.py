#!/usr/bin/env python3
"""Request-to-response latency as the wire saw it, per connection, from a pcap of loopback traffic.

    python3 Benchmarks/lib/wire_latency.py CAPTURE.pcap SERVER_PORT

For each client connection to SERVER_PORT it pairs each request's first data segment with the server's
next data segment on that connection (one request in flight per connection: closed loop, no pipelining,
responses of one segment) and prints one JSON object per line: the connection's tag (the URL's query
string, `GET /path?TAG`), the number of exchanges, and p50/p99 in microseconds. That is the latency no
client-side delay can add to: a generator's own figure is this plus its wake-up, parse and timestamping.
Reads classic pcap (micro- or nanosecond) with Ethernet framing, as tcpdump writes on Linux's lo.
"""
import json
import struct
import sys


def exchanges(path, port):
    """Yields (client port, tag or None, latency seconds) for each request/response pair."""
    with open(path, "rb") as f:
        header = f.read(24)
        if len(header) < 24:
            return
        magic = struct.unpack("<I", header[:4])[0]
        if magic not in (0xA1B2C3D4, 0xA1B23C4D):
            raise SystemExit(f"{path}: not a little-endian classic pcap (magic {magic:#x})")
        scale = 1e-9 if magic == 0xA1B23C4D else 1e-6
        sent, tags = {}, {}
        while True:
            record = f.read(16)
            if len(record) < 16:
                return
            seconds, fraction, captured, _ = struct.unpack("<IIII", record)
            frame = f.read(captured)
            when = seconds + fraction * scale
            ip = frame[14:]
            if len(ip) < 20 or ip[0] >> 4 != 4:
                continue
            ip_header = (ip[0] & 15) * 4
            total = struct.unpack(">H", ip[2:4])[0]
            tcp = ip[ip_header:]
            source, destination = struct.unpack(">HH", tcp[:4])
            tcp_header = (tcp[12] >> 4) * 4
            if total - ip_header - tcp_header <= 0:
                continue
            if destination == port:
                if source not in tags:
                    line = tcp[tcp_header:].split(b"\r\n", 1)[0].split(b" ")
                    target = line[1] if len(line) > 1 else b""
                    tags[source] = target.split(b"?", 1)[1].decode() if b"?" in target else None
                sent.setdefault(source, when)
            elif source == port and destination in sent:
                yield destination, tags.get(destination), when - sent.pop(destination)


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    latencies = {}
    for client, tag, seconds in exchanges(sys.argv[1], int(sys.argv[2])):
        latencies.setdefault((client, tag), []).append(seconds * 1e6)
    for (client, tag), values in sorted(latencies.items(), key=lambda kv: -len(kv[1])):
        values.sort()
        n = len(values)
        print(json.dumps({"tag": tag if tag is not None else str(client), "exchanges": n,
                          "p50": values[n // 2], "p99": values[min(n - 1, int(0.99 * n))]}))


if __name__ == "__main__":
    main()
