"""``python -m bench.notify``: how long after its C-STORE response a study reaches a specialist's socket.

Starts ``teleconsult serve`` on free loopback ports with a fresh data
directory and the default number of gateway processes (so that studies also
arrive through gateway workers and the relay to the main process), adds a
township (TOWN01) under a county hospital and a county specialist with the
CLI, signs in, opens ``/api/events``, then sends ``--studies`` studies of one
small instance each over DICOM (pynetdicom, TCP_NODELAY, one association per
study) and times, for each, the C-STORE response at the sender to the
``study.stored`` event at the socket. Prints p50, p95 and max, overall and by
the process that took the association, and PASS when every study arrived and
p95 is under the target.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench.notify.measure import Listener, Sent, percentile, send_studies
from bench.notify.serve import CALLING_AE_TITLE, SPECIALIST, Served, teleconsult_serve

TARGET_P95_MS = 250.0
_ARRIVAL_TIMEOUT = 30.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.notify", description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=200, help="studies to send (default 200)")
    parser.add_argument(
        "--workers", type=int, help="TELECONSULT_DICOM_WORKERS (default: unset, one process per CPU)"
    )
    parser.add_argument(
        "--pause", type=float, default=0.0, help="seconds between two studies (default 0: back to back)"
    )
    parser.add_argument("--target-ms", type=float, default=TARGET_P95_MS, help="p95 target (default 250)")
    parser.add_argument("--work-dir", type=Path, help="where the data directory goes (default: temp)")
    return parser


def _revision() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "teleconsult", "dicom_gateway"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (f" + uncommitted changes in {len(changed)} files" if changed else "")


def _row(name: str, latencies_ms: list[float]) -> str:
    if not latencies_ms:
        return f"{name:<16} {0:>7}"
    return (
        f"{name:<16} {len(latencies_ms):>7} {percentile(latencies_ms, 50):>8.1f} "
        f"{percentile(latencies_ms, 95):>8.1f} {max(latencies_ms):>8.1f}"
    )


def _latencies(sent: list[Sent], listener: Listener, since: str) -> dict[str, float]:
    """Milliseconds from each study's C-STORE request or response (``since``) to its event."""
    return {
        s.study_instance_uid: (listener.arrivals[s.study_instance_uid] - getattr(s, since)) * 1000
        for s in sent
        if s.study_instance_uid in listener.arrivals
    }


def _table(served: Served, sent: list[Sent], latency: dict[str, float]) -> None:
    pids = served.association_pids()
    by_process: dict[str, list[float]] = {"main process": [], "gateway workers": []}
    if len(pids) == len(sent):  # sequential associations: the n-th log line is the n-th study
        for pid, study in zip(pids, sent, strict=True):
            if study.study_instance_uid in latency:
                path = "main process" if pid == served.process.pid else "gateway workers"
                by_process[path].append(latency[study.study_instance_uid])
    print(f"{'path':<16} {'studies':>7} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    print(_row("all", list(latency.values())))
    for name, values in by_process.items():
        print(_row(name, values))


def _report(
    served: Served,
    sent: list[Sent],
    listener: Listener,
    missing: set[str],
    target_ms: float,
    load_before: str,
) -> bool:
    after_response = _latencies(sent, listener, "responded")
    after_request = _latencies(sent, listener, "requested")
    pids = served.association_pids()
    main = pids.count(served.process.pid)
    workers = len({pid for pid in pids if pid != served.process.pid})
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    cpus = len(os.sched_getaffinity(0))
    print(f"date          {datetime.now(UTC):%Y-%m-%d %H:%M UTC}")
    print(f"machine       {cpus} CPUs, Linux {platform.release()}, Python {platform.python_version()}")
    print(f"teleconsult   {_revision()}")
    print(
        f"gateway       {served.workers + 1} processes (the main one and {served.workers} worker(s)); "
        f"associations taken by the main process {main}, by {workers} worker(s) {len(pids) - main}"
    )
    print(f"load average  {load_before} before the run, {load} after")
    print()
    print("C-STORE response received by the sender -> study.stored at the specialist's socket (target)")
    _table(served, sent, after_response)
    early = sum(1 for value in after_response.values() if value < 0)
    print(f"({early} events arrived before their C-STORE response: negative latency)")
    print()
    print("C-STORE request sent -> study.stored (transfer, parse, file, index, event)")
    _table(served, sent, after_request)
    print()
    failed_stores = sum(1 for s in sent if s.status != 0)
    p95 = percentile(list(after_response.values()), 95)
    ok = not missing and not failed_stores and len(sent) > 0 and p95 < target_ms
    print(
        f"received {len(after_response)} of {len(sent)} study.stored "
        f"({failed_stores} C-STORE failures, {listener.other} other events); "
        f"target p95 < {target_ms:g} ms after the response: {'PASS' if ok else 'FAIL'}"
    )
    if missing:
        print(f"missing: {', '.join(sorted(missing)[:5])}{' ...' if len(missing) > 5 else ''}")
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    load_before = " ".join(f"{value:.2f}" for value in os.getloadavg())
    with (
        tempfile.TemporaryDirectory(prefix="bench-notify-", dir=args.work_dir) as work,
        teleconsult_serve(Path(work), workers=args.workers) as served,
    ):
        listener = Listener(served.http_port, served.token(SPECIALIST))
        try:
            sent = send_studies(served.dicom_port, args.studies, CALLING_AE_TITLE, args.pause)
            missing = listener.wait_for({s.study_instance_uid for s in sent}, _ARRIVAL_TIMEOUT)
        finally:
            listener.close()
        ok = _report(served, sent, listener, missing, args.target_ms, load_before)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
