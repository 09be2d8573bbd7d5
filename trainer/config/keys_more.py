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
# The GUI's preset choices (kohya_gui/lora_gui.py: LYCORIS_PRESETS_CHOICES), all built into lycoris-lora.
LYCORIS_PRESETS = (
    "attn-mlp",
    "attn-only",
    "full",
    "full-lin",
    "unet-transformer-only",
    "unet-convblock-only",
)
_SECRET = {
    **_refused("secrets are never accepted in a payload: configure tracking on the host"),
    "secret": True,
}
_FREE_FORM = _refused(
    "unsafe: free-form command-line arguments could set any option, paths and imports included; use the payload keys"
)

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
    flag("full_fp16", False, "LoRA parameters themselves in fp16, so their gradients and optimizer state are fp16 too; requires mixed_precision fp16. The loss is scaled by PyTorch's dynamic GradScaler, made to unscale fp16 gradients as sd-scripts patches it (train_util.py: patch_accelerator_for_fp16_training); a step whose gradients overflow is skipped. Plain AdamW's eps (1e-8) is 0 in fp16: prefer AdamW8bit or Adafactor, or full_bf16 with bf16."),
    flag("full_bf16", False, "LoRA parameters themselves in bf16; requires mixed_precision bf16."),
    flag("fp8_base", False, "Frozen UNet/text-encoder weights stored as float8_e4m3fn, each layer upcast to the mixed-precision dtype for its forward pass; requires fp16/bf16 mixed precision. LoRA weights stay fp32."),
    number("network_dropout", 0.0, 0, 1, "Dropout on the lora_down output."),
    number("rank_dropout", 0.0, 0, 1, "Dropout of individual ranks (scale compensated)."),
    number("module_dropout", 0.0, 0, 1, "Probability of skipping a whole LoRA module for a forward pass."),
    number("scale_weight_norms", 0.0, 0, 10, "Max-norm regularization of each module's ΔW after every step; 0 = off.", unset=None),
    integer("stop_text_encoder_training_pct", 0, -1, 100, "Freeze the text-encoder LoRA after ceil(steps × pct / 100) steps, steps being the GUI's own estimate (the one lr_warmup is a percentage of; with max_train_epochs the run's total differs); -1 = never train it, 0 = train to the end. Differs from the GUI: kohya_ss v24.1.7 ignores this key for LoRA (sd-scripts' train_network.py has no such option); lorabox honours it as the DreamBooth tab does."),
    flag("sdxl_cache_text_encoder_outputs", False, "Cache text-encoder outputs; needs UNet-only training and fixed captions. The encoders then wait in host memory and so do the outputs; each batch's are copied to the GPU for its step.", field="cache_text_encoder_outputs"),
    flag("cache_text_encoder_outputs_to_disk", False, "sd-scripts spelling: keep the cached text-encoder outputs in a file beside each image (<image>_te_outputs_<fingerprint>.safetensors, reused by later runs while the encoders, max_token_length, precision and caption are the same) and read each batch's from there instead of memory; implies sdxl_cache_text_encoder_outputs (as sd-scripts).", gui=False),
    number("prior_loss_weight", 1.0, 0, 100, "Loss weight of regularization images (the job's regularization set, reg_dataset_id); without one it has no effect. 0 = unset = 1.0 (the GUI drops 0). A regularization set doubles the GUI's step estimate.", unset=1.0),
    integer("save_every_n_steps", 0, 0, 10_000_000, "Save <output_name>-step<step:08d>.safetensors every n steps; 0 = off.", unset=None),
    integer("save_last_n_steps", 0, 0, 10_000_000, "Delete step checkpoints older than n steps; 0 = keep all.", unset=None),
    integer("save_last_n_steps_state", 0, 0, 10_000_000, "Keep only the step states of the last n steps (as save_last_n_steps does for step files, which it falls back to); 0 = unset.", unset=None),
    flag("save_state", False, "Save the training state (<name>[-<epoch>|-step<step>]-state.safetensors: weights, optimizer, schedule, RNG states, position) with every checkpoint and at the end; a job re-run after a crash resumes exactly from its newest state."),
    flag("save_state_on_train_end", False, "Save the training state (<name>-state.safetensors) at the end only."),
    integer("sample_every_n_epochs", 0, 0, 10000, "Generate sample images after every n-th epoch; 0 = off. Takes precedence over sample_every_n_steps.", unset=None),
    integer("sample_every_n_steps", 0, 0, 10_000_000, "Generate sample images after every n-th optimizer step; 0 = off. Ignored when sample_every_n_epochs is set.", unset=None),
    text("sample_prompts", "", "Sample prompts, one a line ('#' lines skipped), Kohya syntax: prompt --n negative --w width --h height (default 512, floored to a multiple of 8) --s steps (default 30) --l CFG scale (default 7.5) --d seed (default the run seed + the line's index) --ss sampler. Images go to sample/ as PNGs with the settings in their metadata."),
    choice("sample_sampler", "euler_a", SAMPLERS, "Scheduler used for sample images (a prompt's --ss overrides it)."),
    integer("conv_dim", 1, 0, 512, "Rank of the 3×3 convolutions: Kohya LoCon (0 = no 3×3 modules) and the LyCORIS types (0 = none; their presets decide which convolutions); Kohya DyLoRA: 0 or network_dim, which adds the resnet and sampler layers (sd-scripts asserts it). Unused by Standard and LoRA-FA (the GUI never passes it)."),
    number("conv_alpha", 1.0, 0, 512, "Alpha of the 3×3 convolutions of Kohya LoCon and the LyCORIS types; 0 = conv_dim. Kohya DyLoRA reads it but scales every module by network_alpha."),
    flag("weighted_captions", False, "A1111-style (word:1.2) caption weighting.", reason="sd-scripts refuses it for SDXL (library/sdxl_train_util.py: verify_sdxl_training_args asserts it is off)", status=Status.REFUSED, field=None),
    number("huber_c", 0.1, 0, 1, "Huber parameter c0 of loss_type huber/smooth_l1 (no effect with l2); 0 = unset = 0.1 (the GUI drops 0).", unset=0.1),
    choice("huber_schedule", "snr", ("constant", "exponential", "snr"), "c at timestep t for huber/smooth_l1 (sd-scripts get_timesteps_and_huber_c): constant c0; exponential exp(t·ln(c0)/1000); snr (1−c0)/(1+σ_t)² + c0 with σ_t = √((1−ᾱ_t)/ᾱ_t). No effect with l2."),
    flag("masked_loss", False, "Weight each element of the loss by the image's alpha channel (0–255 → 0–1), resized and cropped with the image and area-averaged to the latent size (sd-scripts apply_masked_loss with alpha_mask); an image without alpha weighs 1 everywhere. The mask of an image with alpha is read from its file at each step, also with cache_latents. Differs from a GUI run: kohya_ss v24.1.7 never passes alpha_mask, so there sd-scripts finds no mask and trains unmasked."),
    integer("vae_batch_size", 0, 0, 32, "Images of one bucket per VAE call when caching latents; 0 = unset = 1. Each image draws its own sampling noise, so the latents equal batch-1 caching up to float rounding.", unset=1),
    # --- throughput: validated, kept, never change the result ---------------------------
    integer("max_data_loader_n_workers", 0, 0, 64, "Data-loader worker processes; 0 = load in the main process.", **_SPEED),
    flag("persistent_data_loader_workers", False, "Keep loader workers alive between epochs (the GUI stores it as 0/1).", **_SPEED),
)

