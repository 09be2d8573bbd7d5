"""The shape of one registry entry: a Kohya key, its type, range, meaning and status.

Every key a payload may contain has exactly one :class:`KeySpec`. The entry says
what the key means in kohya_ss v24.1.7 / sd-scripts, what values the GUI allows,
and whether lorabox implements it:

* ``honoured``: the trainer implements it (``supported`` may narrow the values);
* ``host``: accepted and documented, but owned by the server (paths, launch
  settings, trackers, uploads); the trainer never reads it;
* ``refused``: accepted only at its default value (or a value in ``inert``, which
  the GUI treats as the default); anything else is a problem carrying ``reason``.

Flipping a key from refused to honoured is a one-line change in the registry
(drop its ``status``/``reason``/``field=None``), plus the test that shows its
effect: ``TrainingConfig`` gains the field from the registry, and
``python -m trainer.config.table`` regenerates the files derived from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

Kind = Literal["bool", "int", "float", "str", "choice", "ext", "resolution", "args", "attention"]


class Status(StrEnum):
    HONOURED = "honoured"
    HOST = "host"
    REFUSED = "refused"


class _Keep:
    """Marker: the internal value is the Kohya value itself (no "unset" rule)."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()


@dataclass(frozen=True)
class KeySpec:
    """One accepted payload key.

    ``unset`` implements Kohya's "0 / empty means unset" rule (docs/kohya-semantics.md,
    "Unset values"): the GUI (``kohya_gui/lora_gui.py: train_model``) drops ``0`` and
    ``""`` from its TOML, so sd-scripts falls back to its own default; when the Kohya
    value is ``0`` or ``""`` the internal field gets ``unset`` instead (``None`` or the
    sd-scripts default). Booleans never use it.

    ``kind`` also fixes the type of the ``TrainingConfig`` field (:mod:`.fields`);
    ``lo``/``hi``/``choices`` are checked by :meth:`check` only.
    """

    key: str
    kind: Kind
    default: Any
    meaning: str
    status: Status = Status.HONOURED
    reason: str = ""
    lo: float | None = None
    hi: float | None = None
    choices: tuple[Any, ...] = ()
    supported: tuple[Any, ...] | None = None
    inert: tuple[Any, ...] = ()
    field: str | None = ""
    unset: Any = KEEP
    secret: bool = False
    gui: bool = True
    casefold: bool = False
    same_result: str = ""  # honoured, but every value trains the same: why (docs, effect check)

    def __post_init__(self) -> None:
        if self.field == "":
            object.__setattr__(self, "field", self.key)
        if self.status is not Status.HONOURED and not self.reason:
            raise ValueError(f"registry entry {self.key!r} needs a reason")

    def is_default(self, value: Any) -> bool:
        """True when ``value`` means the same as the Kohya default."""
        return bool(value == self.default or value in self.inert)

    def needs_effect_test(self) -> bool:
        """Honoured with a value other than the default that changes the run.

        Keys whose only supported value is the default (``sdxl``, ``v2``) and keys
        documented as training the same with every value (``same_result``) have
        no observable effect to show.
        """
        if self.status is not Status.HONOURED or self.same_result:
            return False
        return self.supported is None or any(not self.is_default(v) for v in self.supported)

    def refusal(self, value: Any) -> str | None:
        """The reason ``value`` cannot be trained, or None when it can."""
        if self.status is Status.REFUSED:
            return None if self.is_default(value) else self.reason
        if self.supported is not None and value not in self.supported:
            return self.reason
        return None

    def check(self, value: Any) -> str | None:
        """Why ``value`` is outside this key's range or choices; None when it is inside.

        The one range/choice check: the payload edge runs it on each Kohya value, and
        ``TrainingConfig`` on each of its fields, so a range is written only here and in
        the registry row. A resolution is checked as its ``(W, H)`` sides.
        """
        if self.choices:
            if value in self.choices:
                return None
            if self.supported is not None and self.reason:
                # e.g. an optimizer import path: answer with what *is* supported.
                return f"{value!r} is not accepted: {self.reason}"
            return f"must be one of {self.range_text()}, got {value!r}"
        if self.kind == "resolution":
            if all(self._within(side) and side % 8 == 0 for side in value):
                return None
            return f"each side must be a multiple of 8 in {self.range_text()}"
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if is_number and not self._within(value):
            return f"must be in {self.range_text()}, got {value!r}"
        return None

    def _within(self, value: float) -> bool:
        return (self.lo is None or value >= self.lo) and (self.hi is None or value <= self.hi)

    def internal(self, value: Any) -> Any:
        """The internal value for a (coerced) Kohya value, applying ``unset``."""
        if self.unset is KEEP or isinstance(value, bool):
            return value
        return self.unset if value in (0, "") else value

    def range_text(self) -> str:
        """Human-readable range or choices, for messages and docs."""
        if self.choices:
            return ", ".join(repr(c) for c in self.choices)
        if self.lo is None and self.hi is None:
            return ""
        lo = "" if self.lo is None else _num(self.lo)
        hi = "" if self.hi is None else _num(self.hi)
        return f"{lo}–{hi}" if self.hi is not None else f"≥ {lo}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def flag(key: str, default: bool, meaning: str, **kw: Any) -> KeySpec:
    """A JSON boolean key."""
    return KeySpec(key, "bool", default, meaning, **kw)


def integer(
    key: str, default: int, lo: int | None, hi: int | None, meaning: str, **kw: Any
) -> KeySpec:
    """A whole-number key with an inclusive range."""
    return KeySpec(key, "int", default, meaning, lo=lo, hi=hi, **kw)


def number(
    key: str, default: float, lo: float | None, hi: float | None, meaning: str, **kw: Any
) -> KeySpec:
    """A finite float key with an inclusive range."""
    return KeySpec(key, "float", default, meaning, lo=lo, hi=hi, **kw)


def text(key: str, default: str, meaning: str, **kw: Any) -> KeySpec:
    """A free-text key."""
    return KeySpec(key, "str", default, meaning, **kw)


def choice(key: str, default: Any, choices: tuple[Any, ...], meaning: str, **kw: Any) -> KeySpec:
    """A key whose value is one of ``choices`` (the GUI dropdown)."""
    kind: Kind = "int" if isinstance(default, int) else "choice"
    return KeySpec(key, kind, default, meaning, choices=choices, **kw)
