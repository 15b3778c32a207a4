"""The panel's pages end to end in headless Chromium (Debian's, fake camera and microphone) against a
simulated panel with media, in-process: a button press rings the resident page, which answers, shows
live video, talks to the entrance speaker, sends a text, mutes, opens the door and shares a call link;
the link opens in a second browser context, previews, joins, and leaves; revoked and expired links are
refused; the installer page pulses the relay, shows the camera and checks the sound.

One browser and one panel for the module. Screenshots go to test-artifacts/ (gitignored); with
PANEL_SCREENSHOTS=docs the README's pictures in docs/img/ are refreshed as well.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio

from panel.api.principals import ApiAuth
from panel.auth import Secrets
from panel.daemon import Panel
from panel.media.audio import dominant_frequency
from panel.platform import parse_config

from .browser import chromium
from .eventually import eventually
from .media_rig import INSTALLER, media_config, media_of, speaker
from .support import ROOT, config_dict, write_config

ARTIFACTS = ROOT / "test-artifacts"
DOCS_IMG = ROOT / "docs" / "img"

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.browser]

FRAMES = """(sel) => {
  const v = document.querySelector(sel);
  if (!v || !v.getVideoPlaybackQuality) return null;
  return {width: v.videoWidth, height: v.videoHeight, frames: v.getVideoPlaybackQuality().totalVideoFrames};
}"""
NAMES = "(sel) => Array.from(document.querySelectorAll(sel + ' li .name')).map((e) => e.textContent)"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def panel(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Panel]:
    tmp = tmp_path_factory.mktemp("pages")
    data = config_dict(media=media_config(snapshots={"at_press": True}))
    data["storage"] = {"dir": str(tmp / "state")}
    data["api"] = {"listen": "127.0.0.1:0"}
    p = Panel(parse_config(data), Secrets(installer_token=INSTALLER), simulate=True)
    p.config_path = write_config(tmp, data)  # the installer page edits this file
    await p.start()
    yield p
    await p.stop("test over")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    async with chromium() as b:
        yield b


def base(panel: Panel) -> str:
    assert panel.api is not None
    return f"http://127.0.0.1:{panel.api.bound_port}"


async def shot(page: Any, name: str, docs: str | None = None) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    if docs is not None and os.environ.get("PANEL_SCREENSHOTS") == "docs":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(DOCS_IMG / docs), full_page=True)
    return path


async def until(page: Any, script: str, arg: Any = None, timeout: float = 15.0, what: str = "condition") -> Any:
    """``eventually`` for a script evaluated in the page."""
    return await eventually(lambda: page.evaluate(script, arg), timeout, what, interval=0.1)


async def frames(page: Any, sel: str, n: int = 10) -> dict[str, Any]:
    return await until(page, f"(sel) => {{ const r = ({FRAMES})(sel); return r && r.width > 0 && r.frames >= {n} "
                       "? r : null; }", sel, what=f"{n} decoded frames in {sel}")


async def names(page: Any, sel: str, want: list[str]) -> None:
    await until(page, f"([sel, want]) => JSON.stringify(({NAMES})(sel)) === JSON.stringify(want)", [sel, want],
                what=f"participants {want} in {sel}")


def pulses(panel: Panel, since: int) -> list[tuple[bool, float]]:
    """The relay pin's level changes since index ``since``: (level, seconds the previous level lasted)."""
    pin = panel.hw.relays["main"].pin
    return [(bool(s.state), float(s.timestamp)) for s in pin.states[since:]]


async def access_log(panel: Panel) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=base(panel)) as c:
        r = await c.get("/api/v1/logs/access", headers={"Authorization": f"Bearer {INSTALLER}"})
        return r.json()["entries"]  # type: ignore[no-any-return]


