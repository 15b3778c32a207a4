"""STUN/TURN never makes a session wait (panel/media/ice.py): real servers, in namespaces of the test's own.

- a STUN responder built from aioice's own message code (a real Binding success with the
  XOR-MAPPED-ADDRESS of the sender), which aioice's gathering turns into a srflx candidate;
- a blackhole: the same UDP socket, receiving and counting, never answering;
- a real TURN server (Debian's coturn, long-term credentials), which gives a relay candidate.

aioice gathers from the non-loopback addresses of the namespace it runs in, so each test runs the panel
inside the panel side of a veth pair (tests/netns.py) and its servers on the other side: nothing binds
to or sends to the machine's LAN address, and no name is looked up through the system resolver.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aioice import stun
from aioice.ice import get_host_addresses
from aiortc import RTCIceServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from panel.daemon import Panel
from panel.media.errors import SessionRefused
from panel.media.ice import IceMonitor, parse_target, probe
from panel.media.service import MediaService

from .eventually import eventually, eventually_sync
from .media_resident import Resident
from .media_rig import media_config, media_of, start_panel_inprocess
from .netns import Pair, veth_pair

BUDGET_S = 0.4
# Nothing listens on it in the servers' namespace: a closed port, whatever else runs on the machine.
CLOSED_PORT = 3479
PROBE_TIMEOUT_S = 0.4


@pytest.fixture
def pair() -> Iterator[Pair]:
    """The test runs in the panel side of a fresh veth pair; its servers live on the other side."""
    with veth_pair("ice") as made, made.panel.entered():
        # The guard: what the panel (and every peer the test makes) can gather is the pair's address.
        gathered = get_host_addresses(use_ipv4=True, use_ipv6=False)
        assert gathered == [made.panel.address], gathered
        yield made


@dataclass
class StunServer(asyncio.DatagramProtocol):
    """A UDP STUN server that answers Binding requests, or (``answering = False``) a blackhole."""

    answering: bool = True
    requests: list[tuple[str, int]] = field(default_factory=list)
    transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        request = stun.parse_message(data)
        self.requests.append(addr)
        if not self.answering or request.message_method != stun.Method.BINDING:
            return
        response = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, transaction_id=request.transaction_id)
        response.attributes["XOR-MAPPED-ADDRESS"] = addr
        self.transport.sendto(bytes(response), addr)

    @property
    def url(self) -> str:
        host, port = self.transport.get_extra_info("sockname")[:2]
        return f"stun:{host}:{port}"


async def serve_stun(pair: Pair, answering: bool, host: str | None = None) -> tuple[Any, StunServer]:
    """A STUN server whose socket lives in the servers' namespace (made there, polled from here)."""
    with pair.servers.entered():
        transport, server = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: StunServer(answering=answering), local_addr=(pair.check(host or pair.servers.address), 0))
    return transport, server


@pytest.fixture
async def responder(pair: Pair) -> AsyncIterator[StunServer]:
    transport, server = await serve_stun(pair, answering=True)
    yield server
    transport.close()


@pytest.fixture
async def blackhole(pair: Pair) -> AsyncIterator[StunServer]:
    transport, server = await serve_stun(pair, answering=False)
    yield server
    transport.close()


async def start(tmp_path: Path, servers: list[dict[str, Any]], **ice: Any) -> Panel:
    settings = {"ice_gather_budget_s": BUDGET_S, "ice_probe_timeout_s": PROBE_TIMEOUT_S, "ice_probe_interval_s": 1,
                **ice}
    return await start_panel_inprocess(tmp_path, media=media_config(ice_servers=servers, **settings))


def server_status(media: MediaService, url: str) -> dict[str, Any]:
    return next(s for s in media.status()["ice"]["servers"] if s["url"] == url)


def state_is(media: MediaService, url: str, *states: str) -> bool:
    return server_status(media, url)["state"] in states


def candidates(sdp: str, kind: str) -> list[str]:
    return [line for line in sdp.splitlines() if line.startswith("a=candidate:") and f" typ {kind}" in line]


async def offer_answer(media: MediaService, **kw: Any) -> tuple[str, float]:
    """An MQTT-signalled live-view offer answered the way the MQTT link does it; (answer, seconds)."""
    resident = Resident(audio="", video="recvonly", datachannel=False)
    try:
        offer = await resident.offer()
        started = time.monotonic()
        answer = await media.answer_offer(offer, who="remote", **kw)
        took = time.monotonic() - started
    finally:
        await resident.close()
    for session in list(media.sessions.sessions.values()):
        await session.close("test")
    return answer, took


