"""STUN/TURN servers that never make a session wait.

aiortc gathers its candidates inside ``setLocalDescription``, and aioice waits up to 5 s there for a
STUN or TURN server that does not answer (and DNS lookups of their names happen in the same wait).
Two guards keep that off the resident's time:

- ``IceMonitor`` probes every server in the background: a STUN Binding request, and for TURN also an
  unauthenticated Allocate (every TURN server answers it with 401, even one that refuses Binding), on
  ``media.ice_probe_interval_s``, at once after a network change (Linux netlink) and after a session
  got no candidate from a server it was given. A new session only gets servers whose last probe was
  answered in time (and servers not probed yet), with the address the probe reached in place of the
  name, so setting up never waits for DNS either.
- ``bound_gathering``: whatever a server does, a session waits at most ``media.ice_gather_budget_s``
  for server candidates, then answers with its host candidates and whatever came in time.

Servers named in an offer message are remembered (by URL, for an hour after the last offer naming
them) and probed the same way, so an unreachable one costs one session the budget, not every session.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import re
import socket
import ssl
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from aioice import stun
from aiortc import RTCIceServer, RTCPeerConnection

from ..compat import candidate_gathering
from ..platform import iso8601 as iso

log = logging.getLogger(__name__)

State = Literal["unknown", "reachable", "slow", "refused", "unreachable", "unsupported"]
USABLE: frozenset[str] = frozenset({"unknown", "reachable"})
# Probes of one server are at least this far apart, whatever asks for them (misses, network changes).
MIN_REPROBE_S = 1.0
# Addresses settle in bursts after a network change (DHCP, routes): probe once it is quiet this long.
NETWORK_SETTLE_S = 0.5
OFFER_SERVER_TTL_S = 3600.0
MAX_OFFER_SERVERS = 16
FIRST_RETRANSMIT_S = 0.1
TURN_UDP_TRANSPORT = 0x11000000  # REQUESTED-TRANSPORT: UDP (17) in the top byte, as aioice sends it
# netlink groups: links up/down, IPv4/IPv6 addresses, IPv4 routes.
RTMGRP = 0x1 | 0x10 | 0x100 | 0x40

# a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type>
_CANDIDATE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) \d+ typ (\w+)", re.M)
_URL = re.compile(r"^(?P<scheme>stuns?|turns?):(?P<host>[^?:\s]+)(:(?P<port>\d{1,5}))?(\?transport=(?P<transport>\w+))?$")




@dataclass(frozen=True)
class Target:
    """One URL of an ICE server, read the way aiortc reads it (rtcicetransport.parse_stun_turn_uri)."""

    url: str
    scheme: str
    host: str
    port: int
    transport: str
    unsupported: str | None = None  # why aiortc would ignore it

    @property
    def kind(self) -> Literal["stun", "turn"]:
        return "turn" if self.scheme.startswith("turn") else "stun"

    @property
    def tls(self) -> bool:
        return self.scheme == "turns"


def parse_target(url: str) -> Target:
    m = _URL.match(url.strip())
    if m is None:
        return Target(url, "", "", 0, "", unsupported="not a stun:/turn: URL")
    scheme, host = m["scheme"], m["host"]
    port = int(m["port"]) if m["port"] else (5349 if scheme in ("stuns", "turns") else 3478)
    transport = m["transport"] or ("tcp" if scheme == "turns" else "udp")
    why = None
    if scheme == "stuns":
        why = "aiortc does not use stuns: servers; give stun: instead"
    elif scheme.startswith("stun") and m["transport"]:
        why = "a stun: URL takes no ?transport="
    elif scheme == "turn" and transport not in ("udp", "tcp"):
        why = "TURN transport must be udp or tcp"
    elif scheme == "turns" and transport != "tcp":
        why = "turns: works over tcp only"
    elif not 0 < port < 65536:
        why = "the port must be 1-65535"
    return Target(url, scheme, host, port, transport, why)


@dataclass
class Endpoint:
    """What the panel knows about one server URL."""

    target: Target
    origin: Literal["config", "offer"]
    state: State = "unknown"
    address: str | None = None  # the IP the last probe reached
    answer_ms: float | None = None  # from the probe's first request to its first answer
    error: str | None = None
    checked_wall: float | None = None
    since_wall: float | None = None
    last_probe_mono: float | None = None
    due_mono: float = 0.0
    seen_mono: float = field(default_factory=time.monotonic)
    probes: int = 0
    misses: int = 0  # sessions that got no candidate from it although it was handed to them
    last_miss_wall: float | None = None

    def session_url(self) -> str:
        """The URL handed to aiortc: the probed IPv4 address instead of the name (no DNS during setup).
        A turns: URL keeps its name, which its TLS certificate is checked against."""
        t = self.target
        if self.address is None or self.address == t.host or t.tls or ":" in self.address:
            return t.url
        if t.kind == "stun":
            return f"stun:{self.address}:{t.port}"
        return f"turn:{self.address}:{t.port}?transport={t.transport}"

    def status(self) -> dict[str, Any]:
        return {"url": self.target.url, "kind": self.target.kind, "origin": self.origin, "state": self.state,
                "address": self.address, "answer_ms": self.answer_ms, "error": self.error,
                "checked_at": iso(self.checked_wall), "since": iso(self.since_wall), "probes": self.probes,
                "misses": self.misses, "last_miss_at": iso(self.last_miss_wall)}


@dataclass
class IceChoice:
    """The servers one session was given, and which of them aiortc actually uses (its first STUN URL
    and its first TURN URL), to learn from what the session gathered."""

    servers: list[RTCIceServer]
    stun: Endpoint | None = None
    turn: Endpoint | None = None
    skipped: list[str] = field(default_factory=list)  # URLs left out as unreachable or too slow


@dataclass
class ProbeResult:
    state: State
    address: str | None
    answer_ms: float | None
    error: str | None


def bound_gathering(pc: RTCPeerConnection, budget_s: float) -> int:
    """Make the coming ``setLocalDescription`` wait at most ``budget_s`` for server candidates.

    aioice's ``Connection.get_component_candidates`` takes the wait as a ``timeout`` argument but
    ``gather_candidates`` always leaves it at 5 s; each of the connection's not yet gathered ICE
    gatherers gets it bound to the budget. Host candidates are gathered first and are never cut;
    server candidates still pending at the budget are cancelled (aioice closes their sockets).
    Returns how many gatherers were bound."""
    gatherers: dict[int, Any] = {}
    dtls_transports = [t.sender.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        dtls_transports.append(pc.sctp.transport)
    for dtls in dtls_transports:
        gatherer = getattr(getattr(dtls, "transport", None), "iceGatherer", None)
        if gatherer is not None and gatherer.state == "new":
            gatherers[id(gatherer)] = gatherer
    bound = 0
    for gatherer in gatherers.values():
        found = candidate_gathering(gatherer)
        if found is None:
            _warn_unbounded()
            continue
        connection, method = found
        if isinstance(method, functools.partial):
            continue  # already bound
        connection.get_component_candidates = functools.partial(method, timeout=budget_s)
        bound += 1
    return bound


@functools.cache
def _warn_unbounded() -> None:
    log.warning("this aiortc/aioice version has no bounded candidate gathering (RTCIceGatherer._connection."
                "get_component_candidates(timeout=)); a STUN/TURN server that stops answering can hold a new "
                "session for up to 5 s until the next probe marks it unreachable")


def _ipv4_host(sdp: str) -> bool:
    for address, kind in _CANDIDATE.findall(sdp):
        if kind == "host" and ":" not in address and not address.endswith(".local"):
            return True
    return False


class IceMonitor:
    """Knows which STUN/TURN servers answer, and hands new sessions only those."""

    def __init__(self, servers: list[RTCIceServer], *, gather_budget_s: float, probe_interval_s: float,
                 probe_timeout_s: float, watch_network: bool = True) -> None:
        self.gather_budget_s = gather_budget_s
        self.probe_interval_s = probe_interval_s
        self.probe_timeout_s = probe_timeout_s
        self.watch_network = watch_network
        self.configured = list(servers)
        self.endpoints: dict[str, Endpoint] = {}
        for server in servers:
            for url in _urls(server):
                self.endpoints.setdefault(url, Endpoint(parse_target(url), "config"))
        for ep in self.endpoints.values():
            self._mark_unsupported(ep)
            if ep.target.unsupported is not None:
                log.warning("media.ice_servers: %s is not used: %s", ep.target.url, ep.target.unsupported)
        self.rounds = 0  # probe rounds run (tests, status)
        self.network_changes = 0
        self.network_watch = "off"
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._netlink: socket.socket | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is not None:
            return
        if self.watch_network:
            self._open_netlink()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ice monitor")
        self._task.add_done_callback(_log_crash)

    async def close(self) -> None:
        if self._netlink is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._netlink.fileno())
            self._netlink.close()
            self._netlink = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- what sessions get -------------------------------------------------------------------------------
    def choose(self, offered: list[RTCIceServer] | None = None) -> IceChoice:
        """The servers for a new session: those of the offer message if it names any (they are remembered
        and probed from now on), else the configured ones; less those known unreachable, refusing or too
        slow, with the probed address in place of the name."""
        if offered is None:
            servers = self.configured
        else:
            servers = offered
            self._remember(offered)
        choice = IceChoice([])
        for server in servers:
            kept = []
            for url in _urls(server):
                ep = self.endpoints.get(url)
                if ep is None or ep.state not in USABLE:
                    choice.skipped.append(url)
                    continue
                kept.append(ep.session_url())
                if ep.target.kind == "stun" and choice.stun is None:
                    choice.stun = ep
                elif ep.target.kind == "turn" and choice.turn is None and server.credentialType == "password":
                    choice.turn = ep
            if kept:
                choice.servers.append(RTCIceServer(urls=kept, username=server.username, credential=server.credential,
                                                   credentialType=server.credentialType))
        return choice

    def gathered(self, choice: IceChoice, sdp: str) -> None:
        """Learn from a session's answer: a server it was given that brought no candidate in time is
        probed again at once (a server that went away since its last probe is then skipped)."""
        types = {kind for _, kind in _CANDIDATE.findall(sdp)}
        missed = []
        if choice.stun is not None and "srflx" not in types and _ipv4_host(sdp):
            missed.append(choice.stun)
        if choice.turn is not None and "relay" not in types:
            missed.append(choice.turn)
        for ep in missed:
            ep.misses += 1
            ep.last_miss_wall = time.time()
            log.warning("ICE server %s gave a new session no %s candidate within %.1f s (its last probe: %s); "
                        "probing it again now", ep.target.url, "relay" if ep.target.kind == "turn" else "srflx",
                        self.gather_budget_s, ep.state,
                        extra={"ice_server": ep.target.url, "ice_state": ep.state})
            self._due(ep, time.monotonic())

    # -- probing -----------------------------------------------------------------------------------------
    async def probe_now(self) -> None:
        """Probe every server now and wait for the results (tests, benchmarks, ``panel selftest``)."""
        await self._probe(list(self.endpoints.values()))

    async def _run(self) -> None:
        while True:
            now = time.monotonic()
            self._forget_old_offers(now)
            due = [ep for ep in self.endpoints.values() if ep.due_mono <= now and ep.target.unsupported is None]
            if due:
                await self._probe(due)
                continue
            upcoming = [ep.due_mono for ep in self.endpoints.values() if ep.target.unsupported is None]
            wait = min(upcoming) - now if upcoming else None
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _probe(self, endpoints: list[Endpoint]) -> None:
        endpoints = [ep for ep in endpoints if ep.target.unsupported is None]
        if not endpoints:
            return
        self.rounds += 1
        started = time.monotonic()
        for ep in endpoints:
            ep.due_mono = started + self.probe_interval_s  # a wake-up during the probe may bring it forward
        results = await asyncio.gather(*(probe(ep.target, self.probe_timeout_s) for ep in endpoints),
                                       return_exceptions=True)
        for ep, result in zip(endpoints, results, strict=True):
            if isinstance(result, BaseException):
                result = ProbeResult("unreachable", None, None, f"probe failed: {type(result).__name__}: {result}")
            self._record(ep, result, started)

    def _record(self, ep: Endpoint, result: ProbeResult, started: float) -> None:
        state = result.state
        factor = 2 if ep.target.kind == "turn" else 1  # an allocation takes two round trips (401, then auth)
        if state == "reachable" and result.answer_ms is not None and result.answer_ms * factor > self.gather_budget_s * 1000:
            state = "slow"
            result.error = (f"answers in {result.answer_ms:.0f} ms; a session waits at most "
                            f"{self.gather_budget_s * 1000:.0f} ms (media.ice_gather_budget_s)")
        ep.probes += 1
        ep.last_probe_mono = started
        ep.checked_wall = time.time()
        ep.address = result.address or ep.address
        ep.answer_ms = result.answer_ms
        ep.error = result.error
        if state != ep.state:
            was = ep.state
            ep.state = state
            ep.since_wall = ep.checked_wall
            extra = {"ice_server": ep.target.url, "ice_state": state}
            if state in USABLE:
                log.info("ICE server %s is reachable again (%s ms); new sessions use it", ep.target.url,
                         result.answer_ms, extra=extra)
            else:
                log.warning("ICE server %s is %s (%s); new sessions go without it until a probe is answered "
                            "(was %s)", ep.target.url, state, ep.error, was, extra=extra)

    def _due(self, ep: Endpoint, when: float) -> None:
        if ep.last_probe_mono is not None:
            when = max(when, ep.last_probe_mono + MIN_REPROBE_S)
        if when < ep.due_mono:
            ep.due_mono = when
            self._wake.set()

    def _remember(self, servers: list[RTCIceServer]) -> None:
        now = time.monotonic()
        for server in servers:
            for url in _urls(server):
                ep = self.endpoints.get(url)
                if ep is None:
                    ep = self.endpoints[url] = Endpoint(parse_target(url), "offer", due_mono=now)
                    self._mark_unsupported(ep)
                    self._wake.set()
                ep.seen_mono = now
        self._forget_old_offers(now)

    def _forget_old_offers(self, now: float) -> None:
        offers = sorted((ep for ep in self.endpoints.values() if ep.origin == "offer"), key=lambda e: e.seen_mono)
        excess = len(offers) - MAX_OFFER_SERVERS
        for i, ep in enumerate(offers):
            if i < excess or now - ep.seen_mono > OFFER_SERVER_TTL_S:
                del self.endpoints[ep.target.url]

    def _mark_unsupported(self, ep: Endpoint) -> None:
        if ep.target.unsupported is not None:
            ep.state = "unsupported"
            ep.error = ep.target.unsupported

    # -- network changes -----------------------------------------------------------------------------------
    def network_changed(self) -> None:
        """Something changed in the panel's links, addresses or routes: probe everything once it settles."""
        self.network_changes += 1
        due = time.monotonic() + NETWORK_SETTLE_S
        for ep in self.endpoints.values():
            self._due(ep, due)

    def _open_netlink(self) -> None:
        """Linux tells a netlink socket about link, address and route changes for free (no polling)."""
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                                 socket.NETLINK_ROUTE)
        except (AttributeError, OSError) as e:
            log.info("no netlink (%s): ICE servers are probed on schedule only", e)
            return
        try:
            sock.bind((0, RTMGRP))
            asyncio.get_running_loop().add_reader(sock.fileno(), self._on_netlink)
        except OSError as e:
            sock.close()
            log.info("cannot watch the network through netlink (%s): ICE servers are probed on schedule only", e)
            return
        self._netlink = sock
        self.network_watch = "netlink"

    def _on_netlink(self) -> None:
        sock = self._netlink
        if sock is None:
            return
        changed = False
        while True:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                break
            except OSError:  # ENOBUFS: we missed messages, which is a change too
                changed = True
                break
            if not data:
                break
            changed = changed or _has_rtm_message(data)
        if changed:
            self.network_changed()

    # -- reporting -----------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        in_use = self._in_use()
        servers = []
        for ep in self.endpoints.values():
            servers.append({**ep.status(), "in_use": ep.target.url in in_use})
        return {
            "gather_budget_s": self.gather_budget_s,
            "probe_interval_s": self.probe_interval_s,
            "network_watch": self.network_watch,
            "network_changes": self.network_changes,
            "probe_rounds": self.rounds,
            "usable": sum(1 for ep in self.endpoints.values() if ep.state in USABLE),
            "unusable": sum(1 for ep in self.endpoints.values() if ep.state not in USABLE),
            "servers": servers,
        }

    def _in_use(self) -> set[str]:
        """The configured URLs aiortc would use right now (its first usable STUN and TURN)."""
        out = set()
        for kind in ("stun", "turn"):
            for server in self.configured:
                url = next((u for u in _urls(server) if (ep := self.endpoints.get(u)) is not None
                            and ep.target.kind == kind and ep.state in USABLE), None)
                if url is not None:
                    out.add(url)
                    break
        return out

    def health(self) -> dict[str, Any]:
        """The short form for /api/v1/health: counts and the URLs that are not usable (no credentials)."""
        return {"configured": len(self.endpoints), "usable": sum(1 for ep in self.endpoints.values() if ep.state in USABLE),
                "unusable": {ep.target.url: ep.state for ep in self.endpoints.values() if ep.state not in USABLE}}


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the ICE server monitor stopped: %r; servers are no longer probed (sessions still wait at most "
                  "the gathering budget)", task.exception())


