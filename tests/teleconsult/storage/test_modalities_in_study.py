"""ModalitiesInStudy as the ingest path keeps it, new studies and odd devices included."""

from __future__ import annotations

from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sqlalchemy import select

from teleconsult.storage.store import InstanceStore
from teleconsult.storage.tables import Study
from tests.factories import CT_IMAGE, encode, make_image


def _put(store: InstanceStore, data: bytes) -> None:
    store.store_instance(
        data, ExplicitVRLittleEndian, calling_ae_title="TOWNUS", source_organisation="TOWN01"
    )


def _modalities(store: InstanceStore, study: str) -> str:
    studies = Study.__table__
    with store.index.engine.connect() as conn:
        return str(
            conn.execute(
                select(studies.c.modalities_in_study).where(studies.c.study_instance_uid == study)
            ).scalar_one()
        )


def test_a_new_study_lists_its_first_series_modality_and_grows(store: InstanceStore) -> None:
    study = generate_uid()
    _put(store, encode(make_image(study_instance_uid=study, modality="US")))
    assert _modalities(store, study) == "US"
    _put(store, encode(make_image(CT_IMAGE, study_instance_uid=study, modality="CT", seed=1)))
    assert _modalities(store, study) == "CT\\US"


def test_a_series_uid_reused_in_another_study_leaves_that_one_without_modality(
    store: InstanceStore,
) -> None:
    first, second, series = generate_uid(), generate_uid(), generate_uid()
    _put(store, encode(make_image(study_instance_uid=first, series_instance_uid=series, modality="US")))
    # As another gateway process would, which has not cached the series yet.
    store.index._series_cache.clear()
    odd = make_image(CT_IMAGE, study_instance_uid=second, series_instance_uid=series, modality="CT", seed=2)
    _put(store, encode(odd))
    assert _modalities(store, first) == "US"
    assert _modalities(store, second) == "", "the second study holds no series, so no modality"
