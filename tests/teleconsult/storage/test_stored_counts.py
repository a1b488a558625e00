"""Study and series counts kept by the database (migration 0013), on SQLite and PostgreSQL.

QIDO-RS and C-FIND read NumberOfStudyRelatedSeries/Instances and
NumberOfSeriesRelatedInstances from these columns, so they must equal a
count of the rows after every kind of write: new instances, a new series, a
re-sent instance whose series changed, a deletion, and rows that existed
before the migration.
"""

from __future__ import annotations

from pydicom.uid import generate_uid
from sqlalchemy import Engine, text

from teleconsult.config import Settings
from teleconsult.storage.matching import Level
from teleconsult.storage.migrate import upgrade
from teleconsult.storage.store import InstanceStore
from tests.factories import encode, make_image
from tests.migrations import downgrade

_US = "1.2.840.10008.1.2.1"


def _store(store: InstanceStore, study: str, series: str, sop: str | None = None, seed: int = 0) -> str:
    ds = make_image(
        study_instance_uid=study,
        series_instance_uid=series,
        sop_instance_uid=sop or generate_uid(),
        seed=seed,
    )
    store.store_instance(encode(ds), _US, calling_ae_title="US1", source_organisation="TOWN01")
    return str(ds.SOPInstanceUID)


def _counted(engine: Engine) -> list[tuple[object, ...]]:
    """Per study: (stored series count, counted series, stored instance count, counted instances)."""
    with engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                text(
                    "SELECT s.number_of_series, "
                    "(SELECT count(*) FROM series se WHERE se.study_pk = s.pk), "
                    "s.number_of_instances, "
                    "(SELECT count(*) FROM instances i JOIN series se ON i.series_pk = se.pk "
                    "WHERE se.study_pk = s.pk) "
                    "FROM studies s ORDER BY s.pk"
                )
            )
        ]


def _series_counted(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                text(
                    "SELECT se.number_of_instances, "
                    "(SELECT count(*) FROM instances i WHERE i.series_pk = se.pk) "
                    "FROM series se ORDER BY se.pk"
                )
            )
        ]


def test_counts_follow_inserts_moves_and_deletes(store: InstanceStore) -> None:
    engine = store.index.engine
    study, first, second = generate_uid(), generate_uid(), generate_uid()
    moved = _store(store, study, first)
    _store(store, study, first)
    _store(store, study, second)
    _store(store, generate_uid(), generate_uid())  # another study, counted apart
    assert _counted(engine) == [(2, 2, 3, 3), (1, 1, 1, 1)]
    assert _series_counted(engine) == [(2, 2), (1, 1), (1, 1)]

    # The same SOP instance re-sent with other content in the second series: it moves.
    _store(store, study, second, sop=moved, seed=7)
    assert _series_counted(engine) == [(1, 1), (2, 2), (1, 1)]
    assert _counted(engine)[0] == (2, 2, 3, 3)

    rows = store.index.query(
        Level.STUDY,
        {"StudyInstanceUID": study},
        return_keys=["NumberOfStudyRelatedInstances", "NumberOfStudyRelatedSeries"],
    )
    assert rows[0]["NumberOfStudyRelatedInstances"] == 3
    assert rows[0]["NumberOfStudyRelatedSeries"] == 2

    with engine.begin() as conn:
        conn.execute(text("DELETE FROM instances WHERE sop_instance_uid = :uid"), {"uid": moved})
    assert _counted(engine)[0] == (2, 2, 2, 2)
    assert _series_counted(engine)[:2] == [(1, 1), (1, 1)]


def test_rows_stored_before_the_migration_are_counted(app_settings: Settings) -> None:
    store = InstanceStore(app_settings)
    store.open()
    try:
        engine = store.index.engine
        downgrade(engine, "0012")
        study = generate_uid()
        series = generate_uid()
        for _ in range(3):
            _store(store, study, series)
        _store(store, study, generate_uid())
        upgrade(engine)
        assert _counted(engine) == [(2, 2, 4, 4)]
        assert sorted(_series_counted(engine)) == [(1, 1), (3, 3)]
    finally:
        store.close()
