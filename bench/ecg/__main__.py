"""``python -m bench.ecg``: the ECG triage screen's accuracy, its cost, and drop folder to alert.

(a) sensitivity and specificity of the STEMI screen over ``--records``
labelled synthetic ECGs (half with an injury pattern), with the interval
measurement errors against the known truth; (b) analysis time per record
(``dcmread`` to the screen's answer), p50/p95; (c) end to end, from an ECG
file landing in the drop folder of a running ``teleconsult serve`` to the
``alert.critical`` at a county specialist's WebSocket, p50/p95 over
``--files`` files, against the target (p95 < 2 s). Prints every figure;
PASS only if (c) meets the target and every file was alerted.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench.ecg.accuracy import Outcome, make_cases, run_case
from bench.ecg.endtoend import INBOX_SETTINGS, run_end_to_end
from bench.notify.__main__ import _revision
from bench.notify.measure import percentile
from device_adapters.ecg.triage.measure import load_neurokit

TARGET_P95_MS = 2000.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.ecg", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200, help="labelled records for (a) and (b) (200)")
    parser.add_argument("--files", type=int, default=100, help="files dropped for (c) (default 100)")
    parser.add_argument("--no-serve", action="store_true", help="skip (c), which starts teleconsult serve")
    parser.add_argument("--target-ms", type=float, default=TARGET_P95_MS, help="(c) p95 target (2000)")
    parser.add_argument("--work-dir", type=Path, help="where (c)'s data directory goes (default: temp)")
    return parser


def _accuracy(outcomes: list[Outcome]) -> None:
    positives = [o for o in outcomes if o.case.label]
    negatives = [o for o in outcomes if not o.case.label]
    true_positive = sum(1 for o in positives if o.stemi)
    true_negative = sum(1 for o in negatives if o.stemi is False)
    unanalysable = sum(1 for o in outcomes if o.stemi is None)
    print("(a) STEMI screen on labelled synthetic ECGs (label: the criteria on the true ST levels)")
    print(
        f"    records {len(outcomes)}: {len(positives)} STEMI, {len(negatives)} not; "
        f"not analysable {unanalysable}"
    )
    sensitivity = true_positive / len(positives) if positives else float("nan")
    specificity = true_negative / len(negatives) if negatives else float("nan")
    print(f"    sensitivity {sensitivity:.3f} ({true_positive}/{len(positives)})")
    print(f"    specificity {specificity:.3f} ({true_negative}/{len(negatives)})")
    kinds = sorted({o.case.kind for o in outcomes})
    for kind in kinds:
        group = [o for o in outcomes if o.case.kind == kind]
        flagged = sum(1 for o in group if o.stemi)
        print(f"      {kind:<15} {len(group):>4} records, screened positive {flagged:>4}")
    print("    measurement error against the truth (measured - true): mean, SD, worst")
    names = sorted({name for o in outcomes for name in o.errors})
    for name in names:
        values = np.array([o.errors[name] for o in outcomes if name in o.errors])
        worst = values[np.argmax(np.abs(values))]
        print(f"      {name:<36} {values.mean():>7.2f} {values.std():>7.2f} {worst:>8.2f}  (n={len(values)})")


def _timing(outcomes: list[Outcome]) -> None:
    times = [o.seconds * 1000 for o in outcomes]
    print("(b) analysis time per record (dcmread of the stored bytes to the screen's answer)")
    print(
        f"    p50 {percentile(times, 50):.1f} ms, p95 {percentile(times, 95):.1f} ms, "
        f"max {max(times):.1f} ms over {len(times)} records (10 s, 12 leads, 250/500/1000 Hz)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    load_before = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"date          {datetime.now(UTC):%Y-%m-%d %H:%M UTC}")
    print(f"machine       {len(os.sched_getaffinity(0))} CPUs, Linux {platform.release()}, Python "
          f"{platform.python_version()}")  # fmt: skip
    print(f"teleconsult   {_revision()}")
    print()
    load_neurokit()
    cases = make_cases(args.records)
    outcomes = [run_case(case, index) for index, case in enumerate(cases)]
    _accuracy(outcomes)
    print()
    _timing(outcomes)
    print()
    if args.no_serve:
        print(f"load average  {load_before} before, {' '.join(f'{v:.2f}' for v in os.getloadavg())} after")
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-ecg-", dir=args.work_dir) as work:
        result = run_end_to_end(Path(work), args.files)
    latencies = result.latencies_ms
    print("(c) ECG file renamed into the drop folder -> alert.critical at the county specialist's socket")
    changed = ", ".join(f"{k}={v}" for k, v in INBOX_SETTINGS.items())
    print(f"    settings: {changed or 'the defaults (inbox poll 2 s, settle 2 s, file events on)'}")
    ok = bool(latencies) and result.missing == 0
    if latencies:
        p95 = percentile(latencies, 95)
        ok = ok and p95 < args.target_ms
        print(
            f"    p50 {percentile(latencies, 50):.0f} ms, p95 {p95:.0f} ms, max {max(latencies):.0f} ms over "
            f"{len(latencies)} files; {result.missing} without an alert; {result.consults} critical consults"
        )
    print(f"    target p95 < {args.target_ms:g} ms: {'PASS' if ok else 'FAIL'}")
    print(f"load average  {load_before} before, {' '.join(f'{v:.2f}' for v in os.getloadavg())} after")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
