"""A resident's WebRTC client for the media tests and benchmarks: a real aiortc peer on loopback.

It offers (audio send+receive with its own tone as microphone, video receive-only, a data channel),
reads the panel's test pattern from every received picture, keeps the received audio for an FFT,
and speaks the panel's data-channel protocol (docs/media.md).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from panel.media.audio import ToMono, ToneSource
from panel.media.capture import DeviceCapture
from panel.media.pattern import Stamp, read_frame_stamp
from panel.media.tracks import MicrophoneTrack
from panel.media.voice import VoiceStream

from .eventually import eventually


@dataclass
class Picture:
    stamp: Stamp | None
    received_mono: float
    received_wall: float
    width: int


@dataclass
class Resident:
    tone_hz: float = 1000.0
    audio: str = "sendrecv"  # the audio section's direction; "" for none
    video: str = "recvonly"  # "" for none, "inactive" for an audio-only start
    datachannel: bool = True
    source: Any = None  # what the resident says (a capture Source); None: a tone at tone_hz
    pictures: list[Picture] = field(default_factory=list)
    audio_chunks: list[np.ndarray] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.mic: DeviceCapture[Any] = DeviceCapture(
            "microphone", "resident", lambda: self.source or ToneSource(self.tone_hz, 0.3), lambda e: None)
        self.mic_track = MicrophoneTrack(VoiceStream(self.mic, None, 32))
        self.tasks: list[asyncio.Task[Any]] = []
        self.channel = None
        self._message_event = asyncio.Event()
        self.first_picture = asyncio.Event()
        if self.audio:
            if self.audio in ("sendrecv", "sendonly"):
                self.pc.addTransceiver(self.mic_track, direction=self.audio)
            else:
                self.pc.addTransceiver("audio", direction=self.audio)
        if self.video:
            self.pc.addTransceiver("video", direction=self.video)
        if self.datachannel:
            self.channel = self.pc.createDataChannel("panel")
            self.channel.on("message", self._on_message)
        self.pc.on("track", self._on_track)

    def _on_track(self, track: Any) -> None:
        self.tasks.append(asyncio.ensure_future(
            self._read_video(track) if track.kind == "video" else self._read_audio(track)))

    async def _read_video(self, track: Any) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.pictures.append(Picture(read_frame_stamp(frame), time.monotonic(), time.time(), frame.width))
            self.first_picture.set()

    async def _read_audio(self, track: Any) -> None:
        to_mono = ToMono()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.audio_chunks.append(to_mono(frame))

    def _on_message(self, raw: str) -> None:
        self.messages.append(json.loads(raw))
        self._message_event.set()

    # -- signalling --------------------------------------------------------------------------------------
    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept(self, answer: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def wait_connected(self, timeout: float = 10) -> None:
        await eventually(lambda: self.pc.connectionState == "connected", timeout, "the peer connection connected",
                         detail=lambda: self.pc.connectionState)

    async def wait_channel_open(self, timeout: float = 10) -> None:
        await eventually(lambda: self.channel is not None and self.channel.readyState == "open", timeout,
                         "the data channel open")

    def send(self, message: dict[str, Any]) -> None:
        assert self.channel is not None
        self.channel.send(json.dumps(message))

    async def wait_message(self, pred: Any, timeout: float = 10) -> dict[str, Any]:
        """The first message (already received or coming) for which ``pred`` is true."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for m in self.messages[seen:]:
                if pred(m):
                    return m
            seen = len(self.messages)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching message in {timeout} s; got {self.messages[-5:]}")
            self._message_event.clear()
            try:
                await asyncio.wait_for(self._message_event.wait(), left)
            except TimeoutError:
                pass

    async def renegotiate(self, *, video: str) -> None:
        """Change the video section's direction and renegotiate over the data channel."""
        for t in self.pc.getTransceivers():
            if t.kind == "video":
                t.direction = video
                break
        else:
            self.pc.addTransceiver("video", direction=video)
        offer = await self.offer()
        self.send({"type": "offer", "sdp": offer})
        answer = await self.wait_message(lambda m: m["type"] in ("answer", "error"))
        assert answer["type"] == "answer", answer
        await self.accept(answer["sdp"])

    # -- what arrived --------------------------------------------------------------------------------------
    def counters(self) -> list[int]:
        return [p.stamp.counter for p in self.pictures if p.stamp is not None]

    def received_audio(self, last_s: float | None = None) -> np.ndarray:
        samples = np.concatenate(self.audio_chunks) if self.audio_chunks else np.zeros(0, np.int16)
        return samples[-int(last_s * 48000):] if last_s else samples

    async def wait_pictures(self, n: int, timeout: float = 10) -> None:
        await eventually(lambda: len(self.counters()) >= n, timeout, f"{n} readable pictures",
                         detail=lambda: f"{len(self.counters())} arrived")

    async def wait_audio(self, seconds: float, timeout: float = 10) -> None:
        await eventually(lambda: len(self.received_audio()) >= seconds * 48000, timeout, f"{seconds:g} s of audio",
                         detail=lambda: f"{len(self.received_audio()) / 48000:.2f} s arrived")

    async def close(self) -> None:
        self.mic_track.stop()
        await self.pc.close()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.mic.close()
