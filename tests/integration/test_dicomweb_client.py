"""The real dicomweb-client against a real uvicorn on loopback: STOW, QIDO and WADO round trips."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from requests.exceptions import HTTPError

from teleconsult.api.app import create_app
from teleconsult.config import Settings
from teleconsult.storage.identity import IdentityStore
from teleconsult.storage.store import InstanceStore
from tests.conftest import COMMUNITY, PASSWORD, USERS
from tests.factories import DX_PRESENTATION, make_ecg, make_image
from tests.uvicorn_thread import serving


@dataclass
class LiveServer:
    url: str

    def client(self, username: str) -> DICOMwebClient:
        response = httpx.post(f"{self.url}/api/auth/token", data={"username": username, "password": PASSWORD})
        response.raise_for_status()
        token = response.json()["access_token"]
        return DICOMwebClient(url=f"{self.url}/dicomweb", headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def live(app_settings: Settings, store: InstanceStore) -> Iterator[LiveServer]:
    """``create_app`` served by uvicorn in a thread on 127.0.0.1, port 0; stopped in teardown."""
    identity = IdentityStore(store.index.engine)
    for code, name, parent in COMMUNITY:
        identity.add_organisation(code, name, parent)
    for username, (role, organisation) in USERS.items():
        identity.add_user(username, PASSWORD, role, organisation)
    with serving(create_app(app_settings, store)) as port:
        yield LiveServer(f"http://127.0.0.1:{port}")


def _dr() -> Dataset:
    ds = make_image(
        DX_PRESENTATION, modality="DX", rows=512, columns=384, patient_name="王小明", charset="ISO_IR 192"
    )
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelData = np.random.default_rng(7).integers(0, 4096, (512, 384), dtype="<u2").tobytes()
    return ds


def test_store_search_retrieve_round_trip(live: LiveServer) -> None:
    client = live.client("sono1")
    dr = _dr()
    us = make_image(patient_name="王^小红", patient_id="P0003", charset="GB18030")
    second = make_image(
        study_instance_uid=dr.StudyInstanceUID,
        series_instance_uid=dr.SeriesInstanceUID,
        patient_name="王小明",
    )
    second.InstanceNumber = 2
    ecg = make_ecg()
    response = client.store_instances([dr, second, us, ecg])
    assert "FailedSOPSequence" not in response
    assert len(response.ReferencedSOPSequence) == 4

    found = client.search_for_studies(search_filters={"PatientName": "王*"})
    assert {study["0020000D"]["Value"][0] for study in found} == {dr.StudyInstanceUID, us.StudyInstanceUID}
    assert client.search_for_studies(search_filters={"PatientName": "李*"})[0]["0020000D"]["Value"] == [
        ecg.StudyInstanceUID
    ]
    series = client.search_for_series(dr.StudyInstanceUID)
    assert [s["0020000E"]["Value"][0] for s in series] == [dr.SeriesInstanceUID]
    instances = client.search_for_instances(dr.StudyInstanceUID, dr.SeriesInstanceUID)
    assert {i["00080018"]["Value"][0] for i in instances} == {dr.SOPInstanceUID, second.SOPInstanceUID}

    retrieved = {ds.SOPInstanceUID: ds for ds in client.retrieve_study(dr.StudyInstanceUID)}
    assert retrieved[dr.SOPInstanceUID].PixelData == dr.PixelData
    assert retrieved[second.SOPInstanceUID].PixelData == second.PixelData
    assert str(retrieved[dr.SOPInstanceUID].PatientName) == "王小明"

    metadata = client.retrieve_instance_metadata(dr.StudyInstanceUID, dr.SeriesInstanceUID, dr.SOPInstanceUID)
    assert metadata["00100010"]["Value"] == [{"Alphabetic": "王小明"}]
    assert "BulkDataURI" in metadata["7FE00010"]
    (frame,) = client.retrieve_instance_frames(
        dr.StudyInstanceUID, dr.SeriesInstanceUID, dr.SOPInstanceUID, frame_numbers=[1]
    )
    assert frame == dr.PixelData
    jpeg = client.retrieve_instance_rendered(
        dr.StudyInstanceUID, dr.SeriesInstanceUID, dr.SOPInstanceUID, media_types=("image/jpeg",)
    )
    assert jpeg[:3] == b"\xff\xd8\xff"
    png = client.retrieve_instance_rendered(
        dr.StudyInstanceUID, dr.SeriesInstanceUID, dr.SOPInstanceUID, media_types=("image/png",)
    )
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_other_organisation_sees_nothing(live: LiveServer) -> None:
    mine = make_image(patient_name="王^五", patient_id="P5")
    live.client("sono1").store_instances([mine])
    other = live.client("sono2")
    assert other.search_for_studies(search_filters={"PatientName": "王*"}) == []
    with pytest.raises(HTTPError) as caught:
        other.retrieve_study(mine.StudyInstanceUID)
    assert caught.value.response.status_code == 404
    assert len(live.client("specialist").search_for_studies(search_filters={"PatientID": "P5"})) == 1
