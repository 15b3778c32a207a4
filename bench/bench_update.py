"""Updates against a plain service restart, measured in the same run: `update` -> committed, the service gap,
and the rollback time.

The panel runs as it does under systemd: the launcher (``panel/update/_boot.py``) execs the daemon and is
started again whenever it exits (``Restart=always``, restart delay 0 here), in simulation, with a real HTTPS
release server and real signed releases of this tree. Each round:

- **plain restart**: SIGTERM to the daemon, and the next start (what ``systemctl restart panel`` does);
- **update**: the ``update`` request (API) -> ``update.committed`` (download, verify, install, restart into the
  new slot, health check; ``update.commit_after_s = 0`` so the number is the mechanism's, not the soak's);
- **service gap** of each: from the old daemon's stop (its ``panel stopped`` log line minus its ``stop_s``) to
  the new daemon's ``door live`` (buttons wired, relays driven off), from the daemons' own log timestamps;
- **rollback**: the request of a release that crashes at start -> the previous release's ``door live`` again
  (``update.max_boots = 1``: one failed start, then the launcher goes back).

Goal (issue 10): the update's service gap <= 3 s on this machine.

    .venv/bin/python bench/bench_update.py --runs 3
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(os.environ.get("PANEL_ROOT") or Path(__file__).resolve().parents[1])
sys.path.insert(0, str(ROOT))

from tests.test_update_process import Service, idle  # noqa: E402
from tests.update_support import CRASHES_AT_START, Vendor, make_release, release_server  # noqa: E402


def log_records(service: Service) -> list[dict[str, Any]]:
    out = []
    for line in service.log_path.read_text(errors="replace").splitlines():
        if line.startswith("<") and ">" in line[:4]:
            try:
                rec = json.loads(line[line.index(">") + 1:])
            except ValueError:
                continue
            rec["t"] = datetime.datetime.strptime(rec["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=datetime.UTC).timestamp()
            out.append(rec)
    return out


def gap_after(service: Service, since: int, reason_prefix: str) -> float:
    """Seconds from the stop of the daemon stopped for ``reason_prefix`` to the next daemon's ``door live``."""
    recs = log_records(service)[since:]
    stop = next(r for r in recs if r["msg"] == "panel stopped" and str(r.get("reason", "")).startswith(reason_prefix))
    live = next(r for r in recs if r["msg"] == "door live" and r["t"] >= stop["t"])
    return float(live["t"] - (stop["t"] - float(stop.get("stop_s", 0.0))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    rows: dict[str, list[float]] = {k: [] for k in ("restart", "restart_gap", "update", "update_gap", "rollback")}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        with release_server(tmp / "srv") as server:
            vendor = Vendor.make(tmp / "keys")
            releases = [make_release(tmp / "srv", f"{2 + i}.0.0") for i in range(args.runs)]
            crashing = make_release(tmp / "srv", "9.0.0", replace=CRASHES_AT_START)
            svc = Service(tmp / "panel", tmp / "opt", server, vendor, commit_after_s=0, max_boots=1)
            svc.start()
            try:
                svc.until("up", idle)
                for release in releases:
                    # A plain restart.
                    since = len(log_records(svc))
                    pid = svc.proc.pid if svc.proc else 0
                    t0 = time.monotonic()
                    svc.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
                    svc.until("restarted", lambda u, pid=pid: idle(u) and svc.proc is not None and svc.proc.pid != pid)
                    rows["restart"].append(time.monotonic() - t0)
                    rows["restart_gap"].append(gap_after(svc, since, "SIGTERM"))
                    # An update.
                    since = len(log_records(svc))
                    t0 = time.monotonic()
                    r = svc.post("/api/v1/update", release.command(server, vendor.key))
                    assert r.status_code == 200, r.text
                    svc.until("committed", lambda u, v=release.version: u["running"]["version"] == v and idle(u))
                    rows["update"].append(time.monotonic() - t0)
                    rows["update_gap"].append(gap_after(svc, since, "update: restarting"))
                # A rollback: a release that crashes at start, once.
                running = svc.until("up", idle)["running"]["version"]
                since = len(log_records(svc))
                t0 = time.monotonic()
                r = svc.post("/api/v1/update", crashing.command(server, vendor.key))
                assert r.status_code == 200, r.text
                svc.until("rolled back", lambda u: u["running"]["version"] == running and idle(u)
                          and (u["last"] or {}).get("result") == "rolled_back")
                recs = log_records(svc)[since:]
                live = [r for r in recs if r["msg"] == "door live"][-1]
                t_request = time.time() - (time.monotonic() - t0)
                rows["rollback"].append(live["t"] - t_request)
            finally:
                svc.stop()
    base = statistics.median(rows["restart"])
    print(f"\nbench_update: {args.runs} runs; machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
          f"release {releases[0].size / 1024:.0f} KiB over HTTPS on loopback\n")
    print(f"| {'what':<58} | {'median':>8} | {'max':>8} | {'vs restart':>10} |")
    print(f"|{'-' * 60}|{'-' * 10}|{'-' * 10}|{'-' * 12}|")
    labels = {"restart": "plain restart: SIGTERM -> API answering again (baseline)",
              "restart_gap": "plain restart: service gap (stop -> door live)",
              "update": "update: request -> committed",
              "update_gap": "update: service gap (stop -> door live on the new slot)",
              "rollback": "rollback: request of a crashing release -> old door live"}
    for key, label in labels.items():
        vals = rows[key]
        med = statistics.median(vals)
        print(f"| {label:<58} | {med:>6.2f} s | {max(vals):>6.2f} s | {med / base:>9.2f}x |")
    gap = statistics.median(rows["update_gap"])
    print(f"\ngoal: update service gap <= 3 s: {'met' if gap <= 3 else 'NOT met'} ({gap:.2f} s)")


if __name__ == "__main__":
    main()
