"""Snapshots: the picture at the press (stored, referenced, fetchable with credentials), on demand,
the pre-press buffer, retention, and a pass-through H.264 camera decoded only when a picture is wanted.
A whole simulated panel runs in-process (synthetic camera with a frame counter, real store and API)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest

from panel.daemon import Panel
from panel.media.pattern import PatternPainter, Stamp, read_frame_stamp
from panel.media.snapshots import SnapshotError, SnapshotFiles
from panel.media.visitor import VisitorMedia
from panel.platform import SnapshotsConfig

from .eventually import eventually
from .media_rig import (
    INSTALLER,
    api,
    media_config,
    media_of,
    ring,
    start_panel_inprocess,
)

INSTALLER_AUTH = {"Authorization": f"Bearer {INSTALLER}"}


def with_snapshots(**snapshots: Any) -> dict[str, Any]:
    """The shared media rig with pictures at the press on (it turns them off for the session tests)."""
    overrides: dict[str, Any] = {key: value for key, value in snapshots.items() if key in ("video", "mjpeg")}
    overrides["snapshots"] = {"at_press": True, **{k: v for k, v in snapshots.items() if k not in overrides}}
    return media_config(**overrides)


def decode_jpeg(data: bytes) -> av.VideoFrame:
    """Decode with PyAV's own JPEG decoder: proves the bytes are a JPEG a decoder accepts."""
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9", "not a complete JPEG (SOI ... EOI)"
    frames = av.CodecContext.create("mjpeg", "r").decode(av.Packet(data))
    assert len(frames) == 1
    return frames[0]


def stamp_of(data: bytes) -> Stamp:
    stamp = read_frame_stamp(decode_jpeg(data))
    assert stamp is not None, "the test pattern's frame counter is not readable in the JPEG"
    return stamp


def visitor_of(panel: Panel) -> VisitorMedia:
    assert panel.visitor is not None, "snapshots/MJPEG/tones did not start; see the log"
    return panel.visitor  # type: ignore[no-any-return]


def events(panel: Panel, type_: str) -> list[dict[str, Any]]:
    rows = panel.store.read_sync(lambda c: c.execute(
        "SELECT seq, data FROM events WHERE type=? ORDER BY seq", (type_,)).fetchall())
    return [{"seq": r[0], **json.loads(r[1])} for r in rows]


def event_seq(panel: Panel, type_: str, guid: str) -> int:
    return next(e["seq"] for e in events(panel, type_) if e["guid"] == guid)


def snapshot_column(panel: Panel, guid: str) -> str | None:
    return panel.store.read_sync(lambda c: c.execute("SELECT snapshot FROM calls WHERE guid=?", (guid,)).fetchone()[0])


async def snapshot_event(panel: Panel, guid: str) -> dict[str, Any]:
    await eventually(lambda: any(e["guid"] == guid for e in events(panel, "call.snapshot")), what="call.snapshot")
    return next(e for e in events(panel, "call.snapshot") if e["guid"] == guid)


@pytest.fixture
async def panel(tmp_path: Path) -> AsyncIterator[Panel]:
    p = await start_panel_inprocess(tmp_path, with_snapshots())
    yield p
    await p.stop("test over")


