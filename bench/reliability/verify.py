"""After a run: is every acknowledged instance in the store, byte for byte, and is the index sound?

Read-only: the store is never ``open()``ed here (that would sweep the
temporary files this check counts, and might migrate the schema).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import func, select

from bench.reliability.senders import Ack, Outgoing
from bench.reliability.server import Serve

__all__ = ["IN_FLIGHT_STATES", "Verification", "in_flight", "verify"]

# Where an instance in flight at a kill was left, from the sender's side to the store's.
NOT_WRITTEN = "not written"
WRITTEN_NOT_INDEXED = "written, not indexed"
INDEXED_NOT_ANSWERED = "indexed, not answered"
IN_FLIGHT_STATES = (NOT_WRITTEN, WRITTEN_NOT_INDEXED, INDEXED_NOT_ANSWERED)

_CHECKED = re.compile(r"checked (\d+) files, (\d+) bad")


@dataclass
class Verification:
    acknowledged: int
    # acknowledged instances missing from the index, or whose index row or file has other bytes
    lost: list[str] = field(default_factory=list)
    indexed: int = 0
    # indexed but never acknowledged: stored, then the answer was lost in a crash (harmless)
    unacknowledged_stored: int = 0
    # index rows (current or older versions) whose file is missing or does not match its SHA-256
    rows_without_file: list[str] = field(default_factory=list)
    # files of the store no index row names: written, then a crash came before the commit
    unindexed_files: int = 0
    # studies/series whose stored instance counts differ from their rows
    count_mismatches: list[str] = field(default_factory=list)
    temporary_files_left: int = 0
    store_check: str = ""
    store_check_ok: bool = False

    @property
    def ok(self) -> bool:
        return (
            not self.lost
            and not self.rows_without_file
            and not self.count_mismatches
            and self.store_check_ok
            and self.temporary_files_left == 0
        )

    def problems(self) -> str:
        lines = []
        if self.lost:
            lines.append(f"{len(self.lost)} acknowledged instances lost, e.g. {self.lost[:5]}")
        if self.rows_without_file:
            lines.append(
                f"{len(self.rows_without_file)} index rows without a sound file: {self.rows_without_file[:5]}"
            )
        if self.count_mismatches:
            lines.append(f"stored counts wrong: {self.count_mismatches[:5]}")
        if not self.store_check_ok:
            lines.append(f"teleconsult store check failed: {self.store_check}")
        if self.temporary_files_left:
            lines.append(f"{self.temporary_files_left} temporary files left after a clean stop")
        return "; ".join(lines) or "none"


def verify(serve: Serve, acks: Iterable[Ack], *, run_store_check: bool = True) -> Verification:
    """Check ``acks`` against the stopped server's data directory and index."""
    from teleconsult.config import Settings
    from teleconsult.storage.files import FileStore
    from teleconsult.storage.index import Index
    from teleconsult.storage.tables import Instance, InstanceVersion, Series, Study

    acknowledged = {ack.sop_instance_uid: ack for ack in acks}
    result = Verification(acknowledged=len(acknowledged))
    settings = Settings(data_dir=serve.data_dir, database_url=serve.database_url, database_auto_migrate=False)
    index = Index(settings.index_url)
    files = FileStore(serve.data_dir)
    try:
        with index.engine.connect() as conn:
            current = {
                row.sop_instance_uid: (row.sha256, row.file_key)
                for row in conn.execute(select(Instance.sop_instance_uid, Instance.sha256, Instance.file_key))
            }
            older = [
                (row.sop_instance_uid, row.sha256, row.file_key)
                for row in conn.execute(
                    select(InstanceVersion.sop_instance_uid, InstanceVersion.sha256, InstanceVersion.file_key)
                )
            ]
            actual_by_series = dict(
                conn.execute(select(Instance.series_pk, func.count()).group_by(Instance.series_pk)).all()
            )
            series_rows = conn.execute(select(Series.pk, Series.study_pk, Series.number_of_instances)).all()
            study_rows = conn.execute(
                select(Study.pk, Study.number_of_instances, Study.number_of_series)
            ).all()
        result.indexed = len(current)
        result.unacknowledged_stored = len(set(current) - set(acknowledged))

        digests: dict[str, str | None] = {}

        def digest(key: str) -> str | None:
            if key not in digests:
                try:
                    digests[key] = files.data_set_sha256(key)
                except Exception:  # missing, unreadable or not Part 10: no sound file
                    digests[key] = None
            return digests[key]

        for uid, ack in acknowledged.items():
            row = current.get(uid)
            if row is None or row[0] != ack.sha256 or digest(row[1]) != ack.sha256:
                result.lost.append(uid)
        rows = [(uid, sha, key) for uid, (sha, key) in current.items()] + older
        result.rows_without_file = [f"{uid} {key}" for uid, sha, key in rows if digest(key) != sha]
        on_disk = {f"{path.parent.name}/{path.name}" for path in (serve.data_dir / "dicom").glob("*/*.dcm")}
        result.unindexed_files = len(on_disk - {key for _, _, key in rows})

        series_by_study: dict[int, list[int]] = {}
        for pk, study_pk, stored in series_rows:
            series_by_study.setdefault(study_pk, []).append(pk)
            if stored != actual_by_series.get(pk, 0):
                result.count_mismatches.append(
                    f"series {pk}: {stored} stored, {actual_by_series.get(pk, 0)} rows"
                )
        for pk, stored_instances, stored_series in study_rows:
            members = series_by_study.get(pk, [])
            actual = sum(actual_by_series.get(series, 0) for series in members)
            if stored_instances != actual or stored_series != len(members):
                result.count_mismatches.append(
                    f"study {pk}: {stored_instances}/{stored_series} stored, {actual}/{len(members)} rows"
                )
    finally:
        files.close()
        index.close()

    tmp = serve.data_dir / "tmp"
    result.temporary_files_left = sum(1 for path in tmp.iterdir() if path.is_file()) if tmp.is_dir() else 0
    if run_store_check:
        checked = serve.cli("store", "check")
        summary = _CHECKED.search(checked.stdout)
        result.store_check = summary.group(0) if summary else (checked.stdout + checked.stderr)[-500:]
        result.store_check_ok = checked.returncode == 0 and summary is not None and summary.group(2) == "0"
    else:
        result.store_check_ok = True
        result.store_check = "not run"
    return result


