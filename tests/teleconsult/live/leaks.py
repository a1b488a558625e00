"""What a live session may leave behind in the process serving it: tasks, threads, sockets, memory."""

from __future__ import annotations

import asyncio
import os
import threading
from collections import Counter
from pathlib import Path

__all__ = ["added", "fd_kinds", "open_fds", "rss_mib", "server_tasks", "threads_but_pools", "udp_sockets"]

# Threads that come and go with load: the pools' workers and the DICOM gateway's pacing thread,
# which runs while an association of any earlier test is busy and then ends by itself.
_POOLS = ("asyncio_", "uvloop_", "AnyIO worker thread", "ThreadPoolExecutor", "dicom-reactor-pacing")


def server_tasks() -> list[str]:
    """The server loop's tasks but the one asking (``Served.on_server`` runs this in a task)."""
    return sorted(t.get_name() for t in asyncio.all_tasks() if t is not asyncio.current_task())


def threads_but_pools() -> list[str]:
    """Threads but those of the pools (aiortc's decoders are counted)."""
    return sorted(t.name for t in threading.enumerate() if not t.name.startswith(_POOLS))


def added(before: list[str], now: list[str]) -> list[str]:
    """Names in ``now`` beyond those of ``before`` (counted: two threads may share a name)."""
    return sorted((Counter(now) - Counter(before)).elements())


def _index_sockets() -> set[str]:
    """Inodes of TCP sockets to PostgreSQL's port: the index's pooled connections."""
    inodes = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        path = Path(table)
        if path.exists():
            for line in path.read_text().splitlines()[1:]:
                fields = line.split()
                if fields[2].endswith(":1538"):  # remote port 5432
                    inodes.add(fields[9])
    return inodes


def fd_kinds() -> list[str]:
    """What the open descriptors are (``socket``, ``anon_inode:[eventfd]``, a path), to name a leak.

    The index's pooled connections (SQLite files, PostgreSQL sockets) are left
    out: the pool keeps up to its size open, whatever the sessions did.
    """
    index = _index_sockets()
    kinds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.endswith((".sqlite3", ".sqlite3-wal", ".sqlite3-shm")) or target[8:-1] in index:
            continue
        kinds.append("socket" if target.startswith("socket:[") else target)
    return sorted(kinds)


def open_fds() -> int:
    """Open descriptors but the index's pooled connections."""
    return len(fd_kinds())


def udp_sockets() -> int:
    """UDP sockets this process holds open (ICE candidates each hold one)."""
    inodes = set()
    for table in ("/proc/self/net/udp", "/proc/self/net/udp6"):
        path = Path(table)
        if path.exists():
            for line in path.read_text().splitlines()[1:]:
                inodes.add(line.split()[9])
    held = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            held += 1
    return held


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")
