"""Publishing the entrance once to an SFU over WHIP (RFC 9725), which fans it out to every viewer.

One ``WhipPublisher`` per target (``media.publish.targets``), each a supervised task that keeps one
session up while publishing is wanted:

1. an offer with the camera (the hub's one stream: H.264 passed through, or the one shared encode) and
   the entrance microphone, send-only, gathered at once (host candidates; ICE servers a previous answer
   named in its ``Link: <...>; rel="ice-server"`` headers, bounded like every session's);
2. ``POST`` it as ``application/sdp`` with ``Authorization: Bearer <whip_tokens.<id>>``, following
   307/308 redirects (the token only ever goes to the configured origin, and never from https to http);
3. 201 Created: the answer is the body, the session's resource is ``Location``; the ``Link`` headers'
   ICE servers are kept for the next POST (aiortc gathers before the POST and cannot restart ICE);
4. publishing until publishing is no longer wanted (``DELETE`` the resource: the server ends the session
   at once) or the session fails: ICE/DTLS failed, or nothing from the server (RTCP, which an SFU sends
   every second or so) for ``dead_after_s``. aiortc has no ICE restart, so recovery is ``DELETE`` (best
   effort: the server may be the thing that is gone) and a new ``POST`` after a backoff that doubles
   from ``retry_min_s`` to ``retry_max_s``. A 401/403 (a wrong token) waits ``unauthorized_retry_s``, or
   the next publish command, so a wrong token is one request, not a storm.

Every transition is journalled once per run of failures (``media.publish_started``, ``_failed``,
``_stopped``) and shown in health; neither names the token or the endpoint's path (a stream key may sit
there), only the target's id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc import sdp as aiortc_sdp

from ..events import EventData, MediaPublishFailed, MediaPublishStarted, MediaPublishStopped
from ..platform import Clock, PublishConfig, WhipTargetConfig
from .hub import MediaHub
from .ice import bound_gathering
from .sessions import _bytes_received, _forward_keyframe_requests
from .tracks import MicrophoneTrack, PacketVideoTrack

log = logging.getLogger(__name__)

State = Literal["idle", "connecting", "publishing", "retrying", "unauthorized"]
FailReason = Literal["unauthorized", "refused", "unreachable", "server_error", "ice_failed", "server_gone",
                     "bad_answer", "panel_error"]
StopReason = Literal["command", "call_ended", "shutdown"]
MAX_REDIRECTS = 5
HTTP_TIMEOUT_S = 10.0
DELETE_TIMEOUT_S = 1.0
LIVENESS_CHECK_S = 0.5
ICE_GATHER_BUDGET_S = 1.0
_LINK = re.compile(r'<([^>]*)>((?:\s*;\s*[a-zA-Z0-9_-]+\s*=\s*(?:"[^"]*"|[^;,\s]*))*)')
_PARAM = re.compile(r';\s*([a-zA-Z0-9_-]+)\s*=\s*(?:"([^"]*)"|([^;,\s]*))')


class PublishFailure(Exception):
    def __init__(self, reason: FailReason, error: str, status: int | None = None) -> None:
        super().__init__(error)
        self.reason = reason
        self.status = status


def ice_servers_from_links(values: list[str]) -> list[RTCIceServer]:
    """The ``rel="ice-server"`` entries of ``Link`` headers (RFC 9725 section 4.6) as RTCIceServers."""
    servers = []
    for value in values:
        for match in _LINK.finditer(value):
            params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
                      for m in _PARAM.finditer(match.group(2))}
            url = match.group(1).strip()
            if params.get("rel") != "ice-server" or not url.startswith(("stun:", "turn:", "turns:")):
                continue
            servers.append(RTCIceServer(urls=url, username=params.get("username"),
                                        credential=params.get("credential")))
    return servers


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _where(url: httpx.URL) -> str:
    """Scheme, host and port: what the log may show of an endpoint (its path may hold a stream key)."""
    return f"{url.scheme}://{url.netloc.decode()}"


@dataclass
class _Session:
    pc: RTCPeerConnection
    tracks: list[Any]
    resource: httpx.URL | None = None
    video: str | None = None
    audio: str | None = None


class WhipPublisher:
    """Publishes to one target while ``want`` says so; ``run`` is its supervised task."""

    def __init__(self, target: WhipTargetConfig, token: str | None, cfg: PublishConfig, hub: MediaHub,
                 report: Callable[[EventData], Any], clock: Clock) -> None:
        self.target = target
        self.cfg = cfg
        self.hub = hub
        self._token = token
        self._report = report
        self.clock = clock
        self.url = httpx.URL(target.url)
        self.state: State = "idle"
        self.wanted = False
        self._stop_reason: StopReason = "command"
        self._changed = asyncio.Event()
        self._session: _Session | None = None
        self._ice_servers: list[RTCIceServer] = []
        self.failures = 0  # in a row
        self.attempts = 0
        self.last_error: str | None = None
        self.last_reason: FailReason | None = None
        self.published_mono: float | None = None
        self.retry_at: float | None = None
        self.posted_wall: float | None = None  # when the last offer was POSTed (wall clock: compared with an SFU's logs)

    # -- what the owner says ----------------------------------------------------------------------------
    def want(self, wanted: bool, reason: StopReason = "command") -> None:
        """Start (True) or stop (False) publishing; a start also ends a wait after a refused token."""
        if not wanted:
            self._stop_reason = reason
        self.wanted = wanted
        self._changed.set()

    def status(self) -> dict[str, Any]:
        now = self.clock.monotonic()
        return {
            "state": self.state, "wanted": self.wanted, "attempts": self.attempts, "failures_in_a_row": self.failures,
            "reason": self.last_reason, "error": self.last_error,
            "published_s": round(now - self.published_mono, 1) if self.published_mono is not None else None,
            "retry_in_s": round(max(0.0, self.retry_at - now), 1) if self.retry_at is not None else None,
        }

    # -- the task ---------------------------------------------------------------------------------------
    async def run(self) -> None:
        # Redirects are followed by hand (_post): the token must not follow one to another origin.
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S, follow_redirects=False) as http:
            try:
                while True:
                    if not self.wanted:
                        self.state = "idle"
                        await self._until_changed()
                        continue
                    await self._publish_and_hold(http)
            finally:
                await self._end(http, "shutdown")

    async def _publish_and_hold(self, http: httpx.AsyncClient) -> None:
        try:
            await self._session_until_stopped(http)
        except PublishFailure as failure:
            await self._failed(http, failure)
            return
        except Exception as e:
            # Whatever an SFU answers, it must not crash this task in a loop: the supervisor would stop
            # the whole panel, door included, after five crashes.
            log.exception("publishing to %s failed", self.target.id)
            await self._failed(http, PublishFailure("panel_error", f"{type(e).__name__}: {e}"))
            return
        await self._end(http, self._stop_reason)

    async def _session_until_stopped(self, http: httpx.AsyncClient) -> None:
        """One session: POST, connect, publish until stopped; a failure raises."""
        self._changed.clear()  # this attempt answers every start asked for so far
        self.state = "connecting"
        self.attempts += 1
        started = self.clock.monotonic()
        await self._publish(http)
        if not await self._connected(self.cfg.connect_timeout_s):
            return  # stopped while connecting
        self.state = "publishing"
        self.published_mono = self.clock.monotonic()
        self.failures, self.retry_at = 0, None
        self.last_reason = self.last_error = None
        session = self._session
        assert session is not None
        self._report(MediaPublishStarted(target=self.target.id, setup_ms=round((self.published_mono - started) * 1000,
                                                                                 1),
                                         video=session.video, audio=session.audio))
        log.info("publishing to %s", self.target.id, extra={"target": self.target.id, "server": _where(self.url)})
        await self._hold()

    async def _publish(self, http: httpx.AsyncClient) -> None:
        session = self._session = self._offerer()
        pc = session.pc
        bound_gathering(pc, ICE_GATHER_BUDGET_S)  # a dead STUN server from a Link header costs at most this
        await pc.setLocalDescription(await pc.createOffer())
        self.posted_wall = self.clock.wall()
        response, url = await self._post(http, pc.localDescription.sdp)
        status = response.status_code
        if status in (401, 403):
            raise PublishFailure("unauthorized", f"{_where(url)} answered {status}: the token "
                                 f"(whip_tokens.{self.target.id}) is {'wrong' if self._token else 'missing'}", status)
        if 500 <= status:
            raise PublishFailure("server_error", f"{_where(url)} answered {status}", status)
        if status != 201:
            raise PublishFailure("refused", f"{_where(url)} answered {status}, not 201 Created", status)
        location = response.headers.get("location")
        if not location:
            raise PublishFailure("bad_answer", "the 201 has no Location (RFC 9725 requires one)", status)
        session.resource = url.join(location)
        self._ice_servers = ice_servers_from_links(response.headers.get_list("link")) or self._ice_servers
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=response.text, type="answer"))
        except Exception as e:  # aiortc raises ValueError and its own errors for an unusable answer
            raise PublishFailure("bad_answer", f"the answer was refused: {type(e).__name__}: {e}", status) from None
        session.video, session.audio = _codecs(response.text)

    async def _post(self, http: httpx.AsyncClient, sdp: str) -> tuple[httpx.Response, httpx.URL]:
        url = self.url
        for _ in range(MAX_REDIRECTS + 1):
            try:
                response = await http.post(url, content=sdp.encode(), headers=self._headers(url, sdp=True))
            except httpx.HTTPError as e:
                raise PublishFailure("unreachable", f"{_where(url)}: {type(e).__name__}: {e}") from None
            if response.status_code not in (301, 302, 303, 307, 308) or "location" not in response.headers:
                return response, url
            target = url.join(response.headers["location"])
            if url.scheme == "https" and target.scheme != "https":
                raise PublishFailure("refused", f"{_where(url)} redirected to plain http: not followed")
            url = target
        raise PublishFailure("refused", f"more than {MAX_REDIRECTS} redirects from {_where(self.url)}")

    def _headers(self, url: httpx.URL, sdp: bool = False) -> dict[str, str]:
        headers = {"content-type": "application/sdp"} if sdp else {}
        # The token is for the configured server: a redirect elsewhere does not get it.
        if self._token is not None and _origin(url) == _origin(self.url):
            headers["authorization"] = f"Bearer {self._token}"
        return headers

    def _offerer(self) -> _Session:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=list(self._ice_servers)))
        tracks: list[Any] = []
        stream = self.hub.video
        if self.target.video and stream is not None:
            video = PacketVideoTrack(stream)
            transceiver = pc.addTransceiver(video, direction="sendonly")
            mime = "video/H264" if stream.codec == "h264" else "video/VP8"
            caps = RTCRtpSender.getCapabilities("video").codecs
            transceiver.setCodecPreferences([c for c in caps if c.mimeType in (mime, "video/rtx")])
            _forward_keyframe_requests(transceiver.sender, video)
            tracks.append(video)
        if self.target.audio and self.hub.voice is not None:
            # the one shared encode: the echo-cancelled microphone, Opus once for every listener and target
            audio = MicrophoneTrack(self.hub.voice)
            audio_transceiver = pc.addTransceiver(audio, direction="sendonly")
            caps = RTCRtpSender.getCapabilities("audio").codecs
            audio_transceiver.setCodecPreferences([c for c in caps if c.mimeType == "audio/opus"])
            tracks.append(audio)
        if not tracks:
            raise PublishFailure("refused", "nothing to publish: no camera or microphone (media.video, media.audio)")
        return _Session(pc, tracks)

    async def _connected(self, timeout: float) -> bool:
        """True once ICE and DTLS are up; False if publishing was stopped meanwhile."""
        session = self._session
        assert session is not None
        deadline = self.clock.monotonic() + timeout
        while session.pc.connectionState != "connected":
            if session.pc.connectionState in ("failed", "closed"):
                raise PublishFailure("ice_failed", f"ICE/DTLS with the server {session.pc.connectionState}")
            if self.clock.monotonic() >= deadline:
                raise PublishFailure("ice_failed", f"not connected {timeout:g} s after the answer")
            await self._until_changed(LIVENESS_CHECK_S / 5)
            if not self.wanted:
                return False
        return True

    async def _hold(self) -> None:
        """Until publishing is no longer wanted (returns) or the session dies (raises)."""
        session = self._session
        assert session is not None
        seen, seen_at = _bytes_received(session.pc), self.clock.monotonic()
        while self.wanted:
            if session.pc.connectionState in ("failed", "closed"):
                raise PublishFailure("ice_failed", f"ICE/DTLS with the server {session.pc.connectionState}")
            now_seen = _bytes_received(session.pc)
            if now_seen != seen:
                seen, seen_at = now_seen, self.clock.monotonic()
            elif self.clock.monotonic() - seen_at > self.cfg.dead_after_s:
                raise PublishFailure("server_gone", f"nothing from the server for {self.cfg.dead_after_s:g} s")
            await self._until_changed(LIVENESS_CHECK_S)

    async def _failed(self, http: httpx.AsyncClient, failure: PublishFailure) -> None:
        await self._teardown(http)
        self.failures += 1
        if failure.reason == "unauthorized":
            delay = self.cfg.unauthorized_retry_s
            self.state = "unauthorized"
        else:
            delay = min(self.cfg.retry_max_s, self.cfg.retry_min_s * 2 ** (self.failures - 1))
            self.state = "retrying"
        first = self.last_reason is None or self.last_reason != failure.reason
        self.last_reason, self.last_error = failure.reason, str(failure)
        if first:  # once per run of the same failure: a server down for an hour is one event, not hundreds
            self._report(MediaPublishFailed(target=self.target.id, reason=failure.reason, status=failure.status,
                                            error=str(failure)[:500], retry_s=round(delay, 3)))
        log.warning("publishing to %s failed (%s), next attempt in %.1f s", self.target.id, failure,
                    delay, extra={"target": self.target.id, "reason": failure.reason})
        self.retry_at = self.clock.monotonic() + delay
        # A start command ends the wait early (a corrected token); a stop ends publishing.
        await self._until_changed(delay)
        self.retry_at = None
        if not self.wanted:
            self.last_reason = self.last_error = None
            self.failures = 0

    async def _end(self, http: httpx.AsyncClient, reason: StopReason) -> None:
        """Publishing stopped on purpose: DELETE the session on the server."""
        if self._session is None:
            return
        published = self.published_mono
        await self._teardown(http)
        self.state = "idle"
        self._report(MediaPublishStopped(target=self.target.id, reason=reason,
                                         published_s=round(self.clock.monotonic() - published, 3)
                                         if published is not None else None))

    async def _teardown(self, http: httpx.AsyncClient) -> None:
        session, self._session = self._session, None
        self.published_mono = None
        if session is None:
            return
        for track in session.tracks:
            track.stop()
        await session.pc.close()
        if session.resource is not None:
            try:
                response = await http.delete(session.resource, headers=self._headers(session.resource),
                                             timeout=DELETE_TIMEOUT_S)
                if response.status_code >= 300:
                    log.info("DELETE of the %s session answered %d", self.target.id, response.status_code)
            except httpx.HTTPError as e:  # the server may be what failed; its session times out there
                log.info("DELETE of the %s session failed: %s", self.target.id, type(e).__name__)

    async def _until_changed(self, timeout: float | None = None) -> bool:
        """Wait for ``want`` (True) or ``timeout`` seconds of the panel's clock (False)."""
        changed = asyncio.ensure_future(self._changed.wait())
        sleeper = asyncio.ensure_future(self.clock.sleep(timeout)) if timeout is not None else None
        try:
            await asyncio.wait([t for t in (changed, sleeper) if t is not None], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (changed, sleeper):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        hit = self._changed.is_set()
        self._changed.clear()
        return hit


def _codecs(answer: str) -> tuple[str | None, str | None]:
    """The codec the server chose for video and for audio: the first of each of its answer's sections."""
    found: dict[str, str | None] = {"video": None, "audio": None}
    for media in aiortc_sdp.SessionDescription.parse(answer).media:
        if media.kind in found and media.rtp.codecs and found[media.kind] is None:
            found[media.kind] = media.rtp.codecs[0].mimeType.split("/")[1].lower()
    return found["video"], found["audio"]


class Publishing:
    """Every WHIP target, and when to publish (media.publish.when): the daemon's ``publishing`` component."""

    def __init__(self, cfg: PublishConfig, hub: MediaHub, tokens: Mapping[str, str],
                 report: Callable[[EventData], Any], clock: Clock) -> None:
        self.cfg = cfg
        self.publishers = {t.id: WhipPublisher(t, tokens.get(t.id), cfg, hub, report, clock)
                           for t in cfg.targets}

    def runners(self) -> dict[str, Callable[[], Any]]:
        """A supervised task per target, by name."""
        return {f"whip:{tid}": p.run for tid, p in self.publishers.items()}

    def start(self) -> None:
        if self.cfg.when == "always":
            self.set(True)

    def set(self, wanted: bool, target: str | None = None, reason: StopReason = "command") -> list[str]:
        """Start or stop publishing to one target (or all); the ids it reached. KeyError: no such target."""
        chosen = [self.publishers[target]] if target is not None else list(self.publishers.values())
        for publisher in chosen:
            publisher.want(wanted, reason)
        return [p.target.id for p in chosen]

    def on_event(self, row: Any) -> None:
        """Journal subscriber: with ``when = "call"``, publish from a press until the call ends."""
        if self.cfg.when != "call":
            return
        if row.type == "call.created":
            self.set(True)
        elif row.type == "call.status_updated" and row.data.get("status") in (
                "ended", "declined", "canceled", "missed", "failed"):
            self.set(False, reason="call_ended")

    def stopping(self) -> None:
        for publisher in self.publishers.values():
            publisher.want(False, "shutdown")

    def status(self) -> dict[str, Any]:
        return {"when": self.cfg.when, "targets": {tid: p.status() for tid, p in self.publishers.items()}}

    def health(self) -> dict[str, Any]:
        """For /api/v1/health: each target's state only (no URL: its path may hold a stream key)."""
        targets = {tid: p.state for tid, p in self.publishers.items()}
        ok = all(p.state in ("idle", "publishing", "connecting") or not p.wanted for p in self.publishers.values())
        return {"ok": ok, "targets": targets}
