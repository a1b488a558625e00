"""glibc's allocator told to hand large blocks back, in the server processes.

A serving process runs many threads (an association each, the HTTP worker
pool) that now and then need a large transient buffer: a deflated data set's
header inflated (up to 16 MiB), a STOW-RS part, an instance assembled from
its PDUs. glibc maps such a block on its own and unmaps it when freed, but
the first time one is freed it raises its mmap threshold (up to 32 MiB), so
that from then on blocks of that size come from the threads' arenas (up to
8 per core), where freed memory stays with the process. Measured with the
malformed-input campaign (`bench/reliability`, 1,500 + 1,500 hostile files,
seed 1): the server's RSS rose from 383 to 757 MiB (818 at most); with a
fixed threshold of 4 MiB, from 383 to 402 MiB (515 at most); limiting the
arenas to 2 as well changed little more (394, 506 at most), so the arenas
are left as they are.

A fixed threshold is what ``MALLOC_MMAP_THRESHOLD_`` sets when a process
starts: an operator who sets it keeps their value. Blocks under 4 MiB (the
2 MiB blocks WADO-RS reads files in, among others) still come from the
arenas. Elsewhere than glibc nothing is changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

__all__ = ["MMAP_THRESHOLD_BYTES", "tune_malloc"]

logger = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3  # mallopt(3)'s parameter, from glibc's <malloc.h>
MMAP_THRESHOLD_BYTES = 4 << 20


def tune_malloc() -> bool:
    """Fix glibc's mmap threshold unless the environment sets it; whether it was set here."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or platform.libc_ver()[0] != "glibc":
        return False
    path = ctypes.util.find_library("c")
    if path is None:
        return False
    if ctypes.CDLL(path).mallopt(ctypes.c_int(_M_MMAP_THRESHOLD), ctypes.c_int(MMAP_THRESHOLD_BYTES)) != 1:
        logger.warning("glibc refused an mmap threshold of %d bytes", MMAP_THRESHOLD_BYTES)
        return False
    return True
