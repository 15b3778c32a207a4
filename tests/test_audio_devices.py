"""The panel's speaker and microphone as real sound devices: opened by name through sounddevice
(PortAudio, ALSA's pulse plugin) on a real PulseAudio the test starts (tests/pulse.py).

Capture, playback, the installer's speaker test tone and level meter, a call's audio both ways, and a
speaker and a microphone that disappear mid-call (the sink's module unloaded, as when a USB sound card
is pulled out) and come back, with ``media.device_lost`` and ``media.device_recovered`` as events.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from panel.compat import rescan_sound_devices
from panel.daemon import Panel
from panel.media.audio import dominant_frequency

from .eventually import eventually
from .media_resident import Resident
from .media_rig import INSTALLER, api, media_config, media_of, ring, start_panel_inprocess
from .pulse import Listener, PulseServer, Speaker, use_server

RESIDENT_TONE = 1000.0
VISITOR_TONE = 700.0


@pytest.fixture
async def pulse(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[PulseServer]:
    server = PulseServer()
    await server.start()
    use_server(server, monkeypatch.setenv)
    try:
        yield server
    finally:
        await server.stop()
        monkeypatch.undo()
        rescan_sound_devices()  # later tests in this worker see the machine's own devices again


@pytest.fixture
async def panel(tmp_path: Path, pulse: PulseServer) -> AsyncIterator[Panel]:
    media = media_config(audio={"input": "door_mic", "output": "door_speaker"}, video={"source": "none"})
    panel = await start_panel_inprocess(tmp_path, media, simulate=False, tamper=None)
    try:
        yield panel
    finally:
        await panel.stop("test over")


def events(panel: Panel, kind: str) -> list[dict[str, object]]:
    rows = panel.store.read_sync(lambda c: c.execute(
        "SELECT data FROM events WHERE type = ? ORDER BY seq", (kind,)).fetchall())
    return [json.loads(r[0]) for r in rows]


def hears(listener: Listener, hz: float, seconds: float = 0.3) -> bool:
    samples = listener.last(seconds)
    return len(samples) >= seconds * 48_000 * 0.9 and float(np.abs(samples).mean()) > 100 and \
        abs(dominant_frequency(samples) - hz) < 10


async def test_speaker_test_tone_and_microphone_level_through_pulseaudio(panel: Panel) -> None:
    at_speaker = Listener("door_speaker_monitor")
    visitor = Speaker("door_room", VISITOR_TONE, level=0.2)
    try:
        async with api(panel) as client:
            auth = {"Authorization": f"Bearer {INSTALLER}"}
            r = await client.post("/api/v1/media/speaker/test", json={"hz": 1500.0, "seconds": 2.0}, headers=auth)
            assert r.status_code == 200, r.text
            await eventually(lambda: hears(at_speaker, 1500.0), 10, "the test tone at the speaker's output")

            async def level() -> dict[str, float] | None:
                r = await client.get("/api/v1/media/microphone/level", params={"seconds": 0.5}, headers=auth)
                return r.json() if r.status_code == 200 and r.json()["dominant_hz"] > 0 else None

            first: dict[str, float] | None = await eventually(lambda: level(), 15, "a level from the microphone")
            assert first is not None
            measured = await level()  # the microphone is running now: a whole window of sound
        # The visitor's 700 Hz at 0.2 of full scale: -17 dBFS RMS; the panel hears it, not its own speaker.
        assert measured is not None
        assert measured["dominant_hz"] == pytest.approx(VISITOR_TONE, abs=10)
        assert -20 < measured["rms_dbfs"] < -14
        status = media_of(panel).hub.status()
        assert status["microphone"]["state"] == "running" and status["speaker"]["state"] == "running"
    finally:
        at_speaker.close()
        visitor.close()


async def test_a_speaker_and_microphone_that_vanish_mid_call_are_reported_and_come_back(
        panel: Panel, pulse: PulseServer) -> None:
    guid = await ring(panel)
    media = media_of(panel)
    for capture in (media.hub.microphone, getattr(media.hub.speaker, "capture", None)):
        assert capture is not None
        capture.backoff_min_s = capture.backoff_max_s = 0.5  # retry quickly: the test waits for the return
    at_speaker = Listener("door_speaker_monitor")
    visitor = Speaker("door_room", VISITOR_TONE)
    resident = Resident(tone_hz=RESIDENT_TONE, video="")
    try:
        session = await media.sessions.create(await resident.offer(),
                                              media.tokens.verify(media.issue_call_token(guid, "alice")))
        await resident.accept(session.answer_sdp)
        # Both ways through the devices: the resident on the panel's speaker, the visitor at the resident.
        await eventually(lambda: hears(at_speaker, RESIDENT_TONE), 15, "the resident's voice at the speaker")
        await resident.wait_audio(0.5)
        await eventually(lambda: abs(dominant_frequency(resident.received_audio(0.5)) - VISITOR_TONE) < 10, 10,
                         "the visitor's voice at the resident")

        # Both vanish. The test's own streams on them die with them.
        visitor.close()
        at_speaker.close()
        await pulse.unload_sink("door_speaker")
        await pulse.unload_sink("door_room")
        lost: dict[object, dict[str, object]] | None = await eventually(
            lambda: {e["device"]: e for e in events(panel, "media.device_lost")}
            if len(events(panel, "media.device_lost")) >= 2 else None, 10,
            "media.device_lost for the speaker and the microphone")
        assert lost is not None and set(lost) == {"speaker", "microphone"}
        assert lost["speaker"]["name"] == "door_speaker" and lost["microphone"]["name"] == "door_mic"
        assert panel.calls.current is not None and panel.calls.current.guid == guid, "the call goes on"

        await pulse.load_sink("door_speaker")
        await pulse.load_sink("door_room")
        recovered = await eventually(lambda: {e["device"] for e in events(panel, "media.device_recovered")}
                                     if len(events(panel, "media.device_recovered")) >= 2 else None, 15,
                                     "media.device_recovered for both")
        assert recovered == {"speaker", "microphone"}
        at_speaker = Listener("door_speaker_monitor")
        visitor = Speaker("door_room", VISITOR_TONE * 2)
        await eventually(lambda: hears(at_speaker, RESIDENT_TONE), 15, "the resident on the speaker again")
        await eventually(lambda: abs(dominant_frequency(resident.received_audio(0.5)) - 2 * VISITOR_TONE) < 10, 15,
                         "the visitor at the resident again")
    finally:
        at_speaker.close()
        visitor.close()
        await resident.close()
