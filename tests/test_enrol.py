"""Enrolment without a shared secret in the image (docs/enrolment.md), against a real Mosquitto (client
certificate required, identity from the certificate, ``pattern readwrite panels/%u/#``, a CRL) and the
tests' EST endpoint (tests/est_server.py): a fresh panel shows a code; once the backend redeemed it, the
panel enrols with its own key and connects with the issued certificate; each refusal is named and
changes nothing; the certificate is renewed before it expires; a revoked one no longer connects.
"""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import stat
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from panel import cli
from panel.daemon import Panel
from panel.enrol import ALPHABET, ENROLMENT_DIR, EnrolCode, EnrolError, load_identity, normalise
from panel.errors import CODES, ConfigError, http_status
from panel.link import signed
from panel.platform import parse_config

from .enrol_support import api, enrol_config, enrolment_files, start_panel, status
from .est_server import EstServer
from .eventually import eventually
from .mosquitto import Broker, Client
from .support import config_dict
from .webhook_receiver import WebhookReceiver

ASYNC = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("broker"), enrol=True)
    with b:
        yield b


@pytest.fixture(scope="module")
def webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture(scope="module")
def receiver(webhook_secret: str) -> Iterator[WebhookReceiver]:
    with WebhookReceiver([webhook_secret]) as r:
        yield r


@pytest.fixture
def est(broker: Broker, receiver: WebhookReceiver, webhook_secret: str, tmp_path: Path) -> Iterator[EstServer]:
    server = EstServer(broker, tmp_path / "est", webhook_url=receiver.url, webhook_secret=webhook_secret)
    yield server
    server.close()


@pytest_asyncio.fixture(loop_scope="module")
async def make_panel(tmp_path: Path) -> AsyncIterator[Any]:
    made: list[Panel] = []

    async def make(data: dict[str, Any]) -> Panel:
        made.append(await start_panel(tmp_path, data))
        return made[-1]

    yield make
    for p in made:
        await p.stop("test over")


