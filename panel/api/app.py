"""The FastAPI application and the uvicorn server that runs inside the daemon's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import FastAPI

from .. import __version__
from . import sim, system
from .errors import ErrorBody, install_error_handlers

if TYPE_CHECKING:
    from ..daemon import Panel

log = logging.getLogger(__name__)


def create_app(panel: "Panel | None", *, simulated: bool) -> FastAPI:
    app = FastAPI(title="Door-station panel API", version=__version__,
                  description="The panel's local HTTP API. Every error body is {code, message}.",
                  responses={422: {"model": ErrorBody, "description": "invalid request"}})
    app.state.panel = panel
    install_error_handlers(app)
    app.include_router(system.router)
    if simulated:
        app.include_router(sim.router)
    return app


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The daemon owns SIGTERM/SIGINT and stops the server in order; uvicorn must not.
        yield


class ApiServer:
    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                                lifespan="off", timeout_graceful_shutdown=1)
        self.server = _Server(config)
        self.host = host
        self.port = port

    async def start(self) -> None:
        config = self.server.config
        if not config.loaded:
            config.load()
        self.server.lifespan = config.lifespan_class(config)
        try:
            await self.server.startup()
        except SystemExit:
            raise OSError(f"cannot listen on {self.host}:{self.port}; is another panel running, or is the "
                          "port in use? Change api.listen in the config") from None
        if self.server.should_exit:
            raise OSError(f"cannot listen on {self.host}:{self.port}; change api.listen in the config")

    @property
    def bound_port(self) -> int:
        for server in self.server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self.port

    async def serve(self) -> None:
        await self.server.main_loop()

    async def stop(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.shutdown(), 1.5)


def openapi_document(simulated: bool = True) -> dict[str, Any]:
    return create_app(None, simulated=simulated).openapi()
