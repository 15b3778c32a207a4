"""The installer's sound checks: a test tone through the panel's speaker and the entrance microphone's level.

Both use the shared devices of the media layer (panel/media/hub.py): the tone is one more input of the
speaker's mixer (summed, saturating, with anything else playing), the level is read from the shared
microphone capture for a fraction of a second. Neither runs during a call: a tone would blare into
the conversation, and the installer page does not need the call's audio.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from .deps import Caller, PanelDep
from .errors import ApiError, OkBody
from .state import ApiState

if TYPE_CHECKING:
    from .deps import Panel

router = APIRouter(prefix="/api/v1/media", tags=["media"])

TEST_INPUT = "installer:test-tone"
_401 = {"description": "no, unknown, expired or revoked credential"}
_409 = {"description": "a call is in progress, or a test tone is playing already"}
_503 = {"description": "media is not running, or there is no microphone"}


class ToneBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    hz: float = Field(1000.0, ge=100, le=4000, description="frequency")
    seconds: float = Field(1.0, ge=0.2, le=3.0, description="duration")
    level: float = Field(0.3, ge=0.01, le=1.0, description="amplitude, 1 = full scale")


class ToneResult(OkBody):
    hz: float
    seconds: float


class Level(OkBody):
    rms_dbfs: float = Field(description="loudness over the window, dB relative to full scale (-96: silence)")
    peak_dbfs: float
    dominant_hz: float = Field(description="the strongest frequency heard (0 when silent)")
    seconds: float = Field(description="how much sound was measured")


def _media(panel: Panel) -> Any:
    media = getattr(panel, "media", None)
    if media is None:
        raise ApiError("media_unavailable", "media is not running on this panel (no [media] section, or it "
                       "failed to start: see the panel's log)", headers={"Retry-After": "60"})
    return media


def _no_call(panel: Panel, what: str) -> None:
    call = panel.calls.current
    if call is not None and call.live:
        raise ApiError("call_in_progress", f"call {call.guid} is in progress; {what} when it is over")


def _playing(panel: Panel) -> ApiState:
    assert panel.api_state is not None, "the API's state is made with its app"
    return panel.api_state


async def _play(mixer: Any, samples: Any) -> None:
    from ..media.audio import BLOCK, BLOCK_S

    inp = mixer.add_input(TEST_INPUT)
    try:
        start, written = time.monotonic(), 0
        blocks = [samples[i:i + BLOCK] for i in range(0, len(samples), BLOCK)]
        while written < len(blocks):
            due = min(len(blocks), int((time.monotonic() - start) / BLOCK_S) + 3)  # a few blocks ahead
            while written < due:
                inp.write(blocks[written])
                written += 1
            await asyncio.sleep(BLOCK_S)
        await asyncio.sleep(4 * BLOCK_S)  # let the mixer play out what is queued
    finally:
        if mixer.inputs.get(TEST_INPUT) is inp:
            mixer.remove_input(TEST_INPUT)


@router.post("/speaker/test", response_model=ToneResult, summary="Play a test tone through the panel's speaker "
             "(installer)", responses={401: _401, 409: _409, 503: _503})
async def speaker_test(panel: PanelDep, who: Caller, body: ToneBody | None = None) -> ToneResult:
    body = body or ToneBody()
    media = _media(panel)
    _no_call(panel, "test the speaker")
    state = _playing(panel)
    task = state.test_tone
    if task is not None and not task.done():
        raise ApiError("tone_playing", "a test tone is playing; wait for it to end")
    import numpy as np

    from ..media.audio import RATE
    from ..media.tones import to_int16

    n = int(body.seconds * RATE)
    t = np.arange(n, dtype=np.float64)
    wave = np.sin(2 * math.pi * body.hz * t / RATE)
    fade = min(n // 2, int(0.005 * RATE))
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, math.pi, fade))
    wave[:fade] *= ramp
    wave[-fade:] *= ramp[::-1]  # no click at either end
    state.test_tone = asyncio.ensure_future(_play(media.hub.mixer, to_int16(wave * body.level)))
    return ToneResult(message=f"playing {body.hz:g} Hz for {body.seconds:g} s on the speaker; listen at the door",
                      hz=body.hz, seconds=body.seconds)


def _dbfs(x: float) -> float:
    return round(max(-96.0, 20 * math.log10(max(x, 1e-9) / 32768.0)), 1)


@router.get("/microphone/level", response_model=Level, summary="The entrance microphone's level now (installer)",
            responses={401: _401, 409: _409, 503: _503})
async def microphone_level(panel: PanelDep, who: Caller,
                           seconds: float = Query(0.3, ge=0.1, le=2.0, description="how long to listen")) -> Level:
    media = _media(panel)
    mic = media.hub.microphone
    if mic is None:
        raise ApiError("no_microphone", "this panel has no microphone (media.audio.input = \"none\")")
    _no_call(panel, "measure the microphone")
    import numpy as np

    from ..media.audio import RATE, dominant_frequency

    sub = mic.subscribe(maxsize=256, overflow="drop_oldest")
    chunks: list[Any] = []
    try:
        deadline = time.monotonic() + seconds + 1.0  # a device that is starting gets a moment
        while sum(len(c) for c in chunks) < seconds * RATE:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                item = await asyncio.wait_for(sub.get(), left)
            except TimeoutError:
                break
            chunks.append(item.samples)
    finally:
        sub.close()
    if not chunks:
        raise ApiError("no_sound", f"the microphone gave no sound within {seconds + 1:g} s (state "
                       f"{mic.state}: {mic.last_error or 'starting'})", headers={"Retry-After": "5"})
    samples = np.concatenate(chunks).astype(np.float64)
    rms = float(np.sqrt(np.mean(samples ** 2)))
    peak = float(np.abs(samples).max())
    hz = dominant_frequency(samples.astype(np.int16)) if rms > 30 else 0.0
    return Level(message=f"{_dbfs(rms):g} dBFS", rms_dbfs=_dbfs(rms), peak_dbfs=_dbfs(peak),
                 dominant_hz=round(hz, 1), seconds=round(len(samples) / RATE, 3))
