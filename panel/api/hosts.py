"""Who the API believes: the Host a request names, and the client address behind a proxy.

- **Host.** A page on any web site can make a browser on the LAN send requests to the panel under the
  site's own name once its DNS answer points at the panel (DNS rebinding); the browser then treats the
  panel's answers as the site's. The API answers only requests that name it: localhost, this machine's
  hostname and ``<hostname>.local``, the names in ``links.base_url``, ``media.snapshots.base_url`` and the
  installer's certificate, ``api.allowed_hosts``, or an IP address (a page cannot rebind an address).
  Anything else gets ``host_not_allowed`` before any route runs.
- **Proxies.** ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed only from ``api.trusted_proxies``
  (uvicorn's ProxyHeadersMiddleware, which takes the nearest untrusted hop); from anyone else they are
  ignored, so a client cannot pick the address the login throttle and the rate limits count.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from ..errors import http_status
from ..platform import Config

log = logging.getLogger(__name__)

ANY = "*"


def host_of(value: str) -> str:
    """The name in a Host header, without port, brackets or a trailing dot, lower case."""
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:8443
        return value[1:value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


def is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def certificate_names(cert_file: Path) -> list[str]:
    """The DNS names of a PEM certificate (blocking: read at start, off the loop)."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return []
    return [str(n) for n in san.get_values_for_type(x509.DNSName)]


def served_names(cfg: Config, hostname: str | None = None) -> frozenset[str] | None:
    """Every name the panel is configured to be reached by; None when ``api.allowed_hosts`` holds "*".

    Blocking (reads the installer's certificate): call it before the loop serves, or from a thread."""
    api = cfg.api
    if ANY in api.allowed_hosts:
        return None
    hostname = (hostname or socket.gethostname()).lower()
    names = {"localhost", hostname, f"{hostname}.local", host_of(api.host), *api.allowed_hosts}
    urls: list[str | None] = [cfg.links.base_url]
    if cfg.media is not None:
        urls.append(cfg.media.snapshots.base_url)
    names.update(host_of(u.hostname) for u in map(urlsplit, filter(None, urls)) if u.hostname)
    if api.cert_file is not None:
        names.update(n.lower() for n in certificate_names(api.cert_file))
    return frozenset(n for n in names if n and not is_address(n))


async def send_error(send: Send, code: str, message: str) -> None:
    """An error answered before the app runs, in the API's one error shape."""
    body = json.dumps({"code": code, "message": message}).encode()
    await send({"type": "http.response.start", "status": http_status(code),
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class HostCheck:
    """ASGI middleware: requests naming a host the panel does not serve get ``host_not_allowed``."""

    def __init__(self, app: ASGIApp, names: Iterable[str] | None) -> None:
        self.app = app
        self.names = None if names is None else frozenset(names)

    def allows(self, host: str | None) -> bool:
        if self.names is None or host is None:  # no Host: not a browser (every browser sends one)
            return True
        name = host_of(host)
        return name in self.names or is_address(name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"host"), None)
        if self.allows(host):
            await self.app(scope, receive, send)
            return
        await send_error(send, "host_not_allowed", f"this panel does not answer to the name {host_of(host or '')!r}"
                         "; use its address or a name in api.allowed_hosts")


def behind_proxies(app: ASGIApp, trusted: list[str]) -> ASGIApp:
    """The app, with forwarded client addresses believed from ``trusted`` proxies only (none: never)."""
    if not trusted:
        return app
    # uvicorn types its middleware with its own ASGI types; the protocol is the same.
    return cast(ASGIApp, ProxyHeadersMiddleware(cast(Any, app), trusted_hosts=trusted))
