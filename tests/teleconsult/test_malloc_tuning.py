"""The server processes hand large freed blocks back to the system.

Eight threads allocate and free blocks of 6 to 16 MiB, as association and
HTTP worker threads do with inflated headers and STOW-RS parts. Without the
tuning glibc raises its mmap threshold after the first free and keeps the
later blocks in the threads' arenas; with it the process's RSS comes back.
Each case runs in a fresh interpreter: mallopt changes the whole process.
"""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator")

_PROBE = """
import sys, threading
from teleconsult.malloc_tuning import tune_malloc
applied = tune_malloc() if sys.argv[1] == "tuned" else False

def rss_mib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024

def work():
    for size in (16, 8, 12, 6, 10):
        block = bytearray(bytes(size << 20))
        del block

before = rss_mib()
threads = [threading.Thread(target=work) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(applied, rss_mib() - before)
"""


def _rise(mode: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True, env=env, timeout=60
    )
    applied, rise = done.stdout.split()
    return applied, int(rise)


def test_large_freed_blocks_go_back_to_the_system() -> None:
    applied, tuned = _rise("tuned")
    assert applied == "True"
    assert tuned < 8, f"RSS rose {tuned} MiB with the tuning"
    _, untuned = _rise("untuned")
    assert untuned >= 32, f"without the tuning RSS rose only {untuned} MiB: the probe shows nothing"


def test_an_operators_setting_is_kept() -> None:
    applied, _ = _rise("tuned", {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "PATH": "/usr/bin:/bin"})
    assert applied == "False"
