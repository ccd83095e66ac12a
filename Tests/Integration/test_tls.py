"""TLS termination (`tern proxy --http --tls-cert --tls-key [--tls-client-ca]`), on both backends, against real
TLS clients: curl, `openssl s_client` and Python's ssl. Certificates are made for the run by
Tests/Fixtures/tls/make-certs.sh (openssl CLI). Tern is held to what Envoy does terminating TLS on a listener
(DownstreamTlsContext with a certificate, optionally require_client_certificate): TLS 1.2 and 1.3, ALPN
http/1.1, stateless session tickets, X-Forwarded-Proto https, failed handshakes closed and counted, the
certificate reloaded when its files change without disturbing established connections.
"""
import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from types import SimpleNamespace

import httpx
import pytest

from conftest import ROOT
from peers import dead_port, echo, hashing_sender, stream_bytes, stream_sha256
from test_tcp_routing import SERVICE as TCP_SERVICE, tagged
from test_http_proxy import (MiB, PeakRSS, access_log, build_request, http_upstream,  # noqa: F401 (fixture)
                             wait_until)

MAKE_CERTS = os.path.join(ROOT, "Tests", "Fixtures", "tls", "make-certs.sh")


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    """The directory of make-certs.sh's certificates (made once per test run)."""
    d = tmp_path_factory.mktemp("certs")
    subprocess.run(["bash", MAKE_CERTS, str(d)], check=True, timeout=120)
    return str(d)


def tls_proxy(start_tern, up, backend, certs, *extra, cert="server-chain.crt", key="server.key", cores="1"):
    """`tern proxy --http` terminating TLS in front of `up`, with Prometheus on; returns (tern, prometheus port)."""
    prom = dead_port()
    t = start_tern("--http", "--listen", "127.0.0.1:0", "--upstream", up.address, "--io-backend", backend,
                   "--cores", cores, "--admin", "off", "--health", "off", "--prometheus", f"127.0.0.1:{prom}",
                   "--tls-cert", os.path.join(certs, cert), "--tls-key", os.path.join(certs, key), *extra)
    return t, prom


def metric(port, name, **labels):
    """The value of sample `name` with exactly `labels` on Tern's Prometheus endpoint (0 when absent)."""
    text = httpx.get(f"http://127.0.0.1:{port}/stats/prometheus", timeout=10).text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if want and line.startswith(f"{name}{{{want}}} ") or not want and line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def failures(port, reason):
    return metric(port, "tern_tls_handshake_failures_total", side="downstream", reason=reason)


def client_context(certs, ca="ca.crt", cert=None, key=None, max_version=None):
    ctx = ssl.create_default_context(cafile=os.path.join(certs, ca))
    if cert:
        ctx.load_cert_chain(os.path.join(certs, cert), os.path.join(certs, key))
    if max_version:
        ctx.maximum_version = max_version
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class TLSClient:
    """An HTTP/1.1 client over one TLS connection (Python's ssl), reading responses with Content-Length."""

    def __init__(self, port, ctx, server_name="localhost", session=None, timeout=30):
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = ctx.wrap_socket(raw, server_hostname=server_name, session=session)
        self.buffer = b""

    def request(self, method, target, headers=(), body=b""):
        self.sock.sendall(build_request(method, target, headers, body))
        return self.response()

    def response(self, on_data=None):
        while b"\r\n\r\n" not in self.buffer:
            data = self.sock.recv(65536)
            assert data, f"connection closed before a response head: {self.buffer!r}"
            self.buffer += data
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        fields = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            fields[k.strip().lower()] = v.strip()
        length = int(fields.get("content-length", "0"))
        body = bytearray()
        got = 0
        while got < length:
            if not self.buffer:
                self.buffer = self.sock.recv(1 << 20)
                assert self.buffer, "connection closed inside a response body"
            piece, self.buffer = self.buffer[: length - got], self.buffer[length - got:]
            got += len(piece)
            if on_data:
                on_data(piece)
            else:
                body += piece
        return status, fields, bytes(body)

    def close(self):
        self.sock.close()


def upload(c, target, size):
    """POSTs `size` bytes of the deterministic stream to `target` (the upstream's /sha256 answers their hash);
    returns (status, body, the sha256 sent)."""
    sent = hashlib.sha256()
    c.sock.sendall(build_request("POST", target, [("Content-Length", str(size))]))
    for block in stream_bytes(size):
        sent.update(block)
        c.sock.sendall(block)
    status, _, body = c.response()
    return status, body, sent.hexdigest()


def download(c, size):
    """GETs /bytes/SIZE; returns (status, bytes received, their sha256)."""
    got = hashlib.sha256()
    count = [0]

    def take(data):
        got.update(data)
        count[0] += len(data)
    c.sock.sendall(build_request("GET", f"/bytes/{size}"))
    status, _, _ = c.response(on_data=take)
    return status, count[0], got.hexdigest()


def curl(port, path, *args, host="localhost", timeout=30):
    """curl over https; returns (exit code, status or 0, body, stderr)."""
    r = subprocess.run(["curl", "-sS", "--noproxy", "*", "--resolve", f"{host}:{port}:127.0.0.1", "-o", "-",
                        "-w", "\n%{http_code} %{http_version}", *args, f"https://{host}:{port}{path}"],
                       capture_output=True, timeout=timeout)
    out = r.stdout
    body, _, tail = out.rpartition(b"\n")
    code = int(tail.split()[0]) if tail else 0
    return r.returncode, code, body, r.stderr.decode()


# ---------------------------------------------------------------------------------------------------------
# Handshakes that succeed
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_curl_gets_through_tls_and_the_upstream_sees_https(start_tern, http_upstream, backend, certs, version):
    """curl over TLS 1.2 and 1.3 with the test CA: 200 with the upstream's body; the upstream gets plaintext
    HTTP/1.1 with X-Forwarded-Proto https (Envoy sets it from the connection's scheme)."""
    up = http_upstream()
    t, prom = tls_proxy(start_tern, up, backend, certs)
    code, status, body, err = curl(t.port, "/hello", "--cacert", os.path.join(certs, "ca.crt"),
                                   f"--tlsv{version}", "--tls-max", version)
    assert (code, status, body) == (0, 200, b"/hello"), err
    [req] = up.requests
    assert req.header("x-forwarded-proto") == "https"
    assert metric(prom, "tern_tls_handshakes_total", side="downstream") == 1


def test_openssl_s_client_negotiates_alpn_and_tls13(start_tern, http_upstream, backend, certs):
    """`openssl s_client`: TLS 1.3, the certificate verifies, and ALPN picks h2 when the client offers it (HTTP/2
    by ALPN), http/1.1 when it offers only that; an HTTP/1.1 request still gets its answer (a connection is served
    as HTTP/2 when it begins with the HTTP/2 preface)."""
    up = http_upstream()
    t, _ = tls_proxy(start_tern, up, backend, certs)
    for alpn, expected in (("h2,http/1.1", "ALPN protocol: h2"), ("http/1.1", "ALPN protocol: http/1.1"),
                           ("h2", "ALPN protocol: h2")):
        r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{t.port}", "-servername", "localhost",
                            "-CAfile", os.path.join(certs, "ca.crt"), "-alpn", alpn, "-ign_eof"],
                           input=b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", capture_output=True, timeout=30)
        out = r.stdout.decode() + r.stderr.decode()
        assert "New, TLSv1.3" in out, out
        assert "Verify return code: 0 (ok)" in out, out
        assert expected in out, out
        assert "HTTP/1.1 200" in out, out


def test_curl_speaks_http2_over_tls_by_alpn(start_tern, http_upstream, backend, certs):
    """curl --http2 over TLS: ALPN h2, the answer over HTTP/2; the upstream gets HTTP/1.1 with X-Forwarded-Proto
    https, as from an HTTPS client over HTTP/1.1."""
    up = http_upstream()
    t, _ = tls_proxy(start_tern, up, backend, certs)
    code, status, body, err = curl(t.port, "/over-h2", "--cacert", os.path.join(certs, "ca.crt"), "--http2")
    assert (code, status, body) == (0, 200, b"/over-h2"), err
    r = subprocess.run(["curl", "-sS", "--noproxy", "*", "--resolve", f"localhost:{t.port}:127.0.0.1", "-o", "/dev/null",
                        "-w", "%{http_version}", "--cacert", os.path.join(certs, "ca.crt"), "--http2",
                        f"https://localhost:{t.port}/v"], capture_output=True, timeout=30)
    assert r.stdout == b"2", r.stderr
    assert all(req.header("x-forwarded-proto") == "https" for req in up.requests)


@pytest.mark.parametrize("name", ["localhost", "a.example.com", "x.b.example.com"])
def test_sni_names_of_the_certificate_verify_and_are_logged(start_tern, http_upstream, backend, certs, tmp_path, name):
    """The certificate names localhost, a.example.com and *.b.example.com: clients asking for each verify it; the
    access log has the requested server name, TLS version and cipher."""
    up = http_upstream()
    log = tmp_path / "access.log"
    t, _ = tls_proxy(start_tern, up, backend, certs, "--access-log", str(log))
    code, status, _, err = curl(t.port, "/sni", "--cacert", os.path.join(certs, "ca.crt"), host=name)
    assert (code, status) == (0, 200), err
    [line] = access_log(str(log), 1)
    assert line["requested_server_name"] == name
    assert line["downstream_tls_version"] == "TLSv1.3"
    assert line["downstream_tls_cipher"].startswith("TLS_")


