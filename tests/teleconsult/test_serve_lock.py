"""One serve per data directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from teleconsult.cli import main
from teleconsult.serve_lock import DataDirectoryInUseError, lock_data_directory


def test_a_second_holder_is_refused_with_the_first_ones_process_id(tmp_path: Path) -> None:
    first = lock_data_directory(tmp_path / "data")
    try:
        with pytest.raises(DataDirectoryInUseError, match=f"process {os.getpid()}"):
            lock_data_directory(tmp_path / "data")
    finally:
        os.close(first)
    # Released with its descriptor (the kernel does the same when a process dies).
    os.close(lock_data_directory(tmp_path / "data"))


def test_serve_on_a_data_directory_in_use_stops_before_touching_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    monkeypatch.setenv("TELECONSULT_DATA_DIR", str(data_dir))
    held = lock_data_directory(data_dir)
    leftover = data_dir / "tmp" / "in-progress.part"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"a write of the running serve")
    try:
        assert main(["serve", "--no-http", "--no-dicom"]) == 1
    finally:
        os.close(held)
    assert "another teleconsult serve" in capsys.readouterr().err
    assert leftover.read_bytes() == b"a write of the running serve"
