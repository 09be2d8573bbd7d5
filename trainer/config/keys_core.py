# ruff: noqa: E501  (registry rows stay one per line: a status flip is a one-line diff)
"""Registry, part 1: the core keys the trainer honours (model, dataset, steps,
network, optimizer, noise, precision, saving).

Defaults are the widget defaults of the kohya_ss v24.1.7 LoRA tab
(``kohya_gui/lora_gui.py``) except where an entry says otherwise
(docs/kohya-semantics.md, "Defaults"). Ranges are the GUI widget ranges. An entry
with a ``field`` is also a ``TrainingConfig`` field, typed by its ``kind``
(:mod:`trainer.config.fields`); adding an honoured key is adding its row here.
"""

from __future__ import annotations

from trainer.config.spec import KeySpec, choice, flag, integer, number, text

# The kohya_ss v24.1.7 dropdown (kohya_gui/class_basic_training.py), all trained as sd-scripts'
# library/train_util.py: get_optimizer builds them (trainer/optim/optimizers.py).
OPTIMIZERS = (
    *("AdamW", "AdamW8bit", "Lion", "Lion8bit", "Adafactor", "Prodigy"),
    *("DAdaptation", "DAdaptAdaGrad", "DAdaptAdam", "DAdaptAdan", "DAdaptAdanIP"),
    *("DAdaptAdamPreprint", "DAdaptLion", "DAdaptSGD", "PagedAdamW8bit", "PagedAdamW32bit"),
    *("PagedLion8bit", "SGDNesterov", "SGDNesterov8bit"),
)
SCHEDULERS = (
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "piecewise_constant",
    "adafactor",
)
LORA_TYPES = (
    *("Standard", "Kohya LoCon", "Kohya DyLoRA", "LoRA-FA", "LoCon", "LyCORIS/BOFT"),
    *("LyCORIS/Diag-OFT", "LyCORIS/DyLoRA", "LyCORIS/GLoRA", "LyCORIS/iA3", "LyCORIS/LoCon"),
    *("LyCORIS/LoHa", "LyCORIS/LoKr", "LyCORIS/Native Fine-Tuning"),
)

_OPTIMIZER_REASON = (
    f"supported optimizers are {', '.join(OPTIMIZERS)} (case-insensitive); "
    "other names and import paths (package.module.Class) are never loaded: importing a "
    "payload-named module runs arbitrary code"
)

