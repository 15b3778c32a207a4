"""The real local API in-process: a Rig's panel behind a real uvicorn server on a free loopback port,
in the test's event loop (so SSE and long-polls stream as they do on the wall), and credentials."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from panel.api.app import ApiServer, create_app
from panel.api.principals import ApiAuth
from panel.auth import Secrets

from .rig import Rig, make_config
from .support import config_dict

STATIC_TOKEN = "installer-static-token-0123456789"


def api_rig(tmp_path: Path, api: dict[str, Any] | None = None, secrets: Secrets | None = None,
            **sections: Any) -> Rig:
    data = config_dict(**sections)
    data["api"] = {**data.get("api", {}), "mutations_per_minute": 100_000, "login_backoff_s": 0.05, **(api or {})}
    return Rig(make_config(tmp_path, data), secrets or Secrets(installer_token=STATIC_TOKEN))


@contextlib.asynccontextmanager
async def served(rig: Rig, simulated: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(rig.panel, simulated=simulated)
    server = ApiServer(app, "127.0.0.1", 0)
    await server.start()
    task = asyncio.create_task(server.serve())
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.bound_port}", timeout=20) as client:
            yield client
    finally:
        await server.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def auth_of(rig: Rig) -> ApiAuth:
    return ApiAuth.for_panel(rig.panel)


async def token(rig: Rig, role: str, subject: str | None = None, **scope: Any) -> str:
    """A credential of ``role`` issued the way POST /api/v1/auth/tokens issues it."""
    if role == "installer":
        secret, _ = await auth_of(rig).open_session(auth_of(rig).generation())
        return secret
    if role in ("viewer", "resident") and not scope:
        scope = {"unit_id": "303"}
    if role == "guest" and not scope:
        scope = {"call_guid": "no-such-call"}  # guests exist only for one call (an invite)
    secret, _ = await auth_of(rig).tokens.issue(kind="token", role=role, subject=subject or f"{role}-1",  # type: ignore[arg-type]
                                                issued_by="test", ttl_s=3600, **scope)
    return secret


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def initial_password(rig: Rig) -> str:
    password = auth_of(rig).installer.initial_password()
    assert password is not None
    return password