async def test_a_reachable_stun_server_gives_srflx_and_the_session_connects(tmp_path: Path,
                                                                         responder: StunServer) -> None:
    panel = await start(tmp_path, [{"urls": [responder.url]}])
    try:
        media = media_of(panel)
        await eventually(lambda: state_is(media, responder.url, "reachable"), 5, "the probe to find the server")
        status = server_status(media, responder.url)
        assert status["in_use"] is True and status["answer_ms"] is not None and status["error"] is None
        assert (await panel.health())["checks"]["media"]["ice"] == {"configured": 1, "usable": 1, "unusable": {}}

        resident = Resident(audio="", video="recvonly")
        session = await media.sessions.create_for_backend(await resident.offer(), who="remote")
        srflx = candidates(session.answer_sdp, "srflx")
        assert srflx, f"no srflx candidate in the answer:\n{session.answer_sdp}"
        # The srflx candidate is what the responder saw: the sender's own address (no NAT here).
        host, port = responder.requests[-1]
        assert f" {host} {port} typ srflx" in srflx[0]
        await resident.accept(session.answer_sdp)
        await resident.wait_pictures(2)
        await resident.close()
        await session.close("test")
    finally:
        await panel.stop("test over")


async def test_an_unreachable_server_is_reported_and_skipped_then_used_once_it_answers(
        tmp_path: Path, blackhole: StunServer) -> None:
    panel = await start(tmp_path, [{"urls": [blackhole.url]}])
    try:
        media = media_of(panel)
        await eventually(lambda: state_is(media, blackhole.url, "unreachable"), 5, "the probe to give up")
        status = server_status(media, blackhole.url)
        assert "no answer within" in status["error"] and status["in_use"] is False
        health = (await panel.health())["checks"]["media"]["ice"]
        assert health["usable"] == 0 and health["unusable"] == {blackhole.url: "unreachable"}

        probes_seen = len(blackhole.requests)
        answer, took = await offer_answer(media)
        # aioice alone would wait 5 s here for the server; the session was not even given it.
        assert took < 2.0, f"answer_offer took {took:.2f} s with an unreachable STUN server"
        assert candidates(answer, "host") and not candidates(answer, "srflx")
        sent_by_session = [a for a in blackhole.requests[probes_seen:] if a[1] in _ports_of(answer)]
        assert not sent_by_session, "the session asked the server it was not given"

        blackhole.answering = True  # the server comes back
        await eventually(lambda: state_is(media, blackhole.url, "reachable"), 5, "the next probe to find it")
        answer, _ = await offer_answer(media)
        assert candidates(answer, "srflx"), "a server that answers again is used again"
    finally:
        await panel.stop("test over")


def _ports_of(sdp: str) -> set[int]:
    return {int(line.split()[5]) for line in candidates(sdp, "host")}