async def test_press_snapshot_is_the_press_picture_stored_referenced_and_fetchable(panel: Panel) -> None:
    media = media_of(panel)
    assert media.hub.video is not None
    capture = media.hub.video.capture
    watcher = capture.subscribe()  # the camera runs (as it would for a viewer), so there is a picture at the press
    try:
        await eventually(lambda: capture.latest is not None and capture.latest.seq >= 5, what="camera running")
        seq_at_press = capture.latest.seq
        guid = await ring(panel)
        event = await snapshot_event(panel, guid)
    finally:
        watcher.close()

    # The call was announced first; the picture followed without delaying it.
    assert event_seq(panel, "call.created", guid) < event["seq"]
    assert snapshot_column(panel, guid) == f"snapshots/{guid}/press.jpg"
    stored = (panel.cfg.storage.dir / "snapshots" / guid / "press.jpg").read_bytes()
    frame = decode_jpeg(stored)
    assert (frame.width, frame.height) == (320, 240) == (event["width"], event["height"])
    assert event["bytes"] == len(stored)
    counter = stamp_of(stored).counter
    assert seq_at_press - 1 <= counter <= seq_at_press + 2, f"picture {counter}, camera at {seq_at_press} at the press"
    assert abs(event["offset_ms"]) < 250

    url = event["url"]
    assert url.startswith(f"/api/v1/calls/{guid}/snapshot.jpg?exp=") and "&sig=" in url
    async with api(panel) as client:
        signed = await client.get(url)
        assert signed.status_code == 200 and signed.headers["content-type"] == "image/jpeg"
        assert signed.content == stored

        bare = await client.get(f"/api/v1/calls/{guid}/snapshot.jpg")
        assert bare.status_code == 401 and "Basic" in bare.headers["www-authenticate"]
        assert bare.json()["code"] == "unauthenticated" and bare.content != stored

        forged = await client.get(url[:-4] + ("AAAA" if not url.endswith("AAAA") else "BBBB"))
        assert forged.status_code == 401 and forged.json()["code"] == "signature_invalid"
        for sig in ("%C3%A9", "%ED%A0%80", "%00"):  # not ASCII: a 500 on main (compare_digest raised)
            odd = await client.get(url.split("&sig=")[0] + "&sig=" + sig)
            assert odd.status_code == 401 and odd.json()["code"] == "signature_invalid", (sig, odd.text)
        other_call = await client.get(url.replace(guid, "00000000-0000-4000-8000-000000000000"))
        assert other_call.status_code == 401, "a signature is only good for its own call"

        assert (await client.get(f"/api/v1/calls/{guid}/snapshot.jpg", headers=INSTALLER_AUTH)).content == stored
        call_token = media.issue_call_token(guid, "alice")
        basic = httpx.BasicAuth("alice", call_token)
        assert (await client.get(f"/api/v1/calls/{guid}/snapshot.jpg", auth=basic)).content == stored
        monitor = media.issue_monitor_token("bob")
        refused = await client.get(f"/api/v1/calls/{guid}/snapshot.jpg", headers={"Authorization": f"Bearer {monitor}"})
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"

        listing = (await client.get(f"/api/v1/calls/{guid}/snapshots", headers=INSTALLER_AUTH)).json()
        assert [p["name"] for p in listing["pictures"]] == ["press.jpg"]
        for name in ("meta.json", "panel.db", "..%2F..%2Fpanel.db"):
            missing = await client.get(f"/api/v1/calls/{guid}/snapshots/{name}", headers=INSTALLER_AUTH)
            assert missing.status_code == 404, name


async def test_snapshot_at_a_press_starts_an_idle_camera_and_lets_it_stop_again(panel: Panel) -> None:
    capture = media_of(panel).hub.video.capture  # type: ignore[union-attr]
    assert not capture.running, "nothing watches: the camera is off before the press"
    guid = await ring(panel)
    event = await snapshot_event(panel, guid)
    assert event["offset_ms"] >= 0, "the camera was off: the picture is the first one after the press"
    assert stamp_of((panel.cfg.storage.dir / "snapshots" / guid / "press.jpg").read_bytes()).counter < 5
    await eventually(lambda: not capture.running, what="the camera released after the snapshot")


async def test_on_demand_snapshot_needs_a_live_credential(panel: Panel) -> None:
    media = media_of(panel)
    visitor = visitor_of(panel)
    async with api(panel) as client:
        none = await client.get("/api/v1/snapshot.jpg")
        assert none.status_code == 401 and 'Basic realm="panel camera"' in none.headers["www-authenticate"]
        wrong = await client.get("/api/v1/snapshot.jpg", auth=httpx.BasicAuth("x", "not-a-token"))
        assert wrong.status_code == 401 and wrong.json()["code"] == "invalid_token"

        before = visitor.jpegs.encodes  # type: ignore[union-attr]
        ok = await client.get("/api/v1/snapshot.jpg", auth=httpx.BasicAuth("installer", INSTALLER))
        assert ok.status_code == 200
        frame = decode_jpeg(ok.content)
        assert (frame.width, frame.height) == (320, 240)
        stamp_of(ok.content)
        assert visitor.jpegs.encodes == before + 1  # type: ignore[union-attr]

        guid = await ring(panel)
        token = media.issue_call_token(guid, "alice")
        assert (await client.get("/api/v1/snapshot.jpg", headers={"Authorization": f"Bearer {token}"})).status_code == 200
        await panel.calls.end(guid, "alice")
        await panel.journal.flush()
        after = await client.get("/api/v1/snapshot.jpg", headers={"Authorization": f"Bearer {token}"})
        assert after.status_code == 401 and after.json()["code"] == "token_revoked"


