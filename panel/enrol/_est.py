"""An EST client (RFC 7030) for the two calls the panel makes, and the backend's panel configuration.

- ``POST <est_url>/simpleenroll``: a base64 PKCS#10 CSR (``application/pkcs10``), HTTP Basic with the
  panel id and the enrolment code's secret (the backend redeemed the code into this single-use token);
- ``POST <est_url>/simplereenroll``: the same with a new key, authenticated by TLS with the current
  client certificate instead;
- both answer ``application/pkcs7-mime`` (certs-only, base64 DER), or 202 + Retry-After while the
  backend holds the request for approval;
- ``GET <est_url>/panelconfig``, authenticated by TLS with the new certificate: the broker and the
  webhook endpoint and secret (``PanelConfigMsg``).

Every failure is an ``EnrolError`` whose code says what went wrong and whose message what to do.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from ..auth import decode_secret
from ..errors import PanelError

MAX_RESPONSE = 256 * 1024  # a certificate chain or a config is a few KiB; more is not an EST answer
PKCS7 = "application/pkcs7-mime"


class EnrolError(PanelError):
    """An enrolment or re-enrolment failed; nothing was applied. ``code`` says why, stably."""

    def __init__(self, code: str, message: str, retry_after_s: float | None = None) -> None:
        self.code = code
        self.retry_after_s = retry_after_s
        super().__init__(message)


# What the backend's 401 says (JSON body {"error": ...}), mapped to the panel's code and advice.
REFUSALS: dict[str, tuple[str, str]] = {
    "not_redeemed": ("enrol_not_redeemed", "the backend has not redeemed this enrolment code yet: in your backend "
                     "account, add the panel with its id and the code shown here (or scan the QR code); the panel "
                     "asks again by itself"),
    "wrong_code": ("enrol_code_wrong", "the backend holds a different code for this panel id (mistyped?): redeem "
                   "the code shown here again, character by character"),
    "expired": ("enrol_code_expired", "the backend's redemption of this code has expired: redeem the code shown "
                "here again"),
    "used": ("enrol_code_expired", "the backend says this code was used already (codes are single-use): "
             "redeem the code shown here, which is a new one if the panel enrolled with the old"),
}


def _whsec(value: str) -> str:
    decode_secret(value)  # WebhookSecretError (a ValueError) names the rule, never the value
    return value


class BrokerMsg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    host: str = Field(min_length=1, max_length=253, description="the broker's name (its certificate's)")
    port: int = Field(8883, ge=1, le=65535)
    ca_pem: str | None = Field(None, max_length=65_536, description="CA bundle that signed the broker's "
                               "certificate (PEM); absent: enrol.ca_file")
    topic_prefix: str | None = Field(None, pattern=r"^[^+#/][^+#]*[^+#/]$|^[^+#/]$",
                                     description="absent: mqtt.topic_prefix")


class WebhooksMsg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    url: str = Field(min_length=8, max_length=2048)
    secret: Annotated[str, AfterValidator(_whsec)] = Field(repr=False)


class PanelConfigMsg(BaseModel):
    """``GET <est_url>/panelconfig``: where this panel's backend is, for this certificate."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    panel_id: str
    mqtt: BrokerMsg
    webhooks: WebhooksMsg | None = None
    # Signed commands are the default (mqtt.require_signed_commands): the key must come with the rest, or
    # an enrolled panel would need a shared secret in its image after all.
    command_key: str | None = Field(None, min_length=16, max_length=512, repr=False,
                                    description="the key the backend signs this panel's commands with; absent: "
                                    "the secrets file's command_key")


def build_csr(key: ec.EllipticCurvePrivateKey, panel_id: str) -> bytes:
    """A PKCS#10 request (DER) whose subject CN is the panel id."""
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, panel_id)]))
            .sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.DER))


def parse_certs(body: bytes) -> list[x509.Certificate]:
    """An EST certs-only answer: base64 of a DER PKCS#7 (RFC 7030 4.2.3)."""
    try:
        der = base64.b64decode(b"".join(body.split()), validate=True)
        certs = pkcs7.load_der_pkcs7_certificates(der)
    except (binascii.Error, ValueError) as e:
        raise EnrolError("enrol_bad_response", f"the EST answer is not a base64 PKCS#7 certs-only message ({e}); "
                         "the backend's EST endpoint must answer application/pkcs7-mime (docs/enrolment.md)") from None
    if not certs:
        raise EnrolError("enrol_bad_response", "the EST answer holds no certificate")
    return certs


@dataclass(frozen=True)
class ClientCert:
    cert: Path
    key: Path


