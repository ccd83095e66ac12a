"""Network namespaces for tests that need their own network stack (iptables rules, addresses of their own):
made with `ip netns`, entered by one thread at a time with setns(2), so that sockets, peer threads and processes
created meanwhile live in the namespace."""
import contextlib
import ctypes
import itertools
import os
import subprocess

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_names = itertools.count()


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


class NetNamespace:
    """A fresh namespace with loopback up; `run` runs a command inside it, `inside()` moves this thread in."""

    def __init__(self):
        self.name = f"tern-test-{os.getpid()}-{next(_names)}"
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        try:
            self.run("ip", "link", "set", "lo", "up")
        except subprocess.CalledProcessError:
            self.delete()
            raise

    def run(self, *command):
        subprocess.run(["ip", "netns", "exec", self.name, *command], check=True, capture_output=True)

    @contextlib.contextmanager
    def inside(self):
        """This thread's sockets, threads and child processes are created in the namespace until the block ends."""
        with open("/proc/thread-self/ns/net") as back, open(f"/run/netns/{self.name}") as target:
            _setns(target.fileno())
            try:
                yield
            finally:
                _setns(back.fileno())

    def delete(self):
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