def test_keep_alive_requests_share_one_tls_connection(start_tern, http_upstream, backend, certs):
    """Ten requests on one TLS connection: one handshake, ten answers, one upstream connection."""
    up = http_upstream()
    t, prom = tls_proxy(start_tern, up, backend, certs)
    c = TLSClient(t.port, client_context(certs))
    for i in range(10):
        status, _, body = c.request("GET", f"/k{i}")
        assert (status, body) == (200, f"/k{i}".encode())
    c.close()
    assert metric(prom, "tern_tls_handshakes_total", side="downstream") == 1
    assert up.accepted == 1


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_sessions_resume_with_tickets(start_tern, http_upstream, backend, certs, version):
    """A second connection offering the first one's session ticket resumes it (TLS 1.2 and 1.3 tickets), counted
    in tern_tls_resumed_handshakes_total; the tickets are the process's, so every reactor resumes them."""
    up = http_upstream()
    t, prom = tls_proxy(start_tern, up, backend, certs, cores="2")
    ctx = client_context(certs, max_version=version)
    first = TLSClient(t.port, ctx)
    assert first.request("GET", "/one")[0] == 200  # TLS 1.3 tickets arrive after the handshake: read first
    session = first.sock.session
    first.close()
    assert session is not None and session.has_ticket
    resumed = 0
    for i in range(6):  # over both reactors (SO_REUSEPORT spreads connections by their source port)
        c = TLSClient(t.port, ctx, session=session)
        assert c.request("GET", f"/again{i}")[0] == 200
        resumed += c.sock.session_reused
        c.close()
    assert resumed == 6
    assert metric(prom, "tern_tls_resumed_handshakes_total", side="downstream") == 6


def test_large_bodies_both_ways_intact(start_tern, http_upstream, backend, certs):
    """64 MiB up and 64 MiB down through TLS, checked by sha256 at the far ends."""
    size = 64 * MiB
    up = http_upstream()
    t, _ = tls_proxy(start_tern, up, backend, certs)
    c = TLSClient(t.port, client_context(certs), timeout=60)
    status, body, sent = upload(c, "/sha256", size)
    assert status == 200
    assert json.loads(body) == {"length": size, "sha256": sent}
    assert download(c, size) == (200, size, stream_sha256(size))


@pytest.mark.large
def test_1gib_both_ways_in_bounded_memory(start_tern, http_upstream, backend, certs):
    """1 GiB uploaded (the upstream not reading for its first 2 s) and 1 GiB downloaded over TLS, intact by
    sha256, while Tern's resident memory stays under 64 MiB: decrypted and encrypted bytes move through the
    reactor's pooled buffers with backpressure, never piling up."""
    size = 1 << 30
    up = http_upstream()
    t, _ = tls_proxy(start_tern, up, backend, certs)
    with PeakRSS(t.proc.pid) as rss:
        # The client's socket timeout (120 s) bounds each transfer.
        c = TLSClient(t.port, client_context(certs), timeout=120)
        status, body, sent = upload(c, "/sha256?pause_ms=2000", size)
        down = download(c, size)
    assert status == 200
    assert json.loads(body) == {"length": size, "sha256": sent}
    assert down == (200, size, stream_sha256(size))
    assert rss.peak < 64 * MiB, f"tern reached {rss.peak / MiB:.1f} MiB resident"


# ---------------------------------------------------------------------------------------------------------
# Client certificates
# ---------------------------------------------------------------------------------------------------------

def test_client_certificate_required_present_missing_and_wrong(start_tern, http_upstream, backend, certs):
    """With --tls-client-ca: a client certificate signed by that CA gets through; none, one from another CA, or an
    expired one fails the handshake (counted by reason) and nothing reaches the upstream for them."""
    up = http_upstream()
    t, prom = tls_proxy(start_tern, up, backend, certs, "--tls-client-ca", os.path.join(certs, "ca.crt"))
    ca = os.path.join(certs, "ca.crt")
    code, status, _, err = curl(t.port, "/mtls", "--cacert", ca, "--cert", os.path.join(certs, "client.crt"),
                                "--key", os.path.join(certs, "client.key"))
    assert (code, status) == (0, 200), err
    code, status, _, err = curl(t.port, "/none", "--cacert", ca)
    assert code != 0 and status == 0, err
    wait_until(lambda: failures(prom, "no_certificate") == 1, "the missing certificate counted")
    code, status, _, err = curl(t.port, "/other", "--cacert", ca, "--cert", os.path.join(certs, "other.crt"),
                                "--key", os.path.join(certs, "other.key"))
    assert code != 0 and status == 0, err
    wait_until(lambda: failures(prom, "certificate_verify_failed") == 1, "the unknown CA counted")
    code, status, _, err = curl(t.port, "/expired", "--cacert", ca, "--cert", os.path.join(certs, "expired.crt"),
                                "--key", os.path.join(certs, "expired.key"))
    assert code != 0 and status == 0, err
    wait_until(lambda: failures(prom, "certificate_expired") == 1, "the expired certificate counted")
    assert up.paths() == ["/mtls"]


# ---------------------------------------------------------------------------------------------------------
# Handshakes that fail, and bytes that are not TLS
# ---------------------------------------------------------------------------------------------------------

def served_after(t, certs):
    """Tern still serves a good client afterwards."""
    code, status, _, err = curl(t.port, "/after", "--cacert", os.path.join(certs, "ca.crt"))
    assert (code, status) == (0, 200), err


def read_until_closed(sock, timeout=15):
    """Everything the peer sends until it closes (or resets); raises if it stays open past `timeout`."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            piece = sock.recv(65536)
            if not piece:
                return data
            data += piece
    except ConnectionResetError:
        return data


def test_wrong_ca_on_the_client_fails_its_handshake(start_tern, http_upstream, backend, certs):
    """A client that trusts another CA refuses Tern's certificate and says so (alert unknown_ca): counted as a
    peer alert; a client asking for a name the certificate lacks refuses it too."""
    up = http_upstream()
    t, prom = tls_proxy(start_tern, up, backend, certs)
    code, _, _, err = curl(t.port, "/", "--cacert", os.path.join(certs, "other-ca.crt"))
    assert code == 60, err  # curl: peer certificate cannot be authenticated
    wait_until(lambda: failures(prom, "peer_alert") == 1, "the client's alert counted")
    code, _, _, err = curl(t.port, "/", "--cacert", os.path.join(certs, "ca.crt"), host="c.example.com")
    assert code == 60, err
    assert up.paths() == []
    served_after(t, certs)


@pytest.mark.parametrize("cert", ["expired", "future"])
def test_expired_and_not_yet_valid_server_certificates_are_refused_by_clients(start_tern, http_upstream, backend, certs, cert):
    """Tern serves the certificate it is given (clients decide; a warning says it is out of date); curl refuses
    an expired and a not-yet-valid one."""
    up = http_upstream()
    t, _ = tls_proxy(start_tern, up, backend, certs, cert=f"{cert}.crt", key=f"{cert}.key")
    code, _, _, err = curl(t.port, "/", "--cacert", os.path.join(certs, "ca.crt"))
    assert code == 60, err
    assert "expired" in err or "not yet valid" in err, err
    assert up.paths() == []


def test_plaintext_http_on_the_tls_port_is_closed_and_counted(start_tern, http_upstream, backend, certs):
    """A plaintext HTTP request to the TLS port gets no HTTP answer (Envoy closes it too): the connection is
    closed, counted as http_request, and nothing reaches the upstream."""
    up = http_upstream()
    t, prom = tls_proxy(start_tern, up, backend, certs)
    s = socket.create_connection(("127.0.0.1", t.port), timeout=10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = read_until_closed(s)
    assert b"HTTP/1.1" not in data
    wait_until(lambda: failures(prom, "http_request") == 1, "the plaintext request counted")
    assert up.paths() == []
    served_after(t, certs)


@pytest.mark.parametrize("what,payload,reason", [
    ("random bytes", bytes((i * 77 + 3) % 256 for i in range(4096)), "protocol_error"),
    ("a record header announcing garbage", b"\x16\x03\x01\x00\x20" + b"\xff" * 32, "protocol_error"),
])
def test_garbage_closes_the_connection(start_tern, http_upstream, backend, certs, what, payload, reason):
    """Bytes that are not a TLS handshake close the connection (after OpenSSL's alert), nothing reaches the
    upstream, and the reactor goes on serving."""
    up = http_upstream()
    t, prom = tls_proxy(start_tern, up, backend, certs)
    s = socket.create_connection(("127.0.0.1", t.port), timeout=10)
    s.sendall(payload)
    read_until_closed(s)
    wait_until(lambda: failures(prom, reason) == 1, f"{what} counted as {reason}")
    assert up.paths() == []
    served_after(t, certs)


def test_truncated_client_hello_then_close(start_tern, http_upstream, backend, certs):
    """A ClientHello cut short by the client's close: counted as closed_early; Tern serves on."""
    up = http_upstream()
    t, prom = tls_proxy(start_tern, up, backend, certs)
    s = socket.create_connection(("127.0.0.1", t.port), timeout=10)
    s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    s.shutdown(socket.SHUT_WR)
    read_until_closed(s)
    wait_until(lambda: failures(prom, "closed_early") == 1, "the cut handshake counted")
    served_after(t, certs)


def test_garbage_after_the_handshake_resets_the_connection(start_tern, http_upstream, backend, certs):
    """A record that fails to decrypt after the handshake (bytes written around the TLS layer) ends the
    connection; nothing reaches the upstream."""
    up = http_upstream()
    t, _ = tls_proxy(start_tern, up, backend, certs)
    ctx = client_context(certs)
    raw = socket.create_connection(("127.0.0.1", t.port), timeout=10)
    tls = ctx.wrap_socket(raw, server_hostname="localhost")
    # Application data record with a bogus body, written on the raw socket under the TLS layer.
    os.write(tls.fileno(), b"\x17\x03\x03\x00\x40" + b"\x00" * 64)
    with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
        tls.settimeout(15)
        data = tls.recv(100)
        if not data:
            raise OSError("closed")
    assert up.paths() == []
    served_after(t, certs)


def test_stalled_handshake_is_cut_at_the_handshake_timeout(start_tern, http_upstream, backend, certs):
    """A client that sends half a ClientHello and stalls is closed at --tls-handshake-timeout (1 s here), counted
    as timeout, while others are served."""
    up = http_upstream()
    t, prom = tls_proxy(start_tern, up, backend, certs, "--tls-handshake-timeout", "1s")
    s = socket.create_connection(("127.0.0.1", t.port), timeout=10)
    s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    served_after(t, certs)
    read_until_closed(s, timeout=15)
    wait_until(lambda: failures(prom, "timeout") == 1, "the stalled handshake counted")


# ---------------------------------------------------------------------------------------------------------
# Files: bad at start, reloaded while serving
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cert,key,says", [
    ("server.crt", "mismatch.key", "mismatch.key"),
    ("missing.crt", "server.key", "missing.crt"),
    ("server.key", "server.key", "server.key: not a usable PEM certificate chain"),
])
def test_bad_files_at_start_exit_1_naming_them(certs, cert, key, says):
    """A key that does not match its certificate, a missing file, or a file that is not a certificate: tern
    exits 1 with an error line naming the file."""
    from conftest import tern_bin
    r = subprocess.run([tern_bin(), "proxy", "--http", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9",
                        "--admin", "off", "--health", "off", "--prometheus", "off",
                        "--tls-cert", os.path.join(certs, cert), "--tls-key", os.path.join(certs, key)],
                       capture_output=True, timeout=30)
    assert r.returncode == 1
    assert says in r.stderr.decode(), r.stderr.decode()