class EstClient:
    def __init__(self, base_url: str, ca_file: Path | None, timeout_s: float) -> None:
        self.base = base_url.rstrip("/")
        self.ca_file = ca_file
        self.timeout_s = timeout_s

    async def _context(self, client: ClientCert | None) -> ssl.SSLContext:
        def build() -> ssl.SSLContext:
            ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            if client is not None:
                ctx.load_cert_chain(str(client.cert), str(client.key))
            return ctx

        try:
            return await asyncio.to_thread(build)
        except (OSError, ssl.SSLError) as e:
            raise EnrolError("enrol_unreachable", f"cannot load the TLS files for the EST endpoint ({e}); check "
                             "enrol.ca_file") from None

    async def _request(self, method: str, path: str, *, client: ClientCert | None = None,
                       auth: tuple[str, str] | None = None, body: bytes | None = None) -> httpx.Response:
        url = f"{self.base}/{path}"
        headers = {"Accept": PKCS7 if path.endswith("enroll") else "application/json"}
        if body is not None:
            headers |= {"Content-Type": "application/pkcs10", "Content-Transfer-Encoding": "base64"}
        ctx = await self._context(client)
        try:
            async with httpx.AsyncClient(verify=ctx, timeout=self.timeout_s, follow_redirects=False,
                                         trust_env=False) as http:
                async with http.stream(method, url, headers=headers, content=body, auth=auth) as r:
                    data = b""
                    async for chunk in r.aiter_bytes():
                        data += chunk
                        if len(data) > MAX_RESPONSE:
                            raise EnrolError("enrol_bad_response", f"{url} answered more than {MAX_RESPONSE} bytes")
                    # read whole, bounded, then handed on as a plain response
                    return httpx.Response(r.status_code, headers=r.headers, content=data)
        except httpx.HTTPError as e:
            hint = ("enrol.ca_file must hold the CA that signed the EST server's certificate"
                    if "CERTIFICATE_VERIFY_FAILED" in str(e) else "check enrol.est_url and the network")
            raise EnrolError("enrol_unreachable", f"the EST endpoint {url} cannot be reached ({e or type(e).__name__}); "
                             f"{hint}; the panel tries again by itself") from None

    async def simpleenroll(self, csr_der: bytes, panel_id: str, secret: str) -> list[x509.Certificate]:
        r = await self._request("POST", "simpleenroll", auth=(panel_id, secret), body=base64.encodebytes(csr_der))
        return self._certs(r, renewal=False)

    async def simplereenroll(self, csr_der: bytes, current: ClientCert) -> list[x509.Certificate]:
        r = await self._request("POST", "simplereenroll", client=current, body=base64.encodebytes(csr_der))
        return self._certs(r, renewal=True)

    async def panel_config(self, client: ClientCert) -> PanelConfigMsg:
        r = await self._request("GET", "panelconfig", client=client)
        if r.status_code != 200:
            raise EnrolError("enrol_bad_response", f"{self.base}/panelconfig answered {r.status_code} "
                             f"({_reason(r)}) to the new certificate; the backend must serve the panel's broker and "
                             "webhook secret to the certificate it just issued (docs/enrolment.md)")
        try:
            return PanelConfigMsg.model_validate_json(r.content)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            raise EnrolError("enrol_bad_response", f"{self.base}/panelconfig is not a panel configuration "
                             f"({problems}); see docs/enrolment.md for its fields") from None

    def _certs(self, r: httpx.Response, *, renewal: bool) -> list[x509.Certificate]:
        if r.status_code == 200:
            if r.headers.get("content-type", "").split(";")[0].strip().lower() != PKCS7:
                raise EnrolError("enrol_bad_response", f"the EST endpoint answered {r.headers.get('content-type')!r}, "
                                 f"not {PKCS7}")
            return parse_certs(r.content)
        if r.status_code == 202:
            retry = _retry_after(r.headers.get("retry-after"))
            raise EnrolError("enrol_pending", "the backend holds the request for approval (202); the panel asks "
                             "again by itself", retry_after_s=retry)
        if r.status_code in (401, 403):
            if renewal:
                raise EnrolError("enrol_renew_refused", f"the backend refused to renew this panel's certificate "
                                 f"({_reason(r)}); it was revoked or is unknown to the backend: enrol the panel "
                                 "again with a new code (installer page, Enrolment: Enrol again)")
            code, advice = REFUSALS.get(_error_of(r), ("enrol_code_wrong", "the backend does not accept this code; "
                                                       "redeem the code shown here again"))
            raise EnrolError(code, f"{advice} (the backend said: {_reason(r)})")
        if r.status_code in (400, 422):
            raise EnrolError("enrol_csr_refused", f"the backend refused the certificate request ({_reason(r)}); "
                             "nothing was changed: ask the backend's operators, quoting this message")
        raise EnrolError("enrol_unreachable", f"the EST endpoint answered {r.status_code} ({_reason(r)}); the panel "
                         "tries again by itself")


def _error_of(r: httpx.Response) -> str:
    try:
        data = r.json()
    except ValueError:
        return ""
    return str(data.get("error", "")) if isinstance(data, dict) else ""


def _reason(r: httpx.Response) -> str:
    """The backend's own words, short and printable (it may be a stranger's server)."""
    try:
        data = r.json()
        text = str(data.get("message") or data.get("error") or "") if isinstance(data, dict) else ""
    except ValueError:
        text = r.content[:200].decode("utf-8", "replace")
    text = "".join(c if c.isprintable() else " " for c in text).strip()[:200]
    return f"HTTP {r.status_code}" + (f": {text}" if text else "")


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, min(3600.0, float(value))) if value else None
    except ValueError:
        return None

