"""`tern cert ca | issue | inspect`, the mesh CA on the command line, checked from outside with the real `openssl`
command: chains verify (strictly), the SPIFFE URI SAN is there and alone, keys are mode 0600, Istio's self-signed
and plug-in CA layouts both work as `--ca`, bad flags exit 64 and broken CAs exit 1 with a line naming the file,
and two workloads' certificates carry a mutual TLS handshake between `openssl s_server` and `s_client`.
"""
import base64
import calendar
import os
import re
import select
import stat
import subprocess
import time

import pytest

from conftest import tern_bin
from peers import free_port

SPIFFE_WEB = "spiffe://cluster.local/ns/default/sa/web"


def tern_cert(*args, timeout=60):
    return subprocess.run([tern_bin(), "cert", *map(str, args)], capture_output=True, text=True, timeout=timeout)


def ok(*args):
    r = tern_cert(*args)
    assert r.returncode == 0, r.stderr
    return r


def openssl(*args, check=True):
    r = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def pem_count(path):
    return open(path).read().count("-----BEGIN CERTIFICATE-----")


def verify_chain(directory):
    """`openssl verify` of a workload's cert-chain.pem (leaf first) against its root-cert.pem, strictly."""
    chain = os.path.join(directory, "cert-chain.pem")
    return openssl("verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", os.path.join(directory, "root-cert.pem"),
                   "-untrusted", chain, chain, check=False)


@pytest.fixture
def root_ca(tmp_path):
    d = tmp_path / "root"
    ok("ca", "--out", d)
    return d


@pytest.fixture
def intermediate_ca(tmp_path, root_ca):
    d = tmp_path / "intermediate"
    ok("ca", "--out", d, "--root-cert", root_ca / "root-cert.pem", "--root-key", root_ca / "root-key.pem")
    return d


def test_root_ca_has_istios_self_signed_shape_and_private_key(root_ca):
    assert sorted(os.listdir(root_ca)) == ["root-cert.pem", "root-key.pem"]
    assert mode(root_ca / "root-key.pem") == 0o600
    assert mode(root_ca / "root-cert.pem") == 0o644
    assert mode(root_ca) == 0o700
    cert = root_ca / "root-cert.pem"
    assert openssl("x509", "-in", cert, "-noout", "-subject").stdout.strip() == "subject=O = cluster.local"
    ext = openssl("x509", "-in", cert, "-noout", "-ext", "basicConstraints,keyUsage").stdout
    assert "Basic Constraints: critical" in ext and "CA:TRUE" in ext
    assert "Key Usage: critical" in ext and "Certificate Sign, CRL Sign" in ext
    assert openssl("verify", "-x509_strict", "-CAfile", cert, cert).returncode == 0
    assert "BEGIN PRIVATE KEY" in open(root_ca / "root-key.pem").read()


def test_issue_from_root_verifies_with_openssl_and_carries_one_spiffe_uri(tmp_path, root_ca):
    out = tmp_path / "web"
    r = ok("issue", "--ca", root_ca, "--namespace", "default", "--service-account", "web", "--out", out)
    assert SPIFFE_WEB in r.stdout
    assert sorted(os.listdir(out)) == ["cert-chain.pem", "key.pem", "root-cert.pem"]
    assert mode(out / "key.pem") == 0o600
    assert pem_count(out / "cert-chain.pem") == 1
    assert open(out / "root-cert.pem").read() == open(root_ca / "root-cert.pem").read()
    v = verify_chain(out)
    assert v.returncode == 0 and ": OK" in v.stdout, v.stdout + v.stderr
    chain = out / "cert-chain.pem"
    san = openssl("x509", "-in", chain, "-noout", "-ext", "subjectAltName").stdout
    assert "critical" in san  # the subject is empty (RFC 5280 §4.2.1.6)
    assert re.findall(r"URI:\S+", san) == [f"URI:{SPIFFE_WEB}"]
    text = openssl("x509", "-in", chain, "-noout", "-text").stdout
    assert "Subject: \n" in text or re.search(r"Subject:\s*$", text, re.M)
    assert "CA:FALSE" in text
    assert "Digital Signature, Key Encipherment" in text
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text
    assert "ASN1 OID: prime256v1" in text and "ecdsa-with-SHA256" in text
    # The key is the certificate's.
    pub_cert = openssl("x509", "-in", chain, "-noout", "-pubkey").stdout
    pub_key = openssl("pkey", "-in", out / "key.pem", "-pubout").stdout
    assert pub_cert == pub_key
    # 24 h by default, starting two minutes back (Istio's clock-skew allowance).
    dates = openssl("x509", "-in", chain, "-noout", "-startdate", "-enddate").stdout
    start, end = (calendar.timegm(time.strptime(m, "%b %d %H:%M:%S %Y GMT")) for m in
                  re.findall(r"=(\w+ +\d+ [\d:]+ \d+ GMT)", dates))
    assert end - start == 24 * 3600 + 120


