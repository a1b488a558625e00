"""One ``serve`` per data directory.

At start ``serve`` removes the temporary files a crash left in
``<data dir>/tmp``; a second ``serve`` on the same directory would remove
the files the first is writing, and both would sweep, migrate and relay
events as if alone. So ``serve`` holds an exclusive lock on
``<data dir>/serve.lock`` for as long as it runs (the kernel releases it
when the process ends, however it ends) and a second one stops at once with
the first one's process id. Other commands (``study find``, ``backup``...)
do not take it: they never sweep.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from teleconsult.errors import ConflictError

__all__ = ["DataDirectoryInUseError", "lock_data_directory"]

LOCK_NAME = "serve.lock"


class DataDirectoryInUseError(ConflictError):
    code = "data-directory-in-use"


def lock_data_directory(data_dir: Path) -> int:
    """Take the data directory for this process; return the lock's descriptor (keep it open).

    Raises
    ------
    DataDirectoryInUseError
        Another running ``serve`` holds it.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise DataDirectoryInUseError(
            f"another teleconsult serve (process {holder}) is using the data directory {data_dir}; "
            "stop it first, or give this one its own TELECONSULT_DATA_DIR"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
