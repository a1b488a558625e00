"""WADO-RS refuses to parse a stored deflated data set that inflates past a limit (422).

The instance itself is still retrieved as stored; metadata, bulk data,
frames, rendering and conversion, which parse it, are refused. The measuring
is ``storage/deflated.py``'s.
"""

from __future__ import annotations

from pathlib import Path

from teleconsult.api.dicomweb.errors import UnprocessableInstanceError
from teleconsult.storage import deflated
from teleconsult.storage.deflated import is_deflated

__all__ = ["MAX_INFLATED_BYTES", "check_inflated_size", "is_deflated"]

MAX_INFLATED_BYTES = deflated.MAX_INFLATED_BYTES


def check_inflated_size(path: Path, limit: int | None = None) -> None:
    """Return if ``path`` is not deflated or inflates to at most ``limit`` bytes; else refuse (422)."""
    limit = MAX_INFLATED_BYTES if limit is None else limit
    if deflated.inflates_past(path, limit):
        raise UnprocessableInstanceError(
            f"the stored data set is deflated and inflates to more than {limit >> 20} MiB: "
            "it is sent as stored (WADO-RS retrieve) but not parsed for metadata, bulk data, "
            "frames, rendering or conversion"
        )
