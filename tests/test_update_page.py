"""The installer page's firmware update card in headless Chromium against an in-process panel with updates on:
the agent's state is shown, a refused release says why, a signed one starts (the same POST /api/v1/update)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from panel.api.principals import ApiAuth
from panel.auth import Secrets
from panel.daemon import Panel
from panel.platform import parse_config

from .browser import chromium
from .support import config_dict
from .update_support import ReleaseServer, Vendor, corrupt_signature, make_release, release_server

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("releases")
    with release_server(base) as server:
        yield {"server": server, "vendor": Vendor.make(base / "keys"), "release": make_release(base, "2.0.0")}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def panel(tmp_path_factory: pytest.TempPathFactory, world: dict[str, Any]) -> AsyncIterator[Panel]:
    tmp = tmp_path_factory.mktemp("page")
    server: ReleaseServer = world["server"]
    data = config_dict(update={"root": str(tmp / "opt"), "keys_dir": str(world["vendor"].keys_dir),
                               "ca_file": str(server.ca)})
    data["storage"] = {"dir": str(tmp / "state")}
    data["api"] = {"listen": "127.0.0.1:0"}
    p = Panel(parse_config(data), Secrets(), simulate=True)
    await p.start()
    yield p
    await p.stop("test over")


async def test_the_installer_page_shows_the_update_state_and_starts_a_signed_update(
        panel: Panel, world: dict[str, Any]) -> None:
    password = ApiAuth.for_panel(panel).installer.initial_password()
    assert password is not None and panel.api is not None
    fields = world["release"].command(world["server"], world["vendor"].key)
    async with chromium() as browser:
        page = await (await browser.new_context()).new_page()
        await page.goto(f"http://127.0.0.1:{panel.api.bound_port}/installer")
        await page.fill("#password", password)
        await page.click("#signin-go")
        await page.wait_for_selector("#update-state tr")
        state = await page.text_content("#update-state") or ""
        assert "idle" in state and "(slot factory)" in state and "a: empty" in state

        await page.fill("#update-release", json.dumps({**fields, "signature": corrupt_signature(fields["signature"])}))
        await page.click("#update-go")
        await page.wait_for_selector("#update-status.bad")
        assert "update_bad_signature" in (await page.text_content("#update-status") or "")

        await page.fill("#update-release", "not json")
        await page.click("#update-go")
        await page.wait_for_selector("#update-status.bad >> text=Not JSON")

        await page.fill("#update-release", json.dumps(fields))
        await page.click("#update-go")
        await page.wait_for_selector("#update-status.ok")
        assert "update to 2.0.0 started" in (await page.text_content("#update-status") or "")
        assert "2.0.0" in (await page.text_content("#update-state") or "")  # downloading it, or on trial already
    agent = panel.updates
    assert agent is not None and agent._task is not None
    await agent._task
    assert agent.status()["trial"]["version"] == "2.0.0"
