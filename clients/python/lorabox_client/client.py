"""``Lorabox``: a lorabox server, as a script sees it."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from lorabox_client.datasets import Dataset, dataset_archive, file_sha256
from lorabox_client.errors import LoraboxError, ValidationFailed
from lorabox_client.http import Http
from lorabox_client.jobs import Job

DEFAULT_URL = "http://127.0.0.1:8000"
# A dataset id that names no dataset (ids are uuid4 hex, whose 13th digit is always 4): it
# lets the server check everything but the dataset before one is uploaded.
NO_DATASET = "0" * 32
Params = Mapping[str, Any] | str | os.PathLike[str]


def _params(params: Params) -> dict[str, Any]:
    """The Kohya payload: a mapping, or the path of the JSON file the Kohya GUI saved."""
    if isinstance(params, Mapping):
        return dict(params)
    loaded = json.loads(Path(params).read_text())
    if not isinstance(loaded, dict):
        raise ValueError(f"{params}: a Kohya payload is a JSON object")
    return loaded


def _is_dataset_problem(problem_loc: tuple[str | int, ...]) -> bool:
    return tuple(problem_loc) == ("body", "dataset_id")


class Lorabox:
    """A lorabox server. ``url`` and ``token`` default to ``LORABOX_URL`` (else
    http://127.0.0.1:8000) and ``LORABOX_TOKEN``, as for the ``lorabox`` command."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout_s: float = 60,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        token = token or os.environ.get("LORABOX_TOKEN", "")
        if not token:
            raise LoraboxError(
                "no token: pass one or set LORABOX_TOKEN (lorabox user add NAME prints one; "
                "lorabox user token NAME replaces a lost one)"
            )
        url = url or os.environ.get("LORABOX_URL") or DEFAULT_URL
        self._http = Http(url, token, timeout_s=timeout_s, transport=transport)

    @property
    def url(self) -> str:
        return self._http.url

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Lorabox:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def models(self) -> list[dict[str, Any]]:
        """The base models and VAEs the server has: ``{name, kind, format, size_bytes,
        sha256}`` each."""
        items: list[dict[str, Any]] = self._http.json("GET", "/v1/models")["items"]
        return items

    def datasets(self) -> list[Dataset]:
        return [Dataset.from_json(d) for d in self._http.json("GET", "/v1/datasets")["items"]]

    def find_dataset(self, sha256: str) -> Dataset | None:
        """Your newest dataset uploaded from a zip with this SHA-256, if any."""
        items = self._http.json("GET", "/v1/datasets", params={"sha256": sha256})["items"]
        # Filtered here too: a server without the filter answers every dataset.
        same = [d for d in items if d.get("sha256") == sha256]
        return Dataset.from_json(same[0], reused=True) if same else None

    def upload(
        self, dataset: str | os.PathLike[str], *, name: str | None = None, reuse: bool = True
    ) -> Dataset:
        """Uploads a dataset folder (``<repeats>_<name>/`` folders of images and ``.txt``
        captions) or zip; ``reuse``: an identical one you uploaded before is used instead."""
        return self._dataset(Path(dataset), name=name, reuse=reuse)

    def _dataset(
        self,
        source: Path,
        *,
        name: str | None,
        reuse: bool,
        before_upload: Callable[[], None] | None = None,
    ) -> Dataset:
        with dataset_archive(source) as archive:
            if reuse and (found := self.find_dataset(file_sha256(archive))) is not None:
                return found
            if before_upload is not None:
                before_upload()
            with archive.open("rb") as handle:
                files = {"file": (archive.name, handle, "application/zip")}
                form = {"name": name or source.stem}
                # No read timeout: the server checks every image before it answers.
                uploaded = self._http.json("POST", "/v1/datasets", files=files, data=form,
                                           timeout=httpx.Timeout(60, read=None))  # fmt: skip
            return Dataset.from_json(uploaded)

    def check(
        self,
        params: Params,
        *,
        model: str,
        name: str | None = None,
        notify_url: str | None = None,
    ) -> None:
        """Checks a submission before its dataset exists: the model, the payload and the
        server's rules (``POST /v1/jobs/validate`` with no dataset). ValidationFailed lists
        every problem; what depends on the dataset (the plan, the GPU-memory fit) is checked
        by ``validate`` and at submit."""
        body = self._body(params, model, NO_DATASET, name, notify_url)
        try:
            self._http.json("POST", "/v1/jobs/validate", json=body)
        except ValidationFailed as exc:
            if not isinstance(exc.detail, list):
                raise
            rest = [p for p in exc.detail if not _is_dataset_problem(tuple(p.get("loc") or ()))]
            if rest:
                raise self._with_model_names(ValidationFailed(422, rest)) from None

    def validate(
        self,
        params: Params,
        *,
        model: str,
        dataset: str | Dataset,
        name: str | None = None,
        notify_url: str | None = None,
    ) -> dict[str, Any]:
        """The plan (steps, epochs, buckets, warnings) and the estimate, without queueing."""
        dataset_id = dataset.id if isinstance(dataset, Dataset) else dataset
        body = self._body(params, model, dataset_id, name, notify_url)
        try:
            plan: dict[str, Any] = self._http.json("POST", "/v1/jobs/validate", json=body)
        except ValidationFailed as exc:
            raise self._with_model_names(exc) from None
        return plan

    def submit(
        self,
        params: Params,
        *,
        dataset: str | os.PathLike[str] | Dataset,
        model: str,
        name: str | None = None,
        idempotency_key: str | None = None,
        notify_url: str | None = None,
        reuse_dataset: bool = True,
        priority: str | None = None,
    ) -> Job:
        """Queues a training job on ``dataset`` (a folder, a zip, or an uploaded Dataset).
        ``priority``: ``low``, ``normal`` (the default) or, for admins, ``high``.

        Nothing is uploaded for a submission the server would refuse (``check`` runs first),
        and a dataset you uploaded before with the same content is reused. The same
        ``idempotency_key`` and body return the original job (a retry after a timeout)."""
        payload = _params(params)
        if isinstance(dataset, Dataset):
            chosen = dataset
        else:
            chosen = self._dataset(
                Path(dataset),
                name=None,
                reuse=reuse_dataset,
                before_upload=lambda: self.check(
                    payload, model=model, name=name, notify_url=notify_url
                ),
            )
        body = self._body(payload, model, chosen.id, name, notify_url)
        if priority is not None:
            body["priority"] = priority
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        try:
            data = self._http.json("POST", "/v1/jobs", json=body, headers=headers)
        except ValidationFailed as exc:
            raise self._with_model_names(exc) from None
        return Job(self._http, data, dataset=chosen)

    def job(self, job_id: str) -> Job:
        return Job(self._http, self._http.json("GET", f"/v1/jobs/{job_id}"))

    def jobs(self, *, status: str | None = None, all_users: bool = False) -> Iterator[Job]:
        """Your jobs, newest first (``all_users``: everyone's, for admins)."""
        params: dict[str, Any] = {"limit": 100}
        if status:
            params["status"] = status
        if all_users:
            params["scope"] = "all"
        for data in self._http.paginate("/v1/jobs", params):
            yield Job(self._http, data)

    @staticmethod
    def _body(
        params: Params, model: str, dataset_id: str, name: str | None, notify_url: str | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"dataset_id": dataset_id, "base_model": model,
                                "params": _params(params)}  # fmt: skip
        if name is not None:
            body["name"] = name
        if notify_url is not None:
            body["notify_url"] = notify_url
        return body

    def _with_model_names(self, exc: ValidationFailed) -> ValidationFailed:
        """``exc``, its unknown-model problem naming the models the server has."""
        if not any(p.field == "base_model" for p in exc.problems):
            return exc
        try:
            names = [m["name"] for m in self.models() if m.get("kind") == "sdxl"]
        except LoraboxError:
            return exc  # the refusal matters more than the list
        have = f"this server has: {', '.join(names)}" if names else "this server has none"
        detail = [
            {**p, "msg": f"{p.get('msg')} ({have})"}
            if tuple(p.get("loc") or ()) == ("body", "base_model")
            else p
            for p in exc.detail
        ]
        return ValidationFailed(422, detail)
