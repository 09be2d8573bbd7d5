"""The Python client of a lorabox server: submit SDXL LoRA training jobs, follow them,
download the LoRA. HTTP only (httpx); nothing of the server, no torch.

    from lorabox_client import Lorabox

    lorabox = Lorabox()  # LORABOX_URL (default http://127.0.0.1:8000), LORABOX_TOKEN
    job = lorabox.submit("kohya.json", dataset="my_dataset/", model="sdxl-base")
    job.wait(progress=True)
    job.download("out/")
"""

from lorabox_client.client import DEFAULT_URL, Lorabox
from lorabox_client.datasets import Dataset
from lorabox_client.errors import (
    ApiError,
    BadRequest,
    Conflict,
    ConnectionFailed,
    DownloadCorrupted,
    Forbidden,
    InsufficientStorage,
    LoraboxError,
    NotFound,
    NothingToDownload,
    Problem,
    ServerError,
    StreamUnavailable,
    TooLarge,
    TooManyQueued,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)
from lorabox_client.events import Event
from lorabox_client.jobs import Job, TargetExists

__all__ = [
    "DEFAULT_URL",
    "ApiError",
    "BadRequest",
    "Conflict",
    "ConnectionFailed",
    "Dataset",
    "DownloadCorrupted",
    "Event",
    "Forbidden",
    "InsufficientStorage",
    "Job",
    "Lorabox",
    "LoraboxError",
    "NotFound",
    "NothingToDownload",
    "Problem",
    "ServerError",
    "StreamUnavailable",
    "TargetExists",
    "TooLarge",
    "TooManyQueued",
    "Unauthorized",
    "Unavailable",
    "ValidationFailed",
]
