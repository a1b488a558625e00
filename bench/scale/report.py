"""What the benchmark prints: progress lines, the ingest table and the notification summary.

The receivers' figures stand side by side with their ratio to Orthanc on
the same row, because only figures from the same run on the same machine
compare; the NOISY counts say how far to trust each row.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.ingest.corpus import Corpus
from bench.ingest.measurement import progress_line as ingest_progress_line
from bench.scale.ingest import (
    MEGABYTE,
    NOISY_OTHER_CORES,
    TARGET_ASSOCIATIONS,
    TARGET_RATIO,
    Measurement,
    Row,
)
from bench.scale.latency import LatencyResult, Spread
from bench.scale.receivers import ORTHANC, RECEIVERS, TELECONSULT_N, TELECONSULT_ONE

__all__ = ["format_ingest_table", "format_latency", "label", "progress_line"]


def label(name: str, workers: int) -> str:
    """Receiver names as the table heads them: teleconsult with its gateway process count."""
    return {ORTHANC: "orthanc", TELECONSULT_ONE: "teleconsult x1", TELECONSULT_N: f"teleconsult x{workers}"}[
        name
    ]


def progress_line(measurement: Measurement, corpus: Corpus, workers: int) -> str:
    return ingest_progress_line(measurement, corpus, label(measurement.receiver, workers))


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _cells(row: Row) -> list[str]:
    cells = [row.class_name, str(row.associations), str(row.instances), f"{row.total_bytes / MEGABYTE:.1f}"]
    for name in RECEIVERS:
        rate = row.rate(name)
        cells += [f"{rate[0]:.1f}", f"{rate[1]:.1f}"] if rate else ["FAIL", "FAIL"]
    cells += [_ratio(row.ratio(TELECONSULT_ONE)), _ratio(row.ratio(TELECONSULT_N))]
    met = row.target_met
    cells.append("-" if not row.judged else "FAIL" if met is None else "ok" if met else "BELOW")
    cells.append(f"{row.noisy}/{row.measurements}")
    return cells


def format_ingest_table(rows: Sequence[Row], workers: int) -> str:
    """An aligned text table: text columns left, numbers right, one line per class and association count."""
    header = ["class", "assoc", "inst", "MB"]
    for name in RECEIVERS:
        header += [f"{label(name, workers)} inst/s", "MB/s"]
    header += ["x1/orthanc", f"x{workers}/orthanc", f"≥{TARGET_RATIO:.1f}", "noisy"]
    table = [header, *(_cells(row) for row in rows)]
    widths = [max(len(line[column]) for line in table) for column in range(len(header))]
    lines = []
    for line in table:
        cells = [
            cell.ljust(width) if column == 0 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    lines.append(
        f"ratios: teleconsult's rate / Orthanc's, the same for inst/s and MB/s (same corpus); target "
        f"≥{TARGET_RATIO:.1f} for x{workers} on the {TARGET_ASSOCIATIONS}-association rows\n"
        f"noisy: measurements of the row during which other processes used over {NOISY_OTHER_CORES} cores"
    )
    return "\n".join(lines)


def _spread_line(name: str, spread: Spread) -> str:
    return f"{name:<38} {spread.count:>7} {spread.p50_ms:>8.1f} {spread.p95_ms:>8.1f} {spread.max_ms:>8.1f}"


def format_latency(result: LatencyResult) -> str:
    verdict = "PASS" if result.complete and result.target_met else "FAIL"
    head = "replica A C-STORE -> replica B socket"
    lines = [
        f"{head:<38} {'studies':>7} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}",
        _spread_line("after the C-STORE response (target)", result.after_response),
        _spread_line("after the C-STORE request", result.after_request),
        f"({result.early} events arrived before their C-STORE response: negative latency)",
        f"announced {result.announced} of {result.studies} studies on replica B "
        f"({result.failed_stores} C-STORE failures, {result.other_events} other events); "
        f"replica A with {result.gateway_processes} gateway process(es); "
        f"target p95 < {result.target_ms:g} ms after the response: {verdict}",
    ]
    return "\n".join(lines)
