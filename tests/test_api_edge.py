"""The API's edge, on a real uvicorn behind the panel's own accept loop (issue 9): connection limits per
client and in total, header and idle timeouts, accept errors logged as counts, proxy headers believed only
from a trusted proxy, and the Host header checked against the names the panel serves."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from panel.api.app import ApiServer, create_app
from panel.api.connections import ConnectionGuard, ConnectionLimits, Tally, client_key
from panel.api.hosts import host_of, served_names
from panel.api.tls import generate
from panel.platform import ApiConfig, FakeClock, LogRateLimit

from .api_support import api_rig
from .eventually import eventually
from .rig import Rig

REQUEST = b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@contextlib.asynccontextmanager
async def edge(rig: Rig) -> AsyncIterator[tuple[ApiServer, httpx.AsyncClient]]:
    """The rig's panel served the way the daemon serves it: its api config and the names it serves."""
    server = ApiServer(create_app(rig.panel, simulated=True), "127.0.0.1", 0, api=rig.cfg.api,
                       names=served_names(rig.cfg, hostname="door-7"))
    await server.start()
    task = asyncio.create_task(server.serve())
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.bound_port}", timeout=10) as client:
            yield server, client
    finally:
        await server.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def dial(port: int, source: str, send: bytes = b"") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    if send:
        writer.write(send)
    return reader, writer


async def closed_by_panel(reader: asyncio.StreamReader) -> bool:
    try:
        return await reader.read(65536) == b""
    except ConnectionResetError:
        return True


# -- connections ------------------------------------------------------------------------------------


async def test_one_address_gets_its_share_and_no_more_while_others_are_served(tmp_path: Path) -> None:
    rig = api_rig(tmp_path, api={"max_connections_per_client": 4})
    try:
        async with edge(rig) as (server, client):
            held = [await dial(server.bound_port, "127.0.0.2", b"GET / HT") for _ in range(4)]
            await eventually(lambda: server.guard.per_client.get("127.0.0.2") == 4, 5, "four held")
            extra_reader, extra = await dial(server.bound_port, "127.0.0.2")
            assert await asyncio.wait_for(closed_by_panel(extra_reader), 5), "the fifth is reset at once"
            assert server.guard.per_client["127.0.0.2"] == 4 and server.guard.refused.total == 1
            r = await client.get("/api/v1/health")  # another address is served meanwhile
            assert r.status_code == 200
            for _, w in held:
                w.close()
            await eventually(lambda: "127.0.0.2" not in server.guard.per_client, 5, "slots released")
            extra.close()
    finally:
        await rig.close()


async def test_at_the_total_limit_new_connections_wait_in_the_kernel_until_one_closes(tmp_path: Path) -> None:
    rig = api_rig(tmp_path, api={"max_connections": 8, "max_connections_per_client": 4})
    try:
        async with edge(rig) as (server, _):
            held = [await dial(server.bound_port, source) for source in ("127.0.0.2", "127.0.0.3") for _ in range(4)]
            await eventually(lambda: server.guard.open == 8, 5, "eight open")
            assert not server.guard.room.is_set()
            reader, writer = await dial(server.bound_port, "127.0.0.4", REQUEST)  # queued, not accepted
            assert server.guard.open == 8 and "127.0.0.4" not in server.guard.per_client
            held[0][1].close()
            head = await asyncio.wait_for(reader.readline(), 5)
            assert head.startswith(b"HTTP/1.1 200"), head
            writer.close()
            for _, w in held[1:]:
                w.close()
    finally:
        await rig.close()


@pytest.mark.parametrize("send", [b"", b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "],
                         ids=["idle", "half-sent"])
async def test_a_connection_without_a_whole_request_head_is_closed_after_header_timeout(tmp_path: Path,
                                                                                          send: bytes) -> None:
    rig = api_rig(tmp_path, api={"header_timeout_s": 0.5})
    try:
        async with edge(rig) as (server, _):
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            reader, writer = await dial(server.bound_port, "127.0.0.2", send)
            assert await asyncio.wait_for(closed_by_panel(reader), 5)
            assert 0.4 < loop.time() - t0 < 3, "closed by the header timeout"
            await eventually(lambda: server.guard.open == 0, 5, "slot released")
            assert server.guard.timed_out.total == 1
            writer.close()
    finally:
        await rig.close()


async def test_a_kept_alive_connection_is_closed_when_idle_and_a_slow_next_head_too(tmp_path: Path) -> None:
    rig = api_rig(tmp_path, api={"idle_timeout_s": 0.5, "header_timeout_s": 0.6})
    try:
        async with edge(rig) as (server, _):
            loop = asyncio.get_running_loop()
            for follow_up in (b"", b"GET /api/v1/he"):
                reader, writer = await dial(server.bound_port, "127.0.0.2", REQUEST)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                assert head.startswith(b"HTTP/1.1 200")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                await reader.readexactly(length)
                t0 = loop.time()
                writer.write(follow_up)  # nothing, or the start of a next request that never ends
                assert await asyncio.wait_for(closed_by_panel(reader), 5)
                took = loop.time() - t0
                assert (0.4 < took < 2.5) if not follow_up else (0.5 < took < 2.5), (follow_up, took)
                writer.close()
            # A long request is not cut short: the timers run only between requests.
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.bound_port}") as slow:
                r = await slow.post("/api/v1/sim/buttons/b303/hold", json={"seconds": 0.8})
            assert r.status_code == 200, r.text
    finally:
        await rig.close()


