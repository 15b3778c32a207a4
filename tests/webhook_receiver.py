"""A real webhook receiver on loopback for tests and benchmarks.

It verifies every request with the third-party ``standardwebhooks`` library (not our code), records
what arrived, and can be switched between behaviours while a panel delivers to it:

- ``ok``: 200 for every verified request (401 for a bad signature, like a real backend)
- ``error``: 500; ``throttle``: 429 with ``Retry-After`` (seconds, an HTTP-date, or ``date+N``: the
  HTTP-date N seconds after each answer); ``slow``: answers
  200 only after ``slow_s`` (longer than the panel's timeout, so the panel gives up and retries, and
  the receiver sees the same id twice); ``gone``: 410; ``redirect``: 302 elsewhere;
- ``down``: the listening socket and every open connection are closed (connection refused) until the
  mode changes again.

Use it in-process (``WebhookReceiver(...).start()``, it runs on its own threads) or as a process:
``python -m tests.webhook_receiver --secret whsec_... [--port N]`` prints ``PORT <n>`` and serves;
``GET /_receiver/records?since=i`` returns what arrived (with ``time.monotonic()`` arrival times,
comparable across processes on Linux) and ``POST /_receiver/mode`` switches behaviour.
"""

from __future__ import annotations

import argparse
import email.utils
import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from .eventually import eventually_sync

MODES = ("ok", "error", "throttle", "slow", "gone", "redirect", "down")
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Received:
    at: float  # time.monotonic() when the request was read
    id: str | None
    type: str | None
    guid: str | None
    status: int
    verified: bool
    mode: str
    body: str
    webhook_timestamp: str | None
    answered_at: float = 0.0


@dataclass
class Rule:
    """Answer ``status`` (with ``headers``) to requests whose body matches ``match``; overrides the mode."""

    match: Callable[[dict[str, Any]], bool]
    status: int
    headers: dict[str, str] = field(default_factory=dict)


