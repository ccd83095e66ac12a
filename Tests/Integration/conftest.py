"""Fixtures that start the real `tern` binary (TERN_BIN, default .build/debug/tern) and stop it."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.dirname(__file__))

from netns import NetNamespace  # noqa: E402
from peers import Upstream  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "large: moves hundreds of MiB or more (bounded, under a minute each)")


def tern_bin():
    return os.environ.get("TERN_BIN", os.path.join(ROOT, ".build", "debug", "tern"))


_uring = None


def uring_available():
    """Whether tern can set up io_uring here (started once with --io-backend io_uring)."""
    global _uring
    if _uring is None:
        try:
            t = Tern(["--io-backend", "io_uring", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9"])
            t.stop()
            _uring = True
        except RuntimeError:
            _uring = False
    return _uring


@pytest.fixture(params=["io_uring", "epoll"])
def backend(request):
    """Runs a test once per backend; io_uring is skipped, with the reason, where the kernel refuses it."""
    if request.param == "io_uring" and not uring_available():
        pytest.skip("io_uring cannot be set up on this machine")
    return request.param


class Tern:
    """A running `tern proxy`; `ports` are the bound listener ports in --listen order."""

    def __init__(self, args, wrapper=(), preexec_fn=None, expect_listen=True, env=None):
        self.args = [tern_bin(), "proxy", *args]
        self.proc = subprocess.Popen([*wrapper, *self.args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     preexec_fn=preexec_fn, env=env)
        self.lines = []
        self.ports = []
        if expect_listen:
            want = sum(1 for a in args if a == "--listen")
            deadline = time.time() + 20
            while len(self.ports) < want and time.time() < deadline:
                line = self.proc.stderr.readline().decode()
                if not line:
                    break
                self.lines.append(line)
                m = re.search(r"listening kind=(?:proxy|http) addr=(\S+):(\d+)$", line.strip())
                if m:
                    self.ports.append(int(m.group(2)))
            if len(self.ports) < want:
                self.stop()
                raise RuntimeError("tern did not start: " + "".join(self.lines) + self.rest())

    @property
    def port(self):
        return self.ports[0]

    def rest(self):
        try:
            out = self.proc.stderr.read().decode()
        except Exception:
            out = ""
        self.lines.append(out)
        return out

    def log(self):
        return "".join(self.lines)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=20):
        code = self.proc.wait(timeout)
        self.rest()
        return code

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def start_tern():
    started = []

    def start(*args, **kw):
        t = Tern(list(args), **kw)
        started.append(t)
        return t

    yield start
    for t in started:
        t.stop()


@pytest.fixture
def upstream():
    started = []

    def start(behaviour, host="127.0.0.1"):
        u = Upstream(behaviour, host)
        started.append(u)
        return u

    yield start
    for u in started:
        u.stop()


@pytest.fixture
def netns():
    """A namespace for the test, deleted after it; skipped where namespaces or iptables are not available."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    for tool in ("ip", "iptables", "ip6tables"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    try:
        ns = NetNamespace()
    except (subprocess.CalledProcessError, OSError) as e:
        pytest.skip(f"cannot make a network namespace here: {e}")
    yield ns
    ns.delete()