def _urls(server: RTCIceServer) -> list[str]:
    return list(server.urls) if isinstance(server.urls, list) else [server.urls]


def _has_rtm_message(data: bytes) -> bool:
    """Whether a netlink datagram holds a link, address or route message (not only NLMSG_DONE/ERROR)."""
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if 16 <= kind <= 27:  # RTM_NEWLINK .. RTM_GETROUTE
            return True
        if length < 16:
            break
        offset += (length + 3) & ~3
    return False


# -- one probe ---------------------------------------------------------------------------------------------

async def probe(target: Target, timeout: float) -> ProbeResult:
    """Ask a server whether it is there: Binding (STUN), Binding + unauthenticated Allocate (TURN)."""
    if target.unsupported is not None:
        return ProbeResult("unsupported", None, None, target.unsupported)
    deadline = time.monotonic() + timeout
    try:
        address = await asyncio.wait_for(_resolve(target), timeout)
    except TimeoutError:
        return ProbeResult("unreachable", None, None, f"looking up {target.host} took longer than {timeout} s")
    except OSError as e:
        return ProbeResult("unreachable", None, None, f"cannot look up {target.host}: {e}")
    requests = [stun.Message(stun.Method.BINDING, stun.Class.REQUEST)]
    if target.kind == "turn":
        allocate = stun.Message(stun.Method.ALLOCATE, stun.Class.REQUEST)
        allocate.attributes["REQUESTED-TRANSPORT"] = TURN_UDP_TRANSPORT
        requests.append(allocate)
    try:
        if target.transport == "udp":
            answer, ms, sock_error = await _exchange_udp(address, target.port, requests, deadline)
        else:
            answer, ms, sock_error = await _exchange_stream(target, address, requests, deadline)
    except _Refused as e:
        return ProbeResult("refused", address, None, str(e))
    except OSError as e:
        return ProbeResult("unreachable", address, None, f"{type(e).__name__}: {e}")
    if answer is None:
        return ProbeResult("unreachable", address, None,
                           sock_error or f"no answer within {timeout} s ({target.transport} {address}:{target.port})")
    return _judge(target, address, answer, ms)


