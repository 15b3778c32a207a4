"""JPEG for snapshots and MJPEG: what one picture costs, next to ffmpeg encoding the same pictures in
the same run, and what 4 MJPEG viewers cost next to 1 (one encode per picture, shared).

1. CPU per picture: ``JpegEncoder`` (swscale to full-range yuvj420p + PyAV's mjpeg, as the panel
   does it) on the test pattern, vs ``ffmpeg -c:v mjpeg`` with the same quantiser on the same raw
   pictures (its start-up cost removed by also timing a one-picture run), single-threaded both.
2. MJPEG fan-out: a simulated panel in this process, 1 and then 4 MJPEG viewers over HTTP for a few
   seconds each; JPEG encodes and encoder CPU per second of streaming.

    .venv/bin/python bench/bench_jpeg.py [--size 640x480] [--frames 150] [--seconds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from panel.media.jpeg import JpegEncoder, quality_to_qscale  # noqa: E402
from panel.media.pattern import PatternPainter  # noqa: E402
from tests.media_rig import INSTALLER, media_config, start_panel_inprocess  # noqa: E402

QUALITY = 80


def ours_ms_per_picture(frames: list, rounds: int = 3) -> tuple[float, int]:
    results = []
    size = 0
    for _ in range(rounds):
        enc = JpegEncoder(QUALITY)
        t0 = time.process_time()  # process, not thread: any codec threads count too
        for f in frames:
            size = len(enc.encode(f))
        results.append((time.process_time() - t0) / len(frames) * 1000)
    return statistics.median(results), size


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def ffmpeg_cpu(raw: Path, width: int, height: int, frames: int) -> float:
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-threads", "1", "-f", "rawvideo", "-pix_fmt", "yuv420p",
           "-s", f"{width}x{height}", "-r", "15", "-i", str(raw), "-frames:v", str(frames), "-threads", "1",
           "-c:v", "mjpeg", "-pix_fmt", "yuvj420p", "-q:v", str(quality_to_qscale(QUALITY)), "-f", "null", "-"]
    before = children_cpu()
    subprocess.run(cmd, check=True)
    return children_cpu() - before


def ffmpeg_ms_per_picture(frames: list, width: int, height: int, rounds: int = 3) -> float:
    with tempfile.TemporaryDirectory() as d:
        raw = Path(d) / "frames.yuv"
        with raw.open("wb") as f:
            for frame in frames:
                f.write(frame.to_ndarray().tobytes())
        results = []
        for _ in range(rounds):
            one = ffmpeg_cpu(raw, width, height, 1)
            many = ffmpeg_cpu(raw, width, height, len(frames))
            results.append((many - one) / (len(frames) - 1) * 1000)
        return statistics.median(results)


async def fan_out(width: int, height: int, seconds: float) -> dict[int, tuple[float, float, int]]:
    """viewers -> (encodes per second, encoder CPU-seconds per second, parts delivered per second)."""
    out: dict[int, tuple[float, float, int]] = {}
    with tempfile.TemporaryDirectory() as d:
        panel = await start_panel_inprocess(Path(d), media_config(video={"width": width, "height": height, "fps": 15},
                                                                  mjpeg={"max_fps": 15, "max_viewers": 8}))
        try:
            visitor = panel.visitor
            assert visitor is not None and visitor.jpegs is not None
            jpegs = visitor.jpegs
            port = panel.api.bound_port  # type: ignore[union-attr]
            for n in (1, 4):
                parts = [0] * n
                stop = asyncio.Event()

                async def view(i: int, parts: list[int] = parts, stop: asyncio.Event = stop) -> None:
                    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
                        async with c.stream("GET", "/api/v1/video.mjpeg",
                                            headers={"Authorization": f"Bearer {INSTALLER}"}) as r:
                            async for chunk in r.aiter_raw():
                                parts[i] += chunk.count(b"--panelframe\r\n")
                                if stop.is_set():
                                    return

                tasks = [asyncio.ensure_future(view(i)) for i in range(n)]
                await asyncio.sleep(1.0)  # warm up: camera and producer running
                e0, c0, p0, t0 = jpegs.encodes, jpegs.encoder.cpu_s, sum(parts), time.monotonic()
                await asyncio.sleep(seconds)
                dt = time.monotonic() - t0
                out[n] = ((jpegs.encodes - e0) / dt, (jpegs.encoder.cpu_s - c0) / dt, round((sum(parts) - p0) / dt))
                stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)
                await asyncio.sleep(0.5)
        finally:
            await panel.stop("bench over")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args()
    width, height = map(int, args.size.split("x"))
    painter = PatternPainter(width, height)
    frames = [painter.paint(i, time.time() + i / 15) for i in range(args.frames)]

    ours, size = ours_ms_per_picture(frames)
    ffmpeg = ffmpeg_ms_per_picture(frames, width, height)
    fan = asyncio.run(fan_out(width, height, args.seconds))

    rows = [
        ("JPEG encode, panel (ms CPU / picture)", f"{ours:.2f}", f"{size // 1024} KiB at quality {QUALITY}"),
        ("JPEG encode, ffmpeg -c:v mjpeg (ms CPU / picture)", f"{ffmpeg:.2f}", "baseline, same pictures and qscale"),
        ("panel / ffmpeg", f"{ours / ffmpeg:.2f}x", ""),
    ]
    for n, (eps, cpu, pps) in sorted(fan.items()):
        rows.append((f"MJPEG {n} viewer(s): encodes / s", f"{eps:.1f}", f"{pps} parts/s delivered in all"))
        rows.append((f"MJPEG {n} viewer(s): encoder CPU-s / s", f"{cpu:.4f}", ""))
    if 1 in fan and 4 in fan and fan[1][1] > 0:
        rows.append(("MJPEG encoder CPU, 4 viewers / 1 viewer", f"{fan[4][1] / fan[1][1]:.2f}x",
                     "one encode per picture whatever the viewers (per-viewer encoding would be ~4x)"))
    w = max(len(r[0]) for r in rows)
    print(f"JPEG benchmark: {width}x{height}, {args.frames} pictures; MJPEG {args.seconds:g} s per step")
    print(f"{'measure':<{w}}  {'value':<9}  note")
    print("-" * (w + 60))
    for what, value, note in rows:
        print(f"{what:<{w}}  {value:<9}  {note}")


if __name__ == "__main__":
    main()
