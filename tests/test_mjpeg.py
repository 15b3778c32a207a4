"""The MJPEG live stream over real HTTP: multipart JPEG parts that decode, one encode per picture for
every viewer, the frame-rate cap, credentials, a slow client skipping pictures instead of queueing
them, and cleanup when clients leave or their call ends."""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from panel.daemon import Panel
from panel.media.mjpeg import BOUNDARY, MjpegStreamer
from panel.media.pattern import read_frame_stamp

from .browser import chromium
from .eventually import eventually
from .media_rig import (
    INSTALLER,
    api,
    media_config,
    media_of,
    ring,
    start_panel_inprocess,
)
from .test_snapshots import decode_jpeg, visitor_of

INSTALLER_AUTH = {"Authorization": f"Bearer {INSTALLER}"}


class Parts:
    """Splits a multipart/x-mixed-replace body into its JPEGs as bytes arrive."""

    def __init__(self) -> None:
        self.buf = b""
        self.jpegs: list[bytes] = []

    def feed(self, chunk: bytes) -> None:
        self.buf += chunk
        while True:
            start = self.buf.find(f"--{BOUNDARY}\r\n".encode())
            if start < 0:
                return
            head_end = self.buf.find(b"\r\n\r\n", start)
            if head_end < 0:
                return
            headers = dict(line.split(": ", 1) for line in self.buf[start:head_end].decode().split("\r\n")[1:])
            assert headers["Content-Type"] == "image/jpeg"
            length = int(headers["Content-Length"])
            body_start = head_end + 4
            if len(self.buf) < body_start + length + 2:
                return
            self.jpegs.append(self.buf[body_start:body_start + length])
            assert self.buf[body_start + length:body_start + length + 2] == b"\r\n"
            self.buf = self.buf[body_start + length + 2:]


async def read_parts(client: httpx.AsyncClient, n: int, **kw: object) -> list[bytes]:
    parts = Parts()
    async with client.stream("GET", "/api/v1/video.mjpeg", **kw) as r:  # type: ignore[arg-type]
        assert r.status_code == 200, await r.aread()
        assert r.headers["content-type"] == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
        async for chunk in r.aiter_raw():
            parts.feed(chunk)
            if len(parts.jpegs) >= n:
                break
    return parts.jpegs[:n]


def counter(jpeg: bytes) -> int:
    frame = decode_jpeg(jpeg)
    assert (frame.width, frame.height) == (320, 240)
    stamp = read_frame_stamp(frame)
    assert stamp is not None
    return stamp.counter


def streamer(panel: Panel) -> MjpegStreamer:
    s = visitor_of(panel).mjpeg
    assert s is not None
    return s


@pytest.fixture
async def panel(tmp_path: Path) -> AsyncIterator[Panel]:
    p = await start_panel_inprocess(tmp_path, media_config(mjpeg={"max_fps": 30, "max_viewers": 3}))
    yield p
    await p.stop("test over")


async def test_two_viewers_get_the_same_encoded_pictures(panel: Panel) -> None:
    visitor = visitor_of(panel)
    assert visitor.jpegs is not None
    encodes_before = visitor.jpegs.encodes
    async with api(panel) as client:
        a, b = await asyncio.gather(read_parts(client, 12, headers=INSTALLER_AUTH),
                                    read_parts(client, 12, auth=httpx.BasicAuth("installer", INSTALLER)))
    encodes = visitor.jpegs.encodes - encodes_before
    by_counter_a = {counter(j): j for j in a}
    by_counter_b = {counter(j): j for j in b}
    for pictures in (by_counter_a, by_counter_b):
        assert len(pictures) == 12 and all(np.diff(sorted(pictures)) > 0)
    common = set(by_counter_a) & set(by_counter_b)
    assert len(common) >= 8, "both viewers watch the same stream at the same time"
    assert all(by_counter_a[c] == by_counter_b[c] for c in common), "one encode, the same bytes for both"
    assert encodes <= len(set(by_counter_a) | set(by_counter_b)) + 2, \
        f"{encodes} encodes for {len(a) + len(b)} parts to two viewers: each picture must be encoded once"
    await eventually(lambda: not streamer(panel).viewers, what="viewers removed after the clients left")
    await eventually(lambda: not media_of(panel).hub.video.capture.running, what="camera released")  # type: ignore[union-attr]