def test_certificate_rotation_under_keep_alive_load_fails_no_request(start_tern, http_upstream, backend, certs, tmp_path):
    """The certificate and key files are replaced (renamed over, as a Kubernetes secret update or cert-manager
    does) while clients keep sending: every request succeeds; an established keep-alive connection carries on
    with its session; new connections get the new certificate (RSA after ECDSA here); a reload that would break
    (a key that does not match) is refused and the working certificate keeps serving; session tickets issued
    before the reload still resume after it."""
    up = http_upstream()
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(os.path.join(certs, "server.crt"), live / "tls.crt")
    shutil.copy(os.path.join(certs, "server.key"), live / "tls.key")
    t, prom = tls_proxy(start_tern, up, backend, certs, cert=str(live / "tls.crt"), key=str(live / "tls.key"))
    ctx = client_context(certs)
    kept = TLSClient(t.port, ctx)
    assert kept.request("GET", "/before")[0] == 200
    ticket = kept.sock.session

    def key_type(c):
        return c.sock.getpeercert(binary_form=False) and subprocess.run(
            ["openssl", "x509", "-noout", "-text"], input=ssl.DER_cert_to_PEM_cert(c.sock.getpeercert(True)).encode(),
            capture_output=True).stdout.decode()

    failed, done, count = [], threading.Event(), [0]

    def load():
        c = TLSClient(t.port, ctx)
        while not done.is_set() and count[0] < 5000:
            try:
                status, _, _ = c.request("GET", f"/load{count[0]}")
                if status != 200:
                    failed.append(status)
                count[0] += 1
                if count[0] % 25 == 0:  # new connections too
                    c.close()
                    c = TLSClient(t.port, ctx)
            except Exception as e:  # noqa: BLE001 - every failure is a finding
                failed.append(repr(e))
                c = TLSClient(t.port, ctx)
        c.close()
    worker = threading.Thread(target=load)
    worker.start()
    try:
        wait_until(lambda: count[0] >= 50, "load running")
        shutil.copy(os.path.join(certs, "rsa.crt"), live / "tls.crt.new")
        shutil.copy(os.path.join(certs, "rsa.key"), live / "tls.key.new")
        os.rename(live / "tls.key.new", live / "tls.key")
        os.rename(live / "tls.crt.new", live / "tls.crt")
        wait_until(lambda: metric(prom, "tern_tls_certificate_reloads_total") >= 1, "the reload applied")
        fresh = TLSClient(t.port, ctx)
        assert "rsaEncryption" in key_type(fresh)
        assert fresh.request("GET", "/fresh")[0] == 200
        fresh.close()
        assert kept.request("GET", "/kept")[0] == 200  # the established connection carries on
        resumed = TLSClient(t.port, ctx, session=ticket)
        assert resumed.request("GET", "/resumed")[0] == 200
        assert resumed.sock.session_reused, "a ticket from before the reload did not resume"
        resumed.close()
        # A key that does not match: refused, the RSA certificate keeps serving.
        shutil.copy(os.path.join(certs, "mismatch.key"), live / "tls.key.new")
        os.rename(live / "tls.key.new", live / "tls.key")
        wait_until(lambda: metric(prom, "tern_tls_certificate_reloads_refused_total") >= 1, "the bad reload refused")
        again = TLSClient(t.port, ctx)
        assert "rsaEncryption" in key_type(again)
        assert again.request("GET", "/still")[0] == 200
        again.close()
        wait_until(lambda: count[0] >= 300, "more load after the reloads")
    finally:
        done.set()
        worker.join(60)
    kept.close()
    assert failed == []


# ---------------------------------------------------------------------------------------------------------
# Origination: DestinationRule trafficPolicy.tls
# ---------------------------------------------------------------------------------------------------------

ORIGINATION = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api, namespace: default}}
spec:
  hosts: [localhost, a.example.com, c.example.com]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: api, namespace: default}}
