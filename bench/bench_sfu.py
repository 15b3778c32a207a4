"""Many viewers through an SFU: the panel's CPU and memory with viewers served directly vs through Janus, and
WHIP publish setup time, each next to a baseline measured in the same run.

Everything runs in a veth pair of the bench's own (tests/netns.py: root and iproute2): the panel and the
viewers on one side, Janus 1.1.2 (VideoRoom) and its WHIP front end (tests/sfu.py) on the other; nothing
binds to or sends to this machine's LAN address.

1. Panel CPU-seconds per second and RSS (``panel run --simulate`` as its own process: synthetic camera
   encoded once in software, tone microphone, Opus): 1 viewer direct over WHEP (the baseline) and N direct,
   then the panel publishing once to Janus over WHIP with 1 and N viewers subscribed at Janus. Goal:
   N viewers through the SFU cost the panel at most 1.1x one direct viewer.
2. WHIP publish setup: from the POST (and from the start of publishing, the publish command's effect,
   offer included) to the first packet at the SFU (Janus's own "receiving" media event, wall-clock
   stamped by Janus), for the panel's publisher and for a bare aiortc + httpx WHIP publisher against the
   same Janus.

    .venv/bin/python bench/bench_sfu.py [--viewers 8] [--seconds 8] [--trials 8] [--size 640x480] [--fps 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack  # noqa: E402
from aiortc.mediastreams import AudioStreamTrack  # noqa: E402

from panel.auth import Secrets  # noqa: E402
from panel.daemon import Panel  # noqa: E402
from panel.platform import parse_config  # noqa: E402
from tests.media_resident import Resident  # noqa: E402
from tests.netns import Pair, available, veth_pair  # noqa: E402
from tests.sfu import Sfu, Subscriber, missing  # noqa: E402
from tests.support import config_dict, cpu_s, free_port, pct, rss_mb, write_config  # noqa: E402

TOKEN = "bench-installer-token-0123456789"


# -- Janus's media events: when the first packet reached the SFU ----------------------------------------------

class JanusEvents:
    """An HTTP receiver for Janus's sample event handler; keeps (Janus's wall time, event) of media events."""

    def __init__(self, host: str) -> None:
        self.received: list[tuple[float, dict[str, Any]]] = []
        events = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"[]")
                for e in body if isinstance(body, list) else [body]:
                    if isinstance(e, dict) and e.get("type") == 32:  # media
                        events.append((int(e.get("timestamp", 0)) / 1e6, e))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def first_receiving_after(self, wall: float) -> float | None:
        times = [t for t, e in list(self.received) if t >= wall and e.get("event", {}).get("receiving") is True]
        return min(times) if times else None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def until(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        await asyncio.sleep(0.005)
    raise RuntimeError(f"{what} did not happen within {timeout} s")


def media_section(width: int, height: int, fps: int, **extra: Any) -> dict[str, Any]:
    return {"video": {"width": width, "height": height, "fps": fps, "bitrate_kbps": 600},
            "audio": {"input": "synthetic", "output": "none"}, "monitor_audio": True, "linger_s": 0,
            "max_sessions": 16, "tones": {"enabled": False}, "snapshots": {"at_press": False}, **extra}


# -- 2: setup time --------------------------------------------------------------------------------------------

async def panel_setup_times(sfu: Sfu, events: JanusEvents, workdir: Path, trials: int,
                            media: dict[str, Any]) -> tuple[list[float], list[float]]:
    """(start -> first packet, POST -> first packet) in ms, for each trial."""
    cfg = config_dict(media=media | {"publish": {"targets": [{"id": "janus", "url": sfu.endpoint_url}]}})
    cfg["storage"] = {"dir": str(workdir / "inprocess")}
    cfg["log"] = {"level": "warning", "format": "json"}
    panel = Panel(parse_config(cfg), Secrets(installer_token=TOKEN, whip_tokens={"janus": sfu.token}), simulate=True)
    await panel.start()
    out, from_post = [], []
    try:
        publishing = panel.publishing
        assert publishing is not None
        publisher = publishing.publishers["janus"]
        for _ in range(trials):
            t0 = time.time()
            publishing.set(True)
            first = await until(lambda t0=t0: events.first_receiving_after(t0), 15, "the first packet at Janus")
            out.append((first - t0) * 1000)
            assert publisher.posted_wall is not None and publisher.posted_wall >= t0
            from_post.append((first - publisher.posted_wall) * 1000)
            await until(lambda: publisher.state == "publishing", 15, "publishing")
            publishing.set(False)
            await until(lambda: publisher.state == "idle", 15, "the DELETE")
    finally:
        await panel.stop("bench over")
    return out, from_post


async def bare_setup_times(sfu: Sfu, events: JanusEvents, trials: int) -> tuple[list[float], list[float]]:
    out, from_post = [], []
    async with httpx.AsyncClient(timeout=15) as http:
        for _ in range(trials):
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
            pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
            t0 = time.time()
            await pc.setLocalDescription(await pc.createOffer())
            posted = time.time()
            r = await http.post(sfu.endpoint_url, content=pc.localDescription.sdp,
                                headers={"content-type": "application/sdp", "authorization": f"Bearer {sfu.token}"})
            if r.status_code != 201:
                raise RuntimeError(f"bare publisher refused: {r.status_code} {r.text}")
            await pc.setRemoteDescription(RTCSessionDescription(sdp=r.text, type="answer"))
            first = await until(lambda t0=t0: events.first_receiving_after(t0), 15, "the first packet at Janus")
            out.append((first - t0) * 1000)
            from_post.append((first - posted) * 1000)
            await http.delete(httpx.URL(sfu.endpoint_url).join(r.headers["location"]),
                              headers={"authorization": f"Bearer {sfu.token}"})
            await pc.close()
    return out, from_post


# -- 1: CPU and memory ----------------------------------------------------------------------------------------

@contextmanager
def panel_process(workdir: Path, media: dict[str, Any], env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[bytes],
                                                                                             str]]:
    port = free_port()
    cfg = config_dict(media=media)
    cfg["storage"] = {"dir": str(workdir / f"state-{port}")}
    cfg["api"] = {"listen": f"127.0.0.1:{port}", "mutations_per_minute": 100_000}
    cfg["log"] = {"level": "warning", "format": "json"}
    path = write_config(workdir, cfg, f"panel-{port}.toml")
    with open(workdir / f"panel-{port}.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "panel", "run", "--config", str(path), "--simulate"],
                                cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PANEL_SECRET_INSTALLER_TOKEN": TOKEN, **env})
        try:
            yield proc, f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def ready(proc: subprocess.Popen[bytes], url: str) -> None:
    async with httpx.AsyncClient() as c:
        for _ in range(400):
            if proc.poll() is not None:
                raise RuntimeError("the panel exited; see its log")
            try:
                if (await c.get(url + "/api/v1/health", timeout=1)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("the panel did not start")


async def measure(pid: int, seconds: float) -> tuple[float, float]:
    await asyncio.sleep(1.0)  # the viewers' start-up (keyframes, bitrate ramp) is not the steady state
    c0, t0 = cpu_s(pid), time.monotonic()
    await asyncio.sleep(seconds)
    c1, t1 = cpu_s(pid), time.monotonic()
    return (c1 - c0) / (t1 - t0), rss_mb(pid)


async def direct_cost(workdir: Path, media: dict[str, Any], counts: list[int], seconds: float
                      ) -> dict[int, tuple[float, float]]:
    out = {}
    with panel_process(workdir, media, {}) as (proc, url):
        await ready(proc, url)
        async with httpx.AsyncClient(timeout=20) as http:
            for n in counts:
                viewers = [Resident(audio="recvonly", datachannel=False) for _ in range(n)]
                sessions = []
                for v in viewers:
                    r = await http.post(url + "/api/v1/media/whep", content=await v.offer(),
                                        headers={"content-type": "application/sdp",
                                                 "authorization": f"Bearer {TOKEN}"})
                    if r.status_code != 201:
                        raise RuntimeError(f"WHEP refused: {r.status_code} {r.text}")
                    await v.accept(r.text)
                    sessions.append(url + r.headers["location"])
                for v in viewers:
                    await v.wait_pictures(3, timeout=20)
                out[n] = await measure(proc.pid, seconds)
                for v, s in zip(viewers, sessions, strict=True):
                    await http.delete(s, headers={"authorization": f"Bearer {TOKEN}"})
                    await v.close()
    return out


async def sfu_cost(sfu: Sfu, workdir: Path, media: dict[str, Any], counts: list[int], seconds: float
                   ) -> dict[int, tuple[float, float]]:
    out = {}
    publish = {"targets": [{"id": "janus", "url": sfu.endpoint_url}], "when": "always"}
    with panel_process(workdir, media | {"publish": publish}, {"PANEL_SECRET_WHIP_TOKENS": f"janus={sfu.token}"}) \
            as (proc, url):
        await ready(proc, url)
        for n in counts:
            viewers = [await Subscriber.join(sfu, timeout=20) for _ in range(n)]
            await until(lambda viewers=viewers: all(len(v.frames) >= 3 for v in viewers), 30, "pictures at the viewers")
            out[n] = await measure(proc.pid, seconds)
            for v in viewers:
                await v.close()
    return out


async def main(args: argparse.Namespace, pair: Pair, workdir: Path) -> None:
    width, height = (int(x) for x in args.size.split("x"))
    media = media_section(width, height, args.fps)
    events = JanusEvents(pair.panel.address)
    sfu = Sfu(pair, workdir / "sfu", events_url=events.url)
    (workdir / "sfu").mkdir()
    sfu.start()
    try:
        print(f"SFU benchmark: {args.size} at {args.fps} fps, {args.viewers} viewers, {args.seconds} s per "
              f"measurement, Janus on {sfu.host} (a veth pair of the bench's own)", flush=True)
        panel_ms = await panel_setup_times(sfu, events, workdir, args.trials, media)
        bare_ms = await bare_setup_times(sfu, events, args.trials)
        print("  setup times: done", flush=True)
        direct = await direct_cost(workdir, media, [1, args.viewers], args.seconds)
        print("  direct viewers: done", flush=True)
        through = await sfu_cost(sfu, workdir, media, [1, args.viewers], args.seconds)
        print("  viewers through Janus: done", flush=True)
    finally:
        sfu.stop()
        events.close()

    base_cpu = direct[1][0]
    rows = [
        ("1 viewer direct (WHEP) [baseline]", direct[1], "1.00"),
        (f"{args.viewers} viewers direct (WHEP)", direct[args.viewers], f"{direct[args.viewers][0] / base_cpu:.2f}"),
        ("publishing to Janus, 1 viewer there", through[1], f"{through[1][0] / base_cpu:.2f}"),
        (f"publishing to Janus, {args.viewers} viewers there", through[args.viewers],
         f"{through[args.viewers][0] / base_cpu:.2f} (goal <= 1.1)"),
    ]
    print()
    print("| panel process | CPU-s per s | RSS MB | CPU vs 1 direct viewer |")
    print("|---|---|---|---|")
    for what, (cpu, rss), ratio in rows:
        print(f"| {what} | {cpu:.3f} | {rss:.0f} | {ratio} |")
    print()
    print("| WHIP publish setup, to the first packet at Janus | from | median | p95 | ratio (median) |")
    print("|---|---|---|---|---|")
    for label, (bare, panel) in (("the POST", (bare_ms[1], panel_ms[1])), ("the start (offer too)", (bare_ms[0],
                                                                                                  panel_ms[0]))):
        print(f"| bare aiortc + httpx publisher [baseline] | {label} | {statistics.median(bare):.0f} ms | "
              f"{pct(bare, 95):.0f} ms | 1.00 |")
        print(f"| the panel's publisher (panel/media/whip.py) | {label} | {statistics.median(panel):.0f} ms | "
              f"{pct(panel, 95):.0f} ms | {statistics.median(panel) / statistics.median(bare):.2f} |")


def run() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--viewers", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--fps", type=int, default=15)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    why = available() or missing()
    if why is not None:
        sys.exit(f"bench_sfu cannot run here: {why}")
    workdir = Path(tempfile.mkdtemp(prefix="bench-sfu-"))
    # The whole loop runs in the panel's namespace: its threads and the panel processes start there too.
    with veth_pair("bench-sfu") as pair, pair.panel.entered():
        asyncio.run(main(args, pair, workdir))


if __name__ == "__main__":
    run()
