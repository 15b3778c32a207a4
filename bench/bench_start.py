"""Process start -> door live (buttons, relay, store) and -> API answering; idle resident memory.

Each row starts a fresh `python -m panel run --simulate` and reads its JSON log: "door live" is logged by the
composition root once the store, GPIO, journal, door, calls and inputs are built (before any network), "panel
running" once the API listens. Times are measured by this process from the spawn, so interpreter start and
imports count. The baseline, measured in the same run, is a bare interpreter start (`python -c pass`) and an
interpreter that only imports what every Python service on the panel imports anyway (asyncio, logging, json):
the panel's own cost is the difference. RSS is read from /proc after the panel has idled for --idle-s.

    .venv/bin/python bench/bench_start.py --runs 7
"""

from __future__ import annotations

import argparse
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(os.environ.get("PANEL_ROOT") or Path(__file__).resolve().parents[1])
sys.path.insert(0, str(ROOT))

from tests.support import config_dict, free_port, write_config  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bare(code: str) -> float:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", code], check=True)
    return (time.monotonic() - t0) * 1000


def one_run(media: bool, idle_s: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config_dict()
        cfg["storage"] = {"dir": str(Path(tmp) / "state")}
        cfg["api"] = {"listen": f"127.0.0.1:{free_port()}", "tls": "off"}
        cfg["log"] = {"format": "json"}
        if media:
            cfg["media"] = {"video": {"source": "synthetic", "width": 640, "height": 480, "fps": 15},
                            "audio": {"input": "synthetic", "output": "record"}}
        else:
            cfg.pop("media", None)
        path = write_config(Path(tmp), cfg)
        env = {**os.environ, "PANEL_SECRET_INSTALLER_TOKEN": "bench-start-installer-token-0123"}
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "panel", "run", "--config", str(path), "--simulate"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        out: dict[str, float] = {}
        buf = b""
        assert proc.stdout is not None
        try:
            deadline = t0 + 30
            while "api_ms" not in out and time.monotonic() < deadline:
                ready, _, _ = select.select([proc.stdout], [], [], 0.5)
                if not ready:
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError("the panel exited: " + buf.decode(errors="replace")[-2000:])
                now = time.monotonic()
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    try:
                        msg = json.loads(line[line.find(b"{"):]).get("msg", "")
                    except ValueError:
                        continue
                    if msg == "door live":
                        out["door_ms"] = (now - t0) * 1000
                    elif msg == "panel running":
                        out["api_ms"] = (now - t0) * 1000
            if "api_ms" not in out:
                raise RuntimeError("the panel did not start within 30 s")
            time.sleep(idle_s)  # idling is the point of the measurement, not a wait for an event
            out["rss_mb"] = rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(10)
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--idle-s", type=float, default=3.0)
    args = ap.parse_args()
    py_bare = [bare("pass") for _ in range(args.runs)]
    py_std = [bare("import asyncio, logging, json") for _ in range(args.runs)]
    runs = {m: [one_run(m, args.idle_s) for _ in range(args.runs)] for m in (False, True)}
    base = statistics.median(py_std)
    print(f"\nbench_start: {args.runs} runs each; machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}\n")
    print(f"| {'what':<48} | {'median':>9} | {'max':>9} | {'vs baseline':>12} |")
    print(f"|{'-' * 50}|{'-' * 11}|{'-' * 11}|{'-' * 14}|")

    def row(what: str, values: list[float], unit: str, ratio: bool = True) -> None:
        med = statistics.median(values)
        rel = f"{med / base:.2f}x" if ratio else ""
        print(f"| {what:<48} | {med:>6.0f} {unit:<2} | {max(values):>6.0f} {unit:<2} | {rel:>12} |")

    row("baseline: python -c pass", py_bare, "ms")
    row("baseline: python -c 'import asyncio, logging, json'", py_std, "ms")
    for media, label in ((False, "no media"), (True, "media idle")):
        r = runs[media]
        if all("door_ms" in x for x in r):  # versions before the composition root did not log it
            row(f"spawn -> door live ({label})", [x["door_ms"] for x in r], "ms")
        row(f"spawn -> API answering ({label})", [x["api_ms"] for x in r], "ms")
        row(f"idle RSS ({label})", [x["rss_mb"] for x in r], "MB", ratio=False)
    print("\ntargets (issue 8): door live within 500 ms of process start; idle RSS <= 60 MB without media, "
          "<= 90 MB with media idle")


if __name__ == "__main__":
    main()
