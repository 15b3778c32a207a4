"""Test support: configs, free ports, and a simulated panel running as a real subprocess."""

from __future__ import annotations

import copy
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import tomli_w

from .eventually import eventually_sync

ROOT = Path(__file__).resolve().parent.parent

BASE_CONFIG: dict[str, Any] = {
    "panel": {"id": "test-panel", "name": "Test entrance"},
    "gpio": {"pin_factory": "mock"},
    "storage": {"dir": "state"},
    "api": {"listen": "127.0.0.1:0"},
    "log": {"level": "info", "format": "json"},
    "buttons": [
        {"id": "b303", "pin": 17, "unit": {"id": "303", "label": "303"}, "debounce_ms": 20},
        {"id": "b304", "pin": 27, "unit": {"id": "304", "label": "304"}, "debounce_ms": 20},
    ],
    "door": {
        "held_open_s": 30,
        "relays": [{"id": "main", "pin": 26, "hold_s": 2, "max_on_s": 6}],
        "contact": {"pin": 22, "active": "high", "debounce_ms": 20},
        "exit_button": {"pin": 23, "debounce_ms": 20},
    },
    "tamper": {"pin": 24, "active": "high", "debounce_ms": 20},
    "lights": [{"id": "door", "pin": 20, "role": "door"}],
}


def config_dict(**sections: Any) -> dict[str, Any]:
    """The base config with whole top-level sections replaced (or removed when given None)."""
    cfg = copy.deepcopy(BASE_CONFIG)
    for key, value in sections.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    return cfg


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(directory: Path, cfg: dict[str, Any], name: str = "panel.toml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(tomli_w.dumps(cfg))
    return path


@dataclass
class PanelProcess:
    """``panel run --simulate`` as a subprocess, reachable over its API."""

    config_path: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    args: list[str] = field(default_factory=list)  # more `panel run` options, e.g. --demo
    nofile: int | None = None  # RLIMIT_NOFILE of the panel (soft and hard): a Pi's 1024, say

    def _limits(self) -> None:
        if self.nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> PanelProcess:
        self.log_path = self.config_path.parent / f"panel-{int(time.time() * 1000)}.log"
        env = {**os.environ, **self.env}
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "panel", "run", "--config", str(self.config_path),
                                      "--simulate", *self.args], stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     preexec_fn=self._limits if self.nofile is not None else None)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20) -> None:
        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"panel exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return httpx.get(self.url + "/api/v1/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        eventually_sync(up, timeout, "the panel up", interval=0.05, detail=self.log)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def health_details(self) -> dict[str, Any]:
        """``GET /api/v1/health/details`` with the installer token this panel was started with (the public
        ``/api/v1/health`` says ok or degraded only)."""
        token = self.env.get("PANEL_SECRET_INSTALLER_TOKEN")
        assert token, "start this panel with PANEL_SECRET_INSTALLER_TOKEN to read its health details"
        r = self.api("GET", "/api/v1/health/details", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, self.url + path, timeout=30, **kw)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def start_panel(tmp_path: Path, cfg: dict[str, Any] | None = None, env: dict[str, str] | None = None,
                wait: bool = True) -> PanelProcess:
    cfg = copy.deepcopy(cfg or BASE_CONFIG)
    port = free_port()
    cfg.setdefault("api", {})["listen"] = f"127.0.0.1:{port}"
    path = write_config(tmp_path, cfg)
    return PanelProcess(path, port, env or {}).start(wait=wait)


# -- process figures for the benchmarks (bench/) -----------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    """A process's resident memory in MB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
