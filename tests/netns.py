"""Private network namespaces for tests that need addresses other than loopback (STUN, TURN, ICE, an SFU).

``veth_pair()`` makes two namespaces joined by a veth pair with addresses of their own
(``10.200.0.1/24`` and ``10.200.0.2/24``, private to the pair, so parallel tests never collide): the
``panel`` side, which this process enters for the test (``Namespace.entered()``: only the calling thread
moves, with ``setns``), and the ``servers`` side, where server processes run (``Namespace.popen``,
through ``ip netns exec``) or in-process servers open their sockets. Neither side has a route out, so
no test can bind to or send to the machine's LAN address, and the panel's ICE gathering (aioice lists
the interfaces of the thread's namespace) offers only the pair's address.

``isolated()`` is one namespace with loopback and an address of its own (``10.201.0.1``): where each
pytest process runs the whole session (tests/conftest.py).

Everything is removed on exit, processes started here first: a namespace with a process still in it
would outlive ``ip netns del``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import ifaddr
import pytest

CLONE_NEWNET = 0x40000000
SUBNET = ipaddress.ip_network("10.200.0.0/24")
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    # os.setns arrived in Python 3.12; the panel runs on 3.11.
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


@contextlib.contextmanager
def moved_to(fd: int) -> Iterator[None]:
    """This thread in the network namespace ``fd`` refers to until the block ends, then back."""
    with open("/proc/thread-self/ns/net", "rb") as home:
        _setns(fd)
        try:
            yield
        finally:
            _setns(home.fileno())


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass
class Namespace:
    name: str
    address: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return Path("/run/netns") / self.name

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """This thread in the namespace until the block ends: sockets made meanwhile stay in it, and
        threads and processes started meanwhile start in it."""
        with open(self.path, "rb") as there, moved_to(there.fileno()):
            yield

    def command(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def popen(self, argv: Sequence[str], log: IO[bytes] | int | None = None, **kw: Any) -> subprocess.Popen[bytes]:
        """A server process inside the namespace, stopped when the namespace goes; its output to ``log``
        (a file, or ``subprocess.DEVNULL``)."""
        proc = subprocess.Popen(self.command(argv), stdout=log, stderr=None if log is None else subprocess.STDOUT,
                                start_new_session=True, **kw)
        self.processes.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def addresses(self) -> set[str]:
        """Every IPv4 address of the namespace's interfaces, as aioice would gather them."""
        with self.entered():
            return ipv4_addresses()


@dataclass
class Pair:
    panel: Namespace
    servers: Namespace
    home_addresses: set[str]
    subnet: ipaddress.IPv4Network | ipaddress.IPv6Network = SUBNET

    def contained(self, host: str) -> bool:
        """Whether an address is one a test here may use: loopback or the pair's own subnet."""
        address = ipaddress.ip_address(host)
        return address.is_loopback or address in self.subnet

    def check(self, host: str) -> str:
        """``host``, after failing the test if it is anywhere but the pair (the guard for server setup)."""
        assert self.contained(host), f"{host} is outside this test's namespaces ({self.subnet} or loopback)"
        return host


def ipv4_addresses() -> set[str]:
    """The IPv4 addresses of the calling thread's namespace."""
    return {ip.ip for a in ifaddr.get_adapters() for ip in a.ips if isinstance(ip.ip, str)}


def available() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if shutil.which("ip") is None:
        return "no ip command (iproute2)"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    return None


SUITE_SUBNET = ipaddress.ip_network("10.201.0.0/24")


def _namespace(stack: contextlib.ExitStack, name: str, address: str) -> Namespace:
    """A namespace with loopback up, deleted (its processes stopped first) when ``stack`` closes."""
    ns = Namespace(name, address)
    _ip("netns", "add", ns.name)

    def remove() -> None:
        for proc in ns.processes:
            with contextlib.suppress(ProcessLookupError):
                ns.stop(proc)
        with contextlib.suppress(RuntimeError):
            _ip("netns", "del", ns.name)

    stack.callback(remove)
    _ip("-n", ns.name, "link", "set", "lo", "up")
    return ns


def _tag(prefix: str) -> str:
    why = available()
    if why is not None:
        pytest.skip(why)
    return f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"


@contextlib.contextmanager
def isolated(prefix: str = "suite") -> Iterator[Namespace]:
    """One namespace with loopback and one address of its own (``10.201.0.1/24``, on a veth pair whose both
    ends stay inside): where a whole test session runs (tests/conftest.py), so WebRTC peers on this
    machine gather and connect over that address instead of the machine's LAN address."""
    tag = _tag(prefix)
    with contextlib.ExitStack() as stack:
        ns = _namespace(stack, tag, str(next(SUITE_SUBNET.hosts())))
        _ip("-n", ns.name, "link", "add", "veth-suite", "type", "veth", "peer", "name", "veth-peer")
        _ip("-n", ns.name, "addr", "add", f"{ns.address}/{SUITE_SUBNET.prefixlen}", "dev", "veth-suite")
        for dev in ("veth-suite", "veth-peer"):
            _ip("-n", ns.name, "link", "set", dev, "up")
        yield ns


@contextlib.contextmanager
def veth_pair(prefix: str = "pnl") -> Iterator[Pair]:
    """Two namespaces joined by a veth pair; skips the test where namespaces cannot be made."""
    tag = _tag(prefix)
    hosts = list(SUBNET.hosts())
    home = ipv4_addresses()
    with contextlib.ExitStack() as stack:
        pair = Pair(_namespace(stack, f"{tag}-p", str(hosts[0])), _namespace(stack, f"{tag}-s", str(hosts[1])), home)
        # Both ends are created inside the namespaces: the host never sees an interface appear, so
        # nothing running outside (other tests' ICE gathering) gathers these addresses.
        _ip("-n", pair.panel.name, "link", "add", "veth-panel", "type", "veth", "peer", "name", "veth-servers",
            "netns", pair.servers.name)
        for ns, dev in ((pair.panel, "veth-panel"), (pair.servers, "veth-servers")):
            _ip("-n", ns.name, "addr", "add", f"{ns.address}/{SUBNET.prefixlen}", "dev", dev)
            _ip("-n", ns.name, "link", "set", dev, "up")
        yield pair


@contextlib.contextmanager
def contained(prefix: str) -> Iterator[None]:
    """For a benchmark's whole run: this thread (and what it starts) in ``isolated()``, or, where namespaces
    cannot be made, on the host's network with a warning."""
    why = available()
    if why is not None:
        print(f"warning: running on the host's network ({why})", file=sys.stderr)
        yield
        return
    with isolated(prefix) as ns, ns.entered():
        yield
