"""``python -m bench.reliability``: nothing acknowledged is lost, under load and through SIGKILLs.

For each gateway process count in ``--workers`` (1, and 0 = one per CPU as
shipped), against a real ``teleconsult serve`` on loopback with a fresh data
directory (and, with ``--database-url``, a fresh PostgreSQL schema):

- load: ``--associations`` associations at once x ``--instances`` each,
  ``--rounds`` times after a warm-up round; one more association asked for
  while they are all open; RSS, threads and fds of the server's processes
  from the warmed-up baseline to after the last round;
- limit (several processes only): associations opened one by one and held,
  to show the limit is counted per gateway process;
- crash: ``--senders`` C-STORE senders (the first ``--large-senders`` of them
  with 2 MiB instances) and ``--stow-senders`` STOW-RS senders stream while
  ``serve`` is SIGKILLed ``--kills`` times and restarted;
- malformed (once, with the first ``--workers`` value): ``--files`` mutated
  DICOM files through C-STORE and as many through STOW-RS
  (``malformed.py``);
- pdu (likewise): ``--pdus`` out-of-order and mutated PDUs from a raw socket
  (``pdu_fuzz.py``);
- outage (for each ``--workers`` value, with ``--database-url`` only): the
  crash row's senders stream while PostgreSQL is unreachable for
  ``--outage-seconds``, then back, with no restart (``outage.py``).

Afterwards every acknowledged instance is looked up (index row, file, SHA-256
of the data set as sent), ``teleconsult store check`` runs, and the index is
checked for rows without files and stored counts that disagree with the rows.
Prints one table; every figure is measured in this run. Exit status 1 if
anything acknowledged was lost, the store or index is unsound, or a process
outlived a killed parent.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.reliability.malformed import MalformedResult, run_malformed, summary
from bench.reliability.outage import OutageResult, run_outage
from bench.reliability.pdu_fuzz import PduScenarioResult, run_pdu_fuzz
from bench.reliability.scenarios import CrashResult, LimitResult, LoadResult, run_crashes, run_limit, run_load
from bench.reliability.senders import Ack
from bench.reliability.server import postgres_schema
from bench.reliability.verify import IN_FLIGHT_STATES

_SCENARIOS = ("load", "limit", "crash", "outage", "malformed", "pdu")


@dataclass
class Row:
    row: str
    tried: str
    acknowledged: str = "-"
    lost: str = "-"
    crashed: str = "-"
    leaked: str = "-"
    swept: str = "-"
    seconds: float = 0.0
    verdict: str = "ok"
    notes: list[str] = field(default_factory=list)


def _workers(text: str) -> list[int]:
    try:
        values = [int(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"workers {text!r}: comma-separated numbers") from None
    if any(value < 0 for value in values):
        raise argparse.ArgumentTypeError("workers: 0 (one per CPU) or more")
    return values


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenarios",
        default=",".join(_SCENARIOS),
        help=f"subset of {','.join(_SCENARIOS)} (all)",
    )
    parser.add_argument(
        "--workers", type=_workers, default=[1, 0], help="gateway processes per run, 0 = one per CPU (1,0)"
    )
    parser.add_argument("--associations", type=int, default=32, help="load: associations at once (32)")
    parser.add_argument("--instances", type=int, default=100, help="load: instances per association (100)")
    parser.add_argument("--rounds", type=int, default=2, help="load: rounds after the warm-up (2)")
    parser.add_argument(
        "--max-associations", type=int, default=32, help="TELECONSULT_DICOM_MAX_ASSOCIATIONS (32)"
    )
    parser.add_argument("--kills", type=int, default=50, help="crash: SIGKILLs of serve (50)")
    parser.add_argument("--senders", type=int, default=4, help="crash: C-STORE senders (4)")
    parser.add_argument(
        "--large-senders", type=int, default=1, help="crash: of which send 2 MiB instances (1)"
    )
    parser.add_argument("--stow-senders", type=int, default=1, help="crash: STOW-RS senders (1)")
    parser.add_argument(
        "--min-delay", type=float, default=0.3, help="crash: earliest kill after ready, s (0.3)"
    )
    parser.add_argument(
        "--max-delay", type=float, default=2.0, help="crash: latest kill after ready, s (2.0)"
    )
    parser.add_argument(
        "--kill-grace", type=float, default=5.0, help="crash: s a process may outlive its killed parent (5)"
    )
    parser.add_argument(
        "--seed", type=int, help="crash: the kill moments; malformed, pdu: the first seed (random)"
    )
    parser.add_argument(
        "--files",
        type=int,
        default=10_000,
        help="malformed: mutants over C-STORE, and as many over STOW-RS (10000)",
    )
    parser.add_argument(
        "--pdus", type=int, default=10_000, help="pdu: out-of-order and mutated PDUs sent (10000)"
    )
    parser.add_argument(
        "--pdu-timeout",
        type=float,
        default=5.0,
        help="pdu: the server's ACSE, DIMSE and network timeouts for that run, s (5)",
    )
    parser.add_argument(
        "--oversized-mib",
        type=int,
        default=256,
        help="pdu: MiB streamed into one P-DATA-TF claiming 4 GiB (256)",
    )
    parser.add_argument(
        "--rss-limit-mib",
        type=float,
        default=512.0,
        help="malformed, pdu: most the server's RSS may rise above its start during the run (512)",
    )
    parser.add_argument(
        "--outage-seconds",
        type=float,
        default=60.0,
        help="outage: how long PostgreSQL is unreachable, s (60)",
    )
    parser.add_argument(
        "--database-url", help="PostgreSQL URL; each run gets a fresh schema (default SQLite)"
    )
    parser.add_argument("--work-dir", type=Path, help="parent of the runs' data directories (system temp)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    return parser


@contextlib.contextmanager
def _database(url: str | None) -> Iterator[str | None]:
    if url is None:
        yield None
        return
    with postgres_schema(url) as schema_url:
        yield schema_url


def _processes(workers: int) -> str:
    return f"{workers} process" if workers == 1 else ("1 per CPU" if workers == 0 else f"{workers} processes")


def _change(before: float, after: float, unit: str = "") -> str:
    return f"{before:.0f}→{after:.0f}" + (f" {unit}" if unit else "")


def _load_row(result: LoadResult, workers: int) -> Row:
    row = Row(
        row=f"load, {_processes(workers)}",
        tried=(
            f"{result.associations} assoc at once x {result.instances} inst, "
            f"{result.rounds} round{'s' if result.rounds != 1 else ''} (+ warm-up), "
            f"{result.processes} gateway proc"
        ),
        acknowledged=f"{len(result.acks)}/{result.sent}",
        crashed="0",
        seconds=result.seconds,
    )
    verification = result.verification
    assert verification is not None
    row.lost = str(len(verification.lost))
    before, after = result.before, result.after
    if before is not None and after is not None:
        row.leaked = (
            f"RSS {_change(before.rss_mib, after.rss_mib, 'MiB')}, "
            f"threads {_change(before.threads, after.threads)}, fds {_change(before.fds, after.fds)}"
        )
        row.notes.append("after each round: " + "; ".join(stats.brief() for stats in result.after_each_round))
    row.notes.append(
        f"association {result.associations + 1} while {result.associations} open: {result.extra_association}"
    )
    if result.refusals:
        row.notes.append(f"refused: {dict(result.refusals)}")
    if result.sender_errors:
        row.notes.append(f"sender errors: {result.sender_errors[:3]}")
    row.notes.append(
        f"index {verification.indexed} instances; store check: {verification.store_check}; "
        f"exit status {result.exit_status}"
    )
    if result.stop_log:
        row.notes.append("end of the server's log at the stop:\n" + _indent(result.stop_log, 30))
    problems = []
    if not verification.ok:
        problems.append(verification.problems())
    if len(result.acks) != result.sent:
        problems.append(f"{result.sent - len(result.acks)} not acknowledged")
    if result.exit_status != 0:
        problems.append(f"exit status {result.exit_status}")
    row.verdict = "FAIL: " + "; ".join(problems) if problems else "ok"
    return row


def _limit_row(result: LimitResult, workers: int, seconds: float) -> Row:
    kinds = sorted({rejection.text for rejection in result.rejections})
    row = Row(
        row=f"limit, {_processes(workers)}",
        tried=(
            f"{result.attempts} assoc opened one by one and held, limit {result.max_associations}, "
            f"{result.processes} gateway proc"
        ),
        seconds=seconds,
    )
    row.notes.append(
        f"accepted {result.accepted} (at most {result.processes} x {result.max_associations}), "
        f"first refusal after {result.first_refusal_after} open; refusals: {', '.join(kinds) or 'none'}"
    )
    if result.accepted > result.processes * result.max_associations or result.other_failures:
        row.verdict = f"FAIL: {result.accepted} accepted, failed otherwise: {result.other_failures[:3]}"
    return row


def _by_route(acks: list[Ack]) -> str:
    """What was acknowledged, per route: ``2484 c-store + 413 stow-rs``."""
    counts = Counter(ack.via for ack in acks)
    return " + ".join(f"{count} {via}" for via, count in sorted(counts.items())) or "0"


def _crash_row(result: CrashResult, workers: int) -> Row:
    verification = result.verification
    assert verification is not None
    senders = f"{result.senders} C-STORE ({min(result.senders, result.large_senders)} x 2 MiB)"
    if result.stow_senders:
        senders += f" + {result.stow_senders} STOW-RS"
    row = Row(
        row=f"crash, {_processes(workers)}",
        tried=(
            f"{senders} senders streaming, SIGKILL of serve at random, restart; "
            f"{result.processes} gateway proc"
        ),
        acknowledged=_by_route(result.acks),
        lost=str(len(verification.lost)),
        crashed=f"{len(result.kill_reports)} SIGKILL",
        swept=f"{sum(result.swept)}",
        seconds=result.seconds,
    )
    leftovers = ", ".join(f"{count} {name}-*" for name, count in sorted(result.system_tmp_leftovers.items()))
    orphans = len(result.orphans)
    row.leaked = f"orphan procs {orphans}; TMPDIR: {leftovers or 'nothing'}"
    gone = [report.seconds_to_gone for report in result.kill_reports if report.descendants]
    if gone:
        row.notes.append(
            f"processes below serve gone after the kill: max {max(gone):.1f} s "
            f"(grace {result.kill_grace:.0f} s)"
        )
    if result.orphans:
        row.notes.append(f"outlived the killed parent: {result.orphans[:2]}")
    row.notes.append(
        "in flight at the kills: "
        + ", ".join(f"{result.in_flight.get(state, 0)} {state}" for state in IN_FLIGHT_STATES)
        + f"; temporary files left by the kills {sum(result.temporary_after_kill)}, "
        + f"swept at start {sum(result.swept)}"
    )
    row.notes.append(
        f"restart to ready: median {sorted(result.restart_seconds)[len(result.restart_seconds) // 2]:.1f} s; "
        f"associations {result.associations}, interrupted {result.interrupted}, resent {result.resent}"
        if result.restart_seconds
        else f"associations {result.associations}"
    )
    if result.refusals:
        row.notes.append(
            f"C-STORE refusals: {{{', '.join(f'{k:#06x}: {v}' for k, v in result.refusals.items())}}}"
        )
    if result.stow_failures:
        row.notes.append(f"STOW-RS not stored (retried): {dict(result.stow_failures)}")
    row.notes.append(
        f"index {verification.indexed} instances ({verification.unacknowledged_stored} never acknowledged), "
        f"{verification.unindexed_files} unindexed files; store check: {verification.store_check}; "
        f"seed {result.seed}"
    )
    if result.stop_log:
        row.notes.append("end of the server's log at the stop:\n" + _indent(result.stop_log, 30))
    problems = []
    if not verification.ok:
        problems.append(verification.problems())
    if orphans:
        problems.append(f"{orphans} processes outlived the killed parent")
    if result.stuck_senders:
        problems.append(f"senders stuck: {result.stuck_senders}")
    if result.exit_status != 0:
        problems.append(f"exit status {result.exit_status}")
    row.verdict = "FAIL: " + "; ".join(problems) if problems else "ok"
    return row


def _outage_row(result: OutageResult, workers: int) -> Row:
    verification = result.verification
    assert verification is not None
    senders = f"{result.senders} C-STORE + {result.stow_senders} STOW-RS senders streaming"
    row = Row(
        row=f"outage, {_processes(workers)}",
        tried=(
            f"{senders}, PostgreSQL unreachable {result.outage_seconds:.0f} s (connections reset, new ones "
            f"refused), then back, no restart; {result.processes} gateway proc"
        ),
        acknowledged=_by_route(result.acks),
        lost=str(len(verification.lost)),
        crashed="0" if result.same_process else "serve exited",
        seconds=result.seconds,
    )
    row.notes.append(
        f"acknowledged while the index was away (after the first second): {result.acked_during}; "
        f"before it went: {result.acked_before}"
    )
    row.notes.append(
        "C-STORE answers other than success: "
        f"{{{', '.join(f'{k:#06x}: {v}' for k, v in sorted(result.refusals.items()))}}}; "
        f"STOW-RS not stored (retried): {dict(result.stow_failures)}"
    )
    row.notes.append(
        "first acknowledgement after the index came back: "
        + ", ".join(
            f"{route} {'never' if seconds is None else f'{seconds:.2f} s'}"
            for route, seconds in sorted(result.recovery_seconds.items())
        )
    )
    row.notes.append(
        "/readyz answers: "
        + "; ".join(f"{phase} {dict(answers)}" for phase, answers in result.readiness.items())
    )
    row.notes.append(
        f"index {verification.indexed} instances ({verification.unacknowledged_stored} never acknowledged), "
        f"{verification.unindexed_files} unindexed files; store check: {verification.store_check}"
    )
    if result.stop_log:
        row.notes.append("end of the server's log at the stop:\n" + _indent(result.stop_log, 30))
    problems = []
    if not verification.ok:
        problems.append(verification.problems())
    if result.acked_during:
        problems.append(f"{result.acked_during} acknowledged while the index was unreachable")
    if not result.same_process:
        problems.append("serve did not survive the outage")
    if any(seconds is None for seconds in result.recovery_seconds.values()):
        problems.append("a route did not store again after the outage")
    if result.stuck_senders:
        problems.append(f"senders stuck: {result.stuck_senders}")
    if result.exit_status != 0:
        problems.append(f"exit status {result.exit_status}")
    row.verdict = "FAIL: " + "; ".join(problems) if problems else "ok"
    return row


def _malformed_row(result: MalformedResult, workers: int, rss_limit_mib: float) -> Row:
    verification = result.verification
    assert verification is not None
    routes = (("c-store", result.cstore), ("stow-rs", result.stow))
    row = Row(
        row=f"malformed, {_processes(workers)}",
        tried=(
            f"{result.cstore.sent} mutants over C-STORE + {result.stow.sent} over STOW-RS "
            f"({result.stow.requests} requests), {result.processes} gateway proc"
        ),
        acknowledged=f"{len(result.cstore.acks)} c-store + {len(result.stow.acks)} stow-rs",
        lost=str(len(verification.lost)),
        crashed=f"{'0' if result.alive else 'DIED'}; 5xx {result.stow.http_5xx}",
        leaked=(
            f"RSS {_change(result.rss_before_mib, result.rss_after_mib, 'MiB')} "
            f"(max {result.rss_max_mib:.0f}); files outside data dir {len(result.outside)}"
        ),
        seconds=result.seconds,
    )
    for name, route in routes:
        skipped = f"; skipped {dict(route.skipped)}" if route.skipped else ""
        row.notes.append(f"{name} answers: {dict(route.outcomes.most_common())}{skipped}")
    row.notes.append(
        f"RSS max {result.rss_halves_mib[0]:.0f} MiB in the first half of the run, "
        f"{result.rss_halves_mib[1]:.0f} MiB in the second; "
        f"/healthz asked {result.health_checks} times, failed {len(result.health_failures)}"
        + (f": {result.health_failures[:3]}" if result.health_failures else "")
    )
    row.notes.append(
        f"index {verification.indexed} instances ({verification.unacknowledged_stored} never acknowledged), "
        f"store check: {verification.store_check}; tracebacks in the log {result.tracebacks}; "
        f"first seed {result.seed} (mutate(seed) in bench/reliability/mutations.py rebuilds any)"
    )
    unexpected = [item for _, route in routes for item in route.unexpected]
    if unexpected:
        row.notes.append(f"unexpected answers ({len(unexpected)}): {unexpected[:10]}")
    errors = [item for _, route in routes for item in route.errors]
    if errors:
        row.notes.append(f"sender errors ({len(errors)}): {errors[:5]}")
    if result.stop_log:
        row.notes.append("end of the server's log at the stop:\n" + _indent(result.stop_log, 30))
    problems = []
    if not verification.ok:
        problems.append(verification.problems())
    if verification.unacknowledged_stored:
        problems.append(f"{verification.unacknowledged_stored} stored but answered as refused")
    if not result.alive:
        problems.append("the server died")
    if result.health_failures:
        problems.append(f"/healthz failed {len(result.health_failures)} times")
    if result.stow.http_5xx:
        problems.append(f"{result.stow.http_5xx} HTTP 5xx")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected answers")
    if result.outside:
        problems.append(f"files outside the data directory: {result.outside[:5]}")
    if result.rss_max_mib - result.rss_before_mib > rss_limit_mib:
        problems.append(
            f"RSS rose {result.rss_max_mib - result.rss_before_mib:.0f} MiB (limit {rss_limit_mib:.0f})"
        )
    if result.stuck_senders:
        problems.append(f"senders stuck: {result.stuck_senders}")
    if result.exit_status != 0:
        problems.append(f"exit status {result.exit_status}")
    row.verdict = "FAIL: " + "; ".join(problems) if problems else "ok"
    return row


def _pdu_row(result: PduScenarioResult, workers: int, rss_limit_mib: float) -> Row:
    fuzz = result.fuzz
    row = Row(
        row=f"pdu, {_processes(workers)}",
        tried=(
            f"{fuzz.pdus} PDUs over {len(fuzz.connections)} raw connections (state-table walks + mutations), "
            f"{result.oversized_mib} MiB into one PDU; timeouts {result.network_timeout:.0f} s"
        ),
        crashed="0" if result.alive else "DIED",
        leaked=(
            f"RSS {_change(result.rss_before_mib, result.rss_after_mib, 'MiB')} "
            f"(max {result.rss_max_mib:.0f}), threads {_change(*result.threads)}"
        ),
        seconds=result.seconds,
    )
    row.notes.append(f"connections ended: {dict(fuzz.ends.most_common())}; slowest {fuzz.slowest:.1f} s")
    row.notes.append(f"server answered: {dict(fuzz.answers.most_common(12))}")
    if result.oversized is not None:
        before, peak = result.oversized_rss_mib
        row.notes.append(
            f"oversized P-DATA-TF: {result.oversized.end} after {result.oversized.seconds:.1f} s, "
            f"RSS {before:.0f} MiB before, {peak:.0f} MiB at most"
        )
    row.notes.append(
        f"C-ECHO afterwards: {result.echo_after}; tracebacks in the log {result.tracebacks}; "
        f"first seed {result.seed} (script_for(seed) in bench/reliability/pdu_fuzz.py rebuilds any)"
    )
    if fuzz.failures:
        row.notes.append(f"not ended by the server within {result.deadline:.0f} s: {fuzz.failures[:10]}")
    problems = []
    if not result.alive:
        problems.append("the server died")
    if fuzz.failures:
        problems.append(f"{len(fuzz.failures)} connections not ended in time or refused")
    if result.threads[1] > result.threads[0] + 2:
        problems.append(f"threads {result.threads[0]}→{result.threads[1]} after the connections ended")
    if result.echo_after != "0x0000":
        problems.append(f"C-ECHO afterwards: {result.echo_after}")
    if result.rss_max_mib - result.rss_before_mib > rss_limit_mib:
        problems.append(
            f"RSS rose {result.rss_max_mib - result.rss_before_mib:.0f} MiB (limit {rss_limit_mib:.0f})"
        )
    if result.exit_status != 0:
        problems.append(f"exit status {result.exit_status}")
    row.verdict = "FAIL: " + "; ".join(problems) if problems else "ok"
    return row


def _indent(text: str, lines: int) -> str:
    return "\n".join(f"      {line}" for line in text.splitlines()[-lines:])


def _table(rows: list[Row]) -> str:
    header = (
        "row",
        "what was tried",
        "acknowledged",
        "lost",
        "crashed",
        "leaked (before→after)",
        "swept",
        "time",
    )
    cells = [
        (r.row, r.tried, r.acknowledged, r.lost, r.crashed, r.leaked, r.swept, f"{r.seconds:.0f} s")
        for r in rows
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell) + " |" for cell in cells]
    lines.append("")
    for r in rows:
        lines.append(f"{r.row}: {r.verdict}")
        lines += [f"  - {note}" for note in r.notes]
    return "\n".join(lines)


def _environment() -> dict[str, Any]:
    def run(*command: str) -> str:
        try:
            return subprocess.run(
                command, capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
        except OSError:
            return "?"

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": run("git", "rev-parse", "--short", "HEAD"),
        "uncommitted_files": len(run("git", "status", "--porcelain").splitlines()),
        "uptime": run("uptime"),
        "cpus": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    scenarios = {item.strip() for item in args.scenarios.split(",")}
    unknown = scenarios - set(_SCENARIOS)
    if unknown:
        print(f"unknown scenarios: {sorted(unknown)}", file=sys.stderr)
        return 2
    environment = _environment()
    print(
        f"{environment['date']}, commit {environment['commit']} "
        f"(+{environment['uncommitted_files']} uncommitted files), "
        f"{environment['cpus']} CPUs, index: {'PostgreSQL' if args.database_url else 'SQLite'}\n"
        f"before: {environment['uptime']}",
        flush=True,
    )
    rows: list[Row] = []
    raw: list[dict[str, Any]] = []

    def record(name: str, workers: int, measure: Callable[[str | None], Row]) -> None:
        """Run one scenario on a fresh database; a scenario that breaks is a FAIL row, the rest go on."""
        started = time.perf_counter()
        try:
            with _database(args.database_url) as url:
                row = measure(url)
        except Exception as exc:  # reported in the table, then the next scenario
            row = Row(row=f"{name}, {_processes(workers)}", tried="-", seconds=time.perf_counter() - started)
            row.verdict = f"FAIL: {type(exc).__name__}: {str(exc)[-1500:]}"
        rows.append(row)
        print(f"{row.row}: {row.verdict} ({row.seconds:.0f} s)", flush=True)
        for note in row.notes:
            print(f"  - {note}", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-reliability-", dir=args.work_dir) as work:
        for workers in args.workers:
            if "load" in scenarios:

                def load(url: str | None, workers: int = workers) -> Row:
                    result = run_load(
                        Path(work) / f"load-{workers}",
                        database_url=url,
                        workers=workers,
                        associations=args.associations,
                        instances=args.instances,
                        max_associations=args.max_associations,
                        rounds=args.rounds,
                    )
                    raw.append({"scenario": "load", "workers": workers, **_plain(result)})
                    return _load_row(result, workers)

                record("load", workers, load)
            if "limit" in scenarios and workers != 1:

                def limit(url: str | None, workers: int = workers) -> Row:
                    started = time.perf_counter()
                    result = run_limit(
                        Path(work) / f"limit-{workers}",
                        database_url=url,
                        workers=workers,
                        max_associations=args.max_associations,
                    )
                    raw.append({"scenario": "limit", "workers": workers, **_plain(result)})
                    return _limit_row(result, workers, time.perf_counter() - started)

                record("limit", workers, limit)
            if "crash" in scenarios:

                def crash(url: str | None, workers: int = workers) -> Row:
                    result = run_crashes(
                        Path(work) / f"crash-{workers}",
                        database_url=url,
                        workers=workers,
                        kills=args.kills,
                        senders=args.senders,
                        stow_senders=args.stow_senders,
                        large_senders=args.large_senders,
                        min_delay=args.min_delay,
                        max_delay=args.max_delay,
                        seed=args.seed,
                        kill_grace=args.kill_grace,
                    )
                    raw.append({"scenario": "crash", "workers": workers, **_plain(result)})
                    return _crash_row(result, workers)

                record("crash", workers, crash)
            if "outage" in scenarios and args.database_url:

                def outage(url: str | None, workers: int = workers) -> Row:
                    assert url is not None
                    result = run_outage(
                        Path(work) / f"outage-{workers}",
                        database_url=url,
                        workers=workers,
                        outage_seconds=args.outage_seconds,
                        senders=args.senders,
                        stow_senders=args.stow_senders,
                        large_senders=args.large_senders,
                    )
                    raw.append({"scenario": "outage", "workers": workers, **_plain(result)})
                    return _outage_row(result, workers)

                record("outage", workers, outage)
            elif "outage" in scenarios and workers == args.workers[0]:
                print("outage: skipped, it needs --database-url (SQLite has no server to lose)", flush=True)
        hostile_workers = args.workers[0]
        seed = args.seed if args.seed is not None else random.randrange(1 << 30)
        if "malformed" in scenarios:

            def malformed(url: str | None, workers: int = hostile_workers) -> Row:
                result = run_malformed(
                    Path(work) / "malformed",
                    database_url=url,
                    workers=workers,
                    files=args.files,
                    seed=seed,
                )
                raw.append({"scenario": "malformed", "workers": workers, **_plain(result), **summary(result)})
                return _malformed_row(result, workers, args.rss_limit_mib)

            record("malformed", hostile_workers, malformed)
        if "pdu" in scenarios:

            def pdu(url: str | None, workers: int = hostile_workers) -> Row:
                result = run_pdu_fuzz(
                    Path(work) / "pdu",
                    workers=workers,
                    pdus=args.pdus,
                    seed=seed,
                    timeout=args.pdu_timeout,
                    oversized_mib=args.oversized_mib,
                )
                raw.append({"scenario": "pdu", "workers": workers, **_plain(result)})
                return _pdu_row(result, workers, args.rss_limit_mib)

            record("pdu", hostile_workers, pdu)
    environment["uptime_after"] = _environment()["uptime"]
    print()
    print(_table(rows))
    print(f"\nafter: {environment['uptime_after']}")
    if args.json:
        args.json.write_text(
            json.dumps({"environment": environment, "rows": _json_ready(rows), "runs": raw}, indent=2)
        )
    return 1 if any(r.verdict != "ok" for r in rows) else 0


def _plain(result: Any) -> dict[str, Any]:
    """A result as JSON-ready data, without the per-instance acknowledgements."""
    data = _json_ready({f.name: getattr(result, f.name) for f in fields(result) if f.name != "acks"})
    data["acknowledged"] = len(getattr(result, "acks", []))
    verification = data.get("verification")
    if isinstance(verification, dict):
        verification["lost"] = verification["lost"][:20]
        verification["rows_without_file"] = verification["rows_without_file"][:20]
    return data  # type: ignore[no-any-return]


def _json_ready(value: Any) -> Any:
    # not dataclasses.asdict: it rebuilds a Counter from (key, value) pairs, counting the pairs
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _json_ready(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
