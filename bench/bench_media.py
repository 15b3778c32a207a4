"""Media: answer -> first picture, glass-to-glass, and the panel's CPU and memory per viewer, next to
baselines measured in the same run.

The panel runs as its own process (``panel run --simulate`` with a [media] section), so its CPU time
and RSS are its own; the residents (aiortc peers that decode every picture) run in this process and
join over WHEP on loopback. Pictures carry their frame counter and capture time (the test pattern),
read back at the resident.

1. Answer -> first decoded picture at an aiortc resident: the time from the panel's answer reaching
   the resident to the first picture decoded. *cold*: nobody watching (the camera starts, the encoder
   opens); *warm*: another viewer is watching (a keyframe on demand). Baseline: a bare aiortc pair in
   this process, its sender encoding the same pattern with aiortc's own encoder.
2. Glass-to-glass on loopback: capture time stamped in the picture -> decoded at the resident.
   Baseline: the same bare aiortc pair.
3. CPU-seconds per second of streaming and RSS of the panel process, 1 and 4 viewers, for software
   encoding (synthetic camera, libx264 ultrafast/zerolatency, encoded once) and for H.264 pass-through
   (a pre-encoded Annex-B file, never decoded); next to ffmpeg encoding the same pictures with the
   same codec and settings, and aiortc's default H.264 encoder on them.

    .venv/bin/python bench/bench_media.py [--seconds 8] [--trials 12] [--size 640x480] [--fps 15]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from aiortc import (  # noqa: E402
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
)

from panel.media.encoder import EncoderSettings, VideoEncoder  # noqa: E402
from panel.media.pattern import PatternPainter  # noqa: E402
from panel.media.sources import TIME_BASE  # noqa: E402
from tests.media_resident import Resident  # noqa: E402
from tests.netns import contained  # noqa: E402
from tests.support import config_dict, cpu_s, free_port, pct, rss_mb, write_config  # noqa: E402

TOKEN = "bench-installer-token-0123456789"


class PanelProcess:
    def __init__(self, workdir: Path, video: dict[str, Any]) -> None:
        self.port = free_port()
        media = {"video": video, "audio": {"input": "none", "output": "none"}, "linger_s": 0, "max_sessions": 8,
                 "tones": {"enabled": False}, "snapshots": {"at_press": False}}
        cfg = config_dict(media=media)
        cfg["storage"] = {"dir": str(workdir / f"state-{self.port}")}
        # Many sessions from one address: lift the API's limit on changing requests.
        cfg["api"] = {"listen": f"127.0.0.1:{self.port}", "mutations_per_minute": 100_000}
        cfg["log"] = {"level": "warning", "format": "json"}
        self.path = write_config(workdir, cfg, f"panel-{self.port}.toml")
        self.log = open(workdir / f"panel-{self.port}.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "panel", "run", "--config", str(self.path), "--simulate"],
                                     cwd=str(ROOT), stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PANEL_SECRET_INSTALLER_TOKEN": TOKEN})
        self.url = f"http://127.0.0.1:{self.port}"

    async def ready(self) -> None:
        async with httpx.AsyncClient() as c:
            for _ in range(300):
                if self.proc.poll() is not None:
                    log = await asyncio.to_thread(Path(self.log.name).read_text)
                    raise RuntimeError(f"panel exited: {log[-2000:]}")
                try:
                    if (await c.get(self.url + "/api/v1/health", timeout=1)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError("panel did not start")

    async def join(self, resident: Resident) -> tuple[str, float]:
        """POST the offer; returns (session URL, monotonic time the answer was applied)."""
        offer = await resident.offer()
        async with httpx.AsyncClient(timeout=20) as c:
            r = await c.post(self.url + "/api/v1/media/whep", content=offer,
                             headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {TOKEN}"})
        if r.status_code != 201:
            raise RuntimeError(f"WHEP refused: {r.status_code} {r.text}")
        t = time.monotonic()
        await resident.accept(r.text)
        return self.url + r.headers["location"], t

    async def leave(self, url: str, resident: Resident) -> None:
        async with httpx.AsyncClient(timeout=20) as c:
            await c.delete(url, headers={"Authorization": f"Bearer {TOKEN}"})
        await resident.close()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def viewer() -> Resident:
    return Resident(audio="", datachannel=False)


# -- 1 and 2: latency ------------------------------------------------------------------------------------

async def first_picture(panel: PanelProcess, trials: int, warm: bool) -> list[float]:
    out = []
    background = None
    if warm:
        background = viewer()
        bg_url, _ = await panel.join(background)
        await background.wait_pictures(5)
    for _ in range(trials):
        r = viewer()
        url, t_answer = await panel.join(r)
        await r.wait_pictures(1, timeout=10)
        first = next(p for p in r.pictures if p.stamp is not None)
        out.append((first.received_mono - t_answer) * 1000)
        await panel.leave(url, r)
        await asyncio.sleep(0.2)
    if background is not None:
        await panel.leave(bg_url, background)
    return out


async def glass_to_glass(panel: PanelProcess, seconds: float) -> list[float]:
    r = viewer()
    url, _ = await panel.join(r)
    await r.wait_pictures(3)
    start = len(r.pictures)
    await asyncio.sleep(seconds)
    ages = [float(p.stamp.age_ms(p.received_wall)) for p in r.pictures[start:] if p.stamp is not None]
    await panel.leave(url, r)
    return ages


class PatternTrack(VideoStreamTrack):
    """The bare-aiortc baseline's camera: the same pattern, encoded by aiortc's sender itself."""

    def __init__(self, width: int, height: int, fps: int) -> None:
        super().__init__()
        self.painter = PatternPainter(width, height)
        self.fps = fps
        self.n = 0
        self.start = time.monotonic()

    async def recv(self) -> Any:
        self.n += 1
        delay = self.start + self.n / self.fps - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = self.painter.paint(self.n, time.time())
        frame.pts, frame.time_base = self.n * (90000 // self.fps), TIME_BASE
        return frame


async def bare_aiortc(width: int, height: int, fps: int, trials: int, seconds: float) -> tuple[list[float], list[float]]:
    firsts: list[float] = []
    ages: list[float] = []
    for i in range(trials):
        sender = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        t = sender.addTransceiver(PatternTrack(width, height, fps), direction="sendonly")
        t.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                               if c.mimeType in ("video/H264", "video/rtx")])
        r = viewer()
        offer = await r.offer()
        await sender.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await sender.setLocalDescription(await sender.createAnswer())
        t_answer = time.monotonic()
        await r.accept(sender.localDescription.sdp)
        await r.wait_pictures(1, timeout=10)
        first = next(p for p in r.pictures if p.stamp is not None)
        firsts.append((first.received_mono - t_answer) * 1000)
        if i == 0:
            start = len(r.pictures)
            await asyncio.sleep(seconds)
            ages = [float(p.stamp.age_ms(p.received_wall)) for p in r.pictures[start:] if p.stamp is not None]
        await r.close()
        await sender.close()
    return firsts, ages


# -- 3: CPU and memory ---------------------------------------------------------------------------------

async def streaming_cost(panel: PanelProcess, viewers: int, seconds: float) -> tuple[float, float, int]:
    """(CPU-s per s of the panel process, its RSS in MB, pictures decoded per viewer per s)."""
    residents = [viewer() for _ in range(viewers)]
    urls = []
    for r in residents:
        url, _ = await panel.join(r)
        urls.append(url)
    for r in residents:
        await r.wait_pictures(5, timeout=15)
    await asyncio.sleep(1.0)
    counts = [len(r.pictures) for r in residents]
    c0, t0 = cpu_s(panel.proc.pid), time.monotonic()
    await asyncio.sleep(seconds)
    c1, t1 = cpu_s(panel.proc.pid), time.monotonic()
    rss = rss_mb(panel.proc.pid)
    fps = min((len(r.pictures) - n) for r, n in zip(residents, counts, strict=True)) / (t1 - t0)
    for r, url in zip(residents, urls, strict=True):
        await panel.leave(url, r)
    return (c1 - c0) / (t1 - t0), rss, round(fps)


def make_frames(width: int, height: int, count: int, noise: float = 0.0) -> list[Any]:
    """The pattern; with ``noise`` (luma standard deviation) it costs an encoder what a camera's does."""
    import av
    import numpy as np

    painter = PatternPainter(width, height)
    rng = np.random.default_rng(1)
    frames = []
    for i in range(count):
        f = painter.paint(i, time.time() + i / 15)
        if noise:
            buf = f.to_ndarray()
            luma = buf[:height].astype(np.int16) + rng.normal(0, noise, (height, width)).astype(np.int16)
            buf[:height] = np.clip(luma, 16, 235).astype(np.uint8)
            f = av.VideoFrame.from_ndarray(buf, format="yuv420p")
        f.pts, f.time_base = i * 6000, TIME_BASE
        frames.append(f)
    return frames


