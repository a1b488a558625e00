"""``python -m bench.ingest``: measure C-STORE ingest of teleconsult against a bare baseline.

For each instance class and for 1 and 4 parallel associations, DCMTK
``storescu`` sends the class's synthetic corpus to a fresh bare pynetdicom
receiver (fsync, no parsing, no index) and to a fresh ``teleconsult serve``
(fsync, parsing, SQL index). Both run in the same benchmark run, alternating,
so they see the same machine state. Every stored instance is counted back;
anything missing is a FAIL and a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import FrameType
from typing import NoReturn

from bench.ingest.corpus import CLASS_NAMES, Corpus, ensure_corpus
from bench.ingest.measurement import NOISY_OTHER_CORES, Measurement, measure, median_seconds, progress_line
from bench.ingest.receivers import BASELINE, RECEIVERS, TELECONSULT, BenchError, receiver_session
from bench.ingest.report import (
    TARGET_RATIO,
    Row,
    environment,
    format_environment,
    format_table,
    load_average,
)
from teleconsult.config import Settings

_HERE = Path(__file__).resolve().parent
_ASSOCIATIONS = (1, 4)


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How every measurement of one benchmark run is made."""

    repeats: int
    work_dir: Path
    database_url: str | None
    quiet_threshold: float
    quiet_timeout: float
    workers: int = 1  # teleconsult's gateway processes


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest",
        description="Measure C-STORE ingest of teleconsult against a bare pynetdicom receiver.",
    )
    parser.add_argument("--quick", action="store_true", help="small corpora, one repeat: a smoke run")
    parser.add_argument(
        "--database-url",
        help="teleconsult's index, e.g. postgresql://postgres@127.0.0.1:5432/test "
        "(a fresh schema per run); default: embedded SQLite",
    )
    parser.add_argument(
        "--repeat", type=int, help="runs per measurement, median reported (default 3, quick 1)"
    )
    parser.add_argument(
        "--classes", default=",".join(CLASS_NAMES), help=f"comma-separated subset of {','.join(CLASS_NAMES)}"
    )
    parser.add_argument(
        "--corpus-dir", type=Path, default=_HERE / "corpus", help="cache of generated corpora"
    )
    parser.add_argument(
        "--work-dir", type=Path, help="parent of the receivers' data directories (default: temp)"
    )
    parser.add_argument("--results-dir", type=Path, default=_HERE / "results", help="where results JSON goes")
    parser.add_argument(
        "--quiet-threshold",
        type=float,
        default=0.15,
        help="before each measurement, wait until at most this share of all CPUs is busy (default 0.15)",
    )
    parser.add_argument(
        "--quiet-timeout",
        type=float,
        help="longest wait for a quiet machine per measurement, in seconds; 0 = never wait "
        "(default 30, quick 0)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="teleconsult's gateway processes (TELECONSULT_DICOM_WORKERS); default 0: the shipped "
        "default, one per CPU",
    )
    parser.add_argument(
        "--check-target", action="store_true", help=f"also exit non-zero if a ratio is below {TARGET_RATIO}"
    )
    return parser


def _classes(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(CLASS_NAMES))
    if unknown:
        raise SystemExit(f"unknown class {', '.join(unknown)}; choose from {', '.join(CLASS_NAMES)}")
    return names


def _measure(
    corpus: Corpus, associations: int, receiver: str, repeat: int, options: RunOptions
) -> Measurement:
    return measure(
        corpus,
        associations,
        receiver,
        repeat,
        session=partial(
            receiver_session, receiver, database_url=options.database_url, workers=options.workers
        ),
        run_dir=options.work_dir / f"{corpus.name}-{associations}-{receiver}-{repeat}",
        quiet_threshold=options.quiet_threshold,
        quiet_timeout=options.quiet_timeout,
        gateway_processes=options.workers if receiver == TELECONSULT else None,
    )


