"""Uniform API responses: every error carries a stable ``code`` and a human ``message``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import PanelError, http_status


class OkBody(BaseModel):
    """The success half of the uniform response: every success body starts with these."""

    code: str = "ok"
    message: str


class ErrorBody(BaseModel):
    code: str
    message: str
    errors: list[str] | None = None


class ApiError(PanelError):
    """A refusal decided by the HTTP adapter itself (authentication, paging, body shape); its status, like
    every other code's, is in the one table (panel/errors.py)."""

    def __init__(self, code: str, message: str, headers: dict[str, str] | None = None,
                 errors: list[str] | None = None, retry_after_s: int | None = None) -> None:
        self.code = code
        self.message = message
        self.headers = headers
        self.errors = errors
        self.retry_after_s = retry_after_s
        super().__init__(message)

    @property
    def status(self) -> int:
        return http_status(self.code)


def error_response(exc: PanelError) -> JSONResponse:
    """The uniform answer to any domain or adapter error: status from the table, ``errors`` when the error
    lists them, ``WWW-Authenticate`` on 401 and ``Retry-After`` when the error says when to try again."""
    status = http_status(exc.code)
    headers = dict(getattr(exc, "headers", None) or {})
    if status == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="panel"')
    retry = getattr(exc, "retry_after_s", None)
    if retry is not None:
        headers.setdefault("Retry-After", str(retry))
    errors = getattr(exc, "errors", None)
    body = ErrorBody(code=exc.code, message=str(exc), errors=list(errors) if errors else None)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers or None)


# Access errors that are not "this field is invalid" (422).
def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if p not in ("body",)) or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [f"{_loc(tuple(e['loc']))}: {e['msg']}" for e in exc.errors()]
        return JSONResponse(ErrorBody(code="invalid_request", message="; ".join(errors), errors=errors).model_dump(),
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            # FastAPI's answer to a body that is not text (e.g. not UTF-8): as invalid as bad JSON is.
            return JSONResponse(ErrorBody(code="invalid_request", message="body: not valid JSON (UTF-8 text "
                                          "expected)", errors=["body: not valid JSON"]).model_dump(), status_code=422)
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
                413: "body_too_large"}.get(exc.status_code, "http_error")
        return JSONResponse(ErrorBody(code=code, message=str(exc.detail)).model_dump(exclude_none=True),
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Still logged with its traceback by the server; the client gets the uniform shape, no details.
        return JSONResponse(ErrorBody(code="internal_error", message="the panel failed to handle the request; "
                                      "see its log").model_dump(exclude_none=True), status_code=500)

    @app.exception_handler(PanelError)
    async def _panel(request: Request, exc: PanelError) -> JSONResponse:
        # Every error, whichever service or adapter raised it: its status comes from the one table.
        return error_response(exc)
