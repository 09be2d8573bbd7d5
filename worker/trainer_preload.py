"""Imported once by the trainer fork server (worker.trainer_process), never by the worker: the
modules every trainer needs, so a forked trainer starts with them in memory.

The server ignores SIGTERM and SIGINT. A group-wide SIGTERM (``docker stop``, systemd, a
terminal's Ctrl-C) must reach the worker's graceful stop, which suspends the trainer and saves
its state; had the server died instead, the supervisor would read its children as dead
(multiprocessing reports exit code 255) while the trainer was still saving. The server still
ends with the worker: it reads EOF on the pipe the worker holds, and the worker stops it.
"""

from __future__ import annotations

import importlib
import logging
import signal
import sys
import traceback

# First: the imports take seconds, and multiprocessing ignores SIGINT only after them.
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)

# The ML stack's known-harmless notices (bitsandbytes' kernels-community, transformers without
# torchvision) would land on the worker's console, `lorabox up`'s: hidden and counted, once.
from trainer.report.quiet import quiet_logging  # noqa: E402 - torch-free, imports in ms

noise = quiet_logging(sys.stderr, level=logging.WARNING)

# torch, diffusers, transformers, peft, and what a trainer process runs. multiprocessing would
# swallow an ImportError silently; one is printed (to the worker's log), and the trainers then
# import what is missing themselves, as spawned ones do.
for name in (
    "trainer.run",
    "trainer.sampling.generate",
    "worker.child",
    "worker.tensorboard",
    "torch.utils.tensorboard",
):
    try:
        importlib.import_module(name)
    except Exception:  # noqa: BLE001 - a preload only saves time; the trainer reports errors
        print(f"trainer fork server: could not preload {name}:", file=sys.stderr)
        traceback.print_exc()
if summary := noise.summary():
    print(f"trainer fork server: {summary}", file=sys.stderr)
