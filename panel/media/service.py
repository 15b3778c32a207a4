"""The media layer as the daemon sees it: built from config, wired to the journal and the calls.

``start_media`` never raises: without the ``media`` section, without the media packages, or with a
broken device the panel runs on (door and calls work; an answered call connects without media) and
the reason is logged. Device failures at run time are health events, retried by the captures.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..events import EventData
from ..platform import Background, Clock, EventRow, LoopClock, MediaConfig

if TYPE_CHECKING:
    from ..daemon import Panel
    from .sessions import CallControl

log = logging.getLogger(__name__)

CALL_END_STATES = frozenset({"ended", "declined", "canceled", "missed", "failed"})
MuteKind = Literal["audio", "video"]


@dataclass(frozen=True)
class SessionHandle:
    """What callers outside the media package learn about a session they started: enough to answer
    the peer and to name the session later (``end_session``, ``wait_closed``)."""

    id: str
    role: str  # answerer, viewer or participant
    who: str
    call_guid: str | None
    answer_sdp: str
    credential_id: str  # the token id of the grant it was started with (who may end it)


class MediaService:
    def __init__(self, cfg: MediaConfig, *, report: Any, calls: CallControl | None = None,
                 installer_token: str | None = None, clock: Clock | None = None) -> None:
        from .hub import MediaHub
        from .sessions import SessionManager
        from .tokens import TokenStore

        self.cfg = cfg
        self._ending = Background("media")  # sessions ended for synchronous callers
        self.hub = MediaHub(cfg, report)
        self.clock = clock = clock or LoopClock()  # sessions' timers (and when an API credential expires)
        self.tokens = TokenStore(cfg.token_ttl_s, clock=clock.monotonic, installer_token=installer_token)
        self.sessions = SessionManager(cfg, self.hub, self.tokens, calls, clock=clock)
        self.calls = calls
        self._followed: list[Any] = []

    def follow_revocations(self, api_tokens: Any) -> None:
        """Sessions started with an API credential end when the API revokes it (idempotent)."""
        if any(t is api_tokens for t in self._followed):
            return
        self._followed.append(api_tokens)
        api_tokens.on_revoke(lambda principal: self.tokens.revoked_elsewhere(principal.token_id))

    def start(self) -> None:
        self.hub.start()
        self.sessions.ice.start()  # probes the STUN/TURN servers in the background from now on
        attach = getattr(self.calls, "attach_media", None)
        if attach is not None:
            attach(True)  # from now on an answered call connects when its media flows

    def on_event(self, row: EventRow) -> None:
        """Journal subscriber: a call that ended takes its credentials and sessions with it; one that begins
        ends the live views that may not look into a call."""
        if row.type == "call.status_updated" and row.data.get("status") in CALL_END_STATES:
            self.sessions.call_ended(str(row.data["guid"]), str(row.data["status"]))
        elif row.type == "call.created":
            self.sessions.call_started()

    # -- sessions, for everyone outside panel/media (nobody else touches Session objects) -----------
    async def open_session(self, offer: str, grant: Any, *, who: str | None = None, origin: Any = "whep",
                           ice_servers: list[dict[str, Any]] | None = None, address: str | None = None) -> SessionHandle:
        """Answer ``offer`` for what ``grant`` (a ``media.tokens.Grant``) allows; ``SessionRefused`` if not.
        ``ice_servers``: W3C RTCIceServer dicts from the signalling, or None for the configured ones;
        ``address``: the client's, for the per-address cap."""
        from .sessions import ice_servers_from_message

        servers = ice_servers_from_message(ice_servers) if ice_servers is not None else None
        session = await self.sessions.create(offer, grant, who=who, origin=origin, ice_servers=servers,
                                             address=address)
        return _handle(session)

    async def join_as_guest(self, offer: str, *, call_guid: str, participant_id: str, link_id: str) -> SessionHandle:
        """A call link's guest joins call ``call_guid``: the camera, the entrance microphone and its voice to
        the speaker, beside the answerer; it never answers or ends the call."""
        from .tokens import Grant

        grant = Grant(token_id=f"link:{link_id}:{participant_id}", kind="call", subject=f"guest:{participant_id}",
                      call_guid=call_guid, talk=True)
        return _handle(await self.sessions.create(offer, grant, origin="whep"))

    def session_info(self, session_id: str) -> SessionHandle | None:
        s = self.sessions.get(session_id)
        return _handle(s) if s is not None else None

    async def end_session(self, session_id: str, reason: str) -> bool:
        """End one session (and, for a call's answerer ended by its peer, the call with it); False if it is
        not open. Returns once it is down."""
        return await self.sessions.end(session_id, reason)

    async def wait_closed(self, session_id: str) -> str | None:
        """Until session ``session_id`` has ended; its close reason (None: it was not open)."""
        s = self.sessions.get(session_id)
        if s is None:
            return None
        await s.closed.wait()
        return s.close_reason

    def end_session_soon(self, session_id: str, reason: str) -> None:
        """``end_session`` for synchronous callers (a revocation, a link ending)."""
        if self.sessions.get(session_id) is not None:
            self._ending.spawn(self.sessions.end(session_id, reason), f"ending session {session_id}")

    def configured_ice_servers(self) -> list[Any]:
        """``media.ice_servers`` as RTCIceServer objects (TURN passwords from their environment variables),
        e.g. for WHEP's Link headers."""
        from .sessions import ice_servers_from_config

        return ice_servers_from_config(self.cfg.ice_servers)

    # -- call-level mute --------------------------------------------------------------------------------
    def set_call_mute(self, call_guid: str, kind: MuteKind, muted: bool) -> int:
        """Mute (True) or unmute what the panel sends in a call: its microphone (``audio``: the peers hear
        silence) or its camera (``video``: pictures stop), for every session of the call, including those
        that join later. Each peer is told in a data-channel ``state``. Returns the sessions it reached."""
        return self.sessions.set_call_mute(call_guid, kind, muted)

    def call_mute(self, call_guid: str) -> dict[str, bool]:
        return self.sessions.call_mute(call_guid)

    def issue_call_token(self, call_guid: str, who: str | None = None, *, view_only: bool = False,
                         ttl_s: float | None = None) -> str:
        """A credential for one resident (or anyone of the unit, ``who=None``) to join this call's media."""
        token, _ = self.tokens.issue("call", subject=who, call_guid=call_guid, view_only=view_only, ttl_s=ttl_s)
        return token

    def issue_monitor_token(self, who: str, ttl_s: float | None = None) -> str:
        token, _ = self.tokens.issue("monitor", subject=who, view_only=True, ttl_s=ttl_s)
        return token

    async def answer_offer(self, sdp: str, *, token: str | None = None, call_guid: str | None = None,
                           who: str | None = None, ice_servers: list[dict[str, Any]] | None = None) -> str:
        """For the MQTT link: a resident's offer in, the panel's answer out (see SessionManager.answer_offer)."""
        return await self.sessions.answer_offer(sdp, token=token, call_guid=call_guid, who=who,
                                                ice_servers=ice_servers)

    async def stop(self) -> None:
        await self._ending.wait()
        await self.sessions.close()
        await self.sessions.ice.close()
        await self.hub.close()
        attach = getattr(self.calls, "attach_media", None)
        if attach is not None:
            attach(False)

    def status(self) -> dict[str, Any]:
        return {"devices": self.hub.status(), "sessions": self.sessions.status(), "ice": self.sessions.ice.status()}

    def health(self) -> dict[str, Any]:
        """For /api/v1/health: which STUN/TURN servers new sessions can use (no credentials)."""
        return {"ice": self.sessions.ice.health()}


