"""POST /api/devices/images: sidecar file or form fields, who may upload for whom, audit, quarantine."""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.encaps import get_frame
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, SecondaryCaptureImageStorage

from teleconsult.api.routes.devices import ImageFields
from teleconsult.domain.studies import StudyQuery
from tests.conftest import ApiClient
from tests.device_adapters.images.conftest import SIDECAR, encode_image, grey8, rgb, sidecar

URL = "/api/devices/images"
PROBLEM = "application/problem+json"


def _post(
    api: ApiClient,
    user: str | None,
    image: tuple[str, bytes],
    side: bytes | None = None,
    **form: str,
) -> Any:
    files = [("file", (image[0], image[1], "image/octet-stream"))]
    if side is not None:
        files.append(("sidecar", ("x.json", side, "application/json")))
    return api.client.post(  # type: ignore[attr-defined]
        URL, headers=api.headers(user) if user else {}, files=files, data=form
    )


def _audit(api: ApiClient, actor: str) -> list[dict[str, Any]]:
    audit = api.client.app.state.audit  # type: ignore[attr-defined]
    return [row for row in audit.query(actor=actor) if row["action"] == "instance.store"]


def test_a_jpeg_with_its_sidecar_is_stored_as_the_uploaders_and_audited(api: ApiClient) -> None:
    data = encode_image(rgb(), "JPEG", quality=85)
    response = _post(api, "sono1", ("us.jpg", data), sidecar(modality="US", body_part="ABDOMEN"))
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["organisation"], body["source_format"], body["outcome"]) == ("TOWN01", "jpeg", "stored")
    assert body["sop_class_uid"] == SecondaryCaptureImageStorage
    assert body["transfer_syntax_uid"] == JPEGBaseline8Bit
    ds = dcmread(BytesIO(api.store.read_instance(body["sop_instance_uid"])))
    assert get_frame(ds.PixelData, 0, number_of_frames=1)[: len(data)] == data
    assert ds.PatientName == "王^小明"
    (study,) = api.store.index.find_studies(StudyQuery(patient_id="IMG0001"))
    assert study.study_instance_uid == body["study_instance_uid"]
    assert study.source_organisation == "TOWN01"
    (row,) = _audit(api, "sono1")
    assert (row["outcome"], row["patient_id"], row["study_instance_uid"]) == (
        "success",
        "IMG0001",
        body["study_instance_uid"],
    )
    assert body["sop_instance_uid"] in row["detail"]
    again = _post(api, "sono1", ("us.jpg", data), sidecar(modality="US", body_part="ABDOMEN"))
    assert again.json()["outcome"] == "duplicate"


def test_form_fields_instead_of_a_sidecar(api: ApiClient) -> None:
    fields = {key: str(value) for key, value in SIDECAR.items()}
    response = _post(api, "doctor1", ("dr.png", encode_image(grey8(), "PNG")), **fields)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["transfer_syntax_uid"] == ExplicitVRLittleEndian
    ds = dcmread(BytesIO(api.store.read_instance(body["sop_instance_uid"])))
    assert np.array_equal(ds.pixel_array, grey8())
    assert ds.StudyDescription == "胸部正位"


def test_the_form_fields_are_the_sidecars_fields() -> None:
    from device_adapters.images.sidecar import ImageSidecar

    assert set(ImageFields.model_fields) == set(ImageSidecar.model_fields)


def test_without_a_token_401(api: ApiClient) -> None:
    response = _post(api, None, ("x.png", encode_image(grey8(), "PNG")), sidecar())
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM


def test_for_another_organisation(api: ApiClient) -> None:
    image = ("x.png", encode_image(grey8(), "PNG"))
    response = _post(api, "sono1", image, sidecar(), organisation="TOWN02")
    assert response.status_code == 404
    (row,) = _audit(api, "sono1")
    assert row["outcome"] == "denied"
    assert row["detail"].startswith("image upload for organisation 'TOWN02'")
    response = _post(api, "specialist", image, sidecar(), organisation="TOWN01")
    assert response.status_code == 403
    response = _post(api, "admin", image, sidecar(), organisation="VILLAGE21")
    assert response.status_code == 201, response.text
    assert response.json()["organisation"] == "VILLAGE21"


def test_a_bad_sidecar_gets_422_naming_each_field_and_is_quarantined(api: ApiClient) -> None:
    bad = sidecar(modality="XRAY", study_date=None)
    data = encode_image(grey8(), "PNG")
    response = _post(api, "sono2", ("scan.png", data), bad)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["code"] == "image-sidecar-invalid"
    assert problem["instance"] == URL
    fields = {error["field"]: error["message"] for error in problem["errors"]}
    assert set(fields) == {"modality", "study_date"}
    assert "IMG0001" not in response.text  # no patient ID in an error
    quarantine = api.settings.quarantine_dir
    assert (quarantine / "scan.png").read_bytes() == data
    assert (quarantine / "x.json").read_bytes() == bad
    reason = (quarantine / "scan.png.reason.txt").read_text(encoding="utf-8")
    assert "upload by sono2" in reason
    assert "modality" in reason
    (row,) = _audit(api, "sono2")
    assert row["outcome"] == "failure"
    # the same from form fields: field names as the form has them; the fields kept as a sidecar
    fields_in = {key: str(value) for key, value in SIDECAR.items() if key != "patient_id"}
    response = _post(api, "sono2", ("form.png", data), **fields_in)
    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == ["body.patient_id"]
    kept = json.loads((quarantine / "form.json").read_text(encoding="utf-8"))
    assert kept["patient_name"] == "王^小明"


@pytest.mark.parametrize(
    ("image", "code", "message"),
    [
        (b"not an image at all", "image-invalid", "not a format teleconsult imports"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "image-invalid", "damaged or cut short"),
    ],
)
def test_an_unreadable_image_gets_422(api: ApiClient, image: bytes, code: str, message: str) -> None:
    response = _post(api, "sono1", ("x.png", image), sidecar())
    assert response.status_code == 422
    assert response.json()["code"] == code
    assert message in response.json()["detail"]
    assert (api.settings.quarantine_dir / "x.png").read_bytes() == image


def test_request_problems(api: ApiClient) -> None:
    image = ("x.png", encode_image(grey8(), "PNG"))
    response = _post(api, "sono1", image, sidecar(), patient_id="P2")
    assert response.status_code == 400
    assert response.json()["code"] == "image-bad-request"
    response = api.client.post(URL, headers=api.headers("sono1"), data={"patient_id": "P1"})  # type: ignore[attr-defined]
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.file"
    response = _post(api, "sono1", image, b"{}" + b" " * (64 * 1024))
    assert response.status_code == 413
    small = api.settings.model_copy(update={"ecg_max_file_bytes": 1024})
    api.client.app.state.settings = small  # type: ignore[attr-defined]
    response = _post(api, "sono1", ("big.png", encode_image(rgb(), "PNG")), sidecar())
    assert response.status_code == 413
    assert response.json()["code"] == "image-too-large"
    assert "TELECONSULT_ECG_MAX_FILE_BYTES" in response.json()["detail"]