def test_rsa_keys_and_another_trust_domain(tmp_path):
    ca = tmp_path / "ca"
    ok("ca", "--out", ca, "--trust-domain", "example.org", "--key-type", "rsa-2048", "--ttl", "8760h")
    out = tmp_path / "w"
    ok("issue", "--ca", ca, "--namespace", "shop", "--service-account", "cart.v2", "--out", out,
       "--key-type", "rsa-2048", "--ttl", "1h")
    text = openssl("x509", "-in", out / "cert-chain.pem", "-noout", "-text").stdout
    assert "Public-Key: (2048 bit)" in text and "sha256WithRSAEncryption" in text
    assert "URI:spiffe://example.org/ns/shop/sa/cart.v2" in text
    assert verify_chain(out).returncode == 0
    # --trust-domain on issue overrides the CA's.
    ok("issue", "--ca", ca, "--namespace", "shop", "--service-account", "cart", "--out", out, "--trust-domain", "alias.example")
    assert "URI:spiffe://alias.example/ns/shop/sa/cart" in openssl("x509", "-in", out / "cert-chain.pem", "-noout", "-ext", "subjectAltName").stdout


def test_intermediate_ca_is_istios_plug_in_layout_and_issues_through_it(tmp_path, root_ca, intermediate_ca):
    d = intermediate_ca
    assert sorted(os.listdir(d)) == ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"]
    assert mode(d / "ca-key.pem") == 0o600
    assert pem_count(d / "cert-chain.pem") == 2
    assert open(d / "cert-chain.pem").read() == open(d / "ca-cert.pem").read() + open(root_ca / "root-cert.pem").read()
    assert openssl("verify", "-x509_strict", "-CAfile", d / "root-cert.pem", d / "ca-cert.pem").returncode == 0
    subject = openssl("x509", "-in", d / "ca-cert.pem", "-noout", "-subject").stdout
    assert "O = cluster.local" in subject and "CN = Intermediate CA" in subject
    out = tmp_path / "web"
    ok("issue", "--ca", d, "--namespace", "default", "--service-account", "web", "--out", out)
    assert pem_count(out / "cert-chain.pem") == 2  # leaf, then the intermediate; not the root
    v = verify_chain(out)
    assert v.returncode == 0, v.stdout + v.stderr
    # Without the intermediate the leaf does not reach the root.
    leaf = tmp_path / "leaf.pem"
    openssl("x509", "-in", out / "cert-chain.pem", "-out", leaf)
    assert openssl("verify", "-CAfile", out / "root-cert.pem", leaf, check=False).returncode != 0


def snapshot(directory):
    return {name: open(directory / name, "rb").read() for name in sorted(os.listdir(directory))}


def assert_refused(r, name):
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0], r.stderr


