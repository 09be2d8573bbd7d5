"""The Kohya payload model: parse a Kohya_SS GUI JSON payload into a TrainingConfig.

Torch-free on purpose: the API validates payloads with this same package.
"""

from trainer.config.errors import ConfigWarning, PayloadError, Problem
from trainer.config.keys import ALIASES, KEYS
from trainer.config.model import TrainingConfig
from trainer.config.payload import ParsedPayload, parse_payload, stored_config
from trainer.config.spec import KeySpec, Status

__all__ = [
    "ALIASES",
    "KEYS",
    "ConfigWarning",
    "KeySpec",
    "ParsedPayload",
    "PayloadError",
    "Problem",
    "Status",
    "TrainingConfig",
    "parse_payload",
    "stored_config",
]