def _handle(session: Any) -> SessionHandle:
    return SessionHandle(id=session.id, role=session.role, who=session.who, call_guid=session.call_guid,
                         answer_sdp=session.answer_sdp, credential_id=session.grant.token_id)


def simulated(cfg: MediaConfig) -> MediaConfig:
    """``panel run --simulate``: hardware is replaced (a V4L2 camera by the test pattern, sound devices by
    a tone and a recording speaker); files and commands, which need no hardware, are kept."""
    video = cfg.video.model_copy(update={"source": "synthetic"}) if cfg.video.source == "v4l2" else cfg.video
    audio = cfg.audio.model_copy(update={
        "input": cfg.audio.input if cfg.audio.input in ("synthetic", "none") else "synthetic",
        "output": cfg.audio.output if cfg.audio.output in ("record", "none") else "record"})
    return cfg.model_copy(update={"video": video, "audio": audio})


MEDIA_PACKAGES = ("aiortc", "av", "numpy", "sounddevice")  # the media extra: what media cannot run without


def missing_media_packages() -> list[str]:
    """The media extra's packages this installation lacks (looked up, not imported). They come with the
    installation, not with a release: a new release cannot be blamed for them (update trials)."""
    return [name for name in MEDIA_PACKAGES if importlib.util.find_spec(name) is None]


def start_media(panel: Panel) -> MediaService | None:
    """Build and start the media layer for a running panel, or explain why not and return None."""
    cfg = panel.cfg.media
    if cfg is None:
        log.info("no [media] section: running without camera, microphone and speaker")
        return None
    if panel.simulated:
        cfg = simulated(cfg)

    def report(event: EventData) -> None:
        panel.journal.record(event)

    try:
        service = MediaService(cfg, report=report, calls=getattr(panel, "calls", None), clock=panel.clock,
                               installer_token=panel.secrets.installer_token)
        service.start()
    except ImportError as e:
        log.error("media is configured but its packages are missing (%s); install the panel with its media "
                  "extra: pip install 'panel[media]'. Running without media.", e)
        return None
    except Exception:
        log.exception("media failed to start; running without media")
        return None
    panel.journal.subscribe(service.on_event)
    return service
