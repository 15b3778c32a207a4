"""Standard Webhooks: the one definition of a delivery on the wire, and the HTTP sender.

A delivery is ``POST <webhooks.url>`` with the body ``{"type", "timestamp", "data"}`` and three headers:
``webhook-id`` (the event's id: the same on every retry, the receiver's de-duplication key),
``webhook-timestamp`` (Unix seconds of this attempt) and ``webhook-signature`` (``v1,<base64 HMAC-SHA256
over "id.timestamp.body">``, one per configured secret, space-separated, so a backend can rotate its
secret without losing a delivery). See docs/webhooks.md.

The sender only classifies what happened to one attempt; what to do next (retry when, in which order)
is the outbox's business.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from .. import __version__
from ..auth import WebhookSecretError, decode_secret
from ..platform import EventRow, iso8601

log = logging.getLogger(__name__)

# A Retry-After beyond this is treated as this: a typo on the backend must not park the panel for days.
RETRY_AFTER_MAX_S = 3600.0
# How much of an error response is kept for the log and health (backends sometimes answer with pages).
ERROR_BODY_BYTES = 300
READ_BODY_MAX_BYTES = 65536

Outcome = Literal["delivered", "retry", "gone"]
# "event": this event failed (retry it, others may go on); "endpoint": the endpoint is unavailable
# (pause every delivery: hammering a backend that is down or rate-limiting us helps nobody).
Scope = Literal["event", "endpoint"]

# Statuses that speak for the whole endpoint, not for the one event that got them.
_ENDPOINT_STATUSES = frozenset({408, 429, 502, 503, 504})


def sign(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: ``v1,<sig>`` per key, space-separated (spec: multiple signatures)."""
    if not keys:
        raise WebhookSecretError("no webhook secret to sign with; set webhook_secrets in the secrets file")
    to_sign = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join("v1," + base64.b64encode(hmac.new(k, to_sign, hashlib.sha256).digest()).decode()
                    for k in keys)




def body_of(row: EventRow) -> bytes:
    """The delivery body of one event. Byte-identical on every attempt (keys sorted, compact)."""
    doc = {"type": row.type, "timestamp": iso8601(row.time), "data": row.data}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def parse_retry_after(value: str | None, now_wall: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP-date), or None."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now_wall
    return min(max(0.0, seconds), RETRY_AFTER_MAX_S)


def endpoint_label(url: str) -> str:
    """scheme://host[:port]: enough to say where, without a path that may embed a token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


@dataclass(frozen=True)
class Attempt:
    """What one delivery attempt came to."""

    outcome: Outcome
    scope: Scope
    status: int | None
    detail: str
    retry_after_s: float | None = None
    elapsed_s: float = 0.0


class Sender:
    """Signs and POSTs deliveries to one endpoint over one pooled HTTP client."""

    def __init__(self, url: str, secrets: Sequence[str], *, timeout_s: float, panel_id: str,
                 wall: Callable[[], float] = time.time, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url
        self.keys = [decode_secret(s) for s in secrets]
        if not self.keys:
            raise WebhookSecretError("webhooks.url is set but there is no webhook secret; add webhook_secrets = "
                                     "[\"whsec_...\"] to the secrets file (or PANEL_SECRET_WEBHOOK_SECRETS), or "
                                     "remove webhooks.url")
        self.timeout_s = timeout_s
        self.wall = wall
        self.user_agent = f"panel/{__version__} ({panel_id})"
        # No redirects: a 3xx means webhooks.url is out of date, and following it would send signed
        # events wherever the answer points.
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), follow_redirects=False,
                                        limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
                                        transport=transport)

    def headers(self, msg_id: str, body: bytes) -> dict[str, str]:
        ts = int(self.wall())
        return {
            "content-type": "application/json",
            "user-agent": self.user_agent,
            "webhook-id": msg_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": sign(self.keys, msg_id, ts, body),
        }

    async def send(self, row: EventRow) -> Attempt:
        body = body_of(row)
        started = time.monotonic()
        try:
            async with self.client.stream("POST", self.url, content=body, headers=self.headers(row.id, body)) as resp:
                text = await _head(resp)
        except httpx.TimeoutException:
            return Attempt("retry", "endpoint", None, f"no answer within webhooks.timeout_s ({self.timeout_s:g} s)",
                           elapsed_s=time.monotonic() - started)
        except httpx.HTTPError as e:
            return Attempt("retry", "endpoint", None, f"{type(e).__name__}: {e or 'connection failed'}",
                           elapsed_s=time.monotonic() - started)
        return self.classify(resp.status_code, resp.headers, text, time.monotonic() - started)

    def classify(self, status: int, headers: httpx.Headers | dict[str, str], text: str, elapsed_s: float) -> Attempt:
        retry_after = parse_retry_after(headers.get("retry-after"), self.wall())
        if 200 <= status < 300:
            return Attempt("delivered", "event", status, "ok", elapsed_s=elapsed_s)
        if status == 410:
            return Attempt("gone", "endpoint", status, "the endpoint answered 410 Gone: the backend asked to stop "
                           "sending to it", elapsed_s=elapsed_s)
        if 300 <= status < 400:
            where = headers.get("location", "?")
            return Attempt("retry", "endpoint", status, f"the endpoint redirects ({status}) to {where}; redirects "
                           "are not followed: set webhooks.url to the final address", retry_after, elapsed_s)
        scope: Scope = "endpoint" if status in _ENDPOINT_STATUSES else "event"
        return Attempt("retry", scope, status, f"HTTP {status}: {text}".rstrip(": "), retry_after, elapsed_s)

    async def aclose(self) -> None:
        await self.client.aclose()


async def _head(resp: httpx.Response) -> str:
    """Read the answer (so the connection can be reused) up to a bound; the start of it, for the log."""
    got = b""
    async for chunk in resp.aiter_bytes():
        got += chunk
        if len(got) >= READ_BODY_MAX_BYTES:
            break  # closing an unread response drops the connection, which is what a huge answer deserves
    if 200 <= resp.status_code < 300:
        return ""
    return got[:ERROR_BODY_BYTES].decode("utf-8", "replace").strip()


def describe(attempt: Attempt) -> dict[str, Any]:
    return {"outcome": attempt.outcome, "status": attempt.status, "detail": attempt.detail,
            "retry_after_s": attempt.retry_after_s, "elapsed_s": round(attempt.elapsed_s, 4)}
