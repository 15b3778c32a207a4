"""The media layer as the daemon sees it: built from config, wired to the journal and the calls.

``start_media`` never raises: without the ``media`` section, without the media packages, or with a
broken device the panel runs on (door and calls work; an answered call connects without media) and
the reason is logged. Device failures at run time are health events, retried by the captures.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..events import EventData
from ..platform import EventRow, MediaConfig

if TYPE_CHECKING:
    from ..daemon import Panel
    from .sessions import CallControl

log = logging.getLogger(__name__)

CALL_END_STATES = frozenset({"ended", "declined", "canceled", "missed", "failed"})


class MediaService:
    def __init__(self, cfg: MediaConfig, *, report: Any, calls: CallControl | None = None,
                 installer_token: str | None = None) -> None:
        from .hub import MediaHub
        from .sessions import SessionManager
        from .tokens import TokenStore

        self.cfg = cfg
        self.hub = MediaHub(cfg, report)
        self.tokens = TokenStore(cfg.token_ttl_s, installer_token=installer_token)
        self.sessions = SessionManager(cfg, self.hub, self.tokens, calls)
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
        """Journal subscriber: a call that ended takes its credentials and sessions with it."""
        if row.type == "call.status_updated" and row.data.get("status") in CALL_END_STATES:
            self.sessions.call_ended(str(row.data["guid"]), str(row.data["status"]))

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


def simulated(cfg: MediaConfig) -> MediaConfig:
    """``panel run --simulate``: hardware is replaced (a V4L2 camera by the test pattern, sound devices by
    a tone and a recording speaker); files and commands, which need no hardware, are kept."""
    video = cfg.video.model_copy(update={"source": "synthetic"}) if cfg.video.source == "v4l2" else cfg.video
    audio = cfg.audio.model_copy(update={
        "input": cfg.audio.input if cfg.audio.input in ("synthetic", "none") else "synthetic",
        "output": cfg.audio.output if cfg.audio.output in ("record", "none") else "record"})
    return cfg.model_copy(update={"video": video, "audio": audio})


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
        service = MediaService(cfg, report=report, calls=getattr(panel, "calls", None),
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
