"""Update tests' parts: a real HTTPS release server (test CA, Range requests, faults on demand), vendor keys,
and real releases built from this tree and signed."""

from __future__ import annotations

import base64
import contextlib
import http.server
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from panel.update import build_release, key_id, public_b64, sha256_file, sign_manifest

from .mosquitto import TestCA
from .support import ROOT


@dataclass
class Faults:
    """What the server does wrong, per path: cut the body after N bytes (``times`` requests), or stall."""

    truncate: dict[str, tuple[int, int]] = field(default_factory=dict)  # path -> (bytes, times left)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    hold: threading.Event | None = None  # set: serve; clear: stall each body after its first chunk
    rate_bps: int | None = None  # a slow link: the body in 16 KiB pieces at this rate


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        faults = self.server.faults
        faults.requests.append((self.path, self.headers.get("Range")))
        path = self.server.directory / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = faults.truncate.get(self.path)
        if cut is not None and cut[1] > 0:
            faults.truncate[self.path] = (cut[0], cut[1] - 1)
            body = body[:max(0, cut[0] - start)]
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(2)
            return
        if faults.hold is not None:
            self.wfile.write(body[:4096])
            self.wfile.flush()
            faults.hold.wait(60)
            body = body[4096:]
        if faults.rate_bps:
            piece = 16 * 1024
            for i in range(0, len(body), piece):
                self.wfile.write(body[i:i + piece])
                self.wfile.flush()
                time.sleep(piece / faults.rate_bps)  # pacing a slow link, not waiting for anything
            return
        self.wfile.write(body)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    directory: Path
    faults: Faults

    def handle_error(self, request: Any, client_address: Any) -> None:
        return None  # clients killed mid-download (the point of some tests) are no server error


@dataclass
class ReleaseServer:
    """HTTPS on 127.0.0.1 with a certificate from a throw-away CA; ``ca`` is what the panel trusts."""

    directory: Path
    ca: Path
    port: int
    faults: Faults
    _server: _Server

    def url(self, name: str) -> str:
        return f"https://127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        if self.faults.hold is not None:
            self.faults.hold.set()
        self._server.shutdown()
        self._server.server_close()


@contextlib.contextmanager
def release_server(directory: Path) -> Iterator[ReleaseServer]:
    certs = directory / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    ca = TestCA(certs, "Release server test CA")
    pair = ca.issue("127.0.0.1", server=True)
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.directory = directory
    srv.faults = Faults()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pair.cert, pair.key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    server = ReleaseServer(directory, ca.path, srv.server_address[1], srv.faults, srv)
    try:
        yield server
    finally:
        server.close()


@dataclass
class Vendor:
    """A vendor signing key and the keys directory a panel pins it in."""

    key: Ed25519PrivateKey
    keys_dir: Path

    @property
    def key_id(self) -> str:
        return key_id(self.key.public_key())

    @classmethod
    def make(cls, directory: Path) -> Vendor:
        key = Ed25519PrivateKey.generate()
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "vendor.pub").write_text(public_b64(key.public_key()) + "\n")
        return cls(key, directory)


@dataclass
class Release:
    version: str
    path: Path
    size: int
    sha256: str

    def command(self, server: ReleaseServer, key: Ed25519PrivateKey, *, url: str | None = None,
                **over: Any) -> dict[str, Any]:
        """The update's fields, signed by ``key`` (``over`` replaces fields after signing)."""
        url = url or server.url(self.path.name)
        body: dict[str, Any] = {"version": self.version, "url": url, "size": self.size, "sha256": self.sha256,
                                "signature": sign_manifest(key, self.version, url, self.size, self.sha256)}
        body.update(over)
        return body


def make_release(server_dir: Path, version: str, name: str | None = None,
                 replace: dict[str, tuple[str, str]] | None = None) -> Release:
    path = build_release(ROOT, version, server_dir / (name or f"panel-{version}.tar.gz"), replace)
    return Release(version, path, path.stat().st_size, sha256_file(path))


def corrupt_signature(signature: str) -> str:
    raw = bytearray(base64.b64decode(signature))
    raw[5] ^= 0x40
    return base64.b64encode(bytes(raw)).decode()


# Broken releases, made the way a real defect would ship: the edits go into the archive's source.
HEALTH_FAILS = {"panel/door/_service.py": ("    def healthy(self) -> bool:\n",
                                           "    def healthy(self) -> bool:\n        return False\n")}
CRASHES_AT_START = {"panel/daemon.py": ("    async def start_services(self) -> None:\n",
                                        "    async def start_services(self) -> None:\n"
                                        "        raise RuntimeError('this release crashes at start')\n")}
