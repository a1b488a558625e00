"""``python -m bench.scale``: teleconsult scaled out, next to Orthanc, and across two replicas.

Part one sends ``bench.ingest``'s synthetic corpus with DCMTK ``storescu``
over 1 and 4 associations to a fresh Orthanc (Debian package, default SQLite
index, fsync on), to teleconsult with one gateway process and to teleconsult
with N, alternating, and counts every instance back. Part two stores studies
through one ``teleconsult serve`` replica and times ``study.stored`` on a
specialist's WebSocket on another, the two sharing a PostgreSQL schema and a
Redis stream. Targets: teleconsult with N processes at least Orthanc's rate
on every class at 4 associations; cross-replica notification p95 < 250 ms.

Exit status: 0 every instance counted back, every study announced and every
target met; 1 something was not stored, not announced or a run failed (the
logs are kept); 2 the benchmark could not be set up (database, broker,
Orthanc); 3 everything was counted but a target was missed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from bench.ingest.corpus import CLASS_NAMES, Corpus, ensure_corpus
from bench.ingest.receivers import BenchError
from bench.ingest.report import environment, format_environment, load_average
from bench.scale.ingest import NOISY_OTHER_CORES, IngestPlan, Measurement, Row, rows, run_matrix
from bench.scale.latency import TARGET_P95_MS, LatencyResult, measure_cross_replica
from bench.scale.orthanc import ORTHANC_DEFAULT_MAX_PDU, orthanc_session
from bench.scale.replicas import DEFAULT_BROKER_URL, DEFAULT_DATABASE_URL, replica_pair
from bench.scale.report import format_ingest_table, format_latency, progress_line

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_SETUP = 2
EXIT_TARGET_MISSED = 3
_INGEST_CORPUS_DIR = Path(__file__).resolve().parents[1] / "ingest" / "corpus"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale",
        description="C-STORE ingest of teleconsult (1 and N gateway processes) next to Orthanc, "
        "and study.stored latency across two replicas.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small corpora, one run, 50 studies: a smoke run"
    )
    parser.add_argument(
        "--classes", default=",".join(CLASS_NAMES), help=f"comma-separated subset of {','.join(CLASS_NAMES)}"
    )
    parser.add_argument("--runs", type=int, help="runs per measurement, median reported (default 3, quick 1)")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="teleconsult's gateway processes in the N column and in each replica "
        "(TELECONSULT_DICOM_WORKERS; default os.cpu_count())",
    )
    parser.add_argument(
        "--database-url",
        help="teleconsult's index for the ingest matrix, e.g. postgresql://postgres@127.0.0.1:5432/test "
        "(a fresh schema per measurement); default: embedded SQLite",
    )
    parser.add_argument(
        "--replica-database-url",
        default=DEFAULT_DATABASE_URL,
        help=f"the PostgreSQL both replicas share (a fresh schema per run; default {DEFAULT_DATABASE_URL})",
    )
    parser.add_argument(
        "--broker-url",
        default=DEFAULT_BROKER_URL,
        help=f"the replicas' broker, Redis Streams (a fresh stream per run; default {DEFAULT_BROKER_URL})",
    )
    parser.add_argument("--studies", type=int, help="studies sent through replica A (default 200, quick 50)")
    parser.add_argument(
        "--pause", type=float, default=0.0, help="seconds between two studies (default 0: back to back)"
    )
    parser.add_argument("--no-ingest", action="store_true", help="skip the ingest matrix")
    parser.add_argument("--no-replicas", action="store_true", help="skip the cross-replica latency")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every result to FILE")
    parser.add_argument(
        "--corpus-dir",
        type=Path,
        default=_INGEST_CORPUS_DIR,
        help="cache of generated corpora (default: bench/ingest's, shared with it)",
    )
    parser.add_argument(
        "--work-dir", type=Path, help="parent of the receivers' data directories (default: temp); not tmpfs"
    )
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
        "--orthanc-max-pdu",
        type=int,
        default=ORTHANC_DEFAULT_MAX_PDU,
        help=f"Orthanc's MaximumPduLength (default {ORTHANC_DEFAULT_MAX_PDU}, as Orthanc ships; "
        "teleconsult offers 262144)",
    )
    return parser


def _classes(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(CLASS_NAMES))
    if unknown:
        raise SystemExit(f"unknown class {', '.join(unknown)}; choose from {', '.join(CLASS_NAMES)}")
    return names


@dataclass
class Outcome:
    """Everything one run found, for the exit status and the JSON file."""

    environment: dict[str, str] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)
    latency: LatencyResult | None = None
    latency_error: str | None = None
    setup_error: str | None = None  # a part that could not be set up (database, broker, Orthanc)

    @property
    def failed(self) -> bool:
        """Something was not stored, not announced, or could not be measured."""
        return (
            not all(m.ok for m in self.measurements)
            or self.latency_error is not None
            or (self.latency is not None and not self.latency.complete)
        )

    @property
    def targets_missed(self) -> list[str]:
        missed = [f"ingest {r.class_name}/{r.associations}" for r in self.rows if r.target_met is False]
        if self.latency is not None and not self.latency.target_met:
            missed.append("cross-replica p95")
        return missed


def _orthanc_version(work_dir: Path, max_pdu: int) -> str:
    """Start Orthanc once before the matrix: its version for the header, and a config that works."""
    with orthanc_session(work_dir / "orthanc-probe", max_pdu) as orthanc:
        return orthanc.version


def _ingest(args: argparse.Namespace, classes: Sequence[str], work_dir: Path, outcome: Outcome) -> None:
    runs = args.runs if args.runs is not None else 1 if args.quick else 3
    quiet_timeout = args.quiet_timeout if args.quiet_timeout is not None else 0.0 if args.quick else 30.0
    corpora: list[Corpus] = [ensure_corpus(name, args.corpus_dir, quick=args.quick) for name in classes]
    for corpus in corpora:
        size = corpus.total_bytes / 1e6
        print(f"corpus {corpus.name:5} {corpus.count} instances, {size:.1f} MB in {corpus.root}")
    print(f"{runs} run(s) per measurement, median wall time; MB = 10^6 bytes", flush=True)
    plan = IngestPlan(
        runs,
        work_dir,
        args.database_url,
        args.workers,
        args.quiet_threshold,
        quiet_timeout,
        args.orthanc_max_pdu,
    )

    def report(measurement: Measurement, corpus: Corpus) -> None:
        print(progress_line(measurement, corpus, args.workers), flush=True)

    outcome.measurements = run_matrix(corpora, plan, report)
    outcome.rows = rows(corpora, outcome.measurements)
    noisy = sum(1 for m in outcome.measurements if m.noisy)
    print()
    print(format_ingest_table(outcome.rows, args.workers))
    print(
        f"{noisy} of {len(outcome.measurements)} measurements NOISY (other processes over "
        f"{NOISY_OTHER_CORES} cores); load average after the ingest: {load_average():.2f}"
    )
    print(flush=True)


def _replicas(args: argparse.Namespace, work_dir: Path, outcome: Outcome) -> None:
    """BenchError (cannot set up) goes to the caller; a failure while measuring is recorded."""
    studies = args.studies if args.studies is not None else 50 if args.quick else 200
    print(
        f"{studies} studies C-STOREd to replica A, one association each; the specialist's "
        f"/api/events on replica B",
        flush=True,
    )
    replicas_dir = work_dir / "replicas"
    with replica_pair(replicas_dir, args.replica_database_url, args.broker_url, args.workers) as pair:
        try:
            outcome.latency = measure_cross_replica(pair, studies, pause=args.pause, target_ms=TARGET_P95_MS)
        except Exception as exc:  # reported as a failed part; the ingest results still print
            traceback.print_exc()
            outcome.latency_error = f"{type(exc).__name__}: {exc}"
    for replica in (pair.a, pair.b):
        if replica.returncode != 0:
            print(f"warning: replica {replica.name} exited with {replica.returncode} when stopped")
    if outcome.latency is not None:
        print(format_latency(outcome.latency))
    else:
        print(f"cross-replica latency: FAIL {outcome.latency_error}")
    print(flush=True)


def _finite(value: Any) -> Any:
    """NaN (an empty percentile) as null: strict JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _save(path: Path, outcome: Outcome, status: int) -> None:
    document = {
        "environment": outcome.environment,
        "ingest": {
            "rows": [asdict(row) for row in outcome.rows],
            "measurements": [asdict(m) for m in outcome.measurements],
        },
        "replicas": asdict(outcome.latency) if outcome.latency is not None else None,
        "replicas_error": outcome.latency_error,
        "setup_error": outcome.setup_error,
        "targets_missed": outcome.targets_missed,
        "exit_status": status,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(document), ensure_ascii=False, indent=2))
    print(f"results: {path}")