def test_existing_ca_key_is_not_overwritten_without_force(root_ca):
    before = open(root_ca / "root-key.pem").read()
    r = tern_cert("ca", "--out", root_ca)
    assert_refused(r, "root-key.pem")
    assert "--force" in r.stderr
    assert open(root_ca / "root-key.pem").read() == before
    ok("ca", "--out", root_ca, "--force")
    assert open(root_ca / "root-key.pem").read() != before
    assert mode(root_ca / "root-key.pem") == 0o600


def test_ca_refuses_any_file_it_would_write_and_another_cas_key(tmp_path, root_ca, intermediate_ca):
    root_files, intermediate_files = snapshot(root_ca), snapshot(intermediate_ca)
    root_args = ["--root-cert", root_ca / "root-cert.pem", "--root-key", root_ca / "root-key.pem"]
    # Only a certificate left (the key moved away): still refused, root-cert.pem unchanged.
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "root-cert.pem").write_bytes(root_files["root-cert.pem"])
    assert_refused(tern_cert("ca", "--out", lone), "root-cert.pem")
    assert snapshot(lone) == {"root-cert.pem": root_files["root-cert.pem"]}
    # An intermediate over a workload's directory (its root-cert.pem, cert-chain.pem).
    web = tmp_path / "web"
    ok("issue", "--ca", root_ca, "--namespace", "default", "--service-account", "web", "--out", web)
    web_files = snapshot(web)
    assert_refused(tern_cert("ca", "--out", web, *root_args), "exists")
    assert snapshot(web) == web_files
    # The other layout's CA: an intermediate into the root's directory, a root into the intermediate's.
    r = tern_cert("ca", "--out", root_ca, *root_args)
    assert_refused(r, "root-key.pem")
    assert snapshot(root_ca) == root_files
    r = tern_cert("ca", "--out", intermediate_ca)
    assert_refused(r, "ca-key.pem")
    assert snapshot(intermediate_ca) == intermediate_files
    only_key = tmp_path / "only-key"
    only_key.mkdir()
    (only_key / "ca-key.pem").write_bytes(intermediate_files["ca-key.pem"])
    assert_refused(tern_cert("ca", "--out", only_key), "ca-key.pem")
    assert sorted(os.listdir(only_key)) == ["ca-key.pem"]
    assert_refused(tern_cert("ca", "--out", intermediate_ca, *root_args), "ca-key.pem")
    assert snapshot(intermediate_ca) == intermediate_files
    # --force replaces them.
    ok("ca", "--out", intermediate_ca, *root_args, "--force")
    assert snapshot(intermediate_ca)["ca-key.pem"] != intermediate_files["ca-key.pem"]


def test_issue_never_writes_into_a_ca_directory_but_rotates_its_own_files(tmp_path, root_ca, intermediate_ca):
    for ca_dir, key in ((root_ca, "root-key.pem"), (intermediate_ca, "ca-key.pem")):
        before = snapshot(ca_dir)
        r = tern_cert("issue", "--ca", root_ca, "--namespace", "default", "--service-account", "web", "--out", ca_dir)
        assert_refused(r, key)
        assert snapshot(ca_dir) == before  # root-cert.pem (and the plug-in CA's cert-chain.pem) untouched
    out = tmp_path / "web"
    ok("issue", "--ca", intermediate_ca, "--namespace", "default", "--service-account", "web", "--out", out)
    first = snapshot(out)
    ok("issue", "--ca", intermediate_ca, "--namespace", "default", "--service-account", "web", "--out", out)
    second = snapshot(out)
    assert second["key.pem"] != first["key.pem"] and second["cert-chain.pem"] != first["cert-chain.pem"]
    assert verify_chain(out).returncode == 0


def corrupt_signature(pem_path, out_path):
    """The certificate of `pem_path` with the last byte of its signature changed: it still parses."""
    body = "".join(line for line in open(pem_path).read().splitlines() if not line.startswith("-----"))
    der = bytearray(base64.b64decode(body))
    der[-1] ^= 0x01
    text = base64.encodebytes(bytes(der)).decode().replace("\n", "")
    lines = [text[i:i + 64] for i in range(0, len(text), 64)]
    open(out_path, "w").write("-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n")


