"""Persistence: SQLAlchemy models and sessions. Imports no FastAPI (the worker uses it)."""

from core.db.session import Database
from core.db.tables import (
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
