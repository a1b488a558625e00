"""Runtime directories of serve: named after their process, swept once it is gone."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from teleconsult import runtime_dirs


@pytest.fixture
def tmpdir_base(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short TMPDIR of the test's own, and the fallback pointed at it too."""
    base = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))
    monkeypatch.setattr(tempfile, "tempdir", str(base))
    monkeypatch.setattr(runtime_dirs, "_SHORT_BASE", base)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_private_dir_carries_its_process_id_and_is_closed_to_others(tmpdir_base: Path) -> None:
    directory = runtime_dirs.private_dir("events")
    assert directory.parent == tmpdir_base
    assert directory.name.startswith(f"teleconsult-events-{os.getpid()}-")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_sweep_removes_only_the_directories_of_stopped_processes(tmpdir_base: Path) -> None:
    ours = runtime_dirs.private_dir("metrics")
    dead = tmpdir_base / f"teleconsult-events-{_dead_pid()}-abc123"
    dead.mkdir()
    (dead / "events.sock").write_bytes(b"")
    unrelated = tmpdir_base / "teleconsult-events-notapid-abc"
    unrelated.mkdir()
    a_file = tmpdir_base / f"teleconsult-metrics-{_dead_pid()}-x"
    a_file.write_text("not a directory")

    assert runtime_dirs.sweep_dead() == 1

    assert not dead.exists()
    assert ours.is_dir()
    assert unrelated.is_dir()
    assert a_file.is_file()


def test_a_tmpdir_too_long_for_a_socket_path_gives_way_to_tmp(tmp_path: Path, tmpdir_base: Path) -> None:
    long_base = tmp_path / ("x" * 60)
    long_base.mkdir()
    tempfile.tempdir = str(long_base)  # restored by tmpdir_base's monkeypatch
    directory = runtime_dirs.private_dir("events")
    assert directory.parent == tmpdir_base
    assert len(os.fsencode(str(directory / "events.sock"))) < 108


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown runtime directory kind"):
        runtime_dirs.private_dir("sockets")