def test_a_root_whose_own_signature_is_wrong_is_refused(tmp_path, root_ca):
    bad = tmp_path / "bad"
    bad.mkdir()
    corrupt_signature(root_ca / "root-cert.pem", bad / "root-cert.pem")
    (bad / "root-key.pem").write_bytes(open(root_ca / "root-key.pem", "rb").read())
    os.chmod(bad / "root-key.pem", 0o600)
    # OpenSSL trusts an anchor's signature unchecked unless asked: the premise of the test.
    assert openssl("verify", "-CAfile", bad / "root-cert.pem", bad / "root-cert.pem", check=False).returncode == 0
    assert openssl("verify", "-check_ss_sig", "-CAfile", bad / "root-cert.pem", bad / "root-cert.pem", check=False).returncode != 0
    r = tern_cert("issue", "--ca", bad, "--namespace", "default", "--service-account", "web", "--out", tmp_path / "w")
    assert r.returncode == 1 and "does not verify" in r.stderr and "signature" in r.stderr, r.stderr
    r = tern_cert("ca", "--out", tmp_path / "i", "--root-cert", bad / "root-cert.pem", "--root-key", bad / "root-key.pem")
    assert r.returncode == 1 and "signature" in r.stderr, r.stderr
    assert not (tmp_path / "w").exists() and not (tmp_path / "i").exists()


def test_a_rotation_bundle_does_not_cut_the_ca_short(tmp_path, root_ca):
    # root-cert.pem of a plug-in CA with its root and an unrelated one that expires in an hour.
    other = tmp_path / "other"
    ok("ca", "--out", other, "--ttl", "1h")
    ca = tmp_path / "ca"
    ok("ca", "--out", ca, "--root-cert", root_ca / "root-cert.pem", "--root-key", root_ca / "root-key.pem", "--ttl", "720h")
    os.chmod(ca / "root-cert.pem", 0o644)
    (ca / "root-cert.pem").write_text(open(other / "root-cert.pem").read() + open(root_ca / "root-cert.pem").read())
    out = tmp_path / "web"
    r = ok("issue", "--ca", ca, "--namespace", "default", "--service-account", "web", "--out", out, "--ttl", "48h")
    assert "shortened" not in r.stdout, r.stdout
    dates = openssl("x509", "-in", out / "cert-chain.pem", "-noout", "-startdate", "-enddate").stdout
    start, end = (calendar.timegm(time.strptime(m, "%b %d %H:%M:%S %Y GMT")) for m in
                  re.findall(r"=(\w+ +\d+ [\d:]+ \d+ GMT)", dates))
    assert end - start == 48 * 3600 + 120


@pytest.mark.parametrize("args,flag", [
    (["issue", "--namespace", "Bad_NS", "--service-account", "web"], "--namespace"),
    (["issue", "--namespace", "default", "--service-account", "a/b"], "--service-account"),
    (["issue", "--namespace", "default", "--service-account", ".."], "--service-account"),
    (["issue", "--namespace", "default", "--service-account", "web", "--ttl", "forever"], "--ttl"),
    (["issue", "--namespace", "default", "--service-account", "web", "--ttl", "2161h"], "--ttl"),
    (["issue", "--namespace", "default", "--service-account", "web", "--key-type", "dsa"], "--key-type"),
    (["issue", "--namespace", "default", "--service-account", "web", "--trust-domain", "Cluster.Local"], "--trust-domain"),
    (["ca", "--root-cert", "x.pem"], "--root-key"),
    (["ca", "--ttl", "10"], "--ttl"),
    (["ca", "--trust-domain", "a" * 65], "--trust-domain"),
    (["ca", "--trust-domain", "a" * 256], "--trust-domain"),
    (["issue", "--namespace", "default", "--service-account", "web", "--trust-domain", "a" * 256], "--trust-domain"),
])
def test_bad_flags_exit_64_with_one_line_naming_the_flag(tmp_path, root_ca, args, flag):
    if args[0] == "issue":
        args = [*args, "--ca", root_ca]
    r = tern_cert(*args, "--out", tmp_path / "out")
    assert r.returncode == 64, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0], r.stderr
    assert not (tmp_path / "out").exists()


