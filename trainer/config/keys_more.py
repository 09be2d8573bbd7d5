# ruff: noqa: E501  (registry rows stay one per line: a status flip is a one-line diff)
"""Registry, part 2: the rest of the training surface, other network types, and host keys.

``TRAINING_MORE`` keys are ``TrainingConfig`` fields like the core ones. Host
keys are validated and kept in the normalized payload; the trainer never reads
them.
"""

from __future__ import annotations

from typing import Any

from trainer.config.spec import KeySpec, Status, choice, flag, integer, number, text
from trainer.sampling.prompts import SAMPLERS


def _host(reason: str) -> dict[str, Any]:
    return {"status": Status.HOST, "reason": reason, "field": None}


def _refused(reason: str) -> dict[str, Any]:
    return {"status": Status.REFUSED, "reason": reason, "field": None}


_LAUNCH = _host("accelerate launch setting: the host runs one training process on its own GPU")
_PATH = _host("path owned by the host: the job supplies dataset, output and log folders")
_TRACK = _host("experiment tracking is owned by the host: progress goes to the job's events")
_HUB = _host("uploading is owned by the host: the trainer never talks to the Hugging Face Hub")
_GUI = _host("GUI widget state with no effect on training")
_SPEED = {
    "status": Status.HOST,
    "reason": "tunes data-loading throughput only: validated and kept, the trainer picks its own loader settings",
}
_LYCORIS = _refused("LyCORIS-only setting: only 'Standard' and 'Kohya LoCon' LoRA are supported")
_BLOCKS = _refused("per-block LoRA settings are not supported yet")
_SECRET = {
    **_refused("secrets are never accepted in a payload: configure tracking on the host"),
    "secret": True,
}
_FREE_FORM = _refused("free-form command-line arguments are never accepted: use the payload keys")

DYNAMO_BACKENDS = (
    *("no", "eager", "aot_eager", "inductor", "aot_ts_nvfuser", "nvprims_nvfuser", "cudagraphs"),
    *("ofi", "fx2trt", "onnxrt", "tensorrt", "aot_torchxla_trace_once", "torchxla_trace_once"),
    *("ipex", "tvm"),
)

