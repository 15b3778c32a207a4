"""Visitor feedback: generated tones on the speaker (checked by FFT of what the recording speaker
got), mixed with the resident's voice from a real aiortc peer, and the status lights per call state
on gpiozero's mock pins."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from panel.daemon import Panel
from panel.door import ToneFeedback
from panel.media.audio import (
    BLOCK,
    RATE,
    OutputMixer,
    RecordingSink,
    dominant_frequency,
)
from panel.media.tones import TonePlayer, render, to_int16, tones_from_config
from panel.platform import EventRow, TonesConfig

from .eventually import eventually
from .media_resident import Resident
from .media_rig import (
    media_config,
    media_of,
    ring,
    speaker,
    start_panel_inprocess,
)
from .rig import Rig, make_config
from .support import config_dict
from .test_media_sessions import join

RESIDENT_TONE = 1000.0
WITH_TONES = {"tones": {"enabled": True}}  # the shared media rig turns them off for the session tests


def level_at(samples: np.ndarray, hz: float, width: float = 15.0) -> float:
    """Peak spectral magnitude near ``hz``, relative to the strongest component (0..1)."""
    x = samples.astype(np.float64)
    x = (x - x.mean()) * np.hanning(len(x))
    spectrum = np.abs(np.fft.rfft(x))
    freqs = np.fft.rfftfreq(len(x), 1 / RATE)
    band = spectrum[(freqs > hz - width) & (freqs < hz + width)]
    return float(band.max() / spectrum.max()) if spectrum.max() > 0 else 0.0


def present(samples: np.ndarray, hz: float) -> bool:
    return len(samples) >= RATE // 10 and level_at(samples, hz) > 0.2  # a tenth of a second resolves the band


# -- the tones themselves -----------------------------------------------------------------------------

def test_tones_are_generated_with_the_documented_shapes() -> None:
    cfg = TonesConfig(level=0.5, ringback_hz=425, ringback_on_s=1.0, ringback_off_s=4.0)
    tones = tones_from_config(cfg)
    ring = render(tones["ringback"], cfg.level)
    assert len(ring) == 5 * RATE and tones["ringback"].loop
    on, off = ring[:RATE], ring[RATE:]
    assert dominant_frequency(on) == pytest.approx(425, abs=3)
    assert np.abs(off).max() == 0, "four seconds of silence"
    assert abs(int(on[0])) < 200 and abs(int(on[RATE - 1])) < 200, "faded edges: no click"
    assert np.abs(on).max() == pytest.approx(0.5 * 32767, rel=0.02)

    def notes(name: str) -> list[float]:
        samples = render(tones[name], 1.0)
        t = 0
        out = []
        for seg in tones[name].segments:
            n = round(seg.seconds * RATE)
            if seg.hz is not None:
                out.append(dominant_frequency(samples[t:t + n]))
            t += n
        return out

    answered, unanswered, door = notes("answered"), notes("unanswered"), notes("door")
    assert len(answered) == 3 and answered == sorted(answered), f"answered rises: {answered}"
    assert len(unanswered) == 3 and unanswered == sorted(unanswered, reverse=True), f"unanswered falls: {unanswered}"
    assert len(door) == 3 and all(f > 1500 for f in door), f"door: short high beeps {door}"
    assert tones["door"].seconds < 0.5


def test_int16_conversion_saturates_instead_of_wrapping() -> None:
    out = to_int16(np.array([1.5, -1.5, 0.999, -1.0], np.float32))
    assert out.tolist() == [32767, -32768, 32734, -32767]


async def test_mixer_sums_tone_and_voice_without_wrapping() -> None:
    sink = RecordingSink()
    mixer = OutputMixer(sink)
    try:
        loud = (np.sin(2 * np.pi * 500 * np.arange(BLOCK * 20) / RATE) * 30000).astype(np.int16)
        a, b = mixer.add_input("a"), mixer.add_input("b")
        for i in range(0, len(loud), BLOCK * 5):
            a.write(loud[i:i + BLOCK * 5])
            b.write(loud[i:i + BLOCK * 5])
            await asyncio.sleep(0.09)  # the stimulus: audio arriving in real time, 5 blocks at a time
        await eventually(lambda: sink.written >= BLOCK * 15, what="mixed audio")
    finally:
        await mixer.close()
    out = sink.samples().astype(np.int32)
    assert out.max() == 32767 and out.min() == -32768, "60000 peaks clip at full scale"
    # Wrapping would jump from +32767 to about -32768 (a step near 65535); a clipped 500 Hz sine moves
    # less than 8000 per sample (and a gap in the input at most 32768).
    assert np.abs(np.diff(out)).max() < 40_000, "the sum wrapped round instead of saturating"
    assert dominant_frequency(sink.samples()) == pytest.approx(500, abs=5)


async def test_feedback_follows_call_states_and_door_releases() -> None:
    sink = RecordingSink()
    mixer = OutputMixer(sink)
    cfg = TonesConfig()
    call_tones, door_tones = TonePlayer(mixer, cfg, "tones:call"), TonePlayer(mixer, cfg, "tones:door")
    feedback = ToneFeedback(call_tones, door_tones, main_relay="main")

    def row(type_: str, **data: object) -> EventRow:
        return EventRow(1, "id", type_, "k", time.time(), "boot", time.monotonic(), dict(data), None)

    try:
        expected = [("call.created", "calling", "ringback"), ("call.status_updated", "ringing", "ringback"),
                    ("call.status_updated", "connecting", "answered"), ("call.status_updated", "connected", "answered"),
                    ("call.status_updated", "ended", None), ("call.created", "calling", "ringback"),
                    ("call.status_updated", "missed", "unanswered"), ("call.created", "calling", "ringback"),
                    ("call.status_updated", "declined", "unanswered"), ("call.created", "calling", "ringback"),
                    ("call.status_updated", "canceled", None)]
        for type_, status, tone in expected:
            feedback.on_event(row(type_, status=status))
            assert call_tones.playing == tone, (status, call_tones.playing)
        starts = [name for name, _ in call_tones.played]
        assert starts.count("ringback") == 4, "ringing after calling does not restart the ringback"

        feedback.on_event(row("door.unlocked", relay="main", cause="exit_button"))
        assert door_tones.playing is None, "someone leaving from inside gets no beeps outside"
        feedback.on_event(row("door.unlocked", relay="side", cause="call"))
        assert door_tones.playing is None, "only the main door beeps"
        feedback.on_event(row("door.unlocked", relay="main", cause="call"))
        assert door_tones.playing == "door"
        await eventually(lambda: door_tones.playing is None, timeout=3, what="the door tone plays out and stops")
        assert "tones:door" not in mixer.inputs, "a finished one-shot tone leaves the mixer"
        # Doors without a call: a release by PIN beeps like any other; a refusal buzzes, a block buzzes long.
        feedback.on_event(row("door.unlocked", relay="main", cause="pin"))
        assert door_tones.playing == "door"
        feedback.on_event(row("access.denied", reason="unknown_credential"))
        assert door_tones.playing == "refused"
        feedback.on_event(row("access.blocked", source="keypad"))
        assert door_tones.playing == "blocked"
        feedback.on_event(row("access.denied", reason="blocked"))
        assert door_tones.playing == "blocked"
    finally:
        await call_tones.close()
        await door_tones.close()
        await mixer.close()


# -- end to end: the speaker of a whole simulated panel ------------------------------------------------

async def test_visitor_hears_ringback_then_answer_and_door_mixed_with_the_resident(tmp_path: Path) -> None:
    panel: Panel = await start_panel_inprocess(tmp_path, media_config(**WITH_TONES))
    resident = Resident(tone_hz=RESIDENT_TONE)
    try:
        sink = speaker(panel)
        sink.clear()
        guid = await ring(panel)
        await eventually(lambda: abs(dominant_frequency(sink.samples(0.4)) - 425) <= 5, 3, "ringback while ringing")

        media = media_of(panel)
        await join(panel, resident, media.issue_call_token(guid, "alice"))

        def answered() -> bool:
            s = sink.samples(0.35)
            return (present(s, 880) or present(s, 1320)) and not present(s, 425)

        await eventually(answered, 3, "the rising answered tone after the answer, ringback stopped")

        await eventually(lambda: panel.calls.current is not None and panel.calls.current.state == "connected",
                         what="call connected")
        await eventually(lambda: present(sink.samples(0.3), RESIDENT_TONE), what="the resident's voice on the speaker")
        await panel.door.unlock(cause="call", actor="alice", method="data_channel", call_guid=guid)
        await eventually(lambda: present(sink.samples(0.25), 1760), 3, "door beeps")
        both = sink.samples(0.25)
        assert present(both, RESIDENT_TONE), "the resident's voice at the same time"
        assert np.abs(both.astype(np.int32)).max() <= 32767
    finally:
        await resident.close()
        await panel.stop("test over")


async def test_a_declined_call_plays_the_falling_tone(tmp_path: Path) -> None:
    panel: Panel = await start_panel_inprocess(tmp_path, media_config(**WITH_TONES))
    try:
        sink = speaker(panel)
        guid = await ring(panel)
        await eventually(lambda: present(sink.samples(0.25), 425), 3, "ringback")
        await panel.calls.decline(guid, "alice")
        await panel.journal.flush()

        def falling_starts() -> bool:
            s = sink.samples(0.25)
            return present(s, 880) and not present(s, 425)

        await eventually(falling_starts, 3, "the unanswered tone starting high, ringback gone")
        await eventually(lambda: present(sink.samples(0.3), 440), 3, "the unanswered tone ending low")
        await eventually(lambda: not any(n.startswith("tones:") for n in media_of(panel).hub.mixer.inputs),
                         what="the tone ends and leaves the mixer")
    finally:
        await panel.stop("test over")


# -- status lights on mock pins -------------------------------------------------------------------------

CALL_LIGHT, STATUS_LIGHT, DOOR_LIGHT = 21, 16, 20


_still: dict[int, tuple[int, float]] = {}


def dark_and_still(pin: Any, quiet_s: float = 0.35) -> bool:
    """The pin is low and has not changed for ``quiet_s`` (polled: a blink ends in gpiozero's thread)."""
    changes, now = len(pin.states), time.monotonic()
    seen, since = _still.get(id(pin), (-1, now))
    if changes != seen:
        _still[id(pin)] = (changes, now)
        return False
    return bool(pin.state == 0 and now - since >= quiet_s)


def intervals(pin: object, seconds: float) -> list[float]:
    """Times between the pin's changes over the last ``seconds`` (real time: gpiozero blinks in a thread)."""
    pin.clear_states()  # type: ignore[attr-defined]
    time.sleep(seconds)  # the observation window, not a wait for something
    return [s.timestamp for s in pin.states[1:]]  # type: ignore[attr-defined]


async def test_lights_follow_call_states(tmp_path: Path) -> None:
    data = config_dict()
    data["lights"] = [{"id": "door", "pin": DOOR_LIGHT, "role": "door"},
                      {"id": "call", "pin": CALL_LIGHT, "role": "call"},
                      {"id": "status", "pin": STATUS_LIGHT, "role": "status"}]
    rig = Rig(make_config(tmp_path, data))
    call_pin, door_pin = rig.pin(CALL_LIGHT), rig.pin(DOOR_LIGHT)
    try:
        button = rig.cfg.button("b303")
        await rig.drive(button, True)
        await rig.drive(button, False)
        guid = rig.panel.calls.current.guid  # type: ignore[union-attr]
        assert rig.panel.calls.current.state == "ringing"  # type: ignore[union-attr]
        slow = await asyncio.to_thread(intervals, call_pin, 1.3)
        assert len(slow) >= 2 and all(0.35 < t < 0.9 for t in slow), f"slow blink while ringing: {slow}"

        await rig.panel.calls.answer(guid, "alice")
        await rig.settle()
        steady = await asyncio.to_thread(intervals, call_pin, 0.4)
        assert steady == [] and call_pin.state == 1, "steady once connected"

        await rig.door.unlock(cause="call", actor="alice", method="api", call_guid=guid)
        await rig.settle()
        assert door_pin.state == 1, "the door light is on while the door is released"
        door = await asyncio.to_thread(intervals, call_pin, 1.0)
        assert len(door) >= 2 and min(door) < 0.2 and max(door) > 0.5, f"door pattern: long on, short off {door}"
        await rig.advance(rig.cfg.relay("main").hold_s + 0.1)
        assert door_pin.state == 0
        after = await asyncio.to_thread(intervals, call_pin, 0.3)
        assert after == [] and call_pin.state == 1, "back to steady when the door locks again"

        await rig.panel.calls.end(guid, "alice")
        await rig.settle()
        assert call_pin.state == 0

        await rig.drive(button, True)
        await rig.drive(button, False)
        await rig.panel.calls.decline(rig.panel.calls.current.guid, "alice")  # type: ignore[union-attr]
        await rig.settle()
        flash = await asyncio.to_thread(intervals, call_pin, 1.0)
        assert len(flash) >= 5 and all(t < 0.3 for t in flash), f"quick flashes when nobody answers: {flash}"
        await eventually(lambda: dark_and_still(call_pin), 5, "the call light dark after the flashes")
        assert await asyncio.to_thread(intervals, call_pin, 0.3) == [], "and staying dark"
    finally:
        await rig.close()
