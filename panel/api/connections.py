"""Admission of the API's TCP connections: the door never depends on what the API holds.

The panel accepts the API's connections itself instead of leaving it to asyncio's accept loop, which
accepts until the process is out of file descriptors and then logs "socket.accept() out of system
resource" for every attempt (25,000 a second, 371 MB of log a minute, while the store, webhooks,
snapshots and MQTT could open nothing). Here:

- at most ``api.max_connections`` are open, all clients together, and never more than the file-descriptor
  limit minus ``api.fd_reserve``: at the limit the accept loop waits and new connections queue in the
  kernel, where they hold no descriptor of ours;
- at most ``api.max_connections_per_client`` from one client address (an IPv6 client: its /64); more are
  reset as soon as they are accepted, so one address cannot take the others' room;
- a connection must finish its TLS handshake, and then its request head, within ``api.header_timeout_s``
  each; one idle between requests is closed after ``api.idle_timeout_s``;
- running out of descriptors anyway (something else took them) pauses accepting with a backoff, and such
  events are logged once, then as a count at most once a minute.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import math
import socket
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from starlette.types import ASGIApp, Receive, Scope, Send

from ..platform import ApiConfig, Background, Clock, TimerHandle, fd_limit, open_fds

log = logging.getLogger(__name__)

# What accept(2) says when the process or the system is out of descriptors or buffers: not the client's
# fault, and retrying at once cannot help.
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# The client gave up between the kernel's handshake and our accept: nothing to do.
GONE = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.ECONNRESET})
MAX_BACKOFF_S = 1.0
ACCEPT_BATCH = 64
SUMMARY_EVERY_S = 60.0
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close with a RST, leaving no TIME_WAIT behind

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Peer = tuple[str, int]


@dataclass(frozen=True)
class ConnectionLimits:
    max_total: int
    per_client: int
    header_timeout_s: float
    idle_timeout_s: float
    fd_reserve: int
    trusted: tuple[Network, ...] = ()

    @classmethod
    def from_config(cls, api: ApiConfig) -> ConnectionLimits:
        return cls(api.max_connections, api.max_connections_per_client, api.header_timeout_s, api.idle_timeout_s,
                   api.fd_reserve, tuple(ipaddress.ip_network(n, strict=False) for n in api.trusted_proxies))


def fd_room(reserve: int) -> int:
    """Descriptors the API may hold: the limit, less what is open now, less the reserve."""
    return fd_limit() - open_fds() - reserve


def client_key(host: str) -> str:
    """Whose connection this is, for the per-client limit: the address, an IPv6 client's /64 (one
    machine has many addresses there), an IPv4-mapped address as the IPv4 one."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def is_trusted(host: str, trusted: tuple[Network, ...]) -> bool:
    if not trusted:
        return False
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