async def test_servers_from_the_offer_are_bounded_then_probed_and_skipped(tmp_path: Path, blackhole: StunServer,
                                                                         responder: StunServer) -> None:
    """Servers named in the offer message replace the configured ones; one never seen before costs
    at most the gathering budget, and from its probe on it is skipped."""
    panel = await start(tmp_path, [{"urls": [responder.url]}], ice_probe_interval_s=3600)
    try:
        media = media_of(panel)
        offered = [{"urls": [blackhole.url]}]
        answer, took = await offer_answer(media, ice_servers=offered)
        assert took < 2.0, f"answer_offer took {took:.2f} s with an unknown, unreachable STUN server"
        assert not candidates(answer, "srflx")
        ports = _ports_of(answer)
        assert any(a[1] in ports for a in blackhole.requests), "the offer's server was tried"
        assert not responder.requests or all(a[1] not in ports for a in responder.requests), \
            "the configured server was used although the offer named its own"

        await eventually(lambda: state_is(media, blackhole.url, "unreachable"), 5, "the offer's server to be probed")
        assert server_status(media, blackhole.url)["origin"] == "offer"
        answer, took = await offer_answer(media, ice_servers=offered)
        ports = _ports_of(answer)
        assert not any(a[1] in ports for a in blackhole.requests), "a known unreachable server was handed out"
        assert took < 1.0

        # A TURN server with credentials in the offer, as W3C RTCIceServer: accepted and remembered.
        turn = blackhole.url.replace("stun:", "turn:") + "?transport=udp"
        answer, took = await offer_answer(media, ice_servers=[{"urls": responder.url}, {
            "urls": [turn], "username": "u", "credential": "p"}])
        assert candidates(answer, "srflx") and took < 2.0
        assert server_status(media, turn)["kind"] == "turn" and server_status(media, turn)["origin"] == "offer"

        # Servers the session could not use are refused, saying which and why.
        refusals = [
            ([{"urls": ["stun:h:3478?transport=udp"]}], "urls[0] (stun:h:3478?transport=udp): a stun: URL takes no"),
            ([{"urls": "turn:h:3478"}], "ice_servers[0] is a TURN server: it needs"),
            ([{"urls": "turns:h:5349?transport=udp"}], "turns: works over tcp only"),
            ([{"urls": "stun:h", "username": 5}], "ice_servers[0].username must be a string"),
        ]
        for servers, says in refusals:
            with pytest.raises(SessionRefused) as refused:
                await offer_answer(media, ice_servers=servers)
            assert refused.value.code == "invalid_ice_servers" and says in str(refused.value), str(refused.value)
        assert not media.sessions.sessions
    finally:
        await panel.stop("test over")


async def test_a_server_that_stops_answering_is_probed_again_after_the_session_that_missed_it(
        tmp_path: Path, responder: StunServer) -> None:
    # The schedule alone would take an hour: the session's miss makes the monitor look at once.
    panel = await start(tmp_path, [{"urls": [responder.url]}], ice_probe_interval_s=3600)
    try:
        media = media_of(panel)
        await eventually(lambda: state_is(media, responder.url, "reachable"), 5, "the first probe")
        responder.answering = False
        answer, took = await offer_answer(media)
        assert took < 2.0 and not candidates(answer, "srflx")
        assert server_status(media, responder.url)["misses"] == 1
        await eventually(lambda: state_is(media, responder.url, "unreachable"), 5,
                         "the re-probe after the session's miss")
    finally:
        await panel.stop("test over")


# -- TURN: a real coturn ---------------------------------------------------------------------------------------

@dataclass
class Coturn:
    host: str
    port: int
    user: str
    password: str
    proc: subprocess.Popen[bytes]
    tls_port: int
    cert: Path


