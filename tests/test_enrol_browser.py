"""Enrolment from the installer page in headless Chromium: the page shows a fresh panel's code, the
tests' backend redeems what the installer read off it (first mistyped: the page says so and what to do),
the panel enrols with its own key, connects to a real Mosquitto with the issued certificate, and the page
shows it connected. Screenshots go to test-artifacts/; PANEL_SCREENSHOTS=docs refreshes docs/img/."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from panel.api.principals import ApiAuth
from panel.enrol import normalise

from .browser import chromium
from .enrol_support import enrol_config, start_panel
from .est_server import EstServer
from .eventually import eventually
from .mosquitto import Broker, Client
from .support import ROOT

pytestmark = [pytest.mark.asyncio, pytest.mark.browser]


async def shot(page: Any, name: str) -> None:
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    await page.screenshot(path=str(ROOT / "test-artifacts" / name), full_page=True)
    if os.environ.get("PANEL_SCREENSHOTS") == "docs":
        await page.locator("#enrol-card").screenshot(path=str(ROOT / "docs" / "img" / name))


async def test_installer_enrols_a_fresh_panel_from_the_page_to_an_mqtt_connection(tmp_path: Path) -> None:
    with Broker(tmp_path / "broker", enrol=True) as broker:
        est = EstServer(broker, tmp_path / "est")
        panel = await start_panel(tmp_path, enrol_config(tmp_path, est, "lobby-7", retry_s=0.2))
        try:
            assert panel.api is not None
            password = ApiAuth.for_panel(panel).installer.initial_password()
            assert password is not None
            async with chromium() as browser:
                ctx = await browser.new_context(viewport={"width": 1000, "height": 900})
                page = await ctx.new_page()
                await page.goto(f"http://127.0.0.1:{panel.api.bound_port}/installer")
                await page.fill("#password", password)
                await page.click("#signin-go")

                # The page shows the code: the QR image, the panel id and the short code, and that it waits.
                await page.wait_for_selector("#enrol-code-box:not([hidden]) #enrol-qr[src^='data:image/svg+xml']")
                panel_id = await page.text_content("#enrol-panel")
                typed = await page.text_content("#enrol-code")
                assert panel_id == "lobby-7" and typed is not None and len(typed) == 19
                await page.wait_for_selector("#enrol-status.warn >> text=has not redeemed this enrolment code")
                await page.wait_for_selector("#enrol-state.off >> text=not enrolled")
                await shot(page, "enrolment.png")

                # The installer mistypes it in the backend account: the page names it and says what to do.
                est.redeem(panel_id, typed[:-1] + ("0" if typed[-1] != "0" else "1"))
                await page.wait_for_selector("#enrol-status.bad >> text=redeem the code shown here again")
                assert panel.enrol is not None and panel.enrol.identity is None and panel.mqtt is None

                # Redeemed as read off the page: the panel enrols and the page shows it connected.
                async with Client(broker, subscribe=("panels/lobby-7/status",)) as backend:
                    est.redeem(panel_id, normalise(typed))
                    await page.wait_for_selector("#enrol-state.on >> text=enrolled, connected", timeout=15_000)
                    await backend.wait_for(lambda m: bytes(m.payload) == b"online", 5)
                await page.wait_for_selector("#enrol-status.ok")
                await page.wait_for_selector("#enrol-code-box[hidden]", state="attached")
                assert panel.mqtt is not None and panel.mqtt.connected
                ident = panel.enrol.identity
                assert ident is not None and panel.mqtt.m.cert_file == ident.cert_file
                assert ident.serial in (await page.text_content("#enrol-info") or "")
                await eventually(lambda: "as lobby-7 (p5" in broker.log(), 5, "the broker's log names the CN")
                await shot(page, "enrolment-done.png")
                await ctx.close()
        finally:
            await panel.stop("test over")
            est.close()
