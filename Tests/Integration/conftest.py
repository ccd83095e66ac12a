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


def unavailable(reason, required_by):
    """Skips a test for lack of something this machine may not offer (io_uring, network namespaces), or fails it
    where CI requires that thing (the environment variable `required_by` is 1, as .ci/run sets it): there a
    missing capability, or a start-up regression that looks like one, must not pass as a skip."""
    if os.environ.get(required_by) == "1":
        pytest.fail(f"{required_by}=1, but {reason}", pytrace=False)
    pytest.skip(reason)


_uring_failure = None


def uring_failure():
    """Why tern cannot run on io_uring here (started once with --io-backend io_uring), with its log; None when
    it can."""
    global _uring_failure
    if _uring_failure is None:
        try:
            t = Tern(["--io-backend", "io_uring", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9"])
            t.stop()
            _uring_failure = ""
        except RuntimeError as e:
            _uring_failure = f"tern could not start with --io-backend io_uring: {str(e).strip()}"
    return _uring_failure or None


def require_uring():
    """Skips the test where io_uring cannot be set up (fails it under TERN_REQUIRE_IO_URING=1)."""
    failure = uring_failure()
    if failure:
        unavailable(failure, "TERN_REQUIRE_IO_URING")


@pytest.fixture(params=["io_uring", "epoll"])
def backend(request):
    """Runs a test once per backend; io_uring is skipped, with the reason, where it cannot be set up (and fails
    instead under TERN_REQUIRE_IO_URING=1)."""
    if request.param == "io_uring":
        require_uring()
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
            want = sum(1 for a in args if a in ("--listen", "--inbound"))
            deadline = time.time() + 20
            while len(self.ports) < want and time.time() < deadline:
                line = self.proc.stderr.readline().decode()
                if not line:
                    break
                self.lines.append(line)
                m = re.search(r"listening kind=(?:proxy|http|inbound) addr=(\S+):(\d+)$", line.strip())
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
    """A namespace for the test, deleted after it; skipped where namespaces or iptables are not available
    (failed instead under TERN_REQUIRE_NETNS=1)."""
    if os.geteuid() != 0:
        unavailable("network namespaces need root", "TERN_REQUIRE_NETNS")
    for tool in ("ip", "iptables", "ip6tables"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed", "TERN_REQUIRE_NETNS")
    try:
        ns = NetNamespace()
    except (subprocess.CalledProcessError, OSError) as e:
        unavailable(f"cannot make a network namespace here: {e}", "TERN_REQUIRE_NETNS")
    yield ns
    ns.delete()
