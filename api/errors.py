"""The one place domain errors become HTTP responses, in FastAPI's ``{"detail": ...}`` shape."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from api.exceptions import (
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


def problems_detail(problems: tuple[Problem, ...] | list[Problem]) -> list[dict[str, object]]:
    return [{"loc": list(p.loc), "msg": p.msg, "type": p.type} for p in problems]


def _domain(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    status = next((code for cls, code in STATUS.items() if isinstance(exc, cls)), 400)
    if isinstance(exc, InvalidInput):
        return JSONResponse({"detail": problems_detail(exc.problems)}, status_code=status)
    headers = {"Retry-After": "30"} if status in (429, 503) else None
    return JSONResponse({"detail": exc.message}, status_code=status, headers=headers)


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
    app.add_exception_handler(OperationalError, _database_down)
    app.add_exception_handler(Exception, _unexpected)
