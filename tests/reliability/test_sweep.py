"""The start-up sweep of ``<data dir>/tmp`` must only take files no running process is writing.

``serve`` removes the temporary files a crash left (``removed N unfinished
temporary files``). Until 009efba every other ``teleconsult`` command opened
the store the same way, so a read-only ``teleconsult study find`` beside a
running ``serve`` deleted the temporary file of a C-STORE being written: that
C-STORE failed with 0xC211 (a generic failure without a comment) and the
device had to send it again. Measured then with two senders of 8 MiB
instances: 2 of 10 ``study find`` runs removed a file in use, and 2 C-STOREs
failed with ``FileNotFoundError`` on the rename into place.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from bench.reliability.server import Serve


@pytest.mark.timeout(90)
def test_a_command_beside_serve_leaves_its_temporary_files_alone(tmp_path: Path) -> None:
    with Serve(tmp_path / "run", workers=1, http=False) as serve:
        serve.start()
        # what FileStore.write has open while it copies a data set, before the rename into place
        in_progress = serve.data_dir / "tmp" / f"{uuid.uuid4().hex}.part"
        in_progress.write_bytes(b"part of a data set being written")
        found = serve.cli("study", "find", "--json")
        assert found.returncode == 0, found.stderr
        assert in_progress.exists(), found.stderr
