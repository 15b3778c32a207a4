"""Publishing once to an SFU over WHIP (panel/media/whip.py, RFC 9725) against a real Janus 1.1.2 VideoRoom
behind meetecho's WHIP front end (tests/sfu.py), in a veth pair of the test's own (tests/netns.py): the
panel and the backend's broker on one side, Janus and the WHIP server on the other.

A viewer (aiortc) subscribes to the room through Janus's own API and gets the panel's pictures (the
synthetic camera's frame stamps) and sound from Janus, never from the panel; a wrong token is one 401,
not a storm; a server that goes away and comes back gets a new session after a backoff; a stop DELETEs
the session, as the RFC says.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from panel.auth import Secrets, load_secrets
from panel.daemon import Panel
from panel.errors import ConfigError, SecretsError
from panel.link import CommandRefused, PublishCommand, parse, signed
from panel.media.pattern import read_frame_stamp
from panel.media.whip import Publishing, ice_servers_from_links
from panel.platform import FakeClock, SecretsConfig, parse_config

from .eventually import eventually
from .media_rig import INSTALLER, media_config, ring
from .mosquitto import Broker, Client
from .netns import Pair, veth_pair
from .sfu import Sfu, Subscriber, publishers
from .support import config_dict
from .test_media_sources import pattern_h264

pytestmark = pytest.mark.slow

A = "panel-a"
CLOSED_PORT = 3479  # nothing listens on it in the servers' namespace
KEY = "w" * 24 + "-command-key"


class Synced:
    """The ClockSync interface: the clock is synchronised (freshness rests on ``exp``)."""

    def synchronized(self) -> bool:
        return True


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with veth_pair("whip") as made, made.panel.entered():
        yield made


@pytest.fixture(scope="module")
def sfu(pair: Pair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sfu]:
    server = Sfu(pair, tmp_path_factory.mktemp("sfu"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def broker(pair: Pair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    # Made in the panel's namespace: its loopback, where the panel connects.
    with Broker(tmp_path_factory.mktemp("broker"), panels=[A]) as b:
        yield b


@pytest.fixture
async def backend(broker: Broker) -> AsyncIterator[Client]:
    async with Client(broker) as c:
        yield c


async def start_panel(tmp_path: Path, broker: Broker, sfu: Sfu, token: str | None, url: str | None = None,
                      media: dict[str, Any] | None = None, **publish: Any) -> Panel:
    target = {"id": "janus", "url": url or sfu.endpoint_url}
    data = config_dict(media=media_config(publish={"targets": [target], "retry_min_s": 0.2, "retry_max_s": 1,
                                                   **publish}, **(media or {})),
                       mqtt=broker.mqtt_config(A, require_signed_commands=True))
    data["panel"] = {"id": A, "name": "Entrance A"}
    data["storage"] = {"dir": str(tmp_path / "state")}
    secrets = Secrets(mqtt_password=broker.passwords[A], command_key=KEY, installer_token=INSTALLER,
                      whip_tokens={"janus": token} if token else {})
    panel = Panel(parse_config(data), secrets, simulate=True, clock_sync=Synced())
    await panel.start()
    try:
        await eventually(lambda: panel.mqtt is not None and panel.mqtt.connected, 10, "the panel connected to MQTT")
    except BaseException:
        await panel.stop("test failed")
        raise
    return panel


def publishing(panel: Panel) -> Publishing:
    assert panel.publishing is not None, "the publishing component did not start"
    return panel.publishing


def events(panel: Panel, type_: str) -> list[dict[str, Any]]:
    rows = panel.store.read_sync(lambda c: c.execute("SELECT data FROM events WHERE type=? ORDER BY seq",
                                                     (type_,)).fetchall())
    return [json.loads(r[0]) for r in rows]


def command(action: str) -> dict[str, Any]:
    return signed(KEY, A, {"id": str(uuid.uuid4()), "cmd": "publish", "action": action,
                           "exp": round(time.time() + 10, 3)})


def posts(sfu: Sfu) -> int:
    """POSTs the WHIP server received (it logs each at "verb"), authorised or not."""
    return sfu.log("whip").count("/endpoint/: entrance")


async def watch(sfu: Sfu, pictures: int = 5) -> Subscriber:
    """A viewer through Janus that got ``pictures`` of the panel's camera and some of its sound."""
    viewer = await Subscriber.join(sfu)
    try:
        await eventually(lambda: len(viewer.frames) >= pictures and viewer.audio_frames >= 10, 10,
                         "pictures and sound through Janus", detail=lambda: (len(viewer.frames), viewer.audio_frames))
    except BaseException:
        await viewer.close()
        raise
    return viewer


