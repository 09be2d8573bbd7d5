"""FLOPs of one optimizer step, counted as ``torch.utils.flop_counter.FlopCounterMode`` counts
them (the trace's counter): matmuls, convolutions and attention, 2 per multiply-add.

From ``torch/utils/flop_counter.py``: a Linear over ``n`` rows is ``2·n·in·out``; a conv
``2·out positions·k²·in·out`` (``conv_flop_count``), its backward the same again for each of
grad-input and grad-weight that is asked for (``conv_backward_flop``'s ``output_mask``);
scaled-dot-product attention ``4·b·h·s_q·s_k·d`` forward (``sdpa_flop_count``) and
``10·b·h·s_q·s_k·d`` backward (``sdpa_backward_flop_count``: the scores are recomputed).
Autograd runs a matmul's backward only for inputs that require grad
(:mod:`trainer.estimate.paths`): frozen weights get no grad-weight matmul, a frozen layer
whose input doesn't require grad no grad-input matmul. Gradient checkpointing runs the
forward of every checkpointed block on the backward path once more: diffusers checkpoints
each ``ResnetBlock2D`` and ``BasicTransformerBlock``, transformers each ``CLIPEncoderLayer``.
"""

from __future__ import annotations

from trainer.estimate.architecture import Architecture, Block, Layer, TextEncoder
from trainer.estimate.paths import BlockPath, Step, unet_paths

CLIP = 77  # positions of one encoder sequence


def _rows(layer: Layer, block: Block, step: Step) -> int:
    """Rows (batch × positions) the layer multiplies."""
    if layer.reads == "context":
        return step.batch * step.context
    if layer.reads == "temb":
        return step.batch
    return step.batch * step.positions(block.level)


def _matmul(rows: int, layer: Layer) -> int:
    return 2 * rows * layer.fan_in * layer.kernel**2 * layer.out


def _lora(rows: int, layer: Layer, rank: int) -> int:
    """peft's down (``fan_in·k² → rank``) and up (``rank → out``, 1×1) products."""
    return 2 * rows * rank * (layer.fan_in * layer.kernel**2 + layer.out)


def _attention(block: Block, step: Step) -> int:
    """Forward FLOPs of a transformer's attentions, self over the map and cross over the
    text, in each of its blocks (``heads × head_dim = channels``)."""
    if block.kind != "transformer":
        return 0
    n = step.positions(block.level)
    return 4 * step.batch * n * (n + step.context) * block.out_channels * block.depth


def _tail(layer: Layer, rows: int, rank: int) -> int:
    """Forward FLOPs of a checkpointed block that its recomputation skips: autograd saves an
    op's inputs before running it, so recomputing stops just before the op that saves the
    last tensor backward needs, the block's last matmul (peft runs the base layer, then
    ``lora_A``, then ``lora_B``, which saves ``lora_A``'s output)."""
    return 2 * rows * rank * layer.out if rank else _matmul(rows, layer)


def _block_flops(path: BlockPath, step: Step) -> int:
    """Forward, backward and (checkpointing) recomputed FLOPs of one UNet block."""
    block = path.block
    forward = _attention(block, step)
    backward = int(2.5 * forward) if path.recorded else 0
    for layer in block.layers:
        rows = _rows(layer, block, step)
        rank = step.lora_rank(layer) if path.trained else 0
        forward += _matmul(rows, layer) + _lora(rows, layer, rank)
        if path.recorded and path.layer_input_grad(layer):
            backward += _matmul(rows, layer)  # grad-input through the frozen weight
        if rank:
            up = 2 * rows * rank * layer.out
            down = 2 * rows * rank * layer.fan_in * layer.kernel**2
            # up: grad-weight and grad-input; down: grad-weight, grad-input if asked.
            backward += 2 * up + down * (2 if path.layer_input_grad(layer) else 1)
    recomputed = 0
    if step.checkpointing and path.recorded and block.checkpointed:
        recomputed = forward - _not_recomputed(block, step, path.trained)
    return forward + backward + recomputed


def _not_recomputed(block: Block, step: Step, trained: bool) -> int:
    """Forward FLOPs a checkpoint's recomputation leaves out. Non-reentrant checkpointing
    (``torch/utils/checkpoint.py``, early stop) recomputes a block only up to the last
    tensor its backward needs: the input of a resnet's last conv (``conv2``, or
    ``conv_shortcut`` where it has one) or of a transformer block's ``ff.net.2``. A
    transformer's ``proj_in`` and ``proj_out`` run outside its blocks' checkpoints."""
    rows = step.batch * step.positions(block.level)
    last = block.layers[-1] if block.kind == "resnet" else block.layers[-2]  # ff.net.2
    rank = step.lora_rank(last) if trained else 0
    if block.kind == "resnet":
        return _tail(last, rows, rank)
    ends = [layer for layer in block.layers if layer.name.endswith(("proj_in", "proj_out"))]
    outside = sum(
        _matmul(rows, layer) + _lora(rows, layer, step.lora_rank(layer) if trained else 0)
        for layer in ends
    )
    return outside + block.depth * _tail(last, rows, rank)


def _encoder_flops(encoder: TextEncoder, step: Step, used_layers: int) -> int:
    """One text encoder on ``batch × chunks`` sequences; trained: backward through the
    ``used_layers`` whose output reaches the UNet, recomputed when checkpointed."""
    rows = step.batch * step.chunks * CLIP
    layers = encoder.layer_shapes()
    attention = 4 * step.batch * step.chunks * CLIP * CLIP * encoder.hidden
    forward = attention + sum(_matmul(rows, layer) for layer in layers)
    projection = 2 * step.batch * step.chunks * encoder.hidden * encoder.projection
    total = encoder.layers * forward + projection
    if not step.text:
        return total
    lora = sum(_lora(rows, layer, step.rank) for layer in layers)
    grads = sum(2 * rows * step.rank * (2 * layer.out + 2 * layer.fan_in) for layer in layers)
    backward = int(2.5 * attention) + sum(_matmul(rows, layer) for layer in layers) + grads
    # The first layer's q/k/v read the embeddings, which don't require grad.
    first = sum(_matmul(rows, layer) + 2 * rows * step.rank * layer.fan_in for layer in layers[:3])
    recomputed = (forward + lora) * used_layers if step.checkpointing else 0
    return total + encoder.layers * lora + used_layers * backward - first + recomputed


def _vae_encode_flops(arch: Architecture, step: Step) -> int:
    """The VAE encoder's forward (``no_grad``) on the batch's pixels."""
    total = 0
    for block in arch.vae.encoder:
        rows = step.batch * step.image_positions(block.level)
        total += sum(_matmul(rows, layer) for layer in block.layers)
        if block.kind == "attention":
            n = step.image_positions(block.level)
            total += 4 * step.batch * n * n * block.out_channels
    return total


def step_flops(arch: Architecture, step: Step, micro_steps: int) -> int:
    """FLOPs of one optimizer step: ``micro_steps`` forward/backward passes of a batch."""
    unet = sum(_block_flops(path, step) for path in unet_paths(arch.unet, step))
    unet += sum(_matmul(step.batch, layer) for layer in arch.unet.embedding_layers)
    text = 0
    if not step.text_cached:
        te1, te2 = arch.text_encoders
        # The UNet reads text encoder 1's penultimate layer (its last one runs, unused) and
        # text encoder 2's pooled projection, through all of its layers.
        text = _encoder_flops(te1, step, te1.layers - 1) + _encoder_flops(te2, step, te2.layers)
    vae = 0 if step.latents_cached else _vae_encode_flops(arch, step)
    return micro_steps * (unet + text + vae)