async def test_frame_rate_is_capped(tmp_path: Path) -> None:
    panel = await start_panel_inprocess(tmp_path, media_config(mjpeg={"max_fps": 5}))
    try:
        async with api(panel) as client:
            jpegs = await read_parts(client, 6, headers=INSTALLER_AUTH)
        gaps = np.diff([counter(j) for j in jpegs])
        # a 15 fps camera capped at 5 fps: every third picture (a stalled camera may skip one more)
        assert 3 <= np.median(gaps) <= 4 and gaps.min() >= 2, gaps
    finally:
        await panel.stop("test over")


async def test_credentials_are_required_and_a_call_credential_ends_with_its_call(panel: Panel) -> None:
    media = media_of(panel)
    async with api(panel) as client:
        r = await client.get("/api/v1/video.mjpeg")
        assert r.status_code == 401 and 'Basic realm="panel camera"' in r.headers["www-authenticate"]
        assert r.json()["code"] == "unauthenticated"
        r = await client.get("/api/v1/video.mjpeg", auth=httpx.BasicAuth("alice", "wrong"))
        assert r.status_code == 401 and r.json()["code"] == "invalid_token"
        r = await client.get("/api/v1/video.mjpeg", headers={"Authorization": "Digest x"})
        assert r.status_code == 401
        assert not streamer(panel).viewers and not media.hub.video.capture.running  # type: ignore[union-attr]

        guid = await ring(panel)
        token = media.issue_call_token(guid, "alice")
        parts = Parts()
        async with client.stream("GET", "/api/v1/video.mjpeg", auth=httpx.BasicAuth("alice", token)) as stream:
            assert stream.status_code == 200
            ended = hung_up = False
            async for chunk in stream.aiter_raw():
                parts.feed(chunk)
                if len(parts.jpegs) >= 3 and not hung_up:
                    hung_up = True
                    await panel.calls.end(guid, "alice")  # the call ends: its credential stops showing the camera
                if chunk.endswith(f"--{BOUNDARY}--\r\n".encode()):
                    ended = True
        assert ended and len(parts.jpegs) >= 3
        # the call's end revokes its credentials (media service) and ends its viewers: whichever is first
        assert streamer(panel).ended[-1] in (("alice", "call_ended"), ("alice", "revoked"))
        r = await client.get("/api/v1/video.mjpeg", auth=httpx.BasicAuth("alice", token))
        assert r.status_code == 401 and r.json()["code"] == "token_revoked"


async def test_live_view_follows_media_monitor(tmp_path: Path) -> None:
    panel = await start_panel_inprocess(tmp_path, media_config(monitor=False))
    try:
        media = media_of(panel)
        async with api(panel) as client:
            r = await client.get("/api/v1/video.mjpeg", headers={"Authorization": f"Bearer {media.issue_monitor_token('bob')}"})
            assert r.status_code == 403 and r.json()["code"] == "monitor_disabled"
            assert len(await read_parts(client, 1, headers=INSTALLER_AUTH)) == 1, "the installer may always look"
    finally:
        await panel.stop("test over")


async def test_slow_client_skips_pictures_without_holding_up_the_others(panel: Panel) -> None:
    """The slow client is driven through the ASGI interface directly: its ``send`` takes 0.3 s per
    picture, as on a slow link (loopback TCP would buffer megabytes before pushing back)."""
    s = streamer(panel)
    slow = s.add_viewer("slow-token", None, "slow")
    gone = asyncio.Event()
    bodies: list[bytes] = []

    async def receive() -> dict[str, object]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.body":
            bodies.append(message["body"])  # type: ignore[arg-type]
            await asyncio.sleep(0.3)  # the stimulus: a slow client

    response = asyncio.ensure_future(s.response(slow)({"type": "http"}, receive, send))
    async with api(panel) as client:
        fast = await read_parts(client, 30, headers=INSTALLER_AUTH)
    steps = np.diff([counter(j) for j in fast])
    assert len(fast) == 30 and (steps > 0).all() and (steps == 1).mean() >= 0.8, \
        f"the fast viewer gets (almost) every picture: {steps}"
    assert slow.dropped >= 10, f"the slow client skipped pictures it was not ready for ({slow.dropped})"
    assert slow.sent <= 10 and slow.sent <= len(bodies) <= slow.sent + 1
    waiting = [slow._slot] if slow._slot is not None else []
    assert len(waiting) <= 1, "at most one picture waits for a slow client"
    sent_counters = [counter(b[b.index(b"\r\n\r\n") + 4:-2]) for b in bodies]
    assert all(np.diff(sent_counters) > 1), f"what it got is the newest picture each time: {sent_counters}"
    gone.set()
    await asyncio.wait_for(response, 5)
    assert slow not in s.viewers and ("slow", "client_gone") in s.ended


