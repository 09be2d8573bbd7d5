"""A job row's config from an earlier lorabox (trainer/config/payload.py: stored_config):
fields it predates take today's defaults, so a job queued before an upgrade still runs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tests.factories import seed_payload
from trainer.config import parse_payload, stored_config


def test_a_config_stored_before_a_key_existed_reads_with_that_keys_default():
    config = parse_payload(seed_payload()).config
    stored = config.model_dump(mode="json")
    defaults = parse_payload({}).config.model_dump(mode="json")
    newer = [name for name in stored if stored[name] == defaults[name]][:5]
    assert newer  # some fields are at their default in the seed payload
    older = {name: value for name, value in stored.items() if name not in newer}
    with pytest.raises(ValidationError):  # what the worker did before: invalid_job
        type(config).model_validate(older)
    assert stored_config(older) == config


def test_a_config_from_a_newer_lorabox_is_still_refused():
    stored = parse_payload(seed_payload()).config.model_dump(mode="json")
    with pytest.raises(ValidationError):
        stored_config({**stored, "a_field_from_the_future": 1})
