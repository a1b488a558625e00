"""A village clinic's ECG cart, its health kiosk and a legacy image export feed one patient's record.

The villager's resident ID number is the patient ID the cart and the DR
machine's export carry, and the number the kiosk reads from the ID card:
the county specialist finds both studies under it, the kiosk's
observations are linked to that patient, and every object made from the
non-DICOM files is valid DICOM.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
from pydicom import dcmread

from tests.conftest import ApiClient
from tests.device_adapters.images.conftest import dciodvfy_errors, encode_image, rgb, sidecar
from tests.device_adapters.kiosk.conftest import ID_DIGIT, message, post
from tests.device_adapters.scp_writer import ScpSpec, write_scp


def test_an_ecg_cart_a_kiosk_and_an_image_export_feed_one_patients_record(
    api: ApiClient, kiosk_headers: dict[str, str], leads: dict[str, np.ndarray], tmp_path: Path
) -> None:
    village = api.headers("village")  # a township doctor of VILLAGE21, where the kiosk stands
    ecg = api.client.post(  # type: ignore[attr-defined]
        "/api/devices/ecg",
        headers=village,
        files=[
            (
                "file",
                (
                    "cart.scp",
                    write_scp(ScpSpec(leads=leads, patient_id=ID_DIGIT)),
                    "application/octet-stream",
                ),
            )
        ],
    )
    assert ecg.status_code == 201, ecg.text
    export = api.client.post(  # type: ignore[attr-defined]
        "/api/devices/images",
        headers=village,
        files=[
            ("file", ("chest.jpg", encode_image(rgb(), "JPEG", quality=90), "image/jpeg")),
            (
                "sidecar",
                (
                    "chest.json",
                    sidecar(patient_id=ID_DIGIT, modality="DX", body_part="CHEST"),
                    "application/json",
                ),
            ),
        ],
    )
    assert export.status_code == 201, export.text
    kiosk = post(api, message(number=ID_DIGIT), kiosk_headers)
    assert kiosk.status_code == 201, kiosk.text
    patient = kiosk.json()["patient"]
    assert patient["linked_issuer_of_patient_id"] == "VILLAGE21", "the kiosk patient is the index's patient"

    # The county specialist's view of the patient: both studies, and the kiosk's measurements.
    specialist = api.headers("specialist")
    studies = api.client.get(  # type: ignore[attr-defined]
        f"/dicomweb/studies?PatientID={ID_DIGIT}&includefield=00080061", headers=specialist
    )
    assert studies.status_code == 200, studies.text
    found = {item["0020000D"]["Value"][0]: item["00080061"]["Value"] for item in studies.json()}
    assert found == {
        ecg.json()["study_instance_uid"]: ["ECG"],
        export.json()["study_instance_uid"]: ["DX"],
    }
    record = api.client.get(  # type: ignore[attr-defined]
        f"/api/kiosk/patients/{patient['patient_key']}/observations", headers=specialist
    )
    assert record.status_code == 200, record.text
    types = {observation["type"] for observation in record.json()["observations"]}
    assert {"blood_pressure", "glucose", "temperature", "spo2", "weight", "urinalysis"} <= types
    assert ID_DIGIT not in record.text, "the number is shown masked only"

    # Every object made from a non-DICOM file is valid DICOM.
    for made in (ecg.json(), export.json()):
        part10 = api.store.read_instance(made["sop_instance_uid"])
        assert dcmread(BytesIO(part10)).PatientID == ID_DIGIT
        assert dciodvfy_errors(part10, tmp_path) == []
