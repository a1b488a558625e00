"""Send a corpus with DCMTK ``storescu`` and time it.

DCMTK is the sender because it is what devices and PACS in the field look
like, and because a C++ sender never becomes the bottleneck that a Python
one would. ``TCP_NODELAY=1`` is set in its environment: without it DCMTK
leaves Nagle on and every small C-STORE waits ~40 ms for a delayed ACK, which
would measure the kernel's timer instead of the receiver.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.ingest.corpus import GROUPS, Corpus
from bench.ingest.receivers import CALLING_AE_TITLE, BenchError, Endpoint, log_tail

__all__ = ["STORESCU", "SendResult", "send_corpus", "storescu_version"]

STORESCU = "storescu"
_SEND_TIMEOUT = 1800.0


@dataclass(frozen=True, slots=True)
class SendResult:
    seconds: float
    processes: int


def _dcmtk_environment() -> dict[str, str]:
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    return env


def storescu_version() -> str:
    completed = subprocess.run(
        [STORESCU, "--version"], env=_dcmtk_environment(), capture_output=True, text=True, check=True
    )
    return completed.stdout.splitlines()[0].strip("$ ").strip()


def _batches(corpus: Corpus, associations: int) -> list[list[Path]]:
    """Directories per storescu process: all groups in one, or one group each.

    A corpus with fewer instances than groups (tiny quick runs) has empty
    groups; they get no process, so fewer than ``associations`` may run.
    """
    groups = corpus.groups
    if associations == 1:
        return [groups]
    if associations == GROUPS:
        return [[group] for group in groups]
    raise BenchError(f"{associations} associations: the corpus is split for 1 or {GROUPS} only")


def _command(endpoint: Endpoint, directories: list[Path]) -> list[str]:
    return [
        STORESCU,
        "-aet",
        CALLING_AE_TITLE,
        "-aec",
        endpoint.ae_title,
        "--scan-directories",
        endpoint.host,
        str(endpoint.port),
        *(str(directory) for directory in directories),
    ]


def _wait_all(processes: list[subprocess.Popen[bytes]], deadline: float) -> None:
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"storescu still running after {_SEND_TIMEOUT:.0f} s") from exc


def send_corpus(corpus: Corpus, associations: int, endpoint: Endpoint, log_dir: Path) -> SendResult:
    """Run the storescu processes at once; wall time from the first start to the last exit.

    Raises BenchError if a storescu fails (it halts on the first refused
    instance and exits non-zero) or does not finish in time.
    """
    batches = _batches(corpus, associations)
    env = _dcmtk_environment()
    logs = [log_dir / f"storescu-{number}.log" for number in range(len(batches))]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        started = time.perf_counter()
        for batch, log_path in zip(batches, logs, strict=True):
            with open(log_path, "wb") as log:
                processes.append(
                    subprocess.Popen(_command(endpoint, batch), env=env, stdout=log, stderr=subprocess.STDOUT)
                )
        _wait_all(processes, time.monotonic() + _SEND_TIMEOUT)
        seconds = time.perf_counter() - started
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for process, log_path in zip(processes, logs, strict=True):
        if process.returncode != 0:
            output = log_tail(log_path) or "(no output: a C-STORE was probably refused)"
            raise BenchError(f"storescu exited with {process.returncode}: {output}")
    return SendResult(seconds=seconds, processes=len(processes))