spec:
  host: localhost
  trafficPolicy:
    tls:
{tls}
"""


def upstream_context(certs, cert="server-chain.crt", key="server.key", client_ca=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(certs, cert), os.path.join(certs, key))
    if client_ca:
        ctx.load_verify_locations(os.path.join(certs, client_ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def originating(start_tern, up, backend, certs, tmp_path, tls, *extra, host_rule="localhost"):
    """Tern routing plaintext HTTP by Host to `up` through a DestinationRule whose tls block is `tls` (YAML lines,
    indented for `tls:`); returns (tern, prometheus port, access log path)."""
    config = tmp_path / "config.yaml"
    lines = "\n".join("      " + line for line in tls.format(certs=certs).splitlines())
    config.write_text(ORIGINATION.format(port=up.port, tls=lines).replace("host: localhost", f"host: {host_rule}"))
    prom = dead_port()
    log = tmp_path / "access.log"
    t = start_tern("--http", "--listen", "127.0.0.1:0", "--config", str(config), "--io-backend", backend, "--cores", "1",
                   "--admin", "off", "--health", "off", "--prometheus", f"127.0.0.1:{prom}", "--access-log", str(log),
                   *extra)
    return t, prom, str(log)


def get(port, path, host="localhost"):
    r = httpx.get(f"http://127.0.0.1:{port}{path}", headers={"Host": host}, timeout=30, trust_env=False)
    return r.status_code, r.content


def test_simple_originates_tls_with_auto_sni_and_pools_connections(start_tern, http_upstream, backend, certs, tmp_path):
    """mode SIMPLE with caCertificates: plaintext in, TLS to the upstream, its certificate verified against the
    request's Host (Envoy's auto SNI and SAN validation); keep-alive requests share one pooled TLS connection."""
    up = http_upstream(HttpUpstream_tls(certs))
    t, prom, _ = originating(start_tern, up, backend, certs, tmp_path, "mode: SIMPLE\ncaCertificates: {certs}/ca.crt")
    with httpx.Client(base_url=f"http://127.0.0.1:{t.port}", headers={"Host": "localhost"}, timeout=30, trust_env=False) as c:
        for i in range(5):
            r = c.get(f"/o{i}")
            assert (r.status_code, r.content) == (200, f"/o{i}".encode())
    assert up.accepted == 1
    assert [h["sni"] for h in up.handshakes] == ["localhost"]
    assert metric(prom, "tern_tls_handshakes_total", side="upstream") == 1


def HttpUpstream_tls(certs, **kw):
    from http_peers import TLSHttpUpstream
    return TLSHttpUpstream.with_context(upstream_context(certs, **kw))


def test_simple_with_sni_sends_it_and_verifies_it(start_tern, http_upstream, backend, certs, tmp_path):
    """An explicit sni is sent whatever the Host, and is the name the certificate must carry."""
    up = http_upstream(HttpUpstream_tls(certs))
    t, _, _ = originating(start_tern, up, backend, certs, tmp_path, "mode: SIMPLE\ncaCertificates: {certs}/ca.crt\nsni: x.b.example.com")
    assert get(t.port, "/sni") == (200, b"/sni")
    assert [h["sni"] for h in up.handshakes] == ["x.b.example.com"]


def test_certificate_that_does_not_name_the_host_fails_with_envoys_503(start_tern, http_upstream, backend, certs, tmp_path):
    """The upstream's certificate lacks the SNI's name (c.example.com): 503 UF with Envoy's body and the TLS
    transport failure reason, in the access log too, counted as an upstream TLS failure; nothing sent in the
    clear."""
    up = http_upstream(HttpUpstream_tls(certs))
    t, prom, log = originating(start_tern, up, backend, certs, tmp_path, "mode: SIMPLE\ncaCertificates: {certs}/ca.crt",
                               host_rule="c.example.com")
    status, body = get(t.port, "/x", host="c.example.com")
    assert status == 503
    assert body.startswith(b"upstream connect error or disconnect/reset before headers. reset reason: connection failure, "
                           b"transport failure reason: TLS_error:|"), body
    assert b"certificate verify failed" in body and body.endswith(b":TLS_error_end"), body
    [line] = access_log(log, 1)
    # A TLS failure is a connect failure: Istio's default retries (2) try twice more, then Envoy's UF,URX.
    assert line["response_flags"] == "UF,URX"
    assert line["upstream_transport_failure_reason"].startswith("TLS_error:|")
    assert metric(prom, "tern_tls_handshake_failures_total", side="upstream", reason="san_mismatch") == 3
    assert up.requests == []


@pytest.mark.parametrize("sans,ok", [("[a.example.com]", True), ("[spiffe://cluster.local/ns/default/sa/api]", False)])
def test_subject_alt_names_are_checked(start_tern, http_upstream, backend, certs, tmp_path, sans, ok):
    """subjectAltNames replace the SNI as the names the certificate must carry (any one of them)."""
    up = http_upstream(HttpUpstream_tls(certs))
    t, prom, _ = originating(start_tern, up, backend, certs, tmp_path,
                             "mode: SIMPLE\ncaCertificates: {certs}/ca.crt\nsni: localhost\nsubjectAltNames: " + sans)
    status, body = get(t.port, "/san")
    if ok:
        assert (status, body) == (200, b"/san")
    else:
        assert status == 503 and b"TLS_error" in body, body
        # The first try and Istio's 2 default retries of a connect failure.
        assert metric(prom, "tern_tls_handshake_failures_total", side="upstream", reason="san_mismatch") == 3


def test_unknown_ca_fails_and_insecure_skip_verify_accepts_it(start_tern, http_upstream, backend, certs, tmp_path):
    """An upstream certificate from another CA fails verification (503 UF); insecureSkipVerify: true accepts it."""
    up = http_upstream(HttpUpstream_tls(certs, cert="other.crt", key="other.key"))
    t, _, _ = originating(start_tern, up, backend, certs, tmp_path, "mode: SIMPLE\ncaCertificates: {certs}/ca.crt")
    status, body = get(t.port, "/x")
    assert status == 503 and b"certificate verify failed" in body, body
    up2 = http_upstream(HttpUpstream_tls(certs, cert="other.crt", key="other.key"))
    t2, _, _ = originating(start_tern, up2, backend, certs, tmp_path / "..",
                           "mode: SIMPLE\ninsecureSkipVerify: true")
    assert get(t2.port, "/insecure") == (200, b"/insecure")


def test_mutual_presents_the_client_certificate(start_tern, http_upstream, backend, certs, tmp_path):
    """mode MUTUAL: the client certificate and key are presented to an upstream that requires one."""
    up = http_upstream(HttpUpstream_tls(certs, client_ca="ca.crt"))
    t, _, _ = originating(start_tern, up, backend, certs, tmp_path,
                          "mode: MUTUAL\ncaCertificates: {certs}/ca.crt\nclientCertificate: {certs}/client.crt\n"
                          "privateKey: {certs}/client.key")
    assert get(t.port, "/m") == (200, b"/m")
    assert [h["peer"] for h in up.handshakes] == ["spiffe://cluster.local/ns/default/sa/client"]


def test_credential_name_reads_a_mounted_secret(start_tern, http_upstream, backend, certs, tmp_path):
    """credentialName NAME with --credentials-dir DIR: DIR/NAME/tls.crt, tls.key and ca.crt, as a mounted
    Kubernetes TLS secret holds them."""
    secret = tmp_path / "creds" / "api-client"
    secret.mkdir(parents=True)
    shutil.copy(os.path.join(certs, "client.crt"), secret / "tls.crt")
    shutil.copy(os.path.join(certs, "client.key"), secret / "tls.key")
    shutil.copy(os.path.join(certs, "ca.crt"), secret / "ca.crt")
    up = http_upstream(HttpUpstream_tls(certs, client_ca="ca.crt"))
    t, _, _ = originating(start_tern, up, backend, certs, tmp_path, "mode: MUTUAL\ncredentialName: api-client",
                          "--credentials-dir", str(tmp_path / "creds"))
    assert get(t.port, "/cred") == (200, b"/cred")
    assert [h["peer"] for h in up.handshakes] == ["spiffe://cluster.local/ns/default/sa/client"]


def test_new_upstream_connections_resume_the_session(start_tern, http_upstream, backend, certs, tmp_path):
    """Each request closes its upstream connection (the upstream answers connection: close): every handshake after
    the first resumes the pool's session, counted in tern_tls_resumed_handshakes_total{side="upstream"}."""
    up = http_upstream(HttpUpstream_tls(certs))
    t, prom, _ = originating(start_tern, up, backend, certs, tmp_path, "mode: SIMPLE\ncaCertificates: {certs}/ca.crt")
    for _ in range(4):
        assert get(t.port, "/connection-close")[0] == 200
    wait_until(lambda: len(up.handshakes) == 4, "four upstream handshakes")
    assert [h["resumed"] for h in up.handshakes] == [False, True, True, True]
    assert metric(prom, "tern_tls_resumed_handshakes_total", side="upstream") == 3


def test_bad_ca_file_refuses_the_configuration(certs, tmp_path):
    """A caCertificates file that cannot be used refuses the configuration at start (exit 1, naming the rule and
    the file)."""
    from conftest import tern_bin
    config = tmp_path / "config.yaml"
    config.write_text(ORIGINATION.format(port=9, tls="      mode: SIMPLE\n      caCertificates: /nonexistent/ca.pem"))
    r = subprocess.run([tern_bin(), "proxy", "--http", "--listen", "127.0.0.1:0", "--config", str(config),
                        "--admin", "off", "--health", "off", "--prometheus", "off"], capture_output=True, timeout=30)
    assert r.returncode == 1
    err = r.stderr.decode()
    assert "DestinationRule for localhost" in err and "/nonexistent/ca.pem" in err, err


