"""MQTT open command published -> relay pin energised, next to the two floors it cannot beat.

Run from the repository root:  .venv/bin/python bench/bench_unlock.py [--n 300] [--dir PATH]

Everything runs against one real Mosquitto (tests/mosquitto.py) on its TLS listener:

1. floor "MQTT": a bare QoS 1 publish from one paho client to another (publisher -> broker ->
   subscriber) through the same broker and listener;
2. floor "commit": one SQLite transaction with ``synchronous=FULL`` in WAL mode, in the panel's own
   storage directory (so on the same disk as its database);
3. the unlock: a signed ``open`` command published by a paho backend client; the panel runs
   in-process (``Panel`` with gpiozero's MockFactory), and the time the relay's mock pin went high
   is read from the pin's own state log, so observing it adds nothing to the path.

The three are measured in turn within every round (after 20 warm-up rounds), so that all of them
see the same load on a shared machine; rounds are 20 ms apart (commands are sparse; each round's
reply, state and ``door.locked`` record have settled before the next).

Target (issue 3): median unlock <= median MQTT floor + median commit floor + 2 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import sqlite3
import ssl
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from panel.auth import Secrets  # noqa: E402
from panel.daemon import Panel  # noqa: E402
from panel.link import signed  # noqa: E402
from panel.platform import parse_config  # noqa: E402
from tests.mosquitto import BACKEND_USER, Broker  # noqa: E402
from tests.support import config_dict  # noqa: E402

PANEL = "bench-panel"
KEY = "bench-command-key-0123456789"
GAP_S = 0.02
WARMUP = 20


class Synced:
    """ClockSync: the bench measures the synchronised-clock path (exp checked against the wall clock)."""

    def synchronized(self) -> bool:
        return True


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def paho_client(broker: Broker, name: str) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{name}-{uuid.uuid4().hex[:6]}",
                    protocol=mqtt.MQTTv5)
    c.tls_set_context(ssl.create_default_context(cafile=str(broker.ca_file)))
    c.username_pw_set(BACKEND_USER, broker.passwords[BACKEND_USER])
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.connect("127.0.0.1", broker.port)
    # As the panel does: without it Nagle holds a publish behind our own last PUBACK (~40 ms).
    c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.loop_start()
    if not connected.wait(5):
        raise RuntimeError(f"{name} could not connect:\n{broker.log()[-2000:]}")
    return c


def subscribe(c: mqtt.Client, topic: str) -> None:
    done = threading.Event()
    c.on_subscribe = lambda *a: done.set()
    c.subscribe(topic, qos=1)
    if not done.wait(5):
        raise RuntimeError(f"no SUBACK for {topic}")


class MqttFloor:
    """publisher -> broker -> subscriber, both paho with their own network threads."""

    def __init__(self, broker: Broker) -> None:
        self.pub, self.sub = paho_client(broker, "floor-pub"), paho_client(broker, "floor-sub")
        self.topic = f"panels/{PANEL}/replies/floor"
        self.got = threading.Event()
        self.arrived = 0.0
        self.sub.on_message = self._on_message
        subscribe(self.sub, self.topic)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        self.arrived = time.monotonic()
        self.got.set()

    def sample(self) -> float:
        self.got.clear()
        t0 = time.monotonic()
        self.pub.publish(self.topic, b'{"floor":true}', qos=1)
        if not self.got.wait(5):
            raise RuntimeError("floor message lost")
        return self.arrived - t0

    def close(self) -> None:
        for c in (self.pub, self.sub):
            c.loop_stop()
            c.disconnect()


class CommitFloor:
    def __init__(self, directory: Path) -> None:
        self.conn = sqlite3.connect(directory / "floor.db", isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("CREATE TABLE IF NOT EXISTS t (id TEXT PRIMARY KEY, data TEXT)")

    def sample(self) -> float:
        t0 = time.monotonic()
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute("INSERT INTO t VALUES (?, ?)", (uuid.uuid4().hex, "x" * 200))
        self.conn.execute("COMMIT")
        return time.monotonic() - t0

    def close(self) -> None:
        self.conn.close()


class Unlock:
    """A signed open command from a paho backend to the in-process panel; relay pin high is the end."""

    def __init__(self, broker: Broker, panel: Panel, loop: asyncio.AbstractEventLoop) -> None:
        self.panel = panel
        self.loop = loop
        self.backend = paho_client(broker, "backend")
        self.replies = f"panels/{PANEL}/replies/bench"
        self.waiting: dict[bytes, asyncio.Future[bytes]] = {}
        self.backend.on_message = self._on_message
        subscribe(self.backend, self.replies)
        self.pin = panel.hw.factory.pin(f"GPIO{panel.cfg.door.relays[0].pin}")

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        fut = self.waiting.pop(getattr(msg.properties, "CorrelationData", b""), None)
        if fut is not None:
            self.loop.call_soon_threadsafe(fut.set_result, msg.payload)

    async def sample(self) -> float:
        body = signed(KEY, PANEL, {"id": str(uuid.uuid4()), "exp": round(time.time() + 20, 3), "cmd": "open"})
        payload = json.dumps(body).encode()
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.replies
        props.CorrelationData = corr = uuid.uuid4().bytes
        fut: asyncio.Future[bytes] = self.loop.create_future()
        self.waiting[corr] = fut
        cleared = time.monotonic()
        self.pin.clear_states()  # the pin's log now starts (within a microsecond) at `cleared`
        t0 = time.monotonic()
        self.backend.publish(f"panels/{PANEL}/commands", payload, qos=1, properties=props)
        reply = await asyncio.wait_for(fut, 5)
        if b'"code":"ok"' not in reply:
            raise RuntimeError(f"command refused: {reply!r}")
        states = self.pin.states[1:]
        first_high = next((i for i, s in enumerate(states) if s.state), None)
        if first_high is None:
            raise RuntimeError("acknowledged but the relay pin never went high")
        energised = cleared + sum(s.timestamp for s in states[:first_high + 1])
        self.panel.door.release()
        await self.panel.journal.flush()
        return energised - t0

    def close(self) -> None:
        self.backend.loop_stop()
        self.backend.disconnect()


async def measure(broker: Broker, directory: Path, n: int) -> dict[str, list[float]]:
    data = config_dict(mqtt=broker.mqtt_config(PANEL, require_signed_commands=True))
    data["panel"] = {"id": PANEL, "name": "Bench"}
    data["storage"] = {"dir": str(directory / "state")}
    data["door"]["relays"][0].update(hold_s=5, max_on_s=10)
    panel = Panel(parse_config(data), Secrets(mqtt_password=broker.passwords[PANEL], command_key=KEY),
                  simulate=True, clock_sync=Synced())
    await panel.start()
    loop = asyncio.get_running_loop()
    try:
        deadline = time.monotonic() + 10
        while not (panel.mqtt and panel.mqtt.connected):
            if time.monotonic() > deadline:
                raise RuntimeError(f"panel did not connect: {panel.mqtt and panel.mqtt.last_error}")
            await asyncio.sleep(0.01)
        floor_mqtt, floor_commit, unlock = MqttFloor(broker), CommitFloor(directory / "state"), Unlock(broker, panel, loop)
        out: dict[str, list[float]] = {"mqtt": [], "commit": [], "unlock": []}
        try:
            for i in range(n + WARMUP):
                # The floors run off the loop, so the panel's loop is as idle as it is for the unlock.
                samples = {"mqtt": await asyncio.to_thread(floor_mqtt.sample)}
                await asyncio.sleep(GAP_S)
                samples["commit"] = await asyncio.to_thread(floor_commit.sample)
                await asyncio.sleep(GAP_S)
                samples["unlock"] = await unlock.sample()
                await asyncio.sleep(GAP_S)
                if i >= WARMUP:
                    for k, v in samples.items():
                        out[k].append(v)
        finally:
            floor_mqtt.close()
            floor_commit.close()
            unlock.close()
        return out
    finally:
        await panel.stop("bench over")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=300, help=f"samples per row (after {WARMUP} warm-up rounds)")
    ap.add_argument("--dir", type=Path, default=None, help="where the databases live (default: a temp dir)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    directory = args.dir or Path(tempfile.mkdtemp(prefix="bench-unlock-"))
    (directory / "state").mkdir(parents=True, exist_ok=True)
    with Broker(directory / "broker", panels=[PANEL]) as broker:
        res = asyncio.run(measure(broker, directory, args.n))

    ms = 1000.0
    floors_med = (statistics.median(res["mqtt"]) + statistics.median(res["commit"])) * ms
    floors_p99 = (pct(res["mqtt"], 0.99) + pct(res["commit"], 0.99)) * ms
    rows = [
        ("floor: bare MQTT publish -> subscriber (paho, TLS)", res["mqtt"]),
        ("floor: SQLite commit (WAL, synchronous=FULL)", res["commit"]),
        ("MQTT open command -> relay pin energised", res["unlock"]),
    ]
    print(f"\nbench_unlock: n={args.n} per row, interleaved; databases in {directory}\n")
    print(f"{'path':<52} {'median ms':>10} {'p99 ms':>9} {'median / floors':>16}")
    for name, values in rows:
        med, p99 = statistics.median(values) * ms, pct(values, 0.99) * ms
        print(f"{name:<52} {med:>10.3f} {p99:>9.3f} {med / floors_med:>15.2f}x")
    print(f"{'sum of the floors':<52} {floors_med:>10.3f} {floors_p99:>9.3f} {1.0:>15.2f}x")
    unlock_med = statistics.median(res["unlock"]) * ms
    target = floors_med + 2.0
    verdict = "met" if unlock_med <= target else "MISSED"
    print(f"\ntarget: median unlock <= floors + 2 ms = {target:.3f} ms; measured {unlock_med:.3f} ms "
          f"({unlock_med - floors_med:+.3f} ms over the floors): {verdict}")


if __name__ == "__main__":
    main()