def in_flight(serve: Serve, outgoing: Iterable[Outgoing]) -> tuple[Counter[str], int]:
    """While the server is down after a kill: how far each unanswered instance got, and the temp files.

    An instance in the index was stored but its answer never left; a file
    without an index row was written but not committed (both become
    duplicates when the sender tries again). The temporary files counted
    are what the next start must sweep.
    """
    from teleconsult.config import Settings
    from teleconsult.storage.files import content_key
    from teleconsult.storage.index import Index
    from teleconsult.storage.tables import Instance

    states: Counter[str] = Counter()
    outgoing = list(outgoing)
    settings = Settings(data_dir=serve.data_dir, database_url=serve.database_url, database_auto_migrate=False)
    index = Index(settings.index_url)
    try:
        with index.engine.connect() as conn:
            uids = [item.sop_instance_uid for item in outgoing]
            indexed = set(
                conn.execute(
                    select(Instance.sop_instance_uid).where(Instance.sop_instance_uid.in_(uids))
                ).scalars()
            )
    finally:
        index.close()
    for item in outgoing:
        if item.sop_instance_uid in indexed:
            states[INDEXED_NOT_ANSWERED] += 1
        elif (serve.data_dir / "dicom" / content_key(item.sha256)).is_file():
            states[WRITTEN_NOT_INDEXED] += 1
        else:
            states[NOT_WRITTEN] += 1
    tmp = serve.data_dir / "tmp"
    temporary = sum(1 for path in tmp.iterdir() if path.is_file()) if tmp.is_dir() else 0
    return states, temporary