# fmt: off
TRAINING_MORE: tuple[KeySpec, ...] = (
    flag("v_parameterization", False, "Train with the v-prediction target (v-pred SDXL finetunes); sets modelspec.prediction_type 'v'."),
    flag("scale_v_pred_loss_like_noise_pred", False, "Scale the v-pred loss like the ε-pred loss by SNR/(SNR+1); requires v_parameterization."),
    number("v_pred_like_loss", 0.0, 0, 1, "Add k·loss/s_t, a v-pred-like loss term; forbidden with v_parameterization."),
    integer("multires_noise_iterations", 0, 0, 64, "Pyramid (multires) noise levels; 0 = off."),
    number("multires_noise_discount", 0.3, 0, 1, "Per-level discount of multires noise; 0 = unset = 0.3 (the GUI drops 0).", inert=(0,), unset=0.3),
    number("ip_noise_gamma", 0.0, 0, 1, "Input-perturbation noise γ added to the noisy latents only."),
    flag("ip_noise_gamma_random_strength", False, "Scale ip_noise_gamma by U(0,1) per batch."),
    number("adaptive_noise_scale", 0.0, -1, 1, "Adds a·|mean latent| to the noise offset; requires noise_offset."),
    number("caption_dropout_rate", 0.0, 0, 1, "Probability a caption is replaced by ''."),
    integer("caption_dropout_every_n_epochs", 0, 0, 10000, "All captions are '' in every n-th epoch; 0 = off.", unset=None),
    flag("flip_aug", False, "Mirror each sample with 50% chance each time it is drawn; with cache_latents the mirrored latents are cached too. A flipped sample's SDXL crop_top_left is mirrored (left = bucket width − right)."),
    flag("color_aug", False, "A 33% chance per draw of a hue shift U(±8 OpenCV units) or a gamma U(0.95, 1.05) on the 0–255 values (sd-scripts AugHelper); incompatible with cache_latents."),
    flag("random_crop", False, "Crop the resized image into its bucket at a uniformly random offset instead of centred; SDXL crop_top_left is that offset (sd-scripts keeps the centred value). Incompatible with cache_latents."),
    flag("full_fp16", False, "LoRA parameters themselves in fp16; requires mixed_precision fp16.", reason="fp16 LoRA weights need a gradient scaler that unscales fp16 gradients, which PyTorch's GradScaler refuses; use full_bf16 with mixed_precision bf16", status=Status.REFUSED),
    flag("full_bf16", False, "LoRA parameters themselves in bf16; requires mixed_precision bf16."),
    flag("fp8_base", False, "Frozen UNet/text-encoder weights stored as float8_e4m3fn, each layer upcast to the mixed-precision dtype for its forward pass; requires fp16/bf16 mixed precision. LoRA weights stay fp32."),
    number("network_dropout", 0.0, 0, 1, "Dropout on the lora_down output."),
    number("rank_dropout", 0.0, 0, 1, "Dropout of individual ranks (scale compensated)."),
    number("module_dropout", 0.0, 0, 1, "Probability of skipping a whole LoRA module for a forward pass."),
    number("scale_weight_norms", 0.0, 0, 10, "Max-norm regularization of each module's ΔW after every step; 0 = off.", unset=None),
    integer("stop_text_encoder_training_pct", 0, -1, 100, "Freeze the text-encoder LoRA after ceil(total steps × pct / 100) steps; -1 = never train it, 0 = train to the end. Differs from the GUI: kohya_ss v24.1.7 ignores this key for LoRA (sd-scripts' train_network.py has no such option); lorabox honours it as the DreamBooth tab does."),
    flag("sdxl_cache_text_encoder_outputs", False, "Cache text-encoder outputs; needs UNet-only training and fixed captions.", field="cache_text_encoder_outputs"),
    number("prior_loss_weight", 1.0, 0, 100, "Loss weight of regularization images (the job's regularization set, reg_dataset_id); without one it has no effect. A regularization set doubles the GUI's step estimate."),
    integer("save_every_n_steps", 0, 0, 10_000_000, "Save <output_name>-step<step:08d>.safetensors every n steps; 0 = off.", unset=None),
    integer("save_last_n_steps", 0, 0, 10_000_000, "Delete step checkpoints older than n steps; 0 = keep all.", unset=None),
    integer("save_last_n_steps_state", 0, 0, 10_000_000, "Keep only the step states of the last n steps (as save_last_n_steps does for step files, which it falls back to); 0 = unset.", unset=None),
    flag("save_state", False, "Save the training state (<name>[-<epoch>|-step<step>]-state.safetensors: weights, optimizer, schedule, RNG states, position) with every checkpoint and at the end; a job re-run after a crash resumes exactly from its newest state."),
    flag("save_state_on_train_end", False, "Save the training state (<name>-state.safetensors) at the end only."),
    integer("sample_every_n_epochs", 0, 0, 10000, "Generate sample images after every n-th epoch; 0 = off. Takes precedence over sample_every_n_steps.", unset=None),
    integer("sample_every_n_steps", 0, 0, 10_000_000, "Generate sample images after every n-th optimizer step; 0 = off. Ignored when sample_every_n_epochs is set.", unset=None),
    text("sample_prompts", "", "Sample prompts, one a line ('#' lines skipped), Kohya syntax: prompt --n negative --w width --h height (default 512, floored to a multiple of 8) --s steps (default 30) --l CFG scale (default 7.5) --d seed (default the run seed + the line's index) --ss sampler. Images go to sample/ as PNGs with the settings in their metadata."),
    choice("sample_sampler", "euler_a", SAMPLERS, "Scheduler used for sample images (a prompt's --ss overrides it)."),
    integer("conv_dim", 1, 0, 512, "Rank of the 3×3 conv LoRA of 'Kohya LoCon' (unused by Standard); 0 = no 3×3 conv modules."),
    number("conv_alpha", 1.0, 0, 512, "Alpha of the 3×3 conv LoRA of 'Kohya LoCon' (unused by Standard); 0 = conv_dim."),
    flag("weighted_captions", False, "A1111-style (word:1.2) caption weighting.", reason="sd-scripts does not support weighted captions for SDXL", status=Status.REFUSED, field=None),
    number("huber_c", 0.1, 0, 1, "Huber loss parameter c (only for loss_type huber/smooth_l1).", **_refused("only used by the huber/smooth_l1 losses, which are not supported yet")),
    choice("huber_schedule", "snr", ("constant", "exponential", "snr"), "Schedule of huber_c over timesteps (only for huber/smooth_l1).", **_refused("only used by the huber/smooth_l1 losses, which are not supported yet")),
    integer("vae_batch_size", 0, 0, 32, "Images of one bucket per VAE call when caching latents; 0 = unset = 1. Each image draws its own sampling noise, so the latents equal batch-1 caching up to float rounding.", unset=1),
    # --- throughput: validated, kept, never change the result ---------------------------
    integer("max_data_loader_n_workers", 0, 0, 64, "Data-loader worker processes; 0 = load in the main process.", **_SPEED),
    flag("persistent_data_loader_workers", False, "Keep loader workers alive between epochs (the GUI stores it as 0/1).", **_SPEED),
)

