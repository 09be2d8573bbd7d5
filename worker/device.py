"""What this worker trains on, read without creating a CUDA context in the Celery process.

The trainer runs in a child process (``worker/child.py``); a CUDA context in the worker
itself would cost hundreds of MB of the card and break the trainer fork server
(``worker/trainer_process.py``). So GPU facts come from NVML (``nvidia-ml-py``: the
management library the driver ships, the one ``nvidia-smi`` uses; it opens no context), and
the one measurement that needs CUDA, the matmul probe, runs in a child process.

Which GPU: the first entry of ``CUDA_VISIBLE_DEVICES`` (``lorabox worker --gpu N`` sets it),
a UUID or an index, else device 0. NVML numbers GPUs by PCI bus; CUDA does too once
``CUDA_DEVICE_ORDER=PCI_BUS_ID``, which ``worker/celery_app.py: run_worker`` sets (its default
order, fastest first, can differ on a box with mixed GPUs). A torch built without CUDA trains
on the CPU whatever NVML sees, so such a worker reports the host's RAM
(``MemTotal``/``MemAvailable`` from /proc/meminfo, within the cgroup's limit) as its memory.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from core.workers.registry import DeviceReport
from worker.trainer_process import StartMethod, trainer_context

log = logging.getLogger(__name__)

CPU, CUDA = "cpu", "cuda"
PROBE_TIMEOUT_S = 180.0  # a spawned probe imports torch first: seconds, on a slow disk more


@dataclass(frozen=True)
class Gpu:
    handle: Any
    index: int
    uuid: str
    name: str
    compute_capability: str
    driver_version: str | None


def _nvml() -> Any | None:
    """The NVML bindings, initialised; None on a machine without the library or a driver."""
    try:
        pynvml = importlib.import_module("pynvml")
        pynvml.nvmlInit()
    except ImportError:
        log.warning("nvidia-ml-py is not installed: this worker reports its CPU")
        return None
    except Exception as exc:  # noqa: BLE001 - pynvml.NVMLError: no driver, no library
        log.warning("NVML not available (%s): this worker reports its CPU", exc)
        return None
    return pynvml


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _open_gpu(nvml: Any, visible: str | None) -> Gpu | None:
    """The GPU the trainer will use: CUDA_VISIBLE_DEVICES's first entry, else device 0."""
    first = (visible if visible is not None else "0").split(",")[0].strip()
    try:
        if first.startswith(("GPU-", "MIG-")):
            handle = nvml.nvmlDeviceGetHandleByUUID(first)
        elif first.isdigit():
            handle = nvml.nvmlDeviceGetHandleByIndex(int(first))
        else:  # "", "-1", "NoDevFiles": CUDA sees no device
            return None
        major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
        driver: str | None = None
        with contextlib.suppress(Exception):
            driver = _text(nvml.nvmlSystemGetDriverVersion())
        return Gpu(
            handle, int(nvml.nvmlDeviceGetIndex(handle)), _text(nvml.nvmlDeviceGetUUID(handle)),
            _text(nvml.nvmlDeviceGetName(handle)), f"{major}.{minor}", driver,
        )  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - NVMLError: no such device, lost GPU
        log.warning("NVML could not open GPU %r (%s): this worker reports its CPU", first, exc)
        return None


def _torch_versions() -> tuple[str | None, str | None]:
    """torch's version and the CUDA it was built with. Importing torch opens no context
    (the worker imports it anyway to choose how trainers start)."""
    try:
        import torch
    except ImportError:
        return None, None
    return str(torch.__version__), torch.version.cuda