def test_missing_flag_exits_64():
    r = tern_cert("issue", "--namespace", "default", "--service-account", "web", "--out", "/tmp/never")
    assert r.returncode == 64 and "--ca" in r.stderr


def test_unusable_ca_exits_1_naming_the_file(tmp_path, root_ca):
    def issue(ca):
        r = tern_cert("issue", "--ca", ca, "--namespace", "default", "--service-account", "web", "--out", tmp_path / "w")
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr  # every failure: one line
        return r

    r = issue(tmp_path / "nowhere")
    assert r.returncode == 1 and "nowhere" in r.stderr and "no CA there" in r.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "root-cert.pem").write_text(open(root_ca / "root-cert.pem").read())
    (broken / "root-key.pem").write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    r = issue(broken)
    assert r.returncode == 1 and "root-key.pem" in r.stderr and "private key" in r.stderr, r.stderr
    # A key that is not the certificate's.
    ok("ca", "--out", tmp_path / "other")
    (broken / "root-key.pem").write_text(open(tmp_path / "other" / "root-key.pem").read())
    r = issue(broken)
    assert r.returncode == 1 and "is not the private key of" in r.stderr, r.stderr
    # A certificate file that holds no certificate.
    (broken / "root-cert.pem").write_text("nothing\n")
    r = issue(broken)
    assert r.returncode == 1 and "root-cert.pem" in r.stderr and "no PEM certificate" in r.stderr, r.stderr
    assert not (tmp_path / "w").exists()


def test_inspect_describes_the_chain_and_verifies_against_the_root_beside_it(tmp_path, intermediate_ca):
    out = tmp_path / "web"
    ok("issue", "--ca", intermediate_ca, "--namespace", "default", "--service-account", "web", "--out", out)
    r = tern_cert("inspect", out / "cert-chain.pem")
    assert r.returncode == 0, r.stdout + r.stderr
    text = r.stdout
    assert "2 certificates" in text
    assert re.search(r"spiffe id:\s+" + re.escape(SPIFFE_WEB), text)
    assert re.search(r"subject:\s+\(empty\)", text)
    assert re.search(r"issuer:\s+O=cluster.local, CN=Intermediate CA", text)
    assert re.search(r"valid for 2[34] more hours", text)
    assert re.search(r"ca:\s+no", text) and re.search(r"ca:\s+yes", text)
    assert re.search(r"key:\s+EC P-256", text)
    assert re.search(r"dns names:\s+\(none\)", text)
    assert f"verify: ok against {out}/root-cert.pem" in text
    # Another root: exit 1 with OpenSSL's reason.
    ok("ca", "--out", tmp_path / "other")
    r = tern_cert("inspect", out / "cert-chain.pem", "--root", tmp_path / "other" / "root-cert.pem")
    assert r.returncode == 1
    assert "verify: FAILED" in r.stdout and "unable to get local issuer certificate" in r.stdout, r.stdout
    assert "does not verify" in r.stderr
    # No root anywhere: described, not checked.
    lone = tmp_path / "lone.pem"
    lone.write_text(open(out / "cert-chain.pem").read())
    r = tern_cert("inspect", lone)
    assert r.returncode == 0 and "verify: not checked" in r.stdout
    r = tern_cert("inspect", tmp_path / "missing.pem")
    assert r.returncode == 1 and "missing.pem" in r.stderr


