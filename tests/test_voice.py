"""The entrance microphone is processed and Opus-encoded once, whatever the number of listeners: every
session's track hands out the same packets, each with its own clock, and a muted one sends Opus silence."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import av
import numpy as np
import pytest

from panel.media.audio import BLOCK, RATE, AudioChunk, ToMono, ToneSource, dominant_frequency
from panel.media.capture import DeviceCapture
from panel.media.echo import EchoCanceller
from panel.media.tracks import MicrophoneTrack
from panel.media.voice import FEED_DEPTH, OPUS_SILENCE, VoiceStream
from panel.platform import EchoConfig

from .eventually import eventually


def decode(packets: list[bytes]) -> np.ndarray:
    ctx = av.CodecContext.create("libopus", "r")
    to_mono = ToMono()
    out = []
    for data in packets:
        for frame in ctx.decode(av.Packet(data)):
            out.append(to_mono(frame))
    return np.concatenate(out)


async def test_three_listeners_share_one_encode_and_mute_alone() -> None:
    mic: DeviceCapture[AudioChunk] = DeviceCapture("microphone", "tone", lambda: ToneSource(600.0, 0.3),
                                                   lambda e: None)
    voice = VoiceStream(mic, EchoCanceller(EchoConfig()), 32)
    tracks = [MicrophoneTrack(voice) for _ in range(3)]
    tracks[2].set_muted(True)
    try:
        got: list[list[bytes]] = [[], [], []]
        pts: list[list[int]] = [[], [], []]
        for _ in range(25):  # half a second
            for i, track in enumerate(tracks):
                packet = await track.recv()
                got[i].append(bytes(packet))
                pts[i].append(int(packet.pts or 0))
        assert voice.listeners == 3
        # The second listener joined a block or two later; from then on it gets the very same packets.
        start = got[0].index(got[1][5])
        assert got[1][5:20] == got[0][start:start + 15], "the listeners get the very same packets"
        assert voice.blocks <= 25 + 10, f"{voice.blocks} blocks encoded for 3 x 25 packets: encoded per listener?"
        assert all(p == OPUS_SILENCE for p in got[2]), "a muted listener gets silence; the others do not"
        assert pts[0] == list(range(0, 25 * 960, 960)) == pts[2], "each track's clock runs on, muted or not"
        heard = decode(got[0])
        assert dominant_frequency(heard[RATE // 10:], RATE) == pytest.approx(600.0, abs=10)
    finally:
        for track in tracks:
            track.stop()
        await voice.close()
        await mic.close()
    assert voice.listeners == 0 and not mic.running


class Burst:
    """A microphone that delivers 30 blocks at once (a stalled loop catching up), then nothing."""

    name = "burst"

    async def run(self, emit: Callable[[AudioChunk], None]) -> None:
        for i in range(30):
            emit(AudioChunk(np.full(BLOCK, i, np.int16), float(i)))
        await asyncio.Event().wait()


async def test_microphone_blocks_lost_on_a_busy_loop_take_their_reference_with_them() -> None:
    mic: DeviceCapture[AudioChunk] = DeviceCapture("microphone", "burst", Burst, lambda e: None)
    echo = EchoCanceller(EchoConfig())
    voice = VoiceStream(mic, echo, 32)
    track = MicrophoneTrack(voice)
    try:
        await track.recv()
        await eventually(lambda: voice.blocks == FEED_DEPTH, what="the blocks that survived processed")
        # 20 of the 30 blocks were dropped before processing. Nothing was played, so every block of the
        # reference the 30 would have used is silence; the 20 dropped ones must take theirs too, or the
        # reference would from now on run 20 blocks (400 ms) ahead of the microphone.
        assert echo.reference.starved == 30 * BLOCK
    finally:
        track.stop()
        await voice.close()
        await mic.close()
