"""The backend's side of enrolment, written for the tests: an EST endpoint (RFC 7030) on 127.0.0.1 over
HTTPS, the redemption an installer's backend account does, and the panel configuration (docs/enrolment.md).

No EST server package exists here, so this is the reference the document describes, small enough to read:

- ``redeem(panel_id, code)``: the installer's account turns the code into a single-use token for that
  panel id (valid ``ttl_s``); a QR payload (``redeem_uri``) also pins the key fingerprint;
- ``POST /.well-known/est/simpleenroll``: HTTP Basic (panel id, code) -> a certificate whose CN is the
  panel id the code was redeemed for, for the key in the CSR; 401 with ``{"error": ...}`` otherwise;
- ``POST /.well-known/est/simplereenroll``: TLS client certificate (issued here, not revoked) -> a new one;
- ``GET /.well-known/est/panelconfig``: TLS client certificate -> the broker and the webhook endpoint.

Knobs make it misbehave the ways a real backend can (refuse the CSR, issue for another panel id, point at a
broker that refuses the certificate). A ``ThreadingHTTPServer`` in a thread, because the TLS client
certificate of a request must be readable (``getpeercert``), which the ASGI servers here do not pass on.
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from panel.enrol import key_fingerprint, normalise

from .mosquitto import TOPIC_PREFIX, Broker

PATH = "/.well-known/est"


@dataclass
class Redemption:
    code: str
    expires: float
    fingerprint: str | None = None
    used: bool = False


@dataclass
class Request:
    path: str
    auth_user: str | None
    client_serial: int | None
    content_type: str | None


@dataclass
class EstServer:
    broker: Broker
    dir: Path
    webhook_url: str | None = None
    lifetime_s: float = 30 * 86_400  # the certificates it issues
    refuse_csr: str | None = None  # a reason: every CSR is refused with 400
    issue_for: str | None = None  # issue certificates for this CN instead of the redeemed panel id
    broker_port: int | None = None  # panelconfig names this port instead of the enrolled listener
    redemptions: dict[str, Redemption] = field(default_factory=dict)
    issued: dict[int, x509.Certificate] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    webhook_secret: str = field(default_factory=lambda: "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())
    command_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))  # signs this backend's commands

    def __post_init__(self) -> None:
        self.server_pair = self.broker.ca.issue("est-server", server=True)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.server_pair.cert), str(self.server_pair.key))
        ctx.load_verify_locations(str(self.broker.ca_file))
        ctx.verify_mode = ssl.CERT_OPTIONAL  # simpleenroll: Basic; the rest: the client certificate
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="est-server", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}{PATH}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    # -- the installer's backend account ------------------------------------------------------------------
    def redeem(self, panel_id: str, code: str, ttl_s: float = 600, fingerprint: str | None = None) -> None:
        self.redemptions[panel_id] = Redemption(normalise(code), time.time() + ttl_s, fingerprint)

    def redeem_uri(self, uri: str) -> str:
        """A scanned QR code: panel id, code and the key's fingerprint in one."""
        parts = urlsplit(uri)
        assert parts.scheme == "panel-enrol", uri
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        assert q["v"] == "1"
        self.redeem(q["panel"], q["code"], fingerprint=q["fp"])
        return q["panel"]

    # -- what the endpoints decide ------------------------------------------------------------------------
    def simpleenroll(self, user: str | None, password: str | None, csr: x509.CertificateSigningRequest) -> Any:
        r = self.redemptions.get(user or "")
        if r is None:
            return 401, {"error": "not_redeemed", "message": "no redeemed code for this panel id"}
        same = secrets.compare_digest(normalise(password or ""), r.code)
        if r.used:  # a new code for a panel enrolled with the one redeemed before: not redeemed yet
            return 401, ({"error": "used", "message": "this code enrolled a panel already"} if same else
                         {"error": "not_redeemed", "message": "no redeemed code for this panel id"})
        if time.time() >= r.expires:
            return 401, {"error": "expired", "message": "the redemption expired"}
        if not same:
            return 401, {"error": "wrong_code", "message": "another code was redeemed for this panel id"}
        refused = self._check_csr(csr, r.fingerprint)
        if refused:
            return 400, {"error": "bad_csr", "message": refused}
        r.used = True
        assert user is not None
        return 200, self._issue(csr, user)

    def simplereenroll(self, client: x509.Certificate | None, csr: x509.CertificateSigningRequest) -> Any:
        if client is None or client.serial_number not in self.issued or client.serial_number in self.broker.revoked:
            return 401, {"error": "unknown_certificate", "message": "no valid certificate of ours was presented"}
        refused = self._check_csr(csr, None)
        if refused:
            return 400, {"error": "bad_csr", "message": refused}
        cn = client.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
        return 200, self._issue(csr, str(cn))

    def panel_config(self, client: x509.Certificate | None) -> Any:
        if client is None or client.serial_number not in self.issued or client.serial_number in self.broker.revoked:
            return 401, {"error": "unknown_certificate", "message": "no valid certificate of ours was presented"}
        cn = str(client.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)
        body: dict[str, Any] = {
            "panel_id": cn,
            "mqtt": {"host": "127.0.0.1", "port": self.broker_port or self.broker.enrol_port,
                     "ca_pem": self.broker.ca_file.read_text(), "topic_prefix": TOPIC_PREFIX}}
        if self.webhook_url is not None:
            body["webhooks"] = {"url": self.webhook_url, "secret": self.webhook_secret}
        body["command_key"] = self.command_key
        return 200, body

    def _check_csr(self, csr: x509.CertificateSigningRequest, fingerprint: str | None) -> str | None:
        if self.refuse_csr:
            return self.refuse_csr
        if not csr.is_signature_valid:
            return "the CSR's signature does not verify"
        if fingerprint is not None and key_fingerprint(csr.public_key()) != fingerprint:  # type: ignore[arg-type]
            return "the CSR's key is not the one the scanned code names"
        return None

    def _issue(self, csr: x509.CertificateSigningRequest, cn: str) -> bytes:
        cert = self.broker.ca.sign_csr(csr, self.issue_for or cn, self.lifetime_s)
        self.issued[cert.serial_number] = cert
        der = pkcs7.serialize_certificates([cert], serialization.Encoding.DER)
        return base64.encodebytes(der)