async def test_a_vanished_client_is_cleaned_up(panel: Panel) -> None:
    s = streamer(panel)
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", panel.api.bound_port))  # type: ignore[union-attr]
    auth = base64.b64encode(f"me:{INSTALLER}".encode()).decode()
    await loop.sock_sendall(sock, f"GET /api/v1/video.mjpeg HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\n\r\n"
                            .encode())
    assert b"200 OK" in await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
    await eventually(lambda: len(s.viewers) == 1 and s.viewers[0].sent >= 2, what="pictures flowing")
    sock.close()  # no goodbye
    await eventually(lambda: not s.viewers, what="the vanished client's viewer removed")
    assert s.ended[-1][1] == "client_gone"
    await eventually(lambda: not media_of(panel).hub.video.capture.running, what="camera released")  # type: ignore[union-attr]
    assert s._task is None, "the producer stops with the last viewer"


async def test_too_many_viewers_are_refused_with_a_reason(tmp_path: Path) -> None:
    panel = await start_panel_inprocess(tmp_path, media_config(mjpeg={"max_viewers": 1}))
    try:
        async with api(panel) as client:
            async with client.stream("GET", "/api/v1/video.mjpeg", headers=INSTALLER_AUTH) as first:
                assert first.status_code == 200
                second = await client.get("/api/v1/video.mjpeg", headers=INSTALLER_AUTH)
                assert second.status_code == 503 and second.json()["code"] == "too_many_viewers"
                assert "media.mjpeg.max_viewers" in second.json()["message"]
    finally:
        await panel.stop("test over")


@pytest.mark.browser
async def test_a_web_view_with_http_authentication_shows_the_stream(panel: Panel) -> None:
    """Headless Chromium as the resident's web view: given the URL and a user name and password (the
    call's credential), it answers the Basic challenge itself and keeps showing the stream."""
    media = media_of(panel)
    guid = await ring(panel)
    token = media.issue_call_token(guid, "alice")
    url = f"http://127.0.0.1:{panel.api.bound_port}/api/v1/video.mjpeg"  # type: ignore[union-attr]
    s = streamer(panel)
    async with chromium() as browser:
        context = await browser.new_context(http_credentials={"username": "alice", "password": token})
        page = await context.new_page()
        await page.goto(url, wait_until="commit")
        size = await eventually(lambda: page.evaluate("() => document.images.length && document.images[0].naturalWidth"
                                                      " ? [document.images[0].naturalWidth, "
                                                      "document.images[0].naturalHeight] : null"), 5,
                                "a picture in the browser", interval=0.05)
        assert size == [320, 240], f"the browser shows the JPEG pictures: {size}"
        await eventually(lambda: s.viewers and s.viewers[0].sent >= 8, what="the browser keeps taking pictures")
        assert s.viewers[0].who == "alice"
        first = await page.screenshot()

        async def moved() -> bool:
            return await page.screenshot() != first

        await eventually(moved, 5, "the picture moving", interval=0.1)
        denied = await (await browser.new_context()).new_page()
        statuses: list[int] = []
        denied.on("response", lambda r: statuses.append(r.status))
        with pytest.raises(Exception, match="ERR_INVALID_AUTH_CREDENTIALS"):
            await denied.goto(url, wait_until="commit")  # challenged, and it has nothing to answer with
        assert statuses == [401]
    await eventually(lambda: not s.viewers, what="the browser's viewers removed")
