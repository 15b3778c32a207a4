"""The daemon: builds every component from config, supervises them and stops them in order.

Start order: store -> GPIO (relays driven off first) -> journal -> door -> inputs -> API -> watchdog.
Stop order is the reverse, except that the relays are switched off first of all.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .api.app import ApiServer, create_app
from .api.principals import announce_initial_password
from .api.tls import ServerCert, server_cert
from .auth import InstallerCredential, Secrets
from .calls import CallManager
from .door import DebouncedInput, Door, Lights, Relay
from .events import InputRecovered, InputStuck, PanelStarted, PanelStopped
from .link import (
    ClockSync,
    Control,
    KernelClockSync,
    MqttLink,
    Nonces,
    Outbox,
    SeenCommands,
    Sender,
    heartbeat,
)
from .platform import (
    Background,
    Clock,
    Config,
    EventRow,
    Hardware,
    Journal,
    LoopClock,
    Notifier,
    Store,
    Supervisor,
    feed_watchdog,
    keep_history_bounded,
    lock_storage,
    make_pin_factory,
)

if TYPE_CHECKING:
    from .media.service import MediaService

log = logging.getLogger(__name__)

STOP_BUDGET_S = 2.0


class Panel:
    store_class: type[Store] = Store
    def __init__(self, cfg: Config, secrets: Secrets, *, simulate: bool, clock: Clock | None = None,
                 notifier: Notifier | None = None, clock_sync: ClockSync | None = None) -> None:
        self.cfg = cfg
        self.secrets = secrets
        self.simulated = simulate
        self.clock = clock or LoopClock()
        self.notifier = notifier or Notifier()
        self._background = Background("panel")  # unlocks started by the exit button's pin callback
        self.supervisor = Supervisor()
        self.started_mono = time.monotonic()
        self.stop_requested = asyncio.Event()
        self.stop_reason = "stopped"
        self.inputs: dict[str, DebouncedInput] = {}
        self.store: Store
        self.hw: Hardware
        self.journal: Journal
        self.door: Door
        self.calls: CallManager
        self.api: ApiServer | None = None
        self.outbox: Outbox | None = None
        self.clock_sync: ClockSync = clock_sync or KernelClockSync()
        self.mqtt: MqttLink | None = None
        self.media: MediaService | None = None
        self.visitor: Any = None  # snapshots, MJPEG and feedback tones (panel.media.visitor)
        self._stopped = False
        self.config_path: Path | None = None  # the file the API's config update writes

    # -- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        self.build_core()
        await self.start_services()

    def build_core(self) -> None:
        """Store, GPIO, journal, door and inputs: everything but the network. Needs a running loop."""
        loop = asyncio.get_running_loop()
        self.store = self.store_class(self.cfg.storage.dir / "panel.db")
        factory = make_pin_factory("mock" if self.simulated else self.cfg.gpio.pin_factory)
        try:
            self.hw = Hardware.build(self.cfg, factory)
        except BaseException:
            self.store.close()
            raise
        if self.simulated:
            self._rest_simulated_inputs()
        self.journal = Journal(self.store, self.clock, self.cfg.panel)
        relays = {rid: Relay(self.cfg.relay(rid), dev, self.clock, lambda *a: None) for rid, dev in self.hw.relays.items()}
        self.door = Door(self.cfg, relays, self.journal, self.clock)
        self.lights = Lights(self.cfg.lights, self.hw.lights, self.door.main_relay)
        self.journal.subscribe(self.lights.on_event)
        self.calls = CallManager(self.cfg, self.journal, self.clock)
        self.calls.recover()  # before the buttons are wired: a zombie call is closed before a new one
        self._wire_inputs(loop)

    async def start_services(self) -> None:
        sender = self._webhook_sender()  # first: a webhook URL without a secret must stop the start
        mqtt = await self._mqtt_link()  # likewise bad MQTT credentials or TLS files
        await self.journal.record(PanelStarted(version=__version__, boot=self.journal.boot_id,
                                               simulated=self.simulated))
        self.media = self._start_media()  # never fails the start: the door works without media
        if self.media is not None:
            from .media.visitor import start_visitor_media

            self.visitor = await start_visitor_media(self)  # never fails the start either
        host, port = self.cfg.api.host, self.cfg.api.port
        # The first start makes the installer password (scrypt, fsync): off the loop, like the certificate.
        cred = InstallerCredential(self.cfg.storage.dir)
        announce_initial_password(await asyncio.to_thread(cred.ensure), cred)
        cert = await asyncio.to_thread(api_certificate, self.cfg) if self.cfg.api.https else None
        self.api = ApiServer(create_app(self, simulated=self.simulated, server_cert=cert), host, port,
                             ssl_certfile=str(cert.cert_file) if cert else None,
                             ssl_keyfile=str(cert.key_file) if cert else None)
        await self.api.start()
        if cert is not None:
            log.info("local API served over HTTPS", extra={"fingerprint_sha256": cert.fingerprint_sha256,
                                                           "not_after": cert.not_after, "generated": cert.generated})
        self.supervisor.start("api", self.api.serve)
        self.supervisor.start("watchdog", lambda: feed_watchdog(self.notifier, self.healthy))
        self.supervisor.start("retention", lambda: keep_history_bounded(
            self.store, self.cfg.storage.history_max_rows, events_are_history=self.cfg.webhooks.url is None))
        if sender is not None:
            self._start_webhooks(sender)
        if mqtt is not None:
            self.mqtt = mqtt
            self.supervisor.start("mqtt", mqtt.run)
        self.lights.running(True)
        self.notifier.notify(f"READY=1\nSTATUS=panel {self.cfg.panel.id} running\nMAINPID={os.getpid()}")
        log.info("panel running", extra={"panel": self.cfg.panel.id, "simulated": self.simulated,
                                         "api": f"{self.api.scheme}://{host}:{self.api.bound_port}"})

    def _start_media(self) -> MediaService | None:
        if self.cfg.media is None:
            return None
        from .media.service import (
            start_media,  # the media packages are an optional extra
        )

        return start_media(self)

    def _webhook_sender(self) -> Sender | None:
        wh = self.cfg.webhooks
        if wh.url is None:
            log.info("webhooks.url is not set: events are kept on the panel, nothing is sent to a backend")
            return None
        return Sender(wh.url, self.secrets.webhook_secrets, timeout_s=wh.timeout_s, panel_id=self.cfg.panel.id)

    async def _mqtt_link(self) -> MqttLink | None:
        if self.cfg.mqtt.host is None:
            log.info("mqtt.host is not set: no backend commands over MQTT")
            return None
        seen = SeenCommands(self.store, self.clock, self.journal.boot_id)
        nonces = Nonces(self.clock, self.cfg.mqtt.command_max_age_s)
        control = Control(cfg=self.cfg, secrets=self.secrets, door=self.door, calls=self.calls, journal=self.journal,
                          clock=self.clock, clock_sync=self.clock_sync, seen=seen, nonces=nonces,
                          media=lambda: self.media)
        link = MqttLink(self.cfg, self.secrets, control, self.journal, seen, self.clock_sync)
        await link.prepare()
        return link

    def _start_webhooks(self, sender: Sender) -> None:
        wh = self.cfg.webhooks
        outbox = self.outbox = Outbox(self.store, self.journal, sender, max_events=self.cfg.storage.outbox_max_events,
                                      max_backoff_s=wh.max_backoff_s, max_in_flight=wh.max_in_flight,
                                      on_delivered=self._webhook_delivered)
        self.supervisor.start("webhooks", outbox.run)
        self.supervisor.start("heartbeat", lambda: heartbeat(self.journal, outbox, wh.heartbeat_s, self.started_mono))

    def _webhook_delivered(self, row: EventRow) -> None:
        if row.type == "call.created" and hasattr(self, "calls"):
            self.calls.backend_acknowledged(str(row.data.get("guid") or row.key))

    def _rest_simulated_inputs(self) -> None:
        """Mock pins start at their pull level; a simulated panel starts with every input at rest."""
        cfgs = [*self.cfg.buttons, self.cfg.door.contact, self.cfg.door.exit_button, self.cfg.tamper]
        for cfg in cfgs:
            if cfg is not None:
                pin = self.hw.factory.pin(f"GPIO{cfg.pin}")
                pin.drive_low() if cfg.active == "high" else pin.drive_high()

    def _wire_inputs(self, loop: asyncio.AbstractEventLoop) -> None:
        def stuck(name: str) -> Any:
            def report(is_stuck: bool, active_s: float) -> None:
                self.journal.record(InputStuck(input=name, active_s=round(active_s, 3)) if is_stuck
                                    else InputRecovered(input=name))
            return report

        for b in self.cfg.buttons:
            def pressed(active: bool, b: Any = b) -> None:
                if active:
                    self.on_button(b.id)
            self.inputs[f"button:{b.id}"] = DebouncedInput(f"button:{b.id}", self.hw.buttons[b.id], b, self.clock,
                                                           loop, pressed, stuck(f"button:{b.id}"))
        if self.hw.contact is not None and self.cfg.door.contact is not None:
            contact = DebouncedInput("door_contact", self.hw.contact, self.cfg.door.contact, self.clock, loop,
                                     self.door.contact_changed, stuck("door_contact"))
            self.inputs["door_contact"] = contact
            self.door.is_open = contact.active  # the door's state at boot is no event
        if self.hw.exit_button is not None and self.cfg.door.exit_button is not None:
            def exit_changed(active: bool) -> None:
                if active:
                    self._background.spawn(self.door.exit_pressed(), "exit button unlock")
            self.inputs["exit_button"] = DebouncedInput("exit_button", self.hw.exit_button, self.cfg.door.exit_button,
                                                        self.clock, loop, exit_changed, stuck("exit_button"))
        if self.hw.tamper is not None and self.cfg.tamper is not None:
            tamper = DebouncedInput("tamper", self.hw.tamper, self.cfg.tamper, self.clock, loop,
                                    self.door.tamper_changed, stuck("tamper"))
            self.inputs["tamper"] = tamper
            if tamper.active:  # tampered while we were down: that is news
                self.door.tamper_changed(True)

    def on_button(self, button_id: str) -> None:
        # Tamper does not matter here: visitors can always ring; only remote unlocks are blocked.
        self.calls.on_button(button_id)

    def request_stop(self, reason: str) -> None:
        self.stop_reason = reason
        self.stop_requested.set()

    async def run(self) -> int:
        """Run until a stop is requested or a component fails; returns the process exit code."""
        failed = asyncio.create_task(self.supervisor.failed.wait())
        stop = asyncio.create_task(self.stop_requested.wait())
        await asyncio.wait({failed, stop}, return_when=asyncio.FIRST_COMPLETED)
        failed.cancel()
        stop.cancel()
        if self.supervisor.failure:
            await self.stop(self.supervisor.failure, failed=True)
            return 1
        await self.stop(self.stop_reason)
        return 0

    async def stop(self, reason: str, *, failed: bool = False) -> None:
        """Stop in order within STOP_BUDGET_S; every step gets what is left of the budget, at most its cap."""
        if self._stopped:
            return
        self._stopped = True
        started = time.monotonic()
        deadline = started + STOP_BUDGET_S - 0.15  # the rest: closing GPIO, the store, the process exit

        def left(cap: float) -> float:
            return max(0.05, min(cap, deadline - time.monotonic()))

        async def bounded(what: str, aw: Any, cap: float) -> None:
            try:
                await asyncio.wait_for(aw, left(cap))
            except TimeoutError:
                log.error("%s did not stop within the shutdown budget", what)
            except Exception:
                log.exception("%s did not stop cleanly", what)

        # Safety first: nothing below may delay de-energising the relays.
        self.door.all_off("error" if failed else "shutdown")
        self.notifier.notify("STOPPING=1")
        self.lights.running(False)
        for inp in self.inputs.values():
            inp.close()
        if hasattr(self, "calls"):
            self.calls.close("shutdown")  # written with the flush below
        if self.visitor is not None:
            self.visitor.end_streams()  # MJPEG responses never finish on their own; the API waits for them
        if self.api is not None:
            await self.api.stop(left(0.7))
        await self.supervisor.stop(timeout_s=0.5, total_s=left(0.8))
        if self.visitor is not None:
            await bounded("snapshots, MJPEG and tones", self.visitor.stop(), 0.5)
        if self.media is not None:
            await bounded("media", self.media.stop(), 1.0)
        if self.outbox is not None:
            await bounded("the webhook sender", self.outbox.aclose(), 0.3)
        self.journal.record(PanelStopped(reason=reason))
        await bounded("the journal", self.journal.flush(), 1.0)
        for relay in self.door.relays.values():
            relay.close()
        self.hw.close()
        self.store.close()
        self.notifier.close()
        log.info("panel stopped", extra={"reason": reason, "stop_s": round(time.monotonic() - started, 3)})

    # -- introspection ------------------------------------------------------------------------------
    def healthy(self) -> bool:
        return self.door.healthy()

    async def backlog(self) -> int:
        """Events not yet delivered to the backend (the outbox's count; no disk read once it runs)."""
        if self.outbox is not None and self.outbox.ready:
            return self.outbox.backlog
        return await self.store.read(lambda c: c.execute("SELECT count(*) FROM events WHERE delivered IS NULL").fetchone()[0])

    async def health(self) -> dict[str, Any]:
        t0 = time.monotonic()
        await asyncio.sleep(0)
        lag_ms = (time.monotonic() - t0) * 1000
        relays_ok = self.door.healthy()
        components = self.supervisor.status()
        ok = relays_ok and all(c["state"] in ("running", "finished") for c in components.values())
        webhooks: dict[str, Any] = {"configured": False}
        if self.outbox is not None:
            webhooks = {"configured": True, **self.outbox.status()}
            ok = ok and self.outbox.healthy()
        return {
            "status": "ok" if ok else "degraded",
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started_mono, 3),
            "simulated": self.simulated,
            "checks": {"relays": relays_ok, "loop_lag_ms": round(lag_ms, 3), "backlog": await self.backlog(),
                       "tamper_blocked": self.door.tamper_blocked, "webhooks": webhooks,
                       "mqtt": self.mqtt.status() if self.mqtt is not None else {"configured": False},
                       "media": self.media.health() if self.media is not None else {"configured": False}},
            "components": components,
        }

    async def state(self) -> dict[str, Any]:
        return {
            "panel": {"id": self.cfg.panel.id, "name": self.cfg.panel.name},
            "simulated": self.simulated,
            "door": self.door.state(),
            "call": self.calls.state(),
            "inputs": {name: {"active": i.active, "stuck": i.stuck} for name, i in self.inputs.items()},
            "backlog": await self.backlog(),
        }

    def pin_levels(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for rid, dev in self.hw.relays.items():
            out[f"relay:{rid}"] = {"pin": f"GPIO{self.cfg.relay(rid).pin}", "level": int(dev.pin.state),
                                   "energised": bool(dev.value)}
        for name, inp in self.inputs.items():
            out[name] = {"pin": f"GPIO{inp.cfg.pin}", "level": int(inp.device.pin.state), "active": inp.active}
        return out


def api_certificate(cfg: Config) -> ServerCert:
    return server_cert(cfg.storage.dir, cfg.panel.id, cfg.api.cert_file, cfg.api.key_file)


async def serve(cfg: Config, secrets: Secrets, simulate: bool, config_path: Path | None = None) -> int:
    # One daemon per storage.dir; `panel factory-reset` takes the same lock before it erases anything.
    storage_lock = lock_storage(cfg.storage.dir)
    panel = Panel(cfg, secrets, simulate=simulate)
    panel.config_path = config_path
    panel.__dict__["_storage_lock"] = storage_lock
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, panel.request_stop, signal.Signals(sig).name)
    try:
        await panel.start()
    except BaseException as e:
        if hasattr(panel, "door"):
            await panel.stop(f"start failed: {type(e).__name__}: {e}", failed=True)
        raise
    try:
        return await panel.run()
    finally:
        panel.hw.all_off()