def self_signed(directory: Path, ip: str) -> tuple[Path, Path]:
    """A certificate for the server's address (turns: to an IP is checked against an IP SAN)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "panel test TURN")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "turn-cert.pem", directory / "turn-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def coturn(tmp_path: Path, pair: Pair) -> Iterator[Coturn]:
    binary = shutil.which("turnserver")
    if binary is None:
        pytest.skip("coturn is not installed (scripts/test installs it: apt-get install coturn)")
    host = pair.check(pair.servers.address)
    # The namespace is the test's own: the standard ports are free.
    port, tls_port = 3478, 5349
    cert, key = self_signed(tmp_path, host)
    user, password = "panel", secrets.token_urlsafe(12)
    log = open(tmp_path / "turnserver.log", "wb")
    proc = pair.servers.popen(
        [binary, "-n", f"--listening-ip={host}", f"--listening-port={port}", f"--tls-listening-port={tls_port}",
         f"--cert={cert}", f"--pkey={key}", f"--relay-ip={host}", "--min-port=49152", "--max-port=65535",
         "--lt-cred-mech", f"--user={user}:{password}", "--realm=panel.test", "--no-dtls", "--no-cli",
         "--no-rfc5780", "--no-software-attribute", "--log-file=stdout", "--simple-log",
         f"--pidfile={tmp_path / 'turnserver.pid'}"], log=log)

    def accepting() -> bool:  # ready when both listeners accept TCP
        if proc.poll() is not None:
            raise AssertionError("turnserver exited")
        try:
            for listening in (port, tls_port):
                socket.create_connection((host, listening), timeout=0.2).close()
        except OSError:
            return False
        return True

    try:
        eventually_sync(accepting, 10, "turnserver listening", interval=0.05)
    except AssertionError:
        pair.servers.stop(proc)
        pytest.fail(f"turnserver did not start: {(tmp_path / 'turnserver.log').read_text()[-2000:]}")
    yield Coturn(host, port, user, password, proc, tls_port, cert)
    pair.servers.stop(proc)
    log.close()


async def test_turn_from_config_with_its_password_from_the_environment_gives_a_relay_candidate(
        tmp_path: Path, coturn: Coturn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PANEL_TEST_TURN_PASSWORD", coturn.password)
    udp = f"turn:{coturn.host}:{coturn.port}?transport=udp"
    tcp = f"turn:{coturn.host}:{coturn.port}?transport=tcp"
    closed = f"turn:{coturn.host}:{CLOSED_PORT}?transport=tcp"
    panel = await start(tmp_path, [{"urls": [udp, tcp], "username": coturn.user,
                                    "credential_env": "PANEL_TEST_TURN_PASSWORD"},
                                   {"urls": [closed], "username": "x", "credential_env": "PANEL_TEST_TURN_PASSWORD"}])
    try:
        media = media_of(panel)
        await eventually(lambda: all(not state_is(media, u, "unknown") for u in (udp, tcp, closed)), 5, "probes")
        assert state_is(media, udp, "reachable") and state_is(media, tcp, "reachable"), media.status()["ice"]
        assert state_is(media, closed, "unreachable") and "refused" in server_status(media, closed)["error"]
        assert server_status(media, udp)["in_use"] and not server_status(media, tcp)["in_use"]

        answer, took = await offer_answer(media)
        assert candidates(answer, "relay"), f"no relay candidate from coturn:\n{answer}"
        assert took < 2.0
        assert server_status(media, udp)["misses"] == 0
    finally:
        await panel.stop("test over")


async def test_turn_with_a_wrong_password_answers_at_once_and_is_reported_as_missing(
        tmp_path: Path, coturn: Coturn, monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe (no credentials) cannot tell a wrong password; the sessions can, and say so."""
    monkeypatch.setenv("PANEL_TEST_TURN_PASSWORD", "wrong-" + coturn.password)
    udp = f"turn:{coturn.host}:{coturn.port}?transport=udp"
    panel = await start(tmp_path, [{"urls": [udp], "username": coturn.user,
                                    "credential_env": "PANEL_TEST_TURN_PASSWORD"}], ice_probe_interval_s=3600)
    try:
        media = media_of(panel)
        await eventually(lambda: state_is(media, udp, "reachable"), 5, "the probe")
        answer, took = await offer_answer(media)
        assert not candidates(answer, "relay") and took < 2.0
        status = server_status(media, udp)
        assert status["misses"] == 1 and status["last_miss_at"] is not None
    finally:
        await panel.stop("test over")


