"""The panel's speaker and microphone as real sound devices: opened by name through sounddevice
(PortAudio, ALSA's pulse plugin) on a real PulseAudio the test starts (tests/pulse.py).

Capture, playback, the installer's speaker test tone and level meter, a call's audio both ways, and a
speaker and a microphone that disappear mid-call (the sink's module unloaded, as when a USB sound card
is pulled out) and come back, with ``media.device_lost`` and ``media.device_recovered`` as events.
"""

from __future__ import annotations

import json
import time
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
from .room import ClipSource, speech

RESIDENT_TONE = 1000.0
VISITOR_TONE = 700.0
RESIDENT_SPEECH = "Hello, I am coming down. Please wait at the door, I will be there in a minute or two."


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


async def test_the_resident_does_not_hear_themselves_back_through_real_devices(
        panel: Panel, pulse: PulseServer) -> None:
    """The echo path is PulseAudio's: the speaker's monitor looped back into the room with 60 ms of
    latency, so the reference comes from the speaker's PortAudio callback and the echo from the
    microphone's, each on its own device clock. A visitor's steady tone in the room at the same time
    must still reach the resident while the resident's own voice is taken out."""
    await pulse.pactl("load-module", "module-loopback", "source=door_speaker.monitor", "sink=door_room",
                      "latency_msec=60")
    guid = await ring(panel)
    media = media_of(panel)
    voice = speech(RESIDENT_SPEECH, "en") * 0.5
    clip = ClipSource(voice, start_s=0.3)
    resident = Resident(video="", source=clip)
    visitor = Speaker("door_room", VISITOR_TONE, level=0.05)
    raw = Listener("door_mic")  # what the panel's microphone hears, before any processing
    try:
        session = await media.sessions.create(await resident.offer(),
                                              media.tokens.verify(media.issue_call_token(guid, "alice")))
        await resident.accept(session.answer_sdp)
        await eventually(lambda: clip.started is not None, 10, "the resident speaking")
        assert clip.started is not None
        end = clip.started + 0.3 + len(voice) / 48_000
        await eventually(lambda: time.monotonic() > end - 1.5 and len(resident.audio_chunks) > 0, 15,
                         "the resident's speech nearly over")
        heard, room = resident.received_audio(1.5), raw.last(1.5)
        echo = media.hub.voice.status()["echo"] if media.hub.voice is not None else {}
        # The resident's voice (everything but the visitor's tone) in the room and at the resident.
        assert level_db(without(room, VISITOR_TONE)) > -45, "the echo did not reach the microphone"
        removed = level_db(without(room, VISITOR_TONE)) - level_db(without(heard, VISITOR_TONE))
        # 28-30 dB on a quiet machine, 9-18 under the whole suite's load (the sound server's loopback timing
        # moves the echo while the canceller converges); without cancellation it is about 0 dB. This guards
        # that cancellation runs on real devices; bench/bench_echo.py measures how well.
        assert removed > 6, f"only {removed:.1f} dB of the resident's echo removed; {echo}"
        assert abs(dominant_frequency(heard) - VISITOR_TONE) < 10 and level_db(heard) > -50, \
            f"the visitor's tone is lost ({level_db(heard):.1f} dBFS at the resident)"
        assert echo["delay_ms"] is not None, f"no echo delay estimated: {echo}"
    finally:
        raw.close()
        visitor.close()
        await resident.close()


def level_db(samples: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0
    return 20 * float(np.log10(max(rms, 1e-3) / 32768))


def without(samples: np.ndarray, hz: float, width_hz: float = 40.0) -> np.ndarray:
    """``samples`` with the band around ``hz`` taken out (the visitor's tone), to measure the rest."""
    spectrum = np.fft.rfft(samples.astype(np.float64))
    freqs = np.fft.rfftfreq(len(samples), 1 / 48_000)
    spectrum[np.abs(freqs - hz) < width_hz] = 0
    out: np.ndarray = np.fft.irfft(spectrum, len(samples))
    return out
