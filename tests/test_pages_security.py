"""The WHEP player page and the API docs page in headless Chromium (issue 9, item 3): both load and talk to
the panel's own origin only, under the pages' Content-Security-Policy. The player refuses an ``endpoint``
on another origin and never sends the credential there (a second HTTP server on 127.0.0.1 records every
request it gets), takes no credential from its URL, and the CSP stops a request to another origin even
if a script tried. The docs page is the panel's own copy of Swagger UI, with no CDN.

A panel core without media serves the pages (the player reaches WHEP, which answers 503 without media:
enough to see where the credential went; tests/test_media_browser.py plays video through it)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import pytest_asyncio

from .api_support import STATIC_TOKEN, api_rig, served
from .browser import chromium
from .eventually import eventually
from .rig import Rig

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.browser]


class Recorder:
    """An HTTP server on 127.0.0.1 that answers everything and remembers every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                recorder.requests.append((self.command, self.path, dict(self.headers)))
                self.send_response(201)
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Access-Control-Allow-Headers", "Authorization, Content-Type")
                self.send_header("Location", "/whep/1")
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_DELETE = do_OPTIONS = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def base(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    rig: Rig = api_rig(tmp_path_factory.mktemp("pages-security"))
    async with served(rig) as client:
        yield str(client.base_url).rstrip("/")
    await rig.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    async with chromium() as b:
        yield b


async def open_page(browser: Any, url: str) -> tuple[Any, list[str], list[str]]:
    """The page, every URL it requested, and every console message (CSP violations are reported there)."""
    page = await browser.new_page()
    requested: list[str] = []
    console: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.on("console", lambda m: console.append(m.text))
    response = await page.goto(url)
    assert response is not None and response.status == 200
    csp = response.headers.get("content-security-policy", "")
    assert "connect-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp, csp
    return page, requested, console


async def test_the_player_refuses_a_foreign_endpoint_and_sends_the_credential_nowhere_else(
    browser: Any, base: str, recorder: Recorder
) -> None:
    before = len(recorder.requests)
    page, requested, _ = await open_page(
        browser, f"{base}/api/v1/media/player?endpoint={recorder.url}/whep&token={STATIC_TOKEN}"
    )
    assert await page.input_value("#token") == "", "the page took a credential from its URL"
    await page.fill("#token", STATIC_TOKEN)
    await page.click("#start")
    await eventually(lambda: page.evaluate("() => window.player.error"), 5, "the player's refusal")
    assert "refused: the endpoint is not on this panel" in await page.evaluate("() => window.player.error")
    # Even a script that tried could not reach another origin: the CSP blocks it in the browser.
    blocked = await page.evaluate(
        """async (url) => {
        try { await fetch(url, {method: "POST", headers: {Authorization: "Bearer x-credential"}}); return false; }
        catch (e) { return true; } }""",
        f"{recorder.url}/csp",
    )
    assert blocked, "a fetch to another origin was allowed"
    assert recorder.requests[before:] == [], "the foreign server was contacted"
    assert [u for u in requested if not u.startswith(base)] == []  # (a request the CSP blocks is not even made)
    await page.close()


async def test_the_player_sends_the_typed_credential_to_its_own_whep_endpoint(browser: Any, base: str) -> None:
    page, _, _ = await open_page(browser, f"{base}/api/v1/media/player")
    sent: list[tuple[str, str | None]] = []
    page.on("request", lambda r: sent.append((r.url, r.headers.get("authorization"))))
    await page.fill("#token", STATIC_TOKEN)
    await page.click("#start")
    # No media on this panel: WHEP answers 503, which is enough to see where the credential went.
    await eventually(lambda: page.evaluate("() => window.player.error"), 5, "WHEP's answer")
    assert "503" in await page.evaluate("() => window.player.error")
    assert sent == [(f"{base}/api/v1/media/whep", f"Bearer {STATIC_TOKEN}")], sent
    await page.close()


async def test_the_api_docs_load_only_from_the_panel(browser: Any, base: str) -> None:
    async with httpx.AsyncClient() as c:
        html = (await c.get(f"{base}/api/v1/docs")).text
    assert "http://" not in html and "https://" not in html and "<script>" not in html, html
    page, requested, console = await open_page(browser, f"{base}/api/v1/docs")
    await page.wait_for_selector(".swagger-ui .info .title", timeout=15_000)
    assert "Door-station panel API" in await page.inner_text(".swagger-ui .info .title")
    await page.wait_for_selector(".opblock-summary-path", timeout=15_000)  # the operations rendered
    assert requested and all(u.startswith(base) for u in requested), requested
    assert f"{base}/api/v1/openapi.json" in requested
    assert not [m for m in console if "Content Security Policy" in m], console
    await page.close()
