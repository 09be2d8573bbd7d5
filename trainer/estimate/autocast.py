"""CUDA autocast's casting rules applied to CPU tensors, for tracing a step without a GPU.

Both autocasts run matmuls, convolutions and attention in the low dtype, but CUDA autocast
also runs a list of ops in fp32 (``group_norm``, ``layer_norm``, ``upsample_nearest2d``,
``exp``, ...) and gives another list an fp32 ``dtype`` (``softmax``, ``sum``, ...), where
CPU autocast leaves them in fp16/bf16. The lists are ``AT_FORALL_FP32``,
``AT_FORALL_FP32_SET_OPT_DTYPE``, ``AT_FORALL_DIFFERENT_REDISPATCH_SIGNATURE`` and
``AT_FORALL_PROMOTE`` in PyTorch's ``aten/src/ATen/autocast_mode.h``, registered for the
``Autocast`` (CUDA) key in ``aten/src/ATen/autocast_mode.cpp``; the CPU key's own lists
are further down that file. The dtype decides the size of every tensor autograd saves: a
GroupNorm output kept for the SiLU after it is twice as large in fp32.

:func:`cuda_autocast_rules` registers, while it is entered, a Python kernel under the
``AutocastCPU`` dispatch key for each op of those lists that CPU autocast has no kernel
for, with CUDA's policy (``WrapFunction_`` in ``autocast_mode.h``): cast the eligible
tensors, then call the op below autocast. Autocast sits above autograd, so the casts are
recorded and saved as they are on a GPU. Keep it entered through ``backward()``:
non-reentrant checkpointing (``torch/utils/checkpoint.py``) recomputes the forward there
and checks that the recomputed tensors have the dtypes of the first pass.

Not emulated: CUDA's low-precision list has ops CPU autocast lacks (``einsum``,
``addmv``, ``convolution``, ...), but each decomposes into ones both lists share
(``bmm``, ``mm``, ``conv2d``), so the result is the same; ops where CPU autocast has a
kernel of its own keep it (the losses, ``cdist``: fp32 on both; ``prod``, ``grid_sampler``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

# Copied from torch 2.13's aten/src/ATen/autocast_mode.h; a test compares them with the
# installed torch's header, so an upgrade that changes them fails loudly.
FP32 = (
    "acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p",
    "reciprocal", "rsqrt", "sinh", "tan", "pow.Tensor_Scalar", "pow.Tensor_Tensor",
    "pow.Scalar", "softplus", "layer_norm", "native_layer_norm", "rms_norm", "group_norm",
    "frobenius_norm.dim", "nuclear_norm", "nuclear_norm.dim", "cosine_similarity",
    "poisson_nll_loss", "cosine_embedding_loss", "nll_loss", "nll_loss2d",
    "hinge_embedding_loss", "kl_div", "l1_loss", "smooth_l1_loss", "huber_loss", "mse_loss",
    "margin_ranking_loss", "multilabel_margin_loss", "soft_margin_loss",
    "triplet_margin_loss", "multi_margin_loss", "binary_cross_entropy_with_logits", "dist",
    "pdist", "cdist", "renorm", "logsumexp", "upsample_nearest1d", "_upsample_nearest_exact1d",
    "upsample_nearest2d", "_upsample_nearest_exact2d", "upsample_nearest3d",
    "_upsample_nearest_exact3d", "upsample_linear1d", "upsample_bilinear2d",
    "_upsample_bilinear2d_aa", "upsample_trilinear3d", "upsample_bicubic2d",
    "_upsample_bicubic2d_aa",
)  # fmt: skip
FP32_SET_OPT_DTYPE = (
    "prod", "prod.dim_int", "softmax.int", "log_softmax.int", "cumprod", "cumsum",
    "linalg_vector_norm", "linalg_matrix_norm", "linalg_matrix_norm.str_ord", "sum",
    "sum.dim_IntList",
)  # fmt: skip
# fp32_append_dtype: the op is redispatched to its overload that takes a dtype.
FP32_APPEND_DTYPE = {"norm.Scalar": "norm.ScalarOpt_dtype",
                     "norm.ScalarOpt_dim": "norm.ScalarOpt_dim_dtype"}  # fmt: skip
PROMOTE = (
    "addcdiv", "addcmul", "atan2", "bilinear", "cross", "dot", "vdot", "grid_sampler",
    "index_put", "tensordot", "scatter_add",
)  # fmt: skip

_NO_AUTOCAST = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)


def _op(name: str) -> torch._ops.OpOverload:
    packet, _, overload = name.partition(".")
    return getattr(getattr(torch.ops.aten, packet), overload or "default")


def _eligible(value: Any) -> bool:
    """``is_eligible`` in autocast_mode.h: a floating tensor on the device, not fp64."""
    return (
        isinstance(value, torch.Tensor)
        and value.device.type == "cpu"
        and value.is_floating_point()
        and value.dtype != torch.float64
    )


def _cast(value: Any, dtype: torch.dtype) -> Any:
    """``cached_cast`` for a cast to fp32 or a promotion (only low-precision casts cache)."""
    if isinstance(value, list | tuple):
        return type(value)(_cast(item, dtype) for item in value)
    if _eligible(value) and value.dtype != dtype:
        return value.to(dtype)
    return value


def _fp32(op: torch._ops.OpOverload) -> Callable[..., Any]:
    def kernel(*args: Any, **kwargs: Any) -> Any:
        with torch._C._ExcludeDispatchKeyGuard(_NO_AUTOCAST):
            return op(*_cast(args, torch.float32), **_cast(kwargs, torch.float32))

    return kernel


def _fp32_set_opt_dtype(op: torch._ops.OpOverload) -> Callable[..., Any]:
    """Call with ``dtype=float32`` unless the caller gave one, when the first tensor is eligible."""
    schema = op._schema.arguments
    index = next(i for i, argument in enumerate(schema) if argument.name == "dtype")

    def kernel(*args: Any, **kwargs: Any) -> Any:
        with torch._C._ExcludeDispatchKeyGuard(_NO_AUTOCAST):
            if not _eligible(args[0]):
                return op(*args, **kwargs)
            if schema[index].kwarg_only:
                kwargs = {**kwargs, "dtype": kwargs.get("dtype") or torch.float32}
            else:  # softmax.int / log_softmax.int: dtype is positional, defaults stripped
                filled = [*args, *(a.default_value for a in schema[len(args) : index + 1])]
                filled[index] = filled[index] or torch.float32
                args = tuple(filled)
            return op(*args, **kwargs)

    return kernel


def _fp32_append_dtype(op: torch._ops.OpOverload, target: str) -> Callable[..., Any]:
    redispatch = _op(target)

    def kernel(*args: Any, **kwargs: Any) -> Any:
        with torch._C._ExcludeDispatchKeyGuard(_NO_AUTOCAST):
            dtype = torch.float32 if _eligible(args[0]) else args[0].dtype
            return redispatch(*args, **kwargs, dtype=dtype)

    return kernel


def _promote(op: torch._ops.OpOverload, low: torch.dtype) -> Callable[..., Any]:
    """Cast every eligible tensor to the widest of their dtypes and the low dtype."""

    def kernel(*args: Any, **kwargs: Any) -> Any:
        with torch._C._ExcludeDispatchKeyGuard(_NO_AUTOCAST):
            widest = low
            flat, _ = torch.utils._pytree.tree_flatten((args, kwargs))
            for value in flat:
                if _eligible(value):
                    widest = torch.promote_types(widest, value.dtype)
            return op(*_cast(args, widest), **_cast(kwargs, widest))

    return kernel


def _kernels(low: torch.dtype) -> dict[str, Callable[..., Any]]:
    kernels = {name: _fp32(_op(name)) for name in FP32}
    kernels.update({name: _fp32_set_opt_dtype(_op(name)) for name in FP32_SET_OPT_DTYPE})
    kernels.update({n: _fp32_append_dtype(_op(n), t) for n, t in FP32_APPEND_DTYPE.items()})
    kernels.update({name: _promote(_op(name), low) for name in PROMOTE})
    return kernels


@contextmanager
def cuda_autocast_rules(low: torch.dtype = torch.float16) -> Iterator[list[str]]:
    """While entered, CPU autocast casts as CUDA autocast does; yields the ops it took over.

    ``low`` is the autocast dtype (promotion starts from it). The registrations are
    process-wide: nothing else should use CPU autocast meanwhile.
    """
    library = torch.library.Library("aten", "IMPL")
    taken = []
    try:
        for name, kernel in _kernels(low).items():
            if not torch._C._dispatch_has_kernel_for_dispatch_key(f"aten::{name}", "AutocastCPU"):
                library.impl(name, kernel, "AutocastCPU")
                taken.append(name)
        yield taken
    finally:
        library._destroy()
