"""The ECG drop folder: files carts (or people) put in ``TELECONSULT_ECG_INBOX`` are imported.

Rules (docs/devices.md):

- A file in a subfolder named after an organisation code (``TOWN01/x.scp``,
  any depth below it) is that organisation's; one at the top is
  ``TELECONSULT_ECG_INBOX_ORGANISATION``'s. Without one, or under a folder
  that is no organisation's code, it is quarantined.
- A file is taken once complete: names ending ``.part`` or starting with a
  dot are never taken (write ``x.scp.part``, then rename it to ``x.scp``),
  and any other file once the operating system reports it closed after
  writing or renamed in (``file_events``: local disks), else once its size
  and modification time have stayed the same for
  ``TELECONSULT_ECG_INBOX_SETTLE_SECONDS``.
- A WFDB header is taken with the signal files it names, once all are
  complete; a header still missing one, or a signal file no header names,
  is quarantined after ``TELECONSULT_ECG_INBOX_INCOMPLETE_SECONDS``.
- Imported files are deleted (the stored DICOM instance is the record);
  files that cannot be imported move to the quarantine with their reason.
  If the store is full or the index unreachable, files stay and are tried
  again at the next look.

One thread looks into the inbox when a file event wakes it and at least
every ``TELECONSULT_ECG_INBOX_POLL_SECONDS`` (network shares send no
events); ``serve`` starts it and stops it at shutdown. Run one watcher per
inbox: two would race.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from device_adapters.ecg.errors import EcgImportError, EcgTooLargeError
from device_adapters.ecg.file_events import CompletedFiles
from device_adapters.ecg.importer import EcgImporter, ImportedEcg
from device_adapters.ecg.quarantine import Quarantine
from device_adapters.ecg.wfdb_record import signal_file_names
from teleconsult.audit import AuditEvent, AuditLog, AuditOutcome, Interface
from teleconsult.config import Settings
from teleconsult.errors import IndexUnavailableError, InvalidInstanceError, StorageFullError
from teleconsult.storage.identity import IdentityStore
from teleconsult.storage.store import InstanceStore

__all__ = ["EcgInbox", "InboxOutcome"]

logger = logging.getLogger(__name__)

_IN_PROGRESS_SUFFIXES = (".part", ".tmp", ".partial")


@dataclass(frozen=True, slots=True)
class InboxOutcome:
    """What one look did with one file (or WFDB record)."""

    path: Path  # relative to the inbox
    organisation: str
    imported: ImportedEcg | None = None
    reason: str | None = None  # why it was quarantined


@dataclass(slots=True)
class _Seen:
    size: int
    mtime_ns: int
    since: float


class EcgInbox:
    def __init__(
        self,
        settings: Settings,
        store: InstanceStore,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.root = settings.ecg_inbox_dir
        self.importer = EcgImporter(settings, store)
        self.quarantine = Quarantine(settings.quarantine_dir)
        self.identity = IdentityStore(store.index.engine)
        self.audit = AuditLog(store.index.engine)
        self._clock = clock
        self._seen: dict[Path, _Seen] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._completed = CompletedFiles(self.root)

    # -- the thread ----------------------------------------------------------

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._stop.clear()
        events = self._completed.start()
        self._thread = threading.Thread(target=self._run, name="ecg-inbox", daemon=True)
        self._thread.start()
        logger.info(
            "watching the ECG inbox %s %severy %gs",
            self.root,
            "on file events and " if events else "",
            self.settings.ecg_inbox_poll_seconds,
        )

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._completed.stop()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # a look that failed must not end the watching
                logger.exception("looking into the ECG inbox %s failed", self.root)
            # cleared before waiting: an event during the look above wakes the next one at once
            self._completed.wake.wait(self.settings.ecg_inbox_poll_seconds)
            self._completed.wake.clear()

    # -- one look -------------------------------------------------------------

    def poll_once(self) -> list[InboxOutcome]:
        """Import (or quarantine) every complete file now in the inbox."""
        settled, waiting = self._scan()
        outcomes: list[InboxOutcome] = []
        organisations: set[str] | None = None
        for folder in sorted({path.parent for path in settled} | {path.parent for path in waiting}):
            if self._stop.is_set():
                break
            names = {path.name for path in settled if path.parent == folder}
            pending = {path.name for path in waiting if path.parent == folder}
            for group in self._groups(folder, names, pending):
                if organisations is None:
                    organisations = {org.code for org in self.identity.organisations()}
                outcome = self._take(folder, group, organisations)
                if outcome is not None:
                    outcomes.append(outcome)
        return outcomes

    def _scan(self) -> tuple[list[Path], list[Path]]:
        """Files (relative paths) complete now, and files still being written."""
        now = self._clock()
        settled, waiting = [], []
        current: dict[Path, _Seen] = {}
        if not self.root.is_dir():
            return [], []
        remembered = self._completed.remembered()  # before the walk: later events are for files it may miss
        for directory, folders, files in os.walk(self.root):
            folders[:] = sorted(name for name in folders if not name.startswith("."))
            for name in files:
                if name.startswith(".") or name.lower().endswith(_IN_PROGRESS_SUFFIXES):
                    continue
                path = Path(directory, name)
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                relative = path.relative_to(self.root)
                state = (stat.st_size, stat.st_mtime_ns)
                seen = self._seen.get(relative)
                if seen is None or (seen.size, seen.mtime_ns) != state:
                    seen = _Seen(stat.st_size, stat.st_mtime_ns, now)
                current[relative] = seen
                finished = self._completed.state(relative) == state
                if finished or now - seen.since >= self.settings.ecg_inbox_settle_seconds:
                    settled.append(relative)
                else:
                    waiting.append(relative)
        self._completed.forget(remembered - set(current))
        self._seen = current
        return settled, waiting

    def _groups(self, folder: Path, names: set[str], pending: set[str]) -> list[list[str]]:
        """Files to take together: a WFDB header with its signal files, else one file alone."""
        groups: list[list[str]] = []
        claimed: set[str] = set()
        incomplete = self.settings.ecg_inbox_incomplete_seconds
        for header in sorted(name for name in names | pending if name.lower().endswith(".hea")):
            try:
                signals = signal_file_names((self.root / folder / header).read_bytes())
            except (EcgImportError, OSError):
                signals = []  # a header wfdb cannot use: quarantined below with its reason
            claimed.update(signals)
            claimed.add(header)
            group = [header, *signals]
            if all(name in names for name in group) or (
                header in names and self._age(folder / header) >= incomplete
            ):
                groups.append(group)
        for name in sorted(names - claimed):
            if name.lower().endswith(".dat") and self._age(folder / name) < incomplete:
                continue  # its header may still come
            groups.append([name])
        return groups

    def _age(self, relative: Path) -> float:
        seen = self._seen.get(relative)
        return 0.0 if seen is None else self._clock() - seen.since

    def _organisation(self, relative: Path, known: set[str]) -> tuple[str, str | None]:
        """The organisation a file belongs to, or why none."""
        if len(relative.parts) == 1:
            organisation = self.settings.ecg_inbox_organisation
            if organisation is None:
                return "", (
                    "dropped at the top of the ECG inbox, but TELECONSULT_ECG_INBOX_ORGANISATION is not set: "
                    "drop it in the folder named after its organisation's code"
                )
        else:
            organisation = relative.parts[0]
        if organisation not in known:
            return organisation, f"{organisation!r} is not the code of an organisation (teleconsult org list)"
        return organisation, None

    def _take(self, folder: Path, group: list[str], known: set[str]) -> InboxOutcome | None:
        relative = folder / group[0]
        present = [self.root / folder / name for name in group if (self.root / folder / name).is_file()]
        organisation, refusal = self._organisation(relative, known)
        source = f"ECG inbox {relative.as_posix()}"
        if refusal is None and len(present) < len(group):
            missing = [name for name in group if not (self.root / folder / name).is_file()]
            refusal = (
                f"the WFDB header names signal file {missing[0]!r}, which did not arrive within "
                f"{self.settings.ecg_inbox_incomplete_seconds:g} s"
            )
        if refusal is None and group[0].lower().endswith(".dat"):
            refusal = "a WFDB signal file that no header in its folder names; drop the .hea header with it"
        imported = None
        if refusal is None:
            try:
                self.importer.check_size(sum(path.stat().st_size for path in present))
                files = {path.name: path.read_bytes() for path in present}
                imported = self.importer.import_files(files, organisation=organisation)
            except (StorageFullError, IndexUnavailableError) as exc:
                logger.warning("%s stays in the inbox for now: %s", source, exc.message)
                return None
            except (EcgImportError, EcgTooLargeError, InvalidInstanceError) as exc:
                refusal = exc.message
            except Exception as exc:  # never lose a file to a reader's bug: quarantine and log
                logger.exception("importing %s failed", source)
                refusal = f"unexpected error {type(exc).__name__} (see the teleconsult log)"
        for path in present:
            self._seen.pop(path.relative_to(self.root), None)
        if imported is not None:
            for path in present:
                path.unlink(missing_ok=True)
            stored = imported.stored
            self._record(
                source,
                organisation,
                AuditOutcome.SUCCESS,
                f"{imported.source_format.label} stored {stored.sop_instance_uid} ({stored.outcome.value})",
                study_instance_uid=stored.study_instance_uid,
                patient_id=imported.patient_id,
            )
            return InboxOutcome(relative, organisation, imported=imported)
        assert refusal is not None
        self.quarantine.move(present, reason=refusal, source=source, organisation=organisation)
        self._record(source, organisation, AuditOutcome.FAILURE, f"quarantined: {refusal}"[:1000])
        return InboxOutcome(relative, organisation, reason=refusal)

    def _record(
        self,
        source: str,
        organisation: str | None,
        outcome: AuditOutcome,
        detail: str,
        *,
        study_instance_uid: str | None = None,
        patient_id: str | None = None,
    ) -> None:
        """One audit row per file taken from the inbox: a write of patient data like any other.

        The file is already stored (or quarantined) by now: a failed audit
        write is logged loudly (by ``AuditLog``) and the inbox goes on.
        """
        with contextlib.suppress(Exception):
            self.audit.record(
                AuditEvent(
                    action="instance.store",
                    outcome=outcome,
                    interface=Interface.INBOX,
                    actor="ecg-inbox",
                    actor_organisation=organisation,
                    resource=source[:512],
                    study_instance_uid=study_instance_uid,
                    patient_id=patient_id,
                    detail=detail,
                )
            )