async def test_resident_page_rings_answers_talks_opens_and_shares_a_link(panel: Panel, browser: Any) -> None:
    secret, _ = await ApiAuth.for_panel(panel).tokens.issue(kind="token", role="resident", subject="alice",
                                                            name="Alice", issued_by="test", ttl_s=3600, unit_id="303")
    resident_ctx = await browser.new_context(permissions=["notifications", "microphone"],
                                             viewport={"width": 900, "height": 900})
    guest_ctx = await browser.new_context(permissions=["microphone"], viewport={"width": 420, "height": 820})
    try:
        page = await resident_ctx.new_page()
        await page.goto(base(panel) + "/resident")
        await page.fill("#secret", secret)
        await page.click("#signin-go")
        await page.wait_for_selector("#stream-status.ok")

        # A simulated press of the call button (the mock pin, debounced like the real one) rings the page.
        sink = speaker(panel)
        button = panel.hw.buttons["b303"].pin

        async def press() -> None:
            button.drive_low()
            await asyncio.sleep(0.08)  # the stimulus: holding the button past the debounce
            button.drive_high()

        # The first visitor is declined: the call ends as declined by alice and enters the history.
        await press()
        await page.wait_for_selector("#incoming:not([hidden])", timeout=10_000)
        first = panel.calls.current.guid  # type: ignore[union-attr]
        await page.click("#decline")
        await page.wait_for_selector("#idle:not([hidden])")
        declined = await panel.calls.lookup(first)
        assert declined is not None and (declined.state, declined.ended_by) == ("declined", "alice")
        assert await page.evaluate("() => window.app.ringing") is False
        await page.wait_for_selector(f"tr[data-guid='{first}']")

        await press()
        await page.wait_for_selector("#incoming:not([hidden])", timeout=10_000)
        assert await page.evaluate("() => window.app.ringing") is True
        assert await page.evaluate("() => Panel.ringer.rings") >= 1  # the WebAudio ring tone played
        assert await page.evaluate("() => window.app.notified") >= 1  # a browser notification was shown
        guid = panel.calls.current.guid  # type: ignore[union-attr]
        assert await page.text_content("#incoming-unit") == "Unit 303 · video call"
        # The visitor's picture taken at the press.
        await until(page, "() => { const i = document.querySelector('#incoming-snapshot'); "
                    "return !i.hidden && i.naturalWidth === 320; }", what="the visitor snapshot shown")
        await shot(page, "resident-ringing")

        # Answer: live video in, the fake microphone out to the entrance speaker.
        await page.click("#answer")
        await page.wait_for_selector("#incall:not([hidden])")
        video = await frames(page, "#video")
        assert (video["width"], video["height"]) == (320, 240)
        await eventually(lambda: panel.calls.current is not None and panel.calls.current.state == "connected",
                         what="the call connected by the browser's audio")
        assert panel.calls.current.answered_by == "alice"  # type: ignore[union-attr]
        await eventually(lambda: float(np.abs(sink.samples(2.0).astype(np.int32)).max(initial=0)) > 1000,
                         timeout=10, what="the browser's microphone on the speaker")
        heard = sink.samples(2.0)
        assert dominant_frequency(heard) > 100  # Chromium's fake microphone beeps; not silence, not hum

        session = next(s for s in media_of(panel).sessions.sessions.values() if s.role == "answerer")
        await page.fill("#text", "Coming down!")
        await page.click("#text-send")
        await eventually(lambda: {"text": "Coming down!", "from": "alice"} in list(session.received),
                         what="the text on the panel's data channel")
        await page.click("#mute")
        await eventually(lambda: session.remote_muted["audio"], what="mute reported to the panel")
        await page.click("#mute")
        await eventually(lambda: not session.remote_muted["audio"], what="unmute reported to the panel")

        # Open: the relay pulses (mock pin high, then low after hold_s) and the access log names the call.
        since = len(panel.hw.relays["main"].pin.states)
        await page.click("#open")
        await page.wait_for_selector("#call-status.ok")
        await eventually(lambda: [lvl for lvl, _ in pulses(panel, since)] == [True, False], timeout=6,
                         what="the relay energised and released")
        assert abs(pulses(panel, since)[1][1] - panel.cfg.relay("main").hold_s) < 0.5
        entry = (await access_log(panel))[0]
        assert (entry["call_guid"], entry["actor"], entry["cause"], entry["method"]) == (guid, "alice", "call", "api")

        # Share a call link; a second browser context previews, joins, both pages list both, then leaves.
        await page.click("#share")
        await page.wait_for_selector("#revoke:not([hidden])")
        url = await page.text_content("#link")
        assert url is not None and url.startswith(base(panel) + "/link#cl1.")
        guest = await guest_ctx.new_page()
        await guest.goto(url)
        await guest.fill("#name", "Maria <i>")
        await guest.click("#preview")
        await names(guest, "#people", ["alice"])
        await shot(guest, "link-preview")
        await guest.click("#join")
        await frames(guest, "#video", 5)
        await names(guest, "#people", ["alice", "Maria <i>"])
        await names(page, "#people", ["alice", "Maria <i>"])
        assert await page.evaluate("() => document.querySelectorAll('#people i').length") == 0  # text, not markup
        guest_session = next(s for s in media_of(panel).sessions.sessions.values() if s.role == "participant")
        await shot(guest, "link-joined")
        await shot(page, "resident-in-call", docs="resident.png")
        await guest.click("#leave")
        await names(page, "#people", ["alice"])
        await eventually(lambda: guest_session.state == "closed", what="the guest's session ended")
        await guest.close()

        # Closing a joined page (no Leave) takes the guest out of the call too.
        closer = await guest_ctx.new_page()
        await closer.goto(url)
        await closer.fill("#name", "Tab closer")
        await closer.click("#preview")
        await closer.click("#join")
        await names(page, "#people", ["alice", "Tab closer"])
        await closer.close(run_before_unload=True)
        await names(page, "#people", ["alice"])
        await panel.journal.flush()
        left = await panel.store.read(lambda c: c.execute(
            "SELECT data FROM events WHERE type='call.participant_left' ORDER BY seq DESC LIMIT 1").fetchone()[0])
        assert '"Tab closer"' in left and '"reason":"page_closed"' in left, left  # the pagehide keepalive leave

        # Revoked: an open preview is told at once, and the link no longer opens.
        preview = await guest_ctx.new_page()
        await preview.goto(url)
        await preview.fill("#name", "Late")
        await preview.click("#preview")
        await names(preview, "#people", ["alice"])
        await page.click("#revoke")
        await preview.wait_for_selector("#status.bad")
        assert "revoked" in (await preview.text_content("#status") or "")
        await preview.close()
        again = await guest_ctx.new_page()
        await again.goto(url)
        await again.fill("#name", "Again")
        await again.click("#preview")
        await again.wait_for_selector("#enter-status.bad")
        assert "link_revoked" in (await again.text_content("#enter-status") or "")
        await shot(again, "link-revoked")
        await again.close()

        # Expired: a fresh link whose clock has run past its expiry.
        await page.click("#share")
        await page.wait_for_selector("#revoke:not([hidden])")
        fresh = await page.text_content("#link")
        links = panel.call_links
        links.now = lambda: time.time() + panel.cfg.links.ttl_s + 1
        try:
            late = await guest_ctx.new_page()
            await late.goto(fresh)
            await late.fill("#name", "Late")
            await late.click("#preview")
            await late.wait_for_selector("#enter-status.bad")
            assert "link_expired" in (await late.text_content("#enter-status") or "")
            await late.close()
        finally:
            links.now = time.time

        # A preview open when the call ends shows "Call ended" (its participant list is empty).
        watcher = await guest_ctx.new_page()
        await watcher.goto(fresh)
        await watcher.fill("#name", "Watcher")
        await watcher.click("#preview")
        await names(watcher, "#people", ["alice"])
        await page.click("#hangup")
        await watcher.wait_for_selector("#ended:not([hidden])")
        assert await watcher.text_content("#ended") == "Call ended"
        await shot(watcher, "link-call-ended")
        await eventually(lambda: panel.calls.current is None, what="the call ended by the hang-up")
        assert (await panel.calls.lookup(guid)).ended_by == "alice"  # type: ignore[union-attr]

        # The history shows the call with the visitor's picture.
        await until(page, "(g) => { const r = document.querySelector(`tr[data-guid='${g}'] img`); "
                    "return r && r.naturalWidth === 320; }", guid, what="the call in the history with its picture")
        await shot(page, "resident-history")
    finally:
        await resident_ctx.close()
        await guest_ctx.close()


