"""Snapshots, the MJPEG stream and the feedback tones, built on the media service's shared devices.

``start_visitor_media`` never raises: without a camera there are no snapshots or MJPEG, without a
speaker no tones, and the door and calls work regardless. Credentials for the live picture (MJPEG,
on-demand snapshots) are the media session credentials (``media.tokens``): a call's credential while
its call is live, a live-view credential when ``media.monitor`` allows, or the installer token.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..door import ToneFeedback
from ..platform import Config, EventRow, SlotTier
from .errors import TokenRefused
from .jpeg import JpegFrames
from .mjpeg import MjpegStreamer, MjpegViewer
from .snapshots import Snapshots
from .tokens import Grant
from .tones import TonePlayer

if TYPE_CHECKING:
    from ..daemon import Panel
    from .service import MediaService

log = logging.getLogger(__name__)

CALL_END_STATES = frozenset({"ended", "declined", "canceled", "missed", "failed"})


class VisitorMedia:
    def __init__(self, panel: Panel, media: MediaService) -> None:
        cfg = media.cfg
        self.panel = panel
        self.media = media
        self.cfg = cfg
        hub = media.hub
        self.jpegs: JpegFrames | None = None
        self.snapshots: Snapshots | None = None
        self.mjpeg: MjpegStreamer | None = None
        if hub.video is not None:
            self.jpegs = JpegFrames(hub.video, cfg.snapshots.quality, wait_s=cfg.snapshots.wait_s)
            self.snapshots = Snapshots(cfg.snapshots, panel.cfg.storage.dir, self.jpegs, panel.journal)
            if cfg.mjpeg.enabled:
                self.mjpeg = MjpegStreamer(self.jpegs, cfg.mjpeg)
        self.call_tones: TonePlayer | None = None
        self.door_tones: TonePlayer | None = None
        self.feedback: ToneFeedback | None = None
        if cfg.tones.enabled and cfg.audio.output != "none":
            self.call_tones = TonePlayer(hub.mixer, cfg.tones, "tones:call")
            self.door_tones = TonePlayer(hub.mixer, cfg.tones, "tones:door")
            self.feedback = ToneFeedback(self.call_tones, self.door_tones, panel.door.main_relay)
        self._unsubscribe: Any = None
        self._unconfigure: Any = None

    def reconfigure(self, cfg: Config) -> None:
        """Live media.snapshots.* and media.mjpeg.max_viewers keys; the rest of media is restart or local-only."""
        if cfg.media is None:
            return  # removing [media] is local-only: never while running
        self.cfg = self.cfg.model_copy(update={"snapshots": cfg.media.snapshots, "mjpeg": cfg.media.mjpeg})
        if self.jpegs is not None:
            self.jpegs.wait_s = cfg.media.snapshots.wait_s
        if self.snapshots is not None:
            self.snapshots.reconfigure(cfg.media.snapshots)
        if self.mjpeg is not None:
            self.mjpeg.cfg = cfg.media.mjpeg

    async def start(self) -> None:
        if self.snapshots is not None:
            await self.snapshots.start()
        self._unsubscribe = self.panel.journal.subscribe(self.on_event)
        config = getattr(self.panel, "config", None)
        if config is not None:
            self._unconfigure = config.subscribe(("media.snapshots", "media.mjpeg"), self.reconfigure,
                                                 "snapshots and MJPEG")
        self.media.tokens.on_revoke(self._revoked)

    def on_event(self, row: EventRow) -> None:
        if self.snapshots is not None:
            self.snapshots.on_event(row)
        if self.feedback is not None:
            self.feedback.on_event(row)
        if self.mjpeg is not None and row.type == "call.status_updated" and row.data.get("status") in CALL_END_STATES:
            self.mjpeg.call_ended(str(row.data.get("guid")))
        elif self.mjpeg is not None and row.type == "call.created":
            self.mjpeg.call_started()

    def add_mjpeg_viewer(self, token_id: str, call_guid: str | None, who: str, *, lasts_s: float | None = None,
                         idle_only: bool = False, address: str | None = None,
                         tier: SlotTier = "other") -> MjpegViewer:
        """An MJPEG viewer (``MjpegRefused`` if there is no room for it) that ends, by a timer on the panel's
        clock, ``lasts_s`` from now: when the API credential it was opened with expires."""
        assert self.mjpeg is not None
        viewer = self.mjpeg.add_viewer(token_id, call_guid, who, idle_only=idle_only, address=address, tier=tier)
        if lasts_s is not None:
            clock = self.media.clock
            viewer.expiry = clock.call_at(clock.monotonic() + max(0.0, lasts_s),
                                          lambda: viewer.close("credential_expired"))
        return viewer

    def _revoked(self, grant: Grant) -> None:
        if self.mjpeg is not None:
            self.mjpeg.revoke(grant.token_id)

    # -- credentials for the live picture -------------------------------------------------------------
    def authorize_live(self, token: str | None) -> Grant:
        """The grant behind ``token`` if it may see the camera now; ``TokenRefused`` saying why not."""
        grant = self.media.tokens.verify(token)
        if grant.kind == "monitor":
            if not self.cfg.monitor and grant.token_id != "installer":
                raise TokenRefused("monitor_disabled", "live view outside a call is off on this panel (media.monitor)")
            return grant
        calls = self.panel.calls
        call = calls.current
        if call is None or call.guid != grant.call_guid or not call.live:
            raise TokenRefused("call_over", f"call {grant.call_guid} is not in progress; its credential no longer "
                               "shows the camera")
        return grant

    def authorize_call(self, token: str | None, guid: str) -> Grant:
        """A credential that may read call ``guid``'s stored pictures: the installer's or that call's."""
        grant = self.media.tokens.verify(token)
        if grant.token_id == "installer" or (grant.kind == "call" and grant.call_guid == guid):
            return grant
        raise TokenRefused("forbidden", f"this credential is not for call {guid}; use the signed URL from the "
                           "call.snapshot event, that call's credential, or the installer token")

    def status(self) -> dict[str, Any]:
        return {
            "jpeg": self.jpegs.status() if self.jpegs is not None else None,
            "snapshots": self.snapshots.status() if self.snapshots is not None else None,
            "mjpeg": self.mjpeg.status() if self.mjpeg is not None else None,
            "tones": {"call": self.call_tones.playing if self.call_tones else None,
                      "door": self.door_tones.playing if self.door_tones else None},
        }

    def end_streams(self) -> None:
        """End every MJPEG viewer now (the panel is stopping)."""
        if self.mjpeg is not None:
            for viewer in list(self.mjpeg.viewers):
                viewer.close("shutdown")

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._unconfigure is not None:
            self._unconfigure()
        for part in (self.mjpeg, self.snapshots, self.call_tones, self.door_tones, self.jpegs):
            if part is not None:
                try:
                    await part.close()
                except Exception:
                    log.exception("stopping %s failed", type(part).__name__)


async def start_visitor_media(panel: Panel) -> VisitorMedia | None:
    """Build and start snapshots, MJPEG and tones on the running media service, or log why not."""
    media = getattr(panel, "media", None)
    if media is None:
        return None
    try:
        visitor = VisitorMedia(panel, media)
        await visitor.start()
    except Exception:
        log.exception("snapshots, MJPEG and tones failed to start; the panel runs without them")
        return None
    return visitor