def nginx_conf(tmp_path, server):
    """An nginx configuration in tmp_path with one server block holding `server`; returns its path."""
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""
daemon off; worker_processes 1; error_log {tmp_path}/error.log; pid {tmp_path}/nginx.pid;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {tmp_path}; proxy_temp_path {tmp_path}; fastcgi_temp_path {tmp_path};
  uwsgi_temp_path {tmp_path}; scgi_temp_path {tmp_path};
  server {{{server}
  }}
}}
""")
    return conf


def test_nginx_as_the_tls_upstream(start_tern, backend, certs, tmp_path):
    """nginx serving HTTPS with the test certificate, Tern originating SIMPLE to it with auto SNI."""
    assert shutil.which("nginx"), "nginx is installed by Tools/scripts/setup.sh"
    port = dead_port()
    conf = nginx_conf(tmp_path, f"""
    listen 127.0.0.1:{port} ssl; server_name localhost;
    ssl_certificate {certs}/server-chain.crt; ssl_certificate_key {certs}/server.key; ssl_protocols TLSv1.2 TLSv1.3;
    location / {{ return 200 "nginx:$ssl_server_name:$ssl_protocol"; }}""")
    with PeerProcess(["nginx", "-c", str(conf), "-p", str(tmp_path)], port):
        up = SimpleNamespace(port=port)  # (what originating needs of an upstream)
        t, _, _ = originating(start_tern, up, backend, certs, tmp_path, "mode: SIMPLE\ncaCertificates: {certs}/ca.crt")
        assert get(t.port, "/") == (200, b"nginx:localhost:TLSv1.3")


class PeerProcess:
    """A peer process (nginx, HAProxy, openssl s_server) that listens on `port`: started, waited for until it
    accepts, stopped at the end of the with block."""

    def __init__(self, cmd, port):
        self.cmd, self.port = cmd, port

    def __enter__(self):
        self.p = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def accepting():
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_until(accepting, f"{self.cmd[0]} listening")
        return self

    def __exit__(self, *exc):
        self.p.terminate()
        self.p.wait(10)


def haproxy_conf(tmp_path, sections):
    """An HAProxy configuration (HTTP mode, short timeouts) in tmp_path ending with `sections`; returns its path."""
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text("global\n    maxconn 100\ndefaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n"
                   "    timeout server 30s\n" + sections)
    return cfg


def test_haproxy_as_the_mutual_tls_upstream(start_tern, backend, certs, tmp_path):
    """HAProxy serving HTTPS that requires a client certificate from the test CA: Tern originates MUTUAL to it,
    and HAProxy sees Tern's client certificate and the SNI."""
    assert shutil.which("haproxy"), "haproxy is installed by Tools/scripts/setup.sh"
    port = dead_port()
    pem = tmp_path / "haproxy.pem"
    pem.write_bytes(open(os.path.join(certs, "server-chain.crt"), "rb").read() + open(os.path.join(certs, "server.key"), "rb").read())
    cfg = haproxy_conf(tmp_path, f"""frontend fe
    bind 127.0.0.1:{port} ssl crt {pem} ca-file {certs}/ca.crt verify required
    http-request return status 200 content-type text/plain lf-string "haproxy:%[ssl_fc_sni]:%[ssl_c_s_dn(CN)]"
""")
    with PeerProcess(["haproxy", "-db", "-f", str(cfg)], port):
        up = SimpleNamespace(port=port)  # (what originating needs of an upstream)
        t, prom, _ = originating(start_tern, up, backend, certs, tmp_path,
                                 "mode: MUTUAL\ncaCertificates: {certs}/ca.crt\nclientCertificate: {certs}/client.crt\n"
                                 "privateKey: {certs}/client.key")
        assert get(t.port, "/") == (200, b"haproxy:localhost:client")
        assert get(t.port, "/again") == (200, b"haproxy:localhost:client")
    assert metric(prom, "tern_tls_handshakes_total", side="upstream") == 1  # (pooled)


def test_openssl_s_server_as_the_tls_upstream(start_tern, backend, certs, tmp_path):
    """`openssl s_server -www` (HTTP/1.0, a body ended by its close) as the upstream Tern originates SIMPLE to:
    its status page arrives whole, naming the TLS 1.3 session Tern made."""
    port = dead_port()
    with PeerProcess(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", os.path.join(certs, "server-chain.crt"),
                      "-key", os.path.join(certs, "server.key"), "-www"], port):
        up = SimpleNamespace(port=port)  # (what originating needs of an upstream)
        t, _, _ = originating(start_tern, up, backend, certs, tmp_path, "mode: SIMPLE\ncaCertificates: {certs}/ca.crt")
        status, body = get(t.port, "/")
    assert status == 200, body
    assert b"</HTML>" in body.upper() and b"TLSv1.3" in body, body


def test_nginx_as_a_tls_client_of_tern(start_tern, http_upstream, backend, certs, tmp_path):
    """nginx in front of Tern, proxying to it over TLS with verification and SNI (`proxy_ssl_verify on`): requests
    get through and the upstream sees X-Forwarded-Proto https."""
    assert shutil.which("nginx"), "nginx is installed by Tools/scripts/setup.sh"
    up = http_upstream()
    t, _ = tls_proxy(start_tern, up, backend, certs)
    port = dead_port()
    conf = nginx_conf(tmp_path, f"""
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass https://127.0.0.1:{t.port}; proxy_http_version 1.1;  # (HTTP/1.0 gets 426, as from Envoy)
      proxy_ssl_verify on; proxy_ssl_trusted_certificate {certs}/ca.crt;
      proxy_ssl_name localhost; proxy_ssl_server_name on; proxy_ssl_protocols TLSv1.3;
    }}""")
    with PeerProcess(["nginx", "-c", str(conf), "-p", str(tmp_path)], port):
        for i in range(3):
            r = httpx.get(f"http://127.0.0.1:{port}/n{i}", timeout=30, trust_env=False)
            assert (r.status_code, r.content) == (200, f"/n{i}".encode())
    assert [r.header("x-forwarded-proto") for r in up.requests] == ["https"] * 3


# ---------------------------------------------------------------------------------------------------------
# tern-load over TLS
# ---------------------------------------------------------------------------------------------------------

def tern_load(*args, timeout=60):
    from test_tern_load import tern_load_bin
    r = subprocess.run([tern_load_bin(), "--json", *args], capture_output=True, timeout=timeout)
    assert r.returncode == 0, r.stderr.decode()
    return json.loads(r.stdout)


@pytest.mark.parametrize("mode,expect_resumed", [("keep-alive", None), ("reconnect", True), ("no-resume", False)])
def test_tern_load_measures_https_with_and_without_handshakes(start_tern, http_upstream, backend, certs, mode, expect_resumed):
    """tern-load over https: keep-alive connections (one handshake each); --reconnect, a new connection per
    request resuming the session of the one before; --reconnect --no-resume, a full handshake per request. Tern's
    handshake counters agree with what tern-load did."""
    up = http_upstream()
    t, prom = tls_proxy(start_tern, up, backend, certs)
    extra = {"keep-alive": [], "reconnect": ["--reconnect"], "no-resume": ["--reconnect", "--no-resume"]}[mode]
    doc = tern_load(f"https://localhost:{t.port}/load", "--cacert", os.path.join(certs, "ca.crt"), "--connections", "2",
                    "--requests", "40", "--io-backend", backend, *extra)
    assert doc["errors"] == {"connect": 0, "timeout": 0, "reset": 0, "status_4xx": 0, "status_5xx": 0}
    assert doc["requests"] == 40
    handshakes = metric(prom, "tern_tls_handshakes_total", side="downstream")
    resumed = metric(prom, "tern_tls_resumed_handshakes_total", side="downstream")
    if expect_resumed is None:
        assert handshakes == 2 and resumed == 0
    else:
        assert handshakes >= 40
        # The first connection of each socket is in full; the rest resume (or none, with --no-resume).
        assert resumed == (handshakes - 2 if expect_resumed else 0), (handshakes, resumed)


def test_tern_load_refuses_an_unverified_server_and_insecure_accepts_it(start_tern, http_upstream, backend, certs):
    """Without the CA, tern-load's handshakes fail (connect errors, explained once on stderr); --insecure skips
    verification; mutual TLS with --cert/--key gets through --tls-client-ca."""
    up = http_upstream()
    t, _ = tls_proxy(start_tern, up, backend, certs, "--tls-client-ca", os.path.join(certs, "ca.crt"))
    from test_tern_load import tern_load_bin
    r = subprocess.run([tern_load_bin(), "--json", f"https://localhost:{t.port}/", "--connections", "1", "--duration", "500ms",
                        "--cacert", os.path.join(certs, "other-ca.crt"), "--io-backend", backend], capture_output=True, timeout=60)
    doc = json.loads(r.stdout)
    assert doc["requests"] == 0 and doc["errors"]["connect"] > 0, doc
    assert "certificate verify failed" in r.stderr.decode()
    doc = tern_load(f"https://localhost:{t.port}/", "--insecure", "--cert", os.path.join(certs, "client.crt"),
                    "--key", os.path.join(certs, "client.key"), "--connections", "1", "--requests", "5", "--io-backend", backend)
    assert doc["requests"] == 5 and doc["errors"]["connect"] == 0


# ---------------------------------------------------------------------------------------------------------
# SNI routing without termination
# ---------------------------------------------------------------------------------------------------------