async def test_turns_needs_a_certificate_this_machine_trusts(tmp_path: Path, coturn: Coturn,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """TURN over TLS: an untrusted certificate is "refused" (a session would fail the same way); once
    trusted, the probe passes and sessions get a relay candidate through the TLS connection."""
    url = f"turns:{coturn.host}:{coturn.tls_port}?transport=tcp"
    result = await probe(parse_target(url), 2.0)
    assert result.state == "refused" and "certificate verify failed" in (result.error or ""), result

    monkeypatch.setenv("SSL_CERT_FILE", str(coturn.cert))  # OpenSSL reads it for every default context
    monkeypatch.setenv("PANEL_TEST_TURN_PASSWORD", coturn.password)
    panel = await start(tmp_path, [{"urls": [url], "username": coturn.user,
                                    "credential_env": "PANEL_TEST_TURN_PASSWORD"}], ice_gather_budget_s=1.0)
    try:
        media = media_of(panel)
        await eventually(lambda: state_is(media, url, "reachable"), 5, "the TLS probe")
        assert server_status(media, url)["address"] == coturn.host
        answer, took = await offer_answer(media)
        assert candidates(answer, "relay"), f"no relay candidate over TURN/TLS:\n{answer}"
        assert took < 2.0
    finally:
        await panel.stop("test over")


# -- the monitor on its own ------------------------------------------------------------------------------------

async def test_a_network_change_makes_the_monitor_probe_at_once(responder: StunServer) -> None:
    if shutil.which("ip") is None:
        pytest.skip("no ip command to make a network change")
    monitor = IceMonitor([RTCIceServer(urls=responder.url)], gather_budget_s=BUDGET_S, probe_interval_s=3600,
                         probe_timeout_s=PROBE_TIMEOUT_S)
    monitor.start()
    try:
        if monitor.network_watch != "netlink":
            pytest.skip("no netlink here: the monitor probes on schedule only")
        await eventually(lambda: monitor.rounds >= 1, 5, "the first probe")
        rounds = monitor.rounds
        # A new, down network interface without addresses: a real link event that changes nothing else.
        name = f"pnl{secrets.token_hex(4)}"
        made = await asyncio.create_subprocess_exec("ip", "tuntap", "add", "dev", name, "mode", "tap",
                                                    stderr=asyncio.subprocess.PIPE)
        _, err = await made.communicate()
        if made.returncode != 0:
            pytest.skip(f"cannot add a network interface here: {err.decode().strip()}")
        try:
            await eventually(lambda: monitor.rounds > rounds, 5, "a probe after the network change")
            assert monitor.network_changes >= 1
        finally:
            removed = await asyncio.create_subprocess_exec("ip", "link", "del", name)
            await removed.wait()
    finally:
        await monitor.close()


async def test_the_monitor_leaves_no_sockets_or_tasks(responder: StunServer, blackhole: StunServer) -> None:
    fds = len(os.listdir("/proc/self/fd"))
    tasks = len(asyncio.all_tasks())
    monitor = IceMonitor([RTCIceServer(urls=[responder.url, blackhole.url, "stuns:stun.example.net"])],
                         gather_budget_s=BUDGET_S, probe_interval_s=3600, probe_timeout_s=PROBE_TIMEOUT_S)
    monitor.start()
    await monitor.probe_now()
    states = {s["url"]: s["state"] for s in monitor.status()["servers"]}
    assert states == {responder.url: "reachable", blackhole.url: "unreachable",
                      "stuns:stun.example.net": "unsupported"}
    choice = monitor.choose()
    assert [u for s in choice.servers for u in s.urls] == [responder.url]
    assert choice.skipped == [blackhole.url, "stuns:stun.example.net"]
    await monitor.close()
    assert len(os.listdir("/proc/self/fd")) == fds and len(asyncio.all_tasks()) == tasks


async def test_probe_names_what_is_wrong(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    result = await probe(parse_target(f"stun:{pair.servers.address}:{CLOSED_PORT}"), 1.0)
    assert result.state == "unreachable" and "ICMP port unreachable" in (result.error or "")
    # Names come from a hosts table of the test's own, so no lookup reaches the system resolver: the
    # probe sees a resolver's real "no such name" error, and a known name's address.
    transport, local = await serve_stun(pair, answering=True)
    port = transport.get_extra_info("sockname")[1]
    hosts = {"stun.panel.test": pair.servers.address}
    loop = asyncio.get_running_loop()

    async def getaddrinfo(host: str, port: int, **kw: Any) -> list[Any]:
        if host not in hosts:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return await asyncio.to_thread(socket.getaddrinfo, hosts[host], port, **kw)

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    result = await probe(parse_target("stun:no-such-host.invalid:3478"), 2.0)
    assert result.state == "unreachable" and "no-such-host.invalid" in (result.error or ""), result
    # A name is probed at its address and handed to sessions as that address (no DNS during setup).
    monitor = IceMonitor([RTCIceServer(urls=f"stun:stun.panel.test:{port}")], gather_budget_s=BUDGET_S,
                         probe_interval_s=3600, probe_timeout_s=PROBE_TIMEOUT_S, watch_network=False)
    await monitor.probe_now()
    transport.close()
    assert monitor.status()["servers"][0]["address"] == pair.servers.address and local.requests
    assert monitor.choose().servers[0].urls == [f"stun:{pair.servers.address}:{port}"]


async def test_the_namespaces_keep_the_lan_out_of_reach(pair: Pair, responder: StunServer) -> None:
    """The guard for every test here: from the panel's side only the pair's subnet is routable, and the
    servers bound inside it; the machine's own addresses are not even there."""
    assert pair.contained(responder.transport.get_extra_info("sockname")[0])
    assert pair.panel.addresses() == {"127.0.0.1", pair.panel.address}
    outside = [a for a in pair.home_addresses if not ipaddress.ip_address(a).is_loopback]
    for address in outside:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe_socket:
            with pytest.raises(OSError):  # ENETUNREACH: no route to anything outside the pair
                probe_socket.sendto(b"x", (address, 9))
