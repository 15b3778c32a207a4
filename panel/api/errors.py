"""Uniform API responses: every error carries a stable ``code`` and a human ``message``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..auth import CredentialError
from ..errors import AccessError, CallError, PanelError, UnlockRefused


class OkBody(BaseModel):
    """The success half of the uniform response: every success body starts with these."""

    code: str = "ok"
    message: str


class ErrorBody(BaseModel):
    code: str
    message: str
    errors: list[str] | None = None


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
                 errors: list[str] | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.errors = errors
        super().__init__(message)


# Refusal codes that mean "the request was fine but the panel's state forbids it".
_CONFLICT = {"tamper_blocked", "tamper_active", "already_answered", "no_call", "call_over"}


# Call errors that are not "the call's state forbids it" (409).
_CALL_STATUS = {"unknown_call": 404, "unknown_button": 404, "invalid_actor": 422, "invalid_query": 422}


# Access errors that are not "this field is invalid" (422).
_ACCESS_STATUS = {"unknown_credential": 404, "not_configured": 404, "card_enrolled": 409, "code_unavailable": 409,
                  "not_your_credential": 403, "not_allowed_for_role": 403, "no_card": 408, "learning_busy": 409}


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if p not in ("body",)) or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(ErrorBody(code=exc.code, message=exc.message, errors=exc.errors).model_dump(
            exclude_none=True), status_code=exc.status, headers=exc.headers)

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

    @app.exception_handler(UnlockRefused)
    async def _refused(request: Request, exc: UnlockRefused) -> JSONResponse:
        status = 409 if exc.code in _CONFLICT else 422
        return JSONResponse(ErrorBody(code=exc.code, message=str(exc)).model_dump(exclude_none=True),
                            status_code=status)

    @app.exception_handler(CallError)
    async def _call(request: Request, exc: CallError) -> JSONResponse:
        status = _CALL_STATUS.get(exc.code, 409)
        return JSONResponse(ErrorBody(code=exc.code, message=str(exc)).model_dump(exclude_none=True),
                            status_code=status)

    @app.exception_handler(AccessError)
    async def _access(request: Request, exc: AccessError) -> JSONResponse:
        status = _ACCESS_STATUS.get(exc.code, 422)
        return JSONResponse(ErrorBody(code=exc.code, message=str(exc)).model_dump(exclude_none=True),
                            status_code=status)

    @app.exception_handler(CredentialError)
    async def _credential(request: Request, exc: CredentialError) -> JSONResponse:
        status = 422 if exc.code == "weak_password" else 500
        return JSONResponse(ErrorBody(code=exc.code, message=str(exc)).model_dump(exclude_none=True),
                            status_code=status)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Still logged with its traceback by the server; the client gets the uniform shape, no details.
        return JSONResponse(ErrorBody(code="internal_error", message="the panel failed to handle the request; "
                                      "see its log").model_dump(exclude_none=True), status_code=500)

    @app.exception_handler(PanelError)
    async def _panel(request: Request, exc: PanelError) -> JSONResponse:
        return JSONResponse(ErrorBody(code=exc.code, message=str(exc)).model_dump(exclude_none=True),
                            status_code=500)
