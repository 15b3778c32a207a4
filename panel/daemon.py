"""The daemon: the composition root that builds every component from config and runs it.

Start order (door live first, then the network): store -> gpio (relays driven off first) -> journal ->
door -> lights -> calls -> inputs, then webhooks -> mqtt -> media -> api -> housekeeping (watchdog,
retention). Stop: every component reaches its safe state in start order (the door's relays first), then
each stops in reverse order within one shared budget (``panel/platform/_component.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .auth import InstallerCredential, Secrets, refuse_published_secrets
from .calls import CallLinks, CallManager, CallService, Participants
from .directory import Directory
from .door import DebouncedInput, Door, Lights, Relay
from .errors import ConfigError
from .events import InputRecovered, InputStuck, PanelStarted, PanelStopped
from .platform import (
    Background,
    BaseComponent,
    ButtonConfig,
    Clock,
    Config,
    ConfigService,
    EventRow,
    Hardware,
    Hooks,
    Journal,
    Lifecycle,
    LoopClock,
    Notifier,
    StopReason,
    Store,
    Supervisor,
    feed_watchdog,
    keep_history_bounded,
    lock_storage,
    make_pin_factory,
    raise_fd_limit,
    redact_values,
)

if TYPE_CHECKING:
    from .access import AccessFeedback, AccessService, KeyEntry, MatrixKeypad, MockMatrix, OsdpReader, QrScanner
    from .api.app import ApiServer
    from .api.principals import ApiAuth
    from .api.state import ApiState
    from .api.tls import ServerCert
    from .enrol import EnrolService, Identity
    from .link import ClockSync, MqttLink, Outbox, Sender
    from .media.service import MediaService
    from .media.visitor import VisitorMedia
    from .media.whip import Publishing
    from .update import UpdateAgent

IMPORTED_AT = time.monotonic()  # bench/bench_start.py measures from the process's spawn instead

log = logging.getLogger(__name__)

STOP_BUDGET_S = 2.0


class Panel:
    """The composition root: every component of the daemon, typed, declared here in start order.

    ``build_core`` makes the door live (store, GPIO, journal, door, lights, calls, inputs) synchronously,
    before anything touches the network; ``start_services`` adds the rest. Each part is registered with the
    one ``Lifecycle``, which stops them in reverse order within one budget, the relays off first.
    Routes and adapters get these typed attributes; nothing is created lazily elsewhere.
    """

    store_class: type[Store] = Store

    def __init__(self, cfg: Config, secrets: Secrets, *, simulate: bool, clock: Clock | None = None,
                 notifier: Notifier | None = None, clock_sync: ClockSync | None = None) -> None:
        self.config = ConfigService(cfg)  # the one config in force; components subscribe to its live keys
        self.secrets = secrets
        redact_values(v for value in secrets.model_dump().values()  # no log line may hold one, in any form
                      for v in (value if isinstance(value, list) else [value]))
        self.simulated = simulate
        self.clock: Clock = clock or LoopClock()
        self.notifier = notifier or Notifier()
        self._background = Background("panel")  # unlocks started by the exit button's pin callback
        self.supervisor = Supervisor(self.clock)
        self.lifecycle = Lifecycle()
        self.started_mono = time.monotonic()
        self.stop_requested = asyncio.Event()
        self.stop_reason = "stopped"
        self.inputs: dict[str, DebouncedInput] = {}
        self.store: Store
        self.hw: Hardware
        self.journal: Journal
        self.door: Door
        self.lights: Lights
        self.calls: CallManager
        self.participants: Participants
        self.call_links: CallLinks
        self.call_service: CallService
        self.directory: Directory
        self.api: ApiServer | None = None
        self.api_auth: ApiAuth | None = None  # made with the first app (tests make several for one panel)
        self.api_state: ApiState | None = None  # likewise
        self.outbox: Outbox | None = None
        self.clock_sync: ClockSync | None = clock_sync  # the kernel's, unless a test gives one
        self.mqtt: MqttLink | None = None
        self.media: MediaService | None = None
        self.visitor: VisitorMedia | None = None
        self.publishing: Publishing | None = None  # WHIP to SFUs (media.publish.targets)
        self.access: AccessService | None = None  # doors without a call (panel/access)
        self.keypad: MatrixKeypad | None = None
        self.key_entry: KeyEntry | None = None
        self.keypad_sim: MockMatrix | None = None  # the simulated keypad's keys (mock pins only)
        self.osdp: OsdpReader | None = None
        self.qr: QrScanner | None = None
        self.access_feedback: AccessFeedback | None = None  # the status light's answers to codes and cards
        self.updates: UpdateAgent | None = None
        self.enrol: EnrolService | None = None  # enrolment by code (enrol.est_url; panel/enrol)
        self.stop_failed = False
        self._stopped = False
        self._core_built = False
        self.storage_lock: Any = None  # held for the daemon's life (see serve)

    @property
    def cfg(self) -> Config:
        return self.config.current

    @property
    def config_path(self) -> Path | None:
        """The file the API's config update writes."""
        return self.config.path

    @config_path.setter
    def config_path(self, path: Path | None) -> None:
        self.config.path = path

    # -- start ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        if not self.simulated:
            refuse_published_secrets(self.secrets)  # before anything: an example secret is a public key to the door
        self.build_core()
        await self.start_services()

    def build_core(self) -> None:
        """Store, GPIO, journal, door, calls and inputs: the door, live, before any network. Needs a running loop."""
        loop = asyncio.get_running_loop()
        lc = self.lifecycle
        self.store = self.store_class(self.cfg.storage.dir / "panel.db")
        lc.add_started(Hooks("store", on_stop=self.store.close, stop_cap_s=0.2))
        factory = make_pin_factory("mock" if self.simulated else self.cfg.gpio.pin_factory)
        self.hw = Hardware.build(self.cfg, factory)  # drives every relay off first

        def gpio_stop() -> None:
            self.hw.all_off()  # the door switched them off already; this is the belt to its braces
            self.hw.close()

        lc.add_started(Hooks("gpio", on_stop=gpio_stop, stop_cap_s=0.2))
        if self.simulated:
            self._rest_simulated_inputs()
        self.journal = Journal(self.store, self.clock, self.cfg.panel)
        lc.add_started(JournalComponent(self.journal))
        relays = {rid: Relay(self.cfg.relay(rid), dev, self.clock, lambda *a: None) for rid, dev in self.hw.relays.items()}
        self.door = Door(self.cfg, relays, self.journal, self.clock)

        def door_stopping(reason: StopReason) -> None:
            self.door.all_off("error" if reason.failed else "shutdown")
            self.notifier.notify("STOPPING=1")

        def relays_close() -> None:
            for relay in self.door.relays.values():
                relay.close()

        lc.add_started(Hooks("door", on_stopping=door_stopping, on_stop=relays_close,
                             on_health=lambda: {"ok": self.door.healthy(), "tamper_blocked": self.door.tamper_blocked},
                             stop_cap_s=0.2))
        self.lights = Lights(self.cfg.lights, self.hw.lights, self.door.main_relay)
        self.journal.subscribe(self.lights.on_event)
        lc.add_started(Hooks("lights", on_stopping=lambda _r: self.lights.running(False)))
        self.calls = CallManager(self.cfg, self.journal, self.clock)
        self.door.calls = self.calls  # the door decides which call a release belongs to
        self.calls.recover()  # before the buttons are wired: a zombie call is closed before a new one
        self.participants = Participants(self.calls, self.journal)
        self.call_links = CallLinks(self.cfg.links, self.calls, self.journal, self.participants, lambda: self.media,
                                    now=self.clock.wall, monotonic=self.clock.monotonic)
        self.call_service = CallService(self.calls, lambda: self.media, links=self.call_links)
        # Units and residents; sign-ins need the API's token store, attached when the API is built.
        self.directory = Directory(lambda: self.config.current, self.store, self.clock, self.journal)

        def calls_stopping(_r: StopReason) -> None:
            self.calls.close("shutdown")  # written with the journal's final flush
            self.call_links.close()
            self.participants.close()

        lc.add_started(Hooks("calls", on_stopping=calls_stopping))
        self._wire_inputs(loop)
        self.config.subscribe(("door",), self.door.reconfigure, "door")
        self.config.subscribe(("lights",), lambda cfg: self.lights.reconfigure(cfg.lights), "lights")
        self.config.subscribe(("calls", "buttons"), self.calls.reconfigure, "calls")
        self.config.subscribe(("panel",), self.journal.reconfigure, "journal")
        self.config.subscribe(("links",), self.call_links.reconfigure, "call links")
        self.config.subscribe(("log",), lambda cfg: logging.getLogger().setLevel(cfg.log.level.upper()), "log level")

        def inputs_stopping(_r: StopReason) -> None:
            for inp in self.inputs.values():
                inp.close()

        lc.add_started(Hooks("inputs", on_stopping=inputs_stopping))
        self._core_built = True
        log.info("door live", extra={"since_import_s": round(time.monotonic() - IMPORTED_AT, 3)})

    async def start_services(self) -> None:
        lc = self.lifecycle
        # The backend link (httpx, paho/aiomqtt) is imported only now: the door is live before it loads.
        from .link import KernelClockSync

        if self.clock_sync is None:
            self.clock_sync = KernelClockSync()
        if self.cfg.enrol.est_url is not None:
            from .enrol import EnrolService

            self.enrol = EnrolService(self.cfg, self.clock, self._enrolled,
                                      lambda: self.mqtt.status() if self.mqtt is not None else None)
            await self.enrol.prepare()  # the enrolled broker and webhook endpoint, before the link is built
        sender = self._webhook_sender()  # first: a webhook URL without a secret must stop the start
        if sender is not None:
            self.calls.ring_without_ack = False  # an enrolled panel's endpoint is not in the file
        mqtt = await self._mqtt_link()  # likewise bad MQTT credentials or TLS files
        await self.journal.record(PanelStarted(version=__version__, boot=self.journal.boot_id,
                                               simulated=self.simulated))
        if sender is not None:
            await lc.start(self._webhooks_component(sender))
        if mqtt is not None:
            self._run_mqtt(mqtt)
        if self.enrol is not None:
            enrol = self.enrol

            async def enrol_start() -> None:
                self.supervisor.start("enrol", enrol.run)

            await lc.start(Hooks("enrol", on_start=enrol_start, on_stop=lambda: self.supervisor.cancel("enrol"),
                                 on_health=lambda: {"ok": True, "state": enrol.state}, stop_cap_s=0.3))
        await lc.start(self.access_component())
        await lc.start(Hooks("media", on_start=self._start_media, on_stop=self._stop_media, stop_cap_s=1.0))
        if self.media is not None and self.media.cfg.publish.targets:
            await lc.start(self._publishing_component(self.media))
        await lc.start(Hooks("api", on_start=self._start_api, on_stop=self._stop_api, stop_cap_s=0.8))
        if self.cfg.update.root is not None:
            # Last of the services: a release on trial is judged on everything above running.
            await lc.start(self._update_agent())
        self.supervisor.start("watchdog", lambda: feed_watchdog(self.notifier, self.healthy, self.clock))
        self.supervisor.start("retention", lambda: keep_history_bounded(
            self.store, self.cfg.storage.history_max_rows, events_are_history=self.backend_settings()[0].webhooks.url is None,
            clock=self.clock))
        lc.add_started(Hooks("housekeeping", on_stop=lambda: self.supervisor.cancel("watchdog", "retention")))
        self.lights.running(True)
        self.notifier.notify(f"READY=1\nSTATUS=panel {self.cfg.panel.id} running\nMAINPID={os.getpid()}")
        assert self.api is not None
        log.info("panel running", extra={"panel": self.cfg.panel.id, "simulated": self.simulated,
                                         "api": f"{self.api.scheme}://{self.cfg.api.host}:{self.api.bound_port}",
                                         "start_ms": lc.timings_ms})

    def _run_mqtt(self, mqtt: MqttLink) -> None:
        self.mqtt = mqtt

        async def mqtt_stop() -> None:
            await self.supervisor.cancel("mqtt")
            mqtt.close()

        self.supervisor.start("mqtt", mqtt.run)
        self.lifecycle.add_started(Hooks("mqtt", on_stop=mqtt_stop, on_health=lambda: {"ok": True, **mqtt.status()}))

    def backend_settings(self) -> tuple[Config, Secrets]:
        """The config and secrets of the backend link: the file's, or what enrolment handed over."""
        from .enrol import backend_settings

        return backend_settings(self.cfg, self.secrets, self.enrol.identity if self.enrol is not None else None)

    async def _enrolled(self, identity: Identity) -> None:
        """A new identity is in force: connect with it (the first time, start the backend link)."""
        cfg, secrets = self.backend_settings()
        if self.outbox is None:
            sender = self._webhook_sender()
            if sender is not None:
                self.calls.ring_without_ack = False
                await self.lifecycle.start(self._webhooks_component(sender))
        elif secrets.webhook_secrets:
            from .auth import decode_secret

            self.outbox.sender.keys = [decode_secret(s) for s in secrets.webhook_secrets]
        if self.mqtt is None:
            mqtt = await self._mqtt_link()
            if mqtt is not None:
                self._run_mqtt(mqtt)
        else:
            await self.mqtt.use_settings(cfg)

    def access_component(self) -> Hooks:
        """PINs, codes and cards (panel/access): the credentials, the keypad's scanning as a supervised task."""
        feedback: Any = None

        async def start() -> None:
            nonlocal feedback
            from gpiozero.pins.mock import MockFactory

            from .access import (
                AccessFeedback,
                AccessService,
                Credentials,
                KeyEntry,
                MatrixKeypad,
                MockMatrix,
                OsdpReader,
                Outcome,
                QrScanner,
            )

            acfg = self.cfg.access
            feedback = self.access_feedback = AccessFeedback(self.cfg.lights, self.hw.lights, self.clock,
                                                             acfg.block_s)

            def show(outcome: Outcome) -> None:
                feedback(outcome)
                if self.osdp is not None and outcome.source == f"osdp:{self.osdp.cfg.address}":
                    self.osdp.indicate(outcome.outcome, outcome.block_left_s)

            self.access = AccessService(self.cfg, self.door, self.journal, self.clock,
                                        await Credentials.open(self.store), feedback=show)
            access = self.access
            if acfg.qr:
                self.qr = QrScanner(lambda: self.media.hub.video if self.media is not None else None,
                                    acfg.qr_window_s, lambda code: access.present("qr", code, source="camera"))
            if acfg.osdp is not None:
                ocfg = acfg.osdp
                source = f"osdp:{ocfg.address}"

                def reader_entry(entry: str) -> None:
                    self._background.spawn(access.present("keypad", entry, source=source, relay=ocfg.relay), "reader entry")

                reader_keys = KeyEntry(self.clock, acfg.key_timeout_s, reader_entry, touched=self.someone_at_panel)
                scbk = bytes.fromhex(self.secrets.osdp_scbk) if self.secrets.osdp_scbk else None
                def card_read(number: str) -> None:
                    self._background.spawn(access.card(number, source=source, relay=ocfg.relay), "card read")

                self.osdp = OsdpReader(ocfg, scbk, card_read, reader_keys.key)
                self.supervisor.start("osdp", self.osdp.run)
                access.card_readers = 1
            kp = acfg.keypad
            if kp is None:
                return

            def submit(entry: str) -> None:
                self._background.spawn(access.present("keypad", entry, source="keypad", relay=kp.relay), "keypad entry")

            self.key_entry = KeyEntry(self.clock, acfg.key_timeout_s, submit, touched=self.someone_at_panel)
            if isinstance(self.hw.factory, MockFactory):
                self.keypad_sim = MockMatrix(kp, self.hw.factory)  # before the keypad claims the pins
            self.keypad = MatrixKeypad(kp, self.hw.factory, self.clock, self.key_entry.key)
            self.supervisor.start("keypad", self.keypad.run)

        async def stop() -> None:
            await self.supervisor.cancel("keypad", "osdp")
            if self.keypad is not None:
                self.keypad.close()
            if feedback is not None:
                feedback.close()
            if self.qr is not None:
                self.qr.close()

        def health() -> dict[str, Any]:
            return {"ok": True, **({"osdp": self.osdp.status()} if self.osdp is not None else {})}

        return Hooks("access", on_start=start, on_stop=stop, on_health=health, stop_cap_s=0.3)

    async def _start_media(self) -> None:
        """Camera, microphone and speaker; never fails the start: the door and calls work without media."""
        if self.cfg.media is None:
            return
        from .media.service import (
            start_media,  # lazily: aiortc, av and numpy cost memory and start time
        )
        self.media = start_media(self)
        if self.media is not None:
            # only now: it needs av, which a panel installed without the media extra does not have
            from .media.visitor import start_visitor_media

            self.visitor = await start_visitor_media(self)

    def _publishing_component(self, media: MediaService) -> Hooks:
        """Publishing to SFUs over WHIP: a supervised task per target, told when by config, calls and MQTT."""
        from .media.whip import Publishing

        publishing = self.publishing = Publishing(media.cfg.publish, media.hub, self.secrets.whip_tokens,
                                                  self.journal.record, self.clock)
        runners = publishing.runners()

        async def start() -> None:
            for name, run in runners.items():
                self.supervisor.start(name, run)
            self.journal.subscribe(publishing.on_event)
            publishing.start()

        async def stop() -> None:
            # Each task DELETEs its session on the way out (RFC 9725: the server ends it at once).
            await self.supervisor.cancel(*runners, timeout_s=0.9)

        return Hooks("publishing", on_start=start, on_stopping=lambda _r: publishing.stopping(), on_stop=stop,
                     on_health=publishing.health, stop_cap_s=1.0)

    def _media_stopping(self) -> None:
        if self.visitor is not None:
            self.visitor.end_streams()  # MJPEG responses never finish on their own; the API waits for them

    async def _stop_media(self) -> None:
        if self.visitor is not None:
            await self.visitor.stop()
        if self.media is not None:
            await self.media.stop()

    async def _start_api(self) -> None:
        from .api.app import ApiServer, create_app  # FastAPI after the door is live

        # The first start makes the installer password (scrypt, fsync): off the loop, like the certificate.
        cred = InstallerCredential(self.cfg.storage.dir)
        from .api.principals import announce_initial_password

        announce_initial_password(await asyncio.to_thread(cred.ensure), cred)
        cert = await asyncio.to_thread(api_certificate, self.cfg) if self.cfg.api.https else None
        from .api.hosts import served_names

        names = await asyncio.to_thread(served_names, self.cfg)
        self.api = ApiServer(create_app(self, simulated=self.simulated, server_cert=cert), self.cfg.api.host,
                             self.cfg.api.port, ssl_certfile=str(cert.cert_file) if cert else None,
                             ssl_keyfile=str(cert.key_file) if cert else None, api=self.cfg.api, clock=self.clock,
                             names=names)
        await self.api.start()
        if cert is not None:
            log.info("local API served over HTTPS", extra={"fingerprint_sha256": cert.fingerprint_sha256,
                                                           "not_after": cert.not_after, "generated": cert.generated})
        self.supervisor.start("api", self.api.serve)

    async def _stop_api(self) -> None:
        self._media_stopping()
        if self.api is not None:
            await self.api.stop(0.7)
        await self.supervisor.cancel("api")

    def _webhook_sender(self) -> Sender | None:
        from .link import Sender

        cfg, secrets = self.backend_settings()
        wh = cfg.webhooks
        if wh.url is None:
            log.info("webhooks.url is not set: events are kept on the panel, nothing is sent to a backend")
            return None
        return Sender(wh.url, secrets.webhook_secrets, timeout_s=wh.timeout_s, panel_id=self.cfg.panel.id)

    def _webhooks_component(self, sender: Sender) -> Hooks:
        from .link import Outbox, heartbeat

        wh = self.cfg.webhooks
        outbox = self.outbox = Outbox(self.store, self.journal, sender, max_events=self.cfg.storage.outbox_max_events,
                                      max_backoff_s=wh.max_backoff_s, max_in_flight=wh.max_in_flight,
                                      on_delivered=self._webhook_delivered, clock=self.clock)

        async def start() -> None:
            self.supervisor.start("webhooks", outbox.run)
            self.supervisor.start("heartbeat", lambda: heartbeat(self.journal, outbox, wh.heartbeat_s,
                                                                 self.started_mono))

        async def stop() -> None:
            await self.supervisor.cancel("heartbeat", "webhooks", timeout_s=0.3)
            await outbox.aclose()

        return Hooks("webhooks", on_start=start, on_stop=stop, on_health=lambda: {"ok": outbox.healthy()},
                     stop_cap_s=0.6)

    async def _mqtt_link(self) -> MqttLink | None:
        cfg, secrets = self.backend_settings()
        if cfg.mqtt.host is None:
            log.info("mqtt.host is not set: no backend commands over MQTT")
            return None
        from .link import Control, MqttLink, Nonces, SeenCommands

        if cfg.mqtt.require_signed_commands and secrets.command_key is None:
            problem = ("mqtt.require_signed_commands: is true (the default) but there is no command_key, so every "
                       "backend command would be refused; add the key the backend signs with to the secrets file "
                       "(an enrolled panel gets it from the backend), or set require_signed_commands = false")
            if self.enrol is None:
                raise ConfigError([problem])
            log.error(problem)  # enrolled: the backend sent no key; the identity still connects and reports
        assert self.clock_sync is not None
        nonces = Nonces(self.clock, cfg.mqtt.command_max_age_s)
        seen = SeenCommands(self.store, self.clock, self.journal.boot_id, nonces, cfg.mqtt.command_max_age_s)
        control = Control(cfg=cfg, secrets=secrets, door=self.door, calls=self.calls, journal=self.journal,
                          clock=self.clock, clock_sync=self.clock_sync, seen=seen, nonces=nonces,
                          media=lambda: self.media, call_service=self.call_service,
                          publishing=lambda: self.publishing,
                          access=lambda: self.access, updates=lambda: self.updates, directory=self.directory)
        link = MqttLink(cfg, secrets, control, self.journal, seen, self.clock_sync, clock=self.clock)
        await link.prepare()
        self.config.subscribe(("panel", "door", "buttons", "calls"), link.reconfigure, "mqtt")
        return link

    def _update_agent(self) -> UpdateAgent:
        from .update import UpdateAgent

        def restart(reason: str, failed: bool) -> None:
            # systemd (Restart=always) starts the daemon again, and the launcher picks the slot.
            self.stop_failed = failed
            self.request_stop(reason)

        self.updates = UpdateAgent(self.cfg.update, self.journal, self.clock, storage_dir=self.cfg.storage.dir,
                                   running_version=__version__, health_check=self.update_health, restart=restart)
        return self.updates

    async def update_health(self) -> list[str]:
        """What keeps a new release from committing; empty when the panel does its job."""
        problems: list[str] = []
        t0 = time.monotonic()
        await asyncio.sleep(0)
        if time.monotonic() - t0 > 0.5:
            problems.append("door loop: the event loop lags more than 0.5 s")
        if not self.door.healthy():
            problems.append("door: a relay is not in its commanded state")
        try:
            await self.store.read(lambda c: c.execute("SELECT count(*) FROM events").fetchone())
        except Exception as e:
            problems.append(f"store: {type(e).__name__}: {e}")
        if self.mqtt is not None and not self.mqtt.connected:
            problems.append("mqtt: not connected to the broker")
        if self.outbox is not None and not self.outbox.healthy():
            problems.append("webhooks: the outbox is not draining")
        if self.cfg.media is not None and self.media is None:
            from .media.service import missing_media_packages

            # Packages the installation lacks are not the release's doing (the previous one ran without
            # them too); anything else that stops media is, and keeps the release from committing.
            if not missing_media_packages():
                problems.append("media: configured but not running")
        for name, comp in self.supervisor.status().items():
            if comp["state"] not in ("running", "finished"):
                problems.append(f"{name}: {comp['state']}")
        return problems

    def _webhook_delivered(self, row: EventRow) -> None:
        if row.type == "call.created":
            self.calls.backend_acknowledged(str(row.data.get("guid") or row.key))

    def _rest_simulated_inputs(self) -> None:
        """Mock pins start at their pull level; a simulated panel starts with every input at rest."""
        cfgs = [*self.cfg.buttons, self.cfg.door.contact, self.cfg.door.exit_button, self.cfg.tamper]
        for cfg in cfgs:
            if cfg is not None:
                pin = self.hw.factory.pin(f"GPIO{cfg.pin}")
                pin.drive_low() if cfg.active == "high" else pin.drive_high()

    def _wire_inputs(self, loop: asyncio.AbstractEventLoop) -> None:
        def stuck(name: str) -> Callable[[bool, float], None]:
            def report(is_stuck: bool, active_s: float) -> None:
                self.journal.record(InputStuck(input=name, active_s=round(active_s, 3)) if is_stuck
                                    else InputRecovered(input=name))
            return report

        for b in self.cfg.buttons:
            def pressed(active: bool, b: ButtonConfig = b) -> None:
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
        self.someone_at_panel()

    def someone_at_panel(self) -> None:
        """A press or a keypad touch: look for a QR code at the camera for a while (access.qr)."""
        if self.qr is not None:
            self.qr.wake()

    # -- run and stop ----------------------------------------------------------------------------------
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
        await self.stop(self.stop_reason, failed=self.stop_failed)
        return 1 if self.stop_failed else 0

    async def stop(self, reason: str, *, failed: bool = False) -> None:
        """Stop every component within STOP_BUDGET_S: first each reaches its safe state (relays off first),
        then each stops in reverse start order with what is left of the one budget, at most its own cap.
        The budget is real time on purpose: it is what systemd's stop timeout measures."""
        if self._stopped:
            return
        self._stopped = True
        started = time.monotonic()
        deadline = started + STOP_BUDGET_S - 0.15  # the rest: the process exit
        why = StopReason(reason, failed)
        self.lifecycle.stopping(why)
        await self.lifecycle.stop(deadline)
        self.notifier.close()
        log.info("panel stopped", extra={"reason": reason, "stop_s": round(time.monotonic() - started, 3)})

    # -- introspection ------------------------------------------------------------------------------
    def healthy(self) -> bool:
        return self.door.healthy()

    async def backlog(self) -> int:
        """Events not yet delivered to the backend (the outbox's count; no disk read once it runs)."""
        if self.outbox is not None and self.outbox.ready:
            return self.outbox.backlog
        return await self.store.read(lambda c: int(c.execute(
            "SELECT count(*) FROM events WHERE delivered IS NULL").fetchone()[0]))

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
                       "media": self.media.health() if self.media is not None else {"configured": False},
                       "publishing": self.publishing.health() if self.publishing is not None
                       else {"configured": False}},
            "components": components,
            "lifecycle": self.lifecycle.names(),
        }

    async def state(self) -> dict[str, Any]:
        return {
            "panel": {"id": self.cfg.panel.id, "name": self.cfg.panel.name},
            "simulated": self.simulated,
            "door": self.door.state(),
            "call": self.calls.state(),
            "inputs": {name: {"active": i.active, "stuck": i.stuck} for name, i in self.inputs.items()},
            "backlog": await self.backlog(),
            "access": self._access_state(),
        }

    def _access_state(self) -> dict[str, Any] | None:
        if self.access is None:
            return None
        return {"blocked": self.access.blocked_sources(), "keypad": self.keypad is not None,
                "osdp": self.osdp.status() if self.osdp is not None else None,
                "qr_scanning": self.qr.scanning if self.qr is not None else False}

    def pin_levels(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for rid, dev in self.hw.relays.items():
            out[f"relay:{rid}"] = {"pin": f"GPIO{self.cfg.relay(rid).pin}", "level": int(dev.pin.state),
                                   "energised": bool(dev.value)}
        for name, inp in self.inputs.items():
            out[name] = {"pin": f"GPIO{inp.cfg.pin}", "level": int(inp.device.pin.state), "active": inp.active}
        return out


class JournalComponent(BaseComponent):
    """The journal stops after every component that records: it writes ``panel.stopped`` and flushes."""

    name = "journal"
    stop_cap_s = 1.0

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.reason = "stopped"

    def stopping(self, reason: StopReason) -> None:
        self.reason = reason.text

    async def stop(self) -> None:
        self.journal.record(PanelStopped(reason=self.reason))
        await self.journal.flush()


def api_certificate(cfg: Config) -> ServerCert:
    from .api.tls import server_cert

    return server_cert(cfg.storage.dir, cfg.panel.id, cfg.api.cert_file, cfg.api.key_file)


async def serve(cfg: Config, secrets: Secrets, simulate: bool, config_path: Path | None = None,
                welcome: Callable[[Panel], Awaitable[None]] | None = None) -> int:
    # One daemon per storage.dir; `panel factory-reset` takes the same lock before it erases anything.
    # A shell's 1024 descriptors are not the hard limit: take what is allowed (the API stays within
    # that less api.fd_reserve, so the rest of the panel always gets descriptors).
    raise_fd_limit()
    panel = Panel(cfg, secrets, simulate=simulate)
    panel.storage_lock = lock_storage(cfg.storage.dir)
    panel.config_path = config_path
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, panel.request_stop, signal.Signals(sig).name)
    try:
        await panel.start()
    except BaseException as e:
        if panel._core_built:
            await panel.stop(f"start failed: {type(e).__name__}: {e}", failed=True)
        raise
    if welcome is not None:
        await welcome(panel)  # the demo's pages and sign-ins, once everything runs
    try:
        return await panel.run()
    finally:
        panel.hw.all_off()