OTHER: tuple[KeySpec, ...] = (
    # --- other network types and LyCORIS-only settings ------------------------------
    choice("LyCORIS_preset", "full", LYCORIS_PRESETS, "LyCORIS: which layers get a module, lycoris-lora's preset matched against sd-scripts' SDXL UNet (library/sdxl_original_unet.py): full = attention, MLP, resnet and sampler layers and the text encoders; full-lin = the same without 3×3 convs; attn-mlp = transformer blocks and text encoders; attn-only = the attention projections; unet-transformer-only = transformer blocks only; unet-convblock-only = resnet and sampler layers only.", supported=LYCORIS_PRESETS, reason="a preset TOML file is a path on the server: use one of the GUI's presets", field="lycoris_preset"),
    flag("bypass_mode", False, "LyCORIS LoCon/LoHa/LoKr: add the module's output to the layer's (W·x + ΔW·x) instead of rebuilding W + ΔW every step; the same update, without the rebuilt weight's memory. Rank dropout then drops ranks of the output instead of the weight."),
    number("constrain", 0.0, None, None, "LyCORIS Diag-OFT/BOFT: bound on each rotation block (lycoris' constraint, × the layer's output channels); 0 = unbounded."),
    flag("decompose_both", False, "LyCORIS LoKr: also factor the smaller Kronecker matrix into two rank-r matrices (when r < half its size).", same_result="lycoris.kohya.create_network passes kohya_ss' text 'True'/'False' to LokrModule unconverted, and a non-empty text is true: LoKr always decomposes both, as in a GUI run"),
    flag("dora_wd", False, "LyCORIS LoCon/LoHa/LoKr: DoRA weight decomposition: a trained magnitude per output channel (dora_scale in the file)."),
    integer("factor", -1, -1, None, "LyCORIS LoKr: the Kronecker factor each dimension is split by; -1 = as square as possible (lycoris factorization)."),
    flag("rank_dropout_scale", False, "LyCORIS: rescale rank dropout by the kept fraction.", same_result="kohya_ss passes it, but lycoris.kohya.create_network (lycoris-lora 4.1.3) does not hand it on to the modules"),
    flag("rescaled", False, "LyCORIS Diag-OFT/BOFT: also train a scale per output channel (rescale in the file)."),
    flag("train_norm", False, "LyCORIS: also train the GroupNorm/LayerNorm layers inside the targeted blocks (w_norm/b_norm in the file)."),
    flag("train_on_input", True, "LyCORIS iA3: scale the layer's input instead of its output channels.", same_result="kohya_ss passes it, but lycoris.kohya.create_network (lycoris-lora 4.1.3) does not hand it on: iA3 always scales the output channels, as in a GUI run"),
    flag("use_cp", False, "LyCORIS LoKr: Tucker (CP) decomposition of the 3×3 convolutions' factor (lycoris reads it as use_tucker; lokr_t2 in the file)."),
    flag("use_scalar", False, "LyCORIS: a trained scalar on each module's update (starting at 0, so both factors start random); folded into the saved weights."),
    flag("use_tucker", False, "LyCORIS LoCon/LoHa/DyLoRA/Native Fine-Tuning and the OFT types: Tucker decomposition of the 3×3 convolutions (lora_mid, hada_t1/hada_t2 in the file)."),
    integer("unit", 1, 1, 64, "Kohya DyLoRA: ranks trained together per step (network_dim must be a multiple, sd-scripts asserts it); LyCORIS/DyLoRA: its block_size. Other types ignore it."),
    flag("dim_from_weights", False, "With network_weights: build the network from that file (its modules, ranks and alphas) instead of network_dim/network_alpha, as sd-scripts' create_network_from_weights does; dropouts and per-block ranks are then not applied (as in sd-scripts)."),
    text("down_lr_weight", "", "Standard / Kohya LoCon: learning-rate multipliers of SDXL's 9 input blocks (shallow to deep), comma-separated, or a preset cosine, sine, linear, reverse_linear, zeros with an optional +base; a shorter list is padded with 1.0. A block at weight 0 gets no LoRA module. sd-scripts networks/lora.py: get_block_lr_weight."),
    text("mid_lr_weight", "", "Standard / Kohya LoCon: learning-rate multipliers of SDXL's 3 middle-block parts, comma-separated (no presets); padded with 1.0."),
    text("up_lr_weight", "", "Standard / Kohya LoCon: learning-rate multipliers of SDXL's 9 output blocks (deep to shallow), as down_lr_weight."),
    text("block_lr_zero_threshold", "", "Standard / Kohya LoCon: LR weights at or below this become 0 (that block gets no LoRA); '' = 0."),
    text("block_dims", "", "Standard / Kohya LoCon: rank per block, 23 comma-separated values on SDXL (0 time/label embedding, 1-9 input_blocks 0-8, 10-12 middle_block 0-2, 13-21 output_blocks 0-8, 22 out; the two ends get no LoRA); 0 = no module in that block. Also turned on by any *_lr_weight, then every block takes network_dim."),
    text("block_alphas", "", "Standard / Kohya LoCon: alpha per block, 23 values; '' = network_alpha everywhere; 0 = that block's rank. Read only with block_dims or an LR weight."),
    text("conv_block_dims", "", "Standard / Kohya LoCon: rank of the 3×3 convolutions per block (23 values); adds the resnet and sampler layers even to Standard, as sd-scripts does. Read only with block_dims or an LR weight; '' = conv_dim (Kohya LoCon) or no 3×3 modules."),
    text("conv_block_alphas", "", "Standard / Kohya LoCon: alpha of the 3×3 convolutions per block (23 values); '' = conv_alpha (1 for Standard). Read only with conv_block_dims."),
    # --- refused: other ways of configuring the run -----------------------------------
    text("dataset_config", "", "Dataset TOML replacing the folder convention.", **_refused("a path on the server (a TOML file naming image folders there): the job's dataset_id and reg_dataset_id use the <repeats>_<name> folder convention")),
    text("resume", "", "Training-state folder to resume from.", **_refused("a path on the server: a job resumes from its own newest training state automatically (after a crash or a worker shutdown; see save_state); to continue from another job's LoRA use network_weights")),
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
