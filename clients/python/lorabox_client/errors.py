"""Typed errors: one class per kind of HTTP problem the API answers, each carrying the API's
``{"detail": ...}`` as it came (a reason, or for 422 the list of problems with their fields).

The classes mirror the server's own table (``api/errors.py: STATUS``), so a script catches
what it can act on (``except NotFound``, ``except Unavailable as e: sleep(e.retry_after)``)
instead of parsing messages.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from typing import Any

import httpx


class LoraboxError(Exception):
    """Everything the client raises about the server or a job (``except LoraboxError``)."""


class ConnectionFailed(LoraboxError):
    """The server could not be reached, or the connection broke (no HTTP answer to show)."""


class ApiError(LoraboxError):
    """The server answered with an error status. ``detail`` is the body's ``detail`` as is."""

    status: int = 0

    def __init__(self, status: int, detail: Any, *, retry_after: float | None = None) -> None:
        self.status, self.detail, self.retry_after = status, detail, retry_after
        super().__init__(self._describe())

    def _describe(self) -> str:
        return f"HTTP {self.status}: {self.detail}"


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    """The token is missing, wrong or revoked (``lorabox user token NAME`` issues a new one)."""

    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    """The resource is in the wrong state (deleting a dataset a queued job uses, say)."""

    status = 409


class TooLarge(ApiError):
    status = 413


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request: where (``loc``, a field path) and why."""

    loc: tuple[str | int, ...]
    msg: str
    type: str = ""

    @property
    def field(self) -> str:
        """The path without FastAPI's ``body``/``query`` root: ``params.learning_rate``."""
        rooted = self.loc and self.loc[0] in ("body", "query", "header")
        parts = self.loc[1:] if rooted else self.loc
        return ".".join(str(p) for p in parts)


class ValidationFailed(ApiError):
    """422: every problem with the request, each naming its field (``problems``)."""

    status = 422

    def __init__(self, status: int, detail: Any, *, retry_after: float | None = None) -> None:
        self.problems = _problems(detail)
        super().__init__(status, detail, retry_after=retry_after)

    def _describe(self) -> str:
        if not self.problems:
            return f"HTTP 422: {self.detail}"
        lines = [f"  {'.'.join(str(p) for p in problem.loc)}: {problem.msg}"
                 for problem in self.problems]  # fmt: skip
        return "HTTP 422:\n" + "\n".join(lines)


class TooManyQueued(ApiError):
    """429: your queue is full; ``retry_after`` seconds is the server's suggestion."""

    status = 429


class ServerError(ApiError):
    """A 5xx the server gave no more specific meaning to (500: see the server's log)."""

    status = 500


class Unavailable(ServerError):
    """503: the database or broker is down, or the server is stopping; retry after
    ``retry_after`` seconds."""

    status = 503


class InsufficientStorage(ServerError):
    status = 507


class NothingToDownload(LoraboxError):
    """The job lists no LoRA (or no artifacts): the message says whether it ever will."""


class DownloadCorrupted(LoraboxError):
    """The bytes received don't match the checksum the server sent (nothing was written)."""


class StreamUnavailable(LoraboxError):
    """The event stream could not be followed (a proxy that buffers, an older server, a
    connection that keeps dropping): ``Job.wait`` polls instead."""


_BY_STATUS: dict[int, type[ApiError]] = {
    cls.status: cls
    for cls in (BadRequest, Unauthorized, Forbidden, NotFound, Conflict, TooLarge,
                ValidationFailed, TooManyQueued, Unavailable, InsufficientStorage)
}  # fmt: skip


def _problems(detail: Any) -> list[Problem]:
    if not isinstance(detail, list):
        return []
    return [
        Problem(tuple(item.get("loc") or ()), str(item.get("msg", "")), str(item.get("type", "")))
        for item in detail
        if isinstance(item, dict)
    ]


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds: a number, or an HTTP date (RFC 9110 section 10.2.3)."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def error_for(response: httpx.Response) -> ApiError:
    """The typed error for an error response (its body must have been read)."""
    try:
        body = response.json()
        detail = body.get("detail", body) if isinstance(body, dict) else body
    except ValueError:
        detail = response.text[:300]
    status = response.status_code
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return cls(status, detail, retry_after=_retry_after(response.headers.get("retry-after")))