def _judge(target: Target, address: str, answer: stun.Message, ms: float) -> ProbeResult:
    ms = round(ms, 1)
    if answer.message_method == stun.Method.BINDING:
        if answer.message_class == stun.Class.RESPONSE and "XOR-MAPPED-ADDRESS" in answer.attributes:
            return ProbeResult("reachable", address, ms, None)
        if target.kind == "stun":
            return ProbeResult("refused", address, ms, f"answered Binding without a mapped address "
                               f"(error {answer.attributes.get('ERROR-CODE')})")
        return ProbeResult("reachable", address, ms, None)  # a TURN server that restricts Binding still relays
    # ALLOCATE: 401 with a realm and nonce is how every allocation starts.
    code = answer.attributes.get("ERROR-CODE")
    if answer.message_class == stun.Class.RESPONSE or (code and code[0] in (401, 438)):
        return ProbeResult("reachable", address, ms, None)
    return ProbeResult("refused", address, ms, f"refuses allocations: error {code}")


async def _resolve(target: Target) -> str:
    try:
        ipaddress.ip_address(target.host)
        return target.host
    except ValueError:
        pass
    kind = socket.SOCK_DGRAM if target.transport == "udp" else socket.SOCK_STREAM
    infos = await asyncio.get_running_loop().getaddrinfo(target.host, target.port, type=kind)
    if not infos:
        raise OSError(f"no address for {target.host}")
    # IPv4 first: aioice asks STUN servers from IPv4 host candidates only.
    infos.sort(key=lambda i: i[0] != socket.AF_INET)
    return str(infos[0][4][0])


