"""Imported once by the trainer fork server (worker.trainer_process), never by the worker: the
modules every trainer needs, so a forked trainer starts with them in memory.

The server also ignores SIGTERM. A group-wide SIGTERM (``docker stop``, systemd, a terminal)
must reach the worker's graceful stop, which suspends the trainer and saves its state; had the
server died instead, the supervisor would read its children as dead (multiprocessing reports
exit code 255) while the trainer was still saving. The server still ends with the worker: it
reads EOF on the pipe the worker holds. (SIGINT is ignored by multiprocessing itself.)
"""

from __future__ import annotations

import signal

import torch.utils.tensorboard  # noqa: F401

import trainer.run  # noqa: F401 - the preload: torch, diffusers, transformers, peft
import trainer.sampling.generate  # noqa: F401
import worker.child  # noqa: F401
import worker.tensorboard  # noqa: F401

signal.signal(signal.SIGTERM, signal.SIG_IGN)
