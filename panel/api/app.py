"""The FastAPI application and the uvicorn server that runs inside the daemon's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.responses import JSONResponse

from .. import __version__, compat
from ..platform import ApiConfig, Clock, LoopClock
from . import (
    access,
    audiotest,
    auth,
    calls,
    config,
    directory,
    door,
    enrol,
    links,
    logs,
    media_routes,
    pages,
    selftest,
    sim,
    system,
    update,
    whep,
)
from .connections import ConnectionGuard, ConnectionLimits, Listener, RequestTracker, bind, fd_room
from .errors import ErrorBody, install_error_handlers
from .hosts import HostCheck, behind_proxies
from .limits import BodyLimit
from .principals import ApiAuth
from .roles import MUTATING, SIM_PREFIX, authorize, openapi_security, rule_for
from .state import ApiState
from .strictjson import UniqueKeys

if TYPE_CHECKING:
    from ..daemon import Panel

log = logging.getLogger(__name__)


DESCRIPTION = """The panel's local HTTP API (docs/api.md).

Every response, success or error, carries a stable `code` and a human `message`; validation errors
name the field. Credentials are bearer tokens (`Authorization: Bearer <token>`), never URLs: the
installer logs in with the password (`POST /api/v1/auth/login`), the installer or the backend issue
tokens for viewers, residents and backends. `x-roles` on each operation lists who may call it
(panel/api/roles.py); `x-scoped-roles` are limited to their own calls."""

DEFAULT_MAX_BODY = 65_536

# Generated clients name their functions and modules after operationIds: "<area>_<action>" reads well
# (door_open, calls_answer) where FastAPI's default is "open_door_api_v1_door_open_post".
TAG_PREFIX = {"call links": "links", "simulation": "sim"}
# Where "<area>_<handler name>" would read badly or collide (the two participant lists).
OPERATION_IDS = {
    "panel.api.auth.issue": "auth_issue_token",
    "panel.api.auth.revoke": "auth_revoke_token",
    "panel.api.calls.history": "calls_list",
    "panel.api.calls.one": "calls_get",
    "panel.api.links.participants": "links_call_participants",
    "panel.api.selftest.selftest": "selftest_run",
}
LICENSE = {"name": "Apache-2.0", "identifier": "Apache-2.0"}
# The panel is reached at whatever address it has on the LAN; "/" is the origin the document was read
# from (what Swagger UI at /api/v1/docs calls), the template is for generated clients and readers.
SERVERS: list[dict[str, Any]] = [
    {"url": "/", "description": "this panel: the origin this document was read from"},
    {"url": "{scheme}://{host}:{port}", "description": "a panel on the LAN (api.listen; HTTPS unless on loopback)",
     "variables": {"scheme": {"enum": ["https", "http"], "default": "https"},
                   "host": {"default": "panel.local", "description": "the panel's name or address"},
                   "port": {"default": "8443"}}},
]
# Credentials travel in the security scheme (bearer), and a body's type in requestBody: as header
# parameters they would make generated clients take a raw Authorization string on some operations.
NOT_PARAMETERS = {"authorization", "content-type"}


def operation_id(route: APIRoute) -> str:
    """``<area>_<action>``: the route's first tag, then its handler's name without the area's word."""
    endpoint = f"{route.endpoint.__module__}.{route.name}"
    if endpoint in OPERATION_IDS:
        return OPERATION_IDS[endpoint]
    tag = str(route.tags[0]) if route.tags else "panel"
    prefix = TAG_PREFIX.get(tag, tag.replace(" ", "_"))
    words = [w for w in route.name.split("_") if w not in (prefix, prefix.rstrip("s"))]
    return "_".join([prefix, *words])


