"""One error envelope for every failure: `{"ok": false, "error": ..., "status": n}`.

Clients (the CLI, the UI, scripts) then need one code path to show an error,
and the text always says what is wrong and how to fix it, instead of FastAPI's
raw validation dump or a bare "Internal Server Error".
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from spyglass.collector.filters import FilterError

log = logging.getLogger("spyglass.api")


class ApiError(Exception):
    """A request the API refuses, with the HTTP status and a user-facing message."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"ok": False, "error": message, "status": status}


def error_response(status: int, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message), status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "body", "path"))
        parts.append(f"{loc or 'request'}: {err.get('msg', 'invalid value')}")
    return "; ".join(parts) + " (see /docs for the accepted parameters)"


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception type the API can meet into the envelope."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(FilterError)
    async def _filter_error(_: Request, exc: FilterError) -> JSONResponse:
        return error_response(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = (f"not found: {request.url.path}; the API lives under /api/v1 "
                       "(see /docs for the endpoints)")
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return error_response(exc.status_code, message)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        ref = secrets.token_hex(4)
        log.exception("unhandled error %s on %s", ref, request.url.path)
        return error_response(500, internal_error(ref))


def internal_error(ref: str) -> str:
    """What a client learns of a fault: that it is ours, and where the details are.

    Never the exception's text: it may hold paths, addresses or query internals.
    """
    return (f"internal error (reference {ref}); this is a Spyglass bug: the agent's log "
            "has the details under that reference")
