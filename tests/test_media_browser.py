"""Headless Chromium as the resident through WHEP: the panel's player page renders the camera and the
browser's fake microphone reaches the panel's speaker. (The MQTT-signalled path, through the real
broker, is tests/test_mqtt_media.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from panel.daemon import Panel

from .browser import chromium
from .eventually import eventually
from .media_rig import media_of, ring, speaker, start_panel_inprocess

pytestmark = pytest.mark.browser

RENDERED = """() => {
  const v = document.querySelector('video');
  if (!v) return null;
  const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
  return {width: v.videoWidth, height: v.videoHeight, frames: q ? q.totalVideoFrames : 0,
          state: window.player ? window.player.state : null, error: window.player ? window.player.error : null};
}"""

@pytest.fixture
async def panel(tmp_path: Path) -> AsyncIterator[Panel]:
    p = await start_panel_inprocess(tmp_path)
    yield p
    await p.stop("test over")


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with chromium() as b:
        yield b


async def wait_rendered(page: Any, frames: int, timeout: float = 15.0) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        r = await page.evaluate(RENDERED)
        if r and r.get("error"):
            raise AssertionError(f"player failed: {r['error']}")
        return r if r and r["width"] > 0 and r["frames"] >= frames else None

    return await eventually(check, timeout, f"{frames} frames rendered", interval=0.1)


def loud(samples: np.ndarray) -> bool:
    return len(samples) > 0 and float(np.abs(samples.astype(np.int32)).max()) > 1000


async def test_chromium_whep_player_renders_and_its_microphone_reaches_the_speaker(panel: Panel, browser: Any) -> None:
    guid = await ring(panel)
    media = media_of(panel)
    token = media.issue_call_token(guid, "alice")
    sink = speaker(panel)
    page = await browser.new_page()
    port = panel.api.bound_port  # type: ignore[union-attr]
    await page.goto(f"http://127.0.0.1:{port}/api/v1/media/player?talk=1")
    await page.fill("#token", token)  # typed into its form: the page takes no credential from its URL
    await page.click("#start")
    rendered = await wait_rendered(page, frames=10)
    assert (rendered["width"], rendered["height"]) == (320, 240)
    await eventually(lambda: panel.calls.current.state == "connected", what="call connected by the browser's audio")
    # Chromium's fake microphone beeps; some of it must have reached the panel's speaker.
    await eventually(lambda: loud(sink.samples(3.0)), timeout=8, what="the browser's microphone on the speaker")
    session = next(iter(media.sessions.sessions.values()))
    assert session.role == "answerer" and session.who == "alice"
    # The player's Stop sends DELETE to the session resource: the session and the call end.
    await page.evaluate("() => window.player.stop()")
    await eventually(lambda: not media.sessions.sessions, what="session ended by DELETE")
    assert panel.calls.current is None
    await page.close()
