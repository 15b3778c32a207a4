"""QR codes at the camera: the synthetic camera shows a QR image, the real capture path carries it, zxing
reads it from the shared capture only while someone is at the panel, and the code opens the door."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from panel.access import QR_PREFIX, qr_picture
from panel.daemon import Panel
from panel.media.sources import SyntheticVideoSource

from .access_support import KEYPAD
from .eventually import eventually
from .media_rig import media_config, media_of, start_panel_inprocess

pytest.importorskip("zxingcpp")


@pytest.fixture(autouse=True)
def nothing_held_up() -> Iterator[None]:
    SyntheticVideoSource.hold_up(None)
    yield
    SyntheticVideoSource.hold_up(None)


@pytest.fixture
async def panel(tmp_path: Path) -> AsyncIterator[Panel]:
    p = await start_panel_inprocess(tmp_path, media_config(video={"width": 640, "height": 480, "fps": 15}),
                                    access={"qr": True, "qr_window_s": 2, "keypad": KEYPAD})
    yield p
    await p.stop("test over")




def relay_on(panel: Panel) -> bool:
    return bool(panel.hw.relays["main"].value)


def events(panel: Panel, type_: str) -> list[dict[str, Any]]:
    import json

    rows = panel.store.read_sync(lambda c: c.execute("SELECT data FROM events WHERE type=? ORDER BY seq",
                                                     (type_,)).fetchall())
    return [json.loads(r[0]) for r in rows]


async def test_a_qr_code_shown_after_a_press_opens_the_door(panel: Panel) -> None:
    assert panel.access is not None and panel.qr is not None
    _cred, code = await panel.access.create_code(owner="alice", by="alice", label="guest Maria", max_uses=1)
    capture = media_of(panel).hub.video.capture  # type: ignore[union-attr]
    SyntheticVideoSource.hold_up(qr_picture(QR_PREFIX + code))
    assert not panel.qr.scanning and capture.status()["holders"] == 0, "nobody at the panel: no scanning"
    panel.on_button("b303")  # a visitor presses: look for a QR for qr_window_s
    assert panel.qr.scanning and capture.status()["holders"] == 1
    await eventually(lambda: relay_on(panel), 5, "the QR code never opened the door")
    await eventually(lambda: bool(events(panel, "access.granted")), 5, "no access.granted")
    [granted] = events(panel, "access.granted")
    assert (granted["method"], granted["owner"], granted["label"], granted["source"]) == \
        ("qr", "alice", "guest Maria", "camera")
    assert panel.qr.frames >= 1
    # The window closes by itself and the camera is let go (linger_s is 0 in these tests).
    await eventually(lambda: not panel.qr.scanning, 5, "the scanner never stopped")  # type: ignore[union-attr]
    assert capture.status()["holders"] == 0
    assert len(events(panel, "access.granted")) == 1, "one QR held up for seconds is one use"


async def test_the_scanner_shares_the_one_capture_with_a_viewer(panel: Panel) -> None:
    assert panel.access is not None and panel.qr is not None
    video = media_of(panel).hub.video
    assert video is not None
    viewer = video.capture.subscribe()  # someone watching (snapshot, MJPEG, a call) holds the camera
    first_source = None
    try:
        await eventually(lambda: video.capture.source is not None and video.capture.items > 0, 5, "no pictures")
        first_source = video.capture.source
        _, code = await panel.access.create_code(owner="bob", by="bob", label="cleaner")
        SyntheticVideoSource.hold_up(qr_picture(QR_PREFIX + code))
        panel.someone_at_panel()
        await eventually(lambda: relay_on(panel), 5, "the QR code never opened the door")
        assert video.capture.source is first_source, "the scanner opened the camera a second time"
        assert video.capture.status()["holders"] == 2
    finally:
        viewer.close()


async def test_a_pin_or_a_foreign_qr_at_the_camera_opens_nothing(panel: Panel) -> None:
    assert panel.access is not None and panel.qr is not None
    await panel.access.set_pin(owner="alice", pin="864209", by="alice")
    SyntheticVideoSource.hold_up(qr_picture(QR_PREFIX + "864209"))
    panel.on_button("b303")
    await eventually(lambda: bool(events(panel, "access.denied")), 5, "the PIN as a QR was not refused")
    [denied] = events(panel, "access.denied")
    assert (denied["method"], denied["reason"]) == ("qr", "unknown_credential")
    SyntheticVideoSource.hold_up(qr_picture("https://example.com/not-a-door-code"))
    frames = panel.qr.frames
    await eventually(lambda: panel.qr.frames > frames + 3, 5, "the scanner stopped reading")  # type: ignore[union-attr]
    assert len(events(panel, "access.denied")) == 1 and not relay_on(panel)


async def test_the_sim_route_holds_a_code_up_to_the_camera(panel: Panel) -> None:
    from .media_rig import api

    assert panel.access is not None
    _, code = await panel.access.create_code(owner="carol", by="carol", label="party")
    async with api(panel) as c:
        r = await c.post("/api/v1/sim/camera/qr", json={"payload": QR_PREFIX + code})
        assert r.status_code == 200, r.text
        r = await c.post("/api/v1/sim/keypad", json={"keys": "*"})  # a keypad touch: someone is here
        assert r.status_code == 200, r.text
        await eventually(lambda: relay_on(panel), 5, "the QR code never opened the door")
        r = await c.post("/api/v1/sim/camera/qr", json={"payload": None})
        assert r.status_code == 200 and SyntheticVideoSource.held is None


def write_qr_h264(path: Path, payload: str, frames: int = 45, gop: int = 15) -> None:
    """An Annex-B H.264 file of the test pattern with a QR code held up, as a Pi camera would deliver it."""
    import av

    from panel.media.pattern import PatternPainter

    painter = PatternPainter(640, 480)
    picture = qr_picture(payload)
    with av.open(str(path), "w", format="h264") as out:
        stream = out.add_stream("libx264", rate=15)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline", "g": str(gop),
                          "keyint_min": str(gop)}
        for i in range(frames):
            frame = painter.paint(i, 1_700_000_000 + i / 15, picture)
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


async def test_a_pass_through_h264_camera_is_decoded_for_qr_codes_only_while_scanning(tmp_path: Path) -> None:
    clip = tmp_path / "camera.h264"
    write_qr_h264(clip, QR_PREFIX + "480913")
    panel = await start_panel_inprocess(tmp_path, media_config(video={"source": "h264_file", "file": str(clip)}),
                                        access={"qr": True, "qr_window_s": 3})
    try:
        assert panel.access is not None and panel.qr is not None
        video = media_of(panel).hub.video
        assert video is not None and video.passthrough
        await panel.access.create_code(owner="dave", by="installer", label="printed QR", code="480913")
        assert video.capture.status()["holders"] == 0
        panel.someone_at_panel()
        await eventually(lambda: relay_on(panel), 10, "the QR code in the H.264 stream never opened the door")
        [granted] = events(panel, "access.granted")
        assert (granted["method"], granted["owner"], granted["source"]) == ("qr", "dave", "camera")
        await eventually(lambda: not panel.qr.scanning, 10, "the scanner never stopped")  # type: ignore[union-attr]
        assert video.capture.status()["holders"] == 0, "the camera is let go after the window"
    finally:
        await panel.stop("test over")