# fmt: off
CORE: tuple[KeySpec, ...] = (
    # --- model and identity -------------------------------------------------
    text("pretrained_model_name_or_path", "", "Base model name; the host supplies the model file, so the name is metadata only (ss_sd_model_name). Default '' (GUI: runwayml/stable-diffusion-v1-5).", same_result="the server supplies the base model file; ss_sd_model_name is that file's name"),
    flag("sdxl", True, "Train SDXL (sdxl_train_network.py). lorabox trains SDXL only, so an omitted key means true (GUI default false).", supported=(True,), reason="only SDXL training is implemented; set sdxl to true", field=None),
    flag("v2", False, "Stable Diffusion 2.x base model; sd-scripts asserts it is off for SDXL.", supported=(False,), reason="SD 2.x models are not SDXL (sd-scripts asserts v2 is off for SDXL)", field=None),
    text("vae", "", "Replacement VAE file (.safetensors); '' keeps the base model's VAE.", unset=None),
    text("output_name", "last", "Stem of the saved files (<name>.safetensors, <name>-000002.safetensors); '' or '...': the job's name, else its short id, in lorabox; 'last' in python -m trainer, as in sd-scripts."),
    text("network_weights", "", "Existing Kohya LoRA file to continue from (weights only, fresh optimizer); '' starts from scratch.", unset=None),
    text("training_comment", "", "Free text stored as ss_training_comment."),
    text("metadata_title", "", "modelspec.title; '' = output_name.", unset=None),
    text("metadata_author", "", "modelspec.author; '' = none.", unset=None),
    text("metadata_description", "", "modelspec.description; '' = none.", unset=None),
    text("metadata_license", "", "modelspec.license; '' = none.", unset=None),
    text("metadata_tags", "", "modelspec.tags (comma-separated); '' = none.", unset=None),
    # --- dataset, captions, buckets ------------------------------------------
    KeySpec("max_resolution", "resolution", "512,512", "Training area as 'W,H' or 'N' (square); bucketing keeps W×H as the maximum area. Each side is a multiple of 8.", lo=64, hi=4096, field="resolution"),
    flag("enable_bucket", True, "Aspect-ratio bucketing; off means every image must be exactly the resolution."),
    integer("min_bucket_reso", 256, 64, 4096, "Smallest bucket side (predefined buckets only); must be ≤ min(resolution) and a multiple of bucket_reso_steps."),
    integer("max_bucket_reso", 2048, 64, 4096, "Largest bucket side (predefined buckets only); must be ≥ max(resolution) and a multiple of bucket_reso_steps."),
    integer("bucket_reso_steps", 64, 1, 128, "Bucket side granularity in pixels; SDXL requires a multiple of 32."),
    flag("bucket_no_upscale", True, "Per-image buckets: shrink to the maximum area, never upscale."),
    KeySpec("caption_extension", "ext", ".txt", "Caption file extension; a leading '.' is added; '' means '.caption' (the sd-scripts default the GUI falls back to)."),
    flag("shuffle_caption", False, "Shuffle the comma-separated tags of a caption each time it is drawn."),
    integer("keep_tokens", 0, 0, 32, "Number of leading comma-separated tags kept in place when shuffling."),
    choice("max_token_length", 75, (75, 150, 225), "Caption length in CLIP tokens; 150/225 are encoded as 2/3 chunks of 75."),
    integer("clip_skip", 1, 0, 12, "No effect on SDXL training (both encoders always use their penultimate layer); recorded in metadata (ss_clip_skip, modelspec.encoder_layer)."),
    # --- steps, batch ----------------------------------------------------------
    integer("train_batch_size", 1, 1, 64, "Images per batch; a batch never mixes buckets."),
    integer("epoch", 1, 1, 10000, "Number of epochs the total step count is computed from.", field="epochs"),
    integer("max_train_epochs", 0, 0, 10000, "Exact epoch count (sd-scripts recomputes steps from the real batches per epoch); 0 = unset. Wins over epoch and max_train_steps (train_network.py: NetworkTrainer.train).", unset=None),
    integer("max_train_steps", 0, 0, 10_000_000, "Total optimizer steps; 0 = computed from epoch. Default 0 (the GUI widget default 1600 would silently override epoch).", unset=None),
    integer("gradient_accumulation_steps", 1, 1, 120, "Micro-batches per optimizer step."),
    integer("seed", 0, 0, 2**32 - 1, "Random seed; 0 = a random seed (sd-scripts), stored as None.", unset=None),
    # --- network ------------------------------------------------------------------
    choice("LoRA_type", "Standard", LORA_TYPES, "Network type, as kohya_ss v24.1.7 maps it (kohya_gui/lora_gui.py: train_model). Standard: LoRA on the attention/MLP Linear layers (sd-scripts networks/lora.py); Kohya LoCon adds the UNet's resnet, downsample and upsample layers (3×3 convs at conv_dim/conv_alpha); LoRA-FA: LoRA with a frozen random down-projection, only lora_up trained (networks/lora_fa.py); Kohya DyLoRA: one unit of ranks trained per step so the file works cut at every multiple of unit (networks/dylora.py); LyCORIS/LoCon, LoHa, LoKr, iA3, DyLoRA, GLoRA, BOFT, Diag-OFT and Native Fine-Tuning: that lycoris-lora algorithm (network_module lycoris.kohya), files in LyCORIS' own key layout; the legacy 'LoCon' is LyCORIS/LoCon. Memory-heavy: LyCORIS/Native Fine-Tuning trains every targeted weight in full (fp32 weight, gradient and optimizer state: about 16 bytes per weight with AdamW, 10 with AdamW8bit: the seed payload needs some 42 GiB, which submit refuses on a 16 GB card); LoHa and GLoRA hold about twice LoRA's tensors at the same rank; every LyCORIS type rebuilds each targeted layer's weight difference in every forward pass and keeps it for the backward pass: without gradient_checkpointing about the targeted weights' size again in the autocast dtype (3.5 GiB more for SDXL's UNet, traced), with it little at the step's peak; LoCon/LoHa/LoKr with bypass_mode avoid it (docs/estimates.md, Network types).", field="lora_type"),
    integer("network_dim", 8, 1, 512, "LoRA rank r."),
    number("network_alpha", 1.0, 0, 1024, "LoRA alpha; the update is scaled by alpha/r. 0 = unset = 1 (the GUI drops 0, sd-scripts defaults to 1).", unset=1.0),
    number("learning_rate", 1e-4, 0, 1, "Fallback rate for a part whose own rate is 0; initial rate of Adafactor's relative step."),
    number("unet_lr", 1e-4, 0, 1, "UNet LoRA rate. 0 with text_encoder_lr > 0 trains the text encoders only; both 0 use learning_rate."),
    number("text_encoder_lr", 1e-4, 0, 1, "Rate for both text encoders' LoRA. 0 with unet_lr > 0 trains the UNet only."),
    flag("network_train_unet_only", False, "sd-scripts spelling: train only the UNet LoRA (the GUI derives it from text_encoder_lr = 0).", field=None, gui=False),
    flag("network_train_text_encoder_only", False, "sd-scripts spelling: train only the text-encoder LoRA (the GUI derives it from unet_lr = 0).", field=None, gui=False),
    # --- optimizer and schedule -------------------------------------------------
    choice("optimizer", "AdamW8bit", OPTIMIZERS, "Optimizer, built as sd-scripts' get_optimizer builds it; case-insensitive input, canonical output. AdamW: torch; AdamW8bit, Lion8bit, SGDNesterov8bit (bitsandbytes SGD8bit: momentum without a Nesterov step, which SGD8bit lacks and sd-scripts does not ask for) and PagedAdamW8bit, PagedAdamW32bit, PagedLion8bit: bitsandbytes (the Paged ones keep their state in CUDA unified memory, which the driver pages out to host memory when the GPU runs short; without CUDA they behave as the unpaged ones); Lion: lion-pytorch; SGDNesterov: torch SGD with nesterov=True (both SGDs take momentum 0.9 unless optimizer_args set it); Adafactor: transformers; Prodigy: prodigyopt; DAdaptation (= DAdaptAdamPreprint), DAdaptAdaGrad, DAdaptAdam, DAdaptAdan, DAdaptAdanIP, DAdaptLion, DAdaptSGD: dadaptation. The adaptive ones (DAdapt*, Prodigy) expect rates around 1.0; DAdaptation, DAdaptAdam, DAdaptLion, DAdaptSGD and Prodigy need the same rate for every trained part.", supported=OPTIMIZERS, reason=_OPTIMIZER_REASON, casefold=True),
    KeySpec("optimizer_args", "args", "", "Extra optimizer arguments 'k=v k=v', values as Python literals (betas=0.9,0.99 decouple=True)."),
    number("max_grad_norm", 1.0, 0, 1, "Gradient clipping norm. 0 = unset = 1.0: clipping stays on, as with the GUI (which drops 0).", unset=1.0),
    choice("lr_scheduler", "cosine", SCHEDULERS, "Learning-rate schedule (diffusers' schedule functions, as sd-scripts' get_scheduler_fix); 'adafactor' only with Adafactor's relative step; piecewise_constant needs step_rules in lr_scheduler_args and ignores warmup."),
    KeySpec("lr_scheduler_args", "args", "", "Extra schedule arguments 'k=v' (cosine: num_cycles; polynomial: lr_end; piecewise_constant: step_rules='1:100,0.5:300,0.1' = rate × 1 before optimizer step 100, × 0.5 before step 300, then × 0.1; diffusers get_piecewise_constant_schedule)."),
    integer("lr_scheduler_num_cycles", 1, 0, 10000, "Restarts of cosine_with_restarts; '' = epoch (GUI), 0 = unset = 1.", unset=1),
    number("lr_scheduler_power", 1.0, 0, 100, "Power of the polynomial schedule; 0 = unset = 1.0.", unset=1.0),
    number("lr_warmup", 10, 0, 100, "Warmup as a whole percentage (a fraction is truncated, as the GUI's int(lr_warmup)) of the GUI's step count: max_train_steps, else its estimate from epoch, also when max_train_epochs sets the total; forced to 0 with a warning for the constant schedule.", field="lr_warmup_percent"),
    integer("lr_warmup_steps", 0, 0, 10_000_000, "sd-scripts spelling: absolute warmup steps, overriding lr_warmup; 0 = unset.", unset=None, gui=False),
    # --- noise, timesteps, loss ---------------------------------------------------
    choice("noise_offset_type", "Original", ("Original", "Multires"), "Which noise family the GUI shows; kohya_ss v24.1.7 passes both families' values whichever is chosen.", same_result="as kohya_ss v24.1.7, noise_offset and multires_noise_iterations each apply when set, whatever the type"),
    number("noise_offset", 0.0, 0, 1, "Noise offset strength o: ε += o·N(0,1) per (sample, channel)."),
    flag("noise_offset_random_strength", False, "Scale the offset by U(0,1) once per batch."),
    number("min_snr_gamma", 0.0, 0, 20, "Min-SNR loss weighting γ; 0 = off (None).", unset=None),
    flag("debiased_estimation_loss", False, "Weight the loss by 1/√SNR, or 1/(SNR+1) with v_parameterization (SNR capped at 1000; sd-scripts main's apply_debiased_estimation)."),
    integer("min_timestep", 0, 0, 1000, "Lowest sampled timestep (inclusive); equal to max_timestep trains at that one timestep (sd-scripts main's get_timesteps), which must then be at most 999."),
    integer("max_timestep", 1000, 0, 1000, "Highest sampled timestep (exclusive); 0 = unset = 1000 (the GUI drops 0, and then, with min_timestep 0, the file has no modelspec.timestep_range).", unset=None),
    choice("loss_type", "l2", ("l2", "huber", "smooth_l1"), "Element loss of prediction p and target y (sd-scripts conditional_loss): l2 (p−y)²; huber 2c(√((p−y)²+c²)−c); smooth_l1 2(√((p−y)²+c²)−c), with c from huber_c and huber_schedule per sample's timestep."),
    # --- precision, memory, attention -------------------------------------------------
    choice("mixed_precision", "fp16", ("no", "fp16", "bf16", "fp8"), "Autocast dtype of the frozen models.", supported=("no", "fp16", "bf16"), reason="fp8 mixed precision means fp32 in sd-scripts; use no, fp16 or bf16"),
    choice("save_precision", "fp16", ("float", "fp16", "bf16"), "Dtype of every tensor in the saved file."),
    flag("gradient_checkpointing", False, "Recompute activations in the backward pass to save memory."),
    flag("cache_latents", True, "Encode every image with the VAE once before training (in memory)."),
    flag("cache_latents_to_disk", False, "Also keep the cached latents on disk; implies cache_latents (as sd-scripts)."),
    flag("sdxl_no_half_vae", False, "Keep the VAE in fp32 (the SDXL VAE can overflow in fp16).", field="no_half_vae", same_result="lorabox always runs the VAE in fp32, which is what this asks"),
    KeySpec("xformers", "attention", "xformers", "Attention kernel: 'none', 'sdpa', 'xformers' (or true/false); lorabox always uses PyTorch SDPA, which computes the same attention.", choices=("none", "sdpa", "xformers"), field=None, same_result="every choice runs PyTorch SDPA, which computes the same attention as xformers"),
    flag("mem_eff_attn", False, "sd-scripts' memory-efficient attention; maps to PyTorch SDPA like xformers.", field=None, same_result="PyTorch SDPA is always memory-efficient"),
    # --- saving --------------------------------------------------------------------
    choice("save_model_as", "safetensors", ("ckpt", "pt", "safetensors"), "File format of the LoRA.", supported=("safetensors",), reason="only .safetensors files are written (pickle formats are never produced)", field=None),
    integer("save_every_n_epochs", 1, 0, 10000, "Save <output_name>-<epoch:06d>.safetensors after every n-th epoch (not the last); 0 = off (None).", unset=None),
)
# fmt: on