def _rows(corpora: Sequence[Corpus], measurements: Sequence[Measurement]) -> list[Row]:
    rows = []
    for corpus in corpora:
        for associations in _ASSOCIATIONS:
            runs = {
                receiver: [
                    m
                    for m in measurements
                    if (m.class_name, m.associations, m.receiver) == (corpus.name, associations, receiver)
                ]
                for receiver in RECEIVERS
            }
            rows.append(
                Row(
                    corpus.name,
                    associations,
                    corpus.count,
                    corpus.total_bytes,
                    median_seconds(runs[BASELINE]),
                    median_seconds(runs[TELECONSULT]),
                )
            )
    return rows


def _run_all(corpora: Sequence[Corpus], options: RunOptions) -> list[Measurement]:
    """Every (class, associations) pair, receivers alternating within each repeat."""
    measurements = []
    for corpus in corpora:
        for associations in _ASSOCIATIONS:
            for repeat in range(options.repeats):
                for receiver in RECEIVERS:
                    measurement = _measure(corpus, associations, receiver, repeat, options)
                    print(progress_line(measurement, corpus, measurement.receiver), flush=True)
                    measurements.append(measurement)
    return measurements


def _save(
    results_dir: Path,
    info: dict[str, str],
    rows: Sequence[Row],
    measurements: Sequence[Measurement],
    *,
    quick: bool,
) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = results_dir / f"ingest-{stamp}-{'quick' if quick else 'full'}.json"
    path.write_text(
        json.dumps(
            {
                "environment": info,
                "rows": [asdict(row) for row in rows],
                "measurements": [asdict(m) for m in measurements],
            },
            ensure_ascii=False,
            indent=2,
        )
    )
    return path


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> NoReturn:
    """Turn SIGTERM into SystemExit so every ``finally`` stops its receiver."""
    raise SystemExit(128 + signum)


def _benchmark(args: argparse.Namespace, classes: Sequence[str], work_dir: Path) -> tuple[int, bool]:
    """Run every measurement and print the table; returns (exit status, whether to keep the logs)."""
    repeats = args.repeat if args.repeat is not None else 1 if args.quick else 3
    quiet_timeout = args.quiet_timeout if args.quiet_timeout is not None else 0.0 if args.quick else 30.0
    info = environment(args.database_url, work_dir)
    workers = Settings(dicom_workers=max(0, args.workers)).gateway_processes()
    info["gateway processes"] = f"{workers} (TELECONSULT_DICOM_WORKERS={max(0, args.workers)})"
    print(format_environment(info), flush=True)
    corpora = [ensure_corpus(name, args.corpus_dir, quick=args.quick) for name in classes]
    for corpus in corpora:
        size = corpus.total_bytes / 1e6
        print(f"corpus {corpus.name:5} {corpus.count} instances, {size:.1f} MB in {corpus.root}")
    print(f"{repeats} run(s) per measurement, median wall time; MB = 10^6 bytes", flush=True)
    options = RunOptions(repeats, work_dir, args.database_url, args.quiet_threshold, quiet_timeout, workers)
    measurements = _run_all(corpora, options)
    rows = _rows(corpora, measurements)
    print()
    print(format_table(rows))
    noisy = sum(1 for m in measurements if m.noisy)
    print(
        f"{noisy} of {len(measurements)} measurements NOISY (other processes over "
        f"{NOISY_OTHER_CORES} cores); load average after the run: {load_average():.2f}"
    )
    print(f"results: {_save(args.results_dir, info, rows, measurements, quick=args.quick)}")
    if not all(m.ok for m in measurements):
        print(f"FAIL: some instances were not stored or a run failed; logs kept in {work_dir}")
        return 1, True
    below = [row for row in rows if row.ratio is not None and row.ratio < TARGET_RATIO]
    if below:
        names = ", ".join(f"{row.class_name}/{row.associations}" for row in below)
        print(f"below the {TARGET_RATIO}x target: {names}")
    return (1 if below and args.check_target else 0), False


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    classes = _classes(args.classes)
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="bench-ingest-", dir=args.work_dir))
    keep_logs = False
    try:
        status, keep_logs = _benchmark(args, classes, work_dir)
        return status
    except BenchError as exc:
        print(f"bench.ingest: {exc}", file=sys.stderr)
        return 2
    finally:
        if not keep_logs:
            shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