async def test_pre_press_buffer_keeps_pictures_from_before_the_press(tmp_path: Path) -> None:
    panel = await start_panel_inprocess(tmp_path, with_snapshots(prebuffer_s=2.0, prebuffer_fps=2.0))
    try:
        visitor = visitor_of(panel)
        prebuffer = visitor.snapshots.prebuffer  # type: ignore[union-attr]
        assert prebuffer is not None
        await eventually(lambda: prebuffer.status()["jpegs"] >= 5, what="two seconds of pictures buffered")
        guid = await ring(panel)
        event = await snapshot_event(panel, guid)
        async with api(panel) as client:
            listing = (await client.get(f"/api/v1/calls/{guid}/snapshots", headers=INSTALLER_AUTH)).json()
            pictures = {p["name"]: p for p in listing["pictures"]}
            pre = sorted(n for n in pictures if n.startswith("pre-"))
            assert 3 <= len(pre) <= 5 and event["pre_press"] == len(pre)
            press = stamp_of((await client.get(pictures["press.jpg"]["url"], headers=INSTALLER_AUTH)).content).counter
            counters = []
            for name in pre:
                assert -2300 <= pictures[name]["offset_ms"] < 0, pictures[name]
                counters.append(stamp_of((await client.get(pictures[name]["url"], headers=INSTALLER_AUTH)).content).counter)
        assert all(np.diff(counters) > 0), f"oldest first: {counters}"
        assert counters[-1] < press, f"pre-press pictures {counters} must come before the press picture {press}"
        # 2 fps of a 15 fps camera: about every 7th picture
        assert all(5 <= d <= 10 for d in np.diff(counters)), counters
        assert abs(event["offset_ms"]) < 250, "the buffer knows the picture at the press itself"
    finally:
        await panel.stop("test over")


async def test_retention_deletes_the_oldest_calls_pictures_and_their_reference(tmp_path: Path) -> None:
    panel = await start_panel_inprocess(tmp_path, with_snapshots(max_calls=2))
    try:
        guids = []
        for _ in range(3):
            guid = await ring(panel)
            await snapshot_event(panel, guid)
            await panel.calls.end(guid, "alice")
            guids.append(guid)
        root = panel.cfg.storage.dir / "snapshots"
        assert sorted(p.name for p in root.iterdir()) == sorted(guids[1:])
        assert snapshot_column(panel, guids[0]) is None, "a deleted picture is no longer referenced"
        assert snapshot_column(panel, guids[2]) == f"snapshots/{guids[2]}/press.jpg"
        first_url = next(e["url"] for e in events(panel, "call.snapshot") if e["guid"] == guids[0])
        async with api(panel) as client:
            gone = await client.get(first_url)
            assert gone.status_code == 404 and gone.json()["code"] == "no_snapshot"
    finally:
        await panel.stop("test over")


def test_file_store_bounds_bytes_and_free_space(tmp_path: Path) -> None:
    files = SnapshotFiles(tmp_path / "snapshots", SnapshotsConfig(max_calls=100, max_mb=1, min_free_mb=0))
    files.scan()
    guids = [f"0000000{i}-0000-4000-8000-000000000000" for i in range(4)]
    for i, guid in enumerate(guids):
        files.write(guid, {"press.jpg": bytes(400 * 1024)}, {"created": 1000.0 + i})
    assert list(files.index) == guids[2:], "two 400 KiB calls fit in 1 MiB; the oldest went first"
    assert files.total_bytes <= 1024 * 1024
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == guids[2:]

    with pytest.raises(SnapshotError, match="max_mb"):
        files.write("10000000-0000-4000-8000-000000000000", {"press.jpg": bytes(2 * 1024 * 1024)}, {"created": 2000.0})
    assert list(files.index) == guids[2:], "a picture that cannot fit deletes nothing"

    greedy = SnapshotFiles(tmp_path / "snapshots", SnapshotsConfig(min_free_mb=100_000))
    greedy.scan()
    assert list(greedy.index) == guids[2:], "a restart finds what is stored, oldest first"
    with pytest.raises(SnapshotError, match="min_free_mb"):
        greedy.write("20000000-0000-4000-8000-000000000000", {"press.jpg": b"x" * 1000}, {"created": 3000.0})
    assert list(greedy.index) == guids[2:], "the disk guard refuses without deleting anything"
    assert greedy.read("../etc", "press.jpg") is None and greedy.read(guids[3], "../x.jpg") is None


def write_h264(path: Path, frames: int = 45, gop: int = 15) -> None:
    """An Annex-B H.264 file of the test pattern, as a Pi camera would deliver it."""
    painter = PatternPainter(320, 240)
    with av.open(str(path), "w", format="h264") as out:
        stream = out.add_stream("libx264", rate=15)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline", "g": str(gop),
                          "keyint_min": str(gop)}
        for i in range(frames):
            frame = painter.paint(i, 1_700_000_000 + i / 15)
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


