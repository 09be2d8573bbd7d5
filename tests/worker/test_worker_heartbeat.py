"""Workers say what they have (worker/heartbeat.py, worker/device.py, core/workers/registry.py):
the row a worker writes and refreshes, found again after a restart, and counted only while
the worker is heard from."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from core.db.migrate import upgrade
from core.db.tables import Worker
from core.settings import Settings
from core.workers import RunTimings, counted_workers
from core.workers.registry import learn_from_run
from worker.device import CPU, Device, _nvml, host_memory
from worker.heartbeat import Heartbeat, settle_peak
from worker.runner import WorkerContext


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    built = Settings(home=tmp_path / "home", worker_heartbeat_s=0.2, worker_expiry_s=1.5,
                     trainer_start_method="spawn")  # fmt: skip
    built.ensure_dirs()
    upgrade(built.database_url)
    return built


def _counted(ctx: WorkerContext) -> list[Any]:
    with ctx.db.reading() as session:
        return counted_workers(session, ctx.settings)


def _rows(ctx: WorkerContext) -> list[Worker]:
    with ctx.db.reading() as session:
        rows = list(session.scalars(sa.select(Worker)))
        session.expunge_all()
        return rows


def test_the_device_is_read_without_cuda_and_a_cpu_worker_reports_its_ram():
    import pynvml  # the dependency imports everywhere; its library loads only with a driver

    nvml = _nvml()  # without a driver: None, no exception; with one: initialised
    assert nvml is None or nvml.nvmlDeviceGetCount() >= 0
    assert callable(pynvml.nvmlDeviceGetMemoryInfo)  # the call the claim reads free memory with
    device = Device()
    total, free = device.memory()
    assert 0 < free <= total
    if device.kind == CPU:  # no GPU here, or a torch without CUDA: the host's RAM counts
        assert (device.key, device.gpu) == (f"{device.host}:cpu", None)
        assert total == host_memory()[0]
    else:  # a GPU box: NVML named the card the trainer will use, by its UUID
        assert device.gpu is not None and device.key == f"{device.host}:{device.gpu.uuid}"


def test_host_memory_reads_meminfo_within_the_cgroup_limit(tmp_path):
    (tmp_path / "proc").mkdir()
    meminfo = "MemTotal:       32000000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n"
    (tmp_path / "proc" / "meminfo").write_text(meminfo)
    assert host_memory(tmp_path) == (32_000_000 * 1024, 20_000_000 * 1024)
    cgroup = tmp_path / "sys" / "fs" / "cgroup"
    cgroup.mkdir(parents=True)
    (cgroup / "memory.max").write_text(f"{8 << 30}\n")
    (cgroup / "memory.current").write_text(f"{3 << 30}\n")
    assert host_memory(tmp_path) == (8 << 30, 5 << 30)


def test_the_heartbeat_writes_and_refreshes_the_row_and_a_restart_finds_it_again(settings):
    ctx = WorkerContext.from_settings(settings)
    started = time.monotonic()
    peak, source = settle_peak(ctx)  # the CPU has no table row: a matmul probe, spawned
    probe_s = time.monotonic() - started
    assert source == "probe" and peak is not None and peak > 1e9, peak
    print(f"CPU matmul probe: {peak / 1e9:.1f} GFLOP/s in {probe_s:.2f} s (with the spawn)")

    heartbeat = Heartbeat(ctx, (peak, source))
    heartbeat.beat()
    heartbeat.start()
    (first,) = _counted(ctx)
    assert (first.key, first.state, first.current_job_id) == (ctx.device.key, "idle", None)
    assert first.total_memory_bytes == ctx.device.memory()[0] and first.free_memory_bytes > 0
    assert (first.peak_flops, first.peak_source, first.process) == (peak, "probe", ctx.worker_id)
    assert first.efficiency == settings.worker_default_efficiency
    assert first.allowances_s == settings.worker_allowances()

    ctx.activity.job_id = "job-1"  # busy: the next heartbeat says so
    time.sleep(3 * settings.worker_heartbeat_s)
    (busy,) = _counted(ctx)
    assert (busy.state, busy.current_job_id) == ("busy", "job-1")
    assert busy.seen_at > first.seen_at
    with ctx.db.writing() as session:  # a finished run teaches it its speed
        timings = RunTimings(0.5, {"loading": 9.0}, {"loading": 1})
        learn_from_run(session, ctx.device.key, step_flops=int(peak / 10), timings=timings)

    heartbeat.stop()  # a clean stop: the worker no longer counts, at once
    assert _counted(ctx) == []
    ctx.db.dispose()

    again = WorkerContext.from_settings(settings)  # the restarted worker: a new process id
    started = time.monotonic()
    assert settle_peak(again) == (peak, "probe")  # its own earlier measurement, no probe
    assert time.monotonic() - started < 1.0
    restarted = Heartbeat(again, (peak, "probe"))
    restarted.beat()
    restarted.start()
    (back,) = _counted(again)
    assert len(_rows(again)) == 1 and back.key == first.key
    assert back.efficiency == pytest.approx(0.2)  # (peak / 10) / (0.5 s x peak), kept
    assert back.allowances_s["loading"] == 9.0 and back.runs_learned == 1
    assert (back.state, back.current_job_id) == ("idle", None)

    # A worker that dies says nothing: it stops counting once worker_expiry_s passed.
    restarted.stopped.set()
    restarted.join()
    time.sleep(settings.worker_expiry_s + 0.3)
    assert _counted(again) == [] and len(_rows(again)) == 1
    again.db.dispose()
