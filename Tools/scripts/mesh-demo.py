#!/usr/bin/env python3
"""Two apps and their Tern sidecars, with mutual TLS between them: what `demo.sh` shows after building.

Pod A (the frontend) calls `backend.demo`; pod B runs the backend in two versions, v1 and v2, and a VirtualService
sends 80 % of the calls to v1 and 20 % to v2 (a canary). Identities come from Tern's own mesh CA (`tern cert`);
B's endpoints are labelled as having a sidecar, so A's sidecar reaches them over mutual TLS; B's sidecar is STRICT
and lets only A's identity GET. With root and network namespaces, each pod is a namespace of its own (A 10.77.0.1,
B 10.77.0.2, joined by a veth pair) whose traffic `tern iptables` redirects to its sidecar, Tern running as uid 1337
as in Istio: the apps are unchanged and call each other by address. Elsewhere everything runs on 127.0.0.1, one
process per side of each sidecar, and the script says so. It prints the split observed, what crossed the link
between the pods (TLS records, never a request in the clear), a request B's policy denies, and the latency the two
sidecars add, measured with tern-load against the direct call.

    python3 Tools/scripts/mesh-demo.py [--tern PATH] [--tern-load PATH] [--requests 200] [--rate 500]
                                       [--seconds 5] [--loopback]
"""
import argparse
import contextlib
import ctypes
import http.client
import http.server
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
A_IP, B_IP = "10.77.0.1", "10.77.0.2"
PORTS = {"v1": 8081, "v2": 8082}
PROXY_UID, APP_UID = 1337, 1000
HOST = "backend.demo"


# ---------------------------------------------------------------------------------------------------------------
# Network namespaces (entered one thread at a time with setns, so sockets made meanwhile live there)

_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def inside(ns):
    if ns is None:
        yield
        return
    with open("/proc/thread-self/ns/net") as back, open(f"/run/netns/{ns}") as target:
        if _libc.setns(target.fileno(), 0x40000000) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        try:
            yield
        finally:
            _libc.setns(back.fileno(), 0x40000000)


def run(*command, ns=None, uid=None, check=True, **kw):
    prefix = (["ip", "netns", "exec", ns] if ns else []) + (
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"] if uid is not None else [])
    return subprocess.run([*prefix, *command], check=check, capture_output=True, text=True, **kw)


def namespaces_usable():
    """Why network namespaces cannot be used here (None: they can)."""
    if os.geteuid() != 0:
        return "not running as root"
    for tool in ("ip", "iptables", "setpriv"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = f"tern-demo-probe-{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"ip netns add failed: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


# ---------------------------------------------------------------------------------------------------------------
# The apps: HTTP/1.1 with keep-alive, answering which version they are

def start_app(version, host, port, ns):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            # Head and body in one write: two small writes would meet Nagle's algorithm and a delayed ACK.
            body = f"backend {version}\n".encode()
            self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))

        do_POST = do_GET

        def log_message(self, *args):
            pass

    with inside(ns):
        server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# ---------------------------------------------------------------------------------------------------------------
# A capture of the TCP payloads to and from the apps' ports (AF_PACKET), on the link between the pods

class Capture:
    def __init__(self, interface, ports, ns):
        with inside(ns):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        self.sock.bind((interface, 0))
        self.sock.settimeout(0.1)
        self.ports = set(ports)
        self.payload = bytearray()
        self.records = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self):
        while not self.stopping.is_set():
            try:
                frame, meta = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            if meta[2] == socket.PACKET_OUTGOING and meta[0] == "lo":
                continue  # loopback shows each packet twice
            ip = frame[14:]
            if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
                continue
            ihl = (ip[0] & 15) * 4
            tcp = ip[ihl:]
            if len(tcp) < 20:
                continue
            source, destination = struct.unpack("!HH", tcp[:4])
            if source not in self.ports and destination not in self.ports:
                continue
            data = tcp[(tcp[12] >> 4) * 4:struct.unpack("!H", ip[2:4])[0] - ihl]
            if data:
                self.payload += data
                self.records += data.count(b"\x17\x03\x03")

    def stop(self):
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()


# ---------------------------------------------------------------------------------------------------------------

SERVICE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: backend, namespace: demo}}
spec:
  hosts: [{host}]
  location: MESH_INTERNAL
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - {{address: {ip}, ports: {{http: {v1}}}, labels: {{version: v1, security.istio.io/tlsMode: istio}}, serviceAccount: backend}}
  - {{address: {ip}, ports: {{http: {v2}}}, labels: {{version: v2, security.istio.io/tlsMode: istio}}, serviceAccount: backend}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: backend, namespace: demo}}
spec:
  host: {host}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: backend, namespace: demo}}
spec:
  hosts: [{host}]
  http:
  - route:
    - {{destination: {{host: {host}, subset: v1}}, weight: 80}}
    - {{destination: {{host: {host}, subset: v2}}, weight: 20}}
