"""Problems and warnings found while reading a Kohya payload.

Validation never stops at the first problem: every key is checked and all
problems are raised together in one :class:`PayloadError`, each naming the
payload key (the spelling the user wrote) and a reason the user can act on.
Messages never contain the value of a secret key (``wandb_api_key``,
``huggingface_token``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One reason the payload cannot be trained; ``field`` is the payload key."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True)
class ConfigWarning:
    """A value was accepted but changed or has a surprising effect (as the GUI warns)."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class PayloadError(ValueError):
    """The payload has one or more problems; ``problems`` lists all of them."""

    def __init__(self, problems: tuple[Problem, ...] | list[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        count = len(self.problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"{count} problem{'s' if count != 1 else ''} in the training payload:\n{lines}"
        )
