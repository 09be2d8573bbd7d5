"""Fitted coefficients of trainer.estimate.walk: generated, not edited.

Written by ``python bench/memory_model.py --fit --write``: each UNet block kind's and text
encoder layer's bytes per feature element (``"quantity.mode.kind"``: see
``trainer.estimate.walk.block_features``), solved by least squares over the blocks of
full-size SDXL traces profiled block by block (``bench/memory_profile.py``, the payloads
of ``bench.memory_model.PROFILES``), torch 2.13 CPU with CUDA autocast emulated,
diffusers 0.42, transformers 5.23, peft 0.21. Re-fit when any of them changes how a step
saves its tensors; docs/estimates.md has the procedure.
"""

from __future__ import annotations

# fmt: off
COEFFICIENTS: dict[str, dict[str, float]] = {
    "alive.ckpt.frozen": {
        "out": -0.072475, "skip": -0.090594,
    },
    "alive.ckpt.resnet": {
        "cat": 0.58071, "in": 0.94075, "in_frozen": 0.74988, "lora": 0.0, "map": 1.0155,
        "rank": 0.021616, "skip": 0.081837, "skip_frozen": 0.1009, "temb": 0.0, "weights":
        0.0,
    },
    "alive.ckpt.text_gelu": {
        "hidden": 1.1798, "rank": 0.0, "weights": 0.0,
    },
    "alive.ckpt.text_quick_gelu": {
        "hidden": 5.2437, "rank": 0.0, "weights": 0.0,
    },
    "alive.ckpt.transformer": {
        "blocks": 1.9083, "context": 0.0016239, "in": 4.1367, "in_frozen": -0.36238, "map":
        4.1316, "rank": 1.1566, "text": 0.12259, "weights": 0.0,
    },
    "alive.frozen.text_gelu": {
        "hidden": 0.0,
    },
    "alive.frozen.text_quick_gelu": {
        "hidden": 0.0,
    },
    "alive.full.conv_out": {
        "in": 4.9267, "map": 394.14,
    },
    "alive.full.downsample": {
        "in": 4.0041, "lora": 5.5297, "map": 4.0041, "weights": 2.0,
    },
    "alive.full.frozen": {
        "out": 0.34029, "skip": 0.31597,
    },
    "alive.full.resnet": {
        "cat": 1.5293, "in": 7.2171, "in_frozen": -4.236, "lora": 3.0133, "map": 11.974,
        "rank": 0.0, "skip": 5.1273, "skip_frozen": 5.6883, "temb": 0.0, "weights": 2.0,
    },
    "alive.full.text_gelu": {
        "hidden": 26.874, "rank": 0.0, "weights": 2.0,
    },
    "alive.full.text_quick_gelu": {
        "hidden": 119.44, "rank": 0.0, "weights": 2.0,
    },
    "alive.full.transformer": {
        "blocks": 68.594, "context": 0.41566, "in": 6.9284, "in_frozen": 4.5273, "map":
        6.9567, "rank": 22.35, "text": 4.516, "weights": 2.0,
    },
    "alive.full.upsample": {
        "in": 1.0002, "lora": 2.0728, "map": 1.0002, "weights": 2.0,
    },
    "bw_act.ckpt.resnet": {
        "cat": -3.0745, "in": 1.4255, "in_frozen": -8.4503, "lora": 9.1547, "map": 17.95,
        "rank": 0.0, "skip": 10.905, "skip_frozen": 11.722, "temb": 2.5601, "weights": 0.0,
    },
    "bw_act.ckpt.text_gelu": {
        "hidden": 75.997, "rank": 13.609, "weights": 2.032,
    },
    "bw_act.ckpt.text_quick_gelu": {
        "hidden": 83.749, "rank": 17.053, "weights": 2.0424,
    },
    "bw_act.ckpt.transformer": {
        "blocks": 0.0, "context": 0.0, "in": 34.23, "in_frozen": 36.458, "map": 67.2,
        "rank": 0.0, "text": 0.0, "weights": 0.0,
    },
    "bw_act.full.conv_out": {
        "in": -0.99902, "map": -79.921,
    },
    "bw_act.full.downsample": {
        "in": -0.76204, "lora": 0.0, "map": -0.76204, "weights": 0.0,
    },
    "bw_act.full.resnet": {
        "cat": -2.5375, "in": 2.4051, "in_frozen": 1.8378, "lora": 0.0, "map": -5.4768,
        "rank": 0.0, "skip": 3.5184, "skip_frozen": 4.2897, "temb": 1.5282, "weights": 0.0,
    },
    "bw_act.full.text_gelu": {
        "hidden": 15.984, "rank": 0.0, "weights": 0.53548,
    },
    "bw_act.full.text_quick_gelu": {
        "hidden": 15.957, "rank": 1.1268, "weights": 0.50486,
    },
    "bw_act.full.transformer": {
        "blocks": 0.0, "context": 0.0005342, "in": -4.2641, "in_frozen": -4.175, "map":
        -5.9319, "rank": 0.0, "text": 0.0, "weights": 0.0,
    },
    "bw_act.full.upsample": {
        "in": -0.92725, "lora": 0.0, "map": -0.92725, "weights": 0.0,
    },
    "bw_temp.ckpt.resnet": {
        "cat": 8.5644, "in": 7.4886, "in_frozen": 7.0028, "lora": 0.0, "map": -9.2665,
        "rank": 0.0, "skip": -17.889, "skip_frozen": -15.825, "temb": 5.3307, "weights":
        0.0,
    },
    "bw_temp.ckpt.transformer": {
        "blocks": 0.31532, "context": 1.4213, "in": 0.65344, "in_frozen": 0.36617, "map":
        0.98457, "rank": 0.0, "text": 0.02665, "weights": 0.019419,
    },
    "bw_temp.full.conv_out": {
        "in": 3.9836, "map": 318.69,
    },
    "bw_temp.full.downsample": {
        "in": 4.0088, "lora": 15.673, "map": 4.0088, "weights": 17.609,
    },
    "bw_temp.full.resnet": {
        "cat": 2.0104, "in": 0.88647, "in_frozen": 1.4068, "lora": 3.0149, "map": 2.2784,
        "rank": 4.1497, "skip": -6.8097, "skip_frozen": -7.1262, "temb": 4.2253, "weights":
        0.0,
    },
    "bw_temp.full.transformer": {
        "blocks": 0.00075509, "context": 0.0, "in": 11.174, "in_frozen": 9.095, "map":
        14.807, "rank": 0.10826, "text": 0.0, "weights": 0.0,
    },
    "bw_temp.full.upsample": {
        "in": 2.4831, "lora": 6.8975, "map": 2.4831, "weights": 30.998,
    },
    "fw.ckpt.frozen": {
        "out": 9.7523, "skip": 0.2474,
    },
    "fw.ckpt.resnet": {
        "cat": 2.1283, "in": 6.5973, "in_frozen": 6.8572, "lora": 0.0, "map": 2.4982,
        "rank": 4.153, "skip": -2.8661, "skip_frozen": -2.3691, "temb": 0.62509, "weights":
        2.4231,
    },
    "fw.ckpt.text_gelu": {
        "hidden": 39.941, "rank": 3.5964, "weights": 1.8907,
    },
    "fw.ckpt.text_quick_gelu": {
        "hidden": 39.824, "rank": 4.8494, "weights": 1.8944,
    },
    "fw.ckpt.transformer": {
        "blocks": 1.9792, "context": 0.0, "in": 22.63, "in_frozen": 18.512, "map": 39.371,
        "rank": 0.82611, "text": 0.016876, "weights": 1.9469,
    },
    "fw.frozen.text_gelu": {
        "hidden": 21.994,
    },
    "fw.frozen.text_quick_gelu": {
        "hidden": 29.975,
    },
    "fw.full.conv_out": {
        "in": 4.0086, "map": 320.69,
    },
    "fw.full.downsample": {
        "in": -0.055383, "lora": 28.363, "map": -0.055383, "weights": 0.0,
    },
    "fw.full.frozen": {
        "out": 3.5201, "skip": -1.4003,
    },
    "fw.full.resnet": {
        "cat": 3.6291, "in": 6.9654, "in_frozen": -2.2673, "lora": 5.1748, "map": 16.196,
        "rank": 16.436, "skip": 0.96242, "skip_frozen": 1.5073, "temb": 1.437, "weights":
        0.0,
    },
    "fw.full.text_gelu": {
        "hidden": 78.029, "rank": 19.185, "weights": 1.9501,
    },
    "fw.full.text_quick_gelu": {
        "hidden": 85.883, "rank": 26.772, "weights": 1.787,
    },
    "fw.full.transformer": {
        "blocks": 69.427, "context": 0.089998, "in": 20.02, "in_frozen": 16.195, "map":
        26.489, "rank": 25.47, "text": 4.9622, "weights": 1.7378,
    },
    "fw.full.upsample": {
        "in": 3.7504, "lora": 5.911, "map": 3.7504, "weights": 26.299,
    },
    "held.ckpt.resnet": {
        "cat": 1.1227, "in": 0.16275, "lora": 0.0, "map": -2.3035, "rank": 0.0, "skip":
        1.9495, "skip_frozen": 0.013071, "temb": 2.2652, "weights": 0.0,
    },
    "held.ckpt.transformer": {
        "blocks": 0.0, "context": 2.1601, "in": -0.0064616, "map": -0.0064616, "rank":
        0.015061, "text": 0.02567, "weights": 0.01242,
    },
    "held.full.conv_out": {
        "in": 1.0064, "map": 80.513,
    },
    "held.full.downsample": {
        "in": -0.64468, "lora": 0.0, "map": -0.64468, "weights": 0.0,
    },
    "held.full.resnet": {
        "cat": 1.9916, "in": 0.096256, "lora": 0.0, "map": -4.0633, "rank": 6.2149, "skip":
        -0.6381, "skip_frozen": 0.036013, "temb": 3.8046, "weights": 0.0,
    },
    "held.full.transformer": {
        "blocks": 0.10419, "context": 0.0, "in": 0.51389, "map": 0.51389, "rank": 0.0,
        "text": 0.0, "weights": 0.0,
    },
    "held.full.upsample": {
        "in": -0.22489, "lora": 2.2305, "map": -0.22489, "weights": 0.0,
    },
    "kept.ckpt.frozen": {
        "out": 1.6043, "skip": 0.38461,
    },
    "kept.ckpt.resnet": {
        "cat": 0.23725, "in": 0.67961, "in_frozen": 1.4738, "lora": 0.0, "map": 1.0169,
        "rank": 0.64496, "skip": 1.0388, "skip_frozen": 1.0088, "temb": 0.067918, "weights":
        2.0,
    },
    "kept.ckpt.text_gelu": {
        "hidden": 1.285, "rank": 0.0, "weights": 2.0,
    },
    "kept.ckpt.text_quick_gelu": {
        "hidden": 5.7112, "rank": 0.0, "weights": 2.0,
    },
    "kept.ckpt.transformer": {
        "blocks": 1.9554, "context": 0.0020456, "in": 4.4517, "in_frozen": 0.59424, "map":
        4.4601, "rank": 1.0311, "text": 0.056745, "weights": 2.0,
    },
    "kept.frozen.text_gelu": {
        "hidden": 0.0,
    },
    "kept.frozen.text_quick_gelu": {
        "hidden": 0.0,
    },
    "kept.full.conv_out": {
        "in": 4.0406, "map": 323.25,
    },
    "kept.full.downsample": {
        "in": 0.81993, "lora": 6.3738, "map": 0.81993, "weights": 2.0,
    },
    "kept.full.frozen": {
        "out": 1.027, "skip": 1.2925,
    },
    "kept.full.resnet": {
        "cat": 0.56676, "in": 7.0198, "in_frozen": -1.5998, "lora": 3.042, "map": 13.055,
        "rank": 0.0, "skip": 5.8557, "skip_frozen": 6.5354, "temb": 0.0, "weights": 2.0,
    },
    "kept.full.text_gelu": {
        "hidden": 26.9, "rank": 0.0, "weights": 2.0,
    },
    "kept.full.text_quick_gelu": {
        "hidden": 119.56, "rank": 0.0, "weights": 2.0,
    },
    "kept.full.transformer": {
        "blocks": 68.656, "context": 0.34434, "in": 7.3527, "in_frozen": 8.9951, "map":
        7.4088, "rank": 22.564, "text": 4.5431, "weights": 2.0,
    },
    "kept.full.upsample": {
        "in": 1.7621, "lora": 2.0399, "map": 1.7621, "weights": 2.0,
    },
}
# fmt: on
# Without autocast (mixed_precision "no"): the profiled fp32 step's bytes over the fp16 fit's,
# for activations (autocast's fp32 copies vanish, the rest doubles) and temporaries.
FP32_ACTIVATIONS = 1.4964
FP32_TEMPORARIES = 1.9685
# The VAE encoding a batch (latents not cached): bytes at its high, per element of its first
# level's feature map (batch x pixels x first channels; fp32, under no autograd).
VAE_ENCODE = 20.0957
