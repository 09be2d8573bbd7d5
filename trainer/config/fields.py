"""The fields of ``TrainingConfig``, derived from the registry.

Every registry entry with a ``field`` is one field. Its type is the Python type
of the coerced Kohya value (the entry's ``kind``), made optional where the entry's
``unset`` is None: "0 / empty means unset" stores None (docs/kohya-semantics.md,
"Unset values"). Ranges and choices are deliberately not part of the type:
:meth:`KeySpec.check` is the one place that checks them.

:data:`INTERNAL` holds the only fields no single key declares. :func:`render_stub`
writes the same fields as a class for mypy (``trainer/config/typed.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import GenericAlias, MappingProxyType
from typing import Any

from trainer.config.keys import KEYS
from trainer.config.spec import KeySpec, Kind

INTERNAL: Mapping[str, Any] = MappingProxyType(
    {
        # Which parts are trained follows from the three learning rates together
        # with the sd-scripts only-flags (build._learning_rates), not from one key.
        "train_unet": bool,
        "train_text_encoder": bool,
    }
)

_KIND_TYPES: Mapping[Kind, Any] = MappingProxyType(
    {
        "bool": bool,
        "int": int,
        "float": float,
        "str": str,
        "choice": str,
        "attention": str,
        "ext": str,
        "resolution": tuple[int, int],
        "args": dict[str, Any],  # parsed "k=v k=v" (trainer.config.arguments)
    }
)


def field_type(spec: KeySpec) -> Any:
    """The annotation of ``spec``'s field: its kind's type, optional if unset means None."""
    kind_type = _KIND_TYPES[spec.kind]
    return kind_type | None if spec.unset is None else kind_type


def fields_of(specs: Iterable[KeySpec]) -> dict[str, Any]:
    """Field name -> annotation for each entry of ``specs`` that has a field."""
    return {spec.field: field_type(spec) for spec in specs if spec.field}


FIELDS: Mapping[str, Any] = MappingProxyType({**fields_of(KEYS.values()), **INTERNAL})
"""Every ``TrainingConfig`` field and its annotation, in registry order."""


def type_text(annotation: Any) -> str:
    """``annotation`` as source text (``int | None``, ``dict[str, Any]``)."""
    if isinstance(annotation, type) and not isinstance(annotation, GenericAlias):
        return annotation.__name__
    return repr(annotation).replace("typing.", "")


_STUB_HEADER = '''\
# Generated from the registry by `python -m trainer.config.table`; do not edit by hand.
"""The fields of ``TrainingConfig`` as mypy sees them.

:mod:`trainer.config.model` builds ``TrainingConfig`` from the registry when it is
imported; mypy cannot see a class made at run time, so it reads this one, which
lists the same fields (:mod:`trainer.config.fields`). A test fails when the two
differ. The package never imports this module at run time.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class TrainingConfig(BaseModel, frozen=True, extra="forbid"):
    """A validated SDXL LoRA training config (see the registry for each field's meaning)."""

'''


def render_stub() -> str:
    """The source of ``trainer/config/typed.py``."""
    lines = [f"    {name}: {type_text(annotation)}" for name, annotation in FIELDS.items()]
    return _STUB_HEADER + "\n".join(lines) + "\n"