# -- the protocol pieces on their own ------------------------------------------------------------------------

def test_tokens_come_from_the_secrets_file_or_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "secrets.toml"
    path.write_text('[whip_tokens]\njanus = "file-token-0123"\n')
    path.chmod(0o600)
    assert load_secrets(SecretsConfig(file=path), env={}).whip_tokens == {"janus": "file-token-0123"}
    env = {"PANEL_SECRET_WHIP_TOKENS": "janus=env-token-0123,mtx=other-token-45"}
    assert load_secrets(SecretsConfig(), env=env).whip_tokens == {"janus": "env-token-0123", "mtx": "other-token-45"}
    with pytest.raises(SecretsError, match="whip_tokens") as refused:
        load_secrets(SecretsConfig(), env={"PANEL_SECRET_WHIP_TOKENS": "janus=short"})
    assert "short" not in str(refused.value)  # a secret is never echoed back


def test_link_headers_give_ice_servers_and_the_config_and_command_are_strict() -> None:
    servers = ice_servers_from_links([
        '<stun:stun.example.net>; rel="ice-server"',
        '<turn:turn.example.net?transport=udp>; rel="ice-server"; username="u"; credential="p"; '
        'credential-type="password", <https://example.net/other>; rel="next"',
        '<https://example.net/x>; rel="ice-server"',  # not an ICE URL
    ])
    assert [(s.urls, s.username, s.credential) for s in servers] == [
        ("stun:stun.example.net", None, None), ("turn:turn.example.net?transport=udp", "u", "p")]
    base = config_dict(media=media_config(publish={"targets": [{"id": "janus", "url": "ftp://x/whip"}]}))
    with pytest.raises(ConfigError, match=r"media.publish.targets\[0\].url: .* expected an http:// or https://"):
        parse_config(base)
    cmd = parse({"id": "c-0000001", "cmd": "publish", "action": "start", "exp": 2e9})
    assert isinstance(cmd, PublishCommand) and cmd.target is None
    with pytest.raises(CommandRefused, match="action") as refused:
        parse({"id": "c-0000002", "cmd": "publish", "action": "restart", "exp": 2e9})
    assert refused.value.code == "malformed"


async def test_failures_back_off_doubling_to_the_ceiling_on_the_panels_clock(pair: Pair) -> None:
    """Nothing listens at the target (connection refused at once): each attempt waits twice the one before,
    up to retry_max_s, timed by the panel's clock (a fake one here); a stop ends the wait."""
    from panel.media.hub import MediaHub

    media = parse_config(config_dict(media=media_config(publish={
        "targets": [{"id": "gone", "url": f"http://{pair.servers.address}:{CLOSED_PORT}/whip"}],
        "retry_min_s": 0.2, "retry_max_s": 1}))).media
    assert media is not None
    clock = FakeClock()
    reported: list[Any] = []
    hub = MediaHub(media, lambda e: None)
    publishing = Publishing(media.publish, hub, {}, reported.append, clock)
    publisher = publishing.publishers["gone"]
    task = asyncio.create_task(publisher.run())
    try:
        publishing.set(True)
        waits = []
        for attempt in range(1, 6):
            def failed(attempt: int = attempt) -> bool:
                return publisher.attempts == attempt and publisher.retry_at is not None

            await eventually(failed, 5, f"attempt {attempt} failed", detail=publisher.status)
            assert publisher.state == "retrying" and publisher.last_reason == "unreachable"
            wait = round(publisher.retry_at - clock.monotonic(), 3)  # type: ignore[operator]
            waits.append(wait)
            clock.advance(wait)
        assert waits == [0.2, 0.4, 0.8, 1.0, 1.0]
        # One event for the run of failures, with what it was and when the next try comes.
        assert [(e.reason, e.retry_s) for e in reported] == [("unreachable", 0.2)]
        await eventually(lambda: publisher.attempts == 6 and publisher.retry_at is not None, 5, "the sixth failure")
        publishing.set(False)
        await eventually(lambda: publisher.state == "idle", 5, "idle after a stop during the wait")
        assert publisher.attempts == 6
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await hub.close()


