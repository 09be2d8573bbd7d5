"""What kohya_ss hands sd-scripts for each network type: the module and its ``network_args``.

Sources: ``kohya_gui/lora_gui.py: train_model`` (kohya_ss v24.1.7) builds
``network_module`` and the ``network_args`` text per ``LoRA_type``, and writes
``network_args = str(network_args).replace('"', "").split()``; sd-scripts
``train_network.py: NetworkTrainer.train`` turns each item into ``key=value``
strings (``net_arg.split("=")``), adds ``dropout`` = ``network_dropout`` when the
items have none ("workaround for LyCORIS"), passes them to the module's
``create_network`` and stores them as ``ss_network_args``. Values stay text: the
LyCORIS library converts each itself (and some not at all, see ``decompose_both``
in docs/parameters.md). Torch-free: the payload edge and the metadata use it too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainer.config.typed import TrainingConfig

STANDARD = "Standard"
LOCON = "Kohya LoCon"
LORA_FA = "LoRA-FA"
DYLORA = "Kohya DyLoRA"

# LoRA_type -> lycoris-lora's algo (network_module lycoris.kohya); "LoCon" is the GUI's legacy name.
LYCORIS_ALGOS = {
    "LoCon": "locon",
    "LyCORIS/LoCon": "locon",
    "LyCORIS/LoHa": "loha",
    "LyCORIS/LoKr": "lokr",
    "LyCORIS/iA3": "ia3",
    "LyCORIS/DyLoRA": "dylora",
    "LyCORIS/GLoRA": "glora",
    "LyCORIS/BOFT": "boft",
    "LyCORIS/Diag-OFT": "diag-oft",
    "LyCORIS/Native Fine-Tuning": "full",
}
MODULES = {STANDARD: "networks.lora", LOCON: "networks.lora", LORA_FA: "networks.lora_fa",
           DYLORA: "networks.dylora"}  # fmt: skip
LYCORIS_MODULE = "lycoris.kohya"

# The items of each LyCORIS type's network_args, in the GUI's order (lora_gui.py: train_model).
_LYCORIS_ITEMS = {
    "boft": ("preset", "conv_dim", "conv_alpha", "module_dropout", "use_tucker", "use_scalar",
             "rank_dropout", "rank_dropout_scale", "constrain", "rescaled", "algo", "train_norm"),
    "dylora": ("preset", "conv_dim", "conv_alpha", "use_tucker", "block_size", "rank_dropout",
               "module_dropout", "algo", "train_norm"),
    "glora": ("preset", "conv_dim", "conv_alpha", "rank_dropout", "module_dropout",
              "rank_dropout_scale", "algo", "train_norm"),
    "ia3": ("preset", "conv_dim", "conv_alpha", "train_on_input", "algo"),
    "locon": ("preset", "conv_dim", "conv_alpha", "rank_dropout", "bypass_mode", "dora_wd",
              "module_dropout", "use_tucker", "use_scalar", "rank_dropout_scale", "algo",
              "train_norm"),
    "lokr": ("preset", "conv_dim", "conv_alpha", "rank_dropout", "bypass_mode", "dora_wd",
             "module_dropout", "factor", "use_cp", "use_scalar", "decompose_both",
             "rank_dropout_scale", "algo", "train_norm"),
    "full": ("preset", "rank_dropout", "module_dropout", "use_tucker", "use_scalar",
             "rank_dropout_scale", "algo", "train_norm"),
}  # fmt: skip
_LYCORIS_ITEMS["loha"] = _LYCORIS_ITEMS["locon"]
_LYCORIS_ITEMS["diag-oft"] = _LYCORIS_ITEMS["boft"]

# The Kohya types pass these only when truthy, in train_model's parameter order.
_BLOCK_ITEMS = ("down_lr_weight", "mid_lr_weight", "up_lr_weight", "block_lr_zero_threshold",
                "block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas")  # fmt: skip
_KOHYA_ITEMS = {
    STANDARD: (*_BLOCK_ITEMS, "rank_dropout", "module_dropout"),
    LOCON: (*_BLOCK_ITEMS, "rank_dropout", "module_dropout"),
    LORA_FA: (*_BLOCK_ITEMS, "rank_dropout", "module_dropout"),
    DYLORA: ("conv_dim", "conv_alpha", *_BLOCK_ITEMS, "unit", "rank_dropout", "module_dropout"),
}

# Items whose config field has another name.
_FIELDS = {"preset": "lycoris_preset", "block_size": "unit"}


def is_lycoris(lora_type: str) -> bool:
    return lora_type in LYCORIS_ALGOS


def network_module(lora_type: str) -> str:
    """``ss_network_module``: the sd-scripts module the GUI trains this type with."""
    return LYCORIS_MODULE if is_lycoris(lora_type) else MODULES[lora_type]


def _text(value: object) -> str:
    """A value as the GUI's f-string writes it (whole floats without ``.0``, as
    kohya_ss' widgets hand them over), with no spaces (which its split would cut)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "".join(str(value).split())


def gui_items(config: TrainingConfig) -> list[tuple[str, str]]:
    """The ``network_args`` items (key, text) kohya_ss builds for ``config``."""
    kind = config.lora_type
    if is_lycoris(kind):
        algo = LYCORIS_ALGOS[kind]
        items = []
        for key in _LYCORIS_ITEMS[algo]:
            value = algo if key == "algo" else getattr(config, _FIELDS.get(key, key))
            items.append((key, _text(value)))
        return items
    items = []
    if kind == LOCON:  # always passed, even 0 (train_model: f' conv_dim="{conv_dim}" ...')
        items += [("conv_dim", _text(config.conv_dim)), ("conv_alpha", _text(config.conv_alpha))]
    for key in _KOHYA_ITEMS[kind]:
        value = getattr(config, key)
        if value:
            items.append((key, _text(value)))
    return items


def net_kwargs(config: TrainingConfig) -> dict[str, object]:
    """The keyword arguments sd-scripts passes to ``create_network`` (and writes as
    ``ss_network_args``): the items as text, plus the ``dropout`` workaround, which
    ``NetworkTrainer.train`` skips on the ``dim_from_weights`` path."""
    kwargs: dict[str, object] = dict(gui_items(config))
    if not config.dim_from_weights and "dropout" not in kwargs:
        kwargs["dropout"] = config.network_dropout or None  # the GUI drops 0: None
    return kwargs