async def test_installer_page_pulses_the_relay_and_checks_camera_and_sound(panel: Panel, browser: Any) -> None:
    password = ApiAuth.for_panel(panel).installer.initial_password()
    assert password is not None
    ctx = await browser.new_context(viewport={"width": 1000, "height": 900})
    try:
        page = await ctx.new_page()
        await page.goto(base(panel) + "/installer")
        await page.fill("#password", password)
        await page.click("#signin-go")
        await page.wait_for_selector("#live.on")
        await page.wait_for_selector("tr[data-relay=main] [data-state=off]")
        # the health table fills from its own requests (the detail, behind the credential), not with the state
        await page.wait_for_function("() => (document.querySelector('#health')?.textContent || '').includes('ok')")

        sink = speaker(panel)
        since = len(panel.hw.relays["main"].pin.states)
        await page.click("button[data-pulse=main]")
        await page.wait_for_selector("#relay-status.ok")
        await page.wait_for_selector("tr[data-relay=main] [data-state=on]", timeout=5000)  # live over SSE
        await eventually(lambda: [lvl for lvl, _ in pulses(panel, since)] == [True, False], timeout=5,
                         what="the test pulse")
        assert abs(pulses(panel, since)[1][1] - 1.0) < 0.3
        await page.wait_for_selector("tr[data-relay=main] [data-state=off]", timeout=5000)
        entry = (await access_log(panel))[0]
        assert (entry["relay"], entry["cause"], entry["actor"]) == ("main", "installer", "installer")
        await page.wait_for_selector(f"tr[data-access='{entry['id']}']")

        await page.click("#cam-start")
        video = await frames(page, "#camera", 5)
        assert video["width"] == 320
        await page.click("#mic-start")
        level = await until(page, "() => window.app.level", what="a microphone level")
        assert abs(level["dominant_hz"] - 440) < 20 and level["rms_dbfs"] > -20  # the simulated 440 Hz microphone
        await page.click("#mic-start")
        await page.fill("#tone-hz", "1200")
        await page.click("#tone")
        await page.wait_for_selector("#sound-status.ok")
        await eventually(lambda: abs(dominant_frequency(sink.samples(0.4)) - 1200) < 30, timeout=5,
                         what="the speaker test tone")

        # Config: a bad value is refused naming the key; a dry run of a good one passes.
        await page.click("#config-card summary")  # the key-by-path form, below the generated forms
        await page.fill("#config-key", "door.relays[0].hold_s")
        await page.fill("#config-value", "999")
        await page.click("#config-check")
        await page.wait_for_selector("#config-status.bad")
        assert "hold_s" in (await page.text_content("#config-status") or "")
        assert "\"relays\"" in await page.input_value("#config")
        # The event log shows what this test did (the pulse), whatever ran on this panel before it.
        await eventually(lambda: page.evaluate("""() => ['panel.started', 'door.unlocked', 'door.locked'].every(
            (t) => document.querySelector(`#logs tr[data-type="${t}"]`))"""), what="the pulse in the event log")
        await shot(page, "installer", docs="installer.png")
        await page.click("#cam-stop")
        await eventually(lambda: not media_of(panel).sessions.sessions, what="the camera preview's session ended")
    finally:
        await ctx.close()
