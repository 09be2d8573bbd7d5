"""A job submission checked whole: the trainer's payload model plus the server's rules.

Every problem is collected (with its field path) before anything is raised, so a client
fixes them all in one round trip. Nothing here touches the queue.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.catalog import ModelInfo, find_model
from core.datasets.service import dataset_path, folder_warnings, get_dataset
from core.db.tables import Artifact, Dataset, Job, User
from core.errors import InvalidInput, NotFound, Problem
from core.jobs.estimate import JobShape, architecture_of, estimate_job, footprint
from core.jobs.submission import JobCreate
from core.jobs.suggestions import changes_that_fit
from core.settings import Settings
from core.watch.allowlist import notify_url_problem
from core.workers import counted_workers
from trainer.config import PayloadError, TrainingConfig, parse_payload
from trainer.errors import InvalidDatasetError
from trainer.plan import TrainingPlan, plan_training

PLACEHOLDERS = ("", "...")
PATH_KEYS = ("output_dir", "train_data_dir", "logging_dir", "reg_data_dir")
MUST_BE_EMPTY = {
    "resume": "resuming from a folder is not supported: submit a new job",
    "dataset_config": "dataset TOML files are not supported: upload a dataset zip",
    "additional_parameters": "free-form command strings are never accepted",
    "extra_accelerate_launch_args": "free-form command strings are never accepted",
}
SECRET_KEYS = ("wandb_api_key", "huggingface_token")
GIB = 2**30
WEIGHTS_REF = re.compile(r"^job:(?P<job>[0-9a-f]{32})/(?P<name>[^\x00]+)$")


@dataclass
class ValidatedJob:
    config: TrainingConfig
    normalized: dict[str, Any]
    plan: dict[str, Any]  # TrainingPlan.to_dict() with every warning as {field, message}
    resolved: dict[str, Any]  # host paths the worker needs, relative to home/models dir
    training_plan: TrainingPlan
    dataset: Dataset
    warnings: list[dict[str, str | None]] = field(default_factory=list)
    estimate: dict[str, Any] | None = None  # core.jobs.estimate.JobEstimate.to_dict()


def _p(*loc: str | int) -> tuple[str | int, ...]:
    return ("body", *loc)


class _Checker:
    def __init__(self, session: Session, settings: Settings, user: User) -> None:
        self.session, self.settings, self.user = session, settings, user
        self.problems: list[Problem] = []
        self.warnings: list[dict[str, str | None]] = []
        self.resolved: dict[str, Any] = {}

    def problem(self, loc: tuple[str | int, ...], msg: str) -> None:
        self.problems.append(Problem(loc, msg))

    def dataset(self, dataset_id: str | None, key: str) -> Dataset | None:
        if dataset_id is None:
            return None
        try:
            return get_dataset(self.session, user=self.user, dataset_id=dataset_id)
        except NotFound:
            self.problem(_p(key), f"no dataset {dataset_id!r}")
            return None

    def model(self, name: str) -> ModelInfo | None:
        model = find_model(self.settings.models_dir, name, "sdxl")
        if model is None:
            self.problem(_p("base_model"), f"no SDXL model named {name!r}: see GET /v1/models")
        return model

    def server_rules(self, params: dict[str, Any], base_model: str) -> None:
        name = params.get("pretrained_model_name_or_path", "")
        if name not in (*PLACEHOLDERS, base_model):
            self.problem(
                _p("params", "pretrained_model_name_or_path"),
                f"must be empty, '...' or {base_model!r}: base_model chooses the model",
            )
        for key in PATH_KEYS:
            if params.get(key, "") not in PLACEHOLDERS:
                self.warnings.append(
                    {"field": key, "message": "ignored: lorabox chooses the job's folders"}
                )
        for key, reason in MUST_BE_EMPTY.items():
            if str(params.get(key, "") or "").strip():
                self.problem(_p("params", key), f"must be empty: {reason}")
        for key in SECRET_KEYS:
            if params.get(key):
                self.problem(_p("params", key), "secrets are refused and never stored")
        self._vae(params.get("vae") or "")
        self._network_weights(params.get("network_weights") or "")

    def _vae(self, vae: object) -> None:
        if vae in PLACEHOLDERS:
            return
        model = find_model(self.settings.models_dir, str(vae), "vae")
        if model is None:
            self.problem(_p("params", "vae"), f"no VAE model named {vae!r}: see GET /v1/models")
        else:
            self.resolved["vae"] = str(model.path.relative_to(self.settings.models_dir))

    def _network_weights(self, ref: object) -> None:
        if ref in PLACEHOLDERS:
            return
        loc = _p("params", "network_weights")
        match = WEIGHTS_REF.match(str(ref))
        if match is None:
            self.problem(loc, "must be 'job:<job id>/<artifact name>' of one of your jobs")
            return
        job = self.session.get(Job, match["job"])
        artifact = None
        if job is not None and job.owner_id == self.user.id:  # own jobs only, even for admins
            artifact = self.session.scalar(
                sa.select(Artifact).where(Artifact.job_id == job.id, Artifact.name == match["name"])
            )
        if artifact is None or artifact.kind not in ("lora", "checkpoint"):
            self.problem(loc, f"no LoRA artifact {ref!r} among your jobs")
            return
        self.resolved["network_weights"] = f"{artifact.job_id}/{artifact.name}"


def _trainer_payload(params: dict[str, Any], base_model: str) -> dict[str, Any]:
    """The payload the trainer parses: host-owned values replaced by what the server decides."""
    raw = dict(params)
    for key in PATH_KEYS:
        if key in raw:
            raw[key] = ""
    for key in ("vae", "network_weights"):
        raw.pop(key, None)  # resolved by the server; the worker passes paths
    raw["pretrained_model_name_or_path"] = base_model
    return raw


def validate_job(
    session: Session, settings: Settings, *, user: User, request: JobCreate
) -> ValidatedJob:
    check = _Checker(session, settings, user)
    dataset = check.dataset(request.dataset_id, "dataset_id")
    reg = check.dataset(request.reg_dataset_id, "reg_dataset_id")
    model = check.model(request.base_model)
    check.server_rules(request.params, request.base_model)
    if notify_problem := notify_url_problem(settings, request.notify_url):
        check.problem(_p("notify_url"), notify_problem)
    flagged = {p.loc[2] for p in check.problems if len(p.loc) > 2}
    parsed = None
    try:
        parsed = parse_payload(_trainer_payload(request.params, request.base_model))
    except PayloadError as exc:
        for problem in exc.problems:
            if problem.field not in flagged:
                check.problem(_p("params", *problem.field.split(".")), problem.message)
    if check.problems or parsed is None or dataset is None or model is None:
        raise InvalidInput(check.problems)
    try:
        plan = plan_training(
            parsed.config,
            dataset_path(settings, dataset),
            dataset_path(settings, reg) if reg is not None else None,
        )
    except InvalidDatasetError as exc:
        raise InvalidInput([Problem(_p("dataset_id"), exc.message)]) from exc
    warnings = check.warnings + [{"field": w.field, "message": w.message} for w in parsed.warnings]
    warnings += [{"field": n.field, "message": n.message} for n in plan.warnings]
    warnings += folder_warnings(dataset)  # what its upload assumed about repeats
    if reg is not None:
        warnings += [w | {"message": f"reg dataset: {w['message']}"} for w in folder_warnings(reg)]
    image_count = dataset.image_count + (reg.image_count if reg is not None else 0)
    estimate = None
    try:
        shape = JobShape(architecture_of(model), plan, image_count)
    except (OSError, ValueError, KeyError) as exc:  # the worker will say the same, louder
        warnings.append(
            {"field": "base_model", "message": f"no estimate: its configs can't be read ({exc})"}
        )
    else:
        raw = _trainer_payload(request.params, request.base_model)
        estimate = _estimate(session, settings, parsed.config, shape, raw, warnings)
    plan_dict = plan.to_dict() | {"warnings": warnings}
    check.resolved["base_model"] = str(model.path.relative_to(settings.models_dir))
    if model.config_dir is not None:
        check.resolved["base_config"] = str(model.config_dir.relative_to(settings.models_dir))
    normalized = {k: v for k, v in parsed.normalized.items() if k not in SECRET_KEYS}
    return ValidatedJob(
        config=parsed.config,
        normalized=normalized,
        plan=plan_dict,
        resolved=check.resolved,
        training_plan=plan,
        dataset=dataset,
        warnings=warnings,
        estimate=estimate,
    )


def _estimate(
    session: Session,
    settings: Settings,
    config: TrainingConfig,
    shape: JobShape,
    raw: dict[str, Any],
    warnings: list[dict[str, str | None]],
) -> dict[str, Any]:
    """The job's estimate on the counted workers; refuses a job none of them can hold
    (``does_not_fit``, naming the changes that would fit). With no counted worker the fit
    is unknown until a worker claims it: a warning, not a refusal."""
    workers = counted_workers(session, settings)
    estimate = estimate_job(config, shape, workers, headroom_bytes=settings.vram_headroom_bytes)
    need = f"{estimate.peak_vram_bytes / GIB:.1f} GiB"
    if estimate.phase != "step":  # caching holds more than a step (docs/estimates.md)
        need += f" (while {estimate.phase.replace('_', ' ')})"
    warnings += [{"field": "optimizer", "message": note} for note in estimate.notes]
    if not workers:
        warnings.append(
            {"field": None, "message": f"no worker is running: the job needs about {need} of "
             "GPU memory, which is checked when a worker claims it"}
        )  # fmt: skip
    elif not any(fit.fits for fit in estimate.per_worker):
        largest = max(w.total_memory_bytes for w in workers)
        capacity = largest - settings.vram_headroom_bytes
        suggestions = changes_that_fit(
            config, raw, lambda changed: footprint(changed, shape).device_bytes, capacity
        )
        message = (
            f"the job needs about {need} of GPU memory ({estimate.largest_parts()}); the "
            "largest worker has "
            f"{largest / GIB:.1f} GiB and {settings.vram_headroom_bytes / GIB:.1f} GiB is kept "
            "spare. "
        )
        message += (
            "These would fit: " + "; ".join(s.describe() for s in suggestions)
            if suggestions
            else "gradient checkpointing, a smaller batch, cached text-encoder outputs, "
            "AdamW8bit and a lower rank don't make it fit even together: lower max_resolution"
        )
        ctx = {
            "suggestions": [
                {"changes": s.changes, "peak_vram_bytes": s.device_bytes} for s in suggestions
            ]
        }
        raise InvalidInput([Problem(_p("params"), message, type="does_not_fit", ctx=ctx)])
    return estimate.to_dict()
