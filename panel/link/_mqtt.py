"""The MQTT link to the backend: connection, reconnect, status, retained state, commands in, replies out.

- MQTT 5 over TLS with server verification (``mqtt.ca_file``), the panel's own identity (user name +
  ``secrets.mqtt_password``, or a client certificate), a clean session (commands published while the
  panel was away are stale, so none are queued for it), and ``offline`` (retained) as the last will.
- After every (re)connect: subscribe, publish ``online`` and every retained state topic again (a
  restarted broker may have lost them), then Home Assistant discovery if configured; discovery again
  whenever Home Assistant announces itself (``online`` on ``<discovery_prefix>/status``).
- State topics are published only when their payload changed (nothing in them ticks by itself).
- Reconnects back off exponentially with jitter up to ``mqtt.reconnect_max_s``.
- Commands are handed to ``Control`` (panel/link/_control.py) one task each; the reply goes to the
  command's response topic with its correlation data. The CONNECT announces a Maximum Packet Size
  (``commands.MAX_PACKET``) so that the broker never delivers a message too large to be a command.

Events are also published live on ``events/<type>`` while connected; they are not queued while the
link is down (webhooks are the durable channel).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from ..auth import Secrets
from ..compat import fail_connect, paho_client
from ..errors import ConfigError
from ..platform import Clock, Config, EventRow, Journal, LoopClock
from ..platform import iso8601 as _iso
from ._commands import MAX_PACKET, CommandRefused, Reply, reply_bytes
from ._control import Control
from ._freshness import ClockSync
from ._homeassistant import discovery_messages
from ._replay import SeenCommands
from ._topics import CALL_OUTCOMES, OFFLINE, ONLINE, CallOutcomeMsg, DoorbellMsg, EventMsg, Topics

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.5
TICK_S = 5.0  # how often the clock-sync status and the nonce are looked at
# Spent ids may go about a minute and a half after they were spent; prune sooner when many wait.
PRUNE_EVERY_S = 60.0
PRUNE_BACKLOG = 1000
EVENT_BUFFER = 500  # events waiting for the publisher while connected; older ones are dropped


def backoff_s(attempt: int, cap: float, rng: random.Random) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, so retries spread out but
    never collapse to zero (a broker restart must not be met by every panel at the same instant)."""
    ceiling = min(cap, BACKOFF_FIRST_S * 2.0 ** min(attempt, 30))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def _json(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def _text(payload: Any) -> str:
    raw = bytes(payload) if isinstance(payload, (bytes, bytearray)) else str(payload).encode()
    return raw.decode("utf-8", "replace").strip()


class _SocketErrors(logging.Handler):
    """paho's last socket error. With TLS 1.3 a broker refuses a client certificate (revoked, unknown CA)
    after the handshake, so the refusal reaches paho's reader, not the connect call, which then only times
    out; this keeps the broker's reason for ``describe``."""

    def __init__(self, on_error: Callable[[str], None]) -> None:
        super().__init__(logging.ERROR)
        self.last: str | None = None
        self.on_error = on_error

    def emit(self, record: logging.LogRecord) -> None:
        self.last = record.getMessage()
        self.on_error(self.last)


def describe(e: BaseException, socket_error: str | None = None) -> str:
    """What went wrong, with what an installer can do about it (``socket_error``: paho's reader's, if any)."""
    text = str(e)
    if socket_error and "alert" in socket_error.lower():  # the broker's TLS alert says more than a timeout
        text = f"{socket_error} ({text})"
    low = text.lower()
    if isinstance(e, MqttConnectError):
        if "not authori" in low or "bad user name or password" in low or "bad username or password" in low:
            return (f"the broker refused the panel's credentials ({text}); check mqtt.username and mqtt_password "
                    "in the secrets file, or the client certificate")
        return f"the broker refused the connection ({text})"
    # aiomqtt re-raises socket and TLS errors as MqttError(str(error)), so the text is all there is.
    if "certificate revoked" in low:
        return (f"the broker refused the panel's client certificate: it was revoked ({text}); enrol the panel "
                "again (installer page, Enrolment: Enrol again; docs/enrolment.md)")
    if "certificate expired" in low or "certificate has expired" in low:
        return (f"the broker refused the panel's client certificate: it has expired ({text}); check the panel's "
                "clock, then enrol again (docs/enrolment.md)")
    if isinstance(e, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
        return (f"the broker's TLS certificate did not verify ({text}); mqtt.ca_file must hold the CA that signed "
                "it and mqtt.host must match its name")
    return text or type(e).__name__


class MqttLink:
    def __init__(self, cfg: Config, secrets: Secrets, control: Control, journal: Journal, seen: SeenCommands,
                 clock_sync: ClockSync, *, rng: random.Random | None = None, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or LoopClock()
        m = cfg.mqtt
        assert m.host is not None
        if m.username is not None and secrets.mqtt_password is None:
            raise ConfigError(["mqtt.username: is set but the secrets file has no mqtt_password; add it (or use "
                               "a client certificate with cert_file/key_file)"])
        self.cfg = cfg
        self.m = m
        self.secrets = secrets
        self.control = control
        self.seen = seen
        self.clock_sync = clock_sync
        self.topics = Topics(m.topic_prefix, cfg.panel.id, m.discovery_prefix)
        self.client_id = m.client_id or cfg.panel.id
        self.rng = rng or random.Random()
        self.connected = False
        self.connects = 0
        self.last_error: str | None = None
        self.client: aiomqtt.Client | None = None
        self._tls: ssl.SSLContext | None = None
        self._dirty = asyncio.Event()
        self._reconnect = asyncio.Event()  # new TLS settings (re-enrolled): drop the connection, connect anew
        self._events: deque[EventRow] = deque(maxlen=EVENT_BUFFER)
        self._published: dict[str, str] = {}
        self._discovery_stale = False  # the panel's name changed: republish discovery from the publisher
        self._handlers: set[asyncio.Task[None]] = set()
        self._unsubscribe = journal.subscribe(self._on_event)
        self._socket_errors = _SocketErrors(self._socket_error)
        self._loop: asyncio.AbstractEventLoop | None = None
        # paho logs through it to this module's logger; its own (unregistered) logger, so that two links in one
        # process never see each other's socket errors, and it goes with the link
        self._paho_log = logging.Logger(f"{__name__}.paho")
        self._paho_log.parent = log
        self._paho_log.addHandler(self._socket_errors)

    # -- setup ----------------------------------------------------------------------------------------
    async def prepare(self) -> None:
        """Load the TLS files once (off the loop); a bad file is a configuration error, not a retry."""
        if not self.m.tls:
            return
        m = self.m

        def build() -> ssl.SSLContext:
            ctx = ssl.create_default_context(cafile=str(m.ca_file) if m.ca_file else None)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            if m.cert_file is not None and m.key_file is not None:
                ctx.load_cert_chain(str(m.cert_file), str(m.key_file))
            return ctx

        try:
            self._tls = await asyncio.to_thread(build)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError([f"mqtt: cannot load the TLS files ({e}); check mqtt.ca_file, cert_file and key_file "
                               "(PEM, readable by the service user)"]) from None

    async def use_settings(self, cfg: Config) -> None:
        """Re-enrolled: connect anew, now, with the new client certificate (and broker, if it moved).
        A file that cannot be loaded raises ConfigError and the current connection stays."""
        old = (self.cfg, self.m, self._tls)
        self.cfg, self.m = cfg, cfg.mqtt
        try:
            await self.prepare()
        except ConfigError:
            self.cfg, self.m, self._tls = old
            raise
        self.topics = Topics(self.m.topic_prefix, cfg.panel.id, self.m.discovery_prefix)
        self._reconnect.set()

    def _socket_error(self, text: str) -> None:
        """A TLS alert while connecting (a revoked or unknown client certificate, with TLS 1.3) ends the
        attempt at once: aiomqtt would wait for a CONNACK that never comes."""
        client, loop = self.client, self._loop
        if client is None or loop is None or self.connected or "alert" not in text.lower():
            return
        loop.call_soon_threadsafe(fail_connect, client, aiomqtt.MqttError(text))

    async def _until_reconnect(self) -> None:
        await self._reconnect.wait()
        raise aiomqtt.MqttError("reconnecting with the panel's new client certificate")

    def _new_client(self) -> aiomqtt.Client:
        m = self.m
        assert m.host is not None
        connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        connect.SessionExpiryInterval = 0
        # paho reads any packet whole into memory, up to MQTT's 256 MB: the broker must drop bigger ones
        # (commands are at most 96 KiB; a larger one up to this size still gets its "malformed" reply).
        connect.MaximumPacketSize = MAX_PACKET
        return aiomqtt.Client(
            m.host, m.port, identifier=self.client_id, protocol=aiomqtt.ProtocolVersion.V5,
            username=m.username, password=self.secrets.mqtt_password if m.username else None,
            will=aiomqtt.Will(self.topics.status, OFFLINE, qos=1, retain=True),
            clean_start=True, keepalive=m.keepalive_s, tls_context=self._tls, properties=connect, timeout=10,
            # Without it Nagle's algorithm holds a reply behind our unacknowledged PUBACK (~40 ms).
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)], logger=self._paho_log,
        )

    # -- the connection loop --------------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, serve, and reconnect forever (a supervised component)."""
        attempt = 0
        self._loop = asyncio.get_running_loop()
        while True:
            self.client = client = self._new_client()
            self._reconnect.clear()
            self._socket_errors.last = None
            try:
                async with client:
                    attempt = 0
                    try:
                        await self._serve(client)
                    except asyncio.CancelledError:
                        # Stopping: a command still in flight must not energise a relay after the
                        # daemon switched them all off (its record may be on disk; the relay stays off).
                        for task in list(self._handlers):
                            task.cancel()
                        await self._goodbye(client)
                        raise
                    finally:
                        self.connected = False
            except (aiomqtt.MqttError, OSError) as e:
                self.last_error = describe(e, self._socket_errors.last)
            delay = backoff_s(attempt, self.m.reconnect_max_s, self.rng)
            attempt += 1
            log.warning("mqtt link down: %s; reconnecting in %.2f s", self.last_error, delay,
                        extra={"broker": f"{self.m.host}:{self.m.port}", "attempt": attempt})
            await self.clock.sleep(delay)

    async def _serve(self, client: aiomqtt.Client) -> None:
        # Commands skip aiomqtt's message iterator (a queue hop and two tasks per message, ~0.3 ms
        # on the unlock path here): paho's per-topic callback, which aiomqtt runs on this event
        # loop's thread (it reads the socket in a loop reader), starts the command's task directly.
        paho = paho_client(client)
        if paho is not None:
            paho.message_callback_add(self.topics.commands, lambda _c, _u, msg: self._spawn(
                self._command(client, msg.payload, msg.retain, getattr(msg, "properties", None))))
        await self._subscribe(client)
        self._published.clear()
        self._events.clear()
        await client.publish(self.topics.status, ONLINE, qos=1, retain=True)
        self.connected = True  # subscribed and announced: commands are served from here on
        self.connects += 1
        self.last_error = None
        log.info("mqtt connected", extra={"broker": f"{self.m.host}:{self.m.port}", "client_id": self.client_id})
        await self._publish_state(client)
        if self.m.homeassistant_discovery:
            await self._publish_discovery(client)
        tasks = [asyncio.create_task(self._receive(client), name="mqtt-receive"),
                 asyncio.create_task(self._publisher(client), name="mqtt-publish"),
                 asyncio.create_task(self._ticker(), name="mqtt-tick"),
                 asyncio.create_task(self._until_reconnect(), name="mqtt-reconnect")]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()  # re-raise the first failure (normally the link dropping)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _publish_discovery(self, client: aiomqtt.Client) -> None:
        self._discovery_stale = False
        if not self.m.homeassistant_discovery:
            return
        for topic, config in discovery_messages(self.cfg, self.topics, self._local_address(client)).items():
            await client.publish(topic, _json(config) if config is not None else b"", qos=1, retain=True)

    @staticmethod
    def _local_address(client: aiomqtt.Client) -> str | None:
        """The panel's own address on the broker connection (for the installer page's URL)."""
        try:
            paho = paho_client(client)  # aiomqtt does not expose the socket
            sock: Any = paho.socket() if paho is not None else None
            return str(sock.getsockname()[0]) if sock is not None else None
        except (AttributeError, OSError):
            return None

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        # retainAsPublished: a retained command keeps its retain flag, so it can be refused as stale.
        opts = SubscribeOptions(qos=1, noLocal=True, retainAsPublished=True)
        ha = self.m.homeassistant_discovery
        topics = [self.topics.commands] + ([self.topics.ha_lock_set, self.topics.ha_status] if ha else [])
        granted = await client.subscribe([(t, opts) for t in topics])
        refused = [t for t, rc in zip(topics, granted, strict=True) if int(cast(int, getattr(rc, "value", rc))) >= 0x80]
        if self.topics.ha_status in refused:
            # Optional: without it discovery is still published at every connect.
            refused.remove(self.topics.ha_status)
            log.warning("the broker refused the subscription to %s: the panel will not republish discovery when "
                        "Home Assistant restarts; let panels read it (docs/mqtt.md, Broker ACL)", self.topics.ha_status)
        if refused:
            raise aiomqtt.MqttError(f"the broker refused the subscription to {', '.join(refused)}; its ACL must let "
                                    f"this panel read its own command topics (see docs/mqtt.md)")

    async def _goodbye(self, client: aiomqtt.Client) -> None:
        try:
            await asyncio.wait_for(client.publish(self.topics.status, OFFLINE, qos=1, retain=True), 1.0)
        except Exception as e:  # stopping anyway; the last will covers a missed goodbye
            log.info("could not publish offline before stopping: %s", e)

    # -- inbound --------------------------------------------------------------------------------------
    async def _receive(self, client: aiomqtt.Client) -> None:
        async for msg in client.messages:
            if msg.topic.matches(self.topics.commands):
                self._spawn(self._command(client, msg.payload, msg.retain, msg.properties))
            elif msg.topic.matches(self.topics.ha_lock_set):
                self._spawn(self._ha_command(msg))
            elif msg.topic.matches(self.topics.ha_status) and _text(msg.payload) == ONLINE:
                log.info("Home Assistant is online; publishing discovery again")
                self._spawn(self._publish_discovery(client))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _command(self, client: aiomqtt.Client, payload: Any, retain: bool, props: Properties | None) -> None:
        response_topic = getattr(props, "ResponseTopic", None) if props is not None else None
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        reply_to = self.topics.replies
        refusal = None
        if response_topic:
            if self.topics.is_reply_topic(response_topic):
                reply_to = response_topic
            else:
                refusal = CommandRefused("bad_response_topic", f"response topic {response_topic!r} is not under "
                                         f"{self.topics.replies}/, the only place this panel may publish replies")
        data = bytes(payload) if isinstance(payload, (bytes, bytearray)) else str(payload).encode()
        reply = await self.control.execute(data, retained=retain, refusal=refusal)
        self.poke()
        await self._reply(client, reply_to, reply, correlation)

    async def _reply(self, client: aiomqtt.Client, topic: str, reply: Reply, correlation: bytes | None) -> None:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if correlation is not None:
            props.CorrelationData = correlation
        try:
            await client.publish(topic, reply_bytes(reply), qos=1, properties=props)
        except aiomqtt.MqttError as e:
            log.warning("reply %s to command %s not delivered: %s", reply.code, reply.id, e)

    async def _ha_command(self, msg: aiomqtt.Message) -> None:
        payload = msg.payload if isinstance(msg.payload, (bytes, bytearray)) else str(msg.payload).encode()
        reply = await self.control.execute_ha(bytes(payload), retained=msg.retain)
        if reply.code == "ok":
            log.info("Home Assistant lock command: %s", reply.message)
        self.poke()

    # -- outbound -------------------------------------------------------------------------------------
    def poke(self) -> None:
        """Something may have changed: republish whatever state differs from what was last sent."""
        self._dirty.set()

    def _on_event(self, row: EventRow) -> None:
        if self.connected:
            self._events.append(row)
        self._dirty.set()

    def reconfigure(self, cfg: Config) -> None:
        """panel.name or panel.board changed: Home Assistant's device gets them (retained discovery
        republished at once if connected, else at the next connect). Broker, identity and topics are
        local-only keys, so the connection itself never changes here."""
        renamed = cfg.panel != self.cfg.panel
        self.cfg = cfg.model_copy(update={"mqtt": self.m})  # an enrolled broker is not in the file
        self.control.reconfigure(self.cfg)
        if renamed:
            self._discovery_stale = True
            self.poke()

    async def _publisher(self, client: aiomqtt.Client) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if self._discovery_stale:
                await self._publish_discovery(client)
            await self._publish_state(client)
            while self._events:
                await self._publish_event(client, self._events.popleft())

    async def _publish_state(self, client: aiomqtt.Client) -> None:
        for name, payload in self.control.state_topics().items():
            data = _json(payload)
            if self._published.get(name) == data:
                continue
            await client.publish(self.topics.state(name), data, qos=1, retain=True)
            self._published[name] = data

    async def _publish_event(self, client: aiomqtt.Client, row: EventRow) -> None:
        msg = EventMsg(id=row.id, type=row.type, timestamp=_iso(row.time), data=row.data)
        await client.publish(self.topics.event(row.type), msg.model_dump_json(), qos=1)
        ring = row.type == "call.created" or (row.type == "button.pressed" and self.control.calls is None)
        if ring:
            unit = row.data.get("unit") or {"id": row.data.get("unit_id"), "label": row.data.get("unit_label")}
            bell = DoorbellMsg(call_guid=row.data.get("guid"), unit={k: str(v) for k, v in unit.items()},
                               button=str(row.data.get("button")))
            await client.publish(self.topics.doorbell, bell.model_dump_json(), qos=1)
        if row.type == "call.status_updated" and self.m.homeassistant_discovery:
            outcome = CALL_OUTCOMES.get(str(row.data.get("status")))
            if outcome is not None:
                unit = row.data.get("unit") or {}
                said = CallOutcomeMsg.model_validate({
                    "event_type": outcome, "call_guid": str(row.data.get("guid")),
                    "unit": {"id": unit.get("id"), "label": unit.get("label")}, "button": str(row.data.get("button")),
                    "who": row.data.get("who"), "reason": str(row.data.get("reason"))})
                await client.publish(self.topics.call_outcome, said.model_dump_json(), qos=1)

    async def _ticker(self) -> None:
        """Nonce rotation and clock-sync changes reach state/freshness; spent ids are pruned."""
        loop = asyncio.get_running_loop()
        next_prune = loop.time()
        while True:
            if loop.time() >= next_prune or self.seen.backlog >= PRUNE_BACKLOG:
                next_prune = loop.time() + PRUNE_EVERY_S
                pruned = await self.seen.prune()
                if pruned:
                    log.info("forgot %d spent command ids", pruned)
            self.poke()
            await asyncio.sleep(min(TICK_S, self.control.nonces.expires_in() + 0.01))

    # -- introspection --------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {"configured": True, "connected": self.connected, "connects": self.connects,
                "broker": f"{self.m.host}:{self.m.port}", "last_error": self.last_error,
                "seen_command_ids": len(self.seen)}

    def close(self) -> None:
        self._unsubscribe()
