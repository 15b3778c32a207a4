"""Echo cancellation on an echo path that cannot flatter it, next to the unprocessed microphone and a
second engine (speexdsp's MDF canceller with its residual-echo suppressor) measured in the same run.

Speech both ways (espeak-ng: the resident in English, the visitor in German), and an echo path with
everything a door housing does (tests/room.py): the loudspeaker's soft clipping, a delay of 30-150 ms,
a decaying room response (direct path 10 dB over the reflections, RT60 ~0.4 s), 100 ppm clock drift
between speaker and microphone, and noise at -60 dBFS. For each delay:

- single-talk ERLE: microphone energy over output energy while the resident speaks, in the first second
  and after it (goal >= 30 dB after the first second);
- convergence: the start of the first 250 ms window from which the ERLE is >= 20 dB in at least 90%
  of the later windows where the resident speaks;
- double talk: the visitor speaks over the resident from 4 s; correlation of the output with the
  visitor's clean voice (best lag within 40 ms: the processing adds a constant 7-15 ms of latency),
  next to the unprocessed microphone's;
- CPU: CPU-milliseconds per second of audio.

Then end to end: an in-process panel whose speaker and microphone are the simulated room (a live
stream on the same echo path, 80 ms), a resident aiortc peer speaking over WebRTC, and what the resident
receives back measured, with the panel's echo cancellation on and off.

    .venv/bin/python bench/bench_echo.py [--delays 30,80,150] [--no-e2e | --e2e-only]

Needs espeak-ng and libspeexdsp1 (Debian).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from panel.media.audio import BLOCK, RATE  # noqa: E402
from panel.media.capture import DeviceCapture  # noqa: E402
from panel.media.echo import EchoCanceller  # noqa: E402
from panel.media.voice import VoiceStream  # noqa: E402
from panel.platform import EchoConfig  # noqa: E402
from tests.eventually import eventually  # noqa: E402
from tests.media_resident import Resident  # noqa: E402
from tests.media_rig import media_config, media_of, ring, start_panel_inprocess  # noqa: E402
from tests.netns import contained  # noqa: E402
from tests.room import (  # noqa: E402
    ClipSource,
    EchoPath,
    Room,
    RoomMicrophone,
    correlation,
    erle_db,
    speaking,
    speech,
    to_int16,
)

FAR_TEXT = ("Hello, this is apartment three hundred and three. Thank you for coming. Please leave the parcel "
            "at the reception desk on the ground floor, next to the lift, and close the door behind you. "
            "If nobody is there, ring again and I will come down.")
NEAR_TEXT = ("Guten Tag, hier ist der Paketdienst. Ich habe eine Lieferung für Sie, bitte öffnen Sie die Tür. "
             "Muss ich unterschreiben?")
DOUBLE_TALK_AT_S = 4.0

Process = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (far block, mic block) -> output block


def unprocessed() -> Process:
    return lambda far, mic: mic


def panel_aec3() -> Process:
    ec = EchoCanceller(EchoConfig())

    def process(far: np.ndarray, mic: np.ndarray) -> np.ndarray:
        ec.reference.played(far)
        return ec.process(mic)
    return process


def speexdsp(filter_ms: int = 500) -> Process:
    """speexdsp's echo canceller and its preprocessor (residual echo and noise suppression), through ctypes."""
    path = ctypes.util.find_library("speexdsp") or "libspeexdsp.so.1"
    lib = ctypes.CDLL(path)
    lib.speex_echo_state_init.restype = ctypes.c_void_p
    lib.speex_preprocess_state_init.restype = ctypes.c_void_p
    lib.speex_echo_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    lib.speex_preprocess_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    lib.speex_echo_cancellation.argtypes = [ctypes.c_void_p] + [ctypes.c_void_p] * 3
    lib.speex_preprocess_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    echo = lib.speex_echo_state_init(BLOCK, RATE * filter_ms // 1000)
    rate = ctypes.c_int(RATE)
    lib.speex_echo_ctl(echo, 24, ctypes.byref(rate))  # SPEEX_ECHO_SET_SAMPLING_RATE
    pre = lib.speex_preprocess_state_init(BLOCK, RATE)
    lib.speex_preprocess_ctl(pre, 24, echo)  # SPEEX_PREPROCESS_SET_ECHO_STATE

    def process(far: np.ndarray, mic: np.ndarray) -> np.ndarray:
        mic_c, far_c = np.ascontiguousarray(mic, np.int16), np.ascontiguousarray(far, np.int16)
        out = np.zeros(BLOCK, np.int16)
        lib.speex_echo_cancellation(echo, mic_c.ctypes.data, far_c.ctypes.data, out.ctypes.data)
        lib.speex_preprocess_run(pre, out.ctypes.data)
        return out
    return process


ENGINES: dict[str, Callable[[], Process]] = {
    "unprocessed microphone": unprocessed,
    "panel: WebRTC AEC3+NS (pywebrtc-audio)": panel_aec3,
    "speexdsp MDF + preprocess": speexdsp,
}


def run(engine: Process, far: np.ndarray, mic: np.ndarray) -> tuple[np.ndarray, float]:
    """The engine over the whole clip block by block; returns the output and CPU-seconds used."""
    out = []
    t0 = time.process_time()
    for i in range(0, len(mic) - BLOCK + 1, BLOCK):
        out.append(engine(far[i:i + BLOCK], mic[i:i + BLOCK]))
    return np.concatenate(out), time.process_time() - t0


def convergence_s(mic: np.ndarray, out: np.ndarray, active: np.ndarray, goal_db: float = 20.0) -> float | None:
    w = RATE // 4
    windows = []
    for start in range(0, len(out) - w + 1, w):
        sel = active[start:start + w]
        if sel.mean() < 0.5:
            continue
        m = float(np.mean(mic[start:start + w][sel].astype(np.float64) ** 2))
        o = float(np.mean(out[start:start + w][sel].astype(np.float64) ** 2))
        windows.append((start / RATE, 10 * math.log10(m / max(o, 1e-9)) >= goal_db))
    for i, (t, ok) in enumerate(windows):
        later = [good for _, good in windows[i:]]
        if ok and sum(later) >= 0.9 * len(later):
            return t
    return None


def offline(delays: list[int]) -> None:
    print("generating speech with espeak-ng ...", flush=True)
    far = speech(FAR_TEXT, "en") * 0.5
    near = speech(NEAR_TEXT, "de") * 0.3
    near_at = np.zeros(len(far))
    start = int(DOUBLE_TALK_AT_S * RATE)
    part = near[: len(far) - start]
    near_at[start:start + len(part)] = part
    far16 = to_int16(far)
    active = speaking(far)
    seconds = len(far) / RATE
    print(f"resident {seconds:.1f} s, visitor {len(near) / RATE:.1f} s from {DOUBLE_TALK_AT_S:g} s; "
          "echo path: soft clipping, room response (DRR 10 dB, RT60 ~0.4 s), 100 ppm drift, noise -60 dBFS\n")
    header = (f"{'delay':>6} {'engine':<42} {'ERLE 0-1s':>9} {'ERLE>1s dB':>10} {'converged s':>11} "
              f"{'double-talk corr':>16} "
              f"{'(raw mic)':>9} {'CPU ms/s':>8}")
    print(header)
    print("-" * len(header))
    for delay in delays:
        path = EchoPath(delay_ms=delay)
        echo = path.echo(far)
        noise = path.noise(len(far))
        mic_single = to_int16(echo + noise)
        mic_double = to_int16(echo + near_at + noise)
        both = slice(start, start + len(part))
        raw_corr = correlation(mic_double[both], near_at[both])
        for name, make in ENGINES.items():
            out, cpu = run(make(), far16, mic_single)
            erle = erle_db(mic_single, out, 1.0, active)
            first_s = slice(0, RATE)
            early = erle_db(mic_single[first_s], out[first_s], 0.0, active[first_s])
            conv = convergence_s(mic_single, out, active)
            out_dt, _ = run(make(), far16, mic_double)
            corr = correlation(out_dt[both], near_at[both])
            print(f"{delay:>4}ms {name:<42} {early:>9.1f} {erle:>10.1f} {'never' if conv is None else f'{conv:.2f}':>11} "
                  f"{corr:>16.3f} {raw_corr:>9.3f} {cpu * 1000 / seconds:>8.2f}", flush=True)


def dbfs(x: np.ndarray) -> float:
    rms = math.sqrt(float(np.mean(x.astype(np.float64) ** 2))) if len(x) else 0.0
    return 20 * math.log10(max(rms, 1e-3) / 32768)


async def end_to_end_once(far: np.ndarray, path: EchoPath, cancel: bool) -> dict[str, Any]:
    echo_cfg = {"enabled": cancel, "noise_suppression": "moderate" if cancel else "off"}
    media = media_config(audio={"echo": echo_cfg}, video={"source": "none"})
    with tempfile.TemporaryDirectory() as tmp:
        panel = await start_panel_inprocess(Path(tmp), media)
        try:
            hub = media_of(panel).hub
            # The simulated housing replaces the speaker and the microphone before anyone listens.
            room = Room(path)
            hub.mixer.sink = room
            room.on_played = hub.echo.reference.played if hub.echo is not None else None
            mic = DeviceCapture("microphone", "room", lambda: RoomMicrophone(room), lambda e: None)
            hub.microphone = mic
            hub.voice = VoiceStream(mic, hub.echo, 32)
            guid = await ring(panel)
            clip = ClipSource(far, start_s=0.5)
            resident = Resident(video="", source=clip)
            svc = media_of(panel)
            session = await svc.sessions.create(await resident.offer(),
                                                svc.tokens.verify(svc.issue_call_token(guid, "alice")))
            await resident.accept(session.answer_sdp)
            await resident.wait_connected()
            await eventually(lambda: clip.started is not None, 10, "the resident speaking")
            assert clip.started is not None
            speech_s = len(far) / RATE
            # From 1 s into the resident's speech to its end: what comes back is echo (the visitor is silent).
            await asyncio.sleep(max(0.0, clip.started + 0.5 + 1.0 - time.monotonic()))
            first = len(resident.audio_chunks)
            await asyncio.sleep(max(0.0, clip.started + 0.5 + speech_s - time.monotonic()))
            received = np.concatenate(resident.audio_chunks[first:])
            status = hub.voice.status()
            await resident.close()
            return {"received_dbfs": dbfs(received), "status": status.get("echo", {}),
                    "seconds": len(received) / RATE}
        finally:
            await panel.stop("bench over")


async def end_to_end() -> None:
    far = speech(FAR_TEXT, "en") * 0.5
    path = EchoPath(delay_ms=80)
    own = dbfs(to_int16(far)[speaking(far)])
    mic_echo = dbfs(to_int16(path.echo(far))[speaking(far)])
    print("\nEnd to end: resident (aiortc) speaks over WebRTC -> panel speaker -> simulated room (80 ms) -> "
          "panel microphone -> resident")
    print(f"resident's own speech {own:.1f} dBFS; its echo at the panel's microphone {mic_echo:.1f} dBFS")
    off = await end_to_end_once(far, path, cancel=False)
    on = await end_to_end_once(far, path, cancel=True)
    header = f"{'panel echo cancellation':<26} {'received back dBFS':>18} {'vs own speech dB':>16} {'seconds':>8}"
    print(header)
    print("-" * len(header))
    for label, r in (("off (baseline)", off), ("on", on)):
        print(f"{label:<26} {r['received_dbfs']:>18.1f} {r['received_dbfs'] - own:>16.1f} {r['seconds']:>8.1f}")
    print(f"end-to-end echo reduction by the panel: {off['received_dbfs'] - on['received_dbfs']:.1f} dB; "
          f"panel's own figures: {on['status']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--delays", default="30,80,150", help="echo delays in ms, comma-separated")
    ap.add_argument("--no-e2e", action="store_true", help="skip the end-to-end WebRTC run")
    ap.add_argument("--e2e-only", action="store_true", help="only the end-to-end WebRTC run")
    args = ap.parse_args()
    if not args.e2e_only:
        offline([int(d) for d in args.delays.split(",")])
    if not args.no_e2e:
        # In a network namespace of its own (tests/netns.py): the WebRTC peers gather its address, not the LAN's.
        with contained("bench-echo"):
            asyncio.run(end_to_end())


if __name__ == "__main__":
    main()
