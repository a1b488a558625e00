"""Gateway processes writing one SQLite index queue on a lock file, not on SQLite's polling."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from teleconsult.storage.index import Index
from teleconsult.storage.migrate import upgrade


def test_a_second_writer_waits_for_the_first_and_starts_as_soon_as_it_ends(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/index.db"
    first, second = Index(url), Index(url)  # two open lock files, as in two processes
    upgrade(first.engine)
    entered = threading.Event()
    second_started: list[float] = []

    def second_writer() -> None:
        entered.wait()
        with second._writing():
            second_started.append(time.monotonic())

    thread = threading.Thread(target=second_writer)
    thread.start()
    try:
        with first._writing():
            entered.set()
            time.sleep(0.3)
            assert second_started == [], "the second writer got in while the first held the lock"
            released = time.monotonic()
        thread.join(timeout=10)
        assert len(second_started) == 1
        assert second_started[0] - released < 0.05, "the waiting writer was not woken at once"
        assert Path(f"{tmp_path}/index.db.write-lock").exists()
    finally:
        first.close()
        second.close()