def create_app(panel: Panel | None, *, simulated: bool, server_cert: Any = None) -> FastAPI:
    app = FastAPI(title="Door-station panel API", version=__version__, description=DESCRIPTION,
                  responses={422: {"model": ErrorBody, "description": "invalid request (the message names the field)"}},
                  openapi_url=None, docs_url=None, redoc_url=None, dependencies=[Depends(authorize)],
                  generate_unique_id_function=operation_id, license_info=LICENSE, servers=SERVERS)
    app.state.panel = panel
    # Who is calling: one per panel (its token cache), shared by every app made for it.
    app.state.auth = ApiAuth.for_panel(panel) if panel is not None else None
    if panel is not None and panel.api_state is None:
        panel.api_state = ApiState.for_config(panel.cfg)
    app.state.server_cert = server_cert
    install_error_handlers(app)
    app.include_router(auth.router)
    app.include_router(system.router)
    app.include_router(door.router)
    app.include_router(access.router)  # PINs, codes and cards (panel/access)
    app.include_router(calls.router)
    app.include_router(logs.router)
    app.include_router(config.router)
    app.include_router(directory.router)  # units, residents, sign-in links (panel/directory)
    app.include_router(selftest.router)
    app.include_router(update.router)  # signed updates (panel/update)
    app.include_router(enrol.router)  # enrolment by code (panel/enrol)
    app.include_router(whep.router)  # answers 503 while media is not running
    app.include_router(media_routes.router)  # snapshots and MJPEG; 503 without a camera
    app.include_router(links.router)  # call links, participants, invites (panel/calls/_links.py)
    app.include_router(audiotest.router)  # the installer's speaker tone and microphone level
    app.include_router(pages.router)  # the resident, installer and call-link pages (panel/web/)
    if simulated:
        app.include_router(sim.router)

    async def openapi_json() -> JSONResponse:
        return JSONResponse(app.openapi())

    app.add_api_route("/api/v1/openapi.json", openapi_json, methods=["GET"], include_in_schema=False)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.add_middleware(UniqueKeys)  # inside BodyLimit: it reads only what the limit let through
    app.add_middleware(BodyLimit, max_bytes=panel.cfg.api.max_body_bytes if panel is not None else DEFAULT_MAX_BODY)
    return app


def routes(app: FastAPI) -> list[tuple[str, str, Any]]:
    """(method, path, route) of every route the app serves, included routers flattened."""
    try:  # FastAPI >= 0.13x keeps included routers as lazy entries; flatten them
        from fastapi.routing import iter_route_contexts
        items: Any = [(rc.methods, rc.path_format or rc.path, rc.original_route)
                      for rc in iter_route_contexts(app.routes)]
    except ImportError:
        items = [(getattr(r, "methods", None), getattr(r, "path_format", None) or getattr(r, "path", "?"), r)
                 for r in app.routes]
    out: list[tuple[str, str, Any]] = []
    for methods, path, route in items:
        for method in sorted(methods or {"GET"}):
            if method != "HEAD":
                out.append((method, path, route))
    return out


_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
_STANDARD = {401: "no credential, or an unknown, expired or revoked one",
             403: "the credential's role (or scope) does not allow this",
             413: "the request body is larger than api.max_body_bytes",
             429: "too many requests from this address; wait Retry-After seconds"}


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, plus what the role table and the middleware add to every operation:
    who may call it, and every error status it can answer with (each an ErrorBody)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes,
                         license_info=app.license_info, servers=app.servers)
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http", "scheme": "bearer", "description": "a session token (POST /api/v1/auth/login), an issued "
        "token (POST /api/v1/auth/tokens) or the secrets file's installer_token"}
    components.setdefault("schemas", {}).setdefault("ErrorBody", ErrorBody.model_json_schema())
    for method, path, route in routes(app):
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        op = schema["paths"].get(path, {}).get(method.lower())
        rule = rule_for(method, path)
        if op is None or rule is None:
            continue
        op.update(openapi_security(rule))
        params = [p for p in op.get("parameters", []) if not (p.get("in") == "header" and
                                                              p.get("name", "").lower() in NOT_PARAMETERS)]
        if params:
            op["parameters"] = params
        else:
            op.pop("parameters", None)
        responses = op.setdefault("responses", {})
        wanted: set[int] = set()
        if not rule.public or rule.own_auth:
            wanted |= {401, 403}
        if method in MUTATING and rule.rate_limited and not path.startswith(SIM_PREFIX):
            wanted.add(429)
        if "requestBody" in op or method in MUTATING:
            wanted.add(413)
        for status in sorted(wanted):
            responses.setdefault(str(status), {"description": _STANDARD[status]})
        for status, response in responses.items():
            for media_type, content in response.get("content", {}).items():
                if "schema" not in content:
                    # Without a schema generators drop the response (pictures, streams, the player page).
                    content["schema"] = ({"type": "string"} if media_type.startswith("text/")
                                         else {"type": "string", "format": "binary"})
            if status.startswith(("4", "5")):
                content = response.setdefault("content", {})
                if not any(c.get("schema", {}).get("$ref") for c in content.values()):
                    response["content"] = dict(_ERROR)
    app.openapi_schema = schema
    return schema


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The daemon owns SIGTERM/SIGINT and stops the server in order; uvicorn must not.
        yield


