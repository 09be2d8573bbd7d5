"""The one place domain errors become HTTP responses, in FastAPI's ``{"detail": ...}`` shape."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.openapi import path_methods
from api.schemas.common import ErrorDetailRead
from core.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InsufficientStorage,
    InvalidInput,
    NotFound,
    Problem,
    TooLarge,
    TooManyQueued,
    Unavailable,
)

log = logging.getLogger(__name__)

STATUS: dict[type[DomainError], int] = {
    NotFound: 404,
    Forbidden: 403,
    Conflict: 409,
    TooLarge: 413,
    InvalidInput: 422,
    TooManyQueued: 429,
    Unavailable: 503,
    InsufficientStorage: 507,
}


def documented_errors() -> dict[int | str, dict[str, Any]]:
    """The error answers any route may give, for the OpenAPI document: the domain errors above,
    401 (auth), 422 (validation, JSON nesting) and 413 (body limits), all ``{"detail": ...}``."""
    codes = sorted({401, 413, 422, *STATUS.values()})
    return {
        code: {"model": ErrorDetailRead, "description": HTTPStatus(code).phrase} for code in codes
    }


def problems_detail(problems: tuple[Problem, ...] | list[Problem]) -> list[dict[str, object]]:
    return [
        {"loc": list(p.loc), "msg": p.msg, "type": p.type} | ({"ctx": p.ctx} if p.ctx else {})
        for p in problems
    ]


def _domain(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    status = next((code for cls, code in STATUS.items() if isinstance(exc, cls)), 400)
    if isinstance(exc, InvalidInput):
        return JSONResponse({"detail": problems_detail(exc.problems)}, status_code=status)
    headers = {"Retry-After": "30"} if status in (429, 503) else None
    return JSONResponse({"detail": exc.message}, status_code=status, headers=headers)


def _invalid_request(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 without echoing each wrong input back: a 1 MiB list in a field came back
    once per error, encoded in Python (seconds of CPU per request)."""
    assert isinstance(exc, RequestValidationError)
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return JSONResponse({"detail": detail}, status_code=422)


async def _http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's own answer to an HTTPException, with a 405's Allow made complete.

    Starlette's 405 names only the methods of the first route whose path matched (POST for
    ``OPTIONS /v1/datasets``, though GET lists them too), while RFC 9110 section 15.5.6 says
    a 405 MUST carry an Allow field listing the target resource's supported methods: the
    methods the OpenAPI document gives the path (api/openapi.py: path_methods)."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        methods = path_methods(request.app.openapi(), request.scope["path"])
        if methods:
            headers = dict(exc.headers or {}) | {"Allow": ", ".join(methods)}
            exc = StarletteHTTPException(405, exc.detail, headers=headers)
    return await http_exception_handler(request, exc)


def _database_down(_request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", exc)
    return JSONResponse(
        {"detail": "the database is unavailable; retry shortly"},
        status_code=503,
        headers={"Retry-After": "5"},
    )


def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(OperationalError, _database_down)
    app.add_exception_handler(Exception, _unexpected)
