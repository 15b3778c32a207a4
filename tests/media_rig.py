"""A whole simulated panel in-process with media on (synthetic camera, tone microphone, recording
speaker), its API served by uvicorn on a free port, and a resource count for leak checks."""

from __future__ import annotations

import asyncio
import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from panel.auth import Secrets
from panel.daemon import Panel
from panel.media.audio import RecordingSink
from panel.media.service import MediaService
from panel.platform import parse_config

from .eventually import eventually
from .support import config_dict

INSTALLER = "installer-token-0123456789"
MEDIA: dict[str, Any] = {
    "video": {"width": 320, "height": 240, "fps": 15, "bitrate_kbps": 300},
    "audio": {"tone_hz": 440.0},
    "linger_s": 0,
    "peer_timeout_s": 2,
    "max_sessions": 4,
    # The visitor feedback tones share the speaker; these tests listen for the resident's voice alone.
    "tones": {"enabled": False},
    # A picture at every press would hold the camera; these tests count its users.
    "snapshots": {"at_press": False},
}


def media_config(**overrides: Any) -> dict[str, Any]:
    media = copy.deepcopy(MEDIA)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(media.get(key), dict):
            media[key] = {**media[key], **value}
        else:
            media[key] = value
    return media


async def start_panel_inprocess(tmp_path: Path, media: dict[str, Any] | str | None = "default",
                                simulate: bool = True, **sections: Any) -> Panel:
    """``media``: the [media] section, "default" for ``media_config()``, None for no media at all;
    ``sections`` replace (or, given None, remove) other sections of the base test config."""
    data = config_dict(media=media_config() if media == "default" else media, **sections)
    data["storage"] = {"dir": str(tmp_path / "state")}
    data["api"] = {"listen": "127.0.0.1:0"}
    panel = Panel(parse_config(data), Secrets(installer_token=INSTALLER), simulate=simulate)
    await panel.start()
    return panel


def media_of(panel: Panel) -> MediaService:
    assert panel.media is not None, "media did not start; see the log"
    return panel.media


def speaker(panel: Panel) -> RecordingSink:
    sink = media_of(panel).hub.speaker
    assert isinstance(sink, RecordingSink)
    return sink


def api(panel: Panel) -> httpx.AsyncClient:
    assert panel.api is not None
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{panel.api.bound_port}", timeout=20)


async def ring(panel: Panel, button: str = "b303") -> str:
    press = panel.calls.press(button)
    assert press.call is not None
    await panel.journal.flush()
    return press.call.guid


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@dataclass
class Resources:
    tasks: int
    fds: int

    @classmethod
    def now(cls) -> Resources:
        return cls(sum(not _orphaned_consent(t) for t in asyncio.all_tasks()), fd_count())


def _orphaned_consent(task: asyncio.Task[object]) -> bool:
    """aioice's consent check of a connection that was closed while connect() still waited for its check
    list: connect() then starts the check after close() ran, and it loops on no pairs (no packets, no
    sockets) until the loop ends. A race in aioice, on either peer, not a session the panel kept."""
    coro = task.get_coro()
    frame = getattr(coro, "cr_frame", None)
    conn = frame.f_locals.get("self") if frame is not None else None
    return (getattr(coro, "__qualname__", "") == "Connection.query_consent" and conn is not None
            and getattr(conn, "_closing", False) and not getattr(conn, "_nominated", True))


async def assert_no_leaks(before: Resources, panel: Panel, timeout: float = 15.0) -> None:
    """Every task, socket and track a session made is gone again (aiortc finishes some teardown in
    background tasks, so give it a moment)."""
    media = media_of(panel)

    def streaming() -> bool:
        video = media.hub.video
        return video is not None and bool(video.viewers or video.capture.running)

    def clean() -> bool:
        now = Resources.now()
        return (now.tasks <= before.tasks and now.fds <= before.fds and not media.sessions.live_tracks.live()
                and not streaming() and not media.sessions.sessions and not media.hub.mixer.inputs)

    def leaks() -> str:
        now = Resources.now()
        names = sorted(t.get_name() + ":" + getattr(t.get_coro(), "__qualname__", "?") for t in asyncio.all_tasks())
        return (f"tasks {before.tasks} -> {now.tasks}, fds {before.fds} -> {now.fds}, live tracks "
                f"{media.sessions.live_tracks.live()}, camera streaming {streaming()}, sessions "
                f"{list(media.sessions.sessions)}, mixer inputs {list(media.hub.mixer.inputs)}; tasks now: {names}")

    await eventually(clean, timeout, "no leaks", interval=0.05, detail=leaks)
