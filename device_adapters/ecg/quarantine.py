"""Files that cannot be imported: kept under ``<data dir>/quarantine/``, never dropped.

Each file keeps its name, with ``<name>.reason.txt`` beside it saying what
is wrong, where it came from and when, in words an operator can act on (a
WFDB record's files travel together; the reason is named after the header).
Should a file of that name already be in quarantine, the newcomers go to
a subfolder named after the time instead, so nothing is overwritten.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

__all__ = ["Quarantine", "safe_file_name"]

logger = logging.getLogger(__name__)


class Quarantine:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _folder(self, names: Sequence[str]) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        wanted = [*names, f"{names[0]}.reason.txt"]
        if not any((self.root / name).exists() for name in wanted):
            return self.root
        stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
        for attempt in range(1, 1000):
            folder = self.root / (stamp if attempt == 1 else f"{stamp}-{attempt}")
            try:
                folder.mkdir()
            except FileExistsError:
                continue
            return folder
        raise OSError(f"no free name in {self.root} for {names[0]}")

    def _write_reason(
        self, folder: Path, names: Sequence[str], reason: str, source: str, organisation: str
    ) -> Path:
        path = folder / f"{names[0]}.reason.txt"
        path.write_text(
            f"file: {', '.join(names)}\n"
            f"source: {source}\n"
            f"organisation: {organisation or '-'}\n"
            f"time: {datetime.now().astimezone().isoformat(timespec='seconds')}\n"
            f"reason: {reason}\n"
            "to retry: correct the file (or the setting the reason names) and drop it into the ECG inbox, "
            "or upload it, again\n",
            encoding="utf-8",
        )
        return path

    def move(self, paths: Sequence[Path], *, reason: str, source: str, organisation: str = "") -> Path:
        """Move dropped files here; returns the reason file."""
        names = [path.name for path in paths]
        folder = self._folder(names)
        for path in paths:
            try:
                os.replace(path, folder / path.name)
            except OSError:  # another file system
                shutil.move(str(path), folder / path.name)
        logger.warning("quarantined %s from %s: %s", ", ".join(names), source, reason)
        return self._write_reason(folder, names, reason, source, organisation)

    def keep(self, files: Mapping[str, bytes], *, reason: str, source: str, organisation: str = "") -> Path:
        """Write uploaded files here; returns the reason file."""
        names = [safe_file_name(name) for name in files]
        folder = self._folder(names)
        for name, content in zip(names, files.values(), strict=True):
            (folder / name).write_bytes(content)
        logger.warning("quarantined %s from %s: %s", ", ".join(names), source, reason)
        return self._write_reason(folder, names, reason, source, organisation)


def safe_file_name(name: str) -> str:
    """A file name from an upload, without any folder part, never hidden or empty."""
    base = Path(name.replace("\\", "/")).name.strip().lstrip(".")
    cleaned = "".join(ch if ch.isprintable() and ch not in '<>:"|?*' else "_" for ch in base)[:120]
    return cleaned or "upload"
