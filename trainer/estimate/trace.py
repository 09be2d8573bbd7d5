"""Trace one training step at full SDXL size on a CPU: peak memory by part and FLOPs.

    python -m trainer.estimate.trace --payload tests/data/pdxl-kohya-config.json

:func:`trace_step` runs lorabox's own step (``trainer.step.training_loss``, the loss's
``backward()`` and ``trainer.loop.optimizer_step``, in ``train_epoch``'s order) on fake
tensors: every op computes its output's shape and dtype and nothing else, so the full
3.5-billion-parameter SDXL needs no weights and no memory. Three modes watch it:

- :class:`~trainer.estimate.tracker.StepTracker` files each tensor alive at the peak as
  weights, LoRA, gradients, optimizer state, activations (forward and recomputed) or
  temporaries (backward's own tensors);
- :class:`~trainer.estimate.tracker.StepFlops` (``torch.utils.flop_counter.FlopCounterMode``)
  counts the FLOPs (checkpointing's recomputation included);
- :func:`~trainer.estimate.autocast.cuda_autocast_rules` makes CPU autocast cast as CUDA
  autocast does, so each saved tensor has the dtype, hence the size, it has on a GPU.

What the trace assumes:

- The peak of a steady step: the optimizer already holds its state (sized by its own first
  step, or by bitsandbytes' ``init_state``: its 8-bit kernels can't run on fake tensors,
  and they update in place, so the trace skips only that update); with gradient
  accumulation the gradients already exist.
- Caching as the config says, and on the device only what the trainer keeps there during
  the steps (``trainer.placement.Offload``, the decision ``build_session`` applies). With
  ``cache_latents`` the step reads cached latents and the VAE waits on the host: not
  counted; without it the VAE is on the device and encodes the batch (under ``no_grad``).
  With ``cache_text_encoder_outputs`` (frozen encoders) the encoders wait on the host and the
  cache lives there or on disk: not counted either. Both caches are host memory; what counts
  is each batch's copy on the device.
- One batch of ``train_batch_size`` images at the config's resolution, its largest bucket.
- Not traced: sampling (which brings the VAE and the encoders back for its own duration)
  and saving between steps, ``fp8_base``. Allocator rounding and fragmentation, library
  workspaces and the CUDA context are the allowances of :mod:`trainer.estimate.allowances`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from unittest import mock

import torch
from diffusers.utils import logging as diffusers_logging
from torch._subclasses.fake_tensor import FakeTensorMode

from trainer.config import TrainingConfig, parse_payload
from trainer.estimate.allowances import allowances
from trainer.estimate.autocast import cuda_autocast_rules
from trainer.estimate.fake import FakeRun, fake_run, prepared_meta_model
from trainer.estimate.tracker import StandInScalars, StepFlops, StepTracker
from trainer.loop import optimizer_step
from trainer.models.configs import SDXL_BASE_CONFIG
from trainer.placement import Offload
from trainer.run import PRECISION_DTYPES
from trainer.session import Session
from trainer.step import training_loss

PARTS = ("weights", "lora", "gradients", "optimizer", "activations", "temporaries")
GIB = 2**30


@dataclass(frozen=True)
class StepTrace:
    """Bytes alive at the step's peak, by part; ``peak_bytes`` is their sum (what
    ``torch.cuda.max_memory_allocated`` would report), ``allowances`` what it can't see."""

    parts: dict[str, int]
    peak_bytes: int
    step_flops: int
    seconds: float
    allowances: dict[str, int] = field(default_factory=dict)

    @property
    def device_bytes(self) -> int:
        """What the job needs of a GPU: the traced peak plus the allowances."""
        return self.peak_bytes + sum(self.allowances.values())


def trace_step(config: TrainingConfig, *, base: str | Path = "full") -> StepTrace:
    """Trace one step of ``config`` on SDXL built from ``base``: "full" (the shipped SDXL
    base configs) or a diffusers config folder (``unet/config.json``, ...)."""
    started = time.perf_counter()
    config_dir = SDXL_BASE_CONFIG if base == "full" else Path(base)
    low = PRECISION_DTYPES.get(config.mixed_precision, torch.float16)
    meta = prepared_meta_model(config, config_dir)
    with (
        tempfile.TemporaryDirectory(prefix="lorabox-trace-") as workdir,
        FakeTensorMode(allow_non_fake_inputs=True),
        cuda_autocast_rules(low),
        warnings.catch_warnings(),
    ):
        # LambdaLR warns that optimizer.step was replaced: the trace's own stand-in for
        # bitsandbytes' update (see settle_optimizer).
        warnings.filterwarnings("ignore", "Seems like `optimizer.step", UserWarning)
        with StandInScalars():  # the step's tracker answers item() itself
            run = fake_run(config, meta, Path(workdir))
            in_place = settle_optimizer(run.session)
        peak, flops = _traced_step(run, in_place)
    lora = sum(p.numel() * p.element_size() for p in run.session.network.parameters())
    parts = {
        "weights": peak.get("Parameter", 0) + peak.get("Buffer", 0) - lora,
        "lora": lora,
        "gradients": peak.get("Gradient", 0),
        "optimizer": peak.get("Optstate", 0),
        "activations": peak.get("Activation", 0) + peak.get("Other", 0),
        "temporaries": peak.get("Temp", 0),
    }
    total = sum(parts.values())
    assert total == peak.get("Total", 0), (parts, peak)
    seconds = time.perf_counter() - started
    return StepTrace(parts, total, flops, seconds, allowances(total))