class ApiServer:
    """uvicorn's HTTP protocol behind the panel's own accept loop (panel/api/connections.py: connection
    limits, header and idle timeouts), the Host check and the trusted-proxy rule (panel/api/hosts.py)."""

    def __init__(self, app: FastAPI, host: str, port: int, *, ssl_certfile: str | None = None,
                 ssl_keyfile: str | None = None, api: ApiConfig | None = None, clock: Clock | None = None,
                 names: frozenset[str] | None = frozenset({"localhost"})) -> None:
        api = api or ApiConfig()
        self.guard = ConnectionGuard(ConnectionLimits.from_config(api), clock or LoopClock())
        # Outermost first: the tracker sees uvicorn's own client address (the connection's), the proxy
        # rule may then replace it, and the Host check runs before any route.
        edge = RequestTracker(behind_proxies(HostCheck(app, names), api.trusted_proxies), self.guard)
        # access_log stays off: request lines are not needed, and no URL of ours carries a secret anyway.
        # proxy_headers off: uvicorn would believe X-Forwarded-For from loopback (behind_proxies decides).
        # ws none: no route is a WebSocket, and an upgrade would swap the connection's guarded protocol.
        config = uvicorn.Config(edge, host=host, port=port, log_config=None, access_log=False, proxy_headers=False,
                                ws="none", timeout_keep_alive=max(1, math.ceil(api.idle_timeout_s)),
                                # typed int, but uvicorn waits with asyncio.wait_for, which takes a float
                                lifespan="off", timeout_graceful_shutdown=0.5,  # type: ignore[arg-type]
                                ssl_certfile=ssl_certfile,
                                ssl_keyfile=ssl_keyfile)
        self.scheme = "https" if ssl_certfile else "http"
        self.server = _Server(config)
        self.host = host
        self.port = port
        self.fd_reserve = api.fd_reserve
        self.listener: Listener | None = None

    async def start(self) -> None:
        config = self.server.config
        if not config.loaded:
            config.load()
        self.server.lifespan = config.lifespan_class(config)
        await self.server.lifespan.startup()
        try:
            sockets = await bind(self.host, self.port, config.backlog)
        except OSError as e:
            raise OSError(f"cannot listen on {self.host}:{self.port} ({e.strerror or e}); is another panel running, "
                          "or is the port in use? Change api.listen in the config") from None
        # Measured now, with the store, GPIO and the backend link open: what is left is the API's.
        self.guard.budget(fd_room(self.fd_reserve))
        self.listener = Listener(sockets, self.guard, compat.uvicorn_protocol(self.server), config.ssl,
                                 self.guard.clock)
        self.server.servers = []  # uvicorn's shutdown closes these; the listener is ours
        self.server.started = True

    @property
    def bound_port(self) -> int:
        return self.listener.port if self.listener is not None else self.port

    async def serve(self) -> None:
        assert self.listener is not None, "start() first"
        async with asyncio.TaskGroup() as group:
            accepting = group.create_task(self.listener.serve())
            await self.server.main_loop()  # the Date header, once a second, until should_exit
            accepting.cancel()

    async def stop(self, timeout_s: float = 1.0) -> None:
        self.server.should_exit = True
        if self.listener is not None:
            await self.listener.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.shutdown(), timeout_s)


def openapi_document(simulated: bool = True) -> dict[str, Any]:
    return create_app(None, simulated=simulated).openapi()
