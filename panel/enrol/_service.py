"""The enrolment service: from the code a fresh panel shows to a client certificate the broker accepts,
and its renewal before it expires.

Unenrolled (or asked to enrol again), the panel asks the backend's EST endpoint every ``enrol.retry_s``
with its code; the backend answers "not redeemed" until the installer has redeemed the code in their
backend account. Once a certificate comes back, it is checked (this panel's key and id, valid now,
for TLS clients), the backend's settings are fetched with it (``panelconfig``), and a trial MQTT
connection with it must be accepted (CONNACK and the subscription to the panel's command topic); only
then is the new identity put in force (``_identity.commit``). Any failure leaves the panel as it was.
Enrolled, it re-enrols ``enrol.renew_margin_s`` before the certificate expires, with a new key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from cryptography.hazmat.primitives.asymmetric import ec
from paho.mqtt.subscribeoptions import SubscribeOptions
from pydantic import ValidationError

from ..link import describe_mqtt_error
from ..platform import Clock, Config, iso8601, write_atomic
from ._code import EnrolCode, current_code, new_key, spend_code
from ._est import ClientCert, EnrolError, EstClient, PanelConfigMsg, build_csr
from ._identity import Identity, add_ca, commit, discard, load_identity, pick_certificate, stage

log = logging.getLogger(__name__)

ENROLMENT_DIR = "enrolment"
LAST_ANSWER = "last-answer.json"  # the last refusal, for panel enrol show (no secret in it)
RENEW_CHECK_MAX_S = 3600.0  # the wall clock may jump (NTP after boot): look at the expiry again this often
RENEW_BACKOFF_MAX_S = 3600.0

OnEnrolled = Callable[[Identity], Awaitable[None]]


class EnrolService:
    def __init__(self, cfg: Config, clock: Clock, on_enrolled: OnEnrolled,
                 mqtt_status: Callable[[], dict[str, Any] | None] = lambda: None) -> None:
        assert cfg.enrol.est_url is not None
        self.cfg = cfg
        self.clock = clock
        self.on_enrolled = on_enrolled
        self.mqtt_status = mqtt_status
        self.root: Path = cfg.storage.dir / ENROLMENT_DIR
        self.est = EstClient(cfg.enrol.est_url, cfg.enrol.ca_file, cfg.enrol.timeout_s)
        self.identity: Identity | None = None
        self.again = False  # enrolled, but the installer asked to enrol anew with a code
        self.code: EnrolCode | None = None
        self.state = "unenrolled"  # or "enrolled": what is in force
        self.busy: str | None = None  # "enrolling" or "renewing" while an attempt runs
        self.last_error: EnrolError | None = None
        self.last_attempt: float | None = None
        self.renewals = 0
        self._lock = asyncio.Lock()
        self._poke = asyncio.Event()
        self._qr: tuple[str, str] | None = None  # (the code's secret, its QR code as an SVG data: URI)

    @property
    def panel_id(self) -> str:
        return self.cfg.panel.id

    @property
    def wants_code(self) -> bool:
        return self.identity is None or self.again

    async def prepare(self) -> Identity | None:
        """Load the identity in force (before the backend link is built from it)."""
        self.identity = await asyncio.to_thread(load_identity, self.root)
        if self.identity is not None and self.identity.panel_id != self.panel_id:
            log.warning("the enrolled identity is for panel %s, not %s (panel.id changed): enrol again",
                        self.identity.panel_id, self.panel_id)
            self.identity = None
        self.state = "enrolled" if self.identity is not None else "unenrolled"
        return self.identity

    # -- the code -------------------------------------------------------------------------------------
    async def current_code(self) -> EnrolCode:
        ttl = self.cfg.enrol.code_ttl_s
        self.code = await asyncio.to_thread(current_code, self.root, self.panel_id, ttl, self.clock.wall())
        return self.code

    async def enrol_again(self) -> EnrolCode:
        """Show a new code while the current identity stays in force until the new one is."""
        self.again = True
        code = await self.current_code()
        self._poke.set()
        return code

    # -- the loop -------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Enrol while a code is wanted; renew before expiry. A supervised task."""
        failures = 0
        while True:
            if self.wants_code:
                try:
                    await self.enrol_now()
                except EnrolError as e:
                    await self._wait(e.retry_after_s or self.cfg.enrol.retry_s)
                except Exception as e:  # a full disk, a bug: reported and retried, never fatal to the panel
                    await self._unexpected(e)
                    await self._wait(self.cfg.enrol.retry_s)
                continue
            assert self.identity is not None
            due_in = self.identity.not_after - self.cfg.enrol.renew_margin_s - self.clock.wall()
            if due_in > 0:
                await self._wait(min(due_in, RENEW_CHECK_MAX_S))
                continue
            try:
                await self.renew()
                failures = 0
            except Exception as e:
                failures += 1
                retry = e.retry_after_s if isinstance(e, EnrolError) else None
                if not isinstance(e, EnrolError):
                    await self._unexpected(e)
                await self._wait(retry or min(RENEW_BACKOFF_MAX_S, self.cfg.enrol.retry_s * 2 ** failures))

    async def _unexpected(self, e: Exception) -> None:
        log.error("enrolment failed unexpectedly: %s: %s", type(e).__name__, e, exc_info=e)
        await self._answered(EnrolError("internal_error", f"the panel failed while enrolling ({type(e).__name__}: "
                                        f"{e}); nothing was changed; see its log; it tries again by itself"))

    async def _answered(self, error: EnrolError | None) -> None:
        """Keep the last refusal (None: it worked) for the page and, on disk, for ``panel enrol show``; written
        only when it changes (a code waiting for days is asked about every retry_s: no write each time)."""
        before = (self.last_error_code, str(self.last_error) if self.last_error else None)
        self.last_error = error
        if (self.last_error_code, str(error) if error else None) == before:
            return
        if error is not None:
            log.warning("enrolment: %s: %s", error.code, error)
        try:
            await asyncio.to_thread(write_last_answer, self.root, error, self.clock.wall())
        except OSError as e:  # the page still shows it
            log.warning("cannot keep the enrolment's last answer for panel enrol show: %s", e)

    async def _wait(self, seconds: float) -> None:
        """Sleep on the panel's clock, or until poked (enrol again; also a poke that came during an attempt)."""
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        poked = asyncio.ensure_future(self._poke.wait())
        try:
            await asyncio.wait({sleeper, poked}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            poked.cancel()
            self._poke.clear()

    # -- enrol and renew -------------------------------------------------------------------------------
    async def enrol_now(self) -> Identity:
        """One attempt with the code in force (the installer's "try now", or the loop)."""
        async with self._lock:
            if not self.wants_code:
                assert self.identity is not None
                return self.identity
            code = await self.current_code()
            key = code.key()
            ident = await self._attempt("enrolling", key, lambda csr: self.est.simpleenroll(csr, self.panel_id,
                                                                                           code.secret))
            await asyncio.to_thread(spend_code, self.root, code)
            self.again = False
            self.code = None
            log.info("enrolled", extra={"panel": self.panel_id, "serial": ident.serial,
                                        "not_after": iso8601(ident.not_after), "broker": f"{ident.mqtt_host}"})
            return ident

    async def renew(self) -> Identity:
        """simplereenroll with a new key, authenticated by the certificate in force."""
        async with self._lock:
            current = self.identity
            assert current is not None
            client = ClientCert(current.cert_file, current.key_file)
            key = await asyncio.to_thread(new_key)
            ident = await self._attempt("renewing", key, lambda csr: self.est.simplereenroll(csr, client))
            self.renewals += 1
            log.info("re-enrolled", extra={"panel": self.panel_id, "serial": ident.serial,
                                           "not_after": iso8601(ident.not_after)})
            return ident

    async def _attempt(self, state: str, key: ec.EllipticCurvePrivateKey,
                       request: Callable[[bytes], Awaitable[list[Any]]]) -> Identity:
        self.busy = state
        self.last_attempt = self.clock.wall()
        try:
            ident = await self._enrol_with(key, request)
        except EnrolError as e:
            await self._answered(e)
            raise
        finally:
            self.busy = None
        self.identity = ident
        self.state = "enrolled"
        await self._answered(None)
        await self.on_enrolled(ident)
        return ident

    @property
    def last_error_code(self) -> str | None:
        return self.last_error.code if self.last_error is not None else None

    async def _enrol_with(self, key: ec.EllipticCurvePrivateKey,
                          request: Callable[[bytes], Awaitable[list[Any]]]) -> Identity:
        csr = await asyncio.to_thread(build_csr, key, self.panel_id)
        certs = await request(csr)
        now = self.clock.wall()
        cert, chain = pick_certificate(certs, key, self.panel_id, now)
        staged = await asyncio.to_thread(stage, self.root, key, cert, chain)
        try:
            client = ClientCert(staged / "cert.pem", staged / "key.pem")
            msg = await self.est.panel_config(client)
            self._check_config(msg)
            ca = await asyncio.to_thread(add_ca, staged, msg.mqtt.ca_pem) if msg.mqtt.ca_pem is not None else None
            await self._probe_broker(msg, client, ca)
            return await asyncio.to_thread(commit, staged, cert, msg, now)
        except BaseException:
            await asyncio.to_thread(discard, staged)
            raise

    def _check_config(self, msg: PanelConfigMsg) -> None:
        if msg.panel_id != self.panel_id:
            raise EnrolError("enrol_wrong_identity", f"the backend's configuration is for panel {msg.panel_id!r}, "
                             f"this panel is {self.panel_id!r}; nothing was changed: report this to the backend's "
                             "operators")
        if msg.webhooks is not None:
            try:
                type(self.cfg.webhooks).model_validate({**self.cfg.webhooks.model_dump(), "url": msg.webhooks.url})
            except ValidationError as e:
                raise EnrolError("enrol_bad_response", f"the backend's webhook URL is not usable "
                                 f"({e.errors()[0]['msg']}); nothing was changed") from None

    async def _probe_broker(self, msg: PanelConfigMsg, client: ClientCert, ca_pem: Path | None) -> None:
        """A trial connection with the new certificate: the broker must accept it and let the panel read
        its command topic. Its own client id, so an enrolled panel's live connection is not taken over."""
        ca = ca_pem or self.cfg.mqtt.ca_file or self.cfg.enrol.ca_file

        def context() -> ssl.SSLContext:
            ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(str(client.cert), str(client.key))
            return ctx

        prefix = msg.mqtt.topic_prefix or self.cfg.mqtt.topic_prefix
        topic = f"{prefix}/{self.panel_id}/commands"
        where = f"{msg.mqtt.host}:{msg.mqtt.port}"
        try:
            ctx = await asyncio.to_thread(context)
            async with aiomqtt.Client(msg.mqtt.host, msg.mqtt.port, identifier=f"{self.panel_id}-enrol-check",
                                      protocol=aiomqtt.ProtocolVersion.V5, tls_context=ctx,
                                      timeout=self.cfg.enrol.timeout_s) as mqtt:
                granted = await mqtt.subscribe([(topic, SubscribeOptions(qos=1))])
                if any(int(cast(int, getattr(rc, "value", rc))) >= 0x80 for rc in granted):
                    raise aiomqtt.MqttError(f"the broker refused the subscription to {topic}; its ACL must let the "
                                            "certificate's CN read panels/<CN>/# (pattern readwrite panels/%u/#)")
        except (aiomqtt.MqttError, OSError, ssl.SSLError) as e:
            # A CONNACK refusal is the broker's own word (MQTT's user-name hints do not apply to a certificate)
            reason = f"CONNACK: {e}" if isinstance(e, MqttConnectError) else describe_mqtt_error(e)
            raise EnrolError("enrol_broker_refused", f"the broker {where} did not accept the new certificate "
                             f"({reason}); nothing was changed, the panel tries again by itself. The "
                             "broker must trust the EST CA (cafile), take the identity from the certificate "
                             "(use_identity_as_username) and allow panels/%u/# (docs/enrolment.md)") from None

    # -- introspection ----------------------------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        """What the installer page, the API and ``panel enrol show`` report."""
        code = qr = None
        if self.wants_code:
            current = await self.current_code()
            code = current.public()
            if self._qr is None or self._qr[0] != current.secret:
                # ~10 ms of pure Python per code (more on a Pi): off the loop, once per code
                self._qr = (current.secret, await asyncio.to_thread(current.qr_svg_data_uri))
            qr = self._qr[1]
        err = self.last_error
        return {
            "configured": True,
            "state": self.state,
            "busy": self.busy,
            "panel_id": self.panel_id,
            "est_url": self.cfg.enrol.est_url,
            "code": code,
            "qr": qr,
            "again": self.again,
            "last_error": {"code": err.code, "message": str(err)} if err is not None else None,
            "last_attempt": iso8601(self.last_attempt),
            "certificate": self.identity.public() if self.identity is not None else None,
            "renewals": self.renewals,
            "mqtt": self.mqtt_status(),
        }


def write_last_answer(root: Path, error: EnrolError | None, now: float) -> None:
    path = root / LAST_ANSWER
    if error is None:
        path.unlink(missing_ok=True)
        return
    body = {"code": error.code, "message": str(error), "at": iso8601(now)}
    write_atomic(path, json.dumps(body).encode(), 0o644)


def offline_status(cfg: Config) -> tuple[Identity | None, dict[str, Any] | None]:
    """The identity and the last refusal on disk, without a running panel (``panel enrol show``). Blocking."""
    root = cfg.storage.dir / ENROLMENT_DIR
    try:
        answer = json.loads((root / LAST_ANSWER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        answer = None
    return load_identity(root, tidy=False), answer if isinstance(answer, dict) else None
