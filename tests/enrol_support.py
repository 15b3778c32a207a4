"""Shared by the enrolment tests: a panel configured to enrol with the tests' EST endpoint, and its API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from panel.auth import Secrets
from panel.daemon import Panel
from panel.enrol import ENROLMENT_DIR
from panel.platform import parse_config

from .est_server import EstServer
from .support import config_dict, write_config

INSTALLER = "installer-token-0123456789"


def enrol_config(tmp: Path, est: EstServer, panel_id: str, **enrol: Any) -> dict[str, Any]:
    data = config_dict(panel={"id": panel_id, "name": "Enrolment test"})
    data["storage"] = {"dir": str(tmp / "state")}
    data["mqtt"] = {"reconnect_max_s": 1}
    data["enrol"] = {"est_url": est.url, "ca_file": str(est.broker.ca_file), "retry_s": 0.1, "timeout_s": 5, **enrol}
    return data


class SyncedClock:
    """The ClockSync interface, synchronised: commands are judged by their exp (test_mqtt.py covers the rest)."""

    def synchronized(self) -> bool:
        return True


async def start_panel(tmp: Path, data: dict[str, Any]) -> Panel:
    p = Panel(parse_config(data), Secrets(installer_token=INSTALLER), simulate=True, clock_sync=SyncedClock())
    p.config_path = write_config(tmp, data)
    await p.start()
    return p


def api(panel: Panel) -> httpx.AsyncClient:
    assert panel.api is not None
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{panel.api.bound_port}",
                             headers={"Authorization": f"Bearer {INSTALLER}"})


async def status(panel: Panel) -> dict[str, Any]:
    async with api(panel) as c:
        r = await c.get("/api/v1/enrol")
    assert r.status_code == 200, r.text
    return r.json()["enrolment"]  # type: ignore[no-any-return]


def enrolment_files(panel: Panel) -> list[str]:
    root = panel.cfg.storage.dir / ENROLMENT_DIR
    return sorted(p.name for p in root.iterdir()) if root.exists() else []
