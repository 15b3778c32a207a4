"""A real SFU for the WHIP tests and bench: Janus 1.1.2 (Debian) with its VideoRoom, behind the WHIP front
end from meetecho/simple-whip-server (tests/whip_server, node + express + janode), both inside the servers'
side of a veth pair (tests/netns.py), and a subscriber that receives the room's publisher from Janus.

    with veth_pair("whip") as pair, pair.panel.entered():
        sfu = Sfu(pair, workdir); sfu.start()
        ... the panel publishes to sfu.endpoint_url with Bearer sfu.token ...
        sub = await Subscriber.join(sfu)   # aiortc, through Janus's HTTP API
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .eventually import eventually, eventually_sync
from .netns import Pair

WHIP_DIR = Path(__file__).resolve().parent / "whip_server"
JANUS_LIBS = Path("/usr/lib/x86_64-linux-gnu/janus") if Path("/usr/lib/x86_64-linux-gnu/janus").exists() \
    else Path("/usr/lib/aarch64-linux-gnu/janus")
ROOM = 1234
JANUS_WS_PORT, JANUS_HTTP_PORT, WHIP_PORT = 8188, 8088, 7080
# Everything of Janus but the VideoRoom and the two transports the tests use: less to start, nothing else
# listening.
_PLUGINS_OFF = ("audiobridge", "duktape", "echotest", "lua", "nosip", "recordplay", "sip", "streaming",
                "textroom", "videocall", "voicemail")
_TRANSPORTS_OFF = ("mqtt", "nanomsg", "pfunix", "rabbitmq")


def missing() -> str | None:
    """What this machine lacks to run the SFU, or None."""
    if shutil.which("janus") is None or not (JANUS_LIBS / "plugins" / "libjanus_videoroom.so").exists():
        return "Janus is not installed (scripts/test installs it: apt-get install janus)"
    if shutil.which("node") is None:
        return "node is not installed"
    if not (WHIP_DIR / "node_modules" / "janode").is_dir():
        return f"the WHIP front end's packages are not installed: cd {WHIP_DIR} && npm ci"
    return None


def _janus_config(directory: Path, host: str, events_url: str | None) -> Path:
    """Janus listens on every address of its namespace: the test's own, so that is only the veth's and
    loopback (binding its HTTP server to the veth address alone failed now and then, and Janus then
    crashed)."""
    directory.mkdir(parents=True, exist_ok=True)
    off = ",".join(f"libjanus_{p}.so" for p in _PLUGINS_OFF)
    transports_off = ",".join(f"libjanus_{t}.so" for t in _TRANSPORTS_OFF)
    (directory / "janus.jcfg").write_text(f"""
general: {{
    configs_folder = "{directory}"
    plugins_folder = "{JANUS_LIBS / 'plugins'}"
    transports_folder = "{JANUS_LIBS / 'transports'}"
    events_folder = "{JANUS_LIBS / 'events'}"
    loggers_folder = "{JANUS_LIBS / 'loggers'}"
    debug_level = 3
    session_timeout = 60
    # Janus finds its address by a route to the internet, which the namespace has not: name it.
    interface = "{host}"
}}
plugins: {{ disable = "{off}" }}
transports: {{ disable = "{transports_off}" }}
events: {{ broadcast = {"true" if events_url else "false"} }}
loggers: {{ disable = "libjanus_jsonlog.so" }}
nat: {{
    # No mDNS and no STUN: nothing is looked up, nothing leaves the namespace.
    ignore_mdns = true
}}
""")
    (directory / "janus.transport.websockets.jcfg").write_text(f"""
general: {{ json = "indented", ws = true, ws_port = {JANUS_WS_PORT}, wss = false }}
admin: {{ admin_ws = false, admin_wss = false }}
""")
    (directory / "janus.transport.http.jcfg").write_text(f"""
