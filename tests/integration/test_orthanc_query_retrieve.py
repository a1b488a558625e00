"""Orthanc as the county PACS queries teleconsult (C-FIND) and pulls a study (C-MOVE)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.conftest import RunningGateway
from tests.factories import encode, make_image
from tests.orthanc import Orthanc, free_port, orthanc_binary, wait_for


@pytest.fixture
def pacs_and_gateway(start, tmp_path: Path) -> Iterator[tuple[Orthanc, RunningGateway]]:  # type: ignore[no-untyped-def]
    gateway_port = free_port()
    orthanc = Orthanc(
        orthanc_binary(),
        tmp_path / "orthanc",
        modalities={"TELECONSULT": ["TELECONSULT", "127.0.0.1", gateway_port]},
        # What a Chinese site configures: Orthanc's default, Latin-1, cannot hold Chinese names.
        extra_config={"DefaultEncoding": "Utf8"},
    )
    gateway = start(
        port=gateway_port,
        dicom_peers=[
            {"ae_title": "TOWNUS", "host": "127.0.0.1", "port": 104, "organisation": "TOWN01"},
            {
                "ae_title": "ORTHANC",
                "host": "127.0.0.1",
                "port": orthanc.dicom_port,
                "organisation": "TOWN01",
            },
        ],
    )
    orthanc.start()
    try:
        yield orthanc, gateway
    finally:
        orthanc.stop()


def test_orthanc_finds_and_moves_a_chinese_named_study(
    pacs_and_gateway: tuple[Orthanc, RunningGateway],
) -> None:
    orthanc, gateway = pacs_and_gateway
    study, series = generate_uid(), generate_uid()
    for number in range(3):
        ds = make_image(
            charset="ISO_IR 192",
            patient_name="王^小明",
            patient_id="P77",
            study_instance_uid=study,
            series_instance_uid=series,
            seed=number,
        )
        gateway.store.store_instance(
            encode(ds), ExplicitVRLittleEndian, calling_ae_title="TOWNUS", source_organisation="TOWN01"
        )
    url = orthanc.url

    query = httpx.post(
        f"{url}/modalities/TELECONSULT/query",
        json={"Level": "Study", "Query": {"PatientID": "P77", "StudyInstanceUID": "", "PatientName": ""}},
        timeout=30,
    )
    assert query.status_code == 200, query.text
    answers = httpx.get(f"{url}/queries/{query.json()['ID']}/answers?expand", timeout=30).json()
    assert len(answers) == 1
    assert answers[0]["0020,000d"]["Value"] == study
    assert answers[0]["0010,0010"]["Value"] == "王^小明"

    move = httpx.post(
        f"{url}/modalities/TELECONSULT/move",
        json={
            "Level": "Study",
            "Resources": [{"StudyInstanceUID": study}],
            "TargetAet": "ORTHANC",
            "Synchronous": True,
        },
        timeout=60,
    )
    assert move.status_code == 200, move.text
    wait_for(lambda: len(orthanc.instances()) == 3, "the moved study in Orthanc")
    patients = httpx.get(f"{url}/patients?expand", timeout=10).json()
    assert [p["MainDicomTags"]["PatientName"] for p in patients] == ["王^小明"]