def encoder_costs(settings: EncoderSettings, frames: list[Any], workdir: Path) -> dict[str, float]:
    """CPU-seconds per second of video for: our encoder, ffmpeg (same codec and settings), aiortc's."""
    seconds_of_video = len(frames) / settings.fps
    ours = VideoEncoder(settings)
    t0 = time.process_time()
    for f in frames:
        ours.encode(f, False)
    ours_cpu = time.process_time() - t0

    raw = workdir / "frames.yuv"
    with open(raw, "wb") as fh:
        for f in frames:
            fh.write(f.to_ndarray().tobytes())
    def ffmpeg(frame_count: int) -> float:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(["/usr/bin/ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "yuv420p",
                        "-s", f"{settings.width}x{settings.height}", "-r", str(settings.fps), "-i", str(raw),
                        *settings.ffmpeg_args(), "-frames:v", str(frame_count), "-f", "null", "-"], check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

    # ffmpeg's own start-up (loading, probing) is not encoding: measured with one picture and taken off.
    startup = min(ffmpeg(1) for _ in range(3))
    ffmpeg_cpu = max(0.0, ffmpeg(len(frames)) - startup)

    from aiortc.codecs.h264 import H264Encoder
    aio = H264Encoder()
    t0 = time.process_time()
    for f in frames:
        aio.encode(f)
    aio_cpu = time.process_time() - t0
    return {"ours": ours_cpu / seconds_of_video, "ffmpeg": ffmpeg_cpu / seconds_of_video,
            "aiortc": aio_cpu / seconds_of_video}


def passthrough_file(path: Path, width: int, height: int, fps: int, seconds: int) -> None:
    """What a camera's encoder would write: the pattern as H.264 Annex-B, GOP 1 s."""
    enc = VideoEncoder(EncoderSettings("h264", width, height, fps, 800, fps))
    with open(path, "wb") as fh:
        for f in make_frames(width, height, fps * seconds):
            for p in enc.encode(f, False):
                fh.write(bytes(p))


# -- the run -------------------------------------------------------------------------------------------

async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8.0, help="measuring window per CPU/latency run")
    ap.add_argument("--trials", type=int, default=12, help="answer -> first picture trials per case")
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--fps", type=int, default=15)
    args = ap.parse_args()
    width, height = map(int, args.size.split("x"))
    fps = args.fps
    workdir = Path(tempfile.mkdtemp(prefix="bench-media-"))
    rows: list[tuple[str, str, str]] = []

    def row(what: str, value: str, note: str = "") -> None:
        rows.append((what, value, note))
        print(f"  {what}: {value} {note}", flush=True)

    soft_video = {"source": "synthetic", "width": width, "height": height, "fps": fps, "bitrate_kbps": 800,
                  "gop_s": 2.0}
    print(f"media benchmark: {width}x{height}@{fps}, {os.cpu_count()} CPUs", flush=True)

    panel = PanelProcess(workdir, soft_video)
    try:
        await panel.ready()
        await first_picture(panel, 2, warm=False)  # warm-up (imports, first encoder)
        cold = await first_picture(panel, args.trials, warm=False)
        warm = await first_picture(panel, args.trials, warm=True)
        g2g = await glass_to_glass(panel, args.seconds)
        soft1 = await streaming_cost(panel, 1, args.seconds)
        soft4 = await streaming_cost(panel, 4, args.seconds)
    finally:
        panel.stop()
    bare_first, bare_g2g = await bare_aiortc(width, height, fps, max(4, args.trials // 2), args.seconds)

    row("answer->first picture, cold (median / p95)", f"{statistics.median(cold):.0f} / {pct(cold, 95):.0f} ms",
        "target < 300 ms median")
    row("answer->first picture, warm (median / p95)", f"{statistics.median(warm):.0f} / {pct(warm, 95):.0f} ms")
    row("  baseline bare aiortc pair (median / p95)",
        f"{statistics.median(bare_first):.0f} / {pct(bare_first, 95):.0f} ms",
        f"ratio cold {statistics.median(cold) / statistics.median(bare_first):.2f}")
    row("glass-to-glass (median / p95)", f"{statistics.median(g2g):.0f} / {pct(g2g, 95):.0f} ms",
        f"{len(g2g)} pictures; aiortc receiver adds ~1 frame interval")
    row("  baseline bare aiortc pair (median / p95)", f"{statistics.median(bare_g2g):.0f} / {pct(bare_g2g, 95):.0f} ms",
        f"ratio {statistics.median(g2g) / statistics.median(bare_g2g):.2f}")

    pt_file = workdir / "camera.h264"
    passthrough_file(pt_file, width, height, fps, 4)
    panel = PanelProcess(workdir, {"source": "h264_file", "file": str(pt_file), "width": width, "height": height,
                                   "fps": fps})
    try:
        await panel.ready()
        await first_picture(panel, 1, warm=False)
        pt1 = await streaming_cost(panel, 1, args.seconds)
        pt4 = await streaming_cost(panel, 4, args.seconds)
    finally:
        panel.stop()

    settings = EncoderSettings("h264", width, height, fps, 800, round(2.0 * fps))
    enc = encoder_costs(settings, make_frames(width, height, fps * 10), workdir)
    noisy = encoder_costs(settings, make_frames(width, height, fps * 10, noise=6.0), workdir)

    row("software H.264, 1 viewer", f"{soft1[0]:.3f} CPU-s/s, {soft1[1]:.0f} MB RSS", f"{soft1[2]} fps/viewer")
    row("software H.264, 4 viewers", f"{soft4[0]:.3f} CPU-s/s, {soft4[1]:.0f} MB RSS",
        f"{soft4[2]} fps/viewer; 4/1 = {soft4[0] / soft1[0]:.2f}x (target < 1.5x)")
    row("pass-through H.264, 1 viewer", f"{pt1[0]:.3f} CPU-s/s, {pt1[1]:.0f} MB RSS", f"{pt1[2]} fps/viewer")
    per_extra = (pt4[0] - pt1[0]) / 3
    row("pass-through H.264, 4 viewers", f"{pt4[0]:.3f} CPU-s/s, {pt4[1]:.0f} MB RSS",
        f"{pt4[2]} fps/viewer; {per_extra:.4f} CPU-s/s per extra viewer (target <= 0.01)")
    row("encoder alone: ours (libx264 ultrafast/zerolatency)", f"{enc['ours']:.4f} CPU-s/s",
        f"{enc['ours'] / enc['ffmpeg']:.2f}x ffmpeg (target <= 1.5x)")
    row("  baseline ffmpeg, same frames, same codec and settings", f"{enc['ffmpeg']:.4f} CPU-s/s")
    row("  aiortc's default H.264 encoder, same frames", f"{enc['aiortc']:.4f} CPU-s/s",
        f"{enc['aiortc'] / enc['ffmpeg']:.2f}x ffmpeg")
    row("encoder alone, camera-like noise: ours", f"{noisy['ours']:.4f} CPU-s/s",
        f"{noisy['ours'] / noisy['ffmpeg']:.2f}x ffmpeg (target <= 1.5x)")
    row("  baseline ffmpeg, same noisy frames", f"{noisy['ffmpeg']:.4f} CPU-s/s")
    row("  aiortc's default H.264 encoder, same noisy frames", f"{noisy['aiortc']:.4f} CPU-s/s",
        f"{noisy['aiortc'] / noisy['ffmpeg']:.2f}x ffmpeg")

    print()
    width_what = max(len(r[0]) for r in rows)
    width_val = max(len(r[1]) for r in rows)
    print(f"{'measure':<{width_what}}  {'value':<{width_val}}  note")
    print("-" * (width_what + width_val + 40))
    for what, value, note in rows:
        print(f"{what:<{width_what}}  {value:<{width_val}}  {note}")


if __name__ == "__main__":
    # In a network namespace of its own (tests/netns.py): the WebRTC peers gather 10.201.0.1, not the LAN address.
    with contained("bench-media"):
        asyncio.run(main())
