"""A job submission as the client sends it: the one description of ``POST /v1/jobs``'s body.

The HTTP edge takes it as the request body, and the job service validates and records it
as it comes (``core.jobs.validation``, ``core.jobs.service``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# The scheduler's tiers, highest first (docs/scheduling.md, "Priorities and holds").
Priority = Literal["high", "normal", "low"]


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Empty ids and names can't name anything: refused here, and the OpenAPI document says so.
    dataset_id: str = Field(min_length=1, max_length=64, description="from POST /v1/datasets")
    base_model: str = Field(min_length=1, max_length=200, description="a name from GET /v1/models")
    params: dict[str, Any] = Field(description="The Kohya_SS GUI JSON payload, as is")
    reg_dataset_id: str | None = Field(default=None, min_length=1, max_length=64)
    name: str | None = Field(default=None, max_length=200)
    notify_url: str | None = Field(
        default=None,
        min_length=1,
        max_length=2000,
        description="POSTed a signed JSON body when the job ends, with X-Lorabox-Signature "
        "and the Standard Webhooks headers (docs/webhooks.md; the secrets are in GET /v1/me); "
        "only hosts on the server's LORABOX_WEBHOOK_ALLOWED_HOSTS",
    )

    priority: Priority = Field(
        default="normal",
        description="the scheduler's tier (docs/scheduling.md, Priorities and holds): "
        "anyone may ask for low; only admins for high",
    )

    def digest(self) -> str:
        """SHA-256 of the canonical body: an Idempotency-Key replay must carry the same one."""
        fields = self.model_dump()
        if fields["notify_url"] is None:  # digests of bodies from before webhooks stay the same
            del fields["notify_url"]
        if fields["priority"] == "normal":  # ... and of bodies from before priorities
            del fields["priority"]
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()
