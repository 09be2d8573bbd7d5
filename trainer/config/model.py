"""``TrainingConfig``: the frozen, typed, validated config the trainer reads.

The model is derived from the registry, not the registry from the model. The
registry (``KEYS``) must describe every Kohya key anyway — honoured, server-owned
and refused — with its type, default, range, choices and meaning, one row per
key, and a refused key becomes honoured by editing its row. The model is just the
honoured part under internal names, so it is built here with
:func:`pydantic.create_model` from :data:`trainer.config.fields.FIELDS`: one field
per registry entry with a ``field`` (typed by its ``kind``) plus the few internal
fields no single key declares. The field types carry no range or choice; the
validator below runs the registry's one range/choice check
(:func:`trainer.config.checks.range_problems`, i.e. :meth:`KeySpec.check`), then
the cross-field rules.

mypy cannot see a class built at run time, so under ``TYPE_CHECKING`` the name
means :class:`trainer.config.typed.TrainingConfig`, a class with the same field
annotations that ``python -m trainer.config.table`` generates from the registry
(with ``docs/parameters.md``); a test fails when it is stale. Adding an honoured
Kohya key is therefore one registry row (and its test); the generator rewrites the
two derived files.

Internal names follow sd-scripts where it has one name per idea; Kohya GUI
spellings live only in the registry. Every field is required: a config is made by
:func:`trainer.config.parse_payload` (which fills the Kohya defaults) or by
``model_validate`` of its own ``model_dump``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel, ConfigDict, create_model, field_validator, model_validator

from trainer.config.arguments import freeze
from trainer.config.checks import cross_field_problems, range_problems
from trainer.config.fields import FIELDS

if TYPE_CHECKING:
    from trainer.config.typed import TrainingConfig


class ConfigRules(BaseModel):
    """What a TrainingConfig obeys besides its field types (the base of the built model)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @field_validator("optimizer_args", "lr_scheduler_args", mode="after", check_fields=False)
    @classmethod
    def _stable_arguments(cls, value: dict[str, Any]) -> dict[str, Any]:
        # JSON turns tuples into lists; freezing again makes dump/validate a round trip.
        return {name: freeze(v, name) for name, v in value.items()}

    @model_validator(mode="after")
    def _consistent(self) -> ConfigRules:
        # Only the built TrainingConfig derives from this class.
        config = cast("TrainingConfig", self)
        problems = range_problems(config) or cross_field_problems(config)
        if problems:
            raise ValueError("; ".join(f"{key}: {message}" for key, message in problems))
        return self


if not TYPE_CHECKING:
    TrainingConfig = create_model(
        "TrainingConfig",
        __base__=ConfigRules,
        __module__=__name__,
        __doc__="A validated SDXL LoRA training config (see the registry for each field).",
        **{name: (annotation, ...) for name, annotation in FIELDS.items()},
    )
