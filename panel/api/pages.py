"""The panel's own web pages (panel/web/): plain HTML, CSS and JavaScript, no build step.

- ``/resident``: take calls in a browser (ring, answer, talk, see, open, hang up, history);
- ``/installer``: check and set up the panel (inputs, relays, camera, sound, config, logs);
- ``/link``: a call link's preview and join page (the link rides after ``#``);
- ``/api/v1/docs``: Swagger UI, from the panel's own copy (``panel/web/vendor/swagger-ui``, no CDN);
- ``/api/v1/media/player`` (served by ``whep.py``): the WHEP live-view player;
- ``/web/<file>``: their scripts and style sheets; ``/web/vendor/swagger-ui/<file>``: Swagger UI's.

The pages hold no secret: they ask for a credential and keep it in the tab's sessionStorage, and
send it as ``Authorization: Bearer``. A strict Content-Security-Policy allows only the panel's own
scripts (no inline script, no other origin), and the scripts write every name they show as text,
never as markup.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

from .errors import ApiError

router = APIRouter(tags=["pages"], include_in_schema=False)

WEB = Path(__file__).resolve().parent.parent / "web"
PAGES = {"/": "index.html", "/resident": "resident.html", "/installer": "installer.html", "/link": "link.html",
         "/api/v1/docs": "api-docs.html"}
# Swagger UI's files as npm's swagger-ui-dist ships them (README.md there: version, licence, update)
VENDORED = {"swagger-ui-bundle.js", "swagger-ui.css"}
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
ASSET_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}\.(js|css|svg)$")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
    "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
}


_cache: dict[str, bytes] = {}  # the files ship with the firmware and do not change while it runs


async def page_file(name: str) -> Response:
    """A file under panel/web, with the pages' headers (CSP and the rest)."""
    data = _cache.get(name)
    if data is None:
        path = WEB / name
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError:
            raise ApiError("not_found", f"there is no page file {name!r} on this panel") from None
        _cache[name] = data
    return Response(data, media_type=TYPES[Path(name).suffix], headers=HEADERS)


def _page(name: str) -> Callable[[], Awaitable[Response]]:
    async def page() -> Response:
        return await page_file(name)
    page.__name__ = f"page_{name.split('.')[0]}"
    return page


for _path, _name in PAGES.items():
    router.add_api_route(_path, _page(_name), methods=["GET"], response_class=Response)


@router.get("/web/{name}", response_class=Response)
async def asset(name: str) -> Response:
    if not ASSET_RE.match(name):
        raise ApiError("not_found", f"there is no page file {name!r} on this panel")
    return await page_file(name)


@router.get("/web/vendor/swagger-ui/{name}", response_class=Response)
async def swagger_ui(name: str) -> Response:
    if name not in VENDORED:
        raise ApiError("not_found", f"there is no Swagger UI file {name!r} on this panel")
    return await page_file(f"vendor/swagger-ui/{name}")
