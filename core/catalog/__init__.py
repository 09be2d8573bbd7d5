"""The models directory as a catalog: which base models and VAEs jobs may name."""

from core.catalog.discovery import ModelInfo, find_model, list_models

__all__ = ["ModelInfo", "find_model", "list_models"]
