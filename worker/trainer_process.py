"""Where trainer processes come from: spawned fresh, or forked from a server that imported the
ML stack once.

Every job runs in a process of its own either way, so a crash or leaked memory never outlives
it. The difference is the start: importing torch, diffusers, transformers and peft takes ~10 s
of CPU on a small box, paid per job by a spawned process. A fork server pays it once per
worker, and then a trainer starts in milliseconds.

Forking is only safe while no process in the chain has initialised CUDA, and importing
diffusers imports bitsandbytes, which asks torch for the GPU's compute capability and so
initialises CUDA: a child forked after that can't use the GPU. So the fork server is used only
with a torch built without CUDA or ROCm (CPU hosts: CI, the demo), where that can't happen,
and a GPU box keeps spawning. ``LORABOX_TRAINER_START_METHOD`` overrides the choice.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import signal
from multiprocessing.context import ForkServerContext, SpawnContext
from typing import Literal

StartMethod = Literal["auto", "spawn", "forkserver"]
log = logging.getLogger(__name__)

# Imported by the fork server (never by the worker): it makes the server ignore SIGTERM.
PRELOAD_MODULE = "worker.trainer_preload"


def resolve(method: StartMethod) -> Literal["spawn", "forkserver"]:
    if method == "spawn":
        return method
    import torch  # the worker's own import: it never touches a device

    built_for_gpu = torch.version.cuda is not None or torch.version.hip is not None
    if method == "forkserver":
        if built_for_gpu:
            log.warning("trainers forked on a torch built for GPUs can't use CUDA; use spawn")
        return method
    return "spawn" if built_for_gpu else "forkserver"


def trainer_context(method: StartMethod) -> SpawnContext | ForkServerContext:
    if resolve(method) == "spawn":
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([PRELOAD_MODULE])
    return context


def warm_up(method: StartMethod) -> None:
    """Starts the fork server and waits until it has imported everything (a first process
    forked from it ends at once), before the worker takes a job: a supervisor waiting inside
    ``Process.start`` for those imports would renew no lease and poll no cancel."""
    if resolve(method) == "forkserver":
        probe = trainer_context(method).Process(target=_nothing, name="trainer-server-probe")
        probe.start()
        probe.join()


def _nothing() -> None:
    pass


def stop_server() -> None:
    """Ends the fork server and multiprocessing's resource tracker with their worker, and reaps
    them. Left alone each ends by itself once the worker's pipe closes, but as orphans nobody
    may reap (and the server only after its imports): ``lorabox up`` must leave no process
    behind. Called when no trainer runs; a second call does nothing."""
    # CPython's singletons and their own stop methods (no public ones): each closes the pipe,
    # waits for the process and forgets it.
    server = multiprocessing.forkserver._forkserver
    pid, stop = getattr(server, "_forkserver_pid", None), getattr(server, "_stop", None)
    if pid and stop is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # rather than wait for imports it may still be doing
        with contextlib.suppress(OSError, ChildProcessError):
            stop()
    stop_tracker = getattr(multiprocessing.resource_tracker._resource_tracker, "_stop", None)
    if stop_tracker is not None:
        with contextlib.suppress(OSError, ChildProcessError):
            stop_tracker()