async def test_passthrough_camera_is_decoded_only_for_a_picture(tmp_path: Path) -> None:
    clip = tmp_path / "camera.h264"
    write_h264(clip)
    media = with_snapshots(video={"source": "h264_file", "file": str(clip)}, prebuffer_s=2.0, prebuffer_fps=1.0)
    panel = await start_panel_inprocess(tmp_path, media, simulate=False)
    try:
        visitor = visitor_of(panel)
        assert visitor.jpegs is not None and visitor.jpegs.passthrough
        prebuffer = visitor.snapshots.prebuffer  # type: ignore[union-attr]
        assert prebuffer is not None
        await eventually(lambda: prebuffer.status()["packets"] >= 40, what="packets buffered")
        assert visitor.jpegs.encodes == 0, "buffered H.264 is neither decoded nor encoded before a press"
        guid = await ring(panel)
        event = await snapshot_event(panel, guid)
        folder = panel.cfg.storage.dir / "snapshots" / guid
        stored = (folder / "press.jpg").read_bytes()
        assert (event["width"], event["height"]) == (320, 240)
        assert 0 <= stamp_of(stored).counter < 45
        assert event["pre_press"] >= 1
        for i in range(event["pre_press"]):
            assert 0 <= stamp_of((folder / f"pre-{i:02d}.jpg").read_bytes()).counter < 45
        async with api(panel) as client:
            now = await client.get("/api/v1/snapshot.jpg", headers=INSTALLER_AUTH)
            assert now.status_code == 200 and 0 <= stamp_of(now.content).counter < 45
            from .test_mjpeg import (
                read_parts,  # the MJPEG viewer of a pass-through camera decodes as it goes
            )

            counters = [stamp_of(j).counter for j in await read_parts(client, 4, headers=INSTALLER_AUTH)]
            assert all(0 <= c < 45 for c in counters) and len(set(counters)) == 4, counters
    finally:
        await panel.stop("test over")


async def test_no_camera_means_a_clear_error_and_calls_without_pictures(tmp_path: Path) -> None:
    panel = await start_panel_inprocess(tmp_path, with_snapshots(video={"source": "none"}))
    try:
        guid = await ring(panel)
        async with api(panel) as client:
            r = await client.get("/api/v1/snapshot.jpg", headers=INSTALLER_AUTH)
            assert r.status_code == 503 and r.json()["code"] == "no_camera"
            assert "media.video" in r.json()["message"]
            assert (await client.get("/api/v1/video.mjpeg", headers=INSTALLER_AUTH)).status_code == 503
        assert panel.calls.current is not None and panel.calls.current.guid == guid
        assert snapshot_column(panel, guid) is None
    finally:
        await panel.stop("test over")


async def test_api_credentials_backend_fetches_any_call_resident_only_theirs(panel: Panel) -> None:
    """The local API's own credentials (panel/api/principals.py) work on the picture routes too: a
    backend token for every call's pictures, a resident token scoped to one call for that call only."""
    guid = await ring(panel)
    await snapshot_event(panel, guid)
    await panel.calls.end(guid, "alice")
    other = await ring(panel)
    await snapshot_event(panel, other)
    async with api(panel) as client:
        async def issue(**body: Any) -> str:
            r = await client.post("/api/v1/auth/tokens", json=body, headers=INSTALLER_AUTH)
            assert r.status_code == 201, r.text
            return str(r.json()["token"])

        backend = {"Authorization": f"Bearer {await issue(role='backend', subject='cloud')}"}
        resident = {"Authorization": f"Bearer {await issue(role='resident', subject='alice', call_guid=other)}"}
        for g in (guid, other):
            r = await client.get(f"/api/v1/calls/{g}/snapshot.jpg", headers=backend)
            assert r.status_code == 200 and r.content[:2] == b"\xff\xd8"
        assert (await client.get(f"/api/v1/calls/{other}/snapshot.jpg", headers=resident)).status_code == 200
        r = await client.get(f"/api/v1/calls/{guid}/snapshot.jpg", headers=resident)
        assert r.status_code == 403 and r.json()["code"] == "forbidden"
        assert (await client.get("/api/v1/snapshot.jpg", headers=resident)).status_code == 200, "their call is live"
        await panel.calls.end(other, "alice")
        r = await client.get("/api/v1/snapshot.jpg", headers=resident)
        assert r.status_code == 403, "no live call of theirs: no live picture"
