"""Persistence: SQLAlchemy models and sessions. Imports no FastAPI (the worker uses it)."""

from api.db.models import (
    Artifact,
    Base,
    Dataset,
    Job,
    JobEvent,
    JobMetric,
    JobStatus,
    QueueState,
    User,
)
from api.db.session import Database

__all__ = [
    "Artifact",
    "Base",
    "Database",
    "Dataset",
    "Job",
    "JobEvent",
    "JobMetric",
    "JobStatus",
    "QueueState",
    "User",
]