SNI_CONFIG = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: a, namespace: default}}
spec:
  hosts: [a.example.com]
  ports: [{{number: {port}, name: tls, protocol: TLS}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{tls: {a}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: b, namespace: default}}
spec:
  hosts: ["*.b.example.com"]
  ports: [{{number: {port}, name: https, protocol: HTTPS}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{https: {b}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: localhost, namespace: default}}
spec:
  hosts: [localhost]
  ports: [{{number: {port}, name: tls, protocol: TLS}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{tls: {a}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: steer, namespace: default}}
spec:
  hosts: [localhost]
  tls:
  - match: [{{sniHosts: [localhost], port: {port}}}]
    route: [{{destination: {{host: "x.b.example.com"}}}}]
"""


def sni_relay(start_tern, http_upstream, backend, certs, tmp_path):
    """A TCP listener routing by SNI: a.example.com to upstream A, *.b.example.com to upstream B (both TLS servers
    with the test certificate), and localhost steered to B by a VirtualService tls route."""
    a = http_upstream(HttpUpstream_tls(certs))
    b = http_upstream(HttpUpstream_tls(certs))
    port = dead_port()
    config = tmp_path / "sni.yaml"
    config.write_text(SNI_CONFIG.format(port=port, a=a.port, b=b.port))
    log = tmp_path / "access.log"
    t = start_tern("--listen", f"127.0.0.1:{port}", "--config", str(config), "--io-backend", backend, "--cores", "1",
                   "--admin", "off", "--health", "off", "--prometheus", "off", "--access-log", str(log))
    return t, a, b, str(log)


def tls_get(port, certs, name, path="/"):
    """A TLS request straight through (Tern does not terminate): the upstream's certificate verified for `name`."""
    c = TLSClient(port, ssl.create_default_context(cafile=os.path.join(certs, "ca.crt")), server_name=name)
    try:
        return c.request("GET", path)[0]
    finally:
        c.close()


def test_sni_routes_two_names_to_two_upstreams(start_tern, http_upstream, backend, certs, tmp_path):
    """Connections carrying SNI a.example.com reach A, x.b.example.com (a wildcard ServiceEntry host) reaches B,
    each with its bytes untouched (the client verifies the upstream's own certificate); a VirtualService tls route
    steers localhost to B; the access log has the server name."""
    t, a, b, log = sni_relay(start_tern, http_upstream, backend, certs, tmp_path)
    assert tls_get(t.port, certs, "a.example.com", "/to-a") == 200
    assert tls_get(t.port, certs, "x.b.example.com", "/to-b") == 200
    assert tls_get(t.port, certs, "localhost", "/steered") == 200
    assert a.paths() == ["/to-a"]
    assert b.paths() == ["/to-b", "/steered"]
    assert [h["sni"] for h in a.handshakes] == ["a.example.com"]
    lines = access_log(log, 3)
    assert sorted(l["requested_server_name"] for l in lines) == ["a.example.com", "localhost", "x.b.example.com"]


def test_sni_unknown_name_plaintext_and_garbage_are_closed(start_tern, http_upstream, backend, certs, tmp_path):
    """An SNI no route names, a ClientHello without SNI, plaintext, and garbage: each connection is closed and
    nothing reaches an upstream; Tern serves on."""
    t, a, b, _ = sni_relay(start_tern, http_upstream, backend, certs, tmp_path)
    with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
        tls_get(t.port, certs, "c.example.com")
    for payload in (b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n", bytes(range(256)) * 4):
        s = socket.create_connection(("127.0.0.1", t.port), timeout=10)
        s.sendall(payload)
        read_until_closed(s)
    assert a.accepted == 0 and b.accepted == 0
    assert tls_get(t.port, certs, "a.example.com") == 200


def test_sni_clienthello_split_over_segments_still_routes(start_tern, http_upstream, backend, certs, tmp_path):
    """A ClientHello sent in three pieces, 50 ms apart (TCP segments; the first too short to hold the name), is
    read once whole enough and routed."""
    t, a, _, _ = sni_relay(start_tern, http_upstream, backend, certs, tmp_path)
    ctx = ssl.create_default_context(cafile=os.path.join(certs, "ca.crt"))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="a.example.com")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = outgoing.read()
    s = socket.create_connection(("127.0.0.1", t.port), timeout=15)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for piece in (hello[:20], hello[20:60], hello[60:]):
        s.sendall(piece)
        # Spacing only, so the pieces tend to arrive apart; nothing is asserted on time (coalesced pieces
        # still route, and make the test no weaker than a whole hello).
        time.sleep(0.05)
    # Finish the handshake over the socket by hand, then one request.
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            data = outgoing.read()
            if data:
                s.sendall(data)
            got = s.recv(65536)
            assert got, "closed during the handshake"
            incoming.write(got)
    s.sendall(outgoing.read())
    obj.write(b"GET /split HTTP/1.1\r\nHost: a.example.com\r\n\r\n")
    s.sendall(outgoing.read())
    reply = b""
    while b"\r\n\r\n" not in reply:
        try:
            reply += obj.read(65536)
        except ssl.SSLWantReadError:
            incoming.write(s.recv(65536))
    assert reply.startswith(b"HTTP/1.1 200"), reply
    assert a.paths() == ["/split"]


# ---------------------------------------------------------------------------------------------------------
# Found in review
# ---------------------------------------------------------------------------------------------------------

def test_mutual_tls_clients_resume_their_sessions(start_tern, http_upstream, backend, certs):
    """With --tls-client-ca, a client offering its session ticket resumes (OpenSSL needs a session id context for
    that, else it fails every such handshake)."""
    up = http_upstream()
    t, prom = tls_proxy(start_tern, up, backend, certs, "--tls-client-ca", os.path.join(certs, "ca.crt"))
    ctx = client_context(certs, cert="client.crt", key="client.key")
    first = TLSClient(t.port, ctx)
    assert first.request("GET", "/one")[0] == 200
    session = first.sock.session
    first.close()
    again = TLSClient(t.port, ctx, session=session)
    assert again.request("GET", "/two")[0] == 200
    assert again.sock.session_reused
    again.close()
    assert metric(prom, "tern_tls_resumed_handshakes_total", side="downstream") == 1


def test_upstream_closing_without_close_notify_ends_a_close_delimited_body(start_tern, http_upstream, backend, certs, tmp_path):
    """An upstream answering with a body delimited by its close, and closing without close_notify (as many
    HTTP/1.1 servers do), completes the response: an end of stream, not a broken connection."""
    up = http_upstream(HttpUpstream_tls(certs))
    t, _, log = originating(start_tern, up, backend, certs, tmp_path, "mode: SIMPLE\ncaCertificates: {certs}/ca.crt")
    status, body = get(t.port, "/bytes/100000?framing=close")
    assert status == 200 and len(body) == 100000
    [line] = access_log(log, 1)
    assert line["response_flags"] == "-", line


def test_haproxy_as_a_tls_client_of_tern(start_tern, http_upstream, backend, certs, tmp_path):
    """HAProxy in front of Tern, speaking TLS to it with verification and SNI (its `server … ssl verify
    required`): requests get through, the upstream sees X-Forwarded-Proto https, and HAProxy's pooled
    connections make one handshake serve many requests."""
    assert shutil.which("haproxy"), "haproxy is installed by Tools/scripts/setup.sh"
    up = http_upstream()
    t, prom = tls_proxy(start_tern, up, backend, certs)
    port = dead_port()
    cfg = haproxy_conf(tmp_path, f"""    http-reuse always
frontend fe
    bind 127.0.0.1:{port}
    default_backend tern
backend tern
    server tern 127.0.0.1:{t.port} ssl verify required ca-file {certs}/ca.crt sni str(localhost) alpn http/1.1
""")
    with PeerProcess(["haproxy", "-db", "-f", str(cfg)], port):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, trust_env=False) as c:
            for i in range(5):
                r = c.get(f"/h{i}")
                assert (r.status_code, r.content) == (200, f"/h{i}".encode())
    assert [r.header("x-forwarded-proto") for r in up.requests] == ["https"] * 5
    assert metric(prom, "tern_tls_handshakes_total", side="downstream") <= 2


def security_policies(port):
    """The connection_security_policy label of every istio_requests_total sample."""
    text = httpx.get(f"http://127.0.0.1:{port}/stats/prometheus", timeout=10).text
    return sorted({line.split('connection_security_policy="', 1)[1].split('"', 1)[0]
                   for line in text.splitlines() if line.startswith("istio_requests_total{")})


@pytest.mark.parametrize("client_ca,expected", [(True, "mutual_tls"), (False, "none")])
def test_istio_metrics_say_mutual_tls_for_verified_clients(start_tern, http_upstream, backend, certs, client_ca, expected):
    """On the destination's side, Istio's connection_security_policy is mutual_tls for requests over a connection
    whose client certificate verified, none otherwise."""
    up = http_upstream()
    extra = ["--reporter", "destination"] + (["--tls-client-ca", os.path.join(certs, "ca.crt")] if client_ca else [])
    t, prom = tls_proxy(start_tern, up, backend, certs, *extra)
    args = ["--cacert", os.path.join(certs, "ca.crt")]
    if client_ca:
        args += ["--cert", os.path.join(certs, "client.crt"), "--key", os.path.join(certs, "client.key")]
    code, status, _, err = curl(t.port, "/policy", *args)
    assert (code, status) == (0, 200), err
    wait_until(lambda: security_policies(prom) == [expected], f"connection_security_policy {expected}")


class SClient:
    """`openssl s_client` to Tern's port (verifying it for localhost), its output collected as it comes."""

    def __init__(self, port, certs, *extra):
        self.p = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
                                   "-CAfile", os.path.join(certs, "ca.crt"), *extra],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.out = []
        threading.Thread(target=lambda: self.out.extend(iter(lambda: self.p.stdout.read(1) or None, None)),
                         daemon=True).start()

    def text(self):
        return b"".join(self.out).decode(errors="replace")

    def wait_for(self, words, what):
        wait_until(lambda: words in self.text(), what, timeout=30)

    def send(self, data):
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.p.kill()
        self.p.wait(10)


def test_a_key_update_from_the_client_is_answered_and_the_connection_goes_on(start_tern, http_upstream, backend, certs):
    """`openssl s_client`'s `K` command sends a TLS 1.3 KeyUpdate asking for Tern's too: Tern answers it (records
    it writes while reading) and the request after it is served on the same connection."""
    up = http_upstream()
    t, _ = tls_proxy(start_tern, up, backend, certs)
    with SClient(t.port, certs) as c:
        c.wait_for("Verify return code", "s_client connected")
        # One command per read of s_client's input: the request only once the KeyUpdate went.
        c.send(b"K\n")
        c.wait_for("KEYUPDATE", "s_client sent its KeyUpdate")
        c.send(b"GET /after-key-update HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        c.wait_for("closed", "the response and Tern's close")
    assert "HTTP/1.1 200" in c.text() and "/after-key-update" in c.text(), c.text()
    assert up.paths() == ["/after-key-update"]


# --- TLS terminated on TCP listeners (`--listen tcp:ADDR --tls-cert …`): the decrypted stream is relayed ---------

def tcp_tls_proxy(start_tern, up, backend, certs, *extra, prom=None):
    """`tern proxy` with one TCP listener terminating TLS in front of `up` (a peers.Upstream)."""
    prom = prom or dead_port()
    t = start_tern("--listen", "tcp:127.0.0.1:0", "--upstream", up.address, "--io-backend", backend, "--cores", "1",
                   "--admin", "off", "--health", "off", "--prometheus", f"127.0.0.1:{prom}",
                   "--tls-cert", os.path.join(certs, "server-chain.crt"), "--tls-key", os.path.join(certs, "server.key"),
                   *extra)
    return t, prom


def tls_stream(port, certs, cert=None, key=None, name="localhost"):
    """A TLS connection (Python's ssl, verifying Tern's certificate for `name`) to a TCP listener."""
    ctx = ssl.create_default_context(cafile=os.path.join(certs, "ca.crt"))
    if cert:
        ctx.load_cert_chain(os.path.join(certs, cert), os.path.join(certs, key))
    # (suppress_ragged_eofs off: an end without close_notify raises SSLEOFError instead of reading as b"")
    return ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30), server_hostname=name,
                           suppress_ragged_eofs=False)