general: {{ json = "indented", base_path = "/janus", http = true, port = {JANUS_HTTP_PORT}, https = false }}
admin: {{ admin_http = false, admin_https = false }}
""")
    # Media events (a stream started or stopped receiving) to an HTTP receiver: the first packet's time.
    (directory / "janus.eventhandler.sampleevh.jcfg").write_text(f"""
general: {{ enabled = {"true" if events_url else "false"}, events = "media", grouping = false, json = "plain",
            backend = "{events_url or 'http://127.0.0.1:9/'}" }}
""")
    # One room for the panel: H.264 first (a camera's own stream passes through), VP8 for the encoded one.
    (directory / "janus.plugin.videoroom.jcfg").write_text(f"""
general: {{ }}
room-{ROOM}: {{
    description = "entrance"
    publishers = 1
    videocodec = "h264,vp8"
    audiocodec = "opus"
    h264_profile = "42e01f"
    fir_freq = 2
}}
""")
    return directory / "janus.jcfg"


@dataclass
class Sfu:
    pair: Pair
    workdir: Path
    token: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    endpoint_id: str = "entrance"
    ice_servers: list[str] = field(default_factory=list)
    events_url: str | None = None  # Janus's media events are POSTed here (bench/bench_sfu.py)
    janus: subprocess.Popen[bytes] | None = None
    whip: subprocess.Popen[bytes] | None = None
    _logs: list[IO[bytes]] = field(default_factory=list)
    starts: int = 0

    @property
    def host(self) -> str:
        return self.pair.check(self.pair.servers.address)

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{WHIP_PORT}/whip/endpoint/{self.endpoint_id}"

    @property
    def janus_url(self) -> str:
        return f"http://{self.host}:{JANUS_HTTP_PORT}/janus"

    def log(self, which: str) -> str:
        path = self.workdir / f"{which}-{self.starts}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> Sfu:
        why = missing()
        if why is not None:
            pytest.skip(why)
        self.starts += 1
        config = _janus_config(self.workdir / "janus", self.host, self.events_url)
        janus_log = open(self.workdir / f"janus-{self.starts}.log", "wb")
        whip_log = open(self.workdir / f"whip-{self.starts}.log", "wb")
        self._logs += [janus_log, whip_log]
        self.janus = self.pair.servers.popen(["janus", "-C", str(config), "-F", str(config.parent), "-o", "-d", "4"],
                                             log=janus_log, cwd=self.workdir)
        eventually_sync(lambda: self._listening(JANUS_WS_PORT, self.janus, "janus"), 15, "Janus listening",
                        interval=0.05)
        self.whip = self.pair.servers.popen(
            ["node", str(WHIP_DIR / "server.js"), f"ws://{self.host}:{JANUS_WS_PORT}", self.host, str(WHIP_PORT),
             self.endpoint_id, str(ROOM), self.token, *self.ice_servers], log=whip_log, cwd=WHIP_DIR)
        eventually_sync(lambda: "ready" in self.log("whip") or self._died(self.whip, "whip"), 15,
                        "the WHIP server ready", interval=0.05)
        return self

    def _died(self, proc: subprocess.Popen[bytes] | None, which: str) -> bool:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{which} exited with {proc.returncode}: {self.log(which)[-3000:]}")
        return False

    def _listening(self, port: int, proc: subprocess.Popen[bytes] | None, which: str) -> bool:
        self._died(proc, which)
        try:
            socket.create_connection((self.host, port), timeout=0.2).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        """Both servers go away (as a crashed or rebooted SFU would: no goodbye to the publisher)."""
        for proc in (self.whip, self.janus):
            if proc is not None:
                self.pair.servers.stop(proc, timeout=3)
        self.whip = self.janus = None
        for log in self._logs:
            log.close()
        self._logs.clear()


@dataclass
class Subscriber:
    """A viewer of the room: aiortc, subscribed through Janus's HTTP API to the room's one publisher."""

    sfu: Sfu
    pc: RTCPeerConnection
    http: httpx.AsyncClient
    session: int
    handle: int
    frames: list[Any] = field(default_factory=list)
    audio_frames: int = 0
    first_frame_mono: float | None = None
    offer_sdp: str = ""
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def join(cls, sfu: Sfu, timeout: float = 10.0) -> Subscriber:
        http = httpx.AsyncClient(timeout=10)
        try:
            session = (await _janus(http, sfu.janus_url, {"janus": "create"}))["data"]["id"]
            handle = (await _janus(http, f"{sfu.janus_url}/{session}",
                                   {"janus": "attach", "plugin": "janus.plugin.videoroom"}))["data"]["id"]
            url = f"{sfu.janus_url}/{session}/{handle}"

            async def publisher() -> int:
                found = await _publishers(http, url)
                return found[0] if found else 0  # Janus's feed ids are never 0

            feed: int = await eventually(publisher, timeout, "a publisher in the room", interval=0.1)
            await _janus(http, url, {"janus": "message", "body": {"request": "join", "ptype": "subscriber",
                                                                  "room": ROOM, "streams": [{"feed": feed}]}})
            offer = await _next_event(http, f"{sfu.janus_url}/{session}", lambda e: "jsep" in e, timeout)
        except BaseException:
            await http.aclose()
            raise
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        sub = cls(sfu, pc, http, session, handle, offer_sdp=offer["jsep"]["sdp"])
        pc.on("track", sub._on_track)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["jsep"]["sdp"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await _janus(http, url, {"janus": "message", "body": {"request": "start", "room": ROOM},
                                 "jsep": {"type": "answer", "sdp": pc.localDescription.sdp}})
        return sub

    def remote_addresses(self) -> set[str]:
        """Every address the viewer was offered to connect to."""
        return {line.split()[4] for line in self.offer_sdp.splitlines() if line.startswith("a=candidate:")}

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._tasks.append(asyncio.create_task(self._read(track)))

    async def _read(self, track: MediaStreamTrack) -> None:
        # Read every received track to its end (aiortc buffers an unread one without bound).
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if track.kind == "video":
                if self.first_frame_mono is None:
                    self.first_frame_mono = time.monotonic()
                self.frames.append(frame)
                del self.frames[:-30]
            else:
                self.audio_frames += 1

    async def close(self) -> None:
        with contextlib.suppress(httpx.HTTPError):
            await _janus(self.http, f"{self.sfu.janus_url}/{self.session}", {"janus": "destroy"})
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.http.aclose()


async def _publishers(http: httpx.AsyncClient, handle_url: str) -> list[int]:
    listed = await _janus(http, handle_url, {"janus": "message", "body": {"request": "listparticipants", "room": ROOM}})
    return [p["id"] for p in listed["plugindata"]["data"]["participants"] if p.get("publisher")]


async def publishers(sfu: Sfu) -> list[int]:
    """The feeds publishing in the room now, asked through a session of its own."""
    async with httpx.AsyncClient(timeout=10) as http:
        session = (await _janus(http, sfu.janus_url, {"janus": "create"}))["data"]["id"]
        try:
            handle = (await _janus(http, f"{sfu.janus_url}/{session}",
                                   {"janus": "attach", "plugin": "janus.plugin.videoroom"}))["data"]["id"]
            return await _publishers(http, f"{sfu.janus_url}/{session}/{handle}")
        finally:
            await _janus(http, f"{sfu.janus_url}/{session}", {"janus": "destroy"})


async def _janus(http: httpx.AsyncClient, url: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = (await http.post(url, json={**body, "transaction": secrets.token_hex(6)})).json()
    if reply.get("janus") == "error":
        raise AssertionError(f"Janus refused {body}: {reply}")
    return dict(reply)


async def _next_event(http: httpx.AsyncClient, url: str, wanted: Callable[[dict[str, Any]], bool],
                      timeout: float) -> dict[str, Any]:
    """Long-poll the session until an event ``wanted`` accepts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = (await http.get(url, params={"maxev": 1, "rid": secrets.token_hex(4)}, timeout=timeout)).json()
        if wanted(event):
            return dict(event)
    raise AssertionError(f"no such event from Janus within {timeout} s")