def test_inspect_escapes_control_characters_in_names(tmp_path):
    # A certificate anyone could hand over: escape sequences in its subject and subjectAltNames (ESC, BEL, C1 CSI,
    # a right-to-left override) must reach the terminal as text.
    cert = tmp_path / "evil.pem"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
            tmp_path / "k.pem", "-out", cert, "-days", "1", "-utf8", "-subj", "/CN=evil\x1b[31mred\u009b2J\u202e",
            "-addext", "subjectAltName=DNS:a\x1b]0;x\x07.example,URI:spiffe://td/\x1b[2J")
    r = tern_cert("inspect", cert)
    assert r.returncode == 0, r.stderr
    assert not any(c in r.stdout for c in "\x1b\x07\u009b\u202e"), repr(r.stdout)
    assert "\\u{9B}2J\\u{202E}" in r.stdout and "a\\u{1B}]0;x\\u{7}.example" in r.stdout, r.stdout
    assert "spiffe://td/\\u{1B}[2J (not a SPIFFE ID" in r.stdout, r.stdout


def wait_for_line(proc, needle, deadline):
    """Reads `proc`'s unbuffered stdout until `needle` appears (select on a buffered reader would miss lines
    already in its buffer)."""
    seen = b""
    fd = proc.stdout.fileno()
    while time.time() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            seen += chunk
            if needle.encode() in seen:
                return seen.decode(errors="replace")
    raise AssertionError(f"never saw {needle!r}: {seen.decode(errors='replace')}")


def mutual_handshake(server, client, root):
    """`openssl s_server` with `server`'s files, requiring a client certificate, and `s_client` with `client`'s,
    both verifying the other against `root` and failing on any error; returns (s_client's result, server output)."""
    port = free_port()
    srv = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-naccept", "1",
         "-cert", server / "cert-chain.pem", "-key", server / "key.pem", "-cert_chain", server / "cert-chain.pem",
         "-CAfile", root, "-Verify", "3", "-verify_return_error", "-x509_strict"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0)
    try:
        wait_for_line(srv, "ACCEPT", time.time() + 15)
        cli = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-brief",
             "-cert", client / "cert-chain.pem", "-key", client / "key.pem", "-cert_chain", client / "cert-chain.pem",
             "-CAfile", root, "-verify", "3", "-verify_return_error", "-x509_strict"],
            input="", capture_output=True, text=True, timeout=15)
        try:
            out, _ = srv.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            srv.kill()
            out, _ = srv.communicate()
        return cli, out.decode(errors="replace")
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()


def test_issued_certificates_carry_a_mutual_tls_handshake(tmp_path, intermediate_ca):
    server, client = tmp_path / "server", tmp_path / "client"
    ok("issue", "--ca", intermediate_ca, "--namespace", "default", "--service-account", "server", "--out", server)
    ok("issue", "--ca", intermediate_ca, "--namespace", "default", "--service-account", "client", "--out", client,
       "--key-type", "rsa-2048")
    cli, srv = mutual_handshake(server, client, intermediate_ca / "root-cert.pem")
    assert cli.returncode == 0, cli.stdout + cli.stderr + srv
    assert "Verification: OK" in cli.stderr, cli.stderr
    assert "CONNECTION ESTABLISHED" in cli.stderr
    # The server saw the client's certificate, verified it through the intermediate and finished the handshake
    # (under TLS 1.3 the client finishes first, so s_client's success alone says nothing of the server's side).
    assert "Client certificate" in srv and "depth=1 O = cluster.local, CN = Intermediate CA" in srv, srv
    assert "1 server accepts that finished" in srv and "ERROR" not in srv, srv


def test_a_client_from_another_ca_fails_the_handshake(tmp_path, intermediate_ca):
    server, stranger = tmp_path / "server", tmp_path / "stranger"
    ok("issue", "--ca", intermediate_ca, "--namespace", "default", "--service-account", "server", "--out", server)
    ok("ca", "--out", tmp_path / "other")
    ok("issue", "--ca", tmp_path / "other", "--namespace", "default", "--service-account", "client", "--out", stranger)
    _, srv = mutual_handshake(server, stranger, intermediate_ca / "root-cert.pem")
    assert "verify error:num=20:unable to get local issuer certificate" in srv, srv
    assert "0 server accepts that finished" in srv, srv
