"""Celery application. ``celery -A worker.celery_app worker`` or ``lorabox worker``."""

from __future__ import annotations

import os
import socket

from celery import Celery

from core.jobs.broker import celery_config
from core.settings import get_settings


def create_celery() -> Celery:
    app = Celery("lorabox", include=["worker.tasks"])
    app.conf.update(celery_config(get_settings()))
    # The task itself only supervises: training runs in a fresh child process per job, so
    # the solo pool (no forked pool process in between) is enough and keeps signals simple.
    app.conf.update(worker_pool="solo")
    return app


app = create_celery()


def run_worker(gpu: int | None = None) -> int:
    # CUDA numbers GPUs fastest first by default, NVML by PCI bus: with this the trainer's
    # cuda:0 is the GPU the worker reads through NVML (worker/device.py).
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    settings = get_settings()
    settings.ensure_dirs()
    name = f"lorabox-gpu{gpu if gpu is not None else 'any'}@{socket.gethostname()}"
    app.worker_main(
        [
            "worker",
            "--loglevel=INFO",
            "--pool=solo",
            "--concurrency=1",
            "--prefetch-multiplier=1",
            f"--hostname={name}",
            f"--queues={settings.queue_name}",
            "--without-gossip",
            "--without-mingle",
        ]
    )
    return 0
