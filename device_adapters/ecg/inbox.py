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
- An image export (``x.jpg``, ``x.png``, ``x.bmp``) is taken with its
  demographics sidecar ``x.json`` once both are complete, and imported by
  ``device_adapters.images`` as a Secondary Capture; an export still without
  its sidecar, or a sidecar without its export, is quarantined after the same
  wait, a file named as an image that is none at once. (The settings keep
  their ``ECG_`` names though the inbox now takes images too.)
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
from device_adapters.images.errors import ImageImportError, ImageTooLargeError
from device_adapters.images.formats import is_image_name, is_sidecar_name, sidecar_for
from device_adapters.images.importer import ImageImporter, ImportedImage
from device_adapters.images.reader import looks_like_image, read_image
from teleconsult.audit import AuditEvent, AuditLog, AuditOutcome, Interface
from teleconsult.config import Settings
from teleconsult.errors import IndexUnavailableError, InvalidInstanceError, StorageFullError
from teleconsult.storage.identity import IdentityStore
from teleconsult.storage.store import InstanceStore

__all__ = ["EcgInbox", "InboxOutcome"]

logger = logging.getLogger(__name__)

_IN_PROGRESS_SUFFIXES = (".part", ".tmp", ".partial")
_PROBE_BYTES = 256 * 1024  # enough of an image file to tell it is one (JPEG markers before the frame)


@dataclass(frozen=True, slots=True)
class InboxOutcome:
    """What one look did with one file (or WFDB record, or image export and its sidecar)."""

    path: Path  # relative to the inbox
    organisation: str
    imported: ImportedEcg | ImportedImage | None = None
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
        """Files to take together: a WFDB header with its signal files, an image export with its
        sidecar (``x.jpg`` + ``x.json``), else one file alone."""
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
        groups.extend(self._export_groups(folder, names - claimed, pending - claimed, claimed))
        for name in sorted(names - claimed):
            if name.lower().endswith(".dat") and self._age(folder / name) < incomplete:
                continue  # its header may still come
            groups.append([name])
        return groups

    def _export_groups(
        self, folder: Path, names: set[str], pending: set[str], claimed: set[str]
    ) -> list[list[str]]:
        """Image exports with their sidecars, once all are complete (adds them to ``claimed``).

        An export without its sidecar, or a sidecar without its export, is
        taken alone (to be quarantined) after
        ``TELECONSULT_ECG_INBOX_INCOMPLETE_SECONDS``; a file named as an image
        that certainly is none at once, since no sidecar can make it one.
        """
        groups: list[list[str]] = []
        present = names | pending
        incomplete = self.settings.ecg_inbox_incomplete_seconds
        by_sidecar: dict[str | None, list[str]] = {}
        for image in sorted(name for name in present if is_image_name(name)):
            by_sidecar.setdefault(sidecar_for(image, present), []).append(image)
        for sidecar, images in sorted(by_sidecar.items(), key=lambda item: item[1]):
            claimed.update(images)
            if sidecar is not None:
                claimed.add(sidecar)
                if all(name in names for name in (*images, sidecar)):
                    groups.append([*images, sidecar])
                continue
            for image in images:
                if image in names and (
                    self._age(folder / image) >= incomplete or not self._may_be_image(folder / image)
                ):
                    groups.append([image])
        for name in sorted(present - claimed):
            if is_sidecar_name(name):
                claimed.add(name)
                if name in names and self._age(folder / name) >= incomplete:
                    groups.append([name])
        return groups

    def _may_be_image(self, relative: Path) -> bool:
        """False if the file's first bytes show it is no JPEG, PNG or BMP."""
        try:
            with (self.root / relative).open("rb") as file:
                head = file.read(_PROBE_BYTES + 1)
        except OSError:
            return True  # gone or unreadable just now: the next look decides
        return looks_like_image(head[:_PROBE_BYTES], complete=len(head) <= _PROBE_BYTES)

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

    def _export_refusal(self, present: list[Path]) -> str | None:
        """Why an image export group cannot be imported as it is, before reading it; None if it may be."""
        images = [path for path in present if is_image_name(path.name)]
        sidecars = [path for path in present if is_sidecar_name(path.name)]
        wait = f"{self.settings.ecg_inbox_incomplete_seconds:g} s"
        if not images:
            return (
                f"a sidecar without the image export of the same stem (.jpg, .png or .bmp), which did not "
                f"arrive within {wait}: drop the image with it"
            )
        if len(images) > 1:
            return (
                f"the image exports {', '.join(repr(path.name) for path in images)} share one sidecar: give "
                "each image its own name and sidecar (x.jpg with x.json)"
            )
        if sidecars:
            return None
        try:
            read_image(images[0].name, images[0].read_bytes())
        except (ImageImportError, ImageTooLargeError) as exc:
            name = images[0].name[:80]
            return (
                f"{name!r} is not a format teleconsult imports: neither an ECG nor a readable image "
                f"({exc.message})"
            )
        return (
            f"an image export without its sidecar {images[0].stem[:80]}.json (patient and exam, see "
            f"docs/devices.md), which did not arrive within {wait}"
        )

    def _import(self, present: list[Path], organisation: str) -> ImportedEcg | ImportedImage:
        """Import a group's files: an image export with its sidecar, else an ECG."""
        size = sum(path.stat().st_size for path in present)
        images = [path for path in present if is_image_name(path.name)]
        if images:
            (image,) = images
            (sidecar,) = [path for path in present if is_sidecar_name(path.name)]
            importer = ImageImporter(self.settings, self.importer.store)
            importer.check_size(size)
            return importer.import_export(
                image.name,
                image.read_bytes(),
                sidecar.read_bytes(),
                organisation=organisation,
                sidecar_name=sidecar.name,
            )
        self.importer.check_size(size)
        files = {path.name: path.read_bytes() for path in present}
        return self.importer.import_files(files, organisation=organisation)

    def _take(self, folder: Path, group: list[str], known: set[str]) -> InboxOutcome | None:
        relative = folder / group[0]
        present = [self.root / folder / name for name in group if (self.root / folder / name).is_file()]
        organisation, refusal = self._organisation(relative, known)
        source = f"ECG inbox {relative.as_posix()}"
        export = any(is_image_name(name) or is_sidecar_name(name) for name in group)
        if export and not present:
            return None  # taken away since the look began
        if refusal is None and export:
            refusal = self._export_refusal(present)
        if refusal is None and not export and len(present) < len(group):
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
                imported = self._import(present, organisation)
            except (StorageFullError, IndexUnavailableError) as exc:
                logger.warning("%s stays in the inbox for now: %s", source, exc.message)
                return None
            except (
                EcgImportError,
                EcgTooLargeError,
                ImageImportError,
                ImageTooLargeError,
                InvalidInstanceError,
            ) as exc:
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
