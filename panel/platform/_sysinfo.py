"""What the machine is and how it is doing: model, uptime, temperature, network, storage.

Plain reads of /proc, /sys and one ioctl per interface, no extra dependency. Every function here
blocks briefly on the file system: call them from a worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import platform
import shutil
import socket
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_SIOCGIFADDR = 0x8915
SYS = Path("/sys")
PROC = Path("/proc")


@dataclass
class Interface:
    name: str
    mac: str | None
    up: bool
    addresses: list[str] = field(default_factory=list)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip().rstrip("\x00")
    except OSError:
        return None


def model() -> str:
    """The board's model ("Raspberry Pi 4 Model B Rev 1.4"), else the machine type."""
    return _read(PROC / "device-tree" / "model") or f"{platform.machine()} ({platform.system()} {platform.release()})"


def system_uptime_s() -> float | None:
    text = _read(PROC / "uptime")
    try:
        return round(float(text.split()[0]), 1) if text else None
    except ValueError:
        return None


def cpu_temperature_c() -> float | None:
    """The CPU/SoC thermal zone in degrees Celsius; None on machines without one (VMs, containers)."""
    zones = sorted((SYS / "class" / "thermal").glob("thermal_zone*"))
    best: float | None = None
    for zone in zones:
        kind = (_read(zone / "type") or "").lower()
        raw = _read(zone / "temp")
        try:
            value = int(raw) / 1000 if raw else None
        except ValueError:
            value = None
        if value is None:
            continue
        if any(word in kind for word in ("cpu", "soc", "x86_pkg")):
            return round(value, 1)
        best = best if best is not None else round(value, 1)
    return best


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def memory() -> dict[str, int] | None:
    text = _read(PROC / "meminfo")
    if not text:
        return None
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0]) * 1024
    if "MemTotal" not in values:
        return None
    return {"total_bytes": values["MemTotal"], "available_bytes": values.get("MemAvailable", values.get("MemFree", 0))}


def _ipv4(name: str) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def _ipv6() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (_read(PROC / "net" / "if_inet6") or "").splitlines():
        parts = line.split()
        if len(parts) < 6:
            continue
        addr = str(ipaddress.IPv6Address(bytes.fromhex(parts[0])))
        out.setdefault(parts[5], []).append(addr)
    return out


def interfaces() -> list[Interface]:
    v6 = _ipv6()
    out: list[Interface] = []
    for _, name in socket.if_nameindex():
        net = SYS / "class" / "net" / name
        state = _read(net / "operstate")
        flags = _read(net / "flags")
        up = state == "up" or (state == "unknown" and flags is not None and int(flags, 16) & 1 == 1)
        addrs = [a for a in [_ipv4(name)] if a] + v6.get(name, [])
        mac = _read(net / "address")
        out.append(Interface(name=name, mac=mac if mac and mac != "00:00:00:00:00:00" else None, up=up,
                             addresses=addrs))
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
