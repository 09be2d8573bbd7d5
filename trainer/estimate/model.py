"""A training step's device memory and FLOPs from its config alone: no torch, milliseconds.

The API answers "will it fit" with :func:`estimate_footprint` at submit time; the trace
(:mod:`trainer.estimate.trace`, torch, up to a minute) is what it is checked against
(``bench/memory_model.py``, ``tests/trainer/test_memory_model.py``, docs/estimates.md).

Built physically, in bytes per parameter times parameter counts (from the model's own
configs: :mod:`trainer.estimate.architecture`) and, for activations, a walk over the UNet's
blocks (:mod:`trainer.estimate.walk`) whose bytes per feature-map element are fitted to
traces (:mod:`trainer.estimate.coefficients`). What sits on the device follows
``trainer.placement.Offload``: the VAE leaves once latents are cached, the frozen encoders
once their outputs are cached (the cache itself is host memory or disk). Until then the
caching phases hold them (:mod:`trainer.estimate.phases`): the peak is the largest phase's.
The network's tensors are each ``LoRA_type``'s own (:mod:`trainer.estimate.networks`).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace

from trainer.config import TrainingConfig
from trainer.estimate.allowances import allowances
from trainer.estimate.architecture import Architecture
from trainer.estimate.flops import step_flops
from trainer.estimate.networks import Tensor, lora_kinds_of, network_tensors
from trainer.estimate.paths import Step, unet_paths
from trainer.estimate.phases import (
    CACHING_LATENTS,
    STEP,
    caching_phases,
    latent_caching_bytes,
    text_caching_bytes,
)
from trainer.estimate.rebuilt import rebuilt_weights
from trainer.estimate.walk import Moment, moments

PARTS = ("weights", "lora", "gradients", "optimizer", "activations", "temporaries")
ALLOWANCES = ("workspace", "allocator", "cuda_context")
CHUNK = 75  # tokens per 77-position encoder sequence (trainer/models/text.py)


@dataclass(frozen=True)
class Footprint:
    """Device bytes of a training step at its peak, by part, and its FLOPs."""

    parts: dict[str, int]  # the six PARTS, then workspace, allocator, cuda_context
    peak_bytes: int  # the first six: what torch.cuda.max_memory_allocated reports
    device_bytes: int  # peak_bytes and the three allowances (trainer/estimate/allowances.py)
    step_flops: int  # one optimizer step: every gradient-accumulation micro-step
    # The phase whose peak ``parts`` are ("step", "caching_latents", "caching_text"), and
    # the six PARTS of each phase the run goes through (trainer/estimate/phases.py).
    phase: str = STEP
    phases: dict[str, dict[str, int]] = field(default_factory=dict)

    def at(self, phase: str) -> Footprint:
        """The footprint of ``phase`` alone (what a trace of that phase is compared with)."""
        parts = dict(self.phases[phase])
        peak = sum(parts.values())
        parts.update(allowances(peak))
        device = peak + sum(parts[name] for name in ALLOWANCES)
        return replace(self, parts=parts, peak_bytes=peak, device_bytes=device, phase=phase)


def step_of(config: TrainingConfig, arch: Architecture, bucket: tuple[int, int] | None) -> Step:
    """The shapes and switches of ``config``'s micro-step at ``bucket`` (width, height)."""
    width, height = bucket or config.resolution
    scale = arch.vae.downscale
    autocast = config.mixed_precision in ("fp16", "bf16")
    return Step(
        batch=config.train_batch_size,
        latent_hw=(height // scale, width // scale),
        image_hw=(height, width),
        context=config.max_token_length + 2,
        chunks=max(1, config.max_token_length // CHUNK),
        rank=config.network_dim,
        conv_rank=config.conv_dim,
        lora_kinds=lora_kinds_of(config),
        unet=config.train_unet,
        text=config.train_text_encoder,
        checkpointing=config.gradient_checkpointing,
        latents_cached=config.cache_latents,
        text_cached=config.cache_text_encoder_outputs,
        act_bytes=2 if autocast else 4,
        autocast=autocast,
    )


def _frozen_bytes(config: TrainingConfig) -> int:
    """Bytes of a frozen UNet / encoder element (``trainer.run.prepare_model``)."""
    return 2 if config.mixed_precision in ("fp16", "bf16") else 4


def _fp8_savings(arch: Architecture, on_device: list[str], dtype_bytes: int) -> int:
    """``fp8_base`` (``trainer.models.fp8``): every Linear / Conv2d weight and bias of the
    UNet and the encoders is stored in one byte instead of ``dtype_bytes``; norms and the
    encoders' embeddings keep the compute dtype (diffusers' layerwise-casting skips)."""
    layers = [layer for block in arch.unet.blocks for layer in block.layers]
    layers += list(arch.unet.embedding_layers)
    saved = sum(layer.parameters for layer in layers)
    for name, encoder in zip(("text_encoder", "text_encoder_2"), arch.text_encoders, strict=True):
        if name in on_device:
            per_layer = sum(layer.parameters for layer in encoder.layer_shapes())
            saved += encoder.layers * per_layer + encoder.projection * encoder.hidden
    return saved * (dtype_bytes - 1)


def weight_bytes(
    config: TrainingConfig,
    arch: Architecture,
    *,
    encoders: bool | None = None,
    vae: bool | None = None,
) -> int:
    """The frozen networks on the device: the UNet always; during the steps the encoders
    unless their outputs are cached (and they're frozen), the VAE (fp32) unless latents are
    cached (``trainer.placement.Offload``). ``encoders`` / ``vae`` say it for a caching
    phase, before those parts leave (:mod:`trainer.estimate.phases`)."""
    counts = arch.parameter_counts()
    frozen = _frozen_bytes(config)
    if encoders is None:
        encoders = not (config.cache_text_encoder_outputs and not config.train_text_encoder)
    on_device = ["unet"] + (["text_encoder", "text_encoder_2"] if encoders else [])
    total = sum(counts[name] * frozen for name in on_device)
    if encoders:  # each encoder's position_ids buffer (int64)
        total += 8 * sum(encoder.positions for encoder in arch.text_encoders)
    if vae is None:
        vae = not config.cache_latents
    if vae:
        total += counts["vae"] * 4  # the SDXL VAE runs in fp32 (prepare_model)
    if config.fp8_base:  # store_base_in_fp8 runs before caching text (trainer/run.py)
        total -= _fp8_savings(arch, on_device, frozen)
    return total


def lora_weights(tensors: list[Tensor]) -> list[tuple[tuple[int, ...], bool]]:
    """Every trainable network tensor's shape, and whether it starts at zero (peft's up
    weights do, unless ``network_weights`` loads them): :mod:`trainer.estimate.networks`."""
    return [(t.shape, t.zero) for t in tensors if t.trainable for _ in range(t.count)]


# bitsandbytes (bitsandbytes/optim/optimizer.py: Optimizer2State / Optimizer1State.init_state):
# moment count and bits. Paged ones keep each state of 10^5 values or more in CUDA unified
# memory (Optimizer8bit.get_state_buffer: F.get_paged), outside the caching allocator, which
# the driver pages to host memory when the GPU runs short. Counted on the device all the
# same (that is where it lives until the GPU is short), with a note (:func:`memory_notes`).
BITSANDBYTES = {
    "AdamW8bit": (2, 8), "PagedAdamW8bit": (2, 8), "PagedAdamW32bit": (2, 32),
    "Lion8bit": (1, 8), "PagedLion8bit": (1, 8), "SGDNesterov8bit": (1, 8),
}  # fmt: skip
# Tensors like the weight (its dtype) each keeps: torch AdamW exp_avg/exp_avg_sq; lion-pytorch
# exp_avg; torch SGD momentum_buffer; dadaptation's (dadapt_*.py: step(), state init).
LIKE_WEIGHT = {
    "AdamW": 2, "Lion": 1, "SGDNesterov": 1, "DAdaptAdaGrad": 3, "DAdaptAdam": 3,
    "DAdaptation": 3, "DAdaptAdamPreprint": 3, "DAdaptAdan": 5, "DAdaptAdanIP": 5,
    "DAdaptLion": 2, "DAdaptSGD": 3,
}  # fmt: skip
PAGED_FROM = 10**5


def _bitsandbytes_bytes(name: str, n: int, args: dict) -> int:
    """uint8 moments and one fp32 absmax per 256-value block, fp32 moments under
    ``min_8bit_size`` values (or with 32 bits)."""
    states, bits = BITSANDBYTES[name]
    if bits == 32 or n < args.get("min_8bit_size", 4096):
        return states * 4 * n
    return states * (n + 4 * math.ceil(n / 256))


def _state_bytes(config: TrainingConfig, shape: tuple[int, ...], zero: bool) -> int:
    """Optimizer state of one LoRA weight, as its optimizer allocates it on the first step."""
    name, args = config.optimizer, config.optimizer_args
    n = math.prod(shape)
    # The weight's (and its gradient's) dtype: --full_fp16 / --full_bf16 cast the network.
    p = 2 if config.full_bf16 or config.full_fp16 else 4
    if name in BITSANDBYTES:
        return _bitsandbytes_bytes(name, n, args)
    if name == "Adafactor":
        # transformers/optimization.py: Adafactor.step: factored second moments (row and
        # column means) for every weight of two or more dimensions, a first moment with
        # beta1, and the weight's RMS (an fp32 scalar).
        factored = math.prod(shape[:-1]) + math.prod(shape[:-2]) * shape[-1]
        first = n if args.get("beta1") is not None else 0
        return p * (factored + first) + 4
    if name == "Prodigy":
        # prodigyopt/prodigy.py: Prodigy.step: s, p0 (one element for an all-zero weight,
        # as peft's up weights start), exp_avg (when beta1 > 0) and exp_avg_sq.
        beta1 = args.get("betas", (0.9, 0.999))[0]
        return p * (n + (1 if zero else n) + (n if beta1 > 0 else 0) + n)
    # torch's AdamW keeps its step counters on the host unless fused; an optimizer this
    # table doesn't know is counted as AdamW (a test lists every registered one).
    fused = 4 if name == "AdamW" and args.get("fused") else 0
    return p * LIKE_WEIGHT.get(name, 2) * n + fused


def memory_notes(config: TrainingConfig) -> list[str]:
    """What the estimate counts that may behave otherwise on a GPU."""
    notes = []
    if config.optimizer.startswith("Paged"):
        notes.append(
            f"{config.optimizer} keeps its state of {PAGED_FROM:,} values or more per weight in "
            "CUDA unified memory: it is counted on the GPU here, and the driver pages it to "
            "host memory when the GPU runs short (the job slows down rather than running out)"
        )
    return notes


def optimizer_bytes(config: TrainingConfig, weights: list[tuple[tuple[int, ...], bool]]) -> int:
    """The optimizer state of ``weights`` (shape, starts at zero): :func:`lora_weights`."""
    alike = Counter(weights)  # DyLoRA's rows: thousands of one shape
    total = sum(n * _state_bytes(config, shape, zero) for (shape, zero), n in alike.items())
    states, bits = BITSANDBYTES.get(config.optimizer, (0, 32))
    if bits == 8:  # its quantile maps, 256 fp32 each, shared by every 8-bit state
        total += 4 * 256 * states
    return total


def _lora_by_block(
    config: TrainingConfig, arch: Architecture, tensors: list[Tensor]
) -> tuple[int, dict[str, int]]:
    """All network bytes (on the device from the start), and the trainable ones' of each
    UNet block ("text" for the encoders'), whose gradients backward writes there."""
    p = 2 if config.full_bf16 or config.full_fp16 else 4
    block_of = {layer.name: block.name for block in arch.unet.blocks for layer in block.layers}
    total = 0
    by_block: dict[str, int] = {}
    for tensor in tensors:
        total += p * tensor.numel
        if tensor.trainable:
            key = block_of.get(tensor.layer, "text") if tensor.part == "unet" else "text"
            by_block[key] = by_block.get(key, 0) + p * tensor.numel
    return total, by_block


def _optimizer_moment(config: TrainingConfig, lora: int) -> Moment:
    """The optimizer step: all gradients, and the one temporary the size of all weights that
    torch's foreach updates make on a GPU (``torch/optim/adamw.py: _multi_tensor_adamw``:
    ``torch._foreach_sqrt`` of the second moments; ``sgd.py: _multi_tensor_sgd``: the
    Nesterov step); bitsandbytes updates in place, the others go weight by weight."""
    temporaries = lora if config.optimizer in ("AdamW", "SGDNesterov") else 0
    return Moment(0.0, float(temporaries), float(lora))


def _fp8_copies(arch: Architecture, step: Step, config: TrainingConfig) -> int:
    """``fp8_base`` casts each frozen layer's weight to the compute dtype for its forward;
    autograd keeps that copy for the backward of every recorded layer that isn't recomputed
    (all of them without checkpointing; with it, those outside the checkpoints). Counted for
    the whole forward: an upper bound, as the trace can't run fp8 (trainer/estimate/fake.py)."""
    if not config.fp8_base:
        return 0
    total = 0
    for path in unet_paths(arch.unet, step):
        if not path.recorded:
            continue
        layers = path.block.layers
        if step.checkpointing and path.block.checkpointed:  # only the projections stay
            layers = tuple(
                layer for layer in layers if layer.name.endswith(("proj_in", "proj_out"))
            )
        total += sum(layer.parameters for layer in layers)
    if step.text and not step.checkpointing:
        total += sum(
            encoder.layers * sum(layer.parameters for layer in encoder.layer_shapes())
            for encoder in arch.text_encoders
        )
    return total * step.act_bytes


def mask_bytes(config: TrainingConfig, step: Step) -> int:
    """``masked_loss``: the batch's (B, 1, h, w) fp32 mask, area-averaged to the latents on the
    host and then moved (trainer/loss.py: apply_mask); autograd keeps it for the backward
    of ``loss * mask``, so it is there at the peak. The masked product itself is freed once
    the mean is taken (the mean's backward needs only its shape)."""
    if not config.masked_loss:
        return 0
    return step.batch * step.latent_hw[0] * step.latent_hw[1] * 4


def estimate_footprint(
    config: TrainingConfig,
    arch: Architecture,
    *,
    bucket: tuple[int, int] | None = None,
    cached_text_items: int = 0,
) -> Footprint:
    """Device memory at the peak of one training step of ``config`` on ``arch``, and the
    FLOPs of one optimizer step.

    ``bucket``: the plan's largest bucket (width, height), by default the config's
    resolution. ``cached_text_items``: images whose text-encoder outputs are cached; they
    live in host memory or on disk (``trainer.data.text_cache``), so they add nothing here,
    only each batch's copy does (counted with the activations)."""
    if cached_text_items < 0:
        raise ValueError("cached_text_items must not be negative")
    step = step_of(config, arch, bucket)
    tensors = network_tensors(config, arch)
    lora, by_block = _lora_by_block(config, arch, tensors)
    accumulating = config.gradient_accumulation_steps > 1
    candidates = list(moments(arch, step, by_block, accumulating))
    candidates.append(_optimizer_moment(config, sum(by_block.values())))
    peak = max(candidates, key=lambda moment: moment.total)
    phases = {
        STEP: {
            "weights": weight_bytes(config, arch),
            "lora": lora,
            "gradients": round(peak.gradients),
            "optimizer": optimizer_bytes(config, lora_weights(tensors)),
            "activations": round(peak.activations)
            + _fp8_copies(arch, step, config)
            + rebuilt_weights(config, arch, step, tensors)
            + mask_bytes(config, step),
            "temporaries": round(peak.temporaries),
        }
    }
    for name in caching_phases(config, step):
        phases[name] = _caching_parts(name, config, arch, step, lora)
    # On a tie the step is named (it comes first here): it is the phase a user tunes.
    phase = max(phases, key=lambda name: sum(phases[name].values()))
    parts = dict(phases[phase])
    peak_bytes = sum(parts.values())
    parts.update(allowances(peak_bytes))
    return Footprint(
        parts=parts,
        peak_bytes=peak_bytes,
        device_bytes=peak_bytes + sum(parts[name] for name in ALLOWANCES),
        step_flops=step_flops(arch, step, config.gradient_accumulation_steps),
        phase=phase,
        phases=phases,
    )


def _caching_parts(
    name: str, config: TrainingConfig, arch: Architecture, step: Step, lora: int
) -> dict[str, int]:
    """A caching phase's six parts: the frozen parts on the device at that moment, no
    gradients nor optimizer state yet, and the encoding's high
    (:mod:`trainer.estimate.phases`). Latents are cached by the fp32 VAE alone, before the
    UNet, the encoders and the network reach the device; text by the encoders, with the
    UNet and the network already there."""
    if name == CACHING_LATENTS:
        vae = arch.parameter_counts()["vae"] * 4  # fp32 (prepare_model)
        high = latent_caching_bytes(config, arch, step)
        return {"weights": vae, "lora": 0, "gradients": 0, "optimizer": 0,
                "activations": high, "temporaries": 0}  # fmt: skip
    weights = weight_bytes(config, arch, encoders=True, vae=not config.cache_latents)
    return {"weights": weights, "lora": lora, "gradients": 0, "optimizer": 0,
            "activations": text_caching_bytes(arch, step), "temporaries": 0}  # fmt: skip
