"""Sample images during training (Kohya's ``sample_every_n_*``).

``prompts`` parses the prompt text (torch-free: the payload edge validates with
it), ``schedulers`` maps sampler names to diffusers schedulers, ``generate``
renders one image with the live LoRA, ``samples`` decides when and writes the
PNGs. Nothing is imported here, so ``trainer.config`` can import ``prompts``
without pulling in torch.
"""
