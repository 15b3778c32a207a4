"""The first run, in headless Chromium: a new user follows the README's demo steps literally (the demo
config as a process, its printed sign-in link, a press from the installer page, answer, moving video and
sound both ways, open the door, the relay energised); and an installer sets a fresh panel up from the
installer page alone (wiring, self-test, buttons and units, a resident added and signed in by their link),
with bad input named at its key and nothing half-applied."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from panel.api.principals import ApiAuth
from panel.auth import Secrets
from panel.daemon import Panel
from panel.platform import load_config, parse_config

from .browser import chromium
from .eventually import eventually, eventually_sync
from .support import ROOT, PanelProcess, config_dict, free_port, write_config
from .test_pages_browser import FRAMES, until

pytestmark = pytest.mark.browser

ARTIFACTS = ROOT / "test-artifacts"
DOCS_IMG = ROOT / "docs" / "img"

STATS = """async () => {
  const out = { audioIn: 0, audioOut: 0, videoIn: 0 };
  if (!window.app.c) return out;
  (await window.app.c.pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") out.audioIn += s.bytesReceived;
    if (s.type === "inbound-rtp" && s.kind === "video") out.videoIn += s.framesDecoded;
    if (s.type === "outbound-rtp" && s.kind === "audio") out.audioOut += s.bytesSent;
  });
  return out;
}"""


async def shot(target: Any, name: str) -> None:
    """A screenshot for the test's artifacts; with PANEL_SCREENSHOTS=docs also the README's picture."""
    ARTIFACTS.mkdir(exist_ok=True)
    await target.screenshot(path=str(ARTIFACTS / name))
    if os.environ.get("PANEL_SCREENSHOTS") == "docs":
        await target.screenshot(path=str(DOCS_IMG / name))


def demo_process(tmp_path: Path) -> PanelProcess:
    """What scripts/demo runs (`panel run --config config/demo.toml --simulate --demo`), on a free port and
    with its state in the test's directory."""
    data = tomllib.loads((ROOT / "config" / "demo.toml").read_text(encoding="utf-8"))
    port = free_port()
    data["api"]["listen"] = f"127.0.0.1:{port}"
    data["storage"]["dir"] = str(tmp_path / "state")
    return PanelProcess(write_config(tmp_path, data, "demo.toml"), port, args=["--demo"]).start()


def banner(proc: PanelProcess) -> dict[str, str]:
    """What the demo printed: the pages, the installer password and the resident's sign-in link."""
    shown = eventually_sync(
        lambda: proc.log() if "panel sim press" in proc.log() else None, 10, "the demo's banner", detail=proc.log
    )
    assert shown is not None
    text: str = shown
    found = {
        name: m.group(1)
        for name, m in (
            ("resident", re.search(r"Resident +(\S+)", text)),
            ("installer", re.search(r"Installer +(\S+)", text)),
            ("docs", re.search(r"API docs +(\S+)", text)),
            ("password", re.search(r"Installer password: (\S+)", text)),
            ("link", re.search(r"^ +(http://\S+/resident#signin=\S+)$", text, re.M)),
        )
        if m
    }
    assert set(found) == {"resident", "installer", "docs", "password", "link"}, text
    assert "█" in text  # the QR code
    return found


