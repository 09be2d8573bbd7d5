"""The weight differences LyCORIS modules rebuild in every forward pass, and autograd keeps.

Outside ``bypass_mode``, each lycoris-lora module's ``forward`` (``lycoris/modules/*.py``:
``LoConModule.forward``, ``IA3Module.forward``, ...) builds its layer's whole weight
difference from its own tensors and runs the layer's op on it (``self.op(x, diff_weight)``),
cast to the base weight's dtype: autograd keeps that weight-sized tensor for the backward
pass. So a LyCORIS step holds, beside the walk's activations, a copy of every targeted
weight it has run and not yet gone back through: all of them without gradient checkpointing;
with it, those of the layers outside the checkpoints (a transformer's ``proj_in`` /
``proj_out``, the mid block's first resnet); a checkpointed block's own copies live only
while it is recomputed and run backward, a moment that holds far less than the peak.
``bypass_mode`` (LoCon, LoHa, LoKr: ``bypass_forward``) runs the factors on the input
instead and keeps no such copy.

Counted for the whole forward, like ``fp8_base``'s copies (:mod:`trainer.estimate.model`):
an upper bound. Traced on LyCORIS/LoCon (``conv_dim`` 0; docs/estimates.md, "Network
types"): at ``small`` (UNet only, 512², batch 1, rank 8, no checkpointing) 10.35 GiB against
6.85 with ``bypass_mode`` (1.7 bytes per targeted weight value at the peak, where this counts
2; backward has freed some); at ``small_checkpointing`` 5.05 GiB, as much as Standard's.
"""

from __future__ import annotations

from trainer.config import TrainingConfig
from trainer.estimate.architecture import Architecture, Layer
from trainer.estimate.networks import Tensor
from trainer.estimate.paths import Step, unet_paths
from trainer.lora.gui_args import LYCORIS_ALGOS

BYPASSED = ("locon", "loha", "lokr")  # the algorithms with a bypass_forward
OUTSIDE_CHECKPOINT = ("proj_in", "proj_out")


def _values(layers: list[Layer]) -> int:
    return sum(layer.fan_in * layer.out * layer.kernel**2 for layer in layers)


def rebuilt_weights(
    config: TrainingConfig, arch: Architecture, step: Step, tensors: list[Tensor]
) -> int:
    """Bytes of the rebuilt weight differences autograd holds at the step's forward end."""
    algo = LYCORIS_ALGOS.get(config.lora_type)
    if algo is None or (config.bypass_mode and algo in BYPASSED):
        return 0
    targeted = {t.layer for t in tensors if t.part == "unet"}
    kept = 0
    for path in unet_paths(arch.unet, step):
        if not path.recorded:
            continue
        layers = [layer for layer in path.block.layers if layer.name in targeted]
        if step.checkpointing and path.block.checkpointed:
            layers = [layer for layer in layers if layer.name.endswith(OUTSIDE_CHECKPOINT)]
        kept += _values(layers)
    text = step.text and any(t.part == "textencoder" for t in tensors)
    if text and not step.checkpointing:  # each encoder layer is a checkpoint of its own
        kept += sum(e.layers * _values(list(e.layer_shapes())) for e in arch.text_encoders)
    return kept * step.act_bytes