@ASYNC
async def test_a_fresh_panel_enrols_by_its_code_and_connects_with_the_issued_certificate(
        make_panel: Any, est: EstServer, broker: Broker, receiver: WebhookReceiver, tmp_path: Path) -> None:
    panel = await make_panel(enrol_config(tmp_path, est, "panel-a"))
    assert panel.enrol is not None and panel.mqtt is None and panel.outbox is None
    first = await status(panel)
    code = first["code"]
    assert first["state"] == "unenrolled" and first["certificate"] is None
    # 16 Crockford base32 characters in groups of four; the QR code carries id, code and key fingerprint.
    assert len(code["short"]) == 19 and all(c in ALPHABET for c in code["short"].replace("-", ""))
    assert code["uri"] == (f"panel-enrol:?v=1&panel=panel-a&code={code['short'].replace('-', '')}"
                           f"&fp={code['fingerprint']}")
    assert first["qr"].startswith("data:image/svg+xml")
    pending = panel.cfg.storage.dir / ENROLMENT_DIR / "pending.json"
    assert stat.S_IMODE(pending.stat().st_mode) == 0o600  # the code and the key it names

    # The console shows the same code (panel enrol show).
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(["enrol", "show", "--config", str(panel.config_path), "--no-qr"]) == 0
    assert code["short"] in out.getvalue() and code["uri"] in out.getvalue()

    # Not redeemed yet: the panel asks, the backend says so, nothing is written.
    await eventually(lambda: any(r.path.endswith("/simpleenroll") for r in est.requests), 5, "a first attempt")
    waiting: dict[str, Any] = await eventually(lambda: _with_error(panel), 5, "the refusal shown")
    assert waiting["last_error"]["code"] == "enrol_not_redeemed"
    assert enrolment_files(panel) == ["last-answer.json", "pending.json"]
    out = io.StringIO()
    with redirect_stdout(out):  # the console shows the backend's answer too
        assert cli.main(["enrol", "show", "--config", str(panel.config_path), "--no-qr"]) == 0
    assert "enrol_not_redeemed: the backend has not redeemed this enrolment code yet" in out.getvalue()

    # The installer's backend account redeems the scanned QR code (which pins the key's fingerprint).
    async with Client(broker, subscribe=("panels/panel-a/status",)) as backend:
        assert est.redeem_uri(code["uri"]) == "panel-a"
        online = await backend.wait_for(lambda m: bytes(m.payload) == b"online", 10)
        assert online.topic.value == "panels/panel-a/status"
    done = await status(panel)
    assert done["state"] == "enrolled" and done["code"] is None and done["last_error"] is None
    assert done["mqtt"]["connected"] is True and done["mqtt"]["broker"] == f"127.0.0.1:{broker.enrol_port}"

    # The request: Basic auth with the panel id and the code, a PKCS#10 body; the certificate: this panel's
    # key, its id as CN (the broker's user name), from the key whose fingerprint the QR code carried.
    enrol = [r for r in est.requests if r.path.endswith("/simpleenroll")][-1]
    assert enrol.auth_user == "panel-a" and enrol.content_type == "application/pkcs10"
    ident = load_identity(panel.cfg.storage.dir / ENROLMENT_DIR)
    assert ident is not None and done["certificate"]["serial"] == ident.serial
    cert = x509.load_pem_x509_certificate(ident.cert_file.read_bytes())
    assert cert.subject.rfc4514_string() == "CN=panel-a" and cert.serial_number in est.issued
    assert stat.S_IMODE(ident.key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((ident.dir / "identity.json").stat().st_mode) == 0o600  # holds the webhook secret
    assert "as panel-a (p5, c1, k30, u'panel-a')" in broker.log()  # the CN is the user name
    # The code was single-use: spent, and the backend's redemption with it.
    assert "pending.json" not in enrolment_files(panel) and est.redemptions["panel-a"].used
    assert "last-answer.json" not in enrolment_files(panel)

    # Webhooks go to the endpoint the backend named, signed with the secret it handed over.
    panel.calls.on_button("b303")
    rec = await eventually(lambda: [r for r in receiver.records if r.type == "call.created"], 10, "call.created")
    assert rec[0].verified

    # Commands signed with the key the backend handed over open the door; the image held no key at all.
    async with Client(broker, subscribe=("panels/panel-a/replies",)) as backend:
        await backend.publish("panels/panel-a/commands", json.dumps(signed(est.command_key, "panel-a", {
            "id": str(uuid.uuid4()), "cmd": "open", "exp": time.time() + 10})))
        reply = await backend.wait_for(lambda m: json.loads(m.payload)["cmd"] == "open", 10)
    assert json.loads(reply.payload)["code"] == "ok" and panel.door.relays[panel.door.main_relay].energised
    assert panel.secrets.command_key is None  # it lives with the identity, not in the secrets file

    # The console now shows the identity; the API says there is nothing to enrol.
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(["enrol", "show", "--config", str(panel.config_path)]) == 0
    assert f"certificate {ident.serial}" in out.getvalue()
    async with api(panel) as c:
        r = await c.post("/api/v1/enrol")
    assert (r.status_code, r.json()["code"]) == (409, "already_enrolled")

    # A restart comes back with the identity on disk: connected with it at once, no code, no EST request.
    config = panel.config_path
    assert config is not None
    await panel.stop("restart")
    asked = len(est.requests)
    async with Client(broker, subscribe=("panels/panel-a/status",)) as backend:
        again = await make_panel(enrol_config(config.parent, est, "panel-a"))
        await backend.wait_for(lambda m: bytes(m.payload) == b"online" and not m.retain, 10)
    assert again.mqtt is not None and again.mqtt.m.cert_file == ident.cert_file
    assert (await status(again))["code"] is None and len(est.requests) == asked


async def _with_error(panel: Panel) -> dict[str, Any]:
    s = await status(panel)
    return s if s["last_error"] else {}


@ASYNC
async def test_each_refusal_is_named_with_what_to_do_and_nothing_is_applied(
        make_panel: Any, est: EstServer, broker: Broker, tmp_path: Path) -> None:
    panel = await make_panel(enrol_config(tmp_path, est, "panel-b", retry_s=600))  # attempts by hand only
    code = (await status(panel))["code"]

    async def attempt() -> tuple[int, dict[str, Any]]:
        async with api(panel) as c:
            r = await c.post("/api/v1/enrol")
        return r.status_code, r.json()

    async def refused(expected: str, *words: str) -> None:
        st, body = await attempt()
        assert (st, body["code"]) == (http_status(expected), expected), body
        assert all(w in body["message"] for w in words), body["message"]
        shown = await status(panel)
        assert shown["last_error"]["code"] == expected and shown["state"] == "unenrolled"
        # Nothing half-applied: no identity, no staged generation, no link; the same code still shown.
        assert enrolment_files(panel) == ["last-answer.json", "pending.json"]
        assert panel.mqtt is None and panel.outbox is None
        assert shown["code"]["short"] == code["short"]

    await refused("enrol_not_redeemed", "redeem")
    est.redeem("panel-b", "0000-0000-0000-0000")  # the installer mistyped it
    await refused("enrol_code_wrong", "redeem the code shown here again")
    est.redeem("panel-b", code["short"], ttl_s=-1)
    await refused("enrol_code_expired", "redeem the code shown here again")
    est.redeem("panel-b", code["short"].lower().replace("0", "o"))  # typed loosely: still the code
    est.refuse_csr = "this account may not add panels"
    await refused("enrol_csr_refused", "this account may not add panels", "nothing was changed")
    est.refuse_csr = None
    est.issue_for = "panel-a"  # a certificate for another panel
    est.redemptions["panel-b"].used = False
    await refused("enrol_wrong_identity", "'panel-a'", "nothing was changed")
    est.issue_for = None
    est.redemptions["panel-b"].used = False
    est.broker_port = broker.port  # a listener that takes passwords, not this certificate
    await refused("enrol_broker_refused", "did not accept the new certificate", "nothing was changed")
    est.broker_port = None
    est.redemptions["panel-b"].used = False
    for code_name in ("enrol_not_redeemed", "enrol_code_wrong", "enrol_code_expired", "enrol_csr_refused",
                      "enrol_wrong_identity", "enrol_broker_refused"):
        assert code_name in CODES
    st, body = await attempt()
    assert st == 200 and body["enrolment"]["state"] == "enrolled", body
    assert sorted(f for f in enrolment_files(panel) if not f.startswith("gen-")) == ["current"]

    # Enrol again (a revoked certificate, another backend): a new code, while the identity in force and its
    # connection stay until the new one has passed every check.
    mqtt = panel.mqtt
    assert mqtt is not None and panel.enrol is not None
    await eventually(lambda: mqtt.connected, 10, "connected")
    before, connects = panel.enrol.identity, mqtt.connects
    async with api(panel) as c:
        again = (await c.post("/api/v1/enrol/again")).json()["enrolment"]
    assert again["state"] == "enrolled" and again["again"] and again["code"]["short"] != code["short"]
    shown: dict[str, Any] = await eventually(lambda: _with_error(panel), 5, "the new code not redeemed yet")
    assert shown["last_error"]["code"] == "enrol_not_redeemed"
    assert panel.enrol.identity == before and mqtt.connected
    est.redeem("panel-b", again["code"]["short"])
    st, body = await attempt()
    assert st == 200 and body["enrolment"]["certificate"]["serial"] != before.serial, body
    await eventually(lambda: mqtt.connected and mqtt.connects > connects, 10, "reconnected with the new certificate")
    assert panel.mqtt is mqtt and (await status(panel))["again"] is False


@ASYNC
async def test_renews_before_expiry_and_a_revoked_certificate_no_longer_connects(
        make_panel: Any, est: EstServer, broker: Broker, tmp_path: Path) -> None:
    margin = 60.0
    est.lifetime_s = margin + 1.5  # due for renewal 1.5 s after it is issued
    panel = await make_panel(enrol_config(tmp_path, est, "panel-c", renew_margin_s=margin))
    code = (await status(panel))["code"]
    est.redeem("panel-c", code["short"])
    await eventually(lambda: panel.mqtt is not None and panel.mqtt.connected, 10, "connected with the first certificate")
    assert panel.enrol is not None and panel.enrol.identity is not None
    first = panel.enrol.identity
    est.lifetime_s = 30 * 86_400
    await eventually(lambda: panel.enrol is not None and panel.enrol.renewals == 1, 10, "re-enrolled")
    renewed = panel.enrol.identity
    assert renewed is not None and renewed.serial != first.serial
    # simplereenroll was authenticated by the certificate in force, not by a code.
    reenrol = [r for r in est.requests if r.path.endswith("/simplereenroll")]
    assert reenrol and reenrol[0].client_serial == int(first.serial, 16) and reenrol[0].auth_user is None
    assert not first.dir.exists()  # the old generation is gone; one identity on disk
    # The link reconnected with the new certificate.
    assert panel.mqtt is not None
    await eventually(lambda: panel.mqtt is not None and panel.mqtt.connected and panel.mqtt.connects >= 2, 10,
                     "reconnected with the renewed certificate")
    assert panel.mqtt.m.cert_file == renewed.cert_file

    # The backend revokes it; the broker reads its CRL at the restart and refuses the panel from then on.
    broker.revoke(int(renewed.serial, 16))
    broker.restart()
    mqtt = panel.mqtt
    await eventually(lambda: not mqtt.connected and "revoked" in (mqtt.last_error or ""), 15,
                     "the revoked certificate refused", detail=lambda: mqtt.status())
    assert "enrol the panel again" in (mqtt.last_error or "")
    # Nor does the backend renew a revoked certificate: the panel says to enrol again, and keeps what it has.
    with pytest.raises(EnrolError) as refused:
        await panel.enrol.renew()
    assert refused.value.code == "enrol_renew_refused" and "enrol the panel again" in str(refused.value)
    assert panel.enrol.identity == renewed
    assert (await status(panel))["mqtt"]["connected"] is False


def test_a_code_is_typed_loosely_and_stays_put_until_it_expires(tmp_path: Path) -> None:
    from panel.enrol._code import current_code  # the file format is the package's own business

    now = 1_800_000_000.0
    a = current_code(tmp_path, "panel-x", 600, now)
    assert current_code(tmp_path, "panel-x", 600, now + 599) == a  # shown again, unchanged
    b = current_code(tmp_path, "panel-x", 600, now + 600)  # expired: a new code and a new key
    assert b.secret != a.secret and b.fingerprint != a.fingerprint
    assert current_code(tmp_path, "panel-y", 600, now + 601).panel_id == "panel-y"  # panel.id changed
    assert normalise(a.short.lower()) == a.secret
    assert normalise("oil-1") == "0111"
    assert isinstance(a, EnrolCode) and "secret" not in repr(a)
    # What a phone reads off the QR code is the payload (decoded by zxing-cpp, as the panel's own scanner).
    zxingcpp = pytest.importorskip("zxingcpp")
    np = pytest.importorskip("numpy")
    modules = np.array(list(a.qr().matrix_iter(scale=4, border=4)), dtype=np.uint8)
    read = zxingcpp.read_barcodes((1 - modules) * 255)
    assert [r.text for r in read] == [a.uri]


def test_enrolment_owns_the_broker_and_webhook_keys(tmp_path: Path) -> None:
    data = config_dict(mqtt={"host": "broker.example"}, enrol={"est_url": "https://backend.example/.well-known/est"})
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    assert any(p.startswith("mqtt.host:") and "enrol.est_url" in p for p in e.value.problems)
    with pytest.raises(ConfigError) as e:
        parse_config(config_dict(enrol={"est_url": "http://backend.example/est"}))
    assert any(p.startswith("enrol.est_url:") and "https://" in p for p in e.value.problems)


def test_a_generation_cut_off_before_it_was_put_in_force_is_forgotten(tmp_path: Path) -> None:
    from panel.enrol._identity import stage  # what a power cut mid-enrolment leaves

    from .mosquitto import TestCA

    ca = TestCA(tmp_path)
    pair = ca.issue("panel-z", server=False)
    key: Any = serialization.load_pem_private_key(pair.key.read_bytes(), None)
    root = tmp_path / ENROLMENT_DIR
    staged = stage(root, key, x509.load_pem_x509_certificate(pair.cert.read_bytes()), [])
    assert staged.exists() and load_identity(root) is None and not staged.exists()
    assert os.listdir(root) == []