OTHER: tuple[KeySpec, ...] = (
    # --- other network types and LyCORIS-only settings ------------------------------
    text("LyCORIS_preset", "full", "LyCORIS module preset (attn-mlp, full, ...) or a preset TOML path.", **_LYCORIS),
    flag("bypass_mode", False, "LyCORIS bypass mode.", **_LYCORIS),
    number("constrain", 0.0, None, None, "LyCORIS OFT constraint.", **_LYCORIS),
    flag("decompose_both", False, "LyCORIS LoKr: decompose both matrices.", **_LYCORIS),
    flag("dora_wd", False, "LyCORIS DoRA weight decomposition.", **_LYCORIS),
    integer("factor", -1, -1, None, "LyCORIS LoKr factor; -1 = automatic.", **_LYCORIS),
    flag("rank_dropout_scale", False, "LyCORIS: rescale rank dropout.", **_LYCORIS),
    flag("rescaled", False, "LyCORIS OFT: rescaled.", **_LYCORIS),
    flag("train_norm", False, "LyCORIS: also train normalization layers.", **_LYCORIS),
    flag("train_on_input", True, "LyCORIS iA3: train on the input side.", **_LYCORIS),
    flag("use_cp", False, "LyCORIS: CP decomposition of conv layers.", **_LYCORIS),
    flag("use_scalar", False, "LyCORIS: learnable scalar.", **_LYCORIS),
    flag("use_tucker", False, "LyCORIS: Tucker decomposition.", **_LYCORIS),
    integer("unit", 1, 1, 64, "DyLoRA unit / LyCORIS block size.", **_refused("only used by DyLoRA types: only 'Standard' and 'Kohya LoCon' LoRA are supported")),
    flag("dim_from_weights", False, "Take the rank from network_weights instead of network_dim.", **_refused("not supported yet: set network_dim/network_alpha to the file's values")),
    text("down_lr_weight", "", "Per-block LR multipliers of the down blocks.", **_BLOCKS),
    text("mid_lr_weight", "", "Per-block LR multipliers of the middle block.", **_BLOCKS),
    text("up_lr_weight", "", "Per-block LR multipliers of the up blocks.", **_BLOCKS),
    text("block_lr_zero_threshold", "", "Blocks with an LR weight at or below this get no LoRA.", **_BLOCKS),
    text("block_dims", "", "Per-block ranks (23 values on SDXL).", **_BLOCKS),
    text("block_alphas", "", "Per-block alphas.", **_BLOCKS),
    text("conv_block_dims", "", "Per-block conv ranks.", **_BLOCKS),
    text("conv_block_alphas", "", "Per-block conv alphas.", **_BLOCKS),
    # --- refused: other ways of configuring the run -----------------------------------
    text("dataset_config", "", "Dataset TOML replacing the folder convention.", **_refused("dataset TOML files are not supported: the job's dataset uses the <repeats>_<name> folder convention")),
    text("resume", "", "Training-state folder to resume from.", **_refused("a path on the server: a job resumes from its own newest training state automatically (after a crash or a worker shutdown; see save_state); to continue from another job's LoRA use network_weights")),
    flag("masked_loss", False, "Weight the loss by a mask image / alpha channel.", **_refused("masked loss is not supported yet")),
    text("additional_parameters", "", "Raw sd-scripts command-line arguments.", **_FREE_FORM),
    text("extra_accelerate_launch_args", "", "Raw accelerate launch arguments.", **_FREE_FORM),
    text("wandb_api_key", "", "Weights & Biases API key (a secret; never echoed).", **_SECRET),
    text("huggingface_token", "", "Hugging Face token (a secret; never echoed).", **_SECRET),
    # --- host ---------------------------------------------------------------------------
    text("model_list", "", "GUI preset-model picker.", **_GUI),
    text("train_data_dir", "", "Folder of <repeats>_<name> image folders.", **_PATH),
    text("reg_data_dir", "", "Folder of regularization image folders.", **_PATH),
    text("output_dir", "", "Folder the LoRA files are written to.", **_PATH),
    text("logging_dir", "", "TensorBoard log folder.", **_PATH),
    choice("log_with", "", ("", "tensorboard", "wandb", "all"), "Tracker selection.", **_TRACK),
    text("log_tracker_name", "", "Tracker project name.", **_TRACK),
    text("log_tracker_config", "", "Tracker TOML config path.", **_TRACK),
    text("wandb_run_name", "", "Weights & Biases run name.", **_TRACK),
    text("huggingface_repo_id", "", "Hub repository to upload to.", **_HUB),
    text("huggingface_repo_type", "", "Hub repository type.", **_HUB),
    text("huggingface_repo_visibility", "", "Hub repository visibility.", **_HUB),
    text("huggingface_path_in_repo", "", "Path inside the Hub repository.", **_HUB),
    flag("save_state_to_huggingface", False, "Upload state folders to the Hub.", **_HUB),
    text("resume_from_huggingface", "", "Download the resume state from the Hub.", **_HUB),
    flag("async_upload", False, "Upload to the Hub in the background.", **_HUB),
    integer("num_processes", 1, 1, 64, "accelerate --num_processes.", **_LAUNCH),
    integer("num_machines", 1, 1, 64, "accelerate --num_machines.", **_LAUNCH),
    integer("num_cpu_threads_per_process", 2, 1, 256, "accelerate --num_cpu_threads_per_process.", **_LAUNCH),
    flag("multi_gpu", False, "accelerate --multi_gpu.", **_LAUNCH),
    text("gpu_ids", "", "accelerate --gpu_ids.", **_LAUNCH),
    integer("main_process_port", 0, 0, 65535, "accelerate --main_process_port; 0 = default.", **_LAUNCH),
    choice("dynamo_backend", "no", DYNAMO_BACKENDS, "torch.compile backend (inert in sd-scripts without --torch_compile).", **_LAUNCH),
    choice("dynamo_mode", "default", ("default", "reduce-overhead", "max-autotune"), "torch.compile mode.", **_LAUNCH),
    flag("dynamo_use_fullgraph", False, "torch.compile fullgraph.", **_LAUNCH),
    flag("dynamo_use_dynamic", False, "torch.compile dynamic shapes.", **_LAUNCH),
)
# fmt: on