def _status(outcome: Outcome) -> int:
    if outcome.failed:
        return EXIT_FAILED
    if outcome.setup_error is not None:
        return EXIT_SETUP
    missed = outcome.targets_missed
    if missed:
        print(f"targets missed: {', '.join(missed)}")
        return EXIT_TARGET_MISSED
    return EXIT_OK


def _benchmark(args: argparse.Namespace, classes: Sequence[str], work_dir: Path) -> tuple[int, Outcome]:
    outcome = Outcome()
    info = environment(args.database_url, work_dir)
    info["gateway processes"] = f"teleconsult x1 and x{args.workers} (TELECONSULT_DICOM_WORKERS)"
    if not args.no_replicas:
        info["replicas"] = (
            f"2 x teleconsult serve, {args.workers} gateway processes each, one fresh schema of "
            f"{args.replica_database_url.split('@')[-1]}, one fresh stream of {args.broker_url}"
        )
    ingest = not args.no_ingest
    if ingest:
        try:
            info["orthanc"] = (
                f"{_orthanc_version(work_dir, args.orthanc_max_pdu)}, default SQLite index, "
                f"SyncStorageArea on, MaximumPduLength {args.orthanc_max_pdu}, DicomThreadsCount 4"
            )
        except BenchError as exc:  # no reference, no ingest figures; the replicas still run
            print(f"bench.scale: ingest not measured: {exc}", file=sys.stderr)
            outcome.setup_error = str(exc)
            ingest = False
    outcome.environment = info
    print(format_environment(info), flush=True)
    if ingest:
        _ingest(args, classes, work_dir, outcome)
    if not args.no_replicas:
        try:
            _replicas(args, work_dir, outcome)
        except BenchError as exc:  # the ingest figures above still stand and are saved
            print(f"bench.scale: cross-replica latency not measured: {exc}", file=sys.stderr)
            outcome.setup_error = "; ".join(filter(None, (outcome.setup_error, str(exc))))
    status = _status(outcome)
    if args.json is not None:
        _save(args.json, outcome, status)
    return status, outcome


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> NoReturn:
    """Turn SIGTERM into SystemExit so every ``finally`` stops its server."""
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.workers < 1:
        raise SystemExit("--workers must be at least 1")
    if args.no_ingest and args.no_replicas:
        raise SystemExit("--no-ingest and --no-replicas together leave nothing to measure")
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    classes = _classes(args.classes)
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=args.work_dir))
    keep_logs = False
    try:
        status, _outcome = _benchmark(args, classes, work_dir)
        keep_logs = status == EXIT_FAILED
        if keep_logs:
            print(f"FAIL: something was not stored, not announced or not measured; logs kept in {work_dir}")
        return status
    except BenchError as exc:
        print(f"bench.scale: {exc}", file=sys.stderr)
        return EXIT_SETUP
    except KeyboardInterrupt:
        print("bench.scale: interrupted; every server was stopped", file=sys.stderr)
        return 130
    finally:
        if not keep_logs:
            shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
