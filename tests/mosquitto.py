"""A real Mosquitto broker for tests and benchmarks, with its own CA, credentials and ACL.

``Broker`` writes everything it needs into a directory: a test CA and a server certificate for
127.0.0.1 (generated with ``cryptography``), a client certificate per panel, a password file
(``mosquitto_passwd``), an ACL file that confines every panel to its own topics with ``%u``
patterns, and a ``mosquitto.conf`` with two TLS listeners on free loopback ports:

- ``port``: TLS, user name + password (the panel's user name is its id);
- ``cert_port``: TLS with a client certificate required; the certificate's CN is the user name
  (``use_identity_as_username``), so the same ACL patterns apply;
- ``enrol_port`` (with ``enrol=True``): the listener an enrolled panel uses (docs/enrolment.md): a
  client certificate from the CA required, its CN the user name, the ACL ``pattern readwrite
  panels/%u/#``, and ``crlfile`` (the CA's revocation list, ``revoke`` then ``restart``).

The broker can be stopped and started again on the same ports (``restart``), which is how tests
check that the panel survives a broker restart. Persistence is off, so a restarted broker has
forgotten every retained message: whatever the panel's state topics show afterwards, the panel
published again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .eventually import eventually_sync

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
TOPIC_PREFIX = "panels"
BACKEND_USER = "backend"
HA_USER = "homeassistant"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- certificates ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


class TestCA:
    """A throw-away certificate authority (EC P-256: fast to generate)."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, name: str = "Panel test CA") -> None:
        self.dir = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name)).issuer_name(_name(name))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.path = directory / "ca.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def sign_csr(self, csr: x509.CertificateSigningRequest, cn: str, lifetime_s: float) -> x509.Certificate:
        """What an EST CA does with a request: the key from the CSR, the subject the backend decides."""
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(_name(cn)).issuer_name(self.cert.subject)
            .public_key(csr.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(seconds=lifetime_s))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def write_crl(self, path: Path, revoked: set[int]) -> None:
        now = datetime.datetime.now(datetime.UTC)
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject)
                   .last_update(now - datetime.timedelta(minutes=5)).next_update(now + datetime.timedelta(days=1)))
        for serial in sorted(revoked):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
        path.write_bytes(builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))

    def issue(self, cn: str, *, server: bool) -> KeyPair:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn)).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                  else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        )
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        pair = KeyPair(self.dir / f"{cn}.pem", self.dir / f"{cn}.key")
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, pair.key)
        return pair


# -- ACL -------------------------------------------------------------------------------------------


ENROLLED_ACL = f"""\
# Enrolled panels (docs/enrolment.md): the certificate's CN is the user name, and a panel owns its subtree.
pattern readwrite {TOPIC_PREFIX}/%u/#
"""


def acl_text(prefix: str = TOPIC_PREFIX, discovery_prefix: str = "homeassistant") -> str:
    """The ACL that docs/mqtt.md shows: each panel (user name = panel id) owns ``<prefix>/<id>/``."""
    return f"""\
# The backend reads every panel's topics and sends commands.
user {BACKEND_USER}
topic readwrite {prefix}/#
topic read {discovery_prefix}/#

# Home Assistant reads state and discovery, may press the lock's buttons, and announces itself
# (its birth message, "online" on {discovery_prefix}/status, makes every panel publish discovery again).
user {HA_USER}
topic read {prefix}/+/status
topic read {prefix}/+/state/#
topic read {prefix}/+/doorbell
topic read {prefix}/+/call_outcome
topic write {prefix}/+/ha/lock/set
topic read {discovery_prefix}/#
topic write {discovery_prefix}/status

# Every panel: its own subtree only. %u is the authenticated user name (the certificate's CN on
# the certificate listener), never the client id a client claims for itself.
pattern read {prefix}/%u/commands
pattern read {prefix}/%u/ha/lock/set
pattern write {prefix}/%u/status
pattern write {prefix}/%u/state/#
pattern write {prefix}/%u/events/#
pattern write {prefix}/%u/replies/#
pattern write {prefix}/%u/doorbell
pattern write {prefix}/%u/call_outcome
pattern write {discovery_prefix}/+/%u/#
pattern read {discovery_prefix}/status
"""


# -- the broker ------------------------------------------------------------------------------------


