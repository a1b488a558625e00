"""Files the operating system says are finished: closed after writing, or renamed into the inbox.

Polling alone has to wait until a file's size has stayed the same for a
while before taking it, because a writer may still be at work; with the
defaults that is 2-4 s between a cart's file landing and its import, most
of the 30-minute golden window's first minutes for nothing. On a local
disk the kernel knows better: inotify reports ``IN_CLOSE_WRITE`` when the
writer closes the file and ``IN_MOVED_TO`` when it was renamed in (the
documented ``x.scp.part`` → ``x.scp`` way). ``CompletedFiles`` listens for
both with watchdog and remembers each such file's size and modification
time; the inbox takes a remembered file at once as long as it still has
them (a writer that opens it again changes them, and the file falls back
to the settle rule). Each event also wakes the inbox thread, so it looks
now rather than at its next poll.

Network shares (SMB, NFS) report no events for other machines' writes, and
inotify may be unavailable (``max_user_watches``): then nothing is
remembered, nothing wakes the thread, and the inbox works by polling as
before. Events only ever make a file be taken sooner, never later.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from watchdog.events import FileClosedEvent, FileMovedEvent, FileSystemEvent, FileSystemEventHandler
from watchdog.observers.inotify import InotifyObserver

__all__ = ["CompletedFiles", "FileState"]

logger = logging.getLogger(__name__)

FileState = tuple[int, int]  # size, modification time in ns


class CompletedFiles(FileSystemEventHandler):
    """Files under ``root`` whose writer is done, by relative path, with the state they had then.

    ``wake`` is set on every such event; the inbox thread waits on it
    between looks.
    """

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        self.wake = threading.Event()
        self._lock = threading.Lock()
        self._states: dict[Path, FileState] = {}
        self._observer: InotifyObserver | None = None

    @property
    def watching(self) -> bool:
        return self._observer is not None

    def start(self) -> bool:
        """Watch ``root`` and the folders below it; ``False`` (polling only) where that is impossible."""
        # full events: a file renamed in from outside the inbox is a move, not a creation
        observer = InotifyObserver(generate_full_events=True)
        try:
            observer.schedule(self, os.fspath(self.root), recursive=True)
            observer.start()
        except OSError as exc:  # no inotify, or out of watches: polling still takes every file
            logger.warning("no file events for %s (%s): the inbox is polled only", self.root, exc)
            return False
        self._observer = observer
        return True

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(10)
        self.wake.set()

    def state(self, relative: Path) -> FileState | None:
        """The state ``relative`` had when its writer finished, if an event said so."""
        with self._lock:
            return self._states.get(relative)

    def remembered(self) -> set[Path]:
        with self._lock:
            return set(self._states)

    def forget(self, relatives: set[Path]) -> None:
        """Drop what is remembered of files that are gone (imported or quarantined)."""
        with self._lock:
            for relative in relatives:
                self._states.pop(relative, None)

    def on_closed(self, event: FileClosedEvent) -> None:
        self._finished(event.src_path)

    def on_moved(self, event: FileMovedEvent) -> None:
        if not event.is_directory and event.dest_path:
            self._finished(event.dest_path)

    def _finished(self, path: bytes | str) -> None:
        absolute = Path(os.fsdecode(path))
        try:
            stat = absolute.stat()
            relative = absolute.relative_to(self.root)
        except (OSError, ValueError):  # already taken, or not under the inbox
            return
        with self._lock:
            self._states[relative] = (stat.st_size, stat.st_mtime_ns)
        self.wake.set()

    def dispatch(self, event: FileSystemEvent) -> None:
        # only the two events that mean "finished" matter; skip the handler's own dispatching of the rest
        if isinstance(event, FileClosedEvent):
            self.on_closed(event)
        elif isinstance(event, FileMovedEvent):
            self.on_moved(event)
