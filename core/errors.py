"""Domain errors raised by the services. HTTP-free: ``api.errors`` maps them to responses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request: where (a field path) and why."""

    loc: Loc
    msg: str
    type: str = "value_error"
    ctx: Mapping[str, Any] | None = None  # machine-readable detail (does_not_fit's suggestions)


class DomainError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(DomainError):
    """Missing, or owned by someone else (both look the same to the caller)."""


class Forbidden(DomainError):
    pass


class Conflict(DomainError):
    pass


class InvalidInput(DomainError):
    """Every problem found, so the caller can fix them all at once."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, p.loc))}: {p.msg}" for p in problems))
        self.problems = tuple(problems)


class TooLarge(DomainError):
    pass


class TooManyQueued(DomainError):
    pass


class InsufficientStorage(DomainError):
    pass


class Unavailable(DomainError):
    """A dependency (database, broker) can't be reached right now."""
