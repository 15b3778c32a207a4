"""The panel's core writing presses, releases and webhook deliveries, forked fresh for every power cut.

``python -m tests.powercut_writer STATE_DIR WEBHOOK_URL WHSEC`` imports the panel once, then takes commands on
stdin, one a line:

- ``run SEED`` forks a writer and prints ``pid <pid>``. The writer builds the panel's real core (store, journal,
  door, calls, inputs on gpiozero's mock pins) on STATE_DIR with the real clock, starts the real webhook outbox,
  prints ``ready``, then presses and releases call buttons, the exit button and the door contact in an order
  drawn from SEED, until it is killed.
- ``reap PID`` waits for that writer to end and prints ``reaped <pid>``.

What a writer acknowledges, it prints as it happens (one ``write`` of less than PIPE_BUF bytes, so lines never
interleave): ``event <id> <type>`` when the journal has committed an event (the moment the panel acts on it:
publishes, sends, moves the relay), ``relay <relay id>`` when a relay was energised. Forking from a process
that imported everything keeps a cut cycle at tens of milliseconds, so hundreds of cuts fit the suite's budget.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import sys
from pathlib import Path
from typing import Any

import httpx

import panel.link  # noqa: F401  (the daemon imports it only when its backend link starts)
from panel.auth import Secrets
from panel.daemon import Panel
from panel.platform import InputConfig, parse_config

from .support import config_dict


def emit(line: str) -> None:
    os.write(1, (line + "\n").encode())


async def drive(panel: Panel, cfg: InputConfig, active: bool) -> None:
    pin = panel.hw.factory.pin(f"GPIO{cfg.pin}")
    high = (cfg.active == "high") == active
    pin.drive_high() if high else pin.drive_low()
    # a visitor's hand, not a wait for the panel: hold each level past the debounce
    await asyncio.sleep(cfg.debounce_ms / 1000 + rng_jitter())


_rng = random.Random()


def rng_jitter() -> float:
    return _rng.uniform(0.001, 0.01)


async def writer(state_dir: Path, url: str, secret: str, seed: int) -> None:
    _rng.seed(seed)
    data: dict[str, Any] = config_dict(webhooks={"url": url, "timeout_s": 2, "max_backoff_s": 1})
    data["storage"] = {"dir": str(state_dir)}
    data["log"] = {"level": "warning", "format": "json"}
    cfg = parse_config(data)
    panel = Panel(cfg, Secrets(webhook_secrets=[secret]), simulate=True)
    panel.build_core()
    panel.journal.subscribe(lambda row: emit(f"event {row.id} {row.type}"))
    for rid, relay in panel.door.relays.items():
        energise = relay.energise

        def energised(seconds: float, rid: str = rid, energise: Any = energise) -> float:
            on_s = float(energise(seconds))
            emit(f"relay {rid}")  # after the pin moved: the grant it carried out must be on disk
            return on_s

        relay.energise = energised  # type: ignore[method-assign]
    sender = panel._webhook_sender()
    assert sender is not None
    await panel.lifecycle.start(panel._webhooks_component(sender))
    emit("ready")
    door = cfg.door
    assert door.exit_button is not None and door.contact is not None
    while True:
        action = _rng.choice(("press", "press", "exit", "door"))
        if action == "press":
            button = _rng.choice(cfg.buttons)
            await drive(panel, button, True)
            await drive(panel, button, False)
        elif action == "exit":
            await drive(panel, door.exit_button, True)
            await drive(panel, door.exit_button, False)
        else:
            await drive(panel, door.contact, True)
            await drive(panel, door.contact, False)


def main() -> None:
    state_dir, url, secret = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # What the panel imports when its backend link starts, imported once here rather than in every writer.
    asyncio.run(httpx.AsyncClient().aclose())
    live: set[int] = set()
    for line in sys.stdin:
        cmd, arg = line.split()
        if cmd == "run":
            pid = os.fork()
            if pid == 0:
                os.close(0)
                try:
                    asyncio.run(writer(state_dir, url, secret, int(arg)))
                finally:
                    os._exit(1)
            live.add(pid)
            emit(f"pid {pid}")
        elif cmd == "reap":
            os.waitpid(int(arg), 0)
            live.discard(int(arg))
            emit(f"reaped {arg}")
    # stdin closed: the test is over (or failed half-way); no writer outlives it
    for pid in live:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
