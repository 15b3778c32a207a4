"""Bounds on what a client can make the panel do: body size, request rate, login attempts.

All of it is per client address and in memory, costs a dictionary lookup per request, and never
sleeps on the event loop for anyone but the client being slowed down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ApiError

MAX_CLIENTS = 4096  # addresses remembered per table; the least recently seen is forgotten first


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


class BodyTooLarge(HTTPException):
    """Raised while the body is read; an HTTPException so FastAPI passes it through as a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes; send less (api.max_body_bytes)")
        self.message = str(self.detail)


class BodyLimit:
    """ASGI middleware: 413 for a body over ``max_bytes``, judged by Content-Length before anything is
    read, and counted while reading when the length is not declared (chunked)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await self._reject(send, 400, "bad_request", "Content-Length is not a number")
                    return
                if declared > self.max_bytes:
                    await self._reject(send, 413, "body_too_large", BodyTooLarge(self.max_bytes).message)
                    return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counting_receive, send)

    @staticmethod
    async def _reject(send: Send, status: int, code: str, message: str) -> None:
        body = json.dumps({"code": code, "message": message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """A token bucket per client address for requests that change something."""

    def __init__(self, per_minute: int, burst: int | None = None, now: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst if burst is not None else max(5, per_minute // 4))
        self.now = now
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def check(self, client: str) -> None:
        now = self.now()
        b = self._buckets.pop(client, None) or _Bucket(self.burst, now)
        b.tokens = min(self.burst, b.tokens + (now - b.at) * self.rate)
        b.at = now
        self._buckets[client] = b
        while len(self._buckets) > MAX_CLIENTS:
            self._buckets.popitem(last=False)
        if b.tokens < 1:
            wait = (1 - b.tokens) / self.rate
            raise ApiError("rate_limited", f"too many changing requests from {client}; wait {math.ceil(wait)} s "
                           "(api.mutations_per_minute)", headers=_retry_after(wait))
        b.tokens -= 1


@dataclass
class _Failures:
    count: int = 0
    next_at: float = 0.0
    last: float = 0.0
    in_flight: bool = False


class LoginThrottle:
    """Failed logins slow down progressively, per client address.

    After the n-th failure the next attempt from that address waits ``base_s * 2**(n-1)`` (capped at
    ``max_delay_s``) before its password is even checked; once ``lockout_after`` attempts have failed
    (or the delay is longer than ``max_sleep_s``), an attempt inside that window is refused at once with
    429 and Retry-After instead. One attempt
    per address at a time: parallel guesses get 429 too. A success forgets the address's failures.
    """

    def __init__(self, base_s: float, lockout_after: int, max_delay_s: float = 900.0, forget_after_s: float = 3600.0,
                 now: Callable[[], float] = time.monotonic, max_sleep_s: float = 5.0) -> None:
        self.base_s = base_s
        self.max_sleep_s = max_sleep_s  # a longer delay is a 429 with Retry-After, not a held connection
        self.lockout_after = lockout_after
        self.max_delay_s = max_delay_s
        self.forget_after_s = forget_after_s
        self.now = now
        self._clients: OrderedDict[str, _Failures] = OrderedDict()

    def delay_after(self, failures: int) -> float:
        return 0.0 if failures <= 0 else min(self.max_delay_s, self.base_s * 2 ** (failures - 1))

    def _get(self, client: str) -> _Failures:
        now = self.now()
        f = self._clients.pop(client, None)
        if f is None or (not f.in_flight and now - f.last > self.forget_after_s):
            f = _Failures(last=now)
        self._clients[client] = f
        while len(self._clients) > MAX_CLIENTS:
            oldest, state = next(iter(self._clients.items()))
            if state.in_flight:
                break
            self._clients.pop(oldest)
        return f

    @contextlib.asynccontextmanager
    async def attempt(self, client: str) -> AsyncIterator[_Failures]:
        f = self._get(client)
        if f.in_flight:
            raise ApiError("login_in_progress", "another login from your address is being checked; one at a "
                           "time", headers=_retry_after(1))
        wait = f.next_at - self.now()
        if wait > 0 and (f.count >= self.lockout_after or wait > self.max_sleep_s):
            raise ApiError("login_locked", f"{f.count} failed logins from your address; try again in "
                           f"{math.ceil(wait)} s", headers=_retry_after(wait))
        f.in_flight = True
        try:
            if wait > 0:
                await asyncio.sleep(wait)  # this client only: other requests are served meanwhile
            yield f
        finally:
            f.in_flight = False

    def failed(self, client: str) -> float:
        f = self._get(client)
        f.count += 1
        f.last = self.now()
        delay = self.delay_after(f.count)
        f.next_at = f.last + delay
        return delay

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)

    def failures(self, client: str) -> int:
        f = self._clients.get(client)
        return f.count if f is not None else 0
