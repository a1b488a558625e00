"""Private directories of a running ``serve``: the event relay's socket, multiprocess metrics.

They live in the system's temporary directory, named after the process that
made them (``teleconsult-events-<pid>-…``), so that a ``serve`` killed before
it could remove its own is cleaned up by the next one: ``sweep_dead`` removes
those whose process is gone. A socket path must fit in ``sun_path`` (108
bytes): when ``TMPDIR`` is too long for that, ``/tmp`` is used instead.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

__all__ = ["private_dir", "sweep_dead"]

logger = logging.getLogger(__name__)

KINDS = ("events", "metrics")
# sun_path holds 107 bytes and a NUL; "/teleconsult-events-<pid>-<8 random>/events.sock" takes up to 51.
_LONGEST_BASE = 56
# Only ever a parent for mkdtemp (a new 0700 directory with a random name).
_SHORT_BASE = Path("/tmp")  # noqa: S108
_NAME = re.compile(r"teleconsult-(?:events|metrics)-(\d+)-[A-Za-z0-9_]+")


def _bases() -> list[Path]:
    preferred = Path(tempfile.gettempdir())
    return [preferred] if preferred == _SHORT_BASE else [preferred, _SHORT_BASE]


def _base() -> Path:
    preferred = Path(tempfile.gettempdir())
    return preferred if len(os.fsencode(str(preferred))) <= _LONGEST_BASE else _SHORT_BASE


def private_dir(kind: str) -> Path:
    """A new directory (mode 0700) for this process's ``kind`` of runtime files."""
    if kind not in KINDS:
        raise ValueError(f"unknown runtime directory kind {kind!r}")
    return Path(tempfile.mkdtemp(prefix=f"teleconsult-{kind}-{os.getpid()}-", dir=_base()))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def sweep_dead() -> int:
    """Remove the runtime directories of processes that no longer run; return how many."""
    removed = 0
    uid = os.getuid()
    for base in _bases():
        try:
            entries = list(base.iterdir())
        except OSError:
            continue
        for entry in entries:
            match = _NAME.fullmatch(entry.name)
            if match is None:
                continue
            try:
                info = entry.lstat()
            except OSError:
                continue
            if info.st_uid != uid or not entry.is_dir() or entry.is_symlink():
                continue
            if _alive(int(match.group(1))):
                continue
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    if removed:
        logger.warning("removed %d runtime directories of teleconsult processes that had stopped", removed)
    return removed
