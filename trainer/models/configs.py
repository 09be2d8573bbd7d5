"""The SDXL base configs the project carries, and how a model finds its own.

A single-file checkpoint holds weights only; diffusers needs the component
configs to build the networks. We ship SDXL base's (so real SDXL and Pony
checkpoints load with no network); ``NAME.config/`` beside ``NAME.safetensors``
overrides them (miniature models), and an explicit folder overrides both.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

SDXL_BASE_CONFIG = Path(str(resources.files("trainer").joinpath("assets", "sdxl-base")))


def read_component_config(config_dir: Path, component: str) -> dict[str, Any]:
    name = "scheduler_config.json" if component == "scheduler" else "config.json"
    data: dict[str, Any] = json.loads((config_dir / component / name).read_text())
    return data


def config_dir_for(checkpoint: Path, explicit: Path | None = None) -> Path:
    """The config folder to build ``checkpoint``'s networks from."""
    if explicit is not None:
        return explicit
    sibling = checkpoint.with_name(checkpoint.stem + ".config")
    if sibling.is_dir():
        return sibling
    return SDXL_BASE_CONFIG