def host_memory(root: Path = Path("/")) -> tuple[int, int]:
    """(total, available) bytes of RAM: /proc/meminfo's MemTotal and MemAvailable, capped by a
    cgroup v2 memory limit (a container sees the host's meminfo, not its own limit)."""
    info: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in (root / "proc/meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            if rest.strip().endswith("kB"):
                info[name] = int(rest.split()[0]) * 1024
    page = os.sysconf("SC_PAGE_SIZE")
    total = info.get("MemTotal") or os.sysconf("SC_PHYS_PAGES") * page
    available = info.get("MemAvailable") or os.sysconf("SC_AVPHYS_PAGES") * page
    cgroup = root / "sys/fs/cgroup"
    with contextlib.suppress(OSError, ValueError):
        limit = int((cgroup / "memory.max").read_text().strip())  # "max": no limit
        used = int((cgroup / "memory.current").read_text().strip())
        total, available = min(total, limit), min(available, max(limit - used, 0))
    return total, available


class Device:
    """The one device this worker's trainers use: a GPU (through NVML) or the host's RAM."""

    def __init__(self, host: str | None = None) -> None:
        self.host = host or socket.gethostname()
        self.torch_version, self.cuda_version = _torch_versions()
        self._nvml = _nvml() if self.cuda_version is not None else None
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        self.gpu = _open_gpu(self._nvml, visible) if self._nvml is not None else None

    @property
    def kind(self) -> str:
        return CUDA if self.gpu is not None else CPU

    @property
    def key(self) -> str:
        return f"{self.host}:{self.gpu.uuid}" if self.gpu is not None else f"{self.host}:cpu"

    @property
    def name(self) -> str:
        return f"{self.host}:gpu{self.gpu.index}" if self.gpu is not None else f"{self.host}:cpu"

    def memory(self) -> tuple[int, int]:
        """(total, free) bytes now: the GPU's (every process's use counted), or the host's."""
        if self.gpu is None:
            return host_memory()
        info = self._nvml.nvmlDeviceGetMemoryInfo(self.gpu.handle)  # type: ignore[union-attr]
        return int(info.total), int(info.free)

    def free_memory_bytes(self) -> int | None:
        """Free bytes at this moment, or None when they can't be read (not held back then)."""
        try:
            return self.memory()[1]
        except Exception:  # noqa: BLE001 - NVMLError (GPU lost), OSError
            log.warning("could not read the free memory of %s", self.name, exc_info=True)
            return None

    def report(self, peak_flops: float | None, peak_source: str | None) -> DeviceReport:
        total, free = self.memory()
        gpu = self.gpu
        return DeviceReport(
            key=self.key, name=self.name, host=self.host, device=self.kind,
            gpu_name=gpu.name if gpu else None, gpu_uuid=gpu.uuid if gpu else None,
            total_memory_bytes=total, free_memory_bytes=free,
            compute_capability=gpu.compute_capability if gpu else None,
            torch_version=self.torch_version,
            cuda_version=self.cuda_version if gpu else None,
            driver_version=gpu.driver_version if gpu else None,
            peak_flops=peak_flops, peak_source=peak_source,
        )  # fmt: skip


def matmul_flops(kind: str, seconds: float = 0.3) -> float:
    """The best FLOP/s of square matmuls over about ``seconds``: fp16 inputs with fp32
    accumulation on a GPU (as autocast trains), fp32 on a CPU (the trainer's CPU precision).
    Runs in a child process (it creates the CUDA context)."""
    import torch

    if kind == CUDA:
        n, dtype = 8192, torch.float16
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
        sync: Callable[[], None] = torch.cuda.synchronize
    else:
        n, dtype, sync = 1024, torch.float32, lambda: None
    a = torch.randn(n, n, dtype=dtype, device=kind)
    b = torch.randn(n, n, dtype=dtype, device=kind)
    a @ b  # warm-up: kernel selection, thread pool, clocks
    sync()
    best, reps, rounds = 0.0, (10 if kind == CUDA else 2), 0
    deadline = time.perf_counter() + seconds
    while rounds < 3 or time.perf_counter() < deadline:
        started = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync()
        best = max(best, reps * 2 * n**3 / (time.perf_counter() - started))
        rounds += 1
    return best


def _probe_child(kind: str, result: Connection) -> None:
    try:
        result.send(("ok", matmul_flops(kind)))
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the worker
        result.send(("error", f"{type(exc).__name__}: {exc}"))


def probe_peak(kind: str, method: StartMethod) -> float | None:
    """Runs :func:`matmul_flops` in a trainer-like process (forked from the fork server on a
    CPU host: milliseconds to start; spawned on a GPU host); None when it fails."""
    context = trainer_context(method)
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_probe_child, args=(kind, send), name="peak-probe")
    child.start()
    send.close()
    try:
        if not receive.poll(PROBE_TIMEOUT_S):
            log.error("the matmul probe gave no answer within %.0f s", PROBE_TIMEOUT_S)
            return None
        status, value = receive.recv()
    except (EOFError, OSError) as exc:
        log.error("the matmul probe died: %s", exc)
        return None
    finally:
        child.join(timeout=5)
        if child.is_alive():
            child.kill()
            child.join()
        receive.close()
    if status != "ok":
        log.error("the matmul probe failed: %s", value)
        return None
    return float(value)