class _Refused(Exception):
    pass


class _ProbeProtocol(asyncio.DatagramProtocol):
    def __init__(self, ids: set[bytes]) -> None:
        self.ids = ids
        self.answer: asyncio.Future[stun.Message] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            message = stun.parse_message(data)
        except ValueError:
            return
        if message.transaction_id in self.ids and not self.answer.done():
            self.answer.set_result(message)

    def error_received(self, exc: Exception) -> None:
        # On a connected UDP socket an ICMP "port unreachable" arrives here: nothing listens there.
        if not self.answer.done():
            self.answer.set_exception(exc)


async def _exchange_udp(address: str, port: int, requests: list[stun.Message],
                        deadline: float) -> tuple[stun.Message | None, float, str | None]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _ProbeProtocol({r.transaction_id for r in requests}), remote_addr=(address, port))
    started = time.monotonic()
    try:
        delay = FIRST_RETRANSMIT_S
        while (left := deadline - time.monotonic()) > 0:
            for request in requests:
                transport.sendto(bytes(request))
            try:
                answer = await asyncio.wait_for(asyncio.shield(protocol.answer), min(delay, left))
            except TimeoutError:
                delay *= 2
                continue
            except ConnectionRefusedError:
                return None, 0.0, f"nothing listens on udp {address}:{port} (ICMP port unreachable)"
            except OSError as e:
                return None, 0.0, f"udp {address}:{port}: {e}"
            _release_allocation(answer, lambda data: transport.sendto(data))
            return answer, (time.monotonic() - started) * 1000, None
        return None, 0.0, None
    finally:
        transport.close()
        if protocol.answer.done() and not protocol.answer.cancelled():
            protocol.answer.exception()  # retrieved: an ICMP error after the deadline is not worth a warning
        else:
            protocol.answer.cancel()


