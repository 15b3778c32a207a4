"""What the machine is and how it is doing: model, uptime, temperature, network, storage.

psutil reads /proc and /sys for us (uptime, temperatures, memory, interfaces and their addresses); only the
board's model comes from the device tree. Every function here blocks briefly on the file system: call them
from a worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import ipaddress
import platform
import shutil
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

PROC = Path("/proc")


@dataclass
class Interface:
    name: str
    mac: str | None
    up: bool
    addresses: list[str] = field(default_factory=list)


def model() -> str:
    """The board's model ("Raspberry Pi 4 Model B Rev 1.4"), else the machine type."""
    try:
        text = (PROC / "device-tree" / "model").read_text(encoding="utf-8", errors="replace").strip().rstrip("\x00")
    except OSError:
        text = ""
    return text or f"{platform.machine()} ({platform.system()} {platform.release()})"


def system_uptime_s() -> float | None:
    try:
        return round(time.time() - float(psutil.boot_time()), 1)
    except (OSError, RuntimeError):
        return None


def cpu_temperature_c() -> float | None:
    """The CPU/SoC sensor in degrees Celsius; None on machines without one (VMs, containers)."""
    try:
        sensors = psutil.sensors_temperatures()
    except (OSError, AttributeError):
        return None
    best: float | None = None
    for name, readings in sensors.items():
        for r in readings:
            if any(word in f"{name} {r.label}".lower() for word in ("cpu", "soc", "x86_pkg", "coretemp")):
                return round(float(r.current), 1)
            best = best if best is not None else round(float(r.current), 1)
    return best


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in psutil.getloadavg()]
    except OSError:
        return None


def memory() -> dict[str, int] | None:
    try:
        vm = psutil.virtual_memory()
    except OSError:
        return None
    return {"total_bytes": vm.total, "available_bytes": vm.available}


def interfaces() -> list[Interface]:
    stats = psutil.net_if_stats()
    out: list[Interface] = []
    for name, addrs in psutil.net_if_addrs().items():
        mac = next((a.address for a in addrs if a.family == psutil.AF_LINK), None)
        ips = [a.address.split("%")[0] for a in addrs if a.family in (socket.AF_INET, socket.AF_INET6)]
        st = stats.get(name)
        out.append(Interface(name=name, mac=mac if mac and mac != "00:00:00:00:00:00" else None,
                             up=bool(st and st.isup), addresses=ips))
    return out


def addresses() -> list[str]:
    """Every address of this machine (loopback included), for certificate names."""
    seen: list[str] = []
    for iface in interfaces():
        for a in iface.addresses:
            if a not in seen and not ipaddress.ip_address(a).is_link_local:
                seen.append(a)
    for a in ("127.0.0.1", "::1"):
        if a not in seen:
            seen.append(a)
    return seen


def storage(directory: Path) -> dict[str, Any]:
    usage = shutil.disk_usage(directory)
    db = 0
    for name in ("panel.db", "panel.db-wal"):
        try:
            db += (directory / name).stat().st_size
        except OSError:
            pass
    return {"dir": str(directory), "total_bytes": usage.total, "used_bytes": usage.used, "free_bytes": usage.free,
            "database_bytes": db}


def snapshot(storage_dir: Path) -> dict[str, Any]:
    """Everything above in one call (one trip to a worker thread)."""
    return {
        "model": model(),
        "hostname": socket.gethostname(),
        "os": f"{platform.system()} {platform.release()}",
        "system_uptime_s": system_uptime_s(),
        "cpu_temperature_c": cpu_temperature_c(),
        "load_average": load_average(),
        "memory": memory(),
        "network": [asdict(i) for i in interfaces()],
        "storage": storage(storage_dir),
    }
