"""The one settings object: every knob is a ``LORABOX_*`` environment variable."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.db.deadline import CallLimits

MiB = 1024 * 1024
GiB = 1024 * MiB


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LORABOX_", extra="ignore")

    home: Path = Path("./var")
    models_dir: Path = Path("./models")
    # Empty means "embedded": SQLite and the kombu SQLAlchemy broker under ``home``.
    database_url: str = ""
    broker_url: str = ""
    queue_name: str = "lorabox"
    # Redis re-delivers an unacked message after this long even while it still runs;
    # the claim makes that harmless, a long value just avoids the noise.
    broker_visibility_timeout_s: int = 7 * 24 * 3600

    # Bounds on every database call, from the client side (a server that hangs answers no
    # server-side timeout): docs/reliability.md, "Database hangs". A call still waiting after
    # `db_call_timeout_s` (`db_loop_call_timeout_s` for the API's event-loop reads) fails and
    # its connection is dropped; `db_statement_timeout_s` is Postgres' own statement_timeout.
    db_call_timeout_s: float = Field(default=3.0, gt=0)
    db_loop_call_timeout_s: float = Field(default=0.5, gt=0)
    db_statement_timeout_s: float = Field(default=2.5, gt=0)
    # Socket timeouts on the broker's connections (kombu, redis-py): a Redis that hangs fails a
    # send after this long instead of freezing it; the reconciler re-sends the message later.
    broker_timeout_s: float = Field(default=2.0, gt=0)

    # `lorabox api` processes: about one per core the API may use (status polls are CPU-bound).
    api_workers: int = Field(default=1, ge=1)
    # Seconds a token stays trusted in an API process after a lookup (revocation delay).
    auth_cache_s: float = 5.0
    max_json_bytes: int = 1 * MiB
    max_json_depth: int = 64
    max_upload_bytes: int = 4 * GiB
    max_queued_per_user: int = 20
    # Free space the disk estimate must leave untouched for everything else.
    disk_reserve_bytes: int = 1 * GiB

    zip_max_members: int = 20_000
    zip_max_ratio: float = 200.0
    zip_max_total_bytes: int = 16 * GiB
    max_image_pixels: int = 64_000_000
    upload_chunk_bytes: int = 1 * MiB
    # How often an open event stream (SSE) reads the job's event log for new entries.
    events_poll_interval_s: float = Field(default=0.5, gt=0)
    # Webhooks go only to these hosts (comma-separated names): empty turns them off, so the
    # server can't be pointed at the local network by anyone who can submit a job.
    webhook_allowed_hosts: str = ""
    webhook_max_attempts: int = Field(default=6, ge=1)
    webhook_backoff_s: float = Field(default=2.0, gt=0)  # doubles after each failed try
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    webhook_poll_interval_s: float = Field(default=1.0, gt=0)

    progress_interval_s: float = Field(default=1.0, gt=0)
    flag_poll_interval_s: float = Field(default=0.5, gt=0)
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    pause_poll_interval_s: float = Field(default=1.0, gt=0)
    # Recovery (docs/reliability.md): a running job whose heartbeat is older than the lease
    # timeout is re-queued, until `max_attempts` runs were lost (then `worker_lost`). The
    # reconciler also claims for its idle worker every `reconcile_interval_s`, so a job starts
    # whatever happens to its wake message (docs/reliability.md, "Reconciler").
    lease_timeout_s: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    reconcile_interval_s: float = Field(default=15.0, gt=0)
    # A cancelled trainer that has not ended this long after the worker saw the cancel (stuck in
    # one call that can't poll, as reading a base model) is killed; the job ends `cancelled`.
    cancel_grace_s: float = Field(default=30.0, gt=0)
    # How a trainer process starts (worker.trainer_process): "auto" forks it from a server that
    # imported the ML stack once when torch has no GPU support, and spawns it fresh otherwise.
    trainer_start_method: Literal["auto", "spawn", "forkserver"] = "auto"

    # Workers (docs/reliability.md, "Workers"): each writes what its device has every
    # `worker_heartbeat_s`, idle or busy; one not heard from for `worker_expiry_s` no longer
    # counts. Submit keeps `vram_headroom_bytes` spare on a counted worker's card (the claim
    # compares the estimate with the card's free memory as it is, without it); a job short of
    # free memory at its claim waits (`blocked_reason: "gpu_memory"`) and the worker takes the
    # next job that fits.
    worker_heartbeat_s: float = Field(default=10.0, gt=0)
    worker_expiry_s: float = Field(default=60.0, gt=0)
    vram_headroom_bytes: int = Field(default=1 * GiB, ge=0)
    # The time model's starting points (core/workers/model.py) until a worker has learned its
    # own from finished runs: the fraction of the GPU's peak a step reaches (a judgement for
    # SDXL LoRA steps, to calibrate with bench/gpu_sdxl.py), and seconds per job for loading,
    # per cached image, per sample image and per save point.
    worker_default_efficiency: float = Field(default=0.3, gt=0, le=4)
    worker_allowance_loading_s: float = Field(default=60.0, ge=0)
    worker_allowance_caching_s: float = Field(default=0.25, ge=0)
    worker_allowance_sampling_s: float = Field(default=10.0, ge=0)
    worker_allowance_saving_s: float = Field(default=5.0, ge=0)

    # Sharing the GPU (docs/scheduling.md): the claim's order among eligible jobs, how fast an
    # owner's past usage fades, and preemption by exact resume (off unless set).
    scheduler: Literal["fair", "fifo"] = "fair"
    fairshare_half_life_s: float = Field(default=86_400.0, gt=0)
    preempt_after_s: float | None = Field(default=None, gt=0)
    preempt_max: int = Field(default=3, ge=0)

    @property
    def wake_grace_s(self) -> float:
        """How long a newly queued job is left to its wake message before an idle worker's
        reconciler claims it itself: half the reconcile interval, at most 5 s. The worker the
        message wakes should take the job (docs/reliability.md, "Reconciler"), and a job whose
        message is lost still starts within ``reconcile_interval_s``."""
        return min(5.0, self.reconcile_interval_s / 2)

    def db_limits(self) -> CallLimits:
        return CallLimits(
            call_timeout_s=self.db_call_timeout_s,
            loop_call_timeout_s=self.db_loop_call_timeout_s,
            statement_timeout_s=self.db_statement_timeout_s,
        )

    def worker_allowances(self) -> dict[str, float]:
        """The default allowances, by the names core/workers/model.py uses."""
        return {
            "loading": self.worker_allowance_loading_s,
            "caching": self.worker_allowance_caching_s,
            "sampling": self.worker_allowance_sampling_s,
            "saving": self.worker_allowance_saving_s,
        }

    @model_validator(mode="after")
    def _embedded_defaults(self) -> Settings:
        self.home = self.home.expanduser().absolute()
        self.models_dir = self.models_dir.expanduser().absolute()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'lorabox.db'}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{self.home / 'broker.db'}"
        return self

    @property
    def webhook_hosts(self) -> frozenset[str]:
        return frozenset(
            h.strip().lower() for h in self.webhook_allowed_hosts.split(",") if h.strip()
        )

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    @property
    def jobs_dir(self) -> Path:
        return self.home / "jobs"

    @property
    def tmp_dir(self) -> Path:
        """Partial uploads live here (same filesystem as datasets, so a rename publishes)."""
        return self.home / "tmp"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    def ensure_dirs(self) -> None:
        for path in (self.home, self.datasets_dir, self.jobs_dir, self.tmp_dir, self.cache_dir):
            path.mkdir(parents=True, exist_ok=True)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
