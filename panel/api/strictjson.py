"""ASGI middleware: a JSON body that names a key twice, or nests too deep, is refused before any route
reads it.

One place for every JSON route: FastAPI parses bodies with ``json.loads``, which keeps the last of
two equal keys, so ``{"relay": "main", "relay": "gate"}`` would open the gate while a proxy or a log
that read the first saw "main". The same parser refuses them on MQTT (panel/wire.py). Nesting is
bounded there before any parser runs: FastAPI's own parse, and every walk of the tree after it, would
recurse once per level. Anything else wrong with the body (not JSON at all, a wrong field) is left to
FastAPI's own validation.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..wire import DuplicateKey, LoneSurrogate, TooDeep, loads_unique

_BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def _json(scope: Scope) -> bool:
    """FastAPI reads a body as JSON when it says so, or says nothing."""
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return bool(media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json")))
    return True


class UniqueKeys:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS or not _json(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        failed: BaseException | None = None
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    break
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
        except Exception as e:
            failed = e
        body = b"".join(chunks)
        if failed is None and body:
            try:
                loads_unique(body)
            except (DuplicateKey, LoneSurrogate, TooDeep) as e:
                await _refuse(send, f"body: {e}" if isinstance(e, TooDeep) else str(e))
                return
            except (ValueError, RecursionError):
                pass  # not JSON: FastAPI says so in its own words
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if failed is not None:
                raise failed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _refuse(send: Send, problem: str) -> None:
    # The shape of every validation error (panel/api/errors.py): code, message, errors naming the field.
    payload = json.dumps({"code": "invalid_request", "message": problem, "errors": [problem]}).encode()
    await send({"type": "http.response.start", "status": 422,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
