"""The stem of a job's files when the payload leaves ``output_name`` to the host.

sd-scripts names an unnamed run ``last`` (``library/train_util.py: get_last_ckpt_name``
falls back to ``"last"`` when ``args.output_name`` is None; the Kohya GUI's placeholder
``"..."`` means the same, docs/kohya-semantics.md "Unset values"). One trainer run per
folder can live with that; a service can't: every job would save ``last.safetensors`` and
two downloads side by side would collide. So the server decides at submit, once, and the
config the worker runs carries a concrete name: the job's ``name`` made safe for a file
name, else the first 8 hex digits of its id. The trainer adds Kohya's suffixes to it
(``-000002``, ``-step00000010``, ``-state``; ``trainer/saving.py``).

A name the user wrote (``"my-style"``, even ``"last"``) is theirs and kept.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

UNSET = (None, "", "...")  # what sd-scripts and the Kohya GUI read as "no name"
SHORT_ID = 8
MAX_STEM = 64
# Letters, digits and ``._-`` only: the same file name on every filesystem, in a URL and in
# a Content-Disposition header, without quoting.
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_stem(name: str) -> str:
    """``name`` as a portable file stem; "" when nothing of it is left."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    stem = _UNSAFE.sub("_", ascii_name)[:MAX_STEM]
    return stem.strip("._-")


def job_output_name(params: Mapping[str, Any], *, job_name: str | None, job_id: str) -> str | None:
    """The stem the server picks for the job's files, or None when the payload names them."""
    if params.get("output_name") not in UNSET:
        return None
    return safe_stem(job_name or "") or job_id[:SHORT_ID]
