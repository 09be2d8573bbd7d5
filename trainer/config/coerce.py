"""Turning one raw JSON value into the Kohya value its registry entry describes.

Rules (documented decisions; docs/kohya-semantics.md, "Unset values", says how the
GUI treats ``0`` and ``""``):

* ``null`` means "use the default", as the GUI does when it loads a config.
* Numbers: JSON numbers, or strings the GUI writes for number widgets
  (``"1e-4"``, ``" 5 "``). ``""`` means unset and is replaced by the GUI
  default (``lr_scheduler_num_cycles`` is the exception: ``""`` = ``epoch``,
  handled by the caller). NaN and ±Infinity are errors, also inside strings.
  Whole-number keys accept integral floats (``36.0``), as gradio returns them.
  Booleans are never numbers.
* Booleans: JSON ``true``/``false``; the integers 0 and 1 are accepted too,
  because the GUI stores ``persistent_data_loader_workers`` as ``int(bool)``
  and sd-scripts reads TOML 0/1 as false/true. ``""`` means the default.
  Anything else (``"true"``, ``2``) is an error.
* Text: JSON strings only.

Ranges and choices are not checked here: each coerced value goes through
:meth:`KeySpec.check`, the registry's one range/choice check.
"""

from __future__ import annotations

import math
import re
from typing import Any

from trainer.config.arguments import parse_arguments
from trainer.config.spec import KeySpec

EMPTY: Any = object()
"""Returned for ``""`` in a numeric key; the caller substitutes the default."""

_EXTENSION = re.compile(r"^\.?[A-Za-z0-9_\-]{1,16}$")
_SIDE = re.compile(r"^\s*\d+\s*$")


def coerce(spec: KeySpec, raw: Any) -> Any:
    """The Kohya value of ``raw`` for ``spec``; ValueError(message) when invalid."""
    if raw is None:
        return spec.default
    return _HANDLERS[spec.kind](spec, raw)


def _checked(spec: KeySpec, value: Any) -> Any:
    problem = spec.check(value)
    if problem:
        raise ValueError(problem)
    return value


def _bool(spec: KeySpec, raw: Any) -> Any:
    if isinstance(raw, bool):
        return raw
    if type(raw) is int and raw in (0, 1):
        return bool(raw)
    if raw == "":
        return spec.default
    raise ValueError(f"must be true or false, got {_show(spec, raw)}")


def _int(spec: KeySpec, raw: Any) -> Any:
    value = _finite(spec, raw)
    if value is EMPTY:
        return EMPTY
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"must be a whole number, got {value!r}")
        value = int(value)
    return _checked(spec, value)


def _float(spec: KeySpec, raw: Any) -> Any:
    value = _finite(spec, raw)
    if value is EMPTY:
        return EMPTY
    return _checked(spec, float(value))


def _finite(spec: KeySpec, raw: Any) -> Any:
    """An int or finite float from a JSON number or numeric string, or EMPTY for ""."""
    if isinstance(raw, bool):
        raise ValueError(f"must be a number, got {str(raw).lower()}")
    if isinstance(raw, str):
        stripped = raw.strip()
        if not stripped:
            return EMPTY
        try:
            raw = int(stripped) if _SIDE.match(stripped) else float(stripped)
        except ValueError:
            raise ValueError(f"must be a number, got {_show(spec, raw)}") from None
    if isinstance(raw, float) and not math.isfinite(raw):
        raise ValueError("must be a finite number (NaN and Infinity are not allowed)")
    if not isinstance(raw, int | float):
        raise ValueError(f"must be a number, got {type(raw).__name__}")
    return raw


def _str(spec: KeySpec, raw: Any) -> Any:
    if not isinstance(raw, str):
        raise ValueError(f"must be text, got {type(raw).__name__}")
    return raw


def _choice(spec: KeySpec, raw: Any) -> Any:
    if not isinstance(raw, str):
        raise ValueError(f"must be one of {spec.range_text()}, got {type(raw).__name__}")
    if spec.casefold:
        for option in spec.choices:
            if option.lower() == raw.strip().lower():
                return option
    return _checked(spec, raw)


def _attention(spec: KeySpec, raw: Any) -> Any:
    # GUI before v22 stored xformers as a bool; true meant --xformers.
    if isinstance(raw, bool):
        return "xformers" if raw else "none"
    return _choice(spec, raw)


def _extension(spec: KeySpec, raw: Any) -> Any:
    value = _str(spec, raw).strip()
    if value == "":
        return ".caption"  # the GUI drops "", so sd-scripts uses its default
    if not _EXTENSION.match(value):
        raise ValueError(f"must be a file extension such as '.txt', got {value!r}")
    return value if value.startswith(".") else "." + value


def _resolution(spec: KeySpec, raw: Any) -> Any:
    """Canonical "W,H" from "W,H", "N", N or [W, H] (sd-scripts' parsing)."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        parts: list[Any] = [str(raw)]
    elif isinstance(raw, str):
        parts = raw.split(",")
    elif isinstance(raw, list) and all(type(v) is int for v in raw):
        parts = [str(v) for v in raw]
    else:
        raise ValueError("must be 'W,H' or 'N' (pixels)")
    if len(parts) not in (1, 2) or not all(_SIDE.match(p) for p in parts):
        raise ValueError(f"must be 'W,H' or 'N' (whole pixels), got {raw!r}")
    width, height = [int(p) for p in parts] * (3 - len(parts))
    problem = spec.check((width, height))
    if problem:
        raise ValueError(f"{problem}, got {raw!r}")
    return f"{width},{height}"


def _args(spec: KeySpec, raw: Any) -> Any:
    value = _str(spec, raw)
    parse_arguments(value)  # reports the bad item now; the caller parses again
    return value


def _show(spec: KeySpec, raw: Any) -> str:
    return "a secret value" if spec.secret else repr(raw)


_HANDLERS = {
    "bool": _bool,
    "int": _int,
    "float": _float,
    "str": _str,
    "choice": _choice,
    "ext": _extension,
    "resolution": _resolution,
    "args": _args,
    "attention": _attention,
}