# -- against Janus ---------------------------------------------------------------------------------------------

async def test_published_once_a_viewer_gets_the_panels_pictures_and_sound_from_janus_and_stop_deletes(
        tmp_path: Path, broker: Broker, sfu: Sfu, backend: Client) -> None:
    panel = await start_panel(tmp_path, broker, sfu, sfu.token)
    try:
        assert publishing(panel).publishers["janus"].state == "idle"  # when = "command": nothing yet
        reply = await backend.request(A, command("start"))
        assert reply["code"] == "ok" and reply["publishing"]["targets"]["janus"]["wanted"] is True, reply
        started = await eventually(lambda: events(panel, "media.publish_started"), 15, "media.publish_started",
                                   detail=lambda: publishing(panel).status())
        assert started[0]["target"] == "janus" and started[0]["video"] == "h264" and started[0]["audio"] == "opus"
        assert (await panel.health())["checks"]["publishing"]["targets"] == {"janus": "publishing"}

        viewer = await watch(sfu)
        try:
            stamps = [read_frame_stamp(f) for f in viewer.frames]
            counters = [s.counter for s in stamps if s is not None]
            assert len(counters) >= 3 and counters == sorted(counters), counters  # the panel's camera, in order
            # From Janus, not from the panel: the viewer's only peer address is the SFU's, and the panel
            # serves no session of its own.
            assert viewer.remote_addresses() == {sfu.host}
            assert panel.media is not None and not panel.media.sessions.sessions
        finally:
            await viewer.close()

        reply = await backend.request(A, command("stop"))
        assert reply["code"] == "ok" and reply["publishing"]["targets"]["janus"]["wanted"] is False
        stopped = await eventually(lambda: events(panel, "media.publish_stopped"), 5, "media.publish_stopped")
        assert stopped[0]["reason"] == "command" and stopped[0]["published_s"] > 0
        # RFC 9725 section 4.3: the DELETE ends the session at the server, at once.
        await eventually(lambda: "Terminating WHIP session" in sfu.log("whip"), 5, "the DELETE at the server")
        assert await publishers(sfu) == []
        assert publishing(panel).publishers["janus"].state == "idle"
    finally:
        await panel.stop("test over")


async def test_a_wrong_token_is_one_401_and_waits_for_a_command_not_a_retry_storm(
        tmp_path: Path, broker: Broker, sfu: Sfu, backend: Client) -> None:
    before = posts(sfu)
    panel = await start_panel(tmp_path, broker, sfu, "wrong-" + sfu.token, when="always", unauthorized_retry_s=60)
    try:
        failed = await eventually(lambda: events(panel, "media.publish_failed"), 10, "media.publish_failed")
        assert failed[0]["reason"] == "unauthorized" and failed[0]["status"] == 401 and failed[0]["retry_s"] == 60
        assert sfu.token not in json.dumps(failed) and "wrong-" not in json.dumps(failed)
        status = publishing(panel).publishers["janus"].status()
        assert status["state"] == "unauthorized" and status["attempts"] == 1 and status["retry_in_s"] > 50
        assert posts(sfu) - before == 1
        # A publish command (the backend fixed the token at the SFU) tries again at once, once.
        reply = await backend.request(A, command("start"))
        assert reply["code"] == "ok"
        await eventually(lambda: publishing(panel).publishers["janus"].attempts == 2, 5, "the second attempt")
        await eventually(lambda: publishing(panel).publishers["janus"].state == "unauthorized", 5, "refused again")
        assert posts(sfu) - before == 2
        assert len(events(panel, "media.publish_failed")) == 1  # the same failure again is not news
    finally:
        await panel.stop("test over")