def shut_write(s):
    """Half-closes the TCP connection under a TLS socket (a FIN without close_notify; the TLS object stays)."""
    d = socket.socket(fileno=os.dup(s.fileno()))
    d.shutdown(socket.SHUT_WR)
    d.close()


def exchange_both_ways(s, size, timeout=60):
    """Sends `size` bytes of the deterministic stream on TLS socket `s` while reading what comes back, in one thread
    (an SSL object must not be read and written from two at once); half-closes once all is sent (shut_write) and
    reads until close_notify. Returns (bytes received, their sha256)."""
    import selectors
    s.setblocking(False)
    out = b"".join(stream_bytes(size))
    sent, received, got = 0, 0, hashlib.sha256()
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
    deadline = time.time() + timeout
    ended = False
    while not (ended and sent == size) and time.time() < deadline:
        sel.select(1)
        while not ended:
            try:
                data = s.recv(1 << 20)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            if not data:
                ended = True
                break
            received += len(data)
            got.update(data)
        while sent < size:
            try:
                sent += s.send(out[sent:sent + (1 << 18)])
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            if sent == size:
                shut_write(s)
        sel.modify(s, (0 if ended else selectors.EVENT_READ) | (selectors.EVENT_WRITE if sent < size else 0) or selectors.EVENT_READ)
    sel.close()
    s.setblocking(True)
    return received, got.hexdigest()


def read_to_end(s):
    """Everything a TLS socket delivers until the peer's close_notify (an end without one raises SSLEOFError)."""
    got = bytearray()
    while True:
        data = s.recv(1 << 20)
        if not data:
            return bytes(got)
        got += data


def tcp_metric(prom, name, policy="none"):
    return metric(prom, name, reporter="destination", source_workload="unknown", source_canonical_service="unknown",
                  source_canonical_revision="latest", source_workload_namespace="unknown", source_principal="unknown",
                  source_app="unknown", source_version="unknown", source_cluster="unknown",
                  destination_workload="unknown", destination_workload_namespace="default",
                  destination_principal="unknown", destination_app="unknown", destination_version="unknown",
                  destination_service="unknown", destination_canonical_service="unknown",
                  destination_canonical_revision="latest", destination_service_name="unknown",
                  destination_service_namespace="unknown", destination_cluster="unknown", request_protocol="tcp",
                  response_flags="-", connection_security_policy=policy)


def test_tcp_listener_relays_the_decrypted_stream_both_ways_with_half_closes(start_tern, upstream, backend, certs):
    """8 MiB each way at once through a TCP listener terminating TLS: the upstream gets the client's plaintext
    whole (by hash) and its FIN when the client half-closes (FIN without close_notify); the client gets the
    upstream's bytes whole and then Tern's close_notify when the upstream closes its side. Counted as one TCP
    connection with its bytes."""
    size = 8 * MiB
    up = upstream(hashing_sender(size))
    t, prom = tcp_tls_proxy(start_tern, up, backend, certs)
    s = tls_stream(t.port, certs)
    received, digest = exchange_both_ways(s, size)
    assert received == size and digest == stream_sha256(size)
    wait_until(lambda: up.results == [(size, stream_sha256(size))], "the upstream's hash of the client's bytes")
    s.close()
    wait_until(lambda: tcp_metric(prom, "istio_tcp_connections_closed_total") == 1, "the connection closed")
    assert tcp_metric(prom, "istio_tcp_connections_opened_total") == 1
    assert tcp_metric(prom, "istio_tcp_received_bytes_total") == size
    assert tcp_metric(prom, "istio_tcp_sent_bytes_total") == size


@pytest.mark.parametrize("size", [300, 64 * MiB])
def test_a_client_that_half_closes_after_its_request_gets_the_whole_response(start_tern, http_upstream, backend, certs, size):
    """A TLS client sends its request and half-closes at once (FIN, as `nc -N` does): Tern sees the FIN only once
    the response has gone to the engine's sends (which hear of a send before its records are on the wire), and
    the client still gets every byte of the response."""
    up = http_upstream()
    t, _ = tls_proxy(start_tern, up, backend, certs)
    s = tls_stream(t.port, certs)
    s.sendall(build_request("GET", f"/bytes/{size}"))
    shut_write(s)
    data = bytearray()
    try:
        while True:
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    except ssl.SSLEOFError:
        pass  # (the connection ends with the close; what matters is that the response is whole)
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert len(body) == size and hashlib.sha256(body).hexdigest() == stream_sha256(size)


def test_tcp_listener_close_notify_follows_a_bulk_transfer_to_a_slow_reader(start_tern, upstream, backend, certs):
    """The upstream sends 16 MiB and closes at once, faster than the client (Python's ssl) reads, so Tern's sends
    wait on a full socket when the upstream's FIN arrives: every byte still arrives, then close_notify (a FIN
    without it would raise SSLEOFError here)."""
    size = 16 * MiB
    up = upstream(hashing_sender(size))
    t, _ = tcp_tls_proxy(start_tern, up, backend, certs)
    s = tls_stream(t.port, certs)
    shut_write(s)
    got = hashlib.sha256()
    n = 0
    while True:
        data = s.recv(1 << 20)
        if not data:
            break
        got.update(data)
        n += len(data)
    assert n == size and got.hexdigest() == stream_sha256(size)


def test_tcp_listener_server_first_protocol_with_openssl_s_client(start_tern, upstream, backend, certs):
    """A server-first protocol (the upstream greets before the client says anything, as SMTP or MySQL do): the
    greeting reaches an `openssl s_client` that sent nothing, and its answer reaches the upstream."""
    async def greet(reader, writer, up):
        writer.write(b"220 greetings\r\n")
        await writer.drain()
        line = await reader.readline()
        up.results.append(line)
        writer.write(b"221 bye " + line)
        await writer.drain()

    up = upstream(greet)
    t, _ = tcp_tls_proxy(start_tern, up, backend, certs)
    with SClient(t.port, certs, "-quiet") as c:
        c.wait_for("220 greetings", "the upstream's greeting")
        c.send(b"HELO tern\n")
        c.wait_for("221 bye HELO tern", "the upstream's answer")
    assert up.results == [b"HELO tern\n"]


