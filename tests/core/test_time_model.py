"""The time model (core/workers): the GPU peaks table, seconds per step, a job's seconds, and
how a worker's efficiency and allowances learn from runs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.workers import WorkerInfo, job_seconds, learned, observed_efficiency, seconds_per_step
from core.workers.model import RECENT_RUNS, RunTimings
from core.workers.peaks import (
    ADA_GEFORCE,
    ADA_PRO,
    AMPERE_GEFORCE,
    AMPERE_PRO,
    GPU_PEAKS,
    table_peak,
)

TERA = 1e12


def _worker(**values: object) -> WorkerInfo:
    fields: dict[str, object] = dict(
        key="box:GPU-1", name="box:gpu0", host="box", gpu_name="NVIDIA GeForce RTX 4090",
        gpu_uuid="GPU-1", total_memory_bytes=24 << 30, free_memory_bytes=23 << 30,
        compute_capability="8.9", torch_version="2.13.0", cuda_version="12.8",
        peak_flops=165.2 * TERA, peak_source="table", efficiency=0.3, allowances_s={},
        state="idle", current_job_id=None, seen_at=datetime.now(UTC),
    )  # fmt: skip
    return WorkerInfo(**(fields | values))  # type: ignore[arg-type]


@pytest.mark.parametrize("peak", GPU_PEAKS, ids=lambda p: p.pattern)
def test_every_peak_agrees_with_its_sms_clock_and_rate_within_one_percent(peak):
    assert peak.computed_tflops == pytest.approx(peak.stated_tflops, rel=0.01)


@pytest.mark.parametrize(
    ("nvml_name", "tflops"),
    [
        ("NVIDIA GeForce RTX 4070 Ti SUPER", 88.2),  # not the 4070 Ti's, nor the 4070's
        ("NVIDIA GeForce RTX 4070 Ti", 80.2),
        ("NVIDIA GeForce RTX 4070", 58.3),
        ("NVIDIA GeForce RTX 4090", 165.2),
        ("NVIDIA GeForce RTX 3090", 71.2),
        ("NVIDIA GeForce RTX 3090 Ti", 80.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA A100 80GB PCIe", 312.0),
        ("NVIDIA H100 80GB HBM3", 989.4),
        ("NVIDIA H100 PCIe", 756.4),
        ("NVIDIA L4", 121.0),
        ("NVIDIA L40S", 362.05),
        ("NVIDIA L40", 181.05),
        ("Tesla T4", 65.0),
        ("NVIDIA A10", 125.0),
        ("Tesla V100-SXM2-16GB", 125.0),
        ("Tesla V100-PCIE-32GB", 112.0),
        ("NVIDIA RTX A6000", 154.8),
        ("NVIDIA RTX 6000 Ada Generation", 364.2),
    ],
)
def test_nvml_names_find_their_row(nvml_name, tflops):
    row = table_peak(nvml_name)
    assert row is not None and row.stated_tflops == tflops


@pytest.mark.parametrize("unknown", ["NVIDIA A10G", "NVIDIA H100 NVL", "AMD Instinct MI300X", ""])
def test_a_device_the_table_does_not_know_is_left_to_the_probe(unknown):
    assert table_peak(unknown) is None


def test_geforce_cards_accumulate_fp32_at_half_the_rate_of_their_professional_siblings():
    assert (AMPERE_GEFORCE, ADA_GEFORCE) == (AMPERE_PRO // 2, ADA_PRO // 2)
    rtx4090, a6000_ada = table_peak("RTX 4090"), table_peak("RTX 6000 Ada")
    assert rtx4090 is not None and a6000_ada is not None
    # The 4090's headline FP16 tensor figure (330.3, with fp16 accumulate) is twice its row.
    assert rtx4090.sms * rtx4090.boost_mhz * 1e6 * ADA_PRO / TERA == pytest.approx(330.3, 0.01)
    assert a6000_ada.flops_per_sm_clock == ADA_PRO


def test_seconds_per_step_is_the_step_flops_over_peak_times_efficiency():
    # The seed payload's traced step (67.6 TFLOP) on the team's 16 GB card at 30%.
    worker = _worker(peak_flops=88.2 * TERA, efficiency=0.3)
    assert seconds_per_step(67_600_000_000_000, worker) == pytest.approx(67.6 / (88.2 * 0.3))
    assert seconds_per_step(2 * 10**12, _worker(efficiency=0.6)) == pytest.approx(
        seconds_per_step(10**12, _worker(efficiency=0.3))
    )
    with pytest.raises(ValueError):
        seconds_per_step(10**12, _worker(peak_flops=0.0))


def test_job_seconds_adds_the_steps_and_each_allowance_per_unit():
    allowances = {"loading": 40.0, "caching": 0.5, "sampling": 8.0, "saving": 3.0}
    worker = _worker(allowances_s=allowances)
    total = job_seconds(
        total_steps=1000, s_per_step=1.5, worker=worker, samples=4, saves=3, cached_images=20
    )
    assert total == pytest.approx(1000 * 1.5 + 40 + 0.5 * 20 + 8 * 4 + 3 * 3)
    # Nothing cached, nothing sampled, no allowances stored: the steps alone.
    bare = job_seconds(total_steps=10, s_per_step=2.0, worker=_worker(), samples=0, saves=0)
    assert bare == 20.0


def test_learning_takes_the_median_of_the_recent_runs_so_one_slow_run_is_an_outlier():
    value, window = learned([], 0.10)  # the first run replaces the default outright
    assert (value, window) == (0.10, [0.10])
    value, window = learned(window, 0.12)
    assert value == pytest.approx(0.11)
    value, window = learned(window, 0.01)  # a run slowed by someone else's process
    assert value == pytest.approx(0.10)
    for observed in (0.11, 0.12, 0.30, 0.31, 0.32):  # the device got faster: it follows
        value, window = learned(window, observed)
    assert len(window) == RECENT_RUNS and value == pytest.approx(0.30)


def test_the_observed_efficiency_is_achieved_flops_over_the_peak_and_is_bounded():
    assert observed_efficiency(10**12, 0.5, 4 * TERA) == pytest.approx(0.5)
    assert observed_efficiency(10**18, 1e-9, TERA) == 4.0  # a broken timing, clamped
    with pytest.raises(ValueError):
        observed_efficiency(10**12, 0.0, TERA)


def test_run_timings_teach_only_the_allowances_that_happened():
    timings = RunTimings(
        s_per_step=0.2,
        seconds={"loading": 12.0, "caching": 3.0, "sampling": 0.0, "saving": 4.0},
        counts={"loading": 1, "caching": 6, "sampling": 0, "saving": 2},
    )
    assert timings.per_unit() == {"loading": 12.0, "caching": 0.5, "saving": 2.0}
