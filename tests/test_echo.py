"""Echo cancellation on a realistic echo path with speech (tests/room.py), through the panel's own
``EchoCanceller``: the reference fed as the speaker plays, the microphone processed block by block.

A small guard, not the benchmark (bench/bench_echo.py measures the same things longer and next to
baselines): it fails when cancellation breaks, the delay is no longer found, or the near-end voice is
lost in double talk."""

from __future__ import annotations

import numpy as np
import pytest

from panel.media.audio import BLOCK, RATE
from panel.media.echo import EchoCanceller, Reference
from panel.platform import EchoConfig

from .room import EchoPath, correlation, erle_db, speaking, speech, to_int16

FAR_TEXT = "Hello, this is apartment three hundred and three. Please bring the parcel up to the second floor."
NEAR_TEXT = "Guten Tag, ich habe ein Paket für Sie."


@pytest.fixture(scope="module")
def far() -> np.ndarray:
    return speech(FAR_TEXT, "en") * 0.5


def run(ec: EchoCanceller, far: np.ndarray, mic: np.ndarray) -> np.ndarray:
    out = []
    for i in range(0, len(mic) - BLOCK + 1, BLOCK):
        ec.reference.played(far[i:i + BLOCK])  # the speaker plays a block, the microphone hears the room
        out.append(ec.process(mic[i:i + BLOCK]))
    return np.concatenate(out)


def test_single_talk_echo_is_cancelled_and_its_delay_found(far: np.ndarray) -> None:
    path = EchoPath(delay_ms=90)
    echo = path.echo(far)
    mic = to_int16(echo + path.noise(len(echo)))
    ec = EchoCanceller(EchoConfig())
    out = run(ec, to_int16(far), mic)
    erle = erle_db(mic, out, 1.0, speaking(far))
    raw = erle_db(mic, run(EchoCanceller(EchoConfig(enabled=False, noise_suppression="off")), to_int16(far), mic))
    assert raw == pytest.approx(0, abs=0.01), "turned off, the microphone passes untouched"
    assert erle > 20, f"only {erle:.1f} dB of echo cancelled after the first second"
    assert ec.delay.delay_ms == pytest.approx(90, abs=3), "the echo delay was not estimated"
    assert ec.status()["erle_db"] > 15


def test_double_talk_keeps_the_visitors_voice(far: np.ndarray) -> None:
    path = EchoPath(delay_ms=40)
    near = speech(NEAR_TEXT, "de") * 0.3
    near = np.pad(near, (int(1.0 * RATE), len(far)))[: len(far)]  # the visitor talks over the resident from 1 s
    echo = path.echo(far)
    mic = to_int16(echo + near + path.noise(len(echo)))
    out = run(EchoCanceller(EchoConfig()), to_int16(far), mic)
    both = slice(int(1.0 * RATE), len(out))
    kept = correlation(out[both], near[both])
    unprocessed = correlation(mic[both], near[both])
    assert kept > unprocessed, f"the output resembles the visitor less ({kept:.2f}) than the raw microphone " \
                               f"({unprocessed:.2f})"


def test_the_reference_is_bounded_and_pads_with_silence() -> None:
    ref = Reference(max_delay_ms=100)
    for i in range(20):
        ref.played(np.full(BLOCK, i, np.int16))
    assert ref.buffered_ms <= 100 and ref.trimmed > 0, "a speaker running ahead is cut back"
    first = ref.take(BLOCK)
    assert first[0] == 20 - ref.max_samples // BLOCK, "the newest 100 ms are kept, oldest first"
    ref.clear()
    assert not ref.take(BLOCK).any() and ref.starved == BLOCK