def _handler(est: EstServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _client(self) -> x509.Certificate | None:
            der = self.connection.getpeercert(binary_form=True)
            return x509.load_der_x509_certificate(der) if der else None

        def _basic(self) -> tuple[str | None, str | None]:
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("Basic "):
                return None, None
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            return user, password

        def _answer(self, result: tuple[int, Any]) -> None:
            status, body = result
            if isinstance(body, bytes):
                self.send_response(status)
                self.send_header("Content-Type", "application/pkcs7-mime; smime-type=certs-only")
                self.send_header("Content-Transfer-Encoding", "base64")
            else:
                body = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="est"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _record(self, user: str | None, client: x509.Certificate | None) -> None:
            est.requests.append(Request(self.path, user, client.serial_number if client else None,
                                        self.headers.get("Content-Type")))

        def do_POST(self) -> None:
            client = self._client()
            user, password = self._basic()
            self._record(user, client)
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Type") != "application/pkcs10":
                self._answer((415, {"error": "unsupported", "message": "expected application/pkcs10"}))
                return
            try:
                csr = x509.load_der_x509_csr(base64.b64decode(b"".join(raw.split())))
            except ValueError as e:
                self._answer((400, {"error": "bad_csr", "message": f"not a base64 PKCS#10 request: {e}"}))
                return
            if self.path == f"{PATH}/simpleenroll":
                self._answer(est.simpleenroll(user, password, csr))
            elif self.path == f"{PATH}/simplereenroll":
                self._answer(est.simplereenroll(client, csr))
            else:
                self._answer((404, {"error": "not_found", "message": self.path}))

        def do_GET(self) -> None:
            client = self._client()
            self._record(None, client)
            if self.path == f"{PATH}/panelconfig":
                self._answer(est.panel_config(client))
            else:
                self._answer((404, {"error": "not_found", "message": self.path}))

    return Handler