async def test_running_out_of_descriptors_pauses_accepting_and_logs_a_count(tmp_path: Path,
                                                                             caplog: pytest.LogCaptureFixture) -> None:
    rig = api_rig(tmp_path)
    server = ApiServer(create_app(rig.panel, simulated=True), "127.0.0.1", 0, api=rig.cfg.api)
    await server.start()  # bound, not accepting: the test runs the accept loop on a socket out of descriptors
    assert server.listener is not None
    real = server.listener.sockets[0]

    class Exhausted:
        """The listening socket while the process has no descriptor left: accept fails 6 times."""

        failures = 6

        def accept(self) -> tuple[socket.socket, Any]:
            if self.failures:
                self.failures -= 1
                raise OSError(errno.EMFILE, "Too many open files")
            return real.accept()

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    caplog.set_level(logging.ERROR, "panel.api.connections")
    accepting = asyncio.create_task(server.listener._accept(Exhausted()))  # type: ignore[arg-type]
    try:
        reader, writer = await dial(server.bound_port, "127.0.0.2", REQUEST)
        head = await asyncio.wait_for(reader.readline(), 10)
        assert head.startswith(b"HTTP/1.1 200"), "served once descriptors are back"
        writer.close()
    finally:
        accepting.cancel()
        await server.stop()
        await rig.close()
    assert server.guard.accept_failed.total == 6
    lines = [r for r in caplog.records if "cannot accept" in r.getMessage()]
    # The first at once, the rest as one count (here when the server stopped; else a minute later).
    assert [r.__dict__["count"] for r in lines] == [1, 5] and lines[0].__dict__["error"] == "EMFILE"


def test_a_tally_logs_the_first_and_then_one_count_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    tally = Tally(clock, "something happened")
    caplog.set_level(logging.WARNING, "panel.api.connections")
    for _ in range(25_000):
        tally.note(client="127.0.0.2")
    assert [r.__dict__["count"] for r in caplog.records] == [1]
    clock.advance(60)
    assert [r.__dict__["count"] for r in caplog.records] == [1, 24_999]
    clock.advance(600)
    assert len(caplog.records) == 2, "nothing more to say"
    tally.note()
    assert [r.__dict__["count"] for r in caplog.records] == [1, 24_999, 1]


def test_client_keys_group_an_ipv6_host_by_its_64_and_mapped_addresses_as_ipv4() -> None:
    assert client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"


def test_a_trusted_proxy_is_held_only_by_the_total() -> None:
    guard = ConnectionGuard(ConnectionLimits.from_config(ApiConfig(max_connections_per_client=2,
                                                                   trusted_proxies=["10.0.0.0/24"])), FakeClock())
    assert [guard.admit(("10.0.0.5", p)) is not None for p in range(5)] == [True] * 5
    assert [guard.admit(("10.0.1.5", p)) is not None for p in range(3)] == [True, True, False]


# -- proxy headers ------------------------------------------------------------------------------------


async def login_codes(client: httpx.AsyncClient, forwarded_for: list[str]) -> list[str]:
    out = []
    for ip in forwarded_for:
        r = await client.post("/api/v1/auth/login", json={"password": "not the password"},
                              headers={"X-Forwarded-For": ip})
        out.append(r.json()["code"])
    return out


async def test_forwarded_for_from_anyone_but_a_trusted_proxy_is_ignored(tmp_path: Path) -> None:
    """Behind a tunnel every client is loopback: a made-up X-Forwarded-For must not buy fresh guesses."""
    rig = api_rig(tmp_path, api={"login_lockout_after": 3})
    try:
        async with edge(rig) as (_, client):
            codes = await login_codes(client, [f"10.9.0.{i}" for i in range(1, 5)])
            assert codes == ["invalid_credentials"] * 3 + ["login_locked"], codes
    finally:
        await rig.close()


