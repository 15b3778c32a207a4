"""A resident makes a courier code on the resident page in headless Chromium, and the courier types it on
the panel's keypad (the simulated matrix, scanned in real time): the door opens, once."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from panel.api.principals import ApiAuth
from panel.auth import Secrets
from panel.daemon import Panel
from panel.platform import parse_config

from .access_support import KEYPAD
from .browser import chromium
from .eventually import eventually
from .media_rig import INSTALLER
from .support import config_dict

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture
async def panel(tmp_path: Path) -> AsyncIterator[Panel]:
    data = config_dict(access={"keypad": KEYPAD})
    data["storage"] = {"dir": str(tmp_path / "state")}
    data["api"] = {"listen": "127.0.0.1:0"}
    p = Panel(parse_config(data), Secrets(installer_token=INSTALLER), simulate=True)
    await p.start()
    yield p
    await p.stop("test over")


def base(panel: Panel) -> str:
    assert panel.api is not None
    return f"http://127.0.0.1:{panel.api.bound_port}"


async def wait_for(page: Any, js: str, what: str, timeout: float = 10.0) -> None:
    """The page's own state, polled with the one eventually()."""
    await eventually(lambda: page.evaluate(js), timeout=timeout, what=what)


async def test_resident_makes_a_courier_code_and_the_courier_uses_it(panel: Panel) -> None:
    secret, _ = await ApiAuth.for_panel(panel).tokens.issue(kind="token", role="resident", subject="alice",
                                                            name="Alice", issued_by="test", ttl_s=3600, unit_id="303")
    async with chromium() as browser:
        ctx = await browser.new_context(viewport={"width": 900, "height": 1100})
        page = await ctx.new_page()
        await page.goto(base(panel) + "/resident")
        await page.fill("#secret", secret)
        await page.click("#signin-go")
        await page.wait_for_selector("#access-card:not([hidden])")

        # A code too short is refused with its reason, and nothing is made.
        await page.fill("#pin", "12")
        await page.click("#pin-set")
        await page.wait_for_selector("#access-status.bad")
        assert "code_too_short" in (await page.text_content("#access-status") or "")

        await page.fill("#code-label", "DHL Tuesday")
        await page.fill("#code-uses", "1")
        await page.click("#code-make")
        await page.wait_for_selector("#code-made:not([hidden])")
        code = (await page.text_content("#code-value") or "").strip()
        assert code.isdigit() and len(code) == panel.cfg.access.code_length
        assert await page.evaluate("() => document.querySelector('#code-qr').naturalWidth > 0")
        await page.wait_for_selector("#credentials tr:has-text('DHL Tuesday')")
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "resident-courier-code.png"), full_page=True)

        # The courier, at the door, types the code and # on the keypad.
        async with httpx.AsyncClient(base_url=base(panel), timeout=20) as c:
            r = await c.post("/api/v1/sim/keypad", json={"keys": code + "#"})
            assert r.status_code == 200, r.text
            assert "access.granted" in [e["type"] for e in r.json()["events"]]
            assert bool(panel.hw.relays["main"].value)
            log = (await c.get("/api/v1/logs/access", headers={"Authorization": f"Bearer {INSTALLER}"})).json()
            entry = log["entries"][0]
            assert (entry["method"], entry["actor"], entry["label"]) == ("code", "alice", "DHL Tuesday")
            panel.door.release()
            # Used once: the second try is refused.
            r = await c.post("/api/v1/sim/keypad", json={"keys": code + "#"})
            assert "access.denied" in [e["type"] for e in r.json()["events"]]
            assert not bool(panel.hw.relays["main"].value)

        await page.evaluate("() => window.access.refresh()")
        await wait_for(page, "() => { const c = document.querySelector(\"#credentials tr .uses-left\"); "
                       "return c && c.textContent === '0'; }", "the page to show the code used up")
        await page.click("#credentials tr:has-text('DHL Tuesday') button")
        await page.wait_for_selector("#access-status.ok")
        await wait_for(page, "() => document.querySelectorAll('#credentials tr').length === 0", "the list empty")
        assert panel.access is not None and panel.access.creds.live(owner="alice") == []

        # The installer page's on-screen keypad (simulation) types alice's new PIN on the matrix.
        await panel.access.set_pin(owner="alice", pin="5793", by="installer")
        panel.door.release()
        page2 = await ctx.new_page()
        await page2.goto(base(panel) + "/installer")
        await page2.fill("#password", ApiAuth.for_panel(panel).installer.initial_password() or "")
        await page2.click("#signin-go")
        await page2.wait_for_selector("#simpad:not([hidden]) button[data-key='5']")
        for key in "5793#":
            await page2.click(f"#simpad button[data-key='{key}']")
        deadline = time.monotonic() + 5
        while not bool(panel.hw.relays["main"].value):
            assert time.monotonic() < deadline, "the on-screen keypad's PIN did not open the door"
            await page2.wait_for_timeout(20)
        await ctx.close()


