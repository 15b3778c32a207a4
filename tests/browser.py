"""Headless Debian Chromium for the browser tests, launched one way everywhere."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
# Fake camera and microphone without a prompt; WebRTC to a peer on loopback (off by default); no
# background traffic to Google's hosts, which this machine's closed network refuses.
FLAGS = ["--allow-loopback-in-peer-connection", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
         "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
         "--autoplay-policy=no-user-gesture-required"]


def _require_chromium() -> None:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium (apt-get install chromium)")


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    _require_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()