async def test_forwarded_for_from_a_trusted_proxy_names_the_client(tmp_path: Path) -> None:
    rig = api_rig(tmp_path, api={"login_lockout_after": 3, "trusted_proxies": ["127.0.0.1"]})
    try:
        async with edge(rig) as (_, client):
            # The proxy appends the address it saw: a client's own X-Forwarded-For in front changes nothing.
            codes = await login_codes(client, ["10.9.0.1", "6.6.6.6, 10.9.0.1", "7.7.7.7, 10.9.0.1", "10.9.0.1"])
            assert codes == ["invalid_credentials"] * 3 + ["login_locked"], codes
            assert await login_codes(client, ["10.9.0.2"]) == ["invalid_credentials"], "another client is not locked"
    finally:
        await rig.close()


# -- Host ------------------------------------------------------------------------------------------


async def test_a_request_naming_another_host_is_refused_before_any_route_and_changes_nothing(tmp_path: Path) -> None:
    rig = api_rig(tmp_path)
    try:
        async with edge(rig) as (server, client):
            before = rig.types()
            for host in ("rebind.attacker.example", "rebind.attacker.example:8080", "localhost.attacker.example"):
                r = await client.post("/api/v1/sim/buttons/b303/press", headers={"Host": host})
                assert r.status_code == 400 and r.json()["code"] == "host_not_allowed", (host, r.text)
                assert host_of(host) in r.json()["message"]
            assert rig.types() == before, "the refused press changed nothing"
            port = server.bound_port
            for host in ("localhost", f"localhost:{port}", "LOCALHOST.", "127.0.0.1", f"127.0.0.1:{port}",
                         f"[::1]:{port}", "192.0.2.7", "door-7", "door-7.local:443"):
                r = await client.get("/api/v1/health", headers={"Host": host})
                assert r.status_code == 200, (host, r.text)
    finally:
        await rig.close()


async def test_configured_names_are_served_and_a_star_serves_any(tmp_path: Path) -> None:
    rig = api_rig(tmp_path / "named", api={"allowed_hosts": ["door.example.com"]},
                  links={"base_url": "https://panel.example.net:8443"})
    try:
        async with edge(rig) as (_, client):
            for host, status in (("door.example.com", 200), ("panel.example.net:8443", 200),
                                 ("other.example.com", 400)):
                assert (await client.get("/api/v1/health", headers={"Host": host})).status_code == status, host
    finally:
        await rig.close()
    rig = api_rig(tmp_path / "any", api={"allowed_hosts": ["*"]})
    try:
        async with edge(rig) as (_, client):
            assert (await client.get("/api/v1/health", headers={"Host": "anything.example"})).status_code == 200
    finally:
        await rig.close()


async def test_per_input_log_lines_pass_a_burst_then_one_a_period_saying_how_many_were_dropped() -> None:
    limit = LogRateLimit(burst=3, every_s=0.05)

    def record(msg: str = "Invalid HTTP request received.") -> logging.LogRecord:
        return logging.LogRecord("uvicorn.error", logging.WARNING, __file__, 1, msg, (), None)

    assert [limit.filter(record()) for _ in range(1000)].count(True) == 3, "a flood of one message: the burst"
    assert limit.filter(record("another message")), "each message has its own allowance"
    passed = await eventually(lambda: r if limit.filter(r := record()) else None, 5, "the next period")
    assert passed.__dict__["suppressed"] >= 997


async def test_a_tls_handshake_that_never_comes_is_cut_at_header_timeout(tmp_path: Path) -> None:
    rig = api_rig(tmp_path, api={"header_timeout_s": 0.5})
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    generate(cert, key, "test-panel", hostname="door-7", names=["127.0.0.1"])
    server = ApiServer(create_app(rig.panel, simulated=True), "127.0.0.1", 0, ssl_certfile=str(cert),
                       ssl_keyfile=str(key), api=rig.cfg.api)
    await server.start()
    task = asyncio.create_task(server.serve())
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        reader, writer = await dial(server.bound_port, "127.0.0.2")  # TCP, and then no ClientHello
        assert await asyncio.wait_for(closed_by_panel(reader), 5)
        assert 0.4 < loop.time() - t0 < 3
        await eventually(lambda: server.guard.open == 0, 5, "slot released")
        writer.close()
        async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{server.bound_port}",
                                     verify=ssl.create_default_context(cafile=str(cert))) as client:
            assert (await client.get("/api/v1/health")).status_code == 200
    finally:
        await server.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await rig.close()