"""

POLICIES = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: frontend-reads, namespace: demo}
spec:
  selector:
    matchLabels: {app: backend}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/demo/sa/frontend"]}}]
    to: [{operation: {methods: ["GET"]}}]
"""


class Demo:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="tern-mesh-demo-")
        os.chmod(self.work, 0o755)
        self.procs = []
        self.logs = []
        self.servers = []
        self.namespaces = []

    def file(self, path, text):
        full = os.path.join(self.work, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        os.chmod(os.path.dirname(full), 0o755)
        with open(full, "w") as f:
            f.write(text)
        os.chmod(full, 0o644)
        return os.path.dirname(full)

    def identities(self):
        tern = self.args.tern
        ca = os.path.join(self.work, "ca")
        subprocess.run([tern, "cert", "ca", "--out", ca], check=True, capture_output=True)
        for sa in ("frontend", "backend"):
            d = os.path.join(self.work, "id-" + sa)
            subprocess.run([tern, "cert", "issue", "--ca", ca, "--namespace", "demo", "--service-account", sa, "--out", d],
                           check=True, capture_output=True)
            if self.netns:
                # The sidecar runs as uid 1337: its identity is its own to read.
                os.chmod(d, 0o755)
                for f in os.listdir(d):
                    os.chown(os.path.join(d, f), PROXY_UID, PROXY_UID)
        return {sa: os.path.join(self.work, "id-" + sa) for sa in ("frontend", "backend")}

    def tern(self, name, args, ns=None):
        log = open(os.path.join(self.work, name + ".log"), "w")
        self.logs.append(log)
        prefix = ["ip", "netns", "exec", ns, "setpriv", f"--reuid={PROXY_UID}", f"--regid={PROXY_UID}",
                  "--clear-groups"] if ns else []
        p = subprocess.Popen([*prefix, self.args.tern, "proxy", "--http", "--cores", "1", "--admin", "off",
                              "--health", "off", "--prometheus", "off", *args], stderr=log)
        self.procs.append(p)
        return p, os.path.join(self.work, name + ".log")

    def wait_listening(self, log, count):
        deadline = time.time() + 20
        while time.time() < deadline:
            text = open(log).read()
            ports = [int(line.rsplit(":", 1)[1]) for line in text.splitlines() if "listening kind=" in line
                     and ("kind=http" in line or "kind=inbound" in line)]
            if len(ports) >= count:
                return ports
            time.sleep(0.05)
        raise RuntimeError(f"a sidecar did not start:\n{open(log).read()}")

    def start(self):
        why = "--loopback given" if self.args.loopback else namespaces_usable()
        self.netns = why is None
        ids = self.identities()
        if self.netns:
            print("== two pods in network namespaces: A (frontend, 10.77.0.1) and B (backend v1 and v2, 10.77.0.2), "
                  "each with Tern as its sidecar (uid 1337) and `tern iptables` redirecting its traffic")
            self.a, self.b = f"tern-demo-a-{os.getpid()}", f"tern-demo-b-{os.getpid()}"
            for ns in (self.a, self.b):
                subprocess.run(["ip", "netns", "add", ns], check=True)
                self.namespaces.append(ns)
                run("ip", "link", "set", "lo", "up", ns=ns)
            run("ip", "link", "add", "pod-a", "type", "veth", "peer", "name", "pod-b", "netns", self.b, ns=self.a)
            run("ip", "addr", "add", f"{A_IP}/24", "dev", "pod-a", ns=self.a)
            run("ip", "link", "set", "pod-a", "up", ns=self.a)
            run("ip", "addr", "add", f"{B_IP}/24", "dev", "pod-b", ns=self.b)
            run("ip", "link", "set", "pod-b", "up", ns=self.b)
            for version, port in PORTS.items():
                self.servers.append(start_app(version, B_IP, port, self.b))
            a_conf = self.file("a/config.yaml", SERVICE.format(host=HOST, ip=B_IP, **PORTS))
            b_conf = self.file("b/config.yaml", POLICIES)
            for name, ns, conf, sa in (("a", self.a, a_conf, "frontend"), ("b", self.b, b_conf, "backend")):
                _, log = self.tern("sidecar-" + name, ["--listen", "0.0.0.0:15001", "--inbound", "0.0.0.0:15006",
                                                       "--config", conf, "--identity-dir", ids[sa], "--namespace", "demo",
                                                       "--service-account", sa, "--labels", f"app={sa}"], ns=ns)
                self.wait_listening(log, 2)
                run(self.args.tern, "iptables", ns=ns)
            self.target = (B_IP, 80)
            self.direct = (B_IP, PORTS["v1"])
            self.capture_on = ("pod-a", self.a)
        else:
            print(f"== network namespaces cannot be used here ({why}): everything runs on 127.0.0.1, each sidecar as "
                  "its outbound and inbound side in two processes, and apps call A's sidecar by its address")
            self.a = self.b = None
            ports = {}
            for version in PORTS:
                server = start_app(version, "127.0.0.1", 0, None)
                self.servers.append(server)
                ports[version] = server.server_address[1]
            b_conf = self.file("b/config.yaml", POLICIES)
            inbound = {}
            for version, port in ports.items():
                _, log = self.tern("sidecar-b-" + version, ["--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{port}",
                                                           "--config", b_conf, "--identity-dir", ids["backend"],
                                                           "--namespace", "demo", "--service-account", "backend",
                                                           "--labels", "app=backend"])
                inbound[version] = self.wait_listening(log, 1)[0]
            a_conf = self.file("a/config.yaml", SERVICE.format(host=HOST, ip="127.0.0.1", **inbound))
            _, log = self.tern("sidecar-a", ["--listen", "127.0.0.1:0", "--config", a_conf, "--identity-dir",
                                             ids["frontend"], "--namespace", "demo", "--service-account", "frontend"])
            self.target = ("127.0.0.1", self.wait_listening(log, 1)[0])
            self.direct = ("127.0.0.1", ports["v1"])
            PORTS.update(inbound)
            self.capture_on = ("lo", None)

    def request(self, method="GET", path="/"):
        """One call of App A's (in pod A: redirected to its sidecar)."""
        with inside(self.a):
            c = http.client.HTTPConnection(*self.target, timeout=20)
            c.connect()
        try:
            c.request(method, path, headers={"host": HOST})
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def load(self, ns, uid, address, header):
        """tern-load, open loop, in a pod as `uid`: (p50, p99) in ms, and failed requests."""
        r = run(self.args.tern_load, "--json", "--rate", str(self.args.rate), "--connections", "10", "--cores", "1",
                "--warmup", "1s", "--duration", f"{self.args.seconds}s", "--header", header,
                f"http://{address[0]}:{address[1]}/", ns=ns, uid=uid, timeout=self.args.seconds + 60)
        doc = json.loads(r.stdout)
        failed = sum(doc["errors"][k] for k in ("connect", "timeout", "reset", "status_4xx", "status_5xx"))
        return doc["latency_us"]["p50"] / 1000, doc["latency_us"]["p99"] / 1000, failed

    def show(self):
        n = self.args.requests
        try:
            capture = Capture(self.capture_on[0], PORTS.values(), self.capture_on[1])
        except OSError as e:
            capture = None  # (a packet socket needs CAP_NET_RAW)
            why = e.strerror
        counts = {}
        try:
            for _ in range(n):
                status, body = self.request()
                key = body.decode().strip() if status == 200 else f"status {status}"
                counts[key] = counts.get(key, 0) + 1
        finally:
            if capture:
                capture.stop()
        v1, v2 = counts.get("backend v1", 0), counts.get("backend v2", 0)
        print(f"the canary split: of {n} calls, {v1} reached v1 ({100 * v1 / n:.0f} %) and {v2} v2 ({100 * v2 / n:.0f} %);"
              " the VirtualService says 80/20")
        others = {k: v for k, v in counts.items() if k not in ("backend v1", "backend v2")}
        if others:
            print(f"  other answers: {others}")
        if capture:
            clear = b"GET / HTTP/1.1" in capture.payload or b"backend v1" in capture.payload or b"backend v2" in capture.payload
            print(f"the link between the pods carried {capture.records} TLS application-data records "
                  f"({len(capture.payload) / 1024:.0f} KiB) and {'SOME' if clear else 'none'} of the requests or answers in the clear")
        else:
            print(f"the link between the pods was not captured: {why} (a packet capture needs root)")
        status, body = self.request("POST")
        print(f"a POST, which backend's AuthorizationPolicy does not allow: {status} {body.decode()}")
        through = self.load(self.a, APP_UID if self.a else None, self.target, f"Host: {HOST}")
        direct = self.load(self.b, APP_UID if self.b else None, self.direct, "Host: backend")
        where = "from inside pod B, " if self.netns else ""
        print(f"latency at {self.args.rate} calls a second (tern-load, open loop, {self.args.seconds} s): direct to v1 "
              f"({where}no sidecar) p50 {direct[0]:.2f} ms, p99 {direct[1]:.2f} ms; through both sidecars with mutual TLS p50 {through[0]:.2f} ms,"
              f" p99 {through[1]:.2f} ms (+{through[0] - direct[0]:.2f} / +{through[1] - direct[1]:.2f} ms;"
              f" {through[2] + direct[2]} failed)")

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        for s in self.servers:
            s.shutdown()
            s.server_close()
        for log in self.logs:
            log.close()
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(self.work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tern", default=os.path.join(ROOT, ".build/release/tern"))
    ap.add_argument("--tern-load", default=os.path.join(ROOT, ".build/release/tern-load"))
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--loopback", action="store_true", help="stay on 127.0.0.1 even where namespaces work")
    args = ap.parse_args()
    demo = Demo(args)
    try:
        demo.start()
        demo.show()
    finally:
        demo.stop()


if __name__ == "__main__":
    main()
