"""PostgreSQL unreachable under load, then back: nothing acknowledged without a commit, no restart.

Three DICOM senders (one of 2 MiB instances) and one STOW-RS sender stream
while the index is taken away (a loopback proxy resets its connections and
refuses new ones); afterwards the same ``serve`` stores again. The short
version keeps the index away 4 s; ``RELIABILITY_FULL=1`` 60 s, as
``python -m bench.reliability --scenarios outage`` does.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.reliability.outage import run_outage

FULL = os.environ.get("RELIABILITY_FULL") == "1"

pytestmark = pytest.mark.postgresql


def test_an_index_outage_under_load_loses_nothing_and_needs_no_restart(
    tmp_path: Path, database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("a database server to lose: PostgreSQL only")
    result = run_outage(
        tmp_path / "outage",
        database_url=database_url,
        outage_seconds=60.0 if FULL else 4.0,
        senders=3,
        stow_senders=1,
        before_seconds=2.0,
        after_seconds=3.0,
    )
    verification = result.verification
    assert verification is not None
    assert verification.ok, verification.problems()
    assert result.acked_before > 0
    assert result.acked_during == 0  # nothing acknowledged without a commit
    assert result.refusals[0xA701] > 0, result.refusals  # C-STORE: out of resources, resend later
    assert set(result.refusals) == {0xA701}, result.refusals
    assert result.stow_failures["HTTP 503"] > 0, result.stow_failures
    assert set(result.stow_failures) <= {"HTTP 503", "HTTPStatusError"}, result.stow_failures
    assert result.readiness["during"].keys() == {"503"}, result.readiness
    assert result.readiness["after"]["200"] > 0, result.readiness
    assert all(seconds is not None for seconds in result.recovery_seconds.values()), result.recovery_seconds
    assert result.recovery_seconds.keys() == {"c-store", "stow-rs"}
    assert result.same_process
    assert result.stuck_senders == []
    assert result.exit_status == 0, result.stop_log
