"""What the trace runs under: a memory tracker and a FLOP counter fit for a full SDXL step,
and stand-in scalars for the few values the step reads.

``MemTracker`` (``torch/distributed/_tools/mem_tracker.py``) follows every tensor's
storage and files it as parameter, buffer, gradient, activation, temporary or optimizer
state. As shipped it cannot trace this step: ``_track_module_params_and_buffers``
registers a gradient hook on every parameter (``register_hook`` raises on a frozen one)
and ``_update_peak_stats`` walks every module it has seen after every op to keep
per-module peaks (Python work of the order of 6,000 modules times 200,000 ops for SDXL
with LoRA). :class:`StepTracker` hooks only trainable parameters, walks a module's
parameters once, and keeps only the global peak, which is all the estimate reads.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch.distributed._tools.mem_tracker import MemTracker, _MemRefType
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map_only
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

TOTAL = "Total"  # mem_tracker's _TOTAL_KEY
ITEM = torch.ops.aten._local_scalar_dense.default  # what Tensor.item() dispatches


def stand_in(tensor: torch.Tensor) -> bool | int | float:
    """The value a fake tensor's ``item()`` reads as (see :class:`StandInScalars`)."""
    if tensor.dtype == torch.bool:
        return True
    return 1.0 if tensor.dtype.is_floating_point else 1


class StepTracker(MemTracker):
    """``MemTracker`` that skips frozen parameters' hooks and per-module peaks."""

    def __init__(self) -> None:
        super().__init__()
        self._walked: dict[tuple[int, bool], tuple[int, int]] = {}  # (module, hooks) -> bytes
        self._hooked: set[int] = set()  # ids of trainable parameters with gradient hooks

    def _track_module_params_and_buffers(
        self, module: torch.nn.Module, install_grad_hooks: bool = True
    ) -> tuple[int, int]:
        known = self._walked.get((id(module), install_grad_hooks))
        if known is not None:
            return known
        parameter_bytes = buffer_bytes = 0
        for parameter in module.parameters():
            infos = self._update_and_maybe_create_winfos(parameter, _MemRefType.PARAM)
            parameter_bytes += sum(info.mem_consumed for info in infos)
            if parameter.grad is not None:
                self._update_and_maybe_create_winfos(parameter.grad, _MemRefType.GRAD)
            if install_grad_hooks and parameter.requires_grad:
                self._hook(parameter)
        for buffer in module.buffers():
            infos = self._update_and_maybe_create_winfos(buffer, _MemRefType.BUFFER)
            buffer_bytes += sum(info.mem_consumed for info in infos)
        self._walked[(id(module), install_grad_hooks)] = (parameter_bytes, buffer_bytes)
        return parameter_bytes, buffer_bytes

    def _hook(self, parameter: torch.nn.Parameter) -> None:
        if id(parameter) in self._hooked:
            return
        self._hooked.add(id(parameter))

        def as_gradient(grad: torch.Tensor) -> None:
            self._update_and_maybe_create_winfos(grad, _MemRefType.GRAD)

        self._param_to_grad_hook_handles[parameter] = (
            parameter.register_hook(as_gradient),
            parameter.register_post_accumulate_grad_hook(lambda p: as_gradient(p.grad)),
        )

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        # MemTracker's, less what one fake device never meets (DTensor, collectives, a
        # nested fake mode), and answering item() as StandInScalars does: one mode less.
        if func is ITEM:
            return stand_in(args[0])
        out = func(*args, **(kwargs or {}))
        if self._in_opt:
            reftype = _MemRefType.OPT
        elif self._mod_tracker.is_bw and not self._in_ac:
            reftype = _MemRefType.TEMP  # backward's own tensors (not a recomputation)
        else:
            reftype = _MemRefType.ACT
        if isinstance(out, torch.Tensor):
            self._track(reftype, out)
        else:
            tree_map_only(torch.Tensor, partial(self._track, reftype), out)
        self._update_peak_stats(None)
        return out

    def _update_peak_stats(self, peak_state: Any) -> None:
        for device, snapshot in self._curr_mem_snap.items():
            if self._peak_mem.get(device, 0) < snapshot[TOTAL]:
                self._peak_mem[device] = snapshot[TOTAL]
                self._peak_mem_snap[device] = dict(snapshot)

    def peak(self) -> dict[str, int]:
        """Bytes by ``_MemRefType`` value ("Parameter", "Activation", ...) at the peak."""
        snapshot = next(iter(self._peak_mem_snap.values()), {})
        return {getattr(key, "value", key): value for key, value in snapshot.items()}


class StandInScalars(TorchDispatchMode):
    """Answer ``Tensor.item()`` on fake tensors with a stand-in (True, 1, 1.0).

    A fake tensor has no value, so FakeTensorMode refuses ``item()``; the step reads a few
    (the random noise-offset strength in ``trainer.loss.offset_noise``, ``isfinite`` of the
    loss in the loop, Adafactor's RMS). None of them changes a tensor's shape, so the trace's
    memory and FLOPs don't depend on the value.
    """

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is ITEM:
            return stand_in(args[0])
        return func(*args, **(kwargs or {}))


def _cpu_sdpa(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# On CPU tensors SDPA dispatches to _scaled_dot_product_flash_attention_for_cpu, which
# torch/utils/flop_counter.py has no formula for (it counts the CUDA kernels): count it as
# the flash kernel a GPU runs, with the same shapes.
CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward,
}


class _GlobalOnly:
    """Stands in for FlopCounterMode's ModuleTracker: every FLOP is the "Global" module's."""

    parents = frozenset({"Global"})

    def __enter__(self) -> _GlobalOnly:
        return self

    def __exit__(self, *args: object) -> None:
        return None


class StepFlops(FlopCounterMode):
    """``FlopCounterMode`` without its per-module breakdown, which would keep tensors alive.

    Its ``ModuleTracker`` (``torch/utils/module_tracker.py``) keeps a handle to a gradient
    hook on the outputs of every module call until it exits; for the modules that
    checkpointing recomputes during backward, those handles keep the recomputed graph, and
    every tensor it saved, alive to the end of the step (a full SDXL step would count
    gigabytes of activations that a GPU frees). Only the total is read here.
    """

    def __init__(self) -> None:
        super().__init__(display=False, custom_mapping=CPU_ATTENTION_FLOPS)
        self.mod_tracker = _GlobalOnly()  # type: ignore[assignment]