@pytest.mark.slow
async def test_a_new_user_follows_the_readme_demo_and_completes_a_call(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for step in ("scripts/demo", "Open the resident link", "Press b303", "Answer", "Open door"):
        assert step in readme, f"the README's demo no longer says {step!r}: update this test with it"
    proc = demo_process(tmp_path)
    try:
        shown = banner(proc)
        assert shown["resident"] == proc.url + "/resident" and shown["docs"] == proc.url + "/api/v1/docs"
        async with chromium() as browser:
            phone = await (await browser.new_context()).new_page()
            await phone.goto(shown["link"])  # 1. open the resident link
            await phone.wait_for_selector("#idle:not([hidden])")
            assert "Demo resident (resident, unit 303)" == await phone.text_content("#who")
            assert "signin" not in phone.url  # the code left the address bar at once

            installer = await (await browser.new_context()).new_page()
            await installer.goto(shown["installer"])  # 2. the installer page, the printed password
            await installer.fill("#password", shown["password"])
            await installer.click("#signin-go")
            await installer.click("button[data-press=b303]")  # ... and press b303

            await phone.wait_for_selector("#incoming:not([hidden])", timeout=10_000)  # 3. it rings: Answer
            await phone.click("#answer")
            await phone.wait_for_selector("#incall:not([hidden])")
            first = await until(
                phone,
                f"() => {{ const r = ({FRAMES})('#video'); return r && r.frames >= 5 ? r : null; }}",
                what="video frames at the resident",
            )
            assert (first["width"], first["height"]) == (640, 480)
            await until(
                phone, f"(n) => ({FRAMES})('#video').frames >= n + 10", first["frames"], what="the video keeps moving"
            )
            sound = await until(
                phone,
                f"async () => {{ const s = await ({STATS})(); "
                "return s.audioIn > 4000 && s.audioOut > 4000 ? s : null; }",
                what="sound both ways (the entrance microphone in, the resident's out)",
            )
            assert sound["videoIn"] > 0

            await phone.click("#open")  # 4. Open door: the relay energises
            await installer.wait_for_selector("[data-live=main] [data-state=on]", timeout=5000)
            state = proc.api("GET", "/api/v1/sim/state").json()
            assert state["door"]["relays"]["main"]["energised"] is True
            assert state["call"]["call"]["status"] == "connected"
    finally:
        assert proc.stop() == 0, proc.log()


@pytest.fixture
async def fresh(tmp_path: Path) -> AsyncIterator[Panel]:
    """A panel just installed: the board profile's wiring, nobody in the directory, the generated password."""
    data = config_dict()
    data["storage"] = {"dir": str(tmp_path / "state")}
    p = Panel(parse_config(data), Secrets(), simulate=True)
    p.config_path = write_config(tmp_path, data)
    await p.start()
    yield p
    await p.stop("test over")


async def test_an_installer_sets_up_a_fresh_panel_from_the_page_alone(fresh: Panel) -> None:
    assert fresh.api is not None
    base = f"http://127.0.0.1:{fresh.api.bound_port}"
    password = ApiAuth.for_panel(fresh).installer.initial_password()
    assert password is not None and fresh.config_path is not None
    file_before = fresh.config_path.read_text()
    async with chromium() as browser:
        page = await (await browser.new_context(viewport={"width": 1100, "height": 900})).new_page()
        await page.goto(base + "/installer")
        await page.fill("#password", password)
        await page.click("#signin-go")

        # Wiring: the pins as configured, live; the self-test pulses the relay through the door service.
        await page.wait_for_selector("#pins [data-header='11'] .pill[data-state=off]")
        assert "call button b303 (unit 303)" in (await page.text_content("#pins [data-header='11']") or "")
        assert "relay main" in (await page.text_content("#pins [data-header='37']") or "")
        await page.check("#selftest-pulse")
        await page.click("#selftest-go")
        await page.wait_for_selector("#selftest tr[data-check='relay main'][data-result=PASS]", timeout=10_000)
        assert await page.locator("#selftest tr[data-result=FAIL]").count() == 0

        # Bad input: named at its key, with what is allowed; nothing is sent.
        await page.click("[data-tab=door]")
        await page.fill("[data-input='door.relays[0].hold_s']", "999")
        await page.click("[data-save=door]")
        error = await page.text_content("[data-error-for='door.relays[0].hold_s']") or ""
        assert "door.relays[0].hold_s" in error and "0.5 to 60 seconds" in error, error
        await page.locator("[data-key='door.relays[0].mode']").scroll_into_view_if_needed()
        await page.evaluate("() => window.scrollBy(0, 120)")
        await shot(page, "installer-config.png")
        # Wrong on the panel's side: one bad key refuses the whole section, the good key with it.
        await page.fill("[data-input='door.relays[0].hold_s']", "4")
        await page.fill("[data-input='door.held_open_s']", "2")
        await page.click("[data-save=door]")
        await page.wait_for_selector("[data-status=door].bad")
        error = await page.text_content("[data-error-for='door.held_open_s']") or ""
        assert "door.held_open_s" in error and "3" in error, error
        assert fresh.config_path.read_text() == file_before and fresh.cfg.door.relays[0].hold_s == 2
        # Local-only keys are shown, read-only, with where to change them.
        pin = page.locator("[data-input='door.relays[0].pin']")
        assert await pin.is_disabled()
        assert str(fresh.config_path) in (await page.text_content("[data-key='door.relays[0].pin']") or "")

        # Buttons and units: a live key applies at once, a restart key is saved and marked.
        await page.click("[data-tab=buttons]")
        await page.fill("[data-input='buttons[0].unit.label']", "303 Silva")
        await page.fill("[data-input='buttons[0].debounce_ms']", "25")
        await page.click("[data-save=buttons]")
        await page.wait_for_selector("[data-key='buttons[0].debounce_ms'] [data-pending]")
        assert fresh.cfg.buttons[0].unit.label == "303 Silva" and fresh.cfg.buttons[0].debounce_ms == 20
        saved = load_config(fresh.config_path)
        assert (saved.buttons[0].unit.label, saved.buttons[0].debounce_ms) == ("303 Silva", 25)

        # The directory: the renamed unit, a resident added, their link opened on a phone.
        await page.wait_for_selector("[data-unit='303'] h3:has-text('303 Silva')")
        await page.fill("[data-add-input='303']", "Ana Silva")
        await page.click("[data-add='303']")
        await page.wait_for_selector("#directory-link:not([hidden])")
        url = await page.text_content("#directory-url") or ""
        assert url.startswith(base + "/resident#signin=")
        await until(page, "() => document.querySelector('#directory-qr').naturalWidth > 100", what="the QR code")
        await shot(page.locator("#directory-card"), "installer-directory.png")
        phone = await (await browser.new_context()).new_page()
        await phone.goto(url)
        await phone.wait_for_selector("#idle:not([hidden])")
        assert await phone.text_content("#who") == "Ana Silva (resident, unit 303)"
        await page.wait_for_selector("[data-resident] [data-session]", timeout=8000)  # who is signed in where
        assert "Chrome on Linux" in (await page.text_content("[data-resident] [data-session]") or "")
        # The page's events paged newest first: the self-test's pulse is on the first page.
        await eventually(
            lambda: page.evaluate("() => !!document.querySelector('#logs tr[data-type=\"door.locked\"]')"),
            what="the pulse in the event log",
        )
