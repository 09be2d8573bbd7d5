"""The LyCORIS types: trained by lycoris-lora, read back by lycoris-lora.

Per type: a miniature run trains and writes ``lycoris.kohya``'s key layout; every module
of the file parses back (``lycoris.modules.get_module`` / ``make_module``) into that
algorithm's module with exactly the file's tensors; the library's own
``create_lycoris_from_weights`` loads the file (keyed ``lora_unet_<ldm path>`` /
``lora_te<i>_<path>``, as ComfyUI and A1111 read LyCORIS files) and gives the output of
lorabox's in-memory network.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from lycoris.modules import get_module, make_module
from lycoris.modules.dylora import DyLoraModule
from lycoris.modules.ia3 import IA3Module
from lycoris.wrapper import LycorisNetwork, create_lycoris_from_weights
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tests.factories import tiny_payload
from tests.trainer.network_helpers import assert_same, kohya_layers, moved, outputs
from trainer.config import parse_payload
from trainer.errors import TrainerError
from trainer.lora.build import build_network
from trainer.lora.gui_args import LYCORIS_ALGOS
from trainer.lora.kohya_file import read_metadata
from trainer.lora.mirror import sd_scripts_unet, text_model_root
from trainer.models.tiny import build_tiny_components
from trainer.run import TrainingJob, train

# LoRA_type -> the library class its file parses back into (modules/__init__.py: get_module).
# LyCORIS/DyLoRA has its own test below: the library cannot read its file back.
CLASSES = {
    "LyCORIS/LoCon": "LoConModule",
    "LyCORIS/LoHa": "LohaModule",
    "LyCORIS/LoKr": "LokrModule",
    "LyCORIS/iA3": "IA3Module",
    "LyCORIS/GLoRA": "GLoRAModule",
    "LyCORIS/BOFT": "ButterflyOFTModule",
    "LyCORIS/Diag-OFT": "DiagOFTModule",
    "LyCORIS/Native Fine-Tuning": "FullModule",
}
_IA3_FROM_STATE_DICT = IA3Module.make_module_from_state_dict.__func__  # type: ignore[attr-defined]
OPTIONS = {"network_dim": 4, "network_alpha": 2, "conv_dim": 4, "conv_alpha": 2, "unit": 2}
# lycoris' butterfly blocks need a rank of at least 10 on SDXL's widths (config rules)
BOFT = {"network_dim": 10, "conv_dim": 10}


@pytest.fixture(scope="module")
def runs(tiny_model, toy_dataset, tmp_path_factory):
    """One miniature run per type, trained when a test first asks for it."""
    done: dict[str, tuple[TrainingJob, object]] = {}

    def get(kind: str):
        if kind not in done:
            payload = tiny_payload(
                LoRA_type=kind, **{**OPTIONS, **(BOFT if kind == "LyCORIS/BOFT" else {})},
                unet_lr=1e-3, text_encoder_lr=1e-3, max_train_steps=3,
                save_every_n_epochs=0, save_precision="float",
            )  # fmt: skip
            out = tmp_path_factory.mktemp(re.sub(r"\W", "_", kind))
            job = TrainingJob(parse_payload(payload).config, tiny_model, toy_dataset, out)
            done[kind] = (job, train(job))
        return done[kind]

    return get


def network_on(parts, cfg, weights=None):
    return build_network(
        cfg, parts["unet"], (parts["text_encoder"], parts["text_encoder_2"]), weights
    )


def accept_ia3_on_input(monkeypatch) -> None:
    """lycoris-lora 4.1.3: ``get_module`` hands ``IA3Module.make_module_from_state_dict`` the
    file's (weight, on_input), but it takes the weight alone. Pass the weight on; on_input
    must be 0, the constructor's own default (kohya's create_network never sets it)."""

    def from_state_dict(cls, name, module, weight, on_input):
        assert int(on_input) == 0
        return _IA3_FROM_STATE_DICT(cls, name, module, weight)

    monkeypatch.setattr(IA3Module, "make_module_from_state_dict", classmethod(from_state_dict))


def library_outputs(path, monkeypatch) -> list[torch.Tensor]:
    """A fresh model with the file loaded by ``create_lycoris_from_weights``: module names are
    ``LORA_PREFIX`` + the path under ``root``, so "lora" + unet/te1/te2 gives Kohya's names."""
    parts = build_tiny_components()
    root = torch.nn.Module()
    root.unet = sd_scripts_unet(parts["unet"])
    root.te1 = text_model_root(parts["text_encoder"])
    root.te2 = parts["text_encoder_2"]
    monkeypatch.setattr(LycorisNetwork, "LORA_PREFIX", "lora")
    accept_ia3_on_input(monkeypatch)
    network, weights = create_lycoris_from_weights(1.0, str(path), root)
    assert len(network.loras) == len({key.split(".")[0] for key in weights})  # all found
    network.apply_to()
    network.eval()
    return outputs(parts)


