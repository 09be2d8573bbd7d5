"""``parse_payload``: a Kohya_SS GUI JSON payload in, a validated TrainingConfig out.

Steps, each collecting problems instead of stopping:

1. every key is resolved: a registry key, an alias (sd-scripts spelling), or an
   unknown key — reported with the nearest known key;
2. every value is coerced to its Kohya type (:mod:`trainer.config.coerce`) and
   checked against its registry range or choices (:meth:`KeySpec.check`); one
   setting given under two spellings with different values is a problem;
3. omitted keys get their default; the result is the ``normalized`` payload
   (every accepted key, GUI spellings, JSON-safe), stored with the job;
4. values the trainer cannot honour yet are refused with the registry's reason;
5. the internal fields are derived (Kohya's unset rules, :mod:`.build`) and the
   cross-field rules are checked (:mod:`.checks`).

All problems are raised together as one :class:`PayloadError`. Secret values
(``wandb_api_key``, ``huggingface_token``) never appear in a message or in
``normalized``: a non-empty secret is refused, so ``normalized`` holds "".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from trainer.config.build import build_fields
from trainer.config.checks import cross_field_problems
from trainer.config.coerce import EMPTY, coerce
from trainer.config.errors import ConfigWarning, PayloadError, Problem
from trainer.config.keys import ALIASES, KEYS, SKIP, suggest
from trainer.config.model import TrainingConfig


@dataclass(frozen=True)
class ParsedPayload:
    """The result of :func:`parse_payload`."""

    config: TrainingConfig
    warnings: tuple[ConfigWarning, ...]
    normalized: dict[str, Any]


def parse_payload(raw: Mapping[str, Any]) -> ParsedPayload:
    """Validate a Kohya GUI payload; raise PayloadError listing every problem."""
    if not isinstance(raw, Mapping):
        raise PayloadError([Problem("payload", "must be a JSON object of Kohya settings")])
    problems: list[Problem] = []
    values, spelled = _read_keys(raw, problems)
    normalized = _normalize(values)
    for key, spec in KEYS.items():
        reason = spec.refusal(normalized[key])
        if reason:
            shown = "" if spec.secret else f" {normalized[key]!r}"
            problems.append(Problem(spelled.get(key, key), f"value{shown} refused: {reason}"))
    fields, warnings, build_problems = build_fields(normalized)
    problems.extend(build_problems)
    config = _make_config(fields, problems, spelled)
    if problems or config is None:
        raise PayloadError(_unique(problems))
    return ParsedPayload(config=config, warnings=tuple(warnings), normalized=normalized)


def _read_keys(
    raw: Mapping[str, Any], problems: list[Problem]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Coerced values by registry key, and the spelling the user wrote for each."""
    values: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for name, value in raw.items():
        if not isinstance(name, str):
            problems.append(Problem(str(name), "keys must be text"))
            continue
        key = name if name in KEYS else None
        if key is None and name in ALIASES:
            alias = ALIASES[name]
            key, value = alias.key, alias.adapt(value) if alias.adapt else value
        if key is None:
            hint = suggest(name)
            tip = f"; did you mean {hint!r}?" if hint else ""
            problems.append(Problem(name, f"unknown key{tip}"))
            continue
        if value is SKIP:
            continue
        try:
            coerced = coerce(KEYS[key], value)
        except ValueError as exc:
            problems.append(Problem(name, str(exc)))
            continue
        if key in values and values[key] != coerced:
            problems.append(
                Problem(
                    name,
                    f"conflicts with {spelled[key]!r}: "
                    "one setting given twice with different values",
                )
            )
            continue
        values[key] = coerced
        spelled.setdefault(key, name)
    return values, spelled


def _normalize(values: Mapping[str, Any]) -> dict[str, Any]:
    """Every registry key with its Kohya value; omitted keys and "" numbers get the default."""
    normalized: dict[str, Any] = {}
    for key, spec in KEYS.items():
        value = values.get(key, spec.default)
        normalized[key] = spec.default if value is EMPTY else value
    if values.get("lr_scheduler_num_cycles") is EMPTY:
        # GUI: an empty number of cycles means one cycle per epoch.
        normalized["lr_scheduler_num_cycles"] = normalized["epoch"]
    return normalized


def _make_config(
    fields: dict[str, Any], problems: list[Problem], spelled: Mapping[str, str]
) -> TrainingConfig | None:
    """Build the model; rule violations become Problems under the keys the user wrote.

    Each value was range-checked when it was read; the draft adds the cross-field
    rules, so that they are reported together with every other problem.
    """
    try:
        draft = TrainingConfig.model_construct(**fields)
        found = cross_field_problems(draft)
    except (AttributeError, KeyError, TypeError, ValueError):
        found = []  # a field is malformed; model_validate below reports it
    problems.extend(Problem(spelled.get(key, key), message) for key, message in found)
    if problems:
        return None
    try:
        return TrainingConfig.model_validate(fields)
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "payload"
            problems.append(Problem(where, error["msg"]))
        return None


def _unique(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))


def stored_config(fields: Mapping[str, Any]) -> TrainingConfig:
    """A config as a job row stored it (``model_dump(mode="json")``), possibly by an earlier
    lorabox: a field it predates takes what an absent key gives today, the Kohya default,
    which is what that version did (new keys arrive switched off). A job queued before an
    upgrade runs instead of failing as unreadable."""
    defaults = parse_payload({}).config.model_dump(mode="json")
    return TrainingConfig.model_validate(defaults | dict(fields))