class Tally:
    """Something that can happen thousands of times a second, logged the first time and then as a
    count at most once per ``every_s`` (the count of a quiet end is logged when the period closes)."""

    def __init__(self, clock: Clock, message: str, level: int = logging.WARNING, every_s: float = SUMMARY_EVERY_S):
        self.clock = clock
        self.message = message
        self.level = level
        self.every_s = every_s
        self.total = 0
        self._unlogged = 0
        self._extra: dict[str, Any] = {}
        self._quiet_until = float("-inf")
        self._flush: TimerHandle | None = None

    def note(self, **extra: Any) -> None:
        self.total += 1
        self._unlogged += 1
        self._extra = extra
        now = self.clock.monotonic()
        if now >= self._quiet_until:
            self._emit()
            self._quiet_until = now + self.every_s
        elif self._flush is None:
            self._flush = self.clock.call_at(self._quiet_until, self._emit)

    def _emit(self) -> None:
        self._flush = None
        if self._unlogged:
            log.log(self.level, self.message, extra={**self._extra, "count": self._unlogged,
                                                     "total": self.total, "per_s": self.every_s})
            self._unlogged = 0

    def close(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
        self._emit()


class Connection:
    """One accepted connection: its slot, and the timer that closes it when it dawdles."""

    __slots__ = ("active", "done", "guard", "key", "peer", "pending", "timer", "transport", "waiting_head")

    def __init__(self, guard: ConnectionGuard, key: str, peer: Peer) -> None:
        self.guard = guard
        self.key = key
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self.active = 0  # requests in progress (pipelined ones may overlap for a moment)
        self.waiting_head = True
        self.timer: TimerHandle | None = None
        self.done = False
        self.pending = math.inf  # response bytes still buffered when the idle timer last fired

    def opened(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream transport: connect_accepted_socket's
        self.guard.by_peer[self.peer] = self
        self._arm(self.guard.limits.header_timeout_s)

    def received(self) -> None:
        if self.active == 0 and not self.waiting_head:  # the first byte of the next request
            self.waiting_head = True
            self._arm(self.guard.limits.header_timeout_s)

    def request_started(self) -> None:
        self.active += 1
        self.waiting_head = False
        self._cancel()

    def request_finished(self) -> None:
        self.active -= 1
        if self.active == 0 and not self.done:
            self.pending = math.inf
            self._arm(self.guard.limits.idle_timeout_s)

    def closed(self) -> None:
        if self.done:
            return
        self.done = True
        self._cancel()
        self.guard.release(self)

    def _arm(self, seconds: float) -> None:
        self._cancel()
        self.timer = self.guard.clock.call_at(self.guard.clock.monotonic() + seconds, self._expire)

    def _cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expire(self) -> None:
        self.timer = None
        transport = self.transport
        if transport is None:
            return
        pending = transport.get_write_buffer_size()
        if not self.waiting_head and 0 < pending < self.pending:
            # The last response is still going out to a client that reads it (a picture to a slow phone).
            self.pending = pending
            self._arm(self.guard.limits.idle_timeout_s)
            return
        if not transport.is_closing():
            self.guard.timed_out.note(client=self.key, waiting="request head" if self.waiting_head else "idle")
        transport.abort()  # nothing is owed (or nothing moves): the descriptor is free at once


class ConnectionGuard:
    """The bookkeeping: open connections per client and in total, and the room left."""

    def __init__(self, limits: ConnectionLimits, clock: Clock) -> None:
        self.limits = limits
        self.clock = clock
        self.max_total = limits.max_total
        self.open = 0
        self.per_client: dict[str, int] = {}
        self.by_peer: dict[Peer, Connection] = {}
        self.room = asyncio.Event()
        self.room.set()
        self.refused = Tally(clock, "API connections refused: this client already has api.max_connections_per_client "
                             "open")
        self.timed_out = Tally(clock, "API connections closed for sending too slowly or idling (api.header_timeout_s,"
                               " api.idle_timeout_s)", level=logging.INFO)
        self.accept_failed = Tally(clock, "cannot accept API connections: the process is out of file descriptors or "
                                   "buffers; accepting pauses and retries", level=logging.ERROR)
        self.full = Tally(clock, "API connections at api.max_connections: new ones wait in the kernel's queue")

    def budget(self, room: int) -> int:
        """Fit the total into the descriptors there are (computed at start, when the rest is open)."""
        self.max_total = max(1, min(self.limits.max_total, room))
        if self.max_total < self.limits.max_total:
            log.warning("fewer API connections than api.max_connections: the file-descriptor limit leaves room for "
                        "only these after api.fd_reserve; raise LimitNOFILE",
                        extra={"max_connections": self.max_total, "fd_limit": fd_limit(),
                               "fd_reserve": self.limits.fd_reserve})
        return self.max_total

    def admit(self, peer: Peer) -> Connection | None:
        key = client_key(peer[0])
        held = self.per_client.get(key, 0)
        if held >= self.limits.per_client and not is_trusted(peer[0], self.limits.trusted):
            self.refused.note(client=key, open=held)
            return None
        self.per_client[key] = held + 1
        self.open += 1
        if self.open >= self.max_total:
            self.room.clear()
            self.full.note(open=self.open)
        return Connection(self, key, peer)

    def release(self, conn: Connection) -> None:
        if self.by_peer.get(conn.peer) is conn:
            del self.by_peer[conn.peer]
        left = self.per_client.get(conn.key, 0) - 1
        if left > 0:
            self.per_client[conn.key] = left
        else:
            self.per_client.pop(conn.key, None)
        self.open -= 1
        if self.open < self.max_total:
            self.room.set()

    def lookup(self, client: Any) -> Connection | None:
        if client is None:
            return None
        return self.by_peer.get((str(client[0]), int(client[1])))

    def close(self) -> None:
        for tally in (self.refused, self.timed_out, self.accept_failed, self.full):
            tally.close()


class GuardedProtocol(asyncio.Protocol):
    """The HTTP server's protocol, with the connection's slot and timers kept in step with it."""

    def __init__(self, inner: asyncio.Protocol, conn: Connection) -> None:
        self.inner = inner
        self.conn = conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.conn.opened(transport)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.conn.received()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.closed()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class RequestTracker:
    """The outermost ASGI app: tells a request's connection when it starts and ends (the header and idle
    timers run only between requests)."""

    def __init__(self, app: ASGIApp, guard: ConnectionGuard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        conn = self.guard.lookup(scope.get("client"))
        if conn is None:
            await self.app(scope, receive, send)
            return
        conn.request_started()
        try:
            await self.app(scope, receive, send)
        finally:
            conn.request_finished()


class Listener:
    """Accepts on the bound sockets within the guard's limits and hands each connection to the server."""

    def __init__(self, sockets: list[socket.socket], guard: ConnectionGuard,
                 protocol: Callable[[], asyncio.Protocol], tls: ssl.SSLContext | None, clock: Clock) -> None:
        self.sockets = sockets
        self.guard = guard
        self.protocol = protocol
        self.tls = tls
        self.clock = clock
        self._connecting = Background("api listener")
        self._accepting: list[asyncio.Task[None]] = []

    @property
    def port(self) -> int:
        return int(self.sockets[0].getsockname()[1])

    async def serve(self) -> None:
        async with asyncio.TaskGroup() as group:
            self._accepting = [group.create_task(self._accept(sock)) for sock in self.sockets]

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.0
        batch = 0
        while True:
            if not self.guard.room.is_set():
                await self.guard.room.wait()
            try:
                if batch < ACCEPT_BATCH:
                    # What is queued is taken at once (a flood queues thousands; a client waits behind them),
                    # a batch at a time so the loop's other work runs in between.
                    batch += 1
                    client, addr = sock.accept()
                else:
                    batch = 0
                    await asyncio.sleep(0)
                    continue
            except (BlockingIOError, InterruptedError):
                batch = 0
                try:
                    client, addr = await loop.sock_accept(sock)
                except OSError as e:
                    backoff = await self._failed(e, backoff)
                    continue
            except OSError as e:
                backoff = await self._failed(e, backoff)
                continue
            backoff = 0.0
            self._take(client, addr)

    async def _failed(self, e: OSError, backoff: float) -> float:
        if e.errno in GONE:
            return backoff
        if e.errno not in OUT_OF_RESOURCES:
            raise e
        backoff = min(MAX_BACKOFF_S, max(0.01, backoff * 2))
        self.guard.accept_failed.note(error=errno.errorcode.get(e.errno or 0, str(e)), retry_s=backoff)
        await self.clock.sleep(backoff)
        return backoff

    def _take(self, client: socket.socket, addr: Any) -> None:
        conn = self.guard.admit((str(addr[0]), int(addr[1])))
        if conn is None:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            client.close()
            return
        client.setblocking(False)
        self._connecting.spawn(self._connect(client, conn), "connection setup")

    async def _connect(self, client: socket.socket, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        tls: dict[str, Any] = {}
        if self.tls is not None:
            timeout = self.guard.limits.header_timeout_s
            tls = {"ssl": self.tls, "ssl_handshake_timeout": timeout, "ssl_shutdown_timeout": timeout}
        try:
            await loop.connect_accepted_socket(lambda: GuardedProtocol(self.protocol(), conn), client, **tls)
        except (OSError, ssl.SSLError, TimeoutError) as e:  # a failed or timed-out TLS handshake, a client gone
            log.debug("API connection not set up", extra={"client": conn.key, "error": repr(e)})
            conn.closed()
            client.close()
        except BaseException:
            conn.closed()
            client.close()
            raise

    async def close(self) -> None:
        # Accepting stops first: a socket closed under a pending accept would stay in the selector.
        for task in self._accepting:
            task.cancel()
        await asyncio.gather(*self._accepting, return_exceptions=True)
        for sock in self.sockets:
            sock.close()
        self._connecting.cancel()
        await self._connecting.wait()
        self.guard.close()


async def bind(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Listening sockets for ``host:port`` (every address a name resolves to), non-blocking."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    out: list[socket.socket] = []
    seen: set[Any] = set()
    try:
        for family, kind, proto, _, addr in infos:
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            sock = socket.socket(family, kind, proto)
            out.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((addr[0], port, *addr[2:]))
            sock.listen(backlog)
            sock.setblocking(False)
            port = int(sock.getsockname()[1])  # a port chosen by the kernel: every address on the same one
    except OSError:
        for sock in out:
            sock.close()
        raise
    return out
