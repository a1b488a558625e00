"""Hostile input against a real ``teleconsult serve``: issue 11, row 4, short version.

A few hundred named mutants (``bench/reliability/mutations.py``) go through
C-STORE and STOW-RS, and a few hundred out-of-order and mutated PDUs
through raw sockets (``bench/reliability/pdu_fuzz.py``). The targets: the
server stays up and healthy, no 5xx and no unhandled failure, every answer
a success or a clear refusal (valid controls stored, hostile UIDs
refused), everything answered as stored found byte for byte, nothing
written outside the data directory, RSS bounded, every connection ended
by the server within its timeouts. ``python -m bench.reliability
--scenarios malformed,pdu`` runs the full counts (10,000 each).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.reliability.malformed import run_malformed
from bench.reliability.pdu_fuzz import run_pdu_fuzz
from bench.reliability.senders import Ack
from bench.reliability.server import Serve
from bench.reliability.verify import verify

FULL = os.environ.get("RELIABILITY_FULL") == "1"
_SEED = 20261124
_RSS_LIMIT_MIB = 512


@pytest.mark.timeout(3600 if FULL else 150)
def test_malformed_files_over_cstore_and_stow_rs(tmp_path: Path, database_url: str) -> None:
    result = run_malformed(
        tmp_path / "run", database_url=database_url, files=10_000 if FULL else 150, seed=_SEED
    )

    assert result.alive
    assert result.health_checks > 0
    assert result.health_failures == []
    assert result.stow.http_5xx == 0
    assert result.cstore.unexpected == []
    assert result.stow.unexpected == []
    assert result.outside == []
    assert result.stuck_senders == []
    assert result.rss_max_mib - result.rss_before_mib < _RSS_LIMIT_MIB
    verification = result.verification
    assert verification is not None
    assert verification.ok, verification.problems()
    assert verification.unacknowledged_stored == 0, "stored although answered as refused"
    assert result.exit_status == 0, result.stop_log
    # both routes stored the valid controls and refused what cannot be stored
    for route in (result.cstore, result.stow):
        assert route.acks
        assert route.sent + sum(route.skipped.values()) == (10_000 if FULL else 150)
        assert sum(
            route.by_mutation[(name, outcome)] for name, outcome in route.by_mutation if name == "valid"
        )
    assert {"0x0000", "0xc001"} <= set(result.cstore.outcomes)
    assert {"stored", "part 0xc001"} <= set(result.stow.outcomes)


def test_the_check_finds_an_acknowledged_instance_missing_or_changed(tmp_path: Path) -> None:
    """The verdict above can fail: an instance answered as stored but absent, or with other bytes, is lost."""
    result = run_malformed(tmp_path / "run", files=20, seed=_SEED + 7)
    assert result.acks
    serve = Serve(tmp_path / "run")
    try:
        missing = Ack("2.25.1234567890", "0" * 64, "c-store")
        changed = Ack(result.acks[0].sop_instance_uid, "f" * 64, result.acks[0].via)
        verification = verify(serve, [*result.acks[1:], missing, changed], run_store_check=False)
    finally:
        serve.close()
    assert sorted(verification.lost) == sorted([missing.sop_instance_uid, changed.sop_instance_uid])
    assert not verification.ok


@pytest.mark.timeout(3600 if FULL else 120)
def test_out_of_order_and_mutated_pdus(tmp_path: Path) -> None:
    result = run_pdu_fuzz(
        tmp_path / "run",
        pdus=10_000 if FULL else 300,
        seed=_SEED,
        timeout=3.0,
        oversized_mib=256 if FULL else 64,
    )

    fuzz = result.fuzz
    assert result.alive
    assert fuzz.pdus >= (10_000 if FULL else 300)
    assert fuzz.failures == [], f"connections the server did not end within {result.deadline} s"
    assert fuzz.slowest < result.deadline
    assert result.echo_after == "0x0000"
    assert result.threads[1] <= result.threads[0] + 2, "association threads outlived their connections"
    assert result.oversized is not None
    assert result.oversized.end in ("closed", "reset")
    assert result.rss_max_mib - result.rss_before_mib < _RSS_LIMIT_MIB
    assert result.exit_status == 0, result.stop_log