def checkpoint_unet_paths(checkpoint) -> set[str]:
    with safe_open(str(checkpoint), "pt") as handle:
        keys = list(handle.keys())  # noqa: SIM118 - safe_open is no dict
    prefix = "model.diffusion_model."
    return {
        k[len(prefix) : -len(".weight")]
        for k in keys
        if k.startswith(prefix) and k.endswith(".weight")
    }


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(CLASSES))
def test_trained_file_keeps_the_library_layout_of_each_module(kind, runs, monkeypatch):
    accept_ia3_on_input(monkeypatch)
    job, result = runs(kind)
    state = load_file(str(result.lora_path))
    names = sorted({key.split(".")[0] for key in state})
    unet = {n.removeprefix("lora_unet_") for n in names if n.startswith("lora_unet_")}
    # Every UNet module is a checkpoint layer (ldm names, read from the file itself) and the
    # "full" preset, on sd-scripts' UNet, reaches resnets, samplers and transformers only.
    ldm = {p.replace(".", "_") for p in checkpoint_unet_paths(job.base_model)}
    assert unet <= ldm and any(n.endswith("in_layers_2") for n in unet)
    assert any(n.endswith("_op") for n in unet) and any(n.endswith("attn2_to_k") for n in unet)
    assert not any(
        n.startswith(("time_embed", "label_emb", "input_blocks_0_0", "out_")) for n in unet
    )
    assert any(n.startswith("lora_te1_text_model_encoder") for n in names)
    layers = kohya_layers(build_tiny_components())
    for name in names:
        lyco_type, params = get_module(state, name)
        assert lyco_type is not None and lyco_type.__name__ == CLASSES[kind], name
        module = make_module(lyco_type, params, name, layers[name])
        written = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        mine = {
            k[len(name) + 1 :]: tuple(v.shape) for k, v in state.items() if k.split(".")[0] == name
        }
        assert mine == written, name
    meta = read_metadata(result.lora_path)
    assert meta["ss_network_module"] == "lycoris.kohya"
    assert json.loads(meta["ss_network_args"])["algo"] == LYCORIS_ALGOS[kind]
    assert "sshs_model_hash" in meta and "sshs_legacy_hash" not in meta  # lycoris' save_weights


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(CLASSES))
def test_file_reloads_with_the_library_and_gives_the_in_memory_networks_output(
    kind, runs, tmp_path, monkeypatch
):
    job, result = runs(kind)
    base = outputs(build_tiny_components())
    trained = library_outputs(result.lora_path, monkeypatch)
    assert moved(trained, base)
    # the in-memory network, moved off its zero start, against its file in the library
    parts = build_tiny_components()
    network = network_on(parts, job.config)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    in_memory = outputs(parts)
    path = tmp_path / "in_memory.safetensors"
    save_file(network.file_tensors(torch.float32), str(path))
    assert_same(in_memory, library_outputs(path, monkeypatch))
    # network_weights: lorabox's own loading of the trained file, as the library loads it
    resumed = build_tiny_components()
    network_on(resumed, job.config, result.lora_path)
    assert_same(outputs(resumed), trained)


@pytest.mark.slow
def test_lycoris_dylora_trains_and_writes_the_librarys_own_layout(runs, monkeypatch):
    """The library's DyLoraModule writes ``lora_up`` as (out, r) even for a conv and loads
    nothing back (``load_state_dict`` returns at once), and its forward draws a rank at random
    even outside training, scaled alpha / (blocks + 1) (modules/dylora.py: get_weight): so its
    file is checked against the library's own module and lorabox's reload of its tensors,
    not against a reloaded output."""
    job, result = runs("LyCORIS/DyLoRA")
    state = load_file(str(result.lora_path))
    layers = kohya_layers(build_tiny_components())
    names = sorted({key.split(".")[0] for key in state})
    assert any(n.endswith("in_layers_2") for n in names)
    for name in names:
        reference = DyLoraModule(name, layers[name], 1.0, 4, 2.0, block_size=2)
        written = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
        mine = {
            k[len(name) + 1 :]: tuple(v.shape) for k, v in state.items() if k.split(".")[0] == name
        }
        assert mine == written, name
    assert any(v.abs().sum() > 0 for k, v in state.items() if k.endswith("lora_up.weight"))
    # network_weights: lorabox splits the file back into the library's blocks
    # (trainer/lora/lycoris.py: _load_dylora_blocks), which load_state_dict does not.
    reloaded = network_on(build_tiny_components(), job.config, result.lora_path)
    again = reloaded.file_tensors(torch.float32)
    assert again.keys() == state.keys() and all(torch.equal(again[k], state[k]) for k in state)
    # The library's own reader takes the file for LoCon, whose conv lora_up is (out, r, 1, 1):
    # lycoris-lora 4.1.3 modules/locon.py: LoConModule.make_module_from_state_dict fails.
    monkeypatch.setattr(LycorisNetwork, "LORA_PREFIX", "lora")
    root = torch.nn.Module()
    root.unet = sd_scripts_unet(build_tiny_components()["unet"])
    with pytest.raises(RuntimeError, match="broadcast shape"):
        create_lycoris_from_weights(1.0, str(result.lora_path), root)
    with pytest.raises(TrainerError, match="dim_from_weights"):
        from_file = job.config.model_copy(update={"dim_from_weights": True})
        network_on(build_tiny_components(), from_file, result.lora_path)