async def test_a_server_that_goes_away_and_returns_gets_a_new_session_after_backoff(
        tmp_path: Path, broker: Broker, sfu: Sfu) -> None:
    panel = await start_panel(tmp_path, broker, sfu, sfu.token, when="always", dead_after_s=2)
    try:
        await eventually(lambda: events(panel, "media.publish_started"), 15, "the first session")
        # (a first POST may have met a server still starting: only what follows the stop counts)
        before = len(events(panel, "media.publish_failed"))
        await asyncio.to_thread(sfu.stop)  # Janus and the WHIP server die without a word to the panel
        try:
            failed = await eventually(lambda: events(panel, "media.publish_failed")[before:], 10,
                                      "the panel noticing")
            assert failed[0]["reason"] in ("server_gone", "ice_failed"), failed
            # Meanwhile each new POST fails (connection refused) with a growing wait, not a busy loop.
            await eventually(lambda: publishing(panel).publishers["janus"].last_reason == "unreachable", 5,
                             "a POST to the server that is gone")
            attempts = publishing(panel).publishers["janus"].attempts
        finally:
            await asyncio.to_thread(sfu.start)  # the module's other tests need it, whatever happened here
        again = await eventually(lambda: events(panel, "media.publish_started")[1:], 20, "a new session",
                                 detail=lambda: publishing(panel).status())
        assert again[0]["target"] == "janus"
        assert publishing(panel).publishers["janus"].attempts > attempts
        viewer = await watch(sfu, pictures=3)
        await viewer.close()
    finally:
        await panel.stop("test over")
    # Stopping the panel DELETEs its session too.
    await eventually(lambda: "Terminating WHIP session" in sfu.log("whip"), 5, "the DELETE at shutdown")


async def test_when_call_publishes_the_cameras_own_h264_from_the_press_until_the_call_ends(
        tmp_path: Path, broker: Broker, sfu: Sfu) -> None:
    """A camera that encodes H.264 itself (here a file of the stamped pattern) is passed through to the SFU
    without a decode or an encode, during the call only."""
    file = tmp_path / "camera.h264"
    pattern_h264(file)
    panel = await start_panel(tmp_path, broker, sfu, sfu.token, when="call",
                              media={"video": {"source": "h264_file", "file": str(file)}})
    try:
        assert publishing(panel).publishers["janus"].state == "idle"
        guid = await ring(panel)
        started = await eventually(lambda: events(panel, "media.publish_started"), 15, "publishing at the press")
        assert started[0]["target"] == "janus" and started[0]["video"] == "h264"
        viewer = await watch(sfu, pictures=3)
        try:
            assert any(read_frame_stamp(f) is not None for f in viewer.frames)  # the file's own pictures
        finally:
            await viewer.close()
        assert panel.media is not None and panel.media.hub.video is not None
        assert panel.media.hub.video.passthrough and panel.media.hub.video.encoded == 0
        await panel.calls.end(guid, "alice")
        stopped = await eventually(lambda: events(panel, "media.publish_stopped"), 5, "the stop at the call's end")
        assert stopped[0]["reason"] == "call_ended"
        await eventually(lambda: publishing(panel).publishers["janus"].state == "idle", 5, "idle again")
        assert await publishers(sfu) == []
    finally:
        await panel.stop("test over")


async def test_a_redirect_is_followed_but_the_token_stays_with_the_configured_origin(
        tmp_path: Path, broker: Broker, sfu: Sfu) -> None:
    """A load balancer's 307 to another origin: the POST follows it (the body again), without the token."""
    async def redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {sfu.endpoint_url}\r\n"
                     "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(redirect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    before = posts(sfu)
    panel = await start_panel(tmp_path, broker, sfu, sfu.token, when="always", unauthorized_retry_s=60,
                              url=f"http://127.0.0.1:{port}/whip/entrance")
    try:
        failed = await eventually(lambda: events(panel, "media.publish_failed"), 10, "media.publish_failed")
        assert failed[0]["reason"] == "unauthorized" and failed[0]["status"] == 401
        assert sfu.host in failed[0]["error"]  # it was the redirect's target that refused it
        assert posts(sfu) - before == 1
    finally:
        await panel.stop("test over")
        server.close()
        await server.wait_closed()
