"""WebRTC sessions: the panel answers a peer's offer and streams the shared camera and microphone.

Roles: the *answerer* of a call (the first resident whose session answers it) gets two-way audio and
the camera; a *viewer* (live view, "monitor", or a view-only join) gets the camera, and the
microphone only if ``media.monitor_audio`` allows. Whatever a peer sends is always read (the
speaker for the answerer's voice, nowhere for the rest).

Signalling: the offer comes in over WHEP (``whep.py``) or MQTT (``answer_offer``); later changes
(video on/off) are renegotiated over the session's data channel, where the peer also sends and gets
mute state, custom data and "end". The messages are listed in docs/media.md.

Cleanup: a session ends when either side ends it, its token is revoked, its call ends, the peer's
connection fails or closes, or the peer sends nothing for ``media.peer_timeout_s`` (a vanished peer
is not left to aiortc's 30 s consent timeout). Ending stops its tracks, tasks and sockets.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import re
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol, TypeVar

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc import sdp as aiortc_sdp
from aiortc.exceptions import InternalError, InvalidStateError, OperationError
from aiortc.rtcdatachannel import RTCDataChannel

from ..compat import dtls_bytes_received, keyframe_hook, set_keyframe_hook
from ..errors import CallError
from ..platform import (
    Background,
    Clock,
    IceServerConfig,
    LoopClock,
    MediaConfig,
    Slot,
    SlotLimits,
    SlotRefused,
    Slots,
    SlotTier,
    TimerHandle,
    redact_values,
)
from ..sdp import SdpRefused, offer_lines
from ..wire import loads_unique
from .audio import MixerInput
from .errors import SessionRefused
from .hub import MediaHub
from .ice import IceChoice, IceMonitor, bound_gathering, parse_target
from .tokens import Grant, TokenStore
from .tracks import (
    MicrophoneTrack,
    PacketVideoTrack,
    consume_audio,
    consume_video,
    watch,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

Role = Literal["answerer", "viewer", "participant"]
Origin = Literal["whep", "mqtt", "local"]
MAX_MESSAGE_BYTES = 64 * 1024
CONNECT_TIMEOUT_S = 15.0
WATCH_INTERVAL_S = 1.0
RETRY_AFTER_S = 10
# Calls end their sessions with these reasons; a peer ending its session ends the call only for these.
PEER_ENDED = frozenset({"remote_end", "peer_closed", "whep_delete"})
PEER_LOST = frozenset({"peer_timeout", "peer_failed", "connect_timeout"})
# Grants the backend's authenticated link makes for itself: no credential of anyone's to tie a call to.
BACKEND_GRANTS = frozenset({"mqtt", "backend"})
# The answerer's credential was revoked: the call ends as a hang-up would, with this reason.
CREDENTIAL_REVOKED = "credential_revoked"
# A session's credential expired: it ends with this reason (a call answered with it ends by its own timer).
CREDENTIAL_EXPIRED = "credential_expired"
# A call began: live views that may not look into it end with this reason.
CALL_STARTED = "call_started"
SESSION_CODES = {"full": "too_many_sessions", "credential": "too_many_sessions_for_credential",
                 "address": "too_many_sessions_from_address", "reserved": "sessions_reserved"}


class CallControl(Protocol):
    """What sessions need from the call logic (``panel.calls.CallManager`` has it)."""

    current: Any  # the live call or None; has .guid, .state, .live, .answered, .answered_by

    async def answer(self, guid: str | None, who: str) -> Any: ...

    async def end(self, guid: str | None, who: str, reason: str = "hangup") -> Any: ...

    async def fail(self, guid: str | None, reason: str) -> Any: ...

    def media_connected(self, guid: str) -> None: ...

    def tie_credential(self, guid: str, credential_id: str, expires_in_s: float | None) -> None: ...


Handler = Callable[["Session", dict[str, Any]], Awaitable[dict[str, Any] | None] | dict[str, Any] | None]


def ice_servers_from_config(servers: list[IceServerConfig]) -> list[RTCIceServer]:
    out = []
    for s in servers:
        credential = os.environ.get(s.credential_env) if s.credential_env else None
        redact_values([credential])
        out.append(RTCIceServer(urls=list(s.urls), username=s.username, credential=credential))
    return out


def ice_servers_from_message(servers: list[dict[str, Any]]) -> list[RTCIceServer]:
    """ICE servers as a W3C RTCIceServer list in a signalling message ({urls, username, credential})."""
    out = []
    for i, s in enumerate(servers):
        urls = s.get("urls") if isinstance(s, dict) else None
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) and re.match(r"^(stuns?|turns?):", u)
                                                            for u in urls):
            raise SessionRefused("invalid_ice_servers", f"ice_servers[{i}].urls must be stun:/turn: URLs")
        assert isinstance(s, dict)
        for j, url in enumerate(urls):
            target = parse_target(url)
            if target.unsupported is not None:
                raise SessionRefused("invalid_ice_servers", f"ice_servers[{i}].urls[{j}] ({url}): {target.unsupported}")
            if target.kind == "turn" and not (isinstance(s.get("username"), str) and isinstance(s.get("credential"), str)):
                raise SessionRefused("invalid_ice_servers", f"ice_servers[{i}] is a TURN server: it needs \"username\" "
                                     "and \"credential\" strings")
        for key in ("username", "credential"):
            if s.get(key) is not None and not isinstance(s.get(key), str):
                raise SessionRefused("invalid_ice_servers", f"ice_servers[{i}].{key} must be a string")
        out.append(RTCIceServer(urls=urls, username=s.get("username"), credential=s.get("credential")))
    return out


def check_offer(text: str) -> aiortc_sdp.SessionDescription:
    """Parse an SDP offer, or refuse it saying what is wrong: first the bounds and syntax every channel
    applies (panel/sdp.py) so nothing unbounded reaches aiortc, then aiortc's parser (which raises
    whatever its string handling hits), then what the stack assumes of every section."""
    if not text.strip():
        raise SessionRefused("invalid_sdp", "the body is empty; send the SDP offer (Content-Type: application/sdp)")
    if not text.lstrip().startswith("v=0"):
        raise SessionRefused("invalid_sdp", "the body is not an SDP offer: it must start with \"v=0\"")
    try:
        offer_lines(text)
    except SdpRefused as e:
        raise SessionRefused("invalid_sdp", str(e)) from None
    try:
        desc = aiortc_sdp.SessionDescription.parse(text)
    except Exception as e:  # the parser raises whatever its string handling hits
        raise SessionRefused("invalid_sdp", f"the SDP offer cannot be parsed: {type(e).__name__}: {e}") from None
    media = [m for m in desc.media if m.kind in ("audio", "video")]
    if not media:
        raise SessionRefused("invalid_sdp", "the offer has no audio or video section (m=audio / m=video)")
    mids: set[str] = set()
    for i, m in enumerate(desc.media):
        if m.ice is None or not (m.ice.usernameFragment and m.ice.password):
            raise SessionRefused("invalid_sdp", f"media section {i} ({m.kind}) has no a=ice-ufrag/a=ice-pwd")
        if not m.dtls or not m.dtls.fingerprints:
            raise SessionRefused("invalid_sdp", f"media section {i} ({m.kind}) has no a=fingerprint (DTLS)")
        # aiortc matches its answer to the offer by mid and reads every RTP section's direction; without
        # them it fails deep inside (ValueError: None is not in list) instead of refusing the offer.
        if not m.rtp.muxId:
            raise SessionRefused("invalid_sdp", f"media section {i} ({m.kind}) has no a=mid")
        if m.rtp.muxId in mids:
            raise SessionRefused("invalid_sdp", f"media section {i} ({m.kind}) repeats a=mid:{m.rtp.muxId}")
        mids.add(m.rtp.muxId)
        if m.kind in ("audio", "video") and m.direction is None:
            raise SessionRefused("invalid_sdp", f"media section {i} ({m.kind}) has no direction (a=sendrecv, "
                                 "a=sendonly, a=recvonly or a=inactive)")
    for group in desc.group:
        # aiortc moves every bundled section onto the first mid's transport; a mid naming no section
        # left them with none (AttributeError when connecting and closing).
        unknown = [str(mid) for mid in group.items if str(mid) not in mids]
        if unknown:
            raise SessionRefused("invalid_sdp", f"a=group:{group.semantic} names {', '.join(unknown)[:60]}, which is "
                                 "no media section's a=mid")
    return desc


# What aiortc and aioice raise when an offer that parsed still holds something they cannot use (a
# payload type they look up, an attribute they split): the offer's fault, answered invalid_sdp. The
# panel's own failures (OSError from a socket, CancelledError) are not among them.
STACK_REFUSALS = (ValueError, KeyError, IndexError, TypeError, AssertionError, StopIteration, AttributeError)


class Session:
    """One peer connection. Created by ``SessionManager``; ``answer_sdp`` is what goes back to the peer."""

    def __init__(self, manager: SessionManager, grant: Grant, role: Role, who: str, origin: Origin,
                 ice: IceChoice) -> None:
        self.manager = manager
        self.hub = manager.hub
        self.grant = grant
        self.role = role
        self.who = who
        self.origin = origin
        self.id = secrets.token_urlsafe(12)
        self.call_guid = grant.call_guid if grant.kind == "call" else None
        self.ice = ice
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=ice.servers))
        self.created_mono = self.manager.clock.monotonic()
        self.slot: Slot | None = None  # its place in the manager's slots, until it is forgotten
        self.expiry: TimerHandle | None = None  # the credential's expiry ends the session
        self.connected_mono: float | None = None
        self.media_mono: float | None = None  # when media from the peer first arrived (answerer)
        self.state: Literal["new", "connecting", "connected", "closed"] = "new"
        self.close_reason: str | None = None
        self.closed = asyncio.Event()
        self._closing = False
        self.answer_sdp = ""
        self.video_track: PacketVideoTrack | None = None
        self.audio_track: MicrophoneTrack | None = None
        self.channel: RTCDataChannel | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._mixer_input: MixerInput | None = None
        self.panel_muted = {"audio": False, "video": False}
        self.remote_muted = {"audio": False, "video": False}
        self.video_on = False
        self.video_pending: Literal["panel", "remote"] | None = None
        self.received: deque[Any] = deque(maxlen=100)  # custom data from the peer, newest last
        self._remote_sends_audio = False
        self._negotiating = asyncio.Lock()
        self.pc.on("connectionstatechange", self._on_connection_state)
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_datachannel)

    # -- negotiation -----------------------------------------------------------------------------------
    async def negotiate(self, offer: str) -> str:
        """Apply an offer (the first, or a renegotiation) and return the answer."""
        desc = check_offer(offer)
        async with self._negotiating:
            self._prepare_transceivers(desc)
            try:
                await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            except OperationError:
                codec = self.hub.video.codec.upper() if self.hub.video else "Opus"
                raise SessionRefused("no_common_codec", f"the offer has no codec the panel can send; the camera "
                                     f"stream is {codec} (H.264 constrained baseline, packetization-mode=1)") from None
            except (InvalidStateError, InternalError, *STACK_REFUSALS) as e:
                raise SessionRefused("invalid_sdp", f"the SDP offer was refused: {type(e).__name__}: {e}") from None
            answer = await self._stack(self.pc.createAnswer())
            # Candidate gathering happens here: immediate with host candidates only (no ICE servers), at
            # most media.ice_gather_budget_s with STUN/TURN servers (ice.py).
            first = self.pc.iceGatheringState == "new"
            if self.ice.servers:
                bound_gathering(self.pc, self.manager.ice.gather_budget_s)
            await self._stack(self.pc.setLocalDescription(answer))
            self._after_negotiation()
            self.answer_sdp = self.pc.localDescription.sdp
            if first and self.ice.servers:
                self.manager.ice.gathered(self.ice, self.answer_sdp)
            if self.state == "new":
                self.state = "connecting"
            return self.answer_sdp

    async def _stack(self, step: Awaitable[T]) -> T:
        """One of aiortc's steps on an offer that parsed: what it raises about the offer is invalid_sdp."""
        try:
            return await step
        except STACK_REFUSALS as e:
            log.info("the WebRTC stack could not answer an offer: %s: %s", type(e).__name__, e,
                     extra={"session": self.id})
            raise SessionRefused("invalid_sdp", f"the SDP offer cannot be answered: {type(e).__name__}: "
                                 f"{e}") from None

    def _prepare_transceivers(self, desc: aiortc_sdp.SessionDescription) -> None:
        """Create our transceivers for new media sections *before* the offer is applied: codec
        preferences set afterwards are silently ignored by aiortc."""
        existing = {t.mid for t in self.pc.getTransceivers() if t.mid is not None}
        unmatched = [t for t in self.pc.getTransceivers() if t.mid is None]
        for m in desc.media:
            if m.kind not in ("audio", "video") or m.rtp.muxId in existing:
                continue
            if any(t.kind == m.kind for t in unmatched):
                continue
            remote_sends = m.direction in ("sendrecv", "sendonly")
            if m.kind == "video":
                self._add_video(remote_sends)
            else:
                self._add_audio(remote_sends)
                self._remote_sends_audio = self._remote_sends_audio or remote_sends

    def _add_video(self, remote_sends: bool) -> None:
        stream = self.hub.video
        if stream is None or self.video_track is not None:
            self.pc.addTransceiver("video", direction="recvonly")
            return
        track = PacketVideoTrack(stream)
        self.video_track = track
        self.manager.live_tracks.add(track)
        transceiver = self.pc.addTransceiver(track, direction="sendrecv")
        mime = "video/H264" if stream.codec == "h264" else "video/VP8"
        caps = RTCRtpSender.getCapabilities("video").codecs
        transceiver.setCodecPreferences([c for c in caps if c.mimeType in (mime, "video/rtx")])
        _forward_keyframe_requests(transceiver.sender, track)

    def _add_audio(self, remote_sends: bool) -> None:
        voice = self.hub.voice
        send = voice is not None and self.audio_track is None and (
            self.role in ("answerer", "participant") or self.manager.cfg.monitor_audio)
        if send:
            assert voice is not None
            track = MicrophoneTrack(voice)
            track.set_muted(self.muted("audio"))  # a session joining a muted call starts muted
            self.audio_track = track
            self.manager.live_tracks.add(track)
            transceiver = self.pc.addTransceiver(track, direction="sendrecv")
            # The shared packets are Opus: a peer that would pick another codec cannot take them.
            caps = RTCRtpSender.getCapabilities("audio").codecs
            transceiver.setCodecPreferences([c for c in caps if c.mimeType == "audio/opus"])
        else:
            self.pc.addTransceiver("audio", direction="recvonly")

    def _after_negotiation(self) -> None:
        was_on = self.video_on
        self.video_on = any(t.kind == "video" and t.sender.track is not None
                            and t.currentDirection in ("sendonly", "sendrecv") for t in self.pc.getTransceivers())
        if self.video_on != was_on:
            self.video_pending = None
        self._apply_video()

    def muted(self, kind: Literal["audio", "video"]) -> bool:
        """What the panel sends muted to this peer: muted for this session, or for its whole call."""
        return self.panel_muted[kind] or self.manager.call_mute(self.call_guid)[kind]

    def apply_mute(self) -> None:
        """Bring the tracks in line with the session's and the call's mute state, and tell the peer."""
        if self.audio_track is not None:
            self.audio_track.set_muted(self.muted("audio"))
        self._apply_video()
        self.send_state()

    def _apply_video(self) -> None:
        if self.video_track is not None:
            self.video_track.set_muted(self.muted("video") or not self.video_on)

    # -- peer events -----------------------------------------------------------------------------------
    async def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and self.state != "closed":
            self.state = "connected"
            self.connected_mono = self.manager.clock.monotonic()
            if self.role == "answerer" and not self._remote_sends_audio:
                self._media_flows()
        elif state in ("failed", "closed"):
            self._spawn(self.close("peer_failed" if state == "failed" else "peer_closed"), "session close")

    def _on_track(self, track: Any) -> None:
        if track.kind == "audio":
            into = None
            if self.role in ("answerer", "participant") and self._mixer_input is None:
                self._mixer_input = self.hub.mixer.add_input(f"session:{self.id}")
                into = self._mixer_input
            self._spawn(consume_audio(track, into, self._media_flows if into is not None else None), "audio consumer")
        else:
            self._spawn(consume_video(track), "video consumer")

    def _media_flows(self) -> None:
        if self.media_mono is not None or self.role != "answerer":
            return
        self.media_mono = self.manager.clock.monotonic()
        self.manager._media_flows(self)

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if self.channel is None:
            self.channel = channel
        channel.on("message", lambda msg: self._spawn(self._on_message(channel, msg), "data channel message"))
        if channel.readyState == "open":
            self.send_state(channel)
        else:
            channel.on("open", lambda: self.send_state(channel))

    # -- data channel ------------------------------------------------------------------------------------
    def send(self, message: dict[str, Any], channel: RTCDataChannel | None = None) -> bool:
        ch = channel or self.channel
        if ch is None or ch.readyState != "open":
            return False
        try:
            ch.send(json.dumps(message))
        except (InvalidStateError, ConnectionError):
            return False
        return True

    def send_data(self, data: Any) -> bool:
        """Custom application data to the peer (e.g. a text to show, a "door opened" notice)."""
        return self.send({"type": "data", "data": data})

    def info(self) -> dict[str, Any]:
        return {
            "session": self.id, "role": self.role, "who": self.who, "origin": self.origin,
            "kind": self.grant.kind, "call": self.call_guid, "state": self.state,
            "video": "on" if self.video_on else "off", "video_pending": self.video_pending,
            "muted": {"panel": dict(self.panel_muted), "remote": dict(self.remote_muted),
                      "call": self.manager.call_mute(self.call_guid)},
            "age_s": round(self.manager.clock.monotonic() - self.created_mono, 3),
        }

    def send_state(self, channel: RTCDataChannel | None = None) -> None:
        self.send({"type": "state", **self.info()}, channel)

    async def _on_message(self, channel: RTCDataChannel, raw: str | bytes) -> None:
        if isinstance(raw, bytes):
            try:
                raw = raw.decode()
            except UnicodeDecodeError:
                self.send(_error("invalid_message", "messages are JSON text"), channel)
                return
        if len(raw) > MAX_MESSAGE_BYTES:
            self.send(_error("message_too_large", f"messages are limited to {MAX_MESSAGE_BYTES // 1024} KiB"), channel)
            return
        try:
            msg = loads_unique(raw)  # nesting bounded before parsing, as on every channel
        except ValueError as e:
            self.send(_error("invalid_json", f"not JSON: {e}"), channel)
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            self.send(_error("invalid_message", "expected a JSON object with a \"type\""), channel)
            return
        try:
            reply = await self._handle(msg)
        except SessionRefused as e:
            reply = _error(e.code, str(e), msg["type"])
        if reply is not None:
            self.send(reply, channel)

    async def _handle(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        kind = msg["type"]
        if kind == "data":
            self.received.append(msg.get("data"))
            self.manager._data(self, msg.get("data"))
            return None
        if kind == "state":
            self.send_state()
            return None
        if kind == "mute":
            media, muted, target = msg.get("kind"), msg.get("muted"), msg.get("target", "self")
            if media not in ("audio", "video") or not isinstance(muted, bool) or target not in ("self", "panel"):
                raise SessionRefused("invalid_message", "mute needs kind \"audio\"|\"video\", muted true|false and "
                                     "target \"self\" (your own) or \"panel\" (the panel's microphone/camera)")
            if target == "panel":
                self.set_mute(media, muted)
            else:
                self.remote_muted[media] = muted
                self.send_state()
            return None
        if kind == "offer":
            sdp_text = msg.get("sdp")
            if not isinstance(sdp_text, str):
                raise SessionRefused("invalid_message", "offer needs \"sdp\"")
            answer = await self.negotiate(sdp_text)
            self.send({"type": "answer", "sdp": answer})
            self.send_state()
            return None
        if kind == "video.request":
            return self._video_requested()
        if kind == "video.cancel":
            if self.video_pending == "remote":
                self.video_pending = None
                self.send_state()
            return None
        if kind == "video.accept":
            # The peer agreed to the panel's request; its offer follows.
            return None
        if kind == "video.decline":
            if self.video_pending == "panel":
                self.video_pending = None
                self.send_state()
            return None
        if kind == "video.stop":
            self.stop_video(notify=False)
            return None
        if kind == "end":
            self._spawn(self.close("remote_end", notify=False), "session close")
            return None
        handler = self.manager.handlers.get(kind)
        if handler is not None:
            result = handler(self, msg)
            return await result if inspect.isawaitable(result) else result
        return _error("unknown_type", f"unknown message type {kind!r}", kind)

    def _video_requested(self) -> dict[str, Any]:
        stream = self.hub.video
        if stream is None:
            return {"type": "video.decline", "reason": "no_camera", "message": "this panel has no camera"}
        if stream.capture.state == "lost":
            return {"type": "video.decline", "reason": "camera_unavailable",
                    "message": f"the camera is unavailable: {stream.capture.last_error}"}
        if self.video_on:
            return {"type": "video.accept", "message": "video is on already"}
        self.video_pending = "remote"
        self.send_state()
        return {"type": "video.accept", "message": "send an offer with video (recvonly) to switch"}

    def request_video(self) -> bool:
        """The panel asks the peer to switch to video (the peer accepts with a new offer)."""
        if self.video_on:
            return False
        self.video_pending = "panel"
        sent = self.send({"type": "video.request"})
        self.send_state()
        return sent

    def stop_video(self, notify: bool = True) -> None:
        """Back to audio only: the camera stops at once; the peer may renegotiate the section inactive."""
        self.video_on = False
        self.video_pending = None
        self._apply_video()
        if notify:
            self.send({"type": "video.stop"})
        self.send_state()

    def set_mute(self, kind: Literal["audio", "video"], muted: bool) -> None:
        """Mute the panel's microphone or camera for this session (a call-level mute still holds)."""
        self.panel_muted[kind] = muted
        self.apply_mute()

    # -- liveness and ending -------------------------------------------------------------------------------
    def start_watchdog(self) -> None:
        self._spawn(self._watch(), "session watchdog")

    async def _watch(self) -> None:
        """End the session when the peer goes quiet (it vanished) or never connects."""
        timeout = self.manager.cfg.peer_timeout_s
        clock = self.manager.clock
        last_bytes, last_change = -1, clock.monotonic()
        while True:
            await clock.sleep(WATCH_INTERVAL_S)
            now = clock.monotonic()
            if self.state != "connected":
                if now - self.created_mono > max(CONNECT_TIMEOUT_S, timeout):
                    self._spawn(self.close("connect_timeout"), "session close")
                    return
                continue
            received = _bytes_received(self.pc)
            if received != last_bytes:
                last_bytes, last_change = received, now
            elif now - last_change > timeout:
                log.warning("session %s: nothing from the peer for %.1f s; ending it", self.id, now - last_change)
                self._spawn(self.close("peer_timeout", notify=False), "session close")
                return

    def _spawn(self, coro: Awaitable[Any], what: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        watch(task, f"session {self.id}: {what}")
        return task

    async def close(self, reason: str, *, notify: bool = True) -> None:
        """End the session: tell the peer (if it can still hear), stop tracks, close the connection."""
        if self._closing:
            await self.closed.wait()
            return
        self._closing = True
        self.close_reason = reason
        if self.expiry is not None:
            self.expiry.cancel()
        log.info("session %s (%s, %s) ends: %s", self.id, self.role, self.who, reason,
                 extra={"session": self.id, "call": self.call_guid, "reason": reason})
        if notify and self.send({"type": "end", "reason": reason}):
            await _drain(self.channel)
        for track in (self.video_track, self.audio_track):
            if track is not None:
                track.stop()
        try:
            await asyncio.wait_for(self.pc.close(), 5.0)
        except Exception:
            log.exception("session %s: closing the peer connection failed", self.id)
        me = asyncio.current_task()
        pending = [t for t in self._tasks if t is not me]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._mixer_input is not None:
            self.hub.mixer.remove_input(self._mixer_input.name)
            self._mixer_input = None
        self.state = "closed"
        self.closed.set()
        await self.manager._closed(self, reason)


def _slot_holder(grant: Grant, who: str) -> str:
    """Whose share a session counts against: its credential; the backend's link speaks for many
    residents with one grant, so there it is the resident the backend names."""
    return f"{grant.token_id}:{who}" if grant.token_id in BACKEND_GRANTS else grant.token_id


def _forward_keyframe_requests(sender: RTCRtpSender, track: PacketVideoTrack) -> None:
    """aiortc answers a peer's PLI/FIR by flagging its own encoder, which pre-encoded packets bypass;
    pass the request on to the shared stream instead (it merges requests from all viewers)."""
    original = keyframe_hook(sender)
    if original is None:
        log.warning("aiortc has no RTCRtpSender._send_keyframe; PLI/FIR from viewers are ignored")
        return

    def on_keyframe_request() -> None:
        original()
        track.request_keyframe()

    set_keyframe_hook(sender, on_keyframe_request)


def _bytes_received(pc: RTCPeerConnection) -> int:
    """Bytes received on the peer's transports (RTP, RTCP, SCTP): anything means it is still there."""
    transports = {id(t.receiver.transport): t.receiver.transport for t in pc.getTransceivers()}
    if pc.sctp is not None:
        transports[id(pc.sctp.transport)] = pc.sctp.transport
    return sum(dtls_bytes_received(dtls) for dtls in transports.values())


async def _drain(channel: RTCDataChannel | None, limit_s: float = 0.3) -> None:
    """Give a last message the chance to leave before the connection closes under it."""
    if channel is None:
        return
    if channel.bufferedAmount > 0:
        drained = asyncio.Event()
        on_low = drained.set
        channel.on("bufferedamountlow", on_low)  # emitted when the buffer empties (the threshold is 0)
        try:
            await asyncio.wait_for(drained.wait(), limit_s)
        except TimeoutError:
            pass
        finally:
            channel.remove_listener("bufferedamountlow", on_low)
    # Out of the buffer is not yet on the wire: SCTP sends it on its next turn of the loop
    await asyncio.sleep(0.02)


def _error(code: str, message: str, in_reply_to: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if in_reply_to is not None:
        out["in_reply_to"] = in_reply_to
    return out


class SessionManager:
    """Creates sessions within the limits and rules, and ends them when their reason to exist ends."""

    def __init__(self, cfg: MediaConfig, hub: MediaHub, tokens: TokenStore, calls: CallControl | None = None,
                 clock: Clock | None = None) -> None:
        self.clock: Clock = clock or LoopClock()  # session timeouts run on the panel's clock
        self.cfg = cfg
        self.hub = hub
        self.tokens = tokens
        self.calls = calls
        self.sessions: dict[str, Session] = {}
        self.slots = Slots(SlotLimits(total=cfg.max_sessions, per_credential=cfg.max_sessions_per_credential,
                                      per_address=cfg.max_sessions_per_address,
                                      reserved_residents=min(cfg.sessions_reserved, cfg.max_sessions - 1)),
                           "media sessions")
        self.answerers: dict[str, Session] = {}  # call guid -> its answering session
        self.handlers: dict[str, Handler] = {}  # extra data-channel message types (e.g. a door command)
        self.data_listeners: list[Callable[[Session, Any], None]] = []
        self.live_tracks: Any = _WeakTracks()
        self.ended: deque[tuple[str, str]] = deque(maxlen=100)  # (session id, reason), for the API and tests
        self._call_muted: dict[str, dict[str, bool]] = {}  # call guid -> what the panel sends muted in it
        self.ice = IceMonitor(ice_servers_from_config(cfg.ice_servers), gather_budget_s=cfg.ice_gather_budget_s,
                              probe_interval_s=cfg.ice_probe_interval_s, probe_timeout_s=cfg.ice_probe_timeout_s)
        self._closing = False
        # Sessions closed without holding up whoever ended them; a preempted one is already out of
        # ``sessions``, so close() waits for these as well
        self._closers = Background("media sessions")
        tokens.on_revoke(self._revoked)

    # -- creating ----------------------------------------------------------------------------------------
    async def create(self, offer: str, grant: Grant, *, who: str | None = None, origin: Origin = "whep",
                     ice_servers: list[RTCIceServer] | None = None, address: str | None = None) -> Session:
        """Answer ``offer`` for what ``grant`` allows; raises ``SessionRefused`` and sets nothing up.
        ``ice_servers``: those named by the signalling (the offer message); None: the configured ones for
        MQTT-signalled sessions (and WHEP with ``media.whep_ice_servers``), none for WHEP. Either way the
        ICE monitor leaves out servers known not to answer (ice.py)."""
        if self._closing:
            raise SessionRefused("media_stopping", "the panel is stopping", retry_after_s=RETRY_AFTER_S)
        check_offer(offer)  # refuse garbage before spending a slot or a call on it
        who = (grant.subject or who or "resident").strip()[:128] or "resident"
        role = self._role_for(grant, who)
        holder = _slot_holder(grant, who)
        self._make_room(role, holder, address, grant.tier)
        if ice_servers is None and not (origin == "mqtt" or self.cfg.whep_ice_servers):
            ice_servers = []
        session = Session(self, grant, role, who, origin, self.ice.choose(ice_servers))
        self.sessions[session.id] = session
        session.slot = self.slots.take(holder, address, grant.tier)
        if grant.lasts_until_mono is not None:
            # The session lasts as long as the credential it was started with (docs/media.md).
            session.expiry = self.clock.call_at(grant.lasts_until_mono, lambda: self._expired(session))
        try:
            await session.negotiate(offer)
            if role == "answerer":
                await self._answer_call(session)
        except BaseException:
            await session.close("refused", notify=False)
            raise
        session.start_watchdog()
        log.info("session %s: %s %s for %s via %s", session.id, role, grant.kind, who, origin,
                 extra={"session": session.id, "call": session.call_guid, "role": role})
        return session

    def _role_for(self, grant: Grant, who: str) -> Role:
        if grant.kind == "monitor":
            if not self.cfg.monitor:
                raise SessionRefused("monitor_disabled", "live view outside a call is off (media.monitor)")
            return "viewer"
        call = self.calls.current if self.calls is not None else None
        if call is None or call.guid != grant.call_guid or not call.live:
            raise SessionRefused("call_over", f"call {grant.call_guid} is not in progress; its credentials no "
                                 "longer start sessions")
        if grant.view_only:
            return "viewer"
        if grant.talk:  # a call link's guest: view and talk beside the answerer (panel/calls/_links.py)
            return "participant"
        holder = self.answerers.get(call.guid)
        if holder is not None and holder.who == who and holder.media_mono is None:
            # The same resident offering again before any media flowed: their answer SDP was lost on
            # the way (an MQTT reply, a dropped HTTP response). The retry replaces the stalled session;
            # taken out of ``answerers`` first, its closing leaves the call alone.
            del self.answerers[call.guid]
            self._forget(holder)  # the retry takes its slot
            self._closers.spawn(holder.close("superseded", notify=False), f"closing session {holder.id}")
            return "answerer"
        answered_by = holder.who if holder is not None else (call.answered_by if call.answered else None)
        if answered_by is not None and (holder is not None or answered_by != who):
            if self.cfg.join_view_only:
                return "viewer"
            raise SessionRefused("already_answered", f"call {call.guid} was already answered by {answered_by}; "
                                 "only one resident talks to the visitor")
        return "answerer"

    def _make_room(self, role: Role, holder: str, address: str | None, tier: SlotTier) -> None:
        """Refuse, with the bound it hits, a session the slots cannot take; a call's answerer makes room."""
        try:
            self.slots.check(holder, address, tier)
            return
        except SlotRefused as e:
            refused = e
        if refused.reason == "full" and role == "answerer":
            # A call outranks a live view: the oldest viewer outside any call makes room.
            monitors = [s for s in self.sessions.values() if s.grant.kind == "monitor" and not s._closing]
            if monitors:
                victim = min(monitors, key=lambda s: s.created_mono)
                self._forget(victim)  # its slot is free now; it finishes closing on its own
                self._closers.spawn(victim.close("preempted_by_call"), f"closing session {victim.id}")
                self._make_room(role, holder, address, tier)
                return
        code = SESSION_CODES[refused.reason]
        hint = f" (media.max_sessions = {self.cfg.max_sessions})" if refused.reason == "full" else ""
        raise SessionRefused(code, f"{refused}{hint}; try again when one ends", retry_after_s=RETRY_AFTER_S)

    def _forget(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        if session.slot is not None:
            self.slots.release(session.slot)
            session.slot = None

    def _expired(self, session: Session) -> None:
        if not session._closing:
            log.info("session %s: its credential %s expired", session.id, session.grant.token_id)
            self._closers.spawn(session.close(CREDENTIAL_EXPIRED), f"closing session {session.id}")

    async def _answer_call(self, session: Session) -> None:
        guid = session.call_guid
        assert guid is not None and self.calls is not None
        holder = self.answerers.get(guid)
        if holder is not None and holder is not session:  # another answer won while we negotiated
            raise SessionRefused("already_answered", f"call {guid} was already answered by {holder.who}")
        self.answerers[guid] = session
        try:
            await self.calls.answer(guid, session.who)
        except CallError as e:
            if self.answerers.get(guid) is session:
                del self.answerers[guid]
            raise SessionRefused(e.code, str(e)) from None
        grant = session.grant
        if grant.token_id not in BACKEND_GRANTS:
            # The call lasts as long as the credential it was answered with (docs/calls.md).
            left = None if grant.lasts_until_mono is None else grant.lasts_until_mono - self.clock.monotonic()
            self.calls.tie_credential(guid, grant.token_id, left)

    async def answer_offer(self, sdp: str, *, token: str | None = None, call_guid: str | None = None,
                           who: str | None = None, ice_servers: list[dict[str, Any]] | None = None) -> str:
        """The MQTT-signalled path: answer a resident's offer for a call (or live view) and return the
        answer SDP. With ``token`` the token decides; without it the caller (the backend, over its
        authenticated link) names the call and the resident."""
        session = await self.create_for_backend(sdp, token=token, call_guid=call_guid, who=who, ice_servers=ice_servers)
        return session.answer_sdp

    async def create_for_backend(self, sdp: str, *, token: str | None = None, call_guid: str | None = None,
                                 who: str | None = None, ice_servers: list[dict[str, Any]] | None = None) -> Session:
        if token is not None:
            grant = self.tokens.verify(token)
        else:
            if call_guid is None and self.calls is not None and self.calls.current is not None:
                call_guid = self.calls.current.guid
            grant = (Grant(token_id="backend", kind="call", subject=who, call_guid=call_guid) if call_guid
                     else Grant(token_id="backend", kind="monitor", subject=who or "backend"))
        servers = ice_servers_from_message(ice_servers) if ice_servers is not None else None
        return await self.create(sdp, grant, who=who, origin="mqtt", ice_servers=servers)

    # -- events from sessions ----------------------------------------------------------------------------
    def _media_flows(self, session: Session) -> None:
        if session.call_guid is None or self.calls is None:
            return
        try:
            self.calls.media_connected(session.call_guid)
        except CallError as e:
            log.warning("session %s: media flows but the call says: %s", session.id, e)

    def _data(self, session: Session, data: Any) -> None:
        for fn in list(self.data_listeners):
            try:
                fn(session, data)
            except Exception:
                log.exception("data listener failed")

    async def _closed(self, session: Session, reason: str) -> None:
        self._forget(session)
        self.ended.append((session.id, reason))
        guid = session.call_guid
        if guid is not None and self.answerers.get(guid) is session:
            del self.answerers[guid]
            call = self.calls.current if self.calls is not None else None
            if call is not None and call.guid == guid and call.live and self.calls is not None:
                try:
                    if reason in PEER_ENDED:
                        await self.calls.end(guid, session.who, "hangup")
                    elif reason in PEER_LOST:
                        await self.calls.fail(guid, "media_lost")
                    elif reason == "revoked":
                        await self.calls.end(guid, session.who, CREDENTIAL_REVOKED)
                except CallError as e:
                    log.info("call %s after its session ended: %s", guid, e)

    def _revoked(self, grant: Grant) -> None:
        for s in list(self.sessions.values()):
            if s.grant.token_id == grant.token_id:
                self._closers.spawn(s.close("revoked"), f"closing session {s.id}")

    # -- call-level mute ----------------------------------------------------------------------------------
    def call_mute(self, guid: str | None) -> dict[str, bool]:
        found = self._call_muted.get(guid) if guid is not None else None
        return dict(found) if found is not None else {"audio": False, "video": False}

    def set_call_mute(self, guid: str, kind: Literal["audio", "video"], muted: bool) -> int:
        """Mute (or unmute) what the panel sends in call ``guid``: every session of the call now, and
        every session that joins it later. Returns how many open sessions it applied to."""
        state = self._call_muted.setdefault(guid, {"audio": False, "video": False})
        state[kind] = muted
        applied = 0
        for s in list(self.sessions.values()):
            if s.call_guid == guid and not s._closing:
                s.apply_mute()
                applied += 1
        return applied

    # -- ending ------------------------------------------------------------------------------------------
    def call_ended(self, guid: str, status: str) -> None:
        """The call is over (any end state): its credentials stop working and its sessions end."""
        self._call_muted.pop(guid, None)
        for s in list(self.sessions.values()):
            if s.call_guid == guid:
                self._closers.spawn(s.close(f"call_{status}"), f"closing session {s.id}")
        self.tokens.revoke_call(guid)  # after: those sessions end for the call, not for the revocation

    def call_started(self) -> None:
        """A call began: live views that may not show a call's visitor end (a resident of its unit offers
        again and watches through the call)."""
        for s in list(self.sessions.values()):
            if s.grant.idle_only:
                self._closers.spawn(s.close(CALL_STARTED), f"closing session {s.id}")

    def get(self, session_id: str) -> Session | None:
        return self.sessions.get(session_id)

    async def end(self, session_id: str, reason: str) -> bool:
        s = self.sessions.get(session_id)
        if s is None:
            return False
        await s.close(reason)
        return True

    async def close(self) -> None:
        self._closing = True
        await asyncio.gather(*(s.close("shutdown") for s in list(self.sessions.values())), return_exceptions=True)
        await self._closers.wait()

    def status(self) -> list[dict[str, Any]]:
        return [s.info() for s in self.sessions.values()]


class _WeakTracks:
    """The tracks sessions created and not yet collected, to prove none is left running."""

    def __init__(self) -> None:
        import weakref
        self._set: weakref.WeakSet[Any] = weakref.WeakSet()

    def add(self, track: Any) -> None:
        self._set.add(track)

    def live(self) -> list[Any]:
        return [t for t in self._set if t.readyState == "live"]