def _is_bitsandbytes(optimizer: torch.optim.Optimizer) -> bool:
    return type(optimizer).__module__.startswith("bitsandbytes")


def settle_optimizer(s: Session) -> bool:
    """Give the optimizer the state every step after the first holds; True when its update
    can't run on fake tensors (bitsandbytes), so the trace leaves it out."""
    optimizer = s.optimizer
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    in_place = _is_bitsandbytes(optimizer)
    if in_place:
        # bitsandbytes/optim/optimizer.py: Optimizer2State.init_state, what its step() calls
        # first: 8-bit moments with a float scale per 256-value block, fp32 ones for
        # tensors under min_8bit_size.
        for gindex, group in enumerate(optimizer.param_groups):
            for pindex, parameter in enumerate(group["params"]):
                optimizer.init_state(group, parameter, gindex, pindex)  # type: ignore[attr-defined]
    else:
        for parameter in parameters:
            parameter.grad = torch.zeros_like(parameter)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if s.config.gradient_accumulation_steps > 1:  # a later micro-step finds them allocated
        for parameter in parameters:
            parameter.grad = torch.zeros_like(parameter)
    return in_place


def _traced_step(run: FakeRun, in_place: bool) -> tuple[dict[str, int], int]:
    """``train_epoch``'s micro-step and optimizer step under the tracker and FLOP counter."""
    s = run.session
    tracker = StepTracker()
    model = s.model
    on_host = Offload.for_config(s.config).modules(model)
    parts = (model.unet, model.text_encoder, model.text_encoder_2, model.vae)
    # The caches are host memory: only the batch's copies, made under the tracker, count.
    tracker.track_external(*(p for p in parts if all(p is not h for h in on_host)), s.optimizer)
    counter = StepFlops()
    skip_update: AbstractContextManager[object] = (
        mock.patch.object(s.optimizer, "step", lambda closure=None: None)
        if in_place
        else nullcontext()
    )
    with counter, tracker, skip_update:
        loss = training_loss(s, run.batch)
        s.scaler.scale(loss / s.config.gradient_accumulation_steps).backward()
        optimizer_step(s)
    return tracker.peak(), counter.get_total_flops()


def _table(trace: StepTrace) -> str:
    rows = [(name, trace.parts[name]) for name in PARTS]
    rows.append(("= peak (traced)", trace.peak_bytes))
    rows += [(f"+ {name}", value) for name, value in trace.allowances.items()]
    rows.append(("= device", trace.device_bytes))
    lines = [f"{name:<18}{value / GIB:>9.2f} GiB" for name, value in rows]
    lines.append(f"{'step FLOPs':<18}{trace.step_flops / 1e12:>9.2f} TFLOP")
    lines.append(f"{'trace time':<18}{trace.seconds:>9.1f} s")
    return "\n".join(lines)


def command_line(
    argv: list[str] | None,
    trace: Callable[..., StepTrace],
    *,
    description: str,
    table: bool = True,
) -> None:
    """The trace modules' command line: a payload's trace as a table (``table``) or JSON."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--payload", type=Path, required=True, help="a Kohya_SS GUI JSON payload")
    parser.add_argument("--base", default="full", help='"full" or a diffusers config folder')
    parser.add_argument("--json", action="store_true", help="print the trace as JSON")
    args = parser.parse_args(argv)
    # The set-up's own notices (diffusers' cast advice, transformers' deprecations) would
    # bury the table; the trainer shows them when it trains.
    diffusers_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)
    config = parse_payload(json.loads(args.payload.read_text())).config
    traced = trace(config, base=args.base)
    if args.json or not table:
        print(json.dumps({**asdict(traced), "device_bytes": traced.device_bytes}))
    else:
        print(_table(traced))


def main(argv: list[str] | None = None) -> None:
    command_line(argv, trace_step, description=__doc__.split("\n")[0])


if __name__ == "__main__":
    main()