def guid_of(doc: dict[str, Any]) -> str | None:
    data = doc.get("data") or {}
    grant = data.get("grant") or {}
    return data.get("guid") or data.get("call_guid") or grant.get("call_guid")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    receiver: WebhookReceiver

    def process_request(self, request: Any, client_address: Any) -> None:
        self.receiver._track(request)
        super().process_request(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes; without this, Nagle + delayed ACK add 40 ms each.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        rc = self.server.receiver
        url = urlsplit(self.path)
        if url.path == "/_receiver/records":
            since = int(parse_qs(url.query).get("since", ["0"])[0])
            with rc.lock:
                recs = [asdict(r) for r in rc.records[since:]]
            self._answer(200, json.dumps(recs).encode(), {"content-type": "application/json"})
        else:
            rc.others.append(("GET", self.path))
            self._answer(404, b"not found")

    def do_POST(self) -> None:
        rc = self.server.receiver
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        if len(body) < length:
            # The sender gave up mid-request (its timeout, under load): nothing was received, as a
            # real server would see it; recording it would look like a retry with another body.
            self.close_connection = True
            return
        if urlsplit(self.path).path == "/_receiver/mode":
            cmd = json.loads(body or b"{}")
            rc.set_mode(cmd.get("mode", "ok"), **{k: v for k, v in cmd.items() if k != "mode"})
            self._answer(200, b"{}")
            return
        if urlsplit(self.path).path != rc.path:
            rc.others.append(("POST", self.path))
            self._answer(404, b"not found")
            return
        status, headers = rc._handle(body, {k.lower(): v for k, v in self.headers.items()})
        if status == -1:  # slow: answer late
            time.sleep(rc.slow_s)
            status = 200
        try:
            self._answer(status, b"{}" if status < 300 else b'{"error":"test receiver"}', headers)
        except OSError:
            pass
        rc._answered(status)

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class WebhookReceiver:
    def __init__(self, secrets: list[str], port: int = 0, host: str = "127.0.0.1", path: str = "/hooks/panel") -> None:
        self.verifiers = [Webhook(s) for s in secrets]
        self.host = host
        self.port = port
        self.path = path
        self.mode = "ok"
        self.retry_after: str = "1"
        self.slow_s = 2.0
        self.rules: list[Rule] = []
        self.records: list[Received] = []
        self.others: list[tuple[str, str]] = []  # requests anywhere but the hook path (e.g. a followed redirect)
        self.lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._last: dict[int, Received] = {}
        self.echo = False

    # -- lifecycle ----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    def start(self) -> WebhookReceiver:
        server = _Server((self.host, self.port), _Handler)
        server.receiver = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def _close_listener(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        with self.lock:
            conns, self._conns = self._conns, set()
        for c in conns:  # established keep-alive connections go down with it
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        self._close_listener()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _track(self, conn: socket.socket) -> None:
        with self.lock:
            self._conns = {c for c in self._conns if c.fileno() != -1}
            self._conns.add(conn)

    # -- behaviour ------------------------------------------------------------------------------------
    def set_mode(self, mode: str, *, retry_after: str | float | None = None, slow_s: float | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}; expected one of {MODES}")
        if retry_after is not None:
            self.retry_after = str(retry_after)
        if slow_s is not None:
            self.slow_s = slow_s
        was_down = self.mode == "down"
        self.mode = mode
        if mode == "down" and not was_down:
            self._close_listener()
        elif mode != "down" and was_down:
            def listening() -> bool:  # the port may linger briefly after the close
                try:
                    self.start()
                except OSError:
                    return False
                return True

            eventually_sync(listening, 5, "the receiver listening again", interval=0.05)

    @staticmethod
    def http_date(seconds_from_now: float) -> str:
        return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)

    def _handle(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        at = time.monotonic()
        verified = False
        doc: dict[str, Any] = {}
        for v in self.verifiers:
            try:
                doc = v.verify(body, headers)
                verified = True
                break
            except WebhookVerificationError:
                continue
        if not verified:
            try:
                doc = json.loads(body)
            except ValueError:
                doc = {}
        mode = self.mode
        status, extra = 200, {}
        if not verified:
            status = 401
        else:
            for rule in self.rules:
                if rule.match(doc):
                    status, extra = rule.status, dict(rule.headers)
                    break
            else:
                if mode == "error":
                    status = 500
                elif mode == "throttle":
                    value = self.retry_after
                    if value.startswith("date+"):  # an HTTP-date that many seconds after this answer
                        value = self.http_date(float(value[5:]))
                    status, extra = 429, {"retry-after": value}
                elif mode == "gone":
                    status = 410
                elif mode == "redirect":
                    status, extra = 302, {"location": f"http://{self.host}:{self.port}/elsewhere"}
                elif mode == "slow":
                    status = -1
        rec = Received(at, headers.get("webhook-id"), doc.get("type"), guid_of(doc) if doc else None,
                       200 if status == -1 else status, verified, mode, body.decode("utf-8", "replace"),
                       headers.get("webhook-timestamp"))
        with self.lock:
            self.records.append(rec)
            self._last[threading.get_ident()] = rec
            if self.echo:  # one JSON line per request, for a parent process timing arrivals
                sys.stdout.write(json.dumps({"at": rec.at, "id": rec.id, "type": rec.type, "guid": rec.guid,
                                             "status": rec.status, "verified": rec.verified}) + "\n")
                sys.stdout.flush()
        return status, extra

    def _answered(self, status: int) -> None:
        with self.lock:
            rec = self._last.pop(threading.get_ident(), None)
            if rec is not None:
                rec.answered_at = time.monotonic()

    # -- what arrived ---------------------------------------------------------------------------------
    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.records)

    def accepted(self) -> list[Received]:
        """Requests answered 2xx, in arrival order."""
        return [r for r in self.snapshot() if 200 <= r.status < 300]

    def unique(self) -> list[Received]:
        """The backend's view: accepted requests de-duplicated by ``webhook-id``, first arrival wins."""
        seen: set[str] = set()
        out = []
        for r in self.accepted():
            if r.id is not None and r.id not in seen:
                seen.add(r.id)
                out.append(r)
        return out

    def wait_for(self, predicate: Callable[[WebhookReceiver], bool], timeout: float = 10.0) -> None:
        def requests() -> str:
            recs = self.snapshot()
            return f"{len(recs)} requests, last: {[(r.type, r.status) for r in recs[-5:]]}"

        eventually_sync(lambda: predicate(self), timeout, "receiver condition", detail=requests)


class ReceiverProcess:
    """The receiver in its own process (so it does not share a GIL with the panel under test), echoing
    every request to us; for benchmarks. Use inside a running event loop."""

    def __init__(self, secrets: list[str]) -> None:
        self.secrets = secrets
        self.records: list[dict[str, Any]] = []
        self.changed: Any = None
        self.proc: Any = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/panel"

    async def start(self) -> ReceiverProcess:
        import asyncio

        args = [sys.executable, "-m", "tests.webhook_receiver", "--echo"]
        for s in self.secrets:
            args += ["--secret", s]
        root = ROOT
        self.changed = asyncio.Event()
        self.proc = await asyncio.create_subprocess_exec(*args, cwd=root, stdin=asyncio.subprocess.PIPE,
                                                         stdout=asyncio.subprocess.PIPE)
        line = await asyncio.wait_for(self.proc.stdout.readline(), 20)
        self.port = int(line.split()[1])
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        while line := await self.proc.stdout.readline():
            self.records.append(json.loads(line))
            self.changed.set()

    async def wait(self, cond: Callable[[list[dict[str, Any]]], bool], timeout: float = 30.0) -> None:
        import asyncio

        deadline = time.monotonic() + timeout
        while not cond(self.records):
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"receiver: condition not met within {timeout} s ({len(self.records)} requests)")
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                pass

    async def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.stdin.close()
        try:
            import asyncio
            await asyncio.wait_for(self.proc.wait(), 5)
        except Exception:
            self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--secret", action="append", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--echo", action="store_true", help="print one JSON line per request received")
    args = p.parse_args(argv)
    rc = WebhookReceiver(args.secret, port=args.port)
    rc.echo = args.echo
    rc.start()
    print(f"PORT {rc.port}", flush=True)
    try:
        sys.stdin.read()  # serve until the parent closes our stdin
    finally:
        rc.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