def test_tcp_listener_mutual_tls_metrics_and_access_log(start_tern, upstream, backend, certs, tmp_path):
    """With --tls-client-ca, a client with a verified certificate is relayed and its TCP connection is labelled
    mutual_tls; one without a certificate fails its handshake, is counted by reason and never reaches the
    upstream. The access log has one TCP line for the relayed connection, with its bytes and TLS fields."""
    up = upstream(echo)
    log = tmp_path / "access.log"
    t, prom = tcp_tls_proxy(start_tern, up, backend, certs, "--reporter", "destination",
                            "--tls-client-ca", os.path.join(certs, "ca.crt"), "--access-log", str(log))
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        s = tls_stream(t.port, certs)
        s.sendall(b"no certificate")
        s.recv(100)
    wait_until(lambda: failures(prom, "no_certificate") == 1, "the refused handshake counted")
    s = tls_stream(t.port, certs, cert="client.crt", key="client.key", name="localhost")
    s.sendall(b"ping" * 1000)
    echoed = b""
    while len(echoed) < 4000:
        data = s.recv(65536)
        assert data
        echoed += data
    shut_write(s)
    assert read_to_end(s) == b""
    s.close()
    assert echoed == b"ping" * 1000
    wait_until(lambda: tcp_metric(prom, "istio_tcp_connections_closed_total", "mutual_tls") == 1, "closed, mutual_tls")
    assert tcp_metric(prom, "istio_tcp_connections_opened_total", "none") == 0
    assert up.connections == 1
    # The refused handshake was counted before this connection opened: a line of its own would come first.
    [line] = access_log(str(log), 1)
    assert line["protocol"] is None  # (Envoy logs "-" for TCP)
    assert (line["bytes_received"], line["bytes_sent"]) == (4000, 4000)
    assert line["upstream_host"] == up.address
    assert line["requested_server_name"] == "localhost"
    assert line["downstream_tls_version"] == "TLSv1.3"
    assert line["downstream_tls_cipher"].startswith("TLS_")


def test_tcp_listener_plaintext_and_an_unreachable_upstream_are_closed(start_tern, upstream, backend, certs, tmp_path):
    """Plaintext on the TLS TCP port is closed and counted, and nothing reaches the upstream; with the upstream
    refusing connections, a handshake that succeeds is followed by a close (flag UF in the access log)."""
    up = upstream(echo)
    t, prom = tcp_tls_proxy(start_tern, up, backend, certs)
    s = socket.create_connection(("127.0.0.1", t.port), timeout=10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    read_until_closed(s)
    wait_until(lambda: failures(prom, "http_request") == 1, "the plaintext counted")
    assert up.connections == 0
    log = tmp_path / "access.log"
    t2 = start_tern("--listen", "tcp:127.0.0.1:0", "--upstream", f"127.0.0.1:{dead_port()}", "--io-backend", backend,
                    "--cores", "1", "--admin", "off", "--health", "off", "--prometheus", "off",
                    "--access-log", str(log), "--tls-cert", os.path.join(certs, "server-chain.crt"),
                    "--tls-key", os.path.join(certs, "server.key"))
    s = tls_stream(t2.port, certs)
    assert read_to_end_or_eof(s) == b""
    [line] = access_log(str(log), 1)
    assert line["response_flags"] == "UF" and line["protocol"] is None


def read_to_end_or_eof(s):
    """What a TLS socket delivers until it ends, with or without close_notify."""
    try:
        return read_to_end(s)
    except (ssl.SSLEOFError, ConnectionResetError):
        return b""


def test_tcp_listener_idle_connections_close_at_the_idle_timeout(start_tern, upstream, backend, certs):
    """A relayed TLS connection with no byte either way for --idle-timeout is closed (both sides); one that keeps
    talking is not."""
    up = upstream(echo)
    t, prom = tcp_tls_proxy(start_tern, up, backend, certs, "--idle-timeout", "1s")
    quiet = tls_stream(t.port, certs)
    busy = tls_stream(t.port, certs)
    quiet.sendall(b"once")
    assert quiet.recv(10) == b"once"
    deadline = time.time() + 30
    while time.time() < deadline:
        busy.sendall(b"x")
        assert busy.recv(10) == b"x"
        if tcp_metric(prom, "istio_tcp_connections_closed_total") >= 1:
            break
        time.sleep(0.2)
    assert tcp_metric(prom, "istio_tcp_connections_closed_total") == 1
    assert read_to_end_or_eof(quiet) == b""
    busy.sendall(b"still")
    assert busy.recv(10) == b"still"


# The tagged echo service of test_tcp_routing, with every connection on the listener's port routed to subset v2.
TCP_TLS_CONFIG = TCP_SERVICE + """\
  - match: [{{port: {listen}}}]
    route: [{{destination: {{host: echo, subset: v2}}}}]
"""


def test_tcp_listener_with_config_routes_by_the_virtual_services_tcp_route(start_tern, upstream, backend, certs, tmp_path):
    """With --config, a TLS-terminating TCP listener's connections go where the VirtualService's tcp route for its
    port sends them (subset v2 only), with the cluster named in the access log; an HTTP listener of the same
    process terminates TLS as before."""
    v1, v2 = upstream(tagged(b"v1")), upstream(tagged(b"v2"))
    port = dead_port()
    config = tmp_path / "echo.yaml"
    config.write_text(TCP_TLS_CONFIG.format(listen=port, resolution="STATIC", v1_address="127.0.0.1", v1=v1.port, v2=v2.port))
    log = tmp_path / "access.log"
    t = start_tern("--listen", f"tcp:127.0.0.1:{port}", "--listen", "http:127.0.0.1:0", "--config", str(config),
                   "--io-backend", backend, "--cores", "1", "--admin", "off", "--health", "off", "--prometheus", "off",
                   "--access-log", str(log), "--tls-cert", os.path.join(certs, "server-chain.crt"),
                   "--tls-key", os.path.join(certs, "server.key"))
    code, status, _, err = curl(t.ports[1], "/first", "--cacert", os.path.join(certs, "ca.crt"))
    assert code == 0 and status == 404, err  # no HTTP route: answered over TLS all the same
    for i in range(4):
        s = tls_stream(port, certs)
        s.sendall(b"q%d" % i)
        assert s.recv(2) == b"v2"
        assert s.recv(2) == b"q%d" % i
        s.close()
    assert v1.connections == 0 and v2.connections == 4
    http, *tcp = access_log(str(log), 5)
    assert http["path"] == "/first"
    assert {l["upstream_cluster"] for l in tcp} == {f"outbound|{port}|v2|echo.shop.svc.cluster.local"}
    # (The TCP connections reuse the HTTP connection's slot: nothing of its request shows in their lines.)
    assert {(l["method"], l["path"], l["response_code"]) for l in tcp} == {(None, None, 0)}


def test_tcp_listener_on_a_port_routed_by_sni_routes_by_the_handshakes_name(start_tern, upstream, backend, certs, tmp_path):
    """A TLS-terminating TCP listener on a port that routes by server name (SNI_CONFIG: a ServiceEntry port with
    protocol TLS, a VirtualService tls route): the name the client sent in its handshake picks the upstream, which
    gets the decrypted bytes."""
    a, b = upstream(tagged(b"A")), upstream(tagged(b"B"))
    port = dead_port()
    config = tmp_path / "sni.yaml"
    config.write_text(SNI_CONFIG.format(port=port, a=a.port, b=b.port))
    start_tern("--listen", f"tcp:127.0.0.1:{port}", "--config", str(config), "--io-backend", backend, "--cores", "1",
               "--admin", "off", "--health", "off", "--prometheus", "off",
               "--tls-cert", os.path.join(certs, "server-chain.crt"), "--tls-key", os.path.join(certs, "server.key"))
    for name, tag in (("a.example.com", b"A"), ("x.b.example.com", b"B"), ("localhost", b"B")):
        s = tls_stream(port, certs, name=name)
        assert s.recv(1) == tag
        s.sendall(b"plain")
        assert s.recv(5) == b"plain"
        s.close()
    assert (a.connections, b.connections) == (1, 2)


TCP_ORIGINATION = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: secure-db, namespace: default}}
spec:
  hosts: [db.example.com]
  ports: [{{number: {port}, name: tcp-db, protocol: TCP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{tcp-db: {up}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: secure-db, namespace: default}}
spec:
  host: db.example.com
  trafficPolicy:
    tls: {{mode: SIMPLE, caCertificates: {certs}/ca.crt, sni: x.b.example.com}}
"""


def test_tcp_listener_originates_tls_from_the_destination_rule(start_tern, http_upstream, backend, certs, tmp_path):
    """TLS in, TLS out: a TLS-terminating TCP listener relays to a service whose DestinationRule says SIMPLE with an
    sni; the upstream's handshake carries that name and its certificate is verified; the bytes arrive whole (an
    HTTP request through the TCP tunnel, answered)."""
    up = http_upstream(HttpUpstream_tls(certs))
    port = dead_port()
    config = tmp_path / "db.yaml"
    config.write_text(TCP_ORIGINATION.format(port=port, up=up.port, certs=certs))
    t = start_tern("--listen", f"tcp:127.0.0.1:{port}", "--config", str(config), "--io-backend", backend, "--cores", "1",
                   "--admin", "off", "--health", "off", "--prometheus", "off",
                   "--tls-cert", os.path.join(certs, "server-chain.crt"), "--tls-key", os.path.join(certs, "server.key"))
    s = tls_stream(port, certs)
    s.sendall(build_request("GET", "/connection-close"))  # (answered, then the upstream closes)
    answer = read_to_end(s)  # to Tern's close_notify, sent once the upstream closed
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert up.paths() == ["/connection-close"]
    assert [h["sni"] for h in up.handshakes] == ["x.b.example.com"]