async def _exchange_stream(target: Target, address: str, requests: list[stun.Message],
                           deadline: float) -> tuple[stun.Message | None, float, str | None]:
    ctx = ssl.create_default_context() if target.tls else None
    started = time.monotonic()
    writer = None
    try:
        async with asyncio.timeout_at(asyncio.get_running_loop().time() + (deadline - time.monotonic())):
            reader, writer = await asyncio.open_connection(
                address, target.port, ssl=ctx, server_hostname=target.host if ctx else None)
            for request in requests:
                writer.write(bytes(request))
            ids = {r.transaction_id for r in requests}
            while True:
                header = await reader.readexactly(20)
                length = struct.unpack("!H", header[2:4])[0]
                message = stun.parse_message(header + await reader.readexactly(length))
                if message.transaction_id in ids:
                    ms = (time.monotonic() - started) * 1000
                    _release_allocation(message, writer.write)
                    return message, ms, None
    except TimeoutError:
        return None, 0.0, None
    except ConnectionRefusedError:
        return None, 0.0, f"connection refused: nothing listens on tcp {address}:{target.port}"
    except ssl.SSLError as e:  # it answers, but a session's TLS would fail the same way
        raise _Refused(f"TLS with {target.host} failed: {e}") from None
    except (asyncio.IncompleteReadError, ValueError) as e:
        return None, 0.0, f"{target.host} did not answer in STUN: {type(e).__name__}"
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 0.5)


def _release_allocation(answer: stun.Message, send: Any) -> None:
    """A TURN server without authentication allocated a relay for our probe: give it back at once."""
    if answer.message_method == stun.Method.ALLOCATE and answer.message_class == stun.Class.RESPONSE:
        refresh = stun.Message(stun.Method.REFRESH, stun.Class.REQUEST)
        refresh.attributes["LIFETIME"] = 0
        send(bytes(refresh))