def test_panel_sim_keypad_and_qr_from_the_command_line(tmp_path: Path) -> None:
    """`panel sim keypad "1234#"` against `panel run --simulate`: the keys go through the mock matrix."""
    import subprocess
    import sys

    from .support import BASE_CONFIG, start_panel

    secrets = tmp_path / "secrets.toml"
    secrets.write_text(f'installer_token = "{INSTALLER}"\n')
    secrets.chmod(0o600)
    cfg = {**BASE_CONFIG, "access": {"keypad": KEYPAD}, "secrets": {"file": str(secrets)}}
    panel = start_panel(tmp_path, cfg)
    try:
        r = panel.api("POST", "/api/v1/access/pin", headers={"Authorization": f"Bearer {INSTALLER}"},
                      json={"owner": "alice", "pin": "2468"})
        assert r.status_code == 200, r.text
        cli = subprocess.run([sys.executable, "-m", "panel", "sim", "keypad", "2468#", "--url", panel.url],
                             capture_output=True, text=True, timeout=30)
        assert cli.returncode == 0, cli.stdout + cli.stderr
        assert "access.granted" in cli.stdout and "door.unlocked" in cli.stdout
        state = panel.api("GET", "/api/v1/sim/state").json()
        assert state["door"]["relays"]["main"]["energised"] and state["access"]["keypad"] is True
        cli = subprocess.run([sys.executable, "-m", "panel", "sim", "qr", "panel-access:123456", "--url", panel.url],
                             capture_output=True, text=True, timeout=30)
        assert cli.returncode == 0, cli.stdout + cli.stderr
    finally:
        assert panel.stop() == 0


async def test_installer_learns_a_residents_card_at_the_reader_on_the_installer_page(tmp_path: Path) -> None:
    """The installer page's "Learn a card": the card held to a real OSDP reader (libosdp PD on a pty,
    secure channel) is enrolled for the resident named, and then opens the door."""
    pytest.importorskip("osdp")
    from .access_support import ADDRESS, SCBK, PtyReader

    reader = PtyReader()
    data = config_dict(access={"osdp": {"device": reader.device, "address": ADDRESS}})
    data["storage"] = {"dir": str(tmp_path / "state")}
    data["api"] = {"listen": "127.0.0.1:0"}
    panel = Panel(parse_config(data), Secrets(installer_token=INSTALLER, osdp_scbk=SCBK), simulate=True)
    await panel.start()
    try:
        async with chromium() as browser:
            ctx = await browser.new_context(viewport={"width": 1000, "height": 1400})
            page = await ctx.new_page()
            await page.goto(base(panel) + "/installer")
            password = ApiAuth.for_panel(panel).installer.initial_password()
            assert password is not None
            await page.fill("#password", password)
            await page.click("#signin-go")
            await page.wait_for_selector("#creds-card")
            deadline = time.monotonic() + 10
            while not (panel.osdp is not None and panel.osdp.status()["secure_channel"]):
                assert time.monotonic() < deadline, "the reader's secure channel never came up"
                await page.wait_for_timeout(50)
            await page.fill("#learn-owner", "alice")
            await page.fill("#learn-label", "blue fob")
            await page.click("#learn-go")
            await wait_for(page, "() => window.creds.learning === true", "the page to start learning")
            assert panel.access is not None
            deadline = time.monotonic() + 5
            while panel.access._learning is None:
                assert time.monotonic() < deadline, "the panel never started learning"
                await page.wait_for_timeout(20)
            reader.present("04a22b91")
            await page.wait_for_selector("#creds tr:has-text('blue fob')")
            assert "learnt for alice" in (await page.text_content("#creds-status") or "")
            assert not bool(panel.hw.relays["main"].value), "a card being learnt does not open the door"
            reader.present("04a22b91")
            deadline = time.monotonic() + 5
            while not bool(panel.hw.relays["main"].value):
                assert time.monotonic() < deadline, "the learnt card did not open the door"
                await page.wait_for_timeout(20)
            await ctx.close()
    finally:
        await panel.stop("test over")
        reader.close()
