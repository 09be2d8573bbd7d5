"""A pickle-free encoding of state dicts: tensors to safetensors, the rest to JSON.

Optimizer, scheduler and RNG states are nested dicts, lists and tuples of
tensors and plain values, with int keys and tuples that JSON alone would lose.
``encode`` moves every tensor into a flat ``{name: tensor}`` dict and leaves a
reference in a JSON-able tree that tags what JSON can't say (non-string keys,
tuples, numpy arrays, non-finite floats); ``decode`` rebuilds the exact tree.
Only these plain types ever come back: loading a state can't construct objects.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

_TENSOR, _TUPLE, _ITEMS, _ARRAY, _FLOAT = "$tensor", "$tuple", "$items", "$ndarray", "$float"


class StateFormatError(ValueError):
    """The state file's JSON tree holds something this codec never writes."""


class TensorStore(dict[str, torch.Tensor]):
    """The tensors of a state, each stored once.

    Optimizers share tensors between parameters (bitsandbytes' quantization maps);
    safetensors refuses shared memory, and sharing must survive a round trip, so a
    tensor seen again is stored by reference; a different view of seen memory is copied.
    """

    def __init__(self) -> None:
        super().__init__()
        self._names: dict[tuple[object, ...], str] = {}
        self._storages: set[int] = set()

    def add(self, path: str, tensor: torch.Tensor) -> str:
        tensor = tensor.detach().cpu()
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tensor.shape,
               tensor.stride(), tensor.dtype)  # fmt: skip
        if key in self._names:
            return self._names[key]
        if key[0] in self._storages and tensor.numel():
            tensor = tensor.clone()
        self._storages.add(key[0])
        self._names[key] = path
        self[path] = tensor.contiguous()
        return path


def encode(tree: Any, tensors: TensorStore, path: str = "") -> Any:
    """A JSON-able copy of ``tree``; its tensors land in ``tensors`` under dotted names."""
    if isinstance(tree, torch.Tensor):
        return {_TENSOR: tensors.add(path, tree)}
    if isinstance(tree, np.ndarray):
        array = tree.astype(np.int64) if tree.dtype == np.uint32 else tree  # torch lacks uint32
        return {_ARRAY: tensors.add(path, torch.from_numpy(array)), "dtype": str(tree.dtype)}
    if isinstance(tree, dict):
        if all(isinstance(key, str) and not key.startswith("$") for key in tree):
            return {key: encode(value, tensors, f"{path}.{key}") for key, value in tree.items()}
        return {
            _ITEMS: [
                [encode(key, tensors, f"{path}.k{i}"), encode(value, tensors, f"{path}.{i}")]
                for i, (key, value) in enumerate(tree.items())
            ]
        }
    if isinstance(tree, tuple):
        return {_TUPLE: [encode(v, tensors, f"{path}.{i}") for i, v in enumerate(tree)]}
    if isinstance(tree, list):
        return [encode(v, tensors, f"{path}.{i}") for i, v in enumerate(tree)]
    if isinstance(tree, float) and not math.isfinite(tree):
        return {_FLOAT: repr(tree)}
    if isinstance(tree, np.generic):
        return tree.item()
    if tree is None or isinstance(tree, bool | int | float | str):
        return tree
    raise TypeError(f"{path or 'state'}: cannot store a {type(tree).__name__}")


def decode(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of :func:`encode`."""
    if isinstance(tree, list):
        return [decode(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        if tree is None or isinstance(tree, bool | int | float | str):
            return tree
        raise StateFormatError(f"unexpected {type(tree).__name__} in a state file")
    if _TENSOR in tree:
        return _tensor(tensors, tree[_TENSOR])
    if _ARRAY in tree:
        return _tensor(tensors, tree[_ARRAY]).numpy().astype(np.dtype(tree["dtype"]))
    if _TUPLE in tree:
        return tuple(decode(v, tensors) for v in tree[_TUPLE])
    if _ITEMS in tree:
        return {decode(k, tensors): decode(v, tensors) for k, v in tree[_ITEMS]}
    if _FLOAT in tree:
        return float(tree[_FLOAT])
    return {key: decode(value, tensors) for key, value in tree.items()}


def _tensor(tensors: dict[str, torch.Tensor], name: Any) -> torch.Tensor:
    if not isinstance(name, str) or name not in tensors:
        raise StateFormatError(f"the state file lacks its tensor {name!r}")
    return tensors[name]