@dataclass
class Broker:
    """``mosquitto`` on two free loopback TLS ports, configured for the given panel ids."""

    dir: Path
    panels: list[str] = field(default_factory=lambda: ["panel-a", "panel-b"])
    port: int = 0
    cert_port: int = 0
    passwords: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    enrol: bool = False  # a third listener for enrolled panels (require_certificate, %u ACL, crlfile)
    enrol_port: int = 0
    revoked: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.cert_port = self.cert_port or free_port()
        self.ca = TestCA(self.dir)
        self.server = self.ca.issue("localhost", server=True)
        self.client_certs = {p: self.ca.issue(p, server=False) for p in self.panels}
        users = [*self.panels, BACKEND_USER, HA_USER]
        self.passwords = {u: secrets.token_urlsafe(18) for u in users}
        passwd = self.dir / "passwd"
        passwd.unlink(missing_ok=True)
        for i, user in enumerate(users):
            args = [MOSQUITTO_PASSWD, *(["-c"] if i == 0 else []), "-b", str(passwd), user, self.passwords[user]]
            subprocess.run(args, check=True, capture_output=True)
        passwd.chmod(0o600)
        (self.dir / "acl").write_text(acl_text())
        self.log_path = self.dir / "mosquitto.log"
        tls = f"cafile {self.ca.path}\ncertfile {self.server.cert}\nkeyfile {self.server.key}\n"
        (self.dir / "mosquitto.conf").write_text(
            "per_listener_settings true\n"
            "persistence false\n"
            # Without it Nagle holds a command behind an unacknowledged PUBACK to the panel (~40 ms).
            "set_tcp_nodelay true\n"
            # Running as root, mosquitto would switch to the mosquitto user, which cannot read tmp_path.
            "user root\n"
            f"log_dest file {self.log_path}\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\nlog_type subscribe\n"
            "connection_messages true\n"
            f"\nlistener {self.port} 127.0.0.1\n{tls}"
            f"require_certificate false\nallow_anonymous false\npassword_file {passwd}\nacl_file {self.dir / 'acl'}\n"
            f"\nlistener {self.cert_port} 127.0.0.1\n{tls}"
            f"require_certificate true\nuse_identity_as_username true\nallow_anonymous false\n"
            f"acl_file {self.dir / 'acl'}\n"
        )
        if self.enrol:
            self.enrol_port = self.enrol_port or free_port()
            self.crl_path = self.dir / "crl.pem"
            self.ca.write_crl(self.crl_path, self.revoked)
            (self.dir / "acl-enrolled").write_text(ENROLLED_ACL)
            with (self.dir / "mosquitto.conf").open("a") as conf:
                conf.write(f"\nlistener {self.enrol_port} 127.0.0.1\n{tls}crlfile {self.crl_path}\n"
                           "require_certificate true\nuse_identity_as_username true\nallow_anonymous false\n"
                           f"acl_file {self.dir / 'acl-enrolled'}\n")

    def revoke(self, serial: int) -> None:
        """Add a certificate to the CRL; the broker reads it when it (re)starts."""
        self.revoked.add(serial)
        self.ca.write_crl(self.crl_path, self.revoked)

    @property
    def ca_file(self) -> Path:
        return self.ca.path

    def mqtt_config(self, panel_id: str, *, cert: bool = False, **extra: object) -> dict[str, object]:
        """The panel's ``[mqtt]`` config section for this broker."""
        # Signed commands are the default; most tests here speak unsigned commands, so they say so, and the
        # tests of signing pass require_signed_commands=True (tests/test_mqtt.py covers the default itself).
        cfg: dict[str, object] = {"host": "127.0.0.1", "tls": True, "ca_file": str(self.ca.path),
                                  "topic_prefix": TOPIC_PREFIX, "reconnect_max_s": 2, "require_signed_commands": False}
        if cert:
            pair = self.client_certs[panel_id]
            cfg.update(port=self.cert_port, cert_file=str(pair.cert), key_file=str(pair.key))
        else:
            cfg.update(port=self.port, username=panel_id)
        cfg.update(extra)
        return cfg

    def start(self, timeout: float = 10) -> Broker:
        assert self.proc is None or self.proc.poll() is not None, "the broker is already running"
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.dir / "mosquitto.conf")],
                                     stdout=subprocess.DEVNULL, stderr=open(self.dir / "stderr.log", "ab"))
        proc = self.proc

        def running() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {proc.returncode}:\n{self.log()}\n"
                                   f"{(self.dir / 'stderr.log').read_text(errors='replace')}")
            text = self.log_path.read_text(errors="replace")[offset:] if self.log_path.exists() else ""
            return "running" in text and all(self._accepting(p) for p in (self.port, self.cert_port, self.enrol_port)
                                               if p)

        try:
            eventually_sync(running, timeout, "mosquitto running", interval=0.02, detail=self.log)
        except AssertionError:
            self.stop()
            raise
        return self

    @staticmethod
    def _accepting(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        """Stop and start again on the same ports (retained messages are forgotten)."""
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def client_env(broker: Broker, panel_id: str) -> dict[str, str]:
    """Environment that gives ``panel run`` its MQTT password (secrets never go in the config)."""
    return {**os.environ, "PANEL_SECRET_MQTT_PASSWORD": broker.passwords[panel_id]}


# -- a backend (or any other user) as an MQTT 5 client ---------------------------------------------


class Client:
    """An aiomqtt client of the test broker that records what it receives and makes requests."""

    def __init__(self, broker: Broker, user: str = BACKEND_USER, *, subscribe: tuple[str, ...] = (f"{TOPIC_PREFIX}/#",),
                 password: str | None = None, cert: KeyPair | None = None) -> None:
        self.broker = broker
        self.user = user
        self.topics = subscribe
        ctx = ssl.create_default_context(cafile=str(broker.ca_file))
        if cert is not None:
            ctx.load_cert_chain(str(cert.cert), str(cert.key))
        self.client = aiomqtt.Client(
            "127.0.0.1", broker.cert_port if cert is not None else broker.port,
            username=None if cert is not None else user,
            password=None if cert is not None else (password or broker.passwords[user]),
            identifier=f"{user}-{secrets.token_hex(4)}", protocol=aiomqtt.ProtocolVersion.V5, tls_context=ctx,
            # As a real backend should (docs/mqtt.md): Nagle would add ~40 ms to every request/reply.
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        self.messages: list[aiomqtt.Message] = []
        self._new: Any = None
        self._reader: Any = None

    async def __aenter__(self) -> Client:
        await self.client.__aenter__()
        self._new = asyncio.Condition()
        if self.topics:
            await self.client.subscribe([(t, 1) for t in self.topics])
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader
        with contextlib.suppress(Exception):
            await self.client.__aexit__(None, None, None)

    async def _read(self) -> None:
        async for msg in self.client.messages:
            self.messages.append(msg)
            async with self._new:
                self._new.notify_all()

    async def wait_for(self, match: Any, timeout: float = 5.0, since: int = 0) -> Any:
        """The first message (from index ``since``) for which ``match(msg)`` is true."""
        async def find() -> Any:
            i = since
            while True:
                while i < len(self.messages):
                    if match(self.messages[i]):
                        return self.messages[i]
                    i += 1
                async with self._new:
                    await self._new.wait()

        return await asyncio.wait_for(find(), timeout)

    async def quiet(self, match: Any, seconds: float, since: int = 0) -> list[Any]:
        """Every matching message within ``seconds`` (for "nothing arrives" checks)."""
        await asyncio.sleep(seconds)
        return [m for m in self.messages[since:] if match(m)]

    def on(self, topic: str) -> Any:
        return lambda m: m.topic.matches(topic)

    async def publish(self, topic: str, payload: bytes | str, *, retain: bool = False,
                      properties: Any = None) -> None:
        await self.client.publish(topic, payload, qos=1, retain=retain, properties=properties)

    async def request(self, panel_id: str, body: dict[str, Any] | bytes, *, retain: bool = False,
                      response_topic: str | None = None, reply_on: str | None = None,
                      timeout: float = 5.0) -> dict[str, Any]:
        """Publish a command with a response topic and correlation data; return the reply's JSON."""
        corr = secrets.token_bytes(8)
        base = f"{TOPIC_PREFIX}/{panel_id}"
        response_topic = response_topic or f"{base}/replies/{self.user}"
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = response_topic
        props.CorrelationData = corr
        since = len(self.messages)
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        await self.publish(f"{base}/commands", payload, retain=retain, properties=props)
        listen = reply_on or response_topic
        msg = await self.wait_for(lambda m: m.topic.matches(listen) and
                                  getattr(m.properties, "CorrelationData", None) == corr, timeout, since)
        return dict(json.loads(msg.payload))

    async def retained(self, topic: str, timeout: float = 2.0) -> bytes | None:
        """What the broker holds retained on ``topic``, read with a fresh subscription."""
        async with Client(self.broker, self.user, subscribe=(topic,)) as fresh:
            try:
                msg = await fresh.wait_for(lambda m: m.retain, timeout)
            except TimeoutError:
                return None
            return bytes(msg.payload)
